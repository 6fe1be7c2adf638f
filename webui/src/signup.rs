//! The sign-up page (issue 18): the mode (open, closed, invite only, no automatic
//! sign-ups), the invites with their uses, a form to make one and a button to revoke
//! each, and each invite's QR code and link. The daemon does the work
//! ([`Backend::signup`] and the methods after it); every form needs a session and the
//! CSRF token, and every refusal is shown with its reason.

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde::Deserialize;

use crate::router::{App, Visitor, message};
use crate::view::{self, Layout};
use crate::wizard::safe_svg;
use crate::{Backend, InviteState, SignUpInfo, SignUpMode};

/// Where the pages link back to.
const PAGE: &str = "/admin/signup";
/// The invite pages: this, then the invite's id.
const INVITE_PAGE: &str = "/admin/signup/invite/";
/// Longest form field read (a note is far shorter; the daemon checks its own limits).
const MAX_FIELD: usize = 400;

/// One mode as the selector offers it.
pub struct ModeView {
    pub value: &'static str,
    pub label: &'static str,
    pub help: &'static str,
    pub current: bool,
}

/// One invite row.
pub struct InviteView {
    pub id: String,
    pub label: String,
    pub created: String,
    pub expires: String,
    pub uses: u32,
    pub max_uses: u32,
    /// `usable`, `expired`, `used-up`, `revoked`.
    pub state: &'static str,
    pub state_label: &'static str,
    pub usable: bool,
}

#[derive(Template)]
#[template(path = "signup.html")]
pub struct SignUpPage {
    pub l: Layout,
    pub modes: Vec<ModeView>,
    pub current: &'static str,
    pub persisted: bool,
    pub per_person: bool,
    pub invites: Vec<InviteView>,
    /// A refused form, with the reason.
    pub error: Option<String>,
    /// The create form's values (kept after a refusal).
    pub days: String,
    pub uses: String,
    pub label: String,
}

#[derive(Template)]
#[template(path = "signup_invite.html")]
pub struct InvitePage {
    pub l: Layout,
    pub invite: InviteView,
    pub url: String,
    pub qr_svg: Option<String>,
    pub per_person: bool,
}

/// What the pages say about a mode: its name and what it does.
pub(crate) fn mode_text(mode: SignUpMode) -> (&'static str, &'static str) {
    match mode {
        SignUpMode::Open => (
            "Open",
            "Anyone who scans the relay's code (or knows its address) can create an account.",
        ),
        SignUpMode::Closed => ("Closed", "No new accounts. Existing accounts keep working."),
        SignUpMode::Invite => (
            "Invite only",
            "New accounts only with an invite you make below: each has an expiry and a \
             number of uses.",
        ),
        SignUpMode::NoAutomatic => (
            "No automatic sign-ups",
            "Refuse the accounts Delta Chat apps make on their own when they pick relays \
             from a built-in list (they use passwords of exactly 23 letters and digits). \
             People who scan this relay's code still get in; someone who types such a \
             password by hand is refused too.",
        ),
    }
}

fn state_text(state: InviteState) -> (&'static str, &'static str) {
    match state {
        InviteState::Usable => ("usable", "usable"),
        InviteState::Expired => ("expired", "expired"),
        InviteState::UsedUp => ("used-up", "used up"),
        InviteState::Revoked => ("revoked", "revoked"),
    }
}

fn invite_view(i: &crate::SignUpInvite) -> InviteView {
    let (state, state_label) = state_text(i.state);
    InviteView {
        id: i.id.clone(),
        label: i.label.clone(),
        created: view::date_time(i.created),
        expires: view::date_time(i.expires),
        uses: i.uses,
        max_uses: i.max_uses,
        state,
        state_label,
        usable: i.state == InviteState::Usable,
    }
}

fn page(v: &mut Visitor, info: &SignUpInfo) -> SignUpPage {
    SignUpPage {
        l: v.layout("Sign-up"),
        modes: SignUpMode::ALL
            .iter()
            .map(|m| {
                let (label, help) = mode_text(*m);
                ModeView {
                    value: m.as_str(),
                    label,
                    help,
                    current: *m == info.mode,
                }
            })
            .collect(),
        current: mode_text(info.mode).0,
        persisted: info.persisted,
        per_person: info.per_person,
        invites: info.invites.iter().rev().map(invite_view).collect(),
        error: None,
        days: "7".into(),
        uses: "1".into(),
        label: String::new(),
    }
}

/// The relay is not running yet (setup mode): nothing to show.
fn not_running() -> Response {
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        "Sign-up not available yet",
        "The relay is not running yet. Finish the setup first.",
        Some(("/admin/", "Go to the start")),
    )
}

/// `GET /admin/signup`.
pub async fn signup_page<B: Backend>(State(app): State<App<B>>, mut v: Visitor) -> Response {
    if let Some(r) = v.need_session() {
        return r;
    }
    let Some(info) = app.backend.signup() else {
        return not_running();
    };
    let p = page(&mut v, &info);
    v.page(StatusCode::OK, &p)
}

/// The page again with a refusal (422), keeping what was typed.
fn refused<B: Backend>(
    app: &App<B>,
    mut v: Visitor,
    error: String,
    form: Option<&CreateForm>,
) -> Response {
    let Some(info) = app.backend.signup() else {
        return not_running();
    };
    let mut p = page(&mut v, &info);
    p.error = Some(error);
    if let Some(f) = form {
        p.days = f.days.clone();
        p.uses = f.uses.clone();
        p.label = f.label.clone();
    }
    v.page(StatusCode::UNPROCESSABLE_ENTITY, &p)
}

#[derive(Deserialize)]
pub struct ModeForm {
    pub csrf: String,
    #[serde(default)]
    pub mode: String,
}

/// `POST /admin/signup/mode`.
pub async fn mode_post<B: Backend>(
    State(app): State<App<B>>,
    v: Visitor,
    Form(form): Form<ModeForm>,
) -> Response {
    if let Some(r) = v.need_csrf(&form.csrf) {
        return r;
    }
    if let Some(r) = v.need_session() {
        return r;
    }
    let Some(mode) = SignUpMode::parse(&form.mode) else {
        return refused(&app, v, "Choose one of the modes.".into(), None);
    };
    match app.backend.set_signup_mode(mode) {
        Ok(()) => v.redirect(PAGE),
        Err(reason) => refused(&app, v, format!("The mode was not changed: {reason}"), None),
    }
}

#[derive(Deserialize)]
pub struct CreateForm {
    pub csrf: String,
    #[serde(default)]
    pub days: String,
    #[serde(default)]
    pub uses: String,
    #[serde(default)]
    pub label: String,
}

/// `POST /admin/signup/invites`: make an invite and show it.
pub async fn create_post<B: Backend>(
    State(app): State<App<B>>,
    v: Visitor,
    Form(mut form): Form<CreateForm>,
) -> Response {
    if let Some(r) = v.need_csrf(&form.csrf) {
        return r;
    }
    if let Some(r) = v.need_session() {
        return r;
    }
    for field in [&mut form.days, &mut form.uses, &mut form.label] {
        if field.len() > MAX_FIELD {
            field.clear();
        }
    }
    let days = form.days.trim().parse::<u64>();
    let uses = form.uses.trim().parse::<u32>();
    let (Ok(days), Ok(uses)) = (days, uses) else {
        return refused(
            &app,
            v,
            "Type whole numbers: for how many days the invite is valid, and how many \
             accounts it may create."
                .into(),
            Some(&form),
        );
    };
    match app.backend.create_invite(days, uses, &form.label).await {
        Ok(id) => v.redirect(&format!("{INVITE_PAGE}{id}")),
        Err(reason) => refused(
            &app,
            v,
            format!("No invite was made: {reason}"),
            Some(&form),
        ),
    }
}

#[derive(Deserialize)]
pub struct RevokeForm {
    pub csrf: String,
    #[serde(default)]
    pub id: String,
}

/// `POST /admin/signup/revoke`.
pub async fn revoke_post<B: Backend>(
    State(app): State<App<B>>,
    v: Visitor,
    Form(form): Form<RevokeForm>,
) -> Response {
    if let Some(r) = v.need_csrf(&form.csrf) {
        return r;
    }
    if let Some(r) = v.need_session() {
        return r;
    }
    match app.backend.revoke_invite(&form.id).await {
        Ok(()) => v.redirect(PAGE),
        Err(reason) => refused(
            &app,
            v,
            format!("The invite was not revoked: {reason}"),
            None,
        ),
    }
}

/// `GET /admin/signup/invite/{id}`: the invite's QR code and link.
pub async fn invite_page<B: Backend>(
    State(app): State<App<B>>,
    mut v: Visitor,
    uri: Uri,
) -> Response {
    // The id from the path itself: the daemon mounts these pages under a route of its
    // own, whose parameters a `Path` extractor would see too.
    let id = uri
        .path()
        .strip_prefix(INVITE_PAGE)
        .unwrap_or_default()
        .to_string();
    if let Some(r) = v.need_session() {
        return r;
    }
    let Some(info) = app.backend.signup() else {
        return not_running();
    };
    let found = info.invites.iter().find(|i| i.id == id);
    let (Some(invite), Some(link)) = (found, found.and_then(|_| app.backend.invite_link(&id)))
    else {
        return message(
            StatusCode::NOT_FOUND,
            "No such invite",
            "There is no invite with this id.",
            Some((PAGE, "Back to sign-up")),
        );
    };
    let p = InvitePage {
        l: v.layout("Invite"),
        invite: invite_view(invite),
        qr_svg: Some(link.qr_svg).filter(|s| safe_svg(s)),
        url: link.url,
        per_person: info.per_person,
    };
    v.page(StatusCode::OK, &p)
}
