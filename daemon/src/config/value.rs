//! Value types of config keys that other modules use as well: the update window
//! (`update_window`, used by `update::agent`) and the metrics address (`mtail_address`,
//! bound by `metrics`). Pure parsing; they live here so that `config` imports nothing
//! above it.

use std::net::{IpAddr, SocketAddr};

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
