//! Fake backends for tests (spec/appliance.md §6 test level 1): an LED that records when it
//! changed (tokio's clock, so paused time gives exact instants) and a button whose edges
//! and line level the test sets through a [`FakeButtonHandle`].

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Button, Edge, EdgeFuture, Led};

/// An LED that records every `set` as (instant, on).
#[derive(Debug, Default)]
pub struct FakeLed {
    log: Mutex<Vec<(Instant, bool)>>,
}

impl FakeLed {
    pub fn new() -> FakeLed {
        FakeLed::default()
    }

    /// Every `set` so far, in order.
    pub fn events(&self) -> Vec<(Instant, bool)> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Every `set` so far as (time since `start`, on); sets before `start` are left out.
    pub fn timeline(&self, start: Instant) -> Vec<(Duration, bool)> {
        self.events()
            .into_iter()
            .filter(|(at, _)| *at >= start)
            .map(|(at, on)| (at - start, on))
            .collect()
    }

    /// The last state set, if any.
    pub fn state(&self) -> Option<bool> {
        self.events().last().map(|(_, on)| *on)
    }
}

impl Led for FakeLed {
    fn set(&self, on: bool) -> io::Result<()> {
        self.log
            .lock()
            .map_err(|_| io::Error::other("fake LED log poisoned"))?
            .push((Instant::now(), on));
        Ok(())
    }
}

/// The button side the code under test holds.
#[derive(Debug)]
pub struct FakeButton {
    edges: mpsc::UnboundedReceiver<Edge>,
    level: Arc<AtomicBool>,
}

/// The test's side: press, release, bounce.
#[derive(Debug, Clone)]
pub struct FakeButtonHandle {
    edges: mpsc::UnboundedSender<Edge>,
    level: Arc<AtomicBool>,
}

/// A fake button, initially pressed or not (held at power-on).
pub fn fake_button(pressed: bool) -> (FakeButton, FakeButtonHandle) {
    let (tx, rx) = mpsc::unbounded_channel();
    let level = Arc::new(AtomicBool::new(pressed));
    (
        FakeButton {
            edges: rx,
            level: level.clone(),
        },
        FakeButtonHandle { edges: tx, level },
    )
}

impl FakeButtonHandle {
    /// The line changes now: the level follows at once, the edge is queued.
    pub fn edge(&self, pressed: bool) {
        self.level.store(pressed, Ordering::SeqCst);
        // A closed receiver only means the code under test has stopped listening.
        let _ = self.edges.send(Edge {
            pressed,
            at: Instant::now(),
        });
    }

    pub fn press(&self) {
        self.edge(true);
    }

    pub fn release(&self) {
        self.edge(false);
    }

    /// Change the level without an edge (a missed interrupt).
    pub fn set_level_silently(&self, pressed: bool) {
        self.level.store(pressed, Ordering::SeqCst);
    }
}

impl Button for FakeButton {
    fn next_edge(&mut self) -> EdgeFuture<'_> {
        Box::pin(async move {
            // `recv` is cancel-safe.
            self.edges.recv().await.ok_or_else(|| {
                io::Error::new(io::ErrorKind::UnexpectedEof, "fake button handle dropped")
            })
        })
    }

    fn is_pressed(&mut self) -> io::Result<bool> {
        Ok(self.level.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn led_records_virtual_time() {
        let led = FakeLed::new();
        let t0 = Instant::now();
        led.set(true).unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        led.set(false).unwrap();
        assert_eq!(
            led.timeline(t0),
            vec![(Duration::ZERO, true), (Duration::from_millis(250), false)]
        );
        assert_eq!(led.state(), Some(false));
    }

    #[tokio::test(start_paused = true)]
    async fn button_edges_and_level() {
        let (mut button, handle) = fake_button(false);
        assert!(!button.is_pressed().unwrap());
        handle.press();
        assert!(button.is_pressed().unwrap());
        let e = button.next_edge().await.unwrap();
        assert!(e.pressed);
        handle.release();
        assert!(!button.next_edge().await.unwrap().pressed);
        drop(handle);
        let err = button.next_edge().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
