//! Building blocks for several manager replicas on one database (see
//! `docs/ha-design.md`): the replica registry with heartbeats, and task
//! ownership — claiming queued tasks so exactly one replica offers each,
//! releasing them, and adopting the tasks of a replica that died.
//!
//! Claims take row locks and skip rows another replica holds locked
//! (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite has one writer, so its
//! single `UPDATE` is already exclusive), and only succeed on rows that are
//! still queued and unowned, so two replicas can never both win a task.

use async_trait::async_trait;

use super::{Result, TaskRecord};
use dray_shared::{Epoch, TaskId};

/// One manager replica's registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRecord {
    /// Replica id (chosen at start, unique per process).
    pub id: String,
    /// Where other replicas reach its gRPC API.
    pub grpc_url: String,
    /// Where other replicas reach its HTTP endpoints (webhooks); may be empty.
    pub http_url: String,
    /// Unix ms of its start.
    pub started_ms: i64,
    /// Unix ms of its latest heartbeat.
    pub heartbeat_ms: i64,
    /// Unix ms it became the leader, if it ever did.
    pub leader_ms: Option<i64>,
}

impl ReplicaRecord {
    /// True when its heartbeat is older than `ttl_ms` at `now_ms`.
    pub fn is_dead(&self, now_ms: i64, ttl_ms: i64) -> bool {
        now_ms - self.heartbeat_ms > ttl_ms
    }
}

/// A task a claim won, with the row's current version and epoch (a replica's
/// copy of a queued task may be older than the row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Claimed {
    /// The task.
    pub id: TaskId,
    /// Its row version now.
    pub version: u64,
    /// Its epoch now.
    pub epoch: Epoch,
}

/// What adopting a dead replica's tasks did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Adopted {
    /// Running tasks now owned by the adopter (it must load them).
    pub running: Vec<TaskId>,
    /// Queued and offered tasks put back in the queue without an owner (an
    /// offer dies with its replica; nothing ran before a grant).
    pub requeued: Vec<TaskId>,
}

/// Storage of replicas and task ownership; both stores implement it.
#[async_trait]
pub trait ReplicaStore: Send + Sync {
    /// Registers the replica or refreshes its heartbeat (and URLs).
    async fn heartbeat_replica(&self, r: &ReplicaRecord) -> Result<()>;
    /// Every registered replica, by id.
    async fn replicas(&self) -> Result<Vec<ReplicaRecord>>;
    /// Forgets a replica (after its work was adopted).
    async fn remove_replica(&self, id: &str) -> Result<()>;
    /// Records that `id` leads since `at_ms`.
    async fn mark_leader(&self, id: &str, at_ms: i64) -> Result<()>;
    /// Claims for `owner` those of `ids` that are still queued and unowned;
    /// returns the ones it got. Never blocks on rows another claimer holds.
    async fn claim_tasks(&self, owner: &str, ids: &[TaskId]) -> Result<Vec<Claimed>>;
    /// Gives back `owner`'s claim on `ids` (e.g. a lease handed to another replica).
    async fn release_tasks(&self, owner: &str, ids: &[TaskId]) -> Result<u64>;
    /// Takes over every unfinished task owned by `from` (a dead replica) for
    /// `to`, in one statement: running tasks move to `to`, offered ones go back
    /// to the queue (a version bump), queued ones lose their owner.
    async fn adopt_tasks(&self, from: &str, to: &str) -> Result<Adopted>;
    /// Takes one running task for `to` if its owner is still `from` (None: no
    /// owner); false when somebody else got there first or it is not running.
    async fn take_running(&self, id: TaskId, from: Option<&str>, to: &str) -> Result<bool>;
    /// Takes over offered and running tasks among `ids` that have no owner
    /// (their owner let go, or they predate replicas) like [`adopt_tasks`].
    ///
    /// [`adopt_tasks`]: ReplicaStore::adopt_tasks
    async fn adopt_unowned(&self, ids: &[TaskId], to: &str) -> Result<Adopted>;
    /// Offered and running tasks without an owner.
    async fn unowned_live(&self) -> Result<Vec<TaskId>>;
    /// Every replica that owns an unfinished task.
    async fn task_owners(&self) -> Result<Vec<String>>;
    /// The owner of a task, if it has one.
    async fn task_owner(&self, id: TaskId) -> Result<Option<String>>;
    /// Queued tasks nobody owns, oldest first, at most `limit`.
    async fn queued_unowned(&self, limit: u32) -> Result<Vec<TaskRecord>>;
    /// The rows of `ids` that exist.
    async fn tasks_by_ids(&self, ids: &[TaskId]) -> Result<Vec<TaskRecord>>;
}

/// `UPDATE tasks SET …` of an adoption by `to`: running tasks become its own,
/// offered ones go back to the queue (a version bump, no delegate), queued ones
/// lose their owner. SET expressions all read the old row, so `state` in them
/// is the state before the statement. The caller adds the WHERE clause.
pub(super) fn adoption<'a, DB>(to: &str) -> sqlx::QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    i32: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    use dray_shared::pb::TaskState::{Offered, Queued, Running};
    let mut q = sqlx::QueryBuilder::<DB>::new("UPDATE tasks SET owner = CASE WHEN state = ");
    q.push_bind(Running as i32)
        .push(" THEN ")
        .push_bind(to.to_string())
        .push(" ELSE NULL END, version = CASE WHEN state = ")
        .push_bind(Offered as i32)
        .push(" THEN version + 1 ELSE version END, delegate_id = CASE WHEN state = ")
        .push_bind(Offered as i32)
        .push(" THEN NULL ELSE delegate_id END, state = CASE WHEN state = ")
        .push_bind(Offered as i32)
        .push(" THEN ")
        .push_bind(Queued as i32)
        .push(" ELSE state END");
    q
}

/// Binds the unfinished states a replica may own: offered and running, and
/// queued too with `queued`.
pub(super) fn live_states<'a, DB>(q: &mut sqlx::QueryBuilder<'a, DB>, queued: bool)
where
    DB: sqlx::Database,
    i32: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    use dray_shared::pb::TaskState::{Offered, Queued, Running};
    let mut list = q.separated(", ");
    if queued {
        list.push_bind(Queued as i32);
    }
    list.push_bind(Offered as i32).push_bind(Running as i32);
}

/// Reads the `RETURNING id, state` rows of an adoption.
pub(super) fn adopted<R: sqlx::Row>(rows: Result<Vec<R>, sqlx::Error>) -> Result<Adopted>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let rows = rows.map_err(super::common::db_error)?;
    let mut adopted = Adopted::default();
    for r in &rows {
        let id: String = r.try_get(0).map_err(super::common::db_error)?;
        let state: i32 = r.try_get(1).map_err(super::common::db_error)?;
        if state == dray_shared::pb::TaskState::Running as i32 {
            adopted.running.push(stored_task_id(id)?);
        } else {
            adopted.requeued.push(stored_task_id(id)?);
        }
    }
    Ok(adopted)
}

/// Pushes ` IN (id, id, …)` with every id bound.
pub(super) fn push_ids<'a, DB>(q: &mut sqlx::QueryBuilder<'a, DB>, ids: &[TaskId])
where
    DB: sqlx::Database,
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    q.push(" IN (");
    let mut list = q.separated(", ");
    for id in ids {
        list.push_bind(id.to_string());
    }
    q.push(")");
}

/// Parses a task id read back from the store.
pub(super) fn stored_task_id(id: String) -> Result<TaskId> {
    id.parse().map_err(|e: dray_shared::ids::InvalidId| super::Error::Corrupt {
        table: "tasks",
        id: id.clone(),
        reason: e.to_string(),
    })
}

/// Implements [`ReplicaStore`] for a backend; `$lock` is the row-lock clause
/// of the claim's inner select (empty where the backend has a single writer),
/// `$async_claim` whether a claim may commit without waiting for its flush.
///
/// A claim needs no flush of its own (PostgreSQL `synchronous_commit = off`
/// for its transaction): nothing is offered until the turn's batch commits,
/// and that durable commit flushes the log up to and including the claim. A
/// crash before then loses both, and nobody was told anything.
macro_rules! impl_replica_store {
    (
        $store:ty, $db:ty, writer: $writer:ident, reader: $reader:ident, lock: $lock:literal,
        async_claim: $async_claim:literal
    ) => {
        #[async_trait::async_trait]
        impl $crate::store::replicas::ReplicaStore for $store {
            async fn heartbeat_replica(
                &self,
                r: &$crate::store::replicas::ReplicaRecord,
            ) -> $crate::store::Result<()> {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO replicas (id, grpc_url, http_url, started_ms, heartbeat_ms, leader_ms) VALUES (",
                );
                let mut v = q.separated(", ");
                v.push_bind(r.id.clone())
                    .push_bind(r.grpc_url.clone())
                    .push_bind(r.http_url.clone())
                    .push_bind(r.started_ms)
                    .push_bind(r.heartbeat_ms)
                    .push_bind(r.leader_ms);
                q.push(
                    ") ON CONFLICT (id) DO UPDATE SET grpc_url = excluded.grpc_url, \
                     http_url = excluded.http_url, heartbeat_ms = excluded.heartbeat_ms",
                );
                q.build().execute(&self.$writer).await.map_err($crate::store::common::db_error)?;
                Ok(())
            }

            async fn replicas(&self) -> $crate::store::Result<Vec<$crate::store::replicas::ReplicaRecord>> {
                use sqlx::Row as _;
                use $crate::store::common::db_error;
                let rows = sqlx::query(
                    "SELECT id, grpc_url, http_url, started_ms, heartbeat_ms, leader_ms FROM replicas ORDER BY id",
                )
                .fetch_all(&self.$reader)
                .await
                .map_err(db_error)?;
                rows.iter()
                    .map(|r| {
                        Ok($crate::store::replicas::ReplicaRecord {
                            id: r.try_get("id").map_err(db_error)?,
                            grpc_url: r.try_get("grpc_url").map_err(db_error)?,
                            http_url: r.try_get("http_url").map_err(db_error)?,
                            started_ms: r.try_get("started_ms").map_err(db_error)?,
                            heartbeat_ms: r.try_get("heartbeat_ms").map_err(db_error)?,
                            leader_ms: r.try_get("leader_ms").map_err(db_error)?,
                        })
                    })
                    .collect()
            }

            async fn remove_replica(&self, id: &str) -> $crate::store::Result<()> {
                let mut q = sqlx::QueryBuilder::<$db>::new("DELETE FROM replicas WHERE id = ");
                q.push_bind(id.to_string());
                q.build().execute(&self.$writer).await.map_err($crate::store::common::db_error)?;
                Ok(())
            }

            async fn mark_leader(&self, id: &str, at_ms: i64) -> $crate::store::Result<()> {
                let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE replicas SET leader_ms = ");
                q.push_bind(at_ms).push(" WHERE id = ").push_bind(id.to_string());
                q.build().execute(&self.$writer).await.map_err($crate::store::common::db_error)?;
                Ok(())
            }

            async fn claim_tasks(
                &self,
                owner: &str,
                ids: &[dray_shared::TaskId],
            ) -> $crate::store::Result<Vec<$crate::store::replicas::Claimed>> {
                use sqlx::Row as _;
                use $crate::store::common::db_error;
                if ids.is_empty() {
                    return Ok(vec![]);
                }
                let mut tx = self.$writer.begin().await.map_err(db_error)?;
                if $async_claim {
                    sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await.map_err(db_error)?;
                }
                let mut rows = vec![];
                for chunk in ids.chunks(5_000) {
                    // `owner = me` too: a claim retried after its commit's answer was lost wins again.
                    let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE tasks SET owner = ");
                    q.push_bind(owner.to_string())
                        .push(" WHERE id IN (SELECT id FROM tasks WHERE (owner IS NULL OR owner = ")
                        .push_bind(owner.to_string())
                        .push(") AND state = ")
                        .push_bind(dray_shared::pb::TaskState::Queued as i32)
                        .push(" AND id");
                    $crate::store::replicas::push_ids(&mut q, chunk);
                    q.push($lock).push(") RETURNING id, version, epoch");
                    rows.extend(q.build().persistent(false).fetch_all(&mut *tx).await.map_err(db_error)?);
                }
                tx.commit().await.map_err(db_error)?;
                rows.iter()
                    .map(|r| {
                        let version: i64 = r.try_get("version").map_err(db_error)?;
                        let epoch: i64 = r.try_get("epoch").map_err(db_error)?;
                        Ok($crate::store::replicas::Claimed {
                            id: $crate::store::replicas::stored_task_id(r.try_get("id").map_err(db_error)?)?,
                            version: version.max(0) as u64,
                            epoch: dray_shared::Epoch(epoch.max(0) as u64),
                        })
                    })
                    .collect()
            }

            async fn release_tasks(
                &self,
                owner: &str,
                ids: &[dray_shared::TaskId],
            ) -> $crate::store::Result<u64> {
                let mut released = 0;
                for chunk in ids.chunks(5_000) {
                    let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE tasks SET owner = NULL WHERE owner = ");
                    q.push_bind(owner.to_string()).push(" AND id");
                    $crate::store::replicas::push_ids(&mut q, chunk);
                    let done = q
                        .build()
                        .persistent(false)
                        .execute(&self.$writer)
                        .await
                        .map_err($crate::store::common::db_error)?;
                    released += done.rows_affected();
                }
                Ok(released)
            }

            async fn adopt_tasks(
                &self,
                from: &str,
                to: &str,
            ) -> $crate::store::Result<$crate::store::replicas::Adopted> {
                let mut q = $crate::store::replicas::adoption::<$db>(to);
                q.push(" WHERE owner = ").push_bind(from.to_string()).push(" AND state IN (");
                $crate::store::replicas::live_states(&mut q, true);
                $crate::store::replicas::adopted(q.push(") RETURNING id, state").build().fetch_all(&self.$writer).await)
            }

            async fn adopt_unowned(
                &self,
                ids: &[dray_shared::TaskId],
                to: &str,
            ) -> $crate::store::Result<$crate::store::replicas::Adopted> {
                let mut all = $crate::store::replicas::Adopted::default();
                for chunk in ids.chunks(5_000) {
                    let mut q = $crate::store::replicas::adoption::<$db>(to);
                    q.push(" WHERE owner IS NULL AND state IN (");
                    $crate::store::replicas::live_states(&mut q, false);
                    q.push(") AND id");
                    $crate::store::replicas::push_ids(&mut q, chunk);
                    q.push(" RETURNING id, state");
                    let one = $crate::store::replicas::adopted(q.build().persistent(false).fetch_all(&self.$writer).await)?;
                    all.running.extend(one.running);
                    all.requeued.extend(one.requeued);
                }
                Ok(all)
            }

            async fn unowned_live(&self) -> $crate::store::Result<Vec<dray_shared::TaskId>> {
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT id FROM tasks WHERE owner IS NULL AND state IN (");
                $crate::store::replicas::live_states(&mut q, false);
                q.push(")");
                let ids: Vec<String> = q
                    .build_query_scalar()
                    .fetch_all(&self.$reader)
                    .await
                    .map_err($crate::store::common::db_error)?;
                ids.into_iter().map($crate::store::replicas::stored_task_id).collect()
            }

            async fn task_owners(&self) -> $crate::store::Result<Vec<String>> {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT DISTINCT owner FROM tasks WHERE owner IS NOT NULL AND state IN (",
                );
                $crate::store::replicas::live_states(&mut q, true);
                q.push(")");
                q.build_query_scalar().fetch_all(&self.$reader).await.map_err($crate::store::common::db_error)
            }

            async fn take_running(
                &self,
                id: dray_shared::TaskId,
                from: Option<&str>,
                to: &str,
            ) -> $crate::store::Result<bool> {
                let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE tasks SET owner = ");
                q.push_bind(to.to_string())
                    .push(" WHERE id = ")
                    .push_bind(id.to_string())
                    .push(" AND state = ")
                    .push_bind(dray_shared::pb::TaskState::Running as i32);
                match from {
                    Some(from) => q.push(" AND owner = ").push_bind(from.to_string()),
                    None => q.push(" AND owner IS NULL"),
                };
                let done = q.build().execute(&self.$writer).await.map_err($crate::store::common::db_error)?;
                Ok(done.rows_affected() == 1)
            }

            async fn task_owner(&self, id: dray_shared::TaskId) -> $crate::store::Result<Option<String>> {
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT owner FROM tasks WHERE id = ");
                q.push_bind(id.to_string());
                let owner: Option<Option<String>> = q
                    .build_query_scalar()
                    .fetch_optional(&self.$writer)
                    .await
                    .map_err($crate::store::common::db_error)?;
                Ok(owner.flatten())
            }

            async fn queued_unowned(&self, limit: u32) -> $crate::store::Result<Vec<$crate::store::TaskRecord>> {
                let mut q = sqlx::QueryBuilder::<$db>::new(concat!(
                    "SELECT ",
                    $crate::store::common::task_columns!(),
                    " FROM tasks WHERE owner IS NULL AND state = "
                ));
                q.push_bind(dray_shared::pb::TaskState::Queued as i32)
                    .push(" ORDER BY created_ms, id LIMIT ")
                    .push_bind(i64::from(limit));
                let rows = q.build().fetch_all(&self.$reader).await.map_err($crate::store::common::db_error)?;
                rows.iter().map($crate::store::common::task_from_row).collect()
            }

            async fn tasks_by_ids(
                &self,
                ids: &[dray_shared::TaskId],
            ) -> $crate::store::Result<Vec<$crate::store::TaskRecord>> {
                let mut out = Vec::with_capacity(ids.len());
                for chunk in ids.chunks(1000) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(concat!(
                        "SELECT ",
                        $crate::store::common::task_columns!(),
                        " FROM tasks WHERE id"
                    ));
                    $crate::store::replicas::push_ids(&mut q, chunk);
                    let rows = q
                        .build()
                        .persistent(false)
                        .fetch_all(&self.$reader)
                        .await
                        .map_err($crate::store::common::db_error)?;
                    for r in &rows {
                        out.push($crate::store::common::task_from_row(r)?);
                    }
                }
                Ok(out)
            }
        }
    };
}
pub(super) use impl_replica_store;
