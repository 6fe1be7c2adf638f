//! In-process notifications: new mail per account (wakes IMAP IDLE without polling), and
//! the delivery event ([`Delivered`]) that the work after a delivery's commit subscribes
//! to (push, the outbound scheduler, the quota trim; wired by the assembly, `server`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use tokio::sync::{Notify, watch};

/// What one committed delivery did, published after its commit (IN-8: after the IDLE
/// wake-up).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// The accounts whose INBOX got a copy.
    pub accounts: Vec<String>,
    /// Whether anything was queued for remote domains.
    pub queued: bool,
}

/// Per-account change counters and the delivery subscribers. A delivery or any other
/// mailbox change calls [`Events::mailbox_changed`]; IDLE sessions wait on the receiver
/// from [`Events::subscribe`]. A delivery's commit calls [`Events::delivered`]; each
/// receiver from [`Events::deliveries`] gets it.
#[derive(Default)]
pub struct Events {
    accounts: Mutex<HashMap<String, watch::Sender<u64>>>,
    deliveries: Mutex<Vec<Weak<Slot>>>,
}

/// What one delivery subscriber has not taken yet: every delivery since its last take,
/// merged (so it never lags and never holds more than one entry per account).
#[derive(Default)]
struct Pending {
    any: bool,
    accounts: Vec<String>,
    seen: HashSet<String>,
    queued: bool,
}

#[derive(Default)]
struct Slot {
    pending: Mutex<Pending>,
    ready: Notify,
    closed: AtomicBool,
}

impl Slot {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One subscriber's end of the delivery event.
pub struct Deliveries {
    slot: Arc<Slot>,
}

impl Deliveries {
    /// Every delivery published since the last call, merged into one [`Delivered`]
    /// (accounts without duplicates, in order of first delivery; `queued` when any was
    /// queued); waits while there is none. `None` once the [`Events`] are gone.
    pub async fn next(&mut self) -> Option<Delivered> {
        loop {
            {
                let mut p = self.slot.pending();
                if p.any {
                    let taken = std::mem::take(&mut *p);
                    return Some(Delivered {
                        accounts: taken.accounts,
                        queued: taken.queued,
                    });
                }
            }
            if self.slot.closed.load(Ordering::Acquire) {
                return None;
            }
            // `notify_one` keeps a permit when nobody waits: a publication between the
            // look above and this wait is not missed.
            self.slot.ready.notified().await;
        }
    }
}

impl Events {
    pub fn new() -> Self {
        Self::default()
    }

    /// A receiver that changes whenever the account's mailboxes change.
    pub fn subscribe(&self, account: &str) -> watch::Receiver<u64> {
        let mut map = self.accounts.lock().expect("events lock");
        map.entry(account.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Wake every session of `account`. Cheap when nobody listens.
    pub fn mailbox_changed(&self, account: &str) {
        let mut map = self.accounts.lock().expect("events lock");
        if let Some(tx) = map.get(account) {
            if tx.receiver_count() == 0 {
                map.remove(account);
            } else {
                tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    /// `account` was removed (expiry, `relaybox accounts delete`/`block`): the receivers
    /// of its sessions close, which ends those sessions; a later login subscribes afresh.
    pub fn account_removed(&self, account: &str) {
        // Dropping the sender closes every receiver.
        drop(self.accounts.lock().expect("events lock").remove(account));
    }

    /// Issue 17: the relay moved: every session's receiver closes, which ends them all
    /// (their clients connect again and find the new machine).
    pub fn end_all_sessions(&self) {
        drop(std::mem::take(&mut *self.accounts.lock().expect("events lock")));
    }

    /// A new subscriber of the delivery event: it sees every delivery published from
    /// now on.
    pub fn deliveries(&self) -> Deliveries {
        let slot = Arc::new(Slot::default());
        self.subscribers().push(Arc::downgrade(&slot));
        Deliveries { slot }
    }

    /// Publish a delivery to every subscriber. Never waits for one and never fails: a
    /// busy subscriber finds it merged with the next ones, a dropped one is forgotten.
    pub fn delivered(&self, d: &Delivered) {
        let mut subscribers = self.subscribers();
        subscribers.retain(|weak| {
            let Some(slot) = weak.upgrade() else {
                return false;
            };
            {
                let mut p = slot.pending();
                p.any = true;
                p.queued |= d.queued;
                for account in &d.accounts {
                    if p.seen.insert(account.clone()) {
                        p.accounts.push(account.clone());
                    }
                }
            }
            slot.ready.notify_one();
            true
        });
    }

    fn subscribers(&self) -> MutexGuard<'_, Vec<Weak<Slot>>> {
        self.deliveries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Events {
    /// Subscribers waiting in [`Deliveries::next`] end.
    fn drop(&mut self) {
        for slot in self.subscribers().drain(..).filter_map(|w| w.upgrade()) {
            slot.closed.store(true, Ordering::Release);
            slot.ready.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscriber_sees_change_of_its_account_only() {
        let ev = Events::new();
        let mut a = ev.subscribe("a@x");
        let mut b = ev.subscribe("b@x");
        ev.mailbox_changed("a@x");
        assert!(a.has_changed().unwrap());
        assert!(!b.has_changed().unwrap());
        a.changed().await.unwrap();
        b.mark_unchanged();
    }

    fn delivered(accounts: &[&str], queued: bool) -> Delivered {
        Delivered {
            accounts: accounts.iter().map(|a| a.to_string()).collect(),
            queued,
        }
    }

    #[tokio::test]
    async fn every_delivery_subscriber_gets_the_deliveries_merged_while_busy() {
        let ev = Events::new();
        let mut one = ev.deliveries();
        let mut two = ev.deliveries();
        ev.delivered(&delivered(&["a@x"], false));
        assert_eq!(one.next().await, Some(delivered(&["a@x"], false)));
        // `one` is busy (not waiting) while three more arrive: it gets them as one.
        ev.delivered(&delivered(&["b@x", "a@x"], false));
        ev.delivered(&delivered(&[], true));
        ev.delivered(&delivered(&["a@x", "c@x"], false));
        assert_eq!(
            one.next().await,
            Some(delivered(&["b@x", "a@x", "c@x"], true))
        );
        // `two` never took anything: everything, merged, in order of first delivery.
        assert_eq!(
            two.next().await,
            Some(delivered(&["a@x", "b@x", "c@x"], true))
        );
    }

    #[tokio::test]
    async fn a_waiting_subscriber_is_woken_and_ends_with_the_events() {
        let ev = Arc::new(Events::new());
        let mut sub = ev.deliveries();
        let waiter = tokio::spawn(async move {
            let first = sub.next().await;
            let end = sub.next().await;
            (first, end)
        });
        tokio::task::yield_now().await;
        ev.delivered(&delivered(&["a@x"], true));
        // Taken before or after the end, the delivery is seen, then the end.
        drop(Arc::into_inner(ev).expect("one owner"));
        let (first, end) = tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("subscriber ends")
            .unwrap();
        assert_eq!(first, Some(delivered(&["a@x"], true)));
        assert_eq!(end, None);
    }

    #[tokio::test]
    async fn a_dropped_subscriber_is_forgotten_and_blocks_nothing() {
        let ev = Events::new();
        let gone = ev.deliveries();
        let mut kept = ev.deliveries();
        drop(gone);
        ev.delivered(&delivered(&["a@x"], false));
        assert_eq!(ev.subscribers().len(), 1);
        assert_eq!(kept.next().await, Some(delivered(&["a@x"], false)));
    }
}
