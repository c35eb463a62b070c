//! The delegate protocol: enrolment (token + CSR over server-authenticated TLS),
//! certificate renewal and the lease session stream (both mTLS).
//!
//! Invariant: a delegate's identity comes from its verified client certificate,
//! never from a message field; a revoked or unknown delegate gets nothing.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dray_shared::clock::now_ms;
use dray_shared::pb::{self, delegate_service_server::DelegateService};
use dray_shared::pki::{self, Authority, PeerIdentity};
use dray_shared::{DelegateId, pki::not_after_ms, protocol};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, instrument, warn};

use super::status::invalid;
use crate::auth;
use crate::lease::engine::{Attach, Handle};
use crate::store::{AuditRecord, Batch, DelegateRecord, Store};

/// Serves `dray.v1.DelegateService`.
pub struct DelegateSvc {
    store: Arc<dyn Store>,
    engine: Handle,
    ca: Authority,
    cert_ttl: Duration,
    next_session: AtomicU64,
}

impl DelegateSvc {
    /// A service signing delegate certificates with `ca`, valid for `cert_ttl`.
    pub fn new(store: Arc<dyn Store>, engine: Handle, ca: Authority, cert_ttl: Duration) -> Self {
        DelegateSvc { store, engine, ca, cert_ttl, next_session: AtomicU64::new(1) }
    }

    /// The verified delegate behind a request, or `Unauthenticated`/`PermissionDenied`.
    async fn delegate<T>(&self, req: &Request<T>) -> Result<(PeerIdentity, DelegateRecord), Status> {
        let certs = req.peer_certs().ok_or_else(|| {
            Status::unauthenticated(
                "a client certificate issued by this manager is required; enrol the delegate first",
            )
        })?;
        let leaf =
            certs.first().ok_or_else(|| Status::unauthenticated("the client certificate chain is empty"))?;
        let who = pki::peer_identity(leaf.as_ref()).map_err(|e| Status::unauthenticated(e.to_string()))?;
        let record = self
            .store
            .get_delegate(who.delegate)
            .await?
            .ok_or_else(|| Status::unauthenticated(format!("unknown delegate {}", who.delegate)))?;
        if record.revoked {
            return Err(Status::permission_denied(format!("delegate {} has been revoked", who.delegate)));
        }
        Ok((who, record))
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<pb::ManagerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl DelegateService for DelegateSvc {
    #[instrument(skip_all, fields(delegate.name = %req.get_ref().name))]
    async fn enrol(&self, req: Request<pb::EnrolRequest>) -> Result<Response<pb::EnrolResponse>, Status> {
        let r = req.into_inner();
        if !valid_name(&r.name) {
            return Err(invalid(
                "name",
                format!("{:?} must be 1-63 letters, digits, '-', '_' or '.'", r.name),
            ));
        }
        if r.token.is_empty() {
            return Err(Status::unauthenticated("a delegate token is required to enrol"));
        }
        // Before the token is used: a refused delegate keeps its one-time token.
        protocol::check_delegate(r.protocol).map_err(|e| Status::failed_precondition(e.to_string()))?;
        let token = match self.store.use_token(&auth::hash(&r.token), now_ms()).await? {
            Ok(t) => t,
            Err(refused) => {
                warn!(reason = %refused, "Refused an enrolment.");
                return Err(Status::permission_denied(refused.to_string()));
            }
        };
        let id = DelegateId::new();
        let certificate_pem =
            self.ca.sign_delegate_csr(&r.csr_pem, id, self.cert_ttl).map_err(|e| invalid("csr_pem", e))?;
        let now = now_ms();
        let record = DelegateRecord {
            id,
            name: r.name.clone(),
            scope: token.scope.clone(),
            tags: r.tags,
            token_name: token.name.clone(),
            enrolled_ms: now,
            last_seen_ms: now,
            revoked: false,
        };
        self.store.insert_delegate(&record).await?;
        self.store
            .commit(&Batch {
                audit: vec![AuditRecord {
                    at_ms: now,
                    actor: format!("token:{}", token.name),
                    action: "delegate.enrol".into(),
                    subject: id.to_string(),
                    detail: format!("name {}", r.name),
                }],
                ..Default::default()
            })
            .await?;
        info!(delegate.id = %id, token = %token.name, "Delegate enrolled.");
        Ok(Response::new(pb::EnrolResponse {
            delegate_id: id.to_string(),
            not_after_ms: not_after_ms(&certificate_pem).unwrap_or_default(),
            certificate_pem,
            ca_pem: self.ca.cert_pem.clone(),
            scope: Some(token.scope),
        }))
    }

    #[instrument(skip_all)]
    async fn renew(&self, req: Request<pb::RenewRequest>) -> Result<Response<pb::RenewResponse>, Status> {
        let (who, _) = self.delegate(&req).await?;
        let certificate_pem = self
            .ca
            .sign_delegate_csr(&req.get_ref().csr_pem, who.delegate, self.cert_ttl)
            .map_err(|e| invalid("csr_pem", e))?;
        info!(delegate.id = %who.delegate, "Renewed a delegate certificate.");
        Ok(Response::new(pb::RenewResponse {
            not_after_ms: not_after_ms(&certificate_pem).unwrap_or_default(),
            certificate_pem,
        }))
    }

    type SessionStream = SessionStream;

    #[instrument(skip_all)]
    async fn session(
        &self,
        req: Request<Streaming<pb::DelegateMessage>>,
    ) -> Result<Response<SessionStream>, Status> {
        let (who, record) = self.delegate(&req).await?;
        let delegate = who.delegate;
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("expected Hello within 10s"))??;
        let hello = match first.and_then(|m| m.msg) {
            Some(pb::delegate_message::Msg::Hello(h)) => h,
            _ => return Err(Status::invalid_argument("the first message of a session must be Hello")),
        };
        if let Err(e) = protocol::check_delegate(hello.protocol) {
            warn!(delegate.id = %delegate, version = %hello.version, protocol = hello.protocol, "Refused a delegate session: {e}");
            return Err(Status::failed_precondition(e.to_string()));
        }
        self.store.touch_delegate(delegate, now_ms(), &hello.tags).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        self.engine
            .attach(Attach { delegate, session, name: record.name, scope: record.scope, hello, tx })
            .await?;
        let engine = self.engine.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(m)) => {
                        if let Some(msg) = m.msg
                            && engine.inbound(delegate, session, msg).await.is_err()
                        {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        info!(delegate.id = %delegate, error = %e, "Delegate session ended with an error.");
                        break;
                    }
                }
            }
            engine.detach(delegate, session).await;
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx).map(|m| *m))))
    }
}
