//! How the CLI reaches a manager: URL, CA file and admin token from flags, then
//! `DRAY_*` environment, then the local manager's data dir (so that commands work
//! on the manager host with no flags at all).

use std::path::PathBuf;

use anyhow::Context;
use dray_shared::pb::api_client::ApiClient;
use dray_shared::pb::pipelines_client::PipelinesClient as PipelinesGrpc;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Connection flags shared by every client command.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Manager gRPC URL.
    #[arg(long, global = true, env = "DRAY_SERVER", default_value = "https://127.0.0.1:7443")]
    pub server: String,
    /// CA certificate of the manager [default: <data-dir>/ca.pem].
    #[arg(long, global = true, env = "DRAY_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Admin API token [default: contents of <data-dir>/admin.token].
    #[arg(long, global = true, env = "DRAY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Local manager data dir used for the defaults above.
    #[arg(long, global = true, env = "DRAY_DATA_DIR", default_value = "./dray-data")]
    pub data_dir: PathBuf,
}

/// An authenticated API client.
pub type Client = ApiClient<InterceptedService<Channel, Bearer>>;

/// An authenticated pipelines client.
pub type PipelinesClient = PipelinesGrpc<InterceptedService<Channel, Bearer>>;

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

impl ClientArgs {
    /// Connects to the manager.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let (channel, bearer) = self.channel().await?;
        Ok(ApiClient::with_interceptor(channel, bearer).max_decoding_message_size(64 * 1024 * 1024))
    }

    /// Connects to the manager's pipelines service.
    pub async fn pipelines(&self) -> anyhow::Result<PipelinesClient> {
        let (channel, bearer) = self.channel().await?;
        Ok(PipelinesGrpc::with_interceptor(channel, bearer).max_decoding_message_size(64 * 1024 * 1024))
    }

    /// A TLS channel to the manager and the bearer interceptor for it.
    pub async fn channel(&self) -> anyhow::Result<(Channel, Bearer)> {
        let ca_file = self.ca_file.clone().unwrap_or_else(|| self.data_dir.join("ca.pem"));
        let ca = std::fs::read_to_string(&ca_file).with_context(|| {
            format!(
                "reading the manager CA certificate {} (set --ca-file or DRAY_CA_FILE)",
                ca_file.display()
            )
        })?;
        let token = match &self.token {
            Some(t) => t.clone(),
            None => {
                let path = self.data_dir.join("admin.token");
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!("reading the API token {} (set --token or DRAY_TOKEN)", path.display())
                    })?
                    .trim()
                    .to_string()
            }
        };
        let header = MetadataValue::try_from(format!("Bearer {token}"))
            .context("the API token has invalid characters")?;
        let endpoint = dray_shared::tls::endpoint(&self.server, &ca, None)?;
        let channel = dray_shared::tls::connect(&self.server, endpoint).await?;
        Ok((channel, Bearer(header)))
    }
}
