//! Blue-green traffic: which target group a listener rule (or a listener's
//! default action) forwards to, and pointing it at another one. Other actions
//! of the rule (authentication, fixed responses before the forward) are kept.

use aws_sdk_elasticloadbalancingv2::Client;
use aws_sdk_elasticloadbalancingv2::types::{Action, ActionTypeEnum};

use crate::targets::aws::AwsError;
use dray_shared::task::ecs::Routes;

/// Where one kind of traffic is routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A listener rule.
    Rule(String),
    /// A listener's default action.
    Listener(String),
}

impl Route {
    /// The production and stage routes of `r`.
    pub fn pair(r: &Routes) -> (Route, Route) {
        let one = |listener: &String, rule: &Option<String>| match rule {
            Some(rule) => Route::Rule(rule.clone()),
            None => Route::Listener(listener.clone()),
        };
        (
            one(&r.prod_listener_arn, &r.prod_listener_rule_arn),
            one(&r.stage_listener_arn, &r.stage_listener_rule_arn),
        )
    }

    fn arn(&self) -> &str {
        match self {
            Route::Rule(a) | Route::Listener(a) => a,
        }
    }
}

async fn actions(elb: &Client, route: &Route) -> Result<Vec<Action>, AwsError> {
    match route {
        Route::Rule(arn) => {
            let out = elb
                .describe_rules()
                .rule_arns(arn)
                .send()
                .await
                .map_err(|e| AwsError::sdk("DescribeRules", e))?;
            let rule = out
                .rules()
                .first()
                .ok_or_else(|| AwsError::other(format!("listener rule {arn} not found")))?;
            Ok(rule.actions().to_vec())
        }
        Route::Listener(arn) => {
            let out = elb
                .describe_listeners()
                .listener_arns(arn)
                .send()
                .await
                .map_err(|e| AwsError::sdk("DescribeListeners", e))?;
            let l = out
                .listeners()
                .first()
                .ok_or_else(|| AwsError::other(format!("listener {arn} not found")))?;
            Ok(l.default_actions().to_vec())
        }
    }
}

fn forward_target(a: &Action) -> Option<String> {
    if a.r#type() != Some(&ActionTypeEnum::Forward) {
        return None;
    }
    if let Some(tg) = a.target_group_arn() {
        return Some(tg.to_string());
    }
    let groups = a.forward_config()?.target_groups();
    // A weighted forward to several groups is not a blue-green route.
    match groups {
        [one] => one.target_group_arn().map(str::to_string),
        _ => None,
    }
}

/// The target group `route` forwards to.
pub async fn target_group(elb: &Client, route: &Route) -> Result<String, AwsError> {
    actions(elb, route)
        .await?
        .iter()
        .find_map(forward_target)
        .ok_or_else(|| AwsError::other(format!("{} does not forward to a single target group", route.arn())))
}

/// Points `route`'s forward action at `target_group`.
pub async fn point(elb: &Client, route: &Route, target_group: &str) -> Result<(), AwsError> {
    let current = actions(elb, route).await?;
    let mut replaced = false;
    let mut next = Vec::with_capacity(current.len());
    for a in current {
        if !replaced && forward_target(&a).is_some() {
            replaced = true;
            let b = Action::builder()
                .r#type(ActionTypeEnum::Forward)
                .target_group_arn(target_group)
                .set_order(a.order());
            next.push(b.build());
        } else {
            next.push(a);
        }
    }
    if !replaced {
        return Err(AwsError::other(format!("{} has no forward action", route.arn())));
    }
    match route {
        Route::Rule(arn) => {
            elb.modify_rule()
                .rule_arn(arn)
                .set_actions(Some(next))
                .send()
                .await
                .map_err(|e| AwsError::sdk("ModifyRule", e))?;
        }
        Route::Listener(arn) => {
            elb.modify_listener()
                .listener_arn(arn)
                .set_default_actions(Some(next))
                .send()
                .await
                .map_err(|e| AwsError::sdk("ModifyListener", e))?;
        }
    }
    Ok(())
}
