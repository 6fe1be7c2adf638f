//! The backup phase (`--backup`, issue 17 item 6): backup and restore of a relay holding
//! 1 000 accounts and 10 000 stored messages (`--quick`: 100 and 1 000), and the pause a
//! running relay shows while it is backed up.
//!
//! One release relay is filled (accounts by first IMAP login, messages of ~4 KB real
//! PGP/MIME over a few parallel submission sessions), then a steady sender submits to an
//! account idling in IMAP IDLE while `relaybox backup` runs against the live relay (its
//! store snapshot comes through the control socket): the time from each `250` to the
//! idler's `* n EXISTS` is sorted by whether the `250` came while a backup ran. After
//! that, `relaybox restore` into a fresh data directory, and a relay started on it must
//! list every account. The figures go to the `backup` section of
//! `tests/bench/results.md`, one table per run label.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use pgp::composed::SignedPublicKey;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::client::{Imap, Smtp, dot_stuff, exists_count};
use crate::mail;
use crate::relay::{Options, Relay};
use crate::report::{self, PhaseArgs as Args, RunOut as Out, ms, percentile};
use crate::{PASSWORD, SenderJob};

/// Name of the results-file section.
pub const SECTION: &str = "backup";
/// Size of a stored message on the wire (the main bench's ~4 KB PGP/MIME message).
const MESSAGE_BYTES: usize = crate::MESSAGE_TARGET_BYTES;
/// Recipient keys the stored messages are encrypted to, in turn.
const KEYS: usize = 10;
/// Parallel submission sessions that fill the store.
const FILL_SUBMITTERS: usize = 8;
/// Rate of the steady sender whose messages measure the pause.
const RATE_PER_SEC: u64 = 50;
/// The relay's send limit raised so that one account on one session can fill the store
/// and keep the steady sender going (the limiter is not what is measured).
const RELAY_INI: &str = "max_user_send_per_minute = 1000000\nmax_user_send_burst_size = 1000000\n";
/// Passphrase of the backups (the file holds it on its first line).
const PASSPHRASE: &str = "bench backup passphrase 2026";
/// Longest one `relaybox backup`, `restore` or `accounts list` may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest the idler may wait for the last EXISTS after the sender stopped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound on the steady sender's messages (its run is also bounded by the phase).
const SAMPLER_MAX_MSGS: u32 = 200_000;

/// Sizes of one run.
struct Plan {
    quick: bool,
    accounts: usize,
    messages: usize,
    /// The sampler's window without a backup, before the backups.
    baseline: Duration,
    /// Backups with messages made while the sampler runs (the first one's time and size
    /// are the headline; all count for the pause).
    backups_with: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                accounts: 100,
                messages: 1000,
                baseline: Duration::from_secs(5),
                backups_with: 1,
            }
        } else {
            Plan {
                quick,
                accounts: 1000,
                messages: 10_000,
                baseline: Duration::from_secs(15),
                backups_with: 3,
            }
        }
    }
}

/// What one `relaybox backup` did.
struct BackupRun {
    /// From spawning the command to its exit.
    started: Instant,
    ended: Instant,
    bytes: u64,
    /// CPU seconds of the command itself (user + system).
    cmd_cpu: f64,
    /// CPU seconds the relay spent meanwhile (its export runs there).
    relay_cpu: f64,
}

impl BackupRun {
    fn secs(&self) -> f64 {
        self.ended
            .saturating_duration_since(self.started)
            .as_secs_f64()
    }
}

/// Run the phase; with `write`, its block replaces the label's in the results file.
pub async fn run(args: Args, bin: PathBuf, root: &Path, write: bool) -> Result<()> {
    let plan = Plan::new(args.quick);
    let load = report::load_now();
    let data_parent = root.join("target/bench-data");
    std::fs::create_dir_all(&data_parent)
        .with_context(|| format!("create {}", data_parent.display()))?;
    println!(
        "relaybox backup bench ({}, label {}) — binary {}, load {load}",
        if plan.quick { "quick" } else { "full" },
        args.label,
        bin.display()
    );
    let started = Instant::now();
    let mut out = Out::default();
    let mut sizes = Vec::new();
    let outcome = phase(&plan, &bin, &data_parent, &mut out, &mut sizes).await;
    if let Err(e) = &outcome {
        out.failed("backup phase", "–", e);
    }
    for n in &args.notes {
        out.note(n.clone());
    }
    let avg = sizes.iter().sum::<usize>() / sizes.len().max(1);
    let mut facts = report::run_facts(
        root,
        &bin,
        args.commit.as_deref(),
        format!(
            "{} ({:.0} s in all)",
            if plan.quick { "`--quick`" } else { "full" },
            started.elapsed().as_secs_f64()
        ),
        &load,
    );
    facts.extend([
        ("CPU".to_string(), crate::cpu_model()),
        (
            "Store".to_string(),
            format!(
                "{} accounts (created by a first IMAP login), {} stored messages of real PGP/MIME made with the `pgp` crate, mean {avg} B on the wire, submitted over {FILL_SUBMITTERS} parallel TLS submission sessions to every account in turn",
                plan.accounts, plan.messages
            ),
        ),
        (
            "Relay".to_string(),
            "the release binary, IP-only mode, loopback listeners, `max_load_1m = 10000`, send limit raised (`max_user_send_per_minute` and `max_user_send_burst_size` = 1000000) so that one account on one session fills the store; data directory on the machine's disk".to_string(),
        ),
        (
            "Pause".to_string(),
            format!(
                "one account idles (IMAP IDLE over TLS) while another submits to it at {RATE_PER_SEC} messages/s over one TLS session, each waiting for its 250; a sample is the time from reading the `250` to reading the matching `* n EXISTS`, counted as during a backup when its `250` came between spawning `relaybox backup` and its exit; the backup command runs on the same machine (its scrypt passphrase key, 2^18, is inside its time and CPU)"
            ),
        ),
    ]);
    let block = report::run_block(SECTION, &args.label, "Figure", &facts, &out, "");
    // The phase's verdict (not the figures': a missed target is printed, not an error).
    let verdict = match outcome {
        Ok(true) => Ok(()),
        Ok(false) => Err(anyhow!(
            "the restored relay did not have every account and message"
        )),
        Err(e) => Err(e.context("the backup phase did not run through")),
    };
    if !write {
        println!("(--no-write: tests/bench/results.md not changed)");
        return verdict;
    }
    let intro = "## Backups (issue 17)\n\nWritten by `cargo run --release -p relaybox-bench -- --backup [--quick] [--label NAME] [--commit TEXT] [--note TEXT]` (tests/bench/src/backup.rs; `RELAYBOX_BENCH_BIN=/path/to/relaybox` picks the binary). `relaybox backup` of a running relay with 1 000 accounts and 10 000 stored messages (`--quick`: 100 and 1 000), `relaybox restore` into a fresh data directory, and the pause the running relay shows meanwhile (ack→EXISTS). The issue's target is p99 ack→EXISTS during a backup < 50 ms. Each run label has its own table.";
    report::write_labelled_run(
        &root.join("tests/bench/results.md"),
        SECTION,
        intro,
        &args.label,
        &block,
    )?;
    verdict
}

/// Fill a relay, back it up while measuring the pause, restore the backup and start a
/// relay on it; `Ok(false)` when the restored relay lacks accounts or messages.
async fn phase(
    plan: &Plan,
    bin: &Path,
    data_parent: &Path,
    out: &mut Out,
    sizes: &mut Vec<usize>,
) -> Result<bool> {
    let tls = crate::client::tls_connector()?;
    let names = crate::Names::new();
    let accounts = names.many('k', plan.accounts);
    let keys = (0..KEYS)
        .map(|i| mail::recipient_key(&accounts[i % accounts.len()]))
        .collect::<Result<Vec<_>>>()?;
    let plaintext_len = crate::plaintext_for_target(&keys[0], MESSAGE_BYTES)?;
    let work = tempfile::Builder::new()
        .prefix("relaybox-bench-backup-")
        .tempdir_in(data_parent)
        .context("create the work dir")?;
    let pass_file = work.path().join("passphrase");
    std::fs::write(&pass_file, format!("{PASSPHRASE}\n")).context("write the passphrase")?;

    let mut relay = Relay::start_with(
        bin,
        data_parent,
        &Options {
            extra_ini: RELAY_INI,
            ..Options::default()
        },
    )?;
    println!("relay started (pid {})", relay.pid);

    // The store: accounts, then messages.
    let t = Instant::now();
    crate::create_accounts(&tls, relay.ports.imaps_addr(), &accounts).await?;
    let create_secs = t.elapsed().as_secs_f64();
    println!("  {} accounts in {create_secs:.1} s", accounts.len());
    let jobs = fill_jobs(plan, &accounts, &keys, plaintext_len, sizes)?;
    let t = Instant::now();
    let filled = crate::submit(&tls, relay.ports.submissions_addr(), jobs, FILL_SUBMITTERS).await?;
    let fill_secs = t.elapsed().as_secs_f64();
    if filled.accepted != plan.messages {
        bail!(
            "{} of {} messages accepted while filling; first refusal: {}",
            filled.accepted,
            plan.messages,
            filled.refused.first().map(String::as_str).unwrap_or("?")
        );
    }
    let avg = sizes.iter().sum::<usize>() / sizes.len().max(1);
    out.row(
        "Store",
        format!(
            "{} accounts ({create_secs:.1} s), {} messages of {avg} B mean ({fill_secs:.1} s, {:.0} msg/s)",
            accounts.len(),
            filled.accepted,
            filled.accepted as f64 / fill_secs
        ),
        "1 000 accounts, 10 000 messages",
        (!plan.quick)
            .then_some(accounts.len() == 1000 && filled.accepted == 10_000),
    );

    // The pause: a steady sender and an idler, first without a backup, then with.
    let ini = relay.config_path();
    let sampler = Sampler::start(
        &tls,
        &relay,
        &accounts[accounts.len() - 2],
        &accounts[accounts.len() - 1],
        &keys[0],
        plaintext_len,
    )
    .await?;
    let baseline_from = Instant::now();
    tokio::time::sleep(plan.baseline).await;
    let baseline_to = Instant::now();
    let mut with = Vec::new();
    let mut failure = None;
    for i in 0..plan.backups_with {
        let file = work.path().join(format!("with-{i}.backup"));
        match backup(bin, &ini, &file, &pass_file, true, &relay).await {
            Ok(b) => {
                println!("  backup with messages: {:.2} s, {} B", b.secs(), b.bytes);
                with.push(b);
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        // A quiet second between backups, as between baseline samples.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let without = match failure {
        Some(_) => None,
        None => {
            let file = work.path().join("without.backup");
            let r = backup(bin, &ini, &file, &pass_file, false, &relay).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            match r {
                Ok(b) => {
                    println!(
                        "  backup without messages: {:.2} s, {} B",
                        b.secs(),
                        b.bytes
                    );
                    Some(b)
                }
                Err(e) => {
                    failure = Some(e);
                    None
                }
            }
        }
    };
    let samples = sampler.finish().await?;
    if let Some(e) = failure {
        return Err(e);
    }
    relay.check_alive()?;

    // Backup figures.
    let first = with.first().ok_or_else(|| anyhow!("no backup was made"))?;
    let times = with
        .iter()
        .map(|b| format!("{:.2}", b.secs()))
        .collect::<Vec<_>>()
        .join(", ");
    out.row(
        "`relaybox backup` with messages: time",
        format!(
            "{:.2} s ({} run(s): {times} s; the command's CPU {:.2} s, the relay's CPU meanwhile {:.2} s)",
            first.secs(),
            with.len(),
            first.cmd_cpu,
            first.relay_cpu
        ),
        "–",
        None,
    );
    out.row(
        "`relaybox backup` with messages: file size",
        format!(
            "{:.1} MiB ({} B; {:.0} B per stored message of {avg} B)",
            first.bytes as f64 / 1048576.0,
            first.bytes,
            first.bytes as f64 / plan.messages as f64
        ),
        "–",
        None,
    );
    if let Some(b) = &without {
        out.row(
            "`relaybox backup --no-messages`: time, file size",
            format!(
                "{:.2} s, {:.1} KiB ({} B; the command's CPU {:.2} s, the relay's {:.2} s)",
                b.secs(),
                b.bytes as f64 / 1024.0,
                b.bytes,
                b.cmd_cpu,
                b.relay_cpu
            ),
            "–",
            None,
        );
    }

    // The pause.
    let mut windows: Vec<(Instant, Instant)> = with.iter().map(|b| (b.started, b.ended)).collect();
    windows.extend(without.iter().map(|b| (b.started, b.ended)));
    let in_window =
        |at: Instant, w: &[(Instant, Instant)]| w.iter().any(|(a, b)| at >= *a && at <= *b);
    let with_windows: Vec<(Instant, Instant)> = with.iter().map(|b| (b.started, b.ended)).collect();
    let quiet = Group::of(&samples, |s| s.ack >= baseline_from && s.ack <= baseline_to);
    let during = Group::of(&samples, |s| in_window(s.ack, &windows));
    let during_with = Group::of(&samples, |s| in_window(s.ack, &with_windows));
    let under_50 = |g: &Group| percentile(&g.ack, 99.0).map(|p| p < Duration::from_millis(50));
    out.row("ack→EXISTS without a backup", quiet.ack_text(), "–", None);
    out.row(
        "ack→EXISTS during a backup (all backups)",
        during.ack_text(),
        "p99 < 50 ms",
        under_50(&during),
    );
    out.row(
        "ack→EXISTS during a backup with messages",
        during_with.ack_text(),
        "p99 < 50 ms",
        under_50(&during_with),
    );
    out.row(
        "End of DATA→EXISTS (incl. the durable commit) without / during a backup",
        format!("{} / {}", quiet.data_end_text(), during.data_end_text()),
        "–",
        None,
    );
    if during.ack.len() < 100 {
        out.note(format!(
            "only {} samples fell inside the backups: their p99 is close to their maximum",
            during.ack.len()
        ));
    }
    let stored_before = relay_accounts(bin, &ini).await.ok();
    relay.stop();

    // Restore into a fresh data directory, then a relay on it.
    let fresh = work.path().join("restored-data");
    let restore_ini = work.path().join("restore.ini");
    std::fs::write(
        &restore_ini,
        format!(
            "[params]\nmail_domain = 127.0.0.1\ndata_dir = {}\n",
            fresh.display()
        ),
    )
    .context("write the restore config")?;
    let file = work.path().join("with-0.backup");
    let t = Instant::now();
    let restored = command(
        bin,
        &[
            "restore".as_ref(),
            "--config".as_ref(),
            restore_ini.as_os_str(),
            "--passphrase-file".as_ref(),
            pass_file.as_os_str(),
            "--yes".as_ref(),
            file.as_os_str(),
        ],
    )
    .await?;
    let restore_secs = t.elapsed().as_secs_f64();
    println!("  restore: {restore_secs:.2} s: {}", restored.trim());
    let t = Instant::now();
    let mut back = Relay::start_with(
        bin,
        data_parent,
        &Options {
            extra_ini: RELAY_INI,
            data_dir: Some(&fresh),
            ..Options::default()
        },
    )?;
    let start_secs = t.elapsed().as_secs_f64();
    let listed = relay_accounts(bin, &back.config_path()).await;
    // An old password logs in on the restored relay and finds its mail.
    let login = async {
        let mut s = Imap::login(&tls, back.ports.imaps_addr(), &accounts[0], PASSWORD).await?;
        let n = s.inbox_messages().await?;
        s.command("LOGOUT").await.ok();
        Ok::<u32, anyhow::Error>(n)
    }
    .await;
    back.stop();
    out.row(
        "`relaybox restore` into a fresh data directory: time",
        format!("{restore_secs:.2} s (from the first backup with messages)"),
        "–",
        None,
    );
    match listed {
        Ok(l) => {
            let ok = l.accounts == plan.accounts as u64
                && stored_before
                    .as_ref()
                    .is_none_or(|b| l.messages <= b.messages && l.messages >= plan.messages as u64)
                && login.is_ok();
            out.row(
                "Restored relay: start, accounts, messages",
                format!(
                    "listening {start_secs:.2} s after spawn; {} accounts, {} messages (the original had {} when it stopped, the sampler's included){}",
                    l.accounts,
                    l.messages,
                    stored_before
                        .as_ref()
                        .map(|b| b.messages.to_string())
                        .unwrap_or_else(|| "?".into()),
                    match &login {
                        Ok(n) => format!("; an old password logs in, its INBOX has {n}"),
                        Err(e) => format!("; login with an old password FAILED: {e:#}"),
                    }
                ),
                &format!("{} accounts", plan.accounts),
                Some(ok),
            );
            Ok(ok)
        }
        Err(e) => {
            out.failed("Restored relay: start, accounts, messages", "–", &e);
            Ok(false)
        }
    }
}

/// The fill: FILL_SUBMITTERS senders (the first accounts), every account a recipient in
/// turn, each message encrypted to one of the keys.
fn fill_jobs(
    plan: &Plan,
    accounts: &[String],
    keys: &[SignedPublicKey],
    plaintext_len: usize,
    sizes: &mut Vec<usize>,
) -> Result<Vec<SenderJob>> {
    let mut jobs: Vec<SenderJob> = accounts[..FILL_SUBMITTERS]
        .iter()
        .map(|a| SenderJob {
            login: a.clone(),
            msgs: Vec::new(),
        })
        .collect();
    for k in 0..plan.messages {
        let to = &accounts[k % accounts.len()];
        let job = &mut jobs[k % FILL_SUBMITTERS];
        let armored = mail::armored(&keys[k % keys.len()], plaintext_len)?;
        let raw = mail::pgp_mime(&job.login, to, &armored);
        sizes.push(raw.len());
        job.msgs.push((to.clone(), dot_stuff(&raw)));
    }
    Ok(jobs)
}

/// CPU seconds (user + system) of this process's waited-for children.
fn children_cpu() -> f64 {
    // SAFETY: getrusage with a valid pointer to a zeroed local struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Run `bin args`, bounded by COMMAND_TIMEOUT; its stdout, or an error with its output.
async fn command(bin: &Path, args: &[&std::ffi::OsStr]) -> Result<String> {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(args)
        .env_remove("RELAYBOX_BACKUP_PASSPHRASE")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let o = tokio::time::timeout(COMMAND_TIMEOUT, cmd.output())
        .await
        .map_err(|_| {
            anyhow!(
                "`relaybox {:?}` still running after {COMMAND_TIMEOUT:?}",
                args.first()
            )
        })?
        .with_context(|| format!("run {}", bin.display()))?;
    if !o.status.success() {
        bail!(
            "`relaybox {}` failed ({}): {} {}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            o.status,
            String::from_utf8_lossy(&o.stdout).trim(),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// `relaybox backup` of the running relay with config `ini` into `file`.
async fn backup(
    bin: &Path,
    ini: &Path,
    file: &Path,
    pass_file: &Path,
    messages: bool,
    relay: &Relay,
) -> Result<BackupRun> {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "backup".as_ref(),
        "--config".as_ref(),
        ini.as_os_str(),
        "--out".as_ref(),
        file.as_os_str(),
        "--passphrase-file".as_ref(),
        pass_file.as_os_str(),
    ];
    if !messages {
        args.push("--no-messages".as_ref());
    }
    let cpu0 = children_cpu();
    let relay0 = relay.cpu_seconds()?;
    let started = Instant::now();
    command(bin, &args).await?;
    let ended = Instant::now();
    let relay1 = relay.cpu_seconds()?;
    let bytes = std::fs::metadata(file)
        .with_context(|| format!("stat {}", file.display()))?
        .len();
    Ok(BackupRun {
        started,
        ended,
        bytes,
        cmd_cpu: children_cpu() - cpu0,
        relay_cpu: relay1 - relay0,
    })
}

/// What `relaybox accounts list` says of a relay.
struct Listed {
    accounts: u64,
    messages: u64,
}

/// `relaybox accounts list --config ini`: the accounts on the relay (its closing line)
/// and the sum of the MESSAGES column.
async fn relay_accounts(bin: &Path, ini: &Path) -> Result<Listed> {
    let text = command(
        bin,
        &[
            "accounts".as_ref(),
            "list".as_ref(),
            "--config".as_ref(),
            ini.as_os_str(),
        ],
    )
    .await?;
    let mut messages = 0u64;
    let mut accounts = None;
    for line in text.lines() {
        if let Some((_, rest)) = line.split_once("account(s) listed; ") {
            accounts = rest.split_whitespace().next().and_then(|n| n.parse().ok());
        } else if !line.starts_with("ADDRESS") {
            messages += line
                .split_whitespace()
                .last()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(Listed {
        accounts: accounts.ok_or_else(|| anyhow!("no closing line in `accounts list`: {text}"))?,
        messages,
    })
}

/// One steady-sender message: when its 250 was read and how long until the idler read
/// its EXISTS.
struct Sample {
    /// When the end of DATA was written.
    data_end: Instant,
    /// When the 250 was read.
    ack: Instant,
    /// When the idler read the matching EXISTS.
    exists: Instant,
}

/// The samples of one window, sorted.
struct Group {
    /// 250 → EXISTS (0 when the EXISTS was read first).
    ack: Vec<Duration>,
    /// End of DATA → EXISTS.
    from_data: Vec<Duration>,
    /// How many EXISTS were read before their 250.
    early: usize,
}

impl Group {
    fn of(samples: &[Sample], keep: impl Fn(&Sample) -> bool) -> Group {
        let kept: Vec<&Sample> = samples.iter().filter(|s| keep(s)).collect();
        let mut ack: Vec<Duration> = kept
            .iter()
            .map(|s| s.exists.saturating_duration_since(s.ack))
            .collect();
        let mut from_data: Vec<Duration> = kept
            .iter()
            .map(|s| s.exists.saturating_duration_since(s.data_end))
            .collect();
        ack.sort();
        from_data.sort();
        Group {
            ack,
            from_data,
            early: kept.iter().filter(|s| s.exists < s.ack).count(),
        }
    }

    fn stats(v: &[Duration]) -> String {
        format!(
            "p50 {} / p99 {} / max {}",
            ms(percentile(v, 50.0).unwrap_or_default()),
            ms(percentile(v, 99.0).unwrap_or_default()),
            ms(v.last().copied().unwrap_or_default())
        )
    }

    fn ack_text(&self) -> String {
        format!(
            "{} ({} samples; {} EXISTS read before their 250, counted as 0)",
            Group::stats(&self.ack),
            self.ack.len(),
            self.early
        )
    }

    fn data_end_text(&self) -> String {
        Group::stats(&self.from_data)
    }
}

/// What the idler read: each `* n EXISTS` count with when it was read, and the error that
/// ended its reading early, if one did.
type Seen = (Vec<(u32, Instant)>, Option<anyhow::Error>);

/// A steady sender to an idling account, running until [`Sampler::finish`].
struct Sampler {
    stop: Arc<AtomicBool>,
    want: Arc<AtomicU32>,
    base: u32,
    /// (end of DATA written, 250 read) of each acknowledged message, in order.
    sender: tokio::task::JoinHandle<Result<Vec<(Instant, Instant)>>>,
    reader: tokio::task::JoinHandle<Seen>,
}

impl Sampler {
    async fn start(
        tls: &TlsConnector,
        relay: &Relay,
        from: &str,
        to: &str,
        key: &SignedPublicKey,
        plaintext_len: usize,
    ) -> Result<Sampler> {
        let mut idle = Imap::login(tls, relay.ports.imaps_addr(), to, PASSWORD).await?;
        let base = idle.select_inbox().await?;
        idle.idle().await?;
        let mut smtp = Smtp::login(tls, relay.ports.submissions_addr(), from, PASSWORD).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let want = Arc::new(AtomicU32::new(u32::MAX));
        let bound = Instant::now() + Duration::from_secs(3 * 3600);
        let want_r = want.clone();
        let reader = tokio::spawn(async move {
            let mut seen: Vec<(u32, Instant)> = Vec::new();
            // Bounded by `bound` and by the count the sender sets when it stops.
            while seen.last().map(|s| s.0).unwrap_or(0) < want_r.load(Ordering::Acquire) {
                let now = Instant::now();
                if now >= bound {
                    return (seen, Some(anyhow!("idler still reading after 3 h")));
                }
                match idle
                    .next_line_within(now + Duration::from_millis(500))
                    .await
                {
                    Ok(Some(line)) => {
                        if let Some(c) = exists_count(&line) {
                            seen.push((c, Instant::now()));
                        }
                    }
                    Ok(None) => {}
                    Err(e) => return (seen, Some(e)),
                }
            }
            (seen, None)
        });
        let (stop_s, key, to) = (stop.clone(), key.clone(), to.to_string());
        let from = from.to_string();
        let sender = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE_PER_SEC));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut acks: Vec<(Instant, Instant)> = Vec::new();
            for i in 0..SAMPLER_MAX_MSGS {
                tick.tick().await;
                if stop_s.load(Ordering::Acquire) {
                    break;
                }
                let raw = dot_stuff(&mail::pgp_mime(
                    &from,
                    &to,
                    &mail::armored(&key, plaintext_len)?,
                ));
                let sent = smtp.send(&to, &raw).await?;
                if sent.reply.code != 250 {
                    bail!("steady sender's message {i} refused: {}", sent.reply);
                }
                acks.push((sent.data_end, sent.at));
            }
            smtp.quit().await;
            Ok(acks)
        });
        Ok(Sampler {
            stop,
            want,
            base,
            sender,
            reader,
        })
    }

    /// Stop the sender, wait (bounded) for the idler to see every message, and pair
    /// each 250 with its EXISTS (the k-th accepted message is EXISTS base + k).
    async fn finish(self) -> Result<Vec<Sample>> {
        self.stop.store(true, Ordering::Release);
        let acks = match self.sender.await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                self.reader.abort();
                return Err(e.context("the steady sender failed"));
            }
            Err(e) => {
                self.reader.abort();
                return Err(anyhow!("the steady sender panicked: {e}"));
            }
        };
        self.want
            .store(self.base + acks.len() as u32, Ordering::Release);
        let mut reader = self.reader;
        let (seen, err) = match tokio::time::timeout(DRAIN_TIMEOUT, &mut reader).await {
            Ok(r) => r.map_err(|e| anyhow!("the idler panicked: {e}"))?,
            Err(_) => {
                reader.abort();
                bail!("the idler did not see every message within {DRAIN_TIMEOUT:?}")
            }
        };
        let mut samples = Vec::with_capacity(acks.len());
        let mut missing = 0;
        for (k, (data_end, ack)) in (1u32..).zip(&acks) {
            match seen.iter().find(|(c, _)| *c >= self.base + k) {
                Some((_, t)) => samples.push(Sample {
                    data_end: *data_end,
                    ack: *ack,
                    exists: *t,
                }),
                None => missing += 1,
            }
        }
        if missing > 0 {
            bail!(
                "{missing} of {} acknowledged messages never showed as EXISTS{}",
                acks.len(),
                err.map(|e| format!(": {e:#}")).unwrap_or_default()
            );
        }
        Ok(samples)
    }
}
