//! Logs (LOG-1..LOG-3, appliance.md LW-2): every log line goes to a bounded in-memory
//! ring (the last [`MAX_LINES`] lines, at most [`MAX_BYTES`], none older than
//! [`MAX_AGE`]), which the status page reads with [`recent`]; nothing is written to
//! disk. stderr gets the lines too only when asked: `log_stderr = true` in the config
//! (`relaybox dev` and the test harnesses set it) or a tool command.
//!
//! Logging starts before the config is read. Until [`set_stderr`] decides, lines are
//! held in the ring only; when the decision is "on" they are replayed to stderr in
//! order, so early lines are not lost, and when it is "off" stderr never sees a log
//! line. The choice lives in the writer ([`Logs`]), not in the subscriber, so it can be
//! made after the subscriber is installed.
//!
//! Formatting is tracing-subscriber's `fmt` (time, level, spans, message) without
//! colours, one entry per event. `RELAYBOX_LOG` is the filter (`info` by default).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// LOG-1: at most this many lines are kept.
pub const MAX_LINES: usize = 2000;
/// LOG-1: at most this many bytes of lines are kept (LW-2: `/var/log` is a small tmpfs;
/// this ring is the daemon's whole log).
pub const MAX_BYTES: usize = 1024 * 1024;
/// LOG-1: lines older than 3 days are dropped (upstream: journald volatile, 3 days).
pub const MAX_AGE_SECS: u64 = 3 * 86_400;
/// A longer line is cut (with a marker) so one line cannot push out all others.
pub const MAX_LINE: usize = 4096;

/// The environment variable holding the filter.
pub const FILTER_ENV: &str = "RELAYBOX_LOG";

/// One kept line.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Unix time (seconds) the line was written.
    pub at: u64,
    pub level: Level,
    /// The formatted line, without its line feed.
    pub line: String,
}

/// The bounded buffer itself; `now` is passed in so the bounds are testable.
#[derive(Debug)]
pub struct Ring {
    entries: VecDeque<Entry>,
    bytes: usize,
    max_lines: usize,
    max_bytes: usize,
    max_age: u64,
}

impl Ring {
    pub fn new(max_lines: usize, max_bytes: usize, max_age: u64) -> Ring {
        Ring {
            entries: VecDeque::new(),
            bytes: 0,
            max_lines,
            max_bytes,
            max_age,
        }
    }

    /// Add a line written at `now`, dropping the oldest lines beyond the bounds.
    pub fn push(&mut self, now: u64, level: Level, mut line: String) {
        if line.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push_str(" [cut]");
        }
        self.bytes += line.len();
        self.entries.push_back(Entry {
            at: now,
            level,
            line,
        });
        self.prune(now);
    }

    /// LOG-1: drop lines older than the age bound, then the oldest beyond count and size.
    fn prune(&mut self, now: u64) {
        let cutoff = now.saturating_sub(self.max_age);
        while let Some(front) = self.entries.front() {
            let too_old = front.at < cutoff;
            let too_many = self.entries.len() > self.max_lines || self.bytes > self.max_bytes;
            if !(too_old || too_many) {
                break;
            }
            if let Some(gone) = self.entries.pop_front() {
                self.bytes -= gone.line.len();
            }
        }
    }

    /// The last `n` lines at least as severe as `min` (oldest first), after dropping
    /// what has aged out by `now`.
    pub fn recent(&mut self, now: u64, n: usize, min: Level) -> Vec<String> {
        self.prune(now);
        // `Level` orders TRACE > DEBUG > INFO > WARN > ERROR ("more verbose is greater").
        let mut out: Vec<String> = self
            .entries
            .iter()
            .rev()
            .filter(|e| e.level <= min)
            .take(n)
            .map(|e| e.line.clone())
            .collect();
        out.reverse();
        out
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of the kept lines.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Whether log lines also go to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stderr {
    /// Not decided yet (the config is not read): lines are held in the ring only, and
    /// replayed if the decision is [`Stderr::On`].
    Pending,
    On,
    Off,
}

struct Inner {
    ring: Ring,
    stderr: Stderr,
    sink: Box<dyn Write + Send>,
}

/// The ring plus the stderr switch; the `MakeWriter` of the fmt layer.
pub struct Logs {
    inner: Mutex<Inner>,
}

impl Logs {
    /// Logs with `sink` standing for stderr.
    pub fn new(sink: Box<dyn Write + Send>, stderr: Stderr) -> Logs {
        Logs {
            inner: Mutex::new(Inner {
                ring: Ring::new(MAX_LINES, MAX_BYTES, MAX_AGE_SECS),
                stderr,
                sink,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a consistent ring; keep logging.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One formatted event. Never logs (the lock is held).
    fn record(&self, level: Level, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let line = text.trim_end_matches(['\n', '\r']).to_string();
        if line.is_empty() {
            return;
        }
        let mut inner = self.lock();
        if inner.stderr == Stderr::On {
            let _ = writeln!(inner.sink, "{line}");
            let _ = inner.sink.flush();
        }
        inner.ring.push(unix_now(), level, line);
    }

    /// Decide whether lines also go to stderr. Leaving [`Stderr::Pending`] for "on"
    /// first writes the held lines, oldest first.
    pub fn set_stderr(&self, on: bool) {
        let mut inner = self.lock();
        if on && inner.stderr == Stderr::Pending {
            let now = unix_now();
            let held = inner.ring.recent(now, usize::MAX, Level::TRACE);
            for line in held {
                let _ = writeln!(inner.sink, "{line}");
            }
            let _ = inner.sink.flush();
        }
        inner.stderr = if on { Stderr::On } else { Stderr::Off };
    }

    pub fn stderr(&self) -> Stderr {
        self.lock().stderr
    }

    /// The last `n` lines at least as severe as `min`, oldest first.
    pub fn recent_at_least(&self, min: Level, n: usize) -> Vec<String> {
        self.lock().ring.recent(unix_now(), n, min)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Collects one event's formatted bytes and hands them to [`Logs`] when dropped.
pub struct EventWriter {
    logs: Arc<Logs>,
    level: Level,
    buf: Vec<u8>,
}

impl Write for EventWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        // Bounded: a runaway event is cut here as the ring would cut it anyway.
        let room = (MAX_LINE * 2).saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        self.logs.record(self.level, &self.buf);
    }
}

/// The fmt layer's writer factory over shared [`Logs`].
#[derive(Clone)]
pub struct LogsWriter(pub Arc<Logs>);

impl<'a> MakeWriter<'a> for LogsWriter {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> EventWriter {
        EventWriter {
            logs: self.0.clone(),
            level: Level::INFO,
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> EventWriter {
        EventWriter {
            logs: self.0.clone(),
            level: *meta.level(),
            buf: Vec::new(),
        }
    }
}

/// The fmt layer writing into `logs`: plain text, no target, no colours.
pub fn layer<S>(logs: Arc<Logs>) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'s> tracing_subscriber::registry::LookupSpan<'s>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(LogsWriter(logs))
        .with_target(false)
        .with_ansi(false)
}

static GLOBAL: LazyLock<Arc<Logs>> =
    LazyLock::new(|| Arc::new(Logs::new(Box::new(std::io::stderr()), Stderr::Pending)));

/// Install the process's subscriber: filter from `RELAYBOX_LOG` (default `info`), lines
/// into the ring, and to stderr as `stderr` says. Call once, first thing in `main`.
pub fn init(stderr: Stderr) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env(FILTER_ENV)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match stderr {
        Stderr::Pending => {}
        Stderr::On => GLOBAL.set_stderr(true),
        Stderr::Off => GLOBAL.set_stderr(false),
    }
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layer(GLOBAL.clone()))
        .try_init();
}

/// `log_stderr` of the config (LOG-1): whether log lines also go to stderr from now on
/// (and, on the first call with `true`, the lines held since start).
pub fn set_stderr(on: bool) {
    GLOBAL.set_stderr(on);
}

/// The last `n` log lines, oldest first (for the status page).
pub fn recent(n: usize) -> Vec<String> {
    GLOBAL.recent_at_least(Level::TRACE, n)
}

/// The last `n` warnings and errors, oldest first (LW-2 "last errors").
pub fn recent_problems(n: usize) -> Vec<String> {
    GLOBAL.recent_at_least(Level::WARN, n)
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// A `Write` into a shared buffer, standing for stderr.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf-8")
        }
    }

    fn logs(stderr: Stderr) -> (Arc<Logs>, Captured) {
        let cap = Captured::default();
        (Arc::new(Logs::new(Box::new(cap.clone()), stderr)), cap)
    }

    /// Run `f` with a subscriber writing into `logs`.
    fn with_logs(logs: &Arc<Logs>, f: impl FnOnce()) {
        let sub = tracing_subscriber::registry().with(layer(logs.clone()));
        tracing::subscriber::with_default(sub, f);
    }

    #[test]
    fn ring_keeps_the_last_lines_by_count() {
        let mut r = Ring::new(3, 1_000_000, 100);
        for i in 0..5 {
            r.push(10, Level::INFO, format!("line {i}"));
        }
        assert_eq!(r.len(), 3);
        assert_eq!(
            r.recent(10, 10, Level::TRACE),
            ["line 2", "line 3", "line 4"]
        );
        assert_eq!(r.recent(10, 2, Level::TRACE), ["line 3", "line 4"]);
    }

    #[test]
    fn ring_keeps_the_last_lines_by_size() {
        let mut r = Ring::new(1000, 25, 100);
        for i in 0..5 {
            r.push(10, Level::INFO, format!("line-{i}-xxx")); // 10 bytes each
        }
        assert_eq!(r.bytes(), 20);
        assert_eq!(r.recent(10, 10, Level::TRACE), ["line-3-xxx", "line-4-xxx"]);
        // One huge line is cut, not allowed to take the whole ring.
        let mut r = Ring::new(1000, MAX_BYTES, 100);
        r.push(10, Level::INFO, "é".repeat(MAX_LINE));
        let kept = r.recent(10, 1, Level::TRACE);
        assert!(kept[0].len() <= MAX_LINE + 6, "{}", kept[0].len());
        assert!(kept[0].ends_with(" [cut]"));
    }

    #[test]
    fn ring_drops_lines_older_than_the_age_bound() {
        // LOG-1: ≤ 3 days.
        let day = 86_400;
        let mut r = Ring::new(MAX_LINES, MAX_BYTES, MAX_AGE_SECS);
        r.push(0, Level::INFO, "day 0".into());
        r.push(day, Level::INFO, "day 1".into());
        r.push(3 * day, Level::INFO, "day 3".into());
        assert_eq!(r.recent(3 * day, 10, Level::TRACE).len(), 3);
        // Reading prunes: at day 3 + 1 s the first line is older than 3 days.
        assert_eq!(r.recent(3 * day + 1, 10, Level::TRACE), ["day 1", "day 3"]);
        assert_eq!(r.len(), 2);
        // Writing prunes too.
        r.push(5 * day, Level::INFO, "day 5".into());
        assert_eq!(r.recent(5 * day, 10, Level::TRACE), ["day 3", "day 5"]);
        r.push(9 * day, Level::INFO, "day 9".into());
        assert_eq!(r.recent(9 * day, 10, Level::TRACE), ["day 9"]);
    }

    #[test]
    fn ring_filters_by_level() {
        let mut r = Ring::new(100, MAX_BYTES, 100);
        r.push(1, Level::INFO, "info".into());
        r.push(1, Level::WARN, "warn".into());
        r.push(1, Level::DEBUG, "debug".into());
        r.push(1, Level::ERROR, "error".into());
        assert_eq!(r.recent(1, 10, Level::WARN), ["warn", "error"]);
        assert_eq!(r.recent(1, 1, Level::WARN), ["error"]);
        assert_eq!(r.recent(1, 10, Level::TRACE).len(), 4);
    }

    #[test]
    fn lines_stay_in_memory_when_stderr_is_off() {
        let (logs, cap) = logs(Stderr::Pending);
        with_logs(&logs, || tracing::info!("early line"));
        logs.set_stderr(false);
        with_logs(&logs, || {
            tracing::info!("late line");
            tracing::warn!(n = 3, "a warning");
        });
        assert_eq!(cap.text(), "", "nothing on stderr");
        let kept = logs.recent_at_least(Level::TRACE, 10);
        assert_eq!(kept.len(), 3, "{kept:?}");
        assert!(kept[0].ends_with("INFO early line"), "{kept:?}");
        assert!(kept[1].ends_with("INFO late line"), "{kept:?}");
        assert!(kept[2].contains("WARN a warning n=3"), "{kept:?}");
        assert!(!kept.iter().any(|l| l.contains('\x1b')), "no colours");
        assert_eq!(logs.recent_at_least(Level::WARN, 10).len(), 1);
    }

    #[test]
    fn stderr_on_replays_held_lines_then_follows() {
        let (logs, cap) = logs(Stderr::Pending);
        with_logs(&logs, || {
            tracing::info!("first");
            tracing::error!("second");
        });
        assert_eq!(cap.text(), "", "held until the config decides");
        logs.set_stderr(true);
        with_logs(&logs, || tracing::info!("third"));
        let out = cap.text();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].ends_with("INFO first"), "{out}");
        assert!(lines[1].ends_with("ERROR second"), "{out}");
        assert!(lines[2].ends_with("INFO third"), "{out}");
        // The ring has them too, once each.
        assert_eq!(logs.recent_at_least(Level::TRACE, 10).len(), 3);
        // A second "on" replays nothing; "off" stops the output.
        logs.set_stderr(true);
        logs.set_stderr(false);
        with_logs(&logs, || tracing::info!("fourth"));
        assert_eq!(cap.text().lines().count(), 3);
        assert_eq!(logs.stderr(), Stderr::Off);
        assert_eq!(logs.recent_at_least(Level::TRACE, 10).len(), 4);
    }

    #[test]
    fn stderr_on_from_the_start() {
        let (logs, cap) = logs(Stderr::On);
        with_logs(&logs, || {
            let span = tracing::info_span!("conn", id = 7);
            let _e = span.enter();
            tracing::info!("inside");
        });
        let out = cap.text();
        assert_eq!(out.lines().count(), 1, "{out}");
        // Spans are kept in the line (the connection number, never the peer).
        assert!(out.contains("conn{id=7}: inside"), "{out}");
        assert!(out.ends_with('\n'));
    }
}
