//! The metrics endpoint (LOG-5): the registry's text ([`crate::metrics`]) served on
//! `mtail_address` alone (upstream serves mtail on 3903). `GET /metrics` (and `HEAD`)
//! answers in the Prometheus text format 0.0.4, or in OpenMetrics 1.0.0 when the scraper
//! asks for it in `Accept`; other paths get 404, other methods 405.
//!
//! The address is parsed and bound by [`bind`] before the relay's services start, so a bad
//! address or a taken port stops the start (`main` turns [`ServeError`] into the exit
//! code); [`run`] then accepts scrapes on the bound listener. The endpoint reads only the
//! registry and the store's queue length.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::{AddressError, parse_metrics_address};
use crate::metrics::{Format, Registry};
use crate::net::Conn;
use crate::store::Store;

/// Scrapes served at the same time; more wait for a slot (the address is private).
const MAX_SCRAPES: usize = 8;
/// A scrape connection is closed after this long, whatever it does.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// Time allowed for the request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Time limits of a scrape connection (the body limits are the relay's: a scrape has no
/// body, and a request with one is refused before it is read).
const TIMEOUTS: super::Timeouts = super::Timeouts {
    header: HEADER_TIMEOUT,
    lifetime: CONNECTION_LIFETIME,
    ..super::TIMEOUTS
};

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Address(#[from] AddressError),
    #[error("cannot listen on {addr} (metrics): {err}")]
    Bind {
        addr: SocketAddr,
        err: std::io::Error,
    },
}

impl ServeError {
    /// The process's exit code: 2 for a bad address (as for every other config error), 1
    /// when the address cannot be bound (as for an unavailable listener address).
    pub fn exit_code(&self) -> u8 {
        match self {
            ServeError::Address(_) => 2,
            ServeError::Bind { .. } => 1,
        }
    }
}

/// Parse `mtail_address` and bind it.
pub async fn bind(mtail_address: &str) -> Result<TcpListener, ServeError> {
    let addr = parse_metrics_address(mtail_address)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|err| ServeError::Bind { addr, err })?;
    tracing::info!("metrics listening on {addr}");
    Ok(listener)
}

/// What the handler reads.
#[derive(Clone)]
struct Scrape {
    store: Store,
    registry: &'static Registry,
}

/// `GET`/`HEAD /metrics`; 405 for other methods there, 404 elsewhere.
pub fn router(store: Store, registry: &'static Registry) -> Router {
    Router::new()
        // axum answers HEAD with the GET handler's headers and no body.
        .route("/metrics", get(respond).fallback(use_get))
        .fallback(not_found)
        .with_state(Scrape { store, registry })
}

/// Accept scrapes on `listener` for ever, at most [`MAX_SCRAPES`] at a time.
pub async fn run(listener: TcpListener, store: Store, registry: &'static Registry) {
    let router = router(store, registry);
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let router = router.clone();
        tokio::spawn(async move {
            let _permit = permit;
            super::serve(Conn::Plain(stream), router, None, TIMEOUTS, None).await;
        });
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

/// The exposition in the format `Accept` asks for.
async fn respond(State(scrape): State<Scrape>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::from_accept(accept);
    let queue_len = match scrape.store.queue_len() {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!("metrics: cannot read the queue length: {e}");
            None
        }
    };
    let text = scrape.registry.render(format, queue_len);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        )],
        text,
    )
        .into_response()
}

/// RFC 9110 §15.5.6: 405 names the allowed methods in `Allow`.
async fn use_get() -> Response {
    let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    resp
}

async fn not_found() -> Response {
    plain(
        StatusCode::NOT_FOUND,
        "not found; metrics are at /metrics\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One request on a fresh connection; the whole answer as text.
    async fn exchange(addr: SocketAddr, req: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .expect("in time")
            .expect("read");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn metrics_address_forms() {
        let ok = |s: &str| parse_metrics_address(s).expect(s).to_string();
        assert_eq!(ok("127.0.0.1"), "127.0.0.1:3903");
        assert_eq!(ok(" 127.0.0.1:3904 "), "127.0.0.1:3904");
        assert_eq!(ok("[::1]:3903"), "[::1]:3903");
        assert_eq!(ok("::1"), "[::1]:3903");
        assert_eq!(ok("[::1]"), "[::1]:3903");
        for bad in [
            "",
            "localhost",
            "localhost:3903",
            "127.0.0.1:",
            "127.0.0.1:0",
            "127.0.0.1:70000",
            "[127.0.0.1]",
            "::1:3903x",
            "http://127.0.0.1:3903",
        ] {
            let e = parse_metrics_address(bad).expect_err(bad);
            assert!(e.to_string().starts_with("mtail_address: expected"), "{e}");
        }
    }

    #[tokio::test]
    async fn endpoint_serves_both_formats() {
        static REG: Registry = Registry::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("store.redb")).expect("store");
        let listener = bind("127.0.0.1:0").await;
        // Port 0 is refused by the config parser; bind a test port directly.
        let Err(e) = listener else {
            panic!("port 0 accepted")
        };
        assert!(matches!(e, ServeError::Address(_)), "{e}");
        assert_eq!(e.exit_code(), 2);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(run(listener, store, &REG));
        REG.account_created();
        let get = |req: &'static str| exchange(addr, req);
        let r = get("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            r.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{r}"
        );
        assert!(r.contains("\nrelaybox_accounts_created_total 1\n"), "{r}");
        assert!(r.contains("relaybox_queue_length 0\n"), "{r}");
        let r = get(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text; \
             version=1.0.0\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            r.to_ascii_lowercase().contains(
                "content-type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n"
            ),
            "{r}"
        );
        assert!(r.ends_with("# EOF\n"), "{r}");
        // HEAD: the GET answer's status and type, no body.
        let r = get("HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            r.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{r}"
        );
        assert!(r.ends_with("\r\n\r\n"), "{r}");
        assert!(!r.contains("relaybox_"), "{r}");
        let r = get("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
        assert!(
            r.ends_with("\r\n\r\nnot found; metrics are at /metrics\n"),
            "{r}"
        );
        let r = get(
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 405 "), "{r}");
        let lower = r.to_ascii_lowercase();
        assert_eq!(lower.matches("\r\nallow: ").count(), 1, "{r}");
        assert!(lower.contains("\r\nallow: get, head\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nuse GET\n"), "{r}");
        server.abort();
    }

    #[tokio::test]
    async fn a_taken_port_is_a_bind_error() {
        let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = taken.local_addr().expect("addr");
        let e = bind(&addr.to_string()).await.expect_err("port in use");
        assert!(matches!(e, ServeError::Bind { .. }), "{e}");
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("(metrics)"), "{e}");
    }
}
