//! The AWS targets: `ecs` (Amazon ECS services, canaries, blue-green and one-off
//! tasks) and `lambda` (AWS Lambda functions and alias traffic). This folder is
//! the only place in the delegate that imports the AWS SDK.
//!
//! - [`client`] builds the SDK configuration for one task: region, endpoint
//!   override, credentials (connector secret references resolved through the
//!   run context, else the delegate's default chain, optionally assuming a
//!   role) and an HTTP client on rustls/ring that honours the delegate's proxy
//!   settings.
//! - [`document`] reads the JSON/YAML definitions users write (camelCase, as
//!   AWS writes them), resolving secret references in string values, and names
//!   the field when something is wrong.
//! - [`ecs`] and [`lambda`] hold the actions.
//!
//! Failures carry an [`ErrorType`] a failure strategy can match: rejected keys
//! are `Authentication`, denied calls `Authorization`, unreachable endpoints
//! `Connectivity`, the step timeout `Timeout`, a failed rollout or a task
//! that exited non-zero `Verification`, anything else AWS refuses `Unknown`
//! with AWS's own error code and message.

pub mod client;
pub mod document;
pub mod ecs;
pub mod lambda;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ecs::config::http::HttpResponse;
use aws_sdk_ecs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use dray_shared::error_type::ErrorType;
use dray_shared::pb::{LogStream, TaskSpec};
use dray_shared::task::{self, TaskParams, kind};

use super::{CheckContext, Outcome, RunContext, Target};

/// Timeout of a task whose spec says 0.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// Runs `ecs` and `lambda` tasks.
#[derive(Debug, Default)]
pub struct Aws {
    /// How often progress is polled (default [`ecs::POLL_INTERVAL`]).
    pub poll: Option<Duration>,
}

/// Why an AWS action failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AwsError {
    /// Classification for failure strategies.
    pub error_type: ErrorType,
    /// What went wrong, with AWS's code and message when AWS answered.
    pub message: String,
}

impl AwsError {
    /// An error of type `Unknown`.
    pub fn other(message: impl Into<String>) -> Self {
        AwsError { error_type: ErrorType::Unknown, message: message.into() }
    }

    /// An error of type `t`.
    pub fn of(t: ErrorType, message: impl Into<String>) -> Self {
        AwsError { error_type: t, message: message.into() }
    }

    /// Classifies an SDK error from call `what` (e.g. `DescribeServices`).
    pub fn sdk<E>(what: &str, e: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        match &e {
            SdkError::ServiceError(s) => {
                let err = s.err();
                let code = err.code().unwrap_or("error");
                let msg = err.message().unwrap_or_default();
                AwsError { error_type: classify_code(code), message: format!("{what}: {code}: {msg}") }
            }
            SdkError::TimeoutError(_) => {
                AwsError::of(ErrorType::Timeout, format!("{what}: timed out: {}", DisplayErrorContext(&e)))
            }
            SdkError::DispatchFailure(d) if d.is_timeout() => {
                AwsError::of(ErrorType::Timeout, format!("{what}: timed out: {}", DisplayErrorContext(&e)))
            }
            // An answer that is not AWS's error format (a proxy's or a
            // gateway's page): its status and the start of its text.
            SdkError::ResponseError(r) => {
                let raw = r.raw();
                let body =
                    raw.body().bytes().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
                let text: String = strip_markup(&body).chars().take(300).collect();
                let status = raw.status().as_u16();
                let t = if status >= 500 { ErrorType::Unknown } else { classify_status(status) };
                AwsError::of(t, format!("{what}: HTTP {status} that is not an AWS answer: {text}"))
            }
            SdkError::DispatchFailure(d) if d.is_io() => AwsError::of(
                ErrorType::Connectivity,
                format!("{what}: cannot reach AWS: {}", DisplayErrorContext(&e)),
            ),
            _ => {
                let text = DisplayErrorContext(&e).to_string();
                // Identity resolution fails before anything is sent.
                let t = if text.contains("credentials") || text.contains("identity") {
                    ErrorType::Authentication
                } else if matches!(e, SdkError::DispatchFailure(_) | SdkError::ResponseError(_)) {
                    ErrorType::Connectivity
                } else {
                    ErrorType::Unknown
                };
                AwsError::of(t, format!("{what}: {text}"))
            }
        }
    }

    /// The failed outcome.
    pub fn outcome(self) -> Outcome {
        Outcome::failed_as(self.error_type, self.message)
    }
}

/// Error type of an HTTP status without an AWS error code.
fn classify_status(status: u16) -> ErrorType {
    match status {
        401 => ErrorType::Authentication,
        403 => ErrorType::Authorization,
        407 | 502 | 504 => ErrorType::Connectivity,
        _ => ErrorType::Unknown,
    }
}

/// `text` without HTML tags and with runs of white space folded.
fn strip_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if in_tag => {}
            _ => out.push(c),
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Error type of an AWS error code.
pub fn classify_code(code: &str) -> ErrorType {
    match code {
        "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "AuthFailure" => ErrorType::Authentication,
        "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" | "UnauthorizedException" => {
            ErrorType::Authorization
        }
        "RequestTimeout" | "RequestTimeoutException" => ErrorType::Timeout,
        _ => ErrorType::Unknown,
    }
}

/// What an action reports on success.
#[derive(Debug, Default)]
pub struct Done {
    /// Step outputs.
    pub outputs: BTreeMap<String, String>,
}

impl Done {
    /// Adds an output.
    pub fn with(mut self, k: &str, v: impl Into<String>) -> Self {
        self.outputs.insert(k.to_string(), v.into());
        self
    }
}

/// Adds a log line and sends it at once (actions log rarely and slowly).
pub async fn log(cx: &mut RunContext, line: impl AsRef<str>) {
    cx.logs.line(LogStream::Stdout, line.as_ref());
    cx.logs.flush().await;
}

/// The task's deadline from its spec.
pub fn timeout_of(spec: &TaskSpec) -> Duration {
    match spec.timeout_ms {
        0 => DEFAULT_TIMEOUT,
        ms => Duration::from_millis(ms),
    }
}

#[async_trait::async_trait]
impl Target for Aws {
    fn kinds(&self) -> &'static [&'static str] {
        &[kind::ECS, kind::LAMBDA]
    }

    async fn check(&self, spec: &TaskSpec, cx: &CheckContext) -> Result<(), String> {
        // Every reference must resolve here, or another delegate should take it.
        let check = |field: &'static str, text: Option<&String>| {
            let secrets = cx.secrets.clone();
            let text = text.cloned();
            async move {
                match text {
                    Some(t) => secrets.check_text(field, &t).await.map_err(|e| e.to_string()),
                    None => Ok(()),
                }
            }
        };
        let (aws, docs): (_, Vec<(&'static str, String)>) = match task::parse_params(spec) {
            Ok(TaskParams::Ecs(p)) => {
                let docs = ecs::documents(&p.action);
                (p.aws, docs)
            }
            Ok(TaskParams::Lambda(p)) => {
                let mut docs = vec![("functionDefinition", p.function_definition.clone())];
                if let dray_shared::task::lambda::LambdaAction::TrafficShift(t) = &p.action
                    && let Some(c) = &t.check_payload
                {
                    docs.push(("checkPayload", c.clone()));
                }
                if let dray_shared::task::lambda::LambdaAction::Deploy(d) = &p.action
                    && let dray_shared::task::lambda::Artifact::Url { url, .. } = &d.artifact
                {
                    docs.push(("artifact.url", url.clone()));
                }
                (p.aws, docs)
            }
            Ok(_) => return Err(format!("task kind {:?} is not an AWS task", spec.kind)),
            Err(e) => return Err(e.to_string()),
        };
        check("aws.endpoint", aws.endpoint.as_ref()).await?;
        check("aws.accessKeyId", aws.access_key_id.as_ref()).await?;
        check("aws.secretAccessKey", aws.secret_access_key.as_ref()).await?;
        check("aws.sessionToken", aws.session_token.as_ref()).await?;
        check("aws.externalId", aws.external_id.as_ref()).await?;
        for (field, text) in &docs {
            check(field, Some(text)).await?;
        }
        Ok(())
    }

    async fn run(&self, spec: TaskSpec, mut cx: RunContext) -> Outcome {
        let params = match task::parse_params(&spec) {
            Ok(p) => p,
            Err(e) => return Outcome::failed(e.to_string()),
        };
        let timeout = timeout_of(&spec);
        let poll = self.poll.unwrap_or(ecs::POLL_INTERVAL);
        let mut stop = cx.stop.clone();
        let work = async {
            match params {
                TaskParams::Ecs(p) => ecs::run(*p, &mut cx, poll).await,
                TaskParams::Lambda(p) => lambda::run(*p, &mut cx).await,
                _ => Err(AwsError::other(format!("task kind {:?} is not an AWS task", spec.kind))),
            }
        };
        let result = tokio::select! {
            reason = stop.stopped() => return Outcome::stopped(reason),
            r = tokio::time::timeout(timeout, work) => r,
        };
        let outcome = match result {
            Err(_) => AwsError::of(
                ErrorType::Timeout,
                format!("timed out after {}", humantime::format_duration(timeout)),
            )
            .outcome(),
            Ok(Err(e)) => e.outcome(),
            Ok(Ok(done)) => Outcome::succeeded().with_outputs(done.outputs),
        };
        if !outcome.success {
            cx.logs.line(LogStream::Stderr, &format!("failed: {}", outcome.message));
        }
        cx.logs.flush().await;
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_map_to_types() {
        assert_eq!(classify_code("UnrecognizedClientException"), ErrorType::Authentication);
        assert_eq!(classify_code("AccessDeniedException"), ErrorType::Authorization);
        assert_eq!(classify_code("ClusterNotFoundException"), ErrorType::Unknown);
        assert_eq!(classify_status(403), ErrorType::Authorization);
        assert_eq!(classify_status(407), ErrorType::Connectivity);
    }

    #[test]
    fn markup_is_stripped_from_foreign_answers() {
        let page = "<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n<h1>Oops</h1>";
        assert_eq!(strip_markup(page), "500 Internal Server Error Oops");
    }
}
