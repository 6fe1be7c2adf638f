//! Client-side connections for the black-box tests: a stream that is plain TCP or TLS
//! (tokio-rustls, ring provider, certificate not verified: the relay under test uses a
//! self-signed certificate), STARTTLS upgrade, and a line reader where every read is
//! bounded in time.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Default bound for one read (a line, a reply, a literal).
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound for connecting and for the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a read did not produce what was asked for.
#[derive(Debug)]
pub enum ReadError {
    /// Nothing (complete) arrived within the time bound.
    Timeout,
    /// The peer closed the connection (EOF) before a complete unit arrived.
    Closed,
    /// A socket or TLS error (a reset counts as the peer going away).
    Io(io::Error),
}

impl ReadError {
    /// The server ended the connection (EOF, reset, broken pipe).
    pub fn is_closed(&self) -> bool {
        match self {
            ReadError::Closed => true,
            ReadError::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            ),
            ReadError::Timeout => false,
        }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Timeout => write!(f, "timed out waiting for the server"),
            ReadError::Closed => write!(f, "connection closed by the server"),
            ReadError::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for ReadError {}

/// Plain TCP or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Accepts any server certificate but still checks the handshake signatures, so the
/// TLS session itself is sound.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS client configuration (ring, TLS 1.2 and 1.3, no certificate verification)
/// offering the given ALPN protocols.
pub fn tls_client_config(alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    tls_client_config_versions(alpn, rustls::DEFAULT_VERSIONS)
}

/// Like [`tls_client_config`], limited to the given protocol versions (e.g. only
/// `&rustls::version::TLS12` to check a server's minimum version).
pub fn tls_client_config_versions(
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .expect("ring supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn tls_handshake(
    tcp: TcpStream,
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    let connector = TlsConnector::from(config);
    let name = ServerName::IpAddress(addr.ip().into());
    match timeout(CONNECT_TIMEOUT, connector.connect(name, tcp)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

/// A connection with a read buffer; every read and write is bounded in time.
pub struct LineConn {
    stream: Option<Stream>,
    buf: Vec<u8>,
    /// Bound for one read operation (line, reply, literal).
    pub timeout: Duration,
}

impl LineConn {
    /// Plain TCP connection.
    pub async fn connect(addr: SocketAddr) -> io::Result<LineConn> {
        let tcp = match timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(r) => r?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
        };
        tcp.set_nodelay(true)?;
        Ok(Self::from_stream(Stream::Plain(tcp)))
    }

    /// Plain TCP connection from a chosen local address (e.g. `127.0.0.2`, so that the
    /// client IP differs from the relay's own address in IP-only mode).
    pub async fn connect_from(local: IpAddr, addr: SocketAddr) -> io::Result<LineConn> {
        let socket = match local {
            IpAddr::V4(_) => TcpSocket::new_v4()?,
            IpAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(local, 0))?;
        let tcp = match timeout(CONNECT_TIMEOUT, socket.connect(addr)).await {
            Ok(r) => r?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
        };
        tcp.set_nodelay(true)?;
        Ok(Self::from_stream(Stream::Plain(tcp)))
    }

    /// Implicit TLS connection (465, 993, 443).
    pub async fn connect_tls(addr: SocketAddr, alpn: &[&[u8]]) -> io::Result<LineConn> {
        Self::connect_tls_with(addr, tls_client_config(alpn)).await
    }

    /// Implicit TLS connection from a chosen local address.
    pub async fn connect_tls_from(
        local: IpAddr,
        addr: SocketAddr,
        alpn: &[&[u8]],
    ) -> io::Result<LineConn> {
        let plain = Self::connect_from(local, addr).await?;
        let Some(Stream::Plain(tcp)) = plain.stream else {
            unreachable!("fresh connection is plain")
        };
        let tls = tls_handshake(tcp, addr, tls_client_config(alpn)).await?;
        Ok(Self::from_stream(Stream::Tls(Box::new(tls))))
    }

    /// Implicit TLS connection with a given client configuration.
    pub async fn connect_tls_with(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> io::Result<LineConn> {
        let plain = Self::connect(addr).await?;
        let Some(Stream::Plain(tcp)) = plain.stream else {
            unreachable!("fresh connection is plain")
        };
        let tls = tls_handshake(tcp, addr, config).await?;
        Ok(Self::from_stream(Stream::Tls(Box::new(tls))))
    }

    fn from_stream(stream: Stream) -> LineConn {
        LineConn {
            stream: Some(stream),
            buf: Vec::new(),
            timeout: READ_TIMEOUT,
        }
    }

    fn stream(&mut self) -> io::Result<&mut Stream> {
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "stream lost"))
    }

    /// Whether TLS is active.
    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Some(Stream::Tls(_)))
    }

    /// The negotiated TLS version, if TLS is active.
    pub fn tls_version(&self) -> Option<rustls::ProtocolVersion> {
        match &self.stream {
            Some(Stream::Tls(s)) => s.get_ref().1.protocol_version(),
            _ => None,
        }
    }

    /// The negotiated ALPN protocol, if any.
    pub fn alpn(&self) -> Option<Vec<u8>> {
        match &self.stream {
            Some(Stream::Tls(s)) => s.get_ref().1.alpn_protocol().map(|p| p.to_vec()),
            _ => None,
        }
    }

    /// Upgrade to TLS (STARTTLS). Fails if the server sent bytes after its "go ahead"
    /// reply that we have not consumed (they would be a protocol violation).
    pub async fn start_tls(&mut self, addr: SocketAddr, alpn: &[&[u8]]) -> io::Result<()> {
        self.start_tls_with(addr, tls_client_config(alpn)).await
    }

    /// STARTTLS upgrade with a given client configuration.
    pub async fn start_tls_with(
        &mut self,
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> io::Result<()> {
        if !self.buf.is_empty() {
            return Err(io::Error::other(format!(
                "server sent {} unexpected byte(s) before the TLS handshake: {:?}",
                self.buf.len(),
                String::from_utf8_lossy(&self.buf)
            )));
        }
        match self.stream.take() {
            Some(Stream::Plain(tcp)) => {
                let tls = tls_handshake(tcp, addr, config).await?;
                self.stream = Some(Stream::Tls(Box::new(tls)));
                Ok(())
            }
            other => {
                self.stream = other;
                Err(io::Error::other("not a plain connection"))
            }
        }
    }

    /// Write all bytes (bounded in time) and flush.
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let limit = self.timeout.max(Duration::from_secs(30));
        let stream = self.stream()?;
        let fut = async {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        match timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
        }
    }

    /// Close our sending side (TCP FIN / TLS close_notify).
    pub async fn shutdown(&mut self) {
        if let Ok(s) = self.stream() {
            let _ = timeout(Duration::from_secs(2), s.shutdown()).await;
        }
    }

    /// One read into the buffer before `deadline`; returns the number of bytes read.
    async fn fill(&mut self, deadline: Instant) -> Result<usize, ReadError> {
        let mut chunk = [0u8; 16384];
        let stream = self.stream().map_err(ReadError::Io)?;
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => Err(ReadError::Timeout),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Err(ReadError::Closed),
            Ok(Err(e)) => Err(ReadError::Io(e)),
            Ok(Ok(0)) => Err(ReadError::Closed),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
        }
    }

    /// Read one line ending in LF; the returned bytes exclude the CRLF (or bare LF).
    pub async fn read_line(&mut self) -> Result<Vec<u8>, ReadError> {
        let deadline = Instant::now() + self.timeout;
        let mut scanned = 0;
        loop {
            if let Some(pos) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + pos;
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            scanned = self.buf.len();
            self.fill(deadline).await?;
        }
    }

    /// Read exactly `n` bytes.
    pub async fn read_exact(&mut self, n: usize) -> Result<Vec<u8>, ReadError> {
        let deadline = Instant::now() + self.timeout;
        while self.buf.len() < n {
            self.fill(deadline).await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Wait up to `within` for anything from the server: `Ok(bytes)` if something
    /// arrived (including already buffered bytes), `Err(Timeout)` if the server stayed
    /// silent, `Err(Closed)`/`Err(Io)` if it went away.
    pub async fn read_some(&mut self, within: Duration) -> Result<Vec<u8>, ReadError> {
        if self.buf.is_empty() {
            self.fill(Instant::now() + within).await?;
        }
        Ok(std::mem::take(&mut self.buf))
    }

    /// Read and discard until the server closes the connection; `true` if it closed
    /// within `within`, `false` if it was still open then. Discarded bytes are returned
    /// in the second field (for messages).
    pub async fn wait_closed(&mut self, within: Duration) -> (bool, Vec<u8>) {
        let deadline = Instant::now() + within;
        let mut seen = std::mem::take(&mut self.buf);
        loop {
            match self.fill(deadline).await {
                Ok(_) => seen.append(&mut self.buf),
                Err(ReadError::Timeout) => return (false, seen),
                Err(_) => return (true, seen),
            }
        }
    }
}
