//! Boot-slot control (BOOT-7): which slot is running, whether this is a one-time trial boot,
//! arming the trial of the other slot, and committing a slot, with two backends:
//!
//! - [`PiBoot`]: Raspberry Pi firmware tryboot (BOOT-1..3). State from
//!   `/proc/device-tree/chosen/bootloader/{partition,tryboot}` (BOOT-2); the trial is armed by
//!   rebooting with the argument `"0 tryboot"` ([`BootControl::reboot_argument`]).
//! - [`QemuBoot`]: the offline image under image/qemu, which plays the firmware: it reads
//!   `autoboot.txt` and a one-shot `tryboot.flag` file on partition 1 (deleting the flag when
//!   it uses it). The running slot is `relaybox.root=` on the kernel command line.
//!
//! Both keep `autoboot.txt` on the `autoboot` FAT partition (mounted read-write at
//! [`DEFAULT_AUTOBOOT_DIR`]) and rewrite it atomically (BOOT-3). The partitions of each slot
//! are found by GPT partition name (`boot-a`, `root-b`, …) in sysfs.

use std::fs;
use std::path::{Path, PathBuf};

use super::{Slot, UpdateError};

/// Where the `autoboot` FAT partition is mounted read-write for updates.
pub const DEFAULT_AUTOBOOT_DIR: &str = "/run/autoboot";
/// The firmware's A/B selector on partition 1 (BOOT-1).
pub const AUTOBOOT_TXT: &str = "autoboot.txt";
/// QEMU stand-in for the firmware's one-shot tryboot flag (read and deleted by image/qemu).
pub const TRYBOOT_FLAG: &str = "tryboot.flag";
/// Device-tree node with the Pi bootloader's state (BOOT-2).
pub const PI_BOOTLOADER_DT: &str = "/proc/device-tree/chosen/bootloader";

/// The block devices (or, in tests, plain files) of one slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotPartitions {
    pub boot: PathBuf,
    pub root: PathBuf,
}

/// BOOT-7: the operations the updater needs from the boot firmware.
pub trait BootControl: Send + Sync {
    /// The slot the running system booted from.
    fn active_slot(&self) -> Result<Slot, UpdateError>;
    /// True on a one-time trial boot of a not yet committed slot.
    fn is_trial(&self) -> Result<bool, UpdateError>;
    /// Partition devices of `slot`.
    fn partitions(&self, slot: Slot) -> Result<SlotPartitions, UpdateError>;
    /// Arms one trial boot of `slot` at the next reboot (the caller then reboots with
    /// [`BootControl::reboot_argument`]).
    fn arm_trial(&self, slot: Slot) -> Result<(), UpdateError>;
    /// Makes `slot` the default boot (BOOT-3).
    fn commit(&self, slot: Slot) -> Result<(), UpdateError>;
    /// The argument for `reboot(2)`'s RESTART2 that arms the trial (`"0 tryboot"` on the Pi);
    /// `None` when [`BootControl::arm_trial`] already did everything.
    fn reboot_argument(&self) -> Option<&'static str>;

    /// The slot an update is written to and its partitions (OTA-7: never the active one).
    fn inactive_partitions(&self) -> Result<(Slot, SlotPartitions), UpdateError> {
        let target = self.active_slot()?.other();
        Ok((target, self.partitions(target)?))
    }
}

/// `autoboot.txt` contents (BOOT-1): the default and the trial boot partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Autoboot {
    pub default: Slot,
    pub tryboot: Slot,
}

impl Autoboot {
    /// Reads `[all] boot_partition=` and `[tryboot] boot_partition=`; a missing `[tryboot]`
    /// means the other slot.
    pub fn parse(text: &str) -> Result<Autoboot, UpdateError> {
        let mut section = String::new();
        let (mut default, mut tryboot) = (None, None);
        for line in text.lines() {
            let line = line.trim();
            if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = s.to_string();
                continue;
            }
            let Some(v) = line.strip_prefix("boot_partition=") else {
                continue;
            };
            let slot = v
                .trim()
                .parse()
                .ok()
                .and_then(Slot::from_boot_partition)
                .ok_or_else(|| {
                    UpdateError::Boot(format!("autoboot.txt: boot_partition={v} is no slot"))
                })?;
            match section.as_str() {
                "all" => default = Some(slot),
                "tryboot" => tryboot = Some(slot),
                _ => {}
            }
        }
        let default = default
            .ok_or_else(|| UpdateError::Boot("autoboot.txt: no [all] boot_partition".into()))?;
        Ok(Autoboot {
            default,
            tryboot: tryboot.unwrap_or(default.other()),
        })
    }

    /// Same shape as buildroot/board/common/autoboot.txt.
    pub fn render(&self) -> String {
        format!(
            "[all]\ntryboot_a_b=1\nboot_partition={}\n[tryboot]\nboot_partition={}\n",
            self.default.boot_partition(),
            self.tryboot.boot_partition()
        )
    }

    pub fn load(dir: &Path) -> Result<Autoboot, UpdateError> {
        let p = dir.join(AUTOBOOT_TXT);
        let text = fs::read_to_string(&p).map_err(|e| UpdateError::io("cannot read", &p, e))?;
        Autoboot::parse(&text)
    }

    pub fn store(&self, dir: &Path) -> Result<(), UpdateError> {
        write_atomic(dir, AUTOBOOT_TXT, self.render().as_bytes())
    }
}

/// BOOT-3: write a new file, fsync it, rename it over the old one, fsync the directory
/// ([`crate::files::write_atomic`]).
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), UpdateError> {
    let dest = dir.join(name);
    crate::files::write_atomic(&dest, bytes, 0o644)
        .map_err(|e| UpdateError::io("cannot write", &dest, e))
}

/// Removes `dir/name` if it exists and fsyncs the directory (the counterpart of
/// [`write_atomic`]).
pub fn remove_durably(dir: &Path, name: &str) -> Result<(), UpdateError> {
    let p = dir.join(name);
    crate::files::remove_durably(&p).map_err(|e| UpdateError::io("cannot remove", &p, e))
}

/// Makes `slot` the default and the other slot the trial target (BOOT-3).
fn commit_autoboot(dir: &Path, slot: Slot) -> Result<(), UpdateError> {
    let want = Autoboot {
        default: slot,
        tryboot: slot.other(),
    };
    if Autoboot::load(dir).ok() != Some(want) {
        want.store(dir)?;
    }
    Ok(())
}

/// Points `[tryboot]` at `slot`, keeping the default.
fn point_tryboot(dir: &Path, slot: Slot) -> Result<Autoboot, UpdateError> {
    let mut ab = Autoboot::load(dir)?;
    if ab.default == slot {
        return Err(UpdateError::Refused(format!(
            "slot {} is already the default boot",
            slot.as_str()
        )));
    }
    if ab.tryboot != slot {
        ab.tryboot = slot;
        ab.store(dir)?;
    }
    Ok(ab)
}

/// Finds the partitions named `boot-a`, `boot-b`, `root-a`, `root-b` (GPT names, the
/// `PARTNAME=` of their uevent) below `sys_class_block` (normally `/sys/class/block`);
/// device paths are `dev_dir/DEVNAME`.
pub fn find_partitions(
    sys_class_block: &Path,
    dev_dir: &Path,
) -> Result<[SlotPartitions; 2], UpdateError> {
    let mut found: [Option<PathBuf>; 4] = Default::default();
    const NAMES: [&str; 4] = ["boot-a", "root-a", "boot-b", "root-b"];
    let dir = fs::read_dir(sys_class_block)
        .map_err(|e| UpdateError::io("cannot list", sys_class_block, e))?;
    for ent in dir.flatten() {
        let Ok(text) = fs::read_to_string(ent.path().join("uevent")) else {
            continue;
        };
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(str::to_string)
        };
        if let (Some(name), Some(dev)) = (field("PARTNAME="), field("DEVNAME="))
            && let Some(i) = NAMES.iter().position(|n| *n == name)
        {
            if found[i].is_some() {
                return Err(UpdateError::Boot(format!(
                    "two partitions are named {name}"
                )));
            }
            found[i] = Some(dev_dir.join(dev));
        }
    }
    let mut get = |i: usize| {
        found[i]
            .take()
            .ok_or_else(|| UpdateError::Boot(format!("no partition named {}", NAMES[i])))
    };
    Ok([
        SlotPartitions {
            boot: get(0)?,
            root: get(1)?,
        },
        SlotPartitions {
            boot: get(2)?,
            root: get(3)?,
        },
    ])
}

fn slot_index(slot: Slot) -> usize {
    match slot {
        Slot::A => 0,
        Slot::B => 1,
    }
}

/// The QEMU backend (BOOT-7, appliance.md §4 "Offline emulation").
pub struct QemuBoot {
    /// Mounted `autoboot` partition.
    pub autoboot_dir: PathBuf,
    /// Kernel command line (normally `/proc/cmdline`).
    pub cmdline: PathBuf,
    pub slots: [SlotPartitions; 2],
}

impl QemuBoot {
    /// The running system's paths (partitions found in sysfs).
    pub fn system() -> Result<QemuBoot, UpdateError> {
        Ok(QemuBoot {
            autoboot_dir: PathBuf::from(DEFAULT_AUTOBOOT_DIR),
            cmdline: PathBuf::from("/proc/cmdline"),
            slots: find_partitions(Path::new("/sys/class/block"), Path::new("/dev"))?,
        })
    }
}

impl BootControl for QemuBoot {
    fn active_slot(&self) -> Result<Slot, UpdateError> {
        let text = fs::read_to_string(&self.cmdline)
            .map_err(|e| UpdateError::io("cannot read", &self.cmdline, e))?;
        // image/initramfs-init mounts the root named by relaybox.root= (default root-a).
        let root = text
            .split_whitespace()
            .find_map(|a| a.strip_prefix("relaybox.root="))
            .unwrap_or("root-a");
        match root {
            "root-a" => Ok(Slot::A),
            "root-b" => Ok(Slot::B),
            other => Err(UpdateError::Boot(format!(
                "booted from unknown root {other}"
            ))),
        }
    }

    /// image/qemu deletes the flag before booting, so a trial is "running a slot that
    /// autoboot.txt does not name as the default".
    fn is_trial(&self) -> Result<bool, UpdateError> {
        Ok(self.active_slot()? != Autoboot::load(&self.autoboot_dir)?.default)
    }

    fn partitions(&self, slot: Slot) -> Result<SlotPartitions, UpdateError> {
        Ok(self.slots[slot_index(slot)].clone())
    }

    fn arm_trial(&self, slot: Slot) -> Result<(), UpdateError> {
        point_tryboot(&self.autoboot_dir, slot)?;
        write_atomic(&self.autoboot_dir, TRYBOOT_FLAG, b"1\n")
    }

    fn commit(&self, slot: Slot) -> Result<(), UpdateError> {
        commit_autoboot(&self.autoboot_dir, slot)?;
        remove_durably(&self.autoboot_dir, TRYBOOT_FLAG)
    }

    fn reboot_argument(&self) -> Option<&'static str> {
        None
    }
}

/// The Raspberry Pi firmware backend (BOOT-1..3).
pub struct PiBoot {
    pub autoboot_dir: PathBuf,
    /// `/proc/device-tree/chosen/bootloader` (BOOT-2).
    pub bootloader_dt: PathBuf,
    pub slots: [SlotPartitions; 2],
}

impl PiBoot {
    pub fn system() -> Result<PiBoot, UpdateError> {
        Ok(PiBoot {
            autoboot_dir: PathBuf::from(DEFAULT_AUTOBOOT_DIR),
            bootloader_dt: PathBuf::from(PI_BOOTLOADER_DT),
            slots: find_partitions(Path::new("/sys/class/block"), Path::new("/dev"))?,
        })
    }

    /// A device-tree cell: one big-endian u32.
    fn dt_u32(&self, name: &str) -> Result<u32, UpdateError> {
        let p = self.bootloader_dt.join(name);
        let b = fs::read(&p).map_err(|e| UpdateError::io("cannot read", &p, e))?;
        let cell: [u8; 4] = b
            .get(..4)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| UpdateError::Boot(format!("{}: not a u32 cell", p.display())))?;
        Ok(u32::from_be_bytes(cell))
    }
}

impl BootControl for PiBoot {
    fn active_slot(&self) -> Result<Slot, UpdateError> {
        let n = self.dt_u32("partition")?;
        Slot::from_boot_partition(n)
            .ok_or_else(|| UpdateError::Boot(format!("booted from partition {n}, not a slot")))
    }

    fn is_trial(&self) -> Result<bool, UpdateError> {
        Ok(self.dt_u32("tryboot")? != 0)
    }

    fn partitions(&self, slot: Slot) -> Result<SlotPartitions, UpdateError> {
        Ok(self.slots[slot_index(slot)].clone())
    }

    fn arm_trial(&self, slot: Slot) -> Result<(), UpdateError> {
        point_tryboot(&self.autoboot_dir, slot).map(|_| ())
    }

    fn commit(&self, slot: Slot) -> Result<(), UpdateError> {
        commit_autoboot(&self.autoboot_dir, slot)
    }

    fn reboot_argument(&self) -> Option<&'static str> {
        // BOOT-1: the one-shot firmware flag, set by the RPi kernel's reboot handler.
        Some("0 tryboot")
    }
}

/// Mounts the `autoboot` FAT partition read-write at `dir` unless something is mounted
/// there already (`/proc/mounts`). Needs root (busybox / util-linux `mount`). `sync`: on
/// vfat, fsync and a directory fsync leave the FAT table in the page cache, so a commit
/// (BOOT-3) would not be on the card for up to a writeback interval (measured in QEMU).
pub fn mount_autoboot(dir: &Path) -> Result<(), UpdateError> {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let target = dir.to_string_lossy();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(target.as_ref()))
    {
        return Ok(());
    }
    let dev = partition_device(Path::new("/sys/class/block"), Path::new("/dev"), "autoboot")?;
    fs::create_dir_all(dir).map_err(|e| UpdateError::io("cannot create", dir, e))?;
    let st = std::process::Command::new("mount")
        .args(["-t", "vfat", "-o", "rw,noatime,sync"])
        .arg(&dev)
        .arg(dir)
        .status()
        .map_err(|e| UpdateError::Boot(format!("cannot run mount: {e}")))?;
    if !st.success() {
        return Err(UpdateError::Boot(format!(
            "mounting {} on {} failed",
            dev.display(),
            dir.display()
        )));
    }
    Ok(())
}

/// The device of the partition with GPT name `name`.
pub fn partition_device(
    sys_class_block: &Path,
    dev_dir: &Path,
    name: &str,
) -> Result<PathBuf, UpdateError> {
    let dir = fs::read_dir(sys_class_block)
        .map_err(|e| UpdateError::io("cannot list", sys_class_block, e))?;
    for ent in dir.flatten() {
        let Ok(text) = fs::read_to_string(ent.path().join("uevent")) else {
            continue;
        };
        if text
            .lines()
            .any(|l| l.strip_prefix("PARTNAME=") == Some(name))
            && let Some(dev) = text.lines().find_map(|l| l.strip_prefix("DEVNAME="))
        {
            return Ok(dev_dir.join(dev));
        }
    }
    Err(UpdateError::Boot(format!("no partition named {name}")))
}

/// `relaybox system-reboot [ARG]`, run by the image's init (as root) at the very end of an
/// orderly reboot: `sync`, then reboot(2). With an argument it is `LINUX_REBOOT_CMD_RESTART2`
/// with that argument — `"0 tryboot"` makes the Pi firmware boot the `[tryboot]` partition
/// once (BOOT-1); without one a plain restart. Returns only on failure.
pub fn system_reboot(argument: Option<&str>) -> std::io::Error {
    use nix::libc;
    // SAFETY: sync(2) has no arguments and cannot fail.
    unsafe { libc::sync() };
    let rc = match argument {
        Some(arg) => {
            let Ok(arg) = std::ffi::CString::new(arg) else {
                return std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in argument");
            };
            // SAFETY: the raw reboot syscall with its magic numbers and a NUL-terminated
            // argument that outlives the call (reboot(2), LINUX_REBOOT_CMD_RESTART2).
            unsafe {
                libc::syscall(
                    libc::SYS_reboot,
                    libc::LINUX_REBOOT_MAGIC1,
                    libc::LINUX_REBOOT_MAGIC2,
                    libc::LINUX_REBOOT_CMD_RESTART2,
                    arg.as_ptr(),
                )
            }
        }
        // SAFETY: reboot(2) with a constant command.
        None => i64::from(unsafe { libc::reboot(libc::LINUX_REBOOT_CMD_RESTART) }),
    };
    if rc == 0 {
        std::io::Error::other("reboot(2) returned")
    } else {
        std::io::Error::last_os_error()
    }
}

/// The backend for this machine: the Pi when the firmware left its device-tree node, QEMU
/// when the kernel command line names a root slot, otherwise `None` (no A/B updates here).
pub fn detect() -> Option<Box<dyn BootControl>> {
    if Path::new(PI_BOOTLOADER_DT).join("partition").exists() {
        return PiBoot::system()
            .ok()
            .map(|b| Box::new(b) as Box<dyn BootControl>);
    }
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if cmdline.contains("relaybox.root=") {
        return QemuBoot::system()
            .ok()
            .map(|b| Box::new(b) as Box<dyn BootControl>);
    }
    None
}

/// Test helper: plain files standing in for the four slot partitions plus an autoboot
/// directory, as a [`QemuBoot`] booted from `active`.
#[cfg(test)]
pub(crate) fn fake_qemu(dir: &Path, active: Slot, partition_size: usize) -> QemuBoot {
    let mk = |name: &str, fill: u8| {
        let p = dir.join(name);
        fs::write(&p, vec![fill; partition_size]).unwrap();
        p
    };
    let autoboot = dir.join("autoboot");
    fs::create_dir_all(&autoboot).unwrap();
    fs::write(
        autoboot.join(AUTOBOOT_TXT),
        Autoboot {
            default: active,
            tryboot: active.other(),
        }
        .render(),
    )
    .unwrap();
    let cmdline = dir.join("cmdline");
    fs::write(
        &cmdline,
        format!(
            "console=ttyAMA0 relaybox.root=root-{} panic=10\n",
            active.as_str()
        ),
    )
    .unwrap();
    QemuBoot {
        autoboot_dir: autoboot,
        cmdline,
        slots: [
            SlotPartitions {
                boot: mk("boot-a", 0xa1),
                root: mk("root-a", 0xa2),
            },
            SlotPartitions {
                boot: mk("boot-b", 0xb1),
                root: mk("root-b", 0xb2),
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autoboot_parse_and_render() {
        let shipped = "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n";
        let ab = Autoboot::parse(shipped).unwrap();
        assert_eq!(
            ab,
            Autoboot {
                default: Slot::A,
                tryboot: Slot::B
            }
        );
        assert_eq!(
            ab.render(),
            shipped,
            "same bytes as buildroot/board/common/autoboot.txt"
        );
        let crlf = "[all]\r\nboot_partition=3\r\n";
        assert_eq!(
            Autoboot::parse(crlf).unwrap(),
            Autoboot {
                default: Slot::B,
                tryboot: Slot::A
            }
        );
        assert!(Autoboot::parse("[all]\nboot_partition=5\n").is_err());
        assert!(Autoboot::parse("[tryboot]\nboot_partition=3\n").is_err());
    }

    #[test]
    fn shipped_autoboot_file_parses() {
        let p = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../buildroot/board/common/autoboot.txt"
        );
        let text = fs::read_to_string(p).unwrap();
        assert_eq!(Autoboot::parse(&text).unwrap().default, Slot::A);
    }

    #[test]
    fn qemu_trial_and_commit() {
        let dir = tempfile::tempdir().unwrap();
        let b = fake_qemu(dir.path(), Slot::A, 16);
        assert_eq!(b.active_slot().unwrap(), Slot::A);
        assert!(!b.is_trial().unwrap());
        let (slot, parts) = b.inactive_partitions().unwrap();
        assert_eq!(slot, Slot::B);
        assert_eq!(parts.root, dir.path().join("root-b"));
        assert!(
            b.arm_trial(Slot::A).is_err(),
            "the default slot is no trial"
        );

        b.arm_trial(Slot::B).unwrap();
        assert!(b.autoboot_dir.join(TRYBOOT_FLAG).exists());
        assert!(!b.autoboot_dir.join(".tryboot.flag.tmp").exists());
        // image/qemu boots B once and deletes the flag: B runs as a trial.
        fs::remove_file(b.autoboot_dir.join(TRYBOOT_FLAG)).unwrap();
        fs::write(&b.cmdline, "relaybox.root=root-b\n").unwrap();
        assert!(b.is_trial().unwrap());
        b.commit(Slot::B).unwrap();
        assert!(!b.is_trial().unwrap());
        let text = fs::read_to_string(b.autoboot_dir.join(AUTOBOOT_TXT)).unwrap();
        assert_eq!(
            text,
            "[all]\ntryboot_a_b=1\nboot_partition=3\n[tryboot]\nboot_partition=2\n"
        );
        assert_eq!(b.inactive_partitions().unwrap().0, Slot::A);
        assert_eq!(b.reboot_argument(), None);
    }

    #[test]
    fn pi_state_from_device_tree() {
        let dir = tempfile::tempdir().unwrap();
        let q = fake_qemu(dir.path(), Slot::B, 4);
        let dt = dir.path().join("dt");
        fs::create_dir_all(&dt).unwrap();
        fs::write(dt.join("partition"), 3u32.to_be_bytes()).unwrap();
        fs::write(dt.join("tryboot"), 1u32.to_be_bytes()).unwrap();
        let pi = PiBoot {
            autoboot_dir: q.autoboot_dir.clone(),
            bootloader_dt: dt.clone(),
            slots: q.slots.clone(),
        };
        assert_eq!(pi.active_slot().unwrap(), Slot::B);
        assert!(pi.is_trial().unwrap());
        fs::write(dt.join("tryboot"), 0u32.to_be_bytes()).unwrap();
        assert!(!pi.is_trial().unwrap());
        pi.arm_trial(Slot::A).unwrap();
        assert_eq!(Autoboot::load(&pi.autoboot_dir).unwrap().tryboot, Slot::A);
        assert!(
            !pi.autoboot_dir.join(TRYBOOT_FLAG).exists(),
            "the Pi has no flag file"
        );
        assert_eq!(pi.reboot_argument(), Some("0 tryboot"));
        fs::write(dt.join("partition"), 7u32.to_be_bytes()).unwrap();
        assert!(pi.active_slot().is_err());
    }

    #[test]
    fn partitions_found_by_gpt_name() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        for (dev, name) in [
            ("vda", ""),
            ("vda1", "autoboot"),
            ("vda2", "boot-a"),
            ("vda3", "boot-b"),
            ("vda4", "root-a"),
            ("vda5", "root-b"),
            ("vda6", "data"),
        ] {
            fs::create_dir_all(sys.join(dev)).unwrap();
            let mut u = format!("MAJOR=254\nDEVNAME={dev}\nDEVTYPE=partition\n");
            if !name.is_empty() {
                u.push_str(&format!("PARTN=1\nPARTNAME={name}\n"));
            }
            fs::write(sys.join(dev).join("uevent"), u).unwrap();
        }
        let p = find_partitions(&sys, Path::new("/dev")).unwrap();
        assert_eq!(p[0].boot, Path::new("/dev/vda2"));
        assert_eq!(p[0].root, Path::new("/dev/vda4"));
        assert_eq!(p[1].boot, Path::new("/dev/vda3"));
        assert_eq!(p[1].root, Path::new("/dev/vda5"));
        assert_eq!(
            partition_device(&sys, Path::new("/dev"), "autoboot").unwrap(),
            Path::new("/dev/vda1")
        );
        fs::remove_dir_all(sys.join("vda5")).unwrap();
        let err = find_partitions(&sys, Path::new("/dev")).unwrap_err();
        assert!(err.to_string().contains("root-b"), "{err}");
    }
}
