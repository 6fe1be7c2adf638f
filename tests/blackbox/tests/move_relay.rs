//! Moving a relay to another machine (issue 17 item 4, `relaybox move`), with real relays
//! as hosts on loopback addresses and a private DNS server: the old relay (`r1`) moves to a
//! new machine (`127.a.b.9`) while its users and a peer relay (`r2`) go on sending. Every
//! message acknowledged before the move is in the final backup; every one after it is
//! forwarded by the old machine over HTTPS `/mxdeliv` to the new one — also mail from the
//! peer, which the new machine takes as checked by the old one (same DKIM key); none is
//! lost, none arrives twice. The old machine ends its IMAP sessions and refuses logins and
//! new accounts with a temporary answer; after the DNS change the peer reaches the new
//! machine directly.

use std::time::Duration;

use relaybox_blackbox::encrypted_mail;
use relaybox_blackbox::federation::{DELIVERY_TIMEOUT, DomainRelays, FedRelay, IMAPS};
use relaybox_blackbox::imap::Imap;
use relaybox_blackbox::mail::stored_message_id;
use relaybox_blackbox::relay::{arg, run_tool, tool_text};

const TOOL_TIME: Duration = Duration::from_secs(60);

fn count(inbox: &[Vec<u8>], id: &str) -> usize {
    inbox
        .iter()
        .filter(|m| stored_message_id(m).as_deref() == Some(id))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_moves_without_losing_mail() {
    let mut set = DomainRelays::start(2, |_| Vec::new()).await;
    let (r1, r2) = (&set.relays[0], &set.relays[1]);
    let (a, b, c) = (r1.account(), r1.account(), r2.account());
    for (r, acc) in [(r1, &a), (r1, &b), (r2, &c)] {
        r.create_account(acc).await;
    }
    // Before the move: stored on the old machine, so in the final backup.
    let before = encrypted_mail(&a.addr, &[&b.addr]);
    assert_eq!(r1.submit(&a, &[&b.addr], &before.bytes).await.code, 250);
    // Queued on the old machine at the move (the peer is down): the old machine delivers
    // it later, the new one must not send it again.
    set.relays[1].stop().await;
    let r1 = &set.relays[0];
    let queued = encrypted_mail(&a.addr, &[&c.addr]);
    assert_eq!(r1.submit(&a, &[&c.addr], &queued.bytes).await.code, 250);
    // Sessions of b that are open when the relay moves: one in IDLE (as Delta Chat
    // waits), one between commands.
    let mut open = r1.imap_login(&b).await;
    open.select("INBOX").await;
    let tag = open.tag();
    open.send_raw(format!("{tag} IDLE\r\n").as_bytes()).await;
    let cont = open.read_line().await.expect("IDLE continuation");
    assert!(cont.text().starts_with('+'), "IDLE: {cont:?}");
    let mut between = r1.imap_login(&b).await;
    between.select("INBOX").await;

    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("passphrase");
    std::fs::write(&pass, "move along\n").unwrap();
    let final_backup = dir.path().join("final.backup");
    let new_ip = set.net.host(9);
    let to = new_ip.to_string();
    let config = r1.config_path();
    let move_to = async |out: &std::path::Path| {
        let args = [
            "move",
            "--config",
            arg(&config),
            "--to",
            &to,
            "--out",
            arg(out),
            "--passphrase-file",
            arg(&pass),
        ];
        run_tool(&args, &[], TOOL_TIME).await
    };
    let moved = move_to(&final_backup).await;
    assert!(
        moved.status.success(),
        "relaybox move: {}",
        tool_text(&moved)
    );
    assert!(final_backup.exists());
    let ini = std::fs::read_to_string(r1.config_path()).unwrap();
    assert!(ini.contains(&format!("moved_to = {to}")), "{ini}");

    // The open session was told to come back; a new login is refused for now.
    let bye = open
        .wait_untagged(Duration::from_secs(10), |l| l.starts_with("* BYE"))
        .await;
    let bye = bye
        .map(|l| l.text())
        .unwrap_or_else(|e| format!("no BYE: {e:?}"));
    assert!(
        bye.contains("moving"),
        "the idling session at the move: {bye}"
    );
    // ... and the other one right after its next command's answer.
    let noop = between.cmd("NOOP").await;
    let bye = between.read_line().await.map(|l| l.text());
    assert!(
        bye.as_ref()
            .is_ok_and(|l| l.starts_with("* BYE") && l.contains("moving")),
        "the other session after NOOP ({noop}): {bye:?}"
    );
    let mut late = Imap::connect_tls(r1.sock(IMAPS)).await;
    late.greeting().await;
    let r = late.login(&b.addr, &b.password).await;
    assert!(
        r.tagged.contains("NO [UNAVAILABLE]") && r.tagged.contains("moving"),
        "login at the moving relay: {r}"
    );
    // A second move is refused: the final backup was taken at the first.
    let again = move_to(&dir.path().join("second.backup")).await;
    assert!(
        !again.status.success(),
        "a second move: {}",
        tool_text(&again)
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already moving"),
        "{}",
        tool_text(&again)
    );

    set.relays[1].start().await;
    let (r1, r2) = (&set.relays[0], &set.relays[1]);
    // After the move, before the new machine runs: a submission on the old machine and
    // mail from the peer (DNS still points at the old machine) are accepted and wait.
    let submitted = encrypted_mail(&a.addr, &[&b.addr]);
    assert_eq!(r1.submit(&a, &[&b.addr], &submitted.bytes).await.code, 250);
    let from_peer = encrypted_mail(&c.addr, &[&b.addr]);
    assert_eq!(r2.submit(&c, &[&b.addr], &from_peer.bytes).await.code, 250);
    // No new account on the old machine (it would not be on the new one).
    let newcomer = r1.account();
    let mut s = relaybox_blackbox::smtp::Smtp::connect_tls(r1.sock(465)).await;
    s.greeting().await;
    s.ehlo().await;
    let r = s.auth_plain(&newcomer.addr, &newcomer.password).await;
    assert!(
        (400..500).contains(&r.code),
        "account creation on the moving relay: {r}"
    );

    // The new machine: the final backup restored, then started on its own address.
    let mut new = FedRelay::new(new_ip, &r1.mail_domain, &r1.extra);
    let restored = run_tool(
        &[
            "restore",
            "--config",
            arg(&new.config_path()),
            "--passphrase-file",
            arg(&pass),
            arg(&final_backup),
        ],
        &[],
        TOOL_TIME,
    )
    .await;
    assert!(
        restored.status.success(),
        "restore: {}",
        tool_text(&restored)
    );
    let restored_ini = std::fs::read_to_string(new.config_path()).unwrap();
    assert!(
        !restored_ini.contains("moved_to"),
        "the restored config still moves: {restored_ini}"
    );
    new.start().await;
    // The old machine hands over what it holds.
    let left = r1.wait_queue_empty(DELIVERY_TIMEOUT).await;
    assert_eq!(left, 0, "old machine's queue; log:\n{}", r1.log_tail(40));

    // DNS now points at the new machine; the peer reaches it directly.
    let mut zone = set.dns.zone().clone();
    for (name, ip) in zone.a.iter_mut() {
        if *name == r1.mail_domain {
            *ip = new_ip;
        }
    }
    set.dns.replace_zone(zone);
    let (r1, r2) = (&set.relays[0], &set.relays[1]);
    let after_dns = encrypted_mail(&c.addr, &[&b.addr]);
    assert_eq!(r2.submit(&c, &[&b.addr], &after_dns.bytes).await.code, 250);

    let ids = [
        &before.message_id,
        &submitted.message_id,
        &from_peer.message_id,
        &after_dns.message_id,
    ];
    let inbox = new
        .wait_inbox(&b, DELIVERY_TIMEOUT, |inbox| {
            ids.iter().all(|id| count(inbox, id) >= 1)
        })
        .await;
    for (id, what) in ids.iter().zip([
        "acknowledged before the move",
        "submitted at the old machine after the move",
        "from the peer to the old machine after the move",
        "from the peer to the new machine after the DNS change",
    ]) {
        assert_eq!(
            count(&inbox, id),
            1,
            "message {what}: {} cop(ies) at the new machine; new log:\n{}\nold log:\n{}",
            count(&inbox, id),
            new.log_tail(30),
            r1.log_tail(30)
        );
    }
    assert_eq!(r2.wait_queue_empty(DELIVERY_TIMEOUT).await, 0);
    // The message queued at the move reached the peer once (from the old machine), and
    // the peer's sender got no bounce.
    let left = set.relays[0].wait_queue_empty(DELIVERY_TIMEOUT).await;
    assert_eq!(left, 0, "old machine's queue");
    assert_eq!(new.wait_queue_empty(Duration::from_secs(5)).await, 0);
    let peer_inbox = r2
        .wait_inbox(&c, DELIVERY_TIMEOUT, |inbox| {
            count(inbox, &queued.message_id) >= 1
        })
        .await;
    assert_eq!(
        count(&peer_inbox, &queued.message_id),
        1,
        "the message queued at the move"
    );
    assert_eq!(peer_inbox.len(), 1, "the peer's inbox (a bounce?)");
}
