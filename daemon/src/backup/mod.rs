//! Backups of a relay (issue 17): one encrypted file with the config, the data directory's
//! own files (admin password hash, ACME account and certificates, TLS keys, appversions,
//! `nocreate`) and a snapshot of the store (accounts, device tokens, DKIM and TURN
//! secrets, and unless left out the mailboxes and the outbound queue). A running relay
//! gives its store snapshot through the control socket (no stop, no lock: one read
//! transaction); a stopped one is read directly. `format` owns the file's layout.
//!
//! A restore goes into a stopped relay: everything is decrypted and checked in a staging
//! directory first (a wrong passphrase, a damaged or newer backup changes nothing), and a
//! relay that already has accounts or an admin is only replaced when asked, after a
//! backup of it has been written beside it.

pub mod auto;
pub mod cli;
pub mod format;
pub mod usb;

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use age::secrecy::SecretString;

use crate::config::Config;
use crate::store::snapshot::{self, SnapshotCounts};
use crate::store::{STORE_FILE, Store};
pub use format::Header;

/// What a backup takes from the data directory besides the store (files or directories).
/// The rest is made again on the new machine (the zone file, the setup code) or belongs to
/// that machine (`update/`: its slots and boot state; the control socket).
pub const DATA_FILES: &[&str] = &["admin.json", "acme", "tls", "appversions.json", "nocreate"];

/// The config's name inside a backup.
const CONFIG_NAME: &str = "chatmail.ini";
/// Prefix of the data directory's files inside a backup.
const DATA_PREFIX: &str = "data/";
/// Where a restore unpacks before it changes anything.
const STAGING: &str = ".restore";
/// Where a restore moves what it replaces while it swaps.
const REPLACED: &str = ".replaced";

/// Failures, with what to do about them where there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {err}")]
    Io { path: String, err: io::Error },
    #[error("this is not a Relaybox backup")]
    NotABackup,
    #[error("the backup is in format {0}, newer than this program reads: use a newer Relaybox")]
    NewerFormat(u32),
    #[error(
        "the backup was made by Relaybox {made}, newer than this one ({this}): update this \
         relay first"
    )]
    NewerRelay { made: String, this: String },
    #[error("wrong passphrase: this backup cannot be opened with it")]
    WrongPassphrase,
    #[error("the backup is damaged or incomplete ({0}); nothing was changed")]
    Damaged(String),
    #[error("the relay is running ({0} mode): stop it before a restore")]
    Running(String),
    #[error(
        "this relay serves {current} and has {accounts} account(s); the backup is of \
         {backup}: restore it on a new relay, or reset this one first"
    )]
    OtherDomain {
        current: String,
        backup: String,
        accounts: u64,
    },
    #[error(
        "this relay already has {what}: restoring replaces it. Confirm (--yes); a backup \
         of what is replaced is written first"
    )]
    NeedsConfirmation { what: String },
    #[error("{0}")]
    Control(#[from] crate::control::client::CallError),
    #[error("{0}")]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error("the passphrase is empty")]
    EmptyPassphrase,
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> BackupError + '_ {
    move |err| BackupError::Io {
        path: path.display().to_string(),
        err,
    }
}

/// What [`make`] wrote.
#[derive(Debug, Clone)]
pub struct Made {
    pub header: Header,
    pub bytes: u64,
    pub files: usize,
    /// `None` for a relay that has no store yet.
    pub store: Option<SnapshotCounts>,
}

/// Where a backup's store snapshot comes from.
#[derive(Clone, Copy)]
pub enum SnapshotSource<'a> {
    /// The daemon through the control socket, or the store file when none answers (the
    /// command line).
    Control,
    /// A store this process holds open (the running daemon's own).
    Store(&'a Store),
    /// The store file, opened here; none when there is no file (the setup-mode daemon,
    /// which holds no store open and whose control socket has no store to give).
    File,
    /// Issue 17, `relaybox move`: the running daemon switches to moving to this address
    /// and gives the final snapshot ([`crate::control::client::move_snapshot`]).
    Move(&'a str),
}

/// Write a backup of the relay of `config` (its config file at `config_path`) to `out`,
/// atomically: a temporary file beside it, synced, then renamed. The command line's
/// entry: the snapshot comes through the control socket ([`SnapshotSource::Control`]).
pub async fn make(
    config: &Config,
    config_path: &Path,
    out: &Path,
    passphrase: &SecretString,
    messages: bool,
    now: u64,
) -> Result<Made, BackupError> {
    let source = SnapshotSource::Control;
    make_from(config, config_path, out, passphrase, messages, now, source).await
}

/// [`make`] with the snapshot from `source`.
pub async fn make_from(
    config: &Config,
    config_path: &Path,
    out: &Path,
    passphrase: &SecretString,
    messages: bool,
    now: u64,
    source: SnapshotSource<'_>,
) -> Result<Made, BackupError> {
    use age::secrecy::ExposeSecret;
    if passphrase.expose_secret().is_empty() {
        return Err(BackupError::EmptyPassphrase);
    }
    let header = Header {
        format: format::FORMAT,
        relay_version: env!("CARGO_PKG_VERSION").to_string(),
        mail_domain: if config.setup {
            String::new()
        } else {
            config.mail_domain.clone()
        },
        created: now,
        messages,
    };
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".into());
    let tmp = dir.join(format!(".{name}.partial"));
    let result = write_backup(
        config,
        config_path,
        &tmp,
        &header,
        passphrase,
        messages,
        source,
    )
    .await;
    let (files, store) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, out).map_err(io_err(out))?;
    crate::files::sync_dir(&dir).map_err(io_err(&dir))?;
    let bytes = std::fs::metadata(out).map_err(io_err(out))?.len();
    Ok(Made {
        header,
        bytes,
        files,
        store,
    })
}

async fn write_backup(
    config: &Config,
    config_path: &Path,
    tmp: &Path,
    header: &Header,
    passphrase: &SecretString,
    messages: bool,
    source: SnapshotSource<'_>,
) -> Result<(usize, Option<SnapshotCounts>), BackupError> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)
        .map_err(io_err(tmp))?;
    let mut file = BufWriter::new(file);
    format::write_header(&mut file, header).map_err(io_err(tmp))?;
    let age = format::encrypt(file, passphrase).map_err(io_err(tmp))?;
    let mut body = format::BodyWriter::start(age).map_err(io_err(tmp))?;
    let config_text = std::fs::read(config_path).map_err(io_err(config_path))?;
    body.file(CONFIG_NAME, 0o644, &config_text)
        .map_err(io_err(tmp))?;
    let mut files = 1;
    for name in DATA_FILES {
        files += add_data(&mut body, &config.data_dir, Path::new(name)).map_err(io_err(tmp))?;
    }
    body.snapshot_follows().map_err(io_err(tmp))?;
    let store = match source {
        SnapshotSource::Control => {
            crate::control::client::snapshot(config, messages, &mut body.0).await?
        }
        SnapshotSource::Store(store) => Some(store.export(messages, &mut body.0)?),
        SnapshotSource::Move(to) => {
            Some(crate::control::client::move_snapshot(config, to, &mut body.0).await?)
        }
        SnapshotSource::File => {
            let path = config.data_dir.join(STORE_FILE);
            if path.exists() {
                let store = Store::open_with_cache(&path, config.store_cache_size)
                    .map_err(|e| BackupError::Damaged(format!("the relay's own store: {e}")))?;
                let exported = store.export(messages, &mut body.0);
                store.close();
                Some(exported?)
            } else {
                None
            }
        }
    };
    if store.is_none() {
        // No store yet: an empty snapshot keeps the body's layout one.
        empty_snapshot(&mut body.0).map_err(io_err(tmp))?;
    }
    let age = body.finish().map_err(io_err(tmp))?;
    let file = age.finish().map_err(io_err(tmp))?;
    let file = file.into_inner().map_err(|e| io_err(tmp)(e.into_error()))?;
    file.sync_all().map_err(io_err(tmp))?;
    Ok((files, store))
}

/// Add `rel` (a file or a directory, recursively) under the data directory; how many
/// files went in. A missing entry adds nothing.
fn add_data<W: Write>(
    body: &mut format::BodyWriter<W>,
    data_dir: &Path,
    rel: &Path,
) -> io::Result<usize> {
    let path = data_dir.join(rel);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    if meta.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(&path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        entries.sort();
        let mut n = 0;
        for entry in entries {
            n += add_data(body, data_dir, &rel.join(entry))?;
        }
        Ok(n)
    } else if meta.is_file() {
        let bytes = std::fs::read(&path)?;
        let name = format!("{DATA_PREFIX}{}", rel.display());
        body.file(&name, meta.permissions().mode() & 0o777, &bytes)?;
        Ok(1)
    } else {
        Ok(0)
    }
}

/// The snapshot of a store without tables (a relay that never ran).
fn empty_snapshot(out: &mut dyn Write) -> io::Result<()> {
    let dir = tempfile_dir()?;
    let store = Store::open(&dir.join("empty.redb")).map_err(io::Error::other)?;
    store.export(false, out).map_err(io::Error::other)?;
    store.close();
    std::fs::remove_dir_all(&dir)
}

fn tempfile_dir() -> io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("relaybox-backup-{}", std::process::id()));
    crate::private::dir(&dir)?;
    Ok(dir)
}

/// The header of the backup at `path`.
pub fn list(path: &Path) -> Result<Header, BackupError> {
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    format::read_header(&mut BufReader::new(file))
}

/// What [`restore`] did.
#[derive(Debug, Clone)]
pub struct Restored {
    pub header: Header,
    pub files: usize,
    pub accounts: u64,
    /// The backup of what was replaced, if anything was.
    pub replaced_backup: Option<PathBuf>,
}

/// Who carries out a restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// `relaybox restore`: no daemon may answer on the control socket.
    Command,
    /// The daemon of this data directory in setup mode (the wizard's "Restore from a
    /// backup"): its own socket answers `setup`; a relay answering is still refused.
    SetupDaemon,
}

/// Restore the backup at `path` into the stopped relay of `config`. `confirmed`: replace
/// an existing relay (its own backup is written first, with the same passphrase).
pub async fn restore(
    config: &Config,
    config_path: &Path,
    path: &Path,
    passphrase: &SecretString,
    confirmed: bool,
    now: u64,
) -> Result<Restored, BackupError> {
    let caller = Caller::Command;
    restore_as(
        config,
        config_path,
        path,
        passphrase,
        confirmed,
        now,
        caller,
    )
    .await
}

/// [`restore`] carried out by the setup-mode daemon of `config` itself (no store open,
/// the relay not started): refused when `config` is not in setup mode or a relay answers
/// on the control socket. The caller then loads the restored config and admin state.
pub async fn restore_in_setup_mode(
    config: &Config,
    config_path: &Path,
    path: &Path,
    passphrase: &SecretString,
    confirmed: bool,
    now: u64,
) -> Result<Restored, BackupError> {
    let caller = Caller::SetupDaemon;
    restore_as(
        config,
        config_path,
        path,
        passphrase,
        confirmed,
        now,
        caller,
    )
    .await
}

async fn restore_as(
    config: &Config,
    config_path: &Path,
    path: &Path,
    passphrase: &SecretString,
    confirmed: bool,
    now: u64,
    caller: Caller,
) -> Result<Restored, BackupError> {
    if caller == Caller::SetupDaemon && !config.setup {
        return Err(BackupError::Running("relay".into()));
    }
    match crate::control::client::daemon_mode(&config.data_dir).await? {
        Some(mode) if caller == Caller::SetupDaemon && mode == "setup" => {}
        Some(mode) => return Err(BackupError::Running(mode)),
        None => {}
    }
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    let mut input = BufReader::new(file);
    let header = format::read_header(&mut input)?;
    if newer(&header.relay_version, env!("CARGO_PKG_VERSION")) {
        return Err(BackupError::NewerRelay {
            made: header.relay_version.clone(),
            this: env!("CARGO_PKG_VERSION").to_string(),
        });
    }
    crate::private::dir(&config.data_dir).map_err(io_err(&config.data_dir))?;
    let staging = config.data_dir.join(STAGING);
    remove_all(&staging).map_err(io_err(&staging))?;
    crate::private::dir(&staging).map_err(io_err(&staging))?;
    let unpacked = unpack(input, passphrase, &staging);
    let (files, accounts) = match unpacked {
        Ok(r) => r,
        Err(e) => {
            let _ = remove_all(&staging);
            return Err(e);
        }
    };
    let existing = match existing_relay(config) {
        Ok(e) => e,
        Err(e) => {
            let _ = remove_all(&staging);
            return Err(e);
        }
    };
    if let Some((what, count)) = &existing {
        let current = if config.setup {
            ""
        } else {
            &config.mail_domain
        };
        let refusal = if *count > 0 && !current.is_empty() && current != header.mail_domain {
            Some(BackupError::OtherDomain {
                current: current.to_string(),
                backup: header.mail_domain.clone(),
                accounts: *count,
            })
        } else if !confirmed {
            Some(BackupError::NeedsConfirmation { what: what.clone() })
        } else {
            None
        };
        if let Some(e) = refusal {
            let _ = remove_all(&staging);
            return Err(e);
        }
    }
    let replaced_backup = if existing.is_some() {
        let out = config.data_dir.join(format!("replaced-{now}.backup"));
        // The setup-mode daemon's socket has no store to give: read the file.
        let source = match caller {
            Caller::Command => SnapshotSource::Control,
            Caller::SetupDaemon => SnapshotSource::File,
        };
        let made = make_from(config, config_path, &out, passphrase, true, now, source).await;
        if let Err(e) = made {
            let _ = remove_all(&staging);
            return Err(e);
        }
        Some(out)
    } else {
        None
    };
    swap_in(config, config_path, &staging).map_err(io_err(&config.data_dir))?;
    Ok(Restored {
        header,
        files,
        accounts,
        replaced_backup,
    })
}

/// Decrypt the body into `staging`: the files, and the store built from the snapshot and
/// opened once (which migrates an older schema and proves it whole). Returns the number
/// of files and of accounts.
fn unpack(
    input: BufReader<std::fs::File>,
    passphrase: &SecretString,
    staging: &Path,
) -> Result<(usize, u64), BackupError> {
    let mut body = BufReader::new(format::decrypt(input, passphrase)?);
    format::start_body(&mut body)?;
    let mut files = 0;
    let mut store = None;
    loop {
        match format::next_record(&mut body)? {
            format::Record::File { name, mode, bytes } => {
                let target = staged_path(staging, &name)?;
                if let Some(parent) = target.parent() {
                    crate::private::dir(parent).map_err(io_err(parent))?;
                }
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode & 0o644)
                    .open(&target)
                    .and_then(|mut f| f.write_all(&bytes).and_then(|_| f.sync_all()))
                    .map_err(io_err(&target))?;
                files += 1;
            }
            format::Record::Snapshot => {
                let target = staging.join(STORE_FILE);
                snapshot::import(&target, &mut body).map_err(|e| match e {
                    snapshot::SnapshotError::Io(e) => BackupError::Damaged(e.to_string()),
                    other => BackupError::Snapshot(other),
                })?;
                store = Some(target);
            }
            format::Record::End => break,
        }
    }
    // Nothing may follow the end, and age checks its last chunk only when read to the end.
    let mut rest = [0u8; 1];
    match body.read(&mut rest) {
        Ok(0) => {}
        Ok(_) => return Err(BackupError::Damaged("data after the end".into())),
        Err(e) => return Err(BackupError::Damaged(e.to_string())),
    }
    let Some(store) = store else {
        return Err(BackupError::Damaged("no store inside".into()));
    };
    if !staging.join(CONFIG_NAME).exists() {
        return Err(BackupError::Damaged("no config inside".into()));
    }
    let accounts = Store::open(&store)
        .and_then(|s| {
            let n = s.account_count();
            s.close();
            n
        })
        .map_err(|e| BackupError::Damaged(format!("the store inside does not open: {e}")))?;
    Ok((files, accounts))
}

/// Where a file of the backup goes in the staging directory: the config, or one of
/// [`DATA_FILES`] (or a file under one of them); anything else is refused.
fn staged_path(staging: &Path, name: &str) -> Result<PathBuf, BackupError> {
    if name == CONFIG_NAME {
        return Ok(staging.join(CONFIG_NAME));
    }
    let bad = || BackupError::Damaged(format!("an unexpected file {name:?}"));
    let rel = name.strip_prefix(DATA_PREFIX).ok_or_else(bad)?;
    let rel = Path::new(rel);
    let normal = rel
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned());
    if !normal || !first.is_some_and(|f| DATA_FILES.contains(&f.as_str())) {
        return Err(bad());
    }
    Ok(staging.join("data").join(rel))
}

/// What a restore would replace: a description and the number of accounts, or `None`
/// for a relay with neither accounts nor an admin.
fn existing_relay(config: &Config) -> Result<Option<(String, u64)>, BackupError> {
    let store_path = config.data_dir.join(STORE_FILE);
    let accounts = if store_path.exists() {
        Store::open_with_cache(&store_path, config.store_cache_size)
            .and_then(|s| {
                let n = s.account_count();
                s.close();
                n
            })
            .map_err(|e| BackupError::Damaged(format!("the relay's own store: {e}")))?
    } else {
        0
    };
    let admin = config.data_dir.join("admin.json").exists();
    Ok(match (accounts, admin) {
        (0, false) => None,
        (0, true) => Some(("an admin password".to_string(), 0)),
        (n, _) => Some((format!("{n} account(s)"), n)),
    })
}

/// Move the staged relay into place: what it replaces goes aside first and is removed at
/// the end; the store's write-ahead log goes (it belongs to the replaced store).
fn swap_in(config: &Config, config_path: &Path, staging: &Path) -> io::Result<()> {
    let data = &config.data_dir;
    let aside = data.join(REPLACED);
    remove_all(&aside)?;
    crate::private::dir(&aside)?;
    let mut names: Vec<&str> = DATA_FILES.to_vec();
    names.push(STORE_FILE);
    let wal = format!("{STORE_FILE}.wal");
    names.push(&wal);
    for name in &names {
        let from = data.join(name);
        if std::fs::symlink_metadata(&from).is_ok() {
            std::fs::rename(&from, aside.join(name))?;
        }
    }
    for name in DATA_FILES {
        let from = staging.join("data").join(name);
        if std::fs::symlink_metadata(&from).is_ok() {
            std::fs::rename(&from, data.join(name))?;
        }
    }
    std::fs::rename(staging.join(STORE_FILE), data.join(STORE_FILE))?;
    // Run as root for a relay that runs as its own user: what came in belongs to that user,
    // as the data directory does.
    let owner = std::fs::metadata(data)?;
    let (uid, gid) = (
        std::os::unix::fs::MetadataExt::uid(&owner),
        std::os::unix::fs::MetadataExt::gid(&owner),
    );
    for name in DATA_FILES.iter().copied().chain([STORE_FILE]) {
        own(&data.join(name), uid, gid)?;
    }
    crate::files::sync_dir(data)?;
    // The config comes back as it was, but on this machine's data directory, and not
    // moving: the final backup of `relaybox move` is taken as the old machine starts to
    // forward here.
    let text = std::fs::read_to_string(staging.join(CONFIG_NAME))?;
    let text = crate::config::edit_param(
        &text,
        "data_dir",
        Some(&config.data_dir.display().to_string()),
    );
    let text = crate::config::edit_param(&text, "moved_to", None);
    crate::files::write_atomic(config_path, text.as_bytes(), 0o644)?;
    remove_all(&aside)?;
    remove_all(staging)?;
    Ok(())
}

/// Give `path` (recursively) to `uid:gid`, when it exists and is not theirs already.
fn own(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if meta.uid() != uid || meta.gid() != gid {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            own(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

fn remove_all(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `a` is a newer version than `b` (dotted numbers; a suffix after `-` is ignored).
pub(crate) fn newer(a: &str, b: &str) -> bool {
    let parts = |v: &str| -> Vec<u64> {
        v.split('-')
            .next()
            .unwrap_or("")
            .split('.')
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    parts(a) > parts(b)
}

#[cfg(test)]
mod tests;
