//! A box behind a front server (issue 20, first part): `relaybox front` on its own address
//! serves the relay's standard ports; the relay ("the box", on another address, with
//! `front`/`front_pin`) keeps a tunnel open to it. Checked: a front that does not pin the
//! box refuses its tunnel (and serves nothing); after the front restarts with the right pin
//! the box reconnects by itself; IMAP and submission work through the front (TLS ends on
//! the box: the certificate clients see is the relay's); the relay sees each client's own
//! address (per-address limits count them apart and its log names them); a client through
//! the front never counts as local network for the admin pages.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use relaybox_blackbox::conn::LineConn;
use relaybox_blackbox::encrypted_mail;
use relaybox_blackbox::federation::{DomainRelays, FedRelay, Net};
use relaybox_blackbox::http;
use relaybox_blackbox::imap::Imap;
use relaybox_blackbox::relay::{binary, kill9_child};
use relaybox_blackbox::smtp::Smtp;

const WAIT: Duration = Duration::from_secs(60);

/// `relaybox front` as a child process; killed on drop.
struct Front {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Front {
    fn start(data: &std::path::Path, public: Ipv4Addr, box_pin: &str) -> Front {
        Self::start_with(data, public, &["--box-pin", box_pin])
    }

    fn start_with(data: &std::path::Path, public: Ipv4Addr, extra: &[&str]) -> Front {
        let log = data.join(format!(
            "front-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let child = Command::new(binary())
            .args(["front", "--data"])
            .arg(data)
            .args(["--public", &public.to_string()])
            .args(extra)
            .env("RELAYBOX_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start relaybox front");
        Front {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        kill9_child(&mut self.child);
        if std::thread::panicking() {
            eprintln!("---- relaybox front log ----\n{}\n----", self.log());
        }
    }
}

fn pin(args: &[&str]) -> String {
    let out = Command::new(binary())
        .args(args)
        .output()
        .expect("run relaybox");
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Poll (bounded) until `f` holds.
async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An IMAP greeting through `addr` from `from`, if one comes.
async fn greeting(from: IpAddr, addr: SocketAddr) -> Option<(Imap, String)> {
    let conn = LineConn::connect_tls_from(from, addr, &[]).await.ok()?;
    let mut c = Imap::from_conn(conn, addr);
    let line = tokio::time::timeout(Duration::from_secs(10), c.read_line())
        .await
        .ok()?
        .ok()?;
    Some((c, line.text()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_behind_a_front_server() {
    let net = Net::fresh();
    let public = net.host(10);
    let dir = tempfile::tempdir().unwrap();
    let front_data = dir.path().join("front");
    std::fs::create_dir_all(&front_data).unwrap();
    let front_pin = pin(&[
        "front",
        "--data",
        front_data.to_str().unwrap(),
        "--print-pin",
    ]);
    assert!(front_pin.starts_with("sha256:"), "{front_pin}");
    let mut relay = FedRelay::new(
        net.host(2),
        &public.to_string(),
        &[
            format!("front = {public}:4433"),
            format!("front_pin = {front_pin}"),
            "max_connections_per_ip = 1".into(),
            "max_connection_rate_per_ip = 100000".into(),
            "max_connection_burst_per_ip = 100000".into(),
        ],
    );
    let box_pin = pin(&[
        "tunnel-pin",
        "--config",
        relay.config_path().to_str().unwrap(),
    ]);
    assert_ne!(box_pin, front_pin);

    // A front that pins another box: the tunnel is refused and nothing is served.
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let front = Front::start(&front_data, public, &wrong);
    relay.start().await;
    let imaps = SocketAddr::new(IpAddr::V4(public), 993);
    until("the front refuses the unpinned box", async || {
        front.log().contains("tunnel handshake") && front.log().contains("refused")
    })
    .await;
    assert!(
        greeting(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7)), imaps)
            .await
            .is_none(),
        "the front served a client without a tunnel"
    );
    drop(front);

    // The front restarts with the right pin; the box reconnects by itself.
    let front = Front::start(&front_data, public, &box_pin);
    until("IMAP answers through the front", async || {
        greeting(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7)), imaps)
            .await
            .is_some_and(|(_, g)| g.starts_with("* OK"))
    })
    .await;
    assert!(front.log().contains("the box connected"), "{}", front.log());

    // An account made and used through the front only.
    let account = relay.account();
    let seven = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7));
    let (mut held, _) = greeting(seven, imaps).await.expect("greeting");
    let r = held.login(&account.addr, &account.password).await;
    assert!(r.is_ok(), "LOGIN through the front: {r}");
    let submissions = SocketAddr::new(IpAddr::V4(public), 465);
    let conn =
        LineConn::connect_tls_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 8)), submissions, &[])
            .await
            .expect("submission through the front");
    let mut s = Smtp::from_conn(conn, submissions);
    s.greeting().await;
    s.ehlo().await;
    assert_eq!(
        s.auth_plain(&account.addr, &account.password).await.code,
        235
    );
    let mail = encrypted_mail(&account.addr, &[&account.addr]);
    assert_eq!(
        s.send_mail(&account.addr, &[&account.addr], &mail.bytes)
            .await
            .code,
        250
    );
    s.quit().await;
    assert_eq!(
        held.select("INBOX").await,
        1,
        "the message, read through the front"
    );

    // The relay sees each client's own address: a second IMAP connection from 127.0.0.7
    // is over its per-address limit of 1, one from 127.0.0.9 is not.
    let second = greeting(seven, imaps).await;
    assert!(
        !second.as_ref().is_some_and(|(_, g)| g.starts_with("* OK")),
        "a second connection from the same client: {:?}",
        second.map(|(_, g)| g)
    );
    let other = greeting(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)), imaps).await;
    assert!(
        other.as_ref().is_some_and(|(_, g)| g.starts_with("* OK")),
        "another client: {:?}",
        other.map(|(_, g)| g)
    );
    let log = relay.stderr();
    assert!(
        log.contains("connection from 127.0.0.7 refused"),
        "the relay's log names the client, not the tunnel:\n{}",
        relay.log_lines(&["refused"])
    );
    // The admin pages: a client through the front is never on the local network, while
    // the same kind of address straight at the box is.
    let admin = async |from: u8, at: SocketAddr| {
        let mut c = LineConn::connect_tls_from(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, from)),
            at,
            &[b"http/1.1"],
        )
        .await
        .expect("HTTPS connect");
        let head = format!("GET /admin/ HTTP/1.1\nHost: {public}");
        http::request(&mut c, &head, b"")
            .await
            .expect("HTTPS answer")
    };
    let through = admin(12, SocketAddr::new(IpAddr::V4(public), 443)).await;
    assert_eq!(
        through.status, 403,
        "the admin pages through the front: {}",
        through.status_line
    );
    assert!(through.body_text().contains("local network"));
    let direct = admin(11, relay.sock(443)).await;
    assert_ne!(
        direct.status, 403,
        "the admin pages from the LAN: {}",
        direct.status_line
    );
    held.logout().await;
    relay.stop().await;
}

/// The pairing by one-time code, end to end: `relaybox front --pair CODE` and `relaybox
/// pair-front` with a running relay, which takes the link up without a restart; then mail
/// to a peer that only takes SMTP leaves through the front (the front's log names it),
/// and the replayed code is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_by_code_and_outbound_mail_through_the_front() {
    let mut set = DomainRelays::start(2, |i| match i {
        // The peer has no HTTPS: mail to it goes by SMTP, which the front opens.
        1 => vec!["https_listen =".into()],
        _ => Vec::new(),
    })
    .await;
    let public = set.net.host(10);
    let front_data = set.dir.path().join("front");
    std::fs::create_dir_all(&front_data).unwrap();
    let code = "abcd-efgh-jkmn-pqrs";
    let front = Front::start_with(&front_data, public, &["--pair", code, "--outbound-private"]);
    let box_relay = &set.relays[0];
    let out = Command::new(binary())
        .args(["pair-front", "--config"])
        .arg(box_relay.config_path())
        .args([
            "--front",
            &public.to_string(),
            "--code",
            code,
            "--wait",
            "60",
        ])
        .env("NO_COLOR", "1")
        .output()
        .expect("run relaybox pair-front");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "pair-front: {out:?}");
    assert!(
        said.contains(&format!("relaybox front --public {public} --pair {code}")),
        "{said}"
    );
    assert!(
        said.contains("The running relay uses the front now"),
        "{said}"
    );
    let ini = std::fs::read_to_string(box_relay.config_path()).unwrap();
    assert!(ini.contains(&format!("front = {public}:4433")), "{ini}");
    assert!(ini.contains("front_pin = sha256:"), "{ini}");

    // Served through the front without a restart.
    let imaps = SocketAddr::new(IpAddr::V4(public), 993);
    until("IMAP answers through the front", async || {
        greeting(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7)), imaps)
            .await
            .is_some_and(|(_, g)| g.starts_with("* OK"))
    })
    .await;

    // Outbound: to a peer without HTTPS, through the front.
    let (a, c) = (box_relay.account(), set.relays[1].account());
    box_relay.create_account(&a).await;
    set.relays[1].create_account(&c).await;
    let mail = encrypted_mail(&a.addr, &[&c.addr]);
    assert_eq!(
        box_relay.submit(&a, &[&c.addr], &mail.bytes).await.code,
        250
    );
    let got = set.relays[1].wait_inbox(&c, WAIT, |m| !m.is_empty()).await;
    assert_eq!(got.len(), 1, "the message reached the peer");
    let peer = set.net.host(3);
    assert!(
        front
            .log()
            .contains(&format!("outbound SMTP for the box to {peer}:25")),
        "{}",
        front.log()
    );

    // The code cannot pair a second box (another relay's identity), now or after the
    // front restarts with the same command.
    let other = &set.relays[1];
    let replay = |what: &str| {
        let out = Command::new(binary())
            .args(["pair-front", "--config"])
            .arg(other.config_path())
            .args([
                "--front",
                &public.to_string(),
                "--code",
                code,
                "--wait",
                "5",
            ])
            .output()
            .expect("run relaybox pair-front");
        assert!(!out.status.success(), "{what}: the replayed code paired");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains("refused the pairing code"), "{what}: {err}");
    };
    replay("while running");
    drop(front);
    let front = Front::start_with(&front_data, public, &["--pair", code, "--outbound-private"]);
    replay("after a restart");
    until("the paired box reconnects after the restart", async || {
        greeting(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7)), imaps)
            .await
            .is_some_and(|(_, g)| g.starts_with("* OK"))
    })
    .await;
    assert!(
        front
            .log()
            .contains("the pairing code was used already; the paired box is kept")
    );
    for r in &mut set.relays {
        r.stop().await;
    }
}
