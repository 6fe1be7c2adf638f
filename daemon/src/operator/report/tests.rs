//! The scrubber's table, the config's redaction against the key table, the rendering with
//! and without the running relay, and the store's figures.

use super::*;
use crate::message::Parsed;
use crate::store::Delivery;

#[test]
fn scrubber_replaces_addresses_ips_codes_and_tokens() {
    let cases: &[(&str, &str)] = &[
        // Mail addresses, in every place a log line puts them.
        ("from abc123@chat.example.org ok", "from <address> ok"),
        ("to=<x.y+tag@relay.test>", "to=<<address>>"),
        ("account=u1@_chat.test,", "account=<address>,"),
        ("rcpt \"q@x.org\"", "rcpt \"<address>\""),
        ("login by me@example.org.", "login by <address>."),
        ("user@[192.0.2.10] said", "<address> said"),
        ("user@[IPv6:2001:db8::1]", "<address>"),
        (
            "an RFC 6531 one: jürgen@bücher.example ok",
            "an RFC 6531 one: <address> ok",
        ),
        (
            "quoted \"john doe\"@example.org here",
            "quoted <address> here",
        ),
        // IPv4.
        ("peer 203.0.113.9 closed", "peer <IPv4> closed"),
        ("peer=127.0.0.1:52344}", "peer=<IPv4>:52344}"),
        ("[10.0.0.1]", "[<IPv4>]"),
        ("from 198.51.100.7.", "from <IPv4>."),
        ("9.113.0.203.in-addr.arpa", "<IPv4>.in-addr.arpa"),
        // IPv6: full, compressed, loopback, bracketed with a port, zone, mapped.
        ("2001:0db8:0000:0000:0000:ff00:0042:8329 x", "<IPv6> x"),
        ("peer=[2001:db8::1]:993", "peer=[<IPv6>]:993"),
        ("via ::1 now", "via <IPv6> now"),
        ("fe80::1%eth0", "<IPv6>%eth0"),
        ("::ffff:192.0.2.1", "<IPv6>"),
        ("a 2a01:4f8:c17:1::2, b", "a <IPv6>, b"),
        ("peer:2001:db8::7", "peer:<IPv6>"),
        ("IPv6:2001:db8::8", "IPv6:<IPv6>"),
        ("2001:db8::9: refused", "<IPv6>: refused"),
        // Setup codes and URL credentials.
        ("setup code ABCD-EF23-GH45 (also", "setup code <code> (also"),
        (
            "https://user:pw@push.example/notify",
            "https://<credentials>@push.example/notify",
        ),
        // Tokens: hex keys, base64, password hashes, generated passwords.
        (
            "key 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef end",
            "key <token> end",
        ),
        (
            "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQ",
            "<token>",
        ),
        ("$6$rounds=5000$Ab1cd$Xy9.zq/EEFs3W1jBqX0dS2sN7U", "<token>"),
        ("p=Zx8v3QkLmN2pR5tW7yB4c", "<token>"),
    ];
    for (input, want) in cases {
        assert_eq!(scrub(input), *want, "scrub({input:?})");
    }
}

#[test]
fn scrubber_leaves_what_identifies_nobody() {
    for text in [
        "2026-12-07T11:56:40.123456Z  INFO relaybox::smtp::session: closed",
        "Cache::add and Foo::dead::beef",
        "version 0.1.0, build 43",
        "dns.srv.submissions: The SRV record of _submissions._tcp.chat.example.org. is correct.",
        "max_user_send_per_minute = 60",
        "opendkim._domainkey.chat.example.org.",
        "12:00:00 took 1.5 s; 3 messages",
        "port.25.outbound",
        "written 1234567890123456789012 bytes",
        "a@ b @c @",
        "https://chat.example.org/new",
        "ünïcödé 1.2.3 ✓",
        "decided upon suite TLS13_AES_256_GCM_SHA384",
    ] {
        assert_eq!(scrub(text), text, "{text:?} changed");
    }
}

/// The config with every key of the table set: only the allow-listed values show.
#[test]
fn config_redaction_hides_every_key_outside_the_allow_list() {
    for key in SHOWN_KEYS {
        assert!(
            KEYS.iter().any(|k| k.name() == *key),
            "SHOWN_KEYS names {key}, which the key table does not have"
        );
    }
    let mut ini = String::from("# a comment with admin@example.org\n[params]\n");
    // The relay's own name shows as written; every other key carries an address and an IP.
    ini += "mail_domain = chat.example.net\n";
    for key in KEYS.iter().filter(|k| k.name() != "mail_domain") {
        let name = key.name();
        ini += &format!("{name} = value of ({name}) 192.0.2.55 someone@example.org\n");
    }
    ini += "not_a_key = hidden-value\n";
    ini += "acme_email =\n  continued-line@example.org\n";
    let shown = redacted_config(&ini);
    assert!(
        shown.contains("mail_domain = chat.example.net\n"),
        "{shown}"
    );
    for key in KEYS.iter().filter(|k| k.name() != "mail_domain") {
        let name = key.name();
        let marker = format!("value of ({name})");
        assert!(shown.contains(name), "{name} is not listed:\n{shown}");
        if SHOWN_KEYS.contains(&name) {
            assert!(shown.contains(&marker), "{name} is allow-listed:\n{shown}");
        } else {
            assert!(!shown.contains(&marker), "{name}'s value shows:\n{shown}");
            assert!(
                shown.contains(&format!("{name} = (set; value not shown)")),
                "{shown}"
            );
        }
    }
    assert!(!shown.contains("hidden-value"), "{shown}");
    assert!(shown.contains("not_a_key: unknown key"), "{shown}");
    assert!(!shown.contains("a comment"), "{shown}");
    assert!(!shown.contains("continued-line"), "{shown}");
    // Allow-listed values are scrubbed too (no address, no IP).
    assert!(!shown.contains("192.0.2.55"), "{shown}");
    assert!(!shown.contains("example.org"), "{shown}");
}

fn facts(live: Option<Live>) -> Facts {
    Facts {
        made_at: 1_800_000_000,
        version: "9.9.9".into(),
        release: None,
        mail_domain: "chat.example.org".into(),
        mode: Mode::Domain,
        config_text: Some(
            "[params]\nmail_domain = chat.example.org\nacme_email = me@example.org\n".into(),
        ),
        store: Ok(StoreFigures {
            accounts: 3,
            store_bytes: 5 * 1024 * 1024,
            free_bytes: Some(1 << 30),
            queue: vec![DomainQueue {
                domain: "slow.example".into(),
                messages: 2,
                oldest: 1_800_000_000 - 7200,
                attempts: 4,
                next_attempt: 1_800_000_000 + 600,
            }],
        }),
        certificate: Certificate {
            source: "acme".into(),
            issuer: "Let's Encrypt (R11)".into(),
            names: vec!["chat.example.org".into()],
            not_before: None,
            not_after: Some(1_800_000_000 + 30 * 86_400),
            progress: None,
        },
        live,
        logs: vec![
            "INFO smtp{peer=198.51.100.4:4000}: accepted from abc@chat.example.org".into(),
            "WARN imap{peer=[2001:db8::5]:993}: login failed".into(),
        ],
    }
}

#[test]
fn stopped_report_says_relay_not_running_where_live_checks_would_be() {
    let text = render(&facts(None));
    for section in [
        "## Services\n\nrelay not running",
        "## DNS checks\n\nrelay not running",
        "## Port checks\n\nrelay not running",
        "## Recent log lines\n\nrelay not running",
        "write figures: relay not running",
    ] {
        assert!(text.contains(section), "{section:?} missing:\n{text}");
    }
    assert!(text.contains("version: 9.9.9"), "{text}");
    assert!(text.contains("mail_domain: chat.example.org"), "{text}");
    assert!(
        text.contains("acme_email = (set; value not shown)"),
        "{text}"
    );
    assert!(!text.contains("me@example.org"), "{text}");
    assert!(text.contains("- slow.example: 2 message(s), oldest 2 h 0 min old, up to 4 attempt(s), next attempt in 10 min"), "{text}");
    assert!(text.contains("valid until: 2027-02-14"), "{text}");
    assert!(text.contains("accounts: 3"), "{text}");
    // The logs are the running relay's: none here.
    assert!(!text.contains("login failed"), "{text}");
}

#[test]
fn running_report_has_every_section_and_no_address_or_ip() {
    let check = |id: &str, status, found: &str| Check {
        id: id.into(),
        status,
        summary: format!("{id} summary"),
        details: Some("details about 203.0.113.80".into()),
        expected: Some("10 chat.example.org.".into()),
        found: Some(found.into()),
    };
    let live = Live {
        services: vec![ServiceHealth {
            name: "SMTP (25)".into(),
            status: CheckStatus::Ok,
            detail: "listening on 0.0.0.0:25, [::]:25".into(),
        }],
        dns: vec![
            check("dns.mx", CheckStatus::Error, "10 other.example."),
            check("dns.ptr", CheckStatus::Warning, "host.isp.example."),
        ],
        ports: vec![check("port.25.outbound", CheckStatus::Ok, "220")],
        update: UpdateInfo {
            state: "up to date".into(),
            last_error: None,
            last_check: None,
            busy: false,
            available: false,
        },
        written_per_day: Some(2048),
        written_today: None,
    };
    let text = render(&facts(Some(live)));
    for part in [
        "# Relaybox diagnostic report",
        "## Relay",
        "state: running",
        "## Config",
        "## Services\n\n[ok] SMTP (25): listening on <IPv4>:25, [<IPv6>]:25",
        "## Certificate",
        "[error] dns.mx: dns.mx summary",
        "    found: 10 other.example.",
        "[warning] dns.ptr",
        "## Port checks\n\n[ok] port.25.outbound",
        "## Outbound queue",
        "## Storage",
        "written on the last full day: 2.0 KiB (2048 bytes)",
        "written today so far: not known yet",
        "## Recent log lines",
        "INFO smtp{peer=<IPv4>:4000}: accepted from <address>",
        "WARN imap{peer=[<IPv6>]:993}: login failed",
    ] {
        assert!(text.contains(part), "{part:?} missing:\n{text}");
    }
    for leak in [
        "198.51.100.4",
        "2001:db8::5",
        "abc@",
        "203.0.113.80",
        "0.0.0.0",
        "me@example.org",
    ] {
        assert!(!text.contains(leak), "{leak} in:\n{text}");
    }
}

#[tokio::test]
async fn store_figures_count_the_queue_by_destination_domain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = crate::testing::config(dir.path(), "chat.example.org");
    let store = Store::open(&dir.path().join(crate::store::STORE_FILE)).expect("store");
    for (remote, at) in [
        (vec!["a@slow.example", "b@slow.example"], 100),
        (vec!["c@slow.example"], 50),
        (vec!["d@Other.Example"], 70),
    ] {
        store
            .deliver(Delivery {
                sender: "me@chat.example.org".into(),
                local: Vec::new(),
                remote: remote.into_iter().map(str::to_string).collect(),
                body: Parsed::legacy(b"Subject: x\r\n\r\nbody\r\n".to_vec()),
                received: at,
            })
            .await
            .expect("deliver");
    }
    let figures = store_figures(&config, &store).expect("figures");
    let got: Vec<(&str, u64, u64)> = figures
        .queue
        .iter()
        .map(|q| (q.domain.as_str(), q.messages, q.oldest))
        .collect();
    assert_eq!(got, [("slow.example", 2, 50), ("other.example", 1, 70)]);
    assert!(figures.store_bytes > 0);
    let text = render(&Facts {
        store: Ok(figures),
        ..facts(None)
    });
    assert!(text.contains("3 message(s) waiting"), "{text}");
    assert!(!text.contains('@'), "{text}");
}

#[test]
fn stopped_report_without_a_store_says_so_and_file_names_are_safe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = crate::testing::config(dir.path(), "chat.example.org");
    let text = stopped(
        &config,
        Some("[params]\nmail_domain = chat.example.org\n"),
        None,
        0,
    );
    assert!(text.contains("no store yet"), "{text}");
    assert!(text.contains("## Services\n\nrelay not running"), "{text}");
    assert_eq!(
        file_name("chat.example.org", 1_800_000_000),
        "relaybox-report-chat.example.org-2027-01-15.txt"
    );
    assert_eq!(
        file_name("../\"x\r\n", 0),
        "relaybox-report-x-1970-01-01.txt"
    );
}
