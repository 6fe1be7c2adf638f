//! TEMPORARY stand-in for `crate::policy::{submission, headers, inbound}`, which another
//! engineer is writing right now. Same signatures as theirs; minimal behaviour so the
//! sessions can be built and tested. Delete this file and switch the `use` in
//! `session.rs` to `crate::policy` when they land.

use crate::policy::SmtpReply;
use mail_parser::MimeHeaders;

fn from_address(raw: &[u8]) -> Result<String, SmtpReply> {
    let msg = mail_parser::MessageParser::default()
        .parse(raw)
        .ok_or_else(|| SmtpReply::new(500, "Failed to parse message: unparsable"))?;
    msg.from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(str::to_string)
        .ok_or_else(|| SmtpReply::new(500, "Invalid FROM header: "))
}

fn looks_encrypted(raw: &[u8]) -> bool {
    mail_parser::MessageParser::default()
        .parse(raw)
        .and_then(|m| {
            m.content_type().map(|ct| {
                ct.ctype().eq_ignore_ascii_case("multipart")
                    && ct
                        .subtype()
                        .is_some_and(|s| s.eq_ignore_ascii_case("encrypted"))
            })
        })
        .unwrap_or(false)
}

fn encryption_needed() -> SmtpReply {
    SmtpReply::new(523, "Encryption Needed: Invalid Unencrypted Mail")
}

pub mod submission {
    use super::*;

    pub fn check_mail_from(mail_from: &str) -> Result<(), SmtpReply> {
        if mail_from.matches('@').count() != 1 {
            return Err(SmtpReply::new(
                500,
                format!("Invalid from address <{mail_from}>"),
            ));
        }
        Ok(())
    }

    pub fn check_sender(mail_from: &str, login: &str) -> Result<(), SmtpReply> {
        if mail_from.eq_ignore_ascii_case(login) {
            Ok(())
        } else {
            Err(SmtpReply::new(
                553,
                format!("5.7.1 <{mail_from}>: Sender address rejected: not owned by user {login}"),
            ))
        }
    }

    pub fn judge(raw: &[u8], mail_from: &str, _rcpts: &[String]) -> Result<(), SmtpReply> {
        let from = from_address(raw)?;
        if !from.eq_ignore_ascii_case(mail_from) {
            return Err(SmtpReply::new(
                500,
                format!("Invalid FROM <{from}> for <{mail_from}>"),
            ));
        }
        if looks_encrypted(raw) {
            Ok(())
        } else {
            Err(encryption_needed())
        }
    }
}

pub mod headers {
    fn top_level(raw: &[u8]) -> (Vec<&[u8]>, &[u8]) {
        let mut fields: Vec<&[u8]> = Vec::new();
        let mut rest = raw;
        loop {
            let end = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |i| i + 1);
            let line = &rest[..end];
            if line == b"\r\n" || line == b"\n" || line.is_empty() {
                return (fields, rest);
            }
            match (line[0] == b' ' || line[0] == b'\t', fields.last_mut()) {
                (true, Some(last)) => {
                    let start = last.as_ptr() as usize - raw.as_ptr() as usize;
                    *last = &raw[start..start + last.len() + end];
                }
                _ => fields.push(line),
            }
            rest = &rest[end..];
        }
    }

    fn name_is(field: &[u8], names: &[&str]) -> bool {
        let name = field.split(|&b| b == b':').next().unwrap_or(b"");
        names
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
    }

    pub fn cleanup_submission(raw: &[u8]) -> Vec<u8> {
        let (fields, body) = top_level(raw);
        let mut out = Vec::with_capacity(raw.len());
        for f in fields {
            if name_is(
                f,
                &["Received", "X-Originating-IP", "X-Mailer", "User-Agent"],
            ) {
                continue;
            }
            if name_is(f, &["Subject"]) {
                out.extend_from_slice(b"Subject: [...]\r\n");
                continue;
            }
            out.extend_from_slice(f);
        }
        out.extend_from_slice(body);
        out
    }

    pub fn strip_inbound(raw: &[u8]) -> Vec<u8> {
        let (fields, body) = top_level(raw);
        let mut out = Vec::with_capacity(raw.len());
        for f in fields {
            if !name_is(f, &["DKIM-Signature", "Authentication-Results", "Received"]) {
                out.extend_from_slice(f);
            }
        }
        out.extend_from_slice(body);
        out
    }
}

pub mod inbound {
    use super::*;

    pub struct InboundVerdict {
        pub reset_sender: bool,
    }

    pub fn judge(
        raw: &[u8],
        mail_from: &str,
        any_rcpt_enforces_e2ee: bool,
    ) -> Result<InboundVerdict, SmtpReply> {
        let from = from_address(raw)?;
        if any_rcpt_enforces_e2ee && !looks_encrypted(raw) {
            return Err(encryption_needed());
        }
        Ok(InboundVerdict {
            reset_sender: !from.eq_ignore_ascii_case(mail_from),
        })
    }
}
