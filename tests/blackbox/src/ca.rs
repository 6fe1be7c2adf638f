//! A throw-away certificate authority for the federation tests (issue 3): one CA per
//! test, leaf certificates for the relays' domains and for the Postfix peer, written as
//! PEM files that the relays read through `tls_external_cert_and_key` (their own
//! certificate) and `tls_extra_roots` (trust for outbound TLS, OUT-4), and Postfix
//! through `smtpd_tls_cert_file`/`smtpd_tls_key_file`. Made with rcgen (ring backend,
//! spec/crates.md), ECDSA P-256 keys.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A test CA: its certificate as PEM, and an issuer for leaf certificates.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM), what a peer adds to its trusted roots.
    pub cert_pem: String,
}

/// A leaf certificate and its key, written to files.
#[derive(Debug, Clone)]
pub struct LeafFiles {
    /// Certificate chain PEM: the leaf, then the CA.
    pub cert: PathBuf,
    /// PKCS#8 private key PEM.
    pub key: PathBuf,
}

impl LeafFiles {
    /// The value of `tls_external_cert_and_key` for these files.
    pub fn ini_value(&self) -> String {
        format!("{} {}", self.cert.display(), self.key.display())
    }
}

impl TestCa {
    /// A fresh CA named `name` (in the subject CN).
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.distinguished_name.push(
            DnType::CommonName,
            format!("relaybox federation test CA {name}"),
        );
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Write the CA certificate to `path` (for `tls_extra_roots`).
    pub fn write_cert(&self, path: &Path) -> PathBuf {
        std::fs::write(path, &self.cert_pem)
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path.to_path_buf()
    }

    /// A server certificate for `dns_names` (SAN DNS entries) and `ips` (SAN IP
    /// entries), written to `<dir>/<stem>.crt` (leaf then CA) and `<dir>/<stem>.key`.
    pub fn leaf(&self, dir: &Path, stem: &str, dns_names: &[&str], ips: &[IpAddr]) -> LeafFiles {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        let cn = dns_names
            .first()
            .map(|s| s.to_string())
            .or_else(|| ips.first().map(|ip| ip.to_string()))
            .unwrap_or_else(|| stem.to_string());
        params.distinguished_name.push(DnType::CommonName, cn);
        for name in dns_names {
            params.subject_alt_names.push(SanType::DnsName(
                (*name).try_into().expect("DNS name for the SAN"),
            ));
        }
        for ip in ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        let files = LeafFiles {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        };
        std::fs::write(&files.cert, format!("{}{}", cert.pem(), self.cert_pem))
            .unwrap_or_else(|e| panic!("write {}: {e}", files.cert.display()));
        std::fs::write(&files.key, key.serialize_pem())
            .unwrap_or_else(|e| panic!("write {}: {e}", files.key.display()));
        files
    }
}
