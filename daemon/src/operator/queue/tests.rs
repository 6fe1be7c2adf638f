//! The operator's queue: grouping by domain, the stuck rule, retry now, and give up
//! (one bounce per message, as expiry sends), on a running relay and a stopped one.

use super::*;
use crate::message::Parsed;
use crate::store::Delivery;
use crate::testing::ManualClock;

const T: u64 = 1_700_000_000;

fn row(id: u64, rcpt: &str, created: u64, next: u64, attempts: u32, err: &str) -> QueuedMessage {
    QueuedMessage {
        id,
        sender: "a@x".into(),
        recipients: vec![rcpt.into()],
        created,
        next_attempt: next,
        attempts,
        last_error: err.into(),
    }
}

#[test]
fn grouping_by_domain_and_the_stuck_rule() {
    let rows = [
        row(1, "a@Slow.test", T + 100, T + 900, 3, "connection refused"),
        row(2, "b@slow.test", T, T + 600, 5, "timed out"),
        row(3, "c@fast.test", T + 3000, T + 3000, 0, ""),
        row(4, "d@slow.test", T + 200, T + 60, 1, ""),
    ];
    let list = by_domain(&rows);
    assert_eq!(
        list,
        vec![
            DomainQueue {
                domain: "slow.test".into(),
                messages: 3,
                attempts: 5,
                next_retry: T + 60,
                oldest: T,
                // The row rescheduled last.
                last_error: "connection refused".into(),
            },
            DomainQueue {
                domain: "fast.test".into(),
                messages: 1,
                attempts: 0,
                next_retry: T + 3000,
                oldest: T + 3000,
                last_error: String::new(),
            },
        ]
    );
    let at = |now| QueueList {
        now,
        domains: list.clone(),
    };
    assert_eq!(
        stuck_line(&at(T + STUCK_AFTER)),
        None,
        "an hour is not more"
    );
    assert_eq!(
        stuck_line(&at(T + STUCK_AFTER + 1)).as_deref(),
        Some("mail for slow.test has waited 1 h (connection refused)")
    );
    let both = stuck_line(&at(T + 3000 + STUCK_AFTER + 1)).unwrap();
    assert!(
        both.contains("slow.test") && both.contains("mail for fast.test has waited 1 h"),
        "{both}"
    );
    assert!(
        !both.contains("fast.test has waited 1 h ("),
        "no error yet: {both}"
    );
}

fn message(from: &str, to: &str) -> Parsed {
    Parsed::legacy(
        format!("From: <{from}>\r\nTo: <{to}>\r\nSubject: [...]\r\n\r\nbody\r\n").into_bytes(),
    )
}

/// Two senders: `a` sent one message to two recipients of `dead.test` (one row) and one
/// to `alive.test`; `b` one to `dead.test`.
async fn fill(store: &Store, a: &str, b: &str) {
    for account in [a, b] {
        store.create_account(account, "h", T).await.unwrap();
    }
    for (from, to) in [
        (a, vec!["x@dead.test", "y@dead.test"]),
        (a, vec!["z@alive.test"]),
        (b, vec!["w@DEAD.test"]),
    ] {
        store
            .deliver(Delivery {
                sender: from.into(),
                local: Vec::new(),
                remote: to.iter().map(|s| s.to_string()).collect(),
                body: message(from, to[0]),
                received: T,
            })
            .await
            .unwrap();
    }
}

/// The bounces in `account`'s INBOX, as text.
fn bounces(store: &Store, account: &str) -> Vec<String> {
    let (_, msgs) = store.messages(account, "INBOX").unwrap();
    msgs.iter()
        .map(|m| {
            let body = store.body(account, "INBOX", m.uid).unwrap().unwrap();
            String::from_utf8_lossy(&body).into_owned()
        })
        .collect()
}

fn check_bounced(store: &Store, a: &str, b: &str) {
    let of_a = bounces(store, a);
    assert_eq!(of_a.len(), 1, "one bounce for a's one message: {of_a:?}");
    let text = &of_a[0];
    assert!(text.contains("report-type=delivery-status"), "{text}");
    assert!(
        text.contains("Final-Recipient: rfc822; x@dead.test\r\n"),
        "{text}"
    );
    assert!(
        text.contains("Final-Recipient: rfc822; y@dead.test\r\n"),
        "{text}"
    );
    // The status expiry gives (bounce::status_code of a 4xx: 4.4.7).
    assert!(text.contains("Status: 4.4.7\r\n"), "{text}");
    assert!(text.contains("last error: connection refused"), "{text}");
    assert!(!text.contains("alive.test"), "{text}");
    let of_b = bounces(store, b);
    assert_eq!(of_b.len(), 1, "{of_b:?}");
    assert!(of_b[0].contains("Final-Recipient: rfc822; w@DEAD.test"));
    let left = by_domain(&store.queued().unwrap());
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].domain, "alive.test");
}

#[tokio::test]
async fn retry_now_and_give_up_on_a_running_relay() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::testing::config(dir.path(), "127.0.0.1");
    let clock = ManualClock::at(T + 10);
    let relay = Relay::open_with_clock(config.clone(), clock.clone()).unwrap();
    let (a, b) = ("a@[127.0.0.1]", "b@[127.0.0.1]");
    fill(&relay.store, a, b).await;
    for r in relay.store.queued().unwrap() {
        relay
            .store
            .queue_retry(r.id, 2, T + 3600, "connection refused".into())
            .await
            .unwrap();
    }
    // Unknown and malformed domains: an error, nothing changes.
    let before = relay.store.queued().unwrap();
    for bad in ["nowhere.test", "", "a@dead.test", "dead test"] {
        assert!(
            retry(&relay.store, Some(&relay), bad, T + 20)
                .await
                .is_err(),
            "{bad:?}"
        );
        assert!(
            bounce(&config, &relay.store, Some(&relay), bad)
                .await
                .is_err()
        );
    }
    let err = retry(&relay.store, Some(&relay), "nowhere.test", T)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no mail for nowhere.test"),
        "{err}"
    );
    assert_eq!(relay.store.queued().unwrap(), before);

    // Retry now: dead.test's rows are due at once, alive.test's are not; the scheduler
    // gets a wake-up.
    let done = retry(&relay.store, Some(&relay), "Dead.Test.", T + 20)
        .await
        .unwrap();
    assert_eq!(
        done,
        QueueAction {
            domain: "dead.test".into(),
            messages: 2,
            relay_running: true,
        }
    );
    let due: Vec<String> = relay
        .store
        .queue_due(T + 20, 10)
        .unwrap()
        .iter()
        .map(domain_of)
        .collect();
    assert_eq!(due, vec!["dead.test", "dead.test"]);
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        relay.outbound_wake.notified(),
    )
    .await
    .expect("the scheduler was woken");

    // Give up: one bounce per message, rows gone, alive.test's row stays.
    let done = bounce(&config, &relay.store, Some(&relay), "dead.test")
        .await
        .unwrap();
    assert_eq!(done.messages, 2);
    check_bounced(&relay.store, a, b);
    assert!(matches!(
        bounce(&config, &relay.store, Some(&relay), "dead.test").await,
        Err(QueueError::UnknownDomain(_))
    ));
}

#[tokio::test]
async fn give_up_on_a_stopped_relay_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::testing::config(dir.path(), "127.0.0.1");
    let path = dir.path().join("s.redb");
    let store = Store::open(&path).unwrap();
    let (a, b) = ("a@[127.0.0.1]", "b@[127.0.0.1]");
    fill(&store, a, b).await;
    for r in store.queued().unwrap() {
        store
            .queue_retry(r.id, 1, T + 60, "connection refused".into())
            .await
            .unwrap();
    }
    let done = bounce(&config, &store, None, "dead.test").await.unwrap();
    assert_eq!(done.messages, 2);
    // Durable before the answer: what a reopen sees.
    drop(store);
    let mut reopened = None;
    for _ in 0..100 {
        match Store::open(&path) {
            Ok(s) => {
                reopened = Some(s);
                break;
            }
            // The writer thread of the dropped store is still closing it.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    let store = reopened.expect("the store reopens within 2 s");
    check_bounced(&store, a, b);
}
