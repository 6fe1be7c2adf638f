//! Bad input against the real binary: overlong lines, huge literal announcements, bare
//! LF (including SMTP smuggling), NUL bytes, unknown and out-of-state commands, garbage
//! and injected commands around STARTTLS, clients that vanish mid-DATA, oversized
//! messages and floods of failed logins. After each case a fresh client must still be
//! served normally ([`assert_serving`]).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use relaybox_blackbox::conn::LineConn;
use relaybox_blackbox::imap::quote;
use relaybox_blackbox::mail::{base64, stored_message_id};
use relaybox_blackbox::{
    Account, Imap, MailBuilder, ReadError, Relay, Reply, Smtp, assert_serving, create_account,
    encrypted_mail, metrics,
};

/// Where login floods come from: not the address of [`assert_serving`]'s clients, which
/// the per-address brake would otherwise slow down too.
const FLOODER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// What the server did with a bad input.
#[derive(Debug)]
enum Outcome {
    Reply(Reply),
    Closed,
    Silent,
}

async fn smtp_outcome(s: &mut Smtp) -> Outcome {
    let outcome = match s.read_reply().await {
        Ok(r) => Outcome::Reply(r),
        Err(ReadError::Timeout) => Outcome::Silent,
        Err(_) => Outcome::Closed,
    };
    eprintln!("SMTP outcome: {outcome:?}");
    outcome
}

/// IMAP: the tagged status for `tag` (`OK`/`NO`/`BAD`/`+`); `*BAD` for an untagged
/// BAD (RFC 9051 §7.1.3: allowed when the server cannot tell the command), `BYE` if
/// the server said goodbye, `closed` if it just closed, `silent` if nothing came.
async fn imap_outcome(c: &mut Imap, tag: &str) -> String {
    let outcome = imap_outcome_inner(c, tag).await;
    eprintln!("IMAP outcome for {tag}: {outcome}");
    outcome
}

async fn imap_outcome_inner(c: &mut Imap, tag: &str) -> String {
    let prefix = format!("{tag} ");
    // Bounded: a few hundred unrelated lines at most.
    for _ in 0..500 {
        let line = match c.read_line().await {
            Ok(l) => l.text(),
            Err(ReadError::Timeout) => return "silent".into(),
            Err(_) => return "closed".into(),
        };
        if let Some(rest) = line.strip_prefix(&prefix) {
            return rest.split(' ').next().unwrap_or("").to_ascii_uppercase();
        }
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("* BYE") {
            return "BYE".into();
        }
        if upper.starts_with("* BAD") {
            return "*BAD".into();
        }
        if line.starts_with('+') {
            return "+".into();
        }
    }
    "silent".into()
}

const REFUSED: [&str; 5] = ["BAD", "NO", "*BAD", "BYE", "closed"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_overlong_command_line() {
    let relay = Relay::start(&[]).await;
    let mut s = Smtp::connect(relay.submission_addr()).await;
    s.greeting().await;
    // RFC 5321 §4.5.3.1.4: command lines are at most 512 octets. 1 MiB, then CRLF.
    let mut line = b"EHLO ".to_vec();
    line.extend(std::iter::repeat_n(b'a', 1 << 20));
    let wrote = s.conn.write_all(&line).await.is_ok() && s.conn.write_all(b"\r\n").await.is_ok();
    match smtp_outcome(&mut s).await {
        Outcome::Reply(r) => assert!(
            (500..600).contains(&r.code),
            "overlong command line must be refused (RFC 5321 §4.2.2: 500), got {r}"
        ),
        Outcome::Closed => {}
        Outcome::Silent => {
            panic!("no reply and no close after a 1 MiB command line (wrote: {wrote})")
        }
    }
    drop(s);
    assert_serving(&relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_overlong_line() {
    let relay = Relay::start(&[]).await;
    let mut c = Imap::connect_tls(relay.imaps_addr()).await;
    c.greeting().await;
    let mut line = b"A1 LOGIN \"".to_vec();
    line.extend(std::iter::repeat_n(b'a', 1 << 20));
    line.extend_from_slice(b"\" \"password123\"\r\n");
    let _ = c.conn.write_all(&line).await;
    let outcome = imap_outcome(&mut c, "A1").await;
    // Tagged: a client waiting for its tag would hang on an untagged BAD (issue 13).
    assert_eq!(outcome, "BAD", "1 MiB IMAP line: expected A1 BAD");
    drop(c);
    assert_serving(&relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_huge_literal_announcements() {
    let relay = Relay::start(&["max_message_size = 100000"]).await;
    let a = Account::random();
    // Before login.
    let mut c = Imap::connect_tls(relay.imaps_addr()).await;
    c.greeting().await;
    c.send_raw(b"A1 LOGIN {4000000000}\r\n").await;
    let outcome = imap_outcome(&mut c, "A1").await;
    assert!(
        REFUSED.contains(&outcome.as_str()),
        "pre-login literal of 4e9 bytes: must be refused, got {outcome}"
    );
    drop(c);
    // After login: APPEND far above max_message_size (synchronizing literal).
    let mut c = Imap::login_tls(&relay, &a).await;
    c.send_raw(b"A2 APPEND INBOX {4000000000}\r\n").await;
    let outcome = imap_outcome(&mut c, "A2").await;
    assert!(
        REFUSED.contains(&outcome.as_str()),
        "APPEND literal of 4e9 bytes: must be refused without `+`, got {outcome}"
    );
    drop(c);
    // Non-synchronizing (LITERAL+, RFC 7888 §4) over the limit, sent in full: refused.
    let mut c = Imap::login_tls(&relay, &a).await;
    let mut cmd = b"A3 APPEND INBOX {200000+}\r\n".to_vec();
    cmd.extend(std::iter::repeat_n(b'x', 200_000));
    cmd.extend_from_slice(b"\r\n");
    let _ = c.conn.write_all(&cmd).await;
    let outcome = imap_outcome(&mut c, "A3").await;
    assert!(
        REFUSED.contains(&outcome.as_str()),
        "APPEND non-synchronizing literal of 200000 bytes (max_message_size 100000): got {outcome}"
    );
    if outcome != "closed" && outcome != "BYE" {
        // The literal was consumed: the session goes on.
        let r = c.cmd("NOOP").await;
        assert!(r.is_ok(), "NOOP after a refused literal: {r}");
    }
    drop(c);
    // Non-synchronizing literal of 4e9 announced, 64 KiB sent, client gone: the relay
    // may wait for the rest; it must just not fall over.
    let mut c = Imap::login_tls(&relay, &a).await;
    c.send_raw(b"A4 APPEND INBOX {4000000000+}\r\n").await;
    let _ = c.conn.write_all(&vec![b'x'; 65536]).await;
    drop(c);
    assert!(
        Imap::fetch_inbox(&relay, &a).await.is_empty(),
        "nothing appended"
    );
    assert_serving(&relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_commands() {
    let relay = Relay::start(&[]).await;
    // SMTP: a bare-LF command followed by a proper one; the proper one gets answered
    // (or the server closes).
    let mut s = Smtp::connect(relay.submission_addr()).await;
    s.greeting().await;
    s.send_raw(b"NOOP\nNOOP\r\n").await;
    let first = smtp_outcome(&mut s).await;
    assert!(
        !matches!(first, Outcome::Silent),
        "SMTP: no answer to `NOOP\\nNOOP\\r\\n`"
    );
    drop(s);
    // IMAP.
    let mut c = Imap::connect_tls(relay.imaps_addr()).await;
    c.greeting().await;
    c.send_raw(b"A1 NOOP\nA2 NOOP\r\n").await;
    let outcome = imap_outcome(&mut c, "A2").await;
    assert!(
        outcome != "silent",
        "IMAP: `A2 NOOP` after a bare-LF line was never answered"
    );
    drop(c);
    assert_serving(&relay).await;
}

/// SMTP smuggling: a bare-LF "end of data" must not end DATA, so commands after it
/// are message text, never executed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_dot_does_not_end_data() {
    let relay = Relay::start(&["max_user_send_burst_size = 100"]).await;
    let a = Account::random();
    let b = Account::random();
    create_account(&relay, &b).await;
    let mut smuggled_ids = Vec::new();
    let mut failures = Vec::new();
    let variants = [
        &b"\n.\n"[..],
        b"\r\n.\n",
        b"\n.\r\n",
        b"\r.\r\n",
        b"\r\n.\r",
    ];
    for fake_end in variants {
        let mut s = Smtp::login(&relay, &a).await;
        let r = s.cmd(&format!("MAIL FROM:<{}>", a.addr)).await;
        assert_eq!(r.code, 250, "{r}");
        let r = s.cmd(&format!("RCPT TO:<{}>", b.addr)).await;
        assert_eq!(r.code, 250, "{r}");
        let r = s.cmd("DATA").await;
        assert_eq!(r.code, 354, "{r}");
        let first = encrypted_mail(&a.addr, &[&b.addr]);
        let second = encrypted_mail(&a.addr, &[&b.addr]);
        smuggled_ids.push(second.message_id.clone());
        let mut data = first.bytes.clone();
        data.extend_from_slice(fake_end);
        data.extend_from_slice(
            format!("MAIL FROM:<{}>\r\nRCPT TO:<{}>\r\nDATA\r\n", a.addr, b.addr).as_bytes(),
        );
        data.extend_from_slice(&second.bytes);
        data.extend_from_slice(b"\r\n.\r\n");
        s.send_raw(&data).await;
        match smtp_outcome(&mut s).await {
            Outcome::Reply(_) | Outcome::Closed => {}
            Outcome::Silent => panic!("no reply after the real end of DATA ({fake_end:?})"),
        }
        // Exactly one reply: nothing else may follow (smuggled commands would answer).
        if let Ok(extra) = s.conn.read_some(Duration::from_millis(700)).await {
            failures.push(format!(
                "fake end {:?}: extra replies after the DATA reply: {:?}",
                String::from_utf8_lossy(fake_end),
                String::from_utf8_lossy(&extra)
            ));
        }
        drop(s);
    }
    let inbox = Imap::fetch_inbox(&relay, &b).await;
    for m in &inbox {
        let id = stored_message_id(m).unwrap_or_default();
        if let Some(i) = smuggled_ids.iter().position(|s| *s == id) {
            failures.push(format!(
                "fake end {:?}: the smuggled message was stored",
                String::from_utf8_lossy(variants[i])
            ));
        }
    }
    if inbox.len() > variants.len() {
        failures.push(format!(
            "{} messages stored for {} transactions",
            inbox.len(),
            variants.len()
        ));
    }
    assert!(
        failures.is_empty(),
        "SMTP smuggling:\n{}",
        failures.join("\n")
    );
    assert_serving(&relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_bytes() {
    let relay = Relay::start(&[]).await;
    let a = Account::random();
    create_account(&relay, &a).await;
    // SMTP command with a NUL.
    let mut s = Smtp::connect(relay.submission_addr()).await;
    s.greeting().await;
    s.send_raw(b"EHLO a\0b.example\r\n").await;
    let outcome = smtp_outcome(&mut s).await;
    assert!(
        !matches!(outcome, Outcome::Silent),
        "SMTP: EHLO with NUL never answered"
    );
    drop(s);
    // AUTH PLAIN with a NUL inside the login name: ACC-2 allows no such character.
    let mut s = Smtp::connect_tls(relay.submissions_addr()).await;
    s.greeting().await;
    s.ehlo().await;
    let token = base64(format!("\0{}\0x\0{}", a.addr, a.password).as_bytes());
    let r = s.try_cmd(&format!("AUTH PLAIN {token}")).await;
    if let Ok(r) = r {
        assert_ne!(
            r.code, 235,
            "AUTH PLAIN with an extra NUL field accepted: {r}"
        );
    }
    drop(s);
    // IMAP LOGIN with a NUL in the name (ACC-2) must fail, in a literal and raw.
    let mut c = Imap::connect_tls(relay.imaps_addr()).await;
    c.greeting().await;
    let name = format!("{}\0x", a.addr);
    c.send_raw(
        format!(
            "A1 LOGIN {{{}+}}\r\n{name} {}\r\n",
            name.len(),
            quote(&a.password)
        )
        .as_bytes(),
    )
    .await;
    let outcome = imap_outcome(&mut c, "A1").await;
    assert!(
        outcome != "OK" && outcome != "silent",
        "IMAP LOGIN with NUL in a literal: {outcome}"
    );
    drop(c);
    let mut c = Imap::connect_tls(relay.imaps_addr()).await;
    c.greeting().await;
    c.send_raw(b"A1 NOOP\0\0\0\r\nA2 NOOP\r\n").await;
    let outcome = imap_outcome(&mut c, "A2").await;
    assert!(
        outcome != "silent",
        "IMAP: NOOP after NUL bytes never answered"
    );
    drop(c);
    assert_serving(&relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_unknown_and_out_of_state_commands() {
    let relay = Relay::start(&[]).await;
    let a = Account::random();
    // Before TLS on 587.
    let mut s = Smtp::connect(relay.submission_addr()).await;
    s.greeting().await;
    let r = s.cmd("FOOBAR baz").await;
    assert!(
        r.code == 500 || r.code == 502,
        "unknown command (RFC 5321 §4.2.4): {r}"
    );
    let r = s.cmd("DATA").await;
    assert!((500..600).contains(&r.code), "DATA before anything: {r}");
    drop(s);
    // Logged in on 465.
    let mut s = Smtp::login(&relay, &a).await;
    let r = s.cmd("FOOBAR").await;
    assert!(r.code == 500 || r.code == 502, "unknown command: {r}");
    // RFC 5321 §4.1.4: bad sequence → 503; for DATA without MAIL or RCPT §3.3 also
    // allows 554 ("no valid recipients").
    let r = s.cmd("DATA").await;
    assert!(r.code == 503 || r.code == 554, "DATA before MAIL: {r}");
    let r = s.cmd(&format!("RCPT TO:<{}>", a.addr)).await;
    assert_eq!(r.code, 503, "RCPT before MAIL: {r}");
    let r = s.cmd(&format!("MAIL FROM:<{}>", a.addr)).await;
    assert_eq!(r.code, 250, "{r}");
    let r = s.cmd(&format!("MAIL FROM:<{}>", a.addr)).await;
    assert_eq!(r.code, 503, "second MAIL in a transaction: {r}");
    let r = s.cmd("DATA").await;
    assert!(r.code == 503 || r.code == 554, "DATA without RCPT: {r}");
    let r = s.cmd("RSET").await;
    assert_eq!(r.code, 250, "{r}");
    // RFC 4954 §4: AUTH while authenticated → 503.
    let r = s.auth_plain(&a.addr, &a.password).await;
    assert_eq!(r.code, 503, "AUTH twice: {r}");
    let r = s.cmd("STARTTLS").await;
    assert!((500..600).contains(&r.code), "STARTTLS inside TLS: {r}");
    let r = s.cmd("NOOP").await;
    assert_eq!(r.code, 250, "the session goes on: {r}");
    // And it still sends.
    let m = encrypted_mail(&a.addr, &[&a.addr]);
    let r = s.send_mail(&a.addr, &[&a.addr], &m.bytes).await;
    assert_eq!(r.code, 250, "{r}");
    s.quit().await;
    assert_serving(&relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_unknown_and_out_of_state_commands() {
    let relay = Relay::start(&[]).await;
    let a = Account::random();
    let mut c = Imap::connect_tls(relay.imaps_addr()).await;
    c.greeting().await;
    let r = c.cmd("FOOBAR").await;
    assert_eq!(r.status, "BAD", "unknown command: {r}");
    // RFC 9051 §6: commands valid only in other states.
    for cmd in [
        "SELECT INBOX",
        "FETCH 1 FLAGS",
        "IDLE",
        "EXPUNGE",
        "GETMETADATA INBOX /private/devicetoken",
    ] {
        let r = c.cmd(cmd).await;
        assert!(
            r.status == "BAD" || r.status == "NO",
            "{cmd} before login: {r}"
        );
    }
    let r = c.cmd("DONE").await;
    assert_eq!(
        r.status, "BAD",
        "DONE outside IDLE (read as a tagless command): {r}"
    );
    let r = c.login(&a.addr, &a.password).await;
    assert!(r.is_ok(), "{r}");
    for cmd in ["FETCH 1 FLAGS", "EXPUNGE", "UID STORE 1 +FLAGS (\\Seen)"] {
        let r = c.cmd(cmd).await;
        assert!(
            r.status == "BAD" || r.status == "NO",
            "{cmd} without a selected mailbox: {r}"
        );
    }
    let r = c.cmd("SELECT NoSuchMailbox").await;
    assert_eq!(r.status, "NO", "SELECT of a missing mailbox: {r}");
    let r = c.login(&a.addr, &a.password).await;
    assert!(r.status == "BAD" || r.status == "NO", "LOGIN twice: {r}");
    let r = c.cmd("NOOP").await;
    assert!(r.is_ok(), "the session goes on: {r}");
    assert_eq!(c.select("INBOX").await, 0);
    // Odd but well-formed, and malformed, sequence sets on an empty mailbox.
    let r = c.cmd("UID FETCH 1:* (UID FLAGS)").await;
    assert!(
        r.is_ok(),
        "UID FETCH 1:* on an empty mailbox (RFC 9051 §6.4.9): {r}"
    );
    for cmd in [
        "FETCH 0 FLAGS",
        "FETCH 99999999999 FLAGS",
        "FETCH 1:2:3 FLAGS",
        "UID FETCH x (FLAGS)",
        "SEARCH (((((",
        "FETCH 1 (BODY[",
    ] {
        let r = c.cmd(cmd).await;
        assert!(r.status == "BAD" || r.status == "NO", "{cmd}: {r}");
    }
    let r = c.cmd("NOOP").await;
    assert!(
        r.is_ok(),
        "the session goes on after malformed commands: {r}"
    );
    c.logout().await;
    assert_serving(&relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_starttls_closes_only_that_connection() {
    let relay = Relay::start(&[]).await;
    let mut s = Smtp::connect(relay.submission_addr()).await;
    s.greeting().await;
    s.ehlo().await;
    let r = s.cmd("STARTTLS").await;
    assert_eq!(r.code, 220, "{r}");
    let _ = s
        .conn
        .write_all(b"GET / HTTP/1.0\r\n\r\nthis is not a TLS ClientHello\r\n")
        .await;
    let (closed, _) = s.conn.wait_closed(Duration::from_secs(10)).await;
    assert!(
        closed,
        "SMTP: garbage instead of a TLS handshake: connection not closed"
    );

    let mut c = Imap::connect(relay.imap_addr()).await;
    c.greeting().await;
    let r = c.cmd("STARTTLS").await;
    assert!(r.is_ok(), "{r}");
    let _ = c
        .conn
        .write_all(b"A2 LOGIN x y\r\n\x00\x01\x02\x03garbage\r\n")
        .await;
    let (closed, _) = c.conn.wait_closed(Duration::from_secs(10)).await;
    assert!(
        closed,
        "IMAP: garbage instead of a TLS handshake: connection not closed"
    );
    assert_serving(&relay).await;
}

/// RFC 3207 §4.2 / RFC 9051 §6.2.1: commands pipelined after STARTTLS in the clear must
/// be discarded, never executed inside the TLS session (command injection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_pipelined_after_starttls_are_discarded() {
    let relay = Relay::start(&[]).await;
    // SMTP.
    let mut s = Smtp::connect(relay.submission_addr()).await;
    s.greeting().await;
    s.ehlo().await;
    s.send_raw(b"STARTTLS\r\nNOOP\r\n").await;
    let r = s.reply("STARTTLS").await;
    assert_eq!(r.code, 220, "{r}");
    match s.conn.start_tls(relay.submission_addr(), &[]).await {
        Err(e) if e.to_string().contains("unexpected byte") => {
            panic!("SMTP: the injected NOOP was answered in the clear after STARTTLS: {e}")
        }
        // Closing the connection is a safe answer to an injection attempt.
        Err(_) => {}
        Ok(()) => {
            let r = s.cmd("EHLO legit.example").await;
            assert!(
                r.code == 250 && r.keyword("AUTH").is_some(),
                "SMTP: first reply inside TLS is not the EHLO reply (injected NOOP executed?): {r}"
            );
            if let Ok(extra) = s.conn.read_some(Duration::from_millis(500)).await {
                panic!(
                    "SMTP: extra reply inside TLS: {:?}",
                    String::from_utf8_lossy(&extra)
                );
            }
        }
    }
    drop(s);
    // IMAP.
    let mut c = Imap::connect(relay.imap_addr()).await;
    c.greeting().await;
    c.send_raw(b"A1 STARTTLS\r\nA2 CAPABILITY\r\n").await;
    let r = c.read_response("A1").await.expect("STARTTLS response");
    assert!(r.is_ok(), "{r}");
    match c.conn.start_tls(relay.imap_addr(), &[]).await {
        Err(e) if e.to_string().contains("unexpected byte") => {
            panic!("IMAP: the injected A2 was answered in the clear after STARTTLS: {e}")
        }
        Err(_) => {}
        Ok(()) => {
            let r = c.cmd("NOOP").await;
            assert!(r.is_ok(), "{r}");
            assert!(
                !r.untagged_text().iter().any(|l| l.starts_with("A2 ")),
                "IMAP: injected A2 executed inside TLS: {r}"
            );
        }
    }
    drop(c);
    assert_serving(&relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_data_stores_nothing() {
    let metrics = metrics::free_address();
    let relay = Relay::start(&[&metrics::ini_line(metrics)]).await;
    let a = Account::random();
    let b = Account::random();
    create_account(&relay, &b).await;
    let m = encrypted_mail(&a.addr, &[&b.addr]);
    // Half the message, then gone; and the whole message without the final dot, then gone.
    for cut in [m.bytes.len() / 2, m.bytes.len()] {
        let mut s = Smtp::login(&relay, &a).await;
        let r = s.cmd(&format!("MAIL FROM:<{}>", a.addr)).await;
        assert_eq!(r.code, 250, "{r}");
        let r = s.cmd(&format!("RCPT TO:<{}>", b.addr)).await;
        assert_eq!(r.code, 250, "{r}");
        let r = s.cmd("DATA").await;
        assert_eq!(r.code, 354, "{r}");
        s.send_raw(&m.bytes[..cut]).await;
        drop(s); // no QUIT, no TLS close_notify
    }
    // Whatever the relay does with a cut DATA, it has done it once it ended both
    // sessions (bounded wait).
    let open = metrics::open_connections("submissions");
    let (text, s) = metrics::wait_for(metrics, Duration::from_secs(10), |s| {
        metrics::get(s, &open) == 0
    })
    .await;
    assert_eq!(metrics::get(&s, &open), 0, "sessions not ended:\n{text}");
    let inbox = Imap::fetch_inbox(&relay, &b).await;
    assert!(
        inbox.is_empty(),
        "a message whose DATA never ended was stored ({} stored)",
        inbox.len()
    );
    assert_serving(&relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_is_refused_and_session_survives() {
    let relay = Relay::start(&["max_message_size = 10000"]).await;
    let a = Account::random();
    let mut s = Smtp::login(&relay, &a).await;
    let big = MailBuilder::encrypted(&a.addr, &[&a.addr])
        .payload_len(1 << 20)
        .build();
    let r = s.send_mail(&a.addr, &[&a.addr], &big.bytes).await;
    assert_eq!(r.last(), "552 5.3.4 Message size exceeds fixed limit");
    let r = s.cmd("NOOP").await;
    assert_eq!(r.code, 250, "session after 552: {r}");
    s.quit().await;
    assert!(Imap::fetch_inbox(&relay, &a).await.is_empty());
    assert_serving(&relay).await;
}

/// Failed logins on one connection before the relay closes it (IMAP and SMTP alike,
/// like Dovecot's and Postfix's limits).
const CLOSED_AFTER: usize = 3;

/// A flood of failed logins on one connection: the relay answered [`CLOSED_AFTER`] of
/// them, then closed the connection (issue 13).
fn assert_closed(times: &[Duration], closed_after: Option<usize>, what: &str) {
    eprintln!("{what}: failed-login times {times:?}, closed after {closed_after:?} failures");
    assert_eq!(
        closed_after,
        Some(CLOSED_AFTER),
        "{what}: the connection was not closed after {CLOSED_AFTER} failed logins \
         (answered: {times:?})"
    );
}

/// Failed logins from one address get slower (issue 13: keyed on the client address;
/// another address is not slowed). A lower bound on the brake's waits, which the relay
/// cannot undercut however fast the machine.
fn assert_slower(times: &[Duration], what: &str) {
    eprintln!("{what}: failed-login times {times:?}");
    let early = times[..3].iter().min().copied().unwrap_or_default();
    let late = times[5..].iter().max().copied().unwrap_or_default();
    assert!(
        late >= early + Duration::from_millis(200),
        "{what}: failed logins did not slow down: {times:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_imap_login_flood() {
    let relay = Relay::start(&[]).await;
    let a = Account::random();
    create_account(&relay, &a).await;
    let conn = LineConn::connect_tls_from(FLOODER, relay.imaps_addr(), &[])
        .await
        .expect("connect");
    let mut c = Imap::from_conn(conn, relay.imaps_addr());
    c.greeting().await;
    let mut times = Vec::new();
    let mut closed_after = None;
    for i in 0..10 {
        let start = Instant::now();
        let r = c
            .try_cmd(&format!(
                "LOGIN {} {}",
                quote(&a.addr),
                quote(&format!("wrong-password-{i}"))
            ))
            .await;
        match r {
            Ok(r) if r.status == "NO" || r.status == "BAD" => times.push(start.elapsed()),
            Ok(r) if r.status.is_empty() || r.status == "BYE" => {
                closed_after = Some(times.len());
                break;
            }
            Ok(r) => panic!("wrong password {i}: {r}"),
            Err(e) if e.is_closed() => {
                closed_after = Some(times.len());
                break;
            }
            Err(e) => panic!("wrong password {i}: {e}"),
        }
    }
    assert_closed(&times, closed_after, "IMAP");
    drop(c);
    // The right password from another address is not slowed by the flood.
    let start = Instant::now();
    Imap::login_tls(&relay, &a).await.logout().await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "correct login from another address after a flood took {:?}",
        start.elapsed()
    );
    assert_serving(&relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_smtp_auth_flood() {
    let relay = Relay::start(&[]).await;
    let a = Account::random();
    create_account(&relay, &a).await;
    let conn = LineConn::connect_tls_from(FLOODER, relay.submissions_addr(), &[])
        .await
        .expect("connect");
    let mut s = Smtp::from_conn(conn, relay.submissions_addr());
    s.greeting().await;
    s.ehlo().await;
    let mut times = Vec::new();
    let mut closed_after = None;
    for i in 0..10 {
        let start = Instant::now();
        let token = base64(format!("\0{}\0wrong-password-{i}", a.addr).as_bytes());
        match s.try_cmd(&format!("AUTH PLAIN {token}")).await {
            Ok(r) if r.code == 535 => times.push(start.elapsed()),
            Ok(r) if r.code == 421 => {
                closed_after = Some(times.len());
                break;
            }
            Ok(r) => panic!("wrong password {i}: expected 535 (RFC 4954 §6), got {r}"),
            Err(e) if e.is_closed() => {
                closed_after = Some(times.len());
                break;
            }
            Err(e) => panic!("wrong password {i}: {e}"),
        }
    }
    assert_closed(&times, closed_after, "SMTP");
    drop(s);
    let start = Instant::now();
    Smtp::login(&relay, &a).await.quit().await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "correct AUTH from another address after a flood took {:?}",
        start.elapsed()
    );
    assert_serving(&relay).await;
}

/// The brake keys on the client address, not the connection (`crate::auth`):
/// reconnecting does not reset it, the right password from that address waits its turn
/// like a wrong one, and another address is answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_across_connections_get_slower() {
    let relay = Relay::start(&[]).await;
    let a = Account::random();
    create_account(&relay, &a).await;
    let connect = || async {
        let conn = LineConn::connect_tls_from(FLOODER, relay.imaps_addr(), &[])
            .await
            .expect("connect");
        let mut c = Imap::from_conn(conn, relay.imaps_addr());
        c.greeting().await;
        c
    };
    let mut times = Vec::new();
    // 5 free, then 1, 2 and 4 s (each under the client's 10 s read limit).
    for i in 0..8 {
        let mut c = connect().await;
        let start = Instant::now();
        let r = c.login(&a.addr, &format!("wrong-password-{i}")).await;
        let took = start.elapsed();
        assert_eq!(r.status, "NO", "wrong password {i}: {r}");
        times.push(took);
        drop(c);
    }
    assert_slower(&times, "IMAP, one failure per connection");
    // The right password from the same address: no sooner than a wrong one would be.
    let mut c = connect().await;
    let start = Instant::now();
    let r = c.login(&a.addr, &a.password).await;
    let right_took = start.elapsed();
    assert!(r.is_ok(), "right password after the failures: {r}");
    eprintln!("right password from {FLOODER} after 8 failures: {right_took:?}");
    assert!(
        right_took >= Duration::from_secs(4),
        "the right password skipped the queue: {right_took:?}"
    );
    let start = Instant::now();
    Imap::login_tls(&relay, &a).await.logout().await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "correct login from another address after a flood took {:?}",
        start.elapsed()
    );
    assert_serving(&relay).await;
}

/// Many connections that never speak (plain and half-open TLS) do not keep the relay
/// from serving others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_block_others() {
    let relay = Relay::start(&[]).await;
    let mut idle = Vec::new();
    for addr in [
        relay.submission_addr(),
        relay.submissions_addr(),
        relay.imap_addr(),
        relay.imaps_addr(),
        relay.smtp_addr(),
    ] {
        for _ in 0..40 {
            // Plain TCP: for 465/993 this is a TLS handshake that never starts.
            idle.push(LineConn::connect(addr).await.expect("connect"));
        }
    }
    assert_serving(&relay).await;
    drop(idle);
    assert_serving(&relay).await;
}
