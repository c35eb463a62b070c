//! An `ssh` task: deploy an artifact to SSH hosts in phases, roll back, or run
//! commands on them. Executed by the delegate's `ssh` target (russh).

use serde::{Deserialize, Serialize};

use super::InvalidTaskSpec;

/// Parameters of a `ssh` task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SshParams {}

impl SshParams {
    /// Checks what the schema cannot.
    pub fn validate(&self) -> Result<(), InvalidTaskSpec> {
        Ok(())
    }
}
