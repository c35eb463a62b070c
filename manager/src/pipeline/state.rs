//! The durable state of an execution: one [`NodeState`] per plan node plus the
//! execution-wide [`ExecState`]. Everything here is serialised into the store
//! as it changes, so a restarted manager rebuilds each execution exactly.

use serde::{Deserialize, Serialize};

use super::plan::Action;

/// Where a node stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Status {
    /// Not reached yet.
    #[default]
    NotStarted,
    /// A Deployment stage waiting for its service + infrastructure to be free.
    Queued,
    /// Running (a step's task is out, or a container's children are running).
    Running,
    /// Waiting for a person, a timer or a barrier; see [`NodeState::wait`].
    Waiting,
    /// Done, successfully.
    Succeeded,
    /// Done, failed.
    Failed,
    /// Not run: its `when` said no, or the flow stopped before it.
    Skipped,
    /// Stopped by an abort.
    Aborted,
    /// Failed, and the failure was ignored by a failure strategy.
    IgnoreFailed,
}

impl Status {
    /// True once the node will not change any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Succeeded | Status::Failed | Status::Skipped | Status::Aborted | Status::IgnoreFailed
        )
    }

    /// True for outcomes that let the flow go on as if all went well.
    pub fn is_success(self) -> bool {
        matches!(self, Status::Succeeded | Status::IgnoreFailed)
    }

    /// True while work is in progress.
    pub fn is_active(self) -> bool {
        matches!(self, Status::Queued | Status::Running | Status::Waiting)
    }

    /// The name shown to users and stored in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::NotStarted => "NotStarted",
            Status::Queued => "Queued",
            Status::Running => "Running",
            Status::Waiting => "Waiting",
            Status::Succeeded => "Succeeded",
            Status::Failed => "Failed",
            Status::Skipped => "Skipped",
            Status::Aborted => "Aborted",
            Status::IgnoreFailed => "IgnoreFailed",
        }
    }
}

/// What a waiting node waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "for")]
pub enum Wait {
    /// A `Wait` step's timer.
    Timer,
    /// The pause before a retry.
    Retry,
    /// A manual approval.
    Approval,
    /// The other stages meeting at a barrier.
    #[serde(rename_all = "camelCase")]
    Barrier {
        /// Barrier identifier.
        barrier: String,
    },
    /// An operator's choice after a failure.
    #[serde(rename_all = "camelCase")]
    Intervention {
        /// What happens if nobody chooses in time.
        on_timeout: Action,
    },
}

/// Why a node failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// Error type, as failure strategies match it (`Timeout`, `DelegateRestart`, …).
    pub error_type: String,
    /// Human-readable reason.
    pub message: String,
}

/// Progress of a stage's (or the pipeline's) rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Rollback {
    /// No rollback.
    #[default]
    None,
    /// Asked for: start nothing new; roll back once running work settles.
    Requested,
    /// Rollback steps are running.
    Running,
    /// Rollback finished.
    Done,
}

/// A recorded approval decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// True when approved.
    pub approved: bool,
    /// Who decided.
    pub by: String,
    /// Their comment.
    #[serde(default)]
    pub comment: String,
    /// Values for the approval's `approverInputs`.
    #[serde(default)]
    pub inputs: serde_json::Map<String, serde_json::Value>,
    /// Unix ms.
    pub at_ms: i64,
}

/// The durable state of one plan node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    /// Where it stands.
    pub status: Status,
    /// Attempts started so far (steps; 0 before the first).
    #[serde(default)]
    pub attempt: u32,
    /// The task of the current attempt (steps that run on a delegate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Every task id this step ran, oldest first (for logs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<String>,
    /// The submitted task spec (JSON of `pb::TaskSpec` fields), kept so a manager
    /// that died between recording and submitting can submit the same task again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_spec: Option<serde_json::Value>,
    /// What a waiting node waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<Wait>,
    /// When a timer for this node fires (wait end, timeouts, retry pause), Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<i64>,
    /// Unix ms of the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<i64>,
    /// Unix ms of reaching a final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<i64>,
    /// Step outputs (`outputVariables`, `httpResponseCode`, approval details…).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub outputs: serde_json::Map<String, serde_json::Value>,
    /// Why it failed (kept when a strategy ignored or retried the failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// Name of the delegate that ran the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<String>,
    /// Notes for people: which strategy acted, why skipped, who intervened.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Rollback progress (stages and the pipeline).
    #[serde(default)]
    pub rollback: Rollback,
    /// Evaluated variables of a stage or the pipeline.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub variables: serde_json::Map<String, serde_json::Value>,
    /// Approval decision of an approval step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

/// Execution-wide status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ExecStatus {
    /// Created, or running.
    #[default]
    Running,
    /// Paused by an operator: nothing new starts.
    Paused,
    /// Finished, all well.
    Succeeded,
    /// Finished with a failure.
    Failed,
    /// Aborted.
    Aborted,
}

impl ExecStatus {
    /// True once the execution is over.
    pub fn is_final(self) -> bool {
        matches!(self, ExecStatus::Succeeded | ExecStatus::Failed | ExecStatus::Aborted)
    }

    /// The name shown to users and stored.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecStatus::Running => "Running",
            ExecStatus::Paused => "Paused",
            ExecStatus::Succeeded => "Succeeded",
            ExecStatus::Failed => "Failed",
            ExecStatus::Aborted => "Aborted",
        }
    }

    /// Parses [`ExecStatus::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Running" => ExecStatus::Running,
            "Paused" => ExecStatus::Paused,
            "Succeeded" => ExecStatus::Succeeded,
            "Failed" => ExecStatus::Failed,
            "Aborted" => ExecStatus::Aborted,
            _ => return None,
        })
    }
}

/// Execution-wide state that changes while it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExecState {
    /// Overall status.
    pub status: ExecStatus,
    /// Unix ms of the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<i64>,
    /// Why it ended as it did (abort reason, first failure).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}
