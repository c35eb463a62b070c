//! The pipeline schema: stages (in sequence or parallel), steps, step groups.
//! Step `spec`s stay free-form here; [`super::steps`] validates them per type.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use super::common::{DeploymentType, FailureStrategy, StageWhen, StepWhen, Variable};

/// `pipeline:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Pipeline {
    /// Display name.
    pub name: String,
    /// Identifier.
    pub identifier: String,
    /// Organisation (default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_identifier: Option<String>,
    /// Project (default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_identifier: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Limit on the whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Delegate tags every task needs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegate_selectors: Vec<String>,
    /// Pipeline variables (`<+pipeline.variables.NAME>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<Variable>,
    /// Barriers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_control: Option<FlowControl>,
    /// Stages, in order.
    pub stages: Vec<StageItem>,
}

impl Pipeline {
    /// Every stage, in order (parallel groups flattened).
    pub fn all_stages(&self) -> Vec<&Stage> {
        let mut out = Vec::new();
        for item in &self.stages {
            match item {
                StageItem::Stage(s) => out.push(&**s),
                StageItem::Parallel(ps) => out.extend(ps.iter().map(|p| &p.stage)),
            }
        }
        out
    }

    /// Identifiers of the `flowControl` barriers.
    pub fn barrier_ids(&self) -> Vec<&str> {
        self.flow_control.iter().flat_map(|f| f.barriers.iter().map(|b| b.identifier.as_str())).collect()
    }
}

/// `flowControl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowControl {
    /// Barriers steps can meet at.
    #[serde(default)]
    pub barriers: Vec<BarrierDef>,
}

/// A barrier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BarrierDef {
    /// Display name.
    pub name: String,
    /// Identifier (`barrierRef` of Barrier steps).
    pub identifier: String,
}

/// An entry of `stages`: one stage, or stages that run side by side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StageItem {
    /// `- stage: …`.
    Stage(Box<Stage>),
    /// `- parallel: [ {stage: …}, … ]`.
    Parallel(Vec<ParallelStage>),
}

/// An entry of a parallel stage group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParallelStage {
    /// The stage.
    pub stage: Stage,
}

/// Stage types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StageType {
    /// Deploys a service to an environment's infrastructure.
    Deployment,
    /// Runs steps with no deployment context.
    Custom,
    /// Waits for approvals.
    Approval,
}

/// A stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Stage {
    /// Display name.
    pub name: String,
    /// Identifier, unique in the pipeline.
    pub identifier: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Stage type.
    #[serde(rename = "type")]
    pub stage_type: StageType,
    /// Limit on the stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Delegate tags every task of the stage needs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegate_selectors: Vec<String>,
    /// Stage variables (`<+stage.variables.NAME>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<Variable>,
    /// When it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<StageWhen>,
    /// What to do when it fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failure_strategies: Vec<FailureStrategy>,
    /// What it does.
    pub spec: StageSpec,
}

/// `spec` of a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StageSpec {
    /// Platform (Deployment stages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_type: Option<DeploymentType>,
    /// Service deployed (Deployment stages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceConfig>,
    /// Where it is deployed (Deployment stages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentConfig>,
    /// The steps.
    pub execution: Execution,
}

/// `service` of a Deployment stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceConfig {
    /// Service identifier (or `<+input>`).
    pub service_ref: String,
}

/// `environment` of a Deployment stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvironmentConfig {
    /// Environment identifier (or `<+input>`).
    pub environment_ref: String,
    /// Infrastructures of that environment to deploy to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub infrastructure_definitions: Vec<InfraRef>,
}

/// `{ identifier: INFRA }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfraRef {
    /// Infrastructure identifier (or `<+input>`).
    pub identifier: String,
}

/// `execution`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Execution {
    /// Steps, in order.
    pub steps: Vec<StepItem>,
    /// Steps run when the stage rolls back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollback_steps: Vec<StepItem>,
}

/// An entry of a step list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StepItem {
    /// `- step: …`.
    Step(Box<Step>),
    /// `- parallel: [ … ]` (steps or step groups side by side).
    Parallel(Vec<StepItem>),
    /// `- stepGroup: …`.
    StepGroup(Box<StepGroup>),
}

/// A step group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StepGroup {
    /// Display name.
    pub name: String,
    /// Identifier, unique in the stage.
    pub identifier: String,
    /// Steps, in order.
    pub steps: Vec<StepItem>,
    /// Steps run when the group rolls back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollback_steps: Vec<StepItem>,
    /// When it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<StepWhen>,
    /// What to do when it fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failure_strategies: Vec<FailureStrategy>,
    /// Delegate tags its tasks need.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegate_selectors: Vec<String>,
    /// Limit on the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// A step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Step {
    /// Display name.
    pub name: String,
    /// Identifier, unique in the stage.
    pub identifier: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Step type (a name the step-type registry knows).
    #[serde(rename = "type")]
    pub step_type: String,
    /// Limit on the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// When it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<StepWhen>,
    /// What to do when it fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failure_strategies: Vec<FailureStrategy>,
    /// Type-specific settings (see [`super::steps`]).
    #[serde(default)]
    pub spec: Map<String, Json>,
}
