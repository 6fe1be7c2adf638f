//! The relay under test: `target/release/relaybox serve` on loopback ports with a temp
//! data dir, optionally under `strace` counting sync calls or with a given open-file
//! limit; its /proc figures (VmRSS, a sampled RSS peak, write_bytes, utime+stime, open
//! files); and killing it on drop, so an error or a panic in the benchmark never leaves
//! it running.

use std::io::{BufRead, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// How long the relay may take to listen after being spawned.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a SIGTERM stop may take before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The sync system calls counted (the brief's strace filter).
pub const SYNC_CALLS: &[&str] = &["fsync", "fdatasync", "sync_file_range", "msync"];

/// Loopback listen addresses of one relay.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub smtp: u16,
    pub submission: u16,
    pub submissions: u16,
    pub imap: u16,
    pub imaps: u16,
    pub https: u16,
    pub http: u16,
}

impl Ports {
    /// Seven distinct free ports: bound at once, released just before the relay starts.
    fn pick() -> Result<Ports> {
        let ls = (0..7)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<Vec<_>>>()
            .context("bind free loopback ports")?;
        let p = ls
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Ports {
            smtp: p[0],
            submission: p[1],
            submissions: p[2],
            imap: p[3],
            imaps: p[4],
            https: p[5],
            http: p[6],
        })
    }

    pub fn submissions_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.submissions))
    }

    pub fn imaps_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.imaps))
    }

    pub fn smtp_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.smtp))
    }

    pub fn imap_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.imap))
    }

    pub fn https_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.https))
    }
}

/// How to start a relay beyond the defaults.
#[derive(Default)]
pub struct Options<'a> {
    /// Run it under strace counting sync calls.
    pub strace: Option<&'a Path>,
    /// Lines appended to the `[params]` section of chatmail.ini.
    pub extra_ini: &'a str,
    /// RLIMIT_NOFILE soft limit the relay starts with (the hard limit is inherited).
    pub nofile_soft: Option<u64>,
    /// Keep the relay's per-address connection limits at their defaults (the hostile
    /// phase measures them); otherwise they are raised so that the load phases, which
    /// open thousands of connections from 127.0.0.1, measure the relay and not the limit.
    pub default_connection_limits: bool,
    /// The relay's `data_dir` (e.g. on a loop-mounted file system, or a store kept from
    /// an earlier relay); by default a fresh `data` directory inside the relay's temp dir.
    /// Only the data directory goes there: the config, the relay's log and strace's
    /// output stay in the temp dir.
    pub data_dir: Option<&'a Path>,
}

/// A running relay; dropping it kills it.
pub struct Relay {
    /// The direct child: the relay, or strace running it.
    child: Child,
    /// The relay's pid (differs from the child's under strace).
    pub pid: u32,
    pub ports: Ports,
    pub strace_out: Option<PathBuf>,
    pub stderr_log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Relay {
    /// Start `bin serve` with a fresh data dir under `parent` (a real disk, so
    /// write_bytes is meaningful) and wait until both TLS ports accept connections.
    pub fn start(bin: &Path, parent: &Path, strace: Option<&Path>) -> Result<Relay> {
        Relay::start_with(
            bin,
            parent,
            &Options {
                strace,
                ..Options::default()
            },
        )
    }

    /// [`Relay::start`] with [`Options`].
    pub fn start_with(bin: &Path, parent: &Path, opts: &Options<'_>) -> Result<Relay> {
        let strace = opts.strace;
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("relaybox-bench-")
            .tempdir_in(parent)
            .context("create the temp dir")?;
        let ports = Ports::pick()?;
        let data_dir = match opts.data_dir {
            Some(d) => d.to_path_buf(),
            None => dir.path().join("data"),
        };
        let ini = dir.path().join("chatmail.ini");
        let text = config_text(&ports, &data_dir, !opts.default_connection_limits) + opts.extra_ini;
        std::fs::write(&ini, text).context("write chatmail.ini")?;
        let stderr_log = dir.path().join("relay-stderr.log");
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
        cmd.arg("serve")
            .arg("--config")
            .arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(soft) = opts.nofile_soft {
            use std::os::unix::process::CommandExt;
            // SAFETY: the closure runs in the forked child before exec and only calls
            // getrlimit/setrlimit, which are async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    let mut lim = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    lim.rlim_cur = (soft as libc::rlim_t).min(lim.rlim_max);
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        // The relay's log goes through a pipe and is written by this process, so its
        // lines do not count in the relay's write_bytes.
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        if let Some(err) = child.stderr.take() {
            let path = stderr_log.clone();
            std::thread::spawn(move || {
                let Ok(mut file) = std::fs::File::create(&path) else {
                    return;
                };
                let reader = std::io::BufReader::new(err);
                for line in reader.lines().map_while(|l| l.ok()) {
                    let _ = writeln!(file, "{line}");
                }
            });
        }
        let child_pid = child.id();
        let mut relay = Relay {
            child,
            pid: child_pid,
            ports,
            strace_out,
            stderr_log,
            _dir: dir,
        };
        relay.wait_ready()?;
        if strace.is_some() {
            relay.pid = traced_child(child_pid)?;
        }
        Ok(relay)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addrs = [self.ports.submissions_addr(), self.ports.imaps_addr()];
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "relay exited during start-up ({status}); its log:\n{}",
                    self.log_tail(40)
                );
            }
            let up = addrs.iter().all(|a| {
                std::net::TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok()
            });
            if up {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "relay not listening after {START_TIMEOUT:?}; its log:\n{}",
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last `n` lines the relay wrote to stderr.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The whole log the relay wrote to stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// Whether the relay is still running (a crash mid-run is reported as such).
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("relay exited ({status}); its log:\n{}", self.log_tail(40));
        }
        Ok(())
    }

    /// SIGTERM the relay, wait for it (and strace, which then writes its output),
    /// SIGKILL after a bound.
    pub fn stop(&mut self) {
        signal(self.pid, libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => {}
            }
            if Instant::now() >= deadline {
                signal(self.pid, libc::SIGKILL);
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The relay's chatmail.ini (for the command-line tools that talk to it).
    pub fn config_path(&self) -> PathBuf {
        self._dir.path().join("chatmail.ini")
    }

    pub fn rss_kib(&self) -> Result<u64> {
        status_kib(self.pid, "VmRSS")
    }

    /// Open file descriptors of the relay (entries of /proc/<pid>/fd).
    pub fn open_fds(&self) -> Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .with_context(|| format!("read /proc/{}/fd", self.pid))?
            .count())
    }

    /// The "Max open files" line of /proc/<pid>/limits: (soft, hard) as text.
    pub fn nofile_limits(&self) -> Result<(String, String)> {
        let limits = read_proc(self.pid, "limits")?;
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .ok_or_else(|| anyhow!("no Max open files in /proc/{}/limits", self.pid))?;
        let mut f = line["Max open files".len()..].split_whitespace();
        Ok((
            f.next().unwrap_or("?").to_string(),
            f.next().unwrap_or("?").to_string(),
        ))
    }

    /// `write_bytes` of /proc/<pid>/io: bytes the process caused to be sent to storage.
    pub fn write_bytes(&self) -> Result<u64> {
        let io = read_proc(self.pid, "io")?;
        io.lines()
            .find_map(|l| l.strip_prefix("write_bytes:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| anyhow!("no write_bytes in /proc/{}/io", self.pid))
    }

    /// utime + stime of all threads, in seconds (/proc/<pid>/stat fields 14 and 15).
    pub fn cpu_seconds(&self) -> Result<f64> {
        let stat = read_proc(self.pid, "stat")?;
        // Fields after the parenthesised command name start at field 3 (state).
        let after = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or_else(|| anyhow!("malformed /proc/{}/stat", self.pid))?;
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| -> Result<u64> {
            f.get(i)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| anyhow!("malformed /proc/{}/stat", self.pid))
        };
        let total = ticks(14 - 3)? + ticks(15 - 3)?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let hz = if hz > 0 { hz as f64 } else { 100.0 };
        Ok(total as f64 / hz)
    }
}

impl Drop for Relay {
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

/// A `kB` field of /proc/<pid>/status (VmRSS, VmHWM), in KiB.
fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = read_proc(pid, "status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no {field} in /proc/{pid}/status"))
}

/// The highest RSS of a process over a span of time: VmHWM reset at the start (`5` to
/// /proc/<pid>/clear_refs) and read at the end, and VmRSS sampled every
/// [`RssPeak::PERIOD`] by a thread of its own (independent of the async runtime, and
/// still a figure if the process dies before the end).
pub struct RssPeak {
    pid: u32,
    /// RSS when the span started, KiB.
    pub base_kib: u64,
    hwm_reset: bool,
    stop: Arc<AtomicBool>,
    sampler: Option<std::thread::JoinHandle<u64>>,
}

/// What [`RssPeak::finish`] measured.
#[derive(Debug, Clone, Copy)]
pub struct Peak {
    /// RSS at the start, KiB.
    pub base_kib: u64,
    /// The highest RSS seen (sampled or VmHWM), KiB.
    pub peak_kib: u64,
    /// Whether the process still existed at the end.
    pub alive: bool,
}

impl RssPeak {
    pub const PERIOD: Duration = Duration::from_millis(5);

    pub fn start(pid: u32) -> RssPeak {
        let base_kib = status_kib(pid, "VmRSS").unwrap_or(0);
        // Resets VmHWM to the current RSS (proc(5), clear_refs).
        let hwm_reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut max = 0;
            // Bounded by the stop flag and by the process's existence.
            while !flag.load(Ordering::Relaxed) {
                match status_kib(pid, "VmRSS") {
                    Ok(kib) => max = max.max(kib),
                    Err(_) => break,
                }
                std::thread::sleep(RssPeak::PERIOD);
            }
            max
        });
        RssPeak {
            pid,
            base_kib,
            hwm_reset,
            stop,
            sampler: Some(sampler),
        }
    }

    pub fn finish(mut self) -> Peak {
        let hwm = if self.hwm_reset {
            status_kib(self.pid, "VmHWM").ok()
        } else {
            None
        };
        let alive = status_kib(self.pid, "VmRSS").is_ok();
        self.stop.store(true, Ordering::Relaxed);
        let sampled = self.sampler.take().and_then(|h| h.join().ok()).unwrap_or(0);
        Peak {
            base_kib: self.base_kib,
            peak_kib: sampled.max(hwm.unwrap_or(0)).max(self.base_kib),
            alive,
        }
    }
}

impl Drop for RssPeak {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_proc(pid: u32, file: &str) -> Result<String> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .with_context(|| format!("read /proc/{pid}/{file}"))
}

/// The process strace started (its only child).
fn traced_child(strace_pid: u32) -> Result<u32> {
    let children = read_proc(strace_pid, &format!("task/{strace_pid}/children"))?;
    children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow!("strace ({strace_pid}) has no child process"))
}

/// chatmail.ini for the bench relay: IP-only mode on 127.0.0.1, every listener on a
/// loopback port, the send rate limit at its defaults (SUB-4).
fn config_text(p: &Ports, data_dir: &Path, raise_connection_limits: bool) -> String {
    let mut ini = String::from("[params]\n");
    ini += "mail_domain = 127.0.0.1\n";
    ini += &format!("data_dir = {}\n", data_dir.display());
    ini += &format!("submissions_listen = 127.0.0.1:{}\n", p.submissions);
    ini += &format!("imaps_listen = 127.0.0.1:{}\n", p.imaps);
    ini += &format!("submission_listen = 127.0.0.1:{}\n", p.submission);
    ini += &format!("imap_listen = 127.0.0.1:{}\n", p.imap);
    ini += &format!("smtp_listen = 127.0.0.1:{}\n", p.smtp);
    ini += &format!("https_listen = 127.0.0.1:{}\n", p.https);
    ini += &format!("http_listen = 127.0.0.1:{}\n", p.http);
    // ACC-5.6: the shared 2-core machine's load average must not refuse the bench's
    // account creations; this check is not on the measured path.
    ini += "max_load_1m = 10000\n";
    ini += "turn_listen =\n";
    // Issue 13: the bench's hundreds of connections all come from 127.0.0.1.
    if raise_connection_limits {
        ini += "max_connections_per_ip = 100000\n";
        ini += "max_connection_rate_per_ip = 100000\n";
        ini += "max_connection_burst_per_ip = 100000\n";
    }
    ini
}

/// Sync calls per name in the strace `-f -ttt` output whose start time lies in
/// `[from, to]` (seconds since the epoch). Lines are `PID SECS.USEC name(args) = r`,
/// or `... <unfinished ...>`; the `<... name resumed>` halves are not counted again.
pub fn count_sync_calls(out: &Path, from: f64, to: f64) -> Result<Vec<(String, u64)>> {
    let text = std::fs::read_to_string(out).with_context(|| format!("read {}", out.display()))?;
    let mut counts: Vec<(String, u64)> = SYNC_CALLS.iter().map(|c| (c.to_string(), 0)).collect();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(_pid), Some(ts), Some(call)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if call.starts_with("<...") {
            continue;
        }
        let Ok(ts) = ts.parse::<f64>() else { continue };
        if ts < from || ts > to {
            continue;
        }
        let name = call.split('(').next().unwrap_or("");
        if let Some(c) = counts.iter_mut().find(|(n, _)| n == name) {
            c.1 += 1;
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strace_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("s");
        std::fs::write(
            &out,
            "10 100.5 fsync(7) = 0\n11 101.0 fdatasync(8 <unfinished ...>\n\
             11 101.2 <... fdatasync resumed>) = 0\n10 200.0 fsync(7) = 0\n",
        )
        .expect("write");
        let c = count_sync_calls(&out, 100.0, 150.0).expect("count");
        assert_eq!(c[0], ("fsync".to_string(), 1));
        assert_eq!(c[1], ("fdatasync".to_string(), 1));
    }
}
