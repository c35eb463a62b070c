//! Validation of the Kubernetes step specs, the `KubernetesDirect`
//! infrastructure spec, `K8sCluster` connectors and `K8sManifest`/`Values`
//! manifests.
//!
//! Step specs (Harness style):
//! - `K8sRollingDeploy`, `K8sBlueGreenDeploy`: `{skipDryRun?, pruningEnabled?}` (pruning: rolling only)
//! - `K8sRollingRollback`: `{pruningEnabled?}`; `K8sCanaryDelete`, `K8sBGSwapServices`: `{skipDryRun?}`
//! - `K8sCanaryDeploy`: `{instanceSelection: {type: Count|Percentage, spec: {count|percentage}}}`
//! - `K8sApply`: `{filePaths?: [absolute paths on the delegate], manifestContent?: YAML, skipSteadyStateCheck?}`
//!   (neither: the service's manifests)
//! - `K8sScale`: `{workload: Kind/name, instanceSelection, skipSteadyStateCheck?}`
//! - `K8sDelete`: `{deleteResources: {type: ResourceName, spec: {resourceNames}} | {type: ReleaseName}
//!   | {type: ManifestPath, spec: {manifestPaths?, allManifestPaths?}}}`
//!
//! Every spec also takes `delegateSelectors`. Numbers may be `<+…>` expressions.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::{SpecRules, StepTypes, Typed, selector_rules};
use crate::model::yaml::{field_path, index_path};

/// Step type names, as in YAML.
pub mod types {
    /// Rolling deploy.
    pub const ROLLING_DEPLOY: &str = "K8sRollingDeploy";
    /// Rolling rollback.
    pub const ROLLING_ROLLBACK: &str = "K8sRollingRollback";
    /// Canary deploy.
    pub const CANARY_DEPLOY: &str = "K8sCanaryDeploy";
    /// Canary delete.
    pub const CANARY_DELETE: &str = "K8sCanaryDelete";
    /// Blue-green deploy.
    pub const BLUE_GREEN_DEPLOY: &str = "K8sBlueGreenDeploy";
    /// Blue-green swap.
    pub const BG_SWAP: &str = "K8sBGSwapServices";
    /// Apply.
    pub const APPLY: &str = "K8sApply";
    /// Scale.
    pub const SCALE: &str = "K8sScale";
    /// Delete.
    pub const DELETE: &str = "K8sDelete";
}

/// Registers the Kubernetes step validators.
pub fn register(t: &mut StepTypes) {
    use std::sync::Arc;
    t.register(Arc::new(Typed::<DeploySpec>::new(types::ROLLING_DEPLOY)));
    t.register(Arc::new(Typed::<DeploySpec>::new(types::BLUE_GREEN_DEPLOY)));
    t.register(Arc::new(Typed::<RollbackSpec>::new(types::ROLLING_ROLLBACK)));
    t.register(Arc::new(Typed::<SimpleSpec>::new(types::CANARY_DELETE)));
    t.register(Arc::new(Typed::<SimpleSpec>::new(types::BG_SWAP)));
    t.register(Arc::new(Typed::<CanaryDeploySpec>::new(types::CANARY_DEPLOY)));
    t.register(Arc::new(Typed::<ApplySpec>::new(types::APPLY)));
    t.register(Arc::new(Typed::<ScaleSpec>::new(types::SCALE)));
    t.register(Arc::new(Typed::<DeleteSpec>::new(types::DELETE)));
}

/// A whole number, or an expression rendered to one before the step starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Number {
    /// A literal.
    Literal(u32),
    /// An expression (or a number as text once rendered).
    Text(String),
}

impl Number {
    /// The value, once rendered.
    pub fn value(&self) -> Result<u32, String> {
        match self {
            Number::Literal(n) => Ok(*n),
            Number::Text(t) => t.trim().parse().map_err(|_| format!("{t:?} is not a whole number")),
        }
    }

    fn rules(&self, path: &str) -> Option<(String, String)> {
        match self {
            Number::Text(t) if !t.contains("<+") => self.value().err().map(|m| (path.to_string(), m)),
            _ => None,
        }
    }
}

/// `K8sRollingDeploy` / `K8sBlueGreenDeploy` spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeploySpec {
    /// Accepted for Harness compatibility; there is no dry run.
    #[serde(default)]
    pub skip_dry_run: Option<bool>,
    /// Rolling deploy: delete what the previous successful revision had and
    /// this one has not. (Blue-green: accepted, ignored.)
    #[serde(default)]
    pub pruning_enabled: Option<bool>,
    /// Delegate tags the task needs.
    #[serde(default)]
    pub delegate_selectors: Vec<String>,
}

/// `K8sRollingRollback` spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RollbackSpec {
    /// Accepted for Harness compatibility; a rollback always prunes.
    #[serde(default)]
    pub pruning_enabled: Option<bool>,
    /// Delegate tags the task needs.
    #[serde(default)]
    pub delegate_selectors: Vec<String>,
}

/// `K8sCanaryDelete` / `K8sBGSwapServices` spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SimpleSpec {
    /// Accepted for Harness compatibility; there is no dry run.
    #[serde(default)]
    pub skip_dry_run: Option<bool>,
    /// Delegate tags the task needs.
    #[serde(default)]
    pub delegate_selectors: Vec<String>,
}

/// `instanceSelection`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "spec", deny_unknown_fields)]
pub enum InstanceSelection {
    /// `{count: N}`.
    Count(CountSpec),
    /// `{percentage: N}` (1–100).
    Percentage(PercentageSpec),
}

/// `{count: N}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountSpec {
    /// Instances.
    pub count: Number,
}

/// `{percentage: N}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PercentageSpec {
    /// Percent.
    pub percentage: Number,
}

impl InstanceSelection {
    fn rules(&self, path: &str) -> Vec<(String, String)> {
        match self {
            InstanceSelection::Count(c) => c.count.rules(&format!("{path}.spec.count")).into_iter().collect(),
            InstanceSelection::Percentage(p) => {
                let at = format!("{path}.spec.percentage");
                match (&p.percentage, p.percentage.rules(&at)) {
                    (_, Some(e)) => vec![e],
                    (Number::Literal(n), None) if !(1..=100).contains(n) => {
                        vec![(at, format!("{n} is not between 1 and 100"))]
                    }
                    _ => vec![],
                }
            }
        }
    }
}

/// `K8sCanaryDeploy` spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CanaryDeploySpec {
    /// Canary size.
    pub instance_selection: InstanceSelection,
    /// Accepted for Harness compatibility.
    #[serde(default)]
    pub skip_dry_run: Option<bool>,
    /// Delegate tags the task needs.
    #[serde(default)]
    pub delegate_selectors: Vec<String>,
}

/// `K8sApply` spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApplySpec {
    /// Manifest files (or directories) on the delegate, absolute.
    #[serde(default)]
    pub file_paths: Vec<String>,
    /// Inline manifests (YAML).
    #[serde(default)]
    pub manifest_content: Option<String>,
    /// Do not wait for Deployments to roll out.
    #[serde(default)]
    pub skip_steady_state_check: Option<bool>,
    /// Accepted for Harness compatibility.
    #[serde(default)]
    pub skip_dry_run: Option<bool>,
    /// Delegate tags the task needs.
    #[serde(default)]
    pub delegate_selectors: Vec<String>,
}

/// `K8sScale` spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScaleSpec {
    /// `Deployment/name`.
    pub workload: String,
    /// Target size.
    pub instance_selection: InstanceSelection,
    /// Do not wait for the rollout.
    #[serde(default)]
    pub skip_steady_state_check: Option<bool>,
    /// Delegate tags the task needs.
    #[serde(default)]
    pub delegate_selectors: Vec<String>,
}

/// `K8sDelete` spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeleteSpec {
    /// What to delete.
    pub delete_resources: DeleteResources,
    /// Delegate tags the task needs.
    #[serde(default)]
    pub delegate_selectors: Vec<String>,
}

/// `deleteResources`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "spec", deny_unknown_fields)]
pub enum DeleteResources {
    /// By `Kind/name`.
    ResourceName(ResourceNameSpec),
    /// Everything of the release.
    ReleaseName(#[serde(default)] ReleaseNameSpec),
    /// As manifests describe them.
    ManifestPath(ManifestPathSpec),
}

/// `{resourceNames: [Kind/name]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceNameSpec {
    /// `Kind/name` or `namespace/Kind/name`.
    pub resource_names: Vec<String>,
}

/// `{deleteNamespace: false}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReleaseNameSpec {
    /// Deleting the namespace is not supported; `true` is refused.
    #[serde(default)]
    pub delete_namespace: Option<bool>,
}

/// `{manifestPaths: [...], allManifestPaths: bool}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ManifestPathSpec {
    /// Manifest files on the delegate, absolute.
    #[serde(default)]
    pub manifest_paths: Vec<String>,
    /// The service's manifests.
    #[serde(default)]
    pub all_manifest_paths: Option<bool>,
}

fn is_expr(s: &str) -> bool {
    s.contains("<+")
}

fn path_rules(field: &str, paths: &[String]) -> Vec<(String, String)> {
    paths
        .iter()
        .enumerate()
        .filter(|(_, p)| !is_expr(p) && !p.starts_with('/'))
        .map(|(i, p)| (index_path(field, i), format!("{p:?} is not an absolute path on the delegate")))
        .collect()
}

impl SpecRules for DeploySpec {
    fn rules(&self) -> Vec<(String, String)> {
        selector_rules(&self.delegate_selectors)
    }
}

impl SpecRules for RollbackSpec {
    fn rules(&self) -> Vec<(String, String)> {
        selector_rules(&self.delegate_selectors)
    }
}

impl SpecRules for SimpleSpec {
    fn rules(&self) -> Vec<(String, String)> {
        selector_rules(&self.delegate_selectors)
    }
}

impl SpecRules for CanaryDeploySpec {
    fn rules(&self) -> Vec<(String, String)> {
        let mut out = self.instance_selection.rules("instanceSelection");
        if let InstanceSelection::Count(c) = &self.instance_selection
            && c.count == Number::Literal(0)
        {
            out.push(("instanceSelection.spec.count".into(), "a canary needs at least 1 instance".into()));
        }
        out.extend(selector_rules(&self.delegate_selectors));
        out
    }
}

impl SpecRules for ApplySpec {
    fn rules(&self) -> Vec<(String, String)> {
        let mut out = path_rules("filePaths", &self.file_paths);
        if self.manifest_content.as_ref().is_some_and(|c| c.trim().is_empty()) {
            out.push(("manifestContent".into(), "the manifest content is empty".into()));
        }
        out.extend(selector_rules(&self.delegate_selectors));
        out
    }
}

/// Checks a `Kind/name` (or `namespace/Kind/name`) reference.
fn resource_name_rule(path: String, s: &str) -> Option<(String, String)> {
    if is_expr(s) || dray_shared::task::k8s::parse_resource_name(s).is_some() {
        None
    } else {
        Some((path, format!("{s:?} is not Kind/name (e.g. Deployment/web)")))
    }
}

impl SpecRules for ScaleSpec {
    fn rules(&self) -> Vec<(String, String)> {
        let mut out: Vec<_> = resource_name_rule("workload".into(), &self.workload).into_iter().collect();
        out.extend(self.instance_selection.rules("instanceSelection"));
        out.extend(selector_rules(&self.delegate_selectors));
        out
    }
}

impl SpecRules for DeleteSpec {
    fn rules(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        match &self.delete_resources {
            DeleteResources::ResourceName(r) => {
                if r.resource_names.is_empty() {
                    out.push((
                        "deleteResources.spec.resourceNames".into(),
                        "name at least one resource".into(),
                    ));
                }
                for (i, n) in r.resource_names.iter().enumerate() {
                    out.extend(resource_name_rule(index_path("deleteResources.spec.resourceNames", i), n));
                }
            }
            DeleteResources::ReleaseName(r) => {
                if r.delete_namespace == Some(true) {
                    out.push((
                        "deleteResources.spec.deleteNamespace".into(),
                        "deleting the namespace is not supported".into(),
                    ));
                }
            }
            DeleteResources::ManifestPath(m) => {
                out.extend(path_rules("deleteResources.spec.manifestPaths", &m.manifest_paths));
                if m.manifest_paths.is_empty() && m.all_manifest_paths != Some(true) {
                    out.push((
                        "deleteResources.spec".into(),
                        "give manifestPaths or set allManifestPaths: true".into(),
                    ));
                }
            }
        }
        out.extend(selector_rules(&self.delegate_selectors));
        out
    }
}

/// True for a DNS-1123 label, or an expression rendered later.
fn label_or_expr(s: &str) -> bool {
    is_expr(s) || dray_shared::task::k8s::is_dns_label(s)
}

/// Problems in the `spec` of an infrastructure of type `infra_type`, as
/// (path within the spec, message); `None` when this platform does not own
/// that type. `KubernetesDirect` needs `connectorRef`, `namespace` and
/// `releaseName`.
pub fn infrastructure_rules(
    infra_type: &str,
    spec: &serde_json::Map<String, Json>,
) -> Option<Vec<(String, String)>> {
    if infra_type != "KubernetesDirect" {
        return None;
    }
    let mut out = Vec::new();
    if spec.get("connectorRef").is_none() {
        out.push((
            "connectorRef".into(),
            "a KubernetesDirect infrastructure needs a K8sCluster connector".into(),
        ));
    }
    for (field, what) in [("namespace", "namespace"), ("releaseName", "release name")] {
        match spec.get(field) {
            None => out.push((field.into(), format!("the {what} is required"))),
            Some(Json::String(s)) if label_or_expr(s) && (field != "releaseName" || s.len() <= 53) => {}
            Some(v) => out.push((
                field.into(),
                format!(
                    "{v} is not a valid {what} (lower-case letters, digits and '-'{})",
                    if field == "releaseName" { ", at most 53" } else { ", at most 63" }
                ),
            )),
        }
    }
    for k in spec.keys() {
        if !["connectorRef", "namespace", "releaseName"].contains(&k.as_str()) {
            out.push((
                k.clone(),
                format!("unknown field {k:?} (known: connectorRef, namespace, releaseName)"),
            ));
        }
    }
    Some(out)
}

/// Problems in the `spec` of a connector of type `connector_type`; `None` when
/// this platform does not own that type. A `K8sCluster` connector:
///
/// ```yaml
/// spec:
///   credential:
///     type: KubeconfigFile            # or InheritFromDelegate (in-cluster service account)
///     spec:
///       path: /etc/dray/kubeconfig    # on the delegate
///       context: prod                 # optional
///       token: <+secrets.getValue("file:/etc/dray/token")>   # optional
///   delegateSelectors: [k8s]
/// ```
pub fn connector_rules(
    connector_type: &str,
    spec: &serde_json::Map<String, Json>,
) -> Option<Vec<(String, String)>> {
    if connector_type != "K8sCluster" {
        return None;
    }
    let mut out = Vec::new();
    for k in spec.keys() {
        if !["credential", "delegateSelectors"].contains(&k.as_str()) {
            out.push((k.clone(), format!("unknown field {k:?} (known: credential, delegateSelectors)")));
        }
    }
    match spec.get("credential") {
        None => out.push(("credential".into(), "a K8sCluster connector needs a credential".into())),
        Some(c) => out.extend(credential_rules(c)),
    }
    Some(out)
}

fn credential_rules(c: &Json) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match c.get("type").and_then(Json::as_str) {
        Some("InheritFromDelegate") => {
            if c.get("spec").is_some_and(|s| s.as_object().is_none_or(|m| !m.is_empty())) {
                out.push(("credential.spec".into(), "InheritFromDelegate takes no spec".into()));
            }
        }
        Some("KubeconfigFile") => {
            let spec = c.get("spec").and_then(Json::as_object);
            let Some(spec) = spec else {
                out.push(("credential.spec".into(), "KubeconfigFile needs spec.path".into()));
                return out;
            };
            match spec.get("path").and_then(Json::as_str) {
                Some(p) if is_expr(p) || p.starts_with('/') => {}
                Some(p) => out.push((
                    "credential.spec.path".into(),
                    format!("{p:?} is not an absolute path on the delegate"),
                )),
                None => out.push(("credential.spec.path".into(), "the kubeconfig path is required".into())),
            }
            if let Some(t) = spec.get("token") {
                match t.as_str() {
                    Some(t) if t.contains("<+secrets.getValue(") || t.contains("<+input") => {}
                    _ => out.push((
                        "credential.spec.token".into(),
                        "must be a secret reference like <+secrets.getValue(\"file:/path\")>, never a literal token".into(),
                    )),
                }
            }
            for k in spec.keys() {
                if !["path", "context", "token"].contains(&k.as_str()) {
                    out.push((
                        field_path("credential.spec", k),
                        format!("unknown field {k:?} (known: path, context, token)"),
                    ));
                }
            }
        }
        other => out.push((
            "credential.type".into(),
            format!(
                "{} is not KubeconfigFile or InheritFromDelegate",
                other.map_or("nothing".to_string(), |o| format!("{o:?}"))
            ),
        )),
    }
    out
}

/// Problems in a service manifest's `spec` for the types this platform owns
/// (`K8sManifest`, `Values`); `None` for other types. Either inline `content`
/// or `paths` (absolute, on the delegate).
pub fn manifest_rules(
    manifest_type: &str,
    spec: &serde_json::Map<String, Json>,
) -> Option<Vec<(String, String)>> {
    if manifest_type != "K8sManifest" && manifest_type != "Values" {
        return None;
    }
    let mut out = Vec::new();
    let content = spec.get("content");
    let paths = spec.get("paths");
    match (content, paths) {
        (Some(_), Some(_)) => out.push((String::new(), "give content or paths, not both".into())),
        (None, None) => out.push((String::new(), "give inline content or paths on the delegate".into())),
        (Some(c), None) => {
            if c.as_str().is_none_or(|s| s.trim().is_empty()) {
                out.push(("content".into(), "must be non-empty YAML text".into()));
            }
        }
        (None, Some(p)) => match p.as_array() {
            Some(items) if !items.is_empty() => {
                for (i, item) in items.iter().enumerate() {
                    match item.as_str() {
                        Some(s) if is_expr(s) || s.starts_with('/') => {}
                        _ => out.push((
                            index_path("paths", i),
                            format!("{item} is not an absolute path on the delegate"),
                        )),
                    }
                }
            }
            _ => out.push(("paths".into(), "must be a non-empty list of paths".into())),
        },
    }
    for k in spec.keys() {
        if !["content", "paths"].contains(&k.as_str()) {
            out.push((k.clone(), format!("unknown field {k:?} (known: content, paths)")));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(t: &str, spec: Json) -> Vec<(String, String)> {
        StepTypes::builtin().get(t).unwrap().validate(&spec)
    }

    #[test]
    fn good_specs_pass() {
        assert_eq!(check("K8sRollingDeploy", json!({"skipDryRun": false})), vec![]);
        assert_eq!(check("K8sRollingRollback", json!({})), vec![]);
        assert_eq!(
            check(
                "K8sCanaryDeploy",
                json!({"instanceSelection": {"type": "Percentage", "spec": {"percentage": 50}}})
            ),
            vec![]
        );
        assert_eq!(
            check(
                "K8sCanaryDeploy",
                json!({"instanceSelection": {"type": "Count", "spec": {"count": "<+input>"}}})
            ),
            vec![]
        );
        assert_eq!(check("K8sCanaryDelete", json!({})), vec![]);
        assert_eq!(check("K8sBlueGreenDeploy", json!({})), vec![]);
        assert_eq!(check("K8sBGSwapServices", json!({})), vec![]);
        assert_eq!(
            check("K8sApply", json!({"filePaths": ["/srv/m.yaml"], "skipSteadyStateCheck": true})),
            vec![]
        );
        assert_eq!(
            check(
                "K8sScale",
                json!({"workload": "Deployment/web", "instanceSelection": {"type": "Count", "spec": {"count": 3}}})
            ),
            vec![]
        );
        assert_eq!(
            check(
                "K8sDelete",
                json!({"deleteResources": {"type": "ResourceName", "spec": {"resourceNames": ["Deployment/web"]}}})
            ),
            vec![]
        );
        assert_eq!(
            check("K8sDelete", json!({"deleteResources": {"type": "ReleaseName", "spec": {}}})),
            vec![]
        );
    }

    #[test]
    fn bad_specs_name_the_path() {
        let first = |t: &str, s: Json| check(t, s).into_iter().next().map(|(p, _)| p).unwrap_or_default();
        assert_eq!(
            first(
                "K8sCanaryDeploy",
                json!({"instanceSelection": {"type": "Percentage", "spec": {"percentage": 150}}})
            ),
            "instanceSelection.spec.percentage"
        );
        assert_eq!(
            first(
                "K8sCanaryDeploy",
                json!({"instanceSelection": {"type": "Count", "spec": {"count": "many"}}})
            ),
            "instanceSelection.spec.count"
        );
        assert_eq!(first("K8sApply", json!({"filePaths": ["rel.yaml"]})), "filePaths[0]");
        assert_eq!(
            first(
                "K8sScale",
                json!({"workload": "web", "instanceSelection": {"type": "Count", "spec": {"count": 1}}})
            ),
            "workload"
        );
        assert_eq!(
            first(
                "K8sDelete",
                json!({"deleteResources": {"type": "ResourceName", "spec": {"resourceNames": ["x"]}}})
            ),
            "deleteResources.spec.resourceNames[0]"
        );
        assert_eq!(first("K8sRollingDeploy", json!({"replicas": 1})), "replicas");
    }

    #[test]
    fn infrastructure_connector_and_manifest_rules() {
        let m = |v: Json| v.as_object().unwrap().clone();
        assert_eq!(infrastructure_rules("Pdc", &m(json!({}))), None);
        assert_eq!(
            infrastructure_rules(
                "KubernetesDirect",
                &m(json!({"connectorRef": "c", "namespace": "web", "releaseName": "web-1"}))
            ),
            Some(vec![])
        );
        let e =
            infrastructure_rules("KubernetesDirect", &m(json!({"connectorRef": "c", "namespace": "Web_1"})))
                .unwrap();
        assert_eq!(e.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(), ["namespace", "releaseName"]);

        let ok = json!({"credential": {"type": "KubeconfigFile", "spec": {"path": "/k", "token": "<+secrets.getValue(\"env:T\")>"}}});
        assert_eq!(connector_rules("K8sCluster", &m(ok)), Some(vec![]));
        assert_eq!(
            connector_rules("K8sCluster", &m(json!({"credential": {"type": "InheritFromDelegate"}}))),
            Some(vec![])
        );
        let e = connector_rules(
            "K8sCluster",
            &m(json!({"credential": {"type": "KubeconfigFile", "spec": {"path": "/k", "token": "abc"}}})),
        )
        .unwrap();
        assert_eq!(e[0].0, "credential.spec.token");
        assert_eq!(connector_rules("Git", &m(json!({}))), None);

        assert_eq!(manifest_rules("K8sManifest", &m(json!({"content": "kind: x"}))), Some(vec![]));
        assert_eq!(manifest_rules("Values", &m(json!({"paths": ["/v.yaml"]}))), Some(vec![]));
        let e = manifest_rules("K8sManifest", &m(json!({"paths": ["v.yaml"]}))).unwrap();
        assert_eq!(e[0].0, "paths[0]");
        assert_eq!(manifest_rules("HelmChart", &m(json!({}))), None);
    }
}
