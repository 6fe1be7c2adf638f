//! Accounts (`ACCOUNTS`): creation with the INBOX (ACC-7) and its time, the last login
//! day (LL-1), deletion of an account with everything it owns (EXP-1, and the operator's
//! `relaybox accounts delete`), the sum of an account's stored message sizes (QUOTA-1)
//! that the usage cache (`usage.rs`) keeps, and pages of accounts with their figures for
//! the operator's list.

use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::codec::{Dec, Enc};
use super::mailboxes::{self, MessageRow, get_mailbox, new_mailbox};
use super::tables::{ACCOUNTS, MAILBOXES, MESSAGES};
use super::usage::UsageCache;
use super::{Store, StoreError, blocked, metadata, push};

/// A stored account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Lower-case address, `user@domain`.
    pub address: String,
    /// `{SHA512-CRYPT}$6$...` (ACC-10).
    pub password_hash: String,
    /// Unix seconds, floored to the day (LL-1).
    pub last_login_day: u64,
    /// New accounts refuse cleartext inbound mail (ACC-9).
    pub enforce_e2ee: bool,
    /// Unix seconds of the creation; `None` for accounts created before it was recorded
    /// (the field is appended to the row and read only when present).
    pub created: Option<u64>,
}

/// An account with its figures, for the operator's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFigures {
    pub account: Account,
    /// Messages stored for the account, over all its mailboxes.
    pub messages: u64,
    /// Sum of their sizes (QUOTA-1).
    pub bytes: u64,
}

/// Outcome of [`Store::create_account`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// This call created the account.
    New,
    /// It existed already (another login won the race); here is the stored record.
    Existing(Account),
}

/// What [`Store::delete_account`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountRemoval {
    pub mailboxes: usize,
    pub messages: usize,
    pub tokens: usize,
}

impl Account {
    /// A new account created at `now` (its login day that day, LL-1; ACC-9).
    pub(super) fn new(address: &str, password_hash: &str, now: u64) -> Account {
        Account {
            address: address.to_string(),
            password_hash: password_hash.to_string(),
            last_login_day: now / 86400 * 86400,
            enforce_e2ee: true,
            created: Some(now),
        }
    }
}

/// The account at `address`, read inside a write transaction.
pub(super) fn existing_account(
    tx: &WriteTransaction,
    address: &str,
) -> Result<Option<Account>, StoreError> {
    let t = tx.open_table(ACCOUNTS)?;
    let row = t.get(address)?;
    row.map(|v| decode_account(address, v.value())).transpose()
}

/// Insert `account` with its INBOX unless the address exists (ACC-7): the one creation
/// step of [`Store::create_account`] and of the creation with an invite (`invites.rs`).
pub(super) fn insert_account(
    tx: &WriteTransaction,
    account: &Account,
) -> Result<Created, StoreError> {
    if blocked::is_blocked_in(tx, &account.address)? {
        return Err(StoreError::Blocked);
    }
    if let Some(a) = existing_account(tx, &account.address)? {
        return Ok(Created::Existing(a));
    }
    tx.open_table(ACCOUNTS)?
        .insert(account.address.as_str(), encode_account(account).as_slice())?;
    if get_mailbox(tx, &account.address, "INBOX")?.is_none() {
        new_mailbox(tx, &account.address, "INBOX")?;
    }
    Ok(Created::New)
}

fn encode_account(a: &Account) -> Vec<u8> {
    Enc::default()
        .str(&a.password_hash)
        .u64(a.last_login_day)
        .u8(a.enforce_e2ee as u8)
        .u64(a.created.unwrap_or(0))
        .0
}

fn decode_account(address: &str, b: &[u8]) -> Result<Account, StoreError> {
    let mut d = Dec(b);
    Ok(Account {
        address: address.to_string(),
        password_hash: d.str()?,
        last_login_day: d.u64()?,
        enforce_e2ee: d.u8()? != 0,
        // Appended later: rows written before have none (0 was never written).
        created: if d.0.is_empty() {
            None
        } else {
            Some(d.u64()?).filter(|&t| t != 0)
        },
    })
}

impl Store {
    pub fn account(&self, address: &str) -> Result<Option<Account>, StoreError> {
        let rx = self.read()?;
        let t = rx.open_table(ACCOUNTS)?;
        let row = t.get(address)?;
        row.map(|v| decode_account(address, v.value())).transpose()
    }

    pub fn account_count(&self) -> Result<u64, StoreError> {
        let rx = self.read()?;
        Ok(rx.open_table(ACCOUNTS)?.len()?)
    }

    /// Create the account with its INBOX unless it exists (ACC-7: concurrent first
    /// logins store one hash), at `now` (its creation time). Durable. A blocked address
    /// is refused with [`StoreError::Blocked`] in the same transaction, so a block that
    /// lands between the caller's check and this commit still wins.
    pub async fn create_account(
        &self,
        address: &str,
        password_hash: &str,
        now: u64,
    ) -> Result<Created, StoreError> {
        let account = Account::new(address, password_hash, now);
        self.writer
            .run(true, move |tx| insert_account(tx, &account))
            .await
    }

    /// Record an IMAP login day (LL-1); writes only when the day changed, not durably.
    /// Returns whether the account exists (a login that raced its deletion must not go on).
    pub async fn set_last_login_day(&self, address: &str, day: u64) -> Result<bool, StoreError> {
        match self.account(address)? {
            Some(a) if a.last_login_day != day => {}
            Some(_) => return Ok(true),
            None => return Ok(false),
        }
        let address = address.to_string();
        self.writer
            .run(false, move |tx| {
                let cur = {
                    let t = tx.open_table(ACCOUNTS)?;
                    let row = t.get(address.as_str())?;
                    row.map(|v| decode_account(&address, v.value()))
                        .transpose()?
                };
                if let Some(mut a) = cur {
                    a.last_login_day = day;
                    tx.open_table(ACCOUNTS)?
                        .insert(address.as_str(), encode_account(&a).as_slice())?;
                    return Ok(true);
                }
                Ok(false)
            })
            .await
    }

    /// Every account, by address (the daily expiry walks them).
    pub fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let rx = self.read()?;
        let t = rx.open_table(ACCOUNTS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.push(decode_account(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Delete an account with everything it owns: the account row (hash, last login),
    /// its mailboxes, their messages (each body goes with its last reference) and its
    /// device tokens (EXP-1). Durable: a deleted account must not come back after a
    /// crash. Returns `None` when there was no such account and nothing was removed.
    pub async fn delete_account(
        &self,
        address: &str,
    ) -> Result<Option<AccountRemoval>, StoreError> {
        let address = address.to_string();
        let usage = self.usage.clone();
        self.writer
            .run(true, move |tx| remove_account_in(tx, &usage, &address))
            .await
    }

    /// Up to `limit` accounts after `after` (by address), whose address contains
    /// `contains` when given, with their figures, read from one snapshot; and whether
    /// more follow. Memory is bounded by `limit` whatever the number of accounts.
    pub fn account_page(
        &self,
        after: Option<&str>,
        contains: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<AccountFigures>, bool), StoreError> {
        let rx = self.read()?;
        let accounts = rx.open_table(ACCOUNTS)?;
        let boxes = rx.open_table(MAILBOXES)?;
        let msgs = rx.open_table(MESSAGES)?;
        let range = match after {
            Some(a) => accounts
                .range::<&str>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))?,
            None => accounts.range::<&str>(..)?,
        };
        let mut out = Vec::new();
        for row in range {
            let (k, v) = row?;
            let address = k.value();
            if contains.is_some_and(|c| !address.contains(c)) {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            let account = decode_account(address, v.value())?;
            let (messages, bytes) = figures(&boxes, &msgs, address)?;
            out.push(AccountFigures {
                account,
                messages,
                bytes,
            });
        }
        Ok((out, false))
    }

    /// Sum of stored message sizes over all mailboxes (QUOTA-1); from memory, or from
    /// one snapshot on first use.
    pub fn usage(&self, account: &str) -> Result<u64, StoreError> {
        let generation = match self.usage.get(account) {
            Ok(bytes) => return Ok(bytes),
            Err(generation) => generation,
        };
        let rx = self.read()?;
        let (_, total) = figures(
            &rx.open_table(MAILBOXES)?,
            &rx.open_table(MESSAGES)?,
            account,
        )?;
        self.usage.fill(account, generation, total);
        Ok(total)
    }
}

/// Delete an account with everything it owns inside a write transaction (see
/// [`Store::delete_account`]); `None` when nothing was there.
pub(super) fn remove_account_in(
    tx: &WriteTransaction,
    usage: &UsageCache,
    address: &str,
) -> Result<Option<AccountRemoval>, StoreError> {
    usage.forget(address);
    let existed = tx.open_table(ACCOUNTS)?.remove(address)?.is_some();
    let mut removal = AccountRemoval::default();
    let boxes = mailboxes::account_mailboxes(&tx.open_table(MAILBOXES)?, address)?;
    for (name, mb) in &boxes {
        removal.messages += mailboxes::remove_mailbox_in(tx, address, name, mb)?;
        removal.mailboxes += 1;
    }
    removal.tokens = metadata::remove_all_tokens(tx, address)?;
    // Pending pushes of the account go with its tokens.
    push::remove_account_jobs(tx, address)?;
    let anything = existed || removal != AccountRemoval::default();
    Ok(anything.then_some(removal))
}

/// Number and total size (QUOTA-1) of an account's stored messages over all its
/// mailboxes, read from a snapshot or from inside a write transaction.
fn figures(
    boxes: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    msgs: &impl ReadableTable<(u64, u32), &'static [u8]>,
    account: &str,
) -> Result<(u64, u64), StoreError> {
    let (mut count, mut total) = (0u64, 0u64);
    for (_, mb) in mailboxes::account_mailboxes(boxes, account)? {
        for m in msgs.range((mb.id, 0)..=(mb.id, u32::MAX))? {
            let (_, mv) = m?;
            count += 1;
            total = total.saturating_add(MessageRow::decode(mv.value())?.size);
        }
    }
    Ok((count, total))
}

/// Sum of stored message sizes of an account inside a write transaction (QUOTA-1).
pub(super) fn usage_in(tx: &WriteTransaction, account: &str) -> Result<u64, StoreError> {
    Ok(figures(
        &tx.open_table(MAILBOXES)?,
        &tx.open_table(MESSAGES)?,
        account,
    )?
    .1)
}
