//! The one HTTPS client of the relay: HTTP/1.1 over rustls (ring) on hyper-util's client,
//! used by the push notifier (PUSH-3), outbound `/mxdeliv` (OUT-3 step 1), the update
//! download (OTA-4) and the ACME client. This module owns the connection: how the server
//! is reached ([`Dial`]: the URL's host through the system resolver, or a way the caller
//! chooses — outbound connects to the exact addresses its own resolver found), the TLS
//! handshake with the caller's client configuration (roots from [`super::client_roots`],
//! or OUT-4's any-certificate verifier), SNI and certificate name from the URL's host,
//! the `Host` header from the URL's authority (RFC 9112 §3.2, origin-form target), a
//! bound on connecting, and how many connections are kept alive. Each caller keeps its
//! own bounds on the whole request and reads the body with [`read_body`], capped.
//!
//! hyper-rustls is not used: its builder refuses a client configuration with ALPN set
//! and offers none for HTTP/1.1 alone, while outbound offers `http/1.1` (a relay's port
//! 443 routes by ALPN, PORT-2), and the custom dialing needs a connector of our own
//! anyway; the TLS step is a few lines of tokio-rustls here.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The request body every caller sends (a token, a message, a JSON document, nothing).
pub type Body = Full<Bytes>;

/// A future that connects a TCP stream, for [`Dial::Custom`].
pub type DialFuture = Pin<Box<dyn Future<Output = Result<TcpStream, String>> + Send>>;

/// How the server of a request is reached.
#[derive(Clone)]
pub enum Dial {
    /// The URL's host through the system resolver, its addresses tried in turn.
    Resolve,
    /// The caller's own way (outbound: the addresses it resolved, Happy Eyeballs, its
    /// source address); the URL's host still gives SNI and `Host`.
    Custom(Arc<dyn Fn() -> DialFuture + Send + Sync>),
}

/// How a client connects.
#[derive(Clone)]
pub struct Options {
    pub dial: Dial,
    /// Bound of the TCP connect, and again of the TLS handshake.
    pub connect_timeout: Duration,
    /// Connections kept alive for later requests (0: one connection per request).
    pub max_idle: usize,
}

impl Options {
    /// Resolve the URL's host, one connection per request.
    pub fn new(connect_timeout: Duration) -> Options {
        Options {
            dial: Dial::Resolve,
            connect_timeout,
            max_idle: 0,
        }
    }
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpsError {
    /// No connection: resolving, TCP or TLS (the text says which and to where).
    #[error("{0}")]
    Connect(String),
    /// The connection broke or the server did not speak HTTP/1.1.
    #[error("HTTP: {0}")]
    Http(String),
    /// The request could not be built (a bad URL or header).
    #[error("request: {0}")]
    Request(String),
    /// The response body is larger than the caller reads.
    #[error("response body larger than {0} bytes")]
    TooLarge(usize),
}

impl HttpsError {
    /// No connection could be made (the server is unreachable).
    pub fn is_connect(&self) -> bool {
        matches!(self, HttpsError::Connect(_))
    }
}

/// An HTTPS client over one TLS client configuration.
#[derive(Clone)]
pub struct HttpsClient {
    inner: hyper_util::client::legacy::Client<Connector, Body>,
}

impl HttpsClient {
    /// A client with `tls` (its ALPN list is offered as is) connecting as `options` say.
    pub fn new(tls: Arc<rustls::ClientConfig>, options: Options) -> HttpsClient {
        let connector = Connector {
            tls: tokio_rustls::TlsConnector::from(tls),
            dial: options.dial,
            timeout: options.connect_timeout,
        };
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(options.max_idle)
            .build(connector);
        HttpsClient { inner }
    }

    /// A client trusting `roots` (web-PKI name and chain checks), TLS 1.2 and 1.3, ring.
    pub fn verified(
        roots: impl Into<Arc<rustls::RootCertStore>>,
        options: Options,
    ) -> Result<HttpsClient, HttpsError> {
        Ok(HttpsClient::new(Arc::new(verified_config(roots)?), options))
    }

    /// Send `req` (an absolute `https://` URL) and return the response head; the body is
    /// read by the caller ([`read_body`]). The caller bounds the time.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, HttpsError> {
        self.inner.request(req).await.map_err(from_client_error)
    }
}

/// A client configuration trusting `roots`: TLS 1.2 and 1.3 with ring, no client
/// certificate, no ALPN.
pub fn verified_config(
    roots: impl Into<Arc<rustls::RootCertStore>>,
) -> Result<rustls::ClientConfig, HttpsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpsError::Request(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The whole body, at most `max` bytes.
pub async fn read_body(body: Incoming, max: usize) -> Result<Bytes, HttpsError> {
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(HttpsError::TooLarge(max)),
        Err(e) => Err(HttpsError::Http(e.to_string())),
    }
}

fn from_client_error(e: hyper_util::client::legacy::Error) -> HttpsError {
    use std::error::Error as _;
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(c) = s.downcast_ref::<ConnectError>() {
            return HttpsError::Connect(c.0.clone());
        }
        source = s.source();
    }
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    if e.is_connect() {
        HttpsError::Connect(text)
    } else {
        HttpsError::Http(text)
    }
}

/// A connection failure, in words naming the step and the server.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ConnectError(String);

/// hyper-util's connector: dial, then TLS with the name of the URL's host.
#[derive(Clone)]
struct Connector {
    tls: tokio_rustls::TlsConnector,
    dial: Dial,
    timeout: Duration,
}

impl tower::Service<Uri> for Connector {
    type Response = Stream;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(uri).await.map_err(ConnectError) })
    }
}

impl Connector {
    async fn connect(self, uri: Uri) -> Result<Stream, String> {
        if uri.scheme_str() != Some("https") {
            return Err(format!("{uri} is not an https URL"));
        }
        let host = uri
            .host()
            .ok_or_else(|| format!("{uri} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        // SNI and the certificate name: the host name, or the address (no SNI).
        let name = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.clone())
                .map_err(|_| format!("{host} is not a valid host name"))?,
        };
        let secs = self.timeout.as_secs();
        let dial = async {
            match &self.dial {
                Dial::Resolve => TcpStream::connect((host.as_str(), port))
                    .await
                    .map_err(|e| format!("cannot connect to {host}:{port}: {e}")),
                Dial::Custom(dial) => dial().await,
            }
        };
        let tcp = tokio::time::timeout(self.timeout, dial)
            .await
            .map_err(|_| format!("cannot connect to {host}:{port}: no answer within {secs} s"))??;
        let _ = tcp.set_nodelay(true);
        let tls = tokio::time::timeout(self.timeout, self.tls.connect(name, tcp))
            .await
            .map_err(|_| format!("TLS with {host}:{port}: no answer within {secs} s"))?
            .map_err(|e| format!("TLS with {host}:{port} failed: {e}"))?;
        Ok(Stream(TokioIo::new(tls)))
    }
}

/// A TLS connection as hyper-util's client takes it.
struct Stream(TokioIo<TlsStream<TcpStream>>);

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// An HTTPS server on 127.0.0.1 with a self-signed certificate for `127.0.0.1`
    /// answering every request with `body`; records each request's Host header and the
    /// peer port of its connection.
    struct Server {
        port: u16,
        roots: rustls::RootCertStore,
        seen: Arc<Mutex<Vec<(String, u16)>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn serve(dir: &std::path::Path, body: &'static [u8]) -> Server {
        let (acceptor, roots) = crate::testing::loopback_tls(dir);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<(String, u16)>>> = Arc::default();
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    return;
                };
                let (acceptor, log) = (acceptor.clone(), log.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let host = req
                            .headers()
                            .get(hyper::header::HOST)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        log.lock().unwrap().push((host, peer.port()));
                        async move {
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from_static(body),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Server {
            port,
            roots,
            seen,
            task,
        }
    }

    fn get(url: &str) -> Request<Body> {
        Request::get(url).body(Body::default()).unwrap()
    }

    const T: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn requests_keep_alive_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let s = serve(dir.path(), b"hello").await;
        let url = format!("https://127.0.0.1:{}/x", s.port);
        // Kept alive: the second request uses the first connection.
        let mut options = Options::new(T);
        options.max_idle = 2;
        let client = HttpsClient::verified(s.roots.clone(), options).unwrap();
        for _ in 0..2 {
            let rsp = client.send(get(&url)).await.unwrap();
            assert_eq!(rsp.status(), 200);
            let body = read_body(rsp.into_body(), 5).await.unwrap();
            assert_eq!(&body[..], b"hello");
        }
        // One connection per request.
        let client = HttpsClient::verified(s.roots.clone(), Options::new(T)).unwrap();
        for _ in 0..2 {
            let rsp = client.send(get(&url)).await.unwrap();
            assert_eq!(
                read_body(rsp.into_body(), 4).await,
                Err(HttpsError::TooLarge(4))
            );
        }
        let seen = s.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 4);
        let host = format!("127.0.0.1:{}", s.port);
        assert!(seen.iter().all(|(h, _)| *h == host), "{seen:?}");
        assert_eq!(seen[0].1, seen[1].1, "kept alive");
        assert_ne!(seen[2].1, seen[3].1, "one connection each");
    }

    #[tokio::test]
    async fn custom_dial_connects_where_told_with_the_url_name() {
        let dir = tempfile::tempdir().unwrap();
        let s = serve(dir.path(), b"ok").await;
        let port = s.port;
        let dials = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = dials.clone();
        let mut options = Options::new(T);
        options.dial = Dial::Custom(Arc::new(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                TcpStream::connect(("127.0.0.1", port))
                    .await
                    .map_err(|e| e.to_string())
            })
        }));
        let client = HttpsClient::verified(s.roots.clone(), options).unwrap();
        // The URL's port is not where the dial goes; Host and the name come from it.
        let rsp = client.send(get("https://127.0.0.1:1/x")).await.unwrap();
        assert_eq!(rsp.status(), 200);
        assert_eq!(dials.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(s.seen.lock().unwrap()[0].0, "127.0.0.1:1");
    }

    #[tokio::test]
    async fn failures_say_which_step() {
        let dir = tempfile::tempdir().unwrap();
        let s = serve(dir.path(), b"ok").await;
        let url = format!("https://127.0.0.1:{}/x", s.port);
        let untrusted =
            HttpsClient::verified(rustls::RootCertStore::empty(), Options::new(T)).unwrap();
        let err = untrusted.send(get(&url)).await.unwrap_err();
        assert!(err.is_connect(), "{err}");
        assert!(err.to_string().starts_with("TLS with 127.0.0.1:"), "{err}");
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let err = untrusted
            .send(get(&format!("https://127.0.0.1:{closed_port}/")))
            .await
            .unwrap_err();
        assert!(err.is_connect(), "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot connect to 127.0.0.1:{closed_port}")),
            "{err}"
        );
        let err = untrusted
            .send(get("http://127.0.0.1:1/"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not an https URL"), "{err}");
    }
}
