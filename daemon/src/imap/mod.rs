//! IMAP server sessions (143 STARTTLS, 993 implicit TLS).
//! (being written)

use std::net::SocketAddr;
use std::sync::Arc;

use crate::net::Conn;
use crate::server::Relay;

/// Run one IMAP session on `conn` (plain on 143 until STARTTLS; already TLS on 993).
pub async fn serve(relay: Arc<Relay>, conn: Conn, peer: SocketAddr) {
    let _ = (relay, conn, peer);
}
