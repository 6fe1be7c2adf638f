//! Snapshots of the whole store for backups (issue 17): every table's rows as one read
//! transaction sees them — a consistent view of a running relay, while its writer goes
//! on — as a stream of framed records, and the way back into a new store file.
//!
//! The stream (integers little-endian): `RBSNAP1\n` and the schema version (u64); per
//! table `T`, the name's length (u16) and the name; per row `R`, the key's length (u32),
//! the key, the value's length (u32), the value — redb's own byte form of the table's key
//! and value types, so a snapshot is exactly the rows; at the end `E` and the number of
//! rows (u64). Tables come from the one list in `tables.rs` ([`tables::visit_all`]).

use std::io::{self, Read, Write};
use std::path::Path;

use redb::{Database, ReadTransaction, ReadableTable, TableDefinition, TableHandle};

use std::collections::HashMap;

use super::tables::{self, BODIES, BODY_REFS, Holds, META, QUEUE, QUEUE_DUE, TableVisitor};
use super::{SCHEMA_VERSION, Store, StoreError};

const MAGIC: &[u8; 8] = b"RBSNAP1\n";
const MAX_NAME: usize = 64;
const MAX_KEY: u32 = 64 * 1024;
/// Larger than any stored message (`max_message_size` is at most 100 MB).
const MAX_VALUE: u32 = 256 << 20;

/// Failures of a snapshot or of its import.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the store snapshot is damaged: {0}")]
    Damaged(String),
    #[error(
        "the backup holds a store of schema version {found}, newer than this program \
         ({supported}): restore it with a newer Relaybox"
    )]
    TooNew { found: u64, supported: u64 },
    #[error("{0} exists already; a snapshot is only imported into a new file")]
    Exists(String),
}

/// What a snapshot held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotCounts {
    pub tables: u32,
    pub rows: u64,
}

impl Store {
    /// Write every table's rows (without the message tables unless `messages`) as one read
    /// transaction sees them. Holds that transaction (not a lock: the writer goes on)
    /// until the last row is written.
    pub fn export(
        &self,
        messages: bool,
        out: &mut dyn Write,
    ) -> Result<SnapshotCounts, SnapshotError> {
        self.view()?.export(messages, out)
    }

    /// The store as it is now, for an [`View::export`] later: every commit that returned
    /// before this call is in it, none that starts after.
    pub fn view(&self) -> Result<View, StoreError> {
        Ok(View(self.read()?))
    }
}

/// One read transaction of the store, kept for a snapshot ([`Store::view`]).
pub struct View(ReadTransaction);

impl View {
    /// [`Store::export`] of this view.
    pub fn export(
        self,
        messages: bool,
        out: &mut dyn Write,
    ) -> Result<SnapshotCounts, SnapshotError> {
        self.export_with(messages, None, out)
    }

    /// [`View::export`] with the messages but without the outbound queue, which stays
    /// behind (issue 17, `relaybox move`: the old machine goes on delivering what it had
    /// queued, so the new one must not send it a second time). The bodies only the queue
    /// used are left out too, and the reference counts of the others lowered by the
    /// queue's references, so the new store is as if the queue had been delivered.
    pub fn export_without_queue(
        self,
        out: &mut dyn Write,
    ) -> Result<SnapshotCounts, SnapshotError> {
        let mut refs: HashMap<u64, u32> = HashMap::new();
        let queue = self.0.open_table(QUEUE).map_err(StoreError::from)?;
        for row in queue.iter().map_err(StoreError::from)? {
            let (k, v) = row.map_err(StoreError::from)?;
            let (_, body) = super::queue::decode_queue(k.value(), v.value())?;
            *refs.entry(body).or_default() += 1;
        }
        drop(queue);
        self.export_with(true, Some(refs), out)
    }

    fn export_with(
        self,
        messages: bool,
        queue_refs: Option<HashMap<u64, u32>>,
        out: &mut dyn Write,
    ) -> Result<SnapshotCounts, SnapshotError> {
        let rx = self.0;
        out.write_all(MAGIC)?;
        out.write_all(&SCHEMA_VERSION.to_le_bytes())?;
        let mut export = Export {
            rx: &rx,
            out,
            messages,
            queue_refs,
            counts: SnapshotCounts::default(),
            err: None,
        };
        let visited = tables::visit_all(&mut export);
        if let Some(e) = export.err.take() {
            return Err(e);
        }
        visited?;
        let counts = export.counts;
        out.write_all(b"E")?;
        out.write_all(&counts.rows.to_le_bytes())?;
        out.flush()?;
        Ok(counts)
    }
}

struct Export<'a> {
    rx: &'a ReadTransaction,
    out: &'a mut dyn Write,
    messages: bool,
    /// The queue stays behind: body id → the queue's references to it.
    queue_refs: Option<HashMap<u64, u32>>,
    counts: SnapshotCounts,
    /// An I/O error met inside the visitor (its own error type is the store's).
    err: Option<SnapshotError>,
}

impl Export<'_> {
    /// A row as it goes out: as stored, changed, or left out (`None`) when the queue stays
    /// behind. Keys of `bodies` and `body_refs` are u64 and the counts u32, little-endian
    /// in redb's byte form.
    fn row<'v>(
        &self,
        table: &str,
        key: &[u8],
        value: &'v [u8],
    ) -> Result<Option<std::borrow::Cow<'v, [u8]>>, StoreError> {
        use std::borrow::Cow;
        let Some(queue_refs) = &self.queue_refs else {
            return Ok(Some(Cow::Borrowed(value)));
        };
        if table == QUEUE.name() || table == QUEUE_DUE.name() {
            return Ok(None);
        }
        if table != BODIES.name() && table != BODY_REFS.name() {
            return Ok(Some(Cow::Borrowed(value)));
        }
        let id = u64::from_le_bytes(key.try_into().map_err(|_| bad_row(table))?);
        let Some(queued) = queue_refs.get(&id).copied() else {
            return Ok(Some(Cow::Borrowed(value)));
        };
        let refs = if table == BODY_REFS.name() {
            u32::from_le_bytes(value.try_into().map_err(|_| bad_row(table))?)
        } else {
            self.rx
                .open_table(BODY_REFS)?
                .get(id)?
                .map_or(0, |r| r.value())
        };
        let left = refs.saturating_sub(queued);
        Ok(match (left, table == BODY_REFS.name()) {
            (0, _) => None,
            (_, true) => Some(Cow::Owned(left.to_le_bytes().to_vec())),
            (_, false) => Some(Cow::Borrowed(value)),
        })
    }
}

fn bad_row(table: &str) -> StoreError {
    StoreError::Db(format!("a row of {table} has the wrong size"))
}

impl TableVisitor for Export<'_> {
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &mut self,
        def: TableDefinition<'static, K, V>,
        holds: Holds,
    ) -> Result<(), StoreError> {
        if holds == Holds::Messages && !self.messages || self.err.is_some() {
            return Ok(());
        }
        let t = self.rx.open_table(def)?;
        let mut write = || -> Result<u64, SnapshotError> {
            let name = def.name().as_bytes();
            self.out.write_all(b"T")?;
            self.out.write_all(&(name.len() as u16).to_le_bytes())?;
            self.out.write_all(name)?;
            let mut rows = 0;
            for row in t.iter().map_err(StoreError::from)? {
                let (k, v) = row.map_err(StoreError::from)?;
                let (k, v) = (k.value(), v.value());
                let (key, value) = (K::as_bytes(&k), V::as_bytes(&v));
                let key = key.as_ref();
                let Some(value) = self.row(def.name(), key, value.as_ref())? else {
                    continue;
                };
                let value = value.as_ref();
                self.out.write_all(b"R")?;
                self.out.write_all(&(key.len() as u32).to_le_bytes())?;
                self.out.write_all(key)?;
                self.out.write_all(&(value.len() as u32).to_le_bytes())?;
                self.out.write_all(value)?;
                rows += 1;
            }
            Ok(rows)
        };
        match write() {
            Ok(rows) => {
                self.counts.tables += 1;
                self.counts.rows += rows;
            }
            Err(e) => self.err = Some(e),
        }
        Ok(())
    }
}

/// Build the store file `path` (which must not exist) from a snapshot, in one durable
/// commit. Open it with [`Store::open`] afterwards: that migrates an older schema.
pub fn import(path: &Path, input: &mut dyn Read) -> Result<SnapshotCounts, SnapshotError> {
    if path.exists() {
        return Err(SnapshotError::Exists(path.display().to_string()));
    }
    let magic = read_array::<8>(input)
        .map_err(|_| SnapshotError::Damaged("not a store snapshot".into()))?;
    if &magic != MAGIC {
        return Err(SnapshotError::Damaged("not a store snapshot".into()));
    }
    let version = u64::from_le_bytes(read_array(input)?);
    if version > SCHEMA_VERSION {
        return Err(SnapshotError::TooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    crate::private::file(path)?;
    let db = Database::create(path).map_err(StoreError::from)?;
    let tx = db.begin_write().map_err(StoreError::from)?;
    let mut counts = SnapshotCounts::default();
    let mut tag = read_array::<1>(input)?[0];
    loop {
        match tag {
            b'T' => {
                let len = u16::from_le_bytes(read_array(input)?) as usize;
                if len > MAX_NAME {
                    return Err(SnapshotError::Damaged(format!("table name of {len} bytes")));
                }
                let mut name = vec![0; len];
                fill(input, &mut name)?;
                let name = String::from_utf8(name)
                    .map_err(|_| SnapshotError::Damaged("table name not UTF-8".into()))?;
                let mut import = Import {
                    tx: &tx,
                    input: &mut *input,
                    name: &name,
                    found: false,
                    rows: 0,
                    next: 0,
                    err: None,
                };
                let visited = tables::visit_all(&mut import);
                if let Some(e) = import.err.take() {
                    return Err(e);
                }
                visited?;
                if !import.found {
                    return Err(SnapshotError::Damaged(format!("unknown table {name}")));
                }
                counts.tables += 1;
                counts.rows += import.rows;
                tag = import.next;
            }
            b'E' => {
                let rows = u64::from_le_bytes(read_array(input)?);
                if rows != counts.rows {
                    return Err(SnapshotError::Damaged(format!(
                        "{} rows where the end says {rows}",
                        counts.rows
                    )));
                }
                break;
            }
            other => {
                return Err(SnapshotError::Damaged(format!(
                    "unexpected record {other:#04x}"
                )));
            }
        }
    }
    {
        let meta = tx.open_table(META).map_err(StoreError::from)?;
        let stored = meta
            .get("schema_version")
            .map_err(StoreError::from)?
            .map(|v| v.value().to_vec());
        if stored.as_deref() != Some(version.to_le_bytes().as_slice()) {
            return Err(SnapshotError::Damaged(
                "the schema version rows disagree".into(),
            ));
        }
    }
    tx.commit().map_err(StoreError::from)?;
    Ok(counts)
}

struct Import<'a> {
    tx: &'a redb::WriteTransaction,
    input: &'a mut dyn Read,
    name: &'a str,
    found: bool,
    rows: u64,
    /// The record tag after this table's rows.
    next: u8,
    err: Option<SnapshotError>,
}

impl TableVisitor for Import<'_> {
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &mut self,
        def: TableDefinition<'static, K, V>,
        _: Holds,
    ) -> Result<(), StoreError> {
        if def.name() != self.name || self.found {
            return Ok(());
        }
        self.found = true;
        let mut t = self.tx.open_table(def)?;
        let mut read = || -> Result<(), SnapshotError> {
            loop {
                let tag = read_array::<1>(self.input)?[0];
                if tag != b'R' {
                    self.next = tag;
                    return Ok(());
                }
                let key = read_field(self.input, MAX_KEY)?;
                let value = read_field(self.input, MAX_VALUE)?;
                check_width::<K>(&key)?;
                check_width::<V>(&value)?;
                // redb's `from_bytes` may assume bytes it wrote itself (a `&str` is
                // unwrapped UTF-8): a damaged row must not take the process down.
                let inserted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    t.insert(K::from_bytes(&key), V::from_bytes(&value))
                        .map(|_| ())
                }));
                match inserted {
                    Ok(r) => r.map_err(StoreError::from)?,
                    Err(_) => {
                        return Err(SnapshotError::Damaged(format!(
                            "a row of {} cannot be read",
                            self.name
                        )));
                    }
                }
                self.rows += 1;
            }
        };
        if let Err(e) = read() {
            self.err = Some(e);
        }
        Ok(())
    }
}

fn check_width<T: redb::Value>(bytes: &[u8]) -> Result<(), SnapshotError> {
    match T::fixed_width() {
        Some(n) if n != bytes.len() => Err(SnapshotError::Damaged(format!(
            "a field of {} bytes where {n} belong",
            bytes.len()
        ))),
        _ => Ok(()),
    }
}

/// `read_exact`, where an early end means a damaged snapshot.
fn fill(input: &mut dyn Read, buf: &mut [u8]) -> Result<(), SnapshotError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => SnapshotError::Damaged("it ends too early".into()),
        _ => SnapshotError::Io(e),
    })
}

fn read_array<const N: usize>(input: &mut dyn Read) -> Result<[u8; N], SnapshotError> {
    let mut b = [0u8; N];
    fill(input, &mut b)?;
    Ok(b)
}

fn read_field(input: &mut dyn Read, max: u32) -> Result<Vec<u8>, SnapshotError> {
    let len = u32::from_le_bytes(read_array(input)?);
    if len > max {
        return Err(SnapshotError::Damaged(format!("a field of {len} bytes")));
    }
    let mut b = vec![0; len as usize];
    fill(input, &mut b)?;
    Ok(b)
}
