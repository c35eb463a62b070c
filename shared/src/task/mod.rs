//! Task kinds and their parameters. A task's spec travels as `pb::TaskSpec` with
//! kind-specific parameters in JSON; this module turns that into typed values and
//! refuses anything malformed with an [`InvalidTaskSpec`] naming the field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::pb;
use crate::secret_ref;

/// Task kind names, shared by manager and delegate.
pub mod kind {
    /// Runs a bash script; exit code is the outcome.
    pub const SHELL: &str = "shell";
    /// Returns at once; for benchmarks and `dray delegate ping`.
    pub const NOOP: &str = "noop";
    /// Makes one HTTP request; any response is a success.
    pub const HTTP: &str = "http";
    /// Deploys to or runs commands on SSH hosts (see [`super::ssh`]).
    pub const SSH: &str = "ssh";
    /// Acts on a Kubernetes cluster (see [`super::k8s`]).
    pub const K8S: &str = "k8s";
    /// Acts on an Amazon ECS cluster (see [`super::ecs`]).
    pub const ECS: &str = "ecs";
    /// Deploys or shifts an AWS Lambda function (see [`super::lambda`]).
    pub const LAMBDA: &str = "lambda";
    /// Every kind this version knows.
    pub const ALL: &[&str] = &[SHELL, NOOP, HTTP, SSH, K8S, ECS, LAMBDA];
}

pub mod aws;
pub mod ecs;
pub mod k8s;
pub mod lambda;
pub mod ssh;

/// Output under which a deploy task reports the service instances it left
/// running: a JSON array of [`Instance`] objects. The manager takes it out of
/// the step's outputs and records it per service, environment and infrastructure.
pub const INSTANCES_OUTPUT: &str = "dray.instances";

/// One running instance of a deployed service (a pod, a host's process…).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// Name: pod name, host name.
    pub name: String,
    /// Where it runs: node, host address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// Namespace (Kubernetes) or empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// What runs: image, release directory, artifact version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Platform status (`Running`, `Ready`, `Pending`…).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// Free-form extras (colour, revision, track…).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
}

/// Output names an `http` task reports.
pub mod http_output {
    /// Status code, decimal (`"200"`).
    pub const CODE: &str = "httpResponseCode";
    /// Body, UTF-8 (lossy), at most [`super::HttpParams::max_body_bytes`].
    pub const BODY: &str = "httpResponseBody";
    /// Headers as a JSON object of name (lower case) to value; repeated headers
    /// are joined with `", "`.
    pub const HEADERS: &str = "httpResponseHeaders";
}

/// Most output variables one shell task may name.
pub const MAX_OUTPUT_VARS: usize = 128;
/// Shell variable names starting with this are reserved for the delegate's own
/// capture code.
pub const RESERVED_VAR_PREFIX: &str = "__dray";
/// Methods an `http` task may use.
pub const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
/// Response body kept by default for an `http` task.
pub const DEFAULT_HTTP_BODY_BYTES: u32 = 64 * 1024;
/// Largest `max_body_bytes` an `http` task may ask for (results travel in one
/// gRPC message and one table row).
pub const MAX_HTTP_BODY_BYTES: u32 = 1024 * 1024;

/// Parameters of a `shell` task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ShellParams {
    /// Bash script text. May contain secret references.
    pub script: String,
    /// Extra environment variables. Values may contain secret references.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory on the delegate host (default: a fresh temp dir).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Shell variables whose values, when the script ends (however it ends),
    /// become the task's outputs under the same names. A variable that is unset
    /// at the end is left out of the outputs (set but empty gives `""`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_vars: Vec<String>,
}

/// Parameters of an `http` task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpParams {
    /// One of [`HTTP_METHODS`]; any case on input, upper case once parsed.
    #[serde(default = "default_method")]
    pub method: String,
    /// `http://` or `https://` URL with a host and no user info. May contain
    /// secret references.
    pub url: String,
    /// Request headers. Values may contain secret references.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Request body. May contain secret references.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Response body bytes kept in the outputs (default
    /// [`DEFAULT_HTTP_BODY_BYTES`], at most [`MAX_HTTP_BODY_BYTES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u32>,
}

fn default_method() -> String {
    "GET".into()
}

impl HttpParams {
    /// A `GET` of `url` with no headers or body.
    pub fn get(url: &str) -> Self {
        HttpParams {
            method: default_method(),
            url: url.into(),
            headers: BTreeMap::new(),
            body: None,
            max_body_bytes: None,
        }
    }

    /// How many response body bytes to keep.
    pub fn body_limit(&self) -> usize {
        self.max_body_bytes.unwrap_or(DEFAULT_HTTP_BODY_BYTES) as usize
    }
}

/// Typed task parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskParams {
    /// See [`ShellParams`].
    Shell(ShellParams),
    /// No parameters.
    Noop,
    /// See [`HttpParams`].
    Http(HttpParams),
    /// See [`ssh::SshParams`].
    Ssh(Box<ssh::SshParams>),
    /// See [`k8s::K8sParams`].
    K8s(Box<k8s::K8sParams>),
    /// See [`ecs::EcsParams`].
    Ecs(Box<ecs::EcsParams>),
    /// See [`lambda::LambdaParams`].
    Lambda(Box<lambda::LambdaParams>),
}

/// Why a task spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTaskSpec {
    /// `kind` is not one this version knows.
    #[error("unknown task kind {0:?} (known: {known})", known = kind::ALL.join(", "))]
    UnknownKind(String),
    /// `params_json` does not fit the kind.
    #[error("invalid params for {kind} task: {reason}")]
    Params {
        /// The task kind.
        kind: String,
        /// What is wrong, from the JSON decoder.
        reason: String,
    },
    /// A field has a bad value.
    #[error("invalid {field}: {reason}")]
    Field {
        /// Field name.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A secret reference is malformed.
    #[error("in {field}: {source}")]
    SecretRef {
        /// Where the reference was found.
        field: String,
        /// The parse error.
        #[source]
        source: secret_ref::InvalidSecretRef,
    },
}

/// Parses and validates the kind-specific parameters of `spec`.
pub fn parse_params(spec: &pb::TaskSpec) -> Result<TaskParams, InvalidTaskSpec> {
    let params_json = if spec.params_json.trim().is_empty() { "{}" } else { &spec.params_json };
    let decode_error =
        |e: serde_json::Error| InvalidTaskSpec::Params { kind: spec.kind.clone(), reason: e.to_string() };
    match spec.kind.as_str() {
        kind::SHELL => {
            let p: ShellParams = serde_json::from_str(params_json).map_err(decode_error)?;
            validate_shell(&p)?;
            Ok(TaskParams::Shell(p))
        }
        kind::NOOP => Ok(TaskParams::Noop),
        kind::HTTP => {
            let mut p: HttpParams = serde_json::from_str(params_json).map_err(decode_error)?;
            validate_http(&mut p)?;
            Ok(TaskParams::Http(p))
        }
        kind::SSH => {
            let p: ssh::SshParams = serde_json::from_str(params_json).map_err(decode_error)?;
            p.validate()?;
            Ok(TaskParams::Ssh(Box::new(p)))
        }
        kind::K8S => {
            let p: k8s::K8sParams = serde_json::from_str(params_json).map_err(decode_error)?;
            p.validate()?;
            Ok(TaskParams::K8s(Box::new(p)))
        }
        kind::ECS => {
            let p: ecs::EcsParams = serde_json::from_str(params_json).map_err(decode_error)?;
            p.validate()?;
            Ok(TaskParams::Ecs(Box::new(p)))
        }
        kind::LAMBDA => {
            let p: lambda::LambdaParams = serde_json::from_str(params_json).map_err(decode_error)?;
            p.validate()?;
            Ok(TaskParams::Lambda(Box::new(p)))
        }
        other => Err(InvalidTaskSpec::UnknownKind(other.to_string())),
    }
}

pub(crate) fn field(field: &'static str, reason: impl Into<String>) -> InvalidTaskSpec {
    InvalidTaskSpec::Field { field, reason: reason.into() }
}

pub(crate) fn check_refs(field: impl Into<String>, text: &str) -> Result<(), InvalidTaskSpec> {
    secret_ref::find(text)
        .map(drop)
        .map_err(|source| InvalidTaskSpec::SecretRef { field: field.into(), source })
}

fn validate_shell(p: &ShellParams) -> Result<(), InvalidTaskSpec> {
    if p.script.trim().is_empty() {
        return Err(field("script", "must not be empty"));
    }
    check_refs("script", &p.script)?;
    for (k, v) in &p.env {
        if !is_env_name(k) {
            return Err(field("env", format!("{k:?} is not a valid environment variable name")));
        }
        check_refs(format!("env.{k}"), v)?;
    }
    if p.output_vars.len() > MAX_OUTPUT_VARS {
        return Err(field(
            "output_vars",
            format!("{} names; at most {MAX_OUTPUT_VARS}", p.output_vars.len()),
        ));
    }
    for (i, name) in p.output_vars.iter().enumerate() {
        if !is_env_name(name) {
            return Err(field("output_vars", format!("{name:?} is not a valid shell variable name")));
        }
        if name.starts_with(RESERVED_VAR_PREFIX) {
            return Err(field(
                "output_vars",
                format!("{name:?}: names starting with {RESERVED_VAR_PREFIX} are reserved"),
            ));
        }
        if p.output_vars[..i].contains(name) {
            return Err(field("output_vars", format!("{name:?} is listed twice")));
        }
    }
    // The delegate captures output variables through BASH_ENV.
    if !p.output_vars.is_empty() && p.env.contains_key("BASH_ENV") {
        return Err(field("env", "BASH_ENV cannot be set on a task with output_vars"));
    }
    Ok(())
}

/// `text` with every secret reference replaced by a harmless placeholder, to
/// check the syntax around references whose values only the delegate knows.
pub(crate) fn with_placeholders(field_name: &str, text: &str) -> Result<String, InvalidTaskSpec> {
    secret_ref::substitute(text, |_| Ok::<_, std::convert::Infallible>("x".to_string()))
        .map_err(|source| InvalidTaskSpec::SecretRef { field: field_name.to_string(), source })
        .map(|r| match r {
            Ok(s) => s,
            Err(never) => match never {},
        })
}

fn validate_http(p: &mut HttpParams) -> Result<(), InvalidTaskSpec> {
    let method = p.method.to_ascii_uppercase();
    if !HTTP_METHODS.contains(&method.as_str()) {
        return Err(field("method", format!("{:?} is not one of {}", p.method, HTTP_METHODS.join(", "))));
    }
    p.method = method;
    check_url(&with_placeholders("url", &p.url)?).map_err(|reason| field("url", reason))?;
    let mut seen: Vec<String> = Vec::with_capacity(p.headers.len());
    for (name, value) in &p.headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(field("headers", format!("{name:?} is not a valid header name")));
        }
        let lower = name.to_ascii_lowercase();
        if matches!(lower.as_str(), "content-length" | "transfer-encoding") {
            return Err(field("headers", format!("{name} is set by the delegate from the body")));
        }
        if seen.contains(&lower) {
            return Err(field("headers", format!("{name:?} is given twice (header names ignore case)")));
        }
        seen.push(lower);
        let value = with_placeholders(&format!("headers.{name}"), value)?;
        // from_bytes also admits UTF-8 (obs-text); it refuses CR, LF and other controls.
        if http::HeaderValue::from_bytes(value.as_bytes()).is_err() {
            return Err(field("headers", format!("the value of {name} contains control characters")));
        }
    }
    if let Some(body) = &p.body {
        check_refs("body", body)?;
    }
    if let Some(n) = p.max_body_bytes
        && !(1..=MAX_HTTP_BODY_BYTES).contains(&n)
    {
        return Err(field("max_body_bytes", format!("{n} is not between 1 and {MAX_HTTP_BODY_BYTES}")));
    }
    Ok(())
}

/// Checks that `url` is an absolute `http`/`https` URL with a host and without
/// user info (credentials belong in a header, where they can be a secret
/// reference and are masked). Returns what is wrong.
pub fn check_url(url: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url:?} is not a valid URL: {e}"))?;
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {}
        Some(s) => return Err(format!("scheme {s:?} is not http or https")),
        None => {
            return Err(format!("{url:?} is not absolute (expected http://HOST/... or https://HOST/...)"));
        }
    }
    let authority = uri.authority().ok_or_else(|| format!("{url:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err("user info in the URL is not supported; send credentials in a header".into());
    }
    if authority.host().is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    // With user info refused, the authority is the host and an optional port.
    let port = &authority.as_str()[authority.host().len()..];
    if !port.is_empty() && port.strip_prefix(':').and_then(|p| p.parse::<u16>().ok()).is_none() {
        return Err(format!("{url:?} has an invalid port"));
    }
    Ok(uri)
}

/// Validates a whole spec: kind, params, selectors and scope.
pub fn validate(spec: &pb::TaskSpec) -> Result<TaskParams, InvalidTaskSpec> {
    for s in &spec.selectors {
        if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c == ',') {
            return Err(InvalidTaskSpec::Field {
                field: "selectors",
                reason: format!("{s:?} is not a valid tag (no spaces or commas, not empty)"),
            });
        }
    }
    if let Some(scope) = &spec.scope
        && !scope.project.is_empty()
        && scope.org.is_empty()
    {
        return Err(InvalidTaskSpec::Field {
            field: "scope",
            reason: "a project needs an organisation".into(),
        });
    }
    const MAX_MS: u64 = 366 * 24 * 3600 * 1000;
    for (field, v) in [("timeout_ms", spec.timeout_ms), ("queue_timeout_ms", spec.queue_timeout_ms)] {
        if v > MAX_MS {
            return Err(InvalidTaskSpec::Field { field, reason: format!("{v} ms is more than a year") });
        }
    }
    if !spec.delegate_id.is_empty() {
        spec.delegate_id
            .parse::<crate::DelegateId>()
            .map_err(|e| InvalidTaskSpec::Field { field: "delegate_id", reason: e.to_string() })?;
    }
    parse_params(spec)
}

/// True for a POSIX-style environment variable name.
pub fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Builds a `shell` task spec.
pub fn shell_spec(script: &str, env: BTreeMap<String, String>) -> pb::TaskSpec {
    let params = ShellParams { script: script.to_string(), env, ..Default::default() };
    spec_with(kind::SHELL, &params)
}

/// Builds a `shell` task spec that reports `output_vars` as outputs.
pub fn shell_spec_with_outputs(
    script: &str,
    env: BTreeMap<String, String>,
    output_vars: &[&str],
) -> pb::TaskSpec {
    let params = ShellParams {
        script: script.to_string(),
        env,
        output_vars: output_vars.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    };
    spec_with(kind::SHELL, &params)
}

/// Builds an `http` task spec.
pub fn http_spec(params: &HttpParams) -> pb::TaskSpec {
    spec_with(kind::HTTP, params)
}

fn spec_with(kind: &str, params: &impl Serialize) -> pb::TaskSpec {
    pb::TaskSpec {
        kind: kind.into(),
        // Serialising plain structs of strings and maps cannot fail.
        params_json: serde_json::to_string(params).unwrap_or_default(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: &str, params: &str) -> pb::TaskSpec {
        pb::TaskSpec { kind: kind.into(), params_json: params.into(), ..Default::default() }
    }

    #[test]
    fn shell_params_parse() {
        let p = validate(&spec("shell", r#"{"script":"echo hi","env":{"A":"1"}}"#)).unwrap();
        let TaskParams::Shell(p) = p else { panic!("not shell") };
        assert_eq!(p.script, "echo hi");
        assert_eq!(p.env["A"], "1");
    }

    #[test]
    fn bad_specs_name_the_problem() {
        let e = validate(&spec("shel", "{}")).unwrap_err();
        assert!(e.to_string().contains("unknown task kind \"shel\""), "{e}");
        let e = validate(&spec("shell", r#"{"script":"x","stepz":1}"#)).unwrap_err();
        assert!(e.to_string().contains("unknown field `stepz`"), "{e}");
        let e = validate(&spec("shell", r#"{"script":"  "}"#)).unwrap_err();
        assert!(e.to_string().contains("script"), "{e}");
        let e = validate(&spec("shell", r#"{"script":"x","env":{"1A":"v"}}"#)).unwrap_err();
        assert!(e.to_string().contains("1A"), "{e}");
        let e = validate(&spec("shell", r#"{"script":"<+secrets.getValue(\"env:\")>"}"#)).unwrap_err();
        assert!(e.to_string().contains("in script"), "{e}");
        let mut s = spec("noop", "");
        s.selectors = vec!["a b".into()];
        assert!(validate(&s).is_err());
        let s = pb::TaskSpec { queue_timeout_ms: u64::MAX, ..spec("noop", "") };
        assert!(validate(&s).unwrap_err().to_string().contains("queue_timeout_ms"));
    }

    #[test]
    fn shell_output_vars_parse_and_are_checked() {
        let p = validate(&spec("shell", r#"{"script":"x=1","output_vars":["x","_Y2"]}"#)).unwrap();
        let TaskParams::Shell(p) = p else { panic!("not shell") };
        assert_eq!(p.output_vars, ["x", "_Y2"]);
        let p = validate(&shell_spec_with_outputs("true", BTreeMap::new(), &["A"])).unwrap();
        assert!(matches!(p, TaskParams::Shell(ShellParams { ref output_vars, .. }) if output_vars == &["A"]));
        // Omitted when empty, so older delegates keep parsing plain shell specs.
        assert!(!shell_spec("true", BTreeMap::new()).params_json.contains("output_vars"));

        for (params, needle) in [
            (r#"{"script":"x","output_vars":["a-b"]}"#, "\"a-b\" is not a valid shell variable name"),
            (r#"{"script":"x","output_vars":["1a"]}"#, "\"1a\""),
            (r#"{"script":"x","output_vars":[""]}"#, "output_vars"),
            (r#"{"script":"x","output_vars":["__dray_out"]}"#, "reserved"),
            (r#"{"script":"x","output_vars":["A","B","A"]}"#, "\"A\" is listed twice"),
            (r#"{"script":"x","output_vars":["A"],"env":{"BASH_ENV":"/x"}}"#, "BASH_ENV"),
            (r#"{"script":"x","output_vars":"A"}"#, "invalid type"),
        ] {
            let e = validate(&spec("shell", params)).unwrap_err().to_string();
            assert!(e.contains(needle), "{params}: {e}");
        }
        let many: Vec<String> = (0..=MAX_OUTPUT_VARS).map(|i| format!("V{i}")).collect();
        let e =
            validate(&spec("shell", &serde_json::json!({"script": "x", "output_vars": many}).to_string()))
                .unwrap_err();
        assert!(e.to_string().contains("at most"), "{e}");
        // BASH_ENV alone is the script's business.
        assert!(validate(&spec("shell", r#"{"script":"x","env":{"BASH_ENV":"/x"}}"#)).is_ok());
    }

    #[test]
    fn http_params_parse_and_normalise() {
        let p = validate(&spec(
            "http",
            r#"{"method":"post","url":"https://api.example.com:8443/v1/x?q=<+secrets.getValue(\"env:Q\")>",
                "headers":{"Authorization":"Bearer <+secrets.getValue(\"env:TOKEN\")>","X-Plain":"ok"},
                "body":"{\"pw\":\"<+secrets.getValue('file:/run/pw')>\"}","max_body_bytes":10}"#,
        ))
        .unwrap();
        let TaskParams::Http(p) = p else { panic!("not http") };
        assert_eq!(p.method, "POST", "method is upper-cased");
        assert_eq!(p.headers.len(), 2);
        assert_eq!(p.body_limit(), 10);
        let p = validate(&spec("http", r#"{"url":"http://localhost/"}"#)).unwrap();
        assert_eq!(p, TaskParams::Http(HttpParams::get("http://localhost/")));
        let TaskParams::Http(p) = p else { panic!("not http") };
        assert_eq!(p.body_limit(), DEFAULT_HTTP_BODY_BYTES as usize);
        // A secret reference may stand for the host.
        assert!(validate(&spec("http", r#"{"url":"https://<+secrets.getValue(\"env:HOST\")>/x"}"#)).is_ok());
        assert!(validate(&spec("http", r#"{"url":"http://[::1]:8080/x"}"#)).is_ok());
        assert!(validate(&spec("http", r#"{"url":"HTTPS://h"}"#)).is_ok());
        // Header values may be UTF-8.
        assert!(validate(&spec("http", r#"{"url":"http://h/","headers":{"X-Name":"clé"}}"#)).is_ok());
        let built = http_spec(&HttpParams::get("http://h/"));
        assert_eq!(built.kind, kind::HTTP);
        assert!(validate(&built).is_ok());
    }

    #[test]
    fn bad_http_params_name_the_field() {
        for (params, needle) in [
            (r#"{"url":"http://h/","method":"CONNECT"}"#, "invalid method: \"CONNECT\" is not one of GET"),
            (r#"{"url":"ftp://h/x"}"#, "invalid url: scheme \"ftp\""),
            (r#"{"url":"/relative"}"#, "invalid url: \"/relative\" is not absolute"),
            (r#"{"url":"http:///nohost"}"#, "invalid url"),
            (r#"{"url":"http://a b/"}"#, "invalid url"),
            (r#"{"url":"https://user:pw@h/"}"#, "user info"),
            (r#"{"url":"http://h:99999/"}"#, "invalid port"),
            (r#"{"url":"http://h:/"}"#, "invalid port"),
            (r#"{}"#, "missing field `url`"),
            (r#"{"url":"http://h/","headers":{"Bad Name":"v"}}"#, "\"Bad Name\" is not a valid header name"),
            (
                r#"{"url":"http://h/","headers":{"Content-Length":"3"}}"#,
                "Content-Length is set by the delegate",
            ),
            (r#"{"url":"http://h/","headers":{"X-A":"1","x-a":"2"}}"#, "given twice"),
            (r#"{"url":"http://h/","headers":{"X-A":"a\r\nX-Evil: 1"}}"#, "control characters"),
            (r#"{"url":"http://h/<+secrets.getValue(\"vault:x\")>"}"#, "in url: bad secret reference"),
            (r#"{"url":"http://h/","headers":{"X-A":"<+secrets.getValue(env:A)>"}}"#, "in headers.X-A"),
            (r#"{"url":"http://h/","body":"<+secrets.getValue(\"env:\")>"}"#, "in body"),
            (r#"{"url":"http://h/","max_body_bytes":0}"#, "invalid max_body_bytes"),
            (r#"{"url":"http://h/","max_body_bytes":1048577}"#, "invalid max_body_bytes"),
            (r#"{"url":"http://h/","timeout":1}"#, "unknown field `timeout`"),
        ] {
            let e = validate(&spec("http", params)).unwrap_err().to_string();
            assert!(e.contains(needle), "{params}: {e}");
        }
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("A_1"));
        assert!(is_env_name("_x"));
        assert!(!is_env_name(""));
        assert!(!is_env_name("A-B"));
    }
}
