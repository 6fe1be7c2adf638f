//! Issue 20, the wizard's front server: the router step offers it with the reasons the
//! daemon gives (escaped), or only mentions it; the front page makes a pairing code and
//! shows the one command while it reloads itself, says a failed pairing plainly with a way
//! to retry with a new code, lists the records and checks once a front is in use, and
//! moves off it only after a confirmation; every form needs the session and CSRF.

use super::*;

/// The fake's `front_pair`: an address with a space is refused (with markup in the
/// message, which the page must escape); otherwise the box "waits" with a command.
pub(super) fn pair(fake: &Fake, address: &str) -> Result<(), InputError> {
    if address.contains(' ') {
        return Err(InputError {
            field: "front",
            message: format!("{address:?} is not a server's address. {EVIL}"),
        });
    }
    let mut f = fake.front.lock().unwrap();
    if let Some(why) = &f.unavailable {
        return Err(InputError {
            field: "front",
            message: why.clone(),
        });
    }
    let n = fake.calls().len();
    f.pairing = FrontPairing::Waiting {
        front: address.to_string(),
        command: format!(
            "relaybox front --data /var/lib/relaybox-front --public {address} --pair \
             code-{n}-<&>"
        ),
        seconds_left: 899,
    };
    Ok(())
}

async fn setup() -> (Arc<Fake>, Browser) {
    let fake = Arc::new(Fake::new(Phase::Configured));
    let mut b = Browser::new(&fake);
    b.login().await;
    fake.calls.lock().unwrap().clear();
    (fake, b)
}

fn state_of(body: &str) -> &str {
    let marker = "id=\"front\" data-state=\"";
    let start = body.find(marker).expect("the front section") + marker.len();
    &body[start..start + body[start..].find('"').unwrap()]
}

#[tokio::test]
async fn the_router_step_offers_a_front_with_the_reasons() {
    let (fake, mut b) = setup().await;
    // Nothing seen: only a mention, with the link.
    let p = b.get("/admin/setup/ports").await;
    assert!(p.body.contains("id=\"front-mention\""), "{}", p.body);
    assert!(!p.body.contains("id=\"front-offer\""));
    assert!(p.body.contains("href=\"/admin/setup/front\""));
    // The daemon judged from the port checks the page got.
    assert_eq!(fake.calls(), ["front_advice port.25.outbound"]);
    // Reasons: offered above the forwards, each sentence shown and escaped.
    *fake.front_advice.lock().unwrap() = vec![
        "This box has no public IPv4 address.".into(),
        format!("Port 25 is blocked. {EVIL}"),
    ];
    let p = b.get("/admin/setup/ports").await;
    let offer = p.body.find("id=\"front-offer\"").expect("the offer");
    assert!(offer < p.body.find("id=\"forwards\"").unwrap());
    assert_eq!(
        p.text_of("front-why"),
        Some(
            "This box has no public IPv4 address. Port 25 is blocked. \
             &#60;script&#62;alert(1)&#60;/script&#62;&#60;b onmouseover=x&#62;&#34;&#39;&#38;"
        )
    );
    assert_eq!(p.text_of("front-link"), Some("Use a front server"));
    assert!(!p.body.contains("id=\"front-mention\""));
    // IP-only mode: the addresses carry the box's own IP; no front is offered.
    *fake.ip_only.lock().unwrap() = true;
    *fake.domain.lock().unwrap() = Some("198.51.100.7".into());
    let p = b.get("/admin/setup/ports").await;
    assert!(!p.body.contains("/admin/setup/front"), "{}", p.body);
    *fake.ip_only.lock().unwrap() = false;
    // A front in use: nothing to forward, no port checks, the way to the front page.
    fake.front.lock().unwrap().current = Some("front.example.net:4433".into());
    fake.calls.lock().unwrap().clear();
    let p = b.get("/admin/setup/ports").await;
    assert!(p.body.contains("id=\"ports-front\""));
    assert!(p.body.contains("<code>front.example.net:4433</code>"));
    assert!(!p.body.contains("id=\"forwards\""));
    assert!(!p.body.contains("data-check-id"));
    assert!(!p.body.contains("id=\"front-offer\""));
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
}

#[tokio::test]
async fn pairing_shows_one_command_and_waits() {
    let (fake, mut b) = setup().await;
    // A session is needed, for the page and for the form.
    let mut stranger = b.sibling("192.168.1.50:1");
    let p = stranger.get("/admin/setup/front").await;
    assert_eq!(p.location.as_deref(), Some("/admin/login"));

    let p = b.get("/admin/setup/front").await;
    assert_eq!(p.status, StatusCode::OK);
    assert_eq!(state_of(&p.body), "idle");
    assert!(p.body.contains("id=\"front-sees\""));
    assert!(p.body.contains("action=\"/admin/setup/front\""));
    assert!(!p.body.contains("http-equiv=\"refresh\""));
    let csrf = p.csrf();
    // No CSRF token: refused, nothing tried.
    let p = b
        .post("/admin/setup/front", &[("front", "203.0.113.7")])
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    // Someone else's token: refused too.
    let p = stranger
        .post("/admin/setup/front", &[("csrf", &csrf), ("front", "x")])
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    // Empty: said on the page, the backend not asked.
    let p = b
        .post("/admin/setup/front", &[("csrf", &csrf), ("front", "  ")])
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(p.text_of("front-error").unwrap().contains("public address"));
    // Far too long: refused here.
    let long = "a".repeat(5000);
    let p = b
        .post("/admin/setup/front", &[("csrf", &csrf), ("front", &long)])
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(p.text_of("front-error").unwrap().contains("too long"));
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    // The daemon refuses it: its words, escaped; what was typed stays in the field.
    let p = b
        .post(
            "/admin/setup/front",
            &[("csrf", &csrf), ("front", "front example")],
        )
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    let error = p.text_of("front-error").unwrap();
    assert!(error.contains("is not a server&#39;s address"), "{error}");
    assert!(!p.body.contains("<script>"));
    assert!(p.body.contains("value=\"front example\""));
    // A good one: the box waits; the page shows the command and reloads itself.
    let p = b
        .post(
            "/admin/setup/front",
            &[("csrf", &csrf), ("front", " front.example.net:8443 ")],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location.as_deref(), Some("/admin/setup/front"));
    assert_eq!(
        fake.calls(),
        [
            "front_pair front example",
            "front_pair front.example.net:8443"
        ]
    );
    let p = b.get("/admin/setup/front").await;
    assert_eq!(state_of(&p.body), "waiting");
    assert_eq!(
        p.text_of("front-command"),
        Some(
            "relaybox front --data /var/lib/relaybox-front --public front.example.net:8443 \
             --pair code-2-&#60;&#38;&#62;"
        )
    );
    assert_eq!(
        p.body.matches("class=\"copyable\"").count(),
        1,
        "ONE command"
    );
    assert!(p.body.contains("data-copy=\"front-command\""));
    assert!(
        p.body
            .contains("http-equiv=\"refresh\" content=\"5;url=/admin/setup/front\"")
    );
    assert!(p.body.contains("for 15 more minute(s)"), "{}", p.body);
    assert!(!p.body.contains("id=\"front-form\""));
    // "Stop waiting": back to the form, no reload.
    let p = b
        .post("/admin/setup/front/cancel", &[("csrf", &p.csrf())])
        .await;
    assert_eq!(p.location.as_deref(), Some("/admin/setup/front"));
    assert_eq!(fake.front.lock().unwrap().pairing, FrontPairing::Idle);
    let p = b.get("/admin/setup/front").await;
    assert_eq!(state_of(&p.body), "idle");
    assert!(!p.body.contains("http-equiv=\"refresh\""));
}

#[tokio::test]
async fn a_failed_pairing_is_said_plainly_and_retried_with_a_new_code() {
    let (fake, mut b) = setup().await;
    fake.front.lock().unwrap().pairing = FrontPairing::Failed {
        front: "203.0.113.7".into(),
        reason: format!("the front server refused the pairing code. {EVIL}"),
    };
    let p = b.get("/admin/setup/front").await;
    assert_eq!(state_of(&p.body), "failed");
    assert!(p.text_of("front-failed-reason").is_some());
    assert!(
        p.body.contains(
            "<code>203.0.113.7</code> did not work: the front server refused the pairing \
             code. &#60;script&#62;"
        ),
        "{}",
        p.body
    );
    assert!(!p.body.contains("http-equiv=\"refresh\""));
    // The retry form sends the same address again (a new code); the field has it too.
    let retry = &p.body[p.body.find("id=\"front-retry\"").unwrap()..];
    let retry = &retry[..retry.find("</form>").unwrap()];
    assert!(
        retry.contains("name=\"front\" value=\"203.0.113.7\""),
        "{retry}"
    );
    assert!(
        p.body
            .contains("id=\"front-address\" name=\"front\" value=\"203.0.113.7\"")
    );
    let p = b
        .post(
            "/admin/setup/front",
            &[("csrf", &p.csrf()), ("front", "203.0.113.7")],
        )
        .await;
    assert_eq!(p.location.as_deref(), Some("/admin/setup/front"));
    assert_eq!(fake.calls(), ["front_pair 203.0.113.7"]);
    assert_eq!(state_of(&b.get("/admin/setup/front").await.body), "waiting");
}

#[tokio::test]
async fn paired_front_lists_the_records_and_moves_off_after_confirming() {
    let (fake, mut b) = setup().await;
    {
        let mut f = fake.front.lock().unwrap();
        f.current = Some("203.0.113.7:4433".into());
        f.address = Some("203.0.113.7".into());
        f.pairing = FrontPairing::Paired {
            front: "203.0.113.7:4433".into(),
        };
    }
    let p = b.get("/admin/setup/front").await;
    assert_eq!(state_of(&p.body), "paired");
    assert!(p.body.contains("id=\"front-paired\""));
    assert!(
        p.text_of("front-current")
            .unwrap()
            .contains("reached through")
    );
    assert!(
        p.body
            .contains(", at the public address <code>203.0.113.7</code>")
    );
    // The link is not up (yet): said, with what to check.
    assert!(p.body.contains("data-connected=\"false\""));
    assert!(p.body.contains("keeps trying"));
    fake.front.lock().unwrap().connected = true;
    let p = b.get("/admin/setup/front").await;
    assert!(p.body.contains("data-connected=\"true\""));
    assert!(p.body.contains("The connection to the front server is up."));
    // The DNS step's records (the daemon's follow the front) and their checks.
    assert!(
        p.body
            .contains("<section class=\"record\" data-record-id=\"dns.dkim\">")
    );
    assert!(
        p.body
            .contains("data-check-id=\"dns.dkim\" data-status=\"error\"")
    );
    assert!(p.body.contains("href=\"/admin/setup/dns/zone\""));
    // Another front can be named.
    assert!(p.body.contains("id=\"front-form\""));
    // Move off: first the confirmation, nothing changed.
    let csrf = p.csrf();
    let p = b.post("/admin/setup/front/leave", &[("csrf", &csrf)]).await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(
        p.text_of("confirm-text")
            .unwrap()
            .ends_with("the front server ")
    );
    assert!(
        p.body
            .contains("the front server <code>203.0.113.7:4433</code> at once")
    );
    assert!(fake.front.lock().unwrap().current.is_some());
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    // Refused by the daemon: said, nothing changed.
    fake.refusals
        .lock()
        .unwrap()
        .insert("front_leave", format!("the config is read-only {EVIL}"));
    let p = b
        .post(
            "/admin/setup/front/leave",
            &[("csrf", &csrf), ("confirm", "yes")],
        )
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        p.body
            .contains("Nothing was changed: the config is read-only &#60;script")
    );
    assert!(fake.front.lock().unwrap().current.is_some());
    fake.refusals.lock().unwrap().clear();
    let p = b
        .post(
            "/admin/setup/front/leave",
            &[("csrf", &csrf), ("confirm", "yes")],
        )
        .await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.body.contains("Moved off the front server"));
    assert!(fake.front.lock().unwrap().current.is_none());
    // Again: there is no front any more.
    let p = b
        .post(
            "/admin/setup/front/leave",
            &[("csrf", &csrf), ("confirm", "yes")],
        )
        .await;
    assert_eq!(p.status, StatusCode::CONFLICT);
    assert_eq!(fake.calls(), ["front_leave", "front_leave"]);
    // Without CSRF: refused.
    fake.front.lock().unwrap().current = Some("x:1".into());
    let p = b
        .post("/admin/setup/front/leave", &[("confirm", "yes")])
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert!(fake.front.lock().unwrap().current.is_some());
    // The page after: idle, the intro again.
    fake.front.lock().unwrap().current = None;
    let p = b.get("/admin/setup/front").await;
    assert!(!p.body.contains("data-record-id"));
    assert!(p.body.contains("id=\"front-sees\""));
}

#[tokio::test]
async fn unavailable_front_says_why() {
    let (fake, mut b) = setup().await;
    fake.front.lock().unwrap().unavailable = Some(format!("Choose a domain first. {EVIL}"));
    let p = b.get("/admin/setup/front").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(
        p.text_of("front-unavailable")
            .unwrap()
            .starts_with("Choose a domain first.")
    );
    assert!(!p.body.contains("id=\"front-form\""));
    assert!(!p.body.contains("<script>"));
    // A form sent anyway gets the daemon's refusal.
    let p = b
        .post(
            "/admin/setup/front",
            &[("csrf", &p.csrf()), ("front", "203.0.113.7")],
        )
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
}
