//! The step-type registry: how each `type:` of step runs. The engine knows only
//! this trait; a platform adds `K8sRollingDeploy`, `EcsRollingDeploy`, `SshDeploy`…
//! by registering one more [`StepType`], without touching the engine.
//!
//! A step type turns the step's rendered `spec` into a [`StepStart`] (a task for a
//! delegate, a timer, an approval, a barrier, or an immediate result) and, for
//! task-backed steps, a finished task into a [`StepOutcome`].

use std::collections::BTreeMap;
use std::sync::Arc;

use dray_shared::expr::Context;

mod approval;
mod barrier;
mod ecs;
mod http;
mod k8s;
mod lambda;
mod noop;
mod shell;
mod ssh;
mod wait;

pub use approval::Approval;

/// What starting a step means.
#[derive(Debug, Clone, PartialEq)]
pub enum StepStart {
    /// Run a task of `kind` with `params` on a delegate.
    Task {
        /// Task kind (`shell`, `http`, `noop`, platform kinds…).
        kind: String,
        /// Kind-specific parameters (become `TaskSpec.params_json`).
        params: serde_json::Value,
    },
    /// Succeed after this long.
    Wait {
        /// Duration in ms.
        duration_ms: u64,
    },
    /// Wait for a manual approval.
    Approval,
    /// Wait until every stage with this barrier reaches it.
    Barrier {
        /// Barrier identifier.
        barrier: String,
    },
}

/// What a step may read when it starts, besides its own spec.
#[derive(Debug, Clone, Copy)]
pub struct StartContext<'a> {
    /// The stage's deployment target with expressions rendered: an object with
    /// `service`, `artifact`, `env`, `infra`, `connector` and `serviceVariables`.
    /// `None` outside Deployment stages with a service, and for step types
    /// that do not [`StepType::uses_target`].
    pub target: Option<&'a serde_json::Value>,
    /// The execution's id.
    pub execution_id: &'a str,
    /// The pipeline's identifier.
    pub pipeline: &'a str,
    /// The enclosing stage's identifier.
    pub stage: &'a str,
    /// The step's identifier.
    pub step: &'a str,
}

impl StartContext<'_> {
    /// A context with no target, for step types that need none (and tests).
    pub const EMPTY: StartContext<'static> =
        StartContext { target: None, execution_id: "", pipeline: "", stage: "", step: "" };

    /// The target, or an error naming the step type that needs one.
    pub fn require_target(&self, step_type: &str) -> Result<&serde_json::Value, StepError> {
        self.target.ok_or_else(|| {
            StepError(format!(
                "{step_type} runs only in a Deployment stage with a service, an environment and an infrastructure"
            ))
        })
    }
}

/// A finished task as a step type sees it.
#[derive(Debug, Clone)]
pub struct TaskOutcome<'a> {
    /// True when the task succeeded.
    pub succeeded: bool,
    /// Error type reported for a failure (may be empty).
    pub error_type: &'a str,
    /// Why it ended as it did.
    pub reason: &'a str,
    /// Outputs the delegate reported (already masked).
    pub outputs: &'a BTreeMap<String, String>,
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    /// Success with these outputs.
    Success(serde_json::Map<String, serde_json::Value>),
    /// Failure of a type failure strategies match.
    Failure {
        /// Error type.
        error_type: String,
        /// What went wrong.
        message: String,
        /// Outputs gathered anyway.
        outputs: serde_json::Map<String, serde_json::Value>,
    },
}

/// A step spec that cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StepError(pub String);

/// One step type.
pub trait StepType: Send + Sync {
    /// The `type:` value, e.g. `ShellScript`.
    fn type_name(&self) -> &'static str;

    /// Top-level `spec` fields rendered only when the step finishes (they read the
    /// step's own results, like an Http assertion), not when it starts.
    fn deferred_fields(&self) -> &'static [&'static str] {
        &[]
    }

    /// True for step types that read the stage's deployment target
    /// ([`StartContext::target`]); only for those is it rendered at start.
    fn uses_target(&self) -> bool {
        false
    }

    /// What to do, given the step's spec with expressions rendered and what
    /// else the step may read.
    fn start(&self, spec: &serde_json::Value, cx: &StartContext<'_>) -> Result<StepStart, StepError>;

    /// The outcome of a task-backed step. `ctx` resolves execution expressions for
    /// deferred fields. The default: success with the task's outputs as they are.
    fn finish(&self, spec: &serde_json::Value, task: &TaskOutcome<'_>, ctx: &dyn Context) -> StepOutcome {
        let _ = (spec, ctx);
        default_finish(task, |outputs| {
            outputs.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect()
        })
    }
}

/// Maps a task's success/failure to an outcome, building outputs with `outputs`.
pub fn default_finish(
    task: &TaskOutcome<'_>,
    outputs: impl FnOnce(&BTreeMap<String, String>) -> serde_json::Map<String, serde_json::Value>,
) -> StepOutcome {
    let out = outputs(task.outputs);
    if task.succeeded {
        StepOutcome::Success(out)
    } else {
        StepOutcome::Failure {
            error_type: if task.error_type.is_empty() {
                "Unknown".into()
            } else {
                task.error_type.to_string()
            },
            message: task.reason.to_string(),
            outputs: out,
        }
    }
}

/// Every step type the engine can run, by name.
#[derive(Clone, Default)]
pub struct Registry {
    types: BTreeMap<&'static str, Arc<dyn StepType>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.types.keys()).finish()
    }
}

impl Registry {
    /// The built-in types: `ShellScript`, `Http`, `Wait`, `HarnessApproval` (also
    /// `Approval`), `Barrier`, and `Noop` (a delegate round trip doing nothing; for
    /// checks and benchmarks).
    pub fn builtin() -> Self {
        let mut r = Registry::default();
        r.register(Arc::new(shell::ShellScript));
        r.register(Arc::new(http::Http));
        r.register(Arc::new(wait::Wait));
        r.register(Arc::new(approval::Approval::HARNESS));
        r.register(Arc::new(approval::Approval::SHORT));
        r.register(Arc::new(barrier::Barrier));
        r.register(Arc::new(noop::Noop));
        ssh::register(&mut r);
        k8s::register(&mut r);
        ecs::register(&mut r);
        lambda::register(&mut r);
        r
    }

    /// Adds (or replaces) a step type.
    pub fn register(&mut self, t: Arc<dyn StepType>) {
        self.types.insert(t.type_name(), t);
    }

    /// The type called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn StepType>> {
        self.types.get(name)
    }

    /// Every registered name.
    pub fn names(&self) -> Vec<&'static str> {
        self.types.keys().copied().collect()
    }
}

/// Reads a string field of a spec.
pub(crate) fn str_field<'a>(spec: &'a serde_json::Value, field: &str) -> Result<&'a str, StepError> {
    spec.get(field).and_then(|v| v.as_str()).ok_or_else(|| StepError(format!("spec.{field} is required")))
}

/// Parses a humantime duration field into ms.
pub(crate) fn duration_field(spec: &serde_json::Value, field: &str) -> Result<u64, StepError> {
    let s = str_field(spec, field)?;
    humantime::parse_duration(s.trim())
        .map(|d| d.as_millis() as u64)
        .map_err(|e| StepError(format!("spec.{field}: {s:?} is not a duration: {e}")))
}
