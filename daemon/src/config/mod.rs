//! The config file: chatmail.ini format (`[params]`, `key = value`, `#`/`;` comment lines,
//! indented continuation lines) with upstream's keys and defaults (spec/relay.md §3) plus
//! Relaybox's own keys (`data_dir`, `*_listen`, `push_url`, `tls_extra_roots`), and
//! validation with errors that name the key and the expected form.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

mod value;

pub use value::{AddressError, DEFAULT_WINDOW, METRICS_PORT, Window, parse_metrics_address};

/// How the relay names itself (DESIGN.md "Modes", TLS-1, CFG-3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `mail_domain` is a DNS name: ACME or external certificate, DKIM.
    Domain,
    /// `mail_domain` starts with `_`: self-signed certificate, DKIM.
    Underscore,
    /// `mail_domain` is an IPv4 address: addresses `user@[a.b.c.d]`, self-signed, no DKIM.
    IpOnly(Ipv4Addr),
}

/// Listen addresses per service; an empty list disables the service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listeners {
    /// SMTP from other MTAs (25).
    pub smtp: Vec<SocketAddr>,
    /// Submission with STARTTLS (587).
    pub submission: Vec<SocketAddr>,
    /// Submission with implicit TLS (465).
    pub submissions: Vec<SocketAddr>,
    /// IMAP with STARTTLS (143).
    pub imap: Vec<SocketAddr>,
    /// IMAP with implicit TLS (993).
    pub imaps: Vec<SocketAddr>,
    /// HTTPS (443).
    pub https: Vec<SocketAddr>,
    /// HTTP redirect (80).
    pub http: Vec<SocketAddr>,
}

impl Listeners {
    /// Every service on its standard port (§1) on one wildcard address: `[::]` serves
    /// IPv4 and IPv6, `0.0.0.0` only IPv4 (PORT-1).
    pub fn standard(disable_ipv6: bool) -> Listeners {
        let at = |port: u16| -> Vec<SocketAddr> {
            if disable_ipv6 {
                vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))]
            } else {
                vec![SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))]
            }
        };
        Listeners {
            smtp: at(25),
            submission: at(587),
            submissions: at(465),
            imap: at(143),
            imaps: at(993),
            https: at(443),
            http: at(80),
        }
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `mail_domain` exactly as configured (`example.org`, `_relay.test`, `127.0.0.1`).
    pub mail_domain: String,
    pub mode: Mode,
    pub max_user_send_per_minute: u32,
    pub max_user_send_burst_size: u32,
    /// Bytes (CFG-2: `500M` = 524288000).
    pub max_mailbox_size: u64,
    /// Bytes.
    pub max_message_size: u64,
    /// Memory for messages in transit, all connections together (bytes; `memory`):
    /// at least twice `max_message_size`.
    pub max_message_memory: u64,
    /// The store's page cache in bytes (`store_cache_size`; redb's own default of 1 GiB
    /// is more than a Raspberry Pi 3 has).
    pub store_cache_size: u64,
    pub delete_mails_after: u32,
    pub delete_large_after: u32,
    pub delete_inactive_users_after: u32,
    pub username_min_length: usize,
    pub username_max_length: usize,
    pub password_min_length: usize,
    pub max_load_1m: f64,
    /// Bytes.
    pub min_available_memory: u64,
    /// Bytes.
    pub min_free_disk_space: u64,
    pub max_imap_connections: usize,
    pub max_smtp_connections: usize,
    /// Relaybox (issue 13): per-address connection limits and session deadlines.
    pub connections: ConnectionLimits,
    /// (certificate chain PEM, private key PEM).
    pub tls_external_cert_and_key: Option<(PathBuf, PathBuf)>,
    pub www_folder: Option<PathBuf>,
    pub disable_ipv6: bool,
    pub acme_email: String,
    /// CFG-5: `None` = key absent (built-in relay at `https://<mail_domain>`).
    pub iroh_relay: Option<String>,
    pub mtail_address: Option<String>,
    pub imap_rawlog: bool,
    pub imap_compress: bool,
    pub privacy_postal: String,
    pub privacy_mail: String,
    pub privacy_pdo: String,
    pub privacy_supervisor: String,
    /// Relaybox: where the store, certificates and keys live.
    pub data_dir: PathBuf,
    /// Relaybox: listen addresses per service.
    pub listen: Listeners,
    /// Relaybox: where push notifications are POSTed (PUSH-3; configurable for tests).
    pub push_url: String,
    /// Relaybox: a PEM file of extra CA roots trusted by outbound HTTPS besides the
    /// web-PKI roots (`None` = none; a test notification server, a private proxy).
    pub tls_extra_roots: Option<PathBuf>,
    /// Relaybox (issue 7): the `latest.json` URL of the update server; empty = no automatic
    /// update checks (default set at build time by `RELAYBOX_UPDATE_URL`).
    pub update_url: String,
    /// Relaybox: how often the update URL is asked (at least 10 minutes).
    pub update_check_interval: Duration,
    /// Relaybox: the daily maintenance window (UTC) in which updates install by themselves;
    /// `None` = any time.
    pub update_window: Option<Window>,
    /// Relaybox (BOOT-4): the hardware watchdog the daemon pets. Default `auto`, which
    /// `main` resolves ([`WatchdogSetting::resolve`]).
    pub watchdog: WatchdogSetting,
    /// Relaybox: DNS servers for MX, address and DKIM key lookups (OUT-2, IN-5); empty =
    /// the system's resolver (`/etc/resolv.conf`). Tests point it at their own server.
    pub dns_resolver: Vec<SocketAddr>,
    /// Relaybox: DKIM selector of this relay's signatures and DNS record (SUB-12, §18).
    pub dkim_selector: String,
    /// Relaybox (Postfix name and default): give up and bounce after this long (OUT-6).
    pub maximal_queue_lifetime: Duration,
    /// Relaybox (Postfix names and defaults): retry back-off bounds (OUT-6).
    pub minimal_backoff_time: Duration,
    pub maximal_backoff_time: Duration,
    /// Relaybox: UDP addresses of the TURN server (RT-1); empty disables it.
    pub turn_listen: Vec<SocketAddr>,
    /// Relaybox: also write logs to stderr (LOG-1: by default they stay in memory only).
    pub log_stderr: bool,
    /// Relaybox: true when the file has no `mail_domain`: the daemon runs the setup
    /// wizard only (no relay). `mail_domain` then holds a placeholder nothing uses.
    pub setup: bool,
    /// Relaybox: the appliance side (web UI, LED and button, mDNS, ACME).
    pub appliance: ApplianceConfig,
}

/// Relaybox keys of fair connections (issue 13): limits per client address (an IPv4
/// address or an IPv6 /64) on every listener, and deadlines for clients that have not
/// logged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// `max_connections_per_ip` (50), `max_connection_rate_per_ip` (10 per second),
    /// `max_connection_burst_per_ip` (50): per service (SMTP 25; submission per port;
    /// IMAP; HTTPS; HTTP).
    pub per_address: PerAddress,
    /// `smtpd_timeout` (Postfix name and default, 300s): a whole SMTP command line must
    /// arrive within this (a deadline per line, not per read).
    pub smtpd_timeout: Duration,
    /// `smtpd_min_data_rate` (Postfix name and default, 500 bytes/s): DATA may take
    /// `smtpd_timeout` plus one second per this many bytes received, never running more
    /// than `smtpd_timeout` behind.
    pub smtpd_min_data_rate: u32,
    /// `smtpd_session_deadline` (30m): an SMTP session without AUTH (port 25, submission
    /// before AUTH) ends after this long, whatever it does.
    pub smtpd_session_deadline: Duration,
    /// `imap_login_timeout` (60s): an IMAP client must log in within this.
    pub imap_login_timeout: Duration,
}

/// Per-address limits of one listener's pool (`max_connections_per_ip`,
/// `max_connection_rate_per_ip`, `max_connection_burst_per_ip`); `admission` applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerAddress {
    /// Concurrent connections of one address.
    pub connections: u32,
    /// New connections per second of one address, sustained.
    pub rate: u32,
    /// New connections of one address at once.
    pub burst: u32,
}

/// The kernel's first watchdog, the device `watchdog = auto` stands for.
pub const DEFAULT_WATCHDOG_DEVICE: &str = "/dev/watchdog";

/// `watchdog` as written (BOOT-4): `auto` needs the machine, so parsing keeps it and
/// `main` resolves it with [`WatchdogSetting::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchdogSetting {
    /// `auto` (the default): [`DEFAULT_WATCHDOG_DEVICE`] on a Relaybox A/B image, when
    /// it exists; none elsewhere.
    Auto,
    /// `off`, `none` or empty.
    Off,
    /// A device path.
    Device(PathBuf),
}

impl WatchdogSetting {
    /// The device to pet. `ab_image`: whether this is a Relaybox A/B image (the update
    /// code's boot detection); `exists`: whether a path exists. Both are asked only for
    /// `auto`.
    pub fn resolve(
        &self,
        ab_image: impl FnOnce() -> bool,
        exists: impl FnOnce(&std::path::Path) -> bool,
    ) -> Option<PathBuf> {
        match self {
            WatchdogSetting::Auto => ab_image()
                .then(|| PathBuf::from(DEFAULT_WATCHDOG_DEVICE))
                .filter(|d| exists(d)),
            WatchdogSetting::Off => None,
            WatchdogSetting::Device(path) => Some(path.clone()),
        }
    }
}

impl ConnectionLimits {
    fn parse(p: &mut Params) -> Result<ConnectionLimits, ConfigError> {
        let limits = ConnectionLimits {
            per_address: PerAddress {
                connections: p.positive("max_connections_per_ip", 50u32, "50")?,
                rate: p.positive("max_connection_rate_per_ip", 10u32, "10")?,
                burst: p.positive("max_connection_burst_per_ip", 50u32, "50")?,
            },
            smtpd_timeout: p.positive_duration("smtpd_timeout", "300s")?,
            smtpd_min_data_rate: p.positive("smtpd_min_data_rate", 500u32, "500")?,
            smtpd_session_deadline: p.positive_duration("smtpd_session_deadline", "30m")?,
            imap_login_timeout: p.positive_duration("imap_login_timeout", "60s")?,
        };
        Ok(limits)
    }
}

/// Relaybox keys of the appliance (setup wizard, status page, LED, button, ACME).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplianceConfig {
    /// `admin_from_anywhere`: admin pages answer any client, not only LAN and loopback.
    pub admin_from_anywhere: bool,
    /// `setup_code_file`: where the one-time setup code is written (default
    /// `<data_dir>/setup-code`; the image points it at the boot partition).
    pub setup_code_file: PathBuf,
    /// `led`: `none`, `sysfs:<name>` (e.g. `sysfs:ACT`) or `gpio:<chip>:<line>`.
    pub led: String,
    /// `led_active_low`: the LED lights when the line is low.
    pub led_active_low: bool,
    /// `button`: `none` or `gpio:<chip>:<line>` (pressed = line low, pull-up).
    pub button: String,
    /// `mdns_name`: host name announced over mDNS as `<name>.local`; empty = off.
    pub mdns_name: String,
    /// `acme_directory`: the ACME server's directory URL.
    pub acme_directory: String,
    /// `outbound_probe`: `host:port` tried by the port check for outbound SMTP.
    pub outbound_probe: String,
}

impl Config {
    /// The domain part of addresses: `example.org`, `_relay.test` or `[127.0.0.1]` (CFG-3).
    pub fn address_domain(&self) -> String {
        match &self.mode {
            Mode::IpOnly(ip) => format!("[{ip}]"),
            _ => self.mail_domain.clone(),
        }
    }

    /// The name used in greetings and EHLO: the domain, or the reverse pointer name
    /// `d.c.b.a.in-addr.arpa` in IP-only mode (CFG-3).
    pub fn host_name(&self) -> String {
        match &self.mode {
            Mode::IpOnly(ip) => {
                let o = ip.octets();
                format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
            }
            _ => self.mail_domain.clone(),
        }
    }

    /// Self-signed certificate modes (TLS-1).
    pub fn self_signed(&self) -> bool {
        self.tls_external_cert_and_key.is_none() && !matches!(self.mode, Mode::Domain)
    }
}

/// A config file problem; the message names the key and the expected form.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {msg}")]
    Read { path: PathBuf, msg: String },
    #[error("line {line}: {msg}")]
    Syntax { line: usize, msg: String },
    #[error("{key}: {msg}")]
    Value { key: String, msg: String },
}

/// A loaded config plus the keys it did not know (CFG-4: warned about, not fatal).
pub struct Loaded {
    pub config: Config,
    pub unknown_keys: Vec<String>,
}

/// Default notification endpoint (PUSH-3).
pub const DEFAULT_PUSH_URL: &str = "https://notifications.delta.chat/notify";
/// Default `update_url`, set at build time (`RELAYBOX_UPDATE_URL`); empty = no automatic
/// update checks.
pub const DEFAULT_UPDATE_URL: &str = match option_env!("RELAYBOX_UPDATE_URL") {
    Some(u) => u,
    None => "",
};

/// Default data directory of an installed relay.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/relaybox";

/// Upstream keys for services Relaybox does not run as separate processes, and legacy
/// paths: accepted without a warning and ignored (§3 "upstream plumbing", "legacy").
const PLUMBING_KEYS: &[&str] = &[
    // Legacy paths, only meaningful to a future import of an upstream installation.
    "mailboxes_dir",
    "passdb_path",
    "filtermail_smtp_port",
    "filtermail_smtp_port_incoming",
    "filtermail_http_port_incoming",
    "filtermail_lmtp_port_transport",
    "postfix_reinject_port",
    "postfix_reinject_port_incoming",
    "turn_socket_path",
];

/// Removed in upstream 1.11.0 (CFG-4): accepted silently when empty (older generated
/// files carry them), listed as unknown otherwise; they never enable anything.
const REMOVED_KEYS: &[&str] = &["passthrough_senders", "passthrough_recipients"];

/// The section holding every key.
const SECTION: &str = "params";

/// One `key = value` of the file.
struct Entry {
    section: String,
    key: String,
    value: String,
}

/// One line of chatmail.ini as the parser reads it (iniconfig's rules, which upstream
/// uses). `appliance::configfile` goes by the same reading when it edits the file, so that
/// an edit changes exactly the key it means to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IniLine<'a> {
    /// Empty, blank, or a comment: the first non-blank character is `#` or `;`.
    Blank,
    /// `[name]`, optionally followed by a comment; `None` when the closing `]` is missing.
    Section(Option<&'a str>),
    /// An indented line: it continues the previous value (trimmed).
    Continuation(&'a str),
    /// `key = value` or `key: value`, both sides trimmed (no inline comments); `None`
    /// without a separator.
    Key(Option<(&'a str, &'a str)>),
}

/// Classifies one line (without its line ending).
pub fn ini_line(raw: &str) -> IniLine<'_> {
    let trimmed_start = raw.trim_start();
    if trimmed_start.starts_with('#') || trimmed_start.starts_with(';') {
        return IniLine::Blank;
    }
    let line = raw.trim_end();
    if line.is_empty() {
        return IniLine::Blank;
    }
    if let Some(rest) = line.strip_prefix('[') {
        // A section line may carry a trailing comment.
        let head = rest.split(['#', ';']).next().unwrap_or("").trim_end();
        return IniLine::Section(head.strip_suffix(']'));
    }
    if line.starts_with(char::is_whitespace) {
        return IniLine::Continuation(line.trim());
    }
    let kv = match line.split_once('=') {
        Some((k, v)) if !k.contains(':') => Some((k, v)),
        _ => line.split_once(':'),
    };
    IniLine::Key(kv.map(|(k, v)| (k.trim(), v.trim())))
}

/// Split chatmail.ini text into entries ([`ini_line`]): comments and blank lines are
/// skipped; `[name]` opens a section; `key = value` sets a key; an indented line continues
/// the previous value on a new line.
fn split_ini(text: &str) -> Result<Vec<Entry>, ConfigError> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut section: Option<String> = None;
    let mut seen_sections: Vec<String> = Vec::new();
    // Whether the previous non-blank line was a key (so a continuation may follow).
    let mut last_is_key = false;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let syntax = |msg: String| ConfigError::Syntax { line: line_no, msg };
        let line = raw.trim_end();
        match ini_line(raw) {
            IniLine::Blank => {}
            IniLine::Section(None) => {
                return Err(syntax(format!(
                    "expected a section header like [params], got {line:?}"
                )));
            }
            IniLine::Section(Some(name)) => {
                let name = name.to_string();
                if seen_sections.contains(&name) {
                    return Err(syntax(format!("duplicate section [{name}]")));
                }
                seen_sections.push(name.clone());
                section = Some(name);
                last_is_key = false;
            }
            IniLine::Continuation(data) => match entries.last_mut() {
                Some(entry) if last_is_key => {
                    if entry.value.is_empty() {
                        entry.value = data.to_string();
                    } else {
                        entry.value.push('\n');
                        entry.value.push_str(data);
                    }
                }
                _ => return Err(syntax(format!("unexpected indented line {:?}", data))),
            },
            IniLine::Key(None) => {
                return Err(syntax(format!(
                    "expected `key = value`, a [section] or a # comment, got {line:?}"
                )));
            }
            IniLine::Key(Some((key, value))) => {
                if key.is_empty() {
                    return Err(syntax(format!("expected a key before `=`, got {line:?}")));
                }
                let Some(section) = section.clone() else {
                    return Err(syntax(format!(
                        "{key} appears before any section; put it under [params]"
                    )));
                };
                if entries.iter().any(|e| e.section == section && e.key == key) {
                    return Err(syntax(format!("{key} is set twice in [{section}]")));
                }
                entries.push(Entry {
                    section,
                    key: key.to_string(),
                    value: value.to_string(),
                });
                last_is_key = true;
            }
        }
    }
    Ok(entries)
}

/// `mail_domain` of a config in setup mode; never used to serve mail.
const SETUP_PLACEHOLDER_DOMAIN: &str = "_setup.invalid";
/// Let's Encrypt's production directory.
pub const DEFAULT_ACME_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// A large mail server that answers on port 25 (the outbound port check, WIZ-6).
pub const DEFAULT_OUTBOUND_PROBE: &str = "gmail-smtp-in.l.google.com:25";

/// `none`, or `<kind>:<rest>` with one of `kinds` and a non-empty rest.
fn is_device_spec(value: &str, kinds: &[&str]) -> bool {
    value == "none"
        || value
            .split_once(':')
            .is_some_and(|(k, rest)| kinds.contains(&k) && !rest.is_empty())
}

/// The `[params]` keys not yet consumed.
struct Params {
    values: HashMap<String, String>,
}

impl Params {
    fn take(&mut self, key: &str) -> Option<String> {
        self.values.remove(key)
    }

    fn string(&mut self, key: &str) -> String {
        self.take(key).unwrap_or_default()
    }

    /// CFG-1: case-insensitive `true` is true, anything else false.
    fn boolean(&mut self, key: &str) -> bool {
        self.take(key)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    fn number<T: std::str::FromStr>(
        &mut self,
        key: &str,
        default: T,
        example: &str,
    ) -> Result<T, ConfigError> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                value_error(
                    key,
                    format!("expected a whole number like {example}, got {v:?}"),
                )
            }),
        }
    }

    /// A count that must be at least 1.
    fn positive<T: std::str::FromStr + PartialOrd + From<u8>>(
        &mut self,
        key: &str,
        default: T,
        example: &str,
    ) -> Result<T, ConfigError> {
        let n = self.number(key, default, example)?;
        if n < T::from(1) {
            return Err(value_error(
                key,
                format!("expected a whole number of at least 1 like {example}, got 0"),
            ));
        }
        Ok(n)
    }

    /// CFG-2 size in bytes.
    fn size(&mut self, key: &str, default: u64) -> Result<u64, ConfigError> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => parse_size(&v).ok_or_else(|| {
                value_error(key, format!("expected a size like 500M or 2G, got {v:?}"))
            }),
        }
    }

    /// A Postfix-style time: a whole number with unit `s`, `m`, `h`, `d` or `w` (bare =
    /// seconds).
    fn duration(&mut self, key: &str, default: &str) -> Result<Duration, ConfigError> {
        let v = self.take(key).unwrap_or_else(|| default.to_string());
        parse_duration(&v).ok_or_else(|| {
            value_error(
                key,
                format!("expected a time like 300s, 30m, 5h or 2d, got {v:?}"),
            )
        })
    }

    /// A [`Params::duration`] of at least one second.
    fn positive_duration(&mut self, key: &str, default: &str) -> Result<Duration, ConfigError> {
        let d = self.duration(key, default)?;
        if d < Duration::from_secs(1) {
            return Err(value_error(
                key,
                format!("expected a time of at least 1s like {default}, got 0s"),
            ));
        }
        Ok(d)
    }

    /// An `https://` URL (anything else is refused: what it fetches or sends must not travel
    /// in clear text); `allow_empty`: an empty value switches the feature off.
    fn https_url(
        &mut self,
        key: &str,
        default: &str,
        allow_empty: bool,
    ) -> Result<String, ConfigError> {
        let v = self
            .take(key)
            .unwrap_or_else(|| default.to_string())
            .trim()
            .to_string();
        if (allow_empty && v.is_empty())
            || (!v.contains(char::is_whitespace) && crate::net::HttpsUrl::parse(&v).is_some())
        {
            return Ok(v);
        }
        Err(value_error(
            key,
            format!(
                "expected an https:// URL{}, got {v:?}",
                if allow_empty { " (or nothing)" } else { "" }
            ),
        ))
    }

    fn path(&mut self, key: &str) -> Option<PathBuf> {
        self.take(key).filter(|v| !v.is_empty()).map(PathBuf::from)
    }

    fn listeners(
        &mut self,
        key: &str,
        default: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, ConfigError> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => parse_listen(&v).ok_or_else(|| {
                value_error(
                    key,
                    format!(
                        "expected socket addresses like 0.0.0.0:25 or [::]:25 separated by \
                         commas or spaces (empty disables the service), got {v:?}"
                    ),
                )
            }),
        }
    }
}

fn value_error(key: &str, msg: String) -> ConfigError {
    ConfigError::Value {
        key: key.to_string(),
        msg,
    }
}

const MIB: u64 = 1024 * 1024;

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
fn parse_resolvers(text: &str) -> Option<Vec<SocketAddr>> {
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
fn is_dns_label(v: &str) -> bool {
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
fn parse_listen(text: &str) -> Option<Vec<SocketAddr>> {
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
fn parse_mail_domain(value: &str) -> Result<Mode, ConfigError> {
    const EXPECTED: &str = "expected a domain name like chat.example.org, a name starting with \
                            _ like _relay.test, or an IPv4 address like 192.0.2.1";
    let err = || value_error("mail_domain", format!("{EXPECTED}, got {value:?}"));
    if value.is_empty() {
        return Err(value_error("mail_domain", format!("is empty; {EXPECTED}")));
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

impl Config {
    /// Parse and validate chatmail.ini text (spec/relay.md §3).
    pub fn parse(text: &str) -> Result<Loaded, ConfigError> {
        Self::parse_with(text, false)
    }

    /// Parse for `serve`, allowing a missing `mail_domain`: such a file gives a config
    /// with `setup = true` (the daemon then runs the setup wizard).
    pub fn parse_for_serve(text: &str) -> Result<Loaded, ConfigError> {
        Self::parse_with(text, true)
    }

    fn parse_with(text: &str, allow_setup: bool) -> Result<Loaded, ConfigError> {
        let entries = split_ini(text)?;
        let mut elsewhere = Vec::new();
        let mut order = Vec::new();
        let mut values = HashMap::new();
        for e in entries {
            if e.section == SECTION {
                order.push(e.key.clone());
                values.insert(e.key, e.value);
            } else {
                // Upstream reads only [params]; anything elsewhere has no effect (CFG-4).
                elsewhere.push(format!("[{}] {}", e.section, e.key));
            }
        }
        let mut p = Params { values };

        let (mail_domain, setup) = match p.take("mail_domain") {
            Some(d) => (d, false),
            // Setup mode: the wizard asks for the domain (the placeholder is never used).
            None if allow_setup => (SETUP_PLACEHOLDER_DOMAIN.to_string(), true),
            None => {
                return Err(value_error(
                    "mail_domain",
                    "missing; set it in the [params] section, e.g. mail_domain = chat.example.org"
                        .into(),
                ));
            }
        };
        let mode = parse_mail_domain(&mail_domain)?;

        let max_user_send_per_minute = p.positive("max_user_send_per_minute", 60u32, "60")?;
        let max_user_send_burst_size = p.positive("max_user_send_burst_size", 10u32, "10")?;
        let max_mailbox_size = p.size("max_mailbox_size", 500 * MIB)?;
        let max_message_size = match p.take("max_message_size") {
            None => 31_457_280,
            Some(v) => v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                value_error(
                    "max_message_size",
                    format!("expected a number of bytes like 31457280, got {v:?}"),
                )
            })?,
        };
        // Default: 64M (a Raspberry Pi with 1 GB), or room for one message of the
        // largest size when that is bigger.
        let max_message_memory = p.size(
            "max_message_memory",
            (64 * MIB).max(max_message_size.saturating_mul(crate::memory::BYTES_PER_BYTE)),
        )?;
        if max_message_memory < max_message_size.saturating_mul(crate::memory::BYTES_PER_BYTE) {
            return Err(value_error(
                "max_message_memory",
                format!(
                    "expected at least twice max_message_size ({max_message_size} bytes), \
                     got {max_message_memory}"
                ),
            ));
        }
        let store_cache_size =
            p.size("store_cache_size", crate::store::DEFAULT_CACHE_BYTES as u64)?;
        if store_cache_size < MIB {
            return Err(value_error(
                "store_cache_size",
                format!("expected at least 1M, got {store_cache_size} bytes"),
            ));
        }
        let delete_mails_after = p.number("delete_mails_after", 20u32, "20")?;
        let delete_large_after = p.number("delete_large_after", 7u32, "7")?;
        let delete_inactive_users_after = p.number("delete_inactive_users_after", 90u32, "90")?;
        let username_min_length = p.positive("username_min_length", 9usize, "9")?;
        let username_max_length = p.positive("username_max_length", 9usize, "9")?;
        if username_max_length < username_min_length {
            return Err(value_error(
                "username_max_length",
                format!(
                    "expected a length of at least username_min_length ({username_min_length}), \
                     got {username_max_length}"
                ),
            ));
        }
        let password_min_length = p.positive("password_min_length", 9usize, "9")?;
        let max_load_1m = match p.take("max_load_1m") {
            None => 5.0,
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .ok_or_else(|| {
                    value_error(
                        "max_load_1m",
                        format!("expected a load average like 5 or 2.5, got {v:?}"),
                    )
                })?,
        };
        let min_available_memory = p.size("min_available_memory", 200 * MIB)?;
        let min_free_disk_space = p.size("min_free_disk_space", 1024 * MIB)?;
        let max_imap_connections = p.positive("max_imap_connections", 10_000usize, "10000")?;
        let max_smtp_connections = p.positive("max_smtp_connections", 1_000usize, "1000")?;
        let connections = ConnectionLimits::parse(&mut p)?;

        let tls_external_cert_and_key = match p.take("tls_external_cert_and_key") {
            None => None,
            Some(v) if v.is_empty() => None,
            Some(v) => {
                let parts: Vec<&str> = v.split_whitespace().collect();
                match parts.as_slice() {
                    [cert, key] => Some((PathBuf::from(cert), PathBuf::from(key))),
                    _ => {
                        return Err(value_error(
                            "tls_external_cert_and_key",
                            format!(
                                "expected two paths separated by a space, the certificate \
                                 chain then the key, like /etc/ssl/fullchain.pem \
                                 /etc/ssl/privkey.pem, got {v:?}"
                            ),
                        ));
                    }
                }
            }
        };
        let www_folder = p.path("www_folder");
        let disable_ipv6 = p.boolean("disable_ipv6");
        let acme_email = p.string("acme_email");
        // CFG-5: absent ≠ present-and-empty.
        let iroh_relay = p.take("iroh_relay").map(|v| v.trim().to_string());
        let mtail_address = p.take("mtail_address").filter(|v| !v.is_empty());
        // LOG-5: checked here so that a bad value stops the start like any other.
        if let Some(v) = &mtail_address
            && let Err(e) = parse_metrics_address(v)
        {
            return Err(value_error("mtail_address", e.expected()));
        }
        let imap_rawlog = p.boolean("imap_rawlog");
        let imap_compress = p.boolean("imap_compress");
        let privacy_postal = p.string("privacy_postal");
        let privacy_mail = p.string("privacy_mail");
        let privacy_pdo = p.string("privacy_pdo");
        let privacy_supervisor = p.string("privacy_supervisor");
        let data_dir = p
            .path("data_dir")
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        // PUSH-3: tokens leave the relay only over HTTPS.
        let push_url = p.https_url("push_url", DEFAULT_PUSH_URL, false)?;
        let tls_extra_roots = p.path("tls_extra_roots");
        // OTA-2: bundles come only over HTTPS (and are signed besides).
        let update_url = p.https_url("update_url", DEFAULT_UPDATE_URL, true)?;
        let update_check_interval = p.duration("update_check_interval", "6h")?;
        if update_check_interval < Duration::from_secs(600) {
            return Err(value_error(
                "update_check_interval",
                format!(
                    "must be at least 10m (ten minutes), got {}s",
                    update_check_interval.as_secs()
                ),
            ));
        }
        let window_text = p
            .take("update_window")
            .unwrap_or_else(|| DEFAULT_WINDOW.to_string());
        let update_window =
            Window::parse(&window_text).map_err(|e| value_error("update_window", e))?;
        let watchdog = match p.take("watchdog").as_deref().map(str::trim) {
            None | Some("auto") => WatchdogSetting::Auto,
            Some("" | "off" | "none") => WatchdogSetting::Off,
            Some(path) => WatchdogSetting::Device(PathBuf::from(path)),
        };
        let dns_resolver = match p.take("dns_resolver") {
            None => Vec::new(),
            Some(v) => parse_resolvers(&v).ok_or_else(|| {
                value_error(
                    "dns_resolver",
                    format!(
                        "expected DNS server addresses like 127.0.0.1 or 127.0.0.1:5353 \
                         separated by commas or spaces (empty = the system's resolver), \
                         got {v:?}"
                    ),
                )
            })?,
        };
        let dkim_selector = match p.take("dkim_selector") {
            None => "opendkim".to_string(),
            Some(v) if is_dns_label(&v) => v,
            Some(v) => {
                return Err(value_error(
                    "dkim_selector",
                    format!("expected one DNS label like opendkim, got {v:?}"),
                ));
            }
        };
        let maximal_queue_lifetime = p.duration("maximal_queue_lifetime", "2d")?;
        let minimal_backoff_time = p.duration("minimal_backoff_time", "300s")?;
        let maximal_backoff_time = p.duration("maximal_backoff_time", "4000s")?;
        if maximal_backoff_time < minimal_backoff_time {
            return Err(value_error(
                "maximal_backoff_time",
                format!(
                    "expected at least minimal_backoff_time ({}s), got {}s",
                    minimal_backoff_time.as_secs(),
                    maximal_backoff_time.as_secs()
                ),
            ));
        }
        let log_stderr = p.boolean("log_stderr");
        let appliance = ApplianceConfig {
            admin_from_anywhere: p.boolean("admin_from_anywhere"),
            setup_code_file: p
                .path("setup_code_file")
                .unwrap_or_else(|| data_dir.join("setup-code")),
            led: match p.take("led") {
                None => "none".to_string(),
                Some(v) if is_device_spec(&v, &["sysfs", "gpio"]) => v,
                Some(v) => {
                    return Err(value_error(
                        "led",
                        format!("expected none, sysfs:ACT or gpio:gpiochip0:17, got {v:?}"),
                    ));
                }
            },
            led_active_low: p.boolean("led_active_low"),
            button: match p.take("button") {
                None => "none".to_string(),
                Some(v) if is_device_spec(&v, &["gpio"]) => v,
                Some(v) => {
                    return Err(value_error(
                        "button",
                        format!("expected none or gpio:gpiochip0:27, got {v:?}"),
                    ));
                }
            },
            mdns_name: match p.take("mdns_name") {
                None => "relaybox".to_string(),
                Some(v) if v.is_empty() || is_dns_label(&v) => v,
                Some(v) => {
                    return Err(value_error(
                        "mdns_name",
                        format!("expected one DNS label like relaybox (empty = off), got {v:?}"),
                    ));
                }
            },
            acme_directory: match p.take("acme_directory") {
                None => DEFAULT_ACME_DIRECTORY.to_string(),
                Some(v) if v.starts_with("https://") && !v.contains(char::is_whitespace) => v,
                Some(v) => {
                    return Err(value_error(
                        "acme_directory",
                        format!(
                            "expected an https:// URL like {DEFAULT_ACME_DIRECTORY}, got {v:?}"
                        ),
                    ));
                }
            },
            outbound_probe: match p.take("outbound_probe") {
                None => DEFAULT_OUTBOUND_PROBE.to_string(),
                Some(v)
                    if v.rsplit_once(':')
                        .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok()) =>
                {
                    v
                }
                Some(v) => {
                    return Err(value_error(
                        "outbound_probe",
                        format!("expected host:port like {DEFAULT_OUTBOUND_PROBE}, got {v:?}"),
                    ));
                }
            },
        };
        let std = Listeners::standard(disable_ipv6);
        let turn_listen = p.listeners("turn_listen", {
            let mut at = std.smtp.clone();
            for a in &mut at {
                a.set_port(3478);
            }
            at
        })?;
        let listen = Listeners {
            smtp: p.listeners("smtp_listen", std.smtp)?,
            submission: p.listeners("submission_listen", std.submission)?,
            submissions: p.listeners("submissions_listen", std.submissions)?,
            imap: p.listeners("imap_listen", std.imap)?,
            imaps: p.listeners("imaps_listen", std.imaps)?,
            https: p.listeners("https_listen", std.https)?,
            http: p.listeners("http_listen", std.http)?,
        };

        // CFG-4: whatever is left was not understood: [params] keys in file order, then
        // keys of other sections.
        let mut unknown_keys = Vec::new();
        for key in order {
            let Some(value) = p.take(&key) else { continue };
            let silent = PLUMBING_KEYS.contains(&key.as_str())
                || (REMOVED_KEYS.contains(&key.as_str()) && value.is_empty());
            if !silent {
                unknown_keys.push(key);
            }
        }
        unknown_keys.extend(elsewhere);

        Ok(Loaded {
            config: Config {
                mail_domain,
                mode,
                max_user_send_per_minute,
                max_user_send_burst_size,
                max_mailbox_size,
                max_message_size,
                max_message_memory,
                store_cache_size,
                delete_mails_after,
                delete_large_after,
                delete_inactive_users_after,
                username_min_length,
                username_max_length,
                password_min_length,
                max_load_1m,
                min_available_memory,
                min_free_disk_space,
                max_imap_connections,
                max_smtp_connections,
                connections,
                tls_external_cert_and_key,
                www_folder,
                disable_ipv6,
                acme_email,
                iroh_relay,
                mtail_address,
                imap_rawlog,
                imap_compress,
                privacy_postal,
                privacy_mail,
                privacy_pdo,
                privacy_supervisor,
                data_dir,
                listen,
                push_url,
                tls_extra_roots,
                update_url,
                update_check_interval,
                update_window,
                watchdog,
                dns_resolver,
                dkim_selector,
                maximal_queue_lifetime,
                minimal_backoff_time,
                maximal_backoff_time,
                turn_listen,
                log_stderr,
                setup,
                appliance,
            },
            unknown_keys,
        })
    }

    /// The dev-mode config: IP-only relay on 127.0.0.1 with unprivileged loopback ports,
    /// every other value at its default.
    pub fn dev(data_dir: PathBuf) -> Config {
        let mut config = Config::parse("[params]\nmail_domain = 127.0.0.1\n")
            .expect("the built-in dev config is valid")
            .config;
        let at = |port: u16| vec![SocketAddr::from((Ipv4Addr::LOCALHOST, port))];
        config.listen = Listeners {
            smtp: at(2525),
            submission: at(1587),
            submissions: at(1465),
            imap: at(1143),
            imaps: at(1993),
            https: at(1443),
            http: at(1080),
        };
        config.appliance.setup_code_file = data_dir.join("setup-code");
        config.appliance.mdns_name = String::new();
        config.data_dir = data_dir;
        // A development machine is often busy compiling; the ACC-5.6 load brake would
        // refuse the developer's own accounts. Memory and disk limits stay.
        config.max_load_1m = f64::MAX;
        // A developer watches the terminal; TURN is of no use on loopback.
        config.log_stderr = true;
        config.turn_listen = Vec::new();
        // Every client of a developer comes from 127.0.0.1.
        config.connections.per_address = PerAddress {
            connections: 10_000,
            rate: 10_000,
            burst: 10_000,
        };
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Loaded {
        match Config::parse(text) {
            Ok(l) => l,
            Err(e) => panic!("{text:?} must parse: {e}"),
        }
    }

    fn with(extra: &str) -> Config {
        parse(&format!(
            "[params]\nmail_domain = chat.example.org\n{extra}\n"
        ))
        .config
    }

    fn error(extra: &str) -> ConfigError {
        match Config::parse(&format!(
            "[params]\nmail_domain = chat.example.org\n{extra}\n"
        )) {
            Ok(_) => panic!("{extra:?} must be refused"),
            Err(e) => e,
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn defaults_match_upstream() {
        let c = with("");
        assert_eq!(c.mail_domain, "chat.example.org");
        assert_eq!(c.mode, Mode::Domain);
        assert_eq!(c.max_user_send_per_minute, 60);
        assert_eq!(c.max_user_send_burst_size, 10);
        assert_eq!(c.max_mailbox_size, 524_288_000);
        assert_eq!(c.max_message_size, 31_457_280);
        assert_eq!(c.delete_mails_after, 20);
        assert_eq!(c.delete_large_after, 7);
        assert_eq!(c.delete_inactive_users_after, 90);
        assert_eq!(c.username_min_length, 9);
        assert_eq!(c.username_max_length, 9);
        assert_eq!(c.password_min_length, 9);
        assert_eq!(c.max_load_1m, 5.0);
        assert_eq!(c.min_available_memory, 200 * 1024 * 1024);
        assert_eq!(c.min_free_disk_space, 1024 * 1024 * 1024);
        assert_eq!(c.max_imap_connections, 10_000);
        assert_eq!(c.max_smtp_connections, 1_000);
        assert_eq!(c.tls_external_cert_and_key, None);
        assert_eq!(c.www_folder, None);
        assert!(!c.disable_ipv6);
        assert_eq!(c.acme_email, "");
        assert_eq!(c.iroh_relay, None);
        assert_eq!(c.mtail_address, None);
        assert!(!c.imap_rawlog);
        assert!(!c.imap_compress);
        assert_eq!(c.privacy_postal, "");
        assert_eq!(c.privacy_mail, "");
        assert_eq!(c.privacy_pdo, "");
        assert_eq!(c.privacy_supervisor, "");
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/relaybox"));
        let l = &c.listen;
        for (list, port) in [
            (&l.smtp, 25),
            (&l.submission, 587),
            (&l.submissions, 465),
            (&l.imap, 143),
            (&l.imaps, 993),
            (&l.https, 443),
            (&l.http, 80),
        ] {
            assert_eq!(list, &vec![sa(&format!("[::]:{port}"))]);
        }
        assert!(!c.self_signed());
    }

    #[test]
    fn store_cache_size_has_a_small_default_and_a_floor() {
        assert_eq!(with("").store_cache_size, 16 * 1024 * 1024);
        assert_eq!(
            with("store_cache_size = 64M").store_cache_size,
            64 * 1024 * 1024
        );
        let e = error("store_cache_size = 0").to_string();
        assert!(e.contains("store_cache_size"), "{e}");
    }

    #[test]
    fn connection_limits() {
        // Issue 13: defaults, then every key.
        let c = with("").connections;
        let per = PerAddress {
            connections: 50,
            rate: 10,
            burst: 50,
        };
        assert_eq!(c.per_address, per);
        assert_eq!(c.smtpd_timeout, Duration::from_secs(300));
        assert_eq!(c.smtpd_min_data_rate, 500);
        assert_eq!(c.smtpd_session_deadline, Duration::from_secs(1800));
        assert_eq!(c.imap_login_timeout, Duration::from_secs(60));
        let c = with(
            "max_connections_per_ip = 7
max_connection_rate_per_ip = 3
max_connection_burst_per_ip = 4
smtpd_timeout = 2s
smtpd_min_data_rate = 100
smtpd_session_deadline = 1h
imap_login_timeout = 5",
        )
        .connections;
        let per = PerAddress {
            connections: 7,
            rate: 3,
            burst: 4,
        };
        assert_eq!(c.per_address, per);
        assert_eq!(c.smtpd_timeout, Duration::from_secs(2));
        assert_eq!(c.smtpd_min_data_rate, 100);
        assert_eq!(c.smtpd_session_deadline, Duration::from_secs(3600));
        assert_eq!(c.imap_login_timeout, Duration::from_secs(5));
    }

    #[test]
    fn every_key_is_read() {
        let c = with(
            "max_user_send_per_minute = 30
max_user_send_burst_size = 3
max_mailbox_size = 1G
max_message_size = 1000
delete_mails_after = 1
delete_large_after = 2
delete_inactive_users_after = 3
username_min_length = 5
username_max_length = 12
password_min_length = 20
max_load_1m = 2.5
min_available_memory = 64M
min_free_disk_space = 10
max_imap_connections = 7
max_smtp_connections = 8
tls_external_cert_and_key = /etc/ssl/chain.pem   /etc/ssl/key.pem
www_folder = /srv/www
disable_ipv6 = True
acme_email = admin@example.org
iroh_relay = https://iroh.example.org
mtail_address = 127.0.0.1
imap_rawlog = TRUE
imap_compress = true
privacy_postal = Street 1
privacy_mail = privacy@example.org
privacy_pdo = Officer
privacy_supervisor = Authority
mailboxes_dir = /old/mail
passdb_path = /old/passdb.sqlite
data_dir = /data/relay
smtp_listen = 192.0.2.1:25, [2001:db8::1]:25
submission_listen = 127.0.0.1:587
submissions_listen = 127.0.0.1:465 127.0.0.2:465
imap_listen =
imaps_listen = 0.0.0.0:993
https_listen = [::1]:8443
http_listen = 0.0.0.0:8080,",
        );
        assert_eq!(c.max_user_send_per_minute, 30);
        assert_eq!(c.max_user_send_burst_size, 3);
        assert_eq!(c.max_mailbox_size, 1024 * 1024 * 1024);
        assert_eq!(c.max_message_size, 1000);
        assert_eq!(c.delete_mails_after, 1);
        assert_eq!(c.delete_large_after, 2);
        assert_eq!(c.delete_inactive_users_after, 3);
        assert_eq!(c.username_min_length, 5);
        assert_eq!(c.username_max_length, 12);
        assert_eq!(c.password_min_length, 20);
        assert_eq!(c.max_load_1m, 2.5);
        assert_eq!(c.min_available_memory, 64 * 1024 * 1024);
        assert_eq!(c.min_free_disk_space, 10 * 1024 * 1024);
        assert_eq!(c.max_imap_connections, 7);
        assert_eq!(c.max_smtp_connections, 8);
        assert_eq!(
            c.tls_external_cert_and_key,
            Some((
                PathBuf::from("/etc/ssl/chain.pem"),
                PathBuf::from("/etc/ssl/key.pem")
            ))
        );
        assert!(!c.self_signed());
        assert_eq!(c.www_folder, Some(PathBuf::from("/srv/www")));
        assert!(c.disable_ipv6);
        assert_eq!(c.acme_email, "admin@example.org");
        assert_eq!(c.iroh_relay.as_deref(), Some("https://iroh.example.org"));
        assert_eq!(c.mtail_address.as_deref(), Some("127.0.0.1"));
        assert!(c.imap_rawlog);
        assert!(c.imap_compress);
        assert_eq!(c.privacy_postal, "Street 1");
        assert_eq!(c.privacy_mail, "privacy@example.org");
        assert_eq!(c.privacy_pdo, "Officer");
        assert_eq!(c.privacy_supervisor, "Authority");
        assert_eq!(c.data_dir, PathBuf::from("/data/relay"));
        assert_eq!(
            c.listen.smtp,
            vec![sa("192.0.2.1:25"), sa("[2001:db8::1]:25")]
        );
        assert_eq!(c.listen.submission, vec![sa("127.0.0.1:587")]);
        assert_eq!(
            c.listen.submissions,
            vec![sa("127.0.0.1:465"), sa("127.0.0.2:465")]
        );
        assert_eq!(c.listen.imap, vec![], "empty disables the service");
        assert_eq!(c.listen.imaps, vec![sa("0.0.0.0:993")]);
        assert_eq!(c.listen.https, vec![sa("[::1]:8443")]);
        assert_eq!(c.listen.http, vec![sa("0.0.0.0:8080")]);
    }

    #[test]
    fn disable_ipv6_moves_default_listeners_to_ipv4() {
        // PORT-1
        let c = with("disable_ipv6 = true");
        assert_eq!(c.listen, Listeners::standard(true));
        assert_eq!(c.listen.imaps, vec![sa("0.0.0.0:993")]);
        assert_eq!(c.listen.http, vec![sa("0.0.0.0:80")]);
        // An explicit list wins over the default.
        let c = with("disable_ipv6 = true\nsmtp_listen = [::]:25");
        assert_eq!(c.listen.smtp, vec![sa("[::]:25")]);
    }

    #[test]
    fn booleans_follow_cfg_1() {
        for (text, want) in [
            ("true", true),
            ("True", true),
            ("TRUE", true),
            ("tRuE", true),
            ("false", false),
            ("False", false),
            ("yes", false),
            ("1", false),
            ("on", false),
            ("", false),
        ] {
            for key in ["disable_ipv6", "imap_rawlog", "imap_compress"] {
                let c = with(&format!("{key} = {text}"));
                let got = match key {
                    "disable_ipv6" => c.disable_ipv6,
                    "imap_rawlog" => c.imap_rawlog,
                    _ => c.imap_compress,
                };
                assert_eq!(got, want, "{key} = {text:?}");
            }
        }
    }

    #[test]
    fn sizes_follow_cfg_2() {
        const M: u64 = 1024 * 1024;
        for (text, want) in [
            ("500M", Some(500 * M)),
            ("500m", Some(500 * M)),
            ("500MB", Some(500 * M)),
            ("500mb", Some(500 * M)),
            (" 500M ", Some(500 * M)),
            ("500", Some(500 * M)),
            ("500B", Some(500 * M)),
            ("2G", Some(2048 * M)),
            ("2gb", Some(2048 * M)),
            ("1 G", Some(1024 * M)),
            ("0", Some(0)),
            ("lots", None),
            ("", None),
            ("M", None),
            ("1.5G", None),
            ("-1M", None),
            ("500K", None),
            ("500MBB", None),
            ("99999999999999999G", None),
        ] {
            assert_eq!(parse_size(text), want, "{text:?}");
        }
        for key in [
            "max_mailbox_size",
            "min_available_memory",
            "min_free_disk_space",
        ] {
            let c = with(&format!("{key} = 3G"));
            let got = match key {
                "max_mailbox_size" => c.max_mailbox_size,
                "min_available_memory" => c.min_available_memory,
                _ => c.min_free_disk_space,
            };
            assert_eq!(got, 3 * 1024 * M, "{key}");
        }
    }

    #[test]
    fn mail_domain_modes_cfg_3() {
        for (domain, mode, address, host) in [
            (
                "chat.example.org",
                Mode::Domain,
                "chat.example.org",
                "chat.example.org",
            ),
            (
                "_relay.test",
                Mode::Underscore,
                "_relay.test",
                "_relay.test",
            ),
            ("_relay", Mode::Underscore, "_relay", "_relay"),
            (
                "192.0.2.7",
                Mode::IpOnly(Ipv4Addr::new(192, 0, 2, 7)),
                "[192.0.2.7]",
                "7.2.0.192.in-addr.arpa",
            ),
            (
                "127.0.0.1",
                Mode::IpOnly(Ipv4Addr::LOCALHOST),
                "[127.0.0.1]",
                "1.0.0.127.in-addr.arpa",
            ),
        ] {
            let c = parse(&format!("[params]\nmail_domain = {domain}\n")).config;
            assert_eq!(c.mail_domain, domain);
            assert_eq!(c.mode, mode, "{domain}");
            assert_eq!(c.address_domain(), address);
            assert_eq!(c.host_name(), host);
            assert_eq!(c.self_signed(), mode != Mode::Domain, "{domain}");
        }
    }

    #[test]
    fn bad_mail_domains_are_refused() {
        for domain in [
            "",
            "::1",
            "[127.0.0.1]",
            "exa mple.org",
            "example..org",
            "-example.org",
            "example-.org",
            "ex_ample.org",
            "user@example.org",
            "1.2.3",
            "256.1.1.1",
            "example.org.",
        ] {
            let err = Config::parse(&format!("[params]\nmail_domain = {domain}\n"))
                .err()
                .unwrap_or_else(|| panic!("{domain:?} must be refused"));
            let msg = err.to_string();
            assert!(msg.starts_with("mail_domain: "), "{msg}");
            assert!(msg.contains("expected a domain name"), "{msg}");
        }
    }

    #[test]
    fn missing_mail_domain_is_an_error() {
        for text in [
            "",
            "[params]\n",
            "[params]\nmax_mailbox_size = 1G\n",
            "[other]\nmail_domain = x.org\n",
        ] {
            let err = Config::parse(text).err().expect("missing mail_domain");
            assert!(
                matches!(&err, ConfigError::Value { key, .. } if key == "mail_domain"),
                "{err}"
            );
            assert!(err.to_string().contains("missing"), "{err}");
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        for (line, key, expect) in [
            (
                "max_mailbox_size = lots",
                "max_mailbox_size",
                "expected a size like 500M or 2G, got \"lots\"",
            ),
            (
                "min_available_memory = 2T",
                "min_available_memory",
                "expected a size like 500M or 2G",
            ),
            (
                "min_free_disk_space = ",
                "min_free_disk_space",
                "expected a size like 500M or 2G",
            ),
            (
                "max_message_size = 30M",
                "max_message_size",
                "expected a number of bytes like 31457280, got \"30M\"",
            ),
            (
                "max_message_size = 0",
                "max_message_size",
                "expected a number of bytes",
            ),
            (
                "max_user_send_per_minute = many",
                "max_user_send_per_minute",
                "expected a whole number like 60",
            ),
            (
                "max_user_send_per_minute = 0",
                "max_user_send_per_minute",
                "at least 1",
            ),
            (
                "max_user_send_burst_size = -1",
                "max_user_send_burst_size",
                "expected a whole number",
            ),
            (
                "delete_mails_after = 2.5",
                "delete_mails_after",
                "expected a whole number like 20",
            ),
            (
                "delete_large_after = x",
                "delete_large_after",
                "expected a whole number like 7",
            ),
            (
                "delete_inactive_users_after = ",
                "delete_inactive_users_after",
                "expected a whole number like 90",
            ),
            (
                "username_min_length = nine",
                "username_min_length",
                "expected a whole number like 9",
            ),
            (
                "username_max_length = 0",
                "username_max_length",
                "at least 1",
            ),
            (
                "username_min_length = 10",
                "username_max_length",
                "at least username_min_length (10)",
            ),
            (
                "password_min_length = 9x",
                "password_min_length",
                "expected a whole number like 9",
            ),
            (
                "max_load_1m = high",
                "max_load_1m",
                "expected a load average like 5 or 2.5, got \"high\"",
            ),
            ("max_load_1m = -1", "max_load_1m", "expected a load average"),
            (
                "max_load_1m = NaN",
                "max_load_1m",
                "expected a load average",
            ),
            (
                "max_imap_connections = lots",
                "max_imap_connections",
                "expected a whole number like 10000",
            ),
            (
                "max_smtp_connections = 0",
                "max_smtp_connections",
                "at least 1",
            ),
            (
                "max_connections_per_ip = 0",
                "max_connections_per_ip",
                "at least 1",
            ),
            (
                "max_connection_rate_per_ip = fast",
                "max_connection_rate_per_ip",
                "expected a whole number like 10",
            ),
            ("smtpd_timeout = 0", "smtpd_timeout", "at least 1s"),
            (
                "imap_login_timeout = soon",
                "imap_login_timeout",
                "expected a time like",
            ),
            (
                "tls_external_cert_and_key = /only/one.pem",
                "tls_external_cert_and_key",
                "expected two paths",
            ),
            (
                "tls_external_cert_and_key = a b c",
                "tls_external_cert_and_key",
                "got \"a b c\"",
            ),
            (
                "smtp_listen = 25",
                "smtp_listen",
                "expected socket addresses like 0.0.0.0:25",
            ),
            (
                "submission_listen = localhost:587",
                "submission_listen",
                "expected socket addresses",
            ),
            (
                "submissions_listen = 1.2.3.4",
                "submissions_listen",
                "expected socket addresses",
            ),
            (
                "imap_listen = ::1:143",
                "imap_listen",
                "expected socket addresses",
            ),
            (
                "imaps_listen = 0.0.0.0:99999",
                "imaps_listen",
                "expected socket addresses",
            ),
            (
                "https_listen = [::]:443;[::]:8443",
                "https_listen",
                "expected socket addresses",
            ),
            (
                "http_listen = 0.0.0.0:80 x",
                "http_listen",
                "got \"0.0.0.0:80 x\"",
            ),
        ] {
            let err = error(line);
            match &err {
                ConfigError::Value { key: k, msg } => {
                    assert_eq!(k, key, "{line}");
                    assert!(msg.contains(expect), "{line}: {msg}");
                }
                other => panic!("{line}: expected a value error, got {other}"),
            }
            assert!(err.to_string().starts_with(&format!("{key}: ")), "{err}");
        }
        assert_eq!(
            error("max_mailbox_size = lots").to_string(),
            "max_mailbox_size: expected a size like 500M or 2G, got \"lots\""
        );
    }

    #[test]
    fn update_keys() {
        let c = with("");
        assert_eq!(c.update_url, DEFAULT_UPDATE_URL);
        assert_eq!(c.update_check_interval, Duration::from_secs(6 * 3600));
        assert_eq!(
            c.update_window.map(|w| w.to_string()).as_deref(),
            Some("03:00-05:00")
        );
        // `auto` is resolved by `main`, not while parsing.
        assert_eq!(c.watchdog, WatchdogSetting::Auto);
        let c = with(
            "update_url = https://10.0.2.100/rb/latest.json\nupdate_check_interval = 10m\n\
             update_window =\nwatchdog = /dev/watchdog1",
        );
        assert_eq!(c.update_url, "https://10.0.2.100/rb/latest.json");
        assert_eq!(c.update_check_interval, Duration::from_secs(600));
        assert_eq!(c.update_window, None, "empty = any time");
        assert_eq!(
            c.watchdog,
            WatchdogSetting::Device(PathBuf::from("/dev/watchdog1"))
        );
        assert_eq!(with("update_url =").update_url, "", "empty = no checks");
        for off in ["off", "none", ""] {
            assert_eq!(
                with(&format!("watchdog = {off}")).watchdog,
                WatchdogSetting::Off
            );
        }
        for (bad, key, says) in [
            (
                "update_url = http://example.org/latest.json",
                "update_url",
                "https://",
            ),
            ("update_url = example.org", "update_url", "https://"),
            (
                "update_check_interval = 5m",
                "update_check_interval",
                "at least 10m",
            ),
            (
                "update_check_interval = soon",
                "update_check_interval",
                "expected a time",
            ),
            ("update_window = 3-5", "update_window", ""),
        ] {
            match error(bad) {
                ConfigError::Value { key: k, msg } => {
                    assert_eq!(k, key, "{bad}");
                    assert!(msg.contains(says), "{bad}: {msg}");
                }
                other => panic!("{bad}: expected a value error, got {other}"),
            }
        }
    }

    #[test]
    fn watchdog_auto_is_resolved_from_the_callers_facts() {
        let dev = PathBuf::from(DEFAULT_WATCHDOG_DEVICE);
        let named = PathBuf::from("/dev/watchdog1");
        // (setting, A/B image, device exists) → device
        for (setting, ab_image, exists, want) in [
            (WatchdogSetting::Auto, true, true, Some(dev.clone())),
            (WatchdogSetting::Auto, true, false, None),
            (WatchdogSetting::Auto, false, true, None),
            (WatchdogSetting::Auto, false, false, None),
            (WatchdogSetting::Off, true, true, None),
            (
                WatchdogSetting::Device(named.clone()),
                false,
                false,
                Some(named.clone()),
            ),
        ] {
            let asked = std::cell::Cell::new(0);
            let got = setting.resolve(
                || {
                    asked.set(asked.get() + 1);
                    ab_image
                },
                |p| {
                    assert_eq!(p, dev.as_path());
                    exists
                },
            );
            assert_eq!(got, want, "{setting:?} {ab_image} {exists}");
            // The machine is looked at only for `auto`.
            let auto = setting == WatchdogSetting::Auto;
            assert_eq!(asked.get(), usize::from(auto), "{setting:?}");
        }
    }

    #[test]
    fn push_url_and_extra_roots() {
        let c = with("");
        assert_eq!(c.push_url, "https://notifications.delta.chat/notify");
        assert_eq!(c.tls_extra_roots, None);
        let c = with("push_url = https://127.0.0.1:8443/notify \ntls_extra_roots = /etc/rb/ca.pem");
        assert_eq!(c.push_url, "https://127.0.0.1:8443/notify");
        assert_eq!(c.tls_extra_roots, Some(PathBuf::from("/etc/rb/ca.pem")));
        assert_eq!(with("tls_extra_roots =").tls_extra_roots, None);
        for bad in [
            "push_url =",
            "push_url = http://notifications.delta.chat/notify",
            "push_url = https://",
            "push_url = https:///notify",
            "push_url = https://a b/notify",
            "push_url = notifications.delta.chat",
        ] {
            match error(bad) {
                ConfigError::Value { key, msg } => {
                    assert_eq!(key, "push_url", "{bad}");
                    assert!(msg.contains("expected an https:// URL"), "{bad}: {msg}");
                }
                other => panic!("{bad}: expected a value error, got {other}"),
            }
        }
    }

    #[test]
    fn iroh_relay_absent_vs_present_cfg_5() {
        assert_eq!(with("").iroh_relay, None);
        assert_eq!(with("iroh_relay =").iroh_relay.as_deref(), Some(""));
        assert_eq!(
            with("iroh_relay =   https://iroh.example.org  ")
                .iroh_relay
                .as_deref(),
            Some("https://iroh.example.org")
        );
        // A commented-out key is absent.
        assert_eq!(with("# iroh_relay =").iroh_relay, None);
    }

    #[test]
    fn empty_optional_values_are_unset() {
        let c = with("www_folder =\nmtail_address =\ntls_external_cert_and_key =\nacme_email =");
        assert_eq!(c.www_folder, None);
        assert_eq!(c.mtail_address, None);
        assert_eq!(c.tls_external_cert_and_key, None);
        assert_eq!(c.acme_email, "");
    }

    #[test]
    fn unknown_keys_are_listed_plumbing_is_silent_cfg_4() {
        let l = parse(
            "[params]
mail_domain = chat.example.org
frobnicate = 1
filtermail_smtp_port = 10080
filtermail_smtp_port_incoming = 10081
filtermail_http_port_incoming = 10082
filtermail_lmtp_port_transport = 10083
postfix_reinject_port = 10025
postfix_reinject_port_incoming = 10026
turn_socket_path = /run/chatmail-turn/turn.socket
passthrough_senders =
passthrough_recipients = @example.com
tls_cert = acme
[extra]
color = blue
",
        );
        assert_eq!(
            l.unknown_keys,
            vec![
                "frobnicate",
                "passthrough_recipients",
                "tls_cert",
                "[extra] color"
            ]
        );
        // The removed passthrough keys enable nothing: there is no field for them.
        assert_eq!(l.config.mode, Mode::Domain);
    }

    #[test]
    fn ini_syntax() {
        // Comments with # and ;, `key: value`, inline text kept verbatim, continuation lines.
        let l = parse(
            "; leading comment
[params]  # the only section
  # indented comment
mail_domain: chat.example.org
acme_email = a@example.org # not a comment
privacy_postal =
    Example GmbH
    Street 1

    12345 Town
privacy_pdo = Line one
  line two
",
        );
        let c = l.config;
        assert_eq!(c.mail_domain, "chat.example.org");
        assert_eq!(c.acme_email, "a@example.org # not a comment");
        assert_eq!(c.privacy_postal, "Example GmbH\nStreet 1\n12345 Town");
        assert_eq!(c.privacy_pdo, "Line one\nline two");
        assert!(l.unknown_keys.is_empty(), "{:?}", l.unknown_keys);
    }

    #[test]
    fn syntax_errors_give_the_line() {
        for (text, line, expect) in [
            ("mail_domain = x.org\n", 1, "before any section"),
            (
                "[params]\nmail_domain = x.org\nmail_domain = y.org\n",
                3,
                "set twice",
            ),
            (
                "[params]\nmail_domain = x.org\njust words\n",
                3,
                "expected `key = value`",
            ),
            ("[params\nmail_domain = x.org\n", 1, "section header"),
            ("[params]\n[params]\n", 2, "duplicate section"),
            ("[params]\n  indented\n", 2, "unexpected indented line"),
            ("[params]\n = x\n", 2, "unexpected indented line"),
            ("[params]\n= x\n", 2, "expected a key"),
        ] {
            match Config::parse(text) {
                Err(ConfigError::Syntax { line: l, msg }) => {
                    assert_eq!(l, line, "{text:?}");
                    assert!(msg.contains(expect), "{text:?}: {msg}");
                }
                Err(e) => panic!("{text:?}: expected a syntax error, got {e}"),
                Ok(_) => panic!("{text:?}: expected a syntax error"),
            }
        }
    }

    /// An upstream-generated chatmail.ini (1.10-era template, with the removed
    /// passthrough keys and plumbing ports) loads with upstream's values.
    #[test]
    fn upstream_style_file() {
        let text = "[params]

# mail domain (MUST be set to fully qualified chat mail domain)
mail_domain = chat.example.org

#
# If you only do private test deploys, you don't need to modify any settings below
#

# email sending rate per user and minute
max_user_send_per_minute = 60

# per-user max burst size for sending rate limiting (GCRA bucket capacity)
max_user_send_burst_size = 10

# maximum mailbox size of a chatmail address
max_mailbox_size = 500M

# maximum message size for an e-mail in bytes
max_message_size = 31457280

# days after which mails are unconditionally deleted
delete_mails_after = 20

# days after which large messages (>200k) are unconditionally deleted
delete_large_after = 7

# days after which users without a successful login are deleted (database and mails)
delete_inactive_users_after = 90

# minimum length a username must have
username_min_length = 9

# maximum length a username can have
username_max_length = 9

# minimum length a password must have
password_min_length = 9

# list of chatmail addresses which can send outbound un-encrypted mail
passthrough_senders =

# list of e-mail recipients for which to accept outbound un-encrypted mails
passthrough_recipients =

#www_folder = www

# SMTP outgoing filtermail and reinjection
filtermail_smtp_port = 10080
postfix_reinject_port = 10025

# SMTP incoming filtermail and reinjection
filtermail_smtp_port_incoming = 10081
postfix_reinject_port_incoming = 10026

# if set to \"True\" IPv6 is disabled
disable_ipv6 = False

# TLS server certificate provisioning
tls_cert = acme

acme_email = 

# iroh_relay =

# mtail_address = 127.0.0.1

imap_rawlog = false 

imap_compress = false

# postal address of privacy contact
privacy_postal =

# email address of privacy contact
privacy_mail =

# postal address of the privacy data officer
privacy_pdo =

# postal address of the privacy supervisor
privacy_supervisor =
";
        let l = parse(text);
        let c = &l.config;
        assert_eq!(c.mode, Mode::Domain);
        assert_eq!(c.max_mailbox_size, 524_288_000);
        assert_eq!(c.max_message_size, 31_457_280);
        assert_eq!(c.username_max_length, 9);
        assert!(!c.disable_ipv6);
        assert!(!c.imap_rawlog);
        assert_eq!(c.iroh_relay, None);
        assert_eq!(c.mtail_address, None);
        assert_eq!(c.www_folder, None);
        assert_eq!(c.listen, Listeners::standard(false));
        assert_eq!(l.unknown_keys, vec!["tls_cert".to_string()]);
    }

    #[test]
    fn federation_keys() {
        let c = with("");
        assert!(c.dns_resolver.is_empty());
        assert_eq!(c.dkim_selector, "opendkim");
        assert_eq!(c.maximal_queue_lifetime, Duration::from_secs(2 * 86_400));
        assert_eq!(c.minimal_backoff_time, Duration::from_secs(300));
        assert_eq!(c.maximal_backoff_time, Duration::from_secs(4000));
        assert!(!c.log_stderr);
        let c = with(
            "dns_resolver = 127.0.0.1:5353, ::1\ndkim_selector = dkim2026\n\
             maximal_queue_lifetime = 5h\nminimal_backoff_time = 1s\nmaximal_backoff_time = 1m",
        );
        assert_eq!(c.dns_resolver, vec![sa("127.0.0.1:5353"), sa("[::1]:53")]);
        assert_eq!(c.dkim_selector, "dkim2026");
        assert_eq!(c.maximal_queue_lifetime, Duration::from_secs(5 * 3600));
        assert_eq!(c.minimal_backoff_time, Duration::from_secs(1));
        assert_eq!(c.maximal_backoff_time, Duration::from_secs(60));
        for (bad, key) in [
            ("dns_resolver = resolver.example", "dns_resolver"),
            ("dkim_selector = a.b", "dkim_selector"),
            ("maximal_queue_lifetime = 2 days", "maximal_queue_lifetime"),
            (
                "minimal_backoff_time = 10m\nmaximal_backoff_time = 1m",
                "maximal_backoff_time",
            ),
            ("mtail_address = metrics.example", "mtail_address"),
        ] {
            match error(bad) {
                ConfigError::Value { key: k, .. } => assert_eq!(k, key, "{bad}"),
                e => panic!("{bad}: {e}"),
            }
        }
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("300"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1w"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn dev_config() {
        let c = Config::dev(PathBuf::from("/tmp/rb-dev"));
        assert_eq!(c.mode, Mode::IpOnly(Ipv4Addr::LOCALHOST));
        assert_eq!(c.address_domain(), "[127.0.0.1]");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/rb-dev"));
        assert!(c.self_signed());
        let l = &c.listen;
        for (list, port) in [
            (&l.smtp, 2525),
            (&l.submission, 1587),
            (&l.submissions, 1465),
            (&l.imap, 1143),
            (&l.imaps, 1993),
            (&l.https, 1443),
            (&l.http, 1080),
        ] {
            assert_eq!(list, &vec![sa(&format!("127.0.0.1:{port}"))]);
        }
        // Everything else at its default.
        assert_eq!(c.max_mailbox_size, 524_288_000);
        assert_eq!(c.username_max_length, 9);
        assert_eq!(c.password_min_length, 9);
        assert_eq!(c.iroh_relay, None);
    }
}
