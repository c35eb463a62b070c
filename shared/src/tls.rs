//! TLS plumbing shared by every client of the manager (delegate and CLI):
//! one rustls crypto provider (ring) and tonic channels that verify the manager
//! against its CA, optionally presenting a client certificate.

use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Installs rustls' ring provider as the process default. Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client channel failed to build or connect.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL is not usable.
    #[error("invalid manager URL {url:?}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// Why.
        reason: String,
    },
    /// TLS configuration or connection failed.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL given.
        url: String,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
}

/// Builds an endpoint for `url` (https only) trusting `ca_pem`, presenting
/// `identity` (certificate PEM, key PEM) when given.
pub fn endpoint(url: &str, ca_pem: &str, identity: Option<(&str, &str)>) -> Result<Endpoint, Error> {
    install_crypto_provider();
    if !url.starts_with("https://") {
        return Err(Error::Url { url: url.into(), reason: "must start with https://".into() });
    }
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(url.to_string())
        .map_err(|e| Error::Url { url: url.into(), reason: e.to_string() })?
        .tls_config(tls)
        .map_err(|source| Error::Connect { url: url.into(), source })
        .map(|e| {
            e.connect_timeout(Duration::from_secs(5))
                .http2_keep_alive_interval(Duration::from_secs(20))
                .keep_alive_timeout(Duration::from_secs(10))
                .tcp_nodelay(true)
        })
}

/// Connects `endpoint`, mapping the error to name the URL.
pub async fn connect(url: &str, endpoint: Endpoint) -> Result<Channel, Error> {
    endpoint.connect().await.map_err(|source| Error::Connect { url: url.into(), source })
}
