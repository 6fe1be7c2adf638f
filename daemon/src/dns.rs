//! The DNS servers this relay asks (config `dns_resolver`): one way to point hickory at
//! them, shared by outbound routing (OUT-2, `outbound::route`) and DKIM key lookups
//! (IN-5, `dkim`). Each user applies its own cache and timeout options.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::SystemTime;

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver, ResolverBuilder, TokioResolver};

/// Applies a user's options to a builder and builds the resolver.
pub type Build = fn(ResolverBuilder<TokioRuntimeProvider>) -> Result<TokioResolver, NetError>;

/// Where a resolver's servers come from.
pub enum Source {
    /// `dns_resolver`: built once.
    Fixed(TokioResolver),
    /// The system configuration: built on first use and again whenever
    /// `/etc/resolv.conf` changes (a DHCP lease, an appliance booting without network),
    /// so a missing or changing file never keeps the relay from starting or from
    /// following it. `None` until a build succeeded.
    System {
        build: Build,
        current: Mutex<Option<(Option<SystemTime>, TokioResolver)>>,
    },
}

/// The file the system configuration comes from (hickory reads it on Unix).
const RESOLV_CONF: &str = "/etc/resolv.conf";

impl Source {
    /// `servers` (config `dns_resolver`), or the system's configuration when empty.
    pub fn new(servers: &[SocketAddr], build: Build) -> Result<Source, NetError> {
        if servers.is_empty() {
            return Ok(Source::System {
                build,
                current: Mutex::new(None),
            });
        }
        Ok(Source::Fixed(build(configured(servers))?))
    }

    /// The resolver to use now.
    pub fn get(&self) -> Result<TokioResolver, String> {
        match self {
            Source::Fixed(resolver) => Ok(resolver.clone()),
            Source::System { build, current } => {
                let stamp = std::fs::metadata(RESOLV_CONF)
                    .and_then(|m| m.modified())
                    .ok();
                let mut current = current.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((built_at, resolver)) = current.as_ref()
                    && *built_at == stamp
                {
                    return Ok(resolver.clone());
                }
                let resolver = Resolver::builder_tokio()
                    .map(without_system_roots)
                    .and_then(build)
                    .map_err(|e| format!("system resolver configuration: {e}"))?;
                *current = Some((stamp, resolver.clone()));
                Ok(resolver)
            }
        }
    }
}

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
    without_system_roots(builder)
}

/// hickory builds a TLS client config (for DNS over TLS, which we never use) from the
/// system's CA store unless given one, and fails where there is none — the appliance has
/// no /etc/ssl. Give it one with the compiled-in web-PKI roots instead.
fn without_system_roots(
    builder: ResolverBuilder<TokioRuntimeProvider>,
) -> ResolverBuilder<TokioRuntimeProvider> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(b) => builder.with_tls_config(b.with_root_certificates(roots).with_no_client_auth()),
        Err(_) => builder,
    }
}
