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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls_pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};

use super::https::{self, Answer};
use super::route::{Hop, Route, Router};
use super::smtp::{self, Envelope, HopError, Security};
use crate::config::{Config, Mode};
use crate::policy::SmtpReply;
use crate::tls::client::{Dial, HttpsClient, Options};

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
    /// Issue 17: this relay's own domain (domain mode: an IP-only relay's addresses name
    /// its own IP, so it cannot move) and whether it moves (its mail then goes to the new
    /// machine, [`Hop::At`]).
    own_domain: Option<String>,
    moving: Option<Arc<crate::moving::Moving>>,
    /// Issue 20: while a front server is set, SMTP connections are opened by it (HTTPS
    /// `/mxdeliv` stays direct).
    front: Option<Arc<crate::front::home::Tunnel>>,
}

/// OUT-4: the client configurations, per certificate policy and protocol.
struct TlsConnectors {
    /// Web-PKI plus extra roots, name checked (SMTP: no ALPN).
    verified_smtp: tokio_rustls::TlsConnector,
    /// The same with ALPN `http/1.1`.
    verified_https: Arc<rustls::ClientConfig>,
    /// Any certificate, handshake signatures still checked.
    any_smtp: tokio_rustls::TlsConnector,
    any_https: Arc<rustls::ClientConfig>,
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
            own_domain: matches!(config.mode, Mode::Domain)
                .then(|| config.mail_domain.to_ascii_lowercase()),
            moving: None,
            front: None,
        })
    }

    /// Open SMTP connections through `tunnel`'s front whenever one is set.
    pub fn via_front(mut self, tunnel: Arc<crate::front::home::Tunnel>) -> Transport {
        self.front = Some(tunnel);
        self
    }

    /// How mail leaves right now, for the status page.
    pub fn path(&self) -> &'static str {
        if self.front.as_ref().is_some_and(|f| f.active()) {
            "HTTPS /mxdeliv direct; SMTP through the front server"
        } else {
            "direct (HTTPS /mxdeliv, then SMTP on port 25)"
        }
    }

    /// Send this relay's own domain to the machine it moves to, once `moving` says so.
    pub fn moving(mut self, moving: Arc<crate::moving::Moving>) -> Transport {
        self.moving = Some(moving);
        self
    }

    /// Issue 17: the one hop of this relay's own domain while it moves.
    fn moved_hop(&self, domain: &str) -> Option<Hop> {
        let own = self.own_domain.as_ref()?;
        if domain != own {
            return None;
        }
        let at = self.moving.as_ref()?.target()?;
        Some(Hop::At {
            name: own.clone(),
            at,
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
        let route = match self.moved_hop(&domain) {
            Some(hop) => Route::Hops(vec![hop]),
            None => self.router.route(&domain).await,
        };
        let hops = match route {
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
                        // The code only: a reply text may name a recipient (LOG-2).
                        tracing::info!(
                            "outbound: {label} /mxdeliv answered {status}{}; trying SMTP",
                            reply
                                .as_ref()
                                .map(|r| format!(" (SMTP {})", r.code))
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
            Hop::At { at, .. } => match at.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => self.router.addresses(at).await?,
            },
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
        let tls = match policy {
            TlsPolicy::AnyCertificate => self.tls.any_https.clone(),
            // HTTPS is never plain; nauta.cu's hosts get the normal checks.
            TlsPolicy::Verify | TlsPolicy::Plain => self.tls.verified_https.clone(),
        };
        if let Err(e) = server_name(hop) {
            return Answer::Failed(e);
        }
        let host = match hop {
            Hop::Name(name) | Hop::At { name, .. } => name.clone(),
            Hop::Literal(IpAddr::V4(ip)) => ip.to_string(),
            Hop::Literal(IpAddr::V6(ip)) => format!("[{ip}]"),
        };
        // The host gives SNI, the certificate name and `Host` (with the port unless
        // 443); the connection goes to the addresses resolved for the hop.
        let url = if port == 443 {
            format!("https://{host}{}", https::PATH)
        } else {
            format!("https://{host}:{port}{}", https::PATH)
        };
        let (addrs, source, timeout) = (addrs.to_vec(), self.source, self.settings.connect_timeout);
        let dial = Dial::Custom(Arc::new(move || {
            let addrs = addrs.clone();
            Box::pin(async move { connect(&addrs, port, source, timeout).await })
        }));
        // OUT-5: one connection per attempt, none kept.
        let client = HttpsClient::new(
            tls,
            Options {
                dial,
                connect_timeout: timeout,
                max_idle: 0,
            },
        );
        let request = https::post(&client, &url, sender, recipients, body);
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
        if let Some(front) = self.front.as_ref().filter(|f| f.active()) {
            let stream = self
                .connect_via_front(front, addrs, self.settings.smtp_port)
                .await
                .map_err(HopError::Connect)?;
            return smtp::send(stream, &self.helo, security, envelope, &self.settings.smtp).await;
        }
        let tcp = self
            .connect(addrs, self.settings.smtp_port)
            .await
            .map_err(HopError::Connect)?;
        smtp::send(tcp, &self.helo, security, envelope, &self.settings.smtp).await
    }

    /// Issue 20: a connection to one of `addrs` opened by the front, each address in turn
    /// (the front connects, so no racing from here), within `connect_timeout`.
    async fn connect_via_front(
        &self,
        front: &crate::front::home::Tunnel,
        addrs: &[IpAddr],
        port: u16,
    ) -> Result<crate::front::link::Stream, String> {
        let mut last_error = String::from("no address to connect to");
        let attempts = async {
            for ip in interleave(addrs) {
                match front.connect(SocketAddr::new(ip, port)).await {
                    Ok(stream) => return Ok(stream),
                    Err(e) => last_error = format!("{ip} (through the front): {e}"),
                }
            }
            Err(())
        };
        match tokio::time::timeout(self.settings.connect_timeout, attempts).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(())) => Err(last_error),
            Err(_) => Err("connection through the front timed out".into()),
        }
    }

    /// Connect to one of `addrs` (Happy Eyeballs, RFC 8305), from the MODE-1 source
    /// address when there is one, within `connect_timeout`.
    async fn connect(&self, addrs: &[IpAddr], port: u16) -> Result<TcpStream, String> {
        connect(addrs, port, self.source, self.settings.connect_timeout).await
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

/// Connect to one of `addrs` (Happy Eyeballs, RFC 8305), from the MODE-1 source
/// address `source` when there is one, within `connect_timeout`.
async fn connect(
    addrs: &[IpAddr],
    port: u16,
    source: Option<IpAddr>,
    connect_timeout: Duration,
) -> Result<TcpStream, String> {
    let mut pending: VecDeque<SocketAddr> = interleave(addrs)
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    let deadline = tokio::time::Instant::now() + connect_timeout;
    // Dropping the set aborts the attempts that lost the race.
    let mut attempts = tokio::task::JoinSet::new();
    let mut last_error = String::from("no address to connect to");
    let start = |set: &mut tokio::task::JoinSet<Result<TcpStream, String>>, addr: SocketAddr| {
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
        Hop::Name(name) | Hop::At { name, .. } => ServerName::try_from(name.clone())
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
        let roots = Arc::new(crate::tls::client_roots(config)?);
        let build =
            |verify: bool, alpn: bool| -> Result<Arc<rustls::ClientConfig>, TransportError> {
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
                        // OUT-4 exceptions (IP literal, `_` domain): any
                        // certificate, handshake signatures still checked.
                        .with_custom_certificate_verifier(Arc::new(
                            crate::tls::AcceptCertificate::any(provider.clone()),
                        ))
                        .with_no_client_auth()
                };
                if alpn {
                    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
                }
                Ok(Arc::new(cfg))
            };
        Ok(TlsConnectors {
            verified_smtp: tokio_rustls::TlsConnector::from(build(true, false)?),
            verified_https: build(true, true)?,
            any_smtp: tokio_rustls::TlsConnector::from(build(false, false)?),
            any_https: build(false, true)?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("DNS resolver: {0}")]
    Resolver(String),
    #[error("TLS roots: {0}")]
    Roots(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

#[cfg(test)]
mod tests {
    //! Attempts against real peers on loopback: relaybox port-25 sessions in-process
    //! (IP-literal and domain relays), a dnsmasq started per test for MX records, a
    //! small HTTPS server standing in for a peer's `/mxdeliv`, and scripted SMTP
    //! servers for misbehaving peers.

    use super::*;
    use std::net::Ipv4Addr;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};

    use base64::Engine;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    use crate::net::Conn;
    use crate::server::Relay;
    use crate::smtp::{Limits, Mode as SmtpMode, serve_with};

    const PASSWORD: &str = "password123";
    /// Bound of every wait in these tests.
    const STEP: Duration = Duration::from_secs(30);

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    fn settings(smtp_port: u16, https_port: u16) -> Settings {
        let wait = Duration::from_secs(10);
        Settings {
            smtp_port,
            https_port,
            connect_timeout: Duration::from_secs(5),
            https_timeout: wait,
            smtp: smtp::Timeouts {
                greeting: wait,
                command: wait,
                handshake: wait,
                data_init: wait,
                data_block: wait,
                data_done: wait,
                quit: Duration::from_secs(2),
            },
            smtp_only_for: Duration::from_secs(30 * 60),
            attempt_timeout: Duration::from_secs(60),
        }
    }

    /// A port on `at` that nothing listens on (bound once, then released).
    async fn closed_port(at: IpAddr) -> u16 {
        let l = TcpListener::bind((at, 0)).await.unwrap();
        l.local_addr().unwrap().port()
    }

    // ---- a test CA ---------------------------------------------------------------

    struct Ca {
        issuer: Issuer<'static, KeyPair>,
        pem: String,
    }

    impl Ca {
        fn new() -> Ca {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(DnType::CommonName, "outbound transport test CA");
            let cert = params.self_signed(&key).unwrap();
            Ca {
                pem: cert.pem(),
                issuer: Issuer::new(params, key),
            }
        }

        /// Leaf for `names`: (chain PEM file, key PEM file) in `dir`.
        fn leaf(&self, dir: &Path, names: &[&str]) -> (PathBuf, PathBuf) {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, names[0]);
            for n in names {
                params
                    .subject_alt_names
                    .push(SanType::DnsName((*n).try_into().unwrap()));
            }
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            let (c, k) = (
                dir.join(format!("{}.crt", names[0])),
                dir.join(format!("{}.key", names[0])),
            );
            std::fs::write(&c, format!("{}{}", cert.pem(), self.pem)).unwrap();
            std::fs::write(&k, key.serialize_pem()).unwrap();
            (c, k)
        }

        fn write(&self, dir: &Path) -> PathBuf {
            let p = dir.join("ca.pem");
            std::fs::write(&p, &self.pem).unwrap();
            p
        }
    }

    // ---- dnsmasq -----------------------------------------------------------------

    /// dnsmasq answering on 127.0.0.1:<port> for `*.test` only (other names: REFUSED).
    struct Dns {
        child: Child,
        port: u16,
    }

    impl Drop for Dns {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Dns {
        /// On a free port (tries a few, in case another process took the port
        /// between choosing and binding it).
        async fn start(records: &[&str]) -> Dns {
            for _ in 0..5 {
                let port = std::net::UdpSocket::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                if let Some(dns) = Self::try_start(port, records).await {
                    return dns;
                }
            }
            panic!("dnsmasq did not start");
        }

        async fn start_on(port: u16, records: &[&str]) -> Dns {
            for _ in 0..20 {
                if let Some(dns) = Self::try_start(port, records).await {
                    return dns;
                }
                // The previous instance may still hold the port for a moment.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("dnsmasq did not start on port {port}");
        }

        async fn try_start(port: u16, records: &[&str]) -> Option<Dns> {
            let bin = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
                .into_iter()
                .find(|p| Path::new(p).exists())
                .expect("dnsmasq is installed (tests/run installs dnsmasq-base)");
            let child = Command::new(bin)
                .args([
                    "--no-daemon",
                    "--conf-file=/dev/null",
                    "--no-resolv",
                    "--no-hosts",
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--pid-file=",
                    "--local=/test/",
                    &format!("--port={port}"),
                ])
                .args(records)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start dnsmasq");
            let mut dns = Dns { child, port };
            // Ready when it answers a query (bounded); gone when it exited.
            let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let query = [
                0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 5, b'p', b'r', b'o', b'b', b'e', 4, b't',
                b'e', b's', b't', 0, 0, 1, 0, 1,
            ];
            for _ in 0..50 {
                if let Ok(Some(_)) = dns.child.try_wait() {
                    return None;
                }
                let _ = sock.send_to(&query, ("127.0.0.1", port)).await;
                let mut buf = [0u8; 512];
                if let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_millis(100), sock.recv_from(&mut buf)).await
                {
                    return Some(dns);
                }
            }
            None
        }

        fn addr(&self) -> SocketAddr {
            SocketAddr::from(([127, 0, 0, 1], self.port))
        }
    }

    // ---- peers -------------------------------------------------------------------

    /// A real relay serving port-25 sessions on `listen`.
    struct Peer {
        relay: Arc<Relay>,
        task: tokio::task::JoinHandle<()>,
        _dir: tempfile::TempDir,
    }

    impl Drop for Peer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl Peer {
        async fn start(
            mail_domain: &str,
            listen: SocketAddr,
            cert: Option<(PathBuf, PathBuf)>,
        ) -> Peer {
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = crate::testing::config(dir.path(), mail_domain);
            cfg.username_min_length = 3;
            cfg.username_max_length = 20;
            cfg.tls_external_cert_and_key = cert;
            let relay = Relay::open(cfg).unwrap();
            let listener = TcpListener::bind(listen).await.unwrap();
            let r = relay.clone();
            let task = tokio::spawn(async move {
                for _ in 0..1000 {
                    let Ok((stream, peer)) = listener.accept().await else {
                        return;
                    };
                    let relay = r.clone();
                    let limits = Limits {
                        idle: Duration::from_secs(20),
                        ..Limits::default()
                    };
                    tokio::spawn(async move {
                        let h = relay.smtp_handles();
                        serve_with(h, Conn::Plain(stream), peer, SmtpMode::Mx, limits).await
                    });
                }
            });
            Peer {
                relay,
                task,
                _dir: dir,
            }
        }

        /// Stop listening (the port refuses connections afterwards).
        async fn stop(&mut self) {
            self.task.abort();
            let _ = (&mut self.task).await;
        }

        async fn account(&self, local: &str) -> String {
            let domain = self.relay.config.address_domain();
            self.relay
                .auth
                .login(
                    &format!("{local}@{domain}"),
                    PASSWORD,
                    std::net::Ipv4Addr::LOCALHOST.into(),
                )
                .await
                .unwrap()
        }

        fn inbox(&self, account: &str) -> Vec<Vec<u8>> {
            let (_, metas) = self.relay.store.messages(account, "INBOX").unwrap();
            metas
                .iter()
                .map(|m| {
                    self.relay
                        .store
                        .body(account, "INBOX", m.uid)
                        .unwrap()
                        .unwrap()
                })
                .collect()
        }
    }

    /// A structurally valid PGP/MIME message (PKESK then SEIPD) with a line that
    /// starts with a dot in the preamble (dot-stuffing must round-trip it). The
    /// boundary must not occur inside the armor lines (mail-parser finds a short one
    /// like `B` within `-----BEGIN`).
    fn encrypted(from: &str, to: &str, subject: &str) -> Vec<u8> {
        let packets = [
            0xC1, 0x03, 0x03, 0x00, 0x00, 0xD2, 0x05, 0x01, 0xAA, 0xBB, 0xCC, 0xDD,
        ];
        let b64 = base64::engine::general_purpose::STANDARD.encode(packets);
        format!(
            "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"rb-outbound-test-7q3\"\r\n\r\n\
             .a preamble line starting with a dot\r\n\
             --rb-outbound-test-7q3\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n\
             --rb-outbound-test-7q3\r\nContent-Type: application/octet-stream\r\n\r\n\
             -----BEGIN PGP MESSAGE-----\r\n\r\n{b64}\r\n=AAAA\r\n-----END PGP MESSAGE-----\r\n\r\n--rb-outbound-test-7q3--\r\n"
        )
        .into_bytes()
    }

    fn contains(hay: &[u8], needle: &str) -> bool {
        hay.windows(needle.len()).any(|w| w == needle.as_bytes())
    }

    /// Counts TCP connections on `at` and closes each at once (an HTTPS port that
    /// never answers).
    async fn counting_listener(
        at: SocketAddr,
    ) -> (
        Arc<std::sync::atomic::AtomicUsize>,
        tokio::task::JoinHandle<()>,
    ) {
        let l = TcpListener::bind(at).await.unwrap();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = count.clone();
        let task = tokio::spawn(async move {
            for _ in 0..1000 {
                let Ok((s, _)) = l.accept().await else { return };
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(s);
            }
        });
        (count, task)
    }

    fn transport_config(dir: &Path, mail_domain: &str) -> Config {
        crate::testing::config(dir, mail_domain)
    }

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    // ---- SMTP to address literals ------------------------------------------------

    /// OUT-2 literal, OUT-3 (HTTPS first, SMTP next, the SMTP-only mark and its
    /// clearing), OUT-4 (TLS required, certificate not verified), per-recipient RCPT
    /// results; the message arrives in the peer's store byte-exact in its body.
    #[tokio::test]
    async fn smtp_to_an_ip_literal_relay() {
        let peer_ip = ip(2);
        let l = TcpListener::bind((peer_ip, 0)).await.unwrap();
        let smtp_port = l.local_addr().unwrap().port();
        drop(l);
        let mut peer = Peer::start("127.0.0.2", SocketAddr::new(peer_ip, smtp_port), None).await;
        let bob = peer.account("bob").await;
        let carol = peer.account("carol").await;
        let (https_hits, https_task) = counting_listener(SocketAddr::new(peer_ip, 0)).await;
        // The counting listener's port is the HTTPS port of this test.
        https_task.abort();
        let _ = https_task.await;
        let https_port = closed_port(peer_ip).await;
        let (https_hits2, https_task2) =
            counting_listener(SocketAddr::new(peer_ip, https_port)).await;
        drop(https_hits);

        let dir = tempfile::tempdir().unwrap();
        let t = Transport::with_settings(
            &transport_config(dir.path(), "sender.test"),
            settings(smtp_port, https_port),
        )
        .unwrap();
        let sender = "x@[127.0.0.1]";
        let msg = encrypted(sender, &bob, "first");
        let rcpts = vec![bob.clone(), "nobody@[127.0.0.2]".to_string(), carol.clone()];
        let out = tokio::time::timeout(STEP, t.deliver("[127.0.0.2]", sender, &rcpts, &msg))
            .await
            .unwrap();
        assert_eq!(out.accepted, vec![bob.clone(), carol.clone()], "{out:?}");
        assert_eq!(out.via, Some(Via::Smtp));
        assert!(out.temporary.is_empty(), "{out:?}");
        assert_eq!(out.permanent.len(), 1, "{out:?}");
        assert_eq!(out.permanent[0].0, "nobody@[127.0.0.2]");
        assert_eq!(out.permanent[0].1.code, 550);
        assert!(out.permanent[0].1.text.starts_with("5.1.1"), "{out:?}");
        assert_eq!(
            https_hits2.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "HTTPS tried first"
        );
        for account in [&bob, &carol] {
            let inbox = peer.inbox(account);
            assert_eq!(inbox.len(), 1);
            assert!(contains(&inbox[0], "Subject: first"));
            // Dot-stuffing round trip: the preamble line keeps one dot.
            assert!(contains(
                &inbox[0],
                "\r\n.a preamble line starting with a dot\r\n"
            ));
            assert!(!contains(&inbox[0], "..a preamble"));
        }

        // OUT-3: the host took SMTP, so HTTPS is skipped for 30 minutes.
        let msg = encrypted(sender, &bob, "second");
        let out = t
            .deliver("[127.0.0.2]", sender, std::slice::from_ref(&bob), &msg)
            .await;
        assert_eq!(out.accepted, vec![bob.clone()], "{out:?}");
        assert_eq!(
            https_hits2.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "HTTPS skipped"
        );
        assert_eq!(peer.inbox(&bob).len(), 2);

        // The peer goes away: connection refused → temporary 421, the mark is cleared.
        peer.stop().await;
        let out = t
            .deliver("[127.0.0.2]", sender, std::slice::from_ref(&bob), &msg)
            .await;
        assert!(out.accepted.is_empty());
        assert_eq!(out.temporary.len(), 1, "{out:?}");
        let reply = &out.temporary[0].1;
        assert_eq!(reply.code, 421);
        assert!(
            reply
                .text
                .starts_with("Failed to connect to any mail server; last attempt to 127.0.0.2: "),
            "{reply}"
        );
        assert_eq!(
            https_hits2.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "still marked"
        );
        let _ = t
            .deliver("[127.0.0.2]", sender, std::slice::from_ref(&bob), &msg)
            .await;
        assert_eq!(
            https_hits2.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "mark cleared"
        );
        https_task2.abort();
    }

    /// MODE-1: an IP-only relay's connections leave from its own address, so the
    /// peer's IN-4e literal check passes; without the binding the same sender is
    /// refused (the check can fail).
    #[tokio::test]
    async fn ip_only_relay_connects_from_its_address() {
        let peer_ip = ip(2);
        let l = TcpListener::bind((peer_ip, 0)).await.unwrap();
        let smtp_port = l.local_addr().unwrap().port();
        drop(l);
        let peer = Peer::start("127.0.0.2", SocketAddr::new(peer_ip, smtp_port), None).await;
        let bob = peer.account("bob").await;
        let https_port = closed_port(peer_ip).await;
        let sender = "x@[127.0.0.3]";
        let msg = encrypted(sender, &bob, "from three");

        let dir = tempfile::tempdir().unwrap();
        let ip_only = Transport::with_settings(
            &transport_config(dir.path(), "127.0.0.3"),
            settings(smtp_port, https_port),
        )
        .unwrap();
        assert_eq!(ip_only.source, Some(ip(3)));
        assert_eq!(ip_only.helo, "3.0.0.127.in-addr.arpa");
        let out = ip_only
            .deliver("[127.0.0.2]", sender, std::slice::from_ref(&bob), &msg)
            .await;
        assert_eq!(out.accepted, vec![bob.clone()], "{out:?}");
        assert_eq!(peer.inbox(&bob).len(), 1);

        let dir2 = tempfile::tempdir().unwrap();
        let unbound = Transport::with_settings(
            &transport_config(dir2.path(), "sender.test"),
            settings(smtp_port, https_port),
        )
        .unwrap();
        let out = unbound
            .deliver("[127.0.0.2]", sender, std::slice::from_ref(&bob), &msg)
            .await;
        assert_eq!(out.permanent.len(), 1, "{out:?}");
        assert_eq!(
            out.permanent[0].1.to_string(),
            "500 Invalid FROM domain literal: 127.0.0.3 does not match origin IP 127.0.0.1"
        );
        assert_eq!(peer.inbox(&bob).len(), 1);
    }

    /// A scripted SMTP server on `at` for one connection: greets, answers EHLO with
    /// `ehlo`, DATA with 354 and the final dot with 250, QUIT with 221 (and closes),
    /// anything else with 250. Returns its port and, at the end, the lines it read.
    async fn scripted_server(
        at: IpAddr,
        ehlo: &'static str,
    ) -> (u16, tokio::task::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind((at, 0)).await.unwrap();
        let port = l.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            let Ok(Ok((s, _))) = tokio::time::timeout(STEP, l.accept()).await else {
                return seen;
            };
            let mut s = BufReader::new(s);
            let _ = s.write_all(b"220 fake.test ESMTP\r\n").await;
            let mut in_data = false;
            for _ in 0..100 {
                let mut line = String::new();
                match tokio::time::timeout(STEP, s.read_line(&mut line)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => break,
                }
                let cmd = line.trim_end().to_string();
                seen.push(cmd.clone());
                let answer = if cmd.starts_with("EHLO") {
                    ehlo.to_string()
                } else if cmd == "DATA" && !in_data {
                    in_data = true;
                    "354 go on\r\n".to_string()
                } else if in_data {
                    if cmd != "." {
                        continue;
                    }
                    in_data = false;
                    "250 2.0.0 queued\r\n".to_string()
                } else if cmd == "QUIT" {
                    let _ = s.write_all(b"221 bye\r\n").await;
                    break;
                } else {
                    "250 ok\r\n".to_string()
                };
                let _ = s.write_all(answer.as_bytes()).await;
            }
            seen
        });
        (port, task)
    }

    /// OUT-3: a server without STARTTLS is not used (temporary, next host).
    #[tokio::test]
    async fn server_without_starttls_is_a_temporary_failure() {
        let (port, server) =
            scripted_server(ip(2), "250-fake.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n").await;
        let https_port = closed_port(ip(2)).await;
        let dir = tempfile::tempdir().unwrap();
        let t = Transport::with_settings(
            &transport_config(dir.path(), "sender.test"),
            settings(port, https_port),
        )
        .unwrap();
        let out = t
            .deliver(
                "[127.0.0.2]",
                "a@sender.test",
                &list(&["b@[127.0.0.2]"]),
                b"Subject: x\r\n\r\nhi\r\n",
            )
            .await;
        assert!(
            out.accepted.is_empty() && out.permanent.is_empty(),
            "{out:?}"
        );
        assert_eq!(
            out.temporary[0].1.to_string(),
            "421 Failed to connect to any mail server; last attempt to 127.0.0.2: STARTTLS not offered"
        );
        let seen = tokio::time::timeout(STEP, server).await.unwrap().unwrap();
        assert_eq!(
            seen,
            vec!["EHLO sender.test".to_string(), "QUIT".to_string()]
        );
    }

    /// OUT-4: `nauta.cu` gets SMTP without TLS (here through an implicit MX that the
    /// test's DNS points at a scripted server), with PIPELINING.
    #[tokio::test]
    async fn nauta_cu_goes_without_tls() {
        let (port, server) = scripted_server(ip(2), "250-fake.test\r\n250 PIPELINING\r\n").await;
        // No MX for nauta.cu in the test's DNS: the implicit MX is the domain.
        let dns = Dns::start(&["--local=/cu/", "--host-record=nauta.cu,127.0.0.2"]).await;
        let https_port = closed_port(ip(2)).await;
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = transport_config(dir.path(), "sender.test");
        cfg.dns_resolver = vec![dns.addr()];
        let t = Transport::with_settings(&cfg, settings(port, https_port)).unwrap();
        let out = t
            .deliver(
                "nauta.cu",
                "",
                &list(&["b@nauta.cu"]),
                b"Subject: x\r\n\r\n.hi\r\n",
            )
            .await;
        assert_eq!(out.accepted, list(&["b@nauta.cu"]), "{out:?}");
        assert_eq!(out.via, Some(Via::Smtp));
        let seen = tokio::time::timeout(STEP, server).await.unwrap().unwrap();
        // No STARTTLS; one pipelined group; the null sender; the stuffed dot line.
        assert_eq!(seen[0], "EHLO sender.test");
        assert_eq!(seen[1], "MAIL FROM:<>");
        assert_eq!(seen[2], "RCPT TO:<b@nauta.cu>");
        assert_eq!(seen[3], "DATA");
        assert!(seen.contains(&"..hi".to_string()), "{seen:?}");
        assert_eq!(seen.last().map(String::as_str), Some("QUIT"));
    }

    /// OUT-3: nothing listening → temporary 421 naming the host and the error.
    #[tokio::test]
    async fn unreachable_peer_is_temporary() {
        let smtp_port = closed_port(ip(2)).await;
        let https_port = closed_port(ip(2)).await;
        let dir = tempfile::tempdir().unwrap();
        let t = Transport::with_settings(
            &transport_config(dir.path(), "sender.test"),
            settings(smtp_port, https_port),
        )
        .unwrap();
        let rcpts = list(&["a@[127.0.0.2]", "b@[127.0.0.2]"]);
        let out = t
            .deliver("[127.0.0.2]", "x@sender.test", &rcpts, b"x")
            .await;
        assert_eq!(out.temporary.len(), 2, "{out:?}");
        let reply = &out.temporary[0].1;
        assert_eq!(reply.code, 421);
        assert!(
            reply.text.starts_with(
                "Failed to connect to any mail server; last attempt to 127.0.0.2: 127.0.0.2:"
            ),
            "{reply}"
        );
        assert!(reply.text.contains("refused"), "{reply}");
        // Issue 18: what the operator reads of it.
        assert_eq!(super::super::reason::plain(reply), "connection refused");
        // Bad addresses never reach a peer.
        let out = t
            .deliver("[127.0.0.2]", "x y@sender.test", &rcpts, b"x")
            .await;
        assert_eq!(out.permanent.len(), 2);
        assert_eq!(out.permanent[0].1.code, 553);
        let out = t
            .deliver(
                "[127.0.0.2]",
                "",
                &list(&["a@[127.0.0.2]", "<b>@[127.0.0.2]"]),
                b"x",
            )
            .await;
        assert_eq!(
            out.permanent,
            vec![(
                "<b>@[127.0.0.2]".to_string(),
                SmtpReply::new(553, "5.1.3 Bad recipient address syntax")
            )]
        );
        assert_eq!(out.temporary.len(), 1);
    }

    // ---- MX resolution -----------------------------------------------------------

    /// OUT-2 with a real DNS server: MX order, null MX, NXDOMAIN, implicit MX, other
    /// DNS errors, address records of both families, no negative caching.
    #[tokio::test]
    async fn mx_resolution() {
        let records = [
            "--mx-host=order.test,mxb.order.test,20",
            "--mx-host=order.test,mxa.order.test,10",
            "--mx-host=order.test,mxc.order.test,30",
            "--mx-host=null.test,.,0",
            "--host-record=nomx.test,127.0.0.5",
            "--host-record=mxa.order.test,127.0.0.6,::1",
        ];
        let dns = Dns::start(&records).await;
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = transport_config(dir.path(), "sender.test");
        cfg.dns_resolver = vec![dns.addr()];
        let router = Router::new(&cfg).unwrap();
        let name = |s: &str| Hop::Name(s.to_string());
        assert_eq!(
            router.route("Order.Test").await,
            Route::Hops(vec![
                name("mxa.order.test"),
                name("mxb.order.test"),
                name("mxc.order.test")
            ])
        );
        assert_eq!(
            router.route("null.test").await,
            Route::Fail {
                reply: SmtpReply::new(
                    556,
                    "5.1.10 Permanent failure: Recipient address has null MX"
                ),
                permanent: true
            }
        );
        assert_eq!(
            router.route("nothere.test").await,
            Route::Fail {
                reply: SmtpReply::new(512, "Domain nothere.test does not exist"),
                permanent: true
            }
        );
        assert_eq!(
            router.route("nomx.test").await,
            Route::Hops(vec![name("nomx.test")])
        );
        // dnsmasq refuses names outside its local zone: another DNS error.
        assert_eq!(
            router.route("x.other").await,
            Route::Fail {
                reply: SmtpReply::new(421, "DNS resolution failed for x.other"),
                permanent: false
            }
        );
        assert_eq!(
            router.route("[127.0.0.9]").await,
            Route::Hops(vec![Hop::Literal(ip(9))])
        );
        let mut addrs = router.addresses("mxa.order.test").await.unwrap();
        addrs.sort();
        assert_eq!(
            addrs,
            vec![ip(6), IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)]
        );
        assert!(router.addresses("mxb.order.test").await.is_err());
        // The same attempt through the transport: permanent for every recipient.
        let t = Transport::with_settings(&cfg, settings(1, 1)).unwrap();
        let out = t
            .deliver(
                "null.test",
                "a@sender.test",
                &list(&["x@null.test", "y@null.test"]),
                b"x",
            )
            .await;
        assert_eq!(out.permanent.len(), 2);
        assert_eq!(out.permanent[1].1.code, 556);
        let out = t
            .deliver(
                "nothere.test",
                "a@sender.test",
                &list(&["x@nothere.test"]),
                b"x",
            )
            .await;
        assert_eq!(out.permanent[0].1.code, 512);

        // No negative caching: the name appears, the next lookup sees it.
        let port = dns.port;
        drop(dns);
        let _dns = Dns::start_on(port, &["--mx-host=nothere.test,mx.nothere.test,5"]).await;
        assert_eq!(
            router.route("nothere.test").await,
            Route::Hops(vec![name("mx.nothere.test")])
        );
    }

    // ---- verified TLS through MX records -----------------------------------------

    /// OUT-2..4 for a DNS domain: the first MX does not answer, the second is a real
    /// relay with a certificate for its MX name from the test CA (trusted through
    /// `tls_extra_roots`); a transport without that root, or an MX name the
    /// certificate does not cover, fails TLS (temporary).
    #[tokio::test]
    async fn verified_starttls_via_mx() {
        let l = TcpListener::bind((ip(2), 0)).await.unwrap();
        let smtp_port = l.local_addr().unwrap().port();
        drop(l);
        let dns = Dns::start(&[
            "--mx-host=dest.test,mx1.dest.test,10",
            "--mx-host=dest.test,mx2.dest.test,20",
            "--host-record=mx1.dest.test,127.0.0.4",
            "--host-record=mx2.dest.test,127.0.0.2",
            "--mx-host=wrong.test,mxw.wrong.test,10",
            "--host-record=mxw.wrong.test,127.0.0.2",
        ])
        .await;
        let certs = tempfile::tempdir().unwrap();
        let ca = Ca::new();
        let leaf = ca.leaf(certs.path(), &["mx2.dest.test", "dest.test"]);
        let peer = Peer::start("dest.test", SocketAddr::new(ip(2), smtp_port), Some(leaf)).await;
        let bob = peer.account("bob").await;
        assert_eq!(bob, "bob@dest.test");
        let https_port = closed_port(ip(2)).await;

        let dir = tempfile::tempdir().unwrap();
        let mut cfg = transport_config(dir.path(), "sender.test");
        cfg.dns_resolver = vec![dns.addr()];
        cfg.tls_extra_roots = Some(ca.write(certs.path()));
        let t = Transport::with_settings(&cfg, settings(smtp_port, https_port)).unwrap();
        let sender = "x@[127.0.0.1]";
        let msg = encrypted(sender, &bob, "via mx2");
        let out = t
            .deliver("dest.test", sender, std::slice::from_ref(&bob), &msg)
            .await;
        assert_eq!(out.accepted, vec![bob.clone()], "{out:?}");
        assert_eq!(peer.inbox(&bob).len(), 1);
        assert!(contains(&peer.inbox(&bob)[0], "Subject: via mx2"));

        // The name check: mxw.wrong.test is not in the certificate.
        let out = t
            .deliver("wrong.test", sender, &list(&["bob@wrong.test"]), &msg)
            .await;
        assert_eq!(out.temporary.len(), 1, "{out:?}");
        let text = &out.temporary[0].1.text;
        assert!(
            text.contains("last attempt to mxw.wrong.test: TLS handshake failed"),
            "{text}"
        );
        assert_eq!(
            super::super::reason::plain(&out.temporary[0].1),
            "TLS failed"
        );

        // Without the test CA the chain does not verify.
        let dir2 = tempfile::tempdir().unwrap();
        let mut cfg2 = transport_config(dir2.path(), "sender.test");
        cfg2.dns_resolver = vec![dns.addr()];
        let strict = Transport::with_settings(&cfg2, settings(smtp_port, https_port)).unwrap();
        let out = strict
            .deliver("dest.test", sender, std::slice::from_ref(&bob), &msg)
            .await;
        assert_eq!(out.temporary.len(), 1, "{out:?}");
        let text = &out.temporary[0].1.text;
        assert!(
            text.contains("last attempt to mx2.dest.test: TLS handshake failed"),
            "{text}"
        );
        assert_eq!(peer.inbox(&bob).len(), 1);
    }

    // ---- HTTPS /mxdeliv ----------------------------------------------------------

    /// What the fake `/mxdeliv` peer saw of one request.
    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        path: String,
        host: String,
        from: Option<String>,
        to: Vec<String>,
        body: Vec<u8>,
        header_names: Vec<String>,
    }

    /// An HTTPS server on `at` with a certificate for `names` from `ca`, answering
    /// every request with (`status`, `body`) and recording it.
    async fn fake_mxdeliv(
        at: SocketAddr,
        ca: &Ca,
        dir: &Path,
        names: &[&str],
        status: u16,
        body: &'static str,
    ) -> (Arc<Mutex<Vec<Seen>>>, tokio::task::JoinHandle<()>) {
        use hyper::service::service_fn;
        use rustls_pki_types::pem::PemObject;
        let (cert, key) = ca.leaf(dir, names);
        let chain: Vec<rustls_pki_types::CertificateDer<'static>> =
            rustls_pki_types::CertificateDer::pem_file_iter(&cert)
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&key).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = TcpListener::bind(at).await.unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            for _ in 0..100 {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let Ok(tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let log = log.clone();
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let headers = req.headers().clone();
                        let all = |name: &str| -> Vec<String> {
                            headers
                                .get_all(name)
                                .iter()
                                .map(|v| v.to_str().unwrap().to_string())
                                .collect()
                        };
                        let entry = Seen {
                            method: req.method().to_string(),
                            path: req.uri().path().to_string(),
                            host: all("host").join(","),
                            from: all("x-mail-from").first().cloned(),
                            to: all("x-mail-to"),
                            header_names: headers.keys().map(|k| k.to_string()).collect(),
                            body: Vec::new(),
                        };
                        let bytes = req.into_body().collect().await.unwrap().to_bytes();
                        log.lock().unwrap().push(Seen {
                            body: bytes.to_vec(),
                            ..entry
                        });
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .body(http_body_util::Full::new(Bytes::from_static(
                                    body.as_bytes(),
                                )))
                                .unwrap(),
                        )
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        (seen, task)
    }

    use http_body_util::BodyExt;

    /// OUT-3 step 1: `POST https://<mx>/mxdeliv` with the envelope headers and the
    /// raw message, certificate verified against the MX name; 2xx delivers.
    #[tokio::test]
    async fn https_mxdeliv_delivers() {
        let dns = Dns::start(&[
            "--mx-host=web.test,mx1.web.test,10",
            "--host-record=mx1.web.test,127.0.0.2",
        ])
        .await;
        let certs = tempfile::tempdir().unwrap();
        let ca = Ca::new();
        let https_port = closed_port(ip(2)).await;
        let (seen, task) = fake_mxdeliv(
            SocketAddr::new(ip(2), https_port),
            &ca,
            certs.path(),
            &["mx1.web.test"],
            200,
            "250 OK\r\n",
        )
        .await;
        let smtp_port = closed_port(ip(2)).await;
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = transport_config(dir.path(), "sender.test");
        cfg.dns_resolver = vec![dns.addr()];
        cfg.tls_extra_roots = Some(ca.write(certs.path()));
        let t = Transport::with_settings(&cfg, settings(smtp_port, https_port)).unwrap();
        let rcpts = list(&["a@web.test", "b@web.test"]);
        let body = b"From: s@sender.test\r\nSubject: over https\r\n\r\n.body\r\n".to_vec();
        let out = t.deliver("web.test", "s@sender.test", &rcpts, &body).await;
        assert_eq!(out.accepted, rcpts, "{out:?}");
        assert_eq!(out.via, Some(Via::Https));
        // The bounce sender `<>`: no X-MAIL-FROM at all.
        let out = t.deliver("web.test", "", &rcpts[..1], &body).await;
        assert_eq!(out.via, Some(Via::Https));
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].method, "POST");
        assert_eq!(seen[0].path, "/mxdeliv");
        assert_eq!(seen[0].host, format!("mx1.web.test:{https_port}"));
        assert_eq!(seen[0].from.as_deref(), Some("s@sender.test"));
        assert_eq!(seen[0].to, rcpts);
        assert_eq!(seen[0].body, body, "raw message, not dot-stuffed");
        // Nothing but HTTP's own headers and the envelope (no client address).
        let mut names = seen[0].header_names.clone();
        names.sort();
        assert_eq!(
            names,
            vec!["content-length", "host", "x-mail-from", "x-mail-to"]
        );
        assert_eq!(seen[1].from, None);
        assert_eq!(seen[1].to, rcpts[..1].to_vec());
        task.abort();
    }

    /// A 400 with an SMTP reply falls through to SMTP (upstream); with SMTP
    /// unreachable a 5xx reply is the result for a single recipient, while several
    /// recipients stay temporary. A certificate for another name is not trusted.
    #[tokio::test]
    async fn https_refusal_falls_through_to_smtp() {
        let certs = tempfile::tempdir().unwrap();
        let ca = Ca::new();
        let dns = Dns::start(&[
            "--mx-host=web.test,mx1.web.test,10",
            "--host-record=mx1.web.test,127.0.0.2",
            "--mx-host=other.test,mx.other.test,10",
            "--host-record=mx.other.test,127.0.0.2",
        ])
        .await;
        let https_port = closed_port(ip(2)).await;
        let (seen, task) = fake_mxdeliv(
            SocketAddr::new(ip(2), https_port),
            &ca,
            certs.path(),
            &["mx1.web.test"],
            400,
            "550 5.1.1 <a@web.test>: Recipient address rejected",
        )
        .await;
        let (smtp_port, server) = scripted_server(ip(2), "250-fake.test\r\n250 STARTTLS\r\n").await;
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = transport_config(dir.path(), "sender.test");
        cfg.dns_resolver = vec![dns.addr()];
        cfg.tls_extra_roots = Some(ca.write(certs.path()));
        let t = Transport::with_settings(&cfg, settings(smtp_port, https_port)).unwrap();
        // SMTP was tried after the refusal: the scripted server saw EHLO and STARTTLS
        // (its 250 to STARTTLS is not 220: the host counts as unreachable).
        let out = t
            .deliver("web.test", "s@sender.test", &list(&["a@web.test"]), b"x")
            .await;
        assert_eq!(
            out.permanent,
            vec![(
                "a@web.test".to_string(),
                SmtpReply::new(550, "5.1.1 <a@web.test>: Recipient address rejected")
            )],
            "{out:?}"
        );
        let smtp_seen = tokio::time::timeout(STEP, server).await.unwrap().unwrap();
        assert_eq!(
            smtp_seen[..2],
            ["EHLO sender.test".to_string(), "STARTTLS".to_string()]
        );
        // Several recipients: not known whom the refusal concerns.
        let out = t
            .deliver(
                "web.test",
                "s@sender.test",
                &list(&["a@web.test", "b@web.test"]),
                b"x",
            )
            .await;
        assert_eq!(out.temporary.len(), 2, "{out:?}");
        assert_eq!(out.temporary[0].1.code, 421);
        assert_eq!(seen.lock().unwrap().len(), 2);
        // The certificate names mx1.web.test, not mx.other.test: no request is made.
        let out = t
            .deliver(
                "other.test",
                "s@sender.test",
                &list(&["a@other.test"]),
                b"x",
            )
            .await;
        assert_eq!(out.temporary.len(), 1, "{out:?}");
        assert_eq!(seen.lock().unwrap().len(), 2);
        task.abort();
    }

    /// OUT-4: an IP-literal destination's HTTPS certificate is not verified (a
    /// certificate for an unrelated name from an untrusted CA is fine).
    #[tokio::test]
    async fn https_to_ip_literal_accepts_any_certificate() {
        let certs = tempfile::tempdir().unwrap();
        let ca = Ca::new();
        let https_port = closed_port(ip(2)).await;
        let (seen, task) = fake_mxdeliv(
            SocketAddr::new(ip(2), https_port),
            &ca,
            certs.path(),
            &["unrelated.test"],
            200,
            "",
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let t = Transport::with_settings(
            &transport_config(dir.path(), "127.0.0.1"),
            settings(1, https_port),
        )
        .unwrap();
        let out = t
            .deliver(
                "[127.0.0.2]",
                "x@[127.0.0.1]",
                &list(&["b@[127.0.0.2]"]),
                b"x",
            )
            .await;
        assert_eq!(out.via, Some(Via::Https), "{out:?}");
        assert_eq!(
            seen.lock().unwrap()[0].host,
            format!("127.0.0.2:{https_port}")
        );
        task.abort();
    }

    /// OUT-3 step 1 against a real relay's `/mxdeliv` (IN-6) on an IP-literal
    /// destination: delivered over HTTPS (SMTP closed), the message in the store; the
    /// peer's refusal of an unknown user (400 with `550 5.1.1`) falls through to SMTP,
    /// which is closed, so that reply becomes the permanent result.
    #[tokio::test]
    async fn https_to_a_real_relay() {
        let peer_ip = ip(2);
        let peer = Peer::start("127.0.0.2", SocketAddr::new(peer_ip, 0), None).await;
        let bob = peer.account("bob").await;
        let listener = TcpListener::bind((peer_ip, 0)).await.unwrap();
        let https_port = listener.local_addr().unwrap().port();
        let relay = peer.relay.clone();
        let server = tokio::spawn(async move {
            for _ in 0..100 {
                let Ok((tcp, client)) = listener.accept().await else {
                    return;
                };
                let relay = relay.clone();
                tokio::spawn(async move {
                    let acceptor = tokio_rustls::TlsAcceptor::from(relay.tls.tls12.clone());
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        crate::http::serve_https(relay, Conn::Tls(Box::new(tls)), client).await;
                    }
                });
            }
        });
        let smtp_port = closed_port(peer_ip).await;
        let dir = tempfile::tempdir().unwrap();
        let t = Transport::with_settings(
            &transport_config(dir.path(), "127.0.0.1"),
            settings(smtp_port, https_port),
        )
        .unwrap();
        let sender = "x@[127.0.0.1]";
        let msg = encrypted(sender, &bob, "over mxdeliv");
        let out = t
            .deliver("[127.0.0.2]", sender, std::slice::from_ref(&bob), &msg)
            .await;
        assert_eq!(out.accepted, vec![bob.clone()], "{out:?}");
        assert_eq!(out.via, Some(Via::Https));
        let inbox = peer.inbox(&bob);
        assert_eq!(inbox.len(), 1);
        assert!(contains(&inbox[0], "Subject: over mxdeliv"));
        assert!(contains(
            &inbox[0],
            "\r\n.a preamble line starting with a dot\r\n"
        ));

        let nobody = "nobody@[127.0.0.2]".to_string();
        let out = t
            .deliver("[127.0.0.2]", sender, std::slice::from_ref(&nobody), &msg)
            .await;
        assert!(out.accepted.is_empty(), "{out:?}");
        assert_eq!(out.permanent.len(), 1, "{out:?}");
        assert_eq!(out.permanent[0].1.code, 550, "{out:?}");
        assert!(out.permanent[0].1.text.starts_with("5.1.1"), "{out:?}");
        server.abort();
    }

    /// Happy Eyeballs: a refusing IPv6 address does not keep the IPv4 one from
    /// being used, and the order starts with IPv6 (RFC 8305).
    #[tokio::test]
    async fn connect_races_address_families() {
        let l = TcpListener::bind((ip(2), 0)).await.unwrap();
        let port = l.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let t = Transport::with_settings(
            &transport_config(dir.path(), "sender.test"),
            settings(port, port),
        )
        .unwrap();
        let v6 = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
        let stream = tokio::time::timeout(STEP, t.connect(&[ip(2), v6], port))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stream.peer_addr().unwrap(), SocketAddr::new(ip(2), port));
        let err = t
            .connect(&[v6], closed_port(ip(2)).await)
            .await
            .unwrap_err();
        assert!(err.starts_with("[::1]:"), "{err}");
        // IP-only relays never use IPv6 (their source address is IPv4).
        let dir2 = tempfile::tempdir().unwrap();
        let ip_only = Transport::with_settings(
            &transport_config(dir2.path(), "127.0.0.1"),
            settings(port, port),
        )
        .unwrap();
        assert!(!ip_only.ipv6);
        assert_eq!(
            ip_only.addresses(&Hop::Literal(v6)).await,
            Err("no usable address".to_string())
        );
    }

    #[test]
    fn policies_and_helpers() {
        assert_eq!(tls_policy("[127.0.0.1]"), TlsPolicy::AnyCertificate);
        assert_eq!(tls_policy("_relay.test"), TlsPolicy::AnyCertificate);
        assert_eq!(tls_policy("nauta.cu"), TlsPolicy::Plain);
        assert_eq!(tls_policy("NAUTA.CU"), TlsPolicy::Plain);
        assert_eq!(tls_policy("mail.nauta.cu"), TlsPolicy::Verify);
        assert_eq!(tls_policy("example.org"), TlsPolicy::Verify);
        let v6: IpAddr = "::1".parse().unwrap();
        let v6b: IpAddr = "::2".parse().unwrap();
        assert_eq!(
            interleave(&[ip(1), ip(2), v6, v6b]),
            vec![v6, ip(1), v6b, ip(2)]
        );
        assert_eq!(interleave(&[ip(1)]), vec![ip(1)]);
        assert!(bad_address("a b@x") && bad_address("") && bad_address("a@x\r\n"));
        assert!(!bad_address("a@[127.0.0.1]") && !bad_address("ü@example.org"));
        let o = by_reply(
            &list(&["a", "b", "c"]),
            vec![
                SmtpReply::new(250, "ok"),
                SmtpReply::new(452, "later"),
                SmtpReply::new(550, "no"),
            ],
        );
        assert_eq!(o.accepted, list(&["a"]));
        assert_eq!(o.temporary[0].0, "b");
        assert_eq!(o.permanent[0].0, "c");
        assert_eq!(o.via, Some(Via::Smtp));
    }

    #[test]
    fn extra_roots_are_loaded() {
        // The loader itself is tested in `tls::roots`.
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = transport_config(dir.path(), "sender.test");
        cfg.tls_extra_roots = Some(Ca::new().write(dir.path()));
        assert!(Transport::new(&cfg).is_ok());
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing").unwrap();
        cfg.tls_extra_roots = Some(empty);
        assert!(matches!(
            Transport::new(&cfg),
            Err(TransportError::Tls(crate::tls::TlsError::Roots(_)))
        ));
        cfg.tls_extra_roots = Some(dir.path().join("missing.pem"));
        assert!(Transport::new(&cfg).is_err());
    }
}
