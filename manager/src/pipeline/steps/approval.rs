//! `HarnessApproval` (alias `Approval`): waits for a person to approve or
//! reject, recording who, their comment and their `approverInputs`.

use serde_json::Value;

use super::{StartContext, StepError, StepStart, StepType};

/// The approval step type under one of its names.
pub struct Approval(&'static str);

impl Approval {
    /// The Harness name.
    pub const HARNESS: Approval = Approval("HarnessApproval");
    /// The short alias.
    pub const SHORT: Approval = Approval("Approval");

    /// True when `step_type` is an approval.
    pub fn is_approval(step_type: &str) -> bool {
        step_type == Self::HARNESS.0 || step_type == Self::SHORT.0
    }

    /// The declared approver inputs of a spec: `(name, default value)`.
    pub fn inputs(spec: &Value) -> Vec<(String, String)> {
        spec.get("approverInputs")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|i| {
                        let name = i.get("name")?.as_str()?.to_string();
                        let default = i.get("defaultValue").and_then(Value::as_str).unwrap_or("").to_string();
                        Some((name, default))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl StepType for Approval {
    fn type_name(&self) -> &'static str {
        self.0
    }

    fn start(&self, _spec: &Value, _cx: &StartContext<'_>) -> Result<StepStart, StepError> {
        Ok(StepStart::Approval)
    }
}
