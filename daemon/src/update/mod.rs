//! Over-the-air updates (issue 7, appliance.md §4–§5): signed A/B bundles.
//!
//! Owns the bundle format and its verification ([`bundle`], [`manifest`]: OTA-1..3), writing a
//! verified bundle into the inactive slot ([`install`]: OTA-4, OTA-7), the boot-slot control
//! backends ([`boot`]: BOOT-1..3, BOOT-7), the boot counter and good-slot marks with the
//! button recovery ([`bootcount`]: BOOT-6), the resumable size-capped HTTPS download
//! ([`download`]: OTA-4), the pending / committed state on /data ([`state`]), the
//! trial-boot health check ([`health`]: OTA-5), the background update agent and the status
//! it reports ([`agent`]: OTA-3..6) and the `relaybox update verify` command
//! ([`verify_command`]).
//!
//! Bundle = an uncompressed ustar archive: `manifest.json`, `manifest.json.minisig` (minisign
//! signature of the manifest), then the images named by the manifest. Built by `image/bundle`.
//! The public key is baked into the root at [`DEFAULT_PUBKEY`]; the board name and build number
//! of the running image at [`DEFAULT_RELEASE`].

pub mod agent;
pub mod boot;
pub mod bootcount;
pub mod bundle;
pub mod download;
pub mod health;
pub mod install;
pub mod manifest;
pub mod state;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::{Deserialize, Serialize};

pub use boot::{BootControl, PiBoot, QemuBoot, SlotPartitions};
pub use bundle::{PublicKey, verify};
pub use download::{Downloaded, Downloader, download};
pub use install::install;
pub use manifest::{Expect, ImageEntry, ImageKind, Manifest};
pub use state::{State, commit_command, install_command};

/// Public key baked into the root filesystem by image/build (OTA-2).
pub const DEFAULT_PUBKEY: &str = "/etc/relaybox/update.pub";
/// Release facts of the running image, written by image/build.
pub const DEFAULT_RELEASE: &str = "/etc/relaybox/release.json";
/// Environment override of [`DEFAULT_RELEASE`] for `relaybox update verify` (tests, hosts).
pub const RELEASE_ENV: &str = "RELAYBOX_RELEASE";

/// One of the two A/B slots (a boot plus a root partition).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// Partition number of the slot's boot partition (appliance.md §2: boot-a = 2, boot-b = 3).
    pub fn boot_partition(self) -> u32 {
        match self {
            Slot::A => 2,
            Slot::B => 3,
        }
    }

    pub fn from_boot_partition(n: u32) -> Option<Slot> {
        match n {
            2 => Some(Slot::A),
            3 => Some(Slot::B),
            _ => None,
        }
    }
}

/// Every way an update can fail; the message is what the status page and the CLI show
/// (OTA-6: the reason, plainly).
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad public key: {0}")]
    PublicKey(String),
    #[error("bad signature: {0}")]
    BadSignature(String),
    #[error("not a bundle: {0}")]
    Format(String),
    #[error("truncated bundle: {0}")]
    Truncated(String),
    #[error("bad manifest: {0}")]
    Manifest(String),
    #[error("not for this board (expected {expected}, bundle is for {found})")]
    WrongBoard { expected: String, found: String },
    #[error("older build {build} <= {committed} (installed); a downgrade is not an update")]
    Rollback { build: u64, committed: u64 },
    #[error("image {image}: size {found} in the bundle, the manifest says {expected}")]
    SizeMismatch {
        image: String,
        expected: u64,
        found: u64,
    },
    #[error("image {0}: hash mismatch")]
    HashMismatch(String),
    #[error("image {0}: missing from the bundle")]
    MissingImage(String),
    #[error("unexpected file {0:?} in the bundle")]
    UnexpectedFile(String),
    #[error("image {image} ({size} bytes) does not fit {} ({capacity} bytes)", partition.display())]
    TooLarge {
        image: String,
        size: u64,
        partition: PathBuf,
        capacity: u64,
    },
    #[error("image {image}: {} reads back differently after writing", partition.display())]
    ReadBack { image: String, partition: PathBuf },
    #[error("download failed: {0}")]
    Download(String),
    #[error("boot control: {0}")]
    Boot(String),
    #[error("refused: {0}")]
    Refused(String),
}

impl UpdateError {
    pub(crate) fn io(what: &'static str, path: &Path, source: std::io::Error) -> UpdateError {
        UpdateError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Facts about the running image (`/etc/relaybox/release.json`, written by image/build).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub compatible: String,
    pub version: String,
    pub build: u64,
}

impl Release {
    pub fn load(path: &Path) -> Result<Release, UpdateError> {
        let bytes = std::fs::read(path).map_err(|e| UpdateError::io("cannot read", path, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| UpdateError::Format(format!("{}: {e}", path.display())))
    }

    /// What a bundle must satisfy on this system: same board, newer build (OTA-2, OTA-3).
    /// `committed_build` (recorded on /data at the last commit) wins when it is higher.
    pub fn expect(&self, committed_build: Option<u64>) -> Expect {
        Expect {
            compatible: Some(self.compatible.clone()),
            min_build: Some(committed_build.map_or(self.build, |c| c.max(self.build))),
        }
    }
}

/// `relaybox update verify --pubkey PUBLIC_KEY FILE`: checks signature, manifest and image
/// hashes without installing. Board and build are checked against the release file
/// ([`DEFAULT_RELEASE`], or `$RELAYBOX_RELEASE`) when it exists; without one only the
/// bundle's own consistency is checked. Prints `ok: <compatible> version <v> build <n>`, or
/// the reason on stderr with exit status 1.
pub fn verify_command(pubkey: &Path, bundle: &Path) -> ExitCode {
    let release_path = std::env::var_os(RELEASE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RELEASE));
    let expect = if release_path.exists() {
        match Release::load(&release_path) {
            Ok(r) => r.expect(None),
            Err(e) => {
                eprintln!("relaybox update verify: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        Expect {
            compatible: None,
            min_build: None,
        }
    };
    verify_command_with(pubkey, bundle, &expect)
}

/// [`verify_command`] with explicit expectations.
pub fn verify_command_with(pubkey: &Path, bundle: &Path, expect: &Expect) -> ExitCode {
    let result = PublicKey::from_file(pubkey).and_then(|pk| verify(&pk, bundle, expect));
    match result {
        Ok(m) => {
            println!(
                "ok: {} version {} build {}",
                m.compatible, m.version, m.build
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("relaybox update verify: {}: {e}", bundle.display());
            ExitCode::FAILURE
        }
    }
}
