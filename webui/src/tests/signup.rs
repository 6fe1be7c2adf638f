//! Tests of the sign-up page (issue 18) on the parent module's fake [`Backend`]: the mode
//! selector, making an invite (and the refusal of bad numbers with the reason, the typed
//! values kept), the list with uses and states, revoking, each invite's QR code and link,
//! the section on the status page, and the session and CSRF every form needs.

use super::*;

fn relay(per_person: bool) -> Arc<Fake> {
    let fake = Fake::new(Phase::Configured);
    *fake.signup.lock().unwrap() = Some(SignUpInfo {
        mode: SignUpMode::Open,
        invites: Vec::new(),
        persisted: true,
        per_person,
    });
    Arc::new(fake)
}

async fn logged_in(fake: &Arc<Fake>) -> Browser {
    let mut b = Browser::new(fake);
    b.login().await;
    b
}

#[tokio::test]
async fn the_mode_is_shown_and_changed() {
    let fake = relay(false);
    let mut b = logged_in(&fake).await;
    let p = b.get("/admin/signup").await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert_eq!(p.text_of("signup-current"), Some("Open"));
    assert!(
        p.body.contains("id=\"mode-open\" value=\"open\" checked"),
        "{}",
        p.body
    );
    for mode in ["closed", "invite", "no-automatic"] {
        assert!(p.body.contains(&format!("value=\"{mode}\"")), "{mode}");
    }
    assert!(p.body.contains("id=\"invites-none\""));
    assert!(!p.body.contains("signup-not-persisted"));

    let r = b
        .submit("/admin/signup", "/admin/signup/mode", &[("mode", "invite")])
        .await;
    assert_eq!(r.location.as_deref(), Some("/admin/signup"), "{}", r.body);
    assert!(fake.calls().contains(&"mode invite".to_string()));
    let p = b.get("/admin/signup").await;
    assert_eq!(p.text_of("signup-current"), Some("Invite only"));
    assert!(
        p.body
            .contains("id=\"mode-invite\" value=\"invite\" checked")
    );

    // The status page names the mode and links here.
    let s = b.get("/admin/status").await;
    assert_eq!(s.text_of("signup-mode"), Some("Invite only"));
    assert!(s.body.contains("href=\"/admin/signup\""));

    // An unknown mode and a daemon refusal: the page again with the reason.
    let r = b
        .submit(
            "/admin/signup",
            "/admin/signup/mode",
            &[("mode", "sometimes")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.text_of("signup-error"), Some("Choose one of the modes."));
    fake.refusals
        .lock()
        .unwrap()
        .insert("set_signup_mode", "the config file is read-only".into());
    let r = b
        .submit("/admin/signup", "/admin/signup/mode", &[("mode", "closed")])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.text_of("signup-error")
            .unwrap()
            .contains("the config file is read-only"),
        "{}",
        r.body
    );
    assert_eq!(r.text_of("signup-current"), Some("Invite only"));
}

#[tokio::test]
async fn invites_are_made_listed_shown_and_revoked() {
    let fake = relay(false);
    let mut b = logged_in(&fake).await;
    let r = b
        .submit(
            "/admin/signup",
            "/admin/signup/invites",
            &[("days", "3"), ("uses", "5"), ("label", "for the family")],
        )
        .await;
    let id = "0000000000000001";
    assert_eq!(
        r.location.as_deref(),
        Some(format!("/admin/signup/invite/{id}").as_str()),
        "{}",
        r.body
    );
    // The new invite's page: QR code and the shareable link.
    let p = b.get(&format!("/admin/signup/invite/{id}")).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(p.body.contains("<div id=\"invite-qr\" class=\"qr\"><svg"));
    assert_eq!(
        p.text_of("invite-link"),
        Some(format!("DCACCOUNT:https://chat.example.org/new?invite=token{id}").as_str())
    );
    assert!(p.body.contains("id=\"invite-shared\""));
    assert_eq!(p.text_of("invite-uses"), Some("0 of 5"));

    // Listed with its uses; a use counted by the relay shows.
    fake.signup.lock().unwrap().as_mut().unwrap().invites[0].uses = 2;
    let list = b.get("/admin/signup").await;
    assert!(
        list.body
            .contains(&format!("data-invite-id=\"{id}\" data-state=\"usable\"")),
        "{}",
        list.body
    );
    assert!(list.body.contains("<td class=\"uses\">2 of 5</td>"));
    assert!(list.body.contains("for the family"));

    // Revoked: the state changes and the code is no longer offered.
    let r = b
        .submit("/admin/signup", "/admin/signup/revoke", &[("id", id)])
        .await;
    assert_eq!(r.location.as_deref(), Some("/admin/signup"));
    assert!(fake.calls().contains(&format!("revoke {id}")));
    let list = b.get("/admin/signup").await;
    assert!(
        list.body
            .contains(&format!("data-invite-id=\"{id}\" data-state=\"revoked\""))
    );
    assert!(
        !list
            .body
            .contains(&format!("href=\"/admin/signup/invite/{id}\""))
    );
    // Revoking one that does not exist says so.
    let r = b
        .submit("/admin/signup", "/admin/signup/revoke", &[("id", "ffff")])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.text_of("signup-error")
            .unwrap()
            .contains("no invite with id ffff")
    );
    // An unknown invite page.
    assert_eq!(
        b.get("/admin/signup/invite/nope").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn bad_numbers_are_refused_with_the_reason_and_kept() {
    let fake = relay(false);
    let mut b = logged_in(&fake).await;
    let r = b
        .submit(
            "/admin/signup",
            "/admin/signup/invites",
            &[("days", "a week"), ("uses", "5"), ("label", "x")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.text_of("signup-error")
            .unwrap()
            .starts_with("Type whole numbers")
    );
    assert!(r.body.contains("value=\"a week\""), "typed value kept");
    // The daemon's refusal, escaped.
    let r = b
        .submit(
            "/admin/signup",
            "/admin/signup/invites",
            &[("days", "3"), ("uses", "0"), ("label", "")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body
            .contains("No invite was made: an invite may create 1 to 10000 accounts")
    );
    assert!(!r.body.contains("<script>alert(1)"), "escaped");
    assert!(
        fake.signup
            .lock()
            .unwrap()
            .as_ref()
            .unwrap()
            .invites
            .is_empty()
    );
}

/// Self-signed relays: each code is one account's `dclogin:` link, a fresh one each
/// time the page is shown.
#[tokio::test]
async fn per_person_invites_show_a_fresh_code_each_time() {
    let fake = relay(true);
    let mut b = logged_in(&fake).await;
    let r = b
        .submit(
            "/admin/signup",
            "/admin/signup/invites",
            &[("days", "1"), ("uses", "2"), ("label", "")],
        )
        .await;
    let at = r.location.unwrap();
    let first = b.get(&at).await;
    let second = b.get(&at).await;
    let (l1, l2) = (first.text_of("invite-link"), second.text_of("invite-link"));
    assert!(l1.unwrap().starts_with("dclogin:"), "{l1:?}");
    assert_ne!(l1, l2);
    assert!(first.body.contains("id=\"invite-per-person\""));
}

/// Every form needs the CSRF token and a session; nothing changes without.
#[tokio::test]
async fn forms_need_session_and_csrf() {
    let fake = relay(false);
    let mut stranger = Browser::new(&fake);
    assert_eq!(
        stranger.get("/admin/signup").await.location.as_deref(),
        Some("/admin/login")
    );
    let mut b = logged_in(&fake).await;
    for (action, form) in [
        ("/admin/signup/mode", vec![("mode", "closed")]),
        ("/admin/signup/invites", vec![("days", "1"), ("uses", "1")]),
        ("/admin/signup/revoke", vec![("id", "0000000000000001")]),
    ] {
        let mut with = vec![("csrf", "forged")];
        with.extend(form.iter().copied());
        let r = b.post(action, &with).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{action}");
    }
    assert!(
        !fake
            .calls()
            .iter()
            .any(|c| c.starts_with("mode ") || c.starts_with("revoke"))
    );
    assert!(
        fake.signup
            .lock()
            .unwrap()
            .as_ref()
            .unwrap()
            .invites
            .is_empty()
    );
}

/// Before the relay runs there is nothing to show, and the status page has no section.
#[tokio::test]
async fn not_running_says_so() {
    let fake = Arc::new(Fake::new(Phase::Configured));
    let mut b = logged_in(&fake).await;
    let p = b.get("/admin/signup").await;
    assert_eq!(p.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(p.body.contains("Finish the setup first"));
    assert!(!b.get("/admin/status").await.body.contains("id=\"signup\""));
}
