//! SEARCH evaluation (RFC 9051 §6.4.4) over the session's view of a mailbox. Flag,
//! size, date and set keys use the message metadata; header and text keys read the
//! stored bytes through the structure stored with them (case-insensitive substring
//! match, no decoding). A search runs as a heavy job (`crate::work`) with a budget of
//! work units — one per key evaluated plus one per byte compared — and a bounded number
//! of keys, so that one client cannot hold a core for long or the relay at all.

use imap_codec::imap_types::search::SearchKey;

use super::sequence;
use crate::clock::{MONTHS, days_from_civil};
use crate::message::{View, header};
use crate::store::{Flags, MessageMeta, Store, StoreError};
use crate::work::{Budget, OverBudget};

/// Most keys (counting every key inside NOT, OR and parentheses) in one SEARCH.
pub const MAX_KEYS: usize = 256;
/// Work units one SEARCH may spend (a key evaluated, a byte compared): a few hundred
/// milliseconds of one core.
pub const WORK_UNITS: u64 = 64 * 1024 * 1024;

/// What a key is evaluated against.
pub struct Candidate<'a> {
    /// 1-based sequence number.
    pub seq: u32,
    pub meta: &'a MessageMeta,
    /// The stored message, when a key needs it.
    pub body: Option<Prepared<'a>>,
}

/// A stored message with its top-level header fields unfolded once for all keys.
pub struct Prepared<'a> {
    pub msg: View<'a>,
    fields: Vec<(&'a [u8], Vec<u8>)>,
}

impl<'a> Prepared<'a> {
    pub fn new(msg: View<'a>) -> Prepared<'a> {
        let h = msg.header();
        let fields = header::fields(h)
            .map(|f| (&h[f.name.clone()], f.unfolded(h)))
            .collect();
        Prepared { msg, fields }
    }

    fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_slice())
    }
}

/// Number of keys in `keys`, counting nested ones; stops counting past `MAX_KEYS`.
pub fn count_keys(keys: &[SearchKey<'_>]) -> usize {
    fn count(k: &SearchKey<'_>, n: &mut usize) {
        *n += 1;
        if *n > MAX_KEYS {
            return;
        }
        match k {
            SearchKey::And(v) => v.as_ref().iter().for_each(|k| count(k, n)),
            SearchKey::Not(k) => count(k, n),
            SearchKey::Or(a, b) => {
                count(a, n);
                count(b, n);
            }
            _ => {}
        }
    }
    let mut n = 0;
    keys.iter().for_each(|k| count(k, &mut n));
    n
}

/// Evaluate `criteria` over `msgs` (a mailbox of `account` in UID order), reading
/// stored messages only when a key needs them. Returns the hits (UIDs or sequence
/// numbers), or [`OverBudget`] when the work units ran out.
pub fn run(
    store: &Store,
    account: &str,
    mailbox: &str,
    msgs: &[MessageMeta],
    criteria: &[SearchKey<'_>],
    uid: bool,
    budget: &mut Budget,
) -> Result<Result<Vec<u32>, OverBudget>, StoreError> {
    let bounds = Bounds {
        count: msgs.len() as u32,
        max_uid: msgs.last().map(|m| m.uid).unwrap_or(0),
    };
    let needs_body = criteria.iter().any(needs_body);
    let mut hits = Vec::new();
    for (i, meta) in msgs.iter().enumerate() {
        let seq = i as u32 + 1;
        let mut test = |body: Option<Prepared<'_>>| {
            let c = Candidate { seq, meta, body };
            criteria.iter().all(|k| matches(k, &c, &bounds, budget))
        };
        let hit = if needs_body {
            store
                .with_message(account, mailbox, meta.uid, |m| test(Some(Prepared::new(m))))?
                .unwrap_or(false)
        } else {
            test(None)
        };
        if budget.is_exhausted() {
            return Ok(Err(OverBudget));
        }
        if hit {
            hits.push(if uid { meta.uid } else { seq });
        }
    }
    Ok(Ok(hits))
}

/// The mailbox-wide values `*` stands for.
pub struct Bounds {
    pub count: u32,
    pub max_uid: u32,
}

/// Does evaluating `key` need the message bytes?
pub fn needs_body(key: &SearchKey<'_>) -> bool {
    use SearchKey::*;
    match key {
        And(keys) => keys.as_ref().iter().any(needs_body),
        Not(k) => needs_body(k),
        Or(a, b) => needs_body(a) || needs_body(b),
        Bcc(_) | Body(_) | Cc(_) | From(_) | Header(..) | Subject(_) | Text(_) | To(_)
        | SentBefore(_) | SentOn(_) | SentSince(_) => true,
        _ => false,
    }
}

/// Month number (1..=12) of an English three-letter abbreviation.
fn month_number(s: &str) -> Option<u32> {
    MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(s))
        .map(|i| i as u32 + 1)
}

/// Days since the epoch of an IMAP `date` (imap-types renders it `YYYY-MM-DD`).
fn date_days(d: &imap_codec::imap_types::datetime::NaiveDate) -> i64 {
    let s = d.as_ref().to_string();
    let mut it = s.split('-');
    let y = it
        .next()
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(1970);
    let m = it.next().and_then(|v| v.parse::<u32>().ok()).unwrap_or(1);
    let dd = it.next().and_then(|v| v.parse::<u32>().ok()).unwrap_or(1);
    days_from_civil(y, m, dd)
}

/// The date of an RFC 5322 `Date:` value (`[Mon, ]5 Jan 2024 ...`), in days since the
/// epoch; the time zone is ignored (RFC 9051 SENT* keys compare dates only).
pub fn header_date_days(v: &[u8]) -> Option<i64> {
    let s = String::from_utf8_lossy(v);
    let s = match s.split_once(',') {
        Some((_, rest)) => rest.to_string(),
        None => s.to_string(),
    };
    let mut it = s.split_whitespace();
    let d: u32 = it.next()?.parse().ok()?;
    let m = month_number(it.next()?)?;
    let mut y: i64 = it.next()?.parse().ok()?;
    if y < 50 {
        y += 2000;
    } else if y < 1000 {
        y += 1900;
    }
    Some(days_from_civil(y, m, d))
}

/// Case-insensitive substring test; spends one unit per byte of `hay` looked at.
fn contains_ci(hay: &[u8], needle: &[u8], budget: &mut Budget) -> bool {
    if !budget.spend(hay.len() as u64) {
        return false;
    }
    needle.is_empty()
        || hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

fn header_has(c: &Candidate<'_>, name: &str, needle: &[u8], budget: &mut Budget) -> bool {
    let Some(p) = &c.body else { return false };
    p.fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .any(|(_, v)| contains_ci(v, needle, budget))
}

fn sent_days(c: &Candidate<'_>) -> Option<i64> {
    header_date_days(c.body.as_ref()?.field("date")?)
}

/// Evaluate one key (RFC 9051 §6.4.4), spending one unit of `budget` and one per byte
/// compared. \Recent is never set (RFC 9051 removed it).
pub fn matches(key: &SearchKey<'_>, c: &Candidate<'_>, b: &Bounds, budget: &mut Budget) -> bool {
    use SearchKey::*;
    if !budget.spend(1) {
        return false;
    }
    let f = &c.meta.flags;
    let day = (c.meta.internal_date / 86_400) as i64;
    match key {
        And(keys) => keys.as_ref().iter().all(|k| matches(k, c, b, budget)),
        SequenceSet(set) => sequence::contains(set, c.seq, b.count),
        Uid(set) => sequence::contains(set, c.meta.uid, b.max_uid),
        All | Old => true,
        Recent => false,
        New => !f.has(Flags::SEEN),
        Answered => f.has(Flags::ANSWERED),
        Unanswered => !f.has(Flags::ANSWERED),
        Deleted => f.has(Flags::DELETED),
        Undeleted => !f.has(Flags::DELETED),
        Draft => f.has(Flags::DRAFT),
        Undraft => !f.has(Flags::DRAFT),
        Flagged => f.has(Flags::FLAGGED),
        Unflagged => !f.has(Flags::FLAGGED),
        Seen => f.has(Flags::SEEN),
        Unseen => !f.has(Flags::SEEN),
        Keyword(k) => f.keywords.iter().any(|x| x.eq_ignore_ascii_case(k.inner())),
        Unkeyword(k) => !f.keywords.iter().any(|x| x.eq_ignore_ascii_case(k.inner())),
        Larger(n) => c.meta.size > u64::from(*n),
        Smaller(n) => c.meta.size < u64::from(*n),
        Before(d) => day < date_days(d),
        On(d) => day == date_days(d),
        Since(d) => day >= date_days(d),
        SentBefore(d) => sent_days(c).is_some_and(|s| s < date_days(d)),
        SentOn(d) => sent_days(c).is_some_and(|s| s == date_days(d)),
        SentSince(d) => sent_days(c).is_some_and(|s| s >= date_days(d)),
        Not(k) => !matches(k, c, b, budget),
        Or(x, y) => matches(x, c, b, budget) || matches(y, c, b, budget),
        Bcc(s) => header_has(c, "bcc", s.as_ref(), budget),
        Cc(s) => header_has(c, "cc", s.as_ref(), budget),
        From(s) => header_has(c, "from", s.as_ref(), budget),
        To(s) => header_has(c, "to", s.as_ref(), budget),
        Subject(s) => header_has(c, "subject", s.as_ref(), budget),
        Header(name, s) => {
            let name = String::from_utf8_lossy(name.as_ref()).to_string();
            header_has(c, &name, s.as_ref(), budget)
        }
        Body(s) => c
            .body
            .as_ref()
            .is_some_and(|p| contains_ci(&p.msg.raw[p.msg.root.body.clone()], s.as_ref(), budget)),
        Text(s) => c
            .body
            .as_ref()
            .is_some_and(|p| contains_ci(p.msg.raw, s.as_ref(), budget)),
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::CommandCodec;
    use imap_codec::decode::Decoder;
    use imap_codec::imap_types::command::CommandBody;

    fn with_key<R>(criteria: &str, f: impl FnOnce(&SearchKey<'_>) -> R) -> R {
        let line = format!("a SEARCH {criteria}\r\n");
        let (_, cmd) = CommandCodec::default()
            .decode(line.as_bytes())
            .expect("parse");
        match cmd.body {
            CommandBody::Search { criteria, .. } => {
                let v: Vec<SearchKey<'_>> = criteria.as_ref().to_vec();
                let k = if v.len() == 1 {
                    v.into_iter().next().unwrap()
                } else {
                    SearchKey::And(v.try_into().unwrap())
                };
                f(&k)
            }
            _ => panic!(),
        }
    }

    fn meta(uid: u32, bits: u8, date: u64) -> MessageMeta {
        MessageMeta {
            uid,
            flags: Flags {
                bits,
                keywords: vec![],
            },
            size: 100,
            internal_date: date,
        }
    }

    fn hits(criteria: &str, msgs: &[MessageMeta], body: Option<&[u8]>) -> Vec<u32> {
        let parsed = body.map(|b| crate::message::Parsed::parse(b.to_vec()).expect("parses"));
        with_key(criteria, |k| {
            hits_key(k, msgs, parsed.as_ref().map(|p| p.view()))
        })
    }

    fn hits_key(k: &SearchKey<'_>, msgs: &[MessageMeta], body: Option<View<'_>>) -> Vec<u32> {
        let mut budget = Budget::new(WORK_UNITS);
        let b = Bounds {
            count: msgs.len() as u32,
            max_uid: msgs.last().map(|m| m.uid).unwrap_or(0),
        };
        msgs.iter()
            .enumerate()
            .filter(|(i, m)| {
                matches(
                    k,
                    &Candidate {
                        seq: *i as u32 + 1,
                        meta: m,
                        body: body.map(Prepared::new),
                    },
                    &b,
                    &mut budget,
                )
            })
            .map(|(_, m)| m.uid)
            .collect()
    }

    #[test]
    fn flags_sets_and_logic() {
        // 2024-01-01, 2024-01-02, 2024-01-03
        let d = 1_704_067_200;
        let msgs = [
            meta(10, Flags::SEEN, d),
            meta(11, 0, d + 86_400),
            meta(12, Flags::DELETED | Flags::SEEN, d + 2 * 86_400),
        ];
        assert_eq!(hits("ALL", &msgs, None), vec![10, 11, 12]);
        assert_eq!(hits("UNSEEN", &msgs, None), vec![11]);
        assert_eq!(hits("SEEN UNDELETED", &msgs, None), vec![10]);
        assert_eq!(hits("DELETED", &msgs, None), vec![12]);
        assert_eq!(hits("NOT SEEN", &msgs, None), vec![11]);
        assert_eq!(hits("OR DELETED UNSEEN", &msgs, None), vec![11, 12]);
        assert_eq!(hits("UID 11:*", &msgs, None), vec![11, 12]);
        assert_eq!(hits("2:3", &msgs, None), vec![11, 12]);
        assert_eq!(hits("*", &msgs, None), vec![12]);
        assert_eq!(hits("SINCE 2-Jan-2024", &msgs, None), vec![11, 12]);
        assert_eq!(hits("BEFORE 2-Jan-2024", &msgs, None), vec![10]);
        assert_eq!(hits("ON 3-Jan-2024", &msgs, None), vec![12]);
        assert_eq!(hits("LARGER 99 SMALLER 101", &msgs, None), vec![10, 11, 12]);
    }

    #[test]
    fn header_and_text_keys() {
        let body: &[u8] = b"From: a@b.c\r\nSubject: Hello World\r\nDate: Tue, 2 Jan 2024 09:00:00 +0100\r\n\r\nsecret words\r\n";
        let msgs = [meta(1, 0, 0)];
        assert_eq!(hits("SUBJECT hello", &msgs, Some(body)), vec![1]);
        assert_eq!(hits("FROM \"b.c\"", &msgs, Some(body)), vec![1]);
        assert_eq!(hits("TO x", &msgs, Some(body)), Vec::<u32>::new());
        assert_eq!(hits("BODY secret", &msgs, Some(body)), vec![1]);
        assert_eq!(hits("BODY Hello", &msgs, Some(body)), Vec::<u32>::new());
        assert_eq!(hits("TEXT Hello", &msgs, Some(body)), vec![1]);
        assert_eq!(hits("HEADER Subject World", &msgs, Some(body)), vec![1]);
        assert_eq!(hits("SENTON 2-Jan-2024", &msgs, Some(body)), vec![1]);
        assert_eq!(
            hits("SENTBEFORE 2-Jan-2024", &msgs, Some(body)),
            Vec::<u32>::new()
        );
        assert!(with_key("OR SEEN SUBJECT x", needs_body));
        assert!(!with_key("OR SEEN UID 1", needs_body));
    }

    #[test]
    fn dates() {
        assert_eq!(crate::clock::civil_from_days(0), (1970, 1, 1));
        assert_eq!(crate::clock::civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(crate::clock::civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(month_number("feb"), Some(2));
        assert_eq!(month_number("Foo"), None);
        assert_eq!(
            header_date_days(b"Tue, 2 Jan 2024 09:00:00 +0100"),
            Some(19_724)
        );
    }
}
