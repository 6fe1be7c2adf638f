//! Backups from the pages (issue 17), on the parent module's fake: "Restore from a
//! backup" only after the claim and only in setup mode, the upload shown before the
//! passphrase is asked, errors in plain words with nothing kept or changed, the session
//! ended by a restore (the backup's admin password holds from then on); "Download a
//! backup now" only with a session and the CSRF token, the passphrase twice, sent as an
//! attachment and not kept on the box.

use super::*;

/// The passphrase the fake's backups open with.
const GOOD: &str = "the backup passphrase";
/// The admin password inside the fake's backup.
const OLD_ADMIN: &str = "the old admin password";
/// When the fake's backup was made.
const MADE: u64 = 1_800_000_000;
/// The first line of a backup file.
const MAGIC: &[u8] = b"relaybox-backup 1\n";

/// The fake's backups: the upload waiting for its passphrase.
#[derive(Default)]
pub(super) struct FakeBackups {
    pub pending: Option<(PathBuf, BackupInfo)>,
}

/// `restore_uploaded`: a file that starts like a backup is one, of `old.example.org`.
pub(super) fn uploaded(fake: &Fake, path: PathBuf) -> Result<BackupInfo, String> {
    let bytes = std::fs::read(&path).unwrap();
    if !bytes.starts_with(MAGIC) {
        return Err(format!("This file is not a Relaybox backup. {EVIL}"));
    }
    let info = BackupInfo {
        domain: "old.example.org".into(),
        created: MADE,
        messages: true,
        version: "0.1.0".into(),
    };
    fake.backups.lock().unwrap().pending = Some((path, info.clone()));
    Ok(info)
}

/// `restore_backup`: with [`GOOD`] the relay of the backup takes over, with its admin
/// password (the session key changes with it).
pub(super) fn restore(fake: &Fake, passphrase: &str) -> Result<String, String> {
    if passphrase != GOOD {
        return Err(format!(
            "Wrong passphrase: the backup cannot be opened with it. {EVIL}"
        ));
    }
    let (path, info) = fake
        .backups
        .lock()
        .unwrap()
        .pending
        .take()
        .ok_or("nothing uploaded")?;
    std::fs::remove_file(path).unwrap();
    *fake.phase.lock().unwrap() = Phase::Configured;
    *fake.domain.lock().unwrap() = Some(info.domain.clone());
    *fake.password.lock().unwrap() = Some(OLD_ADMIN.into());
    fake.key.lock().unwrap().push(b'*');
    Ok(info.domain)
}

/// What `backup_now` writes.
pub(super) fn made_backup(passphrase: &str, messages: bool) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(format!("messages={messages} {}\n", passphrase.len()).as_bytes());
    // Text (the test browser reads bodies as UTF-8), more than one piece of a download.
    out.extend((0..200_000u32).map(|i| b'a' + (i % 26) as u8));
    out
}

impl Browser {
    /// POST a multipart form of `fields` to `path`.
    async fn upload_to(&mut self, path: &str, fields: &[(&str, Option<&str>, &[u8])]) -> Page {
        let body = multipart(fields);
        let req = Request::post(path)
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body))
            .unwrap();
        self.send(req).await
    }

    /// Upload `file` as the backup with this browser's CSRF token from the restore page.
    async fn upload_backup(&mut self, file: &[u8]) -> Page {
        let csrf = self.get("/admin/setup/restore").await.csrf();
        self.upload_to(
            "/admin/setup/restore/upload",
            &[
                ("csrf", None, csrf.as_bytes()),
                ("backup", Some("x.backup"), file),
            ],
        )
        .await
    }
}

/// A backup file as the fake takes it.
fn backup_file() -> Vec<u8> {
    let mut f = MAGIC.to_vec();
    f.extend_from_slice(&bundle_bytes(100_000));
    f
}

async fn logged_in(fake: &Arc<Fake>) -> Browser {
    let mut b = Browser::new(fake);
    b.login().await;
    b
}

#[tokio::test]
async fn the_restore_is_offered_only_after_the_claim_and_in_setup_mode() {
    // Unclaimed: to the claim, and an upload stores nothing.
    let fake = Arc::new(Fake::new(Phase::Unclaimed));
    let mut b = Browser::new(&fake);
    let p = b.get("/admin/setup/restore").await;
    assert_eq!(p.location.as_deref(), Some("/admin/claim"), "{}", p.body);
    let p = b
        .upload_to(
            "/admin/setup/restore/upload",
            &[("csrf", None, b"x"), ("backup", Some("x"), &backup_file())],
        )
        .await;
    assert_eq!(p.location.as_deref(), Some("/admin/claim"));
    assert!(fake.uploads().is_empty());
    assert!(!fake.calls().iter().any(|c| c.starts_with("restore")));

    // Claimed, setup mode: after the login; offered on the first page of the wizard.
    let fake = Arc::new(Fake::new(Phase::NeedDomain));
    let mut b = Browser::new(&fake);
    let p = b.get("/admin/setup/restore").await;
    assert_eq!(p.location.as_deref(), Some("/admin/login"));
    b.login().await;
    let p = b.get("/admin/setup/domain").await;
    assert!(p.body.contains("id=\"restore-link\""), "{}", p.body);
    let p = b.get("/admin/setup/restore").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.body.contains("id=\"restore-upload-form\""), "{}", p.body);
    assert!(!p.body.contains("id=\"restore-form\""));

    // Configured: neither offered nor taken.
    let fake = Arc::new(Fake::new(Phase::Configured));
    let mut b = logged_in(&fake).await;
    let p = b.get("/admin/setup/domain").await;
    assert!(!p.body.contains("restore-link"), "{}", p.body);
    let p = b.get("/admin/setup/restore").await;
    assert_eq!(p.status, StatusCode::CONFLICT, "{}", p.body);
    let csrf = b.get("/admin/status").await.csrf();
    let p = b
        .upload_to(
            "/admin/setup/restore/upload",
            &[
                ("csrf", None, csrf.as_bytes()),
                ("backup", Some("x"), &backup_file()),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::CONFLICT, "{}", p.body);
    let p = b
        .post(
            "/admin/setup/restore",
            &[("csrf", csrf.as_str()), ("passphrase", GOOD)],
        )
        .await;
    assert_eq!(p.status, StatusCode::CONFLICT, "{}", p.body);
    assert!(fake.uploads().is_empty());
    assert!(!fake.calls().iter().any(|c| c.starts_with("restore")));
}

#[tokio::test]
async fn an_uploaded_backup_is_shown_then_restored_with_its_passphrase() {
    let fake = Arc::new(Fake::new(Phase::NeedDomain));
    let mut b = logged_in(&fake).await;
    let p = b.upload_backup(&backup_file()).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert_eq!(p.location.as_deref(), Some("/admin/setup/restore"));
    assert_eq!(fake.uploads().len(), 1);
    assert_eq!(std::fs::read(&fake.uploads()[0]).unwrap(), backup_file());
    // What it is, before the passphrase is asked.
    let p = b.get("/admin/setup/restore").await;
    assert_eq!(p.text_of("backup-domain"), Some("old.example.org"));
    assert_eq!(
        p.text_of("backup-date"),
        Some(crate::view::date_time(MADE).as_str())
    );
    assert!(p.text_of("backup-messages").unwrap().starts_with("inside"));
    assert!(p.body.contains("id=\"restore-form\""));
    assert!(
        p.body
            .contains("admin password of the relay the backup was made of"),
        "{}",
        p.body
    );

    // A wrong passphrase: said so, escaped; still setup mode, the upload still waits.
    let csrf = p.csrf();
    let p = b
        .post(
            "/admin/setup/restore",
            &[("csrf", csrf.as_str()), ("passphrase", "not it")],
        )
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    let error = p.text_of("restore-error").expect("an error on the page");
    assert!(error.starts_with("Wrong passphrase"), "{error}");
    assert!(!p.body.contains(EVIL));
    assert!(p.body.contains("id=\"restore-form\""), "asked again");
    assert_eq!(*fake.phase.lock().unwrap(), Phase::NeedDomain);
    // An empty one is not even tried.
    let p = b
        .post(
            "/admin/setup/restore",
            &[("csrf", csrf.as_str()), ("passphrase", "")],
        )
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    // Without the token: refused before anything is tried.
    let p = b
        .post(
            "/admin/setup/restore",
            &[("csrf", "forged"), ("passphrase", GOOD)],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    let tries: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("restore_backup"))
        .collect();
    assert_eq!(tries, vec!["restore_backup not it".to_string()]);

    // The right one: restored; the session ends, the backup's admin password holds.
    let p = b
        .post(
            "/admin/setup/restore",
            &[("csrf", csrf.as_str()), ("passphrase", GOOD)],
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(
        p.body.contains("<code>old.example.org</code>"),
        "{}",
        p.body
    );
    assert!(
        p.text_of("restored-login").is_some_and(|_| p
            .body
            .contains("admin password of the relay the backup was made of")),
        "{}",
        p.body
    );
    assert!(!b.jar.contains_key("rb_session"), "the session ended");
    assert!(fake.uploads().is_empty());
    let p = b.get("/admin/status").await;
    assert_eq!(p.location.as_deref(), Some("/admin/login"));
    let p = b.login_with(PASSWORD).await;
    assert_ne!(
        p.status,
        StatusCode::SEE_OTHER,
        "the password just set is gone"
    );
    let p = b.login_with(OLD_ADMIN).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
}

#[tokio::test]
async fn a_refused_upload_is_said_in_plain_words_and_not_kept() {
    let fake = Arc::new(Fake::new(Phase::NeedDomain));
    let mut b = logged_in(&fake).await;
    // Not a backup.
    let p = b.upload_backup(b"PK\x03\x04 a zip file").await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", p.body);
    let error = p.text_of("restore-error").expect("an error on the page");
    assert!(
        error.starts_with("This file is not a Relaybox backup"),
        "{error}"
    );
    assert!(!p.body.contains(EVIL));
    assert!(
        p.body.contains("id=\"restore-upload-form\""),
        "upload again"
    );
    assert!(fake.uploads().is_empty(), "{:?}", fake.uploads());
    // Too large for the box.
    *fake.upload_cap.lock().unwrap() = 1000;
    let p = b.upload_backup(&backup_file()).await;
    assert_eq!(p.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", p.body);
    assert!(p.text_of("restore-error").unwrap().contains("larger"));
    assert!(fake.uploads().is_empty());
    // No file chosen.
    *fake.upload_cap.lock().unwrap() = 10_000_000;
    let p = b.upload_backup(b"").await;
    assert!(
        p.text_of("restore-error")
            .unwrap()
            .contains("No backup file")
    );
    // A forged form: nothing stored.
    let p = b
        .upload_to(
            "/admin/setup/restore/upload",
            &[
                ("csrf", None, b"forged"),
                ("backup", Some("x"), &backup_file()),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert!(fake.uploads().is_empty());
    // The daemon cannot take one now.
    fake.refusals
        .lock()
        .unwrap()
        .insert("restore_upload_target", "Too little free space.".into());
    let p = b.upload_backup(&backup_file()).await;
    assert_eq!(p.text_of("restore-error"), Some("Too little free space."));
    assert!(fake.uploads().is_empty());
    assert_eq!(*fake.phase.lock().unwrap(), Phase::NeedDomain);
    // A good one, then another file chosen instead: the first is dropped.
    fake.refusals.lock().unwrap().clear();
    b.upload_backup(&backup_file()).await;
    assert_eq!(fake.uploads().len(), 1);
    let csrf = b.get("/admin/setup/restore").await.csrf();
    let p = b
        .post("/admin/setup/restore/cancel", &[("csrf", csrf.as_str())])
        .await;
    assert_eq!(p.location.as_deref(), Some("/admin/setup/restore"));
    assert!(fake.uploads().is_empty());
    assert!(
        b.get("/admin/setup/restore")
            .await
            .body
            .contains("id=\"restore-upload-form\"")
    );
}

fn form(csrf: &str, a: &str, b: &str) -> Vec<(String, String)> {
    vec![
        ("csrf".to_string(), csrf.to_string()),
        ("passphrase".to_string(), a.to_string()),
        ("confirm".to_string(), b.to_string()),
    ]
}

/// POST the download form `f`, with the "with messages" box ticked when `messages`.
async fn post(b: &mut Browser, mut f: Vec<(String, String)>, messages: bool) -> Page {
    if messages {
        f.push(("messages".into(), "on".into()));
    }
    let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    b.post("/admin/backup/download", &pairs).await
}

#[tokio::test]
async fn a_backup_is_downloaded_with_login_token_and_the_passphrase_twice() {
    let fake = Arc::new(Fake::new(Phase::Configured));
    // Without a session: to the login, nothing made.
    let mut stranger = Browser::new(&fake);
    let csrf = stranger.get("/admin/login").await.csrf();
    let p = post(&mut stranger, form(&csrf, GOOD, GOOD), true).await;
    assert_eq!(p.location.as_deref(), Some("/admin/login"));
    // Logged in, the form is on the status page.
    let mut b = logged_in(&fake).await;
    let page = b.get("/admin/status").await;
    assert!(
        page.body.contains("id=\"backup-download-form\""),
        "{}",
        page.body
    );
    let csrf = page.csrf();
    // A forged token.
    let p = post(&mut b, form("forged", GOOD, GOOD), true).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    // Two different passphrases, or none.
    let p = post(&mut b, form(&csrf, GOOD, "the backup passphrasE"), true).await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(p.body.contains("The two passphrases differ"), "{}", p.body);
    let p = post(&mut b, form(&csrf, "", ""), true).await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!fake.calls().iter().any(|c| c.starts_with("backup_now")));
    // The daemon refuses: its reason.
    fake.refusals
        .lock()
        .unwrap()
        .insert("backup_now", "the disk is full".into());
    let p = post(&mut b, form(&csrf, GOOD, GOOD), true).await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(p.body.contains("the disk is full"), "{}", p.body);
    fake.refusals.lock().unwrap().clear();
    // Made and sent as an attachment; not kept on the box.
    let p = post(&mut b, form(&csrf, GOOD, GOOD), false).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert_eq!(
        p.resp_headers.get(header::CONTENT_DISPOSITION).unwrap(),
        "attachment; filename=\"relaybox-chat.example.org-2026-12-07.backupx\""
    );
    assert_eq!(
        p.resp_headers.get(header::CONTENT_TYPE).unwrap(),
        "application/octet-stream"
    );
    assert_eq!(
        p.resp_headers.get(header::CACHE_CONTROL).unwrap(),
        "no-store"
    );
    let want = made_backup(GOOD, false);
    assert_eq!(
        p.resp_headers.get(header::CONTENT_LENGTH).unwrap(),
        &want.len().to_string()
    );
    assert!(p.body.as_bytes() == want.as_slice(), "the file's bytes");
    assert!(
        fake.calls().contains(&format!("backup_now {GOOD} false")),
        "{:?}",
        fake.calls()
    );
    assert!(fake.uploads().is_empty(), "{:?}", fake.uploads());
    let p = post(&mut b, form(&csrf, GOOD, GOOD), true).await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(fake.calls().contains(&format!("backup_now {GOOD} true")));
}
