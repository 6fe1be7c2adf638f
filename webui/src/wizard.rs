//! The setup steps after the claim (issue #6 item 4): domain or IP-only mode, the DNS
//! records with live checks and a zone file, router port forwarding, the certificate,
//! and the first account's invitation. Every step needs a session.

use std::time::Duration;

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::router::{App, Visitor};
use crate::view::{self, CheckView, Layout};
use crate::{AcmeProgress, Backend, Check, DnsRecord, DomainChoice};

/// Longest the pages wait for live checks before showing "could not check" (WIZ-2).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest domain or address input passed on to the daemon.
const MAX_INPUT: usize = 1024;

/// Run live checks with a time bound; a timeout becomes one "could not check" entry.
pub async fn bounded_checks(
    id: &str,
    checks: impl std::future::Future<Output = Vec<Check>>,
) -> Vec<CheckView> {
    match tokio::time::timeout(CHECK_TIMEOUT, checks).await {
        Ok(list) => view::checks(&list),
        Err(_) => vec![view::could_not_check(
            id,
            "The checks took too long to answer. Try again in a minute.",
        )],
    }
}

fn step_layout(v: &mut Visitor, title: &str, step: u8) -> Layout {
    let mut l = v.layout(title);
    l.step = step;
    l
}

#[derive(Template)]
#[template(path = "domain.html")]
pub struct DomainPage {
    pub l: Layout,
    /// `domain` or `ip`.
    pub mode: String,
    pub domain: String,
    pub ip: String,
    pub mode_error: Option<String>,
    pub domain_error: Option<String>,
    pub ip_error: Option<String>,
    /// "Restore from a backup" is offered (setup mode: no name chosen yet).
    pub restore_offered: bool,
}

/// `GET /admin/setup/domain`.
pub async fn domain_page(mut v: Visitor) -> Response {
    if let Some(r) = v.need_session() {
        return r;
    }
    let current = v.overview.domain.clone().unwrap_or_default();
    let (mode, domain, ip) = if v.overview.ip_only {
        ("ip", String::new(), current)
    } else {
        ("domain", current, String::new())
    };
    let page = DomainPage {
        l: step_layout(&mut v, "Your relay's name", 1),
        mode: mode.into(),
        domain,
        ip,
        mode_error: None,
        domain_error: None,
        ip_error: None,
        restore_offered: v.overview.phase == crate::Phase::NeedDomain,
    };
    v.page(StatusCode::OK, &page)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DomainForm {
    pub csrf: String,
    pub mode: String,
    pub domain: String,
    pub ip: String,
}

/// `POST /admin/setup/domain`: apply the choice (the daemon writes the config atomically
/// and may switch from setup mode to the relay right after answering; the next pages
/// work in either mode).
pub async fn domain_post<B: Backend>(
    State(app): State<App<B>>,
    mut v: Visitor,
    Form(form): Form<DomainForm>,
) -> Response {
    if let Some(r) = v.need_csrf(&form.csrf) {
        return r;
    }
    if let Some(r) = v.need_session() {
        return r;
    }
    let domain = form.domain.trim().to_string();
    let ip = form.ip.trim().to_string();
    let mut page = DomainPage {
        l: step_layout(&mut v, "Your relay's name", 1),
        mode: form.mode.clone(),
        domain: domain.clone(),
        ip: ip.clone(),
        mode_error: None,
        domain_error: None,
        ip_error: None,
        restore_offered: v.overview.phase == crate::Phase::NeedDomain,
    };
    let (choice, next) = match form.mode.as_str() {
        "domain" if domain.is_empty() => {
            page.domain_error = Some("Type the domain name, like chat.example.org.".into());
            return v.page(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
        "ip" if ip.is_empty() => {
            page.ip_error = Some(
                "Type the IPv4 address, like 203.0.113.7 (public) or 192.168.1.20 (local network)."
                    .into(),
            );
            return v.page(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
        "domain" if domain.len() <= MAX_INPUT => (DomainChoice::Domain(domain), "/admin/setup/dns"),
        "ip" if ip.len() <= MAX_INPUT => (DomainChoice::IpOnly(ip), "/admin/setup/ports"),
        "domain" => {
            page.domain_error = Some("That is far too long for a domain name.".into());
            return v.page(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
        "ip" => {
            page.ip_error = Some("That is far too long for an IP address.".into());
            return v.page(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
        _ => {
            page.mode = "domain".into();
            page.mode_error = Some("Choose one of the two ways first.".into());
            return v.page(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
    };
    match app.backend.set_domain(choice).await {
        Ok(()) => v.redirect(next),
        Err(e) => {
            match e.field {
                "ip" => page.ip_error = Some(e.message),
                "domain" => page.domain_error = Some(e.message),
                _ if page.mode == "ip" => page.ip_error = Some(e.message),
                _ => page.domain_error = Some(e.message),
            }
            v.page(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
    }
}

/// How often a DNS page that waits for the relay reloads itself, in seconds.
const PREPARE_EVERY: u32 = 2;
/// How many times it does (about a minute) before it stops and says so (issue 16 item 5).
const PREPARE_REFRESHES: u32 = 30;

/// One DNS record as the page shows it.
pub struct RecordView {
    pub id: String,
    /// The owner name as providers' forms take it: in full, without the trailing dot
    /// of the zone file (issue 16 item 11); in pieces that end after each dot, so that a
    /// narrow screen breaks the name between labels, not inside one.
    pub name_parts: Vec<String>,
    pub kind: String,
    pub value: String,
    pub required: bool,
    pub note: String,
}

impl From<DnsRecord> for RecordView {
    fn from(r: DnsRecord) -> Self {
        let name = match r.name.strip_suffix('.') {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => r.name,
        };
        RecordView {
            id: r.id,
            name_parts: name.split_inclusive('.').map(str::to_string).collect(),
            kind: r.kind,
            value: r.value,
            required: r.required,
            note: r.note,
        }
    }
}

#[derive(Template)]
#[template(path = "dns.html")]
pub struct DnsPage {
    pub l: Layout,
    pub domain: String,
    pub ip_only: bool,
    /// No name chosen yet (setup mode before the name step).
    pub no_name: bool,
    /// The relay is still starting with its new name (making its DKIM key): no
    /// records to show yet. The page reloads itself.
    pub preparing: bool,
    /// It reloaded itself [`PREPARE_REFRESHES`] times and the records are still not
    /// there: it stops and says what to do.
    pub stalled: bool,
    pub records: Vec<RecordView>,
    pub checks: Vec<CheckView>,
}

/// How many times the DNS page reloaded itself while preparing (`?wait=N`).
fn wait_count(uri: &Uri) -> u32 {
    uri.query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("wait="))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        // Digits too many for a u32 are over the bound too.
        .map_or(0, |n| n.parse::<u32>().unwrap_or(u32::MAX))
        .min(PREPARE_REFRESHES)
}

/// `GET /admin/setup/dns`. Right after the name step the relay may still be starting
/// (it makes its DKIM key first): until its records exist the page shows a "preparing"
/// state that reloads itself, a bounded number of times, instead of empty lists.
pub async fn dns_page<B: Backend>(State(app): State<App<B>>, mut v: Visitor, uri: Uri) -> Response {
    if let Some(r) = v.need_session() {
        return r;
    }
    let ip_only = v.overview.ip_only;
    let domain = v.overview.domain.clone();
    let records: Vec<RecordView> = if ip_only || domain.is_none() {
        Vec::new()
    } else {
        app.backend
            .dns_records()
            .into_iter()
            .map(RecordView::from)
            .collect()
    };
    // No name chosen yet: nothing is being prepared.
    let no_name = domain.is_none();
    let preparing = !ip_only && !no_name && records.is_empty();
    let checks = if preparing || ip_only || no_name {
        Vec::new()
    } else {
        bounded_checks("dns", app.backend.dns_checks()).await
    };
    let waited = wait_count(&uri);
    let stalled = preparing && waited >= PREPARE_REFRESHES;
    let mut l = step_layout(&mut v, "DNS records", 2);
    if preparing && !stalled {
        l.refresh = Some(format!(
            "{PREPARE_EVERY};url=/admin/setup/dns?wait={}",
            waited + 1
        ));
    }
    let page = DnsPage {
        l,
        domain: domain.unwrap_or_default(),
        ip_only,
        no_name,
        preparing,
        stalled,
        records,
        checks,
    };
    v.page(StatusCode::OK, &page)
}

/// `GET /admin/setup/dns/zone`: the records as a zone file download.
pub async fn zone<B: Backend>(State(app): State<App<B>>, v: Visitor) -> Response {
    if let Some(r) = v.need_session() {
        return r;
    }
    let name: String = v
        .overview
        .domain
        .as_deref()
        .unwrap_or("relaybox")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(253)
        .collect();
    let name = if name.trim_matches('.').is_empty() {
        "relaybox".to_string()
    } else {
        name.trim_matches('.').to_string()
    };
    (
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.zone\""),
            ),
        ],
        app.backend.zone_file(),
    )
        .into_response()
}

/// One port forward the operator makes on the router.
pub struct Forward {
    pub proto: &'static str,
    pub port: u16,
    pub service: &'static str,
    pub purpose: &'static str,
}

/// The forwards (issue #6 item 4; relay.md §5 ports).
pub const FORWARDS: [Forward; 7] = [
    Forward {
        proto: "TCP",
        port: 25,
        service: "SMTP",
        purpose: "Mail from other servers (other relays deliver here).",
    },
    Forward {
        proto: "TCP",
        port: 80,
        service: "HTTP",
        purpose: "Getting the certificate; visitors are sent on to HTTPS.",
    },
    Forward {
        proto: "TCP",
        port: 443,
        service: "HTTPS",
        purpose: "Creating accounts, the invitation page, and Delta Chat on networks that \
                  only allow web traffic.",
    },
    Forward {
        proto: "TCP",
        port: 465,
        service: "SMTPS",
        purpose: "Delta Chat sends messages.",
    },
    Forward {
        proto: "TCP",
        port: 587,
        service: "Submission",
        purpose: "Sending messages, for apps that use this port.",
    },
    Forward {
        proto: "TCP",
        port: 993,
        service: "IMAPS",
        purpose: "Delta Chat receives messages.",
    },
    Forward {
        proto: "UDP",
        port: 3478,
        service: "STUN/TURN",
        purpose: "Audio and video calls between Delta Chat users.",
    },
];

#[derive(Template)]
#[template(path = "ports.html")]
pub struct PortsPage {
    pub l: Layout,
    pub domain: String,
    /// The forwards this relay needs (UDP 3478 only while TURN runs).
    pub forwards: Vec<&'static Forward>,
    pub checks: Vec<CheckView>,
    /// IP-only mode on a local-network address: nothing to forward (issue 16 item 9:
    /// the name page offers this as fine for a LAN).
    pub lan_only: bool,
    /// Issue 20: why a front server may be the way (one sentence each); empty: the
    /// page only mentions it.
    pub front_advice: Vec<String>,
    /// The front server in use: nothing to forward, no checks here.
    pub front: Option<String>,
    /// A front server can be offered (a domain: not in IP-only mode, whose addresses
    /// carry the box's own IP address).
    pub front_offered: bool,
}

/// `GET /admin/setup/ports`.
pub async fn ports_page<B: Backend>(State(app): State<App<B>>, mut v: Visitor) -> Response {
    if let Some(r) = v.need_session() {
        return r;
    }
    let domain = v.overview.domain.clone().unwrap_or_default();
    let lan_only =
        v.overview.ip_only && domain.parse::<std::net::IpAddr>().is_ok_and(crate::is_lan);
    // Issue 20: through a front server nothing is forwarded and the checks of this step
    // do not apply (the front page checks the records).
    let front = app.backend.front().current;
    let (checks, front_advice) = if front.is_some() {
        (Vec::new(), Vec::new())
    } else {
        let (raw, checks) =
            match tokio::time::timeout(CHECK_TIMEOUT, app.backend.port_checks()).await {
                Ok(raw) => {
                    let checks = view::checks(&raw);
                    (raw, checks)
                }
                Err(_) => (
                    Vec::new(),
                    vec![view::could_not_check(
                        "port",
                        "The checks took too long to answer. Try again in a minute.",
                    )],
                ),
            };
        let advice = if v.overview.ip_only {
            Vec::new()
        } else {
            app.backend.front_advice(&raw)
        };
        (checks, advice)
    };
    let turn = app.backend.turn_enabled();
    let page = PortsPage {
        l: step_layout(&mut v, "Router port forwarding", 3),
        domain,
        forwards: FORWARDS
            .iter()
            .filter(|f| turn || f.service != "STUN/TURN")
            .collect(),
        checks,
        lan_only,
        front_advice,
        front,
        front_offered: !v.overview.ip_only,
    };
    v.page(StatusCode::OK, &page)
}

#[derive(Template)]
#[template(path = "certificate.html")]
pub struct CertificatePage {
    pub l: Layout,
    /// `idle`, `running`, `failed`, `done`.
    pub state: &'static str,
    pub step: String,
    pub reason: String,
    pub source: String,
    pub names: Vec<String>,
    /// `YYYY-MM-DD (N days left)`.
    pub expiry: Option<String>,
    pub acme_possible: bool,
    /// Why no certificate can be requested here, when it cannot.
    pub why_not: String,
    pub error: Option<String>,
}

/// `state` and texts of the certificate step.
fn certificate_view(
    v: &mut Visitor,
    info: crate::CertificateInfo,
    error: Option<String>,
) -> CertificatePage {
    let (state, step, reason) = match &info.progress {
        AcmeProgress::Idle => ("idle", String::new(), String::new()),
        AcmeProgress::Running { step } => ("running", step.clone(), String::new()),
        AcmeProgress::Failed { reason } => ("failed", String::new(), reason.clone()),
        AcmeProgress::Done => ("done", String::new(), String::new()),
    };
    let domain = v.overview.domain.clone().unwrap_or_default();
    let why_not = if info.acme_possible {
        String::new()
    } else if v.overview.ip_only {
        "In IP-only mode there is no name to certify: public certificate authorities do \
         not issue certificates for home IP addresses. The box uses its own (self-signed) \
         certificate, which Delta Chat accepts for this relay."
            .into()
    } else if info.source == "external" {
        "The configuration names a certificate from elsewhere; the box uses it and does \
         not request one."
            .into()
    } else if domain.starts_with('_') || domain.contains("._") {
        "The name starts with an underscore (a test name): public certificate \
         authorities do not issue certificates for it. The box uses its own \
         (self-signed) certificate."
            .into()
    } else {
        "This setup cannot get a certificate automatically; the box uses the one it has.".into()
    };
    let now = crate::session::now_unix();
    let expiry = info.not_after.map(|t| {
        let days = view::days_left(t, now);
        if days < 0 {
            format!("{} (expired)", view::date(t))
        } else {
            format!("{} ({days} days left)", view::date(t))
        }
    });
    let mut l = step_layout(v, "Certificate", 4);
    if state == "running" {
        l.refresh = Some("2".into());
    }
    CertificatePage {
        l,
        state,
        step,
        reason,
        source: view::certificate_label(&info),
        names: info.names,
        expiry,
        acme_possible: info.acme_possible,
        why_not,
        error,
    }
}

/// `GET /admin/setup/certificate`.
pub async fn certificate_page<B: Backend>(State(app): State<App<B>>, mut v: Visitor) -> Response {
    if let Some(r) = v.need_session() {
        return r;
    }
    let page = certificate_view(&mut v, app.backend.certificate(), None);
    v.page(StatusCode::OK, &page)
}

/// `POST /admin/setup/certificate`: start getting a certificate.
pub async fn certificate_post<B: Backend>(
    State(app): State<App<B>>,
    mut v: Visitor,
    Form(form): Form<crate::access::CsrfForm>,
) -> Response {
    if let Some(r) = v.need_csrf(&form.csrf) {
        return r;
    }
    if let Some(r) = v.need_session() {
        return r;
    }
    match app.backend.request_certificate() {
        Ok(()) => v.redirect("/admin/setup/certificate"),
        Err(reason) => {
            let page = certificate_view(&mut v, app.backend.certificate(), Some(reason));
            v.page(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
    }
}

#[derive(Template)]
#[template(path = "done.html")]
pub struct DonePage {
    pub l: Layout,
    pub url: Option<String>,
    /// The QR code SVG, only when it passed [`safe_svg`].
    pub qr_svg: Option<String>,
    /// The link carries one account's address and password (`dclogin:`, IP-only and
    /// `_name` relays): everyone who scans it gets that same account, so each person
    /// needs a code of their own (issue 16 item 1). Otherwise (`DCACCOUNT:`) every
    /// scan creates a new account and the code may be shared.
    pub per_person: bool,
    /// `DCACCOUNT:<domain>`, offered beside the code when sign-up takes it.
    pub domain_code: Option<String>,
    /// Sign-up does not take the code: what to say instead (and no code).
    pub not_open: Option<String>,
    /// The relay's public page, which hands out codes too.
    pub public_page: Option<String>,
}

/// Whether the daemon's QR code SVG may go into the page unescaped: an `<svg>` element
/// without scripts, event handlers, links or foreign content. (It comes from the
/// daemon's own QR encoder; this is a second line behind the CSP.)
pub fn safe_svg(svg: &str) -> bool {
    let t = svg.trim_start();
    let start = t.strip_prefix("<?xml").map_or(t, |rest| {
        rest.split_once("?>").map_or("", |(_, r)| r.trim_start())
    });
    let lower = svg.to_ascii_lowercase();
    start.starts_with("<svg")
        && svg.len() <= 2_000_000
        && ![
            "<script",
            "javascript:",
            "foreignobject",
            "href",
            "<iframe",
            "<!entity",
        ]
        .iter()
        .any(|bad| lower.contains(bad))
        && !has_event_attribute(&lower)
}

/// Whether markup has an attribute named `on…=` (an event handler).
fn has_event_attribute(lower: &str) -> bool {
    let b = lower.as_bytes();
    (1..b.len()).any(|i| {
        !b[i - 1].is_ascii_alphanumeric()
            && !matches!(b[i - 1], b'-' | b'_' | b':')
            && b[i..].starts_with(b"on")
            && b[i + 2..]
                .iter()
                .position(|c| !c.is_ascii_alphanumeric() && *c != b'-')
                .is_some_and(|n| {
                    n > 0 && b[i + 2 + n..].iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'=')
                })
    })
}

/// `GET /admin/setup/done`: the QR code for the first account. A per-person
/// (`dclogin:`) code is a new one on every view (the daemon makes fresh credentials
/// each time; the pages are `no-store`), so "new code" is a reload.
pub async fn done_page<B: Backend>(State(app): State<App<B>>, mut v: Visitor) -> Response {
    if let Some(r) = v.need_session() {
        return r;
    }
    let invite = app.backend.invite();
    let mut l = step_layout(&mut v, "Create your first account", 5);
    if invite.is_none() {
        l.refresh = Some("5".into());
    }
    let url = invite.as_ref().map(|i| i.url.clone());
    let per_person = url.as_deref().is_some_and(|u| {
        u.get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("dclogin:"))
    });
    let public_page = v
        .overview
        .domain
        .as_deref()
        .map(|d| format!("https://{d}/"));
    let domain_code = invite.as_ref().and_then(|i| i.domain_code.clone());
    let not_open = invite.as_ref().and_then(|i| i.not_open.clone());
    let page = DonePage {
        l,
        url,
        domain_code,
        not_open,
        qr_svg: invite.map(|i| i.qr_svg).filter(|s| safe_svg(s)),
        per_person,
        public_page,
    };
    v.page(StatusCode::OK, &page)
}

/// `GET /admin/static/copy.js`: the copy buttons next to DNS names and values, the only
/// script of these pages (allowed by the CSP's `'self'`). Every page works without it:
/// the buttons stay hidden and the values can be selected by hand.
pub async fn copy_script() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/javascript; charset=utf-8".to_string(),
        )],
        include_str!("../templates/copy.js"),
    )
        .into_response()
}
