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
