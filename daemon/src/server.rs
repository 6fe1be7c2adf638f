//! The running relay: the shared context every session gets, and the listeners that
//! accept connections per service with their connection limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::admission::{MAX_REFUSING, Pool, Reason, Ticket};
use crate::auth::Auth;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::events::Events;
use crate::net::Conn;
use crate::policy::ratelimit::{Quota, RateLimiter};
use crate::store::Store;
use crate::tls::Tls;

/// Name of the store file inside the data directory.
pub const STORE_FILE: &str = crate::store::STORE_FILE;

/// How long a client may take for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything a session needs, shared by all of them.
pub struct Relay {
    pub config: Config,
    pub clock: Arc<dyn Clock>,
    pub store: Store,
    pub auth: Auth,
    pub events: Events,
    pub tls: Tls,
    /// SUB-4: messages per sender.
    pub send_limiter: RateLimiter<String>,
    /// Wakes the push notifier when deliveries created jobs (keeps one permit when the
    /// notifier is busy, so no wake-up is lost).
    pub push_wake: tokio::sync::Notify,
    /// NEW-3: `/new` requests per client IP.
    pub new_account_limiter: Arc<RateLimiter<std::net::IpAddr>>,
    /// SUB-12: this relay's DKIM signer (`None` in IP-only mode).
    pub dkim: Option<crate::dkim::Signer>,
    /// IN-4e, IN-5: DKIM verification of incoming mail.
    pub dkim_verifier: Arc<crate::dkim::Verifier>,
    /// OUT-2..5: how the outbound scheduler reaches peers.
    pub outbound: crate::outbound::Transport,
    /// Wakes the outbound scheduler when deliveries queued rows.
    pub outbound_wake: tokio::sync::Notify,
    /// RT-1..3: whether TURN runs and on which port (for the METADATA key).
    pub turn: crate::turn::Status,
    /// ACME: pending challenges and certificate requests.
    pub acme: crate::acme::Acme,
    /// The admin pages (setup wizard, status), mounted at `/admin` on 443 once the
    /// appliance is attached (`crate::appliance`); port 80 redirects them to HTTPS.
    pub admin: std::sync::OnceLock<axum::Router>,
    /// Memory for messages in transit (`max_message_memory`).
    pub memory: crate::memory::Budget,
    /// Issue 17, `relaybox move`: whether this relay moves to another machine.
    pub moving: Arc<crate::moving::Moving>,
    /// Issue 20: the tunnel to a front server (which front, the link, the connections
    /// that came through it; idle without a front).
    pub front: Arc<crate::front::home::Tunnel>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("{0}")]
    Dkim(#[from] crate::dkim::DkimError),
    #[error("outbound: {0}")]
    Outbound(#[from] crate::outbound::transport::TransportError),
    #[error("front server: {0}")]
    Front(String),
    #[error("cannot listen on {addr} ({service}): {err}")]
    Bind {
        addr: SocketAddr,
        service: &'static str,
        err: std::io::Error,
    },
}

impl Relay {
    /// Open the store and certificates in the configured data directory.
    pub fn open(config: Config) -> Result<Arc<Relay>, StartError> {
        Self::open_with_clock(config, Arc::new(SystemClock))
    }

    pub fn open_with_clock(
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Relay>, StartError> {
        crate::private::dir(&config.data_dir)
            .map_err(|e| StartError::DataDir(config.data_dir.display().to_string(), e))?;
        let store =
            Store::open_with_cache(&config.data_dir.join(STORE_FILE), config.store_cache_size)?;
        let tls = Tls::new(crate::tls::initial_certificate(&config, clock.unix_now())?)?;
        let moving = Arc::new(crate::moving::Moving::new(&config.moved_to));
        let auth = Auth::new(store.clone(), &config, clock.clone()).with_moving(moving.clone());
        let send_limiter = RateLimiter::new(Quota::new(
            config.max_user_send_per_minute,
            Duration::from_secs(60),
            config.max_user_send_burst_size,
        ));
        let dkim = crate::dkim::Signer::load_or_create(&config, &store)?;
        // `relaybox dns` prints this copy while the relay holds the store (§18).
        if let Some(signer) = &dkim
            && let Err(e) = crate::zone::write_zone_file(&config, signer)
        {
            tracing::warn!(
                "cannot write {}: {e}",
                crate::zone::zone_file_path(&config).display()
            );
        }
        // A bad `<data_dir>/appversions.json` is reported at start, not at the first
        // client that asks (`crate::appversions`).
        let _ = crate::appversions::value(&config.data_dir);
        let dkim_verifier = crate::dkim::Verifier::new(&config)?;
        let front = Arc::new(crate::front::home::Tunnel::new(front_target(&config)));
        let outbound = crate::outbound::Transport::new(&config)?
            .moving(moving.clone())
            .via_front(front.clone());
        let relay = Arc::new(Relay {
            moving,
            front,
            dkim,
            dkim_verifier,
            outbound,
            outbound_wake: tokio::sync::Notify::new(),
            turn: crate::turn::Status::default(),
            acme: crate::acme::Acme::new(&config, clock.unix_now()),
            admin: std::sync::OnceLock::new(),
            memory: crate::memory::Budget::new(config.max_message_memory),
            config,
            clock,
            store,
            auth,
            events: Events::new(),
            tls,
            send_limiter,
            push_wake: tokio::sync::Notify::new(),
            new_account_limiter: Arc::new(RateLimiter::new(crate::http::new_account_quota())),
        });
        subscribe_to_deliveries(&relay);
        Ok(relay)
    }

    /// The handles a delivery uses (`crate::delivery`).
    pub fn delivery(&self) -> crate::delivery::Handles<'_> {
        crate::delivery::Handles {
            config: &self.config,
            store: &self.store,
            clock: &*self.clock,
            events: &self.events,
            dkim: self.dkim.as_ref(),
            dkim_verifier: &self.dkim_verifier,
            moving: &self.moving,
        }
    }
}

/// IN-8: the work after a delivery's commit, one task per subscriber of the
/// [`Delivered`](crate::events::Delivered) event: wake the push notifier (PUSH-2) and the
/// outbound scheduler (OUT-1) at once, and trim the mailboxes that got a copy (QUOTA-3),
/// off the path of the `250`. Subscribed before the relay is handed out, so no delivery
/// is missed; the tasks hold the relay weakly and end with it. Outside a Tokio runtime
/// (a relay opened for a synchronous test) nothing is subscribed.
fn subscribe_to_deliveries(relay: &Arc<Relay>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (mut push, mut outbound, mut trim) = (
        relay.events.deliveries(),
        relay.events.deliveries(),
        relay.events.deliveries(),
    );
    let weak = Arc::downgrade(relay);
    runtime.spawn(async move {
        while let Some(d) = push.next().await {
            match weak.upgrade() {
                Some(relay) if !d.accounts.is_empty() => relay.push_wake.notify_one(),
                Some(_) => {}
                None => break,
            }
        }
    });
    let weak = Arc::downgrade(relay);
    runtime.spawn(async move {
        while let Some(d) = outbound.next().await {
            match weak.upgrade() {
                Some(relay) if d.queued => relay.outbound_wake.notify_one(),
                Some(_) => {}
                None => break,
            }
        }
    });
    let weak = Arc::downgrade(relay);
    runtime.spawn(async move {
        while let Some(d) = trim.next().await {
            let Some(relay) = weak.upgrade() else { break };
            for account in &d.accounts {
                if let Err(e) =
                    crate::expire::trim_after_delivery(&relay.expire_handles(), account).await
                {
                    tracing::warn!("quota trim failed: {e}");
                }
            }
        }
    });
}

/// The services a listener can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// 25: SMTP from other MTAs.
    Mx,
    /// 587: submission, STARTTLS.
    Submission,
    /// 465: submission, implicit TLS.
    Submissions,
    /// 143: IMAP, STARTTLS.
    Imap,
    /// 993: IMAP, implicit TLS.
    Imaps,
    /// 443: HTTPS.
    Https,
    /// 80: HTTP redirect.
    Http,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Mx => "smtp",
            Service::Submission => "submission",
            Service::Submissions => "submissions",
            Service::Imap => "imap",
            Service::Imaps => "imaps",
            Service::Https => "https",
            Service::Http => "http",
        }
    }
}

/// The handles each service and protocol uses, lent from the relay (issue 15: no
/// module below the assembly takes the whole `Relay`).
impl Relay {
    /// TURN (RT-1..3): the server task and the METADATA entry.
    pub fn turn_handles(&self) -> crate::turn::Handles<'_> {
        crate::turn::Handles {
            config: &self.config,
            store: &self.store,
            clock: &self.clock,
            status: &self.turn,
        }
    }

    /// The daily expiry (EXP-1..5) and the quota trim after deliveries (QUOTA-3).
    pub fn expire_handles(&self) -> crate::expire::Handles<'_> {
        crate::expire::Handles {
            config: &self.config,
            store: &self.store,
            clock: self.clock.as_ref(),
            events: &self.events,
            auth: &self.auth,
        }
    }

    /// The outbound scheduler (OUT-1..7).
    pub fn outbound_handles(&self) -> crate::outbound::Handles<'_> {
        crate::outbound::Handles {
            config: &self.config,
            store: &self.store,
            clock: self.clock.as_ref(),
            transport: &self.outbound,
            wake: &self.outbound_wake,
            delivery: self.delivery(),
        }
    }

    /// IMAP sessions (143, 993, IMAP over 443).
    pub fn imap_handles(&self) -> crate::imap::Handles<'_> {
        crate::imap::Handles {
            config: &self.config,
            store: &self.store,
            clock: &self.clock,
            events: &self.events,
            auth: &self.auth,
            tls: &self.tls,
            memory: &self.memory,
            turn: self.turn_handles(),
            moving: &self.moving,
        }
    }

    /// ACME certificates (TLS-1, TLS-5): the renewal task, requests from the pages.
    /// Issue 20: use the front `target` from now on (`None`: none; after a pairing or when
    /// moving off the front). The link and the outbound path follow at once; the caller
    /// keeps the choice in chatmail.ini ([`crate::front::pair::save`]).
    pub fn use_front(&self, target: Option<crate::front::home::FrontTarget>) {
        self.front.set_target(target);
    }

    pub fn acme_handles(&self) -> crate::acme::Handles<'_> {
        crate::acme::Handles {
            config: &self.config,
            clock: self.clock.as_ref(),
            tls: &self.tls,
            acme: &self.acme,
        }
    }

    /// The update agent's health check of a boot (OTA-5, BOOT-6).
    pub fn update_handles(&self) -> crate::update::health::Handles<'_> {
        crate::update::health::Handles {
            config: &self.config,
            store: &self.store,
            clock: self.clock.as_ref(),
            auth: &self.auth,
            tls: &self.tls,
            delivery: self.delivery(),
        }
    }

    /// The push notifier (PUSH-2..7).
    pub fn push_handles(&self) -> crate::push::Handles<'_> {
        crate::push::Handles {
            config: &self.config,
            store: &self.store,
            clock: &self.clock,
            wake: &self.push_wake,
        }
    }

    /// SMTP sessions (25, 587, 465, submission over 443).
    pub fn smtp_handles(&self) -> crate::smtp::Handles<'_> {
        crate::smtp::Handles {
            config: &self.config,
            clock: self.clock.as_ref(),
            auth: &self.auth,
            tls: &self.tls,
            memory: &self.memory,
            send_limiter: &self.send_limiter,
            delivery: self.delivery(),
        }
    }
}

/// The HTTP handlers' view of the relay (with `web`, `iroh`, `mxdeliv`).
impl crate::http::Handles for Relay {
    fn config(&self) -> &Config {
        &self.config
    }
    fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }
    fn auth(&self) -> &Auth {
        &self.auth
    }
    fn acme(&self) -> &crate::acme::Acme {
        &self.acme
    }
    fn memory(&self) -> &crate::memory::Budget {
        &self.memory
    }
    fn new_account_limiter(&self) -> Arc<RateLimiter<std::net::IpAddr>> {
        self.new_account_limiter.clone()
    }
    fn admin(&self) -> Option<axum::Router> {
        self.admin.get().cloned()
    }
    fn delivery(&self) -> crate::delivery::Handles<'_> {
        Relay::delivery(self)
    }
}

/// The front of the config (`front` with `front_pin`), if any.
pub fn front_target(config: &Config) -> Option<crate::front::home::FrontTarget> {
    let pin = config.front_pin?;
    (!config.front.is_empty()).then(|| crate::front::home::FrontTarget {
        front: config.front.clone(),
        pin,
    })
}

/// Bind every configured listener (failing start-up with the address when one cannot
/// be bound), then serve until the process ends.
pub async fn serve(relay: Arc<Relay>) -> Result<(), StartError> {
    let l = &relay.config.listen;
    // Issue 13: the caps must fit the open-file limit.
    let caps = crate::fdlimit::fit_caps(&relay.config, crate::fdlimit::soft_limit());
    let per_address = relay.config.connections.per_address;
    let pool = |cap: usize| Pool::new(cap, per_address);
    let imap = pool(caps.imap);
    let plan: Vec<(Service, &Vec<SocketAddr>, Arc<Pool>)> = vec![
        (Service::Mx, &l.smtp, pool(caps.smtp)),
        (Service::Submission, &l.submission, pool(caps.smtp)),
        (Service::Submissions, &l.submissions, pool(caps.smtp)),
        (Service::Imap, &l.imap, imap.clone()),
        (Service::Imaps, &l.imaps, imap.clone()),
        (Service::Https, &l.https, pool(caps.https)),
        (Service::Http, &l.http, pool(caps.http)),
    ];
    let mut listeners = Vec::new();
    for (service, addrs, slots) in plan {
        for addr in addrs {
            let listener = crate::net::bind(*addr).map_err(|err| StartError::Bind {
                addr: *addr,
                service: service.name(),
                err,
            })?;
            tracing::info!("{} listening on {}", service.name(), addr);
            listeners.push((service, listener, slots.clone()));
        }
    }
    // PORT-2: sessions the 443 multiplexer hands to IMAP share the IMAP limit; its
    // submission sessions get a limit of their own, like each submission port.
    let mux = Arc::new(MuxSlots {
        imap: imap.clone(),
        submission: pool(caps.smtp),
    });
    // Issue 20: the public ports served by a front server, through the tunnel: one
    // internal loopback listener per service, with the same limits, opened once a front is
    // set; the link task always runs, so that a pairing takes the link up without a
    // restart ([`Relay::use_front`]).
    if !relay.config.front.is_empty() && relay.config.front_pin.is_none() {
        return Err(StartError::Front(
            "`front` needs `front_pin` (the front server's tunnel certificate)".into(),
        ));
    }
    let internal = {
        let (relay, mux) = (relay.clone(), mux.clone());
        let pools = [
            (Service::Mx, 25, pool(caps.smtp)),
            (Service::Submission, 587, pool(caps.smtp)),
            (Service::Submissions, 465, pool(caps.smtp)),
            (Service::Imap, 143, imap.clone()),
            (Service::Imaps, 993, imap.clone()),
            (Service::Https, 443, pool(caps.https)),
            (Service::Http, 80, pool(caps.http)),
        ];
        // Opened when a front is first set (at start or by a pairing); they then live as
        // long as the process.
        move || -> std::io::Result<std::collections::HashMap<u16, SocketAddr>> {
            let mut ports = std::collections::HashMap::new();
            let mut opened = Vec::new();
            for (service, port, slots) in &pools {
                let listener = crate::net::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
                ports.insert(*port, listener.local_addr()?);
                opened.push((*service, listener, slots.clone()));
            }
            for (service, listener, slots) in opened {
                tokio::spawn(accept_loop(
                    relay.clone(),
                    service,
                    listener,
                    slots,
                    mux.clone(),
                    Some(relay.front.peers.clone()),
                ));
            }
            Ok(ports)
        }
    };
    let identity_dir = relay.config.data_dir.join("front");
    if relay.front.active() {
        match crate::front::link::Identity::load_or_create(&identity_dir) {
            Ok(id) => tracing::info!(
                "front: this box's tunnel certificate is {} (for `relaybox front --box-pin`)",
                id.fingerprint()
            ),
            Err(e) => {
                return Err(StartError::Front(format!(
                    "tunnel identity in {}: {e}",
                    identity_dir.display()
                )));
            }
        }
    }
    let front_link = crate::front::home::run(crate::front::home::Home::new(
        relay.front.clone(),
        identity_dir,
        Box::new(internal),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(flush_periodically(relay.clone()));
    tasks.spawn(front_link);
    for (service, listener, slots) in listeners {
        tasks.spawn(accept_loop(
            relay.clone(),
            service,
            listener,
            slots,
            mux.clone(),
            None,
        ));
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// How often non-durable store changes are made durable (appliance.md LW-5).
const FLUSH_INTERVAL: Duration = Duration::from_secs(300);

async fn flush_periodically(relay: Arc<Relay>) {
    let mut tick = tokio::time::interval(FLUSH_INTERVAL);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = relay.store.flush().await {
            tracing::error!("store flush failed: {e}");
        }
    }
}

/// Accept connections of `service` on `listener`. With `via_front` (issue 20) the
/// listener is an internal one of the tunnel: each connection's peer is replaced by the
/// client it carries, and one the tunnel did not make is closed.
async fn accept_loop(
    relay: Arc<Relay>,
    service: Service,
    listener: TcpListener,
    pool: Arc<Pool>,
    mux: Arc<MuxSlots>,
    via_front: Option<Arc<crate::front::Peers>>,
) {
    let mut trouble = AcceptTrouble::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => {
                trouble.recovered(service);
                x
            }
            Err(e) => {
                let pause = trouble.failed(service, &e);
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let peer = match &via_front {
            None => peer,
            Some(peers) => match peers.client_of(peer) {
                Some(client) => client,
                None => {
                    tracing::warn!(
                        "{}: a local connection not made by the tunnel refused",
                        service.name()
                    );
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        match pool.admit(peer.ip()) {
            Ok(ticket) => {
                let relay = relay.clone();
                let mux = mux.clone();
                tokio::spawn(async move {
                    handle(relay, service, stream, peer, &mux, ticket).await;
                });
            }
            Err(reason) => refuse(&relay, service, stream, peer, reason),
        }
    }
}

/// Failed `accept()`s of one listener (EMFILE, ENFILE, ENOBUFS, …): the listener backs
/// off (10 ms doubling to 1 s) instead of spinning, and logs the first failure and the
/// recovery, not every attempt.
#[derive(Default)]
pub(crate) struct AcceptTrouble {
    failures: u64,
    pause: Duration,
}

impl AcceptTrouble {
    const FIRST_PAUSE: Duration = Duration::from_millis(10);
    const MAX_PAUSE: Duration = Duration::from_secs(1);

    /// An accept failed: how long to wait before the next.
    pub(crate) fn failed(&mut self, service: Service, e: &std::io::Error) -> Duration {
        if self.failures == 0 {
            tracing::warn!(
                "{}: accept failed: {e}; retrying with back-off (not logged again until it \
                 works)",
                service.name()
            );
        }
        self.failures += 1;
        self.pause = (self.pause * 2).clamp(Self::FIRST_PAUSE, Self::MAX_PAUSE);
        self.pause
    }

    /// An accept worked.
    pub(crate) fn recovered(&mut self, service: Service) {
        if self.failures > 0 {
            tracing::warn!(
                "{}: accepting again after {} failed attempts",
                service.name(),
                self.failures
            );
            *self = AcceptTrouble::default();
        }
    }
}

/// How long answering one refusal may take, TLS handshake included.
const REFUSAL_TIME: Duration = Duration::from_secs(10);
static REFUSING: Semaphore = Semaphore::const_new(MAX_REFUSING);

/// Turn a connection away: counted and logged sparingly (`crate::admission::refused`),
/// then told why in its protocol's words, bounded in time and in number: SMTP `421`,
/// IMAP `* BYE [UNAVAILABLE]` (RFC 9051 §7.1.5), HTTP `503` with `Retry-After`; on
/// implicit TLS ports after the handshake, on 443 by the client's ALPN (PORT-2).
fn refuse(relay: &Arc<Relay>, service: Service, stream: TcpStream, peer: SocketAddr, why: Reason) {
    crate::admission::refused(service.name(), why, peer.ip());
    let Ok(permit) = REFUSING.try_acquire() else {
        return;
    };
    let relay = relay.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let answer = async {
            let (service, conn) = match service {
                Service::Mx | Service::Submission | Service::Imap | Service::Http => {
                    (service, Conn::Plain(stream))
                }
                Service::Submissions | Service::Imaps => {
                    let accept = TlsAcceptor::from(relay.tls.tls13.clone()).accept(stream);
                    let Ok(tls) = accept.await else { return };
                    (service, Conn::Tls(Box::new(tls)))
                }
                Service::Https => match handshake_443(&relay, stream).await {
                    Ok((route, conn)) => (route.service(), conn),
                    Err(_) => return,
                },
            };
            refusal(&relay, service, conn, why).await
        };
        let _ = tokio::time::timeout(REFUSAL_TIME, answer).await;
    });
}

/// Say `why` on an established connection to `service` and close it.
async fn refusal(relay: &Relay, service: Service, mut conn: Conn, why: Reason) {
    use tokio::io::AsyncWriteExt;
    let line = match service {
        // RFC 5530 §3: `UNAVAILABLE`, a temporary failure of the server.
        Service::Imap | Service::Imaps => format!("* BYE [UNAVAILABLE] {}\r\n", why.text()),
        // RFC 5321 §3.8: a server that must close says 421; RFC 3463 §3.8: 4.7.0.
        Service::Mx | Service::Submission | Service::Submissions => {
            format!("421 4.7.0 {} {}\r\n", relay.config.host_name(), why.text())
        }
        Service::Https | Service::Http => return crate::http::refuse(conn, why).await,
    };
    let _ = conn.write_all(line.as_bytes()).await;
    let _ = conn.shutdown().await;
}

async fn handle(
    relay: Arc<Relay>,
    service: Service,
    stream: TcpStream,
    peer: SocketAddr,
    mux: &MuxSlots,
    ticket: Ticket,
) {
    // The listener's slot is held for the whole session, except that the 443
    // multiplexer trades it for an IMAP or submission slot.
    let mut ticket = Some(ticket);
    let _open = crate::metrics::connection(service.name());
    match service {
        Service::Mx => {
            crate::smtp::serve(
                relay.smtp_handles(),
                Conn::Plain(stream),
                peer,
                crate::smtp::Mode::Mx,
            )
            .await
        }
        Service::Submission => {
            crate::smtp::serve(
                relay.smtp_handles(),
                Conn::Plain(stream),
                peer,
                crate::smtp::Mode::Submission,
            )
            .await
        }
        Service::Submissions => {
            if let Some(conn) = implicit_tls(relay.tls.tls13.clone(), stream).await {
                crate::smtp::serve(
                    relay.smtp_handles(),
                    conn,
                    peer,
                    crate::smtp::Mode::Submission,
                )
                .await
            }
        }
        Service::Imap => crate::imap::serve(relay.imap_handles(), Conn::Plain(stream), peer).await,
        Service::Imaps => {
            if let Some(conn) = implicit_tls(relay.tls.tls13.clone(), stream).await {
                crate::imap::serve(relay.imap_handles(), conn, peer).await
            }
        }
        Service::Https => serve_443(relay, stream, peer, mux, ticket.take()).await,
        Service::Http => crate::http::serve_http(relay, Conn::Plain(stream), peer).await,
    }
}

/// Implicit TLS (465, 993, 443): the handshake, bounded in time.
async fn implicit_tls(config: Arc<rustls::ServerConfig>, stream: TcpStream) -> Option<Conn> {
    let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
        Ok(Ok(tls)) => Some(Conn::Tls(Box::new(tls))),
        _ => None,
    }
}

/// Connection limits of the sessions the 443 multiplexer starts besides HTTPS.
pub struct MuxSlots {
    /// Shared with 143 and 993.
    pub imap: Arc<Pool>,
    /// Submission over 443, `max_smtp_connections` like each submission port.
    pub submission: Arc<Pool>,
}

/// Where the 443 multiplexer sends a connection (PORT-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route443 {
    /// ALPN `smtp`: submission with implicit TLS, as 465.
    Submission,
    /// ALPN `imap`: IMAP with implicit TLS, as 993.
    Imap,
    /// Anything else or no ALPN.
    Https,
}

impl Route443 {
    /// The service the route is counted as (metrics, refusals).
    pub fn service(self) -> Service {
        match self {
            Route443::Submission => Service::Submissions,
            Route443::Imap => Service::Imaps,
            Route443::Https => Service::Https,
        }
    }
}

/// PORT-2: `smtp` is tested first, then `imap`; other protocols or none → HTTPS.
pub fn route_443<'a>(alpn: Option<impl Iterator<Item = &'a [u8]>>) -> Route443 {
    let offered: Vec<&[u8]> = alpn.map(|list| list.collect()).unwrap_or_default();
    if offered.contains(&&b"smtp"[..]) {
        Route443::Submission
    } else if offered.contains(&&b"imap"[..]) {
        Route443::Imap
    } else {
        Route443::Https
    }
}

/// PORT-2 / PORT-3: read the ClientHello, pick the service by its ALPN list, then finish
/// the handshake with that service's configuration (TLS-2: TLS 1.3 only for IMAP and
/// submission, 1.2 and up for HTTPS). The configurations select no ALPN protocol, as
/// upstream's backends behind nginx's `ssl_preread` do, so no ALPN offer can fail a
/// handshake, and IMAP/submission sessions resume with the same tickets as on 993/465.
/// The caller bounds it in time. An ACME TLS-ALPN-01 validation is answered here and
/// ends in an error.
async fn handshake_443(relay: &Relay, stream: TcpStream) -> std::io::Result<(Route443, Conn)> {
    let acceptor = rustls::server::Acceptor::default();
    let start = tokio_rustls::LazyConfigAcceptor::new(acceptor, stream).await?;
    // RFC 8737 §3: a TLS-ALPN-01 validation offers only `acme-tls/1`; answer it with
    // the challenge certificate and close.
    let hello = start.client_hello();
    if hello
        .alpn()
        .is_some_and(|mut list| list.any(|p| p == crate::acme::ACME_TLS_ALPN))
    {
        let name = hello.server_name().map(str::to_string);
        if let Some(config) = relay.acme.tls_alpn01(name.as_deref()) {
            let mut tls = start.into_stream(config).await?;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
        }
        return Err(std::io::Error::other("acme-tls/1 validation answered"));
    }
    let route = route_443(start.client_hello().alpn());
    let config = match route {
        Route443::Https => relay.tls.tls12.clone(),
        Route443::Submission | Route443::Imap => relay.tls.tls13.clone(),
    };
    let tls = start.into_stream(config).await?;
    Ok((route, Conn::Tls(Box::new(tls))))
}

/// Serve a 443 connection: the handshake ([`handshake_443`], bounded by
/// `HANDSHAKE_TIMEOUT`), then HTTPS, submission or IMAP.
///
/// `https_slot` (the 443 listener's connection slot) is released when the connection
/// becomes an IMAP or submission session, which hold a slot of their own limit instead:
/// long-lived IMAP IDLE sessions must not use up the HTTPS connection limit.
pub async fn serve_443(
    relay: Arc<Relay>,
    stream: TcpStream,
    peer: SocketAddr,
    mux: &MuxSlots,
    https_slot: Option<Ticket>,
) {
    let (route, conn) =
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake_443(&relay, stream)).await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                tracing::debug!("https: handshake failed: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!("https: handshake timed out");
                return;
            }
        };
    let pool = match route {
        Route443::Https => return crate::http::serve_https(relay, conn, peer).await,
        Route443::Submission => &mux.submission,
        Route443::Imap => &mux.imap,
    };
    let service = route.service();
    let _ticket = match pool.admit(peer.ip()) {
        Ok(t) => t,
        Err(why) => {
            crate::admission::refused(service.name(), why, peer.ip());
            let answer = refusal(&relay, service, conn, why);
            let _ = tokio::time::timeout(REFUSAL_TIME, answer).await;
            return;
        }
    };
    drop(https_slot);
    match route {
        Route443::Submission => {
            crate::smtp::serve(
                relay.smtp_handles(),
                conn,
                peer,
                crate::smtp::Mode::Submission,
            )
            .await
        }
        _ => crate::imap::serve(relay.imap_handles(), conn, peer).await,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use rustls::version::{TLS12, TLS13};
    use rustls_pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::client::TlsStream;

    use super::*;

    const LIMIT: Duration = Duration::from_secs(10);
    /// Per-address limits these tests never reach.
    const ANY: crate::admission::PerAddress = crate::admission::PerAddress {
        connections: 1000,
        rate: 1000,
        burst: 1000,
    };

    struct Mux {
        _dir: tempfile::TempDir,
        relay: Arc<Relay>,
        slots: Arc<MuxSlots>,
    }

    impl Mux {
        fn new(imap_slots: usize) -> Mux {
            let dir = tempfile::tempdir().expect("tempdir");
            let relay =
                Relay::open(crate::testing::config(dir.path(), "127.0.0.1")).expect("relay");
            let slots = Arc::new(MuxSlots {
                imap: Pool::new(imap_slots, ANY),
                submission: Pool::new(4, ANY),
            });
            Mux {
                _dir: dir,
                relay,
                slots,
            }
        }

        /// One loopback connection served by `serve_443`, with a client offering `alpn`.
        async fn connect(
            &self,
            alpn: &[&str],
            versions: &[&'static rustls::SupportedProtocolVersion],
        ) -> std::io::Result<TlsStream<TcpStream>> {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let (relay, slots) = (self.relay.clone(), self.slots.clone());
            tokio::spawn(async move {
                if let Ok((tcp, peer)) = listener.accept().await {
                    serve_443(relay, tcp, peer, &slots, None).await;
                }
            });
            let tcp = TcpStream::connect(addr).await?;
            let alpn = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
            let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
            let connect = crate::testing::tls_connector(versions, None)
                .with_alpn(alpn)
                .connect(name, tcp);
            tokio::time::timeout(LIMIT, connect)
                .await
                .map_err(|_| std::io::Error::other("handshake timed out"))?
        }
    }

    /// The first line the server sends.
    async fn first_line(tls: &mut TlsStream<TcpStream>) -> String {
        let mut line = Vec::new();
        let read = async {
            let mut byte = [0u8; 1];
            while !line.ends_with(b"\n") && line.len() < 1000 {
                if tls.read(&mut byte).await.expect("read") == 0 {
                    break;
                }
                line.push(byte[0]);
            }
        };
        tokio::time::timeout(LIMIT, read)
            .await
            .expect("greeting in time");
        String::from_utf8(line).expect("utf-8")
    }

    #[test]
    fn failed_accepts_back_off_and_recover() {
        // EMFILE and friends: no spinning, growing pauses up to a second.
        let mut t = AcceptTrouble::default();
        let emfile = std::io::Error::from_raw_os_error(24);
        let pauses: Vec<u64> = (0..10)
            .map(|_| t.failed(Service::Imap, &emfile).as_millis() as u64)
            .collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        assert_eq!(t.failures, 10);
        t.recovered(Service::Imap);
        assert_eq!(t.failures, 0);
        assert_eq!(t.failed(Service::Imap, &emfile), Duration::from_millis(10));
    }

    #[test]
    fn smtp_is_tested_before_imap() {
        // PORT-2
        let route = |list: &[&[u8]]| route_443(Some(list.iter().copied()));
        assert_eq!(route(&[b"imap", b"smtp"]), Route443::Submission);
        assert_eq!(route(&[b"smtp"]), Route443::Submission);
        assert_eq!(route(&[b"h2", b"imap"]), Route443::Imap);
        assert_eq!(route(&[b"h2", b"http/1.1"]), Route443::Https);
        assert_eq!(route(&[b"IMAP", b"smtps"]), Route443::Https);
        assert_eq!(route_443(None::<std::iter::Empty<&[u8]>>), Route443::Https);
    }

    #[tokio::test]
    async fn alpn_imap_gets_an_imap_session() {
        let mux = Mux::new(4);
        let mut tls = mux.connect(&["imap"], &[&TLS13]).await.expect("handshake");
        // PORT-3: the offer does not fail the handshake; no protocol is selected.
        assert_eq!(tls.get_ref().1.alpn_protocol(), None);
        let greeting = first_line(&mut tls).await;
        assert!(greeting.starts_with("* OK"), "{greeting}");
        tls.write_all(b"a1 CAPABILITY\r\n").await.expect("write");
        let caps = first_line(&mut tls).await;
        assert!(caps.starts_with("* CAPABILITY IMAP4rev1"), "{caps}");
        // TLS-2: IMAP via 443 is TLS 1.3 only.
        assert!(mux.connect(&["imap"], &[&TLS12]).await.is_err());
    }

    #[tokio::test]
    async fn alpn_smtp_gets_a_submission_session() {
        let mux = Mux::new(4);
        // `smtp` wins over `imap` whatever the order.
        for alpn in [&["smtp"][..], &["imap", "smtp"]] {
            let mut tls = mux.connect(alpn, &[&TLS13]).await.expect("handshake");
            assert_eq!(tls.get_ref().1.alpn_protocol(), None);
            let greeting = first_line(&mut tls).await;
            assert!(greeting.starts_with("220 "), "{alpn:?}: {greeting}");
            tls.write_all(b"EHLO client.example\r\n")
                .await
                .expect("write");
            let ehlo = first_line(&mut tls).await;
            assert!(ehlo.starts_with("250"), "{ehlo}");
        }
        assert!(mux.connect(&["smtp"], &[&TLS12]).await.is_err());
    }

    #[tokio::test]
    async fn other_alpn_gets_https() {
        let mux = Mux::new(4);
        for alpn in [&["h2", "http/1.1"][..], &["http/1.1"], &["h2"], &[]] {
            // HTTPS accepts TLS 1.2 too (TLS-2).
            for versions in [&[&TLS13][..], &[&TLS12]] {
                let mut tls = mux.connect(alpn, versions).await.expect("handshake");
                assert_eq!(tls.get_ref().1.alpn_protocol(), None);
                tls.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                    .await
                    .expect("write");
                let mut reply = Vec::new();
                tokio::time::timeout(LIMIT, tls.read_to_end(&mut reply))
                    .await
                    .expect("reply in time")
                    .expect("read");
                let reply = String::from_utf8_lossy(&reply);
                assert!(
                    reply.starts_with("HTTP/1.1 200 OK\r\n"),
                    "{alpn:?}: {reply}"
                );
                assert!(reply.contains("dclogin:"), "{alpn:?}: index page");
            }
        }
    }

    #[tokio::test]
    async fn imap_via_443_respects_the_imap_limit() {
        let mux = Mux::new(0);
        let mut tls = mux.connect(&["imap"], &[&TLS13]).await.expect("handshake");
        let line = first_line(&mut tls).await;
        assert!(
            line.starts_with("* BYE [UNAVAILABLE] Too many connections"),
            "{line}"
        );
    }

    #[tokio::test]
    async fn imap_via_443_gives_back_the_https_slot() {
        let mux = Mux::new(4);
        let https = Pool::new(1, ANY);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (relay, slots) = (mux.relay.clone(), mux.slots.clone());
        let slot = https.admit(addr.ip()).expect("slot");
        tokio::spawn(async move {
            let (tcp, peer) = listener.accept().await.expect("accept");
            serve_443(relay, tcp, peer, &slots, Some(slot)).await;
        });
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
        let mut tls = crate::testing::tls_connector(&[&TLS13], None)
            .with_alpn(vec![b"imap".to_vec()])
            .connect(name, tcp)
            .await
            .expect("handshake");
        let greeting = first_line(&mut tls).await;
        assert!(greeting.starts_with("* OK"), "{greeting}");
        // The IDLE-able session holds an IMAP slot, not the HTTPS one.
        assert_eq!(https.available(), 1);
        assert_eq!(mux.slots.imap.available(), 3);
    }

    #[tokio::test]
    async fn not_tls_is_dropped() {
        let mux = Mux::new(4);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (relay, slots) = (mux.relay.clone(), mux.slots.clone());
        let server = tokio::spawn(async move {
            let (tcp, peer) = listener.accept().await.expect("accept");
            serve_443(relay, tcp, peer, &slots, None).await;
        });
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        tokio::time::timeout(LIMIT, server)
            .await
            .expect("server gives up at once")
            .expect("task");
    }
}
