//! Kubernetes step types. Each turns its spec and the stage's target into one `k8s`
//! task for a delegate.

use super::Registry;

/// Registers the Kubernetes step types.
pub fn register(r: &mut Registry) {
    let _ = r;
}
