//! A loop-mounted ext4 file system made and mounted like the appliance's data partition
//! (buildroot/board/common/genimage.cfg and rootfs-overlay/sbin/init): `mkfs.ext4` of a
//! 64 MiB file system with inode tables and journal initialised at once (so with the
//! small-file-system defaults of `mke2fs.conf`: 1 KiB blocks, a 4 MiB journal), grown
//! with `resize2fs` to the whole device as at first boot, mounted with
//! `noatime,commit=60,noinit_itable`. The growth happens before mounting here: the
//! online grow of the image's init needs CAP_SYS_RESOURCE, which root on the project's
//! machines lacks; the resulting layout is the same. It owns the device counters the SD-card phase reads:
//! `/sys/block/<loop>/stat` ([`DevStat`]) and jbd2's journal statistics ([`Jbd2`]), and
//! `syncfs` of the mount (what `sync -f` does). Dropping it unmounts, detaches and
//! removes everything, so an error, a panic or a Ctrl-C leaves nothing behind; a run
//! killed outright is swept up by the next one ([`sweep_stale`]).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// The data partition's mount options (sbin/init and etc/fstab of the image).
pub const MOUNT_OPTIONS: &str = "noatime,commit=60,noinit_itable";
/// The size the image's data file system is made at (`RELAYBOX_DATA_SIZE` of the
/// Raspberry Pi boards) before it is grown at first boot.
pub const MKFS_SIZE: &str = "64M";
/// genimage.cfg's `extraargs`: no lazy initialisation writes later.
pub const MKFS_EXTENDED: &str = "lazy_itable_init=0,lazy_journal_init=0";
/// Prefix of the work directories (`<prefix><pid>-<n>`).
const PREFIX: &str = "relaybox-sdbench-";
/// Longest a mount, `mkfs` or `resize2fs` may take.
const TOOL_TIMEOUT: &str = "120";

/// The counters of `/sys/block/<dev>/stat` (Documentation/block/stat.rst) the phase
/// uses; sectors are 512 bytes whatever the device's block size.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DevStat {
    /// Field 5: write requests completed (after merging).
    pub write_ios: u64,
    /// Field 7: sectors written.
    pub write_sectors: u64,
    /// Field 16: flush requests completed (kernel ≥ 5.5).
    pub flush_ios: u64,
}

impl DevStat {
    pub fn parse(text: &str) -> Result<DevStat> {
        let f: Vec<u64> = text
            .split_whitespace()
            .map(|v| v.parse::<u64>())
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow!("malformed block stat {text:?}: {e}"))?;
        if f.len() < 17 {
            bail!(
                "block stat with {} fields, expected 17 (kernel ≥ 5.5 counts flushes)",
                f.len()
            );
        }
        Ok(DevStat {
            write_ios: f[4],
            write_sectors: f[6],
            flush_ios: f[15],
        })
    }

    pub fn write_bytes(&self) -> u64 {
        self.write_sectors * 512
    }

    /// `self − earlier`.
    pub fn since(&self, earlier: &DevStat) -> DevStat {
        DevStat {
            write_ios: self.write_ios.saturating_sub(earlier.write_ios),
            write_sectors: self.write_sectors.saturating_sub(earlier.write_sectors),
            flush_ios: self.flush_ios.saturating_sub(earlier.flush_ios),
        }
    }
}

/// jbd2's statistics of the file system's journal (`/proc/fs/jbd2/<dev>-8/info`):
/// commits so far and the running average of journal blocks written per commit.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Jbd2 {
    pub transactions: u64,
    /// Average journal blocks written per commit since mount (descriptor and commit
    /// blocks included), as jbd2 prints it (whole blocks).
    pub logged_blocks_avg: u64,
}

impl Jbd2 {
    pub fn parse(text: &str) -> Option<Jbd2> {
        let transactions = text
            .lines()
            .next()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        let logged_blocks_avg = text
            .lines()
            .find(|l| l.contains("logged blocks per transaction"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Some(Jbd2 {
            transactions,
            logged_blocks_avg,
        })
    }
}

/// A mounted loop file system; dropping it tears it down.
pub struct LoopFs {
    dir: PathBuf,
    image: PathBuf,
    pub mount: PathBuf,
    /// `loopN`.
    pub dev: Option<String>,
    mounted: bool,
    /// The file system's block size (statvfs `f_bsize`).
    pub block_size: u64,
    /// `dumpe2fs -h`'s features line.
    pub features: String,
}

impl LoopFs {
    /// A sparse image of `size` bytes under `parent`, made, attached, mounted and grown
    /// like the image's data partition.
    pub fn create(parent: &Path, size: u64, n: usize) -> Result<LoopFs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("the SD-card phase needs root (losetup, mount)");
        }
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
        let dir = parent.join(format!("{PREFIX}{}-{n}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
        }
        std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
        let mut fs = LoopFs {
            image: dir.join("data.ext4"),
            mount: dir.join("mnt"),
            dir,
            dev: None,
            mounted: false,
            block_size: 0,
            features: String::new(),
        };
        File::create(&fs.image)
            .and_then(|f| f.set_len(size))
            .with_context(|| format!("create the sparse image {}", fs.image.display()))?;
        run(
            "mkfs.ext4",
            &[
                "-F",
                "-q",
                "-L",
                "data",
                "-E",
                MKFS_EXTENDED,
                &fs.image.to_string_lossy(),
                MKFS_SIZE,
            ],
        )?;
        // First boot: the file system grows to the whole partition.
        run("resize2fs", &[&fs.image.to_string_lossy()])?;
        let dev = run("losetup", &["-f", "--show", &fs.image.to_string_lossy()])?;
        let name = dev
            .trim()
            .strip_prefix("/dev/")
            .ok_or_else(|| anyhow!("losetup printed {dev:?}"))?
            .to_string();
        fs.dev = Some(name.clone());
        std::fs::create_dir(&fs.mount)?;
        run(
            "mount",
            &[
                "-t",
                "ext4",
                "-o",
                MOUNT_OPTIONS,
                &format!("/dev/{name}"),
                &fs.mount.to_string_lossy(),
            ],
        )?;
        fs.mounted = true;
        fs.block_size = statvfs_bsize(&fs.mount)?;
        fs.features = run("dumpe2fs", &["-h", &format!("/dev/{name}")])
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("Filesystem features:"))
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_default();
        Ok(fs)
    }

    fn dev(&self) -> Result<&str> {
        self.dev.as_deref().ok_or_else(|| anyhow!("not attached"))
    }

    /// The device's counters now.
    pub fn stat(&self) -> Result<DevStat> {
        let path = format!("/sys/block/{}/stat", self.dev()?);
        DevStat::parse(&std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?)
    }

    /// The journal's statistics now, if jbd2 exposes them.
    pub fn jbd2(&self) -> Option<Jbd2> {
        let path = format!("/proc/fs/jbd2/{}-8/info", self.dev().ok()?);
        Jbd2::parse(&std::fs::read_to_string(path).ok()?)
    }

    /// `syncfs(2)` of the mounted file system (what `sync -f MOUNT` does): every dirty
    /// page written, the journal committed, the device flushed.
    pub fn sync(&self) -> Result<()> {
        let dir =
            File::open(&self.mount).with_context(|| format!("open {}", self.mount.display()))?;
        // SAFETY: syncfs on a descriptor this function owns.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error()).context("syncfs");
        }
        Ok(())
    }

    /// Sync, then read the counters: the start or end of a measured window.
    pub fn synced_stat(&self) -> Result<DevStat> {
        self.sync()?;
        self.stat()
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            self.mounted = !unmount(&self.mount);
        }
        if let Some(dev) = self.dev.take() {
            let _ = run("losetup", &["-d", &format!("/dev/{dev}")]);
        }
        if !self.mounted {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!(
                "bench: {} is still mounted; left {} in place",
                self.mount.display(),
                self.dir.display()
            );
        }
    }
}

/// Unmount, retrying while a process that just died still holds files (bounded), then
/// lazily. Whether the mount is gone.
fn unmount(mount: &Path) -> bool {
    let m = mount.to_string_lossy();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if run("umount", &[&m]).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    run("umount", &["-l", &m]).is_ok()
}

/// Remove what runs that ended without cleaning up (killed outright) left under
/// `parent`: their mounts, loop devices and directories. Runs still alive are left
/// alone. Returns a line per thing removed.
pub fn sweep_stale(parent: &Path) -> Vec<String> {
    let mut done = Vec::new();
    let Ok(entries) = std::fs::read_dir(parent) else {
        return done;
    };
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = e.path();
        let mnt = dir.join("mnt");
        let mnt_text = mnt.to_string_lossy().to_string();
        if mounts
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(mnt_text.as_str()))
        {
            unmount(&mnt);
            done.push(format!("unmounted {mnt_text}"));
        }
        let image = dir.join("data.ext4");
        for dev in loops_backed_by(&image) {
            let _ = run("losetup", &["-d", &format!("/dev/{dev}")]);
            done.push(format!("detached /dev/{dev}"));
        }
        if std::fs::remove_dir_all(&dir).is_ok() {
            done.push(format!("removed {}", dir.display()));
        }
    }
    done
}

/// Loop devices whose backing file is `image`.
fn loops_backed_by(image: &Path) -> Vec<String> {
    let want = image.to_string_lossy().to_string();
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let backing = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            // A deleted backing file reads as "PATH (deleted)".
            let backing = backing.trim().trim_end_matches(" (deleted)");
            (name.starts_with("loop") && backing == want).then_some(name)
        })
        .collect()
}

fn statvfs_bsize(path: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: statvfs with a valid C string and a zeroed out-struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error()).context("statvfs");
    }
    Ok(st.f_bsize as u64)
}

/// Run a tool under `timeout`; its stdout, or an error with its stderr.
fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("timeout")
        .arg(TOOL_TIMEOUT)
        .arg(cmd)
        .args(args)
        .output()
        .with_context(|| format!("run {cmd}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_stat_fields() {
        // Documentation/block/stat.rst: 17 fields since 5.5.
        let s = DevStat::parse(
            "     120        3     4000       50     900       10    70000     800        0     300     850       0        0        0        0      45       20\n",
        )
        .expect("parse");
        assert_eq!(
            s,
            DevStat {
                write_ios: 900,
                write_sectors: 70000,
                flush_ios: 45
            }
        );
        assert_eq!(s.write_bytes(), 70000 * 512);
        let later = DevStat {
            write_ios: 910,
            write_sectors: 70016,
            flush_ios: 46,
        };
        assert_eq!(
            later.since(&s),
            DevStat {
                write_ios: 10,
                write_sectors: 16,
                flush_ios: 1
            }
        );
        assert!(DevStat::parse("1 2 3 4 5 6 7 8 9 10 11").is_err());
        assert!(DevStat::parse("x").is_err());
    }

    #[test]
    fn jbd2_info() {
        let text = "1203 transactions (1201 requested), each up to 8192 blocks\naverage: \n  0ms waiting for transaction\n  4ms running transaction\n  2476us average transaction commit time\n  5 handles per transaction\n  3 blocks per transaction\n  4 logged blocks per transaction\n";
        assert_eq!(
            Jbd2::parse(text),
            Some(Jbd2 {
                transactions: 1203,
                logged_blocks_avg: 4
            })
        );
        assert_eq!(Jbd2::parse(""), None);
    }
}
