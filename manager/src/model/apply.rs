//! `dray apply` / `dray validate` on the manager: load every document, check
//! references against the store plus the documents of the same apply, and
//! write them all in one transaction — or nothing, with every problem located.

use std::collections::{HashMap, HashSet};

use serde_json::Value as Json;

use super::Scope;
use super::entities::Kind;
use super::load::{Diagnostic, Document, SourceFile, load};
use super::refs::{self, World};
use super::steps::StepTypes;
use crate::store::entities::{Action, EntityStore, EntityWrite, canonical_json};

/// What to do with valid documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Write them.
    Apply,
    /// Say what would be written.
    DryRun,
    /// Only check them (references against the store included); says what an apply would do.
    ValidateOnly,
}

/// What happened (or would happen) to one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Kind.
    pub kind: Kind,
    /// Scope.
    pub scope: Scope,
    /// Identifier.
    pub identifier: String,
    /// Display name.
    pub name: String,
    /// File it came from.
    pub file: String,
    /// `created`, `updated`, `unchanged`, `would-create`, `would-update`.
    pub action: &'static str,
}

/// Why nothing was applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The documents have problems (all of them listed).
    #[error("{} problem(s) in the documents", .0.len())]
    Invalid(Vec<Diagnostic>),
    /// The store failed, or changed under the apply (a referenced entity was deleted).
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

/// The entities checks can see: the store's, overridden by this apply's documents.
struct Snapshot {
    entities: HashMap<(Scope, Kind, String), Json>,
}

struct Scoped<'a> {
    snapshot: &'a Snapshot,
    scope: &'a Scope,
}

impl World for Scoped<'_> {
    fn get(&self, kind: Kind, identifier: &str) -> Option<&Json> {
        self.snapshot.entities.get(&(self.scope.clone(), kind, identifier.to_string()))
    }
}

/// Reads what the documents reference from the store (following overlays
/// through other overlays) into `snapshot`.
async fn fetch_referenced(
    store: &dyn EntityStore,
    docs: &[Document],
    snapshot: &mut Snapshot,
) -> crate::store::Result<()> {
    let mut queue: Vec<(Scope, Kind, String)> = Vec::new();
    for doc in docs {
        queue.extend(refs::wanted(doc).into_iter().map(|(k, id)| (doc.scope.clone(), k, id)));
        if doc.kind == Kind::OverlayInputSet {
            for r in refs::overlay_references(doc.inner_json()) {
                queue.push((doc.scope.clone(), Kind::OverlayInputSet, r.clone()));
                queue.push((doc.scope.clone(), Kind::InputSet, r));
            }
        }
    }
    let mut looked: HashSet<(Scope, Kind, String)> = snapshot.entities.keys().cloned().collect();
    while let Some(key) = queue.pop() {
        if !looked.insert(key.clone()) {
            continue;
        }
        let (scope, kind, id) = &key;
        let Some(record) = store.get_entity(&scope.key(*kind, id)).await? else { continue };
        let doc = record.json_value()?;
        let inner = doc.get(kind.key()).cloned().unwrap_or(doc);
        if *kind == Kind::OverlayInputSet {
            for r in refs::overlay_references(&inner) {
                queue.push((scope.clone(), Kind::OverlayInputSet, r.clone()));
                queue.push((scope.clone(), Kind::InputSet, r));
            }
        }
        snapshot.entities.insert(key, inner);
    }
    Ok(())
}

/// Loads, checks and (in [`Mode::Apply`]) writes `files` as `actor` at `now_ms`.
pub async fn apply(
    store: &dyn EntityStore,
    files: &[SourceFile],
    mode: Mode,
    step_types: &StepTypes,
    actor: &str,
    now_ms: i64,
) -> Result<Vec<Outcome>, ApplyError> {
    let loaded = load(files, step_types);
    let mut diagnostics = loaded.diagnostics;
    let docs = loaded.documents;

    // Rejected documents stand in for themselves, so what references them is not
    // also reported as referencing something missing.
    let mut snapshot = Snapshot {
        entities: loaded
            .rejected
            .into_iter()
            .map(|(scope, kind, id, json)| ((scope, kind, id), json))
            .chain(
                docs.iter()
                    .map(|d| ((d.scope.clone(), d.kind, d.identifier().to_string()), d.inner_json().clone())),
            )
            .collect(),
    };
    fetch_referenced(store, &docs, &mut snapshot).await?;

    let mut writes = Vec::with_capacity(docs.len());
    for doc in &docs {
        let (mut problems, resolved) = refs::check(doc, &Scoped { snapshot: &snapshot, scope: &doc.scope });
        diagnostics.append(&mut problems);
        let mut refs: Vec<(String, String)> =
            resolved.into_iter().map(|(k, id)| (k.key().to_string(), id)).collect();
        refs.sort();
        refs.dedup();
        writes.push(EntityWrite {
            key: doc.scope.key(doc.kind, doc.identifier()),
            name: doc.name().to_string(),
            yaml: doc.yaml.clone(),
            json: canonical_json(&doc.json),
            refs,
        });
    }
    if !diagnostics.is_empty() {
        let order: HashMap<&str, usize> =
            files.iter().enumerate().map(|(i, f)| (f.name.as_str(), i)).collect();
        diagnostics
            .sort_by_key(|d| (order.get(d.file.as_str()).copied().unwrap_or(usize::MAX), d.line, d.column));
        diagnostics.dedup();
        return Err(ApplyError::Invalid(diagnostics));
    }

    let actions: Vec<&'static str> = match mode {
        Mode::Apply => {
            store.apply_entities(&writes, actor, now_ms).await?.into_iter().map(|a| a.as_str()).collect()
        }
        Mode::DryRun | Mode::ValidateOnly => {
            let mut out = Vec::with_capacity(writes.len());
            for w in &writes {
                out.push(match store.get_entity(&w.key).await? {
                    None => "would-create",
                    Some(r) if r.json == w.json => Action::Unchanged.as_str(),
                    Some(_) => "would-update",
                });
            }
            out
        }
    };
    Ok(docs
        .iter()
        .zip(actions)
        .map(|(d, action)| Outcome {
            kind: d.kind,
            scope: d.scope.clone(),
            identifier: d.identifier().to_string(),
            name: d.name().to_string(),
            file: d.file.clone(),
            action,
        })
        .collect())
}
