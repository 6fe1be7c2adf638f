//! `relaybox dns --config FILE` (spec relay.md §18, §19): the records of a domain relay
//! in zone-file form with its DKIM key (RSA-2048 SubjectPublicKeyInfo, made once and
//! kept), no MTA-STS for underscore relays, nothing for IP-only relays, and while the
//! relay runs (the store is locked) the copy it wrote to `<data_dir>/dns.zone`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use relaybox_blackbox::dns::dkim_txt_from_zone;
use relaybox_blackbox::relay::binary;

/// How long a started relay may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A chatmail.ini for `mail_domain` with its data in `dir/data`; every listener off
/// except HTTP on a free loopback port (returned).
fn write_config(dir: &Path, mail_domain: &str) -> (PathBuf, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let ini = format!(
        "[params]\nmail_domain = {mail_domain}\ndata_dir = {}\n\
         smtp_listen =\nsubmission_listen =\nsubmissions_listen =\nimap_listen =\n\
         imaps_listen =\nhttps_listen =\nhttp_listen = 127.0.0.1:{port}\nturn_listen =\n\
         max_load_1m = 10000\nlog_stderr = true\n",
        dir.join("data").display()
    );
    let path = dir.join("chatmail.ini");
    std::fs::write(&path, ini).expect("write chatmail.ini");
    (path, port)
}

fn dns(config: &Path) -> Output {
    Command::new(binary())
        .arg("dns")
        .arg("--config")
        .arg(config)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run relaybox dns")
}

/// The record lines (not comments) as (name, ttl, class, type, data).
fn records(zone: &str) -> Vec<[String; 5]> {
    zone.lines()
        .filter(|l| !l.trim_start().starts_with(';') && !l.trim().is_empty())
        .map(|l| {
            let l = l.split(" ;").next().unwrap_or(l);
            let mut it = l.splitn(5, ' ');
            std::array::from_fn(|_| it.next().unwrap_or("").to_string())
        })
        .collect()
}

fn data<'a>(recs: &'a [[String; 5]], name: &str, kind: &str) -> Vec<&'a str> {
    recs.iter()
        .filter(|r| r[0].eq_ignore_ascii_case(name) && r[3] == kind)
        .map(|r| r[4].as_str())
        .collect()
}

/// Standard base64 (RFC 4648 §4) with padding; `None` on any other character.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.as_bytes();
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::new();
    for chunk in s.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

/// The DER prefix of an RSA-2048 SubjectPublicKeyInfo: SEQUENCE(290) { SEQUENCE {
/// OID 1.2.840.113549.1.1.1 rsaEncryption, NULL }, BIT STRING(271) { 0 unused bits,
/// SEQUENCE(266) { INTEGER(257) modulus … } } }.
const SPKI_RSA_2048_PREFIX: [u8; 33] = [
    0x30, 0x82, 0x01, 0x22, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01,
    0x01, 0x05, 0x00, 0x03, 0x82, 0x01, 0x0f, 0x00, 0x30, 0x82, 0x01, 0x0a, 0x02, 0x82, 0x01, 0x01,
    0x00,
];

/// Checks the DKIM TXT record in `zone` and returns its value.
fn check_dkim(zone: &str, domain: &str) -> String {
    let owner = format!("opendkim._domainkey.{domain}.");
    let line = zone
        .lines()
        .find(|l| l.starts_with(&owner))
        .unwrap_or_else(|| panic!("no DKIM record {owner} in:\n{zone}"));
    // §18: character-strings of at most 255 bytes.
    let strings: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
    assert!(
        strings.len() >= 2,
        "a 2048-bit key needs two strings: {line}"
    );
    for s in &strings {
        assert!(s.len() <= 255, "string of {} bytes: {line}", s.len());
    }
    let value = dkim_txt_from_zone(zone, "opendkim", domain).expect("DKIM value");
    assert_eq!(value, strings.concat());
    assert!(value.starts_with("v=DKIM1;k=rsa;p="), "{value}");
    assert!(value.ends_with(";s=email;t=s"), "{value}");
    let p = value
        .split(';')
        .find_map(|t| t.strip_prefix("p="))
        .expect("p= tag");
    let der = base64_decode(p).unwrap_or_else(|| panic!("p= is not base64: {p}"));
    assert_eq!(der.len(), 294, "RSA-2048 SPKI length");
    assert_eq!(der[..33], SPKI_RSA_2048_PREFIX, "RSA-2048 SPKI header");
    assert!(der[33] & 0x80 != 0, "a full 2048-bit modulus");
    // Public exponent 65537 at the end.
    assert_eq!(der[289..], [0x02, 0x03, 0x01, 0x00, 0x01]);
    value
}

#[test]
fn domain_relay_records_of_section_18() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _) = write_config(dir.path(), "chat.example.test");
    let out = dns(&config);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let zone = text(&out.stdout);
    let recs = records(&zone);
    assert!(!recs.is_empty(), "{zone}");
    for r in &recs {
        assert!(r[0].ends_with('.'), "absolute name: {r:?}");
        assert_eq!((r[1].as_str(), r[2].as_str()), ("3600", "IN"), "{r:?}");
    }
    let d = "chat.example.test.";
    // A: detected (global address) or a placeholder the operator must fill in.
    assert!(
        data(&recs, d, "A").len() == 1 || zone.contains("FILL IN the public IPv4 address"),
        "{zone}"
    );
    assert_eq!(data(&recs, d, "MX"), ["10 chat.example.test."]);
    assert_eq!(data(&recs, "www.chat.example.test.", "CNAME"), [d]);
    // ACME mode (a DNS name, no external certificate): MTA-STS.
    assert_eq!(data(&recs, "mta-sts.chat.example.test.", "CNAME"), [d]);
    let sts = data(&recs, "_mta-sts.chat.example.test.", "TXT");
    assert_eq!(sts.len(), 1, "{zone}");
    assert!(sts[0].starts_with("\"v=STSv1; id="), "{}", sts[0]);
    assert_eq!(data(&recs, d, "TXT"), ["\"v=spf1 a ~all\""]);
    assert_eq!(
        data(&recs, "_dmarc.chat.example.test.", "TXT"),
        ["\"v=DMARC1;p=reject;adkim=s;aspf=s\""]
    );
    for (srv, port) in [
        ("_submission._tcp", 587),
        ("_submissions._tcp", 465),
        ("_imap._tcp", 143),
        ("_imaps._tcp", 993),
    ] {
        assert_eq!(
            data(&recs, &format!("{srv}.{d}"), "SRV"),
            [format!("0 1 {port} {d}")]
        );
    }
    assert!(
        zone.contains("REQUIRED") && zone.contains("RECOMMENDED"),
        "{zone}"
    );
    let key = check_dkim(&zone, "chat.example.test");

    // The key was made once and kept: the same record again.
    let again = dns(&config);
    assert!(again.status.success(), "stderr: {}", text(&again.stderr));
    assert_eq!(check_dkim(&text(&again.stdout), "chat.example.test"), key);
}

#[test]
fn underscore_relay_has_no_mta_sts_and_ip_only_needs_no_dns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _) = write_config(dir.path(), "_chat.test");
    let out = dns(&config);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let zone = text(&out.stdout);
    assert!(!zone.to_ascii_lowercase().contains("mta-sts"), "{zone}");
    assert_eq!(
        data(&records(&zone), "_chat.test.", "MX"),
        ["10 _chat.test."]
    );
    check_dkim(&zone, "_chat.test");

    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _) = write_config(dir.path(), "127.0.0.1");
    let out = dns(&config);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let zone = text(&out.stdout);
    assert!(zone.contains("no DNS records are"), "{zone}");
    assert!(records(&zone).is_empty(), "{zone}");
    // MODE-1: no key is made for an IP-only relay.
    assert!(!dir.path().join("data/relaybox.redb").exists());
}

#[test]
fn bad_config_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chatmail.ini");
    std::fs::write(&path, "[params]\nmax_mailbox_size = lots\n").expect("write");
    let out = dns(&path);
    assert_eq!(out.status.code(), Some(2), "stderr: {}", text(&out.stderr));
}

/// Kills the relay when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `relaybox serve` on `config` and wait until its HTTP port accepts.
fn start_relay(dir: &Path, config: &Path, port: u16) -> Running {
    let stderr = std::fs::File::create(dir.join("stderr.log")).expect("log file");
    let mut relay = Running(
        Command::new(binary())
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start relaybox"),
    );
    let log = || text(&std::fs::read(dir.join("stderr.log")).unwrap_or_default());
    let deadline = Instant::now() + START_TIMEOUT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = relay.0.try_wait() {
            panic!("relay exited with {status}: {}", log());
        }
        assert!(Instant::now() < deadline, "relay did not start: {}", log());
        std::thread::sleep(Duration::from_millis(50));
    }
    relay
}

/// While the relay holds the store, `relaybox dns` prints `<data_dir>/dns.zone` (here
/// a stand-in, so this checks the command alone) or says what to do when it is missing.
#[test]
fn store_in_use_prints_the_zone_file_or_explains() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, port) = write_config(dir.path(), "_chat.test");
    let _relay = start_relay(dir.path(), &config, port);
    let zone_file = dir.path().join("data/dns.zone");
    let _ = std::fs::remove_file(&zone_file);
    let out = dns(&config);
    assert_eq!(out.status.code(), Some(1), "stdout: {}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("stop the relay"),
        "{}",
        text(&out.stderr)
    );
    let stand_in = "; stand-in zone\n_chat.test. 3600 IN MX 10 _chat.test.\n";
    std::fs::write(&zone_file, stand_in).expect("write stand-in");
    let out = dns(&config);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), stand_in);
    assert!(
        text(&out.stderr).contains("in use"),
        "{}",
        text(&out.stderr)
    );
}

/// The running relay writes its zone text at start (`zone::write_zone_file`, called by
/// the server after the DKIM key is loaded), and `relaybox dns` prints exactly that.
#[test]
fn running_relay_dns_prints_the_zone_it_wrote_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, port) = write_config(dir.path(), "_chat.test");
    let _relay = start_relay(dir.path(), &config, port);
    let zone_file = dir.path().join("data/dns.zone");
    let written = std::fs::read_to_string(&zone_file).unwrap_or_else(|e| {
        panic!(
            "{} not written at start ({e}): the relay must call \
             relaybox::zone::write_zone_file after loading the DKIM key",
            zone_file.display()
        )
    });
    check_dkim(&written, "_chat.test");
    // The store is held by the relay: the command prints that file, with a note.
    let out = dns(&config);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), written);
    assert!(
        text(&out.stderr).contains("in use"),
        "{}",
        text(&out.stderr)
    );
}
