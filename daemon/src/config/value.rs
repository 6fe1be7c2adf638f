//! Values of config keys: the parsers the key table (`keys.rs`) uses, and the value types
//! other modules take from the config — the update window (`update_window`, used by
//! `update::agent`) and the metrics address (`mtail_address`, bound by `metrics`). Pure
//! functions of the text: no I/O, nothing imported from above the config.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::Mode;

/// Default `update_window`.
pub const DEFAULT_WINDOW: &str = "03:00-05:00";

/// A daily maintenance window in UTC, `HH:MM-HH:MM`; may wrap past midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Minutes after midnight UTC.
    pub start: u32,
    pub end: u32,
}

impl Window {
    /// `""` → `None` (any time). Errors are config validation messages.
    pub fn parse(text: &str) -> Result<Option<Window>, String> {
        let t = text.trim();
        if t.is_empty() {
            return Ok(None);
        }
        let hm = |s: &str| -> Option<u32> {
            let (h, m) = s.trim().split_once(':')?;
            let (h, m) = (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
            // `then`, not `then_some`: `h * 60` overflows for large `h` (found by the
            // `config` fuzz target: `update_window = 99999999:00-1:00` panicked in debug
            // builds).
            (h < 24 && m < 60 && m.to_string().len() <= 2).then(|| h * 60 + m)
        };
        let bad =
            || format!("expected HH:MM-HH:MM in UTC (e.g. {DEFAULT_WINDOW}) or empty, got {t}");
        let (a, b) = t.split_once('-').ok_or_else(bad)?;
        let (start, end) = (hm(a).ok_or_else(bad)?, hm(b).ok_or_else(bad)?);
        if start == end {
            return Err(format!(
                "the window {t} is empty; leave update_window empty for any time"
            ));
        }
        Ok(Some(Window { start, end }))
    }

    pub fn contains(&self, minute: u32) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }

    /// Minutes from `minute` until the window opens (0 when open).
    pub fn until_open(&self, minute: u32) -> u32 {
        if self.contains(minute) {
            0
        } else {
            (self.start + 1440 - minute) % 1440
        }
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

/// Port used when `mtail_address` is a bare IP address (upstream's mtail port).
pub const METRICS_PORT: u16 = 3903;

/// What a bad `mtail_address` should look like instead.
fn metrics_address_expected(got: &str) -> String {
    format!(
        "expected an IP address with an optional port like 127.0.0.1, 127.0.0.1:3903 or \
         [::1]:3903, got {got:?}"
    )
}

/// A bad `mtail_address` value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("mtail_address: {}", metrics_address_expected(.0))]
pub struct AddressError(pub String);

impl AddressError {
    /// The message without the key.
    pub fn expected(&self) -> String {
        metrics_address_expected(&self.0)
    }
}

/// `mtail_address` (§3, LOG-5): `127.0.0.1`, `127.0.0.1:3903`, `::1`, `[::1]` or
/// `[::1]:3903`; a bare IP gets port [`METRICS_PORT`]. Host names and port 0 are refused.
pub fn parse_metrics_address(text: &str) -> Result<SocketAddr, AddressError> {
    let t = text.trim();
    let err = || AddressError(text.to_string());
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, METRICS_PORT));
    }
    if let Some(inner) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        let ip: std::net::Ipv6Addr = inner.parse().map_err(|_| err())?;
        return Ok(SocketAddr::new(IpAddr::V6(ip), METRICS_PORT));
    }
    let addr: SocketAddr = t.parse().map_err(|_| err())?;
    if addr.port() == 0 {
        return Err(err());
    }
    Ok(addr)
}

// --- the parsers of the key table -----------------------------------------------------
//
// Each takes a value as written (trimmed) and returns it or what was expected instead;
// the table's driver puts the key in front of the message.

const MIB: u64 = 1024 * 1024;

/// CFG-1: case-insensitive `true` is true, anything else false.
pub fn boolean(v: &str) -> bool {
    v.eq_ignore_ascii_case("true")
}

/// A whole number; `example` goes into the error.
pub fn number<T: std::str::FromStr>(v: &str, example: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("expected a whole number like {example}, got {v:?}"))
}

/// A whole number of at least 1.
/// `max_load_1m = auto`: this many per CPU. The 1-minute load average counts the
/// machine's runnable (and disk-waiting) tasks, so it scales with the CPUs: at 4 per CPU
/// each task gets a quarter of a CPU, which the relay's millisecond-sized logins and
/// deliveries still finish within any client's timeout; a parallel build on a 2-core
/// machine reached 5 (2.5 per CPU, issue 16) and must not close sign-up, and on one CPU
/// this is 4, near upstream's fixed 5, which was chosen for upstream's servers.
pub const LOAD_PER_CPU: f64 = 4.0;

/// `max_load_1m`: a load average (absolute, whatever the CPUs), or `auto` for
/// [`LOAD_PER_CPU`] × `cpus`.
pub fn max_load(v: &str, cpus: usize) -> Result<f64, String> {
    if v.eq_ignore_ascii_case("auto") {
        return Ok(LOAD_PER_CPU * cpus.max(1) as f64);
    }
    v.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && *f >= 0.0)
        .ok_or_else(|| {
            format!(
                "expected a load average like 5 or 2.5, or auto ({LOAD_PER_CPU} per CPU), got {v:?}"
            )
        })
}

pub fn positive<T: std::str::FromStr + PartialOrd + From<u8>>(
    v: &str,
    example: &str,
) -> Result<T, String> {
    let n: T = number(v, example)?;
    if n < T::from(1) {
        return Err(format!(
            "expected a whole number of at least 1 like {example}, got 0"
        ));
    }
    Ok(n)
}

/// CFG-2 size in bytes ([`parse_size`]).
pub fn size(v: &str) -> Result<u64, String> {
    parse_size(v).ok_or_else(|| format!("expected a size like 500M or 2G, got {v:?}"))
}

/// A Postfix-style time ([`parse_duration`]).
pub fn duration(v: &str) -> Result<Duration, String> {
    parse_duration(v).ok_or_else(|| format!("expected a time like 300s, 30m, 5h or 2d, got {v:?}"))
}

/// A [`duration`] of at least one second; `example` goes into the error.
pub fn positive_duration(v: &str, example: &str) -> Result<Duration, String> {
    let d = duration(v)?;
    if d < Duration::from_secs(1) {
        return Err(format!(
            "expected a time of at least 1s like {example}, got 0s"
        ));
    }
    Ok(d)
}

/// An `https://` URL (anything else is refused: what it fetches or sends must not travel
/// in clear text); `allow_empty`: an empty value switches the feature off.
pub fn https_url(v: &str, allow_empty: bool) -> Result<String, String> {
    let v = v.trim();
    if (allow_empty && v.is_empty())
        || (!v.contains(char::is_whitespace) && crate::net::HttpsUrl::parse(v).is_some())
    {
        return Ok(v.to_string());
    }
    Err(format!(
        "expected an https:// URL{}, got {v:?}",
        if allow_empty { " (or nothing)" } else { "" }
    ))
}

/// A path; empty = none.
pub fn path(v: &str) -> Option<PathBuf> {
    (!v.is_empty()).then(|| PathBuf::from(v))
}

/// Listen addresses ([`parse_listen`]); empty = the service is off.
pub fn listeners(v: &str) -> Result<Vec<SocketAddr>, String> {
    parse_listen(v).ok_or_else(|| {
        format!(
            "expected socket addresses like 0.0.0.0:25 or [::]:25 separated by commas or \
             spaces (empty disables the service), got {v:?}"
        )
    })
}

/// `none`, or `<kind>:<rest>` with one of `kinds` and a non-empty rest.
pub fn is_device_spec(value: &str, kinds: &[&str]) -> bool {
    value == "none"
        || value
            .split_once(':')
            .is_some_and(|(k, rest)| kinds.contains(&k) && !rest.is_empty())
}

/// Postfix time units: `300s`, `30m`, `5h`, `2d`, `1w`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim().to_ascii_lowercase();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t.as_str(), "s"),
    };
    let n: u64 = digits.parse().ok()?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(n.checked_mul(scale)?))
}

/// `127.0.0.1`, `127.0.0.1:5353`, `[::1]:53`, `::1`, separated by commas or spaces.
pub fn parse_resolvers(text: &str) -> Option<Vec<SocketAddr>> {
    text.split([',', ' ', '\t'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<SocketAddr>()
                .ok()
                .or_else(|| p.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
        })
        .collect()
}

/// RFC 1035 §2.3.1 label (letters, digits, hyphens; 1–63 octets), as a DKIM selector.
pub fn is_dns_label(v: &str) -> bool {
    (1..=63).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !v.starts_with('-')
        && !v.ends_with('-')
}

/// CFG-2: trim, upper-case, drop one trailing `B`; `G` → ×1024 MiB, `M` → MiB, a bare
/// integer → MiB. Returns bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let s = text.trim().to_ascii_uppercase();
    let s = s.strip_suffix('B').unwrap_or(&s);
    let (digits, mib_per_unit) = if let Some(d) = s.strip_suffix('G') {
        (d, 1024)
    } else if let Some(d) = s.strip_suffix('M') {
        (d, 1)
    } else {
        (s, 1)
    };
    let digits = digits.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(mib_per_unit)?.checked_mul(MIB)
}

/// A comma- or space-separated list of socket addresses; empty → no listener.
pub fn parse_listen(text: &str) -> Option<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for part in text.split([',', ' ', '\t', '\n']).filter(|p| !p.is_empty()) {
        let addr: SocketAddr = part.parse().ok()?;
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    Some(out)
}

/// CFG-3: an IPv4 address → IP-only; `_name` → underscore; else a DNS name.
pub fn parse_mail_domain(value: &str) -> Result<Mode, String> {
    const EXPECTED: &str = "expected a domain name like chat.example.org, a name starting with \
                            _ like _relay.test, or an IPv4 address like 192.0.2.1";
    let err = || format!("{EXPECTED}, got {value:?}");
    if value.is_empty() {
        return Err(format!("is empty; {EXPECTED}"));
    }
    if let Ok(ip) = value.parse::<Ipv4Addr>() {
        return Ok(Mode::IpOnly(ip));
    }
    if value.len() > 253 {
        return Err(err());
    }
    let underscore = value.starts_with('_');
    let labels: Vec<&str> = value.split('.').collect();
    for label in &labels {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || (underscore && b == b'_'));
        if !ok {
            return Err(err());
        }
    }
    // All-numeric names that are not IPv4 addresses (e.g. `1.2.3`) are mistakes.
    if labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_digit())) {
        return Err(err());
    }
    Ok(if underscore {
        Mode::Underscore
    } else {
        Mode::Domain
    })
}
