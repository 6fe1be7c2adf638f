//! Differential test of the message parser (issue 13): over every fixture, generated
//! messages and a corpus of mutations of them, whatever the relay accepts must look the
//! same to the other readers of the same bytes — mail-parser (what the gate used before)
//! and mailparse (Delta Chat core's parser) — and the gate must decide on exactly what
//! IMAP later serves. A message on which the readers disagree is one the relay must
//! refuse; if it accepts one, this test fails and prints it.

use mail_parser::{MessageParser, MimeHeaders, PartType};

use super::*;
use crate::policy::gate::test_support::{self as support, ArmorSpec, FIXTURES};
use crate::policy::gate::{self, Direction};

/// The structure as every reader should see it: media types, nesting, and the raw
/// content of identity-encoded leaves (trailing line breaks trimmed: where the CRLF
/// before a delimiter goes is not content).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    Leaf(String, Option<Content>),
    Multi(String, Vec<Shape>),
}

/// Leaf content for comparison: length, a hash, and the start (for the failure text).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Content(usize, u64, String);

fn trimmed(b: &[u8]) -> Content {
    use std::hash::{Hash, Hasher};
    let mut end = b.len();
    while end > 0 && (b[end - 1] == b'\r' || b[end - 1] == b'\n') {
        end -= 1;
    }
    let b = &b[..end];
    let mut h = std::collections::hash_map::DefaultHasher::new();
    b.hash(&mut h);
    let start = String::from_utf8_lossy(&b[..b.len().min(32)]).into_owned();
    Content(b.len(), h.finish(), start)
}

fn ours(raw: &[u8], n: &Node) -> Shape {
    let t = format!("{}/{}", n.content_type.mtype, n.content_type.subtype);
    match &n.kind {
        Kind::Multipart(c) => Shape::Multi(t, c.iter().map(|c| ours(raw, c)).collect()),
        Kind::Message(_) => Shape::Leaf(t, None),
        Kind::Leaf => Shape::Leaf(
            t,
            n.encoding
                .is_identity()
                .then(|| trimmed(&raw[n.body.clone()])),
        ),
    }
}

fn mail_parser_shape(raw: &[u8]) -> Option<Shape> {
    let msg = MessageParser::default().parse(raw)?;
    fn part(msg: &mail_parser::Message<'_>, raw: &[u8], id: usize, depth: usize) -> Shape {
        let p = &msg.parts[id];
        let t = p
            .content_type()
            .map(|c| {
                format!(
                    "{}/{}",
                    c.ctype().to_ascii_lowercase(),
                    c.subtype().unwrap_or_default().to_ascii_lowercase()
                )
            })
            .unwrap_or_else(|| "text/plain".to_string());
        match &p.body {
            PartType::Multipart(ids) if depth < 20 => Shape::Multi(
                t,
                ids.iter()
                    .map(|&i| part(msg, raw, i as usize, depth + 1))
                    .collect(),
            ),
            // mail-parser's end offset of an encapsulated message runs into the next
            // delimiter: only its type is compared.
            _ if t == "message/rfc822" || t == "message/global" => Shape::Leaf(t, None),
            _ => {
                // The declared encoding (mail-parser falls back to the raw bytes when
                // base64 does not decode; the relay never reads such a part as content).
                let identity = p.content_transfer_encoding().is_none_or(|e| {
                    matches!(e.to_ascii_lowercase().as_str(), "7bit" | "8bit" | "binary")
                });
                let body = raw
                    .get(p.offset_body as usize..p.offset_end as usize)
                    .unwrap_or_default();
                Shape::Leaf(t, identity.then(|| trimmed(body)))
            }
        }
    }
    Some(part(&msg, raw, 0, 0))
}

fn mailparse_shape(raw: &[u8]) -> Option<Shape> {
    fn part(p: &mailparse::ParsedMail<'_>) -> Shape {
        let t = p.ctype.mimetype.to_ascii_lowercase();
        if t.starts_with("multipart/") {
            return Shape::Multi(t, p.subparts.iter().map(part).collect());
        }
        if t == "message/rfc822" || t == "message/global" {
            return Shape::Leaf(t, None);
        }
        let identity = matches!(
            p.get_body_encoded(),
            mailparse::body::Body::SevenBit(_)
                | mailparse::body::Body::EightBit(_)
                | mailparse::body::Body::Binary(_)
        );
        Shape::Leaf(
            t,
            identity.then(|| trimmed(&p.get_body_raw().unwrap_or_default())),
        )
    }
    mailparse::parse_mail(raw).ok().map(|p| part(&p))
}

/// Deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

/// Line start offsets of `raw`.
fn lines(raw: &[u8]) -> Vec<usize> {
    let mut v = vec![0];
    v.extend(
        raw.iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i + 1)
            .filter(|&i| i < raw.len()),
    );
    v
}

fn insert_at(raw: &[u8], at: usize, what: &[u8]) -> Vec<u8> {
    let mut v = raw[..at].to_vec();
    v.extend_from_slice(what);
    v.extend_from_slice(&raw[at..]);
    v
}

/// Structural snippets the mutator splices in: the ways to make readers disagree that
/// the issue lists (duplicate structural fields, boundaries, folding, NUL, bare CR/LF,
/// content after the closing delimiter) and some harmless ones.
const SNIPPETS: &[&[u8]] = &[
    b"Content-Type: multipart/mixed; boundary=\"outer\"\r\n",
    b"Content-Type: text/plain\r\n",
    b"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"YFrteb74qSXmggbOxZL9dRnhymywAi\"\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"MIME-Version: 1.0\r\n",
    b"Content-Type: multipart/mixed;\r\n boundary=\"XYZboundary42\"\r\n",
    b"Content-Type: multipart/mixed; boundary*=utf-8''outer\r\n",
    b"Content-Type: multipart/mixed; boundary=outer (comment)\r\n",
    b"--outer\r\nContent-Type: text/plain\r\n\r\ncleartext\r\n--outer--\r\n",
    b"--XYZboundary42\r\nContent-Type: text/plain\r\n\r\ncleartext\r\n",
    b"--XYZboundary42--\r\n",
    b"--XYZboundary42x\r\n",
    b"--XYZboundary42 \r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"\0",
    b" folded continuation\r\n",
    b"X-Harmless: yes\r\n",
    b"Subject: second\r\n",
    b"From: other@example.org\r\n",
    b"Content-Disposition: attachment; filename=x\r\n",
    b"Content-Type: message/rfc822\r\n",
    b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: x\r\n\r\nin\r\n--d--\r\n",
];

/// One mutation of `raw`.
fn mutate(raw: &[u8], rng: &mut Rng) -> Vec<u8> {
    let starts = lines(raw);
    let line = *rng.pick(&starts);
    let line_end = raw[line..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(raw.len(), |i| line + i + 1);
    match rng.below(9) {
        // Splice a snippet in at a line start.
        0..=2 => insert_at(raw, line, SNIPPETS[rng.below(SNIPPETS.len())]),
        // Append a snippet at the end (epilogue content).
        3 => [raw, SNIPPETS[rng.below(SNIPPETS.len())]].concat(),
        // Duplicate a line.
        4 => insert_at(raw, line, &raw[line..line_end]),
        // Delete a line.
        5 => [&raw[..line], &raw[line_end..]].concat(),
        // Change the case of a line.
        6 => {
            let mut v = raw.to_vec();
            for b in &mut v[line..line_end] {
                if rng.below(3) == 0 {
                    b.make_ascii_uppercase();
                }
            }
            v
        }
        // Fold a line at a space.
        7 => match raw[line..line_end].iter().position(|&b| b == b' ') {
            Some(i) => insert_at(raw, line + i, b"\r\n"),
            None => raw.to_vec(),
        },
        // Flip one byte.
        _ => {
            let mut v = raw.to_vec();
            if !v.is_empty() {
                let i = rng.below(v.len());
                v[i] = *rng.pick(b"-:;=\"\r\n \t\0abcXYZ");
            }
            v
        }
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for (i, esk) in [support::Esk::TwoKeys, support::Esk::Password]
        .into_iter()
        .enumerate()
    {
        let armored = support::pgp_armored(
            ArmorSpec {
                esk,
                plaintext_len: 40,
                ..ArmorSpec::default()
            },
            900 + i as u64,
        );
        v.push(support::pgp_mime(support::FROM, support::TO, &armored));
    }
    v.push(
        format!(
            "From: <{f}>\r\nTo: <{t}>\r\nSecure-Join: vc-request\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"sj\"\r\n\r\n--sj\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\nSecure-Join: vc-request\r\n--sj--\r\n",
            f = support::FROM,
            t = support::TO
        )
        .into_bytes(),
    );
    v.push(
        b"From: Mail Delivery System <MAILER-DAEMON@example.org>\r\nAuto-Submitted: auto-replied\r\n\
          MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n\
          \tboundary=\"r1\"\r\n\r\n--r1\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--r1\r\n\
          Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; b.c\r\n--r1\r\n\
          Content-Type: message/rfc822\r\n\r\nFrom: a@b.c\r\nSubject: x\r\n\r\nhi\r\n--r1--\r\n"
            .to_vec(),
    );
    v.push(b"From: a@b.c\r\nTo: d@e.f\r\nSubject: plain\r\n\r\nHello.\r\n".to_vec());
    if let Some(dir) = support::fixtures_dir() {
        for folder in [support::FOLDER_CONCRETE, support::FOLDER_TEMPLATES] {
            for fx in FIXTURES {
                v.push(support::load_fixture(&dir, folder, fx.name).raw);
            }
        }
    }
    v
}

/// Does every reader see what the relay sees? `None` when the relay refuses it.
fn check(raw: &[u8]) -> Option<Result<(), String>> {
    let parsed = Parsed::parse(raw.to_vec()).ok()?;
    let mine = ours(raw, parsed.root());
    let a = mail_parser_shape(raw);
    let b = mailparse_shape(raw);
    let mut problems = Vec::new();
    if a.as_ref() != Some(&mine) {
        problems.push(format!("mail-parser sees {a:?}"));
    }
    if b.as_ref() != Some(&mine) {
        problems.push(format!("mailparse sees {b:?}"));
    }
    // The gate decides on the stored structure: the parts IMAP serves as BODY[1] and
    // BODY[2] are the ones it checked.
    let view = parsed.view();
    if gate::is_encrypted(view, Direction::Incoming) {
        let stored = Parsed::from_stored(raw.to_vec(), &parsed.encoded_structure())
            .expect("stored form reads back");
        if stored.root() != parsed.root() {
            problems.push("stored structure differs".into());
        }
    }
    Some(if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "relay sees {mine:?}\n{}\nmessage: {:?}",
            problems.join("\n"),
            String::from_utf8_lossy(raw)
        ))
    })
}

#[test]
fn readers_agree_on_every_message_the_relay_accepts() {
    let seeds = seeds();
    // The seeds themselves are accepted and read alike.
    for s in &seeds {
        match check(s) {
            Some(Ok(())) => {}
            Some(Err(e)) => panic!("seed: {e}"),
            None => panic!(
                "seed refused: {:?}\n{}",
                Parsed::parse(s.clone()).err(),
                String::from_utf8_lossy(s)
            ),
        }
    }
    let (mut accepted, mut refused) = (0usize, 0usize);
    let mut failures = Vec::new();
    for seed in [
        0x2545_f491_4f6c_dd1d_u64,
        0x9e37_79b9_7f4a_7c15,
        0xd1b5_4a32_d192_ed03,
    ] {
        let mut rng = Rng(seed);
        for round in 0..8_000 {
            let mut m = seeds[round % seeds.len()].clone();
            // One to three mutations on top of each other.
            for _ in 0..=rng.below(3) {
                m = mutate(&m, &mut rng);
            }
            match check(&m) {
                None => refused += 1,
                Some(Ok(())) => accepted += 1,
                Some(Err(e)) => failures.push(e),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} accepted mutations are read differently; first:\n{}",
        failures.len(),
        accepted + failures.len(),
        failures[0]
    );
    // The corpus exercises both sides of the parser.
    assert!(accepted > 1000, "accepted {accepted}");
    assert!(refused > 1000, "refused {refused}");
}

#[test]
fn the_issue_13_trick_is_refused_and_was_read_two_ways() {
    let armored = support::pgp_armored(ArmorSpec::default(), 5);
    let enc = String::from_utf8(support::pgp_mime(support::FROM, support::TO, &armored)).unwrap();
    let trick = enc.replacen(
        "MIME-Version: 1.0\r\n",
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n",
        1,
    ) + "--outer\r\nContent-Type: text/plain\r\n\r\ncleartext\r\n--outer--\r\n";
    // The readers really disagree on it (the reason it must be refused)...
    assert_ne!(
        mail_parser_shape(trick.as_bytes()),
        mailparse_shape(trick.as_bytes())
    );
    // ...and the relay refuses it.
    assert!(check(trick.as_bytes()).is_none());
}
