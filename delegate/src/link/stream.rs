//! The `Session` stream: the [`Outbox`] every delegate → manager message goes
//! through, and one session's life (Hello, Welcome, inbound messages, renewal
//! timer, heartbeats).
//!
//! # Why an outbox and not a channel
//!
//! Control messages (heartbeat, ack, reject, result, credits, draining) must
//! never wait behind task output, or a chatty task could starve heartbeats and
//! lose every lease. The outbox keeps two queues: control (unbounded, small by
//! construction: a handful of messages per lease) and logs (bounded by bytes).
//! The gRPC body pulls from [`Outbox::next`], which always prefers control, so
//! a control message waits only behind log data already handed to the
//! transport. A full log queue blocks only log producers ([`Outbox::log_space`]).
//! An unsent heartbeat is refreshed in place rather than queued twice.
//!
//! One exception keeps per-task order: a task's result is never sent before that
//! task's own queued logs, so the manager never sees output after a final result.
//!
//! Heartbeats list every held lease (running, or result not yet accepted), but
//! a lease whose result is already on the wire in this session is left out of
//! later heartbeats: the manager reads the stream in order and has finished the
//! lease by then, so renewing it would only draw a stale-lease refusal.
//!
//! Control messages belong to one session: they are dropped while no session is
//! open and cleared when a new one begins (credits restart from Hello, results
//! are re-sent by the runner after Welcome). Logs outlive sessions; while
//! disconnected a full log queue sheds its oldest batches instead of blocking
//! tasks, and the loss is reported as a system line in the task's log.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dray_shared::pb::delegate_message::Msg;
use dray_shared::pb::delegate_service_client::DelegateServiceClient;
use dray_shared::pb::manager_message;
use dray_shared::pb::{
    DelegateMessage, Heartbeat, Hello, LeaseRef, LogLine, LogStream, ManagerMessage, TaskLogs, Welcome,
};
use futures::Stream;
use tokio::sync::{Notify, mpsc, watch};
use tonic::transport::Channel;
use tracing::{debug, warn};

use super::LinkEvent;
use crate::lease::LeaseKey;

/// Default bound of queued log text, in bytes.
pub const DEFAULT_LOG_QUEUE_BYTES: usize = 1024 * 1024;

/// How long the manager has to answer Hello with Welcome.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(30);

/// Heartbeat period when the manager does not say.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct State {
    /// Session generation; a stream serving an older one ends.
    generation: u64,
    open: bool,
    control: VecDeque<DelegateMessage>,
    logs: VecDeque<TaskLogs>,
    log_bytes: usize,
    /// Lines shed while disconnected, per lease, reported with its next batch.
    shed: HashMap<(String, u64), u64>,
    /// Results handed to the transport in this session (see `trim_heartbeat`).
    results_sent: HashSet<(String, u64)>,
}

/// Outbound queue of one delegate, shared by the runner, tasks and the session.
pub struct Outbox {
    state: Mutex<State>,
    /// Woken when something becomes sendable or the session changes.
    readable: Notify,
    /// Woken when log space frees up or the session changes.
    writable: Notify,
    log_capacity: usize,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("log_capacity", &self.log_capacity).finish_non_exhaustive()
    }
}

fn batch_bytes(b: &TaskLogs) -> usize {
    b.lines.iter().map(|l| l.text.len() + 16).sum::<usize>() + b.task_id.len() + 16
}

fn is_result_for(msg: &DelegateMessage) -> Option<(&str, u64)> {
    match &msg.msg {
        Some(Msg::Result(r)) => Some((r.task_id.as_str(), r.epoch)),
        _ => None,
    }
}

impl Outbox {
    /// An outbox holding at most about `log_capacity` bytes of queued log text.
    pub fn new(log_capacity: usize) -> Arc<Self> {
        Arc::new(Outbox {
            state: Mutex::new(State::default()),
            readable: Notify::new(),
            writable: Notify::new(),
            log_capacity: log_capacity.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain queues behind, which are
        // still consistent enough to keep sending; do not cascade the panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a new session: drops every control message of the previous one,
    /// queues `hello` as the first message, and returns the new generation.
    pub fn begin_session(&self, hello: Hello) -> u64 {
        let generation = {
            let mut s = self.lock();
            s.generation += 1;
            s.open = true;
            s.control.clear();
            s.results_sent.clear();
            s.control.push_back(DelegateMessage { msg: Some(Msg::Hello(hello)) });
            s.generation
        };
        self.readable.notify_waiters();
        self.writable.notify_waiters();
        generation
    }

    /// Ends session `generation` (no-op if a newer one began): its outbound
    /// stream finishes and control messages are dropped until the next session.
    pub fn end_session(&self, generation: u64) {
        {
            let mut s = self.lock();
            if s.generation != generation {
                return;
            }
            s.open = false;
            s.control.clear();
        }
        self.readable.notify_waiters();
        self.writable.notify_waiters();
    }

    /// Queues a control message for the open session; dropped when none is open
    /// (the runner re-sends what must survive a reconnect).
    pub fn push_control(&self, msg: Msg) {
        {
            let mut s = self.lock();
            if !s.open {
                debug!(message = msg_name(&msg), "No session; dropping control message.");
                return;
            }
            // A heartbeat still waiting to go out is refreshed rather than
            // joined by another, so a stalled stream cannot pile them up.
            if let Msg::Heartbeat(hb) = &msg
                && let Some(queued) = s.control.iter_mut().find_map(|m| match &mut m.msg {
                    Some(Msg::Heartbeat(q)) => Some(q),
                    _ => None,
                })
            {
                *queued = hb.clone();
                return;
            }
            s.control.push_back(DelegateMessage { msg: Some(msg) });
        }
        self.readable.notify_waiters();
    }

    /// Waits until a log batch may be queued: the log queue is below its bound,
    /// or no session is open (then [`Outbox::push_logs`] sheds old batches rather
    /// than stall tasks for the length of an outage). Cancel-safe.
    pub async fn log_space(&self) {
        loop {
            let notified = self.writable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let s = self.lock();
                if !s.open || s.log_bytes < self.log_capacity {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Queues a log batch. Call after [`Outbox::log_space`]; the bound is soft
    /// (each producer may overshoot it by one batch).
    pub fn push_logs(&self, batch: TaskLogs) {
        if batch.lines.is_empty() {
            return;
        }
        {
            let mut s = self.lock();
            s.log_bytes += batch_bytes(&batch);
            s.logs.push_back(batch);
            if !s.open {
                while s.log_bytes > self.log_capacity && s.logs.len() > 1 {
                    let Some(old) = s.logs.pop_front() else { break };
                    s.log_bytes -= batch_bytes(&old);
                    *s.shed.entry((old.task_id.clone(), old.epoch)).or_default() += old.lines.len() as u64;
                }
            }
        }
        self.readable.notify_waiters();
    }

    /// Drops every queued log batch of `key` (its lease was refused).
    pub fn purge(&self, key: LeaseKey) {
        let task_id = key.task.to_string();
        {
            let mut s = self.lock();
            let State { logs, log_bytes, shed, .. } = &mut *s;
            logs.retain(|b| {
                let keep = !(b.task_id == task_id && b.epoch == key.epoch.0);
                if !keep {
                    *log_bytes -= batch_bytes(b);
                }
                keep
            });
            shed.remove(&(task_id, key.epoch.0));
        }
        self.writable.notify_waiters();
    }

    /// The next message for session `generation`, or `None` once that session
    /// is over. Prefers control messages (see the module docs).
    pub async fn next(&self, generation: u64) -> Option<DelegateMessage> {
        loop {
            let notified = self.readable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if s.generation != generation || !s.open {
                    return None;
                }
                if let Some(m) = Self::pop(&mut s) {
                    drop(s);
                    if matches!(m.msg, Some(Msg::Logs(_))) {
                        self.writable.notify_waiters();
                    }
                    return Some(m);
                }
            }
            notified.await;
        }
    }

    /// The priority rule, on the queues alone.
    fn pop(s: &mut State) -> Option<DelegateMessage> {
        if let Some(front) = s.control.front() {
            if let Some((task, epoch)) = is_result_for(front)
                && let Some(i) = s.logs.iter().position(|b| b.task_id == task && b.epoch == epoch)
            {
                // A result goes after its own task's queued logs.
                let batch = s.logs.remove(i)?;
                return Some(Self::take_log(s, batch));
            }
            let mut msg = s.control.pop_front()?;
            match &mut msg.msg {
                Some(Msg::Result(r)) => {
                    s.results_sent.insert((r.task_id.clone(), r.epoch));
                }
                Some(Msg::Heartbeat(hb)) => Self::trim_heartbeat(s, hb),
                _ => {}
            }
            return Some(msg);
        }
        let batch = s.logs.pop_front()?;
        Some(Self::take_log(s, batch))
    }

    /// Drops from a heartbeat the leases whose result already went out on this
    /// session. The manager reads the stream in order, so it has the result
    /// (and has finished the lease) before it reads this heartbeat; renewing
    /// such a lease would only earn a "lease not held" refusal. Until the
    /// result is on the wire, the lease is renewed like any other.
    fn trim_heartbeat(s: &mut State, hb: &mut Heartbeat) {
        if s.results_sent.is_empty() {
            return;
        }
        let listed: HashSet<(String, u64)> = hb.leases.iter().map(|l| (l.task_id.clone(), l.epoch)).collect();
        hb.leases.retain(|l| !s.results_sent.contains(&(l.task_id.clone(), l.epoch)));
        // A lease missing from a heartbeat built after its result was sent has
        // been accepted or refused: it will never be listed again.
        s.results_sent.retain(|k| listed.contains(k));
    }

    fn take_log(s: &mut State, mut batch: TaskLogs) -> DelegateMessage {
        s.log_bytes -= batch_bytes(&batch);
        if let Some(n) = s.shed.remove(&(batch.task_id.clone(), batch.epoch)) {
            let at_ms = batch.lines.first().map(|l| l.at_ms).unwrap_or_else(dray_shared::clock::now_ms);
            batch.lines.insert(
                0,
                LogLine {
                    stream: LogStream::System as i32,
                    text: format!("[dray] {n} log line(s) dropped while the delegate was disconnected"),
                    at_ms,
                },
            );
        }
        DelegateMessage { msg: Some(Msg::Logs(batch)) }
    }

    /// The request body of session `generation`.
    pub fn outbound(
        self: &Arc<Self>,
        generation: u64,
    ) -> impl Stream<Item = DelegateMessage> + Send + 'static {
        futures::stream::unfold(Arc::clone(self), move |outbox| async move {
            let m = outbox.next(generation).await?;
            Some((m, outbox))
        })
    }

    /// Waits until everything queued for the open session has been handed to
    /// the transport (or no session is open). Used before a clean exit so the
    /// last control messages (Draining, results) are not lost with the process.
    pub async fn flushed(&self) {
        loop {
            {
                let s = self.lock();
                if !s.open || (s.control.is_empty() && s.logs.is_empty()) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Queued log bytes (for tests and diagnostics).
    pub fn queued_log_bytes(&self) -> usize {
        self.lock().log_bytes
    }

    /// Removes and returns every queued log batch, bypassing sessions (tests).
    #[cfg(test)]
    pub fn take_logs(&self) -> Vec<TaskLogs> {
        let mut s = self.lock();
        s.log_bytes = 0;
        s.logs.drain(..).collect()
    }
}

/// Short name of a message kind, for logs.
pub fn msg_name(m: &Msg) -> &'static str {
    match m {
        Msg::Hello(_) => "hello",
        Msg::Credits(_) => "credits",
        Msg::Ack(_) => "ack",
        Msg::Reject(_) => "reject",
        Msg::Heartbeat(_) => "heartbeat",
        Msg::Logs(_) => "logs",
        Msg::Result(_) => "result",
        Msg::Draining(_) => "draining",
    }
}

/// How a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// The manager refused this delegate (revoked, bad certificate): stop.
    Refused(tonic::Status),
    /// Anything else: reconnect. `welcomed` says whether the session got as far
    /// as Welcome (which resets the reconnect backoff).
    Retry {
        /// Why.
        reason: String,
        /// Whether Welcome was received.
        welcomed: bool,
    },
    /// The runner is gone; the process is exiting.
    RunnerGone,
}

/// True for the status codes that mean "this delegate is not allowed in".
pub fn is_refusal(status: &tonic::Status) -> bool {
    matches!(status.code(), tonic::Code::PermissionDenied | tonic::Code::Unauthenticated)
}

fn classify(status: tonic::Status, welcomed: bool) -> SessionEnd {
    if is_refusal(&status) {
        SessionEnd::Refused(status)
    } else {
        let mut reason = format!("{}: {}", status.code(), status.message());
        let mut cause = std::error::Error::source(&status);
        while let Some(c) = cause {
            let msg = c.to_string();
            if !reason.contains(&msg) {
                reason.push_str(": ");
                reason.push_str(&msg);
            }
            cause = c.source();
        }
        SessionEnd::Retry { reason, welcomed }
    }
}

/// Aborts the wrapped task when dropped, so no heartbeat outlives its session.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends `Heartbeat{held}` every `every`, starting at once. Runs as its own task
/// so that nothing the runner or a task does can delay it, and goes through the
/// control queue, which log output cannot block.
async fn heartbeats(outbox: Arc<Outbox>, held: watch::Receiver<Vec<LeaseRef>>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let leases = held.borrow().clone();
        outbox.push_control(Msg::Heartbeat(Heartbeat { leases }));
    }
}

/// What a session needs from the link.
pub(crate) struct SessionParts<'a> {
    pub channel: Channel,
    pub outbox: &'a Arc<Outbox>,
    pub events: &'a mpsc::Sender<LinkEvent>,
    pub held: &'a watch::Receiver<Vec<LeaseRef>>,
}

/// An established session, after Welcome.
pub(crate) struct Established {
    pub generation: u64,
    pub welcome: Welcome,
    inbound: tonic::Streaming<ManagerMessage>,
    _heartbeats: AbortOnDrop,
}

/// Opens a session: asks the runner for Hello (it queues it in the outbox),
/// opens the stream and waits for Welcome. On failure returns the generation
/// that was begun (0 if none) so the caller can end it.
pub(crate) async fn open(parts: &SessionParts<'_>) -> Result<Established, (u64, SessionEnd)> {
    let (reply, hello_queued) = tokio::sync::oneshot::channel();
    if parts.events.send(LinkEvent::Connecting { reply }).await.is_err() {
        return Err((0, SessionEnd::RunnerGone));
    }
    let generation = hello_queued.await.map_err(|_| (0, SessionEnd::RunnerGone))?;
    let fail = |e: SessionEnd| (generation, e);
    let no_welcome = || {
        let reason = format!("no Welcome from the manager within {}s", WELCOME_TIMEOUT.as_secs());
        fail(SessionEnd::Retry { reason, welcomed: false })
    };
    // One deadline for the response headers and the Welcome: a manager that
    // accepts the connection but never answers must not hold the link forever.
    let deadline = tokio::time::Instant::now() + WELCOME_TIMEOUT;
    let mut client = DelegateServiceClient::new(parts.channel.clone());
    let opened = tokio::time::timeout_at(deadline, client.session(parts.outbox.outbound(generation)))
        .await
        .map_err(|_| no_welcome())?;
    let mut inbound = opened.map_err(|s| fail(classify(s, false)))?.into_inner();
    let first = tokio::time::timeout_at(deadline, inbound.message()).await;
    let welcome = match first {
        Err(_) => return Err(no_welcome()),
        Ok(Err(status)) => return Err(fail(classify(status, false))),
        Ok(Ok(None)) => {
            let reason = "manager closed the stream before Welcome".to_string();
            return Err(fail(SessionEnd::Retry { reason, welcomed: false }));
        }
        Ok(Ok(Some(ManagerMessage { msg: Some(manager_message::Msg::Welcome(w)) }))) => w,
        Ok(Ok(Some(other))) => {
            let reason = format!("expected Welcome as the first message, got {other:?}");
            return Err(fail(SessionEnd::Retry { reason, welcomed: false }));
        }
    };
    let every = match welcome.heartbeat_interval_ms {
        0 => DEFAULT_HEARTBEAT,
        ms => Duration::from_millis(ms),
    };
    if welcome.lease_ttl_ms != 0 && every.as_millis() as u64 >= welcome.lease_ttl_ms {
        warn!(
            heartbeat.interval_ms = every.as_millis() as u64,
            lease.ttl_ms = welcome.lease_ttl_ms,
            "Heartbeat interval is not shorter than the lease TTL; leases may lapse."
        );
    }
    if parts.events.send(LinkEvent::Welcomed { generation, welcome: welcome.clone() }).await.is_err() {
        return Err(fail(SessionEnd::RunnerGone));
    }
    let hb = tokio::spawn(heartbeats(Arc::clone(parts.outbox), parts.held.clone(), every));
    Ok(Established { generation, welcome, inbound, _heartbeats: AbortOnDrop(hb) })
}

impl Established {
    /// The next inbound message. Cancel-safe (nothing is lost if dropped), so
    /// it can race the renewal timer; `Err` ends the session.
    pub(crate) async fn next_message(&mut self) -> Result<Option<manager_message::Msg>, SessionEnd> {
        match self.inbound.message().await {
            Ok(Some(ManagerMessage { msg })) => Ok(msg),
            Ok(None) => {
                Err(SessionEnd::Retry { reason: "manager closed the session".into(), welcomed: true })
            }
            Err(status) => Err(classify(status, true)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dray_shared::pb::{Credits, TaskResult};

    fn logs(task: &str, n: usize) -> TaskLogs {
        TaskLogs {
            task_id: task.into(),
            epoch: 1,
            lines: (0..n).map(|i| LogLine { stream: 1, text: format!("line {i}"), at_ms: 0 }).collect(),
        }
    }

    fn result(task: &str) -> Msg {
        Msg::Result(TaskResult { task_id: task.into(), epoch: 1, success: true, ..Default::default() })
    }

    fn kind(m: &DelegateMessage) -> String {
        match m.msg.as_ref().unwrap() {
            Msg::Logs(l) => format!("logs:{}", l.task_id),
            Msg::Result(r) => format!("result:{}", r.task_id),
            other => msg_name(other).to_string(),
        }
    }

    /// The next message, failing the test instead of hanging when there is none.
    async fn pop(o: &Outbox, g: u64) -> Msg {
        let next = tokio::time::timeout(Duration::from_secs(2), o.next(g)).await;
        next.expect("a queued message").expect("session open").msg.expect("a message body")
    }

    async fn drain(o: &Outbox, g: u64, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(kind(&DelegateMessage { msg: Some(pop(o, g).await) }));
        }
        out
    }

    #[tokio::test]
    async fn control_messages_overtake_logs_but_results_follow_their_logs() {
        let o = Outbox::new(1 << 20);
        let g = o.begin_session(Hello::default());
        o.push_logs(logs("a", 3));
        o.push_logs(logs("b", 3));
        o.push_logs(logs("a", 1));
        o.push_control(Msg::Heartbeat(Heartbeat::default()));
        o.push_control(result("a"));
        o.push_control(Msg::Credits(Credits { free: 1 }));
        assert_eq!(
            drain(&o, g, 7).await,
            ["hello", "heartbeat", "logs:a", "logs:a", "result:a", "credits", "logs:b"]
        );
        assert_eq!(o.queued_log_bytes(), 0);
    }

    #[tokio::test]
    async fn heartbeats_after_a_sent_result_do_not_renew_its_lease() {
        let o = Outbox::new(1 << 20);
        let g = o.begin_session(Hello::default());
        let lease = |t: &str| LeaseRef { task_id: t.into(), epoch: 1 };
        let hb = |ts: &[&str]| Msg::Heartbeat(Heartbeat { leases: ts.iter().map(|t| lease(t)).collect() });
        let leases = |m: Msg| match m {
            Msg::Heartbeat(h) => h.leases.into_iter().map(|l| l.task_id).collect::<Vec<_>>(),
            other => panic!("heartbeat expected, got {}", msg_name(&other)),
        };
        o.push_logs(logs("a", 1));
        // Queued before the result: renews "a" (the result is not on the wire yet).
        o.push_control(hb(&["a", "b"]));
        o.push_control(result("a"));
        assert_eq!(drain(&o, g, 1).await, ["hello"]);
        assert_eq!(leases(pop(&o, g).await), ["a", "b"]);
        assert_eq!(drain(&o, g, 2).await, ["logs:a", "result:a"]);
        // Built after the result went out, while "a" still awaits ResultAccepted.
        o.push_control(hb(&["a", "b"]));
        assert_eq!(leases(pop(&o, g).await), ["b"]);
        // After a reconnect the result is sent again, so the lease is renewed until then.
        let g = o.begin_session(Hello::default());
        o.push_control(hb(&["a", "b"]));
        assert_eq!(drain(&o, g, 1).await, ["hello"]);
        assert_eq!(leases(pop(&o, g).await), ["a", "b"]);
    }

    #[tokio::test]
    async fn a_full_log_queue_blocks_producers_but_not_heartbeats() {
        let o = Outbox::new(200);
        let g = o.begin_session(Hello::default());
        o.push_logs(logs("a", 50));
        let blocked = tokio::time::timeout(Duration::from_millis(50), o.log_space()).await;
        assert!(blocked.is_err(), "producer must wait while the log queue is full");
        o.push_control(Msg::Heartbeat(Heartbeat::default()));
        o.push_control(Msg::Heartbeat(Heartbeat::default()));
        assert_eq!(
            drain(&o, g, 2).await,
            ["hello", "heartbeat"],
            "an unsent heartbeat is refreshed, not doubled"
        );
        // Sending the log batch frees space.
        assert_eq!(drain(&o, g, 1).await, ["logs:a"]);
        tokio::time::timeout(Duration::from_millis(50), o.log_space()).await.unwrap();
    }

    #[tokio::test]
    async fn sessions_reset_control_but_keep_logs() {
        let o = Outbox::new(1 << 20);
        let g1 = o.begin_session(Hello::default());
        o.push_control(Msg::Credits(Credits { free: 1 }));
        o.push_logs(logs("a", 1));
        o.end_session(g1);
        assert!(o.next(g1).await.is_none(), "old stream ends");
        o.push_control(Msg::Credits(Credits { free: 1 }));
        let g2 = o.begin_session(Hello::default());
        assert_eq!(drain(&o, g2, 2).await, ["hello", "logs:a"]);
        assert!(o.next(g1).await.is_none());
    }

    #[tokio::test]
    async fn disconnected_log_queue_sheds_old_batches_and_says_so() {
        let o = Outbox::new(300);
        for _ in 0..10 {
            o.log_space().await;
            o.push_logs(logs("a", 5));
        }
        assert!(o.queued_log_bytes() <= 300 + batch_bytes(&logs("a", 5)));
        let g = o.begin_session(Hello::default());
        assert_eq!(drain(&o, g, 1).await, ["hello"]);
        let Msg::Logs(first) = pop(&o, g).await else { panic!("logs expected") };
        assert!(
            first.lines[0].text.contains("dropped while the delegate was disconnected"),
            "{:?}",
            first.lines[0]
        );
        assert_eq!(first.lines[0].stream, LogStream::System as i32);
    }

    #[tokio::test]
    async fn purge_drops_a_lease_s_logs() {
        let o = Outbox::new(1 << 20);
        let key = LeaseKey { task: dray_shared::TaskId::new(), epoch: dray_shared::Epoch(1) };
        o.push_logs(logs(&key.task.to_string(), 2));
        o.push_logs(logs("other", 2));
        o.purge(key);
        let left = o.take_logs();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].task_id, "other");
    }
}
