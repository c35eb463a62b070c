//! The delegate's link to the manager: identity and enrolment (`identity`,
//! `enrol`), the session stream and outbound queue (`stream`), and the
//! supervisor in this module that keeps a session open: connect over mTLS,
//! open a session, forward inbound messages to the runner, renew the
//! certificate when due, and reconnect with jittered exponential backoff on any
//! failure except a refusal, which is fatal.
//!
//! The supervisor never touches lease state; it tells the runner what happened
//! through [`LinkEvent`]s and the runner answers through the [`stream::Outbox`].

pub mod enrol;
pub mod identity;
pub mod managers;
pub mod stream;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};
use dray_shared::pb::{LeaseRef, Welcome, manager_message};
use dray_shared::{clock, tls};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::transport::Channel;
use tracing::{error, info, warn};

use self::enrol::EnrolError;
use self::identity::{Identity, StateDir};
use self::stream::{Outbox, SessionEnd, SessionParts};

/// Longest wait before retrying a failed renewal.
const RENEW_RETRY: Duration = Duration::from_secs(60);
/// How long a renewal request may take.
const RENEW_TIMEOUT: Duration = Duration::from_secs(30);

/// Reconnect delays: 200 ms doubling to a 15 s base, plus up to 100% jitter
/// (backon adds a random fraction of the current delay), so the actual wait
/// runs from 200 ms up to at most 30 s and delegates do not reconnect in step.
pub fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(15))
        .with_jitter()
        .without_max_times()
}

/// What the link tells the runner.
#[derive(Debug)]
pub enum LinkEvent {
    /// A session is being opened: queue Hello in the outbox (via
    /// [`Outbox::begin_session`]) and reply with the session generation.
    Connecting {
        /// Where to send the generation.
        reply: oneshot::Sender<u64>,
    },
    /// The manager answered Hello.
    Welcomed {
        /// Session generation.
        generation: u64,
        /// The Welcome.
        welcome: Welcome,
    },
    /// A message from the manager.
    Inbound {
        /// Session generation.
        generation: u64,
        /// The message.
        msg: manager_message::Msg,
    },
    /// The session ended; the link is reconnecting.
    Lost {
        /// Session generation.
        generation: u64,
    },
}

/// Why the link stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The manager refused this delegate's session (revoked, unknown certificate).
    #[error("manager refused the session: {message}")]
    Refused {
        /// The manager's message.
        message: String,
    },
    /// The client certificate expired; only a new enrolment can fix that.
    #[error(
        "client certificate {cert} expired at {at}; remove the state directory and enrol again with a new token",
        cert = cert.display()
    )]
    CertificateExpired {
        /// The certificate file.
        cert: PathBuf,
        /// Expiry, RFC 3339.
        at: String,
    },
    /// The manager URL or certificates cannot be used.
    #[error(transparent)]
    Tls(#[from] tls::Error),
    /// The manager refused to renew the certificate.
    #[error(transparent)]
    Renewal(EnrolError),
    /// The runner went away (the process is exiting).
    #[error("the runner stopped")]
    RunnerGone,
    /// The link task itself failed (a bug).
    #[error("internal error: the manager link stopped unexpectedly")]
    Crashed,
}

/// The link supervisor.
pub struct Link {
    /// Manager addresses.
    pub managers: managers::Managers,
    /// Manager CA, PEM.
    pub ca_pem: String,
    /// Where the identity lives (renewals are saved there).
    pub state: StateDir,
    /// Current identity.
    pub identity: Identity,
    /// Outbound queue.
    pub outbox: Arc<Outbox>,
    /// Events for the runner.
    pub events: mpsc::Sender<LinkEvent>,
    /// Leases to list in heartbeats, published by the runner.
    pub held: watch::Receiver<Vec<LeaseRef>>,
}

/// Connects to the manager at `url`, through the configured proxy if any
/// (TLS on top of the tunnel, so the proxy never sees the session).
pub(crate) async fn dial(
    url: &str,
    endpoint: tonic::transport::Endpoint,
) -> Result<tonic::transport::Channel, tls::Error> {
    endpoint
        .connect_with_connector(crate::proxy::ProxyConnector::new())
        .await
        .map_err(|source| tls::Error::Connect { url: url.into(), source })
}

/// `e` followed by each of its sources not already spelled out in the text
/// (transport errors say only "transport error" at the top; the cause, such as
/// "Connection refused", is further down the chain).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

fn instant_at(ms: i64) -> tokio::time::Instant {
    let wait = (ms - clock::now_ms()).max(0) as u64;
    tokio::time::Instant::now() + Duration::from_millis(wait)
}

fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
        .to_string()
}

impl Link {
    /// Keeps a session open until a fatal error.
    pub async fn run(mut self) -> LinkError {
        let mut delays = backoff().build();
        let mut next_renew_ms = self.identity.renew_at_ms();
        loop {
            let end = match self.session_once(&mut next_renew_ms).await {
                Ok(end) => end,
                Err(fatal) => return fatal,
            };
            match end {
                SessionEnd::Refused(status) => {
                    return LinkError::Refused { message: status.message().to_string() };
                }
                SessionEnd::RunnerGone => return LinkError::RunnerGone,
                SessionEnd::Retry { reason, welcomed } => {
                    if welcomed {
                        delays = backoff().build();
                        self.managers.welcomed();
                    }
                    let failed = self.managers.current().to_string();
                    if self.managers.failed() {
                        let wait = delays.next().unwrap_or(Duration::from_secs(30));
                        warn!(manager = %failed, reason = %reason, retry_in = ?wait, "No session with the manager; reconnecting.");
                        tokio::time::sleep(wait).await;
                    } else {
                        warn!(
                            manager = %failed,
                            reason = %reason,
                            next = %self.managers.current(),
                            "No session with this manager address; trying the next one."
                        );
                    }
                }
            }
        }
    }

    async fn session_once(&mut self, next_renew_ms: &mut i64) -> Result<SessionEnd, LinkError> {
        if self.identity.expired(clock::now_ms()) {
            return Err(LinkError::CertificateExpired {
                cert: self.state.cert_path(),
                at: rfc3339(self.identity.not_after_ms),
            });
        }
        let manager = self.managers.current().to_string();
        let endpoint = tls::endpoint(
            &manager,
            &self.ca_pem,
            Some((&self.identity.cert_pem, self.identity.key.expose())),
        )?;
        let channel = match dial(&manager, endpoint).await {
            Ok(c) => c,
            Err(e) => return Ok(SessionEnd::Retry { reason: error_chain(&e), welcomed: false }),
        };
        if clock::now_ms() >= *next_renew_ms {
            *next_renew_ms = self.renew(channel.clone()).await?;
        }
        let parts = SessionParts {
            channel: channel.clone(),
            outbox: &self.outbox,
            events: &self.events,
            held: &self.held,
        };
        let mut session = match stream::open(&parts).await {
            Ok(s) => s,
            Err((generation, end)) => {
                self.lost(generation).await;
                return Ok(end);
            }
        };
        info!(
            delegate.id = %session.welcome.delegate_id,
            heartbeat.interval_ms = session.welcome.heartbeat_interval_ms,
            lease.ttl_ms = session.welcome.lease_ttl_ms,
            manager.url = %manager,
            manager.protocol = session.welcome.protocol,
            "Delegate connected."
        );
        if session.welcome.delegate_id != self.identity.record.delegate_id.to_string() {
            warn!(
                delegate.id = %self.identity.record.delegate_id,
                welcome.delegate_id = %session.welcome.delegate_id,
                "Manager names this delegate differently from its certificate."
            );
        }
        let end = loop {
            tokio::select! {
                next = session.next_message() => match next {
                    Ok(Some(msg)) => {
                        let ev = LinkEvent::Inbound { generation: session.generation, msg };
                        if self.events.send(ev).await.is_err() {
                            break SessionEnd::RunnerGone;
                        }
                    }
                    Ok(None) => {}
                    Err(end) => break end,
                },
                _ = tokio::time::sleep_until(instant_at(*next_renew_ms)) => {
                    // The open session keeps its TLS connection; the renewed
                    // certificate is used from the next connection on.
                    *next_renew_ms = self.renew(channel.clone()).await?;
                }
            }
        };
        let generation = session.generation;
        drop(session);
        self.lost(generation).await;
        Ok(end)
    }

    async fn lost(&self, generation: u64) {
        if generation == 0 {
            return;
        }
        self.outbox.end_session(generation);
        let _ = self.events.send(LinkEvent::Lost { generation }).await;
    }

    /// Renews the certificate; returns when to try next. Only a refusal is fatal.
    async fn renew(&mut self, channel: Channel) -> Result<i64, LinkError> {
        let attempt = tokio::time::timeout(RENEW_TIMEOUT, enrol::renew(channel, &self.identity, &self.state))
            .await
            .unwrap_or_else(|_| Err(EnrolError::Transport("no answer to the renewal request".into())));
        match attempt {
            Ok(renewed) => {
                info!(
                    delegate.id = %renewed.record.delegate_id,
                    cert.not_after = %rfc3339(renewed.not_after_ms),
                    "Client certificate renewed."
                );
                self.identity = renewed;
                Ok(self.identity.renew_at_ms())
            }
            Err(e @ EnrolError::Refused { .. }) => {
                error!(error = %e, "Certificate renewal refused.");
                Err(LinkError::Renewal(e))
            }
            Err(e) => {
                // Retry well before expiry even for short-lived certificates.
                let left = (self.identity.not_after_ms - clock::now_ms()).max(0) as u64;
                let retry = Duration::from_millis(left / 4).clamp(Duration::from_secs(1), RENEW_RETRY);
                warn!(
                    error = %e,
                    retry_in = ?retry,
                    cert.not_after = %rfc3339(self.identity.not_after_ms),
                    "Certificate renewal failed; will retry."
                );
                Ok(clock::now_ms() + retry.as_millis() as i64)
            }
        }
    }
}
