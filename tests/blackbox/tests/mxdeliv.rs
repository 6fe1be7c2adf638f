//! Federation over HTTPS, `/mxdeliv` (IN-6), against the real binary in IP-only mode:
//! method, size limit, relay access (IN-2) and the inbound checks (IN-4) with the HTTP
//! peer as client IP. Peers are simulated from 127.0.0.2 and 127.0.0.3.

use std::net::{IpAddr, Ipv4Addr};

use relaybox_blackbox::conn::LineConn;
use relaybox_blackbox::http::{self, HttpResponse};
use relaybox_blackbox::mail::stored_message_id;
use relaybox_blackbox::{Account, DOMAIN, Imap, MailBuilder, Relay, create_account};

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

async fn mxdeliv(relay: &Relay, from_ip: IpAddr, head: &str, body: &[u8]) -> HttpResponse {
    let mut conn = LineConn::connect_tls_from(from_ip, relay.https_addr(), &[b"http/1.1"])
        .await
        .expect("TLS to the HTTPS port");
    http::request(&mut conn, head, body)
        .await
        .expect("HTTP response")
}

fn post(from: Option<&str>, to: &[&str]) -> String {
    let mut head = String::from("POST /mxdeliv HTTP/1.1\nHost: 127.0.0.1");
    if let Some(f) = from {
        head += &format!("\nX-MAIL-FROM: {f}");
    }
    for t in to {
        head += &format!("\nX-MAIL-TO: {t}");
    }
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mxdeliv_inbound() {
    let relay = Relay::start(&["max_message_size = 20000"]).await;
    let b = Account::random();
    let c = Account::random();
    create_account(&relay, &b).await;
    create_account(&relay, &c).await;
    let peer = "peer12345@[127.0.0.2]";

    // Accepted: encrypted, literal matching the peer, two X-MAIL-TO.
    let good = MailBuilder::encrypted(peer, &[&b.addr, &c.addr]).build();
    let r = mxdeliv(
        &relay,
        ip(2),
        &post(Some(peer), &[&b.addr, &c.addr]),
        &good.bytes,
    )
    .await;
    assert_eq!(
        r.status,
        200,
        "IN-6 accepted: {} {}",
        r.status_line,
        r.body_text()
    );

    // SUB-14 as at RCPT: `user+ext@domain` is `user@domain`.
    let tagged = MailBuilder::encrypted(peer, &[&b.addr]).build();
    let plus = format!("{}+tag@{DOMAIN}", b.local);
    let r = mxdeliv(&relay, ip(2), &post(Some(peer), &[&plus]), &tagged.bytes).await;
    assert_eq!(
        r.status,
        200,
        "+ext recipient: {} {}",
        r.status_line,
        r.body_text()
    );

    // IN-6: method other than POST.
    let r = mxdeliv(&relay, ip(2), "GET /mxdeliv HTTP/1.1\nHost: 127.0.0.1", b"").await;
    assert_eq!(
        r.status,
        405,
        "IN-6 GET: {} {}",
        r.status_line,
        r.body_text()
    );

    // X-MAIL-FROM absent = `<>`.
    let bounce = MailBuilder::encrypted(peer, &[&b.addr]).build();
    let r = mxdeliv(&relay, ip(2), &post(None, &[&b.addr]), &bounce.bytes).await;
    assert_eq!(
        r.status,
        200,
        "IN-6 without X-MAIL-FROM: {} {}",
        r.status_line,
        r.body_text()
    );

    // Too large: 413 with the SMTP-style body.
    let big = MailBuilder::encrypted(peer, &[&b.addr])
        .payload_len(60_000)
        .build();
    let r = mxdeliv(&relay, ip(2), &post(Some(peer), &[&b.addr]), &big.bytes).await;
    assert_eq!(r.status, 413, "IN-6 size: {}", r.status_line);
    assert_eq!(r.body_text().trim_end(), "552 Message exceeds maximum size");

    // Refusals: 400 with the SMTP reply line as body.
    let clear = MailBuilder::cleartext(peer, &[&b.addr], "hello").build();
    let r = mxdeliv(&relay, ip(2), &post(Some(peer), &[&b.addr]), &clear.bytes).await;
    assert_eq!(r.status, 400, "IN-4d: {}", r.status_line);
    assert_eq!(
        r.body_text().trim_end(),
        "523 Encryption Needed: Invalid Unencrypted Mail"
    );

    let spoof = MailBuilder::encrypted(peer, &[&b.addr]).build();
    let r = mxdeliv(&relay, ip(3), &post(Some(peer), &[&b.addr]), &spoof.bytes).await;
    assert_eq!(r.status, 400, "IN-4e: {}", r.status_line);
    assert_eq!(
        r.body_text().trim_end(),
        "500 Invalid FROM domain literal: 127.0.0.2 does not match origin IP 127.0.0.3"
    );

    let foreign = MailBuilder::encrypted(peer, &["someone@example.org"]).build();
    let r = mxdeliv(
        &relay,
        ip(2),
        &post(Some(peer), &["someone@example.org"]),
        &foreign.bytes,
    )
    .await;
    assert_eq!(r.status, 400, "IN-2: {}", r.status_line);
    assert_eq!(
        r.body_text().trim_end(),
        "554 5.7.1 <someone@example.org>: Relay access denied"
    );

    // IN-2 (allowed variant): an unknown local user is refused, no backscatter.
    let nobody = "nobody1234@[127.0.0.1]";
    let r = mxdeliv(&relay, ip(2), &post(Some(peer), &[nobody]), &good.bytes).await;
    assert_eq!(r.status, 400, "IN-2 unknown: {}", r.status_line);
    assert_eq!(
        r.body_text().trim_end(),
        format!("550 5.1.1 <{nobody}>: Recipient address rejected: User unknown")
    );

    // IN-4e: a DNS-domain sender needs an aligned DKIM signature.
    let unsigned = MailBuilder::encrypted("someone@example.org", &[&b.addr]).build();
    let r = mxdeliv(
        &relay,
        ip(2),
        &post(Some("someone@example.org"), &[&b.addr]),
        &unsigned.bytes,
    )
    .await;
    assert_eq!(r.status, 400, "IN-4e DKIM: {}", r.status_line);
    assert_eq!(
        r.body_text().trim_end(),
        "554 5.7.1 No DKIM signature found"
    );

    // What was accepted is stored, nothing else.
    for (acct, want) in [
        (
            &b,
            vec![&good.message_id, &tagged.message_id, &bounce.message_id],
        ),
        (&c, vec![&good.message_id]),
    ] {
        let ids: Vec<String> = Imap::fetch_inbox(&relay, acct)
            .await
            .iter()
            .filter_map(|m| stored_message_id(m))
            .collect();
        let mut want: Vec<String> = want.into_iter().cloned().collect();
        let mut got = ids.clone();
        want.sort();
        got.sort();
        assert_eq!(got, want, "INBOX of {}", acct.addr);
    }
}
