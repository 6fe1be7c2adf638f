//! OUT-6: when the outbound queue tries a message again after a temporary failure, and
//! when it stops trying (Postfix's schedule and defaults: `minimal_backoff_time` 300 s,
//! `maximal_backoff_time` 4000 s, `maximal_queue_lifetime` 2 d). The scheduler
//! (`crate::outbound`) keeps the queue and the clock; this decides.

use std::time::Duration;

/// The numbers of OUT-6, from the config keys of the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// `minimal_backoff_time`: the wait after the first failed attempt.
    pub minimal_backoff: Duration,
    /// `maximal_backoff_time`: no wait is longer.
    pub maximal_backoff: Duration,
    /// `maximal_queue_lifetime`: after this long in the queue a temporary failure is
    /// final (and bounced, OUT-7).
    pub queue_lifetime: Duration,
}

impl Schedule {
    /// The wait after the `attempts`-th failed attempt (1 = the first): doubling from
    /// `minimal_backoff`, at most `maximal_backoff`.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempts.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.minimal_backoff
            .checked_mul(factor)
            .unwrap_or(self.maximal_backoff)
            .min(self.maximal_backoff)
    }

    /// Whether a message queued at `created` has been in the queue for its whole
    /// lifetime at `now` (Unix seconds): a temporary failure then is final.
    pub fn expired(&self, created: u64, now: u64) -> bool {
        now.saturating_sub(created) >= self.queue_lifetime.as_secs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POSTFIX: Schedule = Schedule {
        minimal_backoff: Duration::from_secs(300),
        maximal_backoff: Duration::from_secs(4000),
        queue_lifetime: Duration::from_secs(2 * 86_400),
    };

    #[test]
    fn backoff_doubles_from_the_minimum_up_to_the_maximum() {
        // (attempts failed so far, wait in seconds)
        let cases = [
            (0, 300),
            (1, 300),
            (2, 600),
            (3, 1200),
            (4, 2400),
            (5, 4000),
            (6, 4000),
            (31, 4000),
            (32, 4000),
            (33, 4000),
            (u32::MAX, 4000),
        ];
        for (attempts, secs) in cases {
            assert_eq!(
                POSTFIX.backoff(attempts),
                Duration::from_secs(secs),
                "after {attempts} attempt(s)"
            );
        }
    }

    #[test]
    fn backoff_with_other_numbers() {
        // The federation tests' fast schedule, a fixed interval, and numbers that
        // overflow when multiplied.
        let cases = [
            (1, 2, 1, 1),
            (1, 2, 2, 2),
            (1, 2, 3, 2),
            (60, 60, 1, 60),
            (60, 60, 9, 60),
            (u64::MAX / 2, u64::MAX, 2, u64::MAX - 1),
            (u64::MAX / 2, u64::MAX, 3, u64::MAX),
        ];
        for (min, max, attempts, secs) in cases {
            let s = Schedule {
                minimal_backoff: Duration::from_secs(min),
                maximal_backoff: Duration::from_secs(max),
                queue_lifetime: Duration::ZERO,
            };
            assert_eq!(
                s.backoff(attempts),
                Duration::from_secs(secs),
                "min {min}, max {max}, after {attempts} attempt(s)"
            );
        }
    }

    #[test]
    fn a_message_expires_after_its_lifetime() {
        let created = 1_800_000_000;
        let life = 2 * 86_400;
        // (seconds after `created`, expired)
        let cases = [
            (0, false),
            (life - 1, false),
            (life, true),
            (life + 1, true),
        ];
        for (after, want) in cases {
            assert_eq!(
                POSTFIX.expired(created, created + after),
                want,
                "{after} s after queueing"
            );
        }
        // A clock set back before the message was queued does not expire it.
        assert!(!POSTFIX.expired(created, created - 10));
    }
}
