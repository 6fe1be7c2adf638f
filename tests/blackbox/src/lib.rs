//! Harness for the black-box tests: start the real `relaybox` binary on loopback ports
//! with a temporary chatmail.ini ([`relay`]), and speak raw SMTP ([`smtp`]) and IMAP
//! ([`imap`]) to it over plain TCP, STARTTLS and implicit TLS ([`conn`]), with test
//! accounts and messages from [`mail`]. Every read is bounded in time.

pub mod conn;
pub mod imap;
pub mod mail;
pub mod relay;
pub mod smtp;

pub use conn::{LineConn, ReadError};
pub use imap::{Imap, Response};
pub use mail::{Account, DOMAIN, Mail, MailBuilder, encrypted_mail};
pub use relay::Relay;
pub use smtp::{Reply, Smtp};
