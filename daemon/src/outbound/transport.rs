//! One delivery attempt of one message to the recipients of one destination domain
//! (spec/relay.md §8 OUT-2..OUT-5): next hops (`route`), then per MX host HTTPS
//! `POST /mxdeliv` (`https`) unless the host recently took SMTP, then SMTP with STARTTLS
//! (`smtp`).
//!
//! This module owns what every attempt shares: the resolver, the TLS client
//! configurations (OUT-4), the 30-minute SMTP-only marks of OUT-3, the outgoing
//! connections (source address in IP-only mode, MODE-1; IPv4 and IPv6 raced), and the
//! bounds of an attempt.
//!
//! Decisions:
//! - HTTPS refusals (IN-6: an error status, the SMTP reply line as body) fall through
//!   to SMTP as upstream does, also for a 5xx reply: SMTP gets the real per-recipient
//!   answer. Only when no MX host can be reached over SMTP afterwards does a 5xx reply
//!   of `/mxdeliv` become the result, and then only for a single recipient (the
//!   receiver answers once for the whole request, so with several recipients it is not
//!   known whom a refusal concerns; they stay temporary).
//! - A greeting or EHLO that is not 2xx, or a missing STARTTLS, counts as an
//!   unreachable host (try the next MX), like a connection error; a reply to MAIL,
//!   RCPT or DATA is the result (OUT-3).
//! - Addresses: IPv6 first, then alternating families, a new connection attempt
//!   every 250 ms while earlier ones are pending, first success wins (Happy Eyeballs,
//!   RFC 8305 §5). IP-only relays and `disable_ipv6` use IPv4 only.
//! - OUT-5: one connection per attempt (no reuse of idle connections, no per-
//!   destination caps here: the scheduler bounds concurrency). TLS 1.3 resumption
//!   comes with rustls' default session cache in the shared client configurations.
//! - DNSSEC: not validated here; the configured resolver is trusted (see `route`).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::{TcpSocket, TcpStream};

use super::https::{self, Answer};
use super::route::{Hop, Route, Router};
use super::smtp::{self, Envelope, HopError, Security};
use crate::config::{Config, Mode};
use crate::policy::SmtpReply;

/// How a message reached the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Https,
    Smtp,
}

/// The result of one attempt, per recipient. Every recipient passed in appears in
/// exactly one of the three lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The peer accepted the message for these.
    pub accepted: Vec<String>,
    /// Try again later (4xx, connection failures, DNS errors), with the reason.
    pub temporary: Vec<(String, SmtpReply)>,
    /// Never (5xx, null MX, NXDOMAIN), with the reason for the bounce.
    pub permanent: Vec<(String, SmtpReply)>,
    /// How the accepted ones went.
    pub via: Option<Via>,
}

impl Outcome {
    /// Every recipient failed the same way.
    pub fn all_failed(recipients: &[String], reply: SmtpReply, permanent: bool) -> Outcome {
        let list = recipients
            .iter()
            .map(|r| (r.clone(), reply.clone()))
            .collect();
        if permanent {
            Outcome {
                permanent: list,
                ..Outcome::default()
            }
        } else {
            Outcome {
                temporary: list,
                ..Outcome::default()
            }
        }
    }

    /// Add `other` (recipients handled apart, e.g. refused before any attempt).
    fn merge(mut self, other: Outcome) -> Outcome {
        self.accepted.extend(other.accepted);
        self.temporary.extend(other.temporary);
        self.permanent.extend(other.permanent);
        self.via = self.via.or(other.via);
        self
    }
}

/// Ports and bounds of outbound delivery. [`Settings::default`] is production; tests
/// point the ports at their own servers and shorten the waits.
#[derive(Debug, Clone)]
pub struct Settings {
    /// OUT-3 step 2: SMTP port of every MX host (25).
    pub smtp_port: u16,
    /// OUT-3 step 1: HTTPS port of every MX host (443).
    pub https_port: u16,
    /// TCP connect, all addresses of one host together (30 s).
    pub connect_timeout: Duration,
    /// OUT-3 step 1: the whole `/mxdeliv` request (60 s).
    pub https_timeout: Duration,
    /// Per-stage SMTP waits (RFC 5321 §4.5.3.2).
    pub smtp: smtp::Timeouts,
    /// OUT-3: how long a host that took mail over SMTP is not asked over HTTPS (30 min).
    pub smtp_only_for: Duration,
    /// The whole attempt, every host included (20 min).
    pub attempt_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            smtp_port: 25,
            https_port: 443,
            connect_timeout: Duration::from_secs(30),
            https_timeout: Duration::from_secs(60),
            smtp: smtp::Timeouts::default(),
            smtp_only_for: Duration::from_secs(30 * 60),
            attempt_timeout: Duration::from_secs(20 * 60),
        }
    }
}

/// RFC 8305 §5: delay between starting connection attempts to the next address.
const CONNECTION_ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Outbound connections: resolver, TLS client configs, per-host state (the 30-minute
/// SMTP-only mark of OUT-3). Shared by every attempt.
pub struct Transport {
    router: Router,
    tls: TlsConnectors,
    /// EHLO name (CFG-3: the domain, or the reverse name in IP-only mode).
    helo: String,
    /// MODE-1: the source address of every outbound connection.
    source: Option<IpAddr>,
    /// Whether IPv6 destinations are used.
    ipv6: bool,
    /// OUT-3: host label → when it last took mail over SMTP.
    smtp_only: Mutex<HashMap<String, Instant>>,
    settings: Settings,
}

/// OUT-4: the client configurations, per certificate policy and protocol.
struct TlsConnectors {
    /// Web-PKI plus extra roots, name checked (SMTP: no ALPN).
    verified_smtp: tokio_rustls::TlsConnector,
    /// The same with ALPN `http/1.1`.
    verified_https: tokio_rustls::TlsConnector,
    /// Any certificate, handshake signatures still checked.
    any_smtp: tokio_rustls::TlsConnector,
    any_https: tokio_rustls::TlsConnector,
}

/// OUT-4: how a destination's certificates are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsPolicy {
    /// Web-PKI chain (plus `tls_extra_roots`) and the MX name.
    Verify,
    /// IP literal or `_` domain: TLS required, certificate not verified (MODE-2).
    AnyCertificate,
    /// `nauta.cu`: SMTP without TLS.
    Plain,
}

fn tls_policy(domain: &str) -> TlsPolicy {
    if domain.starts_with('[') || domain.starts_with('_') {
        TlsPolicy::AnyCertificate
    } else if domain.eq_ignore_ascii_case("nauta.cu") {
        TlsPolicy::Plain
    } else {
        TlsPolicy::Verify
    }
}

impl Transport {
    pub fn new(config: &Config) -> Result<Transport, TransportError> {
        Self::with_settings(config, Settings::default())
    }

    /// [`Transport::new`] with explicit ports and bounds.
    pub fn with_settings(config: &Config, settings: Settings) -> Result<Transport, TransportError> {
        let source = match &config.mode {
            // MODE-1: peers check the sender's literal against our address (IN-4e).
            Mode::IpOnly(ip) => Some(IpAddr::V4(*ip)),
            _ => None,
        };
        Ok(Transport {
            router: Router::new(config)?,
            tls: TlsConnectors::new(config)?,
            helo: config.host_name(),
            ipv6: source.is_none() && !config.disable_ipv6,
            source,
            smtp_only: Mutex::new(HashMap::new()),
            settings,
        })
    }

    /// Deliver `body` from `sender` (empty = `<>`) to `recipients`, all of `domain`.
    pub async fn deliver(
        &self,
        domain: &str,
        sender: &str,
        recipients: &[String],
        body: &[u8],
    ) -> Outcome {
        if recipients.is_empty() {
            return Outcome::default();
        }
        if !sender.is_empty() && bad_address(sender) {
            return Outcome::all_failed(
                recipients,
                SmtpReply::new(553, "5.1.7 Bad sender address syntax"),
                true,
            );
        }
        // Nothing that could break a command line or a header leaves the relay.
        let (good, bad): (Vec<String>, Vec<String>) =
            recipients.iter().cloned().partition(|r| !bad_address(r));
        let refused = Outcome::all_failed(
            &bad,
            SmtpReply::new(553, "5.1.3 Bad recipient address syntax"),
            true,
        );
        if good.is_empty() {
            return refused;
        }
        let attempt = self.attempt(domain, sender, &good, body);
        let outcome = match tokio::time::timeout(self.settings.attempt_timeout, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::all_failed(
                &good,
                SmtpReply::new(421, "4.4.2 Delivery attempt timed out"),
                false,
            ),
        };
        outcome.merge(refused)
    }

    async fn attempt(
        &self,
        domain: &str,
        sender: &str,
        recipients: &[String],
        body: &[u8],
    ) -> Outcome {
        let domain = domain.to_ascii_lowercase();
        let hops = match self.router.route(&domain).await {
            Route::Hops(hops) => hops,
            Route::Fail { reply, permanent } => {
                return Outcome::all_failed(recipients, reply, permanent);
            }
        };
        let policy = tls_policy(&domain);
        let shared_body = Bytes::copy_from_slice(body);
        let mut stuffed: Option<Vec<u8>> = None;
        let mut last = (String::new(), String::from("no mail server"));
        let mut https_refusal: Option<SmtpReply> = None;
        for hop in &hops {
            let label = hop.label();
            let addrs = match self.addresses(hop).await {
                Ok(addrs) => addrs,
                Err(e) => {
                    tracing::info!("outbound: {label}: {e}");
                    last = (label, e);
                    continue;
                }
            };
            // OUT-3 step 1.
            if !self.is_smtp_only(&label) {
                match self
                    .post(hop, &addrs, policy, sender, recipients, shared_body.clone())
                    .await
                {
                    Answer::Delivered => {
                        tracing::info!("outbound: delivered to {label} over HTTPS");
                        return Outcome {
                            accepted: recipients.to_vec(),
                            via: Some(Via::Https),
                            ..Outcome::default()
                        };
                    }
                    Answer::Refused { status, reply } => {
                        tracing::info!(
                            "outbound: {label} /mxdeliv answered {status}{}; trying SMTP",
                            reply
                                .as_ref()
                                .map(|r| format!(" ({r})"))
                                .unwrap_or_default()
                        );
                        if reply.is_some() {
                            https_refusal = reply;
                        }
                    }
                    Answer::Failed(e) => {
                        tracing::info!("outbound: {label} /mxdeliv failed: {e}; trying SMTP");
                    }
                }
            }
            // OUT-3 step 2.
            let stuffed = stuffed.get_or_insert_with(|| smtp::stuff(body));
            let envelope = Envelope {
                sender,
                recipients,
                stuffed,
                size: body.len(),
            };
            match self.smtp(hop, &addrs, policy, &envelope).await {
                Ok(replies) => {
                    let outcome = by_reply(recipients, replies);
                    if !outcome.accepted.is_empty() {
                        self.mark_smtp_only(&label);
                    }
                    tracing::info!(
                        "outbound: {label} over SMTP: {} accepted, {} temporary, {} permanent",
                        outcome.accepted.len(),
                        outcome.temporary.len(),
                        outcome.permanent.len()
                    );
                    return outcome;
                }
                Err(e) => {
                    // OUT-3: connection/TLS/IO error → clear the mark, next MX.
                    tracing::info!("outbound: {label} over SMTP failed: {e}");
                    self.clear_smtp_only(&label);
                    last = (label, e.to_string());
                }
            }
        }
        if let Some(reply) = https_refusal
            && reply.code >= 500
            && recipients.len() == 1
        {
            return Outcome::all_failed(recipients, reply, true);
        }
        let (host, error) = last;
        Outcome::all_failed(
            recipients,
            SmtpReply::new(
                421,
                format!("Failed to connect to any mail server; last attempt to {host}: {error}"),
            ),
            false,
        )
    }

    /// The addresses to connect to for `hop`, of the families this relay uses.
    async fn addresses(&self, hop: &Hop) -> Result<Vec<IpAddr>, String> {
        let all = match hop {
            Hop::Literal(ip) => vec![*ip],
            Hop::Name(name) => self.router.addresses(name).await?,
        };
        let usable: Vec<IpAddr> = all
            .into_iter()
            .filter(|ip| ip.is_ipv4() || self.ipv6)
            .collect();
        if usable.is_empty() {
            return Err("no usable address".into());
        }
        Ok(usable)
    }

    /// OUT-3 step 1: `POST https://<host>/mxdeliv`, bounded by `https_timeout`.
    async fn post(
        &self,
        hop: &Hop,
        addrs: &[IpAddr],
        policy: TlsPolicy,
        sender: &str,
        recipients: &[String],
        body: Bytes,
    ) -> Answer {
        let port = self.settings.https_port;
        let connector = match policy {
            TlsPolicy::AnyCertificate => self.tls.any_https.clone(),
            // HTTPS is never plain; nauta.cu's hosts get the normal checks.
            TlsPolicy::Verify | TlsPolicy::Plain => self.tls.verified_https.clone(),
        };
        let name = match server_name(hop) {
            Ok(name) => name,
            Err(e) => return Answer::Failed(e),
        };
        let host = match hop {
            Hop::Name(name) => name.clone(),
            Hop::Literal(IpAddr::V4(ip)) => ip.to_string(),
            Hop::Literal(IpAddr::V6(ip)) => format!("[{ip}]"),
        };
        let authority = if port == 443 {
            host
        } else {
            format!("{host}:{port}")
        };
        let request = async {
            let tcp = match self.connect(addrs, port).await {
                Ok(tcp) => tcp,
                Err(e) => return Answer::Failed(e),
            };
            https::post(tcp, connector, name, &authority, sender, recipients, body).await
        };
        match tokio::time::timeout(self.settings.https_timeout, request).await {
            Ok(answer) => answer,
            Err(_) => Answer::Failed("timed out".into()),
        }
    }

    /// OUT-3 step 2: one SMTP transaction with `hop`.
    async fn smtp(
        &self,
        hop: &Hop,
        addrs: &[IpAddr],
        policy: TlsPolicy,
        envelope: &Envelope<'_>,
    ) -> Result<Vec<SmtpReply>, HopError> {
        let security = match policy {
            TlsPolicy::Plain => Security::Plain,
            TlsPolicy::Verify => Security::StartTls(
                self.tls.verified_smtp.clone(),
                server_name(hop).map_err(HopError::Tls)?,
            ),
            TlsPolicy::AnyCertificate => Security::StartTls(
                self.tls.any_smtp.clone(),
                server_name(hop).map_err(HopError::Tls)?,
            ),
        };
        let tcp = self
            .connect(addrs, self.settings.smtp_port)
            .await
            .map_err(HopError::Connect)?;
        smtp::send(tcp, &self.helo, security, envelope, &self.settings.smtp).await
    }

    /// Connect to one of `addrs` (Happy Eyeballs, RFC 8305), from the MODE-1 source
    /// address when there is one, within `connect_timeout`.
    async fn connect(&self, addrs: &[IpAddr], port: u16) -> Result<TcpStream, String> {
        let mut pending: VecDeque<SocketAddr> = interleave(addrs)
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
        let deadline = tokio::time::Instant::now() + self.settings.connect_timeout;
        // Dropping the set aborts the attempts that lost the race.
        let mut attempts = tokio::task::JoinSet::new();
        let mut last_error = String::from("no address to connect to");
        let source = self.source;
        let start = |set: &mut tokio::task::JoinSet<Result<TcpStream, String>>,
                     addr: SocketAddr| {
            set.spawn(async move {
                connect_one(addr, source)
                    .await
                    .map_err(|e| format!("{addr}: {e}"))
            });
        };
        loop {
            if attempts.is_empty() {
                match pending.pop_front() {
                    Some(addr) => start(&mut attempts, addr),
                    None => return Err(last_error),
                }
            }
            tokio::select! {
                done = attempts.join_next() => match done {
                    Some(Ok(Ok(stream))) => return Ok(stream),
                    Some(Ok(Err(e))) => {
                        last_error = e;
                        // RFC 8305 §5: a failure starts the next attempt at once.
                        if let Some(addr) = pending.pop_front() {
                            start(&mut attempts, addr);
                        }
                    }
                    Some(Err(e)) => last_error = format!("connect task: {e}"),
                    None => {}
                },
                _ = tokio::time::sleep(CONNECTION_ATTEMPT_DELAY), if !pending.is_empty() => {
                    if let Some(addr) = pending.pop_front() {
                        start(&mut attempts, addr);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(format!("connection timed out ({last_error})"));
                }
            }
        }
    }

    fn is_smtp_only(&self, label: &str) -> bool {
        let marks = self.smtp_only.lock().unwrap_or_else(|e| e.into_inner());
        marks
            .get(label)
            .is_some_and(|at| at.elapsed() < self.settings.smtp_only_for)
    }

    fn mark_smtp_only(&self, label: &str) {
        let mut marks = self.smtp_only.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: expired marks go whenever one is added.
        let keep = self.settings.smtp_only_for;
        marks.retain(|_, at| at.elapsed() < keep);
        marks.insert(label.to_string(), Instant::now());
    }

    fn clear_smtp_only(&self, label: &str) {
        let mut marks = self.smtp_only.lock().unwrap_or_else(|e| e.into_inner());
        marks.remove(label);
    }
}

/// One TCP connection, bound to `source` when given (MODE-1).
async fn connect_one(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// RFC 8305 §4: IPv6 first, then alternating address families.
fn interleave(addrs: &[IpAddr]) -> Vec<IpAddr> {
    let (mut v6, mut v4): (VecDeque<IpAddr>, VecDeque<IpAddr>) =
        addrs.iter().partition(|ip| ip.is_ipv6());
    let mut out = Vec::with_capacity(addrs.len());
    loop {
        match (v6.pop_front(), v4.pop_front()) {
            (None, None) => return out,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
}

/// SNI and certificate name of a hop: the MX name, or the address (no SNI).
fn server_name(hop: &Hop) -> Result<ServerName<'static>, String> {
    match hop {
        Hop::Literal(ip) => Ok(ServerName::IpAddress((*ip).into())),
        Hop::Name(name) => ServerName::try_from(name.clone())
            .map_err(|_| format!("{name} is not a valid host name")),
    }
}

/// Per-recipient replies to an Outcome (OUT-3: 2xx accepted, 4xx temporary, 5xx
/// permanent).
fn by_reply(recipients: &[String], replies: Vec<SmtpReply>) -> Outcome {
    let mut outcome = Outcome::default();
    let mut replies = replies.into_iter();
    for r in recipients {
        let reply = replies
            .next()
            .unwrap_or_else(|| SmtpReply::new(451, "4.3.0 No reply for this recipient"));
        match reply.code {
            200..=299 => outcome.accepted.push(r.clone()),
            500..=599 => outcome.permanent.push((r.clone(), reply)),
            _ => outcome.temporary.push((r.clone(), reply)),
        }
    }
    if !outcome.accepted.is_empty() {
        outcome.via = Some(Via::Smtp);
    }
    outcome
}

/// An address that must not go into a command line or header: empty, too long,
/// control characters, spaces or angle brackets.
fn bad_address(address: &str) -> bool {
    address.is_empty()
        || address.len() > 512
        || address
            .bytes()
            .any(|b| b <= b' ' || b == 0x7f || b == b'<' || b == b'>')
}

impl TlsConnectors {
    fn new(config: &Config) -> Result<TlsConnectors, TransportError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(client_roots(config)?);
        let build =
            |verify: bool, alpn: bool| -> Result<tokio_rustls::TlsConnector, TransportError> {
                // rustls speaks TLS 1.2 and 1.3 only: OUT-4's "TLS ≥ 1.2".
                let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| TransportError::Roots(e.to_string()))?;
                let mut cfg = if verify {
                    builder
                        .with_root_certificates(roots.clone())
                        .with_no_client_auth()
                } else {
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(AnyCertificate {
                            provider: provider.clone(),
                        }))
                        .with_no_client_auth()
                };
                if alpn {
                    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
                }
                Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
            };
        Ok(TlsConnectors {
            verified_smtp: build(true, false)?,
            verified_https: build(true, true)?,
            any_smtp: build(false, false)?,
            any_https: build(false, true)?,
        })
    }
}

/// OUT-4: the roots outbound TLS trusts — the web-PKI roots plus every certificate of
/// the PEM file `tls_extra_roots`. Shared by every outbound HTTPS/SMTP client (the
/// push notifier can use it too).
pub fn client_roots(config: &Config) -> Result<rustls::RootCertStore, TransportError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &config.tls_extra_roots {
        add_pem_roots(&mut roots, path)?;
    }
    Ok(roots)
}

fn add_pem_roots(roots: &mut rustls::RootCertStore, path: &Path) -> Result<(), TransportError> {
    use rustls_pki_types::pem::PemObject;
    let err = |msg: String| TransportError::Roots(format!("{}: {msg}", path.display()));
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

/// OUT-4 exceptions (IP literal, `_` domain): any certificate is accepted, but the
/// handshake signatures are still verified with ring's algorithms, so the TLS session
/// is bound to the key of the certificate the server sent.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("DNS resolver: {0}")]
    Resolver(String),
    #[error("TLS roots: {0}")]
    Roots(String),
}
