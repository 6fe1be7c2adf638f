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

/// The whole RFC 5322 message: `From` is the sender (SUB-6: must equal the login and
/// MAIL FROM), body a PGP/MIME `multipart/encrypted` (GATE-1..GATE-5). CRLF line ends.
pub fn pgp_mime(from: &str, to: &str, armored: &str) -> Vec<u8> {
    let mut rng = rand::thread_rng();
    let boundary: String = (0..30)
        .map(|_| char::from(b'a' + rng.gen_range(0..26u8)))
        .collect();
    let msgid: String = (0..24)
        .map(|_| char::from(b'a' + rng.gen_range(0..26u8)))
        .collect();
    let mut m = String::with_capacity(armored.len() + 1024);
    m += &format!("From: <{from}>\r\n");
    m += &format!("To: <{to}>\r\n");
    m += "Subject: [...]\r\n";
    m += "Date: Sat, 28 Nov 2026 12:00:00 +0000\r\n";
    m += &format!("Message-ID: <Mr.{msgid}@localhost>\r\n");
    m += "Chat-Version: 1.0\r\n";
    m += "MIME-Version: 1.0\r\n";
    m += "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n";
    m += &format!("\tboundary=\"{boundary}\"\r\n");
    m += "\r\n\r\n";
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
    m.into_bytes()
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
}
