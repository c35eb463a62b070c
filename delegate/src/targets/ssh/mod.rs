//! The `ssh` target.

use dray_shared::pb::TaskSpec;
use dray_shared::task::kind;

use super::{CheckContext, Outcome, RunContext, Target};

/// Runs `ssh` tasks.
#[derive(Debug, Default)]
pub struct Ssh {}

#[async_trait::async_trait]
impl Target for Ssh {
    fn kinds(&self) -> &'static [&'static str] {
        &[kind::SSH]
    }

    async fn check(&self, _spec: &TaskSpec, _cx: &CheckContext) -> Result<(), String> {
        Err("this delegate cannot run ssh tasks yet".into())
    }

    async fn run(&self, _spec: TaskSpec, _cx: RunContext) -> Outcome {
        Outcome::failed("this delegate cannot run ssh tasks yet")
    }
}
