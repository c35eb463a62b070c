//! Generated protobuf and tonic code for package `dray.v1`. Only this module knows
//! prost types by their generated names; everything else converts at the edges.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("dray.v1");

/// Encoded `FileDescriptorSet` of every Dray proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/dray_descriptor.bin"));

impl TaskState {
    /// True for states a task never leaves.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded
                | TaskState::Failed
                | TaskState::Cancelled
                | TaskState::Lost
                | TaskState::Expired
        )
    }

    /// Lower-case name used in CLI output and JSON (`queued`, `running`, ...).
    pub fn short_name(self) -> &'static str {
        match self {
            TaskState::Unspecified => "unspecified",
            TaskState::Queued => "queued",
            TaskState::Offered => "offered",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
            TaskState::Lost => "lost",
            TaskState::Expired => "expired",
        }
    }

    /// Inverse of [`TaskState::short_name`].
    pub fn from_short_name(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => TaskState::Queued,
            "offered" => TaskState::Offered,
            "running" => TaskState::Running,
            "succeeded" => TaskState::Succeeded,
            "failed" => TaskState::Failed,
            "cancelled" => TaskState::Cancelled,
            "lost" => TaskState::Lost,
            "expired" => TaskState::Expired,
            _ => return None,
        })
    }
}

impl LeaseEventKind {
    /// Lower-case name used in CLI output (`offered`, `acknowledged`, ...).
    pub fn short_name(self) -> &'static str {
        match self {
            LeaseEventKind::Unspecified => "unspecified",
            LeaseEventKind::Offered => "offered",
            LeaseEventKind::Acknowledged => "acknowledged",
            LeaseEventKind::Rejected => "rejected",
            LeaseEventKind::Renewed => "renewed",
            LeaseEventKind::Lost => "lost",
            LeaseEventKind::Finished => "finished",
            LeaseEventKind::OfferExpired => "offer-expired",
            LeaseEventKind::StaleRefused => "stale-refused",
            LeaseEventKind::Cancelled => "cancelled",
        }
    }
}

impl Scope {
    /// `account/org/project` with empty trailing parts omitted.
    pub fn display(&self) -> String {
        let mut s = self.account.clone();
        for part in [&self.org, &self.project] {
            if part.is_empty() {
                break;
            }
            s.push('/');
            s.push_str(part);
        }
        s
    }

    /// True when a delegate scoped to `self` may serve work scoped to `task`:
    /// same account, and every level the delegate pins matches the task's.
    pub fn covers(&self, task: &Scope) -> bool {
        self.account == task.account
            && (self.org.is_empty() || self.org == task.org)
            && (self.project.is_empty() || (self.org == task.org && self.project == task.project))
    }
}
