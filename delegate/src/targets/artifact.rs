//! Artifacts on the delegate, for every target that ships one: a local file, or
//! an HTTP(S) download (through the delegate's proxy settings) streamed to a
//! private temp file. Either way its SHA-256 is computed as it is read and
//! checked when the task gives one; a mismatch is a `Verification` failure.
//! Never held in memory whole.

use std::path::{Path, PathBuf};

use dray_shared::error_type::ErrorType;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::link::error_chain;
use crate::proxy;
use crate::targets::http::shared_client;

/// Why an artifact could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What failure strategies match.
    pub error_type: ErrorType,
    /// What happened, naming the artifact (never a secret: URLs are shown masked).
    pub message: String,
}

impl Failure {
    fn new(error_type: ErrorType, message: impl Into<String>) -> Self {
        Failure { error_type, message: message.into() }
    }
}

/// A fetched (and, when a checksum was given, verified) artifact.
#[derive(Debug)]
pub struct Local {
    /// Where it is.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// Keeps a downloaded file alive (and removes it on drop).
    _dir: Option<tempfile::TempDir>,
}

/// The hex digest, checked against `expected` when there is one.
fn check(expected: Option<&str>, actual: &[u8], what: &str) -> Result<String, Failure> {
    let actual = hex::encode(actual);
    match expected {
        None => Ok(actual),
        Some(e) if actual.eq_ignore_ascii_case(e) => Ok(actual),
        Some(expected) => Err(Failure::new(
            ErrorType::Verification,
            format!("artifact {what}: sha256 is {actual}, expected {}", expected.to_ascii_lowercase()),
        )),
    }
}

/// Hashes the file at `path` and checks it against `sha256` if given.
pub async fn local(path: &Path, sha256: Option<&str>) -> Result<Local, Failure> {
    let fail = |e: std::io::Error| {
        Failure::new(
            ErrorType::Unknown,
            format!("artifact {}: cannot read it on the delegate: {e}", path.display()),
        )
    };
    let mut f = tokio::fs::File::open(path).await.map_err(fail)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).await.map_err(fail)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    let sha256 = check(sha256, &hasher.finalize(), &path.display().to_string())?;
    Ok(Local { path: path.to_path_buf(), bytes, sha256, _dir: None })
}

/// Downloads `url` (secrets already resolved; `shown` is the masked form for
/// messages) to a temp file named `name`, hashing as it streams.
pub async fn download(url: &str, shown: &str, sha256: Option<&str>, name: &str) -> Result<Local, Failure> {
    let uri: http::Uri =
        url.parse().map_err(|e| Failure::new(ErrorType::Unknown, format!("artifact url {shown}: {e}")))?;
    let mut request = http::Request::get(uri.clone());
    if let Some(auth) = proxy::global().absolute_form_authorization(&uri) {
        request = request.header(http::header::PROXY_AUTHORIZATION, auth);
    }
    let request = request
        .body(Full::new(Bytes::new()))
        .map_err(|e| Failure::new(ErrorType::Unknown, format!("artifact url {shown}: {e}")))?;
    let response = shared_client().request(request).await.map_err(|e| {
        Failure::new(
            ErrorType::Connectivity,
            format!("downloading the artifact from {shown}: {}", error_chain(&e)),
        )
    })?;
    if !response.status().is_success() {
        return Err(Failure::new(
            ErrorType::Unknown,
            format!("downloading the artifact from {shown}: HTTP {}", response.status()),
        ));
    }
    let io = |e: std::io::Error| {
        Failure::new(ErrorType::Unknown, format!("saving the artifact on the delegate: {e}"))
    };
    let dir = tempfile::Builder::new().prefix("dray-artifact-").tempdir().map_err(io)?;
    let path = dir.path().join(name);
    let mut file = tokio::fs::File::create(&path).await.map_err(io)?;
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            Failure::new(
                ErrorType::Connectivity,
                format!("downloading the artifact from {shown}: {}", error_chain(&e)),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            hasher.update(&data);
            bytes += data.len() as u64;
            file.write_all(&data).await.map_err(io)?;
        }
    }
    file.flush().await.map_err(io)?;
    let sha256 = check(sha256, &hasher.finalize(), shown)?;
    Ok(Local { path, bytes, sha256, _dir: Some(dir) })
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::routing::get;

    use super::*;

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    #[tokio::test]
    async fn local_files_are_hashed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("app.bin");
        std::fs::write(&f, b"payload").unwrap();
        let ok = local(&f, Some(&sha(b"payload").to_uppercase())).await.unwrap();
        assert_eq!((ok.bytes, ok.sha256.as_str()), (7, sha(b"payload").as_str()));
        let unchecked = local(&f, None).await.unwrap();
        assert_eq!(unchecked.sha256, sha(b"payload"), "no checksum given: computed, not checked");
        let bad = local(&f, Some(&sha(b"other"))).await.unwrap_err();
        assert_eq!(bad.error_type, ErrorType::Verification);
        assert!(bad.message.contains(&sha(b"payload")), "{}", bad.message);
        let missing = local(&dir.path().join("nope"), None).await.unwrap_err();
        assert!(missing.message.contains("cannot read it on the delegate"), "{}", missing.message);
    }

    #[tokio::test]
    async fn downloads_stream_to_a_temp_file_and_are_checked() {
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let served = big.clone();
        let app = Router::new()
            .route("/app.tar.gz", get(move || async move { served.clone() }))
            .route("/missing", get(|| async { (axum::http::StatusCode::NOT_FOUND, "no") }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = format!("http://{addr}/app.tar.gz");

        let got = download(&url, &url, Some(&sha(&big)), "app.tar.gz").await.unwrap();
        assert_eq!(got.bytes, big.len() as u64);
        assert_eq!(std::fs::read(&got.path).unwrap(), big);
        let path = got.path.clone();
        drop(got);
        assert!(!path.exists(), "the temp file goes with the artifact");

        let e = download(&url, &url, Some(&sha(b"x")), "a").await.unwrap_err();
        assert_eq!(e.error_type, ErrorType::Verification);
        let e = download(&format!("http://{addr}/missing"), "shown", None, "a").await.unwrap_err();
        assert_eq!(e.message, "downloading the artifact from shown: HTTP 404 Not Found");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = download(&format!("http://127.0.0.1:{port}/a"), "u", None, "a").await.unwrap_err();
        assert_eq!(e.error_type, ErrorType::Connectivity);
    }
}
