//! The encryption gate (spec/relay.md §7, GATE-1..9): decides whether a parsed message
//! is an OpenPGP/MIME encrypted message (RFC 3156 §4 shape, then an OpenPGP packet walk
//! over the armored payload, RFC 9580 §4.2) and whether it is a cleartext Secure-Join
//! request. Pure functions, no I/O; the verdicts of the upstream fixtures are in
//! fixtures/README.md (GATE-10).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64_STANDARD;

use crate::message::{Kind, Node, View};
use crate::policy::SmtpReply;

/// Which side of the relay a message is crossing. Only GATE-6 differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Submitted by a local user (SUB-7).
    Outgoing,
    /// Arriving from another relay (IN-4c).
    Incoming,
}

/// SUB-9 / IN-4d: the reply for cleartext that no exception lets through.
pub(crate) fn encryption_needed() -> SmtpReply {
    SmtpReply::new(523, "Encryption Needed: Invalid Unencrypted Mail")
}

/// A leaf part of the given type (compared lower-case; RFC 2045 §5.2: a part without a
/// Content-Type is `text/plain`, which the structure records).
fn is_leaf(part: &Node, ctype: &str, subtype: &str) -> bool {
    matches!(part.kind, Kind::Leaf) && part.content_type.is(ctype, subtype)
}

/// GATE-1..8: is this an OpenPGP/MIME encrypted message that the relay may carry? The
/// structure was read strictly when the message arrived, so every reader sees these
/// same parts.
pub fn is_encrypted(msg: View<'_>, dir: Direction) -> bool {
    let root = msg.root;
    // GATE-1: top level is multipart/encrypted (type compared case-insensitively).
    if !root.content_type.is("multipart", "encrypted") {
        return false;
    }
    let Some(parts) = root.children() else {
        return false;
    };
    // GATE-4: exactly two parts (upstream passes a lone part 1; we do not).
    // GATE-2: neither is multipart (nor an encapsulated message).
    let [version_part, payload_part] = parts else {
        return false;
    };
    // A preamble is allowed (RFC 2046 §5.1.1: readers ignore it; Thunderbird writes one);
    // the parser refused text after the closing delimiter.
    // GATE-3: part 1 is the PGP/MIME version identification (RFC 3156 §4).
    if !is_leaf(version_part, "application", "pgp-encrypted") {
        return false;
    }
    let version_ok = msg.content(version_part).is_some_and(|body| {
        std::str::from_utf8(&body).is_ok_and(|body| body.trim() == "Version: 1")
    });
    if !version_ok {
        return false;
    }
    // GATE-4: part 2 carries the armored payload.
    if !is_leaf(payload_part, "application", "octet-stream") {
        return false;
    }
    msg.content(payload_part)
        .is_some_and(|body| check_armored_payload(&body, dir))
}

const ARMOR_BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----\r\n";
const ARMOR_END: &[u8] = b"-----END PGP MESSAGE-----";
const VERSION_HEADER: &[u8] = b"Version: ";

/// GATE-5..8 over the decoded body of part 2.
fn check_armored_payload(body: &[u8], dir: Direction) -> bool {
    // GATE-5: BEGIN line with CRLF; END line after removing trailing CRLF pairs.
    let Some(mut payload) = body.strip_prefix(ARMOR_BEGIN) else {
        tracing::debug!("encryption gate: no PGP MESSAGE begin line");
        return false;
    };
    while let Some(rest) = payload.strip_suffix(b"\r\n") {
        payload = rest;
    }
    let Some(mut payload) = payload.strip_suffix(ARMOR_END) else {
        tracing::debug!("encryption gate: no PGP MESSAGE end line");
        return false;
    };
    // GATE-6: a `Version: ` armor header fails outgoing; incoming drops that one line.
    // Any other armor header is left in place and fails base64 decoding below.
    if payload.starts_with(VERSION_HEADER) {
        match dir {
            Direction::Outgoing => {
                tracing::debug!("encryption gate: armor Version header in outgoing mail");
                return false;
            }
            Direction::Incoming => {
                if let Some(pos) = find(payload, b"\r\n") {
                    payload = &payload[pos + 2..];
                }
            }
        }
    }
    // GATE-7: drop leading CRLF pairs, cut at the last `=` (the CRC-24 line, RFC 4880
    // §6.1), remove line breaks, decode padded standard base64. Quirk kept: without a
    // checksum line, base64 that ends in `=` padding loses it and fails.
    while let Some(rest) = payload.strip_prefix(b"\r\n") {
        payload = rest;
    }
    if let Some(pos) = payload.iter().rposition(|&b| b == b'=') {
        payload = &payload[..pos];
    }
    let Some(packets) = decode_base64_lines(payload) else {
        tracing::debug!("encryption gate: armored payload is not valid base64");
        return false;
    };
    check_packets(&packets)
}

/// Padded standard base64 with every CR and LF ignored, decoded in chunks so that a big
/// payload is not copied first (the same verdict as decoding the joined text at once:
/// padding is only allowed in the last chunk).
fn decode_base64_lines(text: &[u8]) -> Option<Vec<u8>> {
    const CHUNK: usize = 4096;
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 3);
    let mut chunk: Vec<u8> = Vec::with_capacity(CHUNK);
    let mut bytes = text
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .peekable();
    loop {
        chunk.clear();
        chunk.extend(bytes.by_ref().take(CHUNK));
        let last = bytes.peek().is_none();
        if !last && chunk.contains(&b'=') {
            return None;
        }
        if chunk.is_empty() && !out.is_empty() {
            return Some(out);
        }
        BASE64_STANDARD.decode_vec(&chunk, &mut out).ok()?;
        if last {
            return Some(out);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// OpenPGP packet tags (RFC 9580 §5).
const TAG_PKESK: u8 = 1;
const TAG_SKESK: u8 = 3;
const TAG_SEIPD: u8 = 18;

/// GATE-8: zero or more PKESK/SKESK packets followed by exactly one SEIPD packet that ends
/// the data. Any truncation, an empty input or an indeterminate length fails.
fn check_packets(data: &[u8]) -> bool {
    walk_packets(data).unwrap_or(false)
}

/// The packet walk; `None` means a truncated header (GATE-8.4).
fn walk_packets(data: &[u8]) -> Option<bool> {
    let mut i: usize = 0;
    while i < data.len() {
        let header = *data.get(i)?;
        i += 1;
        let (tag, body_len) = if header & 0xC0 == 0xC0 {
            // GATE-8.1: new-format header (RFC 9580 §4.2.1).
            let tag = header & 0x3F;
            // GATE-8.2: partial body lengths (RFC 9580 §4.2.1.4): skip each chunk.
            loop {
                let o = *data.get(i)?;
                if !(224..255).contains(&o) {
                    break;
                }
                let chunk = 1usize << (o & 0x1F);
                i = i.checked_add(1)?.checked_add(chunk)?;
            }
            let o = *data.get(i)?;
            let len = if o < 192 {
                i += 1;
                usize::from(o)
            } else if o < 224 {
                let next = *data.get(i + 1)?;
                i += 2;
                ((usize::from(o) - 192) << 8) + usize::from(next) + 192
            } else {
                // o == 255 (224..255 were consumed above): five-octet length.
                let b = data.get(i + 1..i + 5)?;
                i += 5;
                u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
            };
            (tag, len)
        } else if header & 0xC0 == 0x80 {
            // GATE-8.1: old-format header (RFC 9580 §4.2.2), accepted since filtermail
            // 0.3.0; the indeterminate length (type 3) is rejected.
            let tag = (header >> 2) & 0x0F;
            let len = match header & 0x03 {
                0 => {
                    let b = *data.get(i)?;
                    i += 1;
                    usize::from(b)
                }
                1 => {
                    let b = data.get(i..i + 2)?;
                    i += 2;
                    usize::from(u16::from_be_bytes([b[0], b[1]]))
                }
                2 => {
                    let b = data.get(i..i + 4)?;
                    i += 4;
                    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
                }
                _ => {
                    tracing::debug!("encryption gate: indeterminate packet length");
                    return Some(false);
                }
            };
            (tag, len)
        } else {
            tracing::debug!("encryption gate: not an OpenPGP packet header");
            return Some(false);
        };
        // GATE-8.3
        i = i.checked_add(body_len)?;
        if i == data.len() {
            return Some(tag == TAG_SEIPD);
        }
        if tag != TAG_PKESK && tag != TAG_SKESK {
            tracing::debug!(tag, "encryption gate: unexpected packet before the end");
            return Some(false);
        }
    }
    // Empty data, or the last length ran past the end.
    Some(false)
}

/// GATE-9: a cleartext Secure-Join request (`vc-request` / `vg-request`), which the
/// relay lets through because the peers do not have each other's keys yet.
pub fn is_securejoin_request(msg: View<'_>) -> bool {
    let header_ok = msg
        .header_text("Secure-Join")
        .is_some_and(|v| v == "vc-request" || v == "vg-request");
    if !header_ok {
        return false;
    }
    let Some([part]) = msg.root.children() else {
        return false;
    };
    if !is_leaf(part, "text", "plain") {
        return false;
    }
    msg.content(part).is_some_and(|body| {
        let body = String::from_utf8_lossy(&body).trim().to_lowercase();
        body == "secure-join: vc-request" || body == "secure-join: vg-request"
    })
}

/// Shared test helpers of the policy modules: fixtures and generated PGP/MIME messages.
#[cfg(test)]
#[path = "testdata/support.rs"]
pub(crate) mod test_support;

#[cfg(test)]
mod tests {
    use super::test_support::{
        self as support, ArmorSpec, Esk, FIXTURES, FOLDER_CONCRETE, FOLDER_TEMPLATES,
    };
    use super::*;
    use crate::message::Parsed;

    fn parse(raw: &[u8]) -> Parsed {
        Parsed::parse(raw.to_vec()).expect("test message parses")
    }

    /// Gate verdicts `(outgoing, incoming)` of a raw message; `(false, false)` for one
    /// the structure parser refuses.
    fn gate(raw: &[u8]) -> (bool, bool) {
        let Ok(msg) = Parsed::parse(raw.to_vec()) else {
            return (false, false);
        };
        (
            is_encrypted(msg.view(), Direction::Outgoing),
            is_encrypted(msg.view(), Direction::Incoming),
        )
    }

    fn mime(armored: &str) -> Vec<u8> {
        support::pgp_mime(support::FROM, support::TO, armored)
    }

    #[test]
    fn upstream_fixtures_gate_and_securejoin() {
        let Some(dir) = support::fixtures_dir() else {
            return;
        };
        for folder in [FOLDER_CONCRETE, FOLDER_TEMPLATES] {
            for fx in FIXTURES {
                let loaded = support::load_fixture(&dir, folder, fx.name);
                assert_eq!(
                    gate(&loaded.raw),
                    (fx.encrypted, fx.encrypted),
                    "{folder}/{}",
                    fx.name
                );
                let msg = parse(&loaded.raw);
                assert_eq!(
                    is_securejoin_request(msg.view()),
                    fx.securejoin,
                    "{folder}/{} secure-join",
                    fx.name
                );
            }
        }
    }

    #[test]
    fn upstream_payload_with_version_header_is_direction_specific() {
        // README note 4: the encrypted.eml payload with `Version:` right after BEGIN.
        let Some(dir) = support::fixtures_dir() else {
            return;
        };
        let loaded = support::load_fixture(&dir, FOLDER_CONCRETE, "encrypted.eml");
        let text = String::from_utf8(loaded.raw).expect("fixture is ASCII");
        let with_version = text.replacen(
            "-----BEGIN PGP MESSAGE-----\r\n\r\n",
            "-----BEGIN PGP MESSAGE-----\r\nVersion: 1\r\n",
            1,
        );
        assert_ne!(text, with_version);
        assert_eq!(gate(with_version.as_bytes()), (false, true));
        let with_comment = text.replacen(
            "-----BEGIN PGP MESSAGE-----\r\n\r\n",
            "-----BEGIN PGP MESSAGE-----\r\nComment: x\r\n\r\n",
            1,
        );
        assert_eq!(gate(with_comment.as_bytes()), (false, false));
    }

    #[test]
    fn generated_pgp_mime_accepted_both_ways() {
        for (i, esk) in [Esk::TwoKeys, Esk::OneKey, Esk::Password]
            .into_iter()
            .enumerate()
        {
            for len in [0, 1, 300, 5000] {
                let spec = ArmorSpec {
                    esk,
                    plaintext_len: len,
                    ..ArmorSpec::default()
                };
                let armored = support::pgp_armored(spec, 100 + i as u64 * 10 + len as u64);
                assert_eq!(gate(&mime(&armored)), (true, true), "{esk:?} len {len}");
            }
        }
    }

    #[test]
    fn generated_packets_have_the_expected_shape() {
        // The generated message is PKESK, PKESK, SEIPD (tags 1, 1, 18), like Delta Chat.
        let bin = support::pgp_binary(Esk::TwoKeys, 100, None, 7);
        let tags: Vec<u8> = packet_tags(&bin);
        assert_eq!(tags, vec![TAG_PKESK, TAG_PKESK, TAG_SEIPD]);
        assert!(check_packets(&bin));
        let bin = support::pgp_binary(Esk::Password, 100, None, 8);
        assert_eq!(packet_tags(&bin), vec![TAG_SKESK, TAG_SEIPD]);
        assert!(check_packets(&bin));
    }

    /// Tags of a new-format packet sequence without partial lengths (test helper).
    fn packet_tags(data: &[u8]) -> Vec<u8> {
        let mut tags = Vec::new();
        let mut i = 0;
        while i < data.len() {
            tags.push(data[i] & 0x3F);
            let mut j = i + 1;
            loop {
                let o = data[j];
                if (224..255).contains(&o) {
                    j += 1 + (1usize << (o & 0x1F));
                    continue;
                }
                let (len, hdr) = match o {
                    0..192 => (o as usize, 1),
                    192..224 => ((((o as usize) - 192) << 8) + data[j + 1] as usize + 192, 2),
                    _ => (
                        u32::from_be_bytes([data[j + 1], data[j + 2], data[j + 3], data[j + 4]])
                            as usize,
                        5,
                    ),
                };
                i = j + hdr + len;
                break;
            }
        }
        tags
    }

    /// The `pgp` crate as an oracle (spec/crates.md): where it reads an encrypted message
    /// the gate accepts, where it reads something else or nothing the gate refuses.
    #[test]
    fn pgp_parser_agrees() {
        let pgp_says_encrypted = |armored: &str| {
            pgp::composed::Message::from_string(armored).is_ok_and(|(m, _)| m.is_encrypted())
        };
        let mut cases: Vec<String> = Vec::new();
        for (i, esk) in [Esk::TwoKeys, Esk::OneKey, Esk::Password]
            .into_iter()
            .enumerate()
        {
            cases.push(support::pgp_armored(
                ArmorSpec {
                    esk,
                    ..ArmorSpec::default()
                },
                800 + i as u64,
            ));
        }
        // Literal data, compressed data, a bare signature-like packet, not base64.
        cases.push(support::armor_by_hand(
            &[0xCB, 7, b'b', 0, 0, 0, 0, 0, b'x'],
            true,
        ));
        cases.push(support::armor_by_hand(&[0xC8, 2, 0, 0], true));
        cases.push(
            "-----BEGIN PGP MESSAGE-----\r\n\r\nMeow!\r\n-----END PGP MESSAGE-----\r\n".to_string(),
        );
        let mut encrypted = 0;
        for armored in &cases {
            let ours = check_armored_payload(armored.as_bytes(), Direction::Outgoing);
            assert_eq!(ours, pgp_says_encrypted(armored), "{armored}");
            encrypted += usize::from(ours);
        }
        assert_eq!(encrypted, 3);
    }

    #[test]
    fn armor_headers_gate_6() {
        let version = ArmorSpec {
            headers: &[("Version", "rpgp 0.21")],
            ..ArmorSpec::default()
        };
        let armored = support::pgp_armored(version, 200);
        assert!(armored.contains("\r\nVersion: rpgp 0.21\r\n"), "{armored}");
        assert_eq!(gate(&mime(&armored)), (false, true));

        let comment = ArmorSpec {
            headers: &[("Comment", "made by a test")],
            ..ArmorSpec::default()
        };
        let armored = support::pgp_armored(comment, 201);
        assert!(armored.contains("\r\nComment: made by a test\r\n"));
        assert_eq!(gate(&mime(&armored)), (false, false));

        // Version followed by another header: incoming drops only the Version line.
        let both = ArmorSpec {
            headers: &[("Version", "x"), ("Comment", "y")],
            ..ArmorSpec::default()
        };
        let armored = support::pgp_armored(both, 202);
        assert_eq!(gate(&mime(&armored)), (false, false));
    }

    #[test]
    fn checksum_line_quirk_gate_7() {
        // 3n bytes: no `=` padding, fine without a checksum line.
        let mut data = support::pgp_binary(Esk::OneKey, 100, None, 300);
        let pad = (3 - data.len() % 3) % 3;
        // Make the SEIPD body longer by `pad` bytes so the total is a multiple of 3.
        grow_last_packet(&mut data, pad);
        assert_eq!(data.len() % 3, 0);
        assert!(check_packets(&data));
        assert_eq!(
            gate(&mime(&support::armor_by_hand(&data, false))),
            (true, true)
        );
        assert_eq!(
            gate(&mime(&support::armor_by_hand(&data, true))),
            (true, true)
        );
        // 3n+1 bytes: base64 ends in `==`; without a checksum line it fails (quirk).
        grow_last_packet(&mut data, 1);
        assert!(check_packets(&data));
        assert_eq!(
            gate(&mime(&support::armor_by_hand(&data, true))),
            (true, true)
        );
        assert_eq!(
            gate(&mime(&support::armor_by_hand(&data, false))),
            (false, false)
        );
        // Also with the crate's own armor without checksum, whatever its padding.
        let spec = ArmorSpec {
            checksum: false,
            ..ArmorSpec::default()
        };
        let armored = support::pgp_armored(spec, 301);
        assert!(!armored.contains("\r\n="));
        let body = armored
            .lines()
            .filter(|l| !l.starts_with("-----") && !l.is_empty())
            .collect::<String>();
        let expected = !body.ends_with('=');
        assert_eq!(gate(&mime(&armored)), (expected, expected));
    }

    /// Appends `extra` bytes to the final packet of a new-format sequence whose last
    /// packet has a one-, two- or five-octet length (test helper). Rewrites it with a
    /// five-octet length.
    fn grow_last_packet(data: &mut Vec<u8>, extra: usize) {
        // Find the last packet start.
        let mut i = 0;
        let mut last = 0;
        while i < data.len() {
            last = i;
            let o = data[i + 1];
            let (len, hdr) = match o {
                0..192 => (o as usize, 1),
                192..224 => ((((o as usize) - 192) << 8) + data[i + 2] as usize + 192, 2),
                255 => (
                    u32::from_be_bytes([data[i + 2], data[i + 3], data[i + 4], data[i + 5]])
                        as usize,
                    5,
                ),
                _ => panic!("partial lengths not supported by this helper"),
            };
            i += 1 + hdr + len;
        }
        let tag_octet = data[last];
        let o = data[last + 1];
        let hdr = match o {
            0..192 => 1,
            192..224 => 2,
            _ => 5,
        };
        let body: Vec<u8> = data[last + 1 + hdr..].to_vec();
        data.truncate(last);
        // Rewriting a 1- or 2-octet length as 5 octets changes the total length too;
        // compensate so the result grows by exactly `extra`.
        let grow_header = 5 - hdr;
        let target = body.len() + extra;
        let new_body_len = target.checked_sub(grow_header).unwrap_or(target);
        let mut new_body = body;
        new_body.resize(new_body_len, 0xAA);
        data.push(tag_octet);
        data.push(255);
        data.extend_from_slice(&(new_body.len() as u32).to_be_bytes());
        data.extend_from_slice(&new_body);
    }

    #[test]
    fn partial_length_chunks() {
        // The crate's SEIPD with partial body lengths (chunks of 512).
        let bin = support::pgp_binary(Esk::TwoKeys, 3000, Some(512), 400);
        assert!(check_packets(&bin));
        // Skip the two PKESK packets (one-octet lengths) to reach the SEIPD header,
        // whose first length octet must be a partial one (224..255).
        let mut at = 0;
        while bin[at] & 0x3F != TAG_SEIPD {
            assert_eq!(bin[at] & 0x3F, TAG_PKESK);
            at += 2 + usize::from(bin[at + 1]);
        }
        assert!((224..255).contains(&bin[at + 1]), "octet {}", bin[at + 1]);
        let armored = support::pgp_armored(
            ArmorSpec {
                plaintext_len: 3000,
                chunk: Some(512),
                ..ArmorSpec::default()
            },
            401,
        );
        assert_eq!(gate(&mime(&armored)), (true, true));
        // By hand: SEIPD with chunks of 2 and 1 octets, then a final 3-octet length.
        let seipd = [0xD2, 0xE1, 1, 2, 0xE0, 3, 0x03, 4, 5, 6];
        assert!(check_packets(&seipd));
        // A chunk running past the end, or no final length octet.
        assert!(!check_packets(&[0xD2, 0xE1, 1, 2]));
        assert!(!check_packets(&[0xD2, 0xE2, 1, 2]));
        assert!(!check_packets(&[0xD2, 0xEF, 0]));
        // A huge chunk size must not overflow.
        assert!(!check_packets(&[0xD2, 0xFE, 0, 0]));
    }

    #[test]
    fn packet_walk_table() {
        let pkesk = |len: u8| {
            let mut p = vec![0xC1, len];
            p.extend(std::iter::repeat_n(7u8, len as usize));
            p
        };
        let skesk = vec![0xC3, 2, 4, 9];
        let seipd = vec![0xD2, 3, 1, 2, 3];
        let cat = |parts: &[&[u8]]| parts.concat();
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            ("empty", vec![], false),
            ("seipd only", seipd.clone(), true),
            (
                "pkesk pkesk seipd",
                cat(&[&pkesk(5), &pkesk(3), &seipd]),
                true,
            ),
            ("skesk seipd", cat(&[&skesk, &seipd]), true),
            ("pkesk only", pkesk(5), false),
            ("seipd then pkesk", cat(&[&seipd, &pkesk(1)]), false),
            ("seipd seipd", cat(&[&seipd, &seipd]), false),
            ("literal data (tag 11)", vec![0xCB, 4, b'b', 0, 0, 0], false),
            ("compressed data (tag 8)", vec![0xC8, 1, 0], false),
            (
                "symmetrically encrypted without MDC (tag 9)",
                vec![0xC9, 1, 0],
                false,
            ),
            ("AEAD (tag 20)", vec![0xD4, 1, 0], false),
            (
                "signature before seipd",
                cat(&[&[0xC2, 1, 0], &seipd]),
                false,
            ),
            ("not a header octet", cat(&[&[0x41, 1, 0], &seipd]), false),
            ("zero octet", vec![0x00], false),
            (
                "two-octet length",
                {
                    let mut p = vec![0xD2, 0xC0, 0x00];
                    p.extend(std::iter::repeat_n(0u8, 192));
                    p
                },
                true,
            ),
            (
                "two-octet length max",
                {
                    let mut p = vec![0xD2, 0xDF, 0xFF];
                    p.extend(std::iter::repeat_n(0u8, 8383));
                    p
                },
                true,
            ),
            (
                "five-octet length",
                {
                    let mut p = vec![0xD2, 0xFF, 0, 0, 1, 0];
                    p.extend(std::iter::repeat_n(0u8, 256));
                    p
                },
                true,
            ),
            ("length one short", vec![0xD2, 4, 1, 2, 3], false),
            ("length one long", vec![0xD2, 2, 1, 2, 3], false),
            ("truncated two-octet length", vec![0xD2, 0xC0], false),
            ("truncated five-octet length", vec![0xD2, 0xFF, 0, 0], false),
            ("header without length", vec![0xD2], false),
            ("pkesk then nothing", cat(&[&pkesk(2), &[0xD2]]), false),
            // Old-format headers (GATE-8.1): tag (b >> 2) & 0x0F, length type b & 3.
            (
                "old pkesk 1-octet + seipd",
                cat(&[&[0x84, 2, 0, 0], &seipd]),
                true,
            ),
            (
                "old pkesk 2-octet + seipd",
                cat(&[&[0x85, 0, 2, 0, 0], &seipd]),
                true,
            ),
            (
                "old pkesk 4-octet + seipd",
                cat(&[&[0x86, 0, 0, 0, 2, 0, 0], &seipd]),
                true,
            ),
            ("old skesk + seipd", cat(&[&[0x8C, 1, 4], &seipd]), true),
            (
                "old indeterminate length",
                cat(&[&[0x87, 0, 0], &seipd]),
                false,
            ),
            ("old literal", vec![0xAC, 1, 0], false),
            ("old truncated 2-octet", vec![0x85, 0], false),
            ("old truncated 4-octet", vec![0x86, 0, 0, 0], false),
            ("old pkesk only", vec![0x84, 1, 0], false),
        ];
        for (name, data, want) in cases {
            assert_eq!(check_packets(&data), want, "{name}");
        }
    }

    #[test]
    fn truncated_real_packets_fail() {
        let bin = support::pgp_binary(Esk::TwoKeys, 200, None, 500);
        assert!(check_packets(&bin));
        for cut in 0..bin.len() {
            assert!(!check_packets(&bin[..cut]), "cut at {cut} of {}", bin.len());
        }
        // Extra trailing bytes fail too.
        let mut long = bin.clone();
        long.push(0);
        assert!(!check_packets(&long));
        // Truncated inside the armored MIME body.
        let armored = support::armor_by_hand(&bin[..bin.len() - 10], true);
        assert_eq!(gate(&mime(&armored)), (false, false));
    }

    #[test]
    fn mime_shape_table() {
        let armored = support::pgp_armored(ArmorSpec::default(), 600);
        let good_payload = support::payload_part(&armored);
        let v1 = support::version_part();
        let parts = |p: &[String]| support::pgp_mime_parts(support::FROM, support::TO, p);
        let mixed = |p: &[String]| {
            support::multipart(
                support::FROM,
                support::TO,
                "multipart/mixed; boundary=\"m1\"",
                "m1",
                p,
            )
        };
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            ("good", parts(&[v1.clone(), good_payload.clone()]), true),
            (
                "type in upper case",
                support::multipart(
                    support::FROM,
                    support::TO,
                    "MULTIPART/ENCRYPTED; protocol=\"application/pgp-encrypted\"; boundary=\"u1\"",
                    "u1",
                    &[
                        v1.replace("application/pgp-encrypted", "Application/PGP-Encrypted"),
                        good_payload
                            .replace("application/octet-stream", "APPLICATION/OCTET-STREAM"),
                    ],
                ),
                true,
            ),
            (
                "version with blanks",
                parts(&[
                    v1.replace("Version: 1\r\n", "  Version: 1 \r\n\r\n"),
                    good_payload.clone(),
                ]),
                true,
            ),
            (
                "three parts",
                parts(&[v1.clone(), good_payload.clone(), good_payload.clone()]),
                false,
            ),
            ("only part 1", parts(std::slice::from_ref(&v1)), false),
            (
                "only part 2",
                parts(std::slice::from_ref(&good_payload)),
                false,
            ),
            ("no parts", parts(&[]), false),
            (
                "parts swapped",
                parts(&[good_payload.clone(), v1.clone()]),
                false,
            ),
            (
                "part 1 body Version: 2",
                parts(&[v1.replace("Version: 1", "Version: 2"), good_payload.clone()]),
                false,
            ),
            (
                "part 1 body empty",
                parts(&[v1.replace("Version: 1\r\n", ""), good_payload.clone()]),
                false,
            ),
            (
                "part 1 body lower case",
                parts(&[v1.replace("Version: 1", "version: 1"), good_payload.clone()]),
                false,
            ),
            (
                "part 1 text/plain",
                parts(&[
                    v1.replace("application/pgp-encrypted", "text/plain"),
                    good_payload.clone(),
                ]),
                false,
            ),
            (
                "part 1 without content type",
                parts(&["\r\nVersion: 1\r\n".to_string(), good_payload.clone()]),
                false,
            ),
            (
                "part 2 text/plain",
                parts(&[
                    v1.clone(),
                    good_payload.replace("application/octet-stream", "text/plain"),
                ]),
                false,
            ),
            (
                "part 2 application/pgp-encrypted",
                parts(&[
                    v1.clone(),
                    good_payload.replace("application/octet-stream", "application/pgp-encrypted"),
                ]),
                false,
            ),
            (
                "part 2 nested multipart",
                parts(&[
                    v1.clone(),
                    format!(
                        "Content-Type: multipart/mixed; boundary=\"inner\"\r\n\r\n--inner\r\n{good_payload}\r\n--inner--\r\n"
                    ),
                ]),
                false,
            ),
            (
                "part 1 nested multipart",
                parts(&[
                    format!(
                        "Content-Type: multipart/mixed; boundary=\"inner\"\r\n\r\n--inner\r\n{v1}\r\n--inner--\r\n"
                    ),
                    good_payload.clone(),
                ]),
                false,
            ),
            (
                "top level multipart/mixed",
                mixed(&[v1.clone(), good_payload.clone()]),
                false,
            ),
            (
                "payload without BEGIN CRLF",
                parts(&[
                    v1.clone(),
                    good_payload.replace(
                        "-----BEGIN PGP MESSAGE-----\r\n",
                        "-----BEGIN PGP MESSAGE-----  \r\n",
                    ),
                ]),
                false,
            ),
            (
                "payload without END",
                parts(&[
                    v1.clone(),
                    good_payload.replace("-----END PGP MESSAGE-----", ""),
                ]),
                false,
            ),
            (
                "payload with text after END",
                parts(&[
                    v1.clone(),
                    good_payload.replace(
                        "-----END PGP MESSAGE-----",
                        "-----END PGP MESSAGE-----\r\nhi",
                    ),
                ]),
                false,
            ),
            (
                "payload with blank lines after END",
                parts(&[
                    v1.clone(),
                    good_payload.replace(
                        "-----END PGP MESSAGE-----",
                        "-----END PGP MESSAGE-----\r\n\r\n\r\n",
                    ),
                ]),
                true,
            ),
            (
                "payload with leading blank",
                parts(&[
                    v1.clone(),
                    good_payload.replace("-----BEGIN", "\r\n-----BEGIN"),
                ]),
                false,
            ),
            (
                "payload LF only",
                parts(&[
                    v1.clone(),
                    support::payload_part(&armored.replace("\r\n", "\n")),
                ]),
                false,
            ),
            (
                "payload signed message",
                parts(&[
                    v1.clone(),
                    support::payload_part(&armored.replace("PGP MESSAGE", "PGP SIGNATURE")),
                ]),
                false,
            ),
            (
                "payload not base64",
                parts(&[
                    v1.clone(),
                    support::payload_part(
                        "-----BEGIN PGP MESSAGE-----\r\n\r\nDefinitely not base64!\r\n-----END PGP MESSAGE-----\r\n",
                    ),
                ]),
                false,
            ),
            (
                "payload base64 of text",
                parts(&[
                    v1.clone(),
                    support::payload_part(&support::armor_by_hand(
                        b"Delta Chat is a messenger.",
                        true,
                    )),
                ]),
                false,
            ),
            (
                "payload literal packet",
                parts(&[
                    v1.clone(),
                    support::payload_part(&support::armor_by_hand(
                        &[0xCB, 6, b'b', 0, 0, 0, 0, 0],
                        true,
                    )),
                ]),
                false,
            ),
            (
                "payload base64 transfer encoding",
                parts(&[
                    v1.clone(),
                    format!(
                        "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
                        support::base64_lines(armored.as_bytes())
                    ),
                ]),
                true,
            ),
        ];
        for (name, raw, want) in cases {
            assert_eq!(gate(&raw), (want, want), "{name}");
        }
    }

    /// GATE-9 verdict of a raw message; `false` for one the structure parser refuses.
    fn sj(raw: &[u8]) -> bool {
        Parsed::parse(raw.to_vec()).is_ok_and(|m| is_securejoin_request(m.view()))
    }

    fn securejoin(header: Option<&str>, ctype: &str, parts: &[(&str, &str)]) -> Vec<u8> {
        let header = header
            .map(|h| format!("Secure-Join: {h}\r\n"))
            .unwrap_or_default();
        let mut s = format!(
            "From: <{}>\r\nTo: <{}>\r\nChat-Version: 1.0\r\n{header}\
             Secure-Join-Invitenumber: RANDOM\r\nMIME-Version: 1.0\r\n\
             Content-Type: {ctype}; boundary=\"sj\"\r\n\r\n\r\n",
            support::FROM,
            support::TO
        );
        for (part_type, body) in parts {
            s.push_str(&format!(
                "--sj\r\nContent-Type: {part_type}\r\n\r\n{body}\r\n\r\n"
            ));
        }
        s.push_str("--sj--\r\n");
        s.into_bytes()
    }

    #[test]
    fn securejoin_table_gate_9() {
        let tp = "text/plain; charset=utf-8";
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            (
                "vc",
                securejoin(
                    Some("vc-request"),
                    "multipart/mixed",
                    &[(tp, "Secure-Join: vc-request")],
                ),
                true,
            ),
            (
                "vg",
                securejoin(
                    Some("vg-request"),
                    "multipart/mixed",
                    &[(tp, "Secure-Join: vg-request")],
                ),
                true,
            ),
            (
                "body case-insensitive",
                securejoin(
                    Some("vc-request"),
                    "multipart/mixed",
                    &[(tp, "secure-join: VC-REQUEST")],
                ),
                true,
            ),
            (
                "body padded",
                securejoin(
                    Some("vc-request"),
                    "multipart/mixed",
                    &[(tp, "\r\n  Secure-Join: vc-request  \r\n")],
                ),
                true,
            ),
            (
                "header vg, body vc",
                securejoin(
                    Some("vg-request"),
                    "multipart/mixed",
                    &[(tp, "Secure-Join: vc-request")],
                ),
                true,
            ),
            (
                "other multipart type",
                securejoin(
                    Some("vc-request"),
                    "multipart/alternative",
                    &[(tp, "Secure-Join: vc-request")],
                ),
                true,
            ),
            (
                "part without charset",
                securejoin(
                    Some("vc-request"),
                    "multipart/mixed",
                    &[("text/plain", "Secure-Join: vc-request")],
                ),
                true,
            ),
            (
                "no header",
                securejoin(None, "multipart/mixed", &[(tp, "Secure-Join: vc-request")]),
                false,
            ),
            (
                "header vc-auth-required",
                securejoin(
                    Some("vc-auth-required"),
                    "multipart/mixed",
                    &[(tp, "Secure-Join: vc-request")],
                ),
                false,
            ),
            (
                "header vc-request-with-auth",
                securejoin(
                    Some("vc-request-with-auth"),
                    "multipart/mixed",
                    &[(tp, "Secure-Join: vc-request")],
                ),
                false,
            ),
            (
                "header upper case",
                securejoin(
                    Some("VC-REQUEST"),
                    "multipart/mixed",
                    &[(tp, "Secure-Join: vc-request")],
                ),
                false,
            ),
            (
                "body other text",
                securejoin(
                    Some("vc-request"),
                    "multipart/mixed",
                    &[(tp, "Buy viagra!")],
                ),
                false,
            ),
            (
                "body with extra line",
                securejoin(
                    Some("vc-request"),
                    "multipart/mixed",
                    &[(tp, "Secure-Join: vc-request\r\nhello")],
                ),
                false,
            ),
            (
                "body vc-request-with-auth",
                securejoin(
                    Some("vc-request"),
                    "multipart/mixed",
                    &[(tp, "Secure-Join: vc-request-with-auth")],
                ),
                false,
            ),
            (
                "two parts",
                securejoin(
                    Some("vc-request"),
                    "multipart/mixed",
                    &[(tp, "Secure-Join: vc-request"), (tp, "x")],
                ),
                false,
            ),
            (
                "no parts",
                securejoin(Some("vc-request"), "multipart/mixed", &[]),
                false,
            ),
            (
                "part text/html",
                securejoin(
                    Some("vc-request"),
                    "multipart/mixed",
                    &[("text/html", "Secure-Join: vc-request")],
                ),
                false,
            ),
            (
                "part octet-stream",
                securejoin(
                    Some("vc-request"),
                    "multipart/mixed",
                    &[("application/octet-stream", "Secure-Join: vc-request")],
                ),
                false,
            ),
            (
                "nested multipart",
                securejoin(
                    Some("vc-request"),
                    "multipart/mixed",
                    &[(
                        "multipart/mixed; boundary=\"in\"",
                        "--in\r\nContent-Type: text/plain\r\n\r\nSecure-Join: vc-request\r\n--in--",
                    )],
                ),
                false,
            ),
        ];
        for (name, raw, want) in cases {
            assert_eq!(sj(&raw), want, "{name}");
        }
        // Not multipart at all.
        let single = format!(
            "From: {}\r\nSecure-Join: vc-request\r\nContent-Type: text/plain\r\n\r\nSecure-Join: vc-request\r\n",
            support::FROM
        );
        assert!(!sj(single.as_bytes()));
        // Header name case-insensitive.
        let raw = String::from_utf8(securejoin(
            Some("vc-request"),
            "multipart/mixed",
            &[(tp, "Secure-Join: vc-request")],
        ))
        .expect("ascii");
        let lower = raw.replace(
            "Secure-Join: vc-request\r\nSecure-Join-Invitenumber",
            "secure-join: vc-request\r\nSecure-Join-Invitenumber",
        );
        assert!(sj(lower.as_bytes()));
        let second = raw.replace(
            "Chat-Version: 1.0\r\n",
            "Chat-Version: 1.0\r\nSecure-Join: vc-auth-required\r\n",
        );
        // A second Secure-Join field: refused before the gate (readers could take either).
        assert!(Parsed::parse(second.into_bytes()).is_err());
    }

    /// The chunked decoder gives the verdict of decoding the joined text at once.
    #[test]
    fn chunked_base64_matches_whole_decoding() {
        use rand_chacha::ChaCha8Rng;
        use rand_chacha::rand_core::{RngCore, SeedableRng};
        let mut rng = ChaCha8Rng::seed_from_u64(0xb64);
        let whole = |t: &[u8]| {
            let joined: Vec<u8> = t
                .iter()
                .copied()
                .filter(|&b| b != b'\r' && b != b'\n')
                .collect();
            BASE64_STANDARD.decode(joined).ok()
        };
        for len in [0usize, 1, 3, 4, 100, 3000, 4096, 5000, 12_000] {
            for _ in 0..20 {
                let mut data = vec![0u8; len];
                rng.fill_bytes(&mut data);
                let mut text = support::base64_lines(&data).into_bytes();
                // Sometimes damage it: padding inside, a bad byte, a lone CR.
                match rng.next_u32() % 4 {
                    0 if !text.is_empty() => {
                        let i = rng.next_u32() as usize % text.len();
                        text[i] = b'=';
                    }
                    1 if !text.is_empty() => {
                        let i = rng.next_u32() as usize % text.len();
                        text[i] = b'!';
                    }
                    2 if !text.is_empty() => {
                        let i = rng.next_u32() as usize % text.len();
                        text.insert(i, b'\r');
                    }
                    _ => {}
                }
                assert_eq!(decode_base64_lines(&text), whole(&text), "len {len}");
            }
        }
    }

    #[test]
    fn never_panics_on_random_or_truncated_input() {
        use rand_chacha::ChaCha8Rng;
        use rand_chacha::rand_core::{RngCore, SeedableRng};
        let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
        let armored = support::pgp_armored(ArmorSpec::default(), 700);
        let mut seeds: Vec<Vec<u8>> = vec![
            mime(&armored),
            support::multipart(support::FROM, support::TO, "multipart/report; boundary=\"r\"", "r",
                &["Content-Type: text/plain\r\n\r\nx".to_string()]),
            b"From: a@b.c\nSecure-Join: vc-request\nContent-Type: multipart/mixed; boundary=x\n\n--x\n\nSecure-Join: vc-request\n--x--\n".to_vec(),
        ];
        if let Some(dir) = support::fixtures_dir() {
            for fx in FIXTURES {
                seeds.push(support::load_fixture(&dir, FOLDER_CONCRETE, fx.name).raw);
            }
        }
        let rcpts = vec![support::TO.to_string()];
        let run = |raw: &[u8]| {
            if let Ok(msg) = Parsed::parse(raw.to_vec()) {
                let v = msg.view();
                let _ = is_encrypted(v, Direction::Outgoing);
                let _ = is_encrypted(v, Direction::Incoming);
                let _ = is_securejoin_request(v);
                let _ = crate::policy::headers::from_address(v);
                let _ = crate::policy::submission::judge(v, support::FROM, &rcpts);
                let _ = crate::policy::inbound::judge(v, support::FROM, true);
                let _ = crate::policy::headers::cleanup_submission(msg.clone());
                let _ = crate::policy::headers::strip_inbound(msg);
            }
            let _ = check_packets(raw);
            let _ = check_armored_payload(raw, Direction::Incoming);
        };
        // Every truncation of the seeds (stepping to stay bounded).
        for seed in &seeds {
            let step = (seed.len() / 300).max(1);
            for cut in (0..seed.len()).step_by(step) {
                run(&seed[..cut]);
            }
        }
        // Random mutations of the seeds.
        for _ in 0..600 {
            let idx = rng.next_u32() as usize % seeds.len();
            let mut data = seeds[idx].clone();
            let flips = 1 + rng.next_u32() % 8;
            for _ in 0..flips {
                let pos = rng.next_u32() as usize % data.len().max(1);
                if let Some(b) = data.get_mut(pos) {
                    *b = rng.next_u32() as u8;
                }
            }
            run(&data);
        }
        // Pure random bytes, biased towards structural characters.
        let alphabet = b"\r\n:;<>\"()@=-+/ \tABCabc01\xC0\xD2\xFF\x84\x87";
        for _ in 0..600 {
            let len = rng.next_u32() as usize % 400;
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    let r = rng.next_u32();
                    if r % 2 == 0 {
                        alphabet[(r as usize >> 1) % alphabet.len()]
                    } else {
                        (r >> 8) as u8
                    }
                })
                .collect();
            run(&data);
        }
    }
}
