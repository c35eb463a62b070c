//! `Wait`: succeeds after `spec.duration`, on the manager (no delegate).

use serde_json::Value;

use super::{StartContext, StepError, StepStart, StepType, duration_field};

/// The `Wait` step type.
pub struct Wait;

impl StepType for Wait {
    fn type_name(&self) -> &'static str {
        "Wait"
    }

    fn start(&self, spec: &Value, _cx: &StartContext<'_>) -> Result<StepStart, StepError> {
        Ok(StepStart::Wait { duration_ms: duration_field(spec, "duration")? })
    }
}
