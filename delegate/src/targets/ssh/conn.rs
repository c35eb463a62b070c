//! One SSH connection per host per task, multiplexed: the SFTP upload and
//! every script run on their own channels of the same connection.
//!
//! - Connect: TCP (no Nagle), handshake with the host key checked by
//!   [`super::host_keys`], then public key (and/or password) authentication.
//! - Scripts go to `bash -s` on stdin; output comes back line by line,
//!   prefixed with the host by the caller. An abort (timeout, cancel) sends
//!   `TERM` to the remote process group (sshd's `signal` request does
//!   `killpg`), waits briefly, then closes the channel.
//! - Failures carry the error type failure strategies match: refused host key
//!   → `Verification`, refused credentials → `Authentication`, TCP or
//!   handshake failure → `Connectivity`, timeout → `Timeout`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dray_shared::error_type::ErrorType;
use dray_shared::pb::LogStream;
use dray_shared::task::ssh::HostKeyPolicy;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Sig};
use russh_sftp::client::SftpSession;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, watch};
use tracing::debug;

use super::host_keys;
use super::inventory::Host;

/// Default connect + handshake + authentication timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// After `TERM`, how long a remote process gets before the channel is closed.
const TERM_GRACE: Duration = Duration::from_secs(3);
/// Longer output lines are split.
const MAX_LINE_BYTES: usize = 32 * 1024;
/// Upload read buffer.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// A failure on one host, with the error type it maps to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// What failure strategies match.
    pub error_type: ErrorType,
    /// What happened, naming the host.
    pub message: String,
}

impl Failure {
    /// A failure of type `error_type`.
    pub fn new(error_type: ErrorType, message: impl Into<String>) -> Self {
        Failure { error_type, message: message.into() }
    }
}

/// Resolved credentials (secret values; never logged).
#[derive(Clone)]
pub struct Credentials {
    /// Login user.
    pub user: String,
    /// The decoded private key.
    pub key: Option<Arc<PrivateKey>>,
    /// The password.
    pub password: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).finish_non_exhaustive()
    }
}

/// Decodes an OpenSSH (or PuTTY) private key; a bad key or passphrase is an
/// authentication failure (the message never quotes the key).
pub fn decode_key(text: &str, passphrase: Option<&str>) -> Result<PrivateKey, Failure> {
    russh::keys::decode_secret_key(text, passphrase)
        .map_err(|e| Failure::new(ErrorType::Authentication, format!("the private key cannot be read: {e}")))
}

/// A line of remote output.
#[derive(Debug, Clone)]
pub struct Line {
    /// The host it came from (`name:port`).
    pub host: Arc<str>,
    /// stdout or stderr.
    pub stream: LogStream,
    /// The text, without its newline.
    pub text: String,
}

/// How a remote script ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exit {
    /// Its exit status, if it reported one.
    pub code: Option<u32>,
    /// The signal that ended it, if any.
    pub signal: Option<String>,
    /// The last `dray-result:` line's text, if any.
    pub result: Option<String>,
    /// The last `dray: …` line on stderr (why a part failed), without the prefix.
    pub last_error: Option<String>,
    /// The remote script's process group, as it reported it.
    pub pgid: Option<u32>,
}

struct Client {
    host: Host,
    policy: Arc<HostKeyPolicy>,
    refused: Arc<Mutex<Option<String>>>,
    insecure: Arc<Mutex<Option<String>>>,
}

impl russh::client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let presented = key.public_key();
        let verdict = match host_keys::decide(&self.policy, &self.host, &presented) {
            Ok(host_keys::Decision::AcceptInsecure) => {
                *lock(&self.insecure) = Some(host_keys::fingerprint(&presented));
                return Ok(true);
            }
            Ok(d) if d.accepted() => return Ok(true),
            Ok(d) => host_keys::refusal(&self.policy, &self.host, &presented, &d),
            Err(e) => e,
        };
        *lock(&self.refused) = Some(verdict);
        Ok(false)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An authenticated connection to one host.
pub struct Conn {
    handle: russh::client::Handle<Client>,
    /// The host.
    pub host: Host,
    label: Arc<str>,
}

fn config() -> Arc<russh::client::Config> {
    Arc::new(russh::client::Config {
        nodelay: true,
        // Bigger windows and packets: artifacts are megabytes.
        window_size: 16 * 1024 * 1024,
        maximum_packet_size: 65535,
        keepalive_interval: Some(Duration::from_secs(15)),
        ..Default::default()
    })
}

impl Conn {
    /// Connects to `host` and logs in, all within `timeout`. A host key
    /// accepted without checking is reported on `out` as a warning.
    pub async fn open(
        host: &Host,
        policy: Arc<HostKeyPolicy>,
        creds: &Credentials,
        timeout: Duration,
        out: &mpsc::Sender<Line>,
    ) -> Result<Conn, Failure> {
        match tokio::time::timeout(timeout, Self::open_now(host, policy, creds, out)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new(
                ErrorType::Connectivity,
                format!("{host}: no SSH session within {}", humantime::format_duration(timeout)),
            )),
        }
    }

    async fn open_now(
        host: &Host,
        policy: Arc<HostKeyPolicy>,
        creds: &Credentials,
        out: &mpsc::Sender<Line>,
    ) -> Result<Conn, Failure> {
        let stream = tokio::net::TcpStream::connect((host.name.as_str(), host.port))
            .await
            .map_err(|e| Failure::new(ErrorType::Connectivity, format!("{host}: cannot connect: {e}")))?;
        let _ = stream.set_nodelay(true);
        let refused = Arc::new(Mutex::new(None));
        let insecure = Arc::new(Mutex::new(None));
        let client = Client {
            host: host.clone(),
            policy,
            refused: Arc::clone(&refused),
            insecure: Arc::clone(&insecure),
        };
        let mut handle = match russh::client::connect_stream(config(), stream, client).await {
            Ok(h) => h,
            Err(e) => {
                return Err(match lock(&refused).take() {
                    Some(why) => Failure::new(ErrorType::Verification, why),
                    None => {
                        Failure::new(ErrorType::Connectivity, format!("{host}: SSH handshake failed: {e}"))
                    }
                });
            }
        };
        let label: Arc<str> = Arc::from(host.address());
        let accepted_unchecked = lock(&insecure).take();
        if let Some(fp) = accepted_unchecked {
            let text =
                format!("WARNING: host key {fp} accepted without checking (hostKeyPolicy AcceptAnyInsecure)");
            let _ = out.send(Line { host: Arc::clone(&label), stream: LogStream::Stderr, text }).await;
        }
        let auth_err =
            |e: russh::Error| Failure::new(ErrorType::Connectivity, format!("{host}: during login: {e}"));
        let mut ok = false;
        if let Some(key) = &creds.key {
            let hash = handle.best_supported_rsa_hash().await.map_err(auth_err)?.flatten();
            let r = handle
                .authenticate_publickey(&creds.user, PrivateKeyWithHashAlg::new(Arc::clone(key), hash))
                .await
                .map_err(auth_err)?;
            ok = r.success();
        }
        if !ok && let Some(pw) = &creds.password {
            ok = handle.authenticate_password(&creds.user, pw).await.map_err(auth_err)?.success();
        }
        if !ok {
            let how = match (&creds.key, &creds.password) {
                (Some(k), None) => format!(
                    "the private key ({} {}) was refused",
                    k.algorithm().as_str(),
                    host_keys::fingerprint(k.public_key())
                ),
                (None, Some(_)) => "the password was refused".to_string(),
                _ => "the private key and the password were refused".to_string(),
            };
            let _ = handle.disconnect(russh::Disconnect::ByApplication, "", "en").await;
            return Err(Failure::new(
                ErrorType::Authentication,
                format!("{host}: authentication as {:?} failed: {how}", creds.user),
            ));
        }
        Ok(Conn { handle, host: host.clone(), label })
    }

    fn io(&self, what: &str) -> impl Fn(russh::Error) -> Failure + '_ {
        let what = what.to_string();
        move |e| Failure::new(ErrorType::Connectivity, format!("{}: {what}: {e}", self.host))
    }

    /// Runs `script` with `bash -s`, sending its output lines to `out`. On
    /// `abort` the remote process group gets `TERM` and the channel is closed.
    pub async fn run(
        &self,
        script: &str,
        out: &mpsc::Sender<Line>,
        abort: &mut watch::Receiver<bool>,
    ) -> Result<Exit, Failure> {
        let mut ch = self.handle.channel_open_session().await.map_err(self.io("opening a channel"))?;
        ch.exec(true, "bash -s").await.map_err(self.io("starting bash"))?;
        ch.data(script.as_bytes()).await.map_err(self.io("sending the script"))?;
        ch.eof().await.map_err(self.io("sending the script"))?;
        let mut exit = Exit::default();
        let mut stdout = Splitter::new(LogStream::Stdout);
        let mut stderr = Splitter::new(LogStream::Stderr);
        let mut aborted_at: Option<tokio::time::Instant> = None;
        loop {
            let grace = async {
                match aborted_at {
                    Some(t) => tokio::time::sleep_until(t + TERM_GRACE).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = ch.wait() => match msg {
                    Some(ChannelMsg::Data { data }) => stdout.feed(&data, &self.label, out, &mut exit).await,
                    Some(ChannelMsg::ExtendedData { data, .. }) => stderr.feed(&data, &self.label, out, &mut exit).await,
                    Some(ChannelMsg::ExitStatus { exit_status }) => exit.code = Some(exit_status),
                    Some(ChannelMsg::ExitSignal { signal_name, .. }) => exit.signal = Some(format!("{signal_name:?}")),
                    Some(ChannelMsg::Close) | None => break,
                    Some(_) => {}
                },
                changed = abort.changed(), if aborted_at.is_none() => {
                    if changed.is_err() || *abort.borrow() {
                        // sshd does `killpg` for a `signal` request, except for
                        // root logins; killing the reported group covers both.
                        let _ = ch.signal(Sig::TERM).await;
                        if let Some(pg) = exit.pgid {
                            self.kill_group(pg, "TERM").await;
                        }
                        debug!(host = %self.host, pgid = ?exit.pgid, "Sent TERM to the remote command.");
                        aborted_at = Some(tokio::time::Instant::now());
                    }
                },
                _ = grace => {
                    if let Some(pg) = exit.pgid {
                        self.kill_group(pg, "KILL").await;
                    }
                    let _ = ch.close().await;
                    break;
                }
            }
        }
        stdout.finish(&self.label, out, &mut exit).await;
        stderr.finish(&self.label, out, &mut exit).await;
        if aborted_at.is_some() {
            return Err(Failure::new(ErrorType::Unknown, format!("{}: stopped", self.host)));
        }
        Ok(exit)
    }

    /// Sends `signal` to the remote process group `pgid` from a new channel
    /// (its own session, so it survives the kill); waits briefly for it.
    async fn kill_group(&self, pgid: u32, signal: &str) {
        if pgid <= 1 {
            return;
        }
        let Ok(mut ch) = self.handle.channel_open_session().await else {
            return;
        };
        if ch.exec(true, format!("kill -{signal} -- -{pgid} 2>/dev/null; true")).await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(msg) = ch.wait().await {
                if matches!(msg, ChannelMsg::Close) {
                    break;
                }
            }
        })
        .await;
    }

    /// Opens an SFTP session on a new channel.
    pub async fn sftp(&self) -> Result<SftpSession, Failure> {
        let ch = self.handle.channel_open_session().await.map_err(self.io("opening the SFTP channel"))?;
        ch.request_subsystem(true, "sftp").await.map_err(self.io("starting SFTP"))?;
        SftpSession::new(ch.into_stream())
            .await
            .map_err(|e| Failure::new(ErrorType::Connectivity, format!("{}: starting SFTP: {e}", self.host)))
    }

    /// Copies the local file `local` to `remote` over `sftp`, streaming.
    pub async fn upload(&self, sftp: &SftpSession, local: &Path, remote: &str) -> Result<u64, Failure> {
        let fail = |e: String| {
            Failure::new(ErrorType::Unknown, format!("{}: uploading to {remote}: {e}", self.host))
        };
        let mut src = tokio::fs::File::open(local).await.map_err(|e| fail(e.to_string()))?;
        let mut dst = sftp.create(remote).await.map_err(|e| fail(e.to_string()))?;
        let mut buf = vec![0u8; UPLOAD_CHUNK];
        let mut total = 0u64;
        loop {
            let n = src.read(&mut buf).await.map_err(|e| fail(e.to_string()))?;
            if n == 0 {
                break;
            }
            dst.write_all(&buf[..n]).await.map_err(|e| fail(e.to_string()))?;
            total += n as u64;
        }
        dst.shutdown().await.map_err(|e| fail(e.to_string()))?;
        Ok(total)
    }

    /// Writes `content` to `remote` over `sftp`.
    pub async fn write(&self, sftp: &SftpSession, remote: &str, content: &[u8]) -> Result<(), Failure> {
        let fail =
            |e: String| Failure::new(ErrorType::Unknown, format!("{}: writing {remote}: {e}", self.host));
        let mut dst = sftp.create(remote).await.map_err(|e| fail(e.to_string()))?;
        dst.write_all(content).await.map_err(|e| fail(e.to_string()))?;
        dst.shutdown().await.map_err(|e| fail(e.to_string()))
    }

    /// Closes the connection politely.
    pub async fn close(self) {
        let _ = self.handle.disconnect(russh::Disconnect::ByApplication, "", "en").await;
    }
}

/// Splits a byte stream into lines.
struct Splitter {
    stream: LogStream,
    buf: Vec<u8>,
}

impl Splitter {
    fn new(stream: LogStream) -> Self {
        Splitter { stream, buf: Vec::new() }
    }

    async fn feed(&mut self, data: &[u8], host: &Arc<str>, out: &mpsc::Sender<Line>, exit: &mut Exit) {
        self.buf.extend_from_slice(data);
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            self.emit(&line[..line.len() - 1], host, out, exit).await;
        }
        while self.buf.len() > MAX_LINE_BYTES {
            let line: Vec<u8> = self.buf.drain(..MAX_LINE_BYTES).collect();
            self.emit(&line, host, out, exit).await;
        }
    }

    async fn finish(&mut self, host: &Arc<str>, out: &mpsc::Sender<Line>, exit: &mut Exit) {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.emit(&line, host, out, exit).await;
        }
    }

    async fn emit(&mut self, raw: &[u8], host: &Arc<str>, out: &mpsc::Sender<Line>, exit: &mut Exit) {
        let text = String::from_utf8_lossy(raw).trim_end_matches('\r').to_string();
        if self.stream == LogStream::Stdout
            && let Some(pg) = text.strip_prefix(super::script::PGID_PREFIX)
        {
            exit.pgid = pg.trim().parse().ok();
            return;
        }
        if self.stream == LogStream::Stdout && text.starts_with(super::script::RESULT_PREFIX) {
            exit.result = Some(text.clone());
        }
        if self.stream == LogStream::Stderr
            && let Some(e) = text.strip_prefix("dray: ")
        {
            exit.last_error = Some(e.to_string());
        }
        let _ = out.send(Line { host: Arc::clone(host), stream: self.stream, text }).await;
    }
}
