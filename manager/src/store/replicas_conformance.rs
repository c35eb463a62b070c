//! The replica part of the conformance suite: what [`ReplicaStore`] must do on
//! every backend. Backends run it with [`replica_conformance_suite!`] next to the
//! main suite, with the same fixture.
//!
//! [`ReplicaStore`]: super::replicas::ReplicaStore

use std::collections::BTreeSet;

use anyhow::ensure;
use dray_shared::pb;

use super::Store;
use super::conformance::{insert, task, tasks_batch, update};
use super::replicas::ReplicaRecord;

/// Expands to one `#[tokio::test]` per replica conformance function.
macro_rules! replica_conformance_suite {
    ($fixture:ty) => {
        $crate::store::replicas_conformance::replica_conformance_suite!(@each $fixture;
            replicas_register_and_heartbeat,
            claims_are_exclusive_and_only_take_queued_unowned_tasks,
            released_tasks_can_be_claimed_again,
            a_dead_replicas_unfinished_tasks_are_adopted,
        );
    };
    (@each $fixture:ty; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let fixture = <$fixture>::new().await;
                let outcome = $crate::store::replicas_conformance::$name(fixture.store()).await;
                fixture.finish().await;
                if let Err(e) = outcome {
                    panic!("{}: {e:?}", stringify!($name));
                }
            }
        )*
    };
}
pub(crate) use replica_conformance_suite;

fn replica(id: &str, at: i64) -> ReplicaRecord {
    ReplicaRecord { id: id.into(), grpc_url: format!("https://{id}:7443"), started_ms: 1, heartbeat_ms: at }
}

pub(crate) async fn replicas_register_and_heartbeat(store: &dyn Store) -> anyhow::Result<()> {
    store.heartbeat_replica(&replica("b", 10)).await?;
    store.heartbeat_replica(&replica("a", 10)).await?;
    store
        .heartbeat_replica(&ReplicaRecord { grpc_url: "https://a2:7443".into(), ..replica("a", 25) })
        .await?;
    let all = store.replicas().await?;
    ensure!(all.len() == 2, "{all:?}");
    ensure!(all[0].id == "a" && all[0].heartbeat_ms == 25 && all[0].grpc_url == "https://a2:7443", "{all:?}");
    ensure!(all[0].started_ms == 1, "a heartbeat keeps the start time");
    ensure!(all[1].is_dead(30, 15) && !all[0].is_dead(30, 15));
    store.remove_replica("b").await?;
    ensure!(store.replicas().await?.len() == 1);
    Ok(())
}

pub(crate) async fn claims_are_exclusive_and_only_take_queued_unowned_tasks(
    store: &dyn Store,
) -> anyhow::Result<()> {
    let queued: Vec<_> = (0..6).map(|i| task(100 + i, pb::TaskState::Queued)).collect();
    let done = task(200, pb::TaskState::Succeeded);
    let mut writes: Vec<_> = queued.iter().map(insert).collect();
    writes.push(insert(&done));
    store.commit(&tasks_batch(writes)).await?;
    let ids: Vec<_> = queued.iter().map(|t| t.id).collect();

    let a = store.claim_tasks("a", &ids[..4]).await?;
    ensure!(a.iter().collect::<BTreeSet<_>>() == ids[..4].iter().collect::<BTreeSet<_>>(), "{a:?}");
    // Overlapping claims: b only gets what nobody owns; a finished task is never claimed.
    let mut wanted = ids[2..].to_vec();
    wanted.push(done.id);
    let b = store.claim_tasks("b", &wanted).await?;
    ensure!(b.iter().collect::<BTreeSet<_>>() == ids[4..].iter().collect::<BTreeSet<_>>(), "{b:?}");
    ensure!(store.task_owner(ids[0]).await?.as_deref() == Some("a"));
    ensure!(store.task_owner(ids[5]).await?.as_deref() == Some("b"));
    ensure!(store.task_owner(done.id).await?.is_none());
    ensure!(store.claim_tasks("b", &[]).await?.is_empty());

    // The lease engine's compare-and-set writes leave the owner alone.
    let (_, w) = update(&queued[0], |t| t.state = pb::TaskState::Offered);
    store.commit(&tasks_batch(vec![w])).await?;
    ensure!(store.task_owner(ids[0]).await?.as_deref() == Some("a"));
    Ok(())
}

pub(crate) async fn released_tasks_can_be_claimed_again(store: &dyn Store) -> anyhow::Result<()> {
    let t = task(100, pb::TaskState::Queued);
    store.commit(&tasks_batch(vec![insert(&t)])).await?;
    ensure!(store.claim_tasks("a", &[t.id]).await? == vec![t.id]);
    ensure!(store.release_tasks("b", &[t.id]).await? == 0, "only the owner releases");
    ensure!(store.claim_tasks("b", &[t.id]).await?.is_empty());
    ensure!(store.release_tasks("a", &[t.id]).await? == 1);
    ensure!(store.claim_tasks("b", &[t.id]).await? == vec![t.id]);
    Ok(())
}

pub(crate) async fn a_dead_replicas_unfinished_tasks_are_adopted(store: &dyn Store) -> anyhow::Result<()> {
    let running = task(100, pb::TaskState::Queued);
    let finished = task(101, pb::TaskState::Queued);
    store.commit(&tasks_batch(vec![insert(&running), insert(&finished)])).await?;
    store.claim_tasks("dead", &[running.id, finished.id]).await?;
    let (_, r) = update(&running, |t| t.state = pb::TaskState::Running);
    let (_, f) = update(&finished, |t| t.state = pb::TaskState::Succeeded);
    store.commit(&tasks_batch(vec![r, f])).await?;
    ensure!(store.adopt_tasks("dead", "alive").await? == 1, "only the unfinished task moves");
    ensure!(store.task_owner(running.id).await?.as_deref() == Some("alive"));
    ensure!(store.task_owner(finished.id).await?.as_deref() == Some("dead"));
    Ok(())
}
