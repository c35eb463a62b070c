//! The compiled form of a pipeline that an execution runs: an arena of nodes
//! (pipeline ▸ stages ▸ step groups ▸ steps, plus rollback steps) with their
//! sequencing, conditions, failure strategies, timeouts and selectors.
//!
//! A plan is built once when an execution starts (after runtime inputs are
//! resolved) and stored with the execution, so editing a pipeline never changes
//! an execution already running. Node indexes are therefore stable for the
//! execution's whole life and key its per-node state rows.

use dray_shared::error_type;
use serde::{Deserialize, Serialize};

/// Index of a node in [`Plan::nodes`].
pub type NodeIdx = usize;

/// The root node is always at index 0.
pub const ROOT: NodeIdx = 0;

/// One element of a sequence: a single node, or nodes that run side by side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Item {
    /// One node.
    One(NodeIdx),
    /// Nodes started together; the item is done when all are.
    Parallel(Vec<NodeIdx>),
}

impl Item {
    /// The nodes of this item.
    pub fn members(&self) -> &[NodeIdx] {
        match self {
            Item::One(i) => std::slice::from_ref(i),
            Item::Parallel(v) => v,
        }
    }
}

/// What a node is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum NodeKind {
    /// The pipeline itself (index 0).
    Pipeline,
    /// A stage.
    #[serde(rename_all = "camelCase")]
    Stage {
        /// Deployment, Custom or Approval.
        stage_type: String,
        /// Resolved service, environment and infrastructure of a Deployment stage.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<StageTarget>,
    },
    /// A step group.
    StepGroup,
    /// A step.
    #[serde(rename_all = "camelCase")]
    Step {
        /// Registry name, e.g. `ShellScript`.
        step_type: String,
        /// The step's `spec` as written (expressions not yet rendered).
        spec: serde_json::Value,
    },
}

/// Service, environment and infrastructure a Deployment stage deploys to, with
/// their definitions captured when the execution started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageTarget {
    /// Service identifier.
    pub service: String,
    /// Environment identifier.
    pub environment: String,
    /// Infrastructure definition identifier (empty when the stage names none).
    pub infrastructure: String,
    /// Expression-context objects: `service`, `env`, `infra`, `serviceVariables`.
    pub context: serde_json::Value,
    /// Delegate selectors from the infrastructure's connector, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connector_selectors: Vec<String>,
}

impl StageTarget {
    /// The concurrency-guard key: one running stage per service + infrastructure.
    pub fn lock_key(&self, scope: &str) -> String {
        format!("{scope}/{}/{}/{}", self.service, self.environment, self.infrastructure)
    }
}

/// Which earlier outcome a `when` runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum StatusGate {
    /// Only when nothing before failed (the default).
    #[default]
    Success,
    /// Only when something before failed.
    Failure,
    /// Always.
    All,
}

/// Conditional execution of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct When {
    /// Status gate (`pipelineStatus` for stages, `stageStatus` for steps).
    pub status: StatusGate,
    /// Optional condition expression (`Condition` syntax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

/// What to do about a failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum Action {
    /// The step counts as succeeded-with-failure; the flow goes on.
    Ignore,
    /// The step is marked succeeded.
    MarkAsSuccess,
    /// The step fails; its stage fails.
    MarkAsFailure,
    /// The whole execution is aborted.
    Abort,
    /// The stage runs its rollback steps, then fails.
    StageRollback,
    /// The stage and every earlier stage roll back (latest first), then the pipeline fails.
    PipelineRollback,
    /// Run the step again.
    #[serde(rename_all = "camelCase")]
    Retry {
        /// How many more attempts.
        count: u32,
        /// Pause before each retry; the last one repeats.
        intervals_ms: Vec<u64>,
        /// What to do when every retry failed.
        on_retry_failure: Box<Action>,
    },
    /// Wait for an operator to choose an action.
    #[serde(rename_all = "camelCase")]
    ManualIntervention {
        /// How long to wait.
        timeout_ms: u64,
        /// What happens when nobody chose in time.
        on_timeout: Box<Action>,
    },
}

impl Action {
    /// The action's name as written in YAML.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Ignore => "Ignore",
            Action::MarkAsSuccess => "MarkAsSuccess",
            Action::MarkAsFailure => "MarkAsFailure",
            Action::Abort => "Abort",
            Action::StageRollback => "StageRollback",
            Action::PipelineRollback => "PipelineRollback",
            Action::Retry { .. } => "Retry",
            Action::ManualIntervention { .. } => "ManualIntervention",
        }
    }
}

/// One `onFailure` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Strategy {
    /// Error types it matches (`AllErrors` matches all).
    pub errors: Vec<String>,
    /// What it does.
    pub action: Action,
}

impl Strategy {
    /// True when this strategy applies to a failure of `error_type`.
    pub fn matches(&self, error_type: &str) -> bool {
        self.errors.iter().any(|e| e == error_type::ALL_ERRORS || e == error_type)
    }
}

/// One node of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// Identifier as written.
    pub identifier: String,
    /// Display name.
    pub name: String,
    /// Dotted path of identifiers from the pipeline, e.g. `deploy.canary.apply`;
    /// rollback steps live under `<stage>.rollback.` / `<group>.rollback.`.
    pub path: String,
    /// What it is.
    pub kind: NodeKind,
    /// Enclosing node (None for the root).
    pub parent: Option<NodeIdx>,
    /// Children, in order (stages of the pipeline, steps of a stage or group).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Item>,
    /// Rollback steps of a stage or group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollback: Vec<Item>,
    /// True for nodes inside a rollback sequence.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_rollback: bool,
    /// Conditional execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<When>,
    /// Failure strategies declared on this node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failure_strategies: Vec<Strategy>,
    /// Timeout of the node (steps: of each attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Delegate selectors declared on this node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegate_selectors: Vec<String>,
    /// Variables declared on this node (`name`, template value), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<(String, String)>,
}

impl Node {
    /// True for steps.
    pub fn is_step(&self) -> bool {
        matches!(self.kind, NodeKind::Step { .. })
    }

    /// True for stages.
    pub fn is_stage(&self) -> bool {
        matches!(self.kind, NodeKind::Stage { .. })
    }

    /// Step type, for steps.
    pub fn step_type(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Step { step_type, .. } => Some(step_type),
            _ => None,
        }
    }

    /// "pipeline", "stage", "stepGroup" or "step".
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            NodeKind::Pipeline => "pipeline",
            NodeKind::Stage { .. } => "stage",
            NodeKind::StepGroup => "stepGroup",
            NodeKind::Step { .. } => "step",
        }
    }
}

/// Barrier declared in `flowControl.barriers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Barrier {
    /// Identifier steps refer to with `barrierRef`.
    pub identifier: String,
    /// Display name.
    pub name: String,
}

/// A compiled pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Pipeline identifier.
    pub pipeline: String,
    /// Pipeline display name.
    pub name: String,
    /// All nodes; [`ROOT`] is the pipeline.
    pub nodes: Vec<Node>,
    /// Barriers of the pipeline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub barriers: Vec<Barrier>,
}

impl Plan {
    /// The node at `idx`.
    pub fn node(&self, idx: NodeIdx) -> &Node {
        &self.nodes[idx]
    }

    /// The stage a node belongs to (itself for a stage; None for the root).
    pub fn stage_of(&self, mut idx: NodeIdx) -> Option<NodeIdx> {
        loop {
            if self.nodes[idx].is_stage() {
                return Some(idx);
            }
            idx = self.nodes[idx].parent?;
        }
    }

    /// Ancestors from the parent up to the root.
    pub fn ancestors(&self, idx: NodeIdx) -> impl Iterator<Item = NodeIdx> + '_ {
        std::iter::successors(self.nodes[idx].parent, move |&i| self.nodes[i].parent)
    }

    /// Finds a node by its dotted path.
    pub fn find(&self, path: &str) -> Option<NodeIdx> {
        self.nodes.iter().position(|n| n.path == path)
    }

    /// Every node below `idx` (children and rollback, recursively), not `idx` itself.
    pub fn descendants(&self, idx: NodeIdx) -> Vec<NodeIdx> {
        let mut out = Vec::new();
        let mut stack: Vec<NodeIdx> = self.child_nodes(idx).collect();
        while let Some(i) = stack.pop() {
            out.push(i);
            stack.extend(self.child_nodes(i));
        }
        out
    }

    fn child_nodes(&self, idx: NodeIdx) -> impl Iterator<Item = NodeIdx> + '_ {
        let n = &self.nodes[idx];
        n.children.iter().chain(n.rollback.iter()).flat_map(|it| it.members().iter().copied())
    }

    /// The selectors in force for a node: the most specific level that declares any
    /// (step ▸ step group ▸ stage ▸ pipeline), else the stage's connector selectors.
    pub fn selectors_for(&self, idx: NodeIdx) -> Vec<String> {
        let own = std::iter::once(idx).chain(self.ancestors(idx));
        for i in own {
            if !self.nodes[i].delegate_selectors.is_empty() {
                return self.nodes[i].delegate_selectors.clone();
            }
        }
        self.stage_of(idx)
            .and_then(|s| match &self.nodes[s].kind {
                NodeKind::Stage { target: Some(t), .. } => Some(t.connector_selectors.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// The failure strategy for a failure of `error_type` at step `idx`: the step's
    /// own first, then each enclosing group's, then the stage's.
    pub fn strategy_for(&self, idx: NodeIdx, error_type: &str) -> Option<&Strategy> {
        std::iter::once(idx)
            .chain(self.ancestors(idx))
            .take_while(|&i| !matches!(self.nodes[i].kind, NodeKind::Pipeline))
            .flat_map(|i| self.nodes[i].failure_strategies.iter())
            .find(|s| s.matches(error_type))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small builder for hand-made plans in tests.
    pub(crate) struct PlanBuilder {
        pub plan: Plan,
    }

    impl PlanBuilder {
        pub fn new() -> Self {
            let root = Node {
                identifier: "p".into(),
                name: "p".into(),
                path: String::new(),
                kind: NodeKind::Pipeline,
                parent: None,
                children: vec![],
                rollback: vec![],
                in_rollback: false,
                when: None,
                failure_strategies: vec![],
                timeout_ms: None,
                delegate_selectors: vec![],
                variables: vec![],
            };
            PlanBuilder {
                plan: Plan { pipeline: "p".into(), name: "p".into(), nodes: vec![root], barriers: vec![] },
            }
        }

        fn add(&mut self, parent: NodeIdx, id: &str, kind: NodeKind, rollback: bool) -> NodeIdx {
            let parent_path = &self.plan.nodes[parent].path;
            let in_rb = rollback || self.plan.nodes[parent].in_rollback;
            let path = match (parent_path.is_empty(), rollback) {
                (true, _) => id.to_string(),
                (false, false) => format!("{parent_path}.{id}"),
                (false, true) => format!("{parent_path}.rollback.{id}"),
            };
            self.plan.nodes.push(Node {
                identifier: id.into(),
                name: id.into(),
                path,
                kind,
                parent: Some(parent),
                children: vec![],
                rollback: vec![],
                in_rollback: in_rb,
                when: None,
                failure_strategies: vec![],
                timeout_ms: None,
                delegate_selectors: vec![],
                variables: vec![],
            });
            self.plan.nodes.len() - 1
        }

        pub fn stage(&mut self, id: &str) -> NodeIdx {
            let i = self.add(ROOT, id, NodeKind::Stage { stage_type: "Custom".into(), target: None }, false);
            self.plan.nodes[ROOT].children.push(Item::One(i));
            i
        }

        pub fn parallel_stages(&mut self, ids: &[&str]) -> Vec<NodeIdx> {
            let v: Vec<_> = ids
                .iter()
                .map(|id| {
                    self.add(ROOT, id, NodeKind::Stage { stage_type: "Custom".into(), target: None }, false)
                })
                .collect();
            self.plan.nodes[ROOT].children.push(Item::Parallel(v.clone()));
            v
        }

        pub fn step(&mut self, parent: NodeIdx, id: &str, ty: &str, spec: serde_json::Value) -> NodeIdx {
            let i = self.add(parent, id, NodeKind::Step { step_type: ty.into(), spec }, false);
            self.plan.nodes[parent].children.push(Item::One(i));
            i
        }

        pub fn parallel_steps(&mut self, parent: NodeIdx, ids: &[&str]) -> Vec<NodeIdx> {
            let v: Vec<_> = ids
                .iter()
                .map(|id| {
                    self.add(
                        parent,
                        id,
                        NodeKind::Step { step_type: "Noop".into(), spec: serde_json::json!({}) },
                        false,
                    )
                })
                .collect();
            self.plan.nodes[parent].children.push(Item::Parallel(v.clone()));
            v
        }

        pub fn group(&mut self, parent: NodeIdx, id: &str) -> NodeIdx {
            let i = self.add(parent, id, NodeKind::StepGroup, false);
            self.plan.nodes[parent].children.push(Item::One(i));
            i
        }

        pub fn rollback_step(&mut self, parent: NodeIdx, id: &str) -> NodeIdx {
            let i = self.add(
                parent,
                id,
                NodeKind::Step { step_type: "Noop".into(), spec: serde_json::json!({}) },
                true,
            );
            self.plan.nodes[parent].rollback.push(Item::One(i));
            i
        }

        pub fn noop(&mut self, parent: NodeIdx, id: &str) -> NodeIdx {
            self.step(parent, id, "Noop", serde_json::json!({}))
        }
    }

    #[test]
    fn strategies_resolve_most_specific_first() {
        let mut b = PlanBuilder::new();
        let s = b.stage("s");
        let g = b.group(s, "g");
        let st = b.noop(g, "x");
        b.plan.nodes[s].failure_strategies =
            vec![Strategy { errors: vec!["AllErrors".into()], action: Action::StageRollback }];
        b.plan.nodes[g].failure_strategies =
            vec![Strategy { errors: vec!["Timeout".into()], action: Action::Ignore }];
        let p = &b.plan;
        assert_eq!(p.strategy_for(st, "Timeout").unwrap().action, Action::Ignore);
        assert_eq!(p.strategy_for(st, "Unknown").unwrap().action, Action::StageRollback);
        assert_eq!(p.node(st).path, "s.g.x");
        assert_eq!(p.stage_of(st), Some(s));
    }

    #[test]
    fn selectors_most_specific_level_wins() {
        let mut b = PlanBuilder::new();
        let s = b.stage("s");
        let g = b.group(s, "g");
        let st = b.noop(g, "x");
        let other = b.noop(s, "y");
        b.plan.nodes[ROOT].delegate_selectors = vec!["pipe".into()];
        b.plan.nodes[g].delegate_selectors = vec!["grp".into()];
        assert_eq!(b.plan.selectors_for(st), vec!["grp".to_string()]);
        assert_eq!(b.plan.selectors_for(other), vec!["pipe".to_string()]);
        b.plan.nodes[st].delegate_selectors = vec!["own".into()];
        assert_eq!(b.plan.selectors_for(st), vec!["own".to_string()]);
    }
}
