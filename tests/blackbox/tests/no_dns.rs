//! A machine without DNS servers (an appliance booting before its DHCP lease, a server
//! with an empty /etc/resolv.conf) must still start the relay: resolvers are built when
//! first needed and follow the file when it changes (dns.rs). Regression: the DKIM
//! verifier once read the system configuration at start and the daemon exited with
//! "DNS resolver: no nameservers found in config", so the QEMU image never came up.
//!
//! Runs the real binary in a private mount namespace (`unshare -m`, root) where
//! /etc/resolv.conf is empty, and without a system CA store (SSL_CERT_FILE/SSL_CERT_DIR
//! pointing at nothing, as on the appliance, which has no /etc/ssl): hickory would
//! otherwise build its unused DNS-over-TLS config from the system store and fail.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use relaybox_blackbox::relay::binary;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

#[test]
fn relay_starts_without_nameservers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports: Vec<u16> = (0..7).map(|_| free_port()).collect();
    let keys = [
        "smtp_listen",
        "submission_listen",
        "submissions_listen",
        "imap_listen",
        "imaps_listen",
        "https_listen",
        "http_listen",
    ];
    let mut ini = format!(
        "[params]\nmail_domain = 127.0.0.1\ndata_dir = {}\nturn_listen =\nlog_stderr = true\nmax_load_1m = 10000\n",
        dir.path().join("data").display()
    );
    for (k, p) in keys.iter().zip(&ports) {
        ini += &format!("{k} = 127.0.0.1:{p}\n");
    }
    let config = dir.path().join("chatmail.ini");
    std::fs::write(&config, ini).expect("config");
    let script = format!(
        "mount --bind /dev/null /etc/resolv.conf && exec {} serve --config {}",
        binary().display(),
        config.display()
    );
    let no_certs = dir.path().join("no-certs");
    std::fs::create_dir_all(&no_certs).expect("empty cert dir");
    let mut child = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .env("SSL_CERT_FILE", dir.path().join("missing.pem"))
        .env("SSL_CERT_DIR", &no_certs)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux) runs");
    let http: SocketAddr = format!("127.0.0.1:{}", ports[6]).parse().expect("addr");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut up = false;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            panic!("the relay exited ({status}) without nameservers:\n{err}");
        }
        if TcpStream::connect_timeout(&http, Duration::from_millis(200)).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "the relay did not listen within 20 s");
}
