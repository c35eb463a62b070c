//! Client commands for triggers: `dray trigger webhook-url` (the path and secret
//! to paste into GitHub, GitLab or a custom sender) and `dray trigger events`
//! (what became of recent deliveries and fires).

use clap::Subcommand;
use dray_shared::pb;
use dray_shared::pb::triggers_client::TriggersClient;
use serde::Serialize;

use super::client::ClientArgs;
use super::output::{Format, ago, print, table};
use super::{scope_of, status};

/// `dray trigger …`.
#[derive(Debug, Subcommand)]
pub enum TriggerCmd {
    /// Print a webhook trigger's URL path (on the manager's HTTP port) and its secret.
    #[command(name = "webhook-url")]
    WebhookUrl {
        /// Trigger identifier.
        id: String,
        /// Scope ORG/PROJECT [default: default/default].
        #[arg(long)]
        project: Option<String>,
    },
    /// A trigger's recent deliveries and fires, newest first.
    Events {
        /// Trigger identifier.
        id: String,
        /// Scope ORG/PROJECT [default: default/default].
        #[arg(long)]
        project: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

/// A webhook endpoint as shown to users.
#[derive(Debug, Serialize)]
struct WebhookView {
    path: String,
    secret: String,
    provider: String,
    enabled: bool,
}

/// A trigger event as shown to users.
#[derive(Debug, Serialize)]
struct EventView {
    at_ms: i64,
    outcome: String,
    event: String,
    reason: String,
    delivery_id: Option<String>,
    execution_id: Option<String>,
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// How a provider's deliveries carry the secret, for the person pasting it.
fn usage(provider: &str) -> &'static str {
    match provider {
        "Github" => {
            "GitHub: Settings → Webhooks → Payload URL = http(s)://<manager>:<http-port><path>, \
                     content type application/json, Secret = the secret above."
        }
        "Gitlab" => {
            "GitLab: Settings → Webhooks → URL = http(s)://<manager>:<http-port><path>, \
                     Secret token = the secret above."
        }
        _ => {
            "Send JSON to http(s)://<manager>:<http-port><path> with `X-Dray-Signature: sha256=<hex \
              HMAC-SHA256(secret, body)>` or `Authorization: Bearer <secret>`."
        }
    }
}

/// Runs a trigger command; returns the exit code.
pub async fn run(args: &ClientArgs, cmd: TriggerCmd, fmt: Format) -> anyhow::Result<i32> {
    let (channel, bearer) = args.channel().await?;
    let mut c = TriggersClient::with_interceptor(channel, bearer);
    match cmd {
        TriggerCmd::WebhookUrl { id, project } => {
            let w = c
                .get_trigger_webhook(pb::GetTriggerWebhookRequest {
                    scope: scope_of(project.as_deref())?,
                    trigger: id,
                })
                .await
                .map_err(status)?
                .into_inner();
            let view =
                WebhookView { path: w.path, secret: w.secret, provider: w.provider, enabled: w.enabled };
            print(fmt, &view, || {
                let mut out = format!(
                    "URL path:  {}\nSecret:    {}\nProvider:  {}\nEnabled:   {}\n\n{}\n",
                    view.path,
                    view.secret,
                    view.provider,
                    view.enabled,
                    usage(&view.provider)
                );
                if !view.enabled {
                    out.push_str("The trigger is disabled: deliveries get 404 until it is enabled.\n");
                }
                out
            })?;
        }
        TriggerCmd::Events { id, project, limit } => {
            let events: Vec<EventView> = c
                .list_trigger_events(pb::ListTriggerEventsRequest {
                    scope: scope_of(project.as_deref())?,
                    trigger: id,
                    limit,
                })
                .await
                .map_err(status)?
                .into_inner()
                .events
                .into_iter()
                .map(|e| EventView {
                    at_ms: e.at_ms,
                    outcome: e.outcome,
                    event: e.event,
                    reason: e.reason,
                    delivery_id: non_empty(e.delivery_id),
                    execution_id: non_empty(e.execution_id),
                })
                .collect();
            print(fmt, &events, || {
                table(
                    &["TIME", "OUTCOME", "EVENT", "DELIVERY", "EXECUTION", "REASON"],
                    events
                        .iter()
                        .map(|e| {
                            vec![
                                ago(e.at_ms),
                                e.outcome.clone(),
                                if e.event.is_empty() { "-".into() } else { e.event.clone() },
                                e.delivery_id.clone().unwrap_or_else(|| "-".into()),
                                e.execution_id.clone().unwrap_or_else(|| "-".into()),
                                e.reason.clone(),
                            ]
                        })
                        .collect(),
                )
            })?;
        }
    }
    Ok(0)
}
