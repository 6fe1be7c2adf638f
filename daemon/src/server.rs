//! The running relay: the shared context every session gets, and the listeners that
//! accept connections per service with their connection limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

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
    /// NEW-3: `/new` requests per client IP.
    pub new_account_limiter: Arc<RateLimiter<std::net::IpAddr>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
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
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| StartError::DataDir(config.data_dir.display().to_string(), e))?;
        let store = Store::open(&config.data_dir.join(STORE_FILE))?;
        let tls = Tls::new(crate::tls::initial_certificate(&config)?)?;
        let auth = Auth::new(store.clone(), &config, clock.clone());
        let send_limiter = RateLimiter::new(Quota::new(
            config.max_user_send_per_minute,
            Duration::from_secs(60),
            config.max_user_send_burst_size,
        ));
        Ok(Arc::new(Relay {
            config,
            clock,
            store,
            auth,
            events: Events::new(),
            tls,
            send_limiter,
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
        (Service::Imaps, &l.imaps, imap_slots),
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
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(flush_periodically(relay.clone()));
    for (service, listener, slots) in listeners {
        tasks.spawn(accept_loop(relay.clone(), service, listener, slots));
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

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
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
        tokio::spawn(async move {
            handle(relay, service, stream, peer).await;
            drop(permit);
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

async fn handle(relay: Arc<Relay>, service: Service, stream: TcpStream, peer: SocketAddr) {
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
        Service::Https => {
            if let Some(conn) = implicit_tls(relay.tls.tls12.clone(), stream).await {
                crate::http::serve_https(relay, conn, peer).await
            }
        }
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
