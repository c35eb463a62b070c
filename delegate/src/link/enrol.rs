//! First contact and certificate renewal. `Enrol` trades a one-time token and a
//! CSR for a client certificate over server-authenticated TLS (no client
//! identity yet); `Renew` trades a fresh CSR for the same key for a new
//! certificate over the mTLS channel. Only CSRs are sent: the key stays here.

use std::path::Path;
use std::time::Duration;

use backon::BackoffBuilder as _;
use dray_shared::pb::delegate_service_client::DelegateServiceClient;
use dray_shared::pb::{EnrolRequest, RenewRequest};
use dray_shared::{DelegateId, pki, tls};
use tonic::transport::Channel;
use tracing::{info, warn};

use super::identity::{Identity, IdentityError, IdentityRecord, KeyPem, StateDir};
use super::stream::is_refusal;

/// Why enrolment or renewal failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    /// The manager refused (bad, expired or revoked token; revoked delegate).
    /// Never retried: the same request would be refused again.
    #[error("manager refused {what}: {message}")]
    Refused {
        /// "enrolment" or "renewal".
        what: &'static str,
        /// The manager's message, e.g. `delegate token "x" expired`.
        message: String,
    },
    /// The manager answered with another error.
    #[error("{what} failed: {code}: {message}")]
    Failed {
        /// "enrolment" or "renewal".
        what: &'static str,
        /// gRPC status code.
        code: tonic::Code,
        /// The manager's message.
        message: String,
    },
    /// The manager could not be reached (retried by callers).
    #[error("cannot reach the manager: {0}")]
    Transport(String),
    /// The manager URL or CA cannot be used.
    #[error(transparent)]
    Tls(tls::Error),
    /// Key or CSR generation failed.
    #[error("cannot create a key or CSR: {0}")]
    Pki(#[source] pki::Error),
    /// The manager's answer is unusable.
    #[error("invalid {what} response: {reason}")]
    BadResponse {
        /// "enrolment" or "renewal".
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The identity could not be saved.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

impl EnrolError {
    /// True for failures worth retrying (the manager may come up later).
    pub fn is_transient(&self) -> bool {
        match self {
            EnrolError::Transport(_) => true,
            EnrolError::Failed { code, .. } => {
                matches!(code, tonic::Code::Unavailable | tonic::Code::DeadlineExceeded)
            }
            _ => false,
        }
    }

    fn from_status(what: &'static str, status: tonic::Status) -> Self {
        if is_refusal(&status) {
            EnrolError::Refused { what, message: status.message().to_string() }
        } else {
            EnrolError::Failed { what, code: status.code(), message: status.message().to_string() }
        }
    }
}

/// What to enrol as.
#[derive(Debug, Clone)]
pub struct EnrolParams<'a> {
    /// Manager addresses, tried in turn.
    pub managers: &'a [String],
    /// Manager CA, PEM.
    pub ca_pem: &'a str,
    /// One-time enrolment token.
    pub token: &'a str,
    /// Delegate name.
    pub name: &'a str,
    /// Tags to announce.
    pub tags: &'a [String],
}

/// Enrols once: new key, CSR, `Enrol` call, identity saved to `state`.
pub async fn enrol_once(
    p: &EnrolParams<'_>,
    manager: &str,
    state: &StateDir,
) -> Result<Identity, EnrolError> {
    let (key, csr_pem) = pki::delegate_key_and_csr(p.name).map_err(EnrolError::Pki)?;
    let endpoint = tls::endpoint(manager, p.ca_pem, None).map_err(EnrolError::Tls)?;
    let channel =
        super::dial(manager, endpoint).await.map_err(|e| EnrolError::Transport(super::error_chain(&e)))?;
    let mut client = DelegateServiceClient::new(channel);
    let resp = client
        .enrol(EnrolRequest {
            token: p.token.to_string(),
            name: p.name.to_string(),
            csr_pem,
            tags: p.tags.to_vec(),
            protocol: dray_shared::protocol::PROTOCOL,
        })
        .await
        .map_err(|s| EnrolError::from_status("enrolment", s))?
        .into_inner();
    let bad = |reason: String| EnrolError::BadResponse { what: "enrolment", reason };
    let delegate_id: DelegateId =
        resp.delegate_id.parse().map_err(|e: dray_shared::ids::InvalidId| bad(e.to_string()))?;
    let record = IdentityRecord {
        delegate_id,
        name: p.name.to_string(),
        scope: resp.scope.unwrap_or_default().into(),
    };
    let identity =
        Identity::new(record, resp.certificate_pem, KeyPem::new(key), Path::new("the enrolment response"))
            .map_err(|e| bad(e.to_string()))?;
    state.save(&identity)?;
    Ok(identity)
}

/// Enrols, retrying while the manager is unreachable (it may start after the
/// delegate); any answer from the manager other than "unavailable" is final.
pub async fn enrol(p: &EnrolParams<'_>, state: &StateDir) -> Result<Identity, EnrolError> {
    let mut backoff = super::backoff().build();
    let mut managers = super::managers::Managers::new(p.managers.to_vec());
    loop {
        let manager = managers.current().to_string();
        match enrol_once(p, &manager, state).await {
            Ok(id) => {
                info!(
                    delegate.id = %id.record.delegate_id,
                    delegate.name = %id.record.name,
                    delegate.scope = %id.record.scope,
                    state_dir = %state.path().display(),
                    "Enrolled with the manager."
                );
                return Ok(id);
            }
            Err(e) if e.is_transient() => {
                if managers.failed() {
                    let wait = backoff.next().unwrap_or(Duration::from_secs(30));
                    warn!(manager = %manager, error = %e, retry_in = ?wait, "Enrolment attempt failed; retrying.");
                    tokio::time::sleep(wait).await;
                } else {
                    warn!(manager = %manager, error = %e, next = %managers.current(), "Enrolment attempt failed; trying the next manager address.");
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Renews the certificate of `identity` over `channel` (which authenticates
/// with the current certificate) and saves the new one. The key is kept.
pub async fn renew(channel: Channel, identity: &Identity, state: &StateDir) -> Result<Identity, EnrolError> {
    let csr_pem = pki::csr_for(identity.key.expose(), &identity.record.name).map_err(EnrolError::Pki)?;
    let resp = DelegateServiceClient::new(channel)
        .renew(RenewRequest { csr_pem })
        .await
        .map_err(|s| EnrolError::from_status("renewal", s))?
        .into_inner();
    let renewed = Identity::new(
        identity.record.clone(),
        resp.certificate_pem,
        identity.key.clone(),
        Path::new("the renewal response"),
    )
    .map_err(|e| EnrolError::BadResponse { what: "renewal", reason: e.to_string() })?;
    state.save_cert(&renewed.cert_pem)?;
    Ok(renewed)
}
