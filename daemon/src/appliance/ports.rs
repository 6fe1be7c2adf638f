//! The wizard's port-forwarding step: what can be checked from inside the home network
//! (spec appliance.md WIZ-6, issue #6 step 4). Outbound port 25 is probed by greeting a
//! big mail server (`outbound_probe`, 5 s); the address the domain points to (asked of
//! its authoritative servers, [`super::dnscheck`]) is compared with this box's
//! addresses. Reachability from the internet needs an outside vantage point: the check
//! says how to test it with a phone on mobile data and stays "could not check"
//! (WIZ-2). Stable ids (WIZ-1): `port.25.outbound`, `port.public-address`,
//! `port.inbound`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use relaybox_webui::{Check, CheckStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{Config, Mode};
use crate::zone::{global_v4, global_v6, lan_address};

/// WIZ-6: connect and greeting timeout of the outbound port 25 probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The ports the router must forward to this box (spec relay.md §1, RT-1): UDP 3478
/// only while TURN runs.
pub fn forwarded_ports(config: &Config) -> &'static str {
    if config.turn_listen.is_empty() {
        "25, 80, 443, 465, 587 and 993 (TCP)"
    } else {
        "25, 80, 443, 465, 587 and 993 (TCP) and 3478 (UDP)"
    }
}

/// Every check of this step, in the order the page shows them.
pub async fn check_ports(config: &Config) -> Vec<Check> {
    let (outbound, public) = tokio::join!(
        check_outbound_with(config, PROBE_TIMEOUT),
        check_public_address(config)
    );
    vec![outbound, public, inbound(config)]
}

// ---- outbound port 25 ---------------------------------------------------------------

/// `port.25.outbound`: can this box reach other mail servers? Ok on a `220` greeting
/// (RFC 5321 §4.2); Warning "probably blocks" when the connection never completes or
/// is never greeted (the usual sign of a provider blocking port 25); Warning "refused"
/// when something answered and refused it (the probe host not listening, or a firewall
/// rejecting: not evidence of a provider's block, issue 16 item 9); Unknown when the
/// probe host's address cannot be found (no DNS: nothing was tried).
pub(crate) async fn check_outbound_with(config: &Config, wait: Duration) -> Check {
    let probe = config.appliance.outbound_probe.as_str();
    let check = |status, summary: String, details: Option<String>, found: Option<String>| Check {
        id: "port.25.outbound".into(),
        status,
        summary,
        details,
        // The probe's address is named once, in the details.
        expected: Some("a mail server's 220 greeting".into()),
        found,
    };
    let Some((host, port)) = probe
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
    else {
        return check(
            CheckStatus::Unknown,
            "Could not check outgoing port 25.".into(),
            Some(format!("outbound_probe {probe:?} is not host:port")),
            None,
        );
    };
    let addr = match resolve(config, host, wait).await {
        Ok(addr) => SocketAddr::new(addr, port),
        Err(reason) => {
            return check(
                CheckStatus::Unknown,
                "Could not check outgoing port 25.".into(),
                Some(format!(
                    "The address of {host} could not be found ({reason}); check that this \
                     box has a working internet connection and DNS."
                )),
                None,
            );
        }
    };
    // The probe as written, with the address it resolved to when that differs.
    let target = if host.parse::<IpAddr>().is_ok() {
        probe.to_string()
    } else {
        format!("{probe} ({addr})")
    };
    let blocked = |what: String| {
        check(
            CheckStatus::Warning,
            "Your provider probably blocks outgoing port 25.".into(),
            Some(format!(
                "{what}. Many home internet providers block port 25 so that infected \
                 computers cannot send spam; then this relay cannot deliver mail to other \
                 servers. Ask your provider to unblock port 25 (some do it on request or \
                 with a business plan)."
            )),
            None,
        )
    };
    let mut stream = match tokio::time::timeout(wait, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::NetworkUnreachable | std::io::ErrorKind::HostUnreachable
            ) =>
        {
            return check(
                CheckStatus::Unknown,
                "Could not check outgoing port 25.".into(),
                Some(format!(
                    "{target} cannot be reached at all ({e}): this box seems to have no \
                     internet connection."
                )),
                None,
            );
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return check(
                CheckStatus::Warning,
                "The test connection for outgoing port 25 was refused.".into(),
                Some(format!(
                    "Something answered and closed the connection at once, so the way out \
                     is not simply blocked: either {target} does not take connections right \
                     now, or a firewall on the way (your router's, or your provider's) \
                     rejects port 25. Check again in a few minutes; if it stays so, look at \
                     your router's firewall settings, or set outbound_probe to another mail \
                     server."
                )),
                Some(e.to_string()),
            );
        }
        Ok(Err(e)) => return blocked(format!("Connecting to {target} failed: {e}")),
        Err(_) => {
            return blocked(format!(
                "Connecting to {target} did not complete within {} s",
                wait.as_secs()
            ));
        }
    };
    let mut buf = [0u8; 512];
    let greeting = match tokio::time::timeout(wait, stream.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect::<String>(),
        Ok(_) => return blocked(format!("{probe} closed the connection without a greeting")),
        Err(_) => {
            return blocked(format!(
                "{probe} accepted the connection but sent no greeting within {} s",
                wait.as_secs()
            ));
        }
    };
    // Polite end of the session (RFC 5321 §4.1.1.10); the answer does not matter.
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(b"QUIT\r\n")).await;
    if greeting.starts_with("220") {
        check(
            CheckStatus::Ok,
            "Outgoing port 25 is open.".into(),
            Some(format!("{probe} greeted this box.")),
            Some(greeting),
        )
    } else {
        check(
            CheckStatus::Warning,
            "Something intercepts outgoing port 25.".into(),
            Some(format!(
                "{probe} answered, but not with a mail server's greeting: something between \
                 this box and the internet intercepts port 25."
            )),
            Some(greeting),
        )
    }
}

/// `host`'s address (IPv4 preferred) through the configured resolver.
async fn resolve(config: &Config, host: &str, wait: Duration) -> Result<IpAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    let resolver = super::dnscheck::resolver(config)?;
    let name = format!("{}.", host.trim_end_matches('.'));
    match tokio::time::timeout(wait, resolver.lookup_ip(name)).await {
        Ok(Ok(ips)) => {
            let ips: Vec<IpAddr> = ips.iter().collect();
            ips.iter()
                .find(|ip| ip.is_ipv4())
                .or(ips.first())
                .copied()
                .ok_or_else(|| "no address".to_string())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", wait.as_secs())),
    }
}

// ---- the public address ----------------------------------------------------------------

/// `port.public-address`: where the domain's A/AAAA records point (asked of its
/// authoritative servers, WIZ-4), or the configured IPv4 in IP-only mode, compared with
/// this box's addresses.
pub async fn check_public_address(config: &Config) -> Check {
    if let Mode::IpOnly(ip) = &config.mode {
        return classify_ip_only(
            IpAddr::V4(*ip),
            forwarded_ports(config),
            is_local_address,
            lan_address(),
        );
    }
    match super::dnscheck::domain_addresses(config).await {
        Ok(addrs) => classify_public(
            &config.mail_domain,
            &addrs,
            forwarded_ports(config),
            is_local_address,
            lan_address(),
        ),
        Err(reason) => Check {
            id: "port.public-address".into(),
            status: CheckStatus::Unknown,
            summary: format!(
                "Could not check which address {} points to.",
                config.mail_domain
            ),
            details: Some(reason),
            expected: None,
            found: None,
        },
    }
}

/// True when `ip` is assigned to an interface of this host (binding to it succeeds).
fn is_local_address(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// A publicly routable address (not private, loopback, link-local, CGNAT, ULA, …).
fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => global_v4(a),
        IpAddr::V6(a) => global_v6(a),
    }
}

/// The verdict on the address of an IP-only relay (issue 16 item 9): a local-network
/// address of this box is what the name page offers for a family or a LAN, so it is
/// fine (reachable inside the network only); an address that is not this box's and not
/// public reaches nothing.
pub(crate) fn classify_ip_only(
    ip: IpAddr,
    ports: &str,
    is_local: impl Fn(IpAddr) -> bool,
    lan: Option<IpAddr>,
) -> Check {
    let check = |status, summary: String, details: String| Check {
        id: "port.public-address".into(),
        status,
        summary,
        details: Some(details),
        expected: Some(
            "an address of this box, or the public address of your internet connection".into(),
        ),
        found: Some(ip.to_string()),
    };
    let this_lan = lan
        .map(|a| format!("this box's local address {a}"))
        .unwrap_or_else(|| "this box's local address".into());
    match (is_global(ip), is_local(ip)) {
        (false, true) => check(
            CheckStatus::Ok,
            format!("{ip} is this box's address in your local network."),
            "Phones and computers on this network reach the relay directly; nothing needs \
             forwarding on the router. From the internet it cannot be reached, so accounts \
             work while the phones are on this network."
                .into(),
        ),
        (true, true) => check(
            CheckStatus::Ok,
            format!("{ip} is this box's own public address."),
            format!("Make sure ports {ports} are not blocked by a firewall."),
        ),
        (true, false) => check(
            CheckStatus::Ok,
            format!("{ip} is a public address, not on this box."),
            format!(
                "That is normal behind a home router: forward ports {ports} on the router \
                 to {this_lan}. Whether the forwarding works cannot be checked from inside \
                 your network."
            ),
        ),
        (false, false) => check(
            CheckStatus::Error,
            format!("{ip} is not an address of this box."),
            format!(
                "It is a private address, and no device here has it, so nobody can reach the \
                 relay at it. Choose {this_lan} (for use inside your network) or the public \
                 address of your internet connection on the name page."
            ),
        ),
    }
}

/// The verdict on the addresses `domain` points to.
pub(crate) fn classify_public(
    domain: &str,
    addrs: &[IpAddr],
    ports: &str,
    is_local: impl Fn(IpAddr) -> bool,
    lan: Option<IpAddr>,
) -> Check {
    let list = addrs
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let check = |status, summary: String, details: String| Check {
        id: "port.public-address".into(),
        status,
        summary,
        details: Some(details),
        expected: Some("the public address of your internet connection".into()),
        found: (!addrs.is_empty()).then(|| list.clone()),
    };
    if addrs.is_empty() {
        return check(
            CheckStatus::Error,
            format!("{domain} has no address record."),
            "Create the A record (and the AAAA record if you have public IPv6) with the \
             public address of your internet connection."
                .into(),
        );
    }
    let private: Vec<String> = addrs
        .iter()
        .filter(|ip| !is_global(**ip))
        .map(IpAddr::to_string)
        .collect();
    if !private.is_empty() {
        return check(
            CheckStatus::Error,
            format!(
                "{domain} points to a private address ({}).",
                private.join(", ")
            ),
            "Private (LAN) addresses work only inside your home network: other mail servers \
             and phones on the internet cannot reach them. Use the public address of your \
             internet connection instead (your router's status page shows it)."
                .into(),
        );
    }
    if addrs.iter().any(|ip| is_local(*ip)) {
        return check(
            CheckStatus::Ok,
            format!("{domain} points to this box ({list})."),
            format!(
                "This box has that address itself; make sure ports {ports} are not blocked by a firewall."
            ),
        );
    }
    let lan = lan
        .map(|ip| format!("this box's LAN address {ip}"))
        .unwrap_or_else(|| "this box's LAN address".into());
    check(
        CheckStatus::Ok,
        format!("{domain} points to {list}, a public address."),
        format!(
            "That address is not on this box, as is normal behind a home router: forward \
             ports {ports} on the router to {lan}. Whether the forwarding works \
             cannot be checked from inside your network."
        ),
    )
}

// ---- inbound -------------------------------------------------------------------------

/// `port.inbound`: WIZ-6, always "could not check" from inside, with the way to check
/// from outside; for an IP-only relay on a local-network address, from a phone on that
/// network instead (nothing outside can reach it).
fn inbound(config: &Config) -> Check {
    let url = format!("https://{}/", config.mail_domain);
    let lan_only = matches!(&config.mode, Mode::IpOnly(ip) if !global_v4(*ip));
    let (summary, details) = if lan_only {
        (
            "Whether phones reach the relay cannot be checked from the box itself.",
            format!(
                "Check it with a phone connected to this network (Wi-Fi on): open {url}. The \
                 browser warns about the relay's self-signed certificate, which is expected; \
                 if the relay's page loads after that, phones reach it."
            ),
        )
    } else {
        (
            "Whether the relay can be reached from the internet cannot be checked from \
             inside your network.",
            format!(
                "Check it from outside: on a phone, turn Wi-Fi off so it uses mobile data, \
                 and open {url}. If the relay's page loads, the forwarding of port 443 works \
                 (ports {} are forwarded the same way on most routers).",
                forwarded_ports(config)
            ),
        )
    };
    Check {
        id: "port.inbound".into(),
        status: CheckStatus::Unknown,
        summary: summary.into(),
        details: Some(details),
        expected: None,
        found: None,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use tokio::net::TcpListener;
    use tokio::time::Instant;

    use super::*;
    use crate::appliance::dnscheck::testdns::{Dnsmasq, fresh_net, wire_name_hex};
    use crate::testing;

    const WAIT: Duration = Duration::from_secs(2);

    fn probe_config(probe: &str) -> (Config, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = testing::config(dir.path(), "relay.test");
        config.appliance.outbound_probe = probe.to_string();
        (config, dir)
    }

    /// A fake mail server on loopback: greets with `greeting` (or never), then waits
    /// for QUIT. Runs until the test ends.
    async fn fake_smtp(greeting: Option<&'static str>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            for _ in 0..4 {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                if let Some(g) = greeting {
                    let _ = s.write_all(g.as_bytes()).await;
                }
                let mut buf = [0u8; 64];
                let _ = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn outbound_probe_greeted_is_ok() {
        let addr = fake_smtp(Some("220 mx.example ESMTP\r\n")).await;
        let (config, _dir) = probe_config(&addr.to_string());
        let c = check_outbound_with(&config, WAIT).await;
        assert_eq!(c.id, "port.25.outbound");
        assert_eq!(c.status, CheckStatus::Ok, "{c:#?}");
        assert_eq!(c.found.as_deref(), Some("220 mx.example ESMTP"));
        // Issue 16 item 9: the probe address once, not in every line.
        let text = format!("{c:?}");
        assert_eq!(text.matches(&addr.to_string()).count(), 1, "{c:#?}");
    }

    #[tokio::test]
    async fn outbound_probe_refused_or_silent_is_a_warning() {
        // A port nobody listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let (config, _dir) = probe_config(&format!("127.0.0.1:{port}"));
        let c = check_outbound_with(&config, WAIT).await;
        assert_eq!(c.status, CheckStatus::Warning, "{c:#?}");
        // Issue 16 item 9: a refusal is an answer, not a sign of a provider's block; the
        // probe address is named once.
        let text = format!("{} {}", c.summary, c.details.as_deref().unwrap_or(""));
        assert!(c.summary.contains("refused"), "{c:#?}");
        assert!(!text.contains("probably blocks"), "{c:#?}");
        assert_eq!(
            text.matches(&format!("127.0.0.1:{port}")).count(),
            1,
            "{c:#?}"
        );
        // Something else answering: a warning with what it said.
        let addr = fake_smtp(Some("HTTP/1.1 400 Bad Request\r\n")).await;
        let (config, _dir) = probe_config(&addr.to_string());
        let c = check_outbound_with(&config, WAIT).await;
        assert_eq!(c.status, CheckStatus::Warning, "{c:#?}");
        assert_eq!(c.found.as_deref(), Some("HTTP/1.1 400 Bad Request"));
    }

    /// Accepts but never greets (an intercepting middlebox): a warning once the probe's
    /// wait is over. On tokio's paused clock, which moves only when every task waits:
    /// the wait is measured, not slept, and the test cannot be slowed into failing.
    #[tokio::test(start_paused = true)]
    async fn outbound_probe_silent_is_a_warning_after_the_wait() {
        let addr = fake_smtp(None).await;
        let (config, _dir) = probe_config(&addr.to_string());
        let started = Instant::now();
        let c = check_outbound_with(&config, WAIT).await;
        assert_eq!(started.elapsed(), WAIT, "{c:#?}");
        assert_eq!(c.status, CheckStatus::Warning, "{c:#?}");
        assert!(
            c.details
                .as_deref()
                .unwrap_or("")
                .contains("sent no greeting"),
            "{c:#?}"
        );
    }

    /// A resolver that never answers: could not check, once the probe's wait is over
    /// (paused clock, as above).
    #[tokio::test(start_paused = true)]
    async fn silent_resolver_is_could_not_check_after_the_wait() {
        let (mut config, _dir) = probe_config("nowhere.test:25");
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        config.dns_resolver = vec![silent.local_addr().expect("addr")];
        let started = Instant::now();
        let c = check_outbound_with(&config, WAIT).await;
        assert_eq!(started.elapsed(), WAIT, "{c:#?}");
        assert_eq!(c.status, CheckStatus::Unknown, "{c:#?}");
        assert!(
            c.details.as_deref().unwrap_or("").contains("nowhere.test"),
            "{c:#?}"
        );
    }

    #[tokio::test]
    async fn unresolvable_probe_host_is_could_not_check() {
        let net = fresh_net();
        let dns = Dnsmasq::start(Ipv4Addr::new(127, net.0, net.1, 1), 53, true, &[]);
        let (mut config, _dir) = probe_config("nowhere.test:25");
        config.dns_resolver = vec![dns.addr];
        let c = check_outbound_with(&config, WAIT).await;
        assert_eq!(c.status, CheckStatus::Unknown, "{c:#?}");
        assert!(
            c.details.as_deref().unwrap_or("").contains("nowhere.test"),
            "{c:#?}"
        );
    }

    #[test]
    fn public_address_table() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let lan = Some(ip("192.168.1.20"));
        let on_host = |a: IpAddr| a == ip("203.0.114.7");
        let cases: Vec<(Vec<IpAddr>, CheckStatus, &str)> = vec![
            (vec![], CheckStatus::Error, "no address record"),
            (
                vec![ip("192.168.1.20")],
                CheckStatus::Error,
                "private address",
            ),
            (
                vec![ip("10.0.0.1"), ip("203.0.114.7")],
                CheckStatus::Error,
                "private address",
            ),
            (vec![ip("fd00::1")], CheckStatus::Error, "private address"),
            (
                vec![ip("203.0.114.7")],
                CheckStatus::Ok,
                "points to this box",
            ),
            (
                vec![ip("198.51.200.1")],
                CheckStatus::Ok,
                "a public address",
            ),
        ];
        for (addrs, status, words) in cases {
            let c = classify_public("relay.test", &addrs, "25", on_host, lan);
            assert_eq!(c.id, "port.public-address");
            assert_eq!(c.status, status, "{addrs:?}: {c:#?}");
            assert!(c.summary.contains(words), "{addrs:?}: {c:#?}");
        }
        // Behind a router: forward the ports to this box's LAN address.
        let c = classify_public("relay.test", &[ip("198.51.200.1")], "25", on_host, lan);
        assert!(
            c.details.as_deref().unwrap_or("").contains("192.168.1.20"),
            "{c:#?}"
        );
        assert!(
            c.details.as_deref().unwrap_or("").contains("forward"),
            "{c:#?}"
        );
        // IP-only mode (issue 16 item 9): a LAN address of this box is fine (the name page
        // offers it for a LAN); one that is nobody's is wrong; public ones as above.
        let on_host = |a: IpAddr| a == ip("192.168.1.20") || a == ip("203.0.114.7");
        for (addr, status, words) in [
            ("192.168.1.20", CheckStatus::Ok, "local network"),
            (
                "192.168.1.99",
                CheckStatus::Error,
                "not an address of this box",
            ),
            ("203.0.114.7", CheckStatus::Ok, "own public address"),
            (
                "198.51.200.1",
                CheckStatus::Ok,
                "public address, not on this box",
            ),
        ] {
            let c = classify_ip_only(ip(addr), "25", on_host, lan);
            assert_eq!(c.id, "port.public-address");
            assert_eq!(c.status, status, "{addr}: {c:#?}");
            assert!(c.summary.contains(words), "{addr}: {c:#?}");
            assert_eq!(c.summary.matches(addr).count(), 1, "{addr}: {c:#?}");
        }
        let c = classify_ip_only(ip("198.51.200.1"), "25", on_host, lan);
        assert!(c.details.as_deref().unwrap_or("").contains("192.168.1.20"));
        // A loopback address is on every host, but nobody outside reaches it.
        assert!(is_local_address(ip("127.0.0.1")));
        assert!(!is_local_address(ip("192.0.2.200")));
    }

    #[tokio::test]
    async fn public_address_from_the_authoritative_server() {
        let net = fresh_net();
        let ns_ip = Ipv4Addr::new(127, net.0, net.1, 2);
        let resolver = Dnsmasq::start(
            Ipv4Addr::new(127, net.0, net.1, 1),
            53,
            true,
            &[
                format!("--dns-rr=relay.test,2,{}", wire_name_hex("ns.relay.test")),
                format!("--host-record=ns.relay.test,{ns_ip}"),
                // What a cache might still say: not asked.
                "--host-record=relay.test,198.51.200.9".into(),
            ],
        );
        let (mut config, _dir) = probe_config("127.0.0.1:25");
        config.dns_resolver = vec![resolver.addr];
        {
            let _auth = Dnsmasq::start(
                ns_ip,
                53,
                true,
                &["--host-record=relay.test,192.168.1.20".into()],
            );
            let c = check_public_address(&config).await;
            assert_eq!(c.status, CheckStatus::Error, "{c:#?}");
            assert_eq!(c.found.as_deref(), Some("192.168.1.20"));
        }
        // The authoritative server gone: could not check (not "wrong", WIZ-2).
        let c = check_public_address(&config).await;
        assert_eq!(c.status, CheckStatus::Unknown, "{c:#?}");
        // IP-only mode: the configured address, no DNS.
        let (ip_only, _dir2) = {
            let dir = tempfile::tempdir().expect("tempdir");
            (testing::config(dir.path(), "10.1.2.3"), dir)
        };
        let c = check_public_address(&ip_only).await;
        assert_eq!(c.status, CheckStatus::Error, "{c:#?}");
        assert_eq!(c.found.as_deref(), Some("10.1.2.3"));
        // IP-only on an address of this host that is not public: fine for a LAN.
        let (ip_only, _dir3) = {
            let dir = tempfile::tempdir().expect("tempdir");
            (testing::config(dir.path(), "127.0.0.1"), dir)
        };
        let c = check_public_address(&ip_only).await;
        assert_eq!(c.status, CheckStatus::Ok, "{c:#?}");
    }

    /// Issue 16 item 9: UDP 3478 only while TURN runs; an IP-only relay on a LAN address
    /// is checked from a phone on that network, not over mobile data.
    #[test]
    fn ports_and_inbound_follow_the_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = testing::config(dir.path(), "relay.test");
        config.turn_listen = Vec::new();
        assert!(!forwarded_ports(&config).contains("3478"));
        assert!(
            !inbound(&config)
                .details
                .unwrap_or_default()
                .contains("3478")
        );
        config.turn_listen = vec!["0.0.0.0:3478".parse().expect("addr")];
        assert!(forwarded_ports(&config).contains("3478 (UDP)"));
        let lan = testing::config(dir.path(), "192.168.1.20");
        let details = inbound(&lan).details.unwrap_or_default();
        assert!(details.contains("https://192.168.1.20/"), "{details}");
        assert!(details.contains("Wi-Fi on"), "{details}");
        assert!(!details.contains("mobile data"), "{details}");
        let public = testing::config(dir.path(), "198.51.200.1");
        assert!(
            inbound(&public)
                .details
                .unwrap_or_default()
                .contains("mobile data")
        );
    }

    /// On tokio's paused clock: the silent resolver's timeouts are measured, not slept.
    #[tokio::test(start_paused = true)]
    async fn all_port_checks_with_inbound_explained() {
        let addr = fake_smtp(Some("220 ok\r\n")).await;
        let (mut config, _dir) = probe_config(&addr.to_string());
        // No DNS at all here: the public address could not be checked.
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        config.dns_resolver = vec![silent.local_addr().expect("addr")];
        let checks = check_ports(&config).await;
        let ids: Vec<(&str, CheckStatus)> =
            checks.iter().map(|c| (c.id.as_str(), c.status)).collect();
        assert_eq!(
            ids,
            [
                ("port.25.outbound", CheckStatus::Ok),
                ("port.public-address", CheckStatus::Unknown),
                ("port.inbound", CheckStatus::Unknown),
            ]
        );
        let inbound = &checks[2];
        assert!(
            inbound
                .details
                .as_deref()
                .unwrap_or("")
                .contains("https://relay.test/"),
            "{inbound:#?}"
        );
        assert!(
            inbound
                .details
                .as_deref()
                .unwrap_or("")
                .contains("mobile data")
        );
    }
}
