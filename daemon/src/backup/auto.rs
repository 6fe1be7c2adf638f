//! Automatic backups (issue 17 item 2): a task of the daemon that writes a backup every
//! `backup_every` (aligned: daily at 00:17 UTC) into `backup_dir` — a directory, or a USB
//! drive mounted only while it writes ([`super::usb`]) — and keeps the newest
//! `backup_keep` of the files it made (`relaybox-<domain>-<YYYYMMDD-HHMMSS>.backup`;
//! nothing else in the target is touched). The snapshot comes from the relay's open store
//! ([`super::SnapshotSource::Store`]); the rest is [`super::make_from`], the command
//! line's path. The passphrase is the first line of `backup_passphrase_file` (the status
//! page writes it, mode 0600): without it nothing is made and the page says why.
//!
//! [`AutoBackup`] holds the settings (changed by the status page without a restart), the
//! last result and the next run, for the page, the LED and the services list.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use age::secrecy::SecretString;
use tokio::sync::{Notify, watch};

use crate::clock::Clock;
use crate::config::{BackupConfig, BackupTarget, Config};
use crate::store::Store;

/// Where in its interval a run happens: 00:17 UTC for daily backups (the expiry runs at
/// 00:02).
pub const RUN_OFFSET: u64 = 17 * 60;
/// The directory on a USB drive that holds the backups.
pub const USB_DIR: &str = "relaybox-backups";
/// How often the task looks at the clock and at "Back up now" while it waits (a clock
/// that jumps, a suspended machine, a wake-up it missed).
const POLL: Duration = Duration::from_secs(15);

/// The first run strictly after `now` for backups every `every` seconds: the instants
/// `RUN_OFFSET` (modulo `every`) past a multiple of `every` since the epoch.
pub fn next_run(now: u64, every: u64) -> u64 {
    let every = every.max(1);
    let offset = RUN_OFFSET % every;
    let base = now.saturating_sub(offset) / every * every + offset;
    if base > now { base } else { base + every }
}

/// A run that was missed (the box was off or the relay stopped at its time) is made up
/// this long after the start, once the relay has settled.
pub const CATCH_UP_AFTER: u64 = 10 * 60;
/// The file in the data directory that holds when the last automatic backup was written
/// (Unix seconds), so that a missed run is noticed after a restart.
pub const LAST_FILE: &str = "backup-last";

/// When the first run after a start is due: the next aligned run, or — when a backup was
/// made before (`last`) and the latest aligned run since was missed — [`CATCH_UP_AFTER`]
/// from `now` (never later than the next aligned run).
pub fn first_run(now: u64, every: u64, last: Option<u64>) -> u64 {
    let next = next_run(now, every);
    let latest = next.saturating_sub(every.max(1));
    match last {
        Some(last) if last < latest => (now + CATCH_UP_AFTER).min(next),
        _ => next,
    }
}

/// When the last automatic backup of the relay with data in `data_dir` was written.
pub fn read_last(data_dir: &Path) -> Option<u64> {
    std::fs::read_to_string(data_dir.join(LAST_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The domain as it goes into file names (anything but letters, digits, `.`, `-`, `_`
/// becomes `_`).
fn name_domain(domain: &str) -> String {
    domain
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The name of the backup made at `now`: `relaybox-<domain>-<YYYYMMDD-HHMMSS>.backup`.
pub fn file_name(domain: &str, now: u64) -> String {
    let (y, m, d) = crate::clock::civil_from_days((now / 86_400) as i64);
    let s = now % 86_400;
    format!(
        "relaybox-{}-{y:04}{m:02}{d:02}-{:02}{:02}{:02}.backup",
        name_domain(domain),
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// The time stamp of one of our own file names (`YYYYMMDD-HHMMSS`), `None` for any
/// other name.
fn own_stamp<'a>(name: &'a str, domain: &str) -> Option<&'a str> {
    let prefix = format!("relaybox-{}-", name_domain(domain));
    let stamp = name.strip_prefix(&prefix)?.strip_suffix(".backup")?;
    let b = stamp.as_bytes();
    let ok = b.len() == 15
        && b[8] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 8 || c.is_ascii_digit());
    ok.then_some(stamp)
}

/// Which of `names` to remove so that the newest `keep` of our own backups stay; other
/// files are never named.
pub fn to_remove(names: &[String], domain: &str, keep: usize) -> Vec<String> {
    let mut own: Vec<(&str, &String)> = names
        .iter()
        .filter_map(|n| own_stamp(n, domain).map(|s| (s, n)))
        .collect();
    own.sort();
    let drop = own.len().saturating_sub(keep);
    own[..drop].iter().map(|(_, n)| (*n).clone()).collect()
}

/// The passphrase from the first line of `path`; `Err` says in plain words why there is
/// none (automatic backups are then off).
pub fn read_passphrase(path: &Path) -> Result<SecretString, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let line = text.lines().next().unwrap_or("");
            if line.is_empty() {
                Err(format!(
                    "the passphrase file {} is empty: set a passphrase on the status page",
                    path.display()
                ))
            } else {
                Ok(SecretString::from(line.to_string()))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "no passphrase is set: set one on the status page (or write it into {})",
            path.display()
        )),
        Err(e) => Err(format!(
            "the passphrase file {} cannot be read: {e}",
            path.display()
        )),
    }
}

/// Write the passphrase file (mode 0600, atomically).
pub fn write_passphrase(path: &Path, passphrase: &str) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        crate::private::dir(parent)?;
    }
    crate::files::write_atomic(path, format!("{passphrase}\n").as_bytes(), 0o600)
}

/// A backup that was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Where it is (on a USB drive: the path inside the drive, `relaybox-backups/…`).
    pub file: String,
    pub bytes: u64,
    /// Older backups removed to keep `backup_keep`.
    pub removed: usize,
}

/// The result of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Unix seconds of the run.
    pub at: u64,
    /// The failure in plain words.
    pub result: Result<Written, String>,
}

/// What the status page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub settings: BackupConfig,
    /// Why no automatic backups are made (off, no passphrase, no config file); `None`
    /// when they are.
    pub off: Option<String>,
    pub last: Option<Outcome>,
    /// Unix seconds of the next run, when on.
    pub next: Option<u64>,
    pub running: bool,
}

/// Finds the USB partition to write to (a device path), or says why there is none.
pub type UsbFinder = Box<dyn Fn() -> Result<PathBuf, String> + Send + Sync>;

/// The automatic backups' settings and state, shared by the task and the pages.
pub struct AutoBackup {
    settings: watch::Sender<BackupConfig>,
    state: Mutex<State>,
    now: Notify,
    usb: UsbFinder,
}

#[derive(Default)]
struct State {
    last: Option<Outcome>,
    next: Option<u64>,
    running: bool,
    /// "Back up now" was asked and not yet taken by the task (the wake-up alone could be
    /// missed; the task also looks here every [`POLL`]).
    asked: bool,
    /// Set when the task cannot run at all (dev mode: no config file).
    unavailable: Option<String>,
}

impl AutoBackup {
    /// Settings from the config; USB drives found in `/sys` ([`super::usb::find`]).
    pub fn new(settings: BackupConfig) -> Arc<AutoBackup> {
        Self::with_usb(
            settings,
            Box::new(|| super::usb::find(Path::new("/sys"), Path::new("/dev"))),
        )
    }

    /// As [`AutoBackup::new`], with the USB drive found by `usb` (tests: a loop device).
    pub fn with_usb(settings: BackupConfig, usb: UsbFinder) -> Arc<AutoBackup> {
        Arc::new(AutoBackup {
            settings: watch::Sender::new(settings),
            state: Mutex::new(State::default()),
            now: Notify::new(),
            usb,
        })
    }

    pub fn settings(&self) -> BackupConfig {
        self.settings.borrow().clone()
    }

    /// New settings (the status page, after chatmail.ini was written): the task
    /// reschedules at once.
    pub fn set_settings(&self, settings: BackupConfig) {
        self.settings.send_replace(settings);
    }

    /// The task cannot run (the reason is shown instead of the schedule).
    pub fn set_unavailable(&self, reason: &str) {
        self.lock().unavailable = Some(reason.to_string());
    }

    /// Make a backup now (the status page's button), whatever the schedule.
    pub fn run_now(&self) {
        self.lock().asked = true;
        self.now.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why no automatic backups are made, if so.
    fn off_reason(&self, settings: &BackupConfig) -> Option<String> {
        if let Some(r) = &self.lock().unavailable {
            return Some(r.clone());
        }
        if settings.target == BackupTarget::Off {
            return Some("automatic backups are off: choose where they go".into());
        }
        read_passphrase(&settings.passphrase_file).err()
    }

    pub fn report(&self) -> Report {
        let settings = self.settings();
        let off = self.off_reason(&settings);
        let s = self.lock();
        Report {
            next: if off.is_none() { s.next } else { None },
            off,
            settings,
            last: s.last.clone(),
            running: s.running,
        }
    }

    /// The last run failed while backups are on (the LED's degraded pattern, a line in
    /// the services); backups switched off or without a passphrase are not a failure
    /// (the page says why they are off).
    pub fn failed(&self) -> Option<String> {
        if self.off_reason(&self.settings()).is_some() {
            return None;
        }
        let s = self.lock();
        match &s.last {
            Some(Outcome { result: Err(e), .. }) => Some(e.clone()),
            _ => None,
        }
    }
}

impl AutoBackup {
    /// The status page's figures.
    pub fn info(&self) -> relaybox_webui::BackupsInfo {
        let r = self.report();
        let s = &r.settings;
        let (target, dir) = match &s.target {
            BackupTarget::Off => ("off", String::new()),
            BackupTarget::Usb => ("usb", String::new()),
            BackupTarget::Dir(d) => ("dir", d.display().to_string()),
        };
        relaybox_webui::BackupsInfo {
            available: self.lock().unavailable.is_none(),
            target: target.into(),
            dir,
            every: duration_text(s.every.as_secs()),
            keep: s.keep,
            messages: s.messages,
            passphrase_set: read_passphrase(&s.passphrase_file).is_ok(),
            off_reason: r.off,
            last: r.last.map(|o| match o.result {
                Ok(w) => relaybox_webui::BackupResult {
                    at: o.at,
                    file: w.file,
                    bytes: w.bytes,
                    error: String::new(),
                },
                Err(e) => relaybox_webui::BackupResult {
                    at: o.at,
                    file: String::new(),
                    bytes: 0,
                    error: e,
                },
            }),
            next: r.next,
            running: r.running,
        }
    }

    /// Write the passphrase file.
    pub fn set_passphrase(&self, passphrase: &str) -> std::io::Result<()> {
        write_passphrase(&self.settings().passphrase_file, passphrase)
    }
}

/// An interval as chatmail.ini writes it: `1d`, `12h`, `30m`, `90s`.
pub fn duration_text(secs: u64) -> String {
    match secs {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Start the automatic backups of `relay` with the settings of its config (the chatmail.ini
/// at `config_path` goes into each backup; without one, in dev mode, they stay off and
/// say why); `on_result` is called after each run (the appliance's LED follows).
pub fn start(
    relay: &crate::server::Relay,
    config_path: Option<PathBuf>,
    on_result: impl Fn() + Send + 'static,
) -> (Arc<AutoBackup>, tokio::task::JoinHandle<()>) {
    let auto = AutoBackup::new(relay.config.backup.clone());
    let Some(config_path) = config_path else {
        auto.set_unavailable("automatic backups need a config file (not in dev mode)");
        return (auto, tokio::spawn(async {}));
    };
    let job = Job {
        config: relay.config.clone(),
        config_path,
        store: relay.store.clone(),
        clock: relay.clock.clone(),
    };
    let task = tokio::spawn(run(auto.clone(), job, on_result));
    (auto, task)
}

/// What a run needs of the relay.
#[derive(Clone)]
pub struct Job {
    /// The relay's config (its mail domain and data directory).
    pub config: Config,
    /// The chatmail.ini file that goes into the backup.
    pub config_path: PathBuf,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
}

/// Back up on schedule (and when asked) for as long as the relay runs; `on_result` is
/// called after each run (the LED follows).
pub async fn run(auto: Arc<AutoBackup>, job: Job, on_result: impl Fn() + Send) {
    run_polling(auto, job, on_result, POLL).await
}

async fn run_polling(auto: Arc<AutoBackup>, job: Job, on_result: impl Fn() + Send, poll: Duration) {
    let mut changes = auto.settings.subscribe();
    let mut settings = auto.settings();
    let last = read_last(&job.config.data_dir);
    let mut due = first_run(job.clock.unix_now(), settings.every.as_secs(), last);
    loop {
        auto.lock().next = Some(due);
        let now = job.clock.unix_now();
        let asked = if std::mem::take(&mut auto.lock().asked) {
            true
        } else if now >= due {
            false
        } else {
            let wait = Duration::from_secs(due - now).min(poll);
            tokio::select! {
                _ = tokio::time::sleep(wait) => continue,
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    settings = changes.borrow_and_update().clone();
                    due = next_run(job.clock.unix_now(), settings.every.as_secs());
                    continue;
                }
                _ = auto.now.notified() => {
                    // Taken at the top already (the wake-up came late): nothing new.
                    if !std::mem::take(&mut auto.lock().asked) {
                        continue;
                    }
                    true
                }
            }
        };
        let now = job.clock.unix_now();
        // Settings saved just before "Back up now": the wake-up may have won the race with
        // the change (select! picks either), and the run must use the new ones.
        if changes.has_changed().unwrap_or(false) {
            settings = changes.borrow_and_update().clone();
            due = next_run(now, settings.every.as_secs());
        }
        if asked || auto.off_reason(&settings).is_none() {
            auto.lock().running = true;
            let outcome = once(&auto, &job, &settings, now).await;
            match &outcome.result {
                Ok(w) => {
                    tracing::info!(
                        "automatic backup written: {} ({} bytes, {} older removed)",
                        w.file,
                        w.bytes,
                        w.removed
                    );
                    let path = job.config.data_dir.join(LAST_FILE);
                    if let Err(e) =
                        crate::files::write_atomic(&path, format!("{now}\n").as_bytes(), 0o600)
                    {
                        tracing::warn!("cannot write {}: {e}", path.display());
                    }
                }
                Err(e) => tracing::error!("automatic backup failed: {e}"),
            }
            {
                let mut s = auto.lock();
                s.running = false;
                s.last = Some(outcome);
            }
            on_result();
        }
        if !asked {
            due = next_run(now, settings.every.as_secs());
        }
    }
}

/// One backup into the target of `settings`, then the retention; the outcome in plain
/// words.
pub async fn once(auto: &AutoBackup, job: &Job, settings: &BackupConfig, now: u64) -> Outcome {
    let result = match &settings.target {
        BackupTarget::Off => Err("automatic backups are off: choose where they go".into()),
        _ => match read_passphrase(&settings.passphrase_file) {
            Err(e) => Err(e),
            Ok(passphrase) => {
                let target = settings.target.clone();
                let usb = match target {
                    BackupTarget::Usb => Some((auto.usb)()),
                    _ => None,
                };
                let job = job.clone();
                let settings = settings.clone();
                let handle = tokio::runtime::Handle::current();
                // The snapshot, the encryption and the writes block: off the async workers.
                tokio::task::spawn_blocking(move || {
                    write_to_target(&handle, &job, &settings, &passphrase, &target, usb, now)
                })
                .await
                .unwrap_or_else(|e| Err(format!("the backup task failed: {e}")))
            }
        },
    };
    Outcome { at: now, result }
}

/// On a blocking thread: the backup into a directory, or onto the USB drive mounted
/// for it.
fn write_to_target(
    handle: &tokio::runtime::Handle,
    job: &Job,
    settings: &BackupConfig,
    passphrase: &SecretString,
    target: &BackupTarget,
    usb: Option<Result<PathBuf, String>>,
    now: u64,
) -> Result<Written, String> {
    match (target, usb) {
        (BackupTarget::Dir(dir), _) => handle.block_on(write_into(
            job,
            settings,
            passphrase,
            dir,
            now,
            dir.display().to_string(),
        )),
        (BackupTarget::Usb, Some(device)) => {
            let device = device?;
            let mount = job.config.data_dir.join(".usb-backup");
            super::usb::with_mounted(&device, &mount, |root| {
                handle.block_on(write_into(
                    job,
                    settings,
                    passphrase,
                    &root.join(USB_DIR),
                    now,
                    format!("the USB drive ({}): {USB_DIR}", device.display()),
                ))
            })?
        }
        _ => Err("automatic backups are off: choose where they go".into()),
    }
}

/// Write the backup into `dir` (made when missing), then remove the oldest of our own
/// beyond `keep`. `shown`: the directory as people read it.
async fn write_into(
    job: &Job,
    settings: &BackupConfig,
    passphrase: &SecretString,
    dir: &Path,
    now: u64,
    shown: String,
) -> Result<Written, String> {
    // Made private when missing; an existing directory is left as the operator made it.
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot make the directory {shown}: {}", plain(&e)))?;
    }
    let domain = &job.config.mail_domain;
    let name = file_name(domain, now);
    let out = dir.join(&name);
    let made = super::make_from(
        &job.config,
        &job.config_path,
        &out,
        passphrase,
        settings.messages,
        now,
        super::SnapshotSource::Store(&job.store),
    )
    .await
    .map_err(|e| match e {
        super::BackupError::Io { err, .. } => {
            format!("cannot write into {shown}: {}", plain(&err))
        }
        other => other.to_string(),
    })?;
    let names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list {shown}: {}", plain(&e)))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut removed = 0;
    for old in to_remove(&names, domain, settings.keep as usize) {
        match std::fs::remove_file(dir.join(&old)) {
            Ok(()) => removed += 1,
            Err(e) => tracing::warn!("cannot remove the old backup {old}: {e}"),
        }
    }
    if removed > 0 {
        let _ = crate::files::sync_dir(dir);
    }
    Ok(Written {
        file: format!("{shown}/{name}"),
        bytes: made.bytes,
        removed,
    })
}

/// An I/O error in plain words.
fn plain(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::NotFound => "it does not exist".into(),
        std::io::ErrorKind::StorageFull => "the disk is full".into(),
        std::io::ErrorKind::ReadOnlyFilesystem => "the disk is read-only".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests;
