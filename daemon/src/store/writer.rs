//! The group-commit writer: one thread owns every write transaction and the write-ahead
//! log. It takes all jobs waiting in its queue, runs them in one transaction, and answers
//! each job only once its change is durable (DESIGN.md principle 2):
//!
//! - a logged job (a delivery, APPEND, STORE, EXPUNGE, …; `store::op`) is durable when
//!   its record is in the log: the batch's records go out in one write and one
//!   `fdatasync`, and the redb commit is not durable;
//! - a durable job (account and mailbox changes, the outbound queue) makes the commit
//!   `Durability::Immediate`: a checkpoint;
//! - a lazy job (a last-login day) commits without either and is made durable by the next
//!   checkpoint.
//!
//! A checkpoint — a durable redb commit recording the last logged sequence number in
//! `meta` — runs when a batch would take the log past [`CHECKPOINT_BYTES`], a minute after
//! the first change it has not covered, when asked ([`Writer::run`] with a durable job),
//! and when the store is dropped; never when nothing changed. After it, the log is written
//! from its start again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use redb::{Database, Durability, WriteTransaction};
use tokio::sync::oneshot;

use super::StoreError;
use super::op::Logged;
use super::tables::META;
use super::usage::UsageCache;
use super::wal::Log;

/// Most jobs folded into one commit.
const MAX_BATCH: usize = 512;
/// A checkpoint before the log holds more than this.
pub(super) const CHECKPOINT_BYTES: u64 = 4 << 20;
/// A checkpoint at most this long after the first change it has not covered.
const CHECKPOINT_AFTER: Duration = Duration::from_secs(60);
/// Under load the writer waits at most this long for more jobs before it commits, so that
/// concurrent senders share one sync (like PostgreSQL's `commit_delay`).
const GATHER: Duration = Duration::from_millis(2);
/// How far back the writer looks for the load it expects: it gathers until a batch is as
/// big as the biggest of the batches in this span. Without a recent batch of more than
/// one job, a lone job is never delayed.
const PACE_SPAN: Duration = Duration::from_millis(100);
/// Records bigger than this skip the log: their batch is a checkpoint instead (one copy
/// of a big message less, and the log stays small).
pub(super) const MAX_RECORD: usize = 1 << 20;

type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// Runs a job's change; says whether it succeeded (a failed change logs nothing).
type Apply = Box<dyn FnOnce(&WriteTransaction) -> (bool, Finish) + Send>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Durable,
    Logged,
    Lazy,
}

struct Job {
    kind: Kind,
    /// The log record of a logged job.
    record: Vec<u8>,
    op: Apply,
}

/// What the writer thread has done, for benchmarks and the status page.
#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    durable: AtomicU64,
    log_syncs: AtomicU64,
    /// Bytes of the log written since the last checkpoint.
    log_used: AtomicU64,
    /// Commits since the last checkpoint (LW-5).
    pending: AtomicU64,
}

#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
    counters: Arc<Counters>,
    usage: Arc<UsageCache>,
}

/// The writer thread's state.
struct Thread {
    db: Arc<Database>,
    log: Log,
    /// Sequence number of the last record written.
    seq: u64,
    /// When the first change not covered by a checkpoint was committed.
    dirty_since: Option<Instant>,
    /// Recent batch sizes, for how many jobs the next batch may wait for.
    pace: Pace,
    counters: Arc<Counters>,
    usage: Arc<UsageCache>,
}

impl Writer {
    /// Start the writer thread over `db` and its log (already replayed up to `seq`).
    pub fn start(db: Arc<Database>, log: Log, seq: u64, usage: Arc<UsageCache>) -> Writer {
        let (tx, rx) = mpsc::channel::<Job>();
        let counters = Arc::new(Counters::default());
        let mut thread = Thread {
            db,
            log,
            seq,
            dirty_since: None,
            pace: Pace::default(),
            counters: counters.clone(),
            usage: usage.clone(),
        };
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || thread.serve(rx))
            .expect("spawn store writer");
        Writer {
            jobs: tx,
            counters,
            usage,
        }
    }

    /// Commits, durable commits (checkpoints) and log syncs so far, for benchmarks.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.counters.commits.load(Ordering::Relaxed),
            self.counters.durable.load(Ordering::Relaxed),
            self.counters.log_syncs.load(Ordering::Relaxed),
        )
    }

    /// Bytes of the log written since the last checkpoint.
    pub fn log_used(&self) -> u64 {
        self.counters.log_used.load(Ordering::Relaxed)
    }

    /// Whether changes wait for a checkpoint.
    pub fn has_pending(&self) -> bool {
        self.counters.pending.load(Ordering::Relaxed) > 0
    }

    /// Run `op` inside the next shared transaction; resolve after its commit, which is a
    /// checkpoint if `durable`, else not durable at all (a lazy change).
    ///
    /// `op` must check its preconditions before it changes anything: an `Err` from it is
    /// returned to its caller, while the changes of the other jobs still commit.
    pub async fn run<T, F>(&self, durable: bool, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let kind = if durable { Kind::Durable } else { Kind::Lazy };
        self.submit(kind, Vec::new(), op).await
    }

    /// Make a logged change; resolve once it is durable (its record synced to the log, or
    /// its commit a checkpoint).
    pub async fn logged<O: Logged>(&self, op: O) -> Result<O::Out, StoreError> {
        let record = op.record();
        let usage = self.usage.clone();
        let apply = move |tx: &WriteTransaction| op.apply(tx, &usage);
        if record.len() > MAX_RECORD {
            drop(record);
            return self.submit(Kind::Durable, Vec::new(), apply).await;
        }
        self.submit(Kind::Logged, record, apply).await
    }

    async fn submit<T, F>(&self, kind: Kind, record: Vec<u8>, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = Job {
            kind,
            record,
            op: Box::new(move |wtx: &WriteTransaction| {
                let result = op(wtx);
                let ok = result.is_ok();
                let finish = Box::new(move |commit: Result<(), StoreError>| {
                    let _ = tx.send(commit.and(result));
                }) as Finish;
                (ok, finish)
            }),
        };
        self.jobs.send(job).map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }
}

impl Thread {
    fn serve(&mut self, rx: mpsc::Receiver<Job>) {
        loop {
            let first = match self.dirty_since {
                Some(since) => {
                    let wait = CHECKPOINT_AFTER.saturating_sub(since.elapsed());
                    match rx.recv_timeout(wait) {
                        Ok(job) => job,
                        Err(RecvTimeoutError::Timeout) => {
                            self.checkpoint();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match rx.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                },
            };
            let mut batch = vec![first];
            let start = Instant::now();
            let expect = self.pace.expect(start).min(MAX_BATCH);
            let gather_until = start + GATHER;
            while batch.len() < MAX_BATCH {
                // Whatever is queued joins; then wait only while fewer jobs came than the
                // recent load promises.
                let next = match rx.try_recv() {
                    Ok(job) => Some(job),
                    Err(_) if batch.len() < expect => rx
                        .recv_timeout(gather_until.saturating_duration_since(Instant::now()))
                        .ok(),
                    Err(_) => None,
                };
                match next {
                    Some(job) => batch.push(job),
                    None => break,
                }
            }
            self.pace.record(batch.len(), Instant::now());
            self.commit(batch);
        }
        // Every handle is gone (shutdown): leave nothing for the log to replay.
        if self.dirty_since.is_some() {
            self.checkpoint();
        }
    }

    /// An empty durable commit that covers everything committed so far.
    fn checkpoint(&mut self) {
        self.commit(Vec::new());
    }

    fn commit(&mut self, batch: Vec<Job>) {
        let mut durable = batch.is_empty() || batch.iter().any(|j| j.kind == Kind::Durable);
        let wtx = match self.db.begin_write() {
            Ok(t) => t,
            Err(e) => {
                let msg = e.to_string();
                tracing::error!("store: cannot begin write: {msg}");
                // Nothing ran: every job's answer channel closes (WriterGone).
                return;
            }
        };
        let mut records: Vec<Vec<u8>> = Vec::new();
        let mut finishers: Vec<Finish> = Vec::with_capacity(batch.len());
        for job in batch {
            let (ok, finish) = (job.op)(&wtx);
            if ok && job.kind == Kind::Logged {
                records.push(job.record);
            }
            finishers.push(finish);
        }
        let payloads: Vec<&[u8]> = records.iter().map(|r| r.as_slice()).collect();
        let len = self.log.batch_len(&payloads);
        if !payloads.is_empty() && (!self.log.fits(len) || self.log.used() + len > CHECKPOINT_BYTES)
        {
            // This batch is the checkpoint instead.
            durable = true;
        }
        let result = self.finish_commit(wtx, durable, &payloads);
        drop(payloads);
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        match &result {
            Ok(()) if durable => {
                self.counters.durable.fetch_add(1, Ordering::Relaxed);
                self.counters.pending.store(0, Ordering::Relaxed);
                self.log.reset();
                self.dirty_since = None;
            }
            Ok(()) => {
                self.counters.pending.fetch_add(1, Ordering::Relaxed);
                self.dirty_since.get_or_insert_with(Instant::now);
            }
            Err(e) => {
                tracing::error!("store: commit failed: {e}");
                self.usage.forget_all();
            }
        }
        self.counters
            .log_used
            .store(self.log.used(), Ordering::Relaxed);
        for finish in finishers {
            finish(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Db(e.to_string())),
            });
        }
    }

    /// Log the records (unless the commit is durable), record the sequence number, commit.
    fn finish_commit(
        &mut self,
        mut wtx: WriteTransaction,
        durable: bool,
        records: &[&[u8]],
    ) -> Result<(), StoreError> {
        let mut seq = self.seq;
        if !durable && !records.is_empty() {
            seq += records.len() as u64;
        }
        put_seq(&wtx, seq)?;
        if durable {
            let _ = wtx.set_durability(Durability::Immediate);
        } else {
            let _ = wtx.set_durability(Durability::None);
            if !records.is_empty() {
                // The answer waits for this sync; the commit below only makes the change
                // visible. A failed write leaves the transaction uncommitted.
                if let Err(e) = self.log.append(self.seq + 1, records, true) {
                    let _ = wtx.abort();
                    return Err(StoreError::Db(format!(
                        "write-ahead log {}: {e}",
                        self.log.path().display()
                    )));
                }
                self.counters.log_syncs.fetch_add(1, Ordering::Relaxed);
                self.seq = seq;
            }
        }
        wtx.commit()?;
        Ok(())
    }
}

/// The sizes of the last few batches and when they were committed.
#[derive(Default)]
struct Pace {
    recent: std::collections::VecDeque<(Instant, usize)>,
}

impl Pace {
    const KEEP: usize = 16;

    /// How many jobs the load of the last [`PACE_SPAN`] promises for one batch.
    fn expect(&self, now: Instant) -> usize {
        self.recent
            .iter()
            .filter(|(at, _)| now.saturating_duration_since(*at) <= PACE_SPAN)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(1)
    }

    fn record(&mut self, jobs: usize, at: Instant) {
        if self.recent.len() == Self::KEEP {
            self.recent.pop_front();
        }
        self.recent.push_back((at, jobs));
    }
}

/// Record in `meta` the last log record whose change the transaction holds.
pub(super) fn put_seq(tx: &WriteTransaction, seq: u64) -> Result<(), StoreError> {
    tx.open_table(META)?
        .insert("log_seq", seq.to_le_bytes().as_slice())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_expects_the_biggest_recent_batch_and_forgets_old_ones() {
        let mut p = Pace::default();
        let t0 = Instant::now();
        assert_eq!(p.expect(t0), 1, "no history: a lone job is not delayed");
        p.record(10, t0);
        p.record(3, t0 + Duration::from_millis(5));
        assert_eq!(p.expect(t0 + Duration::from_millis(10)), 10);
        assert_eq!(
            p.expect(t0 + PACE_SPAN + Duration::from_millis(1)),
            3,
            "the batch of 10 is out of the span"
        );
        assert_eq!(p.expect(t0 + Duration::from_secs(1)), 1);
        for i in 0..(Pace::KEEP + 4) {
            p.record(2, t0 + Duration::from_millis(20 + i as u64));
        }
        assert_eq!(p.recent.len(), Pace::KEEP);
        assert_eq!(p.expect(t0 + Duration::from_millis(40)), 2);
    }
}
