//! What names one lease on the delegate: a task id plus the epoch the manager
//! offered it under. Every message about a lease carries both, so the key is the
//! pair, never the task id alone (a re-offered task gets a new epoch).

use std::fmt;

use dray_shared::ids::InvalidId;
use dray_shared::pb::LeaseRef;
use dray_shared::{Epoch, TaskId};

/// A task id and the epoch it was offered under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseKey {
    /// The task.
    pub task: TaskId,
    /// The fencing token of this offer.
    pub epoch: Epoch,
}

impl LeaseKey {
    /// Parses the `(task_id, epoch)` pair carried by a wire message.
    pub fn from_wire(task_id: &str, epoch: u64) -> Result<Self, InvalidId> {
        Ok(LeaseKey { task: task_id.parse()?, epoch: Epoch(epoch) })
    }

    /// The wire form used in `Hello.held` and heartbeats.
    pub fn to_ref(self) -> LeaseRef {
        LeaseRef { task_id: self.task.to_string(), epoch: self.epoch.0 }
    }
}

impl fmt::Display for LeaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.task, self.epoch)
    }
}
