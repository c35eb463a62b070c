//! The concurrency guard: one running Deployment stage per service +
//! infrastructure, across executions; others wait in arrival order. Pure
//! bookkeeping: the engine rebuilds it from stage states on restart.

use std::collections::{HashMap, VecDeque};

use super::plan::NodeIdx;

/// A stage of an execution.
pub type Holder = (String, NodeIdx);

/// Lock holders and waiters by key.
#[derive(Debug, Default)]
pub struct Locks {
    held: HashMap<String, Holder>,
    waiting: HashMap<String, VecDeque<Holder>>,
}

impl Locks {
    /// Asks for `key`. True when granted at once; otherwise queued.
    pub fn acquire(&mut self, key: &str, who: Holder) -> bool {
        match self.held.get(key) {
            None => {
                self.held.insert(key.to_string(), who);
                true
            }
            Some(h) if *h == who => true,
            Some(_) => {
                let q = self.waiting.entry(key.to_string()).or_default();
                if !q.contains(&who) {
                    q.push_back(who);
                }
                false
            }
        }
    }

    /// Gives up `key` (held or waited for). Returns the next holder, if the lock
    /// passed to one.
    pub fn release(&mut self, key: &str, who: &Holder) -> Option<Holder> {
        if let Some(q) = self.waiting.get_mut(key) {
            q.retain(|w| w != who);
        }
        if self.held.get(key) != Some(who) {
            return None;
        }
        self.held.remove(key);
        let next = self.waiting.get_mut(key).and_then(VecDeque::pop_front)?;
        if self.waiting.get(key).is_some_and(VecDeque::is_empty) {
            self.waiting.remove(key);
        }
        self.held.insert(key.to_string(), next.clone());
        Some(next)
    }

    /// Who holds `key`.
    pub fn holder(&self, key: &str) -> Option<&Holder> {
        self.held.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(e: &str) -> Holder {
        (e.to_string(), 1)
    }

    #[test]
    fn one_holder_others_wait_in_order() {
        let mut l = Locks::default();
        assert!(l.acquire("k", h("a")));
        assert!(l.acquire("k", h("a")), "re-acquire by the holder is a no-op");
        assert!(!l.acquire("k", h("b")));
        assert!(!l.acquire("k", h("c")));
        assert!(l.acquire("other", h("d")), "keys are independent");
        assert_eq!(l.release("k", &h("a")), Some(h("b")));
        assert_eq!(l.holder("k"), Some(&h("b")));
        // A waiter giving up is removed from the queue.
        assert_eq!(l.release("k", &h("c")), None);
        assert_eq!(l.release("k", &h("b")), None);
        assert_eq!(l.holder("k"), None);
        assert!(l.acquire("k", h("e")));
    }
}
