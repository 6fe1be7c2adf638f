//! The hostile-input phase (`--hostile`, issue 13 point 7): what one crafted message,
//! one account or one address costs the relay. Each case starts a fresh relay (defaults
//! plus loopback listeners, see [`relay_options`]), measures the relay's RSS peak
//! (sampled every 5 ms and VmHWM), the latency of an unrelated client while the
//! attack runs, and what the attacker gets back; a hung relay, a refused connection or a
//! case over its deadline becomes a figure, not a panic. The results go to the
//! `hostile` section of `tests/bench/results.md`, one table per run label (`--label`),
//! so that a `before` run is kept when an `after` run is added.
//!
//! Addresses: the attacker is 127.0.0.2 (one address), unrelated clients are
//! 127.0.0.3, set-up work (account creation) comes from 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use pgp::composed::SignedPublicKey;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::client::dot_stuff;
use crate::hostile_net::{Conn, ImapResponse, Probe, ProbeKind, ProbeSummary, https_request};
use crate::mail;
use crate::relay::{Options, Peak, Relay, RssPeak};
use crate::report::{self, PhaseArgs as Args, RunOut as Out};

/// The attacker's one address.
const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// Unrelated clients (latency probes, "does the relay still answer").
const UNRELATED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
/// Set-up work.
const SETUP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
/// Password of every account (≥ 9 characters).
const PASSWORD: &str = "hostilePassword2026";
/// The relay's RLIMIT_NOFILE soft limit: what a process gets from systemd or a login
/// shell unless something raises it (the hard limit is inherited from the bench).
const RELAY_NOFILE_SOFT: u64 = 1024;
/// Issue 13's memory target: 128 MiB plus 16 KiB per open session.
const RSS_BASE_KIB: u64 = 128 * 1024;
const RSS_PER_SESSION_KIB: u64 = 16;
/// Issue 13's latency target for an unrelated client.
const UNRELATED_P99: Duration = Duration::from_millis(100);
/// Issue 13's password-guessing target, per address.
const GUESSES_PER_SEC: f64 = 1.0;
/// Interval of the open-loop latency probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Name of the results-file section.
pub const SECTION: &str = "hostile";

/// Sizes of one run.
struct Plan {
    quick: bool,
    /// Empty parts of the port-25 message (4.3 M ≈ 29 MiB).
    mx_parts: usize,
    /// Outer parts of the stored gate-trick message (1.5 M ≈ 21.5 MiB).
    trick_parts: usize,
    /// Keys of the stored-message SEARCH.
    trick_search_keys: usize,
    /// Messages of the SEARCH mailbox and keys of the two SEARCH runs.
    search_msgs: usize,
    /// Longest SEARCH command line before a LITERAL+ literal (quick: small, so that the
    /// literal path is used too).
    search_line_budget: usize,
    search_keys: usize,
    /// How often the single-connection SEARCH is repeated.
    search_reps: usize,
    search_heavy_keys: usize,
    /// Size of each big DATA / `/mxdeliv` body, and of each APPEND.
    transfer_bytes: usize,
    append_bytes: usize,
    transfers: usize,
    appends: usize,
    /// Most idle IMAP sessions tried.
    idle_imap_cap: usize,
    idle_smtp: usize,
    idle_https: usize,
    guess_conns: usize,
    guess_time: Duration,
    /// Deadline of one slow command (SEARCH, FETCH) and of a whole case.
    command_deadline: Duration,
    case_deadline: Duration,
    /// Deadline of one latency probe.
    probe_deadline: Duration,
}

const MIB: usize = 1024 * 1024;

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                mx_parts: 200_000,
                trick_parts: 50_000,
                trick_search_keys: 200,
                search_msgs: 205,
                search_line_budget: 8 * 1024,
                search_keys: 500,
                search_reps: 1,
                search_heavy_keys: 3_000,
                transfer_bytes: 4 * MIB,
                append_bytes: 4 * MIB,
                transfers: 8,
                appends: 5,
                idle_imap_cap: 1_200,
                idle_smtp: 1_000,
                idle_https: 1_100,
                guess_conns: 20,
                guess_time: Duration::from_secs(5),
                command_deadline: Duration::from_secs(30),
                case_deadline: Duration::from_secs(60),
                probe_deadline: Duration::from_secs(5),
            }
        } else {
            Plan {
                quick,
                mx_parts: 4_300_000,
                trick_parts: 1_500_000,
                trick_search_keys: 200,
                search_msgs: 205,
                search_line_budget: 60_000,
                search_keys: 4_500,
                search_reps: 3,
                search_heavy_keys: 60_000,
                transfer_bytes: 29 * MIB,
                // Just under max_message_size (30 MiB), which bounds an APPEND literal.
                append_bytes: 30 * MIB - 4096,
                transfers: 8,
                appends: 5,
                idle_imap_cap: 12_000,
                idle_smtp: 1_000,
                idle_https: 1_100,
                guess_conns: 20,
                guess_time: Duration::from_secs(20),
                command_deadline: Duration::from_secs(300),
                case_deadline: Duration::from_secs(600),
                probe_deadline: Duration::from_secs(30),
            }
        }
    }
}

/// What every case needs.
struct Ctx {
    plan: Plan,
    bin: PathBuf,
    data_parent: PathBuf,
    tls: TlsConnector,
    /// 3-letter tag making this run's account names unique.
    tag: String,
    /// The OpenPGP certificate the encrypted payloads are made for.
    key: SignedPublicKey,
}

impl Ctx {
    /// A 9-character local part at the relay: role letter, run tag, 5 digits.
    fn user(&self, role: char, i: usize) -> String {
        format!("{role}{}{:05}@[127.0.0.1]", self.tag, i % 100_000)
    }

    fn probe_user(&self) -> String {
        self.user('u', 0)
    }
}

fn rss_target(sessions: u64) -> (String, u64) {
    let kib = RSS_BASE_KIB + RSS_PER_SESSION_KIB * sessions;
    (
        format!(
            "≤ 128 MiB + 16 KiB × {sessions} open sessions = {:.1} MiB",
            kib as f64 / 1024.0
        ),
        kib,
    )
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn bytes(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{:.1} MB", n as f64 / 1e6)
    } else {
        format!("{n} B")
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// The RSS row of a case: peak, base, and how the attack was answered.
fn rss_row(out: &mut Out, case: &str, peak: &Peak, sessions: u64, detail: &str) {
    let (target, limit) = rss_target(sessions);
    let mut value = format!(
        "{} (from {}; {detail}",
        mib(peak.peak_kib),
        mib(peak.base_kib)
    );
    if !peak.alive {
        value += "; the relay was gone at the end";
    }
    value += ")";
    out.row(
        case,
        value,
        &target,
        Some(peak.peak_kib <= limit && peak.alive),
    );
}

fn probe_row(out: &mut Out, case: &str, s: &Result<ProbeSummary>) {
    let target = "p99 ≤ 100 ms";
    match s {
        Ok(s) => out.row(case, s.text(), target, Some(s.meets(UNRELATED_P99))),
        Err(e) => out.failed(case, target, e),
    }
}

/// A probe row over several runs of the same attack: the worst run's p99 first, then
/// each run's figures.
fn repeated_probe_row(out: &mut Out, case: &str, runs: &[&Result<ProbeSummary>]) {
    if let [one] = runs {
        return probe_row(out, case, one);
    }
    let target = "p99 ≤ 100 ms";
    let mut worst: Option<&ProbeSummary> = None;
    let mut parts = Vec::new();
    let mut meets = true;
    for (i, r) in runs.iter().enumerate() {
        match r {
            Ok(s) => {
                meets &= s.meets(UNRELATED_P99);
                if worst.is_none_or(|w| s.p99 > w.p99) {
                    worst = Some(s);
                }
                parts.push(format!("run {}: {}", i + 1, s.text()));
            }
            Err(e) => {
                meets = false;
                parts.push(format!("run {}: failed: {e:#}", i + 1));
            }
        }
    }
    let head = match worst {
        Some(w) if w.p99 >= w.deadline => {
            format!("worst run p99 ≥ {:.0} s", w.deadline.as_secs_f64())
        }
        Some(w) => format!("worst run p99 {}", report::ms(w.p99)),
        None => "no figures".to_string(),
    };
    out.row(
        case,
        format!("{head} ({})", parts.join("; ")),
        target,
        Some(meets),
    );
}

/// The relay of every case: the defaults, loopback listeners (relay.rs), the log on
/// stderr (counted by the connection cases), and `nofile_soft` as its open-file limit.
fn relay_options(nofile_soft: u64) -> Options<'static> {
    Options {
        strace: None,
        extra_ini: "log_stderr = true\n",
        nofile_soft: Some(nofile_soft),
        default_connection_limits: true,
        data_dir: None,
    }
}

/// A fresh relay with the open-file limit a service gets unless something raises it,
/// and the probe account created.
async fn start_relay(ctx: &Ctx) -> Result<Relay> {
    start_relay_nofile(ctx, RELAY_NOFILE_SOFT).await
}

/// [`start_relay`] with another open-file soft limit (capped at the hard limit).
async fn start_relay_nofile(ctx: &Ctx, nofile_soft: u64) -> Result<Relay> {
    let relay = Relay::start_with(&ctx.bin, &ctx.data_parent, &relay_options(nofile_soft))?;
    create_accounts(ctx, &relay, &[ctx.probe_user()]).await?;
    Ok(relay)
}

/// Create accounts by a first IMAP login (ACC-5), one after another.
async fn create_accounts(ctx: &Ctx, relay: &Relay, users: &[String]) -> Result<()> {
    for u in users {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut c = Conn::imaps_login(
            &ctx.tls,
            SETUP,
            relay.ports.imaps_addr(),
            u,
            PASSWORD,
            deadline,
        )
        .await
        .with_context(|| format!("create account {u}"))?;
        let _ = c.imap_cmd("l2", "LOGOUT", deadline, 0).await;
    }
    Ok(())
}

fn login_probe(ctx: &Ctx, relay: &Relay) -> Probe {
    Probe::start(
        ctx.tls.clone(),
        relay.ports.imaps_addr(),
        UNRELATED,
        ProbeKind::ImapsLogin {
            user: ctx.probe_user(),
            pass: PASSWORD.to_string(),
        },
        PROBE_INTERVAL,
        ctx.plan.probe_deadline,
    )
}

/// Note the relay's end state after a case (a crash is a finding).
fn after_case(out: &mut Out, name: &str, relay: &mut Relay) {
    if relay.check_alive().is_err() {
        out.note(format!(
            "{name}: the relay was no longer running at the end of the case; log tail: {}",
            relay.log_tail(5).replace('\n', " / ")
        ));
    }
    relay.stop();
}

/// The run's 3-letter account tag. Never an `x`: the SEARCH keys are `NOT FROM "x"`,
/// and a From address with an `x` would end each message's evaluation at the first key.
fn run_tag() -> String {
    use rand::seq::SliceRandom;
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwyz";
    let mut rng = rand::thread_rng();
    (0..3)
        .map(|_| char::from(*LETTERS.choose(&mut rng).unwrap_or(&b'a')))
        .collect()
}

/// Run the phase and write its section of the results file.
pub async fn run(args: Args, bin: PathBuf, root: &Path) -> Result<()> {
    let plan = Plan::new(args.quick);
    let tls = crate::client::tls_connector()?;
    let tag = run_tag();
    let key = mail::recipient_key(&format!("k{tag}00000@[127.0.0.1]"))?;
    let ctx = Ctx {
        plan,
        bin: bin.clone(),
        data_parent: root.join("target/bench-data"),
        tls,
        tag,
        key,
    };
    let load = report::load_now();
    println!(
        "relaybox hostile-input bench ({}, label {}) — binary {}, load {load}",
        if ctx.plan.quick { "quick" } else { "full" },
        args.label,
        bin.display()
    );
    let mut out = Out::default();
    let started = Instant::now();

    let cases: [(&str, u32); 12] = [
        ("reference", 1),
        ("port-25 many parts", 1),
        ("gate trick", 2),
        ("SEARCH cost", 1),
        ("SEARCH budget", 1),
        ("big DATA", 1),
        ("big /mxdeliv", 1),
        ("big APPEND", 1),
        ("idle IMAP sessions", 1),
        ("idle port-25 sockets", 1),
        ("idle 443 sockets", 1),
        ("password guessing", 1),
    ];
    let names: Vec<&str> = cases.iter().map(|(n, _)| *n).collect();
    args.check_cases(&names, "case")?;
    for (name, scale) in cases {
        if !args.wants(name) {
            continue;
        }
        println!("case: {name} …");
        let limit = ctx.plan.case_deadline * scale;
        let t = Instant::now();
        let r = tokio::time::timeout(limit, run_case(name, &ctx, &mut out)).await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => out.failed(&format!("{name}: case"), "–", &e),
            Err(_) => out.row(
                &format!("{name}: case"),
                format!("no result within the case deadline of {}", secs(limit)),
                "–",
                Some(false),
            ),
        }
        println!("  ({name}: {:.1} s)", t.elapsed().as_secs_f64());
    }
    let total = started.elapsed();
    for n in &args.notes {
        out.note(n.clone());
    }

    let facts = facts(&args, &ctx, &bin, root, &load, total);
    let block = run_block(&args.label, &facts, &out);
    let path = root.join("tests/bench/results.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let body = section_body(
        report::section(&old, SECTION).unwrap_or(""),
        &args.label,
        &block,
    );
    report::write_section(&path, SECTION, &body)
        .with_context(|| format!("write {}", path.display()))?;
    println!(
        "wrote the `{SECTION}` section ({}) of {}",
        args.label,
        path.display()
    );
    Ok(())
}

async fn run_case(name: &str, ctx: &Ctx, out: &mut Out) -> Result<()> {
    match name {
        "reference" => case_reference(ctx, out).await,
        "port-25 many parts" => case_mx_parts(ctx, out).await,
        "gate trick" => case_trick(ctx, out).await,
        "SEARCH cost" => case_search(ctx, out).await,
        "SEARCH budget" => case_search_budget(ctx, out).await,
        "big DATA" => case_big_data(ctx, out).await,
        "big /mxdeliv" => case_big_mxdeliv(ctx, out).await,
        "big APPEND" => case_big_append(ctx, out).await,
        "idle IMAP sessions" => case_idle_imap(ctx, out).await,
        "idle port-25 sockets" => case_idle_smtp(ctx, out).await,
        "idle 443 sockets" => case_idle_https(ctx, out).await,
        "password guessing" => case_passwords(ctx, out).await,
        _ => Err(anyhow!("unknown case {name}")),
    }
}

fn facts(
    args: &Args,
    ctx: &Ctx,
    bin: &Path,
    root: &Path,
    load: &str,
    total: Duration,
) -> Vec<(String, String)> {
    let p = &ctx.plan;
    let mut facts = report::run_facts(
        root,
        bin,
        args.commit.as_deref(),
        format!(
            "{} ({:.0} s in all)",
            if p.quick { "`--quick`" } else { "full" },
            total.as_secs_f64()
        ),
        load,
    );
    facts.extend([
        (
            "Relay".into(),
            format!(
                "a fresh one per case: the defaults except loopback listeners, IP-only mode (`mail_domain = 127.0.0.1`), `max_load_1m = 10000` (account creation on the shared machine), `log_stderr = true`; started with RLIMIT_NOFILE soft {RELAY_NOFILE_SOFT} (what a service gets unless raised), hard inherited — except the port-25 and 443 idle-socket cases, started with soft = hard so that they measure the connection caps, not the open-file limit"
            ),
        ),
        (
            "Clients".into(),
            "attacker 127.0.0.2 (one address), unrelated clients 127.0.0.3, set-up 127.0.0.1; latency probes start every 100 ms whether or not the earlier ones finished".into(),
        ),
    ]);
    facts
}

/// One run's block: heading, facts, table, notes, between its own markers.
fn run_block(label: &str, facts: &[(String, String)], out: &Out) -> String {
    report::run_block(SECTION, label, "Case", facts, out, "")
}

/// The whole section: intro, a comparison table of every run label, then each run's
/// block (`block` for `label` replacing an older one of that label, or appended).
fn section_body(old_section: &str, label: &str, block: &str) -> String {
    let intro = "## Hostile input (issue 13)\n\nWritten by `cargo run --release -p relaybox-bench -- --hostile [--quick] [--label NAME] [--commit TEXT] [--note TEXT]` (tests/bench/src/hostile.rs; `RELAYBOX_BENCH_BIN=/path/to/relaybox` picks the binary). Each run label has its own table below; a run replaces only the table of its label; with more than one label a comparison table (headline figure and verdict per label) comes first. Targets are issue 13's: RSS ≤ 128 MiB + 16 KiB per open session, an unrelated client's p99 ≤ 100 ms, ≤ 1 password guess per second per address.";
    report::labelled_section_body(SECTION, intro, "Case", old_section, label, block)
}

// ---- cases ----------------------------------------------------------------------------

/// Reference: the unrelated login's latency on an idle relay (the floor of the probe).
async fn case_reference(ctx: &Ctx, out: &mut Out) -> Result<()> {
    let mut relay = start_relay(ctx).await?;
    let (soft, hard) = relay.nofile_limits()?;
    let fds = relay.open_fds()?;
    out.note(format!(
        "reference relay: RSS {} after start, {fds} open files, RLIMIT_NOFILE soft {soft} / hard {hard} (/proc/<pid>/limits)",
        mib(relay.rss_kib()?)
    ));
    let probe = login_probe(ctx, &relay);
    tokio::time::sleep(if ctx.plan.quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(10)
    })
    .await;
    let s = probe.finish().await;
    probe_row(out, "Reference: unrelated IMAPS login on an idle relay", &s);
    after_case(out, "reference", &mut relay);
    Ok(())
}

/// Point 2: one unauthenticated port-25 message of millions of empty MIME parts.
async fn case_mx_parts(ctx: &Ctx, out: &mut Out) -> Result<()> {
    let p = &ctx.plan;
    let mut relay = start_relay(ctx).await?;
    let rcpt = ctx.user('r', 0);
    create_accounts(ctx, &relay, std::slice::from_ref(&rcpt)).await?;
    let from = "attacker@[127.0.0.2]";
    let data = dot_stuff(&mail::many_empty_parts(from, &rcpt, p.mx_parts));
    let size = data.len() as f64 / MIB as f64;
    let case = format!(
        "Port 25, unauthenticated: {size:.1} MiB message of {:.2} M empty MIME parts — RSS peak",
        p.mx_parts as f64 / 1e6
    );
    let probe = login_probe(ctx, &relay);
    let rss = RssPeak::start(relay.pid);
    let t = Instant::now();
    let deadline = t + p.command_deadline;
    let reply = async {
        let mut c = Conn::mx(&ctx.tls, ATTACKER, relay.ports.smtp_addr(), deadline).await?;
        c.smtp_transaction(from, &rcpt, &data, deadline).await
    }
    .await;
    let took = t.elapsed();
    let peak = rss.finish();
    let s = probe.finish().await;
    let answer = match &reply {
        Ok(r) => format!("reply `{r}` after {}", secs(took)),
        Err(e) => format!("no reply: {e:#} after {}", secs(took)),
    };
    rss_row(out, &case, &peak, 1, &answer);
    probe_row(out, "Port 25 many-parts message: unrelated IMAPS login", &s);
    after_case(out, "port-25 many parts", &mut relay);
    Ok(())
}

/// `tag SEARCH` with `keys` × `NOT FROM "x"`. Lines stay under `line_budget` (the
/// relay's line limit is 64 KiB): past it a key's value is sent as a LITERAL+ literal
/// (RFC 7888), which ends the line.
fn search_command(tag: &str, keys: usize, line_budget: usize) -> Vec<u8> {
    let mut out = format!("{tag} SEARCH").into_bytes();
    let mut line_len = out.len();
    for _ in 0..keys {
        // Room for one more quoted key and then a literal announcement.
        if line_len + 13 + 14 > line_budget {
            out.extend_from_slice(b" NOT FROM {1+}\r\nx");
            line_len = 1;
        } else {
            out.extend_from_slice(b" NOT FROM \"x\"");
            line_len += 13;
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// `APPEND INBOX` of `msg` with a LITERAL+ literal.
async fn append(c: &mut Conn, tag: &str, msg: &[u8], deadline: Instant) -> Result<ImapResponse> {
    c.write(
        format!("{tag} APPEND INBOX {{{}+}}\r\n", msg.len()).as_bytes(),
        deadline,
    )
    .await?;
    // A refused literal is still read (and dropped) by the relay (RFC 7888 §4).
    c.write(msg, deadline).await?;
    c.write(b"\r\n", deadline).await?;
    c.imap_response(tag, deadline, 0).await
}

/// `SELECT INBOX`; the message count.
async fn select(c: &mut Conn, deadline: Instant) -> Result<u32> {
    let r = c.imap_cmd("s1", "SELECT INBOX", deadline, 8192).await?;
    if !r.ok() {
        bail!("SELECT INBOX: {}", r.status);
    }
    let text = String::from_utf8_lossy(&r.kept);
    text.lines()
        .find_map(crate::client::exists_count)
        .ok_or_else(|| anyhow!("SELECT without EXISTS"))
}

fn imap_outcome(r: &Result<ImapResponse>, took: Duration) -> String {
    match r {
        Ok(r) => {
            let st: String = r.status.chars().take(80).collect();
            format!("`{st}` after {}", secs(took))
        }
        Err(e) => format!("no answer: {e:#} after {}", secs(took)),
    }
}

/// Point 1 and 2: the gate trick, small (does cleartext pass?) and scaled up (what a
/// stored message of 1.5 M parts costs its recipient's FETCH, BODYSTRUCTURE, SEARCH).
async fn case_trick(ctx: &Ctx, out: &mut Out) -> Result<()> {
    let p = &ctx.plan;
    let mut relay = start_relay(ctx).await?;
    let sender = ctx.user('s', 0);
    let (small_rcpt, big_rcpt) = (ctx.user('r', 0), ctx.user('r', 1));
    create_accounts(
        ctx,
        &relay,
        &[sender.clone(), small_rcpt.clone(), big_rcpt.clone()],
    )
    .await?;
    let subs = relay.ports.submissions_addr();
    let imaps = relay.ports.imaps_addr();

    // Small: the trick with one cleartext part, and the same cleartext sent plainly.
    const SECRET: &str = "SECRET cleartext past the gate";
    let small = async {
        let d = Instant::now() + Duration::from_secs(60);
        let a = mail::armored(&ctx.key, 300)?;
        let trick = mail::gate_trick(&sender, &small_rcpt, &a, Some(SECRET), 0);
        let control = mail::cleartext(&sender, &small_rcpt, SECRET);
        let mut c = Conn::smtps_login(&ctx.tls, ATTACKER, subs, &sender, PASSWORD, d).await?;
        let t = c
            .smtp_transaction(&sender, &small_rcpt, &dot_stuff(&trick), d)
            .await?;
        let k = c
            .smtp_transaction(&sender, &small_rcpt, &dot_stuff(&control), d)
            .await?;
        let mut body1 = String::from("not stored");
        if t.code == 250 {
            let mut r = Conn::imaps_login(&ctx.tls, SETUP, imaps, &small_rcpt, PASSWORD, d).await?;
            let n = select(&mut r, d).await?;
            let f = r
                .imap_cmd("f1", &format!("FETCH {n} (BODY.PEEK[1])"), d, 4096)
                .await?;
            let text = String::from_utf8_lossy(&f.kept);
            body1 = if text.contains(SECRET) {
                "`BODY[1]` of the stored message is the cleartext".into()
            } else {
                format!(
                    "`BODY[1]` is not the cleartext ({})",
                    text.chars().take(80).collect::<String>()
                )
            };
        }
        Ok::<_, anyhow::Error>((t, k, body1))
    }
    .await;
    let case = "Gate bypass: cleartext part after the closing boundary, under a first `multipart/mixed` Content-Type";
    match small {
        Ok((t, k, body1)) => {
            let bypass = t.code == 250;
            out.row(
                case,
                format!(
                    "{} (trick: `{t}`; the same cleartext as a plain message: `{k}`; {body1})",
                    if bypass { "yes" } else { "no" }
                ),
                "no: refused (5xx)",
                Some(!bypass),
            );
        }
        Err(e) => out.failed(case, "no: refused (5xx)", &e),
    }

    // Scaled up: 1.5 M outer parts after the closing boundary.
    let a = mail::armored(&ctx.key, 2000)?;
    let msg = mail::gate_trick(&sender, &big_rcpt, &a, None, p.trick_parts);
    let size = msg.len() as f64 / MIB as f64;
    let what = format!("{:.2} M parts, {size:.1} MiB", p.trick_parts as f64 / 1e6);
    let probe = login_probe(ctx, &relay);
    let rss = RssPeak::start(relay.pid);
    let t = Instant::now();
    let d = t + p.command_deadline;
    let reply = async {
        let mut c = Conn::smtps_login(&ctx.tls, ATTACKER, subs, &sender, PASSWORD, d).await?;
        c.smtp_transaction(&sender, &big_rcpt, &dot_stuff(&msg), d)
            .await
    }
    .await;
    let took = t.elapsed();
    let peak = rss.finish();
    let s = probe.finish().await;
    let case = format!("Gate-trick message ({what}) by authenticated submission: reply");
    let mut stored = false;
    match &reply {
        Ok(r) => {
            stored = r.code == 250;
            out.row(
                &case,
                format!("{} (`{r}` after {})", r.code, secs(took)),
                "refused (5xx)",
                Some(r.code >= 500),
            );
        }
        Err(e) => out.failed(&case, "refused (5xx)", e),
    }
    rss_row(
        out,
        &format!("Gate-trick message ({what}) by submission — RSS peak"),
        &peak,
        2,
        "while submitted and judged",
    );
    probe_row(
        out,
        "Gate-trick message by submission: unrelated IMAPS login",
        &s,
    );
    if !stored {
        // The relay refused it: try the mailbox directly.
        let rss = RssPeak::start(relay.pid);
        let t = Instant::now();
        let d = t + p.command_deadline;
        let r = async {
            let mut c =
                Conn::imaps_login(&ctx.tls, ATTACKER, imaps, &big_rcpt, PASSWORD, d).await?;
            append(&mut c, "a1", &msg, d).await
        }
        .await;
        let took = t.elapsed();
        let peak = rss.finish();
        stored = r.as_ref().is_ok_and(|r| r.ok());
        out.row(
            &format!("Gate-trick message ({what}) by IMAP APPEND into the recipient's INBOX"),
            format!(
                "{} ({}; RSS peak {})",
                if stored { "stored" } else { "not stored" },
                imap_outcome(&r, took),
                mib(peak.peak_kib)
            ),
            "–",
            None,
        );
    }
    if !stored {
        out.note("the gate-trick message was not stored: its FETCH/BODYSTRUCTURE/SEARCH costs were not measured".into());
        after_case(out, "gate trick", &mut relay);
        return Ok(());
    }

    // The recipient reads it.
    let d0 = Instant::now() + Duration::from_secs(60);
    let mut c = Conn::imaps_login(&ctx.tls, SETUP, imaps, &big_rcpt, PASSWORD, d0).await?;
    let n = select(&mut c, d0).await?;
    let steps: [(&str, String, &str); 3] = [
        (
            "FETCH BODY.PEEK[HEADER.FIELDS (FROM)]",
            format!("FETCH {n} (BODY.PEEK[HEADER.FIELDS (FROM)])"),
            "f1",
        ),
        (
            "FETCH BODYSTRUCTURE",
            format!("FETCH {n} (BODYSTRUCTURE)"),
            "f2",
        ),
        (
            "SEARCH",
            String::from_utf8_lossy(&search_command("f3", p.trick_search_keys, 60_000))
                .trim_end()
                .trim_start_matches("f3 ")
                .to_string(),
            "f3",
        ),
    ];
    for (name, cmd, tag) in steps {
        let probe = login_probe(ctx, &relay);
        let rss = RssPeak::start(relay.pid);
        let t = Instant::now();
        let r = c.imap_cmd(tag, &cmd, t + p.command_deadline, 0).await;
        let took = t.elapsed();
        let peak = rss.finish();
        let s = probe.finish().await;
        let mut detail = imap_outcome(&r, took);
        if let Ok(r) = &r {
            detail += &format!("; answer {}", bytes(r.bytes));
        }
        if name == "SEARCH" {
            let case = format!(
                "Stored gate-trick message: SEARCH with {} NOT FROM keys — duration",
                p.trick_search_keys
            );
            let v = match &r {
                Ok(_) => format!("{} ({detail}; RSS peak {})", secs(took), mib(peak.peak_kib)),
                Err(_) => format!("> {} ({detail})", secs(took)),
            };
            out.row(&case, v, "–", None);
        } else {
            rss_row(
                out,
                &format!("Stored gate-trick message: recipient's {name} — RSS peak"),
                &peak,
                2,
                &detail,
            );
        }
        probe_row(
            out,
            &format!("Stored gate-trick message, recipient's {name}: unrelated IMAPS login"),
            &s,
        );
        if r.is_err() {
            out.note(format!(
                "gate trick: the recipient's {name} did not complete; the remaining steps were skipped"
            ));
            break;
        }
    }
    after_case(out, "gate trick", &mut relay);
    Ok(())
}

/// One SEARCH on its own connection: duration and outcome.
async fn timed_search(
    ctx: &Ctx,
    imaps: SocketAddr,
    user: &str,
    keys: usize,
    deadline: Duration,
) -> (Duration, Result<ImapResponse>) {
    let d = Instant::now() + Duration::from_secs(60);
    let mut c = match Conn::imaps_login(&ctx.tls, ATTACKER, imaps, user, PASSWORD, d).await {
        Ok(c) => c,
        Err(e) => return (Duration::ZERO, Err(e)),
    };
    if let Err(e) = select(&mut c, d).await {
        return (Duration::ZERO, Err(e));
    }
    let cmd = search_command("q1", keys, ctx.plan.search_line_budget);
    let t = Instant::now();
    let r = async {
        c.write(&cmd, t + deadline).await?;
        c.imap_response("q1", t + deadline, 0).await
    }
    .await;
    (t.elapsed(), r)
}

/// Point 3: SEARCH with thousands of keys over a small mailbox.
async fn case_search(ctx: &Ctx, out: &mut Out) -> Result<()> {
    let p = &ctx.plan;
    let mut relay = start_relay(ctx).await?;
    let user = ctx.user('v', 0);
    create_accounts(ctx, &relay, std::slice::from_ref(&user)).await?;
    let imaps = relay.ports.imaps_addr();
    {
        let d = Instant::now() + Duration::from_secs(120);
        let mut c = Conn::imaps_login(&ctx.tls, SETUP, imaps, &user, PASSWORD, d).await?;
        for i in 0..p.search_msgs {
            let a = mail::armored(&ctx.key, 2200)?;
            let m = mail::pgp_mime(&ctx.user('s', i), &user, &a);
            let r = append(&mut c, "a1", &m, d).await?;
            if !r.ok() {
                bail!("APPEND of message {i}: {}", r.status);
            }
        }
    }

    // 4 500 keys on one connection, a few times over (whether one blocked runtime
    // worker stalls the others varies from run to run); an unrelated SMTPS greeting
    // and IMAPS login meanwhile.
    let mut runs = Vec::new();
    for _ in 0..p.search_reps {
        let smtps_probe = Probe::start(
            ctx.tls.clone(),
            relay.ports.submissions_addr(),
            UNRELATED,
            ProbeKind::SmtpsGreeting,
            PROBE_INTERVAL,
            p.probe_deadline,
        );
        let login = login_probe(ctx, &relay);
        let (took, r) = timed_search(ctx, imaps, &user, p.search_keys, p.command_deadline).await;
        let s1 = smtps_probe.finish().await;
        let s2 = login.finish().await;
        runs.push((took, r, s1, s2));
    }
    let what = format!(
        "SEARCH of {} NOT FROM keys over {} messages",
        p.search_keys, p.search_msgs
    );
    let v = runs
        .iter()
        .map(|(took, r, _, _)| match r {
            Ok(_) => secs(*took),
            Err(_) => format!("> {}", secs(*took)),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let outcomes = runs
        .iter()
        .map(|(took, r, _, _)| imap_outcome(r, *took))
        .collect::<Vec<_>>()
        .join("; ");
    let reps = if runs.len() > 1 {
        format!("{} runs one after another: ", runs.len())
    } else {
        String::new()
    };
    out.row(
        &format!("{what} — duration"),
        format!("{v} ({reps}{outcomes})"),
        "–",
        None,
    );
    let smtps: Vec<_> = runs.iter().map(|r| &r.2).collect();
    let logins: Vec<_> = runs.iter().map(|r| &r.3).collect();
    repeated_probe_row(out, &format!("{what}: unrelated SMTPS greeting"), &smtps);
    repeated_probe_row(out, &format!("{what}: unrelated IMAPS login"), &logins);

    // Two connections with the heavy key count at once.
    let login = login_probe(ctx, &relay);
    let rss = RssPeak::start(relay.pid);
    let (a, b) = tokio::join!(
        timed_search(ctx, imaps, &user, p.search_heavy_keys, p.command_deadline),
        timed_search(ctx, imaps, &user, p.search_heavy_keys, p.command_deadline),
    );
    let peak = rss.finish();
    let s = login.finish().await;
    let what = format!(
        "2 connections × SEARCH of {} NOT FROM keys (LITERAL+) over {} messages",
        p.search_heavy_keys, p.search_msgs
    );
    let one = |(took, r): &(Duration, Result<ImapResponse>)| match r {
        Ok(_) => secs(*took),
        Err(_) => format!("> {}", secs(*took)),
    };
    out.row(
        &format!("{what} — durations"),
        format!(
            "{} and {} ({}; {}; RSS peak {})",
            one(&a),
            one(&b),
            imap_outcome(&a.1, a.0),
            imap_outcome(&b.1, b.0),
            mib(peak.peak_kib)
        ),
        "–",
        None,
    );
    probe_row(out, &format!("{what}: unrelated IMAPS login"), &s);
    after_case(out, "SEARCH cost", &mut relay);
    Ok(())
}

/// Run `n` attacker tasks at once; each result as text, with the RSS peak and the
/// unrelated login latency meanwhile.
async fn concurrent<F, Fut>(
    ctx: &Ctx,
    relay: &Relay,
    n: usize,
    task: F,
) -> (Peak, Result<ProbeSummary>, Vec<Result<String>>, Duration)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<String>> + Send + 'static,
{
    let probe = login_probe(ctx, relay);
    let rss = RssPeak::start(relay.pid);
    let t = Instant::now();
    let handles: Vec<_> = (0..n).map(|i| tokio::spawn(task(i))).collect();
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.map_err(anyhow::Error::from).and_then(|r| r));
    }
    let took = t.elapsed();
    let peak = rss.finish();
    let s = probe.finish().await;
    (peak, s, results, took)
}

/// "8 × 250 …" from task results.
fn tally(results: &[Result<String>]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for r in results {
        let k = match r {
            Ok(s) => s.clone(),
            Err(e) => {
                let e = format!("{e:#}");
                format!("failed: {}", e.chars().take(100).collect::<String>())
            }
        };
        match counts.iter_mut().find(|(c, _)| *c == k) {
            Some(c) => c.1 += 1,
            None => counts.push((k, 1)),
        }
    }
    counts
        .iter()
        .map(|(k, n)| format!("{n} × `{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Point 4: concurrent big DATA transfers on port 25.
async fn case_big_data(ctx: &Ctx, out: &mut Out) -> Result<()> {
    let p = &ctx.plan;
    let mut relay = start_relay(ctx).await?;
    let rcpt = ctx.user('r', 0);
    create_accounts(ctx, &relay, std::slice::from_ref(&rcpt)).await?;
    let from = "attacker@[127.0.0.2]";
    let msg = mail::pgp_mime_of_size(&ctx.key, from, &rcpt, p.transfer_bytes)?;
    let data = Arc::new(dot_stuff(&msg));
    let size = msg.len() as f64 / MIB as f64;
    drop(msg);
    let (smtp, tls, limit) = (relay.ports.smtp_addr(), ctx.tls.clone(), p.command_deadline);
    let (peak, s, results, took) = concurrent(ctx, &relay, p.transfers, |_| {
        let (data, tls, rcpt) = (data.clone(), tls.clone(), rcpt.clone());
        async move {
            let d = Instant::now() + limit;
            let mut c = Conn::mx(&tls, ATTACKER, smtp, d).await?;
            let r = c.smtp_transaction(from, &rcpt, &data, d).await?;
            Ok(r.to_string())
        }
    })
    .await;
    let what = format!(
        "{} concurrent {size:.1} MiB DATA transfers on port 25 (PGP/MIME, to a local recipient)",
        p.transfers
    );
    rss_row(
        out,
        &format!("{what} — RSS peak"),
        &peak,
        p.transfers as u64,
        &format!("{} in {}", tally(&results), secs(took)),
    );
    probe_row(out, &format!("{what}: unrelated IMAPS login"), &s);
    after_case(out, "big DATA", &mut relay);
    Ok(())
}

/// Point 4: concurrent big `/mxdeliv` bodies.
async fn case_big_mxdeliv(ctx: &Ctx, out: &mut Out) -> Result<()> {
    let p = &ctx.plan;
    let mut relay = start_relay(ctx).await?;
    let rcpt = ctx.user('r', 0);
    create_accounts(ctx, &relay, std::slice::from_ref(&rcpt)).await?;
    let from = "attacker@[127.0.0.2]";
    let msg = Arc::new(mail::pgp_mime_of_size(
        &ctx.key,
        from,
        &rcpt,
        p.transfer_bytes,
    )?);
    let size = msg.len() as f64 / MIB as f64;
    let (https, tls, limit) = (
        relay.ports.https_addr(),
        ctx.tls.clone(),
        p.command_deadline,
    );
    let (peak, s, results, took) = concurrent(ctx, &relay, p.transfers, |_| {
        let (msg, tls, rcpt) = (msg.clone(), tls.clone(), rcpt.clone());
        async move {
            let d = Instant::now() + limit;
            // IN-6: envelope in the headers, the raw message as the body.
            let head = format!(
                "POST /mxdeliv HTTP/1.1\r\nX-Mail-From: <{from}>\r\nX-Mail-To: <{rcpt}>\r\nContent-Type: message/rfc822"
            );
            let r = https_request(&tls, ATTACKER, https, &head, &msg, d).await?;
            Ok(format!("{} {}", r.status, r.body.trim()))
        }
    })
    .await;
    let what = format!(
        "{} concurrent {size:.1} MiB `/mxdeliv` POST bodies (HTTPS)",
        p.transfers
    );
    rss_row(
        out,
        &format!("{what} — RSS peak"),
        &peak,
        p.transfers as u64,
        &format!("{} in {}", tally(&results), secs(took)),
    );
    probe_row(out, &format!("{what}: unrelated IMAPS login"), &s);
    after_case(out, "big /mxdeliv", &mut relay);
    Ok(())
}

/// Point 3, the work a relay does allow: text searches over big stored messages, one
/// that finishes and one that runs until its work budget is spent, with an unrelated
/// login meanwhile (CPU-heavy IMAP work must not delay other sessions).
async fn case_search_budget(ctx: &Ctx, out: &mut Out) -> Result<()> {
    let p = &ctx.plan;
    let mut relay = start_relay(ctx).await?;
    let user = ctx.user('t', 0);
    create_accounts(ctx, &relay, std::slice::from_ref(&user)).await?;
    let imaps = relay.ports.imaps_addr();
    let msgs = if p.quick { 2 } else { 6 };
    let size = 4 * MIB;
    let d = Instant::now() + Duration::from_secs(300);
    let mut c = Conn::imaps_login(&ctx.tls, SETUP, imaps, &user, PASSWORD, d).await?;
    for i in 0..msgs {
        // Plain text lines without a `q` anywhere (the search keys look for one).
        let mut m = format!("From: t{i}@[127.0.0.2]\r\nSubject: big text {i}\r\n\r\n").into_bytes();
        while m.len() < size {
            m.extend_from_slice(b"lorem ipsum dolor sit amet, consectetur adipiscing elit\r\n");
        }
        let r = append(&mut c, "a1", &m, d).await?;
        if !r.ok() {
            bail!("APPEND of message {i}: {}", r.status);
        }
    }
    select(&mut c, d).await?;
    let runs: [(&str, usize); 2] = [("finishes", 2), ("spends its whole budget", 100)];
    for (label, keys) in runs {
        let probe = login_probe(ctx, &relay);
        let cmd = format!("q1 SEARCH {}\r\n", vec!["NOT TEXT \"q\""; keys].join(" "));
        let t = Instant::now();
        let r = async {
            c.write(cmd.as_bytes(), t + p.command_deadline).await?;
            c.imap_response("q1", t + p.command_deadline, 256).await
        }
        .await;
        let took = t.elapsed();
        let s = probe.finish().await;
        let what = format!(
            "SEARCH of {keys} NOT TEXT keys over {msgs} × {} MiB messages ({label})",
            size / MIB
        );
        out.row(
            &format!("{what} — answer"),
            imap_outcome(&r, took),
            "–",
            None,
        );
        probe_row(out, &format!("{what}: unrelated IMAPS login"), &s);
    }
    after_case(out, "SEARCH budget", &mut relay);
    Ok(())
}

/// Point 4: concurrent big IMAP APPENDs, each by its own account.
async fn case_big_append(ctx: &Ctx, out: &mut Out) -> Result<()> {
    let p = &ctx.plan;
    let mut relay = start_relay(ctx).await?;
    let users: Vec<String> = (0..p.appends).map(|i| ctx.user('a', i)).collect();
    create_accounts(ctx, &relay, &users).await?;
    let msg = Arc::new(mail::pgp_mime_of_size(
        &ctx.key,
        "someone@[127.0.0.2]",
        &users[0],
        p.append_bytes,
    )?);
    let size = msg.len() as f64 / MIB as f64;
    let (imaps, tls, limit) = (
        relay.ports.imaps_addr(),
        ctx.tls.clone(),
        p.command_deadline,
    );
    let users = Arc::new(users);
    let (peak, s, results, took) = concurrent(ctx, &relay, p.appends, |i| {
        let (msg, tls, users) = (msg.clone(), tls.clone(), users.clone());
        async move {
            let d = Instant::now() + limit;
            let mut c = Conn::imaps_login(&tls, ATTACKER, imaps, &users[i], PASSWORD, d).await?;
            let r = append(&mut c, "a1", &msg, d).await?;
            Ok(r.status.chars().take(60).collect())
        }
    })
    .await;
    let what = format!(
        "{} concurrent {size:.1} MiB IMAP APPENDs (LITERAL+)",
        p.appends
    );
    rss_row(
        out,
        &format!("{what} — RSS peak"),
        &peak,
        p.appends as u64,
        &format!("{} in {}", tally(&results), secs(took)),
    );
    probe_row(out, &format!("{what}: unrelated IMAPS login"), &s);
    after_case(out, "big APPEND", &mut relay);
    Ok(())
}

/// Log lines about refused or failed accepts (point 4 of the issue: one per refusal).
fn refusal_lines(log: &str) -> (usize, usize) {
    let refusals = log
        .lines()
        .filter(|l| {
            l.contains("accept failed")
                || l.contains("limit reached")
                || l.contains("Too many open files")
                || l.contains("too many connections")
        })
        .count();
    (log.lines().count(), refusals)
}

/// Whether other listeners answer an unrelated client: SMTPS greeting, IMAPS login,
/// `POST /new`.
async fn others_answer(ctx: &Ctx, relay: &Relay) -> (bool, String) {
    let d = Instant::now() + Duration::from_secs(5);
    let user = ctx.probe_user();
    let (smtps, imaps, new) = tokio::join!(
        async {
            let mut c = Conn::tls(&ctx.tls, UNRELATED, relay.ports.submissions_addr(), d).await?;
            c.smtp_reply(d).await
        },
        Conn::imaps_login(
            &ctx.tls,
            UNRELATED,
            relay.ports.imaps_addr(),
            &user,
            PASSWORD,
            d,
        ),
        https_request(
            &ctx.tls,
            UNRELATED,
            relay.ports.https_addr(),
            "POST /new HTTP/1.1",
            b"",
            d,
        ),
    );
    let short = |e: &anyhow::Error| {
        let e = format!("{e:#}");
        e.chars().take(80).collect::<String>()
    };
    let answered = [
        smtps.as_ref().is_ok_and(|g| g.code == 220),
        imaps.is_ok(),
        new.as_ref().is_ok_and(|r| r.status == 200),
    ]
    .iter()
    .filter(|a| **a)
    .count();
    let ok = answered == 3;
    let text = format!(
        "{answered} of 3 answer (SMTPS greeting {}; IMAPS login {}; `POST /new` {})",
        match &smtps {
            Ok(g) => format!("`{}`", g.to_string().chars().take(40).collect::<String>()),
            Err(e) => format!("failed ({})", short(e)),
        },
        match &imaps {
            Ok(_) => "OK".to_string(),
            Err(e) => format!("failed ({})", short(e)),
        },
        match &new {
            Ok(r) => r.status.to_string(),
            Err(e) => format!("failed ({})", short(e)),
        },
    );
    (ok, text)
}

/// Open up to `cap` idle connections from the attacker's address to `dst`, `conc` at a
/// time, each reading its first line within 3 s; stops after `max_failures` failures.
/// Returns the held connections with their first lines, and the failures.
async fn open_idle(
    dst: SocketAddr,
    cap: usize,
    conc: usize,
    max_failures: usize,
    read_first_line: bool,
) -> (Vec<(Conn, String)>, Vec<String>) {
    let held = Arc::new(Mutex::new(Vec::<(Conn, String)>::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let nfail = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..conc {
        let (held, failures, nfail, next) =
            (held.clone(), failures.clone(), nfail.clone(), next.clone());
        set.spawn(async move {
            // Bounded by `cap` attempts in all.
            while next.fetch_add(1, Ordering::SeqCst) < cap
                && nfail.load(Ordering::SeqCst) < max_failures
            {
                let d = Instant::now() + Duration::from_secs(3);
                let r = async {
                    let mut c = Conn::plain(ATTACKER, dst, d).await?;
                    let first = if read_first_line {
                        c.line(d).await?
                    } else {
                        String::new()
                    };
                    Ok::<_, anyhow::Error>((c, first))
                }
                .await;
                match r {
                    Ok(x) => {
                        if let Ok(mut h) = held.lock() {
                            h.push(x);
                        }
                    }
                    Err(e) => {
                        nfail.fetch_add(1, Ordering::SeqCst);
                        if let Ok(mut f) = failures.lock() {
                            f.push(format!("{e:#}"));
                        }
                    }
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    let held = std::mem::take(&mut *held.lock().unwrap_or_else(|e| e.into_inner()));
    let failures = std::mem::take(&mut *failures.lock().unwrap_or_else(|e| e.into_inner()));
    (held, failures)
}

/// Point 5: how many idle IMAP sessions one address can hold, and what that does to
/// the other listeners.
async fn case_idle_imap(ctx: &Ctx, out: &mut Out) -> Result<()> {
    let p = &ctx.plan;
    let mut relay = start_relay(ctx).await?;
    let (soft, hard) = relay.nofile_limits()?;
    let fds0 = relay.open_fds()?;
    let lines0 = refusal_lines(&relay.log_text());
    let t = Instant::now();
    let (held, failures) = open_idle(relay.ports.imap_addr(), p.idle_imap_cap, 32, 10, true).await;
    let opened = t.elapsed();
    let greeted = held.iter().filter(|(_, l)| l.starts_with("* OK")).count();
    let byes = held.iter().filter(|(_, l)| l.starts_with("* BYE")).count();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = relay.rss_kib().unwrap_or(0);
    let fds = relay.open_fds().unwrap_or(0);
    let (others_ok, others) = others_answer(ctx, &relay).await;
    // A little time for the accept loops to show what they do at the limit.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lines1 = refusal_lines(&relay.log_text());
    let minutes = t.elapsed().as_secs_f64() / 60.0;
    let first_failure = failures
        .first()
        .map(|f| f.chars().take(100).collect::<String>())
        .unwrap_or_else(|| "none".into());
    let all_held = greeted == p.idle_imap_cap;
    let case = "Idle IMAP sessions held by one address (plain IMAP, greeting read)";
    out.row(
        case,
        format!(
            "{greeted} (relay RLIMIT_NOFILE soft {soft} / hard {hard}, {fds0} files open at start, {fds} with the sessions; {} attempts in {}; `* BYE` answers {byes}; {} failures, first: {first_failure})",
            greeted + byes + failures.len(),
            secs(opened),
            failures.len()
        ),
        "a per-address limit answered with `* BYE`, or all tried held; other listeners unaffected",
        Some((all_held || byes > 0) && others_ok),
    );
    out.row(
        "While those idle IMAP sessions are held: another address",
        others.clone(),
        "all 3 answer",
        Some(others_ok),
    );
    let (target, limit) = rss_target(greeted as u64);
    out.row(
        "RSS with those idle IMAP sessions",
        format!("{} ({greeted} sessions)", mib(rss)),
        &target,
        Some(rss <= limit),
    );
    let refusals = lines1.1.saturating_sub(lines0.1);
    out.row(
        "Idle IMAP sessions: refusal log lines",
        format!(
            "{refusals} ({} log lines in all in {:.1} min)",
            lines1.0.saturating_sub(lines0.0),
            minutes
        ),
        "≤ 1 per address per minute",
        Some(refusals as f64 <= 2.0 * minutes.ceil()),
    );
    drop(held);
    after_case(out, "idle IMAP sessions", &mut relay);
    Ok(())
}

/// Point 5: 1 000 idle sockets on port 25 from one address; does another peer get in?
/// The relay runs with the open-file soft limit at the hard limit, so that what is
/// measured is the connection cap, not the open-file limit (that is the idle-IMAP case).
async fn case_idle_smtp(ctx: &Ctx, out: &mut Out) -> Result<()> {
    let p = &ctx.plan;
    let mut relay = start_relay_nofile(ctx, u64::MAX).await?;
    let (soft, _) = relay.nofile_limits()?;
    let smtp = relay.ports.smtp_addr();
    let (held, failures) = open_idle(smtp, p.idle_smtp, 32, p.idle_smtp, true).await;
    let greeted = held.iter().filter(|(_, l)| l.starts_with("220")).count();
    let refused = held.iter().filter(|(_, l)| l.starts_with("421")).count();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = Instant::now() + Duration::from_secs(5);
    let other = async {
        let mut c = Conn::plain(UNRELATED, smtp, d).await?;
        c.line(d).await
    }
    .await;
    let case = format!(
        "{} idle sockets on port 25 from one address: another peer's greeting",
        p.idle_smtp
    );
    let detail = format!(
        "the attacker's sockets: {greeted} × 220, {refused} × 421, {} other or failed; relay RLIMIT_NOFILE {soft}",
        held.len() - greeted - refused + failures.len()
    );
    match other {
        Ok(line) => {
            let l: String = line.chars().take(60).collect();
            out.row(
                &case,
                format!("`{l}` ({detail})"),
                "220",
                Some(line.starts_with("220")),
            );
        }
        Err(e) => out.row(&case, format!("none ({e:#}; {detail})"), "220", Some(false)),
    }
    drop(held);
    after_case(out, "idle port-25 sockets", &mut relay);
    Ok(())
}

/// Point 5: 1 100 idle sockets on 443 from one address; does `/new` still answer? The
/// open-file limit is raised as in [`case_idle_smtp`].
async fn case_idle_https(ctx: &Ctx, out: &mut Out) -> Result<()> {
    let p = &ctx.plan;
    let mut relay = start_relay_nofile(ctx, u64::MAX).await?;
    let (soft, _) = relay.nofile_limits()?;
    let https = relay.ports.https_addr();
    let (held, failures) = open_idle(https, p.idle_https, 32, p.idle_https, false).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = Instant::now() + Duration::from_secs(10);
    let t = Instant::now();
    let r = https_request(&ctx.tls, UNRELATED, https, "POST /new HTTP/1.1", b"", d).await;
    let took = t.elapsed();
    let case = format!(
        "{} idle sockets on 443 from one address: `POST /new` from another address",
        p.idle_https
    );
    let detail = format!(
        "{} sockets open, {} failed to connect; relay RLIMIT_NOFILE {soft}",
        held.len(),
        failures.len()
    );
    match r {
        Ok(r) => out.row(
            &case,
            format!("{} after {} ({detail})", r.status, secs(took)),
            "200",
            Some(r.status == 200),
        ),
        Err(e) => out.row(
            &case,
            format!("no answer after {} ({e:#}; {detail})", secs(took)),
            "200",
            Some(false),
        ),
    }
    drop(held);
    after_case(out, "idle 443 sockets", &mut relay);
    Ok(())
}

/// What one guess came to.
#[derive(Default)]
struct Guesses {
    attempts: usize,
    wrong_answered: usize,
    /// Answered, but without a verdict: the relay refused to check the password now
    /// (`NO [UNAVAILABLE]` of the login brake), for the right password as for a wrong one.
    unchecked: usize,
    right_tried: usize,
    right_answered: usize,
    timeouts: usize,
    conn_failures: usize,
}

/// Point 5 (passwords): parallel guessers that give up after 0.3 s.
async fn case_passwords(ctx: &Ctx, out: &mut Out) -> Result<()> {
    const GIVE_UP: Duration = Duration::from_millis(300);
    /// Every this many attempts, one is the right password.
    const RIGHT_EVERY: usize = 25;
    let p = &ctx.plan;
    let mut relay = start_relay(ctx).await?;
    let victim = ctx.user('w', 0);
    create_accounts(ctx, &relay, std::slice::from_ref(&victim)).await?;
    let imaps = relay.ports.imaps_addr();
    let counter = Arc::new(AtomicUsize::new(0));
    let end = Instant::now() + p.guess_time;
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..p.guess_conns {
        let (tls, victim, counter) = (ctx.tls.clone(), victim.clone(), counter.clone());
        set.spawn(async move {
            let mut g = Guesses::default();
            // Bounded by `end`.
            while Instant::now() < end {
                let k = counter.fetch_add(1, Ordering::SeqCst);
                let right = k % RIGHT_EVERY == RIGHT_EVERY - 1;
                let pass = if right {
                    PASSWORD.to_string()
                } else {
                    format!("wrongGuess{k:08}")
                };
                let d = Instant::now() + Duration::from_secs(3);
                let mut c = match Conn::tls(&tls, ATTACKER, imaps, d).await {
                    Ok(c) => c,
                    Err(_) => {
                        g.conn_failures += 1;
                        continue;
                    }
                };
                if c.line(d).await.is_err() {
                    g.conn_failures += 1;
                    continue;
                }
                g.attempts += 1;
                if right {
                    g.right_tried += 1;
                }
                let cmd = format!(
                    "g LOGIN {} {}",
                    crate::hostile_net::quote(&victim),
                    crate::hostile_net::quote(&pass)
                );
                let answer = async {
                    let d = Instant::now() + GIVE_UP;
                    c.write(format!("{cmd}\r\n").as_bytes(), d).await?;
                    c.imap_response("g", d, 0).await
                }
                .await;
                match answer {
                    Ok(r) if r.ok() && right => g.right_answered += 1,
                    Ok(r) if r.status.contains("[UNAVAILABLE]") => g.unchecked += 1,
                    Ok(_) => g.wrong_answered += 1,
                    Err(_) => g.timeouts += 1,
                }
            }
            g
        });
    }
    let mut all = Guesses::default();
    while let Some(r) = set.join_next().await {
        if let Ok(g) = r {
            all.attempts += g.attempts;
            all.wrong_answered += g.wrong_answered;
            all.unchecked += g.unchecked;
            all.right_tried += g.right_tried;
            all.right_answered += g.right_answered;
            all.timeouts += g.timeouts;
            all.conn_failures += g.conn_failures;
        }
    }
    let took = t.elapsed().as_secs_f64();
    let answered = all.wrong_answered + all.right_answered;
    // A timeout tells the guesser "wrong" when the right password always comes back
    // within the give-up time; then every attempt is a decided guess.
    let right_always_fast = all.right_tried > 0 && all.right_answered == all.right_tried;
    let decided = if right_always_fast {
        all.attempts
    } else {
        answered
    };
    let rate = decided as f64 / took;
    out.row(
        &format!(
            "Password guessing: {} parallel IMAPS connections from one address, giving up after 0.3 s — guesses/s with a verdict",
            p.guess_conns
        ),
        format!(
            "{rate:.1}/s ({} attempts in {took:.1} s: {} answered wrong, {} refused unchecked, right password answered within 0.3 s {} of {} times, {} given up{}; {} connections failed; answered {:.1}/s)",
            all.attempts,
            all.wrong_answered,
            all.unchecked,
            all.right_answered,
            all.right_tried,
            all.timeouts,
            if right_always_fast {
                " — each of them a \"wrong\" verdict, since the right one always came back in time"
            } else {
                ""
            },
            all.conn_failures,
            answered as f64 / took
        ),
        "≤ 1/s per address",
        Some(rate <= GUESSES_PER_SEC),
    );
    after_case(out, "password guessing", &mut relay);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_lines_fit_the_line_limit() {
        let small = search_command("t", 4500, 60_000);
        assert!(!small[..small.len() - 2].contains(&b'\n'));
        assert_eq!(small.windows(8).filter(|w| w == b"NOT FROM").count(), 4500);
        let big = search_command("t", 60_000, 60_000);
        let text = String::from_utf8(big).expect("ascii");
        assert_eq!(text.matches("NOT FROM").count(), 60_000);
        assert!(text.split("\r\n").all(|l| l.len() < 64 * 1024));
        assert!(text.contains("NOT FROM {1+}\r\nx NOT FROM"));
        let quick = String::from_utf8(search_command("t", 3000, 8192)).expect("ascii");
        assert!(quick.split("\r\n").all(|l| l.len() <= 8192));
        assert_eq!(quick.matches("{1+}").count(), 4);
        assert_eq!(quick.matches("NOT FROM").count(), 3000);
    }

    #[test]
    fn no_x_in_account_names() {
        for _ in 0..200 {
            assert!(!run_tag().contains('x'));
        }
    }
}
