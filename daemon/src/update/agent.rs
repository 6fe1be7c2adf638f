//! The update agent (issue 7 "on the device", OTA-3..6): the background task that checks
//! the update URL, downloads, verifies and installs a newer bundle inside the maintenance
//! window, reboots into its trial, and on the trial boot runs the health window that commits
//! the new slot or falls back. Owns the shared [`UpdateStatus`] the status page reads.
//!
//! At start ([`run`]):
//! 1. `State::reconcile` reads this boot's outcome: booted normally while an update was
//!    pending means the trial failed and the firmware fell back (BOOT-4); recorded and shown
//!    as the last error (OTA-6).
//! 2. On a trial boot: [`health::check`] up to `health_attempts` times within
//!    `health_window` (OTA-5, ≤ 5 min). Pass → `State::commit` (BOOT-3). Fail → the reason
//!    is recorded on /data and the system is rebooted plainly, which boots the old slot.
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
//! `buildroot/rootfs-overlay/sbin/init` does not provide these yet):
//! - the `autoboot` FAT partition mounted read-write at `/run/autoboot` and writable by
//!   `relaybox` (the init mounts it read-only, reads chatmail.ini and unmounts it);
//! - write access for `relaybox` to the four slot partitions (`boot-a`, `boot-b`,
//!   `root-a`, `root-b` block devices; e.g. a `disk` group and udev-less `chgrp` in init).
//!   The installer refuses to write the running slot (OTA-7) but cannot be prevented by
//!   permissions from doing so: ideally only the inactive slot's devices are writable;
//! - a way to reboot: [`CommandRebooter`] runs [`DEFAULT_REBOOT_HELPER`] (with the
//!   argument `0 tryboot` on the Pi, BOOT-1), which must be a small root-owned helper
//!   (setuid, or a request to the init) that does `sync` and `reboot(2)` RESTART2 with the
//!   argument; the init has none today;
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
use super::{Downloader, PublicKey, Release, UpdateError, health};
use crate::server::Relay;

/// The privileged reboot helper [`CommandRebooter`] runs by default.
pub const DEFAULT_REBOOT_HELPER: &str = "/usr/libexec/relaybox/reboot";
/// Default `update_check_interval` (issue 7).
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(6 * 3600);
/// Default `update_window`.
pub const DEFAULT_WINDOW: &str = "03:00-05:00";
/// OTA-5: the health window of a trial boot.
pub const DEFAULT_HEALTH_WINDOW: Duration = Duration::from_secs(300);
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

/// A daily maintenance window in UTC, `HH:MM-HH:MM`; may wrap past midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Minutes after midnight UTC.
    pub start: u32,
    pub end: u32,
}

impl Window {
    /// `""` → `None` (any time). Errors are config validation messages.
    pub fn parse(text: &str) -> Result<Option<Window>, String> {
        let t = text.trim();
        if t.is_empty() {
            return Ok(None);
        }
        let hm = |s: &str| -> Option<u32> {
            let (h, m) = s.trim().split_once(':')?;
            let (h, m) = (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
            (h < 24 && m < 60 && m.to_string().len() <= 2).then_some(h * 60 + m)
        };
        let bad =
            || format!("expected HH:MM-HH:MM in UTC (e.g. {DEFAULT_WINDOW}) or empty, got {t}");
        let (a, b) = t.split_once('-').ok_or_else(bad)?;
        let (start, end) = (hm(a).ok_or_else(bad)?, hm(b).ok_or_else(bad)?);
        if start == end {
            return Err(format!(
                "the window {t} is empty; leave update_window empty for any time"
            ));
        }
        Ok(Some(Window { start, end }))
    }

    pub fn contains(&self, minute: u32) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }

    /// Minutes from `minute` until the window opens (0 when open).
    pub fn until_open(&self, minute: u32) -> u32 {
        if self.contains(minute) {
            0
        } else {
            (self.start + 1440 - minute) % 1440
        }
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
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

/// Everything the agent needs besides the relay; the lead fills it from `Config`.
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
    /// Trust roots for the update server (`outbound::transport::client_roots`).
    pub roots: rustls::RootCertStore,
    /// `None`: not an A/B image; the agent only reports that.
    pub boot: Option<Arc<dyn BootControl>>,
    pub rebooter: Arc<dyn Rebooter>,
}

impl AgentConfig {
    /// The defaults of a Relaybox image: key and release file in the root, state under
    /// `data_dir/update`, the boot backend of this machine, [`CommandRebooter`].
    pub fn system(
        update_url: String,
        check_interval: Duration,
        window: Option<Window>,
        data_dir: &Path,
        roots: rustls::RootCertStore,
    ) -> AgentConfig {
        AgentConfig {
            update_url,
            check_interval,
            window,
            first_check_delay: Duration::from_secs(120),
            pubkey: PathBuf::from(super::DEFAULT_PUBKEY),
            release: PathBuf::from(super::DEFAULT_RELEASE),
            state_dir: data_dir.join("update"),
            health_window: DEFAULT_HEALTH_WINDOW,
            health_attempts: 5,
            health_retry_delay: Duration::from_secs(30),
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
    status.fail(reason);
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
}

/// The agent: see the module documentation. Returns when there is nothing more to do
/// (not an A/B image, or a reboot was requested).
pub async fn run(relay: Arc<Relay>, cfg: AgentConfig, status: Arc<UpdateStatus>) {
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
    if trial && !health_window(&relay, &cfg, boot.as_ref(), &status).await {
        return;
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

/// OTA-5 on a trial boot. True when committed (the agent goes on), false after a failure
/// (a reboot into the old slot was requested).
async fn health_window(
    relay: &Arc<Relay>,
    cfg: &AgentConfig,
    boot: &dyn BootControl,
    status: &UpdateStatus,
) -> bool {
    status.set_state("checking the new version (trial boot)");
    let deadline = Instant::now() + cfg.health_window;
    let mut reason = String::from("no health check could run within the window");
    for attempt in 1..=cfg.health_attempts.max(1) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match health::check_within(relay, left.min(health::TIMEOUT)).await {
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
                        return true;
                    }
                    Err(e) => {
                        reason = format!("cannot commit the new slot: {e}");
                        break;
                    }
                }
            }
            Err(e) => {
                tracing::warn!("update: health check {attempt} failed: {e}");
                reason = e.to_string();
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(cfg.health_retry_delay.min(left)).await;
    }
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
