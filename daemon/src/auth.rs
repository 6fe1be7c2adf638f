//! Logins and account auto-creation (spec/relay.md §4): canonical names, SHA512-CRYPT
//! hashes compatible with upstream, the creation rules, and a cache of verified logins
//! so reconnects do not re-hash.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha_crypt::{PasswordHasher, PasswordVerifier, ShaCrypt};
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::config::Config;
use crate::policy::names::{self, NameRules};
use crate::store::{Created, Store, StoreError};

/// Upstream stores `{SHA512-CRYPT}$6$…` (Dovecot scheme prefix; ACC-10).
const SCHEME: &str = "{SHA512-CRYPT}";

/// Failed logins per address before further failures of that address are answered
/// slowly; correct logins are never slowed (ACC-11).
const FREE_FAILURES: u32 = 5;
/// Longest delay added to a failed login.
const MAX_FAILURE_DELAY: Duration = Duration::from_secs(4);
/// Failures older than this are forgotten.
const FAILURE_WINDOW: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong password, unknown name that may not be created, or a refused name.
    #[error("authentication failed")]
    Failed,
    /// The store could not be reached: a temporary failure.
    #[error("temporary failure: {0}")]
    Temporary(#[from] StoreError),
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
    pub fn refusal(&self) -> Option<String> {
        if let Some(f) = self.kill_switch_files.iter().find(|f| f.exists()) {
            return Some(format!(
                "account creation disabled ({} exists)",
                f.display()
            ));
        }
        if let Some(load) = read_load_1m().filter(|l| *l > self.max_load_1m) {
            return Some(format!("load average {load} above {}", self.max_load_1m));
        }
        if let Some(avail) = read_mem_available().filter(|a| *a < self.min_available_memory) {
            return Some(format!(
                "available memory {avail} below {}",
                self.min_available_memory
            ));
        }
        if let Ok(st) = nix::sys::statvfs::statvfs(&self.data_dir) {
            let free = st.blocks_available() * st.fragment_size();
            if free < self.min_free_disk_space {
                return Some(format!(
                    "free disk space {free} below {}",
                    self.min_free_disk_space
                ));
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

/// Delay before answering the `count`-th recent failure of one address.
fn failure_delay(count: u32) -> Duration {
    let over = count.saturating_sub(FREE_FAILURES);
    if over == 0 {
        return Duration::ZERO;
    }
    (Duration::from_millis(250) * 2u32.pow(over.min(5) - 1)).min(MAX_FAILURE_DELAY)
}

#[derive(Default)]
struct Failures {
    count: u32,
    last: Option<Instant>,
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
    failures: Mutex<HashMap<String, Failures>>,
    /// Password hash computations so far (creations and verifications), for tests and
    /// metrics: a cached login adds none.
    hash_runs: std::sync::atomic::AtomicU64,
}

impl Auth {
    pub fn new(store: Store, config: &Config, clock: Arc<dyn Clock>) -> Auth {
        Auth {
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
            failures: Mutex::new(HashMap::new()),
            hash_runs: Default::default(),
        }
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

    /// Why account creation is refused right now (for `/new`, NEW-5), if it is.
    pub fn creation_refusal(&self) -> Option<String> {
        self.limits.refusal()
    }

    fn fingerprint(&self, address: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.cache_salt);
        h.update(address.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Log in, creating the account on first login when the rules allow (ACC-4..7).
    /// Returns the canonical address. Failed attempts of an address that keeps failing
    /// are answered after a growing delay.
    pub async fn login(&self, login: &str, password: &str) -> Result<String, AuthError> {
        let result = self.login_inner(login, password).await;
        if let Err(AuthError::Failed) = &result {
            let delay = self.note_failure(&login.to_ascii_lowercase());
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
        result
    }

    fn note_failure(&self, key: &str) -> Duration {
        let mut map = self.failures.lock().expect("failures lock");
        let now = Instant::now();
        if map.len() > 100_000 {
            map.retain(|_, f| f.last.is_some_and(|t| now - t < FAILURE_WINDOW));
        }
        let f = map.entry(key.to_string()).or_default();
        if f.last.is_some_and(|t| now - t > FAILURE_WINDOW) {
            f.count = 0;
        }
        f.count += 1;
        f.last = Some(now);
        failure_delay(f.count)
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
            crate::metrics::registration_refused();
            return Err(AuthError::Failed);
        }
        if let Some(reason) = self.limits.refusal() {
            tracing::warn!("registration rejected: {reason}");
            crate::metrics::registration_refused();
            return Err(AuthError::Failed);
        }
        self.count_hash();
        let pw = password.to_string();
        let hash = tokio::task::spawn_blocking(move || hash_password(&pw))
            .await
            .map_err(|e| AuthError::Temporary(StoreError::Db(e.to_string())))?;
        match self
            .store
            .create_account(address, &hash, self.clock.unix_now())
            .await?
        {
            Created::New => {
                tracing::info!("Created address: {address}");
                crate::metrics::account_created();
                Ok(None)
            }
            Created::Existing(account) => Ok(Some(account.password_hash)),
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
        let text = format!(
            "[params]\nmail_domain = 127.0.0.1\ndata_dir = {}\nmin_free_disk_space = 0\nmin_available_memory = 0\nmax_load_1m = 1000\n",
            dir.display()
        );
        let config = Config::parse(&text).unwrap().config;
        let store = Store::open(&dir.join("s.redb")).unwrap();
        Auth::new(store, &config, Arc::new(crate::clock::SystemClock))
    }

    #[tokio::test]
    async fn first_login_creates_then_cache_spares_rehashing() {
        let dir = tempfile::tempdir().unwrap();
        let auth = test_auth(dir.path());
        let addr = "abcdefghi@[127.0.0.1]";
        assert_eq!(
            auth.login("ABCDEFGHI@[127.0.0.1]", "password-1")
                .await
                .unwrap(),
            addr
        );
        assert_eq!(auth.hash_runs(), 1, "creation hashes once");
        for _ in 0..5 {
            auth.login(addr, "password-1").await.unwrap();
        }
        assert_eq!(auth.hash_runs(), 1, "cached logins do not re-hash");
        // A wrong password is checked against the hash and never overwrites it.
        assert!(matches!(
            auth.login(addr, "password-2").await,
            Err(AuthError::Failed)
        ));
        assert_eq!(auth.hash_runs(), 2);
        auth.login(addr, "password-1").await.unwrap();
        // Refused names create nothing.
        assert!(auth.login("short@[127.0.0.1]", "password-1").await.is_err());
        assert!(
            auth.login("abcdefghi@example.org", "password-1")
                .await
                .is_err()
        );
        assert!(auth.login("abcdefgh2@[127.0.0.1]", "short").await.is_err());
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
        auth.login("abcdefghi@[127.0.0.1]", "password-1")
            .await
            .unwrap();
        std::fs::write(dir.path().join("nocreate"), b"").unwrap();
        assert!(auth.creation_refusal().unwrap().contains("nocreate"));
        assert!(
            auth.login("zzzzzzzzz@[127.0.0.1]", "password-1")
                .await
                .is_err()
        );
        assert!(
            auth.store
                .account("zzzzzzzzz@[127.0.0.1]")
                .unwrap()
                .is_none()
        );
        auth.forget("abcdefghi@[127.0.0.1]");
        auth.login("abcdefghi@[127.0.0.1]", "password-1")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn ten_concurrent_first_logins_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Arc::new(test_auth(dir.path()));
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let auth = auth.clone();
                tokio::spawn(async move { auth.login("concurrnt@[127.0.0.1]", "password-1").await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    }

    #[test]
    fn failure_delay_grows_after_free_failures() {
        let delays: Vec<Duration> = (1..=10).map(failure_delay).collect();
        assert!(delays[..FREE_FAILURES as usize].iter().all(|d| d.is_zero()));
        assert_eq!(delays[5], Duration::from_millis(250));
        assert_eq!(delays[6], Duration::from_millis(500));
        assert_eq!(delays[9], MAX_FAILURE_DELAY);
    }
}
