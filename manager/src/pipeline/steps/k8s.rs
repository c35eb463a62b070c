//! Kubernetes step types. Each turns its spec and the stage's target into one `k8s`
//! task for a delegate:
//!
//! - the cluster from the infrastructure's `K8sCluster` connector
//!   (`credential: KubeconfigFile {path, context?, token?} | InheritFromDelegate`);
//! - `namespace` and `releaseName` from the `KubernetesDirect` infrastructure;
//! - manifests from the service's `K8sManifest` manifests and values from its
//!   `Values` manifests (inline `content` or `paths` on the delegate), with
//!   `<+…>` expressions (e.g. `<+artifact.image>`) already rendered here; the
//!   delegate fills `{{ .Values.x }}` placeholders and resolves secret references.

use std::sync::Arc;

use dray_shared::task::k8s::{Action, Cluster, DeleteTarget, Instances, K8sParams, ManifestSource};
use dray_shared::task::kind;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;

use super::{Registry, StartContext, StepError, StepStart, StepType};
use crate::model::steps::k8s::{
    ApplySpec, CanaryDeploySpec, DeleteResources, DeleteSpec, DeploySpec, InstanceSelection, ScaleSpec, types,
};
use crate::model::steps::parse_spec;

/// Which action a step type runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    RollingDeploy,
    RollingRollback,
    CanaryDeploy,
    CanaryDelete,
    BlueGreenDeploy,
    BgSwap,
    Apply,
    Scale,
    Delete,
}

/// One Kubernetes step type.
struct K8sStep {
    name: &'static str,
    kind: Kind,
}

/// Registers the Kubernetes step types.
pub fn register(r: &mut Registry) {
    for (name, kind) in [
        (types::ROLLING_DEPLOY, Kind::RollingDeploy),
        (types::ROLLING_ROLLBACK, Kind::RollingRollback),
        (types::CANARY_DEPLOY, Kind::CanaryDeploy),
        (types::CANARY_DELETE, Kind::CanaryDelete),
        (types::BLUE_GREEN_DEPLOY, Kind::BlueGreenDeploy),
        (types::BG_SWAP, Kind::BgSwap),
        (types::APPLY, Kind::Apply),
        (types::SCALE, Kind::Scale),
        (types::DELETE, Kind::Delete),
    ] {
        r.register(Arc::new(K8sStep { name, kind }));
    }
}

fn err(msg: impl Into<String>) -> StepError {
    StepError(msg.into())
}

fn spec_of<T: DeserializeOwned>(spec: &Json) -> Result<T, StepError> {
    parse_spec(spec).map_err(err)
}

fn instances(sel: &InstanceSelection) -> Result<Instances, StepError> {
    Ok(match sel {
        InstanceSelection::Count(c) => {
            Instances::Count(c.count.value().map_err(|e| err(format!("instanceSelection.spec.count: {e}")))?)
        }
        InstanceSelection::Percentage(p) => Instances::Percentage(
            p.percentage.value().map_err(|e| err(format!("instanceSelection.spec.percentage: {e}")))?,
        ),
    })
}

fn str_at<'a>(v: &'a Json, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Json::as_str).filter(|s| !s.trim().is_empty())
}

/// The cluster settings from the stage's connector.
fn cluster(target: &Json) -> Result<Cluster, StepError> {
    let connector = &target["connector"];
    let id = str_at(connector, "/identifier").unwrap_or("");
    match str_at(connector, "/type") {
        Some("K8sCluster") => {}
        Some(other) => {
            return Err(err(format!(
                "the infrastructure's connector {id:?} is a {other} connector; Kubernetes steps need a K8sCluster connector"
            )));
        }
        None => {
            return Err(err(
                "the infrastructure has no connector; Kubernetes steps need a K8sCluster connector",
            ));
        }
    }
    match str_at(connector, "/credential/type") {
        Some("InheritFromDelegate") => Ok(Cluster::default()),
        Some("KubeconfigFile") => Ok(Cluster {
            kubeconfig: Some(
                str_at(connector, "/credential/spec/path")
                    .ok_or_else(|| err(format!("connector {id}: credential.spec.path is required")))?
                    .to_string(),
            ),
            context: str_at(connector, "/credential/spec/context").map(str::to_string),
            token: str_at(connector, "/credential/spec/token").map(str::to_string),
        }),
        other => Err(err(format!(
            "connector {id}: credential.type {} is not KubeconfigFile or InheritFromDelegate",
            other.unwrap_or("(none)")
        ))),
    }
}

/// The service's manifests of `manifest_type`, as sources.
fn service_sources(target: &Json, manifest_type: &str) -> Result<Vec<ManifestSource>, StepError> {
    let mut out = Vec::new();
    for (i, item) in
        target.pointer("/service/manifests").and_then(Json::as_array).into_iter().flatten().enumerate()
    {
        let m = &item["manifest"];
        if m.get("type").and_then(Json::as_str) != Some(manifest_type) {
            continue;
        }
        let identifier = str_at(m, "/identifier").unwrap_or("manifest").to_string();
        let content = m.pointer("/spec/content").and_then(Json::as_str).map(str::to_string);
        let paths: Vec<String> = m
            .pointer("/spec/paths")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect();
        if content.is_none() && paths.is_empty() {
            return Err(err(format!("service manifest [{i}] {identifier}: neither content nor paths")));
        }
        out.push(ManifestSource { identifier, content, paths });
    }
    Ok(out)
}

impl K8sStep {
    fn params(&self, spec: &Json, target: &Json, cx: &StartContext<'_>) -> Result<K8sParams, StepError> {
        let infra = &target["infra"];
        let infra_id = str_at(infra, "/identifier").unwrap_or("");
        if str_at(infra, "/type") != Some("KubernetesDirect") {
            return Err(err(format!(
                "{} needs a KubernetesDirect infrastructure; {infra_id:?} is {}",
                self.name,
                str_at(infra, "/type").unwrap_or("not one")
            )));
        }
        let namespace = str_at(infra, "/namespace")
            .ok_or_else(|| err(format!("infrastructure {infra_id}: namespace is required")))?;
        let release_name = str_at(infra, "/releaseName")
            .ok_or_else(|| err(format!("infrastructure {infra_id}: releaseName is required")))?;
        let mut manifests = service_sources(target, "K8sManifest")?;
        let values = service_sources(target, "Values")?;
        let mut skip_steady_state = false;
        let mut prune = false;
        let action = match self.kind {
            Kind::RollingDeploy => {
                let s: DeploySpec = spec_of(spec)?;
                prune = s.pruning_enabled.unwrap_or(false);
                Action::RollingDeploy
            }
            Kind::RollingRollback => Action::RollingRollback,
            Kind::CanaryDeploy => {
                let s: CanaryDeploySpec = spec_of(spec)?;
                Action::CanaryDeploy { instances: instances(&s.instance_selection)? }
            }
            Kind::CanaryDelete => Action::CanaryDelete,
            Kind::BlueGreenDeploy => Action::BlueGreenDeploy,
            Kind::BgSwap => Action::BlueGreenSwap,
            Kind::Apply => {
                let s: ApplySpec = spec_of(spec)?;
                skip_steady_state = s.skip_steady_state_check.unwrap_or(false);
                if !s.file_paths.is_empty() || s.manifest_content.is_some() {
                    manifests.clear();
                    if !s.file_paths.is_empty() {
                        manifests.push(ManifestSource {
                            identifier: "filePaths".into(),
                            content: None,
                            paths: s.file_paths.clone(),
                        });
                    }
                    if let Some(c) = s.manifest_content {
                        manifests.push(ManifestSource {
                            identifier: "manifestContent".into(),
                            content: Some(c),
                            paths: vec![],
                        });
                    }
                }
                Action::Apply
            }
            Kind::Scale => {
                let s: ScaleSpec = spec_of(spec)?;
                skip_steady_state = s.skip_steady_state_check.unwrap_or(false);
                Action::Scale { workload: s.workload, instances: instances(&s.instance_selection)? }
            }
            Kind::Delete => {
                let s: DeleteSpec = spec_of(spec)?;
                let target = match s.delete_resources {
                    DeleteResources::ResourceName(r) => {
                        DeleteTarget::ResourceNames { names: r.resource_names }
                    }
                    DeleteResources::ReleaseName(_) => DeleteTarget::Release,
                    DeleteResources::ManifestPath(m) => {
                        if !m.manifest_paths.is_empty() {
                            manifests = vec![ManifestSource {
                                identifier: "manifestPaths".into(),
                                content: None,
                                paths: m.manifest_paths,
                            }];
                        }
                        DeleteTarget::Manifests
                    }
                };
                Action::Delete { target }
            }
        };
        let params = K8sParams {
            action,
            cluster: cluster(target)?,
            namespace: namespace.to_string(),
            release_name: release_name.to_string(),
            manifests,
            values,
            skip_steady_state,
            prune,
            deployment: match self.kind {
                Kind::RollingDeploy | Kind::RollingRollback => format!("{}/{}", cx.execution_id, cx.stage),
                _ => String::new(),
            },
        };
        params.validate().map_err(|e| err(format!("{}: {e}", self.name)))?;
        Ok(params)
    }
}

impl StepType for K8sStep {
    fn uses_target(&self) -> bool {
        true
    }

    fn type_name(&self) -> &'static str {
        self.name
    }

    fn start(&self, spec: &Json, cx: &StartContext<'_>) -> Result<StepStart, StepError> {
        let target = cx.require_target(self.name)?;
        let params = self.params(spec, target, cx)?;
        let params = serde_json::to_value(&params).map_err(|e| err(e.to_string()))?;
        Ok(StepStart::Task { kind: kind::K8S.into(), params })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn target() -> Json {
        json!({
            "service": {"identifier": "web", "manifests": [
                {"manifest": {"identifier": "deploy", "type": "K8sManifest", "spec": {"content": "kind: Deployment"}}},
                {"manifest": {"identifier": "vals", "type": "Values", "spec": {"paths": ["/srv/values.yaml"]}}},
                {"manifest": {"identifier": "other", "type": "HelmChart", "spec": {}}}
            ]},
            "infra": {"identifier": "k8s", "type": "KubernetesDirect", "namespace": "web", "releaseName": "web-prod"},
            "connector": {"identifier": "cluster", "type": "K8sCluster",
                          "credential": {"type": "KubeconfigFile", "spec": {"path": "/k/config", "token": "<+secrets.getValue(\"env:T\")>"}}},
        })
    }

    fn start(step: &str, spec: Json, target: &Json) -> Result<Json, StepError> {
        let r = Registry::builtin();
        let cx = StartContext { target: Some(target), ..StartContext::EMPTY };
        match r.get(step).unwrap().start(&spec, &cx)? {
            StepStart::Task { kind, params } => {
                assert_eq!(kind, "k8s");
                Ok(params)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn steps_become_k8s_tasks() {
        let t = target();
        let p = start("K8sRollingDeploy", json!({}), &t).unwrap();
        assert_eq!(
            p,
            json!({"action": {"type": "rollingDeploy"}, "deployment": "/",
                   "cluster": {"kubeconfig": "/k/config", "token": "<+secrets.getValue(\"env:T\")>"},
                   "namespace": "web", "releaseName": "web-prod",
                   "manifests": [{"identifier": "deploy", "content": "kind: Deployment"}],
                   "values": [{"identifier": "vals", "paths": ["/srv/values.yaml"]}]})
        );
        let p = start(
            "K8sCanaryDeploy",
            json!({"instanceSelection": {"type": "Percentage", "spec": {"percentage": "50"}}}),
            &t,
        )
        .unwrap();
        assert_eq!(p["action"], json!({"type": "canaryDeploy", "instances": {"percentage": 50}}));
        let p = start(
            "K8sScale",
            json!({"workload": "Deployment/web", "instanceSelection": {"type": "Count", "spec": {"count": 2}}, "skipSteadyStateCheck": true}),
            &t,
        )
        .unwrap();
        assert_eq!(
            p["action"],
            json!({"type": "scale", "workload": "Deployment/web", "instances": {"count": 2}})
        );
        assert_eq!(p["skipSteadyState"], true);
        let p = start("K8sRollingDeploy", json!({"pruningEnabled": true}), &t).unwrap();
        assert_eq!(p["prune"], true);
        let p = start("K8sApply", json!({"filePaths": ["/srv/extra"]}), &t).unwrap();
        assert_eq!(p["manifests"], json!([{"identifier": "filePaths", "paths": ["/srv/extra"]}]));
        let p =
            start("K8sDelete", json!({"deleteResources": {"type": "ReleaseName", "spec": {}}}), &t).unwrap();
        assert_eq!(p["action"], json!({"type": "delete", "target": {"type": "release"}}));
        for s in ["K8sRollingRollback", "K8sCanaryDelete", "K8sBlueGreenDeploy", "K8sBGSwapServices"] {
            start(s, json!({}), &t).unwrap();
        }
    }

    #[test]
    fn wrong_targets_are_refused_with_the_reason() {
        let mut t = target();
        t["connector"]["type"] = json!("Pdc");
        let e = start("K8sRollingDeploy", json!({}), &t).unwrap_err();
        assert!(e.0.contains("is a Pdc connector"), "{e}");
        let mut t = target();
        t["infra"]["namespace"] = json!("Bad_NS");
        let e = start("K8sRollingDeploy", json!({}), &t).unwrap_err();
        assert!(e.0.contains("invalid namespace"), "{e}");
        let mut t = target();
        t["connector"]["credential"] = json!({"type": "InheritFromDelegate"});
        let p = start("K8sRollingRollback", json!({}), &t).unwrap();
        assert_eq!(p["cluster"], json!({}));
        let r = Registry::builtin();
        let e = r.get("K8sRollingDeploy").unwrap().start(&json!({}), &StartContext::EMPTY).unwrap_err();
        assert!(e.0.contains("runs only in a Deployment stage"), "{e}");
    }
}
