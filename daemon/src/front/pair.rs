//! Pairing a box with its front server by a one-time code (issue 20), so that nobody copies
//! certificate fingerprints by hand. The box makes the code and shows the command to run
//! on the front (`relaybox front … --pair CODE`); then it connects to the front's tunnel
//! port with ALPN [`PAIR_ALPN`] and TLS 1.3, each side with its own tunnel certificate and
//! accepting any certificate of the other. Both then prove that they know the code, bound
//! to this very TLS session: each sends HMAC-SHA256 keyed with the code over its role and
//! the session's exported keying material (RFC 8446 §7.5; the "tls-exporter" channel binding
//! of RFC 9266). A machine in the middle has two sessions with two different exports, so
//! neither proof passes it on. After the proofs the front keeps the box's certificate
//! (`box.pin`), the box the front's (`front_pin` in chatmail.ini), and the code is used up
//! on the front for good (`used-codes`, its SHA-256 only): a replayed code is refused.
//!
//! Wire, after the handshake: box → front: 32 bytes (the box's proof); front → box: one
//! status byte ([`ACCEPTED`] or [`REFUSED`]), and after [`ACCEPTED`] the front's 32-byte
//! proof. Then both close.

use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use ring::hmac;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::link::{self, Identity};

pub use super::link::PAIR_ALPN;

/// The code's alphabet: lower-case letters and digits without the ones people confuse
/// (i, l, o, 0, 1).
const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
/// Characters of a code (16 × log2(31) ≈ 79 bits), shown in groups of four.
const CODE_LEN: usize = 16;
/// The front's tunnel port when the address does not name one.
pub const DEFAULT_TUNNEL_PORT: u16 = 4433;
/// The front's answer to a right proof, and to anything else.
const ACCEPTED: u8 = 1;
const REFUSED: u8 = 0;
/// RFC 8446 §7.5: the exporter label of the pairing proofs.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-relaybox-pair";
/// Connect, handshake, and each read of the exchange.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);
/// Where `relaybox front` keeps its state unless told otherwise.
pub const FRONT_DATA_DIR: &str = "/var/lib/relaybox-front";

/// Why a pairing did not happen, in words for the wizard and the command line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PairError {
    #[error("no front server answers at {0}: {1}")]
    Unreachable(String, String),
    #[error(
        "the front server refused the pairing code (it was not started with this code, \
         the code was used already, or it was mistyped there)"
    )]
    Refused,
    #[error(
        "the server at {0} did not prove that it knows the pairing code: it is not your front \
         server, or something in between tampers with the connection"
    )]
    NotTheFront(String),
    #[error("not a pairing code: {0}")]
    BadCode(String),
    #[error("pairing with {0}: {1}")]
    Protocol(String, String),
}

/// A new one-time code, `xxxx-xxxx-xxxx-xxxx`.
pub fn new_code() -> String {
    let mut out = String::with_capacity(CODE_LEN + 3);
    for i in 0..CODE_LEN {
        if i > 0 && i % 4 == 0 {
            out.push('-');
        }
        // Uniform: 31 divides no power of two, so draw from a range that it divides.
        let c = loop {
            let b: u8 = rand::random();
            if usize::from(b) < 256 - 256 % ALPHABET.len() {
                break ALPHABET[usize::from(b) % ALPHABET.len()];
            }
        };
        out.push(char::from(c));
    }
    out
}

/// The code as both sides key the proofs with it: lower case, without the dashes and
/// spaces people type; refused unless it has the code's length and alphabet.
pub fn normalize_code(code: &str) -> Result<String, PairError> {
    let plain: String = code
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if plain.len() != CODE_LEN || !plain.bytes().all(|b| ALPHABET.contains(&b)) {
        return Err(PairError::BadCode(format!(
            "expected {CODE_LEN} letters and digits like abcd-efgh-jkmn-pqrs"
        )));
    }
    Ok(plain)
}

/// The front's tunnel address as the box keeps it (`host:port`; the default port added).
pub fn tunnel_address(front: &str) -> String {
    let front = front.trim();
    let has_port = match front.rsplit_once(':') {
        // `[v6]:port` or `host:port`; a bare IPv6 address has several colons.
        Some((host, port)) => {
            port.parse::<u16>().is_ok() && (host.ends_with(']') || !host.contains(':'))
        }
        None => false,
    };
    if has_port {
        front.to_string()
    } else if front.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{front}]:{DEFAULT_TUNNEL_PORT}")
    } else {
        format!("{front}:{DEFAULT_TUNNEL_PORT}")
    }
}

/// The tunnel port of a front address `host:port` (as [`tunnel_address`] writes it).
pub fn tunnel_port(front: &str) -> u16 {
    front
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(DEFAULT_TUNNEL_PORT)
}

/// The address to name a front by among those its name has: IPv4 first (the A record and
/// `--public` of the command).
pub fn preferred_address(found: &[IpAddr]) -> Option<IpAddr> {
    found
        .iter()
        .find(|ip| ip.is_ipv4())
        .or(found.first())
        .copied()
}

/// The one command to paste on the front server, for its public address and the code.
pub fn front_command(public: IpAddr, tunnel_port: u16, code: &str) -> String {
    let mut cmd = format!("relaybox front --public {public} --pair {code}");
    if tunnel_port != DEFAULT_TUNNEL_PORT {
        let tunnel = std::net::SocketAddr::new(public, tunnel_port);
        cmd.push_str(&format!(" --tunnel {tunnel}"));
    }
    cmd
}

/// A proof: HMAC-SHA256 keyed with the code over the role and the session's export.
fn proof(code: &str, role: &[u8], export: &[u8; 32]) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, code.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(role);
    ctx.update(export);
    ctx.sign()
}

fn verify(code: &str, role: &[u8], export: &[u8; 32], got: &[u8]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, code.as_bytes());
    let mut msg = role.to_vec();
    msg.extend_from_slice(export);
    // Constant time (ring).
    hmac::verify(&key, &msg, got).is_ok()
}

const BOX_ROLE: &[u8] = b"relaybox-pair box";
const FRONT_ROLE: &[u8] = b"relaybox-pair front";

/// RFC 8446 §7.5: 32 bytes of keying material exported from the session (both sides).
fn export<D>(conn: &rustls::ConnectionCommon<D>) -> io::Result<[u8; 32]> {
    conn.export_keying_material([0u8; 32], EXPORTER_LABEL, None)
        .map_err(io::Error::other)
}

fn peer_pin(certs: Option<&[CertificateDer<'_>]>) -> io::Result<[u8; 32]> {
    certs
        .and_then(|c| c.first())
        .map(crate::tls::cert_sha256)
        .ok_or_else(|| io::Error::other("no certificate from the other side"))
}

async fn timed<T>(what: &str, f: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(STEP_TIMEOUT, f)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out")))?
}

/// The box's side: pair with the front at `front` (`host:port`) using `code`. Returns the
/// front's certificate pin to keep.
pub async fn pair_box(front: &str, code: &str, identity: &Identity) -> Result<[u8; 32], PairError> {
    let code = normalize_code(code)?;
    let unreachable = |e: io::Error| PairError::Unreachable(front.to_string(), e.to_string());
    let protocol = |e: io::Error| PairError::Protocol(front.to_string(), e.to_string());
    let tls = link::pairing_client_config(identity)
        .map_err(|e| PairError::Protocol(front.to_string(), e.to_string()))?;
    let tcp = timed("connecting", async {
        tokio::net::TcpStream::connect(front).await
    })
    .await
    .map_err(unreachable)?;
    // The name only fills SNI: the code vouches for the certificate.
    let name = ServerName::try_from("relaybox-front").expect("a valid name");
    let mut stream = timed(
        "the TLS handshake",
        tokio_rustls::TlsConnector::from(tls).connect(name, tcp),
    )
    .await
    .map_err(|e| {
        // A front without a pairing open still answers the handshake; one that is not a
        // front (or an old one without pairing) fails it.
        PairError::Protocol(front.to_string(), e.to_string())
    })?;
    let (export, front_pin) = {
        let conn = stream.get_ref().1;
        if conn.alpn_protocol() != Some(PAIR_ALPN) {
            return Err(PairError::Protocol(
                front.to_string(),
                "the server does not offer pairing (is it `relaybox front`, and new enough?)"
                    .into(),
            ));
        }
        (
            export(conn).map_err(protocol)?,
            peer_pin(conn.peer_certificates()).map_err(protocol)?,
        )
    };
    let mine = proof(&code, BOX_ROLE, &export);
    timed("sending the proof", stream.write_all(mine.as_ref()))
        .await
        .map_err(protocol)?;
    let mut status = [0u8; 1];
    timed("the answer", stream.read_exact(&mut status))
        .await
        .map_err(protocol)?;
    if status[0] != ACCEPTED {
        return Err(PairError::Refused);
    }
    let mut theirs = [0u8; 32];
    timed("the front's proof", stream.read_exact(&mut theirs))
        .await
        .map_err(protocol)?;
    if !verify(&code, FRONT_ROLE, &export, &theirs) {
        return Err(PairError::NotTheFront(front.to_string()));
    }
    let _ = stream.shutdown().await;
    Ok(front_pin)
}

/// Why [`pair_until`] gave up.
#[derive(Debug, PartialEq, Eq)]
pub enum PairFailure {
    /// Refused, a bad code, or a server that cannot prove the code: trying again is no use.
    Ended(PairError),
    /// Nothing answered in time; the last attempt's error.
    TimedOut(Option<PairError>),
}

/// Pair with the front at `front`, trying again every `every` while nothing answers (its
/// owner is still starting it) until `deadline`; a refusal ends it at once.
pub async fn pair_until(
    front: &str,
    code: &str,
    identity: &Identity,
    every: Duration,
    deadline: tokio::time::Instant,
) -> Result<[u8; 32], PairFailure> {
    let mut last = None;
    loop {
        match tokio::time::timeout_at(deadline, pair_box(front, code, identity)).await {
            Ok(Ok(pin)) => return Ok(pin),
            Ok(Err(e @ (PairError::Unreachable(..) | PairError::Protocol(..)))) => last = Some(e),
            Ok(Err(e)) => return Err(PairFailure::Ended(e)),
            Err(_) => return Err(PairFailure::TimedOut(last)),
        }
        if tokio::time::Instant::now() + every >= deadline {
            return Err(PairFailure::TimedOut(last));
        }
        tokio::time::sleep(every).await;
    }
}

/// The front's side of one pairing connection (after the handshake with ALPN
/// [`PAIR_ALPN`]): `code` is the open pairing's code (`None`: no pairing open). When the box
/// proves the code, `keep` is given the box's certificate pin and must store it before the
/// box hears yes (so a box never holds a pairing the front lost); it returns whether it did.
/// Returns the pin kept, or `None` when refused.
pub async fn pair_front<S>(
    stream: &mut tokio_rustls::server::TlsStream<S>,
    code: Option<&str>,
    keep: impl FnOnce([u8; 32]) -> bool,
) -> io::Result<Option<[u8; 32]>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (export, box_pin) = {
        let conn = stream.get_ref().1;
        (export(conn)?, peer_pin(conn.peer_certificates())?)
    };
    let mut theirs = [0u8; 32];
    timed("the box's proof", stream.read_exact(&mut theirs)).await?;
    let right = code.is_some_and(|c| verify(c, BOX_ROLE, &export, &theirs));
    let Some(code) = code.filter(|_| right && keep(box_pin)) else {
        timed("refusing", stream.write_all(&[REFUSED])).await?;
        let _ = stream.shutdown().await;
        return Ok(None);
    };
    let mut answer = vec![ACCEPTED];
    answer.extend_from_slice(proof(code, FRONT_ROLE, &export).as_ref());
    timed("answering", stream.write_all(&answer)).await?;
    let _ = stream.shutdown().await;
    Ok(Some(box_pin))
}

/// Keep the pairing in the box's chatmail.ini: `front` and `front_pin`.
pub fn save(config_path: &Path, front: &str, pin: &[u8; 32]) -> Result<(), String> {
    let pin = crate::hex::pin_text(pin);
    crate::config::write_params(
        config_path,
        &[("front", Some(front)), ("front_pin", Some(pin.as_str()))],
    )
}

/// Stop using the front: both keys removed from chatmail.ini.
pub fn forget(config_path: &Path) -> Result<(), String> {
    crate::config::write_params(config_path, &[("front", None), ("front_pin", None)])
}

#[cfg(test)]
mod tests;
