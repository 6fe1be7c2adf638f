//! Crafted messages and expensive requests against the real binary (issue 13): the gate
//! trick that two parsers read differently is refused on every way in (submission,
//! port 25, `/mxdeliv`, APPEND), a message with millions of MIME parts is refused at the
//! part limit, what IMAP shows is the structure the relay checked, and a SEARCH that asks
//! for too much is answered `NO [LIMIT]` while others are served.

use relaybox_blackbox::conn::LineConn;
use relaybox_blackbox::http;
use relaybox_blackbox::{
    Account, Imap, MailBuilder, Relay, Smtp, assert_serving, create_account, encrypted_mail,
};

/// The trick of issue 13: a `multipart/mixed` Content-Type above the real
/// `multipart/encrypted` one, and cleartext parts of the outer boundary after the
/// closing delimiter. mail-parser took the last Content-Type (and passed the gate), IMAP
/// and ordinary clients the first (and showed the cleartext).
fn gate_trick(from: &str, to: &str) -> Vec<u8> {
    let enc = String::from_utf8(MailBuilder::encrypted(from, &[to]).build().bytes).unwrap();
    let at = enc
        .find("Content-Type: multipart/encrypted")
        .expect("encrypted mail");
    let mut trick = enc[..at].to_string();
    trick.push_str("Content-Type: multipart/mixed; boundary=\"outer\"\r\n");
    trick.push_str(&enc[at..]);
    if !trick.ends_with("\r\n") {
        trick.push_str("\r\n");
    }
    trick.push_str(
        "--outer\r\nContent-Type: text/plain\r\n\r\nThis is cleartext past the gate.\r\n--outer--\r\n",
    );
    trick.into_bytes()
}

const REFUSAL: &str = "500 Failed to parse message: duplicate Content-Type header";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_trick_is_refused_everywhere() {
    let relay = Relay::start(&[]).await;
    let (a, b) = (Account::random(), Account::random());
    create_account(&relay, &a).await;
    create_account(&relay, &b).await;

    // Submission.
    let r = Smtp::submit(&relay, &a, &[&b.addr], &gate_trick(&a.addr, &b.addr)).await;
    assert_eq!(r.last(), REFUSAL, "{r}");

    // Port 25 (an IP-literal sender from the relay's own address would pass IN-4e).
    let mut s = Smtp::connect(relay.smtp_addr()).await;
    s.greeting().await;
    s.ehlo().await;
    s.starttls().await;
    s.ehlo().await;
    let r = s
        .send_mail(&a.addr, &[&b.addr], &gate_trick(&a.addr, &b.addr))
        .await;
    assert_eq!(r.last(), REFUSAL, "{r}");
    s.quit().await;

    // /mxdeliv.
    let body = gate_trick(&a.addr, &b.addr);
    let mut conn = LineConn::connect_tls(relay.https_addr(), &[b"http/1.1"])
        .await
        .expect("TLS to the HTTPS port");
    let head = format!(
        "POST /mxdeliv HTTP/1.1\nHost: 127.0.0.1\nX-MAIL-FROM: {}\nX-MAIL-TO: {}",
        a.addr, b.addr
    );
    let resp = http::request(&mut conn, &head, &body)
        .await
        .expect("HTTP response");
    assert_eq!(resp.status, 400, "{resp:?}");
    assert!(resp.body_text().starts_with(REFUSAL), "{resp:?}");

    // APPEND: the same parse as every other way in.
    let mut c = Imap::login_tls(&relay, &b).await;
    let r = c
        .try_append("INBOX", &gate_trick(&a.addr, &b.addr))
        .await
        .expect("answered");
    assert!(
        r.to_string()
            .contains("NO [PARSE] Message refused: duplicate Content-Type header"),
        "{}",
        r.to_string()
    );
    assert_eq!(c.select("INBOX").await, 0, "nothing was stored");
    c.logout().await;
    assert_serving(&relay).await;
}

/// Millions of empty parts (the memory attack, 29 MiB): refused at the part
/// limit on port 25, without holding anything per part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn millions_of_parts_are_refused_at_the_limit() {
    let relay = Relay::start(&[]).await;
    let b = Account::random();
    create_account(&relay, &b).await;
    let mut msg = format!(
        "From: x@[127.0.0.1]\r\nTo: {}\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=b\r\n\r\n",
        b.addr
    )
    .into_bytes();
    let parts = 1_000_000;
    msg.reserve(parts * 7 + 16);
    for _ in 0..parts {
        msg.extend_from_slice(b"--b\r\n\r\n");
    }
    msg.extend_from_slice(b"--b--\r\n");
    let mut s = Smtp::connect(relay.smtp_addr()).await;
    s.greeting().await;
    s.ehlo().await;
    s.starttls().await;
    s.ehlo().await;
    let r = s.send_mail("x@[127.0.0.1]", &[&b.addr], &msg).await;
    assert_eq!(
        r.last(),
        "500 Failed to parse message: more than 64 MIME parts",
        "{r}"
    );
    s.quit().await;
    assert_serving(&relay).await;
}

/// BODYSTRUCTURE and BODY[n] show the parts the relay checked, as stored with the
/// message: the encrypted message's two parts, nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_shows_the_structure_the_gate_checked() {
    let relay = Relay::start(&[]).await;
    let (a, b) = (Account::random(), Account::random());
    create_account(&relay, &a).await;
    create_account(&relay, &b).await;
    let mail = encrypted_mail(&a.addr, &[&b.addr]);
    let r = Smtp::submit(&relay, &a, &[&b.addr], &mail.bytes).await;
    assert_eq!(r.code, 250, "{r}");
    let mut c = Imap::login_tls(&relay, &b).await;
    assert_eq!(c.select("INBOX").await, 1);
    let r = c.cmd("FETCH 1 (BODYSTRUCTURE)").await;
    let text = r.to_string().to_ascii_lowercase();
    assert!(
        text.contains("(\"application\" \"pgp-encrypted\"")
            && text.contains("(\"application\" \"octet-stream\"")
            && text.contains("\"encrypted\" (\"protocol\" \"application/pgp-encrypted\""),
        "{}",
        r.to_string()
    );
    assert!(!text.contains("\"text\" \"plain\""), "{}", r.to_string());
    let r = c.cmd("FETCH 1 (BODY.PEEK[1] BODY.PEEK[3])").await;
    assert!(r.to_string().contains("Version: 1"), "{}", r.to_string());
    assert!(r.to_string().contains("BODY[3] {0}"), "{}", r.to_string());
    c.logout().await;
}

/// A SEARCH over the key limit, and one over the work budget, are answered
/// `NO [LIMIT]`; the session and everyone else go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expensive_searches_are_refused_with_limit() {
    let relay = Relay::start(&[]).await;
    let a = Account::random();
    create_account(&relay, &a).await;
    let mut c = Imap::login_tls(&relay, &a).await;
    // A 2 MiB message: every TEXT key scans it once.
    let mut big = b"From: x@y.z\r\nSubject: big\r\n\r\n".to_vec();
    for _ in 0..(2 << 20) / 64 {
        big.extend_from_slice(&[b'a'; 62]);
        big.extend_from_slice(b"\r\n");
    }
    let r = c.try_append("INBOX", &big).await.expect("answered");
    assert!(r.is_ok(), "{}", r.to_string());
    assert_eq!(c.select("INBOX").await, 1);

    let many = vec!["NOT FROM \"q\""; 300].join(" ");
    let r = c.cmd(&format!("SEARCH {many}")).await;
    assert!(
        r.to_string().contains("NO [LIMIT] Too many search keys"),
        "{}",
        r.to_string()
    );
    // 40 TEXT keys that all match × 2 MiB = 80 MiB compared, over the 64 Mi-unit budget.
    let heavy = vec!["TEXT \"aaa\""; 40].join(" ");
    let r = c.cmd(&format!("SEARCH {heavy}")).await;
    assert!(
        r.to_string().contains("NO [LIMIT] Search too expensive"),
        "{}",
        r.to_string()
    );
    // A reasonable search still works on the same session.
    let r = c.cmd("SEARCH SUBJECT big").await;
    assert!(r.to_string().contains("* SEARCH 1"), "{}", r.to_string());
    c.logout().await;
    assert_serving(&relay).await;
}
