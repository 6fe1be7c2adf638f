//! What a press of the reset button means (issue #6 item 7, spec/appliance.md §6 GPIO-3):
//! [`watch`] turns the edges of any [`Button`] backend into [`ButtonEvent`]s.
//!
//! - Pressed and released within [`COUNTDOWN_FROM`] (2 s): [`ButtonEvent::ShortPress`]
//!   (confirms a claim).
//! - Held: at 2 s, 3 s, … 9 s after the press, [`ButtonEvent::HoldCountdown`] with 8, 7, …
//!   1 seconds left (the appliance shows it as `LedPattern::ResetCountdown`).
//! - At [`RESET_AFTER`] (10 s) the line is read again and, if still pressed (GPIO-3:
//!   "confirm the line is still active at the threshold"), [`ButtonEvent::FactoryReset`]
//!   is sent once; nothing more until the button has been released.
//! - Released after the countdown started but before 10 s (or found released at the
//!   threshold): [`ButtonEvent::HoldCancelled`].
//!
//! Edges are debounced here as well ([`DEBOUNCE`], 20 ms: a state counts once the line has
//! stayed in it that long), because only the gpiocdev backend has the kernel debounce.
//! Times are measured from the edge that started the settled state. A button already
//! held when watching starts (held at power-on: recovery, BOOT-6) is not a press; it is
//! ignored until released. [`held_at_start`] is the check for that recovery gesture.

use std::io;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use super::hw::{Button, Edge};

/// What the button did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonEvent {
    /// Pressed and released within 2 s: confirms an open claim window.
    ShortPress,
    /// Still held; the factory reset follows in `seconds_left` seconds (8 down to 1).
    HoldCountdown { seconds_left: u8 },
    /// Released (or found released) before the 10 s were over.
    HoldCancelled,
    /// Held for 10 s and still pressed: wipe config and accounts.
    FactoryReset,
}

/// A state counts once the line has stayed in it this long (GPIO-3: ~20 ms).
pub const DEBOUNCE: Duration = Duration::from_millis(20);
/// A hold longer than this is no short press; the countdown starts.
pub const COUNTDOWN_FROM: Duration = Duration::from_secs(2);
/// Hold time of the factory reset (GPIO-3: long press ≥ 10 s).
pub const RESET_AFTER: Duration = Duration::from_secs(10);

/// A button seen through the debounce: only settled changes come out.
struct Debounced {
    button: Box<dyn Button>,
    /// The last settled state.
    settled: bool,
    /// The last raw edge, not yet stable for [`DEBOUNCE`].
    pending: Option<Edge>,
}

impl Debounced {
    fn new(mut button: Box<dyn Button>) -> io::Result<Debounced> {
        let settled = button.is_pressed()?;
        Ok(Debounced {
            button,
            settled,
            pending: None,
        })
    }

    /// The next settled change, stamped with the edge that began it. Cancel-safe: all
    /// state is in `self` between awaits and [`Button::next_edge`] is cancel-safe.
    async fn next(&mut self) -> io::Result<Edge> {
        // Bounded by the edges the line produces; each pass consumes an edge or a timer.
        loop {
            match self.pending {
                None => {
                    let edge = self.button.next_edge().await?;
                    self.pending = Some(edge);
                }
                Some(pending) => {
                    tokio::select! {
                        biased;
                        edge = self.button.next_edge() => self.pending = Some(edge?),
                        _ = sleep_until(pending.at + DEBOUNCE) => {
                            self.pending = None;
                            if pending.pressed != self.settled {
                                self.settled = pending.pressed;
                                return Ok(pending);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Watch `button` and send what it means to `out` until `out` is closed or the button
/// fails (logged; the button is then ignored until the daemon restarts).
pub async fn watch(button: Box<dyn Button>, out: mpsc::Sender<ButtonEvent>) {
    match watch_events(button, &out).await {
        Ok(()) => tracing::debug!("reset button: nobody listens any more"),
        Err(e) => tracing::warn!("reset button: {e}; the button is ignored from now on"),
    }
}

/// `Ok` when `out` is closed; `Err` when the button fails.
async fn watch_events(button: Box<dyn Button>, out: &mpsc::Sender<ButtonEvent>) -> io::Result<()> {
    let mut button = Debounced::new(button)?;
    if button.settled {
        tracing::info!("reset button held at start: ignored until released");
    }
    loop {
        let edge = button.next().await?;
        if !edge.pressed {
            // Release after a reset, after a cancel found at the threshold, or of a
            // button held at start.
            continue;
        }
        let since = edge.at;
        let mut countdowns_sent: u8 = 0;
        let event = loop {
            let deadline = since + COUNTDOWN_FROM + Duration::from_secs(countdowns_sent.into());
            tokio::select! {
                biased;
                edge = button.next() => {
                    if !edge?.pressed {
                        break if countdowns_sent == 0 {
                            ButtonEvent::ShortPress
                        } else {
                            ButtonEvent::HoldCancelled
                        };
                    }
                }
                _ = sleep_until(deadline) => {
                    let held = deadline - since;
                    if held >= RESET_AFTER {
                        // GPIO-3: confirm the line is still active at the threshold.
                        if button.button.is_pressed()? {
                            break ButtonEvent::FactoryReset;
                        }
                        // Released without an edge we saw: follow the line.
                        button.settled = false;
                        break ButtonEvent::HoldCancelled;
                    }
                    let seconds_left = (RESET_AFTER - held).as_secs();
                    let seconds_left = u8::try_from(seconds_left).unwrap_or(u8::MAX);
                    if out.send(ButtonEvent::HoldCountdown { seconds_left }).await.is_err() {
                        return Ok(());
                    }
                    countdowns_sent = countdowns_sent.saturating_add(1);
                }
            }
        };
        match event {
            ButtonEvent::FactoryReset => tracing::warn!("reset button held 10 s"),
            other => tracing::debug!("reset button: {other:?}"),
        }
        if out.send(event).await.is_err() {
            return Ok(());
        }
    }
}

/// Poll interval of [`held_at_start`].
const HELD_POLL: Duration = Duration::from_millis(50);

/// Whether the button is pressed now and stays pressed for `hold` (the line is read every
/// 50 ms; edges are not consumed): the "held at power-on" recovery gesture (GPIO-3,
/// BOOT-6).
pub async fn held_at_start(button: &mut dyn Button, hold: Duration) -> io::Result<bool> {
    let start = Instant::now();
    let polls = hold.as_millis() / HELD_POLL.as_millis() + 1;
    for i in 0..=polls {
        if !button.is_pressed()? {
            return Ok(false);
        }
        let next = start + HELD_POLL * u32::try_from(i + 1).unwrap_or(u32::MAX);
        if next > start + hold {
            break;
        }
        sleep_until(next).await;
    }
    button.is_pressed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::appliance::hw::fake::{FakeButtonHandle, fake_button};
    use tokio::time::{sleep, timeout};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    struct Rig {
        handle: FakeButtonHandle,
        rx: mpsc::Receiver<ButtonEvent>,
        t0: Instant,
        task: tokio::task::JoinHandle<()>,
    }

    /// A watcher on a fake button, started (it has read the line) when this returns.
    async fn rig(pressed_at_start: bool) -> Rig {
        let (button, handle) = fake_button(pressed_at_start);
        let (tx, rx) = mpsc::channel(16);
        let t0 = Instant::now();
        let task = tokio::spawn(watch(Box::new(button), tx));
        // Current-thread runtime: the watcher runs up to its first await now.
        tokio::task::yield_now().await;
        Rig {
            handle,
            rx,
            t0,
            task,
        }
    }

    impl Rig {
        /// The next event and when it came (since t0).
        async fn next(&mut self) -> (ButtonEvent, Duration) {
            let ev = timeout(Duration::from_secs(60), self.rx.recv())
                .await
                .expect("an event within 60 s")
                .expect("the watcher is running");
            (ev, Instant::now() - self.t0)
        }

        /// No event for `d`.
        async fn quiet_for(&mut self, d: Duration) {
            if let Ok(ev) = timeout(d, self.rx.recv()).await {
                panic!("unexpected {ev:?} at {:?}", Instant::now() - self.t0);
            }
        }

        /// Every event until `ms_` after t0, with when it came.
        async fn collect_until(&mut self, ms_: u64) -> Vec<(ButtonEvent, Duration)> {
            let end = self.t0 + ms(ms_);
            let mut got = Vec::new();
            // Bounded: the watcher sends at most a few events per second.
            while let Ok(Some(ev)) = tokio::time::timeout_at(end, self.rx.recv()).await {
                got.push((ev, Instant::now() - self.t0));
            }
            got
        }

        async fn at(&self, ms_: u64) {
            sleep_until(self.t0 + ms(ms_)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn short_press() {
        let mut r = rig(false).await;
        r.at(100).await;
        r.handle.press();
        r.at(600).await;
        r.handle.release();
        // Reported once the release has settled.
        assert_eq!(r.next().await, (ButtonEvent::ShortPress, ms(620)));
        r.quiet_for(Duration::from_secs(30)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn ten_second_hold_counts_down_then_resets_once() {
        let mut r = rig(false).await;
        r.handle.press();
        for (i, left) in (1..=8u8).rev().enumerate() {
            let at = ms(2000 + 1000 * i as u64);
            assert_eq!(
                r.next().await,
                (ButtonEvent::HoldCountdown { seconds_left: left }, at)
            );
        }
        assert_eq!(r.next().await, (ButtonEvent::FactoryReset, ms(10_000)));
        // Still held, then released: nothing more.
        r.quiet_for(Duration::from_secs(5)).await;
        r.handle.release();
        r.quiet_for(Duration::from_secs(5)).await;
        // The button works again afterwards.
        r.handle.press();
        sleep(ms(300)).await;
        r.handle.release();
        assert_eq!(r.next().await.0, ButtonEvent::ShortPress);
    }

    #[tokio::test(start_paused = true)]
    async fn release_at_9_s_cancels() {
        let mut r = rig(false).await;
        r.handle.press();
        let mut got = r.collect_until(9000).await;
        // Released at 9 s, the instant of the last countdown step (either order is fine).
        r.handle.release();
        loop {
            let e = r.next().await;
            got.push(e);
            if e.0 == ButtonEvent::HoldCancelled {
                break;
            }
        }
        let (cancel, countdown) = got.split_last().unwrap();
        assert_eq!(*cancel, (ButtonEvent::HoldCancelled, ms(9020)));
        assert!(countdown.len() == 7 || countdown.len() == 8, "{got:?}");
        for (i, e) in countdown.iter().enumerate() {
            let left = 8 - i as u8;
            let at = ms(2000 + 1000 * i as u64);
            assert_eq!(*e, (ButtonEvent::HoldCountdown { seconds_left: left }, at));
        }
        // No reset, not at 10 s, not later.
        r.quiet_for(Duration::from_secs(20)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn release_during_countdown_cancels() {
        let mut r = rig(false).await;
        r.handle.press();
        let mut got = r.collect_until(8500).await;
        r.handle.release();
        loop {
            let e = r.next().await;
            got.push(e);
            if e.0 == ButtonEvent::HoldCancelled {
                break;
            }
        }
        let expect: Vec<_> = (2..=8u8)
            .rev()
            .enumerate()
            .map(|(i, left)| {
                (
                    ButtonEvent::HoldCountdown { seconds_left: left },
                    ms(2000 + 1000 * i as u64),
                )
            })
            .chain([(ButtonEvent::HoldCancelled, ms(8520))])
            .collect();
        assert_eq!(got, expect);
        r.quiet_for(Duration::from_secs(20)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn bounces_within_20_ms_are_one_press() {
        let mut r = rig(false).await;
        // Contact bounce on press: 4 edges over 15 ms, then held.
        for (at, pressed) in [
            (100, true),
            (104, false),
            (109, true),
            (112, false),
            (115, true),
        ] {
            r.at(at).await;
            r.handle.edge(pressed);
        }
        // Bounce on release.
        for (at, pressed) in [
            (800, false),
            (803, true),
            (807, false),
            (811, true),
            (818, false),
        ] {
            r.at(at).await;
            r.handle.edge(pressed);
        }
        assert_eq!(r.next().await, (ButtonEvent::ShortPress, ms(838)));
        // A 10 ms glitch is no press at all.
        r.at(2000).await;
        r.handle.press();
        r.at(2010).await;
        r.handle.release();
        r.quiet_for(Duration::from_secs(15)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn threshold_reads_the_line() {
        // GPIO-3: the release edge was lost, the line reads released at 10 s.
        let mut r = rig(false).await;
        r.handle.press();
        r.at(9500).await;
        r.handle.set_level_silently(false);
        let mut last = None;
        while last != Some(ButtonEvent::HoldCancelled) {
            let (e, at) = r.next().await;
            assert_ne!(e, ButtonEvent::FactoryReset);
            if e == ButtonEvent::HoldCancelled {
                assert_eq!(at, ms(10_000));
            }
            last = Some(e);
        }
        // The next real press is seen (the watcher followed the line).
        r.at(12_000).await;
        r.handle.press();
        r.at(12_300).await;
        r.handle.release();
        assert_eq!(r.next().await, (ButtonEvent::ShortPress, ms(12_320)));
    }

    #[tokio::test(start_paused = true)]
    async fn held_at_start_is_not_a_press() {
        let mut r = rig(true).await;
        r.quiet_for(Duration::from_secs(15)).await;
        r.handle.release();
        r.quiet_for(Duration::from_secs(1)).await;
        r.handle.press();
        sleep(ms(100)).await;
        r.handle.release();
        assert_eq!(r.next().await.0, ButtonEvent::ShortPress);
    }

    #[tokio::test(start_paused = true)]
    async fn watcher_ends_when_nobody_listens_or_the_button_fails() {
        let r = rig(false).await;
        drop(r.rx);
        r.handle.press();
        // Countdown at 2 s cannot be sent: the watcher ends.
        timeout(Duration::from_secs(3), r.task)
            .await
            .unwrap()
            .unwrap();

        let r = rig(false).await;
        drop(r.handle);
        timeout(Duration::from_secs(1), r.task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn held_at_start_helper() {
        let (mut button, handle) = fake_button(true);
        let t0 = Instant::now();
        assert!(
            held_at_start(&mut button, Duration::from_secs(3))
                .await
                .unwrap()
        );
        assert_eq!(Instant::now() - t0, Duration::from_secs(3));

        let (mut button, handle2) = fake_button(true);
        let release = tokio::spawn(async move {
            sleep(ms(1234)).await;
            handle2.release();
            handle2
        });
        let t0 = Instant::now();
        assert!(
            !held_at_start(&mut button, Duration::from_secs(3))
                .await
                .unwrap()
        );
        assert_eq!(Instant::now() - t0, ms(1250));
        release.await.unwrap();

        let (mut button, _h) = fake_button(false);
        assert!(
            !held_at_start(&mut button, Duration::from_secs(3))
                .await
                .unwrap()
        );
        drop(handle);
    }
}
