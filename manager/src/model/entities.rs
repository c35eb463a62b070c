//! The entity kinds and the schemas of every kind except pipelines
//! (see [`super::pipeline`]). A document is a mapping with one key, the kind.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use super::common::{DeploymentType, Variable};
use super::pipeline::Pipeline;
use crate::triggers::conditions::Operator;

/// The kinds of entity, by their YAML top-level key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `service`.
    Service,
    /// `environment`.
    Environment,
    /// `infrastructureDefinition`.
    InfrastructureDefinition,
    /// `connector`.
    Connector,
    /// `pipeline`.
    Pipeline,
    /// `inputSet`.
    InputSet,
    /// `overlayInputSet`.
    OverlayInputSet,
    /// `trigger`.
    Trigger,
}

impl Kind {
    /// Every kind, in the order an apply writes them (referenced kinds first).
    pub const ALL: [Kind; 8] = [
        Kind::Connector,
        Kind::Service,
        Kind::Environment,
        Kind::InfrastructureDefinition,
        Kind::Pipeline,
        Kind::InputSet,
        Kind::OverlayInputSet,
        Kind::Trigger,
    ];

    /// The YAML top-level key, also the kind's name in the store and on the wire.
    pub fn key(&self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Environment => "environment",
            Kind::InfrastructureDefinition => "infrastructureDefinition",
            Kind::Connector => "connector",
            Kind::Pipeline => "pipeline",
            Kind::InputSet => "inputSet",
            Kind::OverlayInputSet => "overlayInputSet",
            Kind::Trigger => "trigger",
        }
    }

    /// The kind whose YAML key is `key`.
    pub fn from_key(key: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.key() == key)
    }

    /// The kind a user typed on the command line: the key, a plural, or a short
    /// form (`env`, `infra`), case-insensitive.
    pub fn parse(s: &str) -> Option<Kind> {
        let s = s.to_ascii_lowercase().replace(['-', '_'], "");
        Some(match s.as_str() {
            "service" | "services" | "svc" => Kind::Service,
            "environment" | "environments" | "env" | "envs" => Kind::Environment,
            "infrastructure"
            | "infrastructures"
            | "infra"
            | "infras"
            | "infrastructuredefinition"
            | "infrastructuredefinitions" => Kind::InfrastructureDefinition,
            "connector" | "connectors" => Kind::Connector,
            "pipeline" | "pipelines" => Kind::Pipeline,
            "inputset" | "inputsets" => Kind::InputSet,
            "overlayinputset" | "overlayinputsets" | "overlay" | "overlays" => Kind::OverlayInputSet,
            "trigger" | "triggers" => Kind::Trigger,
            _ => return None,
        })
    }

    /// The kinds as a user-facing list (`service, environment, …`).
    pub fn known() -> String {
        Kind::ALL.iter().map(|k| k.key()).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// The fields every entity has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta<'a> {
    /// Display name.
    pub name: &'a str,
    /// Identifier, unique per kind and scope.
    pub identifier: &'a str,
    /// `orgIdentifier`, if given.
    pub org: Option<&'a str>,
    /// `projectIdentifier`, if given.
    pub project: Option<&'a str>,
}

/// One parsed document.
#[derive(Debug, Clone, PartialEq)]
pub enum Entity {
    /// A service.
    Service(Service),
    /// An environment.
    Environment(Environment),
    /// An infrastructure definition.
    InfrastructureDefinition(InfrastructureDefinition),
    /// A connector.
    Connector(Connector),
    /// A pipeline.
    Pipeline(Box<Pipeline>),
    /// An input set.
    InputSet(InputSet),
    /// An overlay input set.
    OverlayInputSet(OverlayInputSet),
    /// A trigger.
    Trigger(Trigger),
}

macro_rules! meta_of {
    ($x:expr) => {
        Meta {
            name: &$x.name,
            identifier: &$x.identifier,
            org: $x.org_identifier.as_deref(),
            project: $x.project_identifier.as_deref(),
        }
    };
}

impl Entity {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Entity::Service(_) => Kind::Service,
            Entity::Environment(_) => Kind::Environment,
            Entity::InfrastructureDefinition(_) => Kind::InfrastructureDefinition,
            Entity::Connector(_) => Kind::Connector,
            Entity::Pipeline(_) => Kind::Pipeline,
            Entity::InputSet(_) => Kind::InputSet,
            Entity::OverlayInputSet(_) => Kind::OverlayInputSet,
            Entity::Trigger(_) => Kind::Trigger,
        }
    }

    /// Name, identifier and scope fields.
    pub fn meta(&self) -> Meta<'_> {
        match self {
            Entity::Service(x) => meta_of!(x),
            Entity::Environment(x) => meta_of!(x),
            Entity::InfrastructureDefinition(x) => meta_of!(x),
            Entity::Connector(x) => meta_of!(x),
            Entity::Pipeline(x) => meta_of!(x),
            Entity::InputSet(x) => meta_of!(x),
            Entity::OverlayInputSet(x) => meta_of!(x),
            Entity::Trigger(x) => meta_of!(x),
        }
    }
}

/// `service:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Service {
    /// Display name.
    pub name: String,
    /// Identifier.
    pub identifier: String,
    /// Organisation (default `default`).
    #[serde(default)]
    pub org_identifier: Option<String>,
    /// Project (default `default`).
    #[serde(default)]
    pub project_identifier: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Labels.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// What is deployed and how.
    pub service_definition: ServiceDefinition,
}

/// `serviceDefinition`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDefinition {
    /// Platform.
    #[serde(rename = "type")]
    pub deployment_type: DeploymentType,
    /// Artifacts, manifests, config files and variables.
    pub spec: ServiceSpec,
}

/// `serviceDefinition.spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceSpec {
    /// The artifact deployed.
    #[serde(default)]
    pub artifacts: Option<Artifacts>,
    /// Manifests.
    #[serde(default)]
    pub manifests: Vec<ManifestItem>,
    /// Config files.
    #[serde(default)]
    pub config_files: Vec<ConfigFileItem>,
    /// Service variables (`<+serviceVariables.NAME>`).
    #[serde(default)]
    pub variables: Vec<Variable>,
    /// Lifecycle commands run on each host by SSH deployments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<ServiceCommands>,
}

/// `commands`: bash run on each host of an SSH deployment, in the release
/// directory, each with `set -e` (templates; may hold secret references).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceCommands {
    /// Prepares the new release before it becomes current.
    #[serde(default)]
    pub install: Option<String>,
    /// Stops the current release.
    #[serde(default)]
    pub stop: Option<String>,
    /// Starts the release just made current.
    #[serde(default)]
    pub start: Option<String>,
    /// Fails (non-zero) when the started release is unhealthy.
    #[serde(default)]
    pub health_check: Option<String>,
}

/// `artifacts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifacts {
    /// The primary artifact.
    #[serde(default)]
    pub primary: Option<Artifact>,
}

/// An artifact source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// `DockerRegistry`, `Http`, `File`, `S3`, …
    #[serde(rename = "type")]
    pub artifact_type: String,
    /// Source-specific settings.
    #[serde(default)]
    pub spec: Map<String, Json>,
}

/// `- manifest: …`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestItem {
    /// The manifest.
    pub manifest: Manifest,
}

/// A manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Identifier, unique in the service.
    pub identifier: String,
    /// `K8sManifest`, `Values`, …
    #[serde(rename = "type")]
    pub manifest_type: String,
    /// Where it lives.
    #[serde(default)]
    pub spec: Map<String, Json>,
}

/// `- configFile: …`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigFileItem {
    /// The config file.
    pub config_file: ConfigFile,
}

/// A config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Identifier, unique in the service.
    pub identifier: String,
    /// Where it lives.
    #[serde(default)]
    pub spec: Map<String, Json>,
}

/// `environment:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Environment {
    /// Display name.
    pub name: String,
    /// Identifier.
    pub identifier: String,
    /// Organisation (default `default`).
    #[serde(default)]
    pub org_identifier: Option<String>,
    /// Project (default `default`).
    #[serde(default)]
    pub project_identifier: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Labels.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Production or not.
    #[serde(rename = "type")]
    pub env_type: EnvironmentType,
    /// Environment variables (`<+env.variables.NAME>`).
    #[serde(default)]
    pub variables: Vec<Variable>,
    /// Per-service overrides.
    #[serde(default)]
    pub overrides: Option<Overrides>,
}

/// Environment type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnvironmentType {
    /// Production.
    Production,
    /// Anything else.
    PreProduction,
}

/// `overrides`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// Service overrides.
    #[serde(default)]
    pub services: Vec<ServiceOverride>,
}

/// Variables that replace a service's when it deploys to this environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceOverride {
    /// The service.
    pub service_ref: String,
    /// Replacement variables.
    #[serde(default)]
    pub variables: Vec<Variable>,
}

/// `infrastructureDefinition:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InfrastructureDefinition {
    /// Display name.
    pub name: String,
    /// Identifier.
    pub identifier: String,
    /// Organisation (default `default`).
    #[serde(default)]
    pub org_identifier: Option<String>,
    /// Project (default `default`).
    #[serde(default)]
    pub project_identifier: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Labels.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The environment it belongs to.
    pub environment_ref: String,
    /// Platform it hosts.
    pub deployment_type: DeploymentType,
    /// `KubernetesDirect`, `SshWinRmAws`, `Pdc`, `ECS`, `AwsLambda`, `CustomDeployment`.
    #[serde(rename = "type")]
    pub infra_type: String,
    /// Platform details; `connectorRef` names a connector.
    #[serde(default)]
    pub spec: Map<String, Json>,
}

impl InfrastructureDefinition {
    /// `spec.connectorRef`, when it is a string.
    pub fn connector_ref(&self) -> Option<&str> {
        self.spec.get("connectorRef").and_then(Json::as_str)
    }
}

/// `connector:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Connector {
    /// Display name.
    pub name: String,
    /// Identifier.
    pub identifier: String,
    /// Organisation (default `default`).
    #[serde(default)]
    pub org_identifier: Option<String>,
    /// Project (default `default`).
    #[serde(default)]
    pub project_identifier: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Labels.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// `K8sCluster`, `Aws`, `Vault`, `Git`, `Github`, `Pdc`, `Ssh`, `Http`, …
    #[serde(rename = "type")]
    pub connector_type: String,
    /// Connection details; `delegateSelectors` picks the delegates that use it.
    /// Credentials only as `<+secrets.getValue(…)>` references.
    #[serde(default)]
    pub spec: Map<String, Json>,
}

/// `inputSet:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InputSet {
    /// Display name.
    pub name: String,
    /// Identifier.
    pub identifier: String,
    /// Organisation (default `default`).
    #[serde(default)]
    pub org_identifier: Option<String>,
    /// Project (default `default`).
    #[serde(default)]
    pub project_identifier: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Labels.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The pipeline's shape holding only supplied values; `identifier` names the pipeline.
    pub pipeline: Map<String, Json>,
}

impl InputSet {
    /// The pipeline it supplies values for.
    pub fn pipeline_identifier(&self) -> Option<&str> {
        self.pipeline.get("identifier").and_then(Json::as_str)
    }
}

/// `overlayInputSet:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OverlayInputSet {
    /// Display name.
    pub name: String,
    /// Identifier.
    pub identifier: String,
    /// Organisation (default `default`).
    #[serde(default)]
    pub org_identifier: Option<String>,
    /// Project (default `default`).
    #[serde(default)]
    pub project_identifier: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Labels.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The pipeline.
    pub pipeline_identifier: String,
    /// Input sets (or overlays) merged in order; later wins.
    pub input_set_references: Vec<String>,
}

/// `trigger:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Trigger {
    /// Display name.
    pub name: String,
    /// Identifier.
    pub identifier: String,
    /// Organisation (default `default`).
    #[serde(default)]
    pub org_identifier: Option<String>,
    /// Project (default `default`).
    #[serde(default)]
    pub project_identifier: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Labels.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The pipeline it starts.
    pub pipeline_identifier: String,
    /// Whether it fires.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// Input sets applied first, in order.
    #[serde(default)]
    pub input_set_refs: Vec<String>,
    /// Input path → template (may use `<+trigger.*>`), applied after the input sets.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// What fires it.
    pub source: TriggerSource,
}

fn enabled_by_default() -> bool {
    true
}

/// `source` of a trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "spec", deny_unknown_fields)]
pub enum TriggerSource {
    /// On a schedule.
    Scheduled(Schedule),
    /// On a webhook delivery.
    Webhook(Webhook),
}

/// A schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "spec", deny_unknown_fields)]
pub enum Schedule {
    /// A cron expression (UTC).
    Cron(CronSpec),
}

/// `{ expression: "0 2 * * *" }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronSpec {
    /// 5-field cron expression.
    pub expression: String,
}

/// A webhook source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Who sends it.
    #[serde(rename = "type")]
    pub provider: WebhookProvider,
    /// Events and conditions.
    pub spec: WebhookSpec,
}

/// Webhook senders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WebhookProvider {
    /// GitHub.
    Github,
    /// GitLab.
    Gitlab,
    /// Any JSON sender.
    Custom,
}

/// `spec` of a webhook source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebhookSpec {
    /// Events that fire it (all when empty).
    #[serde(default)]
    pub events: Vec<WebhookEventType>,
    /// Conditions on the payload, all of which must hold.
    #[serde(default)]
    pub payload_conditions: Vec<PayloadCondition>,
}

/// Webhook events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WebhookEventType {
    /// A push.
    Push,
    /// A GitHub pull request.
    PullRequest,
    /// A GitLab merge request.
    MergeRequest,
}

/// One payload condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadCondition {
    /// `<+trigger.…>` expression or payload path.
    pub key: String,
    /// Comparison.
    pub operator: Operator,
    /// Operand.
    pub value: String,
}
