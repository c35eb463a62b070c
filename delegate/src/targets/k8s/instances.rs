//! The instances a deploy leaves running: the pods matching a workload's
//! selector, reported as the `dray.instances` output.

use std::collections::BTreeMap;

use dray_shared::task::Instance;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::Value as Json;

use super::cluster::Cluster;
use super::errors::K8sError;

/// `a=b,c=d` for a label map.
pub fn selector(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// The `matchLabels` of a workload object.
pub fn match_labels(workload: &Json) -> BTreeMap<String, String> {
    workload
        .pointer("/spec/selector/matchLabels")
        .and_then(Json::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

/// One pod as an instance.
pub fn instance(pod: &Pod, details: &BTreeMap<String, String>) -> Instance {
    let spec = pod.spec.as_ref();
    Instance {
        name: pod.metadata.name.clone().unwrap_or_default(),
        host: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        version: spec.and_then(|s| s.containers.first()).and_then(|c| c.image.clone()).unwrap_or_default(),
        status: pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default(),
        details: details.clone(),
    }
}

/// The pods of `workload` (a Deployment as JSON), each with `details`.
pub async fn of_workload(
    cluster: &Cluster,
    workload: &Json,
    details: &BTreeMap<String, String>,
) -> Result<Vec<Instance>, K8sError> {
    let labels = match_labels(workload);
    if labels.is_empty() {
        return Ok(Vec::new());
    }
    let name = workload.pointer("/metadata/name").and_then(Json::as_str).unwrap_or("");
    let pods: Api<Pod> = Api::namespaced(cluster.client().clone(), &cluster.namespace);
    let list = pods.list(&ListParams::default().labels(&selector(&labels))).await.map_err(|e| {
        K8sError::from_kube(format!("list the pods of Deployment {}/{name}", cluster.namespace), e)
    })?;
    let mut out: Vec<Instance> = list.items.iter().map(|p| instance(p, details)).collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_become_instances() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "prod"},
            "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "nginx:1.27"}]},
            "status": {"phase": "Running"}
        }))
        .unwrap();
        let details = BTreeMap::from([("track".to_string(), "stable".to_string())]);
        let i = instance(&pod, &details);
        assert_eq!(
            (i.name.as_str(), i.host.as_str(), i.namespace.as_str(), i.version.as_str(), i.status.as_str()),
            ("web-1", "node-a", "prod", "nginx:1.27", "Running")
        );
        assert_eq!(i.details, details);
        let d = json!({"spec": {"selector": {"matchLabels": {"b": "2", "a": "1"}}}});
        assert_eq!(selector(&match_labels(&d)), "a=1,b=2");
    }
}
