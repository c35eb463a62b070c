//! `dray.v1.Pipelines`: run pipelines, read executions from the store
//! (committed truth), steer them through the pipeline engine, and stream
//! execution events.

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use dray_shared::pb::{self, pipelines_server::Pipelines};
use futures::Stream;
use serde_json::Value as Json;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::info;

use super::api_svc::normalise_scope;
use crate::pipeline::engine::{EngineError, ExecEvent, Handle, decode};
use crate::pipeline::machine::{CommandError, Execution, Meta};
use crate::pipeline::plan::{NodeIdx, ROOT};
use crate::pipeline::start::{self, EntitySource, RunRequest, StartError};
use crate::pipeline::state::{Decision, ExecState, Wait};
use crate::store::Store;
use crate::store::executions::{ExecutionFilter, ExecutionRecord, InstancesFilter, InstancesRecord};
use dray_shared::task::Instance;

/// Serves `dray.v1.Pipelines`.
pub struct PipelinesSvc {
    store: Arc<dyn Store>,
    engine: Handle,
}

impl PipelinesSvc {
    /// A service over `store` and the pipeline engine.
    pub fn new(store: Arc<dyn Store>, engine: Handle) -> Self {
        PipelinesSvc { store, engine }
    }
}

/// Entities of one scope, read from the store.
pub struct ScopedEntities {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Account / org / project.
    pub scope: pb::Scope,
}

#[async_trait]
impl EntitySource for ScopedEntities {
    async fn entity(&self, kind: &str, id: &str) -> Result<Option<Json>, String> {
        let s = &self.scope;
        let key = crate::store::entities::EntityKey::new(&s.account, &s.org, &s.project, kind, id);
        crate::store::entities::entity_json(&*self.store, &key).await.map_err(|e| e.to_string())
    }
}

/// Starts a pipeline run (shared by the API and triggers).
pub async fn run(store: &Arc<dyn Store>, engine: &Handle, req: RunRequest) -> Result<(String, u64), Status> {
    let src = ScopedEntities {
        store: store.clone(),
        scope: pb::Scope { account: req.account.clone(), org: req.org.clone(), project: req.project.clone() },
    };
    let pipeline = req.pipeline.clone();
    let new = start::prepare(&src, req).await.map_err(|e| match e {
        StartError::NotFound(m) => Status::not_found(m),
        StartError::Invalid(m) => Status::invalid_argument(m),
        StartError::Store(m) => Status::unavailable(m),
    })?;
    let (id, seq) = engine.create(new).await.map_err(engine_status)?;
    info!(execution = %id, %pipeline, sequence = seq, "execution started");
    Ok((id, seq))
}

/// Maps engine errors to gRPC statuses.
pub fn engine_status(e: EngineError) -> Status {
    match e {
        EngineError::NotFound(id) => {
            Status::not_found(format!("execution {id} not found or already finished"))
        }
        EngineError::Refused(CommandError::NotFound(m)) => Status::not_found(m),
        EngineError::Refused(CommandError::Invalid(m)) => Status::failed_precondition(m),
        EngineError::Refused(c @ CommandError::Finished(_)) => Status::failed_precondition(c.to_string()),
        EngineError::Store(e) => Status::unavailable(e.to_string()),
        EngineError::Stopped => Status::unavailable("the pipeline engine has stopped"),
    }
}

fn wait_name(w: &Option<Wait>) -> &'static str {
    match w {
        None => "",
        Some(Wait::Timer) => "timer",
        Some(Wait::Retry) => "retry",
        Some(Wait::Approval) => "approval",
        Some(Wait::Barrier { .. }) => "barrier",
        Some(Wait::Intervention { .. }) => "intervention",
    }
}

fn depth(e: &Execution, idx: NodeIdx) -> u32 {
    e.plan.ancestors(idx).count() as u32
}

/// Tree order: a node, then its children, then its rollback steps.
fn tree_order(e: &Execution) -> Vec<NodeIdx> {
    let mut out = vec![];
    let mut stack = vec![ROOT];
    while let Some(i) = stack.pop() {
        out.push(i);
        let n = e.plan.node(i);
        let kids: Vec<NodeIdx> =
            n.children.iter().chain(n.rollback.iter()).flat_map(|it| it.members().iter().copied()).collect();
        stack.extend(kids.into_iter().rev());
    }
    out
}

/// The API view of an execution.
pub fn execution_view(e: &Execution) -> pb::Execution {
    let nodes = tree_order(e)
        .into_iter()
        .map(|i| {
            let n = e.plan.node(i);
            let s = &e.nodes[i];
            pb::ExecutionNode {
                path: n.path.clone(),
                kind: n.kind_name().into(),
                identifier: n.identifier.clone(),
                name: n.name.clone(),
                step_type: n.step_type().unwrap_or_default().to_string(),
                status: s.status.as_str().into(),
                depth: depth(e, i),
                attempt: s.attempt,
                task_ids: s.tasks.clone(),
                delegate: s.delegate.clone().unwrap_or_default(),
                started_ms: s.started_ms.unwrap_or(0),
                ended_ms: s.ended_ms.unwrap_or(0),
                outputs_json: if s.outputs.is_empty() {
                    String::new()
                } else {
                    Json::Object(s.outputs.clone()).to_string()
                },
                failure_type: s.failure.as_ref().map(|f| f.error_type.clone()).unwrap_or_default(),
                failure_message: s.failure.as_ref().map(|f| f.message.clone()).unwrap_or_default(),
                notes: s.notes.clone(),
                waiting_for: wait_name(&s.wait).into(),
                rollback: n.in_rollback,
                rollback_state: format!("{:?}", s.rollback),
            }
        })
        .collect();
    pb::Execution { nodes, ..summary_view(&e.meta, &e.state, &e.plan.name) }
}

/// The execution-level part of the API view (no nodes).
fn summary_view(meta: &Meta, state: &ExecState, pipeline_name: &str) -> pb::Execution {
    pb::Execution {
        id: meta.id.clone(),
        scope: Some(meta.scope()),
        pipeline: meta.pipeline.clone(),
        pipeline_name: pipeline_name.to_string(),
        sequence_id: meta.sequence_id,
        status: state.status.as_str().into(),
        reason: state.reason.clone(),
        created_ms: meta.created_ms,
        ended_ms: state.ended_ms.unwrap_or(0),
        triggered_by: meta.triggered_by.clone(),
        trigger_json: meta.trigger.to_string(),
        inputs: meta.inputs.clone().into_iter().collect(),
        nodes: vec![],
    }
}

/// A list entry from a stored row: facts and state only. The plan is read just
/// for its name, without building its nodes.
fn row_summary(row: &ExecutionRecord) -> Option<pb::Execution> {
    #[derive(serde::Deserialize)]
    struct PlanName {
        name: String,
    }
    let meta: Meta = serde_json::from_str(&row.meta_json).ok()?;
    let state: ExecState = serde_json::from_str(&row.state_json).ok()?;
    let plan: PlanName = serde_json::from_str(&row.plan_json).ok()?;
    Some(summary_view(&meta, &state, &plan.name))
}

fn event_view(ev: &ExecEvent) -> pb::ExecutionEvent {
    pb::ExecutionEvent {
        execution_id: ev.execution_id.clone(),
        path: ev.event.path.clone(),
        kind: ev.event.kind.into(),
        status: ev.event.status.as_str().into(),
        message: ev.event.message.clone(),
        at_ms: ev.event.at_ms,
    }
}

impl PipelinesSvc {
    async fn load(&self, id: &str) -> Result<Execution, Status> {
        let row = self
            .store
            .get_execution(id)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
            .ok_or_else(|| Status::not_found(format!("execution {id} not found")))?;
        let nodes = self.store.execution_nodes(id).await.map_err(|e| Status::unavailable(e.to_string()))?;
        decode(&row, nodes).map_err(|e| Status::internal(format!("execution {id} is unreadable: {e}")))
    }

    async fn view(&self, id: &str) -> Result<Response<pb::Execution>, Status> {
        Ok(Response::new(execution_view(&self.load(id).await?)))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ExecutionEvent, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Pipelines for PipelinesSvc {
    async fn run_pipeline(
        &self,
        request: Request<pb::RunPipelineRequest>,
    ) -> Result<Response<pb::RunPipelineResponse>, Status> {
        let r = request.into_inner();
        if r.pipeline.trim().is_empty() {
            return Err(Status::invalid_argument("pipeline: required"));
        }
        let scope = normalise_scope(r.scope)?;
        // Entities live in org/project `default` unless named, as `dray apply` stores them.
        let model_scope = crate::model::Scope::new(&scope.org, &scope.project);
        let req = RunRequest {
            account: scope.account,
            org: model_scope.org,
            project: model_scope.project,
            pipeline: r.pipeline,
            input_sets: r.input_sets,
            set: r.set.into_iter().collect(),
            triggered_by: "admin".into(),
            ..Default::default()
        };
        let (execution_id, sequence_id) = run(&self.store, &self.engine, req).await?;
        Ok(Response::new(pb::RunPipelineResponse { execution_id, sequence_id }))
    }

    async fn get_execution(
        &self,
        request: Request<pb::GetExecutionRequest>,
    ) -> Result<Response<pb::Execution>, Status> {
        self.view(&request.into_inner().id).await
    }

    async fn list_executions(
        &self,
        request: Request<pb::ListExecutionsRequest>,
    ) -> Result<Response<pb::ListExecutionsResponse>, Status> {
        let r = request.into_inner();
        let filter = ExecutionFilter {
            pipeline: Some(r.pipeline).filter(|p| !p.is_empty()),
            statuses: r.statuses,
            limit: r.limit.min(1000),
        };
        let rows =
            self.store.list_executions(&filter).await.map_err(|e| Status::unavailable(e.to_string()))?;
        // Execution-level facts only; nodes come with GetExecution.
        let executions = rows.iter().filter_map(row_summary).collect();
        Ok(Response::new(pb::ListExecutionsResponse { executions }))
    }

    async fn list_instances(
        &self,
        request: Request<pb::ListInstancesRequest>,
    ) -> Result<Response<pb::ListInstancesResponse>, Status> {
        let r = request.into_inner();
        let filter = InstancesFilter {
            service: Some(r.service).filter(|s| !s.is_empty()),
            environment: Some(r.environment).filter(|e| !e.is_empty()),
        };
        let rows =
            self.store.list_instances(&filter).await.map_err(|e| Status::unavailable(e.to_string()))?;
        let groups = rows.into_iter().map(instance_group).collect();
        Ok(Response::new(pb::ListInstancesResponse { groups }))
    }

    async fn approve(&self, request: Request<pb::ApproveRequest>) -> Result<Response<pb::Execution>, Status> {
        let r = request.into_inner();
        let decision = Decision {
            approved: !r.reject,
            by: "admin".into(),
            comment: r.comment,
            inputs: r.inputs.into_iter().map(|(k, v)| (k, Json::String(v))).collect(),
            at_ms: dray_shared::clock::now_ms(),
        };
        let step = Some(r.step).filter(|s| !s.is_empty());
        let path = self.engine.approve(&r.id, step, decision).await.map_err(engine_status)?;
        info!(execution = %r.id, step = %path, approved = !r.reject, "approval recorded");
        self.view(&r.id).await
    }

    async fn intervene(
        &self,
        request: Request<pb::InterveneRequest>,
    ) -> Result<Response<pb::Execution>, Status> {
        let r = request.into_inner();
        let step = Some(r.step).filter(|s| !s.is_empty());
        self.engine.intervene(&r.id, step, r.action, "admin".into()).await.map_err(engine_status)?;
        self.view(&r.id).await
    }

    async fn abort_execution(
        &self,
        request: Request<pb::ExecutionRequest>,
    ) -> Result<Response<pb::Execution>, Status> {
        let r = request.into_inner();
        let reason = if r.reason.is_empty() { "aborted by admin".to_string() } else { r.reason };
        self.engine.abort(&r.id, reason).await.map_err(engine_status)?;
        self.view(&r.id).await
    }

    async fn pause_execution(
        &self,
        request: Request<pb::ExecutionRequest>,
    ) -> Result<Response<pb::Execution>, Status> {
        let r = request.into_inner();
        self.engine.pause(&r.id).await.map_err(engine_status)?;
        self.view(&r.id).await
    }

    async fn resume_execution(
        &self,
        request: Request<pb::ExecutionRequest>,
    ) -> Result<Response<pb::Execution>, Status> {
        let r = request.into_inner();
        self.engine.resume(&r.id).await.map_err(engine_status)?;
        self.view(&r.id).await
    }

    type WatchExecutionStream = EventStream;

    async fn watch_execution(
        &self,
        request: Request<pb::ExecutionRequest>,
    ) -> Result<Response<Self::WatchExecutionStream>, Status> {
        let id = request.into_inner().id;
        // Subscribe before reading, so nothing between the read and the live feed is lost.
        let mut live = self.engine.events();
        let exec = self.load(&id).await?;
        let (tx, rx) = mpsc::channel(256);
        let snapshot: Vec<pb::ExecutionEvent> = tree_order(&exec)
            .into_iter()
            .map(|i| pb::ExecutionEvent {
                execution_id: id.clone(),
                path: exec.plan.node(i).path.clone(),
                kind: exec.plan.node(i).kind_name().into(),
                status: exec.nodes[i].status.as_str().into(),
                message: String::new(),
                at_ms: exec.nodes[i].ended_ms.or(exec.nodes[i].started_ms).unwrap_or(0),
            })
            .chain(std::iter::once(pb::ExecutionEvent {
                execution_id: id.clone(),
                path: String::new(),
                kind: "execution".into(),
                status: exec.state.status.as_str().into(),
                message: exec.state.reason.clone(),
                at_ms: exec.state.ended_ms.unwrap_or(exec.meta.created_ms),
            }))
            .collect();
        let done = exec.is_final();
        tokio::spawn(async move {
            for ev in snapshot {
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            if done {
                return;
            }
            loop {
                match live.recv().await {
                    Ok(ev) if ev.execution_id == id => {
                        let end = ev.event.kind == "execution" && is_final_status(ev.event.status.as_str());
                        if tx.send(Ok(event_view(&ev))).await.is_err() || end {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let _ =
                            tx.send(Err(Status::data_loss(format!("missed {n} events; watch again")))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type WatchExecutionsStream = EventStream;

    async fn watch_executions(
        &self,
        _request: Request<pb::WatchExecutionsRequest>,
    ) -> Result<Response<Self::WatchExecutionsStream>, Status> {
        let mut live = self.engine.events();
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                match live.recv().await {
                    Ok(ev) => {
                        if tx.send(Ok(event_view(&ev))).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx.send(Err(Status::data_loss(format!("missed {n} events")))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn is_final_status(s: &str) -> bool {
    matches!(s, "Succeeded" | "Failed" | "Aborted")
}

/// The wire form of an instances row; rows are written by the engine from
/// validated reports, so a row that no longer decodes lists no instances.
fn instance_group(r: InstancesRecord) -> pb::InstanceGroup {
    let instances: Vec<Instance> = serde_json::from_str(&r.instances_json).unwrap_or_default();
    pb::InstanceGroup {
        scope: Some(pb::Scope { account: r.account, org: r.org, project: r.project }),
        service: r.service,
        environment: r.environment,
        infrastructure: r.infrastructure,
        execution_id: r.execution_id,
        step: r.step,
        updated_ms: r.updated_ms,
        instances: instances
            .into_iter()
            .map(|i| pb::ServiceInstance {
                name: i.name,
                host: i.host,
                namespace: i.namespace,
                version: i.version,
                status: i.status,
                details: i.details.into_iter().collect(),
            })
            .collect(),
    }
}
