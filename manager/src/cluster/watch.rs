//! Takes over the work of replicas that died: every second, each live
//! replica looks for registrations whose heartbeat is older than
//! [`REPLICA_TTL`] and adopts their unfinished tasks in one statement (only
//! one adopter wins each row): running tasks become its own (loaded with a
//! fresh lease TTL so their delegates can come back), offered and queued ones
//! go back to the queue for anyone. Registrations dead for long are removed.

use std::sync::Arc;
use std::time::Duration;

use dray_shared::clock::now_ms;
use tracing::{info, warn};

use super::bus::Notice;
use super::{HEARTBEAT, REPLICA_TTL};
use crate::lease::engine::{Handle, Remote, Stopped};
use crate::store::postgres::PgStore;
use crate::store::replicas::ReplicaStore;

/// A registration dead for this long leaves the registry (until then
/// `dray get replicas` shows it as dead).
pub const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Runs until the lease engine stops.
pub async fn run(store: Arc<PgStore>, me: String, lease: Handle) -> Result<(), Stopped> {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sweep(&store, &me, &lease).await {
            match e {
                SweepError::Stopped => return Err(Stopped),
                SweepError::Store(e) => warn!(error = %e, "Looking for dead replicas failed; retrying."),
            }
        }
    }
}

enum SweepError {
    Stopped,
    Store(crate::store::Error),
}

impl From<crate::store::Error> for SweepError {
    fn from(e: crate::store::Error) -> Self {
        SweepError::Store(e)
    }
}

impl From<Stopped> for SweepError {
    fn from(_: Stopped) -> Self {
        SweepError::Stopped
    }
}

async fn sweep(store: &PgStore, me: &str, lease: &Handle) -> Result<(), SweepError> {
    let now = now_ms();
    let ttl_ms = REPLICA_TTL.as_millis() as i64;
    for r in store.replicas().await? {
        if r.id == me || !r.is_dead(now, ttl_ms) {
            continue;
        }
        let adopted = store.adopt_tasks(&r.id, me).await?;
        if !adopted.running.is_empty() || !adopted.requeued.is_empty() {
            info!(
                dead = %r.id,
                running = adopted.running.len(),
                requeued = adopted.requeued.len(),
                "Adopted the unfinished tasks of a dead replica."
            );
        }
        if !adopted.running.is_empty() {
            lease.remote(Remote::Adopted(adopted.running)).await?;
        }
        if !adopted.requeued.is_empty() {
            let rows = store.tasks_by_ids(&adopted.requeued).await?;
            lease.remote(Remote::Queued(rows)).await?;
            for payload in Notice::encode_all(me, &[Notice::Queued(adopted.requeued)]) {
                store.notify("tasks", &payload).await?;
            }
        }
        if now - r.heartbeat_ms > FORGET_AFTER.as_millis() as i64 {
            store.remove_replica(&r.id).await?;
        }
    }
    Ok(())
}
