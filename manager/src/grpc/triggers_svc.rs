//! `dray.v1.Triggers`: a webhook trigger's URL path and secret, and the events
//! recorded for a trigger's deliveries and fires.

use std::sync::Arc;

use dray_shared::pb::{self, triggers_server::Triggers};
use tonic::{Request, Response, Status};

use super::api_svc::normalise_scope;
use super::status::invalid;
use crate::model::Scope;
use crate::model::entities::{TriggerSource, WebhookProvider};
use crate::store::Store;
use crate::store::triggers::{TriggerEvent, TriggerRef};
use crate::triggers::defs;
use crate::triggers::secret::MasterKey;

/// Events listed when the request names no limit.
const DEFAULT_LIMIT: u32 = 50;

/// Serves `dray.v1.Triggers`.
pub struct TriggersSvc {
    store: Arc<dyn Store>,
    key: MasterKey,
}

impl TriggersSvc {
    /// A service over `store`, deriving webhook secrets from `key`.
    pub fn new(store: Arc<dyn Store>, key: MasterKey) -> Self {
        TriggersSvc { store, key }
    }
}

/// The trigger a request names; empty org or project mean `default`.
fn trigger_ref(scope: Option<pb::Scope>, trigger: &str) -> Result<TriggerRef, Status> {
    let s = normalise_scope(scope)?;
    if trigger.is_empty() {
        return Err(invalid("trigger", "the trigger identifier is empty"));
    }
    let scope = Scope::new(&s.org, &s.project);
    Ok(TriggerRef::new(&s.account, &scope.org, &scope.project, trigger))
}

/// The path the receiver serves a trigger's deliveries on.
pub fn webhook_path(t: &TriggerRef) -> String {
    format!("/webhooks/{}/{}/{}", t.org, t.project, t.identifier)
}

fn event_view(e: TriggerEvent) -> pb::TriggerEvent {
    pb::TriggerEvent {
        at_ms: e.at_ms,
        outcome: e.outcome.as_str().into(),
        event: e.event,
        reason: e.reason,
        delivery_id: e.delivery_id.unwrap_or_default(),
        execution_id: e.execution_id.unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl Triggers for TriggersSvc {
    async fn get_trigger_webhook(
        &self,
        request: Request<pb::GetTriggerWebhookRequest>,
    ) -> Result<Response<pb::TriggerWebhook>, Status> {
        let r = request.into_inner();
        let t = trigger_ref(r.scope, &r.trigger)?;
        if t.account != crate::model::DEFAULT_ACCOUNT {
            // The receiver serves the default account only.
            return Err(Status::failed_precondition(format!(
                "webhooks are served for account {:?} only, not {:?}",
                crate::model::DEFAULT_ACCOUNT,
                t.account
            )));
        }
        let def = defs::load(&*self.store, &t)
            .await?
            .ok_or_else(|| Status::not_found(format!("trigger {t} does not exist")))?;
        let TriggerSource::Webhook(hook) = &def.source else {
            return Err(Status::failed_precondition(format!(
                "trigger {t} is a Scheduled trigger; only Webhook triggers have a URL"
            )));
        };
        Ok(Response::new(pb::TriggerWebhook {
            path: webhook_path(&t),
            secret: self.key.webhook_secret(&t),
            provider: match hook.provider {
                WebhookProvider::Github => "Github",
                WebhookProvider::Gitlab => "Gitlab",
                WebhookProvider::Custom => "Custom",
            }
            .into(),
            enabled: def.enabled,
        }))
    }

    async fn list_trigger_events(
        &self,
        request: Request<pb::ListTriggerEventsRequest>,
    ) -> Result<Response<pb::ListTriggerEventsResponse>, Status> {
        let r = request.into_inner();
        let t = trigger_ref(r.scope, &r.trigger)?;
        let limit = if r.limit == 0 { DEFAULT_LIMIT } else { r.limit };
        let events = self.store.list_trigger_events(&t, limit).await?;
        Ok(Response::new(pb::ListTriggerEventsResponse {
            events: events.into_iter().map(event_view).collect(),
        }))
    }
}
