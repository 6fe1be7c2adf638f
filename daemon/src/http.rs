//! HTTP(S) of the relay core (spec/relay.md §5, §17): `POST /new` and the legacy
//! `/cgi-bin/newemail.py` (NEW-1..5) with their per-IP rate limit, the Mozilla autoconfig
//! file, `robots.txt`, the `www.` redirect (PORT-5), 404 for everything else, and the
//! port-80 redirect to HTTPS (PORT-4). Served with hyper's HTTP/1.1 server on a
//! connection the listener already accepted (and, for 443, TLS-terminated).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Serialize;

use crate::config::Config;
use crate::net::Conn;
use crate::onboarding;
use crate::policy::ratelimit::{Quota, RateLimiter};
use crate::server::Relay;

/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound on one connection's life, keep-alive included.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(600);
/// Paths of the account endpoint (NEW-1).
const NEW_PATHS: [&str; 2] = ["/new", "/cgi-bin/newemail.py"];
/// Mozilla autoconfig location (§17).
const AUTOCONFIG_PATH: &str = "/.well-known/autoconfig/mail/config-v1.1.xml";

/// NEW-3: 2 requests per second per client IP, burst 5 (upstream nginx `limit_req`).
pub fn new_account_quota() -> Quota {
    Quota::new(2, Duration::from_secs(1), 5)
}

/// The per-IP limiter of `/new`, shared by all HTTPS connections of the process.
fn new_account_limiter() -> Arc<RateLimiter<IpAddr>> {
    static LIMITER: OnceLock<Arc<RateLimiter<IpAddr>>> = OnceLock::new();
    LIMITER
        .get_or_init(|| Arc::new(RateLimiter::new(new_account_quota())))
        .clone()
}

/// What the handlers of one connection share.
#[derive(Clone)]
pub struct Web {
    pub relay: Arc<Relay>,
    /// NEW-3 limiter keyed by client IP.
    pub limiter: Arc<RateLimiter<IpAddr>>,
    /// The client's address (IPv4-mapped IPv6 folded to IPv4).
    pub peer: IpAddr,
}

/// Serve HTTPS requests on an established TLS connection (443).
pub async fn serve_https(relay: Arc<Relay>, conn: Conn, peer: SocketAddr) {
    let web = Web {
        relay,
        limiter: new_account_limiter(),
        peer: peer.ip().to_canonical(),
    };
    serve(conn, https_router(web)).await;
}

/// Serve plain HTTP (80): redirects to HTTPS (PORT-4).
pub async fn serve_http(relay: Arc<Relay>, conn: Conn, peer: SocketAddr) {
    let _ = peer;
    serve(conn, http_router(relay)).await;
}

/// Run HTTP/1.1 on one connection until the client closes it or a bound is hit.
async fn serve(conn: Conn, router: Router) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let connection = builder
        .serve_connection(TokioIo::new(conn), TowerToHyperService::new(router))
        .with_upgrades();
    match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!("http connection ended: {e}"),
        Err(_) => tracing::debug!("http connection closed after {CONNECTION_LIFETIME:?}"),
    }
}

/// The HTTPS routes (§17).
pub fn https_router(web: Web) -> Router {
    let mut router = Router::new();
    for path in NEW_PATHS {
        router = router.route(path, get(new_account_get).post(new_account));
    }
    router
        .route(AUTOCONFIG_PATH, get(autoconfig))
        .route("/robots.txt", get(robots))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(web.clone(), www_redirect))
        .with_state(web)
}

/// The port-80 routes: every request is redirected (PORT-4).
pub fn http_router(relay: Arc<Relay>) -> Router {
    Router::new().fallback(to_https).with_state(relay)
}

/// NEW-1 reply body.
#[derive(Serialize)]
struct NewAccount {
    email: String,
    password: String,
    /// NEW-3: only for self-signed certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    dclogin_url: Option<String>,
}

/// A JSON `{"reason": …}` with a status; core shows `reason` for non-2xx replies.
fn refusal(status: StatusCode, reason: &str) -> Response {
    let mut resp = (status, axum::Json(serde_json::json!({ "reason": reason }))).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// NEW-4: outside self-signed mode a GET (a browser following a printed link) is sent
/// to the Delta Chat app; self-signed mode serves GET like POST (NEW-3).
async fn new_account_get(State(web): State<Web>) -> Response {
    if web.relay.config.self_signed() {
        return new_account(State(web)).await;
    }
    let target = format!("dcaccount:https://{}/new", web.relay.config.mail_domain);
    redirect(&target)
}

/// NEW-1..3, NEW-5: fresh credentials; nothing is stored (the account appears at its
/// first login, ACC-5).
async fn new_account(State(web): State<Web>) -> Response {
    // NEW-3: rate limit per client IP, excess → 503.
    if !web.limiter.check(&web.peer, web.relay.clock.monotonic()) {
        tracing::info!("/new: rate limit reached");
        let mut resp = refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests, try again in a moment",
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return resp;
    }
    // NEW-5 (not upstream): say why creation would be refused instead of handing out
    // credentials that cannot log in.
    if let Some(reason) = web.relay.auth.creation_refusal() {
        tracing::warn!("registration rejected: {reason}");
        return refusal(StatusCode::SERVICE_UNAVAILABLE, &reason);
    }
    let config = &web.relay.config;
    let (email, password) = onboarding::random_credentials(config);
    let dclogin_url = config
        .self_signed()
        .then(|| onboarding::dclogin_url(config, &email, &password));
    let mut resp = (
        StatusCode::OK,
        axum::Json(NewAccount {
            email,
            password,
            dclogin_url,
        }),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `&`, `<`, `>`, `"` and `'` escaped for XML text and attributes.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// §17 Mozilla autoconfig: IMAP 993 SSL, 143 STARTTLS, 443 SSL; SMTP 465 SSL, 587
/// STARTTLS, 443 SSL (the 443 entries rely on the ALPN multiplexer, PORT-2). Ports are
/// the configured listeners' (dev mode differs); a disabled service is left out. The
/// host is `mail_domain`, which is the IP in IP-only mode.
pub fn autoconfig_xml(config: &Config) -> String {
    let host = xml_escape(&config.mail_domain);
    let l = &config.listen;
    let port = |list: &[SocketAddr]| list.first().map(|a| a.port());
    let incoming = [
        (port(&l.imaps), "SSL"),
        (port(&l.imap), "STARTTLS"),
        (port(&l.https), "SSL"),
    ];
    let outgoing = [
        (port(&l.submissions), "SSL"),
        (port(&l.submission), "STARTTLS"),
        (port(&l.https), "SSL"),
    ];
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\n\
         <clientConfig version=\"1.1\">\n\
         \x20 <emailProvider id=\"{host}\">\n\
         \x20   <domain>{host}</domain>\n\
         \x20   <displayName>{host} chatmail</displayName>\n\
         \x20   <displayShortName>{host}</displayShortName>\n"
    );
    for (kind, ty, servers) in [
        ("incomingServer", "imap", incoming),
        ("outgoingServer", "smtp", outgoing),
    ] {
        for (port, socket) in servers {
            let Some(port) = port else { continue };
            xml.push_str(&format!(
                "    <{kind} type=\"{ty}\">\n\
                 \x20     <hostname>{host}</hostname>\n\
                 \x20     <port>{port}</port>\n\
                 \x20     <socketType>{socket}</socketType>\n\
                 \x20     <authentication>password-cleartext</authentication>\n\
                 \x20     <username>%EMAILADDRESS%</username>\n\
                 \x20   </{kind}>\n"
            ));
        }
    }
    xml.push_str("  </emailProvider>\n</clientConfig>\n");
    xml
}

async fn autoconfig(State(web): State<Web>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml; charset=utf-8"),
        )],
        autoconfig_xml(&web.relay.config),
    )
        .into_response()
}

/// §17: keep crawlers out.
async fn robots() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        "User-agent: *\nDisallow: /\n",
    )
        .into_response()
}

/// §17: anything else is 404, with no server name or version.
async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        "Not Found\n",
    )
        .into_response()
}

/// A 301 to `location` (which the caller built from checked parts).
fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, value)]).into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// The host name of a `Host` header without its port, if it is a plausible name or
/// address literal (so it can be put in a `Location` safely).
fn host_without_port(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(header::HOST)?.to_str().ok()?.trim();
    let host = if raw.starts_with('[') {
        // `[v6]` or `[v6]:port`
        let end = raw.find(']')?;
        &raw[..=end]
    } else {
        raw.split(':').next()?
    };
    let ok = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b));
    ok.then(|| host.to_ascii_lowercase())
}

/// The request's path and query (`/` if none).
fn path_and_query(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", |pq| pq.as_str())
}

/// `:<port>` when HTTPS is not on 443 (dev mode), else nothing.
fn https_port_suffix(config: &Config) -> String {
    match config.listen.https.first().map(|a| a.port()) {
        Some(port) if port != 443 => format!(":{port}"),
        _ => String::new(),
    }
}

/// PORT-4: every plain-HTTP request → 301 `https://<Host><path>`. Without a usable
/// `Host`, the relay's own name is used. (The ACME HTTP-01 exception comes with ACME.)
async fn to_https(State(relay): State<Arc<Relay>>, headers: HeaderMap, uri: Uri) -> Response {
    let host = host_without_port(&headers).unwrap_or_else(|| relay.config.mail_domain.clone());
    let target = format!(
        "https://{host}{}{}",
        https_port_suffix(&relay.config),
        path_and_query(&uri)
    );
    redirect(&target)
}

/// PORT-5: `https://www.<domain>/<path>` → 301 `https://<domain>/<path>`.
async fn www_redirect(State(web): State<Web>, request: Request, next: Next) -> Response {
    let domain = &web.relay.config.mail_domain;
    if let Some(host) = host_without_port(request.headers()) {
        if host.strip_prefix("www.") == Some(domain.to_ascii_lowercase().as_str()) {
            let target = format!(
                "https://{domain}{}{}",
                https_port_suffix(&web.relay.config),
                path_and_query(request.uri())
            );
            return redirect(&target);
        }
    }
    next.run(request).await
}
