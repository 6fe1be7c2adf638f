//! The values of the MIME header fields that decide a message's structure, read strictly:
//! `Content-Type` (RFC 2045 §5.1), `Content-Disposition` (RFC 2183 §2),
//! `Content-Transfer-Encoding` (RFC 2045 §6.1), `MIME-Version` (RFC 2045 §4) and the
//! boundary parameter (RFC 2046 §5.1.1). A value that readers could take in two ways
//! (comments, white space inside the type, duplicate or RFC 2231-split boundary
//! parameters, unknown encodings) is an error, never a guess.

/// A media type with lower-case type, subtype and parameter names; parameter values as
/// given (quoted strings unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    pub mtype: String,
    pub subtype: String,
    pub params: Vec<(String, String)>,
}

impl ContentType {
    /// RFC 2045 §5.2: the type of an entity without Content-Type.
    pub fn text_plain() -> ContentType {
        ContentType {
            mtype: "text".into(),
            subtype: "plain".into(),
            params: Vec::new(),
        }
    }

    /// RFC 2046 §5.1.5: the default type of a part of a multipart/digest.
    pub fn message_rfc822() -> ContentType {
        ContentType {
            mtype: "message".into(),
            subtype: "rfc822".into(),
            params: Vec::new(),
        }
    }

    pub fn is(&self, mtype: &str, subtype: &str) -> bool {
        self.mtype == mtype && self.subtype == subtype
    }

    /// The value of a parameter (name in lower case).
    pub fn param(&self, name: &str) -> Option<&str> {
        param(&self.params, name)
    }
}

/// Parameters with lower-case names, values as given.
pub type Params = Vec<(String, String)>;

/// The value of a parameter (name in lower case).
pub fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Content-Transfer-Encoding (RFC 2045 §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    SevenBit,
    EightBit,
    Binary,
    QuotedPrintable,
    Base64,
}

impl Encoding {
    /// Identity encodings: the body is the content (RFC 2045 §6.2).
    pub fn is_identity(self) -> bool {
        matches!(
            self,
            Encoding::SevenBit | Encoding::EightBit | Encoding::Binary
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Encoding::SevenBit => "7bit",
            Encoding::EightBit => "8bit",
            Encoding::Binary => "binary",
            Encoding::QuotedPrintable => "quoted-printable",
            Encoding::Base64 => "base64",
        }
    }

    pub(crate) fn from_code(c: u8) -> Option<Encoding> {
        Some(match c {
            0 => Encoding::SevenBit,
            1 => Encoding::EightBit,
            2 => Encoding::Binary,
            3 => Encoding::QuotedPrintable,
            4 => Encoding::Base64,
            _ => return None,
        })
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            Encoding::SevenBit => 0,
            Encoding::EightBit => 1,
            Encoding::Binary => 2,
            Encoding::QuotedPrintable => 3,
            Encoding::Base64 => 4,
        }
    }
}

/// RFC 2045 §5.1 `tspecials`.
const TSPECIALS: &[u8] = b"()<>@,;:\\\"/[]?=";

/// RFC 2045 §5.1 `token` characters.
fn is_token(b: u8) -> bool {
    (33..=126).contains(&b) && !TSPECIALS.contains(&b)
}

/// RFC 2046 §5.1.1 `bchars`.
fn is_bchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b)
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// A cursor over an unfolded field value.
struct Cursor<'a> {
    v: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn skip_wsp(&mut self) {
        while self.i < self.v.len() && is_wsp(self.v[self.i]) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.v.get(self.i).copied()
    }

    fn token(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        while self.i < self.v.len() && is_token(self.v[self.i]) {
            self.i += 1;
        }
        (self.i > start).then(|| &self.v[start..self.i])
    }

    /// RFC 5322 §3.2.4 quoted-string without folding: `"` … `"` with `\` pairs. Returns
    /// the content unescaped and whether an escape was used.
    fn quoted(&mut self) -> Result<(Vec<u8>, bool), &'static str> {
        debug_assert_eq!(self.peek(), Some(b'"'));
        self.i += 1;
        let mut out = Vec::new();
        let mut escaped = false;
        loop {
            let Some(b) = self.peek() else {
                return Err("unterminated quoted string");
            };
            self.i += 1;
            match b {
                b'"' => return Ok((out, escaped)),
                b'\\' => {
                    let Some(next) = self.peek() else {
                        return Err("unterminated quoted string");
                    };
                    self.i += 1;
                    escaped = true;
                    out.push(next);
                }
                _ if b < 32 && b != b'\t' || b == 127 => {
                    return Err("control character in a quoted string");
                }
                _ => out.push(b),
            }
        }
    }
}

fn lower(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_lowercase()
}

/// `*(";" parameter)` after the value's first item (RFC 2045 §5.1). A trailing `;` and
/// empty items are allowed (common and read the same way everywhere); comments,
/// white space around `=`, duplicate names and RFC 2231 splits of `boundary` are not.
fn parameters(c: &mut Cursor<'_>) -> Result<Vec<(String, String)>, &'static str> {
    let mut params: Vec<(String, String)> = Vec::new();
    loop {
        c.skip_wsp();
        match c.peek() {
            None => return Ok(params),
            Some(b';') => c.i += 1,
            Some(b'(') => return Err("comment in a MIME field"),
            Some(_) => return Err("text where a parameter should start"),
        }
        c.skip_wsp();
        match c.peek() {
            None | Some(b';') => continue,
            Some(b'(') => return Err("comment in a MIME field"),
            _ => {}
        }
        let name = lower(c.token().ok_or("bad parameter name")?);
        if c.peek() != Some(b'=') {
            return Err("parameter without `=`");
        }
        c.i += 1;
        let (value, escaped) = match c.peek() {
            Some(b'"') => c.quoted()?,
            _ => (c.token().ok_or("bad parameter value")?.to_vec(), false),
        };
        if name.starts_with("boundary*") {
            return Err("RFC 2231 boundary parameter");
        }
        if name == "boundary" && escaped {
            return Err("escape in the boundary");
        }
        if params.iter().any(|(n, _)| *n == name) {
            return Err("duplicate parameter");
        }
        params.push((name, String::from_utf8_lossy(&value).into_owned()));
    }
}

/// A strict `Content-Type` value: `type "/" subtype *(";" parameter)`.
pub fn content_type(value: &[u8]) -> Result<ContentType, &'static str> {
    let mut c = Cursor { v: value, i: 0 };
    c.skip_wsp();
    let mtype = lower(c.token().ok_or("bad media type")?);
    if c.peek() != Some(b'/') {
        return Err("media type without a subtype");
    }
    c.i += 1;
    let subtype = lower(c.token().ok_or("bad media subtype")?);
    let params = parameters(&mut c)?;
    Ok(ContentType {
        mtype,
        subtype,
        params,
    })
}

/// A strict `Content-Disposition` value: `type *(";" parameter)` (RFC 2183 §2). The
/// type keeps its case (BODYSTRUCTURE reports it as sent).
pub fn disposition(value: &[u8]) -> Result<(String, Params), &'static str> {
    let mut c = Cursor { v: value, i: 0 };
    c.skip_wsp();
    let d = String::from_utf8_lossy(c.token().ok_or("bad disposition type")?).into_owned();
    let params = parameters(&mut c)?;
    Ok((d, params))
}

/// A strict `Content-Transfer-Encoding` value (RFC 2045 §6.1); `x-` tokens and anything
/// unknown are refused, since readers would treat them differently.
pub fn encoding(value: &[u8]) -> Result<Encoding, &'static str> {
    let v = String::from_utf8_lossy(value);
    Ok(
        match v.trim_matches([' ', '\t']).to_ascii_lowercase().as_str() {
            "7bit" => Encoding::SevenBit,
            "8bit" => Encoding::EightBit,
            "binary" => Encoding::Binary,
            "quoted-printable" => Encoding::QuotedPrintable,
            "base64" => Encoding::Base64,
            _ => return Err("unknown Content-Transfer-Encoding"),
        },
    )
}

/// `MIME-Version: 1.0`, optionally followed by one comment (RFC 2045 §4; mailers such as
/// Apple Mail add one).
pub fn mime_version(value: &[u8]) -> Result<(), &'static str> {
    let v = value
        .strip_prefix(b"1.0")
        .ok_or("MIME-Version is not 1.0")?;
    let v = v.trim_ascii();
    if v.is_empty() || (v.starts_with(b"(") && v.ends_with(b")")) {
        Ok(())
    } else {
        Err("MIME-Version is not 1.0")
    }
}

/// RFC 2046 §5.1.1: 1 to 70 `bchars`, not ending in a space.
pub fn boundary(b: &str) -> Result<(), &'static str> {
    let bytes = b.as_bytes();
    if bytes.is_empty() || bytes.len() > 70 {
        return Err("boundary length not 1 to 70");
    }
    if !bytes.iter().all(|&c| is_bchar(c)) || bytes.ends_with(b" ") {
        return Err("character not allowed in a boundary");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(v: &str) -> Result<(String, String, Params), &'static str> {
        content_type(v.as_bytes()).map(|c| (c.mtype, c.subtype, c.params))
    }

    fn p(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn content_type_table() {
        type Case<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)]);
        let ok: &[Case<'_>] = &[
            ("text/plain", "text", "plain", &[]),
            (
                "Text/PLAIN; Charset=UTF-8",
                "text",
                "plain",
                &[("charset", "UTF-8")],
            ),
            (
                "multipart/encrypted; protocol=\"application/pgp-encrypted\";\tboundary=\"YF\"",
                "multipart",
                "encrypted",
                &[
                    ("protocol", "application/pgp-encrypted"),
                    ("boundary", "YF"),
                ],
            ),
            (
                "text/plain; charset=utf-8;",
                "text",
                "plain",
                &[("charset", "utf-8")],
            ),
            ("text/plain;; a=b ;", "text", "plain", &[("a", "b")]),
            (
                "application/octet-stream; name=\"a \\\"b\\\".asc\"",
                "application",
                "octet-stream",
                &[("name", "a \"b\".asc")],
            ),
            (
                "application/x; filename*=utf-8''%e2%82%ac",
                "application",
                "x",
                &[("filename*", "utf-8''%e2%82%ac")],
            ),
            ("  text/plain  ", "text", "plain", &[]),
        ];
        for (v, t, s, params) in ok {
            assert_eq!(ct(v), Ok((t.to_string(), s.to_string(), p(params))), "{v}");
        }
        let bad = [
            "",
            "text",
            "text/",
            "/plain",
            "text /plain",
            "text/ plain",
            "text/plain (comment)",
            "text/plain; (comment) a=b",
            "text/plain; a = b",
            "text/plain; a=",
            "text/plain; a",
            "text/plain; a=\"unterminated",
            "text/plain; a=b c=d",
            "multipart/mixed; boundary=a; Boundary=b",
            "multipart/mixed; boundary*=utf-8''x",
            "multipart/mixed; boundary*0=x",
            "multipart/mixed; boundary=\"a\\b\"",
            "text/plain; a=\"x\x01y\"",
            "tëxt/plain",
        ];
        for v in bad {
            assert!(ct(v).is_err(), "{v} should be refused");
        }
    }

    #[test]
    fn other_fields() {
        assert_eq!(encoding(b" Base64 "), Ok(Encoding::Base64));
        assert_eq!(encoding(b"7BIT"), Ok(Encoding::SevenBit));
        for bad in [&b"8-bit"[..], b"x-uuencode", b"base64 (x)", b""] {
            assert!(encoding(bad).is_err());
        }
        assert_eq!(mime_version(b"1.0"), Ok(()));
        assert_eq!(mime_version(b"1.0 (Mac OS X Mail 16.0 \\(3776\\))"), Ok(()));
        assert!(mime_version(b"1.1").is_err());
        assert!(mime_version(b"1.0 x").is_err());
        assert_eq!(
            disposition(b"inline; filename=\"encrypted.asc\";"),
            Ok(("inline".to_string(), p(&[("filename", "encrypted.asc")])))
        );
        assert!(disposition(b"attachment; filename=a b").is_err());
        assert_eq!(boundary("JAA13167.773673707/CS.UTK.EDU"), Ok(()));
        assert_eq!(boundary(&"a".repeat(70)), Ok(()));
        assert!(boundary(&"a".repeat(71)).is_err());
        assert!(boundary("").is_err());
        assert!(boundary("a ").is_err());
        assert!(boundary("a;b").is_err());
        assert!(boundary("a\"b").is_err());
    }
}
