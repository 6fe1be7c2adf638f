//! Raw clients for the hostile-input phase: TCP from a chosen loopback source address
//! (the attacker's one address, or another one for an unrelated client), implicit TLS
//! or STARTTLS, SMTP replies, IMAP responses of any size counted as they stream by
//! instead of being kept, HTTP/1.1 over TLS, and an open-loop latency probe. Every wait
//! has a deadline; a refusal or a hang comes back as an error value, never a panic.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsConnector;

use crate::report::percentile;

/// Longest reply line kept whole (longer IMAP lines are counted, not kept).
const MAX_LINE: usize = 64 * 1024;

/// A byte stream: plain TCP or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One connection to the relay.
pub struct Conn {
    s: BufReader<Box<dyn Io>>,
    peer: SocketAddr,
}

/// An SMTP reply: code and the text of its lines joined by ` / `.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t: String = self.text.chars().take(120).collect();
        write!(f, "{} {t}", self.code)
    }
}

/// An IMAP command's response: the tagged status and what came before it.
#[derive(Debug, Default)]
pub struct ImapResponse {
    /// The tagged line without the tag (`OK …`, `NO …`, `BAD …`).
    pub status: String,
    /// Bytes of untagged lines and literals.
    pub bytes: u64,
    /// The first bytes of the untagged data (lines and literals), up to the `keep` asked.
    pub kept: Vec<u8>,
}

impl ImapResponse {
    pub fn ok(&self) -> bool {
        self.status.starts_with("OK")
    }
}

/// TCP connection from `src` (port chosen by the kernel) to `dst`.
pub async fn tcp_from(src: IpAddr, dst: SocketAddr, deadline: Instant) -> Result<TcpStream> {
    let fut = async {
        let sock = TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(src, 0))?;
        let s = sock.connect(dst).await?;
        s.set_nodelay(true)?;
        Ok::<_, std::io::Error>(s)
    };
    timeout_at(deadline, fut)
        .await
        .map_err(|_| anyhow!("connect to {dst}: timed out"))?
        .with_context(|| format!("connect to {dst}"))
}

fn server_name(dst: SocketAddr) -> ServerName<'static> {
    ServerName::IpAddress(dst.ip().into())
}

impl Conn {
    pub async fn plain(src: IpAddr, dst: SocketAddr, deadline: Instant) -> Result<Conn> {
        let tcp = tcp_from(src, dst, deadline).await?;
        Ok(Conn {
            s: BufReader::new(Box::new(tcp)),
            peer: dst,
        })
    }

    /// Implicit TLS (465, 993, 443).
    pub async fn tls(
        tls: &TlsConnector,
        src: IpAddr,
        dst: SocketAddr,
        deadline: Instant,
    ) -> Result<Conn> {
        let tcp = tcp_from(src, dst, deadline).await?;
        let stream = timeout_at(deadline, tls.connect(server_name(dst), tcp))
            .await
            .map_err(|_| anyhow!("TLS handshake with {dst}: timed out"))?
            .with_context(|| format!("TLS handshake with {dst}"))?;
        Ok(Conn {
            s: BufReader::new(Box::new(stream)),
            peer: dst,
        })
    }

    /// Switch to TLS after STARTTLS was accepted (RFC 3207).
    pub async fn starttls(self, tls: &TlsConnector, deadline: Instant) -> Result<Conn> {
        if !self.s.buffer().is_empty() {
            bail!("data pipelined after the STARTTLS reply");
        }
        let peer = self.peer;
        let inner = self.s.into_inner();
        let stream = timeout_at(deadline, tls.connect(server_name(peer), inner))
            .await
            .map_err(|_| anyhow!("STARTTLS handshake: timed out"))?
            .context("STARTTLS handshake")?;
        Ok(Conn {
            s: BufReader::new(Box::new(stream)),
            peer,
        })
    }

    /// One line without its CRLF.
    pub async fn line(&mut self, deadline: Instant) -> Result<String> {
        let mut buf = Vec::with_capacity(128);
        let n = timeout_at(
            deadline,
            (&mut self.s)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut buf),
        )
        .await
        .map_err(|_| anyhow!("timed out waiting for a line"))??;
        if n == 0 {
            bail!("connection closed by the relay");
        }
        if buf.last() != Some(&b'\n') {
            bail!("line longer than {MAX_LINE} bytes or cut off");
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    pub async fn write(&mut self, data: &[u8], deadline: Instant) -> Result<()> {
        let w = self.s.get_mut();
        timeout_at(deadline, async {
            w.write_all(data).await?;
            w.flush().await
        })
        .await
        .map_err(|_| anyhow!("timed out writing to the relay"))?
        .context("write to the relay")
    }

    pub async fn smtp_reply(&mut self, deadline: Instant) -> Result<Reply> {
        let mut text = String::new();
        // A multi-line reply has a bounded number of lines.
        for _ in 0..100 {
            let line = self.line(deadline).await?;
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| anyhow!("malformed SMTP reply line {line:?}"))?;
            if !text.is_empty() {
                text.push_str(" / ");
            }
            text.push_str(line.get(4..).unwrap_or(""));
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply { code, text });
            }
        }
        bail!("SMTP reply with more than 100 lines")
    }

    pub async fn smtp_cmd(&mut self, line: &str, deadline: Instant) -> Result<Reply> {
        self.write(format!("{line}\r\n").as_bytes(), deadline)
            .await?;
        self.smtp_reply(deadline).await
    }

    /// A command whose reply must have `code`.
    pub async fn smtp_expect(&mut self, line: &str, code: u16, deadline: Instant) -> Result<()> {
        let r = self.smtp_cmd(line, deadline).await?;
        if r.code != code {
            let verb = line.split(' ').next().unwrap_or(line);
            bail!("{verb}: expected {code}, got {r}");
        }
        Ok(())
    }

    /// MAIL, RCPT, DATA and the dot-stuffed `data` (ending in CRLF) plus `.`; the final
    /// reply, or the refusal of MAIL/RCPT/DATA.
    pub async fn smtp_transaction(
        &mut self,
        from: &str,
        to: &str,
        data: &[u8],
        deadline: Instant,
    ) -> Result<Reply> {
        let r = self
            .smtp_cmd(&format!("MAIL FROM:<{from}>"), deadline)
            .await?;
        if r.code != 250 {
            return Ok(r);
        }
        let r = self.smtp_cmd(&format!("RCPT TO:<{to}>"), deadline).await?;
        if r.code != 250 {
            return Ok(r);
        }
        let r = self.smtp_cmd("DATA", deadline).await?;
        if r.code != 354 {
            return Ok(r);
        }
        self.write(data, deadline).await?;
        self.write(b".\r\n", deadline).await?;
        self.smtp_reply(deadline).await
    }

    /// Read an IMAP response up to the line tagged `tag`, counting untagged lines and
    /// literals of any size and keeping their first `keep` bytes.
    pub async fn imap_response(
        &mut self,
        tag: &str,
        deadline: Instant,
        keep: usize,
    ) -> Result<ImapResponse> {
        let mut out = ImapResponse::default();
        let prefix = format!("{tag} ");
        let mut head: Vec<u8> = Vec::new();
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let buf = timeout_at(deadline, self.s.fill_buf())
                .await
                .map_err(|_| {
                    anyhow!(
                        "timed out waiting for the response ({} bytes so far)",
                        out.bytes
                    )
                })??;
            if buf.is_empty() {
                bail!(
                    "connection closed by the relay ({} bytes so far)",
                    out.bytes
                );
            }
            let (n, complete) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            let chunk = &buf[..n];
            if head.len() < 256 {
                head.extend_from_slice(&chunk[..chunk.len().min(256 - head.len())]);
            }
            tail.extend_from_slice(&chunk[chunk.len().saturating_sub(64)..]);
            if tail.len() > 64 {
                tail.drain(..tail.len() - 64);
            }
            let is_tagged = head.starts_with(prefix.as_bytes());
            if !is_tagged && out.kept.len() < keep {
                let k = (keep - out.kept.len()).min(n);
                out.kept.extend_from_slice(&chunk[..k]);
            }
            if !is_tagged {
                out.bytes += n as u64;
            }
            self.s.consume(n);
            if !complete {
                continue;
            }
            if is_tagged {
                let line = String::from_utf8_lossy(&head[prefix.len()..]);
                out.status = line.trim_end().to_string();
                return Ok(out);
            }
            let t = String::from_utf8_lossy(&tail);
            if let Some(len) = literal_len(t.trim_end()) {
                self.skip_literal(len, deadline, keep, &mut out).await?;
            }
            head.clear();
            tail.clear();
        }
    }

    async fn skip_literal(
        &mut self,
        mut left: u64,
        deadline: Instant,
        keep: usize,
        out: &mut ImapResponse,
    ) -> Result<()> {
        while left > 0 {
            let buf = timeout_at(deadline, self.s.fill_buf())
                .await
                .map_err(|_| anyhow!("timed out reading a literal"))??;
            if buf.is_empty() {
                bail!("connection closed inside a literal");
            }
            let n = buf.len().min(left as usize);
            if out.kept.len() < keep {
                let k = (keep - out.kept.len()).min(n);
                out.kept.extend_from_slice(&buf[..k]);
            }
            self.s.consume(n);
            out.bytes += n as u64;
            left -= n as u64;
        }
        Ok(())
    }

    /// Send `tag cmd` and read its response.
    pub async fn imap_cmd(
        &mut self,
        tag: &str,
        cmd: &str,
        deadline: Instant,
        keep: usize,
    ) -> Result<ImapResponse> {
        self.write(format!("{tag} {cmd}\r\n").as_bytes(), deadline)
            .await?;
        self.imap_response(tag, deadline, keep).await
    }

    /// IMAPS: greeting and `LOGIN`; the tagged status (`OK …` or the refusal).
    pub async fn imaps_login(
        tls: &TlsConnector,
        src: IpAddr,
        dst: SocketAddr,
        user: &str,
        pass: &str,
        deadline: Instant,
    ) -> Result<Conn> {
        let mut c = Conn::tls(tls, src, dst, deadline).await?;
        let greeting = c.line(deadline).await.context("IMAP greeting")?;
        if !greeting.starts_with("* OK") {
            bail!("IMAP greeting {greeting:?}");
        }
        let r = c
            .imap_cmd(
                "l1",
                &format!("LOGIN {} {}", quote(user), quote(pass)),
                deadline,
                0,
            )
            .await?;
        if !r.ok() {
            bail!("LOGIN as {user}: {}", r.status);
        }
        Ok(c)
    }

    /// Submission over implicit TLS: greeting, EHLO, AUTH PLAIN.
    pub async fn smtps_login(
        tls: &TlsConnector,
        src: IpAddr,
        dst: SocketAddr,
        user: &str,
        pass: &str,
        deadline: Instant,
    ) -> Result<Conn> {
        let mut c = Conn::tls(tls, src, dst, deadline).await?;
        let g = c.smtp_reply(deadline).await?;
        if g.code != 220 {
            bail!("SMTP greeting {g}");
        }
        c.smtp_expect("EHLO [127.0.0.1]", 250, deadline).await?;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
        c.smtp_expect(&format!("AUTH PLAIN {token}"), 235, deadline)
            .await
            .with_context(|| format!("AUTH PLAIN as {user}"))?;
        Ok(c)
    }

    /// Port 25 as another relay: greeting, EHLO, STARTTLS, EHLO.
    pub async fn mx(
        tls: &TlsConnector,
        src: IpAddr,
        dst: SocketAddr,
        deadline: Instant,
    ) -> Result<Conn> {
        let mut c = Conn::plain(src, dst, deadline).await?;
        let g = c.smtp_reply(deadline).await?;
        if g.code != 220 {
            bail!("SMTP greeting {g}");
        }
        let helo = format!("EHLO [{src}]");
        c.smtp_expect(&helo, 250, deadline).await?;
        c.smtp_expect("STARTTLS", 220, deadline).await?;
        let mut c = c.starttls(tls, deadline).await?;
        c.smtp_expect(&helo, 250, deadline).await?;
        Ok(c)
    }
}

/// An IMAP quoted string (RFC 9051 §4.3).
pub fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `{n}` or `{n+}` at the end of a line.
fn literal_len(line: &str) -> Option<u64> {
    let inner = line.strip_suffix('}')?;
    let open = inner.rfind('{')?;
    inner[open + 1..].trim_end_matches('+').parse().ok()
}

/// An HTTP/1.1 response: status and the first bytes of the body.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// One HTTP/1.1 request over TLS (443) with a `Content-Length` body; the response body
/// is read up to 64 KiB.
pub async fn https_request(
    tls: &TlsConnector,
    src: IpAddr,
    dst: SocketAddr,
    head: &str,
    body: &[u8],
    deadline: Instant,
) -> Result<HttpResponse> {
    let mut c = Conn::tls(tls, src, dst, deadline).await?;
    https_on(&mut c, head, body, deadline).await
}

/// [`https_request`] on an open connection. `head` is the request line and headers
/// without the final empty line; Host, Content-Length and Connection are added.
pub async fn https_on(
    c: &mut Conn,
    head: &str,
    body: &[u8],
    deadline: Instant,
) -> Result<HttpResponse> {
    let req = format!(
        "{head}\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        c.peer.ip(),
        body.len()
    );
    c.write(req.as_bytes(), deadline).await?;
    // The body may be refused before it is all read: a write error then still leaves
    // the response to read.
    let write_err = c.write(body, deadline).await.err();
    let status_line = match c.line(deadline).await {
        Ok(l) => l,
        Err(e) => {
            return Err(match write_err {
                Some(w) => e.context(format!("after a failed body write ({w:#})")),
                None => e,
            });
        }
    };
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("malformed HTTP status line {status_line:?}"))?;
    let mut len = None;
    for _ in 0..200 {
        let h = c.line(deadline).await?;
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse::<usize>().ok();
        }
    }
    let mut buf = vec![0u8; len.unwrap_or(0).min(64 * 1024)];
    timeout_at(deadline, c.s.read_exact(&mut buf))
        .await
        .map_err(|_| anyhow!("timed out reading the HTTP body"))??;
    Ok(HttpResponse {
        status,
        body: String::from_utf8_lossy(&buf).into_owned(),
    })
}

/// What an open-loop probe does each time.
#[derive(Clone)]
pub enum ProbeKind {
    /// IMAPS connect + TLS + greeting + `LOGIN` of an existing account.
    ImapsLogin { user: String, pass: String },
    /// SMTPS connect + TLS + `220`.
    SmtpsGreeting,
}

/// An open-loop latency probe: a new attempt every `interval` whether or not the
/// earlier ones finished (so a frozen relay piles up slow samples instead of thinning
/// them out), each with its own deadline.
pub struct Probe {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<ProbeStats>,
}

/// One attempt: when it started and how it ended.
struct Sample {
    start: Instant,
    end: Instant,
    ok: bool,
}

/// The samples of a probe run.
pub struct ProbeStats {
    samples: Vec<Sample>,
    first_error: Option<String>,
    started: Instant,
    stopped: Instant,
    deadline: Duration,
    skipped: usize,
}

/// Summary figures of a probe run.
pub struct ProbeSummary {
    pub n: usize,
    pub failed: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// Longest span of the run without a successful completion.
    pub longest_gap: Duration,
    pub first_error: Option<String>,
    pub skipped: usize,
    pub deadline: Duration,
}

impl ProbeSummary {
    pub fn text(&self) -> String {
        let f = |d: Duration| {
            if d >= self.deadline {
                format!("≥ {:.0} s", self.deadline.as_secs_f64())
            } else {
                crate::report::ms(d)
            }
        };
        let mut s = format!(
            "p50 {} / p99 {} / max {} ({} probes",
            f(self.p50),
            f(self.p99),
            f(self.max),
            self.n
        );
        if self.failed > 0 {
            s += &format!(", {} failed or timed out", self.failed);
        }
        if self.skipped > 0 {
            s += &format!(", {} not started: too many in flight", self.skipped);
        }
        s += &format!(
            "; longest span without a successful probe {:.1} s)",
            self.longest_gap.as_secs_f64()
        );
        if let Some(e) = &self.first_error {
            let e: String = e.chars().take(120).collect();
            s += &format!("; first failure: {e}");
        }
        s
    }

    pub fn meets(&self, limit: Duration) -> bool {
        self.n > 0 && self.p99 <= limit
    }
}

impl Probe {
    /// Most attempts in flight at once (each holds a socket on the relay).
    const MAX_IN_FLIGHT: usize = 300;

    pub fn start(
        tls: TlsConnector,
        dst: SocketAddr,
        src: IpAddr,
        kind: ProbeKind,
        interval: Duration,
        deadline: Duration,
    ) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Sample, Option<String>)>();
            let in_flight = Arc::new(tokio::sync::Semaphore::new(Self::MAX_IN_FLIGHT));
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut skipped = 0;
            while !flag.load(Ordering::Relaxed) {
                tick.tick().await;
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    skipped += 1;
                    continue;
                };
                let (tls, kind, tx) = (tls.clone(), kind.clone(), tx.clone());
                tokio::spawn(async move {
                    let start = Instant::now();
                    let r = probe_once(&tls, src, dst, &kind, start + deadline).await;
                    let end = Instant::now();
                    let err = r.err().map(|e| format!("{e:#}"));
                    let _ = tx.send((
                        Sample {
                            start,
                            end,
                            ok: err.is_none(),
                        },
                        err,
                    ));
                    drop(permit);
                });
            }
            let stopped = Instant::now();
            drop(tx);
            // Wait for the attempts in flight (each bounded by its deadline).
            let mut samples = Vec::new();
            let mut first_error = None;
            while let Some((s, e)) = rx.recv().await {
                if let Some(e) = e {
                    first_error.get_or_insert(e);
                }
                samples.push(s);
            }
            ProbeStats {
                samples,
                first_error,
                started,
                stopped,
                deadline,
                skipped,
            }
        });
        Probe { stop, task }
    }

    pub async fn finish(self) -> Result<ProbeSummary> {
        self.stop.store(true, Ordering::Relaxed);
        let stats = self.task.await.context("probe task")?;
        Ok(stats.summary())
    }
}

impl ProbeStats {
    fn summary(&self) -> ProbeSummary {
        let mut lat: Vec<Duration> = self
            .samples
            .iter()
            .map(|s| {
                if s.ok {
                    s.end.saturating_duration_since(s.start)
                } else {
                    self.deadline
                }
            })
            .collect();
        lat.sort();
        let mut ok_ends: Vec<Instant> = self
            .samples
            .iter()
            .filter(|s| s.ok)
            .map(|s| s.end)
            .collect();
        ok_ends.sort();
        let mut gap = Duration::ZERO;
        let mut prev = self.started;
        for t in ok_ends.iter().copied().chain([self.stopped]) {
            if t > prev {
                gap = gap.max(t.saturating_duration_since(prev));
                prev = t;
            }
        }
        ProbeSummary {
            n: lat.len(),
            failed: self.samples.iter().filter(|s| !s.ok).count(),
            p50: percentile(&lat, 50.0).unwrap_or_default(),
            p99: percentile(&lat, 99.0).unwrap_or_default(),
            max: lat.last().copied().unwrap_or_default(),
            longest_gap: gap,
            first_error: self.first_error.clone(),
            skipped: self.skipped,
            deadline: self.deadline,
        }
    }
}

async fn probe_once(
    tls: &TlsConnector,
    src: IpAddr,
    dst: SocketAddr,
    kind: &ProbeKind,
    deadline: Instant,
) -> Result<()> {
    match kind {
        ProbeKind::ImapsLogin { user, pass } => {
            Conn::imaps_login(tls, src, dst, user, pass, deadline).await?;
        }
        ProbeKind::SmtpsGreeting => {
            let mut c = Conn::tls(tls, src, dst, deadline).await?;
            let g = c.smtp_reply(deadline).await?;
            if g.code != 220 {
                bail!("greeting {g}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals() {
        assert_eq!(literal_len("* 1 FETCH (BODY[1] {42}"), Some(42));
        assert_eq!(literal_len("x {7+}"), Some(7));
        assert_eq!(literal_len("* OK"), None);
    }

    #[test]
    fn gap_and_percentiles() {
        let t0 = Instant::now();
        let ms = |n| Duration::from_millis(n);
        let stats = ProbeStats {
            samples: vec![
                Sample {
                    start: t0,
                    end: t0 + ms(10),
                    ok: true,
                },
                Sample {
                    start: t0 + ms(100),
                    end: t0 + ms(5100),
                    ok: true,
                },
                Sample {
                    start: t0 + ms(200),
                    end: t0 + ms(9000),
                    ok: false,
                },
            ],
            first_error: None,
            started: t0,
            stopped: t0 + ms(6000),
            deadline: Duration::from_secs(30),
            skipped: 0,
        };
        let s = stats.summary();
        assert_eq!(s.n, 3);
        assert_eq!(s.failed, 1);
        assert_eq!(s.max, Duration::from_secs(30));
        assert_eq!(s.longest_gap, ms(5090));
        assert!(!s.meets(ms(100)));
    }
}
