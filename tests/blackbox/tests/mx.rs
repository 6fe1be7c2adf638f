//! Port 25 (mail from other relays) against the real binary, IP-only mode: STARTTLS
//! before MAIL, no AUTH (IN-1), relay access (IN-2), VRFY (IN-3), the inbound checks
//! of IN-4 with the IP-literal origin rule (IN-4e), and header removal (IN-7). Peers are
//! simulated by connecting from other loopback addresses (127.0.0.2, 127.0.0.3).

use std::net::{IpAddr, Ipv4Addr};

use relaybox_blackbox::mail::{header_values, stored_message_id};
use relaybox_blackbox::{Account, Imap, MailBuilder, Relay, Smtp, create_account};

const CLEARTEXT_523: &str = "523 Encryption Needed: Invalid Unencrypted Mail";

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A port-25 session from `from_ip`, after STARTTLS and a second EHLO.
async fn mx_session(relay: &Relay, from_ip: IpAddr) -> Smtp {
    let mut s = Smtp::connect_from(from_ip, relay.smtp_addr()).await;
    s.greeting().await;
    s.ehlo().await;
    s.starttls().await;
    s.ehlo().await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_25_requires_starttls_and_offers_no_auth() {
    let relay = Relay::start(&[]).await;
    let mut s = Smtp::connect_from(ip(2), relay.smtp_addr()).await;
    s.greeting().await;
    let ehlo = s.ehlo().await;
    assert!(
        ehlo.keyword("STARTTLS").is_some(),
        "IN-1: STARTTLS offered: {ehlo}"
    );
    assert!(
        ehlo.keyword("AUTH").is_none(),
        "IN-1: no AUTH on 25: {ehlo}"
    );
    assert_eq!(
        ehlo.keyword("SIZE"),
        Some("SIZE 31457280"),
        "IN-1: SIZE: {ehlo}"
    );
    for cmd in ["NOOP", "RSET"] {
        let r = s.cmd(cmd).await;
        assert_eq!(r.code, 250, "IN-1: {cmd} before STARTTLS: {r}");
    }
    let r = s.cmd("MAIL FROM:<peer12345@[127.0.0.2]>").await;
    assert_eq!(
        r.last(),
        "530 5.7.0 Must issue a STARTTLS command first",
        "IN-1"
    );
    s.starttls().await;
    let ehlo = s.ehlo().await;
    assert!(
        ehlo.keyword("AUTH").is_none(),
        "IN-1: no AUTH on 25 after TLS: {ehlo}"
    );
    s.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_25_relay_access_and_vrfy() {
    let relay = Relay::start(&[]).await;
    let b = Account::random();
    create_account(&relay, &b).await;
    let mut s = mx_session(&relay, ip(2)).await;
    // IN-3: same answer for existing, unknown and domainless names.
    for name in [b.addr.as_str(), "nobody123@[127.0.0.1]", "postmaster"] {
        let r = s.cmd(&format!("VRFY {name}")).await;
        assert!(r.last().starts_with("252 2.0.0"), "IN-3: VRFY {name}: {r}");
    }
    let r = s.cmd("MAIL FROM:<peer12345@[127.0.0.2]>").await;
    assert_eq!(r.code, 250, "{r}");
    // IN-2.
    let r = s.cmd("RCPT TO:<someone@example.org>").await;
    assert_eq!(
        r.last(),
        "554 5.7.1 <someone@example.org>: Relay access denied"
    );
    let r = s.cmd(&format!("RCPT TO:<{}>", b.addr)).await;
    assert_eq!(r.code, 250, "own domain: {r}");
    s.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_25_inbound_checks() {
    let relay = Relay::start(&[]).await;
    let b = Account::random();
    create_account(&relay, &b).await;
    let peer = "peer12345@[127.0.0.2]";

    // IN-4e: IP-literal From matching the client IP, encrypted → accepted; IN-7 headers
    // removed before storing.
    let mut s = mx_session(&relay, ip(2)).await;
    let good = MailBuilder::encrypted(peer, &[&b.addr])
        .add_header(
            "DKIM-Signature",
            "v=1; a=rsa-sha256; d=example.org; s=x; b=AAAA",
        )
        .add_header("Authentication-Results", "mx.example.org; dkim=pass")
        .add_header("Received", "from somewhere by mx.example.org")
        .build();
    let r = s.send_mail(peer, &[&b.addr], &good.bytes).await;
    assert_eq!(r.code, 250, "IN-4e: literal matching the origin: {r}");
    // IN-4b: MAIL FROM ≠ From is not refused.
    let other = MailBuilder::encrypted(peer, &[&b.addr]).build();
    let r = s
        .send_mail("bounce-handler@[127.0.0.2]", &[&b.addr], &other.bytes)
        .await;
    assert_eq!(r.code, 250, "IN-4b: envelope sender differs from From: {r}");
    // IN-4a.
    let nofrom = MailBuilder::encrypted(peer, &[&b.addr])
        .without("From")
        .build();
    let r = s.send_mail(peer, &[&b.addr], &nofrom.bytes).await;
    assert_eq!(r.last().trim_end(), "500 Invalid FROM header:", "IN-4a");
    // IN-4d: cleartext to an enforce-E2EE account (ACC-9).
    let clear = MailBuilder::cleartext(peer, &[&b.addr], "hello").build();
    let r = s.send_mail(peer, &[&b.addr], &clear.bytes).await;
    assert_eq!(r.last(), CLEARTEXT_523, "IN-4d");
    // IN-4d(i): a delivery report from mailer-daemon passes in the clear.
    let report = MailBuilder::cleartext("MAILER-DAEMON@[127.0.0.2]", &[&b.addr], "")
        .header("Auto-Submitted", "auto-replied")
        .build();
    let report = String::from_utf8(report.bytes)
        .expect("ascii")
        .replace(
            "Content-Type: text/plain; charset=utf-8\r\n\r\n\r\n",
            "Content-Type: multipart/report; report-type=delivery-status; boundary=\"rb\"\r\n\r\n\
             --rb\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n\
             --rb\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n\
             Final-Recipient: rfc822; x@example.org\r\nAction: failed\r\nStatus: 5.0.0\r\n\r\n--rb--\r\n",
        );
    assert!(report.contains("multipart/report"));
    let r = s.send_mail("", &[&b.addr], report.as_bytes()).await;
    assert_eq!(r.code, 250, "IN-4d(i): mailer-daemon report: {r}");
    s.quit().await;

    // IN-4e: literal not matching the client IP.
    let mut s = mx_session(&relay, ip(3)).await;
    let spoof = MailBuilder::encrypted(peer, &[&b.addr]).build();
    let r = s.send_mail(peer, &[&b.addr], &spoof.bytes).await;
    assert_eq!(
        r.last(),
        "500 Invalid FROM domain literal: 127.0.0.2 does not match origin IP 127.0.0.3",
        "IN-4e"
    );
    // IN-4 order: cleartext is judged before the origin.
    let r = s.send_mail(peer, &[&b.addr], &clear.bytes).await;
    assert_eq!(r.last(), CLEARTEXT_523, "IN-4: encryption before origin");
    s.quit().await;

    let inbox = Imap::fetch_inbox(&relay, &b).await;
    let ids: Vec<String> = inbox.iter().filter_map(|m| stored_message_id(m)).collect();
    assert!(
        ids.contains(&good.message_id),
        "accepted message stored: {ids:?}"
    );
    assert!(
        ids.contains(&other.message_id),
        "IN-4b message stored: {ids:?}"
    );
    assert!(
        !ids.contains(&spoof.message_id),
        "spoofed message not stored"
    );
    assert_eq!(inbox.len(), 3, "three accepted messages");
    let stored = inbox
        .iter()
        .find(|m| stored_message_id(m).as_deref() == Some(good.message_id.as_str()))
        .expect("found above");
    for name in ["DKIM-Signature", "Authentication-Results", "Received"] {
        assert!(
            header_values(stored, name).is_empty(),
            "IN-7: {name} kept in the stored copy: {:?}",
            header_values(stored, name)
        );
    }
}
