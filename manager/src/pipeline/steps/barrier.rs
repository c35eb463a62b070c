//! `Barrier`: parallel stages meet; the step succeeds once every stage that has
//! a step with the same `barrierRef` reached it.

use serde_json::Value;

use super::{StartContext, StepError, StepStart, StepType, str_field};

/// The `Barrier` step type.
pub struct Barrier;

impl StepType for Barrier {
    fn type_name(&self) -> &'static str {
        "Barrier"
    }

    fn start(&self, spec: &Value, _cx: &StartContext<'_>) -> Result<StepStart, StepError> {
        Ok(StepStart::Barrier { barrier: str_field(spec, "barrierRef")?.to_string() })
    }
}
