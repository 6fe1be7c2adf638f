//! The built-in iroh relay against the real binary (spec/relay.md §21 RT-4, CFG-5): the
//! probes `/ping` and `/generate_204` over HTTPS on the 443 listener, and iroh-relay
//! 0.35's own client (the version Delta Chat core 2.65 links) connecting to
//! `https://<relay>/relay` with both upgrade protocols and relaying packets.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use iroh_base::{RelayUrl, SecretKey};
use iroh_relay::client::{Client, ClientBuilder, ReceivedMessage, SendMessage};
use iroh_relay::dns::DnsResolver;
use iroh_relay::http::Protocol;
use relaybox_blackbox::conn::LineConn;
use relaybox_blackbox::{Relay, http};

/// Bound for one handshake or one delivery.
const STEP: Duration = Duration::from_secs(15);

/// `GET path` over TLS without ALPN (as iroh's client connects), with extra header lines.
async fn get(relay: &Relay, path: &str, extra: &str) -> http::HttpResponse {
    let mut conn = LineConn::connect_tls(relay.https_addr(), &[])
        .await
        .expect("TLS to the 443 listener");
    let head = format!("GET {path} HTTP/1.1\nHost: 127.0.0.1{extra}");
    http::request(&mut conn, &head, b"")
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

async fn client(relay: &Relay, key: &SecretKey, protocol: Protocol) -> Client {
    let url: RelayUrl = format!("https://{}", relay.https_addr())
        .parse()
        .expect("relay url");
    // The URL holds an IP address: no lookup happens; the resolver points at loopback.
    let dns = DnsResolver::with_nameserver("127.0.0.1:53".parse().expect("addr"));
    let builder = ClientBuilder::new(url, key.clone(), dns)
        .protocol(protocol)
        // The relay under test has a self-signed certificate (IP-only mode).
        .insecure_skip_cert_verify(true);
    tokio::time::timeout(STEP, builder.connect())
        .await
        .unwrap_or_else(|_| panic!("{protocol:?} handshake timed out"))
        .unwrap_or_else(|e| panic!("{protocol:?} handshake: {e:#}"))
}

/// Send from `from` to `to` until `to` receives the packet (the receiver's registration
/// at the relay completes asynchronously after its handshake, so the first packets may
/// be dropped by design).
async fn deliver(from: &mut Client, from_key: &SecretKey, to: &mut Client, to_key: &SecretKey) {
    let data = Bytes::from_static(b"webxdc realtime update");
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "packet not relayed within {STEP:?}"
        );
        from.send(SendMessage::SendPacket(to_key.public(), data.clone()))
            .await
            .expect("send a packet");
        let until = tokio::time::Instant::now() + Duration::from_millis(300);
        while let Ok(Some(msg)) = tokio::time::timeout_at(until, to.next()).await {
            if let ReceivedMessage::ReceivedPacket {
                remote_node_id,
                data: got,
            } = msg.expect("receive")
            {
                assert_eq!(remote_node_id, from_key.public(), "sender's node id");
                assert_eq!(got, data, "payload");
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_over_https_rt_4() {
    let relay = Relay::start(&[]).await;

    // iroh-relay's probe handler: 200, empty body, open to any origin.
    let ping = get(&relay, "/ping", "").await;
    assert_eq!(ping.status, 200, "{}", ping.status_line);
    assert_eq!(ping.header("Access-Control-Allow-Origin"), Some("*"));
    assert!(ping.body.is_empty(), "/ping body: {:?}", ping.body_text());

    // Captive-portal check: 204, and the challenge echoed as iroh-relay does.
    let probe = get(
        &relay,
        "/generate_204",
        "\nX-Tailscale-Challenge: relaybox-test.1",
    )
    .await;
    assert_eq!(probe.status, 204, "{}", probe.status_line);
    assert_eq!(
        probe.header("X-Tailscale-Response"),
        Some("response relaybox-test.1")
    );

    // `/relay` without an upgrade is refused by the relay server.
    let plain = get(&relay, "/relay", "").await;
    assert_eq!(plain.status, 400, "{}", plain.status_line);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iroh_clients_exchange_packets_through_relay_rt_4() {
    let relay = Relay::start(&[]).await;
    let (ka, kb) = (
        SecretKey::from_bytes(&[1; 32]),
        SecretKey::from_bytes(&[2; 32]),
    );
    // One client per upgrade protocol: `Upgrade: iroh derp http` and WebSocket.
    let mut a = client(&relay, &ka, Protocol::Relay).await;
    let mut b = client(&relay, &kb, Protocol::Websocket).await;
    deliver(&mut a, &ka, &mut b, &kb).await;
    deliver(&mut b, &kb, &mut a, &ka).await;
    // The connection outlives a packet: a second round trip on the same clients.
    deliver(&mut a, &ka, &mut b, &kb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_iroh_relay_turns_the_builtin_one_off_cfg_5() {
    for line in ["iroh_relay = https://iroh.example.org", "iroh_relay ="] {
        let relay = Relay::start(&[line]).await;
        for path in ["/relay", "/ping", "/generate_204"] {
            let resp = get(&relay, path, "").await;
            assert_eq!(resp.status, 404, "{line}: GET {path}: {}", resp.status_line);
        }
    }
}
