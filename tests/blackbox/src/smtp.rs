//! A line-oriented SMTP client for the tests: raw commands, full multi-line replies
//! (RFC 5321 §4.2.1), STARTTLS (RFC 3207), AUTH PLAIN (RFC 4954), DATA with dot-stuffing
//! (RFC 5321 §4.5.2).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::conn::{LineConn, ReadError};
use crate::mail::{Account, base64};
use crate::relay::Relay;

/// One SMTP reply: all its lines, raw (without CRLF), e.g. `250-PIPELINING`.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The last (or only) line, e.g. `553 5.7.1 <a@b>: Sender address rejected: …`.
    pub fn last(&self) -> &str {
        self.lines.last().map(String::as_str).unwrap_or("")
    }

    /// The text of each line after the code and separator.
    pub fn texts(&self) -> Vec<&str> {
        self.lines
            .iter()
            .map(|l| if l.len() > 4 { &l[4..] } else { "" })
            .collect()
    }

    /// The EHLO keyword line (RFC 5321 §4.1.1.1) that starts with `kw`, case-insensitive,
    /// e.g. `SIZE 31457280` for `SIZE`.
    pub fn keyword(&self, kw: &str) -> Option<&str> {
        self.texts().into_iter().skip(1).find(|t| {
            let word = t.split(' ').next().unwrap_or("");
            word.eq_ignore_ascii_case(kw)
        })
    }

    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.lines.join(" / "))
    }
}

/// An SMTP client connection.
pub struct Smtp {
    pub conn: LineConn,
    addr: SocketAddr,
}

impl Smtp {
    /// Plain TCP (25, 587).
    pub async fn connect(addr: SocketAddr) -> Smtp {
        let conn = LineConn::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect to SMTP {addr}: {e}"));
        Smtp { conn, addr }
    }

    /// Plain TCP from a chosen local address.
    pub async fn connect_from(local: IpAddr, addr: SocketAddr) -> Smtp {
        let conn = LineConn::connect_from(local, addr)
            .await
            .unwrap_or_else(|e| panic!("connect to SMTP {addr} from {local}: {e}"));
        Smtp { conn, addr }
    }

    /// Implicit TLS (465).
    pub async fn connect_tls(addr: SocketAddr) -> Smtp {
        let conn = LineConn::connect_tls(addr, &[])
            .await
            .unwrap_or_else(|e| panic!("TLS connect to SMTP {addr}: {e}"));
        Smtp { conn, addr }
    }

    /// Wrap an established connection (e.g. TLS with a chosen configuration).
    pub fn from_conn(conn: LineConn, addr: SocketAddr) -> Smtp {
        Smtp { conn, addr }
    }

    /// Read one complete reply (all continuation lines).
    pub async fn read_reply(&mut self) -> Result<Reply, ReadError> {
        let mut lines = Vec::new();
        loop {
            let raw = self.conn.read_line().await?;
            let line = String::from_utf8_lossy(&raw).into_owned();
            let code = line.get(..3).and_then(|c| c.parse::<u16>().ok());
            let sep = line.as_bytes().get(3).copied();
            lines.push(line.clone());
            match (code, sep) {
                // RFC 5321 §4.2.1: `250-` continues, `250 ` ends; bounded in count.
                (Some(_), Some(b'-')) if lines.len() < 1000 => {}
                (Some(code), Some(b' ') | None) => return Ok(Reply { code, lines }),
                _ => {
                    // Not a reply line: report it as code 0 so the test shows it.
                    return Ok(Reply { code: 0, lines });
                }
            }
        }
    }

    /// Read a reply; panic (with context) if none arrives.
    pub async fn reply(&mut self, what: &str) -> Reply {
        match self.read_reply().await {
            Ok(r) => r,
            Err(e) => panic!("SMTP {}: no reply to {what}: {e}", self.addr),
        }
    }

    /// The 220 greeting (asserted).
    pub async fn greeting(&mut self) -> Reply {
        let r = self.reply("connect (greeting)").await;
        assert_eq!(r.code, 220, "SMTP greeting: {r}");
        r
    }

    /// Send one command line (CRLF appended), no reading.
    pub async fn send_line(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes()).await;
    }

    /// Send raw bytes; panic on write failure.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        if let Err(e) = self.conn.write_all(bytes).await {
            panic!("SMTP {}: write failed: {e}", self.addr);
        }
    }

    /// Send a command and read its reply; panic if none arrives.
    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.send_line(line).await;
        self.reply(line).await
    }

    /// Send a command and read its reply, reporting read errors to the caller.
    pub async fn try_cmd(&mut self, line: &str) -> Result<Reply, ReadError> {
        if let Err(e) = self.conn.write_all(format!("{line}\r\n").as_bytes()).await {
            return Err(ReadError::Io(e));
        }
        self.read_reply().await
    }

    /// `EHLO client.example` (asserts 250).
    pub async fn ehlo(&mut self) -> Reply {
        let r = self.cmd("EHLO client.example").await;
        assert_eq!(r.code, 250, "EHLO: {r}");
        r
    }

    /// `STARTTLS`, expect 220, then the TLS handshake (no ALPN).
    pub async fn starttls(&mut self) {
        self.starttls_alpn(&[]).await;
    }

    /// `STARTTLS` offering ALPN protocols (Delta Chat offers `smtp` here, PORT-3).
    pub async fn starttls_alpn(&mut self, alpn: &[&[u8]]) {
        let r = self.cmd("STARTTLS").await;
        assert_eq!(r.code, 220, "STARTTLS: {r}");
        if let Err(e) = self.conn.start_tls(self.addr, alpn).await {
            panic!(
                "SMTP {}: TLS handshake after STARTTLS failed: {e}",
                self.addr
            );
        }
    }

    /// `AUTH PLAIN <base64>` with the initial response (RFC 4954 §4).
    pub async fn auth_plain(&mut self, user: &str, password: &str) -> Reply {
        let token = base64(format!("\0{user}\0{password}").as_bytes());
        self.cmd(&format!("AUTH PLAIN {token}")).await
    }

    /// `DATA`; if the server answers 354, send `body` dot-stuffed and terminated, and
    /// return the final reply; otherwise return the DATA reply.
    pub async fn data(&mut self, body: &[u8]) -> Reply {
        let r = self.cmd("DATA").await;
        if r.code != 354 {
            return r;
        }
        self.send_raw(&dot_stuff(body)).await;
        self.reply("end of DATA").await
    }

    /// One full transaction: MAIL, RCPT for each recipient, DATA. Returns the first
    /// reply that is not positive, or the final DATA reply.
    pub async fn send_mail(&mut self, from: &str, rcpts: &[&str], body: &[u8]) -> Reply {
        let r = self.cmd(&format!("MAIL FROM:<{from}>")).await;
        if r.code != 250 {
            return r;
        }
        for rcpt in rcpts {
            let r = self.cmd(&format!("RCPT TO:<{rcpt}>")).await;
            if r.code != 250 && r.code != 251 {
                return r;
            }
        }
        self.data(body).await
    }

    /// Like [`Smtp::send_mail`] but never panics: I/O problems come back as errors
    /// (for sessions that may be cut, e.g. by `kill -9`).
    pub async fn try_send_mail(
        &mut self,
        from: &str,
        rcpts: &[&str],
        body: &[u8],
    ) -> Result<Reply, ReadError> {
        let r = self.try_cmd(&format!("MAIL FROM:<{from}>")).await?;
        if r.code != 250 {
            return Ok(r);
        }
        for rcpt in rcpts {
            let r = self.try_cmd(&format!("RCPT TO:<{rcpt}>")).await?;
            if r.code != 250 && r.code != 251 {
                return Ok(r);
            }
        }
        let r = self.try_cmd("DATA").await?;
        if r.code != 354 {
            return Ok(r);
        }
        self.conn
            .write_all(&dot_stuff(body))
            .await
            .map_err(ReadError::Io)?;
        self.read_reply().await
    }

    /// `QUIT` (reply not required).
    pub async fn quit(mut self) {
        let _ = self.try_cmd("QUIT").await;
    }

    /// Implicit-TLS submission (465) logged in as `account`: greeting, EHLO, AUTH
    /// (all asserted).
    pub async fn login(relay: &Relay, account: &Account) -> Smtp {
        let mut s = Smtp::connect_tls(relay.submissions_addr()).await;
        s.greeting().await;
        s.ehlo().await;
        let r = s.auth_plain(&account.addr, &account.password).await;
        assert_eq!(r.code, 235, "AUTH PLAIN as {}: {r}", account.addr);
        s
    }

    /// Submit one message as `account` on a fresh connection; returns the reply that
    /// ended the transaction.
    pub async fn submit(relay: &Relay, account: &Account, rcpts: &[&str], body: &[u8]) -> Reply {
        let mut s = Smtp::login(relay, account).await;
        let r = s.send_mail(&account.addr, rcpts, body).await;
        s.quit().await;
        r
    }
}

/// RFC 5321 §4.5.2: double a leading dot on every line; make sure the data ends with
/// CRLF; append the `.` CRLF terminator.
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 64);
    let mut at_line_start = true;
    for &b in body {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing() {
        assert_eq!(dot_stuff(b"a\r\n.b\r\n"), b"a\r\n..b\r\n.\r\n".to_vec());
        assert_eq!(dot_stuff(b".x"), b"..x\r\n.\r\n".to_vec());
        assert_eq!(dot_stuff(b""), b"\r\n.\r\n".to_vec());
    }

    #[test]
    fn ehlo_keywords() {
        let r = Reply {
            code: 250,
            lines: vec![
                "250-relay.example".into(),
                "250-SIZE 1000".into(),
                "250 AUTH PLAIN".into(),
            ],
        };
        assert_eq!(r.keyword("size"), Some("SIZE 1000"));
        assert_eq!(r.keyword("AUTH"), Some("AUTH PLAIN"));
        assert_eq!(
            r.keyword("relay.example"),
            None,
            "the greeting line is no keyword"
        );
        assert_eq!(r.last(), "250 AUTH PLAIN");
    }
}
