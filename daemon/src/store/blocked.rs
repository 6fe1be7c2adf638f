//! Blocked addresses (`BLOCKED`): addresses the operator removed for good, which no
//! login may create again (`relaybox accounts block`). Blocking an address that has an
//! account deletes the account in the same durable commit.

use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::accounts::{AccountRemoval, remove_account_in};
use super::codec::{Dec, Enc};
use super::tables::BLOCKED;
use super::{Store, StoreError};

/// A blocked address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedAddress {
    /// Lower-case address, `user@domain`.
    pub address: String,
    /// Unix seconds of the block.
    pub since: u64,
}

/// Outcome of [`Store::block_address`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// Blocked now; `Some` with what went when the address had an account.
    New(Option<AccountRemoval>),
    /// It was blocked already; nothing changed.
    Already,
}

/// The row: the time of the block (fields appended later are read only when present).
fn encode(since: u64) -> Vec<u8> {
    Enc::default().u64(since).0
}

fn decode(address: &str, b: &[u8]) -> Result<BlockedAddress, StoreError> {
    Ok(BlockedAddress {
        address: address.to_string(),
        since: Dec(b).u64()?,
    })
}

/// Whether `address` is blocked, inside a write transaction.
pub(super) fn is_blocked_in(tx: &WriteTransaction, address: &str) -> Result<bool, StoreError> {
    Ok(tx.open_table(BLOCKED)?.get(address)?.is_some())
}

impl Store {
    /// Whether `address` is blocked.
    pub fn is_blocked(&self, address: &str) -> Result<bool, StoreError> {
        let rx = self.read()?;
        Ok(rx.open_table(BLOCKED)?.get(address)?.is_some())
    }

    /// Number of blocked addresses.
    pub fn blocked_count(&self) -> Result<u64, StoreError> {
        let rx = self.read()?;
        Ok(rx.open_table(BLOCKED)?.len()?)
    }

    /// Block `address` at `now` and delete its account with everything it owns, in one
    /// durable commit.
    pub async fn block_address(&self, address: &str, now: u64) -> Result<Block, StoreError> {
        let address = address.to_string();
        let usage = self.usage.clone();
        self.writer
            .run(true, move |tx| {
                if is_blocked_in(tx, &address)? {
                    return Ok(Block::Already);
                }
                tx.open_table(BLOCKED)?
                    .insert(address.as_str(), encode(now).as_slice())?;
                Ok(Block::New(remove_account_in(tx, &usage, &address)?))
            })
            .await
    }

    /// Lift the block of `address` (durable); `false` when it was not blocked.
    pub async fn unblock_address(&self, address: &str) -> Result<bool, StoreError> {
        let address = address.to_string();
        self.writer
            .run(true, move |tx| {
                Ok(tx.open_table(BLOCKED)?.remove(address.as_str())?.is_some())
            })
            .await
    }

    /// Up to `limit` blocked addresses after `after`, containing `contains` when given,
    /// and whether more follow (bounded memory, like [`Store::account_page`]).
    pub fn blocked_page(
        &self,
        after: Option<&str>,
        contains: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<BlockedAddress>, bool), StoreError> {
        let rx = self.read()?;
        let t = rx.open_table(BLOCKED)?;
        let range = match after {
            Some(a) => {
                t.range::<&str>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))?
            }
            None => t.range::<&str>(..)?,
        };
        let mut out = Vec::new();
        for row in range {
            let (k, v) = row?;
            if contains.is_some_and(|c| !k.value().contains(c)) {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(decode(k.value(), v.value())?);
        }
        Ok((out, false))
    }
}
