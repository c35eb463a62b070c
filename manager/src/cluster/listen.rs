//! Feeds the lease engine what other replicas did: `LISTEN` on the store's
//! `tasks` channel, plus a slow poll of queued unowned tasks that catches
//! whatever a notice did not say (a listener reconnecting, a replica that died
//! between its commit and its notice).

use std::sync::Arc;
use std::time::Duration;

use dray_shared::TaskId;
use tracing::{debug, info, warn};

use super::bus::Notice;
use crate::lease::engine::{Handle, Remote, Stopped};
use crate::store::postgres::PgStore;
use crate::store::replicas::ReplicaStore;

/// How often queued unowned tasks are polled.
pub const POLL: Duration = Duration::from_secs(2);
/// Most queued tasks one poll reads.
const POLL_LIMIT: u32 = 2_000;

/// Runs until the lease engine stops.
pub async fn run(store: Arc<PgStore>, me: String, lease: Handle) -> Result<(), Stopped> {
    loop {
        let mut listener = match store.listen(&["tasks"]).await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "Cannot listen for other replicas' notices; polling and retrying.");
                poll(&store, &lease).await?;
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        info!("Listening for other replicas' notices.");
        // Catch up on what happened before the listener was there.
        poll(&store, &lease).await?;
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                n = listener.recv() => match n {
                    Ok((_, payload)) => heard(&store, &me, &lease, &payload).await?,
                    Err(e) => {
                        warn!(error = %e, "Lost the notice listener; reconnecting.");
                        break;
                    }
                },
                _ = tick.tick() => poll(&store, &lease).await?,
            }
        }
    }
}

async fn poll(store: &PgStore, lease: &Handle) -> Result<(), Stopped> {
    match store.queued_unowned(POLL_LIMIT).await {
        Ok(rows) if !rows.is_empty() => lease.remote(Remote::Queued(rows)).await,
        Ok(_) => Ok(()),
        Err(e) => {
            warn!(error = %e, "Polling queued tasks failed.");
            Ok(())
        }
    }
}

async fn heard(store: &PgStore, me: &str, lease: &Handle, payload: &str) -> Result<(), Stopped> {
    let (from, notice) = match Notice::decode(payload) {
        Ok(n) => n,
        Err(e) => {
            warn!(error = %e, "Ignoring a malformed notice.");
            return Ok(());
        }
    };
    if from == me {
        return Ok(());
    }
    debug!(from = %from, notice = ?notice, "Replica notice.");
    match notice {
        Notice::Queued(ids) => {
            let rows = rows(store, &ids).await;
            lease.remote(Remote::Queued(rows)).await
        }
        Notice::Done(ids) => {
            let rows = rows(store, &ids).await.into_iter().filter(|r| r.state.is_final()).collect();
            lease.remote(Remote::Finished(rows)).await
        }
        Notice::Cancel(id) => lease.remote(Remote::Cancel(id)).await,
        Notice::Release { task, to } => lease.remote(Remote::Release { task, to }).await,
    }
}

/// The rows of `ids`, retried a few times; on failure the poll (queued) and
/// the consumers' own re-reads (finished) catch up later.
async fn rows(store: &PgStore, ids: &[TaskId]) -> Vec<crate::store::TaskRecord> {
    for attempt in 1..=5u64 {
        match store.tasks_by_ids(ids).await {
            Ok(rows) => return rows,
            Err(e) => {
                warn!(error = %e, attempt, "Reading notified tasks failed.");
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
        }
    }
    vec![]
}
