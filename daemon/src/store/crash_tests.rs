//! Crash tests of the write-ahead log (issue 14). A "crash" is a copy of the store file and
//! its log taken while the store runs, between two acknowledged changes: what a `kill -9`
//! leaves on disk (the kernel keeps every write the process made; redb's non-durable
//! commits never reached the file). Opening the copy replays the log.

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::tables::BODIES;
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

fn log_path(store: &Path) -> PathBuf {
    let mut p = store.as_os_str().to_owned();
    p.push(".wal");
    PathBuf::from(p)
}

/// What a `kill -9` now would leave: the store file and, unless `without_log`, its log.
fn crash_copy(store: &Path, into: &Path, without_log: bool) -> PathBuf {
    let copy = into.join("s.redb");
    std::fs::copy(store, &copy).unwrap();
    if !without_log {
        std::fs::copy(log_path(store), log_path(&copy)).unwrap();
    }
    copy
}

/// A `kill -9` now, then the start after it: the store opened from the crash copy (in
/// `into`), which replays the log.
fn recover(store: &Path, into: &Path) -> (PathBuf, Store) {
    let copy = crash_copy(store, into, false);
    let recovered = Store::open(&copy).unwrap();
    (copy, recovered)
}

/// (UID, flags bits, body) of every message in an INBOX.
fn inbox(s: &Store, account: &str) -> Vec<(u32, u8, Vec<u8>)> {
    let (_, metas) = s.messages(account, "INBOX").unwrap();
    metas
        .into_iter()
        .map(|m| {
            let body = s.body(account, "INBOX", m.uid).unwrap().unwrap();
            (m.uid, m.flags.bits, body)
        })
        .collect()
}

#[tokio::test]
async fn acknowledged_changes_survive_a_crash_through_the_log_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let s = Store::open(&path).unwrap();
    s.create_account("a@x", "h", 0).await.unwrap(); // durable: a checkpoint
    let (_, checkpoints) = s.commit_counts();
    for i in 0..3u8 {
        s.deliver(delivery_to("a@x", &[b'm', i])).await.unwrap();
    }
    let deleted = Flags {
        bits: Flags::DELETED,
        keywords: Vec::new(),
    };
    s.store_flags("a@x", "INBOX", vec![2], FlagOp::Add, deleted)
        .await
        .unwrap();
    assert_eq!(s.expunge("a@x", "INBOX", None).await.unwrap(), vec![2]);
    let seen = Flags {
        bits: Flags::SEEN,
        keywords: vec!["$Label".into()],
    };
    s.store_flags("a@x", "INBOX", vec![3], FlagOp::Add, seen)
        .await
        .unwrap();
    assert_eq!(
        s.commit_counts().1,
        checkpoints,
        "no checkpoint: every change went through the log"
    );
    let expected = inbox(&s, "a@x");
    assert_eq!(expected.len(), 2);

    // Without the log the store file holds none of it: the log is what made them durable.
    let bare = tempfile::tempdir().unwrap();
    let copy = crash_copy(&path, bare.path(), true);
    let b = Store::open(&copy).unwrap();
    assert!(
        inbox(&b, "a@x").is_empty(),
        "the redb file alone has no message"
    );
    assert!(
        b.account("a@x").unwrap().is_some(),
        "durable commits are there"
    );
    drop(b);

    let crashed = tempfile::tempdir().unwrap();
    let (copy, c) = recover(&path, crashed.path());
    assert_eq!(
        inbox(&c, "a@x"),
        expected,
        "replayed: same UIDs, flags, bodies"
    );
    // The expunged message stays gone and its body went with it.
    assert_eq!(
        c.read().unwrap().open_table(BODIES).unwrap().len().unwrap(),
        2
    );
    // The replayed store carries on: the next UID follows the replayed ones.
    c.deliver(delivery_to("a@x", b"next")).await.unwrap();
    assert_eq!(inbox(&c, "a@x").last().unwrap().0, 4);
    drop(c);
    // A replay is a checkpoint: the next open replays nothing twice.
    let again = super::tests::reopen(&copy).await;
    assert_eq!(inbox(&again, "a@x").len(), 3);
}

#[tokio::test]
async fn a_torn_or_flipped_tail_loses_only_the_damaged_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let s = Store::open(&path).unwrap();
    s.create_account("a@x", "h", 0).await.unwrap();
    s.deliver(delivery_to("a@x", b"first")).await.unwrap();
    // Where the second record starts: the first batch ends on a block boundary.
    let second_at = s.log_bytes();
    s.deliver(delivery_to("a@x", &[b'x'; 3000])).await.unwrap();
    for damage in ["flip", "truncate"] {
        let crashed = tempfile::tempdir().unwrap();
        let copy = crash_copy(&path, crashed.path(), false);
        let wal = std::fs::OpenOptions::new()
            .write(true)
            .open(log_path(&copy))
            .unwrap();
        use std::os::unix::fs::FileExt;
        match damage {
            "flip" => wal.write_all_at(&[0xA5], second_at + 100).unwrap(),
            _ => wal.write_all_at(&[0u8; 2048], second_at + 1024).unwrap(),
        }
        let c = Store::open(&copy).unwrap();
        let got = inbox(&c, "a@x");
        assert_eq!(got.len(), 1, "{damage}: the valid prefix is replayed");
        assert_eq!(got[0].2, b"first");
    }
}

#[tokio::test]
async fn a_checkpoint_empties_the_log_and_later_records_follow_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let s = Store::open(&path).unwrap();
    s.create_account("a@x", "h", 0).await.unwrap();
    for i in 0..5u8 {
        s.deliver(delivery_to("a@x", &[i; 2000])).await.unwrap();
    }
    s.flush().await.unwrap();
    assert_eq!(s.log_bytes(), 0, "written from the start again");
    s.deliver(delivery_to("a@x", b"after")).await.unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let (_, c) = recover(&path, crashed.path());
    let got = inbox(&c, "a@x");
    assert_eq!(got.len(), 6, "5 from the checkpoint, 1 from the log");
    assert_eq!(got[5], (6, 0, b"after".to_vec()));
}

#[tokio::test]
async fn a_big_message_skips_the_log_and_is_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let s = Store::open(&path).unwrap();
    s.create_account("a@x", "h", 0).await.unwrap();
    let (_, d0) = s.commit_counts();
    let syncs = s.log_syncs();
    s.deliver(delivery_to("a@x", &vec![b'b'; writer::MAX_RECORD + 1]))
        .await
        .unwrap();
    assert_eq!(s.commit_counts().1, d0 + 1);
    assert_eq!(s.log_syncs(), syncs);
    let crashed = tempfile::tempdir().unwrap();
    let c = Store::open(&crash_copy(&path, crashed.path(), true)).unwrap();
    assert_eq!(inbox(&c, "a@x").len(), 1, "in the redb file itself");
}

/// Random interleavings of deliveries, flag changes, expunges, checkpoints and crashes:
/// after every crash the replayed store holds exactly the acknowledged state.
#[tokio::test]
async fn random_interleavings_never_lose_or_revive_anything() {
    for seed in 0..12u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let mut path = dir.path().join("s.redb");
        let mut s = Store::open(&path).unwrap();
        s.create_account("a@x", "h", 0).await.unwrap();
        s.create_account("b@x", "h", 0).await.unwrap();
        let mut crashes = Vec::new();
        for step in 0..60 {
            let who = if rng.random_bool(0.5) { "a@x" } else { "b@x" };
            match rng.random_range(0..10) {
                0..=3 => {
                    let size = rng.random_range(1..6000);
                    let body: Vec<u8> = (0..size).map(|_| rng.random()).collect();
                    let mut d = delivery_to(who, &body);
                    d.local
                        .push(if who == "a@x" { "b@x" } else { "a@x" }.into());
                    s.deliver(d).await.unwrap();
                }
                4 | 5 => {
                    let uids: Vec<u32> = s
                        .messages(who, "INBOX")
                        .unwrap()
                        .1
                        .iter()
                        .map(|m| m.uid)
                        .filter(|_| rng.random_bool(0.5))
                        .collect();
                    let f = Flags {
                        bits: Flags::DELETED,
                        keywords: Vec::new(),
                    };
                    s.store_flags(who, "INBOX", uids, FlagOp::Add, f)
                        .await
                        .unwrap();
                }
                6 => {
                    s.expunge(who, "INBOX", None).await.unwrap();
                }
                7 => s.flush().await.unwrap(),
                _ => {
                    // Crash: the state on disk must be exactly what was acknowledged.
                    let expected = (inbox(&s, "a@x"), inbox(&s, "b@x"));
                    let crashed = tempfile::tempdir().unwrap();
                    let (copy, c) = recover(&path, crashed.path());
                    drop(s);
                    assert_eq!(
                        (inbox(&c, "a@x"), inbox(&c, "b@x")),
                        expected,
                        "seed {seed}, step {step}"
                    );
                    // Carry on from the crashed copy, as a restarted relay would.
                    s = c;
                    path = copy;
                    crashes.push(crashed);
                }
            }
        }
    }
}

/// Every kind of log record replays to what was acknowledged: APPEND, COPY, MOVE,
/// removal regardless of flags, and the push queue's reschedule and delete.
#[tokio::test]
async fn every_record_kind_replays() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let s = Store::open(&path).unwrap();
    s.create_account("a@x", "h", 0).await.unwrap();
    s.create_mailbox("a@x", "Archive").await.unwrap();
    s.set_device_token("a@x", "tok", 1000).await.unwrap();
    let (_, checkpoints) = s.commit_counts();
    let seen = Flags {
        bits: Flags::SEEN,
        keywords: vec!["$K".into()],
    };
    let (_, uid) = s
        .append(
            "a@x",
            "INBOX",
            seen,
            1_600_000_000,
            Parsed::legacy(b"appended".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(uid, 1);
    let push = PushRequest {
        accounts: vec!["a@x".into()],
        now: 1000,
        tokens_set_from: 0,
        tokens_set_until: u64::MAX,
    };
    let (_, jobs) = s
        .deliver_with_push(delivery_to("a@x", b"pushed"), u64::MAX, Some(push.clone()))
        .await
        .unwrap();
    assert_eq!(jobs, 1);
    s.deliver_with_push(delivery_to("a@x", b"third"), u64::MAX, Some(push))
        .await
        .unwrap();
    let ids: Vec<u64> = s.push_jobs().unwrap().iter().map(|j| j.id).collect();
    s.reschedule_push_job(ids[0], 2, 5000).await.unwrap();
    s.delete_push_job(ids[1]).await.unwrap();
    s.copy("a@x", "INBOX", "Archive", vec![1], false)
        .await
        .unwrap(); // COPY
    s.copy("a@x", "INBOX", "Archive", vec![2], true)
        .await
        .unwrap(); // MOVE
    s.remove_messages("a@x", vec![("INBOX".into(), 3)])
        .await
        .unwrap();
    assert_eq!(
        s.commit_counts().1,
        checkpoints,
        "all of it through the log"
    );
    let listing = |st: &Store| {
        let mut out = Vec::new();
        for name in ["INBOX", "Archive"] {
            let (info, metas) = st.messages("a@x", name).unwrap();
            for m in metas {
                let body = st.body("a@x", name, m.uid).unwrap().unwrap();
                out.push((
                    name,
                    info.uid_next,
                    m.uid,
                    m.flags.clone(),
                    m.internal_date,
                    body,
                ));
            }
        }
        out
    };
    let expected = (listing(&s), s.push_jobs().unwrap());
    assert_eq!(expected.0.len(), 3, "{:?}", expected.0);
    assert_eq!(expected.1.len(), 1);
    assert_eq!(
        (expected.1[0].attempts, expected.1[0].next_attempt),
        (2, 5000)
    );
    let crashed = tempfile::tempdir().unwrap();
    let (_, c) = recover(&path, crashed.path());
    assert_eq!((listing(&c), c.push_jobs().unwrap()), expected);
}
