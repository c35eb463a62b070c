//! The public API (`dray.v1.Api`) for the CLI and integrations. Every call needs
//! the admin bearer token (checked by [`bearer_check`]). Reads come from the store
//! (committed truth) joined with the engine's live view; writes go through the
//! engine, which answers once they are durable.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dray_shared::clock::now_ms;
use dray_shared::pb::{self, api_server::Api};
use dray_shared::{DelegateId, TaskId, task};
use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{info, instrument};

use super::status::invalid;
use crate::auth;
use crate::lease::engine::{CancelOutcome, Handle};
use crate::store::{AuditRecord, Batch, DelegateRecord, LogRecord, Store, TaskRecord, TokenRecord};

/// The account every scope lives in until multi-account support exists.
pub const DEFAULT_ACCOUNT: &str = "default";
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Serves `dray.v1.Api`.
pub struct ApiSvc {
    store: Arc<dyn Store>,
    engine: Handle,
    entities: super::entities_svc::EntitiesSvc,
    /// This process's replica id (to mark it in `ListReplicas`).
    replica: String,
    /// The other replicas, for views that span them.
    peers: super::peers::Peers,
}

/// A tonic interceptor accepting only `authorization: Bearer <admin token>`.
pub fn bearer_check(admin_token: String) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        let presented = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <token>`"))?;
        if auth::token_matches(presented.trim(), &admin_token) {
            Ok(req)
        } else {
            Err(Status::unauthenticated("invalid API token"))
        }
    }
}

fn parse_task_id(s: &str) -> Result<TaskId, Status> {
    s.parse().map_err(|e| invalid("id", e))
}

/// Scope of a request: default account, `org/project` validated.
pub fn normalise_scope(scope: Option<pb::Scope>) -> Result<pb::Scope, Status> {
    let mut s = scope.unwrap_or_default();
    if s.account.is_empty() {
        s.account = DEFAULT_ACCOUNT.into();
    }
    if !s.project.is_empty() && s.org.is_empty() {
        return Err(invalid("scope", "a project needs an organisation (ORG/PROJECT)"));
    }
    for part in [&s.account, &s.org, &s.project] {
        if part.chars().any(|c| c == '/' || c.is_whitespace()) {
            return Err(invalid("scope", format!("{part:?} may not contain '/' or spaces")));
        }
    }
    Ok(s)
}

fn to_pb(r: TaskRecord, names: &HashMap<DelegateId, String>) -> pb::Task {
    pb::Task {
        id: r.id.to_string(),
        delegate: r.delegate_id.and_then(|d| names.get(&d).cloned()).unwrap_or_default(),
        delegate_id: r.delegate_id.map(|d| d.to_string()).unwrap_or_default(),
        spec: Some(r.spec),
        state: r.state as i32,
        epoch: r.epoch.0,
        exit_code: r.exit_code.unwrap_or_default(),
        has_exit_code: r.exit_code.is_some(),
        reason: r.reason,
        created_ms: r.created_ms,
        started_ms: r.started_ms.unwrap_or_default(),
        finished_ms: r.finished_ms.unwrap_or_default(),
        outputs: r.outputs.into_iter().collect(),
        error_type: r.error_type,
    }
}

fn log_entry(l: LogRecord) -> pb::TaskLogEntry {
    pb::TaskLogEntry {
        seq: l.seq,
        epoch: l.epoch.0,
        line: Some(pb::LogLine { stream: l.stream, text: l.text, at_ms: l.at_ms }),
        final_state: 0,
    }
}

impl ApiSvc {
    /// Checks applied pipelines' steps against `step_types` instead of the built-in ones.
    pub fn with_step_types(mut self, step_types: crate::model::StepTypes) -> Self {
        self.entities = super::entities_svc::EntitiesSvc::new(self.store.clone(), step_types);
        self
    }

    /// An API over `store` and `engine`.
    pub fn new(
        store: Arc<dyn Store>,
        engine: Handle,
        replica: String,
        relay: crate::cluster::forward::Relay,
    ) -> Self {
        let entities =
            super::entities_svc::EntitiesSvc::new(store.clone(), crate::model::StepTypes::builtin());
        let peers = super::peers::Peers::new(store.clone(), replica.clone(), relay);
        ApiSvc { store, engine, entities, replica, peers }
    }

    async fn names(&self) -> Result<HashMap<DelegateId, String>, Status> {
        Ok(self.store.list_delegates().await?.into_iter().map(|d| (d.id, d.name)).collect())
    }

    async fn task(&self, id: TaskId) -> Result<pb::Task, Status> {
        let r = self
            .store
            .get_task(id)
            .await?
            .ok_or_else(|| Status::not_found(format!("task {id} not found")))?;
        // One task needs one name, not the whole delegate table.
        let mut names = HashMap::new();
        if let Some(d) = r.delegate_id
            && let Some(rec) = self.store.get_delegate(d).await?
        {
            names.insert(d, rec.name);
        }
        Ok(to_pb(r, &names))
    }

    async fn audit(&self, action: &str, subject: String, detail: String) -> Result<(), Status> {
        let record =
            AuditRecord { at_ms: now_ms(), actor: "admin".into(), action: action.into(), subject, detail };
        self.store.commit(&Batch { audit: vec![record], ..Default::default() }).await?;
        Ok(())
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Api for ApiSvc {
    #[instrument(skip_all, fields(tasks = req.get_ref().tasks.len()))]
    async fn submit_tasks(
        &self,
        req: Request<pb::SubmitTasksRequest>,
    ) -> Result<Response<pb::SubmitTasksResponse>, Status> {
        let mut specs = req.into_inner().tasks;
        if specs.is_empty() {
            return Err(invalid("tasks", "at least one task is required"));
        }
        for (i, spec) in specs.iter_mut().enumerate() {
            task::validate(spec).map_err(|e| invalid(&format!("tasks[{i}]"), e))?;
            spec.scope = Some(
                normalise_scope(spec.scope.take())
                    .map_err(|e| invalid(&format!("tasks[{i}]"), e.message()))?,
            );
        }
        let ids = self.engine.submit(specs).await?;
        Ok(Response::new(pb::SubmitTasksResponse { task_ids: ids.iter().map(|i| i.to_string()).collect() }))
    }

    async fn get_task(&self, req: Request<pb::GetTaskRequest>) -> Result<Response<pb::Task>, Status> {
        let id = parse_task_id(&req.get_ref().id)?;
        Ok(Response::new(self.task(id).await?))
    }

    async fn list_tasks(
        &self,
        req: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let r = req.into_inner();
        let states: Vec<pb::TaskState> = r
            .states
            .iter()
            .map(|s| pb::TaskState::try_from(*s).map_err(|_| invalid("states", format!("unknown state {s}"))))
            .collect::<Result<_, _>>()?;
        let limit = if r.limit == 0 { 100 } else { r.limit.min(10_000) };
        let names = self.names().await?;
        let tasks =
            self.store.list_tasks(&states, limit).await?.into_iter().map(|t| to_pb(t, &names)).collect();
        Ok(Response::new(pb::ListTasksResponse { tasks }))
    }

    #[instrument(skip_all, fields(task.id = %req.get_ref().id))]
    async fn cancel_task(&self, req: Request<pb::CancelTaskRequest>) -> Result<Response<pb::Task>, Status> {
        let id = parse_task_id(&req.get_ref().id)?;
        let outcome = self.engine.cancel(id).await?;
        if matches!(outcome, CancelOutcome::NotLive | CancelOutcome::Forwarded) {
            // Forwarded: owned by another replica, unless it has ended already.
            let t = self.task(id).await?;
            if outcome == CancelOutcome::NotLive || t.state().is_final() {
                return Err(Status::failed_precondition(format!(
                    "task {id} is already {}",
                    t.state().short_name()
                )));
            }
        }
        self.audit("task.cancel", id.to_string(), String::new()).await?;
        info!(task.id = %id, "Task cancel requested.");
        Ok(Response::new(self.task(id).await?))
    }

    type TaskLogsStream = BoxStream<pb::TaskLogEntry>;

    async fn task_logs(
        &self,
        req: Request<pb::TaskLogsRequest>,
    ) -> Result<Response<Self::TaskLogsStream>, Status> {
        let r = req.into_inner();
        let id = parse_task_id(&r.id)?;
        self.task(id).await?;
        let store = self.store.clone();
        // Subscribe before the first read so no change between the two is missed.
        let mut changes = self.engine.changes();
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let mut after = 0;
            loop {
                let lines = match store.task_logs(id, after, 1000).await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                let got = lines.len();
                for l in lines {
                    after = l.seq;
                    let entry = log_entry(l);
                    if tx.send(Ok(entry)).await.is_err() {
                        return;
                    }
                }
                if got == 1000 {
                    continue;
                }
                if !r.follow {
                    return;
                }
                match store.get_task(id).await {
                    Ok(Some(t)) if t.state.is_final() => {
                        // Logs are committed no later than the final state: one more read drains them.
                        if let Ok(rest) = store.task_logs(id, after, u32::MAX).await {
                            for l in rest {
                                let entry = log_entry(l);
                                let _ = tx.send(Ok(entry)).await;
                            }
                        }
                        let _ = tx
                            .send(Ok(pb::TaskLogEntry { final_state: t.state as i32, ..Default::default() }))
                            .await;
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                }
                // Wait for a change to this task (or poll now and then in case we lagged).
                let deadline = tokio::time::sleep(Duration::from_secs(1));
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        _ = &mut deadline => break,
                        _ = tx.closed() => return,
                        c = changes.recv() => match c {
                            Ok(changed) if changed == id => break,
                            Ok(_) => {}
                            Err(broadcast::error::RecvError::Lagged(_)) => break,
                            Err(broadcast::error::RecvError::Closed) => return,
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn wait_task(&self, req: Request<pb::GetTaskRequest>) -> Result<Response<pb::Task>, Status> {
        let id = parse_task_id(&req.get_ref().id)?;
        if let Some(mut rx) = self.engine.wait(id).await? {
            // Re-read now and then: with replicas the task may end elsewhere
            // and its notice be missed.
            loop {
                let t = self.task(id).await?;
                if t.state().is_final() {
                    return Ok(Response::new(t));
                }
                if tokio::time::timeout(Duration::from_secs(2), &mut rx).await.is_ok() {
                    break;
                }
            }
        }
        Ok(Response::new(self.task(id).await?))
    }

    #[instrument(skip_all, fields(token.name = %req.get_ref().name))]
    async fn create_delegate_token(
        &self,
        req: Request<pb::CreateDelegateTokenRequest>,
    ) -> Result<Response<pb::CreateDelegateTokenResponse>, Status> {
        let r = req.into_inner();
        if r.name.is_empty() || r.name.len() > 63 || r.name.chars().any(|c| c.is_whitespace()) {
            return Err(invalid("name", "must be 1-63 characters without spaces"));
        }
        let scope = normalise_scope(r.scope)?;
        let ttl =
            if r.expires_in_ms == 0 { DEFAULT_TOKEN_TTL.as_millis() as i64 } else { r.expires_in_ms as i64 };
        let token = auth::new_secret("dray_dt_");
        let now = now_ms();
        let record = TokenRecord {
            name: r.name.clone(),
            token_hash: auth::hash(&token),
            scope: scope.clone(),
            expires_ms: now + ttl,
            max_uses: (r.max_uses > 0).then_some(r.max_uses),
            uses: 0,
            revoked: false,
            created_ms: now,
        };
        self.store.create_token(&record).await.map_err(|e| match e {
            crate::store::Error::Conflict { .. } => {
                Status::already_exists(format!("a delegate token named {:?} already exists", r.name))
            }
            e => Status::from(e),
        })?;
        self.audit("token.create", r.name.clone(), format!("scope {}", scope.display())).await?;
        Ok(Response::new(pb::CreateDelegateTokenResponse {
            name: r.name,
            token,
            expires_ms: record.expires_ms,
        }))
    }

    async fn revoke_delegate_token(
        &self,
        req: Request<pb::RevokeDelegateTokenRequest>,
    ) -> Result<Response<pb::RevokeDelegateTokenResponse>, Status> {
        let name = req.into_inner().name;
        if !self.store.revoke_token(&name).await? {
            return Err(Status::not_found(format!("no delegate token named {name:?}")));
        }
        self.audit("token.revoke", name, String::new()).await?;
        Ok(Response::new(pb::RevokeDelegateTokenResponse {}))
    }

    async fn list_delegate_tokens(
        &self,
        _req: Request<pb::ListDelegateTokensRequest>,
    ) -> Result<Response<pb::ListDelegateTokensResponse>, Status> {
        let tokens = self
            .store
            .list_tokens()
            .await?
            .into_iter()
            .map(|t| pb::DelegateToken {
                name: t.name,
                scope: Some(t.scope),
                expires_ms: t.expires_ms,
                max_uses: t.max_uses.unwrap_or(0),
                uses: t.uses,
                revoked: t.revoked,
            })
            .collect();
        Ok(Response::new(pb::ListDelegateTokensResponse { tokens }))
    }

    async fn list_replicas(
        &self,
        _req: Request<pb::ListReplicasRequest>,
    ) -> Result<Response<pb::ListReplicasResponse>, Status> {
        let now = dray_shared::clock::now_ms();
        let ttl = crate::cluster::REPLICA_TTL;
        let replicas = self.store.replicas().await?;
        let leader = crate::cluster::leader::current(&replicas, now).map(|r| r.id.clone());
        let replicas = replicas
            .into_iter()
            .map(|r| pb::Replica {
                leader: leader.as_ref() == Some(&r.id),
                live: !r.is_dead(now, ttl.as_millis() as i64),
                this: r.id == self.replica,
                id: r.id,
                grpc_url: r.grpc_url,
                started_ms: r.started_ms,
                heartbeat_ms: r.heartbeat_ms,
            })
            .collect();
        Ok(Response::new(pb::ListReplicasResponse { replicas, replica_ttl_ms: ttl.as_millis() as u64 }))
    }

    async fn list_delegates(
        &self,
        req: Request<pb::ListDelegatesRequest>,
    ) -> Result<Response<pb::ListDelegatesResponse>, Status> {
        let live: HashMap<DelegateId, _> =
            self.engine.snapshot().await?.sessions.into_iter().map(|s| (s.delegate, s)).collect();
        let mut delegates: Vec<pb::Delegate> = self
            .store
            .list_delegates()
            .await?
            .into_iter()
            .map(|d: DelegateRecord| {
                let s = live.get(&d.id);
                pb::Delegate {
                    id: d.id.to_string(),
                    name: d.name,
                    scope: Some(d.scope),
                    tags: d.tags,
                    connected: s.is_some(),
                    revoked: d.revoked,
                    capacity: s.map(|s| s.capacity).unwrap_or(0),
                    free: s.map(|s| s.free).unwrap_or(0),
                    enrolled_ms: d.enrolled_ms,
                    last_seen_ms: if s.is_some() { now_ms() } else { d.last_seen_ms },
                    running: s.map(|s| s.running).unwrap_or(0),
                    replica: if s.is_some() { self.replica.clone() } else { String::new() },
                }
            })
            .collect();
        if !req.get_ref().local {
            // A delegate's session is on one replica: take that replica's view of it.
            let asked = self
                .peers
                .ask(req.metadata().get("authorization"), |mut c| async move {
                    Ok(c.list_delegates(pb::ListDelegatesRequest { local: true })
                        .await?
                        .into_inner()
                        .delegates)
                })
                .await?;
            let connected: HashMap<String, pb::Delegate> = asked
                .into_iter()
                .flat_map(|(_, ds)| ds)
                .filter(|d| d.connected)
                .map(|d| (d.id.clone(), d))
                .collect();
            for d in delegates.iter_mut().filter(|d| !d.connected) {
                if let Some(there) = connected.get(&d.id) {
                    *d = there.clone();
                }
            }
        }
        Ok(Response::new(pb::ListDelegatesResponse { delegates }))
    }

    #[instrument(skip_all, fields(delegate.id = %req.get_ref().id))]
    async fn revoke_delegate(
        &self,
        req: Request<pb::RevokeDelegateRequest>,
    ) -> Result<Response<pb::Delegate>, Status> {
        let id: DelegateId = req.get_ref().id.parse().map_err(|e| invalid("id", e))?;
        if !self.store.revoke_delegate(id).await? {
            return Err(Status::not_found(format!("delegate {id} not found")));
        }
        self.engine.revoke(id).await?;
        self.audit("delegate.revoke", id.to_string(), String::new()).await?;
        info!(delegate.id = %id, "Delegate revoked.");
        let d = self
            .store
            .get_delegate(id)
            .await?
            .ok_or_else(|| Status::not_found(format!("delegate {id} not found")))?;
        Ok(Response::new(pb::Delegate {
            id: d.id.to_string(),
            name: d.name,
            scope: Some(d.scope),
            tags: d.tags,
            revoked: d.revoked,
            enrolled_ms: d.enrolled_ms,
            last_seen_ms: d.last_seen_ms,
            ..Default::default()
        }))
    }

    async fn list_leases(
        &self,
        req: Request<pb::ListLeasesRequest>,
    ) -> Result<Response<pb::ListLeasesResponse>, Status> {
        let mut leases = self.engine.snapshot().await?.leases;
        for l in &mut leases {
            l.replica = self.replica.clone();
        }
        if !req.get_ref().local {
            let asked = self
                .peers
                .ask(req.metadata().get("authorization"), |mut c| async move {
                    Ok(c.list_leases(pb::ListLeasesRequest { local: true }).await?.into_inner().leases)
                })
                .await?;
            leases.extend(asked.into_iter().flat_map(|(_, ls)| ls));
        }
        leases.sort_by_key(|l| l.since_ms);
        Ok(Response::new(pb::ListLeasesResponse { leases }))
    }

    type WatchLeasesStream = BoxStream<pb::LeaseEvent>;

    async fn watch_leases(
        &self,
        _req: Request<pb::WatchLeasesRequest>,
    ) -> Result<Response<Self::WatchLeasesStream>, Status> {
        let mut events = self.engine.watch();
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    e = events.recv() => match e {
                        Ok(e) => if tx.send(Ok(e)).await.is_err() { return },
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(skipped = n, "Lease watcher fell behind; events skipped.");
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[instrument(skip_all, fields(files = req.get_ref().files.len()))]
    async fn apply_entities(
        &self,
        req: Request<pb::ApplyEntitiesRequest>,
    ) -> Result<Response<pb::ApplyEntitiesResponse>, Status> {
        self.entities.apply(req.into_inner()).await.map(Response::new)
    }

    async fn get_entity(&self, req: Request<pb::GetEntityRequest>) -> Result<Response<pb::Entity>, Status> {
        self.entities.get(req.into_inner()).await.map(Response::new)
    }

    async fn list_entities(
        &self,
        req: Request<pb::ListEntitiesRequest>,
    ) -> Result<Response<pb::ListEntitiesResponse>, Status> {
        self.entities.list(req.into_inner()).await.map(Response::new)
    }

    async fn delete_entity(
        &self,
        req: Request<pb::DeleteEntityRequest>,
    ) -> Result<Response<pb::Entity>, Status> {
        self.entities.delete(req.into_inner()).await.map(Response::new)
    }
}
