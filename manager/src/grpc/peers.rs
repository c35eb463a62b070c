//! Views that span replicas: a lease, and a delegate's session, live in the
//! replica holding them, so `ListLeases` and `ListDelegates` ask every other
//! live replica for its own part (`local: true`) and merge. A replica that
//! does not answer in time is left out (and logged), not an error.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dray_shared::clock::now_ms;
use dray_shared::pb::api_client::ApiClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};
use tracing::warn;

use crate::cluster::REPLICA_TTL;
use crate::cluster::forward::Relay;
use crate::store::Store;

/// How long one replica may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Passes the caller's own credentials on.
#[derive(Clone)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        req.set_timeout(ASK_TIMEOUT);
        Ok(req)
    }
}

/// A client of another replica's API.
pub type PeerClient = ApiClient<InterceptedService<Channel, Auth>>;

/// The other replicas, reached through the shared CA.
pub struct Peers {
    store: Arc<dyn Store>,
    me: String,
    relay: Relay,
}

impl Peers {
    /// Peers of replica `me`.
    pub fn new(store: Arc<dyn Store>, me: String, relay: Relay) -> Self {
        Peers { store, me, relay }
    }

    /// This replica's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Runs `call` against every other live replica with the caller's
    /// credentials; returns `(replica id, answer)` for those that answered.
    pub async fn ask<T, F, Fut>(
        &self,
        auth: Option<&MetadataValue<Ascii>>,
        call: F,
    ) -> Result<Vec<(String, T)>, Status>
    where
        F: Fn(PeerClient) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let now = now_ms();
        let ttl_ms = REPLICA_TTL.as_millis() as i64;
        let others: Vec<_> = self
            .store
            .replicas()
            .await?
            .into_iter()
            .filter(|r| r.id != self.me && !r.is_dead(now, ttl_ms))
            .collect();
        let asks = others.into_iter().map(|r| {
            let channel = self.relay.channel(&r.grpc_url);
            let client = channel.map(|c| ApiClient::with_interceptor(c, Auth(auth.cloned())));
            let answer = async {
                match client {
                    Ok(c) => call(c).await,
                    Err(e) => Err(e),
                }
            };
            async move { (r, answer.await) }
        });
        let mut out = vec![];
        for (r, answer) in futures::future::join_all(asks).await {
            match answer {
                Ok(v) => out.push((r.id, v)),
                Err(e) => {
                    warn!(replica = %r.id, url = %r.grpc_url, error = %e, "A replica did not answer; its part is left out.")
                }
            }
        }
        Ok(out)
    }
}
