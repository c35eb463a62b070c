//! The lease engine's part in several replicas sharing one PostgreSQL database
//! (`docs/ha-design.md`). Only used when [`EngineConfig::replica`] is set.
//!
//! - Every replica keeps every queued, unowned task in its queue (loaded at
//!   start, then from `queued` notices and a slow poll). Before it offers one,
//!   or expires or cancels it, it **claims** the row (`claim_tasks`, row locks);
//!   a task it does not win leaves its memory, so exactly one replica acts.
//!   A task this turn already writes (inserted, or put back by a reject) is
//!   still this replica's.
//! - An offered or running task lives only in its owner's memory; the commit
//!   clears the owner when the task goes back to the queue or ends, and tells
//!   the others (`queued` / `done` notices, sent by the commit itself).
//! - A delegate that comes to this replica holding a lease owned elsewhere is
//!   not refused: the lease is *foreign* until this replica owns it — at once
//!   if it has no owner or a dead one, or once its live owner lets it go
//!   (`release` notice) — and what the delegate sends meanwhile (its result,
//!   its logs) waits and is applied then. Adoption restarts the lease TTL.
//!
//! [`EngineConfig::replica`]: super::EngineConfig::replica

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use dray_shared::pb::{self, TaskState};
use dray_shared::{DelegateId, Epoch, TaskId};
use tokio::sync::oneshot;
use tracing::{debug, info};

use super::{After, CancelOutcome, Engine, retrying};
use crate::cluster::REPLICA_TTL;
pub(super) use crate::cluster::bus::Notice;
use crate::lease::machine::Event;
use crate::store::TaskRecord;

/// How often foreign leases are looked at again.
pub(super) const RECHECK: Duration = Duration::from_secs(1);
/// How often a live owner is asked again to let a lease go.
const ASK_AGAIN_MS: i64 = 2_000;
/// Log batches kept per foreign lease while it waits.
const MAX_BUFFERED_LOGS: usize = 1_000;

/// News from the other replicas, fed in by the cluster listener and watcher.
#[derive(Debug)]
pub enum Remote {
    /// Queued, unowned task rows (from a notice or the poll).
    Queued(Vec<TaskRecord>),
    /// Final rows of tasks that ended on other replicas.
    Finished(Vec<TaskRecord>),
    /// An operator cancelled this task on another replica.
    Cancel(TaskId),
    /// Replica `to` holds the delegate's session and asks for the lease.
    Release {
        /// The task.
        task: TaskId,
        /// The asking replica.
        to: String,
    },
    /// Running tasks this replica adopted from a dead one: load them.
    Adopted(Vec<TaskId>),
}

/// What the engine wants to do with a queued task once its claim is won.
pub(super) enum Pick {
    Offer(DelegateId),
    Expire,
    /// An operator's cancel: here (with the caller to answer) or forwarded.
    Cancel(Option<oneshot::Sender<CancelOutcome>>),
}

/// A lease a delegate here holds but this replica does not own (yet).
struct Foreign {
    delegate: DelegateId,
    epoch: Epoch,
    /// Acknowledged but never granted (the grant must be sent again).
    acked: bool,
    /// What the delegate said about it meanwhile (results, acks), in order.
    events: Vec<Event>,
    logs: Vec<pb::TaskLogs>,
    next_check_ms: i64,
    asked_ms: i64,
}

/// The engine's cluster state.
pub(super) struct State {
    me: String,
    picks: Vec<(TaskId, Pick)>,
    /// Tasks queued (or re-queued) this turn, for the `queued` notice.
    pub(super) queued: Vec<TaskId>,
    /// Tasks that ended this turn, for the `done` notice.
    pub(super) done: Vec<TaskId>,
    other: Vec<Notice>,
    foreign: HashMap<TaskId, Foreign>,
    adopted: Vec<TaskId>,
    /// Leases let go of, and claims won for nothing: their owner is cleared
    /// after the commit.
    handed_off: Vec<TaskId>,
    /// A claim lost a pick: dispatch again without waiting for an event.
    pub(super) again: bool,
}

impl State {
    pub(super) fn new(me: String) -> State {
        State {
            me,
            picks: vec![],
            queued: vec![],
            done: vec![],
            other: vec![],
            foreign: HashMap::new(),
            adopted: vec![],
            handed_off: vec![],
            again: false,
        }
    }

    /// True while some foreign lease waits for a re-check.
    pub(super) fn waiting(&self) -> bool {
        !self.foreign.is_empty()
    }

    pub(super) fn forget_delegate(&mut self, delegate: DelegateId) {
        self.foreign.retain(|_, f| f.delegate != delegate);
    }

    /// Keeps `logs` for a foreign lease; false when the lease is not foreign.
    pub(super) fn buffer_logs(
        &mut self,
        delegate: DelegateId,
        id: TaskId,
        epoch: Epoch,
        logs: &pb::TaskLogs,
    ) -> bool {
        match self.foreign.get_mut(&id) {
            Some(f) if f.delegate == delegate && f.epoch == epoch => {
                if f.logs.len() < MAX_BUFFERED_LOGS {
                    f.logs.push(logs.clone());
                }
                true
            }
            _ => false,
        }
    }

    /// This turn's notices as payloads; `still_queued` filters out tasks that
    /// were queued and then offered within the turn.
    pub(super) fn take_notices(&mut self, still_queued: impl Fn(TaskId) -> bool) -> Vec<String> {
        let done: HashSet<TaskId> = self.done.iter().copied().collect();
        let queued: Vec<TaskId> = std::mem::take(&mut self.queued)
            .into_iter()
            .filter(|id| !done.contains(id) && still_queued(*id))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut notices = std::mem::take(&mut self.other);
        notices.push(Notice::Queued(queued));
        notices.push(Notice::Done(std::mem::take(&mut self.done)));
        Notice::encode_all(&self.me, &notices)
    }
}

impl Engine {
    fn me(&self) -> &str {
        self.cluster.as_ref().map(|c| c.me.as_str()).unwrap_or_default()
    }

    /// Whether acting on this queued task needs a claim first: always with
    /// replicas, except for a task this turn already writes — inserted in it
    /// (nobody else knows it yet) or put back in the queue by it (still owned
    /// here until the commit, which then keeps or clears the owner).
    pub(super) fn must_claim(&self, id: TaskId) -> bool {
        self.cluster.is_some() && !self.staged.contains_key(&id)
    }

    /// Whether this replica holds the task's live state. With replicas, a
    /// queued copy does not count: a delegate speaking of the task holds it
    /// through whoever claimed it since.
    pub(super) fn owned_here(&self, id: TaskId) -> bool {
        self.tasks.get(&id).is_some_and(|l| self.cluster.is_none() || l.lease.state != TaskState::Queued)
    }

    pub(super) fn pick(&mut self, id: TaskId, pick: Pick) {
        if let Some(c) = self.cluster.as_mut() {
            c.picks.push((id, pick));
        }
    }

    pub(super) fn notify(&mut self, notice: Notice) {
        if let Some(c) = self.cluster.as_mut() {
            c.other.push(notice);
        }
    }

    pub(super) fn remote(&mut self, news: Remote) {
        match news {
            Remote::Queued(rows) => {
                for row in rows {
                    // A row this turn writes is newer here than what was read.
                    if row.state != TaskState::Queued || self.staged.contains_key(&row.id) {
                        continue;
                    }
                    match self.tasks.get_mut(&row.id) {
                        // A newer row of a task we still hold queued (re-queued elsewhere).
                        Some(live) if live.lease.state == TaskState::Queued && row.version > live.version => {
                            live.version = row.version;
                            live.lease.epoch = row.epoch;
                        }
                        Some(_) => {}
                        None => self.restore(row, 1),
                    }
                }
            }
            Remote::Finished(rows) => {
                for row in rows {
                    let id = row.id;
                    if let Some(live) = self.tasks.get(&id) {
                        if live.lease.state != TaskState::Queued {
                            continue; // ours: only we finish it
                        }
                        self.metrics.forget(TaskState::Queued);
                        self.tasks.remove(&id);
                    }
                    if let Some(f) = self.cluster.as_mut().and_then(|c| c.foreign.remove(&id)) {
                        self.refuse(
                            f.delegate,
                            id,
                            f.epoch,
                            format!("task already {}", row.state.short_name()),
                        );
                    }
                    self.after.push(After::Finished(id, Some(Arc::new(row))));
                }
            }
            Remote::Cancel(id) => match self.tasks.get(&id).map(|l| (l.lease.state, l.queue_seq)) {
                // A queued copy: whoever wins the claim cancels it.
                Some((TaskState::Queued, seq)) if self.must_claim(id) => {
                    self.queue.remove(&seq);
                    self.pick(id, Pick::Cancel(None));
                }
                Some(_) => {
                    let _ = self.apply(id, Event::Cancel);
                }
                None => {}
            },
            Remote::Release { task, to } => {
                if to == self.me() {
                    return;
                }
                let Some(live) = self.tasks.get(&task) else { return };
                let holder_here = live.lease.delegate.is_some_and(|d| self.index.contains_key(&d));
                // A session here that renewed nothing for two heartbeats is
                // half-open: the delegate is talking to the asking replica.
                let quiet_ms = 2 * self.config.heartbeat_interval().as_millis() as i64;
                let stale = live.lease.deadline_ms < self.now + self.config.ttl_ms() - quiet_ms;
                if live.lease.state == TaskState::Running && (!holder_here || stale) {
                    info!(task.id = %task, to = %to, "Handing a lease over to the replica its delegate moved to.");
                    self.metrics.forget(TaskState::Running);
                    self.tasks.remove(&task);
                    if let Some(c) = self.cluster.as_mut() {
                        c.handed_off.push(task);
                    }
                }
            }
            Remote::Adopted(ids) => {
                if let Some(c) = self.cluster.as_mut() {
                    c.adopted.extend(ids);
                }
            }
        }
    }

    /// Claims this turn's picks in one statement and carries out the ones won;
    /// a lost pick forgets the task (another replica has it) and gives the
    /// delegate's slot back.
    pub(super) async fn settle_picks(&mut self) -> Result<(), crate::store::Error> {
        let Some(c) = self.cluster.as_mut() else { return Ok(()) };
        c.again = false;
        let picks = std::mem::take(&mut c.picks);
        if picks.is_empty() {
            return Ok(());
        }
        let me = c.me.clone();
        let ids: Vec<TaskId> = picks.iter().map(|(id, _)| *id).collect();
        let store = Arc::clone(&self.store);
        let won: HashMap<TaskId, _> = retrying("task claim", || store.claim_tasks(&me, &ids))
            .await?
            .into_iter()
            .map(|c| (c.id, c))
            .collect();
        let ack_ms = self.config.offer_timeout.as_millis() as i64;
        let lost = picks.len() - won.len();
        for (id, pick) in picks {
            if let Some(claimed) = won.get(&id) {
                if let Some(live) = self.tasks.get_mut(&id) {
                    live.version = claimed.version;
                    live.lease.epoch = claimed.epoch;
                }
                let queued = self.tasks.get(&id).is_some_and(|l| l.lease.state == TaskState::Queued);
                match pick {
                    Pick::Offer(to) if queued => {
                        let _ = self.apply(id, Event::Offer { to, ack_ms });
                    }
                    Pick::Offer(to) => self.give_back(to),
                    Pick::Expire if queued => {
                        let explanation = self.explain(id);
                        let _ = self.apply(id, Event::QueueTimeout { explanation });
                    }
                    Pick::Expire => {}
                    Pick::Cancel(reply) => {
                        let outcome = if queued {
                            let _ = self.apply(id, Event::Cancel);
                            CancelOutcome::Cancelled
                        } else {
                            CancelOutcome::Forwarded
                        };
                        if let Some(reply) = reply {
                            self.then(move || {
                                let _ = reply.send(outcome);
                            });
                        }
                    }
                }
                // Won for nothing (the copy went meanwhile): the task must not
                // stay queued under this replica's name.
                if !self.staged.contains_key(&id)
                    && let Some(c) = self.cluster.as_mut()
                {
                    c.handed_off.push(id);
                }
                continue;
            }
            if self.tasks.get(&id).is_some_and(|l| l.lease.state == TaskState::Queued) {
                self.metrics.forget(TaskState::Queued);
                self.tasks.remove(&id);
            }
            match pick {
                Pick::Offer(to) => self.give_back(to),
                Pick::Expire | Pick::Cancel(None) => {}
                Pick::Cancel(Some(reply)) => {
                    self.notify(Notice::Cancel(id));
                    self.then(move || {
                        let _ = reply.send(CancelOutcome::Forwarded);
                    });
                }
            }
        }
        if lost > 0 {
            debug!(lost, "Claims lost to other replicas.");
            if let Some(c) = self.cluster.as_mut() {
                c.again = true;
            }
        }
        Ok(())
    }

    /// Returns a delegate's slot reserved for an offer that was not made.
    fn give_back(&mut self, to: DelegateId) {
        if let Some(&i) = self.index.get(&to) {
            let cand = &mut self.candidates[i];
            cand.credits += 1;
            if !cand.draining {
                self.free_credits += 1;
            }
        }
    }

    /// A delegate here holds `id` at `epoch` (or acknowledged it, `acked`),
    /// which this replica does not own.
    pub(super) fn foreign_lease(&mut self, delegate: DelegateId, id: TaskId, epoch: Epoch, acked: bool) {
        if let Some(w) = self.staged.get(&id) {
            // This turn wrote the task (it ended, or went back to the queue):
            // the store does not show it yet, this replica knows better.
            let why = format!("lease is not active (task {})", w.record.state.short_name());
            self.refuse(delegate, id, epoch, why);
            return;
        }
        if self.tasks.get(&id).is_some_and(|l| l.lease.state == TaskState::Queued) {
            // A stale queued copy: somebody claimed it since.
            self.metrics.forget(TaskState::Queued);
            self.tasks.remove(&id);
        }
        let now = self.now;
        if let Some(c) = self.cluster.as_mut() {
            c.foreign.insert(
                id,
                Foreign {
                    delegate,
                    epoch,
                    acked,
                    events: vec![],
                    logs: vec![],
                    next_check_ms: now,
                    asked_ms: 0,
                },
            );
        }
    }

    /// A delegate's message about a lease this replica does not know.
    pub(super) fn foreign_event(&mut self, delegate: DelegateId, id: TaskId, epoch: Epoch, event: Event) {
        let known = self
            .cluster
            .as_ref()
            .and_then(|c| c.foreign.get(&id))
            .is_some_and(|f| f.delegate == delegate && f.epoch == epoch);
        if !known {
            let acked = matches!(event, Event::Ack { .. });
            self.foreign_lease(delegate, id, epoch, acked);
        }
        // Heartbeats need no replay: adoption restarts the TTL.
        if !matches!(event, Event::Heartbeat { .. })
            && let Some(f) = self.cluster.as_mut().and_then(|c| c.foreign.get_mut(&id))
        {
            f.events.push(event);
        }
    }

    /// Loads adopted tasks and settles foreign leases that are due: refused
    /// when the task ended or moved on, taken when it has no owner or a dead
    /// one, asked for when a live replica owns it.
    pub(super) async fn resolve_foreign(&mut self) -> Result<(), crate::store::Error> {
        let Some(c) = self.cluster.as_mut() else { return Ok(()) };
        let adopted = std::mem::take(&mut c.adopted);
        let now = self.now;
        let due: Vec<TaskId> =
            c.foreign.iter().filter(|(_, f)| f.next_check_ms <= now).map(|(id, _)| *id).collect();
        let me = c.me.clone();
        let store = Arc::clone(&self.store);
        if !adopted.is_empty() {
            for row in retrying("adopted tasks read", || store.tasks_by_ids(&adopted)).await? {
                if row.state == TaskState::Running && !self.owned_here(row.id) {
                    if self.tasks.remove(&row.id).is_some() {
                        self.metrics.forget(TaskState::Queued); // a stale queued copy
                    }
                    self.load_owned(row).await?;
                }
            }
        }
        if due.is_empty() {
            return Ok(());
        }
        let rows: HashMap<TaskId, TaskRecord> = retrying("foreign tasks read", || store.tasks_by_ids(&due))
            .await?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        let replicas = retrying("replicas read", || store.replicas()).await?;
        let ttl_ms = REPLICA_TTL.as_millis() as i64;
        let dead: HashSet<&str> =
            replicas.iter().filter(|r| r.is_dead(now, ttl_ms)).map(|r| r.id.as_str()).collect();
        let known: HashSet<&str> = replicas.iter().map(|r| r.id.as_str()).collect();
        for id in due {
            let Some(f) = self.cluster.as_ref().and_then(|c| c.foreign.get(&id)) else { continue };
            let (delegate, epoch) = (f.delegate, f.epoch);
            let holder = |r: &TaskRecord| r.delegate_id == Some(delegate) && r.epoch == epoch;
            let row = match rows.get(&id) {
                Some(r) if r.state == TaskState::Running && holder(r) => r.clone(),
                // Acknowledged, and its owner has not committed the grant yet:
                // wait (an owner that died has its offers re-queued instead).
                Some(r) if r.state == TaskState::Offered && holder(r) => {
                    if let Some(f) = self.cluster.as_mut().and_then(|c| c.foreign.get_mut(&id)) {
                        f.next_check_ms = now + RECHECK.as_millis() as i64;
                    }
                    continue;
                }
                other => {
                    let why = match other {
                        None => "lease is not active (unknown task)".to_string(),
                        Some(r) if r.state.is_final() => format!("task already {}", r.state.short_name()),
                        Some(_) => "lease is not active (task re-offered or moved on)".to_string(),
                    };
                    self.cluster.as_mut().map(|c| c.foreign.remove(&id));
                    self.refuse(delegate, id, epoch, why);
                    continue;
                }
            };
            let owner = retrying("task owner read", || store.task_owner(id)).await?;

            let from: Option<Option<&str>> = match owner.as_deref() {
                None => Some(None),
                Some(o) if o == me => {
                    // Already ours (handed over): just load it.
                    self.load_owned(row).await?;
                    continue;
                }
                // A dead replica's, or one that left the registry.
                Some(o) if dead.contains(o) || !known.contains(o) => Some(Some(o)),
                Some(_) => None,
            };
            let taken = match from {
                Some(from) => retrying("lease takeover", || store.take_running(id, from, &me)).await?,
                None => false,
            };
            if taken {
                info!(task.id = %id, from = ?owner, "Took over a lease whose delegate moved to this replica.");
                self.load_owned(row).await?;
                continue;
            }
            let ask = from.is_none();
            if let Some(f) = self.cluster.as_mut().and_then(|c| c.foreign.get_mut(&id)) {
                f.next_check_ms = now + RECHECK.as_millis() as i64;
                if ask && now - f.asked_ms >= ASK_AGAIN_MS {
                    f.asked_ms = now;
                    debug!(task.id = %id, owner = ?owner, "Asking the owner to let a lease go.");
                    self.notify(Notice::Release { task: id, to: me.clone() });
                }
            }
        }
        Ok(())
    }

    /// Loads a running task this replica now owns (with a fresh TTL), then
    /// replays what its delegate said while the lease was foreign.
    async fn load_owned(&mut self, row: TaskRecord) -> Result<(), crate::store::Error> {
        let id = row.id;
        let store = Arc::clone(&self.store);
        let next_log_seq = retrying("log sequence read", || store.last_log_seq(id)).await? + 1;
        let holder = row.delegate_id;
        self.restore(row, next_log_seq);
        let foreign = self.cluster.as_mut().and_then(|c| c.foreign.remove(&id));
        let ttl_ms = self.config.ttl_ms();
        match foreign {
            Some(f) => {
                let (held, acked) = if f.acked { (None, Some(f.epoch)) } else { (Some(f.epoch), None) };
                let _ = self.apply(id, Event::Reattach { by: f.delegate, held, acked, ttl_ms });
                for logs in f.logs {
                    self.logs_from(f.delegate, logs);
                }
                for event in f.events {
                    if let Err(refused) = self.apply(id, event) {
                        self.refuse(f.delegate, id, f.epoch, refused.to_string());
                    }
                }
            }
            // Its delegate is here but did not say it holds the lease.
            None => {
                if let Some(by) = holder.filter(|d| self.index.contains_key(d)) {
                    let _ = self.apply(id, Event::Reattach { by, held: None, acked: None, ttl_ms });
                }
            }
        }
        Ok(())
    }

    /// Gives up ownership of the leases handed over this turn (after the
    /// commit, so nothing this replica wrote about them can follow).
    pub(super) async fn release_handed_off(&mut self) -> Result<(), crate::store::Error> {
        let Some(c) = self.cluster.as_mut() else { return Ok(()) };
        let mut ids = std::mem::take(&mut c.handed_off);
        // Taken back within the same turn (its delegate came back): still ours.
        ids.retain(|id| !self.tasks.contains_key(id));
        if ids.is_empty() {
            return Ok(());
        }
        let me = c.me.clone();
        let store = Arc::clone(&self.store);
        retrying("lease release", || store.release_tasks(&me, &ids)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Two engines as two replicas on one SQLite file (claims work the same
    //! there); what PostgreSQL notices would carry is fed in by hand.

    use std::time::Duration;

    use tokio::sync::mpsc;
    use tonic::Status;

    use super::super::tests::{next_finished, next_offer, noop};
    use super::super::{Attach, EngineConfig, Handle};
    use super::*;
    use crate::metrics::Metrics;
    use crate::store::replicas::ReplicaRecord;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{Batch, Store, TaskWrite};

    type Inbox = mpsc::UnboundedReceiver<Box<Result<pb::ManagerMessage, Status>>>;

    async fn replica(dir: &tempfile::TempDir, name: &str) -> (Handle, Arc<dyn Store>) {
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.unwrap());
        store.migrate().await.unwrap();
        let config = EngineConfig { replica: Some(name.into()), ..EngineConfig::default() };
        let (engine, handle) =
            Engine::start(Arc::clone(&store), config, Arc::new(Metrics::new())).await.unwrap();
        tokio::spawn(engine.run());
        (handle, store)
    }

    async fn connect(h: &Handle, delegate: DelegateId, capacity: u32, held: Vec<pb::LeaseRef>) -> Inbox {
        let (tx, rx) = mpsc::unbounded_channel();
        let hello = pb::Hello { version: "t".into(), capacity, held, ..Default::default() };
        let scope = pb::Scope { account: "default".into(), ..Default::default() };
        h.attach(Attach { delegate, session: 1, name: "d".into(), scope, hello, tx }).await.unwrap();
        rx
    }

    fn done(id: TaskId, epoch: u64) -> pb::delegate_message::Msg {
        pb::delegate_message::Msg::Result(pb::TaskResult {
            task_id: id.to_string(),
            epoch,
            success: true,
            has_exit_code: true,
            ..Default::default()
        })
    }

    async fn run_through(h: &Handle, d: DelegateId, rx: &mut Inbox) -> pb::Offer {
        let offer = next_offer(rx).await;
        let ack = pb::OfferAck { task_id: offer.task_id.clone(), epoch: offer.epoch };
        h.inbound(d, 1, pb::delegate_message::Msg::Ack(ack)).await.unwrap();
        h.inbound(d, 1, done(offer.task_id.parse().unwrap(), offer.epoch)).await.unwrap();
        offer
    }

    /// A queued row as another replica would have committed it.
    async fn queued_elsewhere(store: &dyn Store, n: usize) -> Vec<TaskRecord> {
        let rows: Vec<TaskRecord> = (0..n)
            .map(|i| TaskRecord {
                id: TaskId::new(),
                spec: noop(None),
                state: TaskState::Queued,
                epoch: Epoch(0),
                version: 1,
                delegate_id: None,
                exit_code: None,
                reason: String::new(),
                outputs: Default::default(),
                error_type: String::new(),
                created_ms: dray_shared::clock::now_ms() + i as i64,
                started_ms: None,
                finished_ms: None,
                queue_deadline_ms: dray_shared::clock::now_ms() + 600_000,
            })
            .collect();
        let writes = rows.iter().map(|r| TaskWrite { record: r.clone(), expected_version: None }).collect();
        store.commit(&Batch { tasks: writes, ..Batch::default() }).await.unwrap();
        rows
    }

    async fn no_offer_within(rx: &mut Inbox, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(m)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            if let Ok(pb::ManagerMessage { msg: Some(pb::manager_message::Msg::Offer(o)) }) = *m {
                panic!("unexpected offer of {}", o.task_id);
            }
        }
    }

    #[tokio::test]
    async fn a_task_submitted_on_one_replica_runs_through_another_and_is_reported_on_both() {
        let dir = tempfile::tempdir().unwrap();
        let (a, store) = replica(&dir, "a").await;
        let (b, _) = replica(&dir, "b").await;
        let mut heard_on_a = a.finished();
        let mut finished_on_b = b.finished();
        let id = a.submit(vec![noop(None)]).await.unwrap()[0];
        let row = store.get_task(id).await.unwrap().unwrap();
        assert_eq!(store.task_owner(id).await.unwrap(), None, "queued: nobody's yet");
        b.remote(Remote::Queued(vec![row])).await.unwrap();

        let d = DelegateId::new();
        let mut rx = connect(&b, d, 1, vec![]).await;
        let offer = run_through(&b, d, &mut rx).await;
        assert_eq!(offer.task_id, id.to_string());
        let fin = next_finished(&mut finished_on_b).await;
        assert_eq!((fin.id, fin.state), (id, TaskState::Succeeded));
        assert_eq!(store.task_owner(id).await.unwrap(), None, "a final row has no owner");

        // A still holds a queued copy; the `done` notice drops it and tells A's listeners.
        a.remote(Remote::Finished(vec![(*fin).clone()])).await.unwrap();
        assert_eq!(next_finished(&mut heard_on_a).await.id, id);
        let mut rx_a = connect(&a, DelegateId::new(), 1, vec![]).await;
        no_offer_within(&mut rx_a, Duration::from_millis(300)).await;
        assert_eq!(store.get_task(id).await.unwrap().unwrap().epoch, Epoch(1), "offered exactly once");
    }

    #[tokio::test]
    async fn replicas_racing_for_the_same_queued_tasks_offer_each_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let (a, store) = replica(&dir, "a").await;
        let (b, _) = replica(&dir, "b").await;
        let rows = queued_elsewhere(&*store, 60).await;
        let (da, db) = (DelegateId::new(), DelegateId::new());
        let mut rx_a = connect(&a, da, 100, vec![]).await;
        let mut rx_b = connect(&b, db, 100, vec![]).await;
        a.remote(Remote::Queued(rows.clone())).await.unwrap();
        b.remote(Remote::Queued(rows.clone())).await.unwrap();
        let mut offered: Vec<String> = vec![];
        for rx in [&mut rx_a, &mut rx_b] {
            while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
                if let Ok(pb::ManagerMessage { msg: Some(pb::manager_message::Msg::Offer(o)) }) = *m {
                    offered.push(o.task_id);
                }
            }
        }
        let unique: HashSet<&String> = offered.iter().collect();
        assert_eq!(unique.len(), offered.len(), "no task offered twice");
        assert_eq!(offered.len(), rows.len(), "every task offered");
        for r in &rows {
            let owner = store.task_owner(r.id).await.unwrap();
            assert!(matches!(owner.as_deref(), Some("a" | "b")), "{owner:?}");
        }
    }

    /// A running task owned by `owner`, held by `delegate` at epoch 1.
    async fn running_elsewhere(store: &dyn Store, owner: &str, delegate: DelegateId) -> TaskRecord {
        let row = queued_elsewhere(store, 1).await.remove(0);
        assert_eq!(store.claim_tasks(owner, &[row.id]).await.unwrap().len(), 1);
        let running = TaskRecord {
            state: TaskState::Running,
            epoch: Epoch(1),
            version: 2,
            delegate_id: Some(delegate),
            started_ms: Some(dray_shared::clock::now_ms()),
            ..row
        };
        let write = TaskWrite { record: running.clone(), expected_version: Some(1) };
        store.commit(&Batch { tasks: vec![write], ..Batch::default() }).await.unwrap();
        running
    }

    fn registered(id: &str, heartbeat_ms: i64) -> ReplicaRecord {
        ReplicaRecord {
            id: id.into(),
            grpc_url: String::new(),
            http_url: String::new(),
            started_ms: 0,
            heartbeat_ms,
            leader_ms: None,
        }
    }

    #[tokio::test]
    async fn a_lease_held_through_a_dead_replica_is_taken_over_with_what_the_delegate_said_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let (b, store) = replica(&dir, "b").await;
        store.heartbeat_replica(&registered("dead", 0)).await.unwrap();
        let d = DelegateId::new();
        let row = running_elsewhere(&*store, "dead", d).await;
        let mut finished = b.finished();
        let held = vec![pb::LeaseRef { task_id: row.id.to_string(), epoch: 1 }];
        let _rx = connect(&b, d, 2, held).await;
        // Its result arrives before the takeover: kept, not refused.
        b.inbound(d, 1, done(row.id, 1)).await.unwrap();
        let fin = next_finished(&mut finished).await;
        assert_eq!((fin.id, fin.state), (row.id, TaskState::Succeeded));
        let stored = store.get_task(row.id).await.unwrap().unwrap();
        assert_eq!(
            (stored.state, stored.epoch),
            (TaskState::Succeeded, Epoch(1)),
            "recorded once, not re-run"
        );
    }

    #[tokio::test]
    async fn an_acknowledged_lease_taken_over_gets_its_grant_again() {
        // The owner committed the grant and died before the delegate heard it.
        let dir = tempfile::tempdir().unwrap();
        let (b, store) = replica(&dir, "b").await;
        store.heartbeat_replica(&registered("dead", 0)).await.unwrap();
        let d = DelegateId::new();
        let row = running_elsewhere(&*store, "dead", d).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let acked = vec![pb::LeaseRef { task_id: row.id.to_string(), epoch: 1 }];
        let hello = pb::Hello { version: "t".into(), capacity: 1, acked, ..Default::default() };
        let scope = pb::Scope { account: "default".into(), ..Default::default() };
        b.attach(Attach { delegate: d, session: 1, name: "d".into(), scope, hello, tx }).await.unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
            match *m {
                Ok(pb::ManagerMessage { msg: Some(pb::manager_message::Msg::Granted(g)) }) => {
                    assert_eq!((g.task_id, g.epoch), (row.id.to_string(), 1));
                    break;
                }
                Ok(pb::ManagerMessage { msg: Some(pb::manager_message::Msg::LeaseRefused(r)) }) => {
                    panic!("refused: {}", r.reason)
                }
                _ => {}
            }
        }
    }

    #[tokio::test]
    async fn an_adopted_lease_replaces_a_stale_queued_copy_and_is_tracked() {
        let dir = tempfile::tempdir().unwrap();
        let (a, store) = replica(&dir, "a").await;
        let d = DelegateId::new();
        let row = running_elsewhere(&*store, "dead", d).await;
        // A heard of the task while it was queued, and still holds that copy.
        let queued = TaskRecord { state: TaskState::Queued, epoch: Epoch(0), version: 1, ..row.clone() };
        a.remote(Remote::Queued(vec![queued])).await.unwrap();
        let adopted = store.adopt_tasks("dead", "a").await.unwrap();
        assert_eq!(adopted.running, vec![row.id]);
        a.remote(Remote::Adopted(adopted.running)).await.unwrap();
        // Adoption loads the rows during the turn, after its commands are answered.
        let mut leases = vec![];
        for _ in 0..50 {
            leases = a.snapshot().await.unwrap().leases;
            if !leases.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(leases.len(), 1, "the adopted lease is tracked (and will expire if nobody comes back)");
        assert_eq!(
            (leases[0].task_id.clone(), leases[0].state),
            (row.id.to_string(), TaskState::Running as i32)
        );
    }

    #[tokio::test]
    async fn a_live_owner_hands_the_lease_over_when_its_delegate_moved() {
        let dir = tempfile::tempdir().unwrap();
        let (a, store) = replica(&dir, "a").await;
        let (b, _) = replica(&dir, "b").await;
        let now = dray_shared::clock::now_ms();
        store.heartbeat_replica(&registered("a", now + 60_000)).await.unwrap();
        let d = DelegateId::new();
        // Submitted through B, which keeps a queued copy; run through A.
        let id = b.submit(vec![noop(None)]).await.unwrap()[0];
        a.remote(Remote::Queued(vec![store.get_task(id).await.unwrap().unwrap()])).await.unwrap();
        let mut rx = connect(&a, d, 1, vec![]).await;
        let offer = next_offer(&mut rx).await;
        let ack = pb::OfferAck { task_id: offer.task_id.clone(), epoch: offer.epoch };
        a.inbound(d, 1, pb::delegate_message::Msg::Ack(ack)).await.unwrap();
        while !matches!(
            *rx.recv().await.unwrap(),
            Ok(pb::ManagerMessage { msg: Some(pb::manager_message::Msg::Granted(_)) })
        ) {}
        a.detach(d, 1).await;

        let mut finished = b.finished();
        // B's stale queued copy does not make it refuse the lease.
        let held = vec![pb::LeaseRef { task_id: id.to_string(), epoch: offer.epoch }];
        let _rx_b = connect(&b, d, 1, held).await;
        b.inbound(d, 1, done(id, offer.epoch)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            store.task_owner(id).await.unwrap().as_deref(),
            Some("a"),
            "a live owner keeps it until asked"
        );
        // The `release` notice B sends.
        a.remote(Remote::Release { task: id, to: "b".into() }).await.unwrap();
        let fin = next_finished(&mut finished).await;
        assert_eq!((fin.id, fin.state), (id, TaskState::Succeeded));
    }
}
