//! One delivery attempt of one message to the recipients of one destination domain
//! (spec/relay.md §8 OUT-2..OUT-5): next hops (`route`), then per MX host HTTPS
//! `POST /mxdeliv` (`https`) unless the host recently took SMTP, then SMTP with STARTTLS
//! (`smtp`).
//!
//! CONTRACT (the lead's skeleton; the transport owner fills it in, keeping these
//! signatures).

use crate::config::Config;
use crate::policy::SmtpReply;

/// How a message reached the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Https,
    Smtp,
}

/// The result of one attempt, per recipient. Every recipient passed in appears in
/// exactly one of the three lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The peer accepted the message for these.
    pub accepted: Vec<String>,
    /// Try again later (4xx, connection failures, DNS errors), with the reason.
    pub temporary: Vec<(String, SmtpReply)>,
    /// Never (5xx, null MX, NXDOMAIN), with the reason for the bounce.
    pub permanent: Vec<(String, SmtpReply)>,
    /// How the accepted ones went.
    pub via: Option<Via>,
}

impl Outcome {
    /// Every recipient failed the same way.
    pub fn all_failed(recipients: &[String], reply: SmtpReply, permanent: bool) -> Outcome {
        let list = recipients
            .iter()
            .map(|r| (r.clone(), reply.clone()))
            .collect();
        if permanent {
            Outcome {
                permanent: list,
                ..Outcome::default()
            }
        } else {
            Outcome {
                temporary: list,
                ..Outcome::default()
            }
        }
    }
}

/// Outbound connections: resolver, TLS client configs, per-host state (the 30-minute
/// SMTP-only mark of OUT-3). Shared by every attempt.
pub struct Transport {
    _private: (),
}

impl Transport {
    pub fn new(config: &Config) -> Result<Transport, TransportError> {
        let _ = config;
        Ok(Transport { _private: () })
    }

    /// Deliver `body` from `sender` (empty = `<>`) to `recipients`, all of `domain`.
    pub async fn deliver(
        &self,
        domain: &str,
        sender: &str,
        recipients: &[String],
        body: &[u8],
    ) -> Outcome {
        let _ = (domain, sender, body);
        Outcome::all_failed(
            recipients,
            SmtpReply::new(421, "4.4.0 outbound delivery not built yet"),
            false,
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("DNS resolver: {0}")]
    Resolver(String),
    #[error("TLS roots: {0}")]
    Roots(String),
}
