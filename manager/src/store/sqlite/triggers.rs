//! [`TriggerStore`] on SQLite.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::SqliteStore;
use crate::store::common::db_error;
use crate::store::triggers::{Outcome, TriggerEvent, TriggerRef, TriggerStore};
use crate::store::{Error, Result};

/// The WHERE clause selecting one trigger's rows; binds account, org, project, id.
const ONE_TRIGGER: &str = "account = ? AND org = ? AND project = ? AND trigger_id = ?";

fn event_from_row(r: &SqliteRow) -> Result<TriggerEvent> {
    let outcome: String = r.try_get("outcome").map_err(db_error)?;
    let trigger = TriggerRef {
        account: r.try_get("account").map_err(db_error)?,
        org: r.try_get("org").map_err(db_error)?,
        project: r.try_get("project").map_err(db_error)?,
        identifier: r.try_get("trigger_id").map_err(db_error)?,
    };
    Ok(TriggerEvent {
        outcome: Outcome::parse(&outcome).ok_or_else(|| Error::Corrupt {
            table: "trigger_events",
            id: trigger.to_string(),
            reason: format!("unknown outcome {outcome:?}"),
        })?,
        trigger,
        at_ms: r.try_get("at_ms").map_err(db_error)?,
        event: r.try_get("event").map_err(db_error)?,
        reason: r.try_get("reason").map_err(db_error)?,
        delivery_id: r.try_get("delivery_id").map_err(db_error)?,
        execution_id: r.try_get("execution_id").map_err(db_error)?,
    })
}

#[async_trait]
impl TriggerStore for SqliteStore {
    async fn trigger_master_key(&self, candidate: &[u8], now_ms: i64) -> Result<Vec<u8>> {
        let mut tx = self.writer.begin().await.map_err(db_error)?;
        sqlx::query(
            "INSERT INTO trigger_master_key (id, master_key, created_ms) VALUES (1, ?, ?) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(candidate)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let key: Vec<u8> = sqlx::query_scalar("SELECT master_key FROM trigger_master_key WHERE id = 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(key)
    }

    async fn append_trigger_event(&self, e: &TriggerEvent, keep: u32) -> Result<()> {
        let t = &e.trigger;
        let mut tx = self.writer.begin().await.map_err(db_error)?;
        sqlx::query(
            "INSERT INTO trigger_events (account, org, project, trigger_id, at_ms, outcome, event, reason, \
             delivery_id, execution_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&t.account)
        .bind(&t.org)
        .bind(&t.project)
        .bind(&t.identifier)
        .bind(e.at_ms)
        .bind(e.outcome.as_str())
        .bind(&e.event)
        .bind(&e.reason)
        .bind(&e.delivery_id)
        .bind(&e.execution_id)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        // The id of the newest event past the ones kept; NULL (nothing deleted)
        // while the trigger has no more than `keep`.
        sqlx::query(&format!(
            "DELETE FROM trigger_events WHERE {ONE_TRIGGER} AND id <= \
             (SELECT id FROM trigger_events WHERE {ONE_TRIGGER} ORDER BY id DESC LIMIT 1 OFFSET ?)"
        ))
        .bind(&t.account)
        .bind(&t.org)
        .bind(&t.project)
        .bind(&t.identifier)
        .bind(&t.account)
        .bind(&t.org)
        .bind(&t.project)
        .bind(&t.identifier)
        .bind(i64::from(keep.max(1)))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn list_trigger_events(&self, t: &TriggerRef, limit: u32) -> Result<Vec<TriggerEvent>> {
        let rows = sqlx::query(&format!(
            "SELECT account, org, project, trigger_id, at_ms, outcome, event, reason, delivery_id, \
             execution_id FROM trigger_events WHERE {ONE_TRIGGER} ORDER BY id DESC LIMIT ?"
        ))
        .bind(&t.account)
        .bind(&t.org)
        .bind(&t.project)
        .bind(&t.identifier)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?;
        rows.iter().map(event_from_row).collect()
    }

    async fn cron_last_fired(&self, t: &TriggerRef) -> Result<Option<i64>> {
        sqlx::query_scalar(&format!("SELECT last_fired_ms FROM trigger_cron_state WHERE {ONE_TRIGGER}"))
            .bind(&t.account)
            .bind(&t.org)
            .bind(&t.project)
            .bind(&t.identifier)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_error)
    }

    async fn set_cron_last_fired(&self, t: &TriggerRef, fired_ms: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO trigger_cron_state (account, org, project, trigger_id, last_fired_ms) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (account, org, project, trigger_id) \
             DO UPDATE SET last_fired_ms = MAX(last_fired_ms, excluded.last_fired_ms)",
        )
        .bind(&t.account)
        .bind(&t.org)
        .bind(&t.project)
        .bind(&t.identifier)
        .bind(fired_ms)
        .execute(&self.writer)
        .await
        .map_err(db_error)?;
        Ok(())
    }
}
