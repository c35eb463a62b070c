//! The embedded SQLite store (the default, one replica): connection setup,
//! migrations and the SQL for every [`Store`] method.
//!
//! One file, two pools: a single writer connection, so writes are serialized in
//! the process and never fight over SQLite's one write lock, and a few
//! `query_only` readers, which WAL lets run beside the writer. Every commit is
//! durable (`synchronous = FULL`): one WAL flush per [`Batch`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use dray_shared::{DelegateId, TaskId, pb};
use prost::Message;
use sqlx::migrate::Migrator;
use sqlx::query_builder::Separated;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite};

use super::common::{
    TaskPlan, TaskUpdate, audit_columns, audit_from_row, check_token, db_error, db_u64, delegate_columns,
    delegate_from_row, log_columns, log_from_row, migrate_error, outputs_json, tags_json, task_columns,
    task_from_row, token_columns, token_from_row, unfinished_states,
};
use super::{
    AuditRecord, Batch, DelegateRecord, Error, LogRecord, Result, Store, TaskRecord, TokenRecord,
    TokenRefused,
};

/// SQLite's default bound-parameter limit per statement (`SQLITE_MAX_VARIABLE_NUMBER`
/// since 3.32). Multi-row statements are chunked to stay under it.
const MAX_PARAMS: usize = 32_766;

/// How long a statement waits for a lock held by another process (the CLI, a
/// backup) before failing with a retryable error.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Reader connections. WAL readers do not block each other or the writer; a
/// handful covers API reads on a 2-core machine.
const READERS: u32 = 4;

/// Schema migrations, embedded. Versions follow the file-name prefix, as sqlx's
/// own directory convention would read them.
mod entities;
mod executions;
mod replicas;
mod triggers;

fn migrator() -> Migrator {
    super::common::migrator(&crate::store::common::embedded_migrations!("sqlite"))
}

/// The SQLite-backed [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Exactly one connection: every write goes through it, in order.
    writer: SqlitePool,
    /// Read-only (`query_only`) connections for everything else.
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing, with parent directories) the database named by
    /// `url`: `sqlite:///abs/path.db`, `sqlite://relative.db` or `sqlite:path.db`.
    /// Does not migrate; call [`Store::migrate`].
    pub async fn open(url: &str) -> Result<Self> {
        let path = sqlite_path(url)?;
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            tokio::fs::create_dir_all(parent).await.map_err(|e| Error::Unavailable(Box::new(e)))?;
        }
        let base = SqliteConnectOptions::new()
            .filename(&path)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .synchronous(SqliteSynchronous::Full);

        // The writer connects first: it creates the file and switches it to WAL,
        // which is a property of the file that the readers then inherit.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(base.clone().create_if_missing(true).journal_mode(SqliteJournalMode::Wal))
            .await
            .map_err(db_error)?;
        // query_only makes a write through a reader an error instead of a second
        // writer that would contend for the lock.
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(base.pragma("query_only", "ON"))
            .await
            .map_err(db_error)?;
        Ok(SqliteStore { writer, reader })
    }

    /// Looks up stored versions of the plan's tasks, to say which write conflicted.
    async fn explain_conflict(&self, plan: &TaskPlan<'_>) -> Error {
        let ids = plan.ids();
        let mut stored = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_PARAMS) {
            let mut q = QueryBuilder::<Sqlite>::new("SELECT id, version FROM tasks WHERE id IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(id.as_str());
            }
            q.push(")");
            let Ok(rows) = q.build().persistent(false).fetch_all(&self.reader).await else {
                break;
            };
            for row in rows {
                if let (Ok(id), Ok(version)) = (
                    sqlx::Row::try_get::<String, _>(&row, "id"),
                    sqlx::Row::try_get::<i64, _>(&row, "version"),
                ) {
                    stored.insert(id, u64::try_from(version).unwrap_or(u64::MAX));
                }
            }
        }
        Error::Conflict { what: plan.explain_conflict(&stored) }
    }

    /// Writes a batch in one transaction on the writer. `Ok(false)` means a task
    /// write was refused (existing id or stale version) and nothing was written.
    async fn write_batch(&self, plan: &TaskPlan<'_>, batch: &Batch) -> Result<bool> {
        // IMMEDIATE takes the write lock up front, so another process holding it
        // makes us wait (busy_timeout) instead of failing mid-transaction.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
        match insert_tasks(&mut tx, &plan.inserts).await {
            Ok(()) => {}
            Err(Error::Conflict { .. }) => return Ok(false),
            Err(e) => return Err(e),
        }
        if let Some(mut q) = plan.own_inserts::<sqlx::Sqlite>(batch.owner.as_deref()) {
            q.build().persistent(false).execute(&mut *tx).await.map_err(db_error)?;
        }
        if !update_tasks(&mut tx, &plan.updates, batch.owner.as_deref()).await? {
            // Dropping `tx` rolls back.
            return Ok(false);
        }
        insert_logs(&mut tx, &batch.logs).await?;
        insert_audit(&mut tx, &batch.audit).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }
}

/// The file path in a `sqlite:` URL.
fn sqlite_path(url: &str) -> Result<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| Error::Config(format!("not a sqlite URL: {url:?}")))?;
    if rest.contains('?') {
        return Err(Error::Config(format!(
            "sqlite URL {url:?}: query parameters are not supported; the store sets its own options"
        )));
    }
    if rest.is_empty() || rest == ":memory:" {
        // The reader and writer pools would each get their own empty database.
        return Err(Error::Config(format!(
            "sqlite URL {url:?}: a file path is required (in-memory databases are not supported)"
        )));
    }
    Ok(PathBuf::from(rest))
}

/// Rows per multi-row statement for a table with `columns` bound columns.
fn rows_per_statement(columns: usize) -> usize {
    MAX_PARAMS / columns
}

/// Columns `bind_task` binds.
const TASK_COLUMNS: usize = 14;

/// Binds a task row's fourteen columns, in `task_columns!()` order.
fn bind_task<'args>(row: &mut Separated<'_, 'args, Sqlite, &'static str>, r: &'args TaskRecord) {
    row.push_bind(r.id.to_string())
        .push_bind(r.spec.encode_to_vec())
        .push_bind(r.state as i32)
        .push_bind(db_u64(r.epoch.0))
        .push_bind(db_u64(r.version))
        .push_bind(r.delegate_id.map(|d| d.to_string()))
        .push_bind(r.exit_code)
        .push_bind(r.reason.as_str())
        .push_bind(r.created_ms)
        .push_bind(r.started_ms)
        .push_bind(r.finished_ms)
        .push_bind(r.queue_deadline_ms)
        .push_bind(outputs_json(r))
        .push_bind(r.error_type.as_str());
}

async fn insert_tasks(conn: &mut SqliteConnection, records: &[&TaskRecord]) -> Result<()> {
    for chunk in records.chunks(rows_per_statement(TASK_COLUMNS)) {
        let mut q = QueryBuilder::<Sqlite>::new(concat!("INSERT INTO tasks (", task_columns!(), ") "));
        q.push_values(chunk, |mut row, r| {
            bind_task(&mut row, r);
        });
        // Chunk sizes vary, so caching the prepared statement would only churn
        // the cache.
        q.build().persistent(false).execute(&mut *conn).await.map_err(db_error)?;
    }
    Ok(())
}

/// Compare-and-set overwrite of many rows in one statement per chunk:
/// `UPDATE … FROM (VALUES …)` joined on id and the expected version. A row that is
/// missing or has moved on is simply not matched, so a short `rows_affected`
/// means a conflict. (An upsert would be wrong here: it would insert a row that
/// is missing instead of refusing the write.) Returns false on conflict.
async fn update_tasks(
    conn: &mut SqliteConnection,
    updates: &[TaskUpdate<'_>],
    owner: Option<&str>,
) -> Result<bool> {
    // VALUES columns are named column1… in SQLite; column15 is the expected version.
    // Up to three more parameters per statement: the owner-keeping states and the owner.
    for chunk in updates.chunks((MAX_PARAMS - 3) / (TASK_COLUMNS + 1)) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "UPDATE tasks SET spec = v.column2, state = v.column3, epoch = v.column4, \
             version = v.column5, delegate_id = v.column6, exit_code = v.column7, \
             reason = v.column8, created_ms = v.column9, started_ms = v.column10, \
             finished_ms = v.column11, queue_deadline_ms = v.column12, \
             outputs_json = v.column13, error_type = v.column14, \
             owner = CASE WHEN v.column3 IN (",
        );
        q.push_bind(pb::TaskState::Offered as i32)
            .push(", ")
            .push_bind(pb::TaskState::Running as i32)
            .push(") THEN tasks.owner ELSE NULL END FROM (");
        q.push_values(chunk, |mut row, u| {
            let r = u.record;
            bind_task(&mut row, r);
            row.push_bind(db_u64(u.expected_version));
        });
        q.push(") AS v WHERE tasks.id = v.column1 AND tasks.version = v.column15");
        if let Some(owner) = owner {
            q.push(" AND tasks.owner = ").push_bind(owner);
        }
        let done = q.build().persistent(false).execute(&mut *conn).await.map_err(db_error)?;
        if done.rows_affected() != chunk.len() as u64 {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn insert_logs(conn: &mut SqliteConnection, logs: &[LogRecord]) -> Result<()> {
    for chunk in logs.chunks(rows_per_statement(6)) {
        let mut q = QueryBuilder::<Sqlite>::new(concat!("INSERT INTO task_logs (", log_columns!(), ") "));
        q.push_values(chunk, |mut row, l| {
            row.push_bind(l.task_id.to_string())
                .push_bind(db_u64(l.seq))
                .push_bind(db_u64(l.epoch.0))
                .push_bind(l.stream)
                .push_bind(l.text.as_str())
                .push_bind(l.at_ms);
        });
        q.build().persistent(false).execute(&mut *conn).await.map_err(db_error)?;
    }
    Ok(())
}

async fn insert_audit(conn: &mut SqliteConnection, audit: &[AuditRecord]) -> Result<()> {
    for chunk in audit.chunks(rows_per_statement(5)) {
        let mut q = QueryBuilder::<Sqlite>::new(concat!("INSERT INTO audit (", audit_columns!(), ") "));
        q.push_values(chunk, |mut row, a| {
            row.push_bind(a.at_ms)
                .push_bind(a.actor.as_str())
                .push_bind(a.action.as_str())
                .push_bind(a.subject.as_str())
                .push_bind(a.detail.as_str());
        });
        q.build().persistent(false).execute(&mut *conn).await.map_err(db_error)?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<()> {
        migrator().run(&self.writer).await.map_err(migrate_error)
    }

    async fn commit(&self, batch: &Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let plan = TaskPlan::new(&batch.tasks)?;
        if self.write_batch(&plan, batch).await? { Ok(()) } else { Err(self.explain_conflict(&plan).await) }
    }

    async fn load_unfinished(&self) -> Result<Vec<TaskRecord>> {
        let states = unfinished_states().iter().map(i32::to_string).collect::<Vec<_>>().join(", ");
        // The state numbers are our own constants, not input: inlining them lets
        // the planner use the (state, created_ms) index.
        let sql = format!(
            concat!("SELECT ", task_columns!(), " FROM tasks WHERE state IN ({}) ORDER BY created_ms, id"),
            states
        );
        let rows = sqlx::query(&sql).fetch_all(&self.reader).await.map_err(db_error)?;
        rows.iter().map(task_from_row).collect()
    }

    async fn get_task(&self, id: TaskId) -> Result<Option<TaskRecord>> {
        let row = sqlx::query(concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = ?"))
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(db_error)?;
        row.as_ref().map(task_from_row).transpose()
    }

    async fn list_tasks(&self, states: &[pb::TaskState], limit: u32) -> Result<Vec<TaskRecord>> {
        let mut q = QueryBuilder::<Sqlite>::new(concat!("SELECT ", task_columns!(), " FROM tasks"));
        if !states.is_empty() {
            q.push(" WHERE state IN (");
            let mut list = q.separated(", ");
            for state in states {
                list.push_bind(*state as i32);
            }
            q.push(")");
        }
        q.push(" ORDER BY created_ms DESC, id DESC LIMIT ");
        q.push_bind(i64::from(limit));
        let rows = q.build().fetch_all(&self.reader).await.map_err(db_error)?;
        rows.iter().map(task_from_row).collect()
    }

    async fn task_logs(&self, id: TaskId, after_seq: u64, limit: u32) -> Result<Vec<LogRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            log_columns!(),
            " FROM task_logs WHERE task_id = ? AND seq > ? ORDER BY seq LIMIT ?"
        ))
        .bind(id.to_string())
        .bind(db_u64(after_seq))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?;
        rows.iter().map(log_from_row).collect()
    }

    async fn last_log_seq(&self, id: TaskId) -> Result<u64> {
        let max: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM task_logs WHERE task_id = ?")
            .bind(id.to_string())
            .fetch_one(&self.reader)
            .await
            .map_err(db_error)?;
        let max = max.unwrap_or(0);
        u64::try_from(max).map_err(|_| Error::Corrupt {
            table: "task_logs",
            id: id.to_string(),
            reason: format!("negative seq {max}"),
        })
    }

    async fn create_token(&self, token: &TokenRecord) -> Result<()> {
        sqlx::query(concat!(
            "INSERT INTO tokens (",
            token_columns!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(token.name.as_str())
        .bind(token.token_hash.as_str())
        .bind(token.scope.account.as_str())
        .bind(token.scope.org.as_str())
        .bind(token.scope.project.as_str())
        .bind(token.expires_ms)
        .bind(token.max_uses.map(i64::from))
        .bind(i64::from(token.uses))
        .bind(token.revoked)
        .bind(token.created_ms)
        .execute(&self.writer)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn use_token(&self, token_hash: &str, now_ms: i64) -> Result<Result<TokenRecord, TokenRefused>> {
        // Check and count in one transaction on the single writer: no other write
        // can run between the read and the increment.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
        let row = sqlx::query(concat!("SELECT ", token_columns!(), " FROM tokens WHERE token_hash = ?"))
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        let token = row.as_ref().map(token_from_row).transpose()?;
        match check_token(token, now_ms) {
            Ok(token) => {
                sqlx::query("UPDATE tokens SET uses = ? WHERE name = ?")
                    .bind(i64::from(token.uses))
                    .bind(token.name.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                tx.commit().await.map_err(db_error)?;
                Ok(Ok(token))
            }
            Err(refused) => {
                tx.rollback().await.map_err(db_error)?;
                Ok(Err(refused))
            }
        }
    }

    async fn revoke_token(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE tokens SET revoked = TRUE WHERE name = ?")
            .bind(name)
            .execute(&self.writer)
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query(concat!("SELECT ", token_columns!(), " FROM tokens ORDER BY name"))
            .fetch_all(&self.reader)
            .await
            .map_err(db_error)?;
        rows.iter().map(token_from_row).collect()
    }

    async fn insert_delegate(&self, delegate: &DelegateRecord) -> Result<()> {
        sqlx::query(concat!(
            "INSERT INTO delegates (",
            delegate_columns!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(delegate.id.to_string())
        .bind(delegate.name.as_str())
        .bind(delegate.scope.account.as_str())
        .bind(delegate.scope.org.as_str())
        .bind(delegate.scope.project.as_str())
        .bind(tags_json(delegate.id, &delegate.tags)?)
        .bind(delegate.token_name.as_str())
        .bind(delegate.enrolled_ms)
        .bind(delegate.last_seen_ms)
        .bind(delegate.revoked)
        .execute(&self.writer)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn get_delegate(&self, id: DelegateId) -> Result<Option<DelegateRecord>> {
        let row = sqlx::query(concat!("SELECT ", delegate_columns!(), " FROM delegates WHERE id = ?"))
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(db_error)?;
        row.as_ref().map(delegate_from_row).transpose()
    }

    async fn list_delegates(&self) -> Result<Vec<DelegateRecord>> {
        let rows =
            sqlx::query(concat!("SELECT ", delegate_columns!(), " FROM delegates ORDER BY enrolled_ms, id"))
                .fetch_all(&self.reader)
                .await
                .map_err(db_error)?;
        rows.iter().map(delegate_from_row).collect()
    }

    async fn revoke_delegate(&self, id: DelegateId) -> Result<bool> {
        let done = sqlx::query("UPDATE delegates SET revoked = TRUE WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.writer)
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn touch_delegate(&self, id: DelegateId, last_seen_ms: i64, tags: &[String]) -> Result<()> {
        // A delegate that is not enrolled has nothing to record; the caller
        // authenticated it against the delegates table already.
        sqlx::query("UPDATE delegates SET last_seen_ms = ?, tags = ? WHERE id = ?")
            .bind(last_seen_ms)
            .bind(tags_json(id, tags)?)
            .bind(id.to_string())
            .execute(&self.writer)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn list_audit(&self, limit: u32) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(concat!("SELECT ", audit_columns!(), " FROM audit ORDER BY id DESC LIMIT ?"))
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(db_error)?;
        rows.iter().map(audit_from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh, migrated store in its own temporary directory.
    struct Fixture {
        store: SqliteStore,
        _dir: tempfile::TempDir,
    }

    impl Fixture {
        async fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            // A nested path also proves parent directories are created.
            let url = format!("sqlite://{}/state/dray.db", dir.path().display());
            let store = SqliteStore::open(&url).await.unwrap();
            store.migrate().await.unwrap();
            Fixture { store, _dir: dir }
        }

        fn store(&self) -> &dyn Store {
            &self.store
        }

        async fn finish(self) {
            self.store.writer.close().await;
            self.store.reader.close().await;
        }
    }

    crate::store::conformance::conformance_suite!(Fixture);
    crate::store::entities_conformance::entity_conformance_suite!(Fixture);
    crate::store::triggers_conformance::trigger_conformance_suite!(Fixture);
    crate::store::replicas_conformance::replica_conformance_suite!(Fixture);

    #[test]
    fn urls_name_files() {
        assert_eq!(sqlite_path("sqlite:///var/lib/dray.db").unwrap(), PathBuf::from("/var/lib/dray.db"));
        assert_eq!(sqlite_path("sqlite://dray.db").unwrap(), PathBuf::from("dray.db"));
        assert_eq!(sqlite_path("sqlite:dray.db").unwrap(), PathBuf::from("dray.db"));
        assert!(matches!(sqlite_path("sqlite::memory:"), Err(Error::Config(_))));
        assert!(matches!(sqlite_path("sqlite://"), Err(Error::Config(_))));
        assert!(matches!(sqlite_path("sqlite://x.db?mode=ro"), Err(Error::Config(_))));
    }

    #[tokio::test]
    async fn connections_are_durable_wal_with_foreign_keys() {
        let fixture = Fixture::new().await;
        let mode: String =
            sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&fixture.store.writer).await.unwrap();
        assert_eq!(mode, "wal");
        // 2 = FULL
        let sync: i64 =
            sqlx::query_scalar("PRAGMA synchronous").fetch_one(&fixture.store.writer).await.unwrap();
        assert_eq!(sync, 2);
        let fk: i64 =
            sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(&fixture.store.writer).await.unwrap();
        assert_eq!(fk, 1);
        let write_through_reader = sqlx::query("DELETE FROM audit").execute(&fixture.store.reader).await;
        assert!(write_through_reader.is_err(), "readers must be query_only");
        fixture.finish().await;
    }

    #[test]
    fn every_migration_file_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        let files = std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "sql"))
            .count();
        assert_eq!(files, migrator().migrations.len());
    }
}
