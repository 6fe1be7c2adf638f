//! Relaybox's setup wizard and status pages: an axum router (askama templates; one
//! small script for copy buttons, every page works without it) the daemon mounts under
//! `/admin`. Talks to the daemon only
//! through the [`Backend`] trait.
//!
//! Modules: [`router`] (routes, LAN and `Host:` gate, security headers, the per-request
//! visitor), [`host`] (which `Host:` values name the box),
//! `session` (signed cookies, CSRF tokens), [`limiter`] (password and code guessing
//! slowdown, also used by the daemon's logins), `access` (claim, password, login), `wizard` (setup steps), `front` (the front server page, issue 20), `status`
//! (status page), `accounts` (the accounts page), `signup` (sign-up mode and invites), `queue`
//! (the outgoing queue by domain: retry now, give up), `backups` (automatic backups), `update`
//! (update now, bundle upload), `restore` (restore from a backup in the wizard, download a
//! backup now), `charts` (inline SVG bar
//! charts), `view` (shared layout and formatting).

mod access;
mod accounts;
mod backend;
mod backups;
mod charts;
mod front;
pub mod host;
pub mod limiter;
mod queue;
mod restore;
mod router;
mod session;
mod signup;
mod status;
mod update;
mod view;
mod wizard;

#[cfg(test)]
mod tests;

pub use router::router;

pub use backend::*;

use std::net::{IpAddr, SocketAddr};

/// Request extension the daemon inserts into every request it hands to [`router`]:
/// the client's address and whether the connection is HTTPS.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub addr: SocketAddr,
    pub https: bool,
}

/// Loopback, RFC 1918, link-local, CGNAT-free private ranges and IPv6 ULA/link-local:
/// the addresses admin pages answer by default.
pub fn is_lan(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unique_local() || v6.is_unicast_link_local(),
    }
}
