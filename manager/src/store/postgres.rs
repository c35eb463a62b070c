//! The PostgreSQL store: connection setup (optionally confined to one schema),
//! migrations and the SQL for every [`Store`] method.
//!
//! Multi-row writes bind one array per column and expand them with `UNNEST`, so
//! a batch of any size is one statement per table with constant SQL: prepared
//! once per connection, and never near the 65,535 bind-parameter limit.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use dray_shared::{DelegateId, TaskId, pb};
use prost::Message;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::common::{
    TaskPlan, TaskUpdate, audit_columns, audit_from_row, check_token, db_error, db_u64, delegate_columns,
    delegate_from_row, log_columns, log_from_row, migrate_error, outputs_json, tags_json, task_columns,
    task_from_row, token_columns, token_from_row, unfinished_states,
};
use super::{
    AuditRecord, Batch, DelegateRecord, Error, LogRecord, Result, Store, TaskRecord, TokenRecord,
    TokenRefused,
};

/// Connections per store. The engine's commits are serial; the rest is API reads.
const POOL_SIZE: u32 = 8;

/// How long a caller waits for a free connection before the store reports
/// itself unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Schema migrations, embedded. Versions follow the file-name prefix, as sqlx's
/// own directory convention would read them.
mod entities;
mod executions;
pub mod leader;
pub mod notify;
mod replicas;
mod triggers;

fn migrator() -> Migrator {
    super::common::migrator(&crate::store::common::embedded_migrations!("postgres"))
}

/// The PostgreSQL-backed [`Store`].
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Suffix that keeps this schema's notification channels apart from other
    /// schemas' in the same database (channels are database-wide).
    channel_suffix: String,
}

impl PgStore {
    /// Connects to `url` (`postgres://…`). With `schema`, every table lives in that
    /// schema, created if missing; its name must be a plain lower-case identifier.
    /// Does not migrate; call [`Store::migrate`].
    pub async fn connect(url: &str, schema: Option<&str>) -> Result<Self> {
        let mut options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::Config(format!("invalid PostgreSQL URL: {e}")))?;
        if let Some(schema) = schema {
            check_schema_name(schema)?;
            // A startup option rather than a SET after connecting: it holds for
            // every connection the pool ever opens, with no extra round trip.
            // Only the schema is searched, so nothing lands in `public` by accident.
            options = options.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(db_error)?;
        if let Some(schema) = schema {
            let created = sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                .execute(&pool)
                .await
                .map_err(db_error);
            match created {
                // Two processes creating it at once: the loser sees a unique
                // violation on the catalog, and the schema exists either way.
                Ok(_) | Err(Error::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let channel_suffix = match schema {
            Some(schema) => {
                use sha2::Digest as _;
                format!("_{}", &hex::encode(sha2::Sha256::digest(schema.as_bytes()))[..12])
            }
            None => String::new(),
        };
        Ok(PgStore { pool, channel_suffix })
    }

    /// Looks up stored versions of the plan's tasks, to say which write conflicted.
    async fn explain_conflict(&self, plan: &TaskPlan<'_>) -> Error {
        let ids = plan.ids();
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT id, version FROM tasks WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&self.pool)
            .await
            .unwrap_or_default();
        let stored: HashMap<String, u64> =
            rows.into_iter().map(|(id, v)| (id, u64::try_from(v).unwrap_or(u64::MAX))).collect();
        Error::Conflict { what: plan.explain_conflict(&stored) }
    }

    /// Writes a batch in one transaction. `Ok(false)` means a task write was
    /// refused (existing id or stale version) and nothing was written.
    async fn write_batch(&self, plan: &TaskPlan<'_>, batch: &Batch) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        match insert_tasks(&mut tx, &plan.inserts).await {
            Ok(()) => {}
            Err(Error::Conflict { .. }) => return Ok(false),
            Err(e) => return Err(e),
        }
        if let Some(mut q) = plan.own_inserts::<sqlx::Postgres>(batch.owner.as_deref()) {
            q.build().persistent(false).execute(&mut *tx).await.map_err(db_error)?;
        }
        if !update_tasks(&mut tx, &plan.updates, batch.owner.as_deref()).await? {
            // Dropping `tx` rolls back.
            return Ok(false);
        }
        insert_logs(&mut tx, &batch.logs).await?;
        insert_audit(&mut tx, &batch.audit).await?;
        if !batch.notices.is_empty() {
            // Delivered to listeners only when the transaction commits.
            sqlx::query("SELECT pg_notify($1, n) FROM UNNEST($2::text[]) AS n")
                .bind(self.channel("tasks"))
                .bind(&batch.notices)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }
}

/// Refuses schema names that would need quoting: the name goes into a startup
/// option and DDL, and PostgreSQL folds unquoted names to lower case.
fn check_schema_name(schema: &str) -> Result<()> {
    let mut chars = schema.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && schema.len() <= 63 {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "schema name {schema:?} must be 1-63 of a-z, 0-9, _ and not start with a digit"
        )))
    }
}

/// One array per `tasks` column, for binding to `UNNEST`.
#[derive(Default)]
struct TaskColumns {
    id: Vec<String>,
    spec: Vec<Vec<u8>>,
    state: Vec<i32>,
    epoch: Vec<i64>,
    version: Vec<i64>,
    delegate_id: Vec<Option<String>>,
    exit_code: Vec<Option<i32>>,
    reason: Vec<String>,
    created_ms: Vec<i64>,
    started_ms: Vec<Option<i64>>,
    finished_ms: Vec<Option<i64>>,
    queue_deadline_ms: Vec<i64>,
    outputs_json: Vec<String>,
    error_type: Vec<String>,
}

impl TaskColumns {
    fn push(&mut self, r: &TaskRecord) {
        self.id.push(r.id.to_string());
        self.spec.push(r.spec.encode_to_vec());
        self.state.push(r.state as i32);
        self.epoch.push(db_u64(r.epoch.0));
        self.version.push(db_u64(r.version));
        self.delegate_id.push(r.delegate_id.map(|d| d.to_string()));
        self.exit_code.push(r.exit_code);
        self.reason.push(r.reason.clone());
        self.created_ms.push(r.created_ms);
        self.started_ms.push(r.started_ms);
        self.finished_ms.push(r.finished_ms);
        self.queue_deadline_ms.push(r.queue_deadline_ms);
        self.outputs_json.push(outputs_json(r));
        self.error_type.push(r.error_type.clone());
    }

    /// Binds the fourteen arrays, in `task_columns!()` order, as `$1`…`$14`.
    fn bind<'q>(
        &'q self,
        q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        q.bind(&self.id)
            .bind(&self.spec)
            .bind(&self.state)
            .bind(&self.epoch)
            .bind(&self.version)
            .bind(&self.delegate_id)
            .bind(&self.exit_code)
            .bind(&self.reason)
            .bind(&self.created_ms)
            .bind(&self.started_ms)
            .bind(&self.finished_ms)
            .bind(&self.queue_deadline_ms)
            .bind(&self.outputs_json)
            .bind(&self.error_type)
    }
}

/// `UNNEST` of the fourteen task column arrays, typed explicitly.
macro_rules! unnest_tasks {
    () => {
        "UNNEST($1::text[], $2::bytea[], $3::int4[], $4::int8[], $5::int8[], $6::text[], \
         $7::int4[], $8::text[], $9::int8[], $10::int8[], $11::int8[], $12::int8[], $13::text[], \
         $14::text[]"
    };
}

async fn insert_tasks(conn: &mut PgConnection, records: &[&TaskRecord]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let mut cols = TaskColumns::default();
    for r in records {
        cols.push(r);
    }
    let q = sqlx::query(concat!(
        "INSERT INTO tasks (",
        task_columns!(),
        ") SELECT * FROM ",
        unnest_tasks!(),
        ")"
    ));
    cols.bind(q).execute(conn).await.map_err(db_error)?;
    Ok(())
}

/// Compare-and-set overwrite of many rows in one statement: `UPDATE … FROM
/// UNNEST(…)` joined on id and the expected version. A row that is missing or
/// has moved on is simply not matched, so a short `rows_affected` means a
/// conflict. (An upsert would be wrong here: it would insert a row that is
/// missing instead of refusing the write.) Under READ COMMITTED a row changed
/// concurrently is re-checked against the expected version after its lock is
/// released, so the check cannot be raced. With `owner` (a replica), a row
/// must also still be owned by it: a replica declared dead whose work was
/// adopted cannot write over the adopter. Returns false on conflict.
async fn update_tasks(
    conn: &mut PgConnection,
    updates: &[TaskUpdate<'_>],
    owner: Option<&str>,
) -> Result<bool> {
    if updates.is_empty() {
        return Ok(true);
    }
    let mut cols = TaskColumns::default();
    let mut expected = Vec::with_capacity(updates.len());
    for u in updates {
        cols.push(u.record);
        expected.push(db_u64(u.expected_version));
    }
    let q = sqlx::query(concat!(
        "UPDATE tasks AS t SET spec = v.spec, state = v.state, epoch = v.epoch, \
         version = v.version, delegate_id = v.delegate_id, exit_code = v.exit_code, \
         reason = v.reason, created_ms = v.created_ms, started_ms = v.started_ms, \
         finished_ms = v.finished_ms, queue_deadline_ms = v.queue_deadline_ms, \
         outputs_json = v.outputs_json, error_type = v.error_type, \
         owner = CASE WHEN v.state = ANY($16) THEN t.owner ELSE NULL END FROM ",
        unnest_tasks!(),
        ", $15::int8[]) AS v (",
        task_columns!(),
        ", expected_version) WHERE t.id = v.id AND t.version = v.expected_version \
         AND ($17::text IS NULL OR t.owner = $17)"
    ));
    let owned = [pb::TaskState::Offered as i32, pb::TaskState::Running as i32];
    let done =
        cols.bind(q).bind(&expected).bind(&owned[..]).bind(owner).execute(conn).await.map_err(db_error)?;
    Ok(done.rows_affected() == updates.len() as u64)
}

async fn insert_logs(conn: &mut PgConnection, logs: &[LogRecord]) -> Result<()> {
    if logs.is_empty() {
        return Ok(());
    }
    let n = logs.len();
    let (mut task_id, mut seq, mut epoch, mut stream, mut text, mut at_ms) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for l in logs {
        task_id.push(l.task_id.to_string());
        seq.push(db_u64(l.seq));
        epoch.push(db_u64(l.epoch.0));
        stream.push(l.stream);
        text.push(l.text.as_str());
        at_ms.push(l.at_ms);
    }
    sqlx::query(concat!(
        "INSERT INTO task_logs (",
        log_columns!(),
        ") SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int4[], $5::text[], \
         $6::int8[])"
    ))
    .bind(&task_id)
    .bind(&seq)
    .bind(&epoch)
    .bind(&stream)
    .bind(&text)
    .bind(&at_ms)
    .execute(conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

async fn insert_audit(conn: &mut PgConnection, audit: &[AuditRecord]) -> Result<()> {
    if audit.is_empty() {
        return Ok(());
    }
    let n = audit.len();
    let (mut at_ms, mut actor, mut action, mut subject, mut detail) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for a in audit {
        at_ms.push(a.at_ms);
        actor.push(a.actor.as_str());
        action.push(a.action.as_str());
        subject.push(a.subject.as_str());
        detail.push(a.detail.as_str());
    }
    // ORDER BY ordinality: identity values follow the batch's order, which is
    // what list_audit's "newest first" reads back.
    sqlx::query(concat!(
        "INSERT INTO audit (",
        audit_columns!(),
        ") SELECT at_ms, actor, action, subject, detail FROM UNNEST($1::int8[], $2::text[], \
         $3::text[], $4::text[], $5::text[]) WITH ORDINALITY \
         AS u (at_ms, actor, action, subject, detail, n) ORDER BY n"
    ))
    .bind(&at_ms)
    .bind(&actor)
    .bind(&action)
    .bind(&subject)
    .bind(&detail)
    .execute(conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    async fn migrate(&self) -> Result<()> {
        migrator().run(&self.pool).await.map_err(migrate_error)
    }

    async fn commit(&self, batch: &Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let plan = TaskPlan::new(&batch.tasks)?;
        if self.write_batch(&plan, batch).await? { Ok(()) } else { Err(self.explain_conflict(&plan).await) }
    }

    async fn load_unfinished(&self) -> Result<Vec<TaskRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE state = ANY($1) ORDER BY created_ms, id"
        ))
        .bind(unfinished_states())
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(task_from_row).collect()
    }

    async fn get_task(&self, id: TaskId) -> Result<Option<TaskRecord>> {
        let row = sqlx::query(concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.as_ref().map(task_from_row).transpose()
    }

    async fn list_tasks(&self, states: &[pb::TaskState], limit: u32) -> Result<Vec<TaskRecord>> {
        let query = if states.is_empty() {
            sqlx::query(concat!(
                "SELECT ",
                task_columns!(),
                " FROM tasks ORDER BY created_ms DESC, id DESC LIMIT $1"
            ))
            .bind(i64::from(limit))
        } else {
            let states: Vec<i32> = states.iter().map(|s| *s as i32).collect();
            sqlx::query(concat!(
                "SELECT ",
                task_columns!(),
                " FROM tasks WHERE state = ANY($2) ORDER BY created_ms DESC, id DESC LIMIT $1"
            ))
            .bind(i64::from(limit))
            .bind(states)
        };
        let rows = query.fetch_all(&self.pool).await.map_err(db_error)?;
        rows.iter().map(task_from_row).collect()
    }

    async fn task_logs(&self, id: TaskId, after_seq: u64, limit: u32) -> Result<Vec<LogRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            log_columns!(),
            " FROM task_logs WHERE task_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(id.to_string())
        .bind(db_u64(after_seq))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(log_from_row).collect()
    }

    async fn last_log_seq(&self, id: TaskId) -> Result<u64> {
        let max: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM task_logs WHERE task_id = $1")
            .bind(id.to_string())
            .fetch_one(&self.pool)
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
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
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
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn use_token(&self, token_hash: &str, now_ms: i64) -> Result<Result<TokenRecord, TokenRefused>> {
        // FOR UPDATE holds the row until commit, so concurrent uses of one token
        // check and count strictly one after another.
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let row = sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            " FROM tokens WHERE token_hash = $1 FOR UPDATE"
        ))
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let token = row.as_ref().map(token_from_row).transpose()?;
        match check_token(token, now_ms) {
            Ok(token) => {
                sqlx::query("UPDATE tokens SET uses = $1 WHERE name = $2")
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
        let done = sqlx::query("UPDATE tokens SET revoked = TRUE WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query(concat!("SELECT ", token_columns!(), " FROM tokens ORDER BY name"))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.iter().map(token_from_row).collect()
    }

    async fn insert_delegate(&self, delegate: &DelegateRecord) -> Result<()> {
        sqlx::query(concat!(
            "INSERT INTO delegates (",
            delegate_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
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
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn get_delegate(&self, id: DelegateId) -> Result<Option<DelegateRecord>> {
        let row = sqlx::query(concat!("SELECT ", delegate_columns!(), " FROM delegates WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.as_ref().map(delegate_from_row).transpose()
    }

    async fn list_delegates(&self) -> Result<Vec<DelegateRecord>> {
        let rows =
            sqlx::query(concat!("SELECT ", delegate_columns!(), " FROM delegates ORDER BY enrolled_ms, id"))
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
        rows.iter().map(delegate_from_row).collect()
    }

    async fn revoke_delegate(&self, id: DelegateId) -> Result<bool> {
        let done = sqlx::query("UPDATE delegates SET revoked = TRUE WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn touch_delegate(&self, id: DelegateId, last_seen_ms: i64, tags: &[String]) -> Result<()> {
        // A delegate that is not enrolled has nothing to record; the caller
        // authenticated it against the delegates table already.
        sqlx::query("UPDATE delegates SET last_seen_ms = $1, tags = $2 WHERE id = $3")
            .bind(last_seen_ms)
            .bind(tags_json(id, tags)?)
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn list_audit(&self, limit: u32) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(concat!("SELECT ", audit_columns!(), " FROM audit ORDER BY id DESC LIMIT $1"))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.iter().map(audit_from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

    /// The test server: trust auth on this machine. `DRAY_TEST_POSTGRES_URL`
    /// points the tests elsewhere.
    fn server_url() -> String {
        std::env::var("DRAY_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
    }

    /// A fresh, migrated store in its own random schema, dropped by `finish`.
    struct Fixture {
        store: PgStore,
        schema: String,
    }

    impl Fixture {
        async fn new() -> Self {
            let schema = format!("dray_test_{}", uuid::Uuid::now_v7().simple());
            let store = PgStore::connect(&server_url(), Some(&schema)).await.unwrap();
            store.migrate().await.unwrap();
            Fixture { store, schema }
        }

        fn store(&self) -> &dyn Store {
            &self.store
        }

        async fn finish(self) {
            self.store.pool.close().await;
            let mut conn = PgConnection::connect(&server_url()).await.unwrap();
            sqlx::query(&format!("DROP SCHEMA \"{}\" CASCADE", self.schema))
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
        }
    }

    crate::store::conformance::conformance_suite!(Fixture);
    crate::store::entities_conformance::entity_conformance_suite!(Fixture);
    crate::store::triggers_conformance::trigger_conformance_suite!(Fixture);
    crate::store::replicas_conformance::replica_conformance_suite!(Fixture);

    #[tokio::test]
    async fn notifications_reach_listeners_of_the_same_schema_only() {
        let fixture = Fixture::new().await;
        let other = Fixture::new().await;
        let mut here = fixture.store.listen(&["tasks", "executions"]).await.unwrap();
        let mut there = other.store.listen(&["tasks"]).await.unwrap();
        // Another replica (its own pool) on the same schema notifies.
        let sender = PgStore::connect(&server_url(), Some(&fixture.schema)).await.unwrap();
        sender.notify("tasks", "queued:01").await.unwrap();
        sender.notify("executions", "done:e1").await.unwrap();
        let five = std::time::Duration::from_secs(5);
        let first = tokio::time::timeout(five, here.recv()).await.unwrap().unwrap();
        assert_eq!(first, ("tasks".to_string(), "queued:01".to_string()));
        let second = tokio::time::timeout(five, here.recv()).await.unwrap().unwrap();
        assert_eq!(second, ("executions".to_string(), "done:e1".to_string()));
        let heard = tokio::time::timeout(std::time::Duration::from_millis(300), there.recv()).await;
        assert!(heard.is_err(), "another schema's listener hears nothing: {heard:?}");
        assert_ne!(fixture.store.channel("tasks"), other.store.channel("tasks"));
        assert!(fixture.store.channel("tasks").len() <= 63, "a PostgreSQL identifier");
        drop((here, there));
        sender.pool.close().await;
        other.finish().await;
        fixture.finish().await;
    }

    #[tokio::test]
    async fn racing_replicas_claim_each_task_exactly_once() {
        use crate::store::replicas::ReplicaStore as _;
        let fixture = Fixture::new().await;
        // Three "replicas", each with its own pool on the same schema.
        let mut replicas = vec![];
        for _ in 0..3 {
            replicas.push(std::sync::Arc::new(
                PgStore::connect(&server_url(), Some(&fixture.schema)).await.unwrap(),
            ));
        }
        let tasks: Vec<_> = (0..300)
            .map(|i| crate::store::conformance::task(i, dray_shared::pb::TaskState::Queued))
            .collect();
        let ids: Vec<_> = tasks.iter().map(|t| t.id).collect();
        fixture
            .store
            .commit(&crate::store::conformance::tasks_batch(
                tasks.iter().map(crate::store::conformance::insert).collect(),
            ))
            .await
            .unwrap();
        // Each replica claims every id, in chunks, in its own order, all at once.
        let mut racers = tokio::task::JoinSet::new();
        for (n, store) in replicas.iter().enumerate() {
            let store = std::sync::Arc::clone(store);
            let mut order = ids.clone();
            order.rotate_left(n * 100);
            racers.spawn(async move {
                let mut won = vec![];
                for chunk in order.chunks(25) {
                    won.extend(
                        store.claim_tasks(&format!("r{n}"), chunk).await.unwrap().into_iter().map(|c| c.id),
                    );
                }
                (n, won)
            });
        }
        let mut owners = std::collections::HashMap::new();
        while let Some(r) = racers.join_next().await {
            let (n, won) = r.unwrap();
            for id in won {
                assert!(owners.insert(id, n).is_none(), "{id} claimed twice");
            }
        }
        assert_eq!(owners.len(), ids.len(), "every task claimed");
        for id in ids.iter().take(20) {
            let owner = fixture.store.task_owner(*id).await.unwrap();
            assert_eq!(owner, Some(format!("r{}", owners[id])));
        }
        for r in replicas {
            r.pool.close().await;
        }
        fixture.finish().await;
    }

    #[tokio::test]
    async fn tables_live_in_the_given_schema() {
        let fixture = Fixture::new().await;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = $1 ORDER BY table_name",
        )
        .bind(&fixture.schema)
        .fetch_all(&fixture.store.pool)
        .await
        .unwrap();
        assert_eq!(
            tables,
            [
                "_sqlx_migrations",
                "audit",
                "delegates",
                "entities",
                "entity_refs",
                "execution_nodes",
                "executions",
                "replicas",
                "service_instances",
                "task_logs",
                "tasks",
                "tokens",
                "trigger_cron_state",
                "trigger_events",
                "trigger_master_key"
            ]
        );
        fixture.finish().await;
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(check_schema_name("dray_test_0a").is_ok());
        assert!(check_schema_name("_x").is_ok());
        for bad in ["", "9x", "Dray", "a-b", "a\"b", "a b", &"x".repeat(64)] {
            assert!(matches!(check_schema_name(bad), Err(Error::Config(_))), "{bad:?}");
        }
    }

    #[test]
    fn every_migration_file_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
        let files = std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "sql"))
            .count();
        assert_eq!(files, migrator().migrations.len());
    }
}
