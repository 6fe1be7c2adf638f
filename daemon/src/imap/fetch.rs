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
pub fn section_bytes(msg: View<'_>, section: Option<&Section<'_>>) -> Vec<u8> {
    let (raw, root) = (msg.raw, msg.root);
    // The message a HEADER/TEXT section applies to: the root, or a message/rfc822 part.
    let msg_at = |p: &Option<Part>| -> Option<&Node> {
        match p {
            None => Some(root),
            Some(p) => mime::message_of(mime::resolve(root, &part_path(p))?, false),
        }
    };
    let slice = |r: std::ops::Range<usize>| raw.get(r).unwrap_or_default().to_vec();
    match section {
        None => raw.to_vec(),
        Some(Section::Part(p)) => mime::resolve(root, &part_path(p))
            .map(|n| slice(n.body.clone()))
            .unwrap_or_default(),
        Some(Section::Mime(p)) => mime::resolve(root, &part_path(p))
            .map(|n| slice(n.header.clone()))
            .unwrap_or_default(),
        Some(Section::Header(p)) => msg_at(p)
            .map(|n| slice(n.header.clone()))
            .unwrap_or_default(),
        Some(Section::Text(p)) => msg_at(p).map(|n| slice(n.body.clone())).unwrap_or_default(),
        Some(Section::HeaderFields(p, names)) | Some(Section::HeaderFieldsNot(p, names)) => {
            let not = matches!(section, Some(Section::HeaderFieldsNot(..)));
            let names: Vec<Vec<u8>> = names.as_ref().iter().map(|n| n.as_ref().to_vec()).collect();
            msg_at(p)
                .map(|n| mime::header_subset(&raw[n.header.clone()], &names, not))
                .unwrap_or_default()
        }
    }
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
    out: &mut Vec<u8>,
    seq: u32,
    meta: &MessageMeta,
    body: Option<View<'_>>,
    items: &[MessageDataItemName<'_>],
    add_flags: bool,
) {
    let _ = write!(Lit(out), "* {seq} FETCH (");
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
                sep(out);
                let _ = write!(Lit(out), "UID {}", meta.uid);
            }
            MessageDataItemName::Flags => {
                sep(out);
                out.extend_from_slice(b"FLAGS ");
                flag_list(out, &meta.flags);
                flags_written = true;
            }
            MessageDataItemName::Rfc822Size => {
                sep(out);
                let _ = write!(Lit(out), "RFC822.SIZE {}", meta.size);
            }
            MessageDataItemName::InternalDate => {
                sep(out);
                out.extend_from_slice(b"INTERNALDATE ");
                internal_date(out, meta.internal_date);
            }
            MessageDataItemName::Envelope => {
                if let Some(View { raw, root }) = body {
                    sep(out);
                    out.extend_from_slice(b"ENVELOPE ");
                    mime::envelope(out, &raw[root.header.clone()]);
                }
            }
            MessageDataItemName::Body | MessageDataItemName::BodyStructure => {
                if let Some(View { raw, root }) = body {
                    sep(out);
                    let ext = matches!(item, MessageDataItemName::BodyStructure);
                    out.extend_from_slice(if ext { b"BODYSTRUCTURE " } else { b"BODY " });
                    mime::body_structure(out, raw, root, ext);
                }
            }
            MessageDataItemName::BodyExt {
                section,
                partial: part,
                ..
            } => {
                if let Some(View { raw, root }) = body {
                    sep(out);
                    out.extend_from_slice(b"BODY[");
                    write_section(out, section.as_ref());
                    out.push(b']');
                    let data = section_bytes(View { raw, root }, section.as_ref());
                    match part {
                        Some((origin, len)) => {
                            let _ = write!(Lit(out), "<{origin}> ");
                            literal(out, partial(&data, *origin, len.get()));
                        }
                        None => {
                            out.push(b' ');
                            literal(out, &data);
                        }
                    }
                }
            }
            MessageDataItemName::Rfc822 => {
                if let Some(View { raw, .. }) = body {
                    sep(out);
                    out.extend_from_slice(b"RFC822 ");
                    literal(out, raw);
                }
            }
            MessageDataItemName::Rfc822Header => {
                if let Some(View { raw, root }) = body {
                    sep(out);
                    out.extend_from_slice(b"RFC822.HEADER ");
                    literal(out, &raw[root.header.clone()]);
                }
            }
            MessageDataItemName::Rfc822Text => {
                if let Some(View { raw, root }) = body {
                    sep(out);
                    out.extend_from_slice(b"RFC822.TEXT ");
                    literal(out, &raw[root.body.clone()]);
                }
            }
            _ => {}
        }
    }
    if add_flags && !flags_written {
        sep(out);
        out.extend_from_slice(b"FLAGS ");
        flag_list(out, &meta.flags);
    }
    out.extend_from_slice(b")\r\n");
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
        let mut out = Vec::new();
        let view = View {
            raw: MSG,
            root: &root,
        };
        write_message(&mut out, 1, &meta, Some(view), &p.items, false);
        String::from_utf8(out).unwrap()
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
