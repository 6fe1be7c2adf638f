//! The hardware seam of the appliance: the status LED and the reset button as two small
//! traits ([`Led`], [`Button`]), their backends, and [`open`], which turns the `led` and
//! `button` config keys into backends (spec/appliance.md §6, GPIO-1).
//!
//! Backends:
//!
//! | Backend | Module | Used for |
//! |---|---|---|
//! | GPIO character device (uAPI v2, gpiocdev) | [`gpio`] | `gpio:<chip>:<line>`: Pi 4, Pi 5 (RP1), QEMU PL061 |
//! | `/sys/class/leds/<name>` | [`sysfs`] | `sysfs:<name>`: the ACT LED (GPIO-2) |
//! | rppal (cargo feature `rppal`) | `rppal` | `gpio:rppal:<bcm pin>` (GPIO-4) |
//! | fake | [`fake`] | tests: a recorded LED timeline, a button the test presses |
//!
//! The logic on top (blink patterns, press / hold / factory reset) lives in
//! `appliance::led` and `appliance::button` and sees only the traits.

pub mod fake;
pub mod gpio;
#[cfg(feature = "rppal")]
pub mod rppal;
pub mod sysfs;

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use crate::config::ApplianceConfig;

/// A status LED (GPIO-1 `StatusLed`).
pub trait Led: Send + Sync {
    /// Light the LED (`true`) or switch it off; polarity is the backend's business.
    fn set(&self, on: bool) -> io::Result<()>;
}

/// One change of the button's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    /// The button is pressed after this edge.
    pub pressed: bool,
    /// When the edge was seen.
    pub at: tokio::time::Instant,
}

/// A future returned by [`Button::next_edge`].
pub type EdgeFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Edge>> + Send + 'a>>;

/// A push button, pressed = active (GPIO-1 `ResetButton`).
pub trait Button: Send {
    /// The next edge. Cancel-safe: dropping the future loses no edge, so it can sit in a
    /// `select!` next to a timer.
    fn next_edge(&mut self) -> EdgeFuture<'_>;

    /// Whether the button is pressed right now, read from the line (GPIO-3: confirm the
    /// line is still active at the long-press threshold; held at power-on).
    fn is_pressed(&mut self) -> io::Result<bool>;
}

/// Where the sysfs LED class lives on a real system (GPIO-2).
pub const SYSFS_LEDS: &str = "/sys/class/leds";

/// A `led` or `button` value that cannot be used; the message names the key and device.
#[derive(Debug, thiserror::Error)]
pub enum HwError {
    #[error("{key}: expected {expected}, got {value:?}")]
    Spec {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{key}: cannot use {device}: {source}")]
    Device {
        key: &'static str,
        device: String,
        #[source]
        source: io::Error,
    },
    #[error("{key}: {device} needs the rppal backend; this build has no `rppal` feature")]
    NoRppal { key: &'static str, device: String },
}

/// The LED (if configured) and the button (if configured).
pub type Hardware = (Option<Arc<dyn Led>>, Option<Box<dyn Button>>);

/// Open the configured LED and button (`led`, `led_active_low`, `button`). Must run inside
/// a tokio runtime (the GPIO button registers its file descriptor with the reactor).
pub fn open(config: &ApplianceConfig) -> Result<Hardware, HwError> {
    open_in(config, Path::new(SYSFS_LEDS))
}

/// [`open`] with the sysfs LED class directory given (tests point it at a temp dir).
pub fn open_in(config: &ApplianceConfig, sysfs_leds: &Path) -> Result<Hardware, HwError> {
    let led = open_led(&config.led, config.led_active_low, sysfs_leds)?;
    let button = open_button(&config.button)?;
    Ok((led, button))
}

/// A parsed `gpio:<chip>:<line>`; the chip may itself contain `:` (the line is the last
/// field).
#[derive(Debug, Clone, PartialEq, Eq)]
struct GpioSpec {
    chip: String,
    line: String,
}

/// What a `led` / `button` value asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Spec {
    None,
    Sysfs(String),
    Gpio(GpioSpec),
}

fn parse_spec(
    key: &'static str,
    value: &str,
    allow_sysfs: bool,
    expected: &'static str,
) -> Result<Spec, HwError> {
    let bad = || HwError::Spec {
        key,
        value: value.to_string(),
        expected,
    };
    if value == "none" {
        return Ok(Spec::None);
    }
    match value.split_once(':') {
        Some(("sysfs", name)) if allow_sysfs => {
            // A name, not a path: no separators, not `.`/`..`.
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return Err(bad());
            }
            Ok(Spec::Sysfs(name.to_string()))
        }
        Some(("gpio", rest)) => match rest.rsplit_once(':') {
            Some((chip, line)) if !chip.is_empty() && !line.is_empty() => {
                Ok(Spec::Gpio(GpioSpec {
                    chip: chip.to_string(),
                    line: line.to_string(),
                }))
            }
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

fn device_error(key: &'static str, device: String) -> impl FnOnce(io::Error) -> HwError {
    move |source| HwError::Device {
        key,
        device,
        source,
    }
}

fn open_led(
    value: &str,
    active_low: bool,
    sysfs_leds: &Path,
) -> Result<Option<Arc<dyn Led>>, HwError> {
    const KEY: &str = "led";
    match parse_spec(KEY, value, true, "none, sysfs:<name> or gpio:<chip>:<line>")? {
        Spec::None => Ok(None),
        Spec::Sysfs(name) => {
            let led = sysfs::SysfsLed::open(sysfs_leds, &name, active_low).map_err(
                device_error(KEY, sysfs_leds.join(&name).display().to_string()),
            )?;
            Ok(Some(Arc::new(led)))
        }
        Spec::Gpio(spec) if spec.chip == "rppal" => rppal_led(&spec, active_low),
        Spec::Gpio(spec) => {
            let device = format!("gpio:{}:{}", spec.chip, spec.line);
            let (chip, offset) =
                gpio::resolve(&spec.chip, &spec.line).map_err(device_error(KEY, device.clone()))?;
            let led = gpio::GpioLed::open(&chip, offset, active_low).map_err(device_error(
                KEY,
                format!("{} line {offset}", chip.display()),
            ))?;
            Ok(Some(Arc::new(led)))
        }
    }
}

fn open_button(value: &str) -> Result<Option<Box<dyn Button>>, HwError> {
    const KEY: &str = "button";
    match parse_spec(KEY, value, false, "none or gpio:<chip>:<line>")? {
        Spec::None | Spec::Sysfs(_) => Ok(None),
        Spec::Gpio(spec) if spec.chip == "rppal" => rppal_button(&spec),
        Spec::Gpio(spec) => {
            let device = format!("gpio:{}:{}", spec.chip, spec.line);
            let (chip, offset) =
                gpio::resolve(&spec.chip, &spec.line).map_err(device_error(KEY, device))?;
            // GPIO-3: pressed = line low, pull-up.
            let button = gpio::GpioButton::open(&chip, offset, true).map_err(device_error(
                KEY,
                format!("{} line {offset}", chip.display()),
            ))?;
            Ok(Some(Box::new(button)))
        }
    }
}

/// `gpio:rppal:<bcm pin>` as a pin number.
#[cfg_attr(not(feature = "rppal"), allow(dead_code))]
fn rppal_pin(key: &'static str, spec: &GpioSpec) -> Result<u8, HwError> {
    spec.line.parse().map_err(|_| HwError::Spec {
        key,
        value: format!("gpio:rppal:{}", spec.line),
        expected: "gpio:rppal:<BCM pin number>",
    })
}

#[cfg(feature = "rppal")]
fn rppal_led(spec: &GpioSpec, active_low: bool) -> Result<Option<Arc<dyn Led>>, HwError> {
    let pin = rppal_pin("led", spec)?;
    let led = rppal::RppalLed::open(pin, active_low)
        .map_err(device_error("led", format!("rppal BCM pin {pin}")))?;
    Ok(Some(Arc::new(led)))
}

#[cfg(not(feature = "rppal"))]
fn rppal_led(spec: &GpioSpec, _active_low: bool) -> Result<Option<Arc<dyn Led>>, HwError> {
    Err(HwError::NoRppal {
        key: "led",
        device: format!("gpio:rppal:{}", spec.line),
    })
}

#[cfg(feature = "rppal")]
fn rppal_button(spec: &GpioSpec) -> Result<Option<Box<dyn Button>>, HwError> {
    let pin = rppal_pin("button", spec)?;
    let button = rppal::RppalButton::open(pin)
        .map_err(device_error("button", format!("rppal BCM pin {pin}")))?;
    Ok(Some(Box::new(button)))
}

#[cfg(not(feature = "rppal"))]
fn rppal_button(spec: &GpioSpec) -> Result<Option<Box<dyn Button>>, HwError> {
    Err(HwError::NoRppal {
        key: "button",
        device: format!("gpio:rppal:{}", spec.line),
    })
}

/// The directory of a sysfs LED (GPIO-2): `<root>/<name>`, or `<root>/led0` when `ACT`
/// is asked for and only the pre-3.18 name exists.
pub fn sysfs_led_dir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    if name == "ACT" && !dir.exists() {
        let old = root.join("led0");
        if old.exists() {
            return old;
        }
    }
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    fn appliance(led: &str, active_low: bool, button: &str) -> ApplianceConfig {
        ApplianceConfig {
            admin_from_anywhere: false,
            setup_code_file: PathBuf::from("/nonexistent/setup-code"),
            led: led.to_string(),
            led_active_low: active_low,
            button: button.to_string(),
            mdns_name: String::new(),
            acme_directory: String::new(),
            outbound_probe: String::new(),
        }
    }

    #[test]
    fn specs() {
        let p = |v: &str| parse_spec("led", v, true, "x");
        assert_eq!(p("none").unwrap(), Spec::None);
        assert_eq!(p("sysfs:ACT").unwrap(), Spec::Sysfs("ACT".into()));
        assert_eq!(
            p("gpio:gpiochip0:17").unwrap(),
            Spec::Gpio(GpioSpec {
                chip: "gpiochip0".into(),
                line: "17".into()
            })
        );
        // The line is the last field; a chip label may contain ':'.
        assert_eq!(
            p("gpio:a:b:GPIO17").unwrap(),
            Spec::Gpio(GpioSpec {
                chip: "a:b".into(),
                line: "GPIO17".into()
            })
        );
        for bad in [
            "",
            "sysfs:",
            "sysfs:../x",
            "sysfs:a/b",
            "gpio:17",
            "gpio::17",
            "gpio:chip:",
            "led0",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
        // No sysfs for the button.
        assert!(parse_spec("button", "sysfs:ACT", false, "x").is_err());
    }

    #[tokio::test]
    async fn open_none_and_errors_name_key_and_device() {
        let dir = tempfile::tempdir().unwrap();
        let (led, button) = open_in(&appliance("none", false, "none"), dir.path()).unwrap();
        assert!(led.is_none() && button.is_none());

        let err = open_in(&appliance("sysfs:nosuch", false, "none"), dir.path())
            .err()
            .unwrap();
        let msg = err.to_string();
        assert!(msg.starts_with("led: cannot use "), "{msg}");
        assert!(msg.contains("nosuch"), "{msg}");

        let err = open_in(
            &appliance("none", false, "gpio:/nonexistent/gpiochip9:3"),
            dir.path(),
        )
        .err()
        .unwrap();
        let msg = err.to_string();
        assert!(msg.starts_with("button: cannot use "), "{msg}");
        assert!(msg.contains("gpiochip9"), "{msg}");

        let err = open_in(&appliance("gpio:nochip", false, "none"), dir.path())
            .err()
            .unwrap();
        assert!(err.to_string().starts_with("led: expected "), "{err}");

        #[cfg(not(feature = "rppal"))]
        {
            let err = open_in(&appliance("none", false, "gpio:rppal:27"), dir.path())
                .err()
                .unwrap();
            assert!(
                matches!(err, HwError::NoRppal { key: "button", .. }),
                "{err}"
            );
        }
    }

    #[tokio::test]
    async fn open_sysfs_led_through_config() {
        let dir = tempfile::tempdir().unwrap();
        let act = dir.path().join("ACT");
        std::fs::create_dir(&act).unwrap();
        std::fs::write(act.join("trigger"), "none [mmc0] timer\n").unwrap();
        std::fs::write(act.join("brightness"), "255\n").unwrap();
        let (led, _) = open_in(&appliance("sysfs:ACT", true, "none"), dir.path()).unwrap();
        let led = led.unwrap();
        assert_eq!(
            std::fs::read_to_string(act.join("trigger")).unwrap(),
            "none"
        );
        led.set(true).unwrap();
        // led_active_low inverts.
        assert_eq!(
            std::fs::read_to_string(act.join("brightness")).unwrap(),
            "0"
        );
    }
}
