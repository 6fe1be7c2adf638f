//! Top-level header rules: the header cleanup of accepted submissions (SUB-10), the
//! stripping of trace and authentication headers before an inbound message is stored
//! (IN-7), and the From address rule shared by SUB-6 and IN-4a.
//!
//! The cleanup functions work on the raw bytes, not on a parsed message: only whole
//! header fields of the top-level header block (up to the first empty line) are removed
//! or replaced; every other byte, including the body and the line-ending style, stays
//! exactly as it was. Field names compare ASCII case-insensitively (RFC 5322 §1.2.2),
//! folded fields (RFC 5322 §2.2.3) are handled as one field, and both CRLF and bare-LF
//! line endings are understood.

use std::ops::Range;

use mail_parser::Message;

/// Fields deleted from every accepted submission (SUB-10; SUB-11: none of them may carry
/// the client's IP address or host name onwards).
const SUBMISSION_DELETE: &[&str] = &["Received", "X-Originating-IP", "X-Mailer", "User-Agent"];

/// Fields deleted before an inbound message is stored (IN-7).
const INBOUND_DELETE: &[&str] = &["DKIM-Signature", "Authentication-Results", "Received"];

/// The replacement of every `Subject` field of a submission (SUB-10).
const SUBJECT_PLACEHOLDER: &[u8] = b"Subject: [...]";

/// Longest header value quoted back in an SMTP reply. RFC 5321 §4.5.3.1.5 limits a reply
/// line to 512 octets including the code and CRLF; longer values are cut.
const MAX_REPLY_VALUE: usize = 400;

/// One header field of the top-level header block, as a byte range of the raw message
/// (first line plus its continuation lines, including the final line ending).
struct Field {
    range: Range<usize>,
    /// The field name (before the colon, trailing blanks removed); `None` when the first
    /// line has no colon.
    name: Option<Range<usize>>,
}

impl Field {
    fn name_is(&self, raw: &[u8], wanted: &str) -> bool {
        self.name
            .as_ref()
            .and_then(|r| raw.get(r.clone()))
            .is_some_and(|n| n.eq_ignore_ascii_case(wanted.as_bytes()))
    }

    fn name_in(&self, raw: &[u8], set: &[&str]) -> bool {
        set.iter().any(|wanted| self.name_is(raw, wanted))
    }

    /// The line ending of the field's last line (`\r\n`, `\n` or nothing at end of data).
    fn line_ending<'a>(&self, raw: &'a [u8]) -> &'a [u8] {
        let bytes = &raw[self.range.clone()];
        if bytes.ends_with(b"\r\n") {
            b"\r\n"
        } else if bytes.ends_with(b"\n") {
            b"\n"
        } else {
            b""
        }
    }
}

/// Index just past the end of the line starting at `pos` (after its LF), or the end of data.
fn end_of_line(raw: &[u8], pos: usize) -> usize {
    match raw
        .get(pos..)
        .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
    {
        Some(i) => pos + i + 1,
        None => raw.len(),
    }
}

/// Splits the top-level header block into fields. Returns the fields and the offset where
/// the header block ends (the start of the empty separator line, or the end of data).
fn header_fields(raw: &[u8]) -> (Vec<Field>, usize) {
    let mut fields = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        let rest = &raw[pos..];
        // RFC 5322 §2.1: the header section ends at the first empty line.
        if rest.starts_with(b"\r\n") || rest.starts_with(b"\n") {
            break;
        }
        let start = pos;
        let first_line_end = end_of_line(raw, pos);
        pos = first_line_end;
        // RFC 5322 §2.2.3: a line starting with WSP continues the previous field.
        while pos < raw.len() && (raw[pos] == b' ' || raw[pos] == b'\t') {
            pos = end_of_line(raw, pos);
        }
        let name = raw[start..first_line_end]
            .iter()
            .position(|&b| b == b':')
            .map(|colon| {
                let mut end = start + colon;
                while end > start && (raw[end - 1] == b' ' || raw[end - 1] == b'\t') {
                    end -= 1;
                }
                start..end
            });
        fields.push(Field {
            range: start..pos,
            name,
        });
    }
    (fields, pos)
}

/// Rewrites the top-level header block: fields named in `delete` are dropped, `Subject`
/// fields are replaced when `blank_subject` is set; everything else is copied unchanged.
fn rewrite(raw: &[u8], delete: &[&str], blank_subject: bool) -> Vec<u8> {
    let (fields, header_end) = header_fields(raw);
    let mut out = Vec::with_capacity(raw.len());
    for field in &fields {
        if field.name_in(raw, delete) {
            continue;
        }
        if blank_subject && field.name_is(raw, "Subject") {
            out.extend_from_slice(SUBJECT_PLACEHOLDER);
            out.extend_from_slice(field.line_ending(raw));
            continue;
        }
        out.extend_from_slice(&raw[field.range.clone()]);
    }
    out.extend_from_slice(&raw[header_end..]);
    out
}

/// SUB-10: deletes every top-level `Received`, `X-Originating-IP`, `X-Mailer` and
/// `User-Agent` field and replaces each `Subject` field by `Subject: [...]`.
pub fn cleanup_submission(raw: &[u8]) -> Vec<u8> {
    rewrite(raw, SUBMISSION_DELETE, true)
}

/// IN-7: deletes every top-level `DKIM-Signature`, `Authentication-Results` and
/// `Received` field.
pub fn strip_inbound(raw: &[u8]) -> Vec<u8> {
    rewrite(raw, INBOUND_DELETE, false)
}

/// The value of the first top-level field named `name` (case-insensitive), unfolded
/// (line breaks removed, RFC 5322 §2.2.3), control characters turned into spaces, trimmed;
/// invalid UTF-8 replaced. `None` when there is no such field.
pub(crate) fn first_header_value(msg: &Message<'_>, name: &str) -> Option<String> {
    let header = msg
        .headers()
        .iter()
        .find(|h| h.name.as_str().eq_ignore_ascii_case(name))?;
    let bytes = msg
        .raw_message
        .get(header.offset_start as usize..header.offset_end as usize)
        .unwrap_or_default();
    let text = String::from_utf8_lossy(bytes);
    let unfolded: String = text
        .chars()
        .filter(|&c| c != '\r' && c != '\n')
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    Some(unfolded.trim().to_string())
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
/// SUB-6 / IN-4a: the first `From` field is used; it must hold exactly one mailbox. Group
/// syntax, several mailboxes, an empty or missing field and anything that is not
/// `local@domain` give `Err` with the unfolded, trimmed field value (empty when missing).
pub fn from_address(msg: &Message<'_>) -> Result<String, String> {
    let value = first_header_value(msg, "From").unwrap_or_default();
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
    use mail_parser::MessageParser;

    fn from_of(raw: &str) -> Result<String, String> {
        let msg = MessageParser::default()
            .parse(raw.as_bytes())
            .expect("test message parses");
        from_address(&msg)
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
            ("from:   One <One@Example.ORG>  \n\nx", "One@Example.ORG"),
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
            // The first From field counts (mailparse get_first_value upstream).
            (
                "From: a@example.org\r\nFrom: b@example.org\r\n\r\nx",
                "a@example.org",
            ),
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
            // Folded Subject, two Subjects, encoded Subject.
            (
                "Subject: a very\r\n long\r\n\tsubject\r\nFrom: a@b.c\r\nsubject: =?utf-8?q?x?=\r\n\r\nb",
                "Subject: [...]\r\nFrom: a@b.c\r\nSubject: [...]\r\n\r\nb",
            ),
            // Blank before the colon (obsolete syntax) still names the field.
            (
                "Subject : x\r\nX-Mailer\t: y\r\n\r\nb",
                "Subject: [...]\r\n\r\nb",
            ),
            // Bare LF stays bare LF.
            (
                "Received: x\nSubject: hi\nFrom: a@b.c\n\nSubject: body text\nReceived: body\n",
                "Subject: [...]\nFrom: a@b.c\n\nSubject: body text\nReceived: body\n",
            ),
            // Similar names are not touched.
            (
                "X-Received: x\r\nReceived-SPF: y\r\nSubjects: z\r\nX-Mailer-Foo: w\r\n\r\n",
                "X-Received: x\r\nReceived-SPF: y\r\nSubjects: z\r\nX-Mailer-Foo: w\r\n\r\n",
            ),
            // Header-like text in the body and in MIME part headers is unchanged.
            (
                "Content-Type: multipart/mixed; boundary=\"b\"\r\nSubject: s\r\n\r\n--b\r\nSubject: inner\r\nReceived: inner\r\nUser-Agent: inner\r\n\r\nx\r\n--b--\r\n",
                "Content-Type: multipart/mixed; boundary=\"b\"\r\nSubject: [...]\r\n\r\n--b\r\nSubject: inner\r\nReceived: inner\r\nUser-Agent: inner\r\n\r\nx\r\n--b--\r\n",
            ),
            // Header-only message, last field without line ending.
            ("From: a@b.c\r\nSubject: x", "From: a@b.c\r\nSubject: [...]"),
            ("Received: x", ""),
            ("", ""),
            // Empty header block: everything is body.
            ("\r\nReceived: x\r\n", "\r\nReceived: x\r\n"),
        ];
        for (input, want) in cases {
            let got = cleanup_submission(input.as_bytes());
            assert_eq!(String::from_utf8_lossy(&got), *want, "input {input:?}");
        }
    }

    #[test]
    fn cleanup_keeps_body_bytes_exact() {
        // Arbitrary (non-UTF-8, NUL, lone CR) body bytes survive unchanged.
        let mut raw = b"Received: from host\r\nSubject: s\r\nFrom: a@b.c\r\n\r\n".to_vec();
        let body: Vec<u8> = (0u8..=255).chain([b'\r', b'\r', b'\n', b'\n']).collect();
        raw.extend_from_slice(&body);
        let out = cleanup_submission(&raw);
        let mut want = b"Subject: [...]\r\nFrom: a@b.c\r\n\r\n".to_vec();
        want.extend_from_slice(&body);
        assert_eq!(out, want);
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
                "From: a@b.c\n\nb",
            ),
            (
                "ARC-Seal: kept\r\nX-Google-DKIM-Signature: kept\r\n\r\n",
                "ARC-Seal: kept\r\nX-Google-DKIM-Signature: kept\r\n\r\n",
            ),
        ];
        for (input, want) in cases {
            let got = strip_inbound(input.as_bytes());
            assert_eq!(String::from_utf8_lossy(&got), *want, "input {input:?}");
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
