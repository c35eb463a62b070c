//! Steady state: waiting until Deployments have rolled out, as `kubectl rollout
//! status` judges it, by polling their status:
//!
//! - ready when `status.observedGeneration >= metadata.generation` and updated,
//!   ready and available replicas all equal `spec.replicas`;
//! - failed at once when, for the current generation, the `Progressing`
//!   condition is `False` (the cluster
//!   gave up, e.g. `ProgressDeadlineExceeded`): a `Verification` failure with the
//!   cluster's reason and message;
//! - when the step's time runs out first: a `Timeout` failure with the last
//!   status seen and the cluster's latest condition message.

use std::time::Duration;

use dray_shared::pb::LogStream;
use serde_json::Value as Json;
use tokio::time::Instant;

use super::cluster::Cluster;
use super::errors::K8sError;
use crate::targets::LogSink;

/// Between two polls of a Deployment.
pub const POLL: Duration = Duration::from_millis(500);

/// Where a Deployment's rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// Done.
    Ready,
    /// Still going; a line describing progress.
    Progressing(String),
    /// The cluster reports it failed: reason and message.
    Failed(String),
}

fn num(d: &Json, pointer: &str) -> i64 {
    d.pointer(pointer).and_then(Json::as_i64).unwrap_or(0)
}

/// Judges a Deployment object.
pub fn rollout(d: &Json) -> Rollout {
    let wanted = d.pointer("/spec/replicas").and_then(Json::as_i64).unwrap_or(1);
    let generation = num(d, "/metadata/generation");
    let observed = num(d, "/status/observedGeneration");
    let (updated, ready, available) = (
        num(d, "/status/updatedReplicas"),
        num(d, "/status/readyReplicas"),
        num(d, "/status/availableReplicas"),
    );
    let conditions = d.pointer("/status/conditions").and_then(Json::as_array).cloned().unwrap_or_default();
    let cond = |t: &str| conditions.iter().find(|c| c.get("type").and_then(Json::as_str) == Some(t));
    let text = |c: &Json, k: &str| c.get(k).and_then(Json::as_str).unwrap_or("").to_string();
    // Conditions describe the generation the controller last saw: until it has
    // seen this one, an old failure says nothing about the new rollout.
    if observed < generation {
        return Rollout::Progressing(format!(
            "waiting for the controller to observe generation {generation} (observed {observed})"
        ));
    }
    if let Some(c) = cond("Progressing")
        && text(c, "status") == "False"
    {
        return Rollout::Failed(format!("{}: {}", text(c, "reason"), text(c, "message")));
    }
    if observed >= generation && generation > 0 && updated == wanted && ready == wanted && available == wanted
    {
        return Rollout::Ready;
    }
    let mut line = if observed < generation {
        format!("waiting for the controller to observe generation {generation} (observed {observed})")
    } else {
        format!("{updated}/{wanted} updated, {ready}/{wanted} ready, {available}/{wanted} available")
    };
    // The latest word from the cluster, e.g. ReplicaFailure or a Progressing message.
    if let Some(c) = cond("ReplicaFailure").or_else(|| cond("Progressing"))
        && !text(c, "message").is_empty()
    {
        line.push_str(&format!(" ({}: {})", text(c, "reason"), text(c, "message")));
    }
    Rollout::Progressing(line)
}

/// Waits for every Deployment in `names` (in the cluster's namespace) to roll
/// out, until `deadline`.
pub async fn wait(
    cluster: &Cluster,
    names: &[String],
    deadline: Instant,
    logs: &mut LogSink,
) -> Result<(), K8sError> {
    for name in names {
        logs.line(LogStream::Stdout, &format!("waiting for Deployment {name} to roll out"));
        let mut last = String::new();
        loop {
            let d = cluster.get("apps/v1", "Deployment", None, name).await?.ok_or_else(|| {
                K8sError::Other(format!("Deployment {}/{name} disappeared", cluster.namespace))
            })?;
            match rollout(&d) {
                Rollout::Ready => {
                    logs.line(LogStream::Stdout, &format!("Deployment {name} rolled out"));
                    break;
                }
                Rollout::Failed(why) => {
                    return Err(K8sError::RolloutFailed(format!(
                        "Deployment {}/{name} failed to roll out: {why}",
                        cluster.namespace
                    )));
                }
                Rollout::Progressing(line) => {
                    if line != last {
                        logs.line(LogStream::Stdout, &format!("Deployment {name}: {line}"));
                        logs.flush().await;
                        last = line;
                    }
                }
            }
            if Instant::now() + POLL > deadline {
                return Err(K8sError::TimedOut(format!(
                    "timed out waiting for Deployment {}/{name} to roll out: {last}",
                    cluster.namespace
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }
    logs.flush().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dep(status: Json) -> Json {
        json!({"metadata": {"generation": 2}, "spec": {"replicas": 3}, "status": status})
    }

    #[test]
    fn judges_rollouts_like_kubectl() {
        let ready = dep(
            json!({"observedGeneration": 2, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}),
        );
        assert_eq!(rollout(&ready), Rollout::Ready);
        let stale = dep(
            json!({"observedGeneration": 1, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}),
        );
        assert_eq!(
            rollout(&stale),
            Rollout::Progressing("waiting for the controller to observe generation 2 (observed 1)".into())
        );
        let partial = dep(
            json!({"observedGeneration": 2, "updatedReplicas": 3, "readyReplicas": 1, "availableReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated", "message": "rs progressing"}]}),
        );
        assert_eq!(
            rollout(&partial),
            Rollout::Progressing(
                "3/3 updated, 1/3 ready, 1/3 available (ReplicaSetUpdated: rs progressing)".into()
            )
        );
        let failed = dep(
            json!({"observedGeneration": 2, "conditions": [{"type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"web-1\" has timed out progressing."}]}),
        );
        assert_eq!(
            rollout(&failed),
            Rollout::Failed(
                "ProgressDeadlineExceeded: ReplicaSet \"web-1\" has timed out progressing.".into()
            )
        );
        let old_failure = json!({"metadata": {"generation": 3}, "spec": {"replicas": 3}, "status": {"observedGeneration": 2,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "old"}]}});
        assert!(
            matches!(rollout(&old_failure), Rollout::Progressing(_)),
            "a failure of an older generation is not this rollout's"
        );
        let no_status = json!({"metadata": {"generation": 1}, "spec": {}});
        assert!(matches!(rollout(&no_status), Rollout::Progressing(_)));
    }
}
