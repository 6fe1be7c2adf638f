//! The GPIO character-device backend (uAPI v2 through gpiocdev; spec/appliance.md §6,
//! GPIO-1): the primary backend on the device, the same code on Pi 4 (`pinctrl-bcm2711`),
//! Pi 5 (`pinctrl-rp1`) and QEMU `virt` (PL061).
//!
//! - LED: an output line, optionally active-low, so `set(true)` always means "lit".
//! - Button: an input with pull-up, both edges, kernel debounce of [`DEBOUNCE`], active-low
//!   (GPIO-3); a rising edge of the logical value is a press. Edges arrive through the
//!   tokio reactor (gpiocdev's `AsyncRequest`, feature `async_tokio`).
//!
//! A chip is named by path (`/dev/gpiochip0`), by device name (`gpiochip0`) or by label
//! (`pinctrl-rp1`, `9030000.pl061`); a line by offset (`17`) or by name (`GPIO17`).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gpiocdev::Request;
use gpiocdev::line::{Bias, EdgeDetection, EdgeKind, Value};
use gpiocdev::tokio::AsyncRequest;

use super::{Button, Edge, EdgeFuture, Led};

/// Kernel debounce period of the button line (GPIO-3: ~20 ms).
pub const DEBOUNCE: Duration = Duration::from_millis(20);

/// Consumer names shown by `gpioinfo`.
const LED_CONSUMER: &str = "relaybox-led";
const BUTTON_CONSUMER: &str = "relaybox-button";

fn to_io(e: gpiocdev::Error) -> io::Error {
    io::Error::other(e)
}

/// The character device of `chip`: a path, a `/dev` name, or a chip label.
pub fn chip_path(chip: &str) -> io::Result<PathBuf> {
    if chip.starts_with('/') {
        return gpiocdev::chip::is_chip(chip).map_err(to_io);
    }
    if let Ok(path) = gpiocdev::chip::is_chip(format!("/dev/{chip}")) {
        return Ok(path);
    }
    let chips = gpiocdev::chip::chips().map_err(to_io)?;
    for path in chips {
        let Ok(c) = gpiocdev::Chip::from_path(&path) else {
            continue;
        };
        if c.info().is_ok_and(|info| info.label == chip) {
            return Ok(path);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no GPIO chip named or labelled {chip:?}"),
    ))
}

/// The chip's device path and the line's offset; `line` is an offset or a line name.
pub fn resolve(chip: &str, line: &str) -> io::Result<(PathBuf, u32)> {
    let path = chip_path(chip)?;
    if let Ok(offset) = line.parse::<u32>() {
        return Ok((path, offset));
    }
    let c = gpiocdev::Chip::from_path(&path).map_err(to_io)?;
    match c.find_line_info(line) {
        Some(info) => Ok((path, info.offset)),
        None => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} has no line named {line:?}", path.display()),
        )),
    }
}

/// An LED on an output line.
#[derive(Debug)]
pub struct GpioLed {
    request: Request,
}

impl GpioLed {
    /// Request `offset` on `chip` as an output, initially off.
    pub fn open(chip: &Path, offset: u32, active_low: bool) -> io::Result<GpioLed> {
        let mut builder = Request::builder();
        builder
            .on_chip(chip)
            .with_consumer(LED_CONSUMER)
            .with_line(offset)
            .as_output(Value::Inactive);
        if active_low {
            builder.as_active_low();
        }
        let request = builder.request().map_err(to_io)?;
        Ok(GpioLed { request })
    }
}

impl Led for GpioLed {
    fn set(&self, on: bool) -> io::Result<()> {
        let value = if on { Value::Active } else { Value::Inactive };
        self.request.set_lone_value(value).map_err(to_io)
    }
}

/// A button on an input line with edge detection.
#[derive(Debug)]
pub struct GpioButton {
    request: AsyncRequest,
}

impl GpioButton {
    /// Request `offset` on `chip` as an input with both edges and kernel debounce
    /// (GPIO-3). `active_low`: pressed = line low, with the pull-up enabled (the wiring
    /// of the reset button); otherwise pressed = line high and the bias is left alone
    /// (QEMU's PL061 power-button line). Must run inside a tokio runtime.
    pub fn open(chip: &Path, offset: u32, active_low: bool) -> io::Result<GpioButton> {
        let mut builder = Request::builder();
        builder
            .on_chip(chip)
            .with_consumer(BUTTON_CONSUMER)
            .with_line(offset)
            .as_input()
            .with_edge_detection(EdgeDetection::BothEdges)
            // GPIO-3: the kernel debounces (in hardware or in gpiolib-cdev's software).
            .with_debounce_period(DEBOUNCE);
        if active_low {
            builder.as_active_low().with_bias(Bias::PullUp);
        }
        // AsyncRequest::new panics outside a runtime: refuse instead.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other("the GPIO button needs a tokio runtime"));
        }
        let request = builder.request().map_err(to_io)?;
        Ok(GpioButton {
            request: AsyncRequest::new(request),
        })
    }
}

impl Button for GpioButton {
    fn next_edge(&mut self) -> EdgeFuture<'_> {
        Box::pin(async move {
            // Cancel-safe: gpiocdev reads the event only once the descriptor is readable,
            // with no await after the read.
            let event = self.request.read_edge_event().await.map_err(to_io)?;
            Ok(Edge {
                // Values are logical (active-low applied): rising = pressed.
                pressed: event.kind == EdgeKind::Rising,
                at: tokio::time::Instant::now(),
            })
        })
    }

    fn is_pressed(&mut self) -> io::Result<bool> {
        let value = self.request.as_ref().lone_value().map_err(to_io)?;
        Ok(value == Value::Active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_chip_is_not_found() {
        assert!(resolve("/nonexistent/gpiochip7", "3").is_err());
        let err = chip_path("no-such-chip-label").unwrap_err();
        assert!(err.to_string().contains("no-such-chip-label"), "{err}");
    }
}
