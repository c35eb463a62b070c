//! The pipeline engine: one actor owning every live execution. One turn:
//! drain commands and finished tasks → fire due timers → **one store commit**
//! of every changed execution and node → only then submit/cancel tasks, move
//! concurrency locks, reply and publish events. Restart rebuilds each
//! unfinished execution from the store and reconciles its tasks, so a manager
//! killed at any moment resumes every execution without re-running a step that
//! finished.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dray_shared::clock::now_ms;
use dray_shared::{TaskId, pb};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, error, info, warn};

use super::locks::Locks;
use super::machine::{CommandError, Effect, Event, Execution, Meta, TaskDone, task_spec_from_json};
use super::plan::{NodeIdx, NodeKind, Plan};
use super::state::{Decision, ExecState, NodeState};
use super::steps::Registry;
use crate::lease;
use crate::store::executions::{
    ExecutionBatch, ExecutionRecord, ExecutionUpdate, InstancesRecord, NodeRecord,
};
use crate::store::{self, Store, TaskRecord};

/// An execution event, published after it is durable.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecEvent {
    /// Execution id.
    pub execution_id: String,
    /// The change.
    pub event: Event,
}

/// A new execution, ready to run (inputs resolved, plan compiled).
#[derive(Debug, Clone)]
pub struct NewExecution {
    /// Facts (the id and sequence id are assigned by the engine).
    pub meta: Meta,
    /// What to run.
    pub plan: Plan,
    /// A repeated start with the same key returns the first execution.
    pub idempotency_key: Option<String>,
    /// The pipeline's highest sequence id in the store (filled in by [`Handle::create`]).
    pub last_sequence: u64,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No such execution.
    #[error("execution {0} not found")]
    NotFound(String),
    /// The command does not fit the execution's state.
    #[error(transparent)]
    Refused(#[from] CommandError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The engine stopped.
    #[error("the pipeline engine has stopped")]
    Stopped,
}

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

enum Command {
    Create(Box<NewExecution>, Reply<(String, u64)>),
    Approve { id: String, path: Option<String>, decision: Decision, reply: Reply<String> },
    Intervene { id: String, path: Option<String>, action: String, by: String, reply: Reply<String> },
    Abort { id: String, reason: String, reply: Reply<()> },
    Pause { id: String, reply: Reply<()> },
    Resume { id: String, reply: Reply<()> },
}

/// Talks to the engine.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
    events: broadcast::Sender<ExecEvent>,
    store: Arc<dyn Store>,
}

impl Handle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)?
    }

    /// Creates and starts an execution; returns its id and sequence id once durable.
    pub async fn create(&self, mut new: NewExecution) -> Result<(String, u64), EngineError> {
        if let Some(key) = &new.idempotency_key
            && let Some(existing) = self.store.execution_by_key(key).await?
        {
            return Ok((existing.id, existing.sequence_id));
        }
        let m = &new.meta;
        new.last_sequence = self.store.max_sequence(&m.account, &m.org, &m.project, &m.pipeline).await?;
        self.call(|r| Command::Create(Box::new(new), r)).await
    }

    /// Records an approval decision; returns the step path.
    pub async fn approve(
        &self,
        id: &str,
        path: Option<String>,
        decision: Decision,
    ) -> Result<String, EngineError> {
        self.call(|reply| Command::Approve { id: id.into(), path, decision, reply }).await
    }

    /// Applies an operator's choice to a step waiting on manual intervention.
    pub async fn intervene(
        &self,
        id: &str,
        path: Option<String>,
        action: String,
        by: String,
    ) -> Result<String, EngineError> {
        self.call(|reply| Command::Intervene { id: id.into(), path, action, by, reply }).await
    }

    /// Aborts an execution.
    pub async fn abort(&self, id: &str, reason: String) -> Result<(), EngineError> {
        self.call(|reply| Command::Abort { id: id.into(), reason, reply }).await
    }

    /// Pauses an execution.
    pub async fn pause(&self, id: &str) -> Result<(), EngineError> {
        self.call(|reply| Command::Pause { id: id.into(), reply }).await
    }

    /// Resumes an execution.
    pub async fn resume(&self, id: &str) -> Result<(), EngineError> {
        self.call(|reply| Command::Resume { id: id.into(), reply }).await
    }

    /// Live execution events (after they are durable).
    pub fn events(&self) -> broadcast::Receiver<ExecEvent> {
        self.events.subscribe()
    }
}

/// Replies waiting for the turn's commit.
enum Pending {
    Created(Reply<(String, u64)>, String, u64),
    Path(Reply<String>, Result<String, EngineError>),
    Unit(Reply<()>, Result<(), EngineError>),
}

impl Pending {
    /// Replies with the command's result once its commit is durable, or with
    /// `Stopped` when the commit failed (the engine is about to stop).
    fn send(self, committed: bool) {
        fn reply<T>(r: Reply<T>, res: Result<T, EngineError>, committed: bool) {
            let _ = r.send(if committed { res } else { Err(EngineError::Stopped) });
        }
        match self {
            Pending::Created(r, id, seq) => reply(r, Ok((id, seq)), committed),
            Pending::Path(r, res) => reply(r, res, committed),
            Pending::Unit(r, res) => reply(r, res, committed),
        }
    }
}

/// The engine actor.
pub struct Engine {
    store: Arc<dyn Store>,
    lease: lease::Handle,
    registry: Arc<Registry>,
    rx: mpsc::Receiver<Command>,
    finished: broadcast::Receiver<Arc<TaskRecord>>,
    events: broadcast::Sender<ExecEvent>,
    execs: HashMap<String, Execution>,
    /// Task id → execution id, for tasks of running steps.
    tasks: HashMap<String, String>,
    locks: Locks,
    /// Last sequence id per (scope, pipeline).
    sequences: HashMap<String, u64>,
    /// Idempotency keys used since start (the store's unique index covers earlier ones).
    keys: HashMap<String, (String, u64)>,
    /// Executions changed this turn (new ones are also in `inserts`).
    touched: Vec<String>,
    inserts: Vec<ExecutionRecord>,
    pending: Vec<Pending>,
    /// Tasks to (re)submit after the commit.
    submits: Vec<(TaskId, pb::TaskSpec)>,
    /// See [`Engine::resync_every`].
    resync: Option<Duration>,
}

/// The engine's end of a [`Handle`] made before the engine starts (a
/// replica that is not the leader yet serves handles nobody calls).
pub struct Inbox {
    rx: mpsc::Receiver<Command>,
    events: broadcast::Sender<ExecEvent>,
}

/// A handle and the inbox an engine started later will serve.
pub fn channel(store: Arc<dyn Store>) -> (Handle, Inbox) {
    let (tx, rx) = mpsc::channel(4096);
    let (events, _) = broadcast::channel(65_536);
    (Handle { tx, events: events.clone(), store }, Inbox { rx, events })
}

impl Engine {
    /// Loads unfinished executions and returns the engine and its handle. The
    /// engine does nothing until [`Engine::run`].
    pub async fn start(
        store: Arc<dyn Store>,
        lease: lease::Handle,
        registry: Arc<Registry>,
    ) -> Result<(Engine, Handle), store::Error> {
        let (handle, inbox) = channel(store.clone());
        Ok((Engine::start_with(store, lease, registry, inbox).await?, handle))
    }

    /// Like [`Engine::start`], serving an existing handle's inbox.
    pub async fn start_with(
        store: Arc<dyn Store>,
        lease: lease::Handle,
        registry: Arc<Registry>,
        inbox: Inbox,
    ) -> Result<Engine, store::Error> {
        let Inbox { rx, events } = inbox;
        let finished = lease.finished();
        let mut engine = Engine {
            store: store.clone(),
            lease,
            registry,
            rx,
            finished,
            events,
            execs: HashMap::new(),
            tasks: HashMap::new(),
            locks: Locks::default(),
            sequences: HashMap::new(),
            keys: HashMap::new(),
            touched: vec![],
            inserts: vec![],
            pending: vec![],
            submits: vec![],
            resync: None,
        };
        engine.restore().await?;
        Ok(engine)
    }

    /// Re-reads the rows of running steps' tasks every `every`: with several
    /// replicas a task may end on another one, and a missed notice must not
    /// leave its step waiting forever.
    pub fn resync_every(mut self, every: Duration) -> Self {
        self.resync = Some(every);
        self
    }

    async fn restore(&mut self) -> Result<(), store::Error> {
        let rows = self.store.unfinished_executions().await?;
        let mut queued: Vec<(i64, String, NodeIdx, String)> = vec![];
        for row in rows {
            let exec = match decode(&row, self.store.execution_nodes(&row.id).await?) {
                Ok(e) => e,
                Err(reason) => {
                    error!(execution = %row.id, %reason, "cannot decode execution; leaving it as it is");
                    continue;
                }
            };
            for (stage, key, holding) in exec.locks() {
                if holding {
                    self.locks.acquire(&key, (row.id.clone(), stage));
                } else {
                    let at = exec.nodes[stage].started_ms.unwrap_or(0);
                    queued.push((at, row.id.clone(), stage, key));
                }
            }
            for (task, _) in exec.running_tasks() {
                self.tasks.insert(task.to_string(), row.id.clone());
            }
            self.execs.insert(row.id.clone(), exec);
        }
        queued.sort();
        for (_, id, stage, key) in queued {
            if self.locks.acquire(&key, (id.clone(), stage)) {
                self.lock_granted(&id, stage);
            }
        }
        // Reconcile tasks: finished while we were away → feed the result;
        // never created (we died between recording and submitting) → submit.
        let ids: Vec<(String, String)> = self.tasks.iter().map(|(t, e)| (t.clone(), e.clone())).collect();
        for (task, exec_id) in ids {
            let Ok(tid) = task.parse::<TaskId>() else { continue };
            match self.store.get_task(tid).await? {
                Some(rec) if is_final(rec.state) => self.on_finished(&rec),
                Some(_) => {}
                None => {
                    let Some(exec) = self.execs.get(&exec_id) else { continue };
                    let spec = exec
                        .running_tasks()
                        .find(|(t, _)| *t == task)
                        .and_then(|(_, idx)| exec.nodes[idx].task_spec.as_ref())
                        .and_then(|j| task_spec_from_json(j, exec.meta.scope()));
                    match spec {
                        Some(spec) => self.submits.push((tid, spec)),
                        None => warn!(execution = %exec_id, task = %task, "running step without a task spec"),
                    }
                }
            }
        }
        let now = now_ms();
        let reg = self.registry.clone();
        let ids: Vec<String> = self.execs.keys().cloned().collect();
        for id in ids {
            if let Some(e) = self.execs.get_mut(&id) {
                e.tick(now, &reg);
            }
            self.touched.push(id);
        }
        info!(executions = self.execs.len(), "pipeline engine restored");
        Ok(())
    }

    /// Runs until every handle is dropped, or fails stop on a store error.
    pub async fn run(mut self) -> Result<(), store::Error> {
        // Whatever restore produced (re-submits, lock grants) goes out first.
        self.flush().await?;
        let mut resync = tokio::time::interval(self.resync.unwrap_or(Duration::from_secs(3600)));
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.tick().await;
        loop {
            let deadline = self.execs.values().filter_map(Execution::next_deadline).min();
            let sleep = deadline.map(|d| Duration::from_millis((d - now_ms()).max(0) as u64));
            tokio::select! {
                _ = resync.tick(), if self.resync.is_some() && !self.tasks.is_empty() => self.resync_tasks().await?,
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => return Ok(()),
                },
                fin = self.finished.recv() => self.on_finished_msg(fin).await?,
                _ = async { tokio::time::sleep(sleep.unwrap_or(Duration::MAX)).await }, if sleep.is_some() => {
                    self.tick_due();
                }
            }
            // Take whatever else is already waiting, so one commit covers it all.
            for _ in 0..4096 {
                match self.rx.try_recv() {
                    Ok(cmd) => self.on_command(cmd),
                    Err(_) => break,
                }
            }
            loop {
                match self.finished.try_recv() {
                    Ok(rec) => self.on_finished(&rec),
                    Err(broadcast::error::TryRecvError::Lagged(_)) => self.resync_tasks().await?,
                    Err(_) => break,
                }
            }
            self.tick_due();
            self.flush().await?;
        }
    }

    async fn on_finished_msg(
        &mut self,
        fin: Result<Arc<TaskRecord>, broadcast::error::RecvError>,
    ) -> Result<(), store::Error> {
        match fin {
            Ok(rec) => self.on_finished(&rec),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                warn!(missed = n, "pipeline engine fell behind task results; re-reading running tasks");
                self.resync_tasks().await?;
            }
            Err(broadcast::error::RecvError::Closed) => {
                // The lease engine stopped; the server is going down.
                std::future::pending::<()>().await;
            }
        }
        Ok(())
    }

    async fn resync_tasks(&mut self) -> Result<(), store::Error> {
        let ids: Vec<String> = self.tasks.keys().cloned().collect();
        for t in ids {
            let Ok(tid) = t.parse::<TaskId>() else { continue };
            if let Some(rec) = self.store.get_task(tid).await?
                && is_final(rec.state)
            {
                self.on_finished(&rec);
            }
        }
        Ok(())
    }

    fn on_finished(&mut self, rec: &TaskRecord) {
        let key = rec.id.to_string();
        let Some(exec_id) = self.tasks.remove(&key) else { return };
        let Some(exec) = self.execs.get_mut(&exec_id) else { return };
        let done = TaskDone {
            state: rec.state,
            error_type: rec.error_type.clone(),
            reason: rec.reason.clone(),
            outputs: rec.outputs.clone(),
            delegate: rec.delegate_id.map(|d| d.to_string()),
        };
        exec.task_finished(&key, &done, now_ms(), &self.registry);
        self.touched.push(exec_id);
    }

    fn tick_due(&mut self) {
        let now = now_ms();
        let due: Vec<String> = self
            .execs
            .iter()
            .filter(|(_, e)| e.next_deadline().is_some_and(|d| d <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            if let Some(e) = self.execs.get_mut(&id) {
                e.tick(now, &self.registry);
            }
            self.touched.push(id);
        }
    }

    fn lock_granted(&mut self, id: &str, stage: NodeIdx) {
        if let Some(e) = self.execs.get_mut(id) {
            e.lock_granted(stage, now_ms(), &self.registry);
            self.touched.push(id.to_string());
        }
    }

    fn on_command(&mut self, cmd: Command) {
        let now = now_ms();
        let reg = self.registry.clone();
        match cmd {
            Command::Create(new, reply) => match self.create(*new, now) {
                Ok((id, seq)) => self.pending.push(Pending::Created(reply, id, seq)),
                Err(e) => drop(reply.send(Err(e))),
            },
            Command::Approve { id, path, decision, reply } => {
                let res = self.with_exec(&id, |e| e.decide(path.as_deref(), decision, now, &reg));
                self.pending.push(Pending::Path(reply, res));
            }
            Command::Intervene { id, path, action, by, reply } => {
                let res = self.with_exec(&id, |e| e.intervene(path.as_deref(), &action, &by, now, &reg));
                self.pending.push(Pending::Path(reply, res));
            }
            Command::Abort { id, reason, reply } => {
                let res = self.with_exec(&id, |e| e.abort(&reason, now));
                self.pending.push(Pending::Unit(reply, res));
            }
            Command::Pause { id, reply } => {
                let res = self.with_exec(&id, |e| e.pause(now));
                self.pending.push(Pending::Unit(reply, res));
            }
            Command::Resume { id, reply } => {
                let res = self.with_exec(&id, |e| e.resume(now, &reg));
                self.pending.push(Pending::Unit(reply, res));
            }
        }
    }

    fn with_exec<T>(
        &mut self,
        id: &str,
        f: impl FnOnce(&mut Execution) -> Result<T, CommandError>,
    ) -> Result<T, EngineError> {
        let exec = self.execs.get_mut(id).ok_or_else(|| EngineError::NotFound(id.to_string()))?;
        let res = f(exec).map_err(EngineError::from);
        self.touched.push(id.to_string());
        res
    }

    fn create(&mut self, new: NewExecution, now: i64) -> Result<(String, u64), EngineError> {
        let NewExecution { mut meta, plan, idempotency_key, last_sequence } = new;
        if let Some(seen) = idempotency_key.as_ref().and_then(|k| self.keys.get(k)) {
            return Ok(seen.clone());
        }
        let seq_key = format!("{}/{}", meta.scope_path(), meta.pipeline);
        // The engine is the only writer of executions, so its own counter covers
        // starts in flight; the store's maximum covers earlier runs.
        let seq = self.sequences.get(&seq_key).copied().unwrap_or(0).max(last_sequence) + 1;
        meta.id = uuid::Uuid::now_v7().simple().to_string();
        meta.sequence_id = seq;
        meta.created_ms = now;
        let plan_json = serde_json::to_string(&plan).map_err(|e| corrupt(&meta.id, e))?;
        let meta_json = serde_json::to_string(&meta).map_err(|e| corrupt(&meta.id, e))?;
        let id = meta.id.clone();
        let mut exec = Execution::new(meta, Arc::new(plan));
        exec.start(now, &self.registry);
        self.inserts.push(ExecutionRecord {
            id: id.clone(),
            account: exec.meta.account.clone(),
            org: exec.meta.org.clone(),
            project: exec.meta.project.clone(),
            pipeline: exec.meta.pipeline.clone(),
            sequence_id: seq,
            status: exec.state.status.as_str().to_string(),
            meta_json,
            plan_json,
            state_json: serde_json::to_string(&exec.state).map_err(|e| corrupt(&id, e))?,
            created_ms: now,
            ended_ms: exec.state.ended_ms,
            idempotency_key,
        });
        self.sequences.insert(seq_key, seq);
        if let Some(k) = &self.inserts.last().and_then(|r| r.idempotency_key.clone()) {
            self.keys.insert(k.clone(), (id.clone(), seq));
        }
        self.execs.insert(id.clone(), exec);
        self.touched.push(id.clone());
        Ok((id, seq))
    }

    /// Commits everything this turn changed, then acts on it.
    async fn flush(&mut self) -> Result<(), store::Error> {
        // Lock moves and lock grants can change executions again: loop until quiet.
        for _ in 0..64 {
            if self.touched.is_empty() && self.pending.is_empty() && self.submits.is_empty() {
                return Ok(());
            }
            let mut batch =
                ExecutionBatch { inserts: std::mem::take(&mut self.inserts), ..Default::default() };
            let mut effects: Vec<(String, Effect)> = vec![];
            let mut touched = std::mem::take(&mut self.touched);
            touched.sort();
            touched.dedup();
            for id in &touched {
                let Some(exec) = self.execs.get_mut(id) else { continue };
                let (exec_dirty, nodes) = exec.take_dirty();
                let is_new = batch.inserts.iter().any(|r| &r.id == id);
                if is_new {
                    if let Some(r) = batch.inserts.iter_mut().find(|r| &r.id == id) {
                        r.status = exec.state.status.as_str().to_string();
                        r.state_json = json_text(&exec.state);
                        r.ended_ms = exec.state.ended_ms;
                    }
                } else if exec_dirty {
                    batch.updates.push(ExecutionUpdate {
                        id: id.clone(),
                        status: exec.state.status.as_str().to_string(),
                        state_json: json_text(&exec.state),
                        ended_ms: exec.state.ended_ms,
                    });
                }
                for idx in nodes {
                    batch.nodes.push(NodeRecord {
                        execution_id: id.clone(),
                        idx: idx as u32,
                        status: exec.nodes[idx].status.as_str().to_string(),
                        state_json: json_text(&exec.nodes[idx]),
                    });
                }
                for e in exec.take_effects() {
                    match e {
                        Effect::Instances { node, instances_json } => {
                            if let Some(r) = instances_record(exec, node, instances_json, now_ms()) {
                                batch.instances.push(r);
                            }
                        }
                        e => effects.push((id.clone(), e)),
                    }
                }
            }
            let started = std::time::Instant::now();
            let commit = self.store.commit_executions(&batch).await;
            debug!(
                nodes = batch.nodes.len(),
                elapsed_us = started.elapsed().as_micros() as u64,
                "executions committed"
            );
            for p in std::mem::take(&mut self.pending) {
                p.send(commit.is_ok());
            }
            if let Err(e) = commit {
                error!(error = %e, "committing executions failed; stopping the pipeline engine");
                return Err(e);
            }
            self.apply(effects).await;
            let done: Vec<String> = touched
                .iter()
                .filter(|id| self.execs.get(*id).is_some_and(Execution::is_final))
                .cloned()
                .collect();
            for id in done {
                self.execs.remove(&id);
            }
        }
        Ok(())
    }

    async fn apply(&mut self, effects: Vec<(String, Effect)>) {
        let mut submits = std::mem::take(&mut self.submits);
        for (exec_id, effect) in effects {
            match effect {
                Effect::Submit { task_id, spec } => {
                    self.tasks.insert(task_id.to_string(), exec_id);
                    submits.push((task_id, spec));
                }
                Effect::Cancel { task_id } => {
                    self.tasks.remove(&task_id.to_string());
                    let lease = self.lease.clone();
                    tokio::spawn(async move {
                        let _ = lease.cancel(task_id).await;
                    });
                }
                Effect::Acquire { node, key } => {
                    if self.locks.acquire(&key, (exec_id.clone(), node)) {
                        self.lock_granted(&exec_id, node);
                    }
                }
                Effect::Release { node, key } => {
                    if let Some((next, stage)) = self.locks.release(&key, &(exec_id.clone(), node)) {
                        self.lock_granted(&next, stage);
                    }
                }
                Effect::Event(event) => {
                    let _ = self.events.send(ExecEvent { execution_id: exec_id, event });
                }
                // Written with the batch in `flush`.
                Effect::Instances { .. } => {}
            }
        }
        if !submits.is_empty() && self.lease.submit_with_ids(submits).await.is_err() {
            error!("lease engine stopped; tasks not submitted (they will be on restart)");
        }
    }
}

/// The row for instances reported by `node` of `exec`, if it deploys to a target.
fn instances_record(
    exec: &Execution,
    node: NodeIdx,
    instances_json: String,
    now: i64,
) -> Option<InstancesRecord> {
    let stage = exec.plan.stage_of(node)?;
    let NodeKind::Stage { target: Some(t), .. } = &exec.plan.node(stage).kind else { return None };
    Some(InstancesRecord {
        account: exec.meta.account.clone(),
        org: exec.meta.org.clone(),
        project: exec.meta.project.clone(),
        service: t.service.clone(),
        environment: t.environment.clone(),
        infrastructure: t.infrastructure.clone(),
        instances_json,
        execution_id: exec.meta.id.clone(),
        step: exec.plan.node(node).path.clone(),
        updated_ms: now,
    })
}

fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}

fn corrupt(id: &str, e: serde_json::Error) -> EngineError {
    EngineError::Store(store::Error::Corrupt {
        table: "executions",
        id: id.to_string(),
        reason: e.to_string(),
    })
}

fn is_final(state: pb::TaskState) -> bool {
    !matches!(
        state,
        pb::TaskState::Queued | pb::TaskState::Offered | pb::TaskState::Running | pb::TaskState::Unspecified
    )
}

/// Rebuilds an execution from its rows.
pub fn decode(row: &ExecutionRecord, nodes: Vec<NodeRecord>) -> Result<Execution, String> {
    let meta: Meta = serde_json::from_str(&row.meta_json).map_err(|e| format!("meta: {e}"))?;
    let plan: Plan = serde_json::from_str(&row.plan_json).map_err(|e| format!("plan: {e}"))?;
    let state: ExecState = serde_json::from_str(&row.state_json).map_err(|e| format!("state: {e}"))?;
    let mut states = vec![NodeState::default(); plan.nodes.len()];
    for n in nodes {
        let s: NodeState = serde_json::from_str(&n.state_json).map_err(|e| format!("node {}: {e}", n.idx))?;
        if let Some(slot) = states.get_mut(n.idx as usize) {
            *slot = s;
        }
    }
    Ok(Execution::restore(meta, Arc::new(plan), state, states))
}
