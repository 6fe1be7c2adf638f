//! The SD-card phase (`--sdcard`, issue 14 points 1 and 3): what the relay makes a card
//! write, counted at the block device. Each workload gets a fresh ext4 file system on a
//! loop device, made and mounted like the image's data partition ([`crate::loopfs`]), and
//! a fresh relay (under strace counting sync calls) whose `data_dir` is on it. A
//! measured window starts and ends with `syncfs` of the mount (`sync -f`), so writes
//! the kernel deferred are counted; the device's counters (`/sys/block/<loop>/stat`)
//! give bytes, write requests and flushes, jbd2's statistics the journal commits, and
//! the relay's `/proc/<pid>/io` and strace output the process figures.
//!
//! Workloads: (a) 2 messages per second to a receiver that fetches and deletes each one
//! as Delta Chat does, (b) the same rate with the receiver offline, (c) 10 and 50
//! concurrent submitters, (d) the idle minutes after a burst; and the memory part
//! (issue 14 point 3): a store filled with 200 000 messages, then RSS after a restart,
//! after `FETCH 1:* (FLAGS)` and after a full header fetch. The results go to the
//! `sdcard` section of `tests/bench/results.md`, one table per run label (`--label`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use pgp::composed::SignedPublicKey;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::client::{Imap, Smtp, dot_stuff, exists_count, fetch_uid};
use crate::loopfs::{self, DevStat, Jbd2, LoopFs};
use crate::mail;
use crate::relay::{self, Options, Relay, RssPeak};
use crate::report::{self, PhaseArgs as Args, RunOut as Out, cell};

/// Name of the results-file section.
pub const SECTION: &str = "sdcard";
/// Password of every account (ACC-8 allows sharing one).
const PASSWORD: &str = crate::PASSWORD;
/// Recipient keys (and recipient accounts of the multi-recipient workloads).
const KEYS: usize = 10;
/// Size of a message on the wire: issue 14's 3.8 KB encrypted message.
const MESSAGE_BYTES: usize = 3800;
/// The rate of workloads (a) and (b): the issue measured at two messages per second.
const RATE_PER_SEC: u64 = 2;
/// Submitters of the idle workload's burst.
const BURST_SUBMITTERS: usize = 10;
/// Submitters filling the memory workload's store.
const FILL_SUBMITTERS: usize = 50;
/// Distinct messages each fill submitter sends over and over.
const FILL_POOL: usize = 8;
/// Longest a Delta Chat-style receiver idles before it re-selects (as its IDLE timeout).
const IDLE_POLL: Duration = Duration::from_secs(30);
/// Period of the device samples in the idle window.
const IDLE_SAMPLE: Duration = Duration::from_secs(5);
/// The relay checkpoints at most this long after the first change no checkpoint covers
/// (`CHECKPOINT_AFTER` in daemon/src/store/writer.rs): a window of traffic that leaves
/// changes for its checkpoint runs at least this long past its end ([`settle`]).
const RELAY_CHECKPOINT_AFTER: Duration = Duration::from_secs(60);
/// [`settle`] ends once the device has been quiet this long…
const SETTLE_QUIET: Duration = Duration::from_secs(5);
/// …and gives up after this long.
const SETTLE_MAX: Duration = Duration::from_secs(120);
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
/// Issue 14's memory target.
const RSS_TARGET_KIB: u64 = 64 * KIB;
/// The send rate limit, raised so that one account on one connection is one submitter.
const RELAY_INI: &str =
    "log_stderr = true\nmax_user_send_per_minute = 1000000\nmax_user_send_burst_size = 1000000\n";
/// The memory workload's relay also holds the whole store in one mailbox.
const FILL_INI: &str = "max_mailbox_size = 4G\n";

/// Sizes of one run.
struct Plan {
    quick: bool,
    /// Seconds of sending in (a) and (b).
    rate_secs: u64,
    /// Messages of each (c) run.
    load_msgs: usize,
    /// Messages of (d)'s burst and the idle window after it.
    burst_msgs: usize,
    idle: Duration,
    /// The empty file system's quiet window.
    control: Duration,
    /// Messages of the memory workload's store.
    fill_msgs: usize,
    fs_bytes: u64,
    fill_fs_bytes: u64,
    /// Deadline of one workload (the idle and memory ones get more, see [`run`]).
    case_deadline: Duration,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                rate_secs: 20,
                load_msgs: 300,
                burst_msgs: 100,
                idle: Duration::from_secs(60),
                control: Duration::from_secs(5),
                fill_msgs: 5_000,
                fs_bytes: 4 * GIB,
                fill_fs_bytes: 4 * GIB,
                case_deadline: Duration::from_secs(120),
            }
        } else {
            Plan {
                quick,
                rate_secs: 120,
                load_msgs: 2000,
                burst_msgs: 300,
                idle: Duration::from_secs(600),
                control: Duration::from_secs(30),
                fill_msgs: 200_000,
                fs_bytes: 4 * GIB,
                fill_fs_bytes: 8 * GIB,
                case_deadline: Duration::from_secs(600),
            }
        }
    }

    fn rate_msgs(&self) -> usize {
        (self.rate_secs * RATE_PER_SEC) as usize
    }
}

/// What every workload needs.
struct Ctx {
    plan: Plan,
    bin: PathBuf,
    data_parent: PathBuf,
    tls: TlsConnector,
    strace: Option<PathBuf>,
    tag: String,
    keys: Vec<SignedPublicKey>,
    plaintext_len: usize,
    /// File systems made so far (numbers the work directories).
    made: AtomicUsize,
}

impl Ctx {
    /// A 9-character local part: role letter, run tag, 5 digits.
    fn user(&self, role: char, i: usize) -> String {
        format!("{role}{}{:05}@[127.0.0.1]", self.tag, i % 100_000)
    }

    fn users(&self, role: char, n: usize) -> Vec<String> {
        (0..n).map(|i| self.user(role, i)).collect()
    }

    fn new_fs(&self, bytes: u64) -> Result<LoopFs> {
        let n = self.made.fetch_add(1, Ordering::Relaxed);
        LoopFs::create(&self.data_parent, bytes, n)
    }

    /// A fresh relay whose data directory is on `fs`, under strace when `traced`.
    fn start_relay(&self, fs: &LoopFs, traced: bool, extra: &str) -> Result<Relay> {
        let data_dir = fs.mount.join("relaybox");
        let ini = format!("{RELAY_INI}{extra}");
        Relay::start_with(
            &self.bin,
            &self.data_parent,
            &Options {
                strace: if traced { self.strace.as_deref() } else { None },
                extra_ini: &ini,
                nofile_soft: None,
                default_connection_limits: false,
                data_dir: Some(&data_dir),
            },
        )
    }

    /// A PGP/MIME message from `from` to recipient `to` (encrypted to key `k`),
    /// dot-stuffed for DATA.
    fn message(&self, from: &str, to: &str, k: usize) -> Result<Vec<u8>> {
        let a = mail::armored(&self.keys[k % self.keys.len()], self.plaintext_len)?;
        Ok(dot_stuff(&mail::pgp_mime(from, to, &a)))
    }
}

/// The device, journal and process figures of one measured window.
#[derive(Clone)]
struct Load {
    name: String,
    msgs: usize,
    /// Mean size of the messages on the wire (bytes).
    size: f64,
    secs: f64,
    dev: DevStat,
    /// jbd2 commits in the window and its running average of blocks per commit.
    journal: Option<(u64, u64)>,
    relay_bytes: u64,
    /// Sync calls in the window and their split by name.
    syncs: Option<(u64, String)>,
    /// Epoch seconds of the window, for the strace count.
    window: (f64, f64),
}

impl Load {
    fn per(&self, v: u64) -> f64 {
        v as f64 / self.msgs.max(1) as f64
    }
}

/// The start of a measured window.
struct Window {
    dev: DevStat,
    jbd: Option<Jbd2>,
    relay_bytes: u64,
    epoch: f64,
    at: Instant,
}

impl Window {
    /// `sync -f`, then the counters.
    fn begin(fs: &LoopFs, relay: &Relay) -> Result<Window> {
        let dev = fs.synced_stat()?;
        Ok(Window {
            dev,
            jbd: fs.jbd2(),
            relay_bytes: relay.write_bytes()?,
            epoch: crate::epoch_secs(),
            at: Instant::now(),
        })
    }

    /// `sync -f` again so deferred writes count, then the differences.
    fn end(self, fs: &LoopFs, relay: &Relay, name: &str, msgs: usize, size: f64) -> Result<Load> {
        let dev = fs.synced_stat()?.since(&self.dev);
        let journal = match (self.jbd, fs.jbd2()) {
            (Some(a), Some(b)) => Some((
                b.transactions.saturating_sub(a.transactions),
                b.logged_blocks_avg,
            )),
            _ => None,
        };
        Ok(Load {
            name: name.to_string(),
            msgs,
            size,
            secs: self.at.elapsed().as_secs_f64(),
            dev,
            journal,
            relay_bytes: relay.write_bytes()?.saturating_sub(self.relay_bytes),
            syncs: None,
            window: (self.epoch, crate::epoch_secs()),
        })
    }
}

/// Fill in the sync calls of `loads` from the stopped relay's strace output.
fn count_syncs(relay: &Relay, loads: &mut [&mut Load]) {
    let Some(out) = relay.strace_out.as_ref() else {
        return;
    };
    for l in loads.iter_mut() {
        if let Ok(c) = relay::count_sync_calls(out, l.window.0, l.window.1) {
            let total = c.iter().map(|(_, n)| n).sum();
            let detail = c
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(name, n)| format!("{name} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            l.syncs = Some((total, detail));
        }
    }
}

fn kb(bytes: f64) -> String {
    if bytes >= 1e6 {
        format!("{:.2} MB", bytes / 1e6)
    } else if bytes >= 1e3 {
        format!("{:.1} KB", bytes / 1e3)
    } else {
        format!("{bytes:.0} B")
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Run the phase and write its section of the results file; Ctrl-C ends it with
/// everything cleaned up (relays stopped, file systems unmounted and removed).
pub async fn run(args: Args, bin: PathBuf, root: &Path) -> Result<()> {
    tokio::select! {
        r = run_inner(args, bin, root) => r,
        _ = tokio::signal::ctrl_c() => {
            bail!("interrupted: relays stopped, loop file systems unmounted and removed")
        }
    }
}

async fn run_inner(args: Args, bin: PathBuf, root: &Path) -> Result<()> {
    let plan = Plan::new(args.quick);
    let data_parent = root.join("target/bench-data");
    for line in loopfs::sweep_stale(&data_parent) {
        println!("left over from an earlier run: {line}");
    }
    let tls = crate::client::tls_connector()?;
    let tag = crate::Names::new().tag;
    let keys = (0..KEYS)
        .map(|i| mail::recipient_key(&format!("r{tag}{i:05}@[127.0.0.1]")))
        .collect::<Result<Vec<_>>>()?;
    let plaintext_len = crate::plaintext_for_target(&keys[0], MESSAGE_BYTES)?;
    let strace = crate::strace_path();
    let ctx = Ctx {
        plan,
        bin: bin.clone(),
        data_parent,
        tls,
        strace,
        tag,
        keys,
        plaintext_len,
        made: AtomicUsize::new(0),
    };
    let load = report::load_now();
    println!(
        "relaybox SD-card bench ({}, label {}) — binary {}, load {load}",
        if ctx.plan.quick { "quick" } else { "full" },
        args.label,
        bin.display()
    );
    let mut out = Out::default();
    let mut loads: Vec<Load> = Vec::new();
    let mut fs_facts = None;
    let started = Instant::now();
    let p = &ctx.plan;
    let cases: [(&str, Duration); 9] = [
        ("control", p.control + Duration::from_secs(60)),
        ("fetch-delete", p.case_deadline),
        ("kept", p.case_deadline),
        ("load10", p.case_deadline),
        ("load50", p.case_deadline),
        ("load10-dc", p.case_deadline),
        ("load50-dc", p.case_deadline),
        ("idle", p.case_deadline + p.idle),
        (
            "memory",
            if p.quick {
                Duration::from_secs(300)
            } else {
                Duration::from_secs(3 * 3600)
            },
        ),
    ];
    let names: Vec<&str> = cases.iter().map(|(n, _)| *n).collect();
    args.check_cases(&names, "workload")?;
    for (name, limit) in cases {
        if !args.wants(name) {
            continue;
        }
        println!("workload: {name} …");
        let t = Instant::now();
        let r = tokio::time::timeout(
            limit,
            run_case(name, &ctx, &mut out, &mut loads, &mut fs_facts),
        )
        .await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => out.failed(&format!("{name}: workload"), "–", &e),
            Err(_) => out.row(
                &format!("{name}: workload"),
                format!(
                    "no result within the workload deadline of {:.0} s",
                    limit.as_secs_f64()
                ),
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
    let facts = facts(&args, &ctx, root, &load, total, fs_facts.as_deref());
    let block = report::run_block(
        SECTION,
        &args.label,
        "Figure",
        &facts,
        &out,
        &detail_table(&loads),
    );
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

async fn run_case(
    name: &str,
    ctx: &Ctx,
    out: &mut Out,
    loads: &mut Vec<Load>,
    fs_facts: &mut Option<String>,
) -> Result<()> {
    match name {
        "control" => case_control(ctx, out, fs_facts).await,
        "fetch-delete" => case_rate(ctx, out, loads, true).await,
        "kept" => case_rate(ctx, out, loads, false).await,
        "load10" => case_load(ctx, out, loads, 10, false).await,
        "load50" => case_load(ctx, out, loads, 50, false).await,
        "load10-dc" => case_load(ctx, out, loads, 10, true).await,
        "load50-dc" => case_load(ctx, out, loads, 50, true).await,
        "idle" => case_idle(ctx, out, loads).await,
        "memory" => case_memory(ctx, out, loads).await,
        _ => Err(anyhow!("unknown workload {name}")),
    }
}

fn facts(
    args: &Args,
    ctx: &Ctx,
    root: &Path,
    load: &str,
    total: Duration,
    fs: Option<&str>,
) -> Vec<(String, String)> {
    let p = &ctx.plan;
    let mut facts = report::run_facts(
        root,
        &ctx.bin,
        args.commit.as_deref(),
        format!(
            "{} ({:.0} s in all)",
            if p.quick { "`--quick`" } else { "full" },
            total.as_secs_f64()
        ),
        load,
    );
    let sysctl = |k: &str| {
        std::fs::read_to_string(format!("/proc/sys/vm/{k}"))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|_| "?".into())
    };
    facts.extend([
        (
            "File system".into(),
            format!(
                "a fresh one per workload, made like the image's data partition: a sparse {} GiB file ({} GiB for the memory workload's store; the relay refuses new accounts below `min_free_disk_space` = 1 GiB free) on the machine's disk, `mkfs.ext4 -L data -E {}` at {} (e2fsprogs of the machine, `/etc/mke2fs.conf`), grown with `resize2fs` to the whole file, attached with `losetup -f`, mounted `-o {}`{}",
                p.fs_bytes / GIB,
                p.fill_fs_bytes / GIB,
                loopfs::MKFS_EXTENDED,
                loopfs::MKFS_SIZE,
                loopfs::MOUNT_OPTIONS,
                fs.map(|f| format!("; {f}")).unwrap_or_default()
            ),
        ),
        (
            "Counting".into(),
            format!(
                "`/sys/block/<loop>/stat` fields 5 (write requests), 7 (sectors written × 512) and 16 (flushes); `syncfs` of the mount (what `sync -f` does) right before and at the end of each window, so writes the kernel deferred are counted; jbd2 commits from `/proc/fs/jbd2/<loop>-8/info`; the relay's `/proc/<pid>/io` `write_bytes`; sync calls from `strace -f --seccomp-bpf -e trace={}` in the window's time span. The machine's `vm.dirty_expire_centisecs` = {}, `vm.dirty_writeback_centisecs` = {} (the image sets both to 6000; with a sync at both ends of a window this moves writes within the window, not out of it). A sync with nothing to write still costs one empty write request and one flush (the control note). The loop device reports a write-back cache without FUA (`queue/write_cache`, `queue/fua`), so each flush the file system asks for is counted, and a jbd2 commit (its commit block is PREFLUSH + FUA) counts as two; how many of them a card honours depends on its cache",
                relay::SYNC_CALLS.join(","),
                sysctl("dirty_expire_centisecs"),
                sysctl("dirty_writeback_centisecs")
            ),
        ),
        (
            "Relay".into(),
            "a fresh one per workload with `data_dir` on the loop file system (config, log and strace output on the machine's disk), run under strace (not in the memory workload); IP-only mode, loopback listeners, `max_load_1m = 10000`, `log_stderr = true`, the send rate limit raised (`max_user_send_per_minute` and `max_user_send_burst_size` = 1000000) so that one submitter is one account on one connection, opened before the window; every account is created (first IMAP login) before the window".into(),
        ),
        (
            "Messages".into(),
            format!(
                "PGP/MIME made with the `pgp` crate (the bench's message builder), {} B random plaintext, about 3.8 KB on the wire as in issue 14 (each row gives its workload's mean)",
                ctx.plaintext_len
            ),
        ),
        (
            "Receiver (a, d)".into(),
            "Delta Chat's cycle with a chatmail relay (chatmail/core `imap.rs`, `imap/select_folder.rs`): `SELECT INBOX`; `IDLE` until `* n EXISTS`, `DONE`; prefetch `UID FETCH next:* (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID X-MICROSOFT-ORIGINAL-MESSAGE-ID)])`; `UID FETCH set (FLAGS BODY.PEEK[])`; `UID STORE set +FLAGS (\\Deleted)`; `CLOSE` (its expunge); again. XCHATMAIL is a capability the relay advertises, not a command: it tells the client to delete at once".into(),
        ),
    ]);
    facts
}

/// The whole section: intro, a comparison table of every run label, each run's block.
fn section_body(old_section: &str, label: &str, block: &str) -> String {
    let intro = "## SD-card writes and store memory (issue 14)\n\nWritten by `cargo run --release -p relaybox-bench -- --sdcard [--quick] [--label NAME] [--commit TEXT] [--note TEXT] [--cases a,b]` as root (tests/bench/src/sdcard.rs; `RELAYBOX_BENCH_BIN=/path/to/relaybox` picks the binary). Figures are what the block device under the data directory wrote, per delivered message, with ~3.8 KB PGP/MIME messages. Each run label has its own table; a run replaces only the table of its label; with more than one label a comparison table comes first. Targets and the \"now\" figures quoted beside them are issue 14's (\"Figures to reach\").";
    report::labelled_section_body(SECTION, intro, "Figure", old_section, label, block)
}

/// The per-workload detail table: every counter of every window.
fn detail_table(loads: &[Load]) -> String {
    if loads.is_empty() {
        return String::new();
    }
    let mut s = String::from("#### Every window\n\n");
    s += "| Workload | Messages | Window | Device bytes / msg | × message | Write requests / msg | Bytes / write request | Flushes / msg | jbd2 commits (avg blocks) | Relay `write_bytes` / msg | Sync calls / msg |\n";
    s += "|---|---|---|---|---|---|---|---|---|---|---|\n";
    for l in loads {
        let per_write = if l.dev.write_ios > 0 {
            kb(l.dev.write_bytes() as f64 / l.dev.write_ios as f64)
        } else {
            "–".into()
        };
        let journal = l
            .journal
            .map(|(c, avg)| {
                if l.msgs > 0 {
                    format!("{c} = {:.2} / msg ({avg})", l.per(c))
                } else {
                    format!("{c} ({avg})")
                }
            })
            .unwrap_or_else(|| "–".into());
        let syncs = l
            .syncs
            .as_ref()
            .map(|(n, d)| {
                let head = if l.msgs > 0 {
                    format!("{:.3}", l.per(*n))
                } else {
                    format!("{n} in all")
                };
                if d.is_empty() {
                    head
                } else {
                    format!("{head} ({d})")
                }
            })
            .unwrap_or_else(|| "–".into());
        if l.msgs > 0 {
            s += &format!(
                "| {} | {} | {:.1} s | {} | {:.2} | {:.2} | {per_write} | {:.2} | {journal} | {} | {syncs} |\n",
                cell(&l.name),
                l.msgs,
                l.secs,
                kb(l.per(l.dev.write_bytes())),
                l.per(l.dev.write_bytes()) / l.size.max(1.0),
                l.per(l.dev.write_ios),
                l.per(l.dev.flush_ios),
                kb(l.per(l.relay_bytes)),
            );
        } else {
            s += &format!(
                "| {} | 0 | {:.1} s | {} in all | – | {} in all | {per_write} | {} in all | {journal} | {} in all | {syncs} |\n",
                cell(&l.name),
                l.secs,
                kb(l.dev.write_bytes() as f64),
                l.dev.write_ios,
                l.dev.flush_ios,
                kb(l.relay_bytes as f64),
            );
        }
    }
    s
}

fn print_load(l: &Load) {
    println!(
        "  {}: {} msgs in {:.1} s; device {} ({} write requests, {} flushes), relay write_bytes {}, journal {:?}",
        l.name,
        l.msgs,
        l.secs,
        kb(l.dev.write_bytes() as f64),
        l.dev.write_ios,
        l.dev.flush_ios,
        kb(l.relay_bytes as f64),
        l.journal
    );
}

/// Rows of the three device figures of a message workload.
fn device_rows(out: &mut Out, prefix: &str, l: &Load, targets: [(&str, Option<f64>); 3]) {
    let bytes = l.per(l.dev.write_bytes());
    let ratio = bytes / l.size.max(1.0);
    let [(bt, bl), (wt, wl), (ft, fl)] = targets;
    out.row(
        &format!("{prefix}: device bytes per message"),
        format!(
            "{} = {ratio:.2} × message size ({}; {} messages)",
            kb(bytes),
            kb(l.size),
            l.msgs
        ),
        bt,
        bl.map(|x| ratio <= x),
    );
    let w = l.per(l.dev.write_ios);
    out.row(
        &format!("{prefix}: write requests per message"),
        format!("{w:.2}"),
        wt,
        wl.map(|x| w <= x),
    );
    let f = l.per(l.dev.flush_ios);
    out.row(
        &format!("{prefix}: flushes per message"),
        format!("{f:.2}"),
        ft,
        fl.map(|x| f <= x),
    );
}

// ---- workloads ------------------------------------------------------------------------

/// The empty file system alone: what it writes when nothing runs (should be nothing),
/// and the file system's facts.
async fn case_control(ctx: &Ctx, out: &mut Out, fs_facts: &mut Option<String>) -> Result<()> {
    let fs = ctx.new_fs(ctx.plan.fs_bytes)?;
    *fs_facts = Some(format!(
        "{} B blocks, features: {}",
        fs.block_size, fs.features
    ));
    let before = fs.synced_stat()?;
    tokio::time::sleep(ctx.plan.control).await;
    let d = fs.synced_stat()?.since(&before);
    out.note(format!(
        "Control: the freshly mounted file system with nothing running wrote {} in {} requests and {} flushes over {:.0} s (the two syncs included).",
        kb(d.write_bytes() as f64),
        d.write_ios,
        d.flush_ios,
        ctx.plan.control.as_secs_f64()
    ));
    Ok(())
}

/// (a) and (b): RATE_PER_SEC messages per second from one sender to one receiver that
/// fetches and deletes each message (a) or is offline (b).
async fn case_rate(ctx: &Ctx, out: &mut Out, loads: &mut Vec<Load>, fetch: bool) -> Result<()> {
    let fs = ctx.new_fs(ctx.plan.fs_bytes)?;
    let mut relay = ctx.start_relay(&fs, true, "")?;
    let subs = relay.ports.submissions_addr();
    let role = if fetch { 'a' } else { 'b' };
    let sender = ctx.user(role, 0);
    let rcpt = ctx.user('r', 0);
    create_accounts(ctx, &relay, &[sender.clone(), rcpt.clone()]).await?;
    let n = ctx.plan.rate_msgs();
    let msgs = (0..n)
        .map(|_| ctx.message(&sender, &rcpt, 0))
        .collect::<Result<Vec<_>>>()?;
    let size = msgs.iter().map(|m| m.len()).sum::<usize>() as f64 / n as f64;
    let mut smtp = Smtp::login(&ctx.tls, subs, &sender, PASSWORD).await?;
    let run_deadline = Instant::now() + Duration::from_secs(ctx.plan.rate_secs + 60);
    let receiver = if fetch {
        let mut imap = Imap::login(&ctx.tls, relay.ports.imaps_addr(), &rcpt, PASSWORD).await?;
        Some(tokio::spawn(async move {
            let r = dc_receive(&mut imap, n, run_deadline).await;
            let _ = imap.command("LOGOUT").await;
            r
        }))
    } else {
        None
    };
    tokio::time::sleep(Duration::from_secs(1)).await;

    let w = Window::begin(&fs, &relay)?;
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE_PER_SEC));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut accepted_at = Vec::with_capacity(n);
    for (i, data) in msgs.iter().enumerate() {
        tick.tick().await;
        let sent = smtp.send(&rcpt, data).await?;
        if sent.reply.code != 250 {
            bail!("message {i} refused: {}", sent.reply);
        }
        accepted_at.push(sent.at);
    }
    let received = match receiver {
        Some(h) => Some(h.await.context("receiver task")??),
        None => None,
    };
    let name = if fetch {
        format!("(a) {RATE_PER_SEC} msg/s, receiver fetches and deletes")
    } else {
        format!("(b) {RATE_PER_SEC} msg/s, receiver offline (messages kept)")
    };
    let mut l = w.end(&fs, &relay, &name, n, size)?;
    smtp.quit().await;
    relay.check_alive()?;
    relay.stop();
    count_syncs(&relay, &mut [&mut l]);
    print_load(&l);
    if fetch {
        device_rows(
            out,
            "(a) 2 msg/s, receiver fetches and deletes",
            &l,
            [
                ("≤ 1.5 × message size (issue: ~66 KB = 17×)", Some(1.5)),
                ("≤ 2 (issue: 9.5)", Some(2.0)),
                ("– (issue: 1)", None),
            ],
        );
        if let Some(r) = received {
            latency_row(out, &accepted_at, &r);
            if r.fetched != n {
                bail!("the receiver fetched {} of {n} messages", r.fetched);
            }
            out.note(format!(
                "(a): the receiver fetched and deleted {} messages ({} of bodies, {} fetch cycles; {} seen through IDLE, {} at SELECT).",
                r.fetched,
                kb(r.body_bytes as f64),
                r.cycles,
                r.by_idle,
                r.by_select
            ));
        }
    } else {
        device_rows(
            out,
            "(b) 2 msg/s, messages kept",
            &l,
            [
                ("≤ 3 × message size (issue: ~64 KB = 17×)", Some(3.0)),
                ("–", None),
                ("–", None),
            ],
        );
    }
    if let Some((c, avg)) = l.journal {
        out.note(format!(
            "{}: {c} jbd2 commits in {:.0} s ({:.2} per message, {avg} journal blocks per commit on average since mount).",
            l.name,
            l.secs,
            l.per(c)
        ));
    }
    loads.push(l);
    Ok(())
}

/// Ack → visible: the time from each 250 to the receiver's first sight of the message.
fn latency_row(out: &mut Out, accepted_at: &[Instant], r: &Received) {
    let mut lat: Vec<Duration> = accepted_at
        .iter()
        .enumerate()
        .filter_map(|(i, at)| {
            let k = i as u32 + 1;
            r.visible
                .iter()
                .find(|(_, total)| *total >= k)
                .map(|(t, _)| t.saturating_duration_since(*at))
        })
        .collect();
    lat.sort();
    let (Some(p50), Some(p99)) = (
        report::percentile(&lat, 50.0),
        report::percentile(&lat, 99.0),
    ) else {
        return;
    };
    out.row(
        "(a) ack (250) → the receiver sees the message, p50 / p99",
        format!(
            "{} / {} ({} messages)",
            report::ms(p50),
            report::ms(p99),
            lat.len()
        ),
        "p99 ≤ 1 ms (issue: ~0.2 ms)",
        Some(p99 <= Duration::from_millis(1)),
    );
}

/// (c): `submitters` concurrent submitters, each one account on one connection, as
/// fast as they can; recipients offline (messages kept) or, with `fetch`, Delta
/// Chat-style receivers that fetch and delete each message (the chatmail shape).
async fn case_load(
    ctx: &Ctx,
    out: &mut Out,
    loads: &mut Vec<Load>,
    submitters: usize,
    fetch: bool,
) -> Result<()> {
    let fs = ctx.new_fs(ctx.plan.fs_bytes)?;
    let mut relay = ctx.start_relay(&fs, true, "")?;
    let subs = relay.ports.submissions_addr();
    let role = match (submitters == 10, fetch) {
        (true, false) => 'c',
        (false, false) => 'h',
        (true, true) => 'e',
        (false, true) => 'g',
    };
    let senders = ctx.users(role, submitters);
    let rcpts = ctx.users('r', KEYS);
    let mut all = senders.clone();
    all.extend(rcpts.iter().cloned());
    create_accounts(ctx, &relay, &all).await?;
    let n = ctx.plan.load_msgs;
    let (jobs, size) = jobs(ctx, &senders, &rcpts, n)?;
    let per_rcpt = per_recipient(&jobs, &rcpts);
    let sessions = open_submitters(ctx, subs, jobs).await?;
    let mut receivers = Vec::new();
    if fetch {
        let deadline = Instant::now() + ctx.plan.case_deadline;
        for (r, want) in rcpts.iter().zip(per_rcpt) {
            let mut imap = Imap::login(&ctx.tls, relay.ports.imaps_addr(), r, PASSWORD).await?;
            receivers.push(tokio::spawn(async move {
                let got = dc_receive(&mut imap, want, deadline).await;
                let _ = imap.command("LOGOUT").await;
                got
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let w = Window::begin(&fs, &relay)?;
    let t = Instant::now();
    let accepted = send_all(sessions).await?;
    let secs = t.elapsed().as_secs_f64();
    let mut fetched = 0;
    for h in receivers {
        fetched += h.await.context("receiver task")??.fetched;
    }
    let (name, prefix) = if fetch {
        (
            format!("(c) {submitters} submitters, {n} messages, receivers fetch and delete"),
            format!("(c) {submitters} submitters, receivers fetch and delete"),
        )
    } else {
        (
            format!("(c) {submitters} submitters, {n} messages, kept"),
            format!("(c) {submitters} submitters"),
        )
    };
    // A checkpoint the load left for later is part of its cost.
    let settled = if fetch { settle(&fs).await? } else { None };
    let mut l = w.end(&fs, &relay, &name, accepted, size)?;
    relay.check_alive()?;
    relay.stop();
    count_syncs(&relay, &mut [&mut l]);
    print_load(&l);
    if fetch {
        if fetched != accepted {
            bail!("the receivers fetched {fetched} of {accepted} messages");
        }
        out.note(settle_note(&name, settled));
    }
    let ratio = l.per(l.dev.write_bytes()) / l.size.max(1.0);
    out.row(
        &format!("{prefix}: device bytes per message"),
        format!(
            "{} = {ratio:.2} × message size ({accepted} messages at {:.0} msg/s)",
            kb(l.per(l.dev.write_bytes())),
            accepted as f64 / secs
        ),
        "≤ 1.2 × message size (issue: not measured)",
        Some(ratio <= 1.2),
    );
    let f = l.per(l.dev.flush_ios);
    out.row(
        &format!("{prefix}: flushes per message"),
        format!(
            "{f:.3} ({:.2} write requests per message)",
            l.per(l.dev.write_ios)
        ),
        if submitters == 10 {
            "≤ 0.1 (issue: ~0.5)"
        } else {
            "≤ 0.1 (under load)"
        },
        Some(f <= 0.1),
    );
    if accepted != n {
        bail!("{accepted} of {n} messages accepted");
    }
    loads.push(l);
    Ok(())
}

/// Wait, without syncing, until what the traffic just sent left for later has reached
/// the device: at least [`RELAY_CHECKPOINT_AFTER`] plus [`SETTLE_QUIET`], then until the
/// device has been quiet for [`SETTLE_QUIET`]; at most [`SETTLE_MAX`]. Returns how long
/// it waited, or `None` when the device was still writing at the end.
async fn settle(fs: &LoopFs) -> Result<Option<Duration>> {
    let start = Instant::now();
    let mut last = fs.stat()?;
    let mut quiet_since = Instant::now();
    // Bounded by SETTLE_MAX.
    while start.elapsed() < SETTLE_MAX {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = fs.stat()?;
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
        if start.elapsed() >= RELAY_CHECKPOINT_AFTER + SETTLE_QUIET
            && quiet_since.elapsed() >= SETTLE_QUIET
        {
            return Ok(Some(start.elapsed()));
        }
    }
    Ok(None)
}

fn settle_note(name: &str, settled: Option<Duration>) -> String {
    match settled {
        Some(d) => format!(
            "{name}: the window ran {:.0} s past the last message, until the relay's deferred checkpoint was on the device and the device had been quiet for {:.0} s (so the checkpoint is counted with the traffic that caused it).",
            d.as_secs_f64(),
            SETTLE_QUIET.as_secs_f64()
        ),
        None => format!(
            "{name}: the device was still writing {:.0} s past the last message; the window ended there.",
            SETTLE_MAX.as_secs_f64()
        ),
    }
}

/// (d): a burst from BURST_SUBMITTERS submitters to Delta Chat-style receivers that
/// fetch and delete, then the idle window with the receivers idling: what the device
/// writes when nothing arrives, sampled every IDLE_SAMPLE without syncing.
async fn case_idle(ctx: &Ctx, out: &mut Out, loads: &mut Vec<Load>) -> Result<()> {
    let fs = ctx.new_fs(ctx.plan.fs_bytes)?;
    let mut relay = ctx.start_relay(&fs, true, "")?;
    let subs = relay.ports.submissions_addr();
    let senders = ctx.users('d', BURST_SUBMITTERS);
    let rcpts = ctx.users('r', KEYS);
    let mut all = senders.clone();
    all.extend(rcpts.iter().cloned());
    create_accounts(ctx, &relay, &all).await?;
    let n = ctx.plan.burst_msgs;
    let (jobs, size) = jobs(ctx, &senders, &rcpts, n)?;
    let per_rcpt = per_recipient(&jobs, &rcpts);
    let sessions = open_submitters(ctx, subs, jobs).await?;
    let deadline = Instant::now() + ctx.plan.case_deadline;
    let mut receivers = Vec::new();
    for (r, want) in rcpts.iter().zip(per_rcpt) {
        let mut imap = Imap::login(&ctx.tls, relay.ports.imaps_addr(), r, PASSWORD).await?;
        receivers.push(tokio::spawn(async move {
            let got = dc_receive(&mut imap, want, deadline).await?;
            // Back to idling, as the app does between messages.
            imap.command("SELECT INBOX").await?;
            imap.idle().await?;
            Ok::<_, anyhow::Error>((imap, got))
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let w = Window::begin(&fs, &relay)?;
    let accepted = send_all(sessions).await?;
    let mut idlers = Vec::new();
    let mut fetched = 0;
    for h in receivers {
        let (imap, got) = h.await.context("receiver task")??;
        fetched += got.fetched;
        idlers.push(imap);
    }
    let name = format!(
        "(d) burst: {BURST_SUBMITTERS} submitters, {n} messages, receivers fetch and delete"
    );
    let settled = settle(&fs).await?;
    out.note(settle_note(&name, settled));
    let mut burst = w.end(&fs, &relay, &name, accepted, size)?;
    if fetched != accepted {
        bail!("the receivers fetched {fetched} of {accepted} messages");
    }

    // The idle window: the receivers idle, nothing arrives.
    let w = Window::begin(&fs, &relay)?;
    let start = fs.stat()?;
    let mut timeline = Vec::new();
    let mut last = start;
    let idle_end = Instant::now() + ctx.plan.idle;
    let mut tick = tokio::time::interval(IDLE_SAMPLE);
    tick.tick().await;
    // Bounded by the idle window's end.
    while Instant::now() < idle_end {
        tick.tick().await;
        let now = fs.stat()?;
        if now != last {
            let d = now.since(&last);
            timeline.push(format!(
                "{:.0} s: {} in {} requests, {} flushes",
                w.at.elapsed().as_secs_f64(),
                kb(d.write_bytes() as f64),
                d.write_ios,
                d.flush_ios
            ));
            last = now;
        }
    }
    let idle_name = format!(
        "(d) {:.0} idle minutes after the burst, receivers idling",
        ctx.plan.idle.as_secs_f64() / 60.0
    );
    let mut idle = w.end(&fs, &relay, &idle_name, 0, size)?;
    for mut imap in idlers {
        let _ = imap.idle_done().await;
        let _ = imap.command("LOGOUT").await;
    }
    relay.check_alive()?;
    relay.stop();
    count_syncs(&relay, &mut [&mut burst, &mut idle]);
    print_load(&burst);
    print_load(&idle);
    let total = idle.dev.write_bytes();
    out.row(
        &format!(
            "(d) device writes in {:.0} idle minutes after a burst",
            ctx.plan.idle.as_secs_f64() / 60.0
        ),
        format!(
            "{} ({} write requests, {} flushes; relay write_bytes {}{})",
            kb(total as f64),
            idle.dev.write_ios,
            idle.dev.flush_ios,
            kb(idle.relay_bytes as f64),
            idle.syncs
                .as_ref()
                .map(|(n, _)| format!(", {n} sync calls"))
                .unwrap_or_default()
        ),
        "0 bytes when nothing arrives (issue: 0)",
        Some(total == 0),
    );
    out.note(format!(
        "(d) idle window, device writes by {:.0}-second sample (no sync between samples; the final sync's own writes are in the total): {}.",
        IDLE_SAMPLE.as_secs_f64(),
        if timeline.is_empty() {
            "none".to_string()
        } else {
            timeline.join("; ")
        }
    ));
    loads.push(burst);
    loads.push(idle);
    Ok(())
}

/// Issue 14 point 3: a store of `fill_msgs` messages in one mailbox, filled by
/// FILL_SUBMITTERS submitters; then RSS after a restart, after `FETCH 1:* (FLAGS)` and
/// after a full header fetch by one client.
async fn case_memory(ctx: &Ctx, out: &mut Out, loads: &mut Vec<Load>) -> Result<()> {
    let n = ctx.plan.fill_msgs;
    let fs = ctx.new_fs(ctx.plan.fill_fs_bytes)?;
    let mut relay = ctx.start_relay(&fs, false, FILL_INI)?;
    let subs = relay.ports.submissions_addr();
    let senders = ctx.users('f', FILL_SUBMITTERS);
    let rcpt = ctx.user('m', 0);
    let mut all = senders.clone();
    all.push(rcpt.clone());
    create_accounts(ctx, &relay, &all).await?;
    // Each submitter sends its few distinct messages over and over.
    let mut jobs = Vec::new();
    let mut sizes = Vec::new();
    for (i, s) in senders.iter().enumerate() {
        let share = n / FILL_SUBMITTERS + usize::from(i < n % FILL_SUBMITTERS);
        let pool = (0..FILL_POOL)
            .map(|_| ctx.message(s, &rcpt, 0).map(Arc::<[u8]>::from))
            .collect::<Result<Vec<_>>>()?;
        sizes.extend(pool.iter().map(|m| m.len()));
        let msgs = (0..share)
            .map(|k| (rcpt.clone(), pool[k % FILL_POOL].clone()))
            .collect();
        jobs.push((s.clone(), msgs));
    }
    let size = sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64;
    let sessions = open_submitters(ctx, subs, jobs).await?;
    println!("  filling the store with {n} messages ({FILL_SUBMITTERS} submitters) …");
    let w = Window::begin(&fs, &relay)?;
    let t = Instant::now();
    let accepted = send_all(sessions).await?;
    let fill_secs = t.elapsed().as_secs_f64();
    let rss_filled = relay.rss_kib()?;
    let name =
        format!("(3) filling the store: {FILL_SUBMITTERS} submitters, {n} messages to one mailbox");
    let fill = w.end(&fs, &relay, &name, accepted, size)?;
    print_load(&fill);
    if accepted != n {
        bail!("{accepted} of {n} messages accepted");
    }
    relay.check_alive()?;
    relay.stop();
    let store = fs.mount.join("relaybox").join("relaybox.redb");
    let meta = std::fs::metadata(&store).with_context(|| format!("stat {}", store.display()))?;
    let allocated = {
        use std::os::unix::fs::MetadataExt;
        meta.blocks() * 512
    };
    out.row(
        &format!("(3) store of {n} messages in one mailbox"),
        format!(
            "filled in {fill_secs:.0} s = {:.0} msg/s by {FILL_SUBMITTERS} submitters; store file {} ({} allocated); RSS at the end of the fill {}",
            n as f64 / fill_secs,
            kb(meta.len() as f64),
            kb(allocated as f64),
            mib(rss_filled)
        ),
        "–",
        None,
    );
    loads.push(fill);

    // The restart, then one client.
    let relay = ctx.start_relay(&fs, false, FILL_INI)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_start = relay.rss_kib()?;
    out.row(
        &format!("(3) RSS right after start, store of {n} messages"),
        mib(rss_start),
        "≤ 64 MiB",
        Some(rss_start <= RSS_TARGET_KIB),
    );
    let mut imap = Imap::login(&ctx.tls, relay.ports.imaps_addr(), &rcpt, PASSWORD).await?;
    let exists = imap.select_inbox().await?;
    if exists as usize != n {
        bail!("SELECT INBOX shows {exists} messages, {n} were accepted");
    }
    let rss_select = relay.rss_kib()?;
    let big = Duration::from_secs(if ctx.plan.quick { 120 } else { 1800 });
    let max_lines = n as u64 * 2 + 100;
    for (what, cmd, target_note) in [
        ("FETCH 1:* (FLAGS)", "FETCH 1:* (FLAGS)", "≤ 64 MiB"),
        (
            "a full header fetch (FETCH 1:* (BODY.PEEK[HEADER]))",
            "FETCH 1:* (BODY.PEEK[HEADER])",
            "≤ 64 MiB (issue: ~610 MB with ~230 000 messages)",
        ),
    ] {
        let peak = RssPeak::start(relay.pid);
        let t = Instant::now();
        let got = imap
            .command_streamed(cmd, Instant::now() + big, max_lines)
            .await?;
        let secs = t.elapsed().as_secs_f64();
        let p = peak.finish();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = relay.rss_kib()?;
        out.row(
            &format!("(3) RSS after {what}, store of {n} messages"),
            format!(
                "{} (peak {} during it; {} answers, {} of literals, {secs:.2} s)",
                mib(after),
                mib(p.peak_kib),
                got.untagged,
                kb(got.literal_bytes as f64)
            ),
            target_note,
            Some(after <= RSS_TARGET_KIB && p.peak_kib <= RSS_TARGET_KIB),
        );
    }
    let _ = imap.command("LOGOUT").await;
    drop(imap);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_gone = relay.rss_kib()?;
    out.note(format!(
        "(3) RSS of the restarted relay: {} after start, {} after LOGIN + SELECT INBOX ({n} messages), {} a second after the client logged out.",
        mib(rss_start),
        mib(rss_select),
        mib(rss_gone)
    ));
    drop(relay);
    Ok(())
}

/// Create accounts by a first IMAP login, one after another: the relay's per-address
/// login brake counts logins still being checked, so concurrent ones from the bench's
/// one address would be refused. A failure carries the relay's last log lines.
async fn create_accounts(ctx: &Ctx, relay: &Relay, logins: &[String]) -> Result<()> {
    let imaps = relay.ports.imaps_addr();
    for login in logins {
        let r = async {
            let mut imap = Imap::login(&ctx.tls, imaps, login, PASSWORD).await?;
            imap.command("LOGOUT").await.ok();
            Ok::<_, anyhow::Error>(())
        }
        .await;
        r.map_err(|e| {
            e.context(format!(
                "create account {login}; relay log: {}",
                relay.log_tail(8).replace('\n', " / ")
            ))
        })?;
    }
    Ok(())
}

// ---- clients --------------------------------------------------------------------------

/// Messages of one submitter: its login and (recipient, dot-stuffed message) pairs
/// (shared, so that a store fill of many copies of a few messages stays small).
type Job = (String, Vec<(String, Arc<[u8]>)>);

/// A logged-in submitter and the messages it still has to send.
type Submitter = (Smtp, VecDeque<(String, Arc<[u8]>)>);

/// `n` messages from `senders` (shares as equal as can be) to `rcpts` in turn, and
/// their mean size.
fn jobs(ctx: &Ctx, senders: &[String], rcpts: &[String], n: usize) -> Result<(Vec<Job>, f64)> {
    let mut jobs: Vec<Job> = senders.iter().map(|s| (s.clone(), Vec::new())).collect();
    let mut total = 0usize;
    for k in 0..n {
        let r = k % rcpts.len();
        let (login, msgs) = &mut jobs[k % senders.len()];
        let m = ctx.message(login, &rcpts[r], r)?;
        total += m.len();
        msgs.push((rcpts[r].clone(), Arc::from(m)));
    }
    Ok((jobs, total as f64 / n.max(1) as f64))
}

fn per_recipient(jobs: &[Job], rcpts: &[String]) -> Vec<usize> {
    rcpts
        .iter()
        .map(|r| {
            jobs.iter()
                .flat_map(|(_, m)| m.iter())
                .filter(|(to, _)| to == r)
                .count()
        })
        .collect()
}

/// Log every submitter in (TLS, AUTH) before a window starts, one after another (the
/// login brake, see [`create_accounts`]).
async fn open_submitters(ctx: &Ctx, subs: SocketAddr, jobs: Vec<Job>) -> Result<Vec<Submitter>> {
    let mut out = Vec::with_capacity(jobs.len());
    for (login, msgs) in jobs {
        let s = Smtp::login(&ctx.tls, subs, &login, PASSWORD).await?;
        out.push((s, VecDeque::from(msgs)));
    }
    Ok(out)
}

/// Every submitter sends its messages one after another, each waiting for its 250;
/// all concurrently. Returns the number accepted; a refusal is an error.
async fn send_all(sessions: Vec<Submitter>) -> Result<usize> {
    let done = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for (mut smtp, mut msgs) in sessions {
        let done = done.clone();
        set.spawn(async move {
            // Bounded by the submitter's messages.
            while let Some((to, data)) = msgs.pop_front() {
                let sent = smtp.send(&to, &data).await?;
                if sent.reply.code != 250 {
                    bail!("{} → {to}: {}", smtp.login, sent.reply);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            smtp.quit().await;
            Ok::<_, anyhow::Error>(())
        });
    }
    let progress = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            tick.tick().await;
            loop {
                tick.tick().await;
                println!("    … {} accepted", done.load(Ordering::Relaxed));
            }
        })
    };
    let mut first_err = None;
    while let Some(r) = set.join_next().await {
        if let Err(e) = r.map_err(anyhow::Error::from).and_then(|r| r) {
            first_err.get_or_insert(e);
        }
    }
    progress.abort();
    match first_err {
        Some(e) => Err(e.context("a submitter failed")),
        None => Ok(done.load(Ordering::Relaxed)),
    }
}

/// What a Delta Chat-style receiver did.
#[derive(Default)]
struct Received {
    fetched: usize,
    body_bytes: u64,
    /// (when, messages visible so far in all: fetched before + EXISTS).
    visible: Vec<(Instant, u32)>,
    cycles: usize,
    by_idle: usize,
    by_select: usize,
}

/// A UID set of sorted UIDs, ranges joined (`1:3,7`).
fn uid_set(uids: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end + 1 {
            i += 1;
            end = uids[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}:{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// Receive `expected` messages as Delta Chat does with a chatmail relay, on a fresh
/// mailbox (UIDs from 1): select, idle until EXISTS, prefetch the new messages'
/// headers, fetch their bodies, flag them `\Deleted` and `CLOSE` (expunge). Ends
/// after the last `CLOSE` (no mailbox selected).
async fn dc_receive(imap: &mut Imap, expected: usize, deadline: Instant) -> Result<Received> {
    let mut r = Received::default();
    let mut next_uid = 1u32;
    // Bounded: every round either fetches a message or waits up to IDLE_POLL, and the
    // deadline ends it.
    while r.fetched < expected {
        if Instant::now() >= deadline {
            bail!(
                "receiver: {} of {expected} messages by the deadline",
                r.fetched
            );
        }
        let sel = imap.command("SELECT INBOX").await?;
        let mut exists = sel.iter().find_map(|l| exists_count(l)).unwrap_or(0);
        if exists > 0 {
            r.visible.push((Instant::now(), r.fetched as u32 + exists));
            r.by_select += 1;
        } else {
            let early = imap.idle().await?;
            exists = early.iter().find_map(|l| exists_count(l)).unwrap_or(0);
            let until = deadline.min(Instant::now() + IDLE_POLL);
            // Bounded by `until`.
            while exists == 0 {
                match imap.next_line_within(until).await? {
                    Some(line) => exists = exists_count(&line).unwrap_or(0),
                    None => break,
                }
            }
            if exists > 0 {
                r.visible.push((Instant::now(), r.fetched as u32 + exists));
                r.by_idle += 1;
            }
            imap.idle_done().await?;
            if exists == 0 {
                imap.command("CLOSE").await?;
                continue;
            }
        }
        let pre = imap
            .command(&format!(
                "UID FETCH {next_uid}:* (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID X-MICROSOFT-ORIGINAL-MESSAGE-ID)])"
            ))
            .await?;
        let mut uids: Vec<u32> = pre
            .iter()
            .filter_map(|l| fetch_uid(l))
            .filter(|u| *u >= next_uid)
            .collect();
        uids.sort_unstable();
        uids.dedup();
        if let Some(&last) = uids.last() {
            let set = uid_set(&uids);
            let before = imap.literal_bytes;
            imap.command(&format!("UID FETCH {set} (FLAGS BODY.PEEK[])"))
                .await?;
            r.body_bytes += imap.literal_bytes - before;
            imap.command(&format!("UID STORE {set} +FLAGS (\\Deleted)"))
                .await?;
            r.fetched += uids.len();
            next_uid = last + 1;
            r.cycles += 1;
        }
        imap.command("CLOSE").await?;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_sets() {
        assert_eq!(uid_set(&[1]), "1");
        assert_eq!(uid_set(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(uid_set(&[]), "");
    }

    #[test]
    fn detail_rows() {
        let l = Load {
            name: "(a) x".into(),
            msgs: 4,
            size: 4000.0,
            secs: 2.0,
            dev: DevStat {
                write_ios: 40,
                write_sectors: 800,
                flush_ios: 4,
            },
            journal: Some((8, 5)),
            relay_bytes: 80_000,
            syncs: Some((4, "fdatasync 4".into())),
            window: (0.0, 1.0),
        };
        let t = detail_table(std::slice::from_ref(&l));
        assert!(
            t.contains("| (a) x | 4 | 2.0 s | 102.4 KB | 25.60 | 10.00 | 10.2 KB | 1.00 | 8 = 2.00 / msg (5) | 20.0 KB | 1.000 (fdatasync 4) |"),
            "{t}"
        );
        let idle = Load { msgs: 0, ..l };
        let t = detail_table(&[idle]);
        assert!(
            t.contains("| 0 | 2.0 s | 409.6 KB in all | – | 40 in all |"),
            "{t}"
        );
    }
}
