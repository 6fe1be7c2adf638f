//! Certificates as the ACME code sees them: the renewal decision as a pure function
//! (TLS-5: two thirds of the lifetime) and the RFC 8737 challenge certificate for
//! TLS-ALPN-01. The stored pair in `<data_dir>/acme/` (ACME-3), its facts and whether it
//! can be served belong to the foundation ([`crate::tls::stored`]); they are re-exported
//! here for the ACME code and its tests.

use std::sync::Arc;
use std::time::Duration;

use rustls::sign::CertifiedKey;

pub use crate::tls::stored::{
    ACME_DIR, CERT_FILE, Facts, KEY_FILE, Stored, acme_dir, certified_key, check, facts, store,
    stored_certificate, wanted_names,
};

/// The account key and URL (instant-acme's credentials as JSON, mode 0600), next to the
/// certificate in [`acme_dir`].
pub const ACCOUNT_FILE: &str = "account.json";

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
            relay.acme_handles().info().source
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
