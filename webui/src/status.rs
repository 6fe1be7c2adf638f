//! The status page (issue #6 item 5): services, certificate expiry, DNS checks, queue,
//! accounts, storage and SD-card writes, version and update state (with the "update
//! now" and upload forms of [`crate::update`], issue #7), recent errors, and small
//! charts drawn on the server ([`crate::charts`]). Needs a session.

use askama::Template;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::router::{App, Visitor, message};
use crate::view::{self, CheckView, Layout};
use crate::wizard::CHECK_TIMEOUT;
use crate::{AcmeProgress, Backend, DailySeries, charts};

/// Most recent-error lines shown (the newest).
const MAX_ERRORS: usize = 50;
/// Seconds between reloads of the page while an update downloads or installs.
const UPDATE_REFRESH: &str = "5";

/// One service row.
pub struct ServiceView {
    pub name: String,
    pub status: &'static str,
    pub label: &'static str,
    pub detail: String,
}

/// One chart: its title and the SVG markup from [`charts::bar_chart`] (escaped there),
/// or, with nothing to draw, a sentence saying so.
pub struct ChartView {
    pub title: String,
    pub svg: Option<String>,
    pub empty: String,
}

#[derive(Template)]
#[template(path = "status.html")]
pub struct StatusPage {
    pub l: Layout,
    pub domain: String,
    pub services: Vec<ServiceView>,
    /// Who issued the certificate, or that it is self-signed ([`view::certificate_label`]).
    pub cert_label: String,
    pub cert_names: Vec<String>,
    pub cert_expiry: Option<String>,
    /// `ok`, `warning` (under 14 days), `error` (expired) or `unknown`.
    pub cert_status: &'static str,
    pub cert_progress: String,
    pub dns: Vec<CheckView>,
    pub queue_rows: u64,
    pub accounts: u64,
    pub storage: String,
    pub storage_free: Option<String>,
    pub written_per_day: Option<String>,
    pub written_today: Option<String>,
    /// "Written to the SD card" on the Relaybox image, "Written to disk" elsewhere.
    pub written_label: &'static str,
    pub version: String,
    pub update_state: String,
    /// The last update failure with its reason (OTA-6).
    pub update_error: Option<String>,
    /// The last look at the update server (`YYYY-MM-DD HH:MM UTC`).
    pub update_check: Option<String>,
    /// An update runs: progress shown, no forms, the page reloads itself.
    pub update_busy: bool,
    /// "Update now" and the upload form are offered (an A/B image, nothing running).
    pub update_forms: bool,
    pub errors: Vec<String>,
    pub charts: Vec<ChartView>,
    /// What the charts count and how current they are (issue 16).
    pub charts_note: String,
    /// Issue 18: the sign-up mode's name (`None` while the relay does not run).
    pub signup: Option<&'static str>,
    /// Issue 17: the automatic backups in one line, and its status.
    pub backup_summary: String,
    pub backup_status: &'static str,
}

/// `GET /admin/status`.
pub async fn status_page<B: Backend>(State(app): State<App<B>>, mut v: Visitor) -> Response {
    if let Some(r) = v.need_session() {
        return r;
    }
    let Ok(s) = tokio::time::timeout(CHECK_TIMEOUT, app.backend.status()).await else {
        return message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Status not available",
            "Collecting the status took too long. Try again in a minute.",
            Some(("/admin/status", "Try again")),
        );
    };
    let now = crate::session::now_unix();
    let (cert_expiry, cert_status) = match s.certificate.not_after {
        Some(t) => {
            let days = view::days_left(t, now);
            let status = match days {
                ..0 => "error",
                0..14 => "warning",
                _ => "ok",
            };
            let text = if days < 0 {
                format!("{} (expired)", view::date(t))
            } else {
                format!("{} ({days} days left)", view::date(t))
            };
            (Some(text), status)
        }
        None => (None, "unknown"),
    };
    let cert_progress = match &s.certificate.progress {
        AcmeProgress::Idle => String::new(),
        AcmeProgress::Running { step } => format!("Renewing: {step}"),
        AcmeProgress::Failed { reason } => format!("Last renewal failed: {reason}"),
        AcmeProgress::Done => String::new(),
    };
    let skip = s.recent_errors.len().saturating_sub(MAX_ERRORS);
    let today = view::date(now);
    let mut l = v.layout("Status");
    if s.update.busy {
        // Progress without JavaScript: the page reloads itself.
        l.refresh = Some(UPDATE_REFRESH.into());
    }
    let backup_summary = crate::backups::summary(&app.backend.backups());
    let page = StatusPage {
        l,
        domain: v.overview.domain.clone().unwrap_or_default(),
        services: s
            .services
            .iter()
            .map(|h| ServiceView {
                name: h.name.clone(),
                status: h.status.as_str(),
                label: view::service_label(h.status),
                detail: h.detail.clone(),
            })
            .collect(),
        cert_label: view::certificate_label(&s.certificate),
        cert_names: s.certificate.names.clone(),
        cert_expiry,
        cert_status,
        cert_progress,
        dns: view::checks(&s.dns),
        queue_rows: s.queue_rows,
        accounts: s.accounts,
        storage: view::bytes(s.storage_bytes),
        storage_free: s.storage_free_bytes.map(view::bytes),
        written_per_day: s.bytes_written_per_day.map(view::bytes),
        written_today: s.bytes_written_today.map(view::bytes),
        // Updates install only on the Relaybox image (A/B slots), which runs from an SD
        // card; a server's data directory is on some disk.
        written_label: if s.update.available {
            "Written to the SD card"
        } else {
            "Written to disk"
        },
        version: s.version.clone(),
        update_state: s.update.state.clone(),
        update_error: s.update.last_error.clone(),
        update_check: s.update.last_check.map(view::date_time),
        update_busy: s.update.busy,
        update_forms: s.update.available && !s.update.busy,
        errors: s.recent_errors[skip..].to_vec(),
        charts: s
            .charts
            .iter()
            .map(|c| chart_view(c, &today, s.charts_since))
            .collect(),
        charts_note: charts_note(s.charts_since, now),
        signup: app
            .backend
            .signup()
            .map(|i| crate::signup::mode_text(i.mode).0),
        backup_summary: backup_summary.0,
        backup_status: backup_summary.1,
    };
    v.page(StatusCode::OK, &page)
}

/// A chart of the status page: bars when something was counted, otherwise a sentence
/// (issue 16: an empty plot under "max 1" said nothing).
fn chart_view(c: &DailySeries, today: &str, since: Option<u64>) -> ChartView {
    let unit = c.unit.clone();
    let value = move |v: u64| match unit.as_str() {
        "bytes" => view::bytes(v),
        "" => v.to_string(),
        u => format!("{v} {u}"),
    };
    ChartView {
        title: if c.unit.is_empty() {
            c.title.clone()
        } else {
            format!("{} ({})", c.title, c.unit)
        },
        svg: charts::bar_chart(c, today, &value),
        empty: match since {
            Some(t) => format!(
                "No data yet — nothing counted since {}.",
                view::date_time(t)
            ),
            None => "No data yet — the first figures come once the relay runs.".into(),
        },
    }
}

/// What the charts count and how current they are.
fn charts_note(since: Option<u64>, now: u64) -> String {
    let from = match since {
        Some(t) => format!(" since {}", view::date_time(t)),
        None => String::new(),
    };
    format!(
        "Per UTC day, counted{from} (in memory: a restart starts again). The last bar is \
         today so far, as of {} when this page was loaded; reload it for newer figures.",
        view::date_time(now)
    )
}

/// `GET /admin/status/report`: the diagnostic report as a download (issue 18 item 5).
pub async fn report<B: Backend>(State(app): State<App<B>>, v: Visitor) -> Response {
    if let Some(r) = v.need_session() {
        return r;
    }
    let Ok((text, name)) =
        tokio::time::timeout(CHECK_TIMEOUT, app.backend.diagnostic_report()).await
    else {
        return message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Report not available",
            "Collecting the report took too long. Try again in a minute.",
            Some(("/admin/status", "Back to the status page")),
        );
    };
    // Only safe characters in the header's file name.
    let name: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(200)
        .collect();
    let name = if name.trim_matches('.').is_empty() {
        "relaybox-report.txt".to_string()
    } else {
        name
    };
    (
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        text,
    )
        .into_response()
}
