//! Outbound delivery (spec/relay.md §8): the scheduler over the durable queue in the
//! store — one queue row per destination domain (OUT-1), attempts with bounded
//! concurrency, retries with back-off that survive restarts (OUT-6), bounces for
//! permanent failures and expiry (OUT-7). How one attempt reaches a peer is `transport`.

pub mod bounce;
pub mod https;
pub mod route;
pub mod smtp;
pub mod transport;

pub use transport::{Outcome, Transport, Via};

use std::sync::Arc;

use crate::server::Relay;

/// Run the scheduler until the process ends.
pub async fn run(relay: Arc<Relay>) {
    let _ = relay;
}

/// Tell the scheduler that the queue has new rows.
pub fn wake(relay: &Relay) {
    relay.outbound_wake.notify_one();
}
