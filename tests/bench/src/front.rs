//! The front-server phase (`--front`, issue 20 item 3): what `relaybox front` adds.
//!
//! One relay (the box) runs with `front`/`front_pin` and its usual listeners on
//! 127.0.0.1; one `relaybox front` serves the relay's standard ports on a loopback address
//! of its own (`127.a.b.10`, so the bench runs as root) and pins the box. The box dials
//! the front's tunnel port as it would from behind a NAT.
//!
//! (a) Added latency: the same round trip, alternately straight to the box and through
//! the front: a submission over TLS (465) to an account that idles in IMAP IDLE over TLS
//! (993) on the same path; a sample is the time from writing the end of DATA to reading
//! the matching `* n EXISTS` (the whole path from a client's send to the other client's
//! notification, both legs through the front or neither). An IMAP `NOOP` round trip on
//! each path isolates the forwarding from the store's work.
//!
//! (b) Memory: idle TLS IMAP sessions (LOGIN, SELECT, IDLE) opened through the front, one
//! account each; the RSS (VmRSS) of the `relaybox front` process and of the box before and
//! with them open, per 1 000 connections; then as many straight to the box, for its figure
//! without the front. The figures go to the `front` section of
//! `tests/bench/results.md`, one table per run label.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::PASSWORD;
use crate::client::{Imap, Smtp, dot_stuff, exists_count};
use crate::mail;
use crate::relay::{Options, Relay};
use crate::report::{self, PhaseArgs as Args, RunOut as Out, percentile};

/// Name of the results-file section.
pub const SECTION: &str = "front";
/// The front's address in its loopback /24 (the black-box test's choice).
const FRONT_HOST: u8 = 10;
/// The front's tunnel port (its default, `--tunnel` unset).
const TUNNEL_PORT: u16 = 4433;
/// The ports the front serves (`relaybox::front::PORTS`), all checked free before it starts.
const FRONT_PORTS: [u16; 8] = [25, 587, 465, 143, 993, 443, 80, TUNNEL_PORT];
/// The relay's send limit raised so that one account on one session sends every message
/// of a path (the limiter is not what is measured).
const SEND_LIMITS: &str =
    "max_user_send_per_minute = 1000000\nmax_user_send_burst_size = 1000000\n";
/// Longest wait for the front to listen, and for IMAP to answer through it.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for one `* n EXISTS` after its message was accepted.
const EXISTS_TIMEOUT: Duration = Duration::from_secs(30);
/// A pause between round trips, so that one's after-work does not fall into the next.
const GAP: Duration = Duration::from_millis(10);
/// Sessions being opened at once: below the relay's per-address login brake (5, see
/// `crate::OPEN_CONCURRENCY`); every bench client has the address 127.0.0.1.
const OPEN_CONCURRENCY: usize = crate::OPEN_CONCURRENCY;
/// Settling time before an RSS reading.
const SETTLE: Duration = Duration::from_secs(2);
/// Longest the idle sessions may take to open.
const OPEN_TIMEOUT: Duration = Duration::from_secs(900);

/// Sizes of one run.
struct Plan {
    quick: bool,
    /// Round trips per path (direct, through the front).
    round_trips: usize,
    /// Idle IMAP sessions through the front.
    idle: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                round_trips: 20,
                idle: 100,
            }
        } else {
            Plan {
                quick,
                round_trips: 200,
                idle: 1000,
            }
        }
    }
}

/// `relaybox front` as a child process; killed on drop.
struct FrontProc {
    child: Child,
    pid: u32,
    log: PathBuf,
}

impl FrontProc {
    fn start(bin: &Path, data: &Path, public: Ipv4Addr, box_pin: &str) -> Result<FrontProc> {
        let log = data.join("front.log");
        let file =
            std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let child = Command::new(bin)
            .args(["front", "--data"])
            .arg(data)
            .args(["--public", &public.to_string(), "--box-pin", box_pin])
            .env("RELAYBOX_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .with_context(|| format!("spawn {} front", bin.display()))?;
        let pid = child.id();
        Ok(FrontProc { child, pid, log })
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "relaybox front exited ({status}); its log:\n{}",
                self.log_text()
            );
        }
        Ok(())
    }

    /// Wait until it logs that it listens (every port bound) or exits.
    async fn wait_listening(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.check_alive()?;
            if self.log_text().contains("tunnel on") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "relaybox front not listening after {START_TIMEOUT:?}; its log:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn rss_kib(&self) -> Result<u64> {
        status_kib(self.pid, "VmRSS")
    }

    fn open_fds(&self) -> Result<usize> {
        open_fds(self.pid)
    }

    /// SIGTERM, then SIGKILL after a bound.
    fn stop(&mut self) {
        signal(self.pid, libc::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // Bounded by the deadline.
        while matches!(self.child.try_wait(), Ok(None)) {
            if std::time::Instant::now() >= deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
    }
}

impl Drop for FrontProc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) on a pid this process spawned.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// A `kB` field of /proc/<pid>/status, in KiB.
fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no {field} in /proc/{pid}/status"))
}

fn open_fds(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("read /proc/{pid}/fd"))?
        .count())
}

/// The build profile of a binary, from its path (`target/<profile>/relaybox`).
fn profile_of(bin: &Path) -> String {
    let parent = bin
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match parent.as_str() {
        "release" => "release".into(),
        "debug" => {
            "debug (unoptimised daemon, dependencies at opt-level 2: not the release figures)"
                .into()
        }
        _ => format!("unknown (binary in `{parent}`)"),
    }
}

/// The trimmed stdout of `bin args`, which must succeed.
fn relaybox_line(bin: &Path, args: &[&std::ffi::OsStr]) -> Result<String> {
    let out = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {} {args:?}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} {args:?} failed ({}): {}",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A loopback address whose front ports are all free (probed by binding them together).
fn front_address() -> Result<Ipv4Addr> {
    let mut last = String::new();
    for _ in 0..20 {
        let ip = relaybox_blackbox::federation::Net::fresh().host(FRONT_HOST);
        let probes: Vec<_> = FRONT_PORTS
            .iter()
            .map(|p| std::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(ip), *p)))
            .collect();
        match probes.iter().find_map(|p| p.as_ref().err()) {
            None => return Ok(ip),
            Some(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
                "cannot bind port 25 on {ip}: the front serves the standard ports, run the bench as root ({e})"
            ),
            Some(e) => last = format!("{ip}: {e}"),
        }
    }
    bail!("no loopback address with the front's ports free (last: {last})")
}

/// Run the phase; with `write`, its block replaces the label's in the results file.
pub async fn run(args: Args, bin: PathBuf, root: &Path, write: bool) -> Result<()> {
    let plan = Plan::new(args.quick);
    let load = report::load_now();
    let data_parent = root.join("target/bench-data");
    std::fs::create_dir_all(&data_parent)
        .with_context(|| format!("create {}", data_parent.display()))?;
    println!(
        "relaybox front bench ({}, label {}) — binary {}, load {load}",
        if plan.quick { "quick" } else { "full" },
        args.label,
        bin.display()
    );
    let started = Instant::now();
    let mut out = Out::default();
    let mut setup = String::new();
    let outcome = phase(&plan, &bin, &data_parent, &mut out, &mut setup).await;
    if let Err(e) = &outcome {
        out.failed("front phase", "–", e);
    }
    for n in &args.notes {
        out.note(n.clone());
    }
    let secs = started.elapsed().as_secs_f64();
    println!("front bench: {secs:.1} s");
    let mut facts = report::run_facts(
        root,
        &bin,
        args.commit.as_deref(),
        format!(
            "{} ({:.0} s in all)",
            if plan.quick { "`--quick`" } else { "full" },
            secs
        ),
        &load,
    );
    facts.extend([
        ("Build profile".to_string(), profile_of(&bin)),
        ("CPU".to_string(), crate::cpu_model()),
        ("Set-up".to_string(), setup),
        (
            "Latency".to_string(),
            format!(
                "{} round trips per path, alternating (direct, front / front, direct), one at a time {GAP:?} apart: a TLS submission session (465) sends a ~4 KB PGP/MIME message to an account idling in IMAP IDLE over TLS (993) on the same path; a sample is from writing the end of DATA to reading the matching `* n EXISTS` (read by its own task as it arrives); `NOOP`: one IMAP command's round trip on a logged-in TLS session per path",
                plan.round_trips
            ),
        ),
        (
            "Memory".to_string(),
            format!(
                "{} idle TLS IMAP sessions through the front (LOGIN, SELECT INBOX, IDLE; one account each, {OPEN_CONCURRENCY} opened at a time, all from 127.0.0.1), VmRSS from /proc/PID/status of the `relaybox front` process and of the box {SETTLE:?} after the last one opened, against a reading just before the first; per 1 000 = growth × 1 000 / sessions; then as many again straight to the box (those through the front still open) for the box's own figure without the front",
                plan.idle
            ),
        ),
    ]);
    let block = report::run_block(SECTION, &args.label, "Figure", &facts, &out, "");
    let verdict = outcome.map_err(|e| e.context("the front phase did not run through"));
    if !write {
        println!("(--no-write: tests/bench/results.md not changed)");
        return verdict;
    }
    let intro = "## Front server (issue 20)\n\nWritten by `relaybox-bench --front [--quick] [--label NAME] [--commit TEXT] [--note TEXT] [--no-write]` as root (tests/bench/src/front.rs; `RELAYBOX_BENCH_BIN=/path/to/relaybox` picks the binary, by default `target/release/relaybox`). A relay (the box) with `front`/`front_pin` and `relaybox front` on another loopback address, the box's tunnel to it as from behind a NAT. (a) The latency the front adds: submit → IMAP IDLE notification through the front against the same straight to the box, 200 round trips each way (`--quick`: 20). (b) The front's memory, and the box's growth, per 1 000 idle IMAP connections through the front (`--quick`: 100 connections, scaled). Loopback has no network delay: the figures are the front's own cost (a process hop, the tunnel's TLS and stream framing, the box's loopback hop to its internal listener); a real front adds the network's round trip between it and the box. Added latency is the difference of the two paths' percentiles (the round trips alternate, so both see the same machine); at p90/p99 the shared machine's noise is larger than the front's cost and a negative difference is that noise; the `NOOP` round trip, without the store's durable commit, shows the forwarding most clearly. Each run label has its own table.";
    report::write_labelled_run(
        &root.join("tests/bench/results.md"),
        SECTION,
        intro,
        &args.label,
        &block,
    )?;
    verdict
}

/// Start the box and its front, then measure; the figures go into `out`.
async fn phase(
    plan: &Plan,
    bin: &Path,
    data_parent: &Path,
    out: &mut Out,
    setup: &mut String,
) -> Result<()> {
    let tls = crate::client::tls_connector()?;
    let work = tempfile::Builder::new()
        .prefix("relaybox-bench-front-")
        .tempdir_in(data_parent)
        .context("create the work dir")?;

    // Both tunnel identities first, so that the front is up before the box dials it.
    let box_data = work.path().join("box-data");
    let pin_ini = work.path().join("pin.ini");
    std::fs::write(
        &pin_ini,
        format!(
            "[params]\nmail_domain = 127.0.0.1\ndata_dir = {}\n",
            box_data.display()
        ),
    )
    .context("write the pin config")?;
    let box_pin = relaybox_line(
        bin,
        &[
            "tunnel-pin".as_ref(),
            "--config".as_ref(),
            pin_ini.as_os_str(),
        ],
    )?;
    let front_data = work.path().join("front-data");
    std::fs::create_dir_all(&front_data).context("create the front's data dir")?;
    let front_pin = relaybox_line(
        bin,
        &[
            "front".as_ref(),
            "--data".as_ref(),
            front_data.as_os_str(),
            "--print-pin".as_ref(),
        ],
    )?;
    if !box_pin.starts_with("sha256:") || !front_pin.starts_with("sha256:") {
        bail!("unexpected pins: box {box_pin:?}, front {front_pin:?}");
    }
    let public = front_address()?;
    let mut front = FrontProc::start(bin, &front_data, public, &box_pin)?;
    front.wait_listening().await?;
    println!("front listening on {public} (pid {})", front.pid);
    let extra = format!("front = {public}:{TUNNEL_PORT}\nfront_pin = {front_pin}\n{SEND_LIMITS}");
    let t = Instant::now();
    let mut relay = Relay::start_with(
        bin,
        data_parent,
        &Options {
            extra_ini: &extra,
            data_dir: Some(&box_data),
            ..Options::default()
        },
    )?;
    println!("box started (pid {})", relay.pid);

    let names = crate::Names::new();
    let idler_d = names.addr('d', 0);
    let idler_f = names.addr('f', 0);
    let sender_d = names.addr('s', 0);
    let sender_f = names.addr('s', 1);
    let front_imaps = SocketAddr::new(IpAddr::V4(public), 993);
    let front_subs = SocketAddr::new(IpAddr::V4(public), 465);
    // Ready through the front: the first LOGIN (which creates the account) answers.
    let deadline = Instant::now() + START_TIMEOUT;
    let idle_f = loop {
        match Imap::login(&tls, front_imaps, &idler_f, PASSWORD).await {
            Ok(c) => break c,
            Err(e) => {
                front.check_alive()?;
                relay.check_alive()?;
                if Instant::now() >= deadline {
                    bail!(
                        "no IMAP through the front after {START_TIMEOUT:?}: {e:#}\nfront log:\n{}\nbox log:\n{}",
                        front.log_text(),
                        relay.log_tail(30)
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let link_secs = t.elapsed().as_secs_f64();
    if !front.log_text().contains("the box connected") {
        bail!("IMAP answered on the front's address, but the front never logged the box's link");
    }
    println!("IMAP through the front {link_secs:.1} s after the box started");
    *setup = format!(
        "the box: the bench's loopback relay (IP-only, listeners on 127.0.0.1, per-address limits raised, `max_load_1m = 10000`, send limit raised) with `front = {public}:{TUNNEL_PORT}` and the front's pin; the front: `relaybox front --data DIR --public {public} --box-pin <the box's pin>` (ports 25, 587, 465, 143, 993, 443, 80 and the tunnel on 4433); IMAP answered through it {link_secs:.1} s after the box was started; every client connects from 127.0.0.1"
    );

    // (a) Latency.
    let key = mail::recipient_key(&idler_f)?;
    let plaintext_len = crate::plaintext_for_target(&key, crate::MESSAGE_TARGET_BYTES)?;
    let idle_d = Imap::login(&tls, relay.ports.imaps_addr(), &idler_d, PASSWORD).await?;
    let direct = Way::open(
        &tls,
        "direct",
        (relay.ports.submissions_addr(), relay.ports.imaps_addr()),
        &sender_d,
        &idler_d,
        idle_d,
    )
    .await?;
    let through = Way::open(
        &tls,
        "front",
        (front_subs, front_imaps),
        &sender_f,
        &idler_f,
        idle_f,
    )
    .await?;
    let mut ways = [direct, through];
    latency(plan, &mut ways, &key, plaintext_len, out).await?;
    for w in ways {
        w.close().await;
    }
    front.check_alive()?;
    relay.check_alive()?;

    // (b) Memory per idle connection.
    memory(plan, &tls, &names, front_imaps, &front, &relay, out).await?;

    front.check_alive()?;
    relay.check_alive()?;
    front.stop();
    relay.stop();
    Ok(())
}

/// What the idling session's reader task reports: each `* n EXISTS` with the instant it
/// was read, or why it stopped.
type Seen = std::result::Result<(u32, Instant), String>;

/// One path from a sender to an idling account: straight to the box, or through the front.
struct Way {
    name: &'static str,
    smtp: Smtp,
    to: String,
    /// The sender's own IMAP session on this path (for `NOOP`).
    noop: Imap,
    exists: mpsc::UnboundedReceiver<Seen>,
    reader: tokio::task::JoinHandle<()>,
    /// The recipient's INBOX count when it started idling.
    base: u32,
    accepted: u32,
    /// End of DATA → `* n EXISTS`.
    data_exists: Vec<Duration>,
    /// `250` → `* n EXISTS` (0 when the EXISTS came first).
    ack_exists: Vec<Duration>,
    /// End of DATA → `250`.
    data_ack: Vec<Duration>,
    /// EXISTS read before the 250.
    early: usize,
    noops: Vec<Duration>,
}

impl Way {
    /// A sender session (submission and IMAP) and the idler `idle` (logged in as `to`)
    /// put into IDLE, read by a task of its own.
    async fn open(
        tls: &TlsConnector,
        name: &'static str,
        (subs, imaps): (SocketAddr, SocketAddr),
        from: &str,
        to: &str,
        mut idle: Imap,
    ) -> Result<Way> {
        let smtp = Smtp::login(tls, subs, from, PASSWORD)
            .await
            .with_context(|| format!("submission ({name})"))?;
        let noop = Imap::login(tls, imaps, from, PASSWORD)
            .await
            .with_context(|| format!("IMAP ({name})"))?;
        let base = idle.select_inbox().await?;
        idle.idle().await?;
        let (tx, exists) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_exists(idle, tx));
        Ok(Way {
            name,
            smtp,
            to: to.to_string(),
            noop,
            exists,
            reader,
            base,
            accepted: 0,
            data_exists: Vec::new(),
            ack_exists: Vec::new(),
            data_ack: Vec::new(),
            early: 0,
            noops: Vec::new(),
        })
    }

    /// Submit `data` and wait for the idler's EXISTS of it.
    async fn round_trip(&mut self, data: &[u8]) -> Result<()> {
        let sent = self.smtp.send(&self.to, data).await?;
        if sent.reply.code != 250 {
            bail!("{}: message refused: {}", self.name, sent.reply);
        }
        self.accepted += 1;
        let want = self.base + self.accepted;
        let deadline = sent.at + EXISTS_TIMEOUT;
        // Bounded by the deadline: each turn takes one report.
        loop {
            let seen = tokio::time::timeout_at(deadline, self.exists.recv())
                .await
                .map_err(|_| {
                    anyhow!(
                        "{}: no `* {want} EXISTS` {EXISTS_TIMEOUT:?} after the 250",
                        self.name
                    )
                })?
                .ok_or_else(|| anyhow!("{}: the idling session's reader ended", self.name))?
                .map_err(|e| anyhow!("{}: the idling session: {e}", self.name))?;
            let (count, at) = seen;
            if count >= want {
                if at < sent.at {
                    self.early += 1;
                }
                self.data_exists
                    .push(at.saturating_duration_since(sent.data_end));
                self.ack_exists.push(at.saturating_duration_since(sent.at));
                self.data_ack
                    .push(sent.at.saturating_duration_since(sent.data_end));
                return Ok(());
            }
        }
    }

    async fn noop(&mut self) -> Result<()> {
        let t = Instant::now();
        self.noop
            .command("NOOP")
            .await
            .with_context(|| format!("NOOP ({})", self.name))?;
        self.noops.push(t.elapsed());
        Ok(())
    }

    async fn close(self) {
        self.reader.abort();
        self.smtp.quit().await;
        let mut noop = self.noop;
        noop.command("LOGOUT").await.ok();
    }
}

/// Report every `* n EXISTS` the idling session reads, until the receiver is gone, the
/// session fails, or an hour passed.
async fn read_exists(mut idle: Imap, tx: mpsc::UnboundedSender<Seen>) {
    let end = Instant::now() + Duration::from_secs(3600);
    while !tx.is_closed() && Instant::now() < end {
        match idle
            .next_line_within(Instant::now() + Duration::from_secs(1))
            .await
        {
            Ok(Some(line)) => {
                if let Some(c) = exists_count(&line) {
                    let _ = tx.send(Ok((c, Instant::now())));
                }
            }
            Ok(None) => {}
            Err(e) => {
                let _ = tx.send(Err(format!("{e:#}")));
                return;
            }
        }
    }
}

/// `p50 / p90 / p99 / max` of `v` in ms.
fn spread(v: &[Duration]) -> String {
    let mut s = v.to_vec();
    s.sort();
    let p = |q: f64| percentile(&s, q).map(ms2).unwrap_or_else(|| "–".into());
    format!(
        "p50 {} / p90 {} / p99 {} / max {} ms ({} samples)",
        p(50.0),
        p(90.0),
        p(99.0),
        s.last().copied().map(ms2).unwrap_or_else(|| "–".into()),
        s.len()
    )
}

fn ms2(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// The front's figure minus the direct one at p50, p90 and p99.
fn added(direct: &[Duration], front: &[Duration]) -> String {
    let (mut d, mut f) = (direct.to_vec(), front.to_vec());
    d.sort();
    f.sort();
    let diff = |q: f64| match (percentile(&d, q), percentile(&f, q)) {
        (Some(a), Some(b)) => format!("{:+.2}", (b.as_secs_f64() - a.as_secs_f64()) * 1000.0),
        _ => "–".into(),
    };
    format!(
        "p50 {} / p90 {} / p99 {} ms",
        diff(50.0),
        diff(90.0),
        diff(99.0)
    )
}

/// (a): round trips on both ways, alternating which goes first.
async fn latency(
    plan: &Plan,
    ways: &mut [Way; 2],
    key: &pgp::composed::SignedPublicKey,
    plaintext_len: usize,
    out: &mut Out,
) -> Result<()> {
    let n = plan.round_trips;
    // The messages first (not timed): each way's sender to its idler.
    let mut msgs: [Vec<Vec<u8>>; 2] = [Vec::with_capacity(n), Vec::with_capacity(n)];
    for (w, m) in ways.iter().zip(msgs.iter_mut()) {
        for _ in 0..n {
            let a = mail::armored(key, plaintext_len)?;
            m.push(dot_stuff(&mail::pgp_mime(&w.smtp.login, &w.to, &a)));
        }
    }
    let size = msgs[0].iter().map(Vec::len).sum::<usize>() / n.max(1);
    println!("latency: {n} round trips per way …");
    for (i, pair) in msgs[0].iter().zip(&msgs[1]).enumerate() {
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for w in order {
            let data = if w == 0 { pair.0 } else { pair.1 };
            ways[w].round_trip(data).await?;
            tokio::time::sleep(GAP).await;
        }
    }
    for i in 0..n {
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for w in order {
            ways[w].noop().await?;
            tokio::time::sleep(GAP).await;
        }
    }
    let [d, f] = &*ways;
    out.row(
        "Submit→IDLE (end of DATA → `* n EXISTS`), direct",
        spread(&d.data_exists),
        "–",
        None,
    );
    out.row(
        "Submit→IDLE (end of DATA → `* n EXISTS`), through the front",
        spread(&f.data_exists),
        "–",
        None,
    );
    out.row(
        "Submit→IDLE: added by the front (front − direct)",
        added(&d.data_exists, &f.data_exists),
        "–",
        None,
    );
    out.row(
        "End of DATA → `250`, direct / through the front",
        format!("{} / {}", spread(&d.data_ack), spread(&f.data_ack)),
        "–",
        None,
    );
    out.row(
        "`250` → `* n EXISTS`, direct / through the front",
        format!("{} / {}", spread(&d.ack_exists), spread(&f.ack_exists)),
        "–",
        None,
    );
    out.row(
        "IMAP `NOOP` round trip, direct",
        spread(&d.noops),
        "–",
        None,
    );
    out.row(
        "IMAP `NOOP` round trip, through the front",
        spread(&f.noops),
        "–",
        None,
    );
    out.row(
        "IMAP `NOOP`: added by the front (front − direct)",
        added(&d.noops, &f.noops),
        "–",
        None,
    );
    out.note(format!(
        "Latency messages: {size} B on the wire on average; {} (direct) and {} (front) EXISTS were read before their `250` (counted as 0 in `250` → EXISTS).",
        d.early, f.early
    ));
    Ok(())
}

/// (b): the front's and the box's RSS before and with `plan.idle` idle sessions open
/// through the front.
async fn memory(
    plan: &Plan,
    tls: &TlsConnector,
    names: &crate::Names,
    front_imaps: SocketAddr,
    front: &FrontProc,
    relay: &Relay,
    out: &mut Out,
) -> Result<()> {
    let n = plan.idle;
    tokio::time::sleep(SETTLE).await;
    let (f0, b0) = (front.rss_kib()?, relay.rss_kib()?);
    let (ffd0, bfd0) = (front.open_fds()?, relay.open_fds()?);
    println!(
        "idle: front RSS {f0} KiB, box RSS {b0} KiB; opening {n} sessions through the front …"
    );
    let (open, open_secs) = open_idle(tls, names, 'i', front_imaps, n, "through the front").await?;
    tokio::time::sleep(SETTLE).await;
    let (f1, b1) = (front.rss_kib()?, relay.rss_kib()?);
    let (ffd1, bfd1) = (front.open_fds()?, relay.open_fds()?);
    println!(
        "  {n} sessions in {open_secs:.1} s: front RSS {f1} KiB, box RSS {b1} KiB, fds front {ffd0} → {ffd1}, box {bfd0} → {bfd1}"
    );
    // Every session holds a socket on the front: fewer means they did not go through it.
    if ffd1 < ffd0 + n {
        bail!(
            "the front holds {} more descriptors with {n} sessions open: the sessions did not all go through it",
            ffd1.saturating_sub(ffd0)
        );
    }
    let per1000 = |a: u64, b: u64| (b as f64 - a as f64) * 1000.0 / n as f64;
    let mib = |k: f64| k / 1024.0;
    out.row(
        "Front: RSS per 1 000 idle IMAP connections",
        format!(
            "{:.2} MiB ({:.1} KiB per connection; VmRSS {f0} → {f1} KiB with {n} open)",
            mib(per1000(f0, f1)),
            per1000(f0, f1) / 1000.0
        ),
        "–",
        None,
    );
    out.row(
        "Box: RSS growth per 1 000 idle IMAP connections through the front",
        format!(
            "{:.2} MiB ({:.1} KiB per connection; VmRSS {b0} → {b1} KiB with {n} open)",
            mib(per1000(b0, b1)),
            per1000(b0, b1) / 1000.0
        ),
        "–",
        None,
    );
    out.row(
        "Open descriptors per connection, front / box",
        format!(
            "{:.2} / {:.2} ({ffd0} → {ffd1} / {bfd0} → {bfd1})",
            (ffd1 as f64 - ffd0 as f64) / n as f64,
            (bfd1 as f64 - bfd0 as f64) / n as f64
        ),
        "–",
        None,
    );
    out.row(
        "Idle sessions through the front: time to open",
        format!("{open_secs:.1} s for {n} (LOGIN creating each account, SELECT, IDLE; {OPEN_CONCURRENCY} at a time)"),
        "–",
        None,
    );
    // For comparison: as many again straight to the box, the front's sessions still open
    // (so that both figures are growth into fresh memory).
    let (direct, _) = open_idle(tls, names, 'j', relay.ports.imaps_addr(), n, "direct").await?;
    tokio::time::sleep(SETTLE).await;
    let b2 = relay.rss_kib()?;
    let f2 = front.rss_kib()?;
    println!("  {n} more, direct: box RSS {b2} KiB, front RSS {f2} KiB");
    out.row(
        "Box: RSS growth per 1 000 idle IMAP connections straight to it (for comparison)",
        format!(
            "{:.2} MiB ({:.1} KiB per connection; VmRSS {b1} → {b2} KiB with {n} more open, opened after those through the front)",
            mib(per1000(b1, b2)),
            per1000(b1, b2) / 1000.0
        ),
        "–",
        None,
    );
    drop(direct);
    drop(open);
    Ok(())
}

/// Open `n` idle TLS IMAP sessions at `addr` (LOGIN creating account `names.addr(role, k)`,
/// SELECT INBOX, IDLE), [`OPEN_CONCURRENCY`] at a time; returns them and the seconds taken.
async fn open_idle(
    tls: &TlsConnector,
    names: &crate::Names,
    role: char,
    addr: SocketAddr,
    n: usize,
    what: &str,
) -> Result<(Vec<Imap>, f64)> {
    let t = Instant::now();
    let sem = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let mut set = tokio::task::JoinSet::new();
    for k in 0..n {
        let (tls, sem, login) = (tls.clone(), sem.clone(), names.addr(role, k));
        set.spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let mut imap = Imap::login(&tls, addr, &login, PASSWORD).await?;
            imap.select_inbox().await?;
            imap.idle().await?;
            Ok::<_, anyhow::Error>(imap)
        });
    }
    let deadline = Instant::now() + OPEN_TIMEOUT;
    let mut open = Vec::with_capacity(n);
    // Bounded by the number of tasks and the deadline.
    loop {
        match tokio::time::timeout_at(deadline, set.join_next()).await {
            Err(_) => {
                set.abort_all();
                bail!(
                    "{} of {n} idle sessions ({what}) open after {OPEN_TIMEOUT:?}",
                    open.len()
                );
            }
            Ok(None) => break,
            Ok(Some(r)) => open.push(
                r.map_err(anyhow::Error::from)
                    .and_then(|r| r)
                    .with_context(|| format!("idle session {} ({what})", open.len() + 1))?,
            ),
        }
    }
    Ok((open, t.elapsed().as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_is_front_minus_direct() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|m| Duration::from_millis(*m))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            added(&ms(&[3, 1, 2]), &ms(&[2, 4, 3])),
            "p50 +1.00 / p90 +1.00 / p99 +1.00 ms"
        );
        assert_eq!(
            added(&ms(&[5]), &ms(&[2])),
            "p50 -3.00 / p90 -3.00 / p99 -3.00 ms"
        );
        assert_eq!(added(&[], &ms(&[2])), "p50 – / p90 – / p99 – ms");
        assert!(spread(&ms(&[1, 2])).ends_with("max 2.00 ms (2 samples)"));
    }

    #[test]
    fn profile_from_the_path() {
        assert_eq!(
            profile_of(Path::new("/x/target/release/relaybox")),
            "release"
        );
        assert!(profile_of(Path::new("/x/target/debug/relaybox")).starts_with("debug"));
        assert!(profile_of(Path::new("/usr/bin/relaybox")).starts_with("unknown"));
    }
}
