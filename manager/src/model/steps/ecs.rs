//! Validation of the ECS step specs and the `ECS` (also spelled `Ecs`)
//! infrastructure spec.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::{SpecRules, StepTypes, Typed};
use crate::model::validate::is_dynamic;

/// Registers the ECS step validators.
pub fn register(t: &mut StepTypes) {
    t.register(Arc::new(Typed::<DeploySpec>::new("EcsRollingDeploy")));
    t.register(Arc::new(Typed::<EmptySpec>::new("EcsRollingRollback")));
    t.register(Arc::new(Typed::<CanarySpec>::new("EcsCanaryDeploy")));
    t.register(Arc::new(Typed::<EmptySpec>::new("EcsCanaryDelete")));
    t.register(Arc::new(Typed::<BlueGreenSpec>::new("EcsBlueGreenCreateService")));
    t.register(Arc::new(Typed::<SwapSpec>::new("EcsBlueGreenSwapTargetGroups")));
    t.register(Arc::new(Typed::<SwapSpec>::new("EcsBlueGreenRollback")));
    t.register(Arc::new(Typed::<RunTaskSpec>::new("EcsRunTask")));
}

/// A spec with no fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmptySpec {}

impl SpecRules for EmptySpec {
    fn rules(&self) -> Vec<(String, String)> {
        vec![]
    }
}

/// `EcsRollingDeploy` spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeploySpec {
    /// Start a new deployment even if nothing changed.
    #[serde(default)]
    pub force_new_deployment: Option<bool>,
}

impl SpecRules for DeploySpec {
    fn rules(&self) -> Vec<(String, String)> {
        vec![]
    }
}

/// `EcsCanaryDeploy` spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CanarySpec {
    /// Tasks of the canary service (default 1).
    #[serde(default)]
    pub desired_count: Option<u32>,
    /// Start a new deployment even if nothing changed.
    #[serde(default)]
    pub force_new_deployment: Option<bool>,
}

impl SpecRules for CanarySpec {
    fn rules(&self) -> Vec<(String, String)> {
        match self.desired_count {
            Some(0) => vec![("desiredCount".into(), "must be at least 1".into())],
            _ => vec![],
        }
    }
}

fn arn_rules(fields: &[(&str, Option<&String>)]) -> Vec<(String, String)> {
    fields
        .iter()
        .filter_map(|(name, v)| {
            let v = (*v)?;
            (!v.starts_with("arn:") && !is_dynamic(v))
                .then(|| (name.to_string(), format!("{v:?} is not an ARN")))
        })
        .collect()
}

/// `EcsBlueGreenCreateService` spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BlueGreenSpec {
    /// Load balancer ARN (informational).
    #[serde(default)]
    pub load_balancer: Option<String>,
    /// Production listener ARN.
    pub prod_listener: String,
    /// Production listener rule ARN (else the listener's default action).
    #[serde(default)]
    pub prod_listener_rule_arn: Option<String>,
    /// Stage listener ARN.
    pub stage_listener: String,
    /// Stage listener rule ARN (else the listener's default action).
    #[serde(default)]
    pub stage_listener_rule_arn: Option<String>,
    /// Start a new deployment even if nothing changed.
    #[serde(default)]
    pub force_new_deployment: Option<bool>,
}

impl SpecRules for BlueGreenSpec {
    fn rules(&self) -> Vec<(String, String)> {
        arn_rules(&[
            ("loadBalancer", self.load_balancer.as_ref()),
            ("prodListener", Some(&self.prod_listener)),
            ("prodListenerRuleArn", self.prod_listener_rule_arn.as_ref()),
            ("stageListener", Some(&self.stage_listener)),
            ("stageListenerRuleArn", self.stage_listener_rule_arn.as_ref()),
        ])
    }
}

/// `EcsBlueGreenSwapTargetGroups` and `EcsBlueGreenRollback` spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SwapSpec {
    /// Load balancer ARN (informational).
    #[serde(default)]
    pub load_balancer: Option<String>,
    /// Production listener ARN.
    pub prod_listener: String,
    /// Production listener rule ARN.
    #[serde(default)]
    pub prod_listener_rule_arn: Option<String>,
    /// Stage listener ARN.
    pub stage_listener: String,
    /// Stage listener rule ARN.
    #[serde(default)]
    pub stage_listener_rule_arn: Option<String>,
    /// Keep the old service's tasks after the swap (default: scale it to 0).
    #[serde(default)]
    pub do_not_downsize_old_service: Option<bool>,
}

impl SpecRules for SwapSpec {
    fn rules(&self) -> Vec<(String, String)> {
        arn_rules(&[
            ("loadBalancer", self.load_balancer.as_ref()),
            ("prodListener", Some(&self.prod_listener)),
            ("prodListenerRuleArn", self.prod_listener_rule_arn.as_ref()),
            ("stageListener", Some(&self.stage_listener)),
            ("stageListenerRuleArn", self.stage_listener_rule_arn.as_ref()),
        ])
    }
}

/// `EcsRunTask` spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunTaskSpec {
    /// Task definition: inline text or `{type: Inline, spec: {content}}`
    /// (default: the service's `EcsTaskDefinition` manifest).
    #[serde(default)]
    pub task_definition: Option<Json>,
    /// RunTask request fields, the same way.
    #[serde(default)]
    pub run_task_request_definition: Option<Json>,
    /// Succeed once the task started.
    #[serde(default)]
    pub skip_steady_state_check: Option<bool>,
}

impl SpecRules for RunTaskSpec {
    fn rules(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, v) in [
            ("taskDefinition", &self.task_definition),
            ("runTaskRequestDefinition", &self.run_task_request_definition),
        ] {
            match v {
                None | Some(Json::String(_)) => {}
                Some(Json::Object(m)) => {
                    let spec = m.get("spec");
                    let has = spec.and_then(|s| s.get("content")).is_some_and(Json::is_string)
                        || spec.and_then(|s| s.pointer("/store/spec/content")).is_some_and(Json::is_string);
                    if !has {
                        out.push((format!("{name}.spec.content"), "inline content is required".into()));
                    }
                }
                Some(_) => {
                    out.push((name.into(), "must be text or {type: Inline, spec: {content: …}}".into()))
                }
            }
        }
        out
    }
}

/// Problems in the `spec` of an infrastructure of type `infra_type`, as
/// (path within the spec, message); `None` when ECS does not own that type.
pub fn infrastructure_rules(
    infra_type: &str,
    spec: &serde_json::Map<String, Json>,
) -> Option<Vec<(String, String)>> {
    if infra_type != "ECS" && infra_type != "Ecs" {
        return None;
    }
    Some(aws_infrastructure(spec, &["connectorRef", "cluster", "region"], &["connectorRef", "cluster"]))
}

/// Checks an AWS infrastructure spec: only `allowed` keys, `required` ones
/// present, every value a string, `region` shaped like a region.
pub(crate) fn aws_infrastructure(
    spec: &serde_json::Map<String, Json>,
    allowed: &[&str],
    required: &[&str],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in spec {
        if !allowed.contains(&k.as_str()) {
            out.push((k.clone(), format!("unknown field; known: {}", allowed.join(", "))));
        } else if !v.is_string() {
            out.push((k.clone(), "must be a string".into()));
        }
    }
    for k in required {
        match spec.get(*k).and_then(Json::as_str) {
            Some(s) if !s.trim().is_empty() => {}
            Some(_) => out.push((k.to_string(), "must not be empty".into())),
            None if !spec.contains_key(*k) => out.push((k.to_string(), "is required".into())),
            None => {}
        }
    }
    if let Some(r) = spec.get("region").and_then(Json::as_str)
        && !is_dynamic(r)
        && let Err(e) = dray_shared::task::aws::check_region(r)
    {
        out.push(("region".into(), e));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Json) -> serde_json::Map<String, Json> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn infrastructure_specs_are_checked() {
        assert_eq!(infrastructure_rules("KubernetesDirect", &map(json!({}))), None);
        let ok = map(json!({"connectorRef": "aws", "cluster": "prod", "region": "us-east-1"}));
        assert_eq!(infrastructure_rules("ECS", &ok), Some(vec![]));
        assert_eq!(infrastructure_rules("Ecs", &ok), Some(vec![]), "Ecs is another spelling");
        let bad = map(json!({"connectorRef": "aws", "clustr": "prod", "region": "US"}));
        let problems = infrastructure_rules("ECS", &bad).unwrap();
        let paths: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["clustr", "cluster", "region"], "{problems:?}");
        let dynamic = map(
            json!({"connectorRef": "aws", "cluster": "<+input>", "region": "<+pipeline.variables.region>"}),
        );
        assert_eq!(infrastructure_rules("ECS", &dynamic), Some(vec![]));
    }

    #[test]
    fn step_specs_are_checked() {
        let t = StepTypes::builtin();
        let v = |ty: &str, spec: Json| t.get(ty).unwrap().validate(&spec);
        assert!(v("EcsRollingDeploy", json!({})).is_empty());
        assert!(v("EcsRollingDeploy", json!({"force": true}))[0].1.contains("unknown field"));
        assert_eq!(
            v("EcsCanaryDeploy", json!({"desiredCount": 0})),
            vec![("desiredCount".into(), "must be at least 1".into())]
        );
        assert!(
            v("EcsBlueGreenCreateService", json!({"prodListener": "arn:a", "stageListener": "<+input>"}))
                .is_empty()
        );
        let p = v(
            "EcsBlueGreenSwapTargetGroups",
            json!({"prodListener": "listener-1", "stageListener": "arn:b"}),
        );
        assert_eq!(p[0].0, "prodListener");
        assert!(
            !v("EcsBlueGreenRollback", json!({"prodListener": "arn:a"})).is_empty(),
            "stageListener is required"
        );
        assert!(
            v("EcsRunTask", json!({"taskDefinition": {"type": "Inline", "spec": {"content": "family: x"}}}))
                .is_empty()
        );
        assert_eq!(
            v("EcsRunTask", json!({"taskDefinition": {"type": "Github"}}))[0].0,
            "taskDefinition.spec.content"
        );
    }
}
