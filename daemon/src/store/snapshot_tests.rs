//! Store snapshots: a round trip keeps every row, without messages keeps the relay, and a
//! damaged, newer or misplaced snapshot is refused without writing anything.

use super::snapshot::{SnapshotError, import};
use super::*;
use crate::message::Parsed;

async fn relay_with_mail(dir: &Path) -> Store {
    let s = Store::open(&dir.join("s.redb")).unwrap();
    s.create_account("a@x", "{SHA512-CRYPT}$6$h", 86_400 * 5)
        .await
        .unwrap();
    s.create_account("b@x", "{SHA512-CRYPT}$6$g", 86_400 * 5)
        .await
        .unwrap();
    s.secret("dkim", || b"private key".to_vec()).unwrap();
    s.deliver(Delivery {
        sender: "b@x".into(),
        local: vec!["a@x".into()],
        remote: vec!["c@far.example".into()],
        body: Parsed::legacy(b"Subject: hi\r\n\r\nencrypted\r\n".to_vec()),
        received: 1_700_000_000,
    })
    .await
    .unwrap();
    s
}

fn snapshot(s: &Store, messages: bool) -> Vec<u8> {
    let mut out = Vec::new();
    s.export(messages, &mut out).unwrap();
    out
}

#[tokio::test]
async fn a_round_trip_keeps_accounts_messages_queue_and_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let s = relay_with_mail(dir.path()).await;
    let bytes = snapshot(&s, true);
    let target = dir.path().join("restored.redb");
    let counts = import(&target, &mut bytes.as_slice()).unwrap();
    assert!(counts.tables >= 11 && counts.rows > 0, "{counts:?}");
    let r = Store::open(&target).unwrap();
    assert_eq!(r.accounts().unwrap(), s.accounts().unwrap());
    assert_eq!(
        r.body("a@x", "INBOX", 1).unwrap(),
        s.body("a@x", "INBOX", 1).unwrap()
    );
    assert!(r.body("a@x", "INBOX", 1).unwrap().is_some());
    assert_eq!(r.queued().unwrap(), s.queued().unwrap());
    assert_eq!(r.queued().unwrap().len(), 1);
    assert_eq!(
        r.secret("dkim", || b"new".to_vec()).unwrap(),
        b"private key"
    );
    // The id counter goes on where it was: a new delivery gets fresh ids.
    r.create_account("c@x", "h", 0).await.unwrap();
    assert_eq!(r.account_count().unwrap(), 3);
}

#[tokio::test]
async fn without_messages_the_relay_stays_and_the_mail_goes() {
    let dir = tempfile::tempdir().unwrap();
    let s = relay_with_mail(dir.path()).await;
    let bytes = snapshot(&s, false);
    assert!(bytes.len() < snapshot(&s, true).len());
    let target = dir.path().join("restored.redb");
    import(&target, &mut bytes.as_slice()).unwrap();
    let r = Store::open(&target).unwrap();
    assert_eq!(r.accounts().unwrap().len(), 2);
    assert_eq!(r.mailboxes("a@x").unwrap()[0].name, "INBOX");
    assert!(r.messages("a@x", "INBOX").unwrap().1.is_empty());
    assert!(r.queued().unwrap().is_empty());
    assert_eq!(
        r.secret("dkim", || b"new".to_vec()).unwrap(),
        b"private key"
    );
}

#[tokio::test]
async fn damaged_newer_or_misplaced_snapshots_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = relay_with_mail(dir.path()).await;
    let bytes = snapshot(&s, true);
    // Cut short anywhere after the header: refused, and nothing is committed.
    for cut in [9, 17, 40, bytes.len() / 2, bytes.len() - 1] {
        let target = dir.path().join(format!("cut{cut}.redb"));
        let err = import(&target, &mut &bytes[..cut]).unwrap_err();
        assert!(
            matches!(err, SnapshotError::Damaged(_)),
            "cut at {cut}: {err}"
        );
        let r = Store::open(&target).unwrap();
        assert_eq!(
            r.account_count().unwrap(),
            0,
            "cut at {cut}: nothing committed"
        );
    }
    // Another file.
    let err = import(
        &dir.path().join("x.redb"),
        &mut b"PK\x03\x04 a zip".as_slice(),
    );
    assert!(matches!(err, Err(SnapshotError::Damaged(_))));
    // A snapshot of a newer schema.
    let mut newer = bytes.clone();
    newer[8..16].copy_from_slice(&(SCHEMA_VERSION + 1).to_le_bytes());
    let err = import(&dir.path().join("n.redb"), &mut newer.as_slice()).unwrap_err();
    assert!(matches!(err, SnapshotError::TooNew { .. }), "{err}");
    // A table this program does not know.
    let mut unknown = bytes[..16].to_vec();
    unknown.extend_from_slice(b"T\x05\x00bogusE\0\0\0\0\0\0\0\0");
    let err = import(&dir.path().join("u.redb"), &mut unknown.as_slice()).unwrap_err();
    assert!(err.to_string().contains("unknown table bogus"), "{err}");
    // Never over an existing store.
    let err = import(&dir.path().join("s.redb"), &mut bytes.as_slice()).unwrap_err();
    assert!(matches!(err, SnapshotError::Exists(_)));
    assert_eq!(s.account_count().unwrap(), 2);
}

#[tokio::test]
async fn a_snapshot_is_one_moment_while_the_writer_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let s = relay_with_mail(dir.path()).await;
    // Writes between the start of two snapshots appear in the second only.
    let first = snapshot(&s, true);
    s.create_account("late@x", "h", 0).await.unwrap();
    let second = snapshot(&s, true);
    let (a, b) = (dir.path().join("a.redb"), dir.path().join("b.redb"));
    import(&a, &mut first.as_slice()).unwrap();
    import(&b, &mut second.as_slice()).unwrap();
    assert!(
        Store::open(&a)
            .unwrap()
            .account("late@x")
            .unwrap()
            .is_none()
    );
    assert!(
        Store::open(&b)
            .unwrap()
            .account("late@x")
            .unwrap()
            .is_some()
    );
}

/// Issue 17, `relaybox move`: the final snapshot leaves the outbound queue behind (the old
/// machine delivers it), with the bodies only it used, and counts the shared bodies' other
/// references only — so deleting the last mailbox copy on the new store frees the body.
#[tokio::test]
async fn a_hand_over_leaves_the_queue_behind() {
    let dir = tempfile::tempdir().unwrap();
    let s = relay_with_mail(dir.path()).await;
    s.deliver(Delivery {
        sender: "a@x".into(),
        local: Vec::new(),
        remote: vec!["d@far.example".into()],
        body: Parsed::legacy(b"Subject: only queued\r\n\r\nencrypted\r\n".to_vec()),
        received: 1_700_000_001,
    })
    .await
    .unwrap();
    let bodies = |st: &Store| {
        st.read()
            .unwrap()
            .open_table(BODIES)
            .unwrap()
            .len()
            .unwrap()
    };
    assert_eq!(s.queued().unwrap().len(), 2);
    assert_eq!(bodies(&s), 2);
    let mut bytes = Vec::new();
    s.view().unwrap().export_without_queue(&mut bytes).unwrap();
    let target = dir.path().join("new.redb");
    import(&target, &mut bytes.as_slice()).unwrap();
    let r = Store::open(&target).unwrap();
    assert!(r.queued().unwrap().is_empty(), "the queue stayed behind");
    assert_eq!(bodies(&r), 1, "the queue-only body stayed behind");
    assert_eq!(
        r.body("a@x", "INBOX", 1).unwrap(),
        s.body("a@x", "INBOX", 1).unwrap()
    );
    r.delete_account("a@x").await.unwrap();
    assert_eq!(bodies(&r), 0, "the shared body had one reference left");
    // The old store is unchanged.
    assert_eq!(s.queued().unwrap().len(), 2);
}
