//! Takes over the work of replicas that died: every second, each live
//! replica looks for owners of unfinished tasks whose heartbeat is older than
//! [`REPLICA_TTL`], or that are not registered at all (they stopped and left
//! the registry), and adopts their unfinished tasks in one statement (only
//! one adopter wins each row): running tasks become its own (loaded with a
//! fresh lease TTL so their delegates can come back), offered and queued ones
//! go back to the queue for anyone. Offered or running tasks with no owner at
//! all (let go in a handoff whose delegate then vanished) are adopted the same
//! way once they stay so for [`UNOWNED_GRACE`]. Registrations dead for long
//! are removed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dray_shared::clock::now_ms;
use tracing::{info, warn};

use super::bus::Notice;
use super::{HEARTBEAT, REPLICA_TTL};
use crate::lease::engine::{Handle, Remote, Stopped};
use crate::store::postgres::PgStore;
use crate::store::replicas::{Adopted, ReplicaStore};
use dray_shared::TaskId;

/// A registration dead for this long leaves the registry (until then
/// `dray get replicas` shows it as dead).
pub const FORGET_AFTER: Duration = Duration::from_secs(600);
/// How long an offered or running task may stay without an owner (a handoff
/// in flight takes about a second) before a replica adopts it.
pub const UNOWNED_GRACE: Duration = Duration::from_secs(10);
/// Looking for orphaned and unowned tasks reads the unfinished tasks, so it
/// runs on every tenth sweep only (they are rare: a clean stop, a handoff
/// whose delegate vanished); dead replicas are looked for on every sweep.
const ORPHANS_EVERY: u64 = 10;

/// Runs until the lease engine stops.
pub async fn run(store: Arc<PgStore>, me: String, lease: Handle) -> Result<(), Stopped> {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unowned = HashMap::new();
    for n in 0u64.. {
        tick.tick().await;
        let orphans = n % ORPHANS_EVERY == 0;
        if let Err(e) = sweep(&store, &me, &lease, orphans.then_some(&mut unowned)).await {
            match e {
                SweepError::Stopped => return Err(Stopped),
                SweepError::Store(e) => warn!(error = %e, "Looking for dead replicas failed; retrying."),
            }
        }
    }
    Ok(())
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

async fn sweep(
    store: &PgStore,
    me: &str,
    lease: &Handle,
    unowned: Option<&mut HashMap<TaskId, Instant>>,
) -> Result<(), SweepError> {
    let now = now_ms();
    let ttl_ms = REPLICA_TTL.as_millis() as i64;
    let replicas = store.replicas().await?;
    let registered: HashSet<&str> = replicas.iter().map(|r| r.id.as_str()).collect();
    for r in &replicas {
        if r.id != me && r.is_dead(now, ttl_ms) {
            let adopted = store.adopt_tasks(&r.id, me).await?;
            take(store, me, lease, adopted, &r.id).await?;
            if now - r.heartbeat_ms > FORGET_AFTER.as_millis() as i64 {
                store.remove_replica(&r.id).await?;
            }
        }
    }
    let Some(unowned) = unowned else { return Ok(()) };
    for owner in store.task_owners().await? {
        if owner != me && !registered.contains(owner.as_str()) {
            let adopted = store.adopt_tasks(&owner, me).await?;
            take(store, me, lease, adopted, &owner).await?;
        }
    }
    let live: HashSet<TaskId> = store.unowned_live().await?.into_iter().collect();
    unowned.retain(|id, _| live.contains(id));
    let due: Vec<TaskId> = live
        .into_iter()
        .filter(|id| unowned.entry(*id).or_insert_with(Instant::now).elapsed() >= UNOWNED_GRACE)
        .collect();
    if !due.is_empty() {
        let adopted = store.adopt_unowned(&due, me).await?;
        take(store, me, lease, adopted, "nobody").await?;
    }
    Ok(())
}

/// Loads what an adoption gave this replica and tells everyone what it re-queued.
async fn take(
    store: &PgStore,
    me: &str,
    lease: &Handle,
    adopted: Adopted,
    from: &str,
) -> Result<(), SweepError> {
    if adopted.running.is_empty() && adopted.requeued.is_empty() {
        return Ok(());
    }
    info!(
        from = %from,
        running = adopted.running.len(),
        requeued = adopted.requeued.len(),
        "Adopted unfinished tasks of a replica that is gone."
    );
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
    Ok(())
}
