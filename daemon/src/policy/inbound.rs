//! Rules for mail arriving from other relays (port 25 and `/mxdeliv`, spec/relay.md §9):
//! the encryption part of IN-4 (a–d) and the address-literal part of the origin check
//! (IN-4e, [`origin`]); the DKIM part of IN-4e is `crate::dkim::Verifier`, the header
//! stripping before storing (IN-7) is in `policy::headers`.

use std::net::IpAddr;

use crate::message::View;
use crate::policy::SmtpReply;
use crate::policy::gate::{self, Direction, encryption_needed};
use crate::policy::headers::{from_address, reply_value};

/// What the session must do with an accepted inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundVerdict {
    /// IN-4b: MAIL FROM differs from the From address; the envelope sender becomes `<>`
    /// (so that no bounce goes to a forged or rewritten sender).
    pub reset_sender: bool,
}

/// IN-4 a–d, in order, for a message the structure parser accepted (IN-4a's parse): From
/// address (a), sender reset (b), encrypted or Secure-Join (c), cleartext exceptions (d).
/// `any_rcpt_enforces_e2ee` is true when at least one recipient has the enforce-E2EE flag.
pub fn judge(
    msg: View<'_>,
    mail_from: &str,
    any_rcpt_enforces_e2ee: bool,
) -> Result<InboundVerdict, SmtpReply> {
    // IN-4a: no From address → 500.
    let from = from_address(msg).map_err(|value| {
        SmtpReply::new(500, format!("Invalid FROM header: {}", reply_value(&value)))
    })?;
    // IN-4b: not rejected, the envelope sender is reset.
    let verdict = InboundVerdict {
        reset_sender: !mail_from.eq_ignore_ascii_case(&from),
    };
    // IN-4c: encrypted (incoming variant) or a Secure-Join request.
    if gate::is_encrypted(msg, Direction::Incoming) || gate::is_securejoin_request(msg) {
        tracing::info!("Incoming: Filtering encrypted mail.");
        return Ok(verdict);
    }
    tracing::info!("Incoming: Filtering unencrypted mail.");
    // IN-4d(i): a delivery report from a mailer daemon.
    if is_mailer_daemon_report(msg, &from) {
        tracing::debug!("accepting cleartext delivery report");
        return Ok(verdict);
    }
    // IN-4d(ii): cleartext only for recipients without the enforce-E2EE flag.
    if !any_rcpt_enforces_e2ee {
        return Ok(verdict);
    }
    tracing::info!("Rejected unencrypted mail");
    Err(encryption_needed())
}

/// IN-4d(i): `Auto-Submitted` present and non-empty, From address (lower-cased) starting
/// with `mailer-daemon@`, top-level type `multipart/report`.
fn is_mailer_daemon_report(msg: View<'_>, from: &str) -> bool {
    let auto_submitted = msg
        .header_text("Auto-Submitted")
        .is_some_and(|v| !v.is_empty());
    let daemon = from.to_lowercase().starts_with("mailer-daemon@");
    let report = msg.root.content_type.is("multipart", "report");
    auto_submitted && daemon && report
}

/// How IN-4e establishes where a message comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The From domain is an address literal and it is the connecting address (IP-only
    /// relays, MODE-1): no DKIM needed.
    Literal,
    /// The From domain is an address literal of another address: refused.
    Refused(SmtpReply),
    /// The From domain is a name: DKIM decides.
    Dkim,
}

/// IN-4e for the From domain `domain` (as in the address: `[192.0.2.1]`,
/// `[IPv6:2001:db8::1]` or a name) of a message from `client` (the SMTP client, or the
/// HTTP peer of `/mxdeliv`). IPv4-mapped IPv6 addresses count as the IPv4 address.
pub fn origin(domain: &str, client: IpAddr) -> Origin {
    let Some(literal) = super::literal::address_literal(domain) else {
        return Origin::Dkim;
    };
    let client = client.to_canonical();
    match literal {
        Ok(ip) if ip.to_canonical() == client => Origin::Literal,
        _ => Origin::Refused(SmtpReply::new(
            500,
            format!(
                "Invalid FROM domain literal: {} does not match origin IP {client}",
                domain.trim_start_matches('[').trim_end_matches(']')
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Parsed, normalize_line_endings};
    use crate::policy::unparsable;

    /// Parse (as SMTP delivers it) and judge.
    fn judge(raw: &[u8], mail_from: &str, enforce: bool) -> Result<InboundVerdict, SmtpReply> {
        let msg =
            Parsed::parse(normalize_line_endings(raw.to_vec())).map_err(|r| unparsable(&r))?;
        super::judge(msg.view(), mail_from, enforce)
    }
    use crate::policy::gate::test_support::{
        self as support, ArmorSpec, FIXTURES, FOLDER_CONCRETE, FOLDER_TEMPLATES, Verdict,
    };

    const KEEP: InboundVerdict = InboundVerdict {
        reset_sender: false,
    };
    const RESET: InboundVerdict = InboundVerdict { reset_sender: true };

    fn e523() -> SmtpReply {
        SmtpReply::new(523, "Encryption Needed: Invalid Unencrypted Mail")
    }

    #[test]
    fn reply_strings_exact() {
        assert_eq!(
            judge(b"", "a@b.c", true).unwrap_err().to_string(),
            "500 Invalid FROM header: "
        );
        assert_eq!(
            judge(b"Subject: x\r\n\r\nhi\r\n", "a@b.c", true)
                .unwrap_err()
                .to_string(),
            "500 Invalid FROM header: "
        );
        assert_eq!(
            judge(b"From: undisclosed: ;\r\n\r\nhi\r\n", "a@b.c", false)
                .unwrap_err()
                .to_string(),
            "500 Invalid FROM header: undisclosed: ;"
        );
        assert_eq!(
            judge(b"From: a@b.c\r\n\r\nhi\r\n", "a@b.c", true)
                .unwrap_err()
                .to_string(),
            "523 Encryption Needed: Invalid Unencrypted Mail"
        );
    }

    #[test]
    fn sender_reset_and_cleartext_rules() {
        let plain = b"From: A <a@b.c>\r\nTo: d@e.f\r\n\r\nhi\r\n";
        // IN-4d(ii): legacy recipients take cleartext.
        assert_eq!(judge(plain, "a@b.c", false), Ok(KEEP));
        assert_eq!(judge(plain, "A@B.C", false), Ok(KEEP));
        // IN-4b: mismatch is not a rejection.
        assert_eq!(judge(plain, "bounce+srs@b.c", false), Ok(RESET));
        assert_eq!(judge(plain, "", false), Ok(RESET));
        assert_eq!(judge(plain, "a@b.c", true), Err(e523()));
        // Encrypted mail passes with or without the reset.
        let armored = support::pgp_armored(ArmorSpec::default(), 30);
        let raw = support::pgp_mime("a@b.c", "d@e.f", &armored);
        assert_eq!(judge(&raw, "a@b.c", true), Ok(KEEP));
        assert_eq!(judge(&raw, "", true), Ok(RESET));
    }

    fn report(from: &str, auto_submitted: Option<&str>, ctype: &str) -> Vec<u8> {
        let auto = auto_submitted
            .map(|v| format!("Auto-Submitted:{v}\n"))
            .unwrap_or_default();
        format!(
            "From: {from}\nTo: d@e.f\n{auto}MIME-Version: 1.0\n\
             Content-Type: {ctype}; report-type=delivery-status;\n boundary=\"r1\"\n\n\
             --r1\ncontent-type: text/plain\n\nfailed\n--r1\n\
             content-type: message/delivery-status\n\nReporting-MTA: dns; b.c\n--r1--\n"
        )
        .into_bytes()
    }

    #[test]
    fn mailer_daemon_exception_table() {
        let cases: &[(&str, Option<&str>, &str, bool)] = &[
            (
                "MAILER-DAEMON@b.c",
                Some(" auto-replied"),
                "multipart/report",
                true,
            ),
            (
                "Mail Delivery System <mailer-daemon@b.c>",
                Some(" auto-generated "),
                "multipart/report",
                true,
            ),
            ("MAILER-DAEMON@b.c", Some(" no"), "Multipart/Report", true),
            ("MAILER-DAEMON@b.c", None, "multipart/report", false),
            ("MAILER-DAEMON@b.c", Some(""), "multipart/report", false),
            ("MAILER-DAEMON@b.c", Some("   "), "multipart/report", false),
            (
                "postmaster@b.c",
                Some(" auto-replied"),
                "multipart/report",
                false,
            ),
            (
                "x-mailer-daemon@b.c",
                Some(" auto-replied"),
                "multipart/report",
                false,
            ),
            (
                "MAILER-DAEMON@b.c",
                Some(" auto-replied"),
                "multipart/mixed",
                false,
            ),
        ];
        for (from, auto, ctype, accepted) in cases {
            let raw = report(from, *auto, ctype);
            let got = judge(&raw, "", true);
            if *accepted {
                assert_eq!(got, Ok(RESET), "{from} {auto:?} {ctype}");
            } else {
                assert_eq!(got, Err(e523()), "{from} {auto:?} {ctype}");
            }
        }
    }

    #[test]
    fn generated_messages_incoming() {
        let deliver = |armored: &str| {
            let raw = support::pgp_mime(support::FROM, support::TO, armored);
            judge(&raw, support::FROM, true)
        };
        assert_eq!(
            deliver(&support::pgp_armored(ArmorSpec::default(), 40)),
            Ok(KEEP)
        );
        // GATE-6: a Version armor header is accepted incoming.
        let version = ArmorSpec {
            headers: &[("Version", "rpgp")],
            ..ArmorSpec::default()
        };
        assert_eq!(deliver(&support::pgp_armored(version, 41)), Ok(KEEP));
        let comment = ArmorSpec {
            headers: &[("Comment", "hello")],
            ..ArmorSpec::default()
        };
        assert_eq!(deliver(&support::pgp_armored(comment, 42)), Err(e523()));
    }

    #[test]
    fn upstream_fixtures_incoming() {
        let Some(dir) = support::fixtures_dir() else {
            return;
        };
        for folder in [FOLDER_CONCRETE, FOLDER_TEMPLATES] {
            for fx in FIXTURES {
                let loaded = support::load_fixture(&dir, folder, fx.name);
                let got = judge(&loaded.raw, &loaded.from, true);
                let want = match fx.incoming {
                    Verdict::Accept => Ok(KEEP),
                    Verdict::Reject523 => Err(e523()),
                };
                assert_eq!(got, want, "{folder}/{}", fx.name);
                // README note 3: legacy recipients accept every case.
                assert_eq!(
                    judge(&loaded.raw, &loaded.from, false),
                    Ok(KEEP),
                    "{folder}/{} legacy recipient",
                    fx.name
                );
            }
        }
    }

    #[test]
    fn origin_of_address_literals_and_names() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let refused = |literal: &str, client: &str| {
            Origin::Refused(SmtpReply::new(
                500,
                format!("Invalid FROM domain literal: {literal} does not match origin IP {client}"),
            ))
        };
        // (From domain, client, outcome)
        let cases = [
            ("[192.0.2.1]", "192.0.2.1", Origin::Literal),
            ("[192.0.2.1]", "::ffff:192.0.2.1", Origin::Literal),
            ("[IPv6:::ffff:192.0.2.1]", "192.0.2.1", Origin::Literal),
            // Not an address literal (RFC 5321 §4.1.3: IPv6 needs its tag).
            (
                "[::ffff:192.0.2.1]",
                "192.0.2.1",
                refused("::ffff:192.0.2.1", "192.0.2.1"),
            ),
            ("[IPv6:2001:db8::1]", "2001:db8::1", Origin::Literal),
            ("[ipv6:2001:DB8::1]", "2001:db8::1", Origin::Literal),
            (
                "[2001:db8::1]",
                "2001:db8::1",
                refused("2001:db8::1", "2001:db8::1"),
            ),
            (
                "[192.0.2.1]",
                "192.0.2.2",
                refused("192.0.2.1", "192.0.2.2"),
            ),
            (
                "[192.0.2.1]",
                "::ffff:192.0.2.2",
                refused("192.0.2.1", "192.0.2.2"),
            ),
            (
                "[IPv6:2001:db8::1]",
                "192.0.2.1",
                refused("IPv6:2001:db8::1", "192.0.2.1"),
            ),
            (
                "[IPv6:192.0.2.1]",
                "192.0.2.9",
                refused("IPv6:192.0.2.1", "192.0.2.9"),
            ),
            (
                "[relay.example]",
                "192.0.2.1",
                refused("relay.example", "192.0.2.1"),
            ),
            ("[]", "192.0.2.1", refused("", "192.0.2.1")),
            ("[IPv6]", "192.0.2.1", refused("IPv6", "192.0.2.1")),
            ("[ü.ü]", "192.0.2.1", refused("ü.ü", "192.0.2.1")),
            ("relay.example", "192.0.2.1", Origin::Dkim),
            ("192.0.2.1", "192.0.2.1", Origin::Dkim),
            // Bracketed but unclosed: not a name, not a literal.
            ("[192.0.2.1", "192.0.2.1", refused("192.0.2.1", "192.0.2.1")),
            ("192.0.2.1]", "192.0.2.1", Origin::Dkim),
        ];
        for (domain, client, want) in cases {
            assert_eq!(origin(domain, ip(client)), want, "{domain} from {client}");
        }
    }
}
