//! Relays as separate hosts for the federation tests (issue 3): each relay runs the real
//! `relaybox` binary ([`crate::relay::binary`]) on its own loopback address
//! (`127.a.b.2`, `127.a.b.3`, …) with every service on its standard port (25, 587, 465,
//! 143, 993, 443, 80), so relays reach each other exactly as on the Internet: MX and A
//! records from a private dnsmasq ([`crate::dns`]), certificates from a test CA
//! ([`crate::ca`]) trusted through `tls_extra_roots`. IP-only relays need neither.
//!
//! Each test takes a fresh `127.a.b.0/24` ([`Net::fresh`]: `a` from the process id,
//! `b` from a process-wide counter, checked free by binding port 25) so tests run in
//! parallel. Everything started here is killed on drop, also when a test panics.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tempfile::TempDir;
use tokio::time::Instant;

use crate::ca::TestCa;
use crate::conn::LineConn;
use crate::dns::{Dns, Zone, dkim_txt_from_zone};
use crate::imap::Imap;
use crate::mail::{Account, random_string};
use crate::smtp::{Reply, Smtp};

/// How long a relay may take to accept connections after being spawned.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one delivery between relays may take in the tests (retries included).
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// The standard ports (spec/relay.md §1).
pub const SMTP: u16 = 25;
pub const SUBMISSION: u16 = 587;
pub const SUBMISSIONS: u16 = 465;
pub const IMAP: u16 = 143;
pub const IMAPS: u16 = 993;
pub const HTTPS: u16 = 443;
pub const HTTP: u16 = 80;
/// Every listener's config key prefix with its standard port (`<key>_listen`).
pub const LISTENERS: [(&str, u16); 7] = [
    ("smtp", SMTP),
    ("submission", SUBMISSION),
    ("submissions", SUBMISSIONS),
    ("imap", IMAP),
    ("imaps", IMAPS),
    ("https", HTTPS),
    ("http", HTTP),
];

/// chatmail.ini lines putting every listener of [`LISTENERS`] on `ip` at its standard port.
pub fn standard_listeners(ip: std::net::Ipv4Addr) -> String {
    LISTENERS
        .iter()
        .map(|(key, port)| format!("{key}_listen = {ip}:{port}\n"))
        .collect()
}
/// The metrics endpoint (`mtail_address`, LOG-5; the default port).
pub const METRICS: u16 = 3903;

/// Short retry times so the fault tests see retries within seconds (OUT-6 keys).
pub const FAST_RETRY: [&str; 3] = [
    "minimal_backoff_time = 1s",
    "maximal_backoff_time = 2s",
    "maximal_queue_lifetime = 1h",
];

static NEXT_NET: AtomicU32 = AtomicU32::new(0);

/// A loopback /24 of one test: `127.a.b.0`.
#[derive(Debug, Clone, Copy)]
pub struct Net {
    pub a: u8,
    pub b: u8,
}

impl Net {
    /// A /24 not used by another test of this process (counter) or, as far as port 25
    /// shows, of another process (`a` from the pid in 100..=199; Python uses 200..).
    pub fn fresh() -> Net {
        let a = 100 + (std::process::id() % 100) as u8;
        for _ in 0..250 {
            let b = 1 + (NEXT_NET.fetch_add(1, Ordering::Relaxed) % 250) as u8;
            let net = Net { a, b };
            // Free when the hosts' port 25 can be bound (held together, then released).
            let probes: Vec<_> = (2..=5)
                .map(|h| TcpListener::bind(SocketAddr::new(IpAddr::V4(net.host(h)), SMTP)))
                .collect();
            if probes.iter().all(|p| p.is_ok()) {
                return net;
            }
        }
        panic!("no free loopback network 127.{a}.x.0/24 (port 25 taken everywhere)");
    }

    /// `127.a.b.<h>`.
    pub fn host(&self, h: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, self.a, self.b, h)
    }

    /// A short tag for names in this network (`105-3`).
    pub fn tag(&self) -> String {
        format!("{}-{}", self.a, self.b)
    }
}

/// One relay on its own loopback address. Dropping it kills the process.
pub struct FedRelay {
    dir: TempDir,
    /// The address every listener binds.
    pub ip: Ipv4Addr,
    /// `mail_domain`: a DNS name, or the IPv4 address in IP-only mode.
    pub mail_domain: String,
    /// Extra `[params]` lines (a line for a key replaces the default for that key).
    pub extra: Vec<String>,
    child: Option<Child>,
    runs: u32,
}

impl FedRelay {
    /// A relay (not started) at `ip` for `mail_domain` with `extra` config lines.
    pub fn new(ip: Ipv4Addr, mail_domain: &str, extra: &[String]) -> FedRelay {
        let dir = tempfile::Builder::new()
            .prefix("relaybox-fed-")
            .tempdir()
            .expect("create temp dir");
        let r = FedRelay {
            dir,
            ip,
            mail_domain: mail_domain.to_string(),
            extra: extra.to_vec(),
            child: None,
            runs: 0,
        };
        std::fs::write(r.config_path(), r.config_text()).expect("write chatmail.ini");
        r
    }

    /// An IP-only relay (`mail_domain = <ip>`, MODE-1), started.
    pub async fn start_ip_only(ip: Ipv4Addr, extra: &[String]) -> FedRelay {
        let mut r = FedRelay::new(ip, &ip.to_string(), extra);
        r.start().await;
        r
    }

    /// The domain of addresses: `<domain>`, or `[<ip>]` in IP-only mode (CFG-3).
    pub fn address_domain(&self) -> String {
        if self.mail_domain.parse::<Ipv4Addr>().is_ok() {
            format!("[{}]", self.mail_domain)
        } else {
            self.mail_domain.clone()
        }
    }

    /// A fresh random account of this relay (created at its first login).
    pub fn account(&self) -> Account {
        let local = random_string(9, b"abcdefghijklmnopqrstuvwxyz0123456789");
        Account {
            addr: format!("{local}@{}", self.address_domain()),
            local,
            password: random_string(
                16,
                b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789",
            ),
        }
    }

    pub fn sock(&self, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), port)
    }

    fn has(&self, key: &str) -> Option<String> {
        self.extra.iter().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    }

    /// Whether the service `<key>_listen` is enabled.
    pub fn listens(&self, key: &str) -> bool {
        self.has(&format!("{key}_listen"))
            .map(|v| !v.is_empty())
            .unwrap_or(true)
    }

    pub fn config_text(&self) -> String {
        let mut ini = String::from("[params]\n");
        let mut defaults: Vec<(String, String)> = vec![
            ("mail_domain".into(), self.mail_domain.clone()),
            ("data_dir".into(), self.data_dir().display().to_string()),
        ];
        // LOG-5: the queue and the sessions are watched through /metrics
        // ([`FedRelay::wait_queue_empty`]).
        defaults.push(("mtail_address".into(), format!("{}:{METRICS}", self.ip)));
        for (key, port) in LISTENERS {
            defaults.push((format!("{key}_listen"), format!("{}:{port}", self.ip)));
        }
        for (k, v) in [
            ("max_load_1m", "10000"),
            ("min_available_memory", "1"),
            ("min_free_disk_space", "1"),
            ("log_stderr", "true"),
            ("turn_listen", ""),
            ("max_user_send_per_minute", "600"),
            ("max_user_send_burst_size", "100"),
            // Every client and peer comes from loopback.
            ("max_connections_per_ip", "100000"),
            ("max_connection_rate_per_ip", "100000"),
            ("max_connection_burst_per_ip", "100000"),
        ] {
            defaults.push((k.into(), v.into()));
        }
        for (k, v) in defaults {
            if self.has(&k).is_none() {
                ini += &format!("{k} = {v}\n");
            }
        }
        for line in &self.extra {
            ini += line;
            ini += "\n";
        }
        ini
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("chatmail.ini")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A scratch directory of this relay (certificates, …).
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn stderr_path(&self, run: u32) -> PathBuf {
        self.dir.path().join(format!("stderr-{run}.log"))
    }

    /// Everything the relay wrote to stderr, over all runs.
    pub fn stderr(&self) -> String {
        let mut all = String::new();
        for run in 1..=self.runs {
            if let Ok(text) = std::fs::read_to_string(self.stderr_path(run)) {
                if self.runs > 1 {
                    all += &format!("--- run {run} ---\n");
                }
                all += &text;
            }
        }
        all
    }

    /// Log lines containing any of `words` (for failure messages and reports).
    pub fn log_lines(&self, words: &[&str]) -> String {
        self.stderr()
            .lines()
            .filter(|l| words.iter().any(|w| l.contains(w)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Where this relay serves `/metrics`.
    pub fn metrics_addr(&self) -> SocketAddr {
        match self.has("mtail_address") {
            Some(v) => v.parse().expect("mtail_address as ip:port"),
            None => self.sock(METRICS),
        }
    }

    /// Wait (up to `within`) until this relay's outbound queue is empty (OUT-1:
    /// `relaybox_queue_length`): every message it took for other relays has been
    /// delivered or bounced, and no attempt is under way. The last length seen.
    pub async fn wait_queue_empty(&self, within: Duration) -> u64 {
        let (_, s) = crate::metrics::wait_for(self.metrics_addr(), within, |s| {
            s.get("relaybox_queue_length") == Some(&0)
        })
        .await;
        crate::metrics::get(&s, "relaybox_queue_length")
    }

    /// Wait (up to `within`) until the counter or gauge `sample` of this relay's
    /// `/metrics` is at least `n` (since its last start); its last value either way.
    pub async fn wait_sample(&self, sample: &str, n: u64, within: Duration) -> u64 {
        let (_, s) = crate::metrics::wait_for(self.metrics_addr(), within, |s| {
            s.get(sample).is_some_and(|v| *v >= n)
        })
        .await;
        crate::metrics::get(&s, sample)
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.stderr();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `relaybox dns --config <ini>`: (exit success, stdout, stderr).
    pub fn dns_command(&self) -> (bool, String, String) {
        std::fs::write(self.config_path(), self.config_text()).expect("write chatmail.ini");
        match Command::new(crate::relay::binary())
            .arg("dns")
            .arg("--config")
            .arg(self.config_path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) => (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ),
            Err(e) => (false, String::new(), format!("spawn: {e}")),
        }
    }

    /// The DKIM TXT value (`v=DKIM1;k=rsa;p=…`) this relay publishes: from
    /// `relaybox dns`, else from `<data_dir>/dns.zone` (written at start).
    pub fn dkim_txt(&self, selector: &str) -> Option<String> {
        let (_, out, _) = self.dns_command();
        dkim_txt_from_zone(&out, selector, &self.mail_domain).or_else(|| {
            let zone = std::fs::read_to_string(self.data_dir().join("dns.zone")).ok()?;
            dkim_txt_from_zone(&zone, selector, &self.mail_domain)
        })
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        std::fs::write(self.config_path(), self.config_text())?;
        self.runs += 1;
        let stderr = File::create(self.stderr_path(self.runs))?;
        let stdout = File::create(self.dir.path().join(format!("stdout-{}.log", self.runs)))?;
        let mut cmd = Command::new(crate::relay::binary());
        cmd.arg("serve")
            .arg("--config")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .env("NO_COLOR", "1");
        if std::env::var_os("RELAYBOX_LOG").is_none() {
            cmd.env("RELAYBOX_LOG", "info");
        }
        self.child = Some(cmd.spawn()?);
        Ok(())
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        self.spawn().map_err(|e| format!("spawn relaybox: {e}"))?;
        let probe = [("http", HTTP), ("https", HTTPS), ("imaps", IMAPS)]
            .into_iter()
            .find(|(k, _)| self.listens(k))
            .map(|(_, p)| p)
            .unwrap_or(SUBMISSIONS);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!(
                    "relaybox at {} exited with {status} during start-up; stderr:\n{}",
                    self.ip,
                    self.stderr()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "relaybox did not accept on {} within {START_TIMEOUT:?}; stderr:\n{}",
                    self.sock(probe),
                    self.stderr()
                ));
            }
            if tokio::net::TcpStream::connect(self.sock(probe))
                .await
                .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Start the process (again) and wait until it accepts. Panics with its log.
    pub async fn start(&mut self) {
        let mut last = String::new();
        for _ in 0..3 {
            match self.spawn_and_wait().await {
                Ok(()) => return,
                Err(e) => {
                    self.kill9();
                    let retry = e.contains("in use") || e.contains("cannot listen");
                    last = e;
                    if !retry {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        panic!("relay {} did not start: {last}", self.mail_domain);
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        crate::relay::kill9_child(&mut self.child);
    }

    /// SIGTERM, bounded wait, then SIGKILL.
    pub async fn stop(&mut self) -> Option<ExitStatus> {
        crate::relay::stop_child(&mut self.child).await
    }

    // --- clients ---------------------------------------------------------------------

    /// IMAP over implicit TLS (993), logged in as `account` (asserted).
    pub async fn imap_login(&self, account: &Account) -> Imap {
        let mut c = Imap::connect_tls(self.sock(IMAPS)).await;
        let g = c.greeting().await;
        assert!(g.raw.starts_with(b"* OK"), "IMAP greeting: {g}");
        let r = c.login(&account.addr, &account.password).await;
        assert!(r.is_ok(), "LOGIN {} at {}: {r}", account.addr, self.ip);
        c
    }

    /// Create `account` by logging in once (ACC-5).
    pub async fn create_account(&self, account: &Account) {
        self.imap_login(account).await.logout().await;
    }

    /// Every message in `account`'s INBOX.
    pub async fn inbox(&self, account: &Account) -> Vec<Vec<u8>> {
        let mut c = self.imap_login(account).await;
        let n = c.select("INBOX").await;
        let bodies = c.fetch_bodies(n).await;
        assert_eq!(bodies.len(), n as usize, "FETCH of {n} messages");
        c.logout().await;
        bodies
    }

    /// Poll `account`'s INBOX (every 250 ms, up to `within`) until `done` holds; returns
    /// the last INBOX seen either way (the caller asserts).
    pub async fn wait_inbox(
        &self,
        account: &Account,
        within: Duration,
        done: impl Fn(&[Vec<u8>]) -> bool,
    ) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + within;
        loop {
            let inbox = self.inbox(account).await;
            if done(&inbox) || Instant::now() >= deadline {
                return inbox;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Submission over implicit TLS (465) as `account` from the local address `from`
    /// (the client IP the relay sees), one message; the reply ending the transaction.
    pub async fn submit_from(
        &self,
        from: IpAddr,
        account: &Account,
        rcpts: &[&str],
        body: &[u8],
    ) -> Reply {
        let addr = self.sock(SUBMISSIONS);
        let conn = LineConn::connect_tls_from(from, addr, &[])
            .await
            .unwrap_or_else(|e| panic!("TLS connect to {addr} from {from}: {e}"));
        let mut s = Smtp::from_conn(conn, addr);
        s.greeting().await;
        s.ehlo().await;
        let r = s.auth_plain(&account.addr, &account.password).await;
        assert_eq!(
            r.code, 235,
            "AUTH PLAIN as {} at {}: {r}",
            account.addr, self.ip
        );
        let r = s.send_mail(&account.addr, rcpts, body).await;
        s.quit().await;
        r
    }

    /// Submission (465) from 127.0.0.1.
    pub async fn submit(&self, account: &Account, rcpts: &[&str], body: &[u8]) -> Reply {
        self.submit_from(IpAddr::V4(Ipv4Addr::LOCALHOST), account, rcpts, body)
            .await
    }
}

impl Drop for FedRelay {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "---- relaybox {} at {} stderr (last 80 lines) ----\n{}\n----",
                self.mail_domain,
                self.ip,
                self.log_tail(80)
            );
        }
    }
}

/// Relays in domain mode with their DNS and CA: relay `i` (0-based) is
/// `r<i+1>-<tag>.test` at `127.a.b.<i+2>` with a test-CA certificate for its domain,
/// the CA as `tls_extra_roots`, the private dnsmasq as `dns_resolver`, and its DKIM
/// record published before it starts.
pub struct DomainRelays {
    pub net: Net,
    pub ca: TestCa,
    pub ca_file: PathBuf,
    pub dns: Dns,
    pub relays: Vec<FedRelay>,
    /// The DKIM TXT value of each relay, if one could be read.
    pub dkim: Vec<Option<String>>,
    /// Scratch directory (CA file, Postfix certificate, …).
    pub dir: TempDir,
}

impl DomainRelays {
    /// Start `n` domain relays; `extra(i)` gives relay `i`'s extra config lines.
    pub async fn start(n: usize, extra: impl Fn(usize) -> Vec<String>) -> DomainRelays {
        Self::start_with_zone(n, extra, Zone::default(), Net::fresh()).await
    }

    /// Like [`DomainRelays::start`] on `net`, with `zone` (e.g. a classic peer's
    /// records) added to the relays' records.
    pub async fn start_with_zone(
        n: usize,
        extra: impl Fn(usize) -> Vec<String>,
        mut zone: Zone,
        net: Net,
    ) -> DomainRelays {
        let dir = tempfile::Builder::new()
            .prefix("relaybox-fedset-")
            .tempdir()
            .expect("create temp dir");
        let ca = TestCa::new(&net.tag());
        let ca_file = ca.write_cert(&dir.path().join("ca.pem"));
        let domains: Vec<String> = (0..n)
            .map(|i| format!("r{}-{}.test", i + 1, net.tag()))
            .collect();
        for (i, d) in domains.iter().enumerate() {
            zone.add_mail_domain(d, net.host(i as u8 + 2));
        }
        let mut dns = Dns::start(zone);
        let mut relays = Vec::new();
        for (i, d) in domains.iter().enumerate() {
            let leaf = ca.leaf(dir.path(), d, &[d], &[]);
            let mut lines = vec![
                format!("dns_resolver = {}", dns.resolver()),
                format!("tls_external_cert_and_key = {}", leaf.ini_value()),
                format!("tls_extra_roots = {}", ca_file.display()),
            ];
            let more = extra(i);
            for l in FAST_RETRY {
                let key = l.split('=').next().unwrap_or("").trim();
                if !more
                    .iter()
                    .any(|m| m.split('=').next().unwrap_or("").trim() == key)
                {
                    lines.push(l.to_string());
                }
            }
            lines.extend(more);
            relays.push(FedRelay::new(net.host(i as u8 + 2), d, &lines));
        }
        // §18: the DKIM record, from `relaybox dns` (which makes the key) before start.
        let mut dkim: Vec<Option<String>> = relays.iter().map(|r| r.dkim_txt("opendkim")).collect();
        let mut started = vec![false; n];
        // Fallback: the zone file the relay writes at start.
        for i in 0..n {
            if dkim[i].is_none() {
                relays[i].start().await;
                started[i] = true;
                dkim[i] = relays[i].dkim_txt("opendkim");
            }
        }
        let mut zone = dns.zone().clone();
        for (d, txt) in domains.iter().zip(&dkim) {
            if let Some(txt) = txt {
                zone.add_txt(&format!("opendkim._domainkey.{d}"), txt);
            }
        }
        dns.replace_zone(zone);
        for i in 0..n {
            if !started[i] {
                relays[i].start().await;
            }
        }
        DomainRelays {
            net,
            ca,
            ca_file,
            dns,
            relays,
            dkim,
            dir,
        }
    }
}

/// Two IP-only relays at `127.a.b.2` and `127.a.b.3` (MODE-1): no DNS, self-signed.
pub async fn ip_only_pair(net: Net, extra: &[String]) -> (FedRelay, FedRelay) {
    let mut lines: Vec<String> = FAST_RETRY.iter().map(|s| s.to_string()).collect();
    lines.extend_from_slice(extra);
    let r1 = FedRelay::start_ip_only(net.host(2), &lines).await;
    let r2 = FedRelay::start_ip_only(net.host(3), &lines).await;
    (r1, r2)
}
