//! The pages' side of automatic backups (issue 17 item 2): the "Backups" section's
//! figures, the passphrase file, the settings written into chatmail.ini (in effect at
//! once), the task's start, and the line in the services list when the last run failed.

use std::sync::Arc;

use relaybox_webui::{
    BackupResult, BackupSettings, BackupsInfo, CheckStatus, InputError, ServiceHealth,
};

use super::{Appliance, configfile, state};
use crate::backup::auto::{self, Job};
use crate::config::{BackupTarget, Config};
use crate::server::Relay;

/// Shortest passphrase accepted on the page.
pub const MIN_PASSPHRASE: usize = 10;

impl Appliance {
    /// The automatic backups' state.
    pub fn auto_backup(&self) -> Arc<auto::AutoBackup> {
        self.backups.clone()
    }

    /// Start the automatic backups of `relay` (the LED follows their results). Without a
    /// config file (dev mode) they stay off, saying why.
    pub fn spawn_auto_backup(self: &Arc<Self>, relay: Arc<Relay>) -> tokio::task::JoinHandle<()> {
        let Some(config_path) = self.config_path.clone() else {
            self.backups
                .set_unavailable("automatic backups need a config file (not in dev mode)");
            return tokio::spawn(async {});
        };
        let job = Job {
            config: relay.config.clone(),
            config_path,
            store: relay.store.clone(),
            clock: relay.clock.clone(),
        };
        let me = self.clone();
        tokio::spawn(auto::run(self.backups.clone(), job, move || {
            me.refresh_led()
        }))
    }

    /// The services list's line when the last automatic backup failed.
    pub(super) fn backup_health(&self) -> Option<ServiceHealth> {
        self.backups.failed().map(|e| ServiceHealth {
            name: "Automatic backup".into(),
            status: CheckStatus::Error,
            detail: format!("the last one failed: {e}"),
        })
    }

    pub(super) fn backups_info(&self) -> BackupsInfo {
        let r = self.backups.report();
        let s = &r.settings;
        let (target, dir) = match &s.target {
            BackupTarget::Off => ("off", String::new()),
            BackupTarget::Usb => ("usb", String::new()),
            BackupTarget::Dir(d) => ("dir", d.display().to_string()),
        };
        BackupsInfo {
            available: self.config_path.is_some(),
            target: target.into(),
            dir,
            every: duration_text(s.every.as_secs()),
            keep: s.keep,
            messages: s.messages,
            passphrase_set: auto::read_passphrase(&s.passphrase_file).is_ok(),
            off_reason: r.off,
            last: r.last.map(|o| match o.result {
                Ok(w) => BackupResult {
                    at: o.at,
                    file: w.file,
                    bytes: w.bytes,
                    error: String::new(),
                },
                Err(e) => BackupResult {
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

    pub(super) fn set_backup_passphrase_file(&self, passphrase: &str) -> Result<(), InputError> {
        let err = |message: String| InputError {
            field: "passphrase",
            message,
        };
        if passphrase.chars().count() < MIN_PASSPHRASE {
            return Err(err(format!(
                "The passphrase is too short: use at least {MIN_PASSPHRASE} characters (a few \
                 words). Keep it somewhere safe: without it no backup can be restored."
            )));
        }
        if passphrase.contains(['\n', '\r']) || passphrase.trim() != passphrase {
            return Err(err(
                "The passphrase cannot start or end with spaces or hold line breaks.".into(),
            ));
        }
        let path = self.backups.settings().passphrase_file;
        auto::write_passphrase(&path, passphrase)
            .map_err(|e| err(format!("The passphrase could not be saved: {e}")))?;
        tracing::info!("automatic backups: passphrase set");
        Ok(())
    }

    pub(super) fn save_backup_settings(&self, form: &BackupSettings) -> Result<(), InputError> {
        let Some(path) = &self.config_path else {
            return Err(InputError {
                field: "target",
                message: "This relay runs without a config file (dev mode).".into(),
            });
        };
        let dir_value = match form.target.as_str() {
            "off" => String::new(),
            "usb" => "usb".into(),
            "dir" => {
                let d = form.dir.trim();
                if !d.starts_with('/') {
                    return Err(InputError {
                        field: "dir",
                        message: "Give the directory as a full path, like /srv/backups.".into(),
                    });
                }
                d.to_string()
            }
            _ => {
                return Err(InputError {
                    field: "target",
                    message: "Choose where the backups go.".into(),
                });
            }
        };
        let text = std::fs::read_to_string(path).map_err(|e| InputError {
            field: "target",
            message: format!("Cannot read {}: {e}", path.display()),
        })?;
        let mut next = text;
        for (key, value) in [
            ("backup_dir", dir_value.as_str()),
            ("backup_every", form.every.trim()),
            ("backup_keep", form.keep.trim()),
            (
                "backup_messages",
                if form.messages { "true" } else { "false" },
            ),
        ] {
            next = configfile::set_param(&next, key, value);
        }
        // Applied completely or not at all: validate first, then replace atomically.
        let loaded = Config::parse_for_serve(&next).map_err(|e| InputError {
            field: match &e {
                crate::config::ConfigError::Value { key, .. } if key == "backup_every" => "every",
                crate::config::ConfigError::Value { key, .. } if key == "backup_keep" => "keep",
                crate::config::ConfigError::Value { key, .. } if key == "backup_dir" => "dir",
                _ => "target",
            },
            message: format!("Not saved: {e}"),
        })?;
        state::write_atomically(path, next.as_bytes(), 0o644).map_err(|e| InputError {
            field: "target",
            message: format!("The config could not be written: {e}"),
        })?;
        let backup = loaded.config.backup.clone();
        self.config.write().expect("config lock").backup = backup.clone();
        self.backups.set_settings(backup);
        tracing::info!("automatic backups: settings changed");
        self.refresh_led();
        Ok(())
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
