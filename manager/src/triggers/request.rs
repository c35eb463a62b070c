//! From a trigger definition and the `trigger` object of one firing to the
//! [`RunRequest`] that starts its pipeline. Pure.
//!
//! The trigger's `inputs` are templates rendered over `{ "trigger": <object>,
//! "eventPayload": <object>.payload }` (`eventPayload` is Harness's alias for
//! `trigger.payload`), then handed to the run as the layer between its input sets
//! and nothing else; the run makes their text inert as expressions.

use std::collections::BTreeMap;

use dray_shared::expr::{JsonContext, Template};
use serde_json::{Value as Json, json};

use crate::model::entities::Trigger;
use crate::pipeline::start::RunRequest;
use crate::store::triggers::TriggerRef;

/// `triggered_by` of every execution a trigger starts: `trigger:<identifier>`.
pub fn triggered_by(t: &TriggerRef) -> String {
    format!("trigger:{}", t.identifier)
}

/// The idempotency key of a webhook delivery: its delivery id, namespaced by the
/// trigger so that one sender's ids can neither collide with nor suppress another
/// trigger's (or a cron fire's) executions.
pub fn delivery_key(t: &TriggerRef, delivery_id: &str) -> String {
    format!("webhook:{t}:{delivery_id}")
}

/// The idempotency key of a cron fire: `cron:<account>/<org>/<project>/<trigger>:<fire_ms>`,
/// so a fire starts one execution however often it is attempted.
pub fn cron_key(t: &TriggerRef, fire_ms: i64) -> String {
    format!("cron:{t}:{fire_ms}")
}

/// The `trigger` object of a cron fire.
pub fn cron_context(expression: &str, fire_ms: i64) -> Json {
    json!({ "type": "Scheduled", "cron": expression, "firedAt": fire_ms })
}

/// The run request of one firing of `def`, or why its inputs do not render.
pub fn run_request(
    def: &Trigger,
    t: &TriggerRef,
    context: Json,
    idempotency_key: Option<String>,
) -> Result<RunRequest, String> {
    Ok(RunRequest {
        account: t.account.clone(),
        org: t.org.clone(),
        project: t.project.clone(),
        pipeline: def.pipeline_identifier.clone(),
        input_sets: def.input_set_refs.clone(),
        set: BTreeMap::new(),
        trigger_inputs: render_inputs(&def.inputs, &context)?,
        trigger: context,
        triggered_by: triggered_by(t),
        idempotency_key,
    })
}

/// Renders every input template over the trigger object.
pub fn render_inputs(
    inputs: &BTreeMap<String, String>,
    trigger: &Json,
) -> Result<BTreeMap<String, String>, String> {
    let root = json!({
        "trigger": trigger,
        "eventPayload": trigger.get("payload").cloned().unwrap_or(Json::Null),
    });
    inputs
        .iter()
        .map(|(path, text)| {
            let rendered = Template::parse(text)
                .map_err(|e| format!("trigger input {path:?}: {e}"))?
                .render(&JsonContext(&root))
                .map_err(|e| format!("trigger input {path:?}: {e}"))?;
            Ok((path.clone(), rendered))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::entities::{CronSpec, Schedule, TriggerSource};

    fn trigger(inputs: &[(&str, &str)]) -> Trigger {
        Trigger {
            name: "Nightly".into(),
            identifier: "nightly".into(),
            org_identifier: None,
            project_identifier: None,
            description: None,
            tags: BTreeMap::new(),
            pipeline_identifier: "release".into(),
            enabled: true,
            input_set_refs: vec!["qa".into(), "eu".into()],
            inputs: inputs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            source: TriggerSource::Scheduled(Schedule::Cron(CronSpec { expression: "0 2 * * *".into() })),
        }
    }

    #[test]
    fn cron_request_names_the_fire() {
        let t = TriggerRef::new("default", "eng", "web", "nightly");
        let def = trigger(&[("channel", "nightly-<+trigger.firedAt>")]);
        let key = cron_key(&t, 1_700_000_000_000);
        let req = run_request(&def, &t, cron_context("0 2 * * *", 1_700_000_000_000), Some(key)).unwrap();
        assert_eq!((req.account.as_str(), req.org.as_str(), req.project.as_str()), ("default", "eng", "web"));
        assert_eq!(req.pipeline, "release");
        assert_eq!(req.input_sets, ["qa", "eu"]);
        assert!(req.set.is_empty());
        assert_eq!(req.trigger_inputs["channel"], "nightly-1700000000000");
        assert_eq!(
            req.trigger,
            json!({"type": "Scheduled", "cron": "0 2 * * *", "firedAt": 1_700_000_000_000i64})
        );
        assert_eq!(req.triggered_by, "trigger:nightly");
        assert_eq!(req.idempotency_key.as_deref(), Some("cron:default/eng/web/nightly:1700000000000"));
    }

    #[test]
    fn inputs_read_the_trigger_and_the_payload_alias() {
        let ctx = json!({"branch": "main", "payload": {"head_commit": {"id": "abc"}}});
        let inputs: BTreeMap<String, String> = [
            ("branch".to_string(), "<+trigger.branch>".to_string()),
            ("sha".to_string(), "<+eventPayload.head_commit.id>".to_string()),
            ("both".to_string(), "<+trigger.branch>@<+trigger.payload.head_commit.id>".to_string()),
            ("plain".to_string(), "fixed".to_string()),
        ]
        .into();
        let got = render_inputs(&inputs, &ctx).unwrap();
        assert_eq!(got["branch"], "main");
        assert_eq!(got["sha"], "abc");
        assert_eq!(got["both"], "main@abc");
        assert_eq!(got["plain"], "fixed");
    }

    #[test]
    fn an_input_that_does_not_render_names_its_path() {
        let inputs: BTreeMap<String, String> = [("x".to_string(), "<+trigger.branch".to_string())].into();
        let e = render_inputs(&inputs, &json!({})).unwrap_err();
        assert!(e.starts_with("trigger input \"x\": "), "{e}");
    }

    #[test]
    fn a_payload_cannot_smuggle_in_a_secret_reference() {
        let ctx = json!({"branch": "<+secrets.getValue(\"env:TOKEN\")>"});
        let inputs: BTreeMap<String, String> = [("b".to_string(), "<+trigger.branch>".to_string())].into();
        assert!(render_inputs(&inputs, &ctx).is_err());
    }

    #[test]
    fn delivery_keys_are_namespaced_by_trigger() {
        let a = TriggerRef::new("default", "o", "p", "a");
        let b = TriggerRef::new("default", "o", "p", "b");
        assert_eq!(delivery_key(&a, "42"), "webhook:default/o/p/a:42");
        assert_ne!(delivery_key(&a, "42"), delivery_key(&b, "42"));
        assert_ne!(delivery_key(&a, "1"), cron_key(&a, 1));
    }
}
