//! The cron scheduler: every second (and at start) it lists the enabled Scheduled
//! triggers of every scope and starts the fires that are due.
//!
//! - **Last fired** is stored per trigger (`trigger_cron_state`). A trigger seen for
//!   the first time starts from *now*: creating a trigger never backfills. A trigger
//!   changed (or re-enabled) after its last fire starts from the change, so editing a
//!   schedule does not make up for the old one either.
//! - **Missed fires** follow [`due_fires`]: however many fire times passed since the
//!   last one (a tick, or a manager outage), one execution, for the latest.
//! - **Exactly once**: each fire starts under the idempotency key
//!   `cron:<account>/<org>/<project>/<trigger>:<fire_ms>`, and its time is stored
//!   only after the start. A restart between the two finds the execution of that key
//!   instead of starting another, and so would a second replica firing the same time.
//! - **Failures** are recorded as events. A start refused as asked (missing inputs,
//!   unknown pipeline) is not retried; one that failed because the store or the
//!   engine was unavailable is retried on the next ticks (for the latest due time),
//!   at most [`MAX_ATTEMPTS`] times in a row.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};

use super::cron::{Schedule, due_fires};
use super::defs;
use super::request::{cron_context, cron_key, run_request};
use super::start::{StartFailure, record, start};
use crate::model::Kind;
use crate::model::entities::{Schedule as YamlSchedule, Trigger, TriggerSource};
use crate::pipeline::engine::Handle;
use crate::store::Store;
use crate::store::entities::{EntityRecord, ScopeFilter};
use crate::store::triggers::{Outcome, TriggerEvent, TriggerRef};

/// How often the scheduler looks for due fires.
pub const TICK: Duration = Duration::from_secs(1);

/// Attempts in a row at starting a trigger's due fire that failed for a reason that
/// may pass (store or engine unavailable), before it is recorded as failed and given up.
pub const MAX_ATTEMPTS: u32 = 5;

/// A trigger that fires on a schedule, as last read.
struct CronTrigger {
    def: Trigger,
    schedule: Schedule,
    /// When the trigger's definition last changed (Unix ms).
    updated_ms: i64,
}

/// A parsed definition, kept while its entity version stands.
struct Cached {
    version: u64,
    /// `None` for triggers that do not fire on a schedule (or are disabled).
    cron: Option<Arc<CronTrigger>>,
}

/// The scheduler's state between ticks.
pub struct Scheduler {
    store: Arc<dyn Store>,
    engine: Handle,
    defs: HashMap<TriggerRef, Cached>,
    /// Last fire time of every enabled cron trigger; read from the store on first sight.
    last_fired: HashMap<TriggerRef, i64>,
    /// Attempts in a row that failed for a reason that may pass, per trigger.
    attempts: HashMap<TriggerRef, u32>,
}

/// The fire due at `now_ms`, if any, for a trigger last fired at `last_fired_ms` and
/// last changed at `updated_ms`.
pub fn due(schedule: &Schedule, last_fired_ms: i64, updated_ms: i64, now_ms: i64) -> Option<i64> {
    due_fires(schedule, last_fired_ms.max(updated_ms), now_ms, 1).into_iter().next()
}

impl Scheduler {
    /// A scheduler over the store's triggers, starting executions through `engine`.
    pub fn new(store: Arc<dyn Store>, engine: Handle) -> Self {
        Scheduler {
            store,
            engine,
            defs: HashMap::new(),
            last_fired: HashMap::new(),
            attempts: HashMap::new(),
        }
    }

    /// Ticks every [`TICK`], the first time at once, until dropped.
    pub async fn run(mut self) {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            self.tick(dray_shared::clock::now_ms()).await;
        }
    }

    /// One pass over every trigger at `now_ms`.
    pub async fn tick(&mut self, now_ms: i64) {
        let records = match self.store.list_entities(Some(Kind::Trigger.key()), &ScopeFilter::default()).await
        {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "The cron scheduler could not list triggers; trying again next tick.");
                return;
            }
        };
        let mut present = HashSet::new();
        let mut active = HashMap::new();
        for r in &records {
            let t = defs::trigger_ref(&r.key);
            if let Some(cron) = self.cron_of(&t, r) {
                active.insert(t.clone(), cron);
            }
            present.insert(t);
        }
        // Forget triggers deleted, disabled or no longer scheduled: if they come back,
        // their state is read from the store again.
        self.defs.retain(|t, _| present.contains(t));
        self.last_fired.retain(|t, _| active.contains_key(t));
        self.attempts.retain(|t, _| active.contains_key(t));
        for (t, cron) in active {
            self.consider(&t, &cron, now_ms).await;
        }
    }

    /// The trigger's schedule, when it is an enabled cron trigger; parsed once per version.
    fn cron_of(&mut self, t: &TriggerRef, r: &EntityRecord) -> Option<Arc<CronTrigger>> {
        if let Some(c) = self.defs.get(t)
            && c.version == r.version
        {
            return c.cron.clone();
        }
        let cron = match defs::parse(r) {
            Ok(def) => match &def.source {
                TriggerSource::Scheduled(YamlSchedule::Cron(spec)) if def.enabled => {
                    match Schedule::parse(&spec.expression) {
                        Ok(schedule) => {
                            Some(Arc::new(CronTrigger { schedule, updated_ms: r.updated_ms, def }))
                        }
                        Err(e) => {
                            warn!(trigger = %t, error = %e, "A cron trigger has an invalid schedule; it will not fire.");
                            None
                        }
                    }
                }
                _ => None,
            },
            Err(e) => {
                warn!(trigger = %t, error = %e, "A stored trigger could not be read; it will not fire.");
                None
            }
        };
        self.defs.insert(t.clone(), Cached { version: r.version, cron: cron.clone() });
        cron
    }

    async fn consider(&mut self, t: &TriggerRef, cron: &CronTrigger, now_ms: i64) {
        let last = match self.last_fired.get(t) {
            Some(ms) => *ms,
            None => match self.first_sight(t, now_ms).await {
                Some(ms) => ms,
                None => return,
            },
        };
        self.last_fired.insert(t.clone(), last);
        if let Some(fire_ms) = due(&cron.schedule, last, cron.updated_ms, now_ms) {
            self.fire(t, cron, fire_ms, now_ms).await;
        }
    }

    /// The stored last fire time, or (never fired) `now_ms`, stored so that a restart
    /// does not see the trigger for the first time again.
    async fn first_sight(&self, t: &TriggerRef, now_ms: i64) -> Option<i64> {
        let stored = match self.store.cron_last_fired(t).await {
            Ok(stored) => stored,
            Err(e) => {
                warn!(trigger = %t, error = %e, "Could not read a cron trigger's last fire time.");
                return None;
            }
        };
        if let Some(ms) = stored {
            return Some(ms);
        }
        debug!(trigger = %t, "New cron trigger; it fires from now on.");
        if let Err(e) = self.store.set_cron_last_fired(t, now_ms).await {
            warn!(trigger = %t, error = %e, "Could not store a cron trigger's first sight.");
            return None;
        }
        Some(now_ms)
    }

    async fn fire(&mut self, t: &TriggerRef, cron: &CronTrigger, fire_ms: i64, now_ms: i64) {
        let context = cron_context(cron.schedule.expression(), fire_ms);
        let result = match run_request(&cron.def, t, context, Some(cron_key(t, fire_ms))) {
            Ok(req) => start(&self.store, &self.engine, req).await,
            Err(reason) => Err(StartFailure::Refused(reason)),
        };
        let event = |outcome, reason: String, execution_id| TriggerEvent {
            trigger: t.clone(),
            at_ms: now_ms,
            outcome,
            event: "cron".into(),
            reason,
            delivery_id: None,
            execution_id,
        };
        match result {
            Ok(started) => {
                let outcome = if started.duplicate { Outcome::Duplicate } else { Outcome::Started };
                info!(trigger = %t, fire_ms, execution = %started.id, outcome = %outcome, "Cron trigger fired.");
                let reason =
                    if started.duplicate { "fire already started".to_string() } else { String::new() };
                record(&*self.store, event(outcome, reason, Some(started.id))).await;
            }
            Err(StartFailure::Unavailable(reason)) => {
                let attempts = self.attempts.entry(t.clone()).or_insert(0);
                *attempts += 1;
                if *attempts < MAX_ATTEMPTS {
                    warn!(trigger = %t, fire_ms, attempt = *attempts, error = %reason, "Cron fire could not start; retrying.");
                    return;
                }
                warn!(trigger = %t, fire_ms, error = %reason, "Cron fire could not start; giving up.");
                let reason = format!("gave up after {MAX_ATTEMPTS} attempts: {reason}");
                record(&*self.store, event(Outcome::Failed, reason, None)).await;
            }
            Err(StartFailure::Refused(reason)) => {
                warn!(trigger = %t, fire_ms, error = %reason, "Cron fire refused.");
                record(&*self.store, event(Outcome::Failed, reason, None)).await;
            }
        }
        self.attempts.remove(t);
        self.last_fired.insert(t.clone(), fire_ms);
        if let Err(e) = self.store.set_cron_last_fired(t, fire_ms).await {
            // The execution's idempotency key keeps a repeat after a restart from
            // starting it twice.
            warn!(trigger = %t, fire_ms, error = %e, "Could not store a cron trigger's last fire time.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn every_minute() -> Schedule {
        Schedule::parse("* * * * *").unwrap()
    }

    #[test]
    fn nothing_is_due_before_the_next_fire_time() {
        let t0 = 1_700_000_040_000; // on a minute boundary
        assert_eq!(due(&every_minute(), t0, 0, t0 + MIN - 1), None);
        assert_eq!(due(&every_minute(), t0, 0, t0 + MIN), Some(t0 + MIN));
    }

    #[test]
    fn an_outage_fires_once_for_the_latest_missed_time() {
        let t0 = 1_700_000_040_000;
        assert_eq!(due(&every_minute(), t0, 0, t0 + 90 * MIN + 5_000), Some(t0 + 90 * MIN));
    }

    #[test]
    fn a_change_after_the_last_fire_does_not_backfill() {
        let t0 = 1_700_000_040_000;
        // Last fired an hour ago, re-enabled 10 s ago: nothing until the next minute.
        let now = t0 + 60 * MIN + 30_000;
        assert_eq!(due(&every_minute(), t0, now - 10_000, now), None);
        assert_eq!(due(&every_minute(), t0, now - 10_000, t0 + 61 * MIN), Some(t0 + 61 * MIN));
    }
}
