//! The plain operations: apply manifests as given, scale a workload, delete
//! resources (by name, by release, or as the manifests describe them).

use std::collections::BTreeMap;

use dray_shared::task::k8s::{DeleteTarget, Instances, parse_resource_name};
use serde_json::{Value as Json, json};

use super::cluster::{Cluster, describe};
use super::errors::K8sError;
use super::history;
use super::job::{Job, Report, deployment_names};

/// Applies every object in order, then waits for the Deployments among them.
pub async fn apply(job: &mut Job<'_>) -> Result<Report, K8sError> {
    let mut objects = std::mem::take(&mut job.objects);
    for o in objects.iter_mut() {
        job.apply(o).await?;
    }
    let deployments = deployment_names(&objects);
    job.steady(&deployments).await?;
    let instances = if deployments.is_empty() {
        None
    } else {
        Some(job.instances(&deployments, &BTreeMap::new()).await?)
    };
    Ok(Report { instances, outputs: BTreeMap::new() })
}

/// `(apiVersion, Kind, namespace, name)` of a `Kind/name` or `namespace/Kind/name`.
fn resolve_name(s: &str) -> Result<(&'static str, &'static str, Option<&str>, &str), K8sError> {
    let (ns, kind, name) =
        parse_resource_name(s).ok_or_else(|| K8sError::Manifest(format!("{s:?} is not Kind/name")))?;
    let (api_version, kind) = Cluster::builtin_kind(kind).ok_or_else(|| {
        K8sError::Manifest(format!(
            "{s}: unknown kind {kind:?} (delete other kinds by release or by manifest)"
        ))
    })?;
    Ok((api_version, kind, ns, name))
}

/// Scales `workload` to `instances`.
pub async fn scale(job: &mut Job<'_>, workload: &str, instances: Instances) -> Result<Report, K8sError> {
    let (api_version, kind, ns, name) = resolve_name(workload)?;
    if !matches!(kind, "Deployment" | "StatefulSet" | "ReplicaSet") {
        return Err(K8sError::Manifest(format!("{workload}: a {kind} cannot be scaled")));
    }
    let live = job.cluster.get_required(api_version, kind, ns, name).await?;
    let current = live.pointer("/spec/replicas").and_then(Json::as_u64).unwrap_or(1) as u32;
    let wanted = instances.of(current);
    job.cluster.merge_patch(api_version, kind, ns, name, &json!({"spec": {"replicas": wanted}})).await?;
    job.log(&format!("scaled {kind} {name} from {current} to {wanted} replica(s)"));
    let mut report =
        Report { instances: None, outputs: BTreeMap::from([("replicas".to_string(), wanted.to_string())]) };
    if kind == "Deployment" && ns.is_none() {
        let names = vec![name.to_string()];
        job.steady(&names).await?;
        report.instances = Some(job.instances(&names, &BTreeMap::new()).await?);
    }
    Ok(report)
}

/// Deletes what `target` names.
pub async fn delete(job: &mut Job<'_>, target: &DeleteTarget) -> Result<Report, K8sError> {
    let mut doomed: Vec<(String, String, Option<String>, String)> = Vec::new();
    match target {
        DeleteTarget::ResourceNames { names } => {
            for n in names {
                let (api_version, kind, ns, name) = resolve_name(n)?;
                doomed.push((api_version.into(), kind.into(), ns.map(str::to_string), name.into()));
            }
        }
        DeleteTarget::Manifests => {
            for o in job.objects.iter().rev() {
                doomed.push((
                    o.api_version().into(),
                    o.kind().into(),
                    o.namespace().map(str::to_string),
                    o.name().into(),
                ));
            }
        }
        DeleteTarget::Release => {
            let release = job.params.release_name.clone();
            let hist = history::load(job.cluster, &release).await?;
            match hist.latest() {
                None => job.log(&format!("release {release} has no history; nothing of it to delete")),
                Some(r) => {
                    for o in r.objects.iter().rev() {
                        let s = |p: &str| o.pointer(p).and_then(Json::as_str).unwrap_or("").to_string();
                        let ns = Some(s("/metadata/namespace")).filter(|n| !n.is_empty());
                        doomed.push((s("/apiVersion"), s("/kind"), ns, s("/metadata/name")));
                    }
                }
            }
            doomed.push(("v1".into(), "Secret".into(), None, history::secret_name(&release)));
        }
    }
    let mut deleted = 0;
    for (api_version, kind, ns, name) in &doomed {
        let what = describe(kind, Some(ns.as_deref().unwrap_or(&job.cluster.namespace)), name);
        if job.cluster.delete(api_version, kind, ns.as_deref(), name).await? {
            deleted += 1;
            job.log(&format!("deleted {what}"));
        } else {
            job.log(&format!("{what} does not exist"));
        }
    }
    Ok(Report { instances: None, outputs: BTreeMap::from([("deleted".to_string(), deleted.to_string())]) })
}
