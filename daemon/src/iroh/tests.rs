//! The forwarding against iroh-relay's own client: the routes are served with hyper's
//! HTTP/1.1 server and upgrades on a loopback port (as `crate::http` serves them, minus
//! TLS), and real relay clients connect to `http://127.0.0.1:<port>`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use iroh_base::{RelayUrl, SecretKey};
use iroh_relay::client::{Client, ClientBuilder, ReceivedMessage, SendMessage};
use iroh_relay::dns::DnsResolver;
use iroh_relay::http::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

const STEP: Duration = Duration::from_secs(10);

/// Serve the relay routes on a loopback port; the task ends with the test's runtime.
async fn serve() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let relay = Arc::new(IrohRelay::new());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let router: Router = add_routes_with(Router::new(), relay.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router))
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// One raw HTTP/1.1 request with `Connection: close`; the whole answer as text.
async fn raw_get(addr: SocketAddr, path: &str, extra: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: relay.test\r\n{extra}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(STEP, s.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn client(addr: SocketAddr, key: &SecretKey, protocol: Protocol) -> Client {
    let url: RelayUrl = format!("http://{addr}").parse().expect("relay url");
    let dns = DnsResolver::with_nameserver("127.0.0.1:53".parse().expect("addr"));
    let builder = ClientBuilder::new(url, key.clone(), dns).protocol(protocol);
    tokio::time::timeout(STEP, builder.connect())
        .await
        .expect("relay handshake in time")
        .expect("relay handshake")
}

fn key() -> SecretKey {
    SecretKey::from_bytes(&rand::random::<[u8; 32]>())
}

/// Send `data` from `from` to `to_key` until `to` receives it (the receiver's
/// registration at the relay is asynchronous, so the first packets may be dropped).
async fn deliver(from: &mut Client, from_key: &SecretKey, to: &mut Client, to_key: &SecretKey) {
    let data = Bytes::from_static(b"webxdc realtime payload");
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "packet not relayed");
        from.send(SendMessage::SendPacket(to_key.public(), data.clone()))
            .await
            .expect("send");
        let until = tokio::time::Instant::now() + Duration::from_millis(300);
        while let Ok(Some(msg)) = tokio::time::timeout_at(until, to.next()).await {
            if let ReceivedMessage::ReceivedPacket {
                remote_node_id,
                data: got,
            } = msg.expect("receive")
            {
                assert_eq!(remote_node_id, from_key.public(), "sender");
                assert_eq!(got, data, "payload");
                return;
            }
        }
    }
}

#[tokio::test]
async fn ping_answers_like_iroh_relay_rt_4() {
    let addr = serve().await;
    let answer = raw_get(addr, "/ping", "").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(header(&answer, "access-control-allow-origin"), Some("*"));
    assert!(
        header(&answer, "strict-transport-security").is_some(),
        "{answer}"
    );
}

#[tokio::test]
async fn generate_204_answers_the_challenge_rt_4() {
    let addr = serve().await;
    let answer = raw_get(
        addr,
        "/generate_204",
        "X-Tailscale-Challenge: abc-1.2_3\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    assert_eq!(
        header(&answer, "x-tailscale-response"),
        Some("response abc-1.2_3")
    );
    // A challenge with characters outside the allowed set gets no response header.
    let answer = raw_get(addr, "/generate_204", "X-Tailscale-Challenge: a b\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    assert_eq!(header(&answer, "x-tailscale-response"), None);
}

#[tokio::test]
async fn relay_without_upgrade_is_refused() {
    let addr = serve().await;
    let answer = raw_get(addr, "/relay", "").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}

#[tokio::test]
async fn packets_are_relayed_between_relay_and_websocket_clients_rt_4() {
    let addr = serve().await;
    let (ka, kb) = (key(), key());
    let mut a = client(addr, &ka, Protocol::Relay).await;
    let mut b = client(addr, &kb, Protocol::Websocket).await;
    deliver(&mut a, &ka, &mut b, &kb).await;
    deliver(&mut b, &kb, &mut a, &ka).await;
}
