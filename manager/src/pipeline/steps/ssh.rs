//! SSH step types. Each turns its spec and the stage's target into one `ssh`
//! task for a delegate.

use super::Registry;

/// Registers the SSH step types.
pub fn register(r: &mut Registry) {
    let _ = r;
}
