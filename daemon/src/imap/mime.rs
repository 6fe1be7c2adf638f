//! How IMAP shows a stored message's MIME structure (RFC 9051 §6.4.5, §7.5.2): section
//! resolution (`HEADER`, `TEXT`, `MIME`, part numbers, `HEADER.FIELDS[.NOT]`),
//! BODY/BODYSTRUCTURE and ENVELOPE. The structure itself comes from the store, as the
//! message parser found it on arrival (`crate::message`); nothing here splits MIME again,
//! and nothing is decoded.

use crate::message::fields::{self, param};
use crate::message::header;
use crate::message::{Kind, Node};

use super::response::{nstring, string};

/// The first field called `name` in a header section, unfolded.
fn field(section: &[u8], name: &str) -> Option<Vec<u8>> {
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

// ---- sections -----------------------------------------------------------------------

/// Resolve a part number path (RFC 9051 §6.4.5): in a multipart, `n` is the n-th child;
/// in a non-multipart message, part 1 is its body; a message/rfc822 part continues in
/// the encapsulated message.
pub fn resolve<'n>(root: &'n Node, path: &[u32]) -> Option<&'n Node> {
    let mut cur = root;
    for (i, &n) in path.iter().enumerate() {
        // A message/rfc822 part (not the root) is entered when the path goes deeper.
        let container = match (&cur.kind, i) {
            (Kind::Message(inner), i) if i > 0 => inner.as_ref(),
            _ => cur,
        };
        cur = match &container.kind {
            Kind::Multipart(children) => children.get((n as usize).checked_sub(1)?)?,
            _ if n == 1 => container,
            _ => return None,
        };
    }
    Some(cur)
}

/// The encapsulated message of a message/rfc822 node, or the root itself.
pub fn message_of(node: &Node, is_root: bool) -> Option<&Node> {
    if is_root {
        return Some(node);
    }
    match &node.kind {
        Kind::Message(inner) => Some(inner),
        _ => None,
    }
}

/// `HEADER.FIELDS (names)` / `.NOT`: the selected fields as stored, then a blank line.
pub fn header_subset(section: &[u8], names: &[Vec<u8>], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for f in header::fields(section) {
        let name = &section[f.name.clone()];
        let listed = names.iter().any(|n| n.eq_ignore_ascii_case(name));
        if listed != not {
            out.extend_from_slice(&section[f.range]);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Number of lines of a body (`body-fld-lines`).
fn line_count(b: &[u8]) -> usize {
    let n = b.iter().filter(|&&c| c == b'\n').count();
    if b.last().is_some_and(|&c| c != b'\n') {
        n + 1
    } else {
        n
    }
}

// ---- BODY / BODYSTRUCTURE -----------------------------------------------------------

fn params_list(out: &mut Vec<u8>, params: &[(String, String)]) {
    if params.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        string(out, k.as_bytes());
        out.push(b' ');
        string(out, v.as_bytes());
    }
    out.push(b')');
}

/// `body` (RFC 9051 §9); `extended` adds the BODYSTRUCTURE extension data.
pub fn body_structure(out: &mut Vec<u8>, raw: &[u8], node: &Node, extended: bool) {
    let section = &raw[node.header.clone()];
    let ct = &node.content_type;
    out.push(b'(');
    if let Kind::Multipart(children) = &node.kind {
        for c in children {
            body_structure(out, raw, c, extended);
        }
        out.push(b' ');
        string(out, ct.subtype.as_bytes());
        if extended {
            out.push(b' ');
            params_list(out, &ct.params);
            extension_tail(out, section);
        }
        out.push(b')');
        return;
    }
    string(out, ct.mtype.as_bytes());
    out.push(b' ');
    string(out, ct.subtype.as_bytes());
    out.push(b' ');
    // RFC 2045 §5.2: text without a charset is US-ASCII (reported as Dovecot does).
    if ct.mtype == "text" && param(&ct.params, "charset").is_none() {
        let mut params = ct.params.clone();
        params.push(("charset".to_string(), "us-ascii".to_string()));
        params_list(out, &params);
    } else {
        params_list(out, &ct.params);
    }
    out.push(b' ');
    nstring(out, field(section, "content-id").as_deref());
    out.push(b' ');
    nstring(out, field(section, "content-description").as_deref());
    out.push(b' ');
    string(out, node.encoding.name().as_bytes());
    let body = &raw[node.body.clone()];
    out.extend_from_slice(format!(" {}", body.len()).as_bytes());
    match &node.kind {
        Kind::Message(inner) => {
            out.push(b' ');
            envelope(out, &raw[inner.header.clone()]);
            out.push(b' ');
            body_structure(out, raw, inner, extended);
            out.extend_from_slice(format!(" {}", line_count(body)).as_bytes());
        }
        _ if ct.mtype == "text" => {
            out.extend_from_slice(format!(" {}", line_count(body)).as_bytes());
        }
        _ => {}
    }
    if extended {
        out.push(b' ');
        nstring(out, field(section, "content-md5").as_deref());
        extension_tail(out, section);
    }
    out.push(b')');
}

/// ` disposition language location`.
fn extension_tail(out: &mut Vec<u8>, section: &[u8]) {
    out.push(b' ');
    match field(section, "content-disposition").and_then(|d| fields::disposition(&d).ok()) {
        Some((d, params)) => {
            out.push(b'(');
            string(out, d.as_bytes());
            out.push(b' ');
            params_list(out, &params);
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    match field(section, "content-language") {
        Some(l) => {
            let l = String::from_utf8_lossy(&strip_comments(&l)).to_string();
            let langs: Vec<&str> = l
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            if langs.is_empty() {
                out.extend_from_slice(b"NIL");
            } else {
                out.push(b'(');
                for (i, s) in langs.iter().enumerate() {
                    if i > 0 {
                        out.push(b' ');
                    }
                    string(out, s.as_bytes());
                }
                out.push(b')');
            }
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    nstring(out, field(section, "content-location").as_deref());
}

// ---- ENVELOPE -----------------------------------------------------------------------

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

fn address_list(out: &mut Vec<u8>, v: Option<&[u8]>) {
    let addrs = v.map(parse_addresses).unwrap_or_default();
    if addrs.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for a in addrs {
        match a {
            Addr::Mailbox {
                name,
                local,
                domain,
            } => {
                out.push(b'(');
                nstring(out, name.as_deref());
                out.extend_from_slice(b" NIL ");
                string(out, &local);
                out.push(b' ');
                string(out, &domain);
                out.push(b')');
            }
            Addr::GroupStart(name) => {
                out.extend_from_slice(b"(NIL NIL ");
                string(out, &name);
                out.extend_from_slice(b" NIL)");
            }
            Addr::GroupEnd => out.extend_from_slice(b"(NIL NIL NIL NIL)"),
        }
    }
    out.push(b')');
}

/// `envelope` (RFC 9051 §7.5.2) of a message header. Sender and Reply-To default to From.
pub fn envelope(out: &mut Vec<u8>, header: &[u8]) {
    let f = header;
    let from = field(f, "from");
    out.push(b'(');
    nstring(out, field(f, "date").as_deref());
    out.push(b' ');
    nstring(out, field(f, "subject").as_deref());
    out.push(b' ');
    address_list(out, from.as_deref());
    out.push(b' ');
    address_list(out, field(f, "sender").or_else(|| from.clone()).as_deref());
    out.push(b' ');
    address_list(
        out,
        field(f, "reply-to").or_else(|| from.clone()).as_deref(),
    );
    for name in ["to", "cc", "bcc"] {
        out.push(b' ');
        address_list(out, field(f, name).as_deref());
    }
    out.push(b' ');
    nstring(out, field(f, "in-reply-to").as_deref());
    out.push(b' ');
    nstring(out, field(f, "message-id").as_deref());
    out.push(b')');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Node {
        crate::message::structure::parse(raw, &crate::message::LIMITS).expect("parses")
    }

    const MULTI: &[u8] = b"From: \"Alice A.\" <alice@example.org>\r\n\
To: bob@example.org, Carol <carol@x.test>\r\n\
Subject: hello\r\n\
Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\
Message-ID: <m1@example.org>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"XX\"\r\n\
\r\n\
preamble\r\n\
--XX\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
line one\r\n\
line two\r\n\
--XX\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
Subject: inner\r\n\
From: d@e.f\r\n\
\r\n\
inner body\r\n\
--XX\r\n\
Content-Type: application/octet-stream\r\n\
Content-Disposition: attachment; filename=\"a.bin\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
AAAA\r\n\
--XX--\r\n";

    fn sec(node: &Node, raw: &[u8]) -> String {
        String::from_utf8(raw[node.body.clone()].to_vec()).unwrap()
    }

    #[test]
    fn multipart_parts_and_sections() {
        let root = parse(MULTI);
        let Kind::Multipart(children) = &root.kind else {
            panic!("not multipart")
        };
        assert_eq!(children.len(), 3);
        assert_eq!(
            sec(resolve(&root, &[1]).unwrap(), MULTI),
            "line one\r\nline two"
        );
        assert_eq!(sec(resolve(&root, &[3]).unwrap(), MULTI), "AAAA");
        let p2 = resolve(&root, &[2]).unwrap();
        assert!(sec(p2, MULTI).starts_with("Subject: inner\r\n"));
        // 2.1 is the body of the encapsulated non-multipart message.
        assert_eq!(sec(resolve(&root, &[2, 1]).unwrap(), MULTI), "inner body");
        assert!(resolve(&root, &[4]).is_none());
        assert!(resolve(&root, &[1, 2]).is_none());
        let inner = message_of(p2, false).unwrap();
        assert_eq!(
            &MULTI[inner.header.clone()],
            b"Subject: inner\r\nFrom: d@e.f\r\n\r\n"
        );
        assert_eq!(
            &MULTI[resolve(&root, &[3]).unwrap().header.clone()],
            &b"Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"a.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"[..]
        );
    }

    #[test]
    fn header_fields_subset() {
        let root = parse(MULTI);
        let h = &MULTI[root.header.clone()];
        let got = header_subset(h, &[b"subject".to_vec(), b"TO".to_vec()], false);
        assert_eq!(
            got,
            b"To: bob@example.org, Carol <carol@x.test>\r\nSubject: hello\r\n\r\n"
        );
        let got = header_subset(h, &[b"content-type".to_vec()], true);
        assert!(!String::from_utf8_lossy(&got).contains("Content-Type"));
        assert!(String::from_utf8_lossy(&got).starts_with("From:"));
        // Folded fields keep their folding.
        let folded = b"Subject: a\r\n b\r\nX: y\r\n\r\n";
        assert_eq!(
            header_subset(folded, &[b"subject".to_vec()], false),
            b"Subject: a\r\n b\r\n\r\n"
        );
    }

    #[test]
    fn bodystructure_of_multipart() {
        let root = parse(MULTI);
        let mut out = Vec::new();
        body_structure(&mut out, MULTI, &root, true);
        let s = String::from_utf8(out).unwrap();
        assert_eq!(
            s,
            "((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 18 2 NIL NIL NIL NIL)\
(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 41 \
(NIL \"inner\" ((NIL NIL \"d\" \"e.f\")) ((NIL NIL \"d\" \"e.f\")) ((NIL NIL \"d\" \"e.f\")) NIL NIL NIL NIL NIL) \
(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 10 1 NIL NIL NIL NIL) 4 NIL NIL NIL NIL)\
(\"application\" \"octet-stream\" NIL NIL NIL \"base64\" 4 NIL (\"attachment\" (\"filename\" \"a.bin\")) NIL NIL) \
\"mixed\" (\"boundary\" \"XX\") NIL NIL NIL)"
        );
        let mut out = Vec::new();
        body_structure(&mut out, MULTI, &root, false);
        let s = String::from_utf8(out).unwrap();
        assert!(s.ends_with(" \"mixed\")"), "{s}");
        assert!(
            s.starts_with("((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 18 2)")
        );
    }

    #[test]
    fn envelope_of_message() {
        let root = parse(MULTI);
        let mut out = Vec::new();
        envelope(&mut out, &MULTI[root.header.clone()]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "(\"Mon, 1 Jan 2024 10:00:00 +0000\" \"hello\" \
((\"Alice A.\" NIL \"alice\" \"example.org\")) \
((\"Alice A.\" NIL \"alice\" \"example.org\")) \
((\"Alice A.\" NIL \"alice\" \"example.org\")) \
((NIL NIL \"bob\" \"example.org\")(\"Carol\" NIL \"carol\" \"x.test\")) \
NIL NIL NIL \"<m1@example.org>\")"
        );
    }

    #[test]
    fn groups_and_plain_messages() {
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
        let plain = b"Subject: x\r\n\r\nbody\r\n";
        let root = parse(plain);
        assert_eq!(sec(resolve(&root, &[1]).unwrap(), plain), "body\r\n");
        let mut out = Vec::new();
        body_structure(&mut out, plain, &root, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 6 1)"
        );
        // A text type without charset reports US-ASCII.
        let html = b"MIME-Version: 1.0\r\nContent-Type: text/html\r\n\r\n<p>\r\n";
        let mut out = Vec::new();
        body_structure(&mut out, html, &parse(html), false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "(\"text\" \"html\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 5 1)"
        );
        // No header/body separator: all header.
        let root = parse(b"Subject: x\r\n");
        assert!(root.body.is_empty());
    }
}
