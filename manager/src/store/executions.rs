//! Durable pipeline executions: one row per execution (facts, plan, state) and
//! one row per plan node (its state), written by the pipeline engine in one
//! transaction per engine turn (group commit, like task rows).

use async_trait::async_trait;

use super::common::StoreRow;
use super::{Error, Result};

/// One execution's row.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionRecord {
    /// Execution id (UUIDv7 text).
    pub id: String,
    /// Account.
    pub account: String,
    /// Organisation.
    pub org: String,
    /// Project.
    pub project: String,
    /// Pipeline identifier.
    pub pipeline: String,
    /// Per-pipeline run number.
    pub sequence_id: u64,
    /// `ExecStatus` name.
    pub status: String,
    /// Execution facts (JSON of `pipeline::machine::Meta`).
    pub meta_json: String,
    /// The compiled plan (JSON), written once.
    pub plan_json: String,
    /// Execution-wide state (JSON of `pipeline::state::ExecState`).
    pub state_json: String,
    /// Unix ms of creation.
    pub created_ms: i64,
    /// Unix ms of the end.
    pub ended_ms: Option<i64>,
    /// Makes a repeated start (a trigger firing twice) a no-op.
    pub idempotency_key: Option<String>,
}

/// One node's state row.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRecord {
    /// Execution id.
    pub execution_id: String,
    /// Node index in the plan.
    pub idx: u32,
    /// `Status` name (for queries without decoding the JSON).
    pub status: String,
    /// JSON of `pipeline::state::NodeState`.
    pub state_json: String,
}

/// An execution row's changing part.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionUpdate {
    /// Execution id.
    pub id: String,
    /// New status name.
    pub status: String,
    /// New state JSON.
    pub state_json: String,
    /// End time, once over.
    pub ended_ms: Option<i64>,
}

/// Everything one pipeline-engine turn wants durable, all or nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecutionBatch {
    /// New executions (conflict if the id, sequence or idempotency key exists).
    pub inserts: Vec<ExecutionRecord>,
    /// Status/state changes of existing executions.
    pub updates: Vec<ExecutionUpdate>,
    /// Node rows to insert or replace.
    pub nodes: Vec<NodeRecord>,
    /// Service instances reported by deploy steps (replace the target's row).
    pub instances: Vec<InstancesRecord>,
}

impl ExecutionBatch {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.inserts.is_empty()
            && self.updates.is_empty()
            && self.nodes.is_empty()
            && self.instances.is_empty()
    }
}

/// The instances the latest deploy to one service + environment +
/// infrastructure left running.
#[derive(Debug, Clone, PartialEq)]
pub struct InstancesRecord {
    /// Account.
    pub account: String,
    /// Organisation.
    pub org: String,
    /// Project.
    pub project: String,
    /// Service identifier.
    pub service: String,
    /// Environment identifier.
    pub environment: String,
    /// Infrastructure definition identifier.
    pub infrastructure: String,
    /// JSON array of `dray_shared::task::Instance`.
    pub instances_json: String,
    /// The execution that reported them.
    pub execution_id: String,
    /// The reporting step's path.
    pub step: String,
    /// Unix ms of the report.
    pub updated_ms: i64,
}

/// Filter for listing instances (empty fields match everything).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstancesFilter {
    /// Only this service.
    pub service: Option<String>,
    /// Only this environment.
    pub environment: Option<String>,
}

/// Filter for listing executions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecutionFilter {
    /// Only this pipeline.
    pub pipeline: Option<String>,
    /// Only these statuses (empty = all).
    pub statuses: Vec<String>,
    /// At most this many, newest first.
    pub limit: u32,
}

/// Storage of executions; both stores implement it.
#[async_trait]
pub trait ExecutionStore: Send + Sync {
    /// Writes a batch in one transaction.
    async fn commit_executions(&self, batch: &ExecutionBatch) -> Result<()>;
    /// The highest sequence id used by a pipeline (0 if none).
    async fn max_sequence(&self, account: &str, org: &str, project: &str, pipeline: &str) -> Result<u64>;
    /// One execution.
    async fn get_execution(&self, id: &str) -> Result<Option<ExecutionRecord>>;
    /// The execution started with `key`, if any.
    async fn execution_by_key(&self, key: &str) -> Result<Option<ExecutionRecord>>;
    /// Executions, newest first (plan and state JSON included).
    async fn list_executions(&self, filter: &ExecutionFilter) -> Result<Vec<ExecutionRecord>>;
    /// Node rows of one execution, by index.
    async fn execution_nodes(&self, id: &str) -> Result<Vec<NodeRecord>>;
    /// Executions not yet over, oldest first.
    async fn unfinished_executions(&self) -> Result<Vec<ExecutionRecord>>;
    /// Instance rows, by service, environment, infrastructure.
    async fn list_instances(&self, filter: &InstancesFilter) -> Result<Vec<InstancesRecord>>;
}

/// Columns of `service_instances`, in [`instances_from_row`] order.
pub(super) const INSTANCES_COLUMNS: &str = "account, org, project, service, environment, infrastructure, \
    instances_json, execution_id, step, updated_ms";

/// Decodes a `service_instances` row (either backend).
pub(super) fn instances_from_row<R: StoreRow>(r: &R) -> Result<InstancesRecord> {
    Ok(InstancesRecord {
        account: col(r.text("account"))?,
        org: col(r.text("org"))?,
        project: col(r.text("project"))?,
        service: col(r.text("service"))?,
        environment: col(r.text("environment"))?,
        infrastructure: col(r.text("infrastructure"))?,
        instances_json: col(r.text("instances_json"))?,
        execution_id: col(r.text("execution_id"))?,
        step: col(r.text("step"))?,
        updated_ms: col(r.int64("updated_ms"))?,
    })
}

/// Columns of `executions`, in [`exec_from_row`] order.
pub(super) const EXEC_COLUMNS: &str = "id, account, org, project, pipeline, sequence_id, status, meta_json, \
    plan_json, state_json, created_ms, ended_ms, idempotency_key";

fn col<T>(r: std::result::Result<T, sqlx::Error>) -> Result<T> {
    r.map_err(super::common::db_error)
}

/// Decodes an `executions` row (either backend).
pub(super) fn exec_from_row<R: StoreRow>(r: &R) -> Result<ExecutionRecord> {
    let id = col(r.text("id"))?;
    let seq = col(r.int64("sequence_id"))?;
    Ok(ExecutionRecord {
        sequence_id: u64::try_from(seq).map_err(|_| Error::Corrupt {
            table: "executions",
            id: id.clone(),
            reason: format!("negative sequence_id {seq}"),
        })?,
        id,
        account: col(r.text("account"))?,
        org: col(r.text("org"))?,
        project: col(r.text("project"))?,
        pipeline: col(r.text("pipeline"))?,
        status: col(r.text("status"))?,
        meta_json: col(r.text("meta_json"))?,
        plan_json: col(r.text("plan_json"))?,
        state_json: col(r.text("state_json"))?,
        created_ms: col(r.int64("created_ms"))?,
        ended_ms: col(r.opt_int64("ended_ms"))?,
        idempotency_key: col(r.opt_text("idempotency_key"))?,
    })
}

/// Decodes an `execution_nodes` row (either backend).
pub(super) fn node_from_row<R: StoreRow>(r: &R) -> Result<NodeRecord> {
    Ok(NodeRecord {
        execution_id: col(r.text("execution_id"))?,
        idx: col(r.int64("idx"))? as u32,
        status: col(r.text("status"))?,
        state_json: col(r.text("state_json"))?,
    })
}

/// Implements [`ExecutionStore`] for a backend. The SQL is the same for both:
/// `QueryBuilder` writes each backend's placeholders, and the upsert syntax
/// (`ON CONFLICT … DO UPDATE … excluded`) is shared by SQLite and PostgreSQL.
macro_rules! impl_execution_store {
    ($store:ty, $db:ty, writer: $writer:ident, reader: $reader:ident) => {
        #[async_trait::async_trait]
        impl $crate::store::executions::ExecutionStore for $store {
            async fn commit_executions(
                &self,
                batch: &$crate::store::executions::ExecutionBatch,
            ) -> $crate::store::Result<()> {
                use $crate::store::common::{db_error, db_u64};
                if batch.is_empty() {
                    return Ok(());
                }
                let mut tx = self.$writer.begin().await.map_err(db_error)?;
                for e in &batch.inserts {
                    let mut q = sqlx::QueryBuilder::<$db>::new("INSERT INTO executions (");
                    q.push($crate::store::executions::EXEC_COLUMNS).push(") VALUES (");
                    let mut v = q.separated(", ");
                    v.push_bind(e.id.clone())
                        .push_bind(e.account.clone())
                        .push_bind(e.org.clone())
                        .push_bind(e.project.clone())
                        .push_bind(e.pipeline.clone())
                        .push_bind(db_u64(e.sequence_id))
                        .push_bind(e.status.clone())
                        .push_bind(e.meta_json.clone())
                        .push_bind(e.plan_json.clone())
                        .push_bind(e.state_json.clone())
                        .push_bind(e.created_ms)
                        .push_bind(e.ended_ms)
                        .push_bind(e.idempotency_key.clone());
                    q.push(")");
                    q.build().execute(&mut *tx).await.map_err(db_error)?;
                }
                for u in &batch.updates {
                    let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE executions SET status = ");
                    q.push_bind(u.status.clone())
                        .push(", state_json = ")
                        .push_bind(u.state_json.clone())
                        .push(", ended_ms = ")
                        .push_bind(u.ended_ms)
                        .push(" WHERE id = ")
                        .push_bind(u.id.clone());
                    q.build().execute(&mut *tx).await.map_err(db_error)?;
                }
                // Chunked multi-row upserts: one statement per few hundred nodes.
                for chunk in batch.nodes.chunks(500) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO execution_nodes (execution_id, idx, status, state_json) ",
                    );
                    q.push_values(chunk, |mut b, n| {
                        b.push_bind(n.execution_id.clone())
                            .push_bind(i64::from(n.idx))
                            .push_bind(n.status.clone())
                            .push_bind(n.state_json.clone());
                    });
                    q.push(
                        " ON CONFLICT (execution_id, idx) DO UPDATE SET status = excluded.status, \
                         state_json = excluded.state_json",
                    );
                    q.build().execute(&mut *tx).await.map_err(db_error)?;
                }
                for i in &batch.instances {
                    let mut q = sqlx::QueryBuilder::<$db>::new("INSERT INTO service_instances (");
                    q.push($crate::store::executions::INSTANCES_COLUMNS).push(") VALUES (");
                    let mut v = q.separated(", ");
                    v.push_bind(i.account.clone())
                        .push_bind(i.org.clone())
                        .push_bind(i.project.clone())
                        .push_bind(i.service.clone())
                        .push_bind(i.environment.clone())
                        .push_bind(i.infrastructure.clone())
                        .push_bind(i.instances_json.clone())
                        .push_bind(i.execution_id.clone())
                        .push_bind(i.step.clone())
                        .push_bind(i.updated_ms);
                    q.push(
                        ") ON CONFLICT (account, org, project, service, environment, infrastructure) \
                         DO UPDATE SET instances_json = excluded.instances_json, \
                         execution_id = excluded.execution_id, step = excluded.step, \
                         updated_ms = excluded.updated_ms",
                    );
                    q.build().execute(&mut *tx).await.map_err(db_error)?;
                }
                tx.commit().await.map_err(db_error)
            }

            async fn list_instances(
                &self,
                filter: &$crate::store::executions::InstancesFilter,
            ) -> $crate::store::Result<Vec<$crate::store::executions::InstancesRecord>> {
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT ");
                q.push($crate::store::executions::INSTANCES_COLUMNS)
                    .push(" FROM service_instances WHERE 1 = 1");
                if let Some(s) = &filter.service {
                    q.push(" AND service = ").push_bind(s.clone());
                }
                if let Some(e) = &filter.environment {
                    q.push(" AND environment = ").push_bind(e.clone());
                }
                q.push(" ORDER BY service, environment, infrastructure");
                let rows =
                    q.build().fetch_all(&self.$reader).await.map_err($crate::store::common::db_error)?;
                rows.iter().map($crate::store::executions::instances_from_row).collect()
            }

            async fn max_sequence(
                &self,
                account: &str,
                org: &str,
                project: &str,
                pipeline: &str,
            ) -> $crate::store::Result<u64> {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT MAX(sequence_id) FROM executions WHERE account = ",
                );
                q.push_bind(account.to_string())
                    .push(" AND org = ")
                    .push_bind(org.to_string())
                    .push(" AND project = ")
                    .push_bind(project.to_string())
                    .push(" AND pipeline = ")
                    .push_bind(pipeline.to_string());
                let v: Option<i64> = q
                    .build_query_scalar()
                    .fetch_one(&self.$reader)
                    .await
                    .map_err($crate::store::common::db_error)?;
                Ok(v.unwrap_or(0).max(0) as u64)
            }

            async fn get_execution(
                &self,
                id: &str,
            ) -> $crate::store::Result<Option<$crate::store::executions::ExecutionRecord>> {
                self.one_execution("id", id).await
            }

            async fn execution_by_key(
                &self,
                key: &str,
            ) -> $crate::store::Result<Option<$crate::store::executions::ExecutionRecord>> {
                self.one_execution("idempotency_key", key).await
            }

            async fn list_executions(
                &self,
                filter: &$crate::store::executions::ExecutionFilter,
            ) -> $crate::store::Result<Vec<$crate::store::executions::ExecutionRecord>> {
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT ");
                q.push($crate::store::executions::EXEC_COLUMNS).push(" FROM executions WHERE 1 = 1");
                if let Some(p) = &filter.pipeline {
                    q.push(" AND pipeline = ").push_bind(p.clone());
                }
                if !filter.statuses.is_empty() {
                    q.push(" AND status IN (");
                    let mut list = q.separated(", ");
                    for s in &filter.statuses {
                        list.push_bind(s.clone());
                    }
                    q.push(")");
                }
                let limit = if filter.limit == 0 { 100 } else { filter.limit };
                q.push(" ORDER BY created_ms DESC, id DESC LIMIT ").push_bind(i64::from(limit));
                let rows =
                    q.build().fetch_all(&self.$reader).await.map_err($crate::store::common::db_error)?;
                rows.iter().map($crate::store::executions::exec_from_row).collect()
            }

            async fn execution_nodes(
                &self,
                id: &str,
            ) -> $crate::store::Result<Vec<$crate::store::executions::NodeRecord>> {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT execution_id, idx, status, state_json FROM execution_nodes WHERE execution_id = ",
                );
                q.push_bind(id.to_string()).push(" ORDER BY idx");
                let rows =
                    q.build().fetch_all(&self.$reader).await.map_err($crate::store::common::db_error)?;
                rows.iter().map($crate::store::executions::node_from_row).collect()
            }

            async fn unfinished_executions(
                &self,
            ) -> $crate::store::Result<Vec<$crate::store::executions::ExecutionRecord>> {
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT ");
                q.push($crate::store::executions::EXEC_COLUMNS)
                    .push(" FROM executions WHERE status IN ('Running', 'Paused') ORDER BY created_ms, id");
                let rows =
                    q.build().fetch_all(&self.$reader).await.map_err($crate::store::common::db_error)?;
                rows.iter().map($crate::store::executions::exec_from_row).collect()
            }
        }

        impl $store {
            /// The execution whose `column` equals `value` (read on the writer so a
            /// just-committed idempotency key is always seen).
            async fn one_execution(
                &self,
                column: &'static str,
                value: &str,
            ) -> $crate::store::Result<Option<$crate::store::executions::ExecutionRecord>> {
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT ");
                q.push($crate::store::executions::EXEC_COLUMNS)
                    .push(" FROM executions WHERE ")
                    .push(column)
                    .push(" = ")
                    .push_bind(value.to_string());
                let row =
                    q.build().fetch_optional(&self.$writer).await.map_err($crate::store::common::db_error)?;
                row.as_ref().map($crate::store::executions::exec_from_row).transpose()
            }
        }
    };
}
pub(super) use impl_execution_store;
