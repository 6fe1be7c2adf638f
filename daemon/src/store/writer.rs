//! The group-commit writer: one thread owns every write transaction. It takes all jobs
//! waiting in its queue, runs them in one transaction, commits once (durably if any job
//! asked for it), and only then answers each job (DESIGN.md principle 2).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use redb::{Database, Durability, WriteTransaction};
use tokio::sync::oneshot;

use super::StoreError;

/// Most jobs folded into one commit.
const MAX_BATCH: usize = 512;

type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Job = (bool, Box<dyn FnOnce(&WriteTransaction) -> Finish + Send>);

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    durable: AtomicU64,
    /// Non-durable commits since the last durable one (LW-5).
    pending: AtomicU64,
}

#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
    counters: Arc<Counters>,
}

impl Writer {
    /// Start the writer thread; `on_failure` runs after a commit failed.
    pub fn start(db: Arc<Database>, on_failure: Box<dyn Fn() + Send>) -> Writer {
        let (tx, rx) = mpsc::channel::<Job>();
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(db, rx, c, on_failure))
            .expect("spawn store writer");
        Writer { jobs: tx, counters }
    }

    pub fn counts(&self) -> (u64, u64) {
        (
            self.counters.commits.load(Ordering::Relaxed),
            self.counters.durable.load(Ordering::Relaxed),
        )
    }

    /// Whether non-durable commits wait for a durable one.
    pub fn has_pending(&self) -> bool {
        self.counters.pending.load(Ordering::Relaxed) > 0
    }

    /// Run `op` inside the next shared transaction; resolve after its commit.
    ///
    /// `op` must check its preconditions before it changes anything: an `Err` from it is
    /// returned to its caller, while the changes of the other jobs still commit.
    pub async fn run<T, F>(&self, durable: bool, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = (
            durable,
            Box::new(move |wtx: &WriteTransaction| {
                let result = op(wtx);
                Box::new(move |commit: Result<(), StoreError>| {
                    let _ = tx.send(commit.and(result));
                }) as Finish
            }),
        );
        self.jobs.send(job).map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }
}

fn run(
    db: Arc<Database>,
    rx: mpsc::Receiver<Job>,
    counters: Arc<Counters>,
    on_failure: Box<dyn Fn() + Send>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let durable = batch.iter().any(|(d, _)| *d);
        let mut wtx = match db.begin_write() {
            Ok(t) => t,
            Err(e) => {
                let msg = e.to_string();
                tracing::error!("store: cannot begin write: {msg}");
                // Nothing ran: report the failure to every job by running none of them.
                drop(batch);
                continue;
            }
        };
        let _ = wtx.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        });
        let finishers: Vec<Finish> = batch.into_iter().map(|(_, op)| op(&wtx)).collect();
        let result = wtx.commit().map_err(|e| StoreError::Db(e.to_string()));
        counters.commits.fetch_add(1, Ordering::Relaxed);
        if durable {
            counters.durable.fetch_add(1, Ordering::Relaxed);
            if result.is_ok() {
                counters.pending.store(0, Ordering::Relaxed);
            }
        } else {
            counters.pending.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = &result {
            tracing::error!("store: commit failed: {e}");
            on_failure();
        }
        for finish in finishers {
            finish(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Db(e.to_string())),
            });
        }
    }
}
