//! The update agent (issue 7 "on the device", OTA-3..6): the background task that checks
//! the update URL, downloads, verifies and installs a newer bundle inside the maintenance
//! window, reboots into its trial, and on the trial boot runs the health window that commits
//! the new slot or falls back. Owns the shared [`UpdateStatus`] the status page reads.
//!
//! At start ([`run`]):
//! 1. `State::reconcile` reads this boot's outcome: booted normally while an update was
//!    pending means the trial failed and the firmware fell back (BOOT-4); recorded and shown
//!    as the last error (OTA-6).
//! 2. On a trial boot: [`health::check`] up to `health_attempts` times (`update_health_attempts`,
//!    `update_health_retry` apart) within
//!    `health_window` (OTA-5, ≤ 5 min). Pass → `State::commit` (BOOT-3). Fail → the reason
//!    is recorded on /data and the system is rebooted plainly, which boots the old slot.
//!    On a normal boot the same check runs once in the background; passing it marks the
//!    slot good and resets the init's boot counter ([`super::bootcount`], BOOT-6).
//! 3. Otherwise, when `update_url` is set: every `check_interval` (and at once on
//!    [`UpdateStatus::request_now`]) fetch `latest.json` and decide ([`decide`]).
//!
//! The update URL serves a small JSON document (not the bundle itself, so a check costs a
//! few hundred bytes and the download can be size-capped before it starts):
//!
//! ```json
//! {"build": 43, "version": "1.3.0", "bundle_url": "relaybox-rpi4-43.tar", "size": 91234560}
//! ```
//!
//! `bundle_url` is absolute (`https://…`) or relative to the update URL's directory; `size`
//! is the bundle's exact size in bytes and caps the download (with `max_bundle_size`).
//! `build` only decides whether to download; the signed manifest's build is what counts
//! (OTA-3 is checked again by `verify`).
//!
//! What the system must provide (the daemon runs as user `relaybox`; the image's
//! `buildroot/rootfs-overlay/sbin/init` does):
//! - the `autoboot` FAT partition mounted read-write at `/run/autoboot`, writable by
//!   `relaybox`;
//! - write access for `relaybox` to the inactive slot's partitions (`boot-X`, `root-X`
//!   block devices). The installer refuses to write the running slot (OTA-7) and the init
//!   leaves the running slot's devices root-only besides;
//! - a way to reboot: [`CommandRebooter`] runs [`DEFAULT_REBOOT_HELPER`] (with the
//!   argument `0 tryboot` on the Pi, BOOT-1), which asks the init for an orderly reboot
//!   that ends in `relaybox system-reboot [ARG]` (reboot(2) RESTART2) as root;
//! - the QEMU backend reads `/proc/cmdline`, the Pi backend `/proc/device-tree` (readable).
//!
//! Reboot and partition writing stay behind [`BootControl`] and [`Rebooter`] so tests use
//! temp files and a fake.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::boot::BootControl;
use super::install::{Progress, install_with_progress};
use super::state::{Outcome, Pending, State};
use super::{Downloader, PublicKey, Release, UpdateError, bootcount, health};

/// The privileged reboot helper [`CommandRebooter`] runs by default.
pub const DEFAULT_REBOOT_HELPER: &str = "/usr/libexec/relaybox/reboot";
/// Default `update_check_interval` (issue 7).
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(6 * 3600);
/// OTA-5: the health window of a trial boot (`update_health_attempts` and
/// `update_health_retry` must fit it; the config checks that).
pub use crate::config::keys::HEALTH_WINDOW as DEFAULT_HEALTH_WINDOW;
/// Default `update_window` and the window's type belong to the config (foundation).
pub use crate::config::{DEFAULT_WINDOW, Window};
/// Largest `latest.json` accepted.
const MAX_LATEST: u64 = 64 * 1024;
/// Largest bundle ever downloaded, whatever `latest.json` says.
pub const DEFAULT_MAX_BUNDLE: u64 = 4 << 30;

/// Reboots the machine. `argument` is `reboot(2)` RESTART2's argument (`"0 tryboot"`).
pub trait Rebooter: Send + Sync {
    fn reboot(&self, argument: Option<&str>) -> Result<(), UpdateError>;
}

/// Runs `program [ARGUMENT]` and expects it not to come back with a failure.
pub struct CommandRebooter {
    pub program: PathBuf,
}

impl Rebooter for CommandRebooter {
    fn reboot(&self, argument: Option<&str>) -> Result<(), UpdateError> {
        let mut cmd = std::process::Command::new(&self.program);
        if let Some(a) = argument {
            cmd.arg(a);
        }
        match cmd.status() {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(UpdateError::Boot(format!(
                "{} failed ({s})",
                self.program.display()
            ))),
            Err(e) => Err(UpdateError::Boot(format!(
                "cannot run {}: {e}",
                self.program.display()
            ))),
        }
    }
}

/// Minute of the UTC day of a Unix time.
pub fn minute_of_day(unix: u64) -> u32 {
    u32::try_from(unix % 86_400 / 60).unwrap_or(0)
}

/// What to do with an offered build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No update URL: automatic updates are off.
    Disabled,
    /// The offer is not newer than what is installed (OTA-3).
    UpToDate,
    /// Newer, but outside the maintenance window: wait this many minutes.
    Wait(u32),
    Install,
}

/// The rule: a newer build installs inside the window, or at once when asked by hand.
pub fn decide(
    url: &str,
    offered: u64,
    installed: u64,
    window: Option<Window>,
    minute: u32,
    now_requested: bool,
) -> Decision {
    if url.trim().is_empty() {
        return Decision::Disabled;
    }
    if offered <= installed {
        return Decision::UpToDate;
    }
    match window {
        Some(w) if !now_requested && !w.contains(minute) => Decision::Wait(w.until_open(minute)),
        _ => Decision::Install,
    }
}

/// The document at the update URL.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Latest {
    pub build: u64,
    pub version: String,
    pub bundle_url: String,
    pub size: u64,
}

impl Latest {
    /// `bundle_url` resolved against `base` (the update URL): absolute https, or a path
    /// relative to the base's directory, or absolute-path.
    pub fn resolve(&self, base: &str) -> String {
        let u = self.bundle_url.trim();
        if u.starts_with("https://") || u.starts_with("http://") {
            return u.to_string();
        }
        let origin_end = base
            .find("://")
            .and_then(|i| base[i + 3..].find('/').map(|j| i + 3 + j))
            .unwrap_or(base.len());
        if let Some(abs) = u.strip_prefix('/') {
            return format!("{}/{abs}", &base[..origin_end]);
        }
        let path = &base[origin_end..];
        let path = path.split(['?', '#']).next().unwrap_or("");
        let dir = path.rfind('/').map_or("/", |i| &path[..=i]);
        format!("{}{dir}{u}", &base[..origin_end])
    }
}

/// What the status page shows (OTA-6), one per process.
pub struct UpdateStatus {
    inner: Mutex<Snapshot>,
    now: Notify,
    busy: watch::Sender<bool>,
    /// One update operation at a time (agent loop and uploads).
    work: tokio::sync::Mutex<()>,
}

/// A copy of [`UpdateStatus`] for the status page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// "up to date (build N)", "downloading 45 %", "installing 10 %", "rebooting into the
    /// new version", "update failed: <reason>", …
    pub state: String,
    /// Unix seconds of the last look at the update URL.
    pub last_check: Option<u64>,
    /// The last failure with its reason (OTA-6), also from earlier boots.
    pub last_error: Option<String>,
    /// Downloading or installing: the LED shows "updating".
    pub busy: bool,
}

impl UpdateStatus {
    pub fn new() -> Arc<UpdateStatus> {
        Arc::new(UpdateStatus {
            inner: Mutex::new(Snapshot {
                state: "starting".into(),
                ..Snapshot::default()
            }),
            now: Notify::new(),
            busy: watch::Sender::new(false),
            work: tokio::sync::Mutex::new(()),
        })
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut s = self.lock().clone();
        s.busy = *self.busy.borrow();
        s
    }

    /// "Update now" on the status page: check at once and install outside the window.
    pub fn request_now(&self) {
        self.now.notify_one();
    }

    /// True while downloading or installing (LedPattern::Updating).
    pub fn busy_watch(&self) -> watch::Receiver<bool> {
        self.busy.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_state(&self, s: impl Into<String>) {
        self.lock().state = s.into();
    }

    fn fail(&self, reason: &str) {
        let mut g = self.lock();
        g.state = format!("update failed: {reason}");
        g.last_error = Some(reason.to_string());
    }

    fn set_error(&self, reason: &str) {
        self.lock().last_error = Some(reason.to_string());
    }

    fn checked(&self, at: u64) {
        self.lock().last_check = Some(at);
    }

    fn busy_guard(&self) -> BusyGuard<'_> {
        self.busy.send_replace(true);
        BusyGuard(self)
    }
}

struct BusyGuard<'a>(&'a UpdateStatus);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.busy.send_replace(false);
    }
}

/// Everything the agent needs besides the relay, filled from `Config` (cloned for
/// [`install_uploaded`]).
#[derive(Clone)]
pub struct AgentConfig {
    /// `update_url`: the `latest.json` URL; empty = no automatic checks.
    pub update_url: String,
    /// `update_check_interval`.
    pub check_interval: Duration,
    /// `update_window`; `None` = any time.
    pub window: Option<Window>,
    /// Wait before the first check after start.
    pub first_check_delay: Duration,
    /// Public key baked into the root (OTA-2).
    pub pubkey: PathBuf,
    /// The running image's release file.
    pub release: PathBuf,
    /// State and downloads, on /data (`<data_dir>/update`).
    pub state_dir: PathBuf,
    /// OTA-5 health window and attempts within it.
    pub health_window: Duration,
    pub health_attempts: u32,
    pub health_retry_delay: Duration,
    pub max_bundle_size: u64,
    /// Trust roots for the update server (`tls::client_roots`).
    pub roots: rustls::RootCertStore,
    /// `None`: not an A/B image; the agent only reports that.
    pub boot: Option<Arc<dyn BootControl>>,
    pub rebooter: Arc<dyn Rebooter>,
}

impl AgentConfig {
    /// The defaults of a Relaybox image, with the `update_*` keys of `config`: key and
    /// release file in the root, state under `data_dir/update`, the boot backend of this
    /// machine, [`CommandRebooter`].
    pub fn system(config: &crate::config::Config, roots: rustls::RootCertStore) -> AgentConfig {
        AgentConfig {
            update_url: config.update_url.clone(),
            check_interval: config.update_check_interval,
            window: config.update_window,
            first_check_delay: Duration::from_secs(120),
            pubkey: PathBuf::from(super::DEFAULT_PUBKEY),
            release: PathBuf::from(super::DEFAULT_RELEASE),
            state_dir: config.data_dir.join("update"),
            health_window: DEFAULT_HEALTH_WINDOW,
            health_attempts: config.update_health_attempts,
            health_retry_delay: config.update_health_retry,
            max_bundle_size: DEFAULT_MAX_BUNDLE,
            roots,
            boot: super::boot::detect().map(Arc::from),
            rebooter: Arc::new(CommandRebooter {
                program: PathBuf::from(DEFAULT_REBOOT_HELPER),
            }),
        }
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn installed_build(release: &Release, state: &State) -> u64 {
    state
        .committed_build
        .map_or(release.build, |c| c.max(release.build))
}

fn up_to_date(release: &Release, state: &State) -> String {
    format!(
        "up to date (version {}, build {})",
        release.version,
        installed_build(release, state)
    )
}

/// Records a failure on /data (OTA-6: shown after a reboot too) and in the status.
fn record_failure(cfg: &AgentConfig, status: &UpdateStatus, build: Option<u64>, reason: &str) {
    tracing::warn!("update failed: {reason}");
    let r = State::load(&cfg.state_dir).and_then(|mut s| {
        s.last = Some(Outcome {
            at: now(),
            build,
            ok: false,
            message: reason.to_string(),
        });
        s.store(&cfg.state_dir)
    });
    if let Err(e) = r {
        tracing::warn!("cannot record the update failure: {e}");
    }
    // After the state file, so whoever sees the status sees the record too.
    status.fail(reason);
}

/// The agent: see the module documentation. Returns when there is nothing more to do
/// (not an A/B image, or a reboot was requested).
/// `owner` is the running relay whose handles `handles` lends to the health checks (the
/// boot's check runs in a task of its own, which holds `owner`).
pub async fn run<R: Send + Sync + 'static>(
    owner: Arc<R>,
    handles: fn(&R) -> health::Handles<'_>,
    cfg: AgentConfig,
    status: Arc<UpdateStatus>,
) {
    let Some(boot) = cfg.boot.clone() else {
        status.set_state("automatic updates are not available here (no A/B boot slots)");
        return;
    };
    let release = match Release::load(&cfg.release) {
        Ok(r) => r,
        Err(e) => {
            status.fail(&e.to_string());
            return;
        }
    };
    let (active, trial) = match (boot.active_slot(), boot.is_trial()) {
        (Ok(a), Ok(t)) => (a, t),
        (Err(e), _) | (_, Err(e)) => {
            status.fail(&e.to_string());
            return;
        }
    };
    let mut state = match State::load(&cfg.state_dir) {
        Ok(s) => s,
        Err(e) => {
            status.fail(&e.to_string());
            return;
        }
    };
    // OTA-6: a failed trial (the firmware fell back, BOOT-4) is recorded and shown.
    if state.reconcile(active, trial, now())
        && let Err(e) = state.store(&cfg.state_dir)
    {
        tracing::warn!("cannot store the update state: {e}");
    }
    if let Some(last) = &state.last
        && !last.ok
    {
        status.set_error(&last.message);
    }
    if trial && !health_window(handles(&owner), &cfg, boot.as_ref(), &status).await {
        return;
    }
    if !trial {
        let (owner, cfg) = (owner.clone(), cfg.clone());
        tokio::spawn(async move { boot_health(handles(&owner), cfg, active).await });
    }
    let state = State::load(&cfg.state_dir).unwrap_or(state);
    status.set_state(up_to_date(&release, &state));
    if cfg.update_url.trim().is_empty() {
        tracing::info!("update: no update_url, automatic updates are off");
    }
    let mut next = Instant::now() + cfg.first_check_delay;
    // Bounded by the process lifetime; every pass sleeps at least until `next` or a request.
    loop {
        let requested = tokio::select! {
            () = tokio::time::sleep_until(next) => false,
            () = status.now.notified() => true,
        };
        next = Instant::now() + cfg.check_interval;
        match check_once(&cfg, &release, &status, requested).await {
            Ok(Checked::Rebooting) => return,
            Ok(Checked::Wait(minutes)) => {
                let open = Instant::now() + Duration::from_secs(u64::from(minutes) * 60 + 30);
                next = next.min(open);
            }
            Ok(Checked::Done) => {}
            Err(e) => record_failure(&cfg, &status, None, &e.to_string()),
        }
    }
}

/// The health check (OTA-5) up to `health_attempts` times within `health_window`: `Ok` at
/// the first pass, else the last failure's reason.
async fn check_in_window(h: health::Handles<'_>, cfg: &AgentConfig) -> Result<(), String> {
    let deadline = Instant::now() + cfg.health_window;
    let mut reason = String::from("no health check could run within the window");
    // The listeners are bound by `server::serve`, which starts next to this task.
    tokio::time::sleep(cfg.health_retry_delay.min(Duration::from_secs(5))).await;
    let attempts = cfg.health_attempts.max(1);
    for attempt in 1..=attempts {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match health::check_within(h, left.min(health::TIMEOUT)).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!("update: health check {attempt} of {attempts} failed: {e}");
                reason = e.to_string();
            }
        }
        if attempt < attempts {
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(cfg.health_retry_delay.min(left)).await;
        }
    }
    Err(reason)
}

/// BOOT-6 on a normal boot: a passing health check marks the running slot good and resets
/// the init's boot counter; a failing one leaves the counter to the init.
async fn boot_health(h: health::Handles<'_>, cfg: AgentConfig, active: super::Slot) {
    match check_in_window(h, &cfg).await {
        Ok(()) => match bootcount::boot_passed(&cfg.state_dir, active) {
            Ok(()) => tracing::info!("boot health check passed: slot {} is good", active.as_str()),
            Err(e) => tracing::warn!("cannot record the boot health check: {e}"),
        },
        Err(reason) => tracing::warn!(
            "boot health check failed ({reason}); boot counter at {}",
            bootcount::boot_count(&cfg.state_dir)
        ),
    }
}

/// OTA-5 on a trial boot. True when committed (the agent goes on), false after a failure
/// (a reboot into the old slot was requested).
async fn health_window(
    h: health::Handles<'_>,
    cfg: &AgentConfig,
    boot: &dyn BootControl,
    status: &UpdateStatus,
) -> bool {
    status.set_state("checking the new version (trial boot)");
    let reason = match check_in_window(h, cfg).await {
        Err(reason) => reason,
        Ok(()) => {
            let committed = State::load(&cfg.state_dir).and_then(|mut s| {
                let p = s.commit(boot, now())?;
                s.store(&cfg.state_dir)?;
                Ok(p)
            });
            match committed {
                Ok(p) => {
                    tracing::info!(
                        "update: health check passed, slot committed ({})",
                        p.map_or("by hand".into(), |p| format!("build {}", p.build))
                    );
                    if let Ok(active) = boot.active_slot()
                        && let Err(e) = bootcount::boot_passed(&cfg.state_dir, active)
                    {
                        tracing::warn!("cannot record the boot health check: {e}");
                    }
                    return true;
                }
                Err(e) => format!("cannot commit the new slot: {e}"),
            }
        }
    };
    // OTA-5 fail: record why, forget the pending update, plain reboot → the old slot.
    let state = State::load(&cfg.state_dir).unwrap_or_default();
    let (build, what) = match &state.pending {
        Some(p) => (
            Some(p.build),
            format!("version {} (build {})", p.version, p.build),
        ),
        None => (None, "the new version".to_string()),
    };
    let back = boot
        .active_slot()
        .map(|s| s.other().as_str())
        .unwrap_or("?");
    let msg = format!("{what} failed its health check ({reason}); going back to slot {back}");
    let r = State::load(&cfg.state_dir).and_then(|mut s| {
        s.pending = None;
        s.store(&cfg.state_dir)
    });
    if let Err(e) = r {
        tracing::warn!("cannot store the update state: {e}");
    }
    record_failure(cfg, status, build, &msg);
    status.set_state("health check failed: rebooting into the previous version");
    if let Err(e) = cfg.rebooter.reboot(None) {
        record_failure(cfg, status, build, &format!("{msg}; reboot failed: {e}"));
    }
    false
}

enum Checked {
    Done,
    Wait(u32),
    Rebooting,
}

async fn check_once(
    cfg: &AgentConfig,
    release: &Release,
    status: &UpdateStatus,
    requested: bool,
) -> Result<Checked, UpdateError> {
    if cfg.update_url.trim().is_empty() {
        if requested {
            return Err(UpdateError::Refused("no update URL is configured".into()));
        }
        return Ok(Checked::Done);
    }
    let Some(boot) = cfg.boot.clone() else {
        return Ok(Checked::Done);
    };
    let _work = status.work.lock().await;
    let client = Downloader::new(cfg.roots.clone())?;
    let latest = fetch_latest(cfg, &client).await?;
    status.checked(now());
    let state = State::load(&cfg.state_dir)?;
    let installed = installed_build(release, &state);
    match decide(
        &cfg.update_url,
        latest.build,
        installed,
        cfg.window,
        minute_of_day(now()),
        requested,
    ) {
        Decision::Disabled => Ok(Checked::Done),
        Decision::UpToDate => {
            status.set_state(up_to_date(release, &state));
            Ok(Checked::Done)
        }
        Decision::Wait(m) => {
            let w = cfg.window.map(|w| w.to_string()).unwrap_or_default();
            status.set_state(format!(
                "version {} (build {}) available; installs between {w} UTC",
                latest.version, latest.build
            ));
            Ok(Checked::Wait(m))
        }
        Decision::Install => {
            let _busy = status.busy_guard();
            let bundle = download_bundle(cfg, &client, &latest, status).await?;
            install_and_reboot(cfg, release, boot, status, &bundle).await?;
            Ok(Checked::Rebooting)
        }
    }
}

async fn fetch_latest(cfg: &AgentConfig, client: &Downloader) -> Result<Latest, UpdateError> {
    let tmp = cfg.state_dir.join("latest.json.part");
    tokio::fs::create_dir_all(&cfg.state_dir)
        .await
        .map_err(|e| UpdateError::io("cannot create", &cfg.state_dir, e))?;
    // Never resumed: a stale part of an older latest.json would be wrong.
    let _ = tokio::fs::remove_file(&tmp).await;
    let got = super::download(&cfg.update_url, &tmp, MAX_LATEST, client).await;
    let bytes = tokio::fs::read(&tmp).await;
    let _ = tokio::fs::remove_file(&tmp).await;
    got?;
    let bytes = bytes.map_err(|e| UpdateError::io("cannot read", &tmp, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| UpdateError::Download(format!("{}: not a latest.json: {e}", cfg.update_url)))
}

/// OTA-4: resumable, capped at the announced size; progress from the file size.
async fn download_bundle(
    cfg: &AgentConfig,
    client: &Downloader,
    latest: &Latest,
    status: &UpdateStatus,
) -> Result<PathBuf, UpdateError> {
    if latest.size > cfg.max_bundle_size {
        return Err(UpdateError::Download(format!(
            "the bundle ({} bytes) is larger than the limit of {} bytes",
            latest.size, cfg.max_bundle_size
        )));
    }
    let name = format!("bundle-{}.tar", latest.build);
    let dest = cfg.state_dir.join(&name);
    // Partial downloads of other builds are of no more use.
    if let Ok(mut rd) = tokio::fs::read_dir(&cfg.state_dir).await {
        while let Ok(Some(e)) = rd.next_entry().await {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("bundle-") && n != name {
                let _ = tokio::fs::remove_file(e.path()).await;
            }
        }
    }
    let url = latest.resolve(&cfg.update_url);
    tracing::info!(
        "update: downloading version {} (build {})",
        latest.version,
        latest.build
    );
    status.set_state("downloading 0 %");
    let done = {
        let fut = super::download(&url, &dest, latest.size, client);
        tokio::pin!(fut);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                r = &mut fut => break r,
                _ = tick.tick() => {
                    let have = tokio::fs::metadata(&dest).await.map_or(0, |m| m.len());
                    status.set_state(format!("downloading {} %", percent(have, latest.size)));
                }
            }
        }
    };
    let d = done?;
    if d.size != latest.size {
        let _ = tokio::fs::remove_file(&dest).await;
        return Err(UpdateError::Download(format!(
            "got {} bytes, latest.json announced {}",
            d.size, latest.size
        )));
    }
    Ok(dest)
}

fn percent(done: u64, total: u64) -> u64 {
    if total == 0 {
        100
    } else {
        (u128::from(done) * 100 / u128::from(total)).min(100) as u64
    }
}

/// OTA-2..4: verify against the running release and the committed build, write the
/// inactive slot, record "pending", reboot into the trial. The bundle file is removed
/// afterwards (also when it is bad: the next check downloads again).
async fn install_and_reboot(
    cfg: &AgentConfig,
    release: &Release,
    boot: Arc<dyn BootControl>,
    status: &UpdateStatus,
    bundle: &Path,
) -> Result<(), UpdateError> {
    let r = install_bundle(cfg, release, boot.clone(), status, bundle).await;
    let _ = tokio::fs::remove_file(bundle).await;
    let m = r?;
    status.set_state("rebooting into the new version");
    tracing::info!(
        "update: version {} (build {}) installed; rebooting into its trial",
        m.version,
        m.build
    );
    cfg.rebooter.reboot(boot.reboot_argument())
}

async fn install_bundle(
    cfg: &AgentConfig,
    release: &Release,
    boot: Arc<dyn BootControl>,
    status: &UpdateStatus,
    bundle: &Path,
) -> Result<super::Manifest, UpdateError> {
    status.set_state("verifying the bundle");
    let state = State::load(&cfg.state_dir)?;
    let expect = release.expect(state.committed_build);
    let pk = PublicKey::from_file(&cfg.pubkey)?;
    let path = bundle.to_path_buf();
    let m = tokio::task::spawn_blocking(move || super::verify(&pk, &path, &expect))
        .await
        .map_err(|e| UpdateError::Refused(format!("verify task: {e}")))??;
    status.set_state("installing 0 %");
    // BOOT-6: the slot about to be written is no longer a fallback.
    bootcount::forget_good(&cfg.state_dir, boot.active_slot()?.other())?;
    let (path, m2) = (bundle.to_path_buf(), m.clone());
    // The status is shared; the blocking writer reports through a channel.
    let (tx, mut rx) = watch::channel(Progress { done: 0, total: 0 });
    let writer = tokio::task::spawn_blocking(move || {
        install_with_progress(&path, &m2, boot.as_ref(), &mut |p| {
            tx.send_replace(p);
        })
    });
    tokio::pin!(writer);
    let mut open = true;
    let joined = loop {
        tokio::select! {
            r = &mut writer => break r,
            c = rx.changed(), if open => match c {
                Ok(()) => {
                    let p = *rx.borrow_and_update();
                    status.set_state(format!("installing {} %", percent(p.done, p.total)));
                }
                Err(_) => open = false,
            },
        }
    };
    let slot = joined.map_err(|e| UpdateError::Refused(format!("install task: {e}")))??;
    let mut state = State::load(&cfg.state_dir)?;
    state.pending = Some(Pending {
        slot,
        build: m.build,
        version: m.version.clone(),
        armed_at: now(),
    });
    state.store(&cfg.state_dir)?;
    Ok(m)
}

/// "Upload a bundle" on the status page: verify, install and reboot from a local file
/// (removed afterwards). Errors are recorded and shown like the agent's.
pub async fn install_uploaded(
    cfg: &AgentConfig,
    status: &UpdateStatus,
    bundle: &Path,
) -> Result<(), UpdateError> {
    let Some(boot) = cfg.boot.clone() else {
        return Err(UpdateError::Boot(
            "no A/B boot slots on this machine".into(),
        ));
    };
    let _work = status.work.lock().await;
    let _busy = status.busy_guard();
    let r = async {
        let release = Release::load(&cfg.release)?;
        install_and_reboot(cfg, &release, boot, status, bundle).await
    }
    .await;
    if let Err(e) = &r {
        record_failure(cfg, status, None, &e.to_string());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::Relay;
    use crate::update::Slot;
    use crate::update::boot::{Autoboot, QemuBoot, TRYBOOT_FLAG, fake_qemu};
    use crate::update::bundle::{MANIFEST, SIGNATURE, fixture, sha256_hex, write_tar};
    use crate::update::manifest::{ImageEntry, ImageKind, Manifest};
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;
    use std::collections::HashMap;
    use std::convert::Infallible;
    use std::fs;

    const PART: usize = 80_000;

    #[test]
    fn window_parse_and_contains() {
        assert_eq!(Window::parse("").unwrap(), None);
        let w = Window::parse("03:00-05:00").unwrap().unwrap();
        assert_eq!((w.start, w.end), (180, 300));
        assert_eq!(w.to_string(), "03:00-05:00");
        assert!(w.contains(180) && w.contains(299));
        assert!(!w.contains(300) && !w.contains(179));
        assert_eq!(w.until_open(170), 10);
        assert_eq!(w.until_open(300), 1440 - 120);
        let night = Window::parse("23:30-01:00").unwrap().unwrap();
        assert!(night.contains(1430) && night.contains(30) && !night.contains(60));
        assert_eq!(night.until_open(60), 1410 - 60);
        for bad in [
            "3-5",
            "03:00",
            "25:00-01:00",
            "03:60-04:00",
            "03:00-03:00",
            "x",
            // Found by the `config` fuzz target: an hour whose minutes overflow u32
            // panicked (debug builds) instead of being refused.
            "444444444:00-05:00",
            "03:00-4294967295:00",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(minute_of_day(86_400 * 3 + 3 * 3600 + 61), 181);
    }

    #[test]
    fn decide_table() {
        let w = Window::parse("03:00-05:00").unwrap();
        let url = "https://u.example/latest.json";
        // (url, offered, installed, window, minute, now) → decision
        let cases = [
            ("", 9, 5, w, 200, true, Decision::Disabled),
            ("  ", 9, 5, None, 200, false, Decision::Disabled),
            (url, 5, 5, None, 200, true, Decision::UpToDate),
            (url, 4, 5, w, 200, true, Decision::UpToDate),
            (url, 6, 5, None, 700, false, Decision::Install),
            (url, 6, 5, w, 200, false, Decision::Install),
            (url, 6, 5, w, 170, false, Decision::Wait(10)),
            (url, 6, 5, w, 700, false, Decision::Wait(920)),
            (url, 6, 5, w, 700, true, Decision::Install),
        ];
        for (u, offered, installed, win, minute, now, want) in cases {
            assert_eq!(
                decide(u, offered, installed, win, minute, now),
                want,
                "{u:?} {offered} {installed} {win:?} {minute} {now}"
            );
        }
    }

    #[test]
    fn bundle_url_resolution() {
        let l = |u: &str| Latest {
            build: 1,
            version: "1".into(),
            bundle_url: u.into(),
            size: 1,
        };
        let base = "https://h.example:8443/rb/rpi4/latest.json?x=1";
        assert_eq!(
            l("b.tar").resolve(base),
            "https://h.example:8443/rb/rpi4/b.tar"
        );
        assert_eq!(l("/b.tar").resolve(base), "https://h.example:8443/b.tar");
        assert_eq!(
            l("https://o.example/b").resolve(base),
            "https://o.example/b"
        );
        assert_eq!(l("b").resolve("https://h.example"), "https://h.example/b");
    }

    /// HTTPS on 127.0.0.1 serving fixed paths (no ranges).
    struct Server {
        base: String,
        roots: rustls::RootCertStore,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn serve(dir: &Path, files: HashMap<String, Vec<u8>>) -> Server {
        let (acceptor, roots) = crate::testing::loopback_tls(dir);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let files = Arc::new(files);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, files) = (acceptor.clone(), files.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                        let resp = match files.get(req.uri().path()) {
                            Some(b) => hyper::Response::new(Full::new(Bytes::from(b.clone()))),
                            None => hyper::Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        };
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Server {
            base: format!("https://127.0.0.1:{port}"),
            roots,
            task,
        }
    }

    fn image(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
            .collect()
    }

    /// A bundle of build `build` signed with a key made here by Debian's minisign
    /// (`minisign -G -W`); returns (bundle, public key file, root image).
    fn signed_bundle(dir: &Path, build: u64) -> (Vec<u8>, PathBuf, Vec<u8>) {
        let keys = dir.join("keys");
        fs::create_dir_all(&keys).unwrap();
        let (pk, sk) = (keys.join("test.pub"), keys.join("test.key"));
        let st = std::process::Command::new("minisign")
            .args(["-G", "-W", "-f", "-p"])
            .arg(&pk)
            .arg("-s")
            .arg(&sk)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("minisign must be installed");
        assert!(st.success());
        let (boot, root) = (image(3, 2000), image(7, 60_000));
        let m = Manifest {
            format: 1,
            compatible: "relaybox-test".into(),
            version: format!("2.{build}"),
            build,
            images: vec![
                ImageEntry {
                    name: ImageKind::Boot,
                    slot: None,
                    file: "boot.vfat".into(),
                    size: boot.len() as u64,
                    sha256: sha256_hex(&boot),
                },
                ImageEntry {
                    name: ImageKind::Root,
                    slot: None,
                    file: "root.squashfs".into(),
                    size: root.len() as u64,
                    sha256: sha256_hex(&root),
                },
            ],
        };
        let mp = keys.join(MANIFEST);
        fs::write(&mp, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
        let st = std::process::Command::new("minisign")
            .args(["-S", "-s"])
            .arg(&sk)
            .arg("-m")
            .arg(&mp)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        let sig = fs::read(keys.join(SIGNATURE)).unwrap();
        let json = fs::read(&mp).unwrap();
        let tar = write_tar(&[
            (MANIFEST, &json),
            (SIGNATURE, &sig),
            ("boot.vfat", &boot),
            ("root.squashfs", &root),
        ]);
        (tar, pk, root)
    }

    #[derive(Default)]
    struct FakeReboot(Mutex<Vec<Option<String>>>);

    impl Rebooter for FakeReboot {
        fn reboot(&self, argument: Option<&str>) -> Result<(), UpdateError> {
            self.0.lock().unwrap().push(argument.map(str::to_string));
            Ok(())
        }
    }

    impl FakeReboot {
        fn calls(&self) -> Vec<Option<String>> {
            self.0.lock().unwrap().clone()
        }
    }

    fn release(dir: &Path, build: u64) -> PathBuf {
        let p = dir.join("release.json");
        fs::write(
            &p,
            format!(r#"{{"compatible":"relaybox-test","version":"1.{build}","build":{build}}}"#),
        )
        .unwrap();
        p
    }

    fn agent_config(
        dir: &Path,
        boot: QemuBoot,
        pubkey: PathBuf,
        roots: rustls::RootCertStore,
        url: String,
        reboot: Arc<FakeReboot>,
    ) -> AgentConfig {
        AgentConfig {
            update_url: url,
            check_interval: Duration::from_secs(3600),
            window: None,
            first_check_delay: Duration::ZERO,
            pubkey,
            release: dir.join("release.json"),
            state_dir: dir.join("data").join("update"),
            health_window: Duration::from_secs(30),
            health_attempts: 2,
            health_retry_delay: Duration::from_millis(20),
            max_bundle_size: 1 << 20,
            roots,
            boot: Some(Arc::new(boot)),
            rebooter: reboot,
        }
    }

    fn slots(boot: &QemuBoot) -> Vec<Vec<u8>> {
        [Slot::A, Slot::B]
            .iter()
            .flat_map(|s| {
                let p = boot.partitions(*s).unwrap();
                [fs::read(p.boot).unwrap(), fs::read(p.root).unwrap()]
            })
            .collect()
    }

    /// Bounded wait for a condition checked every 20 ms.
    async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
        for _ in 0..secs * 50 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("timed out waiting for {what}");
    }

    fn offline_relay(dir: &Path) -> Arc<Relay> {
        Relay::open(crate::testing::config(&dir.join("relay"), "example.org")).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn update_now_installs_reboots_then_trial_commits() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (tar, pk, root) = signed_bundle(d, 43);
        let latest = format!(
            r#"{{"build":43,"version":"2.43","bundle_url":"bundles/b43.tar","size":{}}}"#,
            tar.len()
        );
        let files = HashMap::from([
            ("/rb/latest.json".to_string(), latest.into_bytes()),
            ("/rb/bundles/b43.tar".to_string(), tar),
        ]);
        let server = serve(d, files).await;
        release(d, 41);
        let boot = fake_qemu(d, Slot::A, PART);
        let before = slots(&boot);
        let reboot = Arc::new(FakeReboot::default());
        let mut cfg = agent_config(
            d,
            fake_qemu_view(&boot),
            pk.clone(),
            server.roots.clone(),
            format!("{}/rb/latest.json", server.base),
            reboot.clone(),
        );
        // A window that is closed now and a late first check: only "update now" installs.
        let m = minute_of_day(now());
        cfg.window = Some(Window {
            start: (m + 120) % 1440,
            end: (m + 180) % 1440,
        });
        cfg.first_check_delay = Duration::from_secs(3600);
        let state_dir = cfg.state_dir.clone();
        // BOOT-6: slot B ran well once; the init counted two boots since a health check.
        fs::create_dir_all(&state_dir).unwrap();
        fs::write(state_dir.join("good-b"), "1\n").unwrap();
        fs::write(state_dir.join(bootcount::BOOT_COUNT), "2\n").unwrap();
        let status = UpdateStatus::new();
        let mut busy = status.busy_watch();
        let relay = offline_relay(d);
        status.request_now();
        let task = tokio::spawn(run(relay, Relay::update_handles, cfg, status.clone()));
        tokio::time::timeout(Duration::from_secs(30), busy.wait_for(|b| *b))
            .await
            .expect("busy (LED updating) while working")
            .unwrap();
        wait_for("the reboot", 30, || !reboot.calls().is_empty()).await;
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("run returns after requesting the reboot")
            .unwrap();
        assert_eq!(reboot.calls(), vec![None], "QEMU: arm_trial did it all");
        let snap = status.snapshot();
        assert_eq!(snap.state, "rebooting into the new version");
        assert!(!snap.busy);
        assert!(snap.last_check.is_some());
        assert_eq!(snap.last_error, None);
        // OTA-7: slot A untouched; B has the new root; trial armed.
        let after = slots(&boot);
        assert_eq!(after[..2], before[..2]);
        assert_eq!(&after[3][..root.len()], root.as_slice());
        assert!(boot.autoboot_dir.join(TRYBOOT_FLAG).exists());
        let ab = Autoboot::load(&boot.autoboot_dir).unwrap();
        assert_eq!((ab.default, ab.tryboot), (Slot::A, Slot::B));
        assert!(
            !bootcount::is_good(&state_dir, Slot::B),
            "a slot being written is no fallback"
        );
        let st = State::load(&state_dir).unwrap();
        assert_eq!(
            st.pending.as_ref().map(|p| (p.slot, p.build)),
            Some((Slot::B, 43))
        );
        assert!(
            !fs::read_dir(&state_dir).unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("bundle-")),
            "the bundle is removed after installing"
        );

        // The trial boot: image/qemu consumed the flag and booted B, whose release is 43.
        fs::remove_file(boot.autoboot_dir.join(TRYBOOT_FLAG)).unwrap();
        fs::write(&boot.cmdline, "relaybox.root=root-b\n").unwrap();
        release(d, 43);
        let (relay, serving) = crate::update::health::tests::running_relay(&d.join("relay2")).await;
        let cfg = agent_config(
            d,
            fake_qemu_view(&boot),
            pk,
            server.roots.clone(),
            String::new(),
            reboot.clone(),
        );
        let status = UpdateStatus::new();
        let task = tokio::spawn(run(relay, Relay::update_handles, cfg, status.clone()));
        wait_for("the commit", 60, || {
            State::load(&state_dir).unwrap().committed_build == Some(43)
        })
        .await;
        wait_for("the status", 10, || {
            status.snapshot().state.starts_with("up to date")
        })
        .await;
        assert_eq!(
            status.snapshot().state,
            "up to date (version 1.43, build 43)"
        );
        let st = State::load(&state_dir).unwrap();
        assert_eq!(st.pending, None);
        assert!(st.last.as_ref().unwrap().ok);
        assert_eq!(Autoboot::load(&boot.autoboot_dir).unwrap().default, Slot::B);
        assert!(bootcount::is_good(&state_dir, Slot::B));
        assert_eq!(bootcount::boot_count(&state_dir), 0);
        assert_eq!(
            reboot.calls().len(),
            1,
            "no reboot after a passed health check"
        );
        task.abort();
        serving.abort();
    }

    /// A second handle on the same fake partitions.
    fn fake_qemu_view(b: &QemuBoot) -> QemuBoot {
        QemuBoot {
            autoboot_dir: b.autoboot_dir.clone(),
            cmdline: b.cmdline.clone(),
            slots: b.slots.clone(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_bundle_is_reported_and_no_slot_touched() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // The signed fixture (build 42) with one byte of its root image flipped.
        let mut bad_root = fixture::root();
        bad_root[100] ^= 1;
        let tar = write_tar(&[
            (MANIFEST, fixture::MANIFEST.as_bytes()),
            (SIGNATURE, fixture::SIG.as_bytes()),
            ("boot.vfat", &fixture::boot()),
            ("root.squashfs", &bad_root),
        ]);
        let latest = format!(
            r#"{{"build":42,"version":"1.2.3","bundle_url":"/b.tar","size":{}}}"#,
            tar.len()
        );
        let files = HashMap::from([
            ("/latest.json".to_string(), latest.into_bytes()),
            ("/b.tar".to_string(), tar),
        ]);
        let server = serve(d, files).await;
        let pk = d.join("test.pub");
        fs::write(&pk, fixture::PUB).unwrap();
        release(d, 41);
        let boot = fake_qemu(d, Slot::A, PART);
        let before = slots(&boot);
        let reboot = Arc::new(FakeReboot::default());
        let cfg = agent_config(
            d,
            fake_qemu_view(&boot),
            pk,
            server.roots.clone(),
            format!("{}/latest.json", server.base),
            reboot.clone(),
        );
        let state_dir = cfg.state_dir.clone();
        let status = UpdateStatus::new();
        let task = tokio::spawn(run(
            offline_relay(d),
            Relay::update_handles,
            cfg,
            status.clone(),
        ));
        wait_for("the failure", 30, || status.snapshot().last_error.is_some()).await;
        let snap = status.snapshot();
        assert_eq!(
            snap.last_error.as_deref(),
            Some("image root: hash mismatch")
        );
        assert_eq!(snap.state, "update failed: image root: hash mismatch");
        assert!(!snap.busy);
        assert_eq!(slots(&boot), before, "no slot touched");
        assert!(!boot.autoboot_dir.join(TRYBOOT_FLAG).exists());
        assert!(reboot.calls().is_empty());
        let st = State::load(&state_dir).unwrap();
        assert_eq!(st.pending, None);
        let last = st.last.unwrap();
        assert!(
            !last.ok && last.message.contains("hash mismatch"),
            "{last:?}"
        );
        task.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn newer_build_waits_for_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let files = HashMap::from([(
            "/latest.json".to_string(),
            br#"{"build":50,"version":"5.0","bundle_url":"b.tar","size":10}"#.to_vec(),
        )]);
        let server = serve(d, files).await;
        release(d, 41);
        let boot = fake_qemu(d, Slot::A, 16);
        let reboot = Arc::new(FakeReboot::default());
        let mut cfg = agent_config(
            d,
            fake_qemu_view(&boot),
            d.join("none.pub"),
            server.roots.clone(),
            format!("{}/latest.json", server.base),
            reboot.clone(),
        );
        let m = minute_of_day(now());
        let w = Window {
            start: (m + 120) % 1440,
            end: (m + 180) % 1440,
        };
        cfg.window = Some(w);
        let status = UpdateStatus::new();
        let task = tokio::spawn(run(
            offline_relay(d),
            Relay::update_handles,
            cfg,
            status.clone(),
        ));
        wait_for("the check", 30, || status.snapshot().last_check.is_some()).await;
        wait_for("the state", 10, || {
            status.snapshot().state.contains("available")
        })
        .await;
        assert_eq!(
            status.snapshot().state,
            format!("version 5.0 (build 50) available; installs between {w} UTC")
        );
        assert_eq!(status.snapshot().last_error, None);
        assert!(reboot.calls().is_empty());
        task.abort();
    }

    /// A relay whose SMTP listener is configured but not listening (its health check
    /// fails at once), the dead address and the socket that keeps it reserved.
    fn dead_smtp_relay(d: &Path) -> (Arc<Relay>, std::net::SocketAddr, tokio::net::TcpSocket) {
        let mut rc = crate::testing::config(&d.join("relay"), "example.org");
        // Bound (so no other test gets the port) but not listening: connections are refused.
        let reserved = tokio::net::TcpSocket::new_v4().unwrap();
        reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let dead = reserved.local_addr().unwrap();
        rc.listen = crate::config::Listeners {
            smtp: vec![dead],
            submission: vec![],
            submissions: vec![],
            imap: vec![],
            imaps: vec![],
            https: vec![],
            http: vec![],
        };
        (Relay::open(rc).unwrap(), dead, reserved)
    }

    /// `update_health_retry` is the pause between two checks: a window whose last check
    /// failed ends at once instead of pausing once more (a trial falls back that much
    /// sooner).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_pause_after_the_last_health_check() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (relay, dead, _reserved) = dead_smtp_relay(d);
        let mut cfg = agent_config(
            d,
            fake_qemu(d, Slot::A, 16),
            d.join("none.pub"),
            rustls::RootCertStore::empty(),
            String::new(),
            Arc::new(FakeReboot::default()),
        );
        cfg.health_window = Duration::from_secs(3600);
        cfg.health_retry_delay = Duration::from_secs(3600);
        cfg.health_attempts = 1;
        let r = tokio::time::timeout(
            Duration::from_secs(60),
            check_in_window(relay.update_handles(), &cfg),
        )
        .await
        .expect("the window ends with its last check, not a pause after it");
        assert_eq!(r, Err(format!("SMTP is not answering on {dead}")));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_health_check_records_and_reboots_to_the_old_slot() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        release(d, 43);
        let boot = fake_qemu(d, Slot::A, 16);
        // Trial boot of B (default still A).
        fs::write(&boot.cmdline, "relaybox.root=root-b\n").unwrap();
        let reboot = Arc::new(FakeReboot::default());
        let cfg = agent_config(
            d,
            fake_qemu_view(&boot),
            d.join("none.pub"),
            rustls::RootCertStore::empty(),
            String::new(),
            reboot.clone(),
        );
        State {
            committed_build: Some(41),
            pending: Some(Pending {
                slot: Slot::B,
                build: 43,
                version: "2.43".into(),
                armed_at: 1,
            }),
            last: None,
        }
        .store(&cfg.state_dir)
        .unwrap();
        let state_dir = cfg.state_dir.clone();
        let (relay, dead, _reserved) = dead_smtp_relay(d);
        let status = UpdateStatus::new();
        tokio::time::timeout(
            Duration::from_secs(60),
            run(relay, Relay::update_handles, cfg, status.clone()),
        )
        .await
        .expect("run returns after a failed health window");
        assert_eq!(
            reboot.calls(),
            vec![None],
            "plain reboot: the firmware falls back"
        );
        let st = State::load(&state_dir).unwrap();
        assert_eq!(st.pending, None);
        assert_eq!(st.committed_build, Some(41));
        let last = st.last.unwrap();
        assert!(!last.ok);
        assert_eq!(
            last.message,
            format!(
                "version 2.43 (build 43) failed its health check (SMTP is not answering on {dead}); going back to slot a"
            )
        );
        assert_eq!(
            status.snapshot().last_error.as_deref(),
            Some(last.message.as_str())
        );
        assert_eq!(Autoboot::load(&boot.autoboot_dir).unwrap().default, Slot::A);

        // The next boot is the old slot: nothing pending, the reason stays visible.
        fs::write(&boot.cmdline, "relaybox.root=root-a\n").unwrap();
        release(d, 41);
        let cfg = agent_config(
            d,
            fake_qemu_view(&boot),
            d.join("none.pub"),
            rustls::RootCertStore::empty(),
            String::new(),
            reboot.clone(),
        );
        let status = UpdateStatus::new();
        let task = tokio::spawn(run(
            offline_relay(&d.join("next-boot")),
            Relay::update_handles,
            cfg,
            status.clone(),
        ));
        wait_for("the state", 10, || {
            status.snapshot().state.starts_with("up to date")
        })
        .await;
        assert_eq!(
            status.snapshot().last_error.as_deref(),
            Some(last.message.as_str())
        );
        task.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fallback_boot_is_shown_and_update_now_without_url_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        release(d, 41);
        let boot = fake_qemu(d, Slot::A, 16);
        let reboot = Arc::new(FakeReboot::default());
        let cfg = agent_config(
            d,
            fake_qemu_view(&boot),
            d.join("none.pub"),
            rustls::RootCertStore::empty(),
            String::new(),
            reboot.clone(),
        );
        // B was armed, but this is a normal boot of A: the trial hung or panicked (BOOT-4).
        State {
            committed_build: None,
            pending: Some(Pending {
                slot: Slot::B,
                build: 43,
                version: "2.43".into(),
                armed_at: 1,
            }),
            last: None,
        }
        .store(&cfg.state_dir)
        .unwrap();
        let status = UpdateStatus::new();
        let task = tokio::spawn(run(
            offline_relay(d),
            Relay::update_handles,
            cfg,
            status.clone(),
        ));
        wait_for("the state", 10, || {
            status.snapshot().state.starts_with("up to date")
        })
        .await;
        assert_eq!(
            status.snapshot().last_error.as_deref(),
            Some("version 2.43 (build 43) did not pass its trial boot; back on slot a")
        );
        status.request_now();
        wait_for("the refusal", 10, || {
            status.snapshot().state.starts_with("update failed")
        })
        .await;
        assert_eq!(
            status.snapshot().state,
            "update failed: refused: no update URL is configured"
        );
        assert!(reboot.calls().is_empty());
        task.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn uploaded_bundle_installs_or_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let tar = write_tar(&[
            (MANIFEST, fixture::MANIFEST.as_bytes()),
            (SIGNATURE, fixture::SIG.as_bytes()),
            ("boot.vfat", &fixture::boot()),
            ("root.squashfs", &fixture::root()),
        ]);
        let pk = d.join("test.pub");
        fs::write(&pk, fixture::PUB).unwrap();
        let boot = fake_qemu(d, Slot::A, PART);
        let before = slots(&boot);
        let reboot = Arc::new(FakeReboot::default());
        let cfg = agent_config(
            d,
            fake_qemu_view(&boot),
            pk,
            rustls::RootCertStore::empty(),
            String::new(),
            reboot.clone(),
        );
        let status = UpdateStatus::new();
        let upload = d.join("upload.tar");

        // Build 42 on a system already at 42: refused before any slot is touched (OTA-3).
        release(d, 42);
        fs::write(&upload, &tar).unwrap();
        let err = install_uploaded(&cfg, &status, &upload)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("older build 42 <= 42"), "{err}");
        assert_eq!(status.snapshot().last_error.as_deref(), Some(err.as_str()));
        assert_eq!(slots(&boot), before);
        assert!(reboot.calls().is_empty());
        assert!(!upload.exists(), "the upload is removed");

        release(d, 41);
        fs::write(&upload, &tar).unwrap();
        install_uploaded(&cfg, &status, &upload)
            .await
            .expect("install");
        assert_eq!(reboot.calls(), vec![None]);
        assert_eq!(status.snapshot().state, "rebooting into the new version");
        assert!(!status.snapshot().busy);
        let p = State::load(&cfg.state_dir).unwrap().pending.unwrap();
        assert_eq!(
            (p.slot, p.build, p.version.as_str()),
            (Slot::B, 42, "1.2.3")
        );
        assert_eq!(&slots(&boot)[3][..70_000], fixture::root().as_slice());
        assert_eq!(slots(&boot)[..2], before[..2]);
    }
}
