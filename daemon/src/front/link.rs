//! The tunnel's link (issue 20): one TCP connection that the box opens to the front, TLS 1.3
//! with a certificate on both sides — each side's own, self-signed, kept in its data
//! directory ([`Identity`]) and pinned by the other side by its SHA-256
//! ([`crate::tls::AcceptCertificate::fingerprint`]) — and over it a yamux session that
//! carries one stream per client connection. The front opens the streams ([`Opener`]), the
//! box takes them ([`serve_streams`]).

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
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(vec![id.cert.clone()], id.key.clone_key())?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(cfg))
}

/// The box's TLS: its identity, and only the front whose certificate is `pin`.
pub fn client_config(
    id: &Identity,
    pin: [u8; 32],
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = provider();
    let verifier = crate::tls::AcceptCertificate::fingerprint(pin, provider.clone());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(vec![id.cert.clone()], id.key.clone_key())?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(cfg))
}

fn yamux_config() -> yamux::Config {
    let mut cfg = yamux::Config::default();
    cfg.set_max_num_streams(MAX_STREAMS);
    cfg
}

type Waiter = oneshot::Sender<io::Result<Stream>>;

/// Opens streams on the front's side of a link; cheap to clone. Its link ends when the
/// last clone is dropped or the connection fails ([`Opener::closed`]).
#[derive(Clone)]
pub struct Opener {
    requests: mpsc::Sender<Waiter>,
}

impl Opener {
    /// Drive the yamux session over `io` (the front's end of the TLS connection) on a task
    /// of its own, which ends with the link.
    pub fn start<T>(io: T) -> (Opener, tokio::task::JoinHandle<()>)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<Waiter>(256);
        let task = tokio::spawn(async move {
            let mut conn = yamux::Connection::new(io.compat(), yamux_config(), yamux::Mode::Client);
            let mut waiting: VecDeque<Waiter> = VecDeque::new();
            std::future::poll_fn(|cx| {
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
                // The session makes progress only while polled; the box opens no streams.
                loop {
                    match conn.poll_next_inbound(cx) {
                        Poll::Ready(Some(Ok(stream))) => drop(stream),
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

    /// A new stream to the box.
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

/// The box's side: take every stream the front opens over `io` and hand it to `serve`,
/// until the link ends.
pub async fn serve_streams<T, F>(io: T, serve: F) -> io::Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Stream),
{
    let mut conn = yamux::Connection::new(io.compat(), yamux_config(), yamux::Mode::Server);
    loop {
        match std::future::poll_fn(|cx| conn.poll_next_inbound(cx)).await {
            Some(Ok(stream)) => serve(stream.compat()),
            Some(Err(e)) => return Err(io::Error::other(e.to_string())),
            None => return Ok(()),
        }
    }
}
