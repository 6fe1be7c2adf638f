//! The appliance's side of over-the-air updates (issue 7): starts the update agent with the
//! relay's settings, answers the status page ("update now", "upload a bundle", the state
//! shown), and the recovery gesture — the button held at power-on boots the other slot if it
//! is marked good (BOOT-6).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use relaybox_webui::UpdateInfo;

use super::Appliance;
use super::hw::Button;
use crate::server::Relay;
use crate::update::agent::{self, AgentConfig, CommandRebooter, Rebooter};
use crate::update::{boot, bootcount};

/// How long the button must be held at start for the recovery (it was pressed before the
/// daemon started, so this is on top of the boot time).
pub const RECOVERY_HOLD: Duration = Duration::from_secs(3);
/// Name prefix of uploaded bundles in the update state directory.
const UPLOAD_PREFIX: &str = "upload-";

impl Appliance {
    /// Start the update agent for `relay` (OTA-3..6). Stale uploads of an earlier run are
    /// removed first.
    pub fn spawn_update_agent(self: &Arc<Self>, relay: Arc<Relay>) -> tokio::task::JoinHandle<()> {
        let roots = crate::tls::client_roots(&relay.config).unwrap_or_else(|e| {
            tracing::warn!("update: trust roots: {e}");
            rustls::RootCertStore::empty()
        });
        let cfg = AgentConfig::system(&relay.config, roots);
        remove_stale_uploads(&cfg.state_dir);
        let _ = self.update_agent.set(cfg.clone());
        tokio::spawn(agent::run(
            relay,
            Relay::update_handles,
            cfg,
            self.update.clone(),
        ))
    }

    /// The status page's "Version and updates".
    pub(super) fn update_info(&self) -> UpdateInfo {
        let s = self.update.snapshot();
        let available = self.update_agent.get().is_some_and(|c| c.boot.is_some());
        UpdateInfo {
            state: if self.update_agent.get().is_none() {
                "updates start once the relay runs".into()
            } else {
                s.state
            },
            last_error: s.last_error,
            last_check: s.last_check,
            busy: s.busy,
            available,
        }
    }

    /// The agent's settings once it can install here, or the reason why not.
    fn installable(&self) -> Result<&AgentConfig, String> {
        let cfg = self
            .update_agent
            .get()
            .ok_or("Updates start once the relay runs: finish the setup first.")?;
        if cfg.boot.is_none() {
            return Err(
                "This installation has no A/B boot slots (not a Relaybox image): \
                        update it like any other program."
                    .into(),
            );
        }
        if self.update.snapshot().busy {
            return Err("An update is already being downloaded or installed.".into());
        }
        Ok(cfg)
    }

    pub(super) fn request_update_now(&self) -> Result<(), String> {
        let cfg = self.installable()?;
        if cfg.update_url.trim().is_empty() {
            return Err(
                "No update server is configured (update_url in chatmail.ini); \
                        upload a bundle instead."
                    .into(),
            );
        }
        tracing::info!("update: \"update now\" from the status page");
        self.update.request_now();
        Ok(())
    }

    pub(super) fn update_upload_target(&self) -> Result<(PathBuf, u64), String> {
        let cfg = self.installable()?;
        std::fs::create_dir_all(&cfg.state_dir)
            .map_err(|e| format!("cannot create {}: {e}", cfg.state_dir.display()))?;
        let name = format!("{UPLOAD_PREFIX}{:016x}.tar", rand::random::<u64>());
        Ok((cfg.state_dir.join(name), cfg.max_bundle_size))
    }

    pub(super) fn install_uploaded_bundle(&self, path: PathBuf) -> Result<(), String> {
        let cfg = match self.installable() {
            Ok(c) => c.clone(),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        let status = self.update.clone();
        tracing::info!("update: a bundle was uploaded");
        tokio::spawn(async move {
            // Errors are recorded and shown on the status page by the agent (OTA-6).
            let _ = agent::install_uploaded(&cfg, &status, &path).await;
            let _ = tokio::fs::remove_file(&path).await;
        });
        Ok(())
    }
}

/// Uploads left by an earlier run (a restart in the middle of an upload).
fn remove_stale_uploads(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(UPLOAD_PREFIX) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// BOOT-6 recovery: the button held at power-on (still held for [`RECOVERY_HOLD`] when the
/// daemon starts) makes the other slot the default if it is marked good, and reboots.
/// Returns without doing anything otherwise.
pub async fn recover_if_held(button: &mut dyn Button, state_dir: &Path) {
    match super::button::held_at_start(button, RECOVERY_HOLD).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!("reset button: {e}");
            return;
        }
    }
    tracing::warn!("button held at power-on: recovery, switching to the other slot");
    let Some(boot) = boot::detect() else {
        tracing::warn!("recovery: no A/B boot slots on this machine");
        return;
    };
    match bootcount::switch_to_other(boot.as_ref(), state_dir) {
        Ok(slot) => {
            tracing::warn!(
                "recovery: slot {} is the default now; rebooting",
                slot.as_str()
            );
            let rebooter = CommandRebooter {
                program: PathBuf::from(agent::DEFAULT_REBOOT_HELPER),
            };
            if let Err(e) = rebooter.reboot(None) {
                tracing::error!("recovery: {e}");
            }
        }
        Err(e) => tracing::warn!("recovery: {e}"),
    }
}
