//! Mailboxes (`MAILBOXES`) and the message rows in them (`MESSAGES`: flags, size, date,
//! body id): listing, creation, deletion, renaming and subscription (RFC 9051 §6.3), and the
//! IMAP changes of message rows — APPEND, STORE, EXPUNGE, COPY/MOVE and removal by expiry
//! or quota trimming, which go through the write-ahead log (`op.rs`). A delivery adds its
//! rows through `delivery.rs`; the bodies the rows point at are `bodies.rs`'s.

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use super::bodies::unref_body;
use super::codec::{Dec, Enc};
use super::tables::{MAILBOXES, MESSAGES};
use super::{Store, StoreError, next_id, op};
use crate::message::Parsed;

/// IMAP system flags as a bit set plus keywords.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    pub bits: u8,
    pub keywords: Vec<String>,
}

impl Flags {
    pub const SEEN: u8 = 1;
    pub const ANSWERED: u8 = 2;
    pub const FLAGGED: u8 = 4;
    pub const DELETED: u8 = 8;
    pub const DRAFT: u8 = 16;

    pub fn has(&self, bit: u8) -> bool {
        self.bits & bit != 0
    }
}

/// How STORE changes flags (RFC 9051 §6.4.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    Replace,
    Add,
    Remove,
}

/// One mailbox of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxInfo {
    pub name: String,
    pub uid_validity: u32,
    pub uid_next: u32,
    pub subscribed: bool,
}

/// Per-message data needed for sequence numbers, FETCH FLAGS/SIZE/INTERNALDATE, SEARCH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    pub uid: u32,
    pub flags: Flags,
    /// Length of the stored bytes (RFC822.SIZE).
    pub size: u64,
    /// Arrival time, Unix seconds.
    pub internal_date: u64,
}

/// A message of an account, with the mailbox it is in (expiry and quota trimming).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountMessage {
    pub mailbox: String,
    pub meta: MessageMeta,
}

pub(super) struct MailboxRow {
    pub(super) id: u64,
    pub(super) uid_validity: u32,
    pub(super) uid_next: u32,
    pub(super) subscribed: bool,
}

impl MailboxRow {
    pub(super) fn encode(&self) -> Vec<u8> {
        Enc::default()
            .u64(self.id)
            .u32(self.uid_validity)
            .u32(self.uid_next)
            .u8(self.subscribed as u8)
            .0
    }
    pub(super) fn decode(b: &[u8]) -> Result<Self, StoreError> {
        let mut d = Dec(b);
        Ok(MailboxRow {
            id: d.u64()?,
            uid_validity: d.u32()?,
            uid_next: d.u32()?,
            subscribed: d.u8()? != 0,
        })
    }
    pub(super) fn info(&self, name: &str) -> MailboxInfo {
        MailboxInfo {
            name: name.to_string(),
            uid_validity: self.uid_validity,
            uid_next: self.uid_next,
            subscribed: self.subscribed,
        }
    }
}

pub(super) struct MessageRow {
    pub(super) body_id: u64,
    pub(super) size: u64,
    pub(super) internal_date: u64,
    pub(super) flags: Flags,
}

impl MessageRow {
    pub(super) fn encode(&self) -> Vec<u8> {
        Enc::default()
            .u64(self.body_id)
            .u64(self.size)
            .u64(self.internal_date)
            .u8(self.flags.bits)
            .strs(&self.flags.keywords)
            .0
    }
    pub(super) fn decode(b: &[u8]) -> Result<Self, StoreError> {
        let mut d = Dec(b);
        Ok(MessageRow {
            body_id: d.u64()?,
            size: d.u64()?,
            internal_date: d.u64()?,
            flags: Flags {
                bits: d.u8()?,
                keywords: d.strs()?,
            },
        })
    }
    pub(super) fn meta(&self, uid: u32) -> MessageMeta {
        MessageMeta {
            uid,
            flags: self.flags.clone(),
            size: self.size,
            internal_date: self.internal_date,
        }
    }
}

pub(super) fn get_mailbox(
    tx: &WriteTransaction,
    account: &str,
    name: &str,
) -> Result<Option<MailboxRow>, StoreError> {
    let t = tx.open_table(MAILBOXES)?;
    let row = t.get((account, name))?;
    row.map(|v| MailboxRow::decode(v.value())).transpose()
}

pub(super) fn put_mailbox(
    tx: &WriteTransaction,
    account: &str,
    name: &str,
    row: &MailboxRow,
) -> Result<(), StoreError> {
    tx.open_table(MAILBOXES)?
        .insert((account, name), row.encode().as_slice())?;
    Ok(())
}

pub(super) fn new_mailbox(
    tx: &WriteTransaction,
    account: &str,
    name: &str,
) -> Result<MailboxRow, StoreError> {
    let id = next_id(tx)?;
    let row = MailboxRow {
        id,
        // RFC 9051 §2.3.1.1: unique per (name, incarnation); the store-wide id never repeats.
        uid_validity: (id & 0xFFFF_FFFF) as u32,
        uid_next: 1,
        subscribed: true,
    };
    put_mailbox(tx, account, name, &row)?;
    Ok(row)
}

/// Append a message row to a mailbox, taking its next UID.
pub(super) fn add_message(
    tx: &WriteTransaction,
    account: &str,
    mailbox: &str,
    row: &MessageRow,
) -> Result<(u32, u32), StoreError> {
    let mut mb = get_mailbox(tx, account, mailbox)?.ok_or(StoreError::NoMailbox)?;
    let uid = mb.uid_next;
    mb.uid_next += 1;
    put_mailbox(tx, account, mailbox, &mb)?;
    tx.open_table(MESSAGES)?
        .insert((mb.id, uid), row.encode().as_slice())?;
    Ok((mb.uid_validity, uid))
}

fn read_mailbox(
    rx: &ReadTransaction,
    account: &str,
    name: &str,
) -> Result<Option<MailboxRow>, StoreError> {
    let t = match rx.open_table(MAILBOXES) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let row = t.get((account, name))?;
    row.map(|v| MailboxRow::decode(v.value())).transpose()
}

/// The body id of message `uid` in a mailbox, if both exist.
pub(super) fn message_body_id(
    rx: &ReadTransaction,
    account: &str,
    name: &str,
    uid: u32,
) -> Result<Option<u64>, StoreError> {
    let Some(mb) = read_mailbox(rx, account, name)? else {
        return Ok(None);
    };
    let msgs = rx.open_table(MESSAGES)?;
    let Some(row) = msgs.get((mb.id, uid))? else {
        return Ok(None);
    };
    Ok(Some(MessageRow::decode(row.value())?.body_id))
}

/// The mailboxes of an account (name and row) by name, from a snapshot or from inside a
/// write transaction.
pub(super) fn account_mailboxes(
    boxes: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    account: &str,
) -> Result<Vec<(String, MailboxRow)>, StoreError> {
    let mut out = Vec::new();
    for row in boxes.range((account, "")..)? {
        let (k, v) = row?;
        let (acc, name) = k.value();
        if acc != account {
            break;
        }
        out.push((name.to_string(), MailboxRow::decode(v.value())?));
    }
    Ok(out)
}

/// Remove mailbox `name` (row `mb`) of an account with its messages; each body goes with
/// its last reference. Returns the number of messages removed.
pub(super) fn remove_mailbox_in(
    tx: &WriteTransaction,
    account: &str,
    name: &str,
    mb: &MailboxRow,
) -> Result<usize, StoreError> {
    let rows = take_messages(tx, mb.id, |_, _| true)?;
    for (_, row) in &rows {
        unref_body(tx, row.body_id)?;
    }
    tx.open_table(MAILBOXES)?.remove((account, name))?;
    Ok(rows.len())
}

impl Store {
    /// All mailboxes of an account, by name.
    pub fn mailboxes(&self, account: &str) -> Result<Vec<MailboxInfo>, StoreError> {
        let rx = self.read()?;
        let rows = account_mailboxes(&rx.open_table(MAILBOXES)?, account)?;
        Ok(rows.iter().map(|(name, mb)| mb.info(name)).collect())
    }

    pub fn mailbox(&self, account: &str, name: &str) -> Result<Option<MailboxInfo>, StoreError> {
        let rx = self.read()?;
        Ok(read_mailbox(&rx, account, name)?.map(|r| r.info(name)))
    }

    /// A consistent snapshot of a mailbox and its messages in UID order.
    pub fn messages(
        &self,
        account: &str,
        name: &str,
    ) -> Result<(MailboxInfo, Vec<MessageMeta>), StoreError> {
        let rx = self.read()?;
        let mb = read_mailbox(&rx, account, name)?.ok_or(StoreError::NoMailbox)?;
        let t = rx.open_table(MESSAGES)?;
        let mut out = Vec::new();
        for row in t.range((mb.id, 0)..=(mb.id, u32::MAX))? {
            let (k, v) = row?;
            out.push(MessageRow::decode(v.value())?.meta(k.value().1));
        }
        Ok((mb.info(name), out))
    }

    pub async fn create_mailbox(&self, account: &str, name: &str) -> Result<(), StoreError> {
        let (account, name) = (account.to_string(), name.to_string());
        self.writer
            .run(true, move |tx| {
                if get_mailbox(tx, &account, &name)?.is_some() {
                    return Err(StoreError::MailboxExists);
                }
                new_mailbox(tx, &account, &name)?;
                Ok(())
            })
            .await
    }

    /// Delete a mailbox and its messages (RFC 9051 §6.3.5).
    pub async fn delete_mailbox(&self, account: &str, name: &str) -> Result<(), StoreError> {
        let (account, name) = (account.to_string(), name.to_string());
        let usage = self.usage.clone();
        self.writer
            .run(true, move |tx| {
                usage.forget(&account);
                let mb = get_mailbox(tx, &account, &name)?.ok_or(StoreError::NoMailbox)?;
                remove_mailbox_in(tx, &account, &name, &mb)?;
                Ok(())
            })
            .await
    }

    /// Rename a mailbox, keeping its messages and UIDVALIDITY (RFC 9051 §6.3.6).
    pub async fn rename_mailbox(
        &self,
        account: &str,
        from: &str,
        to: &str,
    ) -> Result<(), StoreError> {
        let (account, from, to) = (account.to_string(), from.to_string(), to.to_string());
        self.writer
            .run(true, move |tx| {
                let mb = get_mailbox(tx, &account, &from)?.ok_or(StoreError::NoMailbox)?;
                if get_mailbox(tx, &account, &to)?.is_some() {
                    return Err(StoreError::MailboxExists);
                }
                tx.open_table(MAILBOXES)?
                    .remove((account.as_str(), from.as_str()))?;
                put_mailbox(tx, &account, &to, &mb)?;
                Ok(())
            })
            .await
    }

    pub async fn set_subscribed(
        &self,
        account: &str,
        name: &str,
        subscribed: bool,
    ) -> Result<(), StoreError> {
        let (account, name) = (account.to_string(), name.to_string());
        self.writer
            .run(false, move |tx| {
                let mut mb = get_mailbox(tx, &account, &name)?.ok_or(StoreError::NoMailbox)?;
                mb.subscribed = subscribed;
                put_mailbox(tx, &account, &name, &mb)
            })
            .await
    }

    /// APPEND (RFC 9051 §6.3.12): durable before it returns. Returns (UIDVALIDITY, UID)
    /// for APPENDUID (RFC 4315).
    pub async fn append(
        &self,
        account: &str,
        name: &str,
        flags: Flags,
        internal_date: u64,
        body: Parsed,
    ) -> Result<(u32, u32), StoreError> {
        self.writer
            .logged(op::Append {
                account: account.to_string(),
                mailbox: name.to_string(),
                flags,
                internal_date,
                body,
            })
            .await
    }

    /// STORE: change flags of the given UIDs; returns the new state of each message that
    /// exists. Not durable on its own (a crash may forget a flag change, never a message).
    pub async fn store_flags(
        &self,
        account: &str,
        name: &str,
        uids: Vec<u32>,
        op: FlagOp,
        flags: Flags,
    ) -> Result<Vec<MessageMeta>, StoreError> {
        self.writer
            .logged(op::StoreFlags {
                account: account.to_string(),
                mailbox: name.to_string(),
                uids,
                op,
                flags,
            })
            .await
    }

    /// EXPUNGE / UID EXPUNGE: remove messages flagged `\Deleted` (only those in `only`
    /// when given). Returns the removed UIDs in ascending order.
    pub async fn expunge(
        &self,
        account: &str,
        name: &str,
        only: Option<Vec<u32>>,
    ) -> Result<Vec<u32>, StoreError> {
        self.writer
            .logged(op::Expunge {
                account: account.to_string(),
                mailbox: name.to_string(),
                only,
            })
            .await
    }

    /// Every message of an account with its mailbox, from one consistent snapshot
    /// (quota trimming and expiry plan on this).
    pub fn account_messages(&self, account: &str) -> Result<Vec<AccountMessage>, StoreError> {
        let rx = self.read()?;
        let boxes = rx.open_table(MAILBOXES)?;
        let msgs = rx.open_table(MESSAGES)?;
        let mut out = Vec::new();
        for (name, mb) in account_mailboxes(&boxes, account)? {
            for m in msgs.range((mb.id, 0)..=(mb.id, u32::MAX))? {
                let (mk, mv) = m?;
                out.push(AccountMessage {
                    mailbox: name.clone(),
                    meta: MessageRow::decode(mv.value())?.meta(mk.value().1),
                });
            }
        }
        Ok(out)
    }

    /// Remove the given messages (mailbox name, UID) of an account regardless of their
    /// flags (expiry, quota trimming); each body goes with its last reference. Messages
    /// already gone are skipped. Returns how many were removed. Not durable on its own:
    /// a crash may bring a removed message back until the next run removes it again.
    pub async fn remove_messages(
        &self,
        account: &str,
        which: Vec<(String, u32)>,
    ) -> Result<usize, StoreError> {
        self.writer
            .logged(op::RemoveMessages {
                account: account.to_string(),
                which,
            })
            .await
    }

    /// COPY (and MOVE when `remove_source`): returns (destination UIDVALIDITY,
    /// [(source UID, destination UID)]) for COPYUID (RFC 4315). Durable.
    pub async fn copy(
        &self,
        account: &str,
        from: &str,
        to: &str,
        uids: Vec<u32>,
        remove_source: bool,
    ) -> Result<(u32, Vec<(u32, u32)>), StoreError> {
        self.writer
            .logged(op::Copy {
                account: account.to_string(),
                from: from.to_string(),
                to: to.to_string(),
                uids,
                remove_source,
            })
            .await
    }
}

pub(super) fn apply_flags(cur: &mut Flags, op: FlagOp, f: &Flags) {
    match op {
        FlagOp::Replace => *cur = f.clone(),
        FlagOp::Add => {
            cur.bits |= f.bits;
            for k in &f.keywords {
                if !cur.keywords.iter().any(|c| c.eq_ignore_ascii_case(k)) {
                    cur.keywords.push(k.clone());
                }
            }
        }
        FlagOp::Remove => {
            cur.bits &= !f.bits;
            cur.keywords
                .retain(|c| !f.keywords.iter().any(|k| k.eq_ignore_ascii_case(c)));
        }
    }
}

/// Remove and return the message rows of a mailbox that `pick` selects.
pub(super) fn take_messages(
    tx: &WriteTransaction,
    mailbox_id: u64,
    pick: impl Fn(u32, &MessageRow) -> bool,
) -> Result<Vec<(u32, MessageRow)>, StoreError> {
    let mut t = tx.open_table(MESSAGES)?;
    let mut chosen = Vec::new();
    for row in t.range((mailbox_id, 0)..=(mailbox_id, u32::MAX))? {
        let (k, v) = row?;
        let uid = k.value().1;
        let row = MessageRow::decode(v.value())?;
        if pick(uid, &row) {
            chosen.push((uid, row));
        }
    }
    for (uid, _) in &chosen {
        t.remove((mailbox_id, *uid))?;
    }
    Ok(chosen)
}
