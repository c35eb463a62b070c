//! Release history: every rolling deploy of a release is a revision, kept in the
//! cluster in the Secret `release-<releaseName>` (a Secret, not a ConfigMap:
//! rendered manifests may hold resolved secret values) so any delegate can roll
//! back. The Secret's `history` key holds JSON: the last [`KEEP`] revisions with
//! their status and the objects they applied.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use super::cluster::Cluster;
use super::errors::K8sError;
use super::manifests::{Object, RELEASE_LABEL};

/// Revisions kept.
pub const KEEP: usize = 10;
/// Key of the Secret's data holding the history.
const KEY: &str = "history";

/// Status of a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Applied; the rollout has not finished.
    InProgress,
    /// Rolled out.
    Succeeded,
    /// Applied, the rollout failed.
    Failed,
    /// Replaced by a rollback to an earlier revision.
    RolledBack,
}

/// One revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    /// 1, 2, …
    pub number: u32,
    /// Where it stands.
    pub status: Status,
    /// The objects applied, as applied.
    pub objects: Vec<Json>,
    /// Who made it (`<executionId>/<stage>`), when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub deployment: String,
}

/// A release's history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Oldest first.
    pub revisions: Vec<Revision>,
}

impl History {
    /// Adds the next revision (InProgress) of `objects`; returns its number.
    pub fn push(&mut self, objects: &[Object], deployment: &str) -> u32 {
        let number = self.revisions.last().map_or(1, |r| r.number + 1);
        self.revisions.push(Revision {
            number,
            status: Status::InProgress,
            objects: objects.iter().map(|o| o.body.clone()).collect(),
            deployment: deployment.to_string(),
        });
        let extra = self.revisions.len().saturating_sub(KEEP);
        self.revisions.drain(..extra);
        number
    }

    /// Sets the status of revision `number`.
    pub fn set(&mut self, number: u32, status: Status) {
        if let Some(r) = self.revisions.iter_mut().find(|r| r.number == number) {
            r.status = status;
        }
    }

    /// The latest revision.
    pub fn latest(&self) -> Option<&Revision> {
        self.revisions.last()
    }

    /// For a rollback: the latest revision and the last successful one before it.
    /// When the latest succeeded and nothing failed after it, it is the current
    /// state, and rolling back goes to the successful one before it.
    pub fn rollback_pair(&self) -> Option<(&Revision, &Revision)> {
        let (latest, earlier) = self.revisions.split_last()?;
        let target = earlier.iter().rev().find(|r| r.status == Status::Succeeded)?;
        Some((latest, target))
    }
}

/// The name of the history Secret.
pub fn secret_name(release: &str) -> String {
    format!("release-{release}")
}

/// Reads the history (empty when there is none yet).
pub async fn load(cluster: &Cluster, release: &str) -> Result<History, K8sError> {
    let name = secret_name(release);
    let Some(secret) = cluster.get("v1", "Secret", None, &name).await? else {
        return Ok(History::default());
    };
    let Some(encoded) = secret.pointer(&format!("/data/{KEY}")).and_then(Json::as_str) else {
        return Ok(History::default());
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| K8sError::Other(format!("release history Secret {name}: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| K8sError::Other(format!("release history Secret {name}: {e}")))
}

/// Writes the history (server-side apply of the Secret).
pub async fn save(cluster: &Cluster, release: &str, history: &History) -> Result<(), K8sError> {
    let text = serde_json::to_vec(history).map_err(|e| K8sError::Other(e.to_string()))?;
    let labels = BTreeMap::from([(RELEASE_LABEL, release), ("dray.io/owner", "dray")]);
    let body = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret_name(release), "labels": labels},
        "type": "dray.io/release.v1",
        "data": {KEY: base64::engine::general_purpose::STANDARD.encode(text)},
    });
    let mut obj = Object::new(body, "release history")?;
    cluster.apply(&mut obj).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(name: &str) -> Object {
        Object::new(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}), "t")
            .unwrap()
    }

    #[test]
    fn revisions_number_up_and_keep_the_last_ten() {
        let mut h = History::default();
        for i in 0..12 {
            let n = h.push(&[obj(&format!("c{i}"))], "");
            h.set(n, Status::Succeeded);
        }
        assert_eq!(h.revisions.len(), KEEP);
        assert_eq!(h.revisions[0].number, 3);
        assert_eq!(h.latest().unwrap().number, 12);
    }

    #[test]
    fn rollback_goes_to_the_last_success_before_the_latest() {
        let mut h = History::default();
        assert!(h.rollback_pair().is_none());
        let a = h.push(&[obj("a")], "e/s");
        h.set(a, Status::Succeeded);
        assert!(h.rollback_pair().is_none(), "nothing before the first revision");
        let b = h.push(&[obj("b")], "e/s");
        h.set(b, Status::Failed);
        let c = h.push(&[obj("c")], "e/s");
        h.set(c, Status::Failed);
        let (latest, target) = h.rollback_pair().unwrap();
        assert_eq!((latest.number, target.number), (3, 1));
    }
}
