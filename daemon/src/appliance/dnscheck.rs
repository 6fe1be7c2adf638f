//! Live DNS checks of the wizard and the status page (spec appliance.md WIZ-1..4,
//! relay.md §18 DNS-1): each record of [`crate::zone::expected_records`] is looked up at
//! the domain's AUTHORITATIVE name servers (caches lag, WIZ-4) and compared with what
//! it should be, tolerant of extra records (WIZ-3). The result is one structured
//! [`Check`] per record with the record's id (WIZ-1); "could not check" (timeouts,
//! SERVFAIL, REFUSED, no name servers found) is `Unknown`, never "wrong" (WIZ-2).
//! After the records, the reverse DNS (PTR) of the relay's public addresses is asked of
//! the resolver (reverse zones belong to the address's provider): a warning with a
//! plain-language hint when it does not name the relay ([`check_reverse`]).
//!
//! How: the configured resolver (`dns_resolver`, else the system's; built by
//! [`crate::dns`]) finds the zone's NS set, walking up from the domain, and the NS
//! hosts' addresses; then every record is asked of those servers directly (UDP port
//! 53, TCP when truncated, recursion not desired), all records in parallel, 3 s per
//! query and about 15 s for everything.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::LookupIpStrategy;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::{ResolverBuilder, TokioResolver};
use relaybox_webui::{Check, CheckStatus, DnsRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::Config;

/// Time bounds of one run of the checks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// One query (UDP; again for TCP after a truncated answer).
    pub query: Duration,
    /// Everything: finding the servers and asking them.
    pub overall: Duration,
    /// Port of the authoritative servers (53; tests may change it).
    pub port: u16,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            query: Duration::from_secs(3),
            overall: Duration::from_secs(15),
            port: 53,
        }
    }
}

/// At most this many NS host addresses are asked (in order, until one answers).
const MAX_SERVERS: usize = 6;
/// EDNS payload size offered (RFC 6891; the 2020 DNS flag day value).
const EDNS_PAYLOAD: u16 = 1232;

/// Check every record of `records` against the authoritative servers of
/// `config.mail_domain`: one [`Check`] per record, same id, same order (WIZ-1, WIZ-3).
pub async fn check_dns(config: &Config, records: &[DnsRecord]) -> Vec<Check> {
    check_dns_with(config, records, Limits::default()).await
}

pub(crate) async fn check_dns_with(
    config: &Config,
    records: &[DnsRecord],
    limits: Limits,
) -> Vec<Check> {
    if records.is_empty() {
        return Vec::new();
    }
    let deadline = Instant::now() + limits.overall;
    let servers = match tokio::time::timeout_at(deadline, find_servers(config, limits)).await {
        Ok(Ok(servers)) => Arc::new(servers),
        Ok(Err(reason)) => {
            return records.iter().map(|r| unknown(r, &reason)).collect();
        }
        Err(_) => {
            let reason = format!(
                "finding the domain's name servers took longer than {} s",
                limits.overall.as_secs()
            );
            return records.iter().map(|r| unknown(r, &reason)).collect();
        }
    };
    let mut tasks = JoinSet::new();
    for (i, record) in records.iter().enumerate() {
        let record = record.clone();
        let servers = servers.clone();
        tasks.spawn(async move { (i, check_one(&servers, &record, limits).await) });
    }
    let mut results: Vec<Option<Check>> = vec![None; records.len()];
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(Ok((i, check)))) => {
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some(check);
                }
            }
            // A task that panicked: its record stays unchecked (reported below).
            Ok(Some(Err(e))) => tracing::warn!("dns check task failed: {e}"),
            Ok(None) => break,
            Err(_) => {
                tasks.abort_all();
                break;
            }
        }
    }
    let mut checks: Vec<Check> = results
        .into_iter()
        .zip(records)
        .map(|(check, record)| {
            check.unwrap_or_else(|| {
                unknown(
                    record,
                    &format!(
                        "the name servers did not answer within {} s",
                        limits.overall.as_secs()
                    ),
                )
            })
        })
        .collect();
    adjust_address_checks(&mut checks);
    let addresses = public_addresses(records, &checks);
    let reverse = check_reverse(config, &addresses, deadline, limits).await;
    checks.extend(reverse);
    checks
}

// ---- reverse DNS ----------------------------------------------------------------------

/// The relay's public addresses to look up in reverse, at most one per family: the
/// detected address of the A/AAAA record, else the global address its check found. Only
/// where the domain's servers answered (an address check that could not be made says
/// nothing, WIZ-2).
fn public_addresses(records: &[DnsRecord], checks: &[Check]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for (record, check) in records.iter().zip(checks) {
        if !matches!(record.id.as_str(), "dns.a" | "dns.aaaa")
            || check.status == CheckStatus::Unknown
        {
            continue;
        }
        let candidates: Vec<IpAddr> = match record.value.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) if check.status == CheckStatus::Ok => check
                .found
                .as_deref()
                .unwrap_or("")
                .split(';')
                .filter_map(|f| f.trim().parse().ok())
                .collect(),
            Err(_) => Vec::new(),
        };
        let global = |ip: &IpAddr| match ip {
            IpAddr::V4(a) => crate::zone::global_v4(*a),
            IpAddr::V6(a) => crate::zone::global_v6(*a),
        };
        if let Some(ip) = candidates.into_iter().find(global)
            && !out.iter().any(|o| o.is_ipv4() == ip.is_ipv4())
        {
            out.push(ip);
        }
    }
    out
}

/// What to do about a reverse DNS that does not name the relay, for people.
fn ptr_hint(ip: IpAddr, domain: &str) -> String {
    format!(
        "Many mail servers refuse or distrust mail from an address whose reverse DNS does \
         not name the sending server. The reverse DNS of {ip} is set by whoever gave you \
         the address (your internet or hosting provider), not at your domain's DNS \
         provider: ask them to set its PTR record to {domain}."
    )
}

/// `dns.ptr.v4` / `dns.ptr.v6`: the PTR records of `addresses` (RFC 1035 §3.5) through
/// the configured resolver, each bounded by the query time and the run's `deadline`.
/// Ok when one names `mail_domain`; a Warning (never an error: mail still flows) with
/// [`ptr_hint`] when none does or there is none; Unknown when the lookup failed.
async fn check_reverse(
    config: &Config,
    addresses: &[IpAddr],
    deadline: Instant,
    limits: Limits,
) -> Vec<Check> {
    if addresses.is_empty() {
        return Vec::new();
    }
    let domain = format!("{}.", config.mail_domain.trim_end_matches('.'));
    let resolver = resolver(config);
    let mut out = Vec::new();
    for &ip in addresses {
        let id = if ip.is_ipv4() {
            "dns.ptr.v4"
        } else {
            "dns.ptr.v6"
        };
        let mut check = Check {
            id: id.into(),
            status: CheckStatus::Unknown,
            summary: format!("Could not check the reverse DNS (PTR) of {ip}."),
            details: None,
            expected: Some(domain.clone()),
            found: None,
        };
        let resolver = match &resolver {
            Ok(r) => r,
            Err(e) => {
                check.details = Some(e.clone());
                out.push(check);
                continue;
            }
        };
        let until = deadline.min(Instant::now() + limits.query);
        let lookup =
            tokio::time::timeout_at(until, resolver.lookup(Name::from(ip), RecordType::PTR));
        let names: Vec<String> = match lookup.await {
            Ok(Ok(found)) => found
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::PTR(p) => Some(p.0.to_ascii()),
                    _ => None,
                })
                .collect(),
            Ok(Err(NetError::Dns(DnsError::NoRecordsFound(no))))
                if matches!(
                    no.response_code,
                    ResponseCode::NoError | ResponseCode::NXDomain
                ) =>
            {
                Vec::new()
            }
            Ok(Err(e)) => {
                check.details = Some(format!("the DNS resolver answered: {e}"));
                out.push(check);
                continue;
            }
            Err(_) => {
                check.details = Some(format!("no answer within {} s", limits.query.as_secs()));
                out.push(check);
                continue;
            }
        };
        if names.iter().any(|n| same_host(n, &domain)) {
            check.status = CheckStatus::Ok;
            check.summary = format!("The reverse DNS (PTR) of {ip} names this relay.");
        } else {
            check.status = CheckStatus::Warning;
            check.summary = if names.is_empty() {
                format!("The address {ip} has no reverse DNS (PTR) record.")
            } else {
                format!(
                    "The reverse DNS (PTR) of {ip} names {}, not this relay.",
                    names.join(", ")
                )
            };
            check.details = Some(ptr_hint(ip, &domain));
        }
        check.found = (!names.is_empty()).then(|| names.join("; "));
        out.push(check);
    }
    out
}

/// The addresses `config.mail_domain`'s A and AAAA records point to, asked of its
/// authoritative servers (for the port checks). `Ok(empty)`: no address record.
pub(crate) async fn domain_addresses(config: &Config) -> Result<Vec<IpAddr>, String> {
    domain_addresses_with(config, Limits::default()).await
}

pub(crate) async fn domain_addresses_with(
    config: &Config,
    limits: Limits,
) -> Result<Vec<IpAddr>, String> {
    let deadline = Instant::now() + limits.overall;
    let work = async {
        let servers = find_servers(config, limits).await?;
        let name = absolute_name(&config.mail_domain)?;
        let mut out = Vec::new();
        for rtype in [RecordType::A, RecordType::AAAA] {
            let found = ask_servers(&servers, &name, rtype, limits).await?;
            out.extend(found.into_iter().filter_map(|f| match f {
                Found::Addr(ip) => Some(ip),
                _ => None,
            }));
        }
        Ok(out)
    };
    match tokio::time::timeout_at(deadline, work).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "the name servers did not answer within {} s",
            limits.overall.as_secs()
        )),
    }
}

// ---- finding the authoritative servers ---------------------------------------------

/// Options of the resolver that finds the NS set: short timeout, one attempt, no
/// cache (each run of the checks wants the current state).
fn build(mut builder: ResolverBuilder<TokioRuntimeProvider>) -> Result<TokioResolver, NetError> {
    let opts = builder.options_mut();
    opts.timeout = Duration::from_secs(3);
    opts.attempts = 1;
    opts.cache_size = 0;
    opts.negative_min_ttl = Some(Duration::ZERO);
    opts.negative_max_ttl = Some(Duration::ZERO);
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    builder.build()
}

/// The configured resolver (`dns_resolver`, else the system's), built by [`crate::dns`].
pub(crate) fn resolver(config: &Config) -> Result<TokioResolver, String> {
    crate::dns::Source::new(&config.dns_resolver, build)
        .map_err(|e| format!("cannot set up the DNS resolver: {e}"))?
        .get()
}

/// `name` as an absolute DNS name.
fn absolute_name(name: &str) -> Result<Name, String> {
    let trimmed = name.trim_end_matches('.');
    Name::from_ascii(format!("{trimmed}."))
        .map_err(|e| format!("{name:?} is not a valid DNS name: {e}"))
}

/// WIZ-4: the addresses of the authoritative servers of the zone holding
/// `config.mail_domain`: NS records asked of the resolver for the name, then its
/// parents (not the root), then the NS hosts' addresses (IPv4 first), at most
/// [`MAX_SERVERS`].
async fn find_servers(config: &Config, limits: Limits) -> Result<Vec<SocketAddr>, String> {
    let resolver = resolver(config)?;
    let mut name = absolute_name(&config.mail_domain)?;
    let mut hosts: Vec<Name> = Vec::new();
    while !name.is_root() {
        match resolver.lookup(name.clone(), RecordType::NS).await {
            Ok(lookup) => {
                hosts = lookup
                    .answers()
                    .iter()
                    .filter(|r| r.name.eq_ignore_root(&name))
                    .filter_map(|r| match &r.data {
                        RData::NS(ns) => Some(ns.0.clone()),
                        _ => None,
                    })
                    .collect();
                if !hosts.is_empty() {
                    break;
                }
            }
            Err(NetError::Dns(DnsError::NoRecordsFound(no)))
                if matches!(
                    no.response_code,
                    ResponseCode::NoError | ResponseCode::NXDomain
                ) => {}
            Err(e) => {
                return Err(format!(
                    "the DNS resolver did not say which servers answer for {}: {e}",
                    name.to_ascii()
                ));
            }
        }
        name = name.base_name();
    }
    if hosts.is_empty() {
        return Err(format!(
            "no name servers found for {} (is the domain registered?)",
            config.mail_domain
        ));
    }
    hosts.sort();
    hosts.dedup();
    let mut lookups = JoinSet::new();
    for host in hosts.iter().take(MAX_SERVERS).cloned() {
        let resolver = resolver.clone();
        lookups.spawn(async move { (host.clone(), resolver.lookup_ip(host).await) });
    }
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let mut failures = Vec::new();
    while let Some(joined) = lookups.join_next().await {
        match joined {
            Ok((_, Ok(ips))) => {
                for ip in ips.iter() {
                    let addr = SocketAddr::new(ip, limits.port);
                    match ip {
                        IpAddr::V4(_) => v4.push(addr),
                        IpAddr::V6(_) => v6.push(addr),
                    }
                }
            }
            Ok((host, Err(e))) => failures.push(format!("{}: {e}", host.to_ascii())),
            Err(e) => failures.push(e.to_string()),
        }
    }
    v4.sort();
    v6.sort();
    let mut servers: Vec<SocketAddr> = v4.into_iter().chain(v6).collect();
    servers.dedup();
    servers.truncate(MAX_SERVERS);
    if servers.is_empty() {
        return Err(format!(
            "the addresses of the name servers ({}) could not be found: {}",
            hosts
                .iter()
                .map(Name::to_ascii)
                .collect::<Vec<_>>()
                .join(", "),
            failures.join("; ")
        ));
    }
    Ok(servers)
}

// ---- asking them --------------------------------------------------------------------

/// What one authoritative server said.
#[derive(Debug)]
enum Reply {
    /// NOERROR or NXDOMAIN: the records of the asked type at the name (and a CNAME
    /// there, if any); empty = no such record.
    Records(Vec<Found>),
    /// A referral: this server does not hold the name (a delegated sub-zone, a lame
    /// server).
    NotAuthoritative,
}

/// Ask `servers` in order until one answers for the zone; `Err` with every server's
/// reason when none did.
async fn ask_servers(
    servers: &[SocketAddr],
    name: &Name,
    rtype: RecordType,
    limits: Limits,
) -> Result<Vec<Found>, String> {
    let mut failures = Vec::new();
    for server in servers {
        match query(*server, name, rtype, limits.query).await {
            Ok(Reply::Records(found)) => return Ok(found),
            Ok(Reply::NotAuthoritative) => {
                failures.push(format!("{server}: does not answer for this name"))
            }
            Err(e) => failures.push(format!("{server}: {e}")),
        }
    }
    Err(failures.join("; "))
}

/// One query to one server: UDP, again over TCP when the answer was truncated
/// (RFC 7766 §5), recursion not desired (RFC 1035 §4.1.1), bounded by `wait` each.
async fn query(
    server: SocketAddr,
    name: &Name,
    rtype: RecordType,
    wait: Duration,
) -> Result<Reply, String> {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = false;
    msg.add_query(Query::query(name.clone(), rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    msg.edns = Some(edns);
    let id = msg.metadata.id;
    let bytes = msg
        .to_vec()
        .map_err(|e| format!("cannot encode the query: {e}"))?;
    let answer = match tokio::time::timeout(wait, udp_exchange(server, &bytes, id)).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(format!("no answer within {} s", wait.as_secs())),
    };
    let answer = if answer.metadata.truncation {
        match tokio::time::timeout(wait, tcp_exchange(server, &bytes, id)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Err(format!("truncated over UDP, and over TCP: {e}")),
            Err(_) => {
                return Err(format!(
                    "truncated over UDP, and no answer over TCP within {} s",
                    wait.as_secs()
                ));
            }
        }
    } else {
        answer
    };
    classify(&answer, name, rtype)
}

async fn udp_exchange(server: SocketAddr, bytes: &[u8], id: u16) -> Result<Message, String> {
    let bind = if server.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let socket = UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
    socket.connect(server).await.map_err(|e| e.to_string())?;
    socket.send(bytes).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    // Datagrams that are not the answer (another id, garbage) are skipped; bounded
    // in count here and in time by the caller.
    for _ in 0..16 {
        let n = socket.recv(&mut buf).await.map_err(|e| e.to_string())?;
        if let Some(answer) = answer_to(&buf[..n], id) {
            return Ok(answer);
        }
    }
    Err("no valid answer".into())
}

async fn tcp_exchange(server: SocketAddr, bytes: &[u8], id: u16) -> Result<Message, String> {
    let len = u16::try_from(bytes.len()).map_err(|_| "query too long".to_string())?;
    let mut stream = TcpStream::connect(server)
        .await
        .map_err(|e| e.to_string())?;
    // RFC 1035 §4.2.2: two-byte length prefix.
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await.map_err(|e| e.to_string())?;
    let n = stream.read_u16().await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; usize::from(n)];
    stream
        .read_exact(&mut buf)
        .await
        .map_err(|e| e.to_string())?;
    answer_to(&buf, id).ok_or_else(|| "no valid answer".to_string())
}

/// `bytes` parsed when it is a response with `id`.
fn answer_to(bytes: &[u8], id: u16) -> Option<Message> {
    let msg = Message::from_vec(bytes).ok()?;
    (msg.metadata.id == id && msg.metadata.message_type == MessageType::Response).then_some(msg)
}

/// What an answer says about `name`/`rtype` (WIZ-2: only NOERROR and NXDOMAIN say
/// anything about the record; everything else is "could not check").
fn classify(answer: &Message, name: &Name, rtype: RecordType) -> Result<Reply, String> {
    match answer.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        code => return Err(format!("the server answered {code}")),
    }
    let found: Vec<Found> = answer
        .answers
        .iter()
        .filter(|r| r.name.eq_ignore_root(name))
        .filter(|r| r.record_type() == rtype || r.record_type() == RecordType::CNAME)
        .map(Found::from_record)
        .collect();
    let referral = !answer.metadata.authoritative
        && answer.answers.is_empty()
        && answer
            .authorities
            .iter()
            .any(|r| r.record_type() == RecordType::NS);
    if found.is_empty() && referral {
        return Ok(Reply::NotAuthoritative);
    }
    Ok(Reply::Records(found))
}

async fn check_one(servers: &[SocketAddr], record: &DnsRecord, limits: Limits) -> Check {
    let Some(rtype) = record_type(&record.kind) else {
        return unknown(
            record,
            &format!("records of type {} are not checked", record.kind),
        );
    };
    let name = match absolute_name(&record.name) {
        Ok(name) => name,
        Err(e) => return unknown(record, &e),
    };
    match ask_servers(servers, &name, rtype, limits).await {
        Ok(found) => verdict_check(record, &found, judge(record, &found)),
        Err(reason) => unknown(
            record,
            &format!("no authoritative name server answered: {reason}"),
        ),
    }
}

fn record_type(kind: &str) -> Option<RecordType> {
    Some(match kind.to_ascii_uppercase().as_str() {
        "A" => RecordType::A,
        "AAAA" => RecordType::AAAA,
        "MX" => RecordType::MX,
        "CNAME" => RecordType::CNAME,
        "TXT" => RecordType::TXT,
        "SRV" => RecordType::SRV,
        "CAA" => RecordType::CAA,
        _ => return None,
    })
}

// ---- comparing ------------------------------------------------------------------------

/// One record found at the name, in a form the comparisons use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    Addr(IpAddr),
    Mx {
        preference: u16,
        host: String,
    },
    Cname(String),
    /// The character-strings joined (RFC 7208 §3.3, RFC 6376 §3.6.2.2).
    Txt(String),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Caa {
        flags: u8,
        tag: String,
        value: String,
    },
    Other(String),
}

impl Found {
    fn from_record(record: &Record) -> Found {
        match &record.data {
            RData::A(a) => Found::Addr(IpAddr::V4(a.0)),
            RData::AAAA(a) => Found::Addr(IpAddr::V6(a.0)),
            RData::MX(mx) => Found::Mx {
                preference: mx.preference,
                host: mx.exchange.to_ascii(),
            },
            RData::CNAME(c) => Found::Cname(c.0.to_ascii()),
            RData::TXT(txt) => Found::Txt(
                txt.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect(),
            ),
            RData::SRV(srv) => Found::Srv {
                priority: srv.priority,
                weight: srv.weight,
                port: srv.port,
                target: srv.target.to_ascii(),
            },
            RData::CAA(caa) => Found::Caa {
                flags: caa.flags(),
                tag: caa.tag.clone(),
                value: String::from_utf8_lossy(&caa.value).into_owned(),
            },
            other => Found::Other(other.to_string()),
        }
    }
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Addr(ip) => write!(f, "{ip}"),
            Found::Mx { preference, host } => write!(f, "{preference} {host}"),
            Found::Cname(target) => write!(f, "CNAME {target}"),
            Found::Txt(text) => write!(f, "{}", crate::zone::txt_strings(text)),
            Found::Srv {
                priority,
                weight,
                port,
                target,
            } => write!(f, "{priority} {weight} {port} {target}"),
            Found::Caa { flags, tag, value } => write!(f, "{flags} {tag} \"{value}\""),
            Found::Other(text) => write!(f, "{text}"),
        }
    }
}

/// How the found records compare with the expected one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Present (extra records tolerated, WIZ-3), with an optional remark.
    Match(Option<String>),
    /// Nothing of the kind at the name.
    Missing,
    /// Records of the kind exist but none is the expected one; these are they.
    Wrong(Vec<Found>),
    /// Present and working, but weaker than recommended (a CAA record without the
    /// account): a warning with what to add.
    Partial(String),
}

/// A name compared case-insensitively, with or without its trailing dot.
fn same_host(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// WIZ-3: compare tolerantly. Never panics on odd data (MIAB #1011, #1904).
pub(crate) fn judge(record: &DnsRecord, found: &[Found]) -> Verdict {
    let cnames: Vec<Found> = found
        .iter()
        .filter(|f| matches!(f, Found::Cname(_)))
        .cloned()
        .collect();
    // A CNAME where another type is expected: wrong (RFC 1034 §3.6.2: nothing else
    // may live beside it).
    let otherwise = |kind_found: Vec<Found>| {
        if !kind_found.is_empty() {
            Verdict::Wrong(kind_found)
        } else if !cnames.is_empty() {
            Verdict::Wrong(cnames.clone())
        } else {
            Verdict::Missing
        }
    };
    let value = record.value.trim();
    match record.kind.to_ascii_uppercase().as_str() {
        kind @ ("A" | "AAAA") => {
            let v4 = kind == "A";
            let addrs: Vec<IpAddr> = found
                .iter()
                .filter_map(|f| match f {
                    Found::Addr(ip) if ip.is_ipv4() == v4 => Some(*ip),
                    _ => None,
                })
                .collect();
            let list = |a: &[IpAddr]| {
                a.iter()
                    .map(IpAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if addrs.is_empty() {
                return otherwise(Vec::new());
            }
            match value.parse::<IpAddr>() {
                Ok(expected) if addrs.contains(&expected) => {
                    if addrs.len() > 1 {
                        Verdict::Match(Some(format!("the name also points to {}", {
                            let others: Vec<IpAddr> =
                                addrs.into_iter().filter(|a| *a != expected).collect();
                            list(&others)
                        })))
                    } else {
                        Verdict::Match(None)
                    }
                }
                Ok(_) => Verdict::Wrong(addrs.into_iter().map(Found::Addr).collect()),
                // The address is not known here: any address will do; say which.
                Err(_) => Verdict::Match(Some(format!(
                    "points to {}; this box cannot tell whether that is its public address",
                    list(&addrs)
                ))),
            }
        }
        "MX" => {
            let host = value.split_whitespace().nth(1).unwrap_or(value);
            let mx: Vec<Found> = found
                .iter()
                .filter(|f| matches!(f, Found::Mx { .. }))
                .cloned()
                .collect();
            if mx
                .iter()
                .any(|f| matches!(f, Found::Mx { host: h, .. } if same_host(h, host)))
            {
                Verdict::Match(None)
            } else {
                otherwise(mx)
            }
        }
        "CNAME" => {
            if cnames
                .iter()
                .any(|f| matches!(f, Found::Cname(t) if same_host(t, value)))
            {
                Verdict::Match(None)
            } else if cnames.is_empty() {
                Verdict::Missing
            } else {
                Verdict::Wrong(cnames.clone())
            }
        }
        "TXT" => {
            let expected = parse_txt(value);
            let txts: Vec<&str> = found
                .iter()
                .filter_map(|f| match f {
                    Found::Txt(t) => Some(t.as_str()),
                    _ => None,
                })
                .collect();
            if txts.iter().any(|t| txt_matches(&expected, t)) {
                return Verdict::Match(None);
            }
            // Other TXT records at the name (site verifications, …) are fine; only
            // records of the same kind (`v=spf1`, `v=DMARC1`, a DKIM key) make it wrong.
            let related: Vec<Found> = txts
                .iter()
                .filter(|t| txt_related(&expected, t))
                .map(|t| Found::Txt((*t).to_string()))
                .collect();
            otherwise(related)
        }
        "SRV" => {
            let mut it = value.split_whitespace();
            let port = it.nth(2).and_then(|p| p.parse::<u16>().ok());
            let target = it.next().unwrap_or("");
            let srv: Vec<Found> = found
                .iter()
                .filter(|f| matches!(f, Found::Srv { .. }))
                .cloned()
                .collect();
            // Priority and weight do not matter with one target.
            if srv.iter().any(|f| {
                matches!(f, Found::Srv { port: p, target: t, .. }
                    if Some(*p) == port && same_host(t, target))
            }) {
                Verdict::Match(None)
            } else {
                otherwise(srv)
            }
        }
        "CAA" => {
            let mut it = value.splitn(3, ' ');
            let tag = it.nth(1).unwrap_or("");
            let it_value = it.next().unwrap_or("").trim_matches('"');
            let issuer = caa_issuer(it_value);
            let caa: Vec<Found> = found
                .iter()
                .filter(|f| matches!(f, Found::Caa { tag: t, .. } if t.eq_ignore_ascii_case("issue") || t.eq_ignore_ascii_case("issuewild")))
                .cloned()
                .collect();
            // RFC 8659 §4: without issue properties any CA may issue: as missing.
            let issue: Vec<&Found> = caa
                .iter()
                .filter(|f| matches!(f, Found::Caa { tag: t, .. } if t.eq_ignore_ascii_case(tag)))
                .collect();
            let ours: Vec<&str> = issue
                .iter()
                .filter_map(|f| match f {
                    Found::Caa { value: v, .. } if caa_issuer(v).eq_ignore_ascii_case(&issuer) => {
                        Some(v.as_str())
                    }
                    _ => None,
                })
                .collect();
            // RFC 8657 §3: with an `accounturi` only that account may have certificates.
            let want_account = caa_account(it_value);
            match want_account {
                Some(want) if !ours.is_empty() => {
                    if ours
                        .iter()
                        .any(|v| caa_account(v).as_deref() == Some(want.as_str()))
                    {
                        Verdict::Match(None)
                    } else if ours.iter().any(|v| caa_account(v).is_none()) {
                        Verdict::Partial(format!(
                            "Let's Encrypt may issue certificates for the domain to any \
                             account; add accounturi={want} so that only this relay's \
                             account can (RFC 8657)."
                        ))
                    } else {
                        // Only other accounts: this relay's requests are refused.
                        Verdict::Wrong(caa)
                    }
                }
                _ if !ours.is_empty() => Verdict::Match(None),
                _ if issue.is_empty() => Verdict::Missing,
                _ => Verdict::Wrong(caa),
            }
        }
        _ => Verdict::Missing,
    }
}

/// The issuer domain of a CAA `issue` value (`letsencrypt.org; accounturi=…`).
fn caa_issuer(value: &str) -> String {
    value.split(';').next().unwrap_or("").trim().to_string()
}

/// The `accounturi` parameter of a CAA `issue` value (RFC 8657 §3), if any.
fn caa_account(value: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("accounturi")
            .then(|| v.trim().to_string())
    })
}

/// The text of a TXT record's data in zone-file form: its quoted character-strings
/// joined, `\"` and `\\` unescaped (the form [`crate::zone::txt_strings`] writes);
/// an unquoted value is taken as it is.
pub(crate) fn parse_txt(value: &str) -> String {
    if !value.trim_start().starts_with('"') {
        return value.trim().to_string();
    }
    let mut out = String::new();
    let mut in_quotes = false;
    let mut escaped = false;
    for ch in value.chars() {
        if in_quotes {
            if escaped {
                out.push(ch);
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_quotes = false;
            } else {
                out.push(ch);
            }
        } else if ch == '"' {
            in_quotes = true;
        }
    }
    out
}

/// `tag=value` pairs of a tag list (RFC 6376 §3.2, RFC 7489 §6.3, RFC 8461 §3.1):
/// tag names lower-cased, values with whitespace collapsed.
fn tags(text: &str) -> Vec<(String, String)> {
    text.split(';')
        .filter_map(|part| {
            let (tag, value) = part.split_once('=')?;
            let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
            Some((tag.trim().to_ascii_lowercase(), value))
        })
        .collect()
}

/// Every tag of `expected` is in `found` with the same value (case-insensitive, but
/// the DKIM key `p` exactly, whitespace removed); extra tags are fine.
fn txt_matches(expected: &str, found: &str) -> bool {
    let want = tags(expected);
    if want.is_empty() {
        return expected.trim() == found.trim();
    }
    let have = tags(found);
    want.iter().all(|(tag, value)| {
        have.iter().any(|(t, v)| {
            t == tag
                && if tag == "p" {
                    v.replace(' ', "") == value.replace(' ', "")
                } else {
                    v.eq_ignore_ascii_case(value)
                }
        })
    })
}

/// `found` is a record of the same kind as `expected`: the same first tag (`v=spf1`,
/// `v=DMARC1`, `v=STSv1`, `dkim=`), or both carry a DKIM key (`p=`).
fn txt_related(expected: &str, found: &str) -> bool {
    let key = |text: &str| {
        tags(text).into_iter().next().map(|(tag, value)| {
            if tag == "v" {
                let first = value.split_whitespace().next().unwrap_or("").to_string();
                format!("v={}", first.to_ascii_lowercase())
            } else {
                tag
            }
        })
    };
    let has_key = |text: &str| tags(text).iter().any(|(t, _)| t == "p");
    (key(expected).is_some() && key(expected) == key(found))
        || (has_key(expected) && has_key(found))
}

/// The structured result of a comparison (WIZ-1).
fn verdict_check(record: &DnsRecord, found: &[Found], verdict: Verdict) -> Check {
    let what = format!("{} record of {}", record.kind, record.name);
    let list = |f: &[Found]| {
        f.iter()
            .map(Found::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    };
    let expected = Some(record.value.clone());
    let placeholder = crate::zone::is_placeholder(&record.value);
    match verdict {
        Verdict::Match(remark) => Check {
            id: record.id.clone(),
            status: CheckStatus::Ok,
            summary: format!("The {what} is correct."),
            details: remark,
            expected,
            found: Some(list(found)),
        },
        // An AAAA record for an address this box does not know it has: not needed.
        Verdict::Missing if placeholder && record.kind.eq_ignore_ascii_case("AAAA") => Check {
            id: record.id.clone(),
            status: CheckStatus::Ok,
            summary: "No IPv6 address is published (fine when this relay has none).".into(),
            details: None,
            expected,
            found: None,
        },
        Verdict::Missing => Check {
            id: record.id.clone(),
            status: if record.required {
                CheckStatus::Error
            } else {
                CheckStatus::Warning
            },
            summary: if record.required {
                format!("The {what} is missing.")
            } else {
                format!("The recommended {what} is missing.")
            },
            details: Some(record.note.clone()),
            expected,
            found: None,
        },
        Verdict::Partial(remark) => Check {
            id: record.id.clone(),
            status: CheckStatus::Warning,
            summary: format!("The {what} works but is not the recommended one."),
            details: Some(remark),
            expected,
            found: Some(list(found)),
        },
        Verdict::Wrong(wrong) => {
            // A CAA set without Let's Encrypt blocks the certificate: an error even
            // though the record itself is only recommended.
            let blocks_certificate = record.kind.eq_ignore_ascii_case("CAA");
            Check {
                id: record.id.clone(),
                status: if record.required || blocks_certificate {
                    CheckStatus::Error
                } else {
                    CheckStatus::Warning
                },
                summary: format!("The {what} is wrong."),
                details: Some(if blocks_certificate {
                    "The CAA records do not allow Let's Encrypt for this relay's account, so \
                     no certificate can be issued: add the expected record."
                        .to_string()
                } else {
                    format!("Change it to the expected value. {}", record.note)
                }),
                expected,
                found: Some(list(&wrong)),
            }
        }
    }
}

/// WIZ-2: "could not check", with the reason.
fn unknown(record: &DnsRecord, reason: &str) -> Check {
    Check {
        id: record.id.clone(),
        status: CheckStatus::Unknown,
        summary: format!(
            "Could not check the {} record of {}.",
            record.kind, record.name
        ),
        details: Some(reason.to_string()),
        expected: Some(record.value.clone()),
        found: None,
    }
}

/// DNS-1: only neither A nor AAAA is fatal. A missing A record beside a correct AAAA
/// record is a warning (IPv4-only senders cannot reach the relay).
fn adjust_address_checks(checks: &mut [Check]) {
    let aaaa_ok = checks
        .iter()
        .any(|c| c.id == "dns.aaaa" && c.status == CheckStatus::Ok && c.found.is_some());
    if !aaaa_ok {
        return;
    }
    for check in checks.iter_mut() {
        if check.id == "dns.a" && check.status == CheckStatus::Error && check.found.is_none() {
            check.status = CheckStatus::Warning;
            check.details = Some(
                "The domain has only an IPv6 address: servers and phones without IPv6 \
                 cannot reach the relay."
                    .into(),
            );
        }
    }
}

/// A real dnsmasq for the tests (Debian's `dnsmasq-base`, as the outbound and black-box
/// tests use), on a loopback address and port of the test's choice.
#[cfg(test)]
pub(crate) mod testdns {
    use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    /// A running dnsmasq; killed on drop.
    pub struct Dnsmasq {
        child: Child,
        pub addr: SocketAddr,
    }

    impl Drop for Dnsmasq {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    static NEXT: AtomicU32 = AtomicU32::new(0);

    /// A loopback /24 `127.a.b.0` of one test whose hosts 1..=3 have port 53 free
    /// (UDP and TCP): `a` from the process id (60..=99, apart from the black-box
    /// harness's 100..), `b` from a counter.
    pub fn fresh_net() -> (u8, u8) {
        let a = 60 + (std::process::id() % 40) as u8;
        for _ in 0..250 {
            let b = 1 + (NEXT.fetch_add(1, Ordering::Relaxed) % 250) as u8;
            let free = (1..=3).all(|h| {
                let addr = SocketAddr::from(([127, a, b, h], 53));
                UdpSocket::bind(addr).is_ok() && TcpListener::bind(addr).is_ok()
            });
            if free {
                return (a, b);
            }
        }
        panic!("no loopback network 127.{a}.x.0 with port 53 free");
    }

    /// `name` in DNS wire format (RFC 1035 §3.1) as hex, for `--dns-rr`.
    pub fn wire_name_hex(name: &str) -> String {
        let mut out = String::new();
        for label in name.trim_end_matches('.').split('.') {
            out += &format!("{:02x}", label.len());
            for b in label.bytes() {
                out += &format!("{b:02x}");
            }
        }
        out + "00"
    }

    impl Dnsmasq {
        /// dnsmasq on `ip:port` with `args` (records), nothing forwarded, every other
        /// name under `.test` NXDOMAIN when `local_test`, else REFUSED. Waits until it
        /// answers (bounded); panics if it does not.
        pub fn start(ip: Ipv4Addr, port: u16, local_test: bool, args: &[String]) -> Dnsmasq {
            let bin = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
                .into_iter()
                .find(|p| Path::new(p).exists())
                .expect("dnsmasq is installed (tests/run installs dnsmasq-base)");
            let mut cmd = Command::new(bin);
            cmd.args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--pid-file=",
                "--user=root",
                "--local-ttl=0",
            ])
            .arg(format!("--listen-address={ip}"))
            .arg(format!("--port={port}"));
            if local_test {
                cmd.arg("--local=/test/");
            }
            let child = cmd
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start dnsmasq");
            let mut dns = Dnsmasq {
                child,
                addr: SocketAddr::from((ip, port)),
            };
            // Ready when it answers anything (bounded: 100 × 100 ms).
            let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
            sock.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            let query = [
                0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 5, b'p', b'r', b'o', b'b', b'e', 4, b't',
                b'e', b's', b't', 0, 0, 1, 0, 1,
            ];
            for _ in 0..100 {
                if let Ok(Some(status)) = dns.child.try_wait() {
                    panic!("dnsmasq on {} exited: {status}", dns.addr);
                }
                let _ = sock.send_to(&query, dns.addr);
                let mut buf = [0u8; 512];
                if sock.recv_from(&mut buf).is_ok() {
                    return dns;
                }
            }
            panic!("dnsmasq on {} did not answer", dns.addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::path::Path;

    use super::testdns::{Dnsmasq, fresh_net, wire_name_hex};
    use super::*;
    use crate::dkim::Signer;
    use crate::store::Store;
    use crate::testing;
    use crate::zone::{Addresses, expected_records};

    fn rec(id: &str, name: &str, kind: &str, value: &str, required: bool) -> DnsRecord {
        DnsRecord {
            id: id.into(),
            name: name.into(),
            kind: kind.into(),
            value: value.into(),
            required,
            note: "note".into(),
        }
    }

    fn txt(s: &str) -> Found {
        Found::Txt(s.into())
    }

    fn mx(p: u16, h: &str) -> Found {
        Found::Mx {
            preference: p,
            host: h.into(),
        }
    }

    fn srv(port: u16, target: &str) -> Found {
        Found::Srv {
            priority: 0,
            weight: 1,
            port,
            target: target.into(),
        }
    }

    fn caa(tag: &str, value: &str) -> Found {
        Found::Caa {
            flags: 0,
            tag: tag.into(),
            value: value.into(),
        }
    }

    fn ok(v: &Verdict) -> bool {
        matches!(v, Verdict::Match(_))
    }

    fn wrong(v: &Verdict) -> bool {
        matches!(v, Verdict::Wrong(_))
    }

    #[test]
    fn comparison_table() {
        let d = "chat.example.org.";
        let mxr = rec("dns.mx", d, "MX", "10 chat.example.org.", true);
        let cname = rec("dns.www", "www.chat.example.org.", "CNAME", d, true);
        let spf = rec("dns.spf", d, "TXT", "\"v=spf1 a ~all\"", false);
        let dmarc = rec(
            "dns.dmarc",
            "_dmarc.chat.example.org.",
            "TXT",
            "\"v=DMARC1;p=reject;adkim=s;aspf=s\"",
            false,
        );
        let key = format!("v=DKIM1;k=rsa;p={};s=email;t=s", "A".repeat(300));
        let dkim = rec(
            "dns.dkim",
            "opendkim._domainkey.chat.example.org.",
            "TXT",
            &crate::zone::txt_strings(&key),
            true,
        );
        let sts = rec(
            "dns.mta-sts-txt",
            "_mta-sts.chat.example.org.",
            "TXT",
            "\"v=STSv1; id=abc123\"",
            true,
        );
        let srvr = rec(
            "dns.srv.imaps",
            "_imaps._tcp.chat.example.org.",
            "SRV",
            "0 1 993 chat.example.org.",
            false,
        );
        let caar = rec("dns.caa", d, "CAA", "0 issue \"letsencrypt.org\"", false);
        let caa_acct = rec(
            "dns.caa",
            d,
            "CAA",
            "0 issue \"letsencrypt.org;accounturi=https://ca/acct/7\"",
            false,
        );
        let a = rec("dns.a", d, "A", "203.0.114.7", true);
        let a_any = rec("dns.a", d, "A", crate::zone::PLACEHOLDER_V4, true);
        let ip = |s: &str| Found::Addr(s.parse().expect("ip"));

        let cases: Vec<(&DnsRecord, Vec<Found>, &str)> = vec![
            // MX: case, trailing dot, preference, extra records.
            (&mxr, vec![mx(10, "chat.example.org.")], "ok"),
            (&mxr, vec![mx(10, "CHAT.Example.ORG")], "ok"),
            (
                &mxr,
                vec![mx(5, "other.example."), mx(20, "chat.example.org.")],
                "ok",
            ),
            (&mxr, vec![mx(10, "mail.example.org.")], "wrong"),
            (&mxr, vec![mx(0, ".")], "wrong"),
            (&mxr, vec![], "missing"),
            (&mxr, vec![Found::Cname("x.example.".into())], "wrong"),
            // CNAME.
            (&cname, vec![Found::Cname("chat.example.org".into())], "ok"),
            (
                &cname,
                vec![Found::Cname("other.example.org.".into())],
                "wrong",
            ),
            (&cname, vec![], "missing"),
            // TXT: extra records fine, whitespace/case tolerant, split strings joined.
            (
                &spf,
                vec![txt("google-site-verification=x"), txt("v=spf1 a ~all")],
                "ok",
            ),
            (&spf, vec![txt("v=spf1  a  ~all")], "ok"),
            (&spf, vec![txt("google-site-verification=x")], "missing"),
            (&spf, vec![txt("v=spf1 -all")], "wrong"),
            (
                &dmarc,
                vec![txt("v=DMARC1; p=reject; adkim=s; aspf=s; rua=mailto:x@y")],
                "ok",
            ),
            (&dmarc, vec![txt("v=DMARC1; p=none")], "wrong"),
            (&dkim, vec![txt(&key)], "ok"),
            (&dkim, vec![txt(&key.replace(";p=", "; p = "))], "ok"),
            (&dkim, vec![txt(&key.replace("AAAA", "BBBB"))], "wrong"),
            (&dkim, vec![txt("k=rsa; p=OTHER")], "wrong"),
            (&dkim, vec![], "missing"),
            (&sts, vec![txt("v=STSv1;id=abc123")], "ok"),
            (&sts, vec![txt("v=STSv1; id=old")], "wrong"),
            // SRV: port and target matter.
            (&srvr, vec![srv(993, "chat.example.org")], "ok"),
            (&srvr, vec![srv(143, "chat.example.org.")], "wrong"),
            (&srvr, vec![], "missing"),
            // CAA.
            (
                &caar,
                vec![caa("issue", "letsencrypt.org; accounturi=https://x/1")],
                "ok",
            ),
            (&caar, vec![caa("issue", "pki.goog")], "wrong"),
            (&caar, vec![caa("iodef", "mailto:x@y")], "missing"),
            // CAA with this relay's ACME account (RFC 8657): the account must match;
            // without one it works but is weaker than recommended.
            (
                &caa_acct,
                vec![caa(
                    "issue",
                    "letsencrypt.org; accounturi=https://ca/acct/7",
                )],
                "ok",
            ),
            (&caa_acct, vec![caa("issue", "letsencrypt.org")], "partial"),
            (
                &caa_acct,
                vec![caa("issue", "letsencrypt.org;accounturi=https://ca/acct/8")],
                "wrong",
            ),
            (
                &caa_acct,
                vec![
                    caa("issue", "letsencrypt.org;accounturi=https://ca/acct/8"),
                    caa("issue", "letsencrypt.org;accounturi=https://ca/acct/7"),
                ],
                "ok",
            ),
            (&caa_acct, vec![caa("issue", "pki.goog")], "wrong"),
            (&caa_acct, vec![], "missing"),
            // Addresses: the expected one among others; any when unknown.
            (&a, vec![ip("203.0.114.7")], "ok"),
            (&a, vec![ip("198.51.100.1"), ip("203.0.114.7")], "ok"),
            (&a, vec![ip("198.51.100.1")], "wrong"),
            (&a, vec![ip("2a01:4f8::1")], "missing"),
            (&a, vec![], "missing"),
            (&a_any, vec![ip("198.51.100.1")], "ok"),
        ];
        for (record, found, want) in cases {
            let v = judge(record, &found);
            let got = match &v {
                Verdict::Match(_) => "ok",
                Verdict::Wrong(_) => "wrong",
                Verdict::Missing => "missing",
                Verdict::Partial(_) => "partial",
            };
            assert_eq!(got, want, "{} with {found:?}: {v:?}", record.id);
        }
        // The remark says which address the unknown-address record found.
        assert_eq!(
            judge(&a_any, &[ip("198.51.100.1")]),
            Verdict::Match(Some(
                "points to 198.51.100.1; this box cannot tell whether that is its public \
                 address"
                    .into()
            ))
        );
        assert!(ok(&judge(&mxr, &[mx(10, "chat.example.org")])));
        assert!(wrong(&judge(&mxr, &[mx(10, "x.")])));
    }

    #[test]
    fn odd_data_does_not_panic() {
        let odd = [
            rec("x", "", "MX", "", true),
            rec("x", ".", "SRV", "0", false),
            rec("x", "a..b", "CAA", "", false),
            rec("x", "a.", "TXT", "\"unterminated", false),
            rec("x", "a.", "HINFO", "x", false),
        ];
        let found = [
            mx(0, ""),
            txt(""),
            txt(";;=;="),
            srv(0, ""),
            caa("", ""),
            Found::Other("?".into()),
        ];
        for r in &odd {
            let _ = verdict_check(r, &found, judge(r, &found));
        }
        assert_eq!(parse_txt("\"a\\\"b\" \"c\""), "a\"bc");
        assert_eq!(parse_txt("\"unterminated"), "unterminated");
    }

    #[test]
    fn statuses_follow_required_and_address_rule() {
        let req = rec("dns.mx", "d.", "MX", "10 d.", true);
        let opt = rec("dns.spf", "d.", "TXT", "\"v=spf1 a ~all\"", false);
        assert_eq!(
            verdict_check(&req, &[], Verdict::Missing).status,
            CheckStatus::Error
        );
        assert_eq!(
            verdict_check(&opt, &[], Verdict::Missing).status,
            CheckStatus::Warning
        );
        let w = verdict_check(&req, &[], Verdict::Wrong(vec![mx(10, "x.")]));
        assert_eq!(
            (w.status, w.found.as_deref()),
            (CheckStatus::Error, Some("10 x."))
        );
        assert_eq!(w.expected.as_deref(), Some("10 d."));
        // A CAA record without the account: a warning saying what to add; one naming
        // only another account blocks the certificate: an error.
        let caa_acct = rec(
            "dns.caa",
            "d.",
            "CAA",
            "0 issue \"letsencrypt.org;accounturi=https://ca/acct/7\"",
            false,
        );
        let plain = [caa("issue", "letsencrypt.org")];
        let partial = verdict_check(&caa_acct, &plain, judge(&caa_acct, &plain));
        assert_eq!(partial.status, CheckStatus::Warning, "{partial:#?}");
        assert!(
            partial
                .details
                .as_deref()
                .unwrap_or("")
                .contains("accounturi=https://ca/acct/7"),
            "{partial:#?}"
        );
        let other = [caa("issue", "letsencrypt.org;accounturi=https://ca/acct/8")];
        assert_eq!(
            verdict_check(&caa_acct, &other, judge(&caa_acct, &other)).status,
            CheckStatus::Error
        );
        // Neither A nor AAAA: error; A missing beside an AAAA: warning (DNS-1).
        let a = rec("dns.a", "d.", "A", crate::zone::PLACEHOLDER_V4, true);
        let aaaa = rec("dns.aaaa", "d.", "AAAA", "2a01:4f8::1", false);
        let v6 = Found::Addr("2a01:4f8::1".parse().expect("ip"));
        let mut checks = vec![
            verdict_check(&a, &[], Verdict::Missing),
            verdict_check(&aaaa, &[], Verdict::Missing),
        ];
        adjust_address_checks(&mut checks);
        assert_eq!(checks[0].status, CheckStatus::Error);
        let mut checks = vec![
            verdict_check(&a, &[], Verdict::Missing),
            verdict_check(
                &aaaa,
                std::slice::from_ref(&v6),
                judge(&aaaa, std::slice::from_ref(&v6)),
            ),
        ];
        adjust_address_checks(&mut checks);
        assert_eq!(checks[0].status, CheckStatus::Warning);
        assert_eq!(checks[1].status, CheckStatus::Ok);
        // An AAAA placeholder with no record: fine.
        let placeholder = rec("dns.aaaa", "d.", "AAAA", crate::zone::PLACEHOLDER_V6, false);
        assert_eq!(
            verdict_check(&placeholder, &[], Verdict::Missing).status,
            CheckStatus::Ok
        );
    }

    // ---- against real DNS servers on loopback ------------------------------------------

    const DOMAIN: &str = "relay.test";
    const PUBLIC_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 114, 7);

    fn signer(config: &Config, dir: &Path) -> Signer {
        let store = Store::open(&dir.join("store.redb")).expect("store");
        Signer::load_or_create(config, &store)
            .expect("key")
            .expect("signs")
    }

    /// dnsmasq options serving `records` (the expected ones, as the operator would
    /// create them). On the command line dnsmasq keeps quotes; TXT character-strings
    /// are separated by commas.
    fn serve(records: &[DnsRecord]) -> Vec<String> {
        let bare = |n: &str| n.trim_end_matches('.').to_string();
        let mut args = Vec::new();
        for r in records {
            let name = bare(&r.name);
            match r.kind.as_str() {
                "A" | "AAAA" if !crate::zone::is_placeholder(&r.value) => {
                    args.push(format!("--host-record={name},{}", r.value))
                }
                "MX" => {
                    let mut it = r.value.split_whitespace();
                    let pref = it.next().unwrap_or("10");
                    let host = bare(it.next().unwrap_or(""));
                    args.push(format!("--mx-host={name},{host},{pref}"));
                }
                "CNAME" => args.push(format!("--cname={name},{}", bare(&r.value))),
                "TXT" => {
                    let text = parse_txt(&r.value);
                    let chunks: Vec<String> = text
                        .as_bytes()
                        .chunks(255)
                        .map(|c| String::from_utf8_lossy(c).into_owned())
                        .collect();
                    args.push(format!("--txt-record={name},{}", chunks.join(",")));
                }
                "SRV" => {
                    let f: Vec<&str> = r.value.split_whitespace().collect();
                    args.push(format!(
                        "--srv-host={name},{},{},{},{}",
                        bare(f[3]),
                        f[2],
                        f[0],
                        f[1]
                    ));
                }
                "CAA" => {
                    // `0 issue "value"`: flags, tag length, tag, value (RFC 8659 §4.1).
                    let value = r
                        .value
                        .splitn(3, ' ')
                        .nth(2)
                        .unwrap_or("")
                        .trim_matches('"');
                    args.push(format!(
                        "--dns-rr={name},257,0005{}{}",
                        hex_of("issue"),
                        hex_of(value)
                    ));
                }
                _ => {}
            }
        }
        args
    }

    fn hex_of(s: &str) -> String {
        s.bytes().map(|b| format!("{b:02x}")).collect()
    }

    /// A resolver on `127.a.b.1:53` that knows `NS ns.relay.test` with its address
    /// `ns_ip`, and a stale MX (to show the checks do not take its word for records).
    fn resolver_for(net: (u8, u8), ns_ip: Ipv4Addr) -> Dnsmasq {
        resolver_with_ptr(net, ns_ip, Some(DOMAIN))
    }

    /// [`resolver_for`], whose reverse zone of [`PUBLIC_V4`] names `ptr` (none: NXDOMAIN).
    fn resolver_with_ptr(net: (u8, u8), ns_ip: Ipv4Addr, ptr: Option<&str>) -> Dnsmasq {
        let mut args = vec![
            format!(
                "--dns-rr={DOMAIN},2,{}",
                wire_name_hex(&format!("ns.{DOMAIN}"))
            ),
            format!("--host-record=ns.{DOMAIN},{ns_ip}"),
            format!("--mx-host={DOMAIN},stale.example.test,10"),
            "--local=/114.0.203.in-addr.arpa/".to_string(),
        ];
        if let Some(name) = ptr {
            args.push(format!("--ptr-record=7.114.0.203.in-addr.arpa,{name}"));
        }
        Dnsmasq::start(Ipv4Addr::new(127, net.0, net.1, 1), 53, true, &args)
    }

    struct Scene {
        config: Config,
        records: Vec<DnsRecord>,
        _dir: tempfile::TempDir,
    }

    fn scene(resolver: &Dnsmasq) -> Scene {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = testing::config(dir.path(), DOMAIN);
        config.dns_resolver = vec![resolver.addr];
        let s = signer(&config, dir.path());
        let records = expected_records(
            &config,
            Some(&s),
            Addresses {
                v4: Some(PUBLIC_V4),
                v6: None,
            },
        );
        Scene {
            config,
            records,
            _dir: dir,
        }
    }

    fn status_of<'a>(checks: &'a [Check], id: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("no check {id} in {checks:#?}"))
    }

    #[tokio::test]
    async fn all_records_correct_at_the_authoritative_server() {
        let net = fresh_net();
        let ns_ip = Ipv4Addr::new(127, net.0, net.1, 2);
        let resolver = resolver_for(net, ns_ip);
        let s = scene(&resolver);
        let _auth = Dnsmasq::start(ns_ip, 53, true, &serve(&s.records));
        let checks = check_dns(&s.config, &s.records).await;
        let ids: Vec<&str> = checks.iter().map(|c| c.id.as_str()).collect();
        // One check per record, same order, then the reverse DNS of the public address.
        let mut want: Vec<&str> = s.records.iter().map(|r| r.id.as_str()).collect();
        want.push("dns.ptr.v4");
        assert_eq!(ids, want);
        assert_eq!(
            status_of(&checks, "dns.ptr.v4").found.as_deref(),
            Some("relay.test.")
        );
        for c in &checks {
            assert_eq!(c.status, CheckStatus::Ok, "{c:#?}");
        }
        // The DKIM key (two character-strings) was found and joined.
        assert!(
            status_of(&checks, "dns.dkim")
                .found
                .as_deref()
                .unwrap_or("")
                .contains("p=")
        );
        assert_eq!(
            status_of(&checks, "dns.mx").found.as_deref(),
            Some("10 relay.test.")
        );
    }

    #[tokio::test]
    async fn wrong_missing_and_recommended_missing() {
        let net = fresh_net();
        let ns_ip = Ipv4Addr::new(127, net.0, net.1, 2);
        let resolver = resolver_for(net, ns_ip);
        let s = scene(&resolver);
        // The operator made the MX point elsewhere, forgot the DKIM key and the SRV
        // records, and has an extra TXT record at the domain.
        let mut served: Vec<DnsRecord> = s
            .records
            .iter()
            .filter(|r| r.id != "dns.dkim" && !r.id.starts_with("dns.srv."))
            .cloned()
            .collect();
        for r in &mut served {
            if r.id == "dns.mx" {
                r.value = "10 mail.elsewhere.test.".into();
            }
        }
        let mut args = serve(&served);
        args.push(format!(
            "--txt-record={DOMAIN},google-site-verification=abc"
        ));
        let _auth = Dnsmasq::start(ns_ip, 53, true, &args);
        let checks = check_dns(&s.config, &s.records).await;
        let mx = status_of(&checks, "dns.mx");
        assert_eq!(mx.status, CheckStatus::Error, "{mx:#?}");
        assert_eq!(mx.expected.as_deref(), Some("10 relay.test."));
        assert_eq!(mx.found.as_deref(), Some("10 mail.elsewhere.test."));
        let dkim = status_of(&checks, "dns.dkim");
        assert_eq!(dkim.status, CheckStatus::Error, "{dkim:#?}");
        assert_eq!(dkim.found, None);
        assert!(dkim.expected.as_deref().unwrap_or("").contains("v=DKIM1"));
        for id in [
            "dns.srv.submission",
            "dns.srv.submissions",
            "dns.srv.imap",
            "dns.srv.imaps",
        ] {
            assert_eq!(status_of(&checks, id).status, CheckStatus::Warning, "{id}");
        }
        // Everything else still checked in the same pass, extra TXT tolerated.
        for id in [
            "dns.a",
            "dns.www",
            "dns.mta-sts",
            "dns.mta-sts-txt",
            "dns.spf",
            "dns.dmarc",
            "dns.caa",
            "dns.adsp",
        ] {
            assert_eq!(
                status_of(&checks, id).status,
                CheckStatus::Ok,
                "{id}: {checks:#?}"
            );
        }
    }

    /// The reverse DNS of the relay's public address: missing or naming another host is
    /// a warning with a plain-language hint (never an error); the records' checks are
    /// not touched.
    #[tokio::test]
    async fn reverse_dns_missing_or_elsewhere_is_a_warning_with_a_hint() {
        for (ptr, summary) in [
            (None, "has no reverse DNS (PTR) record"),
            (
                Some("host-7.isp.example"),
                "names host-7.isp.example., not this relay",
            ),
        ] {
            let net = fresh_net();
            let ns_ip = Ipv4Addr::new(127, net.0, net.1, 2);
            let resolver = resolver_with_ptr(net, ns_ip, ptr);
            let s = scene(&resolver);
            let _auth = Dnsmasq::start(ns_ip, 53, true, &serve(&s.records));
            let checks = check_dns(&s.config, &s.records).await;
            let c = status_of(&checks, "dns.ptr.v4");
            assert_eq!(c.status, CheckStatus::Warning, "{c:#?}");
            assert!(c.summary.contains(summary), "{c:#?}");
            assert!(c.summary.contains("203.0.114.7"), "{c:#?}");
            let details = c.details.as_deref().unwrap_or("");
            assert!(
                details.contains("Many mail servers refuse")
                    && details.contains("internet or hosting provider")
                    && details.contains("PTR record to relay.test."),
                "{c:#?}"
            );
            assert_eq!(c.expected.as_deref(), Some("relay.test."));
            assert_eq!(c.found.is_some(), ptr.is_some(), "{c:#?}");
            for c in checks.iter().filter(|c| !c.id.starts_with("dns.ptr")) {
                assert_eq!(c.status, CheckStatus::Ok, "{c:#?}");
            }
        }
    }

    /// RFC 8657 against a real server: once the relay has its ACME account the CAA
    /// record must name it; Let's Encrypt without the account is a warning saying what
    /// to add; another account only is an error (the certificate would be refused).
    #[tokio::test]
    async fn caa_with_the_acme_account_at_the_authoritative_server() {
        let uri = "https://acme-v02.api.letsencrypt.org/acme/acct/4242";
        for (served, want) in [
            (
                format!("0 issue \"letsencrypt.org;accounturi={uri}\""),
                CheckStatus::Ok,
            ),
            (
                "0 issue \"letsencrypt.org\"".to_string(),
                CheckStatus::Warning,
            ),
            (
                "0 issue \"letsencrypt.org;accounturi=https://x.example/acct/1\"".to_string(),
                CheckStatus::Error,
            ),
        ] {
            let net = fresh_net();
            let ns_ip = Ipv4Addr::new(127, net.0, net.1, 2);
            let resolver = resolver_for(net, ns_ip);
            let dir = tempfile::tempdir().expect("tempdir");
            let mut config = testing::config(dir.path(), DOMAIN);
            config.dns_resolver = vec![resolver.addr];
            let acme = crate::tls::stored::acme_dir(&config);
            std::fs::create_dir_all(&acme).expect("acme dir");
            std::fs::write(
                acme.join(crate::acme::cert::ACCOUNT_FILE),
                format!(
                    r#"{{"id":"{uri}","key_pkcs8":"AAAA","directory":"{}"}}"#,
                    config.appliance.acme_directory
                ),
            )
            .expect("account file");
            let s = signer(&config, dir.path());
            let records = expected_records(
                &config,
                Some(&s),
                Addresses {
                    v4: Some(PUBLIC_V4),
                    v6: None,
                },
            );
            let mut zone: Vec<DnsRecord> = records.clone();
            for r in &mut zone {
                if r.id == "dns.caa" {
                    assert!(r.value.contains(uri), "{r:?}");
                    r.value = served.clone();
                }
            }
            let _auth = Dnsmasq::start(ns_ip, 53, true, &serve(&zone));
            let checks = check_dns(&config, &records).await;
            let c = status_of(&checks, "dns.caa");
            assert_eq!(c.status, want, "{served}: {c:#?}");
        }
    }

    /// An address check that could not be made asks no reverse DNS either (WIZ-2).
    #[test]
    fn reverse_dns_only_for_answered_global_addresses() {
        let a = rec("dns.a", "d.", "A", "203.0.114.7", true);
        let a_any = rec("dns.a", "d.", "A", crate::zone::PLACEHOLDER_V4, true);
        let aaaa = rec("dns.aaaa", "d.", "AAAA", "2a01:4f8::1", false);
        let check = |status, found: Option<&str>| Check {
            id: "dns.a".into(),
            status,
            summary: String::new(),
            details: None,
            expected: None,
            found: found.map(str::to_string),
        };
        let v4: IpAddr = "203.0.114.7".parse().expect("ip");
        let v6: IpAddr = "2a01:4f8::1".parse().expect("ip");
        assert_eq!(
            public_addresses(
                &[a.clone(), aaaa.clone()],
                &[
                    check(CheckStatus::Error, None),
                    check(CheckStatus::Ok, None)
                ]
            ),
            [v4, v6]
        );
        assert!(
            public_addresses(
                std::slice::from_ref(&a),
                &[check(CheckStatus::Unknown, None)]
            )
            .is_empty()
        );
        // Not detected here: the global address the record points to.
        assert_eq!(
            public_addresses(
                std::slice::from_ref(&a_any),
                &[check(CheckStatus::Ok, Some("192.168.1.5; 203.0.114.7"))]
            ),
            [v4]
        );
        assert!(
            public_addresses(&[a_any], &[check(CheckStatus::Ok, Some("192.168.1.5"))]).is_empty()
        );
    }

    #[tokio::test]
    async fn silent_authoritative_server_is_could_not_check_in_time() {
        let net = fresh_net();
        let ns_ip = Ipv4Addr::new(127, net.0, net.1, 3);
        let resolver = resolver_for(net, ns_ip);
        let s = scene(&resolver);
        // Port 53 there takes queries and never answers.
        let _silent = tokio::net::UdpSocket::bind(SocketAddr::from((ns_ip, 53)))
            .await
            .expect("bind silent server");
        let started = Instant::now();
        let checks = check_dns(&s.config, &s.records).await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(16), "took {took:?}");
        assert_eq!(checks.len(), s.records.len());
        for c in &checks {
            assert_eq!(c.status, CheckStatus::Unknown, "{c:#?}");
            assert!(
                c.details.as_deref().unwrap_or("").contains("no answer"),
                "{c:#?}"
            );
        }
    }

    #[tokio::test]
    async fn refusing_server_and_unknown_domain_are_could_not_check() {
        let net = fresh_net();
        let ns_ip = Ipv4Addr::new(127, net.0, net.1, 2);
        let resolver = resolver_for(net, ns_ip);
        let s = scene(&resolver);
        // A server that holds no zone and forwards nothing: REFUSED.
        let _auth = Dnsmasq::start(ns_ip, 53, false, &[]);
        let checks = check_dns(&s.config, &s.records).await;
        for c in &checks {
            assert_eq!(c.status, CheckStatus::Unknown, "{c:#?}");
        }
        // A domain the resolver knows no name servers for.
        let mut other = s.config.clone();
        other.mail_domain = "unregistered.test".into();
        let checks = check_dns(&other, &s.records).await;
        for c in &checks {
            assert_eq!(c.status, CheckStatus::Unknown, "{c:#?}");
            assert!(
                c.details
                    .as_deref()
                    .unwrap_or("")
                    .contains("no name servers"),
                "{c:#?}"
            );
        }
    }

    #[tokio::test]
    async fn truncated_answer_is_asked_again_over_tcp() {
        let net = fresh_net();
        let ns_ip = Ipv4Addr::new(127, net.0, net.1, 2);
        let resolver = resolver_for(net, ns_ip);
        let s = scene(&resolver);
        // Twenty 200-byte TXT records beside the SPF record: more than a UDP answer
        // holds (EDNS 1232 bytes), so the server sets TC and only TCP has them all.
        let mut args = serve(&s.records);
        for i in 0..20 {
            args.push(format!("--txt-record={DOMAIN},x{i:02}={}", "y".repeat(200)));
        }
        let _auth = Dnsmasq::start(ns_ip, 53, true, &args);
        let name = absolute_name(DOMAIN).expect("name");
        let server = SocketAddr::from((ns_ip, 53));
        let Ok(Reply::Records(found)) =
            query(server, &name, RecordType::TXT, Duration::from_secs(3)).await
        else {
            panic!("no answer");
        };
        assert_eq!(found.len(), 21, "{found:?}");
        let checks = check_dns(&s.config, &s.records).await;
        assert_eq!(
            status_of(&checks, "dns.spf").status,
            CheckStatus::Ok,
            "{checks:#?}"
        );
    }
}
