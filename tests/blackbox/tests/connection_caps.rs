//! Upstream parity (issue 18 item 1): the connection caps `max_imap_connections`
//! (default 10 000) and `max_smtp_connections` (default 1 000, per service) with the
//! plain-text ports' answers to the one over the cap: IMAP `* BYE [UNAVAILABLE] …`
//! (RFC 5530 §3) on 143, SMTP `421 4.7.0 …` (RFC 5321 §3.8, RFC 3463) on 25. The TLS
//! ports and 443 are covered by `connections.rs`, 587 by `limits.rs`; the defaults by
//! `config::tests` in the daemon.

use std::time::Duration;

use relaybox_blackbox::{Imap, Relay, Smtp};

const BUSY: &str = "Too many connections, try again later";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_port_25_over_the_cap_gets_421() {
    let relay = Relay::start(&["max_smtp_connections = 1"]).await;
    let mut held = Smtp::connect(relay.smtp_addr()).await;
    held.greeting().await;
    let mut over = Smtp::connect(relay.smtp_addr()).await;
    let r = over.reply("connect over the cap").await;
    assert_eq!(r.code, 421, "{r}");
    let line = r.last();
    assert!(line.starts_with("421 4.7.0 "), "{line}");
    assert!(line.ends_with(BUSY), "{line}");
    assert!(
        over.conn.wait_closed(Duration::from_secs(5)).await.0,
        "closed"
    );
    // The admitted session still works.
    held.ehlo().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_port_143_over_the_cap_gets_bye_unavailable() {
    let relay = Relay::start(&["max_imap_connections = 1"]).await;
    let mut held = Imap::connect(relay.imap_addr()).await;
    held.greeting().await;
    let mut over = Imap::connect(relay.imap_addr()).await;
    let line = over.read_line().await.expect("an answer, not a bare close");
    assert_eq!(line.text(), format!("* BYE [UNAVAILABLE] {BUSY}"));
    assert!(held.cmd("NOOP").await.is_ok());
}
