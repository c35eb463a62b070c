//! The function's code zip: an S3 object Lambda fetches itself, or bytes the
//! delegate reads from its file system or downloads over HTTP(S) with its own
//! client (rustls/ring, system roots, through the delegate's proxy), checked
//! against an expected SHA-256 when one is given.

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::FunctionCode;
use dray_shared::error_type::ErrorType;
use dray_shared::task::lambda::Artifact;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use sha2::{Digest as _, Sha256};

use crate::targets::RunContext;
use crate::targets::aws::{AwsError, log};

/// Largest zip uploaded directly (Lambda's limit for a direct upload).
pub const MAX_ZIP_BYTES: usize = 50 * 1024 * 1024;

/// Where the code is, once fetched.
#[derive(Debug, Clone)]
pub enum Code {
    /// In S3.
    S3 {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Object version.
        version: Option<String>,
    },
    /// Zip bytes.
    Zip(Vec<u8>),
}

impl Code {
    /// CreateFunction's `Code`.
    pub fn function_code(&self) -> FunctionCode {
        match self {
            Code::S3 { bucket, key, version } => FunctionCode::builder()
                .s3_bucket(bucket)
                .s3_key(key)
                .set_s3_object_version(version.clone())
                .build(),
            Code::Zip(b) => FunctionCode::builder().zip_file(Blob::new(b.clone())).build(),
        }
    }
}

/// Checks `bytes` against `expected` (hex).
pub fn check_sha256(bytes: &[u8], expected: Option<&str>) -> Result<String, AwsError> {
    let got = hex::encode(Sha256::digest(bytes));
    match expected {
        Some(e) if !e.eq_ignore_ascii_case(&got) => Err(AwsError::of(
            ErrorType::Verification,
            format!("artifact sha256 is {got}, expected {}", e.to_ascii_lowercase()),
        )),
        _ => Ok(got),
    }
}

/// Fetches the artifact.
pub async fn fetch(a: &Artifact, cx: &mut RunContext) -> Result<Code, AwsError> {
    match a {
        Artifact::S3 { bucket, key, object_version } => {
            log(cx, format!("code from s3://{bucket}/{key}")).await;
            Ok(Code::S3 { bucket: bucket.clone(), key: key.clone(), version: object_version.clone() })
        }
        Artifact::File { path, sha256 } => {
            let bytes =
                tokio::fs::read(path).await.map_err(|e| AwsError::other(format!("artifact {path}: {e}")))?;
            if bytes.len() > MAX_ZIP_BYTES {
                return Err(AwsError::other(format!("artifact {path}: larger than 50 MiB; use S3")));
            }
            let sum = check_sha256(&bytes, sha256.as_deref())?;
            log(cx, format!("code from {path} ({} bytes, sha256 {sum})", bytes.len())).await;
            Ok(Code::Zip(bytes))
        }
        Artifact::Url { url, sha256 } => {
            let resolved =
                cx.substitute("artifact.url", url).await.map_err(|e| AwsError::other(e.to_string()))?;
            let bytes = download(&resolved).await?;
            let sum = check_sha256(&bytes, sha256.as_deref())?;
            // The URL as written: a resolved secret in it would be masked anyway.
            log(cx, format!("code from {url} ({} bytes, sha256 {sum})", bytes.len())).await;
            Ok(Code::Zip(bytes))
        }
    }
}

async fn download(url: &str) -> Result<Vec<u8>, AwsError> {
    let uri = dray_shared::task::check_url(url).map_err(|e| AwsError::other(format!("artifact url: {e}")))?;
    let mut req = http::Request::get(uri.clone());
    if uri.scheme_str() == Some("http")
        && let Some(p) = crate::proxy::global().for_target(
            false,
            uri.host().unwrap_or_default(),
            uri.port_u16().unwrap_or(80),
        )
        && let Some(auth) = &p.authorization
    {
        req = req.header(http::header::PROXY_AUTHORIZATION, auth);
    }
    let req = req.body(Full::new(Bytes::new())).map_err(|e| AwsError::other(format!("artifact url: {e}")))?;
    let client = crate::targets::http::build_client();
    let resp = client
        .request(req)
        .await
        .map_err(|e| AwsError::of(ErrorType::Connectivity, format!("downloading the artifact: {e}")))?;
    if !resp.status().is_success() {
        return Err(AwsError::other(format!("downloading the artifact: HTTP {}", resp.status())));
    }
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| AwsError::of(ErrorType::Connectivity, format!("downloading the artifact: {e}")))?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() > MAX_ZIP_BYTES {
                return Err(AwsError::other("artifact larger than 50 MiB; use S3"));
            }
        }
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_is_checked() {
        let sum = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        assert_eq!(check_sha256(b"hello", Some(sum)).unwrap(), sum);
        assert_eq!(check_sha256(b"hello", Some(&sum.to_ascii_uppercase())).unwrap(), sum);
        let e = check_sha256(b"hellO", Some(sum)).unwrap_err();
        assert_eq!(e.error_type, ErrorType::Verification);
        assert!(e.message.contains("expected 2cf24d"), "{e}");
    }

    #[tokio::test]
    async fn downloads_through_the_delegate_client() {
        let app = axum::Router::new().route("/f.zip", axum::routing::get(|| async { "PK-zip" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        assert_eq!(download(&format!("http://{addr}/f.zip")).await.unwrap(), b"PK-zip");
        let e = download(&format!("http://{addr}/missing.zip")).await.unwrap_err();
        assert!(e.message.contains("HTTP 404"), "{e}");
    }
}
