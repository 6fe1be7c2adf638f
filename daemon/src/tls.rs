//! TLS for every listener: the certificate (self-signed, made once and kept in the data
//! directory, or external files), a resolver that can swap it without a restart, and
//! the rustls server configurations per port class (spec/relay.md §2); and what every
//! TLS client of the relay shares: the roots it trusts ([`roots`], OUT-4). The ACME
//! certificate's files are read (and written, by `acme`) through [`stored`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::crypto::ring as provider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;

pub mod client;
pub mod roots;
pub mod stored;

pub use roots::client_roots;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error("certificate generation: {0}")]
    Generate(String),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    /// `tls_extra_roots` cannot be used (OUT-4).
    #[error("TLS roots: {0}")]
    Roots(String),
}

/// The current certificate; listeners ask it on every handshake, so replacing it
/// applies to the next connection (TLS-5).
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        *self.current.write().expect("cert lock") = key;
    }

    /// The certificate the next handshake gets.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().expect("cert lock").clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("cert lock").clone())
    }
}

/// Server configurations shared by all listeners.
pub struct Tls {
    pub certs: Arc<CertStore>,
    /// IMAP and submission: TLS 1.3 only (TLS-2).
    pub tls13: Arc<ServerConfig>,
    /// Port 25 and HTTPS: TLS 1.2 and 1.3 (TLS-2).
    pub tls12: Arc<ServerConfig>,
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// Load a PEM chain and key into a signing key.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(cert, e))?;
    if chain.is_empty() {
        return Err(file_err(cert, "no certificate in file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e))?;
    let signing = provider::sign::any_supported_type(&key_der).map_err(|e| file_err(key, e))?;
    Ok(CertifiedKey::new(chain, signing))
}

/// TLS-4: an EC P-256 certificate for the relay's names, valid for 100 years.
pub fn generate_self_signed(domain: &str) -> Result<(String, String), TlsError> {
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    let gen_err = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let names = if domain.parse::<std::net::IpAddr>().is_ok() {
        vec![domain.to_string()]
    } else {
        stored::wanted_names(domain)
    };
    let mut params = CertificateParams::new(names).map_err(gen_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, domain);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = rcgen::date_time_ymd(2000, 1, 1)
        + std::time::Duration::from_secs(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
                .saturating_sub(946_684_800),
        );
    params.not_before = now - std::time::Duration::from_secs(86400);
    params.not_after = now + std::time::Duration::from_secs(36500 * 86400);
    let cert = params.self_signed(&key).map_err(gen_err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The certificate for this config: external files; in domain mode a valid ACME
/// certificate from `<data_dir>/acme/` (TLS-1, TLS-5); else the self-signed pair in
/// `<data_dir>/tls/`, made on first start and kept (TLS-4). ACME mode uses the kept
/// pair until a certificate is obtained. `now`: the injected clock's time, to judge the
/// ACME certificate.
pub fn initial_certificate(config: &Config, now: u64) -> Result<CertifiedKey, TlsError> {
    if let Some((cert, key)) = &config.tls_external_cert_and_key {
        return load_certified_key(cert, key);
    }
    if let Some(stored) = stored::stored_certificate(config, now) {
        tracing::info!("using the ACME certificate for {}", config.mail_domain);
        return Ok(stored.key);
    }
    let dir = config.data_dir.join("tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if !cert.exists() || !key.exists() {
        std::fs::create_dir_all(&dir).map_err(|e| file_err(&dir, e))?;
        let (cert_pem, key_pem) = generate_self_signed(&config.mail_domain)?;
        // Durably and whole (found by tests/image/powercut.sh: written plainly, a power
        // cut within the file system's commit interval left both files empty, and the
        // relay refused to start from then on). The key first: a cut between the two
        // leaves no certificate, and the pair is made again.
        write_atomic(&key, key_pem.as_bytes(), 0o600)?;
        write_atomic(&cert, cert_pem.as_bytes(), 0o644)?;
        tracing::info!("created self-signed certificate for {}", config.mail_domain);
    }
    load_certified_key(&cert, &key)
}

/// Write `data` to `path` whole or not at all ([`crate::files::write_atomic`]).
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    crate::files::write_atomic(path, data, mode).map_err(|e| file_err(path, e))
}

impl Tls {
    pub fn new(key: CertifiedKey) -> Result<Tls, TlsError> {
        let certs = Arc::new(CertStore {
            current: RwLock::new(Arc::new(key)),
        });
        let build = |versions: &[&'static rustls::SupportedProtocolVersion]| {
            let mut cfg =
                ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
                    .with_protocol_versions(versions)?
                    .with_no_client_auth()
                    .with_cert_resolver(certs.clone());
            // TLS-6: TLS 1.3 session resumption with tickets.
            cfg.ticketer = provider::Ticketer::new()?;
            // PORT-3: no ALPN configured, so a client's ALPN offer never fails a handshake.
            Ok::<_, TlsError>(Arc::new(cfg))
        };
        Ok(Tls {
            tls13: build(&[&rustls::version::TLS13])?,
            tls12: build(&[&rustls::version::TLS13, &rustls::version::TLS12])?,
            certs,
        })
    }
}

/// A client-side certificate check for the places where the web PKI does not apply:
/// OUT-4's exceptions (IP literal and `_` domains: any certificate), and a relay talking
/// to itself (the update health check, tests: exactly the certificate it serves). The
/// handshake signatures are always verified with ring's algorithms, so the session is
/// bound to the key of the certificate the server sent.
///
/// Issue 20: the tunnel between a box and its front server pins each side's certificate by
/// its SHA-256 ([`AcceptCertificate::fingerprint`]), in both directions (as the box's
/// server check and as the front's client check).
#[derive(Debug)]
pub struct AcceptCertificate {
    /// `None`: any certificate; `Some`: only this one.
    pinned: Option<Pinned>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

#[derive(Debug)]
enum Pinned {
    Cert(CertificateDer<'static>),
    Sha256([u8; 32]),
}

impl Pinned {
    fn allows(&self, cert: &CertificateDer<'_>) -> bool {
        match self {
            Pinned::Cert(c) => c.as_ref() == cert.as_ref(),
            Pinned::Sha256(h) => &cert_sha256(cert) == h,
        }
    }
}

/// The SHA-256 of a certificate (DER), as the tunnel's pins name it.
pub fn cert_sha256(cert: &CertificateDer<'_>) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl AcceptCertificate {
    /// Any certificate (signatures still checked).
    pub fn any(provider: Arc<rustls::crypto::CryptoProvider>) -> AcceptCertificate {
        AcceptCertificate {
            pinned: None,
            provider,
        }
    }

    /// Only `cert` (or any when `None`).
    pub fn pinned(
        cert: Option<CertificateDer<'static>>,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> AcceptCertificate {
        AcceptCertificate {
            pinned: cert.map(Pinned::Cert),
            provider,
        }
    }

    /// Only a certificate whose SHA-256 is `sha256`.
    pub fn fingerprint(
        sha256: [u8; 32],
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> AcceptCertificate {
        AcceptCertificate {
            pinned: Some(Pinned::Sha256(sha256)),
            provider,
        }
    }

    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        match &self.pinned {
            Some(p) if !p.allows(cert) => Err(rustls::Error::General(
                "not the expected certificate".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// The front's check of the box (issue 20): a client certificate is required and must be
/// the pinned one.
impl rustls::server::danger::ClientCertVerifier for AcceptCertificate {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.check(end_entity)?;
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        <Self as rustls::client::danger::ServerCertVerifier>::verify_tls12_signature(
            self, message, cert, dss,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        <Self as rustls::client::danger::ServerCertVerifier>::verify_tls13_signature(
            self, message, cert, dss,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        <Self as rustls::client::danger::ServerCertVerifier>::supported_verify_schemes(self)
    }
}

impl rustls::client::danger::ServerCertVerifier for AcceptCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.check(end_entity)?;
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = generate_self_signed("127.0.0.1").unwrap();
        std::fs::write(dir.path().join("c.pem"), c).unwrap();
        std::fs::write(dir.path().join("k.pem"), k).unwrap();
        let key = load_certified_key(&dir.path().join("c.pem"), &dir.path().join("k.pem")).unwrap();
        assert_eq!(key.cert.len(), 1);
        Tls::new(key).unwrap();
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = load_certified_key(Path::new("/nonexistent/c.pem"), Path::new("/x")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/c.pem"), "{err}");
    }
}
