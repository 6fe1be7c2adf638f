//! FETCH data items (RFC 9051 §6.4.5, §7.5.2): which items a request needs, and the
//! `* n FETCH (...)` line of one message, with BODY[section]<partial>, RFC822*, FLAGS,
//! UID, RFC822.SIZE, INTERNALDATE, ENVELOPE, BODY and BODYSTRUCTURE.

use std::fmt::Write as _;

use imap_codec::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItemName, Part, Section,
};

use super::mime;
use super::response::{Lit, astring, flag_list, internal_date, literal};
use crate::message::{Node, View};
use crate::store::MessageMeta;

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

/// What a section names: a range of the message, or bytes made for the answer.
pub enum SectionBytes {
    Range(std::ops::Range<usize>),
    Made(Vec<u8>),
}

/// A checked FETCH request.
pub struct Plan<'a> {
    pub items: Vec<MessageDataItemName<'a>>,
    /// Some item needs the stored bytes.
    pub needs_body: bool,
    /// Some item sets \Seen (BODY[] without PEEK, RFC822, RFC822.TEXT).
    pub sets_seen: bool,
}

/// Expand macros, add UID for UID FETCH (RFC 9051 §6.4.9), and refuse what is not
/// offered (BINARY is not advertised).
pub fn plan<'a>(
    names: &MacroOrMessageDataItemNames<'a>,
    uid_command: bool,
) -> Result<Plan<'a>, &'static str> {
    let mut items = match names {
        MacroOrMessageDataItemNames::Macro(m) => m
            .expand()
            .into_iter()
            .map(|i| match i {
                MessageDataItemName::Body => MessageDataItemName::Body,
                MessageDataItemName::Envelope => MessageDataItemName::Envelope,
                MessageDataItemName::Flags => MessageDataItemName::Flags,
                MessageDataItemName::InternalDate => MessageDataItemName::InternalDate,
                _ => MessageDataItemName::Rfc822Size,
            })
            .collect(),
        MacroOrMessageDataItemNames::MessageDataItemNames(v) => v.clone(),
    };
    if uid_command && !items.contains(&MessageDataItemName::Uid) {
        items.insert(0, MessageDataItemName::Uid);
    }
    let mut needs_body = false;
    let mut sets_seen = false;
    for i in &items {
        match i {
            MessageDataItemName::Body
            | MessageDataItemName::BodyStructure
            | MessageDataItemName::Envelope
            | MessageDataItemName::Rfc822Header => needs_body = true,
            MessageDataItemName::BodyExt { peek, .. } => {
                needs_body = true;
                sets_seen |= !peek;
            }
            MessageDataItemName::Rfc822 | MessageDataItemName::Rfc822Text => {
                needs_body = true;
                sets_seen = true;
            }
            MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. } => {
                return Err("BINARY is not supported");
            }
            _ => {}
        }
    }
    Ok(Plan {
        items,
        needs_body,
        sets_seen,
    })
}

fn part_path(p: &Part) -> Vec<u32> {
    p.0.as_ref().iter().map(|n| n.get()).collect()
}

fn write_part(out: &mut Vec<u8>, p: &Part) {
    let s: Vec<String> = p.0.as_ref().iter().map(|n| n.to_string()).collect();
    out.extend_from_slice(s.join(".").as_bytes());
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

/// The bytes a section names (RFC 9051 §6.4.5); a part that does not exist is empty.
pub fn section_bytes(msg: View<'_>, section: Option<&Section<'_>>) -> SectionBytes {
    let root = msg.root;
    // The message a HEADER/TEXT section applies to: the root, or a message/rfc822 part.
    let msg_at = |p: &Option<Part>| -> Option<&Node> {
        match p {
            None => Some(root),
            Some(p) => mime::message_of(mime::resolve(root, &part_path(p))?, false),
        }
    };
    let range = |r: Option<std::ops::Range<usize>>| SectionBytes::Range(r.unwrap_or(0..0));
    match section {
        None => SectionBytes::Range(0..msg.raw.len()),
        Some(Section::Part(p)) => range(mime::resolve(root, &part_path(p)).map(|n| n.body.clone())),
        Some(Section::Mime(p)) => {
            range(mime::resolve(root, &part_path(p)).map(|n| n.header.clone()))
        }
        Some(Section::Header(p)) => range(msg_at(p).map(|n| n.header.clone())),
        Some(Section::Text(p)) => range(msg_at(p).map(|n| n.body.clone())),
        Some(Section::HeaderFields(p, names)) | Some(Section::HeaderFieldsNot(p, names)) => {
            let not = matches!(section, Some(Section::HeaderFieldsNot(..)));
            let names: Vec<Vec<u8>> = names.as_ref().iter().map(|n| n.as_ref().to_vec()).collect();
            SectionBytes::Made(
                msg_at(p)
                    .map(|n| mime::header_subset(&msg.raw[n.header.clone()], &names, not))
                    .unwrap_or_default(),
            )
        }
    }
}

/// `<a.b>` of a range: `b` octets from `a`; an origin past the end gives the empty range.
fn partial_range(r: std::ops::Range<usize>, origin: u32, len: u32) -> std::ops::Range<usize> {
    let start = r.start.saturating_add(origin as usize).min(r.end);
    let end = start.saturating_add(len as usize).min(r.end);
    start..end
}

/// `<a.b>`: `b` octets from `a`; an origin past the end gives the empty string.
pub fn partial(data: &[u8], origin: u32, len: u32) -> &[u8] {
    let start = (origin as usize).min(data.len());
    let end = start.saturating_add(len as usize).min(data.len());
    &data[start..end]
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
                    mime::envelope(&mut resp.text, &raw[root.header.clone()]);
                }
            }
            MessageDataItemName::Body | MessageDataItemName::BodyStructure => {
                if let Some(View { raw, root }) = body {
                    sep(&mut resp.text);
                    let ext = matches!(item, MessageDataItemName::BodyStructure);
                    resp.text
                        .extend_from_slice(if ext { b"BODYSTRUCTURE " } else { b"BODY " });
                    mime::body_structure(&mut resp.text, raw, root, ext);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Flags;
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
    fn plan_flags_seen_and_uid() {
        let line = b"a UID FETCH 1:* (BODY[] FLAGS)\r\n";
        let (_, cmd) = CommandCodec::default().decode(line.as_ref()).unwrap();
        let CommandBody::Fetch {
            macro_or_item_names,
            ..
        } = cmd.body
        else {
            panic!()
        };
        let p = plan(&macro_or_item_names, true).unwrap();
        assert!(p.sets_seen && p.needs_body);
        assert_eq!(p.items[0], MessageDataItemName::Uid);
        assert_eq!(partial(b"hello", 1, 3), b"ell");
        assert_eq!(partial(b"hello", 4, 30), b"o");
    }
}
