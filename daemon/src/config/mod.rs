//! The config file: chatmail.ini text (`[params]`, `key = value`, `#`/`;` comment lines,
//! indented continuation lines) with upstream's keys and defaults (spec/relay.md §3) plus
//! Relaybox's own, validated into a [`Config`] with errors that name the key and the
//! expected form.
//!
//! Foundation: pure parsing. The caller reads the file (`main`), and values that depend on
//! the machine stay as written for the caller to resolve (`watchdog = auto`:
//! [`WatchdogSetting::resolve`] in `main`). Nothing is imported from the crate but two
//! leaves: `memory` (bytes reserved per message byte) and `net` (the `https://` URL syntax).
//!
//! - `ini.rs`: the chatmail.ini syntax;
//! - `keys.rs`: the table of keys (name, origin, default, dev-mode default, parser, help),
//!   which parsing walks and from which README.md's key tables are generated (`readme.rs`
//!   checks them);
//! - `value.rs`: the value parsers, and the value types other modules take from here
//!   ([`Window`] for `update`, [`parse_metrics_address`] for the metrics endpoint (`http::metrics`)).

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

mod ini;
pub mod keys;
#[cfg(test)]
mod readme;
mod value;

pub use ini::{IniLine, edit_param, ini_line};
pub use value::{
    AddressError, DEFAULT_WINDOW, METRICS_PORT, Window, parse_duration, parse_metrics_address,
    parse_size,
};

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

/// `signup` (issue 18): who may create an account. The `nocreate` files (CFG-6) close
/// sign-up whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignupMode {
    /// Anyone (upstream's behaviour).
    #[default]
    Open,
    /// No new accounts; existing ones keep working.
    Closed,
    /// Only with an invite the admin made (`crate::signup`).
    Invite,
    /// Not the accounts Delta Chat's automatic relay selection makes.
    NoAutomatic,
}

impl SignupMode {
    /// Every mode, in the order the status page offers them.
    pub const ALL: [SignupMode; 4] = [
        SignupMode::Open,
        SignupMode::Closed,
        SignupMode::Invite,
        SignupMode::NoAutomatic,
    ];

    /// The value as written in chatmail.ini.
    pub fn as_str(self) -> &'static str {
        match self {
            SignupMode::Open => "open",
            SignupMode::Closed => "closed",
            SignupMode::Invite => "invite",
            SignupMode::NoAutomatic => "no-automatic",
        }
    }

    /// The mode a chatmail.ini value names, if any.
    pub fn parse(value: &str) -> Option<SignupMode> {
        SignupMode::ALL.into_iter().find(|m| m.as_str() == value)
    }
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
    /// `signup` (issue 18): who may create an account; the relay's live setting starts
    /// from it (`crate::signup`).
    pub signup: SignupMode,
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
    /// IMAP METADATA `/shared/comment` (RFC 5464 §6.2.1); empty = NIL.
    pub server_comment: String,
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
    /// Relaybox (OTA-5): how many health checks a trial boot runs before it falls back.
    pub update_health_attempts: u32,
    /// Relaybox (OTA-5): the pause between two health checks of a trial boot.
    pub update_health_retry: Duration,
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
    /// Relaybox (issue 17): automatic backups.
    pub backup: BackupConfig,
    /// `moved_to` (issue 17, `relaybox move`): the new machine's address; empty = not
    /// moving (`crate::moving`).
    pub moved_to: String,
    /// `front` (issue 20): the front server's tunnel address; empty = none.
    pub front: String,
    /// `front_pin`: the front server's tunnel certificate (SHA-256).
    pub front_pin: Option<[u8; 32]>,
}

/// Where automatic backups go (`backup_dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupTarget {
    /// Empty: no automatic backups.
    Off,
    /// `usb`: the first USB drive found, mounted only while a backup is written.
    Usb,
    /// An absolute directory path.
    Dir(PathBuf),
}

/// Relaybox keys of automatic backups (issue 17 item 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupConfig {
    /// `backup_dir`.
    pub target: BackupTarget,
    /// `backup_every`: the interval; runs are aligned to it (daily: 00:17 UTC).
    pub every: Duration,
    /// `backup_keep`: how many of its own backups are kept in the target.
    pub keep: u32,
    /// `backup_messages`: mailboxes and queue inside.
    pub messages: bool,
    /// `backup_passphrase_file`: the passphrase (first line); missing = no backups.
    pub passphrase_file: PathBuf,
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
    /// The file could not be read (by the caller: this module reads no files).
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

/// `mail_domain` of a config in setup mode; never used to serve mail.
const SETUP_PLACEHOLDER_DOMAIN: &str = "_setup.invalid";
/// Let's Encrypt's production directory.
pub const DEFAULT_ACME_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// A large mail server that answers on port 25 (the outbound port check, WIZ-6).
pub const DEFAULT_OUTBOUND_PROBE: &str = "gmail-smtp-in.l.google.com:25";

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
        let entries = ini::split_ini(text)?;
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
        // Setup mode: the wizard asks for the domain (the placeholder is never used).
        let setup = allow_setup && !values.contains_key("mail_domain");
        if setup {
            values.insert("mail_domain".into(), SETUP_PLACEHOLDER_DOMAIN.into());
        }
        let mut config = keys::read(&mut values, false)?;
        config.setup = setup;

        // CFG-4: whatever is left was not understood: [params] keys in file order, then
        // keys of other sections.
        let mut unknown_keys = Vec::new();
        for key in order {
            let Some(value) = values.remove(&key) else {
                continue;
            };
            let silent = PLUMBING_KEYS.contains(&key.as_str())
                || (REMOVED_KEYS.contains(&key.as_str()) && value.is_empty());
            if !silent {
                unknown_keys.push(key);
            }
        }
        unknown_keys.extend(elsewhere);
        Ok(Loaded {
            config,
            unknown_keys,
        })
    }

    /// The dev-mode config: IP-only relay on 127.0.0.1 with unprivileged loopback ports,
    /// every key at its dev-mode default ([`keys::KEYS`]).
    pub fn dev(data_dir: PathBuf) -> Config {
        let mut config =
            keys::read(&mut HashMap::new(), true).expect("the built-in dev config is valid");
        config.data_dir = data_dir;
        config.appliance.setup_code_file = keys::default_setup_code_file(&config);
        config
    }

    /// Every field empty or zero: what [`keys::read`] starts from before it sets every key.
    fn blank() -> Config {
        let zero = Duration::ZERO;
        Config {
            mail_domain: String::new(),
            mode: Mode::Domain,
            max_user_send_per_minute: 0,
            max_user_send_burst_size: 0,
            max_mailbox_size: 0,
            max_message_size: 0,
            max_message_memory: 0,
            store_cache_size: 0,
            delete_mails_after: 0,
            delete_large_after: 0,
            delete_inactive_users_after: 0,
            username_min_length: 0,
            username_max_length: 0,
            password_min_length: 0,
            max_load_1m: 0.0,
            min_available_memory: 0,
            min_free_disk_space: 0,
            signup: SignupMode::Open,
            max_imap_connections: 0,
            max_smtp_connections: 0,
            connections: ConnectionLimits {
                per_address: PerAddress {
                    connections: 0,
                    rate: 0,
                    burst: 0,
                },
                smtpd_timeout: zero,
                smtpd_min_data_rate: 0,
                smtpd_session_deadline: zero,
                imap_login_timeout: zero,
            },
            tls_external_cert_and_key: None,
            www_folder: None,
            disable_ipv6: false,
            acme_email: String::new(),
            iroh_relay: None,
            mtail_address: None,
            imap_rawlog: false,
            imap_compress: false,
            privacy_postal: String::new(),
            privacy_mail: String::new(),
            server_comment: String::new(),
            privacy_pdo: String::new(),
            privacy_supervisor: String::new(),
            data_dir: PathBuf::new(),
            listen: Listeners::default(),
            push_url: String::new(),
            tls_extra_roots: None,
            update_url: String::new(),
            update_check_interval: zero,
            update_window: None,
            update_health_attempts: 0,
            update_health_retry: zero,
            watchdog: WatchdogSetting::Off,
            dns_resolver: Vec::new(),
            dkim_selector: String::new(),
            maximal_queue_lifetime: zero,
            minimal_backoff_time: zero,
            maximal_backoff_time: zero,
            turn_listen: Vec::new(),
            log_stderr: false,
            setup: false,
            appliance: ApplianceConfig {
                admin_from_anywhere: false,
                setup_code_file: PathBuf::new(),
                led: String::new(),
                led_active_low: false,
                button: String::new(),
                mdns_name: String::new(),
                acme_directory: String::new(),
                outbound_probe: String::new(),
            },
            backup: BackupConfig {
                target: BackupTarget::Off,
                every: zero,
                keep: 0,
                messages: false,
                passphrase_file: PathBuf::new(),
            },
            moved_to: String::new(),
            front: String::new(),
            front_pin: None,
        }
    }
}

/// Set (`Some`) or remove (`None`) keys of `[params]` in the chatmail.ini at `path`, every
/// other line kept ([`edit_param`]): validated first — a file the relay would not start
/// with is never written — then replaced atomically and durably, its mode kept. Operator
/// actions that must survive a restart (the sign-up mode, `moved_to`) go through here.
pub fn write_params(path: &std::path::Path, edits: &[(&str, Option<&str>)]) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let next = edits
        .iter()
        .fold(text, |text, (key, value)| edit_param(&text, key, *value));
    Config::parse(&next).map_err(|e| format!("the config would not be valid: {e}"))?;
    let perms = std::fs::metadata(path)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
        .unwrap_or(0o644);
    crate::files::write_atomic(path, next.as_bytes(), perms).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
