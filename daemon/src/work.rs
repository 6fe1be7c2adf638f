//! CPU-heavy work off the async workers (DESIGN.md principle 7): a job runs on tokio's
//! blocking pool, and at most `cores - 1` (at least one) jobs run at once, so a client
//! that asks for expensive work (a SEARCH over many messages, parsing a 30 MB message)
//! waits its turn instead of delaying every other session. Each job also gets a
//! [`Budget`] of work units it spends as it goes; a job that runs out stops and the
//! session answers that the request is over the limit.

use std::sync::OnceLock;

use tokio::sync::Semaphore;

/// Work units of one job: the caller decides what a unit is (a byte compared, a message
/// looked at) and how many it grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    left: u64,
}

/// The budget ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("over the work limit")]
pub struct OverBudget;

impl Budget {
    pub fn new(units: u64) -> Budget {
        Budget { left: units }
    }

    /// Spend `units`; `false` once the budget is used up (and from then on).
    pub fn spend(&mut self, units: u64) -> bool {
        match self.left.checked_sub(units) {
            Some(left) => {
                self.left = left;
                true
            }
            None => {
                self.left = 0;
                false
            }
        }
    }

    pub fn is_exhausted(&self) -> bool {
        self.left == 0
    }

    pub fn left(&self) -> u64 {
        self.left
    }
}

/// Jobs allowed to run at once: one core stays free for the sessions.
fn slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Semaphore::new(cores.saturating_sub(1).max(1))
    })
}

/// Run `job` on the blocking pool once a slot is free. A job that panics is reported as
/// `None` (the session answers with a temporary error; the relay goes on).
pub async fn run<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let _slot = slots().acquire().await.ok()?;
    match tokio::task::spawn_blocking(job).await {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!("heavy job failed: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_runs_out_once() {
        let mut b = Budget::new(10);
        assert!(b.spend(4));
        assert!(b.spend(6));
        assert!(b.is_exhausted());
        assert!(!b.spend(1));
        let mut b = Budget::new(3);
        assert!(!b.spend(4));
        assert_eq!(b.left(), 0);
    }

    #[tokio::test]
    async fn jobs_run_off_the_runtime_and_return() {
        let v = run(|| (0..1000u64).sum::<u64>()).await;
        assert_eq!(v, Some(499_500));
        let v: Option<u8> = run(|| panic!("boom")).await;
        assert_eq!(v, None);
    }
}
