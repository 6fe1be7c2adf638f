//! A refused sign-up says why (issue 16 item 2), against the real binary: when an
//! unknown name would be created at its first login but creation is off (the
//! `<data_dir>/nocreate` kill switch, CFG-6) or paused by a system limit (here
//! `min_free_disk_space` far above any disk, ACC-5.6), IMAP LOGIN and AUTHENTICATE and
//! SMTP AUTH answer with the reason in plain words and a code that says what happened
//! (RFC 5530 §3 UNAVAILABLE / CONTACTADMIN; RFC 4954 §6 454 4.7.0, or 550 5.7.0 for
//! the kill switch) instead of "authentication failed". A known name with a wrong
//! password still gets AUTHENTICATIONFAILED / 535 5.7.8; the refusal is a warning in
//! the log (the status page's recent problems) and counted in the metrics by reason;
//! the refused names are not created, and none of this closes the connection.

use std::time::Duration;

use relaybox_blackbox::mail::base64;
use relaybox_blackbox::metrics::{free_address, get, ini_line, samples, scrape, wait_for};
use relaybox_blackbox::{Account, Imap, Relay, Smtp, create_account};

const CLOSED_TEXT: &str = "This relay does not create new accounts";
const PAUSED_TEXT: &str = "New accounts are paused on this relay: ";

/// `LOGIN` and `AUTHENTICATE PLAIN` of `user` on one 993 connection: both answers.
async fn imap_logins(relay: &Relay, user: &str, password: &str) -> [String; 2] {
    let mut c = Imap::connect_tls(relay.imaps_addr()).await;
    c.greeting().await;
    let login = c.login(user, password).await;
    assert_eq!(login.status, "NO", "{login}");
    let token = base64(format!("\0{user}\0{password}").as_bytes());
    let auth = c.cmd(&format!("AUTHENTICATE PLAIN {token}")).await;
    assert_eq!(auth.status, "NO", "{auth}");
    // The connection is still served: the refusals were not counted as failed logins.
    let r = c.cmd("NOOP").await;
    assert!(r.is_ok(), "NOOP after the refusals: {r}");
    c.logout().await;
    [login.tagged, auth.tagged]
}

/// `AUTH PLAIN` of `user` on a 465 connection, twice (the connection stays usable).
async fn smtp_auth(relay: &Relay, user: &str, password: &str) -> String {
    let mut s = Smtp::connect_tls(relay.submissions_addr()).await;
    s.greeting().await;
    s.ehlo().await;
    let first = s.auth_plain(user, password).await;
    let again = s.auth_plain(user, password).await;
    assert_eq!(first.lines, again.lines, "the same answer twice");
    s.quit().await;
    first.last().to_string()
}

fn metric(reason: &str) -> String {
    format!("relaybox_registrations_refused_total{{reason=\"{reason}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_switch_says_sign_up_is_closed_and_wrong_passwords_still_fail() {
    let metrics = free_address();
    let relay = Relay::start(&[&ini_line(metrics)]).await;
    let known = Account::random();
    create_account(&relay, &known).await;
    std::fs::write(relay.data_dir().join("nocreate"), b"").expect("kill switch");
    let before = samples(&scrape(metrics, None).await.body_text());

    let fresh = Account::random();
    for tagged in imap_logins(&relay, &fresh.addr, &fresh.password).await {
        // RFC 5530 §3 CONTACTADMIN: only the owner can change it.
        assert!(
            tagged.contains(&format!("NO [CONTACTADMIN] {CLOSED_TEXT}")),
            "IMAP answer for a new name with sign-up closed: {tagged}"
        );
        assert!(
            !tagged.contains("nocreate"),
            "no path for the user: {tagged}"
        );
    }
    let smtp = smtp_auth(&relay, &fresh.addr, &fresh.password).await;
    assert!(
        smtp.starts_with(&format!("550 5.7.0 {CLOSED_TEXT}")),
        "SMTP answer for a new name with sign-up closed: {smtp}"
    );

    // A known name with a wrong password: a wrong password, as before.
    for tagged in imap_logins(&relay, &known.addr, "wrong-password-1").await {
        assert!(
            tagged.contains("NO [AUTHENTICATIONFAILED]"),
            "IMAP answer for a wrong password: {tagged}"
        );
    }
    let smtp = smtp_auth(&relay, &known.addr, "wrong-password-1").await;
    assert!(smtp.starts_with("535 5.7.8"), "SMTP wrong password: {smtp}");
    // And the right one logs in: the kill switch blocks creation, not logins.
    Imap::login_tls(&relay, &known).await.logout().await;

    // The refused name was not created: with the switch off it is created now, with
    // another password than the one refused.
    std::fs::remove_file(relay.data_dir().join("nocreate")).expect("switch off");
    let other = Account {
        password: "another-password-9".into(),
        ..fresh
    };
    create_account(&relay, &other).await;

    // Counted by reason: 2 IMAP + 2 SMTP refusals.
    let (text, after) = wait_for(metrics, Duration::from_secs(10), |s| {
        get(s, &metric("closed")) >= get(&before, &metric("closed")) + 4
    })
    .await;
    assert_eq!(
        get(&after, &metric("closed")) - get(&before, &metric("closed")),
        4,
        "{text}"
    );
    // The owner sees it among the warnings (the status page's recent problems), once
    // for the four refusals within the minute.
    let log = relay.stderr();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("registration rejected"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("account creation disabled") && warnings[0].contains("nocreate"),
        "{warnings:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_limit_pauses_sign_up_with_a_temporary_answer() {
    let metrics = free_address();
    let relay = Relay::start(&[
        &ini_line(metrics),
        // ACC-5.6: more free space than any disk has.
        "min_free_disk_space = 100000000G",
    ])
    .await;
    let fresh = Account::random();
    for tagged in imap_logins(&relay, &fresh.addr, &fresh.password).await {
        // RFC 5530 §3 UNAVAILABLE: temporary.
        assert!(
            tagged.contains(&format!("NO [UNAVAILABLE] {PAUSED_TEXT}")),
            "IMAP answer for a new name with sign-up paused: {tagged}"
        );
        assert!(
            tagged.contains("disk is nearly full") && tagged.contains("100000000 GiB needed"),
            "the reason in plain words: {tagged}"
        );
    }
    let smtp = smtp_auth(&relay, &fresh.addr, &fresh.password).await;
    // RFC 4954 §6: 454 4.7.0, a temporary failure, not a wrong password.
    assert!(
        smtp.starts_with(&format!("454 4.7.0 {PAUSED_TEXT}")) && smtp.contains("disk"),
        "SMTP answer for a new name with sign-up paused: {smtp}"
    );
    let text = scrape(metrics, None).await.body_text();
    assert_eq!(get(&samples(&text), &metric("disk")), 4, "{text}");
    assert_eq!(get(&samples(&text), &metric("closed")), 0, "{text}");
}
