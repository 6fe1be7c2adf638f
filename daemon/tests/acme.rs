//! ACME against Debian's pebble on loopback (issue 6, spec/appliance.md ACME-4): the
//! relay library serves every listener on its standard ports at a fresh `127.a.b.2`
//! inside the test process, the test's dnsmasq gives that address for the relay's
//! names, and pebble validates against the real listeners (HTTP-01 on 80, TLS-ALPN-01
//! on 443). A certificate obtained through `acme::request` (what the wizard calls) or
//! the renewal loop `acme::run` must be served on 443, 465 and 993 by the next
//! handshake, without a restart; the clients verify it against pebble's issuing root.
//! Every wait is bounded; pebble and dnsmasq are killed on drop.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use relaybox::acme::cert;
use relaybox::server::Relay;
use relaybox_blackbox::dns::{Dns, Zone};
use relaybox_blackbox::federation::Net;
use relaybox_blackbox::pebble::{Pebble, PebbleOptions};
use relaybox_webui::AcmeProgress;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

/// Bound of every wait for the CA.
const LIMIT: Duration = Duration::from_secs(60);

struct Setup {
    relay: Arc<Relay>,
    pebble: Pebble,
    _dns: Dns,
    _dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
    ip: Ipv4Addr,
    domain: String,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A relay for `acme-<net>.test` on every standard port of a fresh loopback address
/// (`http`: whether port 80 listens), its names in dnsmasq, pebble validating against
/// `options` (standard ports unless changed).
async fn setup(http: bool, change: impl FnOnce(&mut PebbleOptions)) -> Setup {
    setup_with(http, true, change).await
}

/// As [`setup`]; without `www_in_dns` the zone lacks `www.<domain>`.
async fn setup_with(
    http: bool,
    www_in_dns: bool,
    change: impl FnOnce(&mut PebbleOptions),
) -> Setup {
    let net = Net::fresh();
    let ip = net.host(2);
    let domain = format!("acme-{}.test", net.tag());
    let mut zone = Zone::default();
    zone.add_mail_domain(&domain, ip);
    for name in &cert::wanted_names(&domain)[1..] {
        if www_in_dns || !name.starts_with("www.") {
            zone.a.push((name.clone(), ip));
        }
    }
    let dns = Dns::start(zone);
    let mut options = PebbleOptions::new(dns.addr());
    change(&mut options);
    let pebble = Pebble::start(options);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ini = format!(
        "[params]\nmail_domain = {domain}\ndata_dir = {}\n\
         tls_extra_roots = {}\nacme_directory = {}\nacme_email = admin@{domain}\n\
         turn_listen =\nlog_stderr = true\n",
        dir.path().join("data").display(),
        pebble.listener_ca_file().display(),
        pebble.directory(),
    );
    for (key, port) in [
        ("smtp", 25),
        ("submission", 587),
        ("submissions", 465),
        ("imap", 143),
        ("imaps", 993),
        ("https", 443),
    ] {
        ini += &format!("{key}_listen = {ip}:{port}\n");
    }
    ini += &if http {
        format!("http_listen = {ip}:80\n")
    } else {
        "http_listen =\n".to_string()
    };
    let mut config = relaybox::config::Config::parse(&ini)
        .expect("config")
        .config;
    config.max_load_1m = 1e9;
    config.min_available_memory = 0;
    config.min_free_disk_space = 0;
    let relay = Relay::open(config).expect("relay opens");
    let serving = relay.clone();
    let server = tokio::spawn(async move {
        if let Err(e) = relaybox::server::serve(serving).await {
            panic!("serve: {e}");
        }
    });
    let setup = Setup {
        relay,
        pebble,
        _dns: dns,
        _dir: dir,
        server,
        ip,
        domain,
    };
    wait_listening(SocketAddr::new(IpAddr::V4(ip), 443)).await;
    setup
}

async fn wait_listening(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} does not listen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Setup {
    /// Wait until the request ends; its final progress.
    async fn finished(&self) -> AcmeProgress {
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            let p = self.relay.acme.progress();
            if matches!(p, AcmeProgress::Done | AcmeProgress::Failed { .. }) {
                return p;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "no result within {LIMIT:?}: {p:?}\npebble log:\n{}",
                    self.pebble.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn done(&self) {
        let p = self.finished().await;
        assert_eq!(p, AcmeProgress::Done, "pebble log:\n{}", self.pebble.log());
    }

    /// The leaf served on `port` (implicit TLS, SNI = the domain) when the client
    /// trusts only `root_pem`; `Err` when the handshake fails (not issued by it).
    async fn served_leaf(&self, port: u16, root_pem: &str) -> Result<Vec<u8>, String> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
            roots
                .add(c.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect((self.ip, port))
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from(self.domain.clone()).map_err(|e| e.to_string())?;
        let tls = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
        )
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

    /// The pebble-issued leaf is served on 443, 465 and 993 (the same one on each).
    async fn serves_pebble_certificate(&self, root: &str) -> cert::Facts {
        let mut leaves = Vec::new();
        for port in [443, 465, 993] {
            let leaf = self
                .served_leaf(port, root)
                .await
                .unwrap_or_else(|e| panic!("port {port}: not a pebble certificate: {e}"));
            leaves.push(leaf);
        }
        assert!(
            leaves.windows(2).all(|w| w[0] == w[1]),
            "same leaf everywhere"
        );
        let facts = cert::facts(&leaves[0]).expect("leaf parses");
        assert_eq!(facts.names.len(), 3, "{facts:?}");
        for name in cert::wanted_names(&self.domain) {
            assert!(facts.names.contains(&name), "{name} in {facts:?}");
        }
        facts
    }
}

#[tokio::test]
async fn http01_issues_a_certificate_served_without_restart() {
    let s = setup(true, |_| {}).await;
    let root = s.pebble.issuing_root_pem().await;
    let info = s.relay.acme_handles().info();
    assert_eq!(info.source, "self-signed");
    assert!(info.acme_possible);
    assert_eq!(info.progress, AcmeProgress::Idle);
    assert!(
        s.served_leaf(443, &root).await.is_err(),
        "before: the self-signed certificate is not trusted by pebble's root"
    );

    relaybox::acme::request(s.relay.clone(), Relay::acme_handles).expect("request starts");
    // One at a time: a second request while running is a no-op.
    relaybox::acme::request(s.relay.clone(), Relay::acme_handles).expect("second request");
    s.done().await;

    let facts = s.serves_pebble_certificate(&root).await;
    assert_eq!(s.relay.acme.validated_with(), Some("HTTP-01"));
    let info = s.relay.acme_handles().info();
    assert_eq!(info.source, "acme");
    assert_eq!(info.not_after, Some(facts.not_after));
    assert_eq!(info.names, facts.names);

    // ACME-3: account and pair kept in <data_dir>/acme, secrets 0600.
    use std::os::unix::fs::PermissionsExt;
    let dir = cert::acme_dir(&s.relay.config);
    for (file, mode) in [
        (cert::ACCOUNT_FILE, 0o600),
        (cert::KEY_FILE, 0o600),
        (cert::CERT_FILE, 0o644),
    ] {
        let meta = std::fs::metadata(dir.join(file)).expect(file);
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
    }
    // A restart starts with the stored certificate (TLS-5).
    let now = s.relay.clock.unix_now();
    let initial = relaybox::tls::initial_certificate(&s.relay.config, now).expect("initial");
    let initial = cert::facts(&initial.cert[0]).expect("parses");
    assert_eq!(initial.serial, facts.serial);
    // The challenge is gone once the request ended.
    assert!(s.relay.acme.tls_alpn01(Some(&s.domain)).is_none());
}

#[tokio::test]
async fn tls_alpn01_is_the_fallback_when_port_80_fails() {
    let s = setup(false, |_| {}).await;
    let root = s.pebble.issuing_root_pem().await;
    relaybox::acme::request(s.relay.clone(), Relay::acme_handles).expect("request starts");
    s.done().await;
    s.serves_pebble_certificate(&root).await;
    assert_eq!(s.relay.acme_handles().info().source, "acme");
    assert_eq!(s.relay.acme.validated_with(), Some("TLS-ALPN-01"));
}

#[tokio::test]
async fn renewal_replaces_the_certificate_without_restart() {
    // 30-second certificates: renewal is due 20 s after issue (two thirds).
    let s = setup(true, |o| o.validity_secs = Some(30)).await;
    let root = s.pebble.issuing_root_pem().await;
    let renewal = tokio::spawn({
        let relay = s.relay.clone();
        async move { relaybox::acme::run(relay.acme_handles()).await }
    });
    s.done().await;
    let first = s.serves_pebble_certificate(&root).await;
    assert!(
        first.not_after - first.not_before <= 31,
        "pebble's validity setting applies: {first:?}"
    );
    let deadline = tokio::time::Instant::now() + LIMIT;
    let second = loop {
        let leaf = s.served_leaf(443, &root).await;
        if let Ok(leaf) = leaf {
            let facts = cert::facts(&leaf).expect("parses");
            if facts.serial != first.serial {
                break facts;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not renewed within {LIMIT:?}: {:?}\n{}",
            s.relay.acme.progress(),
            s.pebble.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    renewal.abort();
    assert!(second.not_before >= first.not_before);
    // Renewed at two thirds, not before.
    assert!(
        second.not_before >= cert::renew_at(first.not_before, first.not_after),
        "{first:?} {second:?}"
    );
    let renewed = s.serves_pebble_certificate(&root).await;
    assert_eq!(renewed.serial, second.serial, "every port has the new one");
}

#[tokio::test]
async fn both_challenges_failing_gives_a_plain_reason() {
    // pebble checks ports where nothing listens: HTTP-01 and TLS-ALPN-01 both fail.
    let s = setup(true, |o| {
        let closed = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("port")
        };
        o.http_port = closed();
        o.tls_port = closed();
    })
    .await;
    let root = s.pebble.issuing_root_pem().await;
    relaybox::acme::request(s.relay.clone(), Relay::acme_handles).expect("request starts");
    let AcmeProgress::Failed { reason } = s.finished().await else {
        panic!("expected a failure")
    };
    assert!(
        cert::wanted_names(&s.domain)
            .iter()
            .any(|n| reason.contains(&format!("could not reach http://{n}/ on port 80"))),
        "{reason}"
    );
    assert!(
        reason.contains("check the port forwarding for port 80"),
        "{reason}"
    );
    assert!(reason.contains("port 443"), "{reason}");
    // Nothing changed: the self-signed certificate is still served.
    assert!(s.served_leaf(443, &root).await.is_err());
    assert_eq!(s.relay.acme_handles().info().source, "self-signed");
    // And a new request may start.
    relaybox::acme::request(s.relay.clone(), Relay::acme_handles).expect("again");
}

#[tokio::test]
async fn missing_dns_record_is_named_and_not_retried_on_443() {
    let s = setup_with(true, false, |_| {}).await;
    relaybox::acme::request(s.relay.clone(), Relay::acme_handles).expect("request starts");
    let AcmeProgress::Failed { reason } = s.finished().await else {
        panic!("expected a failure")
    };
    assert!(
        reason.starts_with(&format!(
            "the certificate authority could not look up www.{} in DNS",
            s.domain
        )),
        "{reason}"
    );
    // A DNS problem is not retried with TLS-ALPN-01 (the CA's failure limit).
    assert!(!reason.contains("port 443"), "{reason}");
    assert_eq!(s.relay.acme_handles().info().source, "self-signed");
}

#[tokio::test]
async fn unreachable_ca_gives_a_plain_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let directory = format!("https://{closed}/dir");
    let mut config = relaybox::config::Config::parse(&format!(
        "[params]\nmail_domain = chat.example.test\ndata_dir = {}\nacme_directory = {directory}\n",
        dir.path().display()
    ))
    .expect("config")
    .config;
    config.max_load_1m = 1e9;
    config.min_available_memory = 0;
    config.min_free_disk_space = 0;
    let relay = Relay::open(config).expect("relay");
    relaybox::acme::request(relay.clone(), Relay::acme_handles).expect("starts");
    let deadline = tokio::time::Instant::now() + LIMIT;
    let reason = loop {
        if let AcmeProgress::Failed { reason } = relay.acme.progress() {
            break reason;
        }
        assert!(tokio::time::Instant::now() < deadline, "no failure in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        reason.starts_with(&format!(
            "cannot reach the certificate authority at {directory}"
        )),
        "{reason}"
    );
}

#[tokio::test]
async fn not_possible_in_ip_only_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = relaybox::config::Config::parse(&format!(
        "[params]\nmail_domain = 192.0.2.7\ndata_dir = {}\n",
        dir.path().display()
    ))
    .expect("config")
    .config;
    let relay = Relay::open(config).expect("relay");
    let err = relaybox::acme::request(relay.clone(), Relay::acme_handles).unwrap_err();
    assert!(err.contains("IP address"), "{err}");
    let info = relay.acme_handles().info();
    assert!(!info.acme_possible);
    assert_eq!(info.source, "self-signed");
}
