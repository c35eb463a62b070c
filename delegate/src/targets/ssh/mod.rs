//! The `ssh` target: deploys to, rolls back and runs commands on SSH hosts
//! (russh; only this folder imports it).
//!
//! - [`inventory`] expands the host list; [`rollout`] plans phases and runs
//!   them with bounded parallelism; [`conn`] is one multiplexed connection per
//!   host per task (host key check, login, scripts, SFTP); [`script`] is the
//!   release layout and the bash run on each host; [`crate::targets::artifact`] fetches and
//!   verifies the artifact on the delegate; [`host_keys`] decides on host keys.
//! - Secrets (private key, password, env values, config file contents,
//!   commands) are resolved through the run context, so they are masked in
//!   every log line and in the outcome. Every remote line is prefixed with
//!   `[host:port]`.
//! - Outputs: `hosts` (per-host status, JSON), `release`, and after a
//!   successful deploy or rollback `dray.instances`.
//! - Error types: the first failed host's (`Verification` for a refused host
//!   key or a wrong artifact checksum, `Authentication` for refused
//!   credentials, `Connectivity`, `Unknown` for a failing command); the run
//!   timeout is `Timeout`. On timeout and cancel every remote process group
//!   gets `TERM` and every connection is closed.

pub mod conn;
pub mod host_keys;
pub mod inventory;
pub mod rollout;
pub mod script;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dray_shared::error_type::ErrorType;
use dray_shared::pb::{LogStream, TaskSpec};
use dray_shared::task::ssh::{Action, ArtifactSource, HOSTS_OUTPUT, HostReport, RELEASE_OUTPUT, SshParams};
use dray_shared::task::{self, INSTANCES_OUTPUT, Instance, TaskParams, kind};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use self::conn::{Conn, Credentials, Failure, Line};
use self::inventory::Host;
use self::rollout::HostEnd;
use super::artifact;
use super::{CheckContext, Outcome, RunContext, StopReason, Target};

/// Timeout when the spec says 0.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// After a stop, how long hosts get to wind down before everything is dropped.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Runs `ssh` tasks.
#[derive(Debug, Default)]
pub struct Ssh;

fn ssh_params(spec: &TaskSpec) -> Result<SshParams, String> {
    match task::parse_params(spec) {
        Ok(TaskParams::Ssh(p)) => Ok(*p),
        Ok(_) => Err(format!("task kind {:?} is not an ssh task", spec.kind)),
        Err(e) => Err(e.to_string()),
    }
}

/// Every field that may hold secret references, with its name.
fn secret_fields(p: &SshParams) -> Vec<(String, &str)> {
    let mut out: Vec<(String, &str)> = Vec::new();
    let c = &p.credentials;
    for (n, v) in [("private_key", &c.private_key), ("passphrase", &c.passphrase), ("password", &c.password)]
    {
        if let Some(v) = v {
            out.push((format!("credentials.{n}"), v));
        }
    }
    for (k, v) in &p.env {
        out.push((format!("env.{k}"), v));
    }
    for cf in &p.config_files {
        out.push((format!("config_files.{}", cf.path), &cf.content));
    }
    let cmds = &p.commands;
    for (n, v) in [
        ("install", &cmds.install),
        ("stop", &cmds.stop),
        ("start", &cmds.start),
        ("health_check", &cmds.health_check),
    ] {
        if let Some(v) = v {
            out.push((format!("commands.{n}"), v));
        }
    }
    if !p.script.is_empty() {
        out.push(("script".into(), &p.script));
    }
    if let Some(a) = &p.artifact
        && let ArtifactSource::Http { url } = &a.source
    {
        out.push(("artifact.url".into(), url));
    }
    out
}

#[async_trait::async_trait]
impl Target for Ssh {
    fn kinds(&self) -> &'static [&'static str] {
        &[kind::SSH]
    }

    async fn check(&self, spec: &TaskSpec, cx: &CheckContext) -> Result<(), String> {
        let p = ssh_params(spec)?;
        for (field, text) in secret_fields(&p) {
            cx.secrets.check_text(&field, text).await.map_err(|e| e.to_string())?;
        }
        if let dray_shared::task::ssh::HostKeyPolicy::KnownHosts { file } = &p.inventory.host_key
            && !std::path::Path::new(file).is_file()
        {
            return Err(format!("known_hosts file {file} does not exist on this delegate"));
        }
        if let Some(f) = &p.inventory.hosts_file
            && !std::path::Path::new(f).is_file()
        {
            return Err(format!("hosts file {f} does not exist on this delegate"));
        }
        if let Some(a) = &p.artifact
            && let ArtifactSource::File { path } = &a.source
            && !std::path::Path::new(path).is_file()
        {
            return Err(format!("artifact {path} does not exist on this delegate"));
        }
        Ok(())
    }

    async fn run(&self, spec: TaskSpec, mut cx: RunContext) -> Outcome {
        let p = match ssh_params(&spec) {
            Ok(p) => p,
            Err(e) => return Outcome::failed(e),
        };
        let timeout = match spec.timeout_ms {
            0 => DEFAULT_TIMEOUT,
            ms => Duration::from_millis(ms),
        };
        let deadline = Instant::now() + timeout;
        let job = match prepare(&p, &mut cx).await {
            Ok(j) => Arc::new(j),
            Err(f) => {
                cx.logs.line(LogStream::Stderr, &f.message);
                cx.logs.flush().await;
                return Outcome::failed_as(f.error_type, f.message);
            }
        };
        cx.logs.line(
            LogStream::Stdout,
            &format!(
                "{} on {} host(s) in {} phase(s), at most {} at once",
                match p.action {
                    Action::Deploy => format!("deploying release {}", p.release),
                    Action::Rollback => "rolling back".to_string(),
                    Action::Command => "running a command".to_string(),
                },
                job.hosts.len(),
                rollout::plan(job.hosts.len(), p.phase_size).len(),
                p.max_parallel
            ),
        );
        let (tx, mut rx) = mpsc::channel::<Line>(1024);
        let (abort_tx, abort_rx) = watch::channel(false);
        let hosts = job.hosts.len();
        let work = {
            let job = Arc::clone(&job);
            move |i: usize| {
                let (job, tx, abort) = (Arc::clone(&job), tx.clone(), abort_rx.clone());
                async move { job.host(i, tx, abort).await }
            }
        };
        let rollout = rollout::run(hosts, p.phase_size, p.max_parallel as usize, work);
        tokio::pin!(rollout);
        let mut stop = cx.stop.clone();
        let mut stopped: Option<Result<StopReason, ()>> = None;
        let mut hard_stop = std::pin::pin!(tokio::time::sleep(Duration::MAX / 4));
        let ends = loop {
            tokio::select! {
                biased;
                reason = stop.stopped(), if stopped.is_none() => {
                    let _ = abort_tx.send(true);
                    stopped = Some(Ok(reason));
                    hard_stop.as_mut().reset(Instant::now() + STOP_GRACE);
                }
                _ = tokio::time::sleep_until(deadline), if stopped.is_none() => {
                    let _ = abort_tx.send(true);
                    stopped = Some(Err(()));
                    hard_stop.as_mut().reset(Instant::now() + STOP_GRACE);
                }
                _ = &mut hard_stop => break None,
                _ = cx.logs.ready() => cx.logs.flush_now(),
                line = rx.recv(), if !cx.logs.is_full() => if let Some(l) = line {
                    cx.logs.line(l.stream, &format!("[{}] {}", l.host, l.text));
                },
                ends = &mut rollout => break Some(ends),
            }
        };
        while let Ok(l) = rx.try_recv() {
            if cx.logs.is_full() {
                cx.logs.flush().await;
            }
            cx.logs.line(l.stream, &format!("[{}] {}", l.host, l.text));
        }
        let outcome = match stopped {
            Some(Ok(reason)) => Outcome::stopped(reason),
            Some(Err(())) => Outcome::failed_as(
                ErrorType::Timeout,
                format!("timed out after {}", humantime::format_duration(timeout)),
            ),
            None => match ends {
                Some(ends) => summarize(&p, &job, &ends, &mut cx),
                None => Outcome::failed("the rollout did not end"),
            },
        };
        if !outcome.success && !outcome.message.is_empty() {
            cx.logs.line(LogStream::Stderr, &outcome.message);
        }
        cx.logs.flush().await;
        outcome
    }
}

/// Everything a host's work needs, secrets resolved.
struct Job {
    action: Action,
    hosts: Vec<Host>,
    policy: Arc<dray_shared::task::ssh::HostKeyPolicy>,
    creds: Credentials,
    connect_timeout: Duration,
    base_dir: String,
    release: String,
    artifact: Option<(artifact::Local, String)>,
    config_files: Vec<(String, String)>,
    commands: dray_shared::task::ssh::Commands,
    keep: u32,
    script: String,
    env: BTreeMap<String, String>,
}

async fn prepare(p: &SshParams, cx: &mut RunContext) -> Result<Job, Failure> {
    let unknown = |e: String| Failure::new(ErrorType::Unknown, e);
    let mut hosts = inventory::load(&p.inventory).map_err(|e| unknown(e.to_string()))?;
    if !p.only_hosts.is_empty() {
        let wanted = inventory::expand_all(
            &p.only_hosts.iter().flat_map(|h| inventory::split_list(h)).collect::<Vec<_>>(),
            p.inventory.port,
        )
        .map_err(|e| unknown(e.to_string()))?;
        if let Some(w) = wanted.iter().find(|w| !hosts.contains(w)) {
            return Err(unknown(format!("only_hosts: {w} is not one of the infrastructure's hosts")));
        }
        hosts.retain(|h| wanted.contains(h));
    }
    let mut resolve =
        async |field: &str, text: &str| cx.substitute(field, text).await.map_err(|e| unknown(e.to_string()));
    let c = &p.credentials;
    let key_text = match &c.private_key {
        Some(k) => Some(resolve("credentials.private_key", k).await?),
        None => None,
    };
    let passphrase = match &c.passphrase {
        Some(k) => Some(resolve("credentials.passphrase", k).await?),
        None => None,
    };
    let password = match &c.password {
        Some(k) => Some(resolve("credentials.password", k).await?),
        None => None,
    };
    let key = match key_text {
        Some(t) => Some(Arc::new(conn::decode_key(&t, passphrase.as_deref())?)),
        None => None,
    };
    let mut env = BTreeMap::new();
    for (k, v) in &p.env {
        env.insert(k.clone(), resolve(&format!("env.{k}"), v).await?);
    }
    let mut config_files = Vec::new();
    for cf in &p.config_files {
        config_files
            .push((cf.path.clone(), resolve(&format!("config_files.{}", cf.path), &cf.content).await?));
    }
    let mut commands = p.commands.clone();
    for (n, v) in [
        ("install", &mut commands.install),
        ("stop", &mut commands.stop),
        ("start", &mut commands.start),
        ("health_check", &mut commands.health_check),
    ] {
        if let Some(t) = v {
            *t = resolve(&format!("commands.{n}"), t).await?;
        }
    }
    let script = if p.script.is_empty() { String::new() } else { resolve("script", &p.script).await? };
    let artifact = match (&p.action, &p.artifact) {
        (Action::Deploy, Some(a)) => {
            let name = a.name();
            let local = match &a.source {
                ArtifactSource::File { path } => {
                    artifact::local(std::path::Path::new(path), Some(&a.sha256)).await.map_err(failure)?
                }
                ArtifactSource::Http { url } => {
                    let real = resolve("artifact.url", url).await?;
                    let shown = cx.masker().mask(&real);
                    cx.logs.line(LogStream::Stdout, &format!("downloading the artifact from {shown}"));
                    artifact::download(&real, &shown, Some(&a.sha256), &name).await.map_err(failure)?
                }
            };
            cx.logs.line(
                LogStream::Stdout,
                &format!(
                    "artifact {name}: {} bytes, sha256 {} verified",
                    local.bytes,
                    a.sha256.to_ascii_lowercase()
                ),
            );
            Some((local, name))
        }
        _ => None,
    };
    Ok(Job {
        action: p.action,
        hosts,
        policy: Arc::new(p.inventory.host_key.clone()),
        creds: Credentials { user: c.user.clone(), key, password },
        connect_timeout: match p.inventory.connect_timeout_ms {
            0 => conn::DEFAULT_CONNECT_TIMEOUT,
            ms => Duration::from_millis(ms),
        },
        base_dir: p.base_dir.clone(),
        release: p.release.clone(),
        artifact,
        config_files,
        commands,
        keep: p.keep_releases,
        script,
        env,
    })
}

impl Job {
    /// The whole work on host `i`; never panics, always ends.
    async fn host(&self, i: usize, out: mpsc::Sender<Line>, mut abort: watch::Receiver<bool>) -> HostEnd {
        if *abort.borrow() {
            return HostEnd::Skipped;
        }
        let host = &self.hosts[i];
        let conn = tokio::select! {
            c = Conn::open(host, Arc::clone(&self.policy), &self.creds, self.connect_timeout, &out) => c,
            _ = abort.wait_for(|a| *a) => return HostEnd::Skipped,
        };
        let conn = match conn {
            Ok(c) => c,
            Err(f) => return HostEnd::Failed(f),
        };
        let end = match self.work(&conn, &out, &mut abort).await {
            Ok(end) => end,
            Err(f) => HostEnd::Failed(f),
        };
        conn.close().await;
        end
    }

    async fn work(
        &self,
        conn: &Conn,
        out: &mpsc::Sender<Line>,
        abort: &mut watch::Receiver<bool>,
    ) -> Result<HostEnd, Failure> {
        let host = &conn.host;
        let base = script::base_dir(&self.base_dir, &host.name, host.port);
        let address = host.address();
        let vars = script::HostVars { host: &address, base: &base, env: &self.env };
        match self.action {
            Action::Deploy => {
                let paths: Vec<String> = self.config_files.iter().map(|(p, _)| p.clone()).collect();
                let prep = conn.run(&script::prepare(&vars, &self.release, &paths), out, abort).await?;
                result_of(host, &prep)?;
                let dir = format!("{base}/releases/{}", self.release);
                let sftp = conn.sftp().await?;
                if let Some((local, name)) = &self.artifact {
                    conn.upload(&sftp, &local.path, &format!("{dir}/{name}")).await?;
                }
                for (path, content) in &self.config_files {
                    conn.write(&sftp, &format!("{dir}/{path}"), content.as_bytes()).await?;
                }
                let _ = sftp.close().await;
                let name = self.artifact.as_ref().map(|(_, n)| n.as_str()).unwrap_or("");
                let s = script::deploy(&vars, &self.release, name, &self.commands, self.keep);
                let exit = conn.run(&s, out, abort).await?;
                let (_, release) = result_of(host, &exit)?;
                Ok(HostEnd::Succeeded(release))
            }
            Action::Rollback => {
                let exit =
                    conn.run(&script::rollback(&vars, &self.release, &self.commands), out, abort).await?;
                let (status, release) = result_of(host, &exit)?;
                Ok(if status == "unchanged" {
                    HostEnd::Unchanged(release)
                } else {
                    HostEnd::Succeeded(release)
                })
            }
            Action::Command => {
                let exit = conn.run(&script::command(&vars, &self.script), out, abort).await?;
                result_of(host, &exit)?;
                Ok(HostEnd::Succeeded(String::new()))
            }
        }
    }
}

/// The `(status, release)` of a script that succeeded, or why it failed.
fn result_of(host: &Host, exit: &conn::Exit) -> Result<(String, String), Failure> {
    let fail = |m: String| Failure::new(ErrorType::Unknown, format!("{host}: {m}"));
    match (exit.code, &exit.signal) {
        (Some(0), _) => exit
            .result
            .as_deref()
            .and_then(script::parse_result)
            .ok_or_else(|| fail("the script ended without reporting a result".into())),
        (Some(code), _) => Err(fail(match script::failed_stage(code) {
            Some(stage) => match &exit.last_error {
                Some(e) => e.clone(),
                None => format!("{stage} failed"),
            },
            None => format!("the script failed with exit code {code}"),
        })),
        (None, Some(sig)) => Err(fail(format!("the script was killed by signal {sig}"))),
        (None, None) => Err(fail("the connection closed before the script reported its exit status".into())),
    }
}

/// The outcome of a finished rollout: outputs, instances, the first failure.
fn summarize(p: &SshParams, job: &Job, ends: &[(usize, HostEnd)], cx: &mut RunContext) -> Outcome {
    let mut reports = Vec::with_capacity(ends.len());
    let mut first_failure: Option<(usize, &Failure)> = None;
    for (host, (phase, end)) in job.hosts.iter().zip(ends) {
        let (status, release, message) = match end {
            HostEnd::Succeeded(r) => ("Succeeded", r.clone(), String::new()),
            HostEnd::Unchanged(r) => ("Unchanged", r.clone(), String::new()),
            HostEnd::Skipped => ("Skipped", String::new(), String::new()),
            HostEnd::Failed(f) => {
                first_failure.get_or_insert((*phase, f));
                ("Failed", String::new(), f.message.clone())
            }
        };
        reports.push(HostReport {
            host: host.address(),
            phase: *phase,
            status: status.into(),
            release,
            message,
        });
    }
    let counts = |s: &str| reports.iter().filter(|r| r.status == s).count();
    cx.logs.line(
        LogStream::Stdout,
        &format!(
            "hosts: {} succeeded, {} unchanged, {} failed, {} skipped",
            counts("Succeeded"),
            counts("Unchanged"),
            counts("Failed"),
            counts("Skipped")
        ),
    );
    let mut outputs = BTreeMap::new();
    outputs.insert(HOSTS_OUTPUT.to_string(), serde_json::to_string(&reports).unwrap_or_default());
    if let Some((phase, f)) = first_failure {
        let phases = ends.last().map(|(p, _)| *p).unwrap_or(1);
        let skipped = if phase < phases { "; later phases were not started" } else { "" };
        let failed = counts("Failed");
        let msg = format!("phase {phase} of {phases} failed on {failed} host(s): {}{skipped}", f.message);
        return Outcome::failed_as(f.error_type, msg).with_outputs(outputs);
    }
    if p.action == Action::Deploy {
        outputs.insert(RELEASE_OUTPUT.to_string(), p.release.clone());
    }
    if p.action != Action::Command {
        let names: std::collections::HashSet<&str> = job.hosts.iter().map(|h| h.name.as_str()).collect();
        let distinct = names.len() == job.hosts.len();
        let artifact = job.artifact.as_ref().map(|(_, n)| n.as_str()).unwrap_or("");
        let instances: Vec<Instance> = job
            .hosts
            .iter()
            .zip(&reports)
            .filter(|(_, r)| !r.release.is_empty())
            .map(|(h, r)| Instance {
                name: if distinct { h.name.clone() } else { h.address() },
                host: h.address(),
                namespace: String::new(),
                version: if artifact.is_empty() {
                    r.release.clone()
                } else {
                    format!("{}/{artifact}", r.release)
                },
                status: "Running".into(),
                details: BTreeMap::from([("release".to_string(), r.release.clone())]),
            })
            .collect();
        outputs.insert(INSTANCES_OUTPUT.to_string(), serde_json::to_string(&instances).unwrap_or_default());
    }
    Outcome::succeeded().with_outputs(outputs)
}

/// An artifact failure as this target reports failures.
fn failure(f: artifact::Failure) -> Failure {
    Failure::new(f.error_type, f.message)
}
