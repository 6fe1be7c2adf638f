//! Factory reset (button held 10 s): the config loses its `mail_domain` (the box starts
//! in setup mode again), and everything the relay made in the data directory goes:
//! accounts and messages (the store), the admin password, certificates, keys, the zone
//! file. Other config lines (data directory, LED, button, listeners) and the image
//! itself stay. Then the daemon starts over in a fresh process.

use std::path::{Path, PathBuf};

/// What the data directory holds that a reset removes (files and directories).
const WIPED: &[&str] = &[
    crate::server::STORE_FILE,
    super::state::STATE_FILE,
    "acme",
    "tls",
    "dns.zone",
    "setup-code",
];

#[derive(Debug, thiserror::Error)]
#[error("factory reset: {path}: {err}")]
pub struct ResetError {
    pub path: PathBuf,
    pub err: std::io::Error,
}

/// Rewrite the config without `mail_domain` (atomically), then remove the relay's data.
/// The config is changed first: if the removal stops half-way, the box still comes up
/// in setup mode and a second reset finishes the job.
pub fn wipe(config_path: Option<&Path>, data_dir: &Path) -> Result<(), ResetError> {
    if let Some(path) = config_path {
        let err = |err| ResetError {
            path: path.to_path_buf(),
            err,
        };
        let text = std::fs::read_to_string(path).map_err(err)?;
        let factory = super::configfile::remove_mail_domain(&text);
        super::state::write_atomically(path, factory.as_bytes(), 0o644).map_err(|e| {
            ResetError {
                path: path.to_path_buf(),
                err: std::io::Error::other(e.to_string()),
            }
        })?;
    }
    for name in WIPED {
        let path = data_dir.join(name);
        let result = match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
        };
        result.map_err(|err| ResetError { path, err })?;
    }
    if let Ok(dir) = std::fs::File::open(data_dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Replace this process with a fresh start of the same command line (listeners are
/// close-on-exec, so the new process binds them again). Returns only on failure.
pub fn restart() -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    std::process::Command::new("/proc/self/exe")
        .args(args)
        .exec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wipe_removes_relay_data_and_the_domain_only() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("acme")).unwrap();
        std::fs::write(data.join("acme/cert.pem"), "x").unwrap();
        std::fs::write(data.join(crate::server::STORE_FILE), "db").unwrap();
        std::fs::write(data.join("admin.json"), "{}").unwrap();
        std::fs::write(data.join("keep-me"), "operator's file").unwrap();
        let ini = dir.path().join("chatmail.ini");
        std::fs::write(
            &ini,
            "[params]\nmail_domain = chat.example.org\nled = sysfs:ACT\n",
        )
        .unwrap();
        wipe(Some(&ini), &data).unwrap();
        assert_eq!(
            std::fs::read_to_string(&ini).unwrap(),
            "[params]\nled = sysfs:ACT\n"
        );
        let mut left: Vec<_> = std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, vec!["keep-me"]);
        // Idempotent: a second reset on the wiped box succeeds.
        wipe(Some(&ini), &data).unwrap();
    }
}
