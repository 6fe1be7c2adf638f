//! Privacy as seen from outside, in the relay's own log (stderr): never an IP address
//! together with an account on one line (LOG-2, ACC-11 "never an IP with an account"),
//! never message contents (LOG-3), at the default level and at debug level. The client
//! connects from 127.0.0.2 so its address is distinguishable from the relay's.

use std::net::{IpAddr, Ipv4Addr};

use relaybox_blackbox::{Account, Imap, MailBuilder, Relay, Smtp};

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

async fn exercise_and_check_log(level: &str) {
    let relay = Relay::start_with_env(&[], &[("RELAYBOX_LOG", level)]).await;
    let a = Account::random();
    let b = Account::random();
    let subject_marker = "subjectmarker4711";
    let body_marker = "bodymarker0815";

    // IMAP from the client address: creation, a failed login, a good one.
    let mut c = Imap::connect_from(CLIENT, relay.imap_addr()).await;
    c.greeting().await;
    c.starttls().await;
    let r = c.login(&b.addr, &b.password).await;
    assert!(r.is_ok(), "{r}");
    c.logout().await;
    let mut c = Imap::connect_from(CLIENT, relay.imap_addr()).await;
    c.greeting().await;
    c.starttls().await;
    let r = c.login(&b.addr, "wrong-password-123").await;
    assert_eq!(r.status, "NO", "{r}");
    drop(c);

    // Submission from the client address: one encrypted, one cleartext (refused).
    let mut s = Smtp::connect_from(CLIENT, relay.submission_addr()).await;
    s.greeting().await;
    s.ehlo().await;
    s.starttls().await;
    s.ehlo().await;
    let r = s.auth_plain(&a.addr, &a.password).await;
    assert_eq!(r.code, 235, "{r}");
    let m = MailBuilder::encrypted(&a.addr, &[&b.addr])
        .header("Subject", subject_marker)
        .build();
    let r = s.send_mail(&a.addr, &[&b.addr], &m.bytes).await;
    assert_eq!(r.code, 250, "{r}");
    let clear = MailBuilder::cleartext(&a.addr, &[&b.addr], body_marker)
        .header("Subject", subject_marker)
        .build();
    let r = s.send_mail(&a.addr, &[&b.addr], &clear.bytes).await;
    assert_eq!(r.code, 523, "{r}");
    s.quit().await;

    // Fetch from the client address.
    let mut c = Imap::connect_from(CLIENT, relay.imap_addr()).await;
    c.greeting().await;
    c.starttls().await;
    let r = c.login(&b.addr, &b.password).await;
    assert!(r.is_ok(), "{r}");
    assert_eq!(c.select("INBOX").await, 1);
    assert_eq!(c.fetch_bodies(1).await.len(), 1);
    c.logout().await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let log = relay.stderr();
    eprintln!(
        "RELAYBOX_LOG={level}: {} log lines, {} mention the client IP",
        log.lines().count(),
        log.lines().filter(|l| l.contains("127.0.0.2")).count()
    );
    let client_ip = CLIENT.to_string();
    let mut problems = Vec::new();
    for line in log.lines() {
        let names_account = [&a, &b]
            .iter()
            .any(|acc| line.contains(&acc.addr) || line.contains(&acc.local));
        if line.contains(&client_ip) && names_account {
            problems.push(format!("LOG-2 IP with account: {line}"));
        }
        if line.contains(subject_marker) || line.contains(body_marker) {
            problems.push(format!("LOG-3 message contents: {line}"));
        }
        if line.contains(&a.password) || line.contains(&b.password) {
            problems.push(format!("password in the log: {line}"));
        }
    }
    assert!(
        problems.is_empty(),
        "RELAYBOX_LOG={level}:\n{}",
        problems.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_log_level_keeps_ip_and_account_apart() {
    exercise_and_check_log("info").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_log_level_keeps_ip_and_account_apart() {
    exercise_and_check_log("debug").await;
}
