//! The relay's own web site (spec/relay.md §17, NEW-6): the index, info and privacy
//! pages from askama templates (`daemon/templates/`, checked at compile time), the invite
//! QR code as PNG, the MTA-STS policy on `mta-sts.<domain>` (RFC 8461 §3.2), and the
//! operator's `www_folder` served instead of the built-in pages. The routes are added to
//! the HTTPS router by `crate::http::https_router`.

mod png;

use std::path::{Component, Path, PathBuf};

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::config::Config;
use crate::onboarding;

/// RFC 8461 §3.2 policy location.
pub const MTA_STS_PATH: &str = "/.well-known/mta-sts.txt";
/// Pixels per QR module in the PNG.
const PNG_SCALE: u32 = 8;
/// Light modules around the QR code (ISO/IEC 18004 asks for 4).
const QUIET_ZONE: u32 = 4;
/// Largest file served from `www_folder`.
const MAX_FILE_SIZE: u64 = 16 * 1024 * 1024;

/// NEW-6: `DCACCOUNT:https://<domain>/new`, the link Delta Chat turns into a new profile.
pub fn dcaccount_url(config: &Config) -> String {
    format!("DCACCOUNT:https://{}/new", config.mail_domain)
}

/// §17: the path of the invite QR code PNG.
pub fn qr_png_path(config: &Config) -> String {
    format!("/qr-chatmail-invite-{}.png", config.mail_domain)
}

/// RFC 8461 §3.2 policy, values from spec §17.
pub fn mta_sts_policy(config: &Config) -> String {
    format!(
        "version: STSv1\r\nmode: enforce\r\nmx: {}\r\nmax_age: 2419200\r\n",
        config.mail_domain
    )
}

/// What the site's handlers need of the router's state: the configuration
/// (`crate::http::Web` implements it).
pub trait Site: Clone + Send + Sync + 'static {
    fn config(&self) -> &Config;
    /// Issue 18: the relay's sign-up mode now (the index page offers no code while
    /// sign-up is closed or by invite only).
    fn signup_mode(&self) -> crate::config::SignupMode {
        self.config().signup
    }
}

/// Add the site routes to the HTTPS router: the built-in pages, or with `www_folder`
/// the folder as fallback for every path no other route serves.
pub fn add_routes<S: Site>(mut router: Router<S>, config: &Config) -> Router<S> {
    router = router.route(MTA_STS_PATH, get(mta_sts::<S>));
    // §17: the PNG exists only where the invite is a `DCACCOUNT:` link.
    if !config.self_signed() {
        router = router.route(&qr_png_path(config), get(qr_png::<S>));
    }
    if config.www_folder.is_some() {
        return router.fallback(folder::<S>);
    }
    router
        .route("/", get(index::<S>))
        .route("/index.html", get(index::<S>))
        .route("/info.html", get(info::<S>))
        .route("/privacy.html", get(privacy::<S>))
        .fallback(not_found)
}

/// A QR code as an SVG path: one `M x y h1 v1 h-1 z` square per run of dark modules.
pub struct QrSvg {
    /// Width and height in modules, quiet zone included.
    pub size: u32,
    pub path: String,
}

fn qr_code(text: &str) -> Option<qrcode::QrCode> {
    qrcode::QrCode::new(text.as_bytes()).ok()
}

/// The dark modules of `text`'s QR code with the quiet zone: `(size, is_dark(x, y))`.
fn qr_modules(text: &str) -> Option<(u32, impl Fn(u32, u32) -> bool)> {
    let code = qr_code(text)?;
    let width = u32::try_from(code.width()).ok()?;
    let colors = code.to_colors();
    let size = width + 2 * QUIET_ZONE;
    let dark = move |x: u32, y: u32| {
        let (Some(x), Some(y)) = (x.checked_sub(QUIET_ZONE), y.checked_sub(QUIET_ZONE)) else {
            return false;
        };
        x < width && y < width && colors[(y * width + x) as usize] == qrcode::Color::Dark
    };
    Some((size, dark))
}

/// `text`'s QR code as a standalone `<svg>` element (black modules on white), for
/// pages that inline it (the admin wizard's invitation).
pub fn qr_svg_element(text: &str) -> Option<String> {
    let qr = qr_svg(text)?;
    Some(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {s} {s}\" \
         shape-rendering=\"crispEdges\" role=\"img\" aria-label=\"QR code\">\
         <rect width=\"{s}\" height=\"{s}\" fill=\"#fff\"/>\
         <path fill=\"#000\" d=\"{p}\"/></svg>",
        s = qr.size,
        p = qr.path
    ))
}

fn qr_svg(text: &str) -> Option<QrSvg> {
    use std::fmt::Write as _;
    let (size, dark) = qr_modules(text)?;
    let mut path = String::new();
    for y in 0..size {
        let mut x = 0;
        while x < size {
            if !dark(x, y) {
                x += 1;
                continue;
            }
            let start = x;
            while x < size && dark(x, y) {
                x += 1;
            }
            let _ = write!(path, "M{start} {y}h{}v1h-{}z", x - start, x - start);
        }
    }
    Some(QrSvg { size, path })
}

/// The PNG of `text`'s QR code: black modules of `PNG_SCALE` pixels on white.
pub fn qr_png_bytes(text: &str) -> Option<Vec<u8>> {
    let (size, dark) = qr_modules(text)?;
    let pixels = size * PNG_SCALE;
    png::encode_bw(pixels, pixels, |x, y| dark(x / PNG_SCALE, y / PNG_SCALE))
}

/// `n` bytes for people: whole GiB or MiB when exact (CFG-2 sizes are MiB), else bytes.
pub fn human_size(n: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    match n {
        0 => "0 bytes".to_string(),
        n if n.is_multiple_of(1024 * MIB) => format!("{} GiB", n / (1024 * MIB)),
        n if n.is_multiple_of(MIB) => format!("{} MiB", n / MIB),
        n => format!("{n} bytes"),
    }
}

#[derive(Template)]
#[template(path = "index.html")]
struct IndexPage {
    domain: String,
    self_signed: bool,
    invite: String,
    qr: QrSvg,
    /// Upstream 1.12: `DCACCOUNT:<domain>` (`crate::onboarding::dcaccount_domain_url`).
    invite_domain: Option<String>,
    delete_mails_after: u32,
}

/// The index page while sign-up is closed or by invite only (issue 18).
#[derive(Template)]
#[template(path = "index_no_signup.html")]
struct NoSignupPage {
    domain: String,
    note: &'static str,
    delete_mails_after: u32,
}

#[derive(Template)]
#[template(path = "info.html")]
struct InfoPage {
    domain: String,
    max_mailbox_size: String,
    max_message_size: String,
    delete_mails_after: u32,
    delete_inactive_users_after: u32,
    max_user_send_per_minute: u32,
}

#[derive(Template)]
#[template(path = "privacy.html")]
struct PrivacyPage<'a> {
    domain: String,
    delete_mails_after: u32,
    postal: &'a str,
    mail: &'a str,
    pdo: &'a str,
    supervisor: &'a str,
}

/// An HTML response, or 500 (logged) if the template fails.
fn html(rendered: askama::Result<String>, cache: &'static str) -> Response {
    match rendered {
        Ok(body) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
            ],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!("page template failed: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The name shown on the pages: the address domain (`[1.2.3.4]` in IP-only mode).
fn shown_domain(config: &Config) -> String {
    config.address_domain()
}

/// NEW-6: the link that creates an account, and the `Cache-Control` a page showing it
/// needs: `DCACCOUNT:` where the certificate is trusted; in self-signed modes a
/// `dclogin:` link with fresh random credentials (never cached).
pub fn invite_link(config: &Config) -> (String, &'static str) {
    if config.self_signed() {
        let (email, password) = onboarding::random_credentials(config);
        (
            onboarding::dclogin_url(config, &email, &password),
            "no-store",
        )
    } else {
        (dcaccount_url(config), "max-age=3600")
    }
}

/// NEW-6: the invite link and QR. Self-signed modes get a `dclogin:` link with fresh
/// random credentials (nothing is stored; the account appears at its first login,
/// ACC-5), so that page must not be cached.
async fn index<S: Site>(State(web): State<S>) -> Response {
    let config = web.config();
    // Issue 18: no code that the relay would refuse; the page says why instead (and is
    // not cached, so a change of the mode shows at once).
    let no_signup = match web.signup_mode() {
        crate::config::SignupMode::Closed => {
            Some("This relay does not take new profiles at the moment.")
        }
        crate::config::SignupMode::Invite => Some(
            "New profiles on this relay are by invitation: ask its owner for an invite QR code.",
        ),
        _ => None,
    };
    if let Some(note) = no_signup {
        let page = NoSignupPage {
            domain: shown_domain(config),
            note,
            delete_mails_after: config.delete_mails_after,
        };
        return html(page.render(), "no-store");
    }
    let (invite, cache) = invite_link(config);
    let Some(qr) = qr_svg(&invite) else {
        tracing::error!("invite link does not fit in a QR code");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let page = IndexPage {
        domain: shown_domain(config),
        self_signed: config.self_signed(),
        invite,
        qr,
        invite_domain: onboarding::dcaccount_domain_url(config),
        delete_mails_after: config.delete_mails_after,
    };
    html(page.render(), cache)
}

/// §17: the limits and retention from the config.
async fn info<S: Site>(State(web): State<S>) -> Response {
    let c = web.config();
    let page = InfoPage {
        domain: shown_domain(c),
        max_mailbox_size: human_size(c.max_mailbox_size),
        max_message_size: human_size(c.max_message_size),
        delete_mails_after: c.delete_mails_after,
        delete_inactive_users_after: c.delete_inactive_users_after,
        max_user_send_per_minute: c.max_user_send_per_minute,
    };
    html(page.render(), "max-age=3600")
}

/// §17: the four `privacy_*` values.
async fn privacy<S: Site>(State(web): State<S>) -> Response {
    let c = web.config();
    let page = PrivacyPage {
        domain: shown_domain(c),
        delete_mails_after: c.delete_mails_after,
        postal: c.privacy_postal.trim(),
        mail: c.privacy_mail.trim(),
        pdo: c.privacy_pdo.trim(),
        supervisor: c.privacy_supervisor.trim(),
    };
    html(page.render(), "max-age=3600")
}

/// §17: the PNG of the `DCACCOUNT:` QR code.
async fn qr_png<S: Site>(State(web): State<S>) -> Response {
    match qr_png_bytes(&dcaccount_url(web.config())) {
        Some(png) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("image/png")),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("max-age=86400"),
                ),
            ],
            png,
        )
            .into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// RFC 8461 §3.2: the policy, only on `mta-sts.<domain>` (§17); 404 elsewhere.
async fn mta_sts<S: Site>(State(web): State<S>, headers: HeaderMap) -> Response {
    let config = web.config();
    let wanted = format!("mta-sts.{}", config.mail_domain.to_ascii_lowercase());
    if host_without_port(&headers).as_deref() != Some(wanted.as_str()) {
        return not_found().await;
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        mta_sts_policy(config),
    )
        .into_response()
}

/// The file under `root` that `uri` names, or `None` when the path is not a plain
/// relative path (`..`, `.` segments, hidden names, backslashes, NUL, bad escapes).
/// A path ending in `/` names its `index.html`.
pub fn folder_file(root: &Path, uri: &Uri) -> Option<PathBuf> {
    let decoded = percent_encoding::percent_decode_str(uri.path())
        .decode_utf8()
        .ok()?;
    let rel = decoded.strip_prefix('/')?;
    let mut path = root.to_path_buf();
    for segment in rel.split('/') {
        if segment.is_empty() {
            continue;
        }
        // No traversal and no hidden files (`.git`, `.htpasswd`).
        if segment.starts_with('.') || segment.contains(['\\', '\0']) {
            return None;
        }
        let mut parts = Path::new(segment).components();
        match (parts.next(), parts.next()) {
            (Some(Component::Normal(_)), None) => path.push(segment),
            _ => return None,
        }
    }
    if rel.is_empty() || rel.ends_with('/') {
        path.push("index.html");
    }
    Some(path)
}

fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("txt" | "md") => "text/plain; charset=utf-8",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("svg") => "image/svg+xml",
        Some("ico") => "image/x-icon",
        Some("webp") => "image/webp",
        Some("js") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        Some("woff2") => "font/woff2",
        Some("pdf") => "application/pdf",
        _ => "application/octet-stream",
    }
}

/// `www_folder` set: serve its files for GET and HEAD. Symlinks may not lead out of the
/// folder: the resolved path must stay below the resolved root.
async fn folder<S: Site>(State(web): State<S>, method: Method, uri: Uri) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return not_found().await;
    }
    let Some(root) = web.config().www_folder.as_deref() else {
        return not_found().await;
    };
    let Some(path) = folder_file(root, &uri) else {
        return not_found().await;
    };
    let (Ok(root), Ok(real)) = (
        tokio::fs::canonicalize(root).await,
        tokio::fs::canonicalize(&path).await,
    ) else {
        return not_found().await;
    };
    if !real.starts_with(&root) {
        return not_found().await;
    }
    match tokio::fs::metadata(&real).await {
        Ok(m) if m.is_file() && m.len() <= MAX_FILE_SIZE => {}
        // A directory without the trailing slash: there, so relative links work.
        Ok(m) if m.is_dir() => return redirect(&format!("{}/", uri.path())),
        _ => return not_found().await,
    }
    match tokio::fs::read(&real).await {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(&real)),
            )],
            body,
        )
            .into_response(),
        Err(_) => not_found().await,
    }
}

/// §17: anything else is 404, with no server name or version.
pub(crate) async fn not_found() -> Response {
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
pub(crate) fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, value)]).into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// The host name of a `Host` header without its port, if it is a plausible name or
/// address literal (so it can be put in a `Location` safely).
pub(crate) fn host_without_port(headers: &HeaderMap) -> Option<String> {
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

#[cfg(test)]
mod tests;
