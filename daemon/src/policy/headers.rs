//! Top-level header rules: the header cleanup of accepted submissions (SUB-10), the
//! stripping of trace and authentication headers before an inbound message is stored
//! (IN-7), and the From address rule shared by SUB-6 and IN-4a.
//!
//! The cleanup works on the parsed message (`message::Parsed`): only whole fields of the
//! top-level header section, as `message::header` splits them, are removed or replaced;
//! every other byte stays exactly as it was, and the stored structure moves with the
//! header's new length. Field names compare ASCII case-insensitively (RFC 5322 §1.2.2).

use crate::message::{Parsed, View, header};

/// Fields deleted from every accepted submission (SUB-10; SUB-11: none of them may carry
/// the client's IP address or host name onwards).
const SUBMISSION_DELETE: &[&str] = &["Received", "X-Originating-IP", "X-Mailer", "User-Agent"];

/// Fields deleted before an inbound message is stored (IN-7).
const INBOUND_DELETE: &[&str] = &["DKIM-Signature", "Authentication-Results", "Received"];

/// The replacement of the `Subject` field of a submission (SUB-10).
const SUBJECT_PLACEHOLDER: &[u8] = b"Subject: [...]\r\n";

/// Longest header value quoted back in an SMTP reply. RFC 5321 §4.5.3.1.5 limits a reply
/// line to 512 octets including the code and CRLF; longer values are cut.
const MAX_REPLY_VALUE: usize = 400;

/// Rewrites the top-level header section: fields named in `delete` are dropped, the
/// `Subject` field is replaced when `blank_subject` is set; everything else is copied
/// unchanged.
fn rewrite(msg: Parsed, delete: &[&str], blank_subject: bool) -> Parsed {
    msg.rewrite_header(|h| {
        let mut out = Vec::with_capacity(h.len());
        let mut it = header::fields(h);
        for field in it.by_ref() {
            if field.is_any(h, delete) {
                continue;
            }
            if blank_subject && field.is(h, "Subject") {
                out.extend_from_slice(SUBJECT_PLACEHOLDER);
                continue;
            }
            out.extend_from_slice(&h[field.range]);
        }
        // The empty line (if any) that ends the section.
        out.extend_from_slice(&h[it.position()..]);
        out
    })
}

/// SUB-10: deletes every top-level `Received`, `X-Originating-IP`, `X-Mailer` and
/// `User-Agent` field and replaces the `Subject` field by `Subject: [...]`.
pub fn cleanup_submission(msg: Parsed) -> Parsed {
    rewrite(msg, SUBMISSION_DELETE, true)
}

/// IN-7: deletes every top-level `DKIM-Signature`, `Authentication-Results` and
/// `Received` field.
pub fn strip_inbound(msg: Parsed) -> Parsed {
    rewrite(msg, INBOUND_DELETE, false)
}

/// A value made safe to quote in a one-line SMTP reply: no control characters, at most
/// [`MAX_REPLY_VALUE`] bytes (cut at a character boundary).
pub(crate) fn reply_value(value: &str) -> String {
    let clean: String = value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.len() <= MAX_REPLY_VALUE {
        return clean;
    }
    let mut cut = MAX_REPLY_VALUE;
    while !clean.is_char_boundary(cut) {
        cut -= 1;
    }
    clean[..cut].to_string()
}

/// The bare address of the From header (angle-addr or bare, display name allowed), or the
/// raw header value for the error.
///
/// SUB-6 / IN-4a: the `From` field (the structure parser refuses a second one) must hold
/// exactly one mailbox. Group syntax, several mailboxes, an empty or missing field and
/// anything that is not `local@domain` give `Err` with the unfolded, trimmed field value
/// (empty when missing).
pub fn from_address(msg: View<'_>) -> Result<String, String> {
    let value = msg.header_text("From").unwrap_or_default();
    match parse_mailbox(&value) {
        Some(addr) => Ok(addr),
        None => Err(value),
    }
}

/// Parses a single RFC 5322 §3.4 mailbox: `[display-name] <addr-spec>` or a bare
/// `addr-spec`, with comments allowed. Returns the addr-spec.
pub(crate) fn parse_mailbox(value: &str) -> Option<String> {
    // Positions (byte offsets) of structural characters outside quoted strings and
    // comments.
    let mut angle_open: Option<usize> = None;
    let mut angle_close: Option<usize> = None;
    let mut in_quote = false;
    let mut comment_depth = 0usize;
    let mut escaped = false;
    let mut in_literal = false;
    // Text outside comments, for the bare form (RFC 5322 §3.2.2 CFWS is ignored).
    let mut bare = String::with_capacity(value.len());
    for (i, c) in value.char_indices() {
        if escaped {
            escaped = false;
            if comment_depth == 0 {
                bare.push(c);
            }
            continue;
        }
        if in_quote {
            match c {
                '\\' => escaped = true,
                '"' => in_quote = false,
                _ => {}
            }
            bare.push(c);
            continue;
        }
        if comment_depth > 0 {
            match c {
                '\\' => escaped = true,
                '(' => comment_depth += 1,
                ')' => comment_depth -= 1,
                _ => {}
            }
            continue;
        }
        if in_literal {
            // RFC 5322 §3.4.1 domain-literal: `:` of `[IPv6:...]` is not group syntax.
            if c == ']' {
                in_literal = false;
            }
            bare.push(c);
            continue;
        }
        match c {
            '[' => {
                in_literal = true;
                bare.push(c);
            }
            '"' => {
                // A quoted string inside the angle brackets would be a quoted local part;
                // not accepted (see `valid_addr_spec`).
                in_quote = true;
                bare.push(c);
            }
            '(' => comment_depth = 1,
            ')' => return None,
            '<' => {
                if angle_open.is_some() {
                    return None;
                }
                angle_open = Some(i);
            }
            '>' => {
                if angle_open.is_none() || angle_close.is_some() {
                    return None;
                }
                angle_close = Some(i);
            }
            // Group syntax (RFC 5322 §3.4 `group`) or a mailbox list: not one mailbox.
            ':' | ';' | ',' if angle_open.is_none() || angle_close.is_some() => return None,
            _ => {
                if angle_close.is_some() && !c.is_whitespace() {
                    // Only CFWS may follow the angle-addr.
                    return None;
                }
                bare.push(c);
            }
        }
    }
    if in_quote || comment_depth > 0 || escaped || in_literal {
        return None;
    }
    let addr = match (angle_open, angle_close) {
        (Some(open), Some(close)) => value.get(open + 1..close)?.trim(),
        (None, None) => bare.trim(),
        _ => return None,
    };
    valid_addr_spec(addr).then(|| addr.to_string())
}

/// A plain `local@domain` address: exactly one `@`, both sides non-empty, no whitespace,
/// control or special characters (RFC 5322 §3.2.3 `specials`); the domain may be an
/// address literal `[...]` (used by IP-only relays, IN-4e).
fn valid_addr_spec(addr: &str) -> bool {
    let Some((local, domain)) = addr.split_once('@') else {
        return false;
    };
    if local.is_empty() || domain.is_empty() || domain.contains('@') {
        return false;
    }
    let plain = |c: char| !c.is_whitespace() && !c.is_control() && !"<>()[]\\,;:\"".contains(c);
    if !local.chars().all(plain) {
        return false;
    }
    if let Some(inner) = domain.strip_prefix('[') {
        let Some(inner) = inner.strip_suffix(']') else {
            return false;
        };
        // RFC 5321 §4.1.3 address literal, e.g. `[1.2.3.4]` or `[IPv6:...]`.
        !inner.is_empty() && inner.chars().all(|c| c == ':' || plain(c))
    } else {
        domain.chars().all(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::normalize_line_endings;

    fn parsed(raw: &str) -> Parsed {
        Parsed::parse(normalize_line_endings(raw.as_bytes().to_vec()))
            .unwrap_or_else(|e| panic!("{raw:?}: {e}"))
    }

    fn from_of(raw: &str) -> Result<String, String> {
        from_address(parsed(raw).view())
    }

    fn cleaned(raw: &str, f: fn(Parsed) -> Parsed) -> String {
        let out = f(parsed(raw));
        // The structure still describes the bytes, as a fresh parse finds it.
        let fresh = Parsed::parse(out.bytes().to_vec()).expect("still parses");
        assert_eq!(out.root(), fresh.root(), "{raw:?}");
        String::from_utf8_lossy(out.bytes()).into_owned()
    }

    #[test]
    fn from_parsing_table() {
        let ok: &[(&str, &str)] = &[
            ("From: one@example.org\r\n\r\nx", "one@example.org"),
            ("From: <one@example.org>\r\n\r\nx", "one@example.org"),
            ("From: One <one@example.org>\r\n\r\nx", "one@example.org"),
            (
                "From: \"One, Two\" <one@example.org>\r\n\r\nx",
                "one@example.org",
            ),
            (
                "From: \"a <b@c.d>\" <one@example.org>\r\n\r\nx",
                "one@example.org",
            ),
            (
                "From: \"q\\\"uote\" <one@example.org>\r\n\r\nx",
                "one@example.org",
            ),
            (
                "From: =?utf-8?q?J=C3=B6rg?= <one@example.org>\r\n\r\nx",
                "one@example.org",
            ),
            (
                "From: one@example.org (Comment)\r\n\r\nx",
                "one@example.org",
            ),
            (
                "From: (c) One <one@example.org> (trailing)\r\n\r\nx",
                "one@example.org",
            ),
            (
                "From: One\r\n <one@example.org>\r\n\r\nx",
                "one@example.org",
            ),
            (
                "from:   One <One@Example.ORG>  \r\n\r\nx",
                "One@Example.ORG",
            ),
            ("FROM:< one@example.org >\r\n\r\nx", "one@example.org"),
            (
                "From: Mail Delivery Subsystem <MAILER-DAEMON@example.org>\n\nx",
                "MAILER-DAEMON@example.org",
            ),
            (
                "From: user+tag@example.org\r\n\r\nx",
                "user+tag@example.org",
            ),
            ("From: bot@[1.2.3.4]\r\n\r\nx", "bot@[1.2.3.4]"),
            (
                "From: <bot@[IPv6:2001:db8::1]>\r\n\r\nx",
                "bot@[IPv6:2001:db8::1]",
            ),
            (
                "From: bot@[IPv6:2001:db8::1]\r\n\r\nx",
                "bot@[IPv6:2001:db8::1]",
            ),
            ("From: Bot <bot@[192.0.2.1]>\r\n\r\nx", "bot@[192.0.2.1]"),
            // Group syntax in To is not our business.
            (
                "From: a@example.org\r\nTo: \"hidden-recipients\": ;\r\n\r\nx",
                "a@example.org",
            ),
        ];
        for (raw, want) in ok {
            assert_eq!(from_of(raw).as_deref(), Ok(*want), "input {raw:?}");
        }
        let bad: &[(&str, &str)] = &[
            ("To: a@example.org\r\n\r\nx", ""),
            ("From:\r\nTo: a@example.org\r\n\r\nx", ""),
            ("From: garbage\r\n\r\nx", "garbage"),
            ("From: Some Name\r\n\r\nx", "Some Name"),
            ("From: <>\r\n\r\nx", "<>"),
            ("From: @example.org\r\n\r\nx", "@example.org"),
            ("From: one@\r\n\r\nx", "one@"),
            ("From: a@b@c\r\n\r\nx", "a@b@c"),
            ("From: one @example.org\r\n\r\nx", "one @example.org"),
            (
                "From: \"hidden-recipients\": ;\r\n\r\nx",
                "\"hidden-recipients\": ;",
            ),
            (
                "From: team: a@example.org;\r\n\r\nx",
                "team: a@example.org;",
            ),
            (
                "From: team: <a@example.org>;\r\n\r\nx",
                "team: <a@example.org>;",
            ),
            (
                "From: a@example.org, b@example.org\r\n\r\nx",
                "a@example.org, b@example.org",
            ),
            (
                "From: A <a@example.org>, B <b@example.org>\r\n\r\nx",
                "A <a@example.org>, B <b@example.org>",
            ),
            (
                "From: <a@example.org> junk\r\n\r\nx",
                "<a@example.org> junk",
            ),
            ("From: <a@example.org\r\n\r\nx", "<a@example.org"),
            ("From: a@example.org>\r\n\r\nx", "a@example.org>"),
            (
                "From: \"unterminated <a@example.org>\r\n\r\nx",
                "\"unterminated <a@example.org>",
            ),
            (
                "From: (unterminated a@example.org\r\n\r\nx",
                "(unterminated a@example.org",
            ),
            (
                "From: <\"q l\"@example.org>\r\n\r\nx",
                "<\"q l\"@example.org>",
            ),
            ("From: a@[1.2.3.4\r\n\r\nx", "a@[1.2.3.4"),
            ("From: a@[1.2.3.4]]\r\n\r\nx", "a@[1.2.3.4]]"),
            ("From: a@[]\r\n\r\nx", "a@[]"),
            ("From: a@x[1.2.3.4]\r\n\r\nx", "a@x[1.2.3.4]"),
            // Folded value is reported unfolded.
            ("From: not\r\n an address\r\n\r\nx", "not an address"),
        ];
        for (raw, want) in bad {
            assert_eq!(from_of(raw), Err(want.to_string()), "input {raw:?}");
        }
    }

    #[test]
    fn cleanup_submission_table() {
        let cases: &[(&str, &str)] = &[
            // Nothing to do: byte-exact copy.
            (
                "From: a@b.c\r\nTo: d@e.f\r\n\r\nbody\r\n",
                "From: a@b.c\r\nTo: d@e.f\r\n\r\nbody\r\n",
            ),
            // Multiple Received, mixed-case names, folded Received.
            (
                "Received: from x\r\n\tby y; Sat, 1 Jan 2000\r\nreceived: from z\r\nFrom: a@b.c\r\nRECEIVED:  w\r\n\r\nb\r\n",
                "From: a@b.c\r\n\r\nb\r\n",
            ),
            (
                "X-Mailer: Foo 1.0\r\nx-originating-ip: [10.0.0.1]\r\nUSER-AGENT: Bar\r\n  continued\r\nFrom: a@b.c\r\n\r\nb",
                "From: a@b.c\r\n\r\nb",
            ),
            // Folded Subject, encoded Subject.
            (
                "Subject: a very\r\n long\r\n\tsubject\r\nFrom: a@b.c\r\n\r\nb",
                "Subject: [...]\r\nFrom: a@b.c\r\n\r\nb",
            ),
            (
                "From: a@b.c\r\nsubject: =?utf-8?q?x?=\r\n\r\nb",
                "From: a@b.c\r\nSubject: [...]\r\n\r\nb",
            ),
            // Bare LF arrives as CRLF (SMTP DATA and `normalize_line_endings`).
            (
                "Received: x\nSubject: hi\nFrom: a@b.c\n\nSubject: body text\nReceived: body\n",
                "Subject: [...]\r\nFrom: a@b.c\r\n\r\nSubject: body text\r\nReceived: body\r\n",
            ),
            // Similar names are not touched.
            (
                "X-Received: x\r\nReceived-SPF: y\r\nSubjects: z\r\nX-Mailer-Foo: w\r\n\r\n",
                "X-Received: x\r\nReceived-SPF: y\r\nSubjects: z\r\nX-Mailer-Foo: w\r\n\r\n",
            ),
            // Header-like text in the body and in MIME part headers is unchanged.
            (
                "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\nSubject: s\r\n\r\n--b\r\nSubject: inner\r\nReceived: inner\r\nUser-Agent: inner\r\n\r\nx\r\n--b--\r\n",
                "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\nSubject: [...]\r\n\r\n--b\r\nSubject: inner\r\nReceived: inner\r\nUser-Agent: inner\r\n\r\nx\r\n--b--\r\n",
            ),
            // Header-only message, last field without line ending.
            (
                "From: a@b.c\r\nSubject: x",
                "From: a@b.c\r\nSubject: [...]\r\n",
            ),
            ("Received: x", ""),
            ("", ""),
            // Empty header block: everything is body.
            ("\r\nReceived: x\r\n", "\r\nReceived: x\r\n"),
        ];
        for (input, want) in cases {
            assert_eq!(cleaned(input, cleanup_submission), *want, "input {input:?}");
        }
        // Obsolete white space before the colon is refused before any rule runs.
        assert!(Parsed::parse(b"Subject : x\r\n\r\nb".to_vec()).is_err());
    }

    #[test]
    fn cleanup_keeps_body_bytes_exact() {
        // Arbitrary 8-bit body bytes (all but NUL and lone CR/LF) survive unchanged.
        let mut raw = b"Received: from host\r\nSubject: s\r\nFrom: a@b.c\r\n\r\n".to_vec();
        let mut body: Vec<u8> = (1u8..=255).filter(|b| *b != b'\r' && *b != b'\n').collect();
        body.extend_from_slice(b"\r\n\r\n");
        raw.extend_from_slice(&body);
        let out = cleanup_submission(Parsed::parse(raw).expect("parses"));
        let mut want = b"Subject: [...]\r\nFrom: a@b.c\r\n\r\n".to_vec();
        want.extend_from_slice(&body);
        assert_eq!(out.bytes(), &want[..]);
    }

    #[test]
    fn strip_inbound_table() {
        let cases: &[(&str, &str)] = &[
            (
                "DKIM-Signature: v=1; a=rsa-sha256; d=example.org;\r\n\tb=abc\r\nReceived: from x\r\nAuthentication-Results: mx; dkim=pass\r\nFrom: a@b.c\r\nSubject: kept\r\nX-Mailer: kept\r\n\r\nDKIM-Signature: body\r\n",
                "From: a@b.c\r\nSubject: kept\r\nX-Mailer: kept\r\n\r\nDKIM-Signature: body\r\n",
            ),
            (
                "dkim-signature: x\nAUTHENTICATION-RESULTS: y\nreceived: z\nFrom: a@b.c\n\nb",
                "From: a@b.c\r\n\r\nb",
            ),
            (
                "ARC-Seal: kept\r\nX-Google-DKIM-Signature: kept\r\n\r\n",
                "ARC-Seal: kept\r\nX-Google-DKIM-Signature: kept\r\n\r\n",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(cleaned(input, strip_inbound), *want, "input {input:?}");
        }
    }

    #[test]
    fn reply_value_is_one_bounded_line() {
        assert_eq!(reply_value("a\r\nb\tc"), "a  b c");
        let long = "é".repeat(400);
        let cut = reply_value(&long);
        assert!(cut.len() <= MAX_REPLY_VALUE);
        assert!(long.starts_with(&cut));
    }
}
