//! A `k8s` task: one Kubernetes deployment action (rolling, canary, blue-green,
//! apply, scale, delete…). Executed by the delegate's `k8s` target (kube).

use serde::{Deserialize, Serialize};

use super::InvalidTaskSpec;

/// Parameters of a `k8s` task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct K8sParams {}

impl K8sParams {
    /// Checks what the schema cannot.
    pub fn validate(&self) -> Result<(), InvalidTaskSpec> {
        Ok(())
    }
}
