//! AWS Lambda step types. Each turns its spec and the stage's target (the
//! service's `AwsLambdaFunctionDefinition` manifest, its primary artifact, the
//! `AwsLambda` infrastructure's region and the `Aws` connector) into one
//! `lambda` task for a delegate.
//!
//! Artifacts: `AmazonS3`/`S3` (`bucketName`/`bucket` and `filePath`/`key`),
//! `Http`/`Url` (`url`, optional `sha256`), `File` (`path`, optional `sha256`).

use std::sync::Arc;

use dray_shared::task::kind;
use serde_json::{Value, json};

use super::ecs::{aws_connection, manifest};
use super::{Registry, StartContext, StepError, StepStart, StepType};

/// Manifest type of a Lambda function definition.
pub const FUNCTION_DEFINITION_MANIFEST: &str = "AwsLambdaFunctionDefinition";
/// Alias moved when a step does not name one.
pub const DEFAULT_ALIAS: &str = "live";

/// Registers the Lambda step types.
pub fn register(r: &mut Registry) {
    for a in [Action::Deploy, Action::TrafficShift, Action::Rollback] {
        r.register(Arc::new(LambdaStep(a)));
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Deploy,
    TrafficShift,
    Rollback,
}

struct LambdaStep(Action);

fn str_of<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|k| v.get(*k).and_then(Value::as_str).filter(|s| !s.is_empty()))
}

/// The `artifact` of a deploy task from the stage's primary artifact.
fn artifact(target: &Value) -> Result<Value, StepError> {
    let a = &target["artifact"];
    let ty = a.get("type").and_then(Value::as_str).unwrap_or("");
    let need = |keys: &[&str]| {
        str_of(a, keys).ok_or_else(|| StepError(format!("the {ty} artifact needs {}", keys.join(" or "))))
    };
    let with_sha = |mut v: Value, key: &str| {
        if let Some(s) = str_of(a, &["sha256"]) {
            v[key]["sha256"] = json!(s);
        }
        v
    };
    match ty {
        "AmazonS3" | "S3" => {
            let mut v = json!({"s3": {"bucket": need(&["bucketName", "bucket"])?, "key": need(&["filePath", "key"])?}});
            if let Some(ver) = str_of(a, &["objectVersion"]) {
                v["s3"]["objectVersion"] = json!(ver);
            }
            Ok(v)
        }
        "Http" | "Url" => Ok(with_sha(json!({"url": {"url": need(&["url"])?}}), "url")),
        "File" => Ok(with_sha(json!({"file": {"path": need(&["path"])?}}), "file")),
        "" => Err(StepError("AwsLambdaDeploy needs the service's primary artifact (the code zip)".into())),
        other => Err(StepError(format!("artifact type {other} is not AmazonS3, S3, Http, Url or File"))),
    }
}

fn steps(spec: &Value) -> Result<Value, StepError> {
    let items = spec
        .get("steps")
        .and_then(Value::as_array)
        .ok_or_else(|| StepError("spec.steps is required (a list of {weight, wait})".into()))?;
    let mut out = Vec::new();
    for (i, s) in items.iter().enumerate() {
        let weight = s
            .get("weight")
            .and_then(Value::as_u64)
            .ok_or_else(|| StepError(format!("spec.steps[{i}].weight is required")))?;
        let wait_ms = match s.get("wait").and_then(Value::as_str) {
            None => 0,
            Some(w) => humantime::parse_duration(w.trim())
                .map_err(|e| StepError(format!("spec.steps[{i}].wait: {w:?} is not a duration: {e}")))?
                .as_millis() as u64,
        };
        out.push(json!({"weight": weight, "waitMs": wait_ms}));
    }
    Ok(Value::Array(out))
}

impl StepType for LambdaStep {
    fn uses_target(&self) -> bool {
        true
    }

    fn type_name(&self) -> &'static str {
        match self.0 {
            Action::Deploy => "AwsLambdaDeploy",
            Action::TrafficShift => "AwsLambdaTrafficShift",
            Action::Rollback => "AwsLambdaRollback",
        }
    }

    fn start(&self, spec: &Value, cx: &StartContext<'_>) -> Result<StepStart, StepError> {
        let target = cx.require_target(self.type_name())?;
        let aws = aws_connection(target)?;
        let function = manifest(target, FUNCTION_DEFINITION_MANIFEST)?;
        let alias = str_of(spec, &["alias"]).unwrap_or(DEFAULT_ALIAS);
        let action = match self.0 {
            Action::Deploy => json!({"deploy": {
                "artifact": artifact(target)?,
                "routeTraffic": spec.get("routeTraffic").and_then(Value::as_bool).unwrap_or(true),
            }}),
            Action::TrafficShift => {
                let mut t = json!({"steps": steps(spec)?});
                if let Some(p) = str_of(spec, &["checkPayload"]) {
                    t["checkPayload"] = json!(p);
                }
                json!({ "trafficShift": t })
            }
            Action::Rollback => json!("rollback"),
        };
        Ok(StepStart::Task {
            kind: kind::LAMBDA.into(),
            params: json!({
                "aws": aws, "executionId": cx.execution_id, "functionDefinition": function,
                "alias": alias, "action": action,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dray_shared::task::TaskParams;
    use dray_shared::task::lambda::{Artifact, LambdaAction, LambdaParams, TrafficStep};

    fn target(artifact: Value) -> Value {
        json!({
            "service": {"identifier": "hello", "manifests": [{"manifest": {"identifier": "fn",
                "type": "AwsLambdaFunctionDefinition", "spec": {"content": "functionName: hello"}}}]},
            "artifact": artifact,
            "infra": {"region": "us-east-1"},
            "connector": {"identifier": "aws", "type": "Aws"},
        })
    }

    fn start(ty: &str, spec: Value, t: &Value) -> Result<LambdaParams, StepError> {
        let mut r = Registry::default();
        register(&mut r);
        let cx = StartContext { target: Some(t), execution_id: "e1", ..StartContext::EMPTY };
        let StepStart::Task { kind, params } = r.get(ty).unwrap().start(&spec, &cx)? else { panic!() };
        let task = dray_shared::pb::TaskSpec { kind, params_json: params.to_string(), ..Default::default() };
        match dray_shared::task::validate(&task).map_err(|e| StepError(e.to_string()))? {
            TaskParams::Lambda(p) => Ok(*p),
            _ => panic!("not lambda"),
        }
    }

    #[test]
    fn steps_become_valid_lambda_tasks() {
        let s3 = target(json!({"type": "AmazonS3", "bucketName": "code", "filePath": "hello.zip"}));
        let p = start("AwsLambdaDeploy", json!({}), &s3).unwrap();
        assert_eq!(p.alias, DEFAULT_ALIAS);
        let LambdaAction::Deploy(d) = p.action else { panic!() };
        assert_eq!(
            d.artifact,
            Artifact::S3 { bucket: "code".into(), key: "hello.zip".into(), object_version: None }
        );
        let url = target(json!({"type": "Http", "url": "http://h/f.zip", "sha256": "a".repeat(64)}));
        let p = start("AwsLambdaDeploy", json!({"alias": "prod", "routeTraffic": false}), &url).unwrap();
        assert!(
            matches!(p.action, LambdaAction::Deploy(d) if !d.route_traffic && matches!(d.artifact, Artifact::Url { sha256: Some(_), .. }))
        );
        let p = start(
            "AwsLambdaTrafficShift",
            json!({"steps": [{"weight": 10, "wait": "2s"}, {"weight": 100}]}),
            &s3,
        )
        .unwrap();
        let LambdaAction::TrafficShift(t) = p.action else { panic!() };
        assert_eq!(
            t.steps,
            vec![TrafficStep { weight: 10, wait_ms: 2000 }, TrafficStep { weight: 100, wait_ms: 0 }]
        );
        assert!(matches!(start("AwsLambdaRollback", json!({}), &s3).unwrap().action, LambdaAction::Rollback));
    }

    #[test]
    fn bad_specs_are_named() {
        let s3 = target(json!({"type": "AmazonS3", "bucketName": "code"}));
        assert_eq!(
            start("AwsLambdaDeploy", json!({}), &s3).unwrap_err().0,
            "the AmazonS3 artifact needs filePath or key"
        );
        let none = target(json!({}));
        assert!(start("AwsLambdaDeploy", json!({}), &none).unwrap_err().0.contains("primary artifact"));
        let e = start("AwsLambdaTrafficShift", json!({"steps": [{"weight": 10, "wait": "soon"}]}), &none)
            .unwrap_err();
        assert!(e.0.contains("spec.steps[0].wait"), "{e}");
        let e = start("AwsLambdaTrafficShift", json!({"steps": [{"weight": 60}, {"weight": 50}]}), &none)
            .unwrap_err();
        assert!(e.0.contains("does not increase"), "{e}");
    }
}
