//! The box's side of the tunnel (issue 20): keep one link open to the front the relay is
//! set to use, reconnecting with back-off; turn each stream the front opens into a loopback
//! connection to the relay's internal listener for the port the client asked for,
//! registered in [`Peers`] with the client's address; open streams for outbound SMTP.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use tokio::sync::watch;

use super::Peers;
use super::header;
use super::link::{self, Identity, Opener, Side, Stream};

/// First wait after a failed or ended link; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A link that lasted this long resets the back-off.
const STABLE: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The front must send a stream's header within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The front this box uses: its tunnel address and its certificate pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontTarget {
    /// `host:port` of the front's tunnel.
    pub front: String,
    pub pin: [u8; 32],
}

/// The box's side of the tunnel as the relay holds it: which front to use (changed live by
/// a pairing or by moving off the front, [`Tunnel::set_target`]), the link while it is up
/// (for outbound SMTP connections, [`Tunnel::connect`]), and the clients connected through
/// it ([`Peers`]).
#[derive(Debug)]
pub struct Tunnel {
    target: watch::Sender<Option<FrontTarget>>,
    link: Mutex<Option<Opener>>,
    pub peers: Arc<Peers>,
}

impl Tunnel {
    pub fn new(target: Option<FrontTarget>) -> Tunnel {
        Tunnel {
            target: watch::Sender::new(target),
            link: Mutex::new(None),
            peers: Arc::default(),
        }
    }

    /// Use `target` from now on (`None`: no front); the link follows at once.
    pub fn set_target(&self, target: Option<FrontTarget>) {
        self.target.send_if_modified(|t| {
            let changed = *t != target;
            *t = target;
            changed
        });
    }

    pub fn target(&self) -> Option<FrontTarget> {
        self.target.borrow().clone()
    }

    /// Whether outbound SMTP goes through the front (a front is set).
    pub fn active(&self) -> bool {
        self.target.borrow().is_some()
    }

    /// Whether the link is up right now.
    pub fn connected(&self) -> bool {
        self.opener().is_some()
    }

    fn opener(&self) -> Option<Opener> {
        let mut link = self.link.lock().unwrap_or_else(|e| e.into_inner());
        if link.as_ref().is_some_and(Opener::is_closed) {
            *link = None;
        }
        link.clone()
    }

    fn set_link(&self, opener: Option<Opener>) {
        *self.link.lock().unwrap_or_else(|e| e.into_inner()) = opener;
    }

    /// An outbound connection to `target` (port 25 of a public address), opened by the
    /// front: a stream whose header names the destination, then the front's one-byte
    /// answer ([`super::outbound`]).
    pub async fn connect(&self, target: SocketAddr) -> io::Result<Stream> {
        let opener = self
            .opener()
            .ok_or_else(|| io::Error::other("the front server is not connected"))?;
        super::outbound::open(&opener, target).await
    }
}

/// What the box's side needs.
pub struct Home {
    pub tunnel: Arc<Tunnel>,
    /// Where this box's tunnel identity is kept (made on first use).
    pub identity_dir: PathBuf,
    /// Opens the relay's internal listeners (standard port → its address), once, when a
    /// front is first set: a relay without a front listens on nothing more.
    pub open_ports: Box<dyn Fn() -> io::Result<HashMap<u16, SocketAddr>> + Send + Sync>,
    ports: std::sync::OnceLock<HashMap<u16, SocketAddr>>,
}

impl Home {
    pub fn new(
        tunnel: Arc<Tunnel>,
        identity_dir: PathBuf,
        open_ports: Box<dyn Fn() -> io::Result<HashMap<u16, SocketAddr>> + Send + Sync>,
    ) -> Home {
        Home {
            tunnel,
            identity_dir,
            open_ports,
            ports: std::sync::OnceLock::new(),
        }
    }

    /// The internal listeners, opened on first use.
    fn ports(&self) -> io::Result<&HashMap<u16, SocketAddr>> {
        if let Some(p) = self.ports.get() {
            return Ok(p);
        }
        let opened = (self.open_ports)()?;
        Ok(self.ports.get_or_init(|| opened))
    }
}

/// Keep a link open to the front the tunnel names, for as long as the relay runs; idle
/// while it names none.
pub async fn run(home: Home) {
    let home = Arc::new(home);
    let mut changes = home.tunnel.target.subscribe();
    let mut backoff = MIN_BACKOFF;
    loop {
        let target = changes.borrow_and_update().clone();
        let Some(target) = target else {
            if changes.changed().await.is_err() {
                return;
            }
            continue;
        };
        let started = Instant::now();
        tokio::select! {
            result = link_once(&home, &target) => {
                match result {
                    Ok(()) => tracing::warn!("front: the link to {} ended", target.front),
                    Err(e) => tracing::warn!("front: no link to {}: {e}", target.front),
                }
            }
            changed = changes.changed() => {
                home.tunnel.set_link(None);
                if changed.is_err() {
                    return;
                }
                tracing::info!("front: the front server changed");
                backoff = MIN_BACKOFF;
                continue;
            }
        }
        home.tunnel.set_link(None);
        if started.elapsed() >= STABLE {
            backoff = MIN_BACKOFF;
        }
        // A new front ends the wait at once.
        tokio::select! {
            _ = tokio::time::sleep(backoff) => backoff = (backoff * 2).min(MAX_BACKOFF),
            _ = changes.changed() => backoff = MIN_BACKOFF,
        }
    }
}

async fn link_once(home: &Arc<Home>, target: &FrontTarget) -> io::Result<()> {
    home.ports()
        .map_err(|e| io::Error::other(format!("the relay's internal listeners: {e}")))?;
    let identity = Identity::load_or_create(&home.identity_dir)?;
    let tls = link::client_config(&identity, target.pin).map_err(io::Error::other)?;
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(&target.front),
    )
    .await
    .map_err(|_| io::Error::other("connect timed out"))??;
    let _ = tcp.set_nodelay(true);
    crate::net::keep_alive(&tcp)?;
    // The name is not checked (the certificate is pinned); it only fills SNI.
    let name = ServerName::try_from("relaybox-front").expect("a valid name");
    let stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_rustls::TlsConnector::from(tls).connect(name, tcp),
    )
    .await
    .map_err(|_| io::Error::other("TLS handshake timed out"))??;
    tracing::info!("front: link to {} up", target.front);
    let served = home.clone();
    let (opener, task) = Opener::start(stream, Side::Box, move |s| {
        let home = served.clone();
        tokio::spawn(async move {
            if let Err(e) = forward(&home, s).await {
                tracing::debug!("front: stream ended: {e}");
            }
        });
    });
    home.tunnel.set_link(Some(opener));
    task.await.map_err(io::Error::other)
}

/// Removes a tunnel connection from [`Peers`] when it ends.
struct Registered<'a>(&'a Peers, SocketAddr);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.remove(self.1);
    }
}

async fn forward(home: &Home, mut stream: Stream) -> std::io::Result<()> {
    let origin = tokio::time::timeout(HEADER_TIMEOUT, header::read(&mut stream))
        .await
        .map_err(|_| std::io::Error::other("no header"))??;
    let Some(target) = home.ports()?.get(&origin.front.port()).copied() else {
        return Err(std::io::Error::other(format!(
            "no service on port {}",
            origin.front.port()
        )));
    };
    let socket = match target {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(target.ip(), 0))?;
    let source = socket.local_addr()?;
    home.tunnel.peers.insert(source, origin.client);
    let _registered = Registered(&home.tunnel.peers, source);
    let mut tcp = socket.connect(target).await?;
    let _ = tcp.set_nodelay(true);
    super::copy_both_ways(&mut stream, &mut tcp).await?;
    Ok(())
}
