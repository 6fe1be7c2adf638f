//! Tables for the structure parser: what it accepts and how it describes it, each refusal,
//! the limits, the stored form, and header rewrites that keep the structure valid.

use super::*;
use crate::policy::gate::test_support::{self as support, ArmorSpec, FIXTURES};

fn parse(raw: &[u8]) -> Result<Node, Refusal> {
    structure::parse(raw, &LIMITS)
}

fn types(root: &Node) -> Vec<String> {
    root.walk()
        .iter()
        .map(|n| format!("{}/{}", n.content_type.mtype, n.content_type.subtype))
        .collect()
}

fn encrypted() -> Vec<u8> {
    let armored = support::pgp_armored(ArmorSpec::default(), 1);
    support::pgp_mime(support::FROM, support::TO, &armored)
}

/// A message of `header` (fields without the final line break) and `body`.
fn with_header(header: &str, body: &str) -> Vec<u8> {
    format!("{header}\r\n\r\n{body}").into_bytes()
}

#[test]
fn describes_pgp_mime() {
    let raw = encrypted();
    let root = parse(&raw).expect("parses");
    assert_eq!(
        types(&root),
        [
            "multipart/encrypted",
            "application/pgp-encrypted",
            "application/octet-stream"
        ]
    );
    let parts = root.children().unwrap();
    assert_eq!(&raw[parts[0].body.clone()], b"Version: 1\r\n\r\n");
    assert!(raw[parts[1].body.clone()].starts_with(b"-----BEGIN PGP MESSAGE-----\r\n"));
    assert!(
        raw[parts[1].body.clone()]
            .trim_ascii_end()
            .ends_with(b"-----END PGP MESSAGE-----")
    );
    assert_eq!(root.header.start, 0);
    assert_eq!(root.body.start, root.header.end);
    assert!(raw[..root.header.end].ends_with(b"\r\n\r\n"));
}

#[test]
fn upstream_fixtures_parse() {
    let Some(dir) = support::fixtures_dir() else {
        return;
    };
    for folder in [support::FOLDER_CONCRETE, support::FOLDER_TEMPLATES] {
        for fx in FIXTURES {
            let raw = support::load_fixture(&dir, folder, fx.name).raw;
            let root = parse(&raw).unwrap_or_else(|e| panic!("{folder}/{}: {e}", fx.name));
            if fx.name == "mailer-daemon.eml" {
                // The encapsulated "message" is one line of text: its header section is
                // empty and the line is its body.
                assert_eq!(
                    types(&root),
                    [
                        "multipart/report",
                        "text/plain",
                        "message/delivery-status",
                        "message/rfc822",
                        "text/plain"
                    ]
                );
            }
        }
    }
}

#[test]
fn accepts_what_readers_agree_on() {
    let ok: &[(&str, &[&str])] = &[
        // No MIME at all: text/plain.
        ("From: a@b.c\r\n\r\nhi\r\n", &["text/plain"]),
        // Headers only, no empty line.
        ("From: a@b.c\r\nSubject: x\r\n", &["text/plain"]),
        // MIME fields count without MIME-Version, as readers take them.
        (
            "From: a@b.c\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhi\r\n",
            &["text/plain"],
        ),
        (
            "Content-type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
            &["multipart/mixed", "text/plain"],
        ),
        // A preamble and an empty epilogue line.
        (
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
             This is a multi-part message.\r\n--b\r\n\r\none\r\n--b\r\nContent-Type: \
             text/html\r\n\r\n<p>two</p>\r\n--b--\r\n\r\n",
            &["multipart/mixed", "text/plain", "text/html"],
        ),
        // Nested multipart with a different boundary; a typed digest part.
        (
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=outer\r\n\r\n\
             --outer\r\nContent-Type: multipart/digest; boundary=in\r\n\r\n--in\r\n\
             Content-Type: message/rfc822\r\n\r\nSubject: x\r\n\r\nbody\r\n--in--\r\n--outer--\r\n",
            &[
                "multipart/mixed",
                "multipart/digest",
                "message/rfc822",
                "text/plain",
            ],
        ),
        // A closing delimiter at the very end without CRLF.
        (
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--",
            &["multipart/mixed", "text/plain"],
        ),
    ];
    for (raw, want) in ok {
        let root = parse(raw.as_bytes()).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
        assert_eq!(types(&root), *want, "{raw:?}");
    }
}

#[test]
fn refusal_table() {
    let mp = |ct: &str, body: &str| {
        format!("MIME-Version: 1.0\r\nContent-Type: {ct}\r\n\r\n{body}").into_bytes()
    };
    let cases: Vec<(Vec<u8>, Refusal)> = vec![
        (b"From: a\r\n\r\nx\0y\r\n".to_vec(), Refusal::Nul),
        (b"From: a\n\nhi\n".to_vec(), Refusal::BareLineBreak),
        (b"From: a\r\n\r\nx\ry\r\n".to_vec(), Refusal::BareLineBreak),
        (b"From: a\r\n\r\nhi\r".to_vec(), Refusal::BareLineBreak),
        (
            b"From: a\r\nnot a field\r\n\r\n".to_vec(),
            Refusal::HeaderLineWithoutColon,
        ),
        (b"From : a\r\n\r\n".to_vec(), Refusal::BadFieldName),
        (b" x: a\r\n\r\n".to_vec(), Refusal::StrayContinuation),
        (
            b"From: a\r\nFROM: b\r\n\r\n".to_vec(),
            Refusal::Duplicate("From"),
        ),
        (
            b"Subject: a\r\nSubject: b\r\n\r\n".to_vec(),
            Refusal::Duplicate("Subject"),
        ),
        (
            mp(
                "multipart/mixed; boundary=b\r\nContent-Type: text/plain",
                "",
            ),
            Refusal::Duplicate("Content-Type"),
        ),
        (
            b"MIME-Version: 1.0\r\nMIME-Version: 1.0\r\n\r\n".to_vec(),
            Refusal::Duplicate("MIME-Version"),
        ),
        (
            b"MIME-Version: 1.0\r\nContent-Transfer-Encoding: 7bit\r\n\
              Content-Transfer-Encoding: base64\r\n\r\n"
                .to_vec(),
            Refusal::Duplicate("Content-Transfer-Encoding"),
        ),
        (
            b"MIME-Version: 2.0\r\n\r\n".to_vec(),
            Refusal::BadField {
                field: "MIME-Version",
                why: "MIME-Version is not 1.0",
            },
        ),
        (
            mp(
                "multipart/mixed; boundary=b (c)",
                "--b\r\n\r\nx\r\n--b--\r\n",
            ),
            Refusal::BadField {
                field: "Content-Type",
                why: "comment in a MIME field",
            },
        ),
        (
            mp(
                "multipart/mixed; boundary=b; boundary=c",
                "--b\r\n\r\nx\r\n--b--\r\n",
            ),
            Refusal::BadField {
                field: "Content-Type",
                why: "duplicate parameter",
            },
        ),
        (mp("multipart/mixed", "x\r\n"), Refusal::NoBoundary),
        (
            b"From: a@b.c\r\nContent-Transfer-Encoding:\r\n base64\r\n\r\naGk=\r\n".to_vec(),
            Refusal::FoldedField("Content-Transfer-Encoding"),
        ),
        (
            b"Content-Type:\r\n text/plain\r\n\r\nhi\r\n".to_vec(),
            Refusal::FoldedField("Content-Type"),
        ),
        (
            mp(
                "multipart/mixed; boundary=b",
                "--b\r\nContent-Type: text/plain\r\n--b--\r\n",
            ),
            Refusal::PartHeaderUnended,
        ),
        (
            mp(
                "multipart/digest; boundary=d",
                "--d\r\n\r\nSubject: x\r\n\r\nin\r\n--d--\r\n",
            ),
            Refusal::UntypedDigestPart,
        ),
        (
            mp("multipart/mixed; boundary=b", "--b\r\n\r\nx\r\n"),
            Refusal::Unclosed,
        ),
        (
            mp("multipart/mixed; boundary=b", "--b--\r\n"),
            Refusal::NoParts,
        ),
        (
            mp(
                "multipart/mixed; boundary=b",
                "--b\r\n\r\nx\r\n--b--\r\nContent-Type: text/plain\r\n\r\nsecret\r\n",
            ),
            Refusal::Epilogue,
        ),
        (
            mp(
                "multipart/mixed; boundary=b",
                "--b\r\n\r\nx\r\n--bb\r\n\r\ny\r\n--b--\r\n",
            ),
            Refusal::BoundaryPrefix,
        ),
        // Transport padding: mail-parser reads the line as content.
        (
            mp("multipart/mixed; boundary=b", "--b \r\n\r\nx\r\n--b--\r\n"),
            Refusal::BoundaryPrefix,
        ),
        (
            mp(
                "multipart/mixed; boundary=b",
                "--b\r\n--b\r\n\r\nx\r\n--b--\r\n",
            ),
            Refusal::NoLineBeforeDelimiter,
        ),
        (
            mp(
                "multipart/mixed; boundary=bx",
                "--bx\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n--b--\r\n--bx--\r\n",
            ),
            Refusal::NestedBoundary,
        ),
        (
            mp(
                "multipart/mixed; boundary=b",
                "--b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n\
                 aGk=\r\n--b--\r\n",
            ),
            Refusal::EncodedContainer("base64"),
        ),
        (
            b"MIME-Version: 1.0\r\nContent-Transfer-Encoding: 8-bit\r\n\r\n".to_vec(),
            Refusal::BadField {
                field: "Content-Transfer-Encoding",
                why: "unknown Content-Transfer-Encoding",
            },
        ),
        (
            b"MIME-Version: 1.0\r\nContent-Disposition: attachment; filename=a b\r\n\r\n".to_vec(),
            Refusal::BadField {
                field: "Content-Disposition",
                why: "text where a parameter should start",
            },
        ),
    ];
    for (raw, want) in cases {
        assert_eq!(
            parse(&raw),
            Err(want.clone()),
            "{}",
            String::from_utf8_lossy(&raw)
        );
    }
}

/// The gate trick of issue 13: a multipart/mixed Content-Type above the real
/// multipart/encrypted one, and cleartext parts of the outer boundary after the closing
/// delimiter. Some readers take the first Content-Type, some the last.
#[test]
fn two_content_types_are_refused() {
    let enc = encrypted();
    let text = String::from_utf8(enc).unwrap();
    let tricked = text.replacen(
        "MIME-Version: 1.0\r\n",
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n",
        1,
    ) + "--outer\r\nContent-Type: text/plain\r\n\r\ncleartext\r\n--outer--\r\n";
    assert_eq!(
        parse(tricked.as_bytes()),
        Err(Refusal::Duplicate("Content-Type"))
    );
}

#[test]
fn limits_are_enforced() {
    let many = |n: usize| {
        let mut s =
            String::from("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n");
        for _ in 0..n {
            s.push_str("--b\r\n\r\n");
        }
        s.push_str("--b--\r\n");
        s.into_bytes()
    };
    // The message itself counts: 63 parts + 1 = 64 entities.
    assert!(parse(&many(LIMITS.max_parts - 1)).is_ok());
    assert_eq!(
        parse(&many(LIMITS.max_parts)),
        Err(Refusal::TooManyParts(LIMITS.max_parts))
    );
    // Millions of parts are refused at the 64th, without collecting them all.
    assert_eq!(
        parse(&many(200_000)),
        Err(Refusal::TooManyParts(LIMITS.max_parts))
    );

    let nested = |depth: usize| {
        let mut s = String::from("MIME-Version: 1.0\r\n");
        for i in 0..depth {
            s.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=b{i}x\r\n\r\n--b{i}x\r\n"
            ));
        }
        s.push_str("\r\nleaf\r\n");
        for i in (0..depth).rev() {
            s.push_str(&format!("--b{i}x--\r\n"));
        }
        s.into_bytes()
    };
    assert!(parse(&nested(LIMITS.max_depth)).is_ok());
    assert_eq!(
        parse(&nested(LIMITS.max_depth + 1)),
        Err(Refusal::TooDeep(LIMITS.max_depth))
    );

    let fields = |n: usize| {
        let mut s = String::new();
        for i in 0..n {
            s.push_str(&format!("X-{i}: v\r\n"));
        }
        s.push_str("\r\n");
        s.into_bytes()
    };
    assert!(parse(&fields(LIMITS.max_header_fields)).is_ok());
    assert_eq!(
        parse(&fields(LIMITS.max_header_fields + 1)),
        Err(Refusal::TooManyFields(LIMITS.max_header_fields))
    );
    let big = format!("X: {}\r\n\r\n", "a".repeat(LIMITS.max_header_bytes));
    assert_eq!(
        parse(big.as_bytes()),
        Err(Refusal::HeaderTooBig(LIMITS.max_header_bytes))
    );
}

#[test]
fn stored_form_round_trips_and_rejects_damage() {
    let raw = encrypted();
    let root = parse(&raw).unwrap();
    let enc = root.encode();
    assert!(enc.len() < 200, "{} bytes", enc.len());
    assert_eq!(Node::decode(&enc, raw.len(), &LIMITS), Some(root.clone()));
    // Too short for its ranges, truncated, trailing garbage, wrong version.
    assert_eq!(Node::decode(&enc, raw.len() - 1, &LIMITS), None);
    for cut in 0..enc.len() {
        assert_eq!(
            Node::decode(&enc[..cut], raw.len(), &LIMITS),
            None,
            "cut {cut}"
        );
    }
    let mut longer = enc.clone();
    longer.push(0);
    assert_eq!(Node::decode(&longer, raw.len(), &LIMITS), None);
    let mut other = enc.clone();
    other[0] = 9;
    assert_eq!(Node::decode(&other, raw.len(), &LIMITS), None);
    // Random bytes never panic.
    let mut x: u64 = 7;
    for _ in 0..2000 {
        let v: Vec<u8> = (0..64)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                (x >> 56) as u8
            })
            .collect();
        let _ = Node::decode(&v, 1 << 20, &LIMITS);
    }
    let p = Parsed::from_stored(raw.clone(), &enc).unwrap();
    assert_eq!(p.root(), &root);
}

#[test]
fn header_rewrite_keeps_the_structure_true() {
    let raw = encrypted();
    let p = Parsed::parse(raw).unwrap();
    let rewritten = p.rewrite_header(|h| {
        let mut out = b"DKIM-Signature: v=1; a=rsa-sha256;\r\n b=abc\r\n".to_vec();
        out.extend(
            header::fields(h)
                .filter(|f| !f.is(h, "Chat-Version"))
                .flat_map(|f| h[f.range].to_vec()),
        );
        out.extend_from_slice(b"\r\n");
        out
    });
    let fresh = parse(rewritten.bytes()).unwrap();
    assert_eq!(rewritten.root(), &fresh);
    assert!(rewritten.view().header_field("Chat-Version").is_none());
    assert!(rewritten.view().header_field("DKIM-Signature").is_some());
}

#[test]
fn line_endings_are_normalized() {
    assert_eq!(
        normalize_line_endings(b"a\nb\r\nc\n".to_vec()),
        b"a\r\nb\r\nc\r\n"
    );
    assert_eq!(normalize_line_endings(b"\n".to_vec()), b"\r\n");
    let crlf = b"a\r\nb\r\n".to_vec();
    assert_eq!(normalize_line_endings(crlf.clone()), crlf);
}

#[test]
fn content_decodes_identity_and_base64_only() {
    let raw = b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
        --b\r\nContent-Transfer-Encoding: base64\r\n\r\naGVs\r\nbG8=\r\n\
        --b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nh=C3=A9\r\n\
        --b\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!\r\n\
        --b\r\n\r\nplain\r\n--b--\r\n"
        .to_vec();
    let p = Parsed::parse(raw).unwrap();
    let v = p.view();
    let parts = p.root().children().unwrap();
    assert_eq!(v.content(&parts[0]).as_deref(), Some(&b"hello"[..]));
    assert_eq!(v.content(&parts[1]), None);
    assert_eq!(v.content(&parts[2]), None);
    assert_eq!(v.content(&parts[3]).as_deref(), Some(&b"plain"[..]));
}

#[test]
fn header_accessors() {
    let p = Parsed::parse(with_header(
        "From: A <a@b.c>\r\nSubject: one\r\n two\r\nX-Ctl: a\x07b",
        "body\r\n",
    ))
    .unwrap();
    let v = p.view();
    assert_eq!(v.header_text("subject").as_deref(), Some("one two"));
    assert_eq!(v.header_text("x-ctl").as_deref(), Some("a b"));
    assert_eq!(v.header_field("from"), Some(&b"From: A <a@b.c>\r\n"[..]));
    assert_eq!(v.header_text("to"), None);
}
