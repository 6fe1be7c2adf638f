//! Session tests: a real `Relay` on a temporary directory, sessions driven over
//! loopback TCP (and TLS with a client that trusts any certificate).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::{Limits, Mode, serve_with};
use crate::config::Config;
use crate::net::Conn;
use crate::server::Relay;

const DOMAIN: &str = "example.org";
const PASSWORD: &str = "password123";
const MAX_SIZE: u64 = 100_000;
const STEP: Duration = Duration::from_secs(20);

// ---- relay and listener -------------------------------------------------------------

fn config(dir: &Path, mail_domain: &str) -> Config {
    let mut c = crate::testing::config(dir, mail_domain);
    c.max_user_send_burst_size = 100;
    c.max_message_size = MAX_SIZE;
    c.username_min_length = 3;
    c.username_max_length = 20;
    c.max_imap_connections = 100;
    c.max_smtp_connections = 100;
    c
}

/// A relay with one SMTP listener on 127.0.0.1.
struct Harness {
    relay: Arc<Relay>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Setup {
    mail_domain: &'static str,
    mode: Mode,
    implicit_tls: bool,
    burst: u32,
    limits: Limits,
    /// QUOTA-1 in bytes; `None` keeps the config default.
    max_mailbox_size: Option<u64>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            mail_domain: DOMAIN,
            mode: Mode::Submission,
            implicit_tls: false,
            burst: 100,
            limits: Limits {
                idle: Duration::from_secs(60),
                ..Limits::default()
            },
            max_mailbox_size: None,
        }
    }
}

async fn start(setup: Setup) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), setup.mail_domain);
    cfg.max_user_send_burst_size = setup.burst;
    if let Some(max) = setup.max_mailbox_size {
        cfg.max_mailbox_size = max;
    }
    let relay = Relay::open(cfg).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let r = relay.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            let relay = r.clone();
            let (mode, implicit, limits) = (setup.mode, setup.implicit_tls, setup.limits);
            tokio::spawn(async move {
                let conn = if implicit {
                    let acceptor = tokio_rustls::TlsAcceptor::from(relay.tls.tls13.clone());
                    match acceptor.accept(stream).await {
                        Ok(tls) => Conn::Tls(Box::new(tls)),
                        Err(_) => return,
                    }
                } else {
                    Conn::Plain(stream)
                };
                serve_with(relay.smtp_handles(), conn, peer, mode, limits).await;
            });
        }
    });
    Harness {
        relay,
        addr,
        task,
        _dir: dir,
    }
}

impl Harness {
    /// Create an account the way a first login does (ACC-6).
    async fn account(&self, local: &str) -> String {
        let domain = self.relay.config.address_domain();
        self.relay
            .auth
            .login(
                &format!("{local}@{domain}"),
                PASSWORD,
                std::net::Ipv4Addr::LOCALHOST.into(),
            )
            .await
            .unwrap()
    }

    fn inbox(&self, account: &str) -> Vec<Vec<u8>> {
        let (_, metas) = self.relay.store.messages(account, "INBOX").unwrap();
        metas
            .iter()
            .map(|m| {
                self.relay
                    .store
                    .body(account, "INBOX", m.uid)
                    .unwrap()
                    .unwrap()
            })
            .collect()
    }
}

// ---- client -------------------------------------------------------------------------

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

#[derive(Debug)]
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    fn text(&self) -> String {
        self.lines.join("\n")
    }
}

struct Client {
    io: BufReader<Box<dyn Io>>,
}

fn connector() -> tokio_rustls::TlsConnector {
    connector_for(&rustls::version::TLS13)
}

fn connector_for(version: &'static rustls::SupportedProtocolVersion) -> tokio_rustls::TlsConnector {
    crate::testing::tls_connector(&[version], None)
}

async fn tls_over<S: Io + 'static>(stream: S) -> Box<dyn Io> {
    let name = ServerName::try_from(DOMAIN).unwrap();
    let tls = tokio::time::timeout(STEP, connector().connect(name, stream))
        .await
        .expect("handshake in time")
        .expect("handshake");
    Box::new(tls)
}

impl Client {
    /// Connect and read the greeting.
    async fn connect(addr: SocketAddr) -> (Client, Reply) {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut c = Client {
            io: BufReader::new(Box::new(stream)),
        };
        let greeting = c.reply().await;
        (c, greeting)
    }

    async fn connect_tls(addr: SocketAddr) -> (Client, Reply) {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut c = Client {
            io: BufReader::new(tls_over(stream).await),
        };
        let greeting = c.reply().await;
        (c, greeting)
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.unwrap();
        self.io.get_mut().flush().await.unwrap();
    }

    async fn reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(STEP, self.io.read_line(&mut line))
                .await
                .expect("reply in time")
                .expect("read reply");
            assert!(n > 0, "connection closed; replies so far: {lines:?}");
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            let line = line.trim_end_matches("\r\n").to_string();
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line);
            if !more {
                break;
            }
        }
        let code = lines[0][..3].parse().expect("reply code");
        Reply { code, lines }
    }

    async fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Expect a reply code to a command, returning the reply.
    async fn expect(&mut self, line: &str, code: u16) -> Reply {
        let r = self.cmd(line).await;
        assert_eq!(r.code, code, "{line} → {}", r.text());
        r
    }

    async fn starttls(mut self) -> Client {
        self.expect("STARTTLS", 220).await;
        let inner = self.io.into_inner();
        Client {
            io: BufReader::new(tls_over(inner).await),
        }
    }

    /// True when the server closed the connection (EOF or reset) within a step.
    async fn closed(&mut self) -> bool {
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(STEP, self.io.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

fn plain_auth(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}

/// Submission on the STARTTLS port up to a successful AUTH as `local@domain`.
async fn logged_in(h: &Harness, local: &str) -> (Client, String) {
    let address = h.account(local).await;
    let (mut c, _) = Client::connect(h.addr).await;
    c.expect("EHLO client.test", 250).await;
    let mut c = c.starttls().await;
    c.expect("EHLO client.test", 250).await;
    c.expect(
        &format!("AUTH PLAIN {}", plain_auth(&address, PASSWORD)),
        235,
    )
    .await;
    (c, address)
}

/// The Delta Chat encrypted message of the fixtures (PKESK, PKESK, SEIPD), addressed.
fn encrypted(from: &str, to: &str) -> Vec<u8> {
    let template = Path::new("/work/shared/fixtures/encryption-gate-templates/encrypted.eml");
    let text = match std::fs::read_to_string(template) {
        Ok(t) => t,
        Err(_) => inline_encrypted(),
    };
    text.replace("{from_addr}", from)
        .replace("{to_addr}", to)
        .replace("{subject}", "secret subject")
        .into_bytes()
}

/// A structurally valid PGP/MIME message (GATE-1..8): PKESK then SEIPD.
fn inline_encrypted() -> String {
    let mut packets = vec![0xC1, 0x03, 0x03, 0x00, 0x00];
    packets.extend([0xD2, 0x05, 0x01, 0xAA, 0xBB, 0xCC, 0xDD]);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&packets);
    format!(
        "From: {{from_addr}}\r\nTo: {{to_addr}}\r\nSubject: {{subject}}\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"inline-boundary-1\"\r\n\r\n\
         --inline-boundary-1\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n\
         --inline-boundary-1\r\nContent-Type: application/octet-stream\r\n\r\n\
         -----BEGIN PGP MESSAGE-----\r\n\r\n{b64}\r\n=AAAA\r\n-----END PGP MESSAGE-----\r\n\r\n--inline-boundary-1--\r\n"
    )
}

/// The start of a self-sent Autocrypt Setup Message (SUB-8: cleartext the relay takes):
/// DATA framing tests put their lines into its text part, then [`SETUP_END`].
fn setup_message_start(me: &str) -> Vec<u8> {
    format!(
        "From: {me}\r\nTo: {me}\r\nSubject: Autocrypt Setup Message\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"asm\"\r\n\r\n--asm\r\nContent-Type: text/plain\r\n\r\n"
    )
    .into_bytes()
}

const SETUP_END: &[u8] = b"\r\n--asm--\r\n";

fn plain_message(from: &str, to: &str) -> Vec<u8> {
    format!("From: {from}\r\nTo: {to}\r\nSubject: hello\r\nMessage-ID: <m1@x>\r\n\r\nHi there.\r\n")
        .into_bytes()
}

/// DATA payload: dot-stuffed, terminated.
fn stuffed(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in msg.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// MAIL, RCPTs (each expected 250), DATA, message; returns the final reply.
async fn send_mail(c: &mut Client, from: &str, rcpts: &[&str], msg: &[u8]) -> Reply {
    c.expect(&format!("MAIL FROM:<{from}>"), 250).await;
    for r in rcpts {
        c.expect(&format!("RCPT TO:<{r}>"), 250).await;
    }
    c.expect("DATA", 354).await;
    c.send(&stuffed(msg)).await;
    c.reply().await
}

fn has_header(msg: &[u8], name: &str) -> bool {
    let text = String::from_utf8_lossy(msg);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    head.lines().any(|l| {
        l.split(':')
            .next()
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
    })
}

// ---- greeting, EHLO, plain-text rules -----------------------------------------------

#[tokio::test]
async fn greeting_and_ehlo_before_tls() {
    let h = start(Setup::default()).await;
    let (mut c, greeting) = Client::connect(h.addr).await;
    assert_eq!(greeting.text(), "220 example.org ESMTP");
    let ehlo = c.expect("EHLO client.test", 250).await;
    assert_eq!(ehlo.lines[0], "250-example.org");
    for kw in [
        "PIPELINING",
        "8BITMIME",
        "SMTPUTF8",
        "SIZE 100000",
        "ENHANCEDSTATUSCODES",
        "STARTTLS",
    ] {
        assert!(
            ehlo.lines.iter().any(|l| &l[4..] == kw),
            "{kw} missing: {ehlo:?}"
        );
    }
    assert!(
        !ehlo.text().contains("AUTH"),
        "no AUTH before TLS: {ehlo:?}"
    );
    assert!(!ehlo.text().contains("CHUNKING"));
    // §10: MAIL before STARTTLS.
    let r = c.expect("MAIL FROM:<a@example.org>", 530).await;
    assert_eq!(r.text(), "530 5.7.0 Must issue a STARTTLS command first");
    // RFC 4954: AUTH before TLS refused.
    c.expect(
        &format!("AUTH PLAIN {}", plain_auth("abc@example.org", PASSWORD)),
        538,
    )
    .await;
    c.expect("RCPT TO:<a@example.org>", 530).await;
    c.expect("DATA", 530).await;
    c.expect("NOOP", 250).await;
    c.expect("RSET", 250).await;
    c.expect("HELO client.test", 250).await;
    let r = c.expect("QUIT", 221).await;
    assert_eq!(r.text(), "221 2.0.0 Bye");
    assert!(c.closed().await);
    // Nothing was created by the refused AUTH.
    assert_eq!(h.relay.store.account_count().unwrap(), 0);
}

#[tokio::test]
async fn starttls_ehlo_offers_auth_and_forgets_state() {
    let h = start(Setup::default()).await;
    let (mut c, _) = Client::connect(h.addr).await;
    c.expect("EHLO client.test", 250).await;
    let mut c = c.starttls().await;
    // RFC 3207 §4.2: EHLO again before mail.
    c.expect("MAIL FROM:<a@example.org>", 503).await;
    let ehlo = c.expect("EHLO client.test", 250).await;
    assert!(
        ehlo.lines.iter().any(|l| &l[4..] == "AUTH PLAIN"),
        "{ehlo:?}"
    );
    assert!(!ehlo.text().contains("STARTTLS"), "{ehlo:?}");
    // SUB-1: no AUTH → MAIL/RCPT refused.
    let r = c.expect("MAIL FROM:<a@example.org>", 554).await;
    assert_eq!(r.text(), "554 5.7.1 Access denied");
    let r = c.expect("RCPT TO:<b@example.org>", 554).await;
    assert_eq!(r.text(), "554 5.7.1 Access denied");
    c.expect("STARTTLS", 503).await;
}

#[tokio::test]
async fn implicit_tls_submission() {
    let h = start(Setup {
        implicit_tls: true,
        ..Setup::default()
    })
    .await;
    let address = h.account("alice").await;
    let (mut c, greeting) = Client::connect_tls(h.addr).await;
    assert_eq!(greeting.code, 220);
    let ehlo = c.expect("EHLO client.test", 250).await;
    assert!(!ehlo.text().contains("STARTTLS"));
    assert!(ehlo.text().contains("AUTH PLAIN"));
    c.expect(
        &format!("AUTH PLAIN {}", plain_auth(&address, PASSWORD)),
        235,
    )
    .await;
    let r = send_mail(
        &mut c,
        &address,
        &[&address],
        &encrypted(&address, &address),
    )
    .await;
    assert_eq!(r.text(), "250 2.0.0 Ok: queued");
    assert_eq!(h.inbox(&address).len(), 1);
}

// ---- AUTH ---------------------------------------------------------------------------

#[tokio::test]
async fn auth_plain_continuation_cancel_and_creation() {
    let h = start(Setup::default()).await;
    let (mut c, _) = Client::connect(h.addr).await;
    c.expect("EHLO x", 250).await;
    let mut c = c.starttls().await;
    c.expect("EHLO x", 250).await;
    // RFC 4954 §4: `*` cancels.
    let r = c.expect("AUTH PLAIN", 334).await;
    assert_eq!(r.text(), "334 ");
    c.expect("*", 501).await;
    c.expect("AUTH LOGIN", 504).await;
    // Continuation with an authzid equal to the authcid; ACC-6 creates the account.
    c.expect("AUTH PLAIN", 334).await;
    let creds = base64::engine::general_purpose::STANDARD
        .encode(format!("newuser@{DOMAIN}\0newuser@{DOMAIN}\0{PASSWORD}"));
    let r = c.expect(&creds, 235).await;
    assert_eq!(r.text(), "235 2.7.0 Authentication successful");
    assert!(
        h.relay
            .store
            .account("newuser@example.org")
            .unwrap()
            .is_some()
    );
    c.expect(
        &format!("AUTH PLAIN {}", plain_auth("x@example.org", PASSWORD)),
        503,
    )
    .await;
}

#[tokio::test]
async fn three_auth_failures_close_the_connection() {
    let h = start(Setup::default()).await;
    let address = h.account("carol").await;
    let (mut c, _) = Client::connect(h.addr).await;
    c.expect("EHLO x", 250).await;
    let mut c = c.starttls().await;
    c.expect("EHLO x", 250).await;
    // A foreign authzid fails even with the right password.
    let other = base64::engine::general_purpose::STANDARD
        .encode(format!("dave@{DOMAIN}\0{address}\0{PASSWORD}"));
    let r = c.expect(&format!("AUTH PLAIN {other}"), 535).await;
    assert_eq!(r.text(), "535 5.7.8 Authentication credentials invalid");
    c.expect(
        &format!("AUTH PLAIN {}", plain_auth(&address, "wrong-password")),
        535,
    )
    .await;
    c.send(format!("AUTH PLAIN {}\r\n", plain_auth(&address, "wrong-again!")).as_bytes())
        .await;
    assert_eq!(c.reply().await.code, 535);
    assert_eq!(c.reply().await.code, 421);
    assert!(c.closed().await);
}

// ---- submission rules ---------------------------------------------------------------

#[tokio::test]
async fn encrypted_message_is_stored_cleaned_and_queued() {
    let h = start(Setup::default()).await;
    let bob = h.account("bob").await;
    let (mut c, alice) = logged_in(&h, "alice").await;
    let wake = h.relay.events.subscribe(&bob);
    let mut msg = b"Received: from evil (1.2.3.4)\r\nX-Mailer: x\r\n".to_vec();
    msg.extend(encrypted(&alice, &bob));
    c.expect(
        &format!("MAIL FROM:<{alice}> BODY=8BITMIME SMTPUTF8 SIZE=1000"),
        250,
    )
    .await;
    // SUB-14: `+ext` goes to the account.
    c.expect("RCPT TO:<bob+chat@example.org>", 250).await;
    c.expect("RCPT TO:<friend@remote.example>", 250).await;
    // The same account twice gets one copy.
    c.expect("RCPT TO:<Bob@example.org>", 250).await;
    c.expect("DATA", 354).await;
    c.send(&stuffed(&msg)).await;
    let r = c.reply().await;
    assert_eq!(r.text(), "250 2.0.0 Ok: queued");
    assert!(wake.has_changed().unwrap(), "IDLE woken");
    let inbox = h.inbox(&bob);
    assert_eq!(inbox.len(), 1);
    let stored = &inbox[0];
    let text = String::from_utf8_lossy(stored);
    // SUB-10, SUB-11.
    assert!(text.contains("Subject: [...]\r\n"), "{text}");
    assert!(!text.contains("secret subject"));
    assert!(!has_header(stored, "Received"), "{text}");
    assert!(!has_header(stored, "X-Mailer"));
    assert!(!text.contains("127.0.0.1"));
    assert!(text.contains("-----BEGIN PGP MESSAGE-----\r\n"));
    let queue = h.relay.store.queued().unwrap();
    assert_eq!(queue.len(), 1);
    assert_eq!(
        queue[0].recipients,
        vec!["friend@remote.example".to_string()]
    );
    assert_eq!(queue[0].sender, alice);
    let queued = h.relay.store.queued_body(queue[0].id).unwrap().unwrap();
    assert_eq!(&queued, stored, "one body for local and remote");
    // The sender's own INBOX got nothing.
    assert!(h.inbox(&alice).is_empty());
}

/// Issue 18: a session logged in before its account was deleted sends nothing more.
#[tokio::test]
async fn a_deleted_account_sends_no_more() {
    let h = start(Setup::default()).await;
    let (mut c, alice) = logged_in(&h, "alice").await;
    c.expect(&format!("MAIL FROM:<{alice}>"), 250).await;
    c.expect("RSET", 250).await;
    h.relay.store.delete_account(&alice).await.unwrap();
    let r = c.expect(&format!("MAIL FROM:<{alice}>"), 421).await;
    assert!(r.text().contains("account was removed"), "{r:?}");
    assert!(c.closed().await, "the session ends");
    // Another account's session is not touched.
    let (mut other, _) = logged_in(&h, "carol").await;
    other.expect("MAIL FROM:<carol@example.org>", 250).await;
}

#[tokio::test]
async fn sender_checks() {
    let h = start(Setup::default()).await;
    let (mut c, alice) = logged_in(&h, "alice").await;
    // SUB-3 at MAIL.
    let r = c.expect("MAIL FROM:<noatsign>", 500).await;
    assert!(r.text().starts_with("500 Invalid from address"), "{r:?}");
    let r = c.expect("MAIL FROM:<a@b@example.org>", 500).await;
    assert!(r.text().starts_with("500 Invalid from address"), "{r:?}");
    // SUB-2: answered at RCPT.
    c.expect("MAIL FROM:<mallory@example.org>", 250).await;
    let r = c.expect(&format!("RCPT TO:<{alice}>"), 553).await;
    assert!(
        r.text()
            .starts_with("553 5.7.1 <mallory@example.org>: Sender address rejected"),
        "{r:?}"
    );
    c.expect("DATA", 503).await;
    c.expect("RSET", 250).await;
    // Unknown local recipient.
    c.expect(&format!("MAIL FROM:<{alice}>"), 250).await;
    let r = c.expect("RCPT TO:<nobody@EXAMPLE.org>", 550).await;
    assert_eq!(
        r.text(),
        "550 5.1.1 <nobody@EXAMPLE.org>: Recipient address rejected: User unknown"
    );
    c.expect("MAIL FROM:<x@example.org>", 503).await;
}

#[tokio::test]
async fn data_verdicts() {
    let h = start(Setup::default()).await;
    let bob = h.account("bob").await;
    let (mut c, alice) = logged_in(&h, "alice").await;
    // SUB-9: cleartext.
    let r = send_mail(&mut c, &alice, &[&bob], &plain_message(&alice, &bob)).await;
    assert_eq!(r.text(), "523 Encryption Needed: Invalid Unencrypted Mail");
    // SUB-6: From ≠ MAIL FROM.
    let r = send_mail(&mut c, &alice, &[&bob], &encrypted("eve@example.org", &bob)).await;
    assert_eq!(r.code, 500);
    assert!(r.text().starts_with("500 Invalid FROM"), "{r:?}");
    // SUB-6: no From.
    let r = send_mail(&mut c, &alice, &[&bob], b"Subject: x\r\n\r\nbody\r\n").await;
    assert!(r.text().starts_with("500 Invalid FROM header:"), "{r:?}");
    // SUB-6: unparsable: two Content-Type fields (readers would split it differently).
    let text = String::from_utf8(encrypted(&alice, &bob))
        .unwrap()
        .replacen(
            "MIME-Version: 1.0\r\n",
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=x\r\n",
            1,
        );
    let r = send_mail(&mut c, &alice, &[&bob], text.as_bytes()).await;
    assert_eq!(
        r.text(),
        "500 Failed to parse message: duplicate Content-Type header",
        "{r:?}"
    );
    assert!(h.inbox(&bob).is_empty());
    // The session goes on.
    let r = send_mail(&mut c, &alice, &[&bob], &encrypted(&alice, &bob)).await;
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(h.inbox(&bob).len(), 1);
}

#[tokio::test]
async fn rate_limit_after_burst() {
    let h = start(Setup {
        burst: 3,
        ..Setup::default()
    })
    .await;
    let bob = h.account("bob").await;
    let (mut c, alice) = logged_in(&h, "alice").await;
    for _ in 0..3 {
        let r = send_mail(&mut c, &alice, &[&bob], &encrypted(&alice, &bob)).await;
        assert_eq!(r.code, 250, "{r:?}");
    }
    c.expect(&format!("MAIL FROM:<{alice}>"), 250).await;
    let r = c.expect(&format!("RCPT TO:<{bob}>"), 450).await;
    assert_eq!(
        r.text(),
        format!("450 4.7.1: Too much mail from <{alice}>, slow down")
    );
    assert_eq!(h.inbox(&bob).len(), 3);
}

#[tokio::test]
async fn recipient_limit_and_pipelining() {
    let h = start(Setup::default()).await;
    let (mut c, alice) = logged_in(&h, "alice").await;
    // PIPELINING: the whole transaction in one write.
    let mut batch = format!("MAIL FROM:<{alice}>\r\n");
    for i in 0..1001 {
        batch.push_str(&format!("RCPT TO:<r{i}@remote.example>\r\n"));
    }
    batch.push_str("RSET\r\nNOOP\r\n");
    c.send(batch.as_bytes()).await;
    assert_eq!(c.reply().await.code, 250);
    for i in 0..1000 {
        let r = c.reply().await;
        assert_eq!(r.code, 250, "rcpt {i}: {r:?}");
    }
    let r = c.reply().await;
    assert_eq!(r.text(), "452 4.5.3 Error: too many recipients");
    assert_eq!(c.reply().await.code, 250);
    assert_eq!(c.reply().await.code, 250);
}

#[tokio::test]
async fn pipelined_transaction_with_data() {
    let h = start(Setup::default()).await;
    let bob = h.account("bob").await;
    let (mut c, alice) = logged_in(&h, "alice").await;
    let batch =
        format!("MAIL FROM:<{alice}>\r\nRCPT TO:<{bob}>\r\nRCPT TO:<nobody@{DOMAIN}>\r\nDATA\r\n");
    c.send(batch.as_bytes()).await;
    assert_eq!(c.reply().await.code, 250);
    assert_eq!(c.reply().await.code, 250);
    assert_eq!(c.reply().await.code, 550);
    assert_eq!(c.reply().await.code, 354);
    let mut rest = stuffed(&encrypted(&alice, &bob));
    rest.extend_from_slice(b"QUIT\r\n");
    c.send(&rest).await;
    assert_eq!(c.reply().await.code, 250);
    assert_eq!(c.reply().await.code, 221);
    assert_eq!(h.inbox(&bob).len(), 1);
}

#[tokio::test]
async fn size_limits() {
    let h = start(Setup::default()).await;
    let bob = h.account("bob").await;
    let (mut c, alice) = logged_in(&h, "alice").await;
    let r = c
        .expect(&format!("MAIL FROM:<{alice}> SIZE={}", MAX_SIZE + 1), 552)
        .await;
    assert_eq!(r.text(), "552 5.3.4 Message size exceeds fixed limit");
    c.expect(&format!("MAIL FROM:<{alice}>"), 250).await;
    c.expect(&format!("RCPT TO:<{bob}>"), 250).await;
    c.expect("DATA", 354).await;
    let mut big = encrypted(&alice, &bob);
    while big.len() as u64 <= MAX_SIZE {
        big.extend_from_slice(&[b'x'; 999]);
        big.extend_from_slice(b"\r\n");
    }
    c.send(&stuffed(&big)).await;
    let r = c.reply().await;
    assert_eq!(r.text(), "552 5.3.4 Message size exceeds fixed limit");
    // Read to the end: the session continues in step.
    c.expect("NOOP", 250).await;
    assert!(h.inbox(&bob).is_empty());
    assert!(h.relay.store.queued().unwrap().is_empty());
}

#[tokio::test]
async fn dot_stuffing_round_trips() {
    let h = start(Setup::default()).await;
    let bob = h.account("bob").await;
    let (mut c, alice) = logged_in(&h, "alice").await;
    let _ = bob;
    let mut msg = setup_message_start(&alice);
    msg.extend_from_slice(b".leading dot\r\n..two dots\r\n.");
    msg.extend_from_slice(SETUP_END);
    let r = send_mail(&mut c, &alice, &[&alice], &msg).await;
    assert_eq!(r.code, 250, "{r:?}");
    let stored = &h.inbox(&alice)[0];
    assert!(
        stored.ends_with(b"\r\n.leading dot\r\n..two dots\r\n.\r\n--asm--\r\n"),
        "{}",
        String::from_utf8_lossy(stored)
    );
}

#[tokio::test]
async fn only_crlf_dot_crlf_ends_data() {
    let h = start(Setup::default()).await;
    let bob = h.account("bob").await;
    let (mut c, alice) = logged_in(&h, "alice").await;
    let _ = bob;
    c.expect(&format!("MAIL FROM:<{alice}>"), 250).await;
    c.expect(&format!("RCPT TO:<{alice}>"), 250).await;
    c.expect("DATA", 354).await;
    let mut data = setup_message_start(&alice);
    // Smuggling attempts: `<LF>.<CR><LF>` and `.<LF>` are content, not the end.
    data.extend_from_slice(b"x\n.\r\nRSET\r\n.\nNOOP");
    data.extend_from_slice(SETUP_END);
    data.extend_from_slice(b".\r\n");
    c.send(&data).await;
    let r = c.reply().await;
    assert_eq!(r.text(), "250 2.0.0 Ok: queued");
    let stored = &h.inbox(&alice)[0];
    assert!(
        stored.ends_with(b"x\r\n\r\nRSET\r\n\r\nNOOP\r\n--asm--\r\n"),
        "{:?}",
        String::from_utf8_lossy(&stored[stored.len() - 40..])
    );
    c.expect("NOOP", 250).await;
}

#[tokio::test]
async fn long_data_lines_keep_their_bytes() {
    let h = start(Setup::default()).await;
    let bob = h.account("bob").await;
    let (mut c, alice) = logged_in(&h, "alice").await;
    let _ = bob;
    let mut msg = setup_message_start(&alice);
    // The CR of this line is the last byte of a 64 KiB read segment, its LF the first
    // of the next: still one CRLF, and the following stuffed line is unstuffed.
    let long = vec![b'x'; 64 * 1024 - 1];
    msg.extend_from_slice(&long);
    msg.extend_from_slice(b"\r\n.dot");
    msg.extend_from_slice(SETUP_END);
    let r = send_mail(&mut c, &alice, &[&alice], &msg).await;
    assert_eq!(r.code, 250, "{r:?}");
    let stored = &h.inbox(&alice)[0];
    let mut tail = long.clone();
    tail.extend_from_slice(b"\r\n.dot\r\n--asm--\r\n");
    assert!(stored.ends_with(&tail), "long line changed");
}

// ---- line discipline ----------------------------------------------------------------

#[tokio::test]
async fn bare_lf_nul_and_overlong_lines() {
    let h = start(Setup::default()).await;
    let (mut c, _) = Client::connect(h.addr).await;
    // Bare LF is accepted as a command terminator.
    c.send(b"NOOP\n").await;
    assert_eq!(c.reply().await.code, 250);
    c.send(b"NO\0OP\r\n").await;
    let r = c.reply().await;
    assert_eq!(r.code, 500, "{r:?}");
    let long = format!("NOOP {}\r\n", "x".repeat(5000));
    c.send(long.as_bytes()).await;
    let r = c.reply().await;
    assert_eq!(r.text(), "500 5.5.2 Line too long");
    c.expect("NOOP", 250).await;
    let r = c.expect("FROB", 500).await;
    assert_eq!(r.text(), "500 5.5.2 Error: command not recognized");
}

#[tokio::test]
async fn out_of_order_and_too_many_errors() {
    let h = start(Setup {
        implicit_tls: true,
        ..Setup::default()
    })
    .await;
    let (mut c, _) = Client::connect_tls(h.addr).await;
    c.expect("MAIL FROM:<a@example.org>", 503).await;
    c.expect("EHLO x", 250).await;
    c.expect("HELP", 214).await;
    let r = c.expect("VRFY anybody", 252).await;
    assert_eq!(
        r.text(),
        "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery"
    );
    c.expect("BDAT 10 LAST", 502).await;
    let mut errors = String::new();
    // Exactly as many as close the connection: unread input would turn the close
    // into a reset that can swallow the 421.
    for _ in 0..18 {
        errors.push_str("BOGUS\r\n");
    }
    c.send(errors.as_bytes()).await;
    let mut codes = Vec::new();
    loop {
        let r = c.reply().await;
        codes.push(r.code);
        if r.code == 421 {
            break;
        }
        assert!(codes.len() < 30, "{codes:?}");
    }
    // 2 errors so far (503, 502) + 18 BOGUS = 20.
    assert_eq!(codes.len(), 19, "{codes:?}");
    assert!(c.closed().await);
}

#[tokio::test]
async fn idle_timeout_closes() {
    let h = start(Setup {
        limits: Limits {
            idle: Duration::from_millis(300),
            ..Limits::default()
        },
        ..Setup::default()
    })
    .await;
    let (mut c, _) = Client::connect(h.addr).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = c.reply().await;
    assert_eq!(r.code, 421, "{r:?}");
    assert!(c.closed().await);
}

#[tokio::test]
async fn garbage_instead_of_handshake_closes_only_that_connection() {
    let h = start(Setup::default()).await;
    let (mut c, _) = Client::connect(h.addr).await;
    c.expect("EHLO x", 250).await;
    c.expect("STARTTLS", 220).await;
    c.send(b"this is not a TLS ClientHello\r\n\r\n\r\n").await;
    assert!(c.closed().await);
    let (mut other, greeting) = Client::connect(h.addr).await;
    assert_eq!(greeting.code, 220);
    other.expect("NOOP", 250).await;
}

#[tokio::test]
async fn plaintext_pipelined_after_starttls_is_discarded() {
    let h = start(Setup::default()).await;
    let (mut c, _) = Client::connect(h.addr).await;
    c.expect("EHLO x", 250).await;
    // RFC 3207 §4.2: the injected command must not run inside TLS.
    c.send(b"STARTTLS\r\nMAIL FROM:<injected@example.org>\r\n")
        .await;
    let r = c.reply().await;
    assert_eq!(r.code, 220);
    let inner = c.io.into_inner();
    let mut c = Client {
        io: BufReader::new(tls_over(inner).await),
    };
    // The first reply inside TLS answers our command, not the injected MAIL.
    let r = c.expect("NOOP", 250).await;
    assert_eq!(r.text(), "250 2.0.0 Ok");
    c.expect("EHLO x", 250).await;
}

#[tokio::test]
async fn client_vanishing_mid_data_stores_nothing() {
    let h = start(Setup::default()).await;
    let bob = h.account("bob").await;
    let (mut c, alice) = logged_in(&h, "alice").await;
    c.expect(&format!("MAIL FROM:<{alice}>"), 250).await;
    c.expect(&format!("RCPT TO:<{bob}>"), 250).await;
    c.expect("RCPT TO:<far@remote.example>", 250).await;
    c.expect("DATA", 354).await;
    let msg = encrypted(&alice, &bob);
    c.send(&msg[..msg.len() / 2]).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(h.inbox(&bob).is_empty());
    assert!(h.relay.store.queued().unwrap().is_empty());
    // The relay still serves.
    let (_, greeting) = Client::connect(h.addr).await;
    assert_eq!(greeting.code, 220);
}

// ---- port 25 ------------------------------------------------------------------------

async fn mx_session(h: &Harness) -> Client {
    let (mut c, _) = Client::connect(h.addr).await;
    let ehlo = c.expect("EHLO peer.example", 250).await;
    assert!(!ehlo.text().contains("AUTH"));
    // IN-1.
    c.expect("MAIL FROM:<a@peer.example>", 530).await;
    c.expect("VRFY x", 530).await;
    let mut c = c.starttls().await;
    let ehlo = c.expect("EHLO peer.example", 250).await;
    assert!(!ehlo.text().contains("AUTH"), "no AUTH on 25: {ehlo:?}");
    assert!(ehlo.text().contains("SIZE 100000"));
    c
}

#[tokio::test]
async fn mx_recipients_and_origin() {
    let h = start(Setup {
        mode: Mode::Mx,
        ..Setup::default()
    })
    .await;
    let bob = h.account("bob").await;
    let mut c = mx_session(&h).await;
    c.expect(&format!("AUTH PLAIN {}", plain_auth(&bob, PASSWORD)), 503)
        .await;
    c.expect("VRFY bob", 252).await;
    c.expect("MAIL FROM:<a@peer.example>", 250).await;
    // IN-2.
    let r = c.expect("RCPT TO:<x@elsewhere.example>", 554).await;
    assert_eq!(
        r.text(),
        "554 5.7.1 <x@elsewhere.example>: Relay access denied"
    );
    c.expect("RCPT TO:<nobody@example.org>", 550).await;
    c.expect(&format!("RCPT TO:<{bob}>"), 250).await;
    c.expect("DATA", 354).await;
    // IN-4d: cleartext to an enforcing account.
    c.send(&stuffed(&plain_message("a@peer.example", &bob)))
        .await;
    let r = c.reply().await;
    assert_eq!(r.text(), "523 Encryption Needed: Invalid Unencrypted Mail");
    // IN-4e: encrypted but unsigned.
    let r = send_mail(
        &mut c,
        "a@peer.example",
        &[&bob],
        &encrypted("a@peer.example", &bob),
    )
    .await;
    assert_eq!(r.text(), "554 5.7.1 No DKIM signature found");
    assert!(h.inbox(&bob).is_empty());
}

#[tokio::test]
async fn mx_ip_literal_origin() {
    let h = start(Setup {
        mode: Mode::Mx,
        mail_domain: "127.0.0.1",
        ..Setup::default()
    })
    .await;
    let bob = h.account("bob").await;
    assert_eq!(bob, "bob@[127.0.0.1]");
    let mut c = mx_session(&h).await;
    // IN-4e: a literal that is not the client.
    let r = send_mail(
        &mut c,
        "x@[10.1.2.3]",
        &[&bob],
        &encrypted("x@[10.1.2.3]", &bob),
    )
    .await;
    assert_eq!(
        r.text(),
        "500 Invalid FROM domain literal: 10.1.2.3 does not match origin IP 127.0.0.1"
    );
    // The client's own literal passes; IN-7 strips trace and DKIM headers.
    let mut msg =
        b"Received: from somewhere\r\nDKIM-Signature: v=1; d=x\r\nAuthentication-Results: x\r\n"
            .to_vec();
    msg.extend(encrypted("x@[127.0.0.1]", &bob));
    let r = send_mail(&mut c, "x@[127.0.0.1]", &[&bob], &msg).await;
    assert_eq!(r.text(), "250 2.0.0 Ok: queued");
    let inbox = h.inbox(&bob);
    assert_eq!(inbox.len(), 1);
    for name in ["Received", "DKIM-Signature", "Authentication-Results"] {
        assert!(!has_header(&inbox[0], name), "{name} kept");
    }
    // Inbound never queues outbound mail.
    assert!(h.relay.store.queued().unwrap().is_empty());
}

/// TLS-2: STARTTLS on 25 accepts TLS 1.2; submission insists on TLS 1.3.
#[tokio::test]
async fn starttls_versions_per_port() {
    for (mode, tls12_ok) in [(Mode::Mx, true), (Mode::Submission, false)] {
        let h = start(Setup {
            mode,
            ..Setup::default()
        })
        .await;
        let (mut c, _) = Client::connect(h.addr).await;
        c.expect("EHLO x", 250).await;
        c.expect("STARTTLS", 220).await;
        let inner = c.io.into_inner();
        let name = ServerName::try_from(DOMAIN).unwrap();
        let tls = tokio::time::timeout(
            STEP,
            connector_for(&rustls::version::TLS12).connect(name, inner),
        )
        .await
        .expect("handshake in time");
        assert_eq!(tls.is_ok(), tls12_ok, "{mode:?}");
        if let Ok(tls) = tls {
            let mut c = Client {
                io: BufReader::new(Box::new(tls)),
            };
            c.expect("EHLO x", 250).await;
        }
    }
}

// ---- quota (QUOTA-1..3) -------------------------------------------------------------

const MIB: u64 = 1024 * 1024;

impl Harness {
    /// Store a message of `size` bytes for `account` directly, arrived at `received`.
    async fn prefill(&self, account: &str, size: u64, received: u64) {
        let got = self
            .relay
            .store
            .deliver(crate::store::Delivery {
                sender: String::new(),
                local: vec![account.to_string()],
                remote: vec![],
                body: crate::message::Parsed::legacy(vec![b'x'; size as usize]),
                received,
            })
            .await
            .unwrap();
        assert_eq!(got, [account]);
    }
}

fn quota_reply(rcpt: &str) -> String {
    format!(
        "552 5.2.2 <{rcpt}>: Recipient address rejected: Quota exceeded (mailbox for user is full)"
    )
}

/// QUOTA-2: refused permanently at RCPT when full or when SIZE= would overflow, at DATA
/// when the message itself would; other recipients still get it.
#[tokio::test]
async fn quota_refusals_at_rcpt_and_data() {
    let h = start(Setup {
        max_mailbox_size: Some(MIB),
        ..Setup::default()
    })
    .await;
    let bob = h.account("bob").await;
    let carol = h.account("carol").await;
    let now = h.relay.clock.unix_now();
    // 50 bytes of room left: less than any message.
    h.prefill(&bob, MIB - 50, now).await;
    let (mut c, alice) = logged_in(&h, "alice").await;

    // Two recipients, one without room: carol gets it, bob's mailbox misses it.
    let r = send_mail(&mut c, &alice, &[&bob, &carol], &encrypted(&alice, &carol)).await;
    assert_eq!(r.text(), "250 2.0.0 Ok: queued");
    assert_eq!(h.inbox(&carol).len(), 1);
    assert_eq!(h.inbox(&bob).len(), 1, "only the prefilled message");

    // Only bob: the commit refuses it, the answer comes at DATA.
    let r = send_mail(&mut c, &alice, &[&bob], &encrypted(&alice, &bob)).await;
    assert_eq!(r.text(), quota_reply(&bob));
    assert_eq!(h.inbox(&bob).len(), 1);

    // SIZE= announces more than the room left: refused at RCPT, as the client wrote it.
    c.expect(&format!("MAIL FROM:<{alice}> SIZE=51"), 250).await;
    let r = c.expect("RCPT TO:<Bob+tag@example.org>", 552).await;
    assert_eq!(r.text(), quota_reply("Bob+tag@example.org"));
    c.expect("RSET", 250).await;
    // SIZE= that fits: accepted at RCPT (the message then decides at DATA).
    c.expect(&format!("MAIL FROM:<{alice}> SIZE=50"), 250).await;
    c.expect(&format!("RCPT TO:<{bob}>"), 250).await;
    c.expect("RSET", 250).await;

    // Exactly full: refused at RCPT even without SIZE=.
    h.prefill(&bob, 50, now).await;
    assert_eq!(h.relay.store.usage(&bob).unwrap(), MIB);
    c.expect(&format!("MAIL FROM:<{alice}>"), 250).await;
    let r = c.expect(&format!("RCPT TO:<{bob}>"), 552).await;
    assert_eq!(r.text(), quota_reply(&bob));
    // The transaction goes on for others.
    c.expect(&format!("RCPT TO:<{carol}>"), 250).await;
    c.expect("DATA", 354).await;
    c.send(&stuffed(&encrypted(&alice, &carol))).await;
    assert_eq!(c.reply().await.text(), "250 2.0.0 Ok: queued");
    assert_eq!(h.inbox(&carol).len(), 2);
    assert_eq!(h.inbox(&bob).len(), 2);
}

/// QUOTA-3: a delivery that takes usage past 75 % trims the oldest messages to ≤ 70 %,
/// never those younger than 24 h.
#[tokio::test]
async fn quota_trim_after_smtp_delivery() {
    let h = start(Setup {
        max_mailbox_size: Some(10 * MIB),
        ..Setup::default()
    })
    .await;
    let bob = h.account("bob").await;
    let now = h.relay.clock.unix_now();
    // Old: 4 × 1 MiB, 5 to 2 days old. Young (1 h): 3 MiB + 840000 B.
    // 8180032 bytes: over 75 % (7864320) but nothing checked it yet.
    for days in [5, 4, 3, 2] {
        h.prefill(&bob, MIB, now - days * 86_400).await;
    }
    for _ in 0..3 {
        h.prefill(&bob, MIB, now - 3600).await;
    }
    h.prefill(&bob, 840_000, now - 3600).await;
    let before: Vec<u32> = h
        .relay
        .store
        .messages(&bob, "INBOX")
        .unwrap()
        .1
        .iter()
        .map(|m| m.uid)
        .collect();
    assert_eq!(before, (1..=8).collect::<Vec<u32>>());

    let (mut c, alice) = logged_in(&h, "alice").await;
    let r = send_mail(&mut c, &alice, &[&bob], &encrypted(&alice, &bob)).await;
    assert_eq!(r.text(), "250 2.0.0 Ok: queued");
    // Minus the oldest 1 MiB: ≤ 7 MiB (7340032). Everything else stays. The trim is a
    // subscriber of the delivery (IN-8), after the `250`: wait for it (bounded).
    let uids = || -> Vec<u32> {
        h.relay
            .store
            .messages(&bob, "INBOX")
            .unwrap()
            .1
            .iter()
            .map(|m| m.uid)
            .collect()
    };
    for _ in 0..500 {
        if uids().first() != Some(&1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(uids(), (2..=9).collect::<Vec<u32>>());
    let usage = h.relay.store.usage(&bob).unwrap();
    assert!(usage <= 7 * MIB, "{usage}");

    // Now under 75 %: another delivery trims nothing (the subscriber's trim, run here
    // on the same state, finds nothing to remove).
    let r = send_mail(&mut c, &alice, &[&bob], &encrypted(&alice, &bob)).await;
    assert_eq!(r.text(), "250 2.0.0 Ok: queued");
    assert_eq!(
        crate::expire::trim_after_delivery(&h.relay.expire_handles(), &bob)
            .await
            .unwrap(),
        0
    );
    assert_eq!(h.inbox(&bob).len(), 9);
}

/// The stand-alone fallback message (used when ../shared/fixtures is absent) must pass
/// the encryption gate, or the repository's tests fail without ../shared.
#[test]
fn inline_fallback_message_is_encrypted() {
    use crate::policy::gate::{self, Direction};
    let text = inline_encrypted()
        .replace("{from_addr}", "a@example.org")
        .replace("{to_addr}", "b@example.org")
        .replace("{subject}", "s");
    let msg = crate::message::Parsed::parse(text.into_bytes()).expect("parses");
    assert!(gate::is_encrypted(msg.view(), Direction::Outgoing));
}

// ---- deadlines (issue 13) -----------------------------------------------------------

/// Send `bytes` one at a time, `every` apart, until the server answers; the reply, or
/// `None` when all were sent without one.
async fn trickle(c: &mut Client, bytes: &[u8], every: Duration) -> Option<Reply> {
    for b in bytes {
        if c.io.get_mut().write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(every).await;
        if !c.io.buffer().is_empty()
            || tokio::time::timeout(Duration::ZERO, c.io.fill_buf())
                .await
                .is_ok_and(|r| r.is_ok_and(|b| !b.is_empty()))
        {
            return Some(c.reply().await);
        }
    }
    None
}

#[tokio::test]
async fn a_trickled_command_line_is_cut_at_its_deadline() {
    // A byte every 100 ms keeps a per-read timeout of 500 ms happy forever; the line
    // deadline ends it (and 20 s of trickle, 200 bytes, would be far beyond it).
    let h = start(Setup {
        limits: Limits {
            idle: Duration::from_millis(500),
            ..Limits::default()
        },
        ..Setup::default()
    })
    .await;
    let (mut c, _) = Client::connect(h.addr).await;
    let r = trickle(&mut c, &[b'x'; 200], Duration::from_millis(100)).await;
    let r = r.expect("cut before the trickle ended");
    assert_eq!(r.code, 421, "{r:?}");
    assert!(c.closed().await);
}

#[tokio::test]
async fn an_unauthenticated_session_has_a_deadline() {
    let h = start(Setup {
        limits: Limits {
            idle: Duration::from_secs(10),
            unauthenticated: Duration::from_secs(1),
            ..Limits::default()
        },
        ..Setup::default()
    })
    .await;
    // Whole commands, answered at once, for longer than the session deadline.
    let (mut c, _) = Client::connect(h.addr).await;
    let mut cut = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = c.cmd("NOOP").await;
        if r.code != 250 {
            cut = Some(r);
            break;
        }
    }
    let r = cut.expect("cut within 100 NOOPs (10 s)");
    assert_eq!(r.code, 421, "{r:?}");
    // After AUTH the session deadline no longer applies.
    let (mut c, _) = logged_in(&h, "alice").await;
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.expect("NOOP", 250).await;
    }
}

#[tokio::test]
async fn data_below_the_minimum_rate_is_cut_and_above_it_is_read() {
    let h = start(Setup {
        limits: Limits {
            idle: Duration::from_millis(500),
            min_data_rate: 500,
            ..Limits::default()
        },
        ..Setup::default()
    })
    .await;
    let (mut c, address) = logged_in(&h, "bob").await;
    c.expect(&format!("MAIL FROM:<{address}>"), 250).await;
    c.expect(&format!("RCPT TO:<{address}>"), 250).await;
    c.expect("DATA", 354).await;
    // 10 bytes per 100 ms = 100 bytes/s, a fifth of the minimum.
    let slow = [b"0123456789".as_slice(); 300].concat();
    let mut cut = None;
    for chunk in slow.chunks(10) {
        c.send(chunk).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if tokio::time::timeout(Duration::ZERO, c.io.fill_buf())
            .await
            .is_ok_and(|r| r.is_ok_and(|b| !b.is_empty()))
        {
            cut = Some(c.reply().await);
            break;
        }
    }
    let r = cut.expect("cut before 3000 bytes at 100 bytes/s (30 s)");
    assert_eq!(r.code, 421, "{r:?}");
    // 2000 bytes per 100 ms (20 000 bytes/s) for 2 s, four times the 500 ms budget.
    let (mut c, address) = logged_in(&h, "carol").await;
    c.expect(&format!("MAIL FROM:<{address}>"), 250).await;
    c.expect(&format!("RCPT TO:<{address}>"), 250).await;
    c.expect("DATA", 354).await;
    // A plain message with a long body, sent in pieces; the verdict after its end (the
    // gate refuses cleartext) shows that all of it was read.
    let head = format!("From: {address}\r\nTo: {address}\r\nSubject: big\r\n\r\n");
    c.send(head.as_bytes()).await;
    let line = format!("{}\r\n", "b".repeat(98));
    for _ in 0..20 {
        c.send(line.repeat(20).as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.send(b".\r\n").await;
    let r = c.reply().await;
    assert_ne!(r.code / 100, 4, "{r:?}");
}
