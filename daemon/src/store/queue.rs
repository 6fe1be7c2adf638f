//! The outbound queue (`QUEUE`, OUT-1..6): one row per destination domain of a delivery
//! (created by `delivery.rs` in the delivery's commit), with its due-time index
//! (`QUEUE_DUE`) that the scheduler reads, checked and rebuilt at open; finished
//! recipients and retries with the last error in plain words; the queued body for the
//! transport; the operator's "retry now" (due times set to now).

use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::bodies::{split_body, unref_body};
use super::codec::{Dec, Enc};
use super::tables::{BODIES, QUEUE, QUEUE_DUE};
use super::{Store, StoreError};

/// A row of the outbound queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    pub id: u64,
    pub sender: String,
    pub recipients: Vec<String>,
    pub created: u64,
    pub next_attempt: u64,
    pub attempts: u32,
    /// Why the last attempt failed, in plain words without addresses (empty before the
    /// first failure). Appended to the row (issue 18): a row written by an older version
    /// has none, and an older version reading this row ignores it.
    pub last_error: String,
}

/// Longest [`QueuedMessage::last_error`] kept, in bytes.
pub const MAX_LAST_ERROR: usize = 200;

fn encode_queue(q: &QueuedMessage, body_id: u64) -> Vec<u8> {
    Enc::default()
        .u64(body_id)
        .str(&q.sender)
        .strs(&q.recipients)
        .u64(q.created)
        .u64(q.next_attempt)
        .u32(q.attempts)
        .str(&q.last_error)
        .0
}

pub(super) fn decode_queue(id: u64, b: &[u8]) -> Result<(QueuedMessage, u64), StoreError> {
    let mut d = Dec(b);
    let body_id = d.u64()?;
    let mut q = QueuedMessage {
        id,
        sender: d.str()?,
        recipients: d.strs()?,
        created: d.u64()?,
        next_attempt: d.u64()?,
        attempts: d.u32()?,
        last_error: String::new(),
    };
    // Fields appended later: only when the row has them.
    if !d.0.is_empty() {
        q.last_error = d.str()?;
    }
    Ok((q, body_id))
}

/// Write queue row `q` (body `body_id`) and its due-time key; `was_due` is the row's
/// next attempt before, if it existed.
pub(super) fn put_queue(
    tx: &WriteTransaction,
    q: &QueuedMessage,
    body_id: u64,
    was_due: Option<u64>,
) -> Result<(), StoreError> {
    tx.open_table(QUEUE)?
        .insert(q.id, encode_queue(q, body_id).as_slice())?;
    let mut due = tx.open_table(QUEUE_DUE)?;
    if let Some(was) = was_due
        && was != q.next_attempt
    {
        due.remove((was, q.id))?;
    }
    due.insert((q.next_attempt, q.id), ())?;
    Ok(())
}

/// Check the due-time index against the queue and rebuild it when they differ: missing
/// in a store of a version before it, stale in one an older version (an update's
/// rollback) changed since. Reads the queue once; writes only when it differs. Returns
/// the rows indexed when it rebuilt.
pub(super) fn index_queue(tx: &WriteTransaction) -> Result<Option<u64>, StoreError> {
    let mut want = Vec::new();
    for row in tx.open_table(QUEUE)?.iter()? {
        let (k, v) = row?;
        want.push((
            decode_queue(k.value(), v.value())?.0.next_attempt,
            k.value(),
        ));
    }
    want.sort_unstable();
    let mut due = tx.open_table(QUEUE_DUE)?;
    let have = due
        .iter()?
        .map(|row| row.map(|(k, _)| k.value()))
        .collect::<Result<Vec<_>, _>>()?;
    if have == want {
        return Ok(None);
    }
    due.retain(|_, _| false)?;
    for key in &want {
        due.insert(key, ())?;
    }
    Ok(Some(want.len() as u64))
}

/// Remove queue row `id` with its due-time key and its body reference; `false` when
/// there was no such row.
fn remove_queue_row(tx: &WriteTransaction, id: u64) -> Result<bool, StoreError> {
    let removed = tx
        .open_table(QUEUE)?
        .remove(id)?
        .map(|v| v.value().to_vec());
    match removed {
        Some(row) => {
            let (q, body_id) = decode_queue(id, &row)?;
            tx.open_table(QUEUE_DUE)?.remove((q.next_attempt, id))?;
            unref_body(tx, body_id)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// `text` cut to at most `max` bytes at a character boundary.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

impl Store {
    /// The peer accepted the message for `delivered` (and refused `refused` for good;
    /// their bounce, if any, was delivered before this call): drop them from the row,
    /// and the row once nobody is left. Durable, so a crash repeats no finished delivery.
    pub async fn queue_done(&self, id: u64, finished: Vec<String>) -> Result<(), StoreError> {
        self.writer
            .run(true, move |tx| {
                let row = tx.open_table(QUEUE)?.get(id)?.map(|v| v.value().to_vec());
                let Some(row) = row else { return Ok(()) };
                let (mut q, body_id) = decode_queue(id, &row)?;
                q.recipients.retain(|r| !finished.iter().any(|f| f == r));
                if q.recipients.is_empty() {
                    remove_queue_row(tx, id)?;
                } else {
                    let due = q.next_attempt;
                    put_queue(tx, &q, body_id, Some(due))?;
                }
                Ok(())
            })
            .await
    }

    /// A temporary failure: the new attempt count, the next attempt time (OUT-6) and
    /// why it failed (plain words, cut to [`MAX_LAST_ERROR`] bytes). Not durable on its
    /// own: after a crash the retry comes earlier, nothing is lost.
    pub async fn queue_retry(
        &self,
        id: u64,
        attempts: u32,
        next_attempt: u64,
        last_error: String,
    ) -> Result<(), StoreError> {
        let last_error = cut(last_error, MAX_LAST_ERROR);
        self.writer
            .run(false, move |tx| {
                let row = tx.open_table(QUEUE)?.get(id)?.map(|v| v.value().to_vec());
                let Some(row) = row else { return Ok(()) };
                let (mut q, body_id) = decode_queue(id, &row)?;
                let was_due = q.next_attempt;
                q.attempts = attempts;
                q.next_attempt = next_attempt;
                q.last_error = last_error;
                put_queue(tx, &q, body_id, Some(was_due))
            })
            .await
    }

    /// The operator's "retry now": rows `ids` become due at `now` (those due earlier keep
    /// their time; rows gone meanwhile are skipped). Durable. Returns the rows changed.
    pub async fn queue_due_now(&self, ids: Vec<u64>, now: u64) -> Result<usize, StoreError> {
        self.writer
            .run(true, move |tx| {
                let mut changed = 0;
                for id in ids {
                    let row = tx.open_table(QUEUE)?.get(id)?.map(|v| v.value().to_vec());
                    let Some(row) = row else { continue };
                    let (mut q, body_id) = decode_queue(id, &row)?;
                    if q.next_attempt <= now {
                        continue;
                    }
                    let was_due = q.next_attempt;
                    q.next_attempt = now;
                    put_queue(tx, &q, body_id, Some(was_due))?;
                    changed += 1;
                }
                Ok(changed)
            })
            .await
    }

    /// Number of rows in the outbound queue (metrics).
    pub fn queue_len(&self) -> Result<u64, StoreError> {
        let rx = self.read()?;
        Ok(rx.open_table(QUEUE)?.len()?)
    }

    /// The outbound queue, oldest first.
    pub fn queued(&self) -> Result<Vec<QueuedMessage>, StoreError> {
        let rx = self.read()?;
        let t = rx.open_table(QUEUE)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.push(decode_queue(k.value(), v.value())?.0);
        }
        Ok(out)
    }

    /// At most `limit` queue rows due at `now` (next attempt ≤ `now`), earliest first.
    /// Reads only those rows, however long the queue is.
    pub fn queue_due(&self, now: u64, limit: usize) -> Result<Vec<QueuedMessage>, StoreError> {
        let rx = self.read()?;
        let due = rx.open_table(QUEUE_DUE)?;
        let rows = rx.open_table(QUEUE)?;
        let mut out = Vec::new();
        for key in due.range((0, 0)..=(now, u64::MAX))? {
            if out.len() >= limit {
                break;
            }
            let (_, id) = key?.0.value();
            if let Some(v) = rows.get(id)? {
                out.push(decode_queue(id, v.value())?.0);
            }
        }
        Ok(out)
    }

    /// The earliest next attempt of any queue row due later than `now`.
    pub fn next_queue_due_after(&self, now: u64) -> Result<Option<u64>, StoreError> {
        let Some(after) = now.checked_add(1) else {
            return Ok(None);
        };
        let rx = self.read()?;
        let due = rx.open_table(QUEUE_DUE)?;
        let first = due.range((after, 0)..)?.next();
        Ok(first.transpose()?.map(|(k, _)| k.value().0))
    }

    /// The bytes of a queued message.
    pub fn queued_body(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let rx = self.read()?;
        let q = rx.open_table(QUEUE)?;
        let Some(row) = q.get(id)? else {
            return Ok(None);
        };
        let (_, body_id) = decode_queue(id, row.value())?;
        let bodies = rx.open_table(BODIES)?;
        bodies
            .get(body_id)?
            .map(|v| split_body(v.value()).map(|(_, bytes)| bytes.to_vec()))
            .transpose()
    }
}
