//! Finding the box on the LAN (issue #6, item 2): announce `<name>.local` over multicast
//! DNS (RFC 6762) with this host's LAN addresses, plus a DNS-SD `_http._tcp` service
//! "Relaybox setup" (RFC 6763), so `http://relaybox.local/` opens the setup wizard from a
//! phone or laptop on the same network.
//!
//! Built on `mdns-sd` (pure Rust, one background thread, no async runtime). What this
//! module owns:
//!
//! - Addresses follow the host: the service is registered with `addr_auto`, so the
//!   daemon thread polls the interface list (every 5 s, mdns-sd's default) and announces
//!   addresses that appear and withdraws those that go away (DHCP renewals, Wi-Fi
//!   changes). Loopback interfaces are not used: `relaybox.local` is for other devices.
//! - Shutdown: [`Announcer::shutdown`] (or dropping the [`Announcer`]) sends goodbye
//!   packets (the same records with TTL 0, RFC 6762 §10.1) so caches forget the name at
//!   once, then the daemon thread exits.
//! - Name conflicts: before announcing, mdns-sd probes the names (RFC 6762 §8.1). When
//!   another device answers for `relaybox.local` with different addresses, mdns-sd does
//!   not give up: it renames *its own* host record to `relaybox-2.local` (then `-3`, …;
//!   service instances become `Relaybox setup (2)`) and announces that instead (RFC 6762
//!   §9). We log the new name at `warn` so the console shows where the box really is;
//!   nothing else is done about it. A conflict that appears after announcing (another
//!   device claims the name later) is not detected by mdns-sd's probing.

use std::net::IpAddr;
use std::time::Duration;

use mdns_sd::{DaemonEvent, DaemonStatus, IfKind, ServiceDaemon, ServiceInfo};

/// DNS-SD service type of the setup wizard (RFC 6763 §7; `_http` from the IANA registry).
const SERVICE_TYPE: &str = "_http._tcp.local.";
/// DNS-SD instance name shown in service browsers.
const INSTANCE_NAME: &str = "Relaybox setup";
/// How long [`Announcer::shutdown`] waits for the daemon thread to confirm it sent the
/// goodbye packets and stopped.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// Errors of the mDNS announcer.
#[derive(Debug, thiserror::Error)]
pub enum MdnsError {
    /// The name is not one DNS label (letters, digits, hyphens; 1 to 63 bytes).
    #[error("mDNS name {0:?} is not one DNS label like relaybox")]
    InvalidName(String),
    /// mdns-sd refused to start, register or stop.
    #[error("mDNS: {0}")]
    Mdns(#[from] mdns_sd::Error),
    /// The daemon thread did not confirm the shutdown in time.
    #[error("mDNS daemon did not stop within {0:?}")]
    ShutdownTimeout(Duration),
}

/// A running announcement of `<name>.local` and the setup service. Dropping it stops the
/// announcement like [`Announcer::shutdown`] (goodbye packets, thread stopped).
pub struct Announcer {
    daemon: Option<ServiceDaemon>,
    hostname: String,
}

impl std::fmt::Debug for Announcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Announcer")
            .field("hostname", &self.hostname)
            .field("running", &self.daemon.is_some())
            .finish()
    }
}

/// Start announcing `<name>.local` (A and AAAA records of every non-loopback interface)
/// and the `_http._tcp` service "Relaybox setup" on `port`. Returns once the daemon
/// thread runs; probing and the first announcements follow within about a second.
/// `name` is one DNS label (`mdns_name` of the config, already checked there).
pub fn announce(name: &str, port: u16) -> Result<Announcer, MdnsError> {
    if !is_label(name) {
        return Err(MdnsError::InvalidName(name.to_string()));
    }
    let hostname = format!("{}.local.", name.to_ascii_lowercase());
    let daemon = ServiceDaemon::new()?;
    let announcer = Announcer {
        daemon: Some(daemon.clone()),
        hostname: hostname.clone(),
    };
    // From here on, an error drops `announcer`, which stops the thread.
    // The box is found from other devices only; answering on loopback would also put
    // 127.0.0.1 into the records a local resolver caches.
    daemon.disable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])?;
    log_events(&daemon, name)?;
    // RFC 6763 §6.3: `path` tells browsers which page to open.
    let txt: &[(&str, &str)] = &[("path", "/")];
    // No addresses given + `enable_addr_auto`: mdns-sd fills in the interfaces'
    // addresses and keeps them current.
    let info =
        ServiceInfo::new(SERVICE_TYPE, INSTANCE_NAME, &hostname, (), port, txt)?.enable_addr_auto();
    daemon.register(info)?;
    tracing::info!(host = %hostname, port, "mDNS: announcing the setup page");
    Ok(announcer)
}

impl Announcer {
    /// The announced host name as registered, e.g. `relaybox.local.` (after a conflict
    /// mdns-sd may announce `relaybox-2.local.` instead; see the module comment).
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// Withdraw the records (goodbye packets, RFC 6762 §10.1) and stop the daemon
    /// thread. Blocks until the thread confirms, at most two seconds; call it from
    /// `spawn_blocking` in async code.
    pub fn shutdown(mut self) -> Result<(), MdnsError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), MdnsError> {
        let Some(daemon) = self.daemon.take() else {
            return Ok(());
        };
        let status = daemon.shutdown()?;
        match status.recv_timeout(SHUTDOWN_WAIT) {
            Ok(DaemonStatus::Shutdown) => {
                tracing::info!(host = %self.hostname, "mDNS: announcement withdrawn");
                Ok(())
            }
            Ok(other) => {
                tracing::warn!(host = %self.hostname, status = ?other, "mDNS: unexpected status at shutdown");
                Ok(())
            }
            Err(_) => Err(MdnsError::ShutdownTimeout(SHUTDOWN_WAIT)),
        }
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(host = %self.hostname, error = %e, "mDNS: shutdown");
        }
    }
}

/// Log the daemon's events (address changes, renames after a conflict, errors) on a
/// small thread that ends when the daemon thread stops (its channel disconnects).
fn log_events(daemon: &ServiceDaemon, name: &str) -> Result<(), MdnsError> {
    let events = daemon.monitor()?;
    let name = name.to_string();
    let spawned = std::thread::Builder::new()
        .name("mdns-log".to_string())
        .spawn(move || {
            while let Ok(event) = events.recv() {
                match event {
                    // RFC 6762 §9: the name was taken; mdns-sd announces a new one.
                    DaemonEvent::NameChange(change) => tracing::warn!(
                        requested = %name,
                        original = %change.original,
                        announced = %change.new_name,
                        interface = %change.intf_name,
                        "mDNS: name already used on the network, announcing another"
                    ),
                    DaemonEvent::IpAdd(ip) => log_address("added", ip),
                    DaemonEvent::IpDel(ip) => log_address("removed", ip),
                    DaemonEvent::Error(e) => tracing::warn!(error = %e, "mDNS daemon"),
                    other => tracing::trace!(event = ?other, "mDNS daemon"),
                }
            }
        });
    if let Err(e) = spawned {
        // Logging is a convenience; the announcement works without it.
        tracing::warn!(error = %e, "mDNS: no event log thread");
    }
    Ok(())
}

fn log_address(what: &str, ip: IpAddr) {
    if ip.is_loopback() {
        return;
    }
    tracing::info!(address = %ip, "mDNS: interface address {what}");
}

/// One DNS label of letters, digits and inner hyphens (RFC 1035 §2.3.1, RFC 1123 §2.1).
fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_labels() {
        for good in ["relaybox", "box-2", "a", "R2D2"] {
            assert!(is_label(good), "{good}");
        }
        for bad in [
            "",
            "-box",
            "box-",
            "relay.box",
            "relay box",
            &"a".repeat(64),
        ] {
            assert!(!is_label(bad), "{bad:?}");
            assert!(matches!(announce(bad, 80), Err(MdnsError::InvalidName(_))));
        }
    }
}
