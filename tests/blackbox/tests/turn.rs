//! TURN (spec relay.md §21 RT-1..3, §12): the `/shared/vendor/deltachat/turn` METADATA
//! value and a real TURN client — `turnutils_uclient` from Debian's coturn package
//! (installed by tests/run) — allocating relayed addresses with the served
//! credentials and relaying datagrams between them; wrong, made-up or expired
//! credentials fail. A restart keeps the per-installation secret: credentials served
//! before it still work.

use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use relaybox_blackbox::{Account, Imap, Relay};

const TURN_KEY: &str = "/shared/vendor/deltachat/turn";
/// RT-2: credentials are valid for 5 days.
const LIFETIME: u64 = 5 * 24 * 3600;
/// How long one run of the TURN client may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Datagrams each client sends.
const MESSAGES: u32 = 5;

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free loopback UDP port")
        .port()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A relay with TURN on a free loopback UDP port.
async fn turn_relay() -> (Relay, u16) {
    let port = free_udp_port();
    let relay = Relay::start(&[&format!("turn_listen = 127.0.0.1:{port}")]).await;
    (relay, port)
}

/// The turn value of `GETMETADATA ""` (None for NIL), asserting the response shape
/// (IMAP-8: values as literals).
async fn turn_value(relay: &Relay, account: &Account) -> Option<String> {
    let mut c = Imap::login_tls(relay, account).await;
    let r = c.cmd(&format!("GETMETADATA \"\" ({TURN_KEY})")).await;
    assert!(r.is_ok(), "GETMETADATA: {r}");
    assert_eq!(r.untagged.len(), 1, "one METADATA line: {r}");
    let line = &r.untagged[0];
    c.logout().await;
    match line.literals.as_slice() {
        [] => {
            assert_eq!(
                line.text(),
                format!("* METADATA \"\" ({TURN_KEY} NIL)"),
                "NIL form"
            );
            None
        }
        [value] => Some(String::from_utf8(value.clone()).expect("UTF-8 value")),
        more => panic!("more than one literal: {more:?}"),
    }
}

/// `<host>:<port>:<username>:<password>` → (host, port, username, password), asserting
/// RT-2's shapes.
fn parse_value(value: &str) -> (String, u16, String, String) {
    let parts: Vec<&str> = value.splitn(4, ':').collect();
    assert_eq!(parts.len(), 4, "four colon-separated fields: {value:?}");
    let port: u16 = parts[1].parse().expect("numeric port");
    let expiry: u64 = parts[2].parse().expect("username is a Unix time");
    let now = unix_now();
    assert!(
        expiry >= now + LIFETIME - 120 && expiry <= now + LIFETIME + 5,
        "RT-2: username = now + 5 days, got {expiry} at {now}"
    );
    // base64 of a 20-byte HMAC-SHA1.
    assert_eq!(parts[3].len(), 28, "password shape: {:?}", parts[3]);
    assert!(parts[3].ends_with('='), "password shape: {:?}", parts[3]);
    (
        parts[0].to_string(),
        port,
        parts[2].to_string(),
        parts[3].to_string(),
    )
}

/// What one run of turnutils_uclient did.
struct ClientRun {
    /// Exit status 0, every datagram came back, none lost.
    success: bool,
    /// The relayed transport addresses the server handed out (`-v` output).
    relay_addrs: Vec<std::net::SocketAddr>,
    output: String,
}

/// `turnutils_uclient` in client-to-client mode (`-y`): allocations on the server,
/// permissions for each other, `MESSAGES` datagrams each way through the relayed
/// addresses, over channels (RFC 5766 §11) or, with `send_indications`, with Send and
/// Data indications (§10, `-s`); no RTCP allocations (`-c`). Bounded by
/// `CLIENT_TIMEOUT` (killed after).
async fn uclient(port: u16, user: &str, pass: &str, send_indications: bool) -> ClientRun {
    let mut cmd = tokio::process::Command::new("turnutils_uclient");
    cmd.args(["-v", "-y", "-c", "-n", &MESSAGES.to_string(), "-l", "120"]);
    if send_indications {
        cmd.arg("-s");
    }
    let child = cmd
        .args(["-p", &port.to_string(), "-u", user, "-w", pass])
        .arg("127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("turnutils_uclient (Debian package coturn) is installed");
    let out = match tokio::time::timeout(CLIENT_TIMEOUT, child.wait_with_output()).await {
        Ok(out) => out.expect("turnutils_uclient output"),
        Err(_) => {
            return ClientRun {
                success: false,
                relay_addrs: Vec::new(),
                output: "turnutils_uclient timed out (killed)".to_string(),
            };
        }
    };
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let relay_addrs = output
        .lines()
        .filter_map(|l| l.split_once("Received relay addr: "))
        .filter_map(|(_, a)| a.trim().parse().ok())
        .collect();
    ClientRun {
        success: out.status.success() && relayed_everything(&output),
        relay_addrs,
        output,
    }
}

/// A number after `label` in uclient's output (`tot_recv_msgs=10`).
fn number_after(output: &str, label: &str) -> Option<u64> {
    let rest = &output[output.rfind(label)? + label.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// uclient's summary: each of the two clients sent `MESSAGES` datagrams and all of
/// them arrived; nothing lost.
fn relayed_everything(output: &str) -> bool {
    let want = u64::from(2 * MESSAGES);
    number_after(output, "tot_send_msgs=") == Some(want)
        && number_after(output, "tot_recv_msgs=") == Some(want)
        && output.contains("Total lost packets 0 ")
}

/// RT-1: relayed addresses on the address the client reached, ports 49152–65535.
fn assert_relay_addrs(run: &ClientRun) {
    assert!(
        !run.relay_addrs.is_empty(),
        "no relayed address seen:\n{}",
        run.output
    );
    for a in &run.relay_addrs {
        assert_eq!(a.ip().to_string(), "127.0.0.1", "RT-1 relayed address {a}");
        assert!(a.port() >= 49152, "RT-1 relay port range: {a}");
    }
}

#[tokio::test]
async fn served_credentials_allocate_and_relay_wrong_ones_fail() {
    let (mut relay, port) = turn_relay().await;
    let a = Account::random();
    let value = turn_value(&relay, &a)
        .await
        .expect("§12: turn value when TURN is on");
    let (host, served_port, user, pass) = parse_value(&value);
    // §12: the host is mail_domain (IP-only: the plain IPv4 address); the port is the
    // configured one (3478 unless turn_listen says otherwise).
    assert_eq!(host, "127.0.0.1");
    assert_eq!(served_port, port);

    let ok = uclient(port, &user, &pass, false).await;
    assert!(
        ok.success,
        "allocation and relaying over channels with the served credentials:\n{}",
        ok.output
    );
    assert_relay_addrs(&ok);
    let ok = uclient(port, &user, &pass, true).await;
    assert!(
        ok.success,
        "allocation and relaying with Send/Data indications:\n{}",
        ok.output
    );
    assert_relay_addrs(&ok);

    // A wrong password (the last character changed) fails.
    let mut wrong = pass.clone();
    let last = if wrong.ends_with("A=") { "B=" } else { "A=" };
    wrong.truncate(wrong.len() - 2);
    wrong.push_str(last);
    let bad = uclient(port, &user, &wrong, false).await;
    assert!(!bad.success, "wrong password accepted:\n{}", bad.output);
    assert!(
        bad.relay_addrs.is_empty(),
        "no allocation with a wrong password:\n{}",
        bad.output
    );
    // A made-up username with the served password fails (the password is bound to
    // the username); so does an expired one.
    let later = (user.parse::<u64>().expect("number") + 1).to_string();
    let bad = uclient(port, &later, &pass, false).await;
    assert!(!bad.success, "foreign username accepted:\n{}", bad.output);
    let expired = (unix_now() - 10).to_string();
    let bad = uclient(port, &expired, &pass, false).await;
    assert!(!bad.success, "expired username accepted:\n{}", bad.output);

    // RT-2: the secret is per installation and kept: a restart serves credentials
    // with the same secret, and those from before the restart still work.
    relay.restart().await;
    let again = uclient(port, &user, &pass, false).await;
    assert!(
        again.success,
        "credentials from before the restart:\n{}",
        again.output
    );
    relay.stop().await;
}

#[tokio::test]
async fn two_installations_have_different_secrets() {
    let (mut r1, p1) = turn_relay().await;
    let (mut r2, _p2) = turn_relay().await;
    let a = Account::random();
    let v1 = turn_value(&r1, &a).await.expect("turn value 1");
    let b = Account::random();
    let v2 = turn_value(&r2, &b).await.expect("turn value 2");
    let (_, _, user1, pass1) = parse_value(&v1);
    let (_, _, user2, pass2) = parse_value(&v2);
    if user1 == user2 {
        assert_ne!(pass1, pass2, "RT-2: a random secret per installation");
    }
    // Relay 2's credentials do not open relay 1.
    let cross = uclient(p1, &user2, &pass2, false).await;
    assert!(
        !cross.success,
        "another installation's credentials accepted:\n{}",
        cross.output
    );
    r1.stop().await;
    r2.stop().await;
}

#[tokio::test]
async fn turn_is_nil_when_disabled() {
    // The harness writes `turn_listen =` (TURN off) unless a test overrides it.
    let mut relay = Relay::start(&[]).await;
    let a = Account::random();
    assert_eq!(
        turn_value(&relay, &a).await,
        None,
        "RT-3: NIL when TURN is off"
    );
    relay.stop().await;
}
