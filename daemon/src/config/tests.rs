//! Tests of the config: parsing chatmail.ini, every key, defaults, errors naming the key.

use super::*;

fn parse(text: &str) -> Loaded {
    match Config::parse(text) {
        Ok(l) => l,
        Err(e) => panic!("{text:?} must parse: {e}"),
    }
}

fn with(extra: &str) -> Config {
    parse(&format!(
        "[params]\nmail_domain = chat.example.org\n{extra}\n"
    ))
    .config
}

fn error(extra: &str) -> ConfigError {
    match Config::parse(&format!(
        "[params]\nmail_domain = chat.example.org\n{extra}\n"
    )) {
        Ok(_) => panic!("{extra:?} must be refused"),
        Err(e) => e,
    }
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

#[test]
fn defaults_match_upstream() {
    let c = with("");
    assert_eq!(c.mail_domain, "chat.example.org");
    assert_eq!(c.mode, Mode::Domain);
    assert_eq!(c.max_user_send_per_minute, 60);
    assert_eq!(c.max_user_send_burst_size, 10);
    assert_eq!(c.max_mailbox_size, 524_288_000);
    assert_eq!(c.max_message_size, 31_457_280);
    assert_eq!(c.delete_mails_after, 20);
    assert_eq!(c.delete_large_after, 7);
    assert_eq!(c.delete_inactive_users_after, 90);
    assert_eq!(c.username_min_length, 9);
    assert_eq!(c.username_max_length, 9);
    assert_eq!(c.password_min_length, 9);
    // Not upstream's fixed 5 (issue 16): 4 per CPU of this machine.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        c.max_load_1m >= 4.0 * cpus as f64,
        "max_load_1m {} for {cpus} usable CPUs",
        c.max_load_1m
    );
    assert_eq!(c.max_load_1m % 4.0, 0.0, "{}", c.max_load_1m);
    assert_eq!(c.min_available_memory, 200 * 1024 * 1024);
    assert_eq!(c.min_free_disk_space, 1024 * 1024 * 1024);
    assert_eq!(c.max_imap_connections, 10_000);
    assert_eq!(c.max_smtp_connections, 1_000);
    assert_eq!(c.tls_external_cert_and_key, None);
    assert_eq!(c.www_folder, None);
    assert!(!c.disable_ipv6);
    assert_eq!(c.acme_email, "");
    assert_eq!(c.iroh_relay, None);
    assert_eq!(c.mtail_address, None);
    assert!(!c.imap_rawlog);
    assert!(!c.imap_compress);
    assert_eq!(c.privacy_postal, "");
    assert_eq!(c.privacy_mail, "");
    assert_eq!(c.privacy_pdo, "");
    assert_eq!(c.privacy_supervisor, "");
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/relaybox"));
    let l = &c.listen;
    for (list, port) in [
        (&l.smtp, 25),
        (&l.submission, 587),
        (&l.submissions, 465),
        (&l.imap, 143),
        (&l.imaps, 993),
        (&l.https, 443),
        (&l.http, 80),
    ] {
        assert_eq!(list, &vec![sa(&format!("[::]:{port}"))]);
    }
    assert!(!c.self_signed());
}

#[test]
fn store_cache_size_has_a_small_default_and_a_floor() {
    assert_eq!(with("").store_cache_size, 16 * 1024 * 1024);
    assert_eq!(
        with("store_cache_size = 64M").store_cache_size,
        64 * 1024 * 1024
    );
    let e = error("store_cache_size = 0").to_string();
    assert!(e.contains("store_cache_size"), "{e}");
}

#[test]
fn connection_limits() {
    // Issue 13: defaults, then every key.
    let c = with("").connections;
    let per = PerAddress {
        connections: 50,
        rate: 10,
        burst: 50,
    };
    assert_eq!(c.per_address, per);
    assert_eq!(c.smtpd_timeout, Duration::from_secs(300));
    assert_eq!(c.smtpd_min_data_rate, 500);
    assert_eq!(c.smtpd_session_deadline, Duration::from_secs(1800));
    assert_eq!(c.imap_login_timeout, Duration::from_secs(60));
    let c = with(
        "max_connections_per_ip = 7
max_connection_rate_per_ip = 3
max_connection_burst_per_ip = 4
smtpd_timeout = 2s
smtpd_min_data_rate = 100
smtpd_session_deadline = 1h
imap_login_timeout = 5",
    )
    .connections;
    let per = PerAddress {
        connections: 7,
        rate: 3,
        burst: 4,
    };
    assert_eq!(c.per_address, per);
    assert_eq!(c.smtpd_timeout, Duration::from_secs(2));
    assert_eq!(c.smtpd_min_data_rate, 100);
    assert_eq!(c.smtpd_session_deadline, Duration::from_secs(3600));
    assert_eq!(c.imap_login_timeout, Duration::from_secs(5));
}

#[test]
fn every_key_is_read() {
    let c = with(
        "max_user_send_per_minute = 30
max_user_send_burst_size = 3
max_mailbox_size = 1G
max_message_size = 1000
delete_mails_after = 1
delete_large_after = 2
delete_inactive_users_after = 3
username_min_length = 5
username_max_length = 12
password_min_length = 20
max_load_1m = 2.5
min_available_memory = 64M
min_free_disk_space = 10
max_imap_connections = 7
max_smtp_connections = 8
tls_external_cert_and_key = /etc/ssl/chain.pem   /etc/ssl/key.pem
www_folder = /srv/www
disable_ipv6 = True
acme_email = admin@example.org
iroh_relay = https://iroh.example.org
mtail_address = 127.0.0.1
imap_rawlog = TRUE
imap_compress = true
privacy_postal = Street 1
privacy_mail = privacy@example.org
privacy_pdo = Officer
privacy_supervisor = Authority
mailboxes_dir = /old/mail
passdb_path = /old/passdb.sqlite
data_dir = /data/relay
smtp_listen = 192.0.2.1:25, [2001:db8::1]:25
submission_listen = 127.0.0.1:587
submissions_listen = 127.0.0.1:465 127.0.0.2:465
imap_listen =
imaps_listen = 0.0.0.0:993
https_listen = [::1]:8443
http_listen = 0.0.0.0:8080,",
    );
    assert_eq!(c.max_user_send_per_minute, 30);
    assert_eq!(c.max_user_send_burst_size, 3);
    assert_eq!(c.max_mailbox_size, 1024 * 1024 * 1024);
    assert_eq!(c.max_message_size, 1000);
    assert_eq!(c.delete_mails_after, 1);
    assert_eq!(c.delete_large_after, 2);
    assert_eq!(c.delete_inactive_users_after, 3);
    assert_eq!(c.username_min_length, 5);
    assert_eq!(c.username_max_length, 12);
    assert_eq!(c.password_min_length, 20);
    assert_eq!(c.max_load_1m, 2.5);
    assert_eq!(c.min_available_memory, 64 * 1024 * 1024);
    assert_eq!(c.min_free_disk_space, 10 * 1024 * 1024);
    assert_eq!(c.max_imap_connections, 7);
    assert_eq!(c.max_smtp_connections, 8);
    assert_eq!(
        c.tls_external_cert_and_key,
        Some((
            PathBuf::from("/etc/ssl/chain.pem"),
            PathBuf::from("/etc/ssl/key.pem")
        ))
    );
    assert!(!c.self_signed());
    assert_eq!(c.www_folder, Some(PathBuf::from("/srv/www")));
    assert!(c.disable_ipv6);
    assert_eq!(c.acme_email, "admin@example.org");
    assert_eq!(c.iroh_relay.as_deref(), Some("https://iroh.example.org"));
    assert_eq!(c.mtail_address.as_deref(), Some("127.0.0.1"));
    assert!(c.imap_rawlog);
    assert!(c.imap_compress);
    assert_eq!(c.privacy_postal, "Street 1");
    assert_eq!(c.privacy_mail, "privacy@example.org");
    assert_eq!(c.privacy_pdo, "Officer");
    assert_eq!(c.privacy_supervisor, "Authority");
    assert_eq!(c.data_dir, PathBuf::from("/data/relay"));
    assert_eq!(
        c.listen.smtp,
        vec![sa("192.0.2.1:25"), sa("[2001:db8::1]:25")]
    );
    assert_eq!(c.listen.submission, vec![sa("127.0.0.1:587")]);
    assert_eq!(
        c.listen.submissions,
        vec![sa("127.0.0.1:465"), sa("127.0.0.2:465")]
    );
    assert_eq!(c.listen.imap, vec![], "empty disables the service");
    assert_eq!(c.listen.imaps, vec![sa("0.0.0.0:993")]);
    assert_eq!(c.listen.https, vec![sa("[::1]:8443")]);
    assert_eq!(c.listen.http, vec![sa("0.0.0.0:8080")]);
}

#[test]
fn disable_ipv6_moves_default_listeners_to_ipv4() {
    // PORT-1
    let c = with("disable_ipv6 = true");
    assert_eq!(c.listen, Listeners::standard(true));
    assert_eq!(c.listen.imaps, vec![sa("0.0.0.0:993")]);
    assert_eq!(c.listen.http, vec![sa("0.0.0.0:80")]);
    // An explicit list wins over the default.
    let c = with("disable_ipv6 = true\nsmtp_listen = [::]:25");
    assert_eq!(c.listen.smtp, vec![sa("[::]:25")]);
}

#[test]
fn booleans_follow_cfg_1() {
    for (text, want) in [
        ("true", true),
        ("True", true),
        ("TRUE", true),
        ("tRuE", true),
        ("false", false),
        ("False", false),
        ("yes", false),
        ("1", false),
        ("on", false),
        ("", false),
    ] {
        for key in ["disable_ipv6", "imap_rawlog", "imap_compress"] {
            let c = with(&format!("{key} = {text}"));
            let got = match key {
                "disable_ipv6" => c.disable_ipv6,
                "imap_rawlog" => c.imap_rawlog,
                _ => c.imap_compress,
            };
            assert_eq!(got, want, "{key} = {text:?}");
        }
    }
}

#[test]
fn sizes_follow_cfg_2() {
    const M: u64 = 1024 * 1024;
    for (text, want) in [
        ("500M", Some(500 * M)),
        ("500m", Some(500 * M)),
        ("500MB", Some(500 * M)),
        ("500mb", Some(500 * M)),
        (" 500M ", Some(500 * M)),
        ("500", Some(500 * M)),
        ("500B", Some(500 * M)),
        ("2G", Some(2048 * M)),
        ("2gb", Some(2048 * M)),
        ("1 G", Some(1024 * M)),
        ("0", Some(0)),
        ("lots", None),
        ("", None),
        ("M", None),
        ("1.5G", None),
        ("-1M", None),
        ("500K", None),
        ("500MBB", None),
        ("99999999999999999G", None),
    ] {
        assert_eq!(parse_size(text), want, "{text:?}");
    }
    for key in [
        "max_mailbox_size",
        "min_available_memory",
        "min_free_disk_space",
    ] {
        let c = with(&format!("{key} = 3G"));
        let got = match key {
            "max_mailbox_size" => c.max_mailbox_size,
            "min_available_memory" => c.min_available_memory,
            _ => c.min_free_disk_space,
        };
        assert_eq!(got, 3 * 1024 * M, "{key}");
    }
}

#[test]
fn mail_domain_modes_cfg_3() {
    for (domain, mode, address, host) in [
        (
            "chat.example.org",
            Mode::Domain,
            "chat.example.org",
            "chat.example.org",
        ),
        (
            "_relay.test",
            Mode::Underscore,
            "_relay.test",
            "_relay.test",
        ),
        ("_relay", Mode::Underscore, "_relay", "_relay"),
        (
            "192.0.2.7",
            Mode::IpOnly(Ipv4Addr::new(192, 0, 2, 7)),
            "[192.0.2.7]",
            "7.2.0.192.in-addr.arpa",
        ),
        (
            "127.0.0.1",
            Mode::IpOnly(Ipv4Addr::LOCALHOST),
            "[127.0.0.1]",
            "1.0.0.127.in-addr.arpa",
        ),
    ] {
        let c = parse(&format!("[params]\nmail_domain = {domain}\n")).config;
        assert_eq!(c.mail_domain, domain);
        assert_eq!(c.mode, mode, "{domain}");
        assert_eq!(c.address_domain(), address);
        assert_eq!(c.host_name(), host);
        assert_eq!(c.self_signed(), mode != Mode::Domain, "{domain}");
    }
}

#[test]
fn bad_mail_domains_are_refused() {
    for domain in [
        "",
        "::1",
        "[127.0.0.1]",
        "exa mple.org",
        "example..org",
        "-example.org",
        "example-.org",
        "ex_ample.org",
        "user@example.org",
        "1.2.3",
        "256.1.1.1",
        "example.org.",
    ] {
        let err = Config::parse(&format!("[params]\nmail_domain = {domain}\n"))
            .err()
            .unwrap_or_else(|| panic!("{domain:?} must be refused"));
        let msg = err.to_string();
        assert!(msg.starts_with("mail_domain: "), "{msg}");
        assert!(msg.contains("expected a domain name"), "{msg}");
    }
}

#[test]
fn missing_mail_domain_is_an_error() {
    for text in [
        "",
        "[params]\n",
        "[params]\nmax_mailbox_size = 1G\n",
        "[other]\nmail_domain = x.org\n",
    ] {
        let err = Config::parse(text).err().expect("missing mail_domain");
        assert!(
            matches!(&err, ConfigError::Value { key, .. } if key == "mail_domain"),
            "{err}"
        );
        assert!(err.to_string().contains("missing"), "{err}");
    }
}

#[test]
fn bad_values_name_their_key() {
    for (line, key, expect) in [
        (
            "max_mailbox_size = lots",
            "max_mailbox_size",
            "expected a size like 500M or 2G, got \"lots\"",
        ),
        (
            "min_available_memory = 2T",
            "min_available_memory",
            "expected a size like 500M or 2G",
        ),
        (
            "min_free_disk_space = ",
            "min_free_disk_space",
            "expected a size like 500M or 2G",
        ),
        (
            "signup = invites",
            "signup",
            "expected open, closed, invite or no-automatic, got \"invites\"",
        ),
        (
            "max_message_size = 30M",
            "max_message_size",
            "expected a number of bytes like 31457280, got \"30M\"",
        ),
        (
            "max_message_size = 0",
            "max_message_size",
            "expected a number of bytes",
        ),
        (
            "max_user_send_per_minute = many",
            "max_user_send_per_minute",
            "expected a whole number like 60",
        ),
        (
            "max_user_send_per_minute = 0",
            "max_user_send_per_minute",
            "at least 1",
        ),
        (
            "max_user_send_burst_size = -1",
            "max_user_send_burst_size",
            "expected a whole number",
        ),
        (
            "delete_mails_after = 2.5",
            "delete_mails_after",
            "expected a whole number like 20",
        ),
        (
            "delete_large_after = x",
            "delete_large_after",
            "expected a whole number like 7",
        ),
        (
            "delete_inactive_users_after = ",
            "delete_inactive_users_after",
            "expected a whole number like 90",
        ),
        (
            "username_min_length = nine",
            "username_min_length",
            "expected a whole number like 9",
        ),
        (
            "username_max_length = 0",
            "username_max_length",
            "at least 1",
        ),
        (
            "username_min_length = 10",
            "username_max_length",
            "at least username_min_length (10)",
        ),
        (
            "password_min_length = 9x",
            "password_min_length",
            "expected a whole number like 9",
        ),
        (
            "max_load_1m = high",
            "max_load_1m",
            "expected a load average like 5 or 2.5, or auto (4 per CPU), got \"high\"",
        ),
        ("max_load_1m = -1", "max_load_1m", "expected a load average"),
        (
            "max_load_1m = NaN",
            "max_load_1m",
            "expected a load average",
        ),
        (
            "max_imap_connections = lots",
            "max_imap_connections",
            "expected a whole number like 10000",
        ),
        (
            "max_smtp_connections = 0",
            "max_smtp_connections",
            "at least 1",
        ),
        (
            "max_connections_per_ip = 0",
            "max_connections_per_ip",
            "at least 1",
        ),
        (
            "max_connection_rate_per_ip = fast",
            "max_connection_rate_per_ip",
            "expected a whole number like 10",
        ),
        ("smtpd_timeout = 0", "smtpd_timeout", "at least 1s"),
        (
            "imap_login_timeout = soon",
            "imap_login_timeout",
            "expected a time like",
        ),
        (
            "tls_external_cert_and_key = /only/one.pem",
            "tls_external_cert_and_key",
            "expected two paths",
        ),
        (
            "tls_external_cert_and_key = a b c",
            "tls_external_cert_and_key",
            "got \"a b c\"",
        ),
        (
            "smtp_listen = 25",
            "smtp_listen",
            "expected socket addresses like 0.0.0.0:25",
        ),
        (
            "submission_listen = localhost:587",
            "submission_listen",
            "expected socket addresses",
        ),
        (
            "submissions_listen = 1.2.3.4",
            "submissions_listen",
            "expected socket addresses",
        ),
        (
            "imap_listen = ::1:143",
            "imap_listen",
            "expected socket addresses",
        ),
        (
            "imaps_listen = 0.0.0.0:99999",
            "imaps_listen",
            "expected socket addresses",
        ),
        (
            "https_listen = [::]:443;[::]:8443",
            "https_listen",
            "expected socket addresses",
        ),
        (
            "http_listen = 0.0.0.0:80 x",
            "http_listen",
            "got \"0.0.0.0:80 x\"",
        ),
    ] {
        let err = error(line);
        match &err {
            ConfigError::Value { key: k, msg } => {
                assert_eq!(k, key, "{line}");
                assert!(msg.contains(expect), "{line}: {msg}");
            }
            other => panic!("{line}: expected a value error, got {other}"),
        }
        assert!(err.to_string().starts_with(&format!("{key}: ")), "{err}");
    }
    assert_eq!(
        error("max_mailbox_size = lots").to_string(),
        "max_mailbox_size: expected a size like 500M or 2G, got \"lots\""
    );
}

#[test]
fn update_keys() {
    let c = with("");
    assert_eq!(c.update_url, DEFAULT_UPDATE_URL);
    assert_eq!(c.update_check_interval, Duration::from_secs(6 * 3600));
    assert_eq!(
        c.update_window.map(|w| w.to_string()).as_deref(),
        Some("03:00-05:00")
    );
    // OTA-5: five health checks 30 s apart.
    assert_eq!(c.update_health_attempts, 5);
    assert_eq!(c.update_health_retry, Duration::from_secs(30));
    // `auto` is resolved by `main`, not while parsing.
    assert_eq!(c.watchdog, WatchdogSetting::Auto);
    let c = with(
        "update_url = https://10.0.2.100/rb/latest.json\nupdate_check_interval = 10m\n\
             update_window =\nwatchdog = /dev/watchdog1\nupdate_health_attempts = 3\n\
             update_health_retry = 5s",
    );
    assert_eq!(c.update_health_attempts, 3);
    assert_eq!(c.update_health_retry, Duration::from_secs(5));
    // One check needs no pause, whatever the pause says.
    assert_eq!(
        with("update_health_attempts = 1\nupdate_health_retry = 1h").update_health_retry,
        Duration::from_secs(3600)
    );
    assert_eq!(c.update_url, "https://10.0.2.100/rb/latest.json");
    assert_eq!(c.update_check_interval, Duration::from_secs(600));
    assert_eq!(c.update_window, None, "empty = any time");
    assert_eq!(
        c.watchdog,
        WatchdogSetting::Device(PathBuf::from("/dev/watchdog1"))
    );
    assert_eq!(with("update_url =").update_url, "", "empty = no checks");
    for off in ["off", "none", ""] {
        assert_eq!(
            with(&format!("watchdog = {off}")).watchdog,
            WatchdogSetting::Off
        );
    }
    for (bad, key, says) in [
        (
            "update_url = http://example.org/latest.json",
            "update_url",
            "https://",
        ),
        ("update_url = example.org", "update_url", "https://"),
        (
            "update_check_interval = 5m",
            "update_check_interval",
            "at least 10m",
        ),
        (
            "update_check_interval = soon",
            "update_check_interval",
            "expected a time",
        ),
        ("update_window = 3-5", "update_window", ""),
        (
            "update_health_attempts = 0",
            "update_health_attempts",
            "at least 1",
        ),
        (
            "update_health_retry = 0s",
            "update_health_retry",
            "at least 1s",
        ),
        (
            // The default 5 checks: 4 pauses of 75 s fill the 300 s window.
            "update_health_retry = 75s",
            "update_health_retry",
            "do not fit the 300s health window",
        ),
        (
            "update_health_attempts = 11\nupdate_health_retry = 30s",
            "update_health_retry",
            "10 pauses of 30s",
        ),
    ] {
        match error(bad) {
            ConfigError::Value { key: k, msg } => {
                assert_eq!(k, key, "{bad}");
                assert!(msg.contains(says), "{bad}: {msg}");
            }
            other => panic!("{bad}: expected a value error, got {other}"),
        }
    }
}

#[test]
fn watchdog_auto_is_resolved_from_the_callers_facts() {
    let dev = PathBuf::from(DEFAULT_WATCHDOG_DEVICE);
    let named = PathBuf::from("/dev/watchdog1");
    // (setting, A/B image, device exists) → device
    for (setting, ab_image, exists, want) in [
        (WatchdogSetting::Auto, true, true, Some(dev.clone())),
        (WatchdogSetting::Auto, true, false, None),
        (WatchdogSetting::Auto, false, true, None),
        (WatchdogSetting::Auto, false, false, None),
        (WatchdogSetting::Off, true, true, None),
        (
            WatchdogSetting::Device(named.clone()),
            false,
            false,
            Some(named.clone()),
        ),
    ] {
        let asked = std::cell::Cell::new(0);
        let got = setting.resolve(
            || {
                asked.set(asked.get() + 1);
                ab_image
            },
            |p| {
                assert_eq!(p, dev.as_path());
                exists
            },
        );
        assert_eq!(got, want, "{setting:?} {ab_image} {exists}");
        // The machine is looked at only for `auto`.
        let auto = setting == WatchdogSetting::Auto;
        assert_eq!(asked.get(), usize::from(auto), "{setting:?}");
    }
}

#[test]
fn push_url_and_extra_roots() {
    let c = with("");
    assert_eq!(c.push_url, "https://notifications.delta.chat/notify");
    assert_eq!(c.tls_extra_roots, None);
    let c = with("push_url = https://127.0.0.1:8443/notify \ntls_extra_roots = /etc/rb/ca.pem");
    assert_eq!(c.push_url, "https://127.0.0.1:8443/notify");
    assert_eq!(c.tls_extra_roots, Some(PathBuf::from("/etc/rb/ca.pem")));
    assert_eq!(with("tls_extra_roots =").tls_extra_roots, None);
    for bad in [
        "push_url =",
        "push_url = http://notifications.delta.chat/notify",
        "push_url = https://",
        "push_url = https:///notify",
        "push_url = https://a b/notify",
        "push_url = notifications.delta.chat",
    ] {
        match error(bad) {
            ConfigError::Value { key, msg } => {
                assert_eq!(key, "push_url", "{bad}");
                assert!(msg.contains("expected an https:// URL"), "{bad}: {msg}");
            }
            other => panic!("{bad}: expected a value error, got {other}"),
        }
    }
}

#[test]
fn iroh_relay_absent_vs_present_cfg_5() {
    assert_eq!(with("").iroh_relay, None);
    assert_eq!(with("iroh_relay =").iroh_relay.as_deref(), Some(""));
    assert_eq!(
        with("iroh_relay =   https://iroh.example.org  ")
            .iroh_relay
            .as_deref(),
        Some("https://iroh.example.org")
    );
    // A commented-out key is absent.
    assert_eq!(with("# iroh_relay =").iroh_relay, None);
}

#[test]
fn empty_optional_values_are_unset() {
    let c = with("www_folder =\nmtail_address =\ntls_external_cert_and_key =\nacme_email =");
    assert_eq!(c.www_folder, None);
    assert_eq!(c.mtail_address, None);
    assert_eq!(c.tls_external_cert_and_key, None);
    assert_eq!(c.acme_email, "");
}

#[test]
fn unknown_keys_are_listed_plumbing_is_silent_cfg_4() {
    let l = parse(
        "[params]
mail_domain = chat.example.org
frobnicate = 1
filtermail_smtp_port = 10080
filtermail_smtp_port_incoming = 10081
filtermail_http_port_incoming = 10082
filtermail_lmtp_port_transport = 10083
postfix_reinject_port = 10025
postfix_reinject_port_incoming = 10026
turn_socket_path = /run/chatmail-turn/turn.socket
passthrough_senders =
passthrough_recipients = @example.com
tls_cert = acme
[extra]
color = blue
",
    );
    assert_eq!(
        l.unknown_keys,
        vec![
            "frobnicate",
            "passthrough_recipients",
            "tls_cert",
            "[extra] color"
        ]
    );
    // The removed passthrough keys enable nothing: there is no field for them.
    assert_eq!(l.config.mode, Mode::Domain);
}

#[test]
fn ini_syntax() {
    // Comments with # and ;, `key: value`, inline text kept verbatim, continuation lines.
    let l = parse(
        "; leading comment
[params]  # the only section
  # indented comment
mail_domain: chat.example.org
acme_email = a@example.org # not a comment
privacy_postal =
    Example GmbH
    Street 1

    12345 Town
privacy_pdo = Line one
  line two
",
    );
    let c = l.config;
    assert_eq!(c.mail_domain, "chat.example.org");
    assert_eq!(c.acme_email, "a@example.org # not a comment");
    assert_eq!(c.privacy_postal, "Example GmbH\nStreet 1\n12345 Town");
    assert_eq!(c.privacy_pdo, "Line one\nline two");
    assert!(l.unknown_keys.is_empty(), "{:?}", l.unknown_keys);
}

#[test]
fn syntax_errors_give_the_line() {
    for (text, line, expect) in [
        ("mail_domain = x.org\n", 1, "before any section"),
        (
            "[params]\nmail_domain = x.org\nmail_domain = y.org\n",
            3,
            "set twice",
        ),
        (
            "[params]\nmail_domain = x.org\njust words\n",
            3,
            "expected `key = value`",
        ),
        ("[params\nmail_domain = x.org\n", 1, "section header"),
        ("[params]\n[params]\n", 2, "duplicate section"),
        ("[params]\n  indented\n", 2, "unexpected indented line"),
        ("[params]\n = x\n", 2, "unexpected indented line"),
        ("[params]\n= x\n", 2, "expected a key"),
    ] {
        match Config::parse(text) {
            Err(ConfigError::Syntax { line: l, msg }) => {
                assert_eq!(l, line, "{text:?}");
                assert!(msg.contains(expect), "{text:?}: {msg}");
            }
            Err(e) => panic!("{text:?}: expected a syntax error, got {e}"),
            Ok(_) => panic!("{text:?}: expected a syntax error"),
        }
    }
}

/// An upstream-generated chatmail.ini (1.10-era template, with the removed
/// passthrough keys and plumbing ports) loads with upstream's values.
#[test]
fn upstream_style_file() {
    let text = "[params]

# mail domain (MUST be set to fully qualified chat mail domain)
mail_domain = chat.example.org

#
# If you only do private test deploys, you don't need to modify any settings below
#

# email sending rate per user and minute
max_user_send_per_minute = 60

# per-user max burst size for sending rate limiting (GCRA bucket capacity)
max_user_send_burst_size = 10

# maximum mailbox size of a chatmail address
max_mailbox_size = 500M

# maximum message size for an e-mail in bytes
max_message_size = 31457280

# days after which mails are unconditionally deleted
delete_mails_after = 20

# days after which large messages (>200k) are unconditionally deleted
delete_large_after = 7

# days after which users without a successful login are deleted (database and mails)
delete_inactive_users_after = 90

# minimum length a username must have
username_min_length = 9

# maximum length a username can have
username_max_length = 9

# minimum length a password must have
password_min_length = 9

# list of chatmail addresses which can send outbound un-encrypted mail
passthrough_senders =

# list of e-mail recipients for which to accept outbound un-encrypted mails
passthrough_recipients =

#www_folder = www

# SMTP outgoing filtermail and reinjection
filtermail_smtp_port = 10080
postfix_reinject_port = 10025

# SMTP incoming filtermail and reinjection
filtermail_smtp_port_incoming = 10081
postfix_reinject_port_incoming = 10026

# if set to \"True\" IPv6 is disabled
disable_ipv6 = False

# TLS server certificate provisioning
tls_cert = acme

acme_email = 

# iroh_relay =

# mtail_address = 127.0.0.1

imap_rawlog = false 

imap_compress = false

# postal address of privacy contact
privacy_postal =

# email address of privacy contact
privacy_mail =

# postal address of the privacy data officer
privacy_pdo =

# postal address of the privacy supervisor
privacy_supervisor =
";
    let l = parse(text);
    let c = &l.config;
    assert_eq!(c.mode, Mode::Domain);
    assert_eq!(c.max_mailbox_size, 524_288_000);
    assert_eq!(c.max_message_size, 31_457_280);
    assert_eq!(c.username_max_length, 9);
    assert!(!c.disable_ipv6);
    assert!(!c.imap_rawlog);
    assert_eq!(c.iroh_relay, None);
    assert_eq!(c.mtail_address, None);
    assert_eq!(c.www_folder, None);
    assert_eq!(c.listen, Listeners::standard(false));
    assert_eq!(l.unknown_keys, vec!["tls_cert".to_string()]);
}

#[test]
fn federation_keys() {
    let c = with("");
    assert!(c.dns_resolver.is_empty());
    assert_eq!(c.dkim_selector, "opendkim");
    assert_eq!(c.maximal_queue_lifetime, Duration::from_secs(2 * 86_400));
    assert_eq!(c.minimal_backoff_time, Duration::from_secs(300));
    assert_eq!(c.maximal_backoff_time, Duration::from_secs(4000));
    assert!(!c.log_stderr);
    let c = with(
        "dns_resolver = 127.0.0.1:5353, ::1\ndkim_selector = dkim2026\n\
             maximal_queue_lifetime = 5h\nminimal_backoff_time = 1s\nmaximal_backoff_time = 1m",
    );
    assert_eq!(c.dns_resolver, vec![sa("127.0.0.1:5353"), sa("[::1]:53")]);
    assert_eq!(c.dkim_selector, "dkim2026");
    assert_eq!(c.maximal_queue_lifetime, Duration::from_secs(5 * 3600));
    assert_eq!(c.minimal_backoff_time, Duration::from_secs(1));
    assert_eq!(c.maximal_backoff_time, Duration::from_secs(60));
    for (bad, key) in [
        ("dns_resolver = resolver.example", "dns_resolver"),
        ("dkim_selector = a.b", "dkim_selector"),
        ("maximal_queue_lifetime = 2 days", "maximal_queue_lifetime"),
        (
            "minimal_backoff_time = 10m\nmaximal_backoff_time = 1m",
            "maximal_backoff_time",
        ),
        ("mtail_address = metrics.example", "mtail_address"),
    ] {
        match error(bad) {
            ConfigError::Value { key: k, .. } => assert_eq!(k, key, "{bad}"),
            e => panic!("{bad}: {e}"),
        }
    }
    assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172_800)));
    assert_eq!(parse_duration("300"), Some(Duration::from_secs(300)));
    assert_eq!(parse_duration("1w"), Some(Duration::from_secs(604_800)));
    assert_eq!(parse_duration("5x"), None);
    assert_eq!(parse_duration(""), None);
}

#[test]
fn dev_config() {
    let c = Config::dev(PathBuf::from("/tmp/rb-dev"));
    assert_eq!(c.mode, Mode::IpOnly(Ipv4Addr::LOCALHOST));
    assert_eq!(c.address_domain(), "[127.0.0.1]");
    assert_eq!(c.data_dir, PathBuf::from("/tmp/rb-dev"));
    assert!(c.self_signed());
    let l = &c.listen;
    for (list, port) in [
        (&l.smtp, 2525),
        (&l.submission, 1587),
        (&l.submissions, 1465),
        (&l.imap, 1143),
        (&l.imaps, 1993),
        (&l.https, 1443),
        (&l.http, 1080),
    ] {
        assert_eq!(list, &vec![sa(&format!("127.0.0.1:{port}"))]);
    }
    // Everything else at its default.
    assert_eq!(c.max_mailbox_size, 524_288_000);
    assert_eq!(c.username_max_length, 9);
    assert_eq!(c.password_min_length, 9);
    assert_eq!(c.iroh_relay, None);
}

// --- the key table ----------------------------------------------------------------------

use super::keys::{Dev, Fallback, KEYS, Key, Origin, Spec};

#[test]
fn key_table_is_well_formed() {
    let mut seen = std::collections::HashSet::new();
    for key in KEYS {
        let name = key.name();
        assert!(seen.insert(name), "{name} twice in the table");
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{name:?}"
        );
        assert!(
            !PLUMBING_KEYS.contains(&name) && !REMOVED_KEYS.contains(&name),
            "{name} is also an ignored key"
        );
        // The help is a README table cell.
        let help = key.help();
        assert!(
            !help.is_empty() && !help.contains('|') && !help.contains('\n'),
            "{name}: {help:?}"
        );
        for doc in [key.default_doc(), key.dev_doc()] {
            assert!(
                !doc.is_empty() && !doc.contains('|') && !doc.contains('\n'),
                "{name}: {doc:?}"
            );
        }
    }
    // Only mail_domain has no default.
    let required: Vec<&str> = KEYS
        .iter()
        .filter(|k| k.default_doc() == "required")
        .map(|k| k.name())
        .collect();
    assert_eq!(required, vec!["mail_domain"]);
    // Upstream's keys of spec/relay.md §3, no more, no fewer.
    let upstream: Vec<&str> = KEYS
        .iter()
        .filter(|k| k.origin() == Origin::Upstream)
        .map(|k| k.name())
        .collect();
    assert_eq!(
        upstream,
        vec![
            "mail_domain",
            "max_user_send_per_minute",
            "max_user_send_burst_size",
            "max_mailbox_size",
            "max_message_size",
            "delete_mails_after",
            "delete_large_after",
            "delete_inactive_users_after",
            "username_min_length",
            "username_max_length",
            "password_min_length",
            "max_load_1m",
            "min_available_memory",
            "min_free_disk_space",
            "max_imap_connections",
            "max_smtp_connections",
            "tls_external_cert_and_key",
            "www_folder",
            "disable_ipv6",
            "acme_email",
            "iroh_relay",
            "mtail_address",
            "imap_rawlog",
            "imap_compress",
            "privacy_postal",
            "privacy_mail",
            "privacy_pdo",
            "privacy_supervisor",
        ]
    );
}

/// A valid value other than the default for every key of the table: setting it changes
/// the config (so each key reaches a field; a key added to the table without a line
/// here fails).
#[test]
fn every_key_of_the_table_sets_the_config() {
    let samples: &[(&str, &str)] = &[
        ("mail_domain", "other.example.org"),
        ("max_user_send_per_minute", "61"),
        ("max_user_send_burst_size", "11"),
        ("max_mailbox_size", "501M"),
        ("max_message_size", "1000"),
        ("max_message_memory", "65M"),
        ("store_cache_size", "17M"),
        ("delete_mails_after", "21"),
        ("delete_large_after", "8"),
        ("delete_inactive_users_after", "91"),
        ("username_min_length", "8"),
        ("username_max_length", "10"),
        ("password_min_length", "10"),
        ("max_load_1m", "2.5"),
        ("min_available_memory", "201M"),
        ("min_free_disk_space", "2G"),
        ("signup", "invite"),
        ("max_imap_connections", "9"),
        ("max_smtp_connections", "8"),
        ("max_connections_per_ip", "7"),
        ("max_connection_rate_per_ip", "6"),
        ("max_connection_burst_per_ip", "5"),
        ("smtpd_timeout", "301s"),
        ("smtpd_min_data_rate", "501"),
        ("smtpd_session_deadline", "31m"),
        ("imap_login_timeout", "61s"),
        ("tls_external_cert_and_key", "/c.pem /k.pem"),
        ("www_folder", "/srv/www"),
        ("disable_ipv6", "true"),
        ("acme_email", "a@example.org"),
        ("iroh_relay", ""),
        ("mtail_address", "127.0.0.1"),
        ("imap_rawlog", "true"),
        ("imap_compress", "true"),
        ("privacy_postal", "Street 1"),
        ("privacy_mail", "p@example.org"),
        ("server_comment", "A relay for the club"),
        ("privacy_pdo", "Officer"),
        ("privacy_supervisor", "Authority"),
        ("data_dir", "/data"),
        ("push_url", "https://push.example.org/notify"),
        ("tls_extra_roots", "/ca.pem"),
        ("update_url", "https://u.example.org/latest.json"),
        ("update_check_interval", "7h"),
        ("update_window", "01:00-02:00"),
        ("update_health_attempts", "3"),
        ("update_health_retry", "5s"),
        ("watchdog", "off"),
        ("dns_resolver", "127.0.0.1:5353"),
        ("dkim_selector", "dkim2"),
        ("maximal_queue_lifetime", "3d"),
        ("minimal_backoff_time", "301s"),
        ("maximal_backoff_time", "4001s"),
        ("log_stderr", "true"),
        ("admin_from_anywhere", "true"),
        ("setup_code_file", "/boot/setup-code"),
        ("led", "sysfs:ACT"),
        ("led_active_low", "true"),
        ("button", "gpio:gpiochip0:27"),
        ("mdns_name", "box"),
        ("acme_directory", "https://acme.example.org/dir"),
        ("outbound_probe", "mx.example.org:25"),
        ("turn_listen", "127.0.0.1:3478"),
        ("smtp_listen", "127.0.0.1:25"),
        ("submission_listen", "127.0.0.1:587"),
        ("submissions_listen", "127.0.0.1:465"),
        ("imap_listen", "127.0.0.1:143"),
        ("imaps_listen", "127.0.0.1:993"),
        ("https_listen", "127.0.0.1:443"),
        ("http_listen", "127.0.0.1:80"),
        ("backup_dir", "/srv/backups"),
        ("backup_every", "12h"),
        ("backup_keep", "3"),
        ("backup_messages", "false"),
        ("backup_passphrase_file", "/root/pass"),
        ("moved_to", "192.0.2.9"),
        ("front", "front.example.org:4433"),
        (
            "front_pin",
            "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        ),
    ];
    let table: Vec<&str> = KEYS.iter().map(|k| k.name()).collect();
    let sampled: Vec<&str> = samples.iter().map(|(k, _)| *k).collect();
    assert_eq!(sampled, table, "one sample per key, in the table's order");
    let base = format!("{:?}", with(""));
    for (key, value) in samples {
        let text = if *key == "mail_domain" {
            format!("[params]\nmail_domain = {value}\n")
        } else {
            format!("[params]\nmail_domain = chat.example.org\n{key} = {value}\n")
        };
        let l = parse(&text);
        assert!(l.unknown_keys.is_empty(), "{key}: {:?}", l.unknown_keys);
        assert_ne!(
            format!("{:?}", l.config),
            base,
            "{key} = {value} changed nothing"
        );
    }
}

#[test]
fn every_bad_value_error_names_its_key() {
    for key in KEYS {
        let name = key.name();
        for bad in ["x y !", "-1", "http://", "0"] {
            let text = if name == "mail_domain" {
                format!("[params]\nmail_domain = {bad}\n")
            } else {
                format!("[params]\nmail_domain = chat.example.org\n{name} = {bad}\n")
            };
            match Config::parse(&text) {
                Ok(_) => {}
                Err(ConfigError::Value { key, msg }) => {
                    assert_eq!(key, name, "{name} = {bad}: {msg}");
                    assert!(!msg.is_empty() && !msg.starts_with(name), "{msg}");
                }
                Err(e) => panic!("{name} = {bad}: {e}"),
            }
        }
    }
}

#[test]
fn fallbacks_and_their_docs() {
    let spec = |default: Fallback<u32>, dev: Dev<u32>| Spec {
        name: "k",
        origin: Origin::Relaybox,
        default,
        dev,
        parse: |v, _| {
            v.parse::<u32>()
                .map_err(|_| format!("expected a number, got {v:?}"))
        },
        set: |c, v| c.max_user_send_per_minute = v,
        help: "h",
    };
    let value = |s: &Spec<u32>, file: Option<&str>, dev: bool| {
        let mut c = with("");
        s.apply(file, dev, &mut c)
            .map(|()| c.max_user_send_per_minute)
    };
    // (default, dev, README default, README dev, value, dev value)
    let s = spec(Fallback::Text("7"), Dev::Same);
    assert_eq!(
        (s.default_doc(), s.dev_doc()),
        ("`7`".into(), "same".into())
    );
    assert_eq!(value(&s, None, false).unwrap(), 7);
    assert_eq!(value(&s, None, true).unwrap(), 7);
    assert_eq!(value(&s, Some("9"), true).unwrap(), 9, "the file wins");
    let s = spec(Fallback::Shown("8", "eight"), Dev::Own(Fallback::Text("3")));
    assert_eq!(
        (s.default_doc(), s.dev_doc()),
        ("eight".into(), "`3`".into())
    );
    assert_eq!(value(&s, None, false).unwrap(), 8);
    assert_eq!(value(&s, None, true).unwrap(), 3);
    assert_eq!(
        value(&s, Some("9"), true).unwrap(),
        9,
        "the file wins in dev mode"
    );
    let s = spec(
        Fallback::Computed(|c| c.max_user_send_burst_size * 2, "twice the burst"),
        Dev::Argument("`--k`"),
    );
    assert_eq!(
        (s.default_doc(), s.dev_doc()),
        ("twice the burst".into(), "`--k`".into())
    );
    assert_eq!(value(&s, None, false).unwrap(), 20);
    assert_eq!(value(&s, None, true).unwrap(), 20);
    let s = spec(Fallback::Text(""), Dev::Own(Fallback::Required("5")));
    assert_eq!(
        (s.default_doc(), s.dev_doc()),
        ("empty".into(), "required".into())
    );
    match value(&s, None, false) {
        Err(ConfigError::Value { key, msg }) => {
            assert_eq!(key, "k");
            assert_eq!(msg, "expected a number, got \"\"");
        }
        other => panic!("{other:?}"),
    }
    match value(&s, None, true) {
        Err(ConfigError::Value { key, msg }) => {
            assert_eq!(key, "k");
            assert_eq!(msg, "missing; set it in the [params] section, e.g. k = 5");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn dev_mode_defaults_come_from_the_table() {
    // The file's values win over the dev-mode defaults.
    let mut values: HashMap<String, String> =
        [("smtp_listen", "127.0.0.2:25"), ("log_stderr", "false")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let c = keys::read(&mut values, true).expect("dev config");
    assert!(values.is_empty(), "the keys are taken: {values:?}");
    assert_eq!(c.listen.smtp, vec![sa("127.0.0.2:25")]);
    assert!(!c.log_stderr);
    assert_eq!(c.listen.imap, vec![sa("127.0.0.1:1143")]);
    let dev = Config::dev(PathBuf::from("/tmp/rb-dev"));
    assert_eq!(dev.max_load_1m, f64::MAX);
    assert!(dev.log_stderr);
    assert!(dev.turn_listen.is_empty());
    assert_eq!(dev.appliance.mdns_name, "");
    assert_eq!(
        dev.appliance.setup_code_file,
        PathBuf::from("/tmp/rb-dev/setup-code")
    );
    assert_eq!(
        dev.connections.per_address,
        PerAddress {
            connections: 10_000,
            rate: 10_000,
            burst: 10_000,
        }
    );
    // Outside dev mode the same keys keep their defaults.
    let c = with("");
    assert_eq!(c.max_load_1m, with("max_load_1m = auto").max_load_1m);
    assert!(c.max_load_1m < f64::MAX);
    assert_eq!(c.appliance.mdns_name, "relaybox");
}

/// `max_load_1m` (issue 16): `auto` is 4 per CPU, a number is absolute whatever the
/// CPUs, and `auto` and an explicit number both read from the file.
#[test]
fn max_load_auto_scales_with_cpus_and_a_number_does_not() {
    use super::value::{LOAD_PER_CPU, max_load};
    assert_eq!(max_load("auto", 1).unwrap(), 4.0);
    assert_eq!(max_load("AUTO", 2).unwrap(), 8.0);
    assert_eq!(max_load("auto", 16).unwrap(), 64.0);
    assert_eq!(
        max_load("auto", 0).unwrap(),
        LOAD_PER_CPU,
        "at least one CPU"
    );
    assert_eq!(max_load("5", 2).unwrap(), 5.0);
    assert_eq!(max_load("5", 16).unwrap(), 5.0);
    assert_eq!(max_load("0", 2).unwrap(), 0.0);
    assert!(max_load("auto2", 2).is_err());
    assert!(max_load("-1", 2).is_err());
    assert_eq!(with("max_load_1m = 5").max_load_1m, 5.0);
    assert_eq!(with("max_load_1m = auto").max_load_1m, with("").max_load_1m);
    // The README's meaning column says the same figure as the code.
    let key = super::keys::KEYS
        .iter()
        .find(|k| k.name() == "max_load_1m")
        .expect("key");
    assert!(
        key.help()
            .contains(&format!("`auto` is {LOAD_PER_CPU} per CPU")),
        "{}",
        key.help()
    );
    assert_eq!(key.default_doc(), "`auto`");
}

/// Issue 17: the automatic backups' keys: off by default, daily, 7 kept, messages in,
/// the passphrase beside the store; bad values name the key.
#[test]
fn backup_keys_default_and_refuse_clearly() {
    use super::{BackupTarget, Config};
    let c = Config::parse("[params]\nmail_domain = 127.0.0.1\ndata_dir = /d\n")
        .unwrap()
        .config;
    assert_eq!(c.backup.target, BackupTarget::Off);
    assert_eq!(c.backup.every, Duration::from_secs(86_400));
    assert_eq!((c.backup.keep, c.backup.messages), (7, true));
    assert_eq!(
        c.backup.passphrase_file,
        std::path::PathBuf::from("/d/backup-passphrase")
    );
    let with = |line: &str| {
        Config::parse(&format!("[params]\nmail_domain = 127.0.0.1\n{line}\n")).map(|l| l.config)
    };
    assert_eq!(
        with("backup_dir = usb").unwrap().backup.target,
        BackupTarget::Usb
    );
    for (line, key, says) in [
        ("backup_dir = backups", "backup_dir", "absolute directory"),
        ("backup_every = 30s", "backup_every", "at least 1m"),
        ("backup_keep = 0", "backup_keep", "at least 1"),
    ] {
        let e = with(line)
            .err()
            .unwrap_or_else(|| panic!("{line} accepted"))
            .to_string();
        assert!(e.starts_with(key) && e.contains(says), "{line}: {e}");
    }
}
