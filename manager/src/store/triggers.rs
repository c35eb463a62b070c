//! Durable trigger state: the master key webhook secrets are derived from, the
//! event record of every delivery and cron fire, and each cron trigger's last
//! fire time.
//!
//! Deliberately not here: the trigger definitions themselves (they are entities,
//! see [`super::entities`]) and any secret other than the master key.

use async_trait::async_trait;

use super::Result;

/// Which trigger: scope and identifier.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TriggerRef {
    /// Account.
    pub account: String,
    /// Organisation.
    pub org: String,
    /// Project.
    pub project: String,
    /// Trigger identifier.
    pub identifier: String,
}

impl TriggerRef {
    /// A reference.
    pub fn new(account: &str, org: &str, project: &str, identifier: &str) -> Self {
        TriggerRef {
            account: account.into(),
            org: org.into(),
            project: project.into(),
            identifier: identifier.into(),
        }
    }
}

impl std::fmt::Display for TriggerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}/{}", self.account, self.org, self.project, self.identifier)
    }
}

/// What came of one delivery or cron fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// An execution was started.
    Started,
    /// A repeated delivery (same delivery id): the first execution stands.
    Duplicate,
    /// Authenticated, but the event filter or a payload condition did not match.
    Skipped,
    /// Not authenticated, or not a readable delivery.
    Refused,
    /// The execution could not be started (missing inputs, unknown pipeline…).
    Failed,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 5] =
        [Outcome::Started, Outcome::Duplicate, Outcome::Skipped, Outcome::Refused, Outcome::Failed];

    /// The stored name: `started`, `duplicate`, `skipped`, `refused`, `failed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Started => "started",
            Outcome::Duplicate => "duplicate",
            Outcome::Skipped => "skipped",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }

    /// The outcome stored as `name`.
    pub fn parse(name: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == name)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One recorded delivery or cron fire. Never holds a body or a secret.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerEvent {
    /// The trigger.
    pub trigger: TriggerRef,
    /// Unix ms it was received (or fired).
    pub at_ms: i64,
    /// What came of it.
    pub outcome: Outcome,
    /// The webhook event (`Push`, `PullRequest`…), `cron`, or empty when a refused
    /// delivery never got as far as naming one.
    pub event: String,
    /// Why it was skipped, refused or failed; empty when started.
    pub reason: String,
    /// The sender's delivery id, when it sent one.
    pub delivery_id: Option<String>,
    /// The execution started (or found, for a duplicate).
    pub execution_id: Option<String>,
}

/// Storage of trigger state; both stores implement it.
#[async_trait]
pub trait TriggerStore: Send + Sync {
    /// The master key: `candidate` if none is stored yet (it is stored), else the
    /// stored one. Race-safe: when several managers start at once, all of them get
    /// the key the first one stored.
    async fn trigger_master_key(&self, candidate: &[u8], now_ms: i64) -> Result<Vec<u8>>;

    /// Records an event and drops that trigger's older events beyond the newest
    /// `keep` (at least one is always kept).
    async fn append_trigger_event(&self, event: &TriggerEvent, keep: u32) -> Result<()>;

    /// A trigger's events, newest first, at most `limit`.
    async fn list_trigger_events(&self, trigger: &TriggerRef, limit: u32) -> Result<Vec<TriggerEvent>>;

    /// The last fire time stored for a cron trigger.
    async fn cron_last_fired(&self, trigger: &TriggerRef) -> Result<Option<i64>>;

    /// Stores a cron trigger's last fire time. It never moves backwards: a smaller
    /// value than the stored one (a stale writer) leaves the stored one.
    async fn set_cron_last_fired(&self, trigger: &TriggerRef, fired_ms: i64) -> Result<()>;
}

/// Columns of `trigger_events`, in [`event_from_row`] order.
pub(super) const EVENT_COLUMNS: &str =
    "account, org, project, trigger_id, at_ms, outcome, event, reason, delivery_id, execution_id";

fn col<T>(r: std::result::Result<T, sqlx::Error>) -> Result<T> {
    r.map_err(super::common::db_error)
}

/// Decodes a `trigger_events` row (either backend).
pub(super) fn event_from_row<R: super::common::StoreRow>(r: &R) -> Result<TriggerEvent> {
    let outcome = col(r.text("outcome"))?;
    let trigger = TriggerRef {
        account: col(r.text("account"))?,
        org: col(r.text("org"))?,
        project: col(r.text("project"))?,
        identifier: col(r.text("trigger_id"))?,
    };
    Ok(TriggerEvent {
        outcome: Outcome::parse(&outcome).ok_or_else(|| super::Error::Corrupt {
            table: "trigger_events",
            id: trigger.to_string(),
            reason: format!("unknown outcome {outcome:?}"),
        })?,
        trigger,
        at_ms: col(r.int64("at_ms"))?,
        event: col(r.text("event"))?,
        reason: col(r.text("reason"))?,
        delivery_id: col(r.opt_text("delivery_id"))?,
        execution_id: col(r.opt_text("execution_id"))?,
    })
}

/// Appends ` account = … AND org = … AND project = … AND trigger_id = …` for `t`.
pub(super) fn push_trigger<'a, DB: sqlx::Database>(q: &mut sqlx::QueryBuilder<'a, DB>, t: &TriggerRef)
where
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    q.push(" account = ")
        .push_bind(t.account.clone())
        .push(" AND org = ")
        .push_bind(t.org.clone())
        .push(" AND project = ")
        .push_bind(t.project.clone())
        .push(" AND trigger_id = ")
        .push_bind(t.identifier.clone());
}

/// Implements [`TriggerStore`] for a backend. `QueryBuilder` writes each backend's
/// placeholders; `$greatest` is the two-argument maximum (`MAX` in SQLite,
/// `GREATEST` in PostgreSQL).
macro_rules! impl_trigger_store {
    ($store:ty, $db:ty, writer: $writer:ident, reader: $reader:ident, greatest: $greatest:literal) => {
        #[async_trait::async_trait]
        impl $crate::store::triggers::TriggerStore for $store {
            async fn trigger_master_key(&self, candidate: &[u8], now_ms: i64) -> $crate::store::Result<Vec<u8>> {
                use $crate::store::common::db_error;
                // Two statements, no transaction: whichever manager's INSERT won,
                // the SELECT (READ COMMITTED, or SQLite's one writer) sees its row.
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO trigger_master_key (id, master_key, created_ms) VALUES (1, ",
                );
                q.push_bind(candidate.to_vec()).push(", ").push_bind(now_ms).push(") ON CONFLICT (id) DO NOTHING");
                q.build().execute(&self.$writer).await.map_err(db_error)?;
                sqlx::query_scalar("SELECT master_key FROM trigger_master_key WHERE id = 1")
                    .fetch_one(&self.$writer)
                    .await
                    .map_err(db_error)
            }

            async fn append_trigger_event(
                &self,
                e: &$crate::store::triggers::TriggerEvent,
                keep: u32,
            ) -> $crate::store::Result<()> {
                use $crate::store::common::db_error;
                use $crate::store::triggers::push_trigger;
                let t = &e.trigger;
                let mut tx = self.$writer.begin().await.map_err(db_error)?;
                let mut q = sqlx::QueryBuilder::<$db>::new("INSERT INTO trigger_events (");
                q.push($crate::store::triggers::EVENT_COLUMNS).push(") VALUES (");
                let mut v = q.separated(", ");
                v.push_bind(t.account.clone())
                    .push_bind(t.org.clone())
                    .push_bind(t.project.clone())
                    .push_bind(t.identifier.clone())
                    .push_bind(e.at_ms)
                    .push_bind(e.outcome.as_str())
                    .push_bind(e.event.clone())
                    .push_bind(e.reason.clone())
                    .push_bind(e.delivery_id.clone())
                    .push_bind(e.execution_id.clone());
                q.push(")");
                q.build().execute(&mut *tx).await.map_err(db_error)?;
                // The id of the newest event past the ones kept; NULL (nothing
                // deleted) while the trigger has no more than `keep`.
                let mut q = sqlx::QueryBuilder::<$db>::new("DELETE FROM trigger_events WHERE");
                push_trigger(&mut q, t);
                q.push(" AND id <= (SELECT id FROM trigger_events WHERE");
                push_trigger(&mut q, t);
                q.push(" ORDER BY id DESC LIMIT 1 OFFSET ").push_bind(i64::from(keep.max(1))).push(")");
                q.build().execute(&mut *tx).await.map_err(db_error)?;
                tx.commit().await.map_err(db_error)
            }

            async fn list_trigger_events(
                &self,
                t: &$crate::store::triggers::TriggerRef,
                limit: u32,
            ) -> $crate::store::Result<Vec<$crate::store::triggers::TriggerEvent>> {
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT ");
                q.push($crate::store::triggers::EVENT_COLUMNS).push(" FROM trigger_events WHERE");
                $crate::store::triggers::push_trigger(&mut q, t);
                q.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(limit));
                let rows = q.build().fetch_all(&self.$reader).await.map_err($crate::store::common::db_error)?;
                rows.iter().map($crate::store::triggers::event_from_row).collect()
            }

            async fn cron_last_fired(
                &self,
                t: &$crate::store::triggers::TriggerRef,
            ) -> $crate::store::Result<Option<i64>> {
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT last_fired_ms FROM trigger_cron_state WHERE");
                $crate::store::triggers::push_trigger(&mut q, t);
                q.build_query_scalar()
                    .fetch_optional(&self.$reader)
                    .await
                    .map_err($crate::store::common::db_error)
            }

            async fn set_cron_last_fired(
                &self,
                t: &$crate::store::triggers::TriggerRef,
                fired_ms: i64,
            ) -> $crate::store::Result<()> {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO trigger_cron_state (account, org, project, trigger_id, last_fired_ms) VALUES (",
                );
                let mut v = q.separated(", ");
                v.push_bind(t.account.clone())
                    .push_bind(t.org.clone())
                    .push_bind(t.project.clone())
                    .push_bind(t.identifier.clone())
                    .push_bind(fired_ms);
                q.push(concat!(
                    ") ON CONFLICT (account, org, project, trigger_id) DO UPDATE SET last_fired_ms = ",
                    $greatest,
                    "(trigger_cron_state.last_fired_ms, excluded.last_fired_ms)"
                ));
                q.build().execute(&self.$writer).await.map_err($crate::store::common::db_error)?;
                Ok(())
            }
        }
    };
}
pub(super) use impl_trigger_store;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_names_round_trip() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(Outcome::parse("Started"), None);
    }
}
