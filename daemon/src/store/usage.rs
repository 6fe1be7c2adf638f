//! Mailbox usage per account (QUOTA-1) kept in memory, so the quota check of a
//! delivery does not scan the recipient's messages inside the shared write commit.
//!
//! The writer thread is the only mutator of the store, so it keeps the cache exact:
//! a delivery adds its size, every other change of an account's messages forgets the
//! entry, and a failed commit forgets everything. Readers fill a missing entry from a
//! snapshot only if no change of that account happened meanwhile (generation check).

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
struct Entry {
    /// Bumped by every change of the account.
    generation: u64,
    bytes: Option<u64>,
}

#[derive(Default)]
pub(super) struct UsageCache {
    map: Mutex<HashMap<String, Entry>>,
}

impl UsageCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached usage, or the generation to pass to [`UsageCache::fill`].
    pub fn get(&self, account: &str) -> Result<u64, u64> {
        match self.lock().get(account) {
            Some(Entry { bytes: Some(b), .. }) => Ok(*b),
            Some(e) => Err(e.generation),
            None => Err(0),
        }
    }

    /// Store a usage computed from a snapshot taken at `generation`.
    pub fn fill(&self, account: &str, generation: u64, bytes: u64) {
        let mut map = self.lock();
        if map.len() > 100_000 {
            map.retain(|_, e| e.bytes.is_none() && e.generation > 0);
        }
        let e = map.entry(account.to_string()).or_default();
        if e.generation == generation {
            e.bytes = Some(bytes);
        }
    }

    /// Writer: the account got `bytes` more.
    pub fn add(&self, account: &str, bytes: u64) {
        let mut map = self.lock();
        if let Some(e) = map.get_mut(account) {
            e.generation += 1;
            e.bytes = e.bytes.map(|b| b.saturating_add(bytes));
        }
    }

    /// Writer: the account's messages changed in a way not worth tracking exactly.
    pub fn forget(&self, account: &str) {
        let mut map = self.lock();
        let e = map.entry(account.to_string()).or_default();
        e.generation += 1;
        e.bytes = None;
    }

    /// Writer: a commit failed; nothing cached can be trusted.
    pub fn forget_all(&self) {
        for e in self.lock().values_mut() {
            e.generation += 1;
            e.bytes = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_refused_after_a_concurrent_change() {
        let c = UsageCache::default();
        let g = c.get("a").unwrap_err();
        c.forget("a"); // a change between the snapshot and the fill
        c.fill("a", g, 10);
        let g = c.get("a").unwrap_err();
        c.fill("a", g, 12);
        assert_eq!(c.get("a"), Ok(12));
        c.add("a", 3);
        assert_eq!(c.get("a"), Ok(15));
        c.add("b", 3); // unknown accounts stay unknown
        assert!(c.get("b").is_err());
        c.forget_all();
        assert!(c.get("a").is_err());
    }
}
