//! Backups against the real binary (issue 17 item 1): `relaybox backup` of a RUNNING relay
//! (its store snapshot comes through the control socket while it serves), `--list` without
//! the passphrase, and `relaybox restore` into another, stopped relay: the accounts log in
//! with their old passwords and the messages are there. A running target, a wrong
//! passphrase and a changed file are refused with a clear message and change nothing.

use std::process::Output;

use relaybox_blackbox::mail::stored_message_id;
use relaybox_blackbox::relay::{arg, run_tool, tool_text};
use relaybox_blackbox::{Account, Imap, Relay, Smtp, create_account, encrypted_mail};

const PASSPHRASE: &str = "a long and secret passphrase";

async fn relaybox(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_tool(args, env, std::time::Duration::from_secs(120)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_relay_is_backed_up_and_comes_back_elsewhere() {
    let old = Relay::start(&[]).await;
    let (a, b) = (Account::random(), Account::random());
    create_account(&old, &b).await;
    let mut s = Smtp::login(&old, &a).await;
    let m = encrypted_mail(&a.addr, &[&b.addr]);
    assert_eq!(s.send_mail(&a.addr, &[&b.addr], &m.bytes).await.code, 250);
    s.quit().await;

    let work = tempfile::tempdir().unwrap();
    let pass_file = work.path().join("passphrase");
    std::fs::write(&pass_file, format!("{PASSPHRASE}\n")).unwrap();
    let backup = work.path().join("relay.backup");
    let made = relaybox(
        &[
            "backup",
            "--config",
            arg(&old.config_path()),
            "--out",
            arg(&backup),
            "--passphrase-file",
            arg(&pass_file),
        ],
        &[],
    )
    .await;
    assert!(made.status.success(), "backup: {}", tool_text(&made));
    // The relay went on serving while it was backed up.
    Smtp::login(&old, &a).await.quit().await;
    let raw = std::fs::read(&backup).unwrap();
    assert!(
        !raw.windows(b.addr.len()).any(|w| w == b.addr.as_bytes()),
        "no address in clear"
    );

    let listed = relaybox(&["backup", "--list", arg(&backup)], &[]).await;
    assert!(listed.status.success(), "{}", tool_text(&listed));
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(listing.contains("mail domain:   127.0.0.1"), "{listing}");
    assert!(listing.contains("messages:      inside"), "{listing}");

    // Another machine: a relay that ran once, now stopped.
    let mut new = Relay::start(&[]).await;
    let new_config = new.config_path();
    let restore_args = ["restore", "--config", arg(&new_config), arg(&backup)];
    // Refused while it runs.
    let running = relaybox(&restore_args, &[("RELAYBOX_BACKUP_PASSPHRASE", PASSPHRASE)]).await;
    assert_eq!(running.status.code(), Some(1), "{}", tool_text(&running));
    assert!(
        tool_text(&running).contains("stop it before a restore"),
        "{}",
        tool_text(&running)
    );
    new.stop().await;
    // A wrong passphrase, and a changed byte: refused, nothing changed.
    let wrong = relaybox(&restore_args, &[("RELAYBOX_BACKUP_PASSPHRASE", "not it")]).await;
    assert_eq!(wrong.status.code(), Some(1), "{}", tool_text(&wrong));
    assert!(
        tool_text(&wrong).contains("wrong passphrase"),
        "{}",
        tool_text(&wrong)
    );
    let changed = work.path().join("changed.backup");
    let mut bytes = raw.clone();
    let at = bytes.len() - 50;
    bytes[at] ^= 0x40;
    std::fs::write(&changed, &bytes).unwrap();
    let damaged = relaybox(
        &["restore", "--config", arg(&new_config), arg(&changed)],
        &[("RELAYBOX_BACKUP_PASSPHRASE", PASSPHRASE)],
    )
    .await;
    assert_eq!(damaged.status.code(), Some(1), "{}", tool_text(&damaged));
    assert!(
        tool_text(&damaged).contains("damaged"),
        "{}",
        tool_text(&damaged)
    );
    // The real one.
    let restored = relaybox(&restore_args, &[("RELAYBOX_BACKUP_PASSPHRASE", PASSPHRASE)]).await;
    assert!(
        restored.status.success(),
        "restore: {}",
        tool_text(&restored)
    );
    assert!(
        String::from_utf8_lossy(&restored.stdout).contains("2 account(s)"),
        "{}",
        tool_text(&restored)
    );
    new.restart().await;
    // The old passwords work; a wrong one does not create or open anything.
    let mut c = Imap::connect_tls(new.imaps_addr()).await;
    c.greeting().await;
    let r = c.login(&b.addr, "not-the-password").await;
    assert_eq!(r.status, "NO", "a wrong password after the restore: {r}");
    drop(c);
    Smtp::login(&new, &a).await.quit().await;
    let inbox = Imap::fetch_inbox(&new, &b).await;
    assert_eq!(inbox.len(), 1, "the message came along");
    assert_eq!(
        stored_message_id(&inbox[0]).as_deref(),
        Some(m.message_id.as_str())
    );
}
