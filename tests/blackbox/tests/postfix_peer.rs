//! A classic mail server as peer (issue 3; spec/relay.md §8, §9, spec/peers.md §4.2,
//! §4.4): Debian's Postfix, started by the test with its own config directory on its
//! own loopback address, `classic.test` in the test DNS.
//!
//! - Relaybox delivers to it over STARTTLS with the certificate verified against the MX
//!   name (OUT-4): held while Postfix shows a certificate of an unknown CA, delivered
//!   once it shows the test CA's; the delivered copy's DKIM-Signature verifies with
//!   dkimpy given the published record, and fails with a changed body.
//! - Mail from Postfix that is encrypted and DKIM-signed (dkimpy, `classic.test`) is
//!   accepted (IN-4); unsigned encrypted mail is refused with `554 5.7.1 No DKIM
//!   signature found` and cleartext with `523 Encryption Needed: Invalid Unencrypted
//!   Mail` — checked twice: through Postfix (its log quotes the relay's reply) and by
//!   speaking SMTP with STARTTLS directly from the Postfix address.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use relaybox_blackbox::ca::TestCa;
use relaybox_blackbox::conn::LineConn;
use relaybox_blackbox::dns::Zone;
use relaybox_blackbox::federation::{DELIVERY_TIMEOUT, DomainRelays, FedRelay, Net};
use relaybox_blackbox::mail::{base64, header_values, stored_message_id};
use relaybox_blackbox::postfix::Postfix;
use relaybox_blackbox::{Account, MailBuilder, Smtp, encrypted_mail};

const CLASSIC: &str = "classic.test";
/// Selector of the classic peer's DKIM key.
const PF_SELECTOR: &str = "pf";

/// dkimpy (spec/peers.md §4.4) from the venv of `tests/run`: `sign SELECTOR DOMAIN
/// KEYFILE MSGFILE` prints the signed message; `verify NAME TXT MSGFILE` prints PASS
/// or FAIL (line ends normalised to CRLF first: a Maildir file has LF).
const DKIMPY: &str = r#"
import sys, dkim
mode = sys.argv[1]
if mode == "sign":
    sel, dom, keyfile, msgfile = sys.argv[2:6]
    msg = open(msgfile, "rb").read()
    sig = dkim.sign(msg, sel.encode(), dom.encode(), open(keyfile, "rb").read(),
                    canonicalize=(b"relaxed", b"simple"),
                    include_headers=[b"from", b"to", b"subject", b"date", b"message-id",
                                     b"mime-version", b"content-type"])
    sys.stdout.buffer.write(sig + msg)
else:
    name, txt, msgfile = sys.argv[2:5]
    msg = open(msgfile, "rb").read().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    want = name.rstrip(".").lower().encode()
    def dnsfunc(q, timeout=5):
        q = q.decode() if isinstance(q, bytes) else q
        return txt.encode() if q.rstrip(".").lower().encode() == want else None
    print("PASS" if dkim.verify(msg, dnsfunc=dnsfunc) else "FAIL")
"#;

fn venv_python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.venv/bin/python")
        .components()
        .collect()
}

fn dkimpy(args: &[&str]) -> Vec<u8> {
    let out = Command::new(venv_python())
        .arg("-c")
        .arg(DKIMPY)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "run {} (tests/run makes the venv): {e}",
                venv_python().display()
            )
        });
    assert!(
        out.status.success(),
        "dkimpy {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Verify `msg`'s DKIM signature with dkimpy given the TXT record `name` = `txt`.
fn dkim_verifies(dir: &Path, name: &str, txt: &str, msg: &[u8]) -> bool {
    let file = dir.join(format!(
        "verify-{}.eml",
        relaybox_blackbox::mail::random_string(8, b"abcdef")
    ));
    std::fs::write(&file, msg).expect("write message");
    let out = dkimpy(&["verify", name, txt, file.to_str().expect("utf-8 path")]);
    String::from_utf8_lossy(&out).trim() == "PASS"
}

/// The classic peer's DKIM key: (private key PEM file, TXT value).
fn classic_dkim_key(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("classic-dkim.key");
    let st = Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key)
        .arg("2048")
        .output()
        .expect("run openssl genrsa");
    assert!(
        st.status.success(),
        "openssl genrsa: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let der = Command::new("openssl")
        .args(["rsa", "-pubout", "-outform", "DER", "-in"])
        .arg(&key)
        .output()
        .expect("run openssl rsa -pubout");
    assert!(
        der.status.success(),
        "openssl rsa: {}",
        String::from_utf8_lossy(&der.stderr)
    );
    (key, format!("v=DKIM1; k=rsa; p={}", base64(&der.stdout)))
}

/// Sign `msg` as `classic.test` with dkimpy.
fn classic_sign(dir: &Path, key: &Path, msg: &[u8]) -> Vec<u8> {
    let file = dir.join(format!(
        "sign-{}.eml",
        relaybox_blackbox::mail::random_string(8, b"abcdef")
    ));
    std::fs::write(&file, msg).expect("write message");
    dkimpy(&[
        "sign",
        PF_SELECTOR,
        CLASSIC,
        key.to_str().expect("utf-8 path"),
        file.to_str().expect("utf-8 path"),
    ])
}

/// One relay `r1-<tag>.test` at .2, Postfix for `classic.test` at .4 (its certificate
/// from `postfix_ca`, or the relays' test CA when `None`), the classic DKIM record in
/// DNS.
struct Setup {
    set: DomainRelays,
    postfix: Postfix,
    dkim_key: PathBuf,
    /// Holds `dkim_key` (removed on drop).
    _key_dir: tempfile::TempDir,
    /// The relay's account.
    a: Account,
}

async fn setup(postfix_ca: Option<&TestCa>) -> Setup {
    let net = Net::fresh();
    let key_dir = tempfile::Builder::new()
        .prefix("relaybox-pfkey-")
        .tempdir()
        .expect("temp dir");
    let (dkim_key, dkim_txt) = classic_dkim_key(key_dir.path());
    let mut zone = Zone::default();
    zone.add_mail_domain(CLASSIC, net.host(4));
    zone.add_txt(&format!("{PF_SELECTOR}._domainkey.{CLASSIC}"), &dkim_txt);
    let set = DomainRelays::start_with_zone(1, |_| Vec::new(), zone, net).await;
    let ca = postfix_ca.unwrap_or(&set.ca);
    let leaf = ca.leaf(set.dir.path(), "classic", &[CLASSIC], &[]);
    let postfix = Postfix::start(
        net.host(4),
        CLASSIC,
        &leaf,
        &[(set.relays[0].mail_domain.clone(), net.host(2))],
    );
    let a = set.relays[0].account();
    set.relays[0].create_account(&a).await;
    Setup {
        set,
        postfix,
        dkim_key,
        _key_dir: key_dir,
        a,
    }
}

fn r1(s: &Setup) -> &FedRelay {
    &s.set.relays[0]
}

/// Inject `msg` into Postfix over plain SMTP from 127.0.0.1 (in its `mynetworks`), to
/// be relayed to `rcpt`; asserts Postfix queued it.
async fn inject_into_postfix(pf: &Postfix, from: &str, rcpt: &str, msg: &[u8]) {
    let mut s = Smtp::connect(pf.smtp_addr()).await;
    s.greeting().await;
    s.ehlo().await;
    let r = s.send_mail(from, &[rcpt], msg).await;
    assert_eq!(r.code, 250, "Postfix did not queue the message: {r}");
    s.quit().await;
}

/// Speak SMTP to the relay's port 25 from the Postfix address with STARTTLS, as a
/// classic MTA would; the reply that ends the transaction.
async fn direct_smtp(s: &Setup, from: &str, rcpt: &str, msg: &[u8]) -> relaybox_blackbox::Reply {
    let addr = r1(s).sock(25);
    let conn = LineConn::connect_from(IpAddr::V4(s.postfix.ip), addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let mut c = Smtp::from_conn(conn, addr);
    c.greeting().await;
    c.ehlo().await;
    c.starttls().await;
    c.ehlo().await;
    let r = c.send_mail(from, &[rcpt], msg).await;
    c.quit().await;
    r
}

fn pf_lines(pf: &Postfix, words: &[&str]) -> String {
    pf.log()
        .lines()
        .filter(|l| words.iter().any(|w| l.contains(w)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Relaybox → Postfix: verified STARTTLS (OUT-4) and a DKIM signature that dkimpy
/// verifies with the published record (SUB-12, §18); a changed body fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaybox_delivers_to_postfix_over_verified_starttls_with_dkim() {
    // Phase 1: Postfix shows a certificate of a CA the relay does not trust.
    let stranger = TestCa::new("stranger");
    let s = setup(Some(&stranger)).await;
    let bob = format!("bob@{CLASSIC}");
    let mail = encrypted_mail(&s.a.addr, &[&bob]);
    let r = r1(&s).submit(&s.a, &[&bob], &mail.bytes).await;
    assert_eq!(r.code, 250, "submission to {bob}: {r}");
    // The relay tries (back-off 1–2 s) and must abort the handshake: Postfix's OpenSSL
    // logs the relay's TLS alert 48 (unknown_ca, RFC 8446 §6.2).
    let tried = s
        .postfix
        .wait_log(Duration::from_secs(20), |l| l.contains("alert unknown ca"))
        .await;
    assert!(
        tried.is_some(),
        "the relay did not refuse Postfix's untrusted certificate; relay log:\n{}\nPostfix log:\n{}",
        r1(&s).log_tail(40),
        s.postfix.log()
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let held = s.postfix.mailbox();
    assert!(
        held.is_empty(),
        "delivered although Postfix's certificate is from an untrusted CA:\n{}",
        String::from_utf8_lossy(&held[0])
    );

    // Phase 2: the certificate from the test CA, for the MX name.
    let leaf = s
        .set
        .ca
        .leaf(s.set.dir.path(), "classic-good", &[CLASSIC], &[]);
    s.postfix.replace_certificate(&leaf);
    let got = s
        .postfix
        .wait_mailbox(DELIVERY_TIMEOUT, |m| {
            m.iter()
                .any(|x| stored_message_id(x).as_deref() == Some(mail.message_id.as_str()))
        })
        .await;
    let copy = got
        .iter()
        .find(|x| stored_message_id(x).as_deref() == Some(mail.message_id.as_str()))
        .unwrap_or_else(|| {
            panic!(
                "not delivered to Postfix within {DELIVERY_TIMEOUT:?} with a trusted certificate; \
                 relay log:\n{}\nPostfix log:\n{}",
                r1(&s).log_tail(40),
                pf_lines(&s.postfix, &["smtpd", "TLS", "status="])
            )
        })
        .clone();
    assert_eq!(got.len(), 1, "delivered once");
    // Only the relay speaks TLS to this Postfix (a domain relay connects from the
    // kernel's loopback source address, so the line names 127.0.0.1).
    let tls = pf_lines(&s.postfix, &["TLS connection established from"]);
    assert!(
        !tls.is_empty(),
        "Postfix logged no TLS session from the relay:\n{}",
        s.postfix.log()
    );
    // Postfix's Received header of the delivery says TLS too (smtpd_tls_received_header).
    let received = header_values(&copy, "Received").join("\n");
    assert!(
        received.contains("TLS"),
        "Received by Postfix without TLS: {received}"
    );

    // DKIM (SUB-12): verifies with the relay's published record; a changed body fails.
    let domain = &r1(&s).mail_domain;
    let txt = s.set.dkim[0]
        .clone()
        .unwrap_or_else(|| panic!("no DKIM record published for {domain}"));
    let sigs = header_values(&copy, "DKIM-Signature");
    assert_eq!(
        sigs.len(),
        1,
        "one DKIM-Signature on the relayed copy: {sigs:?}"
    );
    let sig = sigs[0].replace([' ', '\t', '\r', '\n'], "");
    assert!(
        sig.contains(&format!("d={domain}")),
        "DKIM d= is the relay's domain: {sig}"
    );
    assert!(
        sig.contains("s=opendkim"),
        "DKIM s= is the default selector: {sig}"
    );
    let name = format!("opendkim._domainkey.{domain}");
    let dir = s.set.dir.path();
    assert!(
        dkim_verifies(dir, &name, &txt, &copy),
        "dkimpy does not verify the relay's signature"
    );
    let mut changed = copy.clone();
    let last = changed
        .iter()
        .rposition(|&b| b.is_ascii_alphanumeric())
        .expect("a body byte");
    changed[last] = if changed[last] == b'A' { b'B' } else { b'A' };
    assert!(
        !dkim_verifies(dir, &name, &txt, &changed),
        "a changed body still verifies"
    );
}

/// Postfix → Relaybox: encrypted mail DKIM-signed as classic.test is accepted (IN-4c,
/// IN-4e) and stored without the signature (IN-7); Postfix used TLS for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_signed_encrypted_mail_is_accepted() {
    let s = setup(None).await;
    let alice = format!("alice@{CLASSIC}");
    let mail = encrypted_mail(&alice, &[&s.a.addr]);
    let signed = classic_sign(s.set.dir.path(), &s.dkim_key, &mail.bytes);
    inject_into_postfix(&s.postfix, &alice, &s.a.addr, &signed).await;
    let inbox = r1(&s)
        .wait_inbox(&s.a, DELIVERY_TIMEOUT, |i| {
            i.iter()
                .any(|m| stored_message_id(m).as_deref() == Some(mail.message_id.as_str()))
        })
        .await;
    let copy = inbox
        .iter()
        .find(|m| stored_message_id(m).as_deref() == Some(mail.message_id.as_str()))
        .unwrap_or_else(|| {
            panic!(
                "signed encrypted mail from Postfix not in the INBOX within {DELIVERY_TIMEOUT:?}; \
                 Postfix log:\n{}\nrelay log:\n{}",
                pf_lines(&s.postfix, &["smtp[", "status=", "TLS"]),
                r1(&s).log_tail(30)
            )
        });
    for h in ["DKIM-Signature", "Received", "Authentication-Results"] {
        assert!(
            header_values(copy, h).is_empty(),
            "stored copy still has {h} (IN-7)"
        );
    }
    let sent = pf_lines(&s.postfix, &["status=sent"]);
    assert!(
        sent.contains(&s.set.net.host(2).to_string()),
        "Postfix log: {sent}"
    );
    let tls = pf_lines(&s.postfix, &["TLS connection established to"]);
    assert!(
        tls.contains(&s.set.net.host(2).to_string()),
        "Postfix did not use TLS:\n{}",
        s.postfix.log()
    );
}

/// Postfix → Relaybox: unsigned encrypted mail → `554 5.7.1 No DKIM signature found`;
/// cleartext (even signed) → `523 Encryption Needed: Invalid Unencrypted Mail` (IN-4d,
/// IN-4e; §10). Through Postfix (the bounce reason in its log) and directly from the
/// Postfix address with STARTTLS (the exact reply).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_unsigned_or_cleartext_mail_is_refused() {
    let s = setup(None).await;
    let alice = format!("alice@{CLASSIC}");
    let unsigned = encrypted_mail(&alice, &[&s.a.addr]);
    let clear = MailBuilder::cleartext(&alice, &[&s.a.addr], "hello in clear").build();
    let clear_signed = classic_sign(s.set.dir.path(), &s.dkim_key, &clear.bytes);

    // Directly, with the exact replies.
    let r = direct_smtp(&s, &alice, &s.a.addr, &unsigned.bytes).await;
    assert_eq!(
        (r.code, r.last().get(4..).unwrap_or("")),
        (554, "5.7.1 No DKIM signature found"),
        "unsigned encrypted mail: {r}"
    );
    let r = direct_smtp(&s, &alice, &s.a.addr, &clear_signed).await;
    assert_eq!(
        (r.code, r.last().get(4..).unwrap_or("")),
        (523, "Encryption Needed: Invalid Unencrypted Mail"),
        "cleartext mail: {r}"
    );

    // Through Postfix: its log quotes the relay's reply when it bounces.
    inject_into_postfix(&s.postfix, &alice, &s.a.addr, &unsigned.bytes).await;
    let l = s
        .postfix
        .wait_log(DELIVERY_TIMEOUT, |l| {
            l.contains("said: 554 5.7.1 No DKIM signature found")
        })
        .await;
    assert!(
        l.is_some(),
        "Postfix log shows no 554 refusal:\n{}",
        pf_lines(&s.postfix, &["status="])
    );
    inject_into_postfix(&s.postfix, &alice, &s.a.addr, &clear_signed).await;
    let l = s
        .postfix
        .wait_log(DELIVERY_TIMEOUT, |l| {
            l.contains("said: 523 Encryption Needed: Invalid Unencrypted Mail")
        })
        .await;
    assert!(
        l.is_some(),
        "Postfix log shows no 523 refusal:\n{}",
        pf_lines(&s.postfix, &["status="])
    );
    let inbox = r1(&s).inbox(&s.a).await;
    assert!(
        inbox.is_empty(),
        "refused mail was stored: {} messages",
        inbox.len()
    );
}
