//! The fuzz targets of `fuzz/` on the stable toolchain, as an ordinary test (issue 13
//! point 6: CI runs each target for a fixed number of iterations). Each target function of
//! `relaybox::fuzzing` runs over its committed seeds (`fuzz/seeds/<target>/`), the inputs
//! of past findings (`fuzz/regressions/<target>/`) and a fixed number of deterministic
//! mutations of the seeds. Coverage-guided runs are `tests/bench/fuzz` (nightly).
//!
//! `RELAYBOX_FUZZ_ITERATIONS` overrides the number of mutations per target (default
//! 10 000, 2 000 for the three stream targets). A failing
//! input is written to the test's temporary directory and named in the failure.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// Mutations per target by default.
const ITERATIONS: u64 = 10_000;
/// Fewer for the stream targets: their runs (up to 196 KB) cost milliseconds each in the
/// unoptimized test build (about 4 ms against 0.02 ms for the others).
const STREAM_ITERATIONS: u64 = 2_000;
const STREAM_TARGETS: &[&str] = &["smtp_command", "smtp_data", "imap_frame"];

/// Byte strings that mean something to at least one of the parsers.
const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b".\r\n",
    b"\r\n.\r\n",
    b"\n.\n",
    b"{5}\r\n",
    b"{5+}\r\n",
    b"{0}\r\n",
    b"~{3}\r\n",
    b"{99999999999}\r\n",
    b"\"",
    b"\\",
    b"--",
    b"--XYZboundary42--\r\n",
    b"--XYZboundary42\r\n",
    b"Content-Type: ",
    b"multipart/mixed; boundary=",
    b"multipart/encrypted; boundary=\"b\"",
    b"Content-Transfer-Encoding: base64\r\n",
    b"application/octet-stream",
    b"-----BEGIN PGP MESSAGE-----\r\n",
    b"=\r\n",
    b"Subject: ",
    b"Received: ",
    b"From: ",
    b"Secure-Join: vc-request",
    b"[params]\n",
    b"mail_domain = ",
    b"  ",
    b"\t",
    b"@",
    b"<",
    b">",
    b"[127.0.0.1]",
    b"MAIL FROM:<",
    b"RCPT TO:<",
    b"BODY[",
    b"UID ",
    b"ustar\0",
    b"manifest.json",
    b":",
    b"=",
    b"#",
    b";",
    b"\0",
    b"\xff\xfe",
    b"\xc3\xa4",
];

/// Single bytes worth trying.
const BYTES: &[u8] = b"\0\r\n\t .:;,=@<>[]{}()\"\\+-*%~#0179AZaz\x7f\x80\xc3\xff";

/// xorshift64* (deterministic, seeded per target).
struct Rng(u64);

impl Rng {
    fn new(name: &str) -> Rng {
        // FNV-1a of the name.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// One to four edits of `data` (`others` for splicing).
fn mutate(rng: &mut Rng, data: &mut Vec<u8>, others: &[Vec<u8>]) {
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        match rng.below(11) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.next() as u8;
            }
            2 if len > 0 => {
                let i = rng.below(len);
                data[i] = BYTES[rng.below(BYTES.len())];
            }
            3 => {
                let i = rng.below(len + 1);
                let t = TOKENS[rng.below(TOKENS.len())];
                data.splice(i..i, t.iter().copied());
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let most = if rng.below(4) == 0 { len } else { 16 };
                let n = 1 + rng.below((len - i).min(most));
                data.drain(i..i + n);
            }
            5 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                let piece = data[i..i + n].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, piece);
            }
            6 if !others.is_empty() => {
                let other = &others[rng.below(others.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            7 => data.truncate(rng.below(len + 1)),
            8 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                data.splice(i..i, bytes);
            }
            // The header bytes of the targets that read one (limits, read sizes, runs).
            9 if len > 0 => {
                let i = rng.below(len.min(10));
                data[i] = rng.next() as u8;
            }
            _ => {
                // A line break somewhere.
                let i = rng.below(len + 1);
                let lb: &[u8] = if rng.below(2) == 0 { b"\r\n" } else { b"\n" };
                data.splice(i..i, lb.iter().copied());
            }
        }
    }
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of a folder, sorted by name (empty if it does not exist).
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).expect("read corpus file");
            (p, data)
        })
        .collect()
}

/// Runs one input; on a panic, saves it and fails naming it.
fn run_one(name: &str, run: fn(&[u8]), data: &[u8], what: &str) {
    if catch_unwind(AssertUnwindSafe(|| run(data))).is_err() {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-replay");
        std::fs::create_dir_all(&dir).expect("create finding folder");
        let path = dir.join(format!("{name}-{}", what.replace(['/', ' '], "_")));
        std::fs::write(&path, data).expect("write finding");
        panic!(
            "{name}: {what} fails (input saved as {}; add it to fuzz/regressions/{name}/)",
            path.display()
        );
    }
}

fn replay(name: &str) {
    let run = relaybox::fuzzing::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .expect("target exists");
    let seeds = files(&fuzz_dir().join("seeds").join(name));
    assert!(!seeds.is_empty(), "no seeds for {name}");
    for (path, data) in &seeds {
        run_one(name, run, data, &format!("seed {}", path.display()));
    }
    for (path, data) in files(&fuzz_dir().join("regressions").join(name)) {
        run_one(name, run, &data, &format!("regression {}", path.display()));
    }
    let iterations = std::env::var("RELAYBOX_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if STREAM_TARGETS.contains(&name) {
            STREAM_ITERATIONS
        } else {
            ITERATIONS
        });
    let inputs: Vec<Vec<u8>> = seeds.into_iter().map(|(_, d)| d).collect();
    let mut rng = Rng::new(name);
    for i in 0..iterations {
        let mut data = inputs[rng.below(inputs.len())].clone();
        mutate(&mut rng, &mut data, &inputs);
        run_one(name, run, &data, &format!("mutation {i}"));
    }
}

#[test]
fn every_target_is_replayed() {
    let mut names: Vec<&str> = relaybox::fuzzing::TARGETS.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    let mut here = vec![
        "config",
        "header_cleanup",
        "imap_command",
        "imap_frame",
        "message_gate",
        "mxdeliv",
        "smtp_command",
        "smtp_data",
        "update_bundle",
        "update_manifest",
    ];
    here.sort_unstable();
    assert_eq!(names, here, "a target without a replay test below");
}

macro_rules! replay_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                replay(stringify!($name));
            }
        )*
    };
}

replay_tests!(
    smtp_command,
    smtp_data,
    imap_frame,
    imap_command,
    message_gate,
    header_cleanup,
    config,
    update_bundle,
    update_manifest,
    mxdeliv,
);
