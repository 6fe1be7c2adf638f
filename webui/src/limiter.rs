//! Slowdown of password and setup-code guessing, per client address (issue #6 item 6).
//!
//! Every attempt counts as a failure until it succeeds. The first 3 attempts since the
//! last success (or since 15 min of quiet) are answered at once; from the 4th on, an
//! attempt is answered no earlier than the previous one's answer plus a delay of 1 s,
//! doubling per attempt, capped at 30 s.
//!
//! The delay is served *before* the password is checked, for right and wrong passwords
//! alike: delaying only wrong answers would let a guesser stop waiting after a moment
//! and learn "wrong" from the silence. A person who typed a wrong password three times
//! and then waits the delay out (or simply takes that long to type) is not delayed at
//! all: the right password then works at once. Parallel attempts reserve successive
//! slots, so they queue instead of bypassing the delay; an attempt that would have to
//! wait more than [`MAX_QUEUE`] is refused at once (not checked, not counted), so a
//! flood cannot hold connections open for long.
//!
//! IPv6 clients are keyed by their /64 (one host can use many addresses in it). The map
//! is bounded: stale entries are dropped, and when it is full the quietest entry goes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Attempts answered without delay.
pub const FREE_ATTEMPTS: u32 = 3;
/// First delay; doubles per further attempt.
pub const BASE_DELAY: Duration = Duration::from_secs(1);
/// Longest delay.
pub const MAX_DELAY: Duration = Duration::from_secs(30);
/// Quiet time after which an address starts over.
pub const RESET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Longest wait an attempt may queue for; beyond it the attempt is refused.
pub const MAX_QUEUE: Duration = Duration::from_secs(120);
/// Most addresses remembered.
pub const MAX_ENTRIES: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Attempts since the last success (each one counted when it starts).
    attempts: u32,
    /// When the latest attempt is (or was) answered.
    last_slot: Instant,
}

/// Per-address attempt counter; see the module doc.
#[derive(Debug, Default)]
pub struct Limiter {
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

/// The key for an address: IPv4 as is, IPv6 by its /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut seg = v6.segments();
            seg[4..].fill(0);
            IpAddr::V6(seg.into())
        }
        v4 => v4,
    }
}

/// Delay before the `n`-th attempt (1-based).
fn delay(n: u32) -> Duration {
    if n <= FREE_ATTEMPTS {
        return Duration::ZERO;
    }
    let shift = (n - FREE_ATTEMPTS - 1).min(16);
    BASE_DELAY.saturating_mul(1 << shift).min(MAX_DELAY)
}

impl Limiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Register an attempt from `ip` and return the instant before which it must not be
    /// answered (now for the first free attempts); `Err` with how long to wait when the
    /// queue of attempts from `ip` is already longer than [`MAX_QUEUE`].
    pub fn attempt(&self, ip: IpAddr) -> Result<Instant, Duration> {
        let now = Instant::now();
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let k = key(ip);
        if !map.contains_key(&k) && map.len() >= MAX_ENTRIES {
            map.retain(|_, e| now.saturating_duration_since(e.last_slot) < RESET_AFTER);
            if map.len() >= MAX_ENTRIES
                && let Some(oldest) = map.iter().min_by_key(|(_, e)| e.last_slot).map(|(k, _)| *k)
            {
                map.remove(&oldest);
            }
        }
        let entry = map.entry(k).or_insert(Entry {
            attempts: 0,
            last_slot: now,
        });
        if now.saturating_duration_since(entry.last_slot) >= RESET_AFTER {
            entry.attempts = 0;
        }
        let attempts = entry.attempts.saturating_add(1);
        let slot = now.max(entry.last_slot + delay(attempts));
        if slot.saturating_duration_since(now) > MAX_QUEUE {
            return Err(entry.last_slot.saturating_duration_since(now));
        }
        entry.attempts = attempts;
        entry.last_slot = slot;
        Ok(slot)
    }

    /// Wait out the delay for an attempt from `ip` (see [`Limiter::attempt`]); `Err`
    /// (at once) when too many attempts are queued: refuse without checking.
    pub async fn wait_turn(&self, ip: IpAddr) -> Result<(), Duration> {
        let slot = self.attempt(ip)?;
        tokio::time::sleep_until(slot).await;
        Ok(())
    }

    /// The attempt from `ip` succeeded: start over.
    pub fn success(&self, ip: IpAddr) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&key(ip));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn delays_grow_and_cap() {
        assert_eq!(delay(1), Duration::ZERO);
        assert_eq!(delay(3), Duration::ZERO);
        assert_eq!(delay(4), Duration::from_secs(1));
        assert_eq!(delay(5), Duration::from_secs(2));
        assert_eq!(delay(8), Duration::from_secs(16));
        assert_eq!(delay(9), MAX_DELAY);
        assert_eq!(delay(u32::MAX), MAX_DELAY);
    }

    #[tokio::test(start_paused = true)]
    async fn sequential_and_parallel_attempts() {
        let l = Limiter::new();
        let a = ip("192.168.1.9");
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.attempt(a), Ok(t0));
        }
        // Parallel 4th and 5th attempts queue: +1 s, then +2 s after that.
        assert_eq!(l.attempt(a), Ok(t0 + Duration::from_secs(1)));
        assert_eq!(l.attempt(a), Ok(t0 + Duration::from_secs(3)));
        // Another address is not affected.
        assert_eq!(l.attempt(ip("192.168.1.10")), Ok(t0));
        // Waiting longer than the delay means no further wait.
        tokio::time::advance(Duration::from_secs(60)).await;
        let now = Instant::now();
        assert_eq!(l.attempt(a), Ok(now));
        l.success(a);
        assert_eq!(l.attempt(a), Ok(Instant::now()));
        // 15 min of quiet starts over.
        for _ in 0..5 {
            l.attempt(a).unwrap();
        }
        tokio::time::advance(RESET_AFTER + Duration::from_secs(40)).await;
        assert_eq!(l.attempt(a), Ok(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_is_refused_not_queued() {
        let l = Limiter::new();
        let a = ip("10.0.0.1");
        let t0 = Instant::now();
        // 1+2+4+8+16+30+30+30 = 121 s > MAX_QUEUE: the 11th parallel attempt is refused.
        let mut last = t0;
        for _ in 0..10 {
            last = l.attempt(a).unwrap();
        }
        assert_eq!(last, t0 + Duration::from_secs(91));
        let refused = l.attempt(a);
        assert_eq!(refused, Err(Duration::from_secs(91)));
        // Refused attempts are not counted: after the queue drains, the next one waits
        // the 8th delay step (30 s) after the last slot, not more.
        tokio::time::advance(Duration::from_secs(91)).await;
        assert_eq!(l.attempt(a), Ok(t0 + Duration::from_secs(121)));
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_by_prefix_and_bounded() {
        let l = Limiter::new();
        for _ in 0..3 {
            l.attempt(ip("fd00::1")).unwrap();
        }
        let t = Instant::now();
        assert_eq!(l.attempt(ip("fd00::2")), Ok(t + BASE_DELAY), "same /64");
        for i in 0..(MAX_ENTRIES as u32 + 10) {
            l.attempt(IpAddr::V4(i.into())).unwrap();
        }
        assert!(l.len() <= MAX_ENTRIES);
    }
}
