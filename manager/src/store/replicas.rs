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

use super::Result;
use dray_shared::TaskId;

/// One manager replica's registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRecord {
    /// Replica id (chosen at start, unique per process).
    pub id: String,
    /// Where other replicas reach its gRPC API.
    pub grpc_url: String,
    /// Unix ms of its start.
    pub started_ms: i64,
    /// Unix ms of its latest heartbeat.
    pub heartbeat_ms: i64,
}

impl ReplicaRecord {
    /// True when its heartbeat is older than `ttl_ms` at `now_ms`.
    pub fn is_dead(&self, now_ms: i64, ttl_ms: i64) -> bool {
        now_ms - self.heartbeat_ms > ttl_ms
    }
}

/// Storage of replicas and task ownership; both stores implement it.
#[async_trait]
pub trait ReplicaStore: Send + Sync {
    /// Registers the replica or refreshes its heartbeat (and URL).
    async fn heartbeat_replica(&self, r: &ReplicaRecord) -> Result<()>;
    /// Every registered replica, by id.
    async fn replicas(&self) -> Result<Vec<ReplicaRecord>>;
    /// Forgets a replica (after its work was adopted).
    async fn remove_replica(&self, id: &str) -> Result<()>;
    /// Claims for `owner` those of `ids` that are still queued and unowned;
    /// returns the ones it got. Never blocks on rows another claimer holds.
    async fn claim_tasks(&self, owner: &str, ids: &[TaskId]) -> Result<Vec<TaskId>>;
    /// Gives back `owner`'s claim on `ids` (e.g. a rejected offer re-queued).
    async fn release_tasks(&self, owner: &str, ids: &[TaskId]) -> Result<u64>;
    /// Moves every unfinished task owned by `from` to `to`; returns how many.
    async fn adopt_tasks(&self, from: &str, to: &str) -> Result<u64>;
    /// The owner of a task, if it has one.
    async fn task_owner(&self, id: TaskId) -> Result<Option<String>>;
}

/// Implements [`ReplicaStore`] for a backend; `$lock` is the row-lock clause
/// of the claim's inner select (empty where the backend has a single writer).
macro_rules! impl_replica_store {
    ($store:ty, $db:ty, writer: $writer:ident, reader: $reader:ident, lock: $lock:literal) => {
        #[async_trait::async_trait]
        impl $crate::store::replicas::ReplicaStore for $store {
            async fn heartbeat_replica(
                &self,
                r: &$crate::store::replicas::ReplicaRecord,
            ) -> $crate::store::Result<()> {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO replicas (id, grpc_url, started_ms, heartbeat_ms) VALUES (",
                );
                let mut v = q.separated(", ");
                v.push_bind(r.id.clone())
                    .push_bind(r.grpc_url.clone())
                    .push_bind(r.started_ms)
                    .push_bind(r.heartbeat_ms);
                q.push(
                    ") ON CONFLICT (id) DO UPDATE SET grpc_url = excluded.grpc_url, \
                     heartbeat_ms = excluded.heartbeat_ms",
                );
                q.build().execute(&self.$writer).await.map_err($crate::store::common::db_error)?;
                Ok(())
            }

            async fn replicas(&self) -> $crate::store::Result<Vec<$crate::store::replicas::ReplicaRecord>> {
                use sqlx::Row as _;
                let rows =
                    sqlx::query("SELECT id, grpc_url, started_ms, heartbeat_ms FROM replicas ORDER BY id")
                        .fetch_all(&self.$reader)
                        .await
                        .map_err($crate::store::common::db_error)?;
                rows.iter()
                    .map(|r| {
                        Ok($crate::store::replicas::ReplicaRecord {
                            id: r.try_get("id").map_err($crate::store::common::db_error)?,
                            grpc_url: r.try_get("grpc_url").map_err($crate::store::common::db_error)?,
                            started_ms: r.try_get("started_ms").map_err($crate::store::common::db_error)?,
                            heartbeat_ms: r
                                .try_get("heartbeat_ms")
                                .map_err($crate::store::common::db_error)?,
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

            async fn claim_tasks(
                &self,
                owner: &str,
                ids: &[dray_shared::TaskId],
            ) -> $crate::store::Result<Vec<dray_shared::TaskId>> {
                use sqlx::Row as _;
                if ids.is_empty() {
                    return Ok(vec![]);
                }
                let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE tasks SET owner = ");
                q.push_bind(owner.to_string())
                    .push(" WHERE id IN (SELECT id FROM tasks WHERE owner IS NULL AND state = ")
                    .push_bind(dray_shared::pb::TaskState::Queued as i32)
                    .push(" AND id IN (");
                let mut list = q.separated(", ");
                for id in ids {
                    list.push_bind(id.to_string());
                }
                q.push(")").push($lock).push(") RETURNING id");
                let rows =
                    q.build().fetch_all(&self.$writer).await.map_err($crate::store::common::db_error)?;
                rows.iter()
                    .map(|r| {
                        let id: String = r.try_get("id").map_err($crate::store::common::db_error)?;
                        id.parse().map_err(|e: dray_shared::ids::InvalidId| $crate::store::Error::Corrupt {
                            table: "tasks",
                            id: id.clone(),
                            reason: e.to_string(),
                        })
                    })
                    .collect()
            }

            async fn release_tasks(
                &self,
                owner: &str,
                ids: &[dray_shared::TaskId],
            ) -> $crate::store::Result<u64> {
                if ids.is_empty() {
                    return Ok(0);
                }
                let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE tasks SET owner = NULL WHERE owner = ");
                q.push_bind(owner.to_string()).push(" AND id IN (");
                let mut list = q.separated(", ");
                for id in ids {
                    list.push_bind(id.to_string());
                }
                q.push(")");
                let done = q.build().execute(&self.$writer).await.map_err($crate::store::common::db_error)?;
                Ok(done.rows_affected())
            }

            async fn adopt_tasks(&self, from: &str, to: &str) -> $crate::store::Result<u64> {
                let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE tasks SET owner = ");
                q.push_bind(to.to_string())
                    .push(" WHERE owner = ")
                    .push_bind(from.to_string())
                    .push(" AND state IN (")
                    .push_bind(dray_shared::pb::TaskState::Queued as i32)
                    .push(", ")
                    .push_bind(dray_shared::pb::TaskState::Offered as i32)
                    .push(", ")
                    .push_bind(dray_shared::pb::TaskState::Running as i32)
                    .push(")");
                let done = q.build().execute(&self.$writer).await.map_err($crate::store::common::db_error)?;
                Ok(done.rows_affected())
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
        }
    };
}
pub(super) use impl_replica_store;
