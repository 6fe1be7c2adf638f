//! ACME with the real `relaybox` binary (issue 6, TLS-1, TLS-5, spec/appliance.md
//! ACME-4): a relay for a DNS name without an external certificate is in ACME mode and
//! gets its certificate at start from the CA in `acme_directory` (here Debian's pebble
//! on loopback, validating against the relay's real port 80 at the address dnsmasq
//! gives), serves it on every TLS port, and keeps it over a restart without asking the
//! CA again. Clients verify the served chain against pebble's issuing root. The
//! library-level tests (wizard request, TLS-ALPN-01 fallback, renewal, failures) are in
//! `daemon/tests/acme.rs`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use relaybox_blackbox::dns::{Dns, Zone};
use relaybox_blackbox::federation::{FedRelay, Net};
use relaybox_blackbox::pebble::{Pebble, PebbleOptions};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound of the wait for the certificate.
const LIMIT: Duration = Duration::from_secs(60);
/// Bound of one connection's handshake or dialogue.
const STEP: Duration = Duration::from_secs(10);

fn client(root_pem: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(c.expect("root PEM")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// The leaf of a verified handshake with `domain` over `tcp`; `Err` when the served
/// chain does not verify against `root_pem` for `domain`.
async fn handshake(tcp: TcpStream, domain: &str, root_pem: &str) -> Result<Vec<u8>, String> {
    let name = ServerName::try_from(domain.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(STEP, client(root_pem).connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no certificate")?;
    Ok(leaf.as_ref().to_vec())
}

/// Implicit TLS on `addr`.
async fn implicit(addr: SocketAddr, domain: &str, root_pem: &str) -> Result<Vec<u8>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    handshake(tcp, domain, root_pem).await
}

/// One SMTP reply (all its lines), bounded.
async fn smtp_reply(tcp: &mut TcpStream) -> String {
    let mut text = Vec::new();
    let read = async {
        let mut byte = [0u8; 1];
        // A reply ends with a line `ddd <text>`; at most 8 kB.
        while text.len() < 8192 {
            if tcp.read(&mut byte).await.unwrap_or(0) == 0 {
                break;
            }
            text.push(byte[0]);
            if text.ends_with(b"\r\n") {
                let s = String::from_utf8_lossy(&text);
                let last = s.trim_end().rsplit("\r\n").next().unwrap_or("").to_string();
                if last.len() >= 4 && last.as_bytes()[3] == b' ' {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(STEP, read)
        .await
        .expect("SMTP reply in time");
    String::from_utf8_lossy(&text).into_owned()
}

/// STARTTLS on an SMTP port (25, 587), then the handshake.
async fn starttls(addr: SocketAddr, domain: &str, root_pem: &str) -> Result<Vec<u8>, String> {
    let mut tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let greeting = smtp_reply(&mut tcp).await;
    assert!(greeting.starts_with("220"), "{addr}: {greeting}");
    tcp.write_all(b"EHLO client.test\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let ehlo = smtp_reply(&mut tcp).await;
    assert!(ehlo.contains("STARTTLS"), "{addr}: {ehlo}");
    tcp.write_all(b"STARTTLS\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let ready = smtp_reply(&mut tcp).await;
    assert!(ready.starts_with("220"), "{addr}: {ready}");
    handshake(tcp, domain, root_pem).await
}

#[tokio::test]
async fn relay_gets_a_certificate_at_start_serves_it_everywhere_and_keeps_it() {
    let net = Net::fresh();
    let ip = net.host(2);
    let domain = format!("acme-{}.test", net.tag());
    let mut zone = Zone::default();
    zone.add_mail_domain(&domain, ip);
    for name in [format!("www.{domain}"), format!("mta-sts.{domain}")] {
        zone.a.push((name, ip));
    }
    let dns = Dns::start(zone);
    let pebble = Pebble::start(PebbleOptions::new(dns.addr()));
    let root = pebble.issuing_root_pem().await;
    let mut relay = FedRelay::new(
        ip,
        &domain,
        &[
            format!("tls_extra_roots = {}", pebble.listener_ca_file().display()),
            format!("acme_directory = {}", pebble.directory()),
        ],
    );
    relay.start().await;
    let sock = |port: u16| SocketAddr::new(IpAddr::V4(ip), port);

    // TLS-1: ACME mode; the certificate arrives without anyone asking.
    let deadline = tokio::time::Instant::now() + LIMIT;
    let leaf = loop {
        match implicit(sock(443), &domain, &root).await {
            Ok(leaf) => break leaf,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "no pebble certificate on 443 within {LIMIT:?} ({e})\nrelay:\n{}\npebble:\n{}",
                relay.log_tail(40),
                pebble.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // TLS-5: every listener serves it on its next handshake.
    for port in [465, 993] {
        let served = implicit(sock(port), &domain, &root).await;
        assert_eq!(served.as_ref(), Ok(&leaf), "port {port}");
    }
    for port in [25, 587] {
        let served = starttls(sock(port), &domain, &root).await;
        assert_eq!(served.as_ref(), Ok(&leaf), "port {port} STARTTLS");
    }
    let stored = std::fs::read_to_string(relay.data_dir().join("acme/cert.pem"))
        .expect("certificate stored in <data_dir>/acme");
    assert!(stored.contains("BEGIN CERTIFICATE"));

    // ACME-3: after a restart the stored certificate is served at once, and the CA is
    // not asked again (rare writes, no rate limits spent).
    relay.stop().await;
    relay.start().await;
    let served = implicit(sock(443), &domain, &root).await;
    assert_eq!(served.as_ref(), Ok(&leaf), "after restart");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again = std::fs::read_to_string(relay.data_dir().join("acme/cert.pem"))
        .expect("certificate still stored");
    assert_eq!(again, stored, "no new certificate after the restart");
}
