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
    /// Every kind this version knows.
    pub const ALL: &[&str] = &[SHELL, NOOP];
}

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
}

/// Typed task parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskParams {
    /// See [`ShellParams`].
    Shell(ShellParams),
    /// No parameters.
    Noop,
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
    match spec.kind.as_str() {
        kind::SHELL => {
            let p: ShellParams = serde_json::from_str(params_json)
                .map_err(|e| InvalidTaskSpec::Params { kind: spec.kind.clone(), reason: e.to_string() })?;
            if p.script.trim().is_empty() {
                return Err(InvalidTaskSpec::Field { field: "script", reason: "must not be empty".into() });
            }
            secret_ref::find(&p.script)
                .map_err(|source| InvalidTaskSpec::SecretRef { field: "script".into(), source })?;
            for (k, v) in &p.env {
                if !is_env_name(k) {
                    return Err(InvalidTaskSpec::Field {
                        field: "env",
                        reason: format!("{k:?} is not a valid environment variable name"),
                    });
                }
                secret_ref::find(v)
                    .map_err(|source| InvalidTaskSpec::SecretRef { field: format!("env.{k}"), source })?;
            }
            Ok(TaskParams::Shell(p))
        }
        kind::NOOP => Ok(TaskParams::Noop),
        other => Err(InvalidTaskSpec::UnknownKind(other.to_string())),
    }
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
    let params = ShellParams { script: script.to_string(), env, workdir: None };
    pb::TaskSpec {
        kind: kind::SHELL.into(),
        params_json: serde_json::to_string(&params).unwrap_or_default(),
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
    fn env_names() {
        assert!(is_env_name("A_1"));
        assert!(is_env_name("_x"));
        assert!(!is_env_name(""));
        assert!(!is_env_name("A-B"));
    }
}
