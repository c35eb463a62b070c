//! What `<+…>` expressions see while an execution runs, from the point of view
//! of one node: `pipeline.*` (identifier, name, sequenceId, executionId,
//! variables, stages with their steps and outputs), `stage.*`, `step.*`,
//! `execution.steps.*` (the current stage's steps), `service.*`, `env.*`,
//! `infra.*`, `serviceVariables.*` (service variables with the environment's
//! overrides applied) and `trigger.*`.
//!
//! Objects are built on demand per lookup, only for the root asked about.

use dray_shared::expr::{Context, Value};
use serde_json::{Map, Value as Json, json};

use super::machine::Execution;
use super::plan::{Item, NodeIdx, NodeKind, ROOT};

/// Expression context of `exec` at node `at`.
pub struct ExecContext<'a> {
    exec: &'a Execution,
    at: NodeIdx,
}

impl<'a> ExecContext<'a> {
    /// The context seen by node `at`.
    pub fn new(exec: &'a Execution, at: NodeIdx) -> Self {
        ExecContext { exec, at }
    }

    fn node_obj(&self, idx: NodeIdx) -> Json {
        let n = self.exec.plan.node(idx);
        let s = &self.exec.nodes[idx];
        let mut o = json!({
            "identifier": n.identifier,
            "name": n.name,
            "status": s.status.as_str(),
        });
        match &n.kind {
            NodeKind::Step { step_type, .. } => {
                o["type"] = json!(step_type);
                o["output"] = Json::Object(s.outputs.clone());
                o["retryCount"] = json!(s.attempt.saturating_sub(1));
            }
            NodeKind::StepGroup => {
                o["steps"] = self.steps_map(idx);
            }
            NodeKind::Stage { stage_type, .. } => {
                o["type"] = json!(stage_type);
                o["variables"] = Json::Object(s.variables.clone());
                o["spec"] = json!({ "execution": { "steps": self.steps_map(idx) } });
            }
            NodeKind::Pipeline => {}
        }
        o
    }

    /// `{ id: step-or-group object }` for the children (and rollback steps) of a container.
    fn steps_map(&self, idx: NodeIdx) -> Json {
        let n = self.exec.plan.node(idx);
        let mut m = Map::new();
        for item in n.children.iter().chain(n.rollback.iter()) {
            for &c in item.members() {
                m.entry(self.exec.plan.node(c).identifier.clone()).or_insert_with(|| self.node_obj(c));
            }
        }
        Json::Object(m)
    }

    fn stages_map(&self, only: Option<&str>) -> Json {
        let mut m = Map::new();
        for item in &self.exec.plan.node(ROOT).children {
            for &s in item.members() {
                let id = &self.exec.plan.node(s).identifier;
                if only.is_none_or(|o| o == id) {
                    m.insert(id.clone(), self.node_obj(s));
                }
            }
        }
        Json::Object(m)
    }

    fn target_obj(&self, key: &str) -> Option<Json> {
        let stage = self.exec.plan.stage_of(self.at)?;
        match &self.exec.plan.node(stage).kind {
            NodeKind::Stage { target: Some(t), .. } => t.context.get(key).cloned(),
            _ => None,
        }
    }

    /// The JSON at `path`, if any.
    fn resolve(&self, path: &[&str]) -> Option<Json> {
        let (root, rest) = path.split_first()?;
        let meta = &self.exec.meta;
        let (obj, rest) = match *root {
            "pipeline" => match rest.first() {
                Some(&"variables") => (Json::Object(self.exec.nodes[ROOT].variables.clone()), &rest[1..]),
                Some(&"stages") => (self.stages_map(rest.get(1).copied()), &rest[1..]),
                _ => {
                    let o = json!({
                        "identifier": self.exec.plan.pipeline,
                        "name": self.exec.plan.name,
                        "executionId": meta.id,
                        "sequenceId": meta.sequence_id,
                        "startTs": meta.created_ms,
                        "triggerType": meta.trigger.get("type").cloned().unwrap_or(json!("MANUAL")),
                        "triggeredBy": meta.triggered_by,
                        "orgIdentifier": meta.org,
                        "projectIdentifier": meta.project,
                        "variables": Json::Object(self.exec.nodes[ROOT].variables.clone()),
                    });
                    (o, rest)
                }
            },
            "stage" => (self.node_obj(self.exec.plan.stage_of(self.at)?), rest),
            "step" => {
                if !self.exec.plan.node(self.at).is_step() {
                    return None;
                }
                (self.node_obj(self.at), rest)
            }
            "execution" => {
                let stage = self.exec.plan.stage_of(self.at)?;
                (json!({ "steps": self.steps_map(stage) }), rest)
            }
            "stepGroup" => {
                let g = self
                    .exec
                    .plan
                    .ancestors(self.at)
                    .find(|&i| matches!(self.exec.plan.node(i).kind, NodeKind::StepGroup))?;
                (self.node_obj(g), rest)
            }
            "service" | "env" | "infra" | "serviceVariables" | "artifact" => (self.target_obj(root)?, rest),
            "environment" => (self.target_obj("env")?, rest),
            "trigger" => (meta.trigger.clone(), rest),
            _ => return None,
        };
        let mut v = &obj;
        for seg in rest {
            v = match v {
                Json::Object(m) => m.get(*seg)?,
                Json::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(v.clone())
    }
}

impl Context for ExecContext<'_> {
    fn lookup(&self, path: &[&str]) -> Option<Value> {
        self.resolve(path).map(|j| Value::from_json(&j))
    }
}

/// The items of `idx` flattened to node indexes, in order.
pub fn flat(items: &[Item]) -> impl Iterator<Item = NodeIdx> + '_ {
    items.iter().flat_map(|i| i.members().iter().copied())
}
