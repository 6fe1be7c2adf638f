//! The FETCH answer with message data (RFC 9051 §7.5.2): `* n FETCH (…)` with
//! BODY[section]<partial>, RFC822*, FLAGS, UID, RFC822.SIZE, INTERNALDATE, ENVELOPE,
//! BODY and BODYSTRUCTURE. Written by hand, and the only such place besides the
//! capability list, because imap-codec does not fit here:
//! - a literal of the message's own bytes of [`STREAM_AT`] or more is not copied: the
//!   answer records where it goes ([`Response::refs`]) and the session writes it to the
//!   connection from the one stored copy it holds (memory stays at one message per
//!   session); imap-codec's `Encoded` copies every literal into a buffer of its own;
//! - imap-codec has no public encoder for a single `MessageDataItem` (its
//!   `EncodeIntoContext` is crate-private), so a FETCH line cannot be split around a
//!   streamed literal;
//! - imap-codec writes BODYSTRUCTURE's types in upper case (`"TEXT"`, `"MESSAGE"
//!   "RFC822"`), where the relay sends them as the message has them (as Dovecot does);
//! - imap-types' `Literal` refuses NUL, which messages stored before the strict parser
//!   (`message::Parsed::legacy`) may hold.
//!
//! Strings use the choice of [`super::astring`]'s rules ([`super::is_atom`],
//! [`super::quotable`]).

use std::fmt::Write as _;

use imap_codec::imap_types::fetch::{MessageDataItemName, Part, Section};

use super::{is_atom, quotable};
use crate::clock::{MONTHS, civil_from_days};
use crate::imap::fetch::{SectionBytes, partial, partial_range, section_bytes};
use crate::imap::headers::{self, Addr};
use crate::message::fields::{self, param};
use crate::message::{Kind, Node, View};
use crate::store::{Flags, MessageMeta};

/// Literals of at least this many bytes are not copied into the response buffer: the
/// session writes them to the connection straight from the message (see [`Response`]).
pub const STREAM_AT: usize = 64 * 1024;

/// The `* n FETCH` text of one message, and the places where a literal of the message's
/// own bytes goes (offset in `text`, range of the message), so that a big body is sent
/// from the one copy the session holds instead of being copied again.
#[derive(Debug, Default)]
pub struct Response {
    pub text: Vec<u8>,
    pub refs: Vec<(usize, std::ops::Range<usize>)>,
}

impl Response {
    /// A literal of `msg[range]`: copied when small, referenced when big.
    fn message_literal(&mut self, msg: &[u8], range: std::ops::Range<usize>) {
        let _ = write!(Lit(&mut self.text), "{{{}}}\r\n", range.len());
        if range.len() >= STREAM_AT {
            self.refs.push((self.text.len(), range));
        } else {
            self.text.extend_from_slice(&msg[range]);
        }
    }
}

/// `fmt::Write` into a byte buffer.
struct Lit<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Lit<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// A literal `{n}` CRLF bytes.
fn literal(out: &mut Vec<u8>, s: &[u8]) {
    let _ = write!(Lit(out), "{{{}}}\r\n", s.len());
    out.extend_from_slice(s);
}

/// `string` (RFC 9051 §9): quoted when possible, else a literal.
fn string(out: &mut Vec<u8>, s: &[u8]) {
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
fn nstring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// `astring`: an atom when the value is one (and not `NIL`), else a string.
fn astring(out: &mut Vec<u8>, s: &[u8]) {
    if is_atom(s) {
        out.extend_from_slice(s);
    } else {
        string(out, s);
    }
}

/// A number in the answer.
fn number(out: &mut Vec<u8>, n: impl std::fmt::Display) {
    let _ = write!(Lit(out), "{n}");
}

/// `(\Seen \Deleted kw)`, system flags in the order of [`super::flags`].
fn flag_list(out: &mut Vec<u8>, f: &Flags) {
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

/// `"dd-Mon-yyyy hh:mm:ss +0000"` (RFC 9051 `date-time`), in UTC.
fn internal_date(out: &mut Vec<u8>, secs: u64) {
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

fn write_part(out: &mut Vec<u8>, p: &Part) {
    for (i, n) in p.0.as_ref().iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        number(out, n);
    }
}

/// The section spec as echoed in the response (`1.2.HEADER.FIELDS (A B)`).
fn write_section(out: &mut Vec<u8>, section: Option<&Section<'_>>) {
    let Some(section) = section else { return };
    let prefix = |out: &mut Vec<u8>, p: &Option<Part>| {
        if let Some(p) = p {
            write_part(out, p);
            out.push(b'.');
        }
    };
    match section {
        Section::Part(p) => write_part(out, p),
        Section::Header(p) => {
            prefix(out, p);
            out.extend_from_slice(b"HEADER");
        }
        Section::HeaderFields(p, names) | Section::HeaderFieldsNot(p, names) => {
            prefix(out, p);
            out.extend_from_slice(if matches!(section, Section::HeaderFields(..)) {
                b"HEADER.FIELDS ("
            } else {
                b"HEADER.FIELDS.NOT ("
            });
            for (i, n) in names.as_ref().iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                astring(out, n.as_ref());
            }
            out.push(b')');
        }
        Section::Text(p) => {
            prefix(out, p);
            out.extend_from_slice(b"TEXT");
        }
        Section::Mime(p) => {
            write_part(out, p);
            out.extend_from_slice(b".MIME");
        }
    }
}

/// Write `* seq FETCH (...)` for one message. `body` is present when the plan needs the
/// message; `add_flags` adds FLAGS when this fetch set \Seen (RFC 9051 §6.4.5).
pub fn write_message(
    resp: &mut Response,
    seq: u32,
    meta: &MessageMeta,
    body: Option<View<'_>>,
    items: &[MessageDataItemName<'_>],
    add_flags: bool,
) {
    let _ = write!(Lit(&mut resp.text), "* {seq} FETCH (");
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !first {
            out.push(b' ');
        }
        first = false;
    };
    let mut flags_written = false;
    for item in items {
        match item {
            MessageDataItemName::Uid => {
                sep(&mut resp.text);
                let _ = write!(Lit(&mut resp.text), "UID {}", meta.uid);
            }
            MessageDataItemName::Flags => {
                sep(&mut resp.text);
                resp.text.extend_from_slice(b"FLAGS ");
                flag_list(&mut resp.text, &meta.flags);
                flags_written = true;
            }
            MessageDataItemName::Rfc822Size => {
                sep(&mut resp.text);
                let _ = write!(Lit(&mut resp.text), "RFC822.SIZE {}", meta.size);
            }
            MessageDataItemName::InternalDate => {
                sep(&mut resp.text);
                resp.text.extend_from_slice(b"INTERNALDATE ");
                internal_date(&mut resp.text, meta.internal_date);
            }
            MessageDataItemName::Envelope => {
                if let Some(View { raw, root }) = body {
                    sep(&mut resp.text);
                    resp.text.extend_from_slice(b"ENVELOPE ");
                    envelope(&mut resp.text, &raw[root.header.clone()]);
                }
            }
            MessageDataItemName::Body | MessageDataItemName::BodyStructure => {
                if let Some(View { raw, root }) = body {
                    sep(&mut resp.text);
                    let ext = matches!(item, MessageDataItemName::BodyStructure);
                    resp.text
                        .extend_from_slice(if ext { b"BODYSTRUCTURE " } else { b"BODY " });
                    body_structure(&mut resp.text, raw, root, ext);
                }
            }
            MessageDataItemName::BodyExt {
                section,
                partial: part,
                ..
            } => {
                if let Some(msg) = body {
                    sep(&mut resp.text);
                    resp.text.extend_from_slice(b"BODY[");
                    write_section(&mut resp.text, section.as_ref());
                    resp.text.push(b']');
                    if let Some((origin, _)) = part {
                        let _ = write!(Lit(&mut resp.text), "<{origin}>");
                    }
                    resp.text.push(b' ');
                    match (section_bytes(msg, section.as_ref()), part) {
                        (SectionBytes::Range(r), Some((origin, len))) => {
                            resp.message_literal(msg.raw, partial_range(r, *origin, len.get()))
                        }
                        (SectionBytes::Range(r), None) => resp.message_literal(msg.raw, r),
                        (SectionBytes::Made(data), Some((origin, len))) => {
                            literal(&mut resp.text, partial(&data, *origin, len.get()))
                        }
                        (SectionBytes::Made(data), None) => literal(&mut resp.text, &data),
                    }
                }
            }
            MessageDataItemName::Rfc822 => {
                if let Some(View { raw, .. }) = body {
                    sep(&mut resp.text);
                    resp.text.extend_from_slice(b"RFC822 ");
                    resp.message_literal(raw, 0..raw.len());
                }
            }
            MessageDataItemName::Rfc822Header => {
                if let Some(View { raw, root }) = body {
                    sep(&mut resp.text);
                    resp.text.extend_from_slice(b"RFC822.HEADER ");
                    resp.message_literal(raw, root.header.clone());
                }
            }
            MessageDataItemName::Rfc822Text => {
                if let Some(View { raw, root }) = body {
                    sep(&mut resp.text);
                    resp.text.extend_from_slice(b"RFC822.TEXT ");
                    resp.message_literal(raw, root.body.clone());
                }
            }
            _ => {}
        }
    }
    if add_flags && !flags_written {
        sep(&mut resp.text);
        resp.text.extend_from_slice(b"FLAGS ");
        flag_list(&mut resp.text, &meta.flags);
    }
    resp.text.extend_from_slice(b")\r\n");
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

/// `body` (RFC 9051 §9) of `node`, from the structure stored with the message;
/// `extended` adds the BODYSTRUCTURE extension data.
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
    nstring(out, headers::field(section, "content-id").as_deref());
    out.push(b' ');
    nstring(
        out,
        headers::field(section, "content-description").as_deref(),
    );
    out.push(b' ');
    string(out, node.encoding.name().as_bytes());
    let body = &raw[node.body.clone()];
    out.push(b' ');
    number(out, body.len());
    match &node.kind {
        Kind::Message(inner) => {
            out.push(b' ');
            envelope(out, &raw[inner.header.clone()]);
            out.push(b' ');
            body_structure(out, raw, inner, extended);
            out.push(b' ');
            number(out, headers::line_count(body));
        }
        _ if ct.mtype == "text" => {
            out.push(b' ');
            number(out, headers::line_count(body));
        }
        _ => {}
    }
    if extended {
        out.push(b' ');
        nstring(out, headers::field(section, "content-md5").as_deref());
        extension_tail(out, section);
    }
    out.push(b')');
}

/// ` disposition language location`.
fn extension_tail(out: &mut Vec<u8>, section: &[u8]) {
    out.push(b' ');
    match headers::field(section, "content-disposition").and_then(|d| fields::disposition(&d).ok())
    {
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
    match headers::languages(section) {
        Some(langs) => {
            out.push(b'(');
            for (i, s) in langs.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                string(out, s.as_bytes());
            }
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    nstring(out, headers::field(section, "content-location").as_deref());
}

// ---- ENVELOPE -----------------------------------------------------------------------

fn address_list(out: &mut Vec<u8>, v: Option<&[u8]>) {
    let addrs = v.map(headers::parse_addresses).unwrap_or_default();
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
    let f = |name: &str| headers::field(header, name);
    let from = f("from");
    out.push(b'(');
    nstring(out, f("date").as_deref());
    out.push(b' ');
    nstring(out, f("subject").as_deref());
    out.push(b' ');
    address_list(out, from.as_deref());
    out.push(b' ');
    address_list(out, f("sender").or_else(|| from.clone()).as_deref());
    out.push(b' ');
    address_list(out, f("reply-to").or_else(|| from.clone()).as_deref());
    for name in ["to", "cc", "bcc"] {
        out.push(b' ');
        address_list(out, f(name).as_deref());
    }
    out.push(b' ');
    nstring(out, f("in-reply-to").as_deref());
    out.push(b' ');
    nstring(out, f("message-id").as_deref());
    out.push(b')');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::fetch::plan;
    use crate::imap::fetch::tests::{MULTI, parse};
    use imap_codec::CommandCodec;
    use imap_codec::decode::Decoder;
    use imap_codec::imap_types::command::CommandBody;

    const MSG: &[u8] = b"From: a@b.c\r\nSubject: hi\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nplain\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n--b--\r\n";

    /// Parse `a FETCH 1 (<items>)` and render it against MSG.
    fn render(items: &str, uid: bool) -> String {
        let line = format!("a FETCH 1 ({items})\r\n");
        let (_, cmd) = CommandCodec::default().decode(line.as_bytes()).unwrap();
        let CommandBody::Fetch {
            macro_or_item_names,
            ..
        } = cmd.body
        else {
            panic!()
        };
        let p = plan(&macro_or_item_names, uid).unwrap();
        let meta = MessageMeta {
            uid: 7,
            flags: Flags {
                bits: Flags::SEEN,
                keywords: vec![],
            },
            size: MSG.len() as u64,
            internal_date: 0,
        };
        let root = crate::message::structure::parse(MSG, &crate::message::LIMITS).unwrap();
        let mut resp = Response::default();
        let view = View {
            raw: MSG,
            root: &root,
        };
        write_message(&mut resp, 1, &meta, Some(view), &p.items, false);
        assert!(resp.refs.is_empty(), "small literals are copied");
        String::from_utf8(resp.text).unwrap()
    }

    #[test]
    fn big_literals_refer_to_the_message() {
        let body = "x".repeat(STREAM_AT);
        let raw = format!("Subject: big\r\n\r\n{body}");
        let root =
            crate::message::structure::parse(raw.as_bytes(), &crate::message::LIMITS).unwrap();
        let line = b"a FETCH 1 (BODY.PEEK[TEXT] BODY.PEEK[TEXT]<10.20> RFC822.SIZE)\r\n";
        let (_, cmd) = CommandCodec::default().decode(line.as_ref()).unwrap();
        let CommandBody::Fetch {
            macro_or_item_names,
            ..
        } = cmd.body
        else {
            panic!()
        };
        let p = plan(&macro_or_item_names, false).unwrap();
        let meta = MessageMeta {
            uid: 1,
            flags: Flags::default(),
            size: raw.len() as u64,
            internal_date: 0,
        };
        let mut resp = Response::default();
        let view = View {
            raw: raw.as_bytes(),
            root: &root,
        };
        write_message(&mut resp, 1, &meta, Some(view), &p.items, false);
        // The big TEXT is a reference, the 20-byte partial is copied.
        assert_eq!(resp.refs, vec![(resp.refs[0].0, 16..16 + STREAM_AT)]);
        let text = String::from_utf8(resp.text.clone()).unwrap();
        assert!(
            text.starts_with(&format!("* 1 FETCH (BODY[TEXT] {{{}}}\r\n", STREAM_AT)),
            "{text}"
        );
        assert_eq!(&text[resp.refs[0].0..][..22], " BODY[TEXT]<10> {20}\r\n");
        // Put together as the session sends it: the same bytes as a full copy.
        let mut sent = resp.text[..resp.refs[0].0].to_vec();
        sent.extend_from_slice(&raw.as_bytes()[16..]);
        sent.extend_from_slice(&resp.text[resp.refs[0].0..]);
        let sent = String::from_utf8(sent).unwrap();
        assert!(sent.contains(&format!(
            "}}\r\n{body} BODY[TEXT]<10> {{20}}\r\nxxxxxxxxxxxxxxxxxxxx RFC822.SIZE"
        )));
    }

    #[test]
    fn sections_and_partials() {
        assert_eq!(
            render("BODY.PEEK[1]", false),
            "* 1 FETCH (BODY[1] {5}\r\nplain)\r\n"
        );
        assert_eq!(
            render("BODY.PEEK[2.MIME]", false),
            "* 1 FETCH (BODY[2.MIME] {27}\r\nContent-Type: text/html\r\n\r\n)\r\n"
        );
        assert_eq!(
            render("BODY.PEEK[HEADER.FIELDS (SUBJECT)]", true),
            "* 1 FETCH (UID 7 BODY[HEADER.FIELDS (SUBJECT)] {15}\r\nSubject: hi\r\n\r\n)\r\n"
        );
        assert_eq!(
            render("BODY.PEEK[]<2.4>", false),
            "* 1 FETCH (BODY[]<2> {4}\r\nom: )\r\n"
        );
        assert_eq!(
            render("BODY.PEEK[]<5000.4>", false),
            "* 1 FETCH (BODY[]<5000> {0}\r\n)\r\n"
        );
        assert_eq!(
            render("BODY.PEEK[3]", false),
            "* 1 FETCH (BODY[3] {0}\r\n)\r\n"
        );
        let full = render("RFC822.SIZE BODY.PEEK[]", false);
        assert!(full.starts_with(&format!(
            "* 1 FETCH (RFC822.SIZE {} BODY[] {{{}}}\r\nFrom: a@b.c",
            MSG.len(),
            MSG.len()
        )));
        let t = render("BODY.PEEK[TEXT]", false);
        assert!(t.starts_with("* 1 FETCH (BODY[TEXT] {"), "{t}");
        assert!(t.contains("}\r\n--b\r\n"), "{t}");
        let h = render("RFC822.HEADER FLAGS", false);
        assert!(h.ends_with("\r\n\r\n FLAGS (\\Seen))\r\n"), "{h}");
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
    fn plain_messages_and_defaults() {
        let plain = b"Subject: x\r\n\r\nbody\r\n";
        let mut out = Vec::new();
        body_structure(&mut out, plain, &parse(plain), false);
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
    }

    #[test]
    fn strings_dates_and_flags() {
        let s = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = Vec::new();
            f(&mut v);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(s(&|o| astring(o, b"INBOX")), "INBOX");
        assert_eq!(s(&|o| astring(o, b"Sent Messages")), "\"Sent Messages\"");
        assert_eq!(s(&|o| astring(o, b"")), "\"\"");
        assert_eq!(s(&|o| astring(o, b"NIL")), "\"NIL\"");
        assert_eq!(s(&|o| string(o, b"a\"b\\")), "\"a\\\"b\\\\\"");
        assert_eq!(s(&|o| string(o, b"a\r\nb")), "{4}\r\na\r\nb");
        assert_eq!(s(&|o| string(o, "ü".as_bytes())), "{2}\r\nü");
        assert_eq!(s(&|o| nstring(o, None)), "NIL");
        assert_eq!(
            s(&|o| internal_date(o, 1_704_067_200 + 3 * 3600 + 61)),
            "\"01-Jan-2024 03:01:01 +0000\""
        );
        let f = Flags {
            bits: Flags::SEEN | Flags::DELETED,
            keywords: vec!["$Junk".into()],
        };
        assert_eq!(s(&|o| flag_list(o, &f)), "(\\Deleted \\Seen $Junk)");
        assert_eq!(s(&|o| flag_list(o, &Flags::default())), "()");
    }
}
