//! TURN (RT-1..3): the UDP 3478 server for Delta Chat calls and the time-limited
//! credentials served through the `turn` METADATA key.
//!
//! CONTRACT (the lead's skeleton; the TURN owner fills it in).

use std::sync::Arc;

use crate::server::Relay;

/// Run the TURN server on `config.turn_listen` until the process ends; returns at once
/// when the list is empty.
pub async fn run(relay: Arc<Relay>) {
    let _ = relay;
}
