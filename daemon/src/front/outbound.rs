//! Outbound SMTP through the front (issue 20): where the home network blocks port 25
//! outwards, and so that other servers see mail come from the address the relay's MX and
//! SPF records name (the front's), the box asks the front to open its port-25 connections.
//! The box opens a stream whose first bytes are the same PROXY v2 header as the front's
//! streams ([`super::header`], one parser for both), its destination address being where to
//! connect; the front answers one byte ([`Answer`]) and then copies bytes both ways. SMTP,
//! STARTTLS and the certificate check stay on the box: the front sees only what a router
//! would. The front connects only to port 25 of public addresses (not to itself, its
//! network or anything private, unless told so for a private test network).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::header::{self, Origin};
use super::link::{Opener, Stream};

/// The only port the front connects to for the box.
pub const SMTP_PORT: u16 = 25;
/// The front's connect attempt (the box's own connect timeout is longer).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// The box must send the header, and the front its answer, within this (after the connect).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The front's one-byte answer to a box's outbound request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Answer {
    Connected = 0,
    /// Not port 25 of a public address.
    NotAllowed = 1,
    /// The connection failed or timed out.
    Failed = 2,
}

impl Answer {
    fn from_byte(b: u8) -> Answer {
        match b {
            0 => Answer::Connected,
            1 => Answer::NotAllowed,
            _ => Answer::Failed,
        }
    }
}

/// The box's side: a stream to `target` through the front's link.
pub async fn open(opener: &Opener, target: SocketAddr) -> io::Result<Stream> {
    let mut stream = opener.open().await?;
    let unspecified = match target {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    };
    let request = header::encode(Origin {
        client: unspecified,
        front: target,
    })?;
    stream.write_all(&request).await?;
    let mut answer = [0u8; 1];
    tokio::time::timeout(
        CONNECT_TIMEOUT + HEADER_TIMEOUT,
        stream.read_exact(&mut answer),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the front did not answer"))??;
    match Answer::from_byte(answer[0]) {
        Answer::Connected => Ok(stream),
        Answer::NotAllowed => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("the front server does not connect to {target}"),
        )),
        Answer::Failed => Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("the front server could not connect to {target}"),
        )),
    }
}

/// Whether the front may connect to `target` for the box.
pub fn allowed(target: SocketAddr, private_too: bool) -> bool {
    if target.port() != SMTP_PORT {
        return false;
    }
    if private_too {
        return !target.ip().is_unspecified() && !target.ip().is_multicast();
    }
    match target.ip().to_canonical() {
        IpAddr::V4(a) => crate::zone::global_v4(a),
        IpAddr::V6(a) => crate::zone::global_v6(a),
    }
}

/// The front's side of one stream the box opened: read the destination, connect (only
/// where [`allowed`]) from `source` (the front's public address, which the relay's SPF and
/// MX records name) when it is of the destination's family, answer, then copy bytes both
/// ways until either side closes.
pub async fn serve(mut stream: Stream, source: IpAddr, private_too: bool) -> io::Result<()> {
    let request = tokio::time::timeout(HEADER_TIMEOUT, header::read(&mut stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no header"))??;
    let target = request.front;
    if !allowed(target, private_too) {
        tracing::warn!(
            "front: the box asked for {target}: refused (only port 25 of public addresses)"
        );
        stream.write_all(&[Answer::NotAllowed as u8]).await?;
        return Ok(());
    }
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, connect_from(source, target)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            tracing::info!("front: outbound to {target} failed: {e}");
            stream.write_all(&[Answer::Failed as u8]).await?;
            return Ok(());
        }
        Err(_) => {
            tracing::info!("front: outbound to {target} timed out");
            stream.write_all(&[Answer::Failed as u8]).await?;
            return Ok(());
        }
    };
    let _ = tcp.set_nodelay(true);
    tracing::info!("front: outbound SMTP for the box to {target}");
    stream.write_all(&[Answer::Connected as u8]).await?;
    let mut tcp = tcp;
    super::copy_both_ways(&mut stream, &mut tcp).await?;
    Ok(())
}

async fn connect_from(source: IpAddr, target: SocketAddr) -> io::Result<tokio::net::TcpStream> {
    let socket = match target {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    if source.is_ipv4() == target.is_ipv4() && !source.is_unspecified() {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    socket.connect(target).await
}
