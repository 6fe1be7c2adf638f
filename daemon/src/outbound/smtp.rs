//! The SMTP client of outbound delivery (spec/relay.md §8 OUT-3 step 2, OUT-4): one
//! transaction on a connected socket to an MX host's port 25 — greeting, EHLO,
//! STARTTLS (required unless the destination is exempt), EHLO again, MAIL / RCPT per
//! recipient / DATA (pipelined when the server offers PIPELINING, RFC 2920), the
//! dot-stuffed message, QUIT.
//!
//! Results: a remote reply to MAIL, RCPT or DATA is a result per recipient (the caller
//! maps 2xx/4xx/5xx); anything that keeps this host from taking part — connection, TLS
//! or I/O errors, timeouts, a greeting or EHLO refused, STARTTLS not offered — is a
//! [`HopError`] and the caller tries the next MX host (OUT-3).
//!
//! Replies are parsed with smtp-proto's client parser; waits follow the RFC 5321
//! §4.5.3.2 minimums (Postfix uses the same values), see [`Timeouts`].

use std::time::Duration;

use rustls_pki_types::ServerName;
use smtp_proto::response::parser::ResponseReceiver;
use smtp_proto::{EXT_8BIT_MIME, EXT_PIPELINING, EXT_SIZE, EXT_SMTP_UTF8, EXT_START_TLS};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};

use crate::policy::SmtpReply;

/// Per-stage waits of the client (RFC 5321 §4.5.3.2).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Initial 220 greeting: 5 minutes.
    pub greeting: Duration,
    /// EHLO, STARTTLS, MAIL and each RCPT reply: 5 minutes.
    pub command: Duration,
    /// The TLS handshake after `220` to STARTTLS.
    pub handshake: Duration,
    /// DATA initiation (`354`): 2 minutes.
    pub data_init: Duration,
    /// Each block of the message written: 3 minutes.
    pub data_block: Duration,
    /// The reply after the final dot: 10 minutes.
    pub data_done: Duration,
    /// QUIT (its reply is not needed).
    pub quit: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            greeting: Duration::from_secs(300),
            command: Duration::from_secs(300),
            handshake: Duration::from_secs(60),
            data_init: Duration::from_secs(120),
            data_block: Duration::from_secs(180),
            data_done: Duration::from_secs(600),
            quit: Duration::from_secs(5),
        }
    }
}

/// Why a host could not take part in the transaction (OUT-3: try the next MX).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HopError {
    #[error("{0}")]
    Connect(String),
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("connection lost during {stage}: {msg}")]
    Io { stage: &'static str, msg: String },
    #[error("timed out waiting for the {0} reply")]
    Timeout(&'static str),
    #[error("STARTTLS not offered")]
    NoStartTls,
    #[error("{stage} refused: {reply}")]
    Refused {
        stage: &'static str,
        reply: SmtpReply,
    },
    #[error("malformed {stage} reply: {msg}")]
    Protocol { stage: &'static str, msg: String },
}

/// How the session protects itself (OUT-4).
pub enum Security {
    /// STARTTLS required, with this connector and server name (SNI and, when the
    /// connector verifies, the certificate name).
    StartTls(tokio_rustls::TlsConnector, ServerName<'static>),
    /// No TLS (OUT-4: `nauta.cu`).
    Plain,
}

/// One message for one host.
pub struct Envelope<'a> {
    /// Bare sender address, empty for `<>`.
    pub sender: &'a str,
    /// Bare recipient addresses.
    pub recipients: &'a [String],
    /// The message, dot-stuffed and ending in CRLF ([`stuff`]), without the final dot.
    pub stuffed: &'a [u8],
    /// Size of the message before stuffing (the SIZE parameter, RFC 1870).
    pub size: usize,
}

/// One reply of the server: code and text (enhanced code first when given; lines of a
/// multi-line reply joined by a space).
#[derive(Debug, Clone)]
struct Reply {
    code: u16,
    text: String,
    /// The raw lines (for EHLO).
    raw: Vec<u8>,
}

impl Reply {
    fn positive(&self) -> bool {
        (200..300).contains(&self.code)
    }
    fn to_smtp(&self) -> SmtpReply {
        SmtpReply::new(self.code, self.text.clone())
    }
}

/// Longest reply line read (RFC 5321 §4.5.3.1.5 says 512; servers exceed it).
const MAX_LINE: u64 = 2048;
/// Most lines in one reply.
const MAX_LINES: usize = 64;
/// Message bytes written per timed write.
const BLOCK: usize = 64 * 1024;

/// RFC 5321 §4.5.2: double a leading dot on every line; lone LF becomes CRLF (bare
/// LF is not allowed in SMTP, §2.3.8); the result ends in CRLF. The final `.` is not
/// added.
pub fn stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 8);
    let mut at_line_start = true;
    let mut prev = 0u8;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        at_line_start = b == b'\n';
        prev = b;
    }
    if !out.ends_with(b"\r\n") {
        if out.ends_with(b"\r") {
            out.push(b'\n');
        } else {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// Run one transaction on `tcp` (connected to port 25 of the host). Returns the reply
/// per recipient, in the order of `env.recipients`: the final DATA reply for the
/// accepted ones, the refusal for the others.
pub async fn send<S>(
    tcp: S,
    helo: &str,
    security: Security,
    env: &Envelope<'_>,
    t: &Timeouts,
) -> Result<Vec<SmtpReply>, HopError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut plain = BufReader::new(tcp);
    let greeting = read_reply(&mut plain, "greeting", t.greeting).await?;
    if !greeting.positive() {
        // Postfix's smtp_skip_5xx_greeting: a host that refuses at once is skipped.
        return Err(HopError::Refused {
            stage: "greeting",
            reply: greeting.to_smtp(),
        });
    }
    let caps = ehlo(&mut plain, helo, t).await?;
    match security {
        Security::Plain => transaction(&mut plain, caps, env, t).await,
        Security::StartTls(connector, name) => {
            if caps & EXT_START_TLS == 0 {
                quit(&mut plain, t).await;
                return Err(HopError::NoStartTls);
            }
            command(&mut plain, b"STARTTLS\r\n", "STARTTLS", t).await?;
            let reply = read_reply(&mut plain, "STARTTLS", t.command).await?;
            if reply.code != 220 {
                quit(&mut plain, t).await;
                return Err(HopError::Refused {
                    stage: "STARTTLS",
                    reply: reply.to_smtp(),
                });
            }
            // RFC 3207 §4.2 (and the plaintext injection of CVE-2011-0411): nothing
            // the server sent before the handshake may be read as a TLS-time reply.
            if !plain.buffer().is_empty() {
                return Err(HopError::Protocol {
                    stage: "STARTTLS",
                    msg: "data after the 220 reply before the TLS handshake".into(),
                });
            }
            let tcp = plain.into_inner();
            let tls = match tokio::time::timeout(t.handshake, connector.connect(name, tcp)).await {
                Err(_) => return Err(HopError::Timeout("TLS handshake")),
                Ok(Err(e)) => return Err(HopError::Tls(e.to_string())),
                Ok(Ok(tls)) => tls,
            };
            let mut secure = BufReader::new(tls);
            // RFC 3207 §4.2: forget what was learnt before TLS.
            let caps = ehlo(&mut secure, helo, t).await?;
            transaction(&mut secure, caps, env, t).await
        }
    }
}

/// EHLO and its capabilities (smtp-proto's `EXT_*` bits).
async fn ehlo<S>(s: &mut S, helo: &str, t: &Timeouts) -> Result<u32, HopError>
where
    S: AsyncBufRead + AsyncWrite + Unpin,
{
    command(s, format!("EHLO {helo}\r\n").as_bytes(), "EHLO", t).await?;
    let reply = read_reply(s, "EHLO", t.command).await?;
    if reply.code != 250 {
        quit(s, t).await;
        return Err(HopError::Refused {
            stage: "EHLO",
            reply: reply.to_smtp(),
        });
    }
    Ok(capabilities(&reply.raw))
}

/// The extension bits of an EHLO reply.
fn capabilities(raw: &[u8]) -> u32 {
    if let Ok(parsed) = smtp_proto::EhloResponse::parse(&mut raw.iter()) {
        return parsed.capabilities;
    }
    // smtp-proto refuses some unusual extension lines; the keywords are enough here.
    let mut caps = 0;
    for line in raw.split(|&b| b == b'\n').skip(1) {
        let line = String::from_utf8_lossy(line);
        let keyword = line
            .get(4..)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or("")
            .to_ascii_uppercase();
        caps |= match keyword.as_str() {
            "STARTTLS" => EXT_START_TLS,
            "PIPELINING" => EXT_PIPELINING,
            "SIZE" => EXT_SIZE,
            "8BITMIME" => EXT_8BIT_MIME,
            "SMTPUTF8" => EXT_SMTP_UTF8,
            _ => 0,
        };
    }
    caps
}

/// MAIL, RCPT per recipient, DATA, the message, QUIT.
async fn transaction<S>(
    s: &mut S,
    caps: u32,
    env: &Envelope<'_>,
    t: &Timeouts,
) -> Result<Vec<SmtpReply>, HopError>
where
    S: AsyncBufRead + AsyncWrite + Unpin,
{
    let ascii = env.sender.is_ascii() && env.recipients.iter().all(|r| r.is_ascii());
    if !ascii && caps & EXT_SMTP_UTF8 == 0 {
        // RFC 6531 §3.4: the message cannot go to this server.
        quit(s, t).await;
        let reply = SmtpReply::new(
            554,
            "5.6.7 SMTPUTF8 is required, but was not offered by the host",
        );
        return Ok(vec![reply; env.recipients.len()]);
    }
    let mut mail = format!("MAIL FROM:<{}>", env.sender);
    if caps & EXT_SIZE != 0 {
        mail.push_str(&format!(" SIZE={}", env.size));
    }
    if caps & EXT_8BIT_MIME != 0 && !env.stuffed.is_ascii() {
        mail.push_str(" BODY=8BITMIME");
    }
    if !ascii {
        mail.push_str(" SMTPUTF8");
    }
    mail.push_str("\r\n");
    let rcpt = |r: &String| format!("RCPT TO:<{r}>\r\n");

    let mut results: Vec<Option<SmtpReply>> = vec![None; env.recipients.len()];
    let data_reply;
    if caps & EXT_PIPELINING != 0 {
        // RFC 2920 §3.1: MAIL, RCPTs and DATA in one group, DATA last.
        let mut batch = mail.into_bytes();
        for r in env.recipients {
            batch.extend_from_slice(rcpt(r).as_bytes());
        }
        batch.extend_from_slice(b"DATA\r\n");
        command(s, &batch, "MAIL", t).await?;
        let mail_reply = read_reply(s, "MAIL", t.command).await?;
        for slot in results.iter_mut() {
            let reply = read_reply(s, "RCPT", t.command).await?;
            if !mail_reply.positive() {
                *slot = Some(mail_reply.to_smtp());
            } else if !reply.positive() {
                *slot = Some(reply.to_smtp());
            }
        }
        data_reply = read_reply(s, "DATA", t.data_init).await?;
    } else {
        command(s, mail.as_bytes(), "MAIL", t).await?;
        let mail_reply = read_reply(s, "MAIL", t.command).await?;
        if !mail_reply.positive() {
            quit(s, t).await;
            return Ok(vec![mail_reply.to_smtp(); env.recipients.len()]);
        }
        for (r, slot) in env.recipients.iter().zip(results.iter_mut()) {
            command(s, rcpt(r).as_bytes(), "RCPT", t).await?;
            let reply = read_reply(s, "RCPT", t.command).await?;
            if !reply.positive() {
                *slot = Some(reply.to_smtp());
            }
        }
        if results.iter().all(Option::is_some) {
            quit(s, t).await;
            return Ok(results.into_iter().flatten().collect());
        }
        command(s, b"DATA\r\n", "DATA", t).await?;
        data_reply = read_reply(s, "DATA", t.data_init).await?;
    }
    let any_accepted = results.iter().any(Option::is_none);
    if data_reply.positive() || (300..400).contains(&data_reply.code) && data_reply.code != 354 {
        // Neither 354 nor a refusal: the server does not follow RFC 5321 §4.3.2.
        quit(s, t).await;
        return Err(HopError::Protocol {
            stage: "DATA",
            msg: format!("unexpected reply {}", data_reply.to_smtp()),
        });
    }
    if data_reply.code != 354 {
        // RFC 5321 §3.3: the DATA refusal applies to every accepted recipient.
        quit(s, t).await;
        return Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| data_reply.to_smtp()))
            .collect());
    }
    if !any_accepted {
        // RFC 2920 §3.1: a 354 without any accepted recipient; end the empty data.
        command(s, b".\r\n", "DATA", t).await?;
        let _ = read_reply(s, "DATA", t.data_done).await;
        quit(s, t).await;
        return Ok(results.into_iter().flatten().collect());
    }
    for block in env.stuffed.chunks(BLOCK) {
        match tokio::time::timeout(t.data_block, s.write_all(block)).await {
            Err(_) => return Err(HopError::Timeout("message data")),
            Ok(Err(e)) => {
                return Err(HopError::Io {
                    stage: "message data",
                    msg: e.to_string(),
                });
            }
            Ok(Ok(())) => {}
        }
    }
    command(s, b".\r\n", "end of data", t).await?;
    let done = read_reply(s, "end of data", t.data_done).await?;
    quit(s, t).await;
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| done.to_smtp()))
        .collect())
}

/// Write a command (or a pipelined group) and flush it.
async fn command<S: AsyncWrite + Unpin>(
    s: &mut S,
    bytes: &[u8],
    stage: &'static str,
    t: &Timeouts,
) -> Result<(), HopError> {
    let io = |e: std::io::Error| HopError::Io {
        stage,
        msg: e.to_string(),
    };
    // A write only blocks when the server stops reading; bound it like a command.
    let write = async {
        s.write_all(bytes).await.map_err(io)?;
        s.flush().await.map_err(io)
    };
    match tokio::time::timeout(t.command, write).await {
        Err(_) => Err(HopError::Timeout(stage)),
        Ok(r) => r,
    }
}

/// QUIT without waiting long for its reply; failures do not matter any more.
async fn quit<S>(s: &mut S, t: &Timeouts)
where
    S: AsyncBufRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(t.quit, async {
        if s.write_all(b"QUIT\r\n").await.is_ok() && s.flush().await.is_ok() {
            let _ = read_reply(s, "QUIT", t.quit).await;
        }
        let _ = s.shutdown().await;
    })
    .await;
}

/// Read one complete reply (all lines of a multi-line one) within `limit`.
async fn read_reply<R: AsyncBufRead + Unpin>(
    r: &mut R,
    stage: &'static str,
    limit: Duration,
) -> Result<Reply, HopError> {
    match tokio::time::timeout(limit, read_reply_lines(r, stage)).await {
        Err(_) => Err(HopError::Timeout(stage)),
        Ok(result) => result,
    }
}

async fn read_reply_lines<R: AsyncBufRead + Unpin>(
    r: &mut R,
    stage: &'static str,
) -> Result<Reply, HopError> {
    let protocol = |msg: &str| HopError::Protocol {
        stage,
        msg: msg.to_string(),
    };
    let mut raw = Vec::new();
    for _ in 0..MAX_LINES {
        let start = raw.len();
        let n = (&mut *r)
            .take(MAX_LINE)
            .read_until(b'\n', &mut raw)
            .await
            .map_err(|e| HopError::Io {
                stage,
                msg: e.to_string(),
            })?;
        if n == 0 {
            return Err(HopError::Io {
                stage,
                msg: "connection closed by the server".into(),
            });
        }
        if !raw.ends_with(b"\n") {
            return Err(protocol("line too long"));
        }
        let line = &raw[start..];
        if line.len() < 4 || !line[..3].iter().all(u8::is_ascii_digit) {
            return Err(protocol("not a reply line"));
        }
        // RFC 5321 §4.2.1: `NNN-` continues, `NNN ` (or a bare `NNN`) ends.
        if line[3] != b'-' {
            return parse_reply(raw, stage);
        }
    }
    Err(protocol("too many lines"))
}

fn parse_reply(raw: Vec<u8>, stage: &'static str) -> Result<Reply, HopError> {
    let parsed = ResponseReceiver::default()
        .parse(&mut raw.iter())
        .map_err(|e| HopError::Protocol {
            stage,
            msg: format!("{e:?}"),
        })?;
    let message = parsed
        .message
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let [class, subject, detail] = parsed.esc;
    let text = if class != 0 {
        if message.is_empty() {
            format!("{class}.{subject}.{detail}")
        } else {
            format!("{class}.{subject}.{detail} {message}")
        }
    } else {
        message
    };
    Ok(Reply {
        code: parsed.code,
        text,
        raw,
    })
}

/// The reply in `bytes` (tests).
#[cfg(test)]
async fn reply_of(bytes: &[u8]) -> Result<Reply, HopError> {
    let mut r = BufReader::new(bytes);
    read_reply(&mut r, "test", Duration::from_secs(1)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing() {
        assert_eq!(stuff(b"a\r\n.b\r\n..c\r\n"), b"a\r\n..b\r\n...c\r\n");
        assert_eq!(stuff(b".\r\n"), b"..\r\n");
        assert_eq!(stuff(b"no newline"), b"no newline\r\n");
        assert_eq!(stuff(b"bare\nlf\n.x"), b"bare\r\nlf\r\n..x\r\n");
        assert_eq!(stuff(b"mid.dot\r\n"), b"mid.dot\r\n");
        assert_eq!(stuff(b"cr\r"), b"cr\r\n");
        assert_eq!(stuff(b""), b"\r\n");
    }

    #[tokio::test]
    async fn replies() {
        let r = reply_of(b"250 2.1.0 Ok\r\n").await.unwrap();
        assert_eq!((r.code, r.text.as_str()), (250, "2.1.0 Ok"));
        let r = reply_of(b"550-5.1.1 <bob@x>: no\r\n550 5.1.1 such user\r\n")
            .await
            .unwrap();
        assert_eq!(r.code, 550);
        assert_eq!(r.text, "5.1.1 <bob@x>: no such user");
        let r = reply_of(b"421 Service not available\r\n").await.unwrap();
        assert_eq!((r.code, r.text.as_str()), (421, "Service not available"));
        let r = reply_of(b"354\r\n").await.unwrap();
        assert_eq!((r.code, r.text.as_str()), (354, ""));
        assert!(matches!(
            reply_of(b"hello\r\n").await,
            Err(HopError::Protocol { .. })
        ));
        assert!(matches!(
            reply_of(b"250-a\r\n").await,
            Err(HopError::Io { .. })
        ));
        let long = [b"250 ".to_vec(), vec![b'x'; 5000], b"\r\n".to_vec()].concat();
        assert!(matches!(
            reply_of(&long).await,
            Err(HopError::Protocol { .. })
        ));
    }

    #[tokio::test]
    async fn ehlo_capabilities() {
        let r = reply_of(
            b"250-mx.example Hello\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-STARTTLS\r\n\
              250-X-WEIRD thing\r\n250 8BITMIME\r\n",
        )
        .await
        .unwrap();
        let caps = capabilities(&r.raw);
        assert_ne!(caps & EXT_PIPELINING, 0);
        assert_ne!(caps & EXT_START_TLS, 0);
        assert_ne!(caps & EXT_SIZE, 0);
        assert_ne!(caps & EXT_8BIT_MIME, 0);
        assert_eq!(caps & EXT_SMTP_UTF8, 0);
        let r = reply_of(b"250 mx.example\r\n").await.unwrap();
        assert_eq!(capabilities(&r.raw), 0);
    }
}
