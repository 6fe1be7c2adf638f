//! A line-oriented IMAP client for the tests: tagged commands, responses with their
//! untagged lines and literals kept byte-exact (RFC 9051 §4.3, §7), STARTTLS, LOGIN,
//! IDLE, and fetching a whole mailbox.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::conn::{LineConn, ReadError};
use crate::mail::Account;
use crate::relay::Relay;

/// One server line with its literals: `raw` is exactly what was on the wire (literal
/// bytes inline, including the CRLF after each `{n}`), without the final CRLF.
#[derive(Debug, Clone, Default)]
pub struct Line {
    pub raw: Vec<u8>,
    pub literals: Vec<Vec<u8>>,
}

impl Line {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text())
    }
}

/// The response to one tagged command.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// `* …` lines, in order.
    pub untagged: Vec<Line>,
    /// The tagged completion line (`A0001 OK …`), or the `+ …` continuation request if
    /// the server asked for more instead.
    pub tagged: String,
    /// `OK`, `NO`, `BAD`, or `+` for a continuation request.
    pub status: String,
}

impl Response {
    pub fn is_ok(&self) -> bool {
        self.status == "OK"
    }

    /// The untagged lines as text.
    pub fn untagged_text(&self) -> Vec<String> {
        self.untagged.iter().map(Line::text).collect()
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.untagged {
            writeln!(f, "{}", l.text())?;
        }
        write!(f, "{}", self.tagged)
    }
}

/// RFC 9051 §4.3: a literal announced at the end of a line, `{n}` or `{n+}`.
fn literal_len(line: &[u8]) -> Option<usize> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// RFC 9051 §4.3: a quoted string.
pub fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The capability atoms of a `* CAPABILITY …` line or `[CAPABILITY …]` response code.
pub fn parse_capabilities(text: &str) -> Option<Vec<String>> {
    let upper = text.to_ascii_uppercase();
    let start = upper.find("CAPABILITY ")? + "CAPABILITY ".len();
    let rest = &text[start..];
    let end = rest.find(']').unwrap_or(rest.len());
    Some(rest[..end].split_whitespace().map(str::to_string).collect())
}

/// An IMAP client connection.
pub struct Imap {
    pub conn: LineConn,
    addr: SocketAddr,
    next: u32,
}

impl Imap {
    /// Plain TCP (143).
    pub async fn connect(addr: SocketAddr) -> Imap {
        let conn = LineConn::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect to IMAP {addr}: {e}"));
        Imap {
            conn,
            addr,
            next: 1,
        }
    }

    /// Plain TCP from a chosen local address (e.g. `127.0.0.2`).
    pub async fn connect_from(local: std::net::IpAddr, addr: SocketAddr) -> Imap {
        let conn = LineConn::connect_from(local, addr)
            .await
            .unwrap_or_else(|e| panic!("connect to IMAP {addr} from {local}: {e}"));
        Imap {
            conn,
            addr,
            next: 1,
        }
    }

    /// Implicit TLS (993).
    pub async fn connect_tls(addr: SocketAddr) -> Imap {
        let conn = LineConn::connect_tls(addr, &[])
            .await
            .unwrap_or_else(|e| panic!("TLS connect to IMAP {addr}: {e}"));
        Imap {
            conn,
            addr,
            next: 1,
        }
    }

    /// Wrap an established connection (e.g. TLS with a chosen configuration).
    pub fn from_conn(conn: LineConn, addr: SocketAddr) -> Imap {
        Imap {
            conn,
            addr,
            next: 1,
        }
    }

    /// Read one server line, with any literals it contains.
    pub async fn read_line(&mut self) -> Result<Line, ReadError> {
        let mut line = Line::default();
        // Bounded: at most 10000 literals in one response line.
        for _ in 0..10000 {
            let part = self.conn.read_line().await?;
            line.raw.extend_from_slice(&part);
            match literal_len(&part) {
                Some(n) => {
                    line.raw.extend_from_slice(b"\r\n");
                    let lit = self.conn.read_exact(n).await?;
                    line.raw.extend_from_slice(&lit);
                    line.literals.push(lit);
                }
                None => return Ok(line),
            }
        }
        Ok(line)
    }

    /// The greeting line (`* OK …`, `* PREAUTH …` or `* BYE …`); panics if none.
    pub async fn greeting(&mut self) -> Line {
        match self.read_line().await {
            Ok(l) => l,
            Err(e) => panic!("IMAP {}: no greeting: {e}", self.addr),
        }
    }

    /// A fresh tag (`A0001`, …).
    pub fn tag(&mut self) -> String {
        let t = format!("A{:04}", self.next);
        self.next += 1;
        t
    }

    /// Send raw bytes; panic on write failure.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        if let Err(e) = self.conn.write_all(bytes).await {
            panic!("IMAP {}: write failed: {e}", self.addr);
        }
    }

    /// Read lines until the tagged completion for `tag` or a continuation request.
    pub async fn read_response(&mut self, tag: &str) -> Result<Response, ReadError> {
        let mut resp = Response::default();
        let prefix = format!("{tag} ");
        // Bounded: a response of more than a million lines is a failure in itself.
        for _ in 0..1_000_000 {
            let line = self.read_line().await?;
            if line.raw.starts_with(b"* ") || line.raw == b"*" {
                resp.untagged.push(line);
            } else if line.raw.starts_with(b"+") {
                resp.tagged = line.text();
                resp.status = "+".into();
                return Ok(resp);
            } else if line.raw.starts_with(prefix.as_bytes()) {
                let text = line.text();
                resp.status = text[prefix.len()..]
                    .split(' ')
                    .next()
                    .unwrap_or("")
                    .to_ascii_uppercase();
                resp.tagged = text;
                return Ok(resp);
            } else {
                // Another tag's completion or garbage: keep it visible.
                resp.untagged.push(line);
            }
        }
        Err(ReadError::Timeout)
    }

    /// Send `<tag> <command>` and read the response, reporting read errors.
    pub async fn try_cmd(&mut self, command: &str) -> Result<Response, ReadError> {
        let tag = self.tag();
        if let Err(e) = self
            .conn
            .write_all(format!("{tag} {command}\r\n").as_bytes())
            .await
        {
            return Err(ReadError::Io(e));
        }
        self.read_response(&tag).await
    }

    /// Send `<tag> <command>` and read the response; panic if none arrives.
    pub async fn cmd(&mut self, command: &str) -> Response {
        match self.try_cmd(command).await {
            Ok(r) => r,
            Err(e) => panic!("IMAP {}: no response to {command:?}: {e}", self.addr),
        }
    }

    /// `CAPABILITY`: the atoms listed (asserted OK).
    pub async fn capabilities(&mut self) -> Vec<String> {
        let r = self.cmd("CAPABILITY").await;
        assert!(r.is_ok(), "CAPABILITY: {r}");
        r.untagged
            .iter()
            .find_map(|l| {
                let t = l.text();
                if t.to_ascii_uppercase().starts_with("* CAPABILITY ") {
                    parse_capabilities(&t)
                } else {
                    None
                }
            })
            .unwrap_or_else(|| panic!("no * CAPABILITY line in {r}"))
    }

    /// `LOGIN "user" "password"`.
    pub async fn login(&mut self, user: &str, password: &str) -> Response {
        self.cmd(&format!("LOGIN {} {}", quote(user), quote(password)))
            .await
    }

    /// `STARTTLS`, expect OK, then the TLS handshake.
    pub async fn starttls(&mut self) {
        self.starttls_alpn(&[]).await;
    }

    /// `STARTTLS` offering ALPN protocols (Delta Chat offers `imap` here, PORT-3).
    pub async fn starttls_alpn(&mut self, alpn: &[&[u8]]) {
        let r = self.cmd("STARTTLS").await;
        assert!(r.is_ok(), "STARTTLS: {r}");
        if let Err(e) = self.conn.start_tls(self.addr, alpn).await {
            panic!(
                "IMAP {}: TLS handshake after STARTTLS failed: {e}",
                self.addr
            );
        }
    }

    /// `SELECT <mailbox>` (asserted OK); returns the EXISTS count.
    pub async fn select(&mut self, mailbox: &str) -> u32 {
        let r = self.cmd(&format!("SELECT {}", quote(mailbox))).await;
        assert!(r.is_ok(), "SELECT {mailbox}: {r}");
        exists_count(&r).unwrap_or_else(|| panic!("SELECT {mailbox}: no EXISTS in {r}"))
    }

    /// The bodies of messages 1..=n of the selected mailbox (`FETCH 1:n (BODY.PEEK[])`).
    pub async fn fetch_bodies(&mut self, n: u32) -> Vec<Vec<u8>> {
        if n == 0 {
            return Vec::new();
        }
        let r = self.cmd(&format!("FETCH 1:{n} (BODY.PEEK[])")).await;
        assert!(r.is_ok(), "FETCH: {r}");
        r.untagged
            .iter()
            .filter(|l| l.text().to_ascii_uppercase().contains(" FETCH ("))
            .filter_map(|l| l.literals.first().cloned())
            .collect()
    }

    /// `APPEND <mailbox> {n+}` with the message as a non-synchronizing literal
    /// (RFC 7888 LITERAL+), never panicking (for sessions that may be cut).
    pub async fn try_append(&mut self, mailbox: &str, msg: &[u8]) -> Result<Response, ReadError> {
        let tag = self.tag();
        let mut bytes =
            format!("{tag} APPEND {} {{{}+}}\r\n", quote(mailbox), msg.len()).into_bytes();
        bytes.extend_from_slice(msg);
        bytes.extend_from_slice(b"\r\n");
        self.conn.write_all(&bytes).await.map_err(ReadError::Io)?;
        self.read_response(&tag).await
    }

    /// `LOGOUT` (response not required).
    pub async fn logout(mut self) {
        let _ = self.try_cmd("LOGOUT").await;
    }

    /// Implicit-TLS session (993) logged in as `account` (asserted).
    pub async fn login_tls(relay: &Relay, account: &Account) -> Imap {
        let mut c = Imap::connect_tls(relay.imaps_addr()).await;
        let g = c.greeting().await;
        assert!(g.raw.starts_with(b"* OK"), "IMAP greeting: {g}");
        let r = c.login(&account.addr, &account.password).await;
        assert!(r.is_ok(), "LOGIN {}: {r}", account.addr);
        c
    }

    /// Log in over 993, select INBOX and fetch every message there.
    pub async fn fetch_inbox(relay: &Relay, account: &Account) -> Vec<Vec<u8>> {
        let mut c = Imap::login_tls(relay, account).await;
        let n = c.select("INBOX").await;
        let bodies = c.fetch_bodies(n).await;
        assert_eq!(
            bodies.len(),
            n as usize,
            "INBOX of {} has {n} messages but FETCH returned {}",
            account.addr,
            bodies.len()
        );
        c.logout().await;
        bodies
    }

    /// Wait (bounded) for an untagged line satisfying `pred` (e.g. during IDLE).
    pub async fn wait_untagged(
        &mut self,
        within: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<Line, ReadError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(ReadError::Timeout);
            }
            let saved = self.conn.timeout;
            self.conn.timeout = left;
            let line = self.read_line().await;
            self.conn.timeout = saved;
            let line = line?;
            if pred(&line.text()) {
                return Ok(line);
            }
        }
    }
}

/// The `* n EXISTS` count of a response.
pub fn exists_count(r: &Response) -> Option<u32> {
    r.untagged.iter().find_map(|l| {
        let t = l.text();
        let mut words = t.split(' ');
        let (star, n, kw) = (words.next()?, words.next()?, words.next()?);
        if star == "*" && kw.eq_ignore_ascii_case("EXISTS") {
            n.parse().ok()
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_announcements() {
        assert_eq!(
            literal_len(b"* METADATA INBOX (/private/devicetoken {4}"),
            Some(4)
        );
        assert_eq!(literal_len(b"A1 APPEND INBOX {12+}"), Some(12));
        assert_eq!(literal_len(b"* OK done"), None);
        assert_eq!(literal_len(b"* OK {x}"), None);
        assert_eq!(literal_len(b"* OK {}"), None);
    }

    #[test]
    fn capabilities_from_line_and_code() {
        assert_eq!(
            parse_capabilities("* OK [CAPABILITY IMAP4rev1 XCHATMAIL] ready"),
            Some(vec!["IMAP4rev1".to_string(), "XCHATMAIL".to_string()])
        );
        assert_eq!(
            parse_capabilities("* CAPABILITY IMAP4rev1 IDLE"),
            Some(vec!["IMAP4rev1".to_string(), "IDLE".to_string()])
        );
        assert_eq!(parse_capabilities("* OK ready"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
