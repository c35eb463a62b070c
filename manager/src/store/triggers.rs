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
