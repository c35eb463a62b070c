//! Lambda actions: deploy (code and configuration, wait for
//! `LastUpdateStatus: Successful`, publish a version, point the alias),
//! weighted traffic shift on the alias, and rollback of the alias.
//!
//! **Where rollback finds the previous version.** The deploy tags the function
//! with [`TAG_DEPLOY_EXECUTION`], [`TAG_DEPLOYED_VERSION`] and
//! [`TAG_PREVIOUS_VERSION`] (the alias's version before, `none` for a new
//! alias) and reports both versions as outputs. Traffic shift and rollback read
//! the tags and act only when the same execution deployed, so a rollback
//! after a failed deploy that never published changes nothing.
//! A rollback with no previous version deletes the alias it created.

pub mod code;
pub mod manifest;

use std::collections::HashMap;

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{AliasRoutingConfiguration, LastUpdateStatus, State};
use dray_shared::error_type::ErrorType;
use dray_shared::task::lambda::{
    LambdaAction, LambdaParams, TAG_DEPLOY_EXECUTION, TAG_DEPLOYED_VERSION, TAG_PREVIOUS_VERSION,
    TrafficShift, output,
};

use self::manifest::FunctionDefinition;
use super::document::{read, read_plain};
use super::{AwsError, Done, client, log};
use crate::targets::RunContext;

/// How often an update's status is polled.
pub const POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// Runs one `lambda` task.
pub async fn run(p: LambdaParams, cx: &mut RunContext) -> Result<Done, AwsError> {
    let aws = client::connect(&p.aws, cx).await?;
    let l = Lambda { client: aws.lambda(), execution: p.execution_id.clone(), alias: p.alias.clone() };
    match &p.action {
        LambdaAction::Deploy(d) => {
            let f: FunctionDefinition = read(cx, "functionDefinition", &p.function_definition).await?;
            f.check()?;
            log(cx, format!("Lambda deploy of {} in {}", f.function_name, p.aws.region)).await;
            let code = code::fetch(&d.artifact, cx).await?;
            l.deploy(cx, &f, &code, d.route_traffic).await
        }
        LambdaAction::TrafficShift(t) => {
            let f: FunctionDefinition = read_plain("functionDefinition", &p.function_definition)?;
            l.shift(cx, &f.function_name, t).await
        }
        LambdaAction::Rollback => {
            let f: FunctionDefinition = read_plain("functionDefinition", &p.function_definition)?;
            l.rollback(cx, &f.function_name).await
        }
    }
}

struct Lambda {
    client: aws_sdk_lambda::Client,
    execution: String,
    alias: String,
}

/// What one GetFunctionConfiguration says about a pending change.
#[derive(Debug, PartialEq, Eq)]
pub enum UpdateVerdict {
    /// Done.
    Ready,
    /// Still going.
    Pending,
    /// Failed, with AWS's reason.
    Failed(String),
}

/// Reads a function's `State` and `LastUpdateStatus`.
pub fn update_verdict(state: Option<&State>, last: Option<&LastUpdateStatus>, reason: &str) -> UpdateVerdict {
    match (state, last) {
        (Some(State::Failed), _) | (_, Some(LastUpdateStatus::Failed)) => {
            UpdateVerdict::Failed(reason.to_string())
        }
        (Some(State::Pending), _) | (_, Some(LastUpdateStatus::InProgress)) => UpdateVerdict::Pending,
        _ => UpdateVerdict::Ready,
    }
}

fn weights(version: &str, weight: u8) -> AliasRoutingConfiguration {
    AliasRoutingConfiguration::builder()
        .additional_version_weights(version, f64::from(weight) / 100.0)
        .build()
}

impl Lambda {
    async fn wait_ready(&self, cx: &mut RunContext, name: &str, what: &str) -> Result<(), AwsError> {
        loop {
            let c = self
                .client
                .get_function_configuration()
                .function_name(name)
                .send()
                .await
                .map_err(|e| AwsError::sdk("GetFunctionConfiguration", e))?;
            let reason = c.last_update_status_reason().or(c.state_reason()).unwrap_or("no reason given");
            match update_verdict(c.state(), c.last_update_status(), reason) {
                UpdateVerdict::Ready => {
                    log(
                        cx,
                        format!(
                            "{what}: LastUpdateStatus {}",
                            c.last_update_status().map(|s| s.as_str()).unwrap_or("Successful")
                        ),
                    )
                    .await;
                    return Ok(());
                }
                UpdateVerdict::Failed(r) => {
                    return Err(AwsError::of(
                        ErrorType::Verification,
                        format!("{what} of {name} failed: {r}"),
                    ));
                }
                UpdateVerdict::Pending => tokio::time::sleep(POLL).await,
            }
        }
    }

    async fn alias_version(&self, name: &str) -> Result<Option<String>, AwsError> {
        match self.client.get_alias().function_name(name).name(&self.alias).send().await {
            Ok(a) => Ok(a.function_version().map(str::to_string)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(None),
            Err(e) => Err(AwsError::sdk("GetAlias", e)),
        }
    }

    async fn tags(&self, arn: &str) -> Result<HashMap<String, String>, AwsError> {
        let out =
            self.client.list_tags().resource(arn).send().await.map_err(|e| AwsError::sdk("ListTags", e))?;
        Ok(out.tags().cloned().unwrap_or_default().into_iter().collect())
    }

    async fn function_arn(&self, name: &str) -> Result<Option<String>, AwsError> {
        match self.client.get_function().function_name(name).send().await {
            Ok(f) => Ok(f.configuration().and_then(|c| c.function_arn()).map(str::to_string)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(None),
            Err(e) => Err(AwsError::sdk("GetFunction", e)),
        }
    }

    async fn point(&self, name: &str, version: &str, routing: Option<(&str, u8)>) -> Result<(), AwsError> {
        let routing = match routing {
            Some((v, w)) => weights(v, w),
            // An empty map clears any weights left by a shift.
            None => AliasRoutingConfiguration::builder()
                .set_additional_version_weights(Some(HashMap::new()))
                .build(),
        };
        self.client
            .update_alias()
            .function_name(name)
            .name(&self.alias)
            .function_version(version)
            .routing_config(routing)
            .send()
            .await
            .map_err(|e| AwsError::sdk("UpdateAlias", e))?;
        Ok(())
    }

    async fn deploy(
        &self,
        cx: &mut RunContext,
        f: &FunctionDefinition,
        code: &code::Code,
        route: bool,
    ) -> Result<Done, AwsError> {
        let name = &f.function_name;
        let arn = match self.function_arn(name).await? {
            None => {
                let out = f
                    .create(&self.client, code.function_code())?
                    .send()
                    .await
                    .map_err(|e| AwsError::sdk("CreateFunction", e))?;
                log(cx, format!("created function {name}")).await;
                self.wait_ready(cx, name, "create").await?;
                out.function_arn().unwrap_or_default().to_string()
            }
            Some(arn) => {
                let mut u = self.client.update_function_code().function_name(name);
                u = match code {
                    code::Code::S3 { bucket, key, version } => {
                        u.s3_bucket(bucket).s3_key(key).set_s3_object_version(version.clone())
                    }
                    code::Code::Zip(b) => u.zip_file(Blob::new(b.clone())),
                };
                u.send().await.map_err(|e| AwsError::sdk("UpdateFunctionCode", e))?;
                log(cx, format!("updated the code of {name}")).await;
                self.wait_ready(cx, name, "code update").await?;
                f.update(&self.client)?
                    .send()
                    .await
                    .map_err(|e| AwsError::sdk("UpdateFunctionConfiguration", e))?;
                log(cx, format!("updated the configuration of {name}")).await;
                self.wait_ready(cx, name, "configuration update").await?;
                arn
            }
        };
        let published = self
            .client
            .publish_version()
            .function_name(name)
            .description(format!("dray execution {}", self.execution))
            .send()
            .await
            .map_err(|e| AwsError::sdk("PublishVersion", e))?;
        let version = published.version().unwrap_or_default().to_string();
        log(cx, format!("published version {version}")).await;
        let previous = self.alias_version(name).await?;
        let previous_text = previous.clone().unwrap_or_else(|| "none".into());
        self.client
            .tag_resource()
            .resource(&arn)
            .tags(TAG_DEPLOY_EXECUTION, &self.execution)
            .tags(TAG_DEPLOYED_VERSION, &version)
            .tags(TAG_PREVIOUS_VERSION, &previous_text)
            .send()
            .await
            .map_err(|e| AwsError::sdk("TagResource", e))?;
        match &previous {
            None => {
                self.client
                    .create_alias()
                    .function_name(name)
                    .name(&self.alias)
                    .function_version(&version)
                    .send()
                    .await
                    .map_err(|e| AwsError::sdk("CreateAlias", e))?;
                log(cx, format!("created alias {} on version {version}", self.alias)).await;
            }
            Some(p) if *p == version => {
                log(
                    cx,
                    format!("alias {} already points at version {version} (nothing changed)", self.alias),
                )
                .await;
            }
            Some(p) if route => {
                self.point(name, &version, None).await?;
                log(cx, format!("alias {} moved from version {p} to {version}", self.alias)).await;
            }
            Some(p) => {
                log(cx, format!("alias {} stays on version {p} until a traffic shift", self.alias)).await
            }
        }
        Ok(Done::default()
            .with(output::FUNCTION_NAME, name.clone())
            .with(output::FUNCTION_ARN, arn)
            .with(output::VERSION, version.clone())
            .with(output::PREVIOUS_VERSION, previous_text)
            .with(output::ALIAS, self.alias.clone())
            .with(dray_shared::task::INSTANCES_OUTPUT, instance(name, &self.alias, &version)))
    }

    /// The versions this execution's deploy recorded, or why there are none.
    async fn recorded(&self, name: &str) -> Result<Option<(String, String)>, AwsError> {
        let Some(arn) = self.function_arn(name).await? else { return Ok(None) };
        let tags = self.tags(&arn).await?;
        if tags.get(TAG_DEPLOY_EXECUTION).map(String::as_str) != Some(self.execution.as_str()) {
            return Ok(None);
        }
        match (tags.get(TAG_DEPLOYED_VERSION), tags.get(TAG_PREVIOUS_VERSION)) {
            (Some(d), Some(p)) => Ok(Some((d.clone(), p.clone()))),
            _ => Ok(None),
        }
    }

    async fn shift(&self, cx: &mut RunContext, name: &str, t: &TrafficShift) -> Result<Done, AwsError> {
        let Some((new, previous)) = self.recorded(name).await? else {
            return Err(AwsError::other(format!(
                "no version of {name} was deployed by this execution: run AwsLambdaDeploy first"
            )));
        };
        if new == previous {
            // PublishVersion returns the last version when nothing changed.
            log(cx, format!("version {new} is already live on alias {}: nothing to shift", self.alias)).await;
            return Ok(Done::default()
                .with(output::FUNCTION_NAME, name)
                .with(output::VERSION, new)
                .with(output::ALIAS, self.alias.clone())
                .with(output::WEIGHT, "100"));
        }
        let payload = match &t.check_payload {
            Some(p) => {
                Some(cx.substitute("checkPayload", p).await.map_err(|e| AwsError::other(e.to_string()))?)
            }
            None => None,
        };
        let mut weight = 0;
        for step in &t.steps {
            if step.weight == 100 || previous == "none" {
                self.point(name, &new, None).await?;
                log(cx, format!("alias {}: 100% to version {new}", self.alias)).await;
            } else {
                self.point(name, &previous, Some((&new, step.weight))).await?;
                log(
                    cx,
                    format!(
                        "alias {}: {}% to version {new}, {}% to version {previous}",
                        self.alias,
                        step.weight,
                        100 - step.weight
                    ),
                )
                .await;
            }
            weight = step.weight;
            if step.wait_ms > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(step.wait_ms)).await;
            }
            if let Some(p) = &payload {
                if let Err(why) = self.check(name, p).await {
                    if previous != "none" {
                        self.point(name, &previous, None).await?;
                        log(
                            cx,
                            format!(
                                "check failed at {weight}%: alias {} back on version {previous}",
                                self.alias
                            ),
                        )
                        .await;
                    }
                    return Err(AwsError::of(ErrorType::Verification, format!("check at {weight}%: {why}")));
                }
                log(cx, format!("check at {weight}%: invoke of {name}:{} succeeded", self.alias)).await;
            }
        }
        Ok(Done::default()
            .with(output::FUNCTION_NAME, name)
            .with(output::VERSION, new.clone())
            .with(output::PREVIOUS_VERSION, previous)
            .with(output::ALIAS, self.alias.clone())
            .with(output::WEIGHT, weight.to_string()))
    }

    /// Invokes the alias; a function error or a failed call is a failed check.
    async fn check(&self, name: &str, payload: &str) -> Result<(), String> {
        let out = self
            .client
            .invoke()
            .function_name(name)
            .qualifier(&self.alias)
            .payload(Blob::new(payload.as_bytes().to_vec()))
            .send()
            .await
            .map_err(|e| AwsError::sdk("Invoke", e).message)?;
        if let Some(err) = out.function_error() {
            let body =
                out.payload().map(|b| String::from_utf8_lossy(b.as_ref()).into_owned()).unwrap_or_default();
            return Err(format!("function error {err}: {body}"));
        }
        Ok(())
    }

    async fn rollback(&self, cx: &mut RunContext, name: &str) -> Result<Done, AwsError> {
        let nothing = Done::default().with(output::FUNCTION_NAME, name).with(output::ROLLED_BACK, "false");
        let Some((new, previous)) = self.recorded(name).await? else {
            log(cx, format!("{name} was not deployed by this execution: nothing to roll back")).await;
            return Ok(nothing);
        };
        if previous == "none" {
            self.client
                .delete_alias()
                .function_name(name)
                .name(&self.alias)
                .send()
                .await
                .map_err(|e| AwsError::sdk("DeleteAlias", e))?;
            log(cx, format!("deleted alias {} created by this execution", self.alias)).await;
        } else {
            self.point(name, &previous, None).await?;
            log(cx, format!("alias {} back on version {previous} (from {new})", self.alias)).await;
        }
        Ok(nothing.with(output::ROLLED_BACK, "true").with(output::VERSION, previous.clone()).with(
            dray_shared::task::INSTANCES_OUTPUT,
            if previous == "none" { "[]".to_string() } else { instance(name, &self.alias, &previous) },
        ))
    }
}

fn instance(name: &str, alias: &str, version: &str) -> String {
    let i = dray_shared::task::Instance {
        name: format!("{name}:{alias}"),
        host: String::new(),
        namespace: String::new(),
        version: version.to_string(),
        status: "Active".into(),
        details: [("alias".to_string(), alias.to_string())].into_iter().collect(),
    };
    serde_json::to_string(&[i]).unwrap_or_else(|_| "[]".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_status_decides_the_wait() {
        assert_eq!(
            update_verdict(Some(&State::Active), Some(&LastUpdateStatus::Successful), ""),
            UpdateVerdict::Ready
        );
        assert_eq!(update_verdict(Some(&State::Active), None, ""), UpdateVerdict::Ready);
        assert_eq!(update_verdict(Some(&State::Pending), None, ""), UpdateVerdict::Pending);
        assert_eq!(
            update_verdict(Some(&State::Active), Some(&LastUpdateStatus::InProgress), ""),
            UpdateVerdict::Pending
        );
        assert_eq!(
            update_verdict(Some(&State::Active), Some(&LastUpdateStatus::Failed), "EniLimitExceeded"),
            UpdateVerdict::Failed("EniLimitExceeded".into())
        );
        assert_eq!(
            update_verdict(Some(&State::Failed), None, "bad role"),
            UpdateVerdict::Failed("bad role".into())
        );
    }

    #[test]
    fn weights_are_fractions() {
        let w = weights("7", 10);
        assert_eq!(w.additional_version_weights().unwrap()["7"], 0.1);
    }
}
