//! HTTP(S) of the relay: `/new`, autoconfig, `robots.txt`, and the port-80 redirect.
//! (being written)

use std::net::SocketAddr;
use std::sync::Arc;

use crate::net::Conn;
use crate::server::Relay;

/// Serve HTTPS requests on an established TLS connection (443).
pub async fn serve_https(relay: Arc<Relay>, conn: Conn, peer: SocketAddr) {
    let _ = (relay, conn, peer);
}

/// Serve plain HTTP (80): redirects to HTTPS (PORT-4).
pub async fn serve_http(relay: Arc<Relay>, conn: Conn, peer: SocketAddr) {
    let _ = (relay, conn, peer);
}
