//! The hardware watchdog (BOOT-4): while the daemon's runtime is alive it pets the
//! watchdog device; a hang (of the daemon or the whole system) stops the petting and the
//! hardware resets the machine — on a trial boot that means the old slot (the firmware's
//! tryboot flag is one-shot). An orderly stop disarms it with the magic close ('V',
//! Linux watchdog API); a crash does not, so a daemon that keeps crashing reboots the box
//! (and the init's boot counter, BOOT-6, can then fall back to the other slot).
//!
//! The device is `watchdog` in chatmail.ini (`auto`: `/dev/watchdog` on a Relaybox A/B
//! image, none elsewhere); on the Pi `dtparam=watchdog=on` (bcm2835_wdt, about 15 s).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The kernel's first watchdog (`watchdog = auto`; the config resolves it).
pub use crate::config::DEFAULT_WATCHDOG_DEVICE as DEFAULT_DEVICE;
/// Well inside the shortest timeout in use (bcm2835_wdt: 15 s; QEMU's i6300esb: 30 s).
pub const PET_EVERY: Duration = Duration::from_secs(5);

/// An open watchdog device.
pub struct Watchdog {
    file: File,
    path: PathBuf,
}

impl Watchdog {
    /// Opening starts the watchdog's countdown.
    pub fn open(path: &Path) -> io::Result<Watchdog> {
        let file = OpenOptions::new().write(true).open(path)?;
        Ok(Watchdog {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Any write other than 'V' restarts the countdown.
    pub fn pet(&mut self) -> io::Result<()> {
        self.file.write_all(b"1")?;
        self.file.flush()
    }

    /// The magic close: 'V' then close stops the watchdog (unless the kernel was built
    /// with nowayout, where it keeps running and the next daemon must pet it).
    pub fn disarm(mut self) -> io::Result<()> {
        self.file.write_all(b"V")?;
        self.file.flush()
    }
}

/// Pets `path` every [`PET_EVERY`] until `stop` resolves, then disarms it. Logs and returns
/// when the device cannot be opened (the relay runs without it).
pub async fn run(path: PathBuf, stop: impl std::future::Future<Output = ()>) {
    let mut dog = match Watchdog::open(&path) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!("watchdog {}: cannot open: {e}", path.display());
            return;
        }
    };
    tracing::info!("watchdog {}: petting every {:?}", path.display(), PET_EVERY);
    let mut tick = tokio::time::interval(PET_EVERY);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = dog.pet() {
                    tracing::warn!("watchdog {}: {e}", dog.path.display());
                }
            }
            () = &mut stop => break,
        }
    }
    let path = dog.path.clone();
    match dog.disarm() {
        Ok(()) => tracing::info!("watchdog {}: disarmed", path.display()),
        Err(e) => tracing::warn!("watchdog {}: cannot disarm: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FIFO stands in for the device: every pet arrives as a byte, the stop as 'V'.
    #[tokio::test(start_paused = true)]
    async fn pets_then_disarms() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("watchdog");
        std::fs::write(&dev, b"").unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(dev.clone(), async {
            let _ = rx.await;
        }));
        // Three ticks: at 0, 5 and 10 s.
        tokio::time::sleep(PET_EVERY * 2 + Duration::from_millis(100)).await;
        tx.send(()).unwrap();
        task.await.unwrap();
        assert_eq!(std::fs::read(&dev).unwrap(), b"111V");
    }

    #[tokio::test]
    async fn missing_device_is_logged_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let ran = tokio::time::timeout(
            Duration::from_secs(5),
            run(dir.path().join("none"), std::future::pending()),
        )
        .await;
        assert!(ran.is_ok(), "run must return when the device is missing");
    }
}
