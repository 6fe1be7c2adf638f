//! The quota rules of spec/relay.md §14 (QUOTA-1..3) as numbers in, decision out: whether
//! a message fits an account (every path that stores: delivery at RCPT and in the
//! commit, IMAP APPEND), and when and how far the trim after a delivery (and the daily
//! expiry, EXP-4) brings an account down. The callers read the usage; nothing here does
//! I/O.

use super::SmtpReply;

const MIB: u64 = 1024 * 1024;

/// QUOTA-1/2: a message of `size` bytes does not fit an account that stores `used` bytes
/// under the limit `max_mailbox_size` (bytes): stored, it would take the account over.
/// A limit of `u64::MAX` never refuses.
pub fn exceeds(used: u64, size: u64, max_mailbox_size: u64) -> bool {
    used.saturating_add(size) > max_mailbox_size
}

/// QUOTA-2 at RCPT, before the size is known for sure: `size_hint` is the client's
/// `SIZE=` (0 when it gave none) or the body's length. A message has at least one byte,
/// so a mailbox that is exactly full is refused at once.
pub fn exceeds_at_rcpt(used: u64, size_hint: u64, max_mailbox_size: u64) -> bool {
    exceeds(used, size_hint.max(1), max_mailbox_size)
}

/// QUOTA-2: the refusal of a recipient whose mailbox is full (upstream Dovecot's words);
/// permanent, so the sender gets a bounce.
pub fn exceeded_reply(rcpt: &str) -> SmtpReply {
    SmtpReply::new(
        552,
        format!(
            "5.2.2 <{rcpt}>: Recipient address rejected: Quota exceeded (mailbox for user is full)"
        ),
    )
}

/// QUOTA-3: usage "passes 75 %" of `max_mailbox_size` (strictly above); the trim starts.
/// u128 so that no limit overflows.
pub fn over_trim_threshold(usage: u64, max_mailbox_size: u64) -> bool {
    u128::from(usage) * 100 > u128::from(max_mailbox_size) * 75
}

/// QUOTA-3: the trim deletes until usage is at most this many bytes:
/// `floor(max_mailbox_size_mb × 70 / 100)` MiB.
pub fn trim_target(max_mailbox_size: u64) -> u64 {
    (max_mailbox_size / MIB) * 70 / 100 * MIB
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_fits_up_to_the_last_byte() {
        let max = 10 * MIB;
        // (used, size, exceeds)
        let cases = [
            (0, 0, false),
            (0, max, false),
            (0, max + 1, true),
            (max - 1, 1, false),
            (max, 0, false),
            (max, 1, true),
            (max + 5, 0, true),
            (u64::MAX, u64::MAX, true),
        ];
        for (used, size, want) in cases {
            assert_eq!(exceeds(used, size, max), want, "used {used}, size {size}");
        }
        // No limit: nothing exceeds it, not even sums that overflow.
        assert!(!exceeds(u64::MAX, u64::MAX, u64::MAX));
        assert!(!exceeds(u64::MAX - 1, 2, u64::MAX));
    }

    #[test]
    fn at_rcpt_an_unknown_size_is_one_byte() {
        let max = 1000;
        // (used, size_hint, exceeds)
        let cases = [
            (999, 0, false),
            (1000, 0, true),
            (1000, 1, true),
            (999, 1, false),
            (999, 2, true),
            (0, 1000, false),
            (0, 1001, true),
        ];
        for (used, hint, want) in cases {
            assert_eq!(
                exceeds_at_rcpt(used, hint, max),
                want,
                "used {used}, hint {hint}"
            );
        }
    }

    #[test]
    fn trim_starts_above_75_percent_and_ends_at_70_percent_in_whole_mib() {
        // (max, usage, over the threshold)
        let cases = [
            (100, 75, false),
            (100, 76, true),
            (10 * MIB, 10 * MIB * 3 / 4, false),
            (10 * MIB, 10 * MIB * 3 / 4 + 1, true),
            (u64::MAX, u64::MAX, true),
            (u64::MAX, u64::MAX / 4 * 3, false),
            (0, 1, true),
            (0, 0, false),
        ];
        for (max, usage, want) in cases {
            assert_eq!(
                over_trim_threshold(usage, max),
                want,
                "max {max}, usage {usage}"
            );
        }
        // (max, target)
        let cases = [
            (10 * MIB, 7 * MIB),
            (15 * MIB, 10 * MIB),
            (500 * MIB, 350 * MIB),
            (MIB, 0),
            (MIB - 1, 0),
        ];
        for (max, want) in cases {
            assert_eq!(trim_target(max), want, "max {max}");
        }
    }

    #[test]
    fn the_refusal_is_dovecots() {
        assert_eq!(
            exceeded_reply("bob@x.example").to_string(),
            "552 5.2.2 <bob@x.example>: Recipient address rejected: Quota exceeded \
             (mailbox for user is full)"
        );
    }
}
