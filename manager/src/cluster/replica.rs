//! This manager process as a replica: a fresh id per process, the gRPC URL other
//! replicas and operators reach it on, and a heartbeat in the store's
//! `replicas` table (see `docs/ha-design.md`). A replica whose heartbeat is
//! older than [`REPLICA_TTL`] is dead.

use std::sync::Arc;
use std::time::Duration;

use dray_shared::clock::now_ms;
use tracing::{debug, warn};

use crate::store::Store;
use crate::store::replicas::ReplicaRecord;

/// How often a replica refreshes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A replica silent for longer than this is dead (well under the lease TTL).
pub const REPLICA_TTL: Duration = Duration::from_secs(5);

/// This process's registration.
#[derive(Debug, Clone)]
pub struct Replica {
    /// Unique per process start.
    pub id: String,
    /// Where its gRPC API is reached.
    pub grpc_url: String,
    /// Where its HTTP endpoints (webhooks) are reached.
    pub http_url: String,
    /// Unix ms of the start.
    pub started_ms: i64,
}

impl Replica {
    /// A new replica reachable at `grpc_url` and `http_url`.
    pub fn new(grpc_url: String, http_url: String) -> Self {
        Replica { id: uuid::Uuid::now_v7().simple().to_string(), grpc_url, http_url, started_ms: now_ms() }
    }

    fn record(&self, at_ms: i64) -> ReplicaRecord {
        ReplicaRecord {
            id: self.id.clone(),
            grpc_url: self.grpc_url.clone(),
            http_url: self.http_url.clone(),
            started_ms: self.started_ms,
            heartbeat_ms: at_ms,
            leader_ms: None,
        }
    }

    /// Registers now (an error here stops the start-up).
    pub async fn register(&self, store: &dyn Store) -> crate::store::Result<()> {
        store.heartbeat_replica(&self.record(now_ms())).await
    }

    /// Refreshes the heartbeat forever. A failed write is logged and retried
    /// on the next beat; the stores' own failures stop the engines anyway.
    pub async fn heartbeat(self, store: Arc<dyn Store>) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match store.heartbeat_replica(&self.record(now_ms())).await {
                Ok(()) => debug!(replica = %self.id, "Replica heartbeat."),
                Err(e) => warn!(replica = %self.id, error = %e, "Replica heartbeat failed; retrying."),
            }
        }
    }

    /// Leaves the registry (clean shutdown).
    pub async fn deregister(&self, store: &dyn Store) {
        if let Err(e) = store.remove_replica(&self.id).await {
            warn!(replica = %self.id, error = %e, "Could not remove the replica registration.");
        }
    }
}
