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
    if config.proxy_url.is_none() {
        config.proxy_url = proxy_for(&config.cluster_url, crate::proxy::global());
    }
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    config.reset_reader_on_write = true;
    Ok(config)
}

/// The delegate's proxy for the cluster's address, if any. A `proxy-url` in the
/// kubeconfig wins; otherwise the delegate's settings decide (so `NO_PROXY`
/// ranges cover the cluster address as they do every other target).
fn proxy_for(cluster_url: &http::Uri, proxies: &crate::proxy::Proxies) -> Option<http::Uri> {
    proxies.for_uri(cluster_url)?.url_with_credentials().parse().ok()
}

/// A client for `cluster`.
pub async fn connect(cluster: &Cluster, token: Option<&str>) -> Result<Client, K8sError> {
    install_provider();
    let config = config(cluster, token).await?;
    Client::try_from(config).map_err(|e| K8sError::Config(format!("cannot build the client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECONFIG: &str = r#"
apiVersion: v1
kind: Config
clusters:
- name: a
  cluster: {server: "https://127.0.0.1:6443"}
- name: b
  cluster: {server: "https://10.0.0.2:443"}
users:
- name: ua
  user: {token: from-kubeconfig}
contexts:
- name: first
  context: {cluster: a, user: ua, namespace: apps}
- name: second
  context: {cluster: b, user: ua}
current-context: first
"#;

    #[tokio::test]
    async fn kubeconfig_context_and_token_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, KUBECONFIG).unwrap();
        let path = path.display().to_string();
        let cluster = Cluster { kubeconfig: Some(path.clone()), ..Default::default() };
        assert_eq!(check(&cluster), Ok(()));

        let c = config(&cluster, None).await.unwrap();
        assert_eq!(c.cluster_url.to_string(), "https://127.0.0.1:6443/");
        assert_eq!(c.default_namespace, "apps");
        assert!(c.auth_info.token.is_some(), "the kubeconfig's own token");
        assert!(c.headers.is_empty());

        let second = Cluster { context: Some("second".into()), ..cluster.clone() };
        let c = config(&second, Some("s3cret")).await.unwrap();
        assert_eq!(c.cluster_url.to_string(), "https://10.0.0.2:443/");
        assert!(c.auth_info.token.is_none(), "replaced by the task's token");
        assert_eq!(c.headers.len(), 1);
        assert_eq!(c.headers[0].0, http::header::AUTHORIZATION);
        assert_eq!(c.headers[0].1.to_str().unwrap(), "Bearer s3cret");
        assert!(c.headers[0].1.is_sensitive());

        let missing = Cluster { context: Some("third".into()), ..cluster };
        let e = config(&missing, None).await.unwrap_err();
        assert!(e.to_string().starts_with(&format!("cluster connection: kubeconfig {path}: ")), "{e}");
        assert_eq!(
            check(&Cluster { kubeconfig: Some("/nonexistent/config".into()), ..Default::default() }),
            Err("kubeconfig /nonexistent/config does not exist on this delegate".into())
        );
    }

    #[test]
    fn the_delegates_proxy_settings_decide_for_the_cluster_address() {
        let proxies = crate::proxy::Proxies::from_vars(|n| match n {
            "HTTPS_PROXY" => Some("http://u:p@proxy.corp:3128".into()),
            "NO_PROXY" => Some("10.0.0.0/8".into()),
            _ => None,
        })
        .unwrap();
        let remote: http::Uri = "https://api.cluster.example:6443".parse().unwrap();
        assert_eq!(proxy_for(&remote, &proxies).unwrap().to_string(), "http://u:p@proxy.corp:3128/");
        let inside: http::Uri = "https://10.0.0.2:443".parse().unwrap();
        assert_eq!(proxy_for(&inside, &proxies), None, "NO_PROXY ranges are honoured");
    }
}
