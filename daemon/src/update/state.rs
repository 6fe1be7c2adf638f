//! Update state kept on /data (OTA-4 "pending", OTA-3 committed build, OTA-6 last outcome):
//! one small JSON file rewritten atomically, plus the logic that reads a boot's outcome from
//! it ([`State::reconcile`]) and the by-hand commands `relaybox update install` /
//! `relaybox update commit` (for the QEMU tests and recovery from a shell).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::{Deserialize, Serialize};

use super::boot::{self, BootControl};
use super::{Expect, PublicKey, Release, Slot, UpdateError};

/// Directory of the state file and of downloads (on /data through the daemon's data_dir).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/relaybox/update";
pub const STATE_FILE: &str = "state.json";

/// An installed update waiting for its trial boot and health check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub slot: Slot,
    pub build: u64,
    pub version: String,
    /// Unix seconds when the trial was armed.
    pub armed_at: u64,
}

/// The last finished update attempt, for the status page (OTA-6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub at: u64,
    pub build: Option<u64>,
    pub ok: bool,
    pub message: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Build of the last committed update (OTA-3; the release file's build counts too).
    #[serde(default)]
    pub committed_build: Option<u64>,
    #[serde(default)]
    pub pending: Option<Pending>,
    #[serde(default)]
    pub last: Option<Outcome>,
}

impl State {
    /// The state in `dir`; a missing file is the empty state.
    pub fn load(dir: &Path) -> Result<State, UpdateError> {
        let p = dir.join(STATE_FILE);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| UpdateError::Format(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(UpdateError::io("cannot read", &p, e)),
        }
    }

    pub fn store(&self, dir: &Path) -> Result<(), UpdateError> {
        std::fs::create_dir_all(dir).map_err(|e| UpdateError::io("cannot create", dir, e))?;
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| UpdateError::Format(format!("state: {e}")))?;
        boot::write_atomic(dir, STATE_FILE, &json)
    }

    /// What this boot means for a pending update. On a trial boot of the pending slot the
    /// health window decides (nothing changes here). Booted normally into another slot while
    /// an update was pending: the trial failed (hung, panicked, failed its health check, or
    /// the power went) and the firmware fell back (BOOT-4) — recorded as the last outcome.
    /// Returns true when the state changed.
    pub fn reconcile(&mut self, active: Slot, trial: bool, now: u64) -> bool {
        let Some(p) = self.pending.clone() else {
            return false;
        };
        if trial && active == p.slot {
            return false;
        }
        if !trial && active == p.slot {
            // Committed by someone else (by hand) without updating the state.
            self.committed_build = Some(p.build);
            self.pending = None;
            self.last = Some(Outcome {
                at: now,
                build: Some(p.build),
                ok: true,
                message: format!("version {} (build {}) is running", p.version, p.build),
            });
            return true;
        }
        self.pending = None;
        self.last = Some(Outcome {
            at: now,
            build: Some(p.build),
            ok: false,
            message: format!(
                "version {} (build {}) did not pass its trial boot; back on slot {}",
                p.version,
                p.build,
                active.as_str()
            ),
        });
        true
    }

    /// After a passed health check (OTA-5): commit the running trial slot.
    pub fn commit(
        &mut self,
        boot: &dyn BootControl,
        now: u64,
    ) -> Result<Option<Pending>, UpdateError> {
        if !boot.is_trial()? {
            return Ok(None);
        }
        let active = boot.active_slot()?;
        boot.commit(active)?;
        let p = self.pending.take();
        if let Some(p) = &p {
            self.committed_build = Some(self.committed_build.unwrap_or(0).max(p.build));
            self.last = Some(Outcome {
                at: now,
                build: Some(p.build),
                ok: true,
                message: format!("updated to version {} (build {})", p.version, p.build),
            });
        }
        Ok(p)
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn system_boot() -> Result<Box<dyn BootControl>, UpdateError> {
    boot::mount_autoboot(Path::new(boot::DEFAULT_AUTOBOOT_DIR))?;
    boot::detect().ok_or_else(|| {
        UpdateError::Boot("no A/B boot slots on this machine (not a Relaybox image)".into())
    })
}

/// `relaybox update install --pubkey KEY FILE`: verify against the running release and the
/// state (board, newer build), write the inactive slot, arm its trial, record it as pending.
/// Does not reboot; prints what to do.
pub fn install_command(pubkey: &Path, bundle: &Path, state_dir: Option<&Path>) -> ExitCode {
    let dir = state_dir.map_or_else(|| PathBuf::from(DEFAULT_STATE_DIR), Path::to_path_buf);
    let result = (|| -> Result<(Slot, super::Manifest, Option<&'static str>), UpdateError> {
        let boot = system_boot()?;
        let release = Release::load(Path::new(super::DEFAULT_RELEASE))?;
        let mut state = State::load(&dir)?;
        let expect: Expect = release.expect(state.committed_build);
        let pk = PublicKey::from_file(pubkey)?;
        let m = super::verify(&pk, bundle, &expect)?;
        // BOOT-6: the slot about to be written is no longer a fallback.
        super::bootcount::forget_good(&dir, boot.active_slot()?.other())?;
        let slot = super::install(bundle, &m, boot.as_ref())?;
        state.pending = Some(Pending {
            slot,
            build: m.build,
            version: m.version.clone(),
            armed_at: now(),
        });
        state.store(&dir)?;
        Ok((slot, m, boot.reboot_argument()))
    })();
    match result {
        Ok((slot, m, arg)) => {
            println!(
                "installed version {} build {} into slot {}; trial armed: reboot{}",
                m.version,
                m.build,
                slot.as_str(),
                arg.map(|a| format!(" with argument \"{a}\""))
                    .unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("relaybox update install: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `relaybox update commit`: on a trial boot, make the running slot the default (BOOT-3)
/// and record the update as done. Not on a trial boot: nothing to do (exit 0).
pub fn commit_command(state_dir: Option<&Path>) -> ExitCode {
    let dir = state_dir.map_or_else(|| PathBuf::from(DEFAULT_STATE_DIR), Path::to_path_buf);
    let result = (|| -> Result<Option<Slot>, UpdateError> {
        let boot = system_boot()?;
        let mut state = State::load(&dir)?;
        if !boot.is_trial()? {
            if state.reconcile(boot.active_slot()?, false, now()) {
                state.store(&dir)?;
            }
            return Ok(None);
        }
        state.commit(boot.as_ref(), now())?;
        state.store(&dir)?;
        Ok(Some(boot.active_slot()?))
    })();
    match result {
        Ok(Some(slot)) => {
            println!("committed slot {}", slot.as_str());
            ExitCode::SUCCESS
        }
        Ok(None) => {
            println!("not a trial boot: nothing to commit");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("relaybox update commit: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::boot::{Autoboot, fake_qemu};

    fn pending(slot: Slot) -> Pending {
        Pending {
            slot,
            build: 9,
            version: "2.0".into(),
            armed_at: 1,
        }
    }

    #[test]
    fn reconcile_table() {
        // (pending slot, active, trial) → (pending kept, outcome ok)
        let cases = [
            (Slot::B, Slot::B, true, true, None),
            (Slot::B, Slot::A, false, false, Some(false)),
            (Slot::B, Slot::B, false, false, Some(true)),
            (Slot::A, Slot::B, false, false, Some(false)),
        ];
        for (p, active, trial, kept, ok) in cases {
            let mut s = State {
                committed_build: Some(5),
                pending: Some(pending(p)),
                last: None,
            };
            let changed = s.reconcile(active, trial, 100);
            assert_eq!(s.pending.is_some(), kept, "{p:?} {active:?} {trial}");
            assert_eq!(changed, !kept);
            assert_eq!(s.last.as_ref().map(|o| o.ok), ok);
            if ok == Some(false) {
                let msg = &s.last.as_ref().unwrap().message;
                assert!(msg.contains("did not pass its trial boot"), "{msg}");
                assert_eq!(s.committed_build, Some(5), "a failed trial commits nothing");
            }
        }
        let mut empty = State::default();
        assert!(!empty.reconcile(Slot::A, false, 1));
    }

    #[test]
    fn commit_on_trial_only_and_state_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let boot = fake_qemu(dir.path(), Slot::A, 4);
        let mut s = State {
            committed_build: Some(5),
            pending: Some(pending(Slot::B)),
            last: None,
        };
        // Not a trial: no commit.
        assert_eq!(s.commit(&boot, 7).unwrap(), None);
        assert!(s.pending.is_some());
        // Trial boot of B.
        std::fs::write(&boot.cmdline, "relaybox.root=root-b").unwrap();
        assert_eq!(s.commit(&boot, 7).unwrap(), Some(pending(Slot::B)));
        assert_eq!(s.committed_build, Some(9));
        assert!(s.last.as_ref().unwrap().ok);
        assert_eq!(Autoboot::load(&boot.autoboot_dir).unwrap().default, Slot::B);

        let sd = dir.path().join("state");
        assert_eq!(State::load(&sd).unwrap(), State::default());
        s.store(&sd).unwrap();
        assert_eq!(State::load(&sd).unwrap(), s);
    }
}
