//! The appliance: setup state (claim, admin password, domain), the pages' backend
//! ([`relaybox_webui::Backend`]), LED and button, mDNS, factory reset.

pub mod button;
pub mod configfile;
pub mod dnscheck;
pub mod hw;
pub mod led;
pub mod mdns;
pub mod ports;
pub mod reset;
pub mod state;
pub mod stats;
