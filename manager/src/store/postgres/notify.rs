//! Wake-ups between manager replicas with PostgreSQL `LISTEN`/`NOTIFY` (see
//! `docs/ha-design.md`): a replica that commits something others must act on
//! (a queued task, a finished task) notifies a channel; the others listen
//! instead of polling tightly. Notifications are hints — delivered only to
//! connected listeners and only after the sender's transaction commits — so
//! every consumer also polls slowly as the fallback.
//!
//! Channels are database-wide, so names get a suffix derived from the store's
//! schema: stores in different schemas of one database never hear each other.

use sqlx::postgres::{PgListener, PgNotification};

use super::PgStore;
use crate::store::Result;
use crate::store::common::db_error;

/// Longest payload PostgreSQL accepts is 8000 bytes; keep well under it.
pub const MAX_PAYLOAD: usize = 4000;

impl PgStore {
    /// The database-wide name of this store's channel `name`.
    pub fn channel(&self, name: &str) -> String {
        format!("dray_{name}{}", self.channel_suffix)
    }

    /// Sends `payload` on channel `name` (delivered when this statement's
    /// implicit transaction commits).
    pub async fn notify(&self, name: &str, payload: &str) -> Result<()> {
        debug_assert!(payload.len() <= MAX_PAYLOAD, "notification payload too long");
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(self.channel(name))
            .bind(payload)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// A listener on channels `names` (its own connection; it reconnects and
    /// re-listens by itself when the connection drops).
    pub async fn listen(&self, names: &[&str]) -> Result<Listener> {
        let mut inner = PgListener::connect_with(&self.pool).await.map_err(db_error)?;
        let channels: Vec<String> = names.iter().map(|n| self.channel(n)).collect();
        inner.listen_all(channels.iter().map(String::as_str)).await.map_err(db_error)?;
        Ok(Listener { inner, suffix: self.channel_suffix.clone() })
    }
}

/// Notifications from [`PgStore::listen`].
pub struct Listener {
    inner: PgListener,
    suffix: String,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").finish_non_exhaustive()
    }
}

impl Listener {
    /// The next notification as `(channel name without prefix and suffix,
    /// payload)`. Waits; cancel-safe.
    pub async fn recv(&mut self) -> Result<(String, String)> {
        let n: PgNotification = self.inner.recv().await.map_err(db_error)?;
        let name = n.channel().strip_prefix("dray_").unwrap_or(n.channel());
        let name = name.strip_suffix(self.suffix.as_str()).unwrap_or(name);
        Ok((name.to_string(), n.payload().to_string()))
    }
}
