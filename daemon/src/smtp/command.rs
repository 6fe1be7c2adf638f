//! Command lines → commands, with `smtp-proto` doing the RFC 5321 grammar and the MAIL
//! and RCPT parameters (SIZE, BODY=8BITMIME, SMTPUTF8).
//!
//! `smtp-proto` 0.2.5 refuses address literals (`user@[192.0.2.1]`), which are the
//! addresses of an IP-only relay (CFG-3, MODE-1). The literal is swapped for a
//! placeholder domain before parsing and put back afterwards.

use std::borrow::Cow;

use smtp_proto::{AUTH_PLAIN, Error as ProtoError, Request};

use super::reply;
use crate::policy::SmtpReply;

/// What the session acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    /// MAIL FROM: the reverse path (empty for `<>`) and the SIZE= value (0 if absent).
    Mail {
        from: String,
        size: u64,
    },
    /// RCPT TO: the forward path.
    Rcpt(String),
    Data,
    Rset,
    Noop,
    Quit,
    Help,
    Vrfy,
    StartTls,
    /// AUTH with the mechanism and the initial response (empty if none was given).
    Auth {
        plain: bool,
        initial: String,
    },
    /// A command we know but do not offer (EXPN, ETRN, ATRN, BURL, LHLO, BDAT).
    NotImplemented,
}

/// Why a line is not a command we can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    /// Answer with this reply.
    Reply(SmtpReply),
    /// MAIL FROM with a path `smtp-proto` rejects; the raw path, for SUB-3's
    /// `500 Invalid from address <addr>` on submission.
    Sender(Option<String>),
}

/// Stands in for an address literal during parsing; `.invalid` cannot be a real domain
/// (RFC 2606 §2).
const PLACEHOLDER: &str = "address-literal.invalid";

/// Parse one line ending in CRLF.
pub fn parse(line: &[u8]) -> Result<Command, Bad> {
    let (masked, literal) = mask_literal(line);
    let mut iter = masked.iter();
    let request = match Request::parse(&mut iter) {
        Ok(r) => r,
        Err(ProtoError::InvalidSenderAddress) => return Err(Bad::Sender(raw_path(line))),
        Err(e) => return Err(Bad::Reply(proto_error(e))),
    };
    let unmask = |addr: Cow<'_, str>| -> String {
        match &literal {
            Some(lit) => match addr.strip_suffix(PLACEHOLDER) {
                Some(head) if head.ends_with('@') => format!("{head}{lit}"),
                _ => addr.into_owned(),
            },
            None => addr.into_owned(),
        }
    };
    Ok(match request {
        Request::Ehlo { host } => Command::Ehlo(host.into_owned()),
        Request::Helo { host } => Command::Helo(host.into_owned()),
        Request::Mail { from } => Command::Mail {
            size: from.size as u64,
            from: unmask(from.address),
        },
        Request::Rcpt { to } => Command::Rcpt(unmask(to.address)),
        Request::Data => Command::Data,
        Request::Rset => Command::Rset,
        Request::Noop { .. } => Command::Noop,
        Request::Quit => Command::Quit,
        Request::Help { .. } => Command::Help,
        Request::Vrfy { .. } => Command::Vrfy,
        Request::StartTls => Command::StartTls,
        Request::Auth {
            mechanism,
            initial_response,
        } => Command::Auth {
            plain: mechanism == AUTH_PLAIN,
            initial: initial_response.into_owned(),
        },
        Request::Lhlo { .. }
        | Request::Bdat { .. }
        | Request::Expn { .. }
        | Request::Etrn { .. }
        | Request::Atrn { .. }
        | Request::Burl { .. } => Command::NotImplemented,
    })
}

fn proto_error(e: ProtoError) -> SmtpReply {
    match e {
        ProtoError::UnknownCommand => reply::unknown_command(),
        ProtoError::SyntaxError { syntax } => reply::syntax(syntax),
        ProtoError::InvalidRecipientAddress => crate::policy::recipient::bad_syntax(),
        ProtoError::InvalidSenderAddress => reply::bad_sender_syntax(),
        ProtoError::InvalidParameter { param } => reply::bad_param(param),
        ProtoError::UnsupportedParameter { param } => reply::unsupported_param(&param),
        ProtoError::NeedsMoreData { .. }
        | ProtoError::ResponseTooLong
        | ProtoError::InvalidResponse { .. } => reply::unknown_command(),
    }
}

/// The text between the first `<` and the following `>`, if any.
fn raw_path(line: &[u8]) -> Option<String> {
    let open = line.iter().position(|&b| b == b'<')?;
    let len = line[open + 1..].iter().position(|&b| b == b'>')?;
    Some(String::from_utf8_lossy(&line[open + 1..open + 1 + len]).into_owned())
}

/// For MAIL and RCPT lines whose path ends in an address literal (`@[192.0.2.1]`,
/// `@[IPv6:…]`, RFC 5321 §4.1.3), the line with the literal replaced by
/// [`PLACEHOLDER`], and the literal.
fn mask_literal(line: &[u8]) -> (Cow<'_, [u8]>, Option<String>) {
    let is_path_cmd = line.len() >= 4
        && (line[..4].eq_ignore_ascii_case(b"MAIL") || line[..4].eq_ignore_ascii_case(b"RCPT"));
    if !is_path_cmd {
        return (Cow::Borrowed(line), None);
    }
    let Some(open) = line.iter().position(|&b| b == b'<') else {
        return (Cow::Borrowed(line), None);
    };
    let Some(close) = line[open..]
        .iter()
        .position(|&b| b == b'>')
        .map(|i| open + i)
    else {
        return (Cow::Borrowed(line), None);
    };
    let path = &line[open + 1..close];
    let Some(at) = path.windows(2).position(|w| w == b"@[") else {
        return (Cow::Borrowed(line), None);
    };
    let lit = &path[at + 1..];
    let well_formed = lit.len() > 2
        && lit.last() == Some(&b']')
        && lit[1..lit.len() - 1]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'.' || *b == b':');
    if !well_formed {
        return (Cow::Borrowed(line), None);
    }
    let lit_start = open + 1 + at + 1;
    let mut out = Vec::with_capacity(line.len());
    out.extend_from_slice(&line[..lit_start]);
    out.extend_from_slice(PLACEHOLDER.as_bytes());
    out.extend_from_slice(&line[close..]);
    let literal = String::from_utf8_lossy(lit).into_owned();
    (Cow::Owned(out), Some(literal))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_with_core_parameters() {
        let c = parse(b"MAIL FROM:<a@x.org> SIZE=1234 BODY=8BITMIME SMTPUTF8\r\n").unwrap();
        assert_eq!(
            c,
            Command::Mail {
                from: "a@x.org".into(),
                size: 1234
            }
        );
    }

    #[test]
    fn address_literals_survive() {
        let c = parse(b"RCPT TO:<bob@[127.0.0.1]>\r\n").unwrap();
        assert_eq!(c, Command::Rcpt("bob@[127.0.0.1]".into()));
        let c = parse(b"mail from:<a@[IPv6:2001:db8::1]> BODY=8BITMIME\r\n").unwrap();
        assert_eq!(
            c,
            Command::Mail {
                from: "a@[IPv6:2001:db8::1]".into(),
                size: 0
            }
        );
    }

    #[test]
    fn null_sender_and_bad_sender() {
        assert_eq!(
            parse(b"MAIL FROM:<>\r\n").unwrap(),
            Command::Mail {
                from: String::new(),
                size: 0
            }
        );
        assert_eq!(
            parse(b"MAIL FROM:<a@b@c>\r\n"),
            Err(Bad::Sender(Some("a@b@c".into())))
        );
    }

    #[test]
    fn auth_plain_initial_response() {
        assert_eq!(
            parse(b"AUTH PLAIN AGFAeHgAcHc=\r\n").unwrap(),
            Command::Auth {
                plain: true,
                initial: "AGFAeHgAcHc=".into()
            }
        );
        assert_eq!(
            parse(b"AUTH PLAIN\r\n").unwrap(),
            Command::Auth {
                plain: true,
                initial: String::new()
            }
        );
        assert!(matches!(
            parse(b"AUTH LOGIN\r\n").unwrap(),
            Command::Auth { plain: false, .. }
        ));
    }

    #[test]
    fn unknown_and_unsupported() {
        assert_eq!(
            parse(b"FOO bar\r\n"),
            Err(Bad::Reply(reply::unknown_command()))
        );
        assert_eq!(parse(b"BDAT 10 LAST\r\n"), Ok(Command::NotImplemented));
        assert!(matches!(
            parse(b"MAIL FROM:<a@b.c> FOO=bar\r\n"),
            Err(Bad::Reply(SmtpReply { code: 555, .. }))
        ));
    }
}
