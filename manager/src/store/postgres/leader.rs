//! Leader election with a PostgreSQL session-level advisory lock: the replica
//! whose connection holds the lock leads. The lock lives exactly as long as
//! that connection, so a leader killed with `kill -9` loses it as soon as
//! PostgreSQL sees the socket close, and a follower trying once a second takes
//! over. The key is derived from the channel suffix, so stores in different
//! schemas elect separately.

use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use super::PgStore;
use crate::store::Result;
use crate::store::common::db_error;

/// A connection that tries for, and then holds, the leader lock.
#[derive(Debug)]
pub struct Candidate {
    conn: PgConnection,
    key: String,
    leading: bool,
}

impl PgStore {
    /// A dedicated connection (outside the pool) for the leader lock.
    pub async fn candidate(&self) -> Result<Candidate> {
        let conn = self.pool.acquire().await.map_err(db_error)?.detach();
        Ok(Candidate { conn, key: self.channel("leader"), leading: false })
    }
}

impl Candidate {
    /// Tries to take the lock without waiting; true once this connection holds it.
    pub async fn try_lead(&mut self) -> Result<bool> {
        if !self.leading {
            self.leading = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(&self.key)
                .fetch_one(&mut self.conn)
                .await
                .map_err(db_error)?;
        }
        Ok(self.leading)
    }

    /// Fails when the connection (and with it the lock) is gone.
    pub async fn check(&mut self) -> Result<()> {
        self.conn.ping().await.map_err(db_error)
    }
}
