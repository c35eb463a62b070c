//! Starting a trigger's execution through the same path as `dray run`
//! ([`pipelines_svc::run`]), and recording what came of each firing.
//!
//! [`pipelines_svc::run`]: crate::grpc::pipelines_svc::run

use std::sync::Arc;

use tonic::{Code, Status};
use tracing::warn;

use crate::grpc::pipelines_svc;
use crate::pipeline::engine::Handle;
use crate::pipeline::start::RunRequest;
use crate::store::Store;
use crate::store::triggers::TriggerEvent;

/// Events kept per trigger; older ones are dropped as new ones are recorded, so a
/// sender hammering a webhook with bad signatures cannot grow the store without end.
pub const EVENTS_KEPT: u32 = 1000;

/// An execution a firing led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// Execution id.
    pub id: String,
    /// Its per-pipeline run number.
    pub sequence_id: u64,
    /// True when an execution with the same idempotency key already existed (a
    /// redelivery, or a fire attempted again): nothing new was started.
    pub duplicate: bool,
}

/// Why a firing started nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartFailure {
    /// The run was refused as asked (missing inputs, unknown pipeline or input set…):
    /// asking again will not help.
    #[error("{0}")]
    Refused(String),
    /// The store or the engine is unavailable: asking again later may work.
    #[error("{0}")]
    Unavailable(String),
}

impl From<Status> for StartFailure {
    fn from(s: Status) -> Self {
        match s.code() {
            Code::Unavailable | Code::Internal | Code::Unknown | Code::DeadlineExceeded => {
                StartFailure::Unavailable(s.message().to_string())
            }
            _ => StartFailure::Refused(s.message().to_string()),
        }
    }
}

/// Starts `req`'s execution, or finds the one its idempotency key already started.
pub async fn start(
    store: &Arc<dyn Store>,
    engine: &Handle,
    req: RunRequest,
) -> Result<Started, StartFailure> {
    // Checked here (the engine checks again) only to tell a repeat apart in the event
    // record, and to skip compiling the pipeline for it.
    if let Some(key) = &req.idempotency_key {
        let existing =
            store.execution_by_key(key).await.map_err(|e| StartFailure::Unavailable(e.to_string()))?;
        if let Some(e) = existing {
            return Ok(Started { id: e.id, sequence_id: e.sequence_id, duplicate: true });
        }
    }
    let (id, sequence_id) = pipelines_svc::run(store, engine, req).await?;
    Ok(Started { id, sequence_id, duplicate: false })
}

/// Records an event. A store that refuses it does not fail the firing: the
/// execution (or refusal) stands, and the log says what was not recorded.
pub async fn record(store: &dyn Store, event: TriggerEvent) {
    if let Err(e) = store.append_trigger_event(&event, EVENTS_KEPT).await {
        warn!(
            trigger = %event.trigger,
            outcome = %event.outcome,
            error = %e,
            "Could not record a trigger event."
        );
    }
}
