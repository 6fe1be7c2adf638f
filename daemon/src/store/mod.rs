//! The only code that touches redb: typed tables for accounts, mailboxes, messages,
//! message bodies, metadata, the outbound queue and the push queue; the schema version; and the
//! group-commit writer (DESIGN.md principle 2).
//!
//! Reads run directly on a read transaction (microseconds). Writes go to one writer
//! thread that gathers every pending job into one transaction. Deliveries, APPEND, flag
//! changes and expunges are records of a write-ahead log next to the store file
//! (`<store>.wal`, `wal.rs`): their answer waits for one `fdatasync` of the log shared by
//! every job of the batch, and redb commits them without syncing; a checkpoint (a durable
//! redb commit) covers them later, so a message fetched and expunged within a minute
//! never reaches the B-tree file on the card (issue 14). Account and mailbox changes and
//! the outbound queue commit durably (`Durability::Immediate`) as before.

mod codec;
mod op;
mod usage;
mod wal;
mod writer;

use std::path::Path;
use std::sync::Arc;

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, WriteTransaction,
};

use codec::{Dec, Enc};

use crate::message::{Parsed, View};
use usage::UsageCache;
use writer::Writer;

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

/// Version of the table layout below; recorded in `meta` at creation. 2: every body
/// carries its MIME structure (`message::Node::encode`) in front of the bytes.
pub const SCHEMA_VERSION: u64 = 2;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// address → account row.
const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
/// (address, mailbox name) → mailbox row.
const MAILBOXES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("mailboxes");
/// (mailbox id, uid) → message row (flags, size, date, body id).
const MESSAGES: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("messages");
/// body id → varint length of the structure, the structure, the message bytes; shared by
/// every copy of one delivery (see [`encode_body`]).
const BODIES: TableDefinition<u64, &[u8]> = TableDefinition::new("bodies");
/// body id → number of message and queue rows that point at it.
const BODY_REFS: TableDefinition<u64, u32> = TableDefinition::new("body_refs");
/// queue id → outbound queue row.
const QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("queue");
/// (next attempt, queue id) → (): the outbound queue by due time, so the scheduler reads
/// only the rows it can start now and the time of the next one. Derived from `QUEUE`:
/// checked against it at open and rebuilt when it differs ([`index_queue`]).
const QUEUE_DUE: TableDefinition<(u64, u64), ()> = TableDefinition::new("queue_due");
/// (address, token) → (first registration, last SET), Unix seconds.
const TOKENS: TableDefinition<(&str, &str), (u64, u64)> = TableDefinition::new("device_tokens");
/// job id → push job row (PUSH-2): account, token, attempts, first and next attempt.
const PUSH_JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("push_jobs");
/// (failed attempts, next attempt, job id) → (): the push jobs by retry level and due
/// time, so the notifier reads only the jobs it can start now.
const PUSH_DUE: TableDefinition<(u32, u64, u64), ()> = TableDefinition::new("push_due");

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

/// A message accepted by SMTP: one commit stores it for every local recipient and
/// queues it for every remote one.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Envelope sender (empty for `<>`).
    pub sender: String,
    /// Local recipient accounts (canonical addresses, `+ext` already removed).
    pub local: Vec<String>,
    /// Remote recipients, for the outbound queue.
    pub remote: Vec<String>,
    /// The message to store (after header cleanup) with its structure.
    pub body: Parsed,
    /// Arrival time, Unix seconds.
    pub received: u64,
}

/// Outcome of [`Store::deliver_within_quota`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Local recipients whose INBOX received the message.
    pub stored: Vec<String>,
    /// Local recipients refused because the message would take them over the quota
    /// (QUOTA-2); nothing was stored for them.
    pub over_quota: Vec<String>,
}

/// A message of an account, with the mailbox it is in (expiry and quota trimming).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountMessage {
    pub mailbox: String,
    pub meta: MessageMeta,
}

/// What [`Store::delete_account`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountRemoval {
    pub mailboxes: usize,
    pub messages: usize,
    pub tokens: usize,
}

/// A row of the outbound queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    pub id: u64,
    pub sender: String,
    pub recipients: Vec<String>,
    pub created: u64,
    pub next_attempt: u64,
    pub attempts: u32,
}

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

/// Which stored recipients of a delivery get push jobs, in the delivery's own commit
/// (PUSH-1, PUSH-2).
#[derive(Debug, Clone)]
pub struct PushRequest {
    /// Local recipients to notify (those whose From is not the account itself); only
    /// those that actually received the message get jobs.
    pub accounts: Vec<String>,
    /// Job creation time, Unix seconds.
    pub now: u64,
    /// MD-1: only tokens last set within `tokens_set_from..=tokens_set_until` (Unix
    /// seconds) get a job; older ones expired, later ones are dated in the future.
    pub tokens_set_from: u64,
    pub tokens_set_until: u64,
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

struct MailboxRow {
    id: u64,
    uid_validity: u32,
    uid_next: u32,
    subscribed: bool,
}

impl MailboxRow {
    fn encode(&self) -> Vec<u8> {
        Enc::default()
            .u64(self.id)
            .u32(self.uid_validity)
            .u32(self.uid_next)
            .u8(self.subscribed as u8)
            .0
    }
    fn decode(b: &[u8]) -> Result<Self, StoreError> {
        let mut d = Dec(b);
        Ok(MailboxRow {
            id: d.u64()?,
            uid_validity: d.u32()?,
            uid_next: d.u32()?,
            subscribed: d.u8()? != 0,
        })
    }
    fn info(&self, name: &str) -> MailboxInfo {
        MailboxInfo {
            name: name.to_string(),
            uid_validity: self.uid_validity,
            uid_next: self.uid_next,
            subscribed: self.subscribed,
        }
    }
}

struct MessageRow {
    body_id: u64,
    size: u64,
    internal_date: u64,
    flags: Flags,
}

impl MessageRow {
    fn encode(&self) -> Vec<u8> {
        Enc::default()
            .u64(self.body_id)
            .u64(self.size)
            .u64(self.internal_date)
            .u8(self.flags.bits)
            .strs(&self.flags.keywords)
            .0
    }
    fn decode(b: &[u8]) -> Result<Self, StoreError> {
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
    fn meta(&self, uid: u32) -> MessageMeta {
        MessageMeta {
            uid,
            flags: self.flags.clone(),
            size: self.size,
            internal_date: self.internal_date,
        }
    }
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

fn encode_queue(q: &QueuedMessage, body_id: u64) -> Vec<u8> {
    Enc::default()
        .u64(body_id)
        .str(&q.sender)
        .strs(&q.recipients)
        .u64(q.created)
        .u64(q.next_attempt)
        .u32(q.attempts)
        .0
}

fn decode_queue(id: u64, b: &[u8]) -> Result<(QueuedMessage, u64), StoreError> {
    let mut d = Dec(b);
    let body_id = d.u64()?;
    Ok((
        QueuedMessage {
            id,
            sender: d.str()?,
            recipients: d.strs()?,
            created: d.u64()?,
            next_attempt: d.u64()?,
            attempts: d.u32()?,
        },
        body_id,
    ))
}

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

fn get_mailbox(
    tx: &WriteTransaction,
    account: &str,
    name: &str,
) -> Result<Option<MailboxRow>, StoreError> {
    let t = tx.open_table(MAILBOXES)?;
    let row = t.get((account, name))?;
    row.map(|v| MailboxRow::decode(v.value())).transpose()
}

fn put_mailbox(
    tx: &WriteTransaction,
    account: &str,
    name: &str,
    row: &MailboxRow,
) -> Result<(), StoreError> {
    tx.open_table(MAILBOXES)?
        .insert((account, name), row.encode().as_slice())?;
    Ok(())
}

fn new_mailbox(tx: &WriteTransaction, account: &str, name: &str) -> Result<MailboxRow, StoreError> {
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

/// Add `n` references to a body.
fn ref_body(tx: &WriteTransaction, body_id: u64, n: u32) -> Result<(), StoreError> {
    let mut refs = tx.open_table(BODY_REFS)?;
    let cur = refs.get(body_id)?.map(|v| v.value()).unwrap_or(0);
    refs.insert(body_id, cur + n)?;
    Ok(())
}

/// Drop one reference; the body goes with its last one.
fn unref_body(tx: &WriteTransaction, body_id: u64) -> Result<(), StoreError> {
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

fn store_body(tx: &WriteTransaction, body: &Parsed, refs: u32) -> Result<u64, StoreError> {
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
fn split_body(value: &[u8]) -> Result<(&[u8], &[u8]), StoreError> {
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
fn migrate_bodies_to_v2(tx: &WriteTransaction) -> Result<u64, StoreError> {
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

/// Append a message row to a mailbox, taking its next UID.
fn add_message(
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
fn message_body_id(
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
                    let n = migrate_bodies_to_v2(&tx)?;
                    tracing::info!("store: schema 1 → 2, structures added to {n} messages");
                    meta.insert("schema_version", SCHEMA_VERSION.to_le_bytes().as_slice())?;
                }
                Some(_) => {}
            }
            // Create every table so readers never meet a missing one.
            tx.open_table(ACCOUNTS)?;
            tx.open_table(MAILBOXES)?;
            tx.open_table(MESSAGES)?;
            tx.open_table(BODIES)?;
            tx.open_table(BODY_REFS)?;
            tx.open_table(QUEUE)?;
            tx.open_table(QUEUE_DUE)?;
            tx.open_table(TOKENS)?;
            tx.open_table(PUSH_JOBS)?;
            tx.open_table(PUSH_DUE)?;
        }
        if let Some(n) = index_queue(&tx)? {
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

    fn read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.db.begin_read()?)
    }

    // ---- accounts -------------------------------------------------------------------

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
        let account = Account {
            address: address.to_string(),
            password_hash: password_hash.to_string(),
            last_login_day: now / 86400 * 86400,
            enforce_e2ee: true,
        };
        self.writer
            .run(true, move |tx| {
                let existing = {
                    let t = tx.open_table(ACCOUNTS)?;
                    let row = t.get(account.address.as_str())?;
                    row.map(|v| decode_account(&account.address, v.value()))
                        .transpose()?
                };
                if let Some(a) = existing {
                    return Ok(Created::Existing(a));
                }
                tx.open_table(ACCOUNTS)?.insert(
                    account.address.as_str(),
                    encode_account(&account).as_slice(),
                )?;
                if get_mailbox(tx, &account.address, "INBOX")?.is_none() {
                    new_mailbox(tx, &account.address, "INBOX")?;
                }
                Ok(Created::New)
            })
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
                let boxes: Vec<(String, MailboxRow)> = {
                    let t = tx.open_table(MAILBOXES)?;
                    let mut v = Vec::new();
                    for row in t.range((address.as_str(), "")..)? {
                        let (k, val) = row?;
                        let (acc, name) = k.value();
                        if acc != address {
                            break;
                        }
                        v.push((name.to_string(), MailboxRow::decode(val.value())?));
                    }
                    v
                };
                for (name, mb) in &boxes {
                    for (_, row) in take_messages(tx, mb.id, |_, _| true)? {
                        unref_body(tx, row.body_id)?;
                        removal.messages += 1;
                    }
                    tx.open_table(MAILBOXES)?
                        .remove((address.as_str(), name.as_str()))?;
                    removal.mailboxes += 1;
                }
                {
                    let mut t = tx.open_table(TOKENS)?;
                    let tokens: Vec<String> = {
                        let mut v = Vec::new();
                        for row in t.range((address.as_str(), "")..)? {
                            let (k, _) = row?;
                            let (acc, token) = k.value();
                            if acc != address {
                                break;
                            }
                            v.push(token.to_string());
                        }
                        v
                    };
                    for token in &tokens {
                        t.remove((address.as_str(), token.as_str()))?;
                    }
                    removal.tokens = tokens.len();
                }
                // Pending pushes of the account go with its tokens.
                let ids = {
                    let t = tx.open_table(PUSH_JOBS)?;
                    let mut ids = Vec::new();
                    for row in t.iter()? {
                        let (k, v) = row?;
                        if decode_push(k.value(), v.value())?.account == address {
                            ids.push(k.value());
                        }
                    }
                    ids
                };
                for id in ids {
                    remove_push(tx, id)?;
                }
                let anything = existed || removal != AccountRemoval::default();
                Ok(anything.then_some(removal))
            })
            .await
    }

    // ---- delivery -------------------------------------------------------------------

    /// Store a message for its local recipients' INBOXes and queue it for the remote
    /// ones, in one durable commit shared with concurrent deliveries. When this returns
    /// `Ok`, the message survives a crash. Returns the local recipients that received it
    /// (an account deleted meanwhile is skipped).
    pub async fn deliver(&self, d: Delivery) -> Result<Vec<String>, StoreError> {
        Ok(self.deliver_within_quota(d, u64::MAX).await?.stored)
    }

    /// [`Store::deliver`] with the per-account limit `max_mailbox_size` in bytes
    /// (QUOTA-1/2): a local recipient whose usage plus this message would exceed it gets
    /// nothing and is reported in [`Delivered::over_quota`]. The usage is read inside
    /// the commit, so concurrent deliveries cannot overrun it together.
    pub async fn deliver_within_quota(
        &self,
        d: Delivery,
        max_mailbox_size: u64,
    ) -> Result<Delivered, StoreError> {
        Ok(self.deliver_with_push(d, max_mailbox_size, None).await?.0)
    }

    /// [`Store::deliver_within_quota`] that also creates, in the same durable commit,
    /// one push job per valid device token of every account of `push` that received the
    /// message (PUSH-1, PUSH-2). Returns the outcome and the number of jobs created.
    pub async fn deliver_with_push(
        &self,
        d: Delivery,
        max_mailbox_size: u64,
        push: Option<PushRequest>,
    ) -> Result<(Delivered, usize), StoreError> {
        self.writer
            .logged(op::Deliver {
                delivery: d,
                max_mailbox_size,
                push,
            })
            .await
    }

    // ---- push queue -----------------------------------------------------------------

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

fn put_push(tx: &WriteTransaction, job: &PushJob) -> Result<(), StoreError> {
    tx.open_table(PUSH_JOBS)?
        .insert(job.id, encode_push(job).as_slice())?;
    tx.open_table(PUSH_DUE)?
        .insert((job.attempts, job.next_attempt, job.id), ())?;
    Ok(())
}

fn remove_push(tx: &WriteTransaction, id: u64) -> Result<Option<PushJob>, StoreError> {
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

/// The delivery transaction of [`Store::deliver_with_push`] (QUOTA-1/2).
fn deliver_in(
    tx: &WriteTransaction,
    usage: &UsageCache,
    d: &Delivery,
    max_mailbox_size: u64,
) -> Result<Delivered, StoreError> {
    let size = d.body.len() as u64;
    let mut targets = Vec::new();
    let mut over_quota = Vec::new();
    for rcpt in &d.local {
        if let Some(mb) = get_mailbox(tx, rcpt, "INBOX")? {
            // QUOTA-2: refused when this message would exceed the quota.
            let used = match usage.get(rcpt) {
                Ok(bytes) => bytes,
                Err(generation) => {
                    // Inside the writer the transaction is the truth; fill the cache.
                    let bytes = usage_in(tx, rcpt)?;
                    usage.fill(rcpt, generation, bytes);
                    bytes
                }
            };
            if crate::policy::quota::exceeds(used, size, max_mailbox_size) {
                over_quota.push(rcpt.clone());
                continue;
            }
            targets.push((rcpt.clone(), mb));
        }
    }
    // OUT-1: one queue row (one transaction) per destination domain.
    let by_domain = group_by_domain(&d.remote);
    let refs = targets.len() as u32 + by_domain.len() as u32;
    if refs == 0 {
        return Ok(Delivered {
            stored: Vec::new(),
            over_quota,
        });
    }
    let body_id = store_body(tx, &d.body, refs)?;
    let row = MessageRow {
        body_id,
        size,
        internal_date: d.received,
        flags: Flags::default(),
    };
    let mut stored = Vec::new();
    {
        let mut messages = tx.open_table(MESSAGES)?;
        let encoded = row.encode();
        for (rcpt, mut mb) in targets {
            let uid = mb.uid_next;
            mb.uid_next += 1;
            messages.insert((mb.id, uid), encoded.as_slice())?;
            put_mailbox(tx, &rcpt, "INBOX", &mb)?;
            usage.add(&rcpt, size);
            stored.push(rcpt);
        }
    }
    for recipients in by_domain {
        let id = next_id(tx)?;
        let q = QueuedMessage {
            id,
            sender: d.sender.clone(),
            recipients,
            created: d.received,
            next_attempt: d.received,
            attempts: 0,
        };
        put_queue(tx, &q, body_id, None)?;
    }
    Ok(Delivered { stored, over_quota })
}

/// PUSH-2: one job per valid device token of `account`, due at once.
fn add_push_jobs(
    tx: &WriteTransaction,
    account: &str,
    push: &PushRequest,
) -> Result<usize, StoreError> {
    let tokens: Vec<String> = {
        let t = tx.open_table(TOKENS)?;
        let mut v = Vec::new();
        for row in t.range((account, "")..)? {
            let (k, val) = row?;
            let (acc, token) = k.value();
            if acc != account {
                break;
            }
            // MD-1: expired or future-dated tokens are not used.
            if (push.tokens_set_from..=push.tokens_set_until).contains(&val.value().1) {
                v.push(token.to_string());
            }
        }
        v
    };
    for token in &tokens {
        let id = next_id(tx)?;
        let job = PushJob {
            id,
            account: account.to_string(),
            token: token.clone(),
            attempts: 0,
            first_attempt: push.now,
            next_attempt: push.now,
        };
        put_push(tx, &job)?;
    }
    Ok(tokens.len())
}

/// Recipients grouped by the domain after the last `@` (ASCII case-insensitive), in
/// order of first appearance.
fn group_by_domain(recipients: &[String]) -> Vec<Vec<String>> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for rcpt in recipients {
        let domain = rcpt
            .rsplit_once('@')
            .map_or("", |(_, d)| d)
            .to_ascii_lowercase();
        match groups.iter_mut().find(|(d, _)| *d == domain) {
            Some((_, list)) => list.push(rcpt.clone()),
            None => groups.push((domain, vec![rcpt.clone()])),
        }
    }
    groups.into_iter().map(|(_, list)| list).collect()
}

/// Write queue row `q` (body `body_id`) and its due-time key; `was_due` is the row's
/// next attempt before, if it existed.
fn put_queue(
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
fn index_queue(tx: &WriteTransaction) -> Result<Option<u64>, StoreError> {
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

impl Store {
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

    /// A temporary failure: the new attempt count and the next attempt time (OUT-6).
    /// Not durable on its own: after a crash the retry comes earlier, nothing is lost.
    pub async fn queue_retry(
        &self,
        id: u64,
        attempts: u32,
        next_attempt: u64,
    ) -> Result<(), StoreError> {
        self.writer
            .run(false, move |tx| {
                let row = tx.open_table(QUEUE)?.get(id)?.map(|v| v.value().to_vec());
                let Some(row) = row else { return Ok(()) };
                let (mut q, body_id) = decode_queue(id, &row)?;
                let was_due = q.next_attempt;
                q.attempts = attempts;
                q.next_attempt = next_attempt;
                put_queue(tx, &q, body_id, Some(was_due))
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

    // ---- mailboxes ------------------------------------------------------------------

    /// All mailboxes of an account, by name.
    pub fn mailboxes(&self, account: &str) -> Result<Vec<MailboxInfo>, StoreError> {
        let rx = self.read()?;
        let t = rx.open_table(MAILBOXES)?;
        let mut out = Vec::new();
        for row in t.range((account, "")..)? {
            let (k, v) = row?;
            let (acc, name) = k.value();
            if acc != account {
                break;
            }
            out.push(MailboxRow::decode(v.value())?.info(name));
        }
        Ok(out)
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
                let rows = take_messages(tx, mb.id, |_, _| true)?;
                for (_, row) in rows {
                    unref_body(tx, row.body_id)?;
                }
                tx.open_table(MAILBOXES)?
                    .remove((account.as_str(), name.as_str()))?;
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

    // ---- messages -------------------------------------------------------------------

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
        for row in boxes.range((account, "")..)? {
            let (k, v) = row?;
            let (acc, name) = k.value();
            if acc != account {
                break;
            }
            let mb = MailboxRow::decode(v.value())?;
            for m in msgs.range((mb.id, 0)..=(mb.id, u32::MAX))? {
                let (mk, mv) = m?;
                out.push(AccountMessage {
                    mailbox: name.to_string(),
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

    // ---- metadata -------------------------------------------------------------------

    /// SETMETADATA `/private/devicetoken`: add a token or refresh its time (MD-1).
    pub async fn set_device_token(
        &self,
        account: &str,
        token: &str,
        now: u64,
    ) -> Result<(), StoreError> {
        let (account, token) = (account.to_string(), token.to_string());
        self.writer
            .run(true, move |tx| {
                let mut t = tx.open_table(TOKENS)?;
                let first = t
                    .get((account.as_str(), token.as_str()))?
                    .map(|v| v.value().0)
                    .unwrap_or(now);
                t.insert((account.as_str(), token.as_str()), (first, now))?;
                Ok(())
            })
            .await
    }

    /// Device tokens of an account: (token, first registration, last SET).
    pub fn device_tokens(&self, account: &str) -> Result<Vec<(String, u64, u64)>, StoreError> {
        let rx = self.read()?;
        let t = rx.open_table(TOKENS)?;
        let mut out = Vec::new();
        for row in t.range((account, "")..)? {
            let (k, v) = row?;
            let (acc, token) = k.value();
            if acc != account {
                break;
            }
            let (first, last) = v.value();
            out.push((token.to_string(), first, last));
        }
        out.sort_by_key(|t| t.1);
        Ok(out)
    }

    /// Remove device tokens of an account.
    pub async fn remove_device_tokens(
        &self,
        account: &str,
        tokens: Vec<String>,
    ) -> Result<(), StoreError> {
        let account = account.to_string();
        self.writer
            .run(false, move |tx| {
                let mut t = tx.open_table(TOKENS)?;
                for token in &tokens {
                    t.remove((account.as_str(), token.as_str()))?;
                }
                Ok(())
            })
            .await
    }
}

/// Sum of stored message sizes of an account inside a write transaction (QUOTA-1).
fn usage_in(tx: &WriteTransaction, account: &str) -> Result<u64, StoreError> {
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
    for row in boxes.range((account, "")..)? {
        let (k, v) = row?;
        if k.value().0 != account {
            break;
        }
        let mb = MailboxRow::decode(v.value())?;
        for m in msgs.range((mb.id, 0)..=(mb.id, u32::MAX))? {
            let (_, mv) = m?;
            total = total.saturating_add(MessageRow::decode(mv.value())?.size);
        }
    }
    Ok(total)
}

fn apply_flags(cur: &mut Flags, op: FlagOp, f: &Flags) {
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
fn take_messages(
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

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod tests;
