//! The `shell` target: runs a bash script as its own process group.
//!
//! - Secret references in the script and env values are resolved through the
//!   run context (so their values are masked in output and result).
//! - The script is written to a private temp file (0600 in a 0700 directory)
//!   rather than passed with `-c`, so resolved secrets never appear in the
//!   process table (`/proc/PID/cmdline` is world-readable).
//! - The child environment is NOT the delegate's: only a small allow-list
//!   (PATH, HOME, locale...) plus the task's `env`. The delegate's environment
//!   holds `env:` secret values and its own token; a script printing `env`
//!   must not be able to publish them unmasked.
//! - cwd is `workdir` or a fresh temp directory removed afterwards; stdin is null.
//! - stdout and stderr are read line by line (lines over 32 KiB are split),
//!   masked and batched to the manager.
//! - The whole process group is stopped on timeout, cancel, refusal and
//!   shutdown (SIGTERM, SIGKILL after 5 s), and also after a normal exit, so
//!   background processes a script leaves behind (`sleep 1000 &`) die with it
//!   instead of outliving the lease and holding the output pipes open.
//! - `output_vars` are captured when the script ends, however it ends (see
//!   [`outputs`]); an unset variable is left out of the outputs.
//! - Error types: a non-zero exit, a signal or a failure to start is `Unknown`;
//!   the run timeout is `Timeout`.

mod outputs;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use dray_shared::error_type::ErrorType;
use dray_shared::pb::{LogStream, TaskSpec};
use dray_shared::task::{self, ShellParams, TaskParams, kind};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use self::outputs::Capture;
use super::{CheckContext, Outcome, RunContext, StopReason, Target};

/// Timeout when the spec says 0.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);
/// Longer lines are split into pieces of this many bytes.
pub const MAX_LINE_BYTES: usize = 32 * 1024;
/// How long to keep reading output once every process is gone (a process that
/// left the group with `setsid` may still hold the pipes).
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);
/// Environment variables passed through from the delegate to scripts.
const PASS_THROUGH_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "TZ",
    "TMPDIR",
    // The host's outbound proxy (set by the Helm chart's `proxy` values), so the
    // tools scripts run (curl, kubectl, helm, git) reach the outside the same way.
    // A proxy URL with credentials is therefore visible to scripts.
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];
const FALLBACK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs `shell` tasks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shell;

fn shell_params(spec: &TaskSpec) -> Result<ShellParams, String> {
    match task::parse_params(spec) {
        Ok(TaskParams::Shell(p)) => Ok(p),
        Ok(_) => Err(format!("task kind {:?} is not a shell task", spec.kind)),
        Err(e) => Err(e.to_string()),
    }
}

/// The first executable `program` in the delegate's PATH.
pub fn find_in_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH").unwrap_or_else(|| FALLBACK_PATH.into());
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| {
        std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

fn child_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> =
        PASS_THROUGH_ENV.iter().filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v))).collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), FALLBACK_PATH.into()));
    }
    env
}

#[async_trait::async_trait]
impl Target for Shell {
    fn kinds(&self) -> &'static [&'static str] {
        &[kind::SHELL]
    }

    async fn check(&self, spec: &TaskSpec, cx: &CheckContext) -> Result<(), String> {
        let p = shell_params(spec)?;
        if find_in_path("bash").is_none() {
            return Err("bash is not installed on this delegate (not found in PATH)".into());
        }
        if let Some(w) = &p.workdir
            && !tokio::fs::metadata(w).await.is_ok_and(|m| m.is_dir())
        {
            return Err(format!("workdir {w} does not exist on this delegate"));
        }
        cx.secrets.check_text("script", &p.script).await.map_err(|e| e.to_string())?;
        for (k, v) in &p.env {
            cx.secrets.check_text(&format!("env.{k}"), v).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn run(&self, spec: TaskSpec, mut cx: RunContext) -> Outcome {
        let p = match shell_params(&spec) {
            Ok(p) => p,
            Err(e) => return Outcome::failed(e),
        };
        let timeout = match spec.timeout_ms {
            0 => DEFAULT_TIMEOUT,
            ms => Duration::from_millis(ms),
        };
        let script = match cx.substitute("script", &p.script).await {
            Ok(s) => s,
            Err(e) => return Outcome::secret_failure(&e),
        };
        let mut env = Vec::with_capacity(p.env.len());
        for (k, v) in &p.env {
            match cx.substitute(&format!("env.{k}"), v).await {
                Ok(v) => env.push((k.clone(), v)),
                Err(e) => return Outcome::secret_failure(&e),
            }
        }
        let Some(bash) = find_in_path("bash") else {
            return Outcome::failed("bash is not installed on this delegate (not found in PATH)");
        };
        let scratch = match tempfile::Builder::new().prefix("dray-task-").tempdir() {
            Ok(d) => d,
            Err(e) => return Outcome::failed(format!("cannot create a temp directory: {e}")),
        };
        let run =
            Run { script: &script, env, workdir: p.workdir.as_deref(), output_vars: &p.output_vars, timeout };
        let outcome = run_script(&bash, run, scratch.path(), &mut cx).await;
        // Removing a big build tree can take a while: keep it off the runtime thread.
        let _ = tokio::task::spawn_blocking(move || drop(scratch)).await;
        outcome
    }
}

fn write_script(path: &Path, script: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(script.as_bytes())
}

enum End {
    Exited(std::io::Result<ExitStatus>),
    TimedOut,
    Stopped(StopReason),
}

/// What to run, with secrets already resolved.
struct Run<'a> {
    script: &'a str,
    env: Vec<(String, String)>,
    workdir: Option<&'a str>,
    output_vars: &'a [String],
    timeout: Duration,
}

async fn run_script(bash: &Path, run: Run<'_>, scratch: &Path, cx: &mut RunContext) -> Outcome {
    let Run { script, mut env, workdir, output_vars, timeout } = run;
    let script_path = scratch.join("script.sh");
    if let Err(e) = write_script(&script_path, script) {
        return Outcome::failed(format!("cannot write the script file: {e}"));
    }
    let capture = if output_vars.is_empty() {
        None
    } else {
        match Capture::prepare(scratch, output_vars) {
            Ok(c) => {
                env.push(c.env());
                Some(c)
            }
            Err(e) => return Outcome::failed(format!("cannot set up output variables: {e}")),
        }
    };
    let cwd = match workdir {
        Some(w) => PathBuf::from(w),
        None => {
            let w = scratch.join("work");
            if let Err(e) = std::fs::create_dir(&w) {
                return Outcome::failed(format!("cannot create a working directory: {e}"));
            }
            w
        }
    };
    let mut cmd = Command::new(bash);
    cmd.arg("--noprofile")
        .arg("--norc")
        .arg(&script_path)
        .current_dir(&cwd)
        .env_clear()
        .envs(child_env())
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::failed(format!("cannot start bash in {}: {e}", cwd.display())),
    };
    let Some(pid) = child.id() else {
        return Outcome::failed("bash exited before it could be tracked");
    };
    // process_group(0) makes the child the leader of a new group with pgid = pid.
    let group = Group(Pid::from_raw(pid as i32));
    debug!(task.id = %cx.key.task, lease.epoch = cx.key.epoch.0, pid, "Shell task started.");

    let (tx, mut lines) = mpsc::channel(256);
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(out, LogStream::Stdout, tx.clone())));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(err, LogStream::Stderr, tx.clone())));
    }
    drop(tx);

    let deadline = Instant::now() + timeout;
    let mut open = true;
    let end = loop {
        tokio::select! {
            biased;
            reason = cx.stop.stopped() => break End::Stopped(reason),
            _ = tokio::time::sleep_until(deadline) => break End::TimedOut,
            _ = cx.logs.ready() => cx.logs.flush_now(),
            line = lines.recv(), if open && !cx.logs.is_full() => match line {
                Some((stream, text)) => cx.logs.line(stream, &text),
                None => open = false,
            },
            status = child.wait() => break End::Exited(status),
        }
    };

    let system = |cx: &mut RunContext, text: String| cx.logs.line(LogStream::System, &text);
    match &end {
        End::TimedOut => {
            system(
                cx,
                format!("[dray] timed out after {}; stopping the task", humantime::format_duration(timeout)),
            );
            group.stop(&mut child, KILL_GRACE).await;
        }
        End::Stopped(reason) => {
            match reason {
                StopReason::Cancelled => system(cx, "[dray] cancelled; stopping the task".into()),
                StopReason::Shutdown => system(cx, "[dray] delegate shutting down; stopping the task".into()),
                StopReason::Refused => {}
            }
            group.stop(&mut child, KILL_GRACE).await;
        }
        End::Exited(_) => {
            if group.alive() {
                system(cx, "[dray] stopping processes the script left running".into());
                group.stop(&mut child, KILL_GRACE).await;
            }
        }
    }

    let drain_until = Instant::now() + OUTPUT_DRAIN;
    while open {
        if cx.logs.is_full() {
            cx.logs.flush().await;
        }
        match tokio::time::timeout_at(drain_until, lines.recv()).await {
            Ok(Some((stream, text))) => cx.logs.line(stream, &text),
            Ok(None) => open = false,
            Err(_) => {
                warn!(task.id = %cx.key.task, "Output pipes still open after the task ended; a process escaped its group.");
                break;
            }
        }
    }
    for p in pumps {
        p.abort();
    }
    cx.logs.flush().await;

    let refused = matches!(end, End::Stopped(StopReason::Refused));
    let mut outcome = match end {
        End::TimedOut => Outcome::failed_as(
            ErrorType::Timeout,
            format!("timed out after {}", humantime::format_duration(timeout)),
        ),
        End::Stopped(reason) => Outcome::stopped(reason),
        End::Exited(Err(e)) => Outcome::failed(format!("cannot wait for bash: {e}")),
        End::Exited(Ok(status)) => exit_outcome(status),
    };
    // A refused lease's result is dropped: nothing to report.
    if let Some(capture) = capture.filter(|_| !refused) {
        collect_outputs(&capture, &mut outcome, cx).await;
    }
    outcome
}

/// Puts the captured output variables into `outcome`. Values too large to
/// report fail a task that had succeeded; a task that had failed keeps its own
/// reason, and the problem is logged.
async fn collect_outputs(capture: &Capture, outcome: &mut Outcome, cx: &mut RunContext) {
    match capture.read() {
        Ok(Some(values)) => outcome.outputs = values,
        Ok(None) => {
            cx.logs.line(
                LogStream::System,
                "[dray] output variables were not captured: bash ended without running its exit trap",
            );
            cx.logs.flush().await;
        }
        Err(e) if outcome.success => {
            *outcome = Outcome { exit_code: outcome.exit_code, ..Outcome::failed(e.to_string()) }
        }
        Err(e) => {
            cx.logs.line(LogStream::System, &format!("[dray] {e}"));
            cx.logs.flush().await;
        }
    }
}

fn exit_outcome(status: ExitStatus) -> Outcome {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(0), _) => Outcome { exit_code: Some(0), ..Outcome::succeeded() },
        (Some(n), _) => Outcome { exit_code: Some(n), ..Outcome::failed(format!("exit code {n}")) },
        (None, Some(sig)) => {
            let name =
                Signal::try_from(sig).map(|s| s.as_str().to_string()).unwrap_or_else(|_| sig.to_string());
            Outcome::failed(format!("killed by signal {name}"))
        }
        (None, None) => Outcome::failed("bash ended without an exit status"),
    }
}

/// Reads `reader` line by line into `tx`. Lines longer than [`MAX_LINE_BYTES`]
/// are split so one newline-less stream cannot grow memory without bound.
async fn pump<R: AsyncRead + Unpin>(reader: R, stream: LogStream, tx: mpsc::Sender<(LogStream, String)>) {
    let mut r = BufReader::with_capacity(16 * 1024, reader);
    let mut line: Vec<u8> = Vec::new();
    loop {
        let buf = match r.fill_buf().await {
            Ok(b) if !b.is_empty() => b,
            _ => break,
        };
        let room = MAX_LINE_BYTES - line.len();
        let complete = match buf.iter().position(|&b| b == b'\n') {
            Some(i) if i <= room => {
                line.extend_from_slice(&buf[..i]);
                r.consume(i + 1);
                true
            }
            _ => {
                let n = buf.len().min(room);
                line.extend_from_slice(&buf[..n]);
                r.consume(n);
                line.len() >= MAX_LINE_BYTES
            }
        };
        if complete && !emit(&mut line, stream, &tx).await {
            return;
        }
    }
    if !line.is_empty() {
        emit(&mut line, stream, &tx).await;
    }
}

async fn emit(line: &mut Vec<u8>, stream: LogStream, tx: &mpsc::Sender<(LogStream, String)>) -> bool {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    let text = String::from_utf8_lossy(line).into_owned();
    line.clear();
    tx.send((stream, text)).await.is_ok()
}

/// A process group led by a task's bash.
struct Group(Pid);

impl Group {
    /// True while any member is alive (zombies do not count: an orphaned
    /// grandchild stays a zombie until init reaps it, which in a container may
    /// be never, yet it holds nothing and cannot be killed further).
    fn alive(&self) -> bool {
        if killpg(self.0, None).is_err() {
            return false;
        }
        group_has_live_member(self.0.as_raw()).unwrap_or(true)
    }

    /// SIGTERM to the group, SIGKILL after `grace` if anything is left, and
    /// reap the leader.
    async fn stop(&self, child: &mut Child, grace: Duration) {
        let _ = killpg(self.0, Signal::SIGTERM);
        let give_up = Instant::now() + grace;
        loop {
            // Reap the leader as soon as it exits so it stops counting as alive.
            let _ = child.try_wait();
            if !self.alive() {
                break;
            }
            if Instant::now() >= give_up {
                let _ = killpg(self.0, Signal::SIGKILL);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The leader cannot leave its own group, so after SIGKILL this is quick;
        // bounded anyway so a stuck wait cannot hang the task forever.
        let _ = tokio::time::timeout(grace, child.wait()).await;
    }
}

/// Whether a non-zombie process in group `pgid` exists, from `/proc`; `None`
/// when `/proc` cannot be read (callers then trust `killpg(pgid, 0)`).
fn group_has_live_member(pgid: i32) -> Option<bool> {
    let dir = std::fs::read_dir("/proc").ok()?;
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((state, pgrp)) = parse_stat(&stat)
            && pgrp == pgid
            && state != 'Z'
            && state != 'X'
        {
            return Some(true);
        }
    }
    Some(false)
}

/// `(state, pgrp)` from a `/proc/PID/stat` line. The command name may contain
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::mask::MASK;
    use crate::targets::StopReason;
    use crate::targets::testing::{context, lines};
    use std::collections::BTreeMap;

    fn spec(script: &str, env: &[(&str, &str)], timeout_ms: u64) -> TaskSpec {
        let env: BTreeMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut s = task::shell_spec(script, env);
        s.timeout_ms = timeout_ms;
        s
    }

    fn texts(lines: &[(LogStream, String)], stream: LogStream) -> Vec<String> {
        lines.iter().filter(|(s, _)| *s == stream).map(|(_, t)| t.clone()).collect()
    }

    /// Gone, or a zombie waiting for a reaper that may never come (container init).
    fn gone(pid: i32) -> bool {
        if nix::sys::signal::kill(Pid::from_raw(pid), None).is_err() {
            return true;
        }
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| parse_stat(&s))
            .is_none_or(|(state, _)| state == 'Z' || state == 'X')
    }

    async fn read_pid(path: &Path) -> i32 {
        for _ in 0..200 {
            if let Ok(s) = std::fs::read_to_string(path)
                && let Ok(pid) = s.trim().parse()
            {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no pid in {}", path.display());
    }

    async fn wait_gone(pid: i32) -> bool {
        for _ in 0..100 {
            if gone(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn exit_codes_map_to_outcomes() {
        let (cx, _, _h) = context(&[]);
        let o = Shell.run(spec("echo ok", &[], 0), cx).await;
        assert_eq!(o, Outcome { exit_code: Some(0), ..Outcome::succeeded() });
        let (cx, _, _h) = context(&[]);
        let o = Shell.run(spec("echo failing >&2; exit 3", &[], 0), cx).await;
        assert_eq!(o, Outcome { exit_code: Some(3), ..Outcome::failed("exit code 3") });
        assert_eq!(o.error_type, Some(ErrorType::Unknown));
        let (cx, _, _h) = context(&[]);
        let o = Shell.run(spec("kill -KILL $$", &[], 0), cx).await;
        assert_eq!(o.message, "killed by signal SIGKILL");
        assert_eq!(o.exit_code, None);
    }

    #[tokio::test]
    async fn env_is_added_secrets_resolved_and_output_masked() {
        let (cx, outbox, _h) = context(&[("PW", "hunter2")]);
        let o = Shell
            .run(
                spec(
                    "echo \"greet=$GREETING\"; echo <+secrets.getValue(\"env:PW\")> | base64; printf 'pw=%s\\n' \"$PW\"",
                    &[("GREETING", "hi <+secrets.getValue(\"env:PW\")>")],
                    0,
                ),
                cx,
            )
            .await;
        assert!(o.success, "{o:?}");
        let out = texts(&lines(&outbox), LogStream::Stdout);
        // The task env is added; the delegate's own variables are not inherited.
        assert_eq!(out, [format!("greet=hi {MASK}"), MASK.to_string(), "pw=".to_string()]);
    }

    #[tokio::test]
    async fn delegate_environment_is_not_inherited() {
        let (cx, outbox, _h) = context(&[]);
        let o = Shell.run(spec("env | cut -d= -f1 | sort", &[("EXTRA", "1")], 0), cx).await;
        assert!(o.success, "{o:?}");
        let names = texts(&lines(&outbox), LogStream::Stdout);
        // Variables bash itself sets.
        let from_bash = ["PWD", "SHLVL", "_", "OLDPWD"];
        for n in &names {
            assert!(
                PASS_THROUGH_ENV.contains(&n.as_str()) || from_bash.contains(&n.as_str()) || n == "EXTRA",
                "unexpected variable {n} in {names:?}"
            );
        }
        assert!(names.contains(&"EXTRA".to_string()));
        assert!(names.contains(&"PATH".to_string()));
    }

    #[tokio::test]
    async fn each_stream_keeps_its_order() {
        let (cx, outbox, _h) = context(&[]);
        let o =
            Shell.run(spec("for i in $(seq 1 500); do echo out$i; echo err$i >&2; done", &[], 0), cx).await;
        assert!(o.success, "{o:?}");
        let all = lines(&outbox);
        let want = |p: &str| (1..=500).map(|i| format!("{p}{i}")).collect::<Vec<_>>();
        assert_eq!(texts(&all, LogStream::Stdout), want("out"));
        assert_eq!(texts(&all, LogStream::Stderr), want("err"));
    }

    #[tokio::test]
    async fn long_lines_are_split_and_partial_last_lines_kept() {
        let (cx, outbox, _h) = context(&[]);
        let script =
            format!("head -c {} /dev/zero | tr '\\0' a; echo; printf 'no newline'", MAX_LINE_BYTES + 10);
        let o = Shell.run(spec(&script, &[], 0), cx).await;
        assert!(o.success, "{o:?}");
        let out = texts(&lines(&outbox), LogStream::Stdout);
        assert_eq!(out.len(), 3, "{:?}", out.iter().map(String::len).collect::<Vec<_>>());
        assert_eq!(out[0].len(), MAX_LINE_BYTES);
        assert_eq!(out[1], "a".repeat(10));
        assert_eq!(out[2], "no newline");
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group_including_grandchildren() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.pid"), dir.path().join("b.pid"));
        let script = format!(
            "sleep 1000 & echo $! > {a}; bash -c 'sleep 100 & echo $! > {b}; wait'",
            a = a.display(),
            b = b.display()
        );
        let (cx, outbox, _h) = context(&[]);
        let started = std::time::Instant::now();
        let o = Shell.run(spec(&script, &[], 1000), cx).await;
        assert_eq!(o, Outcome::failed_as(ErrorType::Timeout, "timed out after 1s"));
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        for f in [&a, &b] {
            let pid = read_pid(f).await;
            assert!(wait_gone(pid).await, "pid {pid} from {} survived", f.display());
        }
        let sys = texts(&lines(&outbox), LogStream::System);
        assert_eq!(sys, ["[dray] timed out after 1s; stopping the task"]);
    }

    #[tokio::test]
    async fn processes_left_behind_are_stopped_and_do_not_hold_the_task() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.pid");
        let (cx, _outbox, _h) = context(&[]);
        let started = std::time::Instant::now();
        let o =
            Shell.run(spec(&format!("sleep 1000 & echo $! > {}; echo done", a.display()), &[], 0), cx).await;
        assert!(o.success, "{o:?}");
        assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
        let pid = read_pid(&a).await;
        assert!(wait_gone(pid).await, "background pid {pid} survived");
    }

    #[tokio::test]
    async fn cancel_kills_the_group_and_reports_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.pid");
        let (cx, _outbox, handle) = context(&[]);
        let script = format!("bash -c 'sleep 1000 & echo $! > {}; wait'", a.display());
        let run = tokio::spawn(async move { Shell.run(spec(&script, &[], 0), cx).await });
        let pid = read_pid(&a).await;
        handle.stop(StopReason::Cancelled);
        let o = tokio::time::timeout(Duration::from_secs(10), run).await.unwrap().unwrap();
        assert_eq!(o, Outcome::stopped(StopReason::Cancelled));
        assert!(o.cancelled && !o.success);
        assert!(wait_gone(pid).await, "grandchild {pid} survived the cancel");
    }

    #[tokio::test]
    async fn sigterm_ignoring_processes_get_sigkill() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.pid");
        let (cx, _outbox, handle) = context(&[]);
        let script =
            format!("trap '' TERM; bash -c \"trap '' TERM; sleep 1000\" & echo $! > {}; wait", a.display());
        let run = tokio::spawn(async move { Shell.run(spec(&script, &[], 0), cx).await });
        let pid = read_pid(&a).await;
        let started = std::time::Instant::now();
        handle.stop(StopReason::Shutdown);
        let o = tokio::time::timeout(Duration::from_secs(15), run).await.unwrap().unwrap();
        assert_eq!(o.message, "interrupted: delegate shut down");
        assert!(started.elapsed() >= KILL_GRACE - Duration::from_millis(200), "{:?}", started.elapsed());
        assert!(wait_gone(pid).await);
    }

    #[tokio::test]
    async fn workdir_is_used_and_the_temp_dir_removed() {
        let dir = tempfile::tempdir().unwrap();
        let wd = dir.path().join("wd");
        std::fs::create_dir(&wd).unwrap();
        let mut s = spec("pwd", &[], 0);
        s.params_json = serde_json::json!({"script": "pwd", "workdir": wd}).to_string();
        let (cx, outbox, _h) = context(&[]);
        assert!(Shell.run(s, cx).await.success);
        assert_eq!(texts(&lines(&outbox), LogStream::Stdout), [wd.display().to_string()]);

        let (cx, outbox, _h) = context(&[]);
        assert!(Shell.run(spec("pwd; ls -A", &[], 0), cx).await.success);
        let out = texts(&lines(&outbox), LogStream::Stdout);
        assert_eq!(out.len(), 1, "the fresh directory is empty: {out:?}");
        assert!(!Path::new(&out[0]).exists(), "temp dir {} not removed", out[0]);
    }

    #[tokio::test]
    async fn check_reports_what_is_missing() {
        let (cx, _, _h) = context(&[("PRESENT", "x")]);
        let ccx = CheckContext { key: cx.key, secrets: std::sync::Arc::clone(&cx.secrets) };
        assert_eq!(
            Shell.check(&spec("echo <+secrets.getValue(\"env:PRESENT\")>", &[], 0), &ccx).await,
            Ok(())
        );
        let e = Shell
            .check(&spec("echo", &[("X", "<+secrets.getValue(\"env:DB_PASSWORD\")>")], 0), &ccx)
            .await
            .unwrap_err();
        assert_eq!(e, "secret env:DB_PASSWORD is not set on this delegate");
        let mut s = spec("pwd", &[], 0);
        s.params_json = r#"{"script":"pwd","workdir":"/no/such/dir"}"#.into();
        assert_eq!(
            Shell.check(&s, &ccx).await.unwrap_err(),
            "workdir /no/such/dir does not exist on this delegate"
        );
        let mut s = spec("x", &[], 0);
        s.params_json = r#"{"script":"x","bogus":1}"#.into();
        assert!(Shell.check(&s, &ccx).await.unwrap_err().contains("unknown field `bogus`"));
    }

    #[tokio::test]
    async fn unresolvable_secret_at_run_time_fails_without_running() {
        let (cx, outbox, _h) = context(&[]);
        let o = Shell.run(spec("echo <+secrets.getValue(\"env:GONE\")>", &[], 0), cx).await;
        assert_eq!(o, Outcome::failed_as(ErrorType::NotFound, "secret env:GONE is not set on this delegate"));
        assert!(lines(&outbox).is_empty());
    }

    fn with_outputs(script: &str, vars: &[&str], timeout_ms: u64) -> TaskSpec {
        let mut s = task::shell_spec_with_outputs(script, BTreeMap::new(), vars);
        s.timeout_ms = timeout_ms;
        s
    }

    fn outputs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[tokio::test]
    async fn output_variables_keep_awkward_values_and_leave_out_unset_ones() {
        let (cx, outbox, _h) = context(&[]);
        let script = "A='two words'; B=$'line1\\nline2'; C='k=v=w'; D=''; E=gone; unset E; F=(first second)\n\
                      echo done";
        let o = Shell.run(with_outputs(script, &["A", "B", "C", "D", "E", "F", "NEVER_SET"], 0), cx).await;
        assert!(o.success, "{o:?}");
        let want =
            outputs(&[("A", "two words"), ("B", "line1\nline2"), ("C", "k=v=w"), ("D", ""), ("F", "first")]);
        assert_eq!(o.outputs, want);
        assert_eq!(texts(&lines(&outbox), LogStream::Stdout), ["done"]);
    }

    #[tokio::test]
    async fn output_variables_are_captured_when_the_script_exits_or_fails() {
        let (cx, _, _h) = context(&[]);
        let o = Shell.run(with_outputs("X=before; exit 3; X=after", &["X"], 0), cx).await;
        assert_eq!((o.success, o.exit_code, o.error_type), (false, Some(3), Some(ErrorType::Unknown)));
        assert_eq!(o.outputs, outputs(&[("X", "before")]));

        // set -e, -u and -x: the capture neither breaks nor shows up in the trace.
        let (cx, outbox, _h) = context(&[]);
        let o = Shell.run(with_outputs("set -euxo pipefail\nX=1\nfalse\nX=2", &["X", "Y"], 0), cx).await;
        assert_eq!((o.exit_code, o.outputs.clone()), (Some(1), outputs(&[("X", "1")])), "{o:?}");
        let trace = texts(&lines(&outbox), LogStream::Stderr);
        assert_eq!(trace, ["+ X=1", "+ false"], "capture internals must stay out of the trace");
    }

    #[tokio::test]
    async fn a_scripts_own_exit_trap_still_runs_after_the_capture() {
        let (cx, outbox, _h) = context(&[]);
        let script = "trap 'echo \"user trap saw $?\"' EXIT INT\nX=1\nexit 4";
        let o = Shell.run(with_outputs(script, &["X"], 0), cx).await;
        assert_eq!((o.exit_code, o.outputs.clone()), (Some(4), outputs(&[("X", "1")])), "{o:?}");
        assert_eq!(texts(&lines(&outbox), LogStream::Stdout), ["user trap saw 4"]);

        // Resetting the EXIT trap puts the capture back; other signals are untouched.
        let (cx, outbox, _h) = context(&[]);
        let script = "trap 'echo never' EXIT\ntrap - EXIT\ntrap -- 'echo usr1' USR1\nkill -USR1 $$\nX=2";
        let o = Shell.run(with_outputs(script, &["X"], 0), cx).await;
        assert_eq!(o.outputs, outputs(&[("X", "2")]), "{o:?}");
        assert_eq!(texts(&lines(&outbox), LogStream::Stdout), ["usr1"]);
    }

    #[tokio::test]
    async fn child_shells_and_subshells_do_not_capture() {
        let (cx, outbox, _h) = context(&[]);
        let script = "X=outer\n( X=subshell; exit 0 )\n\
                      bash -c 'echo \"child BASH_ENV=${BASH_ENV:-unset}\"; X=child; exit 0'\n\
                      echo \"X=$X\"";
        let o = Shell.run(with_outputs(script, &["X"], 0), cx).await;
        assert!(o.success, "{o:?}");
        assert_eq!(o.outputs, outputs(&[("X", "outer")]));
        assert_eq!(texts(&lines(&outbox), LogStream::Stdout), ["child BASH_ENV=unset", "X=outer"]);

        // A subshell that installs an EXIT trap gets the capture chained in too
        // (functions are inherited), but must not write: only the task's shell does.
        let (cx, _, _h) = context(&[]);
        let script = "X=outer\n( X=subshell; trap 'echo sub' EXIT )\nexec true";
        let o = Shell.run(with_outputs(script, &["X"], 0), cx).await;
        assert_eq!(o.outputs, BTreeMap::new(), "{o:?}");
    }

    #[tokio::test]
    async fn output_variables_survive_a_timeout() {
        let (cx, _, _h) = context(&[]);
        let o = Shell.run(with_outputs("X=early; sleep 100", &["X"], 1000), cx).await;
        assert_eq!(o.error_type, Some(ErrorType::Timeout));
        assert_eq!(o.outputs, outputs(&[("X", "early")]));
    }

    #[tokio::test]
    async fn secret_values_in_outputs_are_masked() {
        let (cx, _, _h) = context(&[("PW", "hunter2")]);
        let masker = cx.masker();
        let script = "TOKEN=\"<+secrets.getValue(\"env:PW\")>-suffix\"; PLAIN=ok";
        let mut o = Shell.run(with_outputs(script, &["TOKEN", "PLAIN"], 0), cx).await;
        assert_eq!(o.outputs["TOKEN"], "hunter2-suffix", "the target reports the real value...");
        o.mask(&masker);
        // ...and the runner masks it before it leaves, like every log line.
        assert_eq!(o.outputs, outputs(&[("TOKEN", &format!("{MASK}-suffix")), ("PLAIN", "ok")]));
    }

    #[tokio::test]
    async fn missing_or_oversized_captures_are_reported() {
        let (cx, outbox, _h) = context(&[]);
        let o = Shell.run(with_outputs("X=1; exec true", &["X"], 0), cx).await;
        assert!(o.success && o.outputs.is_empty(), "{o:?}");
        let sys = texts(&lines(&outbox), LogStream::System);
        assert_eq!(
            sys,
            ["[dray] output variables were not captured: bash ended without running its exit trap"]
        );

        let (cx, _, _h) = context(&[]);
        let script = format!("X=$(head -c {} /dev/zero | tr '\\0' a)", outputs::MAX_OUTPUTS_BYTES);
        let o = Shell.run(with_outputs(&script, &["X"], 0), cx).await;
        assert!(!o.success && o.outputs.is_empty(), "{o:?}");
        assert_eq!(o.exit_code, Some(0));
        assert!(o.message.contains("larger than"), "{o:?}");
    }

    #[test]
    fn stat_lines_parse_with_odd_command_names() {
        assert_eq!(parse_stat("123 (a) b) S 1 77 77 0"), Some(('S', 77)));
        assert_eq!(parse_stat("garbage"), None);
    }
}
