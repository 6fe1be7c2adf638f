//! Session tests: a real `Relay` on a temporary directory, driven over an in-memory
//! stream (`serve_stream`, marked secure or not) or loopback TCP with STARTTLS.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::Config;
use crate::server::Relay;
use crate::store::Delivery;

const DOMAIN: &str = "relay.test";
const PASSWORD: &str = "correct-horse-battery";
const MAX_MESSAGE: u64 = 100_000;

fn config(dir: &Path) -> Config {
    let mut c = crate::testing::config(dir, DOMAIN);
    c.max_message_size = MAX_MESSAGE;
    c.username_min_length = 3;
    c.username_max_length = 20;
    c.privacy_mail = "privacy@relay.test".into();
    c
}

struct Harness {
    relay: Arc<Relay>,
    _dir: tempfile::TempDir,
}

fn harness() -> Harness {
    harness_with(|_| {})
}

fn harness_with(tweak: impl FnOnce(&mut Config)) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path());
    tweak(&mut config);
    let relay = Relay::open(config).expect("relay");
    Harness { relay, _dir: dir }
}

/// A scripted client: sends lines, reads responses (with literals) until a tagged one.
struct Client<S> {
    io: S,
    buf: Vec<u8>,
}

const STEP: Duration = Duration::from_secs(10);

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    async fn fill(&mut self) -> bool {
        let mut tmp = vec![0u8; 65536];
        match tokio::time::timeout(STEP, self.io.read(&mut tmp)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
            Err(_) => panic!(
                "timed out waiting for the server; buffered: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// One response line, with the bytes of any literals it carries.
    async fn line(&mut self) -> Option<String> {
        let mut out = Vec::new();
        loop {
            while !self.buf.contains(&b'\n') {
                if !self.fill().await {
                    return None;
                }
            }
            let nl = self.buf.iter().position(|&b| b == b'\n').unwrap();
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            out.extend_from_slice(&line);
            match crate::imap::wire::literal_announcement(&line) {
                Some((n, _)) => {
                    while self.buf.len() < n as usize {
                        assert!(self.fill().await, "eof inside a literal");
                    }
                    out.extend(self.buf.drain(..n as usize));
                }
                None => return Some(String::from_utf8_lossy(&out).into_owned()),
            }
        }
    }

    async fn send(&mut self, data: &[u8]) {
        self.io.write_all(data).await.unwrap();
        self.io.flush().await.unwrap();
    }

    /// Everything up to and including the tagged reply of `tag`.
    async fn until(&mut self, tag: &str) -> String {
        let mut all = String::new();
        loop {
            let line = self
                .line()
                .await
                .unwrap_or_else(|| panic!("eof before {tag}; got {all}"));
            all.push_str(&line);
            if line.starts_with(&format!("{tag} ")) {
                return all;
            }
        }
    }

    async fn cmd(&mut self, tag: &str, text: &str) -> String {
        self.send(format!("{tag} {text}\r\n").as_bytes()).await;
        self.until(tag).await
    }

    /// The last line of a transcript (the tagged reply).
    fn tagged(all: &str) -> &str {
        all.trim_end_matches("\r\n")
            .rsplit("\r\n")
            .next()
            .unwrap_or_default()
    }
}

/// Start a session on an in-memory stream; `secure` marks it as TLS.
async fn connect(h: &Harness, secure: bool) -> (Client<tokio::io::DuplexStream>, String) {
    let (client, server) = tokio::io::duplex(1 << 22);
    let relay = h.relay.clone();
    tokio::spawn(async move { super::serve_stream(relay.imap_handles(), server, secure).await });
    let mut c = Client {
        io: client,
        buf: Vec::new(),
    };
    let greeting = c.line().await.expect("greeting");
    (c, greeting)
}

async fn login(h: &Harness, user: &str) -> Client<tokio::io::DuplexStream> {
    let (mut c, _) = connect(h, true).await;
    let r = c
        .cmd("l", &format!("LOGIN {user}@{DOMAIN} {PASSWORD}"))
        .await;
    assert!(r.starts_with("l OK"), "{r}");
    c
}

#[tokio::test]
async fn capabilities_before_and_after_login() {
    let h = harness();
    let (mut c, greeting) = connect(&h, false).await;
    assert!(
        greeting.starts_with("* OK [CAPABILITY IMAP4rev1 "),
        "{greeting}"
    );
    for cap in ["XCHATMAIL", "XDELTAPUSH", "STARTTLS", "LOGINDISABLED"] {
        assert!(greeting.contains(cap), "{cap} in {greeting}");
    }
    let r = c.cmd("a", "CAPABILITY").await;
    assert!(r.contains("* CAPABILITY IMAP4rev1 "), "{r}");
    assert!(r.contains("XCHATMAIL") && r.contains("XDELTAPUSH") && r.contains("LOGINDISABLED"));
    assert!(r.contains("a OK"));
    // LOGIN and AUTHENTICATE are refused before TLS; nothing is created.
    let r = c
        .cmd("b", &format!("LOGIN alice@{DOMAIN} {PASSWORD}"))
        .await;
    assert!(r.starts_with("b NO [PRIVACYREQUIRED]"), "{r}");
    let r = c
        .cmd(
            "c",
            "AUTHENTICATE PLAIN AGFsaWNlQHJlbGF5LnRlc3QAY29ycmVjdC1ob3JzZS1iYXR0ZXJ5",
        )
        .await;
    assert!(r.starts_with("c NO [PRIVACYREQUIRED]"), "{r}");
    assert!(
        h.relay
            .store
            .account(&format!("alice@{DOMAIN}"))
            .unwrap()
            .is_none()
    );

    let (mut c, greeting) = connect(&h, true).await;
    assert!(greeting.contains("AUTH=PLAIN") && !greeting.contains("LOGINDISABLED"));
    assert!(greeting.contains("XCHATMAIL XDELTAPUSH"), "{greeting}");
    let r = c
        .cmd("a", &format!("LOGIN alice@{DOMAIN} {PASSWORD}"))
        .await;
    assert!(r.starts_with("a OK [CAPABILITY "), "{r}");
    let account = h
        .relay
        .store
        .account(&format!("alice@{DOMAIN}"))
        .unwrap()
        .expect("login creates the account");
    let today = h.relay.clock.unix_now() / 86_400 * 86_400;
    assert_eq!(account.last_login_day, today);
    let r = c.cmd("b", "CAPABILITY").await;
    for cap in [
        "IMAP4rev1",
        "IDLE",
        "MOVE",
        "UIDPLUS",
        "QUOTA",
        "METADATA",
        "ID",
        "ENABLE",
        "LITERAL+",
        "SPECIAL-USE",
        "NAMESPACE",
        "XCHATMAIL",
        "XDELTAPUSH",
    ] {
        assert!(r.contains(&format!(" {cap}")), "{cap} in {r}");
    }
    assert!(!r.contains("COMPRESS"), "{r}");
    let r = c.cmd("c", "ID (\"name\" \"Delta Chat\")").await;
    assert!(r.contains("* ID (") && r.contains("c OK"), "{r}");
    let r = c.cmd("d", "NAMESPACE").await;
    assert!(r.contains("* NAMESPACE ((\"\" \".\")) NIL NIL"), "{r}");
    let r = c.cmd("e", "LOGOUT").await;
    assert!(r.contains("* BYE") && r.contains("e OK"), "{r}");
}

#[tokio::test]
async fn authenticate_plain_and_failed_logins() {
    let h = harness();
    let (mut c, _) = connect(&h, true).await;
    // Continuation form.
    c.send(b"a AUTHENTICATE PLAIN\r\n").await;
    assert_eq!(c.line().await.as_deref(), Some("+ \r\n"));
    use base64::Engine as _;
    let b64 =
        base64::engine::general_purpose::STANDARD.encode(format!("\0bob@{DOMAIN}\0{PASSWORD}"));
    c.send(format!("{b64}\r\n").as_bytes()).await;
    let r = c.until("a").await;
    assert!(r.starts_with("a OK"), "{r}");

    // SASL-IR, wrong password; the third failure ends the connection.
    let (mut c, _) = connect(&h, true).await;
    let bad =
        base64::engine::general_purpose::STANDARD.encode(format!("\0bob@{DOMAIN}\0wrong-password"));
    for (i, tag) in ["x1", "x2", "x3"].iter().enumerate() {
        let r = if i == 1 {
            c.cmd(tag, &format!("LOGIN bob@{DOMAIN} wrong-password"))
                .await
        } else {
            c.cmd(tag, &format!("AUTHENTICATE PLAIN {bad}")).await
        };
        assert!(
            Client::<tokio::io::DuplexStream>::tagged(&r)
                .starts_with(&format!("{tag} NO [AUTHENTICATIONFAILED]")),
            "{r}"
        );
    }
    let bye = c.line().await.expect("bye");
    assert!(bye.starts_with("* BYE"), "{bye}");
    assert!(c.line().await.is_none(), "connection closed");
}

#[tokio::test]
async fn append_then_fetch_exact_bytes() {
    let h = harness();
    let mut c = login(&h, "carol").await;
    let msg = b"From: a@b.c\r\nSubject: test\r\n\r\nHello\r\nWorld \xff\x80 bytes\r\n";
    c.send(format!("a APPEND INBOX (\\Flagged) {{{}}}\r\n", msg.len()).as_bytes())
        .await;
    let cont = c.line().await.unwrap();
    assert!(cont.starts_with("+ "), "{cont}");
    c.send(msg).await;
    c.send(b"\r\n").await;
    let r = c.until("a").await;
    assert!(r.starts_with("a OK [APPENDUID "), "{r}");
    // LITERAL+: no continuation.
    c.send(format!("b APPEND INBOX {{{}+}}\r\n", msg.len()).as_bytes())
        .await;
    c.send(msg).await;
    c.send(b"\r\n").await;
    let r = c.until("b").await;
    assert!(
        r.starts_with("b OK [APPENDUID ") && r.ends_with(" 2] Append completed\r\n"),
        "{r}"
    );

    let r = c.cmd("c", "SELECT INBOX").await;
    assert!(
        r.contains("* 2 EXISTS") && r.contains("[UIDVALIDITY ") && r.contains("[UIDNEXT 3]"),
        "{r}"
    );
    assert!(r.contains("c OK [READ-WRITE]"), "{r}");

    let r = c
        .cmd("d", "UID FETCH 1 (UID RFC822.SIZE BODY.PEEK[])")
        .await;
    let mut expected = format!(
        "* 1 FETCH (UID 1 RFC822.SIZE {} BODY[] {{{}}}\r\n",
        msg.len(),
        msg.len()
    )
    .into_bytes();
    expected.extend_from_slice(msg);
    expected.extend_from_slice(b")\r\n");
    assert!(
        r.starts_with(&String::from_utf8_lossy(&expected).into_owned()),
        "{r}"
    );
    let stored = h
        .relay
        .store
        .body(&format!("carol@{DOMAIN}"), "INBOX", 1)
        .unwrap()
        .unwrap();
    assert_eq!(stored, msg);
    // PEEK left \Seen alone; BODY[] sets it and reports FLAGS.
    let r = c.cmd("e", "FETCH 1 (FLAGS)").await;
    assert!(r.contains("* 1 FETCH (FLAGS (\\Flagged))"), "{r}");
    let r = c.cmd("f", "FETCH 1 BODY[HEADER.FIELDS (SUBJECT)]").await;
    assert!(
        r.contains("* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {17}\r\nSubject: test\r\n\r\n FLAGS (\\Flagged \\Seen))"),
        "{r}"
    );
    let r = c.cmd("g", "UID FETCH 1:* (FLAGS)").await;
    assert!(
        r.contains("* 1 FETCH (UID 1 FLAGS (\\Flagged \\Seen))"),
        "{r}"
    );
    assert!(r.contains("* 2 FETCH (UID 2 FLAGS ())"), "{r}");
    let r = c
        .cmd("h", "FETCH 1 (ENVELOPE BODYSTRUCTURE INTERNALDATE)")
        .await;
    assert!(
        r.contains("ENVELOPE (NIL \"test\" ((NIL NIL \"a\" \"b.c\"))"),
        "{r}"
    );
    assert!(r.contains("BODYSTRUCTURE (\"text\" \"plain\""), "{r}");
    let r = c.cmd("i", "SEARCH UNSEEN").await;
    assert!(r.contains("* SEARCH 2\r\n"), "{r}");
    let r = c.cmd("j", "UID SEARCH SUBJECT test SEEN").await;
    assert!(r.contains("* SEARCH 1\r\n"), "{r}");
    let r = c.cmd("k", "FETCH 3 FLAGS").await;
    assert!(
        Client::<tokio::io::DuplexStream>::tagged(&r).starts_with("k BAD"),
        "{r}"
    );
    // EXAMINE does not set \Seen.
    let r = c.cmd("l", "EXAMINE INBOX").await;
    assert!(r.contains("l OK [READ-ONLY]"), "{r}");
    let r = c.cmd("m", "FETCH 2 (BODY[] FLAGS)").await;
    assert!(r.contains("FLAGS ())"), "{r}");
    let r = c
        .cmd("n", "STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN)")
        .await;
    assert!(
        r.contains("* STATUS INBOX (MESSAGES 2 UIDNEXT 3 UIDVALIDITY "),
        "{r}"
    );
    assert!(r.contains(" UNSEEN 1)"), "{r}");
}

async fn append(c: &mut Client<tokio::io::DuplexStream>, tag: &str, mailbox: &str, body: &str) {
    c.send(format!("{tag} APPEND {mailbox} {{{}+}}\r\n{body}\r\n", body.len()).as_bytes())
        .await;
    let r = c.until(tag).await;
    assert!(r.contains(&format!("{tag} OK")), "{r}");
}

#[tokio::test]
async fn store_expunge_copy_move() {
    let h = harness();
    let mut c = login(&h, "dave").await;
    for (i, t) in ["a1", "a2", "a3", "a4"].iter().enumerate() {
        append(
            &mut c,
            t,
            "INBOX",
            &format!("Subject: {i}\r\n\r\nbody {i}\r\n"),
        )
        .await;
    }
    let r = c.cmd("b", "CREATE Trash").await;
    assert!(r.starts_with("b OK"), "{r}");
    let r = c.cmd("b2", "CREATE Trash").await;
    assert!(r.starts_with("b2 NO [ALREADYEXISTS]"), "{r}");
    let r = c.cmd("c", "LIST \"\" \"*\"").await;
    assert!(
        r.contains("* LIST (\\HasNoChildren \\Trash) \".\" Trash"),
        "{r}"
    );
    assert!(r.contains(" INBOX\r\n"), "{r}");
    c.cmd("d", "SELECT INBOX").await;
    let r = c.cmd("e", "UID STORE 1 +FLAGS (\\Deleted)").await;
    assert!(r.contains("* 1 FETCH (UID 1 FLAGS (\\Deleted))"), "{r}");
    let r = c.cmd("e2", "STORE 2 +FLAGS.SILENT (\\Seen)").await;
    assert!(!r.contains("FETCH"), "{r}");
    let r = c.cmd("f", "EXPUNGE").await;
    assert!(r.starts_with("* 1 EXPUNGE\r\nf OK"), "{r}");
    // Now UIDs 2,3,4 are sequence 1,2,3.
    let r = c.cmd("g", "UID COPY 2 Trash").await;
    assert!(r.contains("g OK [COPYUID ") && r.contains(" 2 1] "), "{r}");
    let r = c.cmd("h", "UID MOVE 3:4 Trash").await;
    assert!(
        r.contains("* OK [COPYUID ") && r.contains(" 3:4 2:3] "),
        "{r}"
    );
    assert!(r.contains("* 3 EXPUNGE\r\n* 2 EXPUNGE\r\nh OK"), "{r}");
    let r = c.cmd("i", "STATUS Trash (MESSAGES UIDNEXT)").await;
    assert!(r.contains("* STATUS Trash (MESSAGES 3 UIDNEXT 4)"), "{r}");
    let r = c.cmd("j", "UID MOVE 2 Nowhere").await;
    assert!(r.starts_with("j NO [TRYCREATE]"), "{r}");
    // UID EXPUNGE removes only the named \Deleted messages.
    c.cmd("k", "SELECT Trash").await;
    c.cmd("l", "STORE 1:* +FLAGS.SILENT (\\Deleted)").await;
    let r = c.cmd("m", "UID EXPUNGE 2").await;
    assert!(r.starts_with("* 2 EXPUNGE\r\nm OK"), "{r}");
    // CLOSE expunges the rest silently.
    let r = c.cmd("n", "CLOSE").await;
    assert!(r.starts_with("n OK"), "{r}");
    let (_, left) = h
        .relay
        .store
        .messages(&format!("dave@{DOMAIN}"), "Trash")
        .unwrap();
    assert!(left.is_empty());
    let r = c.cmd("o", "FETCH 1 FLAGS").await;
    assert!(r.starts_with("o BAD"), "{r}");
}

#[tokio::test]
async fn metadata_wire_form() {
    let h = harness();
    let mut c = login(&h, "erin").await;
    let r = c
        .cmd(
            "a",
            "GETMETADATA \"\" (/shared/comment /shared/admin /shared/vendor/deltachat/irohrelay /shared/vendor/deltachat/turn /shared/vendor/deltachat/maxsmtprecipients)",
        )
        .await;
    assert_eq!(
        r,
        "* METADATA \"\" (/shared/comment NIL /shared/admin {25}\r\nmailto:privacy@relay.test \
/shared/vendor/deltachat/irohrelay {18}\r\nhttps://relay.test /shared/vendor/deltachat/turn NIL \
/shared/vendor/deltachat/maxsmtprecipients {4}\r\n1000)\r\na OK Getmetadata completed\r\n"
    );
    let r = c.cmd("b", "GETMETADATA INBOX (/private/devicetoken)").await;
    assert!(
        r.starts_with("* METADATA INBOX (/private/devicetoken NIL)\r\n"),
        "{r}"
    );
    let r = c
        .cmd("c", "SETMETADATA INBOX (/private/devicetoken \"1111\")")
        .await;
    assert!(
        r.starts_with("c OK") && r.contains("Setmetadata completed"),
        "{r}"
    );
    let r = c
        .cmd("d", "SETMETADATA INBOX (/private/devicetoken {4+}\r\n2222)")
        .await;
    assert!(r.contains("Setmetadata completed"), "{r}");
    c.cmd("d2", "SETMETADATA INBOX (/private/devicetoken \"1111\")")
        .await;
    let r = c.cmd("e", "GETMETADATA INBOX (/private/devicetoken)").await;
    assert_eq!(
        r,
        "* METADATA INBOX (/private/devicetoken {9}\r\n1111 2222)\r\ne OK Getmetadata completed\r\n"
    );
    let r = c.cmd("f", "SETMETADATA \"\" (/shared/admin \"x\")").await;
    assert!(r.starts_with("f NO"), "{r}");
    let r = c
        .cmd("g", "SETMETADATA INBOX (/private/comment \"x\")")
        .await;
    assert!(r.starts_with("g NO"), "{r}");
    // An expired token disappears (MD-1).
    let addr = format!("erin@{DOMAIN}");
    let old = h.relay.clock.unix_now() - 91 * 86_400;
    h.relay
        .store
        .set_device_token(&addr, "3333", old)
        .await
        .unwrap();
    let r = c.cmd("h", "GETMETADATA INBOX (/private/devicetoken)").await;
    assert!(r.contains("{9}\r\n1111 2222)"), "{r}");
    assert_eq!(h.relay.store.device_tokens(&addr).unwrap().len(), 2);
}

#[tokio::test]
async fn idle_sees_delivery() {
    let h = harness();
    let mut c = login(&h, "frank").await;
    let r = c.cmd("a", "SELECT INBOX").await;
    assert!(r.contains("* 0 EXISTS"), "{r}");
    c.send(b"b IDLE\r\n").await;
    assert!(c.line().await.unwrap().starts_with("+ "));
    let addr = format!("frank@{DOMAIN}");
    let delivered = h
        .relay
        .store
        .deliver(Delivery {
            sender: "x@elsewhere.test".into(),
            local: vec![addr.clone()],
            remote: vec![],
            body: crate::message::Parsed::parse(b"Subject: hi\r\n\r\nyo\r\n".to_vec()).unwrap(),
            received: h.relay.clock.unix_now(),
        })
        .await
        .unwrap();
    assert_eq!(delivered, vec![addr.clone()]);
    // The event, not a timer, wakes the session (the read is bounded by `STEP`; the
    // test asserts no time).
    h.relay.events.mailbox_changed(&addr);
    let line = c.line().await.unwrap();
    assert_eq!(line, "* 1 EXISTS\r\n");
    c.send(b"DONE\r\n").await;
    let r = c.until("b").await;
    assert_eq!(r, "b OK Idle completed\r\n");
    // A second session's flag change shows up on NOOP.
    let mut c2 = login(&h, "frank").await;
    c2.cmd("a", "SELECT INBOX").await;
    c2.cmd("b", "STORE 1 +FLAGS.SILENT (\\Seen)").await;
    let r = c.cmd("c", "NOOP").await;
    assert!(r.contains("* 1 FETCH (UID 1 FLAGS (\\Seen))"), "{r}");
    // And its expunge on the next command.
    c2.cmd("c", "STORE 1 +FLAGS.SILENT (\\Deleted)").await;
    c2.cmd("d", "EXPUNGE").await;
    let r = c.cmd("d", "NOOP").await;
    assert!(r.contains("* 1 EXPUNGE"), "{r}");
    // APPEND to the selected mailbox: EXISTS before the tagged OK, and the other
    // session hears of it too.
    let r = c
        .cmd("e", "APPEND INBOX {17+}\r\nSubject: a\r\n\r\nabc")
        .await;
    assert!(r.starts_with("* 1 EXISTS\r\ne OK [APPENDUID "), "{r}");
    let r = c2.cmd("e", "NOOP").await;
    assert_eq!(r, "* 1 EXISTS\r\ne OK NOOP completed\r\n");
}

#[tokio::test]
async fn quota() {
    let h = harness();
    let mut c = login(&h, "grace").await;
    // 3000 bytes in all.
    append(
        &mut c,
        "a",
        "INBOX",
        &format!("Subject: q\r\n\r\n{}", "x".repeat(2986)),
    )
    .await;
    let r = c.cmd("b", "GETQUOTAROOT INBOX").await;
    assert_eq!(
        r,
        "* QUOTAROOT INBOX \"User quota\"\r\n* QUOTA \"User quota\" (STORAGE 3 512000)\r\nb OK Getquotaroot completed\r\n"
    );
    let r = c.cmd("c", "GETQUOTA \"User quota\"").await;
    assert!(
        r.starts_with("* QUOTA \"User quota\" (STORAGE 3 512000)\r\nc OK"),
        "{r}"
    );
    let r = c.cmd("d", "GETQUOTAROOT Nope").await;
    assert!(r.starts_with("d NO"), "{r}");
}

#[tokio::test]
async fn bad_input_keeps_the_session() {
    let h = harness();
    let (mut c, _) = connect(&h, true).await;
    // Commands before login.
    let r = c.cmd("a", "SELECT INBOX").await;
    assert!(r.starts_with("a BAD"), "{r}");
    let r = c.cmd("a2", "GETMETADATA \"\" (/shared/admin)").await;
    assert!(r.starts_with("a2 BAD"), "{r}");
    // Unknown command and bad arguments.
    let r = c.cmd("b", "FROBNICATE").await;
    assert!(
        r.starts_with("b BAD") && r.contains("unknown command"),
        "{r}"
    );
    let r = c.cmd("b2", "LOGIN").await;
    assert!(r.starts_with("b2 BAD"), "{r}");
    // NUL.
    c.send(b"c NO\0OP\r\n").await;
    let r = c.until("c").await;
    assert!(r.starts_with("c BAD"), "{r}");
    // A huge line: answered with its tag (the client waits for it).
    let mut huge = b"d NOOP ".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 100 * 1024));
    huge.extend_from_slice(b"\r\n");
    c.send(&huge).await;
    let r = c.line().await.unwrap();
    assert!(r.starts_with("d BAD") && r.contains("too long"), "{r}");
    let r = c.cmd("e", "NOOP").await;
    assert!(r.starts_with("e OK"), "{r}");
    // Before login a literal may only be small.
    let r = c.cmd("f", "LOGIN {100000}").await;
    assert!(r.starts_with("f NO [TOOBIG]"), "{r}");
    assert!(
        c.cmd("g", &format!("LOGIN hank@{DOMAIN} {PASSWORD}"))
            .await
            .starts_with("g OK")
    );
    // After login: over max_message_size, refused without reading it.
    let r = c
        .cmd("h", &format!("APPEND INBOX {{{}}}", MAX_MESSAGE + 1))
        .await;
    assert!(r.starts_with("h NO [TOOBIG]"), "{r}");
    let r = c.cmd("i", "NOOP").await;
    assert!(r.starts_with("i OK"), "{r}");
    let r = c.cmd("j", "FETCH 1 FLAGS").await;
    assert!(r.starts_with("j BAD"), "{r}");
    let r = c.cmd("k", "SELECT Nope").await;
    assert!(r.starts_with("k NO [NONEXISTENT]"), "{r}");
    let r = c.cmd("l", "APPEND Nope {3+}\r\nabc").await;
    assert!(r.starts_with("l NO [TRYCREATE]"), "{r}");
}

// ---- STARTTLS over loopback TCP -----------------------------------------------------

#[tokio::test]
async fn starttls_discards_pipelined_bytes_then_login_works() {
    let h = harness();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let relay = h.relay.clone();
    let server = tokio::spawn(async move {
        let (stream, peer) = listener.accept().await.unwrap();
        super::serve(relay.imap_handles(), crate::net::Conn::Plain(stream), peer).await;
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut c = Client {
        io: tcp,
        buf: Vec::new(),
    };
    let greeting = c.line().await.unwrap();
    assert!(greeting.contains("STARTTLS") && greeting.contains("LOGINDISABLED"));
    // The pipelined NOOP must be dropped (RFC 9051 §6.2.1).
    c.send(b"a STARTTLS\r\nb NOOP\r\n").await;
    let r = c.until("a").await;
    assert_eq!(r, "a OK Begin TLS negotiation now\r\n");
    assert!(c.buf.is_empty());
    let connector = crate::testing::tls_connector(&[&rustls::version::TLS13], None);
    let name = rustls_pki_types::ServerName::try_from(DOMAIN).unwrap();
    let tls = connector.connect(name, c.io).await.expect("handshake");
    let mut c = Client {
        io: tls,
        buf: Vec::new(),
    };
    let r = c.cmd("c", "CAPABILITY").await;
    assert!(
        r.starts_with("* CAPABILITY ") && r.contains("AUTH=PLAIN"),
        "{r}"
    );
    assert!(!r.contains("STARTTLS") && !r.contains("b OK"), "{r}");
    let r = c.cmd("d", &format!("LOGIN ivan@{DOMAIN} {PASSWORD}")).await;
    assert!(r.starts_with("d OK"), "{r}");
    c.cmd("e", "LOGOUT").await;
    tokio::time::timeout(STEP, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn compress_deflate_when_configured() {
    let h = harness_with(|c| c.imap_compress = true);
    let mut c = login(&h, "judy").await;
    let r = c.cmd("a", "CAPABILITY").await;
    assert!(r.contains(" COMPRESS=DEFLATE"), "{r}");
    append(
        &mut c,
        "b",
        "INBOX",
        &format!("Subject: z\r\n\r\n{}", "compressible text ".repeat(500)),
    )
    .await;
    // The command after COMPRESS is already compressed: send it in the same write.
    c.send(b"c COMPRESS DEFLATE\r\n").await;
    let r = c.until("c").await;
    assert_eq!(r, "c OK DEFLATE active\r\n");
    let mut z = Client {
        io: super::compress::Deflate::new(c.io, std::mem::take(&mut c.buf)),
        buf: Vec::new(),
    };
    let r = z.cmd("d", "CAPABILITY").await;
    assert!(
        r.contains("XCHATMAIL") && !r.contains("COMPRESS=DEFLATE"),
        "{r}"
    );
    let r = z.cmd("e", "COMPRESS DEFLATE").await;
    assert!(r.starts_with("e NO [COMPRESSIONACTIVE]"), "{r}");
    z.cmd("f", "SELECT INBOX").await;
    let r = z.cmd("g", "FETCH 1 BODY.PEEK[]").await;
    assert!(r.contains(&"compressible text ".repeat(500)), "{r}");

    // Not configured: neither offered nor accepted.
    let h = harness();
    let mut c = login(&h, "judy").await;
    let r = c.cmd("a", "CAPABILITY").await;
    assert!(!r.contains("COMPRESS"), "{r}");
    let r = c.cmd("b", "COMPRESS DEFLATE").await;
    assert!(r.starts_with("b BAD"), "{r}");
}

#[tokio::test]
async fn mailbox_management() {
    let h = harness();
    let mut c = login(&h, "kate").await;
    for (t, name) in [
        ("a", "Drafts"),
        ("b", "Junk"),
        ("c", "\"Sent Messages\""),
        ("d", "Archive"),
    ] {
        let r = c.cmd(t, &format!("CREATE {name}")).await;
        assert!(r.starts_with(&format!("{t} OK")), "{r}");
    }
    let r = c.cmd("e", "CREATE INBOX").await;
    assert!(r.starts_with("e NO"), "{r}");
    let r = c.cmd("f", "LIST \"\" %").await;
    assert!(
        r.contains("* LIST (\\HasNoChildren \\Drafts) \".\" Drafts\r\n"),
        "{r}"
    );
    assert!(
        r.contains("* LIST (\\HasNoChildren \\Junk) \".\" Junk\r\n"),
        "{r}"
    );
    assert!(
        r.contains("* LIST (\\HasNoChildren \\Sent) \".\" \"Sent Messages\"\r\n"),
        "{r}"
    );
    assert!(
        r.contains("* LIST (\\HasNoChildren) \".\" Archive\r\n"),
        "{r}"
    );
    let r = c.cmd("g", "LIST \"\" \"\"").await;
    assert!(r.starts_with("* LIST (\\Noselect) \".\" \"\"\r\n"), "{r}");
    let r = c.cmd("h", "UNSUBSCRIBE Junk").await;
    assert!(r.starts_with("h OK"), "{r}");
    let r = c.cmd("i", "LSUB \"\" *").await;
    assert!(r.contains(" Drafts\r\n") && !r.contains(" Junk\r\n"), "{r}");
    let r = c.cmd("j", "RENAME Archive Old").await;
    assert!(r.starts_with("j OK"), "{r}");
    let r = c.cmd("k", "RENAME Nope Other").await;
    assert!(r.starts_with("k NO [NONEXISTENT]"), "{r}");
    let r = c.cmd("l", "DELETE Old").await;
    assert!(r.starts_with("l OK"), "{r}");
    let r = c.cmd("m", "DELETE INBOX").await;
    assert!(r.starts_with("m NO"), "{r}");
    let names: Vec<String> = h
        .relay
        .store
        .mailboxes(&format!("kate@{DOMAIN}"))
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["Drafts", "INBOX", "Junk", "Sent Messages"]);
    let r = c.cmd("n", "ENABLE CONDSTORE").await;
    assert!(r.starts_with("* ENABLED\r\nn OK"), "{r}");
    let r = c.cmd("o", "UNSELECT").await;
    assert!(r.starts_with("o BAD"), "{r}");
    c.cmd("p", "SELECT INBOX").await;
    let r = c.cmd("q", "UNSELECT").await;
    assert!(r.starts_with("q OK"), "{r}");
}

/// Random well-framed commands from a fixed vocabulary: every one gets its tagged
/// reply and the session survives (no panic, no hang).
#[tokio::test]
async fn random_commands_always_get_a_tagged_reply() {
    let h = harness();
    let mut c = login(&h, "mallory").await;
    append(&mut c, "p1", "INBOX", MULTIPART_FOR_FUZZ).await;
    append(&mut c, "p2", "INBOX", "Subject: two\r\n\r\nx\r\n").await;
    let verbs = [
        "FETCH",
        "UID FETCH",
        "STORE",
        "UID STORE",
        "SEARCH",
        "UID SEARCH",
        "COPY",
        "UID COPY",
        "MOVE",
        "UID MOVE",
        "SELECT",
        "EXAMINE",
        "APPEND",
        "LIST",
        "LSUB",
        "STATUS",
        "GETMETADATA",
        "SETMETADATA",
        "EXPUNGE",
        "UID EXPUNGE",
        "CLOSE",
        "NOOP",
        "CREATE",
        "DELETE",
        "RENAME",
        "SUBSCRIBE",
        "CHECK",
        "UNSELECT",
        "GETQUOTA",
        "GETQUOTAROOT",
        "NAMESPACE",
        "ENABLE",
        "ID",
        "CAPABILITY",
        "XYZZY",
        "LOGIN",
    ];
    let args = [
        "1",
        "*",
        "1:*",
        "2:3",
        "0",
        "4294967295",
        "INBOX",
        "\"\"",
        "Trash",
        "(FLAGS)",
        "(BODY.PEEK[1.2.HEADER.FIELDS (A)]<0.5>)",
        "BODY[]",
        "BODY[2.MIME]",
        "BODY[TEXT]<3.4>",
        "(ENVELOPE BODYSTRUCTURE)",
        "+FLAGS",
        "-FLAGS.SILENT",
        "(\\Seen)",
        "(\\Deleted)",
        "{3+}\r\nabc",
        "NIL",
        "(",
        ")",
        "\"x",
        "ALL",
        "OR",
        "NOT",
        "UID",
        "1:2,5",
        "SUBJECT",
        "(/private/devicetoken \"t\")",
        "(/shared/admin)",
        "(MESSAGES UNSEEN)",
        "%",
        "*.x",
        "SINCE",
        "1-Jan-2024",
        "RFC822",
        "FAST",
        "\"User quota\"",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    for i in 0..400 {
        let mut cmd = verbs[next(verbs.len())].to_string();
        for _ in 0..next(5) {
            cmd.push(' ');
            cmd.push_str(args[next(args.len())]);
        }
        let tag = format!("f{i}");
        let r = c.cmd(&tag, &cmd).await;
        let last = Client::<tokio::io::DuplexStream>::tagged(&r);
        assert!(
            last.starts_with(&format!("{tag} OK"))
                || last.starts_with(&format!("{tag} NO"))
                || last.starts_with(&format!("{tag} BAD")),
            "{cmd}: {r}"
        );
    }
    let r = c.cmd("z", "NOOP").await;
    assert!(r.contains("z OK"), "{r}");
}

const MULTIPART_FOR_FUZZ: &str = "Subject: one\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nfirst\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner\r\n--b--\r\n";

// ---- the wire form, byte for byte -----------------------------------------------------

/// A clock fixed at 2024-01-02 03:04:05 UTC, so that dates in answers do not vary.
struct FixedClock;

impl crate::clock::Clock for FixedClock {
    fn unix_now(&self) -> u64 {
        1_704_164_645
    }
    fn monotonic(&self) -> std::time::Instant {
        std::time::Instant::now()
    }
}

/// Where the expected transcript of [`wire_transcript_is_stable`] is kept.
const TRANSCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/imap/testdata/transcript.txt"
);

/// A client that writes down what it sends and what it gets, in a log shared by the
/// clients of one test (so the log shows their order). Runs of one line are written
/// once with their count; long lines the client sends are shortened to their start
/// and length.
struct Recorder {
    c: Client<tokio::io::DuplexStream>,
    name: &'static str,
    log: std::rc::Rc<std::cell::RefCell<Vec<(String, usize)>>>,
}

impl Recorder {
    fn note(&mut self, who: &str, text: &str) {
        let mut log = self.log.borrow_mut();
        for line in text.split_inclusive("\r\n") {
            let shown = if who == "C:" && line.len() > 300 {
                let cut = (0..=120)
                    .rev()
                    .find(|&i| line.is_char_boundary(i))
                    .unwrap_or(0);
                format!("{:?}… ({} bytes)", &line[..cut], line.len())
            } else {
                format!("{line:?}")
            };
            let entry = format!("{} {who} {shown}", self.name);
            match log.last_mut() {
                Some((last, n)) if *last == entry => *n += 1,
                _ => log.push((entry, 1)),
            }
        }
    }
    /// Send `data`; read up to and including the tagged reply of `tag`.
    async fn cmd(&mut self, tag: &str, data: &str) {
        self.note("C:", data);
        self.c.send(data.as_bytes()).await;
        let r = self.c.until(tag).await;
        self.note("S:", &r);
    }
    /// Send `data`; read one response line.
    async fn line(&mut self, data: &str) {
        self.note("C:", data);
        self.c.send(data.as_bytes()).await;
        let r = self.c.line().await.unwrap_or_default();
        self.note("S:", &r);
    }
}

/// Every kind of answer the server gives, byte for byte, in one scripted conversation
/// (two sessions of one account and one without TLS). The expectation lives in
/// `testdata/transcript.txt`; after an intended change of the wire form, write it
/// again with `RELAYBOX_BLESS=1` and review the difference.
#[tokio::test]
async fn wire_transcript_is_stable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path());
    config.max_mailbox_size = 200_000;
    let relay = Relay::open_with_clock(config, Arc::new(FixedClock)).expect("relay");
    let h = Harness { relay, _dir: dir };
    let log = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    // The account exists (a first login creates it), so that wrong passwords fail.
    let mut b = Recorder {
        c: login(&h, "tina").await,
        name: "B",
        log: log.clone(),
    };

    // Without TLS: greeting, refusals.
    let (c, greeting) = connect(&h, false).await;
    let mut p = Recorder {
        c,
        name: "P",
        log: log.clone(),
    };
    p.note("S:", &greeting);
    p.cmd("p1", "p1 CAPABILITY\r\n").await;
    p.cmd("p2", &format!("p2 LOGIN tina@{DOMAIN} {PASSWORD}\r\n"))
        .await;
    p.cmd("p3", "p3 AUTHENTICATE PLAIN AGE=\r\n").await;
    p.cmd("p4", "p4 STARTTLS\r\n").await;
    p.cmd("p5", "p5 LOGOUT\r\n").await;

    let (c, greeting) = connect(&h, true).await;
    let mut a = Recorder {
        c,
        name: "A",
        log: log.clone(),
    };
    a.note("S:", &greeting);
    a.cmd("a1", "a1 STARTTLS\r\n").await;
    a.cmd("a2", "a2 SELECT INBOX\r\n").await;
    a.cmd("a3", "a3 FROBNICATE\r\n").await;
    a.cmd("a4", "a4 LOGIN\r\n").await;
    a.cmd("a5", "a5 NO\0OP\r\n").await;
    a.cmd("a6", "a6 LOGIN {100000}\r\n").await;
    a.cmd("a7", &format!("a7 LOGIN tina@{DOMAIN} wrong-password\r\n"))
        .await;
    a.line("a8 AUTHENTICATE PLAIN\r\n").await;
    a.cmd("a8", "*\r\n").await;
    a.line("a9 AUTHENTICATE PLAIN\r\n").await;
    a.cmd("a9", "!!!\r\n").await;
    a.cmd("b1", "b1 AUTHENTICATE CRAM-MD5\r\n").await;
    a.cmd("b2", "b2 ID (\"name\" \"Delta Chat\")\r\n").await;
    a.cmd("b3", "b3 NOOP\r\n").await;
    a.line("b4 LOGIN {15}\r\n").await;
    a.cmd("b4", &format!("tina@{DOMAIN} {PASSWORD}\r\n")).await;
    a.cmd("b5", "b5 CAPABILITY\r\n").await;
    a.cmd("b6", "b6 LOGIN x y\r\n").await;
    a.cmd("b7", "b7 NAMESPACE\r\n").await;
    a.cmd("b8", "b8 ENABLE CONDSTORE\r\n").await;
    a.cmd("b9", "b9 COMPRESS DEFLATE\r\n").await;
    for (t, name) in [
        ("c1", "Drafts"),
        ("c2", "\"Sent Messages\""),
        ("c3", "Arch.Old"),
        ("c4", "Trash"),
        ("c8", "\"Quote\\\"d\""),
        ("c5", "\"a*\""),
        ("c6", "INBOX"),
        ("c7", "Trash"),
    ] {
        a.cmd(t, &format!("{t} CREATE {name}\r\n")).await;
    }
    a.cmd("d1", "d1 LIST \"\" \"*\"\r\n").await;
    a.cmd("d2", "d2 LIST \"\" \"\"\r\n").await;
    a.cmd("d3", "d3 LIST \"\" %\r\n").await;
    a.cmd("d4", "d4 UNSUBSCRIBE Drafts\r\n").await;
    a.cmd("d5", "d5 LSUB \"\" *\r\n").await;
    a.cmd("d6", "d6 SUBSCRIBE Nope\r\n").await;
    a.cmd("d7", "d7 RENAME Arch.Old Arch.New\r\n").await;
    a.cmd("d8", "d8 RENAME INBOX X\r\n").await;
    a.cmd("d9", "d9 RENAME Nope X\r\n").await;
    a.cmd("e1", "e1 DELETE Arch.New\r\n").await;
    a.cmd("e2", "e2 DELETE INBOX\r\n").await;
    a.cmd("e3", "e3 DELETE Nope\r\n").await;
    a.cmd(
        "e4",
        "e4 STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN DELETED)\r\n",
    )
    .await;
    a.cmd("e5", "e5 STATUS Nope (MESSAGES)\r\n").await;
    let multi = "From: \"Alice A.\" <alice@example.org>\r\nTo: bob@example.org, Carol <carol@x.test>, undisclosed:;\r\nSubject: hello\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <m1@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\npreamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Language: en, de\r\n\r\nline one\r\nline two \u{fc}\r\n--XX\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner \u{e4}\r\nFrom: d@e.f\r\n\r\ninner body\r\n--XX\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"a.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--XX--\r\n";
    a.line(&format!(
        "f1 APPEND INBOX (\\Flagged $Label) \"01-Jan-2024 10:00:00 +0100\" {{{}}}\r\n",
        multi.len()
    ))
    .await;
    a.cmd("f1", &format!("{multi}\r\n")).await;
    let big = format!(
        "Subject: big\r\n\r\n{}\r\n",
        "0123456789abcde\r\n".repeat(4500)
    );
    a.cmd(
        "f2",
        &format!("f2 APPEND INBOX {{{}+}}\r\n{big}\r\n", big.len()),
    )
    .await;
    a.cmd(
        "f3",
        "f3 APPEND INBOX {21+}\r\nSubject: small\r\n\r\nx\r\n\r\n",
    )
    .await;
    a.cmd("f4", "f4 APPEND Nope {3+}\r\nabc\r\n").await;
    // QUOTA-1: the third copy of the big message is over the account's limit.
    for t in ["f8", "f9"] {
        a.cmd(
            t,
            &format!("{t} APPEND Drafts {{{}+}}\r\n{big}\r\n", big.len()),
        )
        .await;
    }
    let over = "y".repeat(100_001);
    a.cmd("fa", &format!("fa APPEND INBOX {{100001+}}\r\n{over}\r\n"))
        .await;
    a.cmd("f5", "f5 APPEND INBOX {100001}\r\n").await;
    a.cmd("f6", "f6 APPEND INBOX (\\Bogus) {3+}\r\nabc\r\n")
        .await;
    a.cmd("f7", "f7 APPEND INBOX {10+}\r\nx\0y\r\n\r\nz\r\n\r\n")
        .await;
    a.cmd("g1", "g1 FETCH 1 FLAGS\r\n").await;
    a.cmd("g2", "g2 EXAMINE INBOX\r\n").await;
    a.cmd("g3", "g3 FETCH 1 (BODY[HEADER] FLAGS)\r\n").await;
    a.cmd("g4", "g4 SELECT Nope\r\n").await;
    a.cmd("g5", "g5 SELECT INBOX\r\n").await;
    a.cmd(
        "g6",
        "g6 FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE)\r\n",
    )
    .await;
    a.cmd("g7", "g7 FETCH 1 (ENVELOPE BODY BODYSTRUCTURE)\r\n")
        .await;
    a.cmd("g8", "g8 FETCH 1 (BODY.PEEK[1] BODY.PEEK[2.MIME] BODY.PEEK[2.1] BODY.PEEK[2.HEADER] BODY.PEEK[3]<1.2> BODY.PEEK[9])\r\n").await;
    a.cmd("g9", "g9 UID FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject \"To\")] BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT TO FROM DATE MESSAGE-ID)] BODY.PEEK[TEXT]<5000.3>)\r\n").await;
    a.cmd("h1", "h1 FETCH 3 (RFC822.HEADER RFC822.TEXT)\r\n")
        .await;
    a.cmd("h2", "h2 FETCH 3 FAST\r\n").await;
    a.cmd("h3", "h3 FETCH 3 RFC822\r\n").await;
    a.cmd(
        "h4",
        "h4 UID FETCH 2 (BODY.PEEK[TEXT] BODY.PEEK[]<0.10> UID)\r\n",
    )
    .await;
    a.cmd("h5", "h5 FETCH 1 BINARY[1]\r\n").await;
    a.cmd("h6", "h6 FETCH 9 FLAGS\r\n").await;
    a.cmd("h7", "h7 FETCH 1 ALL\r\n").await;
    a.cmd("i1", "i1 STORE 1 +FLAGS ($Other \\Draft)\r\n").await;
    a.cmd("i2", "i2 UID STORE 1:2 -FLAGS.SILENT (\\Flagged)\r\n")
        .await;
    a.cmd("i3", "i3 STORE 2 FLAGS (\\Answered \\Deleted)\r\n")
        .await;
    a.cmd("i4", "i4 STORE 1 +FLAGS (\\Recent)\r\n").await;
    a.cmd("j1", "j1 SEARCH ALL\r\n").await;
    a.cmd("j2", "j2 UID SEARCH UNSEEN NOT DELETED\r\n").await;
    a.cmd("j3", "j3 SEARCH CHARSET KOI8-R ALL\r\n").await;
    a.cmd("j4", "j4 SEARCH SUBJECT nothing-like-this\r\n").await;
    a.cmd(
        "j5",
        &format!("j5 SEARCH {}\r\n", "SEEN ".repeat(300).trim_end()),
    )
    .await;
    a.cmd("j6", "j6 SEARCH FROM alice SENTON 1-Jan-2024\r\n")
        .await;

    // A second session of the same account: updates and their order.
    b.cmd("k1", "k1 SELECT INBOX\r\n").await;
    b.cmd("k2", "k2 STORE 3 +FLAGS.SILENT (\\Seen)\r\n").await;
    a.cmd("k3", "k3 FETCH 1 FLAGS\r\n").await;
    a.cmd("k4", "k4 NOOP\r\n").await;
    b.cmd("k5", "k5 EXPUNGE\r\n").await;
    a.cmd("k6", "k6 FETCH 1 UID\r\n").await;
    a.cmd("k7", "k7 UID FETCH 1 UID\r\n").await;
    a.cmd("k8", "k8 CHECK\r\n").await;
    a.line("l1 IDLE\r\n").await;
    b.cmd(
        "l2",
        "l2 APPEND INBOX {21+}\r\nSubject: third\r\n\r\ny\r\n\r\n",
    )
    .await;
    let r = a.c.line().await.unwrap_or_default();
    a.note("S:", &r);
    a.cmd("l1", "DONE\r\n").await;
    a.line("l3 IDLE\r\n").await;
    a.cmd("l3", "STOP\r\n").await;
    a.cmd("m1", "m1 UID COPY 1:3 Trash\r\n").await;
    a.cmd("m2", "m2 COPY 1 Nope\r\n").await;
    a.cmd("m3", "m3 UID MOVE 3 Trash\r\n").await;
    a.cmd("m4", "m4 MOVE 1 Trash\r\n").await;
    a.cmd("m5", "m5 STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
        .await;
    a.cmd("m6", "m6 UID EXPUNGE 1:100\r\n").await;
    a.cmd("n1", "n1 GETQUOTAROOT INBOX\r\n").await;
    a.cmd("n2", "n2 GETQUOTA \"User quota\"\r\n").await;
    a.cmd("n3", "n3 GETQUOTA other\r\n").await;
    a.cmd("n4", "n4 GETQUOTAROOT Nope\r\n").await;
    a.cmd("n5", "n5 SETQUOTA \"User quota\" (STORAGE 1)\r\n")
        .await;
    a.cmd("o1", "o1 GETMETADATA \"\" (/shared/comment /shared/admin /shared/vendor/deltachat/irohrelay /shared/vendor/deltachat/maxsmtprecipients)\r\n").await;
    a.cmd(
        "o2",
        "o2 SETMETADATA INBOX (/private/devicetoken \"tok en\")\r\n",
    )
    .await;
    a.cmd(
        "o3",
        "o3 SETMETADATA INBOX (/private/devicetoken \"a\tb\")\r\n",
    )
    .await;
    a.cmd(
        "o4",
        "o4 GETMETADATA INBOX (/private/devicetoken /private/other)\r\n",
    )
    .await;
    a.cmd("o5", "o5 SETMETADATA \"\" (/shared/admin \"x\")\r\n")
        .await;
    a.cmd("o6", "o6 GETMETADATA Nope (/private/devicetoken)\r\n")
        .await;
    a.cmd("p1", "p1 SORT (DATE) UTF-8 ALL\r\n").await;
    a.cmd("p2", "p2 CLOSE\r\n").await;
    a.cmd("p3", "p3 UNSELECT\r\n").await;
    a.cmd("p4", "p4 EXAMINE Trash\r\n").await;
    a.cmd("p5", "p5 STORE 1 +FLAGS (\\Seen)\r\n").await;
    a.cmd("p6", "p6 UNSELECT\r\n").await;
    let mut huge = "q1 NOOP ".to_string();
    huge.push_str(&"x".repeat(70 * 1024));
    a.line(&format!("{huge}\r\n")).await;
    a.cmd("q2", "q2 SEARCH TEXT {300000}\r\n").await;
    a.cmd("q3", "q3 LOGOUT\r\n").await;
    let log: String = log
        .borrow()
        .iter()
        .map(|(line, n)| match n {
            1 => format!("{line}\n"),
            n => format!("{line} ×{n}\n"),
        })
        .collect();

    if std::env::var_os("RELAYBOX_BLESS").is_some() {
        std::fs::write(TRANSCRIPT, &log).expect("write the transcript");
    }
    let want = std::fs::read_to_string(TRANSCRIPT).expect("testdata/transcript.txt");
    if want != log {
        let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), log.lines().collect());
        let at = w
            .iter()
            .zip(&g)
            .position(|(a, b)| a != b)
            .unwrap_or(w.len().min(g.len()));
        panic!(
            "the wire form changed at line {}:\n want {:?}\n  got {:?}",
            at + 1,
            w.get(at),
            g.get(at)
        );
    }
}
