//! The header values ENVELOPE and BODYSTRUCTURE show (RFC 9051 §7.5.2), read from the
//! header sections of the structure stored with a message (`crate::message`): fields
//! through the one header splitter (`message::header`), address lists leniently (an
//! ENVELOPE shows what is there; the gate's strict reading of From is
//! `policy::headers`), Content-Language as a list. Nothing is decoded; the encoder
//! (`encode::fetch`) writes the values.

use crate::message::header;

/// The first field called `name` in a header section, unfolded.
pub fn field(section: &[u8], name: &str) -> Option<Vec<u8>> {
    header::first(section, name).map(|f| f.unfolded(section))
}

/// Remove RFC 5322 comments outside quoted strings (for the free-form fields shown in
/// ENVELOPE and Content-Language; structural fields never carry comments).
fn strip_comments(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let (mut depth, mut quoted, mut escaped) = (0u32, false, false);
    for &b in v {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(b);
            }
            continue;
        }
        match b {
            b'\\' => {
                escaped = true;
                if depth == 0 {
                    out.push(b);
                }
            }
            b'"' if depth == 0 => {
                quoted = !quoted;
                out.push(b);
            }
            b'(' if !quoted => depth += 1,
            b')' if !quoted && depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(b),
            _ => {}
        }
    }
    out
}

/// Number of lines of a body (`body-fld-lines`).
pub fn line_count(b: &[u8]) -> usize {
    let n = b.iter().filter(|&&c| c == b'\n').count();
    if b.last().is_some_and(|&c| c != b'\n') {
        n + 1
    } else {
        n
    }
}

/// The Content-Language tags of a header section (RFC 3282), comments removed;
/// `None` when there are none.
pub fn languages(section: &[u8]) -> Option<Vec<String>> {
    let l = field(section, "content-language")?;
    let l = String::from_utf8_lossy(&strip_comments(&l)).to_string();
    let langs: Vec<String> = l
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    (!langs.is_empty()).then_some(langs)
}

/// One address of an address list, or a group marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Mailbox {
        name: Option<Vec<u8>>,
        local: Vec<u8>,
        domain: Vec<u8>,
    },
    GroupStart(Vec<u8>),
    GroupEnd,
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn unquote_bytes(v: &[u8]) -> Vec<u8> {
    let v = trim(v);
    let mut out = Vec::with_capacity(v.len());
    let mut esc = false;
    for &b in v {
        if esc {
            out.push(b);
            esc = false;
        } else if b == b'\\' {
            esc = true;
        } else if b != b'"' {
            out.push(b);
        }
    }
    out
}

fn mailbox_addr(seg: &[u8]) -> Option<Addr> {
    let seg = trim(seg);
    if seg.is_empty() {
        return None;
    }
    let (name, spec) = match seg.iter().position(|&b| b == b'<') {
        Some(lt) => {
            let end = seg[lt..]
                .iter()
                .position(|&b| b == b'>')
                .map(|i| lt + i)
                .unwrap_or(seg.len());
            let name = unquote_bytes(&seg[..lt]);
            (
                (!name.is_empty()).then_some(name),
                trim(&seg[lt + 1..end]).to_vec(),
            )
        }
        None => (None, seg.to_vec()),
    };
    // Drop an obsolete route (`@a,@b:`).
    let spec = match spec.iter().position(|&b| b == b':') {
        Some(c) if spec.first() == Some(&b'@') => spec[c + 1..].to_vec(),
        _ => spec,
    };
    let (local, domain) = match spec.iter().rposition(|&b| b == b'@') {
        Some(at) => (unquote_bytes(&spec[..at]), spec[at + 1..].to_vec()),
        None => (unquote_bytes(&spec), Vec::new()),
    };
    Some(Addr::Mailbox {
        name,
        local,
        domain,
    })
}

/// Parse an address list (RFC 5322 §3.4) leniently.
pub fn parse_addresses(v: &[u8]) -> Vec<Addr> {
    let v = strip_comments(v);
    let mut out = Vec::new();
    let mut seg = Vec::new();
    let (mut quoted, mut angle, mut esc, mut in_group) = (false, false, false, false);
    for &b in &v {
        if esc {
            esc = false;
            seg.push(b);
            continue;
        }
        match b {
            b'\\' if quoted => {
                esc = true;
                seg.push(b);
            }
            b'"' => {
                quoted = !quoted;
                seg.push(b);
            }
            b'<' if !quoted => {
                angle = true;
                seg.push(b);
            }
            b'>' if !quoted => {
                angle = false;
                seg.push(b);
            }
            b':' if !quoted && !angle && !in_group => {
                out.push(Addr::GroupStart(unquote_bytes(&seg)));
                seg.clear();
                in_group = true;
            }
            b';' if !quoted && !angle && in_group => {
                out.extend(mailbox_addr(&seg));
                seg.clear();
                out.push(Addr::GroupEnd);
                in_group = false;
            }
            b',' if !quoted && !angle => {
                out.extend(mailbox_addr(&seg));
                seg.clear();
            }
            _ => seg.push(b),
        }
    }
    out.extend(mailbox_addr(&seg));
    if in_group {
        out.push(Addr::GroupEnd);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_comments_and_quotes() {
        let a = parse_addresses(b"undisclosed-recipients:;");
        assert_eq!(
            a,
            vec![
                Addr::GroupStart(b"undisclosed-recipients".to_vec()),
                Addr::GroupEnd
            ]
        );
        let a = parse_addresses(b"x@y (comment), \"q, r\" <s@t>");
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn languages_and_lines() {
        let h = b"Content-Language: en (English), de\r\n\r\n";
        assert_eq!(languages(h), Some(vec!["en".to_string(), "de".to_string()]));
        assert_eq!(languages(b"Content-Language: ,\r\n\r\n"), None);
        assert_eq!(line_count(b"a\r\nb"), 2);
        assert_eq!(line_count(b"a\r\n"), 1);
    }
}
