//! Canary: a copy of the release's Deployment named `<name>-canary`, at a count
//! or a percentage of the manifest's replicas, its pods (and selector) labelled
//! `dray.io/track: canary` so they are told apart from the stable ones. The
//! other manifests are applied as they are (the canary needs its ConfigMaps, and
//! the Service sends it its share of traffic). Delete removes the canary
//! Deployment only.

use std::collections::BTreeMap;

use dray_shared::task::k8s::Instances;

use super::errors::K8sError;
use super::job::{Job, Report, TRACK_LABEL};
use super::manifests::Object;

/// The canary's name for a Deployment called `name`.
pub fn canary_name(name: &str) -> String {
    format!("{name}-canary")
}

/// The canary copy of `deployment` with `replicas` replicas.
pub fn canary_of(deployment: &Object, replicas: u32) -> Object {
    let mut c = deployment.clone();
    c.set_name(&canary_name(deployment.name()));
    c.body["spec"]["replicas"] = replicas.into();
    c.add_label(TRACK_LABEL, "canary");
    c.add_pod_label(TRACK_LABEL, "canary", true);
    c
}

/// Deploys the canary.
pub async fn deploy(job: &mut Job<'_>, instances: Instances) -> Result<Report, K8sError> {
    let deployment = job.single_deployment("canary deploy")?.clone();
    let replicas = instances.of(deployment.replicas());
    let mut canary = canary_of(&deployment, replicas);
    let mut others: Vec<Object> = job.objects.iter().filter(|o| !o.is_deployment()).cloned().collect();
    for o in others.iter_mut() {
        job.apply(o).await?;
    }
    job.log(&format!("canary {} at {replicas} of {} replica(s)", canary.name(), deployment.replicas()));
    job.apply(&mut canary).await?;
    let names = vec![canary.name().to_string()];
    job.steady(&names).await?;
    let details = BTreeMap::from([("track".to_string(), "canary".to_string())]);
    let instances = job.instances(&names, &details).await?;
    Ok(Report {
        instances: Some(instances),
        outputs: BTreeMap::from([
            ("canaryWorkload".to_string(), format!("Deployment/{}", canary.name())),
            ("canaryReplicas".to_string(), replicas.to_string()),
        ]),
    })
}

/// Deletes the canary Deployment.
pub async fn delete(job: &mut Job<'_>) -> Result<Report, K8sError> {
    let name = canary_name(job.single_deployment("canary delete")?.name());
    if job.cluster.delete("apps/v1", "Deployment", None, &name).await? {
        job.log(&format!("deleted canary Deployment {name}"));
    } else {
        job.log(&format!("canary Deployment {name} does not exist; nothing to delete"));
    }
    Ok(Report::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_canary_is_a_labelled_smaller_copy() {
        let d = Object::new(
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
                   "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}}}),
            "t",
        )
        .unwrap();
        let c = canary_of(&d, Instances::Percentage(50).of(d.replicas()));
        assert_eq!(
            c.body,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "web-canary", "labels": {"app": "web", TRACK_LABEL: "canary"}},
                   "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web", TRACK_LABEL: "canary"}},
                            "template": {"metadata": {"labels": {"app": "web", TRACK_LABEL: "canary"}}, "spec": {"containers": []}}}})
        );
    }
}
