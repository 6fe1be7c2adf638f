//! The byte level of an SMTP session: a buffered connection with a bounded command-line
//! reader, the DATA reader (RFC 5321 §4.5.2 dot-unstuffing, bounded in memory), reply
//! batching for PIPELINING (RFC 2920 §3.2: replies are flushed only when the client has
//! nothing more buffered), and the STARTTLS upgrade that drops pipelined plaintext.
//!
//! Deadlines (issue 13, `crate::deadline`): a command line must arrive whole within the
//! idle time (`smtpd_timeout`), DATA within it plus its minimum rate's credit
//! (`smtpd_min_data_rate`), and every read also stops at the session deadline, if any.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::deadline::Budget;
use crate::net::Conn;

/// RFC 5321 §4.5.3.1.4 allows 512; we take up to this many bytes including CRLF.
pub const MAX_COMMAND_LINE: usize = 4096;
/// How many bytes DATA handles at once when a line has no end in sight.
pub(crate) const DATA_SEGMENT: usize = 64 * 1024;
/// Bytes asked from the socket per read.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

/// Why reading stopped.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection closed by client")]
    Closed,
    #[error("deadline exceeded")]
    Timeout,
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// One command line as read.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// The line with its terminator normalised to CRLF (a bare LF is tolerated as the
    /// end of a command line, consistently for every command).
    Ok(Vec<u8>),
    /// Longer than [`MAX_COMMAND_LINE`]; the rest up to the next LF was discarded.
    TooLong,
}

/// How DATA ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Data {
    /// The unstuffed message, lines ending in CRLF.
    Message(Vec<u8>),
    /// The message was larger than the limit; it was read to its end and discarded.
    TooBig,
    /// The relay's memory budget for messages in transit had no room for it in time;
    /// it was read to its end and discarded.
    NoMemory,
}

/// Reservations grow in steps of this many bytes.
const RESERVE_STEP: u64 = 256 * 1024;

/// A connection with its read buffer and pending replies. Generic over the stream so
/// that the framing runs over an in-memory stream too (`crate::fuzzing`); sessions use
/// the default, [`Conn`].
pub struct Wire<S = Conn> {
    conn: S,
    rbuf: Vec<u8>,
    /// Start of unread bytes in `rbuf`.
    pos: usize,
    out: Vec<u8>,
    idle: Duration,
    /// DATA's minimum rate in bytes per second (`smtpd_min_data_rate`).
    min_data_rate: u32,
    /// The deadline of the line or DATA being read.
    request: Budget,
    /// The whole session ends then (unauthenticated sessions).
    session_deadline: Option<Instant>,
}

impl Wire<Conn> {
    pub fn is_tls(&self) -> bool {
        self.conn.is_tls()
    }

    /// STARTTLS (RFC 3207 §4.2): send what is queued, drop whatever plaintext the client
    /// pipelined after the command, and run the handshake (bounded in time).
    pub async fn start_tls(
        mut self,
        config: Arc<rustls::ServerConfig>,
        handshake: Duration,
    ) -> Result<Wire, WireError> {
        self.flush().await?;
        self.rbuf.clear();
        self.pos = 0;
        let conn = match tokio::time::timeout(handshake, self.conn.start_tls(config)).await {
            Ok(r) => r?,
            Err(_) => return Err(WireError::Timeout),
        };
        let mut wire = Wire::new(conn, self.idle).with_min_data_rate(self.min_data_rate);
        wire.set_session_deadline(self.session_deadline);
        Ok(wire)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    pub fn new(conn: S, idle: Duration) -> Self {
        Wire {
            conn,
            rbuf: Vec::with_capacity(READ_CHUNK),
            pos: 0,
            out: Vec::with_capacity(1024),
            idle,
            min_data_rate: 0,
            request: Budget::fixed(Instant::now(), idle),
            session_deadline: None,
        }
    }

    /// DATA must arrive at `bytes_per_second` at least (0: within the idle time).
    pub fn with_min_data_rate(mut self, bytes_per_second: u32) -> Self {
        self.min_data_rate = bytes_per_second;
        self
    }

    /// Every read ends at `deadline` (`None`: no session deadline).
    pub fn set_session_deadline(&mut self, deadline: Option<Instant>) {
        self.session_deadline = deadline;
    }

    /// The earlier of the request's deadline and the session's.
    fn deadline(&self) -> Instant {
        let request = self.request.deadline();
        self.session_deadline.map_or(request, |s| s.min(request))
    }

    /// Queue a reply line (without CRLF).
    pub fn queue(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// Send every queued reply now.
    pub async fn flush(&mut self) -> Result<(), WireError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let write = async {
            self.conn.write_all(&out).await?;
            self.conn.flush().await
        };
        let until = Instant::now() + self.idle;
        let until = self.session_deadline.map_or(until, |s| s.min(until));
        match tokio::time::timeout_at(until, write).await {
            Ok(r) => r.map_err(WireError::from),
            Err(_) => Err(WireError::Timeout),
        }
    }

    fn unread(&self) -> &[u8] {
        &self.rbuf[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.rbuf.len() {
            self.rbuf.clear();
            self.pos = 0;
        }
    }

    /// Read more bytes from the socket. Pending replies go out first: the client is
    /// waiting for them when it has sent nothing more (RFC 2920 §3.2).
    async fn fill(&mut self) -> Result<(), WireError> {
        self.flush().await?;
        if self.pos > 0 {
            self.rbuf.drain(..self.pos);
            self.pos = 0;
        }
        let start = self.rbuf.len();
        self.rbuf.resize(start + READ_CHUNK, 0);
        let until = self.deadline();
        let read = tokio::time::timeout_at(until, self.conn.read(&mut self.rbuf[start..])).await;
        let n = match read {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                self.rbuf.truncate(start);
                return Err(e.into());
            }
            Err(_) => {
                self.rbuf.truncate(start);
                return Err(WireError::Timeout);
            }
        };
        self.rbuf.truncate(start + n);
        if n == 0 {
            return Err(WireError::Closed);
        }
        self.request.received(n, Instant::now());
        Ok(())
    }

    /// Read one line of at most `max` bytes including its terminator.
    pub async fn read_line(&mut self, max: usize) -> Result<Line, WireError> {
        // Issue 13: the whole line within the idle time, however it trickles in.
        self.request = Budget::fixed(Instant::now(), self.idle);
        loop {
            let unread = self.unread();
            let window = &unread[..unread.len().min(max)];
            if let Some(i) = window.iter().position(|&b| b == b'\n') {
                let mut line = window[..i].to_vec();
                self.consume(i + 1);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                line.extend_from_slice(b"\r\n");
                return Ok(Line::Ok(line));
            }
            if unread.len() >= max {
                self.skip_to_lf().await?;
                return Ok(Line::TooLong);
            }
            self.fill().await?;
        }
    }

    /// Drop input up to and including the next LF.
    async fn skip_to_lf(&mut self) -> Result<(), WireError> {
        loop {
            if let Some(i) = self.unread().iter().position(|&b| b == b'\n') {
                self.consume(i + 1);
                return Ok(());
            }
            let n = self.unread().len();
            self.consume(n);
            self.fill().await?;
        }
    }

    /// Read a message after `354` up to the line `.` (RFC 5321 §4.1.1.4), removing the
    /// leading dot of stuffed lines (§4.5.2). Only CRLF `.` CRLF ends the data (no
    /// `<LF>.<CR><LF>` or `.<LF>` variants: SMTP smuggling); a line ending in a bare LF
    /// is stored with CRLF. At most `limit` bytes are kept: a larger message is read to
    /// its end and discarded.
    pub async fn read_data(
        &mut self,
        limit: u64,
        memory: &mut crate::memory::Reservation,
        memory_wait: Duration,
    ) -> Result<Data, WireError> {
        // Issue 13: the data at `smtpd_min_data_rate`, else cut.
        self.request = Budget::with_rate(Instant::now(), self.idle, self.min_data_rate);
        let mut body: Vec<u8> = Vec::new();
        let mut too_big = false;
        let mut no_memory = false;
        let mut size: u64 = 0;
        // At the start of a line (the 354 reply counts as the CRLF before the first).
        let mut bol = true;
        // ... and the previous line ended in CRLF, so `.` CRLF here ends the data.
        let mut after_crlf = true;
        // The previous segment ended in CR (a line split across segments).
        let mut prev_cr = false;
        loop {
            let unread = self.unread();
            let window = &unread[..unread.len().min(DATA_SEGMENT)];
            let (seg_len, complete) = match window.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None if window.len() >= DATA_SEGMENT => (window.len(), false),
                None => {
                    self.fill().await?;
                    continue;
                }
            };
            let seg = &window[..seg_len];
            if after_crlf && seg == b".\r\n" {
                self.consume(seg_len);
                break;
            }
            // §4.5.2: a line starting with a period has that period removed.
            let content = if bol && seg.first() == Some(&b'.') {
                &seg[1..]
            } else {
                seg
            };
            let bare_lf = complete
                && match content.len() {
                    1 => !prev_cr,
                    n => content[n - 2] != b'\r',
                };
            let add = content.len() as u64 + u64::from(bare_lf);
            size = size.saturating_add(add);
            if !too_big
                && !no_memory
                && size <= limit
                && size > memory.bytes()
                && !memory
                    .grow_to((size + RESERVE_STEP).min(limit), memory_wait)
                    .await
            {
                no_memory = true;
                body = Vec::new();
            }
            if size > limit {
                if !too_big {
                    too_big = true;
                    body = Vec::new();
                }
            } else if no_memory {
                // Read to the end, keep nothing.
            } else if bare_lf {
                body.extend_from_slice(&content[..content.len() - 1]);
                body.extend_from_slice(b"\r\n");
            } else {
                body.extend_from_slice(content);
            }
            after_crlf = complete && !bare_lf;
            prev_cr = !complete && seg.last() == Some(&b'\r');
            bol = complete;
            self.consume(seg_len);
        }
        Ok(if too_big {
            Data::TooBig
        } else if no_memory {
            Data::NoMemory
        } else {
            Data::Message(body)
        })
    }

    /// Bytes read from the stream and not yet consumed (for the fuzz targets' bound
    /// checks).
    pub fn buffered(&self) -> usize {
        self.rbuf.len() - self.pos
    }

    /// Best-effort close after a final reply.
    pub async fn shutdown(mut self) {
        let _ = self.flush().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.conn.shutdown()).await;
    }
}
