//! The automatic backups' page (issue 17 item 2): the last result (time, size, file, or
//! the failure in plain words) and the next one; the passphrase (set once, shown only as
//! set or not); where (a directory or a USB drive), how often, how many to keep; "Back up
//! now". The status page shows a one-line summary ([`summary`]) linking here. Needs a
//! session; the forms need the CSRF token.

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use crate::router::{App, Visitor, message};
use crate::view::{self, Layout};
use crate::{Backend, BackupSettings, BackupsInfo, InputError};

#[derive(Template)]
#[template(path = "backups.html")]
pub struct BackupsPage {
    pub l: Layout,
    pub b: BackupsInfo,
    /// The last result as a sentence, and `ok`/`error`/`unknown`.
    pub last: String,
    pub last_status: &'static str,
    pub next: String,
    /// The settings form's values (as sent, after a refusal).
    pub form: BackupSettings,
    pub passphrase_error: Option<String>,
    pub settings_error: Option<String>,
}

/// The passphrase form.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PassphraseForm {
    pub csrf: String,
    pub passphrase: String,
    pub confirm: String,
}

/// The settings form (`messages` is a checkbox: present when ticked).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SettingsForm {
    pub csrf: String,
    pub target: String,
    pub dir: String,
    pub every: String,
    pub keep: String,
    pub messages: Option<String>,
}

/// The CSRF-only form of "Back up now".
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct NowForm {
    pub csrf: String,
}

/// The last result as a sentence and its status.
fn last_line(b: &BackupsInfo) -> (String, &'static str) {
    match &b.last {
        None => ("No automatic backup yet.".into(), "unknown"),
        Some(r) if r.error.is_empty() => (
            format!(
                "{}: {} written to {}",
                view::date_time(r.at),
                view::bytes(r.bytes),
                r.file
            ),
            "ok",
        ),
        Some(r) => (
            format!("{}: failed: {}", view::date_time(r.at), r.error),
            "error",
        ),
    }
}

fn next_line(b: &BackupsInfo) -> String {
    if b.running {
        return "A backup is being written now.".into();
    }
    match (&b.off_reason, b.next) {
        (Some(reason), _) => format!("Off: {reason}."),
        (None, Some(t)) => format!("Next: {}.", view::date_time(t)),
        (None, None) => "Next: once the relay runs.".into(),
    }
}

/// The status page's line about backups and its status (`ok`, `warning` when off,
/// `error` when the last one failed).
pub fn summary(b: &BackupsInfo) -> (String, &'static str) {
    if !b.available {
        let why = b
            .off_reason
            .clone()
            .unwrap_or_else(|| "they start once the relay runs".into());
        return (
            format!("Automatic backups are not available: {why}."),
            "unknown",
        );
    }
    let (last, status) = last_line(b);
    let status = match (status, &b.off_reason) {
        ("error", _) => "error",
        (_, Some(_)) => "warning",
        (s, None) => s,
    };
    (format!("{last} {}", next_line(b)), status)
}

fn settings_of(b: &BackupsInfo) -> BackupSettings {
    BackupSettings {
        target: b.target.clone(),
        dir: b.dir.clone(),
        every: b.every.clone(),
        keep: b.keep.to_string(),
        messages: b.messages,
    }
}

fn page<B: Backend>(
    app: &App<B>,
    v: &mut Visitor,
    form: Option<BackupSettings>,
    passphrase_error: Option<String>,
    settings_error: Option<String>,
) -> BackupsPage {
    let b = app.backend.backups();
    let (last, last_status) = last_line(&b);
    BackupsPage {
        l: v.layout("Backups"),
        last,
        last_status,
        next: next_line(&b),
        form: form.unwrap_or_else(|| settings_of(&b)),
        b,
        passphrase_error,
        settings_error,
    }
}

/// `GET /admin/backups`.
pub async fn backups_page<B: Backend>(State(app): State<App<B>>, mut v: Visitor) -> Response {
    if let Some(r) = v.need_session() {
        return r;
    }
    let p = page(&app, &mut v, None, None, None);
    v.page(StatusCode::OK, &p)
}

/// `POST /admin/backups/passphrase`.
pub async fn passphrase<B: Backend>(
    State(app): State<App<B>>,
    mut v: Visitor,
    Form(form): Form<PassphraseForm>,
) -> Response {
    if let Some(r) = v.need_csrf(&form.csrf) {
        return r;
    }
    if let Some(r) = v.need_session() {
        return r;
    }
    let refused = if form.passphrase != form.confirm {
        Some("The two passphrases differ; nothing was saved.".to_string())
    } else {
        app.backend
            .set_backup_passphrase(form.passphrase)
            .await
            .err()
            .map(|e: InputError| e.message)
    };
    match refused {
        None => v.redirect("/admin/backups"),
        Some(e) => {
            let p = page(&app, &mut v, None, Some(e), None);
            v.page(StatusCode::UNPROCESSABLE_ENTITY, &p)
        }
    }
}

/// `POST /admin/backups/settings`.
pub async fn settings<B: Backend>(
    State(app): State<App<B>>,
    mut v: Visitor,
    Form(form): Form<SettingsForm>,
) -> Response {
    if let Some(r) = v.need_csrf(&form.csrf) {
        return r;
    }
    if let Some(r) = v.need_session() {
        return r;
    }
    let settings = BackupSettings {
        target: form.target,
        dir: form.dir,
        every: form.every,
        keep: form.keep,
        messages: form.messages.is_some(),
    };
    match app.backend.set_backup_settings(settings.clone()).await {
        Ok(()) => v.redirect("/admin/backups"),
        Err(e) => {
            let p = page(&app, &mut v, Some(settings), None, Some(e.message));
            v.page(StatusCode::UNPROCESSABLE_ENTITY, &p)
        }
    }
}

/// `POST /admin/backups/now`.
pub async fn now<B: Backend>(
    State(app): State<App<B>>,
    v: Visitor,
    Form(form): Form<NowForm>,
) -> Response {
    if let Some(r) = v.need_csrf(&form.csrf) {
        return r;
    }
    if let Some(r) = v.need_session() {
        return r;
    }
    match app.backend.auto_backup_now() {
        Ok(()) => v.redirect("/admin/backups"),
        Err(reason) => message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "No backup was started",
            &reason,
            Some(("/admin/backups", "Back to backups")),
        ),
    }
}
