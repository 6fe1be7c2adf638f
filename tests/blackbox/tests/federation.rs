//! Federation between relays (issue 3; spec/relay.md §8 outbound, §9 inbound, §19
//! IP-only mode): two relays as two hosts on their own loopback addresses with the
//! standard ports, a private dnsmasq for their A/MX/TXT records (domain mode) or none
//! (IP-only mode), and the faults of the issue: peer down, permanent refusal (bounce),
//! port 25 closed (HTTPS `/mxdeliv`), port 443 closed (SMTP), sender restarted with a
//! full queue.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use relaybox_blackbox::dns::query;
use relaybox_blackbox::federation::{DELIVERY_TIMEOUT, DomainRelays, FedRelay, Net, ip_only_pair};
use relaybox_blackbox::mail::{header_values, stored_message_id};
use relaybox_blackbox::{Account, Mail, MailBuilder, encrypted_mail};

/// Recipients of outbound attempts that failed temporarily (OUT-6), in `/metrics`.
const DEFERRED: &str = "relaybox_outbound_attempts_total{result=\"temporary\"}";
/// How long the sender may take to empty its queue once the peer has the message.
const QUEUE_WAIT: Duration = Duration::from_secs(30);

/// Wait until `r` made at least `n` attempts (of one recipient each) that failed
/// temporarily (asserted).
async fn wait_deferred(r: &FedRelay, n: u64, what: &str) {
    let seen = r.wait_sample(DEFERRED, n, DELIVERY_TIMEOUT).await;
    assert!(
        seen >= n,
        "{what}: {seen} failed attempt(s) within {DELIVERY_TIMEOUT:?}, expected {n}; log:\n{}",
        r.log_tail(40)
    );
}

/// Wait until `r`'s outbound queue is empty (asserted): it is done with every message,
/// so no further copy can come from it.
async fn wait_queue_empty(r: &FedRelay) {
    let left = r.wait_queue_empty(QUEUE_WAIT).await;
    assert_eq!(
        left,
        0,
        "{} still has {left} queued message(s) after {QUEUE_WAIT:?}; log:\n{}",
        r.mail_domain,
        r.log_tail(40)
    );
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn ids(inbox: &[Vec<u8>]) -> Vec<String> {
    inbox.iter().filter_map(|m| stored_message_id(m)).collect()
}

fn count_id(inbox: &[Vec<u8>], id: &str) -> usize {
    ids(inbox).iter().filter(|i| i.as_str() == id).count()
}

/// IN-7 and privacy item 5: the stored copy carries no DKIM-Signature, Received or
/// Authentication-Results header, and the sending client's IP appears nowhere.
fn assert_clean_copy(msg: &[u8], client_ip: Ipv4Addr, what: &str) {
    for h in ["DKIM-Signature", "Received", "Authentication-Results"] {
        assert!(
            header_values(msg, h).is_empty(),
            "{what}: stored copy still has {h}: {:?}\n{}",
            header_values(msg, h),
            String::from_utf8_lossy(&msg[..msg.len().min(3000)])
        );
    }
    assert!(
        !contains(msg, client_ip.to_string().as_bytes()),
        "{what}: the sender's client IP {client_ip} appears in the relayed message:\n{}",
        String::from_utf8_lossy(&msg[..msg.len().min(3000)])
    );
}

/// `from` (an account of `r_from`) sends one encrypted message to `to` (an account of
/// `r_to`), submitting from the local address `client`; it must arrive exactly once and
/// clean. Returns the stored copy.
async fn relay_one(
    r_from: &FedRelay,
    from: &Account,
    r_to: &FedRelay,
    to: &Account,
    client: Ipv4Addr,
) -> Vec<u8> {
    let mail = encrypted_mail(&from.addr, &[&to.addr]);
    let r = r_from
        .submit_from(IpAddr::V4(client), from, &[&to.addr], &mail.bytes)
        .await;
    assert_eq!(
        r.code, 250,
        "submission at {} to {}: {r}",
        r_from.mail_domain, to.addr
    );
    let inbox = r_to
        .wait_inbox(to, DELIVERY_TIMEOUT, |i| count_id(i, &mail.message_id) > 0)
        .await;
    assert_eq!(
        count_id(&inbox, &mail.message_id),
        1,
        "{} → {}: message {} not in the recipient's INBOX within {DELIVERY_TIMEOUT:?}\n\
         sender relay log (delivery lines):\n{}\nreceiving relay log (last lines):\n{}",
        from.addr,
        to.addr,
        mail.message_id,
        r_from.log_lines(&["outbound", "deliver", "queue", "WARN", "ERROR", "bounce"]),
        r_to.log_tail(30)
    );
    let copy = inbox
        .into_iter()
        .find(|m| stored_message_id(m).as_deref() == Some(mail.message_id.as_str()))
        .expect("found above");
    assert_clean_copy(&copy, client, &format!("{} → {}", from.addr, to.addr));
    copy
}

/// Two domain relays whose accounts `a` (relay 1) and `b` (relay 2) exist.
async fn domain_pair(extra: impl Fn(usize) -> Vec<String>) -> (DomainRelays, Account, Account) {
    let set = DomainRelays::start(2, extra).await;
    let a = set.relays[0].account();
    let b = set.relays[1].account();
    set.relays[0].create_account(&a).await;
    set.relays[1].create_account(&b).await;
    (set, a, b)
}

/// §18: each relay's DKIM record comes out of `relaybox dns` (or its dns.zone) and the
/// test DNS serves it with the A and MX records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_serves_the_relays_records() {
    let set = DomainRelays::start(2, |_| Vec::new()).await;
    for (i, r) in set.relays.iter().enumerate() {
        let d = &r.mail_domain;
        let a = query(set.dns.addr(), d, 1, Duration::from_secs(2));
        assert_eq!(a, Some((0, 1)), "A {d}");
        let mx = query(set.dns.addr(), d, 15, Duration::from_secs(2));
        assert_eq!(mx, Some((0, 1)), "MX {d}");
        let txt = set.dkim[i].as_deref().unwrap_or_else(|| {
            let (ok, out, err) = r.dns_command();
            panic!(
                "no DKIM record for {d} from `relaybox dns` (ok={ok}):\n{out}\n{err}\n\
                 nor in {}/dns.zone",
                r.data_dir().display()
            )
        });
        assert!(
            txt.starts_with("v=DKIM1") && txt.contains("k=rsa") && txt.contains("p="),
            "DKIM record of {d}: {txt}"
        );
        let q = query(
            set.dns.addr(),
            &format!("opendkim._domainkey.{d}"),
            16,
            Duration::from_secs(2),
        );
        assert_eq!(q, Some((0, 1)), "TXT opendkim._domainkey.{d}");
    }
}

/// Issue 3, test 1: an encrypted message from relay 1 reaches relay 2's INBOX and an
/// answer comes back; the stored copies carry no DKIM-Signature/Received (IN-7) and no
/// sender client IP (privacy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_relays_deliver_both_ways() {
    let (set, a, b) = domain_pair(|_| Vec::new()).await;
    let (r1, r2) = (&set.relays[0], &set.relays[1]);
    relay_one(r1, &a, r2, &b, set.net.host(9)).await;
    relay_one(r2, &b, r1, &a, set.net.host(10)).await;
}

/// The same between two IP-only relays (`user@[127.a.b.2]`, MODE-1), without DNS: the
/// receiver accepts the IP-literal sender only from the matching address (IN-4e), so
/// this also checks that outbound connections leave from the relay's own IP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_only_relays_deliver_both_ways() {
    let net = Net::fresh();
    let (r1, r2) = ip_only_pair(net, &[]).await;
    let a = r1.account();
    let b = r2.account();
    r1.create_account(&a).await;
    r2.create_account(&b).await;
    relay_one(&r1, &a, &r2, &b, net.host(9)).await;
    relay_one(&r2, &b, &r1, &a, net.host(10)).await;
}

/// Faults: the peer is down → the message waits in relay 1's queue → the peer comes
/// back → delivered exactly once (OUT-6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_down_then_back_delivers_once() {
    let (mut set, a, b) = domain_pair(|_| Vec::new()).await;
    set.relays[1].stop().await;
    let mail = encrypted_mail(&a.addr, &[&b.addr]);
    let r = set.relays[0].submit(&a, &[&b.addr], &mail.bytes).await;
    assert_eq!(r.code, 250, "submission while the peer is down: {r}");
    // Several retry rounds (back-off 1–2 s) fail while the peer is down.
    wait_deferred(&set.relays[0], 3, "peer down").await;
    set.relays[1].start().await;
    let (r1, r2) = (&set.relays[0], &set.relays[1]);
    let inbox = r2
        .wait_inbox(&b, DELIVERY_TIMEOUT, |i| count_id(i, &mail.message_id) > 0)
        .await;
    assert_eq!(
        count_id(&inbox, &mail.message_id),
        1,
        "queued message not delivered after the peer came back; relay 1 log:\n{}",
        r1.log_tail(40)
    );
    wait_queue_empty(r1).await;
    let inbox = r2.inbox(&b).await;
    assert_eq!(
        count_id(&inbox, &mail.message_id),
        1,
        "delivered more than once"
    );
    assert_eq!(
        inbox.len(),
        1,
        "unexpected extra messages: {:?}",
        ids(&inbox)
    );
}

/// Faults: the peer refuses permanently (unknown user → 550 5.1.1 at RCPT, IN-2) → a
/// bounce (OUT-7: multipart/report delivery-status, From MAILER-DAEMON@<relay 1>,
/// Auto-Submitted) arrives in the sender's INBOX at relay 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_refusal_bounces_to_sender() {
    let (set, a, _b) = domain_pair(|_| Vec::new()).await;
    let r1 = &set.relays[0];
    let ghost = format!("nosuchuser@{}", set.relays[1].mail_domain);
    let mail = encrypted_mail(&a.addr, &[&ghost]);
    let r = r1.submit(&a, &[&ghost], &mail.bytes).await;
    assert_eq!(r.code, 250, "submission to an unknown remote user: {r}");
    let inbox = r1
        .wait_inbox(&a, DELIVERY_TIMEOUT, |i| {
            i.iter().any(|m| {
                header_values(m, "Content-Type")
                    .iter()
                    .any(|v| v.to_ascii_lowercase().contains("multipart/report"))
            })
        })
        .await;
    let bounce = inbox
        .iter()
        .find(|m| {
            header_values(m, "Content-Type")
                .iter()
                .any(|v| v.to_ascii_lowercase().contains("multipart/report"))
        })
        .unwrap_or_else(|| {
            panic!(
                "no bounce in the sender's INBOX within {DELIVERY_TIMEOUT:?} ({} messages); \
                 relay 1 log:\n{}\nrelay 2 log:\n{}",
                inbox.len(),
                r1.log_tail(40),
                set.relays[1].log_tail(20)
            )
        });
    let text = String::from_utf8_lossy(bounce);
    let ct = header_values(bounce, "Content-Type")
        .join(" ")
        .to_ascii_lowercase();
    assert!(
        ct.contains("report-type=delivery-status"),
        "bounce Content-Type: {ct}"
    );
    let from = header_values(bounce, "From").join(" ");
    assert!(
        from.to_ascii_lowercase()
            .contains(&format!("mailer-daemon@{}", r1.mail_domain)),
        "bounce From: {from}"
    );
    let auto = header_values(bounce, "Auto-Submitted").join(" ");
    assert!(
        auto.contains("auto-replied"),
        "bounce Auto-Submitted: {auto:?}"
    );
    assert!(
        text.contains(&ghost),
        "bounce names the refused recipient:\n{text}"
    );
    assert!(
        text.contains("5.1.1"),
        "bounce carries the status 5.1.1:\n{text}"
    );
    assert!(
        text.to_ascii_lowercase()
            .contains("message/delivery-status"),
        "bounce has a message/delivery-status part:\n{text}"
    );
    // The envelope sender of the bounce is `<>` (OUT-7); the relay keeps it only as
    // Return-Path if it writes one.
    for rp in header_values(bounce, "Return-Path") {
        assert_eq!(rp.trim(), "<>", "bounce Return-Path");
    }
    // Bounced once, not once per retry: relay 1 is done with the message.
    wait_queue_empty(r1).await;
    let reports = r1
        .inbox(&a)
        .await
        .iter()
        .filter(|m| contains(m, b"multipart/report"))
        .count();
    assert_eq!(reports, 1, "one bounce for one refused message");
}

/// Faults: port 25 closed at the peer (`smtp_listen =`) → delivered over HTTPS
/// `POST /mxdeliv` (OUT-3 step 1, IN-6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_25_closed_delivers_over_https() {
    let (set, a, b) = domain_pair(|i| {
        if i == 1 {
            vec!["smtp_listen =".to_string()]
        } else {
            Vec::new()
        }
    })
    .await;
    assert!(
        std::net::TcpStream::connect_timeout(&set.relays[1].sock(25), Duration::from_millis(500))
            .is_err(),
        "port 25 of relay 2 must be closed for this test"
    );
    relay_one(&set.relays[0], &a, &set.relays[1], &b, set.net.host(9)).await;
}

/// Faults: port 443 closed at the peer (`https_listen =`) → delivered over SMTP with
/// STARTTLS, the certificate verified against the MX name (OUT-3 step 2, OUT-4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_443_closed_delivers_over_smtp() {
    let (set, a, b) = domain_pair(|i| {
        if i == 1 {
            vec!["https_listen =".to_string()]
        } else {
            Vec::new()
        }
    })
    .await;
    assert!(
        std::net::TcpStream::connect_timeout(&set.relays[1].sock(443), Duration::from_millis(500))
            .is_err(),
        "port 443 of relay 2 must be closed for this test"
    );
    relay_one(&set.relays[0], &a, &set.relays[1], &b, set.net.host(9)).await;
}

/// Faults: relay 1 killed (`kill -9`) with several messages queued for a peer that is
/// down, restarted, peer back → every message delivered, none lost, none twice (OUT-6,
/// the queue survives restarts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_killed_with_full_queue_loses_nothing() {
    const N: usize = 5;
    let (mut set, a, b) = domain_pair(|_| Vec::new()).await;
    set.relays[1].stop().await;
    let mut mails: Vec<Mail> = Vec::new();
    for i in 0..N {
        let mail = MailBuilder::encrypted(&a.addr, &[&b.addr])
            .payload_len(300 + i * 100)
            .build();
        let r = set.relays[0].submit(&a, &[&b.addr], &mail.bytes).await;
        assert_eq!(r.code, 250, "submission {i}: {r}");
        mails.push(mail);
    }
    // Every message has been tried (and failed) once: the queue holds rows with
    // attempts and retry times when the relay is killed.
    wait_deferred(&set.relays[0], N as u64, "peer down").await;
    set.relays[0].kill9();
    set.relays[0].start().await;
    set.relays[1].start().await;
    let (r1, r2) = (&set.relays[0], &set.relays[1]);
    let all = |i: &[Vec<u8>]| mails.iter().all(|m| count_id(i, &m.message_id) > 0);
    let inbox = r2.wait_inbox(&b, DELIVERY_TIMEOUT, all).await;
    let missing: Vec<&str> = mails
        .iter()
        .filter(|m| count_id(&inbox, &m.message_id) == 0)
        .map(|m| m.message_id.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "lost after kill -9 and restart: {missing:?}; relay 1 log:\n{}",
        r1.log_tail(50)
    );
    wait_queue_empty(r1).await;
    let inbox = r2.inbox(&b).await;
    for m in &mails {
        assert_eq!(
            count_id(&inbox, &m.message_id),
            1,
            "{} delivered twice",
            m.message_id
        );
    }
    assert_eq!(inbox.len(), N, "INBOX: {:?}", ids(&inbox));
}

/// OUT-4: the peer's certificate is checked against the MX name. Relay 2 shows a
/// certificate from the trusted test CA but for another name → nothing is delivered
/// (neither over HTTPS nor SMTP); relay 2 restarted with the right certificate → the
/// held message arrives, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_for_another_name_holds_delivery() {
    let (mut set, a, b) = domain_pair(|_| Vec::new()).await;
    let wrong = set
        .ca
        .leaf(set.dir.path(), "wrong-name", &["wrong-name.test"], &[]);
    let key = "tls_external_cert_and_key";
    let right_line = set.relays[1]
        .extra
        .iter()
        .find(|l| l.starts_with(key))
        .cloned()
        .expect("the harness sets the certificate");
    set.relays[1].stop().await;
    for l in set.relays[1].extra.iter_mut() {
        if l.starts_with(key) {
            *l = format!("{key} = {}", wrong.ini_value());
        }
    }
    set.relays[1].start().await;

    let mail = encrypted_mail(&a.addr, &[&b.addr]);
    let r = set.relays[0].submit(&a, &[&b.addr], &mail.bytes).await;
    assert_eq!(r.code, 250, "submission: {r}");
    // Several attempts (back-off 1–2 s) see the wrong name.
    wait_deferred(&set.relays[0], 3, "wrong certificate name").await;
    let inbox = set.relays[1].inbox(&b).await;
    assert_eq!(
        count_id(&inbox, &mail.message_id),
        0,
        "delivered to a peer whose certificate names another host"
    );
    // For the report: how relay 1 saw it (visible with --nocapture).
    eprintln!(
        "relay 1 while the name was wrong:\n{}",
        set.relays[0].log_lines(&["ertificate", "Name", "TLS", "tls", "retry", "temporar"])
    );

    set.relays[1].stop().await;
    for l in set.relays[1].extra.iter_mut() {
        if l.starts_with(key) {
            *l = right_line.clone();
        }
    }
    set.relays[1].start().await;
    let (r1, r2) = (&set.relays[0], &set.relays[1]);
    let inbox = r2
        .wait_inbox(&b, DELIVERY_TIMEOUT, |i| count_id(i, &mail.message_id) > 0)
        .await;
    assert_eq!(
        count_id(&inbox, &mail.message_id),
        1,
        "held message not delivered once the certificate names the MX host; relay 1 log:\n{}",
        r1.log_tail(40)
    );
}
