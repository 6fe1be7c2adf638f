//! `relaybox front` (issue 20): the relay's public ports on a machine with a public address,
//! each connection forwarded as raw bytes through the tunnel the paired box keeps open.
//! Only the box whose certificate is pinned (`--box-pin`) may open the tunnel; a box that
//! reconnects replaces its older link. Without a link, public connections are closed at
//! once (clients and peers retry, as with a relay that is down).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::header::{self, Origin};
use super::link::{self, Identity, Opener};

/// Client connections forwarded at once (each holds a socket here and a stream in the link).
pub const MAX_CONNECTIONS: usize = link::MAX_STREAMS;
/// A box must finish its TLS handshake within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// What `relaybox front` is told.
#[derive(Debug, Clone)]
pub struct FrontConfig {
    /// Where its own tunnel identity is kept.
    pub data_dir: PathBuf,
    /// The public address the relay's ports are served on.
    pub public: IpAddr,
    /// The ports served there (the relay's standard ones: [`super::PORTS`]).
    pub ports: Vec<u16>,
    /// Where the box connects.
    pub tunnel: SocketAddr,
    /// The SHA-256 of the box's tunnel certificate.
    pub box_pin: [u8; 32],
}

/// Errors that stop the front at start.
#[derive(Debug, thiserror::Error)]
pub enum FrontError {
    #[error("tunnel identity in {0}: {1}")]
    Identity(String, std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// The newest link, if the box is connected.
#[derive(Default)]
struct Current(Mutex<Option<Opener>>);

impl Current {
    fn get(&self) -> Option<Opener> {
        let mut cur = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if cur.as_ref().is_some_and(Opener::is_closed) {
            *cur = None;
        }
        cur.clone()
    }

    fn set(&self, opener: Opener) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(opener);
    }
}

/// Bind everything, then serve until the process ends. Prints nothing itself; the caller
/// logs [`Identity::fingerprint`] so the box can pin it.
pub async fn run(cfg: FrontConfig, id: Identity) -> Result<(), FrontError> {
    let tls = link::server_config(&id, cfg.box_pin)?;
    let tunnel = TcpListener::bind(cfg.tunnel)
        .await
        .map_err(|e| FrontError::Bind(cfg.tunnel, e))?;
    let mut public = Vec::new();
    for port in &cfg.ports {
        let addr = SocketAddr::new(cfg.public, *port);
        let l = crate::net::bind(addr).map_err(|e| FrontError::Bind(addr, e))?;
        public.push(l);
    }
    tracing::info!(
        "front: tunnel on {}, {} public ports on {}",
        cfg.tunnel,
        public.len(),
        cfg.public
    );
    let current = Arc::new(Current::default());
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(accept_boxes(tunnel, tls, current.clone()));
    for l in public {
        tasks.spawn(accept_clients(l, current.clone(), slots.clone()));
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Load (or make) the front's identity in `data_dir`.
pub fn identity(data_dir: &std::path::Path) -> Result<Identity, FrontError> {
    Identity::load_or_create(data_dir)
        .map_err(|e| FrontError::Identity(data_dir.display().to_string(), e))
}

async fn accept_boxes(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    current: Arc<Current>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (acceptor, current) = (acceptor.clone(), current.clone());
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    // The pinned certificate was checked in the handshake.
                    tracing::info!("front: the box connected from {peer}");
                    let (opener, task) = Opener::start(tls);
                    current.set(opener);
                    let _ = task.await;
                    tracing::info!("front: the link from {peer} ended");
                }
                Ok(Err(e)) => tracing::info!("front: tunnel handshake from {peer} refused: {e}"),
                Err(_) => tracing::info!("front: tunnel handshake from {peer} timed out"),
            }
        });
    }
}

async fn accept_clients(listener: TcpListener, current: Arc<Current>, slots: Arc<Semaphore>) {
    loop {
        let Ok((tcp, client)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue; // dropped: closed at once
        };
        let Some(opener) = current.get() else {
            continue;
        };
        tokio::spawn(async move {
            let _slot = slot;
            let _ = forward(tcp, client, opener).await;
        });
    }
}

/// One client connection: a stream, the header, then bytes both ways until either side
/// closes.
async fn forward(mut tcp: TcpStream, client: SocketAddr, opener: Opener) -> std::io::Result<()> {
    let _ = tcp.set_nodelay(true);
    let front = tcp.local_addr()?;
    let mut stream = opener.open().await?;
    stream
        .write_all(&header::encode(Origin { client, front })?)
        .await?;
    tokio::io::copy_bidirectional(&mut tcp, &mut stream).await?;
    Ok(())
}
