//! SMTP server sessions: submission (587 with STARTTLS, 465 with implicit TLS; spec
//! relay.md §6) and the minimal MX side of port 25 (§9 IN-1..IN-4, IN-7).
//!
//! - `wire`: bounded line reader, DATA reader (dot-unstuffing, size limit), PIPELINING
//!   reply batching, STARTTLS upgrade;
//! - `command`: command lines → commands via `smtp-proto`;
//! - `session`: the state machine and the rules, ending in one durable delivery;
//! - `reply`: the exact reply lines (§10).

pub(crate) mod command;
mod reply;
mod session;
pub(crate) mod wire;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::Instrument;

use crate::auth::Auth;
use crate::clock::Clock;
use crate::config::Config;
use crate::memory::Budget;
use crate::net::Conn;
use crate::policy::ratelimit::RateLimiter;
use crate::tls::Tls;

pub use session::Limits;

/// Which rules a session applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Authenticated submission (587, 465, 443 ALPN `smtp`).
    Submission,
    /// Mail from other MTAs (25).
    Mx,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Submission => "submission",
            Mode::Mx => "mx",
        }
    }
}

/// Numbers connections in the logs; the client address is never logged (LOG-2).
static CONNECTIONS: AtomicU64 = AtomicU64::new(1);

/// What SMTP sessions use of the relay, lent by the assembly (`crate::server`) for
/// each connection.
#[derive(Clone, Copy)]
pub struct Handles<'a> {
    pub config: &'a Config,
    pub clock: &'a dyn Clock,
    /// AUTH PLAIN, with the login brake.
    pub auth: &'a Auth,
    /// STARTTLS (TLS-2: submission TLS 1.3, port 25 TLS 1.2).
    pub tls: &'a Tls,
    /// Memory for messages in transit (`max_message_memory`).
    pub memory: &'a Budget,
    /// SUB-4: messages per sender.
    pub send_limiter: &'a RateLimiter<String>,
    /// The recipient checks and the commit (`crate::delivery`).
    pub delivery: crate::delivery::Handles<'a>,
}

/// Run one SMTP session on `conn` (plain for 587/25 until STARTTLS; already TLS for 465).
pub async fn serve(h: Handles<'_>, conn: Conn, peer: SocketAddr, mode: Mode) {
    let limits = Limits::from_config(&h.config.connections);
    serve_with(h, conn, peer, mode, limits).await
}

/// [`serve`] with explicit limits (tests shorten the timeouts).
pub async fn serve_with(h: Handles<'_>, conn: Conn, peer: SocketAddr, mode: Mode, limits: Limits) {
    let id = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("smtp", conn = id, mode = mode.name());
    session::run(h, conn, peer, mode, limits)
        .instrument(span)
        .await
}
