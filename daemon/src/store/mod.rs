//! The only code that touches redb: typed tables for accounts, mailboxes, messages,
//! message bodies, metadata, the outbound queue, the push queue and sign-up invites; the
//! schema version; and the group-commit writer (DESIGN.md principle 2).
//!
//! Reads run directly on a read transaction (microseconds). Writes go to one writer
//! thread that gathers every pending job into one transaction. Deliveries, APPEND, flag
//! changes and expunges are records of a write-ahead log next to the store file
//! (`<store>.wal`, `wal.rs`): their answer waits for one `fdatasync` of the log shared by
//! every job of the batch, and redb commits them without syncing; a checkpoint (a durable
//! redb commit) covers them later, so a message fetched and expunged within a minute
//! never reaches the B-tree file on the card (issue 14). Account and mailbox changes and
//! the outbound queue commit durably (`Durability::Immediate`) as before.
//!
//! This file owns the [`Store`] handle (opening, schema check and migration, log replay,
//! compaction, checkpoints), [`StoreError`], the store-wide id counter and the installation
//! secrets in `meta`. Each table family has its own module, which adds its methods to
//! [`Store`]:
//!
//! - `tables`: every table definition and the schema version (the on-disk format);
//! - `accounts`: accounts, account deletion, the usage sum (QUOTA-1), pages of accounts
//!   with their figures for the operator;
//! - `blocked`: addresses the operator blocked (no login creates them again);
//! - `mailboxes`: mailboxes and their message rows: flags, APPEND, expunge, copy;
//! - `bodies`: message bodies, their reference counts, the stored body format;
//! - `delivery`: the one delivery path (INBOX rows, queue rows and push jobs in one commit);
//! - `queue`: the outbound queue and its due-time index;
//! - `push`: push jobs and their due-time index;
//! - `metadata`: IMAP METADATA device tokens;
//! - `invites`: sign-up invites and the creation of an account with one;
//! - `snapshot`: every table's rows as one read transaction sees them, and back (backups);
//! - `op`, `wal`, `writer`, `usage`, `codec`: logged operations, the write-ahead log, the
//!   writer thread, the usage cache and the row encoding.

mod accounts;
mod blocked;
mod bodies;
mod codec;
mod delivery;
mod invites;
mod mailboxes;
mod metadata;
mod op;
mod push;
mod queue;
pub mod snapshot;
mod tables;
mod usage;
mod wal;
mod writer;

use std::path::Path;
use std::sync::Arc;

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    WriteTransaction,
};

use tables::{BODIES, META};
use usage::UsageCache;
use writer::Writer;

pub use accounts::{Account, AccountFigures, AccountRemoval, Created};
pub use blocked::{Block, BlockedAddress};
pub use delivery::{Delivered, Delivery, PushRequest};
pub use invites::{InviteCreated, InviteRow};
pub use mailboxes::{AccountMessage, FlagOp, Flags, MailboxInfo, MessageMeta};
pub use push::{MAX_PUSH_LEVEL, PushJob};
pub use queue::QueuedMessage;
pub use tables::SCHEMA_VERSION;

/// redb's page cache (its default is 1 GiB, more than a Raspberry Pi 3 has): messages are
/// read once or twice each, so a small cache costs little.
/// The default of `store_cache_size` (a test checks that the config table agrees).
pub const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Name of the store file inside the data directory.
pub const STORE_FILE: &str = "relaybox.redb";

/// A store file at least this big, more than half of it free pages, is compacted when it
/// is opened (a quiet moment: nothing else uses it yet).
const COMPACT_MIN_BYTES: u64 = 64 << 20;

/// Size of the write-ahead log file (preallocated once, reused after every checkpoint).
const LOG_BYTES: u64 = 8 << 20;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(String),
    #[error("no such mailbox")]
    NoMailbox,
    #[error("mailbox exists")]
    MailboxExists,
    #[error("no such account")]
    NoAccount,
    /// The address is blocked: no account may be created with it.
    #[error("the address is blocked")]
    Blocked,
    #[error("the store writer has stopped")]
    WriterGone,
    #[error("schema version {found} is newer than this program ({supported})")]
    SchemaTooNew { found: u64, supported: u64 },
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        StoreError::Db(e.to_string())
    }
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.to_string())
            }
        }
    )*};
}
db_err!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Next value of the store-wide id counter (mailbox ids, body ids, queue ids).
fn next_id(tx: &WriteTransaction) -> Result<u64, StoreError> {
    let mut meta = tx.open_table(META)?;
    let cur = match meta.get("next_id")? {
        Some(v) => u64::from_le_bytes(v.value().try_into().unwrap_or([0; 8])),
        None => 1,
    };
    meta.insert("next_id", (cur + 1).to_le_bytes().as_slice())?;
    Ok(cur)
}

/// Open the write-ahead log next to the store file and apply every record after the last
/// checkpoint, in one durable commit. Returns the log (to be written from its start) and
/// the last sequence number. A torn tail (a write a crash cut short, never acknowledged)
/// ends the replay and is reported; a record that cannot be applied is reported and
/// skipped, never silently.
fn replay_log(
    db: &Database,
    path: &Path,
    usage: &UsageCache,
) -> Result<(wal::Log, u64), StoreError> {
    let mut log_path = path.as_os_str().to_owned();
    log_path.push(".wal");
    let log_path = std::path::PathBuf::from(log_path);
    let mut log = wal::Log::open(&log_path, LOG_BYTES)
        .map_err(|e| StoreError::Db(format!("{}: {e}", log_path.display())))?;
    let checkpoint = {
        let rx = db.begin_read()?;
        let meta = rx.open_table(META)?;
        meta.get("log_seq")?
            .map(|v| u64::from_le_bytes(v.value().try_into().unwrap_or([0; 8])))
            .unwrap_or(0)
    };
    let (records, tail) = log
        .read_after(checkpoint)
        .map_err(|e| StoreError::Db(format!("{}: {e}", log_path.display())))?;
    if let wal::Tail::Torn { offset } = tail {
        tracing::warn!(
            "store: the write-ahead log ends in a torn or damaged record at byte {offset} \
             (a write cut short by a crash is never acknowledged); replaying what precedes it"
        );
    }
    let Some(&(last, _)) = records.last() else {
        log.reset();
        return Ok((log, checkpoint));
    };
    let tx = db.begin_write()?;
    let mut failed = 0;
    for (seq, record) in &records {
        if let Err(e) = op::replay(&tx, usage, record) {
            failed += 1;
            tracing::error!("store: log record {seq} could not be applied: {e}");
        }
    }
    writer::put_seq(&tx, last)?;
    tx.commit()?;
    usage.forget_all();
    tracing::info!(
        "store: replayed {} log records ({} to {last}){}",
        records.len(),
        checkpoint + 1,
        if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        }
    );
    log.reset();
    Ok((log, last))
}

/// Give free pages back to the file system when the file is at least `min_bytes` and
/// more than half of it is unused (a burst of mail that was fetched and expired leaves
/// the file at its peak size). Failure is reported and harmless: the file stays as it was.
fn compact_if_sparse(db: &mut Database, path: &Path, min_bytes: u64) {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if len < min_bytes {
        return;
    }
    let Ok(tx) = db.begin_write() else { return };
    // `stats` walks every page of the file (slow, and it fills the page cache): only when
    // the rows are too few to fill half of it even at 64 KiB each (row counts are O(1)).
    let rows = tx
        .open_table(BODIES)
        .ok()
        .and_then(|t| t.len().ok())
        .unwrap_or(u64::MAX);
    if rows.saturating_mul(64 << 10).saturating_mul(2) >= len {
        let _ = tx.abort();
        return;
    }
    let stats = tx.stats();
    let _ = tx.abort();
    let Ok(stats) = stats else { return };
    let used = stats.allocated_pages() * stats.page_size() as u64;
    if used.saturating_mul(2) >= len {
        return;
    }
    let start = std::time::Instant::now();
    match db.compact() {
        Ok(_) => {
            let after = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            tracing::info!(
                "store: compacted {} from {len} to {after} bytes in {:.1} s",
                path.display(),
                start.elapsed().as_secs_f64()
            );
        }
        Err(e) => tracing::warn!("store: compaction of {} failed: {e}", path.display()),
    }
}

/// The handle every session shares. Cloning is cheap.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    writer: Writer,
    usage: Arc<UsageCache>,
}

impl Store {
    /// Open (or create) the store file (private, `crate::private`), check the schema
    /// version and start the writer.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// [`Store::open`] with `cache_bytes` of redb page cache (`store_cache_size`).
    /// Replays the write-ahead log into the store before anything else can write.
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let cache_bytes = usize::try_from(cache_bytes).unwrap_or(usize::MAX);
        crate::private::file(path)
            .map_err(|e| StoreError::Db(format!("{}: {e}", path.display())))?;
        let mut db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(path)?;
        let tx = db.begin_write()?;
        {
            let mut meta = tx.open_table(META)?;
            let found = meta
                .get("schema_version")?
                .map(|v| u64::from_le_bytes(v.value().try_into().unwrap_or([0; 8])));
            match found {
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION.to_le_bytes().as_slice())?;
                }
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::SchemaTooNew {
                        found: v,
                        supported: SCHEMA_VERSION,
                    });
                }
                Some(1) => {
                    let n = bodies::migrate_bodies_to_v2(&tx)?;
                    tracing::info!("store: schema 1 → 2, structures added to {n} messages");
                    meta.insert("schema_version", SCHEMA_VERSION.to_le_bytes().as_slice())?;
                }
                Some(_) => {}
            }
        }
        tables::create_all(&tx)?;
        if let Some(n) = queue::index_queue(&tx)? {
            tracing::info!("store: outbound queue index rebuilt ({n} rows)");
        }
        tx.commit()?;
        let usage = Arc::new(UsageCache::default());
        let (log, seq) = replay_log(&db, path, &usage)?;
        compact_if_sparse(&mut db, path, COMPACT_MIN_BYTES);
        let db = Arc::new(db);
        let writer = Writer::start(db.clone(), log, seq, usage.clone());
        Ok(Store { db, writer, usage })
    }

    /// Number of commits and of durable commits (checkpoints) so far, for benchmarks.
    pub fn commit_counts(&self) -> (u64, u64) {
        let (commits, durable, _) = self.writer.counts();
        (commits, durable)
    }

    /// Bytes of the write-ahead log written since the last checkpoint.
    pub fn log_bytes(&self) -> u64 {
        self.writer.log_used()
    }

    /// Number of `fdatasync`s of the write-ahead log so far, for benchmarks.
    pub fn log_syncs(&self) -> u64 {
        self.writer.counts().2
    }

    /// Checkpoint: make every change durable in the store file (logged ones and lazy
    /// last-login days), if there is any, so the log starts over (LW-5: every few
    /// minutes and at shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
        if self.writer.has_pending() {
            self.writer.run(true, |_| Ok(())).await?;
        }
        Ok(())
    }

    /// Close the store file: wait (at most 10 s) until the writer thread has let go of it,
    /// so that the file can be opened again at once (a command that opens a store twice).
    /// Changes not yet durable stay in the write-ahead log, as at any other stop.
    pub fn close(self) {
        let Store { db, writer, usage } = self;
        drop(writer);
        drop(usage);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while Arc::strong_count(&db) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.db.begin_read()?)
    }

    /// A secret of this installation (DKIM key, TURN secret): read it, or on first use
    /// store what `make` returns, durably, and return that; the same value ever after.
    /// Synchronous (called while the relay starts): redb runs this write transaction
    /// after the writer thread's current one.
    pub fn secret(
        &self,
        name: &str,
        make: impl FnOnce() -> Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        let key = format!("secret:{name}");
        {
            let rx = self.read()?;
            let meta = rx.open_table(META)?;
            if let Some(v) = meta.get(key.as_str())? {
                return Ok(v.value().to_vec());
            }
        }
        let tx = self.db.begin_write()?;
        let value = {
            let mut meta = tx.open_table(META)?;
            let existing = meta.get(key.as_str())?.map(|v| v.value().to_vec());
            match existing {
                Some(v) => v,
                None => {
                    let value = make();
                    meta.insert(key.as_str(), value.as_slice())?;
                    value
                }
            }
        };
        tx.commit()?;
        Ok(value)
    }
}

#[cfg(test)]
mod accounts_tests;
#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod tests;
