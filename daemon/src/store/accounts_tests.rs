//! Tests of the operator's account tables (issue 18 item 3): the creation time appended to
//! the account row (rows written before it read as unknown), blocked addresses, account
//! pages with their figures, and deletions that stay deleted after a crash.

use super::codec::Enc;
use super::tables::ACCOUNTS;
use super::*;
use crate::message::Parsed;

fn delivery_to(rcpt: &str, body: &[u8]) -> Delivery {
    Delivery {
        sender: "s@x".into(),
        local: vec![rcpt.to_string()],
        remote: Vec::new(),
        body: Parsed::legacy(body.to_vec()),
        received: 1_700_000_000,
    }
}

#[tokio::test]
async fn the_creation_time_is_kept_and_old_rows_read_as_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let s = Store::open(&path).unwrap();
    s.create_account("new@x", "h", 1_700_000_123).await.unwrap();
    // A row as the program wrote it before the field existed: hash, last login, e2ee.
    let old = Enc::default().str("h-old").u64(86_400 * 5).u8(1).0;
    {
        let tx = s.db.begin_write().unwrap();
        tx.open_table(ACCOUNTS)
            .unwrap()
            .insert("old@x", old.as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    let new = s.account("new@x").unwrap().unwrap();
    assert_eq!(new.created, Some(1_700_000_123));
    let before = s.account("old@x").unwrap().unwrap();
    assert_eq!(before.created, None);
    assert_eq!(before.password_hash, "h-old");
    assert_eq!(before.last_login_day, 86_400 * 5);
    // Rewriting an old row (a login day) keeps it readable, still without a time.
    s.set_last_login_day("old@x", 86_400 * 9).await.unwrap();
    drop(s);
    let s = super::tests::reopen(&path).await;
    let after = s.account("old@x").unwrap().unwrap();
    assert_eq!((after.created, after.last_login_day), (None, 86_400 * 9));
    assert_eq!(
        s.account("new@x").unwrap().unwrap().created,
        Some(1_700_000_123)
    );
}

#[tokio::test]
async fn a_blocked_address_cannot_be_created_until_unblocked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let s = Store::open(&path).unwrap();
    s.create_account("a@x", "h", 10).await.unwrap();
    s.deliver(delivery_to("a@x", b"one")).await.unwrap();
    // Blocking an account deletes it with its messages, in the same commit.
    match s.block_address("a@x", 100).await.unwrap() {
        Block::New(Some(removal)) => assert_eq!(removal.messages, 1),
        other => panic!("{other:?}"),
    }
    assert!(s.account("a@x").unwrap().is_none());
    assert_eq!(s.block_address("a@x", 200).await.unwrap(), Block::Already);
    assert!(matches!(
        s.create_account("a@x", "h2", 300).await,
        Err(StoreError::Blocked)
    ));
    assert_eq!(s.block_address("b@x", 400).await.unwrap(), Block::New(None));
    // Durable, and kept across a restart.
    drop(s);
    let s = super::tests::reopen(&path).await;
    assert!(s.is_blocked("a@x").unwrap());
    assert!(!s.is_blocked("c@x").unwrap());
    let (page, more) = s.blocked_page(None, None, 10).unwrap();
    let names: Vec<_> = page.iter().map(|b| (b.address.as_str(), b.since)).collect();
    assert_eq!(names, [("a@x", 100), ("b@x", 400)]);
    assert!(!more);
    assert!(s.unblock_address("a@x").await.unwrap());
    assert!(!s.unblock_address("a@x").await.unwrap());
    assert_eq!(
        s.create_account("a@x", "h2", 500).await.unwrap(),
        Created::New
    );
    assert_eq!(s.blocked_count().unwrap(), 1);
}

#[tokio::test]
async fn account_pages_carry_the_figures_and_stay_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("s.redb")).unwrap();
    for name in ["c@x", "a@x", "b@x", "ab@x"] {
        s.create_account(name, "h", 86_400 * 2 + 7).await.unwrap();
    }
    s.deliver(delivery_to("b@x", b"12345")).await.unwrap();
    s.deliver(delivery_to("b@x", b"123")).await.unwrap();
    let (first, more) = s.account_page(None, None, 2).unwrap();
    let names: Vec<_> = first.iter().map(|f| f.account.address.as_str()).collect();
    assert_eq!(names, ["a@x", "ab@x"]);
    assert!(more);
    let (rest, more) = s.account_page(Some("ab@x"), None, 2).unwrap();
    assert!(!more);
    assert_eq!(rest[0].account.address, "b@x");
    assert_eq!((rest[0].messages, rest[0].bytes), (2, 8));
    assert_eq!(rest[0].bytes, s.usage("b@x").unwrap());
    assert_eq!((rest[1].messages, rest[1].bytes), (0, 0));
    let (found, more) = s.account_page(None, Some("b"), 10).unwrap();
    let names: Vec<_> = found.iter().map(|f| f.account.address.as_str()).collect();
    assert_eq!(names, ["ab@x", "b@x"]);
    assert!(!more);
}

/// What a `kill -9` now would leave: the store file and its log, copied.
fn crash_copy(store: &std::path::Path, into: &std::path::Path) -> std::path::PathBuf {
    let copy = into.join("s.redb");
    std::fs::copy(store, &copy).unwrap();
    let log = |p: &std::path::Path| {
        let mut s = p.as_os_str().to_owned();
        s.push(".wal");
        std::path::PathBuf::from(s)
    };
    std::fs::copy(log(store), log(&copy)).unwrap();
    copy
}

#[tokio::test]
async fn a_deleted_account_stays_deleted_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let s = Store::open(&path).unwrap();
    s.create_account("a@x", "h", 0).await.unwrap();
    s.create_account("b@x", "h", 0).await.unwrap();
    // Deliveries are only in the write-ahead log so far.
    for i in 0..3u8 {
        s.deliver(delivery_to("a@x", &[b'm', i])).await.unwrap();
    }
    s.deliver(delivery_to("b@x", b"kept")).await.unwrap();
    assert!(s.delete_account("a@x").await.unwrap().is_some());
    // The answer came: a crash now must not bring anything of it back.
    let crash = tempfile::tempdir().unwrap();
    let copy = crash_copy(&path, crash.path());
    let recovered = Store::open(&copy).unwrap();
    assert!(recovered.account("a@x").unwrap().is_none());
    assert!(recovered.account_messages("a@x").unwrap().is_empty());
    assert_eq!(recovered.usage("a@x").unwrap(), 0);
    assert_eq!(recovered.account_messages("b@x").unwrap().len(), 1);
    assert!(recovered.delete_account("a@x").await.unwrap().is_none());
}
