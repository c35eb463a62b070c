//! A short-lived in-memory cache of read secrets, per backend and
//! `mount/path`, so a burst of tasks naming the same secret costs one read.
//! Never written to disk; entries are dropped when they expire. Failures are
//! never cached: a secret created after a `NotFound` is seen on the next read.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Entries beyond this are not added (the oldest expire first anyway); a
/// delegate never needs this many distinct secrets within one TTL.
pub const MAX_ENTRIES: usize = 4096;

/// A map whose entries live for `ttl` after insertion. Time is passed in, so
/// the logic is testable without sleeping.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// A cache keeping entries for `ttl` (zero: keeps nothing).
    pub fn new(ttl: Duration) -> Self {
        TtlCache { ttl, entries: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (Instant, V)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value stored for `key`, if it has not expired at `now`.
    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        let mut entries = self.lock();
        match entries.get(key) {
            Some((at, v)) if now.saturating_duration_since(*at) < self.ttl => Some(v.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Stores `value` for `key` as of `now`, dropping expired entries.
    pub fn insert(&self, key: K, value: V, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.lock();
        entries.retain(|_, (at, _)| now.saturating_duration_since(*at) < self.ttl);
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
            return;
        }
        entries.insert(key, (now, value));
    }

    /// Forgets everything (after the backend's token was refused, so that no
    /// value read with it outlives it).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Live and expired entries held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_the_ttl() {
        let c = TtlCache::new(Duration::from_secs(30));
        let t0 = Instant::now();
        c.insert("kv/app", 1, t0);
        assert_eq!(c.get(&"kv/app", t0 + Duration::from_secs(29)), Some(1));
        assert_eq!(c.get(&"kv/app", t0 + Duration::from_secs(30)), None, "expired at the TTL");
        assert!(c.is_empty(), "an expired entry is dropped when seen");
        assert_eq!(c.get(&"kv/other", t0), None);
    }

    #[test]
    fn insert_refreshes_and_sweeps() {
        let c = TtlCache::new(Duration::from_secs(10));
        let t0 = Instant::now();
        c.insert("a", 1, t0);
        c.insert("b", 2, t0 + Duration::from_secs(5));
        c.insert("a", 3, t0 + Duration::from_secs(12));
        assert_eq!(c.len(), 2, "b is still live");
        assert_eq!(c.get(&"a", t0 + Duration::from_secs(20)), Some(3));
        c.insert("c", 4, t0 + Duration::from_secs(16));
        assert_eq!(c.get(&"b", t0 + Duration::from_secs(16)), None);
        assert_eq!(c.len(), 2, "b was swept on insert");
        c.clear();
        assert!(c.is_empty());
    }

    #[test]
    fn zero_ttl_keeps_nothing() {
        let c = TtlCache::new(Duration::ZERO);
        let t0 = Instant::now();
        c.insert("a", 1, t0);
        assert_eq!(c.get(&"a", t0), None);
        assert!(c.is_empty());
    }

    #[test]
    fn size_is_bounded() {
        let c = TtlCache::new(Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..MAX_ENTRIES + 10 {
            c.insert(i, i, t0);
        }
        assert_eq!(c.len(), MAX_ENTRIES);
        c.insert(0, 7, t0);
        assert_eq!(c.get(&0, t0), Some(7), "an existing key is still updated");
    }
}
