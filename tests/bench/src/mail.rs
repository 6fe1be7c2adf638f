//! Benchmark messages: real PGP/MIME (RFC 3156) made with the `pgp` crate, in the shape
//! Delta Chat sends and the relay's encryption gate accepts (spec/relay.md §7, the
//! `encrypted.eml` fixture): `multipart/encrypted` with a `Version: 1` part and an
//! ASCII-armored OpenPGP message of PKESK v3 + SEIPD v1.

use anyhow::{Context, Result};
use pgp::composed::{
    ArmorOptions, EncryptionCaps, KeyType, MessageBuilder, SecretKeyParamsBuilder, SignedPublicKey,
    SubkeyParamsBuilder,
};
use pgp::crypto::ecc_curve::ECCCurve;
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use rand::{Rng, RngCore};

/// One recipient's OpenPGP certificate (Ed25519 primary, X25519 encryption subkey, like
/// Delta Chat's default keys).
pub fn recipient_key(addr: &str) -> Result<SignedPublicKey> {
    let mut enc = SubkeyParamsBuilder::default();
    enc.key_type(KeyType::ECDH(ECCCurve::Curve25519Legacy))
        .can_sign(false)
        .can_encrypt(EncryptionCaps::All)
        .can_authenticate(false);
    let mut params = SecretKeyParamsBuilder::default();
    params
        .key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(true)
        .can_encrypt(EncryptionCaps::None)
        .primary_user_id(format!("<{addr}>"))
        .subkeys(vec![enc.build().context("subkey parameters")?]);
    let secret = params
        .build()
        .context("key parameters")?
        .generate(rand::thread_rng())
        .context("key generation")?;
    Ok(SignedPublicKey::from(secret))
}

/// `plaintext_len` random bytes encrypted to `key`, ASCII-armored (with the CRC line,
/// no armor headers: GATE-6), CRLF line ends.
pub fn armored(key: &SignedPublicKey, plaintext_len: usize) -> Result<String> {
    let mut rng = rand::thread_rng();
    let mut plaintext = vec![0u8; plaintext_len];
    rng.fill_bytes(&mut plaintext);
    let mut builder =
        MessageBuilder::from_bytes("", plaintext).seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES128);
    let subkey = key
        .public_subkeys
        .first()
        .context("certificate without an encryption subkey")?;
    builder
        .encrypt_to_key(&mut rng, subkey)
        .context("encrypt to key")?;
    let text = builder
        .to_armored_string(
            &mut rng,
            ArmorOptions {
                headers: None,
                include_checksum: true,
            },
        )
        .context("encrypt and armor")?;
    Ok(text.replace("\r\n", "\n").replace('\n', "\r\n"))
}

/// A random lowercase token of `n` letters.
fn token(n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| char::from(b'a' + rng.gen_range(0..26u8)))
        .collect()
}

/// The header fields before the MIME ones: From, To, Subject, Date, Message-ID,
/// Chat-Version, MIME-Version. CRLF line ends.
fn top_headers(from: &str, to: &str) -> String {
    let mut m = String::new();
    m += &format!("From: <{from}>\r\n");
    m += &format!("To: <{to}>\r\n");
    m += "Subject: [...]\r\n";
    m += "Date: Sat, 28 Nov 2026 12:00:00 +0000\r\n";
    m += &format!("Message-ID: <Mr.{}@localhost>\r\n", token(24));
    m += "Chat-Version: 1.0\r\n";
    m += "MIME-Version: 1.0\r\n";
    m
}

/// The `multipart/encrypted` Content-Type field for `boundary`.
fn encrypted_content_type(boundary: &str) -> String {
    format!(
        "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n\tboundary=\"{boundary}\"\r\n"
    )
}

/// The PGP/MIME body (RFC 3156 §4) for `boundary`, up to and including the closing
/// delimiter line.
fn encrypted_body(boundary: &str, armored: &str) -> String {
    let mut m = String::with_capacity(armored.len() + 512);
    m += "\r\n";
    m += &format!("--{boundary}\r\n");
    m += "Content-Description: PGP/MIME version identification\r\n";
    m += "Content-Type: application/pgp-encrypted\r\n";
    m += "\r\n";
    m += "Version: 1\r\n";
    m += "\r\n\r\n";
    m += &format!("--{boundary}\r\n");
    m += "Content-Description: OpenPGP encrypted message\r\n";
    m += "Content-Disposition: inline; filename=\"encrypted.asc\";\r\n";
    m += "Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n";
    m += "\r\n";
    m += armored;
    if !armored.ends_with("\r\n") {
        m += "\r\n";
    }
    m += "\r\n\r\n";
    m += &format!("--{boundary}--\r\n");
    m
}

/// The whole RFC 5322 message: `From` is the sender (SUB-6: must equal the login and
/// MAIL FROM), body a PGP/MIME `multipart/encrypted` (GATE-1..GATE-5). CRLF line ends.
pub fn pgp_mime(from: &str, to: &str, armored: &str) -> Vec<u8> {
    let boundary = token(30);
    let mut m = top_headers(from, to);
    m += &encrypted_content_type(&boundary);
    m += "\r\n";
    m += &encrypted_body(&boundary, armored);
    m.into_bytes()
}

/// A cleartext `text/plain` message (what the encryption gate must refuse).
pub fn cleartext(from: &str, to: &str, text: &str) -> Vec<u8> {
    let mut m = top_headers(from, to);
    m += "Content-Type: text/plain; charset=utf-8\r\n\r\n";
    m += text;
    m += "\r\n";
    m.into_bytes()
}

/// Issue 13's gate trick: a `multipart/mixed` Content-Type field above the real
/// `multipart/encrypted` one, a valid PGP/MIME body, and after its closing delimiter
/// parts of the outer boundary: one `text/plain` part with `cleartext` (if given), then
/// `empty_parts` parts of 15 bytes each (`--bnd01`, no header, body `ab`). A parser that
/// takes the first Content-Type sees the outer parts; one that takes the last sees
/// PGP/MIME with an epilogue.
pub fn gate_trick(
    from: &str,
    to: &str,
    armored: &str,
    cleartext: Option<&str>,
    empty_parts: usize,
) -> Vec<u8> {
    const OUTER: &str = "bnd01";
    let inner = token(30);
    let mut m = top_headers(from, to);
    m += &format!("Content-Type: multipart/mixed; boundary=\"{OUTER}\"\r\n");
    m += &encrypted_content_type(&inner);
    m += "\r\n";
    m += &encrypted_body(&inner, armored);
    let mut out = m.into_bytes();
    if let Some(text) = cleartext {
        out.extend_from_slice(
            format!("--{OUTER}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n")
                .as_bytes(),
        );
    }
    let part = format!("--{OUTER}\r\n\r\nab\r\n");
    out.reserve(part.len() * empty_parts + 16);
    for _ in 0..empty_parts {
        out.extend_from_slice(part.as_bytes());
    }
    out.extend_from_slice(format!("--{OUTER}--\r\n").as_bytes());
    out
}

/// A `multipart/mixed` message of `parts` empty parts (`--b`, an empty header, an
/// empty body: 7 bytes each), as in issue 13 point 2.
pub fn many_empty_parts(from: &str, to: &str, parts: usize) -> Vec<u8> {
    let mut m = top_headers(from, to);
    m += "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n";
    let mut out = m.into_bytes();
    out.reserve(parts * 7 + 16);
    for _ in 0..parts {
        out.extend_from_slice(b"--b\r\n\r\n");
    }
    out.extend_from_slice(b"--b--\r\n");
    out
}

/// A valid PGP/MIME message of about `target` bytes (armored random plaintext).
pub fn pgp_mime_of_size(
    key: &SignedPublicKey,
    from: &str,
    to: &str,
    target: usize,
) -> Result<Vec<u8>> {
    // Armor: 4/3 of the binary, 64 characters + CRLF per line; ~1 KiB of headers.
    let plaintext = (target.saturating_sub(1200) as f64 * 0.75 * 64.0 / 66.0) as usize;
    let a = armored(key, plaintext.max(256))?;
    Ok(pgp_mime(from, to, &a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_shape() {
        let key = recipient_key("bob@[127.0.0.1]").expect("key");
        let a = armored(&key, 2000).expect("armor");
        assert!(a.starts_with("-----BEGIN PGP MESSAGE-----\r\n"));
        assert!(a.trim_end().ends_with("-----END PGP MESSAGE-----"));
        assert!(!a.contains("Version: "));
        let m = pgp_mime("alice@[127.0.0.1]", "bob@[127.0.0.1]", &a);
        let text = String::from_utf8(m).expect("ascii");
        assert!(text.contains("multipart/encrypted"));
        assert!(text.contains("\r\nVersion: 1\r\n"));
        assert!(!text.replace("\r\n", "").contains('\n'));
    }

    #[test]
    fn hostile_shapes() {
        let m = many_empty_parts("a@[127.0.0.2]", "b@[127.0.0.1]", 1000);
        let text = String::from_utf8(m).expect("ascii");
        assert_eq!(text.matches("\r\n--b\r\n").count(), 1000);
        assert!(text.ends_with("--b\r\n\r\n--b--\r\n"));
        let key = recipient_key("bob@[127.0.0.1]").expect("key");
        let a = armored(&key, 500).expect("armor");
        let t = gate_trick("a@x", "b@y", &a, Some("SECRET"), 10);
        let t = String::from_utf8(t).expect("ascii");
        let mixed = t.find("multipart/mixed").expect("mixed");
        let enc = t.find("multipart/encrypted").expect("encrypted");
        let closing = t
            .find("--\r\n--bnd01\r\nContent-Type: text/plain")
            .expect("close");
        assert!(mixed < enc && enc < closing);
        assert!(t.contains("\r\n\r\nSECRET\r\n"));
        assert_eq!(t.matches("--bnd01\r\n\r\nab\r\n").count(), 10);
        assert!(t.ends_with("--bnd01--\r\n"));
        let big = pgp_mime_of_size(&key, "a@x", "b@y", 200_000).expect("big");
        assert!((190_000..210_000).contains(&big.len()), "{}", big.len());
    }
}
