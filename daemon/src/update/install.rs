//! Writing a verified bundle into the inactive slot (OTA-4, OTA-7) and arming its trial boot.
//!
//! Each image is streamed from the bundle into its partition while hashing, fsynced, compared
//! with the manifest, then read back from the device (page cache dropped first) and hashed
//! again. Only after every image of the slot checks out is the trial armed; a power cut before
//! that leaves `autoboot.txt` and the trial flag untouched, so the old slot boots.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::boot::BootControl;
use super::bundle::{self, CHUNK, Entry};
use super::manifest::{ImageEntry, ImageKind, Manifest};
use super::{Slot, UpdateError};

/// Progress of [`install_with_progress`]: bytes written so far and the total to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

/// Installs `manifest`'s images for the inactive slot from `bundle` and arms one trial boot
/// of it. `manifest` must come from [`super::verify`] of the same file; the images are hashed
/// again while written, so a bundle changed since then fails with a hash mismatch.
/// Returns the slot armed for the trial; the caller reboots (with
/// [`BootControl::reboot_argument`]).
pub fn install(
    bundle: &Path,
    manifest: &Manifest,
    boot: &dyn BootControl,
) -> Result<Slot, UpdateError> {
    install_with_progress(bundle, manifest, boot, &mut |_| {})
}

/// [`install`] reporting progress after every written piece (for the status page).
pub fn install_with_progress(
    bundle_path: &Path,
    manifest: &Manifest,
    boot: &dyn BootControl,
    progress: &mut dyn FnMut(Progress),
) -> Result<Slot, UpdateError> {
    // During a trial the inactive slot is the fallback: never overwrite it (OTA-7, BOOT-4).
    if boot.is_trial()? {
        return Err(UpdateError::Refused(
            "a trial boot is running; it must be committed or rolled back first".into(),
        ));
    }
    let active = boot.active_slot()?;
    let (target, parts) = boot.inactive_partitions()?;
    let active_parts = boot.partitions(active)?;
    // OTA-7: the active slot's partitions are never opened for writing.
    for p in [&parts.boot, &parts.root] {
        if same_file(p, &active_parts.boot) || same_file(p, &active_parts.root) {
            return Err(UpdateError::Refused(format!(
                "{} belongs to the running slot {}",
                p.display(),
                active.as_str()
            )));
        }
    }
    let entries = bundle::entries(bundle_path)?;
    // Plan everything (presence, sizes, capacities) before the first byte is written.
    let mut plan: Vec<(&ImageEntry, Entry, &Path)> = Vec::new();
    for img in manifest.images_for(target) {
        let entry = entries
            .iter()
            .find(|e| e.name == img.file)
            .cloned()
            .ok_or_else(|| UpdateError::MissingImage(img.label()))?;
        if entry.size != img.size {
            return Err(UpdateError::SizeMismatch {
                image: img.label(),
                expected: img.size,
                found: entry.size,
            });
        }
        let dest = match img.name {
            ImageKind::Boot => parts.boot.as_path(),
            ImageKind::Root => parts.root.as_path(),
        };
        let capacity = device_size(dest)?;
        if img.size > capacity {
            return Err(UpdateError::TooLarge {
                image: img.label(),
                size: img.size,
                partition: dest.to_path_buf(),
                capacity,
            });
        }
        plan.push((img, entry, dest));
    }
    let total: u64 = plan.iter().map(|(i, _, _)| i.size).sum();
    let mut done = 0u64;
    tracing::info!(
        slot = target.as_str(),
        build = manifest.build,
        bytes = total,
        "writing update to the inactive slot"
    );
    for (img, entry, dest) in &plan {
        write_image(bundle_path, img, entry, dest, &mut |n| {
            done += n;
            progress(Progress { done, total });
        })?;
        read_back(img, dest)?;
    }
    boot.arm_trial(target)?;
    tracing::info!(slot = target.as_str(), "update written; trial boot armed");
    Ok(target)
}

/// Streams one image into `dest` while hashing (OTA-4), then fsyncs.
fn write_image(
    bundle_path: &Path,
    img: &ImageEntry,
    entry: &Entry,
    dest: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<(), UpdateError> {
    let mut src =
        File::open(bundle_path).map_err(|e| UpdateError::io("cannot open", bundle_path, e))?;
    src.seek(SeekFrom::Start(entry.offset))
        .map_err(|e| UpdateError::io("cannot seek", bundle_path, e))?;
    let mut src = BufReader::with_capacity(CHUNK, src).take(img.size);
    // No truncate, no create: `dest` is a partition (a plain file only in tests).
    let mut out = OpenOptions::new()
        .write(true)
        .open(dest)
        .map_err(|e| UpdateError::io("cannot open for writing", dest, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut written = 0u64;
    loop {
        let n = src
            .read(&mut buf)
            .map_err(|e| UpdateError::io("cannot read", bundle_path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| UpdateError::io("cannot write", dest, e))?;
        written += n as u64;
        progress(n as u64);
    }
    if written != img.size {
        return Err(UpdateError::Truncated(format!(
            "{} ends after {written} of {} bytes",
            img.file, img.size
        )));
    }
    out.sync_all()
        .map_err(|e| UpdateError::io("cannot fsync", dest, e))?;
    if h.finalize().as_slice() != img.digest() {
        return Err(UpdateError::HashMismatch(img.label()));
    }
    Ok(())
}

/// Reads the written bytes back from the device and compares their hash with the manifest.
fn read_back(img: &ImageEntry, dest: &Path) -> Result<(), UpdateError> {
    let f = File::open(dest).map_err(|e| UpdateError::io("cannot open", dest, e))?;
    // Best effort: drop the cached pages so the read comes from the medium.
    let _ = nix::fcntl::posix_fadvise(
        &f,
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
    let mut r = BufReader::with_capacity(CHUNK, f).take(img.size);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = r
            .read(&mut buf)
            .map_err(|e| UpdateError::io("cannot read back", dest, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    if h.finalize().as_slice() != img.digest() {
        return Err(UpdateError::ReadBack {
            image: img.label(),
            partition: dest.to_path_buf(),
        });
    }
    Ok(())
}

/// Size of a block device or file (seek to its end).
fn device_size(p: &Path) -> Result<u64, UpdateError> {
    let mut f = File::open(p).map_err(|e| UpdateError::io("cannot open", p, e))?;
    f.seek(SeekFrom::End(0))
        .map_err(|e| UpdateError::io("cannot size", p, e))
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => {
            (x.dev() == y.dev() && x.ino() == y.ino()) || (x.rdev() != 0 && x.rdev() == y.rdev())
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::boot::{Autoboot, TRYBOOT_FLAG, fake_qemu};
    use crate::update::bundle::{MANIFEST, SIGNATURE, sha256_hex, write_tar};
    use std::fs;

    const PART: usize = 8192;

    fn image(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
            .collect()
    }

    /// A bundle with per-slot boot images and one root; the manifest is not signed
    /// (install takes an already verified manifest).
    fn bundle(dir: &Path, root: &[u8]) -> (std::path::PathBuf, Manifest) {
        let (ba, bb) = (image(3, 1000), image(5, 1500));
        let m = Manifest {
            format: 1,
            compatible: "relaybox-test".into(),
            version: "2".into(),
            build: 2,
            images: vec![
                ImageEntry {
                    name: ImageKind::Boot,
                    slot: Some(Slot::A),
                    file: "boot-a.vfat".into(),
                    size: ba.len() as u64,
                    sha256: sha256_hex(&ba),
                },
                ImageEntry {
                    name: ImageKind::Boot,
                    slot: Some(Slot::B),
                    file: "boot-b.vfat".into(),
                    size: bb.len() as u64,
                    sha256: sha256_hex(&bb),
                },
                ImageEntry {
                    name: ImageKind::Root,
                    slot: None,
                    file: "root.squashfs".into(),
                    size: root.len() as u64,
                    sha256: sha256_hex(root),
                },
            ],
        };
        let json = serde_json::to_vec(&m).unwrap();
        let tar = write_tar(&[
            (MANIFEST, &json),
            (SIGNATURE, b"unsigned"),
            ("boot-a.vfat", &ba),
            ("boot-b.vfat", &bb),
            ("root.squashfs", root),
        ]);
        let p = dir.join("bundle.tar");
        fs::write(&p, tar).unwrap();
        (p, m)
    }

    #[test]
    fn writes_only_the_inactive_slot_and_arms_the_trial() {
        for active in [Slot::A, Slot::B] {
            let dir = tempfile::tempdir().unwrap();
            let boot = fake_qemu(dir.path(), active, PART);
            let root = image(7, 5000);
            let (b, m) = bundle(dir.path(), &root);
            let target = active.other();
            let before_active: Vec<Vec<u8>> = {
                let p = boot.partitions(active).unwrap();
                vec![fs::read(&p.boot).unwrap(), fs::read(&p.root).unwrap()]
            };
            let mut last = None;
            let slot =
                install_with_progress(&b, &m, &boot, &mut |p| last = Some(p)).expect("install");
            assert_eq!(slot, target);
            let total = if target == Slot::A {
                1000 + 5000
            } else {
                1500 + 5000
            };
            assert_eq!(last, Some(Progress { done: total, total }));

            // OTA-7: the running slot is byte-identical.
            let p = boot.partitions(active).unwrap();
            assert_eq!(fs::read(&p.boot).unwrap(), before_active[0]);
            assert_eq!(fs::read(&p.root).unwrap(), before_active[1]);
            // The target got its own boot image and the root; the rest of the partition is
            // left as it was and its size unchanged.
            let t = boot.partitions(target).unwrap();
            let want_boot = if target == Slot::A {
                image(3, 1000)
            } else {
                image(5, 1500)
            };
            let got_boot = fs::read(&t.boot).unwrap();
            assert_eq!(got_boot.len(), PART);
            assert_eq!(&got_boot[..want_boot.len()], want_boot.as_slice());
            let fill = if target == Slot::A { 0xa1 } else { 0xb1 };
            assert!(got_boot[want_boot.len()..].iter().all(|&x| x == fill));
            let got_root = fs::read(&t.root).unwrap();
            assert_eq!(&got_root[..5000], root.as_slice());
            // Trial armed: flag present, [tryboot] names the target, default unchanged.
            assert!(boot.autoboot_dir.join(TRYBOOT_FLAG).exists());
            let ab = Autoboot::load(&boot.autoboot_dir).unwrap();
            assert_eq!((ab.default, ab.tryboot), (active, target));
        }
    }

    #[test]
    fn refuses_before_writing_anything() {
        let dir = tempfile::tempdir().unwrap();
        let boot = fake_qemu(dir.path(), Slot::A, PART);
        let snapshot = |boot: &crate::update::boot::QemuBoot| -> Vec<Vec<u8>> {
            [Slot::A, Slot::B]
                .iter()
                .flat_map(|s| {
                    let p = boot.partitions(*s).unwrap();
                    [fs::read(p.boot).unwrap(), fs::read(p.root).unwrap()]
                })
                .collect()
        };
        let before = snapshot(&boot);

        // Too large for the partition.
        let (b, m) = bundle(dir.path(), &image(9, PART + 1));
        let err = install(&b, &m, &boot).unwrap_err().to_string();
        assert!(err.contains("does not fit"), "{err}");

        // During a trial boot (running B, default still A) the other slot is the fallback.
        let (b, m) = bundle(dir.path(), &image(9, 100));
        fs::write(&boot.cmdline, "relaybox.root=root-b\n").unwrap();
        let err = install(&b, &m, &boot).unwrap_err().to_string();
        assert!(err.contains("trial boot is running"), "{err}");
        fs::write(&boot.cmdline, "relaybox.root=root-a\n").unwrap();

        // A slot whose partition is the running one's (misconfiguration) is refused.
        let mut bad = fake_qemu(dir.path(), Slot::A, PART);
        bad.slots[1].root = bad.slots[0].root.clone();
        let err = install(&b, &m, &bad).unwrap_err().to_string();
        assert!(err.contains("running slot"), "{err}");

        assert_eq!(snapshot(&boot), before);
        assert!(!boot.autoboot_dir.join(TRYBOOT_FLAG).exists());
    }

    #[test]
    fn changed_bundle_is_caught_and_not_armed() {
        let dir = tempfile::tempdir().unwrap();
        let boot = fake_qemu(dir.path(), Slot::A, PART);
        let root = image(7, 3000);
        let (b, m) = bundle(dir.path(), &root);
        // Flip one byte of the root image inside the bundle after "verification".
        let entries = bundle::entries(&b).unwrap();
        let e = entries.iter().find(|e| e.name == "root.squashfs").unwrap();
        let mut bytes = fs::read(&b).unwrap();
        bytes[usize::try_from(e.offset).unwrap() + 10] ^= 0xff;
        fs::write(&b, bytes).unwrap();
        let err = install(&b, &m, &boot).unwrap_err().to_string();
        assert_eq!(err, "image root: hash mismatch");
        assert!(!boot.autoboot_dir.join(TRYBOOT_FLAG).exists());
        assert_eq!(Autoboot::load(&boot.autoboot_dir).unwrap().tryboot, Slot::B);
    }
}
