//! Validation of the Lambda step specs and the `AwsLambda` infrastructure spec.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::{SpecRules, StepTypes, Typed};
use crate::model::validate::check_duration;

/// Registers the Lambda step validators.
pub fn register(t: &mut StepTypes) {
    t.register(Arc::new(Typed::<DeploySpec>::new("AwsLambdaDeploy")));
    t.register(Arc::new(Typed::<TrafficShiftSpec>::new("AwsLambdaTrafficShift")));
    t.register(Arc::new(Typed::<AliasSpec>::new("AwsLambdaRollback")));
}

/// `AwsLambdaDeploy` spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeploySpec {
    /// Alias (default `live`).
    #[serde(default)]
    pub alias: Option<String>,
    /// Point the alias at the new version at once (default true).
    #[serde(default)]
    pub route_traffic: Option<bool>,
}

impl SpecRules for DeploySpec {
    fn rules(&self) -> Vec<(String, String)> {
        alias_rules(self.alias.as_deref())
    }
}

/// `AwsLambdaRollback` spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AliasSpec {
    /// Alias (default `live`).
    #[serde(default)]
    pub alias: Option<String>,
}

impl SpecRules for AliasSpec {
    fn rules(&self) -> Vec<(String, String)> {
        alias_rules(self.alias.as_deref())
    }
}

/// `AwsLambdaTrafficShift` spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficShiftSpec {
    /// Alias (default `live`).
    #[serde(default)]
    pub alias: Option<String>,
    /// Weight steps.
    pub steps: Vec<TrafficStep>,
    /// Invoke payload checked after each step.
    #[serde(default)]
    pub check_payload: Option<String>,
}

/// One weight step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficStep {
    /// Percent to the new version.
    pub weight: u32,
    /// Wait after it ("30s").
    #[serde(default)]
    pub wait: Option<String>,
}

impl SpecRules for TrafficShiftSpec {
    fn rules(&self) -> Vec<(String, String)> {
        let mut out = alias_rules(self.alias.as_deref());
        if self.steps.is_empty() {
            out.push(("steps".into(), "needs at least one step".into()));
        }
        let mut last = 0;
        for (i, s) in self.steps.iter().enumerate() {
            if !(1..=100).contains(&s.weight) {
                out.push((format!("steps[{i}].weight"), format!("{} is not 1 to 100", s.weight)));
            } else if s.weight <= last {
                out.push((format!("steps[{i}].weight"), format!("{} does not increase on {last}", s.weight)));
            }
            last = s.weight;
            if let Some(w) = &s.wait
                && let Err(e) = check_duration(w)
            {
                out.push((format!("steps[{i}].wait"), e));
            }
        }
        out
    }
}

fn alias_rules(alias: Option<&str>) -> Vec<(String, String)> {
    match alias {
        Some(a) if !crate::model::validate::is_dynamic(a) => {
            let ok = !a.is_empty()
                && a.len() <= 128
                && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !a.chars().all(|c| c.is_ascii_digit());
            if ok { vec![] } else { vec![("alias".into(), format!("{a:?} is not an alias name"))] }
        }
        _ => vec![],
    }
}

/// Problems in the `spec` of an infrastructure of type `infra_type`, as
/// (path within the spec, message); `None` when Lambda does not own that type.
pub fn infrastructure_rules(
    infra_type: &str,
    spec: &serde_json::Map<String, Json>,
) -> Option<Vec<(String, String)>> {
    (infra_type == "AwsLambda").then(|| {
        super::ecs::aws_infrastructure(spec, &["connectorRef", "region"], &["connectorRef", "region"])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn specs_are_checked() {
        let t = StepTypes::builtin();
        let v = |ty: &str, spec: Json| t.get(ty).unwrap().validate(&spec);
        assert!(v("AwsLambdaDeploy", json!({"alias": "live", "routeTraffic": false})).is_empty());
        assert_eq!(v("AwsLambdaRollback", json!({"alias": "12"}))[0].0, "alias");
        assert!(
            v("AwsLambdaTrafficShift", json!({"steps": [{"weight": 10, "wait": "1m"}, {"weight": 100}]}))
                .is_empty()
        );
        let p = v(
            "AwsLambdaTrafficShift",
            json!({"steps": [{"weight": 50, "wait": "x"}, {"weight": 40}, {"weight": 101}]}),
        );
        let paths: Vec<&str> = p.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["steps[0].wait", "steps[1].weight", "steps[2].weight"], "{p:?}");
        let m = json!({"connectorRef": "aws"}).as_object().cloned().unwrap();
        assert_eq!(
            infrastructure_rules("AwsLambda", &m),
            Some(vec![("region".into(), "is required".into())])
        );
        assert_eq!(infrastructure_rules("ECS", &m), None);
    }
}
