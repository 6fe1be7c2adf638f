//! The memory budget for message bytes in transit (DESIGN.md principle 7): SMTP DATA,
//! IMAP APPEND literals and `/mxdeliv` bodies reserve what they hold, all connections
//! together, before they read it. A message under way holds its bytes twice at its
//! peak (the bytes as received and the copy the store writes), so each byte reserves
//! [`BYTES_PER_BYTE`]. A transfer that cannot get its reservation in time is refused
//! with a temporary error and read to its end without keeping it, so the sender tries
//! again later and the relay's memory stays bounded whatever the number of clients.
//!
//! Transfers grow their reservations as bytes arrive, so several big ones can each hold a
//! part of the budget while every one of them waits for more: a deadlock until they all
//! time out. Waits are therefore ordered by age ("wait-die"): only the oldest waiting
//! transfer waits; a younger one that would wait, or that is waiting when an older one
//! starts to, gives up at once and frees what it holds, so the oldest always gets its
//! room and the others are told to try again.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// Reserved bytes per byte of message held.
pub const BYTES_PER_BYTE: u64 = 2;
/// Semaphore permits are KiB.
const UNIT: u64 = 1024;

/// The shared budget. Cloning is cheap and shares it.
#[derive(Clone, Debug)]
pub struct Budget {
    sem: Arc<Semaphore>,
    units: u64,
    waits: Arc<Waits>,
}

/// The transfers waiting for room, by age.
#[derive(Debug)]
struct Waits {
    next_ticket: AtomicU64,
    waiting: Mutex<BTreeSet<u64>>,
    /// The oldest waiting ticket (`u64::MAX`: none); younger waiters watch it.
    oldest: watch::Sender<u64>,
}

impl Waits {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start waiting: false if an older transfer waits already (this one must give up).
    fn enter(&self, ticket: u64) -> bool {
        let mut w = self.lock();
        if w.first().is_some_and(|&t| t < ticket) {
            return false;
        }
        w.insert(ticket);
        self.oldest.send_replace(ticket);
        true
    }

    fn leave(&self, ticket: u64) {
        let mut w = self.lock();
        w.remove(&ticket);
        self.oldest
            .send_replace(w.first().copied().unwrap_or(u64::MAX));
    }
}

/// Bytes reserved by one transfer; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    sem: Arc<Semaphore>,
    permits: Option<OwnedSemaphorePermit>,
    /// Message bytes covered (before [`BYTES_PER_BYTE`]).
    bytes: u64,
    waits: Arc<Waits>,
    /// Age: lower is older.
    ticket: u64,
}

fn units_for(message_bytes: u64) -> u64 {
    message_bytes.saturating_mul(BYTES_PER_BYTE).div_ceil(UNIT)
}

impl Budget {
    /// A budget of `total` bytes of memory.
    pub fn new(total: u64) -> Budget {
        let units = (total / UNIT).clamp(1, Semaphore::MAX_PERMITS as u64);
        Budget {
            sem: Arc::new(Semaphore::new(units as usize)),
            units,
            waits: Arc::new(Waits {
                next_ticket: AtomicU64::new(0),
                waiting: Mutex::new(BTreeSet::new()),
                oldest: watch::channel(u64::MAX).0,
            }),
        }
    }

    /// The largest message that fits the whole budget.
    pub fn max_message(&self) -> u64 {
        self.units * UNIT / BYTES_PER_BYTE
    }

    /// Memory not reserved right now, in bytes.
    pub fn available(&self) -> u64 {
        self.sem.available_permits() as u64 * UNIT
    }

    /// An empty reservation that grows as a transfer arrives.
    pub fn empty(&self) -> Reservation {
        Reservation {
            sem: self.sem.clone(),
            permits: None,
            bytes: 0,
            waits: self.waits.clone(),
            ticket: self.waits.next_ticket.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Reserve room for `bytes` of message at once, waiting at most `wait`.
    pub async fn reserve(&self, bytes: u64, wait: Duration) -> Option<Reservation> {
        let mut r = self.empty();
        r.grow_to(bytes, wait).await.then_some(r)
    }
}

impl Reservation {
    /// Message bytes covered.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Cover `bytes` of message in all (no-op when already covered), waiting at most
    /// `wait` for others to give memory back. `false`: not granted (what was reserved
    /// before stays).
    pub async fn grow_to(&mut self, bytes: u64, wait: Duration) -> bool {
        if bytes <= self.bytes {
            return true;
        }
        let have = self.permits.as_ref().map_or(0, |p| p.num_permits() as u64);
        let need = units_for(bytes).saturating_sub(have);
        if need == 0 {
            self.bytes = bytes;
            return true;
        }
        let Ok(need32) = u32::try_from(need) else {
            return false;
        };
        if let Ok(more) = self.sem.clone().try_acquire_many_owned(need32) {
            self.add(more, bytes);
            return true;
        }
        // Wait-die: only the oldest waiting transfer waits (see the module comment).
        if !self.waits.enter(self.ticket) {
            return false;
        }
        let mut oldest = self.waits.oldest.subscribe();
        let ticket = self.ticket;
        let acquire = self.sem.clone().acquire_many_owned(need32);
        let overtaken = async move {
            // Resolves when an older transfer starts waiting.
            let _ = oldest.wait_for(|&t| t < ticket).await;
        };
        let got = tokio::time::timeout(wait, async {
            tokio::select! {
                more = acquire => more.ok(),
                _ = overtaken => None,
            }
        })
        .await;
        self.waits.leave(self.ticket);
        let Ok(Some(more)) = got else {
            return false;
        };
        self.add(more, bytes);
        true
    }

    fn add(&mut self, more: OwnedSemaphorePermit, bytes: u64) {
        match &mut self.permits {
            Some(p) => p.merge(more),
            None => self.permits = Some(more),
        }
        self.bytes = bytes;
    }

    /// [`Reservation::grow_to`] without waiting.
    pub fn try_grow_to(&mut self, bytes: u64) -> bool {
        if bytes <= self.bytes {
            return true;
        }
        let have = self.permits.as_ref().map_or(0, |p| p.num_permits() as u64);
        let need = units_for(bytes).saturating_sub(have);
        if need > 0 {
            let Ok(need32) = u32::try_from(need) else {
                return false;
            };
            let Ok(more) = self.sem.clone().try_acquire_many_owned(need32) else {
                return false;
            };
            match &mut self.permits {
                Some(p) => p.merge(more),
                None => self.permits = Some(more),
            }
        }
        self.bytes = bytes;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[tokio::test]
    async fn reservations_share_the_budget_and_give_back() {
        let b = Budget::new(64 * MIB);
        assert_eq!(b.max_message(), 32 * MIB);
        let wait = Duration::from_millis(10);
        let mut one = b.reserve(20 * MIB, wait).await.expect("fits");
        assert_eq!(b.available(), 24 * MIB);
        // A second 20 MiB message does not fit beside it...
        assert!(b.reserve(20 * MIB, wait).await.is_none());
        // ...growing the first past the budget fails and keeps what it had...
        assert!(!one.grow_to(40 * MIB, wait).await);
        assert_eq!(one.bytes(), 20 * MIB);
        assert!(one.try_grow_to(21 * MIB));
        assert_eq!(b.available(), 22 * MIB);
        // ...and dropping it gives everything back.
        drop(one);
        assert_eq!(b.available(), 64 * MIB);
        let mut r = b.empty();
        for kib in 1..=100 {
            assert!(r.try_grow_to(kib * 1024));
        }
        assert_eq!(b.available(), 64 * MIB - 200 * 1024);
    }

    /// Two transfers that each hold part of the budget and both need more: the younger
    /// gives up at once (whether it started waiting first or second), the older gets its
    /// room when the younger's is given back — no deadlock until both time out.
    #[tokio::test(start_paused = true)]
    async fn growing_transfers_do_not_deadlock_the_younger_gives_way() {
        let wait = Duration::from_secs(20);
        for younger_waits_first in [false, true] {
            let b = Budget::new(4 * MIB);
            let mut older = b.reserve(800 * 1024, wait).await.expect("fits");
            let mut younger = b.reserve(800 * 1024, wait).await.expect("fits");
            let start = tokio::time::Instant::now();
            let (tx, rx) = tokio::sync::oneshot::channel();
            let young = tokio::spawn(async move {
                if younger_waits_first {
                    let _ = tx.send(());
                }
                let grown = younger.grow_to(1536 * 1024, wait).await;
                (grown, tokio::time::Instant::now(), younger)
            });
            if younger_waits_first {
                rx.await.unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let old = tokio::spawn(async move {
                let grown = older.grow_to(1536 * 1024, wait).await;
                (grown, tokio::time::Instant::now())
            });
            let (young_grown, young_done, younger) = young.await.unwrap();
            assert!(!young_grown, "the younger gives way");
            assert!(
                young_done - start < Duration::from_secs(2),
                "at once, not after the timeout"
            );
            drop(younger); // refused: its transfer ends and frees its part
            let (old_grown, old_done) = old.await.unwrap();
            assert!(old_grown, "the older gets its room");
            assert!(old_done - start < Duration::from_secs(2));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_transfer_gets_memory_another_gives_back() {
        let b = Budget::new(4 * MIB);
        let held = b.reserve(2 * MIB, Duration::ZERO).await.expect("fits");
        let b2 = b.clone();
        let waiter =
            tokio::spawn(async move { b2.reserve(MIB, Duration::from_secs(30)).await.is_some() });
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(held);
        assert!(waiter.await.unwrap());
    }
}
