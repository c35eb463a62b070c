//! Backend-neutral pieces shared by the SQLite and PostgreSQL stores: the batch
//! collapse rule, the token acceptance rule, row decoding, value conversions and
//! the mapping of driver errors onto [`Error`]. Both schemas use the same column
//! names and compatible types, so one decoder serves both.
//!
//! Deliberately not here: SQL that differs between the backends.

use std::collections::HashMap;
use std::fmt::Display;

use dray_shared::{DelegateId, Epoch, TaskId, pb};
use prost::Message;
use sqlx::error::{DatabaseError, ErrorKind};

use super::{
    AuditRecord, DelegateRecord, Error, LogRecord, Result, TaskRecord, TaskWrite, TokenRecord, TokenRefused,
};

// Column lists as macros rather than consts so `concat!` can build `&'static str`
// statements from them .

/// Columns of `tasks`, in the order every statement binds and selects them.
macro_rules! task_columns {
    () => {
        "id, spec, state, epoch, version, delegate_id, exit_code, reason, created_ms, \
         started_ms, finished_ms, queue_deadline_ms, outputs_json, error_type"
    };
}

/// Columns of `task_logs`, in bind/select order.
macro_rules! log_columns {
    () => {
        "task_id, seq, epoch, stream, text, at_ms"
    };
}

/// Columns of `audit` that callers supply (the `id` is assigned by the database).
macro_rules! audit_columns {
    () => {
        "at_ms, actor, action, subject, detail"
    };
}

/// Columns of `tokens`, in bind/select order.
macro_rules! token_columns {
    () => {
        "name, token_hash, scope_account, scope_org, scope_project, expires_ms, max_uses, \
         uses, revoked, created_ms"
    };
}

/// Columns of `delegates`, in bind/select order.
macro_rules! delegate_columns {
    () => {
        "id, name, scope_account, scope_org, scope_project, tags, token_name, enrolled_ms, \
         last_seen_ms, revoked"
    };
}

pub(super) use {audit_columns, delegate_columns, log_columns, task_columns, token_columns};

/// A compare-and-set update after collapsing: overwrite the row with `record`
/// only if it still has `expected_version`.
#[derive(Debug)]
pub(super) struct TaskUpdate<'a> {
    /// The new row contents.
    pub record: &'a TaskRecord,
    /// Version the stored row must have.
    pub expected_version: u64,
}

/// The task writes of one batch, at most one per task id.
#[derive(Debug, Default)]
pub(super) struct TaskPlan<'a> {
    /// Rows that must not exist yet.
    pub inserts: Vec<&'a TaskRecord>,
    /// Compare-and-set overwrites.
    pub updates: Vec<TaskUpdate<'a>>,
}

impl<'a> TaskPlan<'a> {
    /// `UPDATE … SET owner` for inserted rows that are already offered or
    /// running (the committing replica's own); `None` when there are none.
    pub(super) fn own_inserts<'q, DB>(&self, owner: Option<&str>) -> Option<sqlx::QueryBuilder<'q, DB>>
    where
        DB: sqlx::Database,
        String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    {
        let owned: Vec<TaskId> = self
            .inserts
            .iter()
            .filter(|r| matches!(r.state, pb::TaskState::Offered | pb::TaskState::Running))
            .map(|r| r.id)
            .collect();
        let owner = owner.filter(|_| !owned.is_empty())?;
        let mut q = sqlx::QueryBuilder::<DB>::new("UPDATE tasks SET owner = ");
        q.push_bind(owner.to_string()).push(" WHERE id");
        super::replicas::push_ids(&mut q, &owned);
        Some(q)
    }

    /// Collapses a batch's task writes to one write per task id, because a
    /// multi-row statement cannot touch the same row twice (SQLite's UPDATE … FROM
    /// would pick one source row arbitrarily, PostgreSQL's updates a row once).
    ///
    /// The rule, which yields exactly what applying the writes one after another
    /// would (including failing where that would fail):
    /// * the collapsed write carries the **last** record for the id;
    /// * if the **first** write for the id was an insert, the collapsed write is an
    ///   insert; otherwise it is a compare-and-set against the first write's
    ///   `expected_version`;
    /// * every later write for the id must expect the version the previous write
    ///   produced (`expected_version == Some(previous.record.version)`); an insert
    ///   or any other expectation would fail when applied in order, so the whole
    ///   batch is refused with [`Error::Conflict`] before anything is written.
    ///
    /// Ids keep the order of their first write.
    pub(super) fn new(writes: &'a [TaskWrite]) -> Result<Self> {
        struct Slot<'a> {
            first_expected: Option<u64>,
            last: &'a TaskRecord,
        }
        let mut index: HashMap<TaskId, usize> = HashMap::with_capacity(writes.len());
        let mut slots: Vec<Slot<'a>> = Vec::with_capacity(writes.len());
        for write in writes {
            let id = write.record.id;
            match index.get(&id) {
                None => {
                    index.insert(id, slots.len());
                    slots.push(Slot { first_expected: write.expected_version, last: &write.record });
                }
                Some(&i) => {
                    let slot = &mut slots[i];
                    if write.expected_version != Some(slot.last.version) {
                        return Err(Error::Conflict { what: format!("task {id} version") });
                    }
                    slot.last = &write.record;
                }
            }
        }
        let mut plan = TaskPlan::default();
        for slot in slots {
            match slot.first_expected {
                None => plan.inserts.push(slot.last),
                Some(expected_version) => {
                    plan.updates.push(TaskUpdate { record: slot.last, expected_version })
                }
            }
        }
        Ok(plan)
    }

    /// Explains why the plan's task writes were refused, given the stored
    /// versions of its ids (read after the failed transaction rolled back):
    /// the first insert whose id exists, else the first update whose row is
    /// missing or has another version.
    pub(super) fn explain_conflict(&self, stored: &HashMap<String, u64>) -> String {
        for record in &self.inserts {
            if stored.contains_key(&record.id.to_string()) {
                return format!("task {} (already exists)", record.id);
            }
        }
        for update in &self.updates {
            if stored.get(&update.record.id.to_string()) != Some(&update.expected_version) {
                return format!("task {} version", update.record.id);
            }
        }
        // Someone changed the rows between the failure and this look; the batch
        // was still refused as a whole.
        "task batch version".to_string()
    }

    /// Every task id the plan touches, as stored.
    pub(super) fn ids(&self) -> Vec<String> {
        self.inserts
            .iter()
            .map(|r| r.id.to_string())
            .chain(self.updates.iter().map(|u| u.record.id.to_string()))
            .collect()
    }
}

/// Decides whether a token may enrol one more delegate at `now_ms`; on success
/// returns the record with the use counted. Refusal order: revoked, expired,
/// used up (an operator's revoke is the most useful thing to report).
pub(super) fn check_token(
    token: Option<TokenRecord>,
    now_ms: i64,
) -> std::result::Result<TokenRecord, TokenRefused> {
    let Some(mut token) = token else {
        return Err(TokenRefused::Unknown);
    };
    if token.revoked {
        return Err(TokenRefused::Revoked { name: token.name });
    }
    // "Unix ms after which it is refused": the expiry instant itself is still fine.
    if now_ms > token.expires_ms {
        return Err(TokenRefused::Expired { name: token.name });
    }
    if let Some(max) = token.max_uses
        && token.uses >= max
    {
        return Err(TokenRefused::UsedUp { name: token.name, max });
    }
    token.uses = token.uses.saturating_add(1);
    Ok(token)
}

/// Task states that are not final, as stored numbers (what `load_unfinished`
/// selects). Derived from [`pb::TaskState::is_final`] so the two never drift.
pub(super) fn unfinished_states() -> Vec<i32> {
    (0..=i32::from(u8::MAX))
        .filter_map(|n| pb::TaskState::try_from(n).ok())
        .filter(|s| !s.is_final())
        .map(|s| s as i32)
        .collect()
}

/// Stores a `u64` counter in a BIGINT. Values past `i64::MAX` cannot occur
/// (versions, epochs and sequence numbers count up from small numbers by one);
/// saturating keeps `seq > after_seq` meaningful for a caller passing `u64::MAX`.
pub(super) fn db_u64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// JSON text of a task's outputs (`outputs_json`). A map of strings always
/// encodes, and a `BTreeMap` encodes in key order, so equal maps store equal text.
pub(super) fn outputs_json(r: &TaskRecord) -> String {
    serde_json::to_string(&r.outputs).unwrap_or_else(|_| "{}".to_string())
}

/// JSON text of a delegate's tags: unambiguous for any tag text, unlike joining.
pub(super) fn tags_json(id: DelegateId, tags: &[String]) -> Result<String> {
    serde_json::to_string(tags).map_err(|e| Error::Corrupt {
        table: "delegates",
        id: id.to_string(),
        reason: format!("tags not encodable: {e}"),
    })
}

/// Maps a driver error onto the store's error kinds.
pub(super) fn db_error(e: sqlx::Error) -> Error {
    match e {
        sqlx::Error::Database(db) => match db.kind() {
            ErrorKind::UniqueViolation | ErrorKind::ForeignKeyViolation => {
                Error::Conflict { what: conflict_subject(db.as_ref()) }
            }
            _ => Error::Unavailable(Box::new(sqlx::Error::Database(db))),
        },
        sqlx::Error::Configuration(e) => Error::Config(e.to_string()),
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => {
            Error::Corrupt { table: "?", id: "?".to_string(), reason: e.to_string() }
        }
        sqlx::Error::Migrate(m) => migrate_error(*m),
        other => Error::Unavailable(Box::new(other)),
    }
}

/// Maps a migration failure: a database changed by a newer or different build is
/// a configuration problem, not something a retry fixes.
pub(super) fn migrate_error(e: sqlx::migrate::MigrateError) -> Error {
    use sqlx::migrate::MigrateError as M;
    match e {
        M::Execute(e) | M::ExecuteMigration(e, _) => db_error(e),
        other => Error::Config(format!("database schema: {other}")),
    }
}

/// Names what a uniqueness failure was about, as precisely as the driver says.
fn conflict_subject(db: &dyn DatabaseError) -> String {
    match (db.table(), db.constraint()) {
        (Some(table), Some(constraint)) => format!("{table} ({constraint})"),
        (None, Some(constraint)) => constraint.to_string(),
        // SQLite names neither, but its message does: "UNIQUE constraint failed: t.c".
        _ => db.message().to_string(),
    }
}

/// Typed column access, implemented for both backends' rows so the decoders
/// below are written once.
pub(super) trait StoreRow {
    /// A TEXT column.
    fn text(&self, col: &str) -> std::result::Result<String, sqlx::Error>;
    /// A nullable TEXT column.
    fn opt_text(&self, col: &str) -> std::result::Result<Option<String>, sqlx::Error>;
    /// A BIGINT column.
    fn int64(&self, col: &str) -> std::result::Result<i64, sqlx::Error>;
    /// A nullable BIGINT column.
    fn opt_int64(&self, col: &str) -> std::result::Result<Option<i64>, sqlx::Error>;
    /// An INTEGER column.
    fn int32(&self, col: &str) -> std::result::Result<i32, sqlx::Error>;
    /// A nullable INTEGER column.
    fn opt_int32(&self, col: &str) -> std::result::Result<Option<i32>, sqlx::Error>;
    /// A BLOB / BYTEA column.
    fn bytes(&self, col: &str) -> std::result::Result<Vec<u8>, sqlx::Error>;
    /// A BOOLEAN column.
    fn boolean(&self, col: &str) -> std::result::Result<bool, sqlx::Error>;
}

macro_rules! impl_store_row {
    ($($row:ty),*) => {$(
        impl StoreRow for $row {
            fn text(&self, col: &str) -> std::result::Result<String, sqlx::Error> {
                sqlx::Row::try_get(self, col)
            }
            fn opt_text(&self, col: &str) -> std::result::Result<Option<String>, sqlx::Error> {
                sqlx::Row::try_get(self, col)
            }
            fn int64(&self, col: &str) -> std::result::Result<i64, sqlx::Error> {
                sqlx::Row::try_get(self, col)
            }
            fn opt_int64(&self, col: &str) -> std::result::Result<Option<i64>, sqlx::Error> {
                sqlx::Row::try_get(self, col)
            }
            fn int32(&self, col: &str) -> std::result::Result<i32, sqlx::Error> {
                sqlx::Row::try_get(self, col)
            }
            fn opt_int32(&self, col: &str) -> std::result::Result<Option<i32>, sqlx::Error> {
                sqlx::Row::try_get(self, col)
            }
            fn bytes(&self, col: &str) -> std::result::Result<Vec<u8>, sqlx::Error> {
                sqlx::Row::try_get(self, col)
            }
            fn boolean(&self, col: &str) -> std::result::Result<bool, sqlx::Error> {
                sqlx::Row::try_get(self, col)
            }
        }
    )*};
}

impl_store_row!(sqlx::sqlite::SqliteRow, sqlx::postgres::PgRow);

/// One row being decoded, with the table and key to name in a
/// [`Error::Corrupt`].
struct Fields<'r, R> {
    row: &'r R,
    table: &'static str,
    key: String,
}

impl<'r, R: StoreRow> Fields<'r, R> {
    fn new(row: &'r R, table: &'static str, key_col: &str) -> Self {
        let key = row.text(key_col).unwrap_or_else(|_| "?".to_string());
        Fields { row, table, key }
    }

    fn corrupt(&self, reason: impl Display) -> Error {
        Error::Corrupt { table: self.table, id: self.key.clone(), reason: reason.to_string() }
    }

    fn col<T>(&self, col: &str, got: std::result::Result<T, sqlx::Error>) -> Result<T> {
        got.map_err(|e| self.corrupt(format_args!("column {col}: {e}")))
    }

    fn text(&self, col: &str) -> Result<String> {
        self.col(col, self.row.text(col))
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        self.col(col, self.row.opt_text(col))
    }
    fn int64(&self, col: &str) -> Result<i64> {
        self.col(col, self.row.int64(col))
    }
    fn opt_int64(&self, col: &str) -> Result<Option<i64>> {
        self.col(col, self.row.opt_int64(col))
    }
    fn int32(&self, col: &str) -> Result<i32> {
        self.col(col, self.row.int32(col))
    }
    fn opt_int32(&self, col: &str) -> Result<Option<i32>> {
        self.col(col, self.row.opt_int32(col))
    }
    fn boolean(&self, col: &str) -> Result<bool> {
        self.col(col, self.row.boolean(col))
    }

    fn u64(&self, col: &str) -> Result<u64> {
        let v = self.int64(col)?;
        u64::try_from(v).map_err(|_| self.corrupt(format_args!("column {col}: negative ({v})")))
    }

    fn u32(&self, col: &str) -> Result<u32> {
        let v = self.int64(col)?;
        u32::try_from(v).map_err(|_| self.corrupt(format_args!("column {col}: out of range ({v})")))
    }

    fn opt_u32(&self, col: &str) -> Result<Option<u32>> {
        self.opt_int64(col)?
            .map(|v| {
                u32::try_from(v).map_err(|_| self.corrupt(format_args!("column {col}: out of range ({v})")))
            })
            .transpose()
    }

    fn task_id(&self, col: &str) -> Result<TaskId> {
        self.text(col)?.parse().map_err(|e| self.corrupt(format_args!("column {col}: {e}")))
    }

    fn delegate_id(&self, col: &str) -> Result<DelegateId> {
        self.text(col)?.parse().map_err(|e| self.corrupt(format_args!("column {col}: {e}")))
    }

    fn scope(&self) -> Result<pb::Scope> {
        Ok(pb::Scope {
            account: self.text("scope_account")?,
            org: self.text("scope_org")?,
            project: self.text("scope_project")?,
        })
    }
}

/// Decodes a `tasks` row selected with `task_columns!()`.
pub(super) fn task_from_row<R: StoreRow>(row: &R) -> Result<TaskRecord> {
    let f = Fields::new(row, "tasks", "id");
    let spec_bytes = f.col("spec", row.bytes("spec"))?;
    let spec = pb::TaskSpec::decode(spec_bytes.as_slice())
        .map_err(|e| f.corrupt(format_args!("column spec: {e}")))?;
    let state_number = f.int32("state")?;
    let state = pb::TaskState::try_from(state_number)
        .map_err(|_| f.corrupt(format_args!("column state: unknown state {state_number}")))?;
    let delegate_id = f
        .opt_text("delegate_id")?
        .map(|s| s.parse::<DelegateId>().map_err(|e| f.corrupt(format_args!("column delegate_id: {e}"))))
        .transpose()?;
    let outputs_text = f.text("outputs_json")?;
    let outputs = serde_json::from_str(&outputs_text)
        .map_err(|e| f.corrupt(format_args!("column outputs_json: {e}")))?;
    Ok(TaskRecord {
        id: f.task_id("id")?,
        spec,
        state,
        epoch: Epoch(f.u64("epoch")?),
        version: f.u64("version")?,
        delegate_id,
        exit_code: f.opt_int32("exit_code")?,
        reason: f.text("reason")?,
        created_ms: f.int64("created_ms")?,
        started_ms: f.opt_int64("started_ms")?,
        finished_ms: f.opt_int64("finished_ms")?,
        queue_deadline_ms: f.int64("queue_deadline_ms")?,
        outputs,
        error_type: f.text("error_type")?,
    })
}

/// Decodes a `task_logs` row selected with `log_columns!()`.
pub(super) fn log_from_row<R: StoreRow>(row: &R) -> Result<LogRecord> {
    let f = Fields::new(row, "task_logs", "task_id");
    Ok(LogRecord {
        task_id: f.task_id("task_id")?,
        seq: f.u64("seq")?,
        epoch: Epoch(f.u64("epoch")?),
        stream: f.int32("stream")?,
        text: f.text("text")?,
        at_ms: f.int64("at_ms")?,
    })
}

/// Decodes an `audit` row selected with `audit_columns!()`.
pub(super) fn audit_from_row<R: StoreRow>(row: &R) -> Result<AuditRecord> {
    let f = Fields::new(row, "audit", "subject");
    Ok(AuditRecord {
        at_ms: f.int64("at_ms")?,
        actor: f.text("actor")?,
        action: f.text("action")?,
        subject: f.text("subject")?,
        detail: f.text("detail")?,
    })
}

/// Decodes a `tokens` row selected with `token_columns!()`.
pub(super) fn token_from_row<R: StoreRow>(row: &R) -> Result<TokenRecord> {
    let f = Fields::new(row, "tokens", "name");
    Ok(TokenRecord {
        name: f.text("name")?,
        token_hash: f.text("token_hash")?,
        scope: f.scope()?,
        expires_ms: f.int64("expires_ms")?,
        max_uses: f.opt_u32("max_uses")?,
        uses: f.u32("uses")?,
        revoked: f.boolean("revoked")?,
        created_ms: f.int64("created_ms")?,
    })
}

/// Decodes a `delegates` row selected with `delegate_columns!()`.
pub(super) fn delegate_from_row<R: StoreRow>(row: &R) -> Result<DelegateRecord> {
    let f = Fields::new(row, "delegates", "id");
    let tags_text = f.text("tags")?;
    let tags: Vec<String> =
        serde_json::from_str(&tags_text).map_err(|e| f.corrupt(format_args!("column tags: {e}")))?;
    Ok(DelegateRecord {
        id: f.delegate_id("id")?,
        name: f.text("name")?,
        scope: f.scope()?,
        tags,
        token_name: f.text("token_name")?,
        enrolled_ms: f.int64("enrolled_ms")?,
        last_seen_ms: f.int64("last_seen_ms")?,
        revoked: f.boolean("revoked")?,
    })
}

/// The embedded migrations of backend `$dir` (`migrations/<dir>/`) as
/// (version, name, SQL), in order. Both backends have the same list; a new
/// migration is one line here and one file per backend.
macro_rules! embedded_migrations {
    ($dir:literal) => {
        [
            (1, "init", include_str!(concat!("../../migrations/", $dir, "/0001_init.sql"))),
            (2, "task_outputs", include_str!(concat!("../../migrations/", $dir, "/0002_task_outputs.sql"))),
            (3, "entities", include_str!(concat!("../../migrations/", $dir, "/0003_entities.sql"))),
            (4, "executions", include_str!(concat!("../../migrations/", $dir, "/0004_executions.sql"))),
            (5, "triggers", include_str!(concat!("../../migrations/", $dir, "/0005_triggers.sql"))),
            (6, "instances", include_str!(concat!("../../migrations/", $dir, "/0006_instances.sql"))),
            (7, "replicas", include_str!(concat!("../../migrations/", $dir, "/0007_replicas.sql"))),
            (8, "replica_roles", include_str!(concat!("../../migrations/", $dir, "/0008_replica_roles.sql"))),
        ]
    };
}
pub(super) use embedded_migrations;

/// A sqlx migrator over `migrations` (version, name, SQL).
pub(super) fn migrator(migrations: &[(i64, &'static str, &'static str)]) -> sqlx::migrate::Migrator {
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    // sqlx 0.8 builds a Migrator from its (documented as semver-exempt) public
    // fields, exactly as its `migrate!` macro does; the version is pinned in Cargo.lock.
    Migrator {
        migrations: std::borrow::Cow::Owned(
            migrations
                .iter()
                .map(|(version, name, sql)| {
                    Migration::new(*version, (*name).into(), MigrationType::Simple, (*sql).into(), false)
                })
                .collect(),
        ),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(version: u64) -> TaskRecord {
        TaskRecord {
            id: TaskId::new(),
            spec: pb::TaskSpec::default(),
            state: pb::TaskState::Queued,
            epoch: Epoch(0),
            version,
            delegate_id: None,
            exit_code: None,
            reason: String::new(),
            created_ms: 1,
            started_ms: None,
            finished_ms: None,
            queue_deadline_ms: 2,
            outputs: Default::default(),
            error_type: String::new(),
        }
    }

    fn next(r: &TaskRecord) -> TaskRecord {
        TaskRecord { version: r.version + 1, ..r.clone() }
    }

    #[test]
    fn unfinished_states_are_the_non_final_ones() {
        let states = unfinished_states();
        assert_eq!(states, vec![0, 1, 2, 3]);
    }

    #[test]
    fn collapse_insert_then_updates_is_an_insert_of_the_last_record() {
        let a1 = record(1);
        let a2 = next(&a1);
        let a3 = next(&a2);
        let b5 = record(5);
        let b6 = next(&b5);
        let writes = vec![
            TaskWrite { record: a1.clone(), expected_version: None },
            TaskWrite { record: b6.clone(), expected_version: Some(5) },
            TaskWrite { record: a2.clone(), expected_version: Some(1) },
            TaskWrite { record: a3.clone(), expected_version: Some(2) },
        ];
        let plan = TaskPlan::new(&writes).unwrap();
        assert_eq!(plan.inserts, vec![&a3]);
        assert_eq!(plan.updates.len(), 1);
        assert_eq!(plan.updates[0].record, &b6);
        assert_eq!(plan.updates[0].expected_version, 5);
    }

    #[test]
    fn collapse_keeps_the_first_expectation_and_refuses_broken_chains() {
        let a4 = record(4);
        let a5 = next(&a4);
        let a6 = next(&a5);
        let chained = vec![
            TaskWrite { record: a5.clone(), expected_version: Some(4) },
            TaskWrite { record: a6.clone(), expected_version: Some(5) },
        ];
        let plan = TaskPlan::new(&chained).unwrap();
        assert!(plan.inserts.is_empty());
        assert_eq!(plan.updates[0].expected_version, 4);
        assert_eq!(plan.updates[0].record, &a6);

        let broken = vec![
            TaskWrite { record: a5.clone(), expected_version: Some(4) },
            TaskWrite { record: a6.clone(), expected_version: Some(4) },
        ];
        assert!(matches!(TaskPlan::new(&broken), Err(Error::Conflict { .. })));

        let reinsert = vec![
            TaskWrite { record: a4.clone(), expected_version: None },
            TaskWrite { record: a4.clone(), expected_version: None },
        ];
        assert!(matches!(TaskPlan::new(&reinsert), Err(Error::Conflict { .. })));
    }

    #[test]
    fn tokens_are_refused_in_order_and_counted() {
        let token = TokenRecord {
            name: "ci".into(),
            token_hash: "ab".into(),
            scope: pb::Scope::default(),
            expires_ms: 100,
            max_uses: Some(1),
            uses: 0,
            revoked: false,
            created_ms: 0,
        };
        assert_eq!(check_token(None, 0), Err(TokenRefused::Unknown));
        assert_eq!(check_token(Some(token.clone()), 100).unwrap().uses, 1);
        assert!(matches!(check_token(Some(token.clone()), 101), Err(TokenRefused::Expired { .. })));
        let used = TokenRecord { uses: 1, ..token.clone() };
        assert_eq!(
            check_token(Some(used.clone()), 0),
            Err(TokenRefused::UsedUp { name: "ci".into(), max: 1 })
        );
        let revoked = TokenRecord { revoked: true, ..used };
        assert!(matches!(check_token(Some(revoked), 101), Err(TokenRefused::Revoked { .. })));
    }
}
