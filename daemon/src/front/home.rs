//! The box's side of the tunnel (issue 20): keep one link open to the front, reconnecting
//! with back-off, and turn each stream the front opens into a loopback connection to the
//! relay's internal listener for the port the client asked for, registered in [`Peers`]
//! with the client's address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;

use super::Peers;
use super::header;
use super::link::{self, Identity, Stream};

/// First wait after a failed or ended link; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A link that lasted this long resets the back-off.
const STABLE: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The front must send a stream's header within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the box's side needs.
pub struct Home {
    /// The front's tunnel address (`host:port`).
    pub front: String,
    /// The SHA-256 of the front's tunnel certificate.
    pub pin: [u8; 32],
    pub identity: Identity,
    /// Standard port → the relay's internal listener for it.
    pub ports: HashMap<u16, SocketAddr>,
    pub peers: Arc<Peers>,
}

/// Keep the link up for as long as the relay runs.
pub async fn run(home: Home) {
    let tls = match link::client_config(&home.identity, home.pin) {
        Ok(c) => tokio_rustls::TlsConnector::from(c),
        Err(e) => {
            tracing::error!("front: TLS set-up failed: {e}");
            return;
        }
    };
    let home = Arc::new(home);
    let mut backoff = MIN_BACKOFF;
    loop {
        let started = Instant::now();
        match link_once(&home, &tls).await {
            Ok(()) => tracing::warn!("front: the link to {} ended", home.front),
            Err(e) => tracing::warn!("front: no link to {}: {e}", home.front),
        }
        if started.elapsed() >= STABLE {
            backoff = MIN_BACKOFF;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn link_once(home: &Arc<Home>, tls: &tokio_rustls::TlsConnector) -> std::io::Result<()> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&home.front))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))??;
    let _ = tcp.set_nodelay(true);
    // The name is not checked (the certificate is pinned); it only fills SNI.
    let name = ServerName::try_from("relaybox-front").expect("a valid name");
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("TLS handshake timed out"))??;
    tracing::info!("front: link to {} up", home.front);
    let home = home.clone();
    link::serve_streams(stream, move |s| {
        let home = home.clone();
        tokio::spawn(async move {
            if let Err(e) = forward(&home, s).await {
                tracing::debug!("front: stream ended: {e}");
            }
        });
    })
    .await
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
    let Some(target) = home.ports.get(&origin.front.port()).copied() else {
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
    home.peers.insert(source, origin.client);
    let _registered = Registered(&home.peers, source);
    let mut tcp = socket.connect(target).await?;
    let _ = tcp.set_nodelay(true);
    tokio::io::copy_bidirectional(&mut stream, &mut tcp).await?;
    Ok(())
}
