//! Message bodies (`BODIES`) and their reference counts (`BODY_REFS`): one body per
//! delivery or APPEND, shared by every message and queue row that points at it, removed
//! with its last reference. The stored format is the body's MIME structure
//! (`message::Node::encode`) behind its LEB128 length, then the message bytes (schema 2),
//! and the migration from schema 1 (bare bytes). Reading a message's body for IMAP is here
//! too.

use redb::{ReadableTable, WriteTransaction};

use super::mailboxes::message_body_id;
use super::tables::{BODIES, BODY_REFS};
use super::{Store, StoreError, next_id};
use crate::message::{Parsed, View};

/// Add `n` references to a body.
pub(super) fn ref_body(tx: &WriteTransaction, body_id: u64, n: u32) -> Result<(), StoreError> {
    let mut refs = tx.open_table(BODY_REFS)?;
    let cur = refs.get(body_id)?.map(|v| v.value()).unwrap_or(0);
    refs.insert(body_id, cur + n)?;
    Ok(())
}

/// Drop one reference; the body goes with its last one.
pub(super) fn unref_body(tx: &WriteTransaction, body_id: u64) -> Result<(), StoreError> {
    let mut refs = tx.open_table(BODY_REFS)?;
    let cur = refs.get(body_id)?.map(|v| v.value()).unwrap_or(1);
    if cur <= 1 {
        refs.remove(body_id)?;
        tx.open_table(BODIES)?.remove(body_id)?;
    } else {
        refs.insert(body_id, cur - 1)?;
    }
    Ok(())
}

/// Store a new body with `refs` references; returns its id.
pub(super) fn store_body(
    tx: &WriteTransaction,
    body: &Parsed,
    refs: u32,
) -> Result<u64, StoreError> {
    let id = next_id(tx)?;
    let prefix = body_prefix(body);
    {
        // Written straight into the store's page: no second copy of a big message.
        let mut bodies = tx.open_table(BODIES)?;
        let mut value = bodies.insert_reserve(id, prefix.len() + body.len())?;
        let buf = value.as_mut();
        buf[..prefix.len()].copy_from_slice(&prefix);
        buf[prefix.len()..].copy_from_slice(body.bytes());
    }
    tx.open_table(BODY_REFS)?.insert(id, refs)?;
    Ok(id)
}

/// The start of a `BODIES` value: the structure's length (LEB128), the structure. The
/// message bytes follow.
fn body_prefix(body: &Parsed) -> Vec<u8> {
    let structure = body.encoded_structure();
    let mut out = Vec::with_capacity(10 + structure.len());
    let mut n = structure.len() as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend_from_slice(&structure);
    out
}

/// (structure, message bytes) of a `BODIES` value.
pub(super) fn split_body(value: &[u8]) -> Result<(&[u8], &[u8]), StoreError> {
    let mut n: u64 = 0;
    for (i, &b) in value.iter().enumerate().take(10) {
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let start = i + 1;
            let end = usize::try_from(n)
                .ok()
                .and_then(|n| start.checked_add(n))
                .filter(|&e| e <= value.len())
                .ok_or_else(|| StoreError::Db("damaged body row".into()))?;
            return Ok((&value[start..end], &value[end..]));
        }
    }
    Err(StoreError::Db("damaged body row".into()))
}

/// A stored message with its structure.
fn decode_body(value: &[u8]) -> Result<Parsed, StoreError> {
    let (structure, bytes) = split_body(value)?;
    Parsed::from_stored(bytes.to_vec(), structure)
        .ok_or_else(|| StoreError::Db("damaged message structure".into()))
}

/// Schema 1 → 2: parse every stored body once and store its structure with it. A body the
/// parser refuses (stored before it existed) is kept as one text part
/// (`Parsed::legacy`). Returns the number of bodies.
pub(super) fn migrate_bodies_to_v2(tx: &WriteTransaction) -> Result<u64, StoreError> {
    let mut bodies = tx.open_table(BODIES)?;
    let ids: Vec<u64> = bodies
        .iter()?
        .map(|row| row.map(|(k, _)| k.value()))
        .collect::<Result<_, _>>()?;
    for &id in &ids {
        let Some(bytes) = bodies.get(id)?.map(|v| v.value().to_vec()) else {
            continue;
        };
        let parsed = Parsed::parse(bytes.clone()).unwrap_or_else(|_| Parsed::legacy(bytes));
        let value = [body_prefix(&parsed).as_slice(), parsed.bytes()].concat();
        bodies.insert(id, value.as_slice())?;
    }
    Ok(ids.len() as u64)
}

impl Store {
    /// The stored bytes of one message, unchanged (IMAP-6).
    pub fn body(&self, account: &str, name: &str, uid: u32) -> Result<Option<Vec<u8>>, StoreError> {
        self.with_message(account, name, uid, |m| m.raw.to_vec())
    }

    /// One message with its structure, copied out of the store.
    pub fn message(
        &self,
        account: &str,
        name: &str,
        uid: u32,
    ) -> Result<Option<Parsed>, StoreError> {
        let rx = self.read()?;
        let Some(body_id) = message_body_id(&rx, account, name, uid)? else {
            return Ok(None);
        };
        let bodies = rx.open_table(BODIES)?;
        bodies
            .get(body_id)?
            .map(|v| decode_body(v.value()))
            .transpose()
    }

    /// Run `f` on one message and its structure where the store keeps them (no copy of
    /// the bytes); `None` when the message is gone.
    pub fn with_message<R>(
        &self,
        account: &str,
        name: &str,
        uid: u32,
        f: impl FnOnce(View<'_>) -> R,
    ) -> Result<Option<R>, StoreError> {
        let rx = self.read()?;
        let Some(body_id) = message_body_id(&rx, account, name, uid)? else {
            return Ok(None);
        };
        let bodies = rx.open_table(BODIES)?;
        let Some(value) = bodies.get(body_id)? else {
            return Ok(None);
        };
        let (structure, bytes) = split_body(value.value())?;
        let root = crate::message::Node::decode(structure, bytes.len(), &crate::message::LIMITS)
            .ok_or_else(|| StoreError::Db("damaged message structure".into()))?;
        Ok(Some(f(View {
            raw: bytes,
            root: &root,
        })))
    }
}
