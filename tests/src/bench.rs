//! What the benchmarks share: their knobs, percentiles, and authenticated
//! clients of a manager's public API.

use dray_shared::pb::{self, api_client::ApiClient, pipelines_client::PipelinesClient};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::Manager;

/// A numeric knob from the environment, else `default`.
pub fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The `p` quantile (0..=1) of an ascending slice; 0 when empty.
pub fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Adds the admin bearer token to every call.
#[derive(Clone)]
pub struct Auth(MetadataValue<Ascii>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Ok(r)
    }
}

/// A `dray.v1.Api` client.
pub type Client = ApiClient<InterceptedService<Channel, Auth>>;

/// A `dray.v1.Pipelines` client.
pub type Pipelines = PipelinesClient<InterceptedService<Channel, Auth>>;

async fn connect(m: &Manager) -> anyhow::Result<(Channel, Auth)> {
    let ca = std::fs::read_to_string(m.ca_file())?;
    let ch = dray_shared::tls::endpoint(&m.url(), &ca, None)?.connect().await?;
    Ok((ch, Auth(format!("Bearer {}", m.admin_token()).parse()?)))
}

/// An API client of `m` with the admin token (large answers allowed).
pub async fn client(m: &Manager) -> anyhow::Result<Client> {
    let (ch, auth) = connect(m).await?;
    Ok(ApiClient::with_interceptor(ch, auth).max_decoding_message_size(256 * 1024 * 1024))
}

/// A pipelines client of `m` with the admin token.
pub async fn pipelines(m: &Manager) -> anyhow::Result<Pipelines> {
    let (ch, auth) = connect(m).await?;
    Ok(PipelinesClient::with_interceptor(ch, auth))
}

/// A `noop` task.
pub fn noop() -> pb::TaskSpec {
    pb::TaskSpec { kind: "noop".into(), ..Default::default() }
}
