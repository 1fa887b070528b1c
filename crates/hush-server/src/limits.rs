//! Failed-login rate limits (P320): per account and per source address, so neither one
//! attacker nor many can guess passwords online at speed. Memory is bounded: expired
//! entries are pruned, and the table has a hard cap.
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// Counts failures per key in fixed windows of `window_secs`.
pub struct FailureLimiter<K> {
    max_failures: u32,
    window_secs: i64,
    cap: usize,
    entries: Mutex<HashMap<K, (u32, i64)>>,
}

impl<K: Eq + Hash + Clone> FailureLimiter<K> {
    pub fn new(max_failures: u32, window_secs: i64, cap: usize) -> Self {
        FailureLimiter {
            max_failures,
            window_secs: window_secs.max(1),
            cap,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds to wait)` if `key` has used up its failures at `now`.
    pub fn check(&self, key: &K, now: i64) -> Result<(), u32> {
        let Ok(entries) = self.entries.lock() else {
            return Err(1);
        };
        match entries.get(key) {
            Some(&(count, start))
                if count >= self.max_failures && now < start + self.window_secs =>
            {
                Err(u32::try_from(start + self.window_secs - now).unwrap_or(u32::MAX))
            }
            _ => Ok(()),
        }
    }

    pub fn record_failure(&self, key: &K, now: i64) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= self.cap && !entries.contains_key(key) {
            let window = self.window_secs;
            entries.retain(|_, (_, start)| now < *start + window);
            if entries.len() >= self.cap {
                // Still full of live entries: an address flood. Refusing to track a new
                // key would let it guess freely, so evict an arbitrary one instead.
                if let Some(victim) = entries.keys().next().cloned() {
                    entries.remove(&victim);
                }
            }
        }
        let entry = entries.entry(key.clone()).or_insert((0, now));
        if now >= entry.1 + self.window_secs {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
    }

    /// Failures of `key` in its current window at `now`.
    pub fn count(&self, key: &K, now: i64) -> u32 {
        let Ok(entries) = self.entries.lock() else {
            return 0;
        };
        match entries.get(key) {
            Some(&(count, start)) if now < start + self.window_secs => count,
            _ => 0,
        }
    }

    /// Forgets the failures of `key` (after a successful login).
    pub fn clear(&self, key: &K) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(key);
        }
    }

    /// Takes back one recorded failure (an attempt that turned out to succeed).
    pub fn forgive_one(&self, key: &K) {
        if let Ok(mut entries) = self.entries.lock()
            && let Some(e) = entries.get_mut(key)
        {
            e.0 = e.0.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p320_blocks_after_max_failures_until_window_ends() {
        let l = FailureLimiter::new(3, 60, 100);
        for t in 0..3 {
            assert!(l.check(&"ann", t).is_ok());
            l.record_failure(&"ann", t);
        }
        assert_eq!(l.check(&"ann", 10), Err(50));
        assert!(l.check(&"ben", 10).is_ok(), "other keys unaffected");
        assert!(l.check(&"ann", 60).is_ok(), "window over");
        l.record_failure(&"ann", 61);
        assert!(l.check(&"ann", 62).is_ok(), "a new window starts from zero");
    }

    #[test]
    fn p320_success_clears() {
        let l = FailureLimiter::new(1, 60, 100);
        l.record_failure(&"ann", 0);
        assert!(l.check(&"ann", 1).is_err());
        l.clear(&"ann");
        assert!(l.check(&"ann", 1).is_ok());
    }

    #[test]
    fn memory_is_capped() {
        let l = FailureLimiter::new(5, 60, 10);
        for i in 0..1000 {
            l.record_failure(&i, 0);
        }
        assert!(l.entries.lock().unwrap().len() <= 10);
    }
}
