//! Harness for the black-box tests: start the real `relaybox` binary on loopback ports
//! with a temporary chatmail.ini ([`relay`]), and speak raw SMTP ([`smtp`]) and IMAP
//! ([`imap`]) to it over plain TCP, STARTTLS and implicit TLS ([`conn`]), plus a little
//! HTTP over TLS ([`http`]), with test accounts and messages from [`mail`]. Every read
//! is bounded in time.

pub mod ca;
pub mod conn;
pub mod dns;
pub mod federation;
pub mod http;
pub mod imap;
pub mod mail;
pub mod metrics;
pub mod pebble;
pub mod postfix;
pub mod relay;
pub mod smtp;

pub use conn::{LineConn, ReadError};
pub use imap::{Imap, Response};
pub use mail::{Account, DOMAIN, Mail, MailBuilder, encrypted_mail};
pub use relay::Relay;
pub use smtp::{Reply, Smtp};

/// Create `account` on the relay by logging in once over IMAP (ACC-5), asserted.
pub async fn create_account(relay: &Relay, account: &Account) {
    Imap::login_tls(relay, account).await.logout().await;
}

/// A fresh client is served normally: a new account logs in over IMAP, submits an
/// encrypted message to itself (`250`), and finds it in its INBOX. Used after each
/// bad-input case ("the daemon keeps serving everyone else").
pub async fn assert_serving(relay: &Relay) {
    let a = Account::random();
    create_account(relay, &a).await;
    let mail = encrypted_mail(&a.addr, &[&a.addr]);
    let r = Smtp::submit(relay, &a, &[&a.addr], &mail.bytes).await;
    assert_eq!(r.code, 250, "fresh client: submission to self: {r}");
    let inbox = Imap::fetch_inbox(relay, &a).await;
    assert_eq!(inbox.len(), 1, "fresh client: INBOX after one submission");
    assert_eq!(
        mail::stored_message_id(&inbox[0]).as_deref(),
        Some(mail.message_id.as_str()),
        "fresh client: stored Message-ID"
    );
}
