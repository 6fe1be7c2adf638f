//! The outgoing queue page (issue 18): the domains with their figures and last error
//! (escaped), "Retry now" with login and CSRF, "Give up (bounce)" only after the
//! confirmation step, and refusals (an unknown domain) that change nothing.

use super::*;

fn domain(name: &str, messages: u64, error: &str) -> QueueDomain {
    let now = session::now_unix();
    QueueDomain {
        domain: name.into(),
        messages,
        attempts: 4,
        next_retry: now + 1800,
        oldest: now - 2 * 3600 - 5,
        last_error: error.into(),
    }
}

async fn setup() -> (Arc<Fake>, Browser) {
    let fake = Arc::new(Fake::new(Phase::Configured));
    *fake.queue.lock().unwrap() = vec![
        domain(
            "slow.example",
            3,
            "temporary rejection 451 4.7.1 <b>greylisted</b>",
        ),
        domain("new.example", 1, ""),
    ];
    let mut b = Browser::new(&fake);
    b.login().await;
    fake.calls.lock().unwrap().clear();
    (fake, b)
}

/// The `<tr>` of `domain` on the queue page.
fn row<'a>(body: &'a str, domain: &str) -> &'a str {
    let start = body
        .find(&format!("<tr data-domain=\"{domain}\""))
        .unwrap_or_else(|| panic!("no row for {domain}:\n{body}"));
    &body[start..start + body[start..].find("</tr>").unwrap()]
}

#[tokio::test]
async fn the_page_lists_domains_and_needs_a_session() {
    let (fake, mut b) = setup().await;
    let mut stranger = b.sibling("192.168.1.50:1");
    let p = stranger.get("/admin/queue").await;
    assert_eq!(p.location.as_deref(), Some("/admin/login"));

    let p = b.get("/admin/queue").await;
    assert_eq!(p.status, StatusCode::OK);
    let slow = row(&p.body, "slow.example");
    assert!(slow.contains("class=\"messages\">3<"), "{slow}");
    assert!(slow.contains("class=\"attempts\">4<"), "{slow}");
    assert!(slow.contains("class=\"next\">in 30 min<"), "{slow}");
    assert!(slow.contains("class=\"age\">2 h<"), "{slow}");
    assert!(
        slow.contains("temporary rejection 451 4.7.1 &#60;b&#62;greylisted&#60;/b&#62;"),
        "escaped: {slow}"
    );
    assert!(slow.contains("action=\"/admin/queue/retry\""));
    assert!(slow.contains("action=\"/admin/queue/bounce\""));
    assert!(row(&p.body, "new.example").contains("class=\"error\">-<"));
    // The status page links to it.
    assert!(
        b.get("/admin/status")
            .await
            .body
            .contains("href=\"/admin/queue\"")
    );
    // Empty: a sentence.
    fake.queue.lock().unwrap().clear();
    let p = b.get("/admin/queue").await;
    assert!(p.body.contains("id=\"queue-empty\""));
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
}

#[tokio::test]
async fn retry_now_needs_login_and_csrf_and_names_refusals() {
    let (fake, mut b) = setup().await;
    let p = b
        .post(
            "/admin/queue/retry",
            &[("domain", "slow.example"), ("csrf", "forged")],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    let mut stranger = b.sibling("192.168.1.50:1");
    let csrf = stranger.get("/admin/login").await.csrf();
    let p = stranger
        .post(
            "/admin/queue/retry",
            &[("csrf", &csrf), ("domain", "slow.example")],
        )
        .await;
    assert_eq!(p.location.as_deref(), Some("/admin/login"));
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());

    let p = b
        .submit(
            "/admin/queue",
            "/admin/queue/retry",
            &[("domain", "slow.example")],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert_eq!(p.location.as_deref(), Some("/admin/queue"));
    assert_eq!(fake.calls(), ["queue_retry slow.example"]);
    let p = b.get("/admin/queue").await;
    assert!(row(&p.body, "slow.example").contains("class=\"next\">now<"));

    let p = b
        .submit(
            "/admin/queue",
            "/admin/queue/retry",
            &[("domain", "gone.example")],
        )
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(p.body.contains("Nothing was changed"));
    assert!(
        p.body
            .contains("No mail for gone.example is waiting &#60;here&#62;.")
    );
}

#[tokio::test]
async fn give_up_asks_first_then_bounces() {
    let (fake, mut b) = setup().await;
    // The first step only asks: nothing is given up.
    let p = b
        .submit(
            "/admin/queue",
            "/admin/queue/bounce",
            &[("domain", "slow.example")],
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(
        p.body
            .contains("id=\"confirm-text\">3 message(s) for slow.example")
    );
    assert!(p.body.contains("name=\"confirm\" value=\"yes\""));
    assert!(p.body.contains("href=\"/admin/queue\" id=\"cancel\""));
    assert!(
        fake.calls().is_empty(),
        "asked, not done: {:?}",
        fake.calls()
    );
    assert_eq!(fake.queue.lock().unwrap().len(), 2);
    // A forged confirmation is refused.
    let p = b
        .post(
            "/admin/queue/bounce",
            &[
                ("csrf", "x"),
                ("domain", "slow.example"),
                ("confirm", "yes"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert!(fake.calls().is_empty());
    // The confirmation page's form: given up.
    let csrf = p_csrf(&mut b).await;
    let p = b
        .post(
            "/admin/queue/bounce",
            &[
                ("csrf", &csrf),
                ("domain", "slow.example"),
                ("confirm", "yes"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(
        p.body
            .contains("3 message(s) for slow.example left the queue")
    );
    assert_eq!(fake.calls(), ["queue_bounce slow.example"]);
    let p = b.get("/admin/queue").await;
    assert!(!p.body.contains("data-domain=\"slow.example\""));
    // An unknown domain: refused at the first step, nothing asked or done.
    let p = b
        .submit(
            "/admin/queue",
            "/admin/queue/bounce",
            &[("domain", "slow.example")],
        )
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fake.calls(), ["queue_bounce slow.example"]);
}

/// The CSRF token of the confirmation page (the same as the queue page's).
async fn p_csrf(b: &mut Browser) -> String {
    b.get("/admin/queue").await.csrf()
}
