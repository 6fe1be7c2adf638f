//! The backup file: a header anyone can read, then the body encrypted with a passphrase in
//! the age format (age-encryption.org/v1, scrypt recipient; the `age` crate — no crypto of
//! our own). The age stream authenticates every 64 KiB chunk and marks the last one, so a
//! changed or cut-short file fails to decrypt instead of restoring something else.
//!
//! ```text
//! relaybox-backup 1\n                      line 1: what this is, format version
//! {"format":1,"relay_version":…}\n         line 2: the Header as JSON (≤ 4 KiB)
//! age-encryption.org/v1 …                 the age file; its plaintext is the body:
//!   RBBODY1\n
//!   F  u16 name-length, name, u32 mode, u64 length, bytes     a file
//!   S  the store snapshot (store::snapshot's stream, which ends itself)
//!   Z                                                          the end
//! ```

use std::io::{self, BufRead, Read, Write};

use age::secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::BackupError;

/// First line of every backup.
const MAGIC_LINE: &str = "relaybox-backup";
/// The format this program writes (and the newest it reads).
pub const FORMAT: u32 = 1;
const MAX_HEADER: u64 = 4096;
const BODY_MAGIC: &[u8; 8] = b"RBBODY1\n";
/// A file inside a backup (the config, certificates, keys) is small.
const MAX_FILE: u64 = 16 << 20;
const MAX_NAME: usize = 255;
/// scrypt cost: 2^18 (256 MiB, about a second on a desktop, a few on a Raspberry Pi 3; fits
/// a 1 GB board). Decryption accepts up to 2^20 (1 GiB), for backups made elsewhere.
const WORK_FACTOR: u8 = 18;
const MAX_WORK_FACTOR: u8 = 20;

/// What a backup is, readable without the passphrase (`relaybox backup --list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: u32,
    /// Version of the Relaybox that made it.
    pub relay_version: String,
    pub mail_domain: String,
    /// When it was made, Unix seconds.
    pub created: u64,
    /// Whether the mailboxes and the outbound queue are inside.
    pub messages: bool,
}

pub fn write_header(out: &mut dyn Write, header: &Header) -> io::Result<()> {
    let json = serde_json::to_string(header).map_err(io::Error::other)?;
    write!(out, "{MAGIC_LINE} {}\n{json}\n", header.format)
}

/// The header, leaving `input` at the start of the age file.
pub fn read_header(input: &mut dyn BufRead) -> Result<Header, BackupError> {
    let not_backup = || BackupError::NotABackup;
    let mut first = String::new();
    input
        .take(64)
        .read_line(&mut first)
        .map_err(|_| not_backup())?;
    let version = first
        .trim_end()
        .strip_prefix(MAGIC_LINE)
        .and_then(|v| v.trim().parse::<u32>().ok())
        .ok_or_else(not_backup)?;
    if version > FORMAT {
        return Err(BackupError::NewerFormat(version));
    }
    let mut second = String::new();
    input
        .take(MAX_HEADER)
        .read_line(&mut second)
        .map_err(|_| not_backup())?;
    serde_json::from_str(second.trim_end()).map_err(|_| not_backup())
}

/// The age writer for the body, encrypted to `passphrase`.
pub fn encrypt<W: Write>(
    out: W,
    passphrase: &SecretString,
) -> io::Result<age::stream::StreamWriter<W>> {
    let mut recipient = age::scrypt::Recipient::new(passphrase.clone());
    recipient.set_work_factor(WORK_FACTOR);
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .map_err(io::Error::other)?;
    encryptor.wrap_output(out)
}

/// The plaintext body of the age file `input` (just after the header).
pub fn decrypt<R: Read>(input: R, passphrase: &SecretString) -> Result<impl Read, BackupError> {
    let decryptor = age::Decryptor::new(input).map_err(|e| BackupError::Damaged(e.to_string()))?;
    if !decryptor.is_scrypt() {
        return Err(BackupError::Damaged(
            "not encrypted with a passphrase".into(),
        ));
    }
    let mut identity = age::scrypt::Identity::new(passphrase.clone());
    identity.set_max_work_factor(MAX_WORK_FACTOR);
    decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::DecryptionFailed | age::DecryptError::NoMatchingKeys => {
                BackupError::WrongPassphrase
            }
            other => BackupError::Damaged(other.to_string()),
        })
}

/// Writes the body's records.
pub struct BodyWriter<W: Write>(pub W);

impl<W: Write> BodyWriter<W> {
    pub fn start(mut out: W) -> io::Result<Self> {
        out.write_all(BODY_MAGIC)?;
        Ok(BodyWriter(out))
    }

    pub fn file(&mut self, name: &str, mode: u32, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(b"F")?;
        self.0.write_all(&(name.len() as u16).to_le_bytes())?;
        self.0.write_all(name.as_bytes())?;
        self.0.write_all(&mode.to_le_bytes())?;
        self.0.write_all(&(bytes.len() as u64).to_le_bytes())?;
        self.0.write_all(bytes)
    }

    /// The snapshot's bytes follow (written by the caller into [`BodyWriter::0`]).
    pub fn snapshot_follows(&mut self) -> io::Result<()> {
        self.0.write_all(b"S")
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.0.write_all(b"Z")?;
        self.0.flush()?;
        Ok(self.0)
    }
}

/// One record of the body.
pub enum Record {
    File {
        name: String,
        mode: u32,
        bytes: Vec<u8>,
    },
    /// The store snapshot: read it from the reader now (it ends itself).
    Snapshot,
    End,
}

/// Check the body's start.
pub fn start_body(input: &mut dyn Read) -> Result<(), BackupError> {
    let mut magic = [0u8; 8];
    fill(input, &mut magic)?;
    if &magic != BODY_MAGIC {
        return Err(BackupError::Damaged(
            "the body is not a Relaybox backup body".into(),
        ));
    }
    Ok(())
}

/// The next record's head (a file's bytes included).
pub fn next_record(input: &mut dyn Read) -> Result<Record, BackupError> {
    let mut tag = [0u8; 1];
    fill(input, &mut tag)?;
    match tag[0] {
        b'F' => {
            let mut len = [0u8; 2];
            fill(input, &mut len)?;
            let len = u16::from_le_bytes(len) as usize;
            if len > MAX_NAME {
                return Err(BackupError::Damaged(format!("a file name of {len} bytes")));
            }
            let mut name = vec![0; len];
            fill(input, &mut name)?;
            let name = String::from_utf8(name)
                .map_err(|_| BackupError::Damaged("a file name is not UTF-8".into()))?;
            let mut mode = [0u8; 4];
            fill(input, &mut mode)?;
            let mut size = [0u8; 8];
            fill(input, &mut size)?;
            let size = u64::from_le_bytes(size);
            if size > MAX_FILE {
                return Err(BackupError::Damaged(format!("{name} of {size} bytes")));
            }
            let mut bytes = vec![0; size as usize];
            fill(input, &mut bytes)?;
            Ok(Record::File {
                name,
                mode: u32::from_le_bytes(mode),
                bytes,
            })
        }
        b'S' => Ok(Record::Snapshot),
        b'Z' => Ok(Record::End),
        other => Err(BackupError::Damaged(format!(
            "unexpected record {other:#04x}"
        ))),
    }
}

/// `read_exact`; an early end is a damaged (cut short) backup, and age's own failures —
/// a changed chunk, a missing last chunk — say the same.
fn fill(input: &mut dyn Read, buf: &mut [u8]) -> Result<(), BackupError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => BackupError::Damaged("it ends too early".into()),
        _ => BackupError::Damaged(e.to_string()),
    })
}
