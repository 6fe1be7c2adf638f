//! TURN (RT-1..3): the UDP 3478 server for Delta Chat calls and the time-limited
//! credentials served through the `turn` METADATA key.
//!
//! # Crate choice
//!
//! The protocol (RFC 5766 Allocate/Refresh/CreatePermission/ChannelBind, Send and Data
//! indications, RFC 5389 long-term credentials with MESSAGE-INTEGRITY) comes from
//! webrtc-rs's `turn` crate (0.17, MIT OR Apache-2.0):
//! - it is maintained (part of the webrtc-rs workspace, releases in step with it) and is
//!   what upstream chatmail's own TURN server (`chatmail-turn`) is built on, so Delta
//!   Chat sees the same server behaviour as on an upstream relay;
//! - its HMAC comes from `ring` (no aws-lc, spec/crates.md §1) and it builds on rustc 1.95;
//! - it is small: beside the crates Relaybox already has (its `url`/`idna` come in
//!   with hickory-resolver too) it adds 13 (stun, webrtc-util, crc, an older nix and
//!   thiserror, futures…), 23 s of compile time summed over those units in a cold
//!   debug build (measured with `cargo build --timings`).
//!
//! `turn-server` (turn-rs) was not chosen: it is a whole server application with its
//! own configuration, HTTP API and many more dependencies.
//!
//! What Relaybox adds around the crate:
//! - RT-2 REST credentials from a random per-installation secret kept in the store
//!   ([`password`], [`credentials`], the auth handler checking expiry with the injected
//!   clock);
//! - RT-1 listeners: a wildcard `turn_listen` address is expanded to every
//!   non-loopback, non-link-local interface address, so every allocation's relayed
//!   address is the address the client reached (the crate answers with one fixed relay
//!   IP per listener); relay ports are taken from 49152–65535;
//! - a peer filter: relayed datagrams never go to (or come from) loopback, link-local
//!   (cloud metadata services live at 169.254.169.254), unspecified, multicast or
//!   broadcast addresses, so credentials that every account gets cannot be used to
//!   reach services on the relay host itself. Private ranges stay allowed: a relay on a
//!   home network must relay between LAN devices. A listener that is itself on
//!   loopback (tests) may relay to loopback peers;
//! - a bound on relayed sockets open at once ([`MAX_RELAYED_SOCKETS`]).
//!
//! Known difference from RFC 5389 §10.2.2: the crate answers wrong or expired
//! credentials with 400 (Bad Request), not 401; clients fail the allocation either
//! way (upstream chatmail-turn behaves the same).
//!
//! TURN usernames are expiry times, shared by every account that fetched credentials
//! in the same second: nothing here ties a client address to an account.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use async_trait::async_trait;
use base64::Engine;
use ring::hmac;
use tokio::net::UdpSocket;
use turn::auth::{AuthHandler, generate_auth_key};
use turn::relay::RelayAddressGenerator;
use turn::server::Server;
use turn::server::config::{ConnConfig, ServerConfig};
use webrtc_util::Conn;

use crate::clock::Clock;
use crate::config::Config;
use crate::store::Store;

/// RT-1: the standard TURN port.
pub const STANDARD_PORT: u16 = 3478;
/// RT-1: ports of relayed transport addresses.
pub const RELAY_PORTS: RangeInclusive<u16> = 49152..=65535;
/// RT-2: credentials are valid for 5 days from when they are handed out.
pub const CREDENTIAL_LIFETIME: u64 = 5 * 24 * 3600;
/// Name of the per-installation secret in the store (RT-2).
pub const SECRET_NAME: &str = "turn";
/// How many random relay ports an allocation tries before giving up (486/508 to the
/// client).
const PORT_TRIES: usize = 32;
/// Relayed sockets open at once, over all listeners: every account can get
/// credentials, so without a bound one client could use up the relay ports and the
/// process's file descriptors (which IMAP and SMTP need too). Over it the client gets
/// 508 (Insufficient Capacity, RFC 5766 §6.2).
pub const MAX_RELAYED_SOCKETS: usize = 2000;

/// RT-2: the password of a REST username: base64(HMAC-SHA1(secret, username)).
pub fn password(secret: &[u8], username: &str) -> String {
    // RT-2: HMAC-SHA1 is what the REST convention (and core's peers) use.
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    base64::engine::general_purpose::STANDARD.encode(hmac::sign(&key, username.as_bytes()))
}

/// RT-2: fresh credentials at `now`: the username is the decimal Unix time of expiry.
pub fn credentials(secret: &[u8], now: u64) -> (String, String) {
    let username = now.saturating_add(CREDENTIAL_LIFETIME).to_string();
    let password = password(secret, &username);
    (username, password)
}

/// RT-2: the long-term key (RFC 5389 §15.4: MD5(username:realm:password)) for a
/// username still valid at `now`; `None` for an expired or malformed username or a
/// foreign realm.
pub fn long_term_key(
    secret: &[u8],
    our_realm: &str,
    username: &str,
    realm: &str,
    now: u64,
) -> Option<Vec<u8>> {
    if realm != our_realm || username.is_empty() || !username.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let expiry: u64 = username.parse().ok()?;
    if expiry <= now {
        return None;
    }
    Some(generate_auth_key(
        username,
        realm,
        &password(secret, username),
    ))
}

/// Checks REST credentials for the crate (RT-2).
struct RestAuth {
    secret: Arc<[u8]>,
    realm: String,
    clock: Arc<dyn Clock>,
}

impl AuthHandler for RestAuth {
    fn auth_handle(
        &self,
        username: &str,
        realm: &str,
        _src_addr: SocketAddr,
    ) -> Result<Vec<u8>, turn::Error> {
        long_term_key(
            &self.secret,
            &self.realm,
            username,
            realm,
            self.clock.unix_now(),
        )
        .ok_or(turn::Error::ErrNoSuchUser)
    }
}

/// The host part of the METADATA value: core splits the value at the first `:`, so an
/// IPv4 address goes in without brackets (spec §22.5); an IPv6 literal cannot be
/// expressed (IP-only mode is IPv4 only, `config`).
fn metadata_host(config: &Config) -> Option<&str> {
    let host = config.mail_domain.trim();
    (!host.is_empty() && !host.contains(':')).then_some(host)
}

/// What TURN uses of the relay: the assembly (`crate::server`) lends these to the server
/// task and to the IMAP METADATA entry.
#[derive(Clone, Copy)]
pub struct Handles<'a> {
    pub config: &'a Config,
    /// Keeps the per-installation secret (RT-2).
    pub store: &'a Store,
    pub clock: &'a Arc<dyn Clock>,
    pub status: &'a Status,
}

/// Whether the TURN server runs, and on which port clients reach it (3478, or the
/// configured one; tests use a free port). Kept in the shared relay context.
#[derive(Debug, Default)]
pub struct Status {
    /// 0 while the server is not running.
    port: AtomicU16,
}

impl Status {
    /// The port TURN answers on, `None` while it is not running.
    pub fn port(&self) -> Option<u16> {
        Some(self.port.load(Ordering::SeqCst)).filter(|p| *p != 0)
    }
}

/// Marks the server running for as long as it lives (the task is aborted at shutdown).
struct Running<'a>(&'a Status);

impl<'a> Running<'a> {
    fn new(status: &'a Status, port: u16) -> Running<'a> {
        status.port.store(port, Ordering::SeqCst);
        Running(status)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.port.store(0, Ordering::SeqCst);
    }
}

/// §12 / RT-2: the value of `/shared/vendor/deltachat/turn`,
/// `<host>:<port>:<username>:<password>` with credentials valid for 5 days from now;
/// `None` (NIL, RT-3: core then uses its built-in ICE servers) when TURN is disabled or
/// not running.
pub fn metadata_value(h: Handles<'_>) -> Option<String> {
    let port = h.status.port.load(Ordering::SeqCst);
    if h.config.turn_listen.is_empty() || port == 0 {
        return None;
    }
    let host = metadata_host(h.config)?;
    let secret = match installation_secret(h.store) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("turn: cannot read the TURN secret: {e}");
            return None;
        }
    };
    let (username, password) = credentials(&secret, h.clock.unix_now());
    Some(format!("{host}:{port}:{username}:{password}"))
}

/// RT-2: random per installation, never a hard-coded secret; made on first use and kept
/// in the store.
fn installation_secret(store: &Store) -> Result<Vec<u8>, crate::store::StoreError> {
    store.secret(SECRET_NAME, || rand::random::<[u8; 32]>().to_vec())
}

/// RT-1: may a wildcard listener be expanded to this interface address?
fn serves_turn(ip: IpAddr) -> bool {
    !ip.is_loopback() && !ip.is_unspecified() && !ip.is_multicast() && !is_link_local(ip)
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// The concrete addresses to listen on: explicit ones as given, wildcards expanded
/// to the interface addresses of their family (`[::]` serves IPv4 too, PORT-1). Also
/// the setup wizard's addresses on the console (`crate::appliance::setup_urls`).
pub(crate) fn listen_addresses(
    configured: &[SocketAddr],
    interfaces: &[IpAddr],
) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for addr in configured {
        let expanded: Vec<SocketAddr> = if addr.ip().is_unspecified() {
            interfaces
                .iter()
                .filter(|ip| serves_turn(**ip) && (addr.is_ipv6() || ip.is_ipv4()))
                .map(|ip| SocketAddr::new(*ip, addr.port()))
                .collect()
        } else {
            vec![*addr]
        };
        for a in expanded {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

/// This host's interface addresses (all of them; [`listen_addresses`] picks).
pub(crate) fn interface_addresses() -> Vec<IpAddr> {
    match webrtc_util::ifaces::ifaces() {
        Ok(list) => list
            .into_iter()
            .filter_map(|i| i.addr.map(|a| a.ip()))
            .collect(),
        Err(e) => {
            tracing::warn!("turn: cannot list interface addresses: {e}");
            Vec::new()
        }
    }
}

/// May relayed datagrams go to / come from `ip`? (See the module doc.)
fn peer_allowed(ip: IpAddr, allow_loopback: bool) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    if ip.is_loopback() {
        return allow_loopback;
    }
    let v4_special = match ip {
        IpAddr::V4(v4) => v4.is_broadcast() || v4.octets()[0] == 0,
        IpAddr::V6(_) => false,
    };
    !(ip.is_unspecified() || ip.is_multicast() || is_link_local(ip) || v4_special)
}

/// A relay socket that drops traffic to and from forbidden peers.
struct FilteredRelay {
    socket: UdpSocket,
    allow_loopback: bool,
    /// One of `MAX_RELAYED_SOCKETS`, given back when the allocation drops the socket.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

fn refused() -> webrtc_util::Error {
    webrtc_util::Error::Other("peer address not allowed".to_string())
}

#[async_trait]
impl Conn for FilteredRelay {
    async fn connect(&self, addr: SocketAddr) -> Result<(), webrtc_util::Error> {
        if !peer_allowed(addr.ip(), self.allow_loopback) {
            return Err(refused());
        }
        Ok(self.socket.connect(addr).await?)
    }

    async fn recv(&self, buf: &mut [u8]) -> Result<usize, webrtc_util::Error> {
        Ok(self.socket.recv(buf).await?)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr), webrtc_util::Error> {
        loop {
            let (n, from) = self.socket.recv_from(buf).await?;
            if peer_allowed(from.ip(), self.allow_loopback) {
                return Ok((n, from));
            }
        }
    }

    async fn send(&self, buf: &[u8]) -> Result<usize, webrtc_util::Error> {
        Ok(self.socket.send(buf).await?)
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> Result<usize, webrtc_util::Error> {
        if !peer_allowed(target.ip(), self.allow_loopback) {
            return Err(refused());
        }
        Ok(self.socket.send_to(buf, target).await?)
    }

    fn local_addr(&self) -> Result<SocketAddr, webrtc_util::Error> {
        Ok(self.socket.local_addr()?)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        self.socket.peer_addr().ok()
    }

    async fn close(&self) -> Result<(), webrtc_util::Error> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// RT-1: relayed addresses for one listener: on the listener's own address for its
/// family, on another TURN address for the other family (RFC 6156) if there is one.
struct RelayPorts {
    v4: Option<IpAddr>,
    v6: Option<IpAddr>,
    allow_loopback: bool,
    /// Shared by every listener.
    slots: Arc<tokio::sync::Semaphore>,
}

#[async_trait]
impl RelayAddressGenerator for RelayPorts {
    fn validate(&self) -> Result<(), turn::Error> {
        Ok(())
    }

    async fn allocate_conn(
        &self,
        use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), turn::Error> {
        let ip = if use_ipv4 { self.v4 } else { self.v6 }
            .ok_or_else(|| turn::Error::Other("address family not served".to_string()))?;
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| turn::Error::Other("too many relayed sockets".to_string()))?;
        let ports: Vec<u16> = if requested_port != 0 {
            vec![requested_port]
        } else {
            (0..PORT_TRIES)
                .map(|_| rand::random_range(RELAY_PORTS))
                .collect()
        };
        for port in ports {
            if !RELAY_PORTS.contains(&port) {
                continue;
            }
            if let Ok(socket) = UdpSocket::bind(SocketAddr::new(ip, port)).await {
                let addr = socket.local_addr()?;
                let conn = FilteredRelay {
                    socket,
                    allow_loopback: self.allow_loopback,
                    _slot: slot,
                };
                return Ok((Arc::new(conn), addr));
            }
        }
        Err(turn::Error::ErrMaxRetriesExceeded)
    }
}

/// Run the TURN server on `config.turn_listen` until the process ends; returns at once
/// when the list is empty.
pub async fn run(h: Handles<'_>) {
    let config = h.config;
    if config.turn_listen.is_empty() {
        return;
    }
    let secret: Arc<[u8]> = match installation_secret(h.store) {
        Ok(s) => s.into(),
        Err(e) => {
            tracing::error!("turn: cannot read or create the TURN secret: {e}; TURN is off");
            return;
        }
    };
    let needs_interfaces = config.turn_listen.iter().any(|a| a.ip().is_unspecified());
    let interfaces = if needs_interfaces {
        interface_addresses()
    } else {
        Vec::new()
    };
    let addrs = listen_addresses(&config.turn_listen, &interfaces);
    let first_of = |v4: bool| addrs.iter().map(|a| a.ip()).find(|ip| ip.is_ipv4() == v4);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_RELAYED_SOCKETS));
    let mut conn_configs = Vec::new();
    let mut port = None;
    for addr in &addrs {
        let socket = match UdpSocket::bind(addr).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("turn: cannot listen on {addr}: {e}");
                continue;
            }
        };
        tracing::info!("turn listening on {addr}");
        port.get_or_insert(addr.port());
        let own = Some(addr.ip());
        conn_configs.push(ConnConfig {
            conn: Arc::new(socket),
            relay_addr_generator: Box::new(RelayPorts {
                v4: if addr.is_ipv4() { own } else { first_of(true) },
                v6: if addr.is_ipv6() { own } else { first_of(false) },
                allow_loopback: addr.ip().is_loopback(),
                slots: slots.clone(),
            }),
        });
    }
    let Some(port) = port else {
        tracing::error!("turn: no address to listen on; TURN is off");
        return;
    };
    let server = Server::new(ServerConfig {
        conn_configs,
        // RT-1: realm = mail_domain.
        realm: config.mail_domain.clone(),
        auth_handler: Arc::new(RestAuth {
            secret: secret.clone(),
            realm: config.mail_domain.clone(),
            clock: h.clock.clone(),
        }),
        channel_bind_timeout: std::time::Duration::ZERO,
        alloc_close_notify: None,
    })
    .await;
    let server = match server {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("turn: cannot start: {e}");
            return;
        }
    };
    let _running = Running::new(h.status, port);
    // The crate serves from its own tasks; this task keeps the server and the
    // METADATA registration alive until it is aborted at shutdown.
    std::future::pending::<()>().await;
    drop(server);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn rest_password_is_base64_hmac_sha1() {
        // RFC 2202 test case 2: HMAC-SHA1("Jefe", "what do ya want for nothing?").
        let p = password(b"Jefe", "what do ya want for nothing?");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&p)
            .expect("base64");
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
    }

    #[test]
    fn credentials_expire_after_five_days() {
        let now = 1_800_000_000;
        let (user, pass) = credentials(b"secret", now);
        assert_eq!(user, (now + 5 * 86400).to_string());
        assert_eq!(pass, password(b"secret", &user));
        assert_ne!(pass, password(b"other", &user));
    }

    #[test]
    fn long_term_key_checks_expiry_realm_and_shape() {
        let secret = b"s3cret";
        let now = 1_800_000_000;
        let (user, pass) = credentials(secret, now);
        let key = long_term_key(secret, "example.org", &user, "example.org", now);
        assert_eq!(key, Some(generate_auth_key(&user, "example.org", &pass)));
        // Valid until the second of expiry, not at it.
        let expiry: u64 = user.parse().expect("number");
        assert!(long_term_key(secret, "example.org", &user, "example.org", expiry - 1).is_some());
        assert!(long_term_key(secret, "example.org", &user, "example.org", expiry).is_none());
        assert!(long_term_key(secret, "example.org", &user, "other.org", now).is_none());
        assert!(long_term_key(secret, "example.org", "+1900000000", "example.org", now).is_none());
        assert!(long_term_key(secret, "example.org", "user", "example.org", now).is_none());
        assert!(long_term_key(secret, "example.org", "", "example.org", now).is_none());
    }

    #[test]
    fn wildcards_expand_to_usable_interface_addresses() {
        let ifaces: Vec<IpAddr> = vec![
            Ipv4Addr::LOCALHOST.into(),
            Ipv4Addr::new(192, 0, 2, 10).into(),
            Ipv4Addr::new(169, 254, 1, 1).into(),
            Ipv6Addr::LOCALHOST.into(),
            "fe80::1".parse().expect("ip"),
            "2001:db8::5".parse().expect("ip"),
        ];
        let v6_any: SocketAddr = "[::]:3478".parse().expect("addr");
        let v4_any: SocketAddr = "0.0.0.0:3478".parse().expect("addr");
        let fixed: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let want_both: Vec<SocketAddr> = vec![
            "192.0.2.10:3478".parse().expect("addr"),
            "[2001:db8::5]:3478".parse().expect("addr"),
        ];
        assert_eq!(listen_addresses(&[v6_any], &ifaces), want_both);
        assert_eq!(
            listen_addresses(&[v4_any], &ifaces),
            want_both[..1].to_vec()
        );
        assert_eq!(listen_addresses(&[v6_any, v4_any], &ifaces), want_both);
        assert_eq!(listen_addresses(&[fixed], &ifaces), vec![fixed]);
    }

    #[test]
    fn peers_on_the_relay_host_are_refused() {
        let ok: [IpAddr; 3] = [
            Ipv4Addr::new(198, 51, 100, 7).into(),
            Ipv4Addr::new(192, 168, 1, 20).into(),
            "2001:db8::1".parse().expect("ip"),
        ];
        for ip in ok {
            assert!(peer_allowed(ip, false), "{ip}");
        }
        let bad: [IpAddr; 9] = [
            Ipv4Addr::LOCALHOST.into(),
            Ipv4Addr::new(127, 1, 2, 3).into(),
            Ipv4Addr::new(169, 254, 169, 254).into(),
            Ipv4Addr::UNSPECIFIED.into(),
            Ipv4Addr::BROADCAST.into(),
            Ipv4Addr::new(224, 0, 0, 1).into(),
            Ipv6Addr::LOCALHOST.into(),
            "::ffff:127.0.0.1".parse().expect("ip"),
            "fe80::1".parse().expect("ip"),
        ];
        for ip in bad {
            assert!(!peer_allowed(ip, false), "{ip}");
        }
        assert!(peer_allowed(Ipv4Addr::LOCALHOST.into(), true));
        assert!(!peer_allowed(
            Ipv4Addr::new(169, 254, 169, 254).into(),
            true
        ));
    }

    /// A clock the test moves.
    struct TestClock(std::sync::atomic::AtomicU64);

    impl Clock for TestClock {
        fn unix_now(&self) -> u64 {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
        fn monotonic(&self) -> std::time::Instant {
            std::time::Instant::now()
        }
    }

    /// Allocate on the server at `port` with the turn crate's client; on success relay
    /// one datagram to a loopback peer and return what the peer received.
    async fn allocate_and_relay(port: u16, user: &str, pass: &str) -> Result<Vec<u8>, String> {
        use turn::client::{Client, ClientConfig};
        let conn = UdpSocket::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let client = Client::new(ClientConfig {
            stun_serv_addr: format!("127.0.0.1:{port}"),
            turn_serv_addr: format!("127.0.0.1:{port}"),
            username: user.to_string(),
            password: pass.to_string(),
            realm: String::new(),
            software: String::new(),
            rto_in_ms: 0,
            conn: Arc::new(conn),
            vnet: None,
        })
        .await
        .map_err(|e| e.to_string())?;
        client.listen().await.map_err(|e| e.to_string())?;
        let result = async {
            let relayed =
                tokio::time::timeout(std::time::Duration::from_secs(10), client.allocate())
                    .await
                    .map_err(|_| "allocate timed out".to_string())?
                    .map_err(|e| e.to_string())?;
            let relay_addr = relayed.local_addr().map_err(|e| e.to_string())?;
            assert_eq!(relay_addr.ip(), IpAddr::from(Ipv4Addr::LOCALHOST));
            assert!(RELAY_PORTS.contains(&relay_addr.port()), "{relay_addr}");
            let peer = UdpSocket::bind("127.0.0.1:0")
                .await
                .map_err(|e| e.to_string())?;
            let peer_addr = peer.local_addr().map_err(|e| e.to_string())?;
            relayed
                .send_to(b"hello peer", peer_addr)
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 64];
            let (n, from) =
                tokio::time::timeout(std::time::Duration::from_secs(10), peer.recv_from(&mut buf))
                    .await
                    .map_err(|_| "peer got nothing".to_string())?
                    .map_err(|e| e.to_string())?;
            assert_eq!(from, relay_addr, "datagram comes from the relayed address");
            let _ = relayed.close().await;
            Ok(buf[..n].to_vec())
        }
        .await;
        let _ = client.close().await;
        result
    }

    #[tokio::test]
    async fn allocations_need_valid_unexpired_credentials() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = crate::testing::config(dir.path(), "127.0.0.1");
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("free udp port")
            .port();
        config.turn_listen = vec![SocketAddr::from((Ipv4Addr::LOCALHOST, port))];
        let now = 1_800_000_000;
        let clock = Arc::new(TestClock(std::sync::atomic::AtomicU64::new(now)));
        let relay = crate::server::Relay::open_with_clock(config, clock.clone()).expect("relay");
        assert_eq!(
            metadata_value(relay.turn_handles()),
            None,
            "not running yet: NIL"
        );
        let task = tokio::spawn({
            let relay = relay.clone();
            async move { run(relay.turn_handles()).await }
        });
        let mut value = None;
        for _ in 0..100 {
            value = metadata_value(relay.turn_handles());
            if value.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let value = value.expect("turn METADATA value once the server runs");
        let parts: Vec<&str> = value.splitn(4, ':').collect();
        assert_eq!(parts.len(), 4, "{value}");
        assert_eq!(parts[0], "127.0.0.1");
        assert_eq!(parts[1], port.to_string());
        assert_eq!(parts[2], (now + CREDENTIAL_LIFETIME).to_string());
        let (user, pass) = (parts[2], parts[3]);
        // RT-2: the password is made from the stored per-installation secret.
        let secret = relay.store.secret(SECRET_NAME, Vec::new).expect("secret");
        assert_eq!(secret.len(), 32);
        assert_eq!(pass, password(&secret, user));

        assert_eq!(
            allocate_and_relay(port, user, pass).await,
            Ok(b"hello peer".to_vec())
        );
        let wrong = password(b"not the secret", user);
        assert!(allocate_and_relay(port, user, &wrong).await.is_err());
        // RT-2: at the second of expiry the same credentials are refused.
        clock.0.store(
            now + CREDENTIAL_LIFETIME,
            std::sync::atomic::Ordering::SeqCst,
        );
        assert!(allocate_and_relay(port, user, pass).await.is_err());

        task.abort();
        let _ = task.await;
        assert_eq!(metadata_value(relay.turn_handles()), None, "stopped: NIL");
    }

    #[tokio::test]
    async fn relayed_sockets_are_bounded() {
        let ports = RelayPorts {
            v4: Some(Ipv4Addr::LOCALHOST.into()),
            v6: None,
            allow_loopback: true,
            slots: Arc::new(tokio::sync::Semaphore::new(2)),
        };
        let (a, addr_a) = ports.allocate_conn(true, 0).await.expect("first");
        let (_b, _) = ports.allocate_conn(true, 0).await.expect("second");
        assert!(RELAY_PORTS.contains(&addr_a.port()), "{addr_a}");
        assert!(
            ports.allocate_conn(true, 0).await.is_err(),
            "over the bound"
        );
        assert!(
            ports.allocate_conn(false, 0).await.is_err(),
            "no IPv6 address"
        );
        drop(a);
        assert!(
            ports.allocate_conn(true, 0).await.is_ok(),
            "slot given back"
        );
    }

    #[test]
    fn metadata_host_forms() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = crate::testing::config(dir.path(), "127.0.0.1");
        assert_eq!(metadata_host(&c), Some("127.0.0.1"));
        c.mail_domain = "example.org".into();
        assert_eq!(metadata_host(&c), Some("example.org"));
        c.mail_domain = "::1".into();
        assert_eq!(metadata_host(&c), None);
    }
}
