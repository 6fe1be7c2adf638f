//! The pages' side of automatic backups (issue 17 item 2): the "Backups" page's figures,
//! the passphrase, the settings written into chatmail.ini (in effect at once), and the
//! line in the services list when the last run failed. The task and its state are
//! `crate::backup::auto`; the appliance starts it when the relay runs.

use std::path::PathBuf;
use std::sync::Arc;

use relaybox_webui::{BackupSettings, BackupsInfo, CheckStatus, InputError, ServiceHealth};

use super::{Appliance, configfile, state};
use crate::config::Config;

/// Shortest passphrase accepted on the page.
pub const MIN_PASSPHRASE: usize = 10;

impl Appliance {
    /// The chatmail.ini in use (`None` in dev mode).
    pub fn config_path(&self) -> Option<PathBuf> {
        self.config_path.clone()
    }

    /// Start the automatic backups of the running relay (once); the LED follows their
    /// results.
    pub fn start_auto_backups(
        self: &Arc<Self>,
        relay: &crate::server::Relay,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        let (auto, task) =
            crate::backup::auto::start(relay, self.config_path(), move || me.refresh_led());
        let _ = self.auto_backups.set(auto);
        task
    }

    /// The services list's line when the last automatic backup failed.
    pub(super) fn backup_health(&self) -> Option<ServiceHealth> {
        self.auto_backups
            .get()
            .and_then(|b| b.failed())
            .map(|e| ServiceHealth {
                name: "Automatic backup".into(),
                status: CheckStatus::Error,
                detail: format!("the last one failed: {e}"),
            })
    }

    pub(super) fn backups_info(&self) -> BackupsInfo {
        match self.auto_backups.get() {
            Some(b) => b.info(),
            None => BackupsInfo::default(),
        }
    }

    pub(super) fn set_backup_passphrase_file(&self, passphrase: &str) -> Result<(), InputError> {
        let err = |message: String| InputError {
            field: "passphrase",
            message,
        };
        let Some(backups) = self.auto_backups.get() else {
            return Err(err("Automatic backups have not started yet.".into()));
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
        backups
            .set_passphrase(passphrase)
            .map_err(|e| err(format!("The passphrase could not be saved: {e}")))?;
        tracing::info!("automatic backups: passphrase set");
        self.refresh_led();
        Ok(())
    }

    pub(super) fn save_backup_settings(&self, form: &BackupSettings) -> Result<(), InputError> {
        let fail = |field: &'static str, message: String| InputError { field, message };
        let (Some(path), Some(backups)) = (&self.config_path, self.auto_backups.get()) else {
            return Err(fail(
                "target",
                "Automatic backups are not available here (dev mode, or the relay does not \
                 run yet)."
                    .into(),
            ));
        };
        let dir_value = match form.target.as_str() {
            "off" => String::new(),
            "usb" => "usb".into(),
            "dir" => {
                let d = form.dir.trim();
                if !d.starts_with('/') {
                    return Err(fail(
                        "dir",
                        "Give the directory as a full path, like /srv/backups.".into(),
                    ));
                }
                d.to_string()
            }
            _ => return Err(fail("target", "Choose where the backups go.".into())),
        };
        let mut next = std::fs::read_to_string(path)
            .map_err(|e| fail("target", format!("Cannot read {}: {e}", path.display())))?;
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
        let loaded = Config::parse_for_serve(&next).map_err(|e| {
            let field = match &e {
                crate::config::ConfigError::Value { key, .. } => match key.as_str() {
                    "backup_every" => "every",
                    "backup_keep" => "keep",
                    "backup_dir" => "dir",
                    _ => "target",
                },
                _ => "target",
            };
            fail(field, format!("Not saved: {e}"))
        })?;
        state::write_atomically(path, next.as_bytes(), 0o644)
            .map_err(|e| fail("target", format!("The config could not be written: {e}")))?;
        let backup = loaded.config.backup.clone();
        self.config.write().expect("config lock").backup = backup.clone();
        backups.set_settings(backup);
        tracing::info!("automatic backups: settings changed");
        self.refresh_led();
        Ok(())
    }
}
