//! IMAP (143 STARTTLS, 993 implicit TLS) against the real binary: capabilities
//! (IMAP-1, IMAP-2), login and account creation (§4), METADATA wire form (IMAP-8,
//! §12) and IDLE wake-up (IMAP-5).

use std::time::{Duration, Instant};

use relaybox_blackbox::imap::parse_capabilities;
use relaybox_blackbox::{Account, DOMAIN, Imap, Relay, Smtp, create_account, encrypted_mail};

fn has(caps: &[String], cap: &str) -> bool {
    caps.iter().any(|c| c.eq_ignore_ascii_case(cap))
}

fn assert_caps(caps: &[String], wanted: &[&str], context: &str) {
    let missing: Vec<&&str> = wanted.iter().filter(|w| !has(caps, w)).collect();
    assert!(
        missing.is_empty(),
        "{context}: missing {missing:?} in {caps:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_before_login_on_993() {
    let relay = Relay::start(&[]).await;
    let mut c = Imap::connect_tls(relay.imaps_addr()).await;
    let greeting = c.greeting().await.text();
    assert!(greeting.starts_with("* OK"), "greeting: {greeting}");
    // IMAP-1: greeting and command.
    let in_greeting = parse_capabilities(&greeting)
        .unwrap_or_else(|| panic!("IMAP-1: no [CAPABILITY …] in greeting {greeting:?}"));
    assert_caps(
        &in_greeting,
        &["XCHATMAIL", "XDELTAPUSH"],
        "IMAP-1 greeting on 993",
    );
    let caps = c.capabilities().await;
    assert_caps(
        &caps,
        &["IMAP4rev1", "XCHATMAIL", "XDELTAPUSH"],
        "IMAP-1 CAPABILITY on 993",
    );
    assert!(
        !has(&caps, "LOGINDISABLED"),
        "LOGINDISABLED over TLS: {caps:?}"
    );
    c.logout().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_143_requires_starttls_before_login() {
    let relay = Relay::start(&[]).await;
    let a = Account::random();
    let mut c = Imap::connect(relay.imap_addr()).await;
    let greeting = c.greeting().await.text();
    assert!(greeting.starts_with("* OK"), "greeting: {greeting}");
    if let Some(caps) = parse_capabilities(&greeting) {
        assert_caps(
            &caps,
            &["XCHATMAIL", "XDELTAPUSH", "STARTTLS", "LOGINDISABLED"],
            "IMAP-1 greeting on 143",
        );
    } else {
        panic!("IMAP-1: no [CAPABILITY …] in greeting {greeting:?}");
    }
    let caps = c.capabilities().await;
    // IMAP-1.
    assert_caps(
        &caps,
        &["XCHATMAIL", "XDELTAPUSH", "STARTTLS", "LOGINDISABLED"],
        "IMAP-1 CAPABILITY on 143",
    );
    // ACC-1: no login in the clear.
    let r = c.login(&a.addr, &a.password).await;
    assert!(
        r.status == "NO" || r.status == "BAD",
        "LOGIN before STARTTLS: {r}"
    );
    let r = c
        .cmd(&format!(
            "AUTHENTICATE PLAIN {}",
            relaybox_blackbox::mail::base64(format!("\0{}\0{}", a.addr, a.password).as_bytes())
        ))
        .await;
    assert!(
        r.status == "NO" || r.status == "BAD",
        "AUTHENTICATE before STARTTLS: {r}"
    );
    // PORT-3: Delta Chat offers ALPN `imap` inside STARTTLS on 143.
    c.starttls_alpn(&[b"imap"]).await;
    let caps = c.capabilities().await;
    assert!(
        !has(&caps, "LOGINDISABLED"),
        "LOGINDISABLED after STARTTLS: {caps:?}"
    );
    assert!(
        !has(&caps, "STARTTLS"),
        "STARTTLS offered after STARTTLS: {caps:?}"
    );
    assert_caps(&caps, &["XCHATMAIL", "XDELTAPUSH"], "after STARTTLS");
    // The refused cleartext login created nothing: another password creates it now.
    let other = "another-password-77";
    let r = c.login(&a.addr, other).await;
    assert!(
        r.is_ok(),
        "LOGIN after STARTTLS (account must not exist yet): {r}"
    );
    c.logout().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_after_login() {
    let relay = Relay::start(&[]).await;
    let a = Account::random();
    let mut c = Imap::login_tls(&relay, &a).await;
    let caps = c.capabilities().await;
    // IMAP-2.
    assert_caps(
        &caps,
        &[
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
        ],
        "IMAP-2",
    );
    assert!(
        !has(&caps, "COMPRESS=DEFLATE"),
        "IMAP-2: COMPRESS=DEFLATE without imap_compress: {caps:?}"
    );
    c.logout().await;

    let relay = Relay::start(&["imap_compress = true"]).await;
    let mut c = Imap::login_tls(&relay, &a).await;
    let caps = c.capabilities().await;
    assert!(
        has(&caps, "COMPRESS=DEFLATE"),
        "IMAP-2: imap_compress = true: {caps:?}"
    );
    c.logout().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_creates_account_and_wrong_password_keeps_hash() {
    let relay = Relay::start(&[]).await;
    let a = Account::random();
    // ACC-5: first login creates.
    create_account(&relay, &a).await;
    // ACC-4: wrong password fails, on a fresh connection and then on the same one.
    let mut c = Imap::connect_tls(relay.imaps_addr()).await;
    c.greeting().await;
    let r = c.login(&a.addr, "not-the-password-1").await;
    assert_eq!(r.status, "NO", "wrong password: {r}");
    let r = c.login(&a.addr, &a.password).await;
    assert!(
        r.is_ok(),
        "right password after a wrong one (same connection): {r}"
    );
    c.logout().await;
    Imap::login_tls(&relay, &a).await.logout().await;
    // ACC-6 both ways: SMTP sees the same hash.
    Smtp::login(&relay, &a).await.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_name_rules() {
    let relay = Relay::start(&[]).await;
    let a = Account::random();
    create_account(&relay, &a).await;
    let try_login = |user: String, pw: String| {
        let addr = relay.imaps_addr();
        async move {
            let mut c = Imap::connect_tls(addr).await;
            c.greeting().await;
            let r = c.login(&user, &pw).await;
            c.logout().await;
            r
        }
    };
    // ACC-2: lower-cased before lookup.
    let r = try_login(a.addr.to_ascii_uppercase(), a.password.clone()).await;
    assert!(
        r.is_ok(),
        "ACC-2: upper-case login of an existing account: {r}"
    );
    // ACC-3: other domains are not served.
    let r = try_login("abcdefghi@example.org".into(), "a-long-password".into()).await;
    assert_eq!(r.status, "NO", "ACC-3: foreign domain: {r}");
    // ACC-5.2: password too short (8 < 9).
    let r = try_login(format!("shortpw12@{DOMAIN}"), "12345678".into()).await;
    assert_eq!(r.status, "NO", "ACC-5.2: short password: {r}");
    // ACC-5.4: local part length 9..=9.
    let r = try_login(format!("abc@{DOMAIN}"), "a-long-password".into()).await;
    assert_eq!(r.status, "NO", "ACC-5.4: short local part: {r}");
    let r = try_login(format!("abcdefghij@{DOMAIN}"), "a-long-password".into()).await;
    assert_eq!(r.status, "NO", "ACC-5.4: long local part: {r}");
    // ACC-5.5: `+` not allowed in a new name.
    let r = try_login(format!("abcd+efgh@{DOMAIN}"), "a-long-password".into()).await;
    assert_eq!(r.status, "NO", "ACC-5.5: plus in local part: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_first_logins_all_succeed() {
    let relay = Relay::start(&[]).await;
    let a = Account::random();
    let addr = relay.imaps_addr();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Imap::connect_tls(addr).await;
            c.greeting().await;
            let r = c.login(&a.addr, &a.password).await;
            c.logout().await;
            r
        }));
    }
    // ACC-7, IMAP-7.
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.expect("login task");
        assert!(r.is_ok(), "ACC-7: concurrent first login {i}: {r}");
    }
    // One hash was stored: the password works, another does not.
    Imap::login_tls(&relay, &a).await.logout().await;
    let mut c = Imap::connect_tls(addr).await;
    c.greeting().await;
    let r = c.login(&a.addr, "some-other-password").await;
    assert_eq!(r.status, "NO", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_wire_form() {
    let relay = Relay::start(&[]).await;
    let a = Account::random();
    let mut c = Imap::login_tls(&relay, &a).await;
    // §12: no token yet → NIL.
    let r = c.cmd("GETMETADATA INBOX /private/devicetoken").await;
    assert!(r.is_ok(), "{r}");
    assert_eq!(
        r.untagged_text(),
        vec!["* METADATA INBOX (/private/devicetoken NIL)".to_string()],
        "GETMETADATA without a token"
    );
    // IMAP-8.
    let r = c
        .cmd("SETMETADATA INBOX (/private/devicetoken \"1111\")")
        .await;
    assert!(
        r.is_ok() && r.tagged.contains("Setmetadata completed"),
        "IMAP-8 SETMETADATA: {r}"
    );
    let r = c.cmd("GETMETADATA INBOX /private/devicetoken").await;
    assert!(
        r.is_ok() && r.tagged.contains("Getmetadata completed"),
        "IMAP-8 GETMETADATA: {r}"
    );
    assert_eq!(r.untagged.len(), 1, "{r}");
    assert_eq!(
        r.untagged[0].raw,
        b"* METADATA INBOX (/private/devicetoken {4}\r\n1111)".to_vec(),
        "IMAP-8: value as a literal, got {}",
        r.untagged[0]
    );
    // A second token, sent as a LITERAL+ literal: both, in registration order.
    let tag = c.tag();
    c.send_raw(
        format!("{tag} SETMETADATA INBOX (/private/devicetoken {{4+}}\r\n2222)\r\n").as_bytes(),
    )
    .await;
    let r = c
        .read_response(&tag)
        .await
        .expect("SETMETADATA with literal");
    assert!(r.is_ok(), "SETMETADATA with LITERAL+: {r}");
    let r = c.cmd("GETMETADATA INBOX /private/devicetoken").await;
    assert_eq!(
        r.untagged.first().map(|l| l.raw.clone()),
        Some(b"* METADATA INBOX (/private/devicetoken {9}\r\n1111 2222)".to_vec()),
        "§12: all tokens space-separated, first-registration order: {r}"
    );
    // §12 shared key.
    let r = c
        .cmd("GETMETADATA \"\" /shared/vendor/deltachat/maxsmtprecipients")
        .await;
    assert!(r.is_ok(), "{r}");
    assert_eq!(
        r.untagged.first().map(|l| l.raw.clone()),
        Some(b"* METADATA \"\" (/shared/vendor/deltachat/maxsmtprecipients {4}\r\n1000)".to_vec()),
        "§12 maxsmtprecipients: {r}"
    );
    // §12: shared keys cannot be set.
    let r = c
        .cmd("SETMETADATA \"\" (/shared/vendor/deltachat/maxsmtprecipients \"5\")")
        .await;
    assert!(
        r.status == "NO" || r.status == "BAD",
        "SETMETADATA on a shared key: {r}"
    );
    c.logout().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sees_new_message() {
    let relay = Relay::start(&[]).await;
    let a = Account::random();
    let b = Account::random();
    let mut c = Imap::login_tls(&relay, &b).await;
    assert_eq!(c.select("INBOX").await, 0);
    let tag = c.tag();
    c.send_raw(format!("{tag} IDLE\r\n").as_bytes()).await;
    let cont = c.read_line().await.expect("IDLE continuation");
    assert!(
        cont.raw.starts_with(b"+"),
        "IDLE: expected `+ …`, got {cont}"
    );
    let m = encrypted_mail(&a.addr, &[&b.addr]);
    let sent_at = Instant::now();
    let r = Smtp::submit(&relay, &a, &[&b.addr], &m.bytes).await;
    assert_eq!(r.code, 250, "{r}");
    // IMAP-5: right after the commit (upstream ~200 ms end to end; bound 5 s).
    let line = c
        .wait_untagged(Duration::from_secs(5), |t| t.ends_with(" EXISTS"))
        .await
        .unwrap_or_else(|e| panic!("IMAP-5: no EXISTS during IDLE: {e}"));
    assert_eq!(line.text(), "* 1 EXISTS");
    eprintln!(
        "IDLE wake-up {} ms after submission start",
        sent_at.elapsed().as_millis()
    );
    c.send_raw(b"DONE\r\n").await;
    let r = c.read_response(&tag).await.expect("IDLE completion");
    assert!(r.is_ok(), "IDLE after DONE: {r}");
    let r = c
        .cmd(&format!(
            "FETCH 1 (BODY.PEEK[HEADER.FIELDS ({})])",
            "MESSAGE-ID"
        ))
        .await;
    assert!(r.is_ok(), "{r}");
    assert!(
        r.untagged.iter().any(|l| l.text().contains(&m.message_id)),
        "the new message is the one sent: {r}"
    );
    c.logout().await;
}

/// IMAP-7: ten concurrent sessions of one account work (all logged in and selected at
/// the same time); ACC-8: another account may share the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_sessions_of_one_account() {
    let relay = Relay::start(&[]).await;
    let a = Account::random();
    create_account(&relay, &a).await;
    let mut sessions = Vec::new();
    for _ in 0..10 {
        let mut c = Imap::login_tls(&relay, &a).await;
        assert_eq!(c.select("INBOX").await, 0);
        sessions.push(c);
    }
    let m = encrypted_mail(&a.addr, &[&a.addr]);
    let r = Smtp::submit(&relay, &a, &[&a.addr], &m.bytes).await;
    assert_eq!(r.code, 250, "{r}");
    for (i, c) in sessions.iter_mut().enumerate() {
        let r = c.cmd("NOOP").await;
        assert!(r.is_ok(), "session {i}: {r}");
        let r = c.cmd("FETCH 1 (UID)").await;
        assert!(r.is_ok(), "session {i} sees the new message: {r}");
    }
    for c in sessions {
        c.logout().await;
    }
    // ACC-8.
    let mut b = Account::random();
    b.password = a.password.clone();
    create_account(&relay, &b).await;
    Imap::login_tls(&relay, &a).await.logout().await;
}

/// The value of one METADATA entry: `Some(bytes)` for a literal (IMAP-8), `None` for
/// NIL; panics on any other form.
async fn get_metadata(c: &mut Imap, mailbox: &str, key: &str) -> Option<Vec<u8>> {
    let r = c.cmd(&format!("GETMETADATA {mailbox} {key}")).await;
    assert!(r.is_ok(), "GETMETADATA {mailbox} {key}: {r}");
    let line = r
        .untagged
        .iter()
        .find(|l| l.text().starts_with("* METADATA "))
        .unwrap_or_else(|| panic!("GETMETADATA {mailbox} {key}: no METADATA line: {r}"));
    let prefix = format!("* METADATA {mailbox} ({key} ");
    let text = line.text();
    assert!(
        text.starts_with(&prefix),
        "GETMETADATA {mailbox} {key}: {text:?} does not start with {prefix:?}"
    );
    if text == format!("{prefix}NIL)") {
        return None;
    }
    assert_eq!(
        line.literals.len(),
        1,
        "IMAP-8: {key} value must be one literal: {text:?}"
    );
    assert!(text.ends_with(')'), "{text:?}");
    Some(line.literals[0].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_metadata_keys() {
    let relay = Relay::start(&[]).await;
    let a = Account::random();
    let mut c = Imap::login_tls(&relay, &a).await;
    // §12, CFG-5: iroh_relay absent → https://<mail_domain>.
    assert_eq!(
        get_metadata(&mut c, "\"\"", "/shared/vendor/deltachat/irohrelay").await,
        Some(b"https://127.0.0.1".to_vec()),
        "CFG-5 default irohrelay"
    );
    assert_eq!(
        get_metadata(&mut c, "\"\"", "/shared/vendor/deltachat/maxsmtprecipients").await,
        Some(b"1000".to_vec())
    );
    for key in [
        "/shared/admin",
        "/shared/comment",
        "/shared/vendor/deltachat/nosuchkey",
    ] {
        assert_eq!(
            get_metadata(&mut c, "\"\"", key).await,
            None,
            "§12: {key} is NIL"
        );
    }
    for key in ["/shared/vendor/deltachat/irohrelay", "/shared/comment"] {
        let r = c.cmd(&format!("SETMETADATA \"\" ({key} \"x\")")).await;
        assert!(
            r.status == "NO" || r.status == "BAD",
            "§12: SET {key} refused: {r}"
        );
    }
    c.logout().await;

    let relay = Relay::start(&[
        "iroh_relay =   https://iroh.example.org  ",
        "privacy_mail = privacy@example.org",
    ])
    .await;
    let mut c = Imap::login_tls(&relay, &a).await;
    assert_eq!(
        get_metadata(&mut c, "\"\"", "/shared/vendor/deltachat/irohrelay").await,
        Some(b"https://iroh.example.org".to_vec()),
        "CFG-5: configured value, trimmed"
    );
    assert_eq!(
        get_metadata(&mut c, "\"\"", "/shared/admin").await,
        Some(b"mailto:privacy@example.org".to_vec()),
        "§12 /shared/admin"
    );
    c.logout().await;

    let relay = Relay::start(&["iroh_relay ="]).await;
    let mut c = Imap::login_tls(&relay, &a).await;
    assert_eq!(
        get_metadata(&mut c, "\"\"", "/shared/vendor/deltachat/irohrelay").await,
        None,
        "CFG-5: empty iroh_relay → NIL"
    );
    c.logout().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_metadata_key() {
    // RT-3: TURN off (the harness default `turn_listen =`) → NIL.
    let off = Relay::start(&[]).await;
    let a = Account::random();
    let mut c = Imap::login_tls(&off, &a).await;
    assert_eq!(
        get_metadata(&mut c, "\"\"", "/shared/vendor/deltachat/turn").await,
        None,
        "TURN disabled → NIL"
    );
    c.logout().await;

    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free UDP port")
        .port();
    let relay = Relay::start(&[&format!("turn_listen = 127.0.0.1:{port}")]).await;
    let mut c = Imap::login_tls(&relay, &a).await;
    // The server starts next to the listeners; allow it a moment (bounded).
    let mut value = None;
    for _ in 0..50 {
        value = get_metadata(&mut c, "\"\"", "/shared/vendor/deltachat/turn").await;
        if value.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let value = value.expect("§12/RT-2: /shared/vendor/deltachat/turn is NIL");
    let value = String::from_utf8(value).expect("ASCII");
    // §12: <mail_domain>:<port>:<username>:<password>; RT-2: username = expiry (now + 5 d).
    let mut parts = value.splitn(4, ':');
    // §22.5: the host form for IP-only relays is unverified upstream; both forms pass.
    let host = parts.next();
    assert!(
        host == Some("127.0.0.1") || host == Some("[127.0.0.1]"),
        "§12 TURN host: {value}"
    );
    let port = port.to_string();
    assert_eq!(parts.next(), Some(port.as_str()), "{value}");
    let user: u64 = parts
        .next()
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("RT-2: username is not a Unix time: {value}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let five_days = 5 * 86400;
    assert!(
        user.abs_diff(now + five_days) < 3600,
        "RT-2: expiry {user} is not now + 5 days ({})",
        now + five_days
    );
    let password = parts.next().unwrap_or("");
    assert!(!password.is_empty(), "RT-2: empty password: {value}");
    c.logout().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_reports_storage_in_kib() {
    let relay = Relay::start(&["max_mailbox_size = 3M"]).await;
    let a = Account::random();
    create_account(&relay, &a).await;
    let m = encrypted_mail(&a.addr, &[&a.addr]);
    let r = Smtp::submit(&relay, &a, &[&a.addr], &m.bytes).await;
    assert_eq!(r.code, 250, "{r}");
    let mut c = Imap::login_tls(&relay, &a).await;
    let r = c.cmd("GETQUOTAROOT INBOX").await;
    assert!(r.is_ok(), "{r}");
    // QUOTA-4, CFG-2: 3M = 3 MiB = 3072 KiB; one small message uses about 1 KiB.
    let quota = r
        .untagged_text()
        .into_iter()
        .find(|l| l.starts_with("* QUOTA "))
        .unwrap_or_else(|| panic!("QUOTA-4: no * QUOTA line: {r}"));
    let storage = quota
        .split("(STORAGE ")
        .nth(1)
        .unwrap_or_else(|| panic!("QUOTA-4: no STORAGE in {quota:?}"));
    let nums: Vec<u64> = storage
        .trim_end_matches(')')
        .split(' ')
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(nums.len(), 2, "QUOTA-4: {quota:?}");
    assert_eq!(nums[1], 3072, "QUOTA-4: limit in KiB: {quota:?}");
    let used_kib = (m.bytes.len() as u64).div_ceil(1024);
    assert!(
        nums[0] >= used_kib.saturating_sub(1) && nums[0] <= used_kib + 1,
        "QUOTA-4: usage {} KiB for one message of {} bytes",
        nums[0],
        m.bytes.len()
    );
    c.logout().await;
}
