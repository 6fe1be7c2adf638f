//! The health check of a trial boot (OTA-5): is the relay that just started from the new
//! slot able to do its job? Owned here: [`check`], which the update agent runs within the
//! health window before it commits the slot.
//!
//! What is checked, in this order, all bounded by [`TIMEOUT`]:
//! 1. the store opens and reads (`account_count`);
//! 2. every configured listener address (SMTP 25, submission 587/465, IMAP 143/993, HTTPS
//!    443, HTTP 80) accepts a TCP connection on loopback (a wildcard address is probed on
//!    the loopback address of its family). Stricter than `appliance::services_health`,
//!    which is content with one answering address per service;
//! 3. a loopback SMTP-to-IMAP delivery: a throw-away account `healthcheck-<random>` is
//!    created in the store, a PGP/MIME message (passes the encryption gate, GATE-1..8) from
//!    the account to itself is submitted over a real socket to the first submissions (465,
//!    implicit TLS) address with `AUTH PLAIN`, and read back over a real socket from the
//!    first IMAPS (993) address with LOGIN / SELECT INBOX / UID FETCH of its Message-ID.
//!    The TLS client trusts exactly the certificate the relay serves (pinned). When no 465
//!    listener is configured the message goes through `crate::delivery::submission` (the
//!    same policy and commit path the SMTP session uses); when no 993 listener is
//!    configured it is read back from the store. The account is deleted afterwards, also
//!    after a failure.
//!
//! What the check uses of the relay comes as [`Handles`], lent by the assembly
//! (`crate::server`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::auth::Auth;
use crate::clock::Clock;
use crate::config::Config;
use crate::store::Store;
use crate::tls::Tls;

/// What the health check uses of the relay, lent by the assembly (`crate::server`).
#[derive(Clone, Copy)]
pub struct Handles<'a> {
    /// The listener addresses and the mail domain.
    pub config: &'a Config,
    pub store: &'a Store,
    pub clock: &'a dyn Clock,
    /// Forgets the test account's cached login afterwards.
    pub auth: &'a Auth,
    /// The certificate served right now (pinned by the check's TLS client).
    pub tls: &'a Tls,
    /// The submission path when no 465 listener is configured.
    pub delivery: crate::delivery::Handles<'a>,
}

/// Longest a whole health check may take (OTA-5 window attempts are ≤ 60 s each).
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for one TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for the removal of the test account.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest protocol line read from the relay.
const MAX_LINE: u64 = 64 * 1024;
/// Most protocol lines read for one command.
const MAX_LINES: usize = 1000;

/// Why a trial boot is not healthy; the text is shown on the status page (OTA-6).
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("store: {0}")]
    Store(String),
    #[error("{service} is not answering on {addr}")]
    Listener {
        service: &'static str,
        addr: SocketAddr,
    },
    #[error("test delivery (SMTP): {0}")]
    Smtp(String),
    #[error("test delivery (IMAP): {0}")]
    Imap(String),
    #[error("health check did not finish within {0} s")]
    Timeout(u64),
}

/// OTA-5: the whole check, bounded by [`TIMEOUT`].
pub async fn check(h: Handles<'_>) -> Result<(), HealthError> {
    check_within(h, TIMEOUT).await
}

/// [`check`] with another time limit.
pub async fn check_within(h: Handles<'_>, limit: Duration) -> Result<(), HealthError> {
    let deadline = tokio::time::Instant::now() + limit;
    let timeout = || HealthError::Timeout(limit.as_secs());
    tokio::time::timeout_at(deadline, async {
        // OTA-5 "redb opens".
        h.store
            .account_count()
            .map_err(|e| HealthError::Store(e.to_string()))?;
        // OTA-5 "ports bound, web UI answering".
        listeners(h).await
    })
    .await
    .map_err(|_| timeout())??;
    // Issue 7: "a loopback SMTP-to-IMAP delivery works".
    round_trip(h, deadline)
        .await
        .map_err(|e| e.unwrap_or_else(timeout))
}

async fn listeners(h: Handles<'_>) -> Result<(), HealthError> {
    let l = &h.config.listen;
    for (service, addrs) in [
        ("SMTP", &l.smtp),
        ("submission", &l.submission),
        ("submission (TLS)", &l.submissions),
        ("IMAP", &l.imap),
        ("IMAP (TLS)", &l.imaps),
        ("HTTPS", &l.https),
        ("HTTP", &l.http),
    ] {
        for addr in addrs {
            let target = loopback(*addr);
            let ok = matches!(
                tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await,
                Ok(Ok(_))
            );
            if !ok {
                return Err(HealthError::Listener {
                    service,
                    addr: *addr,
                });
            }
        }
    }
    Ok(())
}

/// A wildcard listener address is probed on the loopback address of its family.
fn loopback(mut a: SocketAddr) -> SocketAddr {
    if a.ip().is_unspecified() {
        a.set_ip(match a.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    a
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The delivery, bounded by `deadline`; the test account is removed afterwards even when
/// the deadline cut the delivery short (the removal has [`CLEANUP_TIMEOUT`] of its own).
/// `Err(None)`: the deadline passed.
async fn round_trip(
    h: Handles<'_>,
    deadline: tokio::time::Instant,
) -> Result<(), Option<HealthError>> {
    let domain = h.config.address_domain();
    let address = format!(
        "healthcheck-{}@{}",
        random_hex(4),
        domain.to_ascii_lowercase()
    );
    let password = random_hex(16);
    let pw = password.clone();
    let hash = tokio::task::spawn_blocking(move || crate::auth::hash_password(&pw))
        .await
        .map_err(|e| HealthError::Store(format!("password hash: {e}")))?;
    h.store
        .create_account(&address, &hash, h.clock.unix_now())
        .await
        .map_err(|e| HealthError::Store(format!("cannot create the test account: {e}")))?;
    let result =
        tokio::time::timeout_at(deadline, deliver_and_read(h, &address, &password, &domain)).await;
    // Always remove the test account, also after a failure or the deadline.
    h.auth.forget(&address);
    let removed = tokio::time::timeout(CLEANUP_TIMEOUT, h.store.delete_account(&address)).await;
    result.map_err(|_| None)??;
    match removed {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Some(HealthError::Store(format!(
            "cannot delete the test account: {e}"
        )))),
        Err(_) => Err(Some(HealthError::Store(
            "cannot delete the test account: no answer from the store".into(),
        ))),
    }
}

async fn deliver_and_read(
    h: Handles<'_>,
    address: &str,
    password: &str,
    domain: &str,
) -> Result<(), HealthError> {
    let message_id = format!("<health-{}@{}>", random_hex(8), domain);
    let msg = test_message(address, &message_id);
    let tls = pinned_connector(h)?;
    match h.config.listen.submissions.first() {
        Some(addr) => smtp_submit(&tls, loopback(*addr), address, password, &msg).await?,
        None => {
            let to = vec![address.to_string()];
            let reply = crate::delivery::submission(
                &h.delivery,
                address.to_string(),
                to.clone(),
                Vec::new(),
                &to,
                msg,
            )
            .await;
            if reply.code != 250 {
                return Err(HealthError::Smtp(format!("refused with {}", reply.code)));
            }
        }
    }
    match h.config.listen.imaps.first() {
        Some(addr) => imap_fetch(&tls, loopback(*addr), address, password, &message_id).await,
        None => read_from_store(h, address, &message_id),
    }
}

/// A structurally valid PGP/MIME message (GATE-1..8: multipart/encrypted with the version
/// part and an armored PKESK + SEIPD payload). Not decryptable; nobody reads it.
fn test_message(address: &str, message_id: &str) -> Vec<u8> {
    let mut packets = vec![0xC1, 0x03, 0x03, 0x00, 0x00];
    packets.extend([0xD2, 0x05, 0x01, 0xAA, 0xBB, 0xCC, 0xDD]);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&packets);
    format!(
        "From: <{address}>\r\nTo: <{address}>\r\nSubject: [...]\r\nMessage-ID: {message_id}\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"relaybox-health\"\r\n\r\n\
         --relaybox-health\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n\
         --relaybox-health\r\nContent-Type: application/octet-stream\r\n\r\n\
         -----BEGIN PGP MESSAGE-----\r\n\r\n{b64}\r\n=AAAA\r\n-----END PGP MESSAGE-----\r\n\r\n\
         --relaybox-health--\r\n"
    )
    .into_bytes()
}

fn read_from_store(h: Handles<'_>, address: &str, message_id: &str) -> Result<(), HealthError> {
    let err = |e: crate::store::StoreError| HealthError::Imap(format!("store: {e}"));
    let (_, metas) = h.store.messages(address, "INBOX").map_err(err)?;
    for m in metas {
        if let Some(body) = h.store.body(address, "INBOX", m.uid).map_err(err)?
            && contains(&body, message_id.as_bytes())
        {
            return Ok(());
        }
    }
    Err(HealthError::Imap(
        "the test message is not in the INBOX".into(),
    ))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Trusts exactly the certificate the relay serves right now (TLS-5: it could be replaced
/// between the two connections; then the check fails and is retried by the agent).
fn pinned_connector(h: Handles<'_>) -> Result<tokio_rustls::TlsConnector, HealthError> {
    let key = h.tls.certs.current();
    let cert = key
        .cert
        .first()
        .cloned()
        .ok_or_else(|| HealthError::Smtp("the relay has no certificate".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| HealthError::Smtp(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(crate::tls::AcceptCertificate::pinned(
            Some(cert.into_owned()),
            provider,
        )))
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

/// A line-based client over one TLS connection.
struct Client<S> {
    io: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    async fn send(&mut self, line: &[u8]) -> std::io::Result<()> {
        let w = self.io.get_mut();
        w.write_all(line).await?;
        w.flush().await
    }

    async fn line(&mut self) -> std::io::Result<String> {
        let mut buf = Vec::new();
        let n = (&mut self.io)
            .take(MAX_LINE)
            .read_until(b'\n', &mut buf)
            .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// An SMTP reply (RFC 5321 §4.2.1: `NNN-` continues, `NNN ` ends): its code.
    async fn smtp_reply(&mut self) -> std::io::Result<(u16, String)> {
        for _ in 0..MAX_LINES {
            let l = self.line().await?;
            let code = l.get(..3).and_then(|c| c.parse::<u16>().ok());
            match (code, l.as_bytes().get(3)) {
                (Some(c), Some(b'-')) if c > 0 => continue,
                (Some(c), _) => return Ok((c, l.trim_end().to_string())),
                (None, _) => return Err(std::io::ErrorKind::InvalidData.into()),
            }
        }
        Err(std::io::ErrorKind::InvalidData.into())
    }

    /// Lines up to the IMAP tagged response of `tag` (RFC 9051 §7.1): all of them, and
    /// whether it was OK.
    async fn imap_tagged(&mut self, tag: &str) -> std::io::Result<(String, bool)> {
        let mut all = String::new();
        let prefix = format!("{tag} ");
        for _ in 0..MAX_LINES {
            let l = self.line().await?;
            all.push_str(&l);
            if let Some(rest) = l.strip_prefix(&prefix) {
                return Ok((all, rest.starts_with("OK")));
            }
        }
        Err(std::io::ErrorKind::InvalidData.into())
    }
}

async fn connect_tls(
    tls: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> std::io::Result<Client<tokio_rustls::client::TlsStream<TcpStream>>> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let name = ServerName::IpAddress(addr.ip().into());
    let stream = tls.connect(name, tcp).await?;
    Ok(Client {
        io: BufReader::new(stream),
    })
}

/// SUB-1..3: submission over implicit TLS with AUTH PLAIN (RFC 4954, RFC 4616).
async fn smtp_submit(
    tls: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    address: &str,
    password: &str,
    msg: &[u8],
) -> Result<(), HealthError> {
    let io = |e: std::io::Error| HealthError::Smtp(format!("{addr}: {e}"));
    let mut c = connect_tls(tls, addr).await.map_err(io)?;
    let plain = base64::engine::general_purpose::STANDARD
        .encode(format!("\0{address}\0{password}").as_bytes());
    let mut data = Vec::with_capacity(msg.len() + 8);
    // RFC 5321 §4.5.2: dot-stuffing, then the end-of-data line.
    for line in msg.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            data.push(b'.');
        }
        data.extend_from_slice(line);
    }
    data.extend_from_slice(b".\r\n");
    let steps: [(Option<Vec<u8>>, u16, &str); 7] = [
        (None, 220, "greeting"),
        (Some(b"EHLO localhost\r\n".to_vec()), 250, "EHLO"),
        (
            Some(format!("AUTH PLAIN {plain}\r\n").into_bytes()),
            235,
            "AUTH",
        ),
        (
            Some(format!("MAIL FROM:<{address}>\r\n").into_bytes()),
            250,
            "MAIL FROM",
        ),
        (
            Some(format!("RCPT TO:<{address}>\r\n").into_bytes()),
            250,
            "RCPT TO",
        ),
        (Some(b"DATA\r\n".to_vec()), 354, "DATA"),
        (Some(data), 250, "end of data"),
    ];
    for (send, want, what) in steps {
        if let Some(bytes) = send {
            c.send(&bytes).await.map_err(io)?;
        }
        let (code, text) = c.smtp_reply().await.map_err(io)?;
        if code != want {
            return Err(HealthError::Smtp(format!("{what}: {text}")));
        }
    }
    let _ = c.send(b"QUIT\r\n").await;
    Ok(())
}

/// IMAP4rev2 (RFC 9051): LOGIN, SELECT INBOX, UID FETCH of the Message-ID header.
async fn imap_fetch(
    tls: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    address: &str,
    password: &str,
    message_id: &str,
) -> Result<(), HealthError> {
    let io = |e: std::io::Error| HealthError::Imap(format!("{addr}: {e}"));
    let mut c = connect_tls(tls, addr).await.map_err(io)?;
    let greeting = c.line().await.map_err(io)?;
    if !greeting.starts_with("* OK") {
        return Err(HealthError::Imap(format!(
            "greeting {}",
            greeting.trim_end()
        )));
    }
    // Address and password are [a-z0-9@.-] and hex: plain quoted strings (RFC 9051 §4.3).
    let cmds = [
        (
            "a1",
            format!("a1 LOGIN \"{address}\" \"{password}\"\r\n"),
            "LOGIN",
        ),
        ("a2", "a2 SELECT INBOX\r\n".to_string(), "SELECT"),
        (
            "a3",
            "a3 UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])\r\n".to_string(),
            "FETCH",
        ),
    ];
    let mut fetched = String::new();
    for (tag, cmd, what) in cmds {
        c.send(cmd.as_bytes()).await.map_err(io)?;
        let (text, ok) = c.imap_tagged(tag).await.map_err(io)?;
        if !ok {
            let last = text.lines().last().unwrap_or("").to_string();
            return Err(HealthError::Imap(format!("{what}: {last}")));
        }
        fetched = text;
    }
    let _ = c.send(b"a4 LOGOUT\r\n").await;
    if fetched.contains(message_id) {
        Ok(())
    } else {
        Err(HealthError::Imap(
            "the test message is not in the INBOX".into(),
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::server::Relay;

    /// A relay on `dir` with every listener on a free loopback port, served in the
    /// background. The ports are found by binding port 0 and releasing it.
    pub(crate) async fn running_relay(
        dir: &std::path::Path,
    ) -> (Arc<Relay>, tokio::task::JoinHandle<()>) {
        // Another test may take a released port before the relay binds it: a few tries,
        // each in its own directory (the store stays locked until the relay is gone).
        for attempt in 0..5 {
            let mut cfg = crate::testing::config(&dir.join(format!("try{attempt}")), "example.org");
            let held: Vec<std::net::TcpListener> = (0..7)
                .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
                .collect();
            let mut addrs = held.iter().map(|l| vec![l.local_addr().unwrap()]);
            let mut next = || addrs.next().unwrap();
            cfg.listen.smtp = next();
            cfg.listen.submission = next();
            cfg.listen.submissions = next();
            cfg.listen.imap = next();
            cfg.listen.imaps = next();
            cfg.listen.https = next();
            cfg.listen.http = next();
            drop(held);
            let relay = Relay::open(cfg).unwrap();
            let r = relay.clone();
            let task = tokio::spawn(async move {
                let _ = crate::server::serve(r).await;
            });
            // Bounded wait until the listeners answer.
            for _ in 0..100 {
                if task.is_finished() {
                    break;
                }
                if listeners(relay.update_handles()).await.is_ok() {
                    return (relay, task);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            task.abort();
        }
        panic!("the relay's listeners did not come up");
    }

    #[test]
    fn test_message_passes_the_gate() {
        let m = test_message("healthcheck-1@example.org", "<h@example.org>");
        let parsed = crate::message::Parsed::parse(m).unwrap();
        assert!(crate::policy::gate::is_encrypted(
            parsed.view(),
            crate::policy::gate::Direction::Outgoing
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn healthy_relay_passes_over_sockets_and_leaves_no_account() {
        let dir = tempfile::tempdir().unwrap();
        let (relay, task) = running_relay(dir.path()).await;
        check_within(relay.update_handles(), Duration::from_secs(30))
            .await
            .expect("healthy");
        assert_eq!(
            relay.store.account_count().unwrap(),
            0,
            "test account deleted"
        );
        task.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn missing_message_and_wrong_password_fail() {
        let dir = tempfile::tempdir().unwrap();
        let (relay, task) = running_relay(dir.path()).await;
        let address = "healthcheck-x@example.org";
        let hash = crate::auth::hash_password("secret-password-1");
        relay.store.create_account(address, &hash, 0).await.unwrap();
        let tls = pinned_connector(relay.update_handles()).unwrap();
        let imaps = loopback(relay.config.listen.imaps[0]);
        let err = imap_fetch(&tls, imaps, address, "secret-password-1", "<nothing@x>")
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "test delivery (IMAP): the test message is not in the INBOX"
        );
        let err = imap_fetch(&tls, imaps, address, "wrong-password-1", "<nothing@x>")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("test delivery (IMAP): LOGIN: a1 NO"),
            "{err}"
        );
        // A plain message is refused by the encryption gate (SUB-6..9) at the end of data.
        let subs = loopback(relay.config.listen.submissions[0]);
        let plain = format!("From: <{address}>\r\nTo: <{address}>\r\nSubject: hi\r\n\r\nhello\r\n");
        let err = smtp_submit(&tls, subs, address, "secret-password-1", plain.as_bytes())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("test delivery (SMTP): end of data: 523"),
            "{err}"
        );
        task.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deadline_is_kept_and_the_account_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (relay, task) = running_relay(dir.path()).await;
        let err = check_within(relay.update_handles(), Duration::from_millis(1))
            .await
            .unwrap_err();
        assert!(matches!(err, HealthError::Timeout(_)), "{err}");
        // Past the store and listener part, the delivery is cut short: still cleaned up.
        for ms in [40, 80, 160, 320] {
            let _ = check_within(relay.update_handles(), Duration::from_millis(ms)).await;
            assert_eq!(relay.store.account_count().unwrap(), 0, "{ms} ms");
        }
        task.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_process_fallback_without_tls_listeners() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = crate::testing::config(dir.path(), "example.org");
        cfg.listen = crate::config::Listeners {
            smtp: vec![],
            submission: vec![],
            submissions: vec![],
            imap: vec![],
            imaps: vec![],
            https: vec![],
            http: vec![],
        };
        let relay = Relay::open(cfg).unwrap();
        check_within(relay.update_handles(), Duration::from_secs(30))
            .await
            .expect("store path");
        assert_eq!(relay.store.account_count().unwrap(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dead_listener_fails_with_its_address() {
        let dir = tempfile::tempdir().unwrap();
        let (relay, task) = running_relay(dir.path()).await;
        task.abort();
        // Aborting the serve task closes its listeners (bounded wait).
        let mut last = Ok(());
        for _ in 0..50 {
            last = check_within(relay.update_handles(), Duration::from_secs(10)).await;
            if last.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let err = last.unwrap_err().to_string();
        assert!(err.contains("is not answering on 127.0.0.1:"), "{err}");
    }
}
