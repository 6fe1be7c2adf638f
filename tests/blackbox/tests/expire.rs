//! `relaybox expire --config FILE [--now UNIX]` (spec relay.md §15): run on the store of
//! a stopped relay with "now" moved forward, it removes expired messages (EXP-2) and
//! then inactive accounts (EXP-1), prints what it removed and exits 0; a bad config
//! exits 2 naming the key; a store held by a running relay is refused with exit 1.

use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use relaybox_blackbox::relay::binary;
use relaybox_blackbox::{Account, Imap, Relay, Smtp, create_account, encrypted_mail};

const DAY: u64 = 86_400;

/// Run `relaybox expire` (bounded: the command never waits for anything).
fn expire(config: &std::path::Path, now: Option<u64>) -> Output {
    let mut cmd = Command::new(binary());
    cmd.arg("expire").arg("--config").arg(config);
    if let Some(now) = now {
        cmd.arg("--now").arg(now.to_string());
    }
    cmd.env("NO_COLOR", "1");
    cmd.output().expect("run relaybox expire")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_command_removes_old_mail_then_inactive_accounts() {
    let mut relay = Relay::start(&[]).await;
    let (a, b) = (Account::random(), Account::random());
    for acc in [&a, &b] {
        create_account(&relay, acc).await;
        let mail = encrypted_mail(&acc.addr, &[&acc.addr]);
        let r = Smtp::submit(&relay, acc, &[&acc.addr], &mail.bytes).await;
        assert_eq!(r.code, 250, "submission to self: {r}");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();

    // The running relay holds the store: the command refuses, changes nothing.
    let out = expire(&relay.config_path(), Some(now + 21 * DAY));
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot open the store"),
        "stderr: {}",
        text(&out.stderr)
    );

    relay.stop().await;
    // Today: nothing is old enough.
    let out = expire(&relay.config_path(), None);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "expire: removed 0 account(s), 0 expired message(s), 0 message(s) over quota"
    );
    // 21 days later both messages are past delete_mails_after (20); the accounts stay.
    let out = expire(&relay.config_path(), Some(now + 21 * DAY));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "expire: removed 0 account(s), 2 expired message(s), 0 message(s) over quota"
    );
    relay.restart().await;
    assert!(
        Imap::fetch_inbox(&relay, &a).await.is_empty(),
        "a's message expired"
    );
    relay.stop().await;
    // 91 days later neither has logged in for more than 90 days.
    let out = expire(&relay.config_path(), Some(now + 91 * DAY));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "expire: removed 2 account(s), 0 expired message(s), 0 message(s) over quota"
    );
    // Gone for good: a second run finds nothing.
    let out = expire(&relay.config_path(), Some(now + 91 * DAY));
    assert_eq!(
        text(&out.stdout).trim(),
        "expire: removed 0 account(s), 0 expired message(s), 0 message(s) over quota"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_command_with_a_bad_config_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("chatmail.ini");
    std::fs::write(
        &config,
        format!(
            "[params]\nmail_domain = 127.0.0.1\ndata_dir = {}\ndelete_mails_after = soon\n",
            dir.path().join("data").display()
        ),
    )
    .expect("write config");
    let out = expire(&config, None);
    assert_eq!(out.status.code(), Some(2), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("delete_mails_after"),
        "stderr: {}",
        text(&out.stderr)
    );
    // A good config without a store yet: nothing to do, success.
    std::fs::write(
        &config,
        format!(
            "[params]\nmail_domain = 127.0.0.1\ndata_dir = {}\n",
            dir.path().join("data").display()
        ),
    )
    .expect("write config");
    let out = expire(&config, None);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("nothing to do"));
}
