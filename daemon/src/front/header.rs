//! The header that opens every stream of the tunnel (issue 20): a PROXY protocol v2 header
//! (HAProxy's "PROXY protocol" specification, version 2, binary form) with the client's
//! address and the front's address the client connected to — so the box knows who the
//! client is and which service (port) it asked for. Written by the front, read by the box
//! with a bound on its size; built and parsed by the `ppp` crate.

use std::io;
use std::net::SocketAddr;

use ppp::v2;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The fixed part of a v2 header: 12-byte signature, version/command, family/protocol,
/// and the length of what follows.
const FIXED: usize = 16;
/// The longest rest this side reads: the IPv6 addresses (36 bytes) and room for a few
/// TLVs; the front sends none.
const MAX_REST: usize = 216;

/// Who connected, and to which address of the front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub client: SocketAddr,
    pub front: SocketAddr,
}

/// The header for a connection from `client` to the front's `front` address.
pub fn encode(origin: Origin) -> io::Result<Vec<u8>> {
    // Both addresses in one family: an IPv4 client on an IPv6 listener is mapped.
    let (client, front) = match (origin.client, origin.front) {
        (SocketAddr::V4(c), SocketAddr::V6(f)) => (
            SocketAddr::new(c.ip().to_ipv6_mapped().into(), c.port()),
            SocketAddr::V6(f),
        ),
        (SocketAddr::V6(c), SocketAddr::V4(f)) => (
            SocketAddr::V6(c),
            SocketAddr::new(f.ip().to_ipv6_mapped().into(), f.port()),
        ),
        pair => pair,
    };
    v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Proxy,
        v2::Protocol::Stream,
        (client, front),
    )
    .build()
}

/// Read one header from the start of `stream`: exactly its bytes, nothing after it.
pub async fn read<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Origin> {
    let bad =
        |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("tunnel header: {why}"));
    let mut buf = vec![0u8; FIXED];
    stream.read_exact(&mut buf).await?;
    let rest = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if rest > MAX_REST {
        return Err(bad("too long"));
    }
    buf.resize(FIXED + rest, 0);
    stream.read_exact(&mut buf[FIXED..]).await?;
    let header = v2::Header::try_from(buf.as_slice()).map_err(|e| bad(&e.to_string()))?;
    if header.command != v2::Command::Proxy || header.protocol != v2::Protocol::Stream {
        return Err(bad("not a proxied stream"));
    }
    let (client, front) = match header.addresses {
        v2::Addresses::IPv4(a) => (
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        ),
        v2::Addresses::IPv6(a) => (
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        ),
        _ => return Err(bad("no IP addresses")),
    };
    // A mapped IPv4 client is the IPv4 client (rate limits, the origin rule).
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    Ok(Origin {
        client: canonical(client),
        front: canonical(front),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn round_trip(client: &str, front: &str) -> Origin {
        let o = Origin {
            client: client.parse().unwrap(),
            front: front.parse().unwrap(),
        };
        let mut bytes = encode(o).unwrap();
        bytes.extend_from_slice(b"A1 LOGIN");
        let mut input = bytes.as_slice();
        let got = read(&mut input).await.unwrap();
        assert_eq!(input, b"A1 LOGIN", "exactly the header is read");
        got
    }

    #[tokio::test]
    async fn addresses_go_through() {
        let o = round_trip("203.0.113.7:51000", "198.51.100.1:993").await;
        assert_eq!(o.client, "203.0.113.7:51000".parse().unwrap());
        assert_eq!(o.front.port(), 993);
        let o = round_trip("[2001:db8::7]:51000", "[2001:db8::1]:25").await;
        assert_eq!(o.client, "[2001:db8::7]:51000".parse().unwrap());
        // An IPv4 client on an IPv6 listener comes out as IPv4.
        let o = round_trip("203.0.113.7:4000", "[2001:db8::1]:465").await;
        assert_eq!(o.client, "203.0.113.7:4000".parse().unwrap());
    }

    #[tokio::test]
    async fn bad_headers_are_refused() {
        let mut long = b"\r\n\r\n\0\r\nQUIT\n\x21\x11".to_vec();
        long.extend_from_slice(&1000u16.to_be_bytes());
        long.resize(2000, 0);
        for bytes in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            &long[..],
            &b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x02ab"[..],
        ] {
            let mut input = bytes;
            assert!(read(&mut input).await.is_err(), "{bytes:?}");
        }
    }
}
