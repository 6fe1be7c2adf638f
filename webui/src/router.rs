//! Routes of the admin pages (full paths under `/admin`), the gate that refuses clients
//! outside the LAN (issue #6 item 6), the security headers on every response, and the
//! [`Visitor`] every handler gets: client address, session, CSRF anchor, claim cookies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use askama::Template;
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::limiter::{Limiter, Policy};
use crate::session::{self, Id, Kind};
use crate::view::Layout;
use crate::{
    Backend, Client, Overview, Phase, access, accounts, backups, front, queue, restore, signup,
    status, update, wizard,
};

/// Largest form body accepted.
const BODY_LIMIT: usize = 16 * 1024;
/// Most revoked (logged-out) sessions remembered until they expire anyway.
const MAX_REVOKED: usize = 1024;

/// Content-Security-Policy of every response: scripts and styles only from here (the
/// copy buttons' script and the stylesheet; nothing inline), images inline (`data:`) or from here, forms only to here, no framing.
pub const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                       form-action 'self'; frame-ancestors 'none'";

/// State shared by the handlers.
pub struct App<B> {
    pub backend: Arc<B>,
    pub limiter: Arc<Limiter>,
    /// Logged-out session ids → their expiry (Unix seconds).
    revoked: Arc<Mutex<HashMap<Id, u64>>>,
}

impl<B> Clone for App<B> {
    fn clone(&self) -> Self {
        App {
            backend: self.backend.clone(),
            limiter: self.limiter.clone(),
            revoked: self.revoked.clone(),
        }
    }
}

impl<B> App<B> {
    /// End the session `id` before its cookie expires (logout).
    pub fn revoke(&self, id: Id) {
        let now = session::now_unix();
        let mut map = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, exp| *exp > now);
        if map.len() >= MAX_REVOKED
            && let Some(first) = map.iter().min_by_key(|(_, e)| **e).map(|(k, _)| *k)
        {
            map.remove(&first);
        }
        map.insert(id, now + session::SESSION_SECONDS);
    }

    fn is_revoked(&self, id: &Id) -> bool {
        let map = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        map.contains_key(id)
    }
}

/// All admin pages under `/admin` (full paths), for the daemon to mount.
pub fn router<B: Backend>(backend: Arc<B>) -> Router {
    let app = App {
        backend,
        limiter: Arc::new(Limiter::new(Policy::ADMIN)),
        revoked: Arc::default(),
    };
    Router::new()
        .route("/admin", get(access::index))
        .route("/admin/", get(access::index))
        .route("/admin/static/style.css", get(stylesheet))
        .route("/admin/static/copy.js", get(wizard::copy_script))
        .route("/admin/claim", get(access::claim_page::<B>))
        .route("/admin/claim/button", post(access::claim_button::<B>))
        .route("/admin/claim/code", post(access::claim_code::<B>))
        .route(
            "/admin/password",
            get(access::password_page::<B>).post(access::password_post::<B>),
        )
        .route(
            "/admin/login",
            get(access::login_page::<B>).post(access::login_post::<B>),
        )
        .route("/admin/logout", post(access::logout::<B>))
        .route(
            "/admin/setup/domain",
            get(wizard::domain_page).post(wizard::domain_post::<B>),
        )
        .route("/admin/setup/dns", get(wizard::dns_page::<B>))
        .route("/admin/setup/dns/zone", get(wizard::zone::<B>))
        .route("/admin/setup/ports", get(wizard::ports_page::<B>))
        .route(
            "/admin/setup/front",
            get(front::front_page::<B>).post(front::pair_post::<B>),
        )
        .route("/admin/setup/front/cancel", post(front::cancel_post::<B>))
        .route("/admin/setup/front/leave", post(front::leave_post::<B>))
        .route(
            "/admin/setup/certificate",
            get(wizard::certificate_page::<B>).post(wizard::certificate_post::<B>),
        )
        .route("/admin/setup/done", get(wizard::done_page::<B>))
        .route("/admin/status", get(status::status_page::<B>))
        .route("/admin/status/report", get(status::report::<B>))
        .route("/admin/accounts", get(accounts::accounts_page::<B>))
        .route("/admin/accounts/delete", post(accounts::delete::<B>))
        .route("/admin/accounts/block", post(accounts::block::<B>))
        .route("/admin/accounts/unblock", post(accounts::unblock::<B>))
        .route("/admin/update/now", post(update::update_now::<B>))
        .route("/admin/queue", get(queue::queue_page::<B>))
        .route("/admin/queue/retry", post(queue::retry::<B>))
        .route("/admin/queue/bounce", post(queue::bounce::<B>))
        .route("/admin/backups", get(backups::backups_page::<B>))
        .route("/admin/backups/passphrase", post(backups::passphrase::<B>))
        .route("/admin/backups/settings", post(backups::settings::<B>))
        .route("/admin/backups/now", post(backups::now::<B>))
        // Bundles are far over BODY_LIMIT: no limit here, `update::upload` enforces the
        // backend's cap while streaming.
        .route(
            "/admin/update/upload",
            post(update::upload::<B>).layer(DefaultBodyLimit::disable()),
        )
        .route("/admin/signup", get(signup::signup_page::<B>))
        .route("/admin/signup/mode", post(signup::mode_post::<B>))
        .route("/admin/signup/invites", post(signup::create_post::<B>))
        .route("/admin/signup/revoke", post(signup::revoke_post::<B>))
        .route("/admin/signup/invite/{id}", get(signup::invite_page::<B>))
        .route(
            "/admin/setup/restore",
            get(restore::restore_page::<B>).post(restore::restore_post::<B>),
        )
        .route("/admin/setup/restore/cancel", post(restore::cancel::<B>))
        // A backup is far over BODY_LIMIT: `restore::upload` enforces the backend's cap.
        .route(
            "/admin/setup/restore/upload",
            post(restore::upload::<B>).layer(DefaultBodyLimit::disable()),
        )
        .route("/admin/backup/download", post(restore::download::<B>))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(app.clone(), gate::<B>))
        .with_state(app)
}

/// Issue #6 item 6: only allowed clients (default: LAN and loopback) get pages; a
/// request without the daemon's [`Client`] extension is refused too. Issue 13: only
/// requests for one of the box's names ([`crate::host`]) get pages; others (DNS
/// rebinding) get 421. Every response gets the security headers.
async fn gate<B: Backend>(State(app): State<App<B>>, req: Request, next: Next) -> Response {
    let allowed = req
        .extensions()
        .get::<Client>()
        .is_some_and(|c| app.backend.admin_client_allowed(c.addr.ip().to_canonical()));
    let names = app.backend.box_names();
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let ours = host.is_some_and(|h| crate::host::named(h, &names).is_some());
    let mut resp = if !allowed {
        message(
            StatusCode::FORBIDDEN,
            "Not from here",
            "The admin pages of this Relaybox answer only devices on its local network. \
             Open them from a phone or computer at home.",
            None,
        )
    } else if !ours {
        let names: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| !n.is_empty())
            .collect();
        // RFC 9110 §15.5.20: this server does not answer for that name.
        message(
            StatusCode::MISDIRECTED_REQUEST,
            "Wrong address",
            &format!(
                "The admin pages of this Relaybox answer only at its own addresses: its IP \
                 address or {}. Open one of those in the address bar.",
                names.join(" or ")
            ),
            None,
        )
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// The one stylesheet.
async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../templates/style.css"),
    )
        .into_response()
}

async fn not_found() -> Response {
    message(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such page.",
        Some(("/admin/", "Go to the start")),
    )
}

/// Who is asking, and what their cookies prove. Cookies signed with another key, of
/// another kind, expired or revoked count as absent.
pub struct Visitor {
    pub client: Client,
    pub overview: Overview,
    pub key: Vec<u8>,
    /// Id of a valid admin session.
    pub session: Option<Id>,
    /// Id of a valid pre-session anchor.
    pub pre: Option<Id>,
    /// A valid claim proof (only meaningful while the box is unclaimed).
    pub claimed: bool,
    /// The claim window ticket this visitor holds.
    pub ticket: Option<String>,
    /// `Set-Cookie` values to send with the response.
    pub cookies: Vec<String>,
}

impl<B: Backend> FromRequestParts<App<B>> for Visitor {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App<B>) -> Result<Self, Response> {
        let Some(client) = parts.extensions.get::<Client>().copied() else {
            return Err(message(
                StatusCode::FORBIDDEN,
                "Not from here",
                "Unknown client.",
                None,
            ));
        };
        let key = app.backend.session_key();
        let overview = app.backend.overview();
        let now = session::now_unix();
        let header = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join("; ");
        let get = |name| session::cookie(&header, name);
        let session = get(session::SESSION_COOKIE)
            .and_then(|v| session::verify(&key, Kind::Session, v, now))
            .filter(|id| !app.is_revoked(id))
            // A session cannot outlive the password it was made with; while unclaimed
            // there is none.
            .filter(|_| overview.phase != Phase::Unclaimed);
        let pre = get(session::PRE_COOKIE).and_then(|v| session::verify(&key, Kind::Pre, v, now));
        let claimed = get(session::CLAIMED_COOKIE)
            .and_then(|v| session::verify(&key, Kind::Claimed, v, now))
            .is_some();
        let ticket = get(session::CLAIM_TICKET_COOKIE)
            .and_then(session::decode_ticket)
            .filter(|t| !t.is_empty());
        Ok(Visitor {
            client,
            overview,
            key,
            session,
            pre,
            claimed,
            ticket,
            cookies: Vec::new(),
        })
    }
}

impl Visitor {
    /// The CSRF token for this visitor's forms; sets a pre-session anchor cookie when
    /// the visitor has neither a session nor an anchor yet.
    pub fn csrf(&mut self) -> String {
        let id = match self.session.or(self.pre) {
            Some(id) => id,
            None => {
                let id = session::new_id();
                let value = session::sign(&self.key, Kind::Pre, &id, session::now_unix());
                self.cookies.push(session::set_cookie(
                    session::PRE_COOKIE,
                    &value,
                    session::SESSION_SECONDS,
                    self.client.https,
                ));
                self.pre = Some(id);
                id
            }
        };
        session::csrf_token(&self.key, &id)
    }

    /// Whether `token` is this visitor's CSRF token (session first, else the anchor).
    pub fn csrf_ok(&self, token: &str) -> bool {
        [self.session, self.pre]
            .iter()
            .flatten()
            .any(|id| session::csrf_ok(&self.key, id, token))
    }

    /// Set a cookie with the response.
    pub fn set(&mut self, name: &str, value: &str, max_age: u64) {
        self.cookies
            .push(session::set_cookie(name, value, max_age, self.client.https));
    }

    /// Delete a cookie with the response.
    pub fn clear(&mut self, name: &str) {
        self.set(name, "", 0);
    }

    /// Start a new admin session (after a password was set or given): `key` is the
    /// current session key (it changes when the password is set).
    pub fn start_session(&mut self, key: Vec<u8>) {
        self.key = key;
        let id = session::new_id();
        let value = session::sign(&self.key, Kind::Session, &id, session::now_unix());
        self.set(session::SESSION_COOKIE, &value, session::SESSION_SECONDS);
        self.session = Some(id);
    }

    /// The layout fields for a page titled `title` (with a CSRF token for its forms).
    pub fn layout(&mut self, title: &str) -> Layout {
        Layout {
            title: title.to_string(),
            refresh: None,
            logged_in: self.session.is_some(),
            csrf: self.csrf(),
            version: self.overview.version.clone(),
            step: 0,
        }
    }

    /// Where a visitor without the needed session goes: the claim while unclaimed,
    /// otherwise the login; `None` when there is a session.
    pub fn need_session(&self) -> Option<Response> {
        if self.overview.phase == Phase::Unclaimed {
            return Some(self.redirect("/admin/claim"));
        }
        if self.session.is_none() {
            return Some(self.redirect("/admin/login"));
        }
        None
    }

    /// 403 for a form without a valid CSRF token; `None` when the token is right.
    pub fn need_csrf(&self, token: &str) -> Option<Response> {
        if self.csrf_ok(token) {
            return None;
        }
        Some(message(
            StatusCode::FORBIDDEN,
            "Form expired",
            "This form was not accepted (it is old or came from another page). Nothing \
             was changed. Go back, reload the page and send it again.",
            Some(("/admin/", "Go to the start")),
        ))
    }

    /// A 303 redirect to `to`, with this visitor's cookies.
    pub fn redirect(&self, to: &str) -> Response {
        let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response();
        self.add_cookies(&mut resp);
        resp
    }

    /// Render `page` with `code`, with this visitor's cookies.
    pub fn page<T: Template>(&self, code: StatusCode, page: &T) -> Response {
        let mut resp = html(code, page);
        self.add_cookies(&mut resp);
        resp
    }

    fn add_cookies(&self, resp: &mut Response) {
        for c in &self.cookies {
            if let Ok(v) = HeaderValue::from_str(c) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
    }
}

/// Render a template as an HTML response (a short error page if rendering fails).
pub fn html<T: Template>(code: StatusCode, page: &T) -> Response {
    match page.render() {
        Ok(body) => (
            code,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
        // Only a template bug gets here; the visitor gets a short text, not a panic.
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "The page could not be shown.",
        )
            .into_response(),
    }
}

/// A short page with a heading, a sentence and an optional link.
#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub l: Layout,
    pub heading: String,
    pub text: String,
    pub link: Option<(String, String)>,
}

/// A [`MessagePage`] response (no session needed, no forms).
pub fn message(
    code: StatusCode,
    heading: &str,
    text: &str,
    link: Option<(&str, &str)>,
) -> Response {
    let page = MessagePage {
        l: Layout {
            title: heading.to_string(),
            ..Layout::default()
        },
        heading: heading.to_string(),
        text: text.to_string(),
        link: link.map(|(h, t)| (h.to_string(), t.to_string())),
    };
    html(code, &page)
}
