//! The setup steps after the claim (issue #6 item 4): domain or IP-only mode, the DNS
//! records with live checks and a zone file, router port forwarding, the certificate,
//! and the first account's invitation. Every step needs a session.

use std::time::Duration;

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::{StatusCode, header};
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
    };
    let (choice, next) = match form.mode.as_str() {
        "domain" if domain.is_empty() => {
            page.domain_error = Some("Type the domain name, like chat.example.org.".into());
            return v.page(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
        "ip" if ip.is_empty() => {
            page.ip_error = Some("Type the public IPv4 address, like 203.0.113.7.".into());
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

#[derive(Template)]
#[template(path = "dns.html")]
pub struct DnsPage {
    pub l: Layout,
    pub domain: String,
    pub ip_only: bool,
    /// The domain is not applied yet (the relay is starting): the page refreshes.
    pub pending: bool,
    pub records: Vec<DnsRecord>,
    pub checks: Vec<CheckView>,
}

/// `GET /admin/setup/dns`.
pub async fn dns_page<B: Backend>(State(app): State<App<B>>, mut v: Visitor) -> Response {
    if let Some(r) = v.need_session() {
        return r;
    }
    let ip_only = v.overview.ip_only;
    let domain = v.overview.domain.clone();
    let pending = domain.is_none();
    let (records, checks) = if ip_only || pending {
        (Vec::new(), Vec::new())
    } else {
        (
            app.backend.dns_records(),
            bounded_checks("dns", app.backend.dns_checks()).await,
        )
    };
    let mut l = step_layout(&mut v, "DNS records", 2);
    if pending {
        l.refresh = Some("3".into());
    }
    let page = DnsPage {
        l,
        domain: domain.unwrap_or_default(),
        ip_only,
        pending,
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
    pub forwards: &'static [Forward],
    pub checks: Vec<CheckView>,
}

/// `GET /admin/setup/ports`.
pub async fn ports_page<B: Backend>(State(app): State<App<B>>, mut v: Visitor) -> Response {
    if let Some(r) = v.need_session() {
        return r;
    }
    let checks = bounded_checks("port", app.backend.port_checks()).await;
    let page = PortsPage {
        l: step_layout(&mut v, "Router port forwarding", 3),
        domain: v.overview.domain.clone().unwrap_or_default(),
        forwards: &FORWARDS,
        checks,
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

/// `GET /admin/setup/done`: the QR code for the first account.
pub async fn done_page<B: Backend>(State(app): State<App<B>>, mut v: Visitor) -> Response {
    if let Some(r) = v.need_session() {
        return r;
    }
    let invite = app.backend.invite();
    let mut l = step_layout(&mut v, "Create your first account", 5);
    if invite.is_none() {
        l.refresh = Some("5".into());
    }
    let page = DonePage {
        l,
        url: invite.as_ref().map(|i| i.url.clone()),
        qr_svg: invite.map(|i| i.qr_svg).filter(|s| safe_svg(s)),
    };
    v.page(StatusCode::OK, &page)
}
