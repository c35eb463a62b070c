//! ECS task definitions, service definitions and RunTask requests as users
//! write them (the camelCase JSON/YAML of the ECS API and console), and their
//! conversion to SDK inputs. Unknown fields are refused by name, so a typo
//! never silently drops a setting; read-only fields that
//! `describe-task-definition` prints (`taskDefinitionArn`, `revision`,
//! `status`…) are accepted and ignored, so its output can be pasted as is.

use std::collections::BTreeMap;

use aws_sdk_ecs::types as t;
use serde::Deserialize;
use serde_json::Value;

use crate::targets::aws::AwsError;
use crate::targets::aws::document::NumberText;

fn built<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> Result<T, AwsError> {
    r.map_err(|e| AwsError::other(format!("{what}: {e}")))
}

/// `{name, value}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NameValue {
    /// Name.
    pub name: String,
    /// Value.
    #[serde(default)]
    pub value: String,
}

/// `{key, value}` tags.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tag {
    /// Key.
    pub key: String,
    /// Value.
    #[serde(default)]
    pub value: String,
}

fn tags(v: &[Tag]) -> Vec<t::Tag> {
    v.iter().map(|x| t::Tag::builder().key(&x.key).value(&x.value).build()).collect()
}

fn env(v: &[NameValue]) -> Vec<t::KeyValuePair> {
    v.iter().map(|x| t::KeyValuePair::builder().name(&x.name).value(&x.value).build()).collect()
}

/// A task definition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskDefinition {
    /// Family.
    pub family: String,
    /// Containers.
    pub container_definitions: Vec<ContainerDefinition>,
    #[serde(default)]
    task_role_arn: Option<String>,
    #[serde(default)]
    execution_role_arn: Option<String>,
    #[serde(default)]
    network_mode: Option<String>,
    #[serde(default)]
    requires_compatibilities: Vec<String>,
    #[serde(default)]
    cpu: Option<NumberText>,
    #[serde(default)]
    memory: Option<NumberText>,
    #[serde(default)]
    runtime_platform: Option<RuntimePlatform>,
    #[serde(default)]
    ephemeral_storage: Option<EphemeralStorage>,
    #[serde(default)]
    volumes: Vec<Volume>,
    #[serde(default)]
    tags: Vec<Tag>,
    // Read-only fields of a described task definition, ignored.
    #[serde(default, rename = "taskDefinitionArn")]
    _arn: Option<Value>,
    #[serde(default, rename = "revision")]
    _revision: Option<Value>,
    #[serde(default, rename = "status")]
    _status: Option<Value>,
    #[serde(default, rename = "registeredAt")]
    _registered_at: Option<Value>,
    #[serde(default, rename = "registeredBy")]
    _registered_by: Option<Value>,
    #[serde(default, rename = "compatibilities")]
    _compatibilities: Option<Value>,
    #[serde(default, rename = "requiresAttributes")]
    _requires_attributes: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RuntimePlatform {
    #[serde(default)]
    cpu_architecture: Option<String>,
    #[serde(default)]
    operating_system_family: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EphemeralStorage {
    size_in_gi_b: i32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Volume {
    name: String,
    #[serde(default)]
    host: Option<HostVolume>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HostVolume {
    #[serde(default)]
    source_path: Option<String>,
}

/// A container of a task definition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerDefinition {
    /// Name.
    pub name: String,
    /// Image.
    pub image: String,
    #[serde(default)]
    cpu: Option<i32>,
    #[serde(default)]
    memory: Option<i32>,
    #[serde(default)]
    memory_reservation: Option<i32>,
    #[serde(default)]
    essential: Option<bool>,
    #[serde(default)]
    port_mappings: Vec<PortMapping>,
    /// Environment variables; values may hold secret references.
    #[serde(default)]
    pub environment: Vec<NameValue>,
    #[serde(default)]
    secrets: Vec<SecretRef>,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    entry_point: Vec<String>,
    #[serde(default)]
    working_directory: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    log_configuration: Option<LogConfiguration>,
    #[serde(default)]
    health_check: Option<HealthCheck>,
    #[serde(default)]
    depends_on: Vec<Dependency>,
    #[serde(default)]
    mount_points: Vec<MountPoint>,
    #[serde(default)]
    readonly_root_filesystem: Option<bool>,
    #[serde(default)]
    stop_timeout: Option<i32>,
    #[serde(default)]
    start_timeout: Option<i32>,
    #[serde(default)]
    docker_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PortMapping {
    container_port: i32,
    #[serde(default)]
    host_port: Option<i32>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    app_protocol: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SecretRef {
    name: String,
    value_from: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LogConfiguration {
    log_driver: String,
    #[serde(default)]
    options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HealthCheck {
    command: Vec<String>,
    #[serde(default)]
    interval: Option<i32>,
    #[serde(default)]
    timeout: Option<i32>,
    #[serde(default)]
    retries: Option<i32>,
    #[serde(default)]
    start_period: Option<i32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Dependency {
    container_name: String,
    condition: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MountPoint {
    source_volume: String,
    container_path: String,
    #[serde(default)]
    read_only: Option<bool>,
}

impl ContainerDefinition {
    fn to_sdk(&self, at: &str) -> Result<t::ContainerDefinition, AwsError> {
        let mut b = t::ContainerDefinition::builder()
            .name(&self.name)
            .image(&self.image)
            .set_cpu(self.cpu)
            .set_memory(self.memory)
            .set_memory_reservation(self.memory_reservation)
            .set_essential(self.essential)
            .set_working_directory(self.working_directory.clone())
            .set_user(self.user.clone())
            .set_readonly_root_filesystem(self.readonly_root_filesystem)
            .set_stop_timeout(self.stop_timeout)
            .set_start_timeout(self.start_timeout)
            .set_environment(Some(env(&self.environment)));
        for p in &self.port_mappings {
            b = b.port_mappings(
                t::PortMapping::builder()
                    .container_port(p.container_port)
                    .set_host_port(p.host_port)
                    .set_protocol(p.protocol.as_deref().map(t::TransportProtocol::from))
                    .set_name(p.name.clone())
                    .set_app_protocol(p.app_protocol.as_deref().map(t::ApplicationProtocol::from))
                    .build(),
            );
        }
        for s in &self.secrets {
            b = b.secrets(built(
                &format!("{at}.secrets"),
                t::Secret::builder().name(&s.name).value_from(&s.value_from).build(),
            )?);
        }
        if !self.command.is_empty() {
            b = b.set_command(Some(self.command.clone()));
        }
        if !self.entry_point.is_empty() {
            b = b.set_entry_point(Some(self.entry_point.clone()));
        }
        if let Some(l) = &self.log_configuration {
            let mut lb = t::LogConfiguration::builder().log_driver(t::LogDriver::from(l.log_driver.as_str()));
            for (k, v) in &l.options {
                lb = lb.options(k, v);
            }
            b = b.log_configuration(built(&format!("{at}.logConfiguration"), lb.build())?);
        }
        if let Some(h) = &self.health_check {
            b = b.health_check(built(
                &format!("{at}.healthCheck"),
                t::HealthCheck::builder()
                    .set_command(Some(h.command.clone()))
                    .set_interval(h.interval)
                    .set_timeout(h.timeout)
                    .set_retries(h.retries)
                    .set_start_period(h.start_period)
                    .build(),
            )?);
        }
        for d in &self.depends_on {
            b = b.depends_on(built(
                &format!("{at}.dependsOn"),
                t::ContainerDependency::builder()
                    .container_name(&d.container_name)
                    .condition(t::ContainerCondition::from(d.condition.as_str()))
                    .build(),
            )?);
        }
        for m in &self.mount_points {
            b = b.mount_points(
                t::MountPoint::builder()
                    .source_volume(&m.source_volume)
                    .container_path(&m.container_path)
                    .set_read_only(m.read_only)
                    .build(),
            );
        }
        for (k, v) in &self.docker_labels {
            b = b.docker_labels(k, v);
        }
        Ok(b.build())
    }
}

impl TaskDefinition {
    /// Checks what the schema cannot.
    pub fn check(&self) -> Result<(), AwsError> {
        if self.family.trim().is_empty() {
            return Err(AwsError::other("taskDefinition.family: must not be empty"));
        }
        if self.container_definitions.is_empty() {
            return Err(AwsError::other("taskDefinition.containerDefinitions: needs at least one container"));
        }
        for (i, c) in self.container_definitions.iter().enumerate() {
            if c.image.trim().is_empty() {
                return Err(AwsError::other(format!(
                    "taskDefinition.containerDefinitions[{i}].image: must not be empty"
                )));
            }
        }
        Ok(())
    }

    /// The RegisterTaskDefinition call for this definition.
    pub fn register(
        &self,
        client: &aws_sdk_ecs::Client,
    ) -> Result<
        aws_sdk_ecs::operation::register_task_definition::builders::RegisterTaskDefinitionFluentBuilder,
        AwsError,
    > {
        self.check()?;
        let mut r = client
            .register_task_definition()
            .family(&self.family)
            .set_task_role_arn(self.task_role_arn.clone())
            .set_execution_role_arn(self.execution_role_arn.clone())
            .set_network_mode(self.network_mode.as_deref().map(t::NetworkMode::from))
            .set_cpu(self.cpu.as_ref().map(|c| c.0.clone()))
            .set_memory(self.memory.as_ref().map(|c| c.0.clone()));
        for (i, c) in self.container_definitions.iter().enumerate() {
            r = r.container_definitions(c.to_sdk(&format!("taskDefinition.containerDefinitions[{i}]"))?);
        }
        for c in &self.requires_compatibilities {
            r = r.requires_compatibilities(t::Compatibility::from(c.as_str()));
        }
        if let Some(p) = &self.runtime_platform {
            r = r.runtime_platform(
                t::RuntimePlatform::builder()
                    .set_cpu_architecture(p.cpu_architecture.as_deref().map(t::CpuArchitecture::from))
                    .set_operating_system_family(p.operating_system_family.as_deref().map(t::OsFamily::from))
                    .build(),
            );
        }
        if let Some(e) = &self.ephemeral_storage {
            r = r.ephemeral_storage(t::EphemeralStorage::builder().size_in_gib(e.size_in_gi_b).build());
        }
        for v in &self.volumes {
            let mut vb = t::Volume::builder().name(&v.name);
            if let Some(h) = &v.host {
                vb = vb
                    .host(t::HostVolumeProperties::builder().set_source_path(h.source_path.clone()).build());
            }
            r = r.volumes(vb.build());
        }
        if !self.tags.is_empty() {
            r = r.set_tags(Some(tags(&self.tags)));
        }
        Ok(r)
    }
}

/// A service definition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceDefinition {
    /// Service name.
    pub service_name: String,
    /// Tasks to keep running (default 1).
    #[serde(default)]
    pub desired_count: Option<i32>,
    #[serde(default)]
    launch_type: Option<String>,
    /// Load balancers; blue-green replaces the target group.
    #[serde(default)]
    pub load_balancers: Vec<LoadBalancer>,
    #[serde(default)]
    network_configuration: Option<NetworkConfiguration>,
    #[serde(default)]
    deployment_configuration: Option<DeploymentConfiguration>,
    #[serde(default)]
    health_check_grace_period_seconds: Option<i32>,
    #[serde(default)]
    scheduling_strategy: Option<String>,
    #[serde(default)]
    platform_version: Option<String>,
    #[serde(default)]
    enable_execute_command: Option<bool>,
    #[serde(default, rename = "enableECSManagedTags")]
    enable_ecs_managed_tags: Option<bool>,
    #[serde(default)]
    propagate_tags: Option<String>,
    #[serde(default)]
    capacity_provider_strategy: Vec<CapacityProvider>,
    #[serde(default)]
    tags: Vec<Tag>,
    // The cluster comes from the infrastructure and the task definition from
    // the deploy; values here are ignored.
    #[serde(default, rename = "cluster")]
    _cluster: Option<Value>,
    #[serde(default, rename = "taskDefinition")]
    _task_definition: Option<Value>,
}

/// A load balancer of a service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoadBalancer {
    /// Target group.
    #[serde(default)]
    pub target_group_arn: Option<String>,
    #[serde(default)]
    load_balancer_name: Option<String>,
    /// Container.
    #[serde(default)]
    pub container_name: Option<String>,
    /// Port.
    #[serde(default)]
    pub container_port: Option<i32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NetworkConfiguration {
    awsvpc_configuration: AwsVpc,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AwsVpc {
    subnets: Vec<String>,
    #[serde(default)]
    security_groups: Vec<String>,
    #[serde(default)]
    assign_public_ip: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DeploymentConfiguration {
    #[serde(default)]
    maximum_percent: Option<i32>,
    #[serde(default)]
    minimum_healthy_percent: Option<i32>,
    #[serde(default)]
    deployment_circuit_breaker: Option<CircuitBreaker>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CircuitBreaker {
    enable: bool,
    rollback: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CapacityProvider {
    capacity_provider: String,
    #[serde(default)]
    weight: Option<i32>,
    #[serde(default)]
    base: Option<i32>,
}

fn network(n: &Option<NetworkConfiguration>, at: &str) -> Result<Option<t::NetworkConfiguration>, AwsError> {
    let Some(n) = n else { return Ok(None) };
    let a = &n.awsvpc_configuration;
    let vpc = built(
        &format!("{at}.networkConfiguration.awsvpcConfiguration"),
        t::AwsVpcConfiguration::builder()
            .set_subnets(Some(a.subnets.clone()))
            .set_security_groups((!a.security_groups.is_empty()).then(|| a.security_groups.clone()))
            .set_assign_public_ip(a.assign_public_ip.as_deref().map(t::AssignPublicIp::from))
            .build(),
    )?;
    Ok(Some(t::NetworkConfiguration::builder().awsvpc_configuration(vpc).build()))
}

fn capacity(
    v: &[CapacityProvider],
    at: &str,
) -> Result<Option<Vec<t::CapacityProviderStrategyItem>>, AwsError> {
    if v.is_empty() {
        return Ok(None);
    }
    v.iter()
        .map(|c| {
            built(
                &format!("{at}.capacityProviderStrategy"),
                t::CapacityProviderStrategyItem::builder()
                    .capacity_provider(&c.capacity_provider)
                    .set_weight(c.weight)
                    .set_base(c.base)
                    .build(),
            )
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// What a create or update sends, once resolved.
#[derive(Debug, Clone)]
pub struct ServiceInput {
    /// Name of the service to create or update.
    pub name: String,
    /// Desired count.
    pub desired_count: i32,
    /// Load balancers.
    pub load_balancers: Vec<t::LoadBalancer>,
    network: Option<t::NetworkConfiguration>,
    deployment: Option<t::DeploymentConfiguration>,
    capacity: Option<Vec<t::CapacityProviderStrategyItem>>,
    def: ServiceDefinition,
}

impl ServiceDefinition {
    /// The inputs for a service called `name` (the definition's own name,
    /// or a canary or blue-green slot name).
    pub fn input(&self, name: &str) -> Result<ServiceInput, AwsError> {
        let at = "serviceDefinition";
        if self.service_name.trim().is_empty() {
            return Err(AwsError::other("serviceDefinition.serviceName: must not be empty"));
        }
        let desired = self.desired_count.unwrap_or(1);
        if desired < 0 {
            return Err(AwsError::other("serviceDefinition.desiredCount: must not be negative"));
        }
        let deployment = match &self.deployment_configuration {
            None => None,
            Some(d) => {
                let mut b = t::DeploymentConfiguration::builder()
                    .set_maximum_percent(d.maximum_percent)
                    .set_minimum_healthy_percent(d.minimum_healthy_percent);
                if let Some(c) = &d.deployment_circuit_breaker {
                    b = b.deployment_circuit_breaker(
                        t::DeploymentCircuitBreaker::builder().enable(c.enable).rollback(c.rollback).build(),
                    );
                }
                Some(b.build())
            }
        };
        Ok(ServiceInput {
            name: name.to_string(),
            desired_count: desired,
            load_balancers: self
                .load_balancers
                .iter()
                .map(|l| {
                    t::LoadBalancer::builder()
                        .set_target_group_arn(l.target_group_arn.clone())
                        .set_load_balancer_name(l.load_balancer_name.clone())
                        .set_container_name(l.container_name.clone())
                        .set_container_port(l.container_port)
                        .build()
                })
                .collect(),
            network: network(&self.network_configuration, at)?,
            deployment,
            capacity: capacity(&self.capacity_provider_strategy, at)?,
            def: self.clone(),
        })
    }
}

impl ServiceInput {
    /// CreateService for this input on `cluster` with `task_definition` and `tags`.
    pub fn create(
        &self,
        client: &aws_sdk_ecs::Client,
        cluster: &str,
        task_definition: &str,
        extra_tags: &[(&str, &str)],
    ) -> aws_sdk_ecs::operation::create_service::builders::CreateServiceFluentBuilder {
        let d = &self.def;
        let mut all_tags = tags(&d.tags);
        all_tags.extend(extra_tags.iter().map(|(k, v)| t::Tag::builder().key(*k).value(*v).build()));
        client
            .create_service()
            .cluster(cluster)
            .service_name(&self.name)
            .task_definition(task_definition)
            .desired_count(self.desired_count)
            .set_launch_type(d.launch_type.as_deref().map(t::LaunchType::from))
            .set_load_balancers((!self.load_balancers.is_empty()).then(|| self.load_balancers.clone()))
            .set_network_configuration(self.network.clone())
            .set_deployment_configuration(self.deployment.clone())
            .set_health_check_grace_period_seconds(d.health_check_grace_period_seconds)
            .set_scheduling_strategy(d.scheduling_strategy.as_deref().map(t::SchedulingStrategy::from))
            .set_platform_version(d.platform_version.clone())
            .set_enable_execute_command(d.enable_execute_command)
            .set_enable_ecs_managed_tags(d.enable_ecs_managed_tags)
            .set_propagate_tags(d.propagate_tags.as_deref().map(t::PropagateTags::from))
            .set_capacity_provider_strategy(self.capacity.clone())
            .set_tags((!all_tags.is_empty()).then_some(all_tags))
    }

    /// UpdateService for this input on `cluster` with `task_definition`.
    pub fn update(
        &self,
        client: &aws_sdk_ecs::Client,
        cluster: &str,
        task_definition: &str,
        force: bool,
    ) -> aws_sdk_ecs::operation::update_service::builders::UpdateServiceFluentBuilder {
        let d = &self.def;
        client
            .update_service()
            .cluster(cluster)
            .service(&self.name)
            .task_definition(task_definition)
            .desired_count(self.desired_count)
            .set_load_balancers((!self.load_balancers.is_empty()).then(|| self.load_balancers.clone()))
            .set_network_configuration(self.network.clone())
            .set_deployment_configuration(self.deployment.clone())
            .set_health_check_grace_period_seconds(d.health_check_grace_period_seconds)
            .set_platform_version(d.platform_version.clone())
            .set_enable_execute_command(d.enable_execute_command)
            .set_capacity_provider_strategy(self.capacity.clone())
            .force_new_deployment(force)
    }
}

/// The fields of a RunTask request users may set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunTaskRequest {
    #[serde(default)]
    launch_type: Option<String>,
    /// Tasks to start (default 1).
    #[serde(default)]
    pub count: Option<i32>,
    #[serde(default)]
    network_configuration: Option<NetworkConfiguration>,
    #[serde(default)]
    overrides: Option<Overrides>,
    #[serde(default)]
    started_by: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    platform_version: Option<String>,
    #[serde(default)]
    capacity_provider_strategy: Vec<CapacityProvider>,
    #[serde(default)]
    enable_execute_command: Option<bool>,
    #[serde(default)]
    tags: Vec<Tag>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Overrides {
    #[serde(default)]
    container_overrides: Vec<ContainerOverride>,
    #[serde(default)]
    cpu: Option<NumberText>,
    #[serde(default)]
    memory: Option<NumberText>,
    #[serde(default)]
    task_role_arn: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ContainerOverride {
    name: String,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    environment: Vec<NameValue>,
}

impl RunTaskRequest {
    /// The RunTask call on `cluster` for `task_definition`.
    pub fn run(
        &self,
        client: &aws_sdk_ecs::Client,
        cluster: &str,
        task_definition: &str,
    ) -> Result<aws_sdk_ecs::operation::run_task::builders::RunTaskFluentBuilder, AwsError> {
        let count = self.count.unwrap_or(1);
        if !(1..=10).contains(&count) {
            return Err(AwsError::other(format!("runTaskRequest.count: {count} is not 1 to 10")));
        }
        let overrides = self.overrides.as_ref().map(|o| {
            let mut b = t::TaskOverride::builder()
                .set_cpu(o.cpu.as_ref().map(|c| c.0.clone()))
                .set_memory(o.memory.as_ref().map(|c| c.0.clone()))
                .set_task_role_arn(o.task_role_arn.clone());
            for c in &o.container_overrides {
                b = b.container_overrides(
                    t::ContainerOverride::builder()
                        .name(&c.name)
                        .set_command((!c.command.is_empty()).then(|| c.command.clone()))
                        .set_environment((!c.environment.is_empty()).then(|| env(&c.environment)))
                        .build(),
                );
            }
            b.build()
        });
        Ok(client
            .run_task()
            .cluster(cluster)
            .task_definition(task_definition)
            .count(count)
            .set_launch_type(self.launch_type.as_deref().map(t::LaunchType::from))
            .set_network_configuration(network(&self.network_configuration, "runTaskRequest")?)
            .set_overrides(overrides)
            .set_started_by(self.started_by.clone())
            .set_group(self.group.clone())
            .set_platform_version(self.platform_version.clone())
            .set_capacity_provider_strategy(capacity(&self.capacity_provider_strategy, "runTaskRequest")?)
            .set_enable_execute_command(self.enable_execute_command)
            .set_tags((!self.tags.is_empty()).then(|| tags(&self.tags))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::aws::document::read_plain;

    const TD: &str = r#"
family: web
networkMode: awsvpc
requiresCompatibilities: [FARGATE]
cpu: 256
memory: "512"
containerDefinitions:
  - name: app
    image: nginx:1.27
    essential: true
    portMappings: [{containerPort: 80, protocol: tcp}]
    environment: [{name: MODE, value: prod}]
    logConfiguration: {logDriver: awslogs, options: {awslogs-group: /ecs/web}}
    healthCheck: {command: [CMD-SHELL, "curl -f localhost"], interval: 10}
"#;

    #[test]
    fn task_definitions_read_like_aws_writes_them() {
        let td: TaskDefinition = read_plain("taskDefinition", TD).unwrap();
        assert!(td.check().is_ok());
        assert_eq!(td.cpu, Some(NumberText("256".into())));
        let c = td.container_definitions[0].to_sdk("c").unwrap();
        assert_eq!(c.image(), Some("nginx:1.27"));
        assert_eq!(c.port_mappings()[0].protocol(), Some(&t::TransportProtocol::Tcp));
        assert_eq!(c.environment()[0].value(), Some("prod"));
        assert_eq!(c.log_configuration().unwrap().log_driver(), &t::LogDriver::Awslogs);
        // A described task definition's read-only fields are accepted.
        let described = format!("{TD}taskDefinitionArn: arn:x\nrevision: 3\nstatus: ACTIVE\n");
        assert!(read_plain::<TaskDefinition>("taskDefinition", &described).is_ok());
    }

    #[test]
    fn bad_definitions_name_the_field() {
        let e = read_plain::<TaskDefinition>("taskDefinition", &TD.replace("portMappings", "portMapings"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("taskDefinition.containerDefinitions[0].portMapings: unknown field `portMapings`"),
            "{e}"
        );
        let e = read_plain::<TaskDefinition>(
            "taskDefinition",
            &TD.replace("containerPort: 80", "containerPort: x"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("taskDefinition.containerDefinitions[0].portMappings[0].containerPort"), "{e}");
        let td: TaskDefinition =
            read_plain("taskDefinition", "family: web\ncontainerDefinitions: []").unwrap();
        assert!(td.check().unwrap_err().to_string().contains("needs at least one container"));
        let s: ServiceDefinition =
            read_plain("serviceDefinition", "serviceName: web\ndesiredCount: -1").unwrap();
        assert!(s.input("web").unwrap_err().to_string().contains("desiredCount"));
        let e = read_plain::<ServiceDefinition>(
            "serviceDefinition",
            "serviceName: web\nnetworkConfiguration: {awsvpcConfiguration: {}}",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("serviceDefinition.networkConfiguration.awsvpcConfiguration: missing field `subnets`"),
            "{e}"
        );
    }

    #[test]
    fn service_definitions_read() {
        let s: ServiceDefinition = read_plain(
            "serviceDefinition",
            "serviceName: web\ndesiredCount: 2\nlaunchType: FARGATE\ncluster: ignored\n\
             loadBalancers: [{targetGroupArn: arn:tg, containerName: app, containerPort: 80}]\n\
             deploymentConfiguration: {deploymentCircuitBreaker: {enable: true, rollback: false}}\n",
        )
        .unwrap();
        let i = s.input("web-canary").unwrap();
        assert_eq!((i.name.as_str(), i.desired_count), ("web-canary", 2));
        assert_eq!(i.load_balancers[0].target_group_arn(), Some("arn:tg"));
        let cb = i.deployment.as_ref().and_then(|d| d.deployment_circuit_breaker()).unwrap();
        assert!(cb.enable() && !cb.rollback());
    }
}
