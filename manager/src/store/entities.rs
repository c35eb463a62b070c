//! Durable entities (services, environments, infrastructures, connectors,
//! pipelines, input sets, triggers): the user's YAML of each document, its
//! normalised JSON, a version, and the references it makes, which keep a
//! referenced entity from being deleted.
//!
//! An apply of many documents is one transaction: all of them or none.

use async_trait::async_trait;
use serde_json::Value as Json;

use super::{AuditRecord, Result};

/// Which entity: scope, kind and identifier.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntityKey {
    /// Account.
    pub account: String,
    /// Organisation.
    pub org: String,
    /// Project.
    pub project: String,
    /// Kind, as its YAML key (`service`, `infrastructureDefinition`, …).
    pub kind: String,
    /// Identifier.
    pub identifier: String,
}

impl EntityKey {
    /// A key.
    pub fn new(account: &str, org: &str, project: &str, kind: &str, identifier: &str) -> Self {
        EntityKey {
            account: account.into(),
            org: org.into(),
            project: project.into(),
            kind: kind.into(),
            identifier: identifier.into(),
        }
    }

    /// The key of `kind`/`identifier` in the same scope as this one.
    pub fn sibling(&self, kind: &str, identifier: &str) -> Self {
        EntityKey { kind: kind.into(), identifier: identifier.into(), ..self.clone() }
    }
}

impl std::fmt::Display for EntityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({}/{}/{})", self.kind, self.identifier, self.account, self.org, self.project)
    }
}

/// A stored entity.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityRecord {
    /// Which entity.
    pub key: EntityKey,
    /// Display name.
    pub name: String,
    /// The YAML text of the document as the user last applied it.
    pub yaml: String,
    /// The document as normalised JSON (`{"pipeline": {...}}`), what the engine reads.
    pub json: String,
    /// 1 on creation, +1 on every change.
    pub version: u64,
    /// Unix ms of creation.
    pub created_ms: i64,
    /// Unix ms of the last change.
    pub updated_ms: i64,
}

impl EntityRecord {
    /// The stored JSON, parsed.
    pub fn json_value(&self) -> Result<Json> {
        serde_json::from_str(&self.json).map_err(|e| super::Error::Corrupt {
            table: "entities",
            id: self.key.to_string(),
            reason: e.to_string(),
        })
    }
}

/// One document to store.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityWrite {
    /// Which entity.
    pub key: EntityKey,
    /// Display name.
    pub name: String,
    /// The document's YAML text.
    pub yaml: String,
    /// Normalised JSON ([`canonical_json`]); equal JSON means unchanged.
    pub json: String,
    /// Entities this one references (same scope): (kind, identifier).
    pub refs: Vec<(String, String)>,
}

/// What an apply did to one entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Did not exist; version 1 now.
    Created,
    /// Content changed; version bumped.
    Updated,
    /// Same content; version kept (the YAML text is refreshed if only it changed).
    Unchanged,
}

impl Action {
    /// `created`, `updated`, `unchanged`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Unchanged => "unchanged",
        }
    }
}

/// Which scopes a listing covers; `None` fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeFilter {
    /// Account.
    pub account: Option<String>,
    /// Organisation.
    pub org: Option<String>,
    /// Project.
    pub project: Option<String>,
}

/// What a delete did.
#[derive(Debug, Clone, PartialEq)]
pub enum DeleteOutcome {
    /// Removed; the last stored row.
    Deleted(Box<EntityRecord>),
    /// There is no such entity.
    NotFound,
    /// Refused: these entities reference it. Nothing was changed.
    Referenced(Vec<EntityKey>),
}

/// Storage of entities; both stores implement it.
#[async_trait]
pub trait EntityStore: Send + Sync {
    /// Writes every document in one transaction and says what happened to each,
    /// in order. Creates (version 1), updates (version + 1) or leaves unchanged
    /// (equal JSON), replaces each entity's references, and audits each change
    /// as `actor` at `now_ms`. A referenced entity that is neither stored nor in
    /// `writes` is an [`super::Error::Conflict`] and nothing is written.
    async fn apply_entities(&self, writes: &[EntityWrite], actor: &str, now_ms: i64) -> Result<Vec<Action>>;

    /// One entity.
    async fn get_entity(&self, key: &EntityKey) -> Result<Option<EntityRecord>>;

    /// Entities of `kind` (every kind when `None`) in the scopes `scope` covers,
    /// ordered by kind, account, org, project, identifier.
    async fn list_entities(&self, kind: Option<&str>, scope: &ScopeFilter) -> Result<Vec<EntityRecord>>;

    /// Deletes an entity unless another references it, auditing it as `actor`.
    async fn delete_entity(&self, key: &EntityKey, actor: &str, now_ms: i64) -> Result<DeleteOutcome>;
}

/// The stored document (`{"<kind>": {...}}`) of one entity, if it exists: what
/// the pipeline engine reads.
pub async fn entity_json(store: &dyn EntityStore, key: &EntityKey) -> Result<Option<Json>> {
    match store.get_entity(key).await? {
        Some(r) => r.json_value().map(Some),
        None => Ok(None),
    }
}

/// JSON text with object keys sorted at every level, so equal documents compare
/// equal however their keys were ordered.
pub fn canonical_json(v: &Json) -> String {
    fn sorted(v: &Json) -> Json {
        match v {
            Json::Object(m) => {
                let mut entries: Vec<(&String, &Json)> = m.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                Json::Object(entries.into_iter().map(|(k, v)| (k.clone(), sorted(v))).collect())
            }
            Json::Array(a) => Json::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    // Without serde_json's preserve_order the map is already sorted; with it,
    // insertion order is what we just sorted.
    sorted(v).to_string()
}

/// The audit entry of one entity change.
pub(crate) fn audit(key: &EntityKey, action: &str, version: u64, actor: &str, now_ms: i64) -> AuditRecord {
    AuditRecord {
        at_ms: now_ms,
        actor: actor.to_string(),
        action: format!("entity.{action}"),
        subject: format!("{}/{}/{}/{}/{}", key.account, key.org, key.project, key.kind, key.identifier),
        detail: format!("version {version}"),
    }
}

/// Columns of `entities`, in [`entity_from_row`] order.
pub(super) const ENTITY_COLUMNS: &str =
    "account, org, project, kind, identifier, name, yaml, json, version, created_ms, updated_ms";

/// Decodes an `entities` row (either backend).
pub(super) fn entity_from_row<R: super::common::StoreRow>(r: &R) -> Result<EntityRecord> {
    let col = |e: sqlx::Error| super::common::db_error(e);
    let version = r.int64("version").map_err(col)?;
    let key = EntityKey {
        account: r.text("account").map_err(col)?,
        org: r.text("org").map_err(col)?,
        project: r.text("project").map_err(col)?,
        kind: r.text("kind").map_err(col)?,
        identifier: r.text("identifier").map_err(col)?,
    };
    Ok(EntityRecord {
        version: u64::try_from(version).map_err(|_| super::Error::Corrupt {
            table: "entities",
            id: key.to_string(),
            reason: format!("negative version {version}"),
        })?,
        key,
        name: r.text("name").map_err(col)?,
        yaml: r.text("yaml").map_err(col)?,
        json: r.text("json").map_err(col)?,
        created_ms: r.int64("created_ms").map_err(col)?,
        updated_ms: r.int64("updated_ms").map_err(col)?,
    })
}

/// Implements [`EntityStore`] for a backend. The SQL is the same for both
/// (`QueryBuilder` writes each backend's placeholders); what differs is how a
/// write transaction begins and the row locks: PostgreSQL locks the row an
/// apply or delete changes (`lock_update`) and every row an apply references
/// (`lock_share`), so a reference and the delete of its target never both
/// commit; SQLite's single writer (`BEGIN IMMEDIATE`) needs no row locks.
macro_rules! impl_entity_store {
    (
        $store:ty, $db:ty,
        begin: |$this:ident| $begin:expr,
        reader: $reader:ident,
        insert_audit: $insert_audit:path,
        lock_update: $lock_update:literal,
        lock_share: $lock_share:literal
    ) => {
        /// `WHERE` on an entity's primary key (or, with `from_`, on the
        /// referring side of `entity_refs`).
        fn push_key<'a>(
            q: &mut sqlx::QueryBuilder<'a, $db>,
            k: &'a $crate::store::entities::EntityKey,
            from: bool,
        ) {
            let (kind, id) = if from { ("from_kind", "from_identifier") } else { ("kind", "identifier") };
            q.push(" WHERE account = ")
                .push_bind(&k.account)
                .push(" AND org = ")
                .push_bind(&k.org)
                .push(" AND project = ")
                .push_bind(&k.project)
                .push(format!(" AND {kind} = "))
                .push_bind(&k.kind)
                .push(format!(" AND {id} = "))
                .push_bind(&k.identifier);
        }

        /// The entity at `key`; `lock` is appended to the SELECT.
        async fn fetch(
            conn: &mut <$db as sqlx::Database>::Connection,
            key: &$crate::store::entities::EntityKey,
            lock: &str,
        ) -> $crate::store::Result<Option<$crate::store::entities::EntityRecord>> {
            let mut q = sqlx::QueryBuilder::<$db>::new("SELECT ");
            q.push($crate::store::entities::ENTITY_COLUMNS).push(" FROM entities");
            push_key(&mut q, key, false);
            q.push(lock);
            let row = q.build().fetch_optional(&mut *conn).await.map_err($crate::store::common::db_error)?;
            row.as_ref().map($crate::store::entities::entity_from_row).transpose()
        }

        /// Drops the references `key` makes.
        async fn delete_refs(
            conn: &mut <$db as sqlx::Database>::Connection,
            key: &$crate::store::entities::EntityKey,
        ) -> $crate::store::Result<()> {
            let mut q = sqlx::QueryBuilder::<$db>::new("DELETE FROM entity_refs");
            push_key(&mut q, key, true);
            q.build().execute(&mut *conn).await.map_err($crate::store::common::db_error)?;
            Ok(())
        }

        /// Writes one document; says what it did and the version it has now.
        async fn write_one(
            conn: &mut <$db as sqlx::Database>::Connection,
            w: &$crate::store::entities::EntityWrite,
            now_ms: i64,
        ) -> $crate::store::Result<($crate::store::entities::Action, u64)> {
            use $crate::store::common::{db_error, db_u64};
            use $crate::store::entities::Action;
            let k = &w.key;
            // Locked so two applies of one entity bump its version one after the other.
            let stored = fetch(conn, k, $lock_update).await?;
            let (action, version) = match &stored {
                None => {
                    let mut q = sqlx::QueryBuilder::<$db>::new("INSERT INTO entities (");
                    q.push($crate::store::entities::ENTITY_COLUMNS).push(") VALUES (");
                    let mut v = q.separated(", ");
                    v.push_bind(&k.account)
                        .push_bind(&k.org)
                        .push_bind(&k.project)
                        .push_bind(&k.kind)
                        .push_bind(&k.identifier)
                        .push_bind(&w.name)
                        .push_bind(&w.yaml)
                        .push_bind(&w.json)
                        .push_bind(1i64)
                        .push_bind(now_ms)
                        .push_bind(now_ms);
                    q.push(")");
                    q.build().execute(&mut *conn).await.map_err(db_error)?;
                    (Action::Created, 1)
                }
                Some(s) if s.json == w.json => {
                    // Same content: only comments or layout changed, which is not a new
                    // version, but `describe` should show what the user applied last.
                    if s.yaml != w.yaml || s.name != w.name {
                        let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE entities SET yaml = ");
                        q.push_bind(&w.yaml).push(", name = ").push_bind(&w.name);
                        push_key(&mut q, k, false);
                        q.build().execute(&mut *conn).await.map_err(db_error)?;
                    }
                    (Action::Unchanged, s.version)
                }
                Some(s) => {
                    let version = s.version + 1;
                    let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE entities SET name = ");
                    q.push_bind(&w.name)
                        .push(", yaml = ")
                        .push_bind(&w.yaml)
                        .push(", json = ")
                        .push_bind(&w.json)
                        .push(", version = ")
                        .push_bind(db_u64(version))
                        .push(", updated_ms = ")
                        .push_bind(now_ms);
                    push_key(&mut q, k, false);
                    q.build().execute(&mut *conn).await.map_err(db_error)?;
                    (Action::Updated, version)
                }
            };
            delete_refs(conn, k).await?;
            for (to_kind, to_id) in &w.refs {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO entity_refs (account, org, project, from_kind, from_identifier, \
                     to_kind, to_identifier) VALUES (",
                );
                let mut v = q.separated(", ");
                v.push_bind(&k.account)
                    .push_bind(&k.org)
                    .push_bind(&k.project)
                    .push_bind(&k.kind)
                    .push_bind(&k.identifier)
                    .push_bind(to_kind)
                    .push_bind(to_id);
                q.push(") ON CONFLICT DO NOTHING");
                q.build().execute(&mut *conn).await.map_err(db_error)?;
            }
            Ok((action, version))
        }

        #[async_trait::async_trait]
        impl $crate::store::entities::EntityStore for $store {
            async fn apply_entities(
                &self,
                writes: &[$crate::store::entities::EntityWrite],
                actor: &str,
                now_ms: i64,
            ) -> $crate::store::Result<Vec<$crate::store::entities::Action>> {
                use $crate::store::common::db_error;
                use $crate::store::entities::{Action, audit};
                if writes.is_empty() {
                    return Ok(Vec::new());
                }
                let $this = self;
                let mut tx = $begin.await.map_err(db_error)?;
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
                // Checked after every write so references between documents of this
                // apply resolve; a target deleted since validation refuses the apply.
                for w in writes {
                    for (kind, id) in &w.refs {
                        let target = w.key.sibling(kind, id);
                        let mut q = sqlx::QueryBuilder::<$db>::new("SELECT 1 FROM entities");
                        push_key(&mut q, &target, false);
                        q.push($lock_share);
                        if q.build().fetch_optional(&mut *tx).await.map_err(db_error)?.is_none() {
                            return Err($crate::store::Error::Conflict {
                                what: format!("{target}, referenced by {}, does not exist", w.key),
                            });
                        }
                    }
                }
                $insert_audit(&mut tx, &audits).await?;
                tx.commit().await.map_err(db_error)?;
                Ok(actions)
            }

            async fn get_entity(
                &self,
                key: &$crate::store::entities::EntityKey,
            ) -> $crate::store::Result<Option<$crate::store::entities::EntityRecord>> {
                let mut conn = self.$reader.acquire().await.map_err($crate::store::common::db_error)?;
                fetch(&mut conn, key, "").await
            }

            async fn list_entities(
                &self,
                kind: Option<&str>,
                scope: &$crate::store::entities::ScopeFilter,
            ) -> $crate::store::Result<Vec<$crate::store::entities::EntityRecord>> {
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT ");
                q.push($crate::store::entities::ENTITY_COLUMNS).push(" FROM entities WHERE 1 = 1");
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
                let rows = q
                    .build()
                    .persistent(false)
                    .fetch_all(&self.$reader)
                    .await
                    .map_err($crate::store::common::db_error)?;
                rows.iter().map($crate::store::entities::entity_from_row).collect()
            }

            async fn delete_entity(
                &self,
                key: &$crate::store::entities::EntityKey,
                actor: &str,
                now_ms: i64,
            ) -> $crate::store::Result<$crate::store::entities::DeleteOutcome> {
                use $crate::store::common::db_error;
                use $crate::store::entities::{DeleteOutcome, audit};
                let $this = self;
                let mut tx = $begin.await.map_err(db_error)?;
                let Some(record) = fetch(&mut tx, key, $lock_update).await? else {
                    return Ok(DeleteOutcome::NotFound);
                };
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT from_kind, from_identifier FROM entity_refs WHERE account = ",
                );
                q.push_bind(&key.account)
                    .push(" AND org = ")
                    .push_bind(&key.org)
                    .push(" AND project = ")
                    .push_bind(&key.project)
                    .push(" AND to_kind = ")
                    .push_bind(&key.kind)
                    .push(" AND to_identifier = ")
                    .push_bind(&key.identifier)
                    .push(" ORDER BY from_kind, from_identifier");
                let referrers: Vec<(String, String)> =
                    q.build_query_as().fetch_all(&mut *tx).await.map_err(db_error)?;
                if !referrers.is_empty() {
                    return Ok(DeleteOutcome::Referenced(
                        referrers.iter().map(|(k, id)| key.sibling(k, id)).collect(),
                    ));
                }
                let mut q = sqlx::QueryBuilder::<$db>::new("DELETE FROM entities");
                push_key(&mut q, key, false);
                q.build().execute(&mut *tx).await.map_err(db_error)?;
                delete_refs(&mut tx, key).await?;
                $insert_audit(&mut tx, &[audit(key, "delete", record.version, actor, now_ms)]).await?;
                tx.commit().await.map_err(db_error)?;
                Ok(DeleteOutcome::Deleted(Box::new(record)))
            }
        }
    };
}
pub(super) use impl_entity_store;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_ignores_key_order() {
        let a: Json =
            serde_json::from_str(r#"{"b": 1, "a": {"d": [1, {"y": 2, "x": 1}], "c": null}}"#).unwrap();
        let b: Json =
            serde_json::from_str(r#"{"a": {"c": null, "d": [1, {"x": 1, "y": 2}]}, "b": 1}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(canonical_json(&a), r#"{"a":{"c":null,"d":[1,{"x":1,"y":2}]},"b":1}"#);
    }
}
