//! Reaching a box behind NAT, CGNAT or a blocked port 25 (issue 20): the front server
//! (`relaybox front`, on any small machine with a public address) and the box's side of
//! the tunnel between them.
//!
//! The box opens the tunnel outwards ([`home`]): one TCP connection to the front's tunnel
//! port, TLS 1.3 with a certificate on both sides, each pinned by the other side's
//! configuration, and a yamux session over it ([`link`]). For every connection the front
//! accepts on one of the relay's public ports ([`server`]) it opens a stream and writes a
//! PROXY protocol v2 header with the client's address and the port it connected to
//! ([`header`]); then both sides copy bytes. The mail and web protocols' TLS ends on the
//! box: the front holds none of the relay's keys and sees only encrypted bytes and client
//! addresses. On the box each stream becomes a loopback connection to an internal listener
//! of the relay, whose accept loop replaces the loopback peer by the client's address
//! ([`Peers`]), so rate limits and the origin rules see the real client.

pub mod header;
pub mod home;
pub mod link;
pub mod outbound;
pub mod pair;
pub mod server;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

/// Bytes buffered per direction of a forwarded connection (Tokio's default is 8 KiB): most
/// connections through a front are idle IMAP sessions, whose memory on the front and on the
/// box is mostly these buffers (tests/bench/results.md "Front server").
const COPY_BUFFER: usize = 4096;

/// Copy bytes both ways between a client's connection and its tunnel stream until either
/// side closes.
async fn copy_both_ways<A, B>(a: &mut A, b: &mut B) -> std::io::Result<(u64, u64)>
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + ?Sized,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + ?Sized,
{
    tokio::io::copy_bidirectional_with_sizes(a, b, COPY_BUFFER, COPY_BUFFER).await
}

/// The relay's standard ports that a front forwards (spec/relay.md §1).
pub const PORTS: [u16; 7] = [25, 587, 465, 143, 993, 443, 80];

/// The client behind each loopback connection the box's side of the tunnel has open to the
/// relay's internal listeners, keyed by that connection's own (source) address. A
/// connection from a source address not in here did not come through the tunnel and is
/// refused: another local program cannot use a port the tunnel holds bound. Also which
/// client addresses are connected through the front right now: such a client is never on
/// the local network, whatever its address looks like (the admin pages' rule).
#[derive(Debug, Default)]
pub struct Peers(Mutex<PeersInner>);

#[derive(Debug, Default)]
struct PeersInner {
    by_source: HashMap<SocketAddr, SocketAddr>,
    /// Connections open per client address.
    clients: HashMap<IpAddr, usize>,
}

impl Peers {
    /// The client of the connection from `source`, if the tunnel made it.
    pub fn client_of(&self, source: SocketAddr) -> Option<SocketAddr> {
        self.lock().by_source.get(&source).copied()
    }

    /// Whether a connection from `ip` came through the front and is open.
    pub fn through_front(&self, ip: IpAddr) -> bool {
        self.lock().clients.contains_key(&ip.to_canonical())
    }

    fn insert(&self, source: SocketAddr, client: SocketAddr) {
        let mut p = self.lock();
        if p.by_source.insert(source, client).is_none() {
            *p.clients.entry(client.ip().to_canonical()).or_default() += 1;
        }
    }

    fn remove(&self, source: SocketAddr) {
        let mut p = self.lock();
        if let Some(client) = p.by_source.remove(&source) {
            let ip = client.ip().to_canonical();
            if let Some(n) = p.clients.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    p.clients.remove(&ip);
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PeersInner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_track_sources_and_clients() {
        let p = Peers::default();
        let (s1, s2) = (
            "127.0.0.1:40001".parse().unwrap(),
            "127.0.0.1:40002".parse().unwrap(),
        );
        let c: SocketAddr = "192.168.1.5:5000".parse().unwrap();
        assert!(!p.through_front(c.ip()));
        p.insert(s1, c);
        p.insert(s2, SocketAddr::new(c.ip(), 5001));
        assert_eq!(p.client_of(s1), Some(c));
        assert!(p.through_front(c.ip()));
        p.remove(s1);
        assert!(p.through_front(c.ip()), "one connection is still open");
        p.remove(s2);
        assert!(!p.through_front(c.ip()));
        assert_eq!(p.client_of(s2), None);
    }
}
