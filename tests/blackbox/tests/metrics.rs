//! Metrics and logs from outside (LOG-1, LOG-5): with `mtail_address` set the relay
//! serves `/metrics` there and the counters move by exactly what the test did; without
//! it the relay listens on its service ports only; a bad address stops the start; and
//! with `log_stderr = false` stderr stays free of log lines while the relay works.

use std::collections::BTreeSet;
use std::time::Duration;

use relaybox_blackbox::metrics::{
    free_address, get, ini_line, open_connections, samples, scrape, wait_for,
};
use relaybox_blackbox::{Account, Imap, MailBuilder, Relay, Smtp, create_account, encrypted_mail};

/// The TCP ports the relay process listens on, from /proc (Linux): the process is
/// found by its config path on the command line, its sockets by their inodes.
fn listening_ports(relay: &Relay) -> BTreeSet<u16> {
    let config = relay.config_path().display().to_string();
    let mut pid = None;
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.contains(&config) && args.iter().any(|a| a == "serve") {
            pid = Some(name);
            break;
        }
    }
    let pid = pid.expect("relay process in /proc");
    let mut inodes = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let t = target.to_string_lossy();
            if let Some(n) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                inodes.insert(n.to_string());
            }
        }
    }
    let mut ports = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address is column 1 (`ADDR:PORT` in hex), st column 3 (0A =
            // LISTEN), inode column 9.
            if cols.len() > 9 && cols[3] == "0A" && inodes.contains(cols[9]) {
                let port = cols[1].rsplit(':').next().unwrap_or("");
                ports.insert(u16::from_str_radix(port, 16).expect("hex port"));
            }
        }
    }
    ports
}

fn service_ports(relay: &Relay) -> BTreeSet<u16> {
    let p = relay.ports;
    [
        p.smtp,
        p.submission,
        p.submissions,
        p.imap,
        p.imaps,
        p.https,
        p.http,
    ]
    .into_iter()
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_exactly_what_happened() {
    let addr = free_address();
    let port = addr.port();
    let relay = Relay::start(&[&ini_line(addr)]).await;

    let before = scrape(addr, None).await;
    // LOG-5: Prometheus text by default.
    assert_eq!(
        before.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let before = samples(&before.body_text());

    // One account created at its first login (993), one creation refused (password
    // shorter than password_min_length), one message delivered to the account itself
    // and one cleartext message refused (523), both over 465.
    let a = Account::random();
    create_account(&relay, &a).await;
    let refused = Account::random();
    let mut c = Imap::connect_tls(relay.imaps_addr()).await;
    c.greeting().await;
    let r = c.login(&refused.addr, "short").await;
    assert_eq!(r.status, "NO", "{r}");
    c.logout().await;
    let mail = encrypted_mail(&a.addr, &[&a.addr]);
    let r = Smtp::submit(&relay, &a, &[&a.addr], &mail.bytes).await;
    assert_eq!(r.code, 250, "{r}");
    let clear = MailBuilder::cleartext(&a.addr, &[&a.addr], "hello in the clear").build();
    let r = Smtp::submit(&relay, &a, &[&a.addr], &clear.bytes).await;
    assert_eq!(r.code, 523, "{r}");

    // The sessions' ends are counted when the server side closes: wait (bounded) for
    // the open-connection gauges to come back.
    let open_imaps = open_connections("imaps");
    let open_465 = open_connections("submissions");
    let (open_imaps, open_465) = (open_imaps.as_str(), open_465.as_str());
    let (text, after) = wait_for(addr, Duration::from_secs(10), |after| {
        get(after, open_imaps) == get(&before, open_imaps)
            && get(after, open_465) == get(&before, open_465)
    })
    .await;
    let delta = |sample: &str| get(&after, sample) as i64 - get(&before, sample) as i64;

    let expected: &[(&str, i64)] = &[
        ("relaybox_accounts_created_total", 1),
        ("relaybox_registrations_refused_total{reason=\"name\"}", 1),
        ("relaybox_messages_accepted_total", 1),
        ("relaybox_delivered_total{destination=\"local\"}", 1),
        ("relaybox_delivered_total{destination=\"remote\"}", 0),
        ("relaybox_rejected_total{reason=\"unencrypted\"}", 1),
        ("relaybox_rejected_total{reason=\"origin\"}", 0),
        ("relaybox_rejected_total{reason=\"quota\"}", 0),
        ("relaybox_rejected_total{reason=\"rate_limit\"}", 0),
        ("relaybox_rejected_total{reason=\"policy\"}", 0),
        ("relaybox_quota_trimmed_messages_total", 0),
        ("relaybox_push_notifications_total{outcome=\"sent\"}", 0),
        ("relaybox_outbound_attempts_total{result=\"accepted\"}", 0),
        // create_account and the refused login: two IMAP connections over 993; two
        // submissions over 465; nothing on the other ports.
        ("relaybox_connections_total{service=\"imaps\"}", 2),
        ("relaybox_connections_total{service=\"submissions\"}", 2),
        ("relaybox_connections_total{service=\"smtp\"}", 0),
        ("relaybox_connections_total{service=\"submission\"}", 0),
        ("relaybox_connections_total{service=\"imap\"}", 0),
        (open_imaps, 0),
        (open_465, 0),
    ];
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(s, d)| delta(s) != *d)
        .map(|(s, d)| format!("{s}: moved by {}, expected {d}", delta(s)))
        .collect();
    assert!(wrong.is_empty(), "{}\n---\n{text}", wrong.join("\n"));
    // Nothing is queued for other relays.
    assert_eq!(get(&after, "relaybox_queue_length"), 0);
    // LOG-2: no account and no address in the exposition.
    assert!(
        !text.contains(&a.local) && !text.contains('@') && !text.contains("127.0.0.1"),
        "{text}"
    );

    // OpenMetrics on request: same counters, `# EOF` at the end.
    let om = scrape(addr, Some("application/openmetrics-text; version=1.0.0")).await;
    assert_eq!(
        om.header("Content-Type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let om_text = om.body_text();
    assert!(om_text.ends_with("\n# EOF\n"), "{om_text}");
    assert!(om_text.contains("# TYPE relaybox_accounts_created counter\n"));
    assert_eq!(
        get(&samples(&om_text), "relaybox_accounts_created_total"),
        get(&after, "relaybox_accounts_created_total")
    );

    // The relay listens on its service ports and the metrics address, nothing else.
    let mut expected_ports = service_ports(&relay);
    expected_ports.insert(port);
    assert_eq!(listening_ports(&relay), expected_ports);
    // The harness's log_stderr = true: the early lines were replayed, later ones follow.
    let log = relay.stderr();
    assert!(log.contains("smtp listening on"), "{log}");
    assert!(
        log.contains(&format!("metrics listening on 127.0.0.1:{port}")),
        "{log}"
    );
    assert!(log.contains("Created address:"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_mtail_address_nothing_else_listens() {
    let relay = Relay::start(&[]).await;
    create_account(&relay, &Account::random()).await;
    // An absence has no moment to wait for (nothing marks that every task spawned at
    // start has run): the listening ports are looked at repeatedly over a window, and
    // the first extra one fails the test. The window is the behaviour under test.
    let window = tokio::time::Instant::now() + Duration::from_millis(500);
    loop {
        assert_eq!(listening_ports(&relay), service_ports(&relay));
        if tokio::time::Instant::now() >= window {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!relay.stderr().contains("metrics listening"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_mtail_address_stops_the_start() {
    for bad in ["localhost:3903", "127.0.0.1:0", "127.0.0.1:port"] {
        let line = format!("mtail_address = {bad}");
        let out = Relay::run_expecting_exit(&[&line], Duration::from_secs(20)).await;
        let status = out.status.expect("the relay exits by itself");
        assert_eq!(status.code(), Some(2), "{bad}: {status}\n{}", out.stderr);
        assert!(
            out.stderr.contains("mtail_address") && out.stderr.contains(bad),
            "{bad}: {}",
            out.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_stderr_false_keeps_logs_off_stderr() {
    // LOG-1: logs stay in memory unless configured otherwise.
    let metrics = free_address();
    let relay = Relay::start(&["log_stderr = false", &ini_line(metrics)]).await;
    let a = Account::random();
    create_account(&relay, &a).await;
    let mail = encrypted_mail(&a.addr, &[&a.addr]);
    let r = Smtp::submit(&relay, &a, &[&a.addr], &mail.bytes).await;
    assert_eq!(r.code, 250, "{r}");
    let clear = MailBuilder::cleartext(&a.addr, &[&a.addr], "clear").build();
    let r = Smtp::submit(&relay, &a, &[&a.addr], &clear.bytes).await;
    assert_eq!(r.code, 523, "{r}");
    let inbox = Imap::fetch_inbox(&relay, &a).await;
    assert_eq!(inbox.len(), 1);
    // Every session has ended on the relay's side (and logged all it would log).
    let ended = |s: &std::collections::HashMap<String, u64>| {
        get(s, &open_connections("imaps")) == 0 && get(s, &open_connections("submissions")) == 0
    };
    let (text, s) = wait_for(metrics, Duration::from_secs(10), ended).await;
    assert!(ended(&s), "sessions still open:\n{text}");
    let log = relay.stderr();
    assert!(log.is_empty(), "stderr should stay empty:\n{log}");
}
