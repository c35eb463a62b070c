//! The `k8s` target: deploys to and operates on a Kubernetes cluster with
//! kube-rs, from manifests rendered on the delegate.
//!
//! - `client`: connection (kubeconfig file + context, or in-cluster; a bearer
//!   token from a secret reference replaces the kubeconfig's credentials).
//! - `manifests`: reading, `{{ .Values.x }}` rendering, parsing, release labels.
//! - `cluster`: server-side apply, get, patch, delete of dynamic objects.
//! - `history`: release revisions in the Secret `release-<releaseName>`.
//! - `steady`: Deployment rollout status; `instances`: pods → `dray.instances`.
//! - `rolling`, `canary`, `bluegreen`, `ops`: the actions.
//! - `errors`: failures and the error types failure strategies match.
//!
//! Secret references in manifests, values and the token are resolved right
//! before use, so their values are masked in every log line and the outcome.
//! The whole task runs within the step timeout (default [`DEFAULT_TIMEOUT`]).

mod bluegreen;
mod canary;
mod client;
mod cluster;
mod errors;
mod history;
mod instances;
mod job;
mod manifests;
mod ops;
mod rolling;
mod steady;
#[cfg(test)]
mod tests;

use std::time::Duration;

use dray_shared::error_type::ErrorType;
use dray_shared::pb::{LogStream, TaskSpec};
use dray_shared::task::k8s::{Action, K8sParams, ManifestSource};
use dray_shared::task::{self, INSTANCES_OUTPUT, TaskParams, kind};
use tokio::time::Instant;

use self::errors::K8sError;
use self::job::{Job, Report};
use self::manifests::Text;
use super::{CheckContext, Outcome, RunContext, Target};

/// Timeout when the spec says 0.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Time kept after waiting for rollouts, to record and report the outcome.
const WRAP_UP: Duration = Duration::from_secs(3);

/// Runs `k8s` tasks.
#[derive(Debug, Clone, Copy)]
pub struct K8s {
    /// Run timeout of tasks whose spec gives none.
    default_timeout: Duration,
}

impl Default for K8s {
    fn default() -> Self {
        K8s { default_timeout: DEFAULT_TIMEOUT }
    }
}

fn k8s_params(spec: &TaskSpec) -> Result<K8sParams, String> {
    match task::parse_params(spec) {
        Ok(TaskParams::K8s(p)) => Ok(*p),
        Ok(_) => Err(format!("task kind {:?} is not a k8s task", spec.kind)),
        Err(e) => Err(e.to_string()),
    }
}

#[async_trait::async_trait]
impl Target for K8s {
    fn kinds(&self) -> &'static [&'static str] {
        &[kind::K8S]
    }

    async fn check(&self, spec: &TaskSpec, cx: &CheckContext) -> Result<(), String> {
        let p = k8s_params(spec)?;
        client::check(&p.cluster)?;
        if let Some(t) = &p.cluster.token {
            cx.secrets.check_text("cluster.token", t).await.map_err(|e| e.to_string())?;
        }
        for (what, list) in [("manifests", &p.manifests), ("values", &p.values)] {
            for m in list {
                if let Some(c) = &m.content {
                    cx.secrets
                        .check_text(&format!("{what}.{}", m.identifier), c)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                if let Some(missing) = m.paths.iter().find(|p| !std::path::Path::new(p).exists()) {
                    return Err(format!(
                        "{what} {}: {missing} does not exist on this delegate",
                        m.identifier
                    ));
                }
            }
        }
        Ok(())
    }

    async fn run(&self, spec: TaskSpec, mut cx: RunContext) -> Outcome {
        let p = match k8s_params(&spec) {
            Ok(p) => p,
            Err(e) => return Outcome::failed(e),
        };
        let timeout = match spec.timeout_ms {
            0 => self.default_timeout,
            ms => Duration::from_millis(ms),
        };
        let deadline = Instant::now() + timeout;
        // Waits for rollouts end a little before the hard deadline, so a rollout
        // that never finishes is reported with the cluster's last word and its
        // revision is marked failed in the release history.
        let wait_deadline = deadline - (timeout / 5).min(WRAP_UP);
        let mut stop = cx.stop.clone();
        let result = tokio::select! {
            reason = stop.stopped() => return Outcome::stopped(reason),
            r = tokio::time::timeout_at(deadline, execute(&p, &mut cx, wait_deadline)) => r,
        };
        let outcome = match result {
            Err(_) => Outcome::failed_as(
                ErrorType::Timeout,
                format!("{} timed out after {}", p.action.name(), humantime::format_duration(timeout)),
            ),
            Ok(Err(e)) => Outcome::failed_as(e.error_type(), e.to_string()),
            Ok(Ok(report)) => {
                let mut outputs = report.outputs;
                if let Some(instances) = report.instances {
                    outputs.insert(
                        INSTANCES_OUTPUT.to_string(),
                        serde_json::to_string(&instances).unwrap_or_else(|_| "[]".into()),
                    );
                }
                Outcome::succeeded().with_outputs(outputs)
            }
        };
        if !outcome.success {
            cx.logs.line(LogStream::Stdout, &format!("{} failed: {}", p.action.name(), outcome.message));
        }
        cx.logs.flush().await;
        outcome
    }
}

/// Reads every source, resolving secret references in what it reads.
async fn read_sources(
    what: &str,
    sources: &[ManifestSource],
    cx: &mut RunContext,
) -> Result<Vec<Text>, K8sError> {
    let mut out = Vec::new();
    for m in sources {
        let field = format!("{what}.{}", m.identifier);
        if let Some(c) = &m.content {
            let text = cx.substitute(&field, c).await.map_err(|e| K8sError::Manifest(e.to_string()))?;
            out.push(Text { origin: m.identifier.clone(), text });
        }
        for path in &m.paths {
            for file in manifests::files_of(path)? {
                let shown = file.display().to_string();
                let raw = tokio::fs::read_to_string(&file)
                    .await
                    .map_err(|e| K8sError::Manifest(format!("{}: {shown}: {e}", m.identifier)))?;
                let text =
                    cx.substitute(&field, &raw).await.map_err(|e| K8sError::Manifest(e.to_string()))?;
                out.push(Text { origin: format!("{}:{shown}", m.identifier), text });
            }
        }
    }
    Ok(out)
}

async fn execute(p: &K8sParams, cx: &mut RunContext, deadline: Instant) -> Result<Report, K8sError> {
    let token = match &p.cluster.token {
        Some(t) => {
            Some(cx.substitute("cluster.token", t).await.map_err(|e| K8sError::Config(e.to_string()))?)
        }
        None => None,
    };
    let manifest_texts = read_sources("manifests", &p.manifests, cx).await?;
    let value_texts = read_sources("values", &p.values, cx).await?;
    let values = manifests::values(&value_texts)?;
    let objects = manifests::objects(&manifest_texts, &values, &p.release_name)?;
    let client = client::connect(&p.cluster, token.as_deref()).await?;
    let cluster = cluster::Cluster::new(client, &p.namespace);
    cx.logs.line(
        LogStream::Stdout,
        &format!(
            "{} of release {} in namespace {} ({} object(s) from the manifests)",
            p.action.name(),
            p.release_name,
            p.namespace,
            objects.len()
        ),
    );
    let mut job = Job { cluster: &cluster, params: p, objects, deadline, logs: &mut cx.logs };
    let report = run_action(&mut job).await;
    cx.logs.flush().await;
    report
}

/// Runs the task's action.
async fn run_action(job: &mut Job<'_>) -> Result<Report, K8sError> {
    match &job.params.action {
        Action::RollingDeploy => rolling::deploy(job).await,
        Action::RollingRollback => rolling::rollback(job).await,
        Action::CanaryDeploy { instances } => canary::deploy(job, *instances).await,
        Action::CanaryDelete => canary::delete(job).await,
        Action::BlueGreenDeploy => bluegreen::deploy(job).await,
        Action::BlueGreenSwap => bluegreen::swap(job).await,
        Action::Apply => ops::apply(job).await,
        Action::Scale { workload, instances } => ops::scale(job, workload, *instances).await,
        Action::Delete { target } => ops::delete(job, target).await,
    }
}
