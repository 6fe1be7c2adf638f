//! `relaybox update verify --pubkey PUBLIC_KEY FILE` (issue 7, appliance.md OTA-1..3) against
//! bundles made here by `image/bundle` with throw-away minisign keys (`minisign -G -W`): a
//! good bundle passes; a bundle signed with another key, a tampered manifest, a corrupted
//! image byte, a truncated file, another board or a build that is not newer than the
//! installed one (from the release file, `$RELAYBOX_RELEASE`) fails with the reason on
//! stderr. Needs Debian's `minisign` and GNU tar.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use relaybox_blackbox::relay::binary;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A minisign key pair without password in `dir` (`NAME.pub`, `NAME.key`).
fn keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (p, s) = (
        dir.join(format!("{name}.pub")),
        dir.join(format!("{name}.key")),
    );
    let out = run(Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(&p)
        .arg("-s")
        .arg(&s));
    assert!(
        out.status.success(),
        "minisign -G (apt-get install minisign): {}",
        text(&out.stderr)
    );
    (p, s)
}

struct Fixture {
    dir: tempfile::TempDir,
    pubkey: PathBuf,
    key: PathBuf,
    other_key: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pubkey, key) = keypair(dir.path(), "test");
        let (_, other_key) = keypair(dir.path(), "other");
        // Images with a recognisable pattern, sizes not multiples of 512.
        for (name, len, seed) in [("ba", 3001usize, 3u8), ("bb", 2999, 5), ("root", 70001, 7)] {
            let bytes: Vec<u8> = (0..len)
                .map(|i| (i as u8).wrapping_mul(seed) ^ (i >> 8) as u8)
                .collect();
            std::fs::write(dir.path().join(name), bytes).expect("write image");
        }
        Fixture {
            dir,
            pubkey,
            key,
            other_key,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `image/bundle` for board `compatible`, build `build`, signed with `key`.
    fn bundle(&self, name: &str, key: &Path, compatible: &str, build: u64) -> PathBuf {
        let out_path = self.path(name);
        let out = run(Command::new(repo().join("image/bundle"))
            .arg("--key")
            .arg(key)
            .arg("--out")
            .arg(&out_path)
            .args(["--build", &build.to_string(), "--version", "1.0"])
            .args(["--compatible", compatible])
            .arg("--boot-a")
            .arg(self.path("ba"))
            .arg("--boot-b")
            .arg(self.path("bb"))
            .arg("--root")
            .arg(self.path("root")));
        assert!(out.status.success(), "image/bundle: {}", text(&out.stderr));
        out_path
    }

    /// Runs the verify command; `release` is written as the installed release file
    /// (`None`: no release file, only the bundle itself is checked).
    fn verify(&self, bundle: &Path, release: Option<(&str, u64)>) -> Output {
        let release_path = self.path("release.json");
        match release {
            Some((c, b)) => std::fs::write(
                &release_path,
                format!(r#"{{"compatible": "{c}", "version": "0", "build": {b}}}"#),
            )
            .expect("write release.json"),
            None => {
                let _ = std::fs::remove_file(&release_path);
            }
        }
        run(Command::new(binary())
            .args(["update", "verify", "--pubkey"])
            .arg(&self.pubkey)
            .arg(bundle)
            .env("RELAYBOX_RELEASE", &release_path)
            .env("NO_COLOR", "1"))
    }
}

#[track_caller]
fn assert_rejected(out: &Output, reason: &str) {
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "expected rejection ({reason}), got success: {}",
        text(&out.stdout)
    );
    assert!(err.contains(reason), "stderr should say {reason:?}: {err}");
    assert!(!text(&out.stdout).contains("ok:"), "no ok line on failure");
}

/// Data offset of `name` in a ustar archive (headers are 512-byte blocks).
fn data_offset(tar: &[u8], name: &str) -> usize {
    let mut pos = 0;
    while pos + 512 <= tar.len() {
        let h = &tar[pos..pos + 512];
        let end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let size_field = String::from_utf8_lossy(&h[124..136]);
        let size = usize::from_str_radix(size_field.trim_matches(|c| c == '\0' || c == ' '), 8)
            .expect("ustar size field");
        if &h[..end] == name.as_bytes() {
            return pos + 512;
        }
        pos += 512 + size.div_ceil(512) * 512;
    }
    panic!("{name} not in the bundle");
}

#[test]
fn good_bundle_passes() {
    let f = Fixture::new();
    let b = f.bundle("good.tar", &f.key, "relaybox-test", 5);
    let out = f.verify(&b, None);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "ok: relaybox-test version 1.0 build 5"
    );
    // Same board, newer build than the installed one.
    let out = f.verify(&b, Some(("relaybox-test", 4)));
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
}

#[test]
fn bundle_signed_with_another_key_is_rejected() {
    let f = Fixture::new();
    let b = f.bundle("other.tar", &f.other_key, "relaybox-test", 5);
    assert_rejected(&f.verify(&b, None), "bad signature");
}

#[test]
fn tampered_manifest_is_rejected() {
    let f = Fixture::new();
    let b = f.bundle("good.tar", &f.key, "relaybox-test", 5);
    let mut bytes = std::fs::read(&b).unwrap();
    let off = data_offset(&bytes, "manifest.json");
    let manifest_len = bytes[off..].iter().position(|&c| c == 0).unwrap();
    let m = String::from_utf8(bytes[off..off + manifest_len].to_vec()).unwrap();
    let at = m.find("\"build\": 5").expect("build field") + "\"build\": ".len();
    bytes[off + at] = b'9'; // same length, higher build
    std::fs::write(&b, bytes).unwrap();
    assert_rejected(&f.verify(&b, None), "bad signature");
}

#[test]
fn corrupted_image_byte_is_rejected() {
    let f = Fixture::new();
    let b = f.bundle("good.tar", &f.key, "relaybox-test", 5);
    let mut bytes = std::fs::read(&b).unwrap();
    let off = data_offset(&bytes, "root.squashfs");
    bytes[off + 70_000] ^= 0x01; // last byte of the root image
    std::fs::write(&b, &bytes).unwrap();
    assert_rejected(&f.verify(&b, None), "image root: hash mismatch");

    let off = data_offset(&bytes, "boot-b.vfat");
    bytes[off] ^= 0x80;
    let b2 = f.path("boot.tar");
    std::fs::write(&b2, &bytes).unwrap();
    assert_rejected(&f.verify(&b2, None), "image boot (slot b): hash mismatch");
}

#[test]
fn truncated_bundle_is_rejected() {
    let f = Fixture::new();
    let b = f.bundle("good.tar", &f.key, "relaybox-test", 5);
    let bytes = std::fs::read(&b).unwrap();
    let off = data_offset(&bytes, "root.squashfs");
    std::fs::write(&b, &bytes[..off + 1000]).unwrap();
    assert_rejected(&f.verify(&b, None), "truncated");
}

#[test]
fn other_board_is_rejected() {
    let f = Fixture::new();
    let b = f.bundle("good.tar", &f.key, "relaybox-test", 5);
    assert_rejected(
        &f.verify(&b, Some(("relaybox-rpi4", 1))),
        "not for this board (expected relaybox-rpi4, bundle is for relaybox-test)",
    );
}

#[test]
fn older_or_same_build_is_rejected() {
    let f = Fixture::new();
    let b = f.bundle("good.tar", &f.key, "relaybox-test", 5);
    assert_rejected(
        &f.verify(&b, Some(("relaybox-test", 5))),
        "older build 5 <= 5",
    );
    assert_rejected(
        &f.verify(&b, Some(("relaybox-test", 9))),
        "older build 5 <= 9",
    );
}

#[test]
fn unusable_key_or_file_is_reported() {
    let f = Fixture::new();
    let b = f.bundle("good.tar", &f.key, "relaybox-test", 5);
    std::fs::write(&f.pubkey, "untrusted comment: x\nnot base64!\n").unwrap();
    assert_rejected(&f.verify(&b, None), "bad public key");
    let f = Fixture::new();
    assert_rejected(&f.verify(&f.path("missing.tar"), None), "cannot open");
}
