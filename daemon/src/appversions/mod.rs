//! The value of the IMAP METADATA entry `/shared/vendor/deltachat/appversions`: which
//! client versions exist and where to get them (upstream chatmail relay 1.12; read by
//! Delta Chat core ≥ 2.6x at login and with each TURN refresh, `get_app_version`).
//!
//! A built-in document ships with each Relaybox release ([`BUILT_IN`]); a file
//! [`FILE_NAME`] in `data_dir` replaces it. The file is checked against the schema the
//! core parses (`clients[].clientId`, `clients[].sources[]` with `sourceId`,
//! `versionInteger` (unsigned 32-bit), `versionString`, `downloadUrl` (https URL)); a
//! bad file is logged once per change and the built-in is served. The value travels
//! compact, on one line.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::Value;

/// The replacement file in `data_dir`.
pub const FILE_NAME: &str = "appversions.json";
/// Largest replacement file read (the built-in is a few hundred bytes).
pub const MAX_FILE_BYTES: u64 = 64 * 1024;

/// The document shipped with this release.
pub const BUILT_IN: &str = include_str!("default.json");

/// Why a replacement file is not served.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Invalid {
    #[error("cannot read it: {0}")]
    Read(String),
    #[error("larger than {MAX_FILE_BYTES} bytes")]
    TooLarge,
    #[error("not JSON: {0}")]
    Json(String),
    /// The path of the offending field and what it should be.
    #[error("{0} must be {1}")]
    Field(String, &'static str),
}

/// Check `text` against the schema the core parses; the compact one-line form when it
/// fits. Fields the schema does not name are kept (the core ignores them; newer
/// clients may read them).
pub fn validate(text: &str) -> Result<String, Invalid> {
    let doc: Value = serde_json::from_str(text).map_err(|e| Invalid::Json(e.to_string()))?;
    let field = |path: String, what| Invalid::Field(path, what);
    let non_empty = |v: &Value, path: String| match v.as_str() {
        Some(s) if !s.trim().is_empty() => Ok(()),
        _ => Err(field(path, "a non-empty string")),
    };
    if !doc.is_object() {
        return Err(field("the document".into(), "an object"));
    }
    let clients = doc["clients"]
        .as_array()
        .ok_or_else(|| field("clients".into(), "an array"))?;
    for (i, c) in clients.iter().enumerate() {
        non_empty(&c["clientId"], format!("clients[{i}].clientId"))?;
        let sources = c["sources"]
            .as_array()
            .ok_or_else(|| field(format!("clients[{i}].sources"), "an array"))?;
        for (j, s) in sources.iter().enumerate() {
            let at = format!("clients[{i}].sources[{j}]");
            non_empty(&s["sourceId"], format!("{at}.sourceId"))?;
            if s["versionInteger"]
                .as_u64()
                .is_none_or(|v| v > u64::from(u32::MAX))
            {
                return Err(field(
                    format!("{at}.versionInteger"),
                    "a whole number from 0 to 4294967295",
                ));
            }
            non_empty(&s["versionString"], format!("{at}.versionString"))?;
            let url = s["downloadUrl"].as_str().unwrap_or("");
            if url.len() <= "https://".len()
                || !url.starts_with("https://")
                || url.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(field(format!("{at}.downloadUrl"), "an https:// URL"));
            }
        }
    }
    serde_json::to_string(&doc).map_err(|e| Invalid::Json(e.to_string()))
}

/// The built-in document, compact.
pub fn built_in() -> String {
    validate(BUILT_IN).expect("the built-in appversions document fits its schema")
}

/// What was read from the file last: its identity and the value to serve.
struct Cached {
    path: PathBuf,
    stamp: Option<(SystemTime, u64)>,
    value: String,
}

static CACHE: Mutex<Option<Cached>> = Mutex::new(None);

/// The value to serve for a relay whose data directory is `data_dir`: the file when
/// present and valid, else the built-in. The file is read again when its modification
/// time or size changes (no restart needed); a bad file is logged once per change.
pub fn value(data_dir: &Path) -> String {
    let path = data_dir.join(FILE_NAME);
    let stamp = std::fs::metadata(&path)
        .ok()
        .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = cache.as_ref()
        && c.path == path
        && c.stamp == stamp
    {
        return c.value.clone();
    }
    let value = match stamp {
        None => built_in(),
        Some(_) => match read(&path) {
            Ok(v) => {
                tracing::info!(file = %path.display(), "serving appversions from the file");
                v
            }
            Err(e) => {
                tracing::warn!(
                    file = %path.display(),
                    "appversions file ignored, serving the built-in document: {e}"
                );
                built_in()
            }
        },
    };
    *cache = Some(Cached {
        path,
        stamp,
        value: value.clone(),
    });
    value
}

fn read(path: &Path) -> Result<String, Invalid> {
    let meta = std::fs::metadata(path).map_err(|e| Invalid::Read(e.to_string()))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(Invalid::TooLarge);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Invalid::Read(e.to_string()))?;
    validate(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_is_compact_and_has_clients() {
        let v = built_in();
        assert!(!v.contains('\n') && !v.contains(": "), "{v}");
        let doc: serde_json::Value = serde_json::from_str(&v).unwrap();
        let c = &doc["clients"][0];
        assert_eq!(c["clientId"], "deltachat");
        assert_eq!(c["sources"][0]["sourceId"], "gplay");
        assert!(c["sources"][0]["versionInteger"].as_u64().unwrap() > 0);
    }

    #[test]
    fn schema_rules() {
        assert_eq!(
            validate("{\n  \"clients\": []\n}").unwrap(),
            "{\"clients\":[]}"
        );
        // A newline inside a value stays escaped: the value is one line.
        let v = validate(r#"{"clients":[{"clientId":"one\ntwo","sources":[]}]}"#).unwrap();
        assert_eq!(v, r#"{"clients":[{"clientId":"one\ntwo","sources":[]}]}"#);
        for bad in [
            "bad json",
            "[]",
            "{}",
            r#"{"clients":{}}"#,
            r#"{"clients":[{"sources":[]}]}"#,
            r#"{"clients":[{"clientId":"","sources":[]}]}"#,
            r#"{"clients":[{"clientId":"d","sources":[{"sourceId":"g","versionInteger":-1,"versionString":"1","downloadUrl":"https://x"}]}]}"#,
            r#"{"clients":[{"clientId":"d","sources":[{"sourceId":"g","versionInteger":4294967296,"versionString":"1","downloadUrl":"https://x"}]}]}"#,
            r#"{"clients":[{"clientId":"d","sources":[{"sourceId":"g","versionInteger":"7","versionString":"1","downloadUrl":"https://x"}]}]}"#,
            r#"{"clients":[{"clientId":"d","sources":[{"sourceId":"g","versionInteger":7,"versionString":"1","downloadUrl":"http://x"}]}]}"#,
            r#"{"clients":[{"clientId":"d","sources":[{"sourceId":"g","versionInteger":7,"versionString":"1"}]}]}"#,
        ] {
            assert!(validate(bad).is_err(), "accepted: {bad}");
        }
    }

    #[test]
    fn file_replaces_and_bad_file_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(value(dir.path()), built_in());
        let good = r#"{"clients":[{"clientId":"deltachat","sources":[{"sourceId":"fdroid","versionInteger":9,"versionString":"9.0","downloadUrl":"https://example.org/a.apk"}]}]}"#;
        std::fs::write(dir.path().join(FILE_NAME), good).unwrap();
        let served: Value = serde_json::from_str(&value(dir.path())).unwrap();
        assert_eq!(served, serde_json::from_str::<Value>(good).unwrap());
        std::fs::write(dir.path().join(FILE_NAME), "{ not json").unwrap();
        assert_eq!(value(dir.path()), built_in());
        std::fs::remove_file(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(value(dir.path()), built_in());
    }
}
