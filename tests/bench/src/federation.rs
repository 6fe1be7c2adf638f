//! Federation figures (issue 3): relay-to-relay throughput on loopback and sync calls per
//! message on the outbound path. Two IP-only relays (MODE-1) run as two hosts on their
//! own loopback addresses with every service on its standard port: relay A
//! (`mail_domain = 127.0.0.2`) holds the senders, relay B (`127.0.0.3`) the recipients.
//! SUBMITTERS concurrent submitters send PGP/MIME to A; A's outbound scheduler delivers
//! to B, first over HTTPS `POST /mxdeliv` (OUT-3 step 1), and in a second variant, with
//! B's HTTPS listener off, over SMTP with STARTTLS (OUT-3 step 2). Throughput is
//! messages / (first submission → all visible in B's INBOXes via IMAP STATUS). Both
//! relays run under `strace` counting sync calls in the run's time window; A's log says
//! which path each delivery took. Relays are killed on drop, so an error or a panic
//! never leaves the standard ports taken.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::client::Imap;
use crate::relay::{SYNC_CALLS, count_sync_calls};
use crate::report::Row;
use crate::{
    Figures, Names, PASSWORD, PER_SENDER, Plan, RECIPIENTS, SUBMITTERS, SenderJob, create_accounts,
    epoch_secs, expected_per_recipient, mail, submit, wait_delivered,
};

/// Relay A: the senders' relay.
const A_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// Relay B: the recipients' relay.
const B_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// The standard ports (spec/relay.md §1), by `<key>_listen`.
const PORTS: [(&str, u16); 7] = relaybox_blackbox::federation::LISTENERS;
const SUBMISSIONS: u16 = 465;
const IMAPS: u16 = 993;
const SMTP: u16 = 25;
/// How long a relay may take to listen after being spawned.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a SIGTERM stop may take before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait, once all messages are visible on B, for A's log to show every
/// delivery (the queue removal follows that line).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Quiet time added to the counting window after the last delivery line, so A's
/// queue-removal commit of the last message is inside it.
const SETTLE_TAIL: Duration = Duration::from_secs(1);

/// One relay on its own loopback address with the standard ports; dropping it kills it.
struct PeerRelay {
    /// The direct child: the relay, or strace running it.
    child: Child,
    /// The relay's pid (differs from the child's under strace).
    pid: u32,
    ip: Ipv4Addr,
    log: PathBuf,
    strace_out: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

/// chatmail.ini of a bench peer: IP-only mode (MODE-1) on `ip`, all listeners on `ip`
/// at their standard ports, HTTPS off when `https` is false, short retries (OUT-6).
fn peer_config(ip: Ipv4Addr, data_dir: &Path, https: bool) -> String {
    let mut ini = String::from("[params]\n");
    ini += &format!("mail_domain = {ip}\n");
    ini += &format!("data_dir = {}\n", data_dir.display());
    for (key, port) in PORTS {
        if key == "https" && !https {
            ini += "https_listen =\n";
        } else {
            ini += &format!("{key}_listen = {ip}:{port}\n");
        }
    }
    ini += "turn_listen =\n";
    // LOG-1: the log (which names the outbound path) goes to stderr, i.e. a file.
    ini += "log_stderr = true\n";
    // ACC-5.6: the shared machine's load average must not refuse account creation.
    ini += "max_load_1m = 10000\n";
    // OUT-6: a deferred delivery is retried within seconds, not minutes.
    ini += "minimal_backoff_time = 1s\n";
    ini += "maximal_backoff_time = 2s\n";
    // Issue 13: the bench's clients all come from loopback.
    ini += "max_connections_per_ip = 100000\n";
    ini += "max_connection_rate_per_ip = 100000\n";
    ini += "max_connection_burst_per_ip = 100000\n";
    ini
}

impl PeerRelay {
    /// Start `bin serve` for `ip` with a fresh data dir under `parent`, optionally under
    /// `strace`, and wait until its submission, IMAP and SMTP ports accept.
    fn start(
        bin: &Path,
        parent: &Path,
        ip: Ipv4Addr,
        https: bool,
        strace: Option<&Path>,
    ) -> Result<PeerRelay> {
        // The standard ports of `ip` must be free: a clear error instead of a start-up
        // failure deep in the relay's log.
        for (key, port) in PORTS {
            if key == "https" && !https {
                continue;
            }
            TcpListener::bind((ip, port)).with_context(|| {
                format!("{ip}:{port} ({key}) is not free; is another relay or test running?")
            })?;
        }
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("relaybox-fed-{ip}-"))
            .tempdir_in(parent)
            .context("create the temp dir")?;
        let data_dir = dir.path().join("data");
        let ini = dir.path().join("chatmail.ini");
        std::fs::write(&ini, peer_config(ip, &data_dir, https)).context("write chatmail.ini")?;
        let log = dir.path().join("relay-stderr.log");
        let strace_out = strace.map(|_| dir.path().join("strace.out"));
        let mut cmd = match (strace, &strace_out) {
            (Some(strace), Some(out)) => {
                let mut c = Command::new(strace);
                c.args(["-f", "-qq", "--seccomp-bpf", "-ttt", "-e"])
                    .arg(format!("trace={}", SYNC_CALLS.join(",")))
                    .arg("-o")
                    .arg(out)
                    .arg(bin);
                c
            }
            _ => Command::new(bin),
        };
        let stderr = File::create(&log).context("create the relay's log file")?;
        cmd.arg("serve")
            .arg("--config")
            .arg(&ini)
            .env("NO_COLOR", "1")
            .env(
                "RELAYBOX_LOG",
                std::env::var_os("RELAYBOX_LOG").unwrap_or_else(|| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let child_pid = child.id();
        let mut relay = PeerRelay {
            child,
            pid: child_pid,
            ip,
            log,
            strace_out,
            _dir: dir,
        };
        relay.wait_ready()?;
        if strace.is_some() {
            relay.pid = traced_child(child_pid)?;
        }
        Ok(relay)
    }

    fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), port)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        let addrs = [self.addr(SUBMISSIONS), self.addr(IMAPS), self.addr(SMTP)];
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "relay {} exited during start-up ({status}); its log:\n{}",
                    self.ip,
                    self.log_tail(40)
                );
            }
            let up = addrs.iter().all(|a| {
                std::net::TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok()
            });
            if up {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "relay {} not listening after {START_TIMEOUT:?}; its log:\n{}",
                    self.ip,
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The last `n` lines of the log that mention outbound delivery or /mxdeliv.
    fn outbound_lines(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("outbound") || l.contains("mxdeliv"))
            .collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "relay {} exited ({status}); its log:\n{}",
                self.ip,
                self.log_tail(40)
            );
        }
        Ok(())
    }

    /// SIGTERM the relay, wait for it (and strace, which then completes its output),
    /// SIGKILL after a bound.
    fn stop(&mut self) {
        signal(self.pid, libc::SIGTERM);
        let deadline = std::time::Instant::now() + STOP_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => {}
            }
            if std::time::Instant::now() >= deadline {
                signal(self.pid, libc::SIGKILL);
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PeerRelay {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            signal(self.pid, libc::SIGKILL);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) on a pid this process spawned (or strace's child of it).
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// The process strace started (its only child).
fn traced_child(strace_pid: u32) -> Result<u32> {
    let path = format!("/proc/{strace_pid}/task/{strace_pid}/children");
    let children = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow!("strace ({strace_pid}) has no child process"))
}

/// What A's log says about the outbound deliveries of a run.
#[derive(Debug, Default, PartialEq)]
struct OutboundLog {
    /// Queue rows delivered over HTTPS `/mxdeliv` (`via Some(Https)`).
    https: usize,
    /// Queue rows delivered over SMTP (`via Some(Smtp)`).
    smtp: usize,
    /// Delivered rows whose path the line does not name.
    other: usize,
    /// `deferred` lines (temporary failures, retried after back-off).
    deferred: usize,
    /// `failed` lines (permanent failures, bounced).
    failed: usize,
    /// `/mxdeliv failed …; trying SMTP` lines.
    https_fallbacks: usize,
}

impl OutboundLog {
    /// Count the scheduler's lines (`outbound: queue N to D: delivered to K
    /// recipient(s) via Some(Https)`, `… deferred …`, `… failed: …`).
    fn parse(text: &str) -> OutboundLog {
        let mut o = OutboundLog::default();
        for line in text.lines() {
            if line.contains("/mxdeliv failed") && line.contains("trying SMTP") {
                o.https_fallbacks += 1;
            }
            if !line.contains("outbound: queue ") {
                continue;
            }
            if line.contains(": delivered to ") {
                if line.contains("via Some(Https)") {
                    o.https += 1;
                } else if line.contains("via Some(Smtp)") {
                    o.smtp += 1;
                } else {
                    o.other += 1;
                }
            } else if line.contains(": deferred") {
                o.deferred += 1;
            } else if line.contains(": failed: ") {
                o.failed += 1;
            }
        }
        o
    }

    fn delivered(&self) -> usize {
        self.https + self.smtp + self.other
    }

    fn describe(&self) -> String {
        let mut s = format!("A→B via HTTPS {}, via SMTP {}", self.https, self.smtp);
        if self.other > 0 {
            s += &format!(", path not named {}", self.other);
        }
        if self.deferred > 0 {
            s += &format!(", {} deferred attempts", self.deferred);
        }
        if self.failed > 0 {
            s += &format!(", {} permanent failures", self.failed);
        }
        if self.https_fallbacks > 0 {
            s += &format!(", {} /mxdeliv→SMTP fallbacks", self.https_fallbacks);
        }
        s
    }
}

/// Sync calls of one relay in a window: total and per-call text.
struct SyncCount {
    total: u64,
    detail: String,
}

fn sync_count(out: &Path, from: f64, to: f64) -> Result<SyncCount> {
    let c = count_sync_calls(out, from, to)?;
    Ok(SyncCount {
        total: c.iter().map(|(_, n)| n).sum(),
        detail: c
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{name} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The figures of one variant.
struct VariantResult {
    accepted: usize,
    refused: Vec<String>,
    accept_secs: f64,
    deliver_secs: f64,
    log: OutboundLog,
    /// Sync calls on A and on B in the window (None without strace).
    sync: Option<(SyncCount, SyncCount)>,
}

/// One variant: `https` says whether B listens on 443 (OUT-3 step 1 possible).
struct Variant {
    https: bool,
    role: char,
}

impl Variant {
    fn label(&self) -> &'static str {
        if self.https {
            "HTTPS /mxdeliv"
        } else {
            "SMTP, B without HTTPS"
        }
    }
}

/// `<role><tag><index>@[ip]`: 9-character local parts (ACC-5.4/5.5) like `Names::addr`.
fn peer_addr(names: &Names, role: char, i: usize, ip: Ipv4Addr) -> String {
    format!("{role}{}{:05}@[{ip}]", names.tag, i % 100_000)
}

/// Messages per run (as many as the single-relay throughput run): SUBMITTERS
/// concurrent submitters to A, PER_SENDER per sender account.
fn messages(plan: &Plan) -> usize {
    if plan.quick { 300 } else { 2000 }
}

/// The federation phase: both variants, rows and notes into `fig`.
#[allow(clippy::too_many_arguments)]
pub async fn federation_phase(
    plan: &Plan,
    bin: &Path,
    data_parent: &Path,
    tls: &TlsConnector,
    names: &Names,
    keys: &[pgp::composed::SignedPublicKey],
    plaintext_len: usize,
    fig: &mut Figures,
) {
    let n = messages(plan);
    let strace = crate::find_strace(fig);
    let variants = [
        Variant {
            https: true,
            role: 'f',
        },
        Variant {
            https: false,
            role: 'g',
        },
    ];
    for v in &variants {
        let metric = throughput_metric(v);
        println!("federation ({}): {n} messages A → B …", v.label());
        let r = run_variant(
            v,
            n,
            bin,
            data_parent,
            tls,
            names,
            keys,
            plaintext_len,
            strace.as_deref(),
        )
        .await;
        match r {
            Ok(r) => add_rows(fig, v, n, &r),
            Err(e) => fig.failed(&metric, "–", "–", &e),
        }
    }
    fig.notes.push(format!(
        "Federation: two IP-only relays on loopback as two hosts, A (`mail_domain = {A_IP}`) and B (`{B_IP}`), each with all listeners on its own address at the standard ports (25, 587, 465, 143, 993, 443, 80), `minimal_backoff_time = 1s`, `maximal_backoff_time = 2s`, `max_load_1m = 10000`, `log_stderr = true`. {n} PGP/MIME messages from {} sender accounts on A ({PER_SENDER} each) to {RECIPIENTS} accounts on B, {SUBMITTERS} concurrent TLS submitters to A. Relay-to-relay rate = messages / (first submission → all visible in B's INBOXes via IMAP STATUS); A delivers with its outbound scheduler, first `POST /mxdeliv` over HTTPS (OUT-3), then SMTP with STARTTLS; the path is counted from A's log (`outbound: queue … via Some(Https|Smtp)`). The SMTP variant runs B with `https_listen =` empty, so A's /mxdeliv attempt fails to connect and falls back to SMTP (then skips HTTPS for that host for 30 min, OUT-3).",
        n.div_ceil(PER_SENDER)
    ));
    if strace.is_some() {
        fig.notes.push(format!(
            "Federation sync calls: both relays run under `strace -f -qq --seccomp-bpf -ttt -e trace={}` during the rates above (only the sync calls stop the process, so the rates are close to untraced ones); calls counted from the first submission until {}s after A logged its last delivery. A's figure covers the submission commit, the outbound queue entry and its removal after B accepted; B's covers the inbound commit.",
            SYNC_CALLS.join(","),
            SETTLE_TAIL.as_secs()
        ));
    }
}

fn throughput_metric(v: &Variant) -> String {
    format!(
        "Relay-to-relay msg/s, {} ({SUBMITTERS} submitters, end to end)",
        v.label()
    )
}

fn add_rows(fig: &mut Figures, v: &Variant, n: usize, r: &VariantResult) {
    let rate = r.accepted as f64 / r.deliver_secs;
    let accept_rate = r.accepted as f64 / r.accept_secs;
    println!(
        "  {} accepted by A in {:.2} s ({accept_rate:.0} msg/s); all on B after {:.2} s = {rate:.0} msg/s end to end; {}",
        r.accepted,
        r.accept_secs,
        r.deliver_secs,
        r.log.describe()
    );
    fig.rows.push(Row::new(
        &throughput_metric(v),
        format!(
            "{rate:.0} msg/s ({} msgs in {:.2} s; accepted by A in {:.2} s; {})",
            r.accepted,
            r.deliver_secs,
            r.accept_secs,
            r.log.describe()
        ),
        "–",
        "–",
        None,
    ));
    if !r.refused.is_empty() {
        fig.notes.push(format!(
            "federation ({}): {} of {n} refused at submission, first: {}",
            v.label(),
            r.refused.len(),
            r.refused[0]
        ));
    }
    match &r.sync {
        Some((a, b)) => {
            for (who, c) in [("A (sender side)", a), ("B (receiver side)", b)] {
                let per = c.total as f64 / r.accepted as f64;
                println!(
                    "  sync calls on {who}: {per:.3} per message ({} in {} messages{}{})",
                    c.total,
                    r.accepted,
                    if c.detail.is_empty() { "" } else { ": " },
                    c.detail
                );
                fig.rows.push(Row::new(
                    &format!("Sync calls per message on {who}, {}", v.label()),
                    format!(
                        "{per:.3} ({} calls / {} messages{}{})",
                        c.total,
                        r.accepted,
                        if c.detail.is_empty() { "" } else { ": " },
                        c.detail
                    ),
                    "–",
                    "–",
                    None,
                ));
            }
        }
        None => fig.rows.push(Row::new(
            &format!("Sync calls per message, federation, {}", v.label()),
            "unavailable (no strace)".into(),
            "–",
            "–",
            None,
        )),
    }
}

/// Start B then A (killed on drop, also on error), run the variant, stop both, count.
#[allow(clippy::too_many_arguments)]
async fn run_variant(
    v: &Variant,
    n: usize,
    bin: &Path,
    data_parent: &Path,
    tls: &TlsConnector,
    names: &Names,
    keys: &[pgp::composed::SignedPublicKey],
    plaintext_len: usize,
    strace: Option<&Path>,
) -> Result<VariantResult> {
    let mut b = PeerRelay::start(bin, data_parent, B_IP, v.https, strace).context("relay B")?;
    let mut a = PeerRelay::start(bin, data_parent, A_IP, true, strace).context("relay A")?;
    println!(
        "  relays up: A pid {} ({A_IP}), B pid {} ({B_IP})",
        a.pid, b.pid
    );
    let r = measure(v, n, &mut a, &mut b, tls, names, keys, plaintext_len).await;
    a.stop();
    b.stop();
    let (mut res, window) = match r {
        Ok(ok) => ok,
        Err(e) => {
            return Err(e.context(format!(
                "A's outbound log (last lines): {}",
                a.outbound_lines(8).replace('\n', " / ")
            )));
        }
    };
    // Kept for inspection after the temp dirs are gone.
    let keep = |r: &PeerRelay, name: &str| {
        let _ = std::fs::copy(&r.log, data_parent.join(format!("last-fed-{name}.log")));
        if let Some(out) = &r.strace_out {
            let _ = std::fs::copy(out, data_parent.join(format!("last-fed-{name}.strace")));
        }
    };
    keep(&a, &format!("{}-a", v.role));
    keep(&b, &format!("{}-b", v.role));
    if let (Some(sa), Some(sb)) = (&a.strace_out, &b.strace_out) {
        res.sync = Some((
            sync_count(sa, window.0, window.1)?,
            sync_count(sb, window.0, window.1)?,
        ));
    }
    Ok(res)
}

/// The timed run on started relays; returns the figures and the counting window
/// (epoch seconds).
#[allow(clippy::too_many_arguments)]
async fn measure(
    v: &Variant,
    n: usize,
    a: &mut PeerRelay,
    b: &mut PeerRelay,
    tls: &TlsConnector,
    names: &Names,
    keys: &[pgp::composed::SignedPublicKey],
    plaintext_len: usize,
) -> Result<(VariantResult, (f64, f64))> {
    let recipients: Vec<String> = (0..RECIPIENTS)
        .map(|i| peer_addr(names, v.role, i, B_IP))
        .collect();
    let senders = n.div_ceil(PER_SENDER);
    let mut jobs = Vec::with_capacity(senders);
    for s in 0..senders {
        let login = peer_addr(names, v.role, s, A_IP);
        let mut msgs = Vec::with_capacity(PER_SENDER);
        for k in s * PER_SENDER..((s + 1) * PER_SENDER).min(n) {
            let r = k % recipients.len();
            let armored = mail::armored(&keys[r % keys.len()], plaintext_len)?;
            let raw = mail::pgp_mime(&login, &recipients[r], &armored);
            msgs.push((recipients[r].clone(), crate::client::dot_stuff(&raw)));
        }
        jobs.push(SenderJob { login, msgs });
    }
    let expected = expected_per_recipient(&jobs, &recipients);
    let logins: Vec<String> = jobs.iter().map(|j| j.login.clone()).collect();
    create_accounts(tls, a.addr(IMAPS), &logins)
        .await
        .context("sender accounts on A")?;
    create_accounts(tls, b.addr(IMAPS), &recipients)
        .await
        .context("recipient accounts on B")?;
    let mut watchers = Vec::new();
    let mut base = Vec::new();
    for r in &recipients {
        let mut s = Imap::login(tls, b.addr(IMAPS), r, PASSWORD).await?;
        base.push(s.inbox_messages().await?);
        watchers.push(s);
    }
    let log_before = OutboundLog::parse(&a.log_text());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let from = epoch_secs();
    let t0 = Instant::now();
    let out = submit(tls, a.addr(SUBMISSIONS), jobs, SUBMITTERS).await?;
    if out.accepted == 0 {
        bail!(
            "A accepted no message; first refusal: {}",
            out.refused.first().map(String::as_str).unwrap_or("?")
        );
    }
    // Only accepted messages can arrive: a refusal (`login → to: reply`) lowers its
    // recipient's count.
    let mut expected = expected;
    for r in &out.refused {
        let to = r.split(" → ").nth(1).and_then(|t| t.split(": ").next());
        if let Some(i) = to.and_then(|to| recipients.iter().position(|r| r == to)) {
            expected[i] = expected[i].saturating_sub(1);
        }
    }
    let delivered = wait_delivered(&mut watchers, &base, &expected).await;
    let delivered_at = match delivered {
        Ok(t) => t,
        Err(e) => {
            a.check_alive()?;
            b.check_alive()?;
            return Err(e);
        }
    };
    for mut w in watchers {
        w.command("LOGOUT").await.ok();
    }
    // A removes each queue row after logging its delivery: wait for every line, then a
    // quiet tail, so the last removal is inside the counting window.
    let settle = Instant::now() + SETTLE_TIMEOUT;
    let mut log = OutboundLog::parse(&a.log_text());
    while log.delivered() < log_before.delivered() + out.accepted && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
        log = OutboundLog::parse(&a.log_text());
    }
    tokio::time::sleep(SETTLE_TAIL).await;
    let to = epoch_secs();
    a.check_alive()?;
    b.check_alive()?;
    let log = OutboundLog {
        https: log.https - log_before.https,
        smtp: log.smtp - log_before.smtp,
        other: log.other - log_before.other,
        deferred: log.deferred - log_before.deferred,
        failed: log.failed - log_before.failed,
        https_fallbacks: log.https_fallbacks - log_before.https_fallbacks,
    };
    let accept_secs = out
        .last_accept
        .map(|t| t.saturating_duration_since(t0).as_secs_f64())
        .unwrap_or(f64::NAN);
    Ok((
        VariantResult {
            accepted: out.accepted,
            refused: out.refused,
            accept_secs,
            deliver_secs: delivered_at.saturating_duration_since(t0).as_secs_f64(),
            log,
            sync: None,
        },
        (from, to),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_log_lines() {
        let text = "2026-11-28T20:00:00Z  INFO outbound: queue 7 to [127.0.0.3]: delivered to 1 recipient(s) via Some(Https)\n\
            INFO outbound: queue 8 to [127.0.0.3]: delivered to 1 recipient(s) via Some(Smtp)\n\
            INFO outbound: queue 9 to [127.0.0.3]: delivered to 1 recipient(s) via None\n\
            INFO outbound: [127.0.0.3] /mxdeliv failed: connection refused; trying SMTP\n\
            INFO outbound: queue 10 to [127.0.0.3]: deferred (1 recipient(s)): 421 busy\n\
            INFO outbound: queue 11 to [127.0.0.3]: failed: 550 5.1.1 no such user\n";
        let o = OutboundLog::parse(text);
        assert_eq!(
            o,
            OutboundLog {
                https: 1,
                smtp: 1,
                other: 1,
                deferred: 1,
                failed: 1,
                https_fallbacks: 1,
            }
        );
        assert_eq!(o.delivered(), 3);
    }

    /// The phase alone against `RELAYBOX_BIN` (or the release binary), in quick mode:
    /// `cargo test -p relaybox-bench federation::tests::phase -- --ignored --nocapture`.
    /// Needs root (ports 25, 80, 143, 443, …) and free standard ports on 127.0.0.2/.3.
    #[test]
    #[ignore]
    fn phase() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let root = crate::workspace_root();
            let bin = crate::relay_binary(&root).expect("relay binary");
            let plan = Plan::new(true);
            let names = Names::new();
            let tls = crate::client::tls_connector().expect("tls");
            let keys = vec![mail::recipient_key("k@[127.0.0.3]").expect("key")];
            let mut fig = Figures::default();
            federation_phase(
                &plan,
                &bin,
                &root.join("target/bench-data"),
                &tls,
                &names,
                &keys,
                2800,
                &mut fig,
            )
            .await;
            println!("{}", crate::report::summary(&fig.rows));
            for n in &fig.notes {
                println!("note: {n}");
            }
            assert!(
                fig.rows.iter().all(|r| !r.value.starts_with("failed")),
                "a federation run failed"
            );
        });
    }

    #[test]
    fn config_of_a_peer() {
        let ini = peer_config(B_IP, Path::new("/tmp/x"), false);
        assert!(ini.contains("mail_domain = 127.0.0.3\n"));
        assert!(ini.contains("smtp_listen = 127.0.0.3:25\n"));
        assert!(ini.contains("imaps_listen = 127.0.0.3:993\n"));
        assert!(ini.contains("https_listen =\n"));
        assert!(ini.contains("minimal_backoff_time = 1s\n"));
        let ini = peer_config(A_IP, Path::new("/tmp/x"), true);
        assert!(ini.contains("https_listen = 127.0.0.2:443\n"));
    }
}
