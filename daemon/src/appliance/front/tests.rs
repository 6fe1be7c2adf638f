//! The front server in the wizard (issue 20): the detection on the port step's real checks,
//! the front's address as typed, and the pairing state machine against a real
//! `relaybox front` pairing listener on loopback.

use std::net::{IpAddr, Ipv4Addr};

use relaybox_webui::{Backend, CheckStatus, FrontPairing};

use super::*;
use crate::appliance::ports::{check_outbound_with, classify_public};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// The port step's `port.public-address` check for a domain pointing at `addrs`.
fn public_check(addrs: &[&str]) -> Check {
    let addrs: Vec<IpAddr> = addrs.iter().map(|a| ip(a)).collect();
    classify_public(
        "relay.test",
        &addrs,
        "25",
        |_| false,
        Some(ip("192.168.1.20")),
    )
}

fn outbound(status: CheckStatus) -> Check {
    Check {
        id: "port.25.outbound".into(),
        status,
        summary: String::new(),
        details: None,
        expected: None,
        found: None,
    }
}

/// Each usual case is seen, with its sentence; a box at home behind a router with a public
/// address and an open port 25 gets no advice.
#[test]
fn the_usual_cases_are_detected() {
    let home = Some(ip("192.168.1.20"));
    let fine = [public_check(&["198.51.200.1"]), outbound(CheckStatus::Ok)];
    assert_eq!(
        advice("relay.test", &fine, home, None),
        Vec::<String>::new()
    );
    // Carrier-grade NAT: the box's own address is in 100.64/10.
    let why = advice("relay.test", &fine, Some(ip("100.72.1.9")), None);
    assert_eq!(why.len(), 1, "{why:?}");
    assert!(why[0].contains("carrier-grade NAT"), "{why:?}");
    assert!(why[0].contains("100.72.1.9"), "{why:?}");
    // Not 100.64/10: 100.128.0.1 is a public address.
    assert!(advice("relay.test", &fine, Some(ip("100.128.0.1")), None).is_empty());
    // No IPv4 route at all (nothing, or only IPv6).
    for lan in [None, Some(ip("2001:db8::5"))] {
        let why = advice("relay.test", &fine, lan, None);
        assert!(why[0].contains("no IPv4 connection"), "{lan:?}: {why:?}");
    }
    // The domain points at a private or shared address: the internet cannot reach it.
    for private in ["192.168.1.20", "100.64.0.7"] {
        let checks = [public_check(&[private]), outbound(CheckStatus::Ok)];
        assert_eq!(checks[0].status, CheckStatus::Error);
        let why = advice("relay.test", &checks, home, None);
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(
            why[0].starts_with(&format!("relay.test points to {private}, ")),
            "{why:?}"
        );
    }
    // No address record yet: creating it is the step, not a front.
    let none = [public_check(&[]), outbound(CheckStatus::Ok)];
    assert_eq!(none[0].status, CheckStatus::Error);
    assert!(advice("relay.test", &none, home, None).is_empty());
    // The box has a public address of its own, and the domain points elsewhere.
    let own = Some(Ipv4Addr::new(203, 0, 114, 7));
    let why = advice("relay.test", &fine, home, own);
    assert_eq!(
        why,
        ["relay.test points to 198.51.200.1, not to this box's public address 203.0.114.7."]
    );
    let right = [public_check(&["203.0.114.7"]), outbound(CheckStatus::Ok)];
    assert!(advice("relay.test", &right, home, own).is_empty());
    // Outgoing port 25 blocked (a warning); could not check says nothing.
    let blocked = [
        public_check(&["198.51.200.1"]),
        outbound(CheckStatus::Warning),
    ];
    let why = advice("relay.test", &blocked, home, None);
    assert_eq!(why.len(), 1, "{why:?}");
    assert!(why[0].contains("port 25 seems blocked"), "{why:?}");
    let unknown = [
        public_check(&["198.51.200.1"]),
        outbound(CheckStatus::Unknown),
    ];
    assert!(advice("relay.test", &unknown, home, None).is_empty());
    // All at once: one sentence each.
    let all = [public_check(&["10.0.0.1"]), outbound(CheckStatus::Warning)];
    assert_eq!(
        advice("relay.test", &all, Some(ip("100.64.0.1")), None).len(),
        3
    );
}

/// The real outbound probe's warning (a probe host that refuses) is seen.
#[tokio::test]
async fn a_refused_outbound_probe_is_seen() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = crate::testing::config(dir.path(), "relay.test");
    config.appliance.outbound_probe = format!("127.0.0.1:{port}");
    let c = check_outbound_with(&config, Duration::from_secs(2)).await;
    assert_eq!(c.status, CheckStatus::Warning, "{c:#?}");
    let why = advice("relay.test", &[c], Some(ip("192.168.1.20")), None);
    assert!(why[0].contains("port 25"), "{why:?}");
}

#[test]
fn front_addresses_as_typed() {
    for (typed, host, port) in [
        ("203.0.113.7", "203.0.113.7", 4433),
        (" 203.0.113.7:8443 ", "203.0.113.7", 8443),
        ("Front.Example.org", "front.example.org", 4433),
        ("front.example.org.:99", "front.example.org", 99),
        ("2001:db8::7", "2001:db8::7", 4433),
        ("[2001:db8::7]:4434", "2001:db8::7", 4434),
        ("localhost", "localhost", 4433),
    ] {
        assert_eq!(
            parse_address(typed),
            Ok((host.to_string(), port)),
            "{typed:?}"
        );
    }
    for (typed, words) in [
        ("https://front.example.org", "not a server's address"),
        ("front.example.org/x", "not a server's address"),
        ("root@203.0.113.7", "not a server's address"),
        ("front example", "not a server's address"),
        ("203.0.113.7:0", "not a port"),
        ("203.0.113.7:99999", "not a port"),
        ("0.0.0.0", "cannot be a server's address"),
        (
            "-front.example.org",
            "neither an IP address nor a host name",
        ),
        (
            "front_1.example.org",
            "neither an IP address nor a host name",
        ),
        ("a..b", "neither an IP address nor a host name"),
    ] {
        let e = parse_address(typed).expect_err(typed);
        assert!(e.contains(words), "{typed:?}: {e}");
    }
    let long = format!("{}.org", "a".repeat(250));
    assert!(parse_address(&long).is_err());
}

// ---- the pairing, against a real front on loopback -------------------------------------

use std::net::SocketAddr;

use crate::front::server::{self, FrontConfig};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `relaybox front` on 127.0.0.1 with the tunnel port only, pairing with `code`; stopped
/// on drop.
struct Front {
    task: tokio::task::JoinHandle<Result<(), server::FrontError>>,
    dir: PathBuf,
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_front(dir: PathBuf, tunnel: SocketAddr, code: &str) -> Front {
    let cfg = FrontConfig {
        data_dir: dir.clone(),
        public: tunnel.ip(),
        ports: Vec::new(),
        tunnel,
        box_pin: None,
        pair_code: Some(code.to_string()),
        outbound_private: false,
    };
    let id = server::identity(&dir).expect("front identity");
    let task = tokio::spawn(server::run(cfg, id));
    // Listening once a connection is taken (bounded); a front that could not start has
    // ended (the caller looks).
    for _ in 0..500 {
        if task.is_finished() || tokio::net::TcpStream::connect(tunnel).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Front { task, dir }
}

/// An appliance with a running (not serving) relay for `chat.example.org` and its own
/// chatmail.ini, pairing quickly.
fn appliance_with_relay(
    dir: &std::path::Path,
    timing: Timing,
) -> (Arc<Appliance>, Arc<Relay>, PathBuf) {
    appliance_with(dir, timing, |_| {})
}

/// [`appliance_with_relay`] with `edit` applied to the relay's config.
fn appliance_with(
    dir: &std::path::Path,
    timing: Timing,
    edit: impl FnOnce(&mut Config),
) -> (Arc<Appliance>, Arc<Relay>, PathBuf) {
    std::fs::create_dir_all(dir).expect("dir");
    let ini = dir.join("chatmail.ini");
    let mut config = crate::testing::config(&dir.join("relay"), "chat.example.org");
    edit(&mut config);
    std::fs::write(
        &ini,
        format!(
            "[params]\nmail_domain = chat.example.org\ndata_dir = {}\n",
            config.data_dir.display()
        ),
    )
    .expect("write ini");
    let a = Appliance::new(config.clone(), Some(ini.clone()), false).expect("appliance");
    a.front.set_timing(timing);
    let relay = Relay::open(config).expect("relay");
    a.attach(relay.clone());
    (a, relay, ini)
}

/// The pairing's state, waiting (bounded) while it is `Waiting`.
async fn settled(a: &Appliance, within: Duration) -> FrontPairing {
    let deadline = Instant::now() + within;
    loop {
        let p = a.front().pairing;
        if !matches!(p, FrontPairing::Waiting { .. }) || Instant::now() > deadline {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn code_of(command: &str) -> String {
    command
        .split_whitespace()
        .skip_while(|w| *w != "--pair")
        .nth(1)
        .expect("the command has --pair CODE")
        .to_string()
}

const QUICK: Timing = Timing {
    wait: Duration::from_secs(60),
    every: Duration::from_millis(100),
};

/// The whole way: the page's command, the front started with it after the box began
/// trying (as the operator does), paired: keys in chatmail.ini, the relay's live link
/// switched, the records pointing at the front; then moved off again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_with_the_front_then_moves_off() {
    let t = tempfile::tempdir().expect("tempdir");
    let (a, relay, ini) = appliance_with_relay(t.path(), QUICK);
    assert_eq!(a.front().unavailable, None);
    assert_eq!(a.front().current, None);
    let tunnel = SocketAddr::from(([127, 0, 0, 1], free_port()));
    a.front_pair(&tunnel.to_string())
        .await
        .expect("pairing starts");
    let FrontPairing::Waiting {
        front,
        command,
        seconds_left,
    } = a.front().pairing
    else {
        panic!("{:?}", a.front().pairing);
    };
    assert_eq!(front, tunnel.to_string());
    assert!(seconds_left <= 60 && seconds_left > 0, "{seconds_left}");
    assert!(
        command.starts_with("relaybox front --public 127.0.0.1 --pair "),
        "{command}"
    );
    assert!(
        command.ends_with(&format!("--tunnel {tunnel}")),
        "{command}"
    );
    // Nothing answers yet: still waiting after a few tries.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(matches!(a.front().pairing, FrontPairing::Waiting { .. }));
    let f = start_front(t.path().join("front"), tunnel, &code_of(&command)).await;
    assert!(!f.task.is_finished(), "the front runs");
    let got = settled(&a, Duration::from_secs(45)).await;
    assert_eq!(
        got,
        FrontPairing::Paired {
            front: tunnel.to_string()
        }
    );
    // Both sides kept the other's certificate.
    let front_pin = crate::tls::cert_sha256(&server::identity(&f.dir).expect("id").cert);
    let box_id = Identity::load_or_create(&relay.config.data_dir.join("front")).expect("id");
    let kept = std::fs::read_to_string(f.dir.join("box.pin")).expect("box.pin");
    assert_eq!(kept.trim(), box_id.fingerprint());
    let text = std::fs::read_to_string(&ini).expect("ini");
    let loaded = Config::parse_for_serve(&text).expect("valid config").config;
    assert_eq!(loaded.front, tunnel.to_string());
    assert_eq!(loaded.front_pin, Some(front_pin));
    assert!(text.contains("mail_domain = chat.example.org"), "{text}");
    // The live link follows, and the page's facts and records with it.
    assert_eq!(
        relay.front.target(),
        Some(FrontTarget {
            front: tunnel.to_string(),
            pin: front_pin
        })
    );
    let info = a.front();
    assert_eq!(info.current.as_deref(), Some(tunnel.to_string().as_str()));
    assert_eq!(info.address.as_deref(), Some("127.0.0.1"));
    let records = a.dns_records();
    let a_record = records.iter().find(|r| r.id == "dns.a").expect("A record");
    assert_eq!(a_record.value, "127.0.0.1");
    assert!(
        a_record.note.contains("front server 127.0.0.1"),
        "{a_record:?}"
    );
    assert!(
        a.zone_file().contains("IN A 127.0.0.1"),
        "{}",
        a.zone_file()
    );
    // No advice while a front is in use.
    let blocked = [outbound(CheckStatus::Warning)];
    assert!(a.front_advice(&blocked).is_empty());
    drop(f);
    // Switched elsewhere (as `relaybox pair-front` does): "paired" is old news.
    relay.use_front(None);
    assert_eq!(a.front().pairing, FrontPairing::Idle);
    relay.use_front(Some(FrontTarget {
        front: tunnel.to_string(),
        pin: front_pin,
    }));
    assert!(matches!(a.front().pairing, FrontPairing::Paired { .. }));

    // Move off: the keys leave chatmail.ini, the link is switched off, the records are
    // this host's again.
    a.front_leave().await.expect("moved off");
    let text = std::fs::read_to_string(&ini).expect("ini");
    let loaded = Config::parse_for_serve(&text).expect("valid config").config;
    assert_eq!((loaded.front.as_str(), loaded.front_pin), ("", None));
    assert!(text.contains("mail_domain = chat.example.org"), "{text}");
    assert_eq!(relay.front.target(), None);
    assert_eq!(a.front().current, None);
    assert_eq!(a.front().pairing, FrontPairing::Idle);
    let records = a.dns_records();
    let a_record = records.iter().find(|r| r.id == "dns.a").expect("A record");
    assert_ne!(a_record.value, "127.0.0.1");
    assert!(a.front_leave().await.is_err(), "no front any more");
}

/// A front started with another code refuses: said plainly, at once (no waiting out the
/// time), and nothing kept; a new code then pairs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_code_fails_plainly_and_a_new_code_pairs() {
    let t = tempfile::tempdir().expect("tempdir");
    let slow = Timing {
        wait: Duration::from_secs(600),
        every: Duration::from_millis(100),
    };
    let (a, relay, ini) = appliance_with_relay(t.path(), slow);
    let tunnel = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let f = start_front(t.path().join("front"), tunnel, &pair::new_code()).await;
    assert!(!f.task.is_finished(), "the front runs");
    a.front_pair(&tunnel.to_string()).await.expect("starts");
    let got = settled(&a, Duration::from_secs(45)).await;
    let FrontPairing::Failed { front, reason } = got else {
        panic!("{got:?}");
    };
    assert_eq!(front, tunnel.to_string());
    assert!(
        reason.starts_with("the front server refused the pairing code"),
        "{reason}"
    );
    assert_eq!(relay.front.target(), None);
    assert!(
        !std::fs::read_to_string(&ini)
            .expect("ini")
            .contains("front")
    );
    // Retry with a new code: the operator restarts the front with it.
    drop(f);
    a.front_pair(&tunnel.to_string())
        .await
        .expect("starts again");
    let FrontPairing::Waiting { command, .. } = a.front().pairing else {
        panic!("{:?}", a.front().pairing);
    };
    // The first front's task may still hold the port for a moment: started again (bounded)
    // in the same directory, as on a real server.
    let mut started = None;
    for _ in 0..50 {
        let f = start_front(t.path().join("front"), tunnel, &code_of(&command)).await;
        if !f.task.is_finished() {
            started = Some(f);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _f = started.expect("the front starts again");
    assert!(matches!(
        settled(&a, Duration::from_secs(45)).await,
        FrontPairing::Paired { .. }
    ));
    assert!(relay.front.target().is_some());
}

/// Nothing ever answers: the attempt ends after its wait with a plain message; "stop
/// waiting" ends an attempt at once and for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_answering_fails_after_the_wait_and_cancel_stops() {
    let t = tempfile::tempdir().expect("tempdir");
    let short = Timing {
        wait: Duration::from_secs(1),
        every: Duration::from_millis(100),
    };
    let (a, relay, _ini) = appliance_with_relay(t.path(), short);
    let tunnel = SocketAddr::from(([127, 0, 0, 1], free_port()));
    a.front_pair(&tunnel.to_string()).await.expect("starts");
    let got = settled(&a, Duration::from_secs(30)).await;
    let FrontPairing::Failed { reason, .. } = got else {
        panic!("{got:?}");
    };
    assert!(
        reason.starts_with("nothing answered within 1 s"),
        "{reason}"
    );
    assert!(reason.contains("no front server answers at"), "{reason}");
    assert!(
        reason.contains(&format!("port {}", tunnel.port())),
        "{reason}"
    );
    // "Stop waiting": idle, and it stays so. A front with another code is started: were
    // the box still trying, it would be refused (and the state say so within 100 ms).
    a.front.set_timing(QUICK);
    a.front_pair(&tunnel.to_string()).await.expect("starts");
    a.front_cancel();
    assert_eq!(a.front().pairing, FrontPairing::Idle);
    let f = start_front(t.path().join("front"), tunnel, &pair::new_code()).await;
    assert!(!f.task.is_finished(), "the front runs");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.front().pairing, FrontPairing::Idle);
    assert_eq!(relay.front.target(), None);
}

/// Where no front can be used, the page is told why and a pairing does not start; bad
/// addresses are refused for the field.
#[tokio::test]
async fn unavailable_and_bad_addresses_are_refused() {
    let t = tempfile::tempdir().expect("tempdir");
    // Setup mode: no relay yet.
    let ini = t.path().join("setup.ini");
    let text = format!("[params]\ndata_dir = {}\n", t.path().join("s").display());
    std::fs::write(&ini, &text).expect("ini");
    let config = Config::parse_for_serve(&text).expect("config").config;
    let setup = Appliance::new(config, Some(ini), false).expect("appliance");
    let why = setup.front().unavailable.expect("unavailable");
    assert!(why.contains("name first"), "{why}");
    let e = setup.front_pair("203.0.113.7").await.expect_err("refused");
    assert_eq!((e.field, e.message), ("front", why));
    // IP-only mode.
    let ip_dir = t.path().join("ip");
    let config = crate::testing::config(&ip_dir, "192.168.1.20");
    let a = Appliance::new(config.clone(), Some(t.path().join("ip.ini")), false).expect("a");
    a.attach(Relay::open(config).expect("relay"));
    assert!(
        a.front()
            .unavailable
            .expect("unavailable")
            .contains("IP-only")
    );
    assert!(a.front_advice(&[outbound(CheckStatus::Warning)]).is_empty());
    // A domain relay: bad addresses, a name that does not resolve.
    let (a, _relay, _ini) = appliance_with_relay(&t.path().join("d"), QUICK);
    for bad in ["https://x.example", "1.2.3.4:0"] {
        let e = a.front_pair(bad).await.expect_err(bad);
        assert_eq!(e.field, "front");
    }
    assert_eq!(a.front().pairing, FrontPairing::Idle);
}

/// A front named by its host name: looked up through the relay's resolver, the address
/// found is what the tunnel, the command and the A record use; a name that does not exist
/// is refused for the field.
#[tokio::test]
async fn a_front_name_is_looked_up_once() {
    use crate::appliance::dnscheck::testdns::{Dnsmasq, fresh_net};
    let net = fresh_net();
    let dns = Dnsmasq::start(
        Ipv4Addr::new(127, net.0, net.1, 1),
        53,
        true,
        &["--host-record=front.test,127.0.0.1".into()],
    );
    let t = tempfile::tempdir().expect("tempdir");
    let (a, _relay, _ini) = appliance_with(t.path(), QUICK, |c| c.dns_resolver = vec![dns.addr]);
    a.front_pair("Front.Test:5000").await.expect("found");
    let FrontPairing::Waiting { front, command, .. } = a.front().pairing else {
        panic!("{:?}", a.front().pairing);
    };
    assert_eq!(front, "127.0.0.1:5000");
    assert!(
        command.starts_with("relaybox front --public 127.0.0.1 --pair "),
        "{command}"
    );
    a.front_cancel();
    let e = a
        .front_pair("nowhere.test")
        .await
        .expect_err("no such name");
    assert_eq!(e.field, "front");
    assert!(
        e.message.contains("nowhere.test could not be looked up"),
        "{}",
        e.message
    );
    assert_eq!(a.front().pairing, FrontPairing::Idle);
}

/// With the relay serving, the pairing in the wizard takes the live tunnel up without a
/// restart, and moving off takes it down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_link_follows_the_wizard() {
    let t = tempfile::tempdir().expect("tempdir");
    let (relay, task) = crate::update::health::tests::running_relay(&t.path().join("r")).await;
    let ini = t.path().join("chatmail.ini");
    std::fs::write(
        &ini,
        format!(
            "[params]\nmail_domain = example.org\ndata_dir = {}\n",
            relay.config.data_dir.display()
        ),
    )
    .expect("ini");
    let a = Appliance::new(relay.config.clone(), Some(ini), false).expect("appliance");
    a.front.set_timing(QUICK);
    a.attach(relay.clone());
    let tunnel = SocketAddr::from(([127, 0, 0, 1], free_port()));
    a.front_pair(&tunnel.to_string()).await.expect("starts");
    let FrontPairing::Waiting { command, .. } = a.front().pairing else {
        panic!("{:?}", a.front().pairing);
    };
    let f = start_front(t.path().join("front"), tunnel, &code_of(&command)).await;
    assert!(!f.task.is_finished(), "the front runs");
    assert!(matches!(
        settled(&a, Duration::from_secs(45)).await,
        FrontPairing::Paired { .. }
    ));
    let until = |want: bool| {
        let a = a.clone();
        async move {
            for _ in 0..600 {
                if a.front().connected == want {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        }
    };
    assert!(until(true).await, "the link did not come up within 30 s");
    // The status page names the tunnel and the way mail leaves.
    let line = |name: &str| {
        crate::appliance::services_health(&relay)
            .into_iter()
            .find(|s| s.name == name)
    };
    let tunnel_line = line("Front server").expect("a front server line");
    assert_eq!(tunnel_line.status, relaybox_webui::CheckStatus::Ok);
    assert!(
        tunnel_line.detail.contains("is up"),
        "{}",
        tunnel_line.detail
    );
    let path = line("Outgoing mail path").expect("a path line");
    assert!(
        path.detail.contains("SMTP through the front server"),
        "{}",
        path.detail
    );
    a.front_leave().await.expect("moved off");
    assert!(until(false).await, "the link did not go down within 30 s");
    assert!(line("Front server").is_none());
    let path = line("Outgoing mail path").expect("a path line");
    assert!(path.detail.starts_with("direct"), "{}", path.detail);
    drop(f);
    task.abort();
}
