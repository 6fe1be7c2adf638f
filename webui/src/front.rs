//! The wizard's front server page (issue 20): for a box that the internet cannot reach
//! (no public IPv4 address, a domain that does not point at it, port 25 blocked). The
//! operator names the front server; the box makes a one-time pairing code and the page
//! shows the one command to run on the server, then waits (it reloads itself) while the
//! box tries to pair in the background. Once paired, the relay uses the front at once and
//! the page lists the DNS records that point at the front's address, with their checks
//! (the DNS step's listing: the daemon's records follow the front). "Move off the front
//! server" takes the relay back to its own address, after a confirmation.

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use crate::router::{App, Visitor, message};
use crate::view::{CheckView, Layout};
use crate::wizard::{RecordView, bounded_checks};
use crate::{Backend, FrontInfo, FrontPairing};

/// How often the page reloads itself while the box waits for the front, in seconds
/// (long enough to copy the command by hand between two reloads).
pub const WAIT_REFRESH: u32 = 5;
/// Longest front address taken (a host name is at most 253 characters, and a port).
const MAX_ADDRESS: usize = 300;

#[derive(Template)]
#[template(path = "front.html")]
pub struct FrontPage {
    pub l: Layout,
    pub domain: String,
    /// Why no front can be set up here.
    pub unavailable: Option<String>,
    /// `idle`, `waiting`, `failed`, `paired` (the pairing), shown in `data-state`.
    pub state: &'static str,
    /// The front in use (`host:port` of its tunnel).
    pub current: Option<String>,
    /// Its public address (the A record's value), when known.
    pub address: Option<String>,
    /// The box's connection to it is up.
    pub connected: bool,
    /// What the address field holds.
    pub front: String,
    pub front_error: Option<String>,
    /// The command to run on the front (waiting).
    pub command: String,
    /// Whole minutes left of the wait (rounded up).
    pub minutes_left: u64,
    /// Why the last pairing failed.
    pub reason: String,
    /// The records pointing at the front, and their checks (front in use, domain mode).
    pub records: Vec<RecordView>,
    pub checks: Vec<CheckView>,
}

fn front_layout(v: &mut Visitor) -> Layout {
    let mut l = v.layout("Use a front server");
    l.step = 3;
    l
}

/// The page for `info`; with the records and their checks when a front is in use and not
/// being replaced.
async fn front_view<B: Backend>(
    app: &App<B>,
    v: &mut Visitor,
    info: FrontInfo,
    typed: Option<String>,
    front_error: Option<String>,
) -> FrontPage {
    let mut l = front_layout(v);
    let (state, pairing_front, command, seconds_left, reason) = match info.pairing {
        FrontPairing::Idle => ("idle", None, String::new(), 0, String::new()),
        FrontPairing::Waiting {
            front,
            command,
            seconds_left,
        } => ("waiting", Some(front), command, seconds_left, String::new()),
        FrontPairing::Failed { front, reason } => ("failed", Some(front), String::new(), 0, reason),
        FrontPairing::Paired { front } => ("paired", Some(front), String::new(), 0, String::new()),
    };
    if state == "waiting" && info.unavailable.is_none() {
        l.refresh = Some(format!("{WAIT_REFRESH};url=/admin/setup/front"));
    }
    let show_records = info.unavailable.is_none() && info.current.is_some() && state != "waiting";
    let (records, checks) = if show_records && !v.overview.ip_only {
        let records: Vec<RecordView> = app
            .backend
            .dns_records()
            .into_iter()
            .map(RecordView::from)
            .collect();
        let checks = if records.is_empty() {
            Vec::new()
        } else {
            bounded_checks("dns", app.backend.dns_checks()).await
        };
        (records, checks)
    } else {
        (Vec::new(), Vec::new())
    };
    let front = typed
        .or(pairing_front)
        .or_else(|| info.current.clone())
        .unwrap_or_default();
    FrontPage {
        l,
        domain: v.overview.domain.clone().unwrap_or_default(),
        unavailable: info.unavailable,
        state,
        current: info.current,
        address: info.address,
        connected: info.connected,
        front,
        front_error,
        command,
        minutes_left: seconds_left.div_ceil(60),
        reason,
        records,
        checks,
    }
}

/// `GET /admin/setup/front`.
pub async fn front_page<B: Backend>(State(app): State<App<B>>, mut v: Visitor) -> Response {
    if let Some(r) = v.need_session() {
        return r;
    }
    let info = app.backend.front();
    let page = front_view(&app, &mut v, info, None, None).await;
    v.page(StatusCode::OK, &page)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PairForm {
    pub csrf: String,
    pub front: String,
}

/// `POST /admin/setup/front` (`front`): pair with that front server, with a new code.
pub async fn pair_post<B: Backend>(
    State(app): State<App<B>>,
    mut v: Visitor,
    Form(form): Form<PairForm>,
) -> Response {
    if let Some(r) = v.need_csrf(&form.csrf) {
        return r;
    }
    if let Some(r) = v.need_session() {
        return r;
    }
    let typed = form.front.trim().to_string();
    let refuse = |text: &str| Some(text.to_string());
    let error = if typed.is_empty() {
        refuse(
            "Type the front server's public address: its IP address (like 203.0.113.7) or \
             its name (like front.example.org).",
        )
    } else if typed.len() > MAX_ADDRESS {
        refuse("That is far too long for a server's address.")
    } else {
        match app.backend.front_pair(&typed).await {
            Ok(()) => return v.redirect("/admin/setup/front"),
            Err(e) => Some(e.message),
        }
    };
    let info = app.backend.front();
    let shown: String = typed.chars().take(MAX_ADDRESS).collect();
    let page = front_view(&app, &mut v, info, Some(shown), error).await;
    v.page(StatusCode::UNPROCESSABLE_ENTITY, &page)
}

/// `POST /admin/setup/front/cancel`: stop waiting for the pairing.
pub async fn cancel_post<B: Backend>(
    State(app): State<App<B>>,
    v: Visitor,
    Form(form): Form<crate::access::CsrfForm>,
) -> Response {
    if let Some(r) = v.need_csrf(&form.csrf) {
        return r;
    }
    if let Some(r) = v.need_session() {
        return r;
    }
    app.backend.front_cancel();
    v.redirect("/admin/setup/front")
}

#[derive(Template)]
#[template(path = "front_leave.html")]
pub struct LeavePage {
    pub l: Layout,
    pub current: String,
    pub domain: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LeaveForm {
    pub csrf: String,
    pub confirm: String,
}

/// `POST /admin/setup/front/leave`: the confirmation page; with `confirm=yes` (sent from
/// that page) the relay moves off the front server.
pub async fn leave_post<B: Backend>(
    State(app): State<App<B>>,
    mut v: Visitor,
    Form(form): Form<LeaveForm>,
) -> Response {
    if let Some(r) = v.need_csrf(&form.csrf) {
        return r;
    }
    if let Some(r) = v.need_session() {
        return r;
    }
    let back = Some(("/admin/setup/front", "Back to the front server page"));
    let Some(current) = app.backend.front().current else {
        return message(
            StatusCode::CONFLICT,
            "No front server",
            "This relay does not use a front server.",
            back,
        );
    };
    if form.confirm != "yes" {
        let page = LeavePage {
            l: front_layout(&mut v),
            current,
            domain: v.overview.domain.clone().unwrap_or_default(),
        };
        return v.page(StatusCode::OK, &page);
    }
    match app.backend.front_leave().await {
        Ok(()) => message(
            StatusCode::OK,
            "Moved off the front server",
            &format!(
                "The relay no longer uses the front server {current}. Point the domain's A \
                 record at the public address of your own internet connection again (the DNS \
                 step shows it) and forward the ports on your router (the router step). The \
                 front server can be switched off."
            ),
            Some(("/admin/setup/dns", "Go to the DNS records")),
        ),
        Err(reason) => message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Not moved off",
            &format!("Nothing was changed: {reason}"),
            back,
        ),
    }
}
