//! What to do with one webhook delivery to one webhook trigger: refuse it, skip
//! it, or start its pipeline with which request. Pure; the HTTP receiver
//! (`receiver.rs`) acts on the verdict.
//!
//! Order matters: authentication first (an unauthenticated caller learns nothing
//! about the trigger's filters), then GitHub's ping, the event filter and the
//! payload conditions, and only then the inputs are rendered.

use axum::http::HeaderMap;

use super::conditions::{self, PayloadCondition};
use super::payload::TriggerPayload;
use super::request::{delivery_key, run_request};
use super::webhook::{self, WebhookEvent, WebhookSource};
use crate::model::entities::{Trigger, Webhook, WebhookEventType, WebhookProvider};
use crate::pipeline::start::RunRequest;
use crate::store::triggers::TriggerRef;

/// The verdict on a delivery. Every variant carries what its event record needs.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Not authenticated (`unauthenticated`), or authenticated but unreadable.
    Refused {
        /// True for a missing or wrong signature/token: HTTP 401 rather than 400.
        unauthenticated: bool,
        /// Why (never a header value or the body).
        reason: String,
        /// The event, when it got as far as reading one.
        event: String,
    },
    /// Authenticated, but this trigger does not start on it.
    Skipped {
        /// Why.
        reason: String,
        /// The event.
        event: String,
        /// The sender's delivery id.
        delivery_id: Option<String>,
    },
    /// The trigger's inputs do not render for this delivery.
    Failed {
        /// Why.
        reason: String,
        /// The event.
        event: String,
        /// The sender's delivery id.
        delivery_id: Option<String>,
    },
    /// Start the pipeline.
    Start {
        /// The run to start.
        request: Box<RunRequest>,
        /// The event.
        event: String,
        /// The sender's delivery id.
        delivery_id: Option<String>,
    },
}

/// The source the receiver verifies a provider's deliveries as.
pub fn source_of(provider: WebhookProvider) -> WebhookSource {
    match provider {
        WebhookProvider::Github => WebhookSource::Github,
        WebhookProvider::Gitlab => WebhookSource::Gitlab,
        WebhookProvider::Custom => WebhookSource::Custom,
    }
}

/// The event's name in trigger YAML (`events: [Push]`).
fn filter_name(e: WebhookEventType) -> &'static str {
    match e {
        WebhookEventType::Push => "Push",
        WebhookEventType::PullRequest => "PullRequest",
        WebhookEventType::MergeRequest => "MergeRequest",
    }
}

/// Judges a delivery to trigger `t` (defined by `def`, whose source is `hook`),
/// given the trigger's secret.
pub fn judge(
    def: &Trigger,
    hook: &Webhook,
    t: &TriggerRef,
    headers: &HeaderMap,
    body: &[u8],
    secret: &[u8],
) -> Verdict {
    let verified = match webhook::verify(source_of(hook.provider), headers, body, secret) {
        Ok(v) => v,
        Err(e) => {
            return Verdict::Refused {
                unauthenticated: e.is_unauthenticated(),
                reason: e.to_string(),
                event: String::new(),
            };
        }
    };
    let event = verified.event.name().to_string();
    let delivery_id = verified.delivery_id.clone();
    let skipped = |reason: String, event: &str| Verdict::Skipped {
        reason,
        event: event.to_string(),
        delivery_id: delivery_id.clone(),
    };
    if verified.event == WebhookEvent::Ping {
        return skipped("ping: the webhook reaches Dray; pings start nothing".into(), &event);
    }
    let payload = match TriggerPayload::parse(verified.source, verified.event, body) {
        Ok(p) => p,
        Err(e) => return Verdict::Refused { unauthenticated: false, reason: e.to_string(), event },
    };
    // A GitHub push of a tag becomes a Tag event only once the body is read.
    let event = payload.event.name().to_string();
    let wanted: Vec<&str> = hook.spec.events.iter().map(|e| filter_name(*e)).collect();
    if !payload.event.matches_filter(&wanted) {
        return skipped(
            format!("event {event} is not one of the trigger's events ({})", wanted.join(", ")),
            &event,
        );
    }
    let context = payload.context();
    let conditions: Vec<PayloadCondition> = hook
        .spec
        .payload_conditions
        .iter()
        .map(|c| PayloadCondition { key: c.key.clone(), operator: c.operator, value: c.value.clone() })
        .collect();
    if let Err(failure) = conditions::evaluate(&conditions, &context) {
        return skipped(failure.to_string(), &event);
    }
    let key = delivery_id.as_deref().map(|d| delivery_key(t, d));
    match run_request(def, t, context, key) {
        Ok(request) => Verdict::Start { request: Box::new(request), event, delivery_id },
        Err(reason) => Verdict::Failed { reason, event, delivery_id },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::http::{HeaderName, HeaderValue};
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    use super::*;
    use crate::model::entities::{PayloadCondition as YamlCondition, TriggerSource, WebhookSpec};
    use crate::triggers::conditions::Operator;

    const SECRET: &[u8] = b"0123456789abcdef";
    const PUSH: &[u8] = include_bytes!("testdata/github_push.json");
    const PING: &[u8] = include_bytes!("testdata/github_ping.json");

    fn def(
        provider: WebhookProvider,
        events: &[WebhookEventType],
        conditions: &[(&str, Operator, &str)],
    ) -> Trigger {
        Trigger {
            name: "On push".into(),
            identifier: "on_push".into(),
            org_identifier: None,
            project_identifier: None,
            description: None,
            tags: BTreeMap::new(),
            pipeline_identifier: "build".into(),
            enabled: true,
            input_set_refs: vec![],
            inputs: [("branch".to_string(), "<+trigger.branch>".to_string())].into(),
            source: TriggerSource::Webhook(Webhook {
                provider,
                spec: WebhookSpec {
                    events: events.to_vec(),
                    payload_conditions: conditions
                        .iter()
                        .map(|(k, o, v)| YamlCondition {
                            key: k.to_string(),
                            operator: *o,
                            value: v.to_string(),
                        })
                        .collect(),
                },
            }),
        }
    }

    fn hook(d: &Trigger) -> &Webhook {
        match &d.source {
            TriggerSource::Webhook(w) => w,
            TriggerSource::Scheduled(_) => unreachable!(),
        }
    }

    fn t() -> TriggerRef {
        TriggerRef::new("default", "default", "default", "on_push")
    }

    fn github(event: &str, body: &[u8], secret: &[u8], delivery: Option<&str>) -> HeaderMap {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(body);
        let mut h = HeaderMap::new();
        let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        h.insert(HeaderName::from_static("x-hub-signature-256"), HeaderValue::from_str(&sig).unwrap());
        h.insert(HeaderName::from_static("x-github-event"), HeaderValue::from_str(event).unwrap());
        if let Some(d) = delivery {
            h.insert(HeaderName::from_static("x-github-delivery"), HeaderValue::from_str(d).unwrap());
        }
        h
    }

    #[test]
    fn a_signed_push_starts_with_rendered_inputs_and_the_delivery_key() {
        let d = def(WebhookProvider::Github, &[WebhookEventType::Push], &[]);
        let v = judge(&d, hook(&d), &t(), &github("push", PUSH, SECRET, Some("d-1")), PUSH, SECRET);
        let Verdict::Start { request, event, delivery_id } = v else { panic!("{v:?}") };
        assert_eq!(event, "Push");
        assert_eq!(delivery_id.as_deref(), Some("d-1"));
        assert_eq!(request.pipeline, "build");
        assert_eq!(request.triggered_by, "trigger:on_push");
        assert_eq!(request.trigger["type"], "Webhook");
        assert_eq!(request.trigger_inputs["branch"], request.trigger["branch"].as_str().unwrap());
        assert_eq!(request.idempotency_key.as_deref(), Some("webhook:default/default/default/on_push:d-1"));
    }

    #[test]
    fn without_a_delivery_id_there_is_no_idempotency_key() {
        let d = def(WebhookProvider::Github, &[], &[]);
        let v = judge(&d, hook(&d), &t(), &github("push", PUSH, SECRET, None), PUSH, SECRET);
        let Verdict::Start { request, .. } = v else { panic!("{v:?}") };
        assert_eq!(request.idempotency_key, None);
    }

    #[test]
    fn a_wrong_signature_is_refused_as_unauthenticated_before_anything_else() {
        // Filters that would skip the delivery must not be revealed to an unauthenticated caller.
        let d = def(WebhookProvider::Github, &[WebhookEventType::PullRequest], &[]);
        let v = judge(&d, hook(&d), &t(), &github("push", PUSH, b"wrong", Some("d-1")), PUSH, SECRET);
        let Verdict::Refused { unauthenticated, reason, event } = v else { panic!("{v:?}") };
        assert!(unauthenticated);
        assert!(reason.contains("X-Hub-Signature-256"), "{reason}");
        assert!(!reason.contains("0123456789abcdef"), "{reason}");
        assert_eq!(event, "");
    }

    #[test]
    fn a_gitlab_trigger_refuses_a_github_delivery() {
        let d = def(WebhookProvider::Gitlab, &[], &[]);
        let v = judge(&d, hook(&d), &t(), &github("push", PUSH, SECRET, None), PUSH, SECRET);
        assert!(matches!(v, Verdict::Refused { unauthenticated: true, .. }), "{v:?}");
    }

    #[test]
    fn an_authenticated_body_that_is_not_an_object_is_refused_but_not_as_unauthenticated() {
        let d = def(WebhookProvider::Github, &[], &[]);
        let v = judge(&d, hook(&d), &t(), &github("push", b"[]", SECRET, None), b"[]", SECRET);
        let Verdict::Refused { unauthenticated, event, .. } = v else { panic!("{v:?}") };
        assert!(!unauthenticated);
        assert_eq!(event, "Push");
    }

    #[test]
    fn ping_is_skipped_even_when_every_event_is_wanted() {
        let d = def(WebhookProvider::Github, &[], &[]);
        let v = judge(&d, hook(&d), &t(), &github("ping", PING, SECRET, Some("p")), PING, SECRET);
        let Verdict::Skipped { event, delivery_id, .. } = v else { panic!("{v:?}") };
        assert_eq!((event.as_str(), delivery_id.as_deref()), ("Ping", Some("p")));
    }

    #[test]
    fn other_events_and_unmet_conditions_are_skipped_with_the_reason() {
        let d = def(WebhookProvider::Github, &[WebhookEventType::PullRequest], &[]);
        let v = judge(&d, hook(&d), &t(), &github("push", PUSH, SECRET, None), PUSH, SECRET);
        let Verdict::Skipped { reason, .. } = v else { panic!("{v:?}") };
        assert!(reason.contains("Push") && reason.contains("PullRequest"), "{reason}");

        let d =
            def(WebhookProvider::Github, &[], &[("<+trigger.branch>", Operator::Equals, "no-such-branch")]);
        let v = judge(&d, hook(&d), &t(), &github("push", PUSH, SECRET, None), PUSH, SECRET);
        let Verdict::Skipped { reason, .. } = v else { panic!("{v:?}") };
        assert!(reason.contains("payload condition 1"), "{reason}");
    }

    #[test]
    fn inputs_that_do_not_render_fail_the_delivery() {
        let mut d = def(WebhookProvider::Github, &[], &[]);
        d.inputs.insert("x".into(), "<+trigger.".into());
        let h = hook(&d).clone();
        let v = judge(&d, &h, &t(), &github("push", PUSH, SECRET, Some("d")), PUSH, SECRET);
        let Verdict::Failed { reason, delivery_id, .. } = v else { panic!("{v:?}") };
        assert!(reason.contains("\"x\""), "{reason}");
        assert_eq!(delivery_id.as_deref(), Some("d"));
    }
}
