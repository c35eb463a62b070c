//! A connector for hyper and tonic that goes through the configured proxy:
//! direct TCP, a `CONNECT` tunnel (HTTPS targets, TLS is added on top by the
//! caller), or a plain connection to the proxy flagged so hyper sends requests
//! in absolute form (HTTP targets).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use super::{Proxies, tunnel};

/// Connects to a URI's host, through a proxy when the settings say so.
#[derive(Debug, Clone, Default)]
pub struct ProxyConnector {
    /// `None`: the process-wide settings ([`super::global`]).
    proxies: Option<Proxies>,
}

impl ProxyConnector {
    /// A connector using the process-wide settings.
    pub fn new() -> Self {
        ProxyConnector { proxies: None }
    }

    /// A connector using `proxies`.
    pub fn with(proxies: Proxies) -> Self {
        ProxyConnector { proxies: Some(proxies) }
    }
}

/// A connection made by [`ProxyConnector`].
#[derive(Debug)]
pub struct ProxiedStream {
    io: TokioIo<TcpStream>,
    /// Requests on it must be in absolute form (it is a plain proxy connection).
    absolute_form: bool,
}

impl Connection for ProxiedStream {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.absolute_form)
    }
}

impl hyper::rt::Read for ProxiedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for ProxiedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl tower_service::Service<Uri> for ProxyConnector {
    type Response = ProxiedStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<ProxiedStream>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        match self.proxies.clone() {
            Some(proxies) => Box::pin(async move { open(&proxies, &uri).await }),
            None => Box::pin(async move { open(super::global(), &uri).await }),
        }
    }
}

/// Opens a connection for `uri` as `proxies` say.
pub async fn open(proxies: &Proxies, uri: &Uri) -> io::Result<ProxiedStream> {
    let (https, host, port) = super::target_of(uri)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{uri} has no host")))?;
    let (stream, absolute_form) = match proxies.for_target(https, host, port) {
        None => (TcpStream::connect((host, port)).await?, false),
        Some(p) if https => {
            debug!(proxy = %p, target = %format!("{host}:{port}"), "tunnelling through proxy");
            (tunnel::connect(p, host, port).await?, false)
        }
        Some(p) => {
            debug!(proxy = %p, target = %format!("{host}:{port}"), "sending through proxy");
            let s = TcpStream::connect((p.host.as_str(), p.port))
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("cannot reach proxy {p}: {e}")))?;
            (s, true)
        }
    };
    stream.set_nodelay(true)?;
    Ok(ProxiedStream { io: TokioIo::new(stream), absolute_form })
}
