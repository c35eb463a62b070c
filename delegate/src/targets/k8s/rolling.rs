//! Rolling deploy and rollback. A deploy applies every manifest (the
//! Deployments' own rolling update does the rest), waits for the rollout and
//! records the revision in the release history; with pruning, it then deletes
//! what the previous successful revision had and this one has not. A rollback
//! re-applies the last
//! successful revision before the current one and deletes what only the
//! current one had.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value as Json;

use super::errors::K8sError;
use super::history::{self, History, Status};
use super::job::{Job, Report, TRACK_LABEL, deployment_names};
use super::manifests::Object;

/// Applies every manifest, waits, records the revision.
pub async fn deploy(job: &mut Job<'_>) -> Result<Report, K8sError> {
    let release = job.params.release_name.clone();
    let mut objects = std::mem::take(&mut job.objects);
    for o in objects.iter_mut().filter(|o| o.is_deployment()) {
        o.add_pod_label(TRACK_LABEL, "stable", false);
    }
    let mut hist = history::load(job.cluster, &release).await?;
    let revision = hist.push(&objects, &job.params.deployment);
    history::save(job.cluster, &release, &hist).await?;
    job.log(&format!("release {release}: revision {revision}"));
    let result = apply_and_wait(job, &mut objects).await;
    hist.set(revision, if result.is_ok() { Status::Succeeded } else { Status::Failed });
    history::save(job.cluster, &release, &hist).await?;
    result?;
    if job.params.prune {
        prune(job, &hist, revision, &objects).await?;
    }
    let deployments = deployment_names(&objects);
    let details = BTreeMap::from([("revision".to_string(), revision.to_string())]);
    let instances = job.instances(&deployments, &details).await?;
    Ok(Report {
        instances: Some(instances),
        outputs: BTreeMap::from([("releaseNumber".to_string(), revision.to_string())]),
    })
}

async fn apply_and_wait(job: &mut Job<'_>, objects: &mut [Object]) -> Result<(), K8sError> {
    for o in objects.iter_mut() {
        job.apply(o).await?;
    }
    job.steady(&deployment_names(objects)).await
}

/// Deletes what the last successful revision before `revision` applied and
/// `objects` no longer describe.
async fn prune(job: &mut Job<'_>, hist: &History, revision: u32, objects: &[Object]) -> Result<(), K8sError> {
    let Some(previous) =
        hist.revisions.iter().rev().find(|r| r.number < revision && r.status == Status::Succeeded)
    else {
        return Ok(());
    };
    let namespace = job.cluster.namespace.clone();
    let keep: HashSet<_> = objects.iter().map(|o| identity_in(&o.body, &namespace)).collect();
    let gone = stale(&previous.objects, &keep, &namespace);
    for o in gone.iter().rev() {
        let (api_version, kind, _, name) = identity_in(o, &namespace);
        let ns = Object::new(o.clone(), "release history")?.namespace().map(str::to_string);
        if job.cluster.delete(&api_version, &kind, ns.as_deref(), &name).await? {
            job.log(&format!("pruned {kind} {name} (no longer in the manifests)"));
        }
    }
    Ok(())
}

/// The objects of `old` whose identity is not in `keep`.
fn stale(old: &[Json], keep: &HashSet<(String, String, String, String)>, namespace: &str) -> Vec<Json> {
    old.iter().filter(|o| !keep.contains(&identity_in(o, namespace))).cloned().collect()
}

/// `(apiVersion, kind, namespace, name)`; a namespace left out (filled in only
/// when applied) counts as the release's, so recorded and applied objects compare.
fn identity_in(o: &Json, namespace: &str) -> (String, String, String, String) {
    let s = |p: &str| o.pointer(p).and_then(Json::as_str).unwrap_or("").to_string();
    let ns =
        Some(s("/metadata/namespace")).filter(|n| !n.is_empty()).unwrap_or_else(|| namespace.to_string());
    (s("/apiVersion"), s("/kind"), ns, s("/metadata/name"))
}

/// Rolls the release back to its last successful revision before the current one.
pub async fn rollback(job: &mut Job<'_>) -> Result<Report, K8sError> {
    let release = job.params.release_name.clone();
    let mut hist = history::load(job.cluster, &release).await?;
    if hist.latest().is_some_and(|r| r.status == Status::RolledBack) {
        job.log(&format!("release {release}: already rolled back; nothing to do"));
        return Ok(Report::default());
    }
    let Some((latest, target)) = hist.rollback_pair() else {
        job.log(&format!("release {release}: no earlier successful revision to roll back to; skipping"));
        return Ok(Report::default());
    };
    if !job.params.deployment.is_empty() && latest.deployment != job.params.deployment {
        job.log(&format!(
            "release {release}: revision {} was not deployed by this stage; nothing to roll back",
            latest.number
        ));
        return Ok(Report::default());
    }
    let (latest_n, target_n) = (latest.number, target.number);
    job.log(&format!("release {release}: rolling back from revision {latest_n} to revision {target_n}"));
    let mut objects = target
        .objects
        .iter()
        .map(|b| Object::new(b.clone(), "release history"))
        .collect::<Result<Vec<_>, _>>()?;
    let namespace = job.cluster.namespace.clone();
    let keep: HashSet<_> = target.objects.iter().map(|o| identity_in(o, &namespace)).collect();
    let extra = stale(&latest.objects, &keep, &namespace);
    for o in objects.iter_mut() {
        job.apply(o).await?;
    }
    for o in extra.iter().rev() {
        let (api_version, kind, _, name) = identity_in(o, &namespace);
        let ns = Object::new(o.clone(), "release history")?.namespace().map(str::to_string);
        if job.cluster.delete(&api_version, &kind, ns.as_deref(), &name).await? {
            job.log(&format!("deleted {kind} {name} (not in revision {target_n})"));
        }
    }
    hist.set(latest_n, Status::RolledBack);
    history::save(job.cluster, &release, &hist).await?;
    let deployments = deployment_names(&objects);
    job.steady(&deployments).await?;
    let details = BTreeMap::from([("revision".to_string(), target_n.to_string())]);
    let instances = job.instances(&deployments, &details).await?;
    Ok(Report {
        instances: Some(instances),
        outputs: BTreeMap::from([("releaseNumber".to_string(), target_n.to_string())]),
    })
}
