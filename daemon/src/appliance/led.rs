//! The status LED's blink patterns and the task that plays them (issue #6 item 7,
//! spec/appliance.md §6). The appliance publishes the current [`LedPattern`] on a watch
//! channel; [`run`] plays it on any [`Led`] backend and switches at once when it changes.
//!
//! Each pattern is a loop of (on/off, duration) steps ([`pattern_steps`]):
//!
//! | Pattern | Looks like | Steps (ms) | Period |
//! |---|---|---|---|
//! | `Booting` | steady on | on | — |
//! | `WaitingForSetup` | slow blink | on 1000, off 1000 | 2 s |
//! | `ClaimWindow` | fast blink: "press the button now" | on 100, off 100 | 0.2 s |
//! | `Running` | on, with a short off blip every 5 s | on 4900, off 100 | 5 s |
//! | `Degraded` (DNS or certificate problem) | double blink | on 300, off 300, on 300, off 1100 | 2 s |
//! | `Error` | triple blink | (on 150, off 150) ×3, last off 1250 | 2 s |
//! | `Updating` | heartbeat: two flicks | on 70, off 180, on 70, off 680 | 1 s |
//! | `ResetCountdown { seconds_left: n }` | n very short blinks each second (1–10; more shows 10) | (on 50, off 50) ×n, last off fills the second | 1 s |
//! | `ResetCountdown { seconds_left: 0 }` | steady on: the reset is happening | on | — |
//!
//! The driver writes only changes to the LED (a steady pattern is one write), and a
//! pattern sent again unchanged does not restart it (so frequent refreshes do not swallow
//! `Running`'s blip).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use super::hw::Led;

/// What the LED tells the person in front of the box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedPattern {
    Booting,
    WaitingForSetup,
    ClaimWindow,
    Running,
    /// DNS or certificate problem.
    Degraded,
    Error,
    Updating,
    /// The button is held: `seconds_left` until the factory reset.
    ResetCountdown {
        seconds_left: u8,
    },
}

/// One step of a pattern: LED on or off for this long.
pub type Step = (bool, Duration);

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const STEADY_ON: &[Step] = &[(true, ms(1000))];
const WAITING_FOR_SETUP: &[Step] = &[(true, ms(1000)), (false, ms(1000))];
const CLAIM_WINDOW: &[Step] = &[(true, ms(100)), (false, ms(100))];
const RUNNING: &[Step] = &[(true, ms(4900)), (false, ms(100))];
const DEGRADED: &[Step] = &[
    (true, ms(300)),
    (false, ms(300)),
    (true, ms(300)),
    (false, ms(1100)),
];
const ERROR: &[Step] = &[
    (true, ms(150)),
    (false, ms(150)),
    (true, ms(150)),
    (false, ms(150)),
    (true, ms(150)),
    (false, ms(1250)),
];
const UPDATING: &[Step] = &[
    (true, ms(70)),
    (false, ms(180)),
    (true, ms(70)),
    (false, ms(680)),
];

/// Most blinks a countdown second shows.
const MAX_BLINKS: usize = 10;
/// On and off time of one countdown blink.
const BLINK_MS: u64 = 50;

/// Row n: n blinks, the last off step stretched to fill one second.
const fn countdown_rows() -> [[Step; 2 * MAX_BLINKS]; MAX_BLINKS + 1] {
    let mut rows = [[(false, Duration::ZERO); 2 * MAX_BLINKS]; MAX_BLINKS + 1];
    let mut n = 1;
    while n <= MAX_BLINKS {
        let mut i = 0;
        while i < n {
            rows[n][2 * i] = (true, ms(BLINK_MS));
            rows[n][2 * i + 1] = (false, ms(BLINK_MS));
            i += 1;
        }
        rows[n][2 * n - 1] = (false, ms(1000 - 2 * BLINK_MS * n as u64 + BLINK_MS));
        n += 1;
    }
    rows
}

static COUNTDOWN: [[Step; 2 * MAX_BLINKS]; MAX_BLINKS + 1] = countdown_rows();

/// The steps of `p`, played in a loop (see the table in the module comment).
pub fn pattern_steps(p: LedPattern) -> &'static [Step] {
    match p {
        LedPattern::Booting => STEADY_ON,
        LedPattern::WaitingForSetup => WAITING_FOR_SETUP,
        LedPattern::ClaimWindow => CLAIM_WINDOW,
        LedPattern::Running => RUNNING,
        LedPattern::Degraded => DEGRADED,
        LedPattern::Error => ERROR,
        LedPattern::Updating => UPDATING,
        LedPattern::ResetCountdown { seconds_left: 0 } => STEADY_ON,
        LedPattern::ResetCountdown { seconds_left } => {
            let n = usize::from(seconds_left).min(MAX_BLINKS);
            &COUNTDOWN[n][..2 * n]
        }
    }
}

/// Play the pattern on `patterns` on `led` until the sender is dropped (the LED then keeps
/// its last state). A changed pattern starts at once from its first step. A failing LED
/// is logged once (then at debug level) and the task keeps going.
pub async fn run(led: Arc<dyn Led>, mut patterns: watch::Receiver<LedPattern>) {
    let mut lit: Option<bool> = None;
    let mut warned = false;
    let mut pattern = *patterns.borrow_and_update();
    loop {
        let steps = pattern_steps(pattern);
        let mut deadline = Instant::now();
        // Play `pattern` until it changes; `None` = the sender is gone.
        let next = 'play: loop {
            for &(on, duration) in steps {
                if lit != Some(on) {
                    match led.set(on) {
                        Ok(()) => lit = Some(on),
                        Err(e) if !warned => {
                            tracing::warn!("status LED: cannot switch it: {e}");
                            warned = true;
                            lit = None;
                        }
                        Err(e) => {
                            tracing::debug!("status LED: {e}");
                            lit = None;
                        }
                    }
                }
                deadline += duration;
                loop {
                    tokio::select! {
                        _ = sleep_until(deadline) => break,
                        changed = patterns.changed() => {
                            if changed.is_err() {
                                break 'play None;
                            }
                            let new = *patterns.borrow_and_update();
                            if new != pattern {
                                break 'play Some(new);
                            }
                            // The same pattern again: keep playing where we are.
                        }
                    }
                }
            }
        };
        match next {
            Some(p) => {
                tracing::debug!("status LED: {p:?}");
                pattern = p;
            }
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::appliance::hw::fake::FakeLed;

    const ALL: [LedPattern; 9] = [
        LedPattern::Booting,
        LedPattern::WaitingForSetup,
        LedPattern::ClaimWindow,
        LedPattern::Running,
        LedPattern::Degraded,
        LedPattern::Error,
        LedPattern::Updating,
        LedPattern::ResetCountdown { seconds_left: 8 },
        LedPattern::ResetCountdown { seconds_left: 1 },
    ];

    fn period(p: LedPattern) -> Duration {
        pattern_steps(p).iter().map(|(_, d)| *d).sum()
    }

    fn blinks(p: LedPattern) -> usize {
        pattern_steps(p).iter().filter(|(on, _)| *on).count()
    }

    #[test]
    fn patterns_are_well_formed_and_distinct() {
        for p in ALL {
            let steps = pattern_steps(p);
            assert!(!steps.is_empty(), "{p:?}");
            assert!(steps.iter().all(|(_, d)| !d.is_zero()), "{p:?}");
            // Alternating on/off, starting on (a change is visible at once).
            assert!(steps[0].0, "{p:?}");
            for w in steps.windows(2) {
                assert_ne!(w[0].0, w[1].0, "{p:?}: {steps:?}");
            }
        }
        for (i, a) in ALL.iter().enumerate() {
            for b in &ALL[i + 1..] {
                assert_ne!(pattern_steps(*a), pattern_steps(*b), "{a:?} vs {b:?}");
            }
        }
        assert_eq!(period(LedPattern::WaitingForSetup), ms(2000));
        assert_eq!(period(LedPattern::ClaimWindow), ms(200));
        assert_eq!(period(LedPattern::Running), ms(5000));
        assert_eq!(pattern_steps(LedPattern::Running)[1], (false, ms(100)));
        assert_eq!(period(LedPattern::Degraded), ms(2000));
        assert_eq!(blinks(LedPattern::Degraded), 2);
        assert_eq!(period(LedPattern::Error), ms(2000));
        assert_eq!(blinks(LedPattern::Error), 3);
        assert_eq!(period(LedPattern::Updating), ms(1000));
        assert_eq!(blinks(LedPattern::Updating), 2);
        assert_eq!(pattern_steps(LedPattern::Booting), &[(true, ms(1000))]);
    }

    #[test]
    fn countdown_blinks_the_seconds_left() {
        for n in 1..=10u8 {
            let p = LedPattern::ResetCountdown { seconds_left: n };
            assert_eq!(blinks(p), usize::from(n), "{p:?}");
            assert_eq!(period(p), ms(1000), "{p:?}");
        }
        assert_eq!(
            pattern_steps(LedPattern::ResetCountdown { seconds_left: 2 }),
            &[
                (true, ms(50)),
                (false, ms(50)),
                (true, ms(50)),
                (false, ms(850))
            ]
        );
        // More than 10 shows 10; 0 is steady on.
        assert_eq!(blinks(LedPattern::ResetCountdown { seconds_left: 200 }), 10);
        assert_eq!(
            pattern_steps(LedPattern::ResetCountdown { seconds_left: 0 }),
            &[(true, ms(1000))]
        );
    }

    /// Spawn the driver on a fake LED; returns the LED, the sender and the start instant.
    fn start(
        p: LedPattern,
    ) -> (
        Arc<FakeLed>,
        watch::Sender<LedPattern>,
        Instant,
        tokio::task::JoinHandle<()>,
    ) {
        let led = Arc::new(FakeLed::new());
        let (tx, rx) = watch::channel(p);
        let t0 = Instant::now();
        let task = tokio::spawn(run(led.clone(), rx));
        (led, tx, t0, task)
    }

    #[tokio::test(start_paused = true)]
    async fn plays_the_pattern_and_switches_at_once() {
        let (led, tx, t0, task) = start(LedPattern::WaitingForSetup);
        sleep_until(t0 + ms(4500)).await;
        assert_eq!(
            led.timeline(t0),
            vec![
                (ms(0), true),
                (ms(1000), false),
                (ms(2000), true),
                (ms(3000), false),
                (ms(4000), true),
            ]
        );
        // Switch mid-step: the claim window starts now (already on, so its first change
        // is the off at +100 ms), not at the end of the slow blink's second.
        tx.send_replace(LedPattern::ClaimWindow);
        sleep_until(t0 + ms(5050)).await;
        assert_eq!(
            led.timeline(t0 + ms(4001)),
            vec![
                (ms(599), false),
                (ms(699), true),
                (ms(799), false),
                (ms(899), true),
                (ms(999), false),
            ]
        );
        // Then to steady on (at 5.05 s, LED off): one write, nothing more.
        tx.send_replace(LedPattern::Booting);
        sleep_until(t0 + ms(20_000)).await;
        assert_eq!(led.timeline(t0 + ms(5001)), vec![(ms(49), true)]);
        // The sender is gone: the task ends.
        drop(tx);
        tokio::time::timeout(ms(10), task).await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn same_pattern_again_does_not_restart_it() {
        let (led, tx, t0, _task) = start(LedPattern::Running);
        for at in [1000, 2000, 3000, 4000] {
            sleep_until(t0 + ms(at)).await;
            tx.send_replace(LedPattern::Running);
        }
        sleep_until(t0 + ms(10_050)).await;
        assert_eq!(
            led.timeline(t0),
            vec![
                (ms(0), true),
                (ms(4900), false),
                (ms(5000), true),
                (ms(9900), false),
                (ms(10_000), true),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn countdown_second_by_second() {
        let (led, tx, t0, _task) = start(LedPattern::ResetCountdown { seconds_left: 3 });
        sleep_until(t0 + ms(999)).await;
        assert_eq!(
            led.timeline(t0),
            vec![
                (ms(0), true),
                (ms(50), false),
                (ms(100), true),
                (ms(150), false),
                (ms(200), true),
                (ms(250), false),
            ]
        );
        tx.send_replace(LedPattern::ResetCountdown { seconds_left: 2 });
        sleep_until(t0 + ms(1998)).await;
        assert_eq!(
            led.timeline(t0 + ms(999)),
            vec![
                (ms(0), true),
                (ms(50), false),
                (ms(100), true),
                (ms(150), false)
            ]
        );
    }

    /// An LED that always fails: the driver keeps going (and keeps retrying).
    struct Broken(std::sync::atomic::AtomicUsize);

    impl Led for Broken {
        fn set(&self, _on: bool) -> std::io::Result<()> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(std::io::Error::other("gone"))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failing_led_does_not_stop_the_driver() {
        let led = Arc::new(Broken(Default::default()));
        let (tx, rx) = watch::channel(LedPattern::ClaimWindow);
        let task = tokio::spawn(run(led.clone(), rx));
        tokio::time::sleep(ms(950)).await;
        // Steps at 0, 100, ..., 900 ms: 10 attempts.
        assert_eq!(led.0.load(std::sync::atomic::Ordering::SeqCst), 10);
        drop(tx);
        tokio::time::timeout(ms(10), task).await.unwrap().unwrap();
    }
}
