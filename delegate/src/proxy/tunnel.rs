//! HTTP `CONNECT` tunnels through a proxy.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Proxy;

/// Longest proxy response head we read before giving up.
const MAX_HEAD: usize = 16 * 1024;

/// Opens a TCP connection to `proxy` and asks it for a tunnel to `host:port`.
/// On success the stream carries the target's bytes (TLS goes on top).
pub async fn connect(proxy: &Proxy, host: &str, port: u16) -> io::Result<TcpStream> {
    let mut s = TcpStream::connect((proxy.host.as_str(), proxy.port))
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot reach proxy {proxy}: {e}")))?;
    s.set_nodelay(true)?;
    let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(auth) = &proxy.authorization {
        req.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    let head =
        read_head(&mut s).await.map_err(|e| io::Error::new(e.kind(), format!("proxy {proxy}: {e}")))?;
    let status = status_of(&head).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("proxy {proxy} sent a malformed response"))
    })?;
    if !(200..300).contains(&status.0) {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("proxy {proxy} refused the tunnel to {authority}: {} {}", status.0, status.1),
        ));
    }
    Ok(s)
}

/// Reads up to the blank line ending the response head, byte by byte so no
/// tunnelled byte is consumed.
async fn read_head(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(256);
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "response head too long"));
        }
        if s.read(&mut b).await? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed the connection during CONNECT"));
        }
        head.push(b[0]);
    }
    Ok(head)
}

/// `(code, reason)` of an `HTTP/1.x CODE REASON` status line.
fn status_of(head: &[u8]) -> Option<(u16, String)> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?.parse().ok()?;
    Some((code, parts.next().unwrap_or("").to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A one-connection proxy that answers CONNECT with `reply` and then echoes.
    async fn fake_proxy(reply: &'static str) -> (Proxy, tokio::task::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let head = read_head(&mut s).await.unwrap();
            s.write_all(reply.as_bytes()).await.unwrap();
            let mut buf = [0u8; 5];
            if s.read_exact(&mut buf).await.is_ok() {
                s.write_all(&buf).await.unwrap();
            }
            String::from_utf8(head).unwrap()
        });
        (
            Proxy {
                host: "127.0.0.1".into(),
                port,
                authorization: Some("Basic eDp5".into()),
                userinfo: Some("x:y".into()),
            },
            task,
        )
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(
            status_of(b"HTTP/1.1 200 Connection established\r\n\r\n"),
            Some((200, "Connection established".into()))
        );
        assert_eq!(status_of(b"HTTP/1.0 403 Forbidden\r\n"), Some((403, "Forbidden".into())));
        assert_eq!(status_of(b"SSH-2.0-x\r\n"), None);
    }

    #[tokio::test]
    async fn a_tunnel_sends_connect_with_credentials_then_carries_bytes() {
        let (proxy, task) = fake_proxy("HTTP/1.1 200 Connection established\r\nX: y\r\n\r\n").await;
        let mut s = connect(&proxy, "manager.example", 7443).await.unwrap();
        s.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"hello");
        let head = task.await.unwrap();
        assert!(head.starts_with("CONNECT manager.example:7443 HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("Proxy-Authorization: Basic eDp5\r\n"), "{head}");
    }

    #[tokio::test]
    async fn a_refused_tunnel_names_the_proxy_and_status() {
        let (proxy, _task) = fake_proxy("HTTP/1.1 403 Forbidden\r\n\r\n").await;
        let e = connect(&proxy, "10.0.0.1", 443).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert!(e.to_string().contains("refused the tunnel to 10.0.0.1:443: 403 Forbidden"), "{e}");
    }
}
