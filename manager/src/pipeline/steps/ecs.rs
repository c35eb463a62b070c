//! Amazon ECS step types. Each turns its spec and the stage's target (the ECS
//! service's task and service definition manifests, the `ECS` infrastructure's
//! cluster and region, the `Aws` connector) into one `ecs` task for a delegate.
//! Secret references in the connector and the manifests stay references: the
//! delegate resolves them.
//!
//! The connector (`type: Aws`) spec: `region`, `endpoint` (an endpoint
//! override), `credential: {type: ManualConfig | InheritFromDelegate, spec:
//! {accessKeyId, secretAccessKey, sessionToken}, crossAccountAccess:
//! {crossAccountRoleArn, externalId}}`. The infrastructure's `region` wins over
//! the connector's.

use std::sync::Arc;

use dray_shared::task::kind;
use serde_json::{Value, json};

use super::{Registry, StartContext, StepError, StepStart, StepType};

/// Manifest type of an ECS task definition.
pub const TASK_DEFINITION_MANIFEST: &str = "EcsTaskDefinition";
/// Manifest type of an ECS service definition.
pub const SERVICE_DEFINITION_MANIFEST: &str = "EcsServiceDefinition";
/// Manifest type of a RunTask request.
pub const RUN_TASK_REQUEST_MANIFEST: &str = "EcsRunTaskRequestDefinition";

/// Registers the ECS step types.
pub fn register(r: &mut Registry) {
    for action in [
        Action::RollingDeploy,
        Action::RollingRollback,
        Action::CanaryDeploy,
        Action::CanaryDelete,
        Action::BlueGreenCreate,
        Action::BlueGreenSwap,
        Action::BlueGreenRollback,
        Action::RunTask,
    ] {
        r.register(Arc::new(EcsStep(action)));
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    RollingDeploy,
    RollingRollback,
    CanaryDeploy,
    CanaryDelete,
    BlueGreenCreate,
    BlueGreenSwap,
    BlueGreenRollback,
    RunTask,
}

/// One ECS step type.
struct EcsStep(Action);

/// The `aws` connection of a task from the stage's target: region (the
/// infrastructure's, else the connector's), endpoint and credential references.
pub(crate) fn aws_connection(target: &Value) -> Result<Value, StepError> {
    let connector = &target["connector"];
    if connector.get("type").and_then(Value::as_str).is_some_and(|t| t != "Aws") {
        return Err(StepError(format!(
            "connector {}: type {} is not Aws",
            connector["identifier"].as_str().unwrap_or("?"),
            connector["type"]
        )));
    }
    let region = target["infra"]
        .get("region")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
        .or_else(|| connector.get("region").and_then(Value::as_str))
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            StepError("no AWS region: set region on the infrastructure or the Aws connector".into())
        })?;
    let mut aws = json!({ "region": region });
    if let Some(e) = connector.get("endpoint").and_then(Value::as_str).filter(|e| !e.is_empty()) {
        aws["endpoint"] = json!(e);
    }
    let credential = &connector["credential"];
    let manual = credential.get("type").and_then(Value::as_str) == Some("ManualConfig");
    if manual {
        for (from, to) in [
            ("accessKeyId", "accessKeyId"),
            ("secretAccessKey", "secretAccessKey"),
            ("sessionToken", "sessionToken"),
        ] {
            if let Some(v) = credential["spec"].get(from).and_then(Value::as_str).filter(|v| !v.is_empty()) {
                aws[to] = json!(v);
            }
        }
    }
    let cross = &credential["crossAccountAccess"];
    if let Some(role) = cross.get("crossAccountRoleArn").and_then(Value::as_str).filter(|v| !v.is_empty()) {
        aws["roleArn"] = json!(role);
        if let Some(x) = cross.get("externalId").and_then(Value::as_str).filter(|v| !v.is_empty()) {
            aws["externalId"] = json!(x);
        }
    }
    Ok(aws)
}

/// The text of a manifest: inline `content`, or Harness's
/// `store: {type: Inline, spec: {content}}`.
pub(crate) fn manifest_text(m: &Value) -> Option<&str> {
    let spec = &m["spec"];
    spec.get("content")
        .and_then(Value::as_str)
        .or_else(|| spec.pointer("/store/spec/content").and_then(Value::as_str))
}

/// The content of the service's manifest of type `ty`.
pub(crate) fn manifest(target: &Value, ty: &str) -> Result<String, StepError> {
    let manifests = target.pointer("/service/manifests").and_then(Value::as_array).into_iter().flatten();
    let found: Vec<&Value> = manifests
        .map(|m| m.get("manifest").unwrap_or(m))
        .filter(|m| m["type"].as_str() == Some(ty))
        .collect();
    match found.as_slice() {
        [one] => manifest_text(one).map(str::to_string).ok_or_else(|| {
            StepError(format!(
                "manifest {}: only inline manifests are supported (spec.content or spec.store.spec.content)",
                one["identifier"].as_str().unwrap_or("?")
            ))
        }),
        [] => Err(StepError(format!(
            "service {} has no {ty} manifest",
            target.pointer("/service/identifier").and_then(Value::as_str).unwrap_or("?")
        ))),
        _ => Err(StepError(format!("the service has {} {ty} manifests; exactly one is needed", found.len()))),
    }
}

fn str_opt<'a>(spec: &'a Value, field: &str) -> Option<&'a str> {
    spec.get(field).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn routes(spec: &Value) -> Result<Value, StepError> {
    let need = |f: &str| str_opt(spec, f).ok_or_else(|| StepError(format!("spec.{f} is required")));
    let mut r =
        json!({ "prodListenerArn": need("prodListener")?, "stageListenerArn": need("stageListener")? });
    if let Some(v) = str_opt(spec, "prodListenerRuleArn") {
        r["prodListenerRuleArn"] = json!(v);
    }
    if let Some(v) = str_opt(spec, "stageListenerRuleArn") {
        r["stageListenerRuleArn"] = json!(v);
    }
    Ok(r)
}

/// A definition given in the step spec (inline text or `{spec: {content}}`),
/// else the service's manifest of type `ty`.
fn step_or_service_text(spec: &Value, field: &str, target: &Value, ty: &str) -> Result<String, StepError> {
    match spec.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v @ Value::Object(_)) => manifest_text(v).map(str::to_string).ok_or_else(|| {
            StepError(format!("spec.{field}: expected spec.content or spec.store.spec.content"))
        }),
        _ => manifest(target, ty),
    }
}

impl StepType for EcsStep {
    fn uses_target(&self) -> bool {
        true
    }

    fn type_name(&self) -> &'static str {
        match self.0 {
            Action::RollingDeploy => "EcsRollingDeploy",
            Action::RollingRollback => "EcsRollingRollback",
            Action::CanaryDeploy => "EcsCanaryDeploy",
            Action::CanaryDelete => "EcsCanaryDelete",
            Action::BlueGreenCreate => "EcsBlueGreenCreateService",
            Action::BlueGreenSwap => "EcsBlueGreenSwapTargetGroups",
            Action::BlueGreenRollback => "EcsBlueGreenRollback",
            Action::RunTask => "EcsRunTask",
        }
    }

    fn start(&self, spec: &Value, cx: &StartContext<'_>) -> Result<StepStart, StepError> {
        let target = cx.require_target(self.type_name())?;
        let aws = aws_connection(target)?;
        let cluster = target["infra"]
            .get("cluster")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| StepError("the ECS infrastructure has no cluster".into()))?;
        let deploy = || -> Result<Value, StepError> {
            Ok(json!({
                "taskDefinition": manifest(target, TASK_DEFINITION_MANIFEST)?,
                "serviceDefinition": manifest(target, SERVICE_DEFINITION_MANIFEST)?,
                "forceNewDeployment": spec.get("forceNewDeployment").and_then(Value::as_bool).unwrap_or(false),
            }))
        };
        let service_ref = || -> Result<Value, StepError> {
            Ok(json!({ "serviceDefinition": manifest(target, SERVICE_DEFINITION_MANIFEST)? }))
        };
        let swap = || -> Result<Value, StepError> {
            Ok(json!({
                "serviceDefinition": manifest(target, SERVICE_DEFINITION_MANIFEST)?,
                "routes": routes(spec)?,
                "downsizeOldService": !spec.get("doNotDownsizeOldService").and_then(Value::as_bool).unwrap_or(false),
            }))
        };
        let action = match self.0 {
            Action::RollingDeploy => json!({ "rollingDeploy": deploy()? }),
            Action::RollingRollback => json!({ "rollingRollback": service_ref()? }),
            Action::CanaryDeploy => {
                let count = spec.get("desiredCount").and_then(Value::as_u64).unwrap_or(1);
                json!({ "canaryDeploy": { "deploy": deploy()?, "desiredCount": count } })
            }
            Action::CanaryDelete => json!({ "canaryDelete": service_ref()? }),
            Action::BlueGreenCreate => {
                json!({ "blueGreenCreate": { "deploy": deploy()?, "routes": routes(spec)? } })
            }
            Action::BlueGreenSwap => json!({ "blueGreenSwap": swap()? }),
            Action::BlueGreenRollback => json!({ "blueGreenRollback": swap()? }),
            Action::RunTask => json!({ "runTask": {
                "taskDefinition": step_or_service_text(spec, "taskDefinition", target, TASK_DEFINITION_MANIFEST)?,
                "runTaskRequest": match spec.get("runTaskRequestDefinition") {
                    None | Some(Value::Null) => String::new(),
                    Some(_) => step_or_service_text(spec, "runTaskRequestDefinition", target, RUN_TASK_REQUEST_MANIFEST)?,
                },
                "skipWait": spec.get("skipSteadyStateCheck").and_then(Value::as_bool).unwrap_or(false),
            }}),
        };
        Ok(StepStart::Task {
            kind: kind::ECS.into(),
            params: json!({ "aws": aws, "cluster": cluster, "executionId": cx.execution_id, "action": action }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dray_shared::task::{TaskParams, ecs::EcsAction};

    fn target() -> Value {
        json!({
            "service": {"identifier": "web", "manifests": [
                {"manifest": {"identifier": "td", "type": "EcsTaskDefinition", "spec": {"content": "family: web"}}},
                {"manifest": {"identifier": "sd", "type": "EcsServiceDefinition",
                              "spec": {"store": {"type": "Inline", "spec": {"content": "serviceName: web"}}}}},
            ]},
            "infra": {"cluster": "prod", "region": "eu-west-1"},
            "connector": {"identifier": "aws", "type": "Aws", "region": "us-east-1", "endpoint": "http://127.0.0.1:5000",
                          "credential": {"type": "ManualConfig", "spec": {
                              "accessKeyId": "<+secrets.getValue(\"env:AK\")>",
                              "secretAccessKey": "<+secrets.getValue(\"env:SK\")>"},
                              "crossAccountAccess": {"crossAccountRoleArn": "arn:aws:iam::1:role/deploy"}}},
        })
    }

    fn start(ty: &str, spec: Value, target: &Value) -> Result<dray_shared::task::ecs::EcsParams, StepError> {
        let mut r = Registry::default();
        register(&mut r);
        let cx = StartContext { target: Some(target), execution_id: "exec-1", ..StartContext::EMPTY };
        let StepStart::Task { kind, params } = r.get(ty).unwrap().start(&spec, &cx)? else {
            panic!("not a task")
        };
        let task = dray_shared::pb::TaskSpec { kind, params_json: params.to_string(), ..Default::default() };
        match dray_shared::task::validate(&task).map_err(|e| StepError(e.to_string()))? {
            TaskParams::Ecs(p) => Ok(*p),
            _ => panic!("not ecs"),
        }
    }

    #[test]
    fn steps_become_valid_ecs_tasks() {
        let p = start("EcsRollingDeploy", json!({}), &target()).unwrap();
        assert_eq!(p.cluster, "prod");
        assert_eq!(p.aws.region, "eu-west-1", "the infrastructure's region wins");
        assert_eq!(p.aws.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(p.aws.access_key_id.as_deref(), Some("<+secrets.getValue(\"env:AK\")>"));
        assert_eq!(p.aws.role_arn.as_deref(), Some("arn:aws:iam::1:role/deploy"));
        assert_eq!(p.execution_id, "exec-1");
        let EcsAction::RollingDeploy(d) = p.action else { panic!() };
        assert_eq!(
            (d.task_definition.as_str(), d.service_definition.as_str()),
            ("family: web", "serviceName: web")
        );

        let p = start("EcsCanaryDeploy", json!({"desiredCount": 2}), &target()).unwrap();
        assert!(matches!(p.action, EcsAction::CanaryDeploy(c) if c.desired_count == 2));
        let routes =
            json!({"prodListener": "arn:p", "prodListenerRuleArn": "arn:pr", "stageListener": "arn:s"});
        let p = start("EcsBlueGreenSwapTargetGroups", routes.clone(), &target()).unwrap();
        let EcsAction::BlueGreenSwap(s) = p.action else { panic!() };
        assert_eq!(s.routes.prod_listener_rule_arn.as_deref(), Some("arn:pr"));
        assert!(s.downsize_old_service, "Harness downsizes unless told not to");
        let p = start(
            "EcsRunTask",
            json!({"taskDefinition": {"type": "Inline", "spec": {"content": "family: job"}},
                                          "skipSteadyStateCheck": true}),
            &target(),
        )
        .unwrap();
        assert!(
            matches!(p.action, EcsAction::RunTask(r) if r.task_definition == "family: job" && r.skip_wait)
        );
        for ty in ["EcsRollingRollback", "EcsCanaryDelete"] {
            assert!(start(ty, json!({}), &target()).is_ok(), "{ty}");
        }
    }

    #[test]
    fn missing_pieces_are_named() {
        let mut t = target();
        t["service"]["manifests"] = json!([]);
        let e = start("EcsRollingDeploy", json!({}), &t).unwrap_err();
        assert_eq!(e.0, "service web has no EcsTaskDefinition manifest");
        let mut t = target();
        t["infra"] = json!({});
        t["connector"]["region"] = json!("");
        assert!(start("EcsRollingDeploy", json!({}), &t).unwrap_err().0.contains("no AWS region"));
        t["infra"]["region"] = json!("us-east-2");
        assert!(start("EcsRollingDeploy", json!({}), &t).unwrap_err().0.contains("no cluster"));
        let mut t = target();
        t["connector"]["type"] = json!("K8sCluster");
        assert!(start("EcsRollingDeploy", json!({}), &t).unwrap_err().0.contains("is not Aws"));
        let e = start("EcsBlueGreenCreateService", json!({"prodListener": "arn:p"}), &target()).unwrap_err();
        assert_eq!(e.0, "spec.stageListener is required");
        let mut r = Registry::default();
        register(&mut r);
        let e = r.get("EcsRollingDeploy").unwrap().start(&json!({}), &StartContext::EMPTY).unwrap_err();
        assert!(e.0.contains("Deployment stage"), "{e}");
    }
}
