//! Tests of the accounts page (issue 18 item 3) on the parent module's fake [`Backend`]:
//! the list with its figures in bounded pages and a search, delete and block only after a
//! confirmation step, unblock, login and CSRF required, odd addresses escaped.

use super::*;

/// The rows of `all` after `query.after` that contain `query.search`, at most
/// `query.limit`, and whether more follow (what the daemon's store does).
pub(super) fn page<T: Clone>(
    all: &[T],
    key: impl Fn(&T) -> &String,
    query: &AccountQuery,
) -> (Vec<T>, bool) {
    let mut rows: Vec<T> = all
        .iter()
        .filter(|r| query.after.as_ref().is_none_or(|a| key(r) > a))
        .filter(|r| {
            query
                .search
                .as_ref()
                .is_none_or(|s| key(r).contains(s.as_str()))
        })
        .cloned()
        .collect();
    rows.sort_by(|a, b| key(a).cmp(key(b)));
    let more = rows.len() > query.limit as usize;
    rows.truncate(query.limit as usize);
    (rows, more)
}

fn account(address: &str, messages: u64) -> AccountSummary {
    AccountSummary {
        address: address.into(),
        created: (messages != 7).then_some(1_798_675_200),
        last_login_day: 1_798_675_200,
        storage_bytes: messages * 1500,
        messages,
    }
}

/// A configured relay with `n` accounts `user00000@chat.example.org`, … (the first with
/// 3 messages, the second of unknown age).
fn relay_with(n: usize) -> Arc<Fake> {
    let fake = Fake::new(Phase::Configured);
    *fake.accounts.lock().unwrap() = (0..n)
        .map(|i| {
            let messages = [3, 7].get(i).copied().unwrap_or(0);
            account(&format!("user{i:05}@chat.example.org"), messages)
        })
        .collect();
    Arc::new(fake)
}

async fn logged_in(fake: &Arc<Fake>) -> Browser {
    let mut b = Browser::new(fake);
    b.login().await;
    b
}

#[tokio::test]
async fn the_list_shows_the_figures_in_bounded_pages() {
    let fake = relay_with(120);
    let mut b = logged_in(&fake).await;
    let p = b.get("/admin/accounts").await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(
        p.body.contains("120 account(s) on this relay"),
        "{}",
        p.body
    );
    let rows = p.body.matches("<tr data-address=").count();
    assert_eq!(rows, crate::accounts::PAGE as usize, "one bounded page");
    // The first row's figures: created, last login, storage, messages.
    let first = &p.body[p.body.find("data-address=\"user00000@").unwrap()..];
    let first = &first[..first.find("</tr>").unwrap()];
    for shown in ["2026-12-31", "4.5 kB", "<td>3</td>"] {
        assert!(first.contains(shown), "{shown} in {first}");
    }
    let second = &p.body[p.body.find("data-address=\"user00001@").unwrap()..];
    assert!(second[..second.find("</tr>").unwrap()].contains("unknown"));
    // The backend was asked for one page only.
    assert!(
        fake.calls()
            .iter()
            .any(|c| c.contains("limit: 50") && c.contains("after: None"))
    );
    // The next page continues after the last row, then the last page ends the list.
    let next = p.body.split("id=\"accounts-next\"").next().unwrap();
    let href = &next[next.rfind("href=\"").unwrap() + 6..];
    let href = href[..href.find('"').unwrap()].replace("&amp;", "&");
    assert_eq!(href, "/admin/accounts?after=user00049%40chat.example.org");
    let p2 = b.get(&href).await;
    assert!(p2.body.contains("data-address=\"user00050@"), "{}", p2.body);
    assert!(!p2.body.contains("data-address=\"user00049@"));
    assert!(p2.body.contains("id=\"accounts-first\""));
    let p3 = b
        .get("/admin/accounts?after=user00099%40chat.example.org")
        .await;
    assert_eq!(p3.body.matches("<tr data-address=").count(), 20);
    assert!(!p3.body.contains("id=\"accounts-next\""));
    // A search narrows the list.
    let found = b.get("/admin/accounts?q=user0011").await;
    assert_eq!(found.body.matches("<tr data-address=").count(), 10);
    assert!(found.body.contains("showing those containing"));
}

#[tokio::test]
async fn delete_and_block_take_a_confirmation_step() {
    let fake = relay_with(3);
    let mut b = logged_in(&fake).await;
    let victim = "user00001@chat.example.org";
    // The row's button leads to the confirmation page; nothing is deleted yet.
    let p = b
        .submit(
            "/admin/accounts",
            "/admin/accounts/delete",
            &[("address", victim)],
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert_eq!(p.text_of("confirm-address"), Some(victim));
    assert!(p.body.contains("cannot be undone"), "{}", p.body);
    assert!(!fake.calls().iter().any(|c| c.starts_with("delete_account")));
    assert_eq!(fake.accounts.lock().unwrap().len(), 3);
    // Confirmed: deleted, and the page says so.
    let csrf = p.csrf();
    let done = b
        .post(
            "/admin/accounts/delete",
            &[("csrf", &csrf), ("address", victim), ("confirmed", "yes")],
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("Deleted user00001@"), "{}", done.body);
    assert_eq!(fake.accounts.lock().unwrap().len(), 2);
    // Deleting twice: the reason, escaped, and nothing else changes.
    let again = b
        .post(
            "/admin/accounts/delete",
            &[("csrf", &csrf), ("address", victim), ("confirmed", "yes")],
        )
        .await;
    assert_eq!(again.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        again.body.contains("No account user00001@"),
        "{}",
        again.body
    );
    assert!(!again.body.contains("<script>"), "escaped");
    assert_eq!(fake.accounts.lock().unwrap().len(), 2);

    // Block: the confirmation says the account goes too.
    let target = "user00002@chat.example.org";
    let p = b
        .submit(
            "/admin/accounts",
            "/admin/accounts/block",
            &[("address", target)],
        )
        .await;
    assert!(p.body.contains("it is deleted with all its"), "{}", p.body);
    assert!(fake.blocked.lock().unwrap().is_empty());
    let csrf = p.csrf();
    let done = b
        .post(
            "/admin/accounts/block",
            &[("csrf", &csrf), ("address", target), ("confirmed", "yes")],
        )
        .await;
    assert!(done.body.contains("Blocked user00002@"), "{}", done.body);
    let list = b.get("/admin/accounts").await;
    assert!(list.body.contains("id=\"blocked-list\""), "{}", list.body);
    assert!(list.body.contains("<tr data-address=\"user00002@"));
    // Unblock: at once.
    let csrf = list.csrf();
    let done = b
        .post(
            "/admin/accounts/unblock",
            &[("csrf", &csrf), ("address", target)],
        )
        .await;
    assert!(done.body.contains("Unblocked user00002@"), "{}", done.body);
    assert!(fake.blocked.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_page_needs_a_session_and_its_forms_the_token() {
    let fake = relay_with(2);
    let mut stranger = Browser::new(&fake);
    let p = stranger.get("/admin/accounts").await;
    assert_eq!(p.location.as_deref(), Some("/admin/login"));
    let victim = "user00000@chat.example.org";
    for action in ["delete", "block", "unblock"] {
        let p = stranger
            .post(
                &format!("/admin/accounts/{action}"),
                &[
                    ("csrf", "forged"),
                    ("address", victim),
                    ("confirmed", "yes"),
                ],
            )
            .await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{action}");
    }
    let mut b = logged_in(&fake).await;
    let p = b
        .post(
            "/admin/accounts/delete",
            &[
                ("csrf", "forged"),
                ("address", victim),
                ("confirmed", "yes"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert_eq!(fake.accounts.lock().unwrap().len(), 2, "nothing deleted");
    assert!(fake.blocked.lock().unwrap().is_empty());
}

#[tokio::test]
async fn odd_addresses_are_escaped() {
    let fake = relay_with(0);
    fake.accounts.lock().unwrap().push(account(EVIL, 1));
    let mut b = logged_in(&fake).await;
    let p = b.get(&format!("/admin/accounts?q={}", encode(EVIL))).await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(!p.body.contains("<script>"), "{}", p.body);
    assert_eq!(p.body.matches("<tr data-address=").count(), 1, "{}", p.body);
    let confirm = b
        .submit(
            "/admin/accounts",
            "/admin/accounts/block",
            &[("address", EVIL)],
        )
        .await;
    assert!(!confirm.body.contains("<script>"));
}
