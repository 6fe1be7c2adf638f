//! `cargo run --release -p relaybox-bench [-- --quick]`: benchmark of the release
//! `relaybox` binary on loopback. It measures submit-to-IDLE latency, submission
//! throughput, memory per idle TLS IMAP session, bytes written and sync calls per
//! message and CPU time per message, prints a summary and writes the `main` section of
//! `tests/bench/results.md` with each figure beside the target.
//!
//! `-- --hostile [--quick] [--label NAME] [--commit TEXT] [--note TEXT] [--cases a,b]` runs the
//! hostile-input phase instead (module [`hostile`]) and writes the `hostile` section.
//! `-- --sdcard [--quick] [--label NAME] [--commit TEXT] [--note TEXT] [--cases a,b]` (as
//! root) runs the SD-card phase (module [`sdcard`]): device-level writes with the data
//! directory on a loop-mounted ext4 like the image's, and the memory of a big store; it
//! writes the `sdcard` section.
//! `-- --backup [--quick] [--label NAME] [--commit TEXT] [--note TEXT] [--no-write]` runs the
//! backup phase (module [`backup`]): `relaybox backup` and `restore` of a relay with 1 000
//! accounts and 10 000 messages and the pause a running relay shows during a backup; it
//! writes the `backup` section (not with `--no-write`, as CI runs it).
//! `-- --front [--quick] [--label NAME] [--commit TEXT] [--note TEXT] [--no-write]` (as
//! root) runs the front-server phase (module [`front`]): the latency `relaybox front` adds to
//! submit→IDLE and its memory per 1 000 idle IMAP connections; it writes the `front` section.
//! `RELAYBOX_BENCH_BIN` (or `RELAYBOX_BIN`) names the relay binary to measure.
//!
//! Sender accounts send at most 10 messages each, the default burst of the send rate
//! limit (SUB-4), so the limiter is never what is measured.

mod backup;
mod client;
mod federation;
mod front;
mod hostile;
mod hostile_net;
mod loopfs;
mod mail;
mod relay;
mod report;
mod sdcard;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use client::{Imap, Smtp, dot_stuff, exists_count};
use relay::Relay;
use report::{Row, command_output, ms, percentile};

/// Messages per sender account: the default `max_user_send_burst_size` (SUB-4).
const PER_SENDER: usize = 10;
/// Concurrent submitters in the throughput and under-load runs.
const SUBMITTERS: usize = 10;
/// Recipient accounts of the throughput runs (one OpenPGP key each).
const RECIPIENTS: usize = 10;
/// Target size of a whole message on the wire (the issue's ~4 KB / 3.8 KB message).
const MESSAGE_TARGET_BYTES: usize = 4000;
/// Submission rate of the latency run.
const LATENCY_RATE_PER_SEC: u64 = 20;
/// Concurrency when creating accounts or opening idle sessions: below the relay's
/// per-address login brake, which counts logins still being checked as failures until
/// they succeed and lets 5 through before it slows an address (daemon/src/auth.rs,
/// `LOGIN_POLICY`); every bench client has the one address 127.0.0.1.
const OPEN_CONCURRENCY: usize = 4;
/// Longest wait for all accepted messages to be visible over IMAP.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest a throughput-style run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// Password of every bench account (ACC-8 allows sharing; ≥ 12 characters).
const PASSWORD: &str = "benchPassword2026x";

/// Sizes of one benchmark run.
struct Plan {
    quick: bool,
    latency_msgs: usize,
    throughput_msgs: usize,
    low_load_msgs: usize,
    session_steps: [usize; 2],
}

impl Plan {
    fn new(quick: bool) -> Plan {
        Plan {
            quick,
            latency_msgs: if quick { 60 } else { 200 },
            throughput_msgs: if quick { 300 } else { 2000 },
            low_load_msgs: if quick { 30 } else { 100 },
            session_steps: [500, 1000],
        }
    }
}

/// Account names: 9-character lowercase local parts (ACC-5.4/5.5) `@[127.0.0.1]`:
/// one role letter, a 3-letter run tag, a 5-digit index.
struct Names {
    tag: String,
}

impl Names {
    fn new() -> Names {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        Names {
            tag: (0..3)
                .map(|_| char::from(b'a' + rng.gen_range(0..26u8)))
                .collect(),
        }
    }

    fn addr(&self, role: char, i: usize) -> String {
        format!("{role}{}{:05}@[127.0.0.1]", self.tag, i % 100_000)
    }

    fn many(&self, role: char, n: usize) -> Vec<String> {
        (0..n).map(|i| self.addr(role, i)).collect()
    }
}

/// One sender's share of a run: its login and its messages (recipient, dot-stuffed bytes).
struct SenderJob {
    login: String,
    msgs: Vec<(String, Vec<u8>)>,
}

/// What a run of submitters produced.
#[derive(Default)]
struct RunOutcome {
    accepted: usize,
    refused: Vec<String>,
    last_accept: Option<Instant>,
    /// Time from writing the end of DATA to reading its 250.
    data_to_250: Vec<Duration>,
}

/// Everything printed and written at the end.
#[derive(Default)]
struct Figures {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Figures {
    fn failed(&mut self, metric: &str, target: &str, reference: &str, err: &anyhow::Error) {
        let text = format!("{err:#}").replace('\n', " ");
        let short: String = text.chars().take(300).collect();
        println!("  FAILED: {short}");
        self.rows.push(Row::new(
            metric,
            format!("failed: {short}"),
            target,
            reference,
            Some(false),
        ));
    }
}

/// Command-line flags.
struct Cli {
    quick: bool,
    hostile: bool,
    sdcard: bool,
    backup: bool,
    front: bool,
    no_write: bool,
    label: Option<String>,
    commit: Option<String>,
    cases: Option<Vec<String>>,
    notes: Vec<String>,
}

fn parse_cli() -> Result<Cli> {
    let mut cli = Cli {
        quick: false,
        hostile: false,
        sdcard: false,
        backup: false,
        front: false,
        no_write: false,
        label: None,
        commit: None,
        cases: None,
        notes: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    // Bounded by the argument count.
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| anyhow!("{name} needs a value"));
        match a.as_str() {
            "--quick" => cli.quick = true,
            "--hostile" => cli.hostile = true,
            "--sdcard" => cli.sdcard = true,
            "--backup" => cli.backup = true,
            "--front" => cli.front = true,
            "--no-write" => cli.no_write = true,
            "--label" => {
                let v = value("--label")?;
                if v.is_empty()
                    || !v
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                {
                    bail!("--label: letters, digits, '-', '_' or '.' only, got {v:?}");
                }
                cli.label = Some(v);
            }
            "--commit" => cli.commit = Some(value("--commit")?),
            "--note" => cli.notes.push(value("--note")?),
            "--cases" => {
                cli.cases = Some(
                    value("--cases")?
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .collect(),
                )
            }
            other => bail!(
                "unknown argument {other:?}; usage: relaybox-bench [--quick] [--hostile | --sdcard [--label NAME] [--commit TEXT] [--note TEXT] [--cases a,b] | --backup [--label NAME] [--commit TEXT] [--note TEXT] [--no-write] | --front [--label NAME] [--commit TEXT] [--note TEXT] [--no-write]]"
            ),
        }
    }
    if [cli.hostile, cli.sdcard, cli.backup, cli.front]
        .iter()
        .filter(|p| **p)
        .count()
        > 1
    {
        bail!("--hostile, --sdcard, --backup and --front are separate phases: run one at a time");
    }
    if cli.no_write && !cli.backup && !cli.front {
        bail!("--no-write belongs to --backup and --front");
    }
    if (cli.backup || cli.front) && cli.cases.is_some() {
        bail!("--backup and --front have no cases");
    }
    if !cli.hostile
        && !cli.sdcard
        && !cli.backup
        && !cli.front
        && (cli.label.is_some()
            || cli.commit.is_some()
            || cli.cases.is_some()
            || !cli.notes.is_empty())
    {
        bail!(
            "--label, --commit, --note and --cases belong to --hostile, --sdcard, --backup and --front"
        );
    }
    Ok(cli)
}

fn main() -> std::process::ExitCode {
    let cli = match parse_cli() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bench: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let quick = cli.quick;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = if cli.hostile {
        runtime.block_on(run_hostile(cli))
    } else if cli.sdcard {
        runtime.block_on(run_sdcard(cli))
    } else if cli.backup {
        runtime.block_on(run_backup(cli))
    } else if cli.front {
        runtime.block_on(run_front(cli))
    } else {
        runtime.block_on(run(Plan::new(quick)))
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    p.canonicalize().unwrap_or(p)
}

/// The relay binary, the workspace root and the command line of a labelled phase, with a
/// raised open-file limit for the bench's own sockets (the relay is started with its own).
fn phase_setup(cli: Cli) -> Result<(PathBuf, PathBuf, report::PhaseArgs)> {
    let root = workspace_root();
    let bin = relay_binary(&root)?;
    let nofile = raise_nofile();
    println!("bench RLIMIT_NOFILE {nofile}");
    let label = cli.label.unwrap_or_else(|| {
        if cli.quick {
            "quick".into()
        } else {
            "latest".into()
        }
    });
    let args = report::PhaseArgs {
        quick: cli.quick,
        label,
        commit: cli.commit,
        cases: cli.cases,
        notes: cli.notes,
    };
    Ok((root, bin, args))
}

/// The hostile-input phase.
async fn run_hostile(cli: Cli) -> Result<()> {
    let (root, bin, args) = phase_setup(cli)?;
    hostile::run(args, bin, &root).await
}

/// The SD-card phase.
async fn run_sdcard(cli: Cli) -> Result<()> {
    let (root, bin, args) = phase_setup(cli)?;
    sdcard::run(args, bin, &root).await
}

/// The backup phase.
async fn run_backup(cli: Cli) -> Result<()> {
    let write = !cli.no_write;
    let (root, bin, args) = phase_setup(cli)?;
    backup::run(args, bin, &root, write).await
}

/// The front-server phase.
async fn run_front(cli: Cli) -> Result<()> {
    let write = !cli.no_write;
    let (root, bin, args) = phase_setup(cli)?;
    front::run(args, bin, &root, write).await
}

/// `RELAYBOX_BENCH_BIN` or `RELAYBOX_BIN` if set, else `target/release/relaybox`, built
/// with cargo if missing.
fn relay_binary(root: &Path) -> Result<PathBuf> {
    for var in ["RELAYBOX_BENCH_BIN", "RELAYBOX_BIN"] {
        if let Some(p) = std::env::var_os(var) {
            let p = PathBuf::from(p);
            if !p.is_file() {
                bail!("{var}={} is not a file", p.display());
            }
            return Ok(p);
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("release/relaybox");
    if !bin.exists() {
        println!(
            "{} is missing: running `cargo build --release -p relaybox` (this takes minutes)",
            bin.display()
        );
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "-p", "relaybox"])
            .current_dir(root)
            .status()
            .context("run cargo build --release -p relaybox")?;
        if !status.success() || !bin.exists() {
            bail!("cargo build --release -p relaybox failed ({status})");
        }
    }
    Ok(bin)
}

/// Raise RLIMIT_NOFILE to the hard limit (the relay inherits it); returns the soft limit.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
            lim = want;
        }
    }
    lim.rlim_cur
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn epoch_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

async fn run(plan: Plan) -> Result<()> {
    let root = workspace_root();
    let bin = relay_binary(&root)?;
    let nofile = raise_nofile();
    let data_parent = root.join("target/bench-data");
    let tls = client::tls_connector()?;
    let names = Names::new();
    let mut fig = Figures::default();

    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!(
        "relaybox bench ({}) — binary {}, RLIMIT_NOFILE {nofile}, {nproc} CPUs, load {}",
        if plan.quick { "quick" } else { "full" },
        bin.display(),
        load_before
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    // Keys and the plaintext size giving a ~4 KB message.
    let recipients_main = names.many('r', RECIPIENTS);
    let keys = recipients_main
        .iter()
        .map(|a| mail::recipient_key(a))
        .collect::<Result<Vec<_>>>()?;
    let plaintext_len = plaintext_for_target(&keys[0], MESSAGE_TARGET_BYTES)?;
    println!(
        "OpenPGP keys: {} recipients; plaintext {plaintext_len} B per message",
        keys.len()
    );

    let mut msg_sizes = Vec::new();
    {
        let mut relay = Relay::start(&bin, &data_parent, None)?;
        println!("relay started (pid {})", relay.pid);
        main_phases(
            &plan,
            &mut relay,
            &tls,
            &names,
            &keys,
            plaintext_len,
            &mut fig,
            &mut msg_sizes,
        )
        .await;
        if relay.check_alive().is_err() {
            fig.notes.push(format!(
                "the relay was not running at the end of the main run; log tail: {}",
                relay.log_tail(10).replace('\n', " / ")
            ));
        }
        relay.stop();
    }

    sync_phase(
        &plan,
        &bin,
        &data_parent,
        &tls,
        &names,
        &keys,
        plaintext_len,
        &mut fig,
    )
    .await;

    federation::federation_phase(
        &plan,
        &bin,
        &data_parent,
        &tls,
        &names,
        &keys,
        plaintext_len,
        &mut fig,
    )
    .await;

    let avg_size = if msg_sizes.is_empty() {
        0
    } else {
        msg_sizes.iter().sum::<usize>() / msg_sizes.len()
    };
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"], &root).unwrap_or_default();
    let commit =
        command_output("git", &["rev-parse", "--short", "HEAD"], &root).unwrap_or_default();
    let dirty = command_output(
        "git",
        &["status", "--porcelain", "--untracked-files=no"],
        &root,
    )
    .is_some_and(|s| !s.is_empty());
    let facts = vec![
        ("Date".to_string(), date),
        ("Machine".to_string(), format!("{nproc} CPUs (nproc), {}", cpu_model())),
        ("Load average at start".to_string(), load_before.split_whitespace().take(3).collect::<Vec<_>>().join(" ")),
        (
            "Commit".to_string(),
            format!(
                "{commit}{}",
                if dirty { " (working tree had uncommitted changes by others; binary built from it)" } else { "" }
            ),
        ),
        ("Relay binary".to_string(), binary_age(&bin)),
        ("Mode".to_string(), if plan.quick { "`--quick`".into() } else { "full".to_string() }),
        (
            "Messages".to_string(),
            format!(
                "PGP/MIME made with the `pgp` crate 0.21 (PKESK v3 to the recipient's X25519 key + SEIPD v1, AES-128), {plaintext_len} B random plaintext, {avg_size} B per message on the wire"
            ),
        ),
        (
            "Relay".to_string(),
            "IP-only mode (`mail_domain = 127.0.0.1`), all listeners on loopback, send rate limit at its defaults, `max_load_1m = 10000`; client and relay share the machine".to_string(),
        ),
    ];
    println!("\n{}", report::summary(&fig.rows));
    for n in &fig.notes {
        println!("note: {n}");
    }
    let md = report::markdown(&facts, &fig.rows, &fig.notes);
    let out = root.join("tests/bench/results.md");
    report::write_section(&out, "main", &md).with_context(|| format!("write {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

/// The binary's modification time (it may predate the commit named above).
fn binary_age(bin: &Path) -> String {
    let built = std::fs::metadata(bin)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .and_then(|d| {
            let at = format!("@{}", d.as_secs());
            command_output(
                "date",
                &["-u", "-d", &at, "+%Y-%m-%d %H:%M UTC"],
                Path::new("/"),
            )
        })
        .unwrap_or_else(|| "unknown".into());
    format!("`{}`, built {built}", bin.display())
}

/// The plaintext length that makes the whole message about `target` bytes.
fn plaintext_for_target(key: &pgp::composed::SignedPublicKey, target: usize) -> Result<usize> {
    let probe = 2400;
    let a = mail::armored(key, probe)?;
    let size = mail::pgp_mime("aaaaaaaaa@[127.0.0.1]", "bbbbbbbbb@[127.0.0.1]", &a).len();
    // Armor adds 4/3 plus line ends; solve for the target.
    let diff = target as i64 - size as i64;
    Ok((probe as i64 + diff * 3 / 4).clamp(256, 8192) as usize)
}

/// Sender jobs for `n` messages: fresh senders of `role`, PER_SENDER messages each,
/// recipients in turn.
fn make_jobs(
    names: &Names,
    role: char,
    n: usize,
    recipients: &[String],
    keys: &[pgp::composed::SignedPublicKey],
    plaintext_len: usize,
    sizes: &mut Vec<usize>,
) -> Result<Vec<SenderJob>> {
    let senders = n.div_ceil(PER_SENDER);
    let mut jobs = Vec::with_capacity(senders);
    let mut k = 0;
    for s in 0..senders {
        let login = names.addr(role, s);
        let mut msgs = Vec::with_capacity(PER_SENDER);
        for _ in 0..PER_SENDER {
            if k == n {
                break;
            }
            let r = k % recipients.len();
            let armored = mail::armored(&keys[r % keys.len()], plaintext_len)?;
            let raw = mail::pgp_mime(&login, &recipients[r], &armored);
            sizes.push(raw.len());
            msgs.push((recipients[r].clone(), dot_stuff(&raw)));
            k += 1;
        }
        jobs.push(SenderJob { login, msgs });
    }
    Ok(jobs)
}

/// Create accounts by a first IMAP login (ACC-5), OPEN_CONCURRENCY at a time.
async fn create_accounts(tls: &TlsConnector, addr: SocketAddr, logins: &[String]) -> Result<()> {
    let sem = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let mut set = tokio::task::JoinSet::new();
    for login in logins {
        let (tls, login, sem) = (tls.clone(), login.clone(), sem.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let mut imap = Imap::login(&tls, addr, &login, PASSWORD).await?;
            imap.command("LOGOUT").await.ok();
            Ok::<_, anyhow::Error>(())
        });
    }
    let mut first_err = None;
    while let Some(r) = set.join_next().await {
        if let Err(e) = r.map_err(anyhow::Error::from).and_then(|r| r) {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e.context("account creation by first IMAP login")),
        None => Ok(()),
    }
}

/// Run `jobs` with `workers` concurrent submitters; each sender is one TLS connection
/// with AUTH PLAIN, its messages sent one after another.
async fn submit(
    tls: &TlsConnector,
    addr: SocketAddr,
    jobs: Vec<SenderJob>,
    workers: usize,
) -> Result<RunOutcome> {
    let queue = Arc::new(Mutex::new(jobs.into_iter().collect::<VecDeque<_>>()));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (tls, queue) = (tls.clone(), queue.clone());
        set.spawn(async move {
            let mut out = RunOutcome::default();
            // Bounded by the number of jobs in the queue.
            loop {
                let job = match queue.lock() {
                    Ok(mut q) => q.pop_front(),
                    Err(_) => None,
                };
                let Some(job) = job else { break };
                let mut smtp = Smtp::login(&tls, addr, &job.login, PASSWORD).await?;
                for (to, data) in &job.msgs {
                    let sent = smtp.send(to, data).await?;
                    if sent.reply.code == 250 {
                        out.accepted += 1;
                        out.data_to_250
                            .push(sent.at.saturating_duration_since(sent.data_end));
                        out.last_accept = out.last_accept.max(Some(sent.at));
                    } else {
                        out.refused
                            .push(format!("{} → {to}: {}", job.login, sent.reply));
                    }
                }
                smtp.quit().await;
            }
            Ok::<_, anyhow::Error>(out)
        });
    }
    let mut total = RunOutcome::default();
    let deadline = Instant::now() + RUN_TIMEOUT;
    let mut first_err = None;
    loop {
        let next = tokio::time::timeout_at(deadline, set.join_next()).await;
        let r = match next {
            Err(_) => {
                set.abort_all();
                bail!("submitters still running after {RUN_TIMEOUT:?}");
            }
            Ok(None) => break,
            Ok(Some(r)) => r,
        };
        match r.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(o) => {
                total.accepted += o.accepted;
                total.refused.extend(o.refused);
                total.last_accept = total.last_accept.max(o.last_accept);
                total.data_to_250.extend(o.data_to_250);
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e.context("a submitter failed"));
    }
    Ok(total)
}

/// Wait until every recipient's INBOX holds `base + expected` messages (STATUS).
async fn wait_delivered(sessions: &mut [Imap], base: &[u32], expected: &[u32]) -> Result<Instant> {
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    let mut done = vec![false; sessions.len()];
    loop {
        for (i, s) in sessions.iter_mut().enumerate() {
            if !done[i] && s.inbox_messages().await? >= base[i] + expected[i] {
                done[i] = true;
            }
        }
        if done.iter().all(|d| *d) {
            return Ok(Instant::now());
        }
        if Instant::now() >= deadline {
            let mut missing = Vec::new();
            for (i, s) in sessions.iter_mut().enumerate() {
                let have = s.inbox_messages().await.unwrap_or(0);
                missing.push(format!("{}/{}", have.saturating_sub(base[i]), expected[i]));
            }
            bail!("not all accepted messages visible after {DELIVERY_TIMEOUT:?}: {missing:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Messages each recipient should get from `jobs`.
fn expected_per_recipient(jobs: &[SenderJob], recipients: &[String]) -> Vec<u32> {
    let mut n = vec![0u32; recipients.len()];
    for j in jobs {
        for (to, _) in &j.msgs {
            if let Some(i) = recipients.iter().position(|r| r == to) {
                n[i] += 1;
            }
        }
    }
    n
}

#[allow(clippy::too_many_arguments)]
async fn main_phases(
    plan: &Plan,
    relay: &mut Relay,
    tls: &TlsConnector,
    names: &Names,
    keys: &[pgp::composed::SignedPublicKey],
    plaintext_len: usize,
    fig: &mut Figures,
    sizes: &mut Vec<usize>,
) {
    let imaps = relay.ports.imaps_addr();
    let subs = relay.ports.submissions_addr();

    // 3a. Idle RSS of a fresh relay.
    tokio::time::sleep(Duration::from_secs(1)).await;
    match relay.rss_kib() {
        Ok(kib) => {
            println!("idle RSS: {kib} KiB");
            fig.rows.push(Row::new(
                "Idle RSS (fresh start)",
                format!("{:.1} MiB", kib as f64 / 1024.0),
                "≤ 10 MiB",
                "27 MiB",
                Some(kib <= 10 * 1024),
            ));
        }
        Err(e) => fig.failed("Idle RSS (fresh start)", "≤ 10 MiB", "27 MiB", &e),
    }

    // Every account of this relay, created before anything is measured.
    let recipients = names.many('r', RECIPIENTS);
    let idle_b = names.addr('b', 0);
    let latency_senders = names.many('l', plan.latency_msgs.div_ceil(PER_SENDER));
    let tp_senders = names.many('s', plan.throughput_msgs.div_ceil(PER_SENDER));
    let session_accounts = names.many('i', plan.session_steps[1]);
    let mut all: Vec<String> = recipients.clone();
    all.push(idle_b.clone());
    all.extend(latency_senders.iter().cloned());
    all.extend(tp_senders.iter().cloned());
    all.extend(session_accounts.iter().cloned());
    println!("creating {} accounts …", all.len());
    let t = Instant::now();
    if let Err(e) = create_accounts(tls, imaps, &all).await {
        fig.failed("Account creation", "–", "–", &e);
        return;
    }
    println!(
        "  {} accounts in {:.1} s",
        all.len(),
        t.elapsed().as_secs_f64()
    );

    // 3b. RSS with idle TLS sessions.
    println!("idle sessions …");
    if let Err(e) = sessions_phase(plan, relay, tls, &session_accounts, fig).await {
        fig.failed("RSS per idle TLS IMAP session", "≤ 32 KiB", "50 KiB", &e);
    }
    if relay.check_alive().is_err() {
        return;
    }

    // 1. Submit-to-IDLE latency.
    println!(
        "latency: {} messages at {LATENCY_RATE_PER_SEC}/s …",
        plan.latency_msgs
    );
    let b_key = match mail::recipient_key(&idle_b) {
        Ok(k) => k,
        Err(e) => {
            fig.failed(
                "Submit→IDLE latency",
                "p50 ≤ 1 ms, p99 ≤ 5 ms",
                "p50 9 ms, p99 15 ms",
                &e,
            );
            return;
        }
    };
    if let Err(e) = latency_phase(
        plan,
        tls,
        subs,
        imaps,
        &idle_b,
        &b_key,
        &latency_senders,
        plaintext_len,
        fig,
    )
    .await
    {
        fig.failed(
            "Submit→IDLE latency",
            "p50 ≤ 1 ms, p99 ≤ 5 ms",
            "p50 9 ms, p99 15 ms",
            &e,
        );
    }
    if relay.check_alive().is_err() {
        return;
    }

    // 2, 4 (bytes), 5. Throughput with write_bytes and CPU.
    println!(
        "throughput: {} messages, {SUBMITTERS} submitters …",
        plan.throughput_msgs
    );
    if let Err(e) = throughput_phase(
        plan,
        relay,
        tls,
        names,
        &recipients,
        keys,
        plaintext_len,
        fig,
        sizes,
    )
    .await
    {
        fig.failed("Accepted msg/s", "≥ 2000 msg/s", "458 msg/s", &e);
    }
}

async fn sessions_phase(
    plan: &Plan,
    relay: &Relay,
    tls: &TlsConnector,
    accounts: &[String],
    fig: &mut Figures,
) -> Result<()> {
    let imaps = relay.ports.imaps_addr();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base = relay.rss_kib()?;
    println!("  RSS after account creation, 0 sessions: {base} KiB");
    fig.rows.push(Row::new(
        "RSS with 0 sessions (after creating accounts)",
        format!("{:.1} MiB", base as f64 / 1024.0),
        "–",
        "–",
        None,
    ));
    let mut open: Vec<Imap> = Vec::new();
    for &step in &plan.session_steps {
        let need = step - open.len();
        let start = open.len();
        let sem = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
        let mut set = tokio::task::JoinSet::new();
        for login in &accounts[start..start + need] {
            let (tls, sem, login) = (tls.clone(), sem.clone(), login.clone());
            set.spawn(async move {
                let _permit = sem.acquire_owned().await?;
                let mut imap = Imap::login(&tls, imaps, &login, PASSWORD).await?;
                imap.select_inbox().await?;
                imap.idle().await?;
                Ok::<_, anyhow::Error>(imap)
            });
        }
        while let Some(r) = set.join_next().await {
            open.push(r??);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss = relay.rss_kib()?;
        let per = (rss as f64 - base as f64) / open.len() as f64;
        println!(
            "  {} sessions: RSS {rss} KiB, {per:.1} KiB per session",
            open.len()
        );
        fig.rows.push(Row::new(
            &format!("RSS per idle TLS IMAP session ({} sessions)", open.len()),
            format!("{per:.1} KiB (RSS {:.1} MiB)", rss as f64 / 1024.0),
            "≤ 32 KiB",
            "50 KiB",
            Some(per <= 32.0),
        ));
    }
    drop(open);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn latency_phase(
    plan: &Plan,
    tls: &TlsConnector,
    subs: SocketAddr,
    imaps: SocketAddr,
    idle_b: &str,
    b_key: &pgp::composed::SignedPublicKey,
    senders: &[String],
    plaintext_len: usize,
    fig: &mut Figures,
) -> Result<()> {
    let n = plan.latency_msgs;
    // Messages and sender sessions first (not timed).
    let mut msgs = Vec::with_capacity(n);
    for i in 0..n {
        let from = &senders[i / PER_SENDER];
        let a = mail::armored(b_key, plaintext_len)?;
        msgs.push(dot_stuff(&mail::pgp_mime(from, idle_b, &a)));
    }
    let mut smtps = Vec::new();
    for s in senders {
        smtps.push(Smtp::login(tls, subs, s, PASSWORD).await?);
    }
    let mut idle = Imap::login(tls, imaps, idle_b, PASSWORD).await?;
    let base = idle.select_inbox().await?;
    idle.idle().await?;

    // The idling client: every `* n EXISTS` with the instant it was read.
    let run_bound = Duration::from_secs(n as u64 / LATENCY_RATE_PER_SEC + 60);
    let want = base + n as u32;
    let reader = tokio::spawn(async move {
        let deadline = Instant::now() + run_bound;
        let mut seen: Vec<(u32, Instant)> = Vec::new();
        while seen.last().map(|s| s.0) < Some(want) {
            let line = match idle.next_line(deadline).await {
                Ok(l) => l,
                Err(e) => return (seen, Some(e)),
            };
            if let Some(c) = exists_count(&line) {
                seen.push((c, Instant::now()));
            }
        }
        (seen, None)
    });

    let mut tick = tokio::time::interval(Duration::from_millis(1000 / LATENCY_RATE_PER_SEC));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut accepted_at = Vec::with_capacity(n);
    let mut data_to_250 = Vec::with_capacity(n);
    let mut refused = Vec::new();
    for (i, data) in msgs.iter().enumerate() {
        tick.tick().await;
        let smtp = smtps
            .get_mut(i / PER_SENDER)
            .ok_or_else(|| anyhow!("no sender session for message {i}"))?;
        let sent = smtp.send(idle_b, data).await?;
        if sent.reply.code != 250 {
            refused.push(format!("message {i}: {}", sent.reply));
            accepted_at.push(None);
            continue;
        }
        data_to_250.push(sent.at.saturating_duration_since(sent.data_end));
        accepted_at.push(Some((sent.data_end, sent.at)));
    }
    for s in smtps {
        s.quit().await;
    }
    let accepted = accepted_at.iter().flatten().count() as u32;
    let (seen, read_err) = reader.await?;
    if !refused.is_empty() {
        fig.notes.push(format!(
            "latency run: {} of {n} messages refused, first: {}",
            refused.len(),
            refused[0]
        ));
    }
    // Message i (accepted in order) is the k-th accepted → EXISTS base + k.
    let mut lat = Vec::new();
    let mut from_data_end = Vec::new();
    let mut early = 0;
    let mut missing = 0;
    for (k, (data_end, at)) in (1u32..).zip(accepted_at.iter().flatten()) {
        match seen.iter().find(|(c, _)| *c >= base + k) {
            Some((_, t)) => {
                if t < at {
                    early += 1;
                }
                lat.push(t.saturating_duration_since(*at));
                from_data_end.push(t.saturating_duration_since(*data_end));
            }
            None => missing += 1,
        }
    }
    if accepted == 0 {
        bail!(
            "no message accepted; first refusal: {}",
            refused.first().map(String::as_str).unwrap_or("?")
        );
    }
    if missing > 0 {
        let why = read_err.map(|e| format!("{e:#}")).unwrap_or_default();
        bail!(
            "{missing} of {accepted} accepted messages never showed as EXISTS on the idling client {why}"
        );
    }
    lat.sort();
    from_data_end.sort();
    data_to_250.sort();
    let (p50, p99, max) = (
        percentile(&lat, 50.0).unwrap_or_default(),
        percentile(&lat, 99.0).unwrap_or_default(),
        lat.last().copied().unwrap_or_default(),
    );
    println!(
        "  p50 {} p99 {} max {} ({early} EXISTS read before the 250)",
        ms(p50),
        ms(p99),
        ms(max)
    );
    fig.rows.push(Row::new(
        "Submit→IDLE latency p50",
        ms(p50),
        "≤ 1 ms",
        "9 ms",
        Some(p50 <= Duration::from_millis(1)),
    ));
    fig.rows.push(Row::new(
        "Submit→IDLE latency p99",
        ms(p99),
        "≤ 5 ms",
        "15 ms",
        Some(p99 <= Duration::from_millis(5)),
    ));
    fig.rows
        .push(Row::new("Submit→IDLE latency max", ms(max), "–", "–", None));
    fig.rows.push(Row::new(
        "End of DATA → `* n EXISTS` (incl. durable commit) p50 / p99 / max",
        format!(
            "{} / {} / {}",
            ms(percentile(&from_data_end, 50.0).unwrap_or_default()),
            ms(percentile(&from_data_end, 99.0).unwrap_or_default()),
            ms(from_data_end.last().copied().unwrap_or_default())
        ),
        "–",
        "–",
        None,
    ));
    fig.rows.push(Row::new(
        "End of DATA → 250 (latency run) p50 / p99",
        format!(
            "{} / {}",
            ms(percentile(&data_to_250, 50.0).unwrap_or_default()),
            ms(percentile(&data_to_250, 99.0).unwrap_or_default())
        ),
        "–",
        "–",
        None,
    ));
    fig.notes.push(format!(
        "Latency: {accepted} messages at {LATENCY_RATE_PER_SEC}/s over one TLS submission session per sender (10 messages each) to one account idling over TLS; time from reading `250` after DATA to reading `* n EXISTS`; {early} of them had the EXISTS read before the 250 (counted as 0)."
    ));
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn throughput_phase(
    plan: &Plan,
    relay: &Relay,
    tls: &TlsConnector,
    names: &Names,
    recipients: &[String],
    keys: &[pgp::composed::SignedPublicKey],
    plaintext_len: usize,
    fig: &mut Figures,
    sizes: &mut Vec<usize>,
) -> Result<()> {
    let imaps = relay.ports.imaps_addr();
    let subs = relay.ports.submissions_addr();
    let n = plan.throughput_msgs;
    let jobs = make_jobs(names, 's', n, recipients, keys, plaintext_len, sizes)?;
    let expected = expected_per_recipient(&jobs, recipients);
    let total_bytes: usize = jobs
        .iter()
        .flat_map(|j| j.msgs.iter())
        .map(|(_, d)| d.len())
        .sum();
    let mut watchers = Vec::new();
    let mut base = Vec::new();
    for r in recipients {
        let mut s = Imap::login(tls, imaps, r, PASSWORD).await?;
        base.push(s.inbox_messages().await?);
        watchers.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let io0 = relay.write_bytes()?;
    let cpu0 = relay.cpu_seconds()?;
    let t0 = Instant::now();
    let out = submit(tls, subs, jobs, SUBMITTERS).await?;
    let delivered_at = wait_delivered(&mut watchers, &base, &expected).await?;
    let io1 = relay.write_bytes()?;
    let cpu1 = relay.cpu_seconds()?;
    for mut w in watchers {
        w.command("LOGOUT").await.ok();
    }
    if !out.refused.is_empty() {
        fig.notes.push(format!(
            "throughput run: {} of {n} refused, first: {}",
            out.refused.len(),
            out.refused[0]
        ));
    }
    if out.accepted == 0 {
        bail!("no message accepted");
    }
    let accept_secs = out
        .last_accept
        .map(|t| t.saturating_duration_since(t0).as_secs_f64())
        .unwrap_or(f64::NAN);
    let deliver_secs = delivered_at.saturating_duration_since(t0).as_secs_f64();
    let accepted_rate = out.accepted as f64 / accept_secs;
    let delivered_rate = out.accepted as f64 / deliver_secs;
    let avg_size = total_bytes as f64 / n as f64;
    let bytes_per = io1.saturating_sub(io0) as f64 / out.accepted as f64;
    let cpu_ms = (cpu1 - cpu0) * 1000.0 / out.accepted as f64;
    let mut d250 = out.data_to_250.clone();
    d250.sort();
    println!(
        "  accepted {} in {accept_secs:.2} s = {accepted_rate:.0} msg/s; delivered {delivered_rate:.0} msg/s",
        out.accepted
    );
    println!(
        "  write_bytes {bytes_per:.0} B/msg ({:.2}× message); CPU {cpu_ms:.3} ms/msg",
        bytes_per / avg_size
    );
    fig.rows.push(Row::new(
        "Accepted msg/s (250 after durable commit)",
        format!(
            "{accepted_rate:.0} msg/s ({} msgs in {accept_secs:.2} s)",
            out.accepted
        ),
        "≥ 2000 msg/s",
        "458 msg/s",
        Some(accepted_rate >= 2000.0),
    ));
    fig.rows.push(Row::new(
        "Delivered msg/s (visible via IMAP STATUS)",
        format!("{delivered_rate:.0} msg/s"),
        "≥ 2000 msg/s",
        "458 msg/s",
        Some(delivered_rate >= 2000.0),
    ));
    fig.rows.push(Row::new(
        "End of DATA → 250 under load p50 / p99",
        format!(
            "{} / {}",
            ms(percentile(&d250, 50.0).unwrap_or_default()),
            ms(percentile(&d250, 99.0).unwrap_or_default())
        ),
        "–",
        "–",
        None,
    ));
    fig.rows.push(Row::new(
        "Bytes written per delivered message",
        format!(
            "{bytes_per:.0} B = {:.2} × message size ({avg_size:.0} B)",
            bytes_per / avg_size
        ),
        "≤ 1.5 × message size",
        "19–23 KB per 3.8 KB message",
        Some(bytes_per <= 1.5 * avg_size),
    ));
    fig.rows.push(Row::new(
        "CPU time per message (relay utime+stime)",
        format!("{cpu_ms:.3} ms"),
        "≤ 0.5 ms",
        "2.3 ms",
        Some(cpu_ms <= 0.5),
    ));
    fig.notes.push(format!(
        "Throughput: {n} messages, {SUBMITTERS} concurrent submitters, each sender account one TLS connection with AUTH PLAIN for its {PER_SENDER} messages (the default rate-limit burst), so a TLS handshake and a SHA512-crypt password check per {PER_SENDER} messages are inside the CPU and rate figures; {RECIPIENTS} recipients. Accepted rate = accepted / (last 250 − start); delivered rate = accepted / (all visible via STATUS − start). Bytes and CPU are /proc/<pid>/io write_bytes and /proc/<pid>/stat utime+stime deltas from just before the first connection to all messages being visible."
    ));
    Ok(())
}

/// The strace path, installing the package when possible; a note when it cannot be had.
fn find_strace(fig: &mut Figures) -> Option<PathBuf> {
    let found = strace_path();
    if found.is_none() {
        fig.notes.push("strace is not available (not installed, not root or install failed): the fsync figures are unavailable.".into());
    }
    found
}

/// The strace path, installing the package when possible (as root, bounded in time).
fn strace_path() -> Option<PathBuf> {
    let ok = |p: &str| {
        Command::new(p)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ok("strace") {
        return Some(PathBuf::from("strace"));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        println!("strace missing: apt-get install -y strace");
        // Bounded in time like every other step.
        let _ = Command::new("timeout")
            .args(["300", "apt-get", "install", "-y", "strace"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        if ok("strace") {
            return Some(PathBuf::from("strace"));
        }
    }
    None
}

/// One timed run of the sync-call relay.
struct SyncRun {
    metric: String,
    target: &'static str,
    limit: f64,
    workers: usize,
    role: char,
    msgs: usize,
    /// Epoch seconds of the run's start and end, accepted count, write_bytes delta.
    window: (f64, f64),
    accepted: usize,
    bytes: u64,
    /// Mean size of the run's messages in bytes.
    avg_size: f64,
}

/// 4 (fsyncs). A second relay under `strace -f --seccomp-bpf`: sync calls per message
/// at low load (one sequential submitter) and under load (SUBMITTERS submitters, and
/// HEAVY_SUBMITTERS to show how commits group), counted in the time window of each run.
#[allow(clippy::too_many_arguments)]
async fn sync_phase(
    plan: &Plan,
    bin: &Path,
    data_parent: &Path,
    tls: &TlsConnector,
    names: &Names,
    keys: &[pgp::composed::SignedPublicKey],
    plaintext_len: usize,
    fig: &mut Figures,
) {
    const HEAVY_SUBMITTERS: usize = 50;
    let mk = |metric: String, target, limit, workers, role, msgs| SyncRun {
        metric,
        target,
        limit,
        workers,
        role,
        msgs,
        window: (0.0, 0.0),
        accepted: 0,
        bytes: 0,
        avg_size: 0.0,
    };
    let mut runs = vec![
        mk(
            "Sync calls per message, low load (1 sequential submitter)".into(),
            "≤ 1",
            1.0,
            1,
            'q',
            plan.low_load_msgs,
        ),
        mk(
            format!("Sync calls per message under load ({SUBMITTERS} submitters)"),
            "≤ 0.05",
            0.05,
            SUBMITTERS,
            'w',
            plan.throughput_msgs,
        ),
        mk(
            format!("Sync calls per message under heavier load ({HEAVY_SUBMITTERS} submitters)"),
            "≤ 0.05",
            0.05,
            HEAVY_SUBMITTERS,
            'h',
            plan.throughput_msgs,
        ),
    ];
    let Some(strace) = find_strace(fig) else {
        for r in &runs {
            fig.rows.push(Row::new(
                &r.metric,
                "unavailable (no strace)".into(),
                r.target,
                "–",
                None,
            ));
        }
        return;
    };
    println!("sync calls: relay under strace …");
    let mut relay = match Relay::start(bin, data_parent, Some(&strace)) {
        Ok(r) => r,
        Err(e) => {
            fig.failed(&runs[0].metric, runs[0].target, "–", &e);
            return;
        }
    };
    let r = sync_runs(&mut relay, tls, names, keys, plaintext_len, &mut runs).await;
    relay.stop();
    if let Err(e) = r {
        fig.failed(&runs[0].metric, runs[0].target, "–", &e);
        return;
    }
    let Some(out) = relay.strace_out.clone() else {
        return;
    };
    // Kept for inspection after the temp dir is gone.
    let _ = std::fs::copy(&out, data_parent.join("last-strace.out"));
    for run in &runs {
        match relay::count_sync_calls(&out, run.window.0, run.window.1) {
            Ok(c) => {
                let total: u64 = c.iter().map(|(_, n)| n).sum();
                let detail = c
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(name, n)| format!("{name} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let per = total as f64 / run.accepted as f64;
                let rate = run.accepted as f64 / (run.window.1 - run.window.0);
                println!(
                    "  {}: {per:.3} ({total} in {} messages: {detail}; {rate:.0} msg/s under strace)",
                    run.metric, run.accepted
                );
                fig.rows.push(Row::new(
                    &run.metric,
                    format!(
                        "{per:.3} ({total} calls / {} messages{}{detail})",
                        run.accepted,
                        if detail.is_empty() { "" } else { ": " }
                    ),
                    run.target,
                    "–",
                    Some(per <= run.limit),
                ));
            }
            Err(e) => fig.failed(&run.metric, run.target, "–", &e),
        }
    }
    let low = &runs[0];
    let per = low.bytes as f64 / low.accepted.max(1) as f64;
    let size = low.avg_size.max(1.0);
    fig.rows.push(Row::new(
        "Bytes written per message, low load (1 sequential submitter)",
        format!(
            "{per:.0} B = {:.2} × message size ({size:.0} B)",
            per / size
        ),
        "≤ 1.5 × message size",
        "19–23 KB per 3.8 KB message",
        Some(per <= 1.5 * size),
    ));
    fig.notes.push(format!(
        "Sync calls: a separate relay run under `strace -f -qq --seccomp-bpf -ttt -e trace={}` (per-call lines instead of `-c` so that only calls inside each run's time window count, not start-up or account creation); low load = {} messages by one submitter, each waiting for its 250; under load = {} messages by {SUBMITTERS} and by {HEAVY_SUBMITTERS} concurrent submitters.",
        relay::SYNC_CALLS.join(","),
        runs[0].msgs,
        runs[1].msgs
    ));
    fig.notes.push(format!(
        "Each submitter waits for its 250 before its next message, so with {SUBMITTERS} submitters at most {SUBMITTERS} messages are in flight and one commit covers at most {SUBMITTERS}: the floor of that load shape is {:.2} sync calls per message, above the ≤ 0.05 target (≥ 20 messages per commit); the {HEAVY_SUBMITTERS}-submitter run shows the grouping with more senders in flight.",
        1.0 / SUBMITTERS as f64
    ));
}

/// Create the accounts, then do each run in turn, filling in its window and counts.
async fn sync_runs(
    relay: &mut Relay,
    tls: &TlsConnector,
    names: &Names,
    keys: &[pgp::composed::SignedPublicKey],
    plaintext_len: usize,
    runs: &mut [SyncRun],
) -> Result<()> {
    let imaps = relay.ports.imaps_addr();
    let subs = relay.ports.submissions_addr();
    let recipients = names.many('r', RECIPIENTS);
    let mut all_jobs = Vec::new();
    let mut all = recipients.clone();
    for run in runs.iter_mut() {
        let mut sizes = Vec::new();
        let jobs = make_jobs(
            names,
            run.role,
            run.msgs,
            &recipients,
            keys,
            plaintext_len,
            &mut sizes,
        )?;
        run.avg_size = sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64;
        all.extend(jobs.iter().map(|j| j.login.clone()));
        all_jobs.push(jobs);
    }
    create_accounts(tls, imaps, &all).await?;
    for (run, jobs) in runs.iter_mut().zip(all_jobs) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let io0 = relay.write_bytes()?;
        let a = epoch_secs();
        let out = submit(tls, subs, jobs, run.workers).await?;
        let b = epoch_secs();
        let io1 = relay.write_bytes()?;
        relay.check_alive()?;
        if out.accepted == 0 {
            bail!(
                "messages refused under strace: {}",
                out.refused.first().map(String::as_str).unwrap_or("?")
            );
        }
        run.window = (a, b);
        run.accepted = out.accepted;
        run.bytes = io1.saturating_sub(io0);
    }
    Ok(())
}
