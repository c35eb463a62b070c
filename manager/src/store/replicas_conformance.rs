//! The replica part of the conformance suite: what [`ReplicaStore`] must do on
//! every backend. Backends run it with [`replica_conformance_suite!`] next to the
//! main suite, with the same fixture.
//!
//! [`ReplicaStore`]: super::replicas::ReplicaStore

use std::collections::BTreeSet;

use anyhow::ensure;
use dray_shared::{Epoch, TaskId, pb};

use super::Store;
use super::conformance::{insert, task, tasks_batch, update};
use super::replicas::{Adopted, Claimed, ReplicaRecord};

/// Expands to one `#[tokio::test]` per replica conformance function.
macro_rules! replica_conformance_suite {
    ($fixture:ty) => {
        $crate::store::replicas_conformance::replica_conformance_suite!(@each $fixture;
            replicas_register_and_heartbeat,
            claims_are_exclusive_and_only_take_queued_unowned_tasks,
            released_tasks_can_be_claimed_again,
            a_dead_replicas_unfinished_tasks_are_adopted,
            a_running_task_is_taken_only_from_its_expected_owner,
            queued_unowned_and_by_ids_read_rows,
            unowned_offered_and_running_tasks_are_found_and_adopted,
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
    ReplicaRecord {
        id: id.into(),
        grpc_url: format!("https://{id}:7443"),
        http_url: format!("http://{id}:8080"),
        started_ms: 1,
        heartbeat_ms: at,
        leader_ms: None,
    }
}

fn ids_of(claimed: &[Claimed]) -> BTreeSet<TaskId> {
    claimed.iter().map(|c| c.id).collect()
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
    ensure!(all[0].http_url == "http://a:8080" && all[0].leader_ms.is_none(), "{all:?}");
    store.mark_leader("a", 40).await?;
    store.heartbeat_replica(&replica("a", 45)).await?;
    ensure!(store.replicas().await?[0].leader_ms == Some(40), "a heartbeat keeps the leadership mark");
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
    ensure!(ids_of(&a) == ids[..4].iter().copied().collect::<BTreeSet<_>>(), "{a:?}");
    ensure!(a.iter().all(|c| c.version == 1 && c.epoch == Epoch(0)), "claims report the row: {a:?}");
    // Overlapping claims: b only gets what nobody owns; a finished task is never claimed.
    let mut wanted = ids[2..].to_vec();
    wanted.push(done.id);
    let b = store.claim_tasks("b", &wanted).await?;
    ensure!(ids_of(&b) == ids[4..].iter().copied().collect::<BTreeSet<_>>(), "{b:?}");
    let again = store.claim_tasks("a", &ids[..1]).await?;
    ensure!(ids_of(&again) == BTreeSet::from([ids[0]]), "a claim retried by its owner wins again: {again:?}");
    let owners: BTreeSet<String> = store.task_owners().await?.into_iter().collect();
    ensure!(owners == BTreeSet::from(["a".to_string(), "b".to_string()]), "{owners:?}");
    ensure!(store.task_owner(ids[0]).await?.as_deref() == Some("a"));
    ensure!(store.task_owner(ids[5]).await?.as_deref() == Some("b"));
    ensure!(store.task_owner(done.id).await?.is_none());
    ensure!(store.claim_tasks("b", &[]).await?.is_empty());

    // The lease engine's writes keep the owner of an offered or running task
    // and clear it when the task goes back to the queue or ends.
    let (offered, w) = update(&queued[0], |t| t.state = pb::TaskState::Offered);
    store.commit(&tasks_batch(vec![w])).await?;
    ensure!(store.task_owner(ids[0]).await?.as_deref() == Some("a"));
    let (_, w) = update(&offered, |t| t.state = pb::TaskState::Queued);
    store.commit(&tasks_batch(vec![w])).await?;
    ensure!(store.task_owner(ids[0]).await?.is_none(), "re-queued: anybody's to claim");
    let again = store.claim_tasks("b", &[ids[0]]).await?;
    ensure!(again.len() == 1 && again[0].version == 3, "the claim reports the newer row: {again:?}");
    let (_, w) = update(&queued[1], |t| t.state = pb::TaskState::Cancelled);
    store.commit(&tasks_batch(vec![w])).await?;
    ensure!(store.task_owner(ids[1]).await?.is_none(), "a final row has no owner");
    Ok(())
}

pub(crate) async fn released_tasks_can_be_claimed_again(store: &dyn Store) -> anyhow::Result<()> {
    let t = task(100, pb::TaskState::Queued);
    store.commit(&tasks_batch(vec![insert(&t)])).await?;
    ensure!(store.claim_tasks("a", &[t.id]).await?.len() == 1);
    ensure!(store.release_tasks("b", &[t.id]).await? == 0, "only the owner releases");
    ensure!(store.claim_tasks("b", &[t.id]).await?.is_empty());
    ensure!(store.release_tasks("a", &[t.id]).await? == 1);
    ensure!(store.claim_tasks("b", &[t.id]).await?.len() == 1);
    Ok(())
}

pub(crate) async fn a_dead_replicas_unfinished_tasks_are_adopted(store: &dyn Store) -> anyhow::Result<()> {
    let [running, offered, queued, finished] = [100, 101, 102, 103].map(|n| task(n, pb::TaskState::Queued));
    store
        .commit(&tasks_batch(vec![insert(&running), insert(&offered), insert(&queued), insert(&finished)]))
        .await?;
    let all = [running.id, offered.id, queued.id, finished.id];
    ensure!(store.claim_tasks("dead", &all).await?.len() == 4);
    let (_, r) = update(&running, |t| t.state = pb::TaskState::Running);
    let (o2, o) = update(&offered, |t| {
        t.state = pb::TaskState::Offered;
        t.epoch = Epoch(1);
        t.delegate_id = Some(dray_shared::DelegateId::new());
    });
    let (_, f) = update(&finished, |t| t.state = pb::TaskState::Succeeded);
    store.commit(&tasks_batch(vec![r, o, f])).await?;
    store.claim_tasks("other", &[queued.id]).await?; // already owned by "dead": no-op
    ensure!(store.task_owner(queued.id).await?.as_deref() == Some("dead"));

    let adopted = store.adopt_tasks("dead", "alive").await?;
    ensure!(adopted.running == vec![running.id], "{adopted:?}");
    let requeued: BTreeSet<_> = adopted.requeued.iter().copied().collect();
    ensure!(requeued == BTreeSet::from([offered.id, queued.id]), "{adopted:?}");
    ensure!(store.task_owner(running.id).await?.as_deref() == Some("alive"));
    ensure!(store.task_owner(offered.id).await?.is_none() && store.task_owner(queued.id).await?.is_none());
    let back = store.get_task(offered.id).await?.expect("row");
    ensure!(back.state == pb::TaskState::Queued && back.version == o2.version + 1, "{back:?}");
    ensure!(back.epoch == Epoch(1), "the epoch stays: the next offer takes a newer one");
    ensure!(back.delegate_id.is_none(), "the dead offer's delegate no longer holds it");
    ensure!(store.task_owner(finished.id).await?.is_none());
    ensure!(store.adopt_tasks("dead", "alive").await? == Adopted::default(), "nothing twice");
    Ok(())
}

pub(crate) async fn a_running_task_is_taken_only_from_its_expected_owner(
    store: &dyn Store,
) -> anyhow::Result<()> {
    let t = task(100, pb::TaskState::Queued);
    store.commit(&tasks_batch(vec![insert(&t)])).await?;
    ensure!(!store.take_running(t.id, None, "b").await?, "a queued task is claimed, not taken");
    store.claim_tasks("a", &[t.id]).await?;
    let (_, w) = update(&t, |t| t.state = pb::TaskState::Running);
    store.commit(&tasks_batch(vec![w])).await?;
    ensure!(!store.take_running(t.id, Some("x"), "b").await?, "wrong expected owner");
    ensure!(!store.take_running(t.id, None, "b").await?, "it has an owner");
    ensure!(store.take_running(t.id, Some("a"), "b").await?);
    ensure!(store.task_owner(t.id).await?.as_deref() == Some("b"));
    ensure!(store.release_tasks("b", &[t.id]).await? == 1);
    ensure!(store.take_running(t.id, None, "c").await?, "a released lease is anybody's");
    ensure!(store.task_owner(t.id).await?.as_deref() == Some("c"));
    Ok(())
}

pub(crate) async fn queued_unowned_and_by_ids_read_rows(store: &dyn Store) -> anyhow::Result<()> {
    let ts: Vec<_> = (0..5).map(|i| task(100 + i, pb::TaskState::Queued)).collect();
    store.commit(&tasks_batch(ts.iter().map(insert).collect())).await?;
    store.claim_tasks("a", &[ts[1].id]).await?;
    let free = store.queued_unowned(3).await?;
    ensure!(free.iter().map(|t| t.id).collect::<Vec<_>>() == vec![ts[0].id, ts[2].id, ts[3].id], "{free:?}");
    ensure!(free[0] == ts[0], "whole rows");
    let mut got = store.tasks_by_ids(&[ts[4].id, ts[1].id, TaskId::new()]).await?;
    got.sort_by_key(|t| t.created_ms);
    ensure!(got == vec![ts[1].clone(), ts[4].clone()], "{got:?}");
    ensure!(store.tasks_by_ids(&[]).await?.is_empty());
    Ok(())
}

pub(crate) async fn unowned_offered_and_running_tasks_are_found_and_adopted(
    store: &dyn Store,
) -> anyhow::Result<()> {
    let [running, offered, queued] = [100, 101, 102].map(|n| task(n, pb::TaskState::Queued));
    store.commit(&tasks_batch(vec![insert(&running), insert(&offered), insert(&queued)])).await?;
    // Written by a replica that then let go (a handoff), or before replicas existed.
    let (_, r) = update(&running, |t| t.state = pb::TaskState::Running);
    let (_, o) = update(&offered, |t| t.state = pb::TaskState::Offered);
    store.commit(&tasks_batch(vec![r, o])).await?;
    let found: BTreeSet<TaskId> = store.unowned_live().await?.into_iter().collect();
    ensure!(
        found == BTreeSet::from([running.id, offered.id]),
        "queued tasks are nobody's by design: {found:?}"
    );
    let adopted = store.adopt_unowned(&[running.id, offered.id, queued.id], "me").await?;
    ensure!(adopted.running == vec![running.id] && adopted.requeued == vec![offered.id], "{adopted:?}");
    ensure!(store.task_owner(running.id).await?.as_deref() == Some("me"));
    ensure!(store.get_task(offered.id).await?.map(|t| t.state) == Some(pb::TaskState::Queued));
    ensure!(store.unowned_live().await?.is_empty());
    ensure!(store.adopt_unowned(&[running.id], "other").await? == Adopted::default(), "owned now");
    Ok(())
}
