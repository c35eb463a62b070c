//! Harness for end-to-end tests: runs the real `dray` and `dray-delegate`
//! binaries (found next to the test executable, so `cargo build --bins` first)
//! over real TLS, on a real SQLite file or the machine's PostgreSQL.
//!
//! Every process is spawned on free loopback ports with its own temp dir, killed
//! when its handle drops, and waited on by readiness (`/readyz`, a log line), not
//! by sleeping. `DRAY_TEST_PATIENCE` scales every wait (default 1.0).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

pub mod bench;
pub mod cron;
pub mod k8s_peer;
pub mod moto;
pub mod openbao;
pub mod peers;
pub mod proxy_peer;
pub mod sshd;

/// Path of a workspace binary built next to the test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(path.exists(), "{} not found: run `cargo build --bins` before the tests", path.display());
    path
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Multiplier for every timeout, from `DRAY_TEST_PATIENCE`.
pub fn patience() -> f64 {
    std::env::var("DRAY_TEST_PATIENCE").ok().and_then(|v| v.parse().ok()).unwrap_or(1.0)
}

/// Polls `f` every 50 ms until it returns `Some`, or fails after `timeout` (scaled).
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout.mul_f64(patience());
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Which store a manager runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// SQLite file in the data dir.
    Sqlite,
    /// The machine's PostgreSQL, in a fresh schema.
    Postgres,
}

/// PostgreSQL URL used by the tests (override with `DRAY_TEST_PG_URL`).
pub fn pg_url() -> String {
    std::env::var("DRAY_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Manager knobs for tests.
#[derive(Debug, Clone)]
pub struct ManagerOpts {
    /// `--lease-ttl`.
    pub lease_ttl: &'static str,
    /// `--offer-timeout`.
    pub offer_timeout: &'static str,
    /// `--queue-timeout`.
    pub queue_timeout: &'static str,
    /// `--delegate-cert-ttl`.
    pub cert_ttl: &'static str,
}

impl Default for ManagerOpts {
    fn default() -> Self {
        ManagerOpts { lease_ttl: "3s", offer_timeout: "2s", queue_timeout: "30s", cert_ttl: "1h" }
    }
}

/// A running `dray server`.
pub struct Manager {
    /// Temp dir holding the logs, and the data dir unless this is a replica.
    pub dir: tempfile::TempDir,
    /// Store kind.
    pub kind: StoreKind,
    /// PostgreSQL schema, when on PostgreSQL.
    pub schema: Option<String>,
    /// gRPC port.
    pub grpc_port: u16,
    /// HTTP port.
    pub http_port: u16,
    /// In `dir`, or the first replica's data dir for [`Manager::start_replica_of`].
    data_dir: PathBuf,
    /// Whether dropping this manager drops the PostgreSQL schema (only the first replica does).
    owns_schema: bool,
    opts: ManagerOpts,
    child: Option<Child>,
}

impl Manager {
    /// Starts a manager with default test options.
    pub fn start(kind: StoreKind) -> anyhow::Result<Manager> {
        Self::start_with(kind, ManagerOpts::default())
    }

    /// Starts a manager.
    pub fn start_with(kind: StoreKind, opts: ManagerOpts) -> anyhow::Result<Manager> {
        let schema = (kind == StoreKind::Postgres).then(|| format!("t_{}", uuid::Uuid::now_v7().simple()));
        let dir = tempfile::tempdir()?;
        let mut m = Manager {
            data_dir: dir.path().join("data"),
            dir,
            kind,
            schema,
            grpc_port: free_port(),
            http_port: free_port(),
            owns_schema: true,
            opts,
            child: None,
        };
        m.spawn()?;
        Ok(m)
    }

    /// Starts another replica next to `first`: the same data dir (so the same CA,
    /// admin token and server certificate), the same database URL and schema and
    /// the same options, but its own ports, log file and process. PostgreSQL only.
    ///
    /// The schema and data dir stay `first`'s: dropping `first` drops the schema
    /// and deletes the data dir, so drop replicas before it (declare them after it).
    pub fn start_replica_of(first: &Manager) -> anyhow::Result<Manager> {
        anyhow::ensure!(first.kind == StoreKind::Postgres, "replicas share a PostgreSQL store, not SQLite");
        let mut m = Manager {
            dir: tempfile::tempdir()?,
            kind: first.kind,
            schema: first.schema.clone(),
            grpc_port: free_port(),
            http_port: free_port(),
            data_dir: first.data_dir(),
            owns_schema: false,
            opts: first.opts.clone(),
            child: None,
        };
        m.spawn()?;
        Ok(m)
    }

    /// The data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone()
    }

    /// The manager's log file (all runs appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("manager.log")
    }

    /// Contents of the log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// gRPC URL.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.grpc_port)
    }

    /// CA file.
    pub fn ca_file(&self) -> PathBuf {
        self.data_dir().join("ca.pem")
    }

    /// The store URL.
    pub fn database_url(&self) -> String {
        match self.kind {
            StoreKind::Sqlite => format!("sqlite://{}", self.data_dir().join("dray.db").display()),
            StoreKind::Postgres => pg_url(),
        }
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path())?;
        // `DRAY_TEST_WRAP="valgrind --tool=massif"` runs the manager under a profiler.
        let wrap: Vec<String> = std::env::var("DRAY_TEST_WRAP")
            .map(|w| w.split_whitespace().map(String::from).collect())
            .unwrap_or_default();
        let mut cmd = match wrap.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin("dray"));
                c
            }
            None => Command::new(bin("dray")),
        };
        cmd.arg("server")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--grpc-addr")
            .arg(format!("127.0.0.1:{}", self.grpc_port))
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{}", self.http_port))
            .arg("--database-url")
            .arg(self.database_url())
            .args(["--lease-ttl", self.opts.lease_ttl])
            .args(["--offer-timeout", self.opts.offer_timeout])
            .args(["--queue-timeout", self.opts.queue_timeout])
            .args(["--delegate-cert-ttl", self.opts.cert_ttl]);
        if let Some(s) = &self.schema {
            cmd.arg("--database-schema").arg(s);
        }
        clear_dray_env(&mut cmd);
        cmd.env("RUST_LOG", "info,dray_manager=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().context("spawning dray server")?;
        self.child = Some(child);
        let port = self.http_port;
        wait_for("manager /readyz", Duration::from_secs(30), || {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Some(Err(anyhow::anyhow!("manager exited with {status}:\n{}", self.log())));
            }
            (http_get(port, "/readyz").map(|(code, _)| code) == Some(200)).then_some(Ok(()))
        })??;
        Ok(())
    }

    /// SIGKILL the manager.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL then start again on the same data dir, ports and store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        self.spawn()
    }

    /// PID of the running manager.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Admin API token.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("admin.token")).unwrap_or_default().trim().to_string()
    }

    /// Runs `dray ARGS` against this manager.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(bin("dray"));
        clear_dray_env(&mut cmd);
        cmd.arg("--server")
            .arg(self.url())
            .arg("--ca-file")
            .arg(self.ca_file())
            .arg("--token")
            .arg(self.admin_token())
            .args(args)
            .stdin(Stdio::null());
        cmd.output().expect("running dray")
    }

    /// Runs `dray ARGS`, requiring success; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.cli(args);
        if !out.status.success() {
            bail!("dray {args:?} failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates a delegate token.
    pub fn token(&self, name: &str, extra: &[&str]) -> anyhow::Result<String> {
        let mut args = vec!["delegate-token", "create", "--name", name];
        args.extend_from_slice(extra);
        Ok(self.cli_ok(&args)?.trim().to_string())
    }

    /// Submits a shell task; returns its id.
    pub fn run_task(&self, script: &str, extra: &[&str]) -> anyhow::Result<String> {
        let mut args = vec!["task", "run"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", script]);
        Ok(self.cli_ok(&args)?.lines().next().unwrap_or_default().trim().to_string())
    }

    /// A task as JSON.
    pub fn task(&self, id: &str) -> anyhow::Result<Value> {
        Ok(serde_json::from_str(&self.cli_ok(&["task", "get", id, "-o", "json"])?)?)
    }

    /// Waits until a task reaches one of `states`; returns it.
    pub fn wait_state(&self, id: &str, states: &[&str], timeout: Duration) -> anyhow::Result<Value> {
        let mut last = Value::Null;
        let r = wait_for(&format!("task {id} to reach {states:?}"), timeout, || {
            let t = self.task(id).ok()?;
            let hit = states.contains(&t["state"].as_str().unwrap_or_default());
            last = t.clone();
            hit.then_some(t)
        });
        r.with_context(|| format!("last seen: {last}"))
    }

    /// The task's log text.
    pub fn logs(&self, id: &str) -> anyhow::Result<String> {
        self.cli_ok(&["logs", id])
    }

    /// Delegates as JSON.
    pub fn delegates(&self) -> anyhow::Result<Vec<Value>> {
        Ok(serde_json::from_str(&self.cli_ok(&["get", "delegates", "-o", "json"])?)?)
    }

    /// HTTP GET against the manager's HTTP port.
    pub fn http(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.http_port, path)
    }

    /// `dray get replicas -o json`: the replicas registered in the store.
    pub fn replicas(&self) -> anyhow::Result<Vec<Value>> {
        let out = self.cli_ok(&["get", "replicas", "-o", "json"])?;
        Ok(serde_json::from_str::<Value>(&out)?.as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        // SIGTERM first (a profiler wrapping the manager writes its report on a
        // clean exit), SIGKILL if it does not stop in time.
        if let Some(mut c) = self.child.take() {
            signal(c.id(), nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5).mul_f64(patience());
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(schema) = self.schema.as_ref().filter(|_| self.owns_schema) {
            let _ = Command::new("psql")
                .arg(pg_url())
                .args(["-q", "-c", &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn clear_dray_env(cmd: &mut Command) {
    for (k, _) in std::env::vars() {
        // The machine's proxy settings must not reroute loopback test traffic;
        // tests that want a proxy set it through `DelegateOpts::env`.
        let proxy = matches!(
            k.to_ascii_uppercase().as_str(),
            "HTTP_PROXY" | "HTTPS_PROXY" | "ALL_PROXY" | "NO_PROXY"
        );
        if (k.starts_with("DRAY_") && k != "DRAY_TEST_PATIENCE") || proxy {
            cmd.env_remove(k);
        }
    }
}

/// Minimal HTTP/1.1 GET; returns status and body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    // One write: a request split over segments is a needless race with the server.
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((code, body))
}

/// Minimal HTTP/1.1 POST with extra headers; returns status and body.
pub fn http_post(port: u16, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    // One write, as in `http_get`.
    s.write_all(&bytes).ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((code, body))
}

/// Delegate knobs for tests.
#[derive(Debug, Clone)]
pub struct DelegateOpts {
    /// `--tags`.
    pub tags: Vec<String>,
    /// `--capacity`.
    pub capacity: u32,
    /// Extra environment (secrets for `env:` references).
    pub env: Vec<(String, String)>,
    /// `--drain-grace`.
    pub drain_grace: &'static str,
    /// `--http-addr 127.0.0.1:PORT` when set.
    pub http_port: Option<u16>,
}

impl Default for DelegateOpts {
    fn default() -> Self {
        DelegateOpts { tags: vec![], capacity: 4, env: vec![], drain_grace: "10s", http_port: None }
    }
}

/// A running `dray-delegate`.
pub struct Delegate {
    /// Temp dir with the state dir and log.
    pub dir: tempfile::TempDir,
    /// Name.
    pub name: String,
    url: String,
    ca_file: PathBuf,
    token: Option<String>,
    opts: DelegateOpts,
    child: Option<Child>,
}

impl Delegate {
    /// Enrols (with a fresh token) and starts a delegate; waits until connected.
    pub fn enrol(m: &Manager, name: &str, opts: DelegateOpts) -> anyhow::Result<Delegate> {
        let token =
            m.token(&format!("tok-{name}-{}", &uuid::Uuid::now_v7().simple().to_string()[24..]), &[])?;
        let mut d = Self::with_token(m, name, &token, opts)?;
        d.spawn()?;
        d.wait_connected(1)?;
        Ok(d)
    }

    /// A delegate that will enrol with `token`; not started.
    pub fn with_token(m: &Manager, name: &str, token: &str, opts: DelegateOpts) -> anyhow::Result<Delegate> {
        Ok(Delegate {
            dir: tempfile::tempdir()?,
            name: name.into(),
            url: m.url(),
            ca_file: m.ca_file(),
            token: Some(token.into()),
            opts,
            child: None,
        })
    }

    /// Replaces the `--manager` value (e.g. several comma-separated addresses).
    pub fn set_manager(&mut self, urls: &str) {
        self.url = urls.to_string();
    }

    /// The state dir.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("delegate.log")
    }

    /// Contents of the log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the process (does not wait).
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path())?;
        let mut cmd = Command::new(bin("dray-delegate"));
        clear_dray_env(&mut cmd);
        cmd.arg("run")
            .arg("--manager")
            .arg(&self.url)
            .arg("--ca-file")
            .arg(&self.ca_file)
            .arg("--name")
            .arg(&self.name)
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--capacity")
            .arg(self.opts.capacity.to_string())
            .arg("--drain-grace")
            .arg(self.opts.drain_grace);
        if !self.opts.tags.is_empty() {
            cmd.arg("--tags").arg(self.opts.tags.join(","));
        }
        if let Some(t) = &self.token {
            cmd.arg("--token").arg(t);
        }
        if let Some(port) = self.opts.http_port {
            cmd.arg("--http-addr").arg(format!("127.0.0.1:{port}"));
        }
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        cmd.env("RUST_LOG", "info,dray_delegate=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.child = Some(cmd.spawn().context("spawning dray-delegate")?);
        Ok(())
    }

    /// Waits until the log shows `n` established sessions in total.
    pub fn wait_connected(&mut self, n: usize) -> anyhow::Result<()> {
        wait_for(&format!("delegate {} to connect", self.name), Duration::from_secs(20), || {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Some(Err(anyhow::anyhow!("delegate exited with {status}:\n{}", self.log())));
            }
            (self.log().matches("Delegate connected").count() >= n).then_some(Ok(()))
        })?
    }

    /// Waits for the process to exit; returns its status code.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<Option<i32>> {
        let child = self.child.as_mut().context("not running")?;
        let status = wait_for("delegate to exit", timeout, || child.try_wait().ok().flatten())?;
        self.child = None;
        Ok(status.code())
    }

    /// The manager URL of every session established so far, oldest first (from
    /// the `Delegate connected.` log lines).
    pub fn sessions(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("Delegate connected"))
            .filter_map(|l| l.split_once("manager.url=")?.1.split_whitespace().next().map(String::from))
            .collect()
    }

    /// The delegate id from its state dir.
    pub fn id(&self) -> anyhow::Result<String> {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(self.state_dir().join("identity.json"))?)?;
        Ok(v["delegate_id"].as_str().context("identity.json has no delegate_id")?.to_string())
    }

    /// PID of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM (drain); does not wait.
    pub fn sigterm(&self) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }

    /// Starts again from the same state dir, without a token.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        self.token = None;
        let before = self.log().matches("Delegate connected").count();
        self.spawn()?;
        self.wait_connected(before + 1)
    }
}

impl Drop for Delegate {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A file the tests use as a marker of "this ran" (append one line per run).
pub fn marker(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Number of lines in a marker file (0 if missing).
pub fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|s| s.lines().count()).unwrap_or(0)
}

/// Defines `sqlite` and `postgres` variants of a test body taking a [`StoreKind`].
#[macro_export]
macro_rules! both_stores {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn sqlite() -> anyhow::Result<()> {
                ($body)($crate::StoreKind::Sqlite)
            }
            #[test]
            fn postgres() -> anyhow::Result<()> {
                ($body)($crate::StoreKind::Postgres)
            }
        }
    };
}

/// Everything the store holds, as text, for searching (SQLite: the raw database
/// files including WAL; PostgreSQL: a `pg_dump` of the test schema).
pub fn store_dump(m: &Manager) -> anyhow::Result<Vec<u8>> {
    match m.kind {
        StoreKind::Sqlite => {
            let mut all = Vec::new();
            for entry in std::fs::read_dir(m.data_dir())? {
                let p = entry?.path();
                if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("dray.db")) {
                    all.extend(std::fs::read(&p)?);
                }
            }
            Ok(all)
        }
        StoreKind::Postgres => {
            let schema = m.schema.as_deref().context("no schema")?;
            // Escape format keeps printable bytes of BYTEA columns readable, so a
            // value inside an encoded spec is found too.
            let out = Command::new("pg_dump")
                .env("PGOPTIONS", "-c bytea_output=escape")
                .arg(pg_url())
                .args(["--data-only", "-n", schema])
                .output()?;
            if !out.status.success() {
                bail!("pg_dump failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(out.stdout)
        }
    }
}

/// Sends a signal to a process.
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

impl Delegate {
    /// Enrols with a token scoped to `project` (ORG/PROJECT) and starts.
    pub fn enrol_scoped(
        m: &Manager,
        name: &str,
        project: &str,
        opts: DelegateOpts,
    ) -> anyhow::Result<Delegate> {
        let token = m.token(&format!("tok-{name}"), &["--project", project])?;
        let mut d = Self::with_token(m, name, &token, opts)?;
        d.spawn()?;
        d.wait_connected(1)?;
        Ok(d)
    }
}

/// The repository's `examples/` folder.
pub fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// One node of an execution (from `describe execution -o json`) by path.
pub fn node<'a>(execution: &'a Value, path: &str) -> &'a Value {
    execution["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["path"] == path))
        .unwrap_or_else(|| panic!("no node {path} in {execution}"))
}

impl Manager {
    /// `dray apply -f PATH`; returns stdout.
    pub fn apply(&self, path: &Path) -> anyhow::Result<String> {
        self.cli_ok(&["apply", "-f", &path.display().to_string()])
    }

    /// Applies YAML text (written to a temp dir, which is returned).
    pub fn apply_yaml(&self, yaml: &str) -> anyhow::Result<tempfile::TempDir> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("fixtures.yaml"), yaml)?;
        self.apply(dir.path())?;
        Ok(dir)
    }

    /// `dray get executions --pipeline PIPELINE -o json`, newest first.
    pub fn executions(&self, pipeline: &str) -> anyhow::Result<Vec<Value>> {
        Ok(serde_json::from_str(&self.cli_ok(&[
            "get",
            "executions",
            "--pipeline",
            pipeline,
            "-o",
            "json",
        ])?)?)
    }

    /// `dray run PIPELINE EXTRA…`; returns the execution id.
    pub fn run_pipeline(&self, pipeline: &str, extra: &[&str]) -> anyhow::Result<String> {
        let mut args = vec!["run", pipeline];
        args.extend_from_slice(extra);
        Ok(self.cli_ok(&args)?.lines().next().unwrap_or_default().trim().to_string())
    }

    /// An execution with its nodes, as JSON.
    pub fn execution(&self, id: &str) -> anyhow::Result<Value> {
        Ok(serde_json::from_str(&self.cli_ok(&["describe", "execution", id, "-o", "json"])?)?)
    }

    /// Waits until the execution has one of `statuses`; returns it.
    pub fn wait_execution(&self, id: &str, statuses: &[&str], timeout: Duration) -> anyhow::Result<Value> {
        let mut last = Value::Null;
        let r = wait_for(&format!("execution {id} to reach {statuses:?}"), timeout, || {
            let e = self.execution(id).ok()?;
            last = e.clone();
            statuses.contains(&e["status"].as_str().unwrap_or_default()).then_some(e)
        });
        r.with_context(|| format!("last seen: {last:#}"))
    }

    /// Waits until node `path` of the execution has one of `statuses`; returns the execution.
    pub fn wait_node(
        &self,
        id: &str,
        path: &str,
        statuses: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let mut last = Value::Null;
        let r = wait_for(&format!("{path} of {id} to reach {statuses:?}"), timeout, || {
            let e = self.execution(id).ok()?;
            last = e.clone();
            statuses.contains(&node(&e, path)["status"].as_str().unwrap_or_default()).then_some(e)
        });
        r.with_context(|| format!("last seen: {last:#}"))
    }

    /// `dray logs EXECUTION --step PATH`.
    pub fn step_logs(&self, id: &str, step: &str) -> anyhow::Result<String> {
        self.cli_ok(&["logs", id, "--step", step])
    }
}
