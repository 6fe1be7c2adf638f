//! Backups end to end on stopped relays: what goes in comes back; a wrong passphrase, a
//! damaged, cut-short or newer backup, another domain, or an unconfirmed replacement
//! changes nothing.

use super::*;
use crate::message::Parsed;
use crate::store::Delivery;

const NOW: u64 = 1_800_000_000;

struct Relay {
    _dir: tempfile::TempDir,
    root: PathBuf,
    config: Config,
    config_path: PathBuf,
}

fn relay(domain: &str) -> Relay {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let data = root.join("data");
    let config_path = root.join("chatmail.ini");
    let text = format!(
        "[params]\n# the operator's comment\nmail_domain = {domain}\ndata_dir = {}\nmax_user_send_per_minute = 77\n",
        data.display()
    );
    std::fs::write(&config_path, text).unwrap();
    let config = Config::parse(&std::fs::read_to_string(&config_path).unwrap())
        .unwrap()
        .config;
    crate::private::dir(&data).unwrap();
    Relay {
        _dir: dir,
        root,
        config,
        config_path,
    }
}

/// A relay with two accounts, a message in one INBOX, one queued, secrets and files.
async fn populate(r: &Relay) {
    let data = &r.config.data_dir;
    let s = Store::open(&data.join(STORE_FILE)).unwrap();
    s.create_account("alice@chat.example", "{SHA512-CRYPT}$6$a", NOW)
        .await
        .unwrap();
    s.create_account("bob@chat.example", "{SHA512-CRYPT}$6$b", NOW)
        .await
        .unwrap();
    s.secret("dkim", || b"the dkim key".to_vec()).unwrap();
    s.deliver(Delivery {
        sender: "bob@chat.example".into(),
        local: vec!["alice@chat.example".into()],
        remote: vec!["carol@far.example".into()],
        body: Parsed::legacy(b"Subject: x\r\n\r\nencrypted\r\n".to_vec()),
        received: NOW,
    })
    .await
    .unwrap();
    s.flush().await.unwrap();
    s.close();
    std::fs::write(data.join("admin.json"), b"{\"password_hash\":\"$6$admin\"}").unwrap();
    std::fs::create_dir_all(data.join("acme")).unwrap();
    std::fs::write(data.join("acme/account.json"), b"acme account").unwrap();
    std::fs::write(data.join("acme/cert.pem"), b"certificate").unwrap();
    // Not backed up: belongs to the machine.
    std::fs::create_dir_all(data.join("update")).unwrap();
    std::fs::write(data.join("update/state.json"), b"slot a").unwrap();
}

fn pass(s: &str) -> SecretString {
    SecretString::from(s.to_string())
}

async fn backup_of(r: &Relay, messages: bool) -> PathBuf {
    let out = r.root.join("relay.backup");
    make(
        &r.config,
        &r.config_path,
        &out,
        &pass("correct horse"),
        messages,
        NOW,
    )
    .await
    .unwrap();
    out
}

fn open_store(r: &Relay) -> Store {
    Store::open(&r.config.data_dir.join(STORE_FILE)).unwrap()
}

#[tokio::test]
async fn a_backup_comes_back_whole_on_a_new_machine() {
    let old = relay("chat.example");
    populate(&old).await;
    let file = backup_of(&old, true).await;
    let header = list(&file).unwrap();
    assert_eq!(header.mail_domain, "chat.example");
    assert_eq!(header.created, NOW);
    assert!(header.messages);
    // The header is readable; the rest is not (no address, no secret in clear).
    let raw = std::fs::read(&file).unwrap();
    for secret in [
        &b"alice@chat"[..],
        b"the dkim key",
        b"certificate",
        b"$6$admin",
    ] {
        assert!(!raw.windows(secret.len()).any(|w| w == secret));
    }
    // A new machine: setup mode, another data directory.
    let new = relay("placeholder.invalid");
    let restored = restore(
        &new.config,
        &new.config_path,
        &file,
        &pass("correct horse"),
        false,
        NOW,
    )
    .await
    .unwrap();
    assert_eq!(restored.accounts, 2);
    assert!(restored.replaced_backup.is_none());
    let s = open_store(&new);
    let alice = s.account("alice@chat.example").unwrap().unwrap();
    assert_eq!(alice.password_hash, "{SHA512-CRYPT}$6$a");
    assert!(s.body("alice@chat.example", "INBOX", 1).unwrap().is_some());
    assert_eq!(s.queued().unwrap().len(), 1);
    assert_eq!(s.secret("dkim", Vec::new).unwrap(), b"the dkim key");
    let data = &new.config.data_dir;
    assert_eq!(
        std::fs::read(data.join("acme/cert.pem")).unwrap(),
        b"certificate"
    );
    assert_eq!(
        std::fs::read(data.join("admin.json")).unwrap(),
        b"{\"password_hash\":\"$6$admin\"}"
    );
    assert!(!data.join("update").exists());
    // The config is the old one (comment and keys kept) on the new data directory.
    let text = std::fs::read_to_string(&new.config_path).unwrap();
    assert!(text.contains("# the operator's comment"), "{text}");
    assert!(text.contains("mail_domain = chat.example"), "{text}");
    assert!(text.contains("max_user_send_per_minute = 77"), "{text}");
    let config = Config::parse(&text).unwrap().config;
    assert_eq!(config.data_dir, new.config.data_dir);
    assert!(!data.join(STAGING).exists() && !data.join(REPLACED).exists());
}

#[tokio::test]
async fn without_messages_the_accounts_stay_and_the_mail_does_not_travel() {
    let old = relay("chat.example");
    populate(&old).await;
    let file = backup_of(&old, false).await;
    assert!(!list(&file).unwrap().messages);
    let new = relay("placeholder.invalid");
    restore(
        &new.config,
        &new.config_path,
        &file,
        &pass("correct horse"),
        false,
        NOW,
    )
    .await
    .unwrap();
    let s = open_store(&new);
    assert_eq!(s.account_count().unwrap(), 2);
    assert!(s.body("alice@chat.example", "INBOX", 1).unwrap().is_none());
    assert!(s.queued().unwrap().is_empty());
}

/// The relay's config and files (a digest of each; the store by its accounts, since
/// opening a store writes to its file) — equal before and after means nothing changed.
fn fingerprint(r: &Relay) -> Vec<(String, String)> {
    use sha2::Digest;
    let digest = |bytes: &[u8]| format!("{:x}", sha2::Sha256::digest(bytes));
    let mut out = vec![(
        "config".to_string(),
        digest(&std::fs::read(&r.config_path).unwrap()),
    )];
    let mut stack = vec![r.config.data_dir.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.display().to_string();
            if p.is_dir() {
                stack.push(p);
            } else if name.ends_with(STORE_FILE) {
                let store = open_store(r);
                let accounts = store.accounts().unwrap();
                store.close();
                out.push((name, format!("{accounts:?}")));
            } else if !name.ends_with(".wal") {
                out.push((name, digest(&std::fs::read(&p).unwrap())));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn bad_backups_change_nothing() {
    let old = relay("chat.example");
    populate(&old).await;
    let file = backup_of(&old, true).await;
    let bytes = std::fs::read(&file).unwrap();
    let target = relay("placeholder.invalid");
    let before = fingerprint(&target);
    let attempt = |path: PathBuf, passphrase: &'static str| {
        let target = &target;
        async move {
            restore(
                &target.config,
                &target.config_path,
                &path,
                &pass(passphrase),
                true,
                NOW,
            )
            .await
        }
    };
    // Wrong passphrase.
    let err = attempt(file.clone(), "wrong horse").await.unwrap_err();
    assert!(matches!(err, BackupError::WrongPassphrase), "{err}");
    // Cut short, at several places.
    for cut in [bytes.len() / 3, bytes.len() - 20, bytes.len() - 1] {
        let p = target.root.join(format!("cut{cut}"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let err = attempt(p, "correct horse").await.unwrap_err();
        assert!(
            matches!(err, BackupError::Damaged(_)),
            "cut at {cut}: {err}"
        );
    }
    // One byte changed inside the encrypted part.
    let mut changed = bytes.clone();
    let at = bytes.len() - 100;
    changed[at] ^= 1;
    let p = target.root.join("changed");
    std::fs::write(&p, &changed).unwrap();
    let err = attempt(p, "correct horse").await.unwrap_err();
    assert!(matches!(err, BackupError::Damaged(_)), "{err}");
    // Not a backup at all.
    let p = target.root.join("photo.jpg");
    std::fs::write(&p, b"\xff\xd8\xff\xe0 a photo").unwrap();
    let err = attempt(p, "correct horse").await.unwrap_err();
    assert!(matches!(err, BackupError::NotABackup), "{err}");
    // Made by a newer Relaybox.
    let text = String::from_utf8_lossy(&bytes[..200]).into_owned();
    let newer_version = text.replacen(
        &format!("\"relay_version\":\"{}\"", env!("CARGO_PKG_VERSION")),
        "\"relay_version\":\"99.0.0\"",
        1,
    );
    assert_ne!(text, newer_version);
    let mut newer_bytes = newer_version.into_bytes();
    newer_bytes.extend_from_slice(&bytes[200..]);
    let p = target.root.join("newer");
    std::fs::write(&p, &newer_bytes).unwrap();
    let err = attempt(p, "correct horse").await.unwrap_err();
    assert!(matches!(err, BackupError::NewerRelay { .. }), "{err}");
    // A newer format.
    let mut newer_format = b"relaybox-backup 2\n".to_vec();
    newer_format.extend_from_slice(&bytes[18..]);
    let p = target.root.join("format2");
    std::fs::write(&p, &newer_format).unwrap();
    let err = attempt(p, "correct horse").await.unwrap_err();
    assert!(matches!(err, BackupError::NewerFormat(2)), "{err}");
    assert_eq!(fingerprint(&target), before, "nothing changed");
}

#[tokio::test]
async fn an_existing_relay_is_replaced_only_when_confirmed_and_is_kept() {
    let old = relay("chat.example");
    populate(&old).await;
    let file = backup_of(&old, true).await;
    // The same domain, with an account of its own.
    let target = relay("chat.example");
    {
        let s = open_store(&target);
        s.create_account("dave@chat.example", "h", NOW)
            .await
            .unwrap();
        s.flush().await.unwrap();
        s.close();
    }
    let before = fingerprint(&target);
    let err = restore(
        &target.config,
        &target.config_path,
        &file,
        &pass("correct horse"),
        false,
        NOW,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, BackupError::NeedsConfirmation { .. }),
        "{err}"
    );
    assert_eq!(fingerprint(&target), before);
    let done = restore(
        &target.config,
        &target.config_path,
        &file,
        &pass("correct horse"),
        true,
        NOW,
    )
    .await
    .unwrap();
    let kept = done
        .replaced_backup
        .expect("a backup of the replaced relay");
    let s = open_store(&target);
    assert!(s.account("alice@chat.example").unwrap().is_some());
    assert!(s.account("dave@chat.example").unwrap().is_none());
    s.close();
    // What was replaced comes back from its own backup.
    let elsewhere = relay("placeholder.invalid");
    restore(
        &elsewhere.config,
        &elsewhere.config_path,
        &kept,
        &pass("correct horse"),
        false,
        NOW,
    )
    .await
    .unwrap();
    assert!(
        open_store(&elsewhere)
            .account("dave@chat.example")
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn a_backup_of_another_domain_does_not_replace_a_relay_with_accounts() {
    let old = relay("chat.example");
    populate(&old).await;
    let file = backup_of(&old, true).await;
    let target = relay("other.example");
    {
        let s = open_store(&target);
        s.create_account("erin@other.example", "h", NOW)
            .await
            .unwrap();
        s.flush().await.unwrap();
        s.close();
    }
    let before = fingerprint(&target);
    let err = restore(
        &target.config,
        &target.config_path,
        &file,
        &pass("correct horse"),
        true,
        NOW,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, BackupError::OtherDomain { accounts: 1, .. }),
        "{err}"
    );
    assert_eq!(fingerprint(&target), before);
}

#[test]
fn names_inside_a_backup_cannot_leave_the_staging_directory() {
    let staging = Path::new("/s");
    assert!(staged_path(staging, "chatmail.ini").is_ok());
    assert!(staged_path(staging, "data/acme/cert.pem").is_ok());
    for bad in [
        "data/../x",
        "data//etc/passwd",
        "/etc/passwd",
        "data/update/state",
        "x",
    ] {
        assert!(staged_path(staging, bad).is_err(), "{bad}");
    }
}

#[test]
fn versions_compare_by_number() {
    assert!(newer("0.10.0", "0.9.3"));
    assert!(!newer("0.1.0", "0.1.0"));
    assert!(!newer("0.1.0-rc1", "0.1.0"));
    assert!(newer("1.0.0", "0.99.99"));
}

/// Restored as root into a relay that runs as its own user: the restored files are that
/// user's, like the data directory (else the relay could not open its own store).
#[tokio::test]
async fn restored_files_belong_to_the_data_directorys_owner() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: giving files to another user needs root");
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let old = relay("chat.example");
    populate(&old).await;
    let file = backup_of(&old, true).await;
    let new = relay("placeholder.invalid");
    let data = &new.config.data_dir;
    std::os::unix::fs::chown(data, Some(65534), Some(65534)).unwrap();
    restore(
        &new.config,
        &new.config_path,
        &file,
        &pass("correct horse"),
        false,
        NOW,
    )
    .await
    .unwrap();
    for p in [
        data.join(STORE_FILE),
        data.join("admin.json"),
        data.join("acme"),
        data.join("acme/cert.pem"),
    ] {
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!((m.uid(), m.gid()), (65534, 65534), "{}", p.display());
    }
}

/// A relay in setup mode (no `mail_domain`) on its own data directory.
fn setup_relay() -> Relay {
    let r = relay("placeholder.invalid");
    let text = format!("[params]\ndata_dir = {}\n", r.config.data_dir.display());
    std::fs::write(&r.config_path, &text).unwrap();
    let config = Config::parse_for_serve(&text).unwrap().config;
    assert!(config.setup);
    Relay { config, ..r }
}

#[tokio::test]
async fn the_setup_mode_daemon_restores_over_its_claim_and_keeps_what_it_replaced() {
    let old = relay("chat.example");
    populate(&old).await;
    let file = backup_of(&old, true).await;
    // Not in setup mode: the setup daemon's entry refuses.
    let running = relay("chat.example");
    let err = restore_in_setup_mode(
        &running.config,
        &running.config_path,
        &file,
        &pass("correct horse"),
        true,
        NOW,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BackupError::Running(_)), "{err}");
    // A box just claimed in the wizard (and a store left from earlier, no daemon open).
    let new = setup_relay();
    let data = new.config.data_dir.clone();
    std::fs::write(data.join("admin.json"), b"{\"password_hash\":\"$6$new\"}").unwrap();
    let s = Store::open(&data.join(STORE_FILE)).unwrap();
    s.create_account("earlier@x.example", "{SHA512-CRYPT}$6$e", NOW)
        .await
        .unwrap();
    s.flush().await.unwrap();
    s.close();
    let restored = restore_in_setup_mode(
        &new.config,
        &new.config_path,
        &file,
        &pass("correct horse"),
        true,
        NOW + 1,
    )
    .await
    .unwrap();
    assert_eq!(restored.accounts, 2);
    assert_eq!(
        std::fs::read(data.join("admin.json")).unwrap(),
        b"{\"password_hash\":\"$6$admin\"}"
    );
    let text = std::fs::read_to_string(&new.config_path).unwrap();
    assert!(text.contains("mail_domain = chat.example"), "{text}");
    // What it replaced was read from the store file and kept.
    let kept = restored
        .replaced_backup
        .expect("a backup of what was replaced");
    assert_eq!(list(&kept).unwrap().mail_domain, "");
    let back = setup_relay();
    restore(
        &back.config,
        &back.config_path,
        &kept,
        &pass("correct horse"),
        false,
        NOW,
    )
    .await
    .unwrap();
    let s = open_store(&back);
    assert!(s.account("earlier@x.example").unwrap().is_some());
}
