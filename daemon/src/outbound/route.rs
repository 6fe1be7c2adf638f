//! Next hops of a destination domain (spec/relay.md §8 OUT-2): an address literal
//! names its host directly; otherwise the MX records through hickory-resolver, sorted
//! by preference (RFC 5321 §5.1), with null MX (RFC 7505), NXDOMAIN and the implicit MX
//! of a domain without MX records; then each host's IPv4 and IPv6 addresses.
//!
//! Resolver: the DNS servers of `dns_resolver`, or the system's (`/etc/resolv.conf`,
//! read at first use and again when the file changes) when that list is empty.
//! Negative answers are never cached (OUT-2: "no negative caching"), so a domain that
//! just got its MX records is reachable at the next retry.
//! DNSSEC: the relay does not validate itself; like upstream (Postfix behind a local
//! validating unbound), it relies on the configured resolver to validate and answer
//! SERVFAIL for bogus data, which becomes a temporary DNS failure here.

use std::net::IpAddr;

use std::time::Duration;

use hickory_resolver::config::{LookupIpStrategy, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{ResolverBuilder, TokioResolver};
use rand::seq::SliceRandom;

use super::transport::TransportError;
use crate::config::Config;
use crate::policy::SmtpReply;

/// More MX hosts than this are not tried in one attempt (bounds the attempt's time).
pub const MAX_HOSTS: usize = 10;

/// One next hop: a host to try, by name (certificate name, SNI, the SMTP-only mark)
/// or by address literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hop {
    /// An MX host (or the domain itself as implicit MX), lower case, no trailing dot.
    Name(String),
    /// An address literal destination `[a.b.c.d]` / `[IPv6:…]` (OUT-2).
    Literal(IpAddr),
    /// Issue 17: a name (certificate name, SNI) reached at another host's addresses
    /// (`at`: an IP address or a host name) — this relay's own domain at the machine it
    /// moves to.
    At { name: String, at: String },
}

impl Hop {
    /// How the hop appears in replies and logs, and the key of the SMTP-only mark.
    pub fn label(&self) -> String {
        match self {
            Hop::Name(name) | Hop::At { name, .. } => name.clone(),
            Hop::Literal(ip) => ip.to_string(),
        }
    }
}

/// Where a domain's mail goes, or why it goes nowhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Hosts in the order to try them.
    Hops(Vec<Hop>),
    /// No delivery possible now (`permanent = false`) or ever (`permanent = true`).
    Fail { reply: SmtpReply, permanent: bool },
}

/// OUT-2: the null MX reply.
pub fn null_mx() -> SmtpReply {
    SmtpReply::new(
        556,
        "5.1.10 Permanent failure: Recipient address has null MX",
    )
}

/// OUT-2: the NXDOMAIN reply (non-standard code, permanent).
pub fn no_such_domain(domain: &str) -> SmtpReply {
    SmtpReply::new(512, format!("Domain {domain} does not exist"))
}

/// OUT-2: any other DNS failure (temporary).
pub fn dns_failed(domain: &str) -> SmtpReply {
    SmtpReply::new(421, format!("DNS resolution failed for {domain}"))
}

/// MX and address lookups through the configured resolver.
pub struct Router {
    source: crate::dns::Source,
}

impl Router {
    /// A resolver for `config.dns_resolver` (empty: the system configuration, read
    /// when first needed).
    pub fn new(config: &Config) -> Result<Router, TransportError> {
        let source = crate::dns::Source::new(&config.dns_resolver, build)
            .map_err(|e| TransportError::Resolver(e.to_string()))?;
        Ok(Router { source })
    }

    /// The resolver to use now.
    fn resolver(&self) -> Result<TokioResolver, String> {
        self.source.get()
    }

    /// OUT-2: the next hops of `domain` (lower-cased by the caller or not; no trailing
    /// dot needed).
    pub async fn route(&self, domain: &str) -> Route {
        match crate::policy::literal::address_literal(domain) {
            Some(Ok(ip)) => return Route::Hops(vec![Hop::Literal(ip)]),
            Some(Err(())) => {
                return Route::Fail {
                    reply: no_such_domain(domain),
                    permanent: true,
                };
            }
            None => {}
        }
        let name = domain.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() || name.parse::<IpAddr>().is_ok() {
            return Route::Fail {
                reply: no_such_domain(domain),
                permanent: true,
            };
        }
        // Fully qualified: no search-list expansion of the system configuration.
        let fqdn = format!("{name}.");
        let resolver = match self.resolver() {
            Ok(resolver) => resolver,
            Err(e) => {
                tracing::warn!("outbound: {e}");
                return Route::Fail {
                    reply: dns_failed(domain),
                    permanent: false,
                };
            }
        };
        let lookup = match resolver.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => lookup,
            Err(e) => {
                return match classify(&e) {
                    // RFC 5321 §5.1: no MX records → the domain is its own MX.
                    Negative::NoData => Route::Hops(vec![Hop::Name(name)]),
                    Negative::NxDomain => Route::Fail {
                        reply: no_such_domain(domain),
                        permanent: true,
                    },
                    Negative::Other => {
                        tracing::info!("MX lookup for {name} failed: {e}");
                        Route::Fail {
                            reply: dns_failed(domain),
                            permanent: false,
                        }
                    }
                };
            }
        };
        let records: Vec<(u16, String)> = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::MX(mx) => Some((
                    mx.preference,
                    mx.exchange
                        .to_ascii()
                        .trim_end_matches('.')
                        .to_ascii_lowercase(),
                )),
                _ => None,
            })
            .collect();
        match hops_from_mx(records) {
            MxHops::Null => Route::Fail {
                reply: null_mx(),
                permanent: true,
            },
            MxHops::Hosts(hosts) if hosts.is_empty() => Route::Hops(vec![Hop::Name(name)]),
            MxHops::Hosts(hosts) => Route::Hops(hosts.into_iter().map(Hop::Name).collect()),
        }
    }

    /// The addresses of an MX host, IPv4 and IPv6 (queried in parallel). An empty list
    /// or an error means the host cannot be reached (the caller tries the next one).
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        match self.resolver()?.lookup_ip(fqdn.as_str()).await {
            Ok(lookup) => {
                let mut ips: Vec<IpAddr> = lookup.iter().collect();
                ips.dedup();
                Ok(ips)
            }
            Err(e) => match classify(&e) {
                Negative::NoData | Negative::NxDomain => {
                    Err(format!("no address records for {host}"))
                }
                Negative::Other => Err(format!("address lookup for {host} failed: {e}")),
            },
        }
    }
}

/// The options of every resolver here, then the resolver.
fn build(mut builder: ResolverBuilder<TokioRuntimeProvider>) -> Result<TokioResolver, NetError> {
    let opts: &mut ResolverOpts = builder.options_mut();
    // OUT-2: no negative caching.
    opts.negative_min_ttl = Some(Duration::ZERO);
    opts.negative_max_ttl = Some(Duration::ZERO);
    // Positive answers are kept at most 5 minutes whatever their TTL.
    opts.positive_max_ttl = Some(Duration::from_secs(300));
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.timeout = Duration::from_secs(5);
    opts.attempts = 2;
    builder.build()
}

/// What an MX answer comes to.
#[derive(Debug, PartialEq, Eq)]
enum MxHops {
    /// RFC 7505: the single record `0 .`.
    Null,
    /// Hosts by ascending preference (equal preferences in random order, RFC 5321
    /// §5.1), duplicates and `.` entries among real ones dropped, at most
    /// [`MAX_HOSTS`]. Empty: no usable record (implicit MX).
    Hosts(Vec<String>),
}

fn hops_from_mx(mut records: Vec<(u16, String)>) -> MxHops {
    if records.is_empty() {
        return MxHops::Hosts(Vec::new());
    }
    // RFC 7505 §3: a domain with a null MX advertises no other MX.
    if records.len() == 1 && records[0].1.is_empty() {
        return MxHops::Null;
    }
    records.retain(|(_, host)| !host.is_empty());
    if records.is_empty() {
        // Several `.` records (malformed): as a null MX.
        return MxHops::Null;
    }
    // RFC 5321 §5.1: randomize among equal preferences, then sort (stable).
    records.shuffle(&mut rand::rng());
    records.sort_by_key(|(preference, _)| *preference);
    let mut hosts: Vec<String> = Vec::new();
    for (_, host) in records {
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    hosts.truncate(MAX_HOSTS);
    MxHops::Hosts(hosts)
}

/// The kinds of failed lookups OUT-2 tells apart.
#[derive(Debug, PartialEq, Eq)]
enum Negative {
    /// The name exists without records of that type (NOERROR, no answers).
    NoData,
    /// The name does not exist.
    NxDomain,
    /// Anything else: SERVFAIL, REFUSED, timeouts, I/O.
    Other,
}

fn classify(e: &NetError) -> Negative {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(no)) => match no.response_code {
            ResponseCode::NXDomain => Negative::NxDomain,
            ResponseCode::NoError => Negative::NoData,
            _ => Negative::Other,
        },
        NetError::Dns(DnsError::ResponseCode(ResponseCode::NXDomain)) => Negative::NxDomain,
        _ => Negative::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mx_order_null_and_duplicates() {
        let rec = |list: &[(u16, &str)]| -> Vec<(u16, String)> {
            list.iter().map(|(p, h)| (*p, h.to_string())).collect()
        };
        assert_eq!(hops_from_mx(rec(&[(0, "")])), MxHops::Null);
        assert_eq!(hops_from_mx(rec(&[(0, ""), (0, "")])), MxHops::Null);
        assert_eq!(
            hops_from_mx(rec(&[(20, "b.test"), (10, "a.test"), (30, "c.test")])),
            MxHops::Hosts(vec!["a.test".into(), "b.test".into(), "c.test".into()])
        );
        // A `.` among real records is ignored; duplicates keep their best position.
        assert_eq!(
            hops_from_mx(rec(&[
                (5, ""),
                (20, "a.test"),
                (10, "b.test"),
                (30, "b.test")
            ])),
            MxHops::Hosts(vec!["b.test".into(), "a.test".into()])
        );
        assert_eq!(hops_from_mx(vec![]), MxHops::Hosts(vec![]));
        let many: Vec<(u16, String)> = (0..20).map(|i| (i, format!("h{i}.test"))).collect();
        match hops_from_mx(many) {
            MxHops::Hosts(h) => {
                assert_eq!(h.len(), MAX_HOSTS);
                assert_eq!(h[0], "h0.test");
            }
            other => panic!("{other:?}"),
        }
    }
}
