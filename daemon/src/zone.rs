//! `relaybox dns`: the DNS records this relay needs, in zone-file form (spec/relay.md
//! §18), DKIM record included; and the copy of them the relay writes to
//! `<data_dir>/dns.zone` at start, which `relaybox dns` prints while the relay runs (the
//! store then cannot be opened by a second process).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use sha2::{Digest, Sha256};

use crate::config::{Config, Mode};
use crate::dkim::Signer;
use crate::store::Store;
use relaybox_webui::DnsRecord;

/// The zone text the running relay leaves in its data directory.
pub const ZONE_FILE: &str = "dns.zone";
/// §18: TTL of every record.
pub const TTL: u32 = 3600;
/// RFC 1035 §3.3.14: one character-string holds at most 255 bytes.
const TXT_CHUNK: usize = 255;

/// Print the records of `config`'s relay on stdout; the exit code for `main`.
pub fn command(config: &Config) -> ExitCode {
    // MODE-1, DNS-1: an IP-only relay needs no DNS.
    if let Mode::IpOnly(ip) = config.mode {
        print!("{}", ip_only_text(ip));
        return ExitCode::SUCCESS;
    }
    if let Err(e) = crate::private::dir(&config.data_dir) {
        eprintln!(
            "relaybox dns: cannot create the data directory {}: {e}",
            config.data_dir.display()
        );
        return ExitCode::FAILURE;
    }
    let store_path = config.data_dir.join(crate::store::STORE_FILE);
    let store = match Store::open_with_cache(&store_path, config.store_cache_size) {
        Ok(store) => store,
        Err(e) => return print_zone_file(config, &store_path, &e.to_string()),
    };
    // The key is made here when the relay never ran (it then uses the same one).
    let signer = match Signer::load_or_create(config, &store) {
        Ok(Some(signer)) => signer,
        Ok(None) => {
            eprintln!("relaybox dns: this relay does not sign, no DKIM record");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("relaybox dns: {e}");
            return ExitCode::FAILURE;
        }
    };
    drop(store);
    print!("{}", zone_text(config, &signer, detect_addresses(config)));
    ExitCode::SUCCESS
}

/// The store is held (by the running relay, normally): print the copy it wrote at start.
fn print_zone_file(config: &Config, store_path: &Path, error: &str) -> ExitCode {
    let zone_path = zone_file_path(config);
    match std::fs::read_to_string(&zone_path) {
        Ok(text) => {
            eprintln!(
                "relaybox dns: the store {} is in use ({error}), probably by the running \
                 relay; printing {}, which the relay wrote when it started",
                store_path.display(),
                zone_path.display()
            );
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(read) => {
            eprintln!(
                "relaybox dns: cannot open the store {} ({error}), and cannot read {} \
                 ({read}); stop the relay and run `relaybox dns` again",
                store_path.display(),
                zone_path.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// Where the running relay keeps its zone text.
pub fn zone_file_path(config: &Config) -> PathBuf {
    config.data_dir.join(ZONE_FILE)
}

/// Write the zone text to `<data_dir>/dns.zone` (whole or not at all:
/// [`crate::files::write_atomic`]), for `relaybox dns` while the relay runs. Called once
/// at start; an unchanged zone is not written again (the SD card).
pub fn write_zone_file(config: &Config, signer: &Signer) -> std::io::Result<()> {
    let text = zone_text(config, signer, detect_addresses(config));
    let path = zone_file_path(config);
    if std::fs::read(&path).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(());
    }
    crate::files::write_atomic(&path, text.as_bytes(), 0o644)
}

/// The relay's public addresses as far as this host can tell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Addresses {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

/// A global address the SMTP listeners are bound to, else the source address this host
/// would use towards the internet (a UDP socket `connect` to a documentation address:
/// the kernel only picks a route, no packet is sent). Private, loopback and other
/// non-global addresses count as unknown: the operator fills them in.
pub fn detect_addresses(config: &Config) -> Addresses {
    let listen = |pick: fn(IpAddr) -> bool| {
        config
            .listen
            .smtp
            .iter()
            .map(SocketAddr::ip)
            .find(|ip| pick(*ip))
    };
    let v4 = listen(|ip| matches!(ip, IpAddr::V4(a) if global_v4(a)))
        .or_else(|| route_source("0.0.0.0:0", "192.0.2.1:25"))
        .and_then(|ip| match ip {
            IpAddr::V4(a) if global_v4(a) => Some(a),
            _ => None,
        });
    let v6 = if config.disable_ipv6 {
        None
    } else {
        listen(|ip| matches!(ip, IpAddr::V6(a) if global_v6(a)))
            .or_else(|| route_source("[::]:0", "[2001:db8::1]:25"))
            .and_then(|ip| match ip {
                IpAddr::V6(a) if global_v6(a) => Some(a),
                _ => None,
            })
    };
    Addresses { v4, v6 }
}

/// The address this host uses on its local network (the source address towards the
/// internet, private or not): where the router must forward the ports to.
pub fn lan_address() -> Option<IpAddr> {
    route_source("0.0.0.0:0", "192.0.2.1:25")
        .filter(|ip| !ip.is_unspecified() && !ip.is_loopback())
        .or_else(|| {
            route_source("[::]:0", "[2001:db8::1]:25")
                .filter(|ip| !ip.is_unspecified() && !ip.is_loopback())
        })
}

/// The local address the kernel would send from towards `target` (nothing is sent).
fn route_source(bind: &str, target: &str) -> Option<IpAddr> {
    let socket = UdpSocket::bind(bind).ok()?;
    socket.connect(target).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

/// A publicly routable IPv4 address (not RFC 1918, loopback, link-local, CGNAT,
/// documentation, benchmarking, multicast or reserved).
pub(crate) fn global_v4(a: Ipv4Addr) -> bool {
    let o = a.octets();
    !(a.is_unspecified()
        || a.is_private()
        || a.is_loopback()
        || a.is_link_local()
        || a.is_broadcast()
        || a.is_documentation()
        || a.is_multicast()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || o[0] >= 240)
}

/// A global unicast IPv6 address (2000::/3, not documentation 2001:db8::/32).
pub(crate) fn global_v6(a: Ipv6Addr) -> bool {
    let s = a.segments();
    (s[0] & 0xe000) == 0x2000 && !(s[0] == 0x2001 && s[1] == 0x0db8)
}

/// Text for an IP-only relay: no records.
fn ip_only_text(ip: Ipv4Addr) -> String {
    format!(
        "; {ip} is an IP-only relay (mail_domain is an IPv4 address): no DNS records are\n\
         ; needed. Its addresses are user@[{ip}]; it does not sign with DKIM (MODE-1) and\n\
         ; DNS checks are skipped (DNS-1).\n"
    )
}

/// Value of an address record this host could not determine (the operator fills it in).
pub const PLACEHOLDER_V4: &str = "<public IPv4 address>";
/// Value of an AAAA record this host could not determine.
pub const PLACEHOLDER_V6: &str = "<public IPv6 address>";

/// True when `value` is a placeholder the operator must replace ([`PLACEHOLDER_V4`]).
pub fn is_placeholder(value: &str) -> bool {
    value.starts_with('<')
}

/// The records of §18 for `config` (WIZ-7), the one source of the zone text and the
/// wizard's table and checks: required records first, then recommended ones; absolute
/// names with trailing dots; values as in a zone file. Address records this host
/// cannot determine carry [`PLACEHOLDER_V4`] / [`PLACEHOLDER_V6`]. No DKIM record
/// without `signer`. Empty in IP-only mode (MODE-1, DNS-1: no DNS needed).
pub fn expected_records(
    config: &Config,
    signer: Option<&Signer>,
    addresses: Addresses,
) -> Vec<DnsRecord> {
    if matches!(config.mode, Mode::IpOnly(_)) {
        return Vec::new();
    }
    let d = format!("{}.", config.mail_domain.trim_end_matches('.'));
    // §18 "required, ACME mode": a DNS name with certificates from ACME (not an
    // external certificate, not an underscore or IP-only relay, MODE-2).
    let acme = matches!(config.mode, Mode::Domain) && config.tls_external_cert_and_key.is_none();
    let record =
        |id: &str, name: String, kind: &str, value: String, required: bool, note: &str| DnsRecord {
            id: id.to_string(),
            name,
            kind: kind.to_string(),
            value,
            required,
            note: note.to_string(),
        };
    let mut r = Vec::new();
    // §18 required: A and/or AAAA (DNS-1: fatal only when neither exists).
    r.push(match addresses.v4 {
        Some(a) => record(
            "dns.a",
            d.clone(),
            "A",
            a.to_string(),
            true,
            "The public IPv4 address of this relay (detected on this host: check it).",
        ),
        None => record(
            "dns.a",
            d.clone(),
            "A",
            PLACEHOLDER_V4.to_string(),
            true,
            "The public IPv4 address of your internet connection.",
        ),
    });
    if !config.disable_ipv6 {
        r.push(match addresses.v6 {
            Some(a) => record(
                "dns.aaaa",
                d.clone(),
                "AAAA",
                a.to_string(),
                false,
                "The public IPv6 address of this relay (detected on this host: check it).",
            ),
            None => record(
                "dns.aaaa",
                d.clone(),
                "AAAA",
                PLACEHOLDER_V6.to_string(),
                false,
                "Only if this relay has a public IPv6 address (an A or an AAAA record is needed).",
            ),
        });
    }
    r.push(record(
        "dns.mx",
        d.clone(),
        "MX",
        format!("10 {d}"),
        true,
        "Other mail servers deliver to this relay.",
    ));
    r.push(record(
        "dns.www",
        format!("www.{d}"),
        "CNAME",
        d.clone(),
        true,
        "The web pages answer under www too.",
    ));
    if acme {
        // RFC 8461 §3.1, §3.2.
        r.push(record(
            "dns.mta-sts",
            format!("mta-sts.{d}"),
            "CNAME",
            d.clone(),
            true,
            "Where other servers fetch the MTA-STS policy (RFC 8461).",
        ));
        r.push(record(
            "dns.mta-sts-txt",
            format!("_mta-sts.{d}"),
            "TXT",
            txt_strings(&format!("v=STSv1; id={}", mta_sts_id(config))),
            true,
            "Tells other servers to deliver only over verified TLS (RFC 8461).",
        ));
    }
    if let Some(signer) = signer {
        let (name, value) = signer.dns_record();
        r.push(record(
            "dns.dkim",
            format!("{}.", name.trim_end_matches('.')),
            "TXT",
            txt_strings(&value),
            true,
            "The key other servers use to check this relay's DKIM signatures.",
        ));
    }
    r.push(record(
        "dns.spf",
        d.clone(),
        "TXT",
        txt_strings("v=spf1 a ~all"),
        false,
        "Says that this relay's address may send mail for the domain (SPF).",
    ));
    r.push(record(
        "dns.dmarc",
        format!("_dmarc.{d}"),
        "TXT",
        txt_strings("v=DMARC1;p=reject;adkim=s;aspf=s"),
        false,
        "Asks other servers to reject forged mail from the domain (DMARC).",
    ));
    if acme {
        // RFC 8659 §4.2 `issue`; RFC 8657 §3 `accounturi` once this relay has its ACME
        // account (upstream's recommended record names it too).
        r.push(match account_uri(config) {
            Some(uri) => record(
                "dns.caa",
                d.clone(),
                "CAA",
                format!("0 issue \"letsencrypt.org;accounturi={uri}\""),
                false,
                "Only Let's Encrypt, and only for this relay's account, may issue \
                 certificates for the domain.",
            ),
            None => record(
                "dns.caa",
                d.clone(),
                "CAA",
                "0 issue \"letsencrypt.org\"".to_string(),
                false,
                "Only Let's Encrypt may issue certificates for the domain.",
            ),
        });
    }
    r.push(record(
        "dns.adsp",
        format!("_adsp._domainkey.{d}"),
        "TXT",
        txt_strings("dkim=discardable"),
        false,
        "Mail from the domain without a signature may be discarded.",
    ));
    for (id, service, port, what) in [
        (
            "dns.srv.submission",
            "_submission._tcp",
            587,
            "sending (587)",
        ),
        (
            "dns.srv.submissions",
            "_submissions._tcp",
            465,
            "sending (465)",
        ),
        ("dns.srv.imap", "_imap._tcp", 143, "reading (143)"),
        ("dns.srv.imaps", "_imaps._tcp", 993, "reading (993)"),
    ] {
        r.push(record(
            id,
            format!("{service}.{d}"),
            "SRV",
            format!("0 1 {port} {d}"),
            false,
            &format!("Lets mail apps find the server for {what} (RFC 6186)."),
        ));
    }
    r
}

/// The zone text (§18), rendered from [`expected_records`]: required records first,
/// then recommended ones; absolute names with trailing dots, TTL 3600, class IN.
/// Address records this host cannot determine are written as commented placeholders
/// the operator must fill in.
pub fn zone_text(config: &Config, signer: &Signer, addresses: Addresses) -> String {
    let mut z = String::new();
    let rr = |r: &DnsRecord| format!("{} {TTL} IN {} {}", r.name, r.kind, r.value);
    let _ = writeln!(
        z,
        "; DNS records for the chatmail relay {} (relaybox dns).",
        config.mail_domain
    );
    z.push_str(
        "; Zone-file form: absolute names, TTL 3600. Lines starting with ';' are comments.\n",
    );
    z.push('\n');
    z.push_str("; ---- REQUIRED ----\n");
    let mut recommended = false;
    let mut domain = String::new();
    for r in expected_records(config, Some(signer), addresses) {
        // The AAAA record sits with the A record (one of them is required, DNS-1).
        if !r.required && r.id != "dns.aaaa" && !recommended {
            recommended = true;
            z.push('\n');
            z.push_str("; ---- RECOMMENDED ----\n");
        }
        match r.id.as_str() {
            "dns.a" if is_placeholder(&r.value) => {
                let _ = writeln!(
                    z,
                    "; FILL IN the public IPv4 address of this host, then remove the ';':\n; {}",
                    rr(&r)
                );
                domain = r.name.clone();
                continue;
            }
            "dns.aaaa" if is_placeholder(&r.value) => {
                let _ = writeln!(
                    z,
                    "; FILL IN the public IPv6 address of this host if it has one (an A or an \
                     AAAA record is required):\n; {}",
                    rr(&r)
                );
                continue;
            }
            "dns.a" | "dns.aaaa" => {
                let _ = writeln!(
                    z,
                    "{} ; detected on this host: check it is the public address",
                    rr(&r)
                );
                domain = r.name.clone();
                continue;
            }
            "dns.mta-sts" => {
                z.push_str("; required with ACME certificates: MTA-STS (RFC 8461)\n");
            }
            "dns.dkim" => {
                let _ = writeln!(
                    z,
                    "; DKIM key of this relay (selector {})",
                    config.dkim_selector
                );
            }
            "dns.caa" if !r.value.contains("accounturi=") => z.push_str(
                "; once the relay has its ACME account, `relaybox dns` adds \
                 ;accounturi=<its URL> to the CAA value (RFC 8657)\n",
            ),
            _ => {}
        }
        let _ = writeln!(z, "{}", rr(&r));
    }
    let _ = writeln!(
        z,
        "; optional: a PTR record for the addresses above pointing to {domain}"
    );
    z
}

/// The URL of this relay's ACME account (ACME-3: `<data_dir>/acme/account.json`, its
/// `id`), when it was made with the configured directory: what a CAA record's
/// `accounturi` names (RFC 8657 §3).
pub fn account_uri(config: &Config) -> Option<String> {
    let path = crate::tls::stored::acme_dir(config).join(crate::acme::cert::ACCOUNT_FILE);
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    if json.get("directory")?.as_str()? != config.appliance.acme_directory {
        return None;
    }
    let id = json.get("id")?.as_str()?;
    // A URL in a quoted CAA value: no quotes, spaces or control characters (RFC 8659 §4.2).
    (id.starts_with("https://")
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b';'))
    .then(|| id.to_string())
}

/// `value` as quoted character-strings of at most 255 bytes each (RFC 1035 §3.3.14;
/// §18 for the DKIM key), `"` and `\` escaped.
pub fn txt_strings(value: &str) -> String {
    let mut parts = Vec::new();
    let bytes = value.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        let mut end = (start + TXT_CHUNK).min(bytes.len());
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        let chunk = &value[start..end];
        parts.push(format!(
            "\"{}\"",
            chunk.replace('\\', "\\\\").replace('"', "\\\"")
        ));
        start = end;
    }
    if parts.is_empty() {
        parts.push("\"\"".into());
    }
    parts.join(" ")
}

/// DNS-2: the `_mta-sts` policy id changes whenever the policy changes. §18 shows a
/// timestamp; a timestamp made here would change on every run, so the id is the first
/// 12 hex digits of the policy's SHA-256 (RFC 8461 §3.1 allows 1–32 alphanumerics).
pub fn mta_sts_id(config: &Config) -> String {
    let digest = Sha256::digest(crate::web::mta_sts_policy(config).as_bytes());
    digest.iter().take(6).fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    fn signer(config: &Config, dir: &Path) -> Signer {
        let store = Store::open(&dir.join("store.redb")).expect("store");
        Signer::load_or_create(config, &store)
            .expect("key")
            .expect("signs")
    }

    /// The record lines (not comments) as (name, ttl, class, type, data).
    fn records(zone: &str) -> Vec<(String, String, String, String, String)> {
        zone.lines()
            .filter(|l| !l.trim_start().starts_with(';') && !l.trim().is_empty())
            .map(|l| {
                let l = l.split(" ;").next().unwrap_or(l);
                let mut it = l.splitn(5, ' ');
                let mut next = || it.next().unwrap_or("").to_string();
                (next(), next(), next(), next(), next())
            })
            .collect()
    }

    fn find<'a>(
        recs: &'a [(String, String, String, String, String)],
        name: &str,
        kind: &str,
    ) -> Vec<&'a str> {
        recs.iter()
            .filter(|r| r.0 == name && r.3 == kind)
            .map(|r| r.4.as_str())
            .collect()
    }

    #[test]
    fn domain_mode_zone_has_the_records_of_section_18() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = testing::config(dir.path(), "chat.example.org");
        let s = signer(&config, dir.path());
        let zone = zone_text(
            &config,
            &s,
            Addresses {
                v4: Some(Ipv4Addr::new(203, 0, 114, 7)),
                v6: None,
            },
        );
        let recs = records(&zone);
        for r in &recs {
            assert!(r.0.ends_with('.'), "absolute name: {r:?}");
            assert_eq!((r.1.as_str(), r.2.as_str()), ("3600", "IN"), "{r:?}");
        }
        let d = "chat.example.org.";
        assert_eq!(find(&recs, d, "A"), ["203.0.114.7"]);
        // No AAAA detected: a commented placeholder the operator fills in.
        assert!(find(&recs, d, "AAAA").is_empty());
        assert!(
            zone.contains("; chat.example.org. 3600 IN AAAA <public IPv6 address>"),
            "{zone}"
        );
        assert_eq!(find(&recs, d, "MX"), ["10 chat.example.org."]);
        assert_eq!(find(&recs, "www.chat.example.org.", "CNAME"), [d]);
        assert_eq!(find(&recs, "mta-sts.chat.example.org.", "CNAME"), [d]);
        let id = mta_sts_id(&config);
        assert_eq!(id.len(), 12);
        assert_eq!(
            find(&recs, "_mta-sts.chat.example.org.", "TXT"),
            [format!("\"v=STSv1; id={id}\"")]
        );
        let (name, value) = s.dns_record();
        assert_eq!(name, "opendkim._domainkey.chat.example.org");
        let dkim = find(&recs, "opendkim._domainkey.chat.example.org.", "TXT");
        assert_eq!(dkim, [txt_strings(&value)]);
        assert_eq!(find(&recs, d, "TXT"), ["\"v=spf1 a ~all\""]);
        assert_eq!(
            find(&recs, "_dmarc.chat.example.org.", "TXT"),
            ["\"v=DMARC1;p=reject;adkim=s;aspf=s\""]
        );
        assert_eq!(find(&recs, d, "CAA"), ["0 issue \"letsencrypt.org\""]);
        for (srv, port) in [
            ("_submission._tcp", 587),
            ("_submissions._tcp", 465),
            ("_imap._tcp", 143),
            ("_imaps._tcp", 993),
        ] {
            assert_eq!(
                find(&recs, &format!("{srv}.{d}"), "SRV"),
                [format!("0 1 {port} {d}")]
            );
        }
        // Required before recommended.
        let required = zone.find("REQUIRED").expect("required section");
        let recommended = zone.find("RECOMMENDED").expect("recommended section");
        assert!(
            required < zone.find("IN MX").expect("MX")
                && zone.find("IN MX").expect("MX") < recommended
        );
        assert!(zone.find("v=spf1").expect("spf") > recommended);
    }

    #[test]
    fn undetected_addresses_are_placeholders_and_ipv6_can_be_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = testing::config(dir.path(), "chat.example.org");
        let s = signer(&config, dir.path());
        let zone = zone_text(&config, &s, Addresses::default());
        assert!(find(&records(&zone), "chat.example.org.", "A").is_empty());
        assert!(zone.contains("FILL IN the public IPv4 address"), "{zone}");
        assert!(zone.contains("; chat.example.org. 3600 IN A <public IPv4 address>"));
        config.disable_ipv6 = true;
        let zone = zone_text(&config, &s, Addresses::default());
        assert!(!zone.contains("AAAA"), "{zone}");
    }

    #[test]
    fn underscore_mode_has_no_mta_sts_mode_2() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = testing::config(dir.path(), "_chat.test");
        let s = signer(&config, dir.path());
        let zone = zone_text(&config, &s, Addresses::default());
        assert!(!zone.to_ascii_lowercase().contains("mta-sts"), "{zone}");
        assert!(!zone.contains("CAA"), "{zone}");
        let recs = records(&zone);
        assert_eq!(find(&recs, "_chat.test.", "MX"), ["10 _chat.test."]);
        assert_eq!(
            find(&recs, "opendkim._domainkey._chat.test.", "TXT").len(),
            1
        );
    }

    #[test]
    fn ip_only_mode_needs_no_dns() {
        let text = ip_only_text(Ipv4Addr::new(192, 0, 2, 9));
        assert!(text.contains("no DNS records are"), "{text}");
        assert!(text.lines().all(|l| l.starts_with(';')), "{text}");
    }

    #[test]
    fn txt_strings_split_at_255_bytes() {
        let value = "a".repeat(600);
        let out = txt_strings(&value);
        let parts: Vec<&str> = out.split(' ').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].len(), 257);
        assert_eq!(parts[1].len(), 257);
        assert_eq!(parts[2].len(), 92);
        assert_eq!(txt_strings("x\"y\\z"), "\"x\\\"y\\\\z\"");
        assert_eq!(txt_strings(""), "\"\"");
    }

    #[test]
    fn global_address_rules() {
        for a in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "100.64.0.1",
            "169.254.1.1",
            "192.0.2.1",
            "0.0.0.0",
            "255.255.255.255",
            "198.18.0.1",
        ] {
            assert!(!global_v4(a.parse().expect("ip")), "{a}");
        }
        for a in ["203.0.114.7", "8.8.8.8", "172.32.0.1"] {
            assert!(global_v4(a.parse().expect("ip")), "{a}");
        }
        for a in ["::1", "fe80::1", "fd00::1", "2001:db8::1"] {
            assert!(!global_v6(a.parse().expect("ip")), "{a}");
        }
        assert!(global_v6("2a01:4f8::1".parse().expect("ip")));
    }

    /// RFC 8657: once the ACME account exists (for the configured directory), the CAA
    /// record names it, in the table and in the zone text.
    #[test]
    fn caa_names_the_acme_account_once_it_exists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = testing::config(dir.path(), "chat.example.org");
        let s = signer(&config, dir.path());
        let caa = |config: &Config| {
            expected_records(config, Some(&s), Addresses::default())
                .into_iter()
                .find(|r| r.id == "dns.caa")
                .expect("caa")
                .value
        };
        assert_eq!(caa(&config), "0 issue \"letsencrypt.org\"");
        let acme = crate::tls::stored::acme_dir(&config);
        std::fs::create_dir_all(&acme).expect("acme dir");
        let account = |directory: &str, id: &str| {
            std::fs::write(
                acme.join(crate::acme::cert::ACCOUNT_FILE),
                format!(r#"{{"id":"{id}","key_pkcs8":"AAAA","directory":"{directory}"}}"#),
            )
            .expect("write account")
        };
        let uri = "https://acme-v02.api.letsencrypt.org/acme/acct/123456";
        account(&config.appliance.acme_directory, uri);
        assert_eq!(account_uri(&config).as_deref(), Some(uri));
        assert_eq!(
            caa(&config),
            format!("0 issue \"letsencrypt.org;accounturi={uri}\"")
        );
        let zone = zone_text(&config, &s, Addresses::default());
        assert!(
            zone.contains(&format!(
                "chat.example.org. 3600 IN CAA 0 issue \"letsencrypt.org;accounturi={uri}\""
            )),
            "{zone}"
        );
        assert!(!zone.contains("adds ;accounturi"), "{zone}");
        // An account of another directory (staging, a test CA) is not this relay's.
        account(
            "https://acme-staging-v02.api.letsencrypt.org/directory",
            uri,
        );
        assert_eq!(caa(&config), "0 issue \"letsencrypt.org\"");
        // Nothing that would break the quoted value.
        account(&config.appliance.acme_directory, "https://x/\\\"; issue");
        assert_eq!(account_uri(&config), None);
    }

    #[test]
    fn zone_file_is_written_for_the_dns_command() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = testing::config(dir.path(), "chat.example.org");
        let s = signer(&config, dir.path());
        write_zone_file(&config, &s).expect("write");
        let text = std::fs::read_to_string(zone_file_path(&config)).expect("read");
        assert!(text.contains(&txt_strings(&s.dns_record().1)), "{text}");
        assert!(!dir.path().join("dns.zone.tmp").exists());
    }

    #[test]
    fn expected_records_ids_and_required_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = testing::config(dir.path(), "chat.example.org");
        let s = signer(&config, dir.path());
        let recs = expected_records(&config, Some(&s), Addresses::default());
        let ids: Vec<(&str, bool)> = recs.iter().map(|r| (r.id.as_str(), r.required)).collect();
        assert_eq!(
            ids,
            [
                ("dns.a", true),
                ("dns.aaaa", false),
                ("dns.mx", true),
                ("dns.www", true),
                ("dns.mta-sts", true),
                ("dns.mta-sts-txt", true),
                ("dns.dkim", true),
                ("dns.spf", false),
                ("dns.dmarc", false),
                ("dns.caa", false),
                ("dns.adsp", false),
                ("dns.srv.submission", false),
                ("dns.srv.submissions", false),
                ("dns.srv.imap", false),
                ("dns.srv.imaps", false),
            ]
        );
        for r in &recs {
            assert!(r.name.ends_with('.'), "{r:?}");
            assert!(!r.note.is_empty(), "{r:?}");
        }
        assert!(is_placeholder(&recs[0].value), "{:?}", recs[0]);
        // Without a signer: no DKIM record; the rest unchanged.
        let unsigned = expected_records(&config, None, Addresses::default());
        assert_eq!(unsigned.len(), recs.len() - 1);
        assert!(unsigned.iter().all(|r| r.id != "dns.dkim"));
        // Underscore mode: no MTA-STS, no CAA (MODE-2).
        let under = testing::config(dir.path(), "_chat.test");
        let ids: Vec<String> = expected_records(&under, Some(&s), Addresses::default())
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert!(
            !ids.iter().any(|i| i.contains("mta-sts") || i == "dns.caa"),
            "{ids:?}"
        );
        // IP-only mode: nothing (MODE-1, DNS-1).
        let ip = testing::config(dir.path(), "192.0.2.9");
        assert!(expected_records(&ip, None, Addresses::default()).is_empty());
    }
}
