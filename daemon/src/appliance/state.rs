//! The appliance's own small persisted state in `<data_dir>/admin.json`: the admin
//! password hash and the key that signs session cookies. Written rarely (claim, password
//! change), always atomically (temp file, fsync, rename, fsync directory).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File name inside the data directory.
pub const STATE_FILE: &str = "admin.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AdminState {
    /// SHA512-CRYPT hash of the admin password; `None` = not claimed yet.
    pub password_hash: Option<String>,
    /// Hex of 32 random bytes; replaced with every password change (ends all sessions).
    pub session_key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path}: not valid admin state ({err}); move it away to start the setup again")]
    Parse {
        path: PathBuf,
        err: serde_json::Error,
    },
}

/// 32 random bytes as lower-case hex.
pub fn random_key() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl AdminState {
    /// Read the state, or a fresh unclaimed one when the file does not exist.
    pub fn load(data_dir: &Path) -> Result<AdminState, StateError> {
        let path = data_dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|err| StateError::Parse { path, err })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AdminState {
                password_hash: None,
                session_key: random_key(),
            }),
            Err(err) => Err(StateError::Io { path, err }),
        }
    }

    pub fn save(&self, data_dir: &Path) -> Result<(), StateError> {
        let json = serde_json::to_vec_pretty(self).expect("state serializes");
        write_atomically(&data_dir.join(STATE_FILE), &json, 0o600)
    }
}

/// Replace `path` with `data` completely or not at all ([`crate::files::write_atomic`]).
pub fn write_atomically(path: &Path, data: &[u8], mode: u32) -> Result<(), StateError> {
    crate::files::write_atomic(path, data, mode).map_err(|err| StateError::Io {
        path: path.to_path_buf(),
        err,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_state_is_unclaimed_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let s = AdminState::load(dir.path()).unwrap();
        assert!(s.password_hash.is_none());
        assert_eq!(s.session_key.len(), 64);
        let claimed = AdminState {
            password_hash: Some("$6$x$y".into()),
            ..s
        };
        claimed.save(dir.path()).unwrap();
        assert_eq!(AdminState::load(dir.path()).unwrap(), claimed);
        // No temp file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(STATE_FILE)]);
    }

    #[test]
    fn damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), "{not json").unwrap();
        let err = AdminState::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(STATE_FILE), "{err}");
    }
}
