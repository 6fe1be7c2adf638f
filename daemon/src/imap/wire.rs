//! Command framing (RFC 9051 §2.2, §4.3; RFC 7888 LITERAL+): reads one complete
//! command — lines plus the literals they announce — before it is parsed. Sends the
//! `+` continuation for synchronizing literals, refuses literals over the limit without
//! reading them (synchronizing) or while discarding them (non-synchronizing), reserves
//! each literal in the memory budget before reading it (`crate::memory`), bounds line
//! length, and rejects NUL bytes outside literals. The deadlines (login, autologout) are
//! the session's, around [`read_command`].
//!
//! Hand-written, not imap-codec's `fragmentizer::Fragmentizer` (2.0.0-alpha.10), which
//! cannot keep these limits:
//! - APPEND without a copy: the fragmentizer collects each command in a private buffer
//!   and lends it out only as `&[u8]` (`message_bytes`, `decode_message`), so a message
//!   of up to `max_message_size` would be copied once more out of it; the buffer grows by
//!   doubling with no way to reserve the announced size, so one APPEND could hold about
//!   three times its literal against the one reservation made for it here;
//! - limits per command: its size limit is fixed when it is made and is enforced by
//!   truncating what it keeps while it goes on reading, where this code decides at each
//!   announcement, before `+` is sent: 256 KiB for commands other than APPEND, the
//!   message limits for APPEND, 8 KiB literals and 64 KiB commands before login, and
//!   `NO [LIMIT]` when the memory budget has no room;
//! - bytes after the command: what it has read beyond the command stays in its private
//!   queue, but after COMPRESS DEFLATE those bytes are compressed and go to the
//!   decompressor ([`InBuf::take_all`]), after STARTTLS they are dropped
//!   ([`InBuf::clear`]), and IDLE's DONE and AUTHENTICATE's continuation line are read
//!   from the same buffer;
//! - literal lengths: it reads them as `u32`, so `{4294967296+}` is no announcement to it
//!   and the client's literal bytes would be taken for commands; here any length of up
//!   to 19 digits is a literal, refused when over the limit;
//! - a line that never ends is read on by it (keeping only its limit); here the
//!   connection is closed after 16 MiB of one line.
//!
//! Tags are checked with imap-types' `Tag` ([`tag_of`]), the parser's own rule.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest line outside literals (RFC 9051 §4: servers may limit line length).
pub const MAX_LINE: usize = 64 * 1024;
/// Longest command other than APPEND, literals included: the limits a caller gives are
/// for a message; a SEARCH or STORE has no business being megabytes long.
pub const MAX_OTHER_COMMAND: u64 = 256 * 1024;
/// How much of an over-long line is discarded before the connection is closed.
const MAX_DISCARD_LINE: usize = 16 * 1024 * 1024;

/// Bytes of an over-long line kept to answer it: its start (the tag, RFC 9051 §2.2.1)
/// and its end (a literal announcement, RFC 7888).
const KEEP_HEAD: usize = 160;
const KEEP_TAIL: usize = 32;

/// One line read by [`InBuf::read_line_or_ends`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// The whole line, LF included.
    Full(Vec<u8>),
    /// Longer than the limit and discarded up to its end: its first and last bytes.
    TooLong { head: Vec<u8>, tail: Vec<u8> },
}

/// The last `KEEP_TAIL` bytes of `before` followed by `more`.
fn keep_tail(before: &[u8], more: &[u8]) -> Vec<u8> {
    let mut t = before.to_vec();
    t.extend_from_slice(&more[more.len().saturating_sub(KEEP_TAIL)..]);
    t.split_off(t.len().saturating_sub(KEEP_TAIL))
}

/// Bytes received but not yet consumed.
#[derive(Default)]
pub struct InBuf {
    buf: Vec<u8>,
}

/// One framed unit of client input.
#[derive(Debug)]
pub enum Frame {
    /// A complete command (lines and literal data), ready for the parser.
    Command(Vec<u8>),
    /// A line was longer than [`MAX_LINE`]; it has been discarded.
    LineTooLong { tag: Option<String> },
    /// A literal over the limit was refused (`sync`: the client never sent it).
    LiteralTooBig { tag: Option<String>, sync: bool },
    /// NUL outside a literal.
    Nul { tag: Option<String> },
    /// No room in the memory budget for a literal in time (`crate::memory`); a
    /// non-synchronizing one was read and dropped.
    NoMemory { tag: Option<String> },
    /// The client closed the connection.
    Eof,
}

/// Input errors that end the session.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed")]
    Eof,
    #[error("line far too long")]
    Flood,
}

impl InBuf {
    /// Forget buffered bytes (after STARTTLS, RFC 9051 §6.2.1 / RFC 3207 §4.2:
    /// anything pipelined after the command must not be used).
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// Take every buffered byte.
    pub fn take_all(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Append bytes read elsewhere (IDLE reads under `select!`).
    pub fn push(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// A complete buffered line (with its LF), if there is one.
    pub fn take_line(&mut self) -> Option<Vec<u8>> {
        let nl = self.buf.iter().position(|&b| b == b'\n')?;
        let rest = self.buf.split_off(nl + 1);
        Some(std::mem::replace(&mut self.buf, rest))
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    async fn fill<S: AsyncRead + Unpin>(&mut self, io: &mut S) -> Result<(), WireError> {
        let mut tmp = vec![0u8; 16 * 1024];
        let n = io.read(&mut tmp).await?;
        if n == 0 {
            return Err(WireError::Eof);
        }
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(())
    }

    /// One line including its LF. `Ok(None)`: longer than `limit`; it was discarded
    /// up to its end.
    pub async fn read_line<S: AsyncRead + Unpin>(
        &mut self,
        io: &mut S,
        limit: usize,
    ) -> Result<Option<Vec<u8>>, WireError> {
        Ok(match self.read_line_or_ends(io, limit).await? {
            Line::Full(line) => Some(line),
            Line::TooLong { .. } => None,
        })
    }

    /// One line including its LF; a line longer than `limit` is discarded up to its
    /// end, keeping only its first and last bytes.
    pub async fn read_line_or_ends<S: AsyncRead + Unpin>(
        &mut self,
        io: &mut S,
        limit: usize,
    ) -> Result<Line, WireError> {
        loop {
            if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                if nl + 1 > limit {
                    let head = self.buf[..KEEP_HEAD.min(nl + 1)].to_vec();
                    let tail = keep_tail(&[], &self.buf[..nl + 1]);
                    self.buf.drain(..nl + 1);
                    return Ok(Line::TooLong { head, tail });
                }
                return Ok(Line::Full(self.take_line().unwrap_or_default()));
            }
            if self.buf.len() > limit {
                // Discard to the end of the line.
                let head = self.buf[..KEEP_HEAD].to_vec();
                let mut tail = keep_tail(&[], &self.buf);
                let mut discarded = self.buf.len();
                self.buf.clear();
                loop {
                    self.fill(io).await?;
                    if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                        tail = keep_tail(&tail, &self.buf[..nl + 1]);
                        self.buf.drain(..nl + 1);
                        return Ok(Line::TooLong { head, tail });
                    }
                    tail = keep_tail(&tail, &self.buf);
                    discarded += self.buf.len();
                    self.buf.clear();
                    if discarded > MAX_DISCARD_LINE {
                        return Err(WireError::Flood);
                    }
                }
            }
            self.fill(io).await?;
        }
    }

    /// Read exactly `n` bytes into `out`.
    async fn read_exact_into<S: AsyncRead + Unpin>(
        &mut self,
        io: &mut S,
        n: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), WireError> {
        // Room for the whole literal at once: no doubling (and copying) as it grows.
        out.reserve_exact(n);
        let from_buf = n.min(self.buf.len());
        out.extend(self.buf.drain(..from_buf));
        let mut left = n - from_buf;
        let mut tmp = vec![0u8; left.clamp(1, 64 * 1024)];
        while left > 0 {
            let want = left.min(tmp.len());
            let got = io.read(&mut tmp[..want]).await?;
            if got == 0 {
                return Err(WireError::Eof);
            }
            out.extend_from_slice(&tmp[..got]);
            left -= got;
        }
        Ok(())
    }

    /// Read and drop `n` bytes.
    async fn discard<S: AsyncRead + Unpin>(&mut self, io: &mut S, n: u64) -> Result<(), WireError> {
        let from_buf = (n.min(self.buf.len() as u64)) as usize;
        self.buf.drain(..from_buf);
        let mut left = n - from_buf as u64;
        let mut tmp = vec![0u8; 64 * 1024];
        while left > 0 {
            let want = left.min(tmp.len() as u64) as usize;
            let got = io.read(&mut tmp[..want]).await?;
            if got == 0 {
                return Err(WireError::Eof);
            }
            left -= got as u64;
        }
        Ok(())
    }
}

/// The literal a line announces at its end: `{n}` / `{n+}` (also `~{n}`), as (size,
/// synchronizing).
pub fn literal_announcement(line: &[u8]) -> Option<(u64, bool)> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let mut digits = &inner[open + 1..];
    let sync = match digits.strip_suffix(b"+") {
        Some(d) => {
            digits = d;
            false
        }
        None => true,
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((n, sync))
}

/// The tag of a (possibly malformed) command, if it is a valid tag (RFC 9051 §9, as the
/// parser reads it) of at most 128 bytes.
pub fn tag_of(msg: &[u8]) -> Option<String> {
    let end = msg
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n')
        .unwrap_or(msg.len());
    let tag = &msg[..end];
    if tag.len() > 128 {
        return None;
    }
    imap_codec::imap_types::core::Tag::try_from(tag)
        .ok()
        .map(|t| t.inner().to_string())
}

/// `tag APPEND …`: the one command that carries a message.
fn is_append(first_line: &[u8]) -> bool {
    first_line
        .split(|&b| b == b' ')
        .nth(1)
        .is_some_and(|w| w.eq_ignore_ascii_case(b"APPEND"))
}

/// Read one command. `max_literal` bounds each literal, `max_total` the whole command;
/// commands other than APPEND are bounded by [`MAX_OTHER_COMMAND`] as well. Literals are
/// reserved in `memory` (waiting at most `memory_wait`) before they are read; the caller
/// keeps the reservation until the command is done.
pub async fn read_command<S: AsyncRead + AsyncWrite + Unpin>(
    inbuf: &mut InBuf,
    io: &mut S,
    mut max_literal: u64,
    mut max_total: u64,
    memory: &mut crate::memory::Reservation,
    memory_wait: std::time::Duration,
) -> Result<Frame, WireError> {
    let mut msg = Vec::new();
    loop {
        let line = match inbuf.read_line_or_ends(io, MAX_LINE).await {
            Ok(Line::Full(line)) => line,
            Ok(Line::TooLong { head, tail }) => {
                // The tag from the line's start, so the client gets a tagged answer.
                let tag = tag_of(if msg.is_empty() { &head } else { &msg });
                skip_rest(inbuf, io, &tail).await?;
                return Ok(Frame::LineTooLong { tag });
            }
            Err(WireError::Eof) if msg.is_empty() && inbuf.is_empty() => return Ok(Frame::Eof),
            Err(e) => return Err(e),
        };
        if line.contains(&0) {
            let tag = tag_of(if msg.is_empty() { &line } else { &msg });
            skip_rest(inbuf, io, &line).await?;
            return Ok(Frame::Nul { tag });
        }
        if msg.is_empty() && !is_append(&line) {
            max_literal = max_literal.min(MAX_OTHER_COMMAND);
            max_total = max_total.min(MAX_OTHER_COMMAND);
        }
        msg.extend_from_slice(&line);
        let Some((n, sync)) = literal_announcement(&line) else {
            return Ok(Frame::Command(msg));
        };
        if n > max_literal || msg.len() as u64 + n > max_total {
            let tag = tag_of(&msg);
            if !sync {
                // RFC 7888 §4: the client sent it anyway; drop it and the command rest.
                inbuf.discard(io, n).await?;
                skip_rest_after_literal(inbuf, io).await?;
            }
            return Ok(Frame::LiteralTooBig { tag, sync });
        }
        if !memory.grow_to(msg.len() as u64 + n, memory_wait).await {
            let tag = tag_of(&msg);
            if !sync {
                inbuf.discard(io, n).await?;
                skip_rest_after_literal(inbuf, io).await?;
            }
            return Ok(Frame::NoMemory { tag });
        }
        if sync {
            io.write_all(&super::encode::continue_request("Ready for literal data"))
                .await?;
            io.flush().await?;
        }
        inbuf.read_exact_into(io, n as usize, &mut msg).await?;
    }
}

/// After a refused line (or the end of one): if it announced a non-synchronizing
/// literal, drop that and the rest of the command too.
async fn skip_rest<S: AsyncRead + Unpin>(
    inbuf: &mut InBuf,
    io: &mut S,
    line: &[u8],
) -> Result<(), WireError> {
    if let Some((n, false)) = literal_announcement(line) {
        inbuf.discard(io, n).await?;
        skip_rest_after_literal(inbuf, io).await?;
    }
    Ok(())
}

/// Drop the remaining lines of a command after a discarded literal (bounded count).
async fn skip_rest_after_literal<S: AsyncRead + Unpin>(
    inbuf: &mut InBuf,
    io: &mut S,
) -> Result<(), WireError> {
    for _ in 0..64 {
        let Some(line) = inbuf.read_line(io, MAX_LINE).await? else {
            return Ok(());
        };
        match literal_announcement(&line) {
            Some((n, false)) => inbuf.discard(io, n).await?,
            _ => return Ok(()),
        }
    }
    Err(WireError::Flood)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: std::time::Duration = std::time::Duration::from_millis(100);

    fn mem() -> crate::memory::Reservation {
        crate::memory::Budget::new(1 << 30).empty()
    }

    #[test]
    fn literal_announcements() {
        assert_eq!(
            literal_announcement(b"a APPEND x {12}\r\n"),
            Some((12, true))
        );
        assert_eq!(
            literal_announcement(b"a APPEND x {12+}\r\n"),
            Some((12, false))
        );
        assert_eq!(literal_announcement(b"a APPEND x ~{3}\n"), Some((3, true)));
        assert_eq!(literal_announcement(b"a LOGIN {x}\r\n"), None);
        assert_eq!(literal_announcement(b"a NOOP\r\n"), None);
        assert_eq!(literal_announcement(b"a {}\r\n"), None);
    }

    #[test]
    fn tags() {
        assert_eq!(tag_of(b"a1 NOOP\r\n").as_deref(), Some("a1"));
        assert_eq!(tag_of(b"* NOOP\r\n"), None);
        assert_eq!(tag_of(b"\r\n"), None);
    }

    #[tokio::test]
    async fn only_append_may_carry_big_literals() {
        let (mut client, mut server) = tokio::io::duplex(1 << 20);
        let big = MAX_OTHER_COMMAND + 1;
        let mut inbuf = InBuf::default();
        // A SEARCH with a literal over the cap is refused unread (synchronizing)...
        client
            .write_all(format!("s SEARCH TEXT {{{big}}}\r\n").as_bytes())
            .await
            .unwrap();
        match read_command(&mut inbuf, &mut server, 1 << 30, 1 << 30, &mut mem(), WAIT)
            .await
            .unwrap()
        {
            Frame::LiteralTooBig { tag, sync } => {
                assert_eq!(tag.as_deref(), Some("s"));
                assert!(sync);
            }
            other => panic!("{other:?}"),
        }
        // ...while APPEND gets the caller's limits.
        let head = format!("a append INBOX {{{big}+}}\r\n");
        client.write_all(head.as_bytes()).await.unwrap();
        let writer = tokio::spawn(async move {
            client.write_all(&vec![b'x'; big as usize]).await.unwrap();
            client.write_all(b"\r\n").await.unwrap();
            client
        });
        match read_command(&mut inbuf, &mut server, 1 << 30, 1 << 30, &mut mem(), WAIT)
            .await
            .unwrap()
        {
            Frame::Command(m) => assert_eq!(m.len() as u64, head.len() as u64 + big + 2),
            other => panic!("{other:?}"),
        }
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn an_over_long_line_keeps_its_tag() {
        let (mut client, mut server) = tokio::io::duplex(1 << 20);
        let mut inbuf = InBuf::default();
        let long = |start: &str, end: &str| {
            let mut l = start.as_bytes().to_vec();
            l.resize(MAX_LINE + 1000, b'x');
            l.extend_from_slice(end.as_bytes());
            l
        };
        let writer = tokio::spawn(async move {
            // Whole in the buffer at once, then arriving in pieces after the limit.
            client.write_all(&long("t1 NOOP ", "\r\n")).await.unwrap();
            client.write_all(&long("t2 LOGIN ", "")).await.unwrap();
            client.write_all(&[b'y'; 100_000]).await.unwrap();
            client.write_all(b"\r\n").await.unwrap();
            // A non-synchronizing literal announced at the end: dropped with the line.
            client
                .write_all(&long("t3 APPEND x ", " {6+}\r\n"))
                .await
                .unwrap();
            client.write_all(b"t9 X\r\n\r\n").await.unwrap();
            // A tag too long to be one: untagged.
            client
                .write_all(&long(&"T".repeat(200), "\r\n"))
                .await
                .unwrap();
            client.write_all(b"t4 NOOP\r\n").await.unwrap();
            client
        });
        for want in [Some("t1"), Some("t2"), Some("t3"), None] {
            match read_command(&mut inbuf, &mut server, 100, 1000, &mut mem(), WAIT)
                .await
                .unwrap()
            {
                Frame::LineTooLong { tag } => assert_eq!(tag.as_deref(), want),
                other => panic!("{other:?}"),
            }
        }
        match read_command(&mut inbuf, &mut server, 100, 1000, &mut mem(), WAIT)
            .await
            .unwrap()
        {
            Frame::Command(m) => assert_eq!(m, b"t4 NOOP\r\n"),
            other => panic!("{other:?}"),
        }
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn frames_commands_with_literals() {
        let (mut client, mut server) = tokio::io::duplex(1 << 20);
        client
            .write_all(b"a LOGIN {3}\r\nbob {4+}\r\npass\r\nb NOOP\r\n")
            .await
            .unwrap();
        let mut inbuf = InBuf::default();
        let f = read_command(&mut inbuf, &mut server, 100, 1000, &mut mem(), WAIT)
            .await
            .unwrap();
        match f {
            Frame::Command(m) => assert_eq!(m, b"a LOGIN {3}\r\nbob {4+}\r\npass\r\n"),
            other => panic!("{other:?}"),
        }
        let mut cont = [0u8; 26];
        client.read_exact(&mut cont).await.unwrap();
        assert_eq!(&cont, b"+ Ready for literal data\r\n");
        match read_command(&mut inbuf, &mut server, 100, 1000, &mut mem(), WAIT)
            .await
            .unwrap()
        {
            Frame::Command(m) => assert_eq!(m, b"b NOOP\r\n"),
            other => panic!("{other:?}"),
        }
        // Too big non-synchronizing literal: discarded with the command rest.
        client.write_all(b"c APPEND x {200+}\r\n").await.unwrap();
        client.write_all(&[b'x'; 200]).await.unwrap();
        client.write_all(b"\r\nd NOOP\r\n").await.unwrap();
        match read_command(&mut inbuf, &mut server, 100, 1000, &mut mem(), WAIT)
            .await
            .unwrap()
        {
            Frame::LiteralTooBig { tag, sync } => {
                assert_eq!(tag.as_deref(), Some("c"));
                assert!(!sync);
            }
            other => panic!("{other:?}"),
        }
        match read_command(&mut inbuf, &mut server, 100, 1000, &mut mem(), WAIT)
            .await
            .unwrap()
        {
            Frame::Command(m) => assert_eq!(m, b"d NOOP\r\n"),
            other => panic!("{other:?}"),
        }
        // NUL in a line.
        client.write_all(b"e NO\0OP\r\nf NOOP\r\n").await.unwrap();
        assert!(matches!(
            read_command(&mut inbuf, &mut server, 100, 1000, &mut mem(), WAIT).await.unwrap(),
            Frame::Nul { tag: Some(t) } if t == "e"
        ));
        match read_command(&mut inbuf, &mut server, 100, 1000, &mut mem(), WAIT)
            .await
            .unwrap()
        {
            Frame::Command(m) => assert_eq!(m, b"f NOOP\r\n"),
            other => panic!("{other:?}"),
        }
        drop(client);
        assert!(matches!(
            read_command(&mut inbuf, &mut server, 100, 1000, &mut mem(), WAIT)
                .await
                .unwrap(),
            Frame::Eof
        ));
    }

    /// A literal announced with more digits than fit in 32 bits is still a literal: refused
    /// unread when synchronizing, and when not, its bytes are read as literal data, never as
    /// commands (imap-codec's fragmentizer reads lengths as `u32` and would see a complete
    /// line here, then take `b NOOP` for the next command).
    #[tokio::test]
    async fn literal_lengths_beyond_u32_are_literals() {
        let (mut client, mut server) = tokio::io::duplex(1 << 20);
        let mut inbuf = InBuf::default();
        client
            .write_all(b"a APPEND x {4294967296}\r\nb NOOP\r\n")
            .await
            .unwrap();
        match read_command(&mut inbuf, &mut server, 1 << 30, 1 << 31, &mut mem(), WAIT)
            .await
            .unwrap()
        {
            Frame::LiteralTooBig { tag, sync } => {
                assert_eq!(tag.as_deref(), Some("a"));
                assert!(sync);
            }
            other => panic!("{other:?}"),
        }
        match read_command(&mut inbuf, &mut server, 1 << 30, 1 << 31, &mut mem(), WAIT)
            .await
            .unwrap()
        {
            Frame::Command(m) => assert_eq!(m, b"b NOOP\r\n"),
            other => panic!("{other:?}"),
        }
        // Non-synchronizing: what follows is the literal's data; the client ends before
        // sending all of it, so no command is framed from it.
        client
            .write_all(b"c APPEND x {4294967296+}\r\nd NOOP\r\n")
            .await
            .unwrap();
        drop(client);
        let r = read_command(&mut inbuf, &mut server, 1 << 30, 1 << 31, &mut mem(), WAIT).await;
        assert!(matches!(r, Err(WireError::Eof)), "{r:?}");
    }
}
