//! Slowdown of password and code guessing per client address: one algorithm for the
//! admin pages (password, setup code; issue #6 item 6) and the daemon's IMAP and SMTP
//! logins (issue 13 point 5), each with its own [`Policy`]. It lives in this crate
//! because the daemon already depends on it and this crate may depend on no other
//! workspace crate.
//!
//! Every attempt counts as a failure from the moment it arrives until it is settled
//! ([`Attempt`]). An attempt passes the gate — and only then is the secret checked — no
//! earlier than the previous attempt of the same address passed plus the delay for
//! `n = recent failures + attempts being checked + 1`: none for the first
//! [`Policy::free`], then [`Policy::base`] doubling per further attempt up to
//! [`Policy::max`].
//!
//! The delay is served *before* the check, for right and wrong secrets alike: delaying
//! only wrong answers would let a guesser give up after a moment and read "wrong" from
//! the silence. Parallel attempts queue behind each other (first come, first served)
//! instead of bypassing the delay, and an attempt abandoned by its client still takes
//! its turn and is counted. An attempt that would queue longer than
//! [`Policy::max_queue`] is refused without being checked or counted — at once, or, when
//! that depends on attempts being checked right now, as soon as they are settled — so
//! a flood cannot hold connections for long.
//!
//! A person who mistyped and then waits the delay out (or simply takes that long to
//! type) is not delayed at all. Attempts that succeed make room at once, so a burst of
//! right logins (many devices behind one NAT reconnecting) passes without waiting while
//! the address has no recent failures. Failures are forgotten one per
//! [`Policy::forget_every`]; what a success does is [`OnSuccess`].
//!
//! IPv6 clients are keyed by their /64 (one host can use many addresses in it). Only
//! addresses with recent failures or attempts in progress are remembered; the map is
//! bounded by [`Policy::max_entries`] (the quietest idle entry goes first).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// What a successful attempt does to its address's failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSuccess {
    /// Forget them: right for a single secret (the admin password, the setup code),
    /// which whoever succeeds already knows.
    Reset,
    /// Keep them: only the successful attempt itself stops counting. Right where anyone
    /// can hold a secret of their own (mail accounts are free to create), so that
    /// logging in to one's own account between guesses erases nothing.
    Forgive,
}

/// The numbers of one limiter.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Attempts answered without delay (at least 1).
    pub free: u32,
    /// First delay; doubles per further attempt.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
    /// One recent failure is forgotten per this much time.
    pub forget_every: Duration,
    /// Longest an attempt may queue; beyond it the attempt is refused.
    pub max_queue: Duration,
    /// Most addresses remembered (idle ones are dropped first).
    pub max_entries: usize,
    pub on_success: OnSuccess,
}

impl Policy {
    /// The admin pages: 3 free tries, 1 s doubling to 30 s, queue up to 2 min.
    pub const ADMIN: Policy = Policy {
        free: 3,
        base: Duration::from_secs(1),
        max: Duration::from_secs(30),
        forget_every: Duration::from_secs(60),
        max_queue: Duration::from_secs(120),
        max_entries: 4096,
        on_success: OnSuccess::Reset,
    };

    /// Delay before the `n`-th attempt (1-based).
    pub fn delay(&self, n: u32) -> Duration {
        if n <= self.free {
            return Duration::ZERO;
        }
        let shift = (n - self.free - 1).min(16);
        self.base.saturating_mul(1 << shift).min(self.max)
    }

    /// Failures beyond which another one changes nothing: the delay is at its maximum.
    fn saturation(&self) -> u32 {
        let mut f = self.free;
        while f < self.free + 17 && self.delay(f + 1) < self.max {
            f += 1;
        }
        f
    }
}

#[derive(Debug)]
struct Entry {
    /// Recent failures (forgotten one per `forget_every`).
    failures: u32,
    /// Since when `failures` decays.
    decayed_at: Instant,
    /// Attempts past the gate, not settled yet.
    checking: u32,
    /// Attempts waiting at the gate, first in line first (ids).
    queue: VecDeque<u64>,
    next_id: u64,
    /// When the latest attempt passed the gate.
    last_pass: Option<Instant>,
    /// Wakes waiters when an attempt succeeded (the queue may move sooner).
    wake: Arc<Notify>,
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry {
            failures: 0,
            decayed_at: now,
            checking: 0,
            queue: VecDeque::new(),
            next_id: 0,
            last_pass: None,
            wake: Arc::new(Notify::new()),
        }
    }

    fn decay(&mut self, policy: &Policy, now: Instant) {
        let step = policy.forget_every.max(Duration::from_millis(1));
        let steps = now.saturating_duration_since(self.decayed_at).as_nanos() / step.as_nanos();
        if self.failures == 0 {
            self.decayed_at = now;
        } else if steps > 0 {
            self.failures = self
                .failures
                .saturating_sub(steps.min(u32::MAX as u128) as u32);
            self.decayed_at = if self.failures == 0 {
                now
            } else {
                self.decayed_at + step * steps as u32
            };
        }
    }

    /// Nothing to remember: the next attempt would pass at once anyway.
    fn idle(&self) -> bool {
        self.failures == 0 && self.checking == 0 && self.queue.is_empty()
    }

    /// When the attempt at `place` in the queue (0: first) would pass, counting
    /// `counted` earlier attempts (the first in line is attempt `counted + 1`).
    fn turn(&self, policy: &Policy, counted: u32, place: usize, now: Instant) -> Instant {
        let n = counted + 1;
        let mut at = self.last_pass.map_or(now, |t| t + policy.delay(n)).max(now);
        for k in 1..=place as u32 {
            at += policy.delay(n.saturating_add(k));
        }
        at
    }
}

/// Per-address attempt gate; see the module doc.
#[derive(Debug)]
pub struct Limiter {
    policy: Policy,
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

/// The key for an address: IPv4 as is, IPv6 by its /64.
pub fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut seg = v6.segments();
            seg[4..].fill(0);
            IpAddr::V6(seg.into())
        }
        v4 => v4,
    }
}

/// An attempt that passed the gate. Settle it with [`Attempt::succeeded`],
/// [`Attempt::failed`] or [`Attempt::void`]; dropped unsettled, it counts as failed.
#[must_use = "settle the attempt"]
pub struct Attempt<'a> {
    limiter: &'a Limiter,
    key: IpAddr,
    settled: bool,
}

impl Attempt<'_> {
    /// The secret was right.
    pub fn succeeded(mut self) {
        self.settle(Outcome::Success);
    }

    /// The secret was wrong.
    pub fn failed(mut self) {
        self.settle(Outcome::Failure);
    }

    /// Nothing was learnt (the check itself failed, e.g. the store was unreachable).
    pub fn void(mut self) {
        self.settle(Outcome::Void);
    }

    fn settle(&mut self, outcome: Outcome) {
        if !std::mem::replace(&mut self.settled, true) {
            self.limiter.settle(self.key, outcome);
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.settle(Outcome::Failure);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure,
    Void,
}

/// Takes a waiting attempt out of the queue if its future is dropped while it waits.
struct Waiting<'a> {
    limiter: &'a Limiter,
    key: IpAddr,
    id: u64,
    active: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.active {
            let mut map = self.limiter.lock();
            if let Some(e) = map.get_mut(&self.key) {
                e.queue.retain(|q| *q != self.id);
                e.wake.notify_waiters();
                if e.idle() {
                    map.remove(&self.key);
                }
            }
        }
    }
}

impl Limiter {
    pub fn new(policy: Policy) -> Self {
        Limiter {
            policy,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry for `key`, made room for and brought up to date.
    fn entry<'m>(
        &self,
        map: &'m mut HashMap<IpAddr, Entry>,
        key: IpAddr,
        now: Instant,
    ) -> &'m mut Entry {
        if !map.contains_key(&key) && map.len() >= self.policy.max_entries {
            for e in map.values_mut() {
                e.decay(&self.policy, now);
            }
            map.retain(|_, e| !e.idle());
            if map.len() >= self.policy.max_entries
                && let Some(quietest) = map
                    .iter()
                    .filter(|(_, e)| e.checking == 0 && e.queue.is_empty())
                    .min_by_key(|(_, e)| e.last_pass)
                    .map(|(k, _)| *k)
            {
                map.remove(&quietest);
            }
        }
        let e = map.entry(key).or_insert_with(|| Entry::new(now));
        e.decay(&self.policy, now);
        e
    }

    /// Wait for the turn of an attempt from `ip` (see the module doc), then check the
    /// secret and settle the returned [`Attempt`]. `Err` with about how long the queue
    /// is when this attempt would wait longer than [`Policy::max_queue`]: refuse it
    /// without checking. That is known at once when the queue is too long even if every
    /// attempt being checked right now succeeds, else as soon as those are settled
    /// (a password check: milliseconds).
    pub async fn wait_turn(&self, ip: IpAddr) -> Result<Attempt<'_>, Duration> {
        let key = key(ip);
        let p = self.policy;
        let (id, wake) = {
            let mut map = self.lock();
            let now = Instant::now();
            let e = self.entry(&mut map, key, now);
            let best = e.turn(&p, e.failures, e.queue.len(), now) - now;
            if best > p.max_queue {
                if e.idle() {
                    map.remove(&key);
                }
                return Err(best);
            }
            let id = e.next_id;
            e.next_id += 1;
            e.queue.push_back(id);
            (id, e.wake.clone())
        };
        let mut waiting = Waiting {
            limiter: self,
            key,
            id,
            active: true,
        };
        loop {
            let notified = wake.notified();
            tokio::pin!(notified);
            // Registered before the state is read: any change after this wakes us.
            notified.as_mut().enable();
            let until = {
                let mut map = self.lock();
                let now = Instant::now();
                let e = self.entry(&mut map, key, now);
                let place = e.queue.iter().position(|q| *q == id).unwrap_or(0);
                let at = e.turn(&p, e.failures + e.checking, place, now);
                if place == 0 && at <= now {
                    e.queue.pop_front();
                    e.checking += 1;
                    e.last_pass = Some(now);
                    e.wake.notify_waiters();
                    waiting.active = false;
                    return Ok(Attempt {
                        limiter: self,
                        key,
                        settled: false,
                    });
                }
                if e.checking == 0 && at - now > p.max_queue {
                    // Exact now that nothing is being checked: too far away.
                    e.queue.retain(|q| *q != id);
                    e.wake.notify_waiters();
                    waiting.active = false;
                    if e.idle() {
                        map.remove(&key);
                    }
                    return Err(at - now);
                }
                at
            };
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = &mut notified => {}
            }
        }
    }

    fn settle(&self, key: IpAddr, outcome: Outcome) {
        let mut map = self.lock();
        let now = Instant::now();
        let p = self.policy;
        let cap = p.saturation();
        let e = self.entry(&mut map, key, now);
        e.checking = e.checking.saturating_sub(1);
        match outcome {
            Outcome::Failure => e.failures = (e.failures + 1).min(cap),
            Outcome::Success if p.on_success == OnSuccess::Reset => e.failures = 0,
            Outcome::Success | Outcome::Void => {}
        }
        // A success or void counts no more: a waiter may pass sooner; a failure makes
        // the queue's times exact: a waiter may learn that it is too far away.
        e.wake.notify_waiters();
        if e.idle() {
            map.remove(&key);
        }
    }

    /// Addresses remembered now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Recent failures of `ip`'s address (after forgetting), for tests and metrics.
    pub fn failures(&self, ip: IpAddr) -> u32 {
        let mut map = self.lock();
        let k = key(ip);
        if !map.contains_key(&k) {
            return 0;
        }
        let e = self.entry(&mut map, k, Instant::now());
        e.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const P: Policy = Policy::ADMIN;

    #[test]
    fn delays_grow_and_cap() {
        assert_eq!(P.delay(1), Duration::ZERO);
        assert_eq!(P.delay(3), Duration::ZERO);
        assert_eq!(P.delay(4), Duration::from_secs(1));
        assert_eq!(P.delay(5), Duration::from_secs(2));
        assert_eq!(P.delay(8), Duration::from_secs(16));
        assert_eq!(P.delay(9), P.max);
        assert_eq!(P.delay(u32::MAX), P.max);
        assert_eq!(P.saturation(), 8);
    }

    /// `n` attempts from `ip` started together; each task holds its attempt for `hold`
    /// (the check), settles it (`succeed`) and returns how long it waited for its turn
    /// in whole seconds (`None`: refused). Sorted, refusals last.
    async fn burst(
        l: &Arc<Limiter>,
        ip: IpAddr,
        n: usize,
        hold: Duration,
        succeed: bool,
    ) -> Vec<Option<u64>> {
        let mut tasks = Vec::new();
        for _ in 0..n {
            let l = l.clone();
            tasks.push(tokio::spawn(async move {
                let t0 = Instant::now();
                let attempt = l.wait_turn(ip).await.ok()?;
                let waited = t0.elapsed();
                tokio::time::sleep(hold).await;
                if succeed {
                    attempt.succeeded();
                } else {
                    attempt.failed();
                }
                Some(waited.as_secs())
            }));
            // Let it register before the next one starts.
            tokio::task::yield_now().await;
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out.sort_by_key(|w| w.unwrap_or(u64::MAX));
        out
    }

    #[tokio::test(start_paused = true)]
    async fn sequential_attempts_wait_out_the_delay_before_the_check() {
        let l = Limiter::new(P);
        let a = ip("192.168.1.9");
        for _ in 0..3 {
            let t0 = Instant::now();
            l.wait_turn(a).await.unwrap().failed();
            assert_eq!(t0.elapsed(), Duration::ZERO);
        }
        // The 4th waits 1 s, the 5th 2 s after that — right or wrong alike.
        let t0 = Instant::now();
        l.wait_turn(a).await.unwrap().failed();
        assert_eq!(t0.elapsed(), Duration::from_secs(1));
        let t0 = Instant::now();
        let attempt = l.wait_turn(a).await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
        attempt.succeeded();
        // Reset: the next attempt is free again.
        assert_eq!(l.failures(a), 0);
        assert!(l.is_empty(), "nothing left to remember");
        // Another address is not affected by anything above.
        let t0 = Instant::now();
        l.wait_turn(ip("192.168.1.10")).await.unwrap().failed();
        assert_eq!(t0.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_the_delay_out_costs_nothing_and_failures_are_forgotten() {
        let l = Limiter::new(P);
        let a = ip("10.1.1.1");
        for _ in 0..5 {
            l.wait_turn(a).await.unwrap().failed();
        }
        assert_eq!(l.failures(a), 5);
        // Longer than the next delay (4 s) later: no wait at all.
        tokio::time::advance(Duration::from_secs(5)).await;
        let t0 = Instant::now();
        l.wait_turn(a).await.unwrap().failed();
        assert_eq!(t0.elapsed(), Duration::ZERO);
        // One failure forgotten per minute: after 3 min, 3 of the 6 are left.
        tokio::time::advance(Duration::from_secs(180)).await;
        assert_eq!(l.failures(a), 3);
        tokio::time::advance(Duration::from_secs(180)).await;
        assert_eq!(l.failures(a), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn parallel_attempts_queue_and_a_flood_is_refused() {
        let l = Arc::new(Limiter::new(P));
        let a = ip("10.0.0.1");
        // 12 wrong attempts at once: 3 free, then 1, 2, 4, 8, 16, 30, 30 s apart; the
        // 11th would wait 121 s (over the 120 s queue): it and the 12th are refused at
        // once, not counted.
        let got = burst(&l, a, 12, Duration::ZERO, false).await;
        let mut expect: Vec<Option<u64>> = vec![Some(0), Some(0), Some(0)];
        let mut t = 0;
        for d in [1, 2, 4, 8, 16, 30, 30] {
            t += d;
            expect.push(Some(t));
        }
        expect.extend([None, None]);
        assert_eq!(got, expect);
        assert_eq!(l.failures(a), P.saturation(), "capped");
    }

    #[tokio::test(start_paused = true)]
    async fn right_attempts_make_room_for_each_other() {
        // A NAT with many devices reconnecting at once, no failures: each success frees
        // its place, so nobody waits.
        let l = Arc::new(Limiter::new(P));
        let a = ip("203.0.113.7");
        let got = burst(&l, a, 10, Duration::from_millis(50), true).await;
        assert!(got.iter().all(|w| *w == Some(0)), "{got:?}");
        assert!(l.is_empty());
        // The same burst all wrong: the 4th and later wait their turn.
        let got = burst(&l, a, 5, Duration::from_millis(50), false).await;
        assert_eq!(got, [Some(0), Some(0), Some(0), Some(1), Some(3)]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_bound_waits_for_the_checks_in_progress() {
        let p = Policy {
            free: 5,
            max_queue: Duration::from_secs(30),
            ..P
        };
        let l = Arc::new(Limiter::new(p));
        // 10 right attempts at once (parallel first logins of one account): if the 5
        // being checked failed, the 10th would wait 31 s; they succeed, nobody waits.
        let got = burst(&l, ip("10.0.0.2"), 10, Duration::from_millis(50), true).await;
        assert!(got.iter().all(|w| *w == Some(0)), "{got:?}");
        // 20 wrong at once: 5 checked at once; 10 more queue while that is unknown;
        // once the 5 failed, those at 1, 3, 7 and 15 s stay, the rest are refused.
        let got = burst(&l, ip("10.0.0.3"), 20, Duration::from_millis(50), false).await;
        let mut expect = vec![Some(0); 5];
        expect.extend([Some(1), Some(3), Some(7), Some(15)]);
        expect.extend([None; 11]);
        assert_eq!(got, expect);
    }

    #[tokio::test(start_paused = true)]
    async fn forgive_keeps_the_failures_of_other_attempts() {
        let l = Limiter::new(Policy {
            on_success: OnSuccess::Forgive,
            ..P
        });
        let a = ip("198.51.100.1");
        for _ in 0..4 {
            l.wait_turn(a).await.unwrap().failed();
        }
        // Logging in to one's own account between guesses: it waits its turn like any
        // attempt, and erases none of the failures.
        let t0 = Instant::now();
        l.wait_turn(a).await.unwrap().succeeded();
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
        assert_eq!(l.failures(a), 4);
        let t0 = Instant::now();
        l.wait_turn(a).await.unwrap().failed();
        assert_eq!(t0.elapsed(), Duration::from_secs(2), "still the 5th");
        // A void attempt (nothing learnt) does not count either way.
        tokio::time::advance(Duration::from_secs(10)).await;
        l.wait_turn(a).await.unwrap().void();
        assert_eq!(l.failures(a), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn abandoned_attempts_count_and_dropped_waiters_leave() {
        let l = Arc::new(Limiter::new(P));
        let a = ip("10.9.9.9");
        // An attempt dropped unsettled is a failure.
        for _ in 0..3 {
            drop(l.wait_turn(a).await.unwrap());
        }
        assert_eq!(l.failures(a), 3);
        // A waiter whose future is dropped leaves the queue.
        let w = {
            let l = l.clone();
            tokio::spawn(async move { l.wait_turn(a).await.map(|t| t.failed()) })
        };
        tokio::task::yield_now().await;
        w.abort();
        let _ = w.await;
        tokio::time::advance(Duration::from_secs(1)).await;
        let t0 = Instant::now();
        l.wait_turn(a).await.unwrap().failed();
        assert_eq!(t0.elapsed(), Duration::ZERO, "its place is free");
        assert_eq!(l.failures(a), 4);
        // Nothing of it is left once the failures are forgotten.
        tokio::time::advance(Duration::from_secs(300)).await;
        l.wait_turn(a).await.unwrap().succeeded();
        assert!(l.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_by_prefix_and_bounded() {
        let l = Limiter::new(P);
        for _ in 0..3 {
            l.wait_turn(ip("fd00::1")).await.unwrap().failed();
        }
        assert_eq!(l.failures(ip("fd00::2")), 3, "same /64");
        assert_eq!(l.failures(ip("fd00:0:0:1::1")), 0, "another /64");
        assert_eq!(l.failures(ip("::ffff:10.0.0.1")), 0);
        for i in 0..(P.max_entries as u32 + 10) {
            l.wait_turn(IpAddr::V4(i.into())).await.unwrap().failed();
        }
        assert!(l.len() <= P.max_entries);
    }
}
