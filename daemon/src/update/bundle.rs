//! Reading a bundle (OTA-1, OTA-2): a small streaming ustar reader, the minisign check of
//! `manifest.json`, and [`verify`], which checks everything before any slot is touched.
//!
//! Layout (image/bundle writes it with `tar --format=ustar`): `manifest.json` first,
//! `manifest.json.minisig` second, then every image the manifest lists, each exactly once, in
//! any order, nothing else. Images are never held in memory: they are hashed in 1 MiB pieces.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::UpdateError;
use super::manifest::{Expect, MAX_MANIFEST_BYTES, Manifest, hex};

pub const MANIFEST: &str = "manifest.json";
pub const SIGNATURE: &str = "manifest.json.minisig";
const MAX_SIGNATURE_BYTES: u64 = 4096;
const BLOCK: u64 = 512;
pub(crate) const CHUNK: usize = 1024 * 1024;

/// A minisign public key (the `update.pub` file: comment line plus base64 line).
pub struct PublicKey(minisign_verify::PublicKey);

impl PublicKey {
    pub fn from_file(path: &Path) -> Result<PublicKey, UpdateError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| UpdateError::io("cannot read public key", path, e))?;
        PublicKey::decode(&text)
    }

    /// Accepts the two-line `minisign.pub` text or the bare base64 key.
    pub fn decode(text: &str) -> Result<PublicKey, UpdateError> {
        let text = text.trim();
        let key = if text.lines().count() >= 2 {
            minisign_verify::PublicKey::decode(text)
        } else {
            minisign_verify::PublicKey::from_base64(text)
        };
        key.map(PublicKey)
            .map_err(|e| UpdateError::PublicKey(e.to_string()))
    }

    /// OTA-2: the detached signature of `manifest.json`. Only current (prehashed, `ED`)
    /// signatures, as minisign 0.11 makes by default; legacy ones are refused.
    pub fn verify_manifest(&self, manifest: &[u8], signature: &[u8]) -> Result<(), UpdateError> {
        let text = std::str::from_utf8(signature)
            .map_err(|_| UpdateError::BadSignature("signature file is not text".into()))?;
        let sig = minisign_verify::Signature::decode(text)
            .map_err(|e| UpdateError::BadSignature(format!("unreadable signature: {e}")))?;
        self.0.verify(manifest, &sig, false).map_err(|e| match e {
            minisign_verify::Error::UnexpectedKeyId => {
                UpdateError::BadSignature("signed with another key".into())
            }
            minisign_verify::Error::InvalidSignature => {
                UpdateError::BadSignature("the manifest does not match its signature".into())
            }
            other => UpdateError::BadSignature(other.to_string()),
        })
    }
}

/// One regular file of the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub size: u64,
    /// Byte offset of the file's data in the bundle.
    pub offset: u64,
}

/// Sequential reader of a ustar archive.
pub struct TarReader<R> {
    inner: R,
    /// Bytes of the current entry's data (plus padding) not yet consumed.
    pending: u64,
    pos: u64,
    done: bool,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> Self {
        TarReader {
            inner,
            pending: 0,
            pos: 0,
            done: false,
        }
    }

    /// The next entry's header; its data must then be read with [`TarReader::read_data`]
    /// (or is skipped by the next call). `None` at the end-of-archive marker.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, UpdateError> {
        if self.done {
            return Ok(None);
        }
        self.skip_pending()?;
        let mut h = [0u8; BLOCK as usize];
        let n = read_full(&mut self.inner, &mut h).map_err(tar_io)?;
        self.pos += n as u64;
        if n == 0 {
            return Err(UpdateError::Truncated("no end-of-archive marker".into()));
        }
        if n < h.len() {
            return Err(UpdateError::Truncated("cut inside a header".into()));
        }
        if h.iter().all(|&b| b == 0) {
            self.done = true;
            return Ok(None);
        }
        let entry = parse_header(&h, self.pos)?;
        self.pending = entry.size.div_ceil(BLOCK) * BLOCK;
        Ok(Some(entry))
    }

    /// Streams the current entry's data (exactly `entry.size` bytes) to `sink` in pieces.
    pub fn read_data(
        &mut self,
        entry: &Entry,
        mut sink: impl FnMut(&[u8]) -> Result<(), UpdateError>,
    ) -> Result<(), UpdateError> {
        let mut left = entry.size;
        let mut buf = vec![0u8; CHUNK];
        while left > 0 {
            let want = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
            let n = read_full(&mut self.inner, &mut buf[..want]).map_err(tar_io)?;
            self.pos += n as u64;
            self.pending -= n as u64;
            if n < want {
                return Err(UpdateError::Truncated(format!(
                    "{} ends after {} of {} bytes",
                    entry.name,
                    entry.size - left + n as u64,
                    entry.size
                )));
            }
            left -= n as u64;
            sink(&buf[..n])?;
        }
        Ok(())
    }

    /// Reads the current entry into memory, refusing more than `max` bytes.
    pub fn read_small(&mut self, entry: &Entry, max: u64) -> Result<Vec<u8>, UpdateError> {
        if entry.size > max {
            return Err(UpdateError::Format(format!(
                "{} is {} bytes (at most {max})",
                entry.name, entry.size
            )));
        }
        let mut out = Vec::with_capacity(usize::try_from(entry.size).unwrap_or(0));
        self.read_data(entry, |b| {
            out.extend_from_slice(b);
            Ok(())
        })?;
        Ok(out)
    }

    fn skip_pending(&mut self) -> Result<(), UpdateError> {
        while self.pending > 0 {
            let mut buf = [0u8; 8192];
            let want = usize::try_from(self.pending.min(buf.len() as u64)).unwrap_or(buf.len());
            let n = read_full(&mut self.inner, &mut buf[..want]).map_err(tar_io)?;
            self.pos += n as u64;
            self.pending -= n as u64;
            if n < want {
                return Err(UpdateError::Truncated("cut inside a file".into()));
            }
        }
        Ok(())
    }
}

fn tar_io(e: io::Error) -> UpdateError {
    UpdateError::Format(format!("read error: {e}"))
}

/// Like `read_exact`, but returns the count read when the input ends early.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// POSIX ustar header (POSIX.1-1988 / pax "ustar" interchange format). `data_offset` is the
/// archive position right after the header.
fn parse_header(h: &[u8; 512], data_offset: u64) -> Result<Entry, UpdateError> {
    let bad = |s: &str| Err(UpdateError::Format(s.to_string()));
    if &h[257..262] != b"ustar" {
        return bad("not a ustar archive");
    }
    let stored =
        octal(&h[148..156]).ok_or(UpdateError::Format("bad header checksum field".into()))?;
    // The checksum counts the checksum field itself as eight spaces.
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    if sum != stored {
        return bad("header checksum mismatch");
    }
    let typeflag = h[156];
    if typeflag != b'0' && typeflag != 0 {
        return Err(UpdateError::Format(format!(
            "entry of type {:?} (only regular files are allowed)",
            typeflag as char
        )));
    }
    let size = octal(&h[124..136]).ok_or(UpdateError::Format("bad size field".into()))?;
    let cstr = |f: &[u8]| -> Result<String, UpdateError> {
        let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
        String::from_utf8(f[..end].to_vec())
            .map_err(|_| UpdateError::Format("file name is not UTF-8".into()))
    };
    let prefix = cstr(&h[345..500])?;
    let mut name = cstr(&h[0..100])?;
    if !prefix.is_empty() {
        name = format!("{prefix}/{name}");
    }
    let name = name.strip_prefix("./").unwrap_or(&name).to_string();
    Ok(Entry {
        name,
        size,
        offset: data_offset,
    })
}

/// An octal number field: digits, optionally surrounded by spaces / NULs.
fn octal(f: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(f).ok()?;
    let s = s.trim_matches(|c| c == ' ' || c == '\0');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// Reads and checks the signed head of a bundle: the manifest, authenticated by its
/// signature, then validated and checked against `expect`. Returns the reader positioned
/// after the signature.
fn read_head<R: Read>(
    pubkey: &PublicKey,
    tar: &mut TarReader<R>,
    expect: &Expect,
) -> Result<Manifest, UpdateError> {
    let first = tar
        .next_entry()?
        .ok_or_else(|| UpdateError::Format("empty archive".into()))?;
    if first.name != MANIFEST {
        return Err(UpdateError::Format(format!(
            "first file is {:?}, expected {MANIFEST}",
            first.name
        )));
    }
    let manifest = tar.read_small(&first, MAX_MANIFEST_BYTES)?;
    let second = tar
        .next_entry()?
        .ok_or_else(|| UpdateError::Truncated(format!("no {SIGNATURE}")))?;
    if second.name != SIGNATURE {
        return Err(UpdateError::Format(format!(
            "second file is {:?}, expected {SIGNATURE}",
            second.name
        )));
    }
    let sig = tar.read_small(&second, MAX_SIGNATURE_BYTES)?;
    // OTA-2: nothing of the manifest is trusted (not even parsed) before this.
    pubkey.verify_manifest(&manifest, &sig)?;
    let m = Manifest::parse(&manifest)?;
    m.check(expect)?;
    Ok(m)
}

/// OTA-1..3: checks the signature, the manifest, the board, the build number and every
/// image's size and SHA-256, streaming. Writes nothing.
pub fn verify(pubkey: &PublicKey, bundle: &Path, expect: &Expect) -> Result<Manifest, UpdateError> {
    let f = File::open(bundle).map_err(|e| UpdateError::io("cannot open", bundle, e))?;
    verify_stream(pubkey, BufReader::with_capacity(CHUNK, f), expect)
}

/// [`verify`] over any byte stream (the fuzz targets read bundles from memory).
pub fn verify_stream<R: Read>(
    pubkey: &PublicKey,
    bundle: R,
    expect: &Expect,
) -> Result<Manifest, UpdateError> {
    let mut tar = TarReader::new(bundle);
    let m = read_head(pubkey, &mut tar, expect)?;
    let mut seen = vec![false; m.images.len()];
    while let Some(entry) = tar.next_entry()? {
        let Some(idx) = m.images.iter().position(|i| i.file == entry.name) else {
            return Err(UpdateError::UnexpectedFile(entry.name));
        };
        let img = &m.images[idx];
        if seen[idx] {
            return Err(UpdateError::Format(format!("{} appears twice", entry.name)));
        }
        seen[idx] = true;
        if entry.size != img.size {
            return Err(UpdateError::SizeMismatch {
                image: img.label(),
                expected: img.size,
                found: entry.size,
            });
        }
        let mut h = Sha256::new();
        tar.read_data(&entry, |b| {
            h.update(b);
            Ok(())
        })?;
        if h.finalize().as_slice() != img.digest() {
            return Err(UpdateError::HashMismatch(img.label()));
        }
    }
    if let Some(idx) = seen.iter().position(|s| !s) {
        return Err(UpdateError::MissingImage(m.images[idx].label()));
    }
    tracing::info!(
        compatible = %m.compatible,
        version = %m.version,
        build = m.build,
        "update bundle verified"
    );
    Ok(m)
}

/// Lists the data position of every file (no signature check; used by install, which is
/// given an already verified manifest and re-hashes what it writes).
pub fn entries(bundle: &Path) -> Result<Vec<Entry>, UpdateError> {
    let mut f = File::open(bundle).map_err(|e| UpdateError::io("cannot open", bundle, e))?;
    entries_in(&mut f, bundle)
}

/// [`entries`] over an open seekable stream; `bundle` names it in errors.
pub fn entries_in<R: Read + Seek>(f: &mut R, bundle: &Path) -> Result<Vec<Entry>, UpdateError> {
    let len = f
        .seek(SeekFrom::End(0))
        .map_err(|e| UpdateError::io("cannot seek", bundle, e))?;
    let mut pos = 0u64;
    let mut out = Vec::new();
    loop {
        f.seek(SeekFrom::Start(pos))
            .map_err(|e| UpdateError::io("cannot seek", bundle, e))?;
        let mut h = [0u8; BLOCK as usize];
        let n = read_full(f, &mut h).map_err(tar_io)?;
        if n < h.len() {
            return Err(UpdateError::Truncated("cut inside a header".into()));
        }
        if h.iter().all(|&b| b == 0) {
            return Ok(out);
        }
        let e = parse_header(&h, pos + BLOCK)?;
        let next = e.offset + e.size.div_ceil(BLOCK) * BLOCK;
        if e.offset + e.size > len {
            return Err(UpdateError::Truncated(format!(
                "{} ends after {} of {} bytes",
                e.name,
                len.saturating_sub(e.offset),
                e.size
            )));
        }
        out.push(e);
        pos = next;
    }
}

/// SHA-256 hex of a byte slice (tests, tools).
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// A minimal ustar writer for tests (image/bundle uses GNU tar).
#[cfg(test)]
pub(crate) fn write_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[cfg(test)]
pub(crate) mod fixture {
    //! A manifest signed once with minisign 0.11 (`minisign -G -W`, `minisign -S -t "relaybox
    //! test bundle"`), kept in testdata/, and the images it describes.
    pub const MANIFEST: &str = include_str!("testdata/manifest.json");
    pub const SIG: &str = include_str!("testdata/manifest.json.minisig");
    pub const PUB: &str = include_str!("testdata/test.pub");
    pub const OTHER_PUB: &str = include_str!("testdata/other.pub");

    pub fn boot() -> Vec<u8> {
        (0..3000u32).map(|i| ((i * 31 + 7) % 256) as u8).collect()
    }

    pub fn root() -> Vec<u8> {
        (0..70000u32)
            .map(|i| ((i * 13 + i / 256) % 256) as u8)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn expect(c: Option<&str>, b: Option<u64>) -> Expect {
        Expect {
            compatible: c.map(str::to_string),
            min_build: b,
        }
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        let mut f = File::create(&p).unwrap();
        f.write_all(bytes).unwrap();
        p
    }

    fn good_tar() -> Vec<u8> {
        let (boot, root) = (fixture::boot(), fixture::root());
        write_tar(&[
            (MANIFEST, fixture::MANIFEST.as_bytes()),
            (SIGNATURE, fixture::SIG.as_bytes()),
            ("boot.vfat", &boot),
            ("root.squashfs", &root),
        ])
    }

    fn check(bytes: &[u8], key: &str, exp: &Expect) -> Result<Manifest, UpdateError> {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "b.tar", bytes);
        verify(&PublicKey::decode(key).unwrap(), &p, exp)
    }

    #[test]
    fn fixture_data_matches_manifest() {
        let m = Manifest::parse(fixture::MANIFEST.as_bytes()).unwrap();
        assert_eq!(m.images[0].sha256, sha256_hex(&fixture::boot()));
        assert_eq!(m.images[1].sha256, sha256_hex(&fixture::root()));
    }

    #[test]
    fn good_bundle_verifies() {
        let m = check(
            &good_tar(),
            fixture::PUB,
            &expect(Some("relaybox-test"), Some(41)),
        )
        .expect("good bundle");
        assert_eq!((m.compatible.as_str(), m.build), ("relaybox-test", 42));
        assert_eq!(m.version, "1.2.3");
        // Images in the other order are fine too.
        let (boot, root) = (fixture::boot(), fixture::root());
        let swapped = write_tar(&[
            (MANIFEST, fixture::MANIFEST.as_bytes()),
            (SIGNATURE, fixture::SIG.as_bytes()),
            ("root.squashfs", &root),
            ("boot.vfat", &boot),
        ]);
        check(&swapped, fixture::PUB, &expect(None, None)).expect("any image order");
    }

    #[test]
    fn bad_bundles_fail_with_reason() {
        let (boot, root) = (fixture::boot(), fixture::root());
        let mut bad_root = root.clone();
        bad_root[69_999] ^= 1;
        let tampered = fixture::MANIFEST.replace("\"build\": 42", "\"build\": 43");
        let head = |m: &'static str| -> Vec<(&'static str, &'static [u8])> {
            vec![
                (MANIFEST, m.as_bytes()),
                (SIGNATURE, fixture::SIG.as_bytes()),
            ]
        };
        let tampered: &'static str = Box::leak(tampered.into_boxed_str());
        let boot: &'static [u8] = Box::leak(boot.into_boxed_slice());
        let root: &'static [u8] = Box::leak(root.into_boxed_slice());
        let bad_root: &'static [u8] = Box::leak(bad_root.into_boxed_slice());
        let with = |extra: &[(&'static str, &'static [u8])]| {
            let mut v = head(fixture::MANIFEST);
            v.extend_from_slice(extra);
            write_tar(&v)
        };
        let good = good_tar();
        let none = expect(None, None);
        let cases: Vec<(&str, Vec<u8>, &str, Expect)> = vec![
            ("other key", good.clone(), fixture::OTHER_PUB, none.clone()),
            (
                "tampered manifest",
                {
                    let mut v = head(tampered);
                    v.push(("boot.vfat", boot));
                    v.push(("root.squashfs", root));
                    write_tar(&v)
                },
                fixture::PUB,
                none.clone(),
            ),
            (
                "corrupted image",
                with(&[("boot.vfat", boot), ("root.squashfs", bad_root)]),
                fixture::PUB,
                none.clone(),
            ),
            (
                "other board",
                good.clone(),
                fixture::PUB,
                expect(Some("relaybox-rpi4"), None),
            ),
            (
                "older build",
                good.clone(),
                fixture::PUB,
                expect(None, Some(42)),
            ),
            (
                "missing image",
                with(&[("boot.vfat", boot)]),
                fixture::PUB,
                none.clone(),
            ),
            (
                "extra file",
                with(&[("boot.vfat", boot), ("root.squashfs", root), ("x", b"1")]),
                fixture::PUB,
                none.clone(),
            ),
            (
                "wrong size",
                with(&[("boot.vfat", &boot[..2999]), ("root.squashfs", root)]),
                fixture::PUB,
                none.clone(),
            ),
            (
                "truncated",
                good[..good.len() - 1024 - 512 - 100].to_vec(),
                fixture::PUB,
                none.clone(),
            ),
            (
                "no signature",
                write_tar(&[(MANIFEST, fixture::MANIFEST.as_bytes())]),
                fixture::PUB,
                none.clone(),
            ),
            (
                "not a tar",
                b"hello".repeat(300),
                fixture::PUB,
                none.clone(),
            ),
        ];
        let wants = [
            "bad signature: signed with another key",
            "bad signature: the manifest does not match its signature",
            "image root: hash mismatch",
            "not for this board (expected relaybox-rpi4, bundle is for relaybox-test)",
            "older build 42 <= 42",
            "image root: missing from the bundle",
            "unexpected file \"x\"",
            "image boot: size 2999 in the bundle, the manifest says 3000",
            "truncated bundle",
            "truncated bundle: no manifest.json.minisig",
            "not a bundle: not a ustar archive",
        ];
        for ((what, bytes, key, exp), want) in cases.into_iter().zip(wants) {
            let err = check(&bytes, key, &exp).expect_err(what).to_string();
            assert!(err.starts_with(want), "{what}: {err}\n(wanted {want:?})");
        }
    }

    #[test]
    fn entries_give_data_offsets() {
        let tar = good_tar();
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "b.tar", &tar);
        let e = entries(&p).unwrap();
        let names: Vec<_> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, [MANIFEST, SIGNATURE, "boot.vfat", "root.squashfs"]);
        let root = &e[3];
        let off = usize::try_from(root.offset).unwrap();
        assert_eq!(&tar[off..off + 70000], fixture::root().as_slice());
        let short = write(dir.path(), "s.tar", &tar[..off + 100]);
        assert!(matches!(entries(&short), Err(UpdateError::Truncated(_))));
    }

    #[test]
    fn gnu_tar_output_is_read() {
        // image/bundle uses GNU tar --format=ustar; read a real one when tar is installed.
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), MANIFEST, fixture::MANIFEST.as_bytes());
        write(dir.path(), SIGNATURE, fixture::SIG.as_bytes());
        write(dir.path(), "boot.vfat", &fixture::boot());
        write(dir.path(), "root.squashfs", &fixture::root());
        let out = dir.path().join("bundle.tar");
        let st = std::process::Command::new("tar")
            .args(["--format=ustar", "--owner=0", "--group=0", "-cf"])
            .arg(&out)
            .arg("-C")
            .arg(dir.path())
            .args([MANIFEST, SIGNATURE, "boot.vfat", "root.squashfs"])
            .status()
            .expect("tar must be installed");
        assert!(st.success());
        let pk = PublicKey::decode(fixture::PUB).unwrap();
        verify(&pk, &out, &expect(Some("relaybox-test"), None)).expect("GNU tar bundle");
    }
}
