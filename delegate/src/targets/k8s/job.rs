//! What every strategy works with: the cluster, the task's parameters, the
//! rendered objects, the deadline and the log; and what it reports back.

use std::collections::BTreeMap;

use dray_shared::pb::LogStream;
use dray_shared::task::Instance;
use dray_shared::task::k8s::K8sParams;
use serde_json::Value as Json;
use tokio::time::Instant;

use super::cluster::{Cluster, describe};
use super::errors::K8sError;
use super::manifests::Object;
use super::{instances, steady};
use crate::targets::LogSink;

/// Label marking a canary's or the stable workload's pods.
pub const TRACK_LABEL: &str = "dray.io/track";
/// Label marking a blue-green colour.
pub const COLOR_LABEL: &str = "dray.io/color";

/// One task's work.
pub struct Job<'a> {
    /// The cluster, scoped to the release's namespace.
    pub cluster: &'a Cluster,
    /// The task's parameters.
    pub params: &'a K8sParams,
    /// The rendered manifests (empty when the task has none).
    pub objects: Vec<Object>,
    /// When the step's time runs out.
    pub deadline: Instant,
    /// The task's log.
    pub logs: &'a mut LogSink,
}

/// What a strategy reports.
#[derive(Debug, Default)]
pub struct Report {
    /// Instances left running (reported as `dray.instances`), when the action deploys.
    pub instances: Option<Vec<Instance>>,
    /// Other outputs.
    pub outputs: BTreeMap<String, String>,
}

impl Job<'_> {
    /// Logs a line.
    pub fn log(&mut self, line: &str) {
        self.logs.line(LogStream::Stdout, line);
    }

    /// Applies `obj`, logging it.
    pub async fn apply(&mut self, obj: &mut Object) -> Result<Json, K8sError> {
        let live = self.cluster.apply(obj).await?;
        let line = format!("applied {}", describe(obj.kind(), obj.namespace(), obj.name()));
        self.log(&line);
        Ok(live)
    }

    /// Waits for these Deployments, unless the task skips steady state.
    pub async fn steady(&mut self, deployments: &[String]) -> Result<(), K8sError> {
        if self.params.skip_steady_state {
            if !deployments.is_empty() {
                self.log("skipping the steady-state check");
            }
            return Ok(());
        }
        self.logs.flush().await;
        steady::wait(self.cluster, deployments, self.deadline, self.logs).await
    }

    /// The pods of these Deployments (read live), each with `details`.
    pub async fn instances(
        &mut self,
        deployments: &[String],
        details: &BTreeMap<String, String>,
    ) -> Result<Vec<Instance>, K8sError> {
        let mut out = Vec::new();
        for name in deployments {
            if let Some(live) = self.cluster.get("apps/v1", "Deployment", None, name).await? {
                out.extend(instances::of_workload(self.cluster, &live, details).await?);
            }
        }
        let line = format!("{} instance(s) running", out.len());
        self.log(&line);
        Ok(out)
    }

    /// The one Deployment of the manifests (canary and blue-green need exactly one).
    pub fn single_deployment(&self, strategy: &str) -> Result<&Object, K8sError> {
        let deps: Vec<&Object> = self.objects.iter().filter(|o| o.is_deployment()).collect();
        match deps.as_slice() {
            [one] => Ok(one),
            [] => Err(K8sError::Manifest(format!(
                "a {strategy} needs a Deployment in the manifests; there is none"
            ))),
            many => Err(K8sError::Manifest(format!(
                "a {strategy} needs exactly one Deployment in the manifests; there are {} ({})",
                many.len(),
                many.iter().map(|o| o.name()).collect::<Vec<_>>().join(", ")
            ))),
        }
    }
}

/// The names of the Deployments among `objects`.
pub fn deployment_names(objects: &[Object]) -> Vec<String> {
    objects.iter().filter(|o| o.is_deployment()).map(|o| o.name().to_string()).collect()
}
