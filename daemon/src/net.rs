//! Connection plumbing shared by the protocol sessions: a stream that is plain TCP or
//! TLS, the STARTTLS upgrade, listening sockets, and keepalive for long idle links.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Probes of an idle long-lived connection ([`keep_alive`]): the first after this much
/// silence, then every [`KEEPALIVE_INTERVAL`], dead after [`KEEPALIVE_PROBES`] unanswered.
pub const KEEPALIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(20);
pub const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
pub const KEEPALIVE_PROBES: u32 = 4;
/// Data unacknowledged this long ends the connection (TCP_USER_TIMEOUT, RFC 5482).
pub const USER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(45);

/// Make a long-lived, often idle connection (the front tunnel, issue 20) notice a dead
/// path within about 40 s: TCP keepalive probes (RFC 1122 §4.2.3.6) while idle, and
/// TCP_USER_TIMEOUT while data waits for an acknowledgement. Without them a NAT that
/// dropped its mapping, or a changed public address, leaves both ends waiting forever.
pub fn keep_alive(tcp: &TcpStream) -> io::Result<()> {
    let sock = socket2::SockRef::from(tcp);
    sock.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_PROBES),
    )?;
    sock.set_tcp_user_timeout(Some(USER_TIMEOUT))
}

/// A client connection, before or after TLS.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    pub fn is_tls(&self) -> bool {
        matches!(self, Conn::Tls(_))
    }

    /// Upgrade a plain connection (STARTTLS, RFC 3207 / RFC 9051 §6.2.1). Bytes the
    /// client pipelined after the command must be discarded by the caller before this.
    pub async fn start_tls(self, config: Arc<rustls::ServerConfig>) -> io::Result<Conn> {
        match self {
            Conn::Plain(tcp) => {
                let tls = TlsAcceptor::from(config).accept(tcp).await?;
                Ok(Conn::Tls(Box::new(tls)))
            }
            Conn::Tls(_) => Err(io::Error::other("TLS already active")),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// An `https://` URL taken apart for a hand-made HTTP/1.1 client (push notifications,
/// update downloads): where to connect, the TLS name, the `Host` header and the
/// origin-form request target (RFC 9112 §3.2).
#[derive(Debug, Clone)]
pub struct HttpsUrl {
    /// Host without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// The `Host` header value.
    pub authority: String,
    /// Path and query, `/` when empty.
    pub path: String,
    pub server_name: rustls_pki_types::ServerName<'static>,
}

impl HttpsUrl {
    /// `None` unless `url` is an `https://` URL with a valid host.
    pub fn parse(url: &str) -> Option<HttpsUrl> {
        let uri: hyper::Uri = url.parse().ok()?;
        if uri.scheme_str() != Some("https") {
            return None;
        }
        let authority = uri.authority()?.clone();
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let server_name = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => rustls_pki_types::ServerName::IpAddress(ip.into()),
            Err(_) => rustls_pki_types::ServerName::try_from(host.clone()).ok()?,
        };
        Some(HttpsUrl {
            port: authority.port_u16().unwrap_or(443),
            authority: authority.as_str().to_string(),
            path: uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "/".into()),
            host,
            server_name,
        })
    }
}

/// A listening socket on `addr` (address reuse on, backlog 1024). An `[::]` listener serves
/// IPv4 too unless an explicit IPv4 one is configured.
pub fn bind(addr: std::net::SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
