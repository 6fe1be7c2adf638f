//! Minimal SMTP-submission and IMAP clients over implicit TLS (the 465 and 993
//! equivalents), just enough for the benchmark: every read has a deadline, every reply
//! is checked, and nothing is retried silently.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Longest wait for any single reply line.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a TCP connect plus TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest line the clients accept (a reply line, not a literal).
const MAX_LINE: usize = 64 * 1024;

/// A TLS 1.3 client config (TLS-2) with the ring provider and no certificate check (the
/// relay under test has a self-signed certificate), from the black-box test harness.
pub fn tls_connector() -> Result<TlsConnector> {
    let config =
        relaybox_blackbox::conn::tls_client_config_versions(&[], &[&rustls::version::TLS13]);
    Ok(TlsConnector::from(config))
}

type Stream = BufReader<TlsStream<TcpStream>>;

async fn connect(tls: &TlsConnector, addr: SocketAddr) -> Result<Stream> {
    let fut = async {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::IpAddress(addr.ip().into());
        let tls = tls.connect(name, tcp).await?;
        Ok::<_, std::io::Error>(BufReader::new(tls))
    };
    timeout(CONNECT_TIMEOUT, fut)
        .await
        .map_err(|_| anyhow!("connect to {addr}: timed out"))?
        .with_context(|| format!("connect to {addr}"))
}

/// One line without its CRLF, read before `deadline`.
async fn read_line_until(s: &mut Stream, deadline: Instant) -> Result<String> {
    let mut buf = Vec::with_capacity(128);
    let n = tokio::time::timeout_at(
        deadline,
        (&mut *s).take(MAX_LINE as u64).read_until(b'\n', &mut buf),
    )
    .await
    .map_err(|_| anyhow!("timed out waiting for a reply line"))??;
    if n == 0 {
        bail!("connection closed by the relay");
    }
    if buf.last() != Some(&b'\n') {
        bail!("reply line longer than {MAX_LINE} bytes or cut off");
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

async fn read_line(s: &mut Stream) -> Result<String> {
    read_line_until(s, Instant::now() + READ_TIMEOUT).await
}

async fn write_all(s: &mut Stream, data: &[u8]) -> Result<()> {
    let w = s.get_mut();
    timeout(READ_TIMEOUT, async {
        w.write_all(data).await?;
        w.flush().await
    })
    .await
    .map_err(|_| anyhow!("timed out writing to the relay"))??;
    Ok(())
}

/// An SMTP reply: code and the text of its lines.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// The outcome of one transaction.
pub struct Sent {
    pub reply: Reply,
    /// When the end-of-data `.` was written.
    pub data_end: Instant,
    /// When the final reply was read.
    pub at: Instant,
}

/// An authenticated submission session (implicit TLS, the 465 equivalent).
pub struct Smtp {
    s: Stream,
    pub login: String,
}

impl Smtp {
    /// Connect, read the greeting, EHLO, and `AUTH PLAIN` (ACC-1, ACC-6: the first
    /// AUTH creates the account).
    pub async fn login(
        tls: &TlsConnector,
        addr: SocketAddr,
        user: &str,
        pass: &str,
    ) -> Result<Smtp> {
        let mut smtp = Smtp {
            s: connect(tls, addr).await?,
            login: user.to_string(),
        };
        smtp.expect(220).await.context("SMTP greeting")?;
        smtp.command("EHLO [127.0.0.1]", 250).await?;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
        smtp.command(&format!("AUTH PLAIN {token}"), 235)
            .await
            .with_context(|| format!("AUTH PLAIN as {user}"))?;
        Ok(smtp)
    }

    async fn reply(&mut self) -> Result<Reply> {
        let mut text = String::new();
        // A multi-line reply has a bounded number of lines.
        for _ in 0..100 {
            let line = read_line(&mut self.s).await?;
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

    async fn expect(&mut self, code: u16) -> Result<Reply> {
        let r = self.reply().await?;
        if r.code != code {
            bail!("expected {code}, got {r}");
        }
        Ok(r)
    }

    async fn command(&mut self, line: &str, code: u16) -> Result<Reply> {
        write_all(&mut self.s, format!("{line}\r\n").as_bytes()).await?;
        let verb = line.split(' ').next().unwrap_or(line);
        self.expect(code).await.with_context(|| verb.to_string())
    }

    /// One transaction to one recipient; `data` is the dot-stuffed message ending in
    /// CRLF. Returns the final reply, the instant the end of DATA was written and the
    /// instant the reply was read. A refusal at MAIL or RCPT is returned as that reply
    /// (after RSET), not as an error.
    pub async fn send(&mut self, to: &str, data: &[u8]) -> Result<Sent> {
        let from = self.login.clone();
        write_all(&mut self.s, format!("MAIL FROM:<{from}>\r\n").as_bytes()).await?;
        let r = self.reply().await?;
        if r.code != 250 {
            self.command("RSET", 250).await?;
            let now = Instant::now();
            return Ok(Sent {
                reply: r,
                data_end: now,
                at: now,
            });
        }
        write_all(&mut self.s, format!("RCPT TO:<{to}>\r\n").as_bytes()).await?;
        let r = self.reply().await?;
        if r.code != 250 {
            self.command("RSET", 250).await?;
            let now = Instant::now();
            return Ok(Sent {
                reply: r,
                data_end: now,
                at: now,
            });
        }
        self.command("DATA", 354).await?;
        let mut body = Vec::with_capacity(data.len() + 5);
        body.extend_from_slice(data);
        body.extend_from_slice(b".\r\n");
        write_all(&mut self.s, &body).await?;
        let data_end = Instant::now();
        let reply = self.reply().await?;
        Ok(Sent {
            reply,
            data_end,
            at: Instant::now(),
        })
    }

    /// `QUIT`, ignoring errors (the session is over either way).
    pub async fn quit(mut self) {
        if write_all(&mut self.s, b"QUIT\r\n").await.is_ok() {
            let _ = timeout(Duration::from_secs(2), self.reply()).await;
        }
    }
}

/// Dot-stuffing (RFC 5321 §4.5.2) of a CRLF message; the result ends in CRLF.
pub fn dot_stuff(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 16);
    let mut at_line_start = true;
    for &b in msg {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A logged-in IMAP session (implicit TLS, the 993 equivalent).
pub struct Imap {
    s: Stream,
    tag: u32,
    /// Tag of the IDLE command in progress, if any.
    idle_tag: Option<String>,
    /// Bytes of literals read so far (message bodies and headers fetched).
    pub literal_bytes: u64,
}

/// What [`Imap::command_streamed`] read.
#[derive(Debug, Default, Clone, Copy)]
pub struct Streamed {
    pub untagged: u64,
    pub literals: u64,
    pub literal_bytes: u64,
}

/// The untagged lines of a completed command.
pub type Untagged = Vec<String>;

impl Imap {
    /// Connect, read the greeting and `LOGIN` (ACC-1; the first login creates the
    /// account, ACC-5).
    pub async fn login(
        tls: &TlsConnector,
        addr: SocketAddr,
        user: &str,
        pass: &str,
    ) -> Result<Imap> {
        let mut imap = Imap {
            s: connect(tls, addr).await?,
            tag: 0,
            idle_tag: None,
            literal_bytes: 0,
        };
        let greeting = read_line(&mut imap.s).await.context("IMAP greeting")?;
        if !greeting.starts_with("* OK") {
            bail!("IMAP greeting {greeting:?}");
        }
        imap.command(&format!("LOGIN {} {}", quote(user), quote(pass)))
            .await
            .with_context(|| format!("LOGIN as {user}"))?;
        Ok(imap)
    }

    fn next_tag(&mut self) -> String {
        self.tag += 1;
        format!("b{}", self.tag)
    }

    /// Read lines until the tagged completion; literals (`{n}` at the end of a line)
    /// are read and dropped.
    async fn complete(&mut self, tag: &str) -> Result<Untagged> {
        let mut untagged = Vec::new();
        self.complete_until(
            tag,
            Instant::now() + READ_TIMEOUT,
            100_000,
            Some(&mut untagged),
        )
        .await?;
        Ok(untagged)
    }

    /// Read until the tagged completion of `tag` before `deadline`, at most `max_lines`
    /// untagged lines; keep them in `keep` if given. Literals are read and dropped.
    async fn complete_until(
        &mut self,
        tag: &str,
        deadline: Instant,
        max_lines: u64,
        mut keep: Option<&mut Untagged>,
    ) -> Result<Streamed> {
        let mut got = Streamed::default();
        let mut skip = Vec::new();
        while got.untagged < max_lines {
            let line = read_line_until(&mut self.s, deadline).await?;
            if let Some(rest) = line.strip_prefix(tag).and_then(|r| r.strip_prefix(' ')) {
                if rest.starts_with("OK") {
                    return Ok(got);
                }
                bail!("{tag} {rest}");
            }
            if let Some(n) = literal_len(&line) {
                skip.resize(n.min(64 << 20), 0);
                tokio::time::timeout_at(deadline, self.s.read_exact(&mut skip))
                    .await
                    .map_err(|_| anyhow!("timed out reading a literal"))??;
                got.literals += 1;
                got.literal_bytes += skip.len() as u64;
                self.literal_bytes += skip.len() as u64;
            }
            got.untagged += 1;
            if let Some(k) = keep.as_deref_mut() {
                k.push(line);
            }
        }
        bail!("no tagged completion for {tag} after {max_lines} lines")
    }

    /// Send one command whose answer may be huge (`FETCH 1:*` of a big mailbox) and
    /// count its untagged lines and literals instead of keeping them; wait for the
    /// tagged `OK` until `deadline`.
    pub async fn command_streamed(
        &mut self,
        cmd: &str,
        deadline: Instant,
        max_lines: u64,
    ) -> Result<Streamed> {
        let tag = self.next_tag();
        write_all(&mut self.s, format!("{tag} {cmd}\r\n").as_bytes()).await?;
        let verb = cmd.split(' ').next().unwrap_or(cmd).to_string();
        self.complete_until(&tag, deadline, max_lines, None)
            .await
            .context(verb)
    }

    /// Send one command and wait for its tagged `OK`.
    pub async fn command(&mut self, cmd: &str) -> Result<Untagged> {
        let tag = self.next_tag();
        write_all(&mut self.s, format!("{tag} {cmd}\r\n").as_bytes()).await?;
        let verb = cmd.split(' ').next().unwrap_or(cmd).to_string();
        self.complete(&tag).await.context(verb)
    }

    /// `SELECT INBOX`; returns the message count from `* n EXISTS`.
    pub async fn select_inbox(&mut self) -> Result<u32> {
        let lines = self.command("SELECT INBOX").await?;
        lines
            .iter()
            .find_map(|l| exists_count(l))
            .ok_or_else(|| anyhow!("SELECT INBOX without * n EXISTS"))
    }

    /// `STATUS INBOX (MESSAGES)`; returns the count.
    pub async fn inbox_messages(&mut self) -> Result<u32> {
        let lines = self.command("STATUS INBOX (MESSAGES)").await?;
        for l in &lines {
            if let Some(pos) = l.find("MESSAGES ") {
                let digits: String = l[pos + 9..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit())
                    .collect();
                if let Ok(n) = digits.parse() {
                    return Ok(n);
                }
            }
        }
        bail!("STATUS without MESSAGES: {lines:?}")
    }

    /// Start IDLE (RFC 2177) and wait for the continuation request. Untagged lines
    /// before it (e.g. `* n EXISTS`) are returned.
    pub async fn idle(&mut self) -> Result<Untagged> {
        let tag = self.next_tag();
        write_all(&mut self.s, format!("{tag} IDLE\r\n").as_bytes()).await?;
        let deadline = Instant::now() + READ_TIMEOUT;
        let mut before = Vec::new();
        for _ in 0..1000 {
            let line = read_line_until(&mut self.s, deadline).await?;
            if line.starts_with('+') {
                self.idle_tag = Some(tag);
                return Ok(before);
            }
            if line.starts_with(&tag) {
                bail!("IDLE refused: {line}");
            }
            before.push(line);
        }
        bail!("no continuation after IDLE")
    }

    /// End IDLE with `DONE` (RFC 2177) and wait for its tagged `OK`; returns the
    /// untagged lines that came before it.
    pub async fn idle_done(&mut self) -> Result<Untagged> {
        let tag = self
            .idle_tag
            .take()
            .ok_or_else(|| anyhow!("DONE without IDLE"))?;
        write_all(&mut self.s, b"DONE\r\n").await?;
        self.complete(&tag).await.context("IDLE")
    }

    /// The next line the server sends before `deadline`, or `None` when none came by
    /// then (a line cut by the deadline is lost: use it only while idling, where the
    /// server sends whole short lines).
    pub async fn next_line_within(&mut self, deadline: Instant) -> Result<Option<String>> {
        match read_line_until(&mut self.s, deadline).await {
            Ok(l) => Ok(Some(l)),
            Err(_) if Instant::now() >= deadline => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The next line the server sends, read before `deadline`.
    pub async fn next_line(&mut self, deadline: Instant) -> Result<String> {
        read_line_until(&mut self.s, deadline).await
    }
}

/// An IMAP quoted string (RFC 9051 §4.3).
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `{n}` or `{n+}` at the end of a line.
fn literal_len(line: &str) -> Option<usize> {
    let inner = line.strip_suffix('}')?;
    let open = inner.rfind('{')?;
    inner[open + 1..].trim_end_matches('+').parse().ok()
}

/// The `UID n` of an untagged `* m FETCH (… UID n …)` line.
pub fn fetch_uid(line: &str) -> Option<u32> {
    let rest = line.strip_prefix("* ")?;
    let (_, rest) = rest.split_once(' ')?;
    let items = rest.strip_prefix("FETCH (")?;
    let mut words = items.split([' ', '(', ')']);
    // Bounded by the line's words.
    while let Some(w) = words.next() {
        if w.eq_ignore_ascii_case("UID") {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// `* n EXISTS` → n.
pub fn exists_count(line: &str) -> Option<u32> {
    let rest = line.strip_prefix("* ")?;
    let (n, word) = rest.split_once(' ')?;
    if word.eq_ignore_ascii_case("EXISTS") {
        n.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing() {
        assert_eq!(dot_stuff(b"a\r\n.b\r\n"), b"a\r\n..b\r\n");
        assert_eq!(dot_stuff(b".x"), b"..x\r\n");
    }

    #[test]
    fn exists() {
        assert_eq!(exists_count("* 12 EXISTS"), Some(12));
        assert_eq!(exists_count("* 12 RECENT"), None);
        assert_eq!(literal_len("* 1 FETCH (BODY[] {42}"), Some(42));
        assert_eq!(
            fetch_uid("* 3 FETCH (UID 17 RFC822.SIZE 3800 BODY[HEADER.FIELDS (MESSAGE-ID)] {54}"),
            Some(17)
        );
        assert_eq!(fetch_uid("* 3 FETCH (FLAGS (\\Seen) UID 9)"), Some(9));
        assert_eq!(fetch_uid("* 3 EXISTS"), None);
    }
}
