//! The webhook receiver on the manager's HTTP port:
//! `POST /webhooks/{org}/{project}/{trigger}` (account `default`).
//!
//! | reply | when | recorded |
//! |---|---|---|
//! | 404 | no such trigger, disabled, or not a webhook trigger (one message for all, so the URL reveals nothing) | no |
//! | 401 | missing or wrong signature/token | `refused` |
//! | 400 | authenticated, but the event header or body is unreadable | `refused` |
//! | 200 `{"status":"skipped","reason"}` | ping, event filter or a payload condition not met | `skipped` |
//! | 422 `{"error"}` | the run was refused (inputs missing or not rendering, unknown pipeline…) | `failed` |
//! | 503 `{"error"}` | store or engine unavailable: the sender should retry | `failed` |
//! | 202 `{"executionId","sequenceId"}` | started, or a repeated delivery id (the first execution) | `started` / `duplicate` |
//!
//! Bodies are limited to [`MAX_BODY`]. Nothing recorded or logged holds the body or
//! the secret.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::defs;
use super::delivery::{Verdict, judge};
use super::secret::MasterKey;
use super::start::{StartFailure, record, start};
use crate::cluster::forward;
use crate::cluster::leader::{self, Role};
use crate::model::DEFAULT_ACCOUNT;
use crate::model::entities::TriggerSource;
use crate::pipeline::engine::Handle;
use crate::store::Store;
use crate::store::triggers::{Outcome, TriggerEvent, TriggerRef};

/// Largest delivery body accepted (1 MiB); larger ones get 413.
pub const MAX_BODY: usize = 1 << 20;

/// What the receiver needs.
#[derive(Clone)]
pub struct WebhookState {
    /// Trigger definitions, events, executions.
    pub store: Arc<dyn Store>,
    /// The pipeline engine that starts executions.
    pub engine: Handle,
    /// Derives each trigger's secret.
    pub key: MasterKey,
    /// Who leads: a follower relays deliveries to the leader, which runs them.
    pub role: watch::Receiver<Role>,
}

/// The webhook routes, to merge into the manager's HTTP router.
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route("/webhooks/{org}/{project}/{trigger}", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

type Reply = (StatusCode, Json<Value>);

fn error_reply(status: StatusCode, message: impl Into<String>) -> Reply {
    (status, Json(json!({ "error": message.into() })))
}

async fn receive(
    State(s): State<WebhookState>,
    Path((org, project, trigger)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let mut role = s.role.clone();
    match leader::known(&mut role, forward::WAIT_FOR_LEADER).await {
        Role::Leader => {}
        Role::Follower { http_url, .. } => {
            let path = format!("/webhooks/{org}/{project}/{trigger}");
            return match forward::webhook(&http_url, &path, &headers, body).await {
                Ok((status, body)) => {
                    let value = serde_json::from_slice(&body).unwrap_or_else(|_| json!({}));
                    (status, Json(value))
                }
                Err(e) => error_reply(StatusCode::SERVICE_UNAVAILABLE, e),
            };
        }
        Role::Unknown => {
            return error_reply(StatusCode::SERVICE_UNAVAILABLE, "no replica leads yet; retry shortly");
        }
    }
    let t = TriggerRef::new(DEFAULT_ACCOUNT, &org, &project, &trigger);
    let not_found = || {
        error_reply(StatusCode::NOT_FOUND, format!("no enabled webhook trigger {org}/{project}/{trigger}"))
    };
    let def = match defs::load(&*s.store, &t).await {
        Ok(Some(def)) => def,
        Ok(None) => return not_found(),
        Err(e) => {
            error!(trigger = %t, error = %e, "Could not read the trigger of a webhook delivery.");
            return error_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "the trigger could not be read; retry later",
            );
        }
    };
    let hook = match &def.source {
        TriggerSource::Webhook(h) if def.enabled => h,
        _ => return not_found(),
    };
    let secret = s.key.webhook_secret(&t);
    let at_ms = dray_shared::clock::now_ms();
    let event_record = |outcome, event: String, reason: String, delivery_id, execution_id| TriggerEvent {
        trigger: t.clone(),
        at_ms,
        outcome,
        event,
        reason,
        delivery_id,
        execution_id,
    };

    match judge(&def, hook, &t, &headers, &body, secret.as_bytes()) {
        Verdict::Refused { unauthenticated, reason, event } => {
            warn!(trigger = %t, event = %event, reason = %reason, "Webhook delivery refused.");
            record(&*s.store, event_record(Outcome::Refused, event, reason.clone(), None, None)).await;
            let status = if unauthenticated { StatusCode::UNAUTHORIZED } else { StatusCode::BAD_REQUEST };
            error_reply(status, reason)
        }
        Verdict::Skipped { reason, event, delivery_id } => {
            info!(trigger = %t, event = %event, delivery = ?delivery_id, reason = %reason, "Webhook delivery skipped.");
            record(&*s.store, event_record(Outcome::Skipped, event, reason.clone(), delivery_id, None)).await;
            (StatusCode::OK, Json(json!({ "status": "skipped", "reason": reason })))
        }
        Verdict::Failed { reason, event, delivery_id } => {
            info!(trigger = %t, event = %event, delivery = ?delivery_id, reason = %reason, "Webhook delivery failed.");
            record(&*s.store, event_record(Outcome::Failed, event, reason.clone(), delivery_id, None)).await;
            error_reply(StatusCode::UNPROCESSABLE_ENTITY, reason)
        }
        Verdict::Start { request, event, delivery_id } => match start(&s.store, &s.engine, *request).await {
            Ok(started) => {
                let outcome = if started.duplicate { Outcome::Duplicate } else { Outcome::Started };
                info!(
                    trigger = %t,
                    event = %event,
                    delivery = ?delivery_id,
                    execution = %started.id,
                    outcome = %outcome,
                    "Webhook delivery started an execution."
                );
                let reason =
                    if started.duplicate { "repeated delivery id".to_string() } else { String::new() };
                let rec = event_record(outcome, event, reason, delivery_id, Some(started.id.clone()));
                record(&*s.store, rec).await;
                let body = json!({
                    "status": outcome.as_str(),
                    "executionId": started.id,
                    "sequenceId": started.sequence_id,
                });
                (StatusCode::ACCEPTED, Json(body))
            }
            Err(failure) => {
                warn!(trigger = %t, event = %event, delivery = ?delivery_id, error = %failure, "Webhook delivery could not start its pipeline.");
                let reason = failure.to_string();
                record(&*s.store, event_record(Outcome::Failed, event, reason.clone(), delivery_id, None))
                    .await;
                let status = match failure {
                    StartFailure::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
                    StartFailure::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                };
                error_reply(status, reason)
            }
        },
    }
}
