//! Request deadlines for clients that send data (issue 13): a request (an SMTP command
//! line, SMTP DATA, an HTTP request body) must arrive by a deadline, not merely keep
//! sending a byte now and then. With a minimum data rate the deadline moves on with
//! the data, as Postfix's `smtpd_per_request_deadline` with `smtpd_min_data_rate` does:
//! every byte received adds `1 / min_rate` seconds, but the deadline never runs more than
//! the request's time budget ahead of now. A client that stalls is cut one budget after
//! its last useful byte at most; one that trickles below the rate falls behind and is
//! cut a little later.

use std::time::Duration;

use tokio::time::Instant;

/// The deadline of one request.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    deadline: Instant,
    budget: Duration,
    /// Bytes per second that keep the deadline in place; 0 = a fixed deadline.
    min_rate: u32,
}

impl Budget {
    /// `budget` from `now`, whatever arrives.
    pub fn fixed(now: Instant, budget: Duration) -> Budget {
        Budget {
            deadline: now + budget,
            budget,
            min_rate: 0,
        }
    }

    /// `budget` from `now`, extended by the data received at up to `min_rate` bytes per
    /// second of credit.
    pub fn with_rate(now: Instant, budget: Duration, min_rate: u32) -> Budget {
        Budget {
            min_rate,
            ..Budget::fixed(now, budget)
        }
    }

    /// `n` bytes arrived at `now`.
    pub fn received(&mut self, n: usize, now: Instant) {
        if self.min_rate == 0 || n == 0 {
            return;
        }
        let credit = Duration::from_secs_f64(n as f64 / f64::from(self.min_rate));
        self.deadline = (self.deadline + credit).min(now + self.budget);
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn fixed_ignores_data() {
        let t0 = Instant::now();
        let mut b = Budget::fixed(t0, 300 * S);
        b.received(1_000_000, t0 + 10 * S);
        assert_eq!(b.deadline(), t0 + 300 * S);
    }

    #[test]
    fn data_moves_the_deadline_but_never_beyond_the_budget() {
        let t0 = Instant::now();
        let mut b = Budget::with_rate(t0, 300 * S, 500);
        // 1000 bytes = 2 s of credit, capped at now + 300 s.
        b.received(1000, t0 + 10 * S);
        assert_eq!(b.deadline(), t0 + 302 * S);
        b.received(10_000_000, t0 + 20 * S);
        assert_eq!(b.deadline(), t0 + 320 * S);
    }

    #[test]
    fn a_trickle_below_the_rate_falls_behind() {
        // One byte every 100 s at a minimum of 500 bytes/s: cut about 300 s after the
        // start, not kept forever.
        let t0 = Instant::now();
        let mut b = Budget::with_rate(t0, 300 * S, 500);
        let mut now = t0;
        while now < b.deadline() {
            now += 100 * S;
            b.received(1, now);
        }
        assert!(now <= t0 + 400 * S, "cut after {:?}", now - t0);
        // At the rate, the deadline keeps its distance.
        let mut b = Budget::with_rate(t0, 300 * S, 500);
        for i in 1..=10_000u32 {
            b.received(500, t0 + i * S);
        }
        assert!(b.deadline() >= t0 + 10_000 * S + 299 * S);
    }
}
