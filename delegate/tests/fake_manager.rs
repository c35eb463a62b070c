//! End-to-end tests of the `dray-delegate` binary against an in-process fake
//! manager that speaks the `DelegateService` contract (enrol, renew, session
//! over mTLS). The real manager is tested with the delegate in `dray-tests`;
//! these pin the delegate's side of the wire contract on their own: Hello,
//! credits, ack-before-grant, heartbeats, logs before results, reconnects with
//! held leases, refusals, draining and certificate renewal.

use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dray_shared::pb::delegate_message::Msg as Out;
use dray_shared::pb::delegate_service_server::{DelegateService, DelegateServiceServer};
use dray_shared::pb::manager_message::Msg as In;
use dray_shared::pb::{self, DelegateMessage, ManagerMessage};
use dray_shared::{DelegateId, TaskId, pki};
use futures::Stream;
use tokio::sync::mpsc;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

type Tx = mpsc::Sender<Result<ManagerMessage, Status>>;

#[derive(Default)]
struct State {
    /// Every message received, per session (index = session number).
    sessions: Vec<Vec<DelegateMessage>>,
    /// When each heartbeat arrived.
    heartbeats_at: Vec<Instant>,
    tx: Option<Tx>,
    revoked: bool,
    renewals: usize,
    auto_grant: bool,
    auto_accept: bool,
}

#[derive(Clone)]
struct Fake {
    ca: pki::Authority,
    id: DelegateId,
    cert_life: Duration,
    state: Arc<Mutex<State>>,
}

#[tonic::async_trait]
impl DelegateService for Fake {
    async fn enrol(&self, req: Request<pb::EnrolRequest>) -> Result<Response<pb::EnrolResponse>, Status> {
        let r = req.into_inner();
        if r.token != "good-token" {
            return Err(Status::permission_denied(format!("delegate token {:?} expired", r.token)));
        }
        let cert = self
            .ca
            .sign_delegate_csr(&r.csr_pem, self.id, self.cert_life)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(pb::EnrolResponse {
            delegate_id: self.id.to_string(),
            not_after_ms: pki::not_after_ms(&cert).unwrap_or_default(),
            certificate_pem: cert,
            ca_pem: self.ca.cert_pem.clone(),
            scope: Some(pb::Scope { account: "default".into(), ..Default::default() }),
        }))
    }

    async fn renew(&self, req: Request<pb::RenewRequest>) -> Result<Response<pb::RenewResponse>, Status> {
        if req.peer_certs().is_none_or(|c| c.is_empty()) {
            return Err(Status::unauthenticated("client certificate required"));
        }
        let cert = self
            .ca
            .sign_delegate_csr(&req.into_inner().csr_pem, self.id, self.cert_life)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.state.lock().unwrap().renewals += 1;
        Ok(Response::new(pb::RenewResponse {
            not_after_ms: pki::not_after_ms(&cert).unwrap_or_default(),
            certificate_pem: cert,
        }))
    }

    type SessionStream = Pin<Box<dyn Stream<Item = Result<ManagerMessage, Status>> + Send + 'static>>;

    async fn session(
        &self,
        req: Request<Streaming<DelegateMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let certs = req.peer_certs().ok_or_else(|| Status::unauthenticated("client certificate required"))?;
        let who = pki::peer_identity(&certs[0]).map_err(|e| Status::unauthenticated(e.to_string()))?;
        if self.state.lock().unwrap().revoked {
            return Err(Status::permission_denied(format!("delegate {} revoked", who.delegate)));
        }
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let state = Arc::clone(&self.state);
        let idx = {
            let mut s = state.lock().unwrap();
            s.sessions.push(Vec::new());
            s.tx = Some(tx.clone());
            s.sessions.len() - 1
        };
        let id = self.id;
        tokio::spawn(async move {
            let welcome = pb::Welcome {
                delegate_id: id.to_string(),
                heartbeat_interval_ms: 200,
                lease_ttl_ms: 2000,
                ..Default::default()
            };
            while let Ok(Some(m)) = inbound.message().await {
                let first = state.lock().unwrap().sessions[idx].is_empty();
                {
                    let mut s = state.lock().unwrap();
                    if matches!(m.msg, Some(Out::Heartbeat(_))) {
                        s.heartbeats_at.push(Instant::now());
                    }
                    s.sessions[idx].push(m.clone());
                }
                let (auto_grant, auto_accept) = {
                    let s = state.lock().unwrap();
                    (s.auto_grant, s.auto_accept)
                };
                let reply = match m.msg {
                    Some(Out::Hello(_)) if first => Some(In::Welcome(welcome.clone())),
                    Some(Out::Ack(a)) if auto_grant => Some(In::Granted(pb::LeaseGranted {
                        task_id: a.task_id,
                        epoch: a.epoch,
                        expires_ms: 0,
                    })),
                    Some(Out::Result(r)) if auto_accept => {
                        Some(In::ResultAccepted(pb::ResultAccepted { task_id: r.task_id, epoch: r.epoch }))
                    }
                    _ => None,
                };
                if let Some(reply) = reply
                    && tx.send(Ok(ManagerMessage { msg: Some(reply) })).await.is_err()
                {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

struct Harness {
    rt: tokio::runtime::Runtime,
    fake: Fake,
    url: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Harness {
    fn start(cert_life: Duration) -> Harness {
        dray_shared::tls::install_crypto_provider();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let ca = pki::Authority::generate("fake CA").unwrap();
        let server = ca.issue_server(&["127.0.0.1".into()], Duration::from_secs(3600)).unwrap();
        let fake = Fake {
            ca: ca.clone(),
            id: DelegateId::new(),
            cert_life,
            state: Arc::new(Mutex::new(State { auto_grant: true, auto_accept: true, ..Default::default() })),
        };
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(&server.cert_pem, &server.key_pem))
            .client_ca_root(Certificate::from_pem(&ca.cert_pem))
            .client_auth_optional(true);
        let svc = DelegateServiceServer::new(fake.clone());
        rt.spawn(async move {
            Server::builder()
                .tls_config(tls)
                .unwrap()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
        Harness { rt, fake, url, dir, child: None }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("delegate.log")).unwrap_or_default()
    }

    fn spawn(&mut self, token: Option<&str>, extra: &[&str], env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("delegate.log"))
            .unwrap();
        // DRAY_TEST_DELEGATE_BIN runs another build (e.g. release, to measure memory).
        let bin = std::env::var("DRAY_TEST_DELEGATE_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_dray-delegate").into());
        let mut cmd = Command::new(bin);
        for (k, _) in std::env::vars() {
            if k.starts_with("DRAY_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("run")
            .args(["--manager", &self.url, "--name", "fake-test", "--capacity", "2", "--tags", "linux,x86"])
            .arg("--ca-file")
            .arg(self.dir.path().join("ca.pem"))
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info,dray_delegate=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        if let Some(t) = token {
            cmd.args(["--token", t]);
        }
        self.child = Some(cmd.spawn().unwrap());
    }

    fn wait<T>(&mut self, what: &str, timeout: Duration, mut f: impl FnMut(&mut Self) -> Option<T>) -> T {
        let until = Instant::now() + timeout;
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            assert!(Instant::now() < until, "timed out waiting for {what}; delegate log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_connected(&mut self, n: usize) {
        self.wait("connection", Duration::from_secs(20), |h| {
            (h.log().matches("Delegate connected").count() >= n).then_some(())
        });
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut out = String::new();
                use std::io::Read as _;
                child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
                assert_eq!(out, "", "nothing on stdout");
                return status.code();
            }
            assert!(Instant::now() < until, "delegate did not exit; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = self.child.as_ref().expect("running").id();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
    }

    fn send(&self, msg: In) {
        let tx = self.fake.state.lock().unwrap().tx.clone().expect("a session");
        self.rt.block_on(tx.send(Ok(ManagerMessage { msg: Some(msg) }))).unwrap();
    }

    fn fail_session(&self, status: Status) {
        let tx = self.fake.state.lock().unwrap().tx.take().expect("a session");
        self.rt.block_on(tx.send(Err(status))).unwrap();
    }

    fn offer(&self, task: TaskId, epoch: u64, spec: pb::TaskSpec) {
        self.send(In::Offer(pb::Offer { task_id: task.to_string(), epoch, spec: Some(spec), ack_by_ms: 0 }));
    }

    fn messages(&self, session: usize) -> Vec<DelegateMessage> {
        self.fake.state.lock().unwrap().sessions.get(session).cloned().unwrap_or_default()
    }

    fn sessions(&self) -> usize {
        self.fake.state.lock().unwrap().sessions.len()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn shell(script: &str) -> pb::TaskSpec {
    dray_shared::task::shell_spec(script, Default::default())
}

fn credits(msgs: &[DelegateMessage]) -> u32 {
    msgs.iter()
        .filter_map(|m| match &m.msg {
            Some(Out::Credits(c)) => Some(c.free),
            _ => None,
        })
        .sum()
}

fn find<T>(msgs: &[DelegateMessage], f: impl Fn(&Out) -> Option<T>) -> Vec<T> {
    msgs.iter().filter_map(|m| m.msg.as_ref().and_then(&f)).collect()
}

fn log_text(msgs: &[DelegateMessage], task: TaskId) -> Vec<String> {
    find(msgs, |m| match m {
        Out::Logs(l) if l.task_id == task.to_string() => {
            Some(l.lines.iter().map(|l| l.text.clone()).collect::<Vec<_>>())
        }
        _ => None,
    })
    .concat()
}

/// A `/proc/PID/status` field in KiB (VmRSS, RssAnon, RssFile...).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn enrols_runs_a_task_and_balances_credits() {
    let mut h = Harness::start(Duration::from_secs(3600));
    h.spawn(Some("good-token"), &[], &[("DEPLOY_KEY", "k-123-secret")]);
    h.wait_connected(1);
    for f in ["key.pem", "cert.pem", "identity.json"] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(h.dir.path().join("state").join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let hello = h.wait("hello", Duration::from_secs(5), |h| {
        find(&h.messages(0), |m| match m {
            Out::Hello(x) => Some(x.clone()),
            _ => None,
        })
        .pop()
    });
    assert_eq!(
        (hello.capacity, hello.tags.clone(), hello.held.len()),
        (2, vec!["linux".to_string(), "x86".to_string()], 0)
    );
    assert!(matches!(h.messages(0)[0].msg, Some(Out::Hello(_))), "Hello comes first");

    // A task whose secret resolves: ack, grant, logs (masked), result, accepted, credit.
    let task = TaskId::new();
    h.offer(
        task,
        1,
        shell("echo key=<+secrets.getValue(\"env:DEPLOY_KEY\")>; echo to-stderr >&2; sleep 0.5; exit 4"),
    );
    let result = h.wait("result", Duration::from_secs(10), |h| {
        find(&h.messages(0), |m| match m {
            Out::Result(r) => Some(r.clone()),
            _ => None,
        })
        .pop()
    });
    assert_eq!(
        (result.success, result.exit_code, result.has_exit_code, result.message.as_str()),
        (false, 4, true, "exit code 4")
    );
    h.wait("credit for the accepted result", Duration::from_secs(5), |h| {
        (credits(&h.messages(0)) == 1).then_some(())
    });
    let msgs = h.messages(0);
    let lines = log_text(&msgs, task);
    assert!(lines.contains(&"key=**************".to_string()), "{lines:?}");
    assert!(lines.contains(&"to-stderr".to_string()), "{lines:?}");
    assert!(!format!("{msgs:?}").contains("k-123-secret"), "secret value reached the manager");
    // Order on the wire: ack before any log; every log of the task before its result.
    let pos = |f: &dyn Fn(&Out) -> bool| msgs.iter().position(|m| m.msg.as_ref().is_some_and(f));
    let ack = pos(&|m| matches!(m, Out::Ack(_))).unwrap();
    let first_log = pos(&|m| matches!(m, Out::Logs(_))).unwrap();
    let res = pos(&|m| matches!(m, Out::Result(_))).unwrap();
    let last_log = msgs.iter().rposition(|m| matches!(m.msg, Some(Out::Logs(_)))).unwrap();
    assert!(ack < first_log && last_log < res, "ack {ack}, logs {first_log}..{last_log}, result {res}");
    // Heartbeats listed the lease while it ran, and keep coming when idle.
    let hb_with_lease = find(&msgs, |m| match m {
        Out::Heartbeat(hb) if hb.leases.iter().any(|l| l.task_id == task.to_string()) => Some(()),
        _ => None,
    });
    assert!(!hb_with_lease.is_empty(), "heartbeats carry the running lease");

    // An offer this delegate cannot serve is rejected with the reason, and its slot returned.
    let missing = TaskId::new();
    h.offer(missing, 1, shell("echo <+secrets.getValue(\"env:DB_PASSWORD\")>"));
    let reject = h.wait("reject", Duration::from_secs(5), |h| {
        find(&h.messages(0), |m| match m {
            Out::Reject(r) => Some(r.clone()),
            _ => None,
        })
        .pop()
    });
    assert_eq!(reject.reason, "secret env:DB_PASSWORD is not set on this delegate");
    let unknown = TaskId::new();
    h.offer(unknown, 1, pb::TaskSpec { kind: "kubernetes".into(), ..Default::default() });
    h.wait("unknown kind rejected", Duration::from_secs(5), |h| (credits(&h.messages(0)) == 3).then_some(()));
    let reasons = find(&h.messages(0), |m| match m {
        Out::Reject(r) => Some(r.reason.clone()),
        _ => None,
    });
    assert!(reasons[1].starts_with("unknown task kind \"kubernetes\""), "{reasons:?}");

    // Idle and connected: measure memory, then heartbeats still flow.
    std::thread::sleep(Duration::from_secs(1));
    let pid = h.child.as_ref().unwrap().id();
    let [rss, anon, file, threads] =
        ["VmRSS:", "RssAnon:", "RssFile:", "Threads:"].map(|f| status_kib(pid, f).unwrap());
    eprintln!("idle connected delegate: VmRSS {rss} KiB (anon {anon}, file {file}), {threads} threads");
    let before = find(&h.messages(0), |m| matches!(m, Out::Heartbeat(_)).then_some(())).len();
    std::thread::sleep(Duration::from_millis(700));
    let after = find(&h.messages(0), |m| matches!(m, Out::Heartbeat(_)).then_some(())).len();
    assert!(after >= before + 2, "heartbeats every 200ms: {before} -> {after}");

    // SIGTERM: Draining, offers rejected, exit 0.
    h.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(h.wait_exit(Duration::from_secs(10)), Some(0), "{}", h.log());
    assert!(find(&h.messages(0), |m| matches!(m, Out::Draining(_)).then_some(())).len() == 1);
}

#[test]
fn work_starts_only_on_grant_and_refusals_drop_it() {
    let mut h = Harness::start(Duration::from_secs(3600));
    h.fake.state.lock().unwrap().auto_grant = false;
    h.spawn(Some("good-token"), &[], &[]);
    h.wait_connected(1);
    let marker = h.dir.path().join("ran");
    let task = TaskId::new();
    h.offer(task, 7, shell(&format!("touch {}; sleep 30", marker.display())));
    h.wait("ack", Duration::from_secs(5), |h| {
        (!find(&h.messages(0), |m| matches!(m, Out::Ack(_)).then_some(())).is_empty()).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(!marker.exists(), "acked but not granted: must not run");
    h.send(In::Granted(pb::LeaseGranted { task_id: task.to_string(), epoch: 7, expires_ms: 0 }));
    h.wait("task to start", Duration::from_secs(5), |_| marker.exists().then_some(()));
    // The manager disowns the lease: the task is killed, nothing more is reported, the slot comes back.
    h.send(In::LeaseRefused(pb::LeaseRefused {
        task_id: task.to_string(),
        epoch: 7,
        reason: "lease lost".into(),
    }));
    h.wait("credit after refusal", Duration::from_secs(10), |h| (credits(&h.messages(0)) == 1).then_some(()));
    std::thread::sleep(Duration::from_millis(600));
    let msgs = h.messages(0);
    assert!(
        find(&msgs, |m| matches!(m, Out::Result(_)).then_some(())).is_empty(),
        "no result for a refused lease"
    );
    let last_hb = find(&msgs, |m| match m {
        Out::Heartbeat(hb) => Some(hb.leases.len()),
        _ => None,
    });
    assert_eq!(last_hb.last(), Some(&0), "a refused lease is no longer heartbeated");
    assert!(h.log().contains("lease lost"), "the reason is logged");

    // Cancel: the group is killed and the result says cancelled.
    let task = TaskId::new();
    h.offer(task, 1, shell("sleep 30"));
    h.wait("ack", Duration::from_secs(5), |h| {
        (find(&h.messages(0), |m| matches!(m, Out::Ack(_)).then_some(())).len() == 2).then_some(())
    });
    h.send(In::Granted(pb::LeaseGranted { task_id: task.to_string(), epoch: 1, expires_ms: 0 }));
    std::thread::sleep(Duration::from_millis(300));
    h.send(In::Cancel(pb::CancelTask { task_id: task.to_string(), epoch: 1 }));
    let r = h.wait("cancelled result", Duration::from_secs(10), |h| {
        find(&h.messages(0), |m| match m {
            Out::Result(r) => Some(r.clone()),
            _ => None,
        })
        .pop()
    });
    assert!(r.cancelled && !r.success, "{r:?}");
}

#[test]
fn reconnects_with_held_leases_and_resends_results() {
    let mut h = Harness::start(Duration::from_secs(3600));
    h.fake.state.lock().unwrap().auto_accept = false;
    h.spawn(Some("good-token"), &[], &[]);
    h.wait_connected(1);
    let task = TaskId::new();
    h.offer(task, 3, shell("sleep 1; echo done"));
    h.wait("start", Duration::from_secs(5), |h| {
        (!find(&h.messages(0), |m| matches!(m, Out::Ack(_)).then_some(())).is_empty()).then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));
    // The manager goes away mid-task; the task keeps running and finishes meanwhile.
    h.fail_session(Status::unavailable("manager restarting"));
    h.wait_connected(2);
    h.wait("a second session", Duration::from_secs(10), |h| (h.sessions() == 2).then_some(()));
    let hello = find(&h.messages(1), |m| match m {
        Out::Hello(x) => Some(x.clone()),
        _ => None,
    });
    assert_eq!(
        hello[0].held,
        vec![pb::LeaseRef { task_id: task.to_string(), epoch: 3 }],
        "running lease is held"
    );
    // The result arrives on the new session (re-sent after Welcome if it finished while away).
    let r = h.wait("result on the new session", Duration::from_secs(10), |h| {
        find(&h.messages(1), |m| match m {
            Out::Result(r) => Some(r.clone()),
            _ => None,
        })
        .pop()
    });
    assert!(r.success && r.task_id == task.to_string());
    // Not accepted yet: after another reconnect it is listed and sent again.
    h.fail_session(Status::unavailable("again"));
    h.wait("a third session", Duration::from_secs(10), |h| (h.sessions() == 3).then_some(()));
    let r3 = h.wait("result re-sent", Duration::from_secs(10), |h| {
        find(&h.messages(2), |m| match m {
            Out::Result(r) => Some(r.clone()),
            _ => None,
        })
        .pop()
    });
    assert_eq!(r3, r);
    let hello = find(&h.messages(2), |m| match m {
        Out::Hello(x) => Some(x.clone()),
        _ => None,
    });
    assert_eq!(hello[0].held.len(), 1, "an unaccepted result is still held");
    h.send(In::ResultAccepted(pb::ResultAccepted { task_id: task.to_string(), epoch: 3 }));
    h.wait("credit", Duration::from_secs(5), |h| (credits(&h.messages(2)) == 1).then_some(()));
}

#[test]
fn refused_tokens_and_revoked_delegates_exit_without_retrying() {
    let mut h = Harness::start(Duration::from_secs(3600));
    h.spawn(Some("bad-token"), &[], &[]);
    assert_eq!(h.wait_exit(Duration::from_secs(10)), Some(1));
    assert!(
        h.log().contains("manager refused enrolment: delegate token \"bad-token\" expired"),
        "{}",
        h.log()
    );
    assert_eq!(h.log().matches("Enrolment attempt failed").count(), 0, "a refused token is not retried");
    assert!(!h.dir.path().join("state/cert.pem").exists());

    // No state, no token: a clear configuration error.
    h.spawn(None, &[], &[]);
    assert_eq!(h.wait_exit(Duration::from_secs(10)), Some(2));
    assert!(h.log().contains("no token given: pass --token or set DRAY_TOKEN"), "{}", h.log());

    h.spawn(Some("good-token"), &[], &[]);
    h.wait_connected(1);
    h.fake.state.lock().unwrap().revoked = true;
    h.fail_session(Status::permission_denied("delegate revoked"));
    assert_eq!(h.wait_exit(Duration::from_secs(10)), Some(1));
    assert!(h.log().contains("manager refused the session: delegate revoked"), "{}", h.log());
    // A restart from the same state needs no token and is refused again.
    h.spawn(None, &[], &[]);
    assert_eq!(h.wait_exit(Duration::from_secs(10)), Some(1));
    assert!(h.log().matches("revoked").count() >= 2, "{}", h.log());
}

#[test]
fn drain_waits_for_tasks_then_interrupts_them() {
    let mut h = Harness::start(Duration::from_secs(3600));
    h.spawn(Some("good-token"), &["--drain-grace", "2s"], &[]);
    h.wait_connected(1);
    let (short, long) = (TaskId::new(), TaskId::new());
    h.offer(short, 1, shell("sleep 0.5; echo short-done"));
    h.offer(long, 1, shell("sleep 60"));
    h.wait("both running", Duration::from_secs(5), |h| {
        (find(&h.messages(0), |m| matches!(m, Out::Ack(_)).then_some(())).len() == 2).then_some(())
    });
    std::thread::sleep(Duration::from_millis(100));
    h.signal(nix::sys::signal::Signal::SIGTERM);
    h.wait("draining", Duration::from_secs(5), |h| {
        (!find(&h.messages(0), |m| matches!(m, Out::Draining(_)).then_some(())).is_empty()).then_some(())
    });
    // Once the short task's slot is back, an offer is rejected: draining.
    h.wait("the short task's result", Duration::from_secs(5), |h| {
        (credits(&h.messages(0)) >= 1).then_some(())
    });
    let late = TaskId::new();
    h.offer(late, 1, shell("true"));
    assert_eq!(h.wait_exit(Duration::from_secs(15)), Some(0), "{}", h.log());
    let msgs = h.messages(0);
    let results = find(&msgs, |m| match m {
        Out::Result(r) => Some(r.clone()),
        _ => None,
    });
    let by = |t: TaskId| results.iter().find(|r| r.task_id == t.to_string()).cloned().unwrap();
    assert!(by(short).success);
    assert_eq!(by(long).message, "interrupted: delegate shut down");
    let rejects = find(&msgs, |m| match m {
        Out::Reject(r) => Some((r.task_id.clone(), r.reason.clone())),
        _ => None,
    });
    assert_eq!(rejects, vec![(late.to_string(), "delegate is draining".to_string())]);
}

#[test]
fn renews_the_certificate_at_seventy_percent() {
    let mut h = Harness::start(Duration::from_secs(6));
    h.spawn(Some("good-token"), &[], &[]);
    h.wait_connected(1);
    let cert = h.dir.path().join("state/cert.pem");
    let first = std::fs::read_to_string(&cert).unwrap();
    h.wait("renewal", Duration::from_secs(10), |h| {
        (h.fake.state.lock().unwrap().renewals >= 1).then_some(())
    });
    h.wait("the renewed certificate saved", Duration::from_secs(5), |_| {
        (std::fs::read_to_string(&cert).unwrap() != first).then_some(())
    });
    // Past the first certificate's expiry, a new connection works with the renewed one.
    std::thread::sleep(Duration::from_secs(3));
    h.fail_session(Status::unavailable("reconnect please"));
    h.wait_connected(2);
    assert!(h.log().contains("Client certificate renewed."), "{}", h.log());
}

#[test]
fn heartbeats_keep_their_pace_under_a_log_flood() {
    let mut h = Harness::start(Duration::from_secs(3600));
    h.spawn(Some("good-token"), &[], &[]);
    h.wait_connected(1);
    let task = TaskId::new();
    h.offer(
        task,
        1,
        shell("yes 'a fairly ordinary line of build output, repeated' | head -n 400000; echo flood-done"),
    );
    let started = Instant::now();
    let r = h.wait("the flood to finish", Duration::from_secs(120), |h| {
        find(&h.messages(0), |m| match m {
            Out::Result(r) => Some(r.clone()),
            _ => None,
        })
        .pop()
    });
    let took = started.elapsed();
    assert!(r.success, "{r:?}");
    let msgs = h.messages(0);
    let lines: usize = find(&msgs, |m| match m {
        Out::Logs(l) if l.task_id == task.to_string() => Some(l.lines.len()),
        _ => None,
    })
    .iter()
    .sum();
    assert_eq!(lines, 400_001, "every line arrives");
    let beats = h.fake.state.lock().unwrap().heartbeats_at.clone();
    let during: Vec<_> = beats.iter().filter(|t| **t >= started && **t <= started + took).collect();
    let worst = during.windows(2).map(|w| *w[1] - *w[0]).max().unwrap_or_default();
    eprintln!(
        "flood of 400001 lines took {took:?}; {} heartbeats meanwhile, worst gap {worst:?}",
        during.len()
    );
    assert!(worst < Duration::from_millis(1000), "heartbeats (every 200ms) starved: worst gap {worst:?}");
}
