//! ECS actions. Each registers what it deploys, changes the service, and waits
//! by AWS's "services stable" rule ([`steady`]), logging rollout state and new
//! service events as it goes.
//!
//! **Where rollback finds the previous revision.** A deploy tags the service it
//! changes with [`TAG_DEPLOY_EXECUTION`] (the pipeline execution) and
//! [`TAG_PREVIOUS_TASK_DEFINITION`] (what the service ran before, or `none` if
//! the deploy created it), before it updates the service, and also reports the
//! revisions as step outputs. The rollback reads the tags: only a service
//! last deployed by the same execution is rolled back, so a rollback after a
//! deploy that never got that far changes nothing. Tags live with the service,
//! survive a delegate restart and need no expression wiring in the pipeline.
//!
//! **Blue-green.** The two slots are `<service>-blue` and `<service>-green`;
//! the live slot is the ACTIVE one registered with the target group the
//! production route forwards to. Create deploys the other slot behind the stage
//! target group; swap exchanges the target groups of the two routes and tags
//! the new live service with [`TAG_SWAP_EXECUTION`]; rollback swaps back only
//! if this execution swapped.
//!
//! **Instances.** Every service step reports, as `dray.instances`, the tasks
//! of all ACTIVE services of the deployment (`<service>`, its canary and its
//! blue-green slots), so each report is the whole picture. An emulator (moto)
//! never starts tasks for a service: then, when the service reports running
//! tasks, the service's deployment is reported as one instance with
//! `details.kind = service`.

pub mod manifest;
pub mod routes;
pub mod steady;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_ecs::types::{Service, Task};
use dray_shared::error_type::ErrorType;
use dray_shared::task::Instance;
use dray_shared::task::ecs::{
    BLUE_GREEN_SLOTS, CANARY_SUFFIX, EcsAction, EcsParams, TAG_DEPLOY_EXECUTION,
    TAG_PREVIOUS_TASK_DEFINITION, TAG_SWAP_EXECUTION, output,
};

use self::manifest::{RunTaskRequest, ServiceDefinition, ServiceInput, TaskDefinition};
use self::routes::Route;
use self::steady::{Progress, ServiceState, Verdict, assess};
use super::document::{read, read_plain};
use super::{AwsError, Done, client, log};
use crate::targets::RunContext;

/// How often a rollout or a task is polled.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// The definition texts of `action` (for the offer check).
pub fn documents(action: &EcsAction) -> Vec<(&'static str, String)> {
    match action {
        EcsAction::RollingDeploy(d) => {
            vec![
                ("taskDefinition", d.task_definition.clone()),
                ("serviceDefinition", d.service_definition.clone()),
            ]
        }
        EcsAction::CanaryDeploy(c) => vec![
            ("taskDefinition", c.deploy.task_definition.clone()),
            ("serviceDefinition", c.deploy.service_definition.clone()),
        ],
        EcsAction::BlueGreenCreate(b) => vec![
            ("taskDefinition", b.deploy.task_definition.clone()),
            ("serviceDefinition", b.deploy.service_definition.clone()),
        ],
        EcsAction::RollingRollback(s) | EcsAction::CanaryDelete(s) => {
            vec![("serviceDefinition", s.service_definition.clone())]
        }
        EcsAction::BlueGreenSwap(s) | EcsAction::BlueGreenRollback(s) => {
            vec![("serviceDefinition", s.service_definition.clone())]
        }
        EcsAction::RunTask(r) => {
            vec![
                ("taskDefinition", r.task_definition.clone()),
                ("runTaskRequest", r.run_task_request.clone()),
            ]
        }
    }
}

/// Runs one `ecs` task.
pub async fn run(p: EcsParams, cx: &mut RunContext, poll: Duration) -> Result<Done, AwsError> {
    let aws = client::connect(&p.aws, cx).await?;
    log(cx, format!("ECS {} on cluster {} in {}", p.action.name(), p.cluster, p.aws.region)).await;
    let e = Ecs { client: aws.ecs(), cluster: p.cluster.clone(), execution: p.execution_id.clone(), poll };
    match &p.action {
        EcsAction::RollingDeploy(d) => {
            let sd: ServiceDefinition = read(cx, "serviceDefinition", &d.service_definition).await?;
            let input = sd.input(&sd.service_name)?;
            e.deploy(cx, &d.task_definition, input, d.force_new_deployment, &sd.service_name).await
        }
        EcsAction::RollingRollback(s) => {
            let sd: ServiceDefinition = read_plain("serviceDefinition", &s.service_definition)?;
            e.rollback(cx, &sd.service_name).await
        }
        EcsAction::CanaryDeploy(c) => {
            let sd: ServiceDefinition = read(cx, "serviceDefinition", &c.deploy.service_definition).await?;
            let mut input = sd.input(&format!("{}{CANARY_SUFFIX}", sd.service_name))?;
            input.desired_count =
                i32::try_from(c.desired_count).map_err(|_| AwsError::other("desiredCount: too large"))?;
            e.deploy(cx, &c.deploy.task_definition, input, c.deploy.force_new_deployment, &sd.service_name)
                .await
        }
        EcsAction::CanaryDelete(s) => {
            let sd: ServiceDefinition = read_plain("serviceDefinition", &s.service_definition)?;
            e.delete(cx, &format!("{}{CANARY_SUFFIX}", sd.service_name), &sd.service_name).await
        }
        EcsAction::BlueGreenCreate(b) => {
            let sd: ServiceDefinition = read(cx, "serviceDefinition", &b.deploy.service_definition).await?;
            let elb = aws.elbv2();
            e.blue_green_create(cx, &elb, &sd, b).await
        }
        EcsAction::BlueGreenSwap(s) => {
            let sd: ServiceDefinition = read_plain("serviceDefinition", &s.service_definition)?;
            e.blue_green_swap(cx, &aws.elbv2(), &sd, s, false).await
        }
        EcsAction::BlueGreenRollback(s) => {
            let sd: ServiceDefinition = read_plain("serviceDefinition", &s.service_definition)?;
            e.blue_green_swap(cx, &aws.elbv2(), &sd, s, true).await
        }
        EcsAction::RunTask(r) => e.run_task(cx, r).await,
    }
}

struct Ecs {
    client: aws_sdk_ecs::Client,
    cluster: String,
    execution: String,
    poll: Duration,
}

fn family_revision(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

impl Ecs {
    /// The service called `name`, unless missing or INACTIVE.
    async fn describe(&self, name: &str) -> Result<Option<Service>, AwsError> {
        let out = self
            .client
            .describe_services()
            .cluster(&self.cluster)
            .services(name)
            .send()
            .await
            .map_err(|e| AwsError::sdk("DescribeServices", e))?;
        Ok(out.services().iter().find(|s| s.status() != Some("INACTIVE")).cloned())
    }

    async fn tags(&self, service: &Service) -> Result<HashMap<String, String>, AwsError> {
        let arn = service.service_arn().unwrap_or_default();
        let out = self
            .client
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await
            .map_err(|e| AwsError::sdk("ListTagsForResource", e))?;
        Ok(out
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
            .collect())
    }

    async fn tag(&self, service: &Service, tags: &[(&str, &str)]) -> Result<(), AwsError> {
        let arn = service.service_arn().unwrap_or_default();
        let tags = tags.iter().map(|(k, v)| aws_sdk_ecs::types::Tag::builder().key(*k).value(*v).build());
        self.client
            .tag_resource()
            .resource_arn(arn)
            .set_tags(Some(tags.collect()))
            .send()
            .await
            .map_err(|e| AwsError::sdk("TagResource", e))?;
        Ok(())
    }

    async fn register(&self, cx: &mut RunContext, text: &str) -> Result<String, AwsError> {
        let td: TaskDefinition = read(cx, "taskDefinition", text).await?;
        let out = td
            .register(&self.client)?
            .send()
            .await
            .map_err(|e| AwsError::sdk("RegisterTaskDefinition", e))?;
        let arn = out
            .task_definition()
            .and_then(|t| t.task_definition_arn())
            .ok_or_else(|| AwsError::other("RegisterTaskDefinition returned no ARN"))?
            .to_string();
        log(cx, format!("registered task definition {}", family_revision(&arn))).await;
        Ok(arn)
    }

    /// Creates or updates the service of `input` on `td`, recording what it
    /// ran before; returns the service, that previous revision, and the
    /// service as it was (whose events are history, not news).
    async fn apply(
        &self,
        cx: &mut RunContext,
        input: &ServiceInput,
        td: &str,
        force: bool,
    ) -> Result<(Service, String, ServiceState), AwsError> {
        match self.describe(&input.name).await? {
            Some(current) => {
                let before = ServiceState::from(&current);
                let previous = current.task_definition().unwrap_or("none").to_string();
                // Recorded before the change, so a rollback after a failed update finds it.
                self.tag(
                    &current,
                    &[(TAG_DEPLOY_EXECUTION, &self.execution), (TAG_PREVIOUS_TASK_DEFINITION, &previous)],
                )
                .await?;
                let out = input
                    .update(&self.client, &self.cluster, td, force)
                    .send()
                    .await
                    .map_err(|e| AwsError::sdk("UpdateService", e))?;
                log(
                    cx,
                    format!(
                        "updated service {} from {} to {} (desired {})",
                        input.name,
                        family_revision(&previous),
                        family_revision(td),
                        input.desired_count
                    ),
                )
                .await;
                Ok((out.service().cloned().unwrap_or(current), previous, before))
            }
            None => {
                let tags =
                    [(TAG_DEPLOY_EXECUTION, self.execution.as_str()), (TAG_PREVIOUS_TASK_DEFINITION, "none")];
                let out = input
                    .create(&self.client, &self.cluster, td, &tags)
                    .send()
                    .await
                    .map_err(|e| AwsError::sdk("CreateService", e))?;
                let s = out
                    .service()
                    .cloned()
                    .ok_or_else(|| AwsError::other("CreateService returned no service"))?;
                log(
                    cx,
                    format!(
                        "created service {} on {} (desired {})",
                        input.name,
                        family_revision(td),
                        input.desired_count
                    ),
                )
                .await;
                Ok((s, "none".into(), ServiceState::default()))
            }
        }
    }

    /// Polls until the service is steady; logs news on the way (events
    /// already on `before` are history).
    async fn wait_steady(
        &self,
        cx: &mut RunContext,
        name: &str,
        before: &ServiceState,
    ) -> Result<ServiceState, AwsError> {
        log(cx, format!("waiting for service {name} to reach a steady state")).await;
        let mut progress = Progress::after(before);
        loop {
            let s = self.describe(name).await?;
            let state = s.as_ref().map(ServiceState::from).unwrap_or_default();
            for line in progress.news(&state) {
                cx.logs.line(dray_shared::pb::LogStream::Stdout, &line);
            }
            cx.logs.flush().await;
            match assess(&state) {
                Verdict::Steady => {
                    log(cx, format!("service {name} is steady: {} running", state.running_count)).await;
                    return Ok(state);
                }
                Verdict::Failed(why) => {
                    return Err(AwsError::of(ErrorType::Verification, format!("service {name}: {why}")));
                }
                Verdict::InProgress => tokio::time::sleep(self.poll).await,
            }
        }
    }

    async fn instances(&self, service: &Service) -> Result<Vec<Instance>, AwsError> {
        let name = service.service_name().unwrap_or_default();
        let listed = self
            .client
            .list_tasks()
            .cluster(&self.cluster)
            .service_name(name)
            .send()
            .await
            .map_err(|e| AwsError::sdk("ListTasks", e))?;
        let arns = listed.task_arns().to_vec();
        let mut out = Vec::new();
        if !arns.is_empty() {
            let tasks = self.describe_tasks(&arns).await?;
            for t in &tasks {
                let mut details = BTreeMap::from([("service".to_string(), name.to_string())]);
                if let Some(l) = t.launch_type() {
                    details.insert("launchType".into(), l.as_str().to_string());
                }
                if let Some(h) = t.health_status() {
                    details.insert("health".into(), h.as_str().to_string());
                }
                out.push(Instance {
                    name: t.task_arn().map(family_revision).unwrap_or_default().to_string(),
                    host: t.availability_zone().unwrap_or_default().to_string(),
                    namespace: self.cluster.clone(),
                    version: t.task_definition_arn().map(family_revision).unwrap_or_default().to_string(),
                    status: t.last_status().unwrap_or_default().to_string(),
                    details,
                });
            }
        } else if service.running_count() > 0 {
            // No task list (an emulator): the service's deployment stands for its tasks.
            out.push(Instance {
                name: name.to_string(),
                host: String::new(),
                namespace: self.cluster.clone(),
                version: service.task_definition().map(family_revision).unwrap_or_default().to_string(),
                status: service.status().unwrap_or_default().to_string(),
                details: BTreeMap::from([
                    ("kind".to_string(), "service".to_string()),
                    ("runningCount".to_string(), service.running_count().to_string()),
                    ("desiredCount".to_string(), service.desired_count().to_string()),
                ]),
            });
        }
        Ok(out)
    }

    /// The instances of every ACTIVE service of the deployment `base`: the
    /// service itself, its canary and its blue-green slots. Each report is the
    /// whole picture, so a canary step never hides the main service's tasks.
    async fn family_instances(&self, base: &str) -> Result<Vec<Instance>, AwsError> {
        let names = [
            base.to_string(),
            format!("{base}{CANARY_SUFFIX}"),
            format!("{base}{}", BLUE_GREEN_SLOTS[0]),
            format!("{base}{}", BLUE_GREEN_SLOTS[1]),
        ];
        let out = self
            .client
            .describe_services()
            .cluster(&self.cluster)
            .set_services(Some(names.to_vec()))
            .send()
            .await
            .map_err(|e| AwsError::sdk("DescribeServices", e))?;
        let mut all = Vec::new();
        for s in out.services().iter().filter(|s| s.status() == Some("ACTIVE")) {
            all.extend(self.instances(s).await?);
        }
        Ok(all)
    }

    async fn describe_tasks(&self, arns: &[String]) -> Result<Vec<Task>, AwsError> {
        let mut tasks = Vec::new();
        // DescribeTasks takes at most 100 tasks per call.
        for chunk in arns.chunks(100) {
            let out = self
                .client
                .describe_tasks()
                .cluster(&self.cluster)
                .set_tasks(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| AwsError::sdk("DescribeTasks", e))?;
            tasks.extend(out.tasks().iter().cloned());
        }
        Ok(tasks)
    }

    async fn deploy(
        &self,
        cx: &mut RunContext,
        td_text: &str,
        input: ServiceInput,
        force: bool,
        base: &str,
    ) -> Result<Done, AwsError> {
        let td = self.register(cx, td_text).await?;
        let (service, previous, before) = self.apply(cx, &input, &td, force).await?;
        self.wait_steady(cx, &input.name, &before).await?;
        let service = self.describe(&input.name).await?.unwrap_or(service);
        let instances = self.family_instances(base).await?;
        Ok(Done::default()
            .with(output::TASK_DEFINITION_ARN, td)
            .with(output::PREVIOUS_TASK_DEFINITION_ARN, previous)
            .with(output::SERVICE_NAME, input.name.clone())
            .with(output::SERVICE_ARN, service.service_arn().unwrap_or_default())
            .with(dray_shared::task::INSTANCES_OUTPUT, instances_json(&instances)))
    }

    async fn rollback(&self, cx: &mut RunContext, name: &str) -> Result<Done, AwsError> {
        let nothing = Done::default().with(output::SERVICE_NAME, name).with(output::ROLLED_BACK, "false");
        let found = match self.describe(name).await {
            // No cluster, nothing this execution could have deployed.
            Err(e) if e.message.contains("ClusterNotFoundException") => {
                log(cx, format!("cluster {} does not exist: nothing to roll back", self.cluster)).await;
                return Ok(nothing);
            }
            other => other?,
        };
        let Some(service) = found else {
            log(cx, format!("service {name} does not exist: nothing to roll back")).await;
            return Ok(nothing);
        };
        let tags = self.tags(&service).await?;
        if tags.get(TAG_DEPLOY_EXECUTION).map(String::as_str) != Some(self.execution.as_str()) {
            log(cx, format!("service {name} was not deployed by this execution: nothing to roll back")).await;
            return Ok(nothing);
        }
        let previous = tags.get(TAG_PREVIOUS_TASK_DEFINITION).cloned().unwrap_or_else(|| "none".into());
        if previous == "none" {
            log(cx, format!("service {name} was created by this execution: deleting it")).await;
            self.remove(cx, &service).await?;
            return Ok(nothing.with(output::ROLLED_BACK, "true"));
        }
        let current = service.task_definition().unwrap_or_default().to_string();
        log(
            cx,
            format!(
                "rolling service {name} back from {} to {}",
                family_revision(&current),
                family_revision(&previous)
            ),
        )
        .await;
        self.client
            .update_service()
            .cluster(&self.cluster)
            .service(name)
            .task_definition(&previous)
            .send()
            .await
            .map_err(|e| AwsError::sdk("UpdateService", e))?;
        self.wait_steady(cx, name, &ServiceState::from(&service)).await?;
        let instances = self.family_instances(name).await?;
        Ok(nothing
            .with(output::ROLLED_BACK, "true")
            .with(output::TASK_DEFINITION_ARN, previous)
            .with(dray_shared::task::INSTANCES_OUTPUT, instances_json(&instances)))
    }

    async fn remove(&self, cx: &mut RunContext, service: &Service) -> Result<(), AwsError> {
        let name = service.service_name().unwrap_or_default();
        self.client
            .delete_service()
            .cluster(&self.cluster)
            .service(name)
            .force(true)
            .send()
            .await
            .map_err(|e| AwsError::sdk("DeleteService", e))?;
        log(cx, format!("deleted service {name}")).await;
        Ok(())
    }

    async fn delete(&self, cx: &mut RunContext, name: &str, base: &str) -> Result<Done, AwsError> {
        match self.describe(name).await? {
            Some(s) => self.remove(cx, &s).await?,
            None => log(cx, format!("service {name} does not exist: nothing to delete")).await,
        }
        let instances = self.family_instances(base).await?;
        Ok(Done::default()
            .with(output::SERVICE_NAME, name)
            .with(dray_shared::task::INSTANCES_OUTPUT, instances_json(&instances)))
    }

    /// The blue-green slots of `base`: (name, service if ACTIVE).
    async fn slots(&self, base: &str) -> Result<Vec<(String, Option<Service>)>, AwsError> {
        let mut out = Vec::new();
        for suffix in BLUE_GREEN_SLOTS {
            let name = format!("{base}{suffix}");
            let s = self.describe(&name).await?.filter(|s| s.status() == Some("ACTIVE"));
            out.push((name, s));
        }
        Ok(out)
    }

    async fn blue_green_create(
        &self,
        cx: &mut RunContext,
        elb: &aws_sdk_elasticloadbalancingv2::Client,
        sd: &ServiceDefinition,
        b: &dray_shared::task::ecs::BlueGreen,
    ) -> Result<Done, AwsError> {
        let (prod, stage) = Route::pair(&b.routes);
        let prod_tg = routes::target_group(elb, &prod).await?;
        let stage_tg = routes::target_group(elb, &stage).await?;
        if prod_tg == stage_tg {
            return Err(AwsError::other(format!("production and stage both forward to {prod_tg}")));
        }
        let slots = self.slots(&sd.service_name).await?;
        let live = slots.iter().position(|(_, s)| s.as_ref().is_some_and(|s| behind(s, &prod_tg)));
        let stage_slot = match live {
            Some(i) => 1 - i,
            None => 0,
        };
        let prod_name = live.map(|i| slots[i].0.clone()).unwrap_or_default();
        let stage_name = slots[stage_slot].0.clone();
        log(
            cx,
            format!(
                "production forwards to {prod_tg} ({}); deploying {stage_name} behind stage {stage_tg}",
                if prod_name.is_empty() { "no service yet" } else { &prod_name }
            ),
        )
        .await;
        let mut input = sd.input(&stage_name)?;
        if input.load_balancers.is_empty() {
            return Err(AwsError::other(
                "serviceDefinition.loadBalancers: blue-green needs a load balancer entry with containerName and containerPort",
            ));
        }
        input.load_balancers = input
            .load_balancers
            .iter()
            .map(|l| {
                aws_sdk_ecs::types::LoadBalancer::builder()
                    .target_group_arn(&stage_tg)
                    .set_container_name(l.container_name().map(str::to_string))
                    .set_container_port(l.container_port())
                    .build()
            })
            .collect();
        let done = self
            .deploy(cx, &b.deploy.task_definition, input, b.deploy.force_new_deployment, &sd.service_name)
            .await?;
        Ok(done
            .with(output::STAGE_SERVICE, stage_name)
            .with(output::PROD_SERVICE, prod_name)
            .with(output::PROD_TARGET_GROUP, prod_tg)
            .with(output::STAGE_TARGET_GROUP, stage_tg))
    }

    async fn blue_green_swap(
        &self,
        cx: &mut RunContext,
        elb: &aws_sdk_elasticloadbalancingv2::Client,
        sd: &ServiceDefinition,
        s: &dray_shared::task::ecs::BlueGreenSwap,
        rollback: bool,
    ) -> Result<Done, AwsError> {
        let (prod, stage) = Route::pair(&s.routes);
        let prod_tg = routes::target_group(elb, &prod).await?;
        let stage_tg = routes::target_group(elb, &stage).await?;
        let slots = self.slots(&sd.service_name).await?;
        let find = |tg: &str| slots.iter().find_map(|(_, s)| s.as_ref().filter(|s| behind(s, tg)).cloned());
        let live = find(&prod_tg);
        let idle = find(&stage_tg);
        let name =
            |s: &Option<Service>| s.as_ref().and_then(|s| s.service_name()).unwrap_or_default().to_string();
        if rollback {
            let swapped_here = match &live {
                Some(l) => {
                    self.tags(l).await?.get(TAG_SWAP_EXECUTION).map(String::as_str)
                        == Some(self.execution.as_str())
                }
                None => false,
            };
            if !swapped_here {
                log(cx, "production was not swapped by this execution: nothing to roll back").await;
                return Ok(Done::default().with(output::ROLLED_BACK, "false"));
            }
            if s.downsize_old_service
                && let Some(old) = &idle
            {
                let want = sd.desired_count.unwrap_or(1);
                log(cx, format!("scaling {} back up to {want} before swapping back", name(&idle))).await;
                self.client
                    .update_service()
                    .cluster(&self.cluster)
                    .service(old.service_name().unwrap_or_default())
                    .desired_count(want)
                    .send()
                    .await
                    .map_err(|e| AwsError::sdk("UpdateService", e))?;
                self.wait_steady(cx, old.service_name().unwrap_or_default(), &ServiceState::from(old))
                    .await?;
            }
        }
        if idle.is_none() {
            let hint =
                if rollback { "nothing to swap back to" } else { "run EcsBlueGreenCreateService first" };
            return Err(AwsError::other(format!(
                "no {} service is behind the stage target group {stage_tg}: {hint}",
                sd.service_name
            )));
        }
        routes::point(elb, &prod, &stage_tg).await?;
        routes::point(elb, &stage, &prod_tg).await?;
        log(
            cx,
            format!(
                "swapped: production now forwards to {stage_tg} ({}), stage to {prod_tg} ({})",
                name(&idle),
                if live.is_some() { name(&live) } else { "no service".into() }
            ),
        )
        .await;
        if let Some(new_live) = &idle {
            let mark = if rollback { "" } else { self.execution.as_str() };
            self.tag(new_live, &[(TAG_SWAP_EXECUTION, mark)]).await?;
        }
        if !rollback
            && s.downsize_old_service
            && let Some(old) = &live
        {
            let old_name = old.service_name().unwrap_or_default();
            self.client
                .update_service()
                .cluster(&self.cluster)
                .service(old_name)
                .desired_count(0)
                .send()
                .await
                .map_err(|e| AwsError::sdk("UpdateService", e))?;
            log(cx, format!("scaled {old_name} down to 0")).await;
        }
        let mut done = Done::default()
            .with(output::PROD_SERVICE, name(&idle))
            .with(output::STAGE_SERVICE, name(&live))
            .with(output::PROD_TARGET_GROUP, stage_tg)
            .with(output::STAGE_TARGET_GROUP, prod_tg);
        if rollback {
            done = done.with(output::ROLLED_BACK, "true");
        }
        let instances = self.family_instances(&sd.service_name).await?;
        Ok(done.with(dray_shared::task::INSTANCES_OUTPUT, instances_json(&instances)))
    }

    async fn run_task(
        &self,
        cx: &mut RunContext,
        r: &dray_shared::task::ecs::RunTask,
    ) -> Result<Done, AwsError> {
        let td = self.register(cx, &r.task_definition).await?;
        let req: RunTaskRequest = read(cx, "runTaskRequest", &r.run_task_request).await?;
        let out = req
            .run(&self.client, &self.cluster, &td)?
            .send()
            .await
            .map_err(|e| AwsError::sdk("RunTask", e))?;
        if let Some(f) = out.failures().first() {
            return Err(AwsError::other(format!(
                "RunTask: {}: {}",
                f.reason().unwrap_or("failure"),
                f.detail().or(f.arn()).unwrap_or_default()
            )));
        }
        let arns: Vec<String> = out.tasks().iter().filter_map(|t| t.task_arn().map(str::to_string)).collect();
        if arns.is_empty() {
            return Err(AwsError::other("RunTask started no task"));
        }
        for a in &arns {
            log(cx, format!("started task {}", family_revision(a))).await;
        }
        let done =
            Done::default().with(output::TASK_DEFINITION_ARN, td).with(output::TASK_ARNS, arns.join(","));
        if r.skip_wait {
            return Ok(done);
        }
        let mut last: HashMap<String, String> = HashMap::new();
        loop {
            let tasks: Vec<TaskState> =
                self.describe_tasks(&arns).await?.iter().map(TaskState::from).collect();
            for t in &tasks {
                if last.get(&t.arn) != Some(&t.last_status) {
                    log(cx, format!("task {}: {}", family_revision(&t.arn), t.last_status)).await;
                    last.insert(t.arn.clone(), t.last_status.clone());
                }
            }
            if !tasks.is_empty() && tasks.iter().all(|t| t.last_status == "STOPPED") {
                return match task_result(&tasks) {
                    Ok(()) => {
                        log(cx, "every container exited with code 0").await;
                        Ok(done)
                    }
                    Err(why) => Err(AwsError::other(why)),
                };
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}

fn behind(s: &Service, tg: &str) -> bool {
    s.load_balancers().iter().any(|l| l.target_group_arn() == Some(tg))
}

fn instances_json(v: &[Instance]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

/// What the run-task wait needs of a task.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskState {
    /// Task ARN.
    #[serde(rename = "taskArn", default)]
    pub arn: String,
    /// `PROVISIONING`… `STOPPED`.
    #[serde(default)]
    pub last_status: String,
    /// Why it stopped.
    #[serde(default)]
    pub stopped_reason: String,
    /// Containers.
    #[serde(default)]
    pub containers: Vec<ContainerState>,
}

/// A container of a stopped task.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Exit code, when it ran.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Why it stopped.
    #[serde(default)]
    pub reason: String,
}

impl From<&Task> for TaskState {
    fn from(t: &Task) -> Self {
        TaskState {
            arn: t.task_arn().unwrap_or_default().to_string(),
            last_status: t.last_status().unwrap_or_default().to_string(),
            stopped_reason: t.stopped_reason().unwrap_or_default().to_string(),
            containers: t
                .containers()
                .iter()
                .map(|c| ContainerState {
                    name: c.name().unwrap_or_default().to_string(),
                    exit_code: c.exit_code(),
                    reason: c.reason().unwrap_or_default().to_string(),
                })
                .collect(),
        }
    }
}

/// Success when every container of every stopped task exited with 0.
pub fn task_result(tasks: &[TaskState]) -> Result<(), String> {
    let mut problems = Vec::new();
    for t in tasks {
        let id = family_revision(&t.arn);
        if t.containers.is_empty() {
            problems.push(format!("task {id} stopped without running a container: {}", t.stopped_reason));
        }
        for c in &t.containers {
            match c.exit_code {
                Some(0) => {}
                Some(code) => {
                    problems.push(format!("task {id} container {} exited with code {code}", c.name))
                }
                None => problems.push(format!(
                    "task {id} container {} stopped without an exit code: {}",
                    c.name,
                    if c.reason.is_empty() { &t.stopped_reason } else { &c.reason }
                )),
            }
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
}

#[cfg(test)]
mod tests {
    //! Recorded DescribeTasks outputs (trimmed) of stopped one-off tasks: the
    //! emulator's tasks never exit on their own, so a non-zero exit is shown here.

    use super::*;

    fn tasks(json: &str) -> Vec<TaskState> {
        #[derive(serde::Deserialize)]
        struct Answer {
            tasks: Vec<TaskState>,
        }
        serde_json::from_str::<Answer>(json).unwrap().tasks
    }

    /// A local endpoint that answers every ECS call with the next of `answers`
    /// (the last one repeats), as AWS's JSON protocol does.
    async fn replay(answers: Vec<&'static str>) -> aws_sdk_ecs::Client {
        use std::sync::{Arc, Mutex};
        let queue = Arc::new(Mutex::new(answers));
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move || {
                let queue = Arc::clone(&queue);
                async move {
                    let mut q = queue.lock().unwrap();
                    let body = if q.len() > 1 { q.remove(0) } else { q[0] };
                    ([("content-type", "application/x-amz-json-1.1")], body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let conf = aws_sdk_ecs::Config::builder()
            .behavior_version(aws_sdk_ecs::config::BehaviorVersion::latest())
            .region(aws_sdk_ecs::config::Region::new("us-east-1"))
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .credentials_provider(aws_sdk_ecs::config::Credentials::new("AK", "SK", None, None, "test"))
            .http_client(super::client::http_client(
                &crate::proxy::Proxies::default(),
                false,
                "127.0.0.1",
                port,
            ))
            .build();
        aws_sdk_ecs::Client::from_conf(conf)
    }

    fn ecs(client: aws_sdk_ecs::Client) -> Ecs {
        Ecs { client, cluster: "c".into(), execution: "e".into(), poll: Duration::from_millis(10) }
    }

    #[tokio::test]
    async fn the_watcher_follows_a_recorded_rollout_to_steady() {
        use super::steady::recorded::{DRAINED, ROLLING};
        let (mut cx, outbox, _stop) = crate::targets::testing::context(&[]);
        let e = ecs(replay(vec![ROLLING, ROLLING, DRAINED]).await);
        let before = ServiceState {
            events: vec![steady::Event { id: "e1".into(), message: "old".into() }],
            ..Default::default()
        };
        let state = e.wait_steady(&mut cx, "web", &before).await.unwrap();
        assert_eq!((state.running_count, state.deployments.len()), (2, 1));
        let lines: Vec<String> =
            crate::targets::testing::lines(&outbox).into_iter().map(|(_, l)| l).collect();
        let rolling =
            lines.iter().position(|l| l.contains("2 deployment(s): PRIMARY web:8 IN_PROGRESS")).unwrap();
        let drained = lines.iter().position(|l| l.contains("has stopped 2 running tasks")).unwrap();
        assert!(rolling < drained, "{lines:#?}");
        assert_eq!(
            lines.iter().filter(|l| l.contains("2 deployment(s)")).count(),
            1,
            "unchanged state logged once"
        );
        assert!(
            !lines.iter().any(|l| l.contains("reached a steady state")),
            "history is not news: {lines:#?}"
        );
        assert_eq!(lines.last().unwrap(), "service web is steady: 2 running");
    }

    #[tokio::test]
    async fn the_watcher_fails_when_the_circuit_breaker_trips() {
        use super::steady::recorded::{BREAKER, ROLLING};
        let (mut cx, _outbox, _stop) = crate::targets::testing::context(&[]);
        let e = ecs(replay(vec![ROLLING, BREAKER]).await);
        let err = e.wait_steady(&mut cx, "web", &ServiceState::default()).await.unwrap_err();
        assert_eq!(err.error_type, ErrorType::Verification);
        assert!(err.message.contains("deployment ecs-svc/3 failed: ECS deployment circuit breaker"), "{err}");
    }

    #[tokio::test]
    async fn a_recorded_task_that_exits_non_zero_fails_the_run() {
        let (mut cx, outbox, _stop) = crate::targets::testing::context(&[]);
        let registered =
            r#"{"taskDefinition":{"taskDefinitionArn":"arn:aws:ecs:us-east-1:1:task-definition/job:4"}}"#;
        let started = r#"{"tasks":[{"taskArn":"arn:aws:ecs:us-east-1:1:task/c/0a2","lastStatus":"PROVISIONING"}],"failures":[]}"#;
        let running = r#"{"tasks":[{"taskArn":"arn:aws:ecs:us-east-1:1:task/c/0a2","lastStatus":"RUNNING",
            "containers":[{"name":"migrate"}]}],"failures":[]}"#;
        let stopped = r#"{"tasks":[{"taskArn":"arn:aws:ecs:us-east-1:1:task/c/0a2","lastStatus":"STOPPED",
            "stoppedReason":"Essential container in task exited","containers":[{"name":"migrate","exitCode":3}]}],"failures":[]}"#;
        let e = ecs(replay(vec![registered, started, running, stopped]).await);
        let r = dray_shared::task::ecs::RunTask {
            task_definition: "family: job\ncontainerDefinitions: [{name: migrate, image: job:1}]".into(),
            run_task_request: String::new(),
            skip_wait: false,
        };
        let err = e.run_task(&mut cx, &r).await.unwrap_err();
        assert_eq!(err.message, "task 0a2 container migrate exited with code 3");
        let lines: Vec<String> =
            crate::targets::testing::lines(&outbox).into_iter().map(|(_, l)| l).collect();
        for needle in
            ["registered task definition job:4", "started task 0a2", "task 0a2: RUNNING", "task 0a2: STOPPED"]
        {
            assert!(lines.iter().any(|l| l == needle), "{needle:?} not in {lines:#?}");
        }
    }

    #[test]
    fn exit_codes_decide_run_task_outcomes() {
        let ok = tasks(
            r#"{"tasks":[{"taskArn":"arn:aws:ecs:us-east-1:1:task/c/0a1","lastStatus":"STOPPED","stoppedReason":"Essential container in task exited",
               "containers":[{"name":"migrate","exitCode":0}]}]}"#,
        );
        assert_eq!(task_result(&ok), Ok(()));
        let failed = tasks(
            r#"{"tasks":[{"taskArn":"arn:aws:ecs:us-east-1:1:task/c/0a2","lastStatus":"STOPPED","stoppedReason":"Essential container in task exited",
               "containers":[{"name":"migrate","exitCode":3},{"name":"sidecar","exitCode":0}]}]}"#,
        );
        assert_eq!(task_result(&failed), Err("task 0a2 container migrate exited with code 3".into()));
        let pull = tasks(
            r#"{"tasks":[{"taskArn":"arn:aws:ecs:us-east-1:1:task/c/0a3","lastStatus":"STOPPED","stoppedReason":"CannotPullContainerError: pull access denied",
               "containers":[{"name":"migrate","reason":"CannotPullContainerError: pull access denied"}]}]}"#,
        );
        let e = task_result(&pull).unwrap_err();
        assert!(e.contains("without an exit code: CannotPullContainerError"), "{e}");
    }
}
