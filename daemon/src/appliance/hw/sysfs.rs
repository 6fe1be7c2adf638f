//! The sysfs LED backend (spec/appliance.md §6, GPIO-2): `/sys/class/leds/<name>`, e.g. the
//! Pi's ACT LED (`led0` before kernel 3.18). Opening writes `none` to `trigger` so the
//! kernel stops driving the LED (it boots with `mmc0` activity); [`Led::set`] writes `1`
//! or `0` to `brightness`, inverted when `led_active_low` is set (the Pi 5 with kernel
//! 6.12.20 had an inverted ACT, raspberrypi/linux#6783). The root directory is a
//! parameter so tests run against a temp dir (spec §6 test level 2).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::Led;

/// An LED of the kernel's LED class.
#[derive(Debug)]
pub struct SysfsLed {
    dir: PathBuf,
    active_low: bool,
}

/// Write `value` to an existing attribute file (never creates one: a missing attribute
/// is an error, as it is on a real sysfs).
fn write_attr(path: &Path, value: &str) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).truncate(true).open(path)?;
    f.write_all(value.as_bytes())
}

impl SysfsLed {
    /// Take over `<root>/<name>` (or `<root>/led0` for a missing `ACT`, GPIO-2): set its
    /// trigger to `none` and switch it off.
    pub fn open(root: &Path, name: &str, active_low: bool) -> io::Result<SysfsLed> {
        let dir = super::sysfs_led_dir(root, name);
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no LED directory {}", dir.display()),
            ));
        }
        // GPIO-2: `none` first, else the kernel trigger keeps overwriting brightness.
        write_attr(&dir.join("trigger"), "none")?;
        let led = SysfsLed { dir, active_low };
        led.set(false)?;
        Ok(led)
    }

    /// The LED's directory (after the `led0` fallback).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Led for SysfsLed {
    fn set(&self, on: bool) -> io::Result<()> {
        let lit = on != self.active_low;
        write_attr(&self.dir.join("brightness"), if lit { "1" } else { "0" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_led(root: &Path, name: &str) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("trigger"), "none [mmc0] timer heartbeat\n").unwrap();
        std::fs::write(dir.join("brightness"), "255\n").unwrap();
        dir
    }

    fn read(path: PathBuf) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn trigger_none_then_brightness() {
        let root = tempfile::tempdir().unwrap();
        let dir = fake_led(root.path(), "ACT");
        let led = SysfsLed::open(root.path(), "ACT", false).unwrap();
        assert_eq!(read(dir.join("trigger")), "none");
        assert_eq!(read(dir.join("brightness")), "0", "off after open");
        led.set(true).unwrap();
        assert_eq!(read(dir.join("brightness")), "1");
        led.set(false).unwrap();
        assert_eq!(read(dir.join("brightness")), "0");
    }

    #[test]
    fn active_low_inverts() {
        let root = tempfile::tempdir().unwrap();
        let dir = fake_led(root.path(), "ACT");
        let led = SysfsLed::open(root.path(), "ACT", true).unwrap();
        assert_eq!(
            read(dir.join("brightness")),
            "1",
            "off = high when active low"
        );
        led.set(true).unwrap();
        assert_eq!(read(dir.join("brightness")), "0");
        led.set(false).unwrap();
        assert_eq!(read(dir.join("brightness")), "1");
    }

    #[test]
    fn act_falls_back_to_led0() {
        let root = tempfile::tempdir().unwrap();
        let dir = fake_led(root.path(), "led0");
        let led = SysfsLed::open(root.path(), "ACT", false).unwrap();
        assert_eq!(led.dir(), dir);
        led.set(true).unwrap();
        assert_eq!(read(dir.join("brightness")), "1");
        // Only ACT falls back.
        assert!(SysfsLed::open(root.path(), "PWR", false).is_err());
    }

    #[test]
    fn missing_led_or_attribute_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let err = SysfsLed::open(root.path(), "ACT", false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        // A directory without `trigger` (not an LED): refused, nothing created.
        let dir = root.path().join("ACT");
        std::fs::create_dir(&dir).unwrap();
        assert!(SysfsLed::open(root.path(), "ACT", false).is_err());
        assert!(!dir.join("trigger").exists());
    }
}
