//! The built-in iroh relay (spec/relay.md §21 RT-4, CFG-5): realtime peer-to-peer
//! channels of Delta Chat webxdc apps, reached at `https://<domain>/relay` on the 443
//! listener, with the probes `/ping` and `/generate_204`.
//!
//! # Which server code, and how it is reached
//!
//! The relay protocol is served by the `iroh-relay` crate's own server, version 0.35.0:
//! Delta Chat core 2.65 links iroh 0.35.0 (read from the `deltachat-rpc-server` 2.65.0
//! binary the Python tests install), iroh 0.90+ changed the relay protocol, and upstream
//! chatmail also runs iroh-relay 0.35 (RT-4). With `default-features = false` and the
//! `server` feature it builds on rustc 1.95 with ring; no aws-lc crate enters the tree.
//!
//! iroh-relay 0.35 cannot serve a connection someone else accepted: its HTTP service is
//! private and insists on its own listener's stream type after the upgrade. So, as
//! upstream does behind nginx, the relay server runs on an ephemeral plain-HTTP port on
//! 127.0.0.1 (STUN and QUIC off, metrics off, every node allowed) and this module forwards
//! `/relay`, `/ping` and `/generate_204` to it: the request line and the headers the
//! relay reads go over a fresh loopback connection, its answer comes back unchanged
//! (status and headers, so the probes answer exactly as iroh-relay does), and after a
//! `101 Switching Protocols` both upgraded streams are spliced until either side closes.
//! The server starts at the first such request (the daemon pays nothing until a client
//! uses realtime channels) and lives as long as the process.
//!
//! # Cargo feature `iroh` (on by default)
//!
//! iroh-relay 0.35's `server` feature cannot be trimmed: it adds 134 crates to the
//! daemon's dependency tree (269 → 403; QUIC, pkarr, reqwest, an ACME client, x509
//! parsing, TOML, clap…), none of them aws-lc. Measured on the 2-core build machine
//! (2026-11-28, x86_64): those crates take about 430 CPU-seconds to compile in the
//! release profile (cargo `--timings`; a dev build costs about as much, since
//! dependencies are built at opt-level 2), so a clean CI run that builds dev, clippy
//! and the aarch64 release pays an estimated 15–20 CPU-minutes more (8–10 minutes of
//! wall time on 2 cores); the stripped x86_64 release binary grows from 13.9 MB to
//! 20.1 MB. The tree also gains rustls-pemfile 2.2 (unmaintained, RUSTSEC-2025-0134,
//! which `cargo deny` reports), used only by iroh-relay's certificate-file loading that
//! this module never calls.
//!
//! It stays on by default anyway: CFG-5 advertises `https://<mail_domain>` as the iroh
//! relay whenever `iroh_relay` is absent, so a default build without it would hand
//! Delta Chat a relay address that does not answer, and a feature that is off by
//! default would still have to be built in CI to be tested. `--no-default-features`
//! builds a daemon without it, for an image whose chatmail.ini sets `iroh_relay`
//! (another relay, or empty for none); such a build logs a warning when the key is
//! absent.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::routing::get;

use crate::config::Config;

/// The paths the relay answers (RT-4).
pub const PATHS: [&str; 3] = ["/relay", "/ping", "/generate_204"];

/// CFG-5: the built-in relay runs only when `iroh_relay` is absent from the config;
/// present (even empty) means another relay or none.
pub fn enabled(config: &Config) -> bool {
    config.iroh_relay.is_none()
}

/// Add the relay's routes to the HTTPS router when the built-in relay runs (CFG-5).
pub fn add_routes<S>(router: Router<S>, config: &Config) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    if !enabled(config) {
        return router;
    }
    match IrohRelay::global() {
        Some(relay) => add_routes_with(router, relay),
        None => router,
    }
}

/// Add the routes of one relay instance (the tests use their own instance).
pub fn add_routes_with<S>(mut router: Router<S>, relay: Arc<IrohRelay>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    for path in PATHS {
        let relay = relay.clone();
        router = router.route(
            path,
            get(move |req: Request| {
                let relay = relay.clone();
                async move { relay.forward(req).await }
            }),
        );
    }
    router
}

#[cfg(feature = "iroh")]
pub use imp::IrohRelay;

/// Stand-in when the crate is built without the `iroh` feature: no routes.
#[cfg(not(feature = "iroh"))]
pub struct IrohRelay;

#[cfg(not(feature = "iroh"))]
impl IrohRelay {
    fn global() -> Option<Arc<IrohRelay>> {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                "iroh_relay is not set but this build has no iroh relay (cargo feature `iroh`): \
                 set iroh_relay in the config"
            );
        });
        None
    }

    async fn forward(&self, _req: Request) -> axum::response::Response {
        use axum::response::IntoResponse;
        axum::http::StatusCode::NOT_FOUND.into_response()
    }
}

#[cfg(feature = "iroh")]
mod imp {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::{Arc, OnceLock};
    use std::time::Duration;

    use axum::body::Body;
    use axum::extract::Request;
    use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use http_body_util::{BodyExt, Empty, Limited};
    use hyper_util::rt::TokioIo;
    use iroh_relay::server::{AccessConfig, Limits, RelayConfig, Server, ServerConfig};
    use tokio::net::TcpStream;
    use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};

    /// Relayed connections open at once; beyond this `/relay` answers 503. A relay
    /// connection is one Delta Chat device with realtime channels in use.
    pub const MAX_CONNECTIONS: usize = 2048;
    /// Bound for reaching the loopback relay server and getting its answer.
    const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
    /// Bound for the client side of an upgrade to complete after the 101 went out.
    const UPGRADE_TIMEOUT: Duration = Duration::from_secs(30);
    /// Largest body accepted from the loopback server (its bodies are empty or tiny).
    const MAX_BODY: usize = 64 * 1024;
    /// Request headers the relay server reads (RT-4): the upgrade handshake (iroh's own
    /// `Upgrade: iroh derp http` or a WebSocket, RFC 6455 §4.1) and the
    /// `/generate_204` challenge. Nothing else (no client address) is passed on.
    const FORWARDED_HEADERS: [&str; 6] = [
        "host",
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "x-tailscale-challenge",
    ];

    #[derive(Debug, thiserror::Error)]
    enum ForwardError {
        #[error("starting the relay server: {0}")]
        Start(String),
        #[error("connecting to the relay server: {0}")]
        Connect(std::io::Error),
        #[error("relay server HTTP: {0}")]
        Http(#[from] hyper::Error),
        #[error("request: {0}")]
        Request(#[from] axum::http::Error),
        #[error("relay server did not answer within {FORWARD_TIMEOUT:?}")]
        Timeout,
        #[error("relay server body: {0}")]
        Body(String),
    }

    /// The iroh relay server on loopback and the forwarding to it.
    pub struct IrohRelay {
        server: OnceCell<Started>,
        slots: Arc<Semaphore>,
    }

    struct Started {
        addr: SocketAddr,
        /// Dropping the server stops it.
        _server: Server,
    }

    impl Default for IrohRelay {
        fn default() -> Self {
            Self::new()
        }
    }

    impl IrohRelay {
        /// A relay whose server starts at the first forwarded request.
        pub fn new() -> Self {
            IrohRelay {
                server: OnceCell::new(),
                slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            }
        }

        /// The daemon's one relay.
        pub(super) fn global() -> Option<Arc<IrohRelay>> {
            static GLOBAL: OnceLock<Arc<IrohRelay>> = OnceLock::new();
            Some(GLOBAL.get_or_init(|| Arc::new(IrohRelay::new())).clone())
        }

        /// The loopback address of the relay server, starting it on first use (a failed
        /// start is retried by the next request).
        pub async fn server_addr(&self) -> Result<SocketAddr, String> {
            let started = self
                .server
                .get_or_try_init(|| async {
                    // RT-4: relay over HTTP only; upstream runs with STUN off. TLS is the
                    // 443 listener's; QUIC address discovery and metrics are off.
                    let config: ServerConfig<(), ()> = ServerConfig {
                        relay: Some(RelayConfig {
                            http_bind_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                            tls: None,
                            limits: Limits::default(),
                            key_cache_capacity: None,
                            access: AccessConfig::Everyone,
                        }),
                        stun: None,
                        quic: None,
                        metrics_addr: None,
                    };
                    let server = Server::spawn(config).await.map_err(|e| format!("{e:#}"))?;
                    let addr = server
                        .http_addr()
                        .ok_or_else(|| "relay server has no HTTP address".to_string())?;
                    tracing::info!("iroh relay started (iroh-relay 0.35)");
                    Ok::<_, String>(Started {
                        addr,
                        _server: server,
                    })
                })
                .await?;
            Ok(started.addr)
        }

        /// Forward one request to the relay server and give its answer back; on `101`
        /// splice the two upgraded connections.
        pub(super) async fn forward(&self, mut req: Request) -> Response {
            let upgrading = req.headers().contains_key(header::UPGRADE);
            // Each relayed connection holds a slot for its whole life; probes too, briefly.
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                tracing::warn!("iroh relay: {MAX_CONNECTIONS} connections open, refusing");
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            };
            // Owned parts: the request body type is not `Sync`, so no `&Request` may be
            // held across an await.
            let path = req
                .uri()
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .to_string();
            let mut headers = Vec::new();
            for name in FORWARDED_HEADERS {
                for value in req.headers().get_all(name) {
                    headers.push((name, value.clone()));
                }
            }
            let method = req.method().clone();
            let exchange = self.exchange(method, path, headers);
            let answer = match tokio::time::timeout(FORWARD_TIMEOUT, exchange).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) => return failed(e),
                Err(_) => return failed(ForwardError::Timeout),
            };
            let mut answer = answer;
            if answer.status() == StatusCode::SWITCHING_PROTOCOLS && upgrading {
                let client = hyper::upgrade::on(&mut req);
                let server = hyper::upgrade::on(&mut answer);
                tokio::spawn(splice(client, server, slot));
                return response_head(&answer, Body::empty());
            }
            // A probe or a refused upgrade: pass the (small) body on.
            let head = response_head(&answer, Body::empty());
            match Limited::new(answer.into_body(), MAX_BODY).collect().await {
                Ok(body) => {
                    let (parts, _) = head.into_parts();
                    Response::from_parts(parts, Body::from(body.to_bytes()))
                }
                Err(e) => failed(ForwardError::Body(e.to_string())),
            }
        }

        /// One request–response exchange with the relay server on a new loopback
        /// connection (kept open for the upgrade when there is one).
        async fn exchange(
            &self,
            method: Method,
            path: String,
            headers: Vec<(&'static str, HeaderValue)>,
        ) -> Result<hyper::Response<hyper::body::Incoming>, ForwardError> {
            let addr = self.server_addr().await.map_err(ForwardError::Start)?;
            let stream = TcpStream::connect(addr)
                .await
                .map_err(ForwardError::Connect)?;
            let _ = stream.set_nodelay(true);
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!("iroh relay: loopback connection: {e}");
                }
            });
            let mut inner = hyper::Request::builder().method(method).uri(path);
            for (name, value) in headers {
                inner = inner.header(name, value);
            }
            let inner = inner.body(Empty::<bytes::Bytes>::new())?;
            Ok(sender.send_request(inner).await?)
        }
    }

    /// The relay server's status and headers (less framing headers, which hyper sets
    /// for the body it sends) with `body`.
    fn response_head(answer: &hyper::Response<hyper::body::Incoming>, body: Body) -> Response {
        let mut resp = Response::new(body);
        *resp.status_mut() = answer.status();
        for (name, value) in answer.headers() {
            if is_framing(name) {
                continue;
            }
            resp.headers_mut().append(name.clone(), value.clone());
        }
        resp
    }

    fn is_framing(name: &HeaderName) -> bool {
        name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING
    }

    fn failed(e: ForwardError) -> Response {
        tracing::warn!("iroh relay: {e}");
        let mut resp = StatusCode::BAD_GATEWAY.into_response();
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }

    /// Copy bytes both ways between the client's upgraded connection and the relay
    /// server's until either side closes (the relay server pings idle clients and
    /// drops dead ones, which ends the copy).
    async fn splice(
        client: hyper::upgrade::OnUpgrade,
        server: hyper::upgrade::OnUpgrade,
        _slot: OwnedSemaphorePermit,
    ) {
        let (client, server) =
            match tokio::time::timeout(UPGRADE_TIMEOUT, async { tokio::join!(client, server) })
                .await
            {
                Ok((Ok(client), Ok(server))) => (client, server),
                Ok((Err(e), _)) | Ok((_, Err(e))) => {
                    tracing::debug!("iroh relay: upgrade failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!("iroh relay: upgrade did not complete");
                    return;
                }
            };
        let mut client = TokioIo::new(client);
        let mut server = TokioIo::new(server);
        match tokio::io::copy_bidirectional(&mut client, &mut server).await {
            Ok((up, down)) => {
                tracing::debug!("iroh relay connection closed ({up} B up, {down} B down)")
            }
            Err(e) => tracing::debug!("iroh relay connection ended: {e}"),
        }
    }
}

#[cfg(all(test, feature = "iroh"))]
mod tests;
