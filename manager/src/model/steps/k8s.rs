//! Validation of the Kubernetes step specs and the `KubernetesDirect` infrastructure spec.

use serde_json::Value as Json;

use super::StepTypes;

/// Registers the Kubernetes step validators.
pub fn register(t: &mut StepTypes) {
    let _ = t;
}

/// Problems in the `spec` of an infrastructure of type `infra_type`, as
/// (path within the spec, message); `None` when this platform does not own
/// that type.
pub fn infrastructure_rules(
    infra_type: &str,
    spec: &serde_json::Map<String, Json>,
) -> Option<Vec<(String, String)>> {
    let _ = (infra_type, spec);
    None
}
