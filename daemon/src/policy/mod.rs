//! Pure rules of spec/relay.md (DESIGN.md principle 4): functions over plain data that
//! decide; the sessions do the I/O and call them.

pub mod gate;
pub mod headers;
pub mod inbound;
pub mod literal;
pub mod names;
pub mod quota;
pub mod ratelimit;
pub mod recipient;
pub mod retry;
pub mod submission;
pub mod token;

use std::fmt;

/// An SMTP reply decided by a rule: the code and the rest of the line (with the
/// enhanced status code where the spec gives one), e.g. `523` +
/// `Encryption Needed: Invalid Unencrypted Mail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    pub code: u16,
    pub text: String,
}

impl SmtpReply {
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        SmtpReply {
            code,
            text: text.into(),
        }
    }
}

/// SUB-6 / IN-4a: a message the structure parser refuses (spec §10 "unparsable").
pub fn unparsable(why: &crate::message::Refusal) -> SmtpReply {
    SmtpReply::new(500, format!("Failed to parse message: {why}"))
}

impl fmt::Display for SmtpReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}
