//! TLS against the real binary: minimum versions per port (TLS-2) and the 443 ALPN
//! multiplexer (PORT-2), with Delta Chat's ALPN offers (PORT-3).

use relaybox_blackbox::conn::{LineConn, tls_client_config, tls_client_config_versions};
use relaybox_blackbox::{Account, Imap, Relay, Smtp, encrypted_mail};
use rustls::ProtocolVersion;

fn tls12_only() -> std::sync::Arc<rustls::ClientConfig> {
    tls_client_config_versions(&[], &[&rustls::version::TLS12])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimum_tls_versions_per_port() {
    let relay = Relay::start(&[]).await;
    // TLS-2: IMAP and submission need TLS 1.3.
    for (name, addr) in [
        ("993", relay.imaps_addr()),
        ("465", relay.submissions_addr()),
    ] {
        let r = LineConn::connect_tls_with(addr, tls12_only()).await;
        assert!(
            r.is_err(),
            "TLS-2: a TLS 1.2-only client got through on {name}"
        );
        let c = LineConn::connect_tls(addr, &[])
            .await
            .expect("TLS 1.3 handshake");
        assert_eq!(c.tls_version(), Some(ProtocolVersion::TLSv1_3), "{name}");
    }
    let mut s = Smtp::connect(relay.submission_addr()).await;
    s.greeting().await;
    s.ehlo().await;
    let r = s.cmd("STARTTLS").await;
    assert_eq!(r.code, 220, "{r}");
    let r = s
        .conn
        .start_tls_with(relay.submission_addr(), tls12_only())
        .await;
    assert!(
        r.is_err(),
        "TLS-2: a TLS 1.2-only client got through STARTTLS on 587"
    );
    let mut c = Imap::connect(relay.imap_addr()).await;
    c.greeting().await;
    let r = c.cmd("STARTTLS").await;
    assert!(r.is_ok(), "{r}");
    let r = c.conn.start_tls_with(relay.imap_addr(), tls12_only()).await;
    assert!(
        r.is_err(),
        "TLS-2: a TLS 1.2-only client got through STARTTLS on 143"
    );
    // TLS-2: port 25 and HTTPS accept TLS 1.2.
    let mut s = Smtp::connect(relay.smtp_addr()).await;
    s.greeting().await;
    s.ehlo().await;
    let r = s.cmd("STARTTLS").await;
    assert_eq!(r.code, 220, "{r}");
    s.conn
        .start_tls_with(relay.smtp_addr(), tls12_only())
        .await
        .expect("TLS-2: TLS 1.2 on port 25");
    assert_eq!(s.conn.tls_version(), Some(ProtocolVersion::TLSv1_2));
    let r = s.cmd("EHLO peer.example").await;
    assert_eq!(r.code, 250, "EHLO inside TLS 1.2 on 25: {r}");
    let c = LineConn::connect_tls_with(relay.https_addr(), tls12_only())
        .await
        .expect("TLS-2: TLS 1.2 on HTTPS");
    assert_eq!(c.tls_version(), Some(ProtocolVersion::TLSv1_2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_smtp_on_443_is_submission() {
    let relay = Relay::start(&[]).await;
    let a = Account::random();
    let addr = relay.https_addr();
    // PORT-2: `smtp` → submission (tested first, so also with `imap` listed before it).
    for alpn in [&[&b"smtp"[..]][..], &[b"imap", b"smtp"]] {
        let conn = LineConn::connect_tls_with(addr, tls_client_config(alpn))
            .await
            .expect("TLS on 443");
        let mut s = Smtp::from_conn(conn, addr);
        let g = s.greeting().await;
        assert_eq!(g.code, 220, "PORT-2 ALPN {alpn:?}: {g}");
        s.ehlo().await;
        let r = s.auth_plain(&a.addr, &a.password).await;
        assert_eq!(r.code, 235, "{r}");
        let m = encrypted_mail(&a.addr, &[&a.addr]);
        let r = s.send_mail(&a.addr, &[&a.addr], &m.bytes).await;
        assert_eq!(r.code, 250, "submission over 443: {r}");
        s.quit().await;
    }
    let inbox = relaybox_blackbox::Imap::fetch_inbox(&relay, &a).await;
    assert_eq!(inbox.len(), 2, "both submissions over 443 arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_imap_on_443_is_imap() {
    let relay = Relay::start(&[]).await;
    let a = Account::random();
    let addr = relay.https_addr();
    // PORT-2: `imap` → IMAP.
    let conn = LineConn::connect_tls_with(addr, tls_client_config(&[b"imap"]))
        .await
        .expect("TLS on 443");
    let mut c = Imap::from_conn(conn, addr);
    let g = c.greeting().await;
    assert!(g.raw.starts_with(b"* OK"), "PORT-2 ALPN imap: {g}");
    let r = c.login(&a.addr, &a.password).await;
    assert!(r.is_ok(), "{r}");
    assert_eq!(c.select("INBOX").await, 0);
    c.logout().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_or_no_alpn_on_443_is_https() {
    let relay = Relay::start(&[]).await;
    let addr = relay.https_addr();
    // PORT-2: other or no ALPN → HTTPS (§17 robots.txt).
    for alpn in [&[][..], &[&b"http/1.1"[..]][..]] {
        let mut conn = LineConn::connect_tls_with(addr, tls_client_config(alpn))
            .await
            .expect("TLS on 443");
        conn.write_all(b"GET /robots.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .expect("write request");
        let status = conn.read_line().await.expect("HTTP status line");
        let status = String::from_utf8_lossy(&status).into_owned();
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "PORT-2 ALPN {alpn:?}: {status}"
        );
        let (_, rest) = conn.wait_closed(std::time::Duration::from_secs(5)).await;
        let rest = String::from_utf8_lossy(&rest);
        assert!(rest.contains("Disallow: /"), "§17 robots.txt: {rest}");
    }
}
