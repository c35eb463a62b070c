//! The SDK configuration for one task, and the HTTP client under it.
//!
//! - Credentials: connector keys (secret references, resolved here through the
//!   run context, so the values are masked in this task's output), else the
//!   delegate's default chain (environment, profile, web identity, container
//!   or instance role). With `roleArn` that identity assumes the role via STS.
//! - HTTP: aws-smithy-http-client on rustls with ring. The delegate's proxy
//!   settings (`HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`, through
//!   [`crate::proxy::global`]) are applied per AWS endpoint: each service client
//!   gets a connector that goes through the proxy chosen for its host, or
//!   direct when `NO_PROXY` exempts it.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ecs::config::SharedHttpClient;
use aws_sdk_ecs::config::{Credentials, ProvideCredentials as _};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder, Connector};
use dray_shared::error_type::ErrorType;
use dray_shared::task::aws::AwsConnection;

use super::AwsError;
use crate::proxy::{self, Proxies, Proxy};
use crate::targets::RunContext;

/// A task's AWS configuration and the endpoint override, if any.
#[derive(Debug, Clone)]
pub struct Aws {
    /// Region, credentials, endpoint, HTTP client.
    pub config: SdkConfig,
    endpoint: Option<http::Uri>,
    region: String,
}

impl Aws {
    /// The HTTP client for service `prefix` (`ecs`, `lambda`,
    /// `elasticloadbalancing`), proxied as the delegate's settings say for its host.
    pub fn http_client_for(&self, prefix: &str) -> SharedHttpClient {
        let (https, host, port) = match &self.endpoint {
            Some(u) => endpoint_target(u),
            None => (true, format!("{prefix}.{}.amazonaws.com", self.region), 443),
        };
        http_client(proxy::global(), https, &host, port)
    }

    /// An ECS client.
    pub fn ecs(&self) -> aws_sdk_ecs::Client {
        let conf =
            aws_sdk_ecs::config::Builder::from(&self.config).http_client(self.http_client_for("ecs")).build();
        aws_sdk_ecs::Client::from_conf(conf)
    }

    /// An ELBv2 client.
    pub fn elbv2(&self) -> aws_sdk_elasticloadbalancingv2::Client {
        let conf = aws_sdk_elasticloadbalancingv2::config::Builder::from(&self.config)
            .http_client(self.http_client_for("elasticloadbalancing"))
            .build();
        aws_sdk_elasticloadbalancingv2::Client::from_conf(conf)
    }

    /// A Lambda client.
    pub fn lambda(&self) -> aws_sdk_lambda::Client {
        let conf = aws_sdk_lambda::config::Builder::from(&self.config)
            .http_client(self.http_client_for("lambda"))
            .build();
        aws_sdk_lambda::Client::from_conf(conf)
    }
}

fn endpoint_target(u: &http::Uri) -> (bool, String, u16) {
    // A checked endpoint URL always has a host.
    let (https, host, port) = crate::proxy::target_of(u).unwrap_or((true, "", 443));
    (https, host.to_string(), port)
}

/// The proxy configuration for one target host.
pub fn proxy_config(proxies: &Proxies, https: bool, host: &str, port: u16) -> ProxyConfig {
    match proxies.for_target(https, host, port) {
        None => ProxyConfig::disabled(),
        Some(p) => to_smithy(p).unwrap_or_else(ProxyConfig::disabled),
    }
}

fn to_smithy(p: &Proxy) -> Option<ProxyConfig> {
    let host = if p.host.contains(':') { format!("[{}]", p.host) } else { p.host.clone() };
    let config = ProxyConfig::all(format!("http://{host}:{}", p.port).as_str()).ok()?;
    Some(match p.authorization.as_deref().and_then(basic_credentials) {
        Some((user, password)) => config.with_basic_auth(user, password),
        None => config,
    })
}

/// `Basic base64(user:password)` back to its parts.
fn basic_credentials(header: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let encoded = header.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':').unwrap_or((&text, ""));
    Some((u.to_string(), p.to_string()))
}

/// An HTTPS-capable client (rustls, ring) that dials `host` as `proxies` say.
pub fn http_client(proxies: &Proxies, https: bool, host: &str, port: u16) -> SharedHttpClient {
    let proxy = proxy_config(proxies, https, host, port);
    Builder::new().build_with_connector_fn(move |settings, components| {
        let mut b = Connector::builder();
        b.set_connector_settings(settings.cloned());
        if let Some(c) = components {
            b.set_sleep_impl(c.sleep_impl());
        }
        b.proxy_config(proxy.clone()).tls_provider(Provider::Rustls(CryptoMode::Ring)).build()
    })
}

/// Builds the configuration for `conn`, resolving secret references through `cx`.
pub async fn connect(conn: &AwsConnection, cx: &mut RunContext) -> Result<Aws, AwsError> {
    let secret = |e: crate::secrets::SecretError| AwsError::of(ErrorType::Authentication, e.to_string());
    let endpoint = match &conn.endpoint {
        Some(e) => {
            let e = cx.substitute("aws.endpoint", e).await.map_err(secret)?;
            let uri = dray_shared::task::check_url(&e)
                .map_err(|r| AwsError::other(format!("aws.endpoint: {r}")))?;
            Some((e, uri))
        }
        None => None,
    };
    let region = conn.region.clone();
    // Credentials and STS use the STS endpoint's proxy decision.
    let sts_client = match &endpoint {
        Some((_, u)) => {
            let (https, host, port) = endpoint_target(u);
            http_client(proxy::global(), https, &host, port)
        }
        None => http_client(proxy::global(), true, &format!("sts.{region}.amazonaws.com"), 443),
    };
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10))
        .operation_attempt_timeout(Duration::from_secs(60))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.clone()))
        .http_client(sts_client)
        .timeout_config(timeouts);
    if let Some((e, _)) = &endpoint {
        loader = loader.endpoint_url(e.clone());
    }
    let from_connector = conn.access_key_id.is_some();
    if let (Some(ak), Some(sk)) = (&conn.access_key_id, &conn.secret_access_key) {
        let ak = cx.substitute("aws.accessKeyId", ak).await.map_err(secret)?;
        let sk = cx.substitute("aws.secretAccessKey", sk).await.map_err(secret)?;
        let token = match &conn.session_token {
            Some(t) => Some(cx.substitute("aws.sessionToken", t).await.map_err(secret)?),
            None => None,
        };
        loader = loader.credentials_provider(Credentials::new(ak, sk, token, None, "dray-connector"));
    }
    let mut config = loader.load().await;
    if let Some(role) = &conn.role_arn {
        let mut b = aws_config::sts::AssumeRoleProvider::builder(role.clone())
            .session_name(format!("dray-{}", cx.key.task))
            .configure(&config);
        if let Some(x) = &conn.external_id {
            b = b.external_id(cx.substitute("aws.externalId", x).await.map_err(secret)?);
        }
        let provider = b.build().await;
        config = config
            .into_builder()
            .credentials_provider(aws_sdk_ecs::config::SharedCredentialsProvider::new(provider))
            .build();
    }
    // Resolve now: a missing or refused identity is an Authentication failure
    // named as such, not an error of whichever call came first.
    let source =
        if from_connector { "the connector's keys" } else { "the delegate's default credential chain" };
    let provider = config
        .credentials_provider()
        .ok_or_else(|| AwsError::of(ErrorType::Authentication, "no AWS credential provider"))?;
    let resolved = provider.provide_credentials().await.map_err(|e| {
        AwsError::of(
            ErrorType::Authentication,
            format!("no AWS credentials from {source}: {}", aws_sdk_ecs::error::DisplayErrorContext(&e)),
        )
    })?;
    let role = conn.role_arn.as_ref().map(|r| format!(", assumed role {r}")).unwrap_or_default();
    super::log(
        cx,
        format!("AWS credentials: {source}{role} (access key {})", key_hint(resolved.access_key_id())),
    )
    .await;
    Ok(Aws { config, endpoint: endpoint.map(|(_, u)| u), region })
}

/// The first four characters of an access key id (enough to tell which
/// identity was used; never the secret).
fn key_hint(id: &str) -> String {
    format!("{}…", id.chars().take(4).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_apply_per_endpoint() {
        let proxies = Proxies::from_vars(|n| match n {
            "HTTPS_PROXY" => Some("http://alice:s%3Acret@proxy.corp:3128".into()),
            "NO_PROXY" => Some("127.0.0.1,.internal".into()),
            _ => None,
        })
        .unwrap();
        assert!(!proxy_config(&proxies, true, "ecs.us-east-1.amazonaws.com", 443).is_disabled());
        assert!(proxy_config(&proxies, true, "127.0.0.1", 5000).is_disabled(), "NO_PROXY address");
        assert!(proxy_config(&proxies, true, "ecs.vpce.internal", 443).is_disabled(), "NO_PROXY suffix");
        assert!(
            proxy_config(&proxies, false, "ecs.us-east-1.amazonaws.com", 80).is_disabled(),
            "no HTTP_PROXY"
        );
        let p = proxies.https.as_ref().unwrap();
        assert_eq!(
            basic_credentials(p.authorization.as_deref().unwrap()),
            Some(("alice".into(), "s:cret".into()))
        );
    }
}
