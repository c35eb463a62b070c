//! A `lambda` task: deploy an AWS Lambda function and point an alias at the new
//! version, shift the alias's traffic to it in weighted steps, or roll the
//! alias back. Executed by the delegate's AWS target.
//!
//! The function definition travels as the text the user wrote (JSON or YAML,
//! camelCase fields as AWS writes them: `functionName`, `runtime`, `handler`,
//! `role`, `memorySize`, `timeout`, `environment`…).

use serde::{Deserialize, Serialize};

use super::aws::{AwsConnection, check_name};
use super::{InvalidTaskSpec, check_refs, check_url, field, with_placeholders};

/// Function tag naming the execution whose deploy published the last version.
pub const TAG_DEPLOY_EXECUTION: &str = "dray:deploy-execution";
/// Function tag: the version that deploy published.
pub const TAG_DEPLOYED_VERSION: &str = "dray:deployed-version";
/// Function tag: the version the alias pointed at before (`none` if the
/// alias or function was new).
pub const TAG_PREVIOUS_VERSION: &str = "dray:previous-version";
/// Most steps in one traffic shift.
pub const MAX_TRAFFIC_STEPS: usize = 20;

/// Output names of `lambda` tasks.
pub mod output {
    /// Function name.
    pub const FUNCTION_NAME: &str = "functionName";
    /// Function ARN (unqualified).
    pub const FUNCTION_ARN: &str = "functionArn";
    /// Version published by the deploy.
    pub const VERSION: &str = "version";
    /// Version the alias pointed at before the deploy (`none` if new).
    pub const PREVIOUS_VERSION: &str = "previousVersion";
    /// Alias name.
    pub const ALIAS: &str = "alias";
    /// Weight of the new version on the alias after the step, 0–100.
    pub const WEIGHT: &str = "weight";
    /// `true` when a rollback found something of this execution to undo.
    pub const ROLLED_BACK: &str = "rolledBack";
}

/// Parameters of a `lambda` task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LambdaParams {
    /// Region, endpoint and credentials.
    pub aws: AwsConnection,
    /// The pipeline execution, recorded on the function by the deploy so that
    /// traffic shift and rollback act only on this execution's version.
    #[serde(default)]
    pub execution_id: String,
    /// Function definition, JSON or YAML.
    pub function_definition: String,
    /// Alias the steps move (e.g. `live`).
    pub alias: String,
    /// What to do.
    pub action: LambdaAction,
}

/// One Lambda action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum LambdaAction {
    /// Create or update code and configuration, publish a version, and point
    /// the alias at it (unless `route_traffic` is false: then a traffic shift
    /// moves the alias later).
    Deploy(Deploy),
    /// Weighted alias routing to the version this execution deployed.
    TrafficShift(TrafficShift),
    /// Alias back to the version recorded by this execution's deploy.
    Rollback,
}

/// A deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Deploy {
    /// Where the code zip comes from.
    pub artifact: Artifact,
    /// Point the alias at the new version at once (default true).
    #[serde(default = "yes")]
    pub route_traffic: bool,
}

fn yes() -> bool {
    true
}

/// The function's code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum Artifact {
    /// A zip in S3 (Lambda fetches it itself).
    S3 {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Object version.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        object_version: Option<String>,
    },
    /// A zip the delegate downloads (through its proxy) and uploads.
    Url {
        /// `http(s)://` URL; may hold secret references.
        url: String,
        /// Expected SHA-256, hex.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
    },
    /// A zip on the delegate's file system.
    File {
        /// Absolute path.
        path: String,
        /// Expected SHA-256, hex.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
    },
}

/// A traffic shift: each step sets the new version's weight, then waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficShift {
    /// Steps, weights increasing; 100 moves the alias wholly to the new version.
    pub steps: Vec<TrafficStep>,
    /// Optional check after each step's wait: invoke the alias with this
    /// payload; a function error or a failed invoke sends all traffic back to
    /// the previous version and fails the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_payload: Option<String>,
}

/// One traffic step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficStep {
    /// Percent of traffic to the new version, 1–100.
    pub weight: u8,
    /// Wait after setting it, in milliseconds.
    #[serde(default)]
    pub wait_ms: u64,
}

impl LambdaParams {
    /// Checks what the schema cannot.
    pub fn validate(&self) -> Result<(), InvalidTaskSpec> {
        self.aws.validate()?;
        if !self.execution_id.is_empty() {
            check_name("execution_id", &self.execution_id, 128)?;
        }
        if self.function_definition.trim().is_empty() {
            return Err(field("functionDefinition", "must not be empty"));
        }
        check_refs("functionDefinition", &self.function_definition)?;
        check_alias(&self.alias)?;
        match &self.action {
            LambdaAction::Deploy(d) => check_artifact(&d.artifact),
            LambdaAction::TrafficShift(t) => check_steps(t),
            LambdaAction::Rollback => Ok(()),
        }
    }
}

fn check_alias(alias: &str) -> Result<(), InvalidTaskSpec> {
    check_name("alias", alias, 128)?;
    // A purely numeric alias would be taken for a version.
    if alias.chars().all(|c| c.is_ascii_digit()) {
        return Err(field("alias", format!("{alias:?} looks like a version number")));
    }
    Ok(())
}

fn check_artifact(a: &Artifact) -> Result<(), InvalidTaskSpec> {
    let sha = match a {
        Artifact::S3 { bucket, key, .. } => {
            if bucket.trim().is_empty() {
                return Err(field("artifact.s3.bucket", "must not be empty"));
            }
            if key.trim().is_empty() {
                return Err(field("artifact.s3.key", "must not be empty"));
            }
            None
        }
        Artifact::Url { url, sha256 } => {
            check_url(&with_placeholders("artifact.url.url", url)?)
                .map_err(|r| field("artifact.url.url", r))?;
            sha256.as_ref()
        }
        Artifact::File { path, sha256 } => {
            if !path.starts_with('/') {
                return Err(field("artifact.file.path", format!("{path:?} is not an absolute path")));
            }
            sha256.as_ref()
        }
    };
    if let Some(s) = sha
        && (s.len() != 64 || !s.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(field("artifact.sha256", format!("{s:?} is not 64 hex digits")));
    }
    Ok(())
}

fn check_steps(t: &TrafficShift) -> Result<(), InvalidTaskSpec> {
    if t.steps.is_empty() {
        return Err(field("action.trafficShift.steps", "needs at least one step"));
    }
    if t.steps.len() > MAX_TRAFFIC_STEPS {
        return Err(field("action.trafficShift.steps", format!("at most {MAX_TRAFFIC_STEPS} steps")));
    }
    let mut last = 0u8;
    for (i, s) in t.steps.iter().enumerate() {
        if !(1..=100).contains(&s.weight) {
            return Err(field(
                "action.trafficShift.steps",
                format!("[{i}].weight {} is not 1 to 100", s.weight),
            ));
        }
        if s.weight <= last {
            return Err(field(
                "action.trafficShift.steps",
                format!("[{i}].weight {} does not increase on {last}", s.weight),
            ));
        }
        last = s.weight;
    }
    if let Some(p) = &t.check_payload {
        check_refs("action.trafficShift.checkPayload", p)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;
    use crate::task::{TaskParams, kind, validate};
    use serde_json::json;

    fn spec(action: serde_json::Value) -> pb::TaskSpec {
        let params = json!({
            "aws": {"region": "eu-west-1", "endpoint": "http://127.0.0.1:5000"},
            "executionId": "e1", "functionDefinition": "functionName: hello", "alias": "live",
            "action": action,
        });
        pb::TaskSpec { kind: kind::LAMBDA.into(), params_json: params.to_string(), ..Default::default() }
    }

    #[test]
    fn lambda_params_parse() {
        let p = validate(&spec(json!({"deploy": {"artifact": {"s3": {"bucket": "b", "key": "k.zip"}}}})))
            .unwrap();
        let TaskParams::Lambda(p) = p else { panic!("not lambda") };
        assert!(matches!(p.action, LambdaAction::Deploy(Deploy { route_traffic: true, .. })));
        let p = validate(&spec(
            json!({"trafficShift": {"steps": [{"weight": 10, "waitMs": 1000}, {"weight": 100}]}}),
        ))
        .unwrap();
        let TaskParams::Lambda(p) = p else { panic!("not lambda") };
        let LambdaAction::TrafficShift(t) = p.action else { panic!("not a shift") };
        assert_eq!(t.steps[1], TrafficStep { weight: 100, wait_ms: 0 });
        assert!(validate(&spec(json!("rollback"))).is_ok());
        let sha = "a".repeat(64);
        assert!(
            validate(&spec(
                json!({"deploy": {"artifact": {"url": {"url": "https://h/f.zip", "sha256": sha}}}})
            ))
            .is_ok()
        );
    }

    #[test]
    fn bad_lambda_params_name_the_field() {
        for (action, needle) in [
            (json!({"deploy": {"artifact": {"s3": {"bucket": "", "key": "k"}}}}), "artifact.s3.bucket"),
            (json!({"deploy": {"artifact": {"url": {"url": "ftp://x"}}}}), "artifact.url.url"),
            (json!({"deploy": {"artifact": {"file": {"path": "rel.zip"}}}}), "artifact.file.path"),
            (
                json!({"deploy": {"artifact": {"file": {"path": "/a.zip", "sha256": "xyz"}}}}),
                "artifact.sha256",
            ),
            (json!({"deploy": {}}), "missing field `artifact`"),
            (json!({"trafficShift": {"steps": []}}), "at least one step"),
            (
                json!({"trafficShift": {"steps": [{"weight": 50}, {"weight": 50}]}}),
                "[1].weight 50 does not increase",
            ),
            (json!({"trafficShift": {"steps": [{"weight": 0}]}}), "[0].weight 0 is not 1 to 100"),
            (json!({"trafficShift": {"steps": [{"weight": 101}]}}), "is not 1 to 100"),
            (json!("undeploy"), "unknown variant"),
        ] {
            let e = validate(&spec(action.clone())).unwrap_err().to_string();
            assert!(e.contains(needle), "{action}: {e}");
        }
        let mut s = spec(json!("rollback"));
        s.params_json = s.params_json.replace("\"live\"", "\"12\"");
        assert!(validate(&s).unwrap_err().to_string().contains("looks like a version"));
    }
}
