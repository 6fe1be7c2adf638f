//! The appliance: setup state (claim, admin password, domain), the pages' backend
//! ([`relaybox_webui::Backend`]), LED and button, mDNS, factory reset.
