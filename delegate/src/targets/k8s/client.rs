//! Connecting to a cluster: a kubeconfig file on the delegate (optionally one
//! of its contexts) or the delegate's in-cluster service account, optionally
//! with a bearer token (resolved from a secret reference) replacing the
//! kubeconfig's credentials.

use std::sync::Once;
use std::time::Duration;

use dray_shared::task::k8s::Cluster;
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::errors::K8sError;

/// Longest a single API request may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest one API response may take (rollouts are polled, never watched).
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// kube's rustls client needs a process-wide crypto provider.
fn install_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only when another provider is installed already, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Is the cluster reachable in principle from this delegate (files present)?
/// For the capability check before a task is accepted.
pub fn check(cluster: &Cluster) -> Result<(), String> {
    match &cluster.kubeconfig {
        Some(path) => {
            if !std::path::Path::new(path).is_file() {
                return Err(format!("kubeconfig {path} does not exist on this delegate"));
            }
        }
        None => {
            if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
                return Err("no kubeconfig given and this delegate does not run in a cluster".into());
            }
        }
    }
    Ok(())
}

/// The client configuration for `cluster`; `token` is the resolved bearer token.
pub async fn config(cluster: &Cluster, token: Option<&str>) -> Result<Config, K8sError> {
    let mut config = match &cluster.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| K8sError::Config(format!("kubeconfig {path}: {e}")))?;
            let options = KubeConfigOptions { context: cluster.context.clone(), ..Default::default() };
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| K8sError::Config(format!("kubeconfig {path}: {e}")))?
        }
        None => {
            Config::incluster().map_err(|e| K8sError::Config(format!("in-cluster service account: {e}")))?
        }
    };
    if let Some(token) = token {
        config.auth_info = AuthInfo::default();
        let mut value = http::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            K8sError::Config("the cluster token contains characters a header cannot carry".into())
        })?;
        value.set_sensitive(true);
        config.headers.push((http::header::AUTHORIZATION, value));
    }
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    config.reset_reader_on_write = true;
    Ok(config)
}

/// A client for `cluster`.
pub async fn connect(cluster: &Cluster, token: Option<&str>) -> Result<Client, K8sError> {
    install_provider();
    let config = config(cluster, token).await?;
    Client::try_from(config).map_err(|e| K8sError::Config(format!("cannot build the client: {e}")))
}
