//! An `ecs` task: one action on an Amazon ECS cluster — rolling deploy and
//! rollback, canary service, blue-green service and listener swap, or a
//! one-off task. Executed by the delegate's AWS target.
//!
//! Task and service definitions travel as the text the user wrote (JSON or
//! YAML, camelCase fields as AWS writes them) with expressions already rendered
//! by the manager; secret references inside stay references until the delegate
//! resolves them. The delegate parses them and names the field when one is bad.

use serde::{Deserialize, Serialize};

use super::aws::{AwsConnection, check_name};
use super::{InvalidTaskSpec, check_refs, field};

/// Service tag naming the execution whose deploy last changed the service.
pub const TAG_DEPLOY_EXECUTION: &str = "dray:deploy-execution";
/// Service tag holding the task definition the service ran before that deploy
/// (`none` when that deploy created the service). Rollback reads it.
pub const TAG_PREVIOUS_TASK_DEFINITION: &str = "dray:previous-task-definition";
/// Service tag naming the execution whose blue-green swap made it live.
pub const TAG_SWAP_EXECUTION: &str = "dray:swap-execution";
/// Suffix of the canary service's name.
pub const CANARY_SUFFIX: &str = "-canary";
/// Suffixes of the two blue-green service slots.
pub const BLUE_GREEN_SLOTS: [&str; 2] = ["-blue", "-green"];

/// Output names of `ecs` tasks.
pub mod output {
    /// ARN of the task definition revision registered (or rolled back to).
    pub const TASK_DEFINITION_ARN: &str = "taskDefinitionArn";
    /// ARN of the revision the service ran before the deploy (`none` if created).
    pub const PREVIOUS_TASK_DEFINITION_ARN: &str = "previousTaskDefinitionArn";
    /// Service name acted on.
    pub const SERVICE_NAME: &str = "serviceName";
    /// Service ARN acted on.
    pub const SERVICE_ARN: &str = "serviceArn";
    /// Blue-green: the service now behind the production listener.
    pub const PROD_SERVICE: &str = "prodServiceName";
    /// Blue-green: the service now behind the stage listener.
    pub const STAGE_SERVICE: &str = "stageServiceName";
    /// Blue-green: the production target group.
    pub const PROD_TARGET_GROUP: &str = "prodTargetGroupArn";
    /// Blue-green: the stage target group.
    pub const STAGE_TARGET_GROUP: &str = "stageTargetGroupArn";
    /// Run task: the ARNs of the tasks started, comma-separated.
    pub const TASK_ARNS: &str = "taskArns";
    /// `true` when a rollback step found something of this execution to undo.
    pub const ROLLED_BACK: &str = "rolledBack";
}

/// Parameters of an `ecs` task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EcsParams {
    /// Region, endpoint and credentials.
    pub aws: AwsConnection,
    /// Cluster name or ARN.
    pub cluster: String,
    /// The pipeline execution, recorded on what a deploy changes so that its
    /// rollback undoes only its own work.
    #[serde(default)]
    pub execution_id: String,
    /// What to do.
    pub action: EcsAction,
}

/// One ECS action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum EcsAction {
    /// Register the task definition, create or update the service, wait for
    /// steady state.
    RollingDeploy(Deploy),
    /// Put the service back on the revision recorded by this execution's
    /// deploy (or delete it if that deploy created it).
    RollingRollback(ServiceRef),
    /// Create or update `<service>-canary` at `desired_count`.
    CanaryDeploy(Canary),
    /// Delete `<service>-canary`.
    CanaryDelete(ServiceRef),
    /// Deploy the idle blue-green slot behind the stage target group.
    BlueGreenCreate(BlueGreen),
    /// Swap the target groups of the production and stage listeners.
    BlueGreenSwap(BlueGreenSwap),
    /// Swap back if this execution swapped.
    BlueGreenRollback(BlueGreenSwap),
    /// Run a task and wait for it to stop.
    RunTask(RunTask),
}

impl EcsAction {
    /// The action's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            EcsAction::RollingDeploy(_) => "rolling deploy",
            EcsAction::RollingRollback(_) => "rolling rollback",
            EcsAction::CanaryDeploy(_) => "canary deploy",
            EcsAction::CanaryDelete(_) => "canary delete",
            EcsAction::BlueGreenCreate(_) => "blue-green create service",
            EcsAction::BlueGreenSwap(_) => "blue-green swap",
            EcsAction::BlueGreenRollback(_) => "blue-green rollback",
            EcsAction::RunTask(_) => "run task",
        }
    }
}

/// A task definition and a service definition to deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Deploy {
    /// Task definition, JSON or YAML.
    pub task_definition: String,
    /// Service definition, JSON or YAML.
    pub service_definition: String,
    /// Start a new deployment even if nothing changed.
    #[serde(default)]
    pub force_new_deployment: bool,
}

/// The service a step acts on, by its definition (the delegate reads `serviceName`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceRef {
    /// Service definition, JSON or YAML.
    pub service_definition: String,
}

/// A canary deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Canary {
    /// What to deploy.
    pub deploy: Deploy,
    /// Tasks of the canary service.
    pub desired_count: u32,
}

/// Where production and stage traffic is routed: a listener rule, or a
/// listener's default action when no rule is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Routes {
    /// Production listener ARN.
    pub prod_listener_arn: String,
    /// Production listener rule ARN (else the listener's default action).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prod_listener_rule_arn: Option<String>,
    /// Stage listener ARN.
    pub stage_listener_arn: String,
    /// Stage listener rule ARN (else the listener's default action).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_listener_rule_arn: Option<String>,
}

/// A blue-green service deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BlueGreen {
    /// What to deploy.
    pub deploy: Deploy,
    /// The listeners.
    pub routes: Routes,
}

/// A blue-green swap (or swap back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BlueGreenSwap {
    /// Service definition, JSON or YAML (for `serviceName`).
    pub service_definition: String,
    /// The listeners.
    pub routes: Routes,
    /// After a swap, scale the service that left production to zero.
    #[serde(default)]
    pub downsize_old_service: bool,
}

/// A one-off task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunTask {
    /// Task definition, JSON or YAML.
    pub task_definition: String,
    /// RunTask request fields (launchType, count, networkConfiguration,
    /// overrides…), JSON or YAML; may be empty.
    #[serde(default)]
    pub run_task_request: String,
    /// Succeed once the tasks are started instead of waiting for them to stop.
    #[serde(default)]
    pub skip_wait: bool,
}

impl EcsParams {
    /// Checks what the schema cannot.
    pub fn validate(&self) -> Result<(), InvalidTaskSpec> {
        self.aws.validate()?;
        if self.cluster.trim().is_empty() {
            return Err(field("cluster", "must not be empty"));
        }
        if !self.execution_id.is_empty() {
            check_name("execution_id", &self.execution_id, 128)?;
        }
        let texts: Vec<(&'static str, &str)> = match &self.action {
            EcsAction::RollingDeploy(d) => deploy_texts(d),
            EcsAction::CanaryDeploy(c) => {
                if c.desired_count == 0 {
                    return Err(field("action.canaryDeploy.desiredCount", "must be at least 1"));
                }
                deploy_texts(&c.deploy)
            }
            EcsAction::BlueGreenCreate(b) => {
                check_routes(&b.routes)?;
                deploy_texts(&b.deploy)
            }
            EcsAction::RollingRollback(s) | EcsAction::CanaryDelete(s) => {
                vec![("serviceDefinition", s.service_definition.as_str())]
            }
            EcsAction::BlueGreenSwap(s) | EcsAction::BlueGreenRollback(s) => {
                check_routes(&s.routes)?;
                vec![("serviceDefinition", s.service_definition.as_str())]
            }
            EcsAction::RunTask(r) => {
                vec![("taskDefinition", r.task_definition.as_str()), ("runTaskRequest", &r.run_task_request)]
            }
        };
        for (name, text) in texts {
            if text.trim().is_empty() && name != "runTaskRequest" {
                return Err(field(name, "must not be empty"));
            }
            check_refs(name, text)?;
        }
        Ok(())
    }
}

fn deploy_texts(d: &Deploy) -> Vec<(&'static str, &str)> {
    vec![("taskDefinition", d.task_definition.as_str()), ("serviceDefinition", d.service_definition.as_str())]
}

fn check_routes(r: &Routes) -> Result<(), InvalidTaskSpec> {
    for (name, v) in [
        ("routes.prodListenerArn", Some(&r.prod_listener_arn)),
        ("routes.prodListenerRuleArn", r.prod_listener_rule_arn.as_ref()),
        ("routes.stageListenerArn", Some(&r.stage_listener_arn)),
        ("routes.stageListenerRuleArn", r.stage_listener_rule_arn.as_ref()),
    ] {
        if let Some(v) = v
            && !v.starts_with("arn:")
        {
            return Err(field(name, format!("{v:?} is not an ARN")));
        }
    }
    if r.prod_listener_arn == r.stage_listener_arn && r.prod_listener_rule_arn == r.stage_listener_rule_arn {
        return Err(field("routes", "production and stage must be different listeners or rules"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;
    use crate::task::{TaskParams, kind, validate};

    fn spec(params: serde_json::Value) -> pb::TaskSpec {
        pb::TaskSpec { kind: kind::ECS.into(), params_json: params.to_string(), ..Default::default() }
    }

    fn base(action: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "aws": {"region": "us-east-1"}, "cluster": "prod", "executionId": "abc-1", "action": action
        })
    }

    #[test]
    fn ecs_params_parse() {
        let p = validate(&spec(base(serde_json::json!({"rollingDeploy": {
            "taskDefinition": "family: web", "serviceDefinition": "serviceName: web"
        }}))))
        .unwrap();
        let TaskParams::Ecs(p) = p else { panic!("not ecs") };
        assert_eq!(p.cluster, "prod");
        assert!(matches!(p.action, EcsAction::RollingDeploy(Deploy { force_new_deployment: false, .. })));
        let p = validate(&spec(base(serde_json::json!({"canaryDeploy": {
            "deploy": {"taskDefinition": "a", "serviceDefinition": "b"}, "desiredCount": 2
        }}))))
        .unwrap();
        assert!(
            matches!(p, TaskParams::Ecs(p) if matches!(p.action, EcsAction::CanaryDeploy(Canary { desired_count: 2, .. })))
        );
        let routes = serde_json::json!({"prodListenerArn": "arn:p", "stageListenerArn": "arn:s"});
        assert!(
            validate(&spec(base(serde_json::json!({"blueGreenSwap": {
                "serviceDefinition": "serviceName: web", "routes": routes
            }}))))
            .is_ok()
        );
        assert!(validate(&spec(base(serde_json::json!({"runTask": {"taskDefinition": "a"}})))).is_ok());
    }

    #[test]
    fn bad_ecs_params_name_the_field() {
        let routes = |p: &str, s: &str| serde_json::json!({"prodListenerArn": p, "stageListenerArn": s});
        for (params, needle) in [
            (
                base(serde_json::json!({"rollingDeploy": {"taskDefinition": "", "serviceDefinition": "b"}})),
                "invalid taskDefinition: must not be empty",
            ),
            (
                base(serde_json::json!({"rollingDeploy": {"taskDefinition": "a"}})),
                "missing field `serviceDefinition`",
            ),
            (base(serde_json::json!({"rolling": {}})), "unknown variant `rolling`"),
            (
                base(
                    serde_json::json!({"canaryDeploy": {"deploy": {"taskDefinition": "a", "serviceDefinition": "b"}, "desiredCount": 0}}),
                ),
                "desiredCount",
            ),
            (
                base(
                    serde_json::json!({"blueGreenSwap": {"serviceDefinition": "b", "routes": routes("p", "arn:s")}}),
                ),
                "routes.prodListenerArn",
            ),
            (
                base(
                    serde_json::json!({"blueGreenSwap": {"serviceDefinition": "b", "routes": routes("arn:l", "arn:l")}}),
                ),
                "must be different",
            ),
            (
                base(serde_json::json!({"runTask": {"taskDefinition": "x: <+secrets.getValue(\"env:\")>"}})),
                "in taskDefinition",
            ),
            (
                serde_json::json!({"aws": {"region": "us-east-1"}, "cluster": " ", "action": {"runTask": {"taskDefinition": "a"}}}),
                "invalid cluster",
            ),
            (
                serde_json::json!({"aws": {"region": ""}, "cluster": "c", "action": {"runTask": {"taskDefinition": "a"}}}),
                "aws.region",
            ),
            (
                serde_json::json!({"aws": {"region": "us-east-1"}, "cluster": "c", "executionId": "a b", "action": {"runTask": {"taskDefinition": "a"}}}),
                "execution_id",
            ),
        ] {
            let e = validate(&spec(params.clone())).unwrap_err().to_string();
            assert!(e.contains(needle), "{params}: {e}");
        }
    }
}
