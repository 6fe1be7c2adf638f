//! In-process notifications: new mail per account (wakes IMAP IDLE without polling).

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::watch;

/// Per-account change counters. A delivery or any other mailbox change calls
/// [`Events::mailbox_changed`]; IDLE sessions wait on the receiver from [`Events::subscribe`].
#[derive(Default)]
pub struct Events {
    accounts: Mutex<HashMap<String, watch::Sender<u64>>>,
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
}
