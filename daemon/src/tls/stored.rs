//! The certificate obtained through ACME as the files keep it (ACME-3): where the chain
//! and key live under the data directory, how they are written (key first, each file
//! atomically), and whether the stored pair can be served at a given time (key matching,
//! not expired, covering every name the relay needs; TLS-5). `acme` writes through this
//! module and `tls` reads through it, so the listeners' certificate never depends on the
//! ACME service.

use std::path::{Path, PathBuf};

use rustls::sign::CertifiedKey;

use crate::config::{Config, Mode};

/// Directory of the ACME state inside the data directory (ACME-3).
pub const ACME_DIR: &str = "acme";
/// The certificate chain (leaf first), PEM.
pub const CERT_FILE: &str = "cert.pem";
/// The certificate's private key (PKCS#8 PEM, mode 0600).
pub const KEY_FILE: &str = "key.pem";

pub fn acme_dir(config: &Config) -> PathBuf {
    config.data_dir.join(ACME_DIR)
}

/// What a leaf certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// DNS names of the subjectAltName extension.
    pub names: Vec<String>,
    /// Unix seconds.
    pub not_before: u64,
    /// Unix seconds.
    pub not_after: u64,
    /// Serial number as lower-case hex (`01:ab:…`).
    pub serial: String,
    /// Issuer distinguished name (RFC 4514 form).
    pub issuer: String,
    /// The issuer for people: its organisation and common name (`Let's Encrypt (R11)`),
    /// one of them when the other is missing or repeats it; empty when it has neither.
    pub issuer_name: String,
    /// Issuer and subject are the same name (RFC 5280 §3.2: a self-issued certificate).
    pub self_signed: bool,
}

/// Read the facts of a DER leaf certificate.
pub fn facts(der: &[u8]) -> Result<Facts, String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("certificate: {e}"))?;
    let validity = cert.validity();
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(Facts {
        names,
        not_before: u64::try_from(validity.not_before.timestamp()).unwrap_or(0),
        not_after: u64::try_from(validity.not_after.timestamp()).unwrap_or(0),
        serial: cert.raw_serial_as_string(),
        issuer: cert.issuer().to_string(),
        issuer_name: issuer_name(cert.issuer()),
        self_signed: cert.issuer().as_raw() == cert.subject().as_raw(),
    })
}

/// `O (CN)` of a distinguished name, or whichever of the two it has.
fn issuer_name(dn: &x509_parser::x509::X509Name) -> String {
    fn first<'a>(
        mut it: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'a>>,
    ) -> Option<String> {
        it.find_map(|a| a.as_str().ok().map(|s| s.trim().to_string()))
            .filter(|s| !s.is_empty())
    }
    match (first(dn.iter_organization()), first(dn.iter_common_name())) {
        (Some(o), Some(cn)) if cn.contains(&o) => cn,
        (Some(o), Some(cn)) => format!("{o} ({cn})"),
        (Some(one), None) | (None, Some(one)) => one,
        (None, None) => String::new(),
    }
}

/// The names a relay's certificate covers (TLS-5; `mta-sts.<d>` for MTA-STS, §18).
pub fn wanted_names(domain: &str) -> Vec<String> {
    vec![
        domain.to_string(),
        format!("www.{domain}"),
        format!("mta-sts.{domain}"),
    ]
}

/// A usable stored certificate: loaded, key matching, not expired, covering every name
/// the relay needs.
pub struct Stored {
    pub key: CertifiedKey,
    pub facts: Facts,
}

/// The stored ACME certificate when it can be served at `now` (Unix seconds, from the
/// injected clock; domain mode, no external certificate configured).
pub fn stored_certificate(config: &Config, now: u64) -> Option<Stored> {
    if config.mode != Mode::Domain || config.tls_external_cert_and_key.is_some() {
        return None;
    }
    let dir = acme_dir(config);
    let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
    if !cert.exists() {
        return None;
    }
    let loaded = match super::load_certified_key(&cert, &key) {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!("ACME certificate not used: {e}");
            return None;
        }
    };
    match check(&loaded, &config.mail_domain, now) {
        Ok(facts) => Some(Stored { key: loaded, facts }),
        Err(why) => {
            tracing::warn!("ACME certificate in {} not used: {why}", dir.display());
            None
        }
    }
}

/// Whether `key` can be served for `domain` at `now`; its facts if so.
pub fn check(key: &CertifiedKey, domain: &str, now: u64) -> Result<Facts, String> {
    key.keys_match()
        .map_err(|e| format!("key does not match the certificate ({e})"))?;
    let leaf = key.cert.first().ok_or("empty chain")?;
    let facts = facts(leaf)?;
    if facts.not_after <= now {
        return Err("expired".into());
    }
    for name in wanted_names(domain) {
        if !facts.names.iter().any(|n| n.eq_ignore_ascii_case(&name)) {
            return Err(format!("does not cover {name}"));
        }
    }
    Ok(facts)
}

/// Write the new pair (key first; each file atomically). A crash between the two
/// renames leaves a key that does not match the certificate, which
/// [`stored_certificate`] refuses, so the relay falls back to its self-signed pair and
/// the next attempt writes both again.
pub fn store(dir: &Path, chain_pem: &str, key_pem: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    super::write_atomic(&dir.join(KEY_FILE), key_pem.as_bytes(), 0o600)
        .map_err(|e| e.to_string())?;
    super::write_atomic(&dir.join(CERT_FILE), chain_pem.as_bytes(), 0o644)
        .map_err(|e| e.to_string())
}

/// A PEM chain and PKCS#8 key in memory as a signing key.
pub fn certified_key(chain_pem: &str, key_pem: &str) -> Result<CertifiedKey, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err("the CA sent no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| format!("key: {e}"))?;
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| format!("key: {e}"))?;
    Ok(CertifiedKey::new(chain, signing))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86400;

    #[test]
    fn facts_of_a_self_signed_certificate() {
        let (cert_pem, key_pem) = super::super::generate_self_signed("chat.example.org").unwrap();
        let key = certified_key(&cert_pem, &key_pem).unwrap();
        let f = facts(&key.cert[0]).unwrap();
        assert_eq!(f.names, wanted_names("chat.example.org"));
        assert!(f.self_signed);
        assert_eq!(f.issuer_name, "chat.example.org");
        assert!(f.not_after > f.not_before + 36000 * DAY);
        let now = f.not_before + DAY;
        assert_eq!(check(&key, "chat.example.org", now).unwrap(), f);
        assert!(check(&key, "other.example.org", now).is_err());
        assert!(check(&key, "chat.example.org", f.not_after).is_err());
    }

    /// Issue 16: the pages name who issued a certificate (`O (CN)` of its issuer).
    #[test]
    fn facts_name_the_issuer_of_a_ca_issued_certificate() {
        use rcgen::{
            BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
        };
        let name = |org: Option<&str>, cn: Option<&str>| {
            let ca_key = KeyPair::generate().unwrap();
            let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca.distinguished_name = DistinguishedName::new();
            if let Some(o) = org {
                ca.distinguished_name.push(DnType::OrganizationName, o);
            }
            if let Some(cn) = cn {
                ca.distinguished_name.push(DnType::CommonName, cn);
            }
            let issuer = Issuer::new(ca, ca_key);
            let key = KeyPair::generate().unwrap();
            let mut leaf = CertificateParams::new(vec!["chat.example.org".to_string()]).unwrap();
            leaf.distinguished_name
                .push(DnType::CommonName, "chat.example.org");
            let cert = leaf.signed_by(&key, &issuer).unwrap();
            let f = facts(cert.der()).unwrap();
            assert!(!f.self_signed, "issued by a CA");
            f.issuer_name
        };
        assert_eq!(
            name(Some("Let's Encrypt"), Some("R11")),
            "Let's Encrypt (R11)"
        );
        assert_eq!(
            name(None, Some("Pebble Intermediate CA 0d1e2f")),
            "Pebble Intermediate CA 0d1e2f"
        );
        assert_eq!(name(Some("Example"), Some("Example CA 2")), "Example CA 2");
        assert_eq!(name(Some("Example"), None), "Example");
    }

    #[test]
    fn mismatched_key_is_refused() {
        let (cert_pem, _) = super::super::generate_self_signed("chat.example.org").unwrap();
        let (_, other_key) = super::super::generate_self_signed("chat.example.org").unwrap();
        let key = certified_key(&cert_pem, &other_key).unwrap();
        let err = check(&key, "chat.example.org", 0).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
    }

    #[test]
    fn stored_pair_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::testing::config(dir.path(), "chat.example.org");
        let (cert_pem, key_pem) = super::super::generate_self_signed("chat.example.org").unwrap();
        let f = facts(&certified_key(&cert_pem, &key_pem).unwrap().cert[0]).unwrap();
        let now = f.not_before + DAY;
        assert!(stored_certificate(&config, now).is_none());
        store(&acme_dir(&config), &cert_pem, &key_pem).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(acme_dir(&config).join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let stored = stored_certificate(&config, now).expect("usable");
        assert_eq!(stored.facts.names[0], "chat.example.org");
        // Expired: not used.
        assert!(stored_certificate(&config, f.not_after).is_none());
        // Another domain: not used.
        config.mail_domain = "other.example.org".into();
        assert!(stored_certificate(&config, now).is_none());
    }
}
