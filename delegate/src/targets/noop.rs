//! The `noop` target: succeeds at once. Used by `dray delegate ping` and
//! benchmarks to measure dispatch without any work.

use dray_shared::pb::TaskSpec;
use dray_shared::task::kind;

use super::{CheckContext, Outcome, RunContext, Target};

/// Runs `noop` tasks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Noop;

#[async_trait::async_trait]
impl Target for Noop {
    fn kinds(&self) -> &'static [&'static str] {
        &[kind::NOOP]
    }

    async fn check(&self, _spec: &TaskSpec, _cx: &CheckContext) -> Result<(), String> {
        Ok(())
    }

    async fn run(&self, _spec: TaskSpec, _cx: RunContext) -> Outcome {
        Outcome::succeeded()
    }
}
