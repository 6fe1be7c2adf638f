//! The MIME structure of a message (RFC 2045, RFC 2046 §5): a tree of entities with the
//! byte ranges of their header sections and bodies, their media types and transfer
//! encodings. Built once, strictly, when a message arrives (`parse`), stored next to the
//! message (`encode`/`decode`) and read by everything that looks inside a message later.
//!
//! Strict means: whatever two readers could split differently is refused instead of
//! guessed (DESIGN.md principle 7) — see [`Refusal`] for the list. The work is linear in
//! the message size times the nesting depth, and bounded by [`Limits`].

use std::ops::Range;

use super::fields::{self, ContentType, Encoding};
use super::header::{self, NotAField, Stop, is_wsp, line_end};

/// Bounds on what one message may cost to parse and to describe.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Entities in all (the message itself counts; upstream's encrypted mail has 3).
    pub max_parts: usize,
    /// Nesting of multiparts and encapsulated messages below the top level.
    pub max_depth: usize,
    /// Bytes of one header section.
    pub max_header_bytes: usize,
    /// Fields of one header section.
    pub max_header_fields: usize,
}

/// The limits every message of the relay is parsed with.
pub const LIMITS: Limits = Limits {
    max_parts: 64,
    max_depth: 8,
    max_header_bytes: 128 * 1024,
    max_header_fields: 512,
};

/// One entity: the message, a body part, or an encapsulated message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The header section, including the empty line that ends it (if any).
    pub header: Range<usize>,
    /// The body.
    pub body: Range<usize>,
    pub content_type: ContentType,
    pub encoding: Encoding,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Leaf,
    /// A multipart with its body parts (at least one).
    Multipart(Vec<Node>),
    /// message/rfc822 or message/global: the encapsulated message.
    Message(Box<Node>),
}

/// Why a message was refused. The text is the reason given to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("NUL byte in the message")]
    Nul,
    #[error("bare CR or LF in the message (lines must end in CRLF)")]
    BareLineBreak,
    #[error("header line without a colon")]
    HeaderLineWithoutColon,
    #[error("malformed header field name")]
    BadFieldName,
    #[error("continuation line without a header field")]
    StrayContinuation,
    #[error("header section larger than {0} bytes")]
    HeaderTooBig(usize),
    #[error("more than {0} header fields")]
    TooManyFields(usize),
    #[error("duplicate {0} header")]
    Duplicate(&'static str),
    #[error("{field}: {why}")]
    BadField {
        field: &'static str,
        why: &'static str,
    },
    #[error("{0} encoding on a multipart or message part")]
    EncodedContainer(&'static str),
    #[error("{0} header folded where readers disagree")]
    FoldedField(&'static str),
    #[error("header of a body part without the empty line that ends it")]
    PartHeaderUnended,
    #[error("part of a multipart/digest without Content-Type")]
    UntypedDigestPart,
    #[error("multipart without a boundary")]
    NoBoundary,
    #[error("boundary of a multipart reused by a part inside it")]
    NestedBoundary,
    #[error("delimiter line directly after a delimiter line")]
    NoLineBeforeDelimiter,
    #[error("line starting with the boundary that is not exactly a delimiter")]
    BoundaryPrefix,
    #[error("multipart without a closing boundary")]
    Unclosed,
    #[error("multipart without parts")]
    NoParts,
    #[error("text after the closing boundary")]
    Epilogue,
    #[error("more than {0} MIME parts")]
    TooManyParts(usize),
    #[error("MIME parts nested deeper than {0}")]
    TooDeep(usize),
}

/// Fields that decide the structure: at most one of each in any header section.
const STRUCTURAL: &[&str] = &[
    "Content-Type",
    "Content-Transfer-Encoding",
    "MIME-Version",
    "Content-Disposition",
];

/// Top-level fields RFC 5322 §3.6 allows at most once, plus the ones the relay's rules
/// read (Secure-Join, GATE-9; Auto-Submitted, IN-4d): a second copy is refused rather
/// than letting the relay and a client read different ones.
const SINGLE: &[&str] = &[
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Bcc",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Secure-Join",
    "Auto-Submitted",
];

/// Parse a whole message. `raw` must use CRLF line endings (see
/// [`super::normalize_line_endings`]).
pub fn parse(raw: &[u8], limits: &Limits) -> Result<Node, Refusal> {
    check_bytes(raw)?;
    let mut p = Parser {
        raw,
        limits,
        parts: 0,
        boundaries: Vec::new(),
    };
    p.entity(
        0..raw.len(),
        Ctx {
            depth: 0,
            default: ContentType::text_plain(),
            top: true,
            encapsulated: false,
        },
    )
}

/// NUL and lone CR or LF make readers split lines differently (RFC 5322 §2.3).
fn check_bytes(raw: &[u8]) -> Result<(), Refusal> {
    let mut prev = 0u8;
    for &b in raw {
        match b {
            0 => return Err(Refusal::Nul),
            b'\n' if prev != b'\r' => return Err(Refusal::BareLineBreak),
            _ if prev == b'\r' && b != b'\n' => return Err(Refusal::BareLineBreak),
            _ => {}
        }
        prev = b;
    }
    if prev == b'\r' {
        return Err(Refusal::BareLineBreak);
    }
    Ok(())
}

struct Ctx {
    depth: usize,
    default: ContentType,
    top: bool,
    /// The header section of an encapsulated message ends at the first line that is not
    /// a field, as RFC 5322 readers do; nothing the gate decides lies inside one.
    encapsulated: bool,
}

struct Parser<'a> {
    raw: &'a [u8],
    limits: &'a Limits,
    parts: usize,
    /// Boundaries of the multiparts enclosing the current entity.
    boundaries: Vec<String>,
}

/// The structural fields of one header section.
#[derive(Default)]
struct Structural {
    content_type: Option<Vec<u8>>,
    encoding: Option<Vec<u8>>,
    mime_version: Option<Vec<u8>>,
    disposition: Option<Vec<u8>>,
}

impl Parser<'_> {
    fn entity(&mut self, range: Range<usize>, ctx: Ctx) -> Result<Node, Refusal> {
        self.parts += 1;
        if self.parts > self.limits.max_parts {
            return Err(Refusal::TooManyParts(self.limits.max_parts));
        }
        let data = &self.raw[range.clone()];
        let (header_len, s) = self.header_section(data, &ctx)?;
        let header = range.start..range.start + header_len;
        let body = header.end..range.end;
        // RFC 2045 §4 makes MIME fields depend on MIME-Version, but the readers that
        // matter (Delta Chat's, mail clients, Python's email package) honour them without
        // it, and so does the relay: upstream's own Autocrypt Setup Message has none. A
        // version other than 1.0 is refused, since a strict reader would not read MIME.
        if ctx.top
            && let Some(v) = &s.mime_version
        {
            fields::mime_version(v).map_err(|why| Refusal::BadField {
                field: "MIME-Version",
                why,
            })?;
        }
        let content_type = match &s.content_type {
            Some(v) => fields::content_type(v).map_err(|why| Refusal::BadField {
                field: "Content-Type",
                why,
            })?,
            // RFC 2046 §5.1.5 makes message/rfc822 the default in a digest; many
            // readers use text/plain there. A digest part must say what it is.
            None if ctx.default.is("message", "rfc822") => return Err(Refusal::UntypedDigestPart),
            None => ctx.default.clone(),
        };
        let encoding = match &s.encoding {
            Some(v) => fields::encoding(v).map_err(|why| Refusal::BadField {
                field: "Content-Transfer-Encoding",
                why,
            })?,
            None => Encoding::SevenBit,
        };
        if let Some(v) = &s.disposition {
            fields::disposition(v).map_err(|why| Refusal::BadField {
                field: "Content-Disposition",
                why,
            })?;
        }
        let container = content_type.mtype == "multipart"
            || (content_type.mtype == "message"
                && matches!(content_type.subtype.as_str(), "rfc822" | "global"));
        // RFC 2045 §6.4, RFC 2046 §5.2.1: containers are never encoded.
        if container && !encoding.is_identity() {
            return Err(Refusal::EncodedContainer(encoding.name()));
        }
        if container && ctx.depth >= self.limits.max_depth {
            return Err(Refusal::TooDeep(self.limits.max_depth));
        }
        let kind = if content_type.mtype == "multipart" {
            let b = content_type.param("boundary").ok_or(Refusal::NoBoundary)?;
            fields::boundary(b).map_err(|why| Refusal::BadField {
                field: "Content-Type",
                why,
            })?;
            // RFC 2046 §5.1.2: an inner boundary must differ from (and, for our
            // prefix rule, not extend) every enclosing one.
            if self
                .boundaries
                .iter()
                .any(|o| o.starts_with(b) || b.starts_with(o.as_str()))
            {
                return Err(Refusal::NestedBoundary);
            }
            let b = b.to_string();
            let room = self.limits.max_parts - self.parts;
            let ranges =
                split_parts(self.raw, body.clone(), b.as_bytes(), room).map_err(|e| match e {
                    Refusal::TooManyParts(_) => Refusal::TooManyParts(self.limits.max_parts),
                    e => e,
                })?;
            let child_default = if content_type.subtype == "digest" {
                ContentType::message_rfc822()
            } else {
                ContentType::text_plain()
            };
            self.boundaries.push(b);
            let mut children = Vec::with_capacity(ranges.len());
            for r in ranges {
                children.push(self.entity(
                    r,
                    Ctx {
                        depth: ctx.depth + 1,
                        default: child_default.clone(),
                        top: false,
                        encapsulated: false,
                    },
                )?);
            }
            self.boundaries.pop();
            Kind::Multipart(children)
        } else if container {
            Kind::Message(Box::new(self.entity(
                body.clone(),
                Ctx {
                    depth: ctx.depth + 1,
                    default: ContentType::text_plain(),
                    top: false,
                    encapsulated: true,
                },
            )?))
        } else {
            Kind::Leaf
        };
        Ok(Node {
            header,
            body,
            content_type,
            encoding,
            kind,
        })
    }

    /// Split and check the header section at the start of `data`; returns its length
    /// (with the empty line) and its structural fields.
    fn header_section(&self, data: &[u8], ctx: &Ctx) -> Result<(usize, Structural), Refusal> {
        let mut s = Structural::default();
        let mut seen_single = [false; SINGLE.len()];
        let mut it = header::fields(data);
        let mut count = 0usize;
        for f in it.by_ref() {
            count += 1;
            if count > self.limits.max_header_fields {
                return Err(Refusal::TooManyFields(self.limits.max_header_fields));
            }
            if f.range.end > self.limits.max_header_bytes {
                return Err(Refusal::HeaderTooBig(self.limits.max_header_bytes));
            }
            for (i, name) in STRUCTURAL.iter().enumerate() {
                if f.is(data, name) {
                    let slot = match i {
                        0 => &mut s.content_type,
                        1 => &mut s.encoding,
                        2 => &mut s.mime_version,
                        _ => &mut s.disposition,
                    };
                    if slot.is_some() {
                        return Err(Refusal::Duplicate(name));
                    }
                    // A value that starts on a continuation line, or a folded one-token
                    // field, is read as empty by some readers (mailparse).
                    let raw_value = &data[f.value.clone()];
                    let first_line = raw_value.split(|&b| b == b'\r').next().unwrap_or_default();
                    let folded = raw_value.contains(&b'\n');
                    if first_line.iter().all(|&b| is_wsp(b)) || (folded && i != 0 && i != 3) {
                        return Err(Refusal::FoldedField(name));
                    }
                    *slot = Some(f.unfolded(data));
                }
            }
            if ctx.top {
                for (i, name) in SINGLE.iter().enumerate() {
                    if f.is(data, name) {
                        if seen_single[i] {
                            return Err(Refusal::Duplicate(name));
                        }
                        seen_single[i] = true;
                    }
                }
            }
        }
        let len = match it.stop() {
            Stop::Blank { body } => body,
            // A body part whose fields run into the next delimiter: some readers drop
            // the part, some take the fields as its content.
            Stop::End | Stop::Running if count > 0 && !ctx.top && !ctx.encapsulated => {
                return Err(Refusal::PartHeaderUnended);
            }
            Stop::End | Stop::Running => data.len(),
            Stop::NotAField { at, .. } if ctx.encapsulated => at,
            Stop::NotAField { why, .. } => {
                return Err(match why {
                    NotAField::NoColon => Refusal::HeaderLineWithoutColon,
                    NotAField::BadName => Refusal::BadFieldName,
                    NotAField::StrayContinuation => Refusal::StrayContinuation,
                });
            }
        };
        if len > self.limits.max_header_bytes {
            return Err(Refusal::HeaderTooBig(self.limits.max_header_bytes));
        }
        Ok((len, s))
    }
}

/// The body parts of a multipart body (RFC 2046 §5.1.1): the CRLF before a delimiter
/// belongs to the delimiter; the preamble is ignored; the epilogue must be blank; a line
/// that starts like a delimiter but is not one is refused (readers disagree on it). More
/// than `max` parts are refused as soon as they are seen.
fn split_parts(
    raw: &[u8],
    body: Range<usize>,
    boundary: &[u8],
    max: usize,
) -> Result<Vec<Range<usize>>, Refusal> {
    let data = &raw[..body.end];
    let mut parts = Vec::new();
    let mut current: Option<usize> = None;
    let mut closed = false;
    let mut pos = body.start;
    while pos < body.end {
        let end = line_end(data, pos);
        let line = data[pos..end]
            .strip_suffix(b"\r\n")
            .unwrap_or(&data[pos..end]);
        if closed {
            if !line.iter().all(|&b| is_wsp(b)) {
                return Err(Refusal::Epilogue);
            }
        } else if let Some(rest) = line
            .strip_prefix(b"--")
            .and_then(|l| l.strip_prefix(boundary))
        {
            let close = rest.starts_with(b"--");
            let tail = if close { &rest[2..] } else { rest };
            // RFC 2046 §5.1.1 allows transport padding after a delimiter, but readers
            // differ on it (mail-parser takes such a line as content): nothing may follow.
            if !tail.is_empty() {
                return Err(Refusal::BoundaryPrefix);
            }
            if let Some(start) = current.take() {
                // A delimiter right after a delimiter line has no CRLF of its own:
                // readers disagree whether a part lies between them.
                if pos < start + 2 {
                    return Err(Refusal::NoLineBeforeDelimiter);
                }
                let part_end = pos - 2;
                if parts.len() == max {
                    return Err(Refusal::TooManyParts(max));
                }
                parts.push(start..part_end);
            }
            if close {
                closed = true;
            } else {
                current = Some(end);
            }
        }
        pos = end;
    }
    if !closed {
        return Err(Refusal::Unclosed);
    }
    if parts.is_empty() {
        return Err(Refusal::NoParts);
    }
    Ok(parts)
}

impl Node {
    /// Every entity of the tree in depth-first order (the node itself first).
    pub fn walk(&self) -> Vec<&Node> {
        let mut out = vec![self];
        let mut i = 0;
        while i < out.len() {
            let n = out[i];
            match &n.kind {
                Kind::Leaf => {}
                Kind::Multipart(c) => out.extend(c.iter()),
                Kind::Message(m) => out.push(m),
            }
            i += 1;
        }
        out
    }

    /// The body parts of a multipart, or `None`.
    pub fn children(&self) -> Option<&[Node]> {
        match &self.kind {
            Kind::Multipart(c) => Some(c),
            _ => None,
        }
    }

    /// The same tree with every offset at or after `at` moved by `delta` bytes (for a
    /// rewrite of the top-level header section, which ends at `at`).
    pub fn shifted(mut self, at: usize, delta: isize) -> Node {
        fn mv(v: usize, at: usize, delta: isize) -> usize {
            if v >= at {
                v.saturating_add_signed(delta)
            } else {
                v
            }
        }
        fn go(n: &mut Node, at: usize, delta: isize) {
            n.header = mv(n.header.start, at, delta)..mv(n.header.end, at, delta);
            n.body = mv(n.body.start, at, delta)..mv(n.body.end, at, delta);
            match &mut n.kind {
                Kind::Leaf => {}
                Kind::Multipart(c) => c.iter_mut().for_each(|c| go(c, at, delta)),
                Kind::Message(m) => go(m, at, delta),
            }
        }
        go(&mut self, at, delta);
        self
    }
}

// ---- storage encoding -----------------------------------------------------------------

/// Version of the encoding below.
const ENCODING_VERSION: u8 = 1;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first()?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn usize(&mut self) -> Option<usize> {
        usize::try_from(self.varint()?).ok()
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }

    fn str(&mut self) -> Option<String> {
        let n = self.usize()?;
        String::from_utf8(self.bytes(n)?.to_vec()).ok()
    }
}

impl Node {
    /// The compact form stored with a message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![ENCODING_VERSION];
        fn node(out: &mut Vec<u8>, n: &Node) {
            put_varint(out, n.header.start as u64);
            put_varint(out, (n.header.end - n.header.start) as u64);
            put_varint(out, (n.body.end - n.body.start) as u64);
            put_str(out, &n.content_type.mtype);
            put_str(out, &n.content_type.subtype);
            put_varint(out, n.content_type.params.len() as u64);
            for (k, v) in &n.content_type.params {
                put_str(out, k);
                put_str(out, v);
            }
            out.push(n.encoding.code());
            match &n.kind {
                Kind::Leaf => out.push(0),
                Kind::Multipart(c) => {
                    out.push(1);
                    put_varint(out, c.len() as u64);
                    c.iter().for_each(|c| node(out, c));
                }
                Kind::Message(m) => {
                    out.push(2);
                    node(out, m);
                }
            }
        }
        node(&mut out, self);
        out
    }

    /// Read the stored form back, for a message of `len` bytes. `None` when it is not a
    /// well-formed encoding of a tree within the limits and the message.
    pub fn decode(data: &[u8], len: usize, limits: &Limits) -> Option<Node> {
        let mut r = Reader(data);
        if r.bytes(1)? != [ENCODING_VERSION] {
            return None;
        }
        let mut budget = limits.max_parts;
        let root = decode_node(&mut r, len, 0, limits, &mut budget)?;
        r.0.is_empty().then_some(root)
    }
}

fn decode_node(
    r: &mut Reader<'_>,
    len: usize,
    depth: usize,
    limits: &Limits,
    budget: &mut usize,
) -> Option<Node> {
    *budget = budget.checked_sub(1)?;
    if depth > limits.max_depth + 1 {
        return None;
    }
    let hs = r.usize()?;
    let he = hs.checked_add(r.usize()?)?;
    let be = he.checked_add(r.usize()?)?;
    if be > len {
        return None;
    }
    let mtype = r.str()?;
    let subtype = r.str()?;
    let np = r.usize()?;
    if np > 1024 {
        return None;
    }
    let mut params = Vec::with_capacity(np);
    for _ in 0..np {
        params.push((r.str()?, r.str()?));
    }
    let encoding = Encoding::from_code(r.bytes(1)?[0])?;
    let kind = match r.bytes(1)?[0] {
        0 => Kind::Leaf,
        1 => {
            let n = r.usize()?;
            if n == 0 || n > *budget {
                return None;
            }
            let mut c = Vec::with_capacity(n);
            for _ in 0..n {
                c.push(decode_node(r, len, depth + 1, limits, budget)?);
            }
            Kind::Multipart(c)
        }
        2 => Kind::Message(Box::new(decode_node(r, len, depth + 1, limits, budget)?)),
        _ => return None,
    };
    Some(Node {
        header: hs..he,
        body: he..be,
        content_type: ContentType {
            mtype,
            subtype,
            params,
        },
        encoding,
        kind,
    })
}
