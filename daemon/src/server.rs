//! The running relay: the shared context every session gets, and the listeners that
//! accept connections per service with their connection limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::Auth;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::events::Events;
use crate::net::Conn;
use crate::policy::ratelimit::{Quota, RateLimiter};
use crate::store::Store;
use crate::tls::Tls;

/// Name of the store file inside the data directory.
pub const STORE_FILE: &str = "relaybox.redb";

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
        let store = Store::open(&config.data_dir.join(STORE_FILE))?;
        let tls = Tls::new(crate::tls::initial_certificate(&config)?)?;
        let auth = Auth::new(store.clone(), &config, clock.clone());
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
        let dkim_verifier = crate::dkim::Verifier::new(&config)?;
        let outbound = crate::outbound::Transport::new(&config)?;
        Ok(Arc::new(Relay {
            dkim,
            dkim_verifier,
            outbound,
            outbound_wake: tokio::sync::Notify::new(),
            turn: crate::turn::Status::default(),
            acme: crate::acme::Acme::new(&config),
            admin: std::sync::OnceLock::new(),
            config,
            clock,
            store,
            auth,
            events: Events::new(),
            tls,
            send_limiter,
            push_wake: tokio::sync::Notify::new(),
            new_account_limiter: Arc::new(RateLimiter::new(crate::http::new_account_quota())),
        }))
    }
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

/// Bind every configured listener (failing start-up with the address when one cannot
/// be bound), then serve until the process ends.
pub async fn serve(relay: Arc<Relay>) -> Result<(), StartError> {
    let l = &relay.config.listen;
    let imap_slots = Arc::new(Semaphore::new(relay.config.max_imap_connections));
    let smtp = relay.config.max_smtp_connections;
    let plan: Vec<(Service, &Vec<SocketAddr>, Arc<Semaphore>)> = vec![
        (Service::Mx, &l.smtp, Arc::new(Semaphore::new(smtp))),
        (
            Service::Submission,
            &l.submission,
            Arc::new(Semaphore::new(smtp)),
        ),
        (
            Service::Submissions,
            &l.submissions,
            Arc::new(Semaphore::new(smtp)),
        ),
        (Service::Imap, &l.imap, imap_slots.clone()),
        (Service::Imaps, &l.imaps, imap_slots.clone()),
        (Service::Https, &l.https, Arc::new(Semaphore::new(1000))),
        (Service::Http, &l.http, Arc::new(Semaphore::new(1000))),
    ];
    let mut listeners = Vec::new();
    for (service, addrs, slots) in plan {
        for addr in addrs {
            let listener = bind(*addr).map_err(|err| StartError::Bind {
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
        imap: imap_slots.clone(),
        submission: Arc::new(Semaphore::new(smtp)),
    });
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(flush_periodically(relay.clone()));
    for (service, listener, slots) in listeners {
        tasks.spawn(accept_loop(
            relay.clone(),
            service,
            listener,
            slots,
            mux.clone(),
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

pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => {
            let s = tokio::net::TcpSocket::new_v6()?;
            // `[::]` listeners serve IPv4 too unless an explicit IPv4 one is configured.
            s
        }
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop(
    relay: Arc<Relay>,
    service: Service,
    listener: TcpListener,
    slots: Arc<Semaphore>,
    mux: Arc<MuxSlots>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("{}: accept failed: {e}", service.name());
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse_busy(service, stream));
            continue;
        };
        let relay = relay.clone();
        let mux = mux.clone();
        tokio::spawn(async move {
            handle(relay, service, stream, peer, &mux, permit).await;
        });
    }
}

/// Over the connection limit: say so in the protocol's words and close.
async fn refuse_busy(service: Service, mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    let line: &[u8] = match service {
        Service::Mx | Service::Submission => b"421 4.7.0 Too many connections, try again later\r\n",
        Service::Imap => b"* BYE Too many connections, try again later\r\n",
        _ => b"",
    };
    if !line.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(line)).await;
    }
    tracing::info!("{}: connection refused, limit reached", service.name());
}

async fn handle(
    relay: Arc<Relay>,
    service: Service,
    stream: TcpStream,
    peer: SocketAddr,
    mux: &MuxSlots,
    permit: OwnedSemaphorePermit,
) {
    // The listener's slot is held for the whole session, except that the 443
    // multiplexer trades it for an IMAP or submission slot.
    let mut permit = Some(permit);
    let _open = crate::metrics::connection(service.name());
    match service {
        Service::Mx => {
            crate::smtp::serve(relay, Conn::Plain(stream), peer, crate::smtp::Mode::Mx).await
        }
        Service::Submission => {
            crate::smtp::serve(
                relay,
                Conn::Plain(stream),
                peer,
                crate::smtp::Mode::Submission,
            )
            .await
        }
        Service::Submissions => {
            if let Some(conn) = implicit_tls(relay.tls.tls13.clone(), stream).await {
                crate::smtp::serve(relay, conn, peer, crate::smtp::Mode::Submission).await
            }
        }
        Service::Imap => crate::imap::serve(relay, Conn::Plain(stream), peer).await,
        Service::Imaps => {
            if let Some(conn) = implicit_tls(relay.tls.tls13.clone(), stream).await {
                crate::imap::serve(relay, conn, peer).await
            }
        }
        Service::Https => serve_443(relay, stream, peer, mux, permit.take()).await,
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
    pub imap: Arc<Semaphore>,
    /// Submission over 443, `max_smtp_connections` like each submission port.
    pub submission: Arc<Semaphore>,
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
/// Hello and handshake together are bounded by `HANDSHAKE_TIMEOUT`.
///
/// `https_slot` (the 443 listener's connection slot) is released when the connection
/// becomes an IMAP or submission session, which hold a slot of their own limit instead:
/// long-lived IMAP IDLE sessions must not use up the HTTPS connection limit.
pub async fn serve_443(
    relay: Arc<Relay>,
    stream: TcpStream,
    peer: SocketAddr,
    mux: &MuxSlots,
    https_slot: Option<OwnedSemaphorePermit>,
) {
    let handshake = async {
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
        Ok::<_, std::io::Error>((route, Conn::Tls(Box::new(tls))))
    };
    let (route, conn) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
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
    match route {
        Route443::Https => crate::http::serve_https(relay, conn, peer).await,
        Route443::Submission => {
            let Ok(_permit) = mux.submission.clone().try_acquire_owned() else {
                return refuse_busy_tls(Service::Submissions, conn).await;
            };
            drop(https_slot);
            crate::smtp::serve(relay, conn, peer, crate::smtp::Mode::Submission).await
        }
        Route443::Imap => {
            let Ok(_permit) = mux.imap.clone().try_acquire_owned() else {
                return refuse_busy_tls(Service::Imaps, conn).await;
            };
            drop(https_slot);
            crate::imap::serve(relay, conn, peer).await
        }
    }
}

/// Over the connection limit after the 443 handshake: say so and close.
async fn refuse_busy_tls(service: Service, mut conn: Conn) {
    use tokio::io::AsyncWriteExt;
    let line: &[u8] = match service {
        Service::Imaps => b"* BYE Too many connections, try again later\r\n",
        _ => b"421 4.7.0 Too many connections, try again later\r\n",
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        conn.write_all(line).await?;
        conn.shutdown().await
    })
    .await;
    tracing::info!(
        "{} via 443: connection refused, limit reached",
        service.name()
    );
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
                imap: Arc::new(Semaphore::new(imap_slots)),
                submission: Arc::new(Semaphore::new(4)),
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
        assert!(line.starts_with("* BYE Too many connections"), "{line}");
    }

    #[tokio::test]
    async fn imap_via_443_gives_back_the_https_slot() {
        let mux = Mux::new(4);
        let https = Arc::new(Semaphore::new(1));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (relay, slots) = (mux.relay.clone(), mux.slots.clone());
        let slot = https.clone().try_acquire_owned().expect("slot");
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
        assert_eq!(https.available_permits(), 1);
        assert_eq!(mux.slots.imap.available_permits(), 3);
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
