//! `relaybox queue` with the real binary (issue 18 item 4): a domain relay whose mail for
//! one domain cannot leave — that domain's MX is a loopback port answering every
//! connection with a 421 greeting that names an address — lists the domain with its
//! attempts and the last error in plain words (without the address); `queue retry` makes
//! an attempt happen at once (seen at the fake MX); `queue bounce` gives the sender a
//! bounce in INBOX and empties the queue; the stopped relay reads the same; an unknown
//! domain and a bounce without confirmation are refused with exit code 1.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use relaybox_blackbox::dns::Zone;
use relaybox_blackbox::encrypted_mail;
use relaybox_blackbox::federation::{DELIVERY_TIMEOUT, DomainRelays, FedRelay, Net, SMTP};
use relaybox_blackbox::mail::header_values;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::time::Instant;

/// Bound of one `relaybox queue` run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an expected attempt or queue state may take to show.
const WAIT: Duration = Duration::from_secs(60);
/// What the fake MX says: a temporary refusal naming an address.
const GREETING: &str = "421 4.3.2 <postmaster@stuck.invalid> busy, try later\r\n";
/// What `relaybox queue` must make of it.
const PLAIN: &str = "refused the connection 421 4.3.2 … busy, try later";

/// An MX host that refuses every connection at the greeting and counts them.
struct BusyMx {
    connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl BusyMx {
    async fn start(addr: SocketAddr) -> BusyMx {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind the fake MX at {addr}: {e}"));
        let connections = Arc::new(AtomicU64::new(0));
        let seen = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                seen.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let _ = s.write_all(GREETING.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        BusyMx { connections, task }
    }

    fn count(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Wait until at least `n` connections came (asserted).
    async fn wait(&self, n: u64, what: &str, relay: &FedRelay) {
        let deadline = Instant::now() + WAIT;
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "{what}: {} connection(s) at the fake MX within {WAIT:?}, expected {n}; log:\n{}",
                self.count(),
                relay.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for BusyMx {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `relaybox queue ARGS --config <relay's ini>`: (exit code, stdout, stderr).
async fn queue(relay: &FedRelay, args: &[&str]) -> (i32, String, String) {
    let run = tokio::process::Command::new(relaybox_blackbox::relay::binary())
        .arg("queue")
        .args(args)
        .arg("--config")
        .arg(relay.config_path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(COMMAND_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| {
            panic!("relaybox queue {args:?} did not end within {COMMAND_TIMEOUT:?}")
        })
        .expect("run relaybox queue");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The cells of `domain`'s line in `relaybox queue`'s table: domain, waiting, attempts,
/// next retry, oldest, last error.
fn row(table: &str, domain: &str) -> Option<Vec<String>> {
    let line = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(domain))?;
    Some(
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect(),
    )
}

/// Run `relaybox queue` until `domain`'s row satisfies `done` (bounded); the last row.
async fn wait_row(
    relay: &FedRelay,
    domain: &str,
    what: &str,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, out, err) = queue(relay, &[]).await;
        assert_eq!(code, 0, "relaybox queue: {err}");
        match row(&out, domain) {
            Some(r) if done(&r) => return r,
            _ if Instant::now() >= deadline => {
                panic!(
                    "{what}: not seen within {WAIT:?}:\n{out}\nlog:\n{}",
                    relay.log_tail(40)
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn is_bounce(m: &[u8]) -> bool {
    header_values(m, "Content-Type")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("multipart/report"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_retry_bounce_on_a_running_and_a_stopped_relay() {
    let net = Net::fresh();
    let stuck = format!("stuck-{}.test", net.tag());
    let mut zone = Zone::default();
    zone.add_mail_domain(&stuck, net.host(9));
    let mx = BusyMx::start(SocketAddr::new(net.host(9).into(), SMTP)).await;
    // Long back-off: after the first attempt only "retry now" brings another.
    let mut set = DomainRelays::start_with_zone(
        1,
        |_| {
            vec![
                "minimal_backoff_time = 1h".into(),
                "maximal_backoff_time = 2h".into(),
            ]
        },
        zone,
        net,
    )
    .await;
    let a = set.relays[0].account();
    set.relays[0].create_account(&a).await;
    let rcpt = format!("someone@{stuck}");
    let mail = encrypted_mail(&a.addr, &[&rcpt]);
    let r = set.relays[0].submit(&a, &[&rcpt], &mail.bytes).await;
    assert_eq!(r.code, 250, "submission to {rcpt}: {r}");

    // The first attempt fails; the queue shows the domain, one attempt, the error.
    mx.wait(1, "first attempt", &set.relays[0]).await;
    let first = wait_row(&set.relays[0], &stuck, "one failed attempt", |r| {
        r.get(2).map(String::as_str) == Some("1")
    })
    .await;
    assert_eq!(first[1], "1", "one message waiting: {first:?}");
    assert!(first[3].starts_with("in "), "next retry later: {first:?}");
    assert_eq!(first.get(5).map(String::as_str), Some(PLAIN), "{first:?}");
    let (_, table, _) = queue(&set.relays[0], &["list"]).await;
    assert!(
        !table.contains('@') && !table.contains("127."),
        "no address in the queue listing:\n{table}"
    );

    // Retry now: an attempt at once (the back-off is an hour).
    let (code, out, err) = queue(&set.relays[0], &["retry", &stuck]).await;
    assert_eq!(code, 0, "queue retry: {out}{err}");
    assert!(
        out.contains("1 message(s)") && out.contains("tries them now"),
        "{out}"
    );
    mx.wait(2, "attempt after retry now", &set.relays[0]).await;
    wait_row(&set.relays[0], &stuck, "the second attempt counted", |r| {
        r.get(2).map(String::as_str) == Some("2")
    })
    .await;

    // Bad input: an unknown domain, a bounce without confirmation: exit 1, no change.
    for args in [
        vec!["retry", "nowhere.test"],
        vec!["bounce", "nowhere.test", "--yes"],
    ] {
        let (code, out, err) = queue(&set.relays[0], &args).await;
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(err.contains("no mail for nowhere.test"), "{args:?}: {err}");
    }
    let (code, out, err) = queue(&set.relays[0], &["bounce", &stuck]).await;
    assert_eq!(
        code, 1,
        "bounce without --yes and without a terminal: {out}{err}"
    );
    assert!(err.contains("--yes"), "{err}");
    let still = wait_row(&set.relays[0], &stuck, "the row still there", |_| true).await;
    assert_eq!(still[1], "1");

    // The stopped relay reads the same; "retry now" there is carried out at the start.
    set.relays[0].stop().await;
    let (code, out, err) = queue(&set.relays[0], &[]).await;
    assert_eq!(code, 0, "queue on the stopped relay: {err}");
    let stopped = row(&out, &stuck).unwrap_or_else(|| panic!("no row for {stuck}:\n{out}"));
    assert_eq!(
        (&stopped[..3], stopped.get(5)),
        (&still[..3], still.get(5)),
        "the same rows stopped and running"
    );
    let (code, out, err) = queue(&set.relays[0], &["retry", &stuck]).await;
    assert_eq!(code, 0, "retry on the stopped relay: {out}{err}");
    assert!(out.contains("when it starts"), "{out}");
    let before = mx.count();
    set.relays[0].start().await;
    mx.wait(
        before + 1,
        "attempt at the start after retry now",
        &set.relays[0],
    )
    .await;

    // Give up: the sender gets one bounce, the queue is empty.
    let (code, out, err) = queue(&set.relays[0], &["bounce", &stuck, "--yes"]).await;
    assert_eq!(code, 0, "queue bounce: {out}{err}");
    assert!(out.contains("1 message(s)"), "{out}");
    let inbox = set.relays[0]
        .wait_inbox(&a, DELIVERY_TIMEOUT, |i| i.iter().any(|m| is_bounce(m)))
        .await;
    let bounces: Vec<&Vec<u8>> = inbox.iter().filter(|m| is_bounce(m)).collect();
    assert_eq!(bounces.len(), 1, "one bounce for one message");
    let text = String::from_utf8_lossy(bounces[0]);
    assert!(
        text.contains(&format!("Final-Recipient: rfc822; {rcpt}")),
        "{text}"
    );
    assert!(text.contains("Status: 4.4.7"), "{text}");
    let (code, out, _) = queue(&set.relays[0], &[]).await;
    assert_eq!((code, out.as_str()), (0, "No mail is waiting to leave.\n"));
    let left = set.relays[0].wait_queue_empty(WAIT).await;
    assert_eq!(left, 0, "the metrics agree");
}
