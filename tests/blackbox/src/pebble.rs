//! A private ACME CA for the certificate tests (issue 6, spec/appliance.md ACME-4):
//! Debian's `pebble` 2.4 (installed by `tests/run`) on a free port of 127.0.0.1, its
//! own HTTPS listener certified by a throw-away [`TestCa`] (the package ships no
//! certificates; the relay trusts it through `tls_extra_roots`), names resolved through
//! the test's dnsmasq (`-dnsserver`, [`crate::dns`]), and validations sent to the
//! relay's real ports (`httpPort` 80 and `tlsPort` 443 by default) at the address the
//! test zone gives. `PEBBLE_VA_NOSLEEP=1` skips pebble's random validation delays,
//! `PEBBLE_WFE_NONCEREJECT=0` its random nonce rejections. The issuing root is read from
//! the management port (`/roots/0`). The process is killed when dropped.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ca::TestCa;

/// Where Debian's package installs pebble.
pub const PEBBLE: &str = "/usr/bin/pebble";

/// How long pebble may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound of one management request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How pebble validates and issues.
#[derive(Debug, Clone)]
pub struct PebbleOptions {
    /// The DNS server pebble resolves identifiers with (`host:port`).
    pub dns: SocketAddr,
    /// Port of HTTP-01 validations (80: the relay's real port).
    pub http_port: u16,
    /// Port of TLS-ALPN-01 validations (443).
    pub tls_port: u16,
    /// Lifetime of issued certificates in seconds (`certificateValidityPeriod`); pebble's
    /// default (5 years) when `None`.
    pub validity_secs: Option<u64>,
}

impl PebbleOptions {
    /// Validation on the standard ports, names resolved by `dns`.
    pub fn new(dns: SocketAddr) -> PebbleOptions {
        PebbleOptions {
            dns,
            http_port: 80,
            tls_port: 443,
            validity_secs: None,
        }
    }
}

/// A running pebble. Dropping it kills the process.
pub struct Pebble {
    dir: TempDir,
    child: Option<Child>,
    ca: TestCa,
    /// The ACME API port.
    pub port: u16,
    /// The management port (`/roots/0`).
    pub management_port: u16,
}

impl Pebble {
    /// Start pebble with `options` and wait until both its ports accept connections.
    /// Panics with its log if it does not.
    pub fn start(options: PebbleOptions) -> Pebble {
        if !std::path::Path::new(PEBBLE).is_file() {
            panic!("{PEBBLE} not found: install Debian's `pebble` package (tests/run does)");
        }
        let dir = tempfile::Builder::new()
            .prefix("relaybox-pebble-")
            .tempdir()
            .expect("create temp dir");
        let ca = TestCa::new("pebble listener");
        let leaf = ca.leaf(
            dir.path(),
            "pebble",
            &["localhost"],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        );
        let (port, management_port) = two_free_ports();
        let mut settings = format!(
            "\"listenAddress\": \"127.0.0.1:{port}\",\
             \"managementListenAddress\": \"127.0.0.1:{management_port}\",\
             \"certificate\": \"{}\",\"privateKey\": \"{}\",\
             \"httpPort\": {},\"tlsPort\": {},\
             \"ocspResponderURL\": \"\",\"externalAccountBindingRequired\": false",
            leaf.cert.display(),
            leaf.key.display(),
            options.http_port,
            options.tls_port,
        );
        if let Some(secs) = options.validity_secs {
            settings += &format!(",\"certificateValidityPeriod\": {secs}");
        }
        let config = dir.path().join("pebble-config.json");
        std::fs::write(&config, format!("{{\"pebble\": {{{settings}}}}}"))
            .expect("write pebble config");
        let log = File::create(dir.path().join("pebble.log")).expect("create pebble log");
        let child = Command::new(PEBBLE)
            .arg("-config")
            .arg(&config)
            .arg("-dnsserver")
            .arg(options.dns.to_string())
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {PEBBLE}: {e}"));
        let mut pebble = Pebble {
            dir,
            child: Some(child),
            ca,
            port,
            management_port,
        };
        pebble.wait_listening();
        pebble
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let ports = [self.port, self.management_port];
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("pebble exited with {status}; log:\n{}", self.log());
            }
            let up = ports.iter().all(|p| {
                TcpStream::connect_timeout(
                    &SocketAddr::from(([127, 0, 0, 1], *p)),
                    Duration::from_millis(200),
                )
                .is_ok()
            });
            if up {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "pebble did not listen within {START_TIMEOUT:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The `acme_directory` for the relay.
    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// A PEM file with the CA of pebble's own HTTPS listener (for `tls_extra_roots`).
    pub fn listener_ca_file(&self) -> PathBuf {
        self.ca
            .write_cert(&self.dir.path().join("pebble-listener-ca.pem"))
    }

    /// pebble's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// The root pebble issues under (PEM), from the management port's `/roots/0`; a new
    /// one every start.
    pub async fn issuing_root_pem(&self) -> String {
        let body = tokio::time::timeout(REQUEST_TIMEOUT, self.management_get("/roots/0"))
            .await
            .expect("pebble management answers in time")
            .unwrap_or_else(|e| panic!("GET /roots/0: {e}"));
        assert!(
            body.contains("BEGIN CERTIFICATE"),
            "/roots/0 is not a PEM certificate: {body}"
        );
        body
    }

    async fn management_get(&self, path: &str) -> std::io::Result<String> {
        use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca.cert_pem.as_bytes()) {
            roots
                .add(cert.map_err(std::io::Error::other)?)
                .map_err(std::io::Error::other)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.management_port)).await?;
        let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        tls.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        // Bounded: 1 MB; pebble may close without close_notify (the data read counts).
        while raw.len() < (1 << 20) {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| std::io::Error::other(format!("no HTTP response: {text}")))?;
        // HTTP/1.0: no chunked encoding, the body ends with the connection.
        if head.split(' ').nth(1) != Some("200") {
            return Err(std::io::Error::other(format!("answer: {head}")));
        }
        Ok(body.to_string())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Two distinct free ports of 127.0.0.1 (bound together, then released).
fn two_free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = |l: &TcpListener| l.local_addr().expect("addr").port();
    (port(&a), port(&b))
}
