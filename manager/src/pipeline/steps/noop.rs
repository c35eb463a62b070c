//! `Noop`: a delegate round trip that does nothing. Useful to check that a
//! delegate with the right selectors is there, and to measure the engine.

use dray_shared::task::kind;
use serde_json::{Value, json};

use super::{StartContext, StepError, StepStart, StepType};

/// The `Noop` step type.
pub struct Noop;

impl StepType for Noop {
    fn type_name(&self) -> &'static str {
        "Noop"
    }

    fn start(&self, _spec: &Value, _cx: &StartContext<'_>) -> Result<StepStart, StepError> {
        Ok(StepStart::Task { kind: kind::NOOP.into(), params: json!({}) })
    }
}
