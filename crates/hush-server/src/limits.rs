//! Rate limits: failed logins (P320) per account and per source address, so neither one
//! attacker nor many can guess passwords online at speed (memory is bounded: expired
//! entries are pruned, and the table has a hard cap); concurrent connections per key
//! (P106); requests per connection (P107).
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counts what is open per key (connections per address, per account); a [`Slot`]
/// gives its place back when dropped.
pub struct Occupancy<K: Eq + Hash + Clone> {
    open: Mutex<HashMap<K, usize>>,
}

impl<K: Eq + Hash + Clone> Default for Occupancy<K> {
    fn default() -> Self {
        Occupancy {
            open: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone> Occupancy<K> {
    /// A slot for `key` unless it holds `max` already.
    pub fn try_take(self: &Arc<Self>, key: K, max: usize) -> Option<Slot<K>> {
        let mut open = self.open.lock().ok()?;
        let n = open.entry(key.clone()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            owner: Arc::clone(self),
            key,
        })
    }

    /// How many slots `key` holds.
    pub fn count(&self, key: &K) -> usize {
        self.open
            .lock()
            .map(|o| o.get(key).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// One occupied place; freed on drop.
pub struct Slot<K: Eq + Hash + Clone> {
    owner: Arc<Occupancy<K>>,
    key: K,
}

impl<K: Eq + Hash + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        if let Ok(mut open) = self.owner.open.lock()
            && let Some(n) = open.get_mut(&self.key)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// A token bucket: `rate` requests a second on average, `burst` at once (P107).
pub struct RequestBudget {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl RequestBudget {
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        RequestBudget {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            at: now,
        }
    }

    /// Takes one request's token at `now`, or says how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

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
        self.record_many(key, now, 1);
    }

    /// Checks and counts one attempt at once (under one lock, so parallel attempts
    /// cannot all pass a check made before any was counted); `Err(seconds to wait)`,
    /// counting nothing, once `key` used up its attempts.
    pub fn try_record(&self, key: &K, now: i64) -> Result<(), u32> {
        let Ok(entries) = self.entries.lock() else {
            return Err(1);
        };
        if let Some(&(count, start)) = entries.get(key)
            && count >= self.max_failures
            && now < start + self.window_secs
        {
            return Err(u32::try_from(start + self.window_secs - now).unwrap_or(u32::MAX));
        }
        drop(entries);
        self.record_many(key, now, 1);
        Ok(())
    }

    /// Records `n` uses at once (a claim of `n` key packages).
    pub fn record_many(&self, key: &K, now: i64, n: u32) {
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
        entry.0 = entry.0.saturating_add(n);
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

/// Failures counted in the store (per account: P320, P332, P553; registrations per
/// address), so every node of a cluster sees one count and spreading over nodes gains
/// nothing. A check only reads. Fixed
/// windows of `window_secs` from a key's first failure, like [`FailureLimiter`].
pub struct SharedLimiter {
    kind: &'static str,
    max_failures: u32,
    window_secs: i64,
}

impl SharedLimiter {
    pub fn new(kind: &'static str, max_failures: u32, window_secs: i64) -> Self {
        SharedLimiter {
            kind,
            max_failures,
            window_secs: window_secs.max(1),
        }
    }

    fn wait(&self, c: hush_store::FailureCount, now: i64) -> Result<(), u32> {
        let end = c.since.saturating_add(self.window_secs);
        if c.count >= self.max_failures && now < end {
            Err(u32::try_from(end - now).unwrap_or(u32::MAX).max(1))
        } else {
            Ok(())
        }
    }

    /// `Ok(Err(seconds to wait))` if `key` has used up its failures at `now`.
    pub async fn check(
        &self,
        store: &dyn hush_store::Store,
        key: &[u8],
        now: i64,
    ) -> Result<Result<(), u32>, hush_store::StoreError> {
        let c = store
            .count_failures(self.kind, key, 0, now, self.window_secs)
            .await?;
        Ok(self.wait(c, now))
    }

    /// Counts one attempt before it is made (atomic in the store, so parallel attempts
    /// all count): `Ok(Err(seconds to wait))` when it is past the limit.
    pub async fn take(
        &self,
        store: &dyn hush_store::Store,
        key: &[u8],
        now: i64,
    ) -> Result<Result<(), u32>, hush_store::StoreError> {
        let c = store
            .count_failures(self.kind, key, 1, now, self.window_secs)
            .await?;
        // The attempt just counted is allowed if fewer than the limit came before it.
        Ok(self.wait(
            hush_store::FailureCount {
                count: c.count.saturating_sub(1),
                ..c
            },
            now,
        ))
    }

    /// Counts one failure; returns the failures before it in the window.
    pub async fn record_failure(
        &self,
        store: &dyn hush_store::Store,
        key: &[u8],
        now: i64,
    ) -> Result<u32, hush_store::StoreError> {
        let c = store
            .count_failures(self.kind, key, 1, now, self.window_secs)
            .await?;
        Ok(c.count.saturating_sub(1))
    }

    pub async fn clear(
        &self,
        store: &dyn hush_store::Store,
        key: &[u8],
    ) -> Result<(), hush_store::StoreError> {
        store.clear_failures(self.kind, key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shared_limits_count_what_every_node_records() {
        // Two nodes: two limiters over one store.
        let store = hush_store::memory::MemoryStore::new();
        let (a, b) = (
            SharedLimiter::new("totp", 3, 60),
            SharedLimiter::new("totp", 3, 60),
        );
        a.record_failure(&store, b"ann", 100).await.unwrap();
        b.record_failure(&store, b"ann", 101).await.unwrap();
        assert_eq!(a.check(&store, b"ann", 102).await.unwrap(), Ok(()));
        assert_eq!(b.record_failure(&store, b"ann", 102).await.unwrap(), 2);
        assert_eq!(
            a.check(&store, b"ann", 110).await.unwrap(),
            Err(50),
            "locked on both"
        );
        assert_eq!(b.check(&store, b"ann", 110).await.unwrap(), Err(50));
        assert_eq!(a.check(&store, b"ben", 110).await.unwrap(), Ok(()));
        assert_eq!(
            a.check(&store, b"ann", 160).await.unwrap(),
            Ok(()),
            "window over"
        );
        b.record_failure(&store, b"ann", 161).await.unwrap();
        a.clear(&store, b"ann").await.unwrap();
        assert_eq!(
            b.record_failure(&store, b"ann", 162).await.unwrap(),
            0,
            "cleared"
        );
    }

    #[test]
    fn p106_occupancy_caps_and_frees() {
        let o = Arc::new(Occupancy::default());
        let a = o.try_take("ip", 2).unwrap();
        let _b = o.try_take("ip", 2).unwrap();
        assert!(o.try_take("ip", 2).is_none(), "third refused");
        assert!(o.try_take("other", 2).is_some(), "keys are separate");
        drop(a);
        assert_eq!(o.count(&"ip"), 1);
        assert!(o.try_take("ip", 2).is_some(), "a freed slot is taken again");
    }

    #[test]
    fn p107_budget_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = RequestBudget::new(10, 3, t0);
        for _ in 0..3 {
            assert!(b.take(t0).is_ok());
        }
        let wait = b.take(t0).unwrap_err();
        assert!(
            wait <= Duration::from_millis(100) && wait > Duration::ZERO,
            "{wait:?}"
        );
        assert!(b.take(t0 + Duration::from_millis(100)).is_ok(), "refilled");
        assert!(b.take(t0 + Duration::from_millis(100)).is_err());
        assert!(
            b.take(t0 + Duration::from_secs(60)).is_ok(),
            "a long pause refills to the burst only"
        );
        for _ in 0..2 {
            assert!(b.take(t0 + Duration::from_secs(60)).is_ok());
        }
        assert!(b.take(t0 + Duration::from_secs(60)).is_err());
    }

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
