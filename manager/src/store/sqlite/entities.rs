//! [`EntityStore`] on SQLite.

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{SqliteStore, insert_audit};
use crate::store::common::{db_error, db_u64};
use crate::store::entities::{
    Action, DeleteOutcome, EntityKey, EntityRecord, EntityStore, EntityWrite, ScopeFilter, audit,
};
use crate::store::{Error, Result};

const COLUMNS: &str =
    "account, org, project, kind, identifier, name, yaml, json, version, created_ms, updated_ms";
const KEY: &str = "account = ? AND org = ? AND project = ? AND kind = ? AND identifier = ?";

fn from_row(r: &SqliteRow) -> Result<EntityRecord> {
    let version: i64 = r.try_get("version").map_err(db_error)?;
    let key = EntityKey {
        account: r.try_get("account").map_err(db_error)?,
        org: r.try_get("org").map_err(db_error)?,
        project: r.try_get("project").map_err(db_error)?,
        kind: r.try_get("kind").map_err(db_error)?,
        identifier: r.try_get("identifier").map_err(db_error)?,
    };
    Ok(EntityRecord {
        version: u64::try_from(version).map_err(|_| Error::Corrupt {
            table: "entities",
            id: key.to_string(),
            reason: format!("negative version {version}"),
        })?,
        key,
        name: r.try_get("name").map_err(db_error)?,
        yaml: r.try_get("yaml").map_err(db_error)?,
        json: r.try_get("json").map_err(db_error)?,
        created_ms: r.try_get("created_ms").map_err(db_error)?,
        updated_ms: r.try_get("updated_ms").map_err(db_error)?,
    })
}

async fn fetch(conn: &mut SqliteConnection, key: &EntityKey) -> Result<Option<EntityRecord>> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM entities WHERE {KEY}"))
        .bind(&key.account)
        .bind(&key.org)
        .bind(&key.project)
        .bind(&key.kind)
        .bind(&key.identifier)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
    row.as_ref().map(from_row).transpose()
}

/// Writes one document; says what it did and the version it has now.
async fn write_one(conn: &mut SqliteConnection, w: &EntityWrite, now_ms: i64) -> Result<(Action, u64)> {
    let k = &w.key;
    let stored = fetch(conn, k).await?;
    let (action, version) = match &stored {
        None => {
            sqlx::query(&format!(
                "INSERT INTO entities ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)"
            ))
            .bind(&k.account)
            .bind(&k.org)
            .bind(&k.project)
            .bind(&k.kind)
            .bind(&k.identifier)
            .bind(&w.name)
            .bind(&w.yaml)
            .bind(&w.json)
            .bind(now_ms)
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
            (Action::Created, 1)
        }
        Some(s) if s.json == w.json => {
            // Same content: only comments or layout changed, which is not a new version,
            // but `describe` should show what the user applied last.
            if s.yaml != w.yaml || s.name != w.name {
                sqlx::query(&format!("UPDATE entities SET yaml = ?, name = ? WHERE {KEY}"))
                    .bind(&w.yaml)
                    .bind(&w.name)
                    .bind(&k.account)
                    .bind(&k.org)
                    .bind(&k.project)
                    .bind(&k.kind)
                    .bind(&k.identifier)
                    .execute(&mut *conn)
                    .await
                    .map_err(db_error)?;
            }
            (Action::Unchanged, s.version)
        }
        Some(s) => {
            let version = s.version + 1;
            sqlx::query(&format!(
                "UPDATE entities SET name = ?, yaml = ?, json = ?, version = ?, updated_ms = ? WHERE {KEY}"
            ))
            .bind(&w.name)
            .bind(&w.yaml)
            .bind(&w.json)
            .bind(db_u64(version))
            .bind(now_ms)
            .bind(&k.account)
            .bind(&k.org)
            .bind(&k.project)
            .bind(&k.kind)
            .bind(&k.identifier)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
            (Action::Updated, version)
        }
    };
    sqlx::query(
        "DELETE FROM entity_refs WHERE account = ? AND org = ? AND project = ? \
         AND from_kind = ? AND from_identifier = ?",
    )
    .bind(&k.account)
    .bind(&k.org)
    .bind(&k.project)
    .bind(&k.kind)
    .bind(&k.identifier)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    for (to_kind, to_id) in &w.refs {
        sqlx::query(
            "INSERT OR IGNORE INTO entity_refs (account, org, project, from_kind, from_identifier, \
             to_kind, to_identifier) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&k.account)
        .bind(&k.org)
        .bind(&k.project)
        .bind(&k.kind)
        .bind(&k.identifier)
        .bind(to_kind)
        .bind(to_id)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    }
    Ok((action, version))
}

async fn exists(conn: &mut SqliteConnection, key: &EntityKey) -> Result<bool> {
    let row = sqlx::query(&format!("SELECT 1 FROM entities WHERE {KEY}"))
        .bind(&key.account)
        .bind(&key.org)
        .bind(&key.project)
        .bind(&key.kind)
        .bind(&key.identifier)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
    Ok(row.is_some())
}

#[async_trait]
impl EntityStore for SqliteStore {
    async fn apply_entities(&self, writes: &[EntityWrite], actor: &str, now_ms: i64) -> Result<Vec<Action>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
        let mut actions = Vec::with_capacity(writes.len());
        let mut audits = Vec::new();
        for w in writes {
            let (action, version) = write_one(&mut tx, w, now_ms).await?;
            if action != Action::Unchanged {
                audits.push(audit(
                    &w.key,
                    if action == Action::Created { "create" } else { "update" },
                    version,
                    actor,
                    now_ms,
                ));
            }
            actions.push(action);
        }
        // Checked after every write so references between documents of this apply
        // resolve; a target deleted since validation refuses the whole apply.
        for w in writes {
            for (kind, id) in &w.refs {
                let target = w.key.sibling(kind, id);
                if !exists(&mut tx, &target).await? {
                    return Err(Error::Conflict {
                        what: format!("{target}, referenced by {}, does not exist", w.key),
                    });
                }
            }
        }
        insert_audit(&mut tx, &audits).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(actions)
    }

    async fn get_entity(&self, key: &EntityKey) -> Result<Option<EntityRecord>> {
        let mut conn = self.reader.acquire().await.map_err(db_error)?;
        fetch(&mut conn, key).await
    }

    async fn list_entities(&self, kind: Option<&str>, scope: &ScopeFilter) -> Result<Vec<EntityRecord>> {
        let mut q = QueryBuilder::<Sqlite>::new(format!("SELECT {COLUMNS} FROM entities WHERE 1 = 1"));
        for (column, value) in [
            ("kind", kind),
            ("account", scope.account.as_deref()),
            ("org", scope.org.as_deref()),
            ("project", scope.project.as_deref()),
        ] {
            if let Some(v) = value {
                q.push(format!(" AND {column} = ")).push_bind(v.to_string());
            }
        }
        q.push(" ORDER BY kind, account, org, project, identifier");
        let rows = q.build().persistent(false).fetch_all(&self.reader).await.map_err(db_error)?;
        rows.iter().map(from_row).collect()
    }

    async fn delete_entity(&self, key: &EntityKey, actor: &str, now_ms: i64) -> Result<DeleteOutcome> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
        let Some(record) = fetch(&mut tx, key).await? else { return Ok(DeleteOutcome::NotFound) };
        let referrers: Vec<(String, String)> = sqlx::query_as(
            "SELECT from_kind, from_identifier FROM entity_refs WHERE account = ? AND org = ? AND project = ? \
             AND to_kind = ? AND to_identifier = ? ORDER BY from_kind, from_identifier",
        )
        .bind(&key.account)
        .bind(&key.org)
        .bind(&key.project)
        .bind(&key.kind)
        .bind(&key.identifier)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        if !referrers.is_empty() {
            return Ok(DeleteOutcome::Referenced(
                referrers.iter().map(|(k, id)| key.sibling(k, id)).collect(),
            ));
        }
        sqlx::query(&format!("DELETE FROM entities WHERE {KEY}"))
            .bind(&key.account)
            .bind(&key.org)
            .bind(&key.project)
            .bind(&key.kind)
            .bind(&key.identifier)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query(
            "DELETE FROM entity_refs WHERE account = ? AND org = ? AND project = ? \
             AND from_kind = ? AND from_identifier = ?",
        )
        .bind(&key.account)
        .bind(&key.org)
        .bind(&key.project)
        .bind(&key.kind)
        .bind(&key.identifier)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        insert_audit(&mut tx, &[audit(key, "delete", record.version, actor, now_ms)]).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(DeleteOutcome::Deleted(Box::new(record)))
    }
}
