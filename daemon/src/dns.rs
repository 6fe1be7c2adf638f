//! The DNS servers this relay asks (config `dns_resolver`): one way to point hickory at
//! them, shared by outbound routing (OUT-2, `outbound::route`) and DKIM key lookups
//! (IN-5, `dkim`). Each user applies its own cache and timeout options.

use std::net::SocketAddr;

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver, ResolverBuilder};

/// A resolver builder that asks exactly `servers` (UDP, TCP for truncated answers) on
/// their ports and ignores `/etc/hosts`: the configured servers answer for everything
/// (tests run their own). `servers` must not be empty (empty = the system's resolver,
/// which each user builds itself).
pub fn configured(servers: &[SocketAddr]) -> ResolverBuilder<TokioRuntimeProvider> {
    let servers = servers
        .iter()
        .map(|addr| {
            let mut server = NameServerConfig::udp_and_tcp(addr.ip());
            for connection in &mut server.connections {
                connection.port = addr.port();
            }
            server
        })
        .collect();
    let mut builder = Resolver::builder_with_config(
        ResolverConfig::from_name_servers(servers),
        TokioRuntimeProvider::default(),
    );
    builder.options_mut().use_hosts_file = ResolveHosts::Never;
    builder
}
