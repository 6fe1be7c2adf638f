//! The "Accounts" page (issue 18 item 3): the relay's accounts with their figures, a
//! bounded page at a time with a search; delete and block with a confirmation step;
//! the blocked addresses with unblock. Needs a session; every change needs the CSRF
//! token, and delete and block a second, confirming form.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use crate::router::{App, Visitor, message};
use crate::view::{self, Layout};
use crate::{AccountQuery, Backend};

/// Rows on one page (the page of a relay with 50 000 accounts stays small).
pub const PAGE: u32 = 50;
/// Where every result page links back to.
const BACK: Option<(&str, &str)> = Some(("/admin/accounts", "Back to the accounts"));

/// `GET /admin/accounts?q=…&after=…&bafter=…`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ListParams {
    /// Search text.
    pub q: String,
    /// The accounts after this address.
    pub after: String,
    /// The blocked addresses after this one.
    pub bafter: String,
}

/// One account row as shown.
pub struct AccountView {
    pub address: String,
    pub created: String,
    pub last_login: String,
    pub storage: String,
    pub messages: u64,
}

#[derive(Template)]
#[template(path = "accounts.html")]
pub struct AccountsPage {
    pub l: Layout,
    pub search: String,
    pub accounts: Vec<AccountView>,
    pub total: u64,
    /// The link to the next page of accounts, if more follow.
    pub next: Option<String>,
    /// This is not the first page.
    pub paged: bool,
    pub blocked: Vec<(String, String)>,
    pub blocked_total: u64,
    pub blocked_next: Option<String>,
    /// Why the list could not be read, if it could not.
    pub error: Option<String>,
}

/// `GET /admin/accounts`.
pub async fn accounts_page<B: Backend>(
    State(app): State<App<B>>,
    mut v: Visitor,
    Query(p): Query<ListParams>,
) -> Response {
    if let Some(r) = v.need_session() {
        return r;
    }
    let search = p.q.trim().to_string();
    let query = |after: &str| AccountQuery {
        after: (!after.is_empty()).then(|| after.to_string()),
        search: (!search.is_empty()).then(|| search.clone()),
        limit: PAGE,
    };
    let mut error = None;
    let list = app
        .backend
        .accounts(query(&p.after))
        .await
        .unwrap_or_else(|e| {
            error = Some(e);
            Default::default()
        });
    let blocked = app
        .backend
        .blocked_addresses(query(&p.bafter))
        .await
        .unwrap_or_else(|e| {
            error.get_or_insert(e);
            Default::default()
        });
    let link = |key: &str, after: &str| {
        let mut url = format!("/admin/accounts?{key}={}", encode(after));
        if !search.is_empty() {
            url.push_str(&format!("&q={}", encode(&search)));
        }
        url
    };
    let next = list
        .accounts
        .last()
        .filter(|_| list.more)
        .map(|a| link("after", &a.address));
    let blocked_next = blocked
        .blocked
        .last()
        .filter(|_| blocked.more)
        .map(|(a, _)| link("bafter", a));
    let page = AccountsPage {
        l: v.layout("Accounts"),
        search: search.clone(),
        accounts: list
            .accounts
            .iter()
            .map(|a| AccountView {
                address: a.address.clone(),
                created: a.created.map_or_else(|| "unknown".into(), view::date),
                last_login: view::date(a.last_login_day),
                storage: view::bytes(a.storage_bytes),
                messages: a.messages,
            })
            .collect(),
        total: list.total,
        next,
        paged: !p.after.is_empty() || !p.bafter.is_empty(),
        blocked: blocked
            .blocked
            .iter()
            .map(|(a, t)| (a.clone(), view::date(*t)))
            .collect(),
        blocked_total: blocked.total,
        blocked_next,
        error,
    };
    v.page(StatusCode::OK, &page)
}

/// The form of delete, block and unblock: the address, and `confirmed=yes` on the
/// confirming form of delete and block.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ActionForm {
    pub csrf: String,
    pub address: String,
    pub confirmed: String,
}

/// The confirmation step of delete and block.
#[derive(Template)]
#[template(path = "accounts_confirm.html")]
pub struct ConfirmPage {
    pub l: Layout,
    /// `delete` or `block`: the form's action.
    pub action: &'static str,
    pub address: String,
    pub heading: String,
    pub text: String,
    pub button: &'static str,
}

/// `POST /admin/accounts/delete`: the confirmation step, then the deletion.
pub async fn delete<B: Backend>(
    State(app): State<App<B>>,
    mut v: Visitor,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Some(r) = checks(&v, &form) {
        return r;
    }
    if form.confirmed != "yes" {
        let page = ConfirmPage {
            l: v.layout("Delete an account"),
            action: "delete",
            address: form.address.clone(),
            heading: "Delete this account?".into(),
            text: "The account and all its messages are removed for good; this cannot \
                   be undone. Whoever uses it is logged out. A later login with this \
                   address creates a new, empty account, unless you block the address \
                   instead."
                .into(),
            button: "Delete the account",
        };
        return v.page(StatusCode::OK, &page);
    }
    done(
        app.backend.delete_account(form.address).await,
        "Account deleted",
    )
}

/// `POST /admin/accounts/block`: the confirmation step, then the block.
pub async fn block<B: Backend>(
    State(app): State<App<B>>,
    mut v: Visitor,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Some(r) = checks(&v, &form) {
        return r;
    }
    if form.confirmed != "yes" {
        let page = ConfirmPage {
            l: v.layout("Block an address"),
            action: "block",
            address: form.address.clone(),
            heading: "Block this address?".into(),
            text: "No login can create this address again until you unblock it. If an \
                   account with this address exists, it is deleted with all its \
                   messages, for good."
                .into(),
            button: "Block the address",
        };
        return v.page(StatusCode::OK, &page);
    }
    done(
        app.backend.block_address(form.address).await,
        "Address blocked",
    )
}

/// `POST /admin/accounts/unblock` (nothing is lost: no confirmation step).
pub async fn unblock<B: Backend>(
    State(app): State<App<B>>,
    v: Visitor,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Some(r) = checks(&v, &form) {
        return r;
    }
    done(
        app.backend.unblock_address(form.address).await,
        "Address unblocked",
    )
}

/// CSRF token, then the session.
fn checks(v: &Visitor, form: &ActionForm) -> Option<Response> {
    v.need_csrf(&form.csrf).or_else(|| v.need_session())
}

/// The result page of a change.
fn done(result: Result<String, String>, heading: &str) -> Response {
    match result {
        Ok(text) => message(StatusCode::OK, heading, &capitalised(&text), BACK),
        Err(reason) => message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Nothing was changed",
            &capitalised(&reason),
            BACK,
        ),
    }
}

/// `text` with its first letter in upper case (the daemon's texts start in lower case).
fn capitalised(text: &str) -> String {
    let mut c = text.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// A query-string value, percent-encoded.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
