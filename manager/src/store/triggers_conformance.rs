//! The trigger part of the conformance suite: what [`TriggerStore`] must do on
//! every backend. Backends run it with [`trigger_conformance_suite!`] next to the
//! main suite, with the same fixture.
//!
//! [`TriggerStore`]: super::triggers::TriggerStore

use anyhow::ensure;

use super::Store;
use super::triggers::{Outcome, TriggerEvent, TriggerRef};

/// Expands to one `#[tokio::test]` per trigger conformance function (see
/// `conformance_suite!` for the fixture contract).
macro_rules! trigger_conformance_suite {
    ($fixture:ty) => {
        $crate::store::triggers_conformance::trigger_conformance_suite!(@each $fixture;
            trigger_master_key_is_created_once,
            trigger_master_key_race_has_one_winner,
            trigger_events_round_trip_newest_first,
            trigger_events_are_pruned_per_trigger,
            cron_last_fired_only_moves_forward,
        );
    };
    (@each $fixture:ty; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let fixture = <$fixture>::new().await;
                let outcome = $crate::store::triggers_conformance::$name(fixture.store()).await;
                fixture.finish().await;
                if let Err(e) = outcome {
                    panic!("{}: {e:?}", stringify!($name));
                }
            }
        )*
    };
}
pub(crate) use trigger_conformance_suite;

fn event(t: &TriggerRef, at_ms: i64, outcome: Outcome) -> TriggerEvent {
    TriggerEvent {
        trigger: t.clone(),
        at_ms,
        outcome,
        event: "Push".into(),
        reason: format!("reason {at_ms}"),
        delivery_id: Some(format!("d-{at_ms}")),
        execution_id: (outcome == Outcome::Started).then(|| format!("e-{at_ms}")),
    }
}

pub(crate) async fn trigger_master_key_is_created_once(store: &dyn Store) -> anyhow::Result<()> {
    let first = store.trigger_master_key(&[1; 32], 10).await?;
    ensure!(first == vec![1; 32], "the first candidate is stored: {first:?}");
    let second = store.trigger_master_key(&[2; 32], 20).await?;
    ensure!(second == vec![1; 32], "a later candidate must not replace the key: {second:?}");
    Ok(())
}

pub(crate) async fn trigger_master_key_race_has_one_winner(store: &dyn Store) -> anyhow::Result<()> {
    let candidates: Vec<Vec<u8>> = (0u8..8).map(|i| vec![i; 32]).collect();
    let keys =
        futures::future::try_join_all(candidates.iter().map(|c| store.trigger_master_key(c, 1))).await?;
    ensure!(candidates.contains(&keys[0]), "the key is one of the candidates");
    ensure!(keys.iter().all(|k| *k == keys[0]), "every caller gets the same key: {keys:?}");
    Ok(())
}

pub(crate) async fn trigger_events_round_trip_newest_first(store: &dyn Store) -> anyhow::Result<()> {
    let a = TriggerRef::new("default", "o", "p", "hook");
    let other_project = TriggerRef::new("default", "o", "q", "hook");
    let refused = TriggerEvent {
        event: String::new(),
        reason: "missing header X-Hub-Signature-256".into(),
        delivery_id: None,
        ..event(&a, 1, Outcome::Refused)
    };
    for e in [&refused, &event(&a, 2, Outcome::Started), &event(&other_project, 3, Outcome::Skipped)] {
        store.append_trigger_event(e, 100).await?;
    }
    store.append_trigger_event(&event(&a, 4, Outcome::Failed), 100).await?;

    let got = store.list_trigger_events(&a, 10).await?;
    let want = vec![event(&a, 4, Outcome::Failed), event(&a, 2, Outcome::Started), refused];
    ensure!(got == want, "events of one trigger, newest first:\n got {got:?}\nwant {want:?}");
    let limited = store.list_trigger_events(&a, 1).await?;
    ensure!(limited.len() == 1 && limited[0].at_ms == 4, "limit keeps the newest: {limited:?}");
    let other = store.list_trigger_events(&other_project, 10).await?;
    ensure!(other == vec![event(&other_project, 3, Outcome::Skipped)], "scopes are separate: {other:?}");
    let none = store.list_trigger_events(&TriggerRef::new("default", "o", "p", "nope"), 10).await?;
    ensure!(none.is_empty(), "an unknown trigger has no events: {none:?}");
    Ok(())
}

pub(crate) async fn trigger_events_are_pruned_per_trigger(store: &dyn Store) -> anyhow::Result<()> {
    let busy = TriggerRef::new("default", "o", "p", "busy");
    let quiet = TriggerRef::new("default", "o", "p", "quiet");
    store.append_trigger_event(&event(&quiet, 0, Outcome::Skipped), 3).await?;
    for at in 1..=7 {
        store.append_trigger_event(&event(&busy, at, Outcome::Refused), 3).await?;
    }
    let kept: Vec<i64> = store.list_trigger_events(&busy, 100).await?.iter().map(|e| e.at_ms).collect();
    ensure!(kept == vec![7, 6, 5], "the newest three are kept: {kept:?}");
    let quiet_kept = store.list_trigger_events(&quiet, 100).await?;
    ensure!(quiet_kept.len() == 1, "pruning one trigger leaves the others: {quiet_kept:?}");
    // keep = 0 still keeps the event just recorded.
    store.append_trigger_event(&event(&busy, 8, Outcome::Refused), 0).await?;
    let kept: Vec<i64> = store.list_trigger_events(&busy, 100).await?.iter().map(|e| e.at_ms).collect();
    ensure!(kept == vec![8], "at least the newest is kept: {kept:?}");
    Ok(())
}

pub(crate) async fn cron_last_fired_only_moves_forward(store: &dyn Store) -> anyhow::Result<()> {
    let t = TriggerRef::new("default", "o", "p", "nightly");
    let other = TriggerRef::new("default", "o", "p2", "nightly");
    ensure!(store.cron_last_fired(&t).await?.is_none(), "no state before the first write");
    store.set_cron_last_fired(&t, 1_000).await?;
    store.set_cron_last_fired(&t, 3_000).await?;
    store.set_cron_last_fired(&t, 2_000).await?;
    let got = store.cron_last_fired(&t).await?;
    ensure!(got == Some(3_000), "a stale write does not move it back: {got:?}");
    ensure!(store.cron_last_fired(&other).await?.is_none(), "scopes are separate");
    Ok(())
}
