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
pub mod server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

/// The relay's standard ports that a front forwards (spec/relay.md §1).
pub const PORTS: [u16; 7] = [25, 587, 465, 143, 993, 443, 80];

/// The client behind each loopback connection the box's side of the tunnel has open to the
/// relay's internal listeners, keyed by that connection's own (source) address. A
/// connection from a source address not in here did not come through the tunnel and is
/// refused: another local program cannot use a port the tunnel holds bound.
#[derive(Debug, Default)]
pub struct Peers(Mutex<HashMap<SocketAddr, SocketAddr>>);

impl Peers {
    /// The client of the connection from `source`, if the tunnel made it.
    pub fn client_of(&self, source: SocketAddr) -> Option<SocketAddr> {
        self.lock().get(&source).copied()
    }

    fn insert(&self, source: SocketAddr, client: SocketAddr) {
        self.lock().insert(source, client);
    }

    fn remove(&self, source: SocketAddr) {
        self.lock().remove(&source);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, SocketAddr>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
