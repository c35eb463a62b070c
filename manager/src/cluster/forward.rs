//! Followers pass pipeline calls to the leader (see [`super::leader`]), so any
//! replica accepts them: the gRPC `Pipelines` service is wrapped in
//! [`ToLeader`], which relays the whole HTTP/2 request (headers, streaming
//! body and response) to the leader's gRPC URL over TLS trusting the shared
//! CA; webhook deliveries are relayed with [`webhook`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::server::NamedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tracing::debug;

use super::leader::{self, Role};

/// Marks a relayed call, so that it is never relayed twice (a leader URL that
/// leads back to a follower would otherwise loop).
pub const RELAYED: &str = "x-dray-relayed";

/// How long a call waits for the leader to be known before it fails.
pub const WAIT_FOR_LEADER: Duration = Duration::from_secs(15);

/// Serves `S` on the leader and relays to the leader elsewhere.
#[derive(Clone)]
pub struct ToLeader<S> {
    inner: S,
    role: watch::Receiver<Role>,
    relay: Relay,
}

/// Channels to leaders, by URL, with the CA they are checked against.
#[derive(Clone)]
pub struct Relay {
    ca_pem: Arc<String>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Relay {
    /// Relays that trust certificates issued by `ca_pem`.
    pub fn new(ca_pem: String) -> Relay {
        Relay { ca_pem: Arc::new(ca_pem), channels: Arc::default() }
    }

    /// A (lazily connected, cached) channel to the replica at `url`.
    pub fn channel(&self, url: &str) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(url) {
            return Ok(c.clone());
        }
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(self.ca_pem.as_bytes()));
        let endpoint = Endpoint::from_shared(url.to_string())
            .and_then(|e| e.tls_config(tls))
            .map_err(|e| Status::internal(format!("leader URL {url}: {e}")))?
            .connect_timeout(Duration::from_secs(5));
        let channel = endpoint.connect_lazy();
        channels.insert(url.to_string(), channel.clone());
        Ok(channel)
    }
}

impl<S> ToLeader<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, role: watch::Receiver<Role>, relay: Relay) -> Self {
        ToLeader { inner, role, relay }
    }
}

impl<S: NamedService> NamedService for ToLeader<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<Body>> for ToLeader<S>
where
    S: Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        // The clone is ready (poll_ready of tonic services always is).
        let mut inner = self.inner.clone();
        let mut role = self.role.clone();
        let relay = self.relay.clone();
        Box::pin(async move {
            match leader::known(&mut role, WAIT_FOR_LEADER).await {
                Role::Leader => inner.call(req).await.map(|resp| resp.map(Body::new)),
                Role::Follower { grpc_url, id, .. } => {
                    if req.headers().contains_key(RELAYED) {
                        return Ok(Status::unavailable(format!(
                            "a call relayed to the leader reached a follower: {grpc_url} (leader {id}) does not \
                             reach that replica; set --replica-host"
                        ))
                        .into_http());
                    }
                    let mut req = req;
                    req.headers_mut().insert(RELAYED, http::HeaderValue::from_static("1"));
                    debug!(leader = %id, path = %req.uri().path(), "Relaying a pipeline call to the leader.");
                    let mut channel = match relay.channel(&grpc_url) {
                        Ok(c) => c,
                        Err(status) => return Ok(status.into_http()),
                    };
                    // A channel is a buffer: it must be ready before each call.
                    if let Err(e) = futures::future::poll_fn(|cx| channel.poll_ready(cx)).await {
                        return Ok(Status::unavailable(format!(
                            "the leader replica {id} at {grpc_url} is unreachable: {e}"
                        ))
                        .into_http());
                    }
                    match channel.call(req).await {
                        Ok(resp) => Ok(resp),
                        Err(e) => Ok(Status::unavailable(format!(
                            "the leader replica {id} at {grpc_url} is unreachable: {e}"
                        ))
                        .into_http()),
                    }
                }
                Role::Unknown => Ok(Status::unavailable(
                    "no replica leads yet (pipeline executions are driven by the leader); retry shortly",
                )
                .into_http()),
            }
        })
    }
}

/// A webhook delivery relayed to the leader's HTTP URL: its status and body.
pub async fn webhook(
    http_url: &str,
    path: &str,
    headers: &http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<(http::StatusCode, axum::body::Bytes), String> {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let uri: http::Uri = format!("{}{path}", http_url.trim_end_matches('/'))
        .parse()
        .map_err(|e| format!("leader HTTP URL {http_url}: {e}"))?;
    if headers.contains_key(RELAYED) {
        return Err(format!(
            "a delivery relayed to the leader reached a follower: {http_url} does not reach the leader; \
             set --replica-host and an --http-addr the other replicas reach"
        ));
    }
    let mut req = http::Request::post(uri).body(axum::body::Body::from(body)).map_err(|e| e.to_string())?;
    for (name, value) in headers {
        if name != http::header::HOST && name != http::header::CONTENT_LENGTH {
            req.headers_mut().append(name, value.clone());
        }
    }
    req.headers_mut().insert(RELAYED, http::HeaderValue::from_static("1"));
    let client = Client::builder(TokioExecutor::new()).build_http::<axum::body::Body>();
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| format!("the leader at {http_url} did not answer in time"))?
        .map_err(|e| format!("the leader at {http_url} is unreachable: {e}"))?;
    let status = resp.status();
    let body =
        axum::body::to_bytes(axum::body::Body::new(resp.into_body()), crate::triggers::receiver::MAX_BODY)
            .await
            .map_err(|e| format!("reading the leader's answer: {e}"))?;
    Ok((status, body))
}
