//! The function's code zip: an S3 object Lambda fetches itself, or bytes the
//! delegate reads from its file system or downloads over HTTP(S) with its own
//! client (rustls/ring, system roots, through the delegate's proxy), checked
//! against an expected SHA-256 when one is given.

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::FunctionCode;
use dray_shared::task::lambda::Artifact;
use std::path::Path;

use crate::targets::aws::{AwsError, log};
use crate::targets::{RunContext, artifact};

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

/// Fetches the artifact.
pub async fn fetch(a: &Artifact, cx: &mut RunContext) -> Result<Code, AwsError> {
    match a {
        Artifact::S3 { bucket, key, object_version } => {
            log(cx, format!("code from s3://{bucket}/{key}")).await;
            Ok(Code::S3 { bucket: bucket.clone(), key: key.clone(), version: object_version.clone() })
        }
        Artifact::File { path, sha256 } => {
            let local = artifact::local(Path::new(path), sha256.as_deref()).await.map_err(failure)?;
            let bytes = zip_bytes(&local, path).await?;
            log(cx, format!("code from {path} ({} bytes, sha256 {})", bytes.len(), local.sha256)).await;
            Ok(Code::Zip(bytes))
        }
        Artifact::Url { url, sha256 } => {
            let resolved =
                cx.substitute("artifact.url", url).await.map_err(|e| AwsError::other(e.to_string()))?;
            // The URL as written in messages: a resolved secret in it would be masked anyway.
            let local =
                artifact::download(&resolved, url, sha256.as_deref(), "code.zip").await.map_err(failure)?;
            let bytes = zip_bytes(&local, url).await?;
            log(cx, format!("code from {url} ({} bytes, sha256 {})", bytes.len(), local.sha256)).await;
            Ok(Code::Zip(bytes))
        }
    }
}

/// The zip's bytes, if small enough for a direct upload.
async fn zip_bytes(local: &artifact::Local, shown: &str) -> Result<Vec<u8>, AwsError> {
    if local.bytes > MAX_ZIP_BYTES as u64 {
        return Err(AwsError::other(format!("artifact {shown}: larger than 50 MiB; use S3")));
    }
    tokio::fs::read(&local.path).await.map_err(|e| AwsError::other(format!("artifact {shown}: {e}")))
}

/// An artifact failure as this target reports failures.
fn failure(f: artifact::Failure) -> AwsError {
    AwsError::of(f.error_type, f.message)
}
