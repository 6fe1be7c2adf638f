//! A relay that moves to another machine (issue 17, `relaybox move`): the one piece of
//! state that says so — the new machine's address (`moved_to`), or none — and the gate
//! that makes the switch exact.
//!
//! A delivery holds the gate ([`Moving::hold`]) from the moment it reads the state until
//! its commit returned; [`Moving::switch`] waits for the deliveries in flight, runs the
//! caller's step (opening the final backup's read transaction) and sets the target before
//! it lets the next delivery in. So every message is either in the final backup (committed
//! before the switch, stored locally) or forwarded to the new machine (after it): never
//! both, never neither.

use std::sync::RwLock as StdRwLock;

use tokio::sync::{RwLock, RwLockReadGuard};

/// Where this relay moves to, if it does.
#[derive(Debug, Default)]
pub struct Moving {
    gate: RwLock<Option<String>>,
    /// The same value for readers that must not wait (IMAP logins, status).
    now: StdRwLock<Option<String>>,
}

/// Held by one delivery while it decides where its local recipients go and commits.
pub type Hold<'a> = RwLockReadGuard<'a, Option<String>>;

impl Moving {
    /// The state at start: `moved_to` of chatmail.ini (empty: not moving).
    pub fn new(moved_to: &str) -> Moving {
        let target = (!moved_to.is_empty()).then(|| moved_to.to_string());
        Moving {
            gate: RwLock::new(target.clone()),
            now: StdRwLock::new(target),
        }
    }

    /// The new machine's address, if this relay is moving.
    pub fn target(&self) -> Option<String> {
        self.now.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether this relay is moving (it serves no mailboxes any more).
    pub fn is_moving(&self) -> bool {
        self.target().is_some()
    }

    /// Enter the gate for one delivery: the target stays as it reads until the guard is
    /// dropped (after the commit).
    pub async fn hold(&self) -> Hold<'_> {
        self.gate.read().await
    }

    /// Switch to moving to `to`: wait for the deliveries in flight, run `at_switch` (no
    /// delivery runs meanwhile), then set the target. Returns what `at_switch` returned;
    /// when it fails, nothing changes.
    pub async fn switch<T, E>(
        &self,
        to: &str,
        at_switch: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let mut gate = self.gate.write().await;
        let result = at_switch()?;
        *gate = Some(to.to_string());
        *self.now.write().unwrap_or_else(|e| e.into_inner()) = Some(to.to_string());
        Ok(result)
    }
}

/// `moved_to`: empty, an IP address, or a host name (letters, digits, `-`, `.`).
pub fn parse_target(v: &str) -> Result<String, String> {
    let v = v.trim();
    if v.is_empty() || v.parse::<std::net::IpAddr>().is_ok() {
        return Ok(v.to_string());
    }
    let name = v.trim_end_matches('.');
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(format!(
            "expected the new machine's IP address or host name, got {v:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn targets() {
        assert_eq!(parse_target(""), Ok(String::new()));
        assert_eq!(parse_target("192.0.2.7"), Ok("192.0.2.7".into()));
        assert_eq!(parse_target("2001:db8::7"), Ok("2001:db8::7".into()));
        assert_eq!(parse_target("New.Example.org."), Ok("new.example.org".into()));
        for bad in ["a b", "-x.org", "x..org", "x/y", "[192.0.2.1]"] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    /// The switch waits for a delivery that holds the gate, and a delivery that comes
    /// after it sees the target.
    #[tokio::test]
    async fn switch_waits_for_deliveries_in_flight() {
        let moving = Arc::new(Moving::new(""));
        let hold = moving.hold().await;
        assert_eq!(*hold, None);
        let (m, ran) = (moving.clone(), Arc::new(std::sync::atomic::AtomicBool::new(false)));
        let ran2 = ran.clone();
        let switch = tokio::spawn(async move {
            m.switch("192.0.2.7", || {
                ran2.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok::<_, ()>(())
            })
            .await
        });
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(
            !ran.load(std::sync::atomic::Ordering::SeqCst),
            "the switch ran while a delivery held the gate"
        );
        assert!(!moving.is_moving());
        drop(hold);
        switch.await.unwrap().unwrap();
        assert_eq!(*moving.hold().await, Some("192.0.2.7".to_string()));
        assert_eq!(moving.target().as_deref(), Some("192.0.2.7"));
    }

    #[tokio::test]
    async fn a_failed_switch_changes_nothing() {
        let moving = Moving::new("");
        let r = moving.switch("192.0.2.7", || Err::<(), _>("no")).await;
        assert_eq!(r, Err("no"));
        assert!(!moving.is_moving());
        assert_eq!(Moving::new("x.org").target().as_deref(), Some("x.org"));
    }
}
