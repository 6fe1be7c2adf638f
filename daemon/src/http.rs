//! HTTP(S) of the relay core (spec/relay.md §5, §17): `POST /new` and the legacy
//! `/cgi-bin/newemail.py` (NEW-1..5) with their per-IP rate limit, the Mozilla autoconfig
//! file, `robots.txt`, the `www.` redirect (PORT-5), the site (pages, invite QR code,
//! MTA-STS, `www_folder`: submodule [`web`]), 404 for everything else, and the port-80
//! redirect to HTTPS (PORT-4). Served with hyper's HTTP/1.1 server on a connection the
//! listener already accepted (and, for 443, TLS-terminated after the ALPN multiplexer in
//! `crate::server::serve_443` chose HTTPS).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Serialize;

use crate::auth::Auth;
use crate::clock::Clock;
use crate::config::Config;
use crate::memory::Budget;
use crate::net::Conn;
use crate::onboarding;
use crate::policy::ratelimit::{Quota, RateLimiter};
use crate::web::{host_without_port, redirect};

pub mod metrics;

/// Time limits of an HTTP connection (issue 13).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A request's headers must arrive within this; also how long an idle keep-alive
    /// connection waits for its next request (hyper's `header_read_timeout` runs from the
    /// moment the connection waits for a request head).
    pub header: Duration,
    /// A request body must arrive at [`Timeouts::body_min_rate`] bytes per second,
    /// never more than this behind (`crate::deadline::Budget`).
    pub body: Duration,
    pub body_min_rate: u32,
    /// Upper bound on one connection's life, keep-alive included.
    pub lifetime: Duration,
}

/// The relay's HTTP time limits: 30 s for headers and keep-alive idle, request bodies at
/// 500 bytes per second or faster (Postfix's `smtpd_min_data_rate` default), at most 10
/// minutes per connection (a 30 MiB `/mxdeliv` body then needs 50 KiB/s).
pub const TIMEOUTS: Timeouts = Timeouts {
    header: Duration::from_secs(30),
    body: Duration::from_secs(30),
    body_min_rate: 500,
    lifetime: Duration::from_secs(600),
};
/// A refused connection gets this long to send its request head.
const REFUSAL_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Paths of the account endpoint (NEW-1).
const NEW_PATHS: [&str; 2] = ["/new", "/cgi-bin/newemail.py"];
/// Mozilla autoconfig location (§17).
const AUTOCONFIG_PATH: &str = "/.well-known/autoconfig/mail/config-v1.1.xml";

/// NEW-3: 2 requests per second per client IP, burst 5 (upstream nginx `limit_req`).
pub fn new_account_quota() -> Quota {
    Quota::new(2, Duration::from_secs(1), 5)
}

/// What the HTTP handlers (and `web`, `iroh`, `mxdeliv` under them) use of the relay.
/// The assembly implements it (`crate::server::Relay`), so that `http` names no more
/// of the relay than this.
pub trait Handles: Send + Sync {
    fn config(&self) -> &Config;
    fn clock(&self) -> &dyn Clock;
    /// NEW-5: whether account creation would be refused now.
    fn auth(&self) -> &Auth;
    /// RFC 8555 §8.3: the pending HTTP-01 challenges.
    fn acme(&self) -> &crate::acme::Acme;
    /// Memory for `/mxdeliv` bodies in transit (`max_message_memory`).
    fn memory(&self) -> &Budget;
    /// NEW-3 limiter keyed by client IP.
    fn new_account_limiter(&self) -> Arc<RateLimiter<IpAddr>>;
    /// The admin pages, once the appliance attached them (`crate::appliance`).
    fn admin(&self) -> Option<Router>;
    /// `/mxdeliv`'s recipient checks and commit (`crate::delivery`).
    fn delivery(&self) -> crate::delivery::Handles<'_>;
}

/// What the handlers of one connection share.
#[derive(Clone)]
pub struct Web {
    pub relay: Arc<dyn Handles>,
    /// NEW-3 limiter keyed by client IP.
    pub limiter: Arc<RateLimiter<IpAddr>>,
    /// The client's address (IPv4-mapped IPv6 folded to IPv4).
    pub peer: IpAddr,
}

/// The site's pages read the configuration through the connection's state.
impl crate::web::Site for Web {
    fn config(&self) -> &Config {
        self.relay.config()
    }

    fn signup_mode(&self) -> crate::config::SignupMode {
        self.relay.auth().signup().mode()
    }
}

/// Serve HTTPS requests on an established TLS connection (443).
pub async fn serve_https(relay: Arc<dyn Handles>, conn: Conn, peer: SocketAddr) {
    let admin = relay.admin();
    let web = Web {
        limiter: relay.new_account_limiter(),
        relay,
        peer: peer.ip().to_canonical(),
    };
    let router = with_admin(https_router(web), admin, peer, true);
    serve(conn, router, Some(("https", peer.ip())), TIMEOUTS, None).await;
}

/// Serve plain HTTP (80): ACME HTTP-01 answers and a redirect to HTTPS for everything
/// else (PORT-4), the admin pages included: a running relay has a certificate, and
/// their password forms go over TLS only (issue 13; setup mode serves the wizard on
/// port 80 itself, `crate::appliance::setup`).
pub async fn serve_http(relay: Arc<dyn Handles>, conn: Conn, peer: SocketAddr) {
    let local = local_ip(&conn);
    serve(
        conn,
        http_router(relay, local),
        Some(("http", peer.ip())),
        TIMEOUTS,
        None,
    )
    .await;
}

/// The address a connection came in on.
fn local_ip(conn: &Conn) -> Option<IpAddr> {
    let tcp = match conn {
        Conn::Plain(tcp) => tcp,
        Conn::Tls(tls) => tls.get_ref().0,
    };
    tcp.local_addr().ok().map(|a| a.ip().to_canonical())
}

/// Serve one plain-HTTP connection with `router` (setup mode: the wizard alone) until
/// `ended` changes or its sender is dropped (the switch to the relay, issue 16): then
/// the request in progress is answered with `Connection: close` and the connection is
/// closed (an idle one at once), so no request after the switch gets a setup-mode answer
/// on a connection kept alive from before it; the client sends it again on a new
/// connection, which the relay accepts (RFC 9112 §9.3.1, §9.6).
pub async fn serve_router(router: Router, conn: Conn, ended: tokio::sync::watch::Receiver<()>) {
    // hyper closes after that response but does not say so: say it (RFC 9112 §9.6).
    let watch = ended.clone();
    let router = router.layer(middleware::map_response(move |mut response: Response| {
        let watch = watch.clone();
        async move {
            if watch.has_changed().unwrap_or(true) {
                let close = HeaderValue::from_static("close");
                response.headers_mut().insert(header::CONNECTION, close);
            }
            response
        }
    }));
    serve(conn, router, None, TIMEOUTS, Some(ended)).await;
}

/// Issue 13: a refused connection (`crate::server`) gets `503 Service Unavailable` with
/// `Retry-After` (RFC 9110 §15.6.4, §10.2.3) to its first request, then is closed.
pub async fn refuse(conn: Conn, why: crate::admission::Reason) {
    use crate::admission::Reason;
    let retry_after = match why {
        Reason::Rate => "5",
        _ => "60",
    };
    let service = hyper::service::service_fn(move |_request| async move {
        let body = http_body_util::Full::new(bytes::Bytes::from(format!("{}\n", why.text())));
        let mut response = hyper::Response::new(body);
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        let headers = response.headers_mut();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static(retry_after));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        Ok::<_, std::convert::Infallible>(response)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(REFUSAL_HEADER_TIMEOUT)
        .keep_alive(false);
    let _ = builder.serve_connection(TokioIo::new(conn), service).await;
}

/// Mount the admin pages (`/admin`, `/admin/…`, paths unchanged) in front of `router`
/// and tell them who the client is.
pub fn with_admin(router: Router, admin: Option<Router>, peer: SocketAddr, https: bool) -> Router {
    let router = match admin {
        // Both routers have fallbacks, so they cannot merge: `/admin` paths go to the
        // admin router as a service (paths unchanged).
        Some(admin) => {
            let admin = admin.into_service::<axum::body::Body>();
            // `{*rest}` does not match an empty rest: `/admin/` needs its own route.
            router
                .route_service("/admin", admin.clone())
                .route_service("/admin/", admin.clone())
                .route_service("/admin/{*rest}", admin)
        }
        None => router,
    };
    router.layer(axum::Extension(relaybox_webui::Client {
        addr: SocketAddr::new(peer.ip().to_canonical(), peer.port()),
        https,
    }))
}

/// Run HTTP/1.1 on one connection until the client closes it or a bound is hit
/// (`timeouts`). `client`: the listener's name and the client's address, for counting
/// and logging a cut (issue 13; `None` in setup mode). `ended`: when given, the
/// connection ends gracefully once it changes or its sender is dropped
/// ([`serve_router`]).
async fn serve(
    conn: Conn,
    router: Router,
    client: Option<(&'static str, IpAddr)>,
    timeouts: Timeouts,
    ended: Option<tokio::sync::watch::Receiver<()>>,
) {
    let requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = requests.clone();
    let service = tower::ServiceExt::map_request(router, move |request: Request<Incoming>| {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        request.map(|body| axum::body::Body::new(DeadlineBody::new(body, timeouts, client)))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header);
    let connection = builder
        .serve_connection(TokioIo::new(conn), TowerToHyperService::new(service))
        .with_upgrades();
    let connection = async move {
        let mut connection = std::pin::pin!(connection);
        let Some(mut ended) = ended else {
            return connection.await;
        };
        tokio::select! {
            r = connection.as_mut() => return r,
            // Changed or sender dropped: either way the end.
            _ = ended.changed() => {}
        }
        // Finishes the response in progress without keep-alive; closes an idle
        // connection at once.
        connection.as_mut().graceful_shutdown();
        connection.await
    };
    let cut = match tokio::time::timeout(timeouts.lifetime, connection).await {
        Ok(Ok(())) => false,
        // Headers too slow; an idle keep-alive connection after a request ends the same
        // way and is not counted.
        Ok(Err(e)) if e.is_timeout() => requests.load(std::sync::atomic::Ordering::Relaxed) == 0,
        Ok(Err(e)) => {
            tracing::debug!("http connection ended: {e}");
            false
        }
        Err(_) => {
            tracing::debug!("http connection closed after {:?}", timeouts.lifetime);
            true
        }
    };
    if cut && let Some((service, ip)) = client {
        crate::admission::refused(service, crate::admission::Reason::Deadline, ip);
    }
}

/// A request body with a deadline (issue 13): it must arrive at `body_min_rate` bytes per
/// second, never more than `timeouts.body` behind; past the deadline reading it fails
/// (and the cut is counted once).
struct DeadlineBody {
    inner: Incoming,
    budget: crate::deadline::Budget,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    client: Option<(&'static str, IpAddr)>,
    expired: bool,
}

impl DeadlineBody {
    fn new(inner: Incoming, t: Timeouts, client: Option<(&'static str, IpAddr)>) -> Self {
        let now = tokio::time::Instant::now();
        let budget = crate::deadline::Budget::with_rate(now, t.body, t.body_min_rate);
        DeadlineBody {
            inner,
            sleep: Box::pin(tokio::time::sleep_until(budget.deadline())),
            budget,
            client,
            expired: false,
        }
    }
}

impl hyper::body::Body for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        if this.expired {
            return Poll::Ready(Some(Err("request body deadline exceeded".into())));
        }
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let now = tokio::time::Instant::now();
                    this.budget.received(data.len(), now);
                    this.sleep.as_mut().reset(this.budget.deadline());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other.map(|r| r.map_err(Into::into))),
            Poll::Pending => {
                if this.sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.expired = true;
                if let Some((service, ip)) = this.client {
                    crate::admission::refused(service, crate::admission::Reason::Deadline, ip);
                }
                Poll::Ready(Some(Err("request body deadline exceeded".into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The HTTPS routes (§17).
pub fn https_router(web: Web) -> Router {
    let mut router = Router::new();
    for path in NEW_PATHS {
        router = router.route(path, get(new_account_get).post(new_account));
    }
    let router = router
        .route(AUTOCONFIG_PATH, get(autoconfig))
        .route("/robots.txt", get(robots))
        // IN-6: federation over HTTPS (any method; non-POST is answered 405).
        .route("/mxdeliv", axum::routing::any(crate::mxdeliv::handle));
    let router = crate::iroh::add_routes(router, web.relay.config()); // RT-4, CFG-5
    crate::web::add_routes(router, web.relay.config())
        .layer(middleware::from_fn_with_state(web.clone(), www_redirect))
        .with_state(web)
}

/// What the port-80 handlers of one connection share.
#[derive(Clone)]
struct Plain {
    relay: Arc<dyn Handles>,
    /// The address the connection came in on.
    local: Option<IpAddr>,
}

/// The port-80 routes of a connection that came in on `local`: ACME HTTP-01 challenges,
/// every other request is redirected (PORT-4).
pub fn http_router(relay: Arc<dyn Handles>, local: Option<IpAddr>) -> Router {
    Router::new()
        .route("/.well-known/acme-challenge/{token}", get(acme_http01))
        .fallback(to_https)
        .with_state(Plain { relay, local })
}

/// RFC 8555 §8.3: the key authorization for a pending token, as text; 404 otherwise.
async fn acme_http01(
    State(Plain { relay, .. }): State<Plain>,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> Response {
    match relay.acme().http01(&token) {
        Some(key_authorization) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            key_authorization,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
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
async fn new_account_get(State(web): State<Web>, Query(query): Query<NewQuery>) -> Response {
    if web.relay.config().self_signed() {
        return new_account(State(web), Query(query)).await;
    }
    let mut target = format!("dcaccount:https://{}/new", web.relay.config().mail_domain);
    // Issue 18: an invite goes along (only a token's characters, nothing else).
    if let Some(token) = query
        .invite
        .as_deref()
        .filter(|t| crate::signup::is_token(t))
    {
        target = format!("{target}?invite={token}");
    }
    redirect(&target)
}

/// The query of `/new` (issue 18): `invite=TOKEN` when the relay is invite-only.
#[derive(serde::Deserialize, Default)]
pub struct NewQuery {
    invite: Option<String>,
}

/// NEW-1..3, NEW-5: fresh credentials; nothing is stored (the account appears at its
/// first login, ACC-5).
async fn new_account(State(web): State<Web>, Query(query): Query<NewQuery>) -> Response {
    // NEW-3: rate limit per client IP, excess → 503.
    if !web.limiter.check(&web.peer, web.relay.clock().monotonic()) {
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
    // The public gets the users' wording (no paths, issue 16); the log has the owner's.
    // Issue 18: the sign-up mode, and the invite of an invite-only relay (looked at
    // here, used at the first login).
    let invite = query.invite.as_deref();
    match web.relay.auth().new_account_refusal(invite) {
        Ok(None) => {}
        Ok(Some(reason)) => {
            return refusal(StatusCode::SERVICE_UNAVAILABLE, &reason.user_text());
        }
        Err(e) => {
            tracing::error!("/new: {e}");
            return refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "the relay cannot create accounts right now, try again later",
            );
        }
    }
    let config = web.relay.config();
    let (email, password) = match invite {
        // Only a valid invite gets here in invite mode: its token rides in the password.
        Some(token) if web.relay.auth().signup().mode() == crate::signup::Mode::Invite => {
            onboarding::invite_credentials(config, token)
        }
        _ => onboarding::random_credentials(config),
    };
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
        autoconfig_xml(web.relay.config()),
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

/// The names of this box a `Host:` header may carry besides IP literals and
/// `localhost` (`relaybox_webui::host`): the mDNS name and, once configured,
/// `mail_domain`.
pub fn box_names(config: &Config) -> Vec<String> {
    let mut names = Vec::new();
    if !config.appliance.mdns_name.is_empty() {
        names.push(format!("{}.local", config.appliance.mdns_name));
    }
    if !config.setup {
        names.push(config.mail_domain.clone());
    }
    names
}

/// The host of an HTTPS URL for a request with the `Host:` value `host` that came in on
/// `local` (issue 13): the box's own name that `host` names, the address the
/// connection came in on when `host` is that address, else `mail_domain` — never the
/// header's own bytes.
pub fn https_host(config: &Config, local: Option<IpAddr>, host: Option<&str>) -> String {
    use relaybox_webui::host::{Named, named};
    let names = box_names(config);
    match host.and_then(|h| named(h, &names)) {
        Some(Named::Name(name)) => name.to_string(),
        Some(Named::Ip(ip)) if Some(ip) == local => match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        },
        _ => config.mail_domain.clone(),
    }
}

/// PORT-4: every plain-HTTP request → 301 to the same path over HTTPS, at the host
/// [`https_host`] picks.
async fn to_https(State(plain): State<Plain>, headers: HeaderMap, uri: Uri) -> Response {
    let config = plain.relay.config();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let target = format!(
        "https://{}{}{}",
        https_host(config, plain.local, host),
        https_port_suffix(config),
        path_and_query(&uri)
    );
    redirect(&target)
}

/// PORT-5: `https://www.<domain>/<path>` → 301 `https://<domain>/<path>`.
async fn www_redirect(State(web): State<Web>, request: Request, next: Next) -> Response {
    let domain = &web.relay.config().mail_domain;
    let host = host_without_port(request.headers());
    if host.as_deref().and_then(|h| h.strip_prefix("www.")) == Some(&domain.to_ascii_lowercase()) {
        let target = format!(
            "https://{domain}{}{}",
            https_port_suffix(web.relay.config()),
            path_and_query(request.uri())
        );
        return redirect(&target);
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Mutex;
    use std::time::Instant;

    use axum::body::Body;
    use axum::http::Method;
    use tower::ServiceExt;

    use super::*;
    use crate::server::Relay;

    /// A monotonic clock the test moves by hand.
    struct TestClock(Mutex<Instant>);

    impl TestClock {
        fn advance(&self, d: Duration) {
            *self.0.lock().expect("clock") += d;
        }
    }

    impl Clock for TestClock {
        fn unix_now(&self) -> u64 {
            1_800_000_000
        }
        fn monotonic(&self) -> Instant {
            *self.0.lock().expect("clock")
        }
    }

    fn domain_config(dir: &Path, domain: &str) -> Config {
        crate::testing::config(dir, domain)
    }

    /// The dev config with system limits that never refuse on a busy test machine.
    fn dev_config(dir: &Path) -> Config {
        let mut c = Config::dev(dir.to_path_buf());
        let t = crate::testing::config(dir, "127.0.0.1");
        c.max_load_1m = t.max_load_1m;
        c.min_available_memory = t.min_available_memory;
        c.min_free_disk_space = t.min_free_disk_space;
        c
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        relay: Arc<Relay>,
        clock: Arc<TestClock>,
        limiter: Arc<RateLimiter<IpAddr>>,
    }

    impl Fixture {
        fn new(make: impl FnOnce(&Path) -> Config) -> Fixture {
            let dir = tempfile::tempdir().expect("tempdir");
            let clock = Arc::new(TestClock(Mutex::new(Instant::now())));
            let relay = Relay::open_with_clock(make(dir.path()), clock.clone()).expect("relay");
            Fixture {
                _dir: dir,
                relay,
                clock,
                limiter: Arc::new(RateLimiter::new(new_account_quota())),
            }
        }

        fn dev() -> Fixture {
            Fixture::new(dev_config)
        }

        fn router(&self, peer: &str) -> Router {
            https_router(Web {
                relay: self.relay.clone(),
                limiter: self.limiter.clone(),
                peer: peer.parse().expect("ip"),
            })
        }

        async fn call(&self, method: Method, path: &str) -> (StatusCode, HeaderMap, String) {
            self.call_from("192.0.2.50", method, path, None).await
        }

        async fn call_from(
            &self,
            peer: &str,
            method: Method,
            path: &str,
            host: Option<&str>,
        ) -> (StatusCode, HeaderMap, String) {
            let mut req = Request::builder().method(method).uri(path);
            if let Some(h) = host {
                req = req.header(header::HOST, h);
            }
            let resp = self
                .router(peer)
                .oneshot(req.body(Body::empty()).expect("request"))
                .await
                .expect("infallible");
            split(resp).await
        }
    }

    async fn split(resp: Response) -> (StatusCode, HeaderMap, String) {
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        (
            status,
            headers,
            String::from_utf8(body.to_vec()).expect("utf-8"),
        )
    }

    fn json(body: &str) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::from_str(body) {
            Ok(serde_json::Value::Object(m)) => m,
            other => panic!("not a JSON object: {body:?} ({other:?})"),
        }
    }

    fn assert_credentials(
        m: &serde_json::Map<String, serde_json::Value>,
        domain: &str,
    ) -> (String, String) {
        let email = m["email"].as_str().expect("email").to_string();
        let password = m["password"].as_str().expect("password").to_string();
        let local = email
            .strip_suffix(&format!("@{domain}"))
            .unwrap_or_else(|| panic!("{email} not at {domain}"));
        // NEW-2 defaults: 9 characters of [a-z0-9]; 12-character password.
        assert_eq!(local.len(), 9, "{email}");
        assert!(
            local
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "{email}"
        );
        assert_eq!(password.len(), 12, "{password}");
        assert!(password.bytes().all(|b| b.is_ascii_graphic()), "{password}");
        (email, password)
    }

    #[tokio::test]
    async fn post_new_in_ip_only_mode_gives_credentials_and_dclogin() {
        let f = Fixture::dev();
        for path in NEW_PATHS {
            let (status, headers, body) = f.call(Method::POST, path).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{path}");
            assert!(headers.get(header::SERVER).is_none());
            let m = json(&body);
            let keys: Vec<&String> = m.keys().collect();
            assert_eq!(keys.len(), 3, "{body}");
            let (email, password) = assert_credentials(&m, "[127.0.0.1]");
            let url = m["dclogin_url"].as_str().expect("dclogin_url");
            assert_eq!(
                url,
                onboarding::dclogin_url(&f.relay.config, &email, &password)
            );
            assert!(url.starts_with(&format!("dclogin:{email}?p=")), "{url}");
            assert!(url.contains("&v=1&ih=127.0.0.1&sh=127.0.0.1"), "{url}");
            assert!(url.ends_with("&ic=3"), "{url}");
        }
        // NEW-2: nothing is stored.
        let (status, _, body) = f.call(Method::POST, "/new").await;
        assert_eq!(status, StatusCode::OK);
        let (email, _) = assert_credentials(&json(&body), "[127.0.0.1]");
        assert!(f.relay.store.account(&email).expect("store").is_none());
    }

    #[tokio::test]
    async fn self_signed_get_serves_json_too() {
        let f = Fixture::new(|d| domain_config(d, "_relay.test"));
        let (status, _, body) = f.call(Method::GET, "/new").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let m = json(&body);
        assert_credentials(&m, "_relay.test");
        let url = m["dclogin_url"].as_str().expect("dclogin_url");
        assert!(!url.contains("ih="), "no host outside IP-only mode: {url}");
        assert!(url.ends_with("&v=1&ic=3"), "{url}");
    }

    #[tokio::test]
    async fn domain_mode_post_and_get_redirect() {
        let f = Fixture::new(|d| domain_config(d, "chat.example.org"));
        // NEW-1: POST never redirects and has no dclogin_url.
        let (status, _, body) = f.call(Method::POST, "/new").await;
        assert_eq!(status, StatusCode::OK);
        let m = json(&body);
        assert_eq!(m.len(), 2, "{body}");
        assert_credentials(&m, "chat.example.org");
        // NEW-4: GET → the app.
        for path in NEW_PATHS {
            let (status, headers, _) = f.call(Method::GET, path).await;
            assert_eq!(status, StatusCode::MOVED_PERMANENTLY, "{path}");
            assert_eq!(
                headers[header::LOCATION],
                "dcaccount:https://chat.example.org/new"
            );
        }
    }

    /// Issue 18: an invite-only domain relay. `/new` without an invite or with a
    /// forged one says why (503, the users' wording); with a valid one it answers with
    /// a password that carries the token (nothing stored yet); a GET (a browser
    /// following a printed link) is sent to the app with the invite, and only with a
    /// token's characters.
    #[tokio::test]
    async fn invite_only_new_takes_the_invite_from_the_query() {
        let f = Fixture::new(|d| domain_config(d, "chat.example.org"));
        let signup = f.relay.auth.signup();
        signup.set_mode(crate::signup::Mode::Invite, None).unwrap();
        let (status, _, body) = f.call(Method::POST, "/new").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            json(&body)["reason"]
                .as_str()
                .unwrap()
                .starts_with("This relay creates new accounts only with an invite"),
            "{body}"
        );
        let forged = crate::signup::new_token();
        let (status, _, body) = f.call(Method::POST, &format!("/new?invite={forged}")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("This invite is not valid"), "{body}");

        let invite = signup.create_invite(1, 1, "").await.unwrap();
        let (status, _, body) = f
            .call(Method::POST, &format!("/new?invite={}", invite.token))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let m = json(&body);
        let email = m["email"].as_str().expect("email");
        let password = m["password"].as_str().expect("password");
        assert!(email.ends_with("@chat.example.org"), "{body}");
        assert_eq!(
            crate::signup::password_token(password),
            Some(invite.token.as_str())
        );
        assert!(f.relay.store.account(email).expect("store").is_none());
        assert_eq!(signup.invites().unwrap()[0].uses, 0, "used at the login");

        let (status, headers, _) = f
            .call(Method::GET, &format!("/new?invite={}", invite.token))
            .await;
        assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(
            headers[header::LOCATION],
            format!(
                "dcaccount:https://chat.example.org/new?invite={}",
                invite.token
            )
            .as_str()
        );
        let (_, headers, _) = f
            .call(Method::GET, "/new?invite=x%0D%0ALocation:evil")
            .await;
        assert_eq!(
            headers[header::LOCATION],
            "dcaccount:https://chat.example.org/new"
        );
    }

    #[tokio::test]
    async fn new_is_rate_limited_per_ip() {
        let f = Fixture::dev();
        // NEW-3: burst 5, then 503.
        for i in 0..5 {
            let (status, _, _) = f.call(Method::POST, "/new").await;
            assert_eq!(status, StatusCode::OK, "request {i}");
        }
        let (status, headers, body) = f.call(Method::POST, "/new").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::RETRY_AFTER], "1");
        assert!(json(&body)["reason"].is_string(), "{body}");
        // GET counts against the same budget in self-signed mode.
        let (status, _, _) = f.call(Method::GET, "/cgi-bin/newemail.py").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        // Another client is not affected; IPv4-mapped IPv6 would be the same client.
        let (status, _, _) = f.call_from("2001:db8::7", Method::POST, "/new", None).await;
        assert_eq!(status, StatusCode::OK);
        // 2 per second: after half a second one more passes, but only one.
        f.clock.advance(Duration::from_millis(500));
        let (status, _, _) = f.call(Method::POST, "/new").await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, _) = f.call(Method::POST, "/new").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn kill_switch_gives_503_with_reason() {
        // NEW-5 with CFG-6.
        let f = Fixture::dev();
        std::fs::write(f.relay.config.data_dir.join("nocreate"), b"").expect("flag");
        let (status, headers, body) = f.call(Method::POST, "/new").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let m = json(&body);
        assert_eq!(m.len(), 1, "{body}");
        let reason = m["reason"].as_str().expect("reason");
        assert!(reason.contains("turned sign-up off"), "{reason}");
        assert!(!reason.contains('/'), "no path to the public: {reason}");
        // ACC-5.6 limits as well.
        let f = Fixture::new(|d| {
            let mut c = dev_config(d);
            c.min_free_disk_space = u64::MAX;
            c
        });
        let (status, _, body) = f.call(Method::POST, "/new").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            json(&body)["reason"]
                .as_str()
                .is_some_and(|r| r.contains("disk")),
            "{body}"
        );
    }

    #[tokio::test]
    async fn other_methods_and_paths() {
        let f = Fixture::dev();
        for (method, path, want) in [
            (Method::PUT, "/new", StatusCode::METHOD_NOT_ALLOWED),
            (
                Method::DELETE,
                "/cgi-bin/newemail.py",
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (Method::POST, "/robots.txt", StatusCode::METHOD_NOT_ALLOWED),
            (
                Method::POST,
                AUTOCONFIG_PATH,
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (Method::GET, "/new/", StatusCode::NOT_FOUND),
            (
                Method::GET,
                "/autodiscover/autodiscover.xml",
                StatusCode::NOT_FOUND,
            ),
            (Method::POST, "/nope", StatusCode::NOT_FOUND),
            (Method::GET, "/../etc/passwd", StatusCode::NOT_FOUND),
        ] {
            let (status, headers, body) = f.call(method.clone(), path).await;
            assert_eq!(status, want, "{method} {path}");
            assert!(headers.get(header::SERVER).is_none());
            assert!(!body.to_ascii_lowercase().contains("axum"), "{body}");
            assert!(!body.to_ascii_lowercase().contains("hyper"), "{body}");
        }
        let (status, headers, body) = f.call(Method::GET, "/robots.txt").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .is_ok_and(|v| v.starts_with("text/plain"))
        );
        assert_eq!(body, "User-agent: *\nDisallow: /\n");
        // HEAD is served by GET routes without a body.
        let (status, _, body) = f.call(Method::HEAD, "/robots.txt").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "");
    }

    /// The `<hostname>`, `<port>`, `<socketType>` triples of each server kind.
    fn servers(xml: &str, kind: &str) -> Vec<(String, String, String)> {
        let field = |block: &str, tag: &str| -> String {
            let open = format!("<{tag}>");
            let start = block.find(&open).expect(tag) + open.len();
            let end = block[start..].find(&format!("</{tag}>")).expect(tag) + start;
            block[start..end].to_string()
        };
        xml.split(&format!("<{kind} "))
            .skip(1)
            .map(|b| {
                let block = &b[..b.find(&format!("</{kind}>")).expect("close")];
                assert!(block.contains("<authentication>password-cleartext</authentication>"));
                assert!(block.contains("<username>%EMAILADDRESS%</username>"));
                (
                    field(block, "hostname"),
                    field(block, "port"),
                    field(block, "socketType"),
                )
            })
            .collect()
    }

    fn triples(host: &str, list: &[(u16, &str)]) -> Vec<(String, String, String)> {
        list.iter()
            .map(|(p, s)| (host.to_string(), p.to_string(), s.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn autoconfig_lists_the_servers() {
        let f = Fixture::new(|d| domain_config(d, "chat.example.org"));
        let (status, headers, xml) = f.call(Method::GET, AUTOCONFIG_PATH).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .is_ok_and(|v| v.contains("xml"))
        );
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
        assert!(xml.contains("<emailProvider id=\"chat.example.org\">"));
        assert!(xml.contains("<domain>chat.example.org</domain>"));
        let h = "chat.example.org";
        assert_eq!(
            servers(&xml, "incomingServer"),
            triples(h, &[(993, "SSL"), (143, "STARTTLS"), (443, "SSL")])
        );
        assert_eq!(
            servers(&xml, "outgoingServer"),
            triples(h, &[(465, "SSL"), (587, "STARTTLS"), (443, "SSL")])
        );
        assert!(xml.contains("<incomingServer type=\"imap\">"));
        assert!(xml.contains("<outgoingServer type=\"smtp\">"));

        // IP-only: the host is the IP; dev ports are the configured ones.
        let f = Fixture::dev();
        let (_, _, xml) = f.call(Method::GET, AUTOCONFIG_PATH).await;
        assert_eq!(
            servers(&xml, "incomingServer"),
            triples(
                "127.0.0.1",
                &[(1993, "SSL"), (1143, "STARTTLS"), (1443, "SSL")]
            )
        );
        assert_eq!(
            servers(&xml, "outgoingServer"),
            triples(
                "127.0.0.1",
                &[(1465, "SSL"), (1587, "STARTTLS"), (1443, "SSL")]
            )
        );

        // A disabled service is left out.
        let f = Fixture::new(|d| {
            let mut c = domain_config(d, "chat.example.org");
            c.listen.imap.clear();
            c
        });
        let (_, _, xml) = f.call(Method::GET, AUTOCONFIG_PATH).await;
        assert_eq!(
            servers(&xml, "incomingServer"),
            triples(h, &[(993, "SSL"), (443, "SSL")])
        );
    }

    #[tokio::test]
    async fn www_host_redirects_to_the_domain() {
        // PORT-5
        let f = Fixture::new(|d| domain_config(d, "chat.example.org"));
        let (status, headers, _) = f
            .call_from(
                "192.0.2.1",
                Method::GET,
                "/info.html?x=1",
                Some("www.chat.example.org"),
            )
            .await;
        assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(
            headers[header::LOCATION],
            "https://chat.example.org/info.html?x=1"
        );
        // The bare domain is served normally.
        let (status, _, _) = f
            .call_from(
                "192.0.2.1",
                Method::GET,
                "/robots.txt",
                Some("chat.example.org"),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }

    async fn http_call(relay: &Arc<Relay>, path: &str, host: Option<&str>) -> Response {
        let mut req = Request::builder().uri(path);
        if let Some(h) = host {
            req = req.header(header::HOST, h);
        }
        http_router(relay.clone(), Some("192.0.2.7".parse().expect("ip")))
            .oneshot(req.body(Body::empty()).expect("request"))
            .await
            .expect("infallible")
    }

    #[tokio::test]
    async fn port_80_redirects_everything_to_https() {
        // PORT-4
        let f = Fixture::new(|d| domain_config(d, "chat.example.org"));
        for (path, host, want) in [
            ("/", Some("chat.example.org"), "https://chat.example.org/"),
            (
                "/new?a=b",
                Some("chat.example.org:80"),
                "https://chat.example.org/new?a=b",
            ),
            // Issue 13: the Location names the box whatever the Host says: one of its
            // names, the address the connection came in on, else mail_domain.
            (
                "/x/y.html",
                Some("WWW.Chat.Example.org"),
                "https://chat.example.org/x/y.html",
            ),
            ("/p", Some("attacker.example"), "https://chat.example.org/p"),
            ("/p", Some("[2001:db8::1]:80"), "https://chat.example.org/p"),
            ("/p", Some("192.0.2.7:80"), "https://192.0.2.7/p"),
            ("/p", Some("192.0.2.8"), "https://chat.example.org/p"),
            ("/p", None, "https://chat.example.org/p"),
            ("/p", Some("evil\"host"), "https://chat.example.org/p"),
            // The admin pages too (issue 13: never over plain HTTP on a running relay).
            (
                "/admin/login",
                Some("relaybox.local"),
                "https://relaybox.local/admin/login",
            ),
        ] {
            let resp = http_call(&f.relay, path, host).await;
            assert_eq!(resp.status(), StatusCode::MOVED_PERMANENTLY, "{path}");
            assert_eq!(resp.headers()[header::LOCATION], want, "{path} {host:?}");
        }
        // Dev mode: HTTPS is on 1443.
        let f = Fixture::dev();
        let resp = http_call(&f.relay, "/new", Some("127.0.0.1:1080")).await;
        assert_eq!(
            resp.headers()[header::LOCATION],
            "https://127.0.0.1:1443/new"
        );
    }

    #[test]
    fn xml_escaping() {
        assert_eq!(xml_escape("a&b<c>\"'"), "a&amp;b&lt;c&gt;&quot;&apos;");
    }

    /// Send one raw HTTP/1.1 request and read the reply until the server closes.
    async fn raw_exchange<S>(mut stream: S, request: &str) -> (String, String)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(request.as_bytes()).await.expect("write");
        stream.flush().await.expect("flush");
        let mut reply = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply))
            .await
            .expect("reply within 10 s")
            .expect("read");
        let text = String::from_utf8(reply).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        (head.to_string(), body.to_string())
    }

    /// One accepted loopback connection, served by `serve`.
    async fn loopback<F, Fut>(serve: F) -> (tokio::net::TcpStream, tokio::task::JoinHandle<()>)
    where
        F: FnOnce(tokio::net::TcpStream, SocketAddr) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (tcp, peer) = listener.accept().await.expect("accept");
            serve(tcp, peer).await;
        });
        let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        (client, server)
    }

    #[tokio::test]
    async fn serves_new_over_real_tls() {
        let f = Fixture::dev();
        let relay = f.relay.clone();
        let (tcp, server) = loopback(move |tcp, peer| async move {
            let tls = tokio_rustls::TlsAcceptor::from(relay.tls.tls12.clone())
                .accept(tcp)
                .await
                .expect("server handshake");
            serve_https(relay, Conn::Tls(Box::new(tls)), peer).await;
        })
        .await;

        use rustls_pki_types::pem::PemObject;
        let cert = rustls_pki_types::CertificateDer::from_pem_file(
            f.relay.config.data_dir.join("tls").join("cert.pem"),
        )
        .expect("relay certificate");
        let connector = crate::testing::tls_connector(
            &[&rustls::version::TLS13, &rustls::version::TLS12],
            Some(cert),
        );
        let name = rustls_pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        let tls = connector
            .connect(name, tcp)
            .await
            .expect("client handshake");
        let (head, body) = raw_exchange(
            tls,
            "POST /new HTTP/1.1\r\nHost: 127.0.0.1:1443\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("content-type: application/json"), "{head}");
        assert!(!lower.contains("\r\nserver:"), "no server header: {head}");
        let m = json(&body);
        let (email, password) = assert_credentials(&m, "[127.0.0.1]");
        assert_eq!(
            m["dclogin_url"].as_str(),
            Some(onboarding::dclogin_url(&f.relay.config, &email, &password).as_str())
        );
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("server ends after Connection: close")
            .expect("server task");
    }

    #[tokio::test]
    async fn serves_redirect_over_plain_http() {
        let f = Fixture::dev();
        let relay = f.relay.clone();
        let (tcp, server) = loopback(move |tcp, peer| async move {
            serve_http(relay, Conn::Plain(tcp), peer).await;
        })
        .await;
        let (head, _) = raw_exchange(
            tcp,
            "GET /some/where?q=1 HTTP/1.1\r\nHost: 127.0.0.1:1080\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            head.starts_with("HTTP/1.1 301 Moved Permanently\r\n"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("\r\nlocation: https://127.0.0.1:1443/some/where?q=1"),
            "{head}"
        );
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("server ends")
            .expect("server task");
    }

    /// Issue 13: short limits for the deadline tests.
    const SHORT: Timeouts = Timeouts {
        header: Duration::from_millis(300),
        body: Duration::from_millis(300),
        body_min_rate: 500,
        lifetime: Duration::from_secs(60),
    };
    /// Far more than any bound under test, far less than `SHORT.lifetime`.
    const WAIT: Duration = Duration::from_secs(15);

    fn echo_router() -> Router {
        Router::new().route("/", get(|| async { "ok" })).route(
            "/echo",
            axum::routing::post(|b: axum::body::Bytes| async move { b.len().to_string() }),
        )
    }

    /// Read until the server closes (bounded by [`WAIT`]).
    async fn read_until_closed(tcp: &mut tokio::net::TcpStream) -> String {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::new();
        let closed = tokio::time::timeout(WAIT, async {
            let mut buf = [0u8; 4096];
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "server did not close; got {:?}",
            String::from_utf8_lossy(&got)
        );
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn idle_keep_alive_connection_is_closed() {
        use tokio::io::AsyncWriteExt;
        let (mut tcp, server) = loopback(|tcp, peer| async move {
            let client = Some(("http", peer.ip()));
            serve(Conn::Plain(tcp), echo_router(), client, SHORT, None).await;
        })
        .await;
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // The answer, then nothing: the connection idles until the server closes it.
        let got = read_until_closed(&mut tcp).await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
    }

    /// Issue 16: ending a setup-mode connection (the switch to the relay) answers the
    /// request in progress with `Connection: close`, then closes; an idle kept-alive
    /// connection closes at once (its own idle limit, `TIMEOUTS`, is far beyond `WAIT`).
    #[tokio::test]
    async fn ended_connections_answer_the_request_in_progress_then_close() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::sync::{Notify, watch};
        let entered = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let router = {
            let (entered, release) = (entered.clone(), release.clone());
            echo_router().route(
                "/slow",
                get(move || async move {
                    entered.notify_one();
                    release.notified().await;
                    "slow"
                }),
            )
        };
        // In progress.
        let (end, ended) = watch::channel(());
        let (mut tcp, server) = loopback(move |tcp, _| async move {
            serve_router(router.clone(), Conn::Plain(tcp), ended).await;
        })
        .await;
        tcp.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::timeout(WAIT, entered.notified())
            .await
            .unwrap();
        drop(end);
        release.notify_one();
        let got = read_until_closed(&mut tcp).await.to_ascii_lowercase();
        assert!(got.starts_with("http/1.1 200 ok\r\n"), "{got}");
        assert!(got.contains("\r\nconnection: close\r\n"), "{got}");
        assert!(got.ends_with("slow"), "{got}");
        tokio::time::timeout(WAIT, server).await.unwrap().unwrap();

        // Idle after an answer.
        let (end, ended) = watch::channel(());
        let (mut tcp, server) = loopback(move |tcp, _| async move {
            serve_router(echo_router(), Conn::Plain(tcp), ended).await;
        })
        .await;
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"ok") {
            let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed before the answer");
            got.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
        assert!(!head.contains("connection: close"), "kept alive: {head}");
        drop(end);
        assert_eq!(
            read_until_closed(&mut tcp).await,
            "",
            "closed, nothing more"
        );
        tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn trickled_headers_are_cut() {
        use tokio::io::AsyncWriteExt;
        let (mut tcp, server) = loopback(|tcp, peer| async move {
            serve(
                Conn::Plain(tcp),
                echo_router(),
                Some(("http", peer.ip())),
                SHORT,
                None,
            )
            .await;
        })
        .await;
        let head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        for b in head.iter() {
            if tcp.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            if server.is_finished() {
                break;
            }
        }
        let got = read_until_closed(&mut tcp).await;
        assert!(!got.contains("200 OK"), "{got}");
        tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn trickled_body_is_cut() {
        use tokio::io::AsyncWriteExt;
        let (mut tcp, server) = loopback(|tcp, peer| async move {
            serve(
                Conn::Plain(tcp),
                echo_router(),
                Some(("http", peer.ip())),
                SHORT,
                None,
            )
            .await;
        })
        .await;
        tcp.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
            .await
            .unwrap();
        // A byte every 50 ms (20 bytes/s, far below 500): at most 1000 bytes in 50 s, but
        // the body deadline ends it long before the connection's lifetime.
        let trickle = async {
            for _ in 0..1000 {
                if tcp.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let ended = tokio::time::timeout(WAIT, async {
            tokio::select! {
                _ = trickle => {}
                _ = server => {}
            }
        })
        .await;
        assert!(ended.is_ok(), "the slow body was not cut");
    }

    #[tokio::test]
    async fn a_body_at_a_good_rate_is_read() {
        use tokio::io::AsyncWriteExt;
        let (mut tcp, _server) = loopback(|tcp, peer| async move {
            serve(
                Conn::Plain(tcp),
                echo_router(),
                Some(("http", peer.ip())),
                SHORT,
                None,
            )
            .await;
        })
        .await;
        tcp.write_all(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        // 1000 bytes every 100 ms = 10 000 bytes/s, above the minimum rate; 2 s in all,
        // longer than the 300 ms budget.
        for _ in 0..20 {
            tcp.write_all(&[b'x'; 1000]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let got = read_until_closed(&mut tcp).await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(got.ends_with("20000"), "{got}");
    }

    #[tokio::test]
    async fn refusal_is_503_with_retry_after() {
        use crate::admission::Reason;
        for (why, retry) in [(Reason::PerAddress, "60"), (Reason::Rate, "5")] {
            let (tcp, server) = loopback(move |tcp, _| async move {
                refuse(Conn::Plain(tcp), why).await;
            })
            .await;
            let (head, body) = raw_exchange(tcp, "GET /new HTTP/1.1\r\nHost: x\r\n\r\n").await;
            assert!(
                head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
                "{head}"
            );
            let lower = head.to_ascii_lowercase();
            assert!(
                lower.contains(&format!("\r\nretry-after: {retry}")),
                "{head}"
            );
            assert_eq!(body.trim(), why.text());
            tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
        }
    }
}
