//! DKIM (RFC 6376): this relay's signing key (RSA-2048, made on first start and kept in
//! the store), signing of outgoing mail (SUB-12, OUT-7), the DNS record (§18), and the
//! verification of incoming mail with strict alignment (IN-4e, IN-5).
//!
//! CONTRACT (the lead's skeleton; the DKIM owner fills it in, keeping these signatures).

use std::sync::Arc;

use crate::config::Config;
use crate::policy::SmtpReply;
use crate::store::Store;

/// Signs outgoing messages with this relay's key. `None` in IP-only mode (MODE-1).
pub struct Signer {
    _private: (),
}

impl Signer {
    /// Load the key from the store, or make and store one on first start. `Ok(None)` in
    /// IP-only mode.
    pub fn load_or_create(config: &Config, store: &Store) -> Result<Option<Signer>, DkimError> {
        let _ = (config, store);
        Ok(None)
    }

    /// `message` with a `DKIM-Signature` header field prepended (SUB-12).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        message.to_vec()
    }

    /// The DNS TXT record: (owner name without trailing dot, value as one string), e.g.
    /// (`opendkim._domainkey.example.org`, `v=DKIM1;k=rsa;p=…;s=email;t=s`).
    pub fn dns_record(&self) -> (String, String) {
        (String::new(), String::new())
    }
}

/// Verifies DKIM signatures of incoming mail (IN-4e, IN-5) through the configured DNS.
pub struct Verifier {
    _private: (),
}

impl Verifier {
    pub fn new(config: &Config) -> Result<Arc<Verifier>, DkimError> {
        let _ = config;
        Ok(Arc::new(Verifier { _private: () }))
    }

    /// IN-4e DKIM part: `Ok` when a signature verifies and its `d=` equals `from_domain`
    /// (ASCII case-insensitive, no parent-domain alignment); otherwise the spec's reply:
    /// `554 5.7.1 No DKIM signature found` / `554 5.7.1 No valid DKIM signature found`, or
    /// `500 Failed to parse message headers`.
    pub async fn verify(&self, message: &[u8], from_domain: &str) -> Result<(), SmtpReply> {
        let _ = (message, from_domain);
        Err(SmtpReply::new(554, "5.7.1 No DKIM signature found"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("DKIM key: {0}")]
    Key(String),
    #[error("DNS resolver: {0}")]
    Resolver(String),
}
