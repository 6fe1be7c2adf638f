//! Certificates as the ACME code sees them: the facts read from a leaf (names, validity,
//! serial, issuer), the stored pair in `<data_dir>/acme/` (ACME-3), the renewal
//! decision as a pure function (TLS-5: two thirds of the lifetime), and the RFC 8737
//! challenge certificate for TLS-ALPN-01.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::sign::CertifiedKey;

use crate::config::{Config, Mode};

/// Directory of the ACME state inside the data directory (ACME-3).
pub const ACME_DIR: &str = "acme";
/// The account key and URL (instant-acme's credentials as JSON, mode 0600).
pub const ACCOUNT_FILE: &str = "account.json";
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
    })
}

/// The names a relay's certificate covers (TLS-5; `mta-sts.<d>` for MTA-STS, §18).
pub fn wanted_names(domain: &str) -> Vec<String> {
    vec![
        domain.to_string(),
        format!("www.{domain}"),
        format!("mta-sts.{domain}"),
    ]
}

/// A usable stored ACME certificate: loaded, key matching, not expired, covering every
/// name the relay needs.
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
    let loaded = match crate::tls::load_certified_key(&cert, &key) {
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
    crate::tls::write_atomic(&dir.join(KEY_FILE), key_pem.as_bytes(), 0o600)
        .map_err(|e| e.to_string())?;
    crate::tls::write_atomic(&dir.join(CERT_FILE), chain_pem.as_bytes(), 0o644)
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

/// When not to retry earlier than after a failure (doubling per failure).
pub const BACKOFF_BASE: Duration = Duration::from_secs(10 * 60);
/// Longest wait after failures.
pub const BACKOFF_MAX: Duration = Duration::from_secs(12 * 3600);
/// Shortest time between two attempts, whatever the certificate says (no tight loop
/// against the CA).
pub const MIN_GAP: Duration = Duration::from_secs(10);

/// What the renewal loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Ask the CA now.
    Request,
    /// Nothing to do for this long.
    Wait(Duration),
}

/// The state the renewal decision depends on (all times Unix seconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenewState {
    /// Validity of the stored, usable ACME certificate (`None`: none yet).
    pub cert: Option<(u64, u64)>,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// When the last attempt ended (0: none).
    pub last_attempt: u64,
}

/// TLS-5, ACME-3: renew when two thirds of the lifetime have passed.
pub fn renew_at(not_before: u64, not_after: u64) -> u64 {
    not_before + not_after.saturating_sub(not_before) / 3 * 2
}

/// Wait after `failures` failed attempts: 10 min, 20 min, 40 min, … at most 12 h.
pub fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
    BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_MAX)
}

/// The renewal decision: due at two thirds of the lifetime (at once without a
/// certificate), not before the back-off after failures, never sooner than `MIN_GAP`
/// after the last attempt.
pub fn next(now: u64, state: RenewState) -> Next {
    let due = match state.cert {
        None => 0,
        Some((nb, na)) => renew_at(nb, na),
    };
    let mut at = due;
    if state.last_attempt > 0 {
        at = at.max(state.last_attempt + MIN_GAP.as_secs());
        at = at.max(state.last_attempt + backoff(state.failures).as_secs());
    }
    if at <= now {
        Next::Request
    } else {
        Next::Wait(Duration::from_secs(at - now))
    }
}

/// RFC 8737 §3: a self-signed certificate for `name` with the critical acmeIdentifier
/// extension holding the SHA-256 digest of the key authorization, served only to
/// clients offering ALPN `acme-tls/1`.
pub fn alpn_challenge_config(
    name: &str,
    key_authorization_digest: &[u8],
) -> Result<Arc<rustls::ServerConfig>, String> {
    use rcgen::{CertificateParams, CustomExtension, KeyPair};
    let err = |e: rcgen::Error| format!("challenge certificate: {e}");
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let mut params = CertificateParams::new(vec![name.to_string()]).map_err(err)?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(
        key_authorization_digest,
    )];
    let cert = params.self_signed(&key).map_err(err)?;
    let key_der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| format!("challenge key: {e}"))?;
    // Served as is: rustls' `with_single_cert` would refuse the critical acmeIdentifier
    // extension it does not know.
    let certified = Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    // RFC 8737 §3: the server MUST negotiate `acme-tls/1`.
    config.alpn_protocols = vec![super::ACME_TLS_ALPN.to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3600;
    const DAY: u64 = 86400;

    #[test]
    fn renewal_decision_table() {
        // 90-day certificate issued at t0: renew at day 60.
        let t0 = 1_700_000_000;
        let cert = Some((t0, t0 + 90 * DAY));
        let fresh = RenewState {
            cert,
            failures: 0,
            last_attempt: t0,
        };
        let cases: &[(&str, u64, RenewState, Next)] = &[
            (
                "no certificate yet: at once",
                t0,
                RenewState::default(),
                Next::Request,
            ),
            (
                "new certificate: wait until two thirds",
                t0 + 10,
                fresh,
                Next::Wait(Duration::from_secs(60 * DAY - 10)),
            ),
            (
                "one second before two thirds",
                t0 + 60 * DAY - 1,
                fresh,
                Next::Wait(Duration::from_secs(1)),
            ),
            ("at two thirds", t0 + 60 * DAY, fresh, Next::Request),
            ("past two thirds", t0 + 80 * DAY, fresh, Next::Request),
            (
                "first failure after due: retry in 10 min",
                t0 + 61 * DAY,
                RenewState {
                    cert,
                    failures: 1,
                    last_attempt: t0 + 61 * DAY,
                },
                Next::Wait(Duration::from_secs(600)),
            ),
            (
                "third failure: 40 min",
                t0 + 61 * DAY + 60,
                RenewState {
                    cert,
                    failures: 3,
                    last_attempt: t0 + 61 * DAY,
                },
                Next::Wait(Duration::from_secs(2400 - 60)),
            ),
            (
                "many failures: capped at 12 h",
                t0 + 61 * DAY,
                RenewState {
                    cert,
                    failures: 40,
                    last_attempt: t0 + 61 * DAY,
                },
                Next::Wait(Duration::from_secs(12 * H)),
            ),
            (
                "back-off over: retry",
                t0 + 61 * DAY + 601,
                RenewState {
                    cert,
                    failures: 1,
                    last_attempt: t0 + 61 * DAY,
                },
                Next::Request,
            ),
            (
                "no certificate, failed just now: back-off",
                t0 + 5,
                RenewState {
                    cert: None,
                    failures: 1,
                    last_attempt: t0,
                },
                Next::Wait(Duration::from_secs(595)),
            ),
            (
                "short lifetime already due right after issue: minimum gap",
                t0 + 2,
                RenewState {
                    cert: Some((t0 - 100, t0 + 3)),
                    failures: 0,
                    last_attempt: t0,
                },
                Next::Wait(Duration::from_secs(8)),
            ),
            (
                "30-second certificate: renew after 20 s",
                t0 + 12,
                RenewState {
                    cert: Some((t0, t0 + 30)),
                    failures: 0,
                    last_attempt: t0,
                },
                Next::Wait(Duration::from_secs(8)),
            ),
        ];
        for (what, now, state, want) in cases {
            assert_eq!(next(*now, *state), *want, "{what}");
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_secs(600));
        assert_eq!(backoff(2), Duration::from_secs(1200));
        assert_eq!(backoff(7), Duration::from_secs(600 * 64));
        assert_eq!(backoff(8), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn facts_of_a_self_signed_certificate() {
        let (cert_pem, key_pem) = crate::tls::generate_self_signed("chat.example.org").unwrap();
        let key = certified_key(&cert_pem, &key_pem).unwrap();
        let f = facts(&key.cert[0]).unwrap();
        assert_eq!(f.names, wanted_names("chat.example.org"));
        assert!(f.not_after > f.not_before + 36000 * DAY);
        let now = f.not_before + DAY;
        assert_eq!(check(&key, "chat.example.org", now).unwrap(), f);
        assert!(check(&key, "other.example.org", now).is_err());
        assert!(check(&key, "chat.example.org", f.not_after).is_err());
    }

    #[test]
    fn mismatched_key_is_refused() {
        let (cert_pem, _) = crate::tls::generate_self_signed("chat.example.org").unwrap();
        let (_, other_key) = crate::tls::generate_self_signed("chat.example.org").unwrap();
        let key = certified_key(&cert_pem, &other_key).unwrap();
        let err = check(&key, "chat.example.org", 0).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
    }

    #[test]
    fn stored_pair_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::testing::config(dir.path(), "chat.example.org");
        let (cert_pem, key_pem) = crate::tls::generate_self_signed("chat.example.org").unwrap();
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

    /// A relay judges its stored certificate by the injected clock, not the system's:
    /// the same certificate (valid by the system's clock) is served while the relay's
    /// clock is inside its lifetime and left for the self-signed pair once that clock
    /// has passed its end.
    #[tokio::test]
    async fn stored_certificate_is_judged_by_the_injected_clock() {
        let (cert_pem, key_pem) = crate::tls::generate_self_signed("chat.example.org").unwrap();
        let f = facts(&certified_key(&cert_pem, &key_pem).unwrap().cert[0]).unwrap();
        let clock = crate::testing::ManualClock::at(f.not_before + DAY);
        let source = |clock: std::sync::Arc<crate::testing::ManualClock>| {
            let dir = tempfile::tempdir().unwrap();
            let config = crate::testing::config(dir.path(), "chat.example.org");
            store(&acme_dir(&config), &cert_pem, &key_pem).unwrap();
            let relay = crate::server::Relay::open_with_clock(config, clock).unwrap();
            relay.acme.info(&relay).source
        };
        assert_eq!(source(clock.clone()), "acme");
        clock.set(f.not_after);
        assert_eq!(source(clock.clone()), "self-signed");
        // And back inside the lifetime.
        clock.set(f.not_after - 1);
        assert_eq!(source(clock), "acme");
    }

    #[test]
    fn challenge_certificate_carries_the_identifier() {
        let digest = [7u8; 32];
        let config = alpn_challenge_config("chat.example.org", &digest).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"acme-tls/1".to_vec()]);
    }
}
