//! The `k8s` target.

use dray_shared::pb::TaskSpec;
use dray_shared::task::kind;

use super::{CheckContext, Outcome, RunContext, Target};

/// Runs `k8s` tasks.
#[derive(Debug, Default)]
pub struct K8s {}

#[async_trait::async_trait]
impl Target for K8s {
    fn kinds(&self) -> &'static [&'static str] {
        &[kind::K8S]
    }

    async fn check(&self, _spec: &TaskSpec, _cx: &CheckContext) -> Result<(), String> {
        Err("this delegate cannot run k8s tasks yet".into())
    }

    async fn run(&self, _spec: TaskSpec, _cx: RunContext) -> Outcome {
        Outcome::failed("this delegate cannot run k8s tasks yet")
    }
}
