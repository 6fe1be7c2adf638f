//! IMAP server sessions (spec/relay.md §11, §12, §14 QUOTA-4, §16 LL-1): 143 with
//! STARTTLS, 993 with implicit TLS. IMAP4rev1 plus IDLE, UIDPLUS, MOVE, ID, ENABLE,
//! LITERAL+, NAMESPACE, SPECIAL-USE, QUOTA, METADATA, UNSELECT, SASL-IR.
//!
//! Modules: `wire` frames commands (literals, limits), `session` runs the command loop
//! and its deadlines, `command` holds the commands (one module per group) and routes
//! them, `selected` is the session's view of the selected mailbox, `encode` writes every
//! response. Models the commands read: `fetch` (items and sections), `headers`
//! (ENVELOPE and BODYSTRUCTURE values), `search` (evaluation), `sequence` (sets),
//! `metadata` (METADATA rules). COMPRESS=DEFLATE (`compress`) is offered after login iff
//! `imap_compress = true`.

mod command;
mod compress;
mod encode;
mod fetch;
mod headers;
mod metadata;
mod search;
mod selected;
mod sequence;
mod session;
pub(crate) mod wire;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::Instrument;

use crate::auth::Auth;
use crate::clock::Clock;
use crate::config::Config;
use crate::events::Events;
use crate::memory::Budget;
use crate::net::Conn;
use crate::store::Store;
use crate::tls::Tls;
use session::{Exit, Session};

/// Connection numbers for log spans (no addresses: LOG-2).
static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// The CAPABILITY list (IMAP-1, IMAP-2).
pub fn capabilities(tls: bool, authenticated: bool, offer_compress: bool) -> Vec<&'static str> {
    let mut caps = vec!["IMAP4rev1", "SASL-IR", "ID", "ENABLE", "IDLE", "LITERAL+"];
    if !authenticated {
        if tls {
            caps.push("AUTH=PLAIN");
        } else {
            // RFC 9051 §6.2.1, §6.2.3: no cleartext passwords.
            caps.extend(["STARTTLS", "LOGINDISABLED"]);
        }
    } else {
        caps.extend([
            "NAMESPACE",
            "UIDPLUS",
            "MOVE",
            "UNSELECT",
            "SPECIAL-USE",
            "QUOTA",
            "QUOTA=RES-STORAGE",
            "METADATA",
        ]);
        if offer_compress {
            caps.push("COMPRESS=DEFLATE");
        }
    }
    // IMAP-1: chatmail markers, before and after login.
    caps.extend(["XCHATMAIL", "XDELTAPUSH"]);
    caps
}

/// What IMAP sessions use of the relay, lent by the assembly (`crate::server`) for
/// each connection.
#[derive(Clone, Copy)]
pub struct Handles<'a> {
    pub config: &'a Config,
    pub store: &'a Store,
    pub clock: &'a Arc<dyn Clock>,
    pub events: &'a Events,
    /// LOGIN and AUTHENTICATE, with the login brake.
    pub auth: &'a Auth,
    /// STARTTLS (TLS 1.3 only, TLS-2).
    pub tls: &'a Tls,
    /// Memory for literals in transit (`max_message_memory`).
    pub memory: &'a Budget,
    /// The TURN METADATA entry (§12, RT-2).
    pub turn: crate::turn::Handles<'a>,
    /// Issue 17: a relay that moves serves no mailboxes (logins refused, sessions ended).
    pub moving: &'a crate::moving::Moving,
}

/// Run one IMAP session on `conn` (plain on 143 until STARTTLS; already TLS on 993).
pub async fn serve(h: Handles<'_>, conn: Conn, peer: SocketAddr) {
    // LOG-2: the peer address is not logged, so no log line ties it to an account (the
    // login deadline's refusal is logged outside the session's span, before any login);
    // it only keys the login brake (`crate::auth`).
    let span = tracing::info_span!("imap", conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed));
    async move {
        let tls = conn.is_tls();
        let service = if tls { "imaps" } else { "imap" };
        let mut session = Session::new(h, tls, !tls, peer.ip());
        session.greet();
        let mut conn = conn;
        loop {
            match Box::pin(session.run(&mut conn)).await {
                Exit::Close => break,
                Exit::LoginDeadline => {
                    let reason = crate::admission::Reason::Deadline;
                    crate::admission::refused(service, reason, peer.ip());
                    break;
                }
                Exit::Compress => {
                    let received = session.compress_started();
                    let mut z = compress::Deflate::new(conn, received);
                    // STARTTLS is over by now (login needs TLS): only Close remains.
                    let _ = Box::pin(session.run(&mut z)).await;
                    break;
                }
                Exit::StartTls => {
                    let upgraded = tokio::time::timeout(
                        std::time::Duration::from_secs(30),
                        conn.start_tls(h.tls.tls13.clone()),
                    )
                    .await;
                    match upgraded {
                        Ok(Ok(c)) => {
                            conn = c;
                            session.tls_started();
                        }
                        _ => {
                            tracing::debug!("STARTTLS handshake failed");
                            break;
                        }
                    }
                }
            }
        }
        tracing::debug!("session ended");
    }
    .instrument(span)
    .await
}

/// Run a session on any stream (tests, or a transport that is already secure).
/// STARTTLS is refused here: the stream cannot be upgraded.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(
    h: Handles<'_>,
    mut stream: S,
    is_tls: bool,
) {
    let mut session = Session::new(h, is_tls, false, std::net::Ipv4Addr::LOCALHOST.into());
    session.greet();
    if let Exit::Compress = Box::pin(session.run(&mut stream)).await {
        let received = session.compress_started();
        let mut z = compress::Deflate::new(stream, received);
        let _ = Box::pin(session.run(&mut z)).await;
    }
}
