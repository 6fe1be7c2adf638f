//! Test support for the policy rules: the upstream fixtures of /work/shared/fixtures (an
//! optional cross-check, skipped when the folder is absent) and PGP/MIME messages
//! generated here with the `pgp` crate, so the repository's tests stand alone.

use std::path::PathBuf;
use std::sync::OnceLock;

use pgp::composed::{
    ArmorOptions, EncryptionCaps, KeyType, MessageBuilder, SecretKeyParamsBuilder, SignedPublicKey,
    SubkeyParamsBuilder,
};
use pgp::crypto::ecc_curve::ECCCurve;
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::types::{Password, StringToKey};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

/// Sender and recipient used in generated messages and filled into the templates.
pub const FROM: &str = "alice@relay.example";
pub const TO: &str = "bob@relay.example";

/// Expected result of a fixture (fixtures/README.md "Expected verdicts").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Reject523,
}

/// One upstream fixture with its documented verdicts.
pub struct Fixture {
    pub name: &'static str,
    /// Gate verdict (`is_encrypted`, both directions).
    pub encrypted: bool,
    pub securejoin: bool,
    /// Submission by the From address to one other recipient.
    pub outgoing: Verdict,
    /// Arrival for a recipient with the enforce-E2EE flag.
    pub incoming: Verdict,
}

/// The nine cases of fixtures/README.md. `mailer-daemon.eml` outgoing is "523 if sent as
/// itself" (MAIL FROM = its From address); `asm.eml` outgoing as given (other recipient).
pub const FIXTURES: &[Fixture] = &[
    Fixture {
        name: "encrypted.eml",
        encrypted: true,
        securejoin: false,
        outgoing: Verdict::Accept,
        incoming: Verdict::Accept,
    },
    Fixture {
        name: "securejoin-vc.eml",
        encrypted: false,
        securejoin: true,
        outgoing: Verdict::Accept,
        incoming: Verdict::Accept,
    },
    Fixture {
        name: "securejoin-vc-fake.eml",
        encrypted: false,
        securejoin: false,
        outgoing: Verdict::Reject523,
        incoming: Verdict::Reject523,
    },
    Fixture {
        name: "fake-encrypted.eml",
        encrypted: false,
        securejoin: false,
        outgoing: Verdict::Reject523,
        incoming: Verdict::Reject523,
    },
    Fixture {
        name: "literal.eml",
        encrypted: false,
        securejoin: false,
        outgoing: Verdict::Reject523,
        incoming: Verdict::Reject523,
    },
    Fixture {
        name: "plain.eml",
        encrypted: false,
        securejoin: false,
        outgoing: Verdict::Reject523,
        incoming: Verdict::Reject523,
    },
    Fixture {
        name: "mdn.eml",
        encrypted: false,
        securejoin: false,
        outgoing: Verdict::Reject523,
        incoming: Verdict::Reject523,
    },
    Fixture {
        name: "mailer-daemon.eml",
        encrypted: false,
        securejoin: false,
        outgoing: Verdict::Reject523,
        incoming: Verdict::Accept,
    },
    Fixture {
        name: "asm.eml",
        encrypted: false,
        securejoin: false,
        outgoing: Verdict::Reject523,
        incoming: Verdict::Reject523,
    },
];

/// The folders of fixtures/README.md.
pub const FOLDER_CONCRETE: &str = "encryption-gate";
pub const FOLDER_TEMPLATES: &str = "encryption-gate-templates";

/// `../shared/fixtures` beside the repository, if present.
pub fn fixtures_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures"
    ));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "note: {} not found; skipping the upstream fixture cross-check",
            dir.display()
        );
        None
    }
}

/// A fixture ready for use: the concrete file as is, or the template filled with real
/// addresses (README note 1; Python `str.format` placeholders).
pub struct Loaded {
    pub raw: Vec<u8>,
    /// The From address of the loaded message (the sender to submit as).
    pub from: String,
}

pub fn load_fixture(dir: &std::path::Path, folder: &str, name: &str) -> Loaded {
    let path = dir.join(folder).join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let (raw, from) = if folder == FOLDER_TEMPLATES {
        let text = String::from_utf8(bytes).expect("templates are UTF-8");
        let filled = text
            .replace("{from_addr}", FROM)
            .replace("{to_addr}", TO)
            .replace("{subject}", "Test subject");
        assert!(
            !filled.contains("{from_addr}") && !filled.contains("{to_addr}"),
            "template {name} still has placeholders"
        );
        (filled.into_bytes(), FROM.to_string())
    } else {
        (bytes, "one@example.org".to_string())
    };
    // As SMTP delivers it: two fixtures use bare LF line endings.
    let raw = crate::message::normalize_line_endings(raw);
    if name == "mailer-daemon.eml" {
        // Identical in both folders, fixed addresses.
        return Loaded {
            raw,
            from: "MAILER-DAEMON@example.org".to_string(),
        };
    }
    Loaded { raw, from }
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// An OpenPGP key (Ed25519 primary, X25519 encryption subkey), generated once per seed.
fn key(seed: u64) -> SignedPublicKey {
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
        .primary_user_id(format!("<key{seed}@relay.example>"))
        .subkeys(vec![enc.build().expect("subkey params")]);
    let secret = params
        .build()
        .expect("key params")
        .generate(rng(seed))
        .expect("key generation");
    SignedPublicKey::from(secret)
}

fn keys() -> &'static (SignedPublicKey, SignedPublicKey) {
    static KEYS: OnceLock<(SignedPublicKey, SignedPublicKey)> = OnceLock::new();
    KEYS.get_or_init(|| (key(1), key(2)))
}

/// How the generated OpenPGP message is encrypted.
#[derive(Debug, Clone, Copy)]
pub enum Esk {
    /// To the recipient's and the sender's key, like Delta Chat: PKESK, PKESK, SEIPD.
    TwoKeys,
    /// One PKESK.
    OneKey,
    /// A password: SKESK, SEIPD.
    Password,
}

/// Options of [`pgp_armored`].
#[derive(Debug, Clone, Copy)]
pub struct ArmorSpec<'a> {
    pub esk: Esk,
    pub plaintext_len: usize,
    /// Armor headers written by the `pgp` crate (e.g. `Version`, `Comment`).
    pub headers: &'a [(&'a str, &'a str)],
    pub checksum: bool,
    /// Partial body chunk size for the SEIPD packet (`pgp` default when `None`).
    pub chunk: Option<u32>,
}

impl Default for ArmorSpec<'_> {
    fn default() -> Self {
        ArmorSpec {
            esk: Esk::TwoKeys,
            plaintext_len: 300,
            headers: &[],
            checksum: true,
            chunk: None,
        }
    }
}

/// A real encrypted OpenPGP message as binary packets.
pub fn pgp_binary(esk: Esk, plaintext_len: usize, chunk: Option<u32>, seed: u64) -> Vec<u8> {
    build(esk, plaintext_len, chunk, seed, |b, r| {
        b.to_vec(r).expect("encrypt")
    })
}

/// A real encrypted OpenPGP message, ASCII-armored by the `pgp` crate, with CRLF line
/// endings as in a MIME body.
pub fn pgp_armored(spec: ArmorSpec<'_>, seed: u64) -> String {
    let mut headers = pgp::armor::Headers::new();
    for (k, v) in spec.headers {
        headers
            .entry(k.to_string())
            .or_default()
            .push(v.to_string());
    }
    let armored = build(spec.esk, spec.plaintext_len, spec.chunk, seed, |b, r| {
        b.to_armored_string(
            r,
            ArmorOptions {
                headers: if spec.headers.is_empty() {
                    None
                } else {
                    Some(&headers)
                },
                include_checksum: spec.checksum,
            },
        )
        .expect("encrypt and armor")
    });
    to_crlf(&armored)
}

fn build<T>(
    esk: Esk,
    plaintext_len: usize,
    chunk: Option<u32>,
    seed: u64,
    finish: impl FnOnce(
        pgp::composed::MessageBuilder<
            'static,
            pgp::composed::DummyReader,
            pgp::composed::EncryptionSeipdV1,
        >,
        ChaCha8Rng,
    ) -> T,
) -> T {
    let (k1, k2) = keys();
    let plaintext: Vec<u8> = (0..plaintext_len).map(|i| b'a' + (i % 26) as u8).collect();
    let mut builder = MessageBuilder::from_bytes("", plaintext)
        .seipd_v1(rng(seed), SymmetricKeyAlgorithm::AES128);
    if let Some(size) = chunk {
        builder.partial_chunk_size(size).expect("chunk size");
    }
    match esk {
        Esk::TwoKeys => {
            builder
                .encrypt_to_key(rng(seed + 1), &k1.public_subkeys[0])
                .expect("encrypt to key 1");
            builder
                .encrypt_to_key(rng(seed + 2), &k2.public_subkeys[0])
                .expect("encrypt to key 2");
        }
        Esk::OneKey => {
            builder
                .encrypt_to_key(rng(seed + 1), &k1.public_subkeys[0])
                .expect("encrypt to key");
        }
        Esk::Password => {
            builder
                .encrypt_with_password(
                    StringToKey::new_default(rng(seed + 3)),
                    &Password::from("secret"),
                )
                .expect("encrypt with password");
        }
    }
    finish(builder, rng(seed + 4))
}

/// Normalizes any line endings to CRLF.
pub fn to_crlf(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\n', "\r\n")
}

/// Standard padded base64 of `data`, wrapped at 64 columns (RFC 9580 §6.3).
pub fn base64_lines(data: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = String::new();
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push_str("\r\n");
    }
    out
}

/// Hand-made armor around packet bytes: BEGIN, blank line, base64, optional `=XXXX`
/// checksum line (its value is never checked by the gate), END.
pub fn armor_by_hand(data: &[u8], checksum: bool) -> String {
    let mut s = String::from("-----BEGIN PGP MESSAGE-----\r\n\r\n");
    s.push_str(&base64_lines(data));
    if checksum {
        s.push_str("=AAAA\r\n");
    }
    s.push_str("-----END PGP MESSAGE-----\r\n");
    s
}

/// A Delta Chat style PGP/MIME message (RFC 3156 §4) around `armored`.
pub fn pgp_mime(from: &str, to: &str, armored: &str) -> Vec<u8> {
    pgp_mime_parts(from, to, &[version_part(), payload_part(armored)])
}

pub fn version_part() -> String {
    "Content-Description: PGP/MIME version identification\r\n\
     Content-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n"
        .to_string()
}

pub fn payload_part(armored: &str) -> String {
    format!(
        "Content-Description: OpenPGP encrypted message\r\n\
         Content-Disposition: inline; filename=\"encrypted.asc\";\r\n\
         Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n{armored}\r\n"
    )
}

/// A `multipart/encrypted` message with the given raw parts (each: headers, blank line,
/// body).
pub fn pgp_mime_parts(from: &str, to: &str, parts: &[String]) -> Vec<u8> {
    multipart(
        from,
        to,
        "multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n\tboundary=\"XYZboundary42\"",
        "XYZboundary42",
        parts,
    )
}

/// A message with top-level `content_type` (which must name `boundary`) and `parts`.
pub fn multipart(
    from: &str,
    to: &str,
    content_type: &str,
    boundary: &str,
    parts: &[String],
) -> Vec<u8> {
    let mut s = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: [...]\r\nDate: Sun, 15 Oct 2023 16:43:21 +0000\r\n\
         Message-ID: <gen@relay.example>\r\nChat-Version: 1.0\r\nMIME-Version: 1.0\r\n\
         Content-Type: {content_type}\r\n\r\n\r\n"
    );
    for p in parts {
        s.push_str(&format!("--{boundary}\r\n{p}\r\n"));
    }
    s.push_str(&format!("--{boundary}--\r\n\r\n"));
    s.into_bytes()
}
