//! The push queue (`PUSH_JOBS`, `PUSH_DUE`, PUSH-2..6): one job per device token per
//! delivery (created by `delivery.rs` in the delivery's commit), indexed by retry level and
//! due time so the notifier reads only the jobs it can start now.

use redb::{ReadableTable, WriteTransaction};

use super::codec::{Dec, Enc};
use super::tables::{PUSH_DUE, PUSH_JOBS};
use super::{Store, StoreError, op};

/// A pending push notification (PUSH-2..5): one per (account, token) per delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushJob {
    pub id: u64,
    /// The account the delivery was for (only used to delete the token on 410).
    pub account: String,
    /// The device token as stored (MD-1: printable ASCII); POSTed as the body.
    pub token: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When the job was created (the first attempt is due then), Unix seconds; the
    /// 5-hour deadline counts from here (PUSH-5).
    pub first_attempt: u64,
    /// When the next attempt is due, Unix seconds.
    pub next_attempt: u64,
}

fn encode_push(j: &PushJob) -> Vec<u8> {
    Enc::default()
        .str(&j.account)
        .str(&j.token)
        .u32(j.attempts)
        .u64(j.first_attempt)
        .u64(j.next_attempt)
        .0
}

fn decode_push(id: u64, b: &[u8]) -> Result<PushJob, StoreError> {
    let mut d = Dec(b);
    Ok(PushJob {
        id,
        account: d.str()?,
        token: d.str()?,
        attempts: d.u32()?,
        first_attempt: d.u64()?,
        next_attempt: d.u64()?,
    })
}

impl Store {
    /// Every pending push job, by id (creation order).
    pub fn push_jobs(&self) -> Result<Vec<PushJob>, StoreError> {
        let rx = self.read()?;
        let t = rx.open_table(PUSH_JOBS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.push(decode_push(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Push jobs due at `now` (next attempt ≤ `now`), every level, earliest first
    /// within a level.
    pub fn push_jobs_due(&self, now: u64) -> Result<Vec<PushJob>, StoreError> {
        let mut out = Vec::new();
        for level in 0..=MAX_PUSH_LEVEL {
            out.extend(self.push_jobs_due_at(level, now, usize::MAX)?);
        }
        Ok(out)
    }

    /// At most `limit` push jobs with `attempts` failed attempts (the last level also
    /// holds any higher count) that are due at `now`, earliest first. Reads only those
    /// rows, however long the queue is.
    pub fn push_jobs_due_at(
        &self,
        attempts: u32,
        now: u64,
        limit: usize,
    ) -> Result<Vec<PushJob>, StoreError> {
        let rx = self.read()?;
        let due = rx.open_table(PUSH_DUE)?;
        let jobs = rx.open_table(PUSH_JOBS)?;
        let mut out = Vec::new();
        let mut take = |key: (u32, u64, u64)| -> Result<bool, StoreError> {
            if out.len() >= limit {
                return Ok(false);
            }
            if let Some(v) = jobs.get(key.2)? {
                out.push(decode_push(key.2, v.value())?);
            }
            Ok(true)
        };
        for row in due.range((attempts, 0, 0)..=(attempts, now, u64::MAX))? {
            if !take(row?.0.value())? {
                return Ok(out);
            }
        }
        // The last level also serves higher counts (which the notifier never writes).
        if attempts >= MAX_PUSH_LEVEL
            && let Some(next) = attempts.checked_add(1)
        {
            for row in due.range((next, 0, 0)..)? {
                let key = row?.0.value();
                if key.1 <= now && !take(key)? {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The earliest next attempt of any push job.
    pub fn next_push_due(&self) -> Result<Option<u64>, StoreError> {
        let rx = self.read()?;
        let due = rx.open_table(PUSH_DUE)?;
        let mut earliest: Option<u64> = None;
        // The first key of each level holds its earliest time.
        let mut level = 0u32;
        while let Some(row) = due.range((level, 0, 0)..)?.next() {
            let (attempts, at, _) = row?.0.value();
            earliest = Some(earliest.map_or(at, |e| e.min(at)));
            match attempts.checked_add(1) {
                Some(next) => level = next,
                None => break,
            }
        }
        Ok(earliest)
    }

    /// Record a failed attempt: the new attempt count and when to try next. Not
    /// durable on its own (a crash makes the retry come earlier, never lost). A job
    /// already gone is left gone.
    pub async fn reschedule_push_job(
        &self,
        id: u64,
        attempts: u32,
        next_attempt: u64,
    ) -> Result<(), StoreError> {
        self.writer
            .logged(op::ReschedulePush {
                id,
                attempts,
                next_attempt,
            })
            .await
    }

    /// Remove a finished or dropped push job. Not durable on its own: after a crash
    /// the notification may be sent once more.
    pub async fn delete_push_job(&self, id: u64) -> Result<(), StoreError> {
        self.writer.logged(op::DeletePush { id }).await
    }
}

/// Retry levels the notifier serves separately (PUSH-6): 0 = first attempt, 1..=4 =
/// after that many failures.
pub const MAX_PUSH_LEVEL: u32 = 4;

pub(super) fn put_push(tx: &WriteTransaction, job: &PushJob) -> Result<(), StoreError> {
    tx.open_table(PUSH_JOBS)?
        .insert(job.id, encode_push(job).as_slice())?;
    tx.open_table(PUSH_DUE)?
        .insert((job.attempts, job.next_attempt, job.id), ())?;
    Ok(())
}

pub(super) fn remove_push(tx: &WriteTransaction, id: u64) -> Result<Option<PushJob>, StoreError> {
    let job = tx
        .open_table(PUSH_JOBS)?
        .remove(id)?
        .map(|v| decode_push(id, v.value()));
    let Some(job) = job else { return Ok(None) };
    let job = job?;
    tx.open_table(PUSH_DUE)?
        .remove((job.attempts, job.next_attempt, job.id))?;
    Ok(Some(job))
}

/// Remove every pending push job of an account (its tokens are gone).
pub(super) fn remove_account_jobs(tx: &WriteTransaction, account: &str) -> Result<(), StoreError> {
    let ids = {
        let t = tx.open_table(PUSH_JOBS)?;
        let mut ids = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            if decode_push(k.value(), v.value())?.account == account {
                ids.push(k.value());
            }
        }
        ids
    };
    for id in ids {
        remove_push(tx, id)?;
    }
    Ok(())
}
