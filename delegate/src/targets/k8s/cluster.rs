//! The API calls every strategy uses, on dynamic objects: resolve a kind to its
//! resource, server-side apply, get, merge-patch, delete. Errors keep the
//! server's message and name what was being done.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Scope;
use kube::{Client, discovery};
use serde_json::Value as Json;

use super::errors::K8sError;
use super::manifests::Object;

/// Field manager of every apply.
pub const FIELD_MANAGER: &str = "dray";

/// Built-in kinds resolved without a discovery request:
/// (apiVersion, kind, plural, namespaced).
const BUILTIN: &[(&str, &str, &str, bool)] = &[
    ("apps/v1", "Deployment", "deployments", true),
    ("apps/v1", "StatefulSet", "statefulsets", true),
    ("apps/v1", "DaemonSet", "daemonsets", true),
    ("apps/v1", "ReplicaSet", "replicasets", true),
    ("v1", "Service", "services", true),
    ("v1", "ConfigMap", "configmaps", true),
    ("v1", "Secret", "secrets", true),
    ("v1", "Pod", "pods", true),
    ("v1", "ServiceAccount", "serviceaccounts", true),
    ("v1", "PersistentVolumeClaim", "persistentvolumeclaims", true),
    ("v1", "Namespace", "namespaces", false),
    ("batch/v1", "Job", "jobs", true),
    ("batch/v1", "CronJob", "cronjobs", true),
    ("networking.k8s.io/v1", "Ingress", "ingresses", true),
    ("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", true),
    ("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", true),
    ("rbac.authorization.k8s.io/v1", "Role", "roles", true),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", true),
];

/// A resolved kind.
#[derive(Debug, Clone)]
pub struct Kind {
    /// Group, version, kind, plural.
    pub ar: ApiResource,
    /// Namespaced (or cluster-scoped).
    pub namespaced: bool,
}

/// A cluster connection scoped to the release's namespace.
pub struct Cluster {
    client: Client,
    /// The release's namespace.
    pub namespace: String,
    kinds: Mutex<HashMap<(String, String), Kind>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("namespace", &self.namespace).finish()
    }
}

fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

impl Cluster {
    /// Wraps `client` for `namespace`.
    pub fn new(client: Client, namespace: &str) -> Self {
        Cluster { client, namespace: namespace.to_string(), kinds: Mutex::new(HashMap::new()) }
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The resource for `apiVersion` + `kind` (a discovery request for kinds
    /// not built in, cached for the task).
    pub async fn kind(&self, api_version: &str, kind: &str) -> Result<Kind, K8sError> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(k) = self.kinds.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(k.clone());
        }
        let (group, version) = split_api_version(api_version);
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let resolved = match BUILTIN.iter().find(|(av, k, _, _)| *av == api_version && *k == kind) {
            Some((_, _, plural, namespaced)) => {
                Kind { ar: ApiResource::from_gvk_with_plural(&gvk, plural), namespaced: *namespaced }
            }
            None => {
                let (ar, caps) = discovery::pinned_kind(&self.client, &gvk).await.map_err(|e| match e {
                    kube::Error::Discovery(d) => K8sError::Manifest(format!(
                        "{kind} ({api_version}) is not served by this cluster: {d}"
                    )),
                    other => K8sError::from_kube(format!("discover {kind} ({api_version})"), other),
                })?;
                Kind { ar, namespaced: caps.scope == Scope::Namespaced }
            }
        };
        self.kinds.lock().unwrap_or_else(|e| e.into_inner()).insert(key, resolved.clone());
        Ok(resolved)
    }

    /// The resource for a bare kind name (`Deployment`), built-in kinds only.
    pub fn builtin_kind(kind: &str) -> Option<(&'static str, &'static str)> {
        BUILTIN.iter().find(|(_, k, _, _)| k.eq_ignore_ascii_case(kind)).map(|(av, k, _, _)| (*av, *k))
    }

    fn api(&self, kind: &Kind, namespace: Option<&str>) -> Api<DynamicObject> {
        if kind.namespaced {
            Api::namespaced_with(self.client.clone(), namespace.unwrap_or(&self.namespace), &kind.ar)
        } else {
            Api::all_with(self.client.clone(), &kind.ar)
        }
    }

    /// Server-side apply of `obj` (forced: this release owns its fields).
    /// Fills in the namespace of namespaced objects that name none.
    pub async fn apply(&self, obj: &mut Object) -> Result<Json, K8sError> {
        let kind = self.kind(obj.api_version(), obj.kind()).await?;
        if kind.namespaced && obj.namespace().is_none() {
            obj.body["metadata"]["namespace"] = Json::String(self.namespace.clone());
        }
        let what = format!("apply {}", describe(obj.kind(), obj.namespace(), obj.name()));
        let api = self.api(&kind, obj.namespace());
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let out = api.patch(obj.name(), &params, &Patch::Apply(&obj.body)).await;
        let out = out.map_err(|e| K8sError::from_kube(what, e))?;
        Ok(serde_json::to_value(out).unwrap_or(Json::Null))
    }

    /// The object, or `None` when it does not exist.
    pub async fn get(
        &self,
        api_version: &str,
        kind_name: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Json>, K8sError> {
        let kind = self.kind(api_version, kind_name).await?;
        let what = format!("get {}", describe(kind_name, namespace.or(Some(&self.namespace)), name));
        let out = self.api(&kind, namespace).get_opt(name).await.map_err(|e| K8sError::from_kube(what, e))?;
        Ok(out.map(|o| serde_json::to_value(o).unwrap_or(Json::Null)))
    }

    /// The object; a 404 is an error carrying the server's message.
    pub async fn get_required(
        &self,
        api_version: &str,
        kind_name: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Json, K8sError> {
        let kind = self.kind(api_version, kind_name).await?;
        let what = format!("get {}", describe(kind_name, namespace.or(Some(&self.namespace)), name));
        let out = self.api(&kind, namespace).get(name).await.map_err(|e| K8sError::from_kube(what, e))?;
        Ok(serde_json::to_value(out).unwrap_or(Json::Null))
    }

    /// A JSON merge patch of the object.
    pub async fn merge_patch(
        &self,
        api_version: &str,
        kind_name: &str,
        namespace: Option<&str>,
        name: &str,
        patch: &Json,
    ) -> Result<Json, K8sError> {
        let kind = self.kind(api_version, kind_name).await?;
        let what = format!("patch {}", describe(kind_name, namespace.or(Some(&self.namespace)), name));
        let out = self
            .api(&kind, namespace)
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(|e| K8sError::from_kube(what, e))?;
        Ok(serde_json::to_value(out).unwrap_or(Json::Null))
    }

    /// Deletes the object (dependents in the background). `false` when it was not there.
    pub async fn delete(
        &self,
        api_version: &str,
        kind_name: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<bool, K8sError> {
        let kind = self.kind(api_version, kind_name).await?;
        let what = format!("delete {}", describe(kind_name, namespace.or(Some(&self.namespace)), name));
        match self.api(&kind, namespace).delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(true),
            Err(e) => {
                let e = K8sError::from_kube(what, e);
                if e.is_not_found() { Ok(false) } else { Err(e) }
            }
        }
    }
}

/// `Deployment web/app` (or `Namespace app` when cluster-scoped).
pub fn describe(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}
