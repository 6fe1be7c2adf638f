//! Which `Host:` values name this box (issue 13 point 6). The admin pages answer only
//! those, so a page from elsewhere cannot reach them through a DNS name it points at the
//! box (DNS rebinding); the daemon's HTTP→HTTPS redirect builds its `Location` from the
//! box's own name that a `Host:` matches, never from the header's bytes.
//!
//! A name of the box is one the daemon lists ([`crate::Backend::box_names`]: the mDNS
//! name, `mail_domain`) or `localhost`, compared without case, port or trailing dot. An
//! IP address literal always names the box: a browser sends one only to the address it
//! connected to, and no other site's pages have that origin.

use std::net::IpAddr;

/// What a `Host:` value names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named<'a> {
    /// An IP address literal.
    Ip(IpAddr),
    /// One of the box's names, as the box spells it (from the list given, or
    /// `localhost`).
    Name(&'a str),
}

/// The host of a `Host:` value (RFC 9110 §7.2: `host [ ":" port ]`, IPv6 in brackets),
/// without the port; `None` when it is not of that form.
pub fn host_part(value: &str) -> Option<&str> {
    let value = value.trim();
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        (inner, after.strip_prefix(':'))
    } else {
        match value.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (value, None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    (!host.is_empty()).then_some(host)
}

/// What the `Host:` value `value` names among `names` (the box's names), if anything.
pub fn named<'a, S: AsRef<str>>(value: &str, names: &'a [S]) -> Option<Named<'a>> {
    let host = host_part(value)?;
    // RFC 3986 §3.2.2: `[…]` holds an IPv6 literal and is the only form of one.
    let bracketed = value.trim().starts_with('[');
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_ipv6() == bracketed => return Some(Named::Ip(ip.to_canonical())),
        Ok(_) => return None,
        Err(_) if bracketed => return None,
        Err(_) => {}
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.eq_ignore_ascii_case("localhost") {
        return Some(Named::Name("localhost"));
    }
    names
        .iter()
        .map(|n| n.as_ref())
        .find(|n| !n.is_empty() && n.trim_end_matches('.').eq_ignore_ascii_case(host))
        .map(Named::Name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_the_box() {
        let names = ["relaybox.local", "chat.example.org"];
        let n = |v: &str| named(v, &names);
        assert_eq!(n("relaybox.local"), Some(Named::Name("relaybox.local")));
        assert_eq!(n("RelayBox.Local.:80"), Some(Named::Name("relaybox.local")));
        assert_eq!(
            n("chat.example.org:8443"),
            Some(Named::Name("chat.example.org"))
        );
        assert_eq!(n("localhost:1080"), Some(Named::Name("localhost")));
        assert_eq!(
            n("192.168.1.9:80"),
            Some(Named::Ip("192.168.1.9".parse().unwrap()))
        );
        assert_eq!(n("[fd00::1]"), Some(Named::Ip("fd00::1".parse().unwrap())));
        assert_eq!(
            n("[::ffff:10.0.0.1]:80"),
            Some(Named::Ip("10.0.0.1".parse().unwrap()))
        );
        // Not the box: another name (DNS rebinding), look-alikes, malformed values.
        for v in [
            "attacker.example",
            "relaybox.local.attacker.example",
            "www.chat.example.org",
            "chat.example.org.evil",
            "fd00::1",
            "[relaybox.local]",
            "relaybox.local:",
            "relaybox.local:80:80",
            "relaybox.local:http",
            "",
            ":80",
        ] {
            assert_eq!(n(v), None, "{v:?}");
        }
        let none: [&str; 1] = [""];
        assert_eq!(
            named("anything", &none),
            None,
            "an empty name names nothing"
        );
    }
}
