//! The conformance suite every [`Store`] implementation must pass: one async
//! function per behaviour, each taking a fresh, migrated store. Backends run the
//! whole list with [`conformance_suite!`], so a check added here runs everywhere.
//!
//! Deliberately not here: timing. These tests say what is stored, never how fast.

use std::collections::HashSet;

use anyhow::{Context, bail, ensure};
use dray_shared::{DelegateId, Epoch, TaskId, pb};

use super::{
    AuditRecord, Batch, DelegateRecord, Error, LogRecord, Store, TaskRecord, TaskWrite, TokenRecord,
    TokenRefused,
};

/// Expands to one `#[tokio::test]` per conformance function. `$fixture` is a type
/// with `async fn new() -> Self`, `fn store(&self) -> &dyn Store` and
/// `async fn finish(self)` (cleanup that must run even when the check fails).
macro_rules! conformance_suite {
    ($fixture:ty) => {
        $crate::store::conformance::conformance_suite!(@each $fixture;
            task_round_trips_every_field,
            task_outputs_and_error_type_round_trip,
            list_tasks_filters_by_state_newest_first,
            load_unfinished_is_non_final_oldest_first,
            compare_and_set_updates,
            failed_batch_writes_nothing,
            insert_of_existing_id_conflicts,
            same_task_twice_in_a_batch_collapses,
            logs_read_back_in_order,
            tokens_create_and_use,
            use_token_is_atomic,
            tokens_revoke_and_list,
            delegates_round_trip,
            audit_newest_first,
            big_batch_commits,
            migrate_is_idempotent,
            executions_round_trip,
            execution_keys_and_sequences_are_unique,
            instances_replace_per_target,
        );
    };
    (@each $fixture:ty; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let fixture = <$fixture>::new().await;
                let outcome = $crate::store::conformance::$name(fixture.store()).await;
                fixture.finish().await;
                if let Err(e) = outcome {
                    panic!("{}: {e:?}", stringify!($name));
                }
            }
        )*
    };
}
pub(crate) use conformance_suite;

/// Like `assert_eq!`, but returns an error carrying both sides.
macro_rules! check_eq {
    ($left:expr, $right:expr $(,)?) => {{
        let (left, right) = (&$left, &$right);
        ensure!(
            left == right,
            "{} != {} (line {})\n  left: {:?}\n right: {:?}",
            stringify!($left),
            stringify!($right),
            line!(),
            left,
            right
        );
    }};
}

fn scope(account: &str, org: &str, project: &str) -> pb::Scope {
    pb::Scope { account: account.into(), org: org.into(), project: project.into() }
}

/// A queued task with a realistic spec; `created_ms` orders it.
pub(crate) fn task(created_ms: i64, state: pb::TaskState) -> TaskRecord {
    TaskRecord {
        id: TaskId::new(),
        spec: pb::TaskSpec {
            kind: "shell".into(),
            params_json: r#"{"script":"echo hi","env":{"A":"${secret:vault/x}"}}"#.into(),
            selectors: vec!["linux".into(), "gpu".into()],
            scope: Some(scope("acme", "web", "shop")),
            timeout_ms: 60_000,
            queue_timeout_ms: 5_000,
            delegate_id: String::new(),
        },
        state,
        epoch: Epoch(0),
        version: 1,
        delegate_id: None,
        exit_code: None,
        reason: String::new(),
        created_ms,
        started_ms: None,
        finished_ms: None,
        queue_deadline_ms: created_ms + 5_000,
        outputs: Default::default(),
        error_type: String::new(),
    }
}

pub(crate) fn insert(record: &TaskRecord) -> TaskWrite {
    TaskWrite { record: record.clone(), expected_version: None }
}

/// The next version of `record` after `change`, and the write that stores it.
pub(crate) fn update(record: &TaskRecord, change: impl FnOnce(&mut TaskRecord)) -> (TaskRecord, TaskWrite) {
    let mut next = record.clone();
    change(&mut next);
    next.version = record.version + 1;
    let write = TaskWrite { record: next.clone(), expected_version: Some(record.version) };
    (next, write)
}

pub(crate) fn tasks_batch(writes: Vec<TaskWrite>) -> Batch {
    Batch { tasks: writes, ..Batch::default() }
}

fn log(task_id: TaskId, seq: u64, text: &str) -> LogRecord {
    LogRecord {
        task_id,
        seq,
        epoch: Epoch(3),
        stream: pb::LogStream::Stdout as i32,
        text: text.into(),
        at_ms: 1_000 + i64::try_from(seq).unwrap_or(0),
    }
}

fn audit(n: i64) -> AuditRecord {
    AuditRecord {
        at_ms: 10_000 + n,
        actor: "admin".into(),
        action: "task.submit".into(),
        subject: format!("subject-{n}"),
        detail: format!("detail {n}"),
    }
}

fn token(name: &str, max_uses: Option<u32>, expires_ms: i64) -> TokenRecord {
    TokenRecord {
        name: name.into(),
        token_hash: format!("{:0>64}", hex_of(name)),
        scope: scope("acme", "web", ""),
        expires_ms,
        max_uses,
        uses: 0,
        revoked: false,
        created_ms: 500,
    }
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn is_conflict<T>(r: &Result<T, Error>) -> bool {
    matches!(r, Err(Error::Conflict { .. }))
}

/// Insert + get + list round-trip every field, including every optional one
/// both set and unset.
pub(crate) async fn task_round_trips_every_field(store: &dyn Store) -> anyhow::Result<()> {
    let bare = task(1_000, pb::TaskState::Queued);
    let mut full = task(2_000, pb::TaskState::Failed);
    full.spec.delegate_id = DelegateId::new().to_string();
    full.spec.scope = None;
    full.epoch = Epoch(7);
    full.version = 9;
    full.delegate_id = Some(DelegateId::new());
    full.exit_code = Some(-3);
    full.reason = "exit code -3: ünïcode 'quotes' \"and\" ; DROP TABLE tasks".into();
    full.started_ms = Some(2_100);
    full.finished_ms = Some(2_200);
    full.queue_deadline_ms = 9_999;
    full.outputs = [("X".to_string(), "1".to_string())].into();
    full.error_type = "Unknown".into();
    store.commit(&tasks_batch(vec![insert(&bare), insert(&full)])).await?;

    check_eq!(store.get_task(bare.id).await?, Some(bare.clone()));
    check_eq!(store.get_task(full.id).await?, Some(full.clone()));
    check_eq!(store.get_task(TaskId::new()).await?, None);
    check_eq!(store.list_tasks(&[], 10).await?, vec![full.clone(), bare.clone()]);
    check_eq!(store.load_unfinished().await?, vec![bare]);
    Ok(())
}

/// Outputs (any text, including JSON-looking, multi-line, empty and large
/// values) and the error type are stored by inserts and by compare-and-set
/// updates, alone and many rows at once, and an update replaces the outputs
/// rather than merging them.
pub(crate) async fn task_outputs_and_error_type_round_trip(store: &dyn Store) -> anyhow::Result<()> {
    let a = task(1_000, pb::TaskState::Running);
    let mut b = task(1_001, pb::TaskState::Queued);
    b.outputs = [("pre".to_string(), "set at insert".to_string())].into();
    store.commit(&tasks_batch(vec![insert(&a), insert(&b)])).await?;
    check_eq!(store.get_task(a.id).await?, Some(a.clone()));
    check_eq!(store.get_task(b.id).await?, Some(b.clone()));

    let awkward: std::collections::BTreeMap<String, String> = [
        ("quote", "say \"hi\" and 'bye'; DROP TABLE tasks"),
        ("lines", "one\ntwo\r\n\tthree"),
        ("json", r#"{"nested":{"k":[1,2]},"esc":"\u0000"}"#),
        ("empty", ""),
        ("unicode", "ünïcode ✓ 😀"),
        ("httpResponseCode", "503"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .chain([("big".to_string(), "x".repeat(64 * 1024))])
    .collect();
    let (a2, wa) = update(&a, |t| {
        t.state = pb::TaskState::Failed;
        t.outputs = awkward.clone();
        t.error_type = "Timeout".into();
        t.finished_ms = Some(1_500);
    });
    let (b2, wb) = update(&b, |t| {
        t.state = pb::TaskState::Expired;
        t.outputs.clear();
        t.error_type = "DelegateProvisioning".into();
    });
    store.commit(&tasks_batch(vec![wa, wb])).await?;
    check_eq!(store.get_task(a.id).await?, Some(a2.clone()));
    check_eq!(store.get_task(b.id).await?, Some(b2.clone()));
    check_eq!(store.list_tasks(&[pb::TaskState::Failed], 10).await?, vec![a2.clone()]);

    // A later update replaces the whole map.
    let (a3, wa) = update(&a2, |t| {
        t.outputs = [("only".to_string(), "this".to_string())].into();
        t.error_type = "DelegateRestart".into();
    });
    store.commit(&tasks_batch(vec![wa])).await?;
    check_eq!(
        store.get_task(a.id).await?.map(|t| (t.outputs, t.error_type)),
        Some((a3.outputs, a3.error_type))
    );
    Ok(())
}

/// `list_tasks` filters by any of the given states, orders newest first and
/// honours the limit.
pub(crate) async fn list_tasks_filters_by_state_newest_first(store: &dyn Store) -> anyhow::Result<()> {
    use pb::TaskState::*;
    let states = [Queued, Running, Succeeded, Running, Failed, Queued, Cancelled];
    let tasks: Vec<TaskRecord> = states
        .iter()
        .enumerate()
        .map(|(i, s)| task(1_000 + i64::try_from(i).unwrap_or(0) * 10, *s))
        .collect();
    store.commit(&tasks_batch(tasks.iter().map(insert).collect())).await?;

    let newest_first: Vec<TaskRecord> = tasks.iter().rev().cloned().collect();
    check_eq!(store.list_tasks(&[], 100).await?, newest_first);
    check_eq!(store.list_tasks(&[], 3).await?, newest_first[..3].to_vec());

    let running_or_failed: Vec<TaskRecord> =
        newest_first.iter().filter(|t| matches!(t.state, Running | Failed)).cloned().collect();
    check_eq!(store.list_tasks(&[Running, Failed], 100).await?, running_or_failed);
    check_eq!(store.list_tasks(&[Running, Failed], 2).await?, running_or_failed[..2].to_vec());
    check_eq!(store.list_tasks(&[Expired], 100).await?, Vec::<TaskRecord>::new());
    check_eq!(store.list_tasks(&[], 0).await?, Vec::<TaskRecord>::new());
    Ok(())
}

/// `load_unfinished` returns exactly the tasks not in a final state, oldest first.
pub(crate) async fn load_unfinished_is_non_final_oldest_first(store: &dyn Store) -> anyhow::Result<()> {
    use pb::TaskState::*;
    // Submitted newest-first so that insertion order cannot pass for age order.
    let states = [Expired, Running, Lost, Offered, Cancelled, Failed, Queued, Succeeded, Queued];
    let tasks: Vec<TaskRecord> = states
        .iter()
        .enumerate()
        .map(|(i, s)| task(10_000 - i64::try_from(i).unwrap_or(0) * 10, *s))
        .collect();
    store.commit(&tasks_batch(tasks.iter().map(insert).collect())).await?;
    let mut expected: Vec<TaskRecord> = tasks.iter().filter(|t| !t.state.is_final()).cloned().collect();
    expected.sort_by_key(|t| t.created_ms);
    check_eq!(expected.len(), 4);
    check_eq!(store.load_unfinished().await?, expected);

    // Finishing one removes it.
    let (done, write) = update(&expected[0], |t| {
        t.state = Succeeded;
        t.finished_ms = Some(20_000);
    });
    store.commit(&tasks_batch(vec![write])).await?;
    check_eq!(store.load_unfinished().await?, expected[1..].to_vec());
    check_eq!(store.get_task(done.id).await?, Some(done));
    Ok(())
}

/// A write with the right expected version lands; a stale one, or one for a
/// task that does not exist, is a conflict and changes nothing.
pub(crate) async fn compare_and_set_updates(store: &dyn Store) -> anyhow::Result<()> {
    let t1 = task(1_000, pb::TaskState::Queued);
    store.commit(&tasks_batch(vec![insert(&t1)])).await?;

    let (t2, w2) = update(&t1, |t| {
        t.state = pb::TaskState::Offered;
        t.epoch = Epoch(1);
        t.delegate_id = Some(DelegateId::new());
    });
    store.commit(&tasks_batch(vec![w2.clone()])).await?;
    check_eq!(store.get_task(t1.id).await?, Some(t2.clone()));

    // Replaying the same write: the row is at version 2 now, not 1.
    let stale = store.commit(&tasks_batch(vec![w2])).await;
    ensure!(is_conflict(&stale), "stale write must conflict: {stale:?}");
    if let Err(Error::Conflict { what }) = &stale {
        ensure!(what.contains(&t1.id.to_string()), "conflict names the task: {what}");
    }
    check_eq!(store.get_task(t1.id).await?, Some(t2.clone()));

    // A write from the future (expects a version never stored) also conflicts.
    let mut future = t2.clone();
    future.version = 10;
    let r = store.commit(&tasks_batch(vec![TaskWrite { record: future, expected_version: Some(9) }])).await;
    ensure!(is_conflict(&r), "future version must conflict: {r:?}");

    // An update of a task that was never inserted must not create it.
    let ghost = task(1_500, pb::TaskState::Queued);
    let (_, ghost_write) = update(&ghost, |t| t.state = pb::TaskState::Running);
    let r = store.commit(&tasks_batch(vec![ghost_write])).await;
    ensure!(is_conflict(&r), "update of a missing task must conflict: {r:?}");
    check_eq!(store.get_task(ghost.id).await?, None);

    let (t3, w3) = update(&t2, |t| {
        t.state = pb::TaskState::Running;
        t.started_ms = Some(1_100);
    });
    store.commit(&tasks_batch(vec![w3])).await?;
    check_eq!(store.get_task(t1.id).await?, Some(t3));
    Ok(())
}

/// When any task write in a batch conflicts, nothing of the batch is written:
/// not its other task inserts and updates, not its logs, not its audit entries.
pub(crate) async fn failed_batch_writes_nothing(store: &dyn Store) -> anyhow::Result<()> {
    let a = task(1_000, pb::TaskState::Queued);
    let b = task(1_001, pb::TaskState::Queued);
    store
        .commit(&Batch {
            tasks: vec![insert(&a), insert(&b)],
            logs: vec![log(a.id, 1, "kept")],
            audit: vec![audit(0)],
            ..Batch::default()
        })
        .await?;

    let (_, b_update) = update(&b, |t| t.state = pb::TaskState::Offered);
    let c = task(1_002, pb::TaskState::Queued);
    let stale_a = TaskWrite { record: TaskRecord { version: 5, ..a.clone() }, expected_version: Some(4) };
    // The stale write comes last so earlier statements of the batch did run.
    let batch = Batch {
        tasks: vec![b_update, insert(&c), stale_a],
        logs: vec![log(a.id, 2, "dropped"), log(c.id, 1, "dropped")],
        audit: vec![audit(1)],
        ..Batch::default()
    };
    let r = store.commit(&batch).await;
    ensure!(is_conflict(&r), "batch with a stale write must conflict: {r:?}");

    check_eq!(store.get_task(a.id).await?, Some(a.clone()));
    check_eq!(store.get_task(b.id).await?, Some(b.clone()));
    check_eq!(store.get_task(c.id).await?, None);
    check_eq!(store.task_logs(a.id, 0, 100).await?, vec![log(a.id, 1, "kept")]);
    check_eq!(store.task_logs(c.id, 0, 100).await?, Vec::<LogRecord>::new());
    check_eq!(store.last_log_seq(a.id).await?, 1);
    check_eq!(store.list_audit(100).await?, vec![audit(0)]);

    // A duplicate log line is refused the same way, taking the tasks with it.
    let (b2, b_update) = update(&b, |t| t.state = pb::TaskState::Offered);
    let r = store
        .commit(&Batch {
            tasks: vec![b_update.clone()],
            logs: vec![log(a.id, 1, "duplicate seq")],
            audit: vec![audit(2)],
            ..Batch::default()
        })
        .await;
    ensure!(is_conflict(&r), "duplicate log seq must conflict: {r:?}");
    check_eq!(store.get_task(b.id).await?, Some(b.clone()));
    check_eq!(store.list_audit(100).await?, vec![audit(0)]);

    // The store is still usable and the same write now lands.
    store.commit(&tasks_batch(vec![b_update])).await?;
    check_eq!(store.get_task(b.id).await?, Some(b2));
    Ok(())
}

/// Inserting an id that exists is a conflict, and the rest of its batch is not
/// written.
pub(crate) async fn insert_of_existing_id_conflicts(store: &dyn Store) -> anyhow::Result<()> {
    let a = task(1_000, pb::TaskState::Queued);
    store.commit(&tasks_batch(vec![insert(&a)])).await?;

    let b = task(1_001, pb::TaskState::Queued);
    let mut again = a.clone();
    again.reason = "second insert".into();
    let r = store
        .commit(&Batch {
            tasks: vec![insert(&b), insert(&again)],
            logs: vec![log(b.id, 1, "dropped")],
            audit: vec![audit(1)],
            ..Batch::default()
        })
        .await;
    ensure!(is_conflict(&r), "duplicate insert must conflict: {r:?}");
    if let Err(Error::Conflict { what }) = &r {
        ensure!(what.contains(&a.id.to_string()), "conflict names the task: {what}");
    }
    check_eq!(store.get_task(a.id).await?, Some(a));
    check_eq!(store.get_task(b.id).await?, None);
    check_eq!(store.last_log_seq(b.id).await?, 0);
    check_eq!(store.list_audit(10).await?, Vec::<AuditRecord>::new());
    Ok(())
}

/// A batch may write the same task more than once (inserted, then offered, in
/// one engine turn). The store keeps the last record; the first write decides
/// whether it is an insert or which version is expected; a broken chain fails
/// as it would if applied write by write.
pub(crate) async fn same_task_twice_in_a_batch_collapses(store: &dyn Store) -> anyhow::Result<()> {
    // Insert then two updates: stored as the last record.
    let a1 = task(1_000, pb::TaskState::Queued);
    let (a2, w2) = update(&a1, |t| {
        t.state = pb::TaskState::Offered;
        t.epoch = Epoch(1);
    });
    let (a3, w3) = update(&a2, |t| {
        t.state = pb::TaskState::Running;
        t.started_ms = Some(1_010);
    });
    let b1 = task(1_001, pb::TaskState::Queued);
    store
        .commit(&Batch {
            tasks: vec![insert(&a1), insert(&b1), w2, w3],
            logs: vec![log(a1.id, 1, "started")],
            audit: vec![],
            ..Batch::default()
        })
        .await?;
    check_eq!(store.get_task(a1.id).await?, Some(a3.clone()));
    check_eq!(store.get_task(b1.id).await?, Some(b1.clone()));

    // Two updates of a stored row: compare-and-set against the first expectation.
    let (a4, w4) = update(&a3, |t| t.state = pb::TaskState::Running);
    let (a5, w5) = update(&a4, |t| {
        t.state = pb::TaskState::Succeeded;
        t.exit_code = Some(0);
        t.finished_ms = Some(1_100);
    });
    store.commit(&tasks_batch(vec![w4, w5.clone()])).await?;
    check_eq!(store.get_task(a1.id).await?, Some(a5.clone()));

    // Chain whose first write is stale: refused, nothing written.
    let (b2, wb2) = update(&b1, |t| t.state = pb::TaskState::Offered);
    let (_, w6) = update(&a5, |t| t.reason = "again".into());
    let r = store.commit(&tasks_batch(vec![wb2.clone(), w5, w6])).await;
    ensure!(is_conflict(&r), "stale first write must conflict: {r:?}");
    check_eq!(store.get_task(a1.id).await?, Some(a5.clone()));
    check_eq!(store.get_task(b1.id).await?, Some(b1.clone()));

    // Broken chain: the second write does not expect what the first produced.
    let (a6, w6) = update(&a5, |t| t.reason = "one".into());
    let broken = TaskWrite {
        record: TaskRecord { version: a6.version + 1, ..a6.clone() },
        expected_version: Some(a5.version),
    };
    let r = store.commit(&tasks_batch(vec![wb2.clone(), w6.clone(), broken])).await;
    ensure!(is_conflict(&r), "broken chain must conflict: {r:?}");
    check_eq!(store.get_task(a1.id).await?, Some(a5.clone()));
    check_eq!(store.get_task(b1.id).await?, Some(b1.clone()));

    // Updating and then re-inserting the same id.
    let r = store.commit(&tasks_batch(vec![wb2.clone(), w6.clone(), insert(&a6)])).await;
    ensure!(is_conflict(&r), "insert after update must conflict: {r:?}");
    check_eq!(store.get_task(a1.id).await?, Some(a5));

    store.commit(&tasks_batch(vec![wb2, w6])).await?;
    check_eq!(store.get_task(a1.id).await?, Some(a6));
    check_eq!(store.get_task(b1.id).await?, Some(b2));
    Ok(())
}

/// Log lines come back in `seq` order, after `after_seq`, at most `limit`,
/// per task; `last_log_seq` is the highest stored (0 when none).
pub(crate) async fn logs_read_back_in_order(store: &dyn Store) -> anyhow::Result<()> {
    let a = task(1_000, pb::TaskState::Running);
    let b = task(1_001, pb::TaskState::Running);
    store.commit(&tasks_batch(vec![insert(&a), insert(&b)])).await?;
    check_eq!(store.last_log_seq(a.id).await?, 0);
    check_eq!(store.task_logs(a.id, 0, 100).await?, Vec::<LogRecord>::new());

    // Out of order within a batch, interleaved between tasks, over two batches.
    let mut first = vec![
        log(a.id, 3, "three"),
        log(b.id, 1, "b one"),
        log(a.id, 1, "one"),
        log(a.id, 2, "two\twith tab and 'quote'"),
    ];
    first[1].stream = pb::LogStream::Stderr as i32;
    first[1].epoch = Epoch(4);
    store.commit(&Batch { logs: first.clone(), ..Batch::default() }).await?;
    let second: Vec<LogRecord> = (4..=12).map(|s| log(a.id, s, &format!("line {s}"))).collect();
    store.commit(&Batch { logs: second.clone(), ..Batch::default() }).await?;

    let mut all_a: Vec<LogRecord> =
        first.iter().chain(second.iter()).filter(|l| l.task_id == a.id).cloned().collect();
    all_a.sort_by_key(|l| l.seq);
    check_eq!(all_a.len(), 12);
    check_eq!(store.task_logs(a.id, 0, 100).await?, all_a);
    check_eq!(store.task_logs(a.id, 0, 5).await?, all_a[..5].to_vec());
    check_eq!(store.task_logs(a.id, 5, 3).await?, all_a[5..8].to_vec());
    check_eq!(store.task_logs(a.id, 12, 100).await?, Vec::<LogRecord>::new());
    check_eq!(store.task_logs(a.id, u64::MAX, 100).await?, Vec::<LogRecord>::new());
    check_eq!(store.task_logs(b.id, 0, 100).await?, vec![first[1].clone()]);
    check_eq!(store.last_log_seq(a.id).await?, 12);
    check_eq!(store.last_log_seq(b.id).await?, 1);
    check_eq!(store.last_log_seq(TaskId::new()).await?, 0);
    Ok(())
}

/// Tokens: create, duplicate name conflicts, and `use_token` counts uses and
/// refuses unknown, revoked, expired and used-up tokens.
pub(crate) async fn tokens_create_and_use(store: &dyn Store) -> anyhow::Result<()> {
    let limited = token("limited", Some(2), 5_000);
    store.create_token(&limited).await?;
    let r = store.create_token(&TokenRecord { token_hash: "different".into(), ..limited.clone() }).await;
    ensure!(is_conflict(&r), "duplicate token name must conflict: {r:?}");

    check_eq!(store.use_token("no-such-hash", 1_000).await?, Err(TokenRefused::Unknown));

    let first = store
        .use_token(&limited.token_hash, 1_000)
        .await?
        .map_err(|e| anyhow::anyhow!("first use refused: {e}"))?;
    check_eq!(first, TokenRecord { uses: 1, ..limited.clone() });
    // The expiry instant itself is still accepted.
    let second = store
        .use_token(&limited.token_hash, 5_000)
        .await?
        .map_err(|e| anyhow::anyhow!("second use refused: {e}"))?;
    check_eq!(second.uses, 2);
    check_eq!(
        store.use_token(&limited.token_hash, 1_000).await?,
        Err(TokenRefused::UsedUp { name: "limited".into(), max: 2 })
    );

    let expiring = token("expiring", None, 5_000);
    store.create_token(&expiring).await?;
    check_eq!(
        store.use_token(&expiring.token_hash, 5_001).await?,
        Err(TokenRefused::Expired { name: "expiring".into() })
    );

    let unlimited = token("unlimited", None, i64::MAX);
    store.create_token(&unlimited).await?;
    for n in 1..=7u32 {
        let used = store
            .use_token(&unlimited.token_hash, 1_000)
            .await?
            .map_err(|e| anyhow::anyhow!("unlimited use {n} refused: {e}"))?;
        check_eq!(used.uses, n);
    }
    ensure!(store.revoke_token("unlimited").await?, "revoke must find the token");
    check_eq!(
        store.use_token(&unlimited.token_hash, 1_000).await?,
        Err(TokenRefused::Revoked { name: "unlimited".into() })
    );

    // Refusals count nothing.
    let stored = store.list_tokens().await?;
    let uses: Vec<(String, u32)> = stored.iter().map(|t| (t.name.clone(), t.uses)).collect();
    check_eq!(
        uses,
        vec![("expiring".to_string(), 0), ("limited".to_string(), 2), ("unlimited".to_string(), 7)]
    );
    Ok(())
}

/// `use_token` is atomic: 20 concurrent uses of a 5-use token admit exactly 5.
pub(crate) async fn use_token_is_atomic(store: &dyn Store) -> anyhow::Result<()> {
    let five = token("five", Some(5), i64::MAX);
    store.create_token(&five).await?;
    let attempts = (0..20).map(|_| store.use_token(&five.token_hash, 1_000));
    let results = futures::future::join_all(attempts).await;
    let mut admitted = Vec::new();
    for r in results {
        match r? {
            Ok(t) => admitted.push(t.uses),
            Err(TokenRefused::UsedUp { max: 5, .. }) => {}
            Err(other) => bail!("unexpected refusal: {other}"),
        }
    }
    admitted.sort_unstable();
    check_eq!(admitted, vec![1, 2, 3, 4, 5]);
    let stored = store.list_tokens().await?;
    check_eq!(stored.len(), 1);
    check_eq!(stored[0].uses, 5);
    Ok(())
}

/// `revoke_token` reports whether the token exists; `list_tokens` returns every
/// field, by name.
pub(crate) async fn tokens_revoke_and_list(store: &dyn Store) -> anyhow::Result<()> {
    check_eq!(store.list_tokens().await?, Vec::<TokenRecord>::new());
    let mut b = token("b-token", None, 9_000);
    b.scope = scope("acme", "", "");
    b.uses = 3;
    let a = token("a-token", Some(u32::MAX), i64::MIN);
    let c = token("c-token", Some(0), 0);
    for t in [&b, &a, &c] {
        store.create_token(t).await?;
    }
    check_eq!(store.list_tokens().await?, vec![a.clone(), b.clone(), c.clone()]);

    ensure!(store.revoke_token("b-token").await?, "revoke of an existing token");
    ensure!(store.revoke_token("b-token").await?, "revoke is idempotent");
    ensure!(!store.revoke_token("nope").await?, "revoke of a missing token");
    let revoked_b = TokenRecord { revoked: true, ..b };
    check_eq!(store.list_tokens().await?, vec![a, revoked_b, c]);
    Ok(())
}

/// Delegates: insert, get, list oldest enrolment first, duplicate conflicts,
/// revoke, touch (tags round-trip, including awkward ones).
pub(crate) async fn delegates_round_trip(store: &dyn Store) -> anyhow::Result<()> {
    let make = |name: &str, enrolled_ms: i64, tags: &[&str]| DelegateRecord {
        id: DelegateId::new(),
        name: name.into(),
        scope: scope("acme", "web", "shop"),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        token_name: "ci".into(),
        enrolled_ms,
        last_seen_ms: enrolled_ms,
        revoked: false,
    };
    let late = make("late", 2_000, &["linux", "gpu"]);
    let early = make("early", 1_000, &[]);
    let odd = make("odd", 1_500, &["a,b", "quote\"d", "", "ünï", "[x]"]);
    for d in [&late, &early, &odd] {
        store.insert_delegate(d).await?;
    }
    let r = store.insert_delegate(&DelegateRecord { name: "dup".into(), ..late.clone() }).await;
    ensure!(is_conflict(&r), "duplicate delegate id must conflict: {r:?}");

    check_eq!(store.get_delegate(odd.id).await?, Some(odd.clone()));
    check_eq!(store.get_delegate(DelegateId::new()).await?, None);
    check_eq!(store.list_delegates().await?, vec![early.clone(), odd.clone(), late.clone()]);

    let tags = vec!["linux".to_string(), "arm64".to_string(), "x,y".to_string()];
    store.touch_delegate(early.id, 5_000, &tags).await?;
    let touched = DelegateRecord { last_seen_ms: 5_000, tags, ..early.clone() };
    check_eq!(store.get_delegate(early.id).await?, Some(touched.clone()));
    store.touch_delegate(late.id, 6_000, &[]).await?;
    check_eq!(store.get_delegate(late.id).await?.map(|d| d.tags), Some(Vec::<String>::new()));
    // Touching an unknown delegate records nothing and is not an error.
    store.touch_delegate(DelegateId::new(), 7_000, &[]).await?;

    ensure!(store.revoke_delegate(odd.id).await?, "revoke of an existing delegate");
    ensure!(!store.revoke_delegate(DelegateId::new()).await?, "revoke of a missing delegate");
    let revoked = store.get_delegate(odd.id).await?.context("revoked delegate is still listed")?;
    ensure!(revoked.revoked, "revoked flag stored");
    check_eq!(store.list_delegates().await?.len(), 3);
    Ok(())
}

/// Audit entries appended through `commit` come back newest first.
pub(crate) async fn audit_newest_first(store: &dyn Store) -> anyhow::Result<()> {
    check_eq!(store.list_audit(10).await?, Vec::<AuditRecord>::new());
    store.commit(&Batch { audit: vec![audit(1), audit(2), audit(3)], ..Batch::default() }).await?;
    // A later entry with an earlier clock is still the newest.
    let mut skewed = audit(4);
    skewed.at_ms = 1;
    skewed.detail = "with 'quotes' and ünïcode".into();
    store.commit(&Batch { audit: vec![skewed.clone()], ..Batch::default() }).await?;
    check_eq!(store.list_audit(10).await?, vec![skewed.clone(), audit(3), audit(2), audit(1)]);
    check_eq!(store.list_audit(2).await?, vec![skewed, audit(3)]);
    Ok(())
}

/// A batch far larger than one statement's parameter limit (5,000 inserts,
/// 5,000 updates, 10,000 log lines, audit) commits whole.
pub(crate) async fn big_batch_commits(store: &dyn Store) -> anyhow::Result<()> {
    const N: usize = 5_000;
    let old: Vec<TaskRecord> =
        (0..N).map(|i| task(1_000 + i64::try_from(i).unwrap_or(0), pb::TaskState::Queued)).collect();
    store.commit(&tasks_batch(old.iter().map(insert).collect())).await?;

    let fresh: Vec<TaskRecord> =
        (0..N).map(|i| task(100_000 + i64::try_from(i).unwrap_or(0), pb::TaskState::Queued)).collect();
    let mut updated = Vec::with_capacity(N);
    let mut writes: Vec<TaskWrite> = fresh.iter().map(insert).collect();
    for (i, t) in old.iter().enumerate() {
        let (next, write) = update(t, |t| {
            t.state = pb::TaskState::Running;
            t.epoch = Epoch(1);
            t.started_ms = Some(50_000 + i64::try_from(i).unwrap_or(0));
        });
        updated.push(next);
        writes.push(write);
    }
    let logs: Vec<LogRecord> =
        old.iter().flat_map(|t| [log(t.id, 1, "first"), log(t.id, 2, "second")]).collect();
    let audits: Vec<AuditRecord> = (0..100).map(audit).collect();
    store.commit(&Batch { tasks: writes, logs, audit: audits, ..Batch::default() }).await?;

    let unfinished = store.load_unfinished().await?;
    check_eq!(unfinished.len(), 2 * N);
    check_eq!(unfinished[..N].to_vec(), updated);
    check_eq!(unfinished[N..].to_vec(), fresh);
    check_eq!(store.list_tasks(&[pb::TaskState::Running], 10_000).await?.len(), N);
    for t in [&old[0], &old[N / 2], &old[N - 1]] {
        check_eq!(store.last_log_seq(t.id).await?, 2);
        check_eq!(store.task_logs(t.id, 0, 10).await?.len(), 2);
    }
    check_eq!(store.list_audit(1_000).await?.len(), 100);
    let ids: HashSet<TaskId> = unfinished.iter().map(|t| t.id).collect();
    check_eq!(ids.len(), 2 * N);

    // A big batch with one stale write at the very end writes nothing.
    let mut writes: Vec<TaskWrite> =
        updated.iter().map(|t| update(t, |t| t.state = pb::TaskState::Succeeded).1).collect();
    let last = writes.len() - 1;
    writes[last].expected_version = Some(1);
    let r = store.commit(&tasks_batch(writes)).await;
    ensure!(is_conflict(&r), "stale write in a big batch must conflict: {r:?}");
    check_eq!(store.list_tasks(&[pb::TaskState::Succeeded], 10).await?.len(), 0);
    Ok(())
}

/// Running migrations again changes nothing and keeps the data.
pub(crate) async fn migrate_is_idempotent(store: &dyn Store) -> anyhow::Result<()> {
    let a = task(1_000, pb::TaskState::Queued);
    store.commit(&tasks_batch(vec![insert(&a)])).await?;
    store.migrate().await?;
    store.migrate().await?;
    check_eq!(store.get_task(a.id).await?, Some(a));
    // An empty batch is a no-op, not an error.
    store.commit(&Batch::default()).await?;
    Ok(())
}

fn execution(id: &str, seq: u64, key: Option<&str>) -> super::executions::ExecutionRecord {
    super::executions::ExecutionRecord {
        id: id.into(),
        account: "default".into(),
        org: "o".into(),
        project: "p".into(),
        pipeline: "pipe".into(),
        sequence_id: seq,
        status: "Running".into(),
        meta_json: r#"{"m":1}"#.into(),
        plan_json: r#"{"p":1}"#.into(),
        state_json: r#"{"s":1}"#.into(),
        created_ms: 1_000 + seq as i64,
        ended_ms: None,
        idempotency_key: key.map(str::to_string),
    }
}

pub(crate) async fn executions_round_trip(store: &dyn Store) -> anyhow::Result<()> {
    use super::executions::{ExecutionBatch, ExecutionFilter, ExecutionUpdate, NodeRecord};
    let node = |idx: u32, status: &str| NodeRecord {
        execution_id: "e1".into(),
        idx,
        status: status.into(),
        state_json: format!(r#"{{"status":"{status}"}}"#),
    };
    store
        .commit_executions(&ExecutionBatch {
            inserts: vec![execution("e1", 1, Some("k1")), execution("e2", 2, None)],
            updates: vec![],
            nodes: vec![node(0, "Running"), node(1, "Running")],
            ..Default::default()
        })
        .await?;
    check_eq!(store.get_execution("e1").await?, Some(execution("e1", 1, Some("k1"))));
    check_eq!(store.execution_by_key("k1").await?.map(|e| e.id), Some("e1".to_string()));
    check_eq!(store.max_sequence("default", "o", "p", "pipe").await?, 2);
    check_eq!(store.max_sequence("default", "o", "p", "other").await?, 0);
    // Node rows are upserted; the execution row's state is updated in place.
    store
        .commit_executions(&ExecutionBatch {
            inserts: vec![],
            updates: vec![ExecutionUpdate {
                id: "e1".into(),
                status: "Succeeded".into(),
                state_json: r#"{"s":2}"#.into(),
                ended_ms: Some(9),
            }],
            nodes: vec![node(1, "Succeeded"), node(2, "Skipped")],
            ..Default::default()
        })
        .await?;
    let nodes = store.execution_nodes("e1").await?;
    check_eq!(nodes, vec![node(0, "Running"), node(1, "Succeeded"), node(2, "Skipped")]);
    let e1 = store.get_execution("e1").await?.context("e1")?;
    check_eq!(
        (e1.status.as_str(), e1.state_json.as_str(), e1.ended_ms),
        ("Succeeded", r#"{"s":2}"#, Some(9))
    );
    let unfinished: Vec<String> = store.unfinished_executions().await?.into_iter().map(|e| e.id).collect();
    check_eq!(unfinished, vec!["e2".to_string()]);
    let newest: Vec<String> = store
        .list_executions(&ExecutionFilter { limit: 10, ..Default::default() })
        .await?
        .into_iter()
        .map(|e| e.id)
        .collect();
    check_eq!(newest, vec!["e2".to_string(), "e1".to_string()]);
    let done: Vec<String> = store
        .list_executions(&ExecutionFilter {
            pipeline: Some("pipe".into()),
            statuses: vec!["Succeeded".into()],
            limit: 10,
        })
        .await?
        .into_iter()
        .map(|e| e.id)
        .collect();
    check_eq!(done, vec!["e1".to_string()]);
    Ok(())
}

pub(crate) async fn execution_keys_and_sequences_are_unique(store: &dyn Store) -> anyhow::Result<()> {
    use super::executions::ExecutionBatch;
    let batch = |e| ExecutionBatch { inserts: vec![e], ..Default::default() };
    store.commit_executions(&batch(execution("a", 1, Some("cron:x:1")))).await?;
    let dup_key = store.commit_executions(&batch(execution("b", 2, Some("cron:x:1")))).await;
    ensure!(matches!(dup_key, Err(Error::Conflict { .. })), "duplicate key: {dup_key:?}");
    let dup_seq = store.commit_executions(&batch(execution("c", 1, None))).await;
    ensure!(matches!(dup_seq, Err(Error::Conflict { .. })), "duplicate sequence: {dup_seq:?}");
    ensure!(store.get_execution("b").await?.is_none() && store.get_execution("c").await?.is_none());
    Ok(())
}

pub(crate) async fn instances_replace_per_target(store: &dyn Store) -> anyhow::Result<()> {
    use super::executions::{ExecutionBatch, InstancesFilter, InstancesRecord};
    let rec = |service: &str, env: &str, json: &str, at: i64| InstancesRecord {
        account: "default".into(),
        org: "o".into(),
        project: "p".into(),
        service: service.into(),
        environment: env.into(),
        infrastructure: "infra".into(),
        instances_json: json.into(),
        execution_id: "e1".into(),
        step: "deploy.d".into(),
        updated_ms: at,
    };
    let batch = |r: Vec<InstancesRecord>| ExecutionBatch { instances: r, ..Default::default() };
    store.commit_executions(&batch(vec![rec("web", "prod", "[1]", 1), rec("web", "qa", "[2]", 1)])).await?;
    store.commit_executions(&batch(vec![rec("web", "prod", "[3]", 2), rec("api", "prod", "[4]", 2)])).await?;
    let all = store.list_instances(&InstancesFilter::default()).await?;
    check_eq!(
        all,
        vec![rec("api", "prod", "[4]", 2), rec("web", "prod", "[3]", 2), rec("web", "qa", "[2]", 1)]
    );
    let prod_web = store
        .list_instances(&InstancesFilter { service: Some("web".into()), environment: Some("prod".into()) })
        .await?;
    check_eq!(prod_web, vec![rec("web", "prod", "[3]", 2)]);
    Ok(())
}
