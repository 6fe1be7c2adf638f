//! DKIM (RFC 6376): this relay's signing key (RSA-2048, made on first start and kept in
//! the store), signing of outgoing mail (SUB-12, OUT-7), the DNS record (§18), and the
//! verification of incoming mail with strict alignment (IN-4e, IN-5).
//!
//! Signing and verification go through mail-auth on ring. The key is generated with the
//! `rsa` crate because ring cannot generate RSA keys; see [`generate_key`].

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::{Resolver, TokioResolver};
use mail_auth::common::crypto::{Algorithm, HashAlgorithm, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::resolver::ToFqdn;
use mail_auth::common::verify::DomainKey;
use mail_auth::dkim::{Canonicalization, DkimSigner, Signature};
use mail_auth::{
    AuthenticatedMessage, DkimResult, DnsError, MessageAuthenticator, Parameters, ResolverCache,
    Txt,
};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::config::{Config, Mode};
use crate::policy::SmtpReply;
use crate::store::Store;

/// Name of the key in the store's secrets (PKCS#8 DER).
pub const KEY_SECRET: &str = "dkim-rsa-2048";
/// SUB-12: RSA 2048.
const KEY_BITS: usize = 2048;

/// IN-5: DKIM key lookups give up after this long (for all keys of one message).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(60);
/// IN-5: at most this many keys are cached.
pub const CACHE_CAPACITY: usize = 1000;
/// At most this many aligned signatures of one message are checked (each may cost a
/// DNS lookup; a real message carries one or two).
const MAX_SIGNATURES: usize = 5;

/// IN-4e replies.
pub const NO_SIGNATURE: &str = "5.7.1 No DKIM signature found";
pub const NO_VALID_SIGNATURE: &str = "5.7.1 No valid DKIM signature found";
pub const PARSE_FAILURE: &str = "Failed to parse message headers";
/// A temporary DNS failure (timeout, SERVFAIL, unreachable server) while looking up
/// the key of an aligned signature, and no signature passed. Upstream filtermail
/// answers 554 here (viadkim reports the lookup failure like any other failure); we
/// answer 451 so the sending relay retries instead of bouncing a message that would
/// pass a minute later (RFC 6376 §6.1.2: a temporary key-retrieval failure is
/// TEMPFAIL). Permanent DNS answers (NXDOMAIN, no TXT record) still give 554.
pub const TEMPORARY_FAILURE: &str = "4.4.3 Temporary DNS failure looking up the DKIM key";

/// Header fields signed when present (SUB-12: "the usual headers" — RFC 6376 §5.4.1's
/// list plus the common Sender/Message-ID/MIME fields — and `Autocrypt`,
/// `Content-Type`). `Resent-*` and `List-*` fields are signed by prefix.
const SIGNED: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "In-Reply-To",
    "References",
    "Sender",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Autocrypt",
];

/// SUB-12 oversigned fields: listed in `h=` once more than they occur, so none can be
/// added after signing. Any `Resent-*` / `List-*` field present is oversigned too; the
/// ones named here are oversigned also when absent (upstream's OpenDKIM list).
/// `Content-Type` is our addition: upstream's comment says a second Content-Type must
/// be prevented, but its list misses it; a second one could change how the encryption
/// gate (§7) sees the message.
const OVERSIGNED: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Resent-Date",
    "Resent-From",
    "Resent-Sender",
    "Resent-To",
    "Resent-Cc",
    "In-Reply-To",
    "References",
    "List-Id",
    "List-Help",
    "List-Unsubscribe",
    "List-Subscribe",
    "List-Post",
    "List-Owner",
    "List-Archive",
    "Autocrypt",
    "Content-Type",
];

/// Signs outgoing messages with this relay's key. `None` in IP-only mode (MODE-1).
pub struct Signer {
    key: Arc<RsaKey<Sha256>>,
    domain: String,
    selector: String,
    /// SubjectPublicKeyInfo DER of the key (the `p=` of the DNS record, §18).
    public_spki: Vec<u8>,
}

impl Signer {
    /// Load the key from the store, or make and store one on first start. `Ok(None)` in
    /// IP-only mode.
    pub fn load_or_create(config: &Config, store: &Store) -> Result<Option<Signer>, DkimError> {
        // MODE-1: IP-only relays do not sign; MODE-2: underscore relays do.
        if matches!(config.mode, Mode::IpOnly(_)) {
            return Ok(None);
        }
        let mut failure = None;
        let der = store
            .secret(KEY_SECRET, || match generate_key() {
                Ok(der) => {
                    tracing::info!("generated a new DKIM key (RSA {KEY_BITS})");
                    der
                }
                Err(e) => {
                    // `Store::secret` cannot fail from here: store nothing usable and
                    // report below.
                    failure = Some(e);
                    Vec::new()
                }
            })
            .map_err(|e| DkimError::Key(format!("store: {e}")))?;
        if let Some(e) = failure {
            return Err(e);
        }
        Signer::from_pkcs8(&der, &config.mail_domain, &config.dkim_selector).map(Some)
    }

    /// A signer for `domain` / `selector` with the PKCS#8 DER key `der`.
    fn from_pkcs8(der: &[u8], domain: &str, selector: &str) -> Result<Signer, DkimError> {
        if der.is_empty() {
            return Err(DkimError::Key(format!(
                "the store holds an empty {KEY_SECRET} secret (an earlier key generation \
                 failed)"
            )));
        }
        let key =
            RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)))
                .map_err(|e| DkimError::Key(format!("stored key unusable: {e}")))?;
        let public_spki = spki_from_pkcs1(&key.public_key())?;
        Ok(Signer {
            key: Arc::new(key),
            domain: domain.to_string(),
            selector: selector.to_string(),
            public_spki,
        })
    }

    /// `message` with a `DKIM-Signature` header field prepended (SUB-12).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        // SUB-12: d=<domain>, s=<selector>, a=rsa-sha256, c=relaxed/simple.
        let signer = DkimSigner::from_key(SharedKey(self.key.clone()))
            .domain(self.domain.as_str())
            .selector(self.selector.as_str())
            .headers(header_list(message))
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Simple);
        match signer.sign(message) {
            Ok(signature) => {
                let header = signature.to_header();
                let mut out = Vec::with_capacity(header.len() + message.len());
                out.extend_from_slice(header.as_bytes());
                out.extend_from_slice(message);
                out
            }
            Err(e) => {
                // Cannot happen with a valid key and a non-empty `h=` (always: the
                // oversigned names are listed even when absent). The message leaves
                // unsigned and the peer refuses it (IN-4e).
                tracing::error!("DKIM signing failed: {e}");
                message.to_vec()
            }
        }
    }

    /// The DNS TXT record: (owner name without trailing dot, value as one string), e.g.
    /// (`opendkim._domainkey.example.org`, `v=DKIM1;k=rsa;p=…;s=email;t=s`).
    pub fn dns_record(&self) -> (String, String) {
        let p = base64::engine::general_purpose::STANDARD.encode(&self.public_spki);
        (
            format!("{}._domainkey.{}", self.selector, self.domain),
            // §18: the record upstream publishes.
            format!("v=DKIM1;k=rsa;p={p};s=email;t=s"),
        )
    }
}

/// A new RSA-2048 private key as PKCS#8 DER.
///
/// ring can sign with RSA keys but cannot generate them, so the `rsa` crate is used
/// here and only here. Its advisory RUSTSEC-2023-0071 ("Marvin": timing side channel
/// in private-key operations — decryption and signing) does not apply: key generation
/// runs once, at first start, with no attacker-observable input, and every signature
/// is made by ring through mail-auth.
fn generate_key() -> Result<Vec<u8>, DkimError> {
    use rsa::pkcs8::EncodePrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, KEY_BITS)
        .map_err(|e| DkimError::Key(format!("generating the key: {e}")))?;
    let der = key
        .to_pkcs8_der()
        .map_err(|e| DkimError::Key(format!("encoding the key: {e}")))?;
    Ok(der.as_bytes().to_vec())
}

/// SubjectPublicKeyInfo DER (what `p=` carries, §18) of an RSAPublicKey (PKCS#1) DER.
/// Public-key encoding only: no private-key operation.
fn spki_from_pkcs1(pkcs1: &[u8]) -> Result<Vec<u8>, DkimError> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::pkcs8::EncodePublicKey;
    let public = rsa::RsaPublicKey::from_pkcs1_der(pkcs1)
        .map_err(|e| DkimError::Key(format!("public key: {e}")))?;
    let doc = public
        .to_public_key_der()
        .map_err(|e| DkimError::Key(format!("public key: {e}")))?;
    Ok(doc.as_bytes().to_vec())
}

/// The shared ring key, usable by one `DkimSigner` per message.
struct SharedKey(Arc<RsaKey<Sha256>>);

impl SigningKey for SharedKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }

    fn algorithm(&self) -> Algorithm {
        Algorithm::RsaSha256
    }
}

/// The top-level header field names of `message`, in order, as written (bytes before
/// the colon). Stops at the blank line ending the header.
fn header_names(message: &[u8]) -> Vec<&[u8]> {
    let mut names = Vec::new();
    let mut pos = 0;
    while pos < message.len() {
        let end = message[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(message.len(), |i| pos + i + 1);
        let line = &message[pos..end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation && let Some(colon) = line.iter().position(|&b| b == b':') {
            names.push(&line[..colon]);
        }
        pos = end;
    }
    names
}

/// SUB-12 `h=` for `message`, as mail-auth takes it: mail-auth signs every occurrence
/// of a listed name that the message has, and adds one empty ("null") entry for each
/// further listing of that name. So a signed-only name present is listed once; an
/// oversigned name present is listed twice (n occurrences + 1 null); an oversigned name
/// absent is listed once (1 null, so it cannot be added). Signed-only names absent are
/// not listed.
fn header_list(message: &[u8]) -> Vec<String> {
    let in_list = |list: &[&str], name: &str| list.iter().any(|n| n.eq_ignore_ascii_case(name));
    let prefixed = |name: &str| {
        let lower = name.to_ascii_lowercase();
        lower.starts_with("resent-") || lower.starts_with("list-")
    };
    let mut h: Vec<String> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for raw in header_names(message) {
        let Ok(name) = std::str::from_utf8(raw) else {
            continue;
        };
        if name.is_empty() || name.contains(|c: char| c.is_ascii_whitespace()) {
            continue;
        }
        let lower = name.to_ascii_lowercase();
        if seen.contains(&lower) {
            continue;
        }
        let oversigned = in_list(OVERSIGNED, name) || prefixed(name);
        let signed = oversigned || in_list(SIGNED, name);
        if !signed {
            continue;
        }
        seen.push(lower);
        h.push(name.to_string());
        if oversigned {
            h.push(name.to_string());
        }
    }
    for name in OVERSIGNED {
        if !seen.iter().any(|s| s.eq_ignore_ascii_case(name)) {
            h.push((*name).to_string());
        }
    }
    h
}

/// Verifies DKIM signatures of incoming mail (IN-4e, IN-5) through the configured DNS.
pub struct Verifier {
    authenticator: MessageAuthenticator,
    keys: KeyCache,
}

impl Verifier {
    pub fn new(config: &Config) -> Result<Arc<Verifier>, DkimError> {
        Ok(Arc::new(Verifier {
            authenticator: MessageAuthenticator(resolver(config)?),
            keys: KeyCache::new(CACHE_CAPACITY),
        }))
    }

    /// IN-4e DKIM part: `Ok` when a signature verifies and its `d=` equals `from_domain`
    /// (ASCII case-insensitive, no parent-domain alignment); otherwise the spec's reply:
    /// `554 5.7.1 No DKIM signature found` / `554 5.7.1 No valid DKIM signature found`, or
    /// `500 Failed to parse message headers`; [`TEMPORARY_FAILURE`] (451) when the key
    /// of an aligned signature could not be fetched for a temporary reason.
    pub async fn verify(&self, message: &[u8], from_domain: &str) -> Result<(), SmtpReply> {
        let Some(mut parsed) = AuthenticatedMessage::parse(message) else {
            return Err(SmtpReply::new(500, PARSE_FAILURE));
        };
        let signed = parsed
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case(b"DKIM-Signature"));
        if !signed {
            return Err(SmtpReply::new(554, NO_SIGNATURE));
        }
        // IN-4e strict alignment: only a signature whose d= is the From domain can make
        // the message acceptable, so no other is checked (nor its key looked up).
        // Malformed signatures and those with l= (mail-auth's strict mode) are not in
        // `dkim_headers`.
        parsed
            .dkim_headers
            .retain(|h| h.header.d.eq_ignore_ascii_case(from_domain));
        parsed.dkim_headers.truncate(MAX_SIGNATURES);
        let mut retried = false;
        loop {
            let fetched = self.fetch_keys(&parsed).await;
            let outputs = self
                .authenticator
                .verify_dkim(Parameters::new(&parsed).with_txt_cache(&fetched.local))
                .await;
            let pass = outputs.iter().any(|o| {
                o.result() == &DkimResult::Pass
                    && o.signature()
                        .is_some_and(|s| s.d.eq_ignore_ascii_case(from_domain))
            });
            if pass {
                return Ok(());
            }
            // IN-5: drop a cached key when a signature fails with it. A key that came
            // from the cache (not fetched for this message) may have been rotated:
            // look it up again, once.
            let mut stale = false;
            for o in &outputs {
                if let (DkimResult::Fail(_), Some(s)) = (o.result(), o.signature()) {
                    let name = key_name(s);
                    self.keys.remove(&name);
                    stale |= !fetched.fresh.contains(&name);
                }
            }
            if stale && !retried {
                retried = true;
                continue;
            }
            let temporary = outputs
                .iter()
                .any(|o| matches!(o.result(), DkimResult::TempError(_)));
            return Err(if temporary {
                SmtpReply::new(451, TEMPORARY_FAILURE)
            } else {
                SmtpReply::new(554, NO_VALID_SIGNATURE)
            });
        }
    }

    /// The keys the aligned signatures of `message` need, from the cache or DNS, in a
    /// per-message cache handed to mail-auth (so it never queries DNS itself and a
    /// concurrent eviction cannot change what this message sees). Failed lookups are
    /// put in as errors: mail-auth reports a `DnsError::Resolver` as a temporary error.
    async fn fetch_keys(&self, message: &AuthenticatedMessage<'_>) -> Fetched {
        let local = LocalTxt::default();
        let mut fresh = HashSet::new();
        let deadline = tokio::time::Instant::now() + LOOKUP_TIMEOUT;
        for header in &message.dkim_headers {
            let signature = &header.header;
            if !body_hash_matches(message, signature) {
                // mail-auth refuses it before needing the key.
                continue;
            }
            let name = key_name(signature);
            if local.contains(&name) {
                continue;
            }
            if let Some(txt) = self.keys.get(&name) {
                local.put(name, txt);
                continue;
            }
            let txt = match tokio::time::timeout_at(deadline, self.lookup(&name)).await {
                Ok(Ok((key, valid_until))) => {
                    let txt = Txt::DomainKey(key);
                    self.keys.insert(name.clone(), txt.clone(), valid_until);
                    txt
                }
                Ok(Err(e)) => Txt::Error(e),
                Err(_) => Txt::Error(mail_auth::Error::Dns(DnsError::Resolver(
                    "DKIM key lookup timed out".into(),
                ))),
            };
            fresh.insert(name.clone());
            local.put(name, txt);
        }
        Fetched { local, fresh }
    }

    /// IN-5: the TXT record at `name`, parsed as a DKIM key record. Records without
    /// `v=` are accepted (mail-auth's parser); quote characters and backslashes are
    /// removed first, for records published with escaped quotes inside the data.
    async fn lookup(&self, name: &str) -> Result<(Arc<DomainKey>, Instant), mail_auth::Error> {
        let query = Name::from_str_relaxed(name)
            .map_err(|_| mail_auth::Error::Dns(DnsError::InvalidRecordType))?;
        let lookup = self
            .authenticator
            .0
            .txt_lookup(query)
            .await
            .map_err(mail_auth::Error::from)?;
        let mut result = Err(mail_auth::Error::Dns(DnsError::InvalidRecordType));
        for record in lookup.answers() {
            let RData::TXT(txt) = &record.data else {
                continue;
            };
            let joined: Vec<u8> = txt
                .txt_data
                .iter()
                .flat_map(|s| s.iter().copied())
                .collect();
            result = parse_key_record(&joined);
            if result.is_ok() {
                break;
            }
        }
        result.map(|key| (Arc::new(key), lookup.valid_until()))
    }

    /// Put a key record for `name` (`<selector>._domainkey.<domain>`) in the cache as if
    /// DNS had returned `record` with `ttl`. For tests.
    #[cfg(test)]
    pub(crate) fn insert_key(&self, name: &str, record: &str, ttl: Duration) {
        let key = parse_key_record(record.as_bytes()).expect("test key record parses");
        self.keys.insert(
            name.to_fqdn().into_owned(),
            Txt::DomainKey(Arc::new(key)),
            Instant::now() + ttl,
        );
    }

    /// Whether a key for `name` is cached. For tests.
    #[cfg(test)]
    pub(crate) fn has_key(&self, name: &str) -> bool {
        self.keys.get(&name.to_fqdn()).is_some()
    }
}

/// A DKIM key record's text, cleaned of quote characters and backslashes (IN-5), parsed.
fn parse_key_record(raw: &[u8]) -> Result<DomainKey, mail_auth::Error> {
    let cleaned: Vec<u8> = raw
        .iter()
        .copied()
        .filter(|&b| b != b'"' && b != b'\\')
        .collect();
    DomainKey::parse(&cleaned)
}

/// Whether `signature`'s body hash matches the body (mail-auth computed the hashes).
fn body_hash_matches(message: &AuthenticatedMessage<'_>, signature: &Signature) -> bool {
    let algorithm = HashAlgorithm::from(signature.a);
    message.body_hashes.iter().any(|(c, h, l, bh)| {
        *c == signature.cb && *h == algorithm && *l == signature.l && *bh == signature.bh
    })
}

/// The cache key of a signature's key record: `<s>._domainkey.<d>.` lower-cased, the
/// name mail-auth asks its cache for.
fn key_name(signature: &Signature) -> String {
    format!("{}._domainkey.{}.", signature.s, signature.d)
        .to_fqdn()
        .into_owned()
}

/// The resolver for key lookups: `config.dns_resolver`, or the system's
/// (`/etc/resolv.conf`) when empty. Its own cache is off: [`KeyCache`] is the cache, so
/// dropping a key from it really means asking DNS again.
fn resolver(config: &Config) -> Result<TokioResolver, DkimError> {
    let err = |e: hickory_resolver::net::NetError| DkimError::Resolver(e.to_string());
    let mut builder = if config.dns_resolver.is_empty() {
        Resolver::builder_tokio().map_err(err)?
    } else {
        let servers = config
            .dns_resolver
            .iter()
            .map(|addr| {
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut server.connections {
                    connection.port = addr.port();
                }
                server
            })
            .collect();
        let mut builder = Resolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        );
        builder.options_mut().use_hosts_file = ResolveHosts::Never;
        builder
    };
    let opts = builder.options_mut();
    opts.cache_size = 0;
    opts.negative_min_ttl = Some(Duration::ZERO);
    opts.negative_max_ttl = Some(Duration::ZERO);
    opts.timeout = Duration::from_secs(10);
    opts.attempts = 2;
    builder.build().map_err(err)
}

/// What [`Verifier::fetch_keys`] found for one message.
struct Fetched {
    local: LocalTxt,
    /// Key names looked up in DNS for this message (not from the cache).
    fresh: HashSet<String>,
}

/// The per-message TXT cache handed to mail-auth.
#[derive(Default)]
struct LocalTxt(Mutex<HashMap<Box<str>, Txt>>);

impl LocalTxt {
    fn put(&self, name: String, txt: Txt) {
        self.lock().insert(name.into_boxed_str(), txt);
    }

    fn contains(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Txt>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ResolverCache<Box<str>, Txt> for LocalTxt {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lock().get(name).cloned()
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lock().remove(name)
    }

    fn insert(&self, key: Box<str>, value: Txt, _valid_until: Instant) {
        self.lock().insert(key, value);
    }
}

/// IN-5: the key cache shared by all sessions: at most `capacity` keys, each kept until
/// its DNS TTL runs out or a signature fails with it; when full, the expired entries
/// and then the least recently used one make room.
struct KeyCache {
    capacity: usize,
    entries: Mutex<HashMap<String, CachedKey>>,
    clock: AtomicU64,
}

struct CachedKey {
    txt: Txt,
    expires: Instant,
    used: u64,
}

impl KeyCache {
    fn new(capacity: usize) -> KeyCache {
        KeyCache {
            capacity,
            entries: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedKey>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn get(&self, name: &str) -> Option<Txt> {
        let tick = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.lock();
        let entry = entries.get_mut(name)?;
        if entry.expires <= Instant::now() {
            entries.remove(name);
            return None;
        }
        entry.used = tick;
        Some(entry.txt.clone())
    }

    fn insert(&self, name: String, txt: Txt, expires: Instant) {
        let now = Instant::now();
        if expires <= now || self.capacity == 0 {
            return;
        }
        let tick = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&name) {
            entries.retain(|_, e| e.expires > now);
            if entries.len() >= self.capacity
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, e)| e.used)
                    .map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(
            name,
            CachedKey {
                txt,
                expires,
                used: tick,
            },
        );
    }

    fn remove(&self, name: &str) -> bool {
        self.lock().remove(name).is_some()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("DKIM key: {0}")]
    Key(String),
    #[error("DNS resolver: {0}")]
    Resolver(String),
}
