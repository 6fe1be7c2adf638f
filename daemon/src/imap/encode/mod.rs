//! The one response encoder (RFC 9051 §7, §9; the wire forms of RFC 3501): every byte
//! the server sends is written here. Status responses, untagged data and continuation
//! requests are built as imap-types values and written by imap-codec's `ResponseCodec`;
//! whether a string goes out as an atom, a quoted string or a literal is decided once,
//! here ([`astring`], [`istring`]), for those values and for the hand-written parts.
//!
//! Written by hand, each for the reason given where it is:
//! - capability lists ([`capability_list`]): imap-types spells `IMAP4rev1` `IMAP4REV1`;
//! - the FETCH answer with message data ([`fetch`]): big literals go to the connection
//!   straight from the stored copy, and imap-codec can neither do that nor encode a
//!   single FETCH item.

pub mod fetch;

use std::borrow::Cow;
use std::num::NonZeroU32;

use imap_codec::ResponseCodec;
use imap_codec::encode::Encoder;
use imap_codec::imap_types::core::{
    AString, Atom, AtomExt, Charset, IString, Literal, NString, NString8, Quoted, QuotedChar, Tag,
    Text, Vec1,
};
use imap_codec::imap_types::extensions::metadata::{Entry, EntryValue, MetadataResponse};
use imap_codec::imap_types::extensions::namespace::Namespace;
use imap_codec::imap_types::extensions::quota::{QuotaGet, Resource};
use imap_codec::imap_types::extensions::uidplus::{UidElement, UidSet};
use imap_codec::imap_types::fetch::MessageDataItem;
use imap_codec::imap_types::flag::{Flag, FlagFetch, FlagNameAttribute, FlagPerm};
use imap_codec::imap_types::mailbox::{Mailbox, MailboxOther};
use imap_codec::imap_types::response::{
    Bye, Code, CodeOther, CommandContinuationRequest, Data, Response, Status, StatusBody,
    StatusKind, Tagged,
};
use imap_codec::imap_types::status::StatusDataItem;

use crate::store::Flags;

/// The outcome of a command (RFC 9051 §7.1): the tagged reply a handler returns; the
/// session writes it after any untagged data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    kind: StatusKind,
    code: Option<Code<'static>>,
    text: Cow<'static, str>,
}

impl Reply {
    pub fn ok(text: impl Into<Cow<'static, str>>) -> Reply {
        Reply::new(StatusKind::Ok, text)
    }
    pub fn no(text: impl Into<Cow<'static, str>>) -> Reply {
        Reply::new(StatusKind::No, text)
    }
    pub fn bad(text: impl Into<Cow<'static, str>>) -> Reply {
        Reply::new(StatusKind::Bad, text)
    }
    fn new(kind: StatusKind, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            kind,
            code: None,
            text: text.into(),
        }
    }
    /// With a response code (`[CODE]`).
    pub fn code(mut self, code: impl Into<Code<'static>>) -> Reply {
        self.code = Some(code.into());
        self
    }
}

/// Response codes of RFC 5530 (and RFC 9051 §7.1) that imap-types keeps as "other"
/// codes: the atom is all there is to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rfc5530 {
    AlreadyExists,
    AuthenticationFailed,
    Cannot,
    ContactAdmin,
    Limit,
    Nonexistent,
    NoPerm,
    PrivacyRequired,
    Unavailable,
}

impl From<Rfc5530> for Code<'static> {
    fn from(c: Rfc5530) -> Code<'static> {
        let atom: &'static str = match c {
            Rfc5530::AlreadyExists => "ALREADYEXISTS",
            Rfc5530::AuthenticationFailed => "AUTHENTICATIONFAILED",
            Rfc5530::Cannot => "CANNOT",
            Rfc5530::ContactAdmin => "CONTACTADMIN",
            Rfc5530::Limit => "LIMIT",
            Rfc5530::Nonexistent => "NONEXISTENT",
            Rfc5530::NoPerm => "NOPERM",
            Rfc5530::PrivacyRequired => "PRIVACYREQUIRED",
            Rfc5530::Unavailable => "UNAVAILABLE",
        };
        Code::Other(CodeOther::unvalidated(atom.as_bytes()))
    }
}

/// `[CAPABILITY …]` (RFC 9051 §7.1): by hand, see [`capability_list`].
pub fn capability_code(caps: &[&str]) -> Code<'static> {
    let mut code = b"CAPABILITY ".to_vec();
    code.extend_from_slice(capability_list(caps).as_bytes());
    Code::Other(CodeOther::unvalidated(code))
}

/// `[APPENDUID validity uid]` (RFC 4315 §3).
pub fn append_uid(validity: u32, uid: u32) -> Code<'static> {
    Code::AppendUid {
        uid_validity: nz(validity),
        uid: nz(uid),
    }
}

/// `[COPYUID validity from to]` (RFC 4315 §3); `from` and `to` are ascending and
/// not empty.
pub fn copy_uid(validity: u32, from: &[u32], to: &[u32]) -> Code<'static> {
    Code::CopyUid {
        uid_validity: nz(validity),
        source: uid_set(from),
        destination: uid_set(to),
    }
}

/// `[BADCHARSET (…)]` (RFC 9051 §7.1) with the charsets SEARCH accepts.
pub fn bad_charset(allowed: &[&'static str]) -> Code<'static> {
    Code::BadCharset {
        allowed: allowed
            .iter()
            .filter_map(|c| Atom::try_from(*c).ok().map(Charset::Atom))
            .collect(),
    }
}

/// A number the grammar requires to be non-zero (UIDs, UIDVALIDITY, sequence numbers).
/// The store never hands out 0; should one appear, 1 is sent rather than invalid syntax.
fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// Ascending UIDs as a compact `uid-set` (`1:3,7`, RFC 4315 §4).
fn uid_set(uids: &[u32]) -> UidSet {
    let mut elements = Vec::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end.wrapping_add(1) {
            i += 1;
            end = uids[i];
        }
        elements.push(if start == end {
            UidElement::Single(nz(start))
        } else {
            UidElement::Range(nz(start), nz(end))
        });
        i += 1;
    }
    if elements.is_empty() {
        elements.push(UidElement::Single(NonZeroU32::MIN));
    }
    UidSet(Vec1::unvalidated(elements))
}

/// RFC 9051 §9 `ATOM-CHAR` (without `]`, so that an atom is never mistaken for the end
/// of a response code).
pub(crate) fn is_atom_char(b: u8) -> bool {
    b > 0x20 && b < 0x7f && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
}

/// A `quoted` string is possible: 7-bit, no CR, LF or NUL, and short enough to read.
pub(crate) fn quotable(s: &[u8]) -> bool {
    s.len() <= 1024
        && s.iter()
            .all(|&b| b != 0 && b != b'\r' && b != b'\n' && b < 0x80)
}

/// An atom: not empty, only atom characters, and not `NIL`.
pub(crate) fn is_atom(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_atom_char(b)) && !s.eq_ignore_ascii_case(b"NIL")
}

/// `string` (RFC 9051 §9): quoted when possible, else a literal. An IMAP4rev1 string
/// cannot carry NUL; the values given here (names, configured values, tokens) hold none,
/// and one that did would lose its NUL bytes rather than break the syntax.
pub fn istring(s: &[u8]) -> IString<'static> {
    if quotable(s)
        && let Ok(q) = Quoted::try_from(String::from_utf8_lossy(s).into_owned())
    {
        return IString::Quoted(q);
    }
    let data: Vec<u8> = s.iter().copied().filter(|&b| b != 0).collect();
    IString::Literal(Literal::try_from(data).unwrap_or_else(|_| Literal::unvalidated(&b""[..])))
}

/// `astring`: an atom when the value is one, else a string.
pub fn astring(s: &[u8]) -> AString<'static> {
    if is_atom(s)
        && let Ok(a) = AtomExt::try_from(String::from_utf8_lossy(s).into_owned())
    {
        return AString::Atom(a);
    }
    AString::String(istring(s))
}

/// A mailbox name (`mailbox` = `INBOX` / astring).
fn mailbox(name: &str) -> Mailbox<'static> {
    // RFC 9051 §5.1: INBOX in any case is INBOX (the parser reads it so, so the store
    // holds no other spelling of it).
    match MailboxOther::try_from(astring(name.as_bytes())) {
        Ok(other) => Mailbox::Other(other),
        Err(_) => Mailbox::Inbox,
    }
}

/// Response text (`text` = 1*TEXT-CHAR): 7-bit without CR and LF; anything else is
/// replaced, and an empty text becomes `.`.
fn text(t: &str) -> Text<'static> {
    Text::try_from(t.to_string()).unwrap_or_else(|_| {
        let clean: String = t
            .chars()
            .map(|c| match c {
                '\u{1}'..='\u{9}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{7f}' => c,
                _ => '?',
            })
            .collect();
        Text::try_from(if clean.is_empty() {
            ".".to_string()
        } else {
            clean
        })
        .unwrap_or_else(|_| Text::unvalidated("."))
    })
}

/// Stored flags as IMAP flags, system flags first in the order of RFC 9051 §2.3.2.
fn flags(f: &Flags) -> Vec<Flag<'static>> {
    let mut out = Vec::new();
    for (bit, flag) in [
        (Flags::ANSWERED, Flag::Answered),
        (Flags::FLAGGED, Flag::Flagged),
        (Flags::DELETED, Flag::Deleted),
        (Flags::SEEN, Flag::Seen),
        (Flags::DRAFT, Flag::Draft),
    ] {
        if f.has(bit) {
            out.push(flag);
        }
    }
    // Keywords were atoms when a client set them (`flag-keyword`, RFC 9051 §9).
    out.extend(
        f.keywords
            .iter()
            .filter_map(|k| Atom::try_from(k.clone()).ok().map(Flag::Keyword)),
    );
    out
}

/// The system flags with `keywords` after them (`* FLAGS`, `PERMANENTFLAGS`).
fn flag_names(keywords: &[&str]) -> Vec<Flag<'static>> {
    let mut out = vec![
        Flag::Answered,
        Flag::Flagged,
        Flag::Deleted,
        Flag::Seen,
        Flag::Draft,
    ];
    out.extend(
        keywords
            .iter()
            .filter_map(|k| Atom::try_from(k.to_string()).ok().map(Flag::Keyword)),
    );
    out
}

/// The space-separated capability list (IMAP-1, RFC 9051 §7.2.2). By hand: imap-types
/// writes `IMAP4rev1` as `IMAP4REV1` (its `Capability` normalises known names), and the
/// relay's answer keeps the spelling clients and tests see today.
pub fn capability_list(caps: &[&str]) -> String {
    caps.join(" ")
}

/// A continuation request line (`+ text`, RFC 9051 §7.5) on its own, for the framing
/// code that writes it while a command is read.
pub fn continue_request(t: &str) -> Vec<u8> {
    let mut out = Out::default();
    out.continue_text(t);
    out.buf
}

/// The session's output: responses are appended here and flushed by the session.
#[derive(Debug, Default)]
pub struct Out {
    buf: Vec<u8>,
}

impl Out {
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    /// Take the encoded bytes (to write them, or to let [`fetch`] append to them).
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
    /// Put bytes (back) at the end; an empty buffer keeps its capacity for reuse.
    pub fn restore(&mut self, mut bytes: Vec<u8>) {
        if self.buf.is_empty() {
            std::mem::swap(&mut self.buf, &mut bytes);
        }
        self.buf.extend_from_slice(&bytes);
    }

    fn response(&mut self, r: &Response<'_>) {
        for fragment in ResponseCodec::default().encode(r) {
            match fragment {
                imap_codec::encode::Fragment::Line { data }
                | imap_codec::encode::Fragment::Literal { data, .. } => {
                    self.buf.extend_from_slice(&data)
                }
            }
        }
    }

    fn data(&mut self, d: Data<'_>) {
        self.response(&Response::Data(d));
    }

    /// The tagged reply (`tag OK [CODE] text`), or an untagged one when the command's tag
    /// could not be read (`* BAD …`, RFC 9051 §7.1).
    pub fn reply(&mut self, tag: Option<&str>, r: &Reply) {
        let body = StatusBody {
            kind: r.kind,
            code: r.code.clone(),
            text: text(&r.text),
        };
        let status = match tag.and_then(|t| Tag::try_from(t.to_string()).ok()) {
            Some(tag) => Status::Tagged(Tagged { tag, body }),
            None => Status::Untagged(body),
        };
        self.response(&Response::Status(status));
    }

    /// `* OK [CODE] text`.
    pub fn untagged_ok(&mut self, code: Option<Code<'static>>, t: &str) {
        self.response(&Response::Status(Status::Untagged(StatusBody {
            kind: StatusKind::Ok,
            code,
            text: text(t),
        })));
    }

    /// `* BYE text` (RFC 9051 §7.1.5).
    pub fn bye(&mut self, t: &str) {
        self.response(&Response::Status(Status::Bye(Bye {
            code: None,
            text: text(t),
        })));
    }

    /// The greeting `* OK [CAPABILITY …] text` (RFC 9051 §7.1.1, IMAP-1).
    pub fn greeting(&mut self, caps: &[&str], t: &str) {
        self.untagged_ok(Some(capability_code(caps)), t);
    }

    /// `+ text` (RFC 9051 §7.5).
    pub fn continue_text(&mut self, t: &str) {
        match CommandContinuationRequest::basic(None, text(t)) {
            Ok(c) => self.response(&Response::CommandContinuationRequest(c)),
            Err(_) => self.continue_empty(),
        }
    }

    /// `+ ` with an empty challenge (RFC 9051 §6.2.2, AUTHENTICATE PLAIN).
    pub fn continue_empty(&mut self) {
        let c = CommandContinuationRequest::base64(&b""[..]);
        self.response(&Response::CommandContinuationRequest(c));
    }

    /// `* CAPABILITY …` (RFC 9051 §7.2.2). By hand, see [`capability_list`].
    pub fn capability(&mut self, caps: &[&str]) {
        self.buf.extend_from_slice(b"* CAPABILITY ");
        self.buf.extend_from_slice(capability_list(caps).as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    /// `* ID ("name" "…")` (RFC 2971 §3.2).
    pub fn id(&mut self, name: &str) {
        self.data(Data::Id {
            parameters: Some(vec![(
                istring(b"name"),
                NString(Some(istring(name.as_bytes()))),
            )]),
        });
    }

    /// `* ENABLED` with nothing enabled (RFC 5161 §3.2).
    pub fn enabled(&mut self) {
        self.data(Data::Enabled {
            capabilities: Vec::new(),
        });
    }

    /// `* NAMESPACE (("" "<delimiter>")) NIL NIL` (RFC 2342 §5): one personal namespace.
    pub fn namespace(&mut self, delimiter: char) {
        let personal = vec![Namespace::new(
            istring(b""),
            QuotedChar::try_from(delimiter).ok(),
        )];
        self.data(Data::Namespace {
            personal,
            other: Vec::new(),
            shared: Vec::new(),
        });
    }

    /// `* LIST (attributes) "<delimiter>" name` (RFC 9051 §7.3.1), or LSUB (RFC 3501
    /// §7.2.3). Attributes are given without their backslash.
    pub fn list(&mut self, lsub: bool, attributes: &[&str], delimiter: char, name: &str) {
        let items = attributes
            .iter()
            .filter_map(|a| {
                Atom::try_from(a.to_string())
                    .ok()
                    .map(FlagNameAttribute::from)
            })
            .collect();
        let delimiter = QuotedChar::try_from(delimiter).ok();
        let mailbox = if name.is_empty() {
            // The hierarchy root of `LIST "" ""` (RFC 9051 §6.3.9).
            Mailbox::Other(MailboxOther::unvalidated(AString::String(istring(b""))))
        } else {
            mailbox(name)
        };
        self.data(if lsub {
            Data::Lsub {
                items,
                delimiter,
                mailbox,
            }
        } else {
            Data::List {
                items,
                delimiter,
                mailbox,
            }
        });
    }

    /// `* STATUS name (items)` (RFC 9051 §7.2.4).
    pub fn status(&mut self, name: &str, items: Vec<StatusDataItem>) {
        self.data(Data::Status {
            mailbox: mailbox(name),
            items: items.into(),
        });
    }

    /// `* SEARCH n…` (RFC 9051 §7.2.5, IMAP4rev1 form).
    pub fn search(&mut self, hits: &[u32]) {
        self.data(Data::Search(hits.iter().map(|&h| nz(h)).collect()));
    }

    /// `* FLAGS (…)` and `* OK [PERMANENTFLAGS (… \*)] text` (RFC 9051 §7.3.5, §7.1) for
    /// a mailbox whose messages carry `keywords`.
    pub fn mailbox_flags(&mut self, keywords: &[&str], permanent_text: &str) {
        let names = flag_names(keywords);
        let mut perm: Vec<FlagPerm<'static>> = names.iter().cloned().map(FlagPerm::from).collect();
        perm.push(FlagPerm::Asterisk);
        self.data(Data::Flags(names));
        self.untagged_ok(Some(Code::PermanentFlags(perm)), permanent_text);
    }

    /// `* n EXISTS`.
    pub fn exists(&mut self, n: usize) {
        self.data(Data::Exists(n as u32));
    }

    /// `* n RECENT`.
    pub fn recent(&mut self, n: u32) {
        self.data(Data::Recent(n));
    }

    /// `* seq EXPUNGE` (RFC 9051 §7.4.1).
    pub fn expunge(&mut self, seq: usize) {
        self.data(Data::Expunge(nz(seq as u32)));
    }

    /// `* OK [UNSEEN n]`, `[UIDVALIDITY n]`, `[UIDNEXT n]` of SELECT (RFC 3501 §6.3.1).
    pub fn unseen(&mut self, seq: usize, t: &str) {
        self.untagged_ok(Some(Code::Unseen(nz(seq as u32))), t);
    }
    pub fn uid_validity(&mut self, v: u32, t: &str) {
        self.untagged_ok(Some(Code::UidValidity(nz(v))), t);
    }
    pub fn uid_next(&mut self, v: u32, t: &str) {
        self.untagged_ok(Some(Code::UidNext(nz(v))), t);
    }

    /// `* seq FETCH ([UID uid ]FLAGS (…))`: a flag change (STORE, RFC 9051 §6.4.6; or
    /// another session's, §7.4.2).
    pub fn fetch_flags(&mut self, seq: usize, uid: Option<u32>, f: &Flags) {
        let mut items = Vec::new();
        if let Some(uid) = uid {
            items.push(MessageDataItem::Uid(nz(uid)));
        }
        items.push(MessageDataItem::Flags(
            flags(f).into_iter().map(FlagFetch::Flag).collect(),
        ));
        self.data(Data::Fetch {
            seq: nz(seq as u32),
            items: Vec1::unvalidated(items),
        });
    }

    /// `* QUOTAROOT mailbox root` (RFC 9208 §5.2).
    pub fn quota_root(&mut self, name: &str, root: &str) {
        self.data(Data::QuotaRoot {
            mailbox: mailbox(name),
            roots: vec![astring(root.as_bytes())],
        });
    }

    /// `* QUOTA root (STORAGE used limit)` in KiB (RFC 9208 §5.1).
    pub fn quota_storage(&mut self, root: &str, used: u64, limit: u64) {
        self.data(Data::Quota {
            root: astring(root.as_bytes()),
            quotas: Vec1::from(QuotaGet {
                resource: Resource::Storage,
                usage: used,
                limit,
            }),
        });
    }

    /// `* METADATA mailbox (entry value …)` (RFC 5464 §4.4.1): values as literals, NIL
    /// when there is none.
    pub fn metadata(&mut self, name: &str, entries: &[(&[u8], Option<&[u8]>)]) {
        let values: Vec<EntryValue<'static>> = entries
            .iter()
            .filter_map(|(key, value)| {
                let entry = Entry::try_from(astring(key)).ok()?;
                let value = match value {
                    Some(v) => {
                        let data: Vec<u8> = v.iter().copied().filter(|&b| b != 0).collect();
                        NString(Literal::try_from(data).ok().map(IString::Literal))
                    }
                    None => NString(None),
                };
                Some(EntryValue {
                    entry,
                    value: NString8::NString(value),
                })
            })
            .collect();
        let Ok(items) = Vec1::try_from(values) else {
            return;
        };
        let mailbox = if name.is_empty() {
            Mailbox::Other(MailboxOther::unvalidated(AString::String(istring(b""))))
        } else {
            mailbox(name)
        };
        self.data(Data::Metadata {
            mailbox,
            items: MetadataResponse::WithValues(items),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl FnOnce(&mut Out)) -> String {
        let mut out = Out::default();
        f(&mut out);
        String::from_utf8(out.take()).unwrap()
    }

    #[test]
    fn strings_choose_atom_quoted_or_literal() {
        let a = |v: &[u8]| s(|o| o.quota_root("INBOX", &String::from_utf8_lossy(v)));
        assert_eq!(a(b"Root"), "* QUOTAROOT INBOX Root\r\n");
        assert_eq!(a(b"User quota"), "* QUOTAROOT INBOX \"User quota\"\r\n");
        assert_eq!(a(b""), "* QUOTAROOT INBOX \"\"\r\n");
        assert_eq!(a(b"NIL"), "* QUOTAROOT INBOX \"NIL\"\r\n");
        assert_eq!(a(b"a]"), "* QUOTAROOT INBOX \"a]\"\r\n");
        assert_eq!(a(b"a\"b\\"), "* QUOTAROOT INBOX \"a\\\"b\\\\\"\r\n");
        assert_eq!(a("ü".as_bytes()), "* QUOTAROOT INBOX {2}\r\nü\r\n");
    }

    #[test]
    fn replies_and_codes() {
        assert_eq!(
            s(|o| o.reply(Some("a1"), &Reply::no("Gone").code(Rfc5530::Nonexistent))),
            "a1 NO [NONEXISTENT] Gone\r\n"
        );
        assert_eq!(
            s(|o| o.reply(None, &Reply::bad("Line too long"))),
            "* BAD Line too long\r\n"
        );
        assert_eq!(
            s(|o| o.reply(
                Some("t"),
                &Reply::ok("Done").code(copy_uid(7, &[1, 2, 3, 5], &[8, 9, 10, 11]))
            )),
            "t OK [COPYUID 7 1:3,5 8:11] Done\r\n"
        );
        assert_eq!(
            s(|o| o.reply(
                Some("t"),
                &Reply::ok("x").code(capability_code(&["IMAP4rev1", "IDLE"]))
            )),
            "t OK [CAPABILITY IMAP4rev1 IDLE] x\r\n"
        );
        assert_eq!(
            s(|o| o.reply(
                Some("t"),
                &Reply::no("x").code(bad_charset(&["US-ASCII", "UTF-8"]))
            )),
            "t NO [BADCHARSET (US-ASCII UTF-8)] x\r\n"
        );
        // Text that is not TEXT-CHAR is replaced rather than breaking the line.
        assert_eq!(s(|o| o.bye("a\r\nb ü")), "* BYE a??b ?\r\n");
        assert_eq!(s(|o| o.continue_empty()), "+ \r\n");
        assert_eq!(
            continue_request("Ready for literal data"),
            b"+ Ready for literal data\r\n"
        );
    }

    #[test]
    fn flags_keep_their_order() {
        let f = Flags {
            bits: Flags::SEEN | Flags::DELETED,
            keywords: vec!["$Junk".into()],
        };
        assert_eq!(
            s(|o| o.fetch_flags(3, Some(9), &f)),
            "* 3 FETCH (UID 9 FLAGS (\\Deleted \\Seen $Junk))\r\n"
        );
        assert_eq!(
            s(|o| o.fetch_flags(1, None, &Flags::default())),
            "* 1 FETCH (FLAGS ())\r\n"
        );
    }
}
