//! Durable state behind one trait, with two real implementations: SQLite (the
//! embedded default, one replica) and PostgreSQL. Both pass the same conformance
//! suite (`conformance.rs`).
//!
//! The lease engine is the only writer of task rows. It stages every transition of
//! one loop turn into a [`Batch`] and commits the batch in a single transaction
//! (group commit), so durability costs one disk flush per batch, not per event.
//! Task writes are compare-and-set on `version`: a row is only overwritten when it
//! still has the version the writer last saw, which keeps a stale writer (or, later,
//! a second replica) from clobbering newer state.
//!
//! Deliberately not here: lease logic, timers, anything about gRPC.

use std::collections::BTreeMap;

use async_trait::async_trait;
use dray_shared::pb;
use dray_shared::{DelegateId, Epoch, TaskId};

mod common;
pub mod entities;
pub mod executions;
pub mod postgres;
pub mod replicas;
pub mod sqlite;
pub mod triggers;

#[cfg(test)]
pub(crate) mod conformance;
#[cfg(test)]
pub(crate) mod entities_conformance;
#[cfg(test)]
pub(crate) mod replicas_conformance;
#[cfg(test)]
pub(crate) mod triggers_conformance;

/// Boxed source error from a driver.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A compare-and-set or uniqueness check failed; nothing was written.
    #[error("conflict on {what}")]
    Conflict {
        /// Which row or key conflicted.
        what: String,
    },
    /// The database could not be reached or the transaction failed; retryable.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// A row could not be decoded.
    #[error("corrupt row in {table} ({id}): {reason}")]
    Corrupt {
        /// Table name.
        table: &'static str,
        /// Row key.
        id: String,
        /// What could not be decoded.
        reason: String,
    },
    /// The database URL or options are unusable.
    #[error("invalid database configuration: {0}")]
    Config(String),
}

impl Error {
    /// True when trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}

/// Result alias for store calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One task's durable row.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// Task id.
    pub id: TaskId,
    /// What to run (stored encoded; secret references only, never values).
    pub spec: pb::TaskSpec,
    /// Current state.
    pub state: pb::TaskState,
    /// Fencing token of the current (or last) offer/lease.
    pub epoch: Epoch,
    /// Row version for compare-and-set; bumped by every write.
    pub version: u64,
    /// Delegate holding (or last holding) the task.
    pub delegate_id: Option<DelegateId>,
    /// Process exit code, when the task ran to an exit.
    pub exit_code: Option<i32>,
    /// Why the task ended as it did; empty while unfinished.
    pub reason: String,
    /// Values the task produced, as its delegate reported them (masked there).
    pub outputs: BTreeMap<String, String>,
    /// Classified failure (a `dray_shared::error_type` name); empty unless the
    /// task failed, was lost or expired.
    pub error_type: String,
    /// Unix ms of submission.
    pub created_ms: i64,
    /// Unix ms the current lease started (ack), if any.
    pub started_ms: Option<i64>,
    /// Unix ms of reaching a final state.
    pub finished_ms: Option<i64>,
    /// Unix ms after which a task still waiting for a delegate expires.
    pub queue_deadline_ms: i64,
}

/// A task row to write. `expected_version: None` inserts a new row (conflict if it
/// exists); `Some(v)` updates only if the stored row still has version `v`, and
/// the record's own `version` must be `v + 1`.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskWrite {
    /// The new row contents.
    pub record: TaskRecord,
    /// Version the stored row must have; `None` for an insert.
    pub expected_version: Option<u64>,
}

/// One line of task output, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// Task the line belongs to.
    pub task_id: TaskId,
    /// Per-task sequence number, from 1, assigned by the engine.
    pub seq: u64,
    /// Lease epoch that produced it.
    pub epoch: Epoch,
    /// stdout / stderr / system, as the `pb::LogStream` number.
    pub stream: i32,
    /// The (already masked) text.
    pub text: String,
    /// Unix ms at the delegate.
    pub at_ms: i64,
}

/// An append-only audit entry: who did what to which subject.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Unix ms.
    pub at_ms: i64,
    /// "admin", "delegate:<id>", "manager".
    pub actor: String,
    /// Verb, e.g. "task.submit", "delegate.revoke", "lease.stale_refused".
    pub action: String,
    /// What it was done to (an id or name).
    pub subject: String,
    /// Free-form detail.
    pub detail: String,
}

/// Everything one engine turn wants durable, committed all-or-nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Task inserts and compare-and-set updates.
    pub tasks: Vec<TaskWrite>,
    /// Log lines to append.
    pub logs: Vec<LogRecord>,
    /// Audit entries to append.
    pub audit: Vec<AuditRecord>,
    /// Payloads for the other replicas' `tasks` channel, sent when (and only
    /// if) the batch commits. Stores without replicas ignore them.
    pub notices: Vec<String>,
    /// The committing replica: a task it inserts already offered or running
    /// is its own from the start (nobody else could have seen it queued).
    pub owner: Option<String>,
}

impl Batch {
    /// True when there is nothing to commit.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.logs.is_empty() && self.audit.is_empty() && self.notices.is_empty()
    }
}

/// A delegate enrolment token. Only a SHA-256 hash of the secret is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    /// Unique name chosen by the operator.
    pub name: String,
    /// Hex SHA-256 of the token secret.
    pub token_hash: String,
    /// Scope granted to delegates enrolled with it.
    pub scope: pb::Scope,
    /// Unix ms after which it is refused.
    pub expires_ms: i64,
    /// Maximum enrolments; `None` = unlimited.
    pub max_uses: Option<u32>,
    /// Enrolments so far.
    pub uses: u32,
    /// Revoked by an operator.
    pub revoked: bool,
    /// Unix ms of creation.
    pub created_ms: i64,
}

/// Why a token was not accepted for enrolment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefused {
    /// No token has that secret.
    #[error("unknown delegate token")]
    Unknown,
    /// Revoked by an operator.
    #[error("delegate token {name:?} has been revoked")]
    Revoked {
        /// Token name.
        name: String,
    },
    /// Past its expiry.
    #[error("delegate token {name:?} expired")]
    Expired {
        /// Token name.
        name: String,
    },
    /// Already used `max_uses` times.
    #[error("delegate token {name:?} has been used {max} times, its limit")]
    UsedUp {
        /// Token name.
        name: String,
        /// Its limit.
        max: u32,
    },
}

/// An enrolled delegate.
#[derive(Debug, Clone, PartialEq)]
pub struct DelegateRecord {
    /// Identity, as in its certificate.
    pub id: DelegateId,
    /// Human name given at enrolment.
    pub name: String,
    /// Scope inherited from the enrolment token.
    pub scope: pb::Scope,
    /// Tags it last announced.
    pub tags: Vec<String>,
    /// Name of the token it enrolled with.
    pub token_name: String,
    /// Unix ms of enrolment.
    pub enrolled_ms: i64,
    /// Unix ms it was last connected.
    pub last_seen_ms: i64,
    /// Cut off by an operator, for good.
    pub revoked: bool,
}

/// The durable store. Chosen at start-up from the database URL.
#[async_trait]
pub trait Store:
    executions::ExecutionStore
    + entities::EntityStore
    + triggers::TriggerStore
    + replicas::ReplicaStore
    + Send
    + Sync
    + 'static
{
    /// Creates or upgrades the schema. Idempotent.
    async fn migrate(&self) -> Result<()>;

    /// Commits a batch in one transaction: all of it or none of it. A failed
    /// compare-and-set yields [`Error::Conflict`] and writes nothing. A task
    /// row written offered or running keeps its owner; any other state
    /// clears it (a queued task is anybody's to claim).
    async fn commit(&self, batch: &Batch) -> Result<()>;

    /// Every task not in a final state, oldest first (used at start-up).
    async fn load_unfinished(&self) -> Result<Vec<TaskRecord>>;

    /// One task.
    async fn get_task(&self, id: TaskId) -> Result<Option<TaskRecord>>;

    /// Tasks in any of `states` (all when empty), newest first, at most `limit`.
    async fn list_tasks(&self, states: &[pb::TaskState], limit: u32) -> Result<Vec<TaskRecord>>;

    /// Log lines of a task with `seq > after_seq`, in order, at most `limit`.
    async fn task_logs(&self, id: TaskId, after_seq: u64, limit: u32) -> Result<Vec<LogRecord>>;

    /// Highest log sequence number stored for a task (0 when none).
    async fn last_log_seq(&self, id: TaskId) -> Result<u64>;

    /// Stores a new token. [`Error::Conflict`] if the name is taken.
    async fn create_token(&self, token: &TokenRecord) -> Result<()>;

    /// Atomically checks the token with this hash and counts one use.
    async fn use_token(&self, token_hash: &str, now_ms: i64) -> Result<Result<TokenRecord, TokenRefused>>;

    /// Revokes a token by name; false if there is none.
    async fn revoke_token(&self, name: &str) -> Result<bool>;

    /// All tokens, by name.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>>;

    /// Stores a newly enrolled delegate.
    async fn insert_delegate(&self, delegate: &DelegateRecord) -> Result<()>;

    /// One delegate.
    async fn get_delegate(&self, id: DelegateId) -> Result<Option<DelegateRecord>>;

    /// All delegates, oldest enrolment first.
    async fn list_delegates(&self) -> Result<Vec<DelegateRecord>>;

    /// Marks a delegate revoked; false if there is none.
    async fn revoke_delegate(&self, id: DelegateId) -> Result<bool>;

    /// Records a connection: last-seen time and announced tags.
    async fn touch_delegate(&self, id: DelegateId, last_seen_ms: i64, tags: &[String]) -> Result<()>;

    /// Most recent audit entries, newest first.
    async fn list_audit(&self, limit: u32) -> Result<Vec<AuditRecord>>;
}

/// True for a PostgreSQL URL.
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Opens the store named by `url`: `sqlite://PATH` (created if missing) or
/// `postgres://…`. For PostgreSQL an optional `schema` puts every table in that
/// schema (created if missing), which tests use for isolation.
pub async fn open(url: &str, schema: Option<&str>) -> Result<std::sync::Arc<dyn Store>> {
    if is_postgres(url) {
        Ok(std::sync::Arc::new(postgres::PgStore::connect(url, schema).await?))
    } else if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(sqlite::SqliteStore::open(url).await?))
    } else {
        Err(Error::Config(format!(
            "unsupported database URL {url:?}: expected sqlite://PATH or postgres://…"
        )))
    }
}
