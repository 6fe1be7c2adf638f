//! Where an envelope recipient goes, for `RCPT TO` on every SMTP port and the `X-MAIL-TO`
//! headers of `/mxdeliv` alike: the address's syntax, this relay's domain or another
//! (IN-2: only submission relays elsewhere), the account it names (SUB-14), and how many
//! one transaction takes (SUB-5). Whether the account exists and has room is the
//! caller's question (`crate::delivery::Recipients`, it reads the store).

use super::SmtpReply;

/// SUB-5: recipients per transaction (Postfix `smtpd_recipient_limit`); `/mxdeliv`
/// takes as many `X-MAIL-TO` headers.
pub const MAX_PER_TRANSACTION: usize = 1000;

/// Whether recipients outside this relay's domain are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relaying {
    /// Submission (587, 465): the relay sends the message on.
    Allowed,
    /// Port 25 and `/mxdeliv`: only this relay's own addresses (IN-2).
    Denied,
}

/// Where a recipient goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// The account of this relay the address names (canonical: lower case, `+ext`
    /// removed, SUB-14).
    Local(String),
    /// Another domain (submission only): the address as given.
    Remote,
}

/// The destination of `to` (a bare address) at a relay whose address domain is
/// `own_domain` (`example.org`, or `[192.0.2.1]` in IP-only mode).
pub fn destination(
    to: &str,
    own_domain: &str,
    relaying: Relaying,
) -> Result<Destination, SmtpReply> {
    let Some((local_part, domain)) = to.rsplit_once('@') else {
        return Err(bad_syntax());
    };
    if domain.eq_ignore_ascii_case(own_domain) {
        // SUB-14: `user+ext@domain` is `user@domain`.
        let user = local_part.split('+').next().unwrap_or("");
        return Ok(Destination::Local(format!(
            "{}@{}",
            user.to_ascii_lowercase(),
            own_domain.to_ascii_lowercase()
        )));
    }
    match relaying {
        Relaying::Allowed => Ok(Destination::Remote),
        // IN-2.
        Relaying::Denied => Err(relay_denied(to)),
    }
}

/// RFC 5321 §4.5.3.1.8, SUB-5: one recipient too many.
pub fn too_many() -> SmtpReply {
    SmtpReply::new(452, "4.5.3 Error: too many recipients")
}

/// An address without `@`, or one the envelope parser refused (Postfix's words).
pub fn bad_syntax() -> SmtpReply {
    SmtpReply::new(501, "5.1.3 Bad recipient address syntax")
}

/// IN-2: a recipient outside this relay's domain, from another relay.
pub fn relay_denied(rcpt: &str) -> SmtpReply {
    SmtpReply::new(554, format!("5.7.1 <{rcpt}>: Relay access denied"))
}

/// IN-2, the allowed variant: an address of this domain without an account, refused at
/// RCPT (the sender still gets a bounce from its own relay).
pub fn user_unknown(rcpt: &str) -> SmtpReply {
    SmtpReply::new(
        550,
        format!("5.1.1 <{rcpt}>: Recipient address rejected: User unknown"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        use Destination::{Local, Remote};
        use Relaying::{Allowed, Denied};
        let local = |a: &str| Ok(Local(a.to_string()));
        // (address, own domain, relaying, outcome)
        let cases = [
            (
                "bob@example.org",
                "example.org",
                Denied,
                local("bob@example.org"),
            ),
            (
                "Bob@EXAMPLE.org",
                "example.org",
                Denied,
                local("bob@example.org"),
            ),
            (
                "bob+tag@example.org",
                "example.org",
                Allowed,
                local("bob@example.org"),
            ),
            (
                "bob+a+b@example.org",
                "example.org",
                Denied,
                local("bob@example.org"),
            ),
            (
                "+tag@example.org",
                "example.org",
                Denied,
                local("@example.org"),
            ),
            (
                "bob@example.org",
                "Example.Org",
                Denied,
                local("bob@example.org"),
            ),
            (
                "bob@[192.0.2.1]",
                "[192.0.2.1]",
                Denied,
                local("bob@[192.0.2.1]"),
            ),
            (
                "a@b@example.org",
                "example.org",
                Denied,
                local("a@b@example.org"),
            ),
            ("bob@other.example", "example.org", Allowed, Ok(Remote)),
            ("bob@sub.example.org", "example.org", Allowed, Ok(Remote)),
            (
                "bob@other.example",
                "example.org",
                Denied,
                Err(relay_denied("bob@other.example")),
            ),
            (
                "bob@[192.0.2.2]",
                "[192.0.2.1]",
                Denied,
                Err(relay_denied("bob@[192.0.2.2]")),
            ),
            ("bob", "example.org", Allowed, Err(bad_syntax())),
            ("", "example.org", Denied, Err(bad_syntax())),
        ];
        for (to, own, relaying, want) in cases {
            assert_eq!(
                destination(to, own, relaying),
                want,
                "{to} at {own}, {relaying:?}"
            );
        }
    }

    #[test]
    fn reply_strings_exact() {
        assert_eq!(
            too_many().to_string(),
            "452 4.5.3 Error: too many recipients"
        );
        assert_eq!(
            bad_syntax().to_string(),
            "501 5.1.3 Bad recipient address syntax"
        );
        assert_eq!(
            relay_denied("a@b.example").to_string(),
            "554 5.7.1 <a@b.example>: Relay access denied"
        );
        assert_eq!(
            user_unknown("a@b.example").to_string(),
            "550 5.1.1 <a@b.example>: Recipient address rejected: User unknown"
        );
    }
}
