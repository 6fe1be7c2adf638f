//! The rppal backend (cargo feature `rppal`; spec/appliance.md §6 GPIO-1, GPIO-4), selected
//! with `gpio:rppal:<BCM pin>`. rppal is unmaintained since 2025-07, so gpiocdev is the
//! default; this exists because the original design named it. rppal finds the model from
//! `/proc/cpuinfo` or the device tree, maps `/dev/gpiomem` (BCM) or `/dev/gpiomem0` (RP1)
//! and takes interrupts through the gpiochip found by label.
//!
//! - LED: an output pin, `set_reset_on_drop(false)` so the LED keeps its state across a
//!   restart (GPIO-4).
//! - Button: an input with pull-up, pressed = low (GPIO-3), both edges with rppal's
//!   debounce; the interrupt callback runs on rppal's thread and forwards edges through a
//!   channel.

use std::io;
use std::sync::Mutex;

use rppal::gpio::{Event, Gpio, InputPin, OutputPin, Trigger};
use tokio::sync::mpsc;

use super::{Button, Edge, EdgeFuture, Led};

fn to_io(e: rppal::gpio::Error) -> io::Error {
    io::Error::other(e)
}

/// An LED on a BCM pin.
#[derive(Debug)]
pub struct RppalLed {
    pin: Mutex<OutputPin>,
    active_low: bool,
}

impl RppalLed {
    /// Take `pin` as an output, initially off.
    pub fn open(pin: u8, active_low: bool) -> io::Result<RppalLed> {
        let mut out = Gpio::new()
            .map_err(to_io)?
            .get(pin)
            .map_err(to_io)?
            .into_output();
        // GPIO-4: keep the LED state when the daemon restarts.
        out.set_reset_on_drop(false);
        let led = RppalLed {
            pin: Mutex::new(out),
            active_low,
        };
        led.set(false)?;
        Ok(led)
    }
}

impl Led for RppalLed {
    fn set(&self, on: bool) -> io::Result<()> {
        let mut pin = self
            .pin
            .lock()
            .map_err(|_| io::Error::other("LED pin lock poisoned"))?;
        if on != self.active_low {
            pin.set_high();
        } else {
            pin.set_low();
        }
        Ok(())
    }
}

/// A button on a BCM pin, pressed = low.
#[derive(Debug)]
pub struct RppalButton {
    pin: InputPin,
    edges: mpsc::UnboundedReceiver<Edge>,
}

impl RppalButton {
    /// Take `pin` as an input with pull-up and both-edge interrupts (GPIO-3).
    pub fn open(pin: u8) -> io::Result<RppalButton> {
        let mut input = Gpio::new()
            .map_err(to_io)?
            .get(pin)
            .map_err(to_io)?
            .into_input_pullup();
        let (tx, rx) = mpsc::unbounded_channel();
        input
            .set_async_interrupt(
                Trigger::Both,
                Some(super::gpio::DEBOUNCE),
                move |event: Event| {
                    // Pull-up wiring: the line falls when the button is pressed.
                    let pressed = matches!(event.trigger, Trigger::FallingEdge);
                    let _ = tx.send(Edge {
                        pressed,
                        at: tokio::time::Instant::now(),
                    });
                },
            )
            .map_err(to_io)?;
        Ok(RppalButton {
            pin: input,
            edges: rx,
        })
    }
}

impl Button for RppalButton {
    fn next_edge(&mut self) -> EdgeFuture<'_> {
        Box::pin(async move {
            self.edges
                .recv()
                .await
                .ok_or_else(|| io::Error::other("rppal interrupt thread stopped"))
        })
    }

    fn is_pressed(&mut self) -> io::Result<bool> {
        Ok(self.pin.is_low())
    }
}
