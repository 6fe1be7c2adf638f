//! Address literals (RFC 5321 §4.1.3): the one reader of `[192.0.2.1]` and
//! `[IPv6:2001:db8::1]` domains, for the origin rule of inbound mail (IN-4e) and for
//! outbound routing, so both sides agree on what is an address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The address of an address-literal domain; `None` when `domain` is not bracketed,
/// `Some(Err(()))` when it is bracketed but not an address literal. RFC 5321 §4.1.3:
/// `IPv4-address-literal = Snum 3("." Snum)`, `IPv6-address-literal = "IPv6:" IPv6-addr`
/// (the tag is case-insensitive); an IPv6 address without the tag is not a literal.
pub fn address_literal(domain: &str) -> Option<Result<IpAddr, ()>> {
    let inner = domain.strip_prefix('[')?;
    let Some(inner) = inner.strip_suffix(']') else {
        return Some(Err(()));
    };
    let parsed = match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => inner[5..]
            .parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| ()),
        _ => inner.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| ()),
    };
    Some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_by_rfc_5321() {
        let v4 = |s: &str| Some(Ok(IpAddr::V4(s.parse().unwrap())));
        let v6 = |s: &str| Some(Ok(IpAddr::V6(s.parse().unwrap())));
        let cases: &[(&str, Option<Result<IpAddr, ()>>)] = &[
            ("[192.0.2.1]", v4("192.0.2.1")),
            ("[IPv6:2001:db8::1]", v6("2001:db8::1")),
            ("[ipv6:::1]", v6("::1")),
            ("[IPv6:::ffff:192.0.2.1]", v6("::ffff:192.0.2.1")),
            ("example.org", None),
            ("[300.1.1.1]", Some(Err(()))),
            ("[2001:db8::1]", Some(Err(()))),
            ("[IPv6:192.0.2.1]", Some(Err(()))),
            ("[1.2.3.4", Some(Err(()))),
            ("[]", Some(Err(()))),
            ("[relay.example]", Some(Err(()))),
        ];
        for (domain, want) in cases {
            assert_eq!(address_literal(domain), *want, "{domain}");
        }
    }
}
