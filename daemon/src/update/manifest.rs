//! The update manifest (`manifest.json` in a bundle, OTA-1): parsing, field validation and
//! the board / anti-rollback checks (OTA-2, OTA-3). Pure functions, no I/O.
//!
//! ```json
//! {"format": 1, "compatible": "relaybox-rpi4", "version": "0.2.0", "build": 1764370000,
//!  "images": [{"name": "boot", "slot": "a", "file": "boot-a.vfat", "size": 67108864, "sha256": "…"},
//!             {"name": "boot", "slot": "b", "file": "boot-b.vfat", "size": 67108864, "sha256": "…"},
//!             {"name": "root", "file": "root.squashfs", "size": 41234432, "sha256": "…"}]}
//! ```
//!
//! `slot` is optional: an image without it fits either slot; with it, the image is written
//! only when that slot is the target. The boot partitions differ per slot (their
//! `cmdline.txt` names the matching root partition), so image/bundle ships one per slot.

use serde::{Deserialize, Serialize};

use super::{Slot, UpdateError};

/// The only manifest format this code reads.
pub const FORMAT: u32 = 1;
/// Longest accepted `manifest.json` (it is read into memory before its signature is checked).
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024;
/// Largest accepted single image (a boot or root partition is far smaller).
pub const MAX_IMAGE_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// Which partition of a slot an image is written to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    Boot,
    Root,
}

impl ImageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageKind::Boot => "boot",
            ImageKind::Root => "root",
        }
    }
}

/// One image of a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageEntry {
    pub name: ImageKind,
    /// Only for this slot (`"a"` / `"b"`), or for either when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<Slot>,
    /// File name inside the bundle (a plain name, no directories).
    pub file: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the image.
    pub sha256: String,
}

impl ImageEntry {
    /// Human name for messages: `root`, `boot (slot b)`.
    pub fn label(&self) -> String {
        match self.slot {
            Some(s) => format!("{} (slot {})", self.name.as_str(), s.as_str()),
            None => self.name.as_str().to_string(),
        }
    }

    /// The decoded SHA-256 (validated by [`Manifest::parse`]).
    pub fn digest(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        if let Some(v) = decode_hex32(&self.sha256) {
            out = v;
        }
        out
    }

    pub fn applies_to(&self, slot: Slot) -> bool {
        self.slot.is_none_or(|s| s == slot)
    }
}

/// A parsed and validated manifest (OTA-1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    /// Board family the images are for, e.g. `relaybox-rpi4` (OTA-2).
    pub compatible: String,
    /// Display version.
    pub version: String,
    /// Monotonic build number (OTA-3).
    pub build: u64,
    pub images: Vec<ImageEntry>,
}

/// What the running system accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    /// The board's `compatible`; `None` skips the check (a host without a release file).
    pub compatible: Option<String>,
    /// The committed build: a bundle must have `build` > this (exclusive). `None` skips.
    pub min_build: Option<u64>,
}

impl Manifest {
    /// Parses and validates `manifest.json` (fields only; no board or build policy).
    pub fn parse(bytes: &[u8]) -> Result<Manifest, UpdateError> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| UpdateError::Manifest(format!("not valid manifest JSON: {e}")))?;
        m.validate()?;
        Ok(m)
    }

    fn validate(&self) -> Result<(), UpdateError> {
        let bad = |s: String| Err(UpdateError::Manifest(s));
        if self.format != FORMAT {
            return bad(format!(
                "format {} is not supported (expected {FORMAT})",
                self.format
            ));
        }
        if !valid_token(&self.compatible) {
            return bad(format!(
                "compatible {:?} is not a board name",
                self.compatible
            ));
        }
        if self.version.is_empty()
            || self.version.len() > 64
            || self.version.chars().any(|c| c.is_control())
        {
            return bad(format!(
                "version {:?} is not a display version",
                self.version
            ));
        }
        if self.build == 0 {
            return bad("build must be a positive number".into());
        }
        if self.images.is_empty() {
            return bad("no images".into());
        }
        for (i, img) in self.images.iter().enumerate() {
            if !valid_file_name(&img.file) {
                return bad(format!(
                    "image {}: file {:?} is not a plain file name",
                    img.label(),
                    img.file
                ));
            }
            if img.file == super::bundle::MANIFEST || img.file == super::bundle::SIGNATURE {
                return bad(format!(
                    "image {}: reserved file name {}",
                    img.label(),
                    img.file
                ));
            }
            if img.size == 0 || img.size > MAX_IMAGE_BYTES {
                return bad(format!(
                    "image {}: size {} out of range",
                    img.label(),
                    img.size
                ));
            }
            if decode_hex32(&img.sha256).is_none() {
                return bad(format!(
                    "image {}: sha256 is not 64 lower-case hex digits",
                    img.label()
                ));
            }
            for other in &self.images[..i] {
                if other.file == img.file {
                    return bad(format!("file {} listed twice", img.file));
                }
                let overlap = match (other.slot, img.slot) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                };
                if other.name == img.name && overlap {
                    return bad(format!("image {} listed twice", img.label()));
                }
            }
        }
        // Every slot gets exactly one root image and at most one boot image (the loop above
        // rules out two for the same slot); a root is required, boot is optional.
        for slot in [Slot::A, Slot::B] {
            if !self
                .images
                .iter()
                .any(|i| i.name == ImageKind::Root && i.applies_to(slot))
            {
                return bad(format!("no root image for slot {}", slot.as_str()));
            }
        }
        Ok(())
    }

    /// OTA-2 (board) and OTA-3 (anti-rollback).
    pub fn check(&self, expect: &Expect) -> Result<(), UpdateError> {
        if let Some(c) = &expect.compatible
            && *c != self.compatible
        {
            return Err(UpdateError::WrongBoard {
                expected: c.clone(),
                found: self.compatible.clone(),
            });
        }
        // OTA-3: reject build ≤ the committed build.
        if let Some(committed) = expect.min_build
            && self.build <= committed
        {
            return Err(UpdateError::Rollback {
                build: self.build,
                committed,
            });
        }
        Ok(())
    }

    /// The images written to `slot`, in manifest order.
    pub fn images_for(&self, slot: Slot) -> impl Iterator<Item = &ImageEntry> {
        self.images.iter().filter(move |i| i.applies_to(slot))
    }

    /// Sum of all image sizes (the download cap of OTA-4 adds the manifest and headers).
    pub fn total_size(&self) -> u64 {
        self.images.iter().map(|i| i.size).sum()
    }
}

/// `relaybox-rpi4`: lower-case letters, digits, `-`, `_`, `.`; 1–64 characters.
fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

/// A file name inside the bundle: no directories, no `..`, printable ASCII, ≤ 99 bytes
/// (ustar name field without a prefix).
fn valid_file_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 99
        && s != "."
        && s != ".."
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b))
}

pub use crate::hex::{decode_hex32, hex};

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "8b5fc0e9b559acd86a49017943707c53e283f26bb629cb20bce913bac9975c21";

    fn json(images: &str) -> String {
        format!(
            r#"{{"format":1,"compatible":"relaybox-rpi4","version":"1.0","build":7,"images":[{images}]}}"#
        )
    }

    fn root() -> String {
        format!(r#"{{"name":"root","file":"root.squashfs","size":10,"sha256":"{H}"}}"#)
    }

    #[test]
    fn good_manifests_parse() {
        let m = Manifest::parse(json(&root()).as_bytes()).expect("root only");
        assert_eq!(m.build, 7);
        assert_eq!(m.compatible, "relaybox-rpi4");
        assert_eq!(m.images[0].name, ImageKind::Root);
        assert_eq!(hex(&m.images[0].digest()), H);

        let per_slot = format!(
            r#"{{"name":"boot","slot":"a","file":"boot-a.vfat","size":5,"sha256":"{H}"}},
               {{"name":"boot","slot":"b","file":"boot-b.vfat","size":5,"sha256":"{H}"}},{}"#,
            root()
        );
        let m = Manifest::parse(json(&per_slot).as_bytes()).expect("per-slot boot");
        let a: Vec<_> = m.images_for(Slot::A).map(|i| i.file.as_str()).collect();
        let b: Vec<_> = m.images_for(Slot::B).map(|i| i.file.as_str()).collect();
        assert_eq!(a, ["boot-a.vfat", "root.squashfs"]);
        assert_eq!(b, ["boot-b.vfat", "root.squashfs"]);
        assert_eq!(m.total_size(), 20);
    }

    #[test]
    fn invalid_manifests_are_rejected_with_reason() {
        let r = root();
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "not valid manifest JSON"),
            (json(""), "no images"),
            (json(&r).replace("\"format\":1", "\"format\":2"), "format 2"),
            (
                json(&r).replace("relaybox-rpi4", "Relaybox RPi"),
                "not a board name",
            ),
            (json(&r).replace("\"build\":7", "\"build\":0"), "positive"),
            (
                json(&r).replace("\"build\":7", "\"build\":-1"),
                "not valid manifest JSON",
            ),
            (json(&r).replace("\"1.0\"", "\"\""), "display version"),
            (
                json(&r).replace("\"format\":1", "\"format\":1,\"extra\":1"),
                "unknown field",
            ),
            (json(&r.replace("root.squashfs", "../x")), "plain file name"),
            (json(&r.replace("root.squashfs", "a/b")), "plain file name"),
            (
                json(&r.replace("root.squashfs", "manifest.json")),
                "reserved",
            ),
            (
                json(&r.replace("\"size\":10", "\"size\":0")),
                "out of range",
            ),
            (json(&r.replace(H, &H.to_uppercase())), "hex"),
            (json(&r.replace(H, &H[..60])), "hex"),
            (
                json(&r.replace("\"root\"", "\"kernel\"")),
                "not valid manifest JSON",
            ),
            (
                json(&format!("{r},{}", r.replace("root.squashfs", "r2"))),
                "listed twice",
            ),
            (json(&format!("{r},{r}")), "listed twice"),
            (
                json(&r.replace("\"name\":\"root\"", "\"name\":\"root\",\"slot\":\"a\"")),
                "no root image for slot b",
            ),
            (
                json(&r.replace("\"name\":\"root\"", "\"name\":\"boot\"")),
                "no root image",
            ),
        ];
        for (input, want) in cases {
            let err = Manifest::parse(input.as_bytes())
                .expect_err(&input)
                .to_string();
            assert!(err.contains(want), "{input}\n→ {err}\n(wanted {want:?})");
        }
    }

    #[test]
    fn board_and_rollback_checks() {
        let m = Manifest::parse(json(&root()).as_bytes()).unwrap();
        let e = |c: Option<&str>, b: Option<u64>| Expect {
            compatible: c.map(str::to_string),
            min_build: b,
        };
        assert!(m.check(&e(None, None)).is_ok());
        assert!(m.check(&e(Some("relaybox-rpi4"), Some(6))).is_ok());
        let err = m.check(&e(Some("relaybox-qemu"), None)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not for this board (expected relaybox-qemu, bundle is for relaybox-rpi4)"
        );
        // OTA-3: equal is rejected too (exclusive).
        for committed in [7, 8, u64::MAX] {
            let err = m
                .check(&e(Some("relaybox-rpi4"), Some(committed)))
                .unwrap_err();
            assert!(
                err.to_string().starts_with("older build 7 <= "),
                "{committed}: {err}"
            );
        }
    }
}
