//! The smaller holes of issue 13 point 6, against the real binary: the store and data
//! directory are private (also when found open), admin pages answer only under the
//! box's own names and only over HTTPS on a running relay, the HTTP→HTTPS redirect
//! names the box whatever `Host:` says, and the setup code reaches the log only in
//! setup mode. (The tagged answer to an over-long IMAP line is in `bad_input.rs`.)

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use relaybox_blackbox::conn::LineConn;
use relaybox_blackbox::http::{self, HttpResponse};
use relaybox_blackbox::relay::{self, Relay};

/// Bound of one HTTP exchange.
const IO_LIMIT: Duration = Duration::from_secs(10);

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// One `GET path` with `host` as `Host:` over plain HTTP or TLS.
async fn get(addr: SocketAddr, tls: bool, path: &str, host: &str) -> HttpResponse {
    let mut conn = tokio::time::timeout(IO_LIMIT, async {
        if tls {
            LineConn::connect_tls(addr, &[]).await
        } else {
            LineConn::connect(addr).await
        }
    })
    .await
    .expect("connect in time")
    .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let head = format!("GET {path} HTTP/1.1\nHost: {host}");
    tokio::time::timeout(IO_LIMIT, http::request(&mut conn, &head, b""))
        .await
        .expect("answer in time")
        .unwrap_or_else(|e| panic!("GET {path} (Host {host}): {e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_and_data_directory_are_private_also_when_found_open() {
    let mut relay = Relay::start(&[]).await;
    let data = relay.data_dir();
    let store = data.join("relaybox.redb");
    assert_eq!(mode(&data), 0o700, "data directory");
    assert_eq!(mode(&store), 0o600, "store: password hashes and all mail");
    for secret in ["setup-code", "tls/key.pem"] {
        assert_eq!(mode(&data.join(secret)), 0o600, "{secret}");
    }
    // As an older version left them: tightened at the next start.
    relay.stop().await;
    chmod(&data, 0o755);
    chmod(&store, 0o644);
    relay.restart().await;
    assert_eq!(mode(&data), 0o700, "data directory after restart");
    assert_eq!(mode(&store), 0o600, "store after restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_pages_only_over_https_and_only_for_the_names_of_the_box() {
    let relay = Relay::start(&[]).await;
    let https = relay.https_addr();
    let own = format!("127.0.0.1:{}", https.port());
    // HTTPS: the box's address (with or without port) gets the page (the relay is not
    // claimed yet: the claim page).
    for host in [own.as_str(), "127.0.0.1", "localhost", "relaybox.local"] {
        let r = get(https, true, "/admin/claim", host).await;
        assert_eq!(r.status, 200, "Host {host}: {}", r.status_line);
    }
    // Another name pointed at the box (DNS rebinding from a browser on the LAN): 421
    // with a plain explanation, no page.
    let r = get(https, true, "/admin/claim", "attacker.example").await;
    assert_eq!(r.status, 421, "{}", r.status_line);
    let body = r.body_text();
    assert!(
        body.contains("own addresses") && !body.contains("setup code"),
        "{body}"
    );
    // Plain HTTP on the running relay: every admin page is sent to HTTPS (no password
    // form over port 80), at the box's own name, whatever Host says.
    let https_base = format!("https://127.0.0.1:{}", https.port());
    let http_host = format!("127.0.0.1:{}", relay.http_addr().port());
    for (path, host, want) in [
        ("/admin/login", http_host.as_str(), "/admin/login"),
        ("/admin/", http_host.as_str(), "/admin/"),
        ("/admin/login", "attacker.example", "/admin/login"),
        ("/", "attacker.example", "/"),
        ("/new", "evil.example:80", "/new"),
    ] {
        let r = get(relay.http_addr(), false, path, host).await;
        assert_eq!(
            r.status, 301,
            "http {path} (Host {host}): {}",
            r.status_line
        );
        assert_eq!(
            r.header("Location"),
            Some(format!("{https_base}{want}").as_str()),
            "http {path} (Host {host})"
        );
    }
}

/// The setup code of a relay nobody claimed yet stays out of a configured relay's log
/// (it is in the setup-code file); only setup mode prints it, for the console.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_setup_code_is_logged_only_in_setup_mode() {
    let relay = Relay::start(&[]).await;
    let code = std::fs::read_to_string(relay.data_dir().join("setup-code"))
        .expect("setup code file")
        .trim()
        .to_string();
    assert_eq!(code.len(), 14, "{code}");
    let log = relay.stderr();
    assert!(
        !log.contains(&code),
        "a configured relay logged the setup code:\n{log}"
    );
    assert!(log.contains("setup-code"), "says where the code is:\n{log}");
    drop(relay);

    let setup = SetupMode::start().await;
    let code = std::fs::read_to_string(setup.code_file())
        .expect("setup code file")
        .trim()
        .to_string();
    let log = setup.stderr();
    assert!(log.contains(&code), "setup mode prints the code:\n{log}");
    // Setup mode has no certificate yet: the wizard is served on plain HTTP.
    let host = format!("127.0.0.1:{}", setup.http.port());
    let r = get(setup.http, false, "/admin/claim", &host).await;
    assert_eq!(r.status, 200, "{}", r.status_line);
    assert!(r.body_text().contains("setup-code"), "the claim page");
}

/// The binary in setup mode on a loopback port.
struct SetupMode {
    daemon: relay::SetupMode,
    http: SocketAddr,
}

impl SetupMode {
    async fn start() -> SetupMode {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let http = SocketAddr::from(([127, 0, 0, 1], port));
        let mut daemon = relay::SetupMode::spawn(
            "relaybox-holes-",
            &format!("http_listen = {http}\nmdns_name =\nlog_stderr = true\nturn_listen =\n"),
        );
        let code = daemon.dir().join("data/setup-code");
        daemon
            .wait_listening(http, Some(&code), Duration::from_secs(30))
            .await;
        SetupMode { daemon, http }
    }

    fn code_file(&self) -> PathBuf {
        self.daemon.dir().join("data/setup-code")
    }

    fn stderr(&self) -> String {
        self.daemon.stderr()
    }
}
