//! The outbound queue page (issue 18 item 4): the waiting messages by destination
//! domain — how many, attempts, next retry, age of the oldest, the last error in plain
//! words — with "Retry now" and "Give up (bounce)" per domain; giving up asks for a
//! confirmation first. Needs a session; the forms need the CSRF token.

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use crate::router::{App, Visitor, message};
use crate::view::Layout;
use crate::{Backend, QueueDomain};

/// Where the queue's result pages link back to.
const BACK: Option<(&str, &str)> = Some(("/admin/queue", "Back to the queue"));

/// One domain as shown.
pub struct DomainView {
    pub domain: String,
    pub messages: u64,
    pub attempts: u32,
    /// "now" or "in 12 min".
    pub next_retry: String,
    /// "3 h".
    pub waiting: String,
    /// Empty before a failed attempt.
    pub last_error: String,
}

#[derive(Template)]
#[template(path = "queue.html")]
pub struct QueuePage {
    pub l: Layout,
    pub domains: Vec<DomainView>,
}

#[derive(Template)]
#[template(path = "queue_confirm.html")]
pub struct ConfirmPage {
    pub l: Layout,
    pub domain: String,
    pub messages: u64,
}

/// The form of "Retry now" and of "Give up" (`confirm=yes` on the confirmation page).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DomainForm {
    pub csrf: String,
    pub domain: String,
    pub confirm: String,
}

/// A duration for people: `45 s`, `12 min`, `3 h`, `2 d`.
fn age(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{} min", seconds / 60),
        3600..86_400 => format!("{} h", seconds / 3600),
        _ => format!("{} d", seconds / 86_400),
    }
}

fn view(d: &QueueDomain, now: u64) -> DomainView {
    DomainView {
        domain: d.domain.clone(),
        messages: d.messages,
        attempts: d.attempts,
        next_retry: if d.next_retry <= now {
            "now".into()
        } else {
            format!("in {}", age(d.next_retry - now))
        },
        waiting: age(now.saturating_sub(d.oldest)),
        last_error: d.last_error.clone(),
    }
}

/// The page for a refused action, saying nothing changed.
fn refused(reason: &str) -> Response {
    message(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Nothing was changed",
        reason,
        BACK,
    )
}

/// `GET /admin/queue`.
pub async fn queue_page<B: Backend>(State(app): State<App<B>>, mut v: Visitor) -> Response {
    if let Some(r) = v.need_session() {
        return r;
    }
    let domains = match app.backend.queue().await {
        Ok(d) => d,
        Err(reason) => {
            return message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Queue not available",
                &reason,
                Some(("/admin/status", "Back to the status page")),
            );
        }
    };
    let now = crate::session::now_unix();
    let page = QueuePage {
        l: v.layout("Outgoing queue"),
        domains: domains.iter().map(|d| view(d, now)).collect(),
    };
    v.page(StatusCode::OK, &page)
}

/// `POST /admin/queue/retry` (`domain`): its messages are tried at once.
pub async fn retry<B: Backend>(
    State(app): State<App<B>>,
    v: Visitor,
    Form(form): Form<DomainForm>,
) -> Response {
    if let Some(r) = v.need_csrf(&form.csrf) {
        return r;
    }
    if let Some(r) = v.need_session() {
        return r;
    }
    match app.backend.queue_retry(&form.domain).await {
        Ok(_) => v.redirect("/admin/queue"),
        Err(reason) => refused(&reason),
    }
}

/// `POST /admin/queue/bounce` (`domain`): the confirmation page; with `confirm=yes`
/// (sent from that page) the messages are given up and bounced.
pub async fn bounce<B: Backend>(
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
    if form.confirm != "yes" {
        let known = match app.backend.queue().await {
            Ok(list) => list.into_iter().find(|d| d.domain == form.domain),
            Err(reason) => return refused(&reason),
        };
        let Some(d) = known else {
            return refused(&format!(
                "No mail for {} is waiting in the queue.",
                form.domain
            ));
        };
        let page = ConfirmPage {
            l: v.layout("Give up?"),
            domain: d.domain,
            messages: d.messages,
        };
        return v.page(StatusCode::OK, &page);
    }
    match app.backend.queue_bounce(&form.domain).await {
        Ok(n) => message(
            StatusCode::OK,
            "Given up",
            &format!(
                "{n} message(s) for {} left the queue; each sender gets a bounce saying the \
                 mail was not delivered.",
                form.domain
            ),
            BACK,
        ),
        Err(reason) => refused(&reason),
    }
}
