//! Messages as the relay keeps them: the bytes plus their MIME structure, parsed once,
//! strictly, when a message arrives (SMTP, `/mxdeliv`, APPEND, bounces) and stored with
//! it. The encryption gate, the header rules, push, and IMAP FETCH, BODYSTRUCTURE and
//! SEARCH all read that one result (DESIGN.md principle 7): no second parser can see a
//! different message in the same bytes.
//!
//! - `header`: the one splitter of header sections into fields;
//! - `fields`: strict readers of the MIME fields that decide the structure;
//! - `structure`: the tree, its limits, the refusals, and its stored form.

pub mod fields;
pub mod header;
pub mod structure;

use base64::Engine;

pub use fields::{ContentType, Encoding};
pub use structure::{Kind, LIMITS, Limits, Node, Refusal};

/// A message and its structure. The structure always describes these bytes.
#[derive(Debug, Clone)]
pub struct Parsed {
    bytes: Vec<u8>,
    root: Node,
}

/// A borrowed view of a message and its structure.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    pub raw: &'a [u8],
    pub root: &'a Node,
}

impl Parsed {
    /// Parse a message that arrived (CRLF line endings, as SMTP delivers them; see
    /// [`normalize_line_endings`] for other sources).
    pub fn parse(bytes: Vec<u8>) -> Result<Parsed, Refusal> {
        let root = structure::parse(&bytes, &LIMITS)?;
        Ok(Parsed { bytes, root })
    }

    /// A message stored before structures were (store schema 1) that [`Parsed::parse`]
    /// refuses: one text part, its header section as far as fields can be split.
    pub fn legacy(bytes: Vec<u8>) -> Parsed {
        let mut it = header::fields(&bytes);
        it.by_ref().for_each(drop);
        let header_end = match it.stop() {
            header::Stop::Blank { body } => body,
            header::Stop::NotAField { at, .. } => at,
            header::Stop::End | header::Stop::Running => bytes.len(),
        };
        let root = Node {
            header: 0..header_end,
            body: header_end..bytes.len(),
            content_type: ContentType::text_plain(),
            encoding: Encoding::SevenBit,
            kind: Kind::Leaf,
        };
        Parsed { bytes, root }
    }

    /// A stored message: the bytes and the structure stored with them. `None` when the
    /// stored structure does not fit the bytes (a damaged row).
    pub fn from_stored(bytes: Vec<u8>, structure: &[u8]) -> Option<Parsed> {
        let root = Node::decode(structure, bytes.len(), &LIMITS)?;
        Some(Parsed { bytes, root })
    }

    pub fn view(&self) -> View<'_> {
        View {
            raw: &self.bytes,
            root: &self.root,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn root(&self) -> &Node {
        &self.root
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The structure in its stored form.
    pub fn encoded_structure(&self) -> Vec<u8> {
        self.root.encode()
    }

    pub fn into_parts(self) -> (Vec<u8>, Node) {
        (self.bytes, self.root)
    }

    /// Replace the top-level header section by what `rewrite` makes of it (header
    /// cleanup, a prepended DKIM-Signature). The body and every part keep their bytes;
    /// their offsets move with the header's length, so the structure stays valid without
    /// a second parse.
    pub fn rewrite_header(self, rewrite: impl FnOnce(&[u8]) -> Vec<u8>) -> Parsed {
        let Parsed { mut bytes, root } = self;
        let old_end = root.header.end;
        let new_header = rewrite(&bytes[..old_end]);
        let delta = new_header.len() as isize - old_end as isize;
        // In place: the body moves within the buffer, it is not copied to a new one.
        bytes.splice(..old_end, new_header);
        let mut root = root.shifted(old_end, delta);
        root.header.start = 0;
        Parsed { bytes, root }
    }
}

impl<'a> View<'a> {
    /// The top-level header section.
    pub fn header(&self) -> &'a [u8] {
        &self.raw[self.root.header.clone()]
    }

    /// The first top-level field called `name`, unfolded and trimmed (control characters
    /// as spaces, invalid UTF-8 replaced); `None` when there is none.
    pub fn header_text(&self, name: &str) -> Option<String> {
        header::first_text(self.header(), name)
    }

    /// The first top-level field called `name`, with its line break, as stored.
    pub fn header_field(&self, name: &str) -> Option<&'a [u8]> {
        let h = self.header();
        header::first(h, name).map(|f| &h[f.range])
    }

    /// The content of a leaf part after undoing its transfer encoding: identity encodings
    /// as stored, base64 strictly decoded (RFC 2045 §6.8, line breaks ignored).
    /// Quoted-printable is not decoded here (`None`): nothing the relay decides reads a
    /// quoted-printable part.
    pub fn content(&self, node: &Node) -> Option<std::borrow::Cow<'a, [u8]>> {
        let body = &self.raw[node.body.clone()];
        match node.encoding {
            e if e.is_identity() => Some(std::borrow::Cow::Borrowed(body)),
            Encoding::Base64 => {
                let text: Vec<u8> = body
                    .iter()
                    .copied()
                    .filter(|b| !matches!(b, b'\r' | b'\n'))
                    .collect();
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .ok()
                    .map(std::borrow::Cow::Owned)
            }
            _ => None,
        }
    }
}

/// Lines ending in a bare LF get a CR (RFC 5322 §2.3), as the SMTP DATA reader does for
/// mail that arrives over SMTP, so that messages from `/mxdeliv` and APPEND are read the
/// same way. Returns the input unchanged when it has no bare LF.
pub fn normalize_line_endings(bytes: Vec<u8>) -> Vec<u8> {
    let bare = bytes
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'))
        .count();
    if bare == 0 {
        return bytes;
    }
    let mut out = Vec::with_capacity(bytes.len() + bare);
    let mut prev = 0u8;
    for &b in &bytes {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

#[cfg(test)]
mod differential;
#[cfg(test)]
mod tests;
