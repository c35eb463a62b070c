//! The entity part of `dray.v1.Api`: apply/validate YAML, get, list and delete
//! entities. `api_svc` delegates here; the model does the checking and the
//! store the all-or-nothing write.

use std::sync::Arc;

use dray_shared::clock::now_ms;
use dray_shared::pb;
use tonic::Status;
use tracing::info;

use super::status::{entity_in_use, invalid};
use crate::model::apply::{self, ApplyError, Mode};
use crate::model::validate::is_identifier;
use crate::model::{Kind, Scope, SourceFile, StepTypes};
use crate::store::Store;
use crate::store::entities::{DeleteOutcome, EntityKey, EntityRecord, ScopeFilter};

/// Who entity changes are audited as (the API has one admin token).
const ACTOR: &str = "admin";

/// Serves the entity RPCs.
pub struct EntitiesSvc {
    store: Arc<dyn Store>,
    step_types: StepTypes,
}

impl EntitiesSvc {
    /// Entities in `store`, steps checked against `step_types`.
    pub fn new(store: Arc<dyn Store>, step_types: StepTypes) -> Self {
        EntitiesSvc { store, step_types }
    }

    /// `ApplyEntities`: problems come back as diagnostics, not as an error status.
    pub async fn apply(&self, req: pb::ApplyEntitiesRequest) -> Result<pb::ApplyEntitiesResponse, Status> {
        let mode = match (req.validate_only, req.dry_run) {
            (true, _) => Mode::ValidateOnly,
            (false, true) => Mode::DryRun,
            (false, false) => Mode::Apply,
        };
        let files: Vec<SourceFile> =
            req.files.into_iter().map(|f| SourceFile { name: f.name, content: f.content }).collect();
        match apply::apply(self.store.as_ref(), &files, mode, &self.step_types, ACTOR, now_ms()).await {
            Ok(outcomes) => {
                if mode == Mode::Apply {
                    for o in outcomes.iter().filter(|o| o.action != "unchanged") {
                        info!(kind = %o.kind, scope = %o.scope, id = %o.identifier, action = o.action, "Entity applied.");
                    }
                }
                Ok(pb::ApplyEntitiesResponse {
                    results: outcomes
                        .into_iter()
                        .map(|o| pb::EntityResult {
                            kind: o.kind.key().into(),
                            scope: Some(scope_pb(&o.scope)),
                            identifier: o.identifier,
                            action: o.action.into(),
                            name: o.name,
                            file: o.file,
                        })
                        .collect(),
                    diagnostics: vec![],
                })
            }
            Err(ApplyError::Invalid(diagnostics)) => Ok(pb::ApplyEntitiesResponse {
                results: vec![],
                diagnostics: diagnostics
                    .into_iter()
                    .map(|d| pb::Diagnostic {
                        file: d.file,
                        line: d.line,
                        column: d.column,
                        field: d.field,
                        message: d.message,
                    })
                    .collect(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// `GetEntity`.
    pub async fn get(&self, req: pb::GetEntityRequest) -> Result<pb::Entity, Status> {
        let key = entity_key(&req.kind, req.scope, &req.identifier)?;
        let record = self.store.get_entity(&key).await?.ok_or_else(|| {
            Status::not_found(format!("{} {:?} not found in {}", key.kind, key.identifier, scope_text(&key)))
        })?;
        Ok(entity_pb(record))
    }

    /// `ListEntities`.
    pub async fn list(&self, req: pb::ListEntitiesRequest) -> Result<pb::ListEntitiesResponse, Status> {
        let kind = if req.kind.is_empty() { None } else { Some(parse_kind(&req.kind)?) };
        let filter = match req.scope {
            None => ScopeFilter::default(),
            Some(s) => {
                let some = |v: String| (!v.is_empty()).then_some(v);
                if s.org.is_empty() && !s.project.is_empty() {
                    return Err(invalid("scope", "a project needs an organisation (ORG/PROJECT)"));
                }
                ScopeFilter {
                    account: Some(crate::model::DEFAULT_ACCOUNT.into()),
                    org: some(s.org),
                    project: some(s.project),
                }
            }
        };
        let records = self.store.list_entities(kind.map(|k| k.key()), &filter).await?;
        Ok(pb::ListEntitiesResponse { entities: records.into_iter().map(entity_pb).collect() })
    }

    /// `DeleteEntity`: refused while another entity references it.
    pub async fn delete(&self, req: pb::DeleteEntityRequest) -> Result<pb::Entity, Status> {
        let key = entity_key(&req.kind, req.scope, &req.identifier)?;
        match self.store.delete_entity(&key, ACTOR, now_ms()).await? {
            DeleteOutcome::Deleted(record) => {
                info!(kind = %key.kind, id = %key.identifier, scope = %scope_text(&key), "Entity deleted.");
                Ok(entity_pb(*record))
            }
            DeleteOutcome::NotFound => Err(Status::not_found(format!(
                "{} {:?} not found in {}",
                key.kind,
                key.identifier,
                scope_text(&key)
            ))),
            DeleteOutcome::Referenced(by) => Err(entity_in_use(&key, &by)),
        }
    }
}

fn parse_kind(kind: &str) -> Result<Kind, Status> {
    Kind::from_key(kind)
        .or_else(|| Kind::parse(kind))
        .ok_or_else(|| invalid("kind", format!("unknown kind {kind:?}; known kinds: {}", Kind::known())))
}

/// The key of one entity; empty org/project mean `default`.
fn entity_key(kind: &str, scope: Option<pb::Scope>, identifier: &str) -> Result<EntityKey, Status> {
    let kind = parse_kind(kind)?;
    let s = scope.unwrap_or_default();
    let scope = Scope::new(&s.org, &s.project);
    for (field, v) in [
        ("scope.org", &scope.org),
        ("scope.project", &scope.project),
        ("identifier", &identifier.to_string()),
    ] {
        if !is_identifier(v) {
            return Err(invalid(field, format!("{v:?} is not a valid identifier")));
        }
    }
    Ok(scope.key(kind, identifier))
}

fn scope_text(key: &EntityKey) -> String {
    format!("{}/{}/{}", key.account, key.org, key.project)
}

fn scope_pb(s: &Scope) -> pb::Scope {
    pb::Scope { account: s.account.clone(), org: s.org.clone(), project: s.project.clone() }
}

fn entity_pb(r: EntityRecord) -> pb::Entity {
    pb::Entity {
        scope: Some(pb::Scope { account: r.key.account, org: r.key.org, project: r.key.project }),
        kind: r.key.kind,
        identifier: r.key.identifier,
        name: r.name,
        yaml: r.yaml,
        json: r.json,
        version: r.version,
        created_ms: r.created_ms,
        updated_ms: r.updated_ms,
    }
}
