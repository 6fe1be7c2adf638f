//! Onboarding end to end against the real binary: `POST /new` over HTTPS (NEW-1..NEW-3,
//! self-signed IP-only mode) hands out credentials that then log in over IMAP and
//! submit over SMTP (ACC-5: the account appears at first login).

use relaybox_blackbox::conn::LineConn;
use relaybox_blackbox::{Account, Imap, Relay, Smtp, encrypted_mail, http};

/// The value of a top-level JSON string field (flat objects only; RFC 8259 §7 escapes).
fn json_string(body: &str, key: &str) -> Option<String> {
    let start = body.find(&format!("\"{key}\""))? + key.len() + 2;
    let rest = body[start..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_account_over_https_logs_in() {
    let relay = Relay::start(&[]).await;
    let mut conn = LineConn::connect_tls(relay.https_addr(), &[b"http/1.1"])
        .await
        .expect("TLS to the HTTPS port");
    let resp = http::request(&mut conn, "POST /new HTTP/1.1\nHost: 127.0.0.1", b"")
        .await
        .expect("POST /new");
    let body = resp.body_text();
    // NEW-1.
    assert_eq!(resp.status, 200, "POST /new: {}\n{body}", resp.status_line);
    assert!(
        resp.header("Content-Type")
            .is_some_and(|v| v.starts_with("application/json")),
        "NEW-1 content type: {:?}",
        resp.headers
    );
    let email = json_string(&body, "email").unwrap_or_else(|| panic!("no email in {body}"));
    let password =
        json_string(&body, "password").unwrap_or_else(|| panic!("no password in {body}"));
    // NEW-2: 9 chars of [a-z0-9] at the address domain; password 9 + 3 = 12 chars.
    let local = email
        .strip_suffix("@[127.0.0.1]")
        .unwrap_or_else(|| panic!("NEW-2: {email} not at [127.0.0.1]"));
    assert_eq!(local.len(), 9, "NEW-2 local part: {email}");
    assert!(
        local
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "NEW-2: {email}"
    );
    assert_eq!(password.len(), 12, "NEW-2 password length");
    assert!(
        password.bytes().all(|b| b.is_ascii_graphic()),
        "NEW-2 password characters"
    );
    // NEW-3: self-signed IP-only mode adds dclogin_url with ih/sh and ic=3.
    let url = json_string(&body, "dclogin_url")
        .unwrap_or_else(|| panic!("NEW-3: no dclogin_url in {body}"));
    assert!(
        url.starts_with(&format!("dclogin:{email}?p=")),
        "NEW-3: {url}"
    );
    for part in ["&v=1", "&ih=127.0.0.1", "&sh=127.0.0.1", "&ic=3"] {
        assert!(url.contains(part), "NEW-3: {part} missing in {url}");
    }
    // ACC-5: the account appears at first login.
    let a = Account {
        local: local.to_string(),
        addr: email.clone(),
        password,
    };
    Imap::login_tls(&relay, &a).await.logout().await;
    let m = encrypted_mail(&a.addr, &[&a.addr]);
    let r = Smtp::submit(&relay, &a, &[&a.addr], &m.bytes).await;
    assert_eq!(r.code, 250, "{r}");
    assert_eq!(Imap::fetch_inbox(&relay, &a).await.len(), 1);
}
