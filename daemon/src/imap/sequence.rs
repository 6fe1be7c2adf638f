//! Sequence sets and UID sets (RFC 9051 §9 `sequence-set`, §6.4.8): which messages of
//! the session's view a set names.

use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

/// The value of one end of a range; `*` is `star` (the largest number in use).
/// imap-codec's set normalisation turns `*` into `u32::MAX`, so that counts as `*` too.
fn value(v: &SeqOrUid, star: u32) -> u32 {
    match v {
        SeqOrUid::Asterisk => star,
        SeqOrUid::Value(n) if n.get() == u32::MAX => star,
        SeqOrUid::Value(n) => n.get(),
    }
}

/// Does `set` contain `n`, with `*` standing for `star`? RFC 9051 §9: a range's ends
/// may come in either order (`559:*` includes the largest UID even if smaller).
pub fn contains(set: &SequenceSet, n: u32, star: u32) -> bool {
    set.0.as_ref().iter().any(|seq| match seq {
        Sequence::Single(v) => value(v, star) == n,
        Sequence::Range(a, b) => {
            let (a, b) = (value(a, star), value(b, star));
            a.min(b) <= n && n <= a.max(b)
        }
    })
}

/// The largest number in a set outside ranges that end in `*` (`5:*` is valid in a
/// mailbox of 3), to detect sequence numbers beyond the mailbox.
fn max_explicit(set: &SequenceSet) -> u32 {
    let v = |x: &SeqOrUid| match x {
        SeqOrUid::Value(n) if n.get() != u32::MAX => Some(n.get()),
        _ => None,
    };
    set.0
        .as_ref()
        .iter()
        .map(|seq| match seq {
            Sequence::Single(a) => v(a).unwrap_or(0),
            Sequence::Range(a, b) => match (v(a), v(b)) {
                (Some(a), Some(b)) => a.max(b),
                _ => 0,
            },
        })
        .max()
        .unwrap_or(0)
}

/// Message sequence numbers → 0-based indices, ascending. `Err` when the set names a
/// number beyond the mailbox (RFC 9051 §9: seq-number is at most the message count).
pub fn seq_indices(set: &SequenceSet, count: usize) -> Result<Vec<usize>, ()> {
    if max_explicit(set) as usize > count {
        return Err(());
    }
    let star = count as u32;
    Ok((0..count)
        .filter(|i| contains(set, *i as u32 + 1, star))
        .collect())
}

/// UIDs → 0-based indices of the messages (ascending UIDs in `uids`) that exist.
/// Nonexistent UIDs are ignored (RFC 9051 §6.4.9).
pub fn uid_indices(set: &SequenceSet, uids: &[u32]) -> Vec<usize> {
    let Some(&star) = uids.last() else {
        return Vec::new();
    };
    uids.iter()
        .enumerate()
        .filter(|(_, uid)| contains(set, **uid, star))
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> SequenceSet {
        s.parse().unwrap()
    }

    #[test]
    fn seq_sets() {
        assert_eq!(seq_indices(&set("1:*"), 3), Ok(vec![0, 1, 2]));
        assert_eq!(seq_indices(&set("*"), 3), Ok(vec![2]));
        assert_eq!(seq_indices(&set("2,3"), 3), Ok(vec![1, 2]));
        assert_eq!(seq_indices(&set("3:1"), 5), Ok(vec![0, 1, 2]));
        assert_eq!(seq_indices(&set("1:*"), 0), Ok(vec![]));
        assert_eq!(seq_indices(&set("5:*"), 3), Ok(vec![2]));
        assert_eq!(seq_indices(&set("4"), 3), Err(()));
        assert_eq!(seq_indices(&set("2:4"), 3), Err(()));
    }

    #[test]
    fn uid_sets() {
        let uids = [3, 5, 9, 10];
        assert_eq!(uid_indices(&set("1:*"), &uids), vec![0, 1, 2, 3]);
        assert_eq!(uid_indices(&set("4:9"), &uids), vec![1, 2]);
        // RFC 9051 §6.4.8: 559:* includes the largest UID.
        assert_eq!(uid_indices(&set("559:*"), &uids), vec![3]);
        assert_eq!(uid_indices(&set("*"), &uids), vec![3]);
        assert_eq!(uid_indices(&set("6,7,8"), &uids), Vec::<usize>::new());
        assert_eq!(uid_indices(&set("1:*"), &[]), Vec::<usize>::new());
        // Normalised `*` (u32::MAX) behaves as `*`.
        assert_eq!(uid_indices(&set("4294967295"), &uids), vec![3]);
    }
}
