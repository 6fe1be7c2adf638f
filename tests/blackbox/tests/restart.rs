//! Durability against the real binary: a restart keeps accounts and messages, and
//! `kill -9` in the middle of a burst of submissions loses no message that got `250`
//! (DESIGN.md principle 2, §10 last row: "`250` only after the durable commit").

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use relaybox_blackbox::conn::LineConn;
use relaybox_blackbox::mail::stored_message_id;
use relaybox_blackbox::{Account, Imap, Relay, Smtp, create_account, encrypted_mail};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_accounts_and_messages() {
    let mut relay = Relay::start(&[]).await;
    let a = Account::random();
    let b = Account::random();
    create_account(&relay, &b).await;
    let mut sent = Vec::new();
    let mut s = Smtp::login(&relay, &a).await;
    for _ in 0..3 {
        let m = encrypted_mail(&a.addr, &[&b.addr]);
        let r = s.send_mail(&a.addr, &[&b.addr], &m.bytes).await;
        assert_eq!(r.code, 250, "{r}");
        sent.push(m);
    }
    s.quit().await;
    relay.restart().await;
    // Accounts: the right password works (IMAP and SMTP), a wrong one does not.
    let mut c = Imap::connect_tls(relay.imaps_addr()).await;
    c.greeting().await;
    let r = c.login(&b.addr, "not-the-password").await;
    assert_eq!(r.status, "NO", "wrong password after restart: {r}");
    drop(c);
    Smtp::login(&relay, &a).await.quit().await;
    // Messages: the same bytes come back.
    let inbox = Imap::fetch_inbox(&relay, &b).await;
    assert_eq!(inbox.len(), 3, "messages after restart");
    for (stored, m) in inbox.iter().zip(&sent) {
        assert_eq!(
            stored_message_id(stored).as_deref(),
            Some(m.message_id.as_str())
        );
    }
    // Twice, to be sure the store opens after a clean stop of a reopened store.
    relay.restart().await;
    assert_eq!(
        Imap::fetch_inbox(&relay, &b).await.len(),
        3,
        "after a second restart"
    );
}

type Acked = Arc<Mutex<Vec<(usize, String)>>>;

/// One client per sender, each sending to its own recipient over one session as fast
/// as it can; `kill -9` once `threshold` messages of this round got `250`.
async fn burst_then_kill(
    relay: &mut Relay,
    senders: &[Account],
    rcpts: &[Account],
    acked: &Acked,
    threshold: usize,
) {
    let before = acked.lock().unwrap().len();
    let mut tasks = Vec::new();
    for (i, (sender, rcpt)) in senders.iter().zip(rcpts).enumerate() {
        let sender = sender.clone();
        let rcpt = rcpt.addr.clone();
        let acked = acked.clone();
        let mut s = Smtp::login(relay, &sender).await;
        tasks.push(tokio::spawn(async move {
            // Bounded: at most 2000 messages per client.
            for _ in 0..2000 {
                let m = encrypted_mail(&sender.addr, &[&rcpt]);
                match s.try_send_mail(&sender.addr, &[&rcpt], &m.bytes).await {
                    Ok(r) if r.code == 250 => acked.lock().unwrap().push((i, m.message_id)),
                    Ok(r) => return Err(format!("client {i}: unexpected reply {r}")),
                    Err(_) => return Ok(()), // the relay went away
                }
            }
            Ok(())
        }));
    }
    // Kill once the burst is well under way (bounded wait).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() - before < threshold && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    relay.kill9();
    let at_kill = acked.lock().unwrap().len() - before;
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(20), t).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("{e}"),
            Ok(Err(e)) => panic!("client task: {e}"),
            Err(_) => panic!("a client did not notice the relay dying within 20 s"),
        }
    }
    assert!(at_kill >= 1, "no message was acknowledged before the kill");
    eprintln!(
        "{at_kill} messages acknowledged when kill -9 was sent, {} in all",
        acked.lock().unwrap().len() - before
    );
}

/// Every acknowledged message is in its recipient's INBOX.
async fn assert_all_acked_stored(relay: &Relay, rcpts: &[Account], acked: &Acked) {
    let acked = acked.lock().unwrap().clone();
    let mut missing = Vec::new();
    for (i, r) in rcpts.iter().enumerate() {
        let ids: HashSet<String> = Imap::fetch_inbox(relay, r)
            .await
            .iter()
            .filter_map(|m| stored_message_id(m))
            .collect();
        for (_, id) in acked.iter().filter(|(c, _)| *c == i) {
            if !ids.contains(id) {
                missing.push(id.clone());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages lost after kill -9: {missing:?}",
        missing.len(),
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_burst_loses_no_acknowledged_message() {
    let mut relay = Relay::start(&[
        "max_user_send_per_minute = 100000",
        "max_user_send_burst_size = 100000",
    ])
    .await;
    const CLIENTS: usize = 4;
    let senders: Vec<Account> = (0..CLIENTS).map(|_| Account::random()).collect();
    let rcpts: Vec<Account> = (0..CLIENTS).map(|_| Account::random()).collect();
    for r in &rcpts {
        create_account(&relay, r).await;
    }
    let acked: Acked = Arc::new(Mutex::new(Vec::new()));
    // Two rounds: the second one runs on a store that was itself recovered from a kill.
    for threshold in [40, 100] {
        burst_then_kill(&mut relay, &senders, &rcpts, &acked, threshold).await;
        // The store opens again.
        relay.restart().await;
        assert_all_acked_stored(&relay, &rcpts, &acked).await;
    }
    // Accounts created before the kills still log in, and the relay still accepts mail.
    let m = encrypted_mail(&senders[0].addr, &[&rcpts[0].addr]);
    let r = Smtp::submit(&relay, &senders[0], &[&rcpts[0].addr], &m.bytes).await;
    assert_eq!(r.code, 250, "submission after restart: {r}");
}

/// The UID and `UIDVALIDITY` of a selected mailbox's messages, and their flags.
async fn uid_state(c: &mut Imap) -> (String, Vec<String>) {
    let r = c.cmd("STATUS INBOX (UIDVALIDITY UIDNEXT MESSAGES)").await;
    assert!(r.is_ok(), "{r}");
    let status = r
        .untagged_text()
        .into_iter()
        .find(|l| l.starts_with("* STATUS"))
        .unwrap_or_else(|| panic!("no STATUS line: {r}"));
    let uidvalidity = status
        .split("UIDVALIDITY ")
        .nth(1)
        .and_then(|s| s.split([' ', ')']).next())
        .unwrap_or_else(|| panic!("no UIDVALIDITY in {status}"))
        .to_string();
    c.select("INBOX").await;
    let r = c.cmd("FETCH 1:* (UID FLAGS)").await;
    assert!(r.is_ok(), "{r}");
    let mut lines: Vec<String> = r
        .untagged_text()
        .into_iter()
        .filter(|l| l.contains(" FETCH "))
        .map(|l| {
            // Normalise: "* n FETCH (UID u FLAGS (…))" → "UID u FLAGS (…)" in a fixed order.
            let uid = l
                .split("UID ")
                .nth(1)
                .and_then(|s| s.split([' ', ')']).next())
                .unwrap_or("?")
                .to_string();
            let mut flags: Vec<String> = l
                .split("FLAGS (")
                .nth(1)
                .and_then(|s| s.split(')').next())
                .unwrap_or("")
                .split(' ')
                .filter(|f| !f.is_empty() && !f.eq_ignore_ascii_case("\\Recent"))
                .map(str::to_string)
                .collect();
            flags.sort();
            format!("UID {uid} FLAGS ({})", flags.join(" "))
        })
        .collect();
    lines.sort();
    (uidvalidity, lines)
}

/// RFC 9051 §2.3.1.1: UIDs and UIDVALIDITY survive a restart; flags set with an OK
/// survive a graceful stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_uids_uidvalidity_and_flags() {
    let mut relay = Relay::start(&[]).await;
    let a = Account::random();
    create_account(&relay, &a).await;
    for _ in 0..3 {
        let m = encrypted_mail(&a.addr, &[&a.addr]);
        let r = Smtp::submit(&relay, &a, &[&a.addr], &m.bytes).await;
        assert_eq!(r.code, 250, "{r}");
    }
    let mut c = Imap::login_tls(&relay, &a).await;
    assert_eq!(c.select("INBOX").await, 3);
    let r = c.cmd("STORE 2 +FLAGS (\\Seen)").await;
    assert!(r.is_ok(), "{r}");
    let r = c.cmd("STORE 3 +FLAGS (\\Flagged $Custom)").await;
    assert!(r.is_ok(), "{r}");
    let before = uid_state(&mut c).await;
    c.logout().await;
    // A graceful stop (SIGTERM), then a start on the same data directory.
    let status = relay.stop().await;
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM: relaybox did not exit cleanly within 10 s: {status:?}"
    );
    relay.restart().await;
    let mut c = Imap::login_tls(&relay, &a).await;
    let after = uid_state(&mut c).await;
    assert_eq!(
        after, before,
        "UIDVALIDITY, UIDs and flags: after restart (left) vs before (right)"
    );
    c.logout().await;
}

/// Account creation is durable once LOGIN answered OK (store: account creation is a
/// durable job): after `kill -9` every acknowledged account still exists with its
/// password — a lost one would be re-created by the next login with any password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_keeps_acknowledged_account_creations() {
    let mut relay = Relay::start(&[]).await;
    let created: Arc<Mutex<Vec<Account>>> = Arc::new(Mutex::new(Vec::new()));
    let addr = relay.imaps_addr();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let created = created.clone();
        tasks.push(tokio::spawn(async move {
            // Bounded: at most 500 accounts per client.
            for _ in 0..500 {
                let Ok(conn) = LineConn::connect_tls(addr, &[]).await else {
                    return;
                };
                let mut c = Imap::from_conn(conn, addr);
                if c.read_line().await.is_err() {
                    return;
                }
                let a = Account::random();
                let cmd = format!(
                    "LOGIN {} {}",
                    relaybox_blackbox::imap::quote(&a.addr),
                    relaybox_blackbox::imap::quote(&a.password)
                );
                match c.try_cmd(&cmd).await {
                    Ok(r) if r.is_ok() => created.lock().unwrap().push(a),
                    Ok(r) => panic!("first login refused: {r}"),
                    Err(_) => return,
                }
            }
        }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while created.lock().unwrap().len() < 30 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    relay.kill9();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .expect("client noticed the kill")
            .expect("client task");
    }
    let created = created.lock().unwrap().clone();
    assert!(
        !created.is_empty(),
        "no account was created before the kill"
    );
    eprintln!("{} accounts acknowledged before kill -9", created.len());
    relay.restart().await;
    let mut lost = Vec::new();
    for (i, a) in created.iter().enumerate() {
        // Each account's wrong try from an address of its own: the per-address login
        // brake would otherwise make the later ones wait (issue 13).
        let from = std::net::Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250) as u8 + 1);
        let conn = LineConn::connect_tls_from(from.into(), relay.imaps_addr(), &[])
            .await
            .expect("connect");
        let mut c = Imap::from_conn(conn, relay.imaps_addr());
        c.greeting().await;
        let wrong = c.login(&a.addr, "a-wrong-password-9").await;
        let right = c.login(&a.addr, &a.password).await;
        if wrong.status != "NO" || !right.is_ok() {
            lost.push(format!(
                "{}: wrong → {}, right → {}",
                a.addr, wrong.tagged, right.tagged
            ));
        }
        drop(c);
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged accounts lost or changed after kill -9:\n{}",
        lost.len(),
        created.len(),
        lost.join("\n")
    );
}

/// DESIGN.md principle 2: an IMAP `OK` after APPEND is sent only after the durable
/// commit, so `kill -9` loses no acknowledged APPEND.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_loses_no_acknowledged_append() {
    let mut relay = Relay::start(&[]).await;
    let accounts: Vec<Account> = (0..3).map(|_| Account::random()).collect();
    let acked: Acked = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (i, a) in accounts.iter().enumerate() {
        let mut c = Imap::login_tls(&relay, a).await;
        let acked = acked.clone();
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            // Bounded: at most 2000 messages per client.
            for _ in 0..2000 {
                let m = encrypted_mail(&a.addr, &[&a.addr]);
                match c.try_append("INBOX", &m.bytes).await {
                    Ok(r) if r.is_ok() => acked.lock().unwrap().push((i, m.message_id)),
                    Ok(r) => return Err(format!("APPEND refused: {r}")),
                    Err(_) => return Ok(()),
                }
            }
            Ok(())
        }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 60 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    relay.kill9();
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(20), t).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("{e}"),
            Ok(Err(e)) => panic!("client task: {e}"),
            Err(_) => panic!("a client did not notice the relay dying within 20 s"),
        }
    }
    eprintln!(
        "{} APPENDs acknowledged before kill -9",
        acked.lock().unwrap().len()
    );
    assert!(!acked.lock().unwrap().is_empty(), "no APPEND acknowledged");
    relay.restart().await;
    assert_all_acked_stored(&relay, &accounts, &acked).await;
}

/// Issue 14: an `OK` after STORE and EXPUNGE is durable like a `250`: right after it,
/// `kill -9` brings no expunged message back and forgets no flag (the Delta Chat cycle:
/// fetch, `\Deleted`, expunge).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_keeps_acknowledged_expunges_and_flags() {
    let mut relay = Relay::start(&[]).await;
    let a = Account::random();
    create_account(&relay, &a).await;
    for _ in 0..6 {
        let m = encrypted_mail(&a.addr, &[&a.addr]);
        let r = Smtp::submit(&relay, &a, &[&a.addr], &m.bytes).await;
        assert_eq!(r.code, 250, "{r}");
    }
    let mut c = Imap::login_tls(&relay, &a).await;
    assert_eq!(c.select("INBOX").await, 6);
    let r = c.cmd("UID STORE 1:3 +FLAGS.SILENT (\\Deleted)").await;
    assert!(r.is_ok(), "{r}");
    let r = c.cmd("UID EXPUNGE 1:2").await;
    assert!(r.is_ok(), "{r}");
    let r = c.cmd("UID STORE 4 +FLAGS.SILENT (\\Seen $Kept)").await;
    assert!(r.is_ok(), "{r}");
    let before = uid_state(&mut c).await;
    assert_eq!(before.1.len(), 4, "{before:?}");
    relay.kill9();
    relay.restart().await;
    let mut c = Imap::login_tls(&relay, &a).await;
    let after = uid_state(&mut c).await;
    assert_eq!(
        after, before,
        "after kill -9 (left) vs acknowledged (right): expunged UIDs 1 and 2 stay gone, \
         UID 3 keeps \\Deleted, UID 4 keeps its flags"
    );
    c.logout().await;
}
