//! The automatic backups' page (issue 17 item 2): the last result (success with size and
//! file, or the failure escaped) and the next run, the status page's summary line, the
//! passphrase set once (never shown), the settings form with its refusals, "Back up
//! now", and login and CSRF on every form.

use super::*;

fn info() -> BackupsInfo {
    BackupsInfo {
        available: true,
        target: "dir".into(),
        dir: "/srv/backups".into(),
        every: "1d".into(),
        keep: 7,
        messages: true,
        passphrase_set: false,
        off_reason: Some("no passphrase is set: set one on the status page".into()),
        last: None,
        next: Some(1_800_000_000),
        running: false,
    }
}

async fn setup() -> (Arc<Fake>, Browser) {
    let fake = Arc::new(Fake::new(Phase::Configured));
    *fake.auto_backups.lock().unwrap() = info();
    let mut b = Browser::new(&fake);
    b.login().await;
    fake.calls.lock().unwrap().clear();
    (fake, b)
}

#[tokio::test]
async fn the_page_shows_the_state_and_needs_a_session() {
    let (fake, mut b) = setup().await;
    let mut stranger = b.sibling("192.168.1.50:1");
    let p = stranger.get("/admin/backups").await;
    assert_eq!(p.location.as_deref(), Some("/admin/login"));

    let p = b.get("/admin/backups").await;
    assert_eq!(p.status, StatusCode::OK);
    assert_eq!(p.text_of("backup-last"), Some(""));
    assert!(p.body.contains("No automatic backup yet."));
    assert!(p.body.contains("Off: no passphrase is set"), "{}", p.body);
    assert!(
        p.text_of("passphrase-state")
            .unwrap()
            .contains("No passphrase is set")
    );
    assert!(p.body.contains("id=\"target-dir\" checked"));
    assert!(p.body.contains("value=\"/srv/backups\""));
    assert!(p.body.contains("id=\"messages\" checked"));

    // A success: time, size and file; the next run.
    {
        let mut i = fake.auto_backups.lock().unwrap();
        i.passphrase_set = true;
        i.off_reason = None;
        i.last = Some(BackupResult {
            at: 1_800_000_000,
            file: "/srv/backups/relaybox-chat.example.org-20270115-080000.backup".into(),
            bytes: 2_500_000,
            error: String::new(),
        });
        i.next = Some(1_800_000_000 + 86_400);
    }
    let p = b.get("/admin/backups").await;
    assert!(p.body.contains("data-status=\"ok\""));
    assert!(p.body.contains("2027-01-15 08:00 UTC: 2.5 MB written to /srv/backups/relaybox-chat.example.org-20270115-080000.backup"), "{}", p.body);
    assert_eq!(
        p.text_of("backup-next"),
        Some("Next: 2027-01-16 08:00 UTC.")
    );
    assert!(
        p.text_of("passphrase-state")
            .unwrap()
            .contains("A passphrase is set")
    );
    let s = b.get("/admin/status").await;
    assert!(s.body.contains("href=\"/admin/backups\""));
    assert!(s.body.contains("id=\"backup-summary\" data-status=\"ok\""));

    // A failure: in plain words, escaped, on the status page too.
    fake.auto_backups.lock().unwrap().last = Some(BackupResult {
        at: 1_800_000_000,
        file: String::new(),
        bytes: 0,
        error: format!("cannot write into /srv/backups: permission denied {EVIL}"),
    });
    let p = b.get("/admin/backups").await;
    assert!(p.body.contains("id=\"backup-last\" data-status=\"error\""));
    assert!(
        p.body
            .contains("failed: cannot write into /srv/backups: permission denied")
    );
    assert!(!p.body.contains("<script>alert"));
    let s = b.get("/admin/status").await;
    assert!(
        s.body
            .contains("id=\"backup-summary\" data-status=\"error\"")
    );
    assert!(s.body.contains("permission denied"));
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());

    // A backend without automatic backups says so.
    {
        let mut i = fake.auto_backups.lock().unwrap();
        i.available = false;
        i.off_reason = Some("automatic backups need a config file (not in dev mode)".into());
    }
    let p = b.get("/admin/backups").await;
    assert!(p.body.contains("id=\"backups-unavailable\""));
    assert!(p.body.contains("need a config file"));
    let s = b.get("/admin/status").await;
    assert!(
        s.body
            .contains("Automatic backups are not available: automatic backups need")
    );
    assert!(!p.body.contains("action=\"/admin/backups/settings\""));
}

#[tokio::test]
async fn the_passphrase_is_set_twice_typed_and_never_shown() {
    let (fake, mut b) = setup().await;
    let p = b
        .submit(
            "/admin/backups",
            "/admin/backups/passphrase",
            &[
                ("passphrase", "correct horse battery"),
                ("confirm", "correct horse batery"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(p.text_of("passphrase-error").unwrap().contains("differ"));
    assert!(fake.calls().is_empty());
    let p = b
        .submit(
            "/admin/backups",
            "/admin/backups/passphrase",
            &[("passphrase", "short"), ("confirm", "short")],
        )
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(p.body.contains("Too short. &#60;script&#62;"), "{}", p.body);
    let p = b
        .submit(
            "/admin/backups",
            "/admin/backups/passphrase",
            &[
                ("passphrase", "correct horse battery"),
                ("confirm", "correct horse battery"),
            ],
        )
        .await;
    assert_eq!(p.location.as_deref(), Some("/admin/backups"));
    let p = b.get("/admin/backups").await;
    assert!(
        p.text_of("passphrase-state")
            .unwrap()
            .contains("A passphrase is set")
    );
    assert!(!p.body.contains("correct horse battery"));
    // Forged or without a session: nothing.
    fake.calls.lock().unwrap().clear();
    let p = b
        .post(
            "/admin/backups/passphrase",
            &[
                ("csrf", "forged"),
                ("passphrase", "x".repeat(12).as_str()),
                ("confirm", "x".repeat(12).as_str()),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert!(fake.calls().is_empty());
}

#[tokio::test]
async fn settings_are_saved_or_refused_with_the_form_kept() {
    let (fake, mut b) = setup().await;
    let p = b
        .submit(
            "/admin/backups",
            "/admin/backups/settings",
            &[
                ("target", "usb"),
                ("dir", ""),
                ("every", "12h"),
                ("keep", "many"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(p.text_of("settings-error").unwrap().contains("backup_keep"));
    // What was typed stays in the form.
    assert!(p.body.contains("id=\"target-usb\" checked"));
    assert!(p.body.contains("value=\"12h\""));
    assert!(p.body.contains("value=\"many\""));
    assert_eq!(fake.auto_backups.lock().unwrap().target, "dir");

    let p = b
        .submit(
            "/admin/backups",
            "/admin/backups/settings",
            &[
                ("target", "usb"),
                ("dir", ""),
                ("every", "12h"),
                ("keep", "3"),
            ],
        )
        .await;
    assert_eq!(p.location.as_deref(), Some("/admin/backups"));
    let saved = fake.auto_backups.lock().unwrap().clone();
    assert_eq!(
        (
            saved.target.as_str(),
            saved.every.as_str(),
            saved.keep,
            saved.messages
        ),
        ("usb", "12h", 3, false),
        "an unticked box is no messages"
    );
    let p = b.get("/admin/backups").await;
    assert!(p.body.contains("id=\"target-usb\" checked"));
    assert!(!p.body.contains("id=\"messages\" checked"));
}

#[tokio::test]
async fn back_up_now_starts_one_or_says_why_not() {
    let (fake, mut b) = setup().await;
    let p = b.submit("/admin/backups", "/admin/backups/now", &[]).await;
    assert_eq!(p.location.as_deref(), Some("/admin/backups"));
    assert_eq!(fake.calls(), ["backup_now"]);
    fake.refusals
        .lock()
        .unwrap()
        .insert("backup_now", "The relay does not run yet.".into());
    let p = b.submit("/admin/backups", "/admin/backups/now", &[]).await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(p.body.contains("The relay does not run yet."));
    let p = b.post("/admin/backups/now", &[("csrf", "forged")]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
}
