//! Test data: random accounts of the IP-only relay on 127.0.0.1, and messages — a
//! structurally valid PGP/MIME encrypted message (RFC 3156 §4; OpenPGP packets per
//! RFC 4880 §4.2 new-format headers, armor per RFC 4880 §6 with CRC-24) that passes the
//! relay's encryption gate (spec/relay.md §7, which checks structure only), cleartext
//! messages, and a small header parser for checking stored copies.

use std::io::Read;

/// Address domain of the relay under test (`mail_domain = 127.0.0.1`, CFG-3).
pub const DOMAIN: &str = "[127.0.0.1]";

/// Random bytes from the kernel.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf
}

/// A random string of `n` characters from `alphabet`.
pub fn random_string(n: usize, alphabet: &[u8]) -> String {
    random_bytes(n)
        .into_iter()
        .map(|b| alphabet[b as usize % alphabet.len()] as char)
        .collect()
}

const LOWER_DIGITS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const PASSWORD_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// An account of the relay under test.
#[derive(Debug, Clone)]
pub struct Account {
    /// Local part, 9 characters of `[a-z0-9]` (ACC-5.4/5.5 with default lengths).
    pub local: String,
    /// `<local>@[127.0.0.1]`.
    pub addr: String,
    /// 16 characters (≥ 12; ACC-5.2 needs ≥ 9).
    pub password: String,
}

impl Account {
    /// A fresh random account (it exists on the relay after its first login).
    pub fn random() -> Account {
        let local = random_string(9, LOWER_DIGITS);
        Account {
            addr: format!("{local}@{DOMAIN}"),
            local,
            password: random_string(16, PASSWORD_CHARS),
        }
    }
}

/// Standard padded base64 (RFC 4648 §4).
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// RFC 4880 §6.1: CRC-24 of the armored data.
pub fn crc24(data: &[u8]) -> u32 {
    const INIT: u32 = 0xB7_04CE;
    const POLY: u32 = 0x186_4CFB;
    let mut crc = INIT;
    for &b in data {
        crc ^= u32::from(b) << 16;
        for _ in 0..8 {
            crc <<= 1;
            if crc & 0x100_0000 != 0 {
                crc ^= POLY;
            }
        }
    }
    crc & 0xFF_FFFF
}

/// RFC 4880 §4.2.2: a new-format packet length.
pub fn new_format_length(len: usize) -> Vec<u8> {
    if len < 192 {
        vec![len as u8]
    } else if len < 8384 {
        let v = len - 192;
        vec![((v >> 8) as u8) + 192, (v & 0xFF) as u8]
    } else {
        let v = u32::try_from(len).expect("packet under 4 GiB");
        let mut out = vec![255];
        out.extend_from_slice(&v.to_be_bytes());
        out
    }
}

/// RFC 4880 §4.2: a new-format packet (`0xC0 | tag`, length, body).
pub fn packet(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0xC0 | tag];
    out.extend(new_format_length(body.len()));
    out.extend_from_slice(body);
    out
}

/// PKESK v3 (tag 1, RFC 4880 §5.1) with random key id and a random 2048-bit "MPI",
/// then SEIPD (tag 18, RFC 4880 §5.13, version 1) with `seipd_len` random bytes.
/// Structurally what GATE-8 accepts; no real key can open it.
pub fn encrypted_payload(seipd_len: usize) -> Vec<u8> {
    let mut pkesk = vec![3u8];
    pkesk.extend(random_bytes(8)); // key id
    pkesk.push(1); // RSA
    pkesk.extend_from_slice(&2048u16.to_be_bytes());
    let mut mpi = random_bytes(256);
    mpi[0] |= 0x80;
    pkesk.extend(mpi);
    let mut seipd = vec![1u8];
    seipd.extend(random_bytes(seipd_len.max(1)));
    let mut out = packet(1, &pkesk);
    out.extend(packet(18, &seipd));
    out
}

/// RFC 4880 §6.2 armor with CRLF line ends: BEGIN line, empty line, base64 in 76-char
/// lines, `=` + CRC-24, END line.
pub fn armor(data: &[u8]) -> String {
    let b64 = base64(data);
    let mut out = String::from("-----BEGIN PGP MESSAGE-----\r\n\r\n");
    for line in b64.as_bytes().chunks(76) {
        out += std::str::from_utf8(line).expect("base64 is ASCII");
        out += "\r\n";
    }
    let crc = crc24(data).to_be_bytes();
    out += &format!("={}\r\n", base64(&crc[1..]));
    out += "-----END PGP MESSAGE-----\r\n";
    out
}

/// A message ready for DATA.
#[derive(Debug, Clone)]
pub struct Mail {
    /// Without angle brackets.
    pub message_id: String,
    pub bytes: Vec<u8>,
}

/// A fresh Message-ID (without angle brackets).
pub fn message_id() -> String {
    format!(
        "{}@blackbox.test",
        random_string(20, b"abcdefghijklmnopqrstuvwxyz0123456789")
    )
}

/// Builder for test messages; headers are written in insertion order, CRLF line ends.
#[derive(Debug, Clone)]
pub struct MailBuilder {
    headers: Vec<String>,
    message_id: String,
    payload_len: usize,
    cleartext: Option<String>,
}

impl MailBuilder {
    /// An encrypted (PGP/MIME) message from `from` (header value as given) to `to`.
    pub fn encrypted(from: &str, to: &[&str]) -> MailBuilder {
        let message_id = message_id();
        MailBuilder {
            headers: vec![
                format!("From: {from}"),
                format!("To: {}", to.join(", ")),
                "Subject: [...]".to_string(),
                "Date: Sat, 28 Nov 2026 12:00:00 +0000".to_string(),
                format!("Message-ID: <{message_id}>"),
                "Chat-Version: 1.0".to_string(),
                "MIME-Version: 1.0".to_string(),
            ],
            message_id,
            payload_len: 200,
            cleartext: None,
        }
    }

    /// A cleartext `text/plain` message.
    pub fn cleartext(from: &str, to: &[&str], text: &str) -> MailBuilder {
        let mut b = MailBuilder::encrypted(from, to);
        b.cleartext = Some(text.to_string());
        b
    }

    /// Replace every header of that name (case-insensitive) by `name: value`, or add it.
    pub fn header(mut self, name: &str, value: &str) -> MailBuilder {
        self.headers.retain(|h| !header_is(h, name));
        self.headers.push(format!("{name}: {value}"));
        self
    }

    /// Add a header line (keeping others of the same name).
    pub fn add_header(mut self, name: &str, value: &str) -> MailBuilder {
        self.headers.push(format!("{name}: {value}"));
        self
    }

    /// Remove every header of that name.
    pub fn without(mut self, name: &str) -> MailBuilder {
        self.headers.retain(|h| !header_is(h, name));
        self
    }

    /// Size of the random SEIPD body (the message grows by about 4/3 of it).
    pub fn payload_len(mut self, n: usize) -> MailBuilder {
        self.payload_len = n;
        self
    }

    pub fn build(self) -> Mail {
        let boundary = random_string(30, PASSWORD_CHARS);
        let mut out = String::new();
        for h in &self.headers {
            out += h;
            out += "\r\n";
        }
        match &self.cleartext {
            Some(text) => {
                out += "Content-Type: text/plain; charset=utf-8\r\n\r\n";
                out += text;
                out += "\r\n";
            }
            None => {
                // RFC 3156 §4.
                out += &format!(
                    "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n\tboundary=\"{boundary}\"\r\n\r\n"
                );
                out += &format!("--{boundary}\r\n");
                out += "Content-Description: PGP/MIME version identification\r\n";
                out += "Content-Type: application/pgp-encrypted\r\n\r\n";
                out += "Version: 1\r\n\r\n";
                out += &format!("--{boundary}\r\n");
                out += "Content-Description: OpenPGP encrypted message\r\n";
                out += "Content-Disposition: inline; filename=\"encrypted.asc\";\r\n";
                out += "Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n";
                out += &armor(&encrypted_payload(self.payload_len));
                out += &format!("\r\n--{boundary}--\r\n");
            }
        }
        Mail {
            message_id: self.message_id,
            bytes: out.into_bytes(),
        }
    }
}

fn header_is(line: &str, name: &str) -> bool {
    line.split(':')
        .next()
        .is_some_and(|n| n.trim().eq_ignore_ascii_case(name))
}

/// An encrypted message `From: from`, `To: to`.
pub fn encrypted_mail(from: &str, to: &[&str]) -> Mail {
    MailBuilder::encrypted(from, to).build()
}

/// Split a message at the first empty line: (header section, body).
pub fn split_message(msg: &[u8]) -> (&[u8], &[u8]) {
    if let Some(pos) = msg.windows(4).position(|w| w == b"\r\n\r\n") {
        (&msg[..pos + 2], &msg[pos + 4..])
    } else if let Some(pos) = msg.windows(2).position(|w| w == b"\n\n") {
        (&msg[..pos + 1], &msg[pos + 2..])
    } else {
        (msg, &[])
    }
}

/// Top-level header fields as (name, raw value with folding kept), in order.
pub fn headers(msg: &[u8]) -> Vec<(String, String)> {
    let (head, _) = split_message(msg);
    let text = String::from_utf8_lossy(head);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(last) = out.last_mut() {
                last.1.push_str("\r\n");
                last.1.push_str(line);
            }
            continue;
        }
        match line.split_once(':') {
            Some((name, value)) => out.push((name.to_string(), value.trim_start().to_string())),
            None => out.push((line.to_string(), String::new())),
        }
    }
    out
}

/// Values of every top-level header named `name` (case-insensitive).
pub fn header_values(msg: &[u8], name: &str) -> Vec<String> {
    headers(msg)
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect()
}

/// The Message-ID of a stored message, without angle brackets.
pub fn stored_message_id(msg: &[u8]) -> Option<String> {
    header_values(msg, "Message-ID").first().map(|v| {
        v.trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn crc24_of_empty_is_init_and_known_value() {
        assert_eq!(crc24(b""), 0xB704CE);
        // An independent bit-at-a-time formulation, and the catalogued check value of
        // CRC-24/OPENPGP for "123456789".
        let data = b"123456789";
        let mut crc: u32 = 0xB704CE;
        for &b in data {
            for i in (0..8).rev() {
                let bit = (b >> i) & 1;
                let top = (crc >> 23) & 1;
                crc = (crc << 1) & 0xFF_FFFF;
                if (top as u8) ^ bit == 1 {
                    crc ^= 0x86_4CFB;
                }
            }
        }
        assert_eq!(crc24(data), crc);
        assert_eq!(crc24(data), 0x21CF02);
    }

    #[test]
    fn lengths_follow_rfc4880() {
        assert_eq!(new_format_length(100), vec![100]);
        assert_eq!(new_format_length(192), vec![192, 0]);
        assert_eq!(new_format_length(8383), vec![223, 255]);
        assert_eq!(new_format_length(8384), vec![255, 0, 0, 0x20, 0xC0]);
    }

    #[test]
    fn payload_walks_to_seipd() {
        // GATE-8 walk: PKESK then SEIPD ending exactly at the end.
        for len in [1, 150, 5000, 100_000] {
            let data = encrypted_payload(len);
            let mut pos = 0;
            let mut tags = Vec::new();
            while pos < data.len() {
                let tag = data[pos] & 0x3F;
                assert_eq!(data[pos] & 0xC0, 0xC0);
                let o = data[pos + 1] as usize;
                let (len, hdr) = if o < 192 {
                    (o, 2)
                } else if o < 224 {
                    (((o - 192) << 8) + data[pos + 2] as usize + 192, 3)
                } else {
                    assert_eq!(o, 255);
                    let b = &data[pos + 2..pos + 6];
                    (u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize, 6)
                };
                pos += hdr + len;
                tags.push(tag);
            }
            assert_eq!(pos, data.len());
            assert_eq!(tags, vec![1, 18]);
        }
    }

    #[test]
    fn encrypted_mail_has_armor_and_headers() {
        let m = encrypted_mail("a@[127.0.0.1]", &["b@[127.0.0.1]"]);
        let text = String::from_utf8(m.bytes.clone()).unwrap();
        assert!(text.contains("\r\nVersion: 1\r\n"));
        assert!(text.contains("-----BEGIN PGP MESSAGE-----\r\n\r\n"));
        assert!(text.contains("\r\n-----END PGP MESSAGE-----\r\n"));
        assert_eq!(header_values(&m.bytes, "from"), vec!["a@[127.0.0.1]"]);
        assert_eq!(stored_message_id(&m.bytes), Some(m.message_id));
    }
}
