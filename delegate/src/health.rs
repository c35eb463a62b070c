//! The delegate's own health endpoint, for Kubernetes probes and service
//! managers: `GET /healthz` answers 200 while the process runs, `GET /readyz` 200
//! while a session with the manager is established and 503 otherwise.
//!
//! A few lines of HTTP/1.1 on a plain listener, deliberately: pulling an HTTP
//! framework into the agent would cost more memory than the endpoint is worth.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::debug;

/// Serves until the process ends.
pub async fn serve(listener: TcpListener, ready: watch::Receiver<bool>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let ready = ready.clone();
        tokio::spawn(async move {
            let is_ready = *ready.borrow();
            if let Err(e) = answer(stream, is_ready).await {
                debug!(error = %e, "Health request failed.");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, ready: bool) -> std::io::Result<()> {
    // Read the whole head: closing a socket with unread input makes the kernel
    // reset the connection, and the client would lose the answer.
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    let read_head = async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        std::io::Result::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(5), read_head)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request"))??;
    let (status, body) = route(&String::from_utf8_lossy(&buf), ready);
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Status line and body for a raw request.
fn route(request: &str, ready: bool) -> (&'static str, &'static str) {
    let mut parts = request.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some("GET"), Some("/healthz")) => ("200 OK", "ok\n"),
        (Some("GET"), Some("/readyz")) if ready => ("200 OK", "ready\n"),
        (Some("GET"), Some("/readyz")) => ("503 Service Unavailable", "not connected to the manager\n"),
        (Some("GET"), _) => ("404 Not Found", "not found\n"),
        _ => ("405 Method Not Allowed", "only GET\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("GET /healthz HTTP/1.1\r\n", false).0, "200 OK");
        assert_eq!(route("GET /readyz HTTP/1.1\r\n", true).0, "200 OK");
        assert_eq!(route("GET /readyz HTTP/1.1\r\n", false).0, "503 Service Unavailable");
        assert_eq!(route("GET /x HTTP/1.1\r\n", true).0, "404 Not Found");
        assert_eq!(route("POST /readyz HTTP/1.1\r\n", true).0, "405 Method Not Allowed");
        assert_eq!(route("", true).0, "405 Method Not Allowed");
    }
}
