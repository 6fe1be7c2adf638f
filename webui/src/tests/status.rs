//! Tests of the status page, the password page and the login page (issue 16), on the
//! parent module's fake [`Backend`] with a status set: charts that show today at once and
//! say when there is nothing yet, the certificate named by its issuer, the storage label
//! of a server, the current password asked (and slowed down) before a change, the logout
//! confirmed, and the way back in without the password as it works on the machine.

use super::*;

const NEW: &str = "a brand new admin password";
const PASSWORD_FILE: &str = "/var/lib/relaybox/admin.json";

fn today() -> String {
    crate::view::date(crate::session::now_unix())
}

/// A daemon right after setup that keeps the password in [`PASSWORD_FILE`], with or
/// without a reset button.
fn relay(phase: Phase, has_button: bool) -> Arc<Fake> {
    let mut fake = Fake::new(phase);
    fake.has_button = has_button;
    fake.password_file = Some(PathBuf::from(PASSWORD_FILE));
    fake.code_location = "the file /var/lib/relaybox/setup-code";
    *fake.status.get_mut().unwrap() = Some(after_setup());
    Arc::new(fake)
}

/// The status of a relay right after setup.
fn after_setup() -> Status {
    Status {
        services: Vec::new(),
        certificate: CertificateInfo {
            source: "acme".into(),
            issuer: "Let's Encrypt (R11)".into(),
            self_signed: false,
            names: vec!["chat.example.org".into()],
            not_after: Some(crate::session::now_unix() + 60 * 86_400),
            acme_possible: true,
            progress: AcmeProgress::Idle,
        },
        dns: Vec::new(),
        queue_rows: 0,
        accounts: 0,
        storage_bytes: 4096,
        storage_free_bytes: Some(1 << 30),
        // Right after setup: no full day yet.
        bytes_written_per_day: None,
        bytes_written_today: Some(1500),
        version: "1.0".into(),
        update: UpdateInfo {
            state: "automatic updates are not available here".into(),
            last_error: None,
            last_check: None,
            busy: false,
            available: false,
        },
        recent_errors: Vec::new(),
        // Right after setup: today only, no message yet, some bytes written.
        charts: vec![
            DailySeries {
                title: "Messages per day".into(),
                unit: "messages".into(),
                points: vec![(today(), 0)],
            },
            DailySeries {
                title: "Written to storage per day".into(),
                unit: "bytes".into(),
                points: vec![(today(), 1500)],
            },
        ],
        charts_since: Some(crate::session::now_unix() - 120),
    }
}

/// A browser logged in to `fake`.
async fn logged_in(fake: &Arc<Fake>) -> Browser {
    let mut b = Browser::new(fake);
    let p = b.login_with(PASSWORD).await;
    assert_eq!(p.location.as_deref(), Some("/admin/"), "{}", p.body);
    b
}

/// Item 7: right after setup the charts showed an empty plot under "max 1 messages" with
/// the same date at both ends. Now: nothing counted → a sentence; today's bytes → a bar
/// marked as today so far, its figure in bytes; and the page says how current it is.
#[tokio::test]
async fn charts_show_today_at_once_or_say_there_is_nothing_yet() {
    let fake = relay(Phase::Configured, false);
    let mut b = logged_in(&fake).await;
    let p = b.get("/admin/status").await;
    assert_eq!(p.status, StatusCode::OK);
    let charts = &p.body[p.body.find("<section id=\"charts\">").unwrap()..];
    let charts = &charts[..charts.find("</section>").unwrap()];
    assert!(!charts.contains("max 1 "), "no made-up scale: {charts}");
    assert_eq!(charts.matches("<svg").count(), 1, "{charts}");
    assert!(
        charts.contains("No data yet — nothing counted since"),
        "{charts}"
    );
    assert!(charts.contains(">today</text>"), "{charts}");
    assert!(
        !charts.contains(&format!(">{}</text>", today())),
        "one day, one label: {charts}"
    );
    assert!(charts.contains("today: 1.5 kB so far"), "{charts}");
    assert!(charts.contains(">max 1.5 kB</text>"), "{charts}");
    let note = p.text_of("charts-note").unwrap();
    assert!(
        note.contains("today so far") && note.contains("reload it for newer figures"),
        "{note}"
    );

    // Before anything was counted at all.
    fake.edit_status(|s| {
        s.charts_since = None;
        s.charts[1].points.clear();
    });
    let p = b.get("/admin/status").await;
    assert!(!p.body.contains("<svg class=\"chart\""));
    assert_eq!(
        p.body
            .matches("No data yet — the first figures come once the relay runs.")
            .count(),
        2
    );
}

/// Item 11: "Written to the SD card" only on the Relaybox image (A/B slots, the same fact
/// that offers updates); on a server the data directory is on a disk.
#[tokio::test]
async fn storage_writes_are_labelled_by_the_machine() {
    let fake = relay(Phase::Configured, false);
    let mut b = logged_in(&fake).await;
    let p = b.get("/admin/status").await;
    assert_eq!(p.text_of("written-label"), Some("Written to disk"));
    assert!(!p.body.contains("SD card"));
    fake.edit_status(|s| s.update.available = true);
    let p = b.get("/admin/status").await;
    assert_eq!(p.text_of("written-label"), Some("Written to the SD card"));
}

/// Like the charts (item 7): before a full day has passed, the bytes written so far are
/// not presented as a daily rate.
#[tokio::test]
async fn storage_writes_before_a_full_day_say_today_so_far() {
    let fake = relay(Phase::Configured, false);
    let mut b = logged_in(&fake).await;
    let p = b.get("/admin/status").await;
    let written = p.text_of("written").expect("written figure");
    assert!(written.contains("today so far"), "{written}");
    assert!(!written.contains("per day"), "{written}");
    fake.edit_status(|s| s.bytes_written_per_day = Some(2_000_000));
    let p = b.get("/admin/status").await;
    let written = p.text_of("written").expect("written figure");
    assert!(written.ends_with("per day"), "{written}");
}

/// Item 11: the certificate is named by its issuer, not by the word "acme"; a
/// self-signed one says so.
#[tokio::test]
async fn the_certificate_is_named_by_its_issuer() {
    let fake = relay(Phase::Configured, false);
    let mut b = logged_in(&fake).await;
    let p = b.get("/admin/status").await;
    let label = p.text_of("cert-issuer").unwrap().to_string();
    assert!(
        label.starts_with("issued by Let&#39;s Encrypt (R11)"),
        "{label}"
    );
    assert!(!label.contains("acme"), "{label}");
    fake.edit_status(|s| {
        s.certificate.source = "self-signed".into();
        s.certificate.issuer = "chat.example.org".into();
        s.certificate.self_signed = true;
    });
    let p = b.get("/admin/status").await;
    let label = p.text_of("cert-issuer").unwrap();
    assert!(label.starts_with("self-signed by this relay"), "{label}");
}

/// Item 8: a change needs the current password; without it or with a wrong one the
/// answer says so and nothing changes. The first password (after the claim) needs none.
#[tokio::test]
async fn changing_the_password_needs_the_current_one() {
    let fake = relay(Phase::Configured, false);
    let mut b = logged_in(&fake).await;
    let page = b.get("/admin/password").await;
    assert!(page.body.contains("id=\"current\""), "{}", page.body);
    for current in ["", "not the password"] {
        let p = b.change_password(current, NEW).await;
        assert_eq!(p.status, StatusCode::UNAUTHORIZED, "current {current:?}");
        let e = p.text_of("current-error").expect("error at the field");
        assert!(e.contains("Nothing was changed"), "{e}");
        assert!(fake.passwords_set().is_empty(), "nothing set");
        assert_eq!(fake.password.lock().unwrap().as_deref(), Some(PASSWORD));
    }
    // Still logged in; the right current password changes it.
    let p = b.change_password(PASSWORD, NEW).await;
    assert_eq!(p.location.as_deref(), Some("/admin/"), "{}", p.body);
    assert_eq!(fake.passwords_set(), vec![NEW.to_string()]);
    assert_eq!(b.get("/admin/status").await.status, StatusCode::OK);

    // The first password: no current one asked.
    let fresh = relay(Phase::Unclaimed, false);
    let mut c = Browser::new(&fresh);
    let p = c
        .submit("/admin/claim", "/admin/claim/code", &[("code", CODE)])
        .await;
    assert_eq!(p.location.as_deref(), Some("/admin/password"));
    let page = c.get("/admin/password").await;
    assert!(!page.body.contains("id=\"current\""));
    let p = c
        .submit(
            "/admin/password",
            "/admin/password",
            &[("password", NEW), ("confirm", NEW)],
        )
        .await;
    assert_eq!(p.location.as_deref(), Some("/admin/"), "{}", p.body);
    assert_eq!(fresh.passwords_set(), vec![NEW.to_string()]);
}

/// Item 8: wrong current passwords count like wrong logins (the same slowdown, shared
/// with the login form), so the change form is no way around it. Virtual time.
#[tokio::test(start_paused = true)]
async fn wrong_current_passwords_are_slowed_down_like_logins() {
    let fake = relay(Phase::Configured, false);
    let mut b = logged_in(&fake).await;
    for i in 0..3 {
        let start = Instant::now();
        let p = b.change_password("wrong", NEW).await;
        assert_eq!(p.status, StatusCode::UNAUTHORIZED, "attempt {i}");
        assert!(start.elapsed() < Duration::from_millis(100), "attempt {i}");
    }
    let start = Instant::now();
    let p = b.change_password("wrong", NEW).await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "4th: {:?}",
        start.elapsed()
    );
    // The login form of the same client waits too.
    let mut other = b.sibling(&b.addr.to_string());
    let start = Instant::now();
    assert_eq!(
        other.login_with("wrong").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(fake.passwords_set().is_empty());
}

/// Item 11: after logging out the login page says so.
#[tokio::test]
async fn logout_is_confirmed() {
    let fake = relay(Phase::Configured, false);
    let mut b = logged_in(&fake).await;
    let plain = b.get("/admin/status").await;
    assert!(plain.body.contains("id=\"logout\""), "{}", plain.body);
    let p = b.submit("/admin/status", "/admin/logout", &[]).await;
    let to = p.location.expect("redirect");
    assert_eq!(to, "/admin/login?logged-out");
    let login = b.get(&to).await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(
        login
            .text_of("logged-out")
            .is_some_and(|t| t.contains("You are logged out")),
        "{}",
        login.body
    );
    assert!(
        !b.get("/admin/login")
            .await
            .body
            .contains("id=\"logged-out\"")
    );
}

/// Item 11: on a machine without a reset button the pages say how to get back in
/// there (delete the admin password file, restart, claim with the new setup code), not
/// "only a factory reset"; with a button, the factory reset.
#[tokio::test]
async fn the_way_back_in_fits_the_machine() {
    let server = relay(Phase::Configured, false);
    let mut b = Browser::new(&server);
    let login = b.get("/admin/login").await;
    let hint = login.text_of("forgotten").unwrap();
    assert!(
        hint.contains(&format!("delete {PASSWORD_FILE} and restart relaybox"))
            && hint.contains("/var/lib/relaybox/setup-code"),
        "{hint}"
    );
    assert!(!login.body.contains("factory"), "{}", login.body);
    b.login_with(PASSWORD).await;
    let page = b.get("/admin/password").await;
    assert!(page.body.contains(PASSWORD_FILE) && !page.body.contains("factory"));
    // The first password page of a server.
    let fresh = relay(Phase::Unclaimed, false);
    let mut c = Browser::new(&fresh);
    c.submit("/admin/claim", "/admin/claim/code", &[("code", CODE)])
        .await;
    let first = c.get("/admin/password").await;
    assert!(
        first.body.contains(PASSWORD_FILE) && !first.body.contains("factory reset"),
        "{}",
        first.body
    );

    let boxed = relay(Phase::Configured, true);
    let login = Browser::new(&boxed).get("/admin/login").await;
    let hint = login.text_of("forgotten").unwrap();
    assert!(
        hint.contains("button") && hint.contains("factory state"),
        "{hint}"
    );
    assert!(!hint.contains(PASSWORD_FILE), "{hint}");
}
