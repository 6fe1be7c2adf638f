//! Test support shared by the in-crate session tests: a config for a relay on a
//! temporary directory, a clock moved by hand, and a TLS client that accepts the relay's
//! self-signed certificate.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rustls_pki_types::CertificateDer;

use crate::clock::Clock;
use crate::config::Config;

/// An injected clock whose wall time a test sets by hand (the monotonic time is the
/// system's).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock that reads `unix` (seconds) until moved.
    pub fn at(unix: u64) -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicU64::new(unix)))
    }

    pub fn set(&self, unix: u64) {
        self.0.store(unix, Ordering::SeqCst);
    }

    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn unix_now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
    fn monotonic(&self) -> Instant {
        Instant::now()
    }
}

/// A config for `mail_domain` with its data in `dir`, default listeners (tests call the
/// sessions directly; nothing binds them), and system limits
/// (load, memory, disk) that never refuse on a busy test machine.
pub fn config(dir: &Path, mail_domain: &str) -> Config {
    let mut c = Config::parse(&format!(
        "[params]\nmail_domain = {mail_domain}\ndata_dir = {}\n",
        dir.display()
    ))
    .expect("test config")
    .config;
    c.max_load_1m = 1e9;
    c.min_available_memory = 0;
    c.min_free_disk_space = 0;
    c
}

/// A TLS client limited to `versions` that trusts any certificate (or only `pinned`).
pub fn tls_connector(
    versions: &[&'static rustls::SupportedProtocolVersion],
    pinned: Option<CertificateDer<'static>>,
) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(crate::tls::AcceptCertificate::pinned(
            pinned, provider,
        )))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// The TLS side of a loopback test HTTPS server: a self-signed certificate for 127.0.0.1
/// (its files written under `dir`), the acceptor that serves it and the client roots that
/// trust it.
pub fn loopback_tls(dir: &Path) -> (tokio_rustls::TlsAcceptor, rustls::RootCertStore) {
    use rustls_pki_types::pem::PemObject;
    let (cert, key) = crate::tls::generate_self_signed("127.0.0.1").expect("self-signed");
    let (cp, kp) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cp, &cert).expect("write cert");
    std::fs::write(&kp, key).expect("write key");
    let tls =
        crate::tls::Tls::new(crate::tls::load_certified_key(&cp, &kp).expect("load")).expect("tls");
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.tls12.clone());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(cert.as_bytes()) {
        roots.add(c.expect("pem")).expect("root");
    }
    (acceptor, roots)
}
