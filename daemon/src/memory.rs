//! The memory budget for message bytes in transit (DESIGN.md principle 7): SMTP DATA,
//! IMAP APPEND literals and `/mxdeliv` bodies reserve what they hold, all connections
//! together, before they read it. A message under way holds its bytes twice at its
//! peak (the bytes as received and the copy the store writes), so each byte reserves
//! [`BYTES_PER_BYTE`]. A transfer that cannot get its reservation in time is refused
//! with a temporary error and read to its end without keeping it, so the sender tries
//! again later and the relay's memory stays bounded whatever the number of clients.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Reserved bytes per byte of message held.
pub const BYTES_PER_BYTE: u64 = 2;
/// Semaphore permits are KiB.
const UNIT: u64 = 1024;

/// The shared budget. Cloning is cheap and shares it.
#[derive(Clone, Debug)]
pub struct Budget {
    sem: Arc<Semaphore>,
    units: u64,
}

/// Bytes reserved by one transfer; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    sem: Arc<Semaphore>,
    permits: Option<OwnedSemaphorePermit>,
    /// Message bytes covered (before [`BYTES_PER_BYTE`]).
    bytes: u64,
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
        let acquire = self.sem.clone().acquire_many_owned(need32);
        let Ok(Ok(more)) = tokio::time::timeout(wait, acquire).await else {
            return false;
        };
        match &mut self.permits {
            Some(p) => p.merge(more),
            None => self.permits = Some(more),
        }
        self.bytes = bytes;
        true
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
