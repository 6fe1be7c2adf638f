//! `relaybox front` (issue 20): the relay's public ports on a machine with a public address,
//! each connection forwarded as raw bytes through the tunnel the paired box keeps open, and
//! the box's outbound SMTP connections opened from here ([`super::outbound`]). Only the
//! paired box (its certificate pin kept in `box.pin`, or given by `--box-pin`) may open the
//! tunnel; a box that reconnects replaces its older link. A pairing ([`super::pair`]) is
//! open while the front runs with a code that was never used. Without a link, public
//! connections are closed at once (clients and peers retry, as with a relay that is down).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use super::header::{self, Origin};
use super::link::{self, Identity, Opener, Side};

/// Client connections forwarded at once (each holds a socket here and a stream in the link).
pub const MAX_CONNECTIONS: usize = link::MAX_STREAMS;
/// How long an accepted client connection waits for the link to come back.
const LINK_WAIT: Duration = Duration::from_secs(10);
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
    /// The SHA-256 of the box's tunnel certificate (else the kept `box.pin`).
    pub box_pin: Option<[u8; 32]>,
    /// A one-time pairing code (`--pair`), refused when it was used before.
    pub pair_code: Option<String>,
    /// Also connect the box's outbound SMTP to private addresses (a front inside a private
    /// network; tests).
    pub outbound_private: bool,
}

/// The paired box's pin, in the front's data directory.
const BOX_PIN_FILE: &str = "box.pin";
/// The SHA-256 of every pairing code used here, one per line.
const USED_CODES_FILE: &str = "used-codes";
/// Wrong proofs before an open pairing is closed (a code has ~79 bits; this only stops
/// a box that keeps trying).
const MAX_PAIR_FAILURES: u32 = 20;

/// Errors that stop the front at start.
#[derive(Debug, thiserror::Error)]
pub enum FrontError {
    #[error("tunnel identity in {0}: {1}")]
    Identity(String, std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error(
        "no box is paired: start with --pair CODE (the code the box's setup page or \
         `relaybox pair-front` shows) or --box-pin"
    )]
    NotPaired,
    #[error("--pair: {0}")]
    Code(#[from] super::pair::PairError),
    #[error("{0}: {1}")]
    State(String, std::io::Error),
}

/// Which box may open the tunnel, and the pairing that is open.
struct Boxes {
    data_dir: PathBuf,
    id: Identity,
    pairing_tls: Arc<rustls::ServerConfig>,
    inner: Mutex<BoxesInner>,
}

struct BoxesInner {
    /// The TLS of the paired box's links (pinned to its certificate).
    paired: Option<Arc<rustls::ServerConfig>>,
    pairing: Option<OpenPairing>,
}

struct OpenPairing {
    code: String,
    failures: u32,
}

impl Boxes {
    fn lock(&self) -> std::sync::MutexGuard<'_, BoxesInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A box proved the code: keep its pin, use the code up, close the pairing — all or
    /// nothing (a second box that proved the same code at the same time is refused).
    fn paired(&self, box_pin: [u8; 32]) -> Result<(), FrontError> {
        let tls = link::server_config(&self.id, box_pin)?;
        let mut inner = self.lock();
        let Some(open) = inner.pairing.as_ref() else {
            return Err(FrontError::State(
                self.data_dir.display().to_string(),
                std::io::Error::other("the pairing was closed meanwhile"),
            ));
        };
        let state = |e| FrontError::State(self.data_dir.display().to_string(), e);
        let used = self.data_dir.join(USED_CODES_FILE);
        let mut list = std::fs::read_to_string(&used).unwrap_or_default();
        list.push_str(&code_hash(&open.code));
        list.push('\n');
        crate::files::write_atomic(&used, list.as_bytes(), 0o600).map_err(state)?;
        let pin = crate::hex::pin_text(&box_pin);
        crate::files::write_atomic(
            &self.data_dir.join(BOX_PIN_FILE),
            format!("{pin}\n").as_bytes(),
            0o600,
        )
        .map_err(state)?;
        inner.pairing = None;
        inner.paired = Some(tls);
        tracing::info!("front: paired with the box {pin}; the pairing code is used up");
        Ok(())
    }

    /// A wrong proof: count it, and close the pairing after too many.
    fn wrong_proof(&self) {
        let mut inner = self.lock();
        if let Some(open) = inner.pairing.as_mut() {
            open.failures += 1;
            if open.failures >= MAX_PAIR_FAILURES {
                inner.pairing = None;
                tracing::warn!("front: {MAX_PAIR_FAILURES} wrong pairing proofs: pairing closed");
            }
        }
    }
}

/// How a used code is remembered: its SHA-256 (the code itself is not kept).
fn code_hash(code: &str) -> String {
    crate::hex::hex(ring::digest::digest(&ring::digest::SHA256, code.as_bytes()).as_ref())
}

/// The paired box and the open pairing at start, from the flags and the data directory.
fn boxes(cfg: &FrontConfig, id: Identity) -> Result<Boxes, FrontError> {
    let state = |e| FrontError::State(cfg.data_dir.display().to_string(), e);
    let kept = match std::fs::read_to_string(cfg.data_dir.join(BOX_PIN_FILE)) {
        Ok(text) => Some(crate::hex::parse_pin(text.trim()).map_err(|e| {
            state(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{BOX_PIN_FILE}: {e}"),
            ))
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(state(e)),
    };
    let box_pin = cfg.box_pin.or(kept);
    let pairing = match &cfg.pair_code {
        None => None,
        Some(code) => {
            let code = super::pair::normalize_code(code)?;
            let used =
                std::fs::read_to_string(cfg.data_dir.join(USED_CODES_FILE)).unwrap_or_default();
            if used.lines().any(|l| l == code_hash(&code)) {
                tracing::info!(
                    "front: the pairing code was used already{}",
                    if box_pin.is_some() {
                        "; the paired box is kept"
                    } else {
                        ""
                    }
                );
                None
            } else {
                Some(OpenPairing { code, failures: 0 })
            }
        }
    };
    if box_pin.is_none() && pairing.is_none() {
        return Err(FrontError::NotPaired);
    }
    let paired = box_pin.map(|p| link::server_config(&id, p)).transpose()?;
    Ok(Boxes {
        data_dir: cfg.data_dir.clone(),
        pairing_tls: link::pairing_server_config(&id)?,
        id,
        inner: Mutex::new(BoxesInner { paired, pairing }),
    })
}

/// The newest link, if the box is connected; public connections wait for one.
struct Current(watch::Sender<Option<Opener>>);

impl Default for Current {
    fn default() -> Self {
        Current(watch::Sender::new(None))
    }
}

impl Current {
    fn get(&self) -> Option<Opener> {
        self.0.borrow().clone().filter(|o| !o.is_closed())
    }

    fn set(&self, opener: Opener) {
        self.0.send_replace(Some(opener));
    }

    /// The link `opener` ended: forget it unless a newer one replaced it.
    fn ended(&self, opener: &Opener) {
        self.0.send_if_modified(|cur| {
            let same = cur.as_ref().is_some_and(|c| c.same_link(opener));
            if same {
                *cur = None;
            }
            same
        });
    }

    /// The link, once there is one.
    async fn wait(&self) -> Opener {
        let mut changes = self.0.subscribe();
        loop {
            if let Some(o) = self.get() {
                return o;
            }
            // The sender lives as long as `self`.
            let _ = changes.changed().await;
        }
    }
}

/// Bind everything, then serve until the process ends. Prints nothing itself; the caller
/// logs [`Identity::fingerprint`] so the box can pin it.
pub async fn run(cfg: FrontConfig, id: Identity) -> Result<(), FrontError> {
    let boxes = Arc::new(boxes(&cfg, id)?);
    if boxes.lock().pairing.is_some() {
        tracing::info!("front: waiting for the box to pair");
    }
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
    tasks.spawn(accept_boxes(
        tunnel,
        boxes,
        current.clone(),
        cfg.public,
        cfg.outbound_private,
    ));
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
    boxes: Arc<Boxes>,
    current: Arc<Current>,
    public: IpAddr,
    outbound_private: bool,
) {
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (boxes, current) = (boxes.clone(), current.clone());
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            if let Err(e) = crate::net::keep_alive(&tcp) {
                tracing::warn!("front: keepalive for {peer}: {e}");
            }
            let served = tokio::time::timeout(HANDSHAKE_TIMEOUT, hello(tcp, &boxes)).await;
            match served {
                Ok(Ok(Hello::Link(tls))) => {
                    // The pinned certificate was checked in the handshake.
                    tracing::info!("front: the box connected from {peer}");
                    let (opener, task) = Opener::start(tls, Side::Front, move |stream| {
                        tokio::spawn(async move {
                            let served = super::outbound::serve(stream, public, outbound_private);
                            if let Err(e) = served.await {
                                tracing::debug!("front: outbound stream ended: {e}");
                            }
                        });
                    });
                    current.set(opener.clone());
                    let _ = task.await;
                    current.ended(&opener);
                    tracing::info!("front: the link from {peer} ended");
                }
                Ok(Ok(Hello::Pairing(mut tls))) => {
                    let code = boxes.lock().pairing.as_ref().map(|p| p.code.clone());
                    let keep = |pin| match boxes.paired(pin) {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::error!("front: the pairing could not be kept: {e}");
                            false
                        }
                    };
                    match super::pair::pair_front(&mut tls, code.as_deref(), keep).await {
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            tracing::warn!(
                                "front: a pairing from {peer} refused (wrong or used code)"
                            );
                            boxes.wrong_proof();
                        }
                        Err(e) => tracing::info!("front: pairing from {peer} failed: {e}"),
                    }
                }
                Ok(Ok(Hello::Unpaired)) => {
                    tracing::info!("front: a tunnel from {peer} refused: no box is paired yet")
                }
                Ok(Err(e)) => tracing::info!("front: tunnel handshake from {peer} refused: {e}"),
                Err(_) => tracing::info!("front: tunnel handshake from {peer} timed out"),
            }
        });
    }
}

/// What a connection to the tunnel port turned out to be.
enum Hello {
    /// The paired box's link.
    Link(tokio_rustls::server::TlsStream<TcpStream>),
    /// A box that wants to pair (any certificate; the code decides).
    Pairing(tokio_rustls::server::TlsStream<TcpStream>),
    /// A link while no box is paired.
    Unpaired,
}

/// The TLS handshake, with the configuration the ClientHello's ALPN asks for: a pairing
/// or the paired box's link.
async fn hello(tcp: TcpStream, boxes: &Boxes) -> std::io::Result<Hello> {
    let start =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
    let pairing = start
        .client_hello()
        .alpn()
        .is_some_and(|mut protocols| protocols.any(|p| p == link::PAIR_ALPN));
    if pairing {
        let tls = start.into_stream(boxes.pairing_tls.clone()).await?;
        return Ok(Hello::Pairing(tls));
    }
    let paired = boxes.lock().paired.clone();
    match paired {
        Some(cfg) => Ok(Hello::Link(start.into_stream(cfg).await?)),
        None => Ok(Hello::Unpaired),
    }
}

async fn accept_clients(listener: TcpListener, current: Arc<Current>, slots: Arc<Semaphore>) {
    loop {
        // No link (the box is reconnecting, the front just started): connections wait in
        // the listen backlog instead of being closed, and are served once the box is back
        // (clients retry much later after a connection that closed at once).
        current.wait().await;
        let Ok((tcp, client)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue; // dropped: closed at once
        };
        let current = current.clone();
        tokio::spawn(async move {
            let _slot = slot;
            // The link may have ended since: wait a little for the next one.
            let Ok(opener) = tokio::time::timeout(LINK_WAIT, current.wait()).await else {
                return;
            };
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
    super::copy_both_ways(&mut tcp, &mut stream).await?;
    Ok(())
}
