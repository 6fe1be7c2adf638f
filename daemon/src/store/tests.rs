//! Store tests: deliveries, mailbox operations, shared bodies, group commit, reopen.

use super::bodies::split_body;
use super::tables::*;
use super::*;
use crate::message::Parsed;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    (dir, store)
}

fn delivery(local: &[&str], remote: &[&str], body: &[u8]) -> Delivery {
    Delivery {
        sender: "a@x".into(),
        local: local.iter().map(|s| s.to_string()).collect(),
        remote: remote.iter().map(|s| s.to_string()).collect(),
        body: Parsed::legacy(body.to_vec()),
        received: 1_700_000_000,
    }
}

fn body_count(store: &Store) -> u64 {
    let rx = store.read().unwrap();
    rx.open_table(BODIES).unwrap().len().unwrap()
}

#[tokio::test]
async fn create_account_once() {
    let (_d, s) = open();
    assert_eq!(
        s.create_account("a@x", "h1", 86_400 * 3 + 5).await.unwrap(),
        Created::New
    );
    match s.create_account("a@x", "h2", 0).await.unwrap() {
        Created::Existing(a) => assert_eq!(a.password_hash, "h1"),
        other => panic!("{other:?}"),
    }
    let a = s.account("a@x").unwrap().unwrap();
    assert_eq!(a.last_login_day, 86_400 * 3);
    assert!(a.enforce_e2ee);
    assert_eq!(s.mailboxes("a@x").unwrap()[0].name, "INBOX");
}

#[tokio::test]
async fn concurrent_creations_store_one_hash() {
    let (_d, s) = open();
    let mut tasks = Vec::new();
    for i in 0..10 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.create_account("a@x", &format!("h{i}"), 0).await.unwrap()
        }));
    }
    let mut new = 0;
    for t in tasks {
        if t.await.unwrap() == Created::New {
            new += 1;
        }
    }
    assert_eq!(new, 1);
}

#[tokio::test]
async fn deliver_local_and_remote_in_one_commit_sharing_the_body() {
    let (_d, s) = open();
    s.create_account("a@x", "h", 0).await.unwrap();
    s.create_account("b@x", "h", 0).await.unwrap();
    let (commits_before, _) = s.commit_counts();
    let got = s
        .deliver(delivery(&["a@x", "b@x", "gone@x"], &["r@remote"], b"hello"))
        .await
        .unwrap();
    assert_eq!(got, vec!["a@x".to_string(), "b@x".to_string()]);
    assert_eq!(s.commit_counts().0, commits_before + 1);
    assert_eq!(body_count(&s), 1, "one body for all copies");
    for who in ["a@x", "b@x"] {
        let (mb, msgs) = s.messages(who, "INBOX").unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].uid, 1);
        assert_eq!(mb.uid_next, 2);
        assert_eq!(s.body(who, "INBOX", 1).unwrap().unwrap(), b"hello");
    }
    let q = s.queued().unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].recipients, vec!["r@remote".to_string()]);
    assert_eq!(s.queued_body(q[0].id).unwrap().unwrap(), b"hello");
}

#[tokio::test]
async fn expunge_frees_body_with_last_reference() {
    let (_d, s) = open();
    s.create_account("a@x", "h", 0).await.unwrap();
    s.create_account("b@x", "h", 0).await.unwrap();
    s.deliver(delivery(&["a@x", "b@x"], &[], b"m"))
        .await
        .unwrap();
    let del = Flags {
        bits: Flags::DELETED,
        keywords: vec![],
    };
    s.store_flags("a@x", "INBOX", vec![1], FlagOp::Add, del.clone())
        .await
        .unwrap();
    assert_eq!(s.expunge("a@x", "INBOX", None).await.unwrap(), vec![1]);
    assert_eq!(body_count(&s), 1, "b still holds it");
    s.store_flags("b@x", "INBOX", vec![1], FlagOp::Add, del)
        .await
        .unwrap();
    // UID EXPUNGE with a set that does not include the message removes nothing.
    assert!(
        s.expunge("b@x", "INBOX", Some(vec![2]))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.expunge("b@x", "INBOX", Some(vec![1])).await.unwrap(),
        vec![1]
    );
    assert_eq!(body_count(&s), 0);
}

#[tokio::test]
async fn flags_add_remove_replace() {
    let (_d, s) = open();
    s.create_account("a@x", "h", 0).await.unwrap();
    s.deliver(delivery(&["a@x"], &[], b"m")).await.unwrap();
    let f = |bits, kw: &[&str]| Flags {
        bits,
        keywords: kw.iter().map(|k| k.to_string()).collect(),
    };
    let r = s
        .store_flags(
            "a@x",
            "INBOX",
            vec![1, 99],
            FlagOp::Add,
            f(Flags::SEEN, &["$MDNSent"]),
        )
        .await
        .unwrap();
    assert_eq!(r.len(), 1, "missing UID 99 is skipped");
    assert_eq!(r[0].flags, f(Flags::SEEN, &["$MDNSent"]));
    let r = s
        .store_flags("a@x", "INBOX", vec![1], FlagOp::Remove, f(0, &["$mdnsent"]))
        .await
        .unwrap();
    assert_eq!(r[0].flags, f(Flags::SEEN, &[]));
    let r = s
        .store_flags(
            "a@x",
            "INBOX",
            vec![1],
            FlagOp::Replace,
            f(Flags::FLAGGED, &[]),
        )
        .await
        .unwrap();
    assert_eq!(r[0].flags, f(Flags::FLAGGED, &[]));
}

#[tokio::test]
async fn copy_move_rename_delete() {
    let (_d, s) = open();
    s.create_account("a@x", "h", 0).await.unwrap();
    s.deliver(delivery(&["a@x"], &[], b"one")).await.unwrap();
    s.deliver(delivery(&["a@x"], &[], b"two")).await.unwrap();
    s.create_mailbox("a@x", "Archive").await.unwrap();
    assert!(matches!(
        s.create_mailbox("a@x", "Archive").await,
        Err(StoreError::MailboxExists)
    ));
    let (validity, pairs) = s
        .copy("a@x", "INBOX", "Archive", vec![1], false)
        .await
        .unwrap();
    assert_eq!(
        validity,
        s.mailbox("a@x", "Archive").unwrap().unwrap().uid_validity
    );
    assert_eq!(pairs, vec![(1, 1)]);
    let (_, pairs) = s
        .copy("a@x", "INBOX", "Archive", vec![2], true)
        .await
        .unwrap();
    assert_eq!(pairs, vec![(2, 2)]);
    assert_eq!(s.messages("a@x", "INBOX").unwrap().1.len(), 1);
    assert_eq!(s.body("a@x", "Archive", 2).unwrap().unwrap(), b"two");
    s.rename_mailbox("a@x", "Archive", "Old").await.unwrap();
    assert!(s.mailbox("a@x", "Archive").unwrap().is_none());
    assert_eq!(s.messages("a@x", "Old").unwrap().1.len(), 2);
    assert_eq!(body_count(&s), 2);
    s.delete_mailbox("a@x", "Old").await.unwrap();
    assert_eq!(
        body_count(&s),
        1,
        "the moved body went; the copied one stays for INBOX"
    );
    assert_eq!(s.usage("a@x").unwrap(), 3);
}

#[tokio::test]
async fn append_returns_uids_and_is_durable_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    {
        let s = Store::open(&path).unwrap();
        s.create_account("a@x", "h", 0).await.unwrap();
        let (v, uid) = s
            .append(
                "a@x",
                "INBOX",
                Flags::default(),
                5,
                Parsed::legacy(b"appended".to_vec()),
            )
            .await
            .unwrap();
        assert_eq!(uid, 1);
        assert_eq!(v, s.mailbox("a@x", "INBOX").unwrap().unwrap().uid_validity);
        assert!(matches!(
            s.append("a@x", "Nope", Flags::default(), 5, Parsed::legacy(vec![]))
                .await,
            Err(StoreError::NoMailbox)
        ));
        s.set_device_token("a@x", "tok2", 10).await.unwrap();
        s.set_device_token("a@x", "tok1", 20).await.unwrap();
        s.set_device_token("a@x", "tok2", 30).await.unwrap();
    }
    // Reopen (the writer thread of the first handle may still hold the file; wait for it).
    let mut s = None;
    for _ in 0..100 {
        match Store::open(&path) {
            Ok(x) => {
                s = Some(x);
                break;
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
    let s = s.expect("store reopens");
    assert_eq!(s.body("a@x", "INBOX", 1).unwrap().unwrap(), b"appended");
    let tokens = s.device_tokens("a@x").unwrap();
    assert_eq!(
        tokens,
        vec![("tok2".to_string(), 10, 30), ("tok1".to_string(), 20, 20)],
        "first-registration order, refreshed time"
    );
}

#[tokio::test]
async fn concurrent_deliveries_share_commits() {
    let (_d, s) = open();
    s.create_account("a@x", "h", 0).await.unwrap();
    let (c0, _) = s.commit_counts();
    let l0 = s.log_syncs();
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.deliver(delivery(&["a@x"], &[], &i.to_le_bytes()))
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (c1, _) = s.commit_counts();
    let l1 = s.log_syncs();
    assert_eq!(s.messages("a@x", "INBOX").unwrap().1.len(), 200);
    assert!(
        l1 - l0 < 200,
        "group commit: {} log syncs for 200 deliveries",
        l1 - l0
    );
    assert!(c1 > c0);
}

#[test]
fn refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    {
        let db = Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(META)
            .unwrap()
            .insert(
                "schema_version",
                (SCHEMA_VERSION + 1).to_le_bytes().as_slice(),
            )
            .unwrap();
        tx.commit().unwrap();
    }
    assert!(matches!(
        Store::open(&path),
        Err(StoreError::SchemaTooNew { .. })
    ));
}

#[tokio::test]
async fn flush_makes_pending_changes_durable_once() {
    let (_d, s) = open();
    s.create_account("a@x", "h", 0).await.unwrap();
    let (_, d0) = s.commit_counts();
    s.flush().await.unwrap();
    assert_eq!(s.commit_counts().1, d0, "nothing pending: no commit");
    s.set_last_login_day("a@x", 86_400).await.unwrap();
    assert_eq!(
        s.commit_counts().1,
        d0,
        "last login is not durable on its own"
    );
    s.flush().await.unwrap();
    assert_eq!(s.commit_counts().1, d0 + 1);
    s.flush().await.unwrap();
    assert_eq!(s.commit_counts().1, d0 + 1);
}

/// Rows in every table, by name (to check that a deletion leaves nothing behind).
fn table_counts(store: &Store) -> [(&'static str, u64); 7] {
    let rx = store.read().unwrap();
    [
        ("accounts", rx.open_table(ACCOUNTS).unwrap().len().unwrap()),
        (
            "mailboxes",
            rx.open_table(MAILBOXES).unwrap().len().unwrap(),
        ),
        ("messages", rx.open_table(MESSAGES).unwrap().len().unwrap()),
        ("bodies", rx.open_table(BODIES).unwrap().len().unwrap()),
        (
            "body_refs",
            rx.open_table(BODY_REFS).unwrap().len().unwrap(),
        ),
        ("tokens", rx.open_table(TOKENS).unwrap().len().unwrap()),
        (
            "push_jobs",
            rx.open_table(PUSH_JOBS).unwrap().len().unwrap()
                + rx.open_table(PUSH_DUE).unwrap().len().unwrap(),
        ),
    ]
}

#[tokio::test]
async fn delete_account_removes_every_row_and_frees_only_its_bodies() {
    let (_d, s) = open();
    // Sort before and after "a@x" so range scans must stop at the account boundary.
    for who in ["a@w", "a@x", "a@xx"] {
        s.create_account(who, "h", 0).await.unwrap();
    }
    s.create_mailbox("a@x", "Sent").await.unwrap();
    // Shared with a@w: that body must survive.
    s.deliver(delivery(&["a@x", "a@w"], &[], b"shared"))
        .await
        .unwrap();
    s.deliver(delivery(&["a@x"], &[], b"own")).await.unwrap();
    s.append(
        "a@x",
        "Sent",
        Flags::default(),
        5,
        Parsed::legacy(b"sent".to_vec()),
    )
    .await
    .unwrap();
    s.copy("a@x", "Sent", "INBOX", vec![1], false)
        .await
        .unwrap();
    s.deliver(delivery(&["a@xx"], &[], b"neighbour"))
        .await
        .unwrap();
    for t in ["t1", "t2"] {
        s.set_device_token("a@x", t, 10).await.unwrap();
    }
    s.set_device_token("a@xx", "t3", 10).await.unwrap();
    s.set_device_token("a@w", "t4", 10).await.unwrap();

    let removal = s.delete_account("a@x").await.unwrap().unwrap();
    assert_eq!(
        removal,
        AccountRemoval {
            mailboxes: 2,
            messages: 4,
            tokens: 2
        }
    );
    assert!(s.account("a@x").unwrap().is_none());
    assert!(s.mailboxes("a@x").unwrap().is_empty());
    assert!(s.device_tokens("a@x").unwrap().is_empty());
    // Left: 2 accounts, their 2 INBOXes with one message each, bodies "shared" and
    // "neighbour" with one reference each, tokens t3 and t4.
    assert_eq!(
        table_counts(&s),
        [
            ("accounts", 2),
            ("mailboxes", 2),
            ("messages", 2),
            ("bodies", 2),
            ("body_refs", 2),
            ("tokens", 2),
            ("push_jobs", 0)
        ]
    );
    assert_eq!(s.body("a@w", "INBOX", 1).unwrap().unwrap(), b"shared");
    assert_eq!(s.body("a@xx", "INBOX", 1).unwrap().unwrap(), b"neighbour");
    assert_eq!(s.device_tokens("a@xx").unwrap().len(), 1);
    // Deleting again finds nothing.
    assert_eq!(s.delete_account("a@x").await.unwrap(), None);
    // Durable: the deletion survives a reopen.
    let path = _d.path().join("s.redb");
    drop(s);
    let s = reopen(&path).await;
    assert!(s.account("a@x").unwrap().is_none());
    assert_eq!(s.account_count().unwrap(), 2);
}

/// Reopen a store file once the old writer thread has let go of it.
/// The redb file itself, once the writer thread of a dropped store let go of it.
async fn open_raw(path: &std::path::Path) -> Database {
    for _ in 0..200 {
        if let Ok(db) = Database::create(path) {
            return db;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("store file not released within 2 s");
}

pub(super) async fn reopen(path: &std::path::Path) -> Store {
    for _ in 0..100 {
        match Store::open(path) {
            Ok(s) => return s,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    panic!("store did not reopen within 2 s");
}

#[tokio::test]
async fn deleting_all_accounts_leaves_empty_tables() {
    let (_d, s) = open();
    for who in ["a@x", "b@x"] {
        s.create_account(who, "h", 0).await.unwrap();
    }
    s.deliver(delivery(&["a@x", "b@x"], &[], b"m"))
        .await
        .unwrap();
    s.set_device_token("b@x", "t", 1).await.unwrap();
    s.deliver_with_push(
        delivery(&["b@x"], &[], b"p"),
        u64::MAX,
        Some(push_request(&["b@x"], 1)),
    )
    .await
    .unwrap();
    assert_eq!(s.push_jobs().unwrap().len(), 1);
    for who in ["a@x", "b@x"] {
        assert!(s.delete_account(who).await.unwrap().is_some());
    }
    assert!(
        table_counts(&s).iter().all(|(_, n)| *n == 0),
        "{:?}",
        table_counts(&s)
    );
}

#[tokio::test]
async fn accounts_lists_every_account() {
    let (_d, s) = open();
    s.create_account("b@x", "h", 86_400 * 2).await.unwrap();
    s.create_account("a@x", "h", 0).await.unwrap();
    let all = s.accounts().unwrap();
    let names: Vec<_> = all.iter().map(|a| a.address.as_str()).collect();
    assert_eq!(names, ["a@x", "b@x"]);
    assert_eq!(all[1].last_login_day, 86_400 * 2);
}

#[tokio::test]
async fn account_messages_and_remove_messages() {
    let (_d, s) = open();
    s.create_account("a@x", "h", 0).await.unwrap();
    s.create_account("b@x", "h", 0).await.unwrap();
    s.create_mailbox("a@x", "Archive").await.unwrap();
    s.deliver(delivery(&["a@x", "b@x"], &[], b"one"))
        .await
        .unwrap();
    s.deliver(delivery(&["a@x"], &[], b"two!")).await.unwrap();
    s.append(
        "a@x",
        "Archive",
        Flags {
            bits: Flags::SEEN,
            keywords: vec![],
        },
        7,
        Parsed::legacy(b"three".to_vec()),
    )
    .await
    .unwrap();
    let all = s.account_messages("a@x").unwrap();
    let seen: Vec<_> = all
        .iter()
        .map(|m| {
            (
                m.mailbox.as_str(),
                m.meta.uid,
                m.meta.size,
                m.meta.flags.has(Flags::SEEN),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("Archive", 1, 5, true),
            ("INBOX", 1, 3, false),
            ("INBOX", 2, 4, false)
        ]
    );
    assert_eq!(s.usage("a@x").unwrap(), 12);
    let removed = s
        .remove_messages(
            "a@x",
            vec![
                ("INBOX".into(), 1),
                ("Archive".into(), 1),
                // Gone already or never there: skipped.
                ("INBOX".into(), 9),
                ("Nope".into(), 1),
            ],
        )
        .await
        .unwrap();
    assert_eq!(removed, 2);
    assert_eq!(s.usage("a@x").unwrap(), 4);
    // "one" is still b@x's; "three" had no other reference.
    assert_eq!(s.body("b@x", "INBOX", 1).unwrap().unwrap(), b"one");
    assert_eq!(body_count(&s), 2);
    // Removing from another account's name space touches nothing of b@x.
    assert_eq!(
        s.remove_messages("a@x", vec![("INBOX".into(), 1)])
            .await
            .unwrap(),
        0
    );
    assert_eq!(s.messages("b@x", "INBOX").unwrap().1.len(), 1);
}

#[tokio::test]
async fn delivery_within_quota_skips_recipients_it_would_take_over() {
    let (_d, s) = open();
    for who in ["full@x", "room@x"] {
        s.create_account(who, "h", 0).await.unwrap();
    }
    s.deliver(delivery(&["full@x"], &[], &[b'a'; 90]))
        .await
        .unwrap();
    // 90 + 10 = 100 is exactly the limit: allowed.
    let got = s
        .deliver_within_quota(delivery(&["full@x", "room@x"], &[], &[b'b'; 10]), 100)
        .await
        .unwrap();
    assert_eq!(got.stored, ["full@x", "room@x"]);
    assert!(got.over_quota.is_empty());
    // One byte more than the limit for full@x (100 + 1), fine for room@x.
    let got = s
        .deliver_within_quota(delivery(&["full@x", "room@x"], &["r@remote"], b"c"), 100)
        .await
        .unwrap();
    assert_eq!(got.stored, ["room@x"]);
    assert_eq!(got.over_quota, ["full@x"]);
    assert_eq!(s.usage("full@x").unwrap(), 100);
    assert_eq!(s.usage("room@x").unwrap(), 11);
    assert_eq!(
        s.queued().unwrap().len(),
        1,
        "remote recipients still get it"
    );
    // Nobody left: nothing stored, no orphan body.
    let bodies = body_count(&s);
    let got = s
        .deliver_within_quota(delivery(&["full@x"], &[], b"d"), 100)
        .await
        .unwrap();
    assert_eq!(
        got,
        Delivered {
            stored: vec![],
            over_quota: vec!["full@x".into()]
        }
    );
    assert_eq!(body_count(&s), bodies);
}

fn push_request(accounts: &[&str], now: u64) -> PushRequest {
    PushRequest {
        accounts: accounts.iter().map(|s| s.to_string()).collect(),
        now,
        tokens_set_from: now.saturating_sub(100),
        tokens_set_until: u64::MAX,
    }
}

/// PUSH-2: one job per (account, valid token) in the delivery's own durable commit,
/// only for the accounts asked for that received the message.
#[tokio::test]
async fn push_jobs_are_created_with_the_delivery() {
    let (_d, s) = open();
    for who in ["a@x", "b@x", "c@x"] {
        s.create_account(who, "h", 0).await.unwrap();
    }
    s.set_device_token("a@x", "tok-a1", 1000).await.unwrap();
    s.set_device_token("a@x", "tok-a2", 1000).await.unwrap();
    s.set_device_token("a@x", "tok-old", 800).await.unwrap();
    s.set_device_token("b@x", "tok-b", 1000).await.unwrap();
    s.set_device_token("c@x", "tok-c", 1000).await.unwrap();
    let (commits, durable) = s.commit_counts();
    let syncs = s.log_syncs();
    // c@x is a recipient but not asked for (self-sent); gone@x has no account.
    let (delivered, jobs) = s
        .deliver_with_push(
            delivery(&["a@x", "c@x", "gone@x"], &[], b"m"),
            u64::MAX,
            Some(push_request(&["a@x", "b@x", "gone@x"], 1050)),
        )
        .await
        .unwrap();
    assert_eq!(delivered.stored, vec!["a@x".to_string(), "c@x".to_string()]);
    assert_eq!(jobs, 2, "a@x's two valid tokens; b@x got no message");
    assert_eq!(
        (s.commit_counts(), s.log_syncs()),
        ((commits + 1, durable), syncs + 1),
        "one commit, made durable by one sync of the log"
    );
    let mut all = s.push_jobs().unwrap();
    all.sort_by(|x, y| x.token.cmp(&y.token));
    assert_eq!(all.len(), 2);
    for (job, token) in all.iter().zip(["tok-a1", "tok-a2"]) {
        assert_eq!(job.account, "a@x");
        assert_eq!(job.token, token);
        assert_eq!(job.attempts, 0);
        assert_eq!((job.first_attempt, job.next_attempt), (1050, 1050));
    }
    // Without a push request (and for plain `deliver`) no job is made.
    s.deliver(delivery(&["a@x"], &[], b"m2")).await.unwrap();
    let (_, jobs) = s
        .deliver_with_push(delivery(&["b@x"], &[], b"m3"), u64::MAX, None)
        .await
        .unwrap();
    assert_eq!(jobs, 0);
    assert_eq!(s.push_jobs().unwrap().len(), 2);
}

#[tokio::test]
async fn over_quota_recipients_get_no_push_job() {
    let (_d, s) = open();
    s.create_account("a@x", "h", 0).await.unwrap();
    s.set_device_token("a@x", "t", 10).await.unwrap();
    let (delivered, jobs) = s
        .deliver_with_push(
            delivery(&["a@x"], &[], b"0123456789"),
            5,
            Some(push_request(&["a@x"], 10)),
        )
        .await
        .unwrap();
    assert_eq!(delivered.over_quota, vec!["a@x".to_string()]);
    assert_eq!(jobs, 0);
    assert!(s.push_jobs().unwrap().is_empty());
}

#[tokio::test]
async fn push_jobs_due_reschedule_delete_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let s = Store::open(&path).unwrap();
    for who in ["a@x", "b@x"] {
        s.create_account(who, "h", 0).await.unwrap();
        s.set_device_token(who, &format!("t-{who}"), 100)
            .await
            .unwrap();
    }
    s.deliver_with_push(
        delivery(&["a@x", "b@x"], &[], b"m"),
        u64::MAX,
        Some(push_request(&["a@x", "b@x"], 100)),
    )
    .await
    .unwrap();
    let jobs = s.push_jobs().unwrap();
    assert_eq!(jobs.len(), 2);
    assert!(s.push_jobs_due(99).unwrap().is_empty());
    assert_eq!(s.push_jobs_due(100).unwrap(), jobs);
    assert_eq!(s.next_push_due().unwrap(), Some(100));

    let (first, second) = (jobs[0].clone(), jobs[1].clone());
    s.reschedule_push_job(first.id, 1, 108).await.unwrap();
    let due = s.push_jobs_due(107).unwrap();
    assert_eq!(due, vec![second.clone()]);
    let due = s.push_jobs_due(108).unwrap();
    assert_eq!(due.len(), 2);
    let moved = due.iter().find(|j| j.id == first.id).unwrap();
    assert_eq!((moved.attempts, moved.next_attempt), (1, 108));
    assert_eq!(moved.first_attempt, 100, "the deadline base stays");

    s.delete_push_job(second.id).await.unwrap();
    // Rescheduling or deleting a job that is gone changes nothing.
    s.reschedule_push_job(second.id, 2, 500).await.unwrap();
    s.delete_push_job(second.id).await.unwrap();
    assert_eq!(s.push_jobs().unwrap().len(), 1);
    assert_eq!(s.next_push_due().unwrap(), Some(108));

    // Survives a reopen (the reschedule is made durable by the flush).
    s.flush().await.unwrap();
    drop(s);
    let s = reopen(&path).await;
    let left = s.push_jobs().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, first.id);
    assert_eq!(left[0].token, first.token);
    assert_eq!((left[0].attempts, left[0].next_attempt), (1, 108));
}

#[tokio::test]
async fn jobs_from_the_delivery_commit_survive_a_reopen_and_go_with_their_account() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let s = Store::open(&path).unwrap();
    for who in ["a@x", "b@x"] {
        s.create_account(who, "h", 0).await.unwrap();
        s.set_device_token(who, "t", 5).await.unwrap();
    }
    s.deliver_with_push(
        delivery(&["a@x", "b@x"], &[], b"m"),
        u64::MAX,
        Some(push_request(&["a@x", "b@x"], 5)),
    )
    .await
    .unwrap();
    // No flush: the delivery commit itself is durable.
    drop(s);
    let s = reopen(&path).await;
    assert_eq!(s.push_jobs().unwrap().len(), 2);
    let removal = s.delete_account("a@x").await.unwrap().unwrap();
    assert_eq!(removal.tokens, 1);
    let left = s.push_jobs().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].account, "b@x");
}

/// The notifier reads due jobs per retry level, a bounded number at a time.
#[tokio::test]
async fn push_jobs_due_by_level_with_a_limit() {
    let (_d, s) = open();
    s.create_account("a@x", "h", 0).await.unwrap();
    for i in 0..6 {
        s.set_device_token("a@x", &format!("t{i}"), 100)
            .await
            .unwrap();
    }
    s.deliver_with_push(
        delivery(&["a@x"], &[], b"m"),
        u64::MAX,
        Some(push_request(&["a@x"], 100)),
    )
    .await
    .unwrap();
    let jobs = s.push_jobs().unwrap();
    assert_eq!(jobs.len(), 6);
    // Levels: two jobs stay at 0 (due 100); two at 1 (due 108, 300); one at 4 (due
    // 200); one beyond the last level (due 150), served with level 4.
    s.reschedule_push_job(jobs[2].id, 1, 300).await.unwrap();
    s.reschedule_push_job(jobs[3].id, 1, 108).await.unwrap();
    s.reschedule_push_job(jobs[4].id, 4, 200).await.unwrap();
    s.reschedule_push_job(jobs[5].id, 7, 150).await.unwrap();
    let ids = |v: Vec<PushJob>| v.iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.push_jobs_due_at(0, 100, 10).unwrap()),
        vec![jobs[0].id, jobs[1].id]
    );
    assert_eq!(
        ids(s.push_jobs_due_at(0, 100, 1).unwrap()),
        vec![jobs[0].id]
    );
    assert!(s.push_jobs_due_at(1, 107, 10).unwrap().is_empty());
    assert_eq!(
        ids(s.push_jobs_due_at(1, 1000, 10).unwrap()),
        vec![jobs[3].id, jobs[2].id],
        "earliest first"
    );
    assert!(s.push_jobs_due_at(2, 1000, 10).unwrap().is_empty());
    assert_eq!(
        ids(s.push_jobs_due_at(4, 160, 10).unwrap()),
        vec![jobs[5].id]
    );
    assert_eq!(
        ids(s.push_jobs_due_at(4, 1000, 10).unwrap()),
        vec![jobs[4].id, jobs[5].id]
    );
    assert_eq!(s.push_jobs_due(120).unwrap().len(), 3);
    assert_eq!(s.next_push_due().unwrap(), Some(100));
    s.delete_push_job(jobs[0].id).await.unwrap();
    s.delete_push_job(jobs[1].id).await.unwrap();
    assert_eq!(s.next_push_due().unwrap(), Some(108));
    s.delete_push_job(jobs[3].id).await.unwrap();
    assert_eq!(s.next_push_due().unwrap(), Some(150));
    for j in &jobs {
        s.delete_push_job(j.id).await.unwrap();
    }
    assert_eq!(s.next_push_due().unwrap(), None);
    assert!(s.push_jobs_due(u64::MAX).unwrap().is_empty());
    let rx = s.read().unwrap();
    assert_eq!(rx.open_table(PUSH_DUE).unwrap().len().unwrap(), 0);
}

/// Schema 1 kept bare message bytes in `bodies`; opening such a store adds the structure
/// to every body once (with the strict parser, or as one text part when it refuses).
#[tokio::test]
async fn schema_1_bodies_get_their_structure() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let mime =
        b"From: a@x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
        --b\r\n\r\none\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>two</p>\r\n--b--\r\n";
    let refused = b"From: a@x\r\nContent-Type: text/plain\r\nContent-Type: text/html\r\n\r\nx\r\n";
    {
        let s = Store::open(&path).unwrap();
        s.create_account("a@x", "h", 0).await.unwrap();
        let parsed = Parsed::parse(mime.to_vec()).unwrap();
        let mut d = delivery(&["a@x"], &[], b"");
        d.body = parsed;
        s.deliver(d).await.unwrap();
        s.deliver(delivery(&["a@x"], &[], refused)).await.unwrap();
    }
    // Turn it back into a schema 1 store: bare bytes, version 1.
    {
        drop(reopen(&path).await);
        let db = open_raw(&path).await;
        let tx = db.begin_write().unwrap();
        {
            let mut bodies = tx.open_table(BODIES).unwrap();
            let rows: Vec<(u64, Vec<u8>)> = bodies
                .iter()
                .unwrap()
                .map(|r| {
                    let (k, v) = r.unwrap();
                    (k.value(), split_body(v.value()).unwrap().1.to_vec())
                })
                .collect();
            assert_eq!(rows.len(), 2);
            for (id, bytes) in rows {
                bodies.insert(id, bytes.as_slice()).unwrap();
            }
            let mut meta = tx.open_table(META).unwrap();
            meta.insert("schema_version", 1u64.to_le_bytes().as_slice())
                .unwrap();
        }
        tx.commit().unwrap();
    }
    let s = reopen(&path).await;
    let m1 = s.message("a@x", "INBOX", 1).unwrap().unwrap();
    assert_eq!(m1.bytes(), &mime[..]);
    assert_eq!(m1.root(), Parsed::parse(mime.to_vec()).unwrap().root());
    let m2 = s.message("a@x", "INBOX", 2).unwrap().unwrap();
    assert_eq!(m2.bytes(), &refused[..]);
    assert!(matches!(m2.root().kind, crate::message::Kind::Leaf));
    assert!(m2.root().content_type.is("text", "plain"));
    // The version is 2 now: opening again changes nothing.
    drop(s);
    let s = reopen(&path).await;
    assert_eq!(s.body("a@x", "INBOX", 1).unwrap().unwrap(), &mime[..]);
}

/// Issue 14: a store that grew with a burst and was emptied gives its space back when it
/// is opened next; a store that is mostly in use is left alone.
#[tokio::test]
async fn an_emptied_store_is_compacted_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let s = Store::open(&path).unwrap();
    s.create_account("a@x", "h", 0).await.unwrap();
    for i in 0..300u32 {
        let mut body = vec![b'x'; 10_000];
        body[..4].copy_from_slice(&i.to_le_bytes());
        s.deliver(delivery(&["a@x"], &[], &body)).await.unwrap();
    }
    s.flush().await.unwrap();
    let which: Vec<(String, u32)> = s
        .messages("a@x", "INBOX")
        .unwrap()
        .1
        .iter()
        .map(|m| ("INBOX".to_string(), m.uid))
        .collect();
    s.remove_messages("a@x", which).await.unwrap();
    s.flush().await.unwrap();
    drop(s);
    let mut db = open_raw(&path).await;
    let full = std::fs::metadata(&path).unwrap().len();
    assert!(full > 2_000_000, "{full}");
    compact_if_sparse(&mut db, &path, u64::MAX);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        full,
        "below the size floor"
    );
    compact_if_sparse(&mut db, &path, 0);
    let after = std::fs::metadata(&path).unwrap().len();
    assert!(after < full / 4, "{full} → {after}");
    // Nothing to give back now: a second pass leaves it.
    compact_if_sparse(&mut db, &path, 0);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), after);
    drop(db);
    let s = reopen(&path).await;
    assert!(s.account("a@x").unwrap().is_some());
}

#[test]
fn the_config_default_cache_size_is_the_stores() {
    let c = crate::config::Config::parse("[params]\nmail_domain = example.org\n").unwrap();
    assert_eq!(c.config.store_cache_size, DEFAULT_CACHE_BYTES);
}

/// The outbound queue's due-time index: rows come due in time order, a retry moves its
/// row, a finished row leaves it, and a store without the index (an older version's) or
/// with a stale one gets it rebuilt when opened.
#[tokio::test]
async fn queue_due_index_order_reschedule_removal_and_rebuild_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let s = Store::open(&path).unwrap();
    let t = 1_700_000_000;
    // Three deliveries, four rows: two domains in the first.
    let mut d = delivery(&[], &["r@one", "r@two"], b"m1");
    d.received = t + 10;
    s.deliver(d).await.unwrap();
    let mut d = delivery(&[], &["r@three"], b"m2");
    d.received = t;
    s.deliver(d).await.unwrap();
    let mut d = delivery(&[], &["r@four"], b"m3");
    d.received = t + 20;
    s.deliver(d).await.unwrap();
    let all = s.queued().unwrap();
    let ids: Vec<u64> = all.iter().map(|q| q.id).collect();
    let [one, two, three, four] = ids[..] else {
        panic!("{all:?}")
    };
    let due = |now, limit| -> Vec<u64> {
        s.queue_due(now, limit)
            .unwrap()
            .iter()
            .map(|q| q.id)
            .collect()
    };
    // Due order, the limit, and the next due time after now.
    assert_eq!(due(t - 1, 10), Vec::<u64>::new());
    assert_eq!(due(t, 10), vec![three]);
    assert_eq!(due(t + 10, 10), vec![three, one, two]);
    assert_eq!(due(t + 20, 2), vec![three, one]);
    assert_eq!(due(u64::MAX, 10), vec![three, one, two, four]);
    assert_eq!(s.next_queue_due_after(t).unwrap(), Some(t + 10));
    assert_eq!(s.next_queue_due_after(t + 10).unwrap(), Some(t + 20));
    assert_eq!(s.next_queue_due_after(t + 20).unwrap(), None);
    assert_eq!(s.queue_due(t, 1).unwrap(), vec![all[2].clone()]);

    // A retry moves the row (its old time no longer lists it).
    s.queue_retry(three, 1, t + 30, String::new())
        .await
        .unwrap();
    assert_eq!(due(t + 20, 10), vec![one, two, four]);
    assert_eq!(due(t + 30, 10), vec![one, two, four, three]);
    assert_eq!(s.next_queue_due_after(t + 20).unwrap(), Some(t + 30));
    let moved = s.queue_due(t + 30, 10).unwrap().pop().unwrap();
    assert_eq!((moved.attempts, moved.next_attempt), (1, t + 30));
    // A finished row leaves the index; one with recipients left keeps its time.
    s.queue_done(one, vec!["r@one".into()]).await.unwrap();
    assert_eq!(due(t + 30, 10), vec![two, four, three]);
    // Gone rows: retrying or finishing them changes nothing.
    s.queue_retry(one, 3, t, String::new()).await.unwrap();
    s.queue_done(one, vec!["r@one".into()]).await.unwrap();
    assert_eq!(due(t + 30, 10), vec![two, four, three]);
    s.flush().await.unwrap();
    drop(s);

    // An older version's store: no index at all. Opening builds it.
    {
        let db = open_raw(&path).await;
        let tx = db.begin_write().unwrap();
        assert!(tx.delete_table(QUEUE_DUE).unwrap());
        tx.commit().unwrap();
    }
    let s = reopen(&path).await;
    assert_eq!(
        s.queue_due(t + 30, 10)
            .unwrap()
            .iter()
            .map(|q| q.id)
            .collect::<Vec<_>>(),
        vec![two, four, three]
    );
    drop(s);

    // A stale index (an older version retried a row and removed another without it):
    // opening makes it agree with the queue again.
    {
        let db = open_raw(&path).await;
        let tx = db.begin_write().unwrap();
        {
            let mut due = tx.open_table(QUEUE_DUE).unwrap();
            due.remove((t + 30, three)).unwrap();
            due.insert((t + 5, three), ()).unwrap();
            due.insert((t, one), ()).unwrap();
        }
        tx.commit().unwrap();
    }
    let s = reopen(&path).await;
    assert_eq!(
        s.queue_due(t + 20, 10)
            .unwrap()
            .iter()
            .map(|q| q.id)
            .collect::<Vec<_>>(),
        vec![two, four]
    );
    assert_eq!(s.next_queue_due_after(t + 20).unwrap(), Some(t + 30));
    let rx = s.read().unwrap();
    assert_eq!(rx.open_table(QUEUE_DUE).unwrap().len().unwrap(), 3);
}

/// Issue 18: a retry records the last error (cut to its bound) and keeps it across a
/// reopen; a row written without it (an older version's) reads as "no error"; "retry
/// now" makes rows due at once and leaves rows already due alone.
#[tokio::test]
async fn queue_last_error_old_rows_and_retry_now() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let s = Store::open(&path).unwrap();
    let t = 1_700_000_000;
    s.deliver(delivery(&[], &["r@one", "r@two"], b"m1"))
        .await
        .unwrap();
    let ids: Vec<u64> = s.queued().unwrap().iter().map(|q| q.id).collect();
    let [one, two] = ids[..] else {
        panic!("{ids:?}")
    };
    assert!(s.queued().unwrap().iter().all(|q| q.last_error.is_empty()));
    s.queue_retry(one, 1, t + 3600, "connection refused".into())
        .await
        .unwrap();
    s.queue_retry(two, 2, t + 60, "é".repeat(300))
        .await
        .unwrap();
    s.flush().await.unwrap();
    drop(s);
    let s = reopen(&path).await;
    let rows = s.queued().unwrap();
    assert_eq!(rows[0].last_error, "connection refused");
    assert_eq!((rows[0].attempts, rows[0].next_attempt), (1, t + 3600));
    assert_eq!(rows[1].last_error.len(), queue::MAX_LAST_ERROR);
    // Retry now: both due at t + 10; a row due already keeps its time.
    assert_eq!(s.queue_due_now(vec![one, two], t + 10).await.unwrap(), 2);
    let due: Vec<u64> = s
        .queue_due(t + 10, 10)
        .unwrap()
        .iter()
        .map(|q| q.id)
        .collect();
    assert_eq!(due, vec![one, two]);
    assert_eq!(s.queue_due_now(vec![one, 999], t + 20).await.unwrap(), 0);
    assert_eq!(s.queued().unwrap()[0].next_attempt, t + 10);
    assert_eq!(s.queued().unwrap()[0].attempts, 1, "attempts unchanged");
    // An older version's row: no bytes after the attempt count.
    let (row, body_id) = {
        let rx = s.read().unwrap();
        let v = rx.open_table(QUEUE).unwrap().get(one).unwrap().unwrap();
        super::queue::decode_queue(one, v.value()).unwrap()
    };
    let old = codec::Enc::default()
        .u64(body_id)
        .str(&row.sender)
        .strs(&row.recipients)
        .u64(row.created)
        .u64(row.next_attempt)
        .u32(row.attempts)
        .0;
    s.writer
        .run(true, move |tx| {
            tx.open_table(QUEUE)?.insert(one, old.as_slice())?;
            Ok(())
        })
        .await
        .unwrap();
    let rows = s.queued().unwrap();
    assert_eq!(rows[0].last_error, "");
    assert_eq!(rows[0].attempts, 1);
}
