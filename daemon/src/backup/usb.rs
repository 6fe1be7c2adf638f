//! USB drives as a backup target (`backup_dir = usb`): finding a USB mass-storage
//! partition in sysfs, and mounting it under a private directory only while a backup is
//! written (mount(2); vfat, exFAT or ext4; no device files, no set-uid, nothing
//! executable), unmounted afterwards (which writes everything out).

use std::path::{Path, PathBuf};

/// File systems tried, in this order.
const FILE_SYSTEMS: &[&str] = &["vfat", "exfat", "ext4"];

/// The first USB mass-storage partition: `<dev>/sdXN` for the first disk `sdX` under
/// `<sysfs>/block` that is removable or sits on a USB bus (its device link goes through
/// a `usb` node), its first partition (or the whole disk when it has none: a stick
/// formatted without a partition table). `Err` says in plain words that none is there.
pub fn find(sysfs: &Path, dev: &Path) -> Result<PathBuf, String> {
    let none = || "no USB drive is plugged in: plug one in (FAT, exFAT or ext4)".to_string();
    let block = sysfs.join("block");
    let mut disks: Vec<String> = std::fs::read_dir(&block)
        .map_err(|_| none())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("sd"))
        .collect();
    disks.sort();
    for disk in disks {
        let dir = block.join(&disk);
        let removable =
            std::fs::read_to_string(dir.join("removable")).is_ok_and(|t| t.trim() == "1");
        let on_usb = std::fs::canonicalize(&dir).is_ok_and(|p| {
            p.components()
                .any(|c| c.as_os_str().to_string_lossy().starts_with("usb"))
        });
        if !removable && !on_usb {
            continue;
        }
        let size = |d: &Path| {
            std::fs::read_to_string(d.join("size"))
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        if size(&dir) == 0 {
            // A card reader without a card.
            continue;
        }
        let mut parts: Vec<String> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.path().join("partition").exists())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        parts.sort_by_key(|p| {
            std::fs::read_to_string(dir.join(p).join("partition"))
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
                .unwrap_or(u32::MAX)
        });
        let chosen = parts.into_iter().next().unwrap_or(disk);
        return Ok(dev.join(chosen));
    }
    Err(none())
}

/// Mount `device` at `mount` (made private, 0700), run `f` with the mount point, then
/// unmount, also when `f` failed (a mount left by a crash is undone by the next run).
pub fn with_mounted<T>(
    device: &Path,
    mount: &Path,
    f: impl FnOnce(&Path) -> T,
) -> Result<T, String> {
    use nix::mount::{MntFlags, MsFlags};
    crate::private::dir(mount)
        .map_err(|e| format!("cannot make the mount point {}: {e}", mount.display()))?;
    // A mount left from an interrupted run.
    let _ = nix::mount::umount2(mount, MntFlags::MNT_DETACH);
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_NOATIME;
    let mut last = None;
    let mut mounted = false;
    for fs in FILE_SYSTEMS {
        match nix::mount::mount(Some(device), mount, Some(*fs), flags, None::<&str>) {
            Ok(()) => {
                mounted = true;
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    if !mounted {
        let why = match last {
            Some(nix::errno::Errno::EPERM) | Some(nix::errno::Errno::EACCES) => {
                "the relay may not mount drives (it needs to run as root)".to_string()
            }
            Some(nix::errno::Errno::ENOENT) | Some(nix::errno::Errno::ENXIO) => {
                "the drive is gone".to_string()
            }
            _ => "it holds no FAT, exFAT or ext4 file system".to_string(),
        };
        return Err(format!(
            "cannot use the USB drive {}: {why}",
            device.display()
        ));
    }
    let out = f(mount);
    // Unmounting writes everything out; a busy mount is detached.
    if let Err(e) = nix::mount::umount(mount) {
        tracing::warn!("unmounting the backup drive: {e}; detaching it");
        let _ = nix::mount::umount2(mount, MntFlags::MNT_DETACH);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake sysfs: `block/<disk>` links into `devices/...`, with `removable`, `size`
    /// and partitions.
    fn disk(sys: &Path, name: &str, device_path: &str, removable: bool, parts: &[&str]) {
        let real = sys
            .join("devices")
            .join(device_path)
            .join("block")
            .join(name);
        std::fs::create_dir_all(&real).unwrap();
        std::fs::write(
            real.join("removable"),
            if removable { "1\n" } else { "0\n" },
        )
        .unwrap();
        std::fs::write(real.join("size"), "1000\n").unwrap();
        for (i, p) in parts.iter().enumerate() {
            std::fs::create_dir_all(real.join(p)).unwrap();
            std::fs::write(real.join(p).join("partition"), format!("{}\n", i + 1)).unwrap();
        }
        std::fs::create_dir_all(sys.join("block")).unwrap();
        std::os::unix::fs::symlink(&real, sys.join("block").join(name)).unwrap();
    }

    #[test]
    fn finds_the_first_usb_partition_and_skips_internal_disks() {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path();
        let dev = Path::new("/dev");
        // Nothing there.
        assert!(find(sys, dev).unwrap_err().contains("no USB drive"));
        // An internal SATA disk, not removable: not a target.
        disk(
            sys,
            "sda",
            "pci0000:00/0000:00:1f.2/ata1/host0",
            false,
            &["sda1"],
        );
        disk(sys, "mmcblk0", "platform/mmc", true, &["mmcblk0p1"]);
        assert!(find(sys, dev).is_err());
        // A USB stick (not flagged removable, as many are not): its first partition.
        disk(
            sys,
            "sdb",
            "pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/host2/target2:0:0/2:0:0:0",
            false,
            &["sdb1", "sdb2"],
        );
        assert_eq!(find(sys, dev).unwrap(), dev.join("sdb1"));
    }

    #[test]
    fn a_removable_disk_without_partitions_is_used_whole_and_an_empty_reader_skipped() {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path();
        let dev = Path::new("/dev");
        disk(sys, "sdc", "platform/reader", true, &[]);
        std::fs::write(sys.join("devices/platform/reader/block/sdc/size"), "0\n").unwrap();
        assert!(find(sys, dev).is_err(), "a card reader without a card");
        disk(sys, "sdd", "platform/stick", true, &[]);
        assert_eq!(find(sys, dev).unwrap(), dev.join("sdd"));
    }
}
