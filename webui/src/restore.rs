//! Backups from the pages (issue 17): "Restore from a backup" in the wizard, offered after
//! the claim while the box is in setup mode (upload the file, see what it is, give its
//! passphrase: the relay comes back as it was and the daemon switches to it), and
//! "Download a backup now" on the status page. The upload is streamed to the file the
//! backend names with its size cap, as update bundles are ([`crate::update`]); the
//! download is streamed from the file the backend made, which is gone once sent. Every
//! page needs a session and every form the CSRF token.

use askama::Template;
use axum::Form;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use crate::access::CsrfForm;
use crate::router::{App, Visitor, message};
use crate::update::{self, UploadError};
use crate::view::{self, Layout};
use crate::{Backend, BackupInfo, Phase};

/// Where the wizard's restore pages live.
const PAGE: &str = "/admin/setup/restore";
/// Where the download's refusals link back to.
const STATUS: Option<(&str, &str)> = Some(("/admin/status", "Back to the status page"));
/// Longest passphrase looked at.
const MAX_PASSPHRASE: usize = 1024;
/// Bytes per piece of a download.
const CHUNK: usize = 64 * 1024;

/// The backup's header as the page shows it.
pub struct BackupView {
    pub domain: String,
    pub date: String,
    pub messages: bool,
    pub version: String,
}

impl From<BackupInfo> for BackupView {
    fn from(b: BackupInfo) -> Self {
        BackupView {
            domain: if b.domain.is_empty() {
                "(none: made before a name was chosen)".into()
            } else {
                b.domain
            },
            date: view::date_time(b.created),
            messages: b.messages,
            version: b.version,
        }
    }
}

#[derive(Template)]
#[template(path = "restore.html")]
pub struct RestorePage {
    pub l: Layout,
    /// The uploaded backup waiting for its passphrase (else the upload form is shown).
    pub pending: Option<BackupView>,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "restored.html")]
pub struct RestoredPage {
    pub l: Layout,
    pub domain: String,
}

/// Only after the claim, with a session, and only in setup mode (before a name is
/// chosen): the response for a visitor who may not restore now.
fn setup_only(v: &Visitor) -> Option<Response> {
    if let Some(r) = v.need_session() {
        return Some(r);
    }
    if v.overview.phase != Phase::NeedDomain {
        return Some(message(
            StatusCode::CONFLICT,
            "Restore not available",
            "This relay is already set up. A backup is restored from the wizard's first \
             page before a name is chosen, or with `relaybox restore` on a stopped relay.",
            Some(("/admin/", "Go to the start")),
        ));
    }
    None
}

fn page<B: Backend>(app: &App<B>, v: &mut Visitor, error: Option<String>) -> RestorePage {
    let mut l = v.layout("Restore from a backup");
    l.step = 1;
    RestorePage {
        l,
        pending: app.backend.restore_pending().map(BackupView::from),
        error,
    }
}

/// `GET /admin/setup/restore`: the upload form, or the uploaded backup and the
/// passphrase form.
pub async fn restore_page<B: Backend>(State(app): State<App<B>>, mut v: Visitor) -> Response {
    if let Some(r) = setup_only(&v) {
        return r;
    }
    let p = page(&app, &mut v, None);
    v.page(StatusCode::OK, &p)
}

/// `POST /admin/setup/restore/upload` (multipart, fields `csrf` then `backup`): save
/// the file and let the daemon read its header. No body limit on the route; the cap of
/// [`Backend::restore_upload_target`] is enforced while streaming.
pub async fn upload<B: Backend>(
    State(app): State<App<B>>,
    mut v: Visitor,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Response {
    // Checked before reading the body: nothing of a stranger's upload is stored.
    if let Some(r) = setup_only(&v) {
        return r;
    }
    let refused = |app: &App<B>, v: &mut Visitor, code: StatusCode, text: String| {
        let p = page(app, v, Some(text));
        v.page(code, &p)
    };
    let Ok(mut form) = form else {
        let text = upload_error(UploadError::Broken);
        return refused(&app, &mut v, StatusCode::BAD_REQUEST, text);
    };
    // The token comes first, so a forged form is refused before a byte of it is saved.
    let token = update::csrf_field(&mut form).await.unwrap_or_default();
    if let Some(r) = v.need_csrf(&token) {
        return r;
    }
    let (path, cap) = match app.backend.restore_upload_target() {
        Ok(t) => t,
        Err(reason) => return refused(&app, &mut v, StatusCode::UNPROCESSABLE_ENTITY, reason),
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > cap.saturating_add(update::FORM_OVERHEAD)) {
        let text = upload_error(UploadError::TooLarge(cap));
        return refused(&app, &mut v, StatusCode::PAYLOAD_TOO_LARGE, text);
    }
    let file = match update::save_field(&mut form, "backup", &path, cap).await {
        Ok(f) => f,
        Err(e) => {
            let code = match e {
                UploadError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                UploadError::Disk(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            return refused(&app, &mut v, code, upload_error(e));
        }
    };
    match app.backend.restore_uploaded(file.keep()) {
        Ok(_) => v.redirect(PAGE),
        Err(reason) => {
            update::remove(&path);
            refused(&app, &mut v, StatusCode::UNPROCESSABLE_ENTITY, reason)
        }
    }
}

/// An upload that was not accepted, in plain words.
fn upload_error(e: UploadError) -> String {
    let what = match e {
        UploadError::Broken | UploadError::Fields => {
            "The upload broke off or was not a proper file form. Try again.".to_string()
        }
        UploadError::Empty => "No backup file was chosen (or it is empty).".to_string(),
        UploadError::TooLarge(cap) => format!(
            "The file is larger than this box can take now ({}; it needs as much free \
             space again to restore it).",
            view::bytes(cap)
        ),
        UploadError::Stalled => "The upload stopped sending data. Try again.".to_string(),
        UploadError::Disk(e) => format!("The file could not be saved on the box ({e})."),
    };
    format!("{what} Nothing was changed.")
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RestoreForm {
    pub csrf: String,
    pub passphrase: String,
}

/// `POST /admin/setup/restore`: restore the uploaded backup with the passphrase. On
/// success the session ends (the admin password is the backup's now) and the daemon
/// switches to the restored relay; on failure the page says why, nothing changed.
pub async fn restore_post<B: Backend>(
    State(app): State<App<B>>,
    mut v: Visitor,
    Form(form): Form<RestoreForm>,
) -> Response {
    if let Some(r) = v.need_csrf(&form.csrf) {
        return r;
    }
    if let Some(r) = setup_only(&v) {
        return r;
    }
    let refused = |app: &App<B>, v: &mut Visitor, text: &str| {
        let p = page(app, v, Some(text.to_string()));
        v.page(StatusCode::UNPROCESSABLE_ENTITY, &p)
    };
    if app.backend.restore_pending().is_none() {
        return refused(&app, &mut v, "Upload the backup file first.");
    }
    if form.passphrase.is_empty() {
        return refused(&app, &mut v, "Type the backup's passphrase.");
    }
    if form.passphrase.len() > MAX_PASSPHRASE {
        return refused(&app, &mut v, "That passphrase is far too long.");
    }
    // Carried out to the end even when the browser goes away meanwhile: a restore that
    // swapped the files in must also switch the daemon to them.
    let backend = app.backend.clone();
    let passphrase = form.passphrase;
    let done = tokio::spawn(async move { backend.restore_backup(passphrase).await }).await;
    let done = done.unwrap_or_else(|_| Err("The restore stopped unexpectedly.".to_string()));
    match done {
        Ok(domain) => {
            // The session was signed with the replaced admin state: it ends here.
            v.clear(crate::session::SESSION_COOKIE);
            let mut l = v.layout("Restored");
            l.logged_in = false;
            let p = RestoredPage { l, domain };
            v.page(StatusCode::OK, &p)
        }
        Err(reason) => refused(&app, &mut v, &reason),
    }
}

/// `POST /admin/setup/restore/cancel`: forget the uploaded file, choose another.
pub async fn cancel<B: Backend>(
    State(app): State<App<B>>,
    v: Visitor,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(r) = v.need_csrf(&form.csrf) {
        return r;
    }
    if let Some(r) = setup_only(&v) {
        return r;
    }
    app.backend.restore_cancel();
    v.redirect(PAGE)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DownloadForm {
    pub csrf: String,
    pub passphrase: String,
    pub confirm: String,
    /// A checkbox: present when ticked.
    pub messages: Option<String>,
}

/// `POST /admin/backup/download`: make a backup of the running relay and send it as an
/// attachment (`relaybox-<domain>-<date>.backup`); the file on the box is removed as soon
/// as it is open for sending.
pub async fn download<B: Backend>(
    State(app): State<App<B>>,
    v: Visitor,
    Form(form): Form<DownloadForm>,
) -> Response {
    if let Some(r) = v.need_csrf(&form.csrf) {
        return r;
    }
    if let Some(r) = v.need_session() {
        return r;
    }
    let refused = |text: &str| {
        message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "No backup made",
            text,
            STATUS,
        )
    };
    if form.passphrase.is_empty() {
        return refused("Choose a passphrase for the backup: it is encrypted with it.");
    }
    if form.passphrase.len() > MAX_PASSPHRASE {
        return refused("That passphrase is far too long.");
    }
    if form.passphrase != form.confirm {
        return refused(
            "The two passphrases differ. Type the same passphrase twice: a backup with a \
             mistyped passphrase could never be opened.",
        );
    }
    let made = app
        .backend
        .backup_now(form.passphrase, form.messages.is_some())
        .await;
    let file = match made {
        Ok(f) => f,
        Err(reason) => return refused(&format!("The backup failed: {reason}")),
    };
    let opened = tokio::fs::File::open(&file.path).await;
    // Open (or not), the file on the box goes now: the open handle still reads it.
    update::remove(&file.path);
    let (opened, length) = match opened {
        Ok(f) => match f.metadata().await {
            Ok(m) => (f, m.len()),
            Err(e) => return refused(&format!("The backup could not be read ({e}).")),
        },
        Err(e) => return refused(&format!("The backup could not be read ({e}).")),
    };
    let name = safe_name(&file.name);
    let stream = futures_util::stream::unfold(opened, |mut f| async move {
        let mut buf = vec![0u8; CHUNK];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CONTENT_LENGTH, length.to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Only safe characters in the header's file name.
fn safe_name(name: &str) -> String {
    let name: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(200)
        .collect();
    if name.trim_matches('.').is_empty() {
        "relaybox.backup".to_string()
    } else {
        name
    }
}
