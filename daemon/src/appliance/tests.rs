//! Tests of the appliance state machine: claim window and button, setup code, admin
//! password, the domain step (validated, written atomically, handed to `main`).

use super::*;

fn setup_config(dir: &std::path::Path) -> (Config, PathBuf) {
    let ini = dir.join("chatmail.ini");
    let text = format!(
        "# operator's comment\n[params]\ndata_dir = {}\nmdns_name =\n",
        dir.join("data").display()
    );
    std::fs::write(&ini, &text).unwrap();
    let config = Config::parse_for_serve(&text).unwrap().config;
    assert!(config.setup);
    (config, ini)
}

fn appliance(dir: &std::path::Path, button: bool) -> (Arc<Appliance>, PathBuf) {
    let (config, ini) = setup_config(dir);
    (
        Appliance::new(config, Some(ini.clone()), button).unwrap(),
        ini,
    )
}

#[tokio::test(start_paused = true)]
async fn button_claim_window_belongs_to_its_opener_and_expires() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = appliance(dir.path(), true);
    assert_eq!(a.overview().phase, Phase::Unclaimed);
    assert_eq!(*a.led_patterns().borrow(), LedPattern::WaitingForSetup);
    // A press with no window open claims nothing.
    a.button_pressed();
    assert_eq!(a.claim_window(), ClaimWindow::Closed);

    let ClaimWindow::Open {
        ticket,
        seconds_left,
    } = a.open_claim_window()
    else {
        panic!("window should open");
    };
    assert_eq!(seconds_left, CLAIM_WINDOW.as_secs());
    assert!(!ticket.is_empty());
    assert_eq!(*a.led_patterns().borrow(), LedPattern::ClaimWindow);
    // A second visitor sees the window but not its ticket.
    match a.open_claim_window() {
        ClaimWindow::Open { ticket: other, .. } => assert!(other.is_empty()),
        w => panic!("{w:?}"),
    }
    tokio::time::advance(Duration::from_secs(30)).await;
    a.button_pressed();
    assert_eq!(
        a.claim_window(),
        ClaimWindow::Pressed {
            ticket: ticket.clone()
        }
    );
    assert_ne!(*a.led_patterns().borrow(), LedPattern::ClaimWindow);

    // A window nobody confirms closes after CLAIM_WINDOW.
    let dir2 = tempfile::tempdir().unwrap();
    let (b, _) = appliance(dir2.path(), true);
    assert!(matches!(b.open_claim_window(), ClaimWindow::Open { .. }));
    tokio::time::advance(CLAIM_WINDOW + Duration::from_secs(1)).await;
    b.button_pressed();
    assert_eq!(b.claim_window(), ClaimWindow::Closed);
    assert_eq!(*b.led_patterns().borrow(), LedPattern::WaitingForSetup);
}

#[tokio::test]
async fn without_a_button_no_window_opens() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = appliance(dir.path(), false);
    assert!(!a.overview().has_button);
    assert_eq!(a.open_claim_window(), ClaimWindow::Closed);
}

#[tokio::test]
async fn setup_code_claims_once_then_password_login() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = appliance(dir.path(), false);
    let code_file = a.config().appliance.setup_code_file;
    let code = std::fs::read_to_string(&code_file)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(a.setup_code().as_deref(), Some(code.as_str()));
    assert!(a.check_setup_code(&code));
    assert!(a.check_setup_code(&code.to_lowercase().replace('-', " ")));
    assert!(!a.check_setup_code("AAAA-AAAA-AAAA"));
    assert!(!a.check_setup_code(""));

    let short = a.set_admin_password("short").await.unwrap_err();
    assert_eq!(short.field, "password");
    assert!(short.message.contains("at least"), "{}", short.message);
    assert_eq!(a.overview().phase, Phase::Unclaimed);

    let key_before = a.session_key();
    a.set_admin_password("correct horse battery").await.unwrap();
    assert_eq!(a.overview().phase, Phase::NeedDomain);
    assert!(a.check_admin_password("correct horse battery").await);
    assert!(!a.check_admin_password("correct horse batterx").await);
    assert_ne!(
        a.session_key(),
        key_before,
        "a new password ends old sessions"
    );
    // The code was one-time: gone from memory and disk.
    assert!(!a.check_setup_code(&code));
    assert!(!code_file.exists());

    // Kept across a restart.
    let (config, ini) = setup_config(dir.path());
    let again = Appliance::new(config.clone(), Some(ini), false).unwrap();
    assert_eq!(again.overview().phase, Phase::NeedDomain);
    assert!(again.setup_code().is_none());
    assert!(again.check_admin_password("correct horse battery").await);
    // Claimed: nothing about a setup code at start.
    assert_eq!(
        setup_banner(&config, again.setup_code().as_deref(), &[]),
        None
    );
}

#[test]
fn the_setup_code_is_shown_only_in_setup_mode() {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, _) = setup_config(dir.path());
    let code = "ABCD-EFGH-JKMN";
    let line = setup_banner(&config, Some(code), &[]).unwrap();
    assert!(line.contains(code), "{line}");
    // A configured relay nobody claimed yet: where the code is, never the code (its
    // log is kept, and may be shipped elsewhere).
    config.setup = false;
    config.mail_domain = "chat.example.org".into();
    let line = setup_banner(&config, Some(code), &[]).unwrap();
    assert!(!line.contains(code), "{line}");
    assert!(
        line.contains(&config.appliance.setup_code_file.display().to_string()),
        "{line}"
    );
    assert_eq!(setup_banner(&config, None, &[]), None);
}

/// Issue 16: the console names only addresses that work: `<name>.local` only when
/// announced, then the HTTP listeners' addresses (wildcards expanded).
#[test]
fn the_console_names_only_working_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, _) = setup_config(dir.path());
    let code = "ABCD-EFGH-JKMN";
    config.listen.http = vec!["0.0.0.0:80".parse().unwrap()];
    let ifaces: Vec<std::net::IpAddr> = vec![
        "127.0.0.1".parse().unwrap(),
        "192.168.1.20".parse().unwrap(),
        "fe80::1".parse().unwrap(),
    ];
    // mDNS off: no `.local` name.
    let urls = setup_urls(&config, None, &ifaces);
    assert_eq!(urls, vec!["http://192.168.1.20/admin/".to_string()]);
    let line = setup_banner(&config, Some(code), &urls).unwrap();
    assert!(!line.contains(".local"), "{line}");
    assert!(line.contains("http://192.168.1.20/admin/"), "{line}");
    assert!(line.contains(code), "{line}");
    // Announced (as registered, trailing dot), on another port, IPv6 too.
    config.listen.http = vec!["[::]:8080".parse().unwrap()];
    let ifaces: Vec<std::net::IpAddr> = vec![
        "192.168.1.20".parse().unwrap(),
        "2001:db8::5".parse().unwrap(),
    ];
    let urls = setup_urls(&config, Some("relaybox-2.local."), &ifaces);
    assert_eq!(
        urls,
        vec![
            "http://relaybox-2.local:8080/admin/".to_string(),
            "http://192.168.1.20:8080/admin/".to_string(),
            "http://[2001:db8::5]:8080/admin/".to_string(),
        ]
    );
    // A fixed address is named as it is; nothing known: say what to open.
    config.listen.http = vec!["127.0.0.1:8080".parse().unwrap()];
    assert_eq!(
        setup_urls(&config, None, &[]),
        vec!["http://127.0.0.1:8080/admin/".to_string()]
    );
    let line = setup_banner(&config, Some(code), &[]).unwrap();
    assert!(line.contains("this machine's address"), "{line}");
}

#[tokio::test]
async fn domain_step_validates_then_writes_the_config_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let (a, ini) = appliance(dir.path(), false);
    let before = std::fs::read_to_string(&ini).unwrap();
    let mut chosen = a.chosen_config();
    for (choice, field) in [
        (DomainChoice::Domain("relaybox.local".into()), "domain"),
        (DomainChoice::Domain("no spaces.org".into()), "domain"),
        (DomainChoice::Domain("192.0.2.1".into()), "domain"),
        (DomainChoice::Domain("".into()), "domain"),
        (DomainChoice::IpOnly("300.1.1.1".into()), "ip"),
        (DomainChoice::IpOnly("0.0.0.0".into()), "ip"),
    ] {
        let err = a.set_domain(choice.clone()).await.unwrap_err();
        assert_eq!(err.field, field, "{choice:?}");
        assert!(!err.message.is_empty());
        assert_eq!(std::fs::read_to_string(&ini).unwrap(), before, "{choice:?}");
    }
    assert!(chosen.borrow_and_update().is_none());

    a.set_domain(DomainChoice::Domain(" Chat.Example.org. ".into()))
        .await
        .unwrap();
    let text = std::fs::read_to_string(&ini).unwrap();
    assert!(
        text.starts_with("# operator's comment\n[params]\nmail_domain = chat.example.org\n"),
        "{text}"
    );
    let config = chosen
        .borrow_and_update()
        .clone()
        .expect("config handed to main");
    assert_eq!(config.mail_domain, "chat.example.org");
    assert!(!config.setup);
    assert_eq!(
        a.overview().phase,
        Phase::Unclaimed,
        "still needs a password"
    );
    assert_eq!(a.overview().domain.as_deref(), Some("chat.example.org"));
    // The domain is set once; changing it is a reset.
    let again = a
        .set_domain(DomainChoice::IpOnly("192.0.2.7".into()))
        .await
        .unwrap_err();
    assert!(again.message.contains("already set"), "{}", again.message);
}

#[test]
fn domain_values() {
    let ok = |c: DomainChoice| domain_value(&c).unwrap();
    assert_eq!(
        ok(DomainChoice::Domain("A.B.example".into())),
        "a.b.example"
    );
    assert_eq!(ok(DomainChoice::IpOnly(" 192.0.2.1 ".into())), "192.0.2.1");
    assert!(domain_value(&DomainChoice::Domain("_x.test".into())).is_err());
    assert!(domain_value(&DomainChoice::Domain("localhost".into())).is_err());
    assert!(domain_value(&DomainChoice::IpOnly("2001:db8::1".into())).is_err());
}

#[test]
fn setup_codes_compare_loosely_but_fully() {
    assert!(same_code("abcd-efgh-jkmn", "ABCD-EFGH-JKMN"));
    assert!(same_code("ABCDEFGHJKMN", "ABCD-EFGH-JKMN"));
    assert!(!same_code("ABCD-EFGH-JKM", "ABCD-EFGH-JKMN"));
    assert!(!same_code("", ""));
}

/// Issue 7 on the status page: before the relay runs nothing can be installed; on a
/// machine without A/B slots the agent says so and "update now" and uploads are refused
/// with the reason, the upload leaving no file behind.
#[tokio::test]
async fn updates_say_why_they_cannot_run_here() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = appliance(dir.path(), false);
    let info = a.status().await.update;
    assert_eq!(info.state, "updates start once the relay runs");
    assert!(!info.available && !info.busy);
    let err = a.update_now().unwrap_err();
    assert!(err.contains("finish the setup"), "{err}");

    let relay = Relay::open(crate::testing::config(
        &dir.path().join("relay"),
        "example.org",
    ))
    .unwrap();
    let agent = a.spawn_update_agent(relay);
    tokio::time::timeout(std::time::Duration::from_secs(10), agent)
        .await
        .expect("the agent stops at once without A/B slots")
        .unwrap();
    let info = a.status().await.update;
    assert!(info.state.contains("no A/B boot slots"), "{}", info.state);
    assert!(!info.available);
    assert!(a.update_now().unwrap_err().contains("no A/B boot slots"));
    assert!(a.upload_target().unwrap_err().contains("no A/B boot slots"));
    let upload = dir.path().join("upload-x.tar");
    std::fs::write(&upload, b"bundle").unwrap();
    assert!(a.install_upload(upload.clone()).is_err());
    assert!(!upload.exists(), "a refused upload is removed");
}

/// Issue 16 item 7: the status page's charts count today so far at once, not only what
/// the last periodic sample (every 10 minutes) saw; and they say since when they count.
#[tokio::test]
async fn status_charts_count_today_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = appliance(dir.path(), false);
    // What `start` does at once; the next periodic sample is 10 minutes away.
    a.sample_stats();
    crate::metrics::global().delivered(1, 0);
    let status = a.status().await;
    let today = status.charts[0].points.last().expect("today's point");
    assert!(today.1 >= 1, "today's message counted at once: {today:?}");
    let since = status.charts_since.expect("counting started");
    let now = crate::clock::Clock::unix_now(&crate::clock::SystemClock);
    assert!(since <= now && now - since < 3600, "{since} vs {now}");
}

/// Issue 16 item 11: the way back in on a machine without a button, as the pages and
/// the README say it: delete the admin password file and restart; the daemon makes a new
/// setup code, the pages can be claimed again with it, and the config (the domain) stays.
#[tokio::test]
async fn deleting_the_admin_password_file_and_restarting_allows_a_new_claim() {
    let dir = tempfile::tempdir().unwrap();
    let (a, ini) = appliance(dir.path(), false);
    a.set_admin_password("correct horse battery").await.unwrap();
    std::fs::write(
        &ini,
        format!(
            "[params]\nmail_domain = chat.example.org\ndata_dir = {}\nmdns_name =\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let file = a.admin_password_file().expect("named");
    assert!(file.is_file(), "{}", file.display());
    std::fs::remove_file(&file).unwrap();
    // The restart.
    let text = std::fs::read_to_string(&ini).unwrap();
    let config = Config::parse_for_serve(&text).unwrap().config;
    let again = Appliance::new(config, Some(ini.clone()), false).unwrap();
    assert_eq!(again.overview().phase, Phase::Unclaimed);
    let code = std::fs::read_to_string(again.config().appliance.setup_code_file).unwrap();
    assert!(again.check_setup_code(code.trim()));
    again
        .set_admin_password("a new password here")
        .await
        .unwrap();
    assert_eq!(again.overview().phase, Phase::Configured);
    assert!(again.check_admin_password("a new password here").await);
    assert!(!again.check_admin_password("correct horse battery").await);
    assert!(
        std::fs::read_to_string(&ini)
            .unwrap()
            .contains("chat.example.org")
    );
}

/// Issue 18: mail for a domain that has waited longer than an hour makes the relay
/// degraded (LED) and is named on the status page; the queue page's backend lists it and
/// giving up clears it.
#[tokio::test]
async fn a_stuck_domain_is_named_and_degrades() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = appliance(dir.path(), false);
    let t = 1_700_000_000;
    let clock = crate::testing::ManualClock::at(t);
    let relay = Relay::open_with_clock(
        crate::testing::config(&dir.path().join("relay"), "127.0.0.1"),
        clock.clone(),
    )
    .unwrap();
    relay
        .store
        .create_account("a@[127.0.0.1]", "h", t)
        .await
        .unwrap();
    relay
        .store
        .deliver(crate::store::Delivery {
            sender: "a@[127.0.0.1]".into(),
            local: Vec::new(),
            remote: vec!["x@stuck.example".into()],
            body: crate::message::Parsed::legacy(b"Subject: [...]\r\n\r\nx\r\n".to_vec()),
            received: t,
        })
        .await
        .unwrap();
    a.attach(relay.clone());
    let named = |relay: &Relay| {
        services_health(relay)
            .into_iter()
            .find(|s| s.name == "Outgoing mail")
    };
    clock.set(t + crate::operator::queue::STUCK_AFTER);
    assert!(!a.degraded(), "an hour is not more than an hour");
    assert_eq!(named(&relay), None);
    clock.set(t + crate::operator::queue::STUCK_AFTER + 1);
    assert!(a.degraded());
    let line = named(&relay).expect("the stuck domain is named");
    assert_eq!(line.status, CheckStatus::Warning);
    assert_eq!(line.detail, "mail for stuck.example has waited 1 h");
    let list = a.queue().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].domain.as_str(), list[0].messages),
        ("stuck.example", 1)
    );
    assert!(a.queue_retry("other.example").await.is_err());
    assert_eq!(a.queue_bounce("stuck.example").await, Ok(1));
    assert!(!a.degraded());
    assert!(a.queue().await.unwrap().is_empty());
    let (_, inbox) = relay.store.messages("a@[127.0.0.1]", "INBOX").unwrap();
    assert_eq!(inbox.len(), 1, "the sender's bounce");
}

/// Issue 18 item 1: the first-account page offers upstream 1.12's `DCACCOUNT:<domain>`
/// beside the code on a domain relay, and not when sign-up cannot take it.
#[tokio::test]
async fn the_first_account_page_offers_the_domain_code_while_sign_up_takes_it() {
    use relaybox_webui::Backend;
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = appliance(dir.path(), false);
    let config = crate::testing::config(&dir.path().join("relay"), "chat.example.org");
    let relay = Relay::open(config).unwrap();
    a.attach(relay.clone());
    let code = |a: &Appliance| a.invite().expect("an invite").domain_code;
    assert_eq!(code(&a).as_deref(), Some("DCACCOUNT:chat.example.org"));
    use crate::config::SignupMode;
    for (mode, offered) in [
        (SignupMode::NoAutomatic, true),
        (SignupMode::Invite, false),
        (SignupMode::Closed, false),
        (SignupMode::Open, true),
    ] {
        relay.auth.signup().set_mode(mode, None).unwrap();
        assert_eq!(code(&a).is_some(), offered, "{mode:?}");
        // Where the code would be refused, the page says so instead.
        assert_eq!(a.invite().unwrap().not_open.is_none(), offered, "{mode:?}");
    }
}
