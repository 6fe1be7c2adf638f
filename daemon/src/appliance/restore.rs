//! The pages' side of backups (issue 17): the wizard's "Restore from a backup" in setup
//! mode — the uploaded file waiting for its passphrase, the restore carried out by this
//! daemon itself ([`crate::backup::restore_in_setup_mode`]), then the admin state reloaded
//! from the restored `admin.json` and the switch to the restored relay (the domain step's
//! path: [`Appliance::chosen_config`]) — and "Download a backup now" of the running relay
//! from its own store ([`crate::backup::make_from`]). Backups are heavy work (scrypt, the
//! whole store): they run on a blocking thread, one at a time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use age::secrecy::SecretString;
use relaybox_webui::{BackupFile, BackupInfo};

use super::Appliance;
use super::state::AdminState;
use crate::backup::{self, BackupError, Header, SnapshotSource};
use crate::config::Config;

/// Name prefix of an uploaded backup in the data directory.
const UPLOAD_PREFIX: &str = "restore-upload-";
/// Name prefix of a backup made for download (removed once the pages opened it).
const DOWNLOAD_PREFIX: &str = ".download-";
/// The largest backup the wizard takes, whatever the free space.
const MAX_UPLOAD: u64 = 64 << 30;
/// Below this there is no room for a restore at all.
const MIN_UPLOAD: u64 = 16 << 20;

/// The state of the pages' backups.
#[derive(Default)]
pub struct Backups {
    /// The uploaded backup waiting for its passphrase: its file and header.
    pending: Mutex<Option<(PathBuf, Header)>>,
    /// A restore or a backup runs; cleared by the blocking work itself when it ends.
    busy: Arc<AtomicBool>,
}

/// Clears the busy flag when dropped (the end of the blocking work, however it ends).
struct Busy(Arc<AtomicBool>);

impl Busy {
    fn take(flag: &Arc<AtomicBool>) -> Result<Busy, String> {
        if flag.swap(true, Ordering::AcqRel) {
            return Err("A backup or a restore is running already; try again in a minute.".into());
        }
        Ok(Busy(flag.clone()))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

fn info(h: &Header) -> BackupInfo {
    BackupInfo {
        domain: h.mail_domain.clone(),
        created: h.created,
        messages: h.messages,
        version: h.relay_version.clone(),
    }
}

fn now() -> u64 {
    crate::clock::Clock::unix_now(&crate::clock::SystemClock)
}

/// Free bytes for this process's user on the file system of `dir`.
fn free_space(dir: &Path) -> Option<u64> {
    nix::sys::statvfs::statvfs(dir)
        .ok()
        .map(|st| st.blocks_available().saturating_mul(st.fragment_size()))
}

/// Remove files in `dir` whose names start with `prefix`, except `keep`.
fn remove_stale(dir: &Path, prefix: &str, keep: Option<&Path>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if e.file_name().to_string_lossy().starts_with(prefix) && Some(path.as_path()) != keep {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A failed restore in plain words; every one of them changed nothing.
fn restore_error(e: &BackupError) -> String {
    match e {
        BackupError::WrongPassphrase => "Wrong passphrase: the backup cannot be opened with it. \
             Nothing was changed; type it again."
            .into(),
        BackupError::NotABackup => {
            "This file is not a Relaybox backup. Nothing was changed.".into()
        }
        BackupError::Damaged(why) => format!(
            "The backup is damaged or incomplete ({why}). Nothing was changed. Upload it \
             again, or another backup."
        ),
        other => format!("{other}. Nothing was changed."),
    }
}

/// Run `work` (a backup or restore future) to its end on a blocking thread of the
/// runtime, with `busy` held until then.
async fn blocking<T: Send + 'static>(
    busy: Busy,
    work: impl FnOnce(&tokio::runtime::Handle) -> T + Send + 'static,
) -> Result<T, String> {
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _busy = busy;
        work(&handle)
    })
    .await
    .map_err(|e| format!("it stopped unexpectedly ({e})"))
}

impl Appliance {
    /// The config and its file, in setup mode only.
    fn setup_config(&self) -> Result<(Config, PathBuf), String> {
        let config = self.config();
        if !config.setup {
            return Err(
                "This relay is already set up: a backup is restored before a name is chosen."
                    .into(),
            );
        }
        let path = self
            .config_path
            .clone()
            .ok_or("This relay runs without a config file (dev mode).")?;
        Ok((config, path))
    }

    pub(super) fn restore_upload_target(&self) -> Result<(PathBuf, u64), String> {
        let (config, _) = self.setup_config()?;
        if self.backups.busy.load(Ordering::Acquire) {
            return Err("A restore is running already.".into());
        }
        let data = &config.data_dir;
        let pending = self.backups.pending.lock().expect("backups lock").clone();
        // Uploads of an earlier run or abandoned halfway.
        remove_stale(data, UPLOAD_PREFIX, pending.as_ref().map(|p| p.0.as_path()));
        // The restore unpacks beside the upload: half the free space for each.
        let free = free_space(data).unwrap_or(0);
        let cap = (free / 2).min(MAX_UPLOAD);
        if cap < MIN_UPLOAD {
            return Err(format!(
                "There is too little free space on this box for a restore ({} MiB free).",
                free >> 20
            ));
        }
        let name = format!("{UPLOAD_PREFIX}{:016x}.backup", rand::random::<u64>());
        Ok((data.join(name), cap))
    }

    pub(super) fn restore_uploaded(&self, path: PathBuf) -> Result<BackupInfo, String> {
        let header = match backup::list(&path) {
            Ok(h) => h,
            Err(e) => return Err(restore_error(&e)),
        };
        if backup::newer(&header.relay_version, env!("CARGO_PKG_VERSION")) {
            return Err(format!(
                "This backup was made by Relaybox {}, newer than this box's {}: update the \
                 box first. Nothing was changed.",
                header.relay_version,
                env!("CARGO_PKG_VERSION")
            ));
        }
        let shown = info(&header);
        let old = self
            .backups
            .pending
            .lock()
            .expect("backups lock")
            .replace((path, header));
        if let Some((old, _)) = old {
            let _ = std::fs::remove_file(old);
        }
        Ok(shown)
    }

    pub(super) fn restore_pending(&self) -> Option<BackupInfo> {
        let pending = self.backups.pending.lock().expect("backups lock");
        pending.as_ref().map(|(_, h)| info(h))
    }

    pub(super) fn restore_cancel(&self) {
        if self.backups.busy.load(Ordering::Acquire) {
            return;
        }
        let old = self.backups.pending.lock().expect("backups lock").take();
        if let Some((old, _)) = old {
            let _ = std::fs::remove_file(old);
        }
    }

    /// The wizard's restore: the waiting upload into this setup-mode relay, then the
    /// restored admin state and config take over. Replaces what the box has (the admin
    /// password just set; a backup of it is kept in the data directory).
    pub(super) async fn restore_backup(&self, passphrase: String) -> Result<String, String> {
        let (config, config_path) = self.setup_config()?;
        let busy = Busy::take(&self.backups.busy)?;
        let Some((upload, _)) = self.backups.pending.lock().expect("backups lock").clone() else {
            return Err("Upload the backup file first.".into());
        };
        let passphrase = SecretString::from(passphrase);
        let (cfg, cfg_path, file) = (config.clone(), config_path.clone(), upload.clone());
        let restored = blocking(busy, move |rt| {
            rt.block_on(backup::restore_in_setup_mode(
                &cfg,
                &cfg_path,
                &file,
                &passphrase,
                true,
                now(),
            ))
        })
        .await?;
        let restored = match restored {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("restore from an uploaded backup failed: {e}");
                // Only another passphrase can help with the same file.
                if !matches!(e, BackupError::WrongPassphrase | BackupError::Io { .. }) {
                    self.restore_cancel();
                }
                return Err(restore_error(&e));
            }
        };
        self.restore_cancel();
        tracing::info!(
            "restored a backup of {} ({} accounts); starting it",
            restored.header.mail_domain,
            restored.accounts
        );
        self.take_over_restored(&config, &config_path)
    }

    /// After a restore: the admin state of the backup (the owner logs in with the old
    /// password; a backup without one keeps the password just set), and the relay of the
    /// restored config — started the way the domain step starts it.
    fn take_over_restored(&self, config: &Config, config_path: &Path) -> Result<String, String> {
        let data = &config.data_dir;
        let restored_admin = AdminState::load(data).map_err(|e| e.to_string())?;
        {
            let mut admin = self.admin.lock().expect("admin lock");
            if restored_admin.password_hash.is_some() {
                *admin = restored_admin;
            } else {
                admin.save(data).map_err(|e| e.to_string())?;
            }
        }
        let text = std::fs::read_to_string(config_path)
            .map_err(|e| format!("cannot read {}: {e}", config_path.display()))?;
        let loaded = Config::parse_for_serve(&text).map_err(|e| {
            format!(
                "the restored config {} is not valid ({e}); correct it and restart",
                config_path.display()
            )
        })?;
        self.refresh_led();
        if loaded.config.setup {
            // A backup made before a name was chosen: the wizard goes on from here.
            *self.config.write().expect("config lock") = loaded.config;
            return Ok(String::new());
        }
        let domain = loaded.config.mail_domain.clone();
        self.choose(loaded.config);
        Ok(domain)
    }

    /// "Download a backup now": a backup of the running relay from its own store, into a
    /// fresh file in the data directory (the pages send and remove it).
    pub(super) async fn backup_now(
        &self,
        passphrase: String,
        messages: bool,
    ) -> Result<BackupFile, String> {
        let relay = self
            .relay()
            .cloned()
            .ok_or("The relay does not run yet: finish the setup first.")?;
        let config_path = self
            .config_path
            .clone()
            .ok_or("This relay runs without a config file (dev mode).")?;
        let busy = Busy::take(&self.backups.busy)?;
        let data = relay.config.data_dir.clone();
        // A download whose page went away before it was sent.
        remove_stale(&data, DOWNLOAD_PREFIX, None);
        let now = now();
        let out = data.join(format!(
            "{DOWNLOAD_PREFIX}{:016x}.backup",
            rand::random::<u64>()
        ));
        let passphrase = SecretString::from(passphrase);
        let target = out.clone();
        let made = blocking(busy, move |rt| {
            let source = SnapshotSource::Store(&relay.store);
            rt.block_on(backup::make_from(
                &relay.config,
                &config_path,
                &target,
                &passphrase,
                messages,
                now,
                source,
            ))
        })
        .await?;
        let made = made.map_err(|e| e.to_string())?;
        let (y, m, d) = crate::clock::civil_from_days((now / 86_400) as i64);
        let domain = made.header.mail_domain.replace(['[', ']'], "");
        Ok(BackupFile {
            path: out,
            name: format!("relaybox-{domain}-{y:04}-{m:02}-{d:02}.backup"),
        })
    }
}
