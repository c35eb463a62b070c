//! Turns a run request into a [`NewExecution`]: loads the pipeline, expands
//! input sets (overlays in order), applies `--set` values last, refuses
//! missing or unknown inputs before anything runs, fetches the entities the
//! Deployment stages name and compiles the plan.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use serde_json::Value as Json;

use super::compile::{self, Entities, inner};
use super::engine::NewExecution;
use super::machine::Meta;

/// Reads stored entity documents (JSON) of one scope.
#[async_trait]
pub trait EntitySource: Send + Sync {
    /// The stored JSON of `kind` (`pipeline`, `inputSet`, `overlayInputSet`,
    /// `service`, `environment`, `infrastructureDefinition`, `connector`) `id`.
    async fn entity(&self, kind: &str, id: &str) -> Result<Option<Json>, String>;
}

/// Why a run was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// The pipeline (or an input set) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Inputs or the pipeline are not runnable as given.
    #[error("{0}")]
    Invalid(String),
    /// Storage failed.
    #[error("store: {0}")]
    Store(String),
}

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// Account, org, project.
    pub account: String,
    /// Organisation.
    pub org: String,
    /// Project.
    pub project: String,
    /// Pipeline identifier.
    pub pipeline: String,
    /// Input set / overlay identifiers, in order.
    pub input_sets: Vec<String>,
    /// Values applied last (`--set`).
    pub set: BTreeMap<String, String>,
    /// Extra layer applied between input sets and `set` (trigger inputs).
    pub trigger_inputs: BTreeMap<String, String>,
    /// `trigger.*` object.
    pub trigger: Json,
    /// Who starts it.
    pub triggered_by: String,
    /// Makes repeated starts no-ops.
    pub idempotency_key: Option<String>,
}

/// Prepares an execution.
pub async fn prepare(src: &dyn EntitySource, req: RunRequest) -> Result<NewExecution, StartError> {
    let doc = src
        .entity("pipeline", &req.pipeline)
        .await
        .map_err(StartError::Store)?
        .ok_or_else(|| StartError::NotFound(format!("pipeline {:?} does not exist", req.pipeline)))?;
    let pipeline_doc = inner(&doc, "pipeline").clone();

    let mut layers: Vec<BTreeMap<String, String>> = vec![];
    for id in &req.input_sets {
        expand_input_set(src, &req.pipeline, id, &mut layers, &mut vec![]).await?;
    }
    if !req.trigger_inputs.is_empty() {
        // Rendered from a payload: untrusted text, inert as expressions.
        layers.push(req.trigger_inputs.iter().map(|(k, v)| (k.clone(), v.replace("<+", "< +"))).collect());
    }
    if !req.set.is_empty() {
        layers.push(req.set.clone());
    }
    let resolved = crate::model::resolve_inputs(&json_wrap(&pipeline_doc), &layers)
        .map_err(|e| StartError::Invalid(e.to_string()))?;
    let resolved = inner(&resolved, "pipeline").clone();

    let mut fetched: HashMap<(String, String), Json> = HashMap::new();
    let mut queue = compile::references(&resolved);
    while let Some((kind, id)) = queue.pop() {
        if fetched.contains_key(&(kind.to_string(), id.clone())) || id.contains("<+") {
            continue;
        }
        if let Some(d) = src.entity(kind, &id).await.map_err(StartError::Store)? {
            let d = inner(&d, kind).clone();
            if kind == "infrastructureDefinition"
                && let Some(c) = d.pointer("/spec/connectorRef").and_then(Json::as_str)
            {
                queue.push(("connector", c.to_string()));
            }
            fetched.insert((kind.to_string(), id), d);
        }
    }
    let plan =
        compile::compile(&resolved, &Fetched(fetched)).map_err(|e| StartError::Invalid(e.to_string()))?;
    let mut inputs = BTreeMap::new();
    for l in &layers {
        inputs.extend(l.clone());
    }
    Ok(NewExecution {
        meta: Meta {
            id: String::new(),
            account: req.account,
            org: req.org,
            project: req.project,
            pipeline: req.pipeline,
            sequence_id: 0,
            trigger: if req.trigger.is_null() {
                serde_json::json!({"type": "Manual"})
            } else {
                super::machine::defuse(req.trigger)
            },
            triggered_by: req.triggered_by,
            inputs,
            created_ms: 0,
        },
        plan,
        idempotency_key: req.idempotency_key,
        last_sequence: 0,
    })
}

fn json_wrap(p: &Json) -> Json {
    serde_json::json!({ "pipeline": p })
}

struct Fetched(HashMap<(String, String), Json>);

impl Entities for Fetched {
    fn get(&self, kind: &str, id: &str) -> Option<Json> {
        self.0.get(&(kind.to_string(), id.to_string())).cloned()
    }
}

/// Adds the layers of input set `id` (an overlay adds each referenced set, in order).
async fn expand_input_set(
    src: &dyn EntitySource,
    pipeline: &str,
    id: &str,
    layers: &mut Vec<BTreeMap<String, String>>,
    seen: &mut Vec<String>,
) -> Result<(), StartError> {
    if seen.iter().any(|s| s == id) {
        return Err(StartError::Invalid(format!("input set cycle: {} → {id}", seen.join(" → "))));
    }
    seen.push(id.to_string());
    if let Some(doc) = src.entity("inputSet", id).await.map_err(StartError::Store)? {
        let set = inner(&doc, "inputSet");
        let p = set.get("pipeline").cloned().unwrap_or(Json::Null);
        let target = p.get("identifier").and_then(Json::as_str).unwrap_or("");
        if target != pipeline {
            return Err(StartError::Invalid(format!(
                "input set {id:?} is for pipeline {target:?}, not {pipeline:?}"
            )));
        }
        layers.push(crate::model::flatten_input_set(&p));
    } else if let Some(doc) = src.entity("overlayInputSet", id).await.map_err(StartError::Store)? {
        let o = inner(&doc, "overlayInputSet");
        let refs: Vec<String> = o
            .get("inputSetReferences")
            .and_then(Json::as_array)
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        for r in refs {
            Box::pin(expand_input_set(src, pipeline, &r, layers, seen)).await?;
        }
    } else {
        return Err(StartError::NotFound(format!("input set {id:?} does not exist")));
    }
    seen.pop();
    Ok(())
}
