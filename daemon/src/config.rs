//! The config file: chatmail.ini format (`[params]`, `key = value`, `#` comments) with
//! upstream's keys and defaults (spec/relay.md §3) plus Relaybox's own keys, and
//! validation with errors that name the key.
//!
//! PARSING IS BEING WRITTEN (helper B owns this file). The struct below is the contract.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

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

impl Config {
    /// Read and validate a chatmail.ini file.
    pub fn load(path: &std::path::Path) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        Self::parse(&text)
    }

    /// Parse chatmail.ini text (STUB until the parser lands).
    pub fn parse(_text: &str) -> Result<Loaded, ConfigError> {
        Err(ConfigError::Syntax {
            line: 0,
            msg: "parser not written yet".into(),
        })
    }

    /// The dev-mode config: IP-only relay on 127.0.0.1 with unprivileged ports.
    pub fn dev(_data_dir: PathBuf) -> Config {
        unimplemented!("dev config")
    }
}
