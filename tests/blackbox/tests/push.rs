//! Push notifications against the real binary (spec/relay.md §13) with a mock
//! notification proxy: an HTTPS server on loopback whose test CA is given to the relay
//! in `tls_extra_roots`, `push_url` pointing at it. Checks PUSH-1 (push on delivery, not
//! for self-sent mail), PUSH-3/PUSH-7 (the body is the token, nothing else),
//! PUSH-4 (410 deletes the token).

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use relaybox_blackbox::{Account, Imap, Relay, Smtp, create_account, encrypted_mail};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// One request as the mock proxy saw it.
#[derive(Debug)]
struct Seen {
    head: String,
    body: Vec<u8>,
}

struct MockProxy {
    port: u16,
    ca_pem: String,
    status: Arc<AtomicU16>,
    seen: mpsc::UnboundedReceiver<Seen>,
    _task: tokio::task::JoinHandle<()>,
}

impl Drop for MockProxy {
    fn drop(&mut self) {
        self._task.abort();
    }
}

/// Read one HTTP/1.1 request (headers, Content-Length or chunked body).
async fn read_request<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 65536 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let lower = head.to_ascii_lowercase();
    let len: usize = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Some(Seen { head, body })
}

async fn mock_proxy() -> MockProxy {
    // A test CA and a certificate for 127.0.0.1 issued by it.
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "relaybox blackbox test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().expect("ip"))];
    let cert = params.signed_by(&key, &issuer).expect("server cert");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let status = Arc::new(AtomicU16::new(200));
    let (tx, seen) = mpsc::unbounded_channel();
    let st = status.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let st = st.clone();
            tokio::spawn(async move {
                let Ok(Ok(mut tls)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                else {
                    return;
                };
                let Ok(Some(req)) =
                    tokio::time::timeout(Duration::from_secs(10), read_request(&mut tls)).await
                else {
                    return;
                };
                let code = st.load(Ordering::SeqCst);
                let reason = if code == 200 { "OK" } else { "Gone" };
                let _ = tx.send(req);
                let resp = format!(
                    "HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    MockProxy {
        port,
        ca_pem: ca_cert.pem(),
        status,
        seen,
        _task: task,
    }
}

async fn next_push(proxy: &mut MockProxy, within: Duration) -> Option<Seen> {
    tokio::time::timeout(within, proxy.seen.recv())
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_on_delivery_not_for_self_and_410_deletes_token() {
    let mut proxy = mock_proxy().await;
    let ca_file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(ca_file.path(), &proxy.ca_pem).expect("write CA");
    let push_url = format!("push_url = https://127.0.0.1:{}/notify", proxy.port);
    let roots = format!("tls_extra_roots = {}", ca_file.path().display());
    let relay = Relay::start(&[&push_url, &roots]).await;
    let a = Account::random();
    let b = Account::random();
    create_account(&relay, &a).await;
    let token = "openpgp:dGVzdC10b2tlbi0xMjM0NQ==";
    let mut c = Imap::login_tls(&relay, &b).await;
    let r = c
        .cmd(&format!(
            "SETMETADATA INBOX (/private/devicetoken \"{token}\")"
        ))
        .await;
    assert!(r.is_ok(), "{r}");

    // PUSH-1: a delivery from another account pushes; PUSH-3/7: the body is the token.
    let m = encrypted_mail(&a.addr, &[&b.addr]);
    let r = Smtp::submit(&relay, &a, &[&b.addr], &m.bytes).await;
    assert_eq!(r.code, 250, "{r}");
    let push = next_push(&mut proxy, Duration::from_secs(10))
        .await
        .expect("PUSH-1: no push request within 10 s of the delivery");
    assert!(
        push.head.starts_with("POST /notify "),
        "PUSH-3: {}",
        push.head
    );
    assert_eq!(
        push.body,
        token.as_bytes(),
        "PUSH-3: body is the token as stored"
    );
    for secret in [&a.addr, &b.addr, &a.local, &b.local, &m.message_id] {
        assert!(
            !push.head.contains(secret.as_str()),
            "PUSH-7: {secret} in {}",
            push.head
        );
    }

    // PUSH-1: self-sent mail is not pushed.
    let own = encrypted_mail(&b.addr, &[&b.addr]);
    let r = Smtp::submit(&relay, &b, &[&b.addr], &own.bytes).await;
    assert_eq!(r.code, 250, "{r}");
    if let Some(p) = next_push(&mut proxy, Duration::from_secs(2)).await {
        panic!("PUSH-1: self-sent mail was pushed: {p:?}");
    }

    // PUSH-4: 410 → done, and the token is deleted from the account.
    proxy.status.store(410, Ordering::SeqCst);
    let m = encrypted_mail(&a.addr, &[&b.addr]);
    let r = Smtp::submit(&relay, &a, &[&b.addr], &m.bytes).await;
    assert_eq!(r.code, 250, "{r}");
    let push = next_push(&mut proxy, Duration::from_secs(10))
        .await
        .expect("no push request for the second delivery");
    assert_eq!(push.body, token.as_bytes());
    // The relay deletes the token once it has read the 410: ask until it is gone
    // (bounded).
    let gone = vec!["* METADATA INBOX (/private/devicetoken NIL)".to_string()];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.cmd("GETMETADATA INBOX /private/devicetoken").await;
        if r.untagged_text() == gone {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "PUSH-4: token not deleted within 10 s of the 410: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.logout().await;
}

/// PUSH-2: the job is persisted with the delivery and survives `kill -9`; after the
/// restart a pending job is tried again at once (not only at its next retry time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_push_survives_kill9_and_is_retried_at_once() {
    let mut proxy = mock_proxy().await;
    proxy.status.store(500, Ordering::SeqCst);
    let ca_file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(ca_file.path(), &proxy.ca_pem).expect("write CA");
    let push_url = format!("push_url = https://127.0.0.1:{}/notify", proxy.port);
    let roots = format!("tls_extra_roots = {}", ca_file.path().display());
    let mut relay = Relay::start(&[&push_url, &roots]).await;
    let a = Account::random();
    let b = Account::random();
    create_account(&relay, &a).await;
    let token = "openpgp:cGVuZGluZy10b2tlbg==";
    let mut c = Imap::login_tls(&relay, &b).await;
    let r = c
        .cmd(&format!(
            "SETMETADATA INBOX (/private/devicetoken \"{token}\")"
        ))
        .await;
    assert!(r.is_ok(), "{r}");
    c.logout().await;
    let m = encrypted_mail(&a.addr, &[&b.addr]);
    let r = Smtp::submit(&relay, &a, &[&b.addr], &m.bytes).await;
    assert_eq!(r.code, 250, "{r}");
    // The first attempt fails (500); the next one is due 8 s later (PUSH-5).
    let first = next_push(&mut proxy, Duration::from_secs(10))
        .await
        .expect("no first push attempt");
    assert_eq!(first.body, token.as_bytes());
    relay.kill9();
    proxy.status.store(200, Ordering::SeqCst);
    relay.restart().await;
    let again = next_push(&mut proxy, Duration::from_secs(5))
        .await
        .expect("PUSH-2: the pending job was not tried again within 5 s of the restart");
    assert_eq!(again.body, token.as_bytes());
}
