//! Blue-green. The manifests hold one Deployment and the primary Service (the
//! first Service). A deploy finds the colour the primary Service selects
//! (`dray.io/color`), deploys the other one — the stage colour — as
//! `<deployment>-<colour>` and points the stage Service `<service>-stage` at it;
//! the primary Service keeps its colour (on the first deploy both Services
//! select the new colour). The swap switches the primary Service's selector to
//! the stage colour in one merge patch, then points the stage Service at the old
//! colour; swapping again swaps back, which is how a rollback undoes a swap.

use std::collections::BTreeMap;

use serde_json::{Value as Json, json};

use super::errors::K8sError;
use super::job::{COLOR_LABEL, Job, Report};
use super::manifests::Object;

/// The other colour.
pub fn other(color: &str) -> &'static str {
    if color == "blue" { "green" } else { "blue" }
}

/// The stage Service's name for a primary Service called `name`.
pub fn stage_service_name(name: &str) -> String {
    format!("{name}-stage")
}

fn selector_color(service: &Json) -> Option<String> {
    service
        .pointer(&format!("/spec/selector/{}", COLOR_LABEL.replace('/', "~1")))
        .and_then(Json::as_str)
        .map(str::to_string)
}

/// The Service manifest `svc` selecting `color`, renamed to `name`.
fn service_for(svc: &Object, name: &str, color: &str) -> Object {
    let mut s = svc.clone();
    s.set_name(name);
    if !s.body.pointer("/spec/selector").is_some_and(Json::is_object) {
        s.body["spec"]["selector"] = json!({});
    }
    s.body["spec"]["selector"][COLOR_LABEL] = Json::String(color.to_string());
    s.add_label(COLOR_LABEL, color);
    s
}

fn primary_service(job: &Job<'_>, strategy: &str) -> Result<Object, K8sError> {
    job.objects.iter().find(|o| o.kind() == "Service" && o.api_version() == "v1").cloned().ok_or_else(|| {
        K8sError::Manifest(format!("a {strategy} needs a Service in the manifests; there is none"))
    })
}

/// Deploys the stage colour.
pub async fn deploy(job: &mut Job<'_>) -> Result<Report, K8sError> {
    let deployment = job.single_deployment("blue-green deploy")?.clone();
    let primary = primary_service(job, "blue-green deploy")?;
    let live = job.cluster.get("v1", "Service", None, primary.name()).await?;
    let primary_color = live.as_ref().and_then(selector_color);
    let stage = primary_color.as_deref().map_or("blue", other);
    job.log(&format!(
        "primary Service {} selects {}; deploying {stage}",
        primary.name(),
        primary_color.as_deref().unwrap_or("nothing yet")
    ));
    let mut others: Vec<Object> = job
        .objects
        .iter()
        .filter(|o| !(o.is_deployment() || (o.kind() == "Service" && o.name() == primary.name())))
        .cloned()
        .collect();
    for o in others.iter_mut() {
        job.apply(o).await?;
    }
    let mut colored = deployment.clone();
    colored.set_name(&format!("{}-{stage}", deployment.name()));
    colored.add_label(COLOR_LABEL, stage);
    colored.add_pod_label(COLOR_LABEL, stage, true);
    job.apply(&mut colored).await?;
    let mut stage_svc = service_for(&primary, &stage_service_name(primary.name()), stage);
    job.apply(&mut stage_svc).await?;
    let keep = primary_color.clone().unwrap_or_else(|| stage.to_string());
    let mut primary_svc = service_for(&primary, primary.name(), &keep);
    job.apply(&mut primary_svc).await?;
    let names = vec![colored.name().to_string()];
    job.steady(&names).await?;
    let details = BTreeMap::from([("color".to_string(), stage.to_string())]);
    let instances = job.instances(&names, &details).await?;
    Ok(Report {
        instances: Some(instances),
        outputs: BTreeMap::from([
            ("stageColor".to_string(), stage.to_string()),
            ("primaryColor".to_string(), keep),
        ]),
    })
}

/// Swaps the primary and stage Services' colours.
pub async fn swap(job: &mut Job<'_>) -> Result<Report, K8sError> {
    let primary = primary_service(job, "blue-green swap")?;
    let stage_name = stage_service_name(primary.name());
    let missing = |name: &str| {
        K8sError::Other(format!(
            "Service {}/{name} does not exist; deploy blue-green first",
            job.cluster.namespace
        ))
    };
    let live_primary = job
        .cluster
        .get("v1", "Service", None, primary.name())
        .await?
        .ok_or_else(|| missing(primary.name()))?;
    let live_stage =
        job.cluster.get("v1", "Service", None, &stage_name).await?.ok_or_else(|| missing(&stage_name))?;
    let (Some(p), Some(s)) = (selector_color(&live_primary), selector_color(&live_stage)) else {
        return Err(K8sError::Other(format!(
            "Services {} and {stage_name} must both select a {COLOR_LABEL}",
            primary.name()
        )));
    };
    if p == s {
        job.log(&format!("primary and stage Services both select {p}; nothing to swap"));
        return Ok(Report::default());
    }
    let patch =
        |c: &str| json!({"metadata": {"labels": {COLOR_LABEL: c}}, "spec": {"selector": {COLOR_LABEL: c}}});
    job.cluster.merge_patch("v1", "Service", None, primary.name(), &patch(&s)).await?;
    job.log(&format!("primary Service {} now selects {s} (was {p})", primary.name()));
    job.cluster.merge_patch("v1", "Service", None, &stage_name, &patch(&p)).await?;
    job.log(&format!("stage Service {stage_name} now selects {p}"));
    let deployment = job.objects.iter().find(|o| o.is_deployment()).map(|d| format!("{}-{s}", d.name()));
    let instances = match deployment {
        Some(d) => Some(job.instances(&[d], &BTreeMap::from([("color".to_string(), s.clone())])).await?),
        None => None,
    };
    Ok(Report { instances, outputs: BTreeMap::from([("primaryColor".to_string(), s)]) })
}
