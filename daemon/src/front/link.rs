//! The tunnel's link (issue 20): one TCP connection that the box opens to the front, TLS 1.3
//! with a certificate on both sides — each side's own, self-signed, kept in its data
//! directory ([`Identity`]) and pinned by the other side by its SHA-256
//! ([`crate::tls::AcceptCertificate::fingerprint`]) — and over it a yamux session that
//! carries one stream per client connection, which the front opens, and one per outbound
//! SMTP connection, which the box opens ([`Opener`] on both sides).

use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::task::Poll;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

/// ALPN of the tunnel, so that nothing else is mistaken for it.
pub const ALPN: &[u8] = b"relaybox-tunnel/1";
/// ALPN of a pairing ([`super::pair`]) on the same port.
pub const PAIR_ALPN: &[u8] = b"relaybox-pair/1";
/// Streams open at once on one link (each is a client connection).
pub const MAX_STREAMS: usize = 4096;

/// A stream of the tunnel, as Tokio reads and writes it.
pub type Stream = Compat<yamux::Stream>;

/// This side's certificate and key for the tunnel.
pub struct Identity {
    pub cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    /// The identity kept in `dir` (`tunnel.crt`, `tunnel.key`, mode 0600), made on first
    /// use.
    pub fn load_or_create(dir: &Path) -> io::Result<Identity> {
        let (crt, key) = (dir.join("tunnel.crt"), dir.join("tunnel.key"));
        if !crt.exists() || !key.exists() {
            crate::private::dir(dir)?;
            let (cert_pem, key_pem) = crate::tls::generate_self_signed("relaybox-tunnel")
                .map_err(|e| io::Error::other(e.to_string()))?;
            crate::files::write_atomic(&key, key_pem.as_bytes(), 0o600)?;
            crate::files::write_atomic(&crt, cert_pem.as_bytes(), 0o644)?;
        }
        let bad = |p: &Path, e: &dyn std::fmt::Display| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", p.display()))
        };
        let cert = CertificateDer::from_pem_file(&crt).map_err(|e| bad(&crt, &e))?;
        let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| bad(&key, &e))?;
        Ok(Identity { cert, key })
    }

    /// How the other side names this one: `sha256:` and the certificate's SHA-256 in hex.
    pub fn fingerprint(&self) -> String {
        crate::hex::pin_text(&crate::tls::cert_sha256(&self.cert))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The front's TLS: its identity, and only the box whose certificate is `pin`.
pub fn server_config(
    id: &Identity,
    pin: [u8; 32],
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = provider();
    let verifier = crate::tls::AcceptCertificate::fingerprint(pin, provider.clone());
    server_config_with(id, verifier, provider, ALPN)
}

/// The front's TLS for a pairing ([`super::pair`]): any box certificate, which the pairing
/// code then vouches for.
pub fn pairing_server_config(id: &Identity) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = provider();
    let verifier = crate::tls::AcceptCertificate::any(provider.clone());
    server_config_with(id, verifier, provider, PAIR_ALPN)
}

fn server_config_with(
    id: &Identity,
    verifier: crate::tls::AcceptCertificate,
    provider: Arc<rustls::crypto::CryptoProvider>,
    alpn: &[u8],
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(vec![id.cert.clone()], id.key.clone_key())?;
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(cfg))
}

/// The box's TLS: its identity, and only the front whose certificate is `pin`.
pub fn client_config(
    id: &Identity,
    pin: [u8; 32],
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = provider();
    let verifier = crate::tls::AcceptCertificate::fingerprint(pin, provider.clone());
    client_config_with(id, verifier, provider, ALPN)
}

/// The box's TLS for a pairing: any front certificate, which the pairing code then vouches
/// for.
pub fn pairing_client_config(id: &Identity) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = provider();
    let verifier = crate::tls::AcceptCertificate::any(provider.clone());
    client_config_with(id, verifier, provider, PAIR_ALPN)
}

fn client_config_with(
    id: &Identity,
    verifier: crate::tls::AcceptCertificate,
    provider: Arc<rustls::crypto::CryptoProvider>,
    alpn: &[u8],
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(vec![id.cert.clone()], id.key.clone_key())?;
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(cfg))
}

fn yamux_config() -> yamux::Config {
    let mut cfg = yamux::Config::default();
    cfg.set_max_num_streams(MAX_STREAMS);
    cfg
}

type Waiter = oneshot::Sender<io::Result<Stream>>;

/// Opens streams on one side of a link; cheap to clone. The link ends when the last clone
/// is dropped or the connection fails ([`Opener::is_closed`]).
#[derive(Clone, Debug)]
pub struct Opener {
    requests: mpsc::Sender<Waiter>,
}

/// Which side of the link this is (yamux numbers the streams of each side apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The front: opens a stream per client connection.
    Front,
    /// The box: opens a stream per outbound SMTP connection ([`super::home::Tunnel::connect`]).
    Box,
}

impl Opener {
    /// Drive the yamux session over `io` (this side's end of the TLS connection) on a task
    /// of its own, which ends with the link; every stream the other side opens goes to
    /// `inbound`.
    pub fn start<T, F>(io: T, side: Side, inbound: F) -> (Opener, tokio::task::JoinHandle<()>)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        F: Fn(Stream) + Send + Sync + 'static,
    {
        let mode = match side {
            Side::Front => yamux::Mode::Client,
            Side::Box => yamux::Mode::Server,
        };
        let (tx, mut rx) = mpsc::channel::<Waiter>(256);
        let task = tokio::spawn(async move {
            let mut conn = yamux::Connection::new(io.compat(), yamux_config(), mode);
            let mut waiting: VecDeque<Waiter> = VecDeque::new();
            std::future::poll_fn(|cx| {
                // Every clone dropped: the link ends.
                while let Poll::Ready(request) = rx.poll_recv(cx) {
                    match request {
                        Some(w) => waiting.push_back(w),
                        None => return Poll::Ready(()),
                    }
                }
                while !waiting.is_empty() {
                    match conn.poll_new_outbound(cx) {
                        Poll::Ready(Ok(stream)) => {
                            if let Some(w) = waiting.pop_front() {
                                let _ = w.send(Ok(stream.compat()));
                            }
                        }
                        Poll::Ready(Err(e)) => {
                            for w in waiting.drain(..) {
                                let _ = w.send(Err(io::Error::other(e.to_string())));
                            }
                            return Poll::Ready(());
                        }
                        Poll::Pending => break,
                    }
                }
                // The session makes progress only while polled.
                loop {
                    match conn.poll_next_inbound(cx) {
                        Poll::Ready(Some(Ok(stream))) => inbound(stream.compat()),
                        Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                        Poll::Pending => break,
                    }
                }
                Poll::Pending
            })
            .await;
        });
        (Opener { requests: tx }, task)
    }

    /// A new stream to the other side.
    pub async fn open(&self) -> io::Result<Stream> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(tx)
            .await
            .map_err(|_| io::Error::other("the tunnel is closed"))?;
        rx.await
            .map_err(|_| io::Error::other("the tunnel is closed"))?
    }

    /// Whether the link has ended.
    pub fn is_closed(&self) -> bool {
        self.requests.is_closed()
    }
}
