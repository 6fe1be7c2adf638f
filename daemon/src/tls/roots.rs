//! OUT-4: the roots every TLS client of the relay trusts — the web-PKI roots plus every
//! certificate of the PEM file `tls_extra_roots` (so a test CA or a private peer is
//! trusted the same way everywhere): outbound SMTP and `/mxdeliv`, the push notifier
//! (PUSH-3), the ACME client and the update download (OTA-4).

use std::path::Path;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::TlsError;
use crate::config::Config;

/// The web-PKI roots plus the certificates of `tls_extra_roots` (OUT-4).
pub fn client_roots(config: &Config) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &config.tls_extra_roots {
        add_pem_roots(&mut roots, path)?;
    }
    Ok(roots)
}

fn add_pem_roots(roots: &mut rustls::RootCertStore, path: &Path) -> Result<(), TlsError> {
    let err = |msg: String| TlsError::Roots(format!("{}: {msg}", path.display()));
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| err(e.to_string()))?;
        roots.add(cert).map_err(|e| err(e.to_string()))?;
        added += 1;
    }
    if added == 0 {
        return Err(err("no certificate found".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_roots_are_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = crate::testing::config(dir.path(), "sender.test");
        let base = client_roots(&cfg).unwrap().len();
        assert!(base > 50, "web-PKI roots: {base}");
        let (ca, _) = super::super::generate_self_signed("ca.test").unwrap();
        let path = dir.path().join("extra.pem");
        std::fs::write(&path, ca).unwrap();
        cfg.tls_extra_roots = Some(path);
        assert_eq!(client_roots(&cfg).unwrap().len(), base + 1);
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing").unwrap();
        cfg.tls_extra_roots = Some(empty);
        let err = client_roots(&cfg).unwrap_err();
        assert!(matches!(err, TlsError::Roots(_)), "{err}");
        assert!(err.to_string().contains("no certificate found"), "{err}");
        cfg.tls_extra_roots = Some(dir.path().join("missing.pem"));
        let err = client_roots(&cfg).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
    }
}
