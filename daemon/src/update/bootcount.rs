//! Boot health breadcrumbs on /data (BOOT-6), shared with the image's init: the boot
//! counter and the "good" marks of the slots, plus the recovery that switches to the other
//! slot (button held at power-on).
//!
//! Files in the update state directory (`/data/relaybox/update`):
//! - `boot-count`: the init adds one at every normal (non-trial) boot; a passing health
//!   check writes 0. After 3 boots without one, the init points `autoboot.txt` at the other
//!   slot if that slot is marked good.
//! - `good-a`, `good-b`: the slot passed a health check. Removed before the slot is written
//!   (an install in progress or a broken write must never be "good").

use std::fs;
use std::path::Path;

use super::boot::{self, BootControl};
use super::{Slot, UpdateError};

/// The boot counter's file name.
pub const BOOT_COUNT: &str = "boot-count";

/// File name of a slot's good mark.
pub fn good_mark(slot: Slot) -> String {
    format!("good-{}", slot.as_str())
}

pub fn is_good(dir: &Path, slot: Slot) -> bool {
    dir.join(good_mark(slot)).is_file()
}

/// A passing health check of the running `slot`: mark it good and reset the counter.
pub fn boot_passed(dir: &Path, slot: Slot) -> Result<(), UpdateError> {
    fs::create_dir_all(dir).map_err(|e| UpdateError::io("cannot create", dir, e))?;
    boot::write_atomic(dir, &good_mark(slot), b"1\n")?;
    boot::write_atomic(dir, BOOT_COUNT, b"0\n")
}

/// Before `slot` is written: it is no longer good.
pub fn forget_good(dir: &Path, slot: Slot) -> Result<(), UpdateError> {
    boot::remove_durably(dir, &good_mark(slot))
}

/// The boot counter as the init left it (0 when missing or unreadable).
pub fn boot_count(dir: &Path) -> u32 {
    fs::read_to_string(dir.join(BOOT_COUNT))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// Recovery (BOOT-6, button held at power-on): make the other slot the default if it is
/// marked good. Returns that slot; the caller reboots. Nothing changes on refusal.
pub fn switch_to_other(boot: &dyn BootControl, dir: &Path) -> Result<Slot, UpdateError> {
    let other = boot.active_slot()?.other();
    if !is_good(dir, other) {
        return Err(UpdateError::Refused(format!(
            "slot {} is not marked good (never ran, or was being written); staying on this one",
            other.as_str()
        )));
    }
    // BOOT-3: the same atomic rewrite of autoboot.txt as a commit.
    boot.commit(other)?;
    Ok(other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::boot::{Autoboot, fake_qemu};

    #[test]
    fn marks_and_counter() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("update");
        assert!(!is_good(&d, Slot::A));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(BOOT_COUNT), "3\n").unwrap();
        assert_eq!(boot_count(&d), 3);
        boot_passed(&d, Slot::A).unwrap();
        assert!(is_good(&d, Slot::A) && !is_good(&d, Slot::B));
        assert_eq!(boot_count(&d), 0);
        forget_good(&d, Slot::A).unwrap();
        assert!(!is_good(&d, Slot::A));
        forget_good(&d, Slot::A).unwrap();
    }

    #[test]
    fn recovery_switches_only_to_a_good_slot() {
        let dir = tempfile::tempdir().unwrap();
        let boot = fake_qemu(dir.path(), Slot::A, 4096);
        let d = dir.path().join("state");
        fs::create_dir_all(&d).unwrap();
        let before = fs::read_to_string(boot.autoboot_dir.join(boot::AUTOBOOT_TXT)).unwrap();
        let err = switch_to_other(&boot, &d).unwrap_err();
        assert!(
            err.to_string().contains("slot b is not marked good"),
            "{err}"
        );
        assert_eq!(
            fs::read_to_string(boot.autoboot_dir.join(boot::AUTOBOOT_TXT)).unwrap(),
            before
        );
        boot_passed(&d, Slot::B).unwrap();
        assert_eq!(switch_to_other(&boot, &d).unwrap(), Slot::B);
        assert_eq!(Autoboot::load(&boot.autoboot_dir).unwrap().default, Slot::B);
    }
}
