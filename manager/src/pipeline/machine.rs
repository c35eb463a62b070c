//! The execution state machine, pure: no I/O, no clock (the caller passes `now`),
//! no channels. Inputs are method calls (`start`, `task_finished`, `tick`,
//! `approve`, …); outputs are the changed node states (`take_dirty`) and
//! [`Effect`]s for the driver (submit/cancel tasks, take/release concurrency
//! locks, publish events).
//!
//! Flow, in brief:
//! - A container (pipeline, stage, step group) runs its items in order; the
//!   members of a parallel item start together; an item is done when all its
//!   members are final. A member is started only if its `when` allows it
//!   (status gate + condition), otherwise it is skipped.
//! - A step failure goes through the failure strategies (step ▸ groups ▸ stage;
//!   first matching error type wins; none = MarkAsFailure).
//! - StageRollback: the stage starts nothing new, waits for running work, then
//!   runs the rollback steps of its step groups (latest first) and its own, and
//!   fails. PipelineRollback additionally, once the pipeline settles, rolls back
//!   every earlier stage that ran, latest first.
//! - Retries, Wait steps, approval/intervention timeouts and container timeouts
//!   are deadlines on nodes; the driver calls `tick` when the earliest is due.

use std::collections::BTreeSet;
use std::sync::Arc;

use dray_shared::expr::{Condition, Template, render_json};
use dray_shared::pb;
use dray_shared::task::{INSTANCES_OUTPUT, Instance};
use dray_shared::{TaskId, error_type};
use serde_json::{Map, Value as Json, json};

use super::context::{ExecContext, flat};
use super::plan::{Action, Item, NodeIdx, NodeKind, Plan, ROOT, StatusGate};
use super::state::{Decision, ExecState, ExecStatus, Failure, NodeState, Rollback, Status, Wait};
use super::steps::{Approval, Registry, StartContext, StepOutcome, StepStart, TaskOutcome};

/// Approvals wait this long unless the step says otherwise.
pub const DEFAULT_APPROVAL_TIMEOUT_MS: u64 = 24 * 3600 * 1000;

/// Facts about an execution fixed at its creation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    /// Execution id (UUIDv7 text).
    pub id: String,
    /// Account.
    pub account: String,
    /// Organisation.
    pub org: String,
    /// Project.
    pub project: String,
    /// Pipeline identifier.
    pub pipeline: String,
    /// Per-pipeline run number, from 1.
    pub sequence_id: u64,
    /// `trigger.*` expression object (`{"type": "Manual"}` for manual runs).
    pub trigger: Json,
    /// Who started it ("admin", "trigger:<id>").
    pub triggered_by: String,
    /// The runtime inputs it was started with (input path → value).
    #[serde(default)]
    pub inputs: std::collections::BTreeMap<String, String>,
    /// Unix ms of creation.
    pub created_ms: i64,
}

impl Meta {
    /// The scope as tasks carry it.
    pub fn scope(&self) -> pb::Scope {
        pb::Scope { account: self.account.clone(), org: self.org.clone(), project: self.project.clone() }
    }

    /// `account/org/project`, for lock keys and display.
    pub fn scope_path(&self) -> String {
        format!("{}/{}/{}", self.account, self.org, self.project)
    }
}

/// A status change people and integrations can watch.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Node path (empty for the pipeline).
    pub path: String,
    /// "pipeline", "stage", "stepGroup" or "step".
    pub kind: &'static str,
    /// New status.
    pub status: Status,
    /// Extra detail (failure reason, strategy applied…).
    pub message: String,
    /// Unix ms.
    pub at_ms: i64,
}

/// Work for the driver, produced by the machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Submit this task (after the node state is durable).
    Submit {
        /// Task id, already recorded on the node.
        task_id: TaskId,
        /// What to run.
        spec: pb::TaskSpec,
    },
    /// Cancel this task.
    Cancel {
        /// Task id.
        task_id: TaskId,
    },
    /// A Deployment stage wants its service + infrastructure lock.
    Acquire {
        /// The stage.
        node: NodeIdx,
        /// Lock key.
        key: String,
    },
    /// A stage is done with (or gives up waiting for) its lock.
    Release {
        /// The stage.
        node: NodeIdx,
        /// Lock key.
        key: String,
    },
    /// Publish an event.
    Event(Event),
    /// A deploy step reported the instances it left running; written in the
    /// same commit as the step's success (not acted on after it).
    Instances {
        /// The reporting step.
        node: NodeIdx,
        /// JSON array of `dray_shared::task::Instance`.
        instances_json: String,
    },
}

/// A refused operator command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The execution is over.
    #[error("execution is already {0}")]
    Finished(&'static str),
    /// No node matches.
    #[error("{0}")]
    NotFound(String),
    /// The node is not waiting for this.
    #[error("{0}")]
    Invalid(String),
}

/// A failure strategy action an operator may choose during manual intervention.
pub fn parse_intervention(action: &str) -> Result<Option<Action>, CommandError> {
    Ok(Some(match action {
        "Retry" | "retry" => return Ok(None),
        "Ignore" | "ignore" => Action::Ignore,
        "MarkAsSuccess" | "mark-as-success" | "mark-success" => Action::MarkAsSuccess,
        "MarkAsFailure" | "mark-as-failure" | "mark-failure" => Action::MarkAsFailure,
        "Abort" | "abort" => Action::Abort,
        "StageRollback" | "stage-rollback" => Action::StageRollback,
        "PipelineRollback" | "pipeline-rollback" => Action::PipelineRollback,
        other => {
            return Err(CommandError::Invalid(format!(
                "unknown action {other:?} (Retry, Ignore, MarkAsSuccess, MarkAsFailure, Abort, StageRollback, PipelineRollback)"
            )));
        }
    }))
}

/// A finished task, as the machine needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskDone {
    /// Final task state.
    pub state: pb::TaskState,
    /// Error type the delegate or lease engine gave.
    pub error_type: String,
    /// Why it ended so.
    pub reason: String,
    /// Outputs reported.
    pub outputs: std::collections::BTreeMap<String, String>,
    /// Delegate that ran it.
    pub delegate: Option<String>,
}

/// One execution: plan, state, and the changes not yet taken by the driver.
#[derive(Debug, Clone)]
pub struct Execution {
    /// Fixed facts.
    pub meta: Meta,
    /// What it runs.
    pub plan: Arc<Plan>,
    /// Execution-wide state.
    pub state: ExecState,
    /// Per-node state, indexed like `plan.nodes`.
    pub nodes: Vec<NodeState>,
    dirty: BTreeSet<NodeIdx>,
    dirty_exec: bool,
    effects: Vec<Effect>,
    now: i64,
}

impl Execution {
    /// A new execution that has not started.
    pub fn new(meta: Meta, plan: Arc<Plan>) -> Self {
        let nodes = vec![NodeState::default(); plan.nodes.len()];
        Self::restore(meta, plan, ExecState::default(), nodes)
    }

    /// An execution rebuilt from the store.
    pub fn restore(meta: Meta, plan: Arc<Plan>, state: ExecState, nodes: Vec<NodeState>) -> Self {
        Execution {
            meta,
            plan,
            state,
            nodes,
            dirty: BTreeSet::new(),
            dirty_exec: false,
            effects: vec![],
            now: 0,
        }
    }

    /// Node states changed since the last call, and whether [`ExecState`] changed.
    pub fn take_dirty(&mut self) -> (bool, Vec<NodeIdx>) {
        (std::mem::take(&mut self.dirty_exec), std::mem::take(&mut self.dirty).into_iter().collect())
    }

    /// Effects produced since the last call, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// True once over.
    pub fn is_final(&self) -> bool {
        self.state.status.is_final()
    }

    /// The earliest pending node deadline.
    pub fn next_deadline(&self) -> Option<i64> {
        self.nodes.iter().filter(|n| !n.status.is_final()).filter_map(|n| n.deadline_ms).min()
    }

    /// Tasks the execution is waiting for: (task id, node).
    pub fn running_tasks(&self) -> impl Iterator<Item = (&str, NodeIdx)> + '_ {
        self.nodes.iter().enumerate().filter_map(|(i, n)| match (n.status, &n.task_id) {
            (Status::Running, Some(t)) => Some((t.as_str(), i)),
            _ => None,
        })
    }

    /// Stages holding or waiting for a lock: (stage, key, holding).
    pub fn locks(&self) -> Vec<(NodeIdx, String, bool)> {
        let scope = self.meta.scope_path();
        self.plan
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match &n.kind {
                NodeKind::Stage { target: Some(t), .. } if self.nodes[i].status.is_active() => {
                    Some((i, t.lock_key(&scope), self.nodes[i].status != Status::Queued))
                }
                _ => None,
            })
            .collect()
    }

    // ---- inputs -------------------------------------------------------------

    /// Starts the execution: evaluates pipeline variables and runs the first stages.
    pub fn start(&mut self, now: i64, reg: &Registry) {
        self.now = now;
        if self.nodes[ROOT].status != Status::NotStarted {
            return;
        }
        self.begin_container(ROOT);
        self.advance(reg);
    }

    /// A task finished.
    pub fn task_finished(&mut self, task_id: &str, done: &TaskDone, now: i64, reg: &Registry) {
        self.now = now;
        let Some(idx) = self.running_tasks().find(|(t, _)| *t == task_id).map(|(_, i)| i) else {
            return;
        };
        self.nodes[idx].delegate = done.delegate.clone();
        let plan = Arc::clone(&self.plan);
        let node = plan.node(idx);
        let (step_type, spec) = match &node.kind {
            NodeKind::Step { step_type, spec } => (step_type.as_str(), spec),
            _ => return,
        };
        // What the task reported wins for failures; loss, expiry and cancel are the
        // manager's own classification.
        let (kind, reason) = match done.state {
            pb::TaskState::Succeeded => ("", done.reason.clone()),
            pb::TaskState::Lost => (error_type::DELEGATE_RESTART, done.reason.clone()),
            pb::TaskState::Expired => (error_type::DELEGATE_PROVISIONING, done.reason.clone()),
            pb::TaskState::Cancelled => (error_type::UNKNOWN, format!("task cancelled: {}", done.reason)),
            _ if !done.error_type.is_empty() => (done.error_type.as_str(), done.reason.clone()),
            _ => (error_type::UNKNOWN, done.reason.clone()),
        };
        // Instances are also recorded per deployment target (the latest report
        // wins there); the step keeps its own report as an output.
        let succeeded = done.state == pb::TaskState::Succeeded;
        if let Some(json) = done.outputs.get(INSTANCES_OUTPUT).filter(|_| succeeded) {
            self.record_instances(idx, json.clone());
        }
        let outcome = TaskOutcome { succeeded, error_type: kind, reason: &reason, outputs: &done.outputs };
        let result = match reg.get(step_type) {
            Some(t) => t.finish(spec, &outcome, &ExecContext::new(self, idx)),
            None => StepOutcome::Failure {
                error_type: "Unknown".into(),
                message: format!("step type {step_type} is not known to this manager"),
                outputs: Map::new(),
            },
        };
        let result = match result {
            StepOutcome::Success(o) => StepOutcome::Success(defuse_map(o)),
            StepOutcome::Failure { error_type, message, outputs } => {
                StepOutcome::Failure { error_type, message, outputs: defuse_map(outputs) }
            }
        };
        match result {
            StepOutcome::Success(outputs) => {
                self.nodes[idx].outputs = outputs;
                self.set_status(idx, Status::Succeeded, String::new());
            }
            StepOutcome::Failure { error_type, message, outputs } => {
                self.nodes[idx].outputs = outputs;
                self.fail_step(idx, &error_type, message);
            }
        }
        self.advance(reg);
    }

    /// Queues the instances a step in a Deployment stage reported; a report
    /// that is not a list of instances is noted on the step and dropped.
    fn record_instances(&mut self, idx: NodeIdx, json: String) {
        let in_target = self
            .plan
            .stage_of(idx)
            .is_some_and(|s| matches!(self.plan.node(s).kind, NodeKind::Stage { target: Some(_), .. }));
        if !in_target {
            return;
        }
        match serde_json::from_str::<Vec<Instance>>(&json) {
            Ok(list) => {
                let instances_json = serde_json::to_string(&list).unwrap_or_else(|_| "[]".into());
                self.effects.push(Effect::Instances { node: idx, instances_json });
            }
            Err(e) => self.note(idx, format!("ignored the delegate's instance report: {e}")),
        }
    }

    /// Fires every deadline that is due.
    pub fn tick(&mut self, now: i64, reg: &Registry) {
        self.now = now;
        self.advance(reg);
    }

    /// The concurrency lock a queued stage asked for is now held.
    pub fn lock_granted(&mut self, stage: NodeIdx, now: i64, reg: &Registry) {
        self.now = now;
        if self.nodes.get(stage).map(|n| n.status) == Some(Status::Queued) {
            self.begin_container(stage);
            self.advance(reg);
        }
    }

    /// Records an approval decision. `path` may be omitted when exactly one
    /// approval is waiting. Returns the node path decided.
    pub fn decide(
        &mut self,
        path: Option<&str>,
        decision: Decision,
        now: i64,
        reg: &Registry,
    ) -> Result<String, CommandError> {
        self.now = now;
        self.check_live()?;
        let idx = self.waiting_node(path, "approval", |w| matches!(w, Wait::Approval))?;
        let spec = match &self.plan.node(idx).kind {
            NodeKind::Step { spec, step_type } if Approval::is_approval(step_type) => spec,
            _ => return Err(CommandError::Invalid("not an approval step".into())),
        };
        let declared = Approval::inputs(spec);
        if let Some(unknown) = decision.inputs.keys().find(|k| !declared.iter().any(|(n, _)| n == *k)) {
            let names: Vec<_> = declared.iter().map(|(n, _)| n.as_str()).collect();
            return Err(CommandError::Invalid(format!(
                "{unknown:?} is not an approver input of this step (declared: {})",
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            )));
        }
        let mut inputs = Map::new();
        for (name, default) in declared {
            let v = decision.inputs.get(&name).cloned().unwrap_or(Json::String(default));
            inputs.insert(name, v);
        }
        let out = &mut self.nodes[idx].outputs;
        out.insert("approvedBy".into(), json!(decision.by));
        out.insert("comment".into(), json!(decision.comment));
        out.insert("action".into(), json!(if decision.approved { "APPROVE" } else { "REJECT" }));
        out.insert("approverInputs".into(), Json::Object(inputs));
        let approved = decision.approved;
        let who = decision.by.clone();
        let comment = decision.comment.clone();
        self.nodes[idx].decision = Some(decision);
        if approved {
            self.set_status(idx, Status::Succeeded, format!("approved by {who}"));
        } else {
            let msg = if comment.is_empty() {
                format!("rejected by {who}")
            } else {
                format!("rejected by {who}: {comment}")
            };
            self.fail_step(idx, "ApprovalRejection", msg);
        }
        self.advance(reg);
        Ok(self.plan.node(idx).path.clone())
    }

    /// An operator's choice for a step waiting on manual intervention.
    pub fn intervene(
        &mut self,
        path: Option<&str>,
        action: &str,
        by: &str,
        now: i64,
        reg: &Registry,
    ) -> Result<String, CommandError> {
        self.now = now;
        self.check_live()?;
        let action = parse_intervention(action)?;
        let idx =
            self.waiting_node(path, "manual intervention", |w| matches!(w, Wait::Intervention { .. }))?;
        let name = action.as_ref().map_or("Retry", Action::name);
        self.note(idx, format!("manual intervention by {by}: {name}"));
        match action {
            None => self.start_step(idx, reg),
            Some(a) => self.apply_action(idx, a),
        }
        self.advance(reg);
        Ok(self.plan.node(idx).path.clone())
    }

    /// Aborts: cancels running tasks, marks unfinished work aborted.
    pub fn abort(&mut self, reason: &str, now: i64) -> Result<(), CommandError> {
        self.now = now;
        self.check_live()?;
        self.abort_all(reason.to_string());
        Ok(())
    }

    /// Pauses: running work goes on, nothing new starts.
    pub fn pause(&mut self, now: i64) -> Result<(), CommandError> {
        self.now = now;
        self.check_live()?;
        if self.state.status == ExecStatus::Paused {
            return Err(CommandError::Invalid("execution is already paused".into()));
        }
        self.set_exec(ExecStatus::Paused, String::new());
        Ok(())
    }

    /// Resumes a paused execution.
    pub fn resume(&mut self, now: i64, reg: &Registry) -> Result<(), CommandError> {
        self.now = now;
        self.check_live()?;
        if self.state.status != ExecStatus::Paused {
            return Err(CommandError::Invalid("execution is not paused".into()));
        }
        self.set_exec(ExecStatus::Running, String::new());
        self.advance(reg);
        Ok(())
    }

    // ---- helpers: commands ----------------------------------------------------

    fn check_live(&self) -> Result<(), CommandError> {
        if self.is_final() { Err(CommandError::Finished(self.state.status.as_str())) } else { Ok(()) }
    }

    fn waiting_node(
        &self,
        path: Option<&str>,
        what: &str,
        is: impl Fn(&Wait) -> bool,
    ) -> Result<NodeIdx, CommandError> {
        let waiting: Vec<NodeIdx> = (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i].status == Status::Waiting && self.nodes[i].wait.as_ref().is_some_and(&is)
            })
            .collect();
        match path {
            Some(p) => {
                let idx = self
                    .plan
                    .find(p)
                    .ok_or_else(|| CommandError::NotFound(format!("no step {p:?} in this execution")))?;
                if waiting.contains(&idx) {
                    Ok(idx)
                } else {
                    Err(CommandError::Invalid(format!(
                        "step {p} is not waiting for {what} (it is {})",
                        self.nodes[idx].status.as_str()
                    )))
                }
            }
            None => match waiting.as_slice() {
                [one] => Ok(*one),
                [] => Err(CommandError::Invalid(format!("no step is waiting for {what}"))),
                many => {
                    let paths: Vec<_> = many.iter().map(|&i| self.plan.node(i).path.as_str()).collect();
                    Err(CommandError::Invalid(format!(
                        "several steps wait for {what}; pick one with --step: {}",
                        paths.join(", ")
                    )))
                }
            },
        }
    }

    // ---- the engine ---------------------------------------------------------

    fn advance(&mut self, reg: &Registry) {
        // Each pass either changes something or ends the loop; the bound is a
        // guard against a bug turning into a hang of the whole engine.
        for _ in 0..10_000 {
            let mut changed = self.fire_due(reg);
            if self.is_final() {
                return;
            }
            changed |= self.drive(ROOT, reg);
            changed |= self.check_barriers();
            if !changed {
                return;
            }
        }
        tracing::error!(execution = %self.meta.id, "execution did not settle; aborting it");
        self.abort_all("internal error: the execution did not settle".into());
    }

    fn paused(&self) -> bool {
        self.state.status == ExecStatus::Paused
    }

    fn fire_due(&mut self, reg: &Registry) -> bool {
        let now = self.now;
        let due: Vec<NodeIdx> = (0..self.nodes.len())
            .filter(|&i| {
                !self.nodes[i].status.is_final() && self.nodes[i].deadline_ms.is_some_and(|d| d <= now)
            })
            .collect();
        let mut changed = false;
        for idx in due {
            if self.nodes[idx].status.is_final() {
                continue;
            }
            let node = self.plan.node(idx);
            if !node.is_step() {
                self.timeout_container(idx);
                changed = true;
                continue;
            }
            match self.nodes[idx].wait.clone() {
                Some(Wait::Timer) => self.set_status(idx, Status::Succeeded, String::new()),
                Some(Wait::Retry) => {
                    if self.paused() {
                        continue;
                    }
                    if self.stopping(idx) {
                        self.set_status(idx, Status::Failed, "not retried: the stage is stopping".into());
                    } else {
                        self.start_step(idx, reg);
                    }
                }
                Some(Wait::Approval) => self.fail_step(idx, "Timeout", "approval timed out".into()),
                Some(Wait::Barrier { barrier }) => self.fail_step(
                    idx,
                    "Timeout",
                    format!("barrier {barrier} was not reached by all stages in time"),
                ),
                Some(Wait::Intervention { on_timeout }) => {
                    let action = match on_timeout {
                        Action::ManualIntervention { .. } => Action::MarkAsFailure,
                        a => a,
                    };
                    self.note(idx, format!("manual intervention timed out: {}", action.name()));
                    self.apply_action(idx, action);
                }
                None => {
                    self.nodes[idx].deadline_ms = None;
                    self.mark(idx);
                    continue;
                }
            }
            changed = true;
        }
        changed
    }

    /// True when the node's stage or the pipeline is rolling back or stopping:
    /// nothing new starts there. Rollback steps themselves are never stopped.
    fn stopping(&self, idx: NodeIdx) -> bool {
        if self.plan.node(idx).in_rollback {
            return false;
        }
        std::iter::once(idx)
            .chain(self.plan.ancestors(idx))
            .any(|i| matches!(self.nodes[i].rollback, Rollback::Requested | Rollback::Running))
    }

    /// Drives a running container. Returns whether anything changed.
    fn drive(&mut self, c: NodeIdx, reg: &Registry) -> bool {
        if self.nodes[c].status != Status::Running {
            return false;
        }
        let plan = self.plan.clone();
        let node = plan.node(c);
        let mut changed = false;
        if matches!(self.nodes[c].rollback, Rollback::None | Rollback::Requested) {
            let stop = self.stopping(c);
            let allow = !stop && !self.paused();
            let (done, ch) = self.drive_items(&node.children, allow, stop, reg);
            changed |= ch;
            if !done {
                return changed;
            }
            if self.nodes[c].rollback == Rollback::Requested {
                self.nodes[c].rollback = Rollback::Running;
                self.note(c, "rolling back".into());
                changed = true;
            }
        }
        if self.nodes[c].rollback == Rollback::Running {
            let allow = !self.paused();
            if c == ROOT {
                // Every stage that ran, latest first, one after another.
                let stages: Vec<NodeIdx> = flat(&node.children).collect();
                for &s in stages.iter().rev() {
                    let st = &self.nodes[s];
                    if st.started_ms.is_none() || matches!(st.status, Status::Skipped | Status::NotStarted) {
                        continue;
                    }
                    match st.rollback {
                        Rollback::Done => continue,
                        Rollback::None | Rollback::Requested => {
                            self.nodes[s].rollback = Rollback::Running;
                            self.note(s, "rolling back (pipeline rollback)".into());
                            changed = true;
                        }
                        Rollback::Running => {}
                    }
                    let items = self.rollback_items(s);
                    let (done, ch) = self.drive_items(&items, allow, false, reg);
                    changed |= ch;
                    if !done {
                        return changed;
                    }
                    self.nodes[s].rollback = Rollback::Done;
                    self.mark(s);
                    self.emit(s, "rolled back".into());
                }
            } else {
                let items = self.rollback_items(c);
                let (done, ch) = self.drive_items(&items, allow, false, reg);
                changed |= ch;
                if !done {
                    return changed;
                }
            }
            self.nodes[c].rollback = Rollback::Done;
            self.mark(c);
        }
        self.finish_container(c);
        true
    }

    /// The rollback sequence of a stage: its step groups' rollback steps (latest
    /// group first), then its own.
    fn rollback_items(&self, stage: NodeIdx) -> Vec<Item> {
        let mut groups: Vec<NodeIdx> = self
            .plan
            .descendants(stage)
            .into_iter()
            .filter(|&i| {
                let n = self.plan.node(i);
                matches!(n.kind, NodeKind::StepGroup)
                    && !n.in_rollback
                    && !n.rollback.is_empty()
                    && self.nodes[i].started_ms.is_some()
            })
            .collect();
        groups.sort_unstable();
        let mut items: Vec<Item> =
            groups.iter().rev().flat_map(|&g| self.plan.node(g).rollback.clone()).collect();
        items.extend(self.plan.node(stage).rollback.iter().cloned());
        items
    }

    /// Runs a sequence of items. Returns (all done, changed).
    fn drive_items(
        &mut self,
        items: &[Item],
        allow_start: bool,
        skip_unstarted: bool,
        reg: &Registry,
    ) -> (bool, bool) {
        let mut changed = false;
        for item in items {
            let mut all_final = true;
            for &m in item.members() {
                match self.nodes[m].status {
                    Status::NotStarted if skip_unstarted => {
                        self.skip(m, "not run: the flow stopped".into());
                        changed = true;
                    }
                    Status::NotStarted if allow_start => {
                        self.start_node(m, reg);
                        changed = true;
                    }
                    Status::Running if !self.plan.node(m).is_step() => changed |= self.drive(m, reg),
                    _ => {}
                }
                if !self.nodes[m].status.is_final() {
                    all_final = false;
                }
            }
            if !all_final {
                return (false, changed);
            }
        }
        (true, changed)
    }

    fn failed_before(&self, idx: NodeIdx) -> bool {
        let plan = &self.plan;
        match plan.stage_of(idx) {
            Some(s) if s != idx => plan
                .descendants(s)
                .into_iter()
                .any(|i| !plan.node(i).in_rollback && self.nodes[i].status == Status::Failed),
            _ => flat(&plan.node(ROOT).children).any(|s| self.nodes[s].status == Status::Failed),
        }
    }

    fn start_node(&mut self, m: NodeIdx, reg: &Registry) {
        let plan = self.plan.clone();
        let node = plan.node(m);
        let when = node.when.clone().unwrap_or_default();
        let gate = if node.in_rollback && node.when.is_none() { StatusGate::All } else { when.status };
        let failed = self.failed_before(m);
        let mut run = match gate {
            StatusGate::Success => !failed,
            StatusGate::Failure => failed,
            StatusGate::All => true,
        };
        if !run {
            let why = if failed { "an earlier step or stage failed" } else { "nothing before failed" };
            self.skip(m, format!("skipped: {why}"));
            return;
        }
        if let Some(cond) = when.condition.as_deref() {
            let verdict = Condition::parse(cond)
                .map_err(|e| e.to_string())
                .and_then(|c| c.eval(&ExecContext::new(self, m)).map_err(|e| e.to_string()));
            match verdict {
                Ok(v) => run = v,
                Err(e) => {
                    let msg = format!("when condition {cond:?}: {e}");
                    if node.is_step() {
                        self.nodes[m].started_ms = Some(self.now);
                        self.fail_step(m, "Unknown", msg);
                    } else {
                        self.nodes[m].started_ms = Some(self.now);
                        self.fail_container(m, msg);
                    }
                    return;
                }
            }
            if !run {
                self.skip(m, format!("skipped: condition {cond:?} is false"));
                return;
            }
        }
        match &node.kind {
            NodeKind::Stage { target: Some(t), stage_type } if stage_type == "Deployment" => {
                let key = t.lock_key(&self.meta.scope_path());
                self.nodes[m].started_ms = Some(self.now);
                self.set_status(
                    m,
                    Status::Queued,
                    format!("waiting for {} / {}", t.service, t.infrastructure),
                );
                self.effects.push(Effect::Acquire { node: m, key });
            }
            NodeKind::Stage { .. } | NodeKind::StepGroup | NodeKind::Pipeline => self.begin_container(m),
            NodeKind::Step { .. } => self.start_step(m, reg),
        }
    }

    fn begin_container(&mut self, c: NodeIdx) {
        let plan = self.plan.clone();
        let node = plan.node(c);
        if self.nodes[c].started_ms.is_none() {
            self.nodes[c].started_ms = Some(self.now);
        }
        self.nodes[c].variables.clear();
        for (name, value) in &node.variables {
            let v = Template::parse(value)
                .map_err(|e| e.to_string())
                .and_then(|t| t.eval(&ExecContext::new(self, c)).map_err(|e| e.to_string()));
            match v {
                Ok(v) => {
                    self.nodes[c].variables.insert(name.clone(), v.to_json());
                }
                Err(e) => {
                    self.fail_container(c, format!("variable {name}: {e}"));
                    return;
                }
            }
        }
        if let Some(t) = node.timeout_ms {
            self.nodes[c].deadline_ms = Some(self.now.saturating_add(t as i64));
        }
        self.set_status(c, Status::Running, String::new());
    }

    fn start_step(&mut self, m: NodeIdx, reg: &Registry) {
        let plan = self.plan.clone();
        let node = plan.node(m);
        let NodeKind::Step { step_type, spec } = &node.kind else { return };
        let st = &mut self.nodes[m];
        st.attempt += 1;
        st.task_id = None;
        st.task_spec = None;
        st.wait = None;
        st.deadline_ms = None;
        st.outputs.clear();
        if st.started_ms.is_none() {
            st.started_ms = Some(self.now);
        }
        if st.attempt > 1 {
            let n = st.attempt;
            self.note(m, format!("attempt {n}"));
        }
        let Some(ty) = reg.get(step_type).cloned() else {
            let known = reg.names().join(", ");
            self.fail_step(m, "Unknown", format!("unknown step type {step_type} (known: {known})"));
            return;
        };
        let rendered = {
            let ctx = ExecContext::new(self, m);
            let mut to_render = spec.clone();
            let mut deferred = Map::new();
            if let Json::Object(o) = &mut to_render {
                for f in ty.deferred_fields() {
                    if let Some(v) = o.remove(*f) {
                        deferred.insert((*f).to_string(), v);
                    }
                }
            }
            render_json(&to_render, &ctx).map(|mut r| {
                if let Json::Object(o) = &mut r {
                    o.extend(deferred);
                }
                r
            })
        };
        let rendered = match rendered {
            Ok(r) => r,
            Err(e) => {
                self.fail_step(m, "Unknown", e.to_string());
                return;
            }
        };
        let stage = plan.stage_of(m);
        // The stage's target (service, artifact, manifests, infrastructure,
        // connector) with expressions rendered as this step sees them.
        let target = match stage.map(|s| &plan.node(s).kind) {
            Some(NodeKind::Stage { target: Some(t), .. }) if ty.uses_target() => {
                match render_json(&t.context, &ExecContext::new(self, m)) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        self.fail_step(m, "Unknown", format!("service or infrastructure: {e}"));
                        return;
                    }
                }
            }
            _ => None,
        };
        let cx = StartContext {
            target: target.as_ref(),
            execution_id: &self.meta.id,
            pipeline: &plan.pipeline,
            stage: stage.map(|s| plan.node(s).identifier.as_str()).unwrap_or(""),
            step: &node.identifier,
        };
        match ty.start(&rendered, &cx) {
            Ok(StepStart::Task { kind, params }) => {
                let timeout_ms = node.timeout_ms.unwrap_or(0);
                let spec = pb::TaskSpec {
                    kind,
                    params_json: params.to_string(),
                    selectors: plan.selectors_for(m),
                    scope: Some(self.meta.scope()),
                    timeout_ms,
                    queue_timeout_ms: timeout_ms,
                    delegate_id: String::new(),
                };
                let task_id = TaskId::new();
                let st = &mut self.nodes[m];
                st.task_id = Some(task_id.to_string());
                st.tasks.push(task_id.to_string());
                st.task_spec = Some(task_spec_json(&spec));
                self.set_status(m, Status::Running, String::new());
                self.mark(m);
                self.effects.push(Effect::Submit { task_id, spec });
            }
            Ok(StepStart::Wait { duration_ms }) => {
                self.wait(m, Wait::Timer, Some(duration_ms));
            }
            Ok(StepStart::Approval) => {
                let t = node.timeout_ms.unwrap_or(DEFAULT_APPROVAL_TIMEOUT_MS);
                self.wait(m, Wait::Approval, Some(t));
            }
            Ok(StepStart::Barrier { barrier }) => {
                if !plan.barriers.iter().any(|b| b.identifier == barrier) {
                    self.fail_step(
                        m,
                        "Unknown",
                        format!("barrier {barrier:?} is not declared in flowControl"),
                    );
                    return;
                }
                self.wait(m, Wait::Barrier { barrier }, node.timeout_ms);
            }
            Err(e) => self.fail_step(m, "Unknown", e.0),
        }
    }

    fn wait(&mut self, m: NodeIdx, wait: Wait, after_ms: Option<u64>) {
        let st = &mut self.nodes[m];
        st.wait = Some(wait);
        st.deadline_ms = after_ms.map(|d| self.now.saturating_add(d as i64));
        self.mark(m);
        self.set_status(m, Status::Waiting, String::new());
    }

    fn fail_step(&mut self, m: NodeIdx, error_type: &str, message: String) {
        self.nodes[m].failure =
            Some(Failure { error_type: error_type.to_string(), message: message.clone() });
        self.mark(m);
        let action = match self.plan.strategy_for(m, error_type) {
            Some(s) => {
                let a = s.action.clone();
                self.note(m, format!("{error_type}: {message} → failure strategy {}", a.name()));
                a
            }
            None => Action::MarkAsFailure,
        };
        self.apply_action(m, action);
    }

    fn apply_action(&mut self, m: NodeIdx, action: Action) {
        let in_rollback = self.plan.node(m).in_rollback;
        let action = match action {
            Action::StageRollback | Action::PipelineRollback | Action::ManualIntervention { .. }
                if in_rollback =>
            {
                Action::MarkAsFailure
            }
            a => a,
        };
        let msg = self.nodes[m].failure.as_ref().map(|f| f.message.clone()).unwrap_or_default();
        match action {
            Action::Ignore => self.set_status(m, Status::IgnoreFailed, msg),
            Action::MarkAsSuccess => self.set_status(m, Status::Succeeded, "marked as success".into()),
            Action::MarkAsFailure => self.set_status(m, Status::Failed, msg),
            Action::Abort => {
                self.set_status(m, Status::Failed, msg.clone());
                let path = self.plan.node(m).path.clone();
                self.abort_all(format!("aborted by the failure strategy of {path}: {msg}"));
            }
            Action::StageRollback => {
                self.set_status(m, Status::Failed, msg);
                if let Some(s) = self.plan.stage_of(m) {
                    self.request_rollback(s);
                }
            }
            Action::PipelineRollback => {
                self.set_status(m, Status::Failed, msg);
                if let Some(s) = self.plan.stage_of(m) {
                    self.request_rollback(s);
                }
                self.request_rollback(ROOT);
            }
            Action::Retry { count, intervals_ms, on_retry_failure } => {
                let retries_done = self.nodes[m].attempt.saturating_sub(1);
                if retries_done < count {
                    let pause = intervals_ms
                        .get((retries_done as usize).min(intervals_ms.len().saturating_sub(1)))
                        .copied()
                        .unwrap_or(0);
                    self.note(m, format!("retry {} of {count} in {} ms", retries_done + 1, pause));
                    self.wait(m, Wait::Retry, Some(pause));
                } else {
                    self.apply_action(m, *on_retry_failure);
                }
            }
            Action::ManualIntervention { timeout_ms, on_timeout } => {
                self.wait(m, Wait::Intervention { on_timeout: *on_timeout }, Some(timeout_ms));
            }
        }
    }

    fn request_rollback(&mut self, c: NodeIdx) {
        if self.nodes[c].rollback == Rollback::None {
            self.nodes[c].rollback = Rollback::Requested;
            self.mark(c);
        }
    }

    fn skip(&mut self, m: NodeIdx, why: String) {
        for d in self.plan.descendants(m) {
            if self.nodes[d].status == Status::NotStarted {
                self.nodes[d].status = Status::Skipped;
                self.mark(d);
            }
        }
        self.note(m, why.clone());
        self.set_status(m, Status::Skipped, why);
    }

    fn fail_container(&mut self, c: NodeIdx, message: String) {
        self.nodes[c].failure = Some(Failure { error_type: "Unknown".into(), message: message.clone() });
        self.release_lock(c);
        for d in self.plan.descendants(c) {
            if self.nodes[d].status == Status::NotStarted {
                self.nodes[d].status = Status::Skipped;
                self.mark(d);
            }
        }
        self.set_status(c, Status::Failed, message.clone());
        if c == ROOT {
            self.set_exec(ExecStatus::Failed, message);
        }
    }

    fn timeout_container(&mut self, c: NodeIdx) {
        let took = self.nodes[c].started_ms.map(|s| self.now - s).unwrap_or(0);
        let msg = format!("{} timed out after {} ms", self.plan.node(c).kind_name(), took);
        for d in self.plan.descendants(c) {
            self.stop_node(
                d,
                Status::Failed,
                Some(Failure { error_type: "Timeout".into(), message: msg.clone() }),
            );
        }
        self.nodes[c].failure = Some(Failure { error_type: "Timeout".into(), message: msg.clone() });
        self.release_lock(c);
        self.set_status(c, Status::Failed, msg.clone());
        if c == ROOT {
            self.set_exec(ExecStatus::Failed, msg);
        }
    }

    /// Ends an unfinished node as `status` (cancelling its task); not-started
    /// nodes are left as they are.
    fn stop_node(&mut self, d: NodeIdx, status: Status, failure: Option<Failure>) {
        let st = self.nodes[d].status;
        if st.is_final() || st == Status::NotStarted {
            return;
        }
        if st == Status::Running
            && let Some(t) = self.nodes[d].task_id.as_deref().and_then(|t| t.parse::<TaskId>().ok())
        {
            self.effects.push(Effect::Cancel { task_id: t });
        }
        self.release_lock(d);
        if failure.is_some() {
            self.nodes[d].failure = failure;
        }
        self.set_status(d, status, String::new());
    }

    fn abort_all(&mut self, reason: String) {
        for d in (0..self.nodes.len()).rev() {
            self.stop_node(d, Status::Aborted, None);
        }
        self.set_exec(ExecStatus::Aborted, reason);
    }

    fn release_lock(&mut self, c: NodeIdx) {
        if let NodeKind::Stage { target: Some(t), stage_type } = &self.plan.node(c).kind
            && stage_type == "Deployment"
            && self.nodes[c].status.is_active()
        {
            let key = t.lock_key(&self.meta.scope_path());
            self.effects.push(Effect::Release { node: c, key });
        }
    }

    fn finish_container(&mut self, c: NodeIdx) {
        let plan = self.plan.clone();
        let node = plan.node(c);
        let failed = flat(&node.children).any(|i| self.nodes[i].status == Status::Failed)
            || self.nodes[c].rollback == Rollback::Done;
        self.release_lock(c);
        let status = if failed { Status::Failed } else { Status::Succeeded };
        let msg =
            if self.nodes[c].rollback == Rollback::Done { "rolled back".to_string() } else { String::new() };
        self.set_status(c, status, msg);
        if c == ROOT {
            let reason = if failed { self.first_failure() } else { String::new() };
            self.set_exec(if failed { ExecStatus::Failed } else { ExecStatus::Succeeded }, reason);
        }
    }

    fn first_failure(&self) -> String {
        (0..self.nodes.len())
            .filter(|&i| self.plan.node(i).is_step() && self.nodes[i].status == Status::Failed)
            .filter_map(|i| {
                let f = self.nodes[i].failure.as_ref()?;
                Some(format!("{}: {} ({})", self.plan.node(i).path, f.message, f.error_type))
            })
            .next()
            .unwrap_or_else(|| "a stage failed".into())
    }

    /// Releases or fails barrier waits. Returns whether anything changed.
    fn check_barriers(&mut self) -> bool {
        let plan = self.plan.clone();
        let mut changed = false;
        for b in &plan.barriers {
            let members: Vec<NodeIdx> = (0..plan.nodes.len())
                .filter(|&i| {
                    plan.node(i).step_type() == Some("Barrier")
                        && matches!(&plan.node(i).kind, NodeKind::Step { spec, .. }
                            if spec.get("barrierRef").and_then(Json::as_str) == Some(b.identifier.as_str()))
                })
                .collect();
            let waiting: Vec<NodeIdx> = members
                .iter()
                .copied()
                .filter(|&i| {
                    self.nodes[i].status == Status::Waiting
                        && matches!(&self.nodes[i].wait, Some(Wait::Barrier { .. }))
                })
                .collect();
            if waiting.is_empty() {
                continue;
            }
            let dead = members
                .iter()
                .find(|&&i| self.nodes[i].status.is_final() && self.nodes[i].status != Status::Succeeded);
            if let Some(&d) = dead {
                let why = format!("barrier {}: {} will not reach it", b.identifier, plan.node(d).path);
                for w in waiting {
                    self.fail_step(w, "Unknown", why.clone());
                }
                changed = true;
            } else if members
                .iter()
                .all(|&i| waiting.contains(&i) || self.nodes[i].status == Status::Succeeded)
            {
                for w in waiting {
                    self.set_status(w, Status::Succeeded, format!("barrier {} reached by all", b.identifier));
                }
                changed = true;
            }
        }
        changed
    }

    // ---- bookkeeping ----------------------------------------------------------

    fn mark(&mut self, idx: NodeIdx) {
        self.dirty.insert(idx);
    }

    fn note(&mut self, idx: NodeIdx, note: String) {
        self.nodes[idx].notes.push(note);
        self.mark(idx);
    }

    fn emit(&mut self, idx: NodeIdx, message: String) {
        let n = self.plan.node(idx);
        self.effects.push(Effect::Event(Event {
            path: n.path.clone(),
            kind: n.kind_name(),
            status: self.nodes[idx].status,
            message,
            at_ms: self.now,
        }));
    }

    fn set_status(&mut self, idx: NodeIdx, status: Status, message: String) {
        let st = &mut self.nodes[idx];
        if st.status == status {
            return;
        }
        st.status = status;
        if status.is_final() {
            st.ended_ms = Some(self.now);
            st.deadline_ms = None;
            st.wait = None;
        } else if st.started_ms.is_none() && status != Status::NotStarted {
            st.started_ms = Some(self.now);
        }
        if status != Status::Waiting {
            st.wait = None;
        }
        self.mark(idx);
        self.emit(idx, message);
    }

    fn set_exec(&mut self, status: ExecStatus, reason: String) {
        if self.state.status == status {
            return;
        }
        self.state.status = status;
        if status.is_final() {
            self.state.ended_ms = Some(self.now);
            if self.state.reason.is_empty() {
                self.state.reason = reason.clone();
            }
        }
        self.dirty_exec = true;
        self.effects.push(Effect::Event(Event {
            path: String::new(),
            kind: "execution",
            status: match status {
                ExecStatus::Running => Status::Running,
                ExecStatus::Paused => Status::Waiting,
                ExecStatus::Succeeded => Status::Succeeded,
                ExecStatus::Failed => Status::Failed,
                ExecStatus::Aborted => Status::Aborted,
            },
            message: if status == ExecStatus::Paused { "paused".into() } else { reason },
            at_ms: self.now,
        }));
    }
}

/// Makes data from outside the pipeline's own YAML (step outputs, trigger
/// payloads) inert as expressions: `<+` becomes `< +`. Without this, a payload
/// field such as a commit message holding `<+secrets.getValue("env:X")>`, once
/// rendered into a script, would make the delegate resolve a secret the
/// pipeline author never referenced.
pub fn defuse(v: Json) -> Json {
    match v {
        Json::String(s) if s.contains("<+") => Json::String(s.replace("<+", "< +")),
        Json::Array(a) => Json::Array(a.into_iter().map(defuse).collect()),
        Json::Object(m) => Json::Object(defuse_map(m)),
        other => other,
    }
}

fn defuse_map(m: Map<String, Json>) -> Map<String, Json> {
    m.into_iter().map(|(k, v)| (k, defuse(v))).collect()
}

/// The stored form of a submitted task spec.
pub fn task_spec_json(spec: &pb::TaskSpec) -> Json {
    json!({
        "kind": spec.kind,
        "paramsJson": spec.params_json,
        "selectors": spec.selectors,
        "timeoutMs": spec.timeout_ms,
        "queueTimeoutMs": spec.queue_timeout_ms,
    })
}

/// Rebuilds a task spec from [`task_spec_json`] and the execution's scope.
pub fn task_spec_from_json(v: &Json, scope: pb::Scope) -> Option<pb::TaskSpec> {
    Some(pb::TaskSpec {
        kind: v.get("kind")?.as_str()?.to_string(),
        params_json: v.get("paramsJson")?.as_str()?.to_string(),
        selectors: v
            .get("selectors")?
            .as_array()?
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        scope: Some(scope),
        timeout_ms: v.get("timeoutMs").and_then(Json::as_u64).unwrap_or(0),
        queue_timeout_ms: v.get("queueTimeoutMs").and_then(Json::as_u64).unwrap_or(0),
        delegate_id: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::pipeline::plan::tests::PlanBuilder;
    use crate::pipeline::plan::{Barrier, Strategy, When};

    fn meta() -> Meta {
        Meta {
            id: "e1".into(),
            account: "default".into(),
            org: "default".into(),
            project: "default".into(),
            pipeline: "p".into(),
            sequence_id: 7,
            trigger: json!({"type": "Manual"}),
            triggered_by: "admin".into(),
            inputs: BTreeMap::new(),
            created_ms: 0,
        }
    }

    struct Run {
        e: Execution,
        reg: Registry,
        now: i64,
    }

    impl Run {
        fn new(b: PlanBuilder) -> Run {
            let mut r =
                Run { e: Execution::new(meta(), Arc::new(b.plan)), reg: Registry::builtin(), now: 1000 };
            r.e.start(r.now, &r.reg);
            r
        }

        /// Submitted tasks since the last call: (node path, task id, spec).
        fn submitted(&mut self) -> Vec<(String, String, pb::TaskSpec)> {
            let fx = self.e.take_effects();
            let mut out = vec![];
            for f in fx {
                if let Effect::Submit { task_id, spec } = f {
                    let (_, idx) = self.e.running_tasks().find(|(t, _)| *t == task_id.to_string()).unwrap();
                    out.push((self.e.plan.node(idx).path.clone(), task_id.to_string(), spec));
                }
            }
            out
        }

        fn paths(&mut self) -> Vec<String> {
            self.submitted().into_iter().map(|(p, ..)| p).collect()
        }

        fn finish(&mut self, path: &str, ok: bool, error_type: &str, outputs: &[(&str, &str)]) {
            let idx = self.e.plan.find(path).unwrap();
            let task = self.e.nodes[idx].task_id.clone().unwrap_or_else(|| panic!("{path} has no task"));
            let done = TaskDone {
                state: if ok { pb::TaskState::Succeeded } else { pb::TaskState::Failed },
                error_type: error_type.into(),
                reason: if ok { String::new() } else { "exit 1".into() },
                outputs: outputs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                delegate: Some("d1".into()),
            };
            self.now += 10;
            self.e.task_finished(&task, &done, self.now, &self.reg);
        }

        fn status(&self, path: &str) -> Status {
            self.e.nodes[self.e.plan.find(path).unwrap()].status
        }

        fn advance_time(&mut self, ms: i64) {
            self.now += ms;
            self.e.tick(self.now, &self.reg);
        }
    }

    fn retry(count: u32, then: Action) -> Strategy {
        Strategy {
            errors: vec!["AllErrors".into()],
            action: Action::Retry { count, intervals_ms: vec![100], on_retry_failure: Box::new(then) },
        }
    }

    fn on_all(action: Action) -> Strategy {
        Strategy { errors: vec!["AllErrors".into()], action }
    }

    #[test]
    fn steps_run_in_order_and_the_pipeline_succeeds() {
        let mut b = PlanBuilder::new();
        let s = b.stage("s");
        b.noop(s, "a");
        b.parallel_steps(s, &["b", "c"]);
        let t = b.stage("t");
        b.noop(t, "d");
        let mut r = Run::new(b);
        assert_eq!(r.paths(), vec!["s.a"]);
        r.finish("s.a", true, "", &[]);
        let mut par = r.paths();
        par.sort();
        assert_eq!(par, vec!["s.b", "s.c"]);
        r.finish("s.b", true, "", &[]);
        assert!(r.paths().is_empty(), "t waits for the whole parallel block");
        r.finish("s.c", true, "", &[]);
        assert_eq!(r.paths(), vec!["t.d"]);
        r.finish("t.d", true, "", &[]);
        assert_eq!(r.e.state.status, ExecStatus::Succeeded);
        assert_eq!(r.status("s"), Status::Succeeded);
    }

    #[test]
    fn an_unhandled_failure_skips_the_rest_and_fails_the_pipeline() {
        let mut b = PlanBuilder::new();
        let s = b.stage("s");
        b.noop(s, "a");
        b.noop(s, "b");
        let always = b.noop(s, "cleanup");
        b.plan.nodes[always].when = Some(When { status: StatusGate::Failure, condition: None });
        let t = b.stage("t");
        b.noop(t, "d");
        let mut r = Run::new(b);
        r.paths();
        r.finish("s.a", false, "Unknown", &[]);
        assert_eq!(r.status("s.b"), Status::Skipped);
        assert_eq!(r.paths(), vec!["s.cleanup"], "a step gated on failure runs");
        r.finish("s.cleanup", true, "", &[]);
        assert_eq!(r.status("s"), Status::Failed);
        assert_eq!(r.status("t"), Status::Skipped);
        assert_eq!(r.e.state.status, ExecStatus::Failed);
        assert!(r.e.state.reason.contains("s.a"), "{}", r.e.state.reason);
    }

    #[test]
    fn retry_then_success_uses_a_new_task() {
        let mut b = PlanBuilder::new();
        let s = b.stage("s");
        let a = b.noop(s, "a");
        b.plan.nodes[a].failure_strategies = vec![retry(2, Action::MarkAsFailure)];
        let mut r = Run::new(b);
        let first = r.submitted()[0].1.clone();
        r.finish("s.a", false, "Unknown", &[]);
        assert_eq!(r.status("s.a"), Status::Waiting);
        assert!(r.submitted().is_empty(), "no retry before the interval");
        r.advance_time(100);
        let second = r.submitted()[0].1.clone();
        assert_ne!(first, second);
        assert_eq!(r.e.nodes[a].attempt, 2);
        r.finish("s.a", true, "", &[]);
        assert_eq!(r.e.state.status, ExecStatus::Succeeded);
        assert_eq!(r.e.nodes[a].tasks, vec![first, second]);
    }

    #[test]
    fn retries_exhausted_apply_the_fallback() {
        let mut b = PlanBuilder::new();
        let s = b.stage("s");
        let a = b.noop(s, "a");
        b.plan.nodes[a].failure_strategies = vec![retry(1, Action::Ignore)];
        b.noop(s, "b");
        let mut r = Run::new(b);
        r.paths();
        r.finish("s.a", false, "Unknown", &[]);
        r.advance_time(100);
        r.paths();
        r.finish("s.a", false, "Unknown", &[]);
        assert_eq!(r.status("s.a"), Status::IgnoreFailed);
        assert_eq!(r.paths(), vec!["s.b"]);
    }

    #[test]
    fn strategies_match_error_types() {
        let mut b = PlanBuilder::new();
        let s = b.stage("s");
        let a = b.noop(s, "a");
        b.plan.nodes[a].failure_strategies =
            vec![Strategy { errors: vec!["Timeout".into()], action: Action::MarkAsSuccess }];
        b.plan.nodes[s].failure_strategies = vec![on_all(Action::Ignore)];
        let c = b.noop(s, "c");
        let _ = c;
        let mut r = Run::new(b);
        r.paths();
        r.finish("s.a", false, "Timeout", &[]);
        assert_eq!(r.status("s.a"), Status::Succeeded, "step strategy for Timeout");
        r.paths();
        r.finish("s.c", false, "Connectivity", &[]);
        assert_eq!(r.status("s.c"), Status::IgnoreFailed, "falls back to the stage's strategy");
    }

    #[test]
    fn stage_rollback_runs_group_then_stage_rollback_steps() {
        let mut b = PlanBuilder::new();
        let s = b.stage("s");
        let g1 = b.group(s, "g1");
        b.noop(g1, "x");
        b.rollback_step(g1, "undo_x");
        let g2 = b.group(s, "g2");
        let y = b.noop(g2, "y");
        b.rollback_step(g2, "undo_y");
        b.noop(s, "never");
        b.rollback_step(s, "undo_stage");
        b.plan.nodes[y].failure_strategies = vec![on_all(Action::StageRollback)];
        let t = b.stage("t");
        b.noop(t, "z");
        let mut r = Run::new(b);
        r.paths();
        r.finish("s.g1.x", true, "", &[]);
        r.paths();
        r.finish("s.g2.y", false, "Unknown", &[]);
        assert_eq!(r.status("s.never"), Status::Skipped);
        let mut order = vec![];
        for _ in 0..3 {
            let p = r.paths();
            assert_eq!(p.len(), 1, "rollback steps run one at a time: {p:?}");
            r.finish(&p[0], true, "", &[]);
            order.push(p[0].clone());
        }
        assert_eq!(order, vec!["s.g2.rollback.undo_y", "s.g1.rollback.undo_x", "s.rollback.undo_stage"]);
        assert_eq!(r.status("s"), Status::Failed);
        assert_eq!(r.e.nodes[s].rollback, Rollback::Done);
        assert_eq!(r.status("t"), Status::Skipped);
        assert_eq!(r.e.state.status, ExecStatus::Failed);
    }

    #[test]
    fn pipeline_rollback_rolls_back_earlier_stages_latest_first() {
        let mut b = PlanBuilder::new();
        let s1 = b.stage("one");
        b.noop(s1, "a");
        b.rollback_step(s1, "undo1");
        let s2 = b.stage("two");
        b.noop(s2, "b");
        b.rollback_step(s2, "undo2");
        let s3 = b.stage("three");
        let c = b.noop(s3, "c");
        b.rollback_step(s3, "undo3");
        b.plan.nodes[c].failure_strategies = vec![on_all(Action::PipelineRollback)];
        let mut r = Run::new(b);
        for p in ["one.a", "two.b"] {
            r.paths();
            r.finish(p, true, "", &[]);
        }
        r.paths();
        r.finish("three.c", false, "Unknown", &[]);
        let mut order = vec![];
        for _ in 0..3 {
            let p = r.paths();
            assert_eq!(p.len(), 1, "{p:?}");
            r.finish(&p[0], true, "", &[]);
            order.push(p[0].clone());
        }
        assert_eq!(order, vec!["three.rollback.undo3", "two.rollback.undo2", "one.rollback.undo1"]);
        assert_eq!(r.e.state.status, ExecStatus::Failed);
        assert_eq!(r.status("one"), Status::Succeeded, "a rolled-back stage keeps its own outcome");
        assert_eq!(r.e.nodes[s1].rollback, Rollback::Done);
        assert_eq!(r.e.nodes[s2].rollback, Rollback::Done);
    }

    #[test]
    fn manual_intervention_waits_then_takes_the_operator_choice_or_times_out() {
        let mut b = PlanBuilder::new();
        let s = b.stage("s");
        let a = b.noop(s, "a");
        let c = b.noop(s, "c");
        let mi = |on| Action::ManualIntervention { timeout_ms: 5000, on_timeout: Box::new(on) };
        b.plan.nodes[a].failure_strategies = vec![on_all(mi(Action::MarkAsFailure))];
        b.plan.nodes[c].failure_strategies = vec![on_all(mi(Action::Ignore))];
        let mut r = Run::new(b);
        r.paths();
        r.finish("s.a", false, "Unknown", &[]);
        assert_eq!(r.status("s.a"), Status::Waiting);
        let err = r.e.intervene(Some("s.a"), "Bogus", "admin", r.now, &r.reg).unwrap_err();
        assert!(matches!(err, CommandError::Invalid(_)));
        r.e.intervene(Some("s.a"), "Retry", "admin", r.now, &r.reg).unwrap();
        assert_eq!(r.paths(), vec!["s.a"]);
        r.finish("s.a", true, "", &[]);
        r.paths();
        r.finish("s.c", false, "Unknown", &[]);
        r.advance_time(4999);
        assert_eq!(r.status("s.c"), Status::Waiting);
        r.advance_time(1);
        assert_eq!(r.status("s.c"), Status::IgnoreFailed, "default action on timeout");
        assert_eq!(r.e.state.status, ExecStatus::Succeeded);
    }

    #[test]
    fn abort_action_cancels_running_siblings() {
        let mut b = PlanBuilder::new();
        let s = b.stage("s");
        let v = b.parallel_steps(s, &["a", "b"]);
        b.plan.nodes[v[0]].failure_strategies = vec![on_all(Action::Abort)];
        let mut r = Run::new(b);
        r.paths();
        let b_task = r.e.nodes[v[1]].task_id.clone().unwrap();
        r.finish("s.a", false, "Unknown", &[]);
        let cancels: Vec<String> =
            r.e.take_effects()
                .into_iter()
                .filter_map(|f| match f {
                    Effect::Cancel { task_id } => Some(task_id.to_string()),
                    _ => None,
                })
                .collect();
        assert_eq!(cancels, vec![b_task]);
        assert_eq!(r.e.state.status, ExecStatus::Aborted);
        assert_eq!(r.status("s.b"), Status::Aborted);
    }

    fn approval_plan(timeout_ms: Option<u64>) -> PlanBuilder {
        let mut b = PlanBuilder::new();
        let s = b.stage("s");
        let g = b.step(
            s,
            "gate",
            "HarnessApproval",
            json!({"approvalMessage": "ok?", "approverInputs": [{"name": "ticket", "defaultValue": "none"}]}),
        );
        b.plan.nodes[g].timeout_ms = timeout_ms;
        b.step(s, "after", "ShellScript", json!({"source": {"spec": {"script": "echo <+execution.steps.gate.output.approverInputs.ticket>"}}}));
        b
    }

    #[test]
    fn approval_records_the_decision_and_inputs() {
        let mut r = Run::new(approval_plan(None));
        assert_eq!(r.status("s.gate"), Status::Waiting);
        let d = Decision {
            approved: true,
            by: "alice".into(),
            comment: "go".into(),
            inputs: [("ticket".to_string(), json!("CHG-1"))].into_iter().collect(),
            at_ms: r.now,
        };
        let bad = Decision { inputs: [("nope".to_string(), json!("x"))].into_iter().collect(), ..d.clone() };
        assert!(r.e.decide(None, bad, r.now, &r.reg).is_err(), "unknown approver input");
        assert_eq!(r.e.decide(None, d, r.now, &r.reg).unwrap(), "s.gate");
        let sub = r.submitted();
        assert!(sub[0].2.params_json.contains("echo CHG-1"), "{}", sub[0].2.params_json);
        let out = &r.e.nodes[r.e.plan.find("s.gate").unwrap()].outputs;
        assert_eq!(out["approvedBy"], json!("alice"));
        assert_eq!(out["comment"], json!("go"));
    }

    #[test]
    fn approval_rejected_or_timed_out_fails_with_its_error_type() {
        let mut r = Run::new(approval_plan(None));
        let d = Decision {
            approved: false,
            by: "bob".into(),
            comment: "no".into(),
            inputs: Map::new(),
            at_ms: 0,
        };
        r.e.decide(Some("s.gate"), d, r.now, &r.reg).unwrap();
        let gate = r.e.plan.find("s.gate").unwrap();
        assert_eq!(r.e.nodes[gate].failure.as_ref().unwrap().error_type, "ApprovalRejection");
        assert_eq!(r.e.state.status, ExecStatus::Failed);

        let mut r = Run::new(approval_plan(Some(1000)));
        r.advance_time(1000);
        assert_eq!(r.e.nodes[gate].failure.as_ref().unwrap().error_type, "Timeout");
        assert_eq!(r.e.state.status, ExecStatus::Failed);
    }

    #[test]
    fn barrier_releases_when_all_parallel_stages_reach_it() {
        let mut b = PlanBuilder::new();
        b.plan.barriers = vec![Barrier { identifier: "sync".into(), name: "sync".into() }];
        let v = b.parallel_stages(&["x", "y"]);
        b.step(v[0], "bar", "Barrier", json!({"barrierRef": "sync"}));
        b.noop(v[0], "after_x");
        b.noop(v[1], "slow");
        b.step(v[1], "bar", "Barrier", json!({"barrierRef": "sync"}));
        let mut r = Run::new(b);
        assert_eq!(r.paths(), vec!["y.slow"]);
        assert_eq!(r.status("x.bar"), Status::Waiting);
        r.finish("y.slow", true, "", &[]);
        assert_eq!(r.status("x.bar"), Status::Succeeded);
        assert_eq!(r.status("y.bar"), Status::Succeeded);
        assert_eq!(r.paths(), vec!["x.after_x"]);
    }

    #[test]
    fn outputs_flow_into_later_steps_and_conditions() {
        let mut b = PlanBuilder::new();
        let s = b.stage("s");
        b.step(
            s,
            "build",
            "ShellScript",
            json!({"source": {"spec": {"script": "v=1.2"}}, "outputVariables": [{"name": "version", "type": "String", "value": "v"}]}),
        );
        let skip = b.noop(s, "skipme");
        b.plan.nodes[skip].when = Some(When {
            status: StatusGate::Success,
            condition: Some("<+execution.steps.build.output.outputVariables.version> == \"9\"".into()),
        });
        let t = b.stage("t");
        b.step(
            t,
            "use",
            "ShellScript",
            json!({"source": {"spec": {"script": "deploy <+pipeline.stages.s.spec.execution.steps.build.output.outputVariables.version> #<+pipeline.sequenceId>"}}}),
        );
        let mut r = Run::new(b);
        let sub = r.submitted();
        assert!(sub[0].2.params_json.contains("\"output_vars\":[\"v\"]"), "{}", sub[0].2.params_json);
        r.finish("s.build", true, "", &[("v", "1.2")]);
        assert_eq!(r.status("s.skipme"), Status::Skipped);
        let sub = r.submitted();
        assert!(sub[0].2.params_json.contains("deploy 1.2 #7"), "{}", sub[0].2.params_json);
    }

    #[test]
    fn outputs_cannot_smuggle_secret_references() {
        let mut b = PlanBuilder::new();
        let s = b.stage("s");
        b.step(
            s,
            "a",
            "ShellScript",
            json!({"source": {"spec": {"script": "x"}}, "outputVariables": [{"name": "o", "value": "o"}]}),
        );
        b.step(
            s,
            "b",
            "ShellScript",
            json!({"source": {"spec": {"script": "echo <+execution.steps.a.output.outputVariables.o>"}}}),
        );
        let mut r = Run::new(b);
        r.paths();
        r.finish("s.a", true, "", &[("o", "<+secrets.getValue(\"env:HOME\")>")]);
        let sub = r.submitted();
        assert!(!sub[0].2.params_json.contains("<+secrets"), "{}", sub[0].2.params_json);
        assert!(sub[0].2.params_json.contains("< +secrets"), "{}", sub[0].2.params_json);
    }

    #[test]
    fn bad_expression_fails_the_step_naming_it() {
        let mut b = PlanBuilder::new();
        let s = b.stage("s");
        b.step(
            s,
            "x",
            "ShellScript",
            json!({"source": {"spec": {"script": "echo <+pipeline.variables.nope>"}}}),
        );
        let r = Run::new(b);
        let f = r.e.nodes[2].failure.clone().unwrap();
        assert!(f.message.contains("pipeline.variables.nope"), "{}", f.message);
        assert_eq!(r.e.state.status, ExecStatus::Failed);
    }

    #[test]
    fn secret_references_reach_the_task_unresolved() {
        let mut b = PlanBuilder::new();
        let s = b.stage("s");
        b.step(
            s,
            "x",
            "ShellScript",
            json!({"source": {"spec": {"script": "echo <+secrets.getValue(\"env:TOKEN\")>"}}}),
        );
        let mut r = Run::new(b);
        let sub = r.submitted();
        assert!(
            sub[0].2.params_json.contains("<+secrets.getValue(\\\"env:TOKEN\\\")>"),
            "{}",
            sub[0].2.params_json
        );
    }

    #[test]
    fn pause_holds_new_work_and_resume_continues() {
        let mut b = PlanBuilder::new();
        let s = b.stage("s");
        b.noop(s, "a");
        b.noop(s, "b");
        let mut r = Run::new(b);
        r.paths();
        r.e.pause(r.now).unwrap();
        assert!(r.e.pause(r.now).is_err());
        r.finish("s.a", true, "", &[]);
        assert!(r.paths().is_empty(), "nothing starts while paused");
        r.e.resume(r.now, &r.reg).unwrap();
        assert_eq!(r.paths(), vec!["s.b"]);
    }

    #[test]
    fn restored_state_continues_exactly() {
        let mut b = PlanBuilder::new();
        let s = b.stage("s");
        b.noop(s, "a");
        b.step(s, "w", "Wait", json!({"duration": "1s"}));
        b.noop(s, "c");
        let mut r = Run::new(b);
        r.paths();
        r.finish("s.a", true, "", &[]);
        // Serialise and rebuild, as the store does.
        let nodes: Vec<NodeState> =
            r.e.nodes
                .iter()
                .map(|n| serde_json::from_str(&serde_json::to_string(n).unwrap()).unwrap())
                .collect();
        let state = serde_json::from_str(&serde_json::to_string(&r.e.state).unwrap()).unwrap();
        let mut e2 = Execution::restore(r.e.meta.clone(), r.e.plan.clone(), state, nodes);
        assert_eq!(e2.nodes, r.e.nodes);
        e2.tick(r.now + 1000, &r.reg);
        let fx = e2.take_effects();
        let submits = fx.iter().filter(|f| matches!(f, Effect::Submit { .. })).count();
        assert_eq!(submits, 1, "only the next step starts; finished ones never re-run");
        assert_eq!(e2.nodes[e2.plan.find("s.a").unwrap()].attempt, 1);
    }

    #[test]
    fn stage_timeout_fails_running_work_with_timeout() {
        let mut b = PlanBuilder::new();
        let s = b.stage("s");
        b.plan.nodes[s].timeout_ms = Some(500);
        b.noop(s, "a");
        let mut r = Run::new(b);
        r.paths();
        r.advance_time(500);
        assert_eq!(r.status("s"), Status::Failed);
        assert_eq!(r.e.nodes[2].failure.as_ref().unwrap().error_type, "Timeout");
        assert!(r.e.take_effects().iter().any(|f| matches!(f, Effect::Cancel { .. })));
    }

    /// Makes stage `s` a Deployment stage of `web` to `prod`/`k8s` with this context.
    fn deploy_to(b: &mut PlanBuilder, s: NodeIdx, context: serde_json::Value) {
        b.plan.nodes[s].kind = NodeKind::Stage {
            stage_type: "Deployment".into(),
            target: Some(crate::pipeline::plan::StageTarget {
                service: "web".into(),
                environment: "prod".into(),
                infrastructure: "k8s".into(),
                context,
                connector_selectors: vec![],
            }),
        };
    }

    #[test]
    fn deploy_steps_report_instances_per_target() {
        let mut b = PlanBuilder::new();
        let s = b.stage("s");
        deploy_to(&mut b, s, json!({"infra": {"namespace": "<+pipeline.sequenceId>"}}));
        b.noop(s, "a");
        b.noop(s, "b");
        let mut r = Run::new(b);
        let fx = r.e.take_effects();
        assert!(fx.iter().any(|f| matches!(f, Effect::Acquire { .. })), "{fx:?}");
        r.e.lock_granted(s, r.now, &r.reg);
        r.paths();
        let good = r#"[{"name":"pod-1","host":"node-a","status":"Running"}]"#;
        r.finish("s.a", true, "", &[(INSTANCES_OUTPUT, good), ("x", "1")]);
        let a = r.e.plan.find("s.a").unwrap();
        let fx = r.e.take_effects();
        let reported: Vec<_> = fx
            .iter()
            .filter_map(|f| match f {
                Effect::Instances { node, instances_json } => Some((*node, instances_json.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            reported,
            vec![(a, r#"[{"name":"pod-1","host":"node-a","status":"Running"}]"#.to_string())]
        );
        assert_eq!(r.e.nodes[a].outputs.get("x"), Some(&json!("1")));
        assert!(r.e.nodes[a].outputs.contains_key(INSTANCES_OUTPUT), "the step keeps its report");
        // A report that is not a list of instances is noted and dropped.
        r.finish("s.b", true, "", &[(INSTANCES_OUTPUT, "{oops")]);
        let b_idx = r.e.plan.find("s.b").unwrap();
        assert!(!r.e.take_effects().iter().any(|f| matches!(f, Effect::Instances { .. })));
        assert!(
            r.e.nodes[b_idx].notes.iter().any(|n| n.contains("instance report")),
            "{:?}",
            r.e.nodes[b_idx].notes
        );
    }

    #[test]
    fn only_steps_that_read_the_target_render_it() {
        let mut b = PlanBuilder::new();
        let s = b.stage("s");
        deploy_to(&mut b, s, json!({"infra": {"namespace": "<+pipeline.variables.missing>"}}));
        b.noop(s, "a");
        let mut r = Run::new(b);
        r.e.take_effects();
        r.e.lock_granted(s, r.now, &r.reg);
        // A Noop does not read the target, so a target that cannot render does not stop it.
        assert_eq!(r.paths(), vec!["s.a"]);
        assert_eq!(r.status("s.a"), Status::Running);
    }
}
