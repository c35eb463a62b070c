//! One replica at a time leads: it runs the pipeline engine (executions,
//! their concurrency locks and sequence numbers) and the cron scheduler, so
//! execution steps and cron firings happen once. Leadership is a PostgreSQL
//! advisory lock (see `store::postgres::leader`); the leader records when it
//! took over, which is how the others find it to forward pipeline calls
//! ([`super::forward`]). A leader that loses its lock connection stops the
//! process: its engine's memory can no longer be trusted to be the only one.
//! With SQLite there is one replica and it leads from the start.

use std::time::Duration;

use dray_shared::clock::now_ms;
use tokio::sync::watch;
use tracing::{info, warn};

use super::REPLICA_TTL;
use crate::store::postgres::PgStore;
use crate::store::replicas::{ReplicaRecord, ReplicaStore};

/// How often a follower tries for the lock and a leader checks it holds it.
pub const TRY_EVERY: Duration = Duration::from_secs(1);

/// This replica's part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Not known yet (starting, or no live leader registered yet).
    Unknown,
    /// This replica leads.
    Leader,
    /// Another replica leads; pipeline calls go to it.
    Follower {
        /// The leader's id.
        id: String,
        /// Its gRPC URL.
        grpc_url: String,
        /// Its HTTP URL (webhooks).
        http_url: String,
    },
}

/// The live replica that leads: the one that took over last.
pub fn current(replicas: &[ReplicaRecord], now_ms: i64) -> Option<&ReplicaRecord> {
    let ttl_ms = REPLICA_TTL.as_millis() as i64;
    replicas
        .iter()
        .filter(|r| r.leader_ms.is_some() && !r.is_dead(now_ms, ttl_ms))
        .max_by_key(|r| r.leader_ms)
}

/// Lost the leader lock: the process must stop.
#[derive(Debug, thiserror::Error)]
#[error("lost the leader lock: {0}")]
pub struct Deposed(String);

/// Longest a leader waits for its lock connection to answer before it
/// considers the lock lost (less than the grace a new leader gives it).
const CHECK_TIMEOUT: Duration = Duration::from_millis(800);

/// Campaigns until this replica leads (publishing who leads meanwhile on
/// `role`), then holds the lock; returns only when the lock is lost.
pub async fn run(store: &PgStore, me: &str, role: watch::Sender<Role>) -> Deposed {
    let mut candidate = None;
    loop {
        let c = match candidate.as_mut() {
            Some(c) => c,
            None => match store.candidate().await {
                Ok(c) => candidate.insert(c),
                Err(e) => {
                    warn!(error = %e, "Cannot open the leader-election connection; retrying.");
                    tokio::time::sleep(TRY_EVERY).await;
                    continue;
                }
            },
        };
        match c.try_lead().await {
            Ok(true) => break,
            Ok(false) => follow(store, me, &role).await,
            Err(e) => {
                warn!(error = %e, "Leader election failed; retrying.");
                candidate = None;
            }
        }
        tokio::time::sleep(TRY_EVERY).await;
    }
    let Some(mut lock) = candidate else { unreachable!("the loop only breaks while holding the lock") };
    // A previous leader that still looks alive lost its lock connection, not
    // necessarily its process: give it time to notice and stop (it checks
    // every second) before driving executions here.
    if let Ok(replicas) = store.replicas().await
        && current(&replicas, now_ms()).is_some_and(|r| r.id != me)
    {
        tokio::time::sleep(2 * TRY_EVERY).await;
    }
    info!(replica = %me, "This replica leads: it drives pipeline executions and cron triggers.");
    role.send_replace(Role::Leader);
    let mut marked = false;
    loop {
        if !marked {
            // Followers find the leader by this mark; retried until it lands.
            match store.mark_leader(me, now_ms()).await {
                Ok(()) => marked = true,
                Err(e) => warn!(error = %e, "Could not record the leadership; retrying."),
            }
        }
        tokio::time::sleep(TRY_EVERY).await;
        match tokio::time::timeout(CHECK_TIMEOUT, lock.check()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Deposed(e.to_string()),
            Err(_) => return Deposed(format!("the lock connection did not answer within {CHECK_TIMEOUT:?}")),
        }
    }
}

/// Publishes the current leader (if any) as this follower's role.
async fn follow(store: &PgStore, me: &str, role: &watch::Sender<Role>) {
    let replicas = match store.replicas().await {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "Cannot read the replicas to find the leader.");
            return;
        }
    };
    let next = match current(&replicas, now_ms()) {
        Some(r) if r.id != me => {
            Role::Follower { id: r.id.clone(), grpc_url: r.grpc_url.clone(), http_url: r.http_url.clone() }
        }
        _ => Role::Unknown,
    };
    role.send_if_modified(|old| {
        if *old == next {
            return false;
        }
        if let Role::Follower { id, grpc_url, .. } = &next {
            info!(leader = %id, url = %grpc_url, "Following the leader replica.");
        }
        *old = next;
        true
    });
}

/// Waits until `role` is known, at most `wait`.
pub async fn known(role: &mut watch::Receiver<Role>, wait: Duration) -> Role {
    let _ = tokio::time::timeout(wait, role.wait_for(|r| *r != Role::Unknown)).await;
    role.borrow().clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(id: &str, heartbeat_ms: i64, leader_ms: Option<i64>) -> ReplicaRecord {
        ReplicaRecord {
            id: id.into(),
            grpc_url: format!("https://{id}:7443"),
            http_url: String::new(),
            started_ms: 0,
            heartbeat_ms,
            leader_ms,
        }
    }

    #[test]
    fn the_leader_is_the_live_replica_that_took_over_last() {
        let now = 100_000;
        let fresh = now - 1_000;
        let stale = now - REPLICA_TTL.as_millis() as i64 - 1;
        let rs =
            [replica("old", stale, Some(50)), replica("new", fresh, Some(90)), replica("f", fresh, None)];
        assert_eq!(current(&rs, now).map(|r| r.id.as_str()), Some("new"));
        // A dead leader is nobody's leader, even if it took over last.
        let rs = [replica("a", fresh, Some(10)), replica("b", stale, Some(90))];
        assert_eq!(current(&rs, now).map(|r| r.id.as_str()), Some("a"));
        assert_eq!(current(&[replica("f", fresh, None)], now), None, "nobody leads yet");
    }
}
