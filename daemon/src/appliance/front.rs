//! The wizard's front server (issue 20): whether this box seems to need one ([`advice`],
//! shown on the router step), the pairing with one by a one-time code in the background
//! ([`Pairing`]), the DNS records that point at it ([`addresses`]), and moving off it.
//!
//! The pairing: the operator names the front (an IP address or a host name, optionally
//! with the tunnel port); a name is looked up at once and the box keeps the address it
//! found (the tunnel goes there, the command binds it, the A record names it: one address
//! everywhere). The box makes a code ([`pair::new_code`]), the page shows the command for
//! the front ([`pair::front_command`]), and a task tries [`pair::pair_box`] every
//! [`Timing::every`] until [`Timing::wait`] ran out. Nothing answering yet, or a protocol
//! failure, is tried again; a refused code or a front that cannot prove the code ends the
//! attempt (a new code is needed). On success the keys go into chatmail.ini
//! ([`pair::save`]) and the relay takes the link up at once ([`Relay::use_front`]).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use relaybox_webui::{Check, CheckStatus, DnsRecord, FrontInfo, FrontPairing, InputError};
use tokio::time::Instant;

use super::Appliance;
use crate::config::{Config, Mode};
use crate::front::home::FrontTarget;
use crate::front::link::Identity;
use crate::front::pair::{self, PairFailure};
use crate::server::Relay;
use crate::zone::Addresses;

/// How long the box tries to pair, and how often.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub wait: Duration,
    pub every: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            wait: Duration::from_secs(15 * 60),
            every: Duration::from_secs(2),
        }
    }
}

/// Longest wait for the look-up of a front's host name.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

// ---- detection -----------------------------------------------------------------------

/// In the shared address space of carrier-grade NAT (RFC 6598, 100.64.0.0/10).
fn carrier_nat(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[0] == 100 && (o[1] & 0xc0) == 64
}

/// Why this box may need a front server, one sentence per reason, from the port step's
/// `checks` (`port.public-address`, `port.25.outbound`), this box's address towards the
/// internet (`lan`, [`crate::zone::lan_address`]) and its own public IPv4 address if it
/// has one (`own_v4`, [`crate::zone::detect_addresses`]).
pub(crate) fn advice(
    domain: &str,
    checks: &[Check],
    lan: Option<IpAddr>,
    own_v4: Option<Ipv4Addr>,
) -> Vec<String> {
    let mut why = Vec::new();
    match lan {
        Some(IpAddr::V4(a)) if carrier_nat(a) => why.push(format!(
            "This box's internet connection has no public IPv4 address of its own: its \
             address {a} is one that providers share among many customers (carrier-grade \
             NAT), and no port forwarding gets through that."
        )),
        Some(IpAddr::V4(_)) => {}
        _ => why.push(
            "This box has no IPv4 connection to the internet, so mail servers and phones \
             that use IPv4 cannot reach it."
                .into(),
        ),
    }
    let find = |id: &str| checks.iter().find(|c| c.id == id);
    if let Some(c) = find("port.public-address") {
        let found = c.found.as_deref().unwrap_or("");
        let points_to: Vec<IpAddr> = found
            .split(',')
            .filter_map(|a| a.trim().parse().ok())
            .collect();
        match (c.status, own_v4) {
            (CheckStatus::Error, _) if !points_to.is_empty() => why.push(format!(
                "{domain} points to {found}, an address at which phones and mail servers on \
                 the internet cannot reach this box."
            )),
            (CheckStatus::Ok, Some(own))
                if points_to.iter().any(IpAddr::is_ipv4)
                    && !points_to.contains(&IpAddr::V4(own)) =>
            {
                why.push(format!(
                    "{domain} points to {found}, not to this box's public address {own}."
                ))
            }
            _ => {}
        }
    }
    if find("port.25.outbound").is_some_and(|c| c.status == CheckStatus::Warning) {
        why.push(
            "Outgoing port 25 seems blocked here, so the relay cannot deliver mail to other \
             servers itself."
                .into(),
        );
    }
    why
}

// ---- the front's address -------------------------------------------------------------

/// The front's address as the operator typed it: an IP address or a host name, and the
/// tunnel port (4433 when not given).
pub(crate) fn parse_address(typed: &str) -> Result<(String, u16), String> {
    let t = typed.trim();
    if t.contains("://") || t.contains('/') || t.contains('@') || t.contains(char::is_whitespace) {
        return Err(format!(
            "{t:?} is not a server's address: type only its IP address or name, like \
             203.0.113.7 or front.example.org (a port may follow, like :8443)."
        ));
    }
    let not_address = || format!("{t:?} is not a server's address.");
    // `[v6]`, `[v6]:port`, `host:port`, or a host or a bare IPv6 address (several colons).
    let (host, port) = if let Some(rest) = t.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(not_address)?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or_else(not_address)?)),
        }
    } else if t.matches(':').count() == 1 {
        let (host, port) = t.split_once(':').ok_or_else(not_address)?;
        (host, Some(port))
    } else {
        (t, None)
    };
    let port = match port.map(str::parse::<u16>) {
        None => pair::DEFAULT_TUNNEL_PORT,
        Some(Ok(p)) if p > 0 => p,
        Some(_) => {
            return Err(format!(
                "{:?} is not a port: after the colon comes the front server's tunnel port, \
                 a number from 1 to 65535 (4433 unless it was changed there).",
                port.unwrap_or_default()
            ));
        }
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
            return Err(format!("{ip} cannot be a server's address."));
        }
        return Ok((ip.to_string(), port));
    }
    let name = host.trim_end_matches('.');
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "{host:?} is neither an IP address nor a host name (letters, digits, '-' and \
             dots, like front.example.org)."
        ));
    }
    Ok((name.to_ascii_lowercase(), port))
}

/// The address of `host` (itself when it is one; a name through the configured
/// resolver, IPv4 first).
async fn look_up(config: &Config, host: &str) -> Result<IpAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    let resolver = super::dnscheck::resolver(config)?;
    let name = format!("{host}.");
    let found: Vec<IpAddr> =
        match tokio::time::timeout(LOOKUP_TIMEOUT, resolver.lookup_ip(name)).await {
            Ok(Ok(ips)) => ips.iter().collect(),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("no answer within {} s", LOOKUP_TIMEOUT.as_secs())),
        };
    pair::preferred_address(&found).ok_or_else(|| "it has no address".to_string())
}

/// `host:port` as the tunnel address (`[v6]:port`).
fn tunnel(ip: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(ip, port).to_string()
}

/// The host of a tunnel address `host:port`.
fn host_of(front: &str) -> &str {
    front
        .rsplit_once(':')
        .map_or(front, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
}

/// The relay's public addresses for its DNS records: the front's while one is in use,
/// otherwise this host's ([`crate::zone::detect_addresses`]).
pub(crate) fn addresses(relay: &Relay) -> Addresses {
    match relay.front.target() {
        Some(t) => match host_of(&t.front).parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => Addresses {
                v4: Some(a),
                v6: None,
            },
            Ok(IpAddr::V6(a)) => Addresses {
                v4: None,
                v6: Some(a),
            },
            // A name (set by hand, or by `relaybox pair-front`): to be filled in.
            Err(_) => Addresses { v4: None, v6: None },
        },
        None => crate::zone::detect_addresses(&relay.config),
    }
}

/// The records' notes say where the address records point while a front is in use.
pub(crate) fn front_notes(relay: &Relay, records: &mut [DnsRecord]) {
    let Some(t) = relay.front.target() else {
        return;
    };
    let host = host_of(&t.front);
    for r in records {
        match r.id.as_str() {
            "dns.a" => {
                r.note = format!(
                    "The public IPv4 address of the front server {host}, which takes the \
                     connections for this relay."
                )
            }
            "dns.aaaa" => {
                r.note = format!(
                    "Only if the front server {host} has a public IPv6 address (an A or an \
                     AAAA record is needed)."
                )
            }
            _ => {}
        }
    }
}

// ---- the pairing -----------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    Idle,
    Waiting {
        front: String,
        command: String,
        deadline: Instant,
    },
    Failed {
        front: String,
        reason: String,
    },
    Paired {
        front: String,
    },
}

struct State {
    stage: Stage,
    /// Counts the attempts: a task writes its outcome only while its attempt is the last.
    generation: u64,
    task: Option<tokio::task::AbortHandle>,
}

/// The wizard's pairing: one attempt at a time, in a task.
pub struct Pairing {
    state: Arc<Mutex<State>>,
    timing: Mutex<Timing>,
}

impl Default for Pairing {
    fn default() -> Pairing {
        Pairing {
            state: Arc::new(Mutex::new(State {
                stage: Stage::Idle,
                generation: 0,
                task: None,
            })),
            timing: Mutex::new(Timing::default()),
        }
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pairing {
    /// Tests: shorter waits.
    #[cfg(test)]
    pub fn set_timing(&self, timing: Timing) {
        *self.timing.lock().unwrap_or_else(|e| e.into_inner()) = timing;
    }

    /// Give up the attempt under way (its code is not tried any more).
    fn stop(&self, state: &mut State) {
        if let Some(task) = state.task.take() {
            task.abort();
        }
        state.generation += 1;
    }

    fn view(&self) -> FrontPairing {
        let state = lock(&self.state);
        match &state.stage {
            Stage::Idle => FrontPairing::Idle,
            Stage::Waiting {
                front,
                command,
                deadline,
            } => FrontPairing::Waiting {
                front: front.clone(),
                command: command.clone(),
                seconds_left: deadline.saturating_duration_since(Instant::now()).as_secs(),
            },
            Stage::Failed { front, reason } => FrontPairing::Failed {
                front: front.clone(),
                reason: reason.clone(),
            },
            Stage::Paired { front } => FrontPairing::Paired {
                front: front.clone(),
            },
        }
    }
}

/// What a pairing task needs.
struct Attempt {
    state: Arc<Mutex<State>>,
    generation: u64,
    front: String,
    code: String,
    identity: Identity,
    relay: Arc<Relay>,
    config_path: PathBuf,
    timing: Timing,
    deadline: Instant,
}

impl Attempt {
    async fn run(self) {
        let outcome = self.try_until_deadline().await;
        // Under the lock: a newer attempt or a move off cannot interleave with the keys
        // being written and the link switched.
        let mut state = lock(&self.state);
        if state.generation != self.generation {
            return;
        }
        state.task = None;
        let outcome = outcome.and_then(|pin| {
            pair::save(&self.config_path, &self.front, &pin).map_err(|e| {
                format!("the pairing worked, but chatmail.ini could not be written: {e}")
            })?;
            Ok(pin)
        });
        match outcome {
            Ok(pin) => {
                tracing::info!("paired with the front server {}", self.front);
                self.relay.use_front(Some(FrontTarget {
                    front: self.front.clone(),
                    pin,
                }));
                state.stage = Stage::Paired { front: self.front };
            }
            Err(reason) => {
                tracing::warn!("pairing with the front server {}: {reason}", self.front);
                state.stage = Stage::Failed {
                    front: self.front,
                    reason,
                };
            }
        }
    }

    /// The front's pin, or why not in plain words.
    async fn try_until_deadline(&self) -> Result<[u8; 32], String> {
        let tried = pair::pair_until(
            &self.front,
            &self.code,
            &self.identity,
            self.timing.every,
            self.deadline,
        )
        .await;
        let last = match tried {
            Ok(pin) => return Ok(pin),
            Err(PairFailure::Ended(e)) => return Err(format!("{e}.")),
            Err(PairFailure::TimedOut(last)) => last,
        };
        let secs = self.timing.wait.as_secs();
        let waited = if secs >= 60 {
            format!("{} minute(s)", secs.div_ceil(60))
        } else {
            format!("{secs} s")
        };
        Err(match last {
            Some(e) => format!(
                "nothing answered within {waited} ({e}). Check that the command runs on the \
                 front server and that its port {} is open in its firewall.",
                pair::tunnel_port(&self.front)
            ),
            None => format!("nothing answered within {waited}."),
        })
    }
}

impl Appliance {
    fn front_unavailable(&self) -> Option<String> {
        let Some(relay) = self.relay() else {
            return Some(
                "Choose the relay's name first: a front server takes the connections for a \
                 domain."
                    .into(),
            );
        };
        if matches!(relay.config.mode, Mode::IpOnly(_)) {
            return Some(
                "In IP-only mode the relay's addresses carry this box's own IP address, so \
                 a front server cannot stand in for it. To use one, set the relay up with a \
                 domain."
                    .into(),
            );
        }
        if self.config_path.is_none() {
            return Some(
                "This relay runs without a config file, where the front server's keys would \
                 be kept."
                    .into(),
            );
        }
        None
    }

    /// [`relaybox_webui::Backend::front`].
    pub(crate) fn front_info(&self) -> FrontInfo {
        // The stage first: a pairing switches the link before it says "paired", so a
        // "paired" read here always finds its front already in use below.
        let stage = self.front.view();
        let target = self.relay().and_then(|r| r.front.target());
        let pairing = match stage {
            // Moved off or changed since (`relaybox pair-front`, the config): old news.
            FrontPairing::Paired { front } if target.as_ref().is_none_or(|t| t.front != front) => {
                FrontPairing::Idle
            }
            p => p,
        };
        FrontInfo {
            unavailable: self.front_unavailable(),
            address: target.as_ref().map(|t| host_of(&t.front).to_string()),
            current: target.map(|t| t.front),
            connected: self.relay().is_some_and(|r| r.front.connected()),
            pairing,
        }
    }

    /// [`relaybox_webui::Backend::front_advice`].
    pub(crate) fn front_advice_for(&self, checks: &[Check]) -> Vec<String> {
        if self.front_unavailable().is_some()
            || self.relay().is_some_and(|r| r.front.target().is_some())
        {
            return Vec::new();
        }
        let config = self.config();
        advice(
            &config.mail_domain,
            checks,
            crate::zone::lan_address(),
            crate::zone::detect_addresses(&config).v4,
        )
    }

    /// [`relaybox_webui::Backend::front_pair`].
    pub(crate) async fn front_pair_start(&self, typed: &str) -> Result<(), InputError> {
        let fail = |message: String| InputError {
            field: "front",
            message,
        };
        if let Some(why) = self.front_unavailable() {
            return Err(fail(why));
        }
        let (Some(relay), Some(config_path)) = (self.relay().cloned(), self.config_path.clone())
        else {
            return Err(fail("A front server cannot be set up here.".into()));
        };
        let (host, port) = parse_address(typed).map_err(fail)?;
        let ip = look_up(&relay.config, &host).await.map_err(|e| {
            fail(format!(
                "The name {host} could not be looked up ({e}). Check it, or type the front \
                 server's IP address instead."
            ))
        })?;
        let dir = relay.config.data_dir.join("front");
        let identity = Identity::load_or_create(&dir).map_err(|e| {
            fail(format!(
                "This box's tunnel certificate in {} cannot be read or made: {e}",
                dir.display()
            ))
        })?;
        let code = pair::new_code();
        let front = tunnel(ip, port);
        let command = pair::front_command(ip, port, &code);
        let timing = *self.front.timing.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = Instant::now() + timing.wait;
        let mut state = lock(&self.front.state);
        self.front.stop(&mut state);
        let attempt = Attempt {
            state: self.front.state.clone(),
            generation: state.generation,
            front: front.clone(),
            code,
            identity,
            relay,
            config_path,
            timing,
            deadline,
        };
        state.stage = Stage::Waiting {
            front,
            command,
            deadline,
        };
        state.task = Some(tokio::spawn(attempt.run()).abort_handle());
        Ok(())
    }

    /// [`relaybox_webui::Backend::front_cancel`].
    pub(crate) fn front_pair_cancel(&self) {
        let mut state = lock(&self.front.state);
        if matches!(state.stage, Stage::Waiting { .. }) {
            self.front.stop(&mut state);
            state.stage = Stage::Idle;
        }
    }

    /// [`relaybox_webui::Backend::front_leave`].
    pub(crate) fn front_leave_now(&self) -> Result<(), String> {
        let (Some(relay), Some(config_path)) = (self.relay(), self.config_path.as_ref()) else {
            return Err("this relay runs without a config file.".into());
        };
        let Some(target) = relay.front.target() else {
            return Err("no front server is in use.".into());
        };
        let mut state = lock(&self.front.state);
        self.front.stop(&mut state);
        pair::forget(config_path)?;
        relay.use_front(None);
        state.stage = Stage::Idle;
        tracing::info!("moved off the front server {}", target.front);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
