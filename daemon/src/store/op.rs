//! The store's logged operations (issue 14): every change that is acknowledged through the
//! write-ahead log is one of these. Each knows how to write itself as a log record, read
//! itself back, and apply itself to a write transaction. The same `apply` runs when the
//! store acknowledges the change and when it replays the log after a crash, so a replay
//! makes exactly the same change from the same state (UIDs, ids and times come from the
//! store's counters and from the record, never from the clock).

use redb::{ReadableTable, WriteTransaction};

use super::StoreError;
use super::bodies::{ref_body, store_body, unref_body};
use super::codec::{Dec, Enc};
use super::delivery::{Delivered, Delivery, PushRequest, add_push_jobs, deliver_in};
use super::mailboxes::{
    FlagOp, Flags, MessageMeta, MessageRow, add_message, apply_flags, get_mailbox, put_mailbox,
    take_messages,
};
use super::push::{put_push, remove_push};
use super::tables::MESSAGES;
use super::usage::UsageCache;
use crate::message::Parsed;

/// A change that goes through the log.
pub(super) trait Logged: Send + 'static {
    /// What the change answers.
    type Out: Send + 'static;
    /// The record's first byte.
    const KIND: u8;
    fn encode(&self, e: Enc) -> Enc;
    fn decode(d: &mut Dec) -> Result<Self, StoreError>
    where
        Self: Sized;
    /// Make the change. Checks every precondition before it changes anything.
    fn apply(&self, tx: &WriteTransaction, usage: &UsageCache) -> Result<Self::Out, StoreError>;

    /// The log record of this change.
    fn record(&self) -> Vec<u8> {
        self.encode(Enc::default().u8(Self::KIND)).0
    }
}

/// Apply a record read back from the log. A change that failed when it was first made is
/// never logged; one that fails now (the store changed under it, which a correct log
/// cannot cause) is reported.
pub(super) fn replay(
    tx: &WriteTransaction,
    usage: &UsageCache,
    record: &[u8],
) -> Result<(), StoreError> {
    let (&kind, rest) = record
        .split_first()
        .ok_or_else(|| StoreError::Db("empty log record".into()))?;
    let mut d = Dec(rest);
    fn run<O: Logged>(
        d: &mut Dec,
        tx: &WriteTransaction,
        usage: &UsageCache,
    ) -> Result<(), StoreError> {
        O::decode(d)?.apply(tx, usage).map(drop)
    }
    match kind {
        Deliver::KIND => run::<Deliver>(&mut d, tx, usage),
        Append::KIND => run::<Append>(&mut d, tx, usage),
        StoreFlags::KIND => run::<StoreFlags>(&mut d, tx, usage),
        Expunge::KIND => run::<Expunge>(&mut d, tx, usage),
        RemoveMessages::KIND => run::<RemoveMessages>(&mut d, tx, usage),
        Copy::KIND => run::<Copy>(&mut d, tx, usage),
        ReschedulePush::KIND => run::<ReschedulePush>(&mut d, tx, usage),
        DeletePush::KIND => run::<DeletePush>(&mut d, tx, usage),
        k => Err(StoreError::Db(format!("unknown log record kind {k}"))),
    }
}

fn enc_flags(e: Enc, f: &Flags) -> Enc {
    e.u8(f.bits).strs(&f.keywords)
}

fn dec_flags(d: &mut Dec) -> Result<Flags, StoreError> {
    Ok(Flags {
        bits: d.u8()?,
        keywords: d.strs()?,
    })
}

fn enc_body(e: Enc, body: &Parsed) -> Enc {
    let structure = body.encoded_structure();
    e.bytes(&structure).bytes(body.bytes())
}

fn dec_body(d: &mut Dec) -> Result<Parsed, StoreError> {
    let structure = d.bytes()?;
    let bytes = d.bytes()?;
    Parsed::from_stored(bytes.to_vec(), structure)
        .ok_or_else(|| StoreError::Db("damaged message structure in the log".into()))
}

/// A delivery with its quota limit and push jobs ([`super::Store::deliver_with_push`]).
pub(super) struct Deliver {
    pub delivery: Delivery,
    pub max_mailbox_size: u64,
    pub push: Option<PushRequest>,
}

impl Logged for Deliver {
    type Out = (Delivered, usize);
    const KIND: u8 = 1;
    fn encode(&self, e: Enc) -> Enc {
        let d = &self.delivery;
        let e = e
            .str(&d.sender)
            .strs(&d.local)
            .strs(&d.remote)
            .u64(d.received)
            .u64(self.max_mailbox_size);
        let e = match &self.push {
            None => e.u8(0),
            Some(p) => e
                .u8(1)
                .strs(&p.accounts)
                .u64(p.now)
                .u64(p.tokens_set_from)
                .u64(p.tokens_set_until),
        };
        enc_body(e, &d.body)
    }
    fn decode(d: &mut Dec) -> Result<Self, StoreError> {
        let sender = d.str()?;
        let local = d.strs()?;
        let remote = d.strs()?;
        let received = d.u64()?;
        let max_mailbox_size = d.u64()?;
        let push = match d.u8()? {
            0 => None,
            _ => Some(PushRequest {
                accounts: d.strs()?,
                now: d.u64()?,
                tokens_set_from: d.u64()?,
                tokens_set_until: d.u64()?,
            }),
        };
        let body = dec_body(d)?;
        Ok(Deliver {
            delivery: Delivery {
                sender,
                local,
                remote,
                body,
                received,
            },
            max_mailbox_size,
            push,
        })
    }
    fn apply(&self, tx: &WriteTransaction, usage: &UsageCache) -> Result<Self::Out, StoreError> {
        let delivered = deliver_in(tx, usage, &self.delivery, self.max_mailbox_size)?;
        let mut jobs = 0;
        if let Some(push) = &self.push {
            for account in delivered
                .stored
                .iter()
                .filter(|a| push.accounts.contains(a))
            {
                jobs += add_push_jobs(tx, account, push)?;
            }
        }
        Ok((delivered, jobs))
    }
}

/// APPEND ([`super::Store::append`]).
pub(super) struct Append {
    pub account: String,
    pub mailbox: String,
    pub flags: Flags,
    pub internal_date: u64,
    pub body: Parsed,
}

impl Logged for Append {
    type Out = (u32, u32);
    const KIND: u8 = 2;
    fn encode(&self, e: Enc) -> Enc {
        let e = enc_flags(e.str(&self.account).str(&self.mailbox), &self.flags);
        enc_body(e.u64(self.internal_date), &self.body)
    }
    fn decode(d: &mut Dec) -> Result<Self, StoreError> {
        Ok(Append {
            account: d.str()?,
            mailbox: d.str()?,
            flags: dec_flags(d)?,
            internal_date: d.u64()?,
            body: dec_body(d)?,
        })
    }
    fn apply(&self, tx: &WriteTransaction, usage: &UsageCache) -> Result<Self::Out, StoreError> {
        usage.forget(&self.account);
        if get_mailbox(tx, &self.account, &self.mailbox)?.is_none() {
            return Err(StoreError::NoMailbox);
        }
        let body_id = store_body(tx, &self.body, 1)?;
        let row = MessageRow {
            body_id,
            size: self.body.len() as u64,
            internal_date: self.internal_date,
            flags: self.flags.clone(),
        };
        add_message(tx, &self.account, &self.mailbox, &row)
    }
}

/// STORE ([`super::Store::store_flags`]).
pub(super) struct StoreFlags {
    pub account: String,
    pub mailbox: String,
    pub uids: Vec<u32>,
    pub op: FlagOp,
    pub flags: Flags,
}

impl Logged for StoreFlags {
    type Out = Vec<MessageMeta>;
    const KIND: u8 = 3;
    fn encode(&self, e: Enc) -> Enc {
        let op = match self.op {
            FlagOp::Replace => 0,
            FlagOp::Add => 1,
            FlagOp::Remove => 2,
        };
        let e = e
            .str(&self.account)
            .str(&self.mailbox)
            .u32s(&self.uids)
            .u8(op);
        enc_flags(e, &self.flags)
    }
    fn decode(d: &mut Dec) -> Result<Self, StoreError> {
        Ok(StoreFlags {
            account: d.str()?,
            mailbox: d.str()?,
            uids: d.u32s()?,
            op: match d.u8()? {
                0 => FlagOp::Replace,
                1 => FlagOp::Add,
                _ => FlagOp::Remove,
            },
            flags: dec_flags(d)?,
        })
    }
    fn apply(&self, tx: &WriteTransaction, _: &UsageCache) -> Result<Self::Out, StoreError> {
        let mb = get_mailbox(tx, &self.account, &self.mailbox)?.ok_or(StoreError::NoMailbox)?;
        let mut t = tx.open_table(MESSAGES)?;
        let mut out = Vec::new();
        for &uid in &self.uids {
            let row = t.get((mb.id, uid))?.map(|v| MessageRow::decode(v.value()));
            let Some(row) = row else { continue };
            let mut row = row?;
            apply_flags(&mut row.flags, self.op, &self.flags);
            t.insert((mb.id, uid), row.encode().as_slice())?;
            out.push(row.meta(uid));
        }
        Ok(out)
    }
}

/// EXPUNGE / UID EXPUNGE ([`super::Store::expunge`]).
pub(super) struct Expunge {
    pub account: String,
    pub mailbox: String,
    pub only: Option<Vec<u32>>,
}

impl Logged for Expunge {
    type Out = Vec<u32>;
    const KIND: u8 = 4;
    fn encode(&self, e: Enc) -> Enc {
        let e = e.str(&self.account).str(&self.mailbox);
        match &self.only {
            None => e.u8(0),
            Some(uids) => e.u8(1).u32s(uids),
        }
    }
    fn decode(d: &mut Dec) -> Result<Self, StoreError> {
        Ok(Expunge {
            account: d.str()?,
            mailbox: d.str()?,
            only: match d.u8()? {
                0 => None,
                _ => Some(d.u32s()?),
            },
        })
    }
    fn apply(&self, tx: &WriteTransaction, usage: &UsageCache) -> Result<Self::Out, StoreError> {
        usage.forget(&self.account);
        let mb = get_mailbox(tx, &self.account, &self.mailbox)?.ok_or(StoreError::NoMailbox)?;
        let rows = take_messages(tx, mb.id, |uid, row| {
            row.flags.has(Flags::DELETED)
                && self
                    .only
                    .as_ref()
                    .is_none_or(|o| o.binary_search(&uid).is_ok())
        })?;
        let mut uids = Vec::new();
        for (uid, row) in rows {
            unref_body(tx, row.body_id)?;
            uids.push(uid);
        }
        Ok(uids)
    }
}

/// Removal regardless of flags ([`super::Store::remove_messages`]).
pub(super) struct RemoveMessages {
    pub account: String,
    pub which: Vec<(String, u32)>,
}

impl Logged for RemoveMessages {
    type Out = usize;
    const KIND: u8 = 5;
    fn encode(&self, mut e: Enc) -> Enc {
        e = e.str(&self.account).u32(self.which.len() as u32);
        for (name, uid) in &self.which {
            e = e.str(name).u32(*uid);
        }
        e
    }
    fn decode(d: &mut Dec) -> Result<Self, StoreError> {
        let account = d.str()?;
        let n = d.u32()?;
        let mut which = Vec::new();
        for _ in 0..n {
            which.push((d.str()?, d.u32()?));
        }
        Ok(RemoveMessages { account, which })
    }
    fn apply(&self, tx: &WriteTransaction, usage: &UsageCache) -> Result<Self::Out, StoreError> {
        usage.forget(&self.account);
        let mut removed = 0;
        let mut ids = std::collections::HashMap::new();
        for (name, uid) in &self.which {
            if !ids.contains_key(name) {
                let id = get_mailbox(tx, &self.account, name)?.map(|mb| mb.id);
                ids.insert(name.clone(), id);
            }
            let Some(Some(mailbox_id)) = ids.get(name) else {
                continue;
            };
            let row = tx
                .open_table(MESSAGES)?
                .remove((*mailbox_id, *uid))?
                .map(|v| MessageRow::decode(v.value()));
            if let Some(row) = row {
                unref_body(tx, row?.body_id)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// COPY and MOVE ([`super::Store::copy`]).
pub(super) struct Copy {
    pub account: String,
    pub from: String,
    pub to: String,
    pub uids: Vec<u32>,
    pub remove_source: bool,
}

impl Logged for Copy {
    type Out = (u32, Vec<(u32, u32)>);
    const KIND: u8 = 6;
    fn encode(&self, e: Enc) -> Enc {
        e.str(&self.account)
            .str(&self.from)
            .str(&self.to)
            .u32s(&self.uids)
            .u8(self.remove_source as u8)
    }
    fn decode(d: &mut Dec) -> Result<Self, StoreError> {
        Ok(Copy {
            account: d.str()?,
            from: d.str()?,
            to: d.str()?,
            uids: d.u32s()?,
            remove_source: d.u8()? != 0,
        })
    }
    fn apply(&self, tx: &WriteTransaction, usage: &UsageCache) -> Result<Self::Out, StoreError> {
        usage.forget(&self.account);
        let src = get_mailbox(tx, &self.account, &self.from)?.ok_or(StoreError::NoMailbox)?;
        let mut dst = get_mailbox(tx, &self.account, &self.to)?.ok_or(StoreError::NoMailbox)?;
        let mut pairs = Vec::new();
        let mut t = tx.open_table(MESSAGES)?;
        for &uid in &self.uids {
            let row = t.get((src.id, uid))?.map(|v| MessageRow::decode(v.value()));
            let Some(row) = row else { continue };
            let row = row?;
            let new_uid = dst.uid_next;
            dst.uid_next += 1;
            t.insert((dst.id, new_uid), row.encode().as_slice())?;
            if self.remove_source {
                t.remove((src.id, uid))?;
            } else {
                ref_body(tx, row.body_id, 1)?;
            }
            pairs.push((uid, new_uid));
        }
        drop(t);
        put_mailbox(tx, &self.account, &self.to, &dst)?;
        Ok((dst.uid_validity, pairs))
    }
}

/// A failed push attempt ([`super::Store::reschedule_push_job`]).
pub(super) struct ReschedulePush {
    pub id: u64,
    pub attempts: u32,
    pub next_attempt: u64,
}

impl Logged for ReschedulePush {
    type Out = ();
    const KIND: u8 = 7;
    fn encode(&self, e: Enc) -> Enc {
        e.u64(self.id).u32(self.attempts).u64(self.next_attempt)
    }
    fn decode(d: &mut Dec) -> Result<Self, StoreError> {
        Ok(ReschedulePush {
            id: d.u64()?,
            attempts: d.u32()?,
            next_attempt: d.u64()?,
        })
    }
    fn apply(&self, tx: &WriteTransaction, _: &UsageCache) -> Result<(), StoreError> {
        if let Some(mut job) = remove_push(tx, self.id)? {
            job.attempts = self.attempts;
            job.next_attempt = self.next_attempt;
            put_push(tx, &job)?;
        }
        Ok(())
    }
}

/// A finished or dropped push job ([`super::Store::delete_push_job`]).
pub(super) struct DeletePush {
    pub id: u64,
}

impl Logged for DeletePush {
    type Out = ();
    const KIND: u8 = 8;
    fn encode(&self, e: Enc) -> Enc {
        e.u64(self.id)
    }
    fn decode(d: &mut Dec) -> Result<Self, StoreError> {
        Ok(DeletePush { id: d.u64()? })
    }
    fn apply(&self, tx: &WriteTransaction, _: &UsageCache) -> Result<(), StoreError> {
        remove_push(tx, self.id)?;
        Ok(())
    }
}
