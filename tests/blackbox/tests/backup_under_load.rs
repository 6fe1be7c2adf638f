//! A backup of a relay under load (issue 17 item 5): messages are submitted without pause
//! while `relaybox backup` runs against the live relay (its store snapshot comes through
//! the control socket from one read transaction). Restored into a fresh data directory,
//! the backup holds every message acknowledged (`250`) before the backup started; a
//! message acknowledged after that is there or not, but never twice in a mailbox, and a
//! message to two recipients is in both mailboxes or in neither (one commit). The
//! original relay has every acknowledged message exactly once.

use std::collections::{HashMap, HashSet};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use relaybox_blackbox::mail::stored_message_id;
use relaybox_blackbox::relay::{arg, run_tool, tool_text};
use relaybox_blackbox::{Account, Imap, Relay, Smtp, create_account, encrypted_mail};

const PASSPHRASE: &str = "a passphrase for the backup under load";
/// Submitters running side by side, each on its own session.
const SENDERS: usize = 2;
/// Pause between one submitter's messages.
const PACE: Duration = Duration::from_millis(10);
/// Most messages one submitter sends (its loop ends earlier when told to stop).
const MAX_PER_SENDER: usize = 3000;
/// Messages acknowledged before the backup starts, and after it ended, at least.
const BEFORE: usize = 20;
const AFTER: usize = 10;
/// Longest any wait of the test may take.
const WAIT: Duration = Duration::from_secs(120);

/// One acknowledged message.
struct Acked {
    message_id: String,
    /// Its `250` was read before the backup command was started.
    before_backup: bool,
}

async fn relaybox(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_tool(args, env, WAIT).await
}

/// Message-ID → how often it is in `account`'s INBOX.
async fn inbox_ids(relay: &Relay, account: &Account) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for body in Imap::fetch_inbox(relay, account).await {
        let id = stored_message_id(&body).expect("a stored message has its Message-ID");
        *ids.entry(id).or_insert(0) += 1;
    }
    ids
}

/// Wait (bounded) until `count` acknowledged messages have been recorded.
async fn wait_acked(acked: &Arc<std::sync::Mutex<Vec<Acked>>>, count: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while acked.lock().unwrap().len() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "fewer than {count} messages acknowledged within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arriving_during_a_backup_are_never_lost_nor_doubled() {
    let old = Relay::start(&[
        "max_user_send_per_minute = 1000000",
        "max_user_send_burst_size = 1000000",
    ])
    .await;
    let senders: Vec<Account> = (0..SENDERS).map(|_| Account::random()).collect();
    let (b, c) = (Account::random(), Account::random());
    create_account(&old, &b).await;
    create_account(&old, &c).await;

    // The load: each submitter sends to both recipients until told to stop.
    let started = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(std::sync::Mutex::new(Vec::<Acked>::new()));
    let mut tasks = Vec::new();
    for a in &senders {
        let mut s = Smtp::login(&old, a).await;
        let (a, to) = (a.clone(), [b.addr.clone(), c.addr.clone()]);
        let (started, stop, acked) = (started.clone(), stop.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut refused = Vec::new();
            for _ in 0..MAX_PER_SENDER {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let m = encrypted_mail(&a.addr, &[&to[0], &to[1]]);
                let r = s.send_mail(&a.addr, &[&to[0], &to[1]], &m.bytes).await;
                // Read after the 250: false means the 250 came before the backup was
                // started (the flag is set before the command is spawned).
                let before_backup = !started.load(Ordering::Acquire);
                if r.code == 250 {
                    acked.lock().unwrap().push(Acked {
                        message_id: m.message_id,
                        before_backup,
                    });
                } else {
                    refused.push(r.to_string());
                }
                tokio::time::sleep(PACE).await;
            }
            s.quit().await;
            refused
        }));
    }
    wait_acked(&acked, BEFORE).await;

    let work = tempfile::tempdir().unwrap();
    let pass_file = work.path().join("passphrase");
    std::fs::write(&pass_file, format!("{PASSPHRASE}\n")).unwrap();
    let backup = work.path().join("relay.backup");
    started.store(true, Ordering::Release);
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
    let at_backup_end = acked.lock().unwrap().len();
    wait_acked(&acked, at_backup_end + AFTER).await;
    stop.store(true, Ordering::Release);
    for t in tasks {
        let refused = tokio::time::timeout(WAIT, t)
            .await
            .expect("a submitter ends within the bound")
            .expect("a submitter did not panic");
        assert!(refused.is_empty(), "refused under load: {refused:?}");
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let before: Vec<&Acked> = acked.iter().filter(|m| m.before_backup).collect();
    let during_or_after = acked.len() - before.len();
    assert!(before.len() >= BEFORE, "{} before", before.len());
    assert!(during_or_after >= AFTER, "{during_or_after} after");

    // The original relay: every acknowledged message exactly once in each mailbox.
    for r in [&b, &c] {
        let ids = inbox_ids(&old, r).await;
        for m in &acked {
            assert_eq!(
                ids.get(&m.message_id),
                Some(&1),
                "{} in {}'s INBOX on the original relay",
                m.message_id,
                r.addr
            );
        }
        assert_eq!(ids.len(), acked.len(), "nothing else in {}'s INBOX", r.addr);
    }

    // A fresh relay (ran once, stopped) gets the backup.
    let mut new = Relay::start(&[]).await;
    new.stop().await;
    let restored = relaybox(
        &[
            "restore",
            "--config",
            arg(&new.config_path()),
            "--passphrase-file",
            arg(&pass_file),
            arg(&backup),
        ],
        &[],
    )
    .await;
    assert!(
        restored.status.success(),
        "restore: {}",
        tool_text(&restored)
    );
    new.restart().await;

    let in_b = inbox_ids(&new, &b).await;
    let in_c = inbox_ids(&new, &c).await;
    let known: HashSet<&str> = acked.iter().map(|m| m.message_id.as_str()).collect();
    for (who, ids) in [(&b, &in_b), (&c, &in_c)] {
        for (id, n) in ids.iter() {
            assert_eq!(*n, 1, "{id} is {n} times in {}'s restored INBOX", who.addr);
            assert!(
                known.contains(id.as_str()),
                "{id} in {}'s restored INBOX was never acknowledged",
                who.addr
            );
        }
    }
    for m in &before {
        for (who, ids) in [(&b, &in_b), (&c, &in_c)] {
            assert!(
                ids.contains_key(&m.message_id),
                "{} was acknowledged before the backup started but is not in {}'s restored INBOX",
                m.message_id,
                who.addr
            );
        }
    }
    // One commit delivered each message to both recipients: the snapshot has both
    // copies or neither.
    for m in &acked {
        assert_eq!(
            in_b.contains_key(&m.message_id),
            in_c.contains_key(&m.message_id),
            "{} is in one restored mailbox but not the other",
            m.message_id
        );
    }
    let kept_later = in_b.len() - before.len();
    eprintln!(
        "acknowledged: {} before the backup, {during_or_after} during or after it, of which {kept_later} are in the backup",
        before.len()
    );
    // The senders' accounts came back too: they log in with their old passwords.
    for a in &senders {
        Smtp::login(&new, a).await.quit().await;
    }
}
