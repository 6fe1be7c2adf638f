//! Rate limits with the generic cell rate algorithm (GCRA), as upstream filtermail
//! uses for SUB-4 and `/new` (NEW-3). The decision is a pure function of the stored
//! "theoretical arrival time" and the injected monotonic `now`.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `rate` cells per `period`, with `burst` cells allowed at once.
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    /// Time between cells at the sustained rate.
    pub emission: Duration,
    /// How far ahead of `now` the arrival time may run: `(burst - 1) × emission`.
    pub tolerance: Duration,
}

impl Quota {
    pub fn new(rate: u32, period: Duration, burst: u32) -> Quota {
        let emission = period / rate.max(1);
        Quota {
            emission,
            tolerance: emission * burst.max(1).saturating_sub(1),
        }
    }
}

/// One GCRA step: given the stored theoretical arrival time (`None` for a fresh key),
/// return the new one if a cell at `now` conforms, or `None` if it must be refused.
pub fn gcra(tat: Option<Instant>, now: Instant, q: Quota) -> Option<Instant> {
    let tat = tat.map_or(now, |t| t.max(now));
    if tat.saturating_duration_since(now) > q.tolerance {
        return None;
    }
    Some(tat + q.emission)
}

/// A keyed limiter: one GCRA state per key (sender address, client IP).
pub struct RateLimiter<K> {
    quota: Quota,
    state: Mutex<HashMap<K, Instant>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(quota: Quota) -> Self {
        RateLimiter {
            quota,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Take one cell for `key` at `now`; false when over the limit.
    pub fn check(&self, key: &K, now: Instant) -> bool {
        let mut map = self.state.lock().expect("rate limiter lock");
        if map.len() > 50_000 {
            // Keys whose arrival time has passed are equivalent to fresh ones.
            map.retain(|_, tat| *tat > now);
        }
        match gcra(map.get(key).copied(), now, self.quota) {
            Some(next) => {
                map.insert(key.clone(), next);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_steady_rate() {
        // SUB-4 defaults: 60 per minute, burst 10.
        let lim = RateLimiter::new(Quota::new(60, Duration::from_secs(60), 10));
        let t0 = Instant::now();
        let key = "a@x".to_string();
        for i in 0..10 {
            assert!(lim.check(&key, t0), "burst message {i} must pass");
        }
        assert!(!lim.check(&key, t0), "11th at once is over the limit");
        assert!(!lim.check(&key, t0 + Duration::from_millis(900)));
        assert!(
            lim.check(&key, t0 + Duration::from_secs(1)),
            "one more per second"
        );
        assert!(!lim.check(&key, t0 + Duration::from_secs(1)));
        // Another key is independent.
        assert!(lim.check(&"b@x".to_string(), t0));
        // After a minute of quiet the whole burst is back.
        let later = t0 + Duration::from_secs(61);
        for _ in 0..10 {
            assert!(lim.check(&key, later));
        }
        assert!(!lim.check(&key, later));
    }

    #[test]
    fn new_endpoint_quota() {
        // NEW-3: 2 per second, burst 5.
        let q = Quota::new(2, Duration::from_secs(1), 5);
        let t0 = Instant::now();
        let mut tat = None;
        let mut passed = 0;
        for _ in 0..20 {
            if let Some(t) = gcra(tat, t0, q) {
                tat = Some(t);
                passed += 1;
            }
        }
        assert_eq!(passed, 5);
        assert!(gcra(tat, t0 + Duration::from_millis(500), q).is_some());
    }
}
