//! Updates by hand from the status page (issue #7): "update now" and the upload of an
//! update bundle. The upload is streamed to the file the backend names
//! ([`crate::Backend::upload_target`]) with its size cap enforced while streaming, never
//! held in memory (bundles are 100+ MB); the daemon verifies and installs it. Every
//! refusal is shown with its reason (OTA-6). Both need a session and the CSRF token.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Form;
use axum::extract::State;
use axum::extract::multipart::{Field, Multipart, MultipartRejection};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use tokio::io::AsyncWriteExt;

use crate::Backend;
use crate::access::CsrfForm;
use crate::router::{App, Visitor, message};
use crate::view;

/// Where every update page links back to.
const BACK: Option<(&str, &str)> = Some(("/admin/status", "Back to the status page"));
/// Longest CSRF field read from an upload form (a token is far shorter).
const MAX_CSRF: usize = 256;
/// Room in the request body for the multipart framing and the CSRF field, on top of the
/// bundle's cap, when judging a `Content-Length` before reading anything.
pub(crate) const FORM_OVERHEAD: u64 = 64 * 1024;
/// Longest wait for the next piece of an upload before giving up (a stalled browser
/// must not keep a half-written file open for ever).
pub const UPLOAD_IDLE: Duration = Duration::from_secs(60);

/// `POST /admin/update/now`: look for an update at once and install it (issue #7).
pub async fn update_now<B: Backend>(
    State(app): State<App<B>>,
    v: Visitor,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(r) = v.need_csrf(&form.csrf) {
        return r;
    }
    if let Some(r) = v.need_session() {
        return r;
    }
    match app.backend.update_now() {
        Ok(()) => v.redirect("/admin/status"),
        // OTA-6: say why nothing happens.
        Err(reason) => not_started(&reason),
    }
}

/// `POST /admin/update/upload` (multipart, fields `csrf` then `bundle`): save the bundle
/// and hand it to the daemon. The route has no body limit of its own; the cap from
/// [`Backend::upload_target`] is enforced here.
pub async fn upload<B: Backend>(
    State(app): State<App<B>>,
    v: Visitor,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Response {
    // Checked before reading the body: nothing of a stranger's upload is stored.
    if let Some(r) = v.need_session() {
        return r;
    }
    let Ok(mut form) = form else {
        return UploadError::Broken.response();
    };
    // The token comes first, so a forged form is refused before a byte of it is saved.
    let token = match csrf_field(&mut form).await {
        Ok(t) => t,
        Err(UploadError::Broken) => String::new(),
        Err(e) => return e.response(),
    };
    if let Some(r) = v.need_csrf(&token) {
        return r;
    }
    let (path, cap) = match app.backend.upload_target() {
        Ok(t) => t,
        Err(reason) => return not_started(&reason),
    };
    // Refuse at once what cannot fit, before writing anything.
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > cap.saturating_add(FORM_OVERHEAD)) {
        return UploadError::TooLarge(cap).response();
    }
    let file = match save_field(&mut form, "bundle", &path, cap).await {
        Ok(f) => f,
        Err(e) => return e.response(),
    };
    // From here the backend owns the file (it removes it when done).
    match app.backend.install_upload(file.keep()) {
        Ok(()) => v.redirect("/admin/status"),
        Err(reason) => {
            // On refusal the file is ours to remove; gone already is fine.
            remove(&path);
            not_started(&reason)
        }
    }
}

/// The page for an update the daemon refused to start, with its reason (OTA-6).
fn not_started(reason: &str) -> Response {
    message(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Update not started",
        &format!("The update did not start: {reason}"),
        BACK,
    )
}

/// Why an upload was not accepted.
#[derive(Debug)]
pub(crate) enum UploadError {
    /// Not a multipart form, malformed, or the connection broke off.
    Broken,
    /// The first field is not `csrf` or the second not the file, or more follow.
    Fields,
    /// The file field is empty (no file chosen).
    Empty,
    /// Over the cap (bytes).
    TooLarge(u64),
    /// No data for [`UPLOAD_IDLE`].
    Stalled,
    /// Writing the file failed (disk full, …).
    Disk(io::Error),
}

impl UploadError {
    fn response(self) -> Response {
        let (code, text) = match self {
            UploadError::Broken => (
                StatusCode::BAD_REQUEST,
                "The upload broke off or was not a proper file form. Nothing was \
                 installed. Try again."
                    .to_string(),
            ),
            UploadError::Fields => (
                StatusCode::BAD_REQUEST,
                "The upload form had unexpected fields. Nothing was installed. Reload the \
                 status page and use its upload form."
                    .to_string(),
            ),
            UploadError::Empty => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "No bundle file was chosen (or it is empty). Nothing was installed.".to_string(),
            ),
            UploadError::TooLarge(cap) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "The file is larger than the {} an update bundle may have. Nothing \
                     was installed. Check that you chose the right file.",
                    view::bytes(cap)
                ),
            ),
            UploadError::Stalled => (
                StatusCode::REQUEST_TIMEOUT,
                "The upload stopped sending data. Nothing was installed. Try again.".to_string(),
            ),
            UploadError::Disk(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("The bundle could not be saved on the box ({e}). Nothing was installed."),
            ),
        };
        message(code, "Upload not accepted", &text, BACK)
    }
}

impl From<axum::extract::multipart::MultipartError> for UploadError {
    fn from(_: axum::extract::multipart::MultipartError) -> Self {
        UploadError::Broken
    }
}

/// The next field of the form, waiting at most [`UPLOAD_IDLE`] for its start.
async fn next_field(form: &mut Multipart) -> Result<Option<Field<'_>>, UploadError> {
    match tokio::time::timeout(UPLOAD_IDLE, form.next_field()).await {
        Ok(f) => Ok(f?),
        Err(_) => Err(UploadError::Stalled),
    }
}

/// The next piece of a field, waiting at most [`UPLOAD_IDLE`].
async fn chunk(field: &mut Field<'_>) -> Result<Option<axum::body::Bytes>, UploadError> {
    match tokio::time::timeout(UPLOAD_IDLE, field.chunk()).await {
        Ok(c) => Ok(c?),
        Err(_) => Err(UploadError::Stalled),
    }
}

/// The first field, which must be `csrf` (at most [`MAX_CSRF`] bytes of text).
pub(crate) async fn csrf_field(form: &mut Multipart) -> Result<String, UploadError> {
    let mut field = next_field(form).await?.ok_or(UploadError::Broken)?;
    if field.name() != Some("csrf") {
        return Err(UploadError::Broken);
    }
    let mut value = Vec::new();
    while let Some(c) = chunk(&mut field).await? {
        if value.len() + c.len() > MAX_CSRF {
            return Err(UploadError::Broken);
        }
        value.extend_from_slice(&c);
    }
    String::from_utf8(value).map_err(|_| UploadError::Broken)
}

/// Stream the field `name` (the next one, and the last) to a new file at `path`, at
/// most `cap` bytes. On every error the partial file is gone. (Also the wizard's
/// backup upload, [`crate::restore`].)
pub(crate) async fn save_field(
    form: &mut Multipart,
    name: &str,
    path: &Path,
    cap: u64,
) -> Result<PartialFile, UploadError> {
    let mut field = next_field(form).await?.ok_or(UploadError::Empty)?;
    if field.name() != Some(name) {
        return Err(UploadError::Fields);
    }
    // `create_new`: the target is fresh; never overwrite (or later delete) another file.
    let mut out = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .await
        .map_err(UploadError::Disk)?;
    // Removes the file when this function returns an error or its future is dropped
    // (the visitor went away).
    let file = PartialFile {
        path: path.to_path_buf(),
        keep: false,
    };
    let mut written: u64 = 0;
    while let Some(c) = chunk(&mut field).await? {
        written = written.saturating_add(c.len() as u64);
        if written > cap {
            return Err(UploadError::TooLarge(cap));
        }
        out.write_all(&c).await.map_err(UploadError::Disk)?;
    }
    out.flush().await.map_err(UploadError::Disk)?;
    drop(out);
    if written == 0 {
        return Err(UploadError::Empty);
    }
    drop(field);
    // Only the closing boundary may follow: a complete upload, nothing else in it.
    if next_field(form).await?.is_some() {
        return Err(UploadError::Fields);
    }
    Ok(file)
}

/// A file being written; removed when dropped unless [`PartialFile::keep`] was called.
pub(crate) struct PartialFile {
    path: PathBuf,
    keep: bool,
}

impl PartialFile {
    /// The finished file's path; it is no longer removed.
    pub(crate) fn keep(mut self) -> PathBuf {
        self.keep = true;
        self.path.clone()
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.keep {
            remove(&self.path);
        }
    }
}

/// Remove a file; a missing one is fine (nothing else can be done about other errors).
pub(crate) fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}
