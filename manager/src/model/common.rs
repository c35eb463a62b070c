//! Schema pieces several kinds share: variables, `when`, failure strategies,
//! deployment types. Field names are Harness's (camelCase); unknown fields are
//! errors everywhere.

use dray_shared::error_type::ErrorType;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A `variables:` entry of a pipeline, stage, service or environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Variable {
    /// Name; unique in its list; expressions address it by this.
    pub name: String,
    /// Value type.
    #[serde(rename = "type")]
    pub var_type: VarType,
    /// The value (a template string, or a number/boolean written bare).
    pub value: Scalar,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whether a value must be supplied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
}

/// Type of a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VarType {
    /// Text.
    String,
    /// A number (or an expression yielding one).
    Number,
    /// A secret reference `<+secrets.getValue(…)>`; the manager never sees the value.
    Secret,
}

/// A scalar YAML value: variables may be written `value: 3` as well as `value: "3"`.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// A string (possibly a template).
    Str(String),
    /// An integer.
    Int(i64),
    /// A non-integral number.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

impl Scalar {
    /// The string, when it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Scalar::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Str(s) => f.write_str(s),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl Serialize for Scalar {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Scalar::Str(v) => s.serialize_str(v),
            Scalar::Int(v) => s.serialize_i64(*v),
            Scalar::Float(v) => s.serialize_f64(*v),
            Scalar::Bool(v) => s.serialize_bool(*v),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
                i64::try_from(v).map(Scalar::Int).map_err(|_| E::custom("number too large"))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Which previous outcome a `when` runs after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatusFilter {
    /// Only if everything before succeeded.
    Success,
    /// Only if something before failed.
    Failure,
    /// Always.
    All,
}

/// `when` of a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StageWhen {
    /// Pipeline status gate.
    pub pipeline_status: StatusFilter,
    /// An extra condition (expression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

/// `when` of a step or step group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StepWhen {
    /// Stage status gate.
    pub stage_status: StatusFilter,
    /// An extra condition (expression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

/// One `failureStrategies` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FailureStrategy {
    /// What it handles and how.
    pub on_failure: OnFailure,
}

/// Errors handled and the action taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OnFailure {
    /// Error types this strategy applies to.
    pub errors: Vec<ErrorType>,
    /// What to do.
    pub action: FailureAction,
}

/// A failure strategy's action (`type` + `spec`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "spec", deny_unknown_fields)]
pub enum FailureAction {
    /// Carry on as if it succeeded, keeping the failure visible.
    Ignore,
    /// Mark it succeeded.
    MarkAsSuccess,
    /// Mark it failed.
    MarkAsFailure,
    /// Abort the pipeline.
    Abort,
    /// Roll back the stage.
    StageRollback,
    /// Roll back the pipeline.
    PipelineRollback,
    /// Run it again.
    Retry(RetrySpec),
    /// Wait for a person to choose.
    ManualIntervention(ManualInterventionSpec),
}

impl FailureAction {
    /// The action's `type` name.
    pub fn name(&self) -> &'static str {
        match self {
            FailureAction::Ignore => "Ignore",
            FailureAction::MarkAsSuccess => "MarkAsSuccess",
            FailureAction::MarkAsFailure => "MarkAsFailure",
            FailureAction::Abort => "Abort",
            FailureAction::StageRollback => "StageRollback",
            FailureAction::PipelineRollback => "PipelineRollback",
            FailureAction::Retry(_) => "Retry",
            FailureAction::ManualIntervention(_) => "ManualIntervention",
        }
    }
}

/// `Retry` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetrySpec {
    /// How many more attempts.
    pub retry_count: u32,
    /// Waits between attempts (the last repeats).
    #[serde(default)]
    pub retry_intervals: Vec<String>,
    /// What to do when the retries are used up.
    pub on_retry_failure: NextAction,
}

/// `ManualIntervention` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ManualInterventionSpec {
    /// How long to wait for a choice.
    pub timeout: String,
    /// What to do when nobody chose in time.
    pub on_timeout: NextAction,
}

/// `{ action: ACTION }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextAction {
    /// The action.
    pub action: Box<FailureAction>,
}

/// Platform a service, infrastructure or stage deploys to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeploymentType {
    /// Kubernetes.
    Kubernetes,
    /// Hosts over SSH.
    Ssh,
    /// Amazon ECS.
    #[serde(rename = "ECS")]
    Ecs,
    /// AWS Lambda.
    AwsLambda,
    /// A user-defined deployment.
    CustomDeployment,
}

impl DeploymentType {
    /// The YAML spelling.
    pub fn name(&self) -> &'static str {
        match self {
            DeploymentType::Kubernetes => "Kubernetes",
            DeploymentType::Ssh => "Ssh",
            DeploymentType::Ecs => "ECS",
            DeploymentType::AwsLambda => "AwsLambda",
            DeploymentType::CustomDeployment => "CustomDeployment",
        }
    }

    /// Infrastructure `type`s that can host this deployment type.
    pub fn infrastructure_types(&self) -> &'static [&'static str] {
        match self {
            DeploymentType::Kubernetes => &["KubernetesDirect"],
            DeploymentType::Ssh => &["Ssh", "SshWinRmAws", "Pdc"],
            // `Ecs` is accepted as another spelling of `ECS`.
            DeploymentType::Ecs => &["ECS", "Ecs"],
            DeploymentType::AwsLambda => &["AwsLambda"],
            DeploymentType::CustomDeployment => &["CustomDeployment"],
        }
    }
}

/// Every infrastructure `type` Dray knows.
pub const INFRASTRUCTURE_TYPES: &[&str] =
    &["KubernetesDirect", "Ssh", "SshWinRmAws", "Pdc", "ECS", "Ecs", "AwsLambda", "CustomDeployment"];
