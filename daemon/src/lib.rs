//! Relaybox: a chatmail relay in one daemon.
//!
//! Data flow of a message (DESIGN.md): SMTP session → policy → store (one durable
//! commit) → `250` → events wake IDLE sessions. IMAP sessions read and delete through
//! the store. Nothing takes a second path around the store.

pub mod acme;
pub mod admission;
pub mod alloc;
pub mod appliance;
pub mod appversions;
pub mod auth;
pub mod backup;
pub mod clock;
pub mod config;
pub mod control;
pub mod deadline;
pub mod delivery;
pub mod dkim;
pub mod dns;
pub mod events;
pub mod expire;
pub mod fdlimit;
pub mod files;
pub mod front;
/// Entry points of the fuzz targets (`fuzz/`) and their replay test; not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod hex;
pub mod http;
pub mod imap;
pub mod iroh;
pub mod logs;
pub mod memory;
pub mod message;
pub mod metrics;
pub mod moving;
pub mod mxdeliv;
pub mod net;
pub mod onboarding;
pub mod operator;
pub mod outbound;
pub mod policy;
pub mod private;
pub mod push;
pub mod server;
pub mod signup;
pub mod smtp;
pub mod store;
pub mod tls;
pub mod turn;
pub mod update;
pub mod watchdog;
pub mod web;
pub mod work;
pub mod zone;

#[cfg(test)]
pub(crate) mod testing;
