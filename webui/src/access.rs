//! Getting in: the start redirect, claiming the box (button press or setup code, issue
//! #6 item 3), setting the admin password, login and logout. Code and password attempts
//! go through the slowdown of [`crate::limiter`].

use askama::Template;
use axum::Form;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use crate::router::{App, Visitor, message};
use crate::session::{self, Kind};
use crate::view::Layout;
use crate::{Backend, ClaimWindow, Phase};

/// Longest password or code looked at (longer input is wrong without asking the daemon).
const MAX_SECRET: usize = 1024;

/// `GET /admin`, `/admin/`: by phase and session.
pub async fn index(v: Visitor) -> Response {
    let to = match v.overview.phase {
        Phase::Unclaimed => "/admin/claim",
        _ if v.session.is_none() => "/admin/login",
        Phase::NeedDomain => "/admin/setup/domain",
        Phase::Configured => "/admin/status",
    };
    v.redirect(to)
}

/// What the button part of the claim page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ButtonState {
    /// No window: offer to open one.
    Ready,
    /// This visitor's window is open.
    Waiting { seconds_left: u64 },
    /// Someone else's window is open (or was just used).
    Busy { seconds_left: u64 },
    /// This visitor's window closed without a press.
    Expired,
}

#[derive(Template)]
#[template(path = "claim.html")]
pub struct ClaimPage {
    pub l: Layout,
    pub has_button: bool,
    pub button: ButtonState,
    pub code_location: String,
    pub code_error: Option<String>,
}

fn claim_view(v: &mut Visitor, button: ButtonState, code_error: Option<String>) -> ClaimPage {
    let mut l = v.layout("Claim this Relaybox");
    if matches!(button, ButtonState::Waiting { .. }) {
        l.refresh = Some("2".into());
    }
    ClaimPage {
        l,
        has_button: v.overview.has_button,
        button,
        code_location: v.overview.setup_code_location.clone(),
        code_error,
    }
}

/// Issue the claim proof and send the visitor on to the password step.
fn claimed(mut v: Visitor) -> Response {
    let value = session::sign(
        &v.key,
        Kind::Claimed,
        &session::new_id(),
        session::now_unix(),
    );
    v.set(session::CLAIMED_COOKIE, &value, session::CLAIMED_SECONDS);
    if v.ticket.is_some() {
        v.clear(session::CLAIM_TICKET_COOKIE);
    }
    v.redirect("/admin/password")
}

/// `GET /admin/claim`.
pub async fn claim_page<B: Backend>(State(app): State<App<B>>, mut v: Visitor) -> Response {
    if v.overview.phase != Phase::Unclaimed {
        return v.redirect("/admin/");
    }
    if v.claimed {
        return v.redirect("/admin/password");
    }
    let mut button = ButtonState::Ready;
    if v.overview.has_button {
        let mine = |t: &str| v.ticket.as_deref().is_some_and(|m| session::same(m, t));
        button = match app.backend.claim_window() {
            ClaimWindow::Pressed { ticket } if mine(&ticket) => return claimed(v),
            ClaimWindow::Open {
                ticket,
                seconds_left,
            } if mine(&ticket) => ButtonState::Waiting { seconds_left },
            ClaimWindow::Open { seconds_left, .. } => ButtonState::Busy { seconds_left },
            ClaimWindow::Pressed { .. } => ButtonState::Busy { seconds_left: 0 },
            ClaimWindow::Closed if v.ticket.is_some() => ButtonState::Expired,
            ClaimWindow::Closed => ButtonState::Ready,
        };
        if button == ButtonState::Expired {
            v.clear(session::CLAIM_TICKET_COOKIE);
        }
    }
    let page = claim_view(&mut v, button, None);
    v.page(StatusCode::OK, &page)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CsrfForm {
    pub csrf: String,
}

/// `POST /admin/claim/button`: open a window and remember its ticket.
pub async fn claim_button<B: Backend>(
    State(app): State<App<B>>,
    mut v: Visitor,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(r) = v.need_csrf(&form.csrf) {
        return r;
    }
    if v.overview.phase != Phase::Unclaimed || !v.overview.has_button {
        return v.redirect("/admin/");
    }
    if let ClaimWindow::Open {
        ticket,
        seconds_left,
    } = app.backend.open_claim_window()
        && !ticket.is_empty()
    {
        let value = session::encode_ticket(&ticket);
        v.set(
            session::CLAIM_TICKET_COOKIE,
            &value,
            seconds_left.saturating_add(120).min(3600),
        );
    }
    v.redirect("/admin/claim")
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CodeForm {
    pub csrf: String,
    pub code: String,
}

/// `POST /admin/claim/code`: the setup code, slowed down like the login.
pub async fn claim_code<B: Backend>(
    State(app): State<App<B>>,
    mut v: Visitor,
    Form(form): Form<CodeForm>,
) -> Response {
    if let Some(r) = v.need_csrf(&form.csrf) {
        return r;
    }
    if v.overview.phase != Phase::Unclaimed {
        return v.redirect("/admin/");
    }
    let attempt = match app.limiter.wait_turn(v.client.addr.ip()).await {
        Ok(t) => t,
        Err(wait) => return too_many(wait),
    };
    let code = form.code.trim();
    if !code.is_empty() && code.len() <= MAX_SECRET && app.backend.check_setup_code(code) {
        attempt.succeeded();
        return claimed(v);
    }
    attempt.failed();
    let msg = if code.is_empty() {
        "Type the setup code first."
    } else {
        "That is not the setup code. Check it and try again (after a few wrong tries, \
         each answer takes a little longer)."
    };
    let page = claim_view(&mut v, ButtonState::Ready, Some(msg.into()));
    v.page(StatusCode::UNAUTHORIZED, &page)
}

/// 429 for an attempt refused by the limiter (nothing was checked).
fn too_many(wait: std::time::Duration) -> Response {
    message(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many tries",
        &format!(
            "Too many tries at once from this device. Wait {} s, then go back and try again.",
            wait.as_secs().max(1)
        ),
        None,
    )
}

#[derive(Template)]
#[template(path = "password.html")]
pub struct PasswordPage {
    pub l: Layout,
    /// True when setting the first password (after the claim), false when changing it.
    pub first: bool,
    /// What to do when the password is forgotten ([`forgotten`]).
    pub forgotten: String,
    pub current_error: Option<String>,
    pub password_error: Option<String>,
    pub confirm_error: Option<String>,
}

/// Issue 16: how to get back in without the password, as it works here. With a button:
/// the factory reset. Without (a server): remove the file holding the admin password and
/// restart the daemon, which then makes a new setup code to claim the pages with;
/// accounts, messages and settings stay.
fn forgotten<B: Backend>(app: &App<B>, v: &Visitor) -> String {
    if v.overview.has_button {
        return "Holding the button on the box for 10 seconds resets it to its factory \
                state: all accounts, messages and settings are erased, and you set it up \
                again."
            .into();
    }
    let file = match app.backend.admin_password_file() {
        Some(path) => path.display().to_string(),
        None => "admin.json in the data directory (data_dir in chatmail.ini)".into(),
    };
    format!(
        "On the machine that runs relaybox, delete {file} and restart relaybox; then claim \
         these pages again with the new setup code from {}. Accounts, messages and \
         settings stay.",
        v.overview.setup_code_location
    )
}

/// Whether the visitor may set the password: with the claim proof while unclaimed,
/// with a session afterwards. `Some` is where to send them instead.
fn may_not_set_password(v: &Visitor) -> Option<Response> {
    match v.overview.phase {
        Phase::Unclaimed if v.claimed => None,
        Phase::Unclaimed => Some(v.redirect("/admin/claim")),
        _ => v.need_session(),
    }
}

/// The errors shown on the password page, one per field.
#[derive(Default)]
struct PasswordErrors {
    current: Option<String>,
    password: Option<String>,
    confirm: Option<String>,
}

fn password_view<B: Backend>(app: &App<B>, v: &mut Visitor, e: PasswordErrors) -> PasswordPage {
    let first = v.overview.phase == Phase::Unclaimed;
    let l = v.layout(if first {
        "Choose the admin password"
    } else {
        "Change the admin password"
    });
    PasswordPage {
        l,
        first,
        forgotten: forgotten(app, v),
        current_error: e.current,
        password_error: e.password,
        confirm_error: e.confirm,
    }
}

/// `GET /admin/password`.
pub async fn password_page<B: Backend>(State(app): State<App<B>>, mut v: Visitor) -> Response {
    if let Some(r) = may_not_set_password(&v) {
        return r;
    }
    let page = password_view(&app, &mut v, PasswordErrors::default());
    v.page(StatusCode::OK, &page)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PasswordForm {
    pub csrf: String,
    /// The password now (asked when changing it, not for the first one).
    pub current: String,
    pub password: String,
    pub confirm: String,
}

/// `POST /admin/password`: set it, then log the visitor in. Changing it needs the
/// current password (issue 16), checked and slowed down like a login; when it is wrong
/// nothing changes.
pub async fn password_post<B: Backend>(
    State(app): State<App<B>>,
    mut v: Visitor,
    Form(form): Form<PasswordForm>,
) -> Response {
    if let Some(r) = v.need_csrf(&form.csrf) {
        return r;
    }
    if let Some(r) = may_not_set_password(&v) {
        return r;
    }
    if v.overview.phase != Phase::Unclaimed {
        let attempt = match app.limiter.wait_turn(v.client.addr.ip()).await {
            Ok(t) => t,
            Err(wait) => return too_many(wait),
        };
        if form.current.is_empty()
            || form.current.len() > MAX_SECRET
            || !app.backend.check_admin_password(&form.current).await
        {
            attempt.failed();
            let message = if form.current.is_empty() {
                "Type the current password first. Nothing was changed."
            } else {
                "That is not the current password. Nothing was changed. (After a few wrong \
                 tries, each answer takes a little longer.)"
            };
            let errors = PasswordErrors {
                current: Some(message.into()),
                ..PasswordErrors::default()
            };
            let page = password_view(&app, &mut v, errors);
            return v.page(StatusCode::UNAUTHORIZED, &page);
        }
        attempt.succeeded();
    }
    if form.password != form.confirm {
        let errors = PasswordErrors {
            confirm: Some(
                "The two passwords are not the same. Type the same password twice.".into(),
            ),
            ..PasswordErrors::default()
        };
        let page = password_view(&app, &mut v, errors);
        return v.page(StatusCode::UNPROCESSABLE_ENTITY, &page);
    }
    if let Err(e) = app.backend.set_admin_password(&form.password).await {
        let errors = if e.field == "confirm" {
            PasswordErrors {
                confirm: Some(e.message),
                ..PasswordErrors::default()
            }
        } else {
            PasswordErrors {
                password: Some(e.message),
                ..PasswordErrors::default()
            }
        };
        let page = password_view(&app, &mut v, errors);
        return v.page(StatusCode::UNPROCESSABLE_ENTITY, &page);
    }
    // The key changed with the password: every older session ended; start a new one.
    let key = app.backend.session_key();
    v.start_session(key);
    v.clear(session::CLAIMED_COOKIE);
    v.clear(session::PRE_COOKIE);
    v.redirect("/admin/")
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub l: Layout,
    pub error: Option<String>,
    /// The visitor just logged out (issue 16: said so).
    pub logged_out: bool,
    /// What to do when the password is forgotten ([`forgotten`]).
    pub forgotten: String,
}

/// Where a logout sends the browser: the login page, which then confirms it.
pub const LOGGED_OUT: &str = "/admin/login?logged-out";

/// `GET /admin/login`.
pub async fn login_page<B: Backend>(
    State(app): State<App<B>>,
    RawQuery(query): RawQuery,
    mut v: Visitor,
) -> Response {
    if v.overview.phase == Phase::Unclaimed {
        return v.redirect("/admin/claim");
    }
    if v.session.is_some() {
        return v.redirect("/admin/");
    }
    let page = LoginPage {
        l: v.layout("Log in"),
        error: None,
        logged_out: query
            .as_deref()
            .is_some_and(|q| q.split('&').any(|p| p == "logged-out")),
        forgotten: forgotten(&app, &v),
    };
    v.page(StatusCode::OK, &page)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LoginForm {
    pub csrf: String,
    pub password: String,
}

/// `POST /admin/login`: slowed down after 3 wrong tries (see [`crate::limiter`]).
pub async fn login_post<B: Backend>(
    State(app): State<App<B>>,
    mut v: Visitor,
    Form(form): Form<LoginForm>,
) -> Response {
    if let Some(r) = v.need_csrf(&form.csrf) {
        return r;
    }
    if v.overview.phase == Phase::Unclaimed {
        return v.redirect("/admin/claim");
    }
    let attempt = match app.limiter.wait_turn(v.client.addr.ip()).await {
        Ok(t) => t,
        Err(wait) => return too_many(wait),
    };
    if !form.password.is_empty()
        && form.password.len() <= MAX_SECRET
        && app.backend.check_admin_password(&form.password).await
    {
        attempt.succeeded();
        let key = app.backend.session_key();
        v.start_session(key);
        v.clear(session::PRE_COOKIE);
        return v.redirect("/admin/");
    }
    attempt.failed();
    let page = LoginPage {
        l: v.layout("Log in"),
        error: Some(
            "Wrong password. After a few wrong tries, each answer takes a little longer.".into(),
        ),
        logged_out: false,
        forgotten: forgotten(&app, &v),
    };
    v.page(StatusCode::UNAUTHORIZED, &page)
}

/// `POST /admin/logout`: end the session here and in the browser; the login page then
/// says so.
pub async fn logout<B: Backend>(
    State(app): State<App<B>>,
    mut v: Visitor,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(r) = v.need_csrf(&form.csrf) {
        return r;
    }
    if let Some(id) = v.session.take() {
        app.revoke(id);
    }
    v.clear(session::SESSION_COOKIE);
    v.redirect(LOGGED_OUT)
}
