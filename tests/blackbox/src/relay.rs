//! The relay under test: the real `relaybox` binary started as a child process with a
//! temporary chatmail.ini on loopback ports, its stderr captured to a file, and
//! restart / `kill -9` / stop-on-drop.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use tokio::time::Instant;

/// How long the relay may take to accept connections after being spawned.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful stop (SIGTERM) may take before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts with fresh ports when a port was taken between picking and binding.
const START_ATTEMPTS: usize = 5;

/// Path of the binary: `RELAYBOX_BIN`, else `$CARGO_TARGET_DIR/debug/relaybox` when
/// that is set, else `<workspace>/target/debug/relaybox`.
pub fn binary() -> PathBuf {
    let path = match (
        std::env::var_os("RELAYBOX_BIN"),
        std::env::var_os("CARGO_TARGET_DIR"),
    ) {
        (Some(p), _) => PathBuf::from(p),
        (None, Some(t)) => PathBuf::from(t).join("debug/relaybox"),
        (None, None) => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/debug/relaybox")
            .components()
            .collect::<PathBuf>(),
    };
    if !path.is_file() {
        panic!(
            "relaybox binary not found at {}: run `cargo build -p relaybox` first \
             (or set RELAYBOX_BIN)",
            path.display()
        );
    }
    path
}

/// The loopback ports of one relay.
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
    /// Seven distinct free loopback ports (bound together so they are distinct, then
    /// released just before the relay binds them).
    fn pick() -> Ports {
        let listeners: Vec<TcpListener> = (0..7)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port"))
            .collect();
        let p: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().expect("local addr").port())
            .collect();
        Ports {
            smtp: p[0],
            submission: p[1],
            submissions: p[2],
            imap: p[3],
            imaps: p[4],
            https: p[5],
            http: p[6],
        }
    }
}

/// The outcome of a run that was expected to end by itself (config errors).
#[derive(Debug)]
pub struct Exited {
    /// `None` if the process was still running at the deadline (it was then killed).
    pub status: Option<ExitStatus>,
    pub stderr: String,
}

/// A running relay. Dropping it kills the process.
pub struct Relay {
    dir: TempDir,
    pub ports: Ports,
    extra: Vec<String>,
    /// Extra environment for the process (e.g. `RELAYBOX_LOG=debug`).
    env: Vec<(String, String)>,
    /// A command the binary is run under (e.g. `prlimit --nofile=600:600 --`).
    wrapper: Vec<String>,
    child: Option<Child>,
    /// Number of processes spawned so far (names the log files).
    runs: u32,
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Relay {
    /// Start a relay with the base config plus `extra_ini_lines` (under `[params]`), and
    /// wait until it accepts connections. Panics with the relay's stderr on failure.
    pub async fn start(extra_ini_lines: &[&str]) -> Relay {
        Self::start_with_env(extra_ini_lines, &[]).await
    }

    /// Like [`Relay::start`], with extra environment variables for the process.
    pub async fn start_with_env(extra_ini_lines: &[&str], env: &[(&str, &str)]) -> Relay {
        Self::start_wrapped(extra_ini_lines, env, &[]).await
    }

    /// Like [`Relay::start`], with the open-file limit set to `soft:hard` (`prlimit`).
    pub async fn start_with_nofile(extra_ini_lines: &[&str], soft: u64, hard: u64) -> Relay {
        let limit = format!("--nofile={soft}:{hard}");
        Self::start_wrapped(extra_ini_lines, &[], &["prlimit", &limit, "--"]).await
    }

    async fn start_wrapped(
        extra_ini_lines: &[&str],
        env: &[(&str, &str)],
        wrapper: &[&str],
    ) -> Relay {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("relaybox-blackbox-")
                .tempdir()
                .expect("create temp dir");
            let mut relay = Relay {
                dir,
                ports: Ports::pick(),
                extra: extra_ini_lines.iter().map(|s| s.to_string()).collect(),
                env: env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                wrapper: wrapper.iter().map(|s| s.to_string()).collect(),
                child: None,
                runs: 0,
            };
            match relay.spawn_and_wait().await {
                Ok(()) => return relay,
                Err(e) => {
                    // A port taken between picking and binding: try fresh ports.
                    if e.contains("cannot listen") || e.contains("Address already in use") {
                        last = e;
                        continue;
                    }
                    panic!("relay did not start: {e}");
                }
            }
        }
        panic!("relay did not start after {START_ATTEMPTS} attempts: {last}");
    }

    /// Run `relaybox serve` with the base config plus `extra_ini_lines` and wait (up to
    /// `within`) for it to exit by itself; for config errors.
    pub async fn run_expecting_exit(extra_ini_lines: &[&str], within: Duration) -> Exited {
        let dir = tempfile::Builder::new()
            .prefix("relaybox-blackbox-")
            .tempdir()
            .expect("create temp dir");
        let mut relay = Relay {
            dir,
            ports: Ports::pick(),
            extra: extra_ini_lines.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            wrapper: Vec::new(),
            child: None,
            runs: 0,
        };
        relay.spawn().expect("spawn relaybox");
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = relay.try_wait() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                relay.kill9();
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Exited {
            status,
            stderr: relay.stderr(),
        }
    }

    /// The chatmail.ini text for the current ports.
    pub fn config_text(&self) -> String {
        let p = &self.ports;
        let mut ini = String::from("[params]\n");
        ini += "mail_domain = 127.0.0.1\n";
        ini += &format!("data_dir = {}\n", self.data_dir().display());
        ini += &format!("smtp_listen = 127.0.0.1:{}\n", p.smtp);
        ini += &format!("submission_listen = 127.0.0.1:{}\n", p.submission);
        ini += &format!("submissions_listen = 127.0.0.1:{}\n", p.submissions);
        ini += &format!("imap_listen = 127.0.0.1:{}\n", p.imap);
        ini += &format!("imaps_listen = 127.0.0.1:{}\n", p.imaps);
        ini += &format!("https_listen = 127.0.0.1:{}\n", p.https);
        ini += &format!("http_listen = 127.0.0.1:{}\n", p.http);
        // Defaults a test may override with its own line for the key:
        // ACC-5.6: a busy test machine must not make account creation fail; logs go to
        // stderr (the tests read them); no TURN port shared between parallel relays; every
        // test client comes from loopback, so the per-address limits are out of the way
        // (tests/connections.rs sets its own).
        for (key, line) in [
            ("max_load_1m", "max_load_1m = 10000"),
            ("log_stderr", "log_stderr = true"),
            ("turn_listen", "turn_listen ="),
            ("max_connections_per_ip", "max_connections_per_ip = 100000"),
            (
                "max_connection_rate_per_ip",
                "max_connection_rate_per_ip = 100000",
            ),
            (
                "max_connection_burst_per_ip",
                "max_connection_burst_per_ip = 100000",
            ),
        ] {
            let overridden = self
                .extra
                .iter()
                .any(|l| l.split_once('=').is_some_and(|(k, _)| k.trim() == key));
            if !overridden {
                ini += line;
                ini += "\n";
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

    fn stderr_path(&self, run: u32) -> PathBuf {
        self.dir.path().join(format!("stderr-{run}.log"))
    }

    /// Wait (bounded by `within`) for a stderr line that `pred` accepts; the line, or
    /// `None` when the time ran out.
    pub async fn wait_stderr(
        &self,
        within: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self.stderr().lines().find(|l| pred(l)) {
                return Some(line.to_string());
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything the relay wrote to stderr, over all runs (restarts included).
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

    fn spawn(&mut self) -> std::io::Result<()> {
        std::fs::write(self.config_path(), self.config_text())?;
        self.runs += 1;
        let stderr = File::create(self.stderr_path(self.runs))?;
        let stdout = File::create(self.dir.path().join(format!("stdout-{}.log", self.runs)))?;
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(binary());
                cmd
            }
            None => Command::new(binary()),
        };
        cmd.arg("serve")
            .arg("--config")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        // Plain text logs (tracing-subscriber honours NO_COLOR), readable in reports.
        cmd.env("NO_COLOR", "1");
        if std::env::var_os("RELAYBOX_LOG").is_none() {
            cmd.env("RELAYBOX_LOG", "info");
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn()?);
        Ok(())
    }

    /// Spawn and wait until the listeners accept. The relay binds every listener before
    /// serving any, so the HTTP ports accepting means all are bound; SMTP and IMAP are
    /// not probed because a probe would hold one of their connection slots for a moment.
    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        self.spawn()
            .map_err(|e| format!("spawn {}: {e}", binary().display()))?;
        let deadline = Instant::now() + START_TIMEOUT;
        let probes = [self.ports.http, self.ports.https];
        let mut ready = 0;
        while ready < probes.len() {
            if let Some(status) = self.try_wait() {
                return Err(format!(
                    "relaybox exited with {status} during start-up; stderr:\n{}",
                    self.stderr()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "relaybox did not accept on 127.0.0.1:{} within {START_TIMEOUT:?}; stderr:\n{}",
                    probes[ready],
                    self.stderr()
                ));
            }
            match tokio::net::TcpStream::connect(addr(probes[ready])).await {
                Ok(_) => ready += 1,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        Ok(())
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child.try_wait().ok().flatten()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }

    /// `kill -9` the relay and reap it.
    pub fn kill9(&mut self) {
        kill9_child(&mut self.child);
    }

    /// Graceful stop: SIGTERM, wait (bounded), then SIGKILL.
    pub async fn stop(&mut self) -> Option<ExitStatus> {
        stop_child(&mut self.child).await
    }

    /// Stop the relay if running (gracefully) and start it again on the same ports
    /// and data directory. Panics with stderr if it does not come back.
    pub async fn restart(&mut self) {
        self.stop().await;
        // The old process is gone; its ports are free again (SO_REUSEADDR on both sides).
        let mut last = String::new();
        for _ in 0..3 {
            match self.spawn_and_wait().await {
                Ok(()) => return,
                Err(e) => {
                    last = e;
                    self.kill9();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
        panic!("relay did not restart: {last}");
    }

    pub fn smtp_addr(&self) -> SocketAddr {
        addr(self.ports.smtp)
    }
    pub fn submission_addr(&self) -> SocketAddr {
        addr(self.ports.submission)
    }
    pub fn submissions_addr(&self) -> SocketAddr {
        addr(self.ports.submissions)
    }
    pub fn imap_addr(&self) -> SocketAddr {
        addr(self.ports.imap)
    }
    pub fn imaps_addr(&self) -> SocketAddr {
        addr(self.ports.imaps)
    }
    pub fn https_addr(&self) -> SocketAddr {
        addr(self.ports.https)
    }
    pub fn http_addr(&self) -> SocketAddr {
        addr(self.ports.http)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let text = self.stderr();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!(
                "---- relaybox stderr (last {} lines) ----\n{}\n----",
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// `kill -9` a relay process and reap it (every harness that starts the binary).
pub fn kill9_child(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Graceful stop of a relay process: SIGTERM, wait (bounded), then SIGKILL.
pub async fn stop_child(child: &mut Option<Child>) -> Option<ExitStatus> {
    let mut child = child.take()?;
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The binary in setup mode: a chatmail.ini without `mail_domain` (its `data_dir` in a
/// temporary directory, plus the caller's lines), stderr to a file, killed on drop.
pub struct SetupMode {
    child: Option<Child>,
    dir: TempDir,
}

impl SetupMode {
    /// Spawn it with `ini_lines` after `[params]` and `data_dir` (`prefix` names the
    /// temporary directory); wait with [`SetupMode::wait_listening`].
    pub fn spawn(prefix: &str, ini_lines: &str) -> SetupMode {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("temp dir");
        let ini = format!(
            "[params]\ndata_dir = {}\n{ini_lines}",
            dir.path().join("data").display()
        );
        let config = dir.path().join("chatmail.ini");
        std::fs::write(&config, ini).expect("write chatmail.ini");
        let child = Command::new(binary())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(dir.path().join("stderr.log")).expect("log file"))
            .env("NO_COLOR", "1")
            .env("RELAYBOX_LOG", "info")
            .spawn()
            .expect("spawn relaybox");
        SetupMode {
            child: Some(child),
            dir,
        }
    }

    /// The temporary directory (config, stderr.log, data/).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Wait (bounded by `within`) until `addr` accepts and, when given, `file` exists;
    /// panics with the log when the process exits or the time runs out.
    pub async fn wait_listening(
        &mut self,
        addr: SocketAddr,
        file: Option<&Path>,
        within: Duration,
    ) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("relaybox exited with {status}:\n{}", self.stderr());
            }
            let up =
                tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                    .await
                    .is_ok_and(|r| r.is_ok());
            if up && file.is_none_or(Path::is_file) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "relaybox did not listen on {addr} within {within:?}:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SetupMode {
    fn drop(&mut self) {
        kill9_child(&mut self.child);
    }
}

/// Run the relaybox binary with `args` (a command-line tool: `backup`, `restore`, …) and
/// extra `env`, without any `RELAYBOX_BACKUP_PASSPHRASE` of the test's own environment;
/// its output, within `within` (killed after).
pub async fn run_tool(
    args: &[&str],
    env: &[(&str, &str)],
    within: Duration,
) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(binary());
    cmd.args(args)
        .env_remove("RELAYBOX_BACKUP_PASSPHRASE")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(within, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("relaybox {args:?} did not end within {within:?}"))
        .expect("run relaybox")
}

/// A tool's exit code and output, for assertion messages.
pub fn tool_text(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A path as a command-line argument.
pub fn arg(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}
