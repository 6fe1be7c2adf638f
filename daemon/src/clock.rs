//! The injected clock (DESIGN.md principle 5): wall time for stored dates and expiry,
//! monotonic time for rate limits.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Source of time for every decision that depends on it.
pub trait Clock: Send + Sync + 'static {
    /// Seconds since the Unix epoch (UTC).
    fn unix_now(&self) -> u64;
    /// A monotonic instant, for rate limits and timeouts.
    fn monotonic(&self) -> Instant;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
    fn monotonic(&self) -> Instant {
        Instant::now()
    }
}
