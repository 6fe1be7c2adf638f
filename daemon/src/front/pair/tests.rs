//! The pairing: the code's form, and whole pairings against a running front on loopback.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::*;
use crate::front::server::{self, FrontConfig};

#[test]
fn a_new_code_has_four_groups_from_the_alphabet_and_normalizes() {
    let a = new_code();
    let b = new_code();
    assert_ne!(a, b);
    assert_eq!(a.len(), 19);
    assert_eq!(a.split('-').count(), 4);
    let plain = normalize_code(&a).unwrap();
    assert_eq!(plain.len(), 16);
    // People type it with spaces, in capitals.
    assert_eq!(
        normalize_code(&format!(" {} ", a.to_uppercase().replace('-', " "))).unwrap(),
        plain
    );
}

#[test]
fn bad_codes_are_refused() {
    for bad in [
        "",
        "abcd-efgh",
        "abcd-efgh-jkmn-pqr0",
        "abcd-efgh-jkmn-pqrsa",
        "ilo1-efgh-jkmn-pqrs",
    ] {
        assert!(
            matches!(normalize_code(bad), Err(PairError::BadCode(_))),
            "{bad}"
        );
    }
}

#[test]
fn the_tunnel_address_gets_the_default_port() {
    assert_eq!(tunnel_address("203.0.113.5"), "203.0.113.5:4433");
    assert_eq!(
        tunnel_address("front.example.org"),
        "front.example.org:4433"
    );
    assert_eq!(
        tunnel_address("front.example.org:5000"),
        "front.example.org:5000"
    );
    assert_eq!(tunnel_address("2001:db8::5"), "[2001:db8::5]:4433");
    assert_eq!(tunnel_address("[2001:db8::5]:5000"), "[2001:db8::5]:5000");
}

#[test]
fn the_command_names_the_address_and_the_code() {
    let ip: IpAddr = "203.0.113.5".parse().unwrap();
    assert_eq!(
        front_command(ip, 4433, "abcd-efgh-jkmn-pqrs"),
        "relaybox front --public 203.0.113.5 --pair abcd-efgh-jkmn-pqrs"
    );
    assert_eq!(
        front_command(ip, 5000, "abcd-efgh-jkmn-pqrs"),
        "relaybox front --public 203.0.113.5 --pair abcd-efgh-jkmn-pqrs --tunnel 203.0.113.5:5000"
    );
}

fn free_port(ip: IpAddr) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A front on `127.0.0.1` with no public ports, only the tunnel port; stopped on drop.
struct Front {
    task: tokio::task::JoinHandle<Result<(), server::FrontError>>,
    tunnel: SocketAddr,
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn front(dir: &std::path::Path, code: Option<&str>) -> Front {
    let ip: IpAddr = [127, 0, 0, 1].into();
    let tunnel = SocketAddr::new(ip, free_port(ip));
    let cfg = FrontConfig {
        data_dir: dir.to_path_buf(),
        public: ip,
        ports: Vec::new(),
        tunnel,
        box_pin: None,
        pair_code: code.map(str::to_string),
        outbound_private: false,
    };
    let id = server::identity(dir).unwrap();
    let task = tokio::spawn(server::run(cfg, id));
    // Listening once a connection is taken (bounded).
    for _ in 0..200 {
        if task.is_finished() || tokio::net::TcpStream::connect(tunnel).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Front { task, tunnel }
}

/// Whether a link (the tunnel's normal TLS) from `id` with the front pinned as `pin` works:
/// the front answers a request over it (its refusal of port 26 proves it read the request).
/// An unpinned box's handshake is closed, or refused by an alert.
async fn link_accepted(front: SocketAddr, id: &Identity, pin: [u8; 32]) -> bool {
    let tls = link::client_config(id, pin).unwrap();
    let tcp = tokio::net::TcpStream::connect(front).await.unwrap();
    let name = ServerName::try_from("relaybox-front").unwrap();
    let Ok(Ok(stream)) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(tls).connect(name, tcp),
    )
    .await
    else {
        return false;
    };
    let (opener, _task) = link::Opener::start(stream, link::Side::Box, drop);
    let asked = crate::front::outbound::open(&opener, "127.0.0.1:26".parse().unwrap());
    match tokio::time::timeout(Duration::from_secs(30), asked).await {
        Ok(Err(e)) => e.kind() == io::ErrorKind::PermissionDenied,
        _ => false,
    }
}

#[tokio::test]
async fn a_box_pairs_once_and_the_code_is_used_up() {
    let t = tempfile::tempdir().unwrap();
    let (front_dir, box_dir, other_dir) = (
        t.path().join("front"),
        t.path().join("box"),
        t.path().join("other"),
    );
    let code = new_code();
    let f = front(&front_dir, Some(&code)).await;
    let me = Identity::load_or_create(&box_dir).unwrap();
    let addr = f.tunnel.to_string();

    // Nothing paired yet: no link.
    let front_id = server::identity(&front_dir).unwrap();
    let front_pin = crate::tls::cert_sha256(&front_id.cert);
    assert!(!link_accepted(f.tunnel, &me, front_pin).await);

    // A wrong code is refused and leaves the pairing open.
    assert_eq!(
        pair_box(&addr, &new_code(), &me).await,
        Err(PairError::Refused)
    );
    let got = pair_box(&addr, &code.to_uppercase(), &me).await.unwrap();
    assert_eq!(got, front_pin, "the box keeps the front's certificate");
    let kept = std::fs::read_to_string(front_dir.join("box.pin")).unwrap();
    assert_eq!(kept.trim(), me.fingerprint(), "the front keeps the box's");
    let used = std::fs::read_to_string(front_dir.join("used-codes")).unwrap();
    assert!(
        !used.contains(&normalize_code(&code).unwrap()),
        "only its hash is kept"
    );
    assert!(link_accepted(f.tunnel, &me, front_pin).await);

    // Replayed, by another box: refused, and that box gets no link.
    let other = Identity::load_or_create(&other_dir).unwrap();
    assert_eq!(
        pair_box(&addr, &code, &other).await,
        Err(PairError::Refused)
    );
    assert!(!link_accepted(f.tunnel, &other, front_pin).await);

    // The front restarted with the same command: the code stays used, the box stays paired.
    drop(f);
    let f = front(&front_dir, Some(&code)).await;
    let addr = f.tunnel.to_string();
    assert_eq!(
        pair_box(&addr, &code, &other).await,
        Err(PairError::Refused)
    );
    assert!(link_accepted(f.tunnel, &me, front_pin).await);
    assert!(!link_accepted(f.tunnel, &other, front_pin).await);
}

#[tokio::test]
async fn a_front_without_a_box_or_a_code_does_not_start() {
    let t = tempfile::tempdir().unwrap();
    let f = front(t.path(), None).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while !f.task.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(ended.is_ok());
}

#[tokio::test]
async fn nothing_listening_is_unreachable() {
    let t = tempfile::tempdir().unwrap();
    let me = Identity::load_or_create(t.path()).unwrap();
    let ip: IpAddr = [127, 0, 0, 1].into();
    let addr = SocketAddr::new(ip, free_port(ip)).to_string();
    assert!(matches!(
        pair_box(&addr, &new_code(), &me).await,
        Err(PairError::Unreachable(..))
    ));
}

/// A server that accepts the pairing but cannot prove the code (a machine in the middle,
/// or not the front): the box does not keep its certificate.
#[tokio::test]
async fn a_server_that_cannot_prove_the_code_is_not_trusted() {
    let t = tempfile::tempdir().unwrap();
    let impostor = Identity::load_or_create(&t.path().join("impostor")).unwrap();
    let me = Identity::load_or_create(&t.path().join("box")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let tls = link::pairing_server_config(&impostor).unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut s = tokio_rustls::TlsAcceptor::from(tls)
            .accept(tcp)
            .await
            .unwrap();
        let mut proof = [0u8; 32];
        s.read_exact(&mut proof).await.unwrap();
        let mut answer = vec![ACCEPTED];
        answer.extend_from_slice(&[7u8; 32]);
        s.write_all(&answer).await.unwrap();
        let _ = s.shutdown().await;
    });
    assert_eq!(
        pair_box(&addr, &new_code(), &me).await,
        Err(PairError::NotTheFront(addr.clone()))
    );
    server.await.unwrap();
}
