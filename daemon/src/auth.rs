//! Logins and account auto-creation (spec/relay.md §4): canonical names, SHA512-CRYPT
//! hashes compatible with upstream, the creation rules, a cache of verified logins so
//! reconnects do not re-hash, and the per-address guessing brake every login passes.
//!
//! The brake (issue 13 point 5) is the admin pages' limiter
//! ([`relaybox_webui::limiter`]) with [`LOGIN_POLICY`]: each attempt of a client address
//! waits its turn *before* the password is looked at, right and wrong alike, once that
//! address has recent failures, so a guesser who gives up early learns nothing sooner.
//! A success keeps the address's failures ([`OnSuccess::Forgive`]): accounts are free to
//! create, and logging in to one's own between guesses must erase nothing. There is
//! deliberately no per-account brake: one that slows only wrong passwords answers right
//! ones faster (the bypass this replaces), and one that slows every login of an account
//! lets anyone lock its owner out. (This departs from spec/relay.md ACC-11, "MUST NOT
//! slow correct logins nor key on IP alone": a brake that lets correct logins through at
//! once tells a guesser which guess was right, so a correct login from an address with
//! recent failures waits its turn like any other; other addresses are not slowed.)
//!
//! Time: creation dates come from the injected clock (`crate::clock`, DESIGN.md
//! principle 5); the brake measures and waits on tokio's clock, because it sleeps, and
//! its tests pause and advance that clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use relaybox_webui::limiter::{Limiter, OnSuccess, Policy};
use sha_crypt::{PasswordHasher, PasswordVerifier, ShaCrypt};
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::config::Config;
use crate::policy::names::{self, NameRules};
use crate::signup::{Creation, SignUp};
use crate::store::{Store, StoreError};

/// Upstream stores `{SHA512-CRYPT}$6$…` (Dovecot scheme prefix; ACC-10).
const SCHEME: &str = "{SHA512-CRYPT}";

/// IMAP and SMTP logins per client address (IPv4 address, IPv6 /64): 5 attempts free,
/// then 1 s doubling to 30 s between attempts (at most 2 guesses a minute once the
/// delay is at its cap), one failure forgotten per minute; an attempt that would wait
/// more than 30 s is refused at once (clients time out around a minute).
pub const LOGIN_POLICY: Policy = Policy {
    free: 5,
    base: Duration::from_secs(1),
    max: Duration::from_secs(30),
    forget_every: Duration::from_secs(60),
    max_queue: Duration::from_secs(30),
    max_entries: 65_536,
    on_success: OnSuccess::Forgive,
};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong password, unknown name that may not be created, or a refused name.
    #[error("authentication failed")]
    Failed,
    /// The store could not be reached: a temporary failure.
    #[error("temporary failure: {0}")]
    Temporary(StoreError),
    /// Too many attempts from this client address are queued: refused without looking
    /// at the password; try again after about this long.
    #[error("too many login attempts from this address")]
    TooMany(Duration),
    /// The name is free and may be created, but creation is off (CFG-6) or paused by
    /// the system limits (ACC-5.6). Only an unknown name gets this: a known one is
    /// checked against its password as always, so this says no more than a successful
    /// creation at first login would have said (that the name was free).
    #[error("account creation refused: {0}")]
    CreationRefused(CreationRefusal),
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        match e {
            // The store's own check: a block committed after the check in `create`.
            StoreError::Blocked => AuthError::CreationRefused(CreationRefusal::Blocked),
            e => AuthError::Temporary(e),
        }
    }
}

/// Why account creation is refused right now (CFG-6, ACC-5.6). `Display` is the owner's
/// wording for the log and `/new` (it names the kill-switch file and the figures);
/// [`CreationRefusal::user_text`] is what a client shows its user.
#[derive(Debug, Clone, PartialEq)]
pub enum CreationRefusal {
    /// CFG-6: this kill-switch file exists: the owner turned sign-up off.
    Closed(PathBuf),
    /// The 1-minute load average is above `max_load_1m`.
    Load { load: f64, max: f64 },
    /// Less memory is available than `min_available_memory` (bytes).
    Memory { available: u64, min: u64 },
    /// Less disk space is free in `data_dir` than `min_free_disk_space` (bytes).
    Disk { free: u64, min: u64 },
    /// The operator blocked this address (`relaybox accounts block`).
    Blocked,
    /// Issue 18: the sign-up mode (`signup`, [`crate::signup`]) refuses it.
    SignUp(crate::signup::Refusal),
    /// Issue 17: the relay moves to another machine: accounts are made there.
    Moving,
}

impl CreationRefusal {
    /// Whether the refusal may go away without the owner doing anything: the system
    /// limits, yes (load and memory come and go; even a full disk is a condition of
    /// the server, not of the request); the kill switch and an operator's block, no.
    pub fn is_temporary(&self) -> bool {
        !matches!(
            self,
            CreationRefusal::Closed(_) | CreationRefusal::Blocked | CreationRefusal::SignUp(_)
        )
    }

    /// The reason label of `relaybox_registrations_refused_total`.
    pub fn metric(&self) -> crate::metrics::Registration {
        use crate::metrics::Registration;
        match self {
            CreationRefusal::Closed(_) => Registration::Closed,
            CreationRefusal::Load { .. } => Registration::Load,
            CreationRefusal::Memory { .. } => Registration::Memory,
            CreationRefusal::Disk { .. } => Registration::Disk,
            CreationRefusal::Blocked => Registration::Blocked,
            CreationRefusal::Moving => Registration::Moving,
            CreationRefusal::SignUp(r) => match r {
                crate::signup::Refusal::Closed => Registration::Closed,
                crate::signup::Refusal::Invite(_) => Registration::Invite,
                crate::signup::Refusal::Automatic => Registration::Automatic,
            },
        }
    }

    /// What the IMAP and SMTP answers say (Delta Chat shows the server's text in its
    /// configure error): one line in plain words, no paths. The figures stay in, so a
    /// user who passes the message on tells the owner which limit was hit.
    pub fn user_text(&self) -> String {
        const PAUSED: &str = "New accounts are paused on this relay";
        match self {
            CreationRefusal::Closed(_) => {
                "This relay does not create new accounts: its owner has turned sign-up off"
                    .to_string()
            }
            CreationRefusal::Load { load, max } => format!(
                "{PAUSED}: the server is too busy right now (load {load}, limit {max}). Try again later."
            ),
            CreationRefusal::Memory { available, min } => format!(
                "{PAUSED}: the server is low on memory ({} available, {} needed). Try again later.",
                bytes_text(*available),
                bytes_text(*min)
            ),
            CreationRefusal::Disk { free, min } => format!(
                "{PAUSED}: the server's disk is nearly full ({} free, {} needed). Its owner needs to make room.",
                bytes_text(*free),
                bytes_text(*min)
            ),
            CreationRefusal::Blocked => {
                "This address is blocked on this relay: its owner removed it for good".to_string()
            }
            CreationRefusal::SignUp(r) => r.user_text(),
            CreationRefusal::Moving => MOVED_TEXT.to_string(),
        }
    }
}

impl std::fmt::Display for CreationRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CreationRefusal::Closed(file) => {
                write!(f, "account creation disabled ({} exists)", file.display())
            }
            CreationRefusal::Load { load, max } => {
                write!(f, "load average {load} above max_load_1m = {max}")
            }
            CreationRefusal::Memory { available, min } => write!(
                f,
                "available memory {} below min_available_memory = {}",
                bytes_text(*available),
                bytes_text(*min)
            ),
            CreationRefusal::Disk { free, min } => write!(
                f,
                "free disk space {} below min_free_disk_space = {}",
                bytes_text(*free),
                bytes_text(*min)
            ),
            CreationRefusal::Blocked => {
                write!(f, "the address is blocked (relaybox accounts unblock)")
            }
            CreationRefusal::SignUp(r) => write!(f, "{r}"),
            CreationRefusal::Moving => write!(f, "the relay moves to another machine (moved_to)"),
        }
    }
}

/// What a client hears from a relay that moved (`relaybox move`): its accounts are served
/// by the new machine, which the relay's name points to soon.
pub const MOVED_TEXT: &str =
    "This relay is moving to a new machine. Try again in a few minutes.";

/// Bytes for people: under 1 MiB as bytes, under 1 GiB as whole MiB (rounded down),
/// else GiB with one decimal unless whole.
fn bytes_text(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * MIB;
    if bytes < MIB {
        format!("{bytes} bytes")
    } else if bytes < GIB {
        format!("{} MiB", bytes / MIB)
    } else if bytes.is_multiple_of(GIB) {
        format!("{} GiB", bytes / GIB)
    } else {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    }
}

/// The ACC-5.6 system limits.
#[derive(Debug, Clone)]
pub struct CreationLimits {
    pub max_load_1m: f64,
    pub min_available_memory: u64,
    pub min_free_disk_space: u64,
    /// The directory whose file system must have `min_free_disk_space` free.
    pub data_dir: PathBuf,
    /// CFG-6: creation is refused while any of these files exists.
    pub kill_switch_files: Vec<PathBuf>,
}

impl CreationLimits {
    pub fn from_config(config: &Config) -> Self {
        CreationLimits {
            max_load_1m: config.max_load_1m,
            min_available_memory: config.min_available_memory,
            min_free_disk_space: config.min_free_disk_space,
            data_dir: config.data_dir.clone(),
            kill_switch_files: vec![
                PathBuf::from("/etc/chatmail-nocreate"),
                config.data_dir.join("nocreate"),
            ],
        }
    }

    /// CFG-6 and ACC-5.6: the reason creation is refused now, if it is. A value that
    /// cannot be read is ignored.
    pub fn refusal(&self) -> Option<CreationRefusal> {
        if let Some(f) = self.kill_switch_files.iter().find(|f| f.exists()) {
            return Some(CreationRefusal::Closed(f.clone()));
        }
        if let Some(load) = read_load_1m().filter(|l| *l > self.max_load_1m) {
            return Some(CreationRefusal::Load {
                load,
                max: self.max_load_1m,
            });
        }
        if let Some(available) = read_mem_available().filter(|a| *a < self.min_available_memory) {
            return Some(CreationRefusal::Memory {
                available,
                min: self.min_available_memory,
            });
        }
        if let Ok(st) = nix::sys::statvfs::statvfs(&self.data_dir) {
            let free = st.blocks_available() * st.fragment_size();
            if free < self.min_free_disk_space {
                return Some(CreationRefusal::Disk {
                    free,
                    min: self.min_free_disk_space,
                });
            }
        }
        None
    }
}

fn read_load_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn read_mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Make a `{SHA512-CRYPT}$6$<salt>$<hash>` string (5000 rounds, upstream's form).
pub fn hash_password(password: &str) -> String {
    // 12 random bytes are 16 salt characters once crypt-base64 encoded (glibc's maximum).
    let salt: [u8; 12] = rand::random();
    let hash = ShaCrypt::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .expect("sha512-crypt with a valid salt");
    // 5000 rounds is crypt's default; upstream's hashes leave it implicit.
    let hash = hash.as_str().replacen("$rounds=5000$", "$", 1);
    format!("{SCHEME}{hash}")
}

/// Check a password against a stored hash (with or without the scheme prefix).
pub fn verify_password(password: &str, stored: &str) -> bool {
    let crypt = stored.strip_prefix(SCHEME).unwrap_or(stored);
    ShaCrypt::default()
        .verify_password(password.as_bytes(), crypt)
        .is_ok()
}

/// Login service shared by IMAP, SMTP and HTTP.
pub struct Auth {
    store: Store,
    rules: NameRules,
    limits: CreationLimits,
    clock: Arc<dyn Clock>,
    /// address → SHA-256(salt ‖ password) of the last verified login.
    verified: Mutex<HashMap<String, [u8; 32]>>,
    cache_salt: [u8; 16],
    /// The per-address brake (module doc).
    limiter: Limiter,
    /// Issue 18: the sign-up mode and the invites (the status page changes them live).
    signup: SignUp,
    /// Password hash computations so far (creations and verifications), for tests and
    /// metrics: a cached login adds none.
    hash_runs: std::sync::atomic::AtomicU64,
    /// When each kind of creation refusal was last logged as a warning
    /// ([`REFUSAL_WARNING_EVERY`]; unix seconds of the injected clock: a jump of the
    /// wall clock at worst warns once too often or too seldom).
    refusal_warned: Mutex<HashMap<crate::metrics::Registration, u64>>,
    /// Issue 17: no account is created while the relay moves.
    moving: Option<Arc<crate::moving::Moving>>,
}

/// A refused creation is a warning (the status page's "recent problems", LW-2) at most
/// this often per kind; the others are logged at `info` and all are counted in
/// `relaybox_registrations_refused_total`. A client retrying, or anyone trying names
/// while sign-up is closed, must not push every other problem off the status page.
const REFUSAL_WARNING_EVERY: Duration = Duration::from_secs(60);

impl Auth {
    pub fn new(store: Store, config: &Config, clock: Arc<dyn Clock>) -> Auth {
        Auth {
            signup: SignUp::new(store.clone(), config.signup, clock.clone()),
            store,
            rules: NameRules {
                address_domain: config.address_domain(),
                username_min_length: config.username_min_length,
                username_max_length: config.username_max_length,
                password_min_length: config.password_min_length,
            },
            limits: CreationLimits::from_config(config),
            clock,
            verified: Mutex::new(HashMap::new()),
            cache_salt: rand::random(),
            limiter: Limiter::new(LOGIN_POLICY),
            hash_runs: Default::default(),
            refusal_warned: Mutex::new(HashMap::new()),
            moving: None,
        }
    }

    /// Refuse account creation while `moving` says the relay moves.
    pub fn with_moving(mut self, moving: Arc<crate::moving::Moving>) -> Auth {
        self.moving = Some(moving);
        self
    }

    /// How many password hashes were computed so far.
    pub fn hash_runs(&self) -> u64 {
        self.hash_runs.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count_hash(&self) {
        self.hash_runs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn rules(&self) -> &NameRules {
        &self.rules
    }

    /// Why account creation is refused right now, if it is: logged (a warning at most
    /// once per [`REFUSAL_WARNING_EVERY`] and kind) and counted. Every creation path
    /// asks here: first login and `/new` (NEW-5).
    pub fn creation_refusal(&self) -> Option<CreationRefusal> {
        let refusal = match &self.moving {
            Some(m) if m.is_moving() => CreationRefusal::Moving,
            _ => self.limits.refusal()?,
        };
        self.refused(&refusal);
        Some(refusal)
    }

    /// Log and count a refused creation.
    fn refused(&self, refusal: &CreationRefusal) {
        self.log_refusal(refusal);
        crate::metrics::registration_refused(refusal.metric());
    }

    /// The sign-up mode and the invites (issue 18; the status page's operator actions).
    pub fn signup(&self) -> &SignUp {
        &self.signup
    }

    /// NEW-5 and issue 18: why `/new`, asked with this invite token, would be refused
    /// now — the system limits and kill switch ([`Auth::creation_refusal`]), then the
    /// sign-up mode (an invite is looked at, not used: its use is taken at the first
    /// login). Logged and counted.
    pub fn new_account_refusal(
        &self,
        invite: Option<&str>,
    ) -> Result<Option<CreationRefusal>, StoreError> {
        if let Some(r) = self.creation_refusal() {
            return Ok(Some(r));
        }
        let Some(r) = self.signup.new_account_refusal(invite)? else {
            return Ok(None);
        };
        let refusal = CreationRefusal::SignUp(r);
        self.refused(&refusal);
        Ok(Some(refusal))
    }

    fn fingerprint(&self, address: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.cache_salt);
        h.update(address.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Log in from `client`, creating the account on first login when the rules allow
    /// (ACC-4..7). Returns the canonical address. The attempt first waits its turn
    /// among the attempts of `client`'s address (module doc).
    pub async fn login(
        &self,
        login: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<String, AuthError> {
        let attempt = self
            .limiter
            .wait_turn(client)
            .await
            .map_err(AuthError::TooMany)?;
        let result = self.login_inner(login, password).await;
        match &result {
            Ok(_) => attempt.succeeded(),
            Err(AuthError::Failed) => attempt.failed(),
            // A refused creation, like a store failure, checked no password: no guess
            // was made, so the address's brake does not move.
            Err(_) => attempt.void(),
        }
        result
    }

    /// Recent failed logins of `client`'s address (tests, metrics).
    pub fn recent_failures(&self, client: IpAddr) -> u32 {
        self.limiter.failures(client)
    }

    async fn login_inner(&self, login: &str, password: &str) -> Result<String, AuthError> {
        let address = names::canonical_login(login, &self.rules).map_err(|_| AuthError::Failed)?;
        let fp = self.fingerprint(&address, password);
        if self.verified.lock().expect("cache lock").get(&address) == Some(&fp) {
            return Ok(address);
        }
        let stored = match self.store.account(&address)? {
            Some(account) => account.password_hash,
            None => match self.create(&address, password).await? {
                None => return self.remember(address, fp),
                Some(existing) => existing,
            },
        };
        self.count_hash();
        let pw = password.to_string();
        let ok = tokio::task::spawn_blocking(move || verify_password(&pw, &stored))
            .await
            .unwrap_or(false);
        if ok {
            self.remember(address, fp)
        } else {
            Err(AuthError::Failed)
        }
    }

    fn remember(&self, address: String, fp: [u8; 32]) -> Result<String, AuthError> {
        let mut cache = self.verified.lock().expect("cache lock");
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(address.clone(), fp);
        Ok(address)
    }

    /// Try to create the account. `Ok(None)`: created with this password.
    /// `Ok(Some(hash))`: it exists (a concurrent login won); verify against `hash`.
    async fn create(&self, address: &str, password: &str) -> Result<Option<String>, AuthError> {
        if let Err(reason) = names::may_create(address, password, &self.rules) {
            tracing::info!("registration rejected: {reason}");
            crate::metrics::registration_refused(crate::metrics::Registration::Name);
            return Err(AuthError::Failed);
        }
        if let Some(refusal) = self.creation_refusal() {
            return Err(AuthError::CreationRefused(refusal));
        }
        // Blocked by the operator (the store refuses it again in the creating commit).
        if self.store.is_blocked(address)? {
            let refusal = CreationRefusal::Blocked;
            self.refused(&refusal);
            return Err(AuthError::CreationRefused(refusal));
        }
        // Issue 18: the sign-up mode; a missing or unusable invite costs no hash.
        let admission = match self.signup.admission(password)? {
            Ok(admission) => admission,
            Err(r) => {
                // A concurrent first login of the same account (Delta Chat logs in to
                // IMAP and SMTP at once) may have used the invite's last use for it:
                // then this is a login to that account, not a creation.
                if let Some(account) = self.store.account(address)? {
                    return Ok(Some(account.password_hash));
                }
                let refusal = CreationRefusal::SignUp(r);
                self.refused(&refusal);
                return Err(AuthError::CreationRefused(refusal));
            }
        };
        self.count_hash();
        let pw = password.to_string();
        let hash = tokio::task::spawn_blocking(move || hash_password(&pw))
            .await
            .map_err(|e| AuthError::Temporary(StoreError::Db(e.to_string())))?;
        match self.signup.create(admission, address, &hash).await? {
            Creation::New => {
                tracing::info!("Created address: {address}");
                crate::metrics::account_created();
                Ok(None)
            }
            Creation::Existing(hash) => Ok(Some(hash)),
            // The invite went (used up, revoked, expired) between the look and the commit.
            Creation::Refused(r) => {
                let refusal = CreationRefusal::SignUp(r);
                self.refused(&refusal);
                Err(AuthError::CreationRefused(refusal))
            }
        }
    }

    /// Log a refused creation: a warning, so the owner sees it among the status page's
    /// recent problems, unless one of its kind was warned of within
    /// [`REFUSAL_WARNING_EVERY`].
    fn log_refusal(&self, refusal: &CreationRefusal) {
        let now = self.clock.unix_now();
        let warn = {
            let mut warned = self.refusal_warned.lock().expect("refusal lock");
            let due = warned
                .get(&refusal.metric())
                .is_none_or(|at| now.abs_diff(*at) >= REFUSAL_WARNING_EVERY.as_secs());
            if due {
                warned.insert(refusal.metric(), now);
            }
            due
        };
        if warn {
            tracing::warn!("registration rejected: {refusal}");
        } else {
            tracing::info!("registration rejected: {refusal}");
        }
    }

    /// Drop a cached login (account deleted).
    pub fn forget(&self, address: &str) {
        self.verified.lock().expect("cache lock").remove(address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_has_upstream_form_and_verifies() {
        let h = hash_password("secret-password");
        assert!(h.starts_with("{SHA512-CRYPT}$6$"), "{h}");
        assert!(
            !h.contains("rounds="),
            "default 5000 rounds are implicit: {h}"
        );
        assert!(verify_password("secret-password", &h));
        assert!(!verify_password("secret-passwore", &h));
    }

    #[test]
    fn agrees_with_glibc_crypt() {
        // glibc's crypt(3) (what Dovecot's `doveadm pw -s SHA512-CRYPT` uses), through
        // Python's crypt module, as an independent reference.
        let out = std::process::Command::new("python3")
            .args([
                "-W",
                "ignore",
                "-c",
                "import crypt;print(crypt.crypt('pass word', '$6$XJgRxlp8Wz4NP4pV'))",
            ])
            .output()
            .expect("python3");
        let glibc = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(glibc.starts_with("$6$XJgRxlp8Wz4NP4pV$"), "{glibc}");
        assert!(verify_password("pass word", &format!("{SCHEME}{glibc}")));
        assert!(verify_password("pass word", &glibc));
        assert!(!verify_password("pass-word", &glibc));
        // And glibc accepts ours.
        let ours = hash_password("pass word");
        let crypt = ours.strip_prefix(SCHEME).unwrap();
        let out = std::process::Command::new("python3")
            .args([
                "-W",
                "ignore",
                "-c",
                &format!("import crypt;print(crypt.crypt('pass word', '{crypt}'))"),
            ])
            .output()
            .expect("python3");
        assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), crypt);
    }

    fn test_auth(dir: &std::path::Path) -> Auth {
        test_auth_with_clock(dir, Arc::new(crate::clock::SystemClock))
    }

    fn test_auth_with_clock(dir: &std::path::Path, clock: Arc<dyn Clock>) -> Auth {
        let text = format!(
            "[params]\nmail_domain = 127.0.0.1\ndata_dir = {}\nmin_free_disk_space = 0\nmin_available_memory = 0\nmax_load_1m = 1000\n",
            dir.display()
        );
        let config = Config::parse(&text).unwrap().config;
        let store = Store::open(&dir.join("s.redb")).unwrap();
        Auth::new(store, &config, clock)
    }

    /// Account creation reads the injected clock, not the system's: a new account's
    /// login day (LL-1, the start of EXP-1's count) is the day of the relay's clock, and
    /// moves when that clock does.
    #[tokio::test]
    async fn creation_dates_come_from_the_injected_clock() {
        const DAY: u64 = 86_400;
        // 2001-09-09, far from any system clock this test runs under.
        let day = 11_574 * DAY;
        let dir = tempfile::tempdir().unwrap();
        let clock = crate::testing::ManualClock::at(day + 5_000);
        let auth = test_auth_with_clock(dir.path(), clock.clone());
        let login_day = |address: &str| {
            auth.store
                .account(address)
                .unwrap()
                .expect("created")
                .last_login_day
        };
        let first = "firstacct@[127.0.0.1]";
        auth.login(first, "password-1", LOCAL).await.unwrap();
        assert_eq!(login_day(first), day);
        clock.advance(3 * DAY);
        let second = "secondacc@[127.0.0.1]";
        auth.login(second, "password-1", LOCAL).await.unwrap();
        assert_eq!(login_day(second), day + 3 * DAY);
        assert_eq!(
            login_day(first),
            day,
            "a login does not move the creation day"
        );
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn first_login_creates_then_cache_spares_rehashing() {
        let dir = tempfile::tempdir().unwrap();
        let auth = test_auth(dir.path());
        let addr = "abcdefghi@[127.0.0.1]";
        assert_eq!(
            auth.login("ABCDEFGHI@[127.0.0.1]", "password-1", LOCAL)
                .await
                .unwrap(),
            addr
        );
        assert_eq!(auth.hash_runs(), 1, "creation hashes once");
        for _ in 0..5 {
            auth.login(addr, "password-1", LOCAL).await.unwrap();
        }
        assert_eq!(auth.hash_runs(), 1, "cached logins do not re-hash");
        // A wrong password is checked against the hash and never overwrites it.
        assert!(matches!(
            auth.login(addr, "password-2", LOCAL).await,
            Err(AuthError::Failed)
        ));
        assert_eq!(auth.hash_runs(), 2);
        auth.login(addr, "password-1", LOCAL).await.unwrap();
        // Refused names create nothing.
        assert!(
            auth.login("short@[127.0.0.1]", "password-1", LOCAL)
                .await
                .is_err()
        );
        assert!(
            auth.login("abcdefghi@example.org", "password-1", LOCAL)
                .await
                .is_err()
        );
        assert!(
            auth.login("abcdefgh2@[127.0.0.1]", "short", LOCAL)
                .await
                .is_err()
        );
        assert!(auth.store.account("short@[127.0.0.1]").unwrap().is_none());
        assert!(
            auth.store
                .account("abcdefgh2@[127.0.0.1]")
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn kill_switch_blocks_creation_not_logins() {
        let dir = tempfile::tempdir().unwrap();
        let auth = test_auth(dir.path());
        auth.login("abcdefghi@[127.0.0.1]", "password-1", LOCAL)
            .await
            .unwrap();
        std::fs::write(dir.path().join("nocreate"), b"").unwrap();
        let refusal = auth.creation_refusal().unwrap();
        assert!(refusal.to_string().contains("nocreate"), "{refusal}");
        assert!(!refusal.is_temporary());
        // Issue 16: an unknown name hears why, not "authentication failed" ...
        match auth
            .login("zzzzzzzzz@[127.0.0.1]", "password-1", LOCAL)
            .await
        {
            Err(AuthError::CreationRefused(r)) => {
                assert_eq!(r, refusal);
                assert!(
                    r.user_text()
                        .starts_with("This relay does not create new accounts"),
                    "{}",
                    r.user_text()
                );
                assert!(!r.user_text().contains('/'), "no path: {}", r.user_text());
            }
            other => panic!("{other:?}"),
        }
        // ... a known one with a wrong password still fails as always ...
        auth.forget("abcdefghi@[127.0.0.1]");
        assert!(matches!(
            auth.login("abcdefghi@[127.0.0.1]", "password-2", LOCAL)
                .await,
            Err(AuthError::Failed)
        ));
        // ... and a name the rules refuse anyway is a plain failure too.
        assert!(matches!(
            auth.login("short@[127.0.0.1]", "password-1", LOCAL).await,
            Err(AuthError::Failed)
        ));
        // The refusals checked no password: only the wrong one and the refused name
        // count on the address's brake.
        assert_eq!(auth.recent_failures(LOCAL), 2);
        assert!(
            auth.store
                .account("zzzzzzzzz@[127.0.0.1]")
                .unwrap()
                .is_none()
        );
        auth.forget("abcdefghi@[127.0.0.1]");
        auth.login("abcdefghi@[127.0.0.1]", "password-1", LOCAL)
            .await
            .unwrap();
    }

    /// Issue 16: a refused creation reaches the status page's recent problems (the
    /// log's warnings, `logs::recent_problems`), once per minute per kind however often
    /// it is asked.
    #[tokio::test]
    async fn a_refusal_is_a_recent_problem_once_a_minute() {
        use tracing_subscriber::layer::SubscriberExt;
        let logs = Arc::new(crate::logs::Logs::new(
            Box::new(std::io::sink()),
            crate::logs::Stderr::Off,
        ));
        let _guard = tracing::subscriber::set_default(
            tracing_subscriber::registry().with(crate::logs::layer(logs.clone())),
        );
        let dir = tempfile::tempdir().unwrap();
        let clock = crate::testing::ManualClock::at(1_800_000_000);
        let auth = test_auth_with_clock(dir.path(), clock.clone());
        std::fs::write(dir.path().join("nocreate"), b"").unwrap();
        let problems = || logs.recent_at_least(tracing::Level::WARN, 20);
        for i in 0..5 {
            let name = format!("refused{i:02}@[127.0.0.1]");
            assert!(matches!(
                auth.login(&name, "password-1", LOCAL).await,
                Err(AuthError::CreationRefused(_))
            ));
        }
        let p = problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("registration rejected: account creation disabled"),
            "{p:?}"
        );
        assert!(p[0].contains("nocreate exists"), "{p:?}");
        clock.advance(60);
        assert!(
            auth.login("refused99@[127.0.0.1]", "password-1", LOCAL)
                .await
                .is_err()
        );
        assert_eq!(problems().len(), 2);
    }

    /// ACC-5.6 limits (issue 16): a temporary refusal with a plain reason and the
    /// figures, no path.
    #[tokio::test]
    async fn system_limits_refuse_creation_with_a_temporary_reason() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[params]\nmail_domain = 127.0.0.1\ndata_dir = {}\nmin_free_disk_space = 100000000G\nmin_available_memory = 0\nmax_load_1m = 1000\n",
            dir.path().display()
        );
        let config = Config::parse(&text).unwrap().config;
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let auth = Auth::new(store, &config, Arc::new(crate::clock::SystemClock));
        match auth
            .login("abcdefghi@[127.0.0.1]", "password-1", LOCAL)
            .await
        {
            Err(AuthError::CreationRefused(r @ CreationRefusal::Disk { .. })) => {
                assert!(r.is_temporary());
                let text = r.user_text();
                assert!(
                    text.starts_with("New accounts are paused on this relay: "),
                    "{text}"
                );
                assert!(text.contains("100000000 GiB needed"), "{text}");
                assert_eq!(
                    [
                        bytes_text(1000),
                        bytes_text(200 * 1024 * 1024),
                        bytes_text(1 << 30),
                        bytes_text(3 << 29)
                    ],
                    ["1000 bytes", "200 MiB", "1 GiB", "1.5 GiB"]
                );
                assert!(r.to_string().contains("min_free_disk_space"), "{r}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            auth.store
                .account("abcdefghi@[127.0.0.1]")
                .unwrap()
                .is_none()
        );
        assert_eq!(auth.recent_failures(LOCAL), 0);
    }

    /// Issue 18: the sign-up modes at first login, changed live; existing accounts log in
    /// whatever the mode; a refusal says why and checks no password.
    #[tokio::test]
    async fn signup_modes_decide_first_logins() {
        use crate::signup::{InviteProblem, Mode, Refusal, invite_password};
        let dir = tempfile::tempdir().unwrap();
        let auth = test_auth(dir.path());
        let known = "knownacct@[127.0.0.1]";
        auth.login(known, "password-1", LOCAL).await.unwrap();
        let refused = |r: Result<String, AuthError>| match r {
            Err(AuthError::CreationRefused(CreationRefusal::SignUp(r))) => r,
            other => panic!("{other:?}"),
        };
        let signup = auth.signup();
        signup.set_mode(Mode::Closed, None).unwrap();
        let r = refused(
            auth.login("closed001@[127.0.0.1]", "password-1", LOCAL)
                .await,
        );
        assert_eq!(r, Refusal::Closed);
        auth.forget(known);
        auth.login(known, "password-1", LOCAL).await.unwrap();

        signup.set_mode(Mode::NoAutomatic, None).unwrap();
        let auto = "abcdefghijKLMNOPQRST123";
        let r = refused(auth.login("autorelay@[127.0.0.1]", auto, LOCAL).await);
        assert_eq!(r, Refusal::Automatic);
        assert!(
            CreationRefusal::SignUp(r)
                .user_text()
                .contains("automatic relay selection")
        );
        auth.login("manualacc@[127.0.0.1]", &auto[..22], LOCAL)
            .await
            .unwrap();

        signup.set_mode(Mode::Invite, None).unwrap();
        let r = refused(
            auth.login("noinvite1@[127.0.0.1]", "password-1", LOCAL)
                .await,
        );
        assert_eq!(r, Refusal::Invite(InviteProblem::Missing));
        let invite = signup.create_invite(1, 1, "").await.unwrap();
        let pw = invite_password(&invite.token, "secret-1");
        auth.login("invited01@[127.0.0.1]", &pw, LOCAL)
            .await
            .unwrap();
        // The invited account logs in again (cached or not); its invite is used up.
        auth.forget("invited01@[127.0.0.1]");
        auth.login("invited01@[127.0.0.1]", &pw, LOCAL)
            .await
            .unwrap();
        // Delta Chat logs in to IMAP and SMTP at once: a creation attempt that lost the
        // race to the login that took the invite's last use is a login to that account
        // (the real core met this: SMTP was refused "used up" for its own new account).
        match auth.create("invited01@[127.0.0.1]", &pw).await {
            Ok(Some(hash)) => assert!(verify_password(&pw, &hash)),
            other => panic!("{other:?}"),
        }
        let pw2 = invite_password(&invite.token, "secret-2");
        let r = refused(auth.login("invited02@[127.0.0.1]", &pw2, LOCAL).await);
        assert_eq!(r, Refusal::Invite(InviteProblem::UsedUp));
        let forged = invite_password(&crate::signup::new_token(), "secret-3");
        let r = refused(auth.login("invited03@[127.0.0.1]", &forged, LOCAL).await);
        assert_eq!(r, Refusal::Invite(InviteProblem::Unknown));
        assert_eq!(signup.invites().unwrap()[0].uses, 1);
        assert_eq!(auth.store.account_count().unwrap(), 3);
        assert_eq!(
            auth.recent_failures(LOCAL),
            0,
            "refusals checked no password"
        );
    }

    #[tokio::test]
    async fn ten_concurrent_first_logins_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Arc::new(test_auth(dir.path()));
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let auth = auth.clone();
                tokio::spawn(async move {
                    auth.login("concurrnt@[127.0.0.1]", "password-1", LOCAL)
                        .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));
    const VICTIM: &str = "victimacc@[127.0.0.1]";
    const OWN: &str = "attackers@[127.0.0.1]";

    /// Time one login (virtual time): the answer and how long it took.
    async fn timed(
        auth: &Auth,
        login: &str,
        password: &str,
        client: IpAddr,
    ) -> (Result<String, AuthError>, Duration) {
        let t0 = tokio::time::Instant::now();
        let r = auth.login(login, password, client).await;
        (r, t0.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn right_and_wrong_passwords_wait_the_same_turn_per_address() {
        let dir = tempfile::tempdir().unwrap();
        let auth = test_auth(dir.path());
        auth.login(VICTIM, "password-1", B).await.unwrap();
        // Five wrong guesses from A are free.
        for _ in 0..LOGIN_POLICY.free {
            let (r, took) = timed(&auth, VICTIM, "guess-guess", A).await;
            assert!(matches!(r, Err(AuthError::Failed)));
            assert_eq!(took, Duration::ZERO);
        }
        // The next attempt waits 1 s before the password is looked at — the right
        // password too, so a guesser who does not wait learns nothing sooner.
        let (r, took) = timed(&auth, VICTIM, "password-1", A).await;
        assert_eq!(r.unwrap(), VICTIM);
        assert_eq!(took, Duration::from_secs(1));
        // The success did not count as a failure (nor erase any): the next attempt is
        // the 6th again.
        let (r, took) = timed(&auth, VICTIM, "guess-guess", A).await;
        assert!(matches!(r, Err(AuthError::Failed)));
        assert_eq!(took, Duration::from_secs(1));
        let (r, took) = timed(&auth, VICTIM, "guess-guess", A).await;
        assert!(matches!(r, Err(AuthError::Failed)));
        assert_eq!(took, Duration::from_secs(2), "the 7th attempt: 2 s");
        // The owner logging in from elsewhere is not slowed at all.
        let (r, took) = timed(&auth, VICTIM, "password-1", B).await;
        assert_eq!(r.unwrap(), VICTIM);
        assert_eq!(took, Duration::ZERO);
        // Waiting the delay out costs nothing.
        tokio::time::advance(Duration::from_secs(10)).await;
        let (r, took) = timed(&auth, VICTIM, "password-1", A).await;
        assert!(r.is_ok());
        assert_eq!(took, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn an_own_account_between_guesses_erases_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let auth = test_auth(dir.path());
        auth.login(VICTIM, "password-1", B).await.unwrap();
        auth.login(OWN, "own-password", A).await.unwrap();
        let mut waited = Duration::ZERO;
        for _ in 0..8 {
            let (r, took) = timed(&auth, VICTIM, "guess-guess", A).await;
            assert!(matches!(r, Err(AuthError::Failed)));
            waited += took;
            let (r, took) = timed(&auth, OWN, "own-password", A).await;
            assert!(r.is_ok());
            waited += took;
        }
        assert_eq!(auth.recent_failures(A), 8, "successes keep the failures");
        // 5 guesses free; then each own login and the guess after it wait the delay of
        // the failures so far: 1 + 1, 2 + 2, 4 + 4, and 8 for the last login (a reset
        // on success would have made every guess free).
        assert_eq!(waited, Duration::from_secs(22));
    }

    #[tokio::test(start_paused = true)]
    async fn parallel_guessers_get_no_more_turns_and_a_flood_is_refused_unchecked() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Arc::new(test_auth(dir.path()));
        auth.login(VICTIM, "password-1", B).await.unwrap();
        let hashes = auth.hash_runs();
        // 20 connections guess at once, 3 rounds.
        let mut answered = 0;
        let mut refused = 0;
        for _ in 0..3 {
            let tasks: Vec<_> = (0..20)
                .map(|i| {
                    let auth = auth.clone();
                    tokio::spawn(
                        async move { auth.login(VICTIM, &format!("guess-{i:04}"), A).await },
                    )
                })
                .collect();
            for t in tasks {
                match t.await.unwrap() {
                    Err(AuthError::Failed) => answered += 1,
                    Err(AuthError::TooMany(_)) => refused += 1,
                    other => panic!("{other:?}"),
                }
            }
        }
        // Checked: in the first round 5 at once, then those at 1, 3, 7 and 15 s (the
        // next would wait 31 s, over the 30 s queue); then one per round, 16 and 30 s
        // after the last. Every other guess was refused without a password check.
        assert_eq!(auth.hash_runs() - hashes, answered);
        assert_eq!(answered, 11);
        assert_eq!(answered + refused, 60);
    }
}
