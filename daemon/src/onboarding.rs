//! Onboarding links: the `dclogin:` URL (NEW-3) and the dev-mode banner with a terminal
//! QR code. (being written)

use crate::server::Relay;

/// Print how to connect a Delta Chat app to a dev relay.
pub fn print_dev_banner(relay: &Relay) {
    let _ = relay;
}
