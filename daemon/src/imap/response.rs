//! Hand-written IMAP response syntax (RFC 9051 §9 / RFC 3501 §9): strings as atoms,
//! quoted strings or literals, flag lists, dates, UID sets, and the tagged status line.

use std::fmt::Write as _;

use crate::store::Flags;

/// Outcome of a command (RFC 9051 §7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
}

/// The tagged reply a command handler returns; the session writes it after any
/// untagged updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: Status,
    /// Response code without brackets, e.g. `APPENDUID 7 3`.
    pub code: Option<String>,
    pub text: String,
}

impl Reply {
    pub fn ok(text: impl Into<String>) -> Reply {
        Reply {
            status: Status::Ok,
            code: None,
            text: text.into(),
        }
    }
    pub fn no(text: impl Into<String>) -> Reply {
        Reply {
            status: Status::No,
            code: None,
            text: text.into(),
        }
    }
    pub fn bad(text: impl Into<String>) -> Reply {
        Reply {
            status: Status::Bad,
            code: None,
            text: text.into(),
        }
    }
    pub fn code(mut self, code: impl Into<String>) -> Reply {
        self.code = Some(code.into());
        self
    }

    /// `<tag> OK [CODE] text` CRLF.
    pub fn write(&self, tag: &str, out: &mut Vec<u8>) {
        let status = match self.status {
            Status::Ok => "OK",
            Status::No => "NO",
            Status::Bad => "BAD",
        };
        out.extend_from_slice(tag.as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.as_bytes());
        out.push(b' ');
        if let Some(code) = &self.code {
            out.push(b'[');
            out.extend_from_slice(code.as_bytes());
            out.extend_from_slice(b"] ");
        }
        out.extend_from_slice(self.text.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// RFC 9051 §9 `ATOM-CHAR`.
fn is_atom_char(b: u8) -> bool {
    b > 0x20 && b < 0x7f && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
}

/// `quoted` is possible: 7-bit, no CR, LF or NUL.
fn quotable(s: &[u8]) -> bool {
    s.len() <= 1024
        && s.iter()
            .all(|&b| b != 0 && b != b'\r' && b != b'\n' && b < 0x80)
}

/// A literal `{n}` CRLF bytes.
pub fn literal(out: &mut Vec<u8>, s: &[u8]) {
    let _ = write!(Lit(out), "{{{}}}\r\n", s.len());
    out.extend_from_slice(s);
}

/// `string` (RFC 9051 §9): quoted when possible, else a literal.
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    if quotable(s) {
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        literal(out, s);
    }
}

/// `nstring`: NIL or a string.
pub fn nstring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// `astring`: an atom when the value is one (and not `NIL`), else a string.
pub fn astring(out: &mut Vec<u8>, s: &[u8]) {
    if !s.is_empty() && s.iter().all(|&b| is_atom_char(b)) && !s.eq_ignore_ascii_case(b"NIL") {
        out.extend_from_slice(s);
    } else {
        string(out, s);
    }
}

/// A mailbox name (`mailbox` = `INBOX` / astring).
pub fn mailbox(out: &mut Vec<u8>, name: &str) {
    astring(out, name.as_bytes());
}

/// `(\Seen \Deleted kw)`.
pub fn flag_list(out: &mut Vec<u8>, f: &Flags) {
    out.push(b'(');
    let mut first = true;
    let mut put = |out: &mut Vec<u8>, s: &str| {
        if !first {
            out.push(b' ');
        }
        first = false;
        out.extend_from_slice(s.as_bytes());
    };
    for (bit, name) in [
        (Flags::ANSWERED, "\\Answered"),
        (Flags::FLAGGED, "\\Flagged"),
        (Flags::DELETED, "\\Deleted"),
        (Flags::SEEN, "\\Seen"),
        (Flags::DRAFT, "\\Draft"),
    ] {
        if f.has(bit) {
            put(out, name);
        }
    }
    for k in &f.keywords {
        put(out, k);
    }
    out.push(b')');
}

/// UIDs as a compact `uid-set` (`1:3,7`); the input must be ascending.
pub fn uid_set(uids: &[u32]) -> String {
    let mut s = String::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end.wrapping_add(1) {
            i += 1;
            end = uids[i];
        }
        if !s.is_empty() {
            s.push(',');
        }
        if start == end {
            let _ = write!(s, "{start}");
        } else {
            let _ = write!(s, "{start}:{end}");
        }
        i += 1;
    }
    s
}

pub use crate::clock::{MONTHS, civil_from_days, days_from_civil};

/// Month number (1..=12) of an English three-letter abbreviation.
pub fn month_number(s: &str) -> Option<u32> {
    MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(s))
        .map(|i| i as u32 + 1)
}

/// `"dd-Mon-yyyy hh:mm:ss +0000"` (RFC 9051 `date-time`), in UTC.
pub fn internal_date(out: &mut Vec<u8>, secs: u64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let _ = write!(
        Lit(out),
        "\"{:02}-{}-{:04} {:02}:{:02}:{:02} +0000\"",
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
}

/// `fmt::Write` into a byte buffer.
pub struct Lit<'a>(pub &'a mut Vec<u8>);

impl std::fmt::Write for Lit<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl Fn(&mut Vec<u8>)) -> String {
        let mut v = Vec::new();
        f(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn strings_choose_atom_quoted_or_literal() {
        assert_eq!(s(|o| astring(o, b"INBOX")), "INBOX");
        assert_eq!(s(|o| astring(o, b"Sent Messages")), "\"Sent Messages\"");
        assert_eq!(s(|o| astring(o, b"")), "\"\"");
        assert_eq!(s(|o| astring(o, b"NIL")), "\"NIL\"");
        assert_eq!(s(|o| string(o, b"a\"b\\")), "\"a\\\"b\\\\\"");
        assert_eq!(s(|o| string(o, b"a\r\nb")), "{4}\r\na\r\nb");
        assert_eq!(s(|o| string(o, "ü".as_bytes())), "{2}\r\nü");
        assert_eq!(s(|o| nstring(o, None)), "NIL");
    }

    #[test]
    fn uid_sets_are_compact() {
        assert_eq!(uid_set(&[1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
        assert_eq!(uid_set(&[4]), "4");
        assert_eq!(uid_set(&[]), "");
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(
            s(|o| internal_date(o, 1_704_067_200 + 3 * 3600 + 61)),
            "\"01-Jan-2024 03:01:01 +0000\""
        );
        let mut f = Flags {
            bits: Flags::SEEN | Flags::DELETED,
            keywords: vec!["$Junk".into()],
        };
        assert_eq!(s(|o| flag_list(o, &f)), "(\\Deleted \\Seen $Junk)");
        f = Flags::default();
        assert_eq!(s(|o| flag_list(o, &f)), "()");
    }
}
