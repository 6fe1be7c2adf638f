//! Automatic backups: the schedule, the retention (only its own files), the passphrase
//! file, the task against a real relay store with the newest backup restored elsewhere,
//! a failure on the status page and the LED, and a real FAT file system on a loop
//! device as the USB drive (as root).

use super::*;
use crate::appliance::led::LedPattern;
use crate::server::Relay;
use crate::testing::ManualClock;
use relaybox_webui::Backend;

const DAY: u64 = 86_400;

#[test]
fn runs_are_aligned_daily_at_0017_and_to_shorter_intervals() {
    let day = 20_000 * DAY;
    assert_eq!(next_run(day, DAY), day + RUN_OFFSET);
    assert_eq!(next_run(day + RUN_OFFSET - 1, DAY), day + RUN_OFFSET);
    assert_eq!(next_run(day + RUN_OFFSET, DAY), day + DAY + RUN_OFFSET);
    assert_eq!(next_run(day + DAY - 1, DAY), day + DAY + RUN_OFFSET);
    // Every 6 hours: 00:17, 06:17, 12:17, 18:17.
    assert_eq!(next_run(day + 3600, 6 * 3600), day + 6 * 3600 + RUN_OFFSET);
    assert_eq!(
        next_run(day + RUN_OFFSET, 6 * 3600),
        day + 6 * 3600 + RUN_OFFSET
    );
    // Every minute: the next whole minute; always strictly later.
    assert_eq!(next_run(day + 30, 60), day + 60);
    assert_eq!(next_run(day + 60, 60), day + 120);
    assert_eq!(next_run(0, DAY), RUN_OFFSET);
    // The expiry runs at 00:02: not at the same minute.
    assert_ne!(next_run(day, DAY), crate::expire::next_run(day));
}

/// A run missed while the box was off is made up soon after the start; a relay that
/// made its last run on time, or never made one, waits for the next aligned run.
#[test]
fn a_missed_run_is_made_up_after_the_start() {
    let day = 86_400;
    let start = 20_000 * day + 9 * 3600; // 09:00 UTC
    let due_today = 20_000 * day + RUN_OFFSET;
    let due_tomorrow = due_today + day;
    assert_eq!(first_run(start, day, None), due_tomorrow);
    assert_eq!(first_run(start, day, Some(due_today)), due_tomorrow);
    assert_eq!(
        first_run(start, day, Some(due_today - day)),
        start + CATCH_UP_AFTER,
        "yesterday's backup, today's 00:17 missed"
    );
    // Never later than the next aligned run.
    let just_before = due_tomorrow - 60;
    assert_eq!(
        first_run(just_before, day, Some(due_today - day)),
        due_tomorrow
    );
    // The file the task writes is read back.
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(read_last(dir.path()), None);
    std::fs::write(dir.path().join(LAST_FILE), "1234\n").unwrap();
    assert_eq!(read_last(dir.path()), Some(1234));
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn names_carry_the_domain_and_the_time_and_sort_by_it() {
    let t = 1_800_000_123;
    assert_eq!(
        file_name("chat.example.org", t),
        "relaybox-chat.example.org-20270115-080203.backup"
    );
    assert_eq!(
        own_stamp(&file_name("_x.test", t), "_x.test").map(str::len),
        Some(15)
    );
    assert_eq!(
        own_stamp(&file_name("a/b", t), "a/b").map(str::len),
        Some(15)
    );
    assert!(file_name("a/b", t).starts_with("relaybox-a_b-"));
}

#[test]
fn retention_keeps_the_newest_of_its_own_and_touches_nothing_else() {
    let list = names(&[
        "relaybox-chat.example-20260101-001700.backup",
        "relaybox-chat.example-20260103-001700.backup",
        "relaybox-chat.example-20260102-001700.backup",
        "relaybox-chat.example-20251231-001700.backup",
        // Not ours: another relay's, hand-made copies, partial files, anything else.
        "relaybox-other.example-20200101-001700.backup",
        "relaybox-chat.example-20200101-001700.backup.old",
        "relaybox-chat.example-2020-01-01.backup",
        "relaybox-chat.example-20200101-0017xx.backup",
        ".relaybox-chat.example-20200101-001700.backup.partial",
        "my-notes.txt",
        "replaced-1800000000.backup",
    ]);
    assert_eq!(
        to_remove(&list, "chat.example", 2),
        names(&[
            "relaybox-chat.example-20251231-001700.backup",
            "relaybox-chat.example-20260101-001700.backup",
        ])
    );
    assert!(to_remove(&list, "chat.example", 4).is_empty());
    assert_eq!(to_remove(&list, "chat.example", 0).len(), 4);
    assert!(to_remove(&list, "nobody.example", 1).is_empty());
}

fn settings(dir: &Path, target: BackupTarget) -> BackupConfig {
    BackupConfig {
        target,
        every: Duration::from_secs(60),
        keep: 2,
        messages: true,
        passphrase_file: dir.join("backup-passphrase"),
    }
}

#[test]
fn without_a_passphrase_backups_are_off_and_say_why() {
    let t = tempfile::tempdir().unwrap();
    let s = settings(t.path(), BackupTarget::Dir(t.path().join("b")));
    let auto = AutoBackup::new(s.clone());
    let off = auto.report().off.expect("off without a passphrase");
    assert!(off.contains("no passphrase is set"), "{off}");
    assert!(off.contains("status page"), "{off}");
    assert_eq!(auto.report().next, None);
    // An empty file is no passphrase either.
    std::fs::write(&s.passphrase_file, "\n").unwrap();
    let off = auto.report().off.expect("off with an empty file");
    assert!(off.contains("is empty"), "{off}");
    // Written by the page: private, first line only.
    write_passphrase(&s.passphrase_file, "correct horse battery").unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&s.passphrase_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    use age::secrecy::ExposeSecret;
    assert_eq!(
        read_passphrase(&s.passphrase_file).unwrap().expose_secret(),
        "correct horse battery"
    );
    assert_eq!(auto.report().off, None);
    // Switched off: says so.
    auto.set_settings(settings(t.path(), BackupTarget::Off));
    assert!(auto.report().off.unwrap().contains("off"));
}

/// A relay (IP-only, two accounts, a message) with its config file, on a clock moved by
/// hand.
/// `extra`: more chatmail.ini lines (the backup keys).
async fn relay(root: &Path, clock: Arc<ManualClock>, extra: &str) -> (Arc<Relay>, PathBuf) {
    let data = root.join("data");
    let ini = root.join("chatmail.ini");
    std::fs::create_dir_all(root).unwrap();
    let text = format!(
        "[params]\nmail_domain = 127.0.0.1\ndata_dir = {}\nmdns_name =\n{extra}",
        data.display()
    );
    std::fs::write(&ini, &text).unwrap();
    let mut config = crate::testing::config(&data, "127.0.0.1");
    config.backup = Config::parse(&text).unwrap().config.backup;
    let relay = Relay::open_with_clock(config, clock).unwrap();
    for who in ["alice", "bob"] {
        relay
            .store
            .create_account(&format!("{who}@[127.0.0.1]"), "{SHA512-CRYPT}$6$x", 1)
            .await
            .unwrap();
    }
    relay
        .store
        .deliver(crate::store::Delivery {
            sender: "bob@[127.0.0.1]".into(),
            local: vec!["alice@[127.0.0.1]".into()],
            remote: Vec::new(),
            body: crate::message::Parsed::legacy(b"Subject: [...]\r\n\r\nsecret\r\n".to_vec()),
            received: 1,
        })
        .await
        .unwrap();
    (relay, ini)
}

/// Wait (bounded) until `done`.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_task_backs_up_a_running_relay_on_schedule_and_the_newest_restores() {
    let t = tempfile::tempdir().unwrap();
    let start = 20_000 * DAY + 10;
    let clock = ManualClock::at(start);
    let (relay, ini) = relay(&t.path().join("old"), clock.clone(), "").await;
    let target = t.path().join("backups");
    std::fs::create_dir_all(&target).unwrap();
    // Not the task's: never touched.
    std::fs::write(target.join("my-notes.txt"), b"keep me").unwrap();
    std::fs::write(
        target.join("relaybox-other.example-20200101-001700.backup"),
        b"another relay's",
    )
    .unwrap();
    let s = settings(t.path(), BackupTarget::Dir(target.clone()));
    write_passphrase(&s.passphrase_file, "correct horse battery").unwrap();
    let auto = AutoBackup::new(s);
    let job = Job {
        config: relay.config.clone(),
        config_path: ini,
        store: relay.store.clone(),
        clock: clock.clone(),
    };
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let task = tokio::spawn(run_polling(
        auto.clone(),
        job,
        {
            let runs = runs.clone();
            move || {
                runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        },
        Duration::from_millis(10),
    ));
    let first = next_run(start, 60);
    until("the next run is planned", || {
        auto.report().next == Some(first)
    })
    .await;
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 0);
    for i in 0..3u64 {
        // Mail keeps arriving between backups.
        relay
            .store
            .create_account(&format!("new{i}@[127.0.0.1]"), "h", 1)
            .await
            .unwrap();
        clock.set(first + i * 60);
        let want = i as usize + 1;
        until("a backup ran", || {
            runs.load(std::sync::atomic::Ordering::SeqCst) == want
        })
        .await;
        let r = auto.report();
        let last = r.last.expect("a result");
        let written = last.result.expect("written");
        assert_eq!(last.at, first + i * 60);
        assert!(
            written
                .file
                .ends_with(&file_name("127.0.0.1", first + i * 60))
        );
        assert!(written.bytes > 0);
        assert_eq!(written.removed, usize::from(i == 2));
        assert_eq!(read_last(&relay.config.data_dir), Some(first + i * 60));
    }
    task.abort();
    // The newest two of its own, the others untouched.
    let own: Vec<String> = [1, 2]
        .iter()
        .map(|i| file_name("127.0.0.1", first + i * 60))
        .collect();
    let mut want = own.clone();
    want.push("my-notes.txt".into());
    want.push("relaybox-other.example-20200101-001700.backup".into());
    want.sort();
    assert_eq!(listing(&target), want);
    assert_eq!(
        std::fs::read(target.join("my-notes.txt")).unwrap(),
        b"keep me"
    );

    // The newest restores on a new machine, with what the store held at that moment.
    let new_root = t.path().join("new");
    let new_data = new_root.join("data");
    std::fs::create_dir_all(&new_root).unwrap();
    let new_ini = new_root.join("chatmail.ini");
    std::fs::write(
        &new_ini,
        format!("[params]\ndata_dir = {}\n", new_data.display()),
    )
    .unwrap();
    let new_config = Config::parse_for_serve(&std::fs::read_to_string(&new_ini).unwrap())
        .unwrap()
        .config;
    let restored = crate::backup::restore(
        &new_config,
        &new_ini,
        &target.join(&own[1]),
        &SecretString::from("correct horse battery".to_string()),
        false,
        first + 200,
    )
    .await
    .unwrap();
    assert_eq!(restored.header.mail_domain, "127.0.0.1");
    assert_eq!(restored.accounts, 5);
    let store = Store::open(&new_data.join(crate::store::STORE_FILE)).unwrap();
    for who in ["alice", "bob", "new0", "new1", "new2"] {
        assert!(
            store
                .account(&format!("{who}@[127.0.0.1]"))
                .unwrap()
                .is_some(),
            "{who}"
        );
    }
    assert!(
        store
            .body("alice@[127.0.0.1]", "INBOX", 1)
            .unwrap()
            .is_some()
    );
    store.close();
}

/// "Back up now" right after new settings were saved: the task wakes for both at once and
/// `select!` may take the wake-up first; the run must still use the new settings (it once
/// wrote with the old ones, and "Back up now" after fixing the directory failed again —
/// the flake of `a_failure_shows_on_the_status_page…`). Eight rounds: with the old code
/// each round took the old settings half of the time.
#[tokio::test(flavor = "current_thread")]
async fn back_up_now_right_after_new_settings_uses_them() {
    let t = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(20_000 * DAY + 10);
    let (relay, ini) = relay(&t.path().join("relay"), clock.clone(), "").await;
    let s = settings(t.path(), BackupTarget::Dir(t.path().join("first")));
    write_passphrase(&s.passphrase_file, "correct horse battery").unwrap();
    let auto = AutoBackup::new(s.clone());
    let job = Job {
        config: relay.config.clone(),
        config_path: ini,
        store: relay.store.clone(),
        clock: clock.clone(),
    };
    let task = tokio::spawn(run_polling(
        auto.clone(),
        job,
        || {},
        Duration::from_secs(3600),
    ));
    until("the task waits", || auto.report().next.is_some()).await;
    for round in 0..8 {
        let dir = t.path().join(format!("dir{round}"));
        auto.set_settings(BackupConfig {
            target: BackupTarget::Dir(dir.clone()),
            ..s.clone()
        });
        auto.run_now();
        until("the run", || {
            auto.report().last.is_some_and(|l| {
                l.result
                    .as_ref()
                    .is_ok_and(|w| w.file.contains(&format!("dir{round}")))
            }) && !auto.report().running
        })
        .await;
        assert_eq!(listing(&dir).len(), 1, "round {round}");
        // The task is back in its wait before the next round.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
}

/// The status page's appliance (the relay's config file) with a claimed admin and the
/// relay attached.
async fn appliance_with(relay: Arc<Relay>, ini: &Path) -> Arc<crate::appliance::Appliance> {
    let text = std::fs::read_to_string(ini).unwrap();
    let config = Config::parse_for_serve(&text).unwrap().config;
    let a = crate::appliance::Appliance::new(config, Some(ini.to_path_buf()), false).unwrap();
    a.set_admin_password("correct horse battery").await.unwrap();
    a.attach(relay);
    a
}

// Four workers: the appliance's own tasks must not starve the backup task on a busy
// machine (it once waited over a minute with two while the whole suite ran).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failure_shows_on_the_status_page_and_degrades_the_led_until_it_works_again() {
    let t = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(20_000 * DAY + 10);
    // A directory that cannot be made (a file is in the way; root may write anywhere).
    std::fs::write(t.path().join("a-file"), b"x").unwrap();
    let bad = t.path().join("a-file/backups");
    let extra = format!(
        "backup_dir = {}\nbackup_passphrase_file = {}\n",
        bad.display(),
        t.path().join("backup-passphrase").display()
    );
    let (relay, ini) = relay(&t.path().join("relay"), clock, &extra).await;
    let a = appliance_with(relay.clone(), &ini).await;
    let task = a.start_auto_backups(&relay);
    assert_eq!(*a.led_patterns().borrow(), LedPattern::Running);
    // No passphrase yet: off, with the reason, not a failure.
    let info = a.backups();
    assert!(info.available);
    assert!(!info.passphrase_set);
    assert!(info.off_reason.unwrap().contains("no passphrase"));
    assert!(
        a.set_backup_passphrase("short".into())
            .await
            .unwrap_err()
            .message
            .contains("too short")
    );
    a.set_backup_passphrase("correct horse battery".into())
        .await
        .unwrap();
    let info = a.backups();
    assert!(info.passphrase_set);
    assert_eq!(info.off_reason, None);
    assert!(info.next.is_some());

    a.auto_backup_now().unwrap();
    until("the backup ran", || a.backups().last.is_some()).await;
    let last = a.backups().last.unwrap();
    assert!(last.file.is_empty());
    assert!(
        last.error.contains("cannot make the directory") && last.error.contains("a-file"),
        "{}",
        last.error
    );
    assert_eq!(*a.led_patterns().borrow(), LedPattern::Degraded);
    let status = a.status().await;
    let line = status
        .services
        .iter()
        .find(|s| s.name == "Automatic backup")
        .expect("a line in the services");
    assert_eq!(line.status, relaybox_webui::CheckStatus::Error);
    assert!(line.detail.contains("cannot make the directory"));

    // The page fixes the directory (written into chatmail.ini, in effect at once).
    let good = t.path().join("good");
    let refused = a
        .set_backup_settings(relaybox_webui::BackupSettings {
            target: "dir".into(),
            dir: good.display().to_string(),
            every: "10s".into(),
            keep: "3".into(),
            messages: false,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.field, "every");
    assert!(
        refused.message.contains("backup_every"),
        "{}",
        refused.message
    );
    a.set_backup_settings(relaybox_webui::BackupSettings {
        target: "dir".into(),
        dir: good.display().to_string(),
        every: "12h".into(),
        keep: "3".into(),
        messages: false,
    })
    .await
    .unwrap();
    let text = std::fs::read_to_string(&ini).unwrap();
    let loaded = Config::parse(&text).unwrap().config.backup;
    assert_eq!(loaded.target, BackupTarget::Dir(good.clone()));
    assert_eq!(loaded.every, Duration::from_secs(12 * 3600));
    assert_eq!((loaded.keep, loaded.messages), (3, false));
    let info = a.backups();
    assert_eq!((info.every.as_str(), info.keep), ("12h", 3));
    a.auto_backup_now().unwrap();
    // Generous: a starved task is slow, a stuck one never comes (see the message).
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while !a.backups().last.is_some_and(|l| l.error.is_empty()) {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out: the second backup ran; last result {:?}, running {}, task ended {}",
            a.backups().last,
            a.backups().running,
            task.is_finished()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last = a.backups().last.unwrap();
    assert!(
        last.file.starts_with(&good.display().to_string()),
        "{}",
        last.file
    );
    assert_eq!(listing(&good).len(), 1);
    assert!(
        !crate::backup::list(&good.join(&listing(&good)[0]))
            .unwrap()
            .messages
    );
    assert_eq!(*a.led_patterns().borrow(), LedPattern::Running);
    assert!(
        !a.status()
            .await
            .services
            .iter()
            .any(|s| s.name == "Automatic backup")
    );
    task.abort();
}

/// Run a command, panicking with its output when it fails.
fn sh(cmd: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Detaches the loop device at the end, whatever happened.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.0])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usb_drive_is_mounted_only_while_a_backup_is_written() {
    // SAFETY: geteuid only reads the process's user id.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: mounting a loop device needs root");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("stick.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(64 * 1024 * 1024)
        .unwrap();
    // FAT as on most sticks when this kernel has it; else ext4 (the kernel of these test
    // machines has no vfat), which the same code mounts.
    let kernel = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if kernel.split_whitespace().any(|f| f == "vfat") {
        sh("mkfs.vfat", &[image.to_str().unwrap()]);
    } else {
        println!("this kernel has no vfat: the drive is formatted ext4");
        sh("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]);
    }
    let device = Loop(sh("losetup", &["-f", "--show", image.to_str().unwrap()]));
    let clock = ManualClock::at(20_000 * DAY + 10);
    let (relay, ini) = relay(&t.path().join("relay"), clock.clone(), "").await;
    let mut s = settings(t.path(), BackupTarget::Usb);
    s.keep = 1;
    write_passphrase(&s.passphrase_file, "correct horse battery").unwrap();
    let path = PathBuf::from(&device.0);
    let auto = AutoBackup::with_usb(s.clone(), Box::new(move || Ok(path.clone())));
    let job = Job {
        config: relay.config.clone(),
        config_path: ini,
        store: relay.store.clone(),
        clock,
    };
    let mount = relay.config.data_dir.join(".usb-backup");
    let mounts = || std::fs::read_to_string("/proc/self/mounts").unwrap();
    for at in [20_000 * DAY + 100, 20_000 * DAY + 200] {
        let outcome = once(&auto, &job, &s, at).await;
        let written = outcome.result.expect("written to the drive");
        assert!(written.file.contains(USB_DIR), "{}", written.file);
        assert!(
            !mounts().contains(&mount.display().to_string()),
            "unmounted afterwards"
        );
    }
    // On the drive: the newest only (keep = 1), readable after mounting it again.
    let look = t.path().join("look");
    std::fs::create_dir_all(&look).unwrap();
    let files = super::super::usb::with_mounted(Path::new(&device.0), &look, |root| {
        let dir = root.join(USB_DIR);
        let names = listing(&dir);
        let header = crate::backup::list(&dir.join(&names[0])).unwrap();
        (names, header)
    })
    .unwrap();
    assert_eq!(files.0, vec![file_name("127.0.0.1", 20_000 * DAY + 200)]);
    assert_eq!(files.1.mail_domain, "127.0.0.1");
    assert!(!mounts().contains(&look.display().to_string()));

    // No drive: a failure in plain words.
    let gone = AutoBackup::with_usb(
        s.clone(),
        Box::new(|| super::super::usb::find(Path::new("/nonexistent"), Path::new("/dev"))),
    );
    let outcome = once(&gone, &job, &s, 20_000 * DAY + 300).await;
    assert!(outcome.result.unwrap_err().contains("no USB drive"));
}
