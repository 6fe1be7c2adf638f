//! Connection limits against the real binary: `max_smtp_connections` per submission
//! port (spec/relay.md §3) and `max_imap_connections` (IMAP-7).

use std::time::Duration;

use relaybox_blackbox::{Account, Imap, Relay, Smtp, create_account, encrypted_mail};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_submission_connection_is_refused_421() {
    let relay = Relay::start(&["max_smtp_connections = 2"]).await;
    let a = Account::random();
    create_account(&relay, &a).await;
    let mut first = Smtp::connect(relay.submission_addr()).await;
    first.greeting().await;
    let mut second = Smtp::connect(relay.submission_addr()).await;
    second.greeting().await;
    let mut third = Smtp::connect(relay.submission_addr()).await;
    let r = third.reply("connect over the limit").await;
    assert_eq!(r.code, 421, "third concurrent connection: {r}");
    let (closed, _) = third.conn.wait_closed(Duration::from_secs(5)).await;
    assert!(closed, "refused connection is closed");
    // The two admitted ones work.
    for (i, s) in [&mut first, &mut second].into_iter().enumerate() {
        s.ehlo().await;
        s.starttls().await;
        s.ehlo().await;
        let r = s.auth_plain(&a.addr, &a.password).await;
        assert_eq!(r.code, 235, "connection {i}: {r}");
        let m = encrypted_mail(&a.addr, &[&a.addr]);
        let r = s.send_mail(&a.addr, &[&a.addr], &m.bytes).await;
        assert_eq!(r.code, 250, "connection {i}: {r}");
    }
    // Per submission port: 465 has its own slots while 587 is full.
    let c465 = Account::random();
    let m = encrypted_mail(&c465.addr, &[&a.addr]);
    let r = Smtp::submit(&relay, &c465, &[&a.addr], &m.bytes).await;
    assert_eq!(r.code, 250, "465 while 587 is full: {r}");
    // A freed slot admits a new connection: the relay frees it when it has closed the
    // session, a moment after QUIT's reply, so connect until a greeting comes (bounded).
    first.quit().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let _fourth = loop {
        let mut fourth = Smtp::connect(relay.submission_addr()).await;
        let r = fourth.reply("connect after a slot was freed").await;
        if r.code == 220 {
            break fourth;
        }
        assert!(
            r.code == 421 && tokio::time::Instant::now() < deadline,
            "after one connection ended: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(Imap::fetch_inbox(&relay, &a).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_connection_limit() {
    let relay = Relay::start(&["max_imap_connections = 2"]).await;
    let mut first = Imap::connect(relay.imap_addr()).await;
    first.greeting().await;
    let mut second = Imap::connect(relay.imap_addr()).await;
    second.greeting().await;
    let mut third = Imap::connect(relay.imap_addr()).await;
    // IMAP-7: refuse new sessions over the limit.
    match third.read_line().await {
        Ok(l) => assert!(l.raw.starts_with(b"* BYE"), "third IMAP connection: {l}"),
        Err(e) => assert!(e.is_closed(), "third IMAP connection: {e}"),
    }
    let r = first.cmd("NOOP").await;
    assert!(r.is_ok(), "{r}");
    let r = second.cmd("NOOP").await;
    assert!(r.is_ok(), "{r}");
}
