//! Who gets a connection (issue 13 "fair connections"): each listener's pool of slots
//! (the global cap) with per-client-address limits — concurrent connections and new
//! connections per second (GCRA, `crate::policy::ratelimit::gcra`) — and the record of
//! refusals: counted in metrics by service and reason, logged at most once per address
//! per minute.
//!
//! A client address is an IPv4 address or an IPv6 /64 (one subscriber's usual
//! allocation; IPv4-mapped IPv6 counts as IPv4). The per-address table is bounded: it
//! holds the addresses with open connections (at most the pool's cap) plus
//! [`IDLE_ENTRIES`] others whose rate state still matters; when it is full, idle
//! entries whose rate state has run out are dropped first, then all idle entries (the
//! rate limit then forgets, it never refuses a new address for lack of room).
//!
//! Log lines carry the address and the service, never an account (LOG-2): refusals
//! happen before any login.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::policy::ratelimit::{Quota, gcra};

/// Connection cap of the HTTPS listeners (443) and of the HTTP listeners (80)
/// (`crate::server`; `crate::fdlimit` counts them against the open-file limit).
pub const WEB_CONNECTIONS: usize = 1000;
/// Refusals `crate::server` answers at once; beyond, a refused connection is closed
/// without a word (each one holds a socket and may cost a TLS handshake).
pub const MAX_REFUSING: usize = 64;

/// Idle addresses (no open connection) the table keeps for their rate state, per pool.
pub const IDLE_ENTRIES: usize = 4096;
/// A refused address is logged again after this long at the earliest.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Addresses the refusal log remembers; beyond, refusals are only counted.
const LOG_ENTRIES: usize = 1024;
/// Refusal lines per [`LOG_INTERVAL`] over all addresses (many addresses at once).
const LOG_LINES_PER_INTERVAL: u32 = 30;

/// Per-address limits of one pool: a config value (foundation).
pub use crate::config::PerAddress;

impl PerAddress {
    fn quota(self) -> Quota {
        Quota::new(self.rate, Duration::from_secs(1), self.burst)
    }
}

/// Why a connection was turned away (label `reason` of `relaybox_connections_refused`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The pool is full (`max_imap_connections`, `max_smtp_connections`, …).
    Busy,
    /// The address has `max_connections_per_ip` open.
    PerAddress,
    /// The address opens connections faster than `max_connection_rate_per_ip`.
    Rate,
    /// A session deadline ran out (SMTP line/DATA/session, IMAP login, HTTP request).
    Deadline,
}

impl Reason {
    pub const ALL: [Reason; 4] = [
        Reason::Busy,
        Reason::PerAddress,
        Reason::Rate,
        Reason::Deadline,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reason::Busy => "limit",
            Reason::PerAddress => "per_ip",
            Reason::Rate => "rate",
            Reason::Deadline => "deadline",
        }
    }

    /// The words of the protocol refusals and the log.
    pub fn text(self) -> &'static str {
        match self {
            Reason::Busy => "Too many connections, try again later",
            Reason::PerAddress => "Too many connections from your address",
            Reason::Rate => "Too many new connections from your address, slow down",
            Reason::Deadline => "Time limit exceeded",
        }
    }
}

/// The key of a client address: IPv4 address, or the /64 of an IPv6 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddrKey {
    V4(u32),
    V6(u64),
}

impl AddrKey {
    pub fn of(ip: IpAddr) -> AddrKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => AddrKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => AddrKey::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

impl std::fmt::Display for AddrKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            AddrKey::V4(a) => write!(f, "{}", std::net::Ipv4Addr::from(a)),
            AddrKey::V6(p) => write!(f, "{}/64", std::net::Ipv6Addr::from(u128::from(p) << 64)),
        }
    }
}

struct Entry {
    open: u32,
    /// GCRA theoretical arrival time; at or before `now` = a fresh address.
    tat: Instant,
}

/// Per-address state of one pool, bounded (module doc).
pub struct AddrTable {
    limits: PerAddress,
    quota: Quota,
    map: HashMap<AddrKey, Entry>,
    capacity: usize,
}

impl AddrTable {
    /// `capacity`: entries kept at most (the pool's cap plus [`IDLE_ENTRIES`]).
    pub fn new(limits: PerAddress, capacity: usize) -> AddrTable {
        AddrTable {
            limits,
            quota: limits.quota(),
            map: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// One new connection from `key` at `now`: a rate cell is taken (also when the
    /// connection is then refused for the concurrent limit), then the connection counts
    /// as open until [`AddrTable::release`].
    pub fn admit(&mut self, key: AddrKey, now: Instant) -> Result<(), Reason> {
        if !self.map.contains_key(&key) && self.map.len() >= self.capacity {
            self.sweep(now);
        }
        let quota = self.quota;
        let entry = self.map.entry(key).or_insert(Entry { open: 0, tat: now });
        let tat = (entry.tat > now).then_some(entry.tat);
        let Some(next) = gcra(tat, now, quota) else {
            return Err(Reason::Rate);
        };
        entry.tat = next;
        if entry.open >= self.limits.connections {
            return Err(Reason::PerAddress);
        }
        entry.open += 1;
        Ok(())
    }

    /// A connection of `key` ended.
    pub fn release(&mut self, key: AddrKey, now: Instant) {
        if let Some(e) = self.map.get_mut(&key) {
            e.open = e.open.saturating_sub(1);
            if e.open == 0 && e.tat <= now {
                self.map.remove(&key);
            }
        }
    }

    /// Open connections of `key`.
    pub fn open(&self, key: AddrKey) -> u32 {
        self.map.get(&key).map_or(0, |e| e.open)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Make room: idle entries whose rate state ran out go first; if that is not
    /// enough, every idle entry.
    fn sweep(&mut self, now: Instant) {
        self.map.retain(|_, e| e.open > 0 || e.tat > now);
        if self.map.len() >= self.capacity {
            self.map.retain(|_, e| e.open > 0);
        }
    }
}

/// One listener family's connection slots: the global cap (`slots`) and the
/// per-address table. 143, 993 and the 443 multiplexer's IMAP sessions share one pool.
pub struct Pool {
    slots: Arc<Semaphore>,
    table: Mutex<AddrTable>,
}

impl Pool {
    pub fn new(cap: usize, per_address: PerAddress) -> Arc<Pool> {
        Arc::new(Pool {
            slots: Arc::new(Semaphore::new(cap)),
            table: Mutex::new(AddrTable::new(
                per_address,
                cap.saturating_add(IDLE_ENTRIES),
            )),
        })
    }

    /// A slot for a connection from `ip`, or why not. Checked in this order: the
    /// address's rate, its concurrent connections, the pool's cap.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Reason> {
        let key = AddrKey::of(ip);
        let now = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.admit(key, now)?;
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => Ok(Ticket {
                _permit: permit,
                pool: self.clone(),
                key,
            }),
            Err(_) => {
                table.release(key, now);
                Err(Reason::Busy)
            }
        }
    }

    /// Slots free now.
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }
}

/// An admitted connection's slot; given back when dropped.
pub struct Ticket {
    _permit: OwnedSemaphorePermit,
    pool: Arc<Pool>,
    key: AddrKey,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut table = self.pool.table.lock().unwrap_or_else(|p| p.into_inner());
        table.release(self.key, Instant::now());
    }
}

/// At most one line per address per [`LOG_INTERVAL`] and [`LOG_LINES_PER_INTERVAL`]
/// lines over all addresses; what is held back is summed up in the next line.
pub struct RefusalLog {
    last: HashMap<AddrKey, Instant>,
    window_start: Option<Instant>,
    lines_in_window: u32,
    held_back: u64,
}

impl Default for RefusalLog {
    fn default() -> Self {
        RefusalLog::new()
    }
}

impl RefusalLog {
    pub fn new() -> RefusalLog {
        RefusalLog {
            last: HashMap::new(),
            window_start: None,
            lines_in_window: 0,
            held_back: 0,
        }
    }

    /// Whether a refusal of `key` at `now` gets a log line; `Some(n)` with the number of
    /// refusals not logged since the last line that went out.
    pub fn should_log(&mut self, key: AddrKey, now: Instant) -> Option<u64> {
        let window_over = self
            .window_start
            .is_none_or(|s| now.duration_since(s) >= LOG_INTERVAL);
        if window_over {
            self.window_start = Some(now);
            self.lines_in_window = 0;
        }
        let recent = self
            .last
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < LOG_INTERVAL);
        if recent || self.lines_in_window >= LOG_LINES_PER_INTERVAL {
            self.held_back += 1;
            return None;
        }
        if !self.last.contains_key(&key) && self.last.len() >= LOG_ENTRIES {
            self.last
                .retain(|_, t| now.duration_since(*t) < LOG_INTERVAL);
            if self.last.len() >= LOG_ENTRIES {
                self.held_back += 1;
                return None;
            }
        }
        self.last.insert(key, now);
        self.lines_in_window += 1;
        Some(std::mem::take(&mut self.held_back))
    }
}

static LOG: std::sync::LazyLock<Mutex<RefusalLog>> =
    std::sync::LazyLock::new(|| Mutex::new(RefusalLog::new()));

/// Record a refusal of a connection from `ip` to `service` (a listener name): counted
/// in metrics, logged sparingly.
pub fn refused(service: &'static str, reason: Reason, ip: IpAddr) {
    crate::metrics::connection_refused(service, reason);
    let key = AddrKey::of(ip);
    let verdict = LOG
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .should_log(key, Instant::now());
    if let Some(held_back) = verdict {
        let more = if held_back > 0 {
            format!(" ({held_back} earlier refusals not logged)")
        } else {
            String::new()
        };
        // Outside any session span: the address is never tied to a session's other
        // lines (LOG-2).
        tracing::info!(
            parent: None,
            "{service}: connection from {key} refused: {}; refusals of this address are \
             not logged again for {}s{more}",
            reason.label(),
            LOG_INTERVAL.as_secs()
        );
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const LIMITS: PerAddress = PerAddress {
        connections: 3,
        rate: 2,
        burst: 5,
    };

    fn v4(last: u8) -> AddrKey {
        AddrKey::of(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)))
    }

    #[test]
    fn ipv6_groups_by_64_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(AddrKey::of(a), AddrKey::of(b));
        assert_ne!(AddrKey::of(a), AddrKey::of(c));
        assert_eq!(AddrKey::of(a).to_string(), "2001:db8:1:2::/64");
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        assert_eq!(AddrKey::of(mapped), v4(7));
        assert_eq!(v4(7).to_string(), "192.0.2.7");
        assert_ne!(
            AddrKey::of(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            AddrKey::of(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
    }

    #[test]
    fn concurrent_limit_per_address() {
        let now = Instant::now();
        let mut t = AddrTable::new(
            PerAddress {
                rate: 1000,
                burst: 1000,
                ..LIMITS
            },
            100,
        );
        for _ in 0..3 {
            assert_eq!(t.admit(v4(1), now), Ok(()));
        }
        assert_eq!(t.admit(v4(1), now), Err(Reason::PerAddress));
        // Another address is not affected.
        assert_eq!(t.admit(v4(2), now), Ok(()));
        t.release(v4(1), now);
        assert_eq!(t.open(v4(1)), 2);
        assert_eq!(t.admit(v4(1), now), Ok(()));
    }

    #[test]
    fn rate_limit_with_burst_refills_over_time() {
        let now = Instant::now();
        let mut t = AddrTable::new(
            PerAddress {
                connections: 1000,
                ..LIMITS
            },
            100,
        );
        for _ in 0..5 {
            assert_eq!(t.admit(v4(1), now), Ok(()));
        }
        assert_eq!(t.admit(v4(1), now), Err(Reason::Rate));
        assert_eq!(t.admit(v4(2), now), Ok(()));
        // 2 per second: one cell after 500 ms, not two.
        let later = now + Duration::from_millis(500);
        assert_eq!(t.admit(v4(1), later), Ok(()));
        assert_eq!(t.admit(v4(1), later), Err(Reason::Rate));
    }

    #[test]
    fn idle_entries_expire_when_their_rate_state_runs_out() {
        let now = Instant::now();
        let mut t = AddrTable::new(LIMITS, 100);
        t.admit(v4(1), now).unwrap();
        t.release(v4(1), now);
        // The rate cell is still pending: the entry stays.
        assert_eq!(t.len(), 1);
        t.admit(v4(1), now).unwrap();
        t.release(v4(1), now + Duration::from_secs(10));
        assert!(t.is_empty(), "released after its rate state ran out");
        // Idle entries with a pending rate state go when room is needed.
        let mut t = AddrTable::new(LIMITS, 2);
        t.admit(v4(1), now).unwrap();
        t.release(v4(1), now);
        t.admit(v4(2), now).unwrap();
        let later = now + Duration::from_secs(10);
        t.admit(v4(3), later).unwrap();
        assert_eq!(t.len(), 2, "v4(1) expired, v4(2) still open");
        assert_eq!((t.open(v4(2)), t.open(v4(3))), (1, 1));
    }

    #[test]
    fn table_is_bounded_and_keeps_open_connections() {
        let now = Instant::now();
        let cap = 50;
        let mut t = AddrTable::new(LIMITS, cap);
        // Ten addresses hold connections.
        for i in 0..10u8 {
            t.admit(v4(i), now).unwrap();
        }
        // Thousands of addresses come and go (their rate state is still fresh).
        for i in 0..5000u32 {
            let key = AddrKey::V4(0x0a00_0000 + i);
            t.admit(key, now).unwrap();
            t.release(key, now);
            assert!(t.len() <= cap, "{} entries", t.len());
        }
        for i in 0..10u8 {
            assert_eq!(t.open(v4(i)), 1, "open connections survive sweeps");
        }
        // The concurrent limit still holds for them.
        t.admit(v4(0), now).unwrap();
        t.admit(v4(0), now).unwrap();
        assert_eq!(t.admit(v4(0), now), Err(Reason::PerAddress));
    }

    #[test]
    fn a_full_pool_refuses_and_gives_the_address_slot_back() {
        let pool = Pool::new(2, LIMITS);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let a = pool.admit(ip).unwrap();
        let _b = pool.admit(other).unwrap();
        assert_eq!(pool.admit(ip).err(), Some(Reason::Busy));
        assert_eq!(pool.available(), 0);
        drop(a);
        assert_eq!(pool.available(), 1);
        let key = AddrKey::of(ip);
        let open = pool.table.lock().unwrap().open(key);
        assert_eq!(open, 0, "the refused connection does not count as open");
    }

    #[test]
    fn refusal_log_once_per_address_per_interval() {
        let mut log = RefusalLog::new();
        let now = Instant::now();
        assert_eq!(log.should_log(v4(1), now), Some(0));
        for i in 0..10_000u64 {
            assert_eq!(log.should_log(v4(1), now + Duration::from_millis(i)), None);
        }
        // Another address gets its own line.
        assert_eq!(log.should_log(v4(2), now), Some(10_000));
        let next = now + LOG_INTERVAL;
        assert_eq!(log.should_log(v4(1), next), Some(0));
        assert_eq!(log.should_log(v4(1), next), None);
    }

    #[test]
    fn refusal_log_is_bounded_over_many_addresses() {
        let mut log = RefusalLog::new();
        let now = Instant::now();
        let lines = (0..100_000u32)
            .filter(|i| log.should_log(AddrKey::V4(*i), now).is_some())
            .count();
        assert_eq!(lines, LOG_LINES_PER_INTERVAL as usize);
        assert!(log.last.len() <= LOG_ENTRIES);
        // The next interval starts with a line that sums up what was held back.
        let next = now + LOG_INTERVAL;
        let held = log.should_log(AddrKey::V4(u32::MAX), next);
        assert_eq!(held, Some(100_000 - u64::from(LOG_LINES_PER_INTERVAL)));
    }
}
