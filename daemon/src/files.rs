//! Durable file replacement: the one way the relay writes a small file that must survive a
//! power cut whole (certificates, keys, the appliance and update state, the boot flags).

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Replace `path` with `data` so that a reader — or the next boot after a power cut — sees
/// the old content or the new one, never a part: a temporary file beside it (mode `mode`),
/// `fsync`, rename over `path`, `fsync` of the directory. A failure removes the temporary
/// file and leaves `path` as it was.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let write = || -> io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Remove `path` if it exists and `fsync` its directory (the counterpart of
/// [`write_atomic`]).
pub fn remove_durably(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_dir(parent(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// `fsync` a directory, so that a rename or removal in it survives a power cut.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_whole_with_the_mode_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key.pem");
        std::fs::write(&p, b"old").unwrap();
        write_atomic(&p, b"new content", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new content");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("key.pem")]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a directory: the rename fails after the temporary file was made.
        let p = dir.path().join("sub");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("inside"), b"x").unwrap();
        assert!(write_atomic(&p, b"data", 0o644).is_err());
        assert!(p.is_dir());
        assert!(!dir.path().join(".sub.tmp").exists());
    }

    #[test]
    fn remove_durably_is_quiet_about_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("flag");
        remove_durably(&p).unwrap();
        std::fs::write(&p, b"1").unwrap();
        remove_durably(&p).unwrap();
        assert!(!p.exists());
    }
}
