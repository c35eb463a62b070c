//! Task targets: what actually runs a task of a given kind. A [`Target`] says
//! which kinds it serves, checks an offer before the delegate acks it (so a
//! delegate that cannot run a task says so up front instead of failing it), and
//! runs a granted lease to an [`Outcome`].
//!
//! Targets get a [`RunContext`] with everything they may touch: secret
//! resolution that also registers values for masking, a batching [`LogSink`]
//! that masks every line, and the [`StopSignal`] for cancel, refusal and
//! shutdown. The runner masks the outcome message with the same masker.

pub mod artifact;
pub mod aws;
pub mod http;
pub mod k8s;
pub mod noop;
pub mod shell;
pub mod ssh;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dray_shared::clock;
use dray_shared::error_type::ErrorType;
use dray_shared::pb::{LogLine, LogStream, TaskLogs, TaskResult, TaskSpec};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::lease::LeaseKey;
use crate::link::stream::Outbox;
use crate::secrets::{Masker, Resolved, SecretError, SecretStore};

/// Flush a log batch at this many lines...
pub const BATCH_LINES: usize = 100;
/// ...or this many bytes of text (well under gRPC's 4 MiB message limit)...
pub const BATCH_BYTES: usize = 256 * 1024;
/// ...or this long after its first line.
pub const BATCH_DELAY: Duration = Duration::from_millis(50);

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// It did what it was asked.
    pub success: bool,
    /// Process exit code, if there was one.
    pub exit_code: Option<i32>,
    /// Why it failed (empty on success). Masked before it leaves the delegate.
    pub message: String,
    /// It was stopped because the manager cancelled it.
    pub cancelled: bool,
    /// Values the task produced (kind-specific names). Masked before they
    /// leave the delegate.
    pub outputs: BTreeMap<String, String>,
    /// Classified failure; `None` on success and on cancel.
    pub error_type: Option<ErrorType>,
}

impl Outcome {
    /// Success, no exit code.
    pub fn succeeded() -> Self {
        Outcome {
            success: true,
            exit_code: None,
            message: String::new(),
            cancelled: false,
            outputs: BTreeMap::new(),
            error_type: None,
        }
    }

    /// Failure with a message, no exit code, error type `Unknown`.
    pub fn failed(message: impl Into<String>) -> Self {
        Outcome {
            success: false,
            exit_code: None,
            message: message.into(),
            cancelled: false,
            outputs: BTreeMap::new(),
            error_type: Some(ErrorType::Unknown),
        }
    }

    /// Failure with a message and error type.
    pub fn failed_as(error_type: ErrorType, message: impl Into<String>) -> Self {
        Outcome { error_type: Some(error_type), ..Outcome::failed(message) }
    }

    /// The failure of a task whose secret could not be resolved, with the error
    /// type [`SecretError::error_type`] decides (the message names the
    /// reference, never a value). Targets use this for every `substitute` error.
    pub fn secret_failure(e: &SecretError) -> Self {
        Outcome::failed_as(e.error_type(), e.to_string())
    }

    /// The failure reported when a task was stopped for `reason`.
    pub fn stopped(reason: StopReason) -> Self {
        match reason {
            StopReason::Cancelled => Outcome {
                message: "cancelled".into(),
                cancelled: true,
                error_type: None,
                ..Outcome::failed("")
            },
            // The work died with this delegate process, as when its lease is lost.
            StopReason::Shutdown => {
                Outcome::failed_as(ErrorType::DelegateRestart, "interrupted: delegate shut down")
            }
            StopReason::Refused => Outcome::failed("lease refused by the manager"),
        }
    }

    /// The same outcome with these outputs.
    pub fn with_outputs(self, outputs: BTreeMap<String, String>) -> Self {
        Outcome { outputs, ..self }
    }

    /// Masks the message and every output value with `masker`. Output names
    /// are chosen by the task author, not secret, and kept as they are.
    pub fn mask(&mut self, masker: &MaskerHandle) {
        self.message = masker.mask(&self.message);
        for v in self.outputs.values_mut() {
            *v = masker.mask(v);
        }
    }

    /// The wire result for lease `key`.
    pub fn to_result(&self, key: LeaseKey) -> TaskResult {
        TaskResult {
            task_id: key.task.to_string(),
            epoch: key.epoch.0,
            success: self.success,
            exit_code: self.exit_code.unwrap_or(0),
            has_exit_code: self.exit_code.is_some(),
            message: self.message.clone(),
            cancelled: self.cancelled,
            outputs: self.outputs.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            // A success carries no error type, whatever a target left set.
            error_type: match (self.success, self.error_type) {
                (false, Some(e)) => e.as_str().to_string(),
                _ => String::new(),
            },
        }
    }
}

/// Why the runner stops a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The manager sent CancelTask: report `cancelled = true`.
    Cancelled,
    /// The manager refused the lease: stop; the result is dropped.
    Refused,
    /// The delegate is shutting down and the drain grace ran out.
    Shutdown,
}

/// The sending half of a task's stop signal, held by the runner.
#[derive(Debug)]
pub struct StopHandle(watch::Sender<Option<StopReason>>);

impl StopHandle {
    /// Asks the task to stop. The first reason wins, except that a refusal
    /// overrides anything (its result is dropped whatever it says).
    pub fn stop(&self, reason: StopReason) {
        self.0.send_if_modified(|cur| match cur {
            None => {
                *cur = Some(reason);
                true
            }
            Some(r) if reason == StopReason::Refused && *r != StopReason::Refused => {
                *cur = Some(reason);
                true
            }
            Some(_) => false,
        });
    }
}

/// The receiving half of a task's stop signal.
#[derive(Debug, Clone)]
pub struct StopSignal(watch::Receiver<Option<StopReason>>);

/// A connected stop handle and signal.
pub fn stop_pair() -> (StopHandle, StopSignal) {
    let (tx, rx) = watch::channel(None);
    (StopHandle(tx), StopSignal(rx))
}

impl StopSignal {
    /// Waits until the task is asked to stop. Cancel-safe. If the handle is
    /// dropped without a stop, waits forever (nobody can ask any more).
    pub async fn stopped(&mut self) -> StopReason {
        loop {
            if let Some(r) = *self.0.borrow_and_update() {
                return r;
            }
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// The stop reason, if asked already.
    pub fn get(&self) -> Option<StopReason> {
        *self.0.borrow()
    }
}

/// What a capability check may use.
#[derive(Debug, Clone)]
pub struct CheckContext {
    /// The lease being offered.
    pub key: LeaseKey,
    /// Where secrets are looked up.
    pub secrets: Arc<SecretStore>,
}

/// What a running task may use.
#[derive(Debug)]
pub struct RunContext {
    /// The lease being run.
    pub key: LeaseKey,
    /// Output of the task; every line is masked.
    pub logs: LogSink,
    /// Stop requests from the runner.
    pub stop: StopSignal,
    secrets: Arc<SecretStore>,
    resolved: Resolved,
    masker: Arc<Mutex<Masker>>,
}

impl RunContext {
    /// A context for lease `key` whose output goes to `outbox`.
    pub fn new(key: LeaseKey, secrets: Arc<SecretStore>, outbox: Arc<Outbox>, stop: StopSignal) -> Self {
        let masker = Arc::new(Mutex::new(Masker::default()));
        RunContext {
            key,
            logs: LogSink::new(key, outbox, Arc::clone(&masker), stop.clone()),
            stop,
            secrets,
            resolved: Resolved::default(),
            masker,
        }
    }

    /// Resolves every secret reference in `text` (found in `field`); each value
    /// is masked from then on in this task's logs and result message.
    pub async fn substitute(&mut self, field: &str, text: &str) -> Result<String, SecretError> {
        let out = self.secrets.substitute(field, text, &mut self.resolved).await;
        // Register even on error: values resolved before the failing reference
        // may already be in `resolved`.
        *lock(&self.masker) = Masker::new(self.resolved.values());
        out
    }

    /// A handle on this task's masker, to mask its outcome after it returns.
    pub fn masker(&self) -> MaskerHandle {
        MaskerHandle(Arc::clone(&self.masker))
    }
}

fn lock(m: &Mutex<Masker>) -> std::sync::MutexGuard<'_, Masker> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Shared access to a task's masker.
#[derive(Debug, Clone)]
pub struct MaskerHandle(Arc<Mutex<Masker>>);

impl MaskerHandle {
    /// `text` with this task's secrets masked.
    pub fn mask(&self, text: &str) -> String {
        lock(&self.0).mask(text).into_owned()
    }
}

/// Batches a task's output lines into `TaskLogs` messages: flushed at
/// [`BATCH_LINES`] lines, [`BATCH_BYTES`] bytes or [`BATCH_DELAY`] after the
/// first line, whichever comes first. Masks every line on the way in.
#[derive(Debug)]
pub struct LogSink {
    key: LeaseKey,
    outbox: Arc<Outbox>,
    masker: Arc<Mutex<Masker>>,
    stop: StopSignal,
    lines: Vec<LogLine>,
    bytes: usize,
    first_at: Option<Instant>,
}

impl LogSink {
    fn new(key: LeaseKey, outbox: Arc<Outbox>, masker: Arc<Mutex<Masker>>, stop: StopSignal) -> Self {
        LogSink { key, outbox, masker, stop, lines: Vec::new(), bytes: 0, first_at: None }
    }

    /// Adds a line (without its newline). Does not wait; call [`LogSink::ready`]
    /// and [`LogSink::flush_now`] (or [`LogSink::flush`]) to send.
    pub fn line(&mut self, stream: LogStream, text: &str) {
        if self.stop.get() == Some(StopReason::Refused) {
            // The manager disowned this lease: its output must not go out.
            return;
        }
        let text = lock(&self.masker).mask(text).into_owned();
        self.bytes += text.len();
        self.lines.push(LogLine { stream: stream as i32, text, at_ms: clock::now_ms() });
        self.first_at.get_or_insert_with(Instant::now);
    }

    /// True when the batch must be sent before more lines are added.
    pub fn is_full(&self) -> bool {
        self.lines.len() >= BATCH_LINES || self.bytes >= BATCH_BYTES
    }

    /// Completes when the batch is due and the outbox has room. Cancel-safe;
    /// never completes while the batch is empty.
    pub async fn ready(&self) {
        let Some(first) = self.first_at else {
            return std::future::pending().await;
        };
        if !self.is_full() {
            tokio::time::sleep_until(first + BATCH_DELAY).await;
        }
        self.outbox.log_space().await;
    }

    /// Queues the batch now (after [`LogSink::ready`]).
    pub fn flush_now(&mut self) {
        self.first_at = None;
        self.bytes = 0;
        let lines = std::mem::take(&mut self.lines);
        if lines.is_empty() || self.stop.get() == Some(StopReason::Refused) {
            return;
        }
        self.outbox.push_logs(TaskLogs {
            task_id: self.key.task.to_string(),
            epoch: self.key.epoch.0,
            lines,
        });
    }

    /// Sends whatever is batched, waiting for room but not for the batch delay.
    pub async fn flush(&mut self) {
        if self.lines.is_empty() {
            return;
        }
        self.outbox.log_space().await;
        self.flush_now();
    }
}

/// Something that runs tasks of some kinds.
#[async_trait::async_trait]
pub trait Target: Send + Sync + 'static {
    /// The task kinds this target runs.
    fn kinds(&self) -> &'static [&'static str];

    /// Can this delegate run `spec`? Called before acking an offer; `Err` is
    /// the rejection reason sent to the manager (never a secret value).
    async fn check(&self, spec: &TaskSpec, cx: &CheckContext) -> Result<(), String>;

    /// Runs a granted lease to completion (or until stopped).
    async fn run(&self, spec: TaskSpec, cx: RunContext) -> Outcome;
}

/// The targets of this delegate, by kind.
#[derive(Clone, Default)]
pub struct Targets {
    by_kind: HashMap<&'static str, Arc<dyn Target>>,
}

impl std::fmt::Debug for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kinds: Vec<_> = self.by_kind.keys().collect();
        kinds.sort();
        f.debug_struct("Targets").field("kinds", &kinds).finish()
    }
}

impl Targets {
    /// The targets built into this binary: `shell`, `noop`, `http`, `ssh`, `k8s`,
    /// `ecs` and `lambda`.
    pub fn builtin() -> Self {
        let mut t = Targets::default();
        t.add(Arc::new(shell::Shell));
        t.add(Arc::new(noop::Noop));
        t.add(Arc::new(http::Http::default()));
        t.add(Arc::new(ssh::Ssh));
        t.add(Arc::new(k8s::K8s::default()));
        t.add(Arc::new(aws::Aws::default()));
        t
    }

    /// Registers `target` for each of its kinds (replacing earlier ones).
    pub fn add(&mut self, target: Arc<dyn Target>) {
        for kind in target.kinds() {
            self.by_kind.insert(kind, Arc::clone(&target));
        }
    }

    /// The target for `kind`.
    pub fn get(&self, kind: &str) -> Option<Arc<dyn Target>> {
        self.by_kind.get(kind).cloned()
    }

    /// Every kind served, sorted.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut k: Vec<_> = self.by_kind.keys().copied().collect();
        k.sort_unstable();
        k
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for target tests: a context whose output can be read back.

    use super::*;
    use dray_shared::{Epoch, TaskId};

    /// A run context for a fresh lease, its outbox and its stop handle.
    pub fn context(env: &[(&str, &str)]) -> (RunContext, Arc<Outbox>, StopHandle) {
        let outbox = Outbox::new(64 * 1024 * 1024);
        let secrets =
            Arc::new(SecretStore::with_env(env.iter().map(|(k, v)| (k.to_string(), v.to_string()))));
        let (handle, signal) = stop_pair();
        let key = LeaseKey { task: TaskId::new(), epoch: Epoch(1) };
        (RunContext::new(key, secrets, Arc::clone(&outbox), signal), outbox, handle)
    }

    /// Every line queued so far, as `(stream, text)`.
    pub fn lines(outbox: &Outbox) -> Vec<(LogStream, String)> {
        outbox
            .take_logs()
            .into_iter()
            .flat_map(|b| b.lines)
            .map(|l| (LogStream::try_from(l.stream).unwrap_or(LogStream::Unspecified), l.text))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sink_masks_and_batches() {
        let (mut cx, outbox, _stop) = testing::context(&[("PW", "hunter2")]);
        let script = cx.substitute("script", "echo <+secrets.getValue(\"env:PW\")>").await.unwrap();
        assert_eq!(script, "echo hunter2");
        for i in 0..BATCH_LINES {
            cx.logs.line(LogStream::Stdout, &format!("{i} hunter2"));
        }
        assert!(cx.logs.is_full());
        cx.logs.ready().await;
        cx.logs.flush_now();
        cx.logs.line(LogStream::Stderr, "tail");
        cx.logs.flush().await;
        let batches = outbox.take_logs();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].lines.len(), BATCH_LINES);
        assert_eq!(batches[0].lines[7].text, format!("7 {}", crate::secrets::mask::MASK));
        assert_eq!(batches[1].lines[0].text, "tail");
        assert_eq!(cx.masker().mask("x hunter2"), format!("x {}", crate::secrets::mask::MASK));
    }

    #[tokio::test]
    async fn refused_leases_send_no_more_output() {
        let (mut cx, outbox, stop) = testing::context(&[]);
        cx.logs.line(LogStream::Stdout, "before");
        stop.stop(StopReason::Refused);
        cx.logs.line(LogStream::Stdout, "after");
        cx.logs.flush().await;
        assert!(outbox.take_logs().is_empty());
        stop.stop(StopReason::Cancelled);
        assert_eq!(cx.stop.stopped().await, StopReason::Refused, "refusal is not overridden");
    }

    #[test]
    fn outcomes_map_to_results() {
        let key = LeaseKey { task: dray_shared::TaskId::new(), epoch: dray_shared::Epoch(3) };
        let r = Outcome { exit_code: Some(2), ..Outcome::failed("exit code 2") }
            .with_outputs(BTreeMap::from([("A".to_string(), "1".to_string())]))
            .to_result(key);
        assert_eq!((r.epoch, r.exit_code, r.has_exit_code, r.success), (3, 2, true, false));
        assert_eq!(r.error_type, "Unknown");
        assert_eq!(r.outputs.get("A").map(String::as_str), Some("1"));
        let r = Outcome::stopped(StopReason::Cancelled).to_result(key);
        assert!(r.cancelled && !r.success && !r.has_exit_code);
        assert_eq!(r.error_type, "", "cancel sets no error type");
        let shutdown = Outcome::stopped(StopReason::Shutdown);
        assert_eq!(shutdown.message, "interrupted: delegate shut down");
        assert_eq!(shutdown.to_result(key).error_type, "DelegateRestart");
        let r = Outcome::failed_as(ErrorType::Timeout, "timed out").to_result(key);
        assert_eq!(r.error_type, "Timeout");
        let r = Outcome { error_type: Some(ErrorType::Timeout), ..Outcome::succeeded() }.to_result(key);
        assert_eq!(r.error_type, "", "a success has no error type");
    }

    #[tokio::test]
    async fn outcome_masking_covers_message_and_output_values() {
        let (mut cx, _outbox, _stop) = testing::context(&[("PW", "hunter2")]);
        cx.substitute("script", "<+secrets.getValue(\"env:PW\")>").await.unwrap();
        let mut o = Outcome::failed("bad hunter2").with_outputs(BTreeMap::from([
            ("hunter2".to_string(), "x hunter2 y".to_string()),
            ("plain".to_string(), "nothing".to_string()),
        ]));
        o.mask(&cx.masker());
        let mask = crate::secrets::mask::MASK;
        assert_eq!(o.message, format!("bad {mask}"));
        assert_eq!(o.outputs["hunter2"], format!("x {mask} y"), "values masked, names kept");
        assert_eq!(o.outputs["plain"], "nothing");
    }
}
