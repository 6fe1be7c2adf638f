//! Metrics (LOG-5): process-wide counters and the optional OpenMetrics endpoint bound to
//! `mtail_address`.
//!
//! CONTRACT (the lead's skeleton; the metrics owner fills it in, keeping these
//! signatures; call sites already use them).

use std::sync::Arc;

use crate::server::Relay;

/// Why a message was refused (label `reason` of `relaybox_rejected_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// The encryption gate (SUB-9, IN-4d).
    Unencrypted,
    /// IN-4e: no or no valid aligned DKIM signature, or a literal mismatch.
    Origin,
    /// QUOTA-2.
    Quota,
    /// SUB-4.
    RateLimit,
    /// Anything else refused after DATA (parse errors, From mismatch, size).
    Policy,
}

/// A message was stored for `local` accounts and/or queued for `remote` domains.
pub fn delivered(local: usize, remote: usize) {
    let _ = (local, remote);
}

/// A message was refused.
pub fn rejected(reason: Rejection) {
    let _ = reason;
}

/// An outbound attempt ended: accepted by the peer, temporary or permanent failure.
pub fn outbound(accepted: usize, temporary: usize, permanent: usize) {
    let _ = (accepted, temporary, permanent);
}

/// A connection to `service` (the listener's name: smtp, submission, imap, https, …)
/// was accepted; the guard counts it as open until dropped.
pub fn connection(service: &'static str) -> ConnectionGuard {
    ConnectionGuard { _service: service }
}

pub struct ConnectionGuard {
    _service: &'static str,
}

/// Serve the OpenMetrics endpoint on `mtail_address` when it is set; returns at once
/// when it is not.
pub async fn serve(relay: Arc<Relay>) {
    let _ = relay;
}
