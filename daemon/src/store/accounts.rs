//! Accounts (`ACCOUNTS`): creation with the INBOX (ACC-7), the last login day (LL-1),
//! deletion of an account with everything it owns (EXP-1), and the sum of an account's
//! stored message sizes (QUOTA-1) that the usage cache (`usage.rs`) keeps.

use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::codec::{Dec, Enc};
use super::mailboxes::{self, MessageRow, get_mailbox, new_mailbox};
use super::tables::{ACCOUNTS, MAILBOXES, MESSAGES};
use super::{Store, StoreError, metadata, push};

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
        .0
}

fn decode_account(address: &str, b: &[u8]) -> Result<Account, StoreError> {
    let mut d = Dec(b);
    Ok(Account {
        address: address.to_string(),
        password_hash: d.str()?,
        last_login_day: d.u64()?,
        enforce_e2ee: d.u8()? != 0,
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
    /// logins store one hash). Durable.
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
    pub async fn set_last_login_day(&self, address: &str, day: u64) -> Result<(), StoreError> {
        match self.account(address)? {
            Some(a) if a.last_login_day != day => {}
            _ => return Ok(()),
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
                }
                Ok(())
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
            .run(true, move |tx| {
                usage.forget(&address);
                let existed = tx.open_table(ACCOUNTS)?.remove(address.as_str())?.is_some();
                let mut removal = AccountRemoval::default();
                let boxes = mailboxes::account_mailboxes(&tx.open_table(MAILBOXES)?, &address)?;
                for (name, mb) in &boxes {
                    removal.messages += mailboxes::remove_mailbox_in(tx, &address, name, mb)?;
                    removal.mailboxes += 1;
                }
                removal.tokens = metadata::remove_all_tokens(tx, &address)?;
                // Pending pushes of the account go with its tokens.
                push::remove_account_jobs(tx, &address)?;
                let anything = existed || removal != AccountRemoval::default();
                Ok(anything.then_some(removal))
            })
            .await
    }

    /// Sum of stored message sizes over all mailboxes (QUOTA-1); from memory, or from
    /// one snapshot on first use.
    pub fn usage(&self, account: &str) -> Result<u64, StoreError> {
        let generation = match self.usage.get(account) {
            Ok(bytes) => return Ok(bytes),
            Err(generation) => generation,
        };
        let rx = self.read()?;
        let total = sum_usage(
            &rx.open_table(MAILBOXES)?,
            &rx.open_table(MESSAGES)?,
            account,
        )?;
        self.usage.fill(account, generation, total);
        Ok(total)
    }
}

/// Sum of stored message sizes of an account inside a write transaction (QUOTA-1).
pub(super) fn usage_in(tx: &WriteTransaction, account: &str) -> Result<u64, StoreError> {
    sum_usage(
        &tx.open_table(MAILBOXES)?,
        &tx.open_table(MESSAGES)?,
        account,
    )
}

/// Sum of stored message sizes of an account over all its mailboxes (QUOTA-1), read
/// from a snapshot or from inside a write transaction.
fn sum_usage(
    boxes: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    msgs: &impl ReadableTable<(u64, u32), &'static [u8]>,
    account: &str,
) -> Result<u64, StoreError> {
    let mut total = 0u64;
    for (_, mb) in mailboxes::account_mailboxes(boxes, account)? {
        for m in msgs.range((mb.id, 0)..=(mb.id, u32::MAX))? {
            let (_, mv) = m?;
            total = total.saturating_add(MessageRow::decode(mv.value())?.size);
        }
    }
    Ok(total)
}
