//! ACME certificates (RFC 8555) for domain mode (TLS-1, TLS-5, spec/appliance.md §7):
//! the account key and the certificate kept in `<data_dir>/acme/` (ACME-3), HTTP-01
//! answered on port 80 (`crate::http`) and TLS-ALPN-01 (RFC 8737) on 443
//! (`crate::server::serve_443`) as the fallback (ACME-2), renewal at two thirds of the
//! lifetime ([`run`]), and the new certificate handed to every listener through
//! `tls::CertStore` so the next handshake on any port uses it without a restart.
//!
//! One request runs at a time ([`request`] starts it in the background, [`run`] awaits
//! its own); its progress and failures are kept in plain language for the pages
//! ([`Handles::info`]). What it uses of the relay comes as [`Handles`], lent by the
//! assembly (`crate::server`).

pub mod cert;
mod client;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, Problem, RetryPolicy,
};
use relaybox_webui::{AcmeProgress, CertificateInfo};

use crate::clock::Clock;
use crate::config::{Config, Mode};
use crate::tls::Tls;

pub use cert::stored_certificate;

/// RFC 8737 §6.2: the ALPN protocol of TLS-ALPN-01 validations.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// How long the CA may take to validate all names of one order.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the CA may take to issue after finalization.
const ISSUE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound of one whole attempt (both challenge types, account, issuance).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest sleep of the renewal loop between looks at the certificate (TLS-5: at least
/// a daily check).
const RECHECK: Duration = Duration::from_secs(3600);

/// What ACME uses of the relay, lent by the assembly (`crate::server`).
#[derive(Clone, Copy)]
pub struct Handles<'a> {
    /// `mail_domain`, `acme_email`, the directory, `data_dir` (ACME-3).
    pub config: &'a Config,
    pub clock: &'a dyn Clock,
    /// The certificate every listener serves (replaced on success).
    pub tls: &'a Tls,
    /// The challenges and progress of this relay.
    pub acme: &'a Acme,
}

impl Handles<'_> {
    /// What the pages show about the certificate.
    pub fn info(&self) -> CertificateInfo {
        let acme = self.acme;
        let served = self.tls.certs.current();
        let leaf = served.cert.first().map(|c| c.as_ref().to_vec());
        let facts = leaf.as_deref().and_then(|l| cert::facts(l).ok());
        let from_acme = match (&leaf, &*acme.lock_cert()) {
            (Some(l), Some((cert, _))) => l == cert,
            _ => false,
        };
        let source = if self.config.tls_external_cert_and_key.is_some() {
            "external"
        } else if from_acme {
            "acme"
        } else {
            "self-signed"
        };
        CertificateInfo {
            source: source.into(),
            issuer: facts
                .as_ref()
                .map(|f| f.issuer_name.clone())
                .unwrap_or_default(),
            self_signed: facts.as_ref().is_some_and(|f| f.self_signed),
            names: facts.as_ref().map(|f| f.names.clone()).unwrap_or_default(),
            not_after: facts.map(|f| f.not_after),
            acme_possible: acme.possible,
            progress: acme.progress(),
        }
    }
}

/// Start obtaining a certificate in the background, for the relay `owner` whose handles
/// `handles` lends (the task holds `owner` while it runs). `Ok` when started or already
/// running; `Err` with a plain-language reason when ACME cannot be used here.
pub fn request<R: Send + Sync + 'static>(
    owner: Arc<R>,
    handles: fn(&R) -> Handles<'_>,
) -> Result<(), String> {
    let acme = handles(&owner).acme;
    if !acme.possible {
        return Err(acme.impossible_reason.clone());
    }
    if !acme.claim() {
        return Ok(());
    }
    let guard = OwnedRunGuard { owner, handles };
    tokio::spawn(async move {
        let _ = attempt(handles(&guard.owner)).await;
        drop(guard);
    });
    Ok(())
}

/// The relay's ACME state: pending challenges, the progress of the current request,
/// and the leaf of the ACME certificate (to tell whether the served one came from ACME).
pub struct Acme {
    /// ACME is possible: domain mode without an external certificate.
    possible: bool,
    /// Why not, in plain language, when not possible.
    impossible_reason: String,
    /// RFC 8555 §8.3: token → key authorization.
    http01: Mutex<HashMap<String, String>>,
    /// RFC 8737 §3: lower-case name → configuration with the challenge certificate.
    alpn: Mutex<HashMap<String, Arc<rustls::ServerConfig>>>,
    progress: Mutex<AcmeProgress>,
    running: AtomicBool,
    /// DER of the leaf of the current ACME certificate and its facts.
    acme_cert: Mutex<Option<(Vec<u8>, cert::Facts)>>,
    /// The challenge type that confirmed the names of the last certificate obtained.
    validated_with: Mutex<Option<&'static str>>,
}

impl Acme {
    /// `now`: the injected clock's time, to judge a stored certificate.
    pub fn new(config: &Config, now: u64) -> Acme {
        let impossible_reason = match (&config.mode, &config.tls_external_cert_and_key) {
            (_, Some(_)) => "an external certificate is configured \
                             (tls_external_cert_and_key); the relay uses it"
                .to_string(),
            (Mode::IpOnly(_), _) => "a certificate authority cannot issue certificates for \
                                     an IP address: IP-only mode uses a self-signed certificate"
                .to_string(),
            (Mode::Underscore, _) => "a domain starting with \"_\" cannot get a certificate \
                                      from a certificate authority: it uses a self-signed one"
                .to_string(),
            (Mode::Domain, None) => String::new(),
        };
        let possible = impossible_reason.is_empty();
        let acme_cert = if possible {
            stored_certificate(config, now).and_then(|s| {
                s.key
                    .cert
                    .first()
                    .map(|leaf| (leaf.as_ref().to_vec(), s.facts))
            })
        } else {
            None
        };
        Acme {
            possible,
            impossible_reason,
            http01: Mutex::new(HashMap::new()),
            alpn: Mutex::new(HashMap::new()),
            progress: Mutex::new(AcmeProgress::Idle),
            running: AtomicBool::new(false),
            acme_cert: Mutex::new(acme_cert),
            validated_with: Mutex::new(None),
        }
    }

    /// RFC 8555 §8.3: the key authorization for a pending HTTP-01 `token`.
    pub fn http01(&self, token: &str) -> Option<String> {
        self.http01.lock().ok()?.get(token).cloned()
    }

    /// RFC 8737 §3: the server configuration answering `acme-tls/1` for a pending
    /// TLS-ALPN-01 challenge of `server_name`.
    pub fn tls_alpn01(&self, server_name: Option<&str>) -> Option<Arc<rustls::ServerConfig>> {
        let name = server_name?.trim_end_matches('.').to_ascii_lowercase();
        self.alpn.lock().ok()?.get(&name).cloned()
    }

    /// The progress of the current or last request.
    pub fn progress(&self) -> AcmeProgress {
        self.progress
            .lock()
            .map(|p| p.clone())
            .unwrap_or(AcmeProgress::Idle)
    }

    /// How the last certificate obtained by this process was validated: `"HTTP-01"`
    /// (port 80) or `"TLS-ALPN-01"` (port 443).
    pub fn validated_with(&self) -> Option<&'static str> {
        *self
            .validated_with
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn lock_cert(&self) -> std::sync::MutexGuard<'_, Option<(Vec<u8>, cert::Facts)>> {
        self.acme_cert.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_progress(&self, p: AcmeProgress) {
        if let AcmeProgress::Running { step } = &p {
            tracing::info!("ACME: {step}");
        }
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = p;
    }

    fn step(&self, step: impl Into<String>) {
        self.set_progress(AcmeProgress::Running { step: step.into() });
    }

    fn clear_challenges(&self) {
        self.http01
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.alpn.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl Acme {
    /// Take the one running attempt; `false` when one runs already.
    fn claim(&self) -> bool {
        self.running
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// End the running attempt.
    fn release(&self) {
        self.clear_challenges();
        self.running.store(false, Ordering::Release);
    }
}

/// The one running attempt; releases it when dropped (also on panic).
struct RunGuard<'a>(&'a Acme);

impl RunGuard<'_> {
    fn claim(acme: &Acme) -> Option<RunGuard<'_>> {
        acme.claim().then_some(RunGuard(acme))
    }
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// [`RunGuard`] of a background attempt, holding the relay it runs for.
struct OwnedRunGuard<R: 'static> {
    owner: Arc<R>,
    handles: fn(&R) -> Handles<'_>,
}

impl<R> Drop for OwnedRunGuard<R> {
    fn drop(&mut self) {
        (self.handles)(&self.owner).acme.release();
    }
}

/// One attempt, bounded in time, with its outcome recorded as progress.
async fn attempt(h: Handles<'_>) -> Result<(), String> {
    let acme = h.acme;
    let result = match tokio::time::timeout(ATTEMPT_TIMEOUT, obtain(h)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "getting the certificate took longer than {} minutes; try again later",
            ATTEMPT_TIMEOUT.as_secs() / 60
        )),
    };
    acme.clear_challenges();
    match &result {
        Ok(()) => acme.set_progress(AcmeProgress::Done),
        Err(reason) => {
            tracing::warn!("ACME: no certificate: {reason}");
            acme.set_progress(AcmeProgress::Failed {
                reason: reason.clone(),
            })
        }
    }
    result
}

/// A challenge type failed for a name; `problem` is the CA's explanation.
struct ValidationFailure {
    name: String,
    problem: Option<Problem>,
}

/// Why an order did not give a certificate.
enum OrderError {
    /// The CA checked and the check failed: try the next challenge type.
    Validation(ValidationFailure),
    /// Anything else: stop, with a plain-language reason.
    Fatal(String),
}

/// Account, order with HTTP-01, order with TLS-ALPN-01 when that failed, finalize,
/// store, install.
async fn obtain(h: Handles<'_>) -> Result<(), String> {
    let config = h.config;
    let acme = h.acme;
    let directory = config.appliance.acme_directory.clone();
    acme.step(format!(
        "contacting the certificate authority at {directory}"
    ));
    let roots = crate::tls::client_roots(config).map_err(|e| e.to_string())?;
    let client = client::Client::new(roots)?;
    let account = account(h, Box::new(client), &directory).await?;
    let names = cert::wanted_names(&config.mail_domain);
    let mut failures = Vec::new();
    for kind in [ChallengeType::Http01, ChallengeType::TlsAlpn01] {
        match order(h, &account, &names, kind.clone()).await {
            Ok((chain, key)) => {
                install(h, &chain, &key)?;
                *acme
                    .validated_with
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(challenge_name(&kind));
                return Ok(());
            }
            Err(OrderError::Fatal(reason)) => return Err(reason),
            Err(OrderError::Validation(f)) => {
                tracing::info!(
                    "ACME: {} failed for {}: {}",
                    challenge_name(&kind),
                    f.name,
                    f.problem
                        .as_ref()
                        .map(|p| p.to_string())
                        .unwrap_or_default()
                );
                // Another challenge type cannot help when DNS, CAA or the CA's
                // policy is the problem (and would spend the CA's failure limit).
                let final_problem = f.problem.as_ref().is_some_and(|p| {
                    let kind = p.r#type.as_deref().unwrap_or("");
                    is_dns_problem(p)
                        || ["caa", "rejectedIdentifier", "rateLimited"]
                            .iter()
                            .any(|k| kind.ends_with(&format!(":{k}")))
                });
                failures.push((kind, f));
                if final_problem {
                    break;
                }
            }
        }
    }
    Err(explain_validation(&failures))
}

/// The stored account when it belongs to this directory, else a new one (stored
/// 0600, ACME-3).
async fn account(
    h: Handles<'_>,
    http: Box<dyn instant_acme::HttpClient>,
    directory: &str,
) -> Result<Account, String> {
    let path = cert::acme_dir(h.config).join(cert::ACCOUNT_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let same_directory = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("directory")?.as_str().map(str::to_string))
            .is_some_and(|d| d == directory);
        if same_directory && let Ok(creds) = serde_json::from_str::<AccountCredentials>(&text) {
            return Account::builder_with_http(http)
                .from_credentials(creds)
                .await
                .map_err(|e| explain(&e, directory));
        }
    }
    h.acme
        .step("creating an account with the certificate authority");
    let email = h.config.acme_email.trim();
    let contact = format!("mailto:{email}");
    let contacts: Vec<&str> = if email.is_empty() {
        Vec::new()
    } else {
        vec![contact.as_str()]
    };
    let (account, creds) = Account::builder_with_http(http)
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory.to_string(),
            None,
        )
        .await
        .map_err(|e| explain(&e, directory))?;
    let json = serde_json::to_vec_pretty(&creds).map_err(|e| e.to_string())?;
    let dir = cert::acme_dir(h.config);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    crate::files::write_atomic(&path, &json, 0o600)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // ACME-3: the account URL is what a CAA `accounturi` names (§18).
    tracing::info!("ACME account {}", account.id());
    Ok(account)
}

fn challenge_name(kind: &ChallengeType) -> &'static str {
    match kind {
        ChallengeType::Http01 => "HTTP-01",
        ChallengeType::TlsAlpn01 => "TLS-ALPN-01",
        _ => "challenge",
    }
}

/// One order answered with challenges of `kind`: the chain and key PEM when issued.
async fn order(
    h: Handles<'_>,
    account: &Account,
    names: &[String],
    kind: ChallengeType,
) -> Result<(String, String), OrderError> {
    let acme = h.acme;
    let directory = &h.config.appliance.acme_directory;
    let fatal = |e: instant_acme::Error| OrderError::Fatal(explain(&e, directory));
    acme.step(format!(
        "asking the certificate authority for a certificate for {}",
        names.join(", ")
    ));
    let identifiers: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(fatal)?;
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(fatal)?;
        match authz.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            other => {
                return Err(OrderError::Fatal(format!(
                    "the certificate authority answered with an authorization in state \
                     {other:?}; try again later"
                )));
            }
        }
        let name = authz.identifier().to_string();
        let Some(mut challenge) = authz.challenge(kind.clone()) else {
            return Err(OrderError::Validation(ValidationFailure {
                name,
                problem: None,
            }));
        };
        let key_authorization = challenge.key_authorization();
        match kind {
            ChallengeType::Http01 => {
                acme.http01
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(
                        challenge.token.clone(),
                        key_authorization.as_str().to_string(),
                    );
            }
            _ => {
                let config =
                    cert::alpn_challenge_config(&name, key_authorization.digest().as_ref())
                        .map_err(OrderError::Fatal)?;
                acme.alpn
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.to_ascii_lowercase(), config);
            }
        }
        challenge.set_ready().await.map_err(fatal)?;
    }
    acme.step(match kind {
        ChallengeType::Http01 => format!(
            "the certificate authority is checking {} on port 80",
            names
                .iter()
                .map(|n| format!("http://{n}/"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => format!(
            "port 80 did not work; the certificate authority is checking port 443 of {}",
            names.join(", ")
        ),
    });
    let polled = order
        .poll_ready(&RetryPolicy::new().timeout(VALIDATION_TIMEOUT))
        .await;
    match polled {
        Ok(OrderStatus::Ready) => {}
        Ok(_) | Err(instant_acme::Error::Api(_)) => {
            let order_problem = match polled {
                Err(instant_acme::Error::Api(p)) => Some(p),
                _ => None,
            };
            return Err(OrderError::Validation(
                failed_authorization(&mut order, order_problem).await,
            ));
        }
        Err(instant_acme::Error::Timeout(_)) => {
            return Err(OrderError::Fatal(format!(
                "the certificate authority did not finish checking within {} s; \
                 try again later",
                VALIDATION_TIMEOUT.as_secs()
            )));
        }
        Err(e) => return Err(fatal(e)),
    }
    acme.step("the names are confirmed; asking for the certificate");
    // TLS-5: a fresh ECDSA P-256 key for each certificate.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| OrderError::Fatal(format!("key generation: {e}")))?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| OrderError::Fatal(format!("certificate request: {e}")))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| OrderError::Fatal(format!("certificate request: {e}")))?;
    order.finalize_csr(csr.der()).await.map_err(fatal)?;
    acme.step("waiting for the certificate authority to issue the certificate");
    let chain = order
        .poll_certificate(&RetryPolicy::new().timeout(ISSUE_TIMEOUT))
        .await
        .map_err(fatal)?;
    Ok((chain, key.serialize_pem()))
}

/// After an invalid order: the first invalid challenge and the CA's problem document.
async fn failed_authorization(
    order: &mut instant_acme::Order,
    order_problem: Option<Problem>,
) -> ValidationFailure {
    let mut first_name = None;
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        let name = authz.identifier().to_string();
        first_name.get_or_insert(name.clone());
        let Ok(state) = authz.refresh().await else {
            continue;
        };
        if state.status == AuthorizationStatus::Valid {
            continue;
        }
        if let Some(problem) = state.challenges.iter().find_map(|c| c.error.clone()) {
            return ValidationFailure {
                name,
                problem: Some(problem),
            };
        }
    }
    ValidationFailure {
        name: first_name.unwrap_or_default(),
        problem: order_problem,
    }
}

/// Write the pair, remember it, and hand it to every listener (TLS-5: no restart).
fn install(h: Handles<'_>, chain: &str, key_pem: &str) -> Result<(), String> {
    let acme = h.acme;
    acme.step("installing the certificate");
    let key = cert::certified_key(chain, key_pem)?;
    let facts = cert::check(&key, &h.config.mail_domain, h.clock.unix_now())
        .map_err(|e| format!("the certificate authority sent an unusable certificate: {e}"))?;
    cert::store(&cert::acme_dir(h.config), chain, key_pem)
        .map_err(|e| format!("cannot store the certificate: {e}"))?;
    let leaf = key.cert[0].as_ref().to_vec();
    tracing::info!(
        "ACME: new certificate for {} (serial {}, valid until {})",
        facts.names.join(", "),
        facts.serial,
        facts.not_after
    );
    *acme.lock_cert() = Some((leaf, facts));
    h.tls.certs.replace(Arc::new(key));
    Ok(())
}

/// A failure of the CA conversation in plain language (not a validation failure).
fn explain(e: &instant_acme::Error, directory: &str) -> String {
    use std::error::Error as _;
    match e {
        instant_acme::Error::Other(inner) => {
            if let Some(u) = inner.downcast_ref::<client::Unreachable>() {
                return format!(
                    "cannot reach the certificate authority at {directory} ({u}): check \
                     that the box is connected to the Internet"
                );
            }
            format!("talking to the certificate authority at {directory} failed: {inner}")
        }
        instant_acme::Error::Api(p) => explain_problem(p, None),
        instant_acme::Error::Json(_) => format!(
            "{directory} did not answer like an ACME certificate authority; check the \
             acme_directory setting"
        ),
        other => format!(
            "talking to the certificate authority at {directory} failed: {other}{}",
            other
                .source()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default()
        ),
    }
}

/// RFC 8555 §6.7 `dns`, or a validation failure whose detail says the name did not
/// resolve (pebble reports those as `connection`; Let's Encrypt says "DNS problem").
fn is_dns_problem(p: &Problem) -> bool {
    if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:dns") {
        return true;
    }
    let detail = p.detail.as_deref().unwrap_or("").to_ascii_lowercase();
    [
        "dns problem",
        "could not resolve",
        "nxdomain",
        "no valid a records",
    ]
    .iter()
    .any(|w| detail.contains(w))
}

/// RFC 8555 §6.7 problem types in plain language; `during` is the challenge being
/// validated when the problem came from a validation.
fn explain_problem(p: &Problem, during: Option<(&ChallengeType, &str)>) -> String {
    let kind = p
        .r#type
        .as_deref()
        .unwrap_or("")
        .trim_start_matches("urn:ietf:params:acme:error:");
    let detail = p.detail.clone().unwrap_or_else(|| kind.to_string());
    let kind = if is_dns_problem(p) { "dns" } else { kind };
    match (kind, during) {
        ("dns", Some((_, name))) => format!(
            "the certificate authority could not look up {name} in DNS ({detail}): create \
             the DNS records shown in the DNS step and wait until they are visible"
        ),
        ("caa", Some((_, name))) => format!(
            "a CAA record forbids this certificate authority to issue for {name} \
             ({detail}): change or remove the CAA record"
        ),
        ("rateLimited", _) => format!(
            "the certificate authority refuses more requests for now (rate limit: \
             {detail}); the relay tries again later"
        ),
        ("rejectedIdentifier", _) => format!(
            "the certificate authority does not issue certificates for this domain \
             ({detail})"
        ),
        (_, Some((ChallengeType::Http01, name))) => format!(
            "the certificate authority could not reach http://{name}/ on port 80 \
             ({detail}): check the port forwarding for port 80 and the A record of {name}"
        ),
        (_, Some((_, name))) => format!(
            "the certificate authority could not reach {name} on port 443 ({detail}): \
             check the port forwarding for port 443 and the A record of {name}"
        ),
        (_, None) => format!("the certificate authority refused: {detail}"),
    }
}

/// Every challenge type failed: what each one said, most useful first.
fn explain_validation(failures: &[(ChallengeType, ValidationFailure)]) -> String {
    let parts: Vec<String> = failures
        .iter()
        .map(|(kind, f)| match &f.problem {
            Some(p) => explain_problem(p, Some((kind, &f.name))),
            None => format!(
                "the certificate authority offered no {} check for {}",
                challenge_name(kind),
                f.name
            ),
        })
        .collect();
    if parts.is_empty() {
        return "the certificate authority could not confirm the names".into();
    }
    parts.join("; then ")
}

/// Renew at two thirds of the lifetime for as long as the relay runs (TLS-5): at start
/// without a usable ACME certificate, a certificate is requested at once (TLS-1: a DNS
/// name without an external certificate is ACME mode); failures are retried with a
/// growing back-off ([`cert::next`]).
pub async fn run(h: Handles<'_>) {
    if !h.acme.possible {
        return;
    }
    let mut state = cert::RenewState::default();
    loop {
        let now = h.clock.unix_now();
        state.cert = h
            .acme
            .lock_cert()
            .as_ref()
            .map(|(_, f)| (f.not_before, f.not_after));
        match cert::next(now, state) {
            cert::Next::Wait(d) => tokio::time::sleep(d.min(RECHECK)).await,
            cert::Next::Request => {
                let Some(guard) = RunGuard::claim(h.acme) else {
                    // A request from the pages is running; look again shortly.
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                };
                let result = attempt(h).await;
                drop(guard);
                state.last_attempt = h.clock.unix_now();
                match result {
                    Ok(()) => state.failures = 0,
                    Err(_) => {
                        state.failures = state.failures.saturating_add(1);
                        tracing::info!(
                            "ACME: next attempt in {} minutes",
                            cert::backoff(state.failures).as_secs() / 60
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(kind: &str, detail: &str) -> Problem {
        serde_json::from_value(serde_json::json!({
            "type": format!("urn:ietf:params:acme:error:{kind}"),
            "detail": detail,
            "status": 400,
        }))
        .unwrap()
    }

    #[test]
    fn validation_failures_in_plain_language() {
        let http = ValidationFailure {
            name: "chat.example.org".into(),
            problem: Some(problem("connection", "Connection refused")),
        };
        let alpn = ValidationFailure {
            name: "chat.example.org".into(),
            problem: Some(problem("connection", "Timeout")),
        };
        let text = explain_validation(&[
            (ChallengeType::Http01, http),
            (ChallengeType::TlsAlpn01, alpn),
        ]);
        assert!(
            text.contains("could not reach http://chat.example.org/ on port 80"),
            "{text}"
        );
        assert!(
            text.contains("check the port forwarding for port 80"),
            "{text}"
        );
        assert!(text.contains("port 443"), "{text}");
        let dns = explain_validation(&[(
            ChallengeType::Http01,
            ValidationFailure {
                name: "www.chat.example.org".into(),
                problem: Some(problem("dns", "NXDOMAIN")),
            },
        )]);
        assert!(
            dns.contains("could not look up www.chat.example.org"),
            "{dns}"
        );
    }

    #[test]
    fn unreachable_ca_in_plain_language() {
        let e = instant_acme::Error::Other(Box::new(client::Unreachable(
            "cannot connect to 127.0.0.1:1: Connection refused".into(),
        )));
        let text = explain(&e, "https://127.0.0.1:1/dir");
        assert!(
            text.starts_with("cannot reach the certificate authority at https://127.0.0.1:1/dir"),
            "{text}"
        );
    }

    #[test]
    fn not_possible_outside_domain_mode() {
        let dir = tempfile::tempdir().unwrap();
        let acme = Acme::new(&crate::testing::config(dir.path(), "192.0.2.1"), 0);
        assert!(!acme.possible);
        assert!(acme.impossible_reason.contains("IP address"));
        let acme = Acme::new(&crate::testing::config(dir.path(), "chat.example.org"), 0);
        assert!(acme.possible);
        assert_eq!(acme.http01("x"), None);
        assert!(acme.tls_alpn01(Some("chat.example.org")).is_none());
    }
}
