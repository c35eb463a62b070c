//! The lease loop. [`Book`] is the delegate's lease bookkeeping as a pure state
//! machine: it takes manager messages and local events and returns
//! [`Action`]s (messages to send, checks to run, tasks to start or stop), with
//! no I/O, so credits and lease lifetimes are tested without sockets.
//! [`Runner`] owns a book and performs its actions: it spawns capability checks
//! and tasks, feeds their results back, answers the link's session events and
//! handles SIGTERM/SIGINT by draining.
//!
//! # Lease life on the delegate
//!
//! `Offer` → *checking* → `OfferAck` → *acked* → `LeaseGranted` → *running* →
//! *done* (result kept) → `ResultAccepted` → forgotten. `OfferReject` or
//! `LeaseRefused` end it early. Work starts only on `LeaseGranted`.
//!
//! # Credits (incremental)
//!
//! Hello implies a grant of `capacity - held`. Each Offer spends one slot; the
//! delegate gives exactly one back with `Credits{free: 1}` when it is done with
//! that offer: rejected, refused, or result accepted. So at all times, within a
//! session, `free + leases in the book == capacity`, and the manager's count
//! equals `free`. Messages about leases the book does not hold (late, stale,
//! duplicate) never return a slot, so a slot cannot be returned twice. Offers
//! and acks of a dropped session are forgotten (nothing ran: work starts only
//! on a grant), and credits restart from the next Hello.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use dray_shared::clock;
use dray_shared::pb::delegate_message::Msg;
use dray_shared::pb::manager_message::Msg as In;
use dray_shared::pb::{
    Credits, Draining, Hello, LeaseRef, Offer, OfferAck, OfferReject, TaskResult, TaskSpec,
};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::lease::LeaseKey;
use crate::link::stream::Outbox;
use crate::link::{LinkError, LinkEvent};
use crate::secrets::SecretStore;
use crate::targets::{CheckContext, Outcome, RunContext, StopHandle, StopReason, Targets, stop_pair};

/// Version announced in Hello.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// After a drain, how long to wait for the manager to accept final results.
pub const RESULT_WAIT: Duration = Duration::from_secs(5);
/// After the drain grace: time for tasks to stop and results to be accepted.
const GIVE_UP_AFTER_GRACE: Duration = Duration::from_secs(15);
/// Bound on each step of closing the session before a clean exit.
const CLOSE_WAIT: Duration = Duration::from_millis(500);
/// Longest a capability check may take when the offer gives no deadline.
const MAX_CHECK: Duration = Duration::from_secs(30);

/// Something the runner must do for the book.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send a control message.
    Send(Msg),
    /// Run the capability check for an offer, then call [`Book::check_done`].
    Check {
        /// The offer.
        key: LeaseKey,
        /// What it asks for.
        spec: TaskSpec,
        /// Ack deadline, Unix ms (0 = none given).
        ack_by_ms: i64,
    },
    /// The lease is granted: start the work, then call [`Book::finished`].
    Start {
        /// The lease.
        key: LeaseKey,
        /// What to run.
        spec: TaskSpec,
    },
    /// Stop a running task.
    Stop {
        /// The lease.
        key: LeaseKey,
        /// Why.
        reason: StopReason,
    },
    /// Drop the lease's queued output.
    PurgeLogs(LeaseKey),
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Checking(TaskSpec),
    Acked(TaskSpec),
    Running,
    Done(TaskResult),
}

/// Where the session is, as far as the book cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// No session.
    Down,
    /// Hello sent, Welcome not yet received.
    Hello,
    /// Welcomed.
    Up,
}

/// The delegate's lease bookkeeping. Pure: no I/O, no clock.
#[derive(Debug, Clone)]
pub struct Book {
    capacity: u32,
    free: u32,
    link: LinkState,
    draining: bool,
    leases: BTreeMap<LeaseKey, Phase>,
    /// Bumped whenever the set of held leases changes, so the runner republishes
    /// the heartbeat list only then (it is O(capacity) to build).
    held_version: u64,
}

fn credit() -> Action {
    Action::Send(Msg::Credits(Credits { free: 1 }))
}

impl Book {
    /// An empty book for `capacity` slots.
    pub fn new(capacity: u32) -> Self {
        Book {
            capacity,
            free: 0,
            link: LinkState::Down,
            draining: false,
            leases: BTreeMap::new(),
            held_version: 0,
        }
    }

    /// Slots the manager may still use in this session.
    pub fn free(&self) -> u32 {
        self.free
    }

    /// Session state.
    pub fn link(&self) -> LinkState {
        self.link
    }

    /// True once draining began.
    pub fn draining(&self) -> bool {
        self.draining
    }

    /// Leases held: running, or finished with the result not yet accepted.
    pub fn held(&self) -> Vec<LeaseRef> {
        self.leases
            .iter()
            .filter(|(_, p)| matches!(p, Phase::Running | Phase::Done(_)))
            .map(|(k, _)| k.to_ref())
            .collect()
    }

    /// Changes whenever [`Book::held`] may have changed.
    pub fn held_version(&self) -> u64 {
        self.held_version
    }

    /// True while an offer is being checked or awaits its grant, or a task runs.
    pub fn busy(&self) -> bool {
        self.leases.values().any(|p| !matches!(p, Phase::Done(_)))
    }

    /// Results not yet accepted by the manager.
    pub fn pending_results(&self) -> usize {
        self.leases.values().filter(|p| matches!(p, Phase::Done(_))).count()
    }

    /// Leases in the book (every one occupies a slot).
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// True when the book is empty.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Offers still being checked die with their session: no ack went out, and
    /// the manager requeues them when the session drops. Acked offers survive:
    /// the manager may have made the lease durable with the grant lost in
    /// transit, so the next Hello lists them and the manager either grants
    /// again or refuses.
    fn forget_offers(&mut self) {
        self.leases.retain(|_, p| matches!(p, Phase::Running | Phase::Done(_) | Phase::Acked(_)));
    }

    /// Offers acknowledged whose grant never came.
    pub fn acked(&self) -> Vec<LeaseRef> {
        self.leases.iter().filter(|(_, p)| matches!(p, Phase::Acked(_))).map(|(k, _)| k.to_ref()).collect()
    }

    /// A new session: the Hello to send first. Credits restart from it.
    pub fn hello(&mut self, version: &str, tags: &[String]) -> Hello {
        self.forget_offers();
        self.link = LinkState::Hello;
        let held = self.held();
        let acked = self.acked();
        self.free = self.capacity.saturating_sub((held.len() + acked.len()) as u32);
        Hello {
            version: version.to_string(),
            tags: tags.to_vec(),
            capacity: self.capacity,
            held,
            acked,
            protocol: dray_shared::protocol::PROTOCOL,
        }
    }

    /// Welcome arrived: repeat what the manager must hear again on a new session.
    pub fn welcome(&mut self) -> Vec<Action> {
        self.link = LinkState::Up;
        let mut out = Vec::new();
        if self.draining {
            out.push(Action::Send(Msg::Draining(Draining {})));
        }
        for p in self.leases.values() {
            if let Phase::Done(r) = p {
                out.push(Action::Send(Msg::Result(r.clone())));
            }
        }
        out
    }

    /// The session ended.
    pub fn session_lost(&mut self) {
        self.link = LinkState::Down;
        self.forget_offers();
    }

    /// A message from the manager (Welcome is handled by [`Book::welcome`]).
    pub fn on_message(&mut self, msg: In) -> Vec<Action> {
        match msg {
            In::Welcome(_) => Vec::new(),
            In::Offer(o) => self.on_offer(o),
            In::Granted(g) => self.with_key(&g.task_id, g.epoch, |b, k| b.on_granted(k)),
            In::LeaseRefused(r) => self.with_key(&r.task_id, r.epoch, |b, k| b.on_refused(k)),
            In::ResultAccepted(a) => self.with_key(&a.task_id, a.epoch, |b, k| b.on_accepted(k)),
            In::Cancel(c) => self.with_key(&c.task_id, c.epoch, |b, k| b.on_cancel(k)),
        }
    }

    fn with_key(
        &mut self,
        task_id: &str,
        epoch: u64,
        f: impl FnOnce(&mut Self, LeaseKey) -> Vec<Action>,
    ) -> Vec<Action> {
        match LeaseKey::from_wire(task_id, epoch) {
            Ok(k) => f(self, k),
            // Cannot be a lease of ours: every key in the book parsed.
            Err(_) => Vec::new(),
        }
    }

    fn reject(&mut self, task_id: String, epoch: u64, reason: String) -> Vec<Action> {
        self.free += 1;
        vec![Action::Send(Msg::Reject(OfferReject { task_id, epoch, reason })), credit()]
    }

    fn on_offer(&mut self, o: Offer) -> Vec<Action> {
        if self.free == 0 {
            // The manager spent a slot it did not have; there is none to give back.
            let reason = "delegate has no free slot".to_string();
            return vec![Action::Send(Msg::Reject(OfferReject {
                task_id: o.task_id,
                epoch: o.epoch,
                reason,
            }))];
        }
        self.free -= 1;
        let key = match LeaseKey::from_wire(&o.task_id, o.epoch) {
            Ok(k) => k,
            Err(e) => return self.reject(o.task_id, o.epoch, e.to_string()),
        };
        if self.leases.contains_key(&key) {
            // A repeated offer of a lease already in hand: answering it (a
            // reject would requeue a task we hold) would be wrong; just give
            // back the slot it spent.
            self.free += 1;
            return vec![credit()];
        }
        let Some(spec) = o.spec else {
            return self.reject(o.task_id, o.epoch, "offer carries no task spec".into());
        };
        if self.draining {
            return self.reject(o.task_id, o.epoch, "delegate is draining".into());
        }
        self.leases.insert(key, Phase::Checking(spec.clone()));
        vec![Action::Check { key, spec, ack_by_ms: o.ack_by_ms }]
    }

    /// The capability check of an offer finished.
    pub fn check_done(&mut self, key: LeaseKey, result: Result<(), String>) -> Vec<Action> {
        let Some(Phase::Checking(_)) = self.leases.get(&key) else {
            // Refused or its session ended while checking.
            return Vec::new();
        };
        let Some(Phase::Checking(spec)) = self.leases.remove(&key) else {
            return Vec::new();
        };
        let (task_id, epoch) = (key.task.to_string(), key.epoch.0);
        match result {
            Ok(()) if !self.draining => {
                self.leases.insert(key, Phase::Acked(spec));
                vec![Action::Send(Msg::Ack(OfferAck { task_id, epoch }))]
            }
            Ok(()) => self.reject(task_id, epoch, "delegate is draining".into()),
            Err(reason) => self.reject(task_id, epoch, reason),
        }
    }

    fn on_granted(&mut self, key: LeaseKey) -> Vec<Action> {
        let Some(Phase::Acked(_)) = self.leases.get(&key) else {
            // Duplicate grant of a running lease, or a grant for nothing we acked.
            return Vec::new();
        };
        let Some(Phase::Acked(spec)) = self.leases.insert(key, Phase::Running) else {
            return Vec::new();
        };
        self.held_version += 1;
        vec![Action::Start { key, spec }]
    }

    fn on_refused(&mut self, key: LeaseKey) -> Vec<Action> {
        let Some(phase) = self.leases.remove(&key) else {
            return Vec::new();
        };
        self.free += 1;
        match phase {
            Phase::Checking(_) | Phase::Acked(_) => vec![credit()],
            Phase::Running => {
                self.held_version += 1;
                vec![Action::Stop { key, reason: StopReason::Refused }, Action::PurgeLogs(key), credit()]
            }
            Phase::Done(_) => {
                self.held_version += 1;
                vec![Action::PurgeLogs(key), credit()]
            }
        }
    }

    fn on_accepted(&mut self, key: LeaseKey) -> Vec<Action> {
        if !matches!(self.leases.get(&key), Some(Phase::Done(_))) {
            return Vec::new();
        }
        self.leases.remove(&key);
        self.held_version += 1;
        self.free += 1;
        vec![credit()]
    }

    fn on_cancel(&mut self, key: LeaseKey) -> Vec<Action> {
        match self.leases.get(&key) {
            Some(Phase::Running) => vec![Action::Stop { key, reason: StopReason::Cancelled }],
            _ => Vec::new(),
        }
    }

    /// A started task ended. The result is kept until accepted or refused.
    pub fn finished(&mut self, key: LeaseKey, outcome: &Outcome) -> Vec<Action> {
        if !matches!(self.leases.get(&key), Some(Phase::Running)) {
            // Refused while running: its result is dropped.
            return Vec::new();
        }
        let result = outcome.to_result(key);
        self.leases.insert(key, Phase::Done(result.clone()));
        if self.link == LinkState::Up {
            vec![Action::Send(Msg::Result(result))]
        } else {
            // Re-sent after the next Welcome.
            Vec::new()
        }
    }

    /// Begin draining: tell the manager, reject offers from now on.
    pub fn drain(&mut self) -> Vec<Action> {
        if self.draining {
            return Vec::new();
        }
        self.draining = true;
        if self.link == LinkState::Up { vec![Action::Send(Msg::Draining(Draining {}))] } else { Vec::new() }
    }

    /// The drain grace ran out: stop every running task.
    pub fn shutdown(&mut self) -> Vec<Action> {
        self.leases
            .iter()
            .filter(|(_, p)| matches!(p, Phase::Running))
            .map(|(k, _)| Action::Stop { key: *k, reason: StopReason::Shutdown })
            .collect()
    }
}

/// What the runner needs besides the book.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Slots.
    pub capacity: u32,
    /// Tags announced in Hello.
    pub tags: Vec<String>,
    /// How long a drain waits for running tasks.
    pub drain_grace: Duration,
}

/// Why the runner stopped other than by draining.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The link gave up (refused, expired certificate...).
    #[error(transparent)]
    Link(#[from] LinkError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

enum TaskEvent {
    Checked { key: LeaseKey, result: Result<(), String> },
    Finished { key: LeaseKey, outcome: Outcome },
}

/// Performs a [`Book`]'s actions.
pub struct Runner {
    book: Book,
    cfg: RunnerConfig,
    outbox: Arc<Outbox>,
    targets: Targets,
    secrets: Arc<SecretStore>,
    tasks_tx: mpsc::Sender<TaskEvent>,
    tasks_rx: mpsc::Receiver<TaskEvent>,
    running: HashMap<LeaseKey, StopHandle>,
    held_tx: watch::Sender<Vec<LeaseRef>>,
    ready_tx: watch::Sender<bool>,
    generation: u64,
    grace_expired: bool,
    published_held: u64,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("book", &self.book)
            .field("running", &self.running.len())
            .finish_non_exhaustive()
    }
}

impl Runner {
    /// A runner, and the receiver of the held-lease list for heartbeats.
    pub fn new(
        cfg: RunnerConfig,
        outbox: Arc<Outbox>,
        targets: Targets,
        secrets: Arc<SecretStore>,
    ) -> (Self, watch::Receiver<Vec<LeaseRef>>) {
        let (tasks_tx, tasks_rx) = mpsc::channel(64);
        let (held_tx, held_rx) = watch::channel(Vec::new());
        let runner = Runner {
            book: Book::new(cfg.capacity),
            cfg,
            outbox,
            targets,
            secrets,
            tasks_tx,
            tasks_rx,
            running: HashMap::new(),
            held_tx,
            ready_tx: watch::channel(false).0,
            generation: 0,
            grace_expired: false,
            published_held: 0,
        };
        (runner, held_rx)
    }

    /// True while a session with the manager is up (for the health endpoint).
    pub fn readiness(&self) -> watch::Receiver<bool> {
        self.ready_tx.subscribe()
    }

    /// Runs until drained (Ok) or the link fails for good.
    pub async fn run(
        mut self,
        mut link_rx: mpsc::Receiver<LinkEvent>,
        mut link: JoinHandle<LinkError>,
    ) -> Result<(), RunnerError> {
        let mut sigterm = signal(SignalKind::terminate()).map_err(RunnerError::Signals)?;
        let mut sigint = signal(SignalKind::interrupt()).map_err(RunnerError::Signals)?;
        let mut grace_at: Option<Instant> = None;
        let mut results_at: Option<Instant> = None;
        // Set when the grace expires: by then every task has been told to stop;
        // whatever is still not settled later (an ack never granted nor refused,
        // a process stuck in the kernel) must not keep the delegate alive.
        let mut give_up_at: Option<Instant> = None;
        loop {
            if self.grace_expired {
                let at = *give_up_at.get_or_insert_with(|| Instant::now() + GIVE_UP_AFTER_GRACE);
                if Instant::now() >= at {
                    warn!(
                        tasks.running = self.running.len(),
                        "Drain did not settle in time; exiting anyway."
                    );
                    break;
                }
            }
            if self.book.draining() && !self.book.busy() && self.running.is_empty() {
                let pending = self.book.pending_results();
                if pending == 0 {
                    info!("Drained; exiting.");
                    break;
                }
                let at = *results_at.get_or_insert_with(|| Instant::now() + RESULT_WAIT);
                if Instant::now() >= at {
                    warn!(
                        results.pending = pending,
                        "Drained, but the manager did not accept every result in time; exiting."
                    );
                    break;
                }
            }
            tokio::select! {
                biased;
                res = &mut link => {
                    let err = res.unwrap_or(LinkError::Crashed);
                    self.abort_tasks().await;
                    return Err(err.into());
                }
                Some(ev) = link_rx.recv() => self.on_link(ev),
                Some(ev) = self.tasks_rx.recv() => self.on_task(ev),
                _ = sigterm.recv() => self.on_signal("SIGTERM", &mut grace_at),
                _ = sigint.recv() => self.on_signal("SIGINT", &mut grace_at),
                _ = sleep_until_opt(grace_at), if !self.grace_expired => self.on_grace_expired(),
                _ = sleep_until_opt(results_at) => {}
                _ = sleep_until_opt(give_up_at) => {}
            }
            self.publish_held();
        }
        self.close_session(&mut link_rx).await;
        link.abort();
        Ok(())
    }

    /// Before a clean exit: let the outbox drain, half-close the stream so the
    /// transport sends what it holds, and give the manager a moment to close
    /// its side. Bounded: a dead manager must not hold up the exit.
    async fn close_session(&mut self, link_rx: &mut mpsc::Receiver<LinkEvent>) {
        if self.book.link() == LinkState::Down {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_WAIT, self.outbox.flushed()).await;
        self.outbox.end_session(self.generation);
        let generation = self.generation;
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(ev) = link_rx.recv().await {
                if matches!(ev, LinkEvent::Lost { generation: g } if g == generation) {
                    return;
                }
            }
        })
        .await;
    }

    fn publish_held(&mut self) {
        let version = self.book.held_version();
        if version != self.published_held {
            self.published_held = version;
            self.held_tx.send_replace(self.book.held());
        }
    }

    fn on_link(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Connecting { reply } => {
                self.ready_tx.send_replace(false);
                self.book.session_lost();
                let hello = self.book.hello(VERSION, &self.cfg.tags);
                debug!(held = hello.held.len(), credits = self.book.free(), "Opening a session.");
                self.generation = self.outbox.begin_session(hello);
                let _ = reply.send(self.generation);
            }
            LinkEvent::Welcomed { generation, .. } if generation == self.generation => {
                self.ready_tx.send_replace(true);
                let actions = self.book.welcome();
                self.perform(actions);
            }
            LinkEvent::Inbound { generation, msg } if generation == self.generation => {
                log_inbound(&msg);
                let actions = self.book.on_message(msg);
                self.perform(actions);
            }
            LinkEvent::Lost { generation } if generation == self.generation => {
                self.ready_tx.send_replace(false);
                self.book.session_lost();
                if !self.running.is_empty() {
                    info!(tasks.running = self.running.len(), "Session lost; tasks keep running.");
                }
            }
            // Events of a session that has already been replaced.
            LinkEvent::Welcomed { .. } | LinkEvent::Inbound { .. } | LinkEvent::Lost { .. } => {}
        }
    }

    fn on_task(&mut self, ev: TaskEvent) {
        match ev {
            TaskEvent::Checked { key, result } => {
                match &result {
                    Ok(()) => {
                        debug!(task.id = %key.task, lease.epoch = key.epoch.0, "Offer checked; acking.")
                    }
                    Err(reason) => {
                        info!(task.id = %key.task, lease.epoch = key.epoch.0, reason = %reason, "Rejecting offer.")
                    }
                }
                let actions = self.book.check_done(key, result);
                self.perform(actions);
            }
            TaskEvent::Finished { key, outcome } => {
                self.running.remove(&key);
                info!(
                    task.id = %key.task,
                    lease.epoch = key.epoch.0,
                    task.success = outcome.success,
                    task.exit_code = ?outcome.exit_code,
                    task.cancelled = outcome.cancelled,
                    task.message = %outcome.message,
                    "Task finished."
                );
                let actions = self.book.finished(key, &outcome);
                self.perform(actions);
            }
        }
    }

    fn on_signal(&mut self, name: &str, grace_at: &mut Option<Instant>) {
        if !self.book.draining() {
            info!(
                signal = name,
                drain.grace = %humantime::format_duration(self.cfg.drain_grace),
                tasks.running = self.running.len(),
                "Draining: rejecting new offers and waiting for running tasks."
            );
            let actions = self.book.drain();
            self.perform(actions);
            *grace_at = Some(Instant::now() + self.cfg.drain_grace);
        } else if !self.grace_expired {
            warn!(signal = name, "Second signal while draining; stopping running tasks now.");
            *grace_at = Some(Instant::now());
        }
    }

    fn on_grace_expired(&mut self) {
        self.grace_expired = true;
        let actions = self.book.shutdown();
        if !actions.is_empty() {
            warn!(tasks.running = actions.len(), "Drain grace expired; stopping running tasks.");
        }
        self.perform(actions);
    }

    /// Stops every task and waits (bounded) for them to end. Used when the link
    /// fails for good: their leases are lost anyway, but their processes must
    /// not outlive the delegate.
    async fn abort_tasks(&mut self) {
        if self.running.is_empty() {
            return;
        }
        warn!(tasks.running = self.running.len(), "Stopping running tasks.");
        for h in self.running.values() {
            h.stop(StopReason::Shutdown);
        }
        let give_up = Instant::now() + crate::targets::shell::KILL_GRACE + Duration::from_secs(2);
        while !self.running.is_empty() {
            match tokio::time::timeout_at(give_up, self.tasks_rx.recv()).await {
                Ok(Some(TaskEvent::Finished { key, .. })) => {
                    self.running.remove(&key);
                }
                Ok(Some(TaskEvent::Checked { .. })) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }

    fn perform(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send(m) => self.outbox.push_control(m),
                Action::Check { key, spec, ack_by_ms } => self.check(key, spec, ack_by_ms),
                Action::Start { key, spec } => self.start(key, spec),
                Action::Stop { key, reason } => {
                    if let Some(h) = self.running.get(&key) {
                        info!(task.id = %key.task, lease.epoch = key.epoch.0, reason = ?reason, "Stopping task.");
                        h.stop(reason);
                    }
                }
                Action::PurgeLogs(key) => self.outbox.purge(key),
            }
        }
    }

    fn check(&mut self, key: LeaseKey, spec: TaskSpec, ack_by_ms: i64) {
        let Some(target) = self.targets.get(&spec.kind) else {
            let reason = format!(
                "unknown task kind {:?} (this delegate runs: {})",
                spec.kind,
                self.targets.kinds().join(", ")
            );
            info!(task.id = %key.task, lease.epoch = key.epoch.0, reason = %reason, "Rejecting offer.");
            let actions = self.book.check_done(key, Err(reason));
            self.perform(actions);
            return;
        };
        // Leave a little of the ack window for the ack itself to travel.
        let budget = if ack_by_ms > 0 {
            Duration::from_millis(
                (ack_by_ms - clock::now_ms() - 100).clamp(50, MAX_CHECK.as_millis() as i64) as u64
            )
        } else {
            MAX_CHECK
        };
        let cx = CheckContext { key, secrets: Arc::clone(&self.secrets) };
        let tx = self.tasks_tx.clone();
        tokio::spawn(async move {
            let check = tokio::spawn(async move {
                match tokio::time::timeout(budget, target.check(&spec, &cx)).await {
                    Ok(r) => r,
                    Err(_) => Err("capability check did not finish before the ack deadline".to_string()),
                }
            });
            let result =
                check.await.unwrap_or_else(|_| Err("internal error: capability check panicked".into()));
            let _ = tx.send(TaskEvent::Checked { key, result }).await;
        });
    }

    fn start(&mut self, key: LeaseKey, spec: TaskSpec) {
        let target = self.targets.get(&spec.kind);
        let (Some(target), false) = (target, self.grace_expired) else {
            let outcome = if self.grace_expired {
                Outcome::stopped(StopReason::Shutdown)
            } else {
                Outcome::failed(format!("unknown task kind {:?}", spec.kind))
            };
            let actions = self.book.finished(key, &outcome);
            self.perform(actions);
            return;
        };
        info!(task.id = %key.task, lease.epoch = key.epoch.0, task.kind = %spec.kind, "Lease granted; starting task.");
        let (handle, signal) = stop_pair();
        let cx = RunContext::new(key, Arc::clone(&self.secrets), Arc::clone(&self.outbox), signal);
        let masker = cx.masker();
        self.running.insert(key, handle);
        let tx = self.tasks_tx.clone();
        tokio::spawn(async move {
            let run = tokio::spawn(async move { target.run(spec, cx).await });
            let mut outcome =
                run.await.unwrap_or_else(|_| Outcome::failed("internal error: task runner panicked"));
            outcome.mask(&masker);
            let _ = tx.send(TaskEvent::Finished { key, outcome }).await;
        });
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn log_inbound(msg: &In) {
    match msg {
        In::Welcome(_) => {}
        In::Offer(o) => debug!(
            task.id = %o.task_id,
            lease.epoch = o.epoch,
            task.kind = o.spec.as_ref().map(|s| s.kind.as_str()).unwrap_or(""),
            "Offer received."
        ),
        In::Granted(g) => {
            debug!(task.id = %g.task_id, lease.epoch = g.epoch, lease.expires_ms = g.expires_ms, "Lease granted.")
        }
        In::LeaseRefused(r) => {
            warn!(task.id = %r.task_id, lease.epoch = r.epoch, reason = %r.reason, "Lease refused by the manager; dropping it.")
        }
        In::ResultAccepted(a) => debug!(task.id = %a.task_id, lease.epoch = a.epoch, "Result accepted."),
        In::Cancel(c) => info!(task.id = %c.task_id, lease.epoch = c.epoch, "Cancel requested."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dray_shared::pb::{CancelTask, LeaseGranted, LeaseRefused, ResultAccepted};
    use dray_shared::{Epoch, TaskId};
    use proptest::prelude::*;

    fn key() -> LeaseKey {
        LeaseKey { task: TaskId::new(), epoch: Epoch(1) }
    }

    fn offer(k: LeaseKey) -> In {
        In::Offer(Offer {
            task_id: k.task.to_string(),
            epoch: k.epoch.0,
            spec: Some(TaskSpec { kind: "noop".into(), ..Default::default() }),
            ack_by_ms: 0,
        })
    }
    fn granted(k: LeaseKey) -> In {
        In::Granted(LeaseGranted { task_id: k.task.to_string(), epoch: k.epoch.0, expires_ms: 0 })
    }
    fn refused(k: LeaseKey) -> In {
        In::LeaseRefused(LeaseRefused { task_id: k.task.to_string(), epoch: k.epoch.0, reason: "x".into() })
    }
    fn accepted(k: LeaseKey) -> In {
        In::ResultAccepted(ResultAccepted { task_id: k.task.to_string(), epoch: k.epoch.0 })
    }
    fn cancel(k: LeaseKey) -> In {
        In::Cancel(CancelTask { task_id: k.task.to_string(), epoch: k.epoch.0 })
    }

    fn connected(capacity: u32) -> Book {
        let mut b = Book::new(capacity);
        b.hello(VERSION, &[]);
        assert!(b.welcome().is_empty());
        b
    }

    fn sent(actions: &[Action]) -> Vec<&'static str> {
        actions
            .iter()
            .map(|a| match a {
                Action::Send(m) => crate::link::stream::msg_name(m),
                Action::Check { .. } => "check",
                Action::Start { .. } => "start",
                Action::Stop { .. } => "stop",
                Action::PurgeLogs(_) => "purge",
            })
            .collect()
    }

    #[test]
    fn happy_path_returns_the_slot_only_when_the_result_is_accepted() {
        let mut b = connected(2);
        assert_eq!(b.free(), 2);
        let k = key();
        assert_eq!(sent(&b.on_message(offer(k))), ["check"]);
        assert_eq!(b.free(), 1);
        assert_eq!(sent(&b.check_done(k, Ok(()))), ["ack"]);
        assert!(b.held().is_empty(), "acked but not granted is not held");
        assert_eq!(sent(&b.on_message(granted(k))), ["start"]);
        assert_eq!(b.held(), [k.to_ref()]);
        assert!(b.on_message(granted(k)).is_empty(), "duplicate grant starts nothing");
        let done = b.finished(k, &Outcome::succeeded());
        assert!(
            matches!(&done[..], [Action::Send(Msg::Result(r))] if r.success && r.task_id == k.task.to_string())
        );
        assert_eq!(b.held(), [k.to_ref()], "held until accepted");
        assert_eq!(b.free(), 1);
        assert_eq!(sent(&b.on_message(accepted(k))), ["credits"]);
        assert_eq!(b.free(), 2);
        assert!(b.on_message(accepted(k)).is_empty(), "a slot is returned once");
        assert!(b.is_empty());
    }

    #[test]
    fn failed_checks_reject_and_return_the_slot() {
        let mut b = connected(1);
        let k = key();
        b.on_message(offer(k));
        let a = b.check_done(k, Err("secret env:DB_PASSWORD is not set on this delegate".into()));
        assert!(matches!(&a[0], Action::Send(Msg::Reject(r)) if r.reason.contains("DB_PASSWORD")));
        assert_eq!(sent(&a), ["reject", "credits"]);
        assert_eq!(b.free(), 1);
    }

    #[test]
    fn refusals_return_the_slot_and_stop_work() {
        let mut b = connected(3);
        let (acked, running, done) = (key(), key(), key());
        for k in [acked, running, done] {
            b.on_message(offer(k));
            b.check_done(k, Ok(()));
        }
        b.on_message(granted(running));
        b.on_message(granted(done));
        b.finished(done, &Outcome::failed("x"));
        assert_eq!(b.free(), 0);
        assert_eq!(sent(&b.on_message(refused(acked))), ["credits"]);
        let a = b.on_message(refused(running));
        assert_eq!(a[0], Action::Stop { key: running, reason: StopReason::Refused });
        assert_eq!(sent(&a), ["stop", "purge", "credits"]);
        assert_eq!(sent(&b.on_message(refused(done))), ["purge", "credits"]);
        assert_eq!(b.free(), 3);
        assert!(
            b.finished(running, &Outcome::succeeded()).is_empty(),
            "result of a refused lease is dropped"
        );
        assert!(b.on_message(refused(running)).is_empty(), "no second slot");
        assert!(b.check_done(acked, Ok(())).is_empty());
    }

    #[test]
    fn refusal_during_the_check_drops_the_offer() {
        let mut b = connected(1);
        let k = key();
        b.on_message(offer(k));
        assert_eq!(sent(&b.on_message(refused(k))), ["credits"]);
        assert!(b.check_done(k, Ok(())).is_empty(), "no ack for a refused offer");
        assert_eq!(b.free(), 1);
    }

    #[test]
    fn cancel_stops_only_running_tasks() {
        let mut b = connected(1);
        let k = key();
        b.on_message(offer(k));
        assert!(b.on_message(cancel(k)).is_empty());
        b.check_done(k, Ok(()));
        b.on_message(granted(k));
        assert_eq!(b.on_message(cancel(k)), [Action::Stop { key: k, reason: StopReason::Cancelled }]);
        let a = b.finished(k, &Outcome::stopped(StopReason::Cancelled));
        assert!(matches!(&a[..], [Action::Send(Msg::Result(r))] if r.cancelled && !r.success));
    }

    #[test]
    fn reconnect_lists_held_leases_resends_results_and_restarts_credits() {
        let mut b = connected(4);
        let (checking, acked, running, done) = (key(), key(), key(), key());
        for k in [checking, acked, running, done] {
            b.on_message(offer(k));
        }
        for k in [acked, running, done] {
            b.check_done(k, Ok(()));
        }
        b.on_message(granted(running));
        b.on_message(granted(done));
        b.session_lost();
        // Finishing while disconnected sends nothing now...
        assert!(b.finished(done, &Outcome::failed("exit code 1")).is_empty());
        let hello = b.hello(VERSION, &["linux".to_string()]);
        let mut held = hello.held.clone();
        held.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        let mut want = vec![running.to_ref(), done.to_ref()];
        want.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        assert_eq!(held, want);
        assert_eq!((hello.capacity, hello.tags.as_slice()), (4, ["linux".to_string()].as_slice()));
        assert_eq!(hello.acked, vec![acked.to_ref()], "an ack whose grant never came is listed");
        assert_eq!(b.free(), 1, "capacity minus held minus acked");
        // ...and the result goes out after Welcome.
        let w = b.welcome();
        assert!(matches!(&w[..], [Action::Send(Msg::Result(r))] if r.task_id == done.task.to_string()));
        // Offers still in their check are gone; a late check does nothing.
        assert!(b.check_done(checking, Ok(())).is_empty());
        // The acked offer starts when the manager grants it again.
        assert!(matches!(&b.on_message(granted(acked))[..], [Action::Start { .. }]));
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn draining_rejects_offers_and_says_so_on_every_session() {
        let mut b = connected(2);
        let checking = key();
        b.on_message(offer(checking));
        assert_eq!(sent(&b.drain()), ["draining"]);
        assert!(b.drain().is_empty());
        let k = key();
        let a = b.on_message(offer(k));
        assert!(matches!(&a[0], Action::Send(Msg::Reject(r)) if r.reason == "delegate is draining"));
        assert_eq!(sent(&a), ["reject", "credits"]);
        let a = b.check_done(checking, Ok(()));
        assert!(matches!(&a[0], Action::Send(Msg::Reject(r)) if r.reason == "delegate is draining"));
        assert_eq!(b.free(), 2);
        b.session_lost();
        b.hello(VERSION, &[]);
        assert_eq!(sent(&b.welcome()), ["draining"]);
    }

    #[test]
    fn over_offers_and_duplicates_do_not_corrupt_credits() {
        let mut b = connected(1);
        let k = key();
        b.on_message(offer(k));
        assert_eq!(b.free(), 0);
        let extra = key();
        assert_eq!(sent(&b.on_message(offer(extra))), ["reject"], "no slot was granted, none returned");
        assert_eq!(b.free(), 0);
        b.check_done(k, Ok(()));
        b.on_message(granted(k));
        b.finished(k, &Outcome::succeeded());
        b.on_message(accepted(k));
        assert_eq!(b.free(), 1);
        // A repeated offer of a lease in hand gives the slot straight back.
        let k2 = key();
        b.on_message(offer(k2));
        b.free += 1; // pretend the manager had an extra credit
        assert_eq!(sent(&b.on_message(offer(k2))), ["credits"]);
    }

    #[test]
    fn shutdown_stops_running_tasks_only() {
        let mut b = connected(2);
        let (acked, running) = (key(), key());
        for k in [acked, running] {
            b.on_message(offer(k));
            b.check_done(k, Ok(()));
        }
        b.on_message(granted(running));
        assert_eq!(b.shutdown(), [Action::Stop { key: running, reason: StopReason::Shutdown }]);
        assert!(b.busy());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Offer,
        DuplicateOffer(usize),
        Check(usize, bool),
        Grant(usize),
        Refuse(usize),
        Finish(usize),
        Accept(usize),
        Cancel(usize),
        Reconnect,
        Drain,
    }

    fn op() -> impl Strategy<Value = Op> {
        let i = 0usize..8;
        prop_oneof![
            3 => Just(Op::Offer),
            1 => i.clone().prop_map(Op::DuplicateOffer),
            3 => (i.clone(), any::<bool>()).prop_map(|(i, ok)| Op::Check(i, ok)),
            3 => i.clone().prop_map(Op::Grant),
            1 => i.clone().prop_map(Op::Refuse),
            3 => i.clone().prop_map(Op::Finish),
            3 => i.clone().prop_map(Op::Accept),
            1 => i.clone().prop_map(Op::Cancel),
            1 => Just(Op::Reconnect),
            1 => Just(Op::Drain),
        ]
    }

    proptest! {
        /// Drives the book like a well-behaved manager would (offers only with
        /// credit) plus stale and duplicate messages, and checks after every
        /// step that the manager's credit count equals the book's and that
        /// every slot is accounted for.
        #[test]
        fn credits_always_balance(capacity in 1u32..5, ops in prop::collection::vec(op(), 1..80)) {
            let mut b = connected(capacity);
            let mut manager_credits: i64 = capacity as i64;
            let mut known: Vec<LeaseKey> = Vec::new();
            let mut checks: Vec<LeaseKey> = Vec::new();
            let mut acks: Vec<LeaseKey> = Vec::new();
            let mut started: Vec<LeaseKey> = Vec::new();
            let mut results: Vec<LeaseKey> = Vec::new();
            let mut last_held = b.held();
            let mut last_version = b.held_version();
            let pick = |v: &Vec<LeaseKey>, i: usize| if v.is_empty() { None } else { Some(v[i % v.len()]) };
            for op in ops {
                let actions = match op {
                    Op::Offer if manager_credits > 0 => {
                        manager_credits -= 1;
                        let k = key();
                        known.push(k);
                        b.on_message(offer(k))
                    }
                    Op::DuplicateOffer(i) if manager_credits > 0 => match pick(&known, i) {
                        Some(k) => {
                            manager_credits -= 1;
                            b.on_message(offer(k))
                        }
                        None => continue,
                    },
                    Op::Offer | Op::DuplicateOffer(_) => continue,
                    Op::Check(i, ok) => match pick(&checks, i) {
                        Some(k) => b.check_done(k, if ok { Ok(()) } else { Err("no".into()) }),
                        None => continue,
                    },
                    Op::Grant(i) => match pick(&acks, i) {
                        Some(k) => b.on_message(granted(k)),
                        None => continue,
                    },
                    Op::Refuse(i) => match pick(&known, i) {
                        Some(k) => b.on_message(refused(k)),
                        None => continue,
                    },
                    Op::Finish(i) => match pick(&started, i) {
                        Some(k) => b.finished(k, &Outcome::succeeded()),
                        None => continue,
                    },
                    Op::Accept(i) => match pick(&results, i) {
                        Some(k) => b.on_message(accepted(k)),
                        None => continue,
                    },
                    Op::Cancel(i) => match pick(&started, i) {
                        Some(k) => b.on_message(cancel(k)),
                        None => continue,
                    },
                    Op::Reconnect => {
                        b.session_lost();
                        let hello = b.hello(VERSION, &[]);
                        manager_credits = capacity as i64 - (hello.held.len() + hello.acked.len()) as i64;
                        b.welcome()
                    }
                    Op::Drain => b.drain(),
                };
                let held_now: Vec<LeaseRef> = b.held();
                for a in &actions {
                    match a {
                        Action::Send(Msg::Credits(c)) => manager_credits += c.free as i64,
                        Action::Send(Msg::Ack(a)) => acks.push(LeaseKey::from_wire(&a.task_id, a.epoch).unwrap()),
                        Action::Send(Msg::Reject(r)) => {
                            let k = LeaseKey::from_wire(&r.task_id, r.epoch).unwrap();
                            prop_assert!(!held_now.contains(&k.to_ref()), "rejected a held lease");
                        }
                        Action::Send(Msg::Result(r)) => results.push(LeaseKey::from_wire(&r.task_id, r.epoch).unwrap()),
                        Action::Check { key, .. } => checks.push(*key),
                        Action::Start { key, .. } => started.push(*key),
                        _ => {}
                    }
                }
                let held = b.held();
                if held != last_held {
                    prop_assert_ne!(b.held_version(), last_version, "held changed without a version bump");
                }
                last_held = held;
                last_version = b.held_version();
                prop_assert_eq!(manager_credits, b.free() as i64, "manager and delegate agree on credits");
                prop_assert_eq!(b.free() as usize + b.len(), capacity as usize, "every slot accounted for");
            }
        }
    }
}
