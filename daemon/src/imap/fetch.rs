//! FETCH requests (RFC 9051 §6.4.5): which items a request needs, and what a section
//! names in a stored message — section resolution (`HEADER`, `TEXT`, `MIME`, part
//! numbers, `HEADER.FIELDS[.NOT]`) over the structure the message parser found on
//! arrival (`crate::message`); nothing here splits MIME again. The answer is written by
//! `encode::fetch`.

use imap_codec::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItemName, Part, Section,
};

use crate::message::header;
use crate::message::{Kind, Node, View};

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

/// The bytes a section names (RFC 9051 §6.4.5); a part that does not exist is empty.
pub fn section_bytes(msg: View<'_>, section: Option<&Section<'_>>) -> SectionBytes {
    let root = msg.root;
    // The message a HEADER/TEXT section applies to: the root, or a message/rfc822 part.
    let msg_at = |p: &Option<Part>| -> Option<&Node> {
        match p {
            None => Some(root),
            Some(p) => message_of(resolve(root, &part_path(p))?, false),
        }
    };
    let range = |r: Option<std::ops::Range<usize>>| SectionBytes::Range(r.unwrap_or(0..0));
    match section {
        None => SectionBytes::Range(0..msg.raw.len()),
        Some(Section::Part(p)) => range(resolve(root, &part_path(p)).map(|n| n.body.clone())),
        Some(Section::Mime(p)) => range(resolve(root, &part_path(p)).map(|n| n.header.clone())),
        Some(Section::Header(p)) => range(msg_at(p).map(|n| n.header.clone())),
        Some(Section::Text(p)) => range(msg_at(p).map(|n| n.body.clone())),
        Some(Section::HeaderFields(p, names)) | Some(Section::HeaderFieldsNot(p, names)) => {
            let not = matches!(section, Some(Section::HeaderFieldsNot(..)));
            let names: Vec<Vec<u8>> = names.as_ref().iter().map(|n| n.as_ref().to_vec()).collect();
            SectionBytes::Made(
                msg_at(p)
                    .map(|n| header_subset(&msg.raw[n.header.clone()], &names, not))
                    .unwrap_or_default(),
            )
        }
    }
}

/// `<a.b>` of a range: `b` octets from `a`; an origin past the end gives the empty range.
pub fn partial_range(r: std::ops::Range<usize>, origin: u32, len: u32) -> std::ops::Range<usize> {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use imap_codec::CommandCodec;
    use imap_codec::decode::Decoder;
    use imap_codec::imap_types::command::CommandBody;

    pub(crate) fn parse(raw: &[u8]) -> Node {
        crate::message::structure::parse(raw, &crate::message::LIMITS).expect("parses")
    }

    /// A multipart message with a nested message and an attachment (shared with the
    /// encoder's tests).
    pub(crate) const MULTI: &[u8] = b"From: \"Alice A.\" <alice@example.org>\r\n\
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
    fn a_plain_message_has_its_body_as_part_1() {
        let plain = b"Subject: x\r\n\r\nbody\r\n";
        let root = parse(plain);
        assert_eq!(sec(resolve(&root, &[1]).unwrap(), plain), "body\r\n");
        // No header/body separator: all header.
        let root = parse(b"Subject: x\r\n");
        assert!(root.body.is_empty());
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
