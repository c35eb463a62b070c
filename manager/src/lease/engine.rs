//! The lease engine: the one owner of live task and session state, and the only
//! writer of task rows.
//!
//! It runs as a single task fed by a command channel. Each turn it takes every
//! command waiting (up to `max_batch`), fires due timers, offers queued tasks to
//! delegates with free slots, then commits everything the turn changed in one
//! store transaction (group commit), and only after that commit sends messages to
//! delegates, answers callers and publishes events. A manager killed mid-turn has
//! told nobody about what it had not committed.
//!
//! A commit that keeps failing stops the engine (`run` returns the error) and with
//! it the manager: restarting from the store is always correct, carrying on with
//! memory that disagrees with the store is not.
//!
//! Soft state, not persisted: lease expiry times (reset to a full TTL for every
//! running task when the manager starts, so delegates can reconnect), delegate
//! credits, and cancel requests for running tasks.
//!
//! In-process consumers (the pipeline engine) submit tasks under ids they chose
//! ([`Handle::submit_with_ids`], idempotent, so a restarted consumer can submit
//! again safely) and hear about every task reaching a final state, with its
//! committed row, on [`Handle::finished`].

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use dray_shared::clock::now_ms;
use dray_shared::pb::{self, LeaseEventKind, TaskState};
use dray_shared::{DelegateId, Epoch, TaskId};
use tokio::sync::{broadcast, mpsc, oneshot};
use tonic::Status;
use tracing::{debug, error, info, warn};

mod cluster;

pub use cluster::Remote;

use super::machine::{self, Effect, Event, Lease, Message, Outcome, Refused};
use super::offer::{self, Candidate};
use crate::metrics::Metrics;
use crate::store::{self, AuditRecord, Batch, LogRecord, Store, TaskRecord, TaskWrite};

/// Most queued tasks one dispatch pass looks at.
const MAX_SCAN: usize = 10_000;
/// Rows the `finished` feed buffers for a slow consumer before it lags (a
/// lagging consumer re-reads the rows it missed from the store).
const FINISHED_CAPACITY: usize = 65_536;
/// Attempts at a retryable store call inside a turn before the engine stops.
const STORE_ATTEMPTS: u32 = 20;

/// Timing knobs of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Lease time-to-live; a lease not renewed within it is lost.
    pub lease_ttl: Duration,
    /// How long a delegate has to acknowledge an offer.
    pub offer_timeout: Duration,
    /// Default time a task may wait for an eligible delegate.
    pub queue_timeout: Duration,
    /// Default run timeout given to delegates.
    pub task_timeout: Duration,
    /// Most commands taken in one turn (one commit).
    pub max_batch: usize,
    /// This manager's replica id when several replicas share the database
    /// (PostgreSQL): the engine then claims tasks before offering them and
    /// talks to the other replicas (see [`cluster`]). `None`: the only one.
    pub replica: Option<String>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            lease_ttl: Duration::from_secs(15),
            offer_timeout: Duration::from_secs(5),
            queue_timeout: Duration::from_secs(600),
            task_timeout: Duration::from_secs(3600),
            max_batch: 4096,
            replica: None,
        }
    }
}

impl EngineConfig {
    fn ttl_ms(&self) -> i64 {
        self.lease_ttl.as_millis() as i64
    }
    /// Heartbeat interval told to delegates: a third of the TTL, so two may be lost.
    pub fn heartbeat_interval(&self) -> Duration {
        self.lease_ttl / 3
    }
}

/// Outbound half of a delegate session.
/// Messages are boxed: the channel allocates its slots in blocks of 32, and an
/// idle session should not hold 32 inline `ManagerMessage`s' worth of memory.
pub type SessionTx = mpsc::UnboundedSender<Box<Result<pb::ManagerMessage, Status>>>;

/// A delegate's session as the gRPC layer hands it over.
#[derive(Debug)]
pub struct Attach {
    /// Identity from the certificate.
    pub delegate: DelegateId,
    /// Unique id of this stream.
    pub session: u64,
    /// Name from the store.
    pub name: String,
    /// Scope from the store.
    pub scope: pb::Scope,
    /// The delegate's Hello.
    pub hello: pb::Hello,
    /// Where to send messages.
    pub tx: SessionTx,
}

/// Result of a cancel request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Cancelled at once (it was not running).
    Cancelled,
    /// The delegate was asked to stop; the task ends when it confirms or the lease is lost.
    Requested,
    /// No such unfinished task.
    NotLive,
    /// Not live on this replica: the cancel went to the other replicas, and
    /// the task's owner (if it is unfinished) acts on it.
    Forwarded,
}

/// Live view of one connected delegate.
#[derive(Debug, Clone)]
pub struct SessionView {
    /// Identity.
    pub delegate: DelegateId,
    /// Announced capacity.
    pub capacity: u32,
    /// Free slots.
    pub free: u32,
    /// Tasks offered or running on it.
    pub running: u32,
    /// Draining.
    pub draining: bool,
    /// Connected since (Unix ms).
    pub since_ms: i64,
}

/// Live view of the engine for read APIs.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Offered and running leases.
    pub leases: Vec<pb::Lease>,
    /// Connected sessions.
    pub sessions: Vec<SessionView>,
}

enum Command {
    Submit { specs: Vec<pb::TaskSpec>, reply: oneshot::Sender<Vec<TaskId>> },
    SubmitWithIds { tasks: Vec<(TaskId, pb::TaskSpec)>, reply: oneshot::Sender<()> },
    Cancel { id: TaskId, reply: oneshot::Sender<CancelOutcome> },
    Attach(Box<Attach>),
    Inbound { delegate: DelegateId, session: u64, msg: pb::delegate_message::Msg },
    Detach { delegate: DelegateId, session: u64 },
    Revoke { delegate: DelegateId, reply: oneshot::Sender<()> },
    Wait { id: TaskId, reply: oneshot::Sender<Option<oneshot::Receiver<()>>> },
    Snapshot { reply: oneshot::Sender<Snapshot> },
    Remote(cluster::Remote),
}

/// The engine has stopped (its commit failed for good, or the manager is stopping).
#[derive(Debug, thiserror::Error)]
#[error("the lease engine has stopped")]
pub struct Stopped;

/// Cheap, cloneable way to talk to the engine.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
    events: broadcast::Sender<pb::LeaseEvent>,
    changes: broadcast::Sender<TaskId>,
    finished: broadcast::Sender<Arc<TaskRecord>>,
    config: Arc<EngineConfig>,
}

impl Handle {
    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Submits validated specs; returns their ids once they are durable.
    pub async fn submit(&self, specs: Vec<pb::TaskSpec>) -> Result<Vec<TaskId>, Stopped> {
        self.call(|reply| Command::Submit { specs, reply }).await
    }

    /// Submits tasks whose ids the caller chose (UUIDv7 from `TaskId::new()`).
    /// Idempotent: an id that already exists (in memory or in the store) is
    /// left as is and reported Ok, so a consumer that restarted can submit
    /// again whatever it is not sure was submitted. Returns once the new rows
    /// are durable. Specs must be valid as `SubmitTasks` requires
    /// (`task::validate`, a scope with its account); an id listed twice is
    /// submitted once, with its first spec.
    pub async fn submit_with_ids(&self, tasks: Vec<(TaskId, pb::TaskSpec)>) -> Result<(), Stopped> {
        self.call(|reply| Command::SubmitWithIds { tasks, reply }).await
    }

    /// Every task reaching a final state, after its row is committed. Only
    /// transitions after subscribing are seen; a receiver that lags (more than
    /// 65,536 rows behind) gets `RecvError::Lagged` and must re-read the rows it
    /// cares about from the store.
    pub fn finished(&self) -> broadcast::Receiver<Arc<TaskRecord>> {
        self.finished.subscribe()
    }

    /// Cancels a task.
    pub async fn cancel(&self, id: TaskId) -> Result<CancelOutcome, Stopped> {
        self.call(|reply| Command::Cancel { id, reply }).await
    }

    /// Hands a new delegate session to the engine, which answers with `Welcome`.
    pub async fn attach(&self, attach: Attach) -> Result<(), Stopped> {
        self.tx.send(Command::Attach(Box::new(attach))).await.map_err(|_| Stopped)
    }

    /// Forwards one message from a delegate session.
    pub async fn inbound(
        &self,
        delegate: DelegateId,
        session: u64,
        msg: pb::delegate_message::Msg,
    ) -> Result<(), Stopped> {
        self.tx.send(Command::Inbound { delegate, session, msg }).await.map_err(|_| Stopped)
    }

    /// Tells the engine a session ended.
    pub async fn detach(&self, delegate: DelegateId, session: u64) {
        let _ = self.tx.send(Command::Detach { delegate, session }).await;
    }

    /// Cuts a delegate off: closes its session and ends its leases.
    pub async fn revoke(&self, delegate: DelegateId) -> Result<(), Stopped> {
        self.call(|reply| Command::Revoke { delegate, reply }).await
    }

    /// A receiver that fires when the task is final and durable, or `None` when the
    /// task is not live (already final, or unknown): read the store then.
    pub async fn wait(&self, id: TaskId) -> Result<Option<oneshot::Receiver<()>>, Stopped> {
        self.call(|reply| Command::Wait { id, reply }).await
    }

    /// Current leases and sessions.
    pub async fn snapshot(&self) -> Result<Snapshot, Stopped> {
        self.call(|reply| Command::Snapshot { reply }).await
    }

    /// Live feed of lease events.
    pub fn watch(&self) -> broadcast::Receiver<pb::LeaseEvent> {
        self.events.subscribe()
    }

    /// Notifications "task X has new logs or changed state" (committed).
    pub fn changes(&self) -> broadcast::Receiver<TaskId> {
        self.changes.subscribe()
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Passes on news from other replicas (see [`Remote`]).
    pub async fn remote(&self, news: Remote) -> Result<(), Stopped> {
        self.tx.send(Command::Remote(news)).await.map_err(|_| Stopped)
    }
}

struct Live {
    spec: pb::TaskSpec,
    lease: Lease,
    version: u64,
    created_ms: i64,
    queue_seq: u64,
    queue_deadline_ms: i64,
    next_log_seq: u64,
}

struct Session {
    session: u64,
    capacity: u32,
    since_ms: i64,
    tx: SessionTx,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Ack(Epoch),
    Lease(Epoch),
    Queue,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    at_ms: i64,
    seq: u64,
    task: TaskId,
    kind: TimerKind,
}

/// What a turn does after its commit.
enum After {
    Send(DelegateId, pb::manager_message::Msg),
    Publish(pb::LeaseEvent),
    Reply(oneshot::Sender<Vec<TaskId>>, Vec<TaskId>),
    Changed(TaskId),
    /// The task is final; its committed row, when anyone listens for it.
    Finished(TaskId, Option<Arc<TaskRecord>>),
    Then(Box<dyn FnOnce() + Send>),
}

/// Runs a store call, retrying while the store is briefly unavailable; an
/// error that persists stops the engine.
async fn retrying<T, F, Fut>(what: &str, mut call: F) -> Result<T, store::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, store::Error>>,
{
    let mut attempt = 0u32;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() && attempt < STORE_ATTEMPTS => {
                attempt += 1;
                warn!(error = %e, attempt, what, "Store call failed; retrying.");
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt.min(10)))).await;
            }
            Err(e) => {
                error!(error = %e, what, "Store call failed for good; stopping the lease engine.");
                return Err(e);
            }
        }
    }
}

/// Whether a row for `id` exists.
async fn stored(store: &dyn Store, id: TaskId) -> Result<bool, store::Error> {
    Ok(retrying("task read", || store.get_task(id)).await?.is_some())
}

/// The engine itself; see the module docs.
pub struct Engine {
    store: Arc<dyn Store>,
    config: Arc<EngineConfig>,
    metrics: Arc<Metrics>,
    rx: mpsc::Receiver<Command>,
    events: broadcast::Sender<pb::LeaseEvent>,
    changes: broadcast::Sender<TaskId>,
    finished: broadcast::Sender<Arc<TaskRecord>>,

    tasks: HashMap<TaskId, Live>,
    /// Caller-chosen-id submissions of this turn, admitted after a store check.
    pending_ids: Vec<(TaskId, pb::TaskSpec)>,
    pending_replies: Vec<oneshot::Sender<()>>,
    queue: BTreeMap<u64, TaskId>,
    next_queue_seq: u64,
    timers: BinaryHeap<Reverse<Timer>>,
    next_timer_seq: u64,

    candidates: Vec<Candidate>,
    sessions: Vec<Session>,
    index: HashMap<DelegateId, usize>,
    names: HashMap<DelegateId, String>,
    revoked: HashSet<DelegateId>,
    free_credits: u64,
    /// Where the next dispatch scan starts (see [`Engine::dispatch`]).
    scan_from: u64,
    /// Queued tasks looked at since a pass last placed one.
    unproductive: usize,

    waiters: HashMap<TaskId, Vec<oneshot::Sender<()>>>,
    staged: HashMap<TaskId, TaskWrite>,
    logs: Vec<LogRecord>,
    audit: Vec<AuditRecord>,
    after: Vec<After>,
    now: i64,
    /// Several replicas: what they share with this one (None when alone).
    cluster: Option<cluster::State>,
}

impl Engine {
    /// Loads every unfinished task from the store and returns the engine (to be
    /// `run`) and a handle to it.
    pub async fn start(
        store: Arc<dyn Store>,
        config: EngineConfig,
        metrics: Arc<Metrics>,
    ) -> Result<(Engine, Handle), store::Error> {
        let (tx, rx) = mpsc::channel(65_536);
        let (events, _) = broadcast::channel(16_384);
        let (changes, _) = broadcast::channel(16_384);
        let (finished, _) = broadcast::channel(FINISHED_CAPACITY);
        let config = Arc::new(config);
        let mut engine = Engine {
            store: store.clone(),
            config: config.clone(),
            metrics,
            rx,
            events: events.clone(),
            changes: changes.clone(),
            finished: finished.clone(),
            tasks: HashMap::new(),
            pending_ids: Vec::new(),
            pending_replies: Vec::new(),
            queue: BTreeMap::new(),
            next_queue_seq: 0,
            timers: BinaryHeap::new(),
            next_timer_seq: 0,
            candidates: Vec::new(),
            sessions: Vec::new(),
            index: HashMap::new(),
            names: HashMap::new(),
            revoked: HashSet::new(),
            free_credits: 0,
            scan_from: 0,
            unproductive: 0,
            waiters: HashMap::new(),
            staged: HashMap::new(),
            logs: Vec::new(),
            audit: Vec::new(),
            after: Vec::new(),
            now: now_ms(),
            cluster: config.replica.clone().map(cluster::State::new),
        };
        for d in store.list_delegates().await? {
            if d.revoked {
                engine.revoked.insert(d.id);
            }
            engine.names.insert(d.id, d.name);
        }
        // With other replicas, only queued unowned tasks are anybody's; the
        // rest is owned by a replica (a dead one's work is adopted later).
        let unfinished = match engine.cluster {
            Some(_) => store.queued_unowned(u32::MAX).await?,
            None => store.load_unfinished().await?,
        };
        let (mut queued, mut running) = (0, 0);
        for record in unfinished {
            // Only a task that ran can have logs; queued ones never did.
            let next_log_seq = match record.state {
                TaskState::Running => store.last_log_seq(record.id).await? + 1,
                _ => 1,
            };
            match record.state {
                TaskState::Running => running += 1,
                _ => queued += 1,
            }
            engine.restore(record, next_log_seq);
        }
        info!(tasks.queued = queued, tasks.running = running, "Lease engine loaded unfinished tasks.");
        let handle = Handle { tx, events, changes, finished, config };
        Ok((engine, handle))
    }

    fn restore(&mut self, r: TaskRecord, next_log_seq: u64) {
        let mut lease = Lease::queued();
        lease.epoch = r.epoch;
        lease.delegate = r.delegate_id;
        lease.started_ms = r.started_ms;
        lease.outputs = r.outputs;
        lease.error_type = r.error_type;
        let id = r.id;
        let queue_seq = self.next_queue_seq;
        self.next_queue_seq += 1;
        let mut live = Live {
            spec: r.spec,
            lease,
            version: r.version,
            created_ms: r.created_ms,
            queue_seq,
            queue_deadline_ms: r.queue_deadline_ms,
            next_log_seq,
        };
        match r.state {
            TaskState::Running => {
                // Give the holder a full TTL to reconnect and reattach.
                live.lease.state = TaskState::Running;
                live.lease.since_ms = r.started_ms.unwrap_or(self.now);
                live.lease.deadline_ms = self.now + self.config.ttl_ms();
                self.arm(live.lease.deadline_ms, id, TimerKind::Lease(r.epoch));
            }
            TaskState::Offered => {
                // The offer died with the old process's sessions; nothing ran
                // (work starts only on a grant), so it is safe to queue again.
                live.lease.delegate = None;
                self.queue.insert(queue_seq, id);
                self.arm(live.queue_deadline_ms, id, TimerKind::Queue);
                self.tasks.insert(id, live);
                self.stage(id);
                self.metrics.transition(None, TaskState::Queued);
                return;
            }
            _ => {
                self.queue.insert(queue_seq, id);
                self.arm(live.queue_deadline_ms, id, TimerKind::Queue);
            }
        }
        self.metrics.transition(None, live.lease.state);
        self.tasks.insert(id, live);
    }

    /// Runs until every handle is dropped (Ok) or a commit fails for good (Err).
    pub async fn run(mut self) -> Result<(), store::Error> {
        loop {
            let wake = self.timers.peek().map(|Reverse(t)| t.at_ms);
            let sleep = async {
                match wake {
                    Some(at) => {
                        tokio::time::sleep(Duration::from_millis((at - now_ms()).max(0) as u64)).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => { self.now = now_ms(); self.handle(cmd) }
                    None => return Ok(()),
                },
                _ = sleep => {}
                // A dispatch pass was cut short: carry on without waiting.
                _ = std::future::ready(()), if self.scan_from != 0 || self.cluster.as_ref().is_some_and(|c| c.again) => {}
                // Leases held through other replicas wait for their owner to go.
                _ = tokio::time::sleep(cluster::RECHECK), if self.cluster.as_ref().is_some_and(|c| c.waiting()) => {}
            }
            let mut taken = 1;
            while taken < self.config.max_batch {
                match self.rx.try_recv() {
                    Ok(cmd) => self.handle(cmd),
                    Err(_) => break,
                }
                taken += 1;
            }
            self.now = now_ms();
            self.admit_with_ids().await?;
            self.fire_timers();
            self.dispatch();
            if self.cluster.is_some() {
                self.settle_picks().await?;
                self.resolve_foreign().await?;
            }
            self.commit().await?;
            if self.cluster.is_some() {
                self.release_handed_off().await?;
            }
            self.flush();
        }
    }

    // === commands ===

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Submit { specs, reply } => {
                let ids = specs.into_iter().map(|s| self.submit(TaskId::new(), s)).collect();
                self.after.push(After::Reply(reply, ids));
            }
            Command::SubmitWithIds { tasks, reply } => {
                // Admitted by `admit_with_ids` once the store has been asked.
                self.pending_ids.extend(tasks);
                self.pending_replies.push(reply);
            }
            Command::Cancel { id, reply } => {
                let outcome = match self.tasks.get(&id).map(|l| l.lease.state) {
                    None if self.cluster.is_some() => {
                        self.notify(cluster::Notice::Cancel(id));
                        CancelOutcome::Forwarded
                    }
                    None => CancelOutcome::NotLive,
                    Some(TaskState::Queued) if self.must_claim(id) => {
                        // Answered once the claim says whose it is; not offered meanwhile.
                        if let Some(seq) = self.tasks.get(&id).map(|l| l.queue_seq) {
                            self.queue.remove(&seq);
                        }
                        self.pick(id, cluster::Pick::Cancel(Some(reply)));
                        return;
                    }
                    Some(TaskState::Running) => {
                        let _ = self.apply(id, Event::Cancel);
                        CancelOutcome::Requested
                    }
                    Some(_) => {
                        let _ = self.apply(id, Event::Cancel);
                        CancelOutcome::Cancelled
                    }
                };
                // Answer after the commit: the caller reads the store next.
                self.then(move || {
                    let _ = reply.send(outcome);
                });
            }
            Command::Attach(a) => self.attach(*a),
            Command::Inbound { delegate, session, msg } => {
                if self.index.get(&delegate).is_some_and(|&i| self.sessions[i].session == session) {
                    self.inbound(delegate, msg);
                }
            }
            Command::Detach { delegate, session } => {
                if self.index.get(&delegate).is_some_and(|&i| self.sessions[i].session == session) {
                    self.remove_session(delegate);
                    info!(delegate.id = %delegate, "Delegate disconnected.");
                }
            }
            Command::Revoke { delegate, reply } => {
                self.revoked.insert(delegate);
                if let Some(&i) = self.index.get(&delegate) {
                    let _ = self.sessions[i].tx.send(Box::new(Err(Status::permission_denied(format!(
                        "delegate {delegate} has been revoked"
                    )))));
                    self.remove_session(delegate);
                }
                for id in self.held_by(delegate) {
                    let _ = self.apply(id, Event::Revoked { delegate });
                }
                self.then(move || {
                    let _ = reply.send(());
                });
            }
            Command::Wait { id, reply } => {
                // With replicas, a task unknown here may be running elsewhere:
                // its `done` notice (or the caller's own polling) ends the wait.
                let rx = (self.tasks.contains_key(&id) || self.cluster.is_some()).then(|| {
                    if self.waiters.len() > 1024 {
                        // Callers that went away (a task unknown here may never end here).
                        self.waiters.retain(|_, ws| {
                            ws.retain(|w| !w.is_closed());
                            !ws.is_empty()
                        });
                    }
                    let (tx, rx) = oneshot::channel();
                    self.waiters.entry(id).or_default().push(tx);
                    rx
                });
                // "Not live" may mean "finished in this very turn": answer after the
                // commit so the caller's store read sees it.
                self.then(move || {
                    let _ = reply.send(rx);
                });
            }
            Command::Snapshot { reply } => {
                let _ = reply.send(self.snapshot());
            }
            Command::Remote(news) => self.remote(news),
        }
    }

    /// Runs `f` after this turn's commit.
    fn then(&mut self, f: impl FnOnce() + Send + 'static) {
        self.after.push(After::Then(Box::new(f)));
    }

    /// Admits this turn's caller-chosen-id submissions: an id live in memory or
    /// already stored is skipped (inserting it again would fail the whole
    /// commit). The engine is the only writer of task rows and every earlier
    /// commit is done, so what the store says now cannot change before this
    /// turn's commit. Callers hear back after that commit.
    async fn admit_with_ids(&mut self) -> Result<(), store::Error> {
        if self.pending_replies.is_empty() {
            return Ok(());
        }
        let store = Arc::clone(&self.store);
        for (id, spec) in std::mem::take(&mut self.pending_ids) {
            // `tasks` also holds ids admitted a moment ago, so repeats are skipped.
            if self.tasks.contains_key(&id) || stored(&*store, id).await? {
                continue;
            }
            self.submit(id, spec);
        }
        for reply in std::mem::take(&mut self.pending_replies) {
            self.then(move || {
                let _ = reply.send(());
            });
        }
        Ok(())
    }

    fn submit(&mut self, id: TaskId, mut spec: pb::TaskSpec) -> TaskId {
        if spec.timeout_ms == 0 {
            spec.timeout_ms = self.config.task_timeout.as_millis() as u64;
        }
        let queue_timeout = if spec.queue_timeout_ms == 0 {
            self.config.queue_timeout.as_millis() as i64
        } else {
            i64::try_from(spec.queue_timeout_ms).unwrap_or(i64::MAX)
        };
        let queue_seq = self.next_queue_seq;
        self.next_queue_seq += 1;
        let live = Live {
            spec,
            lease: Lease::queued(),
            version: 0,
            created_ms: self.now,
            queue_seq,
            queue_deadline_ms: self.now.saturating_add(queue_timeout),
            next_log_seq: 1,
        };
        self.arm(live.queue_deadline_ms, id, TimerKind::Queue);
        self.tasks.insert(id, live);
        self.queue.insert(queue_seq, id);
        self.stage(id);
        if let Some(c) = self.cluster.as_mut() {
            c.queued.push(id);
        }
        self.metrics.tasks_submitted.inc();
        self.metrics.transition(None, TaskState::Queued);
        id
    }

    fn attach(&mut self, a: Attach) {
        let delegate = a.delegate;
        // The session RPC checked the store, but a revocation may have landed
        // while it waited for Hello.
        if self.revoked.contains(&delegate) {
            let _ = a.tx.send(Box::new(Err(Status::permission_denied(format!(
                "delegate {delegate} has been revoked"
            )))));
            return;
        }
        if self.index.contains_key(&delegate) {
            if let Some(&i) = self.index.get(&delegate) {
                let _ =
                    self.sessions[i].tx.send(Box::new(Err(Status::aborted("superseded by a newer session"))));
            }
            self.remove_session(delegate);
        }
        let refs = |v: &[pb::LeaseRef]| -> HashMap<TaskId, Epoch> {
            v.iter().filter_map(|l| Some((l.task_id.parse().ok()?, Epoch(l.epoch)))).collect()
        };
        let held = refs(&a.hello.held);
        let acked = refs(&a.hello.acked);
        let capacity = a.hello.capacity.max(1);
        let credits = capacity.saturating_sub((held.len() + acked.len()) as u32);
        let welcome = pb::Welcome {
            delegate_id: delegate.to_string(),
            heartbeat_interval_ms: self.config.heartbeat_interval().as_millis() as u64,
            lease_ttl_ms: self.config.ttl_ms() as u64,
            protocol: dray_shared::protocol::PROTOCOL,
            min_delegate_protocol: dray_shared::protocol::MIN_DELEGATE_PROTOCOL,
        };
        let _ = a
            .tx
            .send(Box::new(Ok(pb::ManagerMessage { msg: Some(pb::manager_message::Msg::Welcome(welcome)) })));
        self.names.insert(delegate, a.name.clone());
        self.index.insert(delegate, self.sessions.len());
        self.sessions.push(Session { session: a.session, capacity, since_ms: self.now, tx: a.tx });
        self.candidates.push(Candidate {
            id: delegate,
            name: a.name,
            scope: a.scope,
            tags: a.hello.tags.into_iter().collect(),
            credits,
            draining: false,
        });
        self.free_credits += u64::from(credits);
        self.metrics.delegates_connected.inc();
        info!(delegate.id = %delegate, capacity, held = held.len(), acked = acked.len(), "Delegate attached.");

        // Reconcile what it says it holds with what we think it holds.
        for id in self.held_by(delegate) {
            let ttl_ms = self.config.ttl_ms();
            let event = Event::Reattach {
                by: delegate,
                held: held.get(&id).copied(),
                acked: acked.get(&id).copied(),
                ttl_ms,
            };
            let _ = self.apply(id, event);
        }
        let held = held.into_iter().map(|(id, e)| (id, e, false));
        for (id, epoch, was_acked) in held.chain(acked.into_iter().map(|(id, e)| (id, e, true))) {
            let ours = self.tasks.get(&id).is_some_and(|l| {
                l.lease.delegate == Some(delegate)
                    && l.lease.epoch == epoch
                    && matches!(l.lease.state, TaskState::Offered | TaskState::Running)
            });
            if !ours && self.cluster.is_some() && !self.owned_here(id) {
                // Perhaps a lease held through another replica: find out first.
                self.foreign_lease(delegate, id, epoch, was_acked);
            } else if !ours {
                // Its result (if any) will be refused too; tell it now so it stops.
                self.refuse(
                    delegate,
                    id,
                    epoch,
                    "lease is not active (task finished, lost or re-offered)".into(),
                );
            }
        }
    }

    fn remove_session(&mut self, delegate: DelegateId) {
        let Some(i) = self.index.remove(&delegate) else { return };
        let c = self.candidates.swap_remove(i);
        self.sessions.swap_remove(i);
        if let Some(moved) = self.candidates.get(i) {
            self.index.insert(moved.id, i);
        }
        if !c.draining {
            self.free_credits -= u64::from(c.credits);
        }
        self.metrics.delegates_connected.dec();
        if let Some(c) = self.cluster.as_mut() {
            c.forget_delegate(delegate);
        }
        for id in self.held_by(delegate) {
            let _ = self.apply(id, Event::SessionLost { delegate });
        }
    }

    fn held_by(&self, delegate: DelegateId) -> Vec<TaskId> {
        self.tasks
            .iter()
            .filter(|(_, l)| l.lease.delegate == Some(delegate) && !l.lease.state.is_final())
            .map(|(id, _)| *id)
            .collect()
    }

    fn inbound(&mut self, delegate: DelegateId, msg: pb::delegate_message::Msg) {
        use pb::delegate_message::Msg;
        let ttl_ms = self.config.ttl_ms();
        match msg {
            Msg::Hello(_) => {}
            Msg::Credits(c) => {
                if let Some(&i) = self.index.get(&delegate) {
                    let cap = self.sessions[i].capacity;
                    let cand = &mut self.candidates[i];
                    let before = cand.credits;
                    cand.credits = cand.credits.saturating_add(c.free).min(cap);
                    if !cand.draining {
                        self.free_credits += u64::from(cand.credits - before);
                    }
                }
            }
            Msg::Draining(_) => {
                if let Some(&i) = self.index.get(&delegate) {
                    let cand = &mut self.candidates[i];
                    if !cand.draining {
                        cand.draining = true;
                        self.free_credits -= u64::from(cand.credits);
                        info!(delegate.id = %delegate, "Delegate is draining.");
                    }
                }
            }
            Msg::Ack(a) => {
                self.holder_event(delegate, &a.task_id, a.epoch, |by, epoch| Event::Ack { by, epoch, ttl_ms })
            }
            Msg::Reject(r) => {
                let reason = r.reason;
                self.holder_event(delegate, &r.task_id, r.epoch, |by, epoch| Event::Reject {
                    by,
                    epoch,
                    reason,
                })
            }
            Msg::Heartbeat(h) => {
                for l in h.leases {
                    self.holder_event(delegate, &l.task_id, l.epoch, |by, epoch| Event::Heartbeat {
                        by,
                        epoch,
                        ttl_ms,
                    });
                }
            }
            Msg::Result(r) => {
                let outcome = Outcome {
                    success: r.success,
                    exit_code: r.has_exit_code.then_some(r.exit_code),
                    message: r.message,
                    cancelled: r.cancelled,
                    outputs: r.outputs.into_iter().collect(),
                    error_type: r.error_type,
                };
                self.holder_event(delegate, &r.task_id, r.epoch, |by, epoch| Event::Finish {
                    by,
                    epoch,
                    outcome,
                })
            }
            Msg::Logs(logs) => self.logs_from(delegate, logs),
        }
    }

    /// Applies an event sent by a delegate about a lease, refusing (and auditing)
    /// anything for a lease it does not hold at that epoch.
    fn holder_event(
        &mut self,
        delegate: DelegateId,
        task: &str,
        epoch: u64,
        event: impl FnOnce(DelegateId, Epoch) -> Event,
    ) {
        let epoch = Epoch(epoch);
        let Ok(id) = task.parse::<TaskId>() else {
            warn!(delegate.id = %delegate, task.id = task, "Delegate sent a malformed task id.");
            return;
        };
        if !self.owned_here(id) {
            if self.cluster.is_some() {
                // Kept until we know whether the lease is held through another replica.
                self.foreign_event(delegate, id, epoch, event(delegate, epoch));
                return;
            }
            self.refuse(delegate, id, epoch, "lease is not active (task finished, lost or unknown)".into());
            return;
        }
        if let Err(refused) = self.apply(id, event(delegate, epoch)) {
            self.refuse(delegate, id, epoch, refused.to_string());
        }
    }

    fn refuse(&mut self, delegate: DelegateId, id: TaskId, epoch: Epoch, reason: String) {
        warn!(delegate.id = %delegate, task.id = %id, lease.epoch = %epoch, reason = %reason, "Refused a delegate message for a lease it does not hold.");
        self.metrics.stale_refused.inc();
        self.audit.push(AuditRecord {
            at_ms: self.now,
            actor: format!("delegate:{delegate}"),
            action: "lease.refused".into(),
            subject: id.to_string(),
            detail: format!("epoch {epoch}: {reason}"),
        });
        self.publish(id, LeaseEventKind::StaleRefused, Some(delegate), epoch, 0, reason.clone(), None);
        self.after.push(After::Send(
            delegate,
            pb::manager_message::Msg::LeaseRefused(pb::LeaseRefused {
                task_id: id.to_string(),
                epoch: epoch.0,
                reason,
            }),
        ));
    }

    fn logs_from(&mut self, delegate: DelegateId, logs: pb::TaskLogs) {
        let epoch = Epoch(logs.epoch);
        let Ok(id) = logs.task_id.parse::<TaskId>() else { return };
        if !self.owned_here(id)
            && let Some(c) = self.cluster.as_mut()
            && c.buffer_logs(delegate, id, epoch, &logs)
        {
            return;
        }
        let holds = self.tasks.get(&id).is_some_and(|l| {
            l.lease.state == TaskState::Running
                && l.lease.delegate == Some(delegate)
                && l.lease.epoch == epoch
        });
        if !holds {
            let reason = match self.tasks.get(&id) {
                Some(l) if l.lease.epoch != epoch => {
                    format!("stale epoch {epoch}, current is {}", l.lease.epoch)
                }
                _ => "lease is not active".into(),
            };
            self.refuse(delegate, id, epoch, reason);
            return;
        }
        let Some(live) = self.tasks.get_mut(&id) else { return };
        for line in logs.lines {
            self.logs.push(LogRecord {
                task_id: id,
                seq: live.next_log_seq,
                epoch,
                stream: line.stream,
                text: line.text,
                at_ms: line.at_ms,
            });
            live.next_log_seq += 1;
        }
        self.after.push(After::Changed(id));
    }

    // === transitions ===

    /// Steps one task's lease and schedules what the transition asks for.
    fn apply(&mut self, id: TaskId, event: Event) -> Result<(), Refused> {
        let now = self.now;
        let Some(live) = self.tasks.get_mut(&id) else { return Ok(()) };
        let before = live.lease.state;
        let t = machine::step(&live.lease, event, now)?;
        live.lease = t.next;
        let after_state = live.lease.state;
        if after_state == TaskState::Running && before == TaskState::Offered {
            self.metrics.leases_granted.inc();
            self.metrics.dispatch_latency.observe((now - live.created_ms).max(0) as f64 / 1000.0);
        }
        if t.persist {
            self.stage(id);
        }
        for effect in t.effects {
            match effect {
                Effect::Send { to, epoch, msg } => {
                    let msg = self.message(id, epoch, msg);
                    self.after.push(After::Send(to, msg));
                }
                Effect::Timer { at_ms, event } => {
                    let kind = match event {
                        Event::AckTimeout { epoch } => TimerKind::Ack(epoch),
                        Event::LeaseCheck { epoch } => TimerKind::Lease(epoch),
                        _ => continue,
                    };
                    self.arm(at_ms, id, kind);
                }
                Effect::Publish { kind, delegate, epoch, age_ms, detail } => {
                    match kind {
                        LeaseEventKind::Renewed => self.metrics.leases_renewed.inc(),
                        LeaseEventKind::Lost => self.metrics.leases_lost.inc(),
                        LeaseEventKind::Rejected => self.metrics.offers_rejected.inc(),
                        LeaseEventKind::OfferExpired => self.metrics.offers_expired.inc(),
                        _ => 0,
                    };
                    // Renewals are frequent and carry no news: keep them off the log.
                    if kind != LeaseEventKind::Renewed {
                        debug!(task.id = %id, lease.epoch = %epoch, event = kind.short_name(), detail = %detail, "Lease event.");
                    }
                    self.publish(id, kind, delegate, epoch, age_ms, detail, Some(after_state));
                }
                Effect::Requeue => {
                    if let Some(c) = self.cluster.as_mut() {
                        c.queued.push(id);
                    }
                    if let Some(live) = self.tasks.get(&id) {
                        let (seq, deadline) = (live.queue_seq, live.queue_deadline_ms);
                        self.queue.insert(seq, id);
                        // The queue timer may have fired (and been dropped) while the
                        // task was offered; the task must still expire on time.
                        self.arm(deadline.max(self.now), id, TimerKind::Queue);
                    }
                }
            }
        }
        if before != after_state {
            self.metrics.transition(Some(before), after_state);
            if after_state == TaskState::Lost {
                warn!(task.id = %id, reason = %self.tasks[&id].lease.reason, "Lease lost; the task will not be re-run.");
            }
            if after_state.is_final() {
                self.tasks.remove(&id);
                if let Some(c) = self.cluster.as_mut() {
                    c.done.push(id);
                }
                // Every final transition persists, so the staged write is the final row.
                let row = if self.finished.receiver_count() > 0 {
                    self.staged.get(&id).map(|w| Arc::new(w.record.clone()))
                } else {
                    None
                };
                self.after.push(After::Finished(id, row));
            } else {
                self.after.push(After::Changed(id));
            }
        }
        Ok(())
    }

    fn message(&self, id: TaskId, epoch: Epoch, msg: Message) -> pb::manager_message::Msg {
        use pb::manager_message::Msg;
        let task_id = id.to_string();
        match msg {
            Message::Offer { ack_by_ms } => Msg::Offer(pb::Offer {
                task_id,
                epoch: epoch.0,
                spec: self.tasks.get(&id).map(|l| l.spec.clone()),
                ack_by_ms,
            }),
            Message::Granted { expires_ms } => {
                Msg::Granted(pb::LeaseGranted { task_id, epoch: epoch.0, expires_ms })
            }
            Message::ResultAccepted => Msg::ResultAccepted(pb::ResultAccepted { task_id, epoch: epoch.0 }),
            Message::Refused { reason } => {
                Msg::LeaseRefused(pb::LeaseRefused { task_id, epoch: epoch.0, reason })
            }
            Message::Cancel => Msg::Cancel(pb::CancelTask { task_id, epoch: epoch.0 }),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn publish(
        &mut self,
        id: TaskId,
        kind: LeaseEventKind,
        delegate: Option<DelegateId>,
        epoch: Epoch,
        age_ms: i64,
        detail: String,
        state: Option<TaskState>,
    ) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let name = delegate.and_then(|d| self.names.get(&d).cloned()).unwrap_or_default();
        self.after.push(After::Publish(pb::LeaseEvent {
            kind: kind as i32,
            task_id: id.to_string(),
            delegate_id: delegate.map(|d| d.to_string()).unwrap_or_default(),
            delegate: name,
            epoch: epoch.0,
            at_ms: self.now,
            age_ms: age_ms.max(0) as u64,
            detail,
            state: state.unwrap_or(TaskState::Unspecified) as i32,
        }));
    }

    /// Stages the task's current row for this turn's commit. Several transitions
    /// of one task in one turn collapse into one write.
    fn stage(&mut self, id: TaskId) {
        if self.staged.get(&id).is_some_and(|w| w.record.state.is_final()) {
            // A final row is final: nothing this turn may write over it.
            error!(task.id = %id, "A write over a final task row was dropped.");
            return;
        }
        let Some(live) = self.tasks.get_mut(&id) else { return };
        let l = &live.lease;
        let make = |version| TaskRecord {
            id,
            spec: live.spec.clone(),
            state: l.state,
            epoch: l.epoch,
            version,
            delegate_id: l.delegate,
            exit_code: l.exit_code,
            reason: l.reason.clone(),
            outputs: l.outputs.clone(),
            error_type: l.error_type.clone(),
            created_ms: live.created_ms,
            started_ms: l.started_ms,
            finished_ms: l.finished_ms,
            queue_deadline_ms: live.queue_deadline_ms,
        };
        match self.staged.get_mut(&id) {
            Some(w) => w.record = make(live.version),
            None => {
                let expected = (live.version > 0).then_some(live.version);
                live.version += 1;
                self.staged.insert(id, TaskWrite { record: make(live.version), expected_version: expected });
            }
        }
    }

    fn arm(&mut self, at_ms: i64, task: TaskId, kind: TimerKind) {
        self.next_timer_seq += 1;
        self.timers.push(Reverse(Timer { at_ms, seq: self.next_timer_seq, task, kind }));
    }

    fn fire_timers(&mut self) {
        while let Some(Reverse(t)) = self.timers.peek() {
            if t.at_ms > self.now {
                break;
            }
            let Some(Reverse(t)) = self.timers.pop() else { break };
            let event = match t.kind {
                TimerKind::Ack(epoch) => Event::AckTimeout { epoch },
                TimerKind::Lease(epoch) => Event::LeaseCheck { epoch },
                TimerKind::Queue => match self.tasks.get(&t.task) {
                    Some(l) if l.lease.state == TaskState::Queued => {
                        Event::QueueTimeout { explanation: self.explain(t.task) }
                    }
                    _ => continue,
                },
            };
            if matches!(event, Event::QueueTimeout { .. })
                && let Some(l) = self.tasks.get(&t.task)
            {
                self.queue.remove(&l.queue_seq);
                if self.must_claim(t.task) {
                    self.pick(t.task, cluster::Pick::Expire);
                    continue;
                }
            }
            let _ = self.apply(t.task, event);
        }
    }

    fn explain(&self, id: TaskId) -> String {
        match self.tasks.get(&id) {
            Some(l) => offer::explain(&l.spec, &l.lease.declined, &self.candidates),
            None => String::new(),
        }
    }

    /// Offers queued tasks, oldest first, while any delegate has a free slot.
    ///
    /// One turn looks at no more than [`MAX_SCAN`] queued tasks. When it stops
    /// there, the next turn resumes after the last task it looked at (wrapping
    /// around), so a long run of tasks nobody can take at the head of the queue
    /// cannot starve placeable tasks behind it.
    fn dispatch(&mut self) {
        if self.free_credits == 0 || self.queue.is_empty() {
            self.scan_from = 0;
            self.unproductive = 0;
            return;
        }
        let ack_ms = self.config.offer_timeout.as_millis() as i64;
        let start = self.scan_from;
        let (mut from, mut wrapped, mut scanned, mut placed) = (start, false, 0, false);
        while self.free_credits > 0 && scanned < MAX_SCAN {
            let (seq, id) = match self.queue.range(from..).next().map(|(s, id)| (*s, *id)) {
                Some((seq, _)) if wrapped && seq >= start => break,
                Some(next) => next,
                None if !wrapped && start > 0 => {
                    (wrapped, from) = (true, 0);
                    continue;
                }
                None => break,
            };
            from = seq + 1;
            scanned += 1;
            let Some(live) = self.tasks.get(&id) else {
                self.queue.remove(&seq);
                continue;
            };
            if live.lease.state != TaskState::Queued {
                self.queue.remove(&seq);
                continue;
            }
            if self.now >= live.queue_deadline_ms {
                self.queue.remove(&seq);
                if self.must_claim(id) {
                    self.pick(id, cluster::Pick::Expire);
                    continue;
                }
                let explanation = self.explain(id);
                let _ = self.apply(id, Event::QueueTimeout { explanation });
                continue;
            }
            if let Some(i) = offer::choose(&live.spec, &live.lease.declined, &self.candidates) {
                self.queue.remove(&seq);
                let to = self.candidates[i].id;
                self.candidates[i].credits -= 1;
                self.free_credits -= 1;
                placed = true;
                if self.must_claim(id) {
                    // Offered once the claim is won (see `settle_picks`).
                    self.pick(id, cluster::Pick::Offer(to));
                } else {
                    let _ = self.apply(id, Event::Offer { to, ack_ms });
                }
            }
        }
        // Cut short: come back at once (without waiting for an event) to look at
        // the rest, until one whole lap of the queue has placed nothing.
        self.unproductive = if placed { 0 } else { self.unproductive + scanned };
        if scanned >= MAX_SCAN && self.unproductive < self.queue.len() {
            self.scan_from = from;
        } else {
            self.scan_from = 0;
            self.unproductive = 0;
        }
    }

    fn snapshot(&self) -> Snapshot {
        let leases = self
            .tasks
            .iter()
            .filter(|(_, l)| matches!(l.lease.state, TaskState::Offered | TaskState::Running))
            .map(|(id, l)| pb::Lease {
                task_id: id.to_string(),
                delegate_id: l.lease.delegate.map(|d| d.to_string()).unwrap_or_default(),
                delegate: l.lease.delegate.and_then(|d| self.names.get(&d).cloned()).unwrap_or_default(),
                epoch: l.lease.epoch.0,
                state: l.lease.state as i32,
                since_ms: l.lease.since_ms,
                expires_ms: l.lease.deadline_ms,
                replica: self.config.replica.clone().unwrap_or_default(),
            })
            .collect();
        let mut running: HashMap<DelegateId, u32> = HashMap::new();
        for l in self.tasks.values() {
            if let (Some(d), TaskState::Offered | TaskState::Running) = (l.lease.delegate, l.lease.state) {
                *running.entry(d).or_default() += 1;
            }
        }
        let sessions = self
            .candidates
            .iter()
            .zip(&self.sessions)
            .map(|(c, s)| SessionView {
                delegate: c.id,
                capacity: s.capacity,
                free: c.credits,
                running: running.get(&c.id).copied().unwrap_or(0),
                draining: c.draining,
                since_ms: s.since_ms,
            })
            .collect();
        Snapshot { leases, sessions }
    }

    // === commit and effects ===

    async fn commit(&mut self) -> Result<(), store::Error> {
        let staged = &self.staged;
        let notices = match self.cluster.as_mut() {
            Some(c) => {
                c.take_notices(|id| staged.get(&id).is_none_or(|w| w.record.state == TaskState::Queued))
            }
            None => vec![],
        };
        let batch = Batch {
            tasks: self.staged.drain().map(|(_, w)| w).collect(),
            logs: std::mem::take(&mut self.logs),
            audit: std::mem::take(&mut self.audit),
            notices,
            owner: self.config.replica.clone(),
        };
        if batch.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        retrying("batch commit", || self.store.commit(&batch)).await?;
        self.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.commit_rows.observe(batch.tasks.len() as f64);
        Ok(())
    }

    fn flush(&mut self) {
        let mut notified: HashSet<TaskId> = HashSet::new();
        for a in std::mem::take(&mut self.after) {
            match a {
                After::Send(to, msg) => {
                    if let Some(&i) = self.index.get(&to) {
                        let _ = self.sessions[i].tx.send(Box::new(Ok(pb::ManagerMessage { msg: Some(msg) })));
                    }
                }
                After::Publish(e) => {
                    let _ = self.events.send(e);
                }
                After::Reply(reply, ids) => {
                    let _ = reply.send(ids);
                }
                After::Changed(id) => {
                    if notified.insert(id) {
                        let _ = self.changes.send(id);
                    }
                }
                After::Then(f) => f(),
                After::Finished(id, row) => {
                    if let Some(ws) = self.waiters.remove(&id) {
                        for w in ws {
                            let _ = w.send(());
                        }
                    }
                    let _ = self.changes.send(id);
                    if let Some(row) = row {
                        let _ = self.finished.send(row);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The engine against a real SQLite store and an in-memory session (no sockets).

    use super::*;
    use crate::store::sqlite::SqliteStore;

    async fn engine() -> (Handle, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let (handle, _) = engine_on(&dir).await;
        (handle, dir)
    }

    /// An engine on the SQLite file in `dir` (created or reopened), and its store.
    pub(super) async fn engine_on(dir: &tempfile::TempDir) -> (Handle, Arc<dyn Store>) {
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.unwrap());
        store.migrate().await.unwrap();
        let (engine, handle) =
            Engine::start(Arc::clone(&store), EngineConfig::default(), Arc::new(Metrics::new()))
                .await
                .unwrap();
        tokio::spawn(engine.run());
        (handle, store)
    }

    pub(super) fn noop(pinned: Option<DelegateId>) -> pb::TaskSpec {
        pb::TaskSpec {
            kind: "noop".into(),
            scope: Some(pb::Scope { account: "default".into(), ..Default::default() }),
            delegate_id: pinned.map(|d| d.to_string()).unwrap_or_default(),
            ..Default::default()
        }
    }

    pub(super) async fn attach(
        h: &Handle,
        capacity: u32,
    ) -> (DelegateId, mpsc::UnboundedReceiver<Box<Result<pb::ManagerMessage, Status>>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let delegate = DelegateId::new();
        let hello = pb::Hello { version: "t".into(), capacity, ..Default::default() };
        let scope = pb::Scope { account: "default".into(), ..Default::default() };
        h.attach(Attach { delegate, session: 1, name: "d".into(), scope, hello, tx }).await.unwrap();
        (delegate, rx)
    }

    pub(super) async fn next_offer(
        rx: &mut mpsc::UnboundedReceiver<Box<Result<pb::ManagerMessage, Status>>>,
    ) -> pb::Offer {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
            if let Ok(pb::ManagerMessage { msg: Some(pb::manager_message::Msg::Offer(o)) }) = *m {
                return o;
            }
        }
    }

    pub(super) async fn next_finished(rx: &mut broadcast::Receiver<Arc<TaskRecord>>) -> Arc<TaskRecord> {
        tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn tasks_with_chosen_ids_are_submitted_once_and_finish_with_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let (h, store) = engine_on(&dir).await;
        let mut finished = h.finished();
        let id = TaskId::new();
        let other = TaskId::new();
        h.submit_with_ids(vec![(id, noop(None)), (id, noop(None)), (other, noop(None))]).await.unwrap();
        let row = store.get_task(id).await.unwrap().expect("durable when the call returns");
        assert_eq!((row.state, row.version), (TaskState::Queued, 1));
        // Again while live: nothing changes.
        h.submit_with_ids(vec![(id, noop(None))]).await.unwrap();
        assert_eq!(store.get_task(id).await.unwrap(), Some(row));

        let (d, mut rx) = attach(&h, 1).await;
        let offer = next_offer(&mut rx).await;
        let epoch = offer.epoch;
        let first: TaskId = offer.task_id.parse().unwrap();
        h.inbound(
            d,
            1,
            pb::delegate_message::Msg::Ack(pb::OfferAck { task_id: offer.task_id.clone(), epoch }),
        )
        .await
        .unwrap();
        let result = pb::TaskResult {
            task_id: offer.task_id,
            epoch,
            success: false,
            exit_code: 3,
            has_exit_code: true,
            message: "exit code 3".into(),
            outputs: [("X".to_string(), "before exit".to_string())].into(),
            error_type: "Unknown".into(),
            ..Default::default()
        };
        h.inbound(d, 1, pb::delegate_message::Msg::Result(result)).await.unwrap();
        let done = next_finished(&mut finished).await;
        assert_eq!(done.id, first);
        assert_eq!((done.state, done.error_type.as_str()), (TaskState::Failed, "Unknown"));
        assert_eq!(done.outputs["X"], "before exit");
        assert_eq!(
            store.get_task(first).await.unwrap().as_ref(),
            Some(&*done),
            "published row is the committed row"
        );

        // Finished and gone from memory, then the engine restarts: only the store knows it.
        drop(h);
        let (h, store) = engine_on(&dir).await;
        h.submit_with_ids(vec![(first, noop(None))]).await.unwrap();
        assert_eq!(store.get_task(first).await.unwrap().as_ref(), Some(&*done), "left as it was");
        assert_eq!(store.list_tasks(&[], 10).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn expired_and_cancelled_tasks_are_published_with_their_error_type() {
        let (h, _dir) = engine().await;
        let mut finished = h.finished();
        let expiring = TaskId::new();
        let spec = pb::TaskSpec { queue_timeout_ms: 1, ..noop(None) };
        h.submit_with_ids(vec![(expiring, spec)]).await.unwrap();
        let done = next_finished(&mut finished).await;
        assert_eq!(done.id, expiring);
        assert_eq!((done.state, done.error_type.as_str()), (TaskState::Expired, "DelegateProvisioning"));

        let cancelled = h.submit(vec![noop(Some(DelegateId::new()))]).await.unwrap()[0];
        assert_eq!(h.cancel(cancelled).await.unwrap(), CancelOutcome::Cancelled);
        let done = next_finished(&mut finished).await;
        assert_eq!((done.id, done.state, done.error_type.as_str()), (cancelled, TaskState::Cancelled, ""));
    }

    #[tokio::test]
    async fn unplaceable_head_of_queue_does_not_starve_the_rest() {
        let (h, _dir) = engine().await;
        // More tasks than one dispatch pass looks at, all pinned to a delegate that never comes.
        let absent = DelegateId::new();
        h.submit((0..MAX_SCAN + 500).map(|_| noop(Some(absent))).collect()).await.unwrap();
        let placeable = h.submit(vec![noop(None)]).await.unwrap()[0];
        let (_d, mut rx) = attach(&h, 1).await;
        let offer = next_offer(&mut rx).await;
        assert_eq!(offer.task_id, placeable.to_string());
    }

    #[tokio::test]
    async fn offers_only_after_the_queue_row_is_durable_and_acks_grant() {
        let (h, _dir) = engine().await;
        let (d, mut rx) = attach(&h, 2).await;
        let id = h.submit(vec![noop(None)]).await.unwrap()[0];
        let offer = next_offer(&mut rx).await;
        assert_eq!(offer.task_id, id.to_string());
        assert_eq!(offer.epoch, 1);
        let ack = pb::delegate_message::Msg::Ack(pb::OfferAck { task_id: id.to_string(), epoch: 1 });
        h.inbound(d, 1, ack).await.unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
            if let Ok(pb::ManagerMessage { msg: Some(pb::manager_message::Msg::Granted(g)) }) = *m {
                assert_eq!((g.task_id, g.epoch), (id.to_string(), 1));
                break;
            }
        }
        let snap = h.snapshot().await.unwrap();
        assert_eq!(snap.leases.len(), 1);
        assert_eq!(snap.leases[0].state, TaskState::Running as i32);
    }
}
