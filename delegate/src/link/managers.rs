//! Which manager address to dial next. A delegate may list several (replicas
//! of one manager, or one load-balanced name): it stays on the address that
//! works, moves to the next one when a connection fails or a session ends,
//! and backs off only after every address has failed in a row.

/// The manager addresses and where the delegate is in them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Managers {
    urls: Vec<String>,
    current: usize,
    /// Addresses that failed since the last session that was welcomed.
    failed_in_row: usize,
}

impl Managers {
    /// Addresses in order of preference; at least one.
    pub fn new(urls: Vec<String>) -> Managers {
        assert!(!urls.is_empty(), "at least one manager address");
        Managers { urls, current: 0, failed_in_row: 0 }
    }

    /// The address to dial now.
    pub fn current(&self) -> &str {
        &self.urls[self.current]
    }

    /// How many addresses there are.
    pub fn len(&self) -> usize {
        self.urls.len()
    }

    /// Always false: there is at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// A session on the current address was welcomed.
    pub fn welcomed(&mut self) {
        self.failed_in_row = 0;
    }

    /// The current address failed (or its session ended): moves to the next
    /// one. True when every address has failed in a row, i.e. it is time to
    /// back off before dialling again.
    pub fn failed(&mut self) -> bool {
        self.failed_in_row += 1;
        self.current = (self.current + 1) % self.urls.len();
        if self.failed_in_row >= self.urls.len() {
            self.failed_in_row = 0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(n: usize) -> Managers {
        Managers::new((0..n).map(|i| format!("https://m{i}:7443")).collect())
    }

    #[test]
    fn one_address_backs_off_after_every_failure() {
        let mut one = m(1);
        assert!(one.failed());
        assert!(one.failed());
        assert_eq!(one.current(), "https://m0:7443");
    }

    #[test]
    fn several_addresses_are_tried_in_turn_before_backing_off() {
        let mut three = m(3);
        assert!(!three.failed());
        assert_eq!(three.current(), "https://m1:7443");
        assert!(!three.failed());
        assert!(three.failed(), "all three failed: back off");
        assert_eq!(three.current(), "https://m0:7443", "and start the round again");
    }

    #[test]
    fn a_welcomed_session_starts_a_new_round() {
        let mut two = m(2);
        assert!(!two.failed());
        two.welcomed();
        // The replica it was on died: the other one is tried at once.
        assert!(!two.failed());
        assert_eq!(two.current(), "https://m0:7443");
        assert!(two.failed(), "both failed since the last welcome");
    }
}
