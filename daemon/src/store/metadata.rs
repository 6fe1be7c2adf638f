//! IMAP METADATA device tokens (`TOKENS`, MD-1): `/private/devicetoken` of each account with
//! the time it was first registered and last set. The push jobs a delivery creates for
//! them are `push.rs`'s.

use redb::{ReadableTable, WriteTransaction};

use super::tables::TOKENS;
use super::{Store, StoreError};

impl Store {
    /// SETMETADATA `/private/devicetoken`: add a token or refresh its time (MD-1).
    pub async fn set_device_token(
        &self,
        account: &str,
        token: &str,
        now: u64,
    ) -> Result<(), StoreError> {
        let (account, token) = (account.to_string(), token.to_string());
        self.writer
            .run(true, move |tx| {
                let mut t = tx.open_table(TOKENS)?;
                let first = t
                    .get((account.as_str(), token.as_str()))?
                    .map(|v| v.value().0)
                    .unwrap_or(now);
                t.insert((account.as_str(), token.as_str()), (first, now))?;
                Ok(())
            })
            .await
    }

    /// Device tokens of an account: (token, first registration, last SET).
    pub fn device_tokens(&self, account: &str) -> Result<Vec<(String, u64, u64)>, StoreError> {
        let rx = self.read()?;
        let mut out = account_tokens(&rx.open_table(TOKENS)?, account)?;
        out.sort_by_key(|t| t.1);
        Ok(out)
    }

    /// Remove device tokens of an account.
    pub async fn remove_device_tokens(
        &self,
        account: &str,
        tokens: Vec<String>,
    ) -> Result<(), StoreError> {
        let account = account.to_string();
        self.writer
            .run(false, move |tx| {
                let mut t = tx.open_table(TOKENS)?;
                for token in &tokens {
                    t.remove((account.as_str(), token.as_str()))?;
                }
                Ok(())
            })
            .await
    }
}

/// The device tokens of an account by token: (token, first registration, last SET), from
/// a snapshot or from inside a write transaction.
pub(super) fn account_tokens(
    t: &impl ReadableTable<(&'static str, &'static str), (u64, u64)>,
    account: &str,
) -> Result<Vec<(String, u64, u64)>, StoreError> {
    let mut out = Vec::new();
    for row in t.range((account, "")..)? {
        let (k, v) = row?;
        let (acc, token) = k.value();
        if acc != account {
            break;
        }
        let (first, last) = v.value();
        out.push((token.to_string(), first, last));
    }
    Ok(out)
}

/// Remove every device token of an account; returns how many there were.
pub(super) fn remove_all_tokens(tx: &WriteTransaction, account: &str) -> Result<usize, StoreError> {
    let mut t = tx.open_table(TOKENS)?;
    let tokens = account_tokens(&t, account)?;
    for (token, _, _) in &tokens {
        t.remove((account, token.as_str()))?;
    }
    Ok(tokens.len())
}
