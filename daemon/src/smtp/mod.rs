//! SMTP server sessions: submission (587 STARTTLS, 465 implicit TLS) and, later, MX (25).
//! (being written)

use std::net::SocketAddr;
use std::sync::Arc;

use crate::net::Conn;
use crate::server::Relay;

/// Which rules a session applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Authenticated submission (587, 465, 443 ALPN `smtp`).
    Submission,
    /// Mail from other MTAs (25).
    Mx,
}

/// Run one SMTP session on `conn` (plain for 587/25 until STARTTLS; already TLS for 465).
pub async fn serve(relay: Arc<Relay>, conn: Conn, peer: SocketAddr, mode: Mode) {
    let _ = (relay, conn, peer, mode);
}
