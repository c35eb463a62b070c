//! What can go wrong talking to a cluster, and the error type each failure
//! carries so failure strategies can match it:
//!
//! | failure | error type |
//! |---|---|
//! | HTTP 401 from the API server | `Authentication` |
//! | HTTP 403 | `Authorization` |
//! | connect, TLS, broken connection | `Connectivity` |
//! | the step timeout ran out (e.g. waiting for a rollout) | `Timeout` |
//! | a rollout the cluster reports failed (`Progressing=False`, e.g. `ProgressDeadlineExceeded`) | `Verification` |
//! | anything else (409 conflict, 404 not found, bad manifests…) | `Unknown` |
//!
//! API errors keep the server's own message and reason.

use dray_shared::error_type::ErrorType;

use crate::link::error_chain;

/// A failure of a `k8s` task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum K8sError {
    /// The API server answered with an error status.
    #[error("{what}: {message} ({reason}, HTTP {code})")]
    Api {
        /// What was being done (`apply Deployment web/app`).
        what: String,
        /// HTTP status.
        code: u16,
        /// The server's reason (`Forbidden`, `Conflict`…).
        reason: String,
        /// The server's message.
        message: String,
    },
    /// The API server could not be reached.
    #[error("{what}: cannot reach the API server: {detail}")]
    Connect {
        /// What was being done.
        what: String,
        /// The transport error.
        detail: String,
    },
    /// The cluster connection settings are unusable.
    #[error("cluster connection: {0}")]
    Config(String),
    /// A manifest or values file is missing or malformed.
    #[error("{0}")]
    Manifest(String),
    /// A rollout the cluster reports as failed.
    #[error("{0}")]
    RolloutFailed(String),
    /// The step's time ran out.
    #[error("{0}")]
    TimedOut(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl K8sError {
    /// The error type a failure strategy matches.
    pub fn error_type(&self) -> ErrorType {
        match self {
            K8sError::Api { code: 401, .. } => ErrorType::Authentication,
            K8sError::Api { code: 403, .. } => ErrorType::Authorization,
            K8sError::Connect { .. } => ErrorType::Connectivity,
            K8sError::TimedOut(_) => ErrorType::Timeout,
            K8sError::RolloutFailed(_) => ErrorType::Verification,
            _ => ErrorType::Unknown,
        }
    }

    /// True for an HTTP 404 from the API server.
    pub fn is_not_found(&self) -> bool {
        matches!(self, K8sError::Api { code: 404, .. })
    }

    /// Classifies a kube client error met while doing `what`.
    pub fn from_kube(what: impl Into<String>, e: kube::Error) -> Self {
        let what = what.into();
        match e {
            kube::Error::Api(s) => {
                let reason = if s.reason.is_empty() { "Unknown".to_string() } else { s.reason.clone() };
                let message =
                    if s.message.is_empty() { format!("HTTP {}", s.code) } else { s.message.clone() };
                K8sError::Api { what, code: s.code, reason, message }
            }
            kube::Error::HyperError(e) => K8sError::Connect { what, detail: error_chain(&e) },
            kube::Error::Service(e) => K8sError::Connect { what, detail: error_chain(e.as_ref()) },
            kube::Error::ReadEvents(e) => K8sError::Connect { what, detail: e.to_string() },
            other => K8sError::Other(format!("{what}: {}", error_chain(&other))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(&format!("server says {code}"), reason).with_code(code).boxed(),
        )
    }

    #[test]
    fn api_statuses_map_to_error_types_and_keep_the_server_message() {
        let cases = [
            (401, "Unauthorized", ErrorType::Authentication),
            (403, "Forbidden", ErrorType::Authorization),
            (404, "NotFound", ErrorType::Unknown),
            (409, "Conflict", ErrorType::Unknown),
        ];
        for (code, reason, want) in cases {
            let e = K8sError::from_kube("apply Deployment web/app", api(code, reason));
            assert_eq!(e.error_type(), want, "{code}");
            assert_eq!(
                e.to_string(),
                format!("apply Deployment web/app: server says {code} ({reason}, HTTP {code})")
            );
        }
        assert!(K8sError::from_kube("get", api(404, "NotFound")).is_not_found());
        assert_eq!(K8sError::TimedOut("t".into()).error_type(), ErrorType::Timeout);
        assert_eq!(K8sError::RolloutFailed("r".into()).error_type(), ErrorType::Verification);
        let e = K8sError::from_kube("list", kube::Error::Service("connection refused".into()));
        assert_eq!(e.error_type(), ErrorType::Connectivity);
    }
}
