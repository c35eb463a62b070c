//! A `k8s` task: one action on one release in one namespace of a Kubernetes
//! cluster (a rolling deploy, a rollback, a canary, a blue-green deploy or swap,
//! an apply, a scale or a delete). Executed by the delegate's `k8s` target.
//!
//! The manager renders every `<+…>` expression before the task is made; what is
//! left for the delegate is secret references (in manifests, values and the
//! cluster token), `{{ .Values.x }}` placeholders in manifests and the files the
//! manifests name on the delegate.

use serde::{Deserialize, Serialize};

use super::{InvalidTaskSpec, check_refs, field};

/// Parameters of a `k8s` task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct K8sParams {
    /// What to do.
    pub action: Action,
    /// How to reach the cluster.
    pub cluster: Cluster,
    /// Namespace of the release (and of manifests that name none).
    pub namespace: String,
    /// Release name: labels what a deploy creates and names its history.
    pub release_name: String,
    /// Manifests, in order (the service's, or a step's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<ManifestSource>,
    /// YAML values documents for `{{ .Values.x }}` placeholders; later ones win.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<ManifestSource>,
    /// Do not wait for workloads to become ready.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_steady_state: bool,
    /// After a successful rolling deploy, delete what the previous successful
    /// revision applied and this one no longer describes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prune: bool,
    /// Who deploys (`<executionId>/<stage>`): a rolling deploy records it on its
    /// revision, and a rolling rollback only undoes a revision its own stage made.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub deployment: String,
}

/// How the delegate connects to the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Cluster {
    /// A kubeconfig file on the delegate. Without it, the delegate's in-cluster
    /// service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    /// Context in the kubeconfig (default: its current context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// A bearer token replacing the kubeconfig's credentials; a secret reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// One manifest (or values) source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ManifestSource {
    /// Identifier, for messages.
    pub identifier: String,
    /// Inline YAML (one or more documents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Files on the delegate, read in order (a directory: its `.yaml`/`.yml`
    /// files, sorted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

/// How many instances: a count or a percentage of the workload's replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Instances {
    /// This many.
    Count(u32),
    /// This percentage (1–100) of the reference replicas, rounded up.
    Percentage(u32),
}

impl Instances {
    /// The number of instances out of `of`.
    pub fn of(self, of: u32) -> u32 {
        match self {
            Instances::Count(n) => n,
            Instances::Percentage(p) => (u64::from(of) * u64::from(p)).div_ceil(100) as u32,
        }
    }
}

/// What a `k8s` task does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Action {
    /// Apply every manifest, wait for rollout, record a release revision.
    RollingDeploy,
    /// Re-apply the last successful revision before the current one.
    RollingRollback,
    /// Deploy a `-canary` copy of the Deployment at `instances`.
    CanaryDeploy {
        /// Canary size.
        instances: Instances,
    },
    /// Delete the canary Deployment.
    CanaryDelete,
    /// Deploy the stage colour and the stage Service.
    BlueGreenDeploy,
    /// Swap the colours of the primary and stage Services.
    BlueGreenSwap,
    /// Apply the manifests as given.
    Apply,
    /// Scale `workload` (`Kind/name`) to `instances`.
    Scale {
        /// `Deployment/name` (or `StatefulSet/name`).
        workload: String,
        /// Target size (a percentage is of the current replicas).
        instances: Instances,
    },
    /// Delete resources.
    Delete {
        /// Which.
        target: DeleteTarget,
    },
}

impl Action {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Action::RollingDeploy => "rolling deploy",
            Action::RollingRollback => "rolling rollback",
            Action::CanaryDeploy { .. } => "canary deploy",
            Action::CanaryDelete => "canary delete",
            Action::BlueGreenDeploy => "blue-green deploy",
            Action::BlueGreenSwap => "blue-green swap",
            Action::Apply => "apply",
            Action::Scale { .. } => "scale",
            Action::Delete { .. } => "delete",
        }
    }
}

/// What a delete removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum DeleteTarget {
    /// These resources, each `Kind/name` (or `namespace/Kind/name`).
    ResourceNames {
        /// The names.
        names: Vec<String>,
    },
    /// Everything the release's last revision applied, and its history.
    Release,
    /// Everything the task's manifests describe.
    Manifests,
}

/// Splits `Kind/name` or `namespace/Kind/name`.
pub fn parse_resource_name(s: &str) -> Option<(Option<&str>, &str, &str)> {
    let parts: Vec<&str> = s.split('/').collect();
    let ok = |p: &&str| !p.is_empty() && !p.contains(char::is_whitespace);
    match parts.as_slice() {
        [kind, name] if ok(kind) && ok(name) => Some((None, kind, name)),
        [ns, kind, name] if ok(ns) && ok(kind) && ok(name) => Some((Some(ns), kind, name)),
        _ => None,
    }
}

/// True for a DNS-1123 label (namespace, release name): lower-case
/// alphanumerics and `-`, at most 63 characters, alphanumeric at both ends.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl K8sParams {
    /// Checks what the schema cannot.
    pub fn validate(&self) -> Result<(), InvalidTaskSpec> {
        if !is_dns_label(&self.namespace) {
            return Err(field("namespace", format!("{:?} is not a valid namespace name", self.namespace)));
        }
        // Release names end up in object names (`release-NAME`) and label values.
        if !is_dns_label(&self.release_name) || self.release_name.len() > 53 {
            return Err(field(
                "releaseName",
                format!(
                    "{:?} is not a valid release name (lower-case letters, digits and '-', at most 53)",
                    self.release_name
                ),
            ));
        }
        if let Some(k) = &self.cluster.kubeconfig
            && !k.starts_with('/')
        {
            return Err(field("cluster.kubeconfig", format!("{k:?} is not an absolute path")));
        }
        if let Some(t) = &self.cluster.token {
            check_refs("cluster.token", t)?;
            if !t.contains("<+secrets.getValue(") {
                return Err(field("cluster.token", "must be a secret reference, not a literal token"));
            }
        }
        for (what, list) in [("manifests", &self.manifests), ("values", &self.values)] {
            for m in list.iter() {
                check_source(what, m)?;
            }
        }
        let needs_manifests = matches!(
            self.action,
            Action::RollingDeploy
                | Action::CanaryDeploy { .. }
                | Action::CanaryDelete
                | Action::BlueGreenDeploy
                | Action::Apply
                | Action::Delete { target: DeleteTarget::Manifests }
        );
        if needs_manifests && self.manifests.is_empty() {
            return Err(field("manifests", format!("a {} needs at least one manifest", self.action.name())));
        }
        match &self.action {
            Action::CanaryDeploy { instances } => check_instances(*instances)?,
            Action::Scale { workload, instances } => {
                if parse_resource_name(workload).is_none() {
                    return Err(field("action.workload", format!("{workload:?} is not Kind/name")));
                }
                check_instances(*instances)?;
            }
            Action::Delete { target: DeleteTarget::ResourceNames { names } } => {
                if names.is_empty() {
                    return Err(field("action.target.names", "name at least one resource"));
                }
                if let Some(n) = names.iter().find(|n| parse_resource_name(n).is_none()) {
                    return Err(field(
                        "action.target.names",
                        format!("{n:?} is not Kind/name or namespace/Kind/name"),
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn check_instances(i: Instances) -> Result<(), InvalidTaskSpec> {
    match i {
        Instances::Percentage(p) if !(1..=100).contains(&p) => {
            Err(field("action.instances", format!("percentage {p} is not between 1 and 100")))
        }
        _ => Ok(()),
    }
}

fn check_source(what: &'static str, m: &ManifestSource) -> Result<(), InvalidTaskSpec> {
    match (&m.content, m.paths.is_empty()) {
        (Some(_), false) => {
            return Err(field(what, format!("{}: give inline content or paths, not both", m.identifier)));
        }
        (None, true) => {
            return Err(field(what, format!("{}: neither inline content nor paths", m.identifier)));
        }
        _ => {}
    }
    if let Some(c) = &m.content {
        check_refs(format!("{what}.{}", m.identifier), c)?;
    }
    if let Some(p) = m.paths.iter().find(|p| !p.starts_with('/')) {
        return Err(field(what, format!("{}: {p:?} is not an absolute path on the delegate", m.identifier)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;
    use crate::task::{TaskParams, kind, parse_params};
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<K8sParams, String> {
        let spec = pb::TaskSpec { kind: kind::K8S.into(), params_json: v.to_string(), ..Default::default() };
        match parse_params(&spec) {
            Ok(TaskParams::K8s(p)) => Ok(*p),
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    fn base(action: serde_json::Value) -> serde_json::Value {
        json!({"action": action, "cluster": {"kubeconfig": "/k/config", "token": "<+secrets.getValue(\"env:T\")>"},
               "namespace": "web", "releaseName": "web-prod",
               "manifests": [{"identifier": "m", "content": "kind: ConfigMap"}]})
    }

    #[test]
    fn every_action_round_trips() {
        for a in [
            json!({"type": "rollingDeploy"}),
            json!({"type": "rollingRollback"}),
            json!({"type": "canaryDeploy", "instances": {"percentage": 50}}),
            json!({"type": "canaryDelete"}),
            json!({"type": "blueGreenDeploy"}),
            json!({"type": "blueGreenSwap"}),
            json!({"type": "apply"}),
            json!({"type": "scale", "workload": "Deployment/web", "instances": {"count": 3}}),
            json!({"type": "delete", "target": {"type": "resourceNames", "names": ["Deployment/web", "other/Service/x"]}}),
            json!({"type": "delete", "target": {"type": "release"}}),
        ] {
            let p = parse(base(a.clone())).unwrap_or_else(|e| panic!("{a}: {e}"));
            assert_eq!(serde_json::to_value(&p.action).unwrap(), a);
        }
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases = [
            (json!({"namespace": "Web"}), "invalid namespace"),
            (json!({"releaseName": "a_b"}), "invalid releaseName"),
            (json!({"cluster": {"kubeconfig": "rel/config"}}), "invalid cluster.kubeconfig"),
            (json!({"cluster": {"token": "abc"}}), "invalid cluster.token: must be a secret reference"),
            (json!({"manifests": []}), "invalid manifests: a rolling deploy needs at least one manifest"),
            (json!({"manifests": [{"identifier": "m"}]}), "neither inline content nor paths"),
            (json!({"manifests": [{"identifier": "m", "paths": ["x.yaml"]}]}), "not an absolute path"),
            (
                json!({"action": {"type": "scale", "workload": "web", "instances": {"count": 1}}}),
                "action.workload",
            ),
            (
                json!({"action": {"type": "canaryDeploy", "instances": {"percentage": 0}}}),
                "percentage 0 is not between 1 and 100",
            ),
            (
                json!({"action": {"type": "delete", "target": {"type": "resourceNames", "names": []}}}),
                "at least one",
            ),
            (json!({"action": {"type": "fly"}}), "unknown variant"),
        ];
        for (patch, want) in cases {
            let mut v = base(json!({"type": "rollingDeploy"}));
            for (k, x) in patch.as_object().unwrap() {
                v[k] = x.clone();
            }
            let e = parse(v).unwrap_err();
            assert!(e.contains(want), "{patch}: {e}");
        }
    }

    #[test]
    fn instances_round_up_percentages() {
        assert_eq!(Instances::Percentage(50).of(3), 2);
        assert_eq!(Instances::Percentage(100).of(4), 4);
        assert_eq!(Instances::Percentage(1).of(1), 1);
        assert_eq!(Instances::Count(2).of(10), 2);
        assert_eq!(parse_resource_name("ns/Deployment/a"), Some((Some("ns"), "Deployment", "a")));
        assert_eq!(parse_resource_name("Deployment/"), None);
    }
}
