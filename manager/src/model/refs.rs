//! References between entities: a stage's service, environment and
//! infrastructures; an infrastructure's environment and connector; an
//! environment's service overrides; the pipeline and input sets of input sets,
//! overlays and triggers. All resolve in the referrer's own scope, against the
//! store plus the documents of the same apply ([`World`]).
//!
//! A reference whose value is an expression (`<+input>`, `<+pipeline.variables.x>`)
//! is not checked here: it only has a value at run time.

use std::collections::HashSet;

use serde_json::Value as Json;

use super::entities::{Entity, Kind};
use super::inputs;
use super::load::{Diagnostic, Document};
use super::validate::is_dynamic;
use super::yaml::index_path;

/// What a reference points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// An entity of this kind.
    Kind(Kind),
    /// An input set or an overlay input set (they share a namespace).
    InputSetOrOverlay,
}

/// One static reference a document makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Field path of the referencing value.
    pub path: String,
    /// What it names.
    pub target: Target,
    /// The identifier named.
    pub identifier: String,
    /// For infrastructures: the environment it must belong to, when known.
    pub environment: Option<String>,
    /// For input sets: the pipeline it must be for.
    pub pipeline: Option<String>,
}

/// The entities of one scope that reference checks can see.
pub trait World {
    /// The inner JSON (`{identifier, …}`) of `kind` `identifier`, if it exists.
    fn get(&self, kind: Kind, identifier: &str) -> Option<&Json>;
}

fn reference(path: String, target: Target, id: &str) -> Option<Reference> {
    (!is_dynamic(id)).then(|| Reference {
        path,
        target,
        identifier: id.to_string(),
        environment: None,
        pipeline: None,
    })
}

/// The references `entity` makes whose values are plain identifiers.
pub fn references(entity: &Entity) -> Vec<Reference> {
    let mut out = Vec::new();
    match entity {
        Entity::Service(_) | Entity::Connector(_) => {}
        Entity::Environment(e) => {
            for (i, o) in e.overrides.iter().flat_map(|o| o.services.iter()).enumerate() {
                out.extend(reference(
                    format!("environment.overrides.services[{i}].serviceRef"),
                    Target::Kind(Kind::Service),
                    &o.service_ref,
                ));
            }
        }
        Entity::InfrastructureDefinition(i) => {
            out.extend(reference(
                "infrastructureDefinition.environmentRef".into(),
                Target::Kind(Kind::Environment),
                &i.environment_ref,
            ));
            if let Some(c) = i.connector_ref() {
                out.extend(reference(
                    "infrastructureDefinition.spec.connectorRef".into(),
                    Target::Kind(Kind::Connector),
                    c,
                ));
            }
        }
        Entity::Pipeline(p) => {
            let mut stages = Vec::new();
            for (i, item) in p.stages.iter().enumerate() {
                match item {
                    super::pipeline::StageItem::Stage(s) => {
                        stages.push((format!("pipeline.stages[{i}].stage"), &**s))
                    }
                    super::pipeline::StageItem::Parallel(ps) => {
                        for (j, s) in ps.iter().enumerate() {
                            stages.push((format!("pipeline.stages[{i}].parallel[{j}].stage"), &s.stage));
                        }
                    }
                }
            }
            for (path, s) in stages {
                if let Some(svc) = &s.spec.service {
                    out.extend(reference(
                        format!("{path}.spec.service.serviceRef"),
                        Target::Kind(Kind::Service),
                        &svc.service_ref,
                    ));
                }
                if let Some(env) = &s.spec.environment {
                    out.extend(reference(
                        format!("{path}.spec.environment.environmentRef"),
                        Target::Kind(Kind::Environment),
                        &env.environment_ref,
                    ));
                    let environment =
                        (!is_dynamic(&env.environment_ref)).then(|| env.environment_ref.clone());
                    for (j, infra) in env.infrastructure_definitions.iter().enumerate() {
                        out.extend(
                            reference(
                                format!("{path}.spec.environment.infrastructureDefinitions[{j}].identifier"),
                                Target::Kind(Kind::InfrastructureDefinition),
                                &infra.identifier,
                            )
                            .map(|r| Reference { environment: environment.clone(), ..r }),
                        );
                    }
                }
            }
        }
        Entity::InputSet(i) => {
            if let Some(p) = i.pipeline_identifier() {
                out.extend(reference("inputSet.pipeline.identifier".into(), Target::Kind(Kind::Pipeline), p));
            }
        }
        Entity::OverlayInputSet(o) => {
            out.extend(reference(
                "overlayInputSet.pipelineIdentifier".into(),
                Target::Kind(Kind::Pipeline),
                &o.pipeline_identifier,
            ));
            for (i, r) in o.input_set_references.iter().enumerate() {
                out.extend(
                    reference(
                        index_path("overlayInputSet.inputSetReferences", i),
                        Target::InputSetOrOverlay,
                        r,
                    )
                    .map(|r| Reference { pipeline: Some(o.pipeline_identifier.clone()), ..r }),
                );
            }
        }
        Entity::Trigger(t) => {
            out.extend(reference(
                "trigger.pipelineIdentifier".into(),
                Target::Kind(Kind::Pipeline),
                &t.pipeline_identifier,
            ));
            for (i, r) in t.input_set_refs.iter().enumerate() {
                out.extend(
                    reference(index_path("trigger.inputSetRefs", i), Target::InputSetOrOverlay, r)
                        .map(|r| Reference { pipeline: Some(t.pipeline_identifier.clone()), ..r }),
                );
            }
        }
    }
    out
}

/// The entities checking `doc` may look at: what it references, and the
/// identifier it would clash with in the shared input-set namespace.
pub fn wanted(doc: &Document) -> Vec<(Kind, String)> {
    let mut out = Vec::new();
    for r in references(&doc.entity) {
        match r.target {
            Target::Kind(k) => out.push((k, r.identifier)),
            Target::InputSetOrOverlay => {
                out.push((Kind::InputSet, r.identifier.clone()));
                out.push((Kind::OverlayInputSet, r.identifier));
            }
        }
    }
    match doc.kind {
        Kind::InputSet => out.push((Kind::OverlayInputSet, doc.identifier().to_string())),
        Kind::OverlayInputSet => out.push((Kind::InputSet, doc.identifier().to_string())),
        _ => {}
    }
    out
}

/// `inputSetReferences` of a stored overlay (to follow overlays transitively).
pub fn overlay_references(inner: &Json) -> Vec<String> {
    inner
        .get("inputSetReferences")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// The pipeline an input set or overlay (inner JSON) is for.
fn pipeline_of(kind: Kind, inner: &Json) -> Option<&str> {
    match kind {
        Kind::InputSet => inner.pointer("/pipeline/identifier"),
        _ => inner.get("pipelineIdentifier"),
    }
    .and_then(Json::as_str)
}

/// Checks `doc`'s references against `world` (which includes `doc` itself).
/// Returns the problems and the references that resolved, as (kind, identifier),
/// which the store keeps so a referenced entity cannot be deleted.
pub fn check(doc: &Document, world: &dyn World) -> (Vec<Diagnostic>, Vec<(Kind, String)>) {
    let mut problems = Vec::new();
    let mut resolved = Vec::new();
    let scope = &doc.scope;
    for r in references(&doc.entity) {
        let id = r.identifier.as_str();
        match r.target {
            Target::Kind(kind) => match world.get(kind, id) {
                None => {
                    problems.push(doc.diagnostic(&r.path, format!("{kind} {id:?} does not exist in {scope}")))
                }
                Some(target) => {
                    if let Some(env) = &r.environment {
                        let belongs = target.get("environmentRef").and_then(Json::as_str).unwrap_or_default();
                        if belongs != env && !is_dynamic(belongs) {
                            problems.push(doc.diagnostic(
                                &r.path,
                                format!("infrastructure definition {id:?} belongs to environment {belongs:?}, not {env:?}"),
                            ));
                            continue;
                        }
                    }
                    resolved.push((kind, id.to_string()));
                }
            },
            Target::InputSetOrOverlay => {
                let found = [Kind::InputSet, Kind::OverlayInputSet]
                    .into_iter()
                    .find_map(|k| world.get(k, id).map(|j| (k, j)));
                match found {
                    None => problems
                        .push(doc.diagnostic(&r.path, format!("input set {id:?} does not exist in {scope}"))),
                    Some((kind, target)) => {
                        let for_pipeline = pipeline_of(kind, target).unwrap_or_default();
                        match &r.pipeline {
                            Some(p) if p != for_pipeline => problems.push(doc.diagnostic(
                                &r.path,
                                format!("{kind} {id:?} is for pipeline {for_pipeline:?}, not {p:?}"),
                            )),
                            _ => resolved.push((kind, id.to_string())),
                        }
                    }
                }
            }
        }
    }
    let id = doc.identifier();
    let clash = match doc.kind {
        Kind::InputSet => Some(Kind::OverlayInputSet),
        Kind::OverlayInputSet => Some(Kind::InputSet),
        _ => None,
    };
    if let Some(other) = clash
        && world.get(other, id).is_some()
    {
        problems.push(doc.diagnostic(
            &format!("{}.identifier", doc.kind),
            format!("an {other} named {id:?} exists in {scope}: input sets and overlays share identifiers"),
        ));
    }
    if doc.kind == Kind::OverlayInputSet
        && let Some(cycle) = overlay_cycle(id, world)
    {
        problems.push(doc.diagnostic(
            "overlayInputSet.inputSetReferences",
            format!("overlay input sets form a cycle: {}", cycle.join(" → ")),
        ));
    }
    problems.extend(input_keys(doc, world));
    (problems, resolved)
}

/// A cycle of overlays through `start`, as identifiers from `start` back to it.
fn overlay_cycle(start: &str, world: &dyn World) -> Option<Vec<String>> {
    fn dfs(
        at: &str,
        start: &str,
        world: &dyn World,
        path: &mut Vec<String>,
        seen: &mut HashSet<String>,
    ) -> bool {
        let Some(overlay) = world.get(Kind::OverlayInputSet, at) else { return false };
        for next in overlay_references(overlay) {
            if next == start {
                path.push(next);
                return true;
            }
            if world.get(Kind::InputSet, &next).is_none() && seen.insert(next.clone()) {
                path.push(next.clone());
                if dfs(&next, start, world, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    dfs(start, start, world, &mut path, &mut HashSet::new()).then_some(path)
}

/// An input set's values and a trigger's `inputs` must each name a runtime
/// input of their pipeline.
fn input_keys(doc: &Document, world: &dyn World) -> Vec<Diagnostic> {
    let (pipeline_id, supplied): (&str, Vec<(String, String)>) = match &doc.entity {
        Entity::InputSet(i) => {
            let Some(p) = i.pipeline_identifier() else { return vec![] };
            let values = inputs::flatten_located(&Json::Object(i.pipeline.clone()));
            (
                p,
                values
                    .into_iter()
                    .map(|(key, yaml_path, _)| (key, format!("inputSet.pipeline{yaml_path}")))
                    .collect(),
            )
        }
        Entity::Trigger(t) => (
            &t.pipeline_identifier,
            t.inputs.keys().map(|k| (k.clone(), format!("trigger.inputs.{k}"))).collect(),
        ),
        _ => return vec![],
    };
    let Some(pipeline) = world.get(Kind::Pipeline, pipeline_id) else { return vec![] };
    let Ok(fields) = inputs::runtime_inputs(pipeline) else { return vec![] };
    let known: HashSet<String> = fields.into_iter().map(|f| f.path).collect();
    supplied
        .into_iter()
        .filter(|(key, _)| !known.contains(&inputs::canonical_key(key)))
        .map(|(key, path)| {
            doc.diagnostic(&path, format!("not a runtime input of pipeline {pipeline_id}: {key}"))
        })
        .collect()
}
