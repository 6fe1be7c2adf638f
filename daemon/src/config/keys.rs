//! The table of config keys ([`KEYS`]): for each its name, whether upstream chatmail has it
//! (spec/relay.md §3) or Relaybox adds it, its default, its default in dev mode
//! (`relaybox dev`), the parser that checks it and the help text. Reading a config walks
//! the table in order, so a default or a check may use the keys above it; README.md's key
//! tables are generated from the same table (`readme.rs` checks that they agree).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::value::{
    boolean, duration, https_url, is_device_spec, is_dns_label, listeners, max_load, number,
    parse_mail_domain, parse_metrics_address, parse_resolvers, path, positive, positive_duration,
    size,
};
use super::{
    BackupTarget, Config, ConfigError, DEFAULT_ACME_DIRECTORY, DEFAULT_DATA_DIR,
    DEFAULT_OUTBOUND_PROBE, DEFAULT_PUSH_URL, DEFAULT_UPDATE_URL, DEFAULT_WINDOW, Listeners, Mode,
    SignupMode, WatchdogSetting, Window,
};

const MIB: u64 = 1024 * 1024;

/// The CPUs the machine has online, for `max_load_1m = auto`: the load average counts
/// the tasks of the whole machine, so it is compared with all its CPUs, not with the
/// share this process may use (a CPU quota or affinity does not lower the load figure).
fn online_cpus() -> usize {
    // SAFETY: sysconf only reads a system value.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n)
        .ok()
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Where a key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Upstream chatmail's `chatmail.ini`: same name, same default (spec/relay.md §3),
    /// unless the key's help says otherwise (`max_load_1m`).
    Upstream,
    /// Relaybox's own.
    Relaybox,
}

/// A key's value when the file does not set it.
pub enum Fallback<T> {
    /// Read as if the file said this text; the README shows the text (or "empty").
    Text(&'static str),
    /// As `Text`, but the README shows the second text (a build-time value, a long URL).
    Shown(&'static str, &'static str),
    /// Computed from keys above it in the table; the README shows the text.
    Computed(fn(&Config) -> T, &'static str),
    /// None: the file must set the key (the text is an example value).
    Required(&'static str),
}

/// A key's value in dev mode (`relaybox dev`) when the file does not set it.
pub enum Dev<T> {
    /// As outside dev mode.
    Same,
    /// Its own.
    Own(Fallback<T>),
    /// Given on the command line (set by [`Config::dev`]); the text says how.
    Argument(&'static str),
}

/// One key.
pub struct Spec<T> {
    pub name: &'static str,
    pub origin: Origin,
    pub default: Fallback<T>,
    pub dev: Dev<T>,
    /// Checks a value as written (trimmed), knowing the keys above it; the error says
    /// what was expected (the key is put in front of it).
    pub parse: fn(&str, &Config) -> Result<T, String>,
    /// Stores the value.
    pub set: fn(&mut Config, T),
    /// What the key does (the README's "meaning").
    pub help: &'static str,
}

/// A key of the table, whatever the type of its value.
pub trait Key: Sync {
    fn name(&self) -> &'static str;
    fn origin(&self) -> Origin;
    fn help(&self) -> &'static str;
    /// The default as the README shows it.
    fn default_doc(&self) -> String;
    /// The dev-mode default as the README shows it: `same` when it does not differ.
    fn dev_doc(&self) -> String;
    /// Reads `value` (`None`: not in the file) into `config`.
    fn apply(&self, value: Option<&str>, dev: bool, config: &mut Config)
    -> Result<(), ConfigError>;
}

impl<T> Fallback<T> {
    fn doc(&self) -> String {
        match self {
            Fallback::Text("") => "empty".to_string(),
            Fallback::Text(text) => format!("`{text}`"),
            Fallback::Shown(_, doc) | Fallback::Computed(_, doc) => doc.to_string(),
            Fallback::Required(_) => "required".to_string(),
        }
    }
}

impl<T> Key for Spec<T> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn origin(&self) -> Origin {
        self.origin
    }

    fn help(&self) -> &'static str {
        self.help
    }

    fn default_doc(&self) -> String {
        self.default.doc()
    }

    fn dev_doc(&self) -> String {
        match &self.dev {
            Dev::Same => "same".to_string(),
            Dev::Own(fallback) => fallback.doc(),
            Dev::Argument(doc) => doc.to_string(),
        }
    }

    fn apply(
        &self,
        value: Option<&str>,
        dev: bool,
        config: &mut Config,
    ) -> Result<(), ConfigError> {
        let fallback = match &self.dev {
            Dev::Own(fallback) if dev => fallback,
            _ => &self.default,
        };
        let parsed = match (value, fallback) {
            (Some(v), _) | (None, &Fallback::Text(v) | &Fallback::Shown(v, _)) => {
                (self.parse)(v, config)
            }
            (None, Fallback::Computed(compute, _)) => Ok(compute(config)),
            (None, Fallback::Required(example)) => Err(format!(
                "missing; set it in the [params] section, e.g. {} = {example}",
                self.name
            )),
        };
        let v = parsed.map_err(|msg| ConfigError::Value {
            key: self.name.to_string(),
            msg,
        })?;
        (self.set)(config, v);
        Ok(())
    }
}

/// A config with every key of [`KEYS`] read from `values` (taken out of it), or from the
/// key's default (its dev-mode default when `dev`); the first bad value is the error.
pub(super) fn read(values: &mut HashMap<String, String>, dev: bool) -> Result<Config, ConfigError> {
    let mut config = Config::blank();
    for key in KEYS {
        key.apply(values.remove(key.name()).as_deref(), dev, &mut config)?;
    }
    Ok(config)
}

/// `setup_code_file`'s default.
pub(super) fn default_setup_code_file(c: &Config) -> PathBuf {
    c.data_dir.join("setup-code")
}

/// `backup_passphrase_file`'s default.
pub fn default_backup_passphrase_file(c: &Config) -> PathBuf {
    c.data_dir.join("backup-passphrase")
}

/// `backup_dir`: empty (off), `usb`, or an absolute directory.
pub fn parse_backup_target(v: &str) -> Result<BackupTarget, String> {
    match v.trim() {
        "" | "off" | "none" => Ok(BackupTarget::Off),
        "usb" => Ok(BackupTarget::Usb),
        dir if dir.starts_with('/') => Ok(BackupTarget::Dir(PathBuf::from(dir))),
        other => Err(format!(
            "expected an absolute directory like /srv/backups, `usb` or empty (off), got \
             {other:?}"
        )),
    }
}

/// `front`: empty, or `host:port` (a name or an IP address, and a port).
pub fn parse_front(v: &str) -> Result<String, String> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(String::new());
    }
    let ok = v.parse::<std::net::SocketAddr>().is_ok()
        || v.rsplit_once(':').is_some_and(|(host, port)| {
            port.parse::<u16>().is_ok_and(|p| p > 0)
                && crate::moving::parse_target(host).is_ok_and(|h| !h.is_empty())
        });
    if ok {
        Ok(v.to_string())
    } else {
        Err(format!(
            "expected host:port (the front server's tunnel port), got {v:?}"
        ))
    }
}

/// `backup_every`: at least a minute.
pub fn parse_backup_every(v: &str) -> Result<std::time::Duration, String> {
    let d = duration(v)?;
    if d.as_secs() < 60 {
        return Err(format!(
            "must be at least 1m (one minute), got {}s",
            d.as_secs()
        ));
    }
    Ok(d)
}

/// OTA-5: the health window of a trial boot, which the health checks and the pauses
/// between them must fit (`update_health_retry`).
pub const HEALTH_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// `update_health_retry`: at least a second, and `attempts` − 1 pauses within
/// [`HEALTH_WINDOW`] (else the last checks could never run).
pub fn parse_health_retry(v: &str, attempts: u32) -> Result<std::time::Duration, String> {
    let d = positive_duration(v, "30s")?;
    let pauses = attempts.saturating_sub(1);
    if d.saturating_mul(pauses) >= HEALTH_WINDOW {
        return Err(format!(
            "{pauses} pauses of {}s (update_health_attempts = {attempts}) do not fit the \
             {}s health window",
            d.as_secs(),
            HEALTH_WINDOW.as_secs()
        ));
    }
    Ok(d)
}

/// A standard listener (`[::]:port`, or `0.0.0.0:port` with `disable_ipv6`).
fn standard(c: &Config, pick: fn(Listeners) -> Vec<SocketAddr>) -> Vec<SocketAddr> {
    pick(Listeners::standard(c.disable_ipv6))
}

/// Every key, in the order they are read (a default or check may use the keys above).
pub static KEYS: &[&dyn Key] = &[
    &Spec {
        name: "mail_domain",
        origin: Origin::Upstream,
        default: Fallback::Required("chat.example.org"),
        dev: Dev::Own(Fallback::Text("127.0.0.1")),
        parse: |v, _| parse_mail_domain(v).map(|mode| (v.to_string(), mode)),
        set: |c, (domain, mode): (String, Mode)| {
            c.mail_domain = domain;
            c.mode = mode;
        },
        help: "the relay's domain: a DNS name, a name starting with `_` (`_relay.test`: \
               self-signed certificate) or an IPv4 address (IP-only: addresses \
               `user@[192.0.2.10]`, self-signed); without it `serve` runs the setup wizard",
    },
    &Spec {
        name: "max_user_send_per_minute",
        origin: Origin::Upstream,
        default: Fallback::Text("60"),
        dev: Dev::Same,
        parse: |v, _| positive(v, "60"),
        set: |c, v| c.max_user_send_per_minute = v,
        help: "messages one account may send per minute, sustained",
    },
    &Spec {
        name: "max_user_send_burst_size",
        origin: Origin::Upstream,
        default: Fallback::Text("10"),
        dev: Dev::Same,
        parse: |v, _| positive(v, "10"),
        set: |c, v| c.max_user_send_burst_size = v,
        help: "messages one account may send at once",
    },
    &Spec {
        name: "max_mailbox_size",
        origin: Origin::Upstream,
        default: Fallback::Text("500M"),
        dev: Dev::Same,
        parse: |v, _| size(v),
        set: |c, v| c.max_mailbox_size = v,
        help: "quota of one account (sizes: `M`, `G`, a bare number is MiB)",
    },
    &Spec {
        name: "max_message_size",
        origin: Origin::Upstream,
        default: Fallback::Text("31457280"),
        dev: Dev::Same,
        parse: |v, _| {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("expected a number of bytes like 31457280, got {v:?}"))
        },
        set: |c, v| c.max_message_size = v,
        help: "largest message in bytes (SMTP `SIZE`, `/mxdeliv`, IMAP `APPEND`)",
    },
    &Spec {
        name: "max_message_memory",
        origin: Origin::Relaybox,
        // Default: 64M (a Raspberry Pi with 1 GB), or room for one message of the
        // largest size when that is bigger.
        default: Fallback::Computed(
            |c| (64 * MIB).max(memory_for(c.max_message_size)),
            "`64M`, or twice `max_message_size` if that is more",
        ),
        dev: Dev::Same,
        parse: |v, c| {
            let n = size(v)?;
            if n < memory_for(c.max_message_size) {
                return Err(format!(
                    "expected at least twice max_message_size ({} bytes), got {n}",
                    c.max_message_size
                ));
            }
            Ok(n)
        },
        set: |c, v| c.max_message_memory = v,
        help: "memory for messages in transit, all connections together (SMTP DATA, IMAP \
               literals, `/mxdeliv` bodies, big FETCH answers); at least twice \
               `max_message_size`",
    },
    &Spec {
        name: "store_cache_size",
        origin: Origin::Relaybox,
        default: Fallback::Text("16M"),
        dev: Dev::Same,
        parse: |v, _| {
            let n = size(v)?;
            if n < MIB {
                return Err(format!("expected at least 1M, got {n} bytes"));
            }
            Ok(n)
        },
        set: |c, v| c.store_cache_size = v,
        help: "the store's page cache (redb); the store is read once or twice per message, \
               so a small cache costs little; redb's own default, 1 GiB, is more than a \
               Raspberry Pi 3 has",
    },
    &Spec {
        name: "delete_mails_after",
        origin: Origin::Upstream,
        default: Fallback::Text("20"),
        dev: Dev::Same,
        parse: |v, _| number(v, "20"),
        set: |c, v| c.delete_mails_after = v,
        help: "days after which messages are deleted",
    },
    &Spec {
        name: "delete_large_after",
        origin: Origin::Upstream,
        default: Fallback::Text("7"),
        dev: Dev::Same,
        parse: |v, _| number(v, "7"),
        set: |c, v| c.delete_large_after = v,
        help: "days after which read messages over 200 kB are deleted",
    },
    &Spec {
        name: "delete_inactive_users_after",
        origin: Origin::Upstream,
        default: Fallback::Text("90"),
        dev: Dev::Same,
        parse: |v, _| number(v, "90"),
        set: |c, v| c.delete_inactive_users_after = v,
        help: "days without a login after which an account and its messages are deleted",
    },
    &Spec {
        name: "username_min_length",
        origin: Origin::Upstream,
        default: Fallback::Text("9"),
        dev: Dev::Same,
        parse: |v, _| positive(v, "9"),
        set: |c, v| c.username_min_length = v,
        help: "shortest local part of a new account",
    },
    &Spec {
        name: "username_max_length",
        origin: Origin::Upstream,
        default: Fallback::Text("9"),
        dev: Dev::Same,
        parse: |v, c| {
            let n = positive(v, "9")?;
            if n < c.username_min_length {
                return Err(format!(
                    "expected a length of at least username_min_length ({}), got {n}",
                    c.username_min_length
                ));
            }
            Ok(n)
        },
        set: |c, v| c.username_max_length = v,
        help: "longest local part of a new account (`/new` makes them this long)",
    },
    &Spec {
        name: "password_min_length",
        origin: Origin::Upstream,
        default: Fallback::Text("9"),
        dev: Dev::Same,
        parse: |v, _| positive(v, "9"),
        set: |c, v| c.password_min_length = v,
        help: "shortest password of a new account (`/new` makes them 3 longer)",
    },
    &Spec {
        name: "max_load_1m",
        origin: Origin::Upstream,
        // Not upstream's 5: that figure is for upstream's servers; the load average
        // grows with the CPUs that run tasks, so the default scales with them
        // (`value::LOAD_PER_CPU` says why 4 per CPU).
        default: Fallback::Text("auto"),
        // A development machine is often busy compiling; the ACC-5.6 load brake would
        // refuse the developer's own accounts. Memory and disk limits stay.
        dev: Dev::Own(Fallback::Computed(|_| f64::MAX, "no limit")),
        parse: |v, _| max_load(v, online_cpus()),
        set: |c, v| c.max_load_1m = v,
        help: "new accounts are refused while the 1-minute load average is above this; \
               `auto` is 4 per CPU (upstream's default is a fixed 5), a number is used as is",
    },
    &Spec {
        name: "min_available_memory",
        origin: Origin::Upstream,
        default: Fallback::Text("200M"),
        dev: Dev::Same,
        parse: |v, _| size(v),
        set: |c, v| c.min_available_memory = v,
        help: "new accounts are refused while less memory is available",
    },
    &Spec {
        name: "min_free_disk_space",
        origin: Origin::Upstream,
        default: Fallback::Text("1G"),
        dev: Dev::Same,
        parse: |v, _| size(v),
        set: |c, v| c.min_free_disk_space = v,
        help: "new accounts are refused while less space is free in `data_dir`",
    },
    &Spec {
        name: "signup",
        origin: Origin::Relaybox,
        default: Fallback::Text("open"),
        dev: Dev::Same,
        parse: |v, _| {
            SignupMode::parse(v)
                .ok_or_else(|| format!("expected open, closed, invite or no-automatic, got {v:?}"))
        },
        set: |c, v| c.signup = v,
        help: "who may create an account: `open`; `closed` (existing accounts keep \
               working); `invite` (only with an invite made on the status page); \
               `no-automatic` (not the accounts Delta Chat's automatic relay selection \
               makes); the status page changes it; a `nocreate` file closes sign-up too",
    },
    &Spec {
        name: "max_imap_connections",
        origin: Origin::Upstream,
        default: Fallback::Text("10000"),
        dev: Dev::Same,
        parse: |v, _| positive(v, "10000"),
        set: |c, v| c.max_imap_connections = v,
        help: "IMAP connections at once (143, 993 and 443 together)",
    },
    &Spec {
        name: "max_smtp_connections",
        origin: Origin::Upstream,
        default: Fallback::Text("1000"),
        dev: Dev::Same,
        parse: |v, _| positive(v, "1000"),
        set: |c, v| c.max_smtp_connections = v,
        help: "SMTP connections at once, per service (25; 587; 465; submission on 443)",
    },
    &Spec {
        name: "max_connections_per_ip",
        origin: Origin::Relaybox,
        default: Fallback::Text("50"),
        // Every client of a developer comes from 127.0.0.1.
        dev: Dev::Own(Fallback::Text("10000")),
        parse: |v, _| positive(v, "50"),
        set: |c, v| c.connections.per_address.connections = v,
        help: "concurrent connections of one client address (IPv4 address, IPv6 /64) per \
               service (25; 587; 465; IMAP on 143, 993 and 443; HTTPS; HTTP)",
    },
    &Spec {
        name: "max_connection_rate_per_ip",
        origin: Origin::Relaybox,
        default: Fallback::Text("10"),
        dev: Dev::Own(Fallback::Text("10000")),
        parse: |v, _| positive(v, "10"),
        set: |c, v| c.connections.per_address.rate = v,
        help: "new connections per second of one client address per service",
    },
    &Spec {
        name: "max_connection_burst_per_ip",
        origin: Origin::Relaybox,
        default: Fallback::Text("50"),
        dev: Dev::Own(Fallback::Text("10000")),
        parse: |v, _| positive(v, "50"),
        set: |c, v| c.connections.per_address.burst = v,
        help: "new connections of one client address at once per service",
    },
    &Spec {
        name: "smtpd_timeout",
        origin: Origin::Relaybox,
        default: Fallback::Text("300s"),
        dev: Dev::Same,
        parse: |v, _| positive_duration(v, "300s"),
        set: |c, v| c.connections.smtpd_timeout = v,
        help: "a whole SMTP command line must arrive within this (a deadline per line, not \
               per read; Postfix name and default; times: `s`, `m`, `h`, `d`, `w`)",
    },
    &Spec {
        name: "smtpd_min_data_rate",
        origin: Origin::Relaybox,
        default: Fallback::Text("500"),
        dev: Dev::Same,
        parse: |v, _| positive(v, "500"),
        set: |c, v| c.connections.smtpd_min_data_rate = v,
        help: "bytes per second DATA must keep: each byte received moves its deadline on by \
               1/500 s, never beyond `smtpd_timeout` ahead (Postfix name and default)",
    },
    &Spec {
        name: "smtpd_session_deadline",
        origin: Origin::Relaybox,
        default: Fallback::Text("30m"),
        dev: Dev::Same,
        parse: |v, _| positive_duration(v, "30m"),
        set: |c, v| c.connections.smtpd_session_deadline = v,
        help: "an SMTP session without AUTH (port 25, submission before AUTH) ends after \
               this long",
    },
    &Spec {
        name: "imap_login_timeout",
        origin: Origin::Relaybox,
        default: Fallback::Text("60s"),
        dev: Dev::Same,
        parse: |v, _| positive_duration(v, "60s"),
        set: |c, v| c.connections.imap_login_timeout = v,
        help: "an IMAP client must log in within this",
    },
    &Spec {
        name: "tls_external_cert_and_key",
        origin: Origin::Upstream,
        default: Fallback::Text(""),
        dev: Dev::Same,
        parse: |v, _| match v.split_whitespace().collect::<Vec<_>>().as_slice() {
            [] => Ok(None),
            [cert, key] => Ok(Some((PathBuf::from(cert), PathBuf::from(key)))),
            _ => Err(format!(
                "expected two paths separated by a space, the certificate chain then the \
                 key, like /etc/ssl/fullchain.pem /etc/ssl/privkey.pem, got {v:?}"
            )),
        },
        set: |c, v| c.tls_external_cert_and_key = v,
        help: "the certificate chain and key files, separated by a space; empty = ACME (or \
               self-signed in IP-only and `_` modes)",
    },
    &Spec {
        name: "www_folder",
        origin: Origin::Upstream,
        default: Fallback::Text(""),
        dev: Dev::Same,
        parse: |v, _| Ok(path(v)),
        set: |c, v| c.www_folder = v,
        help: "a directory of web pages served instead of the built-in ones",
    },
    &Spec {
        name: "disable_ipv6",
        origin: Origin::Upstream,
        default: Fallback::Text("false"),
        dev: Dev::Same,
        parse: |v, _| Ok(boolean(v)),
        set: |c, v| c.disable_ipv6 = v,
        help: "listen on IPv4 only (`0.0.0.0` instead of `[::]`); booleans: `true` in any \
               case is true, anything else false",
    },
    &Spec {
        name: "acme_email",
        origin: Origin::Upstream,
        default: Fallback::Text(""),
        dev: Dev::Same,
        parse: |v, _| Ok(v.to_string()),
        set: |c, v| c.acme_email = v,
        help: "contact address given to the ACME server",
    },
    &Spec {
        name: "iroh_relay",
        origin: Origin::Upstream,
        // CFG-5: absent ≠ present-and-empty.
        default: Fallback::Computed(|_| None, "unset"),
        dev: Dev::Same,
        parse: |v, _| Ok(Some(v.trim().to_string())),
        set: |c, v| c.iroh_relay = v,
        help: "unset: the built-in iroh relay runs and clients are told \
               `https://<mail_domain>`; set: the built-in relay is off and clients are told \
               this URL (empty: none)",
    },
    &Spec {
        name: "mtail_address",
        origin: Origin::Upstream,
        default: Fallback::Text(""),
        dev: Dev::Same,
        // LOG-5: checked here so that a bad value stops the start like any other.
        parse: |v, _| {
            if v.is_empty() {
                return Ok(None);
            }
            parse_metrics_address(v).map_err(|e| e.expected())?;
            Ok(Some(v.to_string()))
        },
        set: |c, v| c.mtail_address = v,
        help: "where the metrics endpoint (`GET /metrics`) listens, e.g. `127.0.0.1` (port \
               3903 unless given); empty = no metrics",
    },
    &Spec {
        name: "imap_rawlog",
        origin: Origin::Upstream,
        default: Fallback::Text("false"),
        dev: Dev::Same,
        parse: |v, _| Ok(boolean(v)),
        set: |c, v| c.imap_rawlog = v,
        help: "accepted for upstream's files; Relaybox writes no protocol logs (LOG-2)",
    },
    &Spec {
        name: "imap_compress",
        origin: Origin::Upstream,
        default: Fallback::Text("false"),
        dev: Dev::Same,
        parse: |v, _| Ok(boolean(v)),
        set: |c, v| c.imap_compress = v,
        help: "offer IMAP `COMPRESS=DEFLATE`",
    },
    &Spec {
        name: "privacy_postal",
        origin: Origin::Upstream,
        default: Fallback::Text(""),
        dev: Dev::Same,
        parse: |v, _| Ok(v.to_string()),
        set: |c, v| c.privacy_postal = v,
        help: "privacy page: postal address of the privacy contact (indented lines continue \
               a value)",
    },
    &Spec {
        name: "privacy_mail",
        origin: Origin::Upstream,
        default: Fallback::Text(""),
        dev: Dev::Same,
        parse: |v, _| Ok(v.to_string()),
        set: |c, v| c.privacy_mail = v,
        help: "privacy page: e-mail address of the privacy contact (also the IMAP METADATA \
               `/shared/admin`)",
    },
    &Spec {
        name: "server_comment",
        origin: Origin::Relaybox,
        default: Fallback::Text(""),
        dev: Dev::Same,
        parse: |v, _| {
            // RFC 5464 §6.2.1: a human-readable comment; one line of text.
            if v.chars().any(char::is_control) {
                return Err("expected one line of text without control characters".into());
            }
            Ok(v.trim().to_string())
        },
        set: |c, v| c.server_comment = v,
        help: "IMAP METADATA `/shared/comment`: a line about this relay that clients may \
               show (empty: none)",
    },
    &Spec {
        name: "privacy_pdo",
        origin: Origin::Upstream,
        default: Fallback::Text(""),
        dev: Dev::Same,
        parse: |v, _| Ok(v.to_string()),
        set: |c, v| c.privacy_pdo = v,
        help: "privacy page: the data protection officer",
    },
    &Spec {
        name: "privacy_supervisor",
        origin: Origin::Upstream,
        default: Fallback::Text(""),
        dev: Dev::Same,
        parse: |v, _| Ok(v.to_string()),
        set: |c, v| c.privacy_supervisor = v,
        help: "privacy page: the supervisory authority",
    },
    &Spec {
        name: "data_dir",
        origin: Origin::Relaybox,
        default: Fallback::Text(DEFAULT_DATA_DIR),
        dev: Dev::Argument("`./relaybox-dev` (`--data-dir`)"),
        parse: |v, _| Ok(path(v).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))),
        set: |c, v| c.data_dir = v,
        help: "store, certificates and keys; made mode 0700 (the store file 0600), \
               tightened at start when found wider",
    },
    &Spec {
        name: "push_url",
        origin: Origin::Relaybox,
        default: Fallback::Text(DEFAULT_PUSH_URL),
        dev: Dev::Same,
        // PUSH-3: tokens leave the relay only over HTTPS.
        parse: |v, _| https_url(v, false),
        set: |c, v| c.push_url = v,
        help: "where device tokens are POSTed",
    },
    &Spec {
        name: "tls_extra_roots",
        origin: Origin::Relaybox,
        default: Fallback::Text(""),
        dev: Dev::Same,
        parse: |v, _| Ok(path(v)),
        set: |c, v| c.tls_extra_roots = v,
        help: "PEM file of extra CA roots trusted by outbound TLS besides the web PKI (a \
               private CA, tests)",
    },
    &Spec {
        name: "update_url",
        origin: Origin::Relaybox,
        default: Fallback::Shown(
            DEFAULT_UPDATE_URL,
            "set at build time (`RELAYBOX_UPDATE_URL`), else empty",
        ),
        dev: Dev::Same,
        // OTA-2: bundles come only over HTTPS (and are signed besides).
        parse: |v, _| https_url(v, true),
        set: |c, v| c.update_url = v,
        help: "the update server's `latest.json` (`https://` only); empty = no automatic \
               update checks (uploads still work)",
    },
    &Spec {
        name: "update_check_interval",
        origin: Origin::Relaybox,
        default: Fallback::Text("6h"),
        dev: Dev::Same,
        parse: |v, _| {
            let d = duration(v)?;
            if d.as_secs() < 600 {
                return Err(format!(
                    "must be at least 10m (ten minutes), got {}s",
                    d.as_secs()
                ));
            }
            Ok(d)
        },
        set: |c, v| c.update_check_interval = v,
        help: "how often `update_url` is asked (at least `10m`)",
    },
    &Spec {
        name: "update_window",
        origin: Origin::Relaybox,
        default: Fallback::Text(DEFAULT_WINDOW),
        dev: Dev::Same,
        parse: |v, _| Window::parse(v),
        set: |c, v| c.update_window = v,
        help: "daily window (UTC) in which updates install by themselves; empty = any time \
               (\"update now\" ignores it)",
    },
    &Spec {
        name: "update_health_attempts",
        origin: Origin::Relaybox,
        default: Fallback::Text("5"),
        dev: Dev::Same,
        parse: |v, _| positive(v, "5"),
        set: |c, v| c.update_health_attempts = v,
        help: "health checks a trial boot runs after an update before it gives up and falls \
               back to the old slot (OTA-5)",
    },
    &Spec {
        name: "update_health_retry",
        origin: Origin::Relaybox,
        default: Fallback::Text("30s"),
        dev: Dev::Same,
        parse: |v, c| parse_health_retry(v, c.update_health_attempts),
        set: |c, v| c.update_health_retry = v,
        help: "pause between two health checks of a trial boot; all of them must fit the \
               5-minute health window (`update_health_attempts` − 1 pauses)",
    },
    &Spec {
        name: "watchdog",
        origin: Origin::Relaybox,
        default: Fallback::Text("auto"),
        dev: Dev::Same,
        // `auto` needs the machine: `main` resolves it (WatchdogSetting::resolve).
        parse: |v, _| {
            Ok(match v.trim() {
                "auto" => WatchdogSetting::Auto,
                "" | "off" | "none" => WatchdogSetting::Off,
                device => WatchdogSetting::Device(PathBuf::from(device)),
            })
        },
        set: |c, v| c.watchdog = v,
        help: "hardware watchdog the daemon pets: `auto` = `/dev/watchdog` on a Relaybox \
               A/B image, none elsewhere; `off`, or a device path",
    },
    &Spec {
        name: "dns_resolver",
        origin: Origin::Relaybox,
        default: Fallback::Shown("", "the system's (`/etc/resolv.conf`)"),
        dev: Dev::Same,
        parse: |v, _| {
            parse_resolvers(v).ok_or_else(|| {
                format!(
                    "expected DNS server addresses like 127.0.0.1 or 127.0.0.1:5353 separated \
                     by commas or spaces (empty = the system's resolver), got {v:?}"
                )
            })
        },
        set: |c, v| c.dns_resolver = v,
        help: "DNS servers for MX, address and DKIM lookups, e.g. `127.0.0.1:5353`",
    },
    &Spec {
        name: "dkim_selector",
        origin: Origin::Relaybox,
        default: Fallback::Text("opendkim"),
        dev: Dev::Same,
        parse: |v, _| {
            if is_dns_label(v) {
                Ok(v.to_string())
            } else {
                Err(format!("expected one DNS label like opendkim, got {v:?}"))
            }
        },
        set: |c, v| c.dkim_selector = v,
        help: "DKIM selector (upstream zone files use `opendkim`)",
    },
    &Spec {
        name: "maximal_queue_lifetime",
        origin: Origin::Relaybox,
        default: Fallback::Text("2d"),
        dev: Dev::Same,
        parse: |v, _| duration(v),
        set: |c, v| c.maximal_queue_lifetime = v,
        help: "give up on a message and bounce it after this long (Postfix name and syntax)",
    },
    &Spec {
        name: "minimal_backoff_time",
        origin: Origin::Relaybox,
        default: Fallback::Text("300s"),
        dev: Dev::Same,
        parse: |v, _| duration(v),
        set: |c, v| c.minimal_backoff_time = v,
        help: "first retry of an outbound delivery after this long, doubling per attempt",
    },
    &Spec {
        name: "maximal_backoff_time",
        origin: Origin::Relaybox,
        default: Fallback::Text("4000s"),
        dev: Dev::Same,
        parse: |v, c| {
            let d = duration(v)?;
            if d < c.minimal_backoff_time {
                return Err(format!(
                    "expected at least minimal_backoff_time ({}s), got {}s",
                    c.minimal_backoff_time.as_secs(),
                    d.as_secs()
                ));
            }
            Ok(d)
        },
        set: |c, v| c.maximal_backoff_time = v,
        help: "longest wait between retries of an outbound delivery",
    },
    &Spec {
        name: "log_stderr",
        origin: Origin::Relaybox,
        default: Fallback::Text("false"),
        // A developer watches the terminal.
        dev: Dev::Own(Fallback::Text("true")),
        parse: |v, _| Ok(boolean(v)),
        set: |c, v| c.log_stderr = v,
        help: "also write logs to stderr (by default they stay in memory only)",
    },
    &Spec {
        name: "admin_from_anywhere",
        origin: Origin::Relaybox,
        default: Fallback::Text("false"),
        dev: Dev::Same,
        parse: |v, _| Ok(boolean(v)),
        set: |c, v| c.appliance.admin_from_anywhere = v,
        help: "admin pages answer any client, not only LAN and loopback addresses",
    },
    &Spec {
        name: "setup_code_file",
        origin: Origin::Relaybox,
        default: Fallback::Computed(default_setup_code_file, "`<data_dir>/setup-code`"),
        dev: Dev::Same,
        parse: |v, c| Ok(path(v).unwrap_or_else(|| default_setup_code_file(c))),
        set: |c, v| c.appliance.setup_code_file = v,
        help: "where the one-time setup code is written while the box is unclaimed",
    },
    &Spec {
        name: "led",
        origin: Origin::Relaybox,
        default: Fallback::Text("none"),
        dev: Dev::Same,
        parse: |v, _| {
            if is_device_spec(v, &["sysfs", "gpio"]) {
                Ok(v.to_string())
            } else {
                Err(format!(
                    "expected none, sysfs:ACT or gpio:gpiochip0:17, got {v:?}"
                ))
            }
        },
        set: |c, v| c.appliance.led = v,
        help: "status LED: `sysfs:ACT` (the Pi's activity LED), `gpio:gpiochip0:17` (chip \
               and line), `gpio:rppal:17` (BCM pin, cargo feature `rppal`)",
    },
    &Spec {
        name: "led_active_low",
        origin: Origin::Relaybox,
        default: Fallback::Text("false"),
        dev: Dev::Same,
        parse: |v, _| Ok(boolean(v)),
        set: |c, v| c.appliance.led_active_low = v,
        help: "the LED lights when its line is low",
    },
    &Spec {
        name: "button",
        origin: Origin::Relaybox,
        default: Fallback::Text("none"),
        dev: Dev::Same,
        parse: |v, _| {
            if is_device_spec(v, &["gpio"]) {
                Ok(v.to_string())
            } else {
                Err(format!("expected none or gpio:gpiochip0:27, got {v:?}"))
            }
        },
        set: |c, v| c.appliance.button = v,
        help: "reset/claim button: `gpio:gpiochip0:27` (pull-up, pressed = low)",
    },
    &Spec {
        name: "mdns_name",
        origin: Origin::Relaybox,
        default: Fallback::Text("relaybox"),
        dev: Dev::Own(Fallback::Text("")),
        parse: |v, _| {
            if v.is_empty() || is_dns_label(v) {
                Ok(v.to_string())
            } else {
                Err(format!(
                    "expected one DNS label like relaybox (empty = off), got {v:?}"
                ))
            }
        },
        set: |c, v| c.appliance.mdns_name = v,
        help: "announced as `<name>.local` over mDNS; empty turns it off",
    },
    &Spec {
        name: "acme_directory",
        origin: Origin::Relaybox,
        default: Fallback::Shown(DEFAULT_ACME_DIRECTORY, "Let's Encrypt production"),
        dev: Dev::Same,
        parse: |v, _| {
            if v.starts_with("https://") && !v.contains(char::is_whitespace) {
                Ok(v.to_string())
            } else {
                Err(format!(
                    "expected an https:// URL like {DEFAULT_ACME_DIRECTORY}, got {v:?}"
                ))
            }
        },
        set: |c, v| c.appliance.acme_directory = v,
        help: "the ACME server's directory URL (its HTTPS is trusted through the web PKI \
               plus `tls_extra_roots`)",
    },
    &Spec {
        name: "outbound_probe",
        origin: Origin::Relaybox,
        default: Fallback::Text(DEFAULT_OUTBOUND_PROBE),
        dev: Dev::Same,
        parse: |v, _| {
            let host_port = v
                .rsplit_once(':')
                .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok());
            if host_port {
                Ok(v.to_string())
            } else {
                Err(format!(
                    "expected host:port like {DEFAULT_OUTBOUND_PROBE}, got {v:?}"
                ))
            }
        },
        set: |c, v| c.appliance.outbound_probe = v,
        help: "where the port check tries outgoing SMTP",
    },
    &Spec {
        name: "turn_listen",
        origin: Origin::Relaybox,
        default: Fallback::Computed(
            |c| {
                let mut at = standard(c, |l| l.smtp);
                for a in &mut at {
                    a.set_port(3478);
                }
                at
            },
            "`[::]:3478` (every non-loopback address)",
        ),
        // TURN is of no use on loopback.
        dev: Dev::Own(Fallback::Text("")),
        parse: |v, _| listeners(v),
        set: |c, v| c.turn_listen = v,
        help: "TURN server (UDP); empty disables it",
    },
    &Spec {
        name: "smtp_listen",
        origin: Origin::Relaybox,
        default: Fallback::Computed(|c| standard(c, |l| l.smtp), "`[::]:25`"),
        dev: Dev::Own(Fallback::Text("127.0.0.1:2525")),
        parse: |v, _| listeners(v),
        set: |c, v| c.listen.smtp = v,
        help: "SMTP from other relays (listen addresses: `0.0.0.0:25`, `[::]:25`, several \
               separated by commas or spaces, empty disables the service)",
    },
    &Spec {
        name: "submission_listen",
        origin: Origin::Relaybox,
        default: Fallback::Computed(|c| standard(c, |l| l.submission), "`[::]:587`"),
        dev: Dev::Own(Fallback::Text("127.0.0.1:1587")),
        parse: |v, _| listeners(v),
        set: |c, v| c.listen.submission = v,
        help: "submission with STARTTLS",
    },
    &Spec {
        name: "submissions_listen",
        origin: Origin::Relaybox,
        default: Fallback::Computed(|c| standard(c, |l| l.submissions), "`[::]:465`"),
        dev: Dev::Own(Fallback::Text("127.0.0.1:1465")),
        parse: |v, _| listeners(v),
        set: |c, v| c.listen.submissions = v,
        help: "submission with implicit TLS",
    },
    &Spec {
        name: "imap_listen",
        origin: Origin::Relaybox,
        default: Fallback::Computed(|c| standard(c, |l| l.imap), "`[::]:143`"),
        dev: Dev::Own(Fallback::Text("127.0.0.1:1143")),
        parse: |v, _| listeners(v),
        set: |c, v| c.listen.imap = v,
        help: "IMAP with STARTTLS",
    },
    &Spec {
        name: "imaps_listen",
        origin: Origin::Relaybox,
        default: Fallback::Computed(|c| standard(c, |l| l.imaps), "`[::]:993`"),
        dev: Dev::Own(Fallback::Text("127.0.0.1:1993")),
        parse: |v, _| listeners(v),
        set: |c, v| c.listen.imaps = v,
        help: "IMAP with implicit TLS",
    },
    &Spec {
        name: "https_listen",
        origin: Origin::Relaybox,
        default: Fallback::Computed(|c| standard(c, |l| l.https), "`[::]:443`"),
        dev: Dev::Own(Fallback::Text("127.0.0.1:1443")),
        parse: |v, _| listeners(v),
        set: |c, v| c.listen.https = v,
        help: "HTTPS (`/new`, pages; IMAP and submission by ALPN)",
    },
    &Spec {
        name: "http_listen",
        origin: Origin::Relaybox,
        default: Fallback::Computed(|c| standard(c, |l| l.http), "`[::]:80`"),
        dev: Dev::Own(Fallback::Text("127.0.0.1:1080")),
        parse: |v, _| listeners(v),
        set: |c, v| c.listen.http = v,
        help: "HTTP redirect to HTTPS",
    },
    &Spec {
        name: "backup_dir",
        origin: Origin::Relaybox,
        default: Fallback::Text(""),
        dev: Dev::Same,
        parse: |v, _| parse_backup_target(v),
        set: |c, v| c.backup.target = v,
        help: "automatic backups (issue 17): an absolute directory, or `usb` (the first USB \
               drive, mounted only while a backup is written, into `relaybox-backups/`); \
               empty = off",
    },
    &Spec {
        name: "backup_every",
        origin: Origin::Relaybox,
        default: Fallback::Text("1d"),
        dev: Dev::Same,
        parse: |v, _| parse_backup_every(v),
        set: |c, v| c.backup.every = v,
        help: "how often an automatic backup is made (at least `1m`); runs are aligned to \
               it: daily at 00:17 UTC, `6h` at 00:17, 06:17, …",
    },
    &Spec {
        name: "backup_keep",
        origin: Origin::Relaybox,
        default: Fallback::Text("7"),
        dev: Dev::Same,
        parse: |v, _| positive(v, "7"),
        set: |c, v| c.backup.keep = v,
        help: "how many automatic backups are kept; older ones it made are removed (other \
               files are never touched)",
    },
    &Spec {
        name: "backup_messages",
        origin: Origin::Relaybox,
        default: Fallback::Text("true"),
        dev: Dev::Same,
        parse: |v, _| Ok(boolean(v)),
        set: |c, v| c.backup.messages = v,
        help: "automatic backups include the mailboxes and the outbound queue",
    },
    &Spec {
        name: "backup_passphrase_file",
        origin: Origin::Relaybox,
        default: Fallback::Computed(
            default_backup_passphrase_file,
            "`<data_dir>/backup-passphrase`",
        ),
        dev: Dev::Same,
        parse: |v, c| Ok(path(v).unwrap_or_else(|| default_backup_passphrase_file(c))),
        set: |c, v| c.backup.passphrase_file = v,
        help: "the automatic backups' passphrase (first line; the status page writes it, \
               mode 0600); missing = no automatic backups",
    },
    &Spec {
        name: "moved_to",
        origin: Origin::Relaybox,
        default: Fallback::Text(""),
        dev: Dev::Same,
        parse: |v, _| crate::moving::parse_target(v),
        set: |c, v| c.moved_to = v,
        help: "set by `relaybox move` (issue 17): the new machine's address; this relay then \
               stores no mail and forwards all mail for its accounts there; empty = not moving",
    },
    &Spec {
        name: "front",
        origin: Origin::Relaybox,
        default: Fallback::Text(""),
        dev: Dev::Same,
        parse: |v, _| parse_front(v),
        set: |c, v| c.front = v,
        help: "issue 20: the tunnel address (`host:port`) of a front server that serves this \
               relay's public ports (`relaybox front`); the relay keeps a tunnel open to it; \
               empty = none",
    },
    &Spec {
        name: "front_pin",
        origin: Origin::Relaybox,
        default: Fallback::Text(""),
        dev: Dev::Same,
        parse: |v, _| {
            if v.trim().is_empty() {
                Ok(None)
            } else {
                crate::hex::parse_pin(v).map(Some)
            }
        },
        set: |c, v| c.front_pin = v,
        help: "the front server's tunnel certificate, `sha256:` and 64 hex digits, written by \
               the pairing (`relaybox pair-front`, the wizard) or as `relaybox front \
               --print-pin` prints it; required with `front`",
    },
];

/// Memory a message of `size` bytes reserves in transit (`memory::BYTES_PER_BYTE`).
fn memory_for(size: u64) -> u64 {
    size.saturating_mul(crate::memory::BYTES_PER_BYTE)
}
