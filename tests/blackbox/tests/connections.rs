//! Fair connections against the real binary (issue 13): per-address caps and connection
//! rates on every listener (another address is still served), the protocol's own
//! refusal (SMTP `421`, IMAP `* BYE [UNAVAILABLE]`, HTTP `503` with `Retry-After`), SMTP
//! and IMAP deadlines that a trickling client cannot stretch, `* BYE` at the IMAP cap
//! over TLS, refusals in `/metrics` and logged once per address, and the open-file
//! limit (raised at start; caps lowered to fit a low hard limit instead of EMFILE).
//!
//! Clients act as different hosts by binding 127.0.0.x source addresses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use relaybox_blackbox::conn::LineConn;
use relaybox_blackbox::{Imap, ReadError, Relay, Smtp, http, metrics};
use tokio::time::Instant;

/// Bound for anything the relay should do soon (a close, a refusal).
const WAIT: Duration = Duration::from_secs(20);

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Smtp,
    Imap,
    Http,
}

/// One listener as a client sees it.
#[derive(Debug, Clone, Copy)]
struct Door {
    name: &'static str,
    addr: SocketAddr,
    tls: bool,
    alpn: &'static [&'static [u8]],
    proto: Proto,
}

impl Door {
    fn all(relay: &Relay) -> Vec<Door> {
        let d = |name, addr, tls, alpn, proto| Door {
            name,
            addr,
            tls,
            alpn,
            proto,
        };
        vec![
            d("25", relay.smtp_addr(), false, &[], Proto::Smtp),
            d("587", relay.submission_addr(), false, &[], Proto::Smtp),
            d("465", relay.submissions_addr(), true, &[], Proto::Smtp),
            d("143", relay.imap_addr(), false, &[], Proto::Imap),
            d("993", relay.imaps_addr(), true, &[], Proto::Imap),
            d("443", relay.https_addr(), true, &[], Proto::Http),
            d("80", relay.http_addr(), false, &[], Proto::Http),
        ]
    }

    async fn open(&self, from: IpAddr) -> LineConn {
        let conn = if self.tls {
            LineConn::connect_tls_from(from, self.addr, self.alpn).await
        } else {
            LineConn::connect_from(from, self.addr).await
        };
        conn.unwrap_or_else(|e| panic!("{}: connect from {from}: {e}", self.name))
    }

    /// The server's first words: the greeting line (SMTP, IMAP), or the status line and
    /// `Retry-After` of a `GET /` (HTTP).
    async fn answer(&self, conn: &mut LineConn) -> Result<String, ReadError> {
        match self.proto {
            Proto::Smtp | Proto::Imap => conn
                .read_line()
                .await
                .map(|l| String::from_utf8_lossy(&l).into_owned()),
            Proto::Http => {
                let r = http::request(conn, "GET / HTTP/1.1\nHost: 127.0.0.1", b"").await?;
                let retry = r.header("Retry-After").unwrap_or("-").to_string();
                Ok(format!("{} retry-after={retry}", r.status_line))
            }
        }
    }

    /// Whether `answer` is the service working normally.
    fn served(&self, answer: &str) -> bool {
        match self.proto {
            Proto::Smtp => answer.starts_with("220 "),
            Proto::Imap => answer.starts_with("* OK"),
            // 443: the site; 80: the redirect to HTTPS.
            Proto::Http => answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.1 301"),
        }
    }

    /// Whether `answer` is this protocol's refusal saying `text`.
    fn refused(&self, answer: &str, text: &str) -> bool {
        match self.proto {
            Proto::Smtp => answer.starts_with("421 4.7.0 ") && answer.ends_with(text),
            Proto::Imap => answer == format!("* BYE [UNAVAILABLE] {text}"),
            Proto::Http => answer.starts_with("HTTP/1.1 503") && !answer.ends_with("retry-after=-"),
        }
    }

    /// Open a connection from `from` and return the server's first words.
    async fn try_once(&self, from: IpAddr) -> (LineConn, String) {
        let mut conn = self.open(from).await;
        let answer = self
            .answer(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{}: no answer from the relay: {e}", self.name));
        (conn, answer)
    }
}

const PER_ADDRESS: &str = "Too many connections from your address";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_address_cap_on_every_listener() {
    let relay = Relay::start(&[
        "max_connections_per_ip = 3",
        "max_connection_rate_per_ip = 1000",
        "max_connection_burst_per_ip = 1000",
    ])
    .await;
    let (crowded, other) = (ip(2), ip(3));
    for door in Door::all(&relay) {
        // Three connections from one address are held open (HTTP ones idle before
        // their first request).
        // (143 and 993 share the IMAP slots: those of the previous round may take a
        // moment to be given back.)
        let mut held = Vec::new();
        for _ in 0..3 {
            let conn = match door.proto {
                Proto::Http => door.open(crowded).await,
                _ => served_eventually(&door, crowded).await,
            };
            held.push(conn);
        }
        // The fourth from that address is refused in the protocol's words and closed.
        let (mut over, a) = door.try_once(crowded).await;
        assert!(door.refused(&a, PER_ADDRESS), "{}: fourth: {a}", door.name);
        let (closed, _) = over.wait_closed(WAIT).await;
        assert!(closed, "{}: the refused connection is closed", door.name);
        // Another address is served.
        let (_, a) = door.try_once(other).await;
        assert!(door.served(&a), "{}: other address: {a}", door.name);
        // A connection that ends gives its slot back.
        drop(held.pop());
        served_eventually(&door, crowded).await;
    }
    // The 443 multiplexer's IMAP sessions count for IMAP: with three IMAP sessions on
    // 143 and 993, the crowded address gets BYE through 443 too.
    let doors = Door::all(&relay);
    let mut held_imap = Vec::new();
    for door in [doors[3], doors[4], doors[3]] {
        held_imap.push(served_eventually(&door, crowded).await);
    }
    let imap_via_443 = Door {
        name: "443 imap",
        alpn: &[b"imap"],
        proto: Proto::Imap,
        ..doors[5]
    };
    let (_, a) = imap_via_443.try_once(crowded).await;
    assert!(imap_via_443.refused(&a, PER_ADDRESS), "443 imap: {a}");
    let (_, a) = imap_via_443.try_once(other).await;
    assert!(imap_via_443.served(&a), "443 imap, other address: {a}");
}

/// A connection from `from` that is served, retried (bounded) while the slots of
/// connections that just ended are given back.
async fn served_eventually(door: &Door, from: IpAddr) -> LineConn {
    let deadline = Instant::now() + WAIT;
    loop {
        let (conn, a) = door.try_once(from).await;
        if door.served(&a) {
            return conn;
        }
        assert!(Instant::now() < deadline, "{}: not served: {a}", door.name);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_rate_per_address() {
    let relay = Relay::start(&[
        "max_connections_per_ip = 1000",
        "max_connection_rate_per_ip = 1",
        "max_connection_burst_per_ip = 3",
    ])
    .await;
    let door = Door::all(&relay)[1];
    // One connection after the other, each closed at once: after the burst the rate of
    // one per second refuses the next ones (60 attempts would take a minute at that
    // rate; they take far less).
    let mut refused = None;
    let mut served = 0;
    for _ in 0..60 {
        let (_, a) = door.try_once(ip(4)).await;
        if door.served(&a) {
            served += 1;
        } else {
            refused = Some(a);
            break;
        }
    }
    let a = refused.expect("refused for its rate within 60 quick connections");
    assert!(
        door.refused(&a, "Too many new connections from your address, slow down"),
        "{a}"
    );
    assert!(served >= 3, "the burst of 3 is served first ({served})");
    // Another address has its own rate.
    let (_, a) = door.try_once(ip(5)).await;
    assert!(door.served(&a), "{a}");
    // Waiting lets the address in again.
    let deadline = Instant::now() + WAIT;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (_, a) = door.try_once(ip(4)).await;
        if door.served(&a) {
            break;
        }
        assert!(Instant::now() < deadline, "never served again: {a}");
    }
}

/// Send `bytes` one at a time, `every` apart, until the server says something or
/// closes; returns what it said (empty when it closed silently), or `None` when every
/// byte was sent without an answer.
async fn trickle(conn: &mut LineConn, bytes: &[u8], every: Duration) -> Option<String> {
    for b in bytes {
        if conn.write_all(&[*b]).await.is_err() {
            return Some(String::new());
        }
        match conn.read_some(every).await {
            Ok(said) => return Some(String::from_utf8_lossy(&said).into_owned()),
            Err(ReadError::Timeout) => {}
            Err(_) => return Some(String::new()),
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_at_their_deadlines() {
    let metrics = metrics::free_address();
    let relay = Relay::start(&[
        &format!("mtail_address = {metrics}"),
        "smtpd_timeout = 2s",
        "smtpd_session_deadline = 6s",
        "imap_login_timeout = 3s",
    ])
    .await;
    // A byte every 500 ms: each read comes well within 2 s, but the line never ends.
    let mut smtp = Smtp::connect(relay.smtp_addr()).await;
    smtp.greeting().await;
    let start = Instant::now();
    let said = trickle(&mut smtp.conn, &[b'N'; 120], Duration::from_millis(500)).await;
    let held = start.elapsed();
    let said = said.expect("cut before 120 bytes at 2 bytes/s (60 s)");
    assert!(said.starts_with("421 4.4.2 "), "{said}");
    println!(
        "figure: a client trickling a byte every 500 ms held port 25 for {held:?} (smtpd_timeout = 2s)"
    );

    // Whole commands every 500 ms: the unauthenticated session ends at its deadline.
    let mut smtp = Smtp::connect(relay.smtp_addr()).await;
    smtp.greeting().await;
    let start = Instant::now();
    let mut cut = None;
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        match smtp.try_cmd("NOOP").await {
            Ok(r) if r.code == 250 => {}
            other => {
                cut = Some(other);
                break;
            }
        }
    }
    let held = start.elapsed();
    match cut.expect("cut within 120 NOOPs (60 s)") {
        Ok(r) => assert_eq!(r.code, 421, "{r}"),
        Err(e) => assert!(e.is_closed(), "{e}"),
    }
    println!(
        "figure: a port-25 client sending NOOP every 500 ms was cut after {held:?} (smtpd_session_deadline = 6s)"
    );

    // IMAP: commands without a login end at the login deadline.
    let mut imap = Imap::connect(relay.imap_addr()).await;
    imap.greeting().await;
    let mut bye = None;
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        match imap.try_cmd("NOOP").await {
            Ok(r) if r.is_ok() => {}
            Ok(r) => {
                bye = Some(format!("{r}"));
                break;
            }
            Err(e) => {
                bye = Some(format!("{e}"));
                break;
            }
        }
    }
    let bye = bye.expect("no login within 60 s of NOOPs and still connected");
    assert!(bye.contains("BYE") || bye.contains("closed"), "{bye}");
    let (closed, _) = imap.conn.wait_closed(WAIT).await;
    assert!(closed);

    // The relay serves everyone else meanwhile.
    relaybox_blackbox::assert_serving(&relay).await;

    // Counted by service, logged once for the address, outside any session's span.
    let text = scrape(metrics).await;
    let deadline = |service: &str| {
        let name = format!(
            "relaybox_connections_refused_total{{service=\"{service}\",reason=\"deadline\"}}"
        );
        sample(&text, &name)
    };
    assert_eq!(deadline("smtp"), Some(2), "{text}");
    assert_eq!(deadline("imap"), Some(1), "{text}");
    let log = relay.stderr();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("connection from 127.0.0.1 refused"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains(" smtp: connection from 127.0.0.1 refused: deadline"),
        "{}",
        lines[0]
    );
    assert!(!lines[0].contains("conn="), "{}", lines[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bye_at_the_imap_cap_also_over_tls() {
    let relay = Relay::start(&["max_imap_connections = 2", "max_smtp_connections = 1"]).await;
    let doors = Door::all(&relay);
    let (imap, imaps, submissions) = (doors[3], doors[4], doors[2]);
    let mut held = Vec::new();
    for door in [imap, imaps] {
        let (conn, a) = door.try_once(ip(1)).await;
        assert!(door.served(&a), "{a}");
        held.push(conn);
    }
    let imap_via_443 = Door {
        name: "443 imap",
        alpn: &[b"imap"],
        proto: Proto::Imap,
        ..doors[5]
    };
    // RFC 9051 §7.1.5: the TLS handshake completes, then BYE (not a bare TLS EOF).
    for door in [imaps, imap, imap_via_443] {
        let (mut conn, a) = door.try_once(ip(1)).await;
        assert!(
            door.refused(&a, "Too many connections, try again later"),
            "{}: {a}",
            door.name
        );
        assert!(conn.wait_closed(WAIT).await.0, "{}: closed", door.name);
    }
    // SMTP at its cap: 421, on 465 after the handshake.
    let (_held_smtp, a) = submissions.try_once(ip(1)).await;
    assert!(submissions.served(&a), "{a}");
    let (_, a) = submissions.try_once(ip(1)).await;
    assert!(
        submissions.refused(&a, "Too many connections, try again later"),
        "{a}"
    );
}

/// One `GET /metrics`: the exposition text.
async fn scrape(addr: SocketAddr) -> String {
    metrics::scrape(addr, None).await.body_text()
}

fn sample(text: &str, name: &str) -> Option<u64> {
    metrics::samples(text).get(name).copied()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_counted_and_logged_once_per_address() {
    let metrics = metrics::free_address();
    let relay = Relay::start(&[
        &format!("mtail_address = {metrics}"),
        "max_connections_per_ip = 1",
        "max_connection_rate_per_ip = 100000",
        "max_connection_burst_per_ip = 100000",
    ])
    .await;
    let door = Door::all(&relay)[1];
    const N: u64 = 300;
    let mut held = Vec::new();
    for last in [7, 8] {
        let (conn, a) = door.try_once(ip(last)).await;
        assert!(door.served(&a), "{a}");
        held.push(conn);
        for _ in 0..N {
            let (_, a) = door.try_once(ip(last)).await;
            assert!(door.refused(&a, PER_ADDRESS), "{a}");
        }
    }
    let text = scrape(metrics).await;
    let name = "relaybox_connections_refused_total{service=\"submission\",reason=\"per_ip\"}";
    assert_eq!(sample(&text, name), Some(2 * N), "{text}");
    let busy = "relaybox_connections_refused_total{service=\"submission\",reason=\"limit\"}";
    assert_eq!(sample(&text, busy), Some(0));
    // One line per address, not one per refusal; the address without an account.
    let log = relay.stderr();
    for last in [7, 8] {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&format!("connection from 127.0.0.{last} refused")))
            .collect();
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(lines[0].contains("submission") && lines[0].contains("per_ip"));
        assert!(!lines[0].contains('@'), "{}", lines[0]);
    }
    let refusal_lines = log.lines().filter(|l| l.contains("refused")).count();
    println!(
        "figure: {} refused connections from 2 addresses gave {refusal_lines} log lines",
        2 * N
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_file_limit_is_raised_at_start() {
    let relay = Relay::start_with_nofile(&[], 512, 4096).await;
    let log = relay.stderr();
    assert!(
        log.contains("open files: soft limit raised from 512 to 4096"),
        "{log}"
    );
    // The caps are fitted to the raised limit, not to the 512 the process started with.
    assert!(
        log.contains("lowered max_imap_connections 10000 → 2275,"),
        "{log}"
    );
    let door = Door::all(&relay)[3];
    let (_, a) = door.try_once(ip(1)).await;
    assert!(door.served(&a), "{a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_open_file_limit_lowers_the_caps_instead_of_failing_every_listener() {
    // Hard limit 600: the default caps (10000 IMAP, …) do not fit.
    let relay = Relay::start_with_nofile(&[], 600, 600).await;
    let log = relay.stderr();
    let cap: usize = log
        .lines()
        .find_map(|l| {
            let rest = l.split("lowered max_imap_connections 10000 → ").nth(1)?;
            rest.split(',').next()?.trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("no warning about lowered caps: {log}"));
    assert!(cap > 0 && cap < 600, "{cap}");
    // More IMAP connections than the limit allows descriptors: the ones over the cap get
    // BYE (the relay never runs out of descriptors), the others their greeting.
    let door = Door::all(&relay)[3];
    let mut held = Vec::new();
    let mut greeted = 0;
    let mut refused = 0;
    for i in 0..700usize {
        let from = ip(10 + (i % 200) as u8);
        let (conn, a) = door.try_once(from).await;
        if door.served(&a) {
            greeted += 1;
            held.push(conn);
        } else {
            assert!(
                door.refused(&a, "Too many connections, try again later"),
                "connection {i}: {a}"
            );
            refused += 1;
        }
    }
    assert_eq!(greeted, cap, "greeted up to the lowered cap");
    assert_eq!(refused, 700 - cap);
    // Every other listener still answers while IMAP is full.
    for door in Door::all(&relay) {
        if door.proto == Proto::Imap {
            continue;
        }
        let (_, a) = door.try_once(ip(2)).await;
        assert!(door.served(&a), "{}: {a}", door.name);
    }
    drop(held);
    served_eventually(&door, ip(1)).await;
    relaybox_blackbox::assert_serving(&relay).await;
}
