//! ACME certificates (RFC 8555) for domain mode: account and certificate kept in
//! `<data_dir>/acme/`, HTTP-01 answered on port 80 and TLS-ALPN-01 (RFC 8737) on 443,
//! renewal at two thirds of the lifetime, the new certificate handed to every listener
//! through `tls::CertStore` without a restart. STUB: being written.

use std::sync::Arc;

use crate::config::Config;
use crate::server::Relay;

/// RFC 8737 §6.2: the ALPN protocol of TLS-ALPN-01 validations.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The relay's ACME state: pending challenges and the progress of the current request.
pub struct Acme {}

impl Acme {
    pub fn new(_config: &Config) -> Acme {
        Acme {}
    }

    /// RFC 8555 §8.3: the key authorization for a pending HTTP-01 `token`.
    pub fn http01(&self, _token: &str) -> Option<String> {
        None
    }

    /// RFC 8737 §3: the server configuration answering `acme-tls/1` for a pending
    /// TLS-ALPN-01 challenge of `server_name`.
    pub fn tls_alpn01(&self, _server_name: Option<&str>) -> Option<Arc<rustls::ServerConfig>> {
        None
    }

    /// What the pages show about the certificate.
    pub fn info(&self, _relay: &Relay) -> relaybox_webui::CertificateInfo {
        relaybox_webui::CertificateInfo {
            source: "self-signed".into(),
            names: Vec::new(),
            not_after: None,
            acme_possible: false,
            progress: relaybox_webui::AcmeProgress::Idle,
        }
    }

    /// Start obtaining a certificate in the background.
    pub fn request(&self, _relay: Arc<Relay>) -> Result<(), String> {
        Err("not yet available".into())
    }
}

/// Renew at two thirds of the lifetime for as long as the relay runs.
pub async fn run(_relay: Arc<Relay>) {}
