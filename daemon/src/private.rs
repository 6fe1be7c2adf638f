//! Files and directories only the relay may read (issue 13 point 6): the data directory
//! (mode 0700) and the store file (0600: password hashes, all mail, the DKIM and TURN
//! secrets) are created so and tightened at start when found wider. The other secrets
//! (`admin.json`, the setup code, TLS and ACME keys, the ACME account) are written 0600
//! by their owners, inside the data directory.

use std::fs::Permissions;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of the data directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of a secret file.
pub const FILE_MODE: u32 = 0o600;

/// Make `path` (and missing parents) a directory of mode 0700, or take group and other
/// permissions away from the existing one.
pub fn dir(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)?;
    tighten(path, DIR_MODE)
}

/// Create the file `path` (mode 0600) if it does not exist, or take group and other
/// permissions away from the existing one.
pub fn file(path: &Path) -> io::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => tighten(path, FILE_MODE),
        Err(e) => Err(e),
    }
}

fn tighten(path: &Path, wanted: u32) -> io::Result<()> {
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, Permissions::from_mode(mode & wanted))?;
        tracing::info!(
            "{}: permissions tightened from {mode:04o} to {:04o}",
            path.display(),
            mode & wanted
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn made_private_and_tightened_when_found_open() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("a/data");
        dir(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700, "parents made too");
        std::fs::set_permissions(&data, Permissions::from_mode(0o755)).unwrap();
        dir(&data).unwrap();
        assert_eq!(mode(&data), 0o700);

        let store = data.join("relaybox.redb");
        file(&store).unwrap();
        assert_eq!(mode(&store), 0o600);
        assert_eq!(std::fs::metadata(&store).unwrap().len(), 0);
        std::fs::write(&store, b"kept").unwrap();
        std::fs::set_permissions(&store, Permissions::from_mode(0o644)).unwrap();
        file(&store).unwrap();
        assert_eq!(mode(&store), 0o600);
        assert_eq!(std::fs::read(&store).unwrap(), b"kept", "content untouched");
        // Tighter than wanted stays so.
        std::fs::set_permissions(&store, Permissions::from_mode(0o400)).unwrap();
        file(&store).unwrap();
        assert_eq!(mode(&store), 0o400);
    }

    #[test]
    fn the_store_file_is_private() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s.redb");
        drop(crate::store::Store::open(&path).unwrap());
        assert_eq!(mode(&path), 0o600);
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        // Reopened once the old writer thread has let go of the file (bounded).
        let mut reopened = false;
        for _ in 0..100 {
            if crate::store::Store::open(&path).is_ok() {
                reopened = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(reopened, "store reopens");
        assert_eq!(mode(&path), 0o600, "tightened at the next open");
    }
}
