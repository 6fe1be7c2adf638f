//! Rules for outgoing mail on the submission ports (spec/relay.md §6): the envelope
//! sender checks (SUB-2, SUB-3) and the after-DATA verdict (SUB-6..9), each failing with
//! the exact reply of the spec's §10 table. The rate limit (SUB-4) lives in
//! `policy::ratelimit`, the header cleanup (SUB-10) in `policy::headers`.

use crate::message::View;
use crate::policy::SmtpReply;
use crate::policy::gate::{self, Direction, encryption_needed};
use crate::policy::headers::{from_address, reply_value};

/// SUB-3: MAIL FROM must contain exactly one `@`
/// (`500 Invalid from address <addr>`).
pub fn check_mail_from(addr: &str) -> Result<(), SmtpReply> {
    if addr.matches('@').count() == 1 {
        Ok(())
    } else {
        Err(SmtpReply::new(
            500,
            format!("Invalid from address <{}>", reply_value(addr)),
        ))
    }
}

/// SUB-2: MAIL FROM must be the authenticated login (ASCII case-insensitive, as Postfix
/// compares the owner of `smtpd_sender_login_maps` with `strcasecmp`). The reply is given
/// at RCPT TO. Its text is Postfix's (`smtpd_check.c`): the address in angle brackets,
/// the login bare (`... not owned by user alice@example.org`).
pub fn check_sender(mail_from: &str, login: &str) -> Result<(), SmtpReply> {
    if mail_from.eq_ignore_ascii_case(login) {
        Ok(())
    } else {
        Err(SmtpReply::new(
            553,
            format!(
                "5.7.1 <{}>: Sender address rejected: not owned by user {}",
                reply_value(mail_from),
                reply_value(login)
            ),
        ))
    }
}

/// SUB-6..9, in the spec's order, for a message the structure parser accepted (SUB-6's
/// "must parse"): a From address equal to MAIL FROM, and encrypted (outgoing gate), a
/// Secure-Join request, or a self-sent Autocrypt Setup Message; otherwise 523.
pub fn judge(msg: View<'_>, mail_from: &str, rcpts: &[String]) -> Result<(), SmtpReply> {
    // SUB-6: From address.
    let from = from_address(msg).map_err(|value| {
        SmtpReply::new(500, format!("Invalid FROM header: {}", reply_value(&value)))
    })?;
    // SUB-6: From = MAIL FROM (ASCII case-insensitive).
    if !from.eq_ignore_ascii_case(mail_from) {
        return Err(SmtpReply::new(
            500,
            format!(
                "Invalid FROM <{}> for <{}>",
                reply_value(&from),
                reply_value(mail_from)
            ),
        ));
    }
    // SUB-7: encrypted (outgoing variant) or a Secure-Join request.
    if gate::is_encrypted(msg, Direction::Outgoing) || gate::is_securejoin_request(msg) {
        tracing::info!("Outgoing: Filtering encrypted mail.");
        return Ok(());
    }
    tracing::info!("Outgoing: Filtering unencrypted mail.");
    // SUB-8: self-sent Autocrypt Setup Message.
    if is_self_sent_setup_message(msg, mail_from, rcpts) {
        tracing::debug!("accepting self-sent Autocrypt Setup Message");
        return Ok(());
    }
    // SUB-9: local and remote recipients alike.
    tracing::info!("Rejected unencrypted mail");
    Err(encryption_needed())
}

/// The `Subject` with RFC 2047 encoded words decoded (mail-parser reads the one field the
/// structure parser found; it does not see the rest of the message).
fn decoded_subject(msg: View<'_>) -> Option<String> {
    let mut field = msg.header_field("Subject")?.to_vec();
    if !field.ends_with(b"\r\n") {
        field.extend_from_slice(b"\r\n");
    }
    let parsed = mail_parser::MessageParser::default().parse_headers(&field[..])?;
    parsed.subject().map(str::to_string)
}

/// SUB-8: exactly one RCPT, equal to MAIL FROM; `Subject` (RFC 2047-decoded) exactly
/// `Autocrypt Setup Message`; top-level type `multipart/mixed`.
fn is_self_sent_setup_message(msg: View<'_>, mail_from: &str, rcpts: &[String]) -> bool {
    let [rcpt] = rcpts else {
        return false;
    };
    if !rcpt.eq_ignore_ascii_case(mail_from) {
        return false;
    }
    if decoded_subject(msg).as_deref() != Some("Autocrypt Setup Message") {
        return false;
    }
    msg.root.content_type.is("multipart", "mixed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Parsed, normalize_line_endings};
    use crate::policy::unparsable;

    /// Parse (as SMTP delivers it) and judge.
    fn judge(raw: &[u8], mail_from: &str, rcpts: &[String]) -> Result<(), SmtpReply> {
        let msg =
            Parsed::parse(normalize_line_endings(raw.to_vec())).map_err(|r| unparsable(&r))?;
        super::judge(msg.view(), mail_from, rcpts)
    }
    use crate::policy::gate::test_support::{
        self as support, ArmorSpec, FIXTURES, FOLDER_CONCRETE, FOLDER_TEMPLATES, Verdict,
    };

    fn rcpts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn e523() -> SmtpReply {
        SmtpReply::new(523, "Encryption Needed: Invalid Unencrypted Mail")
    }

    #[test]
    fn reply_strings_exact() {
        assert_eq!(
            check_mail_from("nobody").unwrap_err().to_string(),
            "500 Invalid from address <nobody>"
        );
        assert_eq!(
            check_mail_from("a@b@c").unwrap_err().to_string(),
            "500 Invalid from address <a@b@c>"
        );
        assert_eq!(
            check_mail_from("").unwrap_err().to_string(),
            "500 Invalid from address <>"
        );
        assert_eq!(check_mail_from("a@b.c"), Ok(()));
        assert_eq!(
            check_sender("eve@relay.example", "alice@relay.example")
                .unwrap_err()
                .to_string(),
            "553 5.7.1 <eve@relay.example>: Sender address rejected: not owned by user alice@relay.example"
        );
        assert_eq!(
            check_sender("Alice@Relay.Example", "alice@relay.example"),
            Ok(())
        );
        assert_eq!(
            judge(b"", "a@b.c", &rcpts(&["d@e.f"]))
                .unwrap_err()
                .to_string(),
            "500 Invalid FROM header: "
        );
        assert_eq!(
            judge(b"To: x@y.z\r\n\r\nhi\r\n", "a@b.c", &rcpts(&["d@e.f"]))
                .unwrap_err()
                .to_string(),
            "500 Invalid FROM header: "
        );
        assert_eq!(
            judge(b"From: Foo Bar\r\n\r\nhi\r\n", "a@b.c", &rcpts(&["d@e.f"]))
                .unwrap_err()
                .to_string(),
            "500 Invalid FROM header: Foo Bar"
        );
        assert_eq!(
            judge(
                b"From: X <x@b.c>\r\n\r\nhi\r\n",
                "a@b.c",
                &rcpts(&["d@e.f"])
            )
            .unwrap_err()
            .to_string(),
            "500 Invalid FROM <x@b.c> for <a@b.c>"
        );
        assert_eq!(
            judge(
                b"From: A <A@B.C>\r\n\r\nhi\r\n",
                "a@b.c",
                &rcpts(&["d@e.f"])
            )
            .unwrap_err()
            .to_string(),
            "523 Encryption Needed: Invalid Unencrypted Mail"
        );
    }

    #[test]
    fn order_parse_then_from_then_gate() {
        // A From mismatch wins over the gate even for encrypted mail.
        let armored = support::pgp_armored(ArmorSpec::default(), 10);
        let raw = support::pgp_mime("x@relay.example", support::TO, &armored);
        assert_eq!(
            judge(&raw, support::FROM, &rcpts(&[support::TO])),
            Err(SmtpReply::new(
                500,
                format!("Invalid FROM <x@relay.example> for <{}>", support::FROM)
            ))
        );
        let raw = support::pgp_mime(support::FROM, support::TO, &armored);
        assert_eq!(judge(&raw, support::FROM, &rcpts(&[support::TO])), Ok(()));
        // Core 2.65 hides recipients with an empty group.
        let text = String::from_utf8(raw).expect("ascii");
        let hidden = text.replace(
            &format!("To: {}\r\n", support::TO),
            "To: \"hidden-recipients\": ;\r\n",
        );
        assert!(hidden.contains("hidden-recipients"));
        assert_eq!(
            judge(
                hidden.as_bytes(),
                support::FROM,
                &rcpts(&[support::TO, "c@other.example"])
            ),
            Ok(())
        );
    }

    #[test]
    fn overlong_from_value_is_cut_in_reply() {
        let raw = format!("From: {}\r\n\r\nx", "z".repeat(5000));
        let reply = judge(raw.as_bytes(), "a@b.c", &rcpts(&["d@e.f"])).unwrap_err();
        assert_eq!(reply.code, 500);
        assert!(reply.text.starts_with("Invalid FROM header: zzz"));
        assert!(reply.text.len() < 450);
    }

    /// An Autocrypt Setup Message like core's (`multipart/mixed`, two parts).
    fn asm(from: &str, to: &str, subject: &str, ctype: &str) -> Vec<u8> {
        format!(
            "From: {from}\nTo: {to}\nAutocrypt-Setup-Message: v1\nSubject: {subject}\n\
             Content-type: {ctype}; boundary=\"b0\"\n\n--b0\nContent-Type: text/plain\n\n\
             This message contains all information.\n--b0\n\
             Content-Type: application/autocrypt-setup\n\n<html>...</html>\n--b0--\n"
        )
        .into_bytes()
    }

    #[test]
    fn autocrypt_setup_message_table() {
        let me = support::FROM;
        let cases: &[(&str, &str, &[&str], bool)] = &[
            // (subject, content type, rcpts, accepted)
            ("Autocrypt Setup Message", "multipart/mixed", &[me], true),
            ("Autocrypt Setup Message", "Multipart/Mixed", &[me], true),
            (
                "=?utf-8?q?Autocrypt_Setup_Message?=",
                "multipart/mixed",
                &[me],
                true,
            ),
            (
                "Autocrypt Setup Message",
                "multipart/mixed",
                &["ALICE@relay.example"],
                true,
            ),
            (
                "Autocrypt Setup Message",
                "multipart/mixed",
                &[support::TO],
                false,
            ),
            (
                "Autocrypt Setup Message",
                "multipart/mixed",
                &[me, me],
                false,
            ),
            (
                "Autocrypt Setup Message",
                "multipart/mixed",
                &[me, support::TO],
                false,
            ),
            ("Autocrypt Setup Message", "multipart/mixed", &[], false),
            (
                "Autocrypt Setup Message",
                "multipart/alternative",
                &[me],
                false,
            ),
            ("Autocrypt Setup Message", "text/plain", &[me], false),
            ("autocrypt setup message", "multipart/mixed", &[me], false),
            ("Autocrypt Setup Message!", "multipart/mixed", &[me], false),
            (
                "Re: Autocrypt Setup Message",
                "multipart/mixed",
                &[me],
                false,
            ),
        ];
        for (subject, ctype, to, accepted) in cases {
            let raw = asm(me, to.first().copied().unwrap_or(me), subject, ctype);
            let got = judge(&raw, me, &rcpts(to));
            let want = if *accepted { Ok(()) } else { Err(e523()) };
            assert_eq!(got, want, "subject {subject:?} type {ctype} rcpts {to:?}");
        }
    }

    #[test]
    fn generated_messages_outgoing() {
        use support::Esk;
        let send = |armored: &str| {
            let raw = support::pgp_mime(support::FROM, support::TO, armored);
            judge(&raw, support::FROM, &rcpts(&[support::TO]))
        };
        assert_eq!(
            send(&support::pgp_armored(ArmorSpec::default(), 20)),
            Ok(())
        );
        for esk in [Esk::OneKey, Esk::Password] {
            let spec = ArmorSpec {
                esk,
                ..ArmorSpec::default()
            };
            assert_eq!(send(&support::pgp_armored(spec, 21)), Ok(()), "{esk:?}");
        }
        let version = ArmorSpec {
            headers: &[("Version", "rpgp")],
            ..ArmorSpec::default()
        };
        assert_eq!(send(&support::pgp_armored(version, 22)), Err(e523()));
        let comment = ArmorSpec {
            headers: &[("Comment", "hello")],
            ..ArmorSpec::default()
        };
        assert_eq!(send(&support::pgp_armored(comment, 23)), Err(e523()));
    }

    #[test]
    fn upstream_fixtures_outgoing() {
        let Some(dir) = support::fixtures_dir() else {
            return;
        };
        for folder in [FOLDER_CONCRETE, FOLDER_TEMPLATES] {
            for fx in FIXTURES {
                let loaded = support::load_fixture(&dir, folder, fx.name);
                // README note 1: MAIL FROM = From = login; recipient another address.
                let rcpt = support::TO.to_string();
                let got = judge(&loaded.raw, &loaded.from, std::slice::from_ref(&rcpt));
                let want = match fx.outgoing {
                    Verdict::Accept => Ok(()),
                    Verdict::Reject523 => Err(e523()),
                };
                assert_eq!(got, want, "{folder}/{}", fx.name);
                // Sent by someone else, every fixture stops at SUB-6.
                let other = judge(
                    &loaded.raw,
                    "mallory@relay.example",
                    std::slice::from_ref(&rcpt),
                );
                assert_eq!(
                    other.map_err(|r| r.code),
                    Err(500),
                    "{folder}/{} from another sender",
                    fx.name
                );
                // Self-sent: only the Autocrypt Setup Message changes its verdict (SUB-8).
                let self_sent = judge(
                    &loaded.raw,
                    &loaded.from,
                    std::slice::from_ref(&loaded.from),
                );
                let want_self = if fx.name == "asm.eml" {
                    Ok(())
                } else {
                    want.clone()
                };
                assert_eq!(self_sent, want_self, "{folder}/{} self-sent", fx.name);
            }
        }
    }
}
