//! Triggers: what starts a pipeline without a person pressing a button.
//!
//! Pure building blocks, testable without a server:
//! - [`webhook`] authenticates a delivery (GitHub, GitLab, custom JSON) from its
//!   headers, raw body and the trigger's secret, and [`payload`] turns the body into a
//!   [`payload::TriggerPayload`] whose [`context`](payload::TriggerPayload::context) is
//!   the `trigger` object expressions read (`<+trigger.branch>`).
//! - [`conditions`] evaluates a trigger's `payloadConditions` over that object.
//! - [`cron`] parses schedules and decides which fire times are due.
//! - [`secret`] derives each webhook trigger's secret from the stored master key.
//! - [`request`] renders a trigger's inputs and builds the run request of a firing;
//!   [`delivery`] judges one webhook delivery (refuse, skip, or start what).
//!
//! At run time:
//! - [`receiver`] serves `POST /webhooks/{org}/{project}/{trigger}` on the HTTP port.
//! - [`scheduler`] fires cron triggers, once per fire time, across restarts.
//! - [`start`] starts executions the way `dray run` does and records every firing's
//!   outcome as a trigger event; [`defs`] reads trigger definitions from the store.

pub mod conditions;
pub mod cron;
pub mod defs;
pub mod delivery;
pub mod payload;
pub mod receiver;
pub mod request;
pub mod scheduler;
pub mod secret;
pub mod start;
pub mod webhook;
