//! The diagnostic report (issue 18 item 5): one plain-text file an operator reads and
//! can paste into a forum post — version and build, the config without anything that
//! could be secret or personal, the status of every service and check, the certificate's
//! dates, the queue by destination domain, storage and write figures, and the recent log
//! lines. Nothing in it identifies a user: every free text goes through [`scrub`]
//! (mail addresses, IPv4 and IPv6 addresses, URL credentials, setup codes, anything
//! token-like), and the config shows the values of the keys in [`SHOWN_KEYS`] only (an
//! allow-list: a key added later stays hidden until someone decides it is harmless).
//!
//! Built once, here, from [`Facts`] ([`render`]). The running relay's page backend
//! (`crate::appliance`) fills in [`Live`]; a stopped relay's report ([`stopped`]) has
//! the config, the stored certificate and the store's figures, and says "relay not
//! running" where a live check would be.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use relaybox_webui::{
    AcmeProgress, CertificateInfo, Check, CheckStatus, ServiceHealth, UpdateInfo,
};

use crate::config::{Config, IniLine, Mode, ini_line, keys::KEYS};
use crate::store::{Store, StoreError};

/// How many of the most recent log lines the report carries.
pub const LOG_LINES: usize = 300;

/// The config keys whose values the report shows: numbers, durations, switches and
/// names that say how the relay behaves and can hold nothing personal or secret. Every
/// other key (addresses, URLs, paths, listen addresses, resolvers, contact data, free
/// text, and any key added later) is shown as set, without its value.
pub const SHOWN_KEYS: &[&str] = &[
    "mail_domain",
    "max_user_send_per_minute",
    "max_user_send_burst_size",
    "max_mailbox_size",
    "max_message_size",
    "max_message_memory",
    "store_cache_size",
    "delete_mails_after",
    "delete_large_after",
    "delete_inactive_users_after",
    "username_min_length",
    "username_max_length",
    "password_min_length",
    "max_load_1m",
    "min_available_memory",
    "min_free_disk_space",
    "max_imap_connections",
    "max_smtp_connections",
    "max_connections_per_ip",
    "max_connection_rate_per_ip",
    "max_connection_burst_per_ip",
    "smtpd_timeout",
    "smtpd_min_data_rate",
    "smtpd_session_deadline",
    "imap_login_timeout",
    "disable_ipv6",
    "imap_rawlog",
    "imap_compress",
    "update_check_interval",
    "update_window",
    "update_health_attempts",
    "update_health_retry",
    "watchdog",
    "dkim_selector",
    "maximal_queue_lifetime",
    "minimal_backoff_time",
    "maximal_backoff_time",
    "log_stderr",
    "admin_from_anywhere",
    "led_active_low",
];

/// Everything a report says, gathered by the caller.
#[derive(Debug, Clone)]
pub struct Facts {
    /// Unix seconds when the report was made.
    pub made_at: u64,
    /// The daemon's version.
    pub version: String,
    /// The image's release file, when this runs from a Relaybox image.
    pub release: Option<crate::update::Release>,
    pub mail_domain: String,
    pub mode: Mode,
    /// The config file's text (`None`: no file, `relaybox dev`).
    pub config_text: Option<String>,
    /// The store's figures, or why they could not be read.
    pub store: Result<StoreFigures, String>,
    pub certificate: Certificate,
    /// What only the running relay knows; `None` when it is not running.
    pub live: Option<Live>,
    /// The most recent log lines, oldest first (scrubbed when rendered).
    pub logs: Vec<String>,
}

/// What the running relay adds.
#[derive(Debug, Clone)]
pub struct Live {
    pub services: Vec<ServiceHealth>,
    pub dns: Vec<Check>,
    pub ports: Vec<Check>,
    pub update: UpdateInfo,
    /// Bytes written on the last full day.
    pub written_per_day: Option<u64>,
    /// Bytes written today so far.
    pub written_today: Option<u64>,
}

/// The certificate the relay serves (live) or has stored (stopped).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Certificate {
    /// "acme", "self-signed", "external", or a sentence when nothing is known.
    pub source: String,
    pub issuer: String,
    pub names: Vec<String>,
    pub not_before: Option<u64>,
    pub not_after: Option<u64>,
    /// The certificate request's state, when the relay runs.
    pub progress: Option<String>,
}

impl From<&CertificateInfo> for Certificate {
    fn from(c: &CertificateInfo) -> Certificate {
        Certificate {
            source: c.source.clone(),
            issuer: c.issuer.clone(),
            names: c.names.clone(),
            not_before: None,
            not_after: c.not_after,
            progress: match &c.progress {
                AcmeProgress::Idle => None,
                AcmeProgress::Running { step } => Some(format!("running: {step}")),
                AcmeProgress::Failed { reason } => Some(format!("failed: {reason}")),
                AcmeProgress::Done => Some("done".into()),
            },
        }
    }
}

/// The store's figures (what the status page shows, and the queue by domain).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreFigures {
    pub accounts: u64,
    /// Size of the store file.
    pub store_bytes: u64,
    /// Free space on the data directory's file system.
    pub free_bytes: Option<u64>,
    /// Waiting messages by destination domain, most messages first.
    pub queue: Vec<DomainQueue>,
}

/// The waiting messages for one destination domain (a domain is not a user; no
/// addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainQueue {
    pub domain: String,
    pub messages: u64,
    /// Unix seconds the oldest message was queued.
    pub oldest: u64,
    /// Most attempts of one message so far.
    pub attempts: u32,
    /// Unix seconds of the earliest next attempt.
    pub next_attempt: u64,
}

/// The figures of `store` in `config.data_dir`.
pub fn store_figures(config: &Config, store: &Store) -> Result<StoreFigures, StoreError> {
    let accounts = store.account_count()?;
    let mut by_domain: BTreeMap<String, DomainQueue> = BTreeMap::new();
    for q in store.queued()? {
        // One row per destination domain of a delivery: its recipients share it.
        let domain = q
            .recipients
            .first()
            .and_then(|r| r.rsplit_once('@'))
            .map_or_else(|| "(none)".to_string(), |(_, d)| d.to_ascii_lowercase());
        let e = by_domain.entry(domain.clone()).or_insert(DomainQueue {
            domain,
            messages: 0,
            oldest: q.created,
            attempts: 0,
            next_attempt: q.next_attempt,
        });
        e.messages += 1;
        e.oldest = e.oldest.min(q.created);
        e.attempts = e.attempts.max(q.attempts);
        e.next_attempt = e.next_attempt.min(q.next_attempt);
    }
    let mut queue: Vec<DomainQueue> = by_domain.into_values().collect();
    queue.sort_by(|a, b| b.messages.cmp(&a.messages).then(a.domain.cmp(&b.domain)));
    let store_bytes = std::fs::metadata(config.data_dir.join(crate::store::STORE_FILE))
        .map(|m| m.len())
        .unwrap_or(0);
    let free_bytes = nix::sys::statvfs::statvfs(&config.data_dir)
        .ok()
        .map(|st| st.blocks_available().saturating_mul(st.fragment_size()));
    Ok(StoreFigures {
        accounts,
        store_bytes,
        free_bytes,
        queue,
    })
}

/// The image's release file ([`crate::update::DEFAULT_RELEASE`], or
/// `$RELAYBOX_RELEASE`), when there is one.
pub fn release() -> Option<crate::update::Release> {
    let path = std::env::var_os(crate::update::RELEASE_ENV)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::update::DEFAULT_RELEASE.into());
    crate::update::Release::load(&path).ok()
}

/// The stored certificate of a stopped relay, as far as the files tell.
pub fn stored_certificate(config: &Config, now: u64) -> Certificate {
    if config.tls_external_cert_and_key.is_some() {
        return Certificate {
            source: "external (the files named in the config; read when the relay runs)".into(),
            ..Certificate::default()
        };
    }
    match crate::tls::stored::stored_certificate(config, now) {
        Some(stored) => Certificate {
            source: "acme".into(),
            issuer: stored.facts.issuer_name,
            names: stored.facts.names,
            not_before: Some(stored.facts.not_before),
            not_after: Some(stored.facts.not_after),
            progress: None,
        },
        None => Certificate {
            source: if config.mode == Mode::Domain {
                "no usable certificate from ACME stored; the relay starts with a self-signed \
                 one and asks for one"
                    .into()
            } else {
                "self-signed (made when the relay starts)".into()
            },
            ..Certificate::default()
        },
    }
}

/// The report of a relay that is not running: the config (`config_text` as read from
/// the file), the figures of its `store` (`None`: it has none yet) and the stored
/// certificate; the live checks say "relay not running".
pub fn stopped(
    config: &Config,
    config_text: Option<&str>,
    store: Option<&Store>,
    now: u64,
) -> String {
    let store = match store {
        Some(store) => store_figures(config, store).map_err(|e| e.to_string()),
        None => Err(format!(
            "no store yet in {} (the relay has never run with this data directory)",
            config.data_dir.display()
        )),
    };
    render(&Facts {
        made_at: now,
        version: env!("CARGO_PKG_VERSION").to_string(),
        release: release(),
        mail_domain: config.mail_domain.clone(),
        mode: config.mode.clone(),
        config_text: config_text.map(str::to_string),
        store,
        certificate: stored_certificate(config, now),
        live: None,
        logs: Vec::new(),
    })
}

// ---- rendering --------------------------------------------------------------------------

/// What stands where the relay is not running.
pub const NOT_RUNNING: &str = "relay not running";

/// The report as text (Markdown-friendly: `##` headings, indented details).
pub fn render(f: &Facts) -> String {
    let mut r = String::new();
    let _ = writeln!(r, "# Relaybox diagnostic report\n");
    let _ = writeln!(r, "Made {}.", utc(f.made_at));
    r.push_str(
        "Mail addresses, IP addresses, passwords, keys and anything else that looks like a \
         secret are replaced by <address>, <IPv4>, <IPv6>, <credentials>, <code> or <token>.\n",
    );

    r.push_str("\n## Relay\n\n");
    let _ = writeln!(r, "version: {}", f.version);
    match &f.release {
        Some(rel) => {
            let _ = writeln!(
                r,
                "build: {} version {} build {}",
                scrub(&rel.compatible),
                scrub(&rel.version),
                rel.build
            );
        }
        None => r.push_str("build: not a Relaybox image (no release file)\n"),
    }
    let _ = writeln!(
        r,
        "state: {}",
        if f.live.is_some() {
            "running"
        } else {
            "not running (made from the config file and the stored data)"
        }
    );
    // The relay's own name is public (the mail_domain is fine in a report).
    let _ = writeln!(r, "mail_domain: {}", f.mail_domain);
    let _ = writeln!(
        r,
        "mode: {}",
        match f.mode {
            Mode::Domain => "domain",
            Mode::Underscore => "underscore (self-signed)",
            Mode::IpOnly(_) => "IP-only",
        }
    );
    if let Some(live) = &f.live {
        let _ = writeln!(r, "update: {}", scrub(&live.update.state));
        if let Some(e) = &live.update.last_error {
            let _ = writeln!(r, "last update failure: {}", scrub(e));
        }
        if let Some(at) = live.update.last_check {
            let _ = writeln!(r, "last update check: {}", utc(at));
        }
    }

    r.push_str("\n## Config\n\n");
    match &f.config_text {
        Some(text) => r.push_str(&redacted_config(text)),
        None => r.push_str("no config file (development mode: every key at its default)\n"),
    }

    r.push_str("\n## Services\n\n");
    match &f.live {
        Some(live) if live.services.is_empty() => r.push_str("no services running\n"),
        Some(live) => {
            for s in &live.services {
                let _ = writeln!(
                    r,
                    "[{}] {}: {}",
                    s.status.as_str(),
                    scrub(&s.name),
                    scrub(&s.detail)
                );
            }
        }
        None => {
            let _ = writeln!(r, "{NOT_RUNNING}");
        }
    }

    r.push_str("\n## Certificate\n\n");
    let c = &f.certificate;
    let _ = writeln!(r, "source: {}", scrub(&c.source));
    if !c.issuer.is_empty() {
        let _ = writeln!(r, "issuer: {}", scrub(&c.issuer));
    }
    if !c.names.is_empty() {
        let names: Vec<String> = c.names.iter().map(|n| scrub(n)).collect();
        let _ = writeln!(r, "names: {}", names.join(", "));
    }
    if let Some(at) = c.not_before {
        let _ = writeln!(r, "valid from: {}", utc(at));
    }
    if let Some(at) = c.not_after {
        let left = at as i64 - f.made_at as i64;
        let _ = writeln!(
            r,
            "valid until: {} ({})",
            utc(at),
            if left >= 0 {
                format!("{} days left", left / 86_400)
            } else {
                "EXPIRED".to_string()
            }
        );
    }
    if let Some(p) = &c.progress {
        let _ = writeln!(r, "certificate request: {}", scrub(p));
    }

    r.push_str("\n## DNS checks\n\n");
    checks(&mut r, f.live.as_ref().map(|l| &l.dns[..]), &f.mode);
    r.push_str("\n## Port checks\n\n");
    checks(&mut r, f.live.as_ref().map(|l| &l.ports[..]), &f.mode);

    r.push_str("\n## Outbound queue\n\n");
    match &f.store {
        Ok(s) if s.queue.is_empty() => r.push_str("no messages waiting\n"),
        Ok(s) => {
            let total: u64 = s.queue.iter().map(|q| q.messages).sum();
            let _ = writeln!(r, "{total} message(s) waiting, by destination domain:");
            for q in &s.queue {
                let _ = writeln!(
                    r,
                    "- {}: {} message(s), oldest {} old, up to {} attempt(s), next attempt {}",
                    scrub(&q.domain),
                    q.messages,
                    duration(f.made_at.saturating_sub(q.oldest)),
                    q.attempts,
                    if q.next_attempt <= f.made_at {
                        "due now".to_string()
                    } else {
                        format!("in {}", duration(q.next_attempt - f.made_at))
                    }
                );
            }
        }
        Err(e) => {
            let _ = writeln!(r, "could not read the queue: {}", scrub(e));
        }
    }

    r.push_str("\n## Storage\n\n");
    match &f.store {
        Ok(s) => {
            let _ = writeln!(r, "accounts: {}", s.accounts);
            let _ = writeln!(r, "store file: {}", bytes(s.store_bytes));
            match s.free_bytes {
                Some(b) => {
                    let _ = writeln!(r, "free on the data partition: {}", bytes(b));
                }
                None => r.push_str("free on the data partition: unknown\n"),
            }
        }
        Err(e) => {
            let _ = writeln!(r, "could not read the store: {}", scrub(e));
        }
    }
    match &f.live {
        Some(live) => {
            let figure = |b: Option<u64>| b.map_or_else(|| "not known yet".to_string(), bytes);
            let _ = writeln!(
                r,
                "written on the last full day: {}",
                figure(live.written_per_day)
            );
            let _ = writeln!(r, "written today so far: {}", figure(live.written_today));
        }
        None => {
            let _ = writeln!(r, "write figures: {NOT_RUNNING}");
        }
    }

    let _ = writeln!(r, "\n## Recent log lines\n");
    if f.live.is_none() {
        let _ = writeln!(
            r,
            "{NOT_RUNNING} (the log is kept in the running relay's memory only)"
        );
    } else if f.logs.is_empty() {
        r.push_str("none\n");
    } else {
        r.push_str("```\n");
        for line in &f.logs {
            // A line cannot end the code block early.
            let line = scrub(line).replace("```", "'''");
            let _ = writeln!(r, "{line}");
        }
        r.push_str("```\n");
    }
    r
}

/// One line per check, with what was expected and found when it is not fine.
fn checks(r: &mut String, checks: Option<&[Check]>, mode: &Mode) {
    let Some(checks) = checks else {
        let _ = writeln!(r, "{NOT_RUNNING}");
        return;
    };
    if checks.is_empty() {
        r.push_str(if matches!(mode, Mode::IpOnly(_)) {
            "none (an IP-only relay needs no DNS records)\n"
        } else {
            "none\n"
        });
        return;
    }
    for c in checks {
        let _ = writeln!(
            r,
            "[{}] {}: {}",
            c.status.as_str(),
            scrub(&c.id),
            scrub(&c.summary)
        );
        if let Some(d) = &c.details {
            let _ = writeln!(r, "    {}", scrub(d));
        }
        if c.status != CheckStatus::Ok {
            if let Some(e) = &c.expected {
                let _ = writeln!(r, "    expected: {}", scrub(e));
            }
            if let Some(found) = &c.found {
                let _ = writeln!(r, "    found: {}", scrub(found));
            }
        }
    }
}

/// The config file's `[params]` as the report shows it: section lines, the keys of
/// [`SHOWN_KEYS`] with their values, other keys of the table as set without their value,
/// unknown keys named as such; comments and continuation lines left out.
pub fn redacted_config(text: &str) -> String {
    let mut out = String::new();
    for raw in text.lines() {
        match ini_line(raw) {
            IniLine::Blank | IniLine::Continuation(_) | IniLine::Key(None) => {}
            IniLine::Section(Some(name)) => {
                let _ = writeln!(out, "[{}]", scrub(name));
            }
            IniLine::Section(None) => out.push_str("(a malformed section line)\n"),
            IniLine::Key(Some((key, value))) => {
                if key == "mail_domain" {
                    // Public: the relay's own name.
                    let _ = writeln!(out, "{key} = {value}");
                } else if SHOWN_KEYS.contains(&key) {
                    let _ = writeln!(out, "{key} = {}", scrub(value));
                } else if KEYS.iter().any(|k| k.name() == key) {
                    let _ = writeln!(out, "{key} = (set; value not shown)");
                } else {
                    let _ = writeln!(out, "{}: unknown key (value not shown)", scrub(key));
                }
            }
        }
    }
    if out.is_empty() {
        out.push_str("(the file sets no keys: every key at its default)\n");
    }
    out
}

/// `secs` (Unix) as `YYYY-MM-DD HH:MM UTC`.
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (y, m, d) = crate::clock::civil_from_days(days);
    let rest = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rest / 3600,
        (rest % 3600) / 60
    )
}

/// A span of seconds for people: `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`.
fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86_400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        s => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// A byte count for people, with the exact figure.
fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if b < 1024 {
        return format!("{b} bytes");
    }
    let mut v = b as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {} ({b} bytes)", UNITS[unit])
}

// ---- the scrubber -----------------------------------------------------------------------

/// What stands for a mail address.
pub const ADDRESS: &str = "<address>";
/// What stands for an IPv4 address.
pub const IPV4: &str = "<IPv4>";
/// What stands for an IPv6 address.
pub const IPV6: &str = "<IPv6>";
/// What stands for a URL's user and password.
pub const CREDENTIALS: &str = "<credentials>";
/// What stands for a setup code.
pub const CODE: &str = "<code>";
/// What stands for anything token-like (keys, hashes, passwords, session ids).
pub const TOKEN: &str = "<token>";
/// A run of token characters this long or longer, with a letter and a digit in it, is
/// taken for a token (random keys, hashes and generated passwords are; words, names and
/// numbers are not).
pub const TOKEN_MIN: usize = 20;

/// `text` with everything that identifies a person or a machine, or could be a secret,
/// replaced: URL credentials (`scheme://user:pw@`), mail addresses (`user@domain`,
/// `user@[192.0.2.1]`), IPv4 and IPv6 addresses (compressed, bracketed, with a port or a
/// zone, IPv4-mapped), setup codes (`XXXX-XXXX-XXXX`) and long runs of letters and digits
/// (keys, hashes, tokens). The one scrubber of the report.
pub fn scrub(text: &str) -> String {
    let t = scrub_url_credentials(text);
    let t = scrub_addresses(&t);
    let t = scrub_ips(&t);
    let t = scrub_setup_codes(&t);
    scrub_tokens(&t)
}

/// `scheme://user:password@host` → `scheme://<credentials>@host` (RFC 3986 §3.2.1).
fn scrub_url_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c.is_whitespace() || "/?#\"'<>".contains(c))
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority.rfind('@') {
            Some(at) if at > 0 => {
                out.push_str(CREDENTIALS);
                rest = &tail[at..];
            }
            _ => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// A byte of an address's local part (RFC 5322 §3.2.3 atext, dots, and the UTF-8 of
/// RFC 6531 addresses).
fn is_local_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80 || b"!#$%&'*+/=?^_`{|}~.-".contains(&b)
}

/// A byte of a domain name (with the `_` of underscore relays and UTF-8 labels).
fn is_domain_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80 || b"._-".contains(&b)
}

/// `local@domain` and `local@[literal]` (RFC 5321 §4.1.3) → [`ADDRESS`]. A `key=` in
/// front (a log field) is kept.
fn scrub_addresses(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'@' {
            i += 1;
            continue;
        }
        let mut start = i;
        // RFC 5321 §4.1.2: a quoted local part (`"john doe"@x`).
        if start > copied && b[start - 1] == b'"' {
            let open = text[copied..start - 1].rfind('"').map(|o| copied + o);
            if let Some(open) = open.filter(|o| start - o <= 66) {
                start = open;
            }
        }
        while start > copied && is_local_char(b[start - 1]) {
            start -= 1;
        }
        // `from=user@x`: the field name stays.
        if let Some(eq) = text[start..i].rfind('=') {
            start += eq + 1;
        }
        let mut end = i + 1;
        if b.get(end) == Some(&b'[') {
            match text[end..].find(']') {
                Some(close) if close <= 64 => end += close + 1,
                _ => end = i + 1,
            }
        } else {
            while end < b.len() && is_domain_char(b[end]) {
                end += 1;
            }
            // A sentence's full stop is not part of the domain.
            while end > i + 1 && b[end - 1] == b'.' {
                end -= 1;
            }
        }
        if start < i && end > i + 1 {
            out.push_str(&text[copied..start]);
            out.push_str(ADDRESS);
            copied = end;
            i = end;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[copied..]);
    out
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_ip_char(b: u8) -> bool {
    b.is_ascii_hexdigit() || b == b':' || b == b'.'
}

/// IPv6 (RFC 4291 §2.2 text forms: full, compressed, IPv4-mapped) and IPv4 dotted-quad
/// addresses → [`IPV6`] / [`IPV4`]. Found as runs of hex digits, colons and dots that
/// parse as an address; a run inside a word (`Cache::add`, `v1.2.3.4`) is left alone, but
/// an address after `word:` (`peer:2001:db8::1`, `IPv6:2001:db8::1`) is found.
fn scrub_ips(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if !is_ip_char(b[i]) {
            // Copy the whole character (non-ASCII ones are several bytes).
            let ch = text[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8().max(1);
            continue;
        }
        let start = i;
        while i < b.len() && is_ip_char(b[i]) {
            i += 1;
        }
        let left_word = start > 0 && is_word(b[start - 1]);
        let right_word = i < b.len() && is_word(b[i]);
        out.push_str(&ip_run(&text[start..i], left_word, right_word));
    }
    out
}

/// One run of hex digits, colons and dots with its addresses replaced.
fn ip_run(run: &str, left_word: bool, right_word: bool) -> String {
    // IPv6: the whole run, or what follows its first colon (`IPv6:…`, `peer:…`).
    let mut starts = Vec::new();
    if !left_word {
        starts.push(0);
    }
    if let Some(c) = run.find(':')
        && !run[c + 1..].starts_with(':')
    {
        starts.push(c + 1);
    }
    for s in starts {
        let cand = &run[s..];
        let trimmed = cand.trim_end_matches(['.', ':']).len();
        let mut ends = Vec::new();
        if !right_word {
            ends.push(cand.len());
        }
        if trimmed < cand.len() {
            ends.push(trimmed);
        }
        for e in ends {
            let piece = &cand[..e];
            if piece.contains(':') && piece.parse::<Ipv6Addr>().is_ok() {
                return format!("{}{IPV6}{}", &run[..s], &cand[e..]);
            }
        }
    }
    // IPv4, alone or with a port (`192.0.2.1:25`).
    let parts: Vec<&str> = run.split(':').collect();
    let last = parts.len() - 1;
    parts
        .iter()
        .enumerate()
        .map(|(n, part)| {
            let trimmed = part.trim_end_matches('.');
            let inside_word =
                (n == 0 && left_word) || (n == last && right_word && trimmed.len() == part.len());
            if !inside_word && trimmed.parse::<Ipv4Addr>().is_ok() {
                format!("{IPV4}{}", &part[trimmed.len()..])
            } else {
                part.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(":")
}

/// The setup code's form (`XXXX-XXXX-XXXX`, upper-case letters and digits) → [`CODE`].
fn scrub_setup_codes(text: &str) -> String {
    let b = text.as_bytes();
    let is_code_char = |c: u8| c.is_ascii_uppercase() || c.is_ascii_digit();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i + 14 <= b.len() {
        let w = &b[i..i + 14];
        let shaped = w.iter().enumerate().all(|(k, c)| {
            if k == 4 || k == 9 {
                *c == b'-'
            } else {
                is_code_char(*c)
            }
        });
        let bounded = (i == 0 || !is_word(b[i - 1]) && b[i - 1] != b'-')
            && (i + 14 == b.len() || !is_word(b[i + 14]) && b[i + 14] != b'-');
        if shaped && bounded && i >= copied {
            out.push_str(&text[copied..i]);
            out.push_str(CODE);
            copied = i + 14;
            i += 14;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[copied..]);
    out
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"+/=_-.$".contains(&b)
}

/// Runs of letters, digits and `+/=_-.$` at least [`TOKEN_MIN`] long with a letter and
/// a digit in them (base64 and hex keys, password hashes, session ids) → [`TOKEN`];
/// upper-case constant names (`TLS13_AES_256_GCM_SHA384`) stay.
fn scrub_tokens(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        if !is_token_char(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && is_token_char(b[i]) {
            i += 1;
        }
        let run = &b[start..i];
        // `TLS13_AES_256_GCM_SHA384`: a constant's name, not a secret.
        let constant = run.contains(&b'_')
            && run
                .iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_');
        if run.len() >= TOKEN_MIN
            && !constant
            && run.iter().any(u8::is_ascii_digit)
            && run.iter().any(u8::is_ascii_alphabetic)
        {
            out.push_str(&text[copied..start]);
            out.push_str(TOKEN);
            copied = i;
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// A file name for the report of `mail_domain` made at `now`:
/// `relaybox-report-<domain>-<YYYY-MM-DD>.txt`, only safe characters.
pub fn file_name(mail_domain: &str, now: u64) -> String {
    let (y, m, d) = crate::clock::civil_from_days((now / 86_400) as i64);
    let domain: String = mail_domain
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(100)
        .collect();
    let domain = domain.trim_matches('.');
    let domain = if domain.is_empty() { "relay" } else { domain };
    format!("relaybox-report-{domain}-{y:04}-{m:02}-{d:02}.txt")
}

/// Write `text` to `path` (whole or not at all), readable by its owner only: the report
/// holds no secrets, but what to share is the operator's choice.
pub fn write(path: &Path, text: &str) -> std::io::Result<()> {
    crate::files::write_atomic(path, text.as_bytes(), 0o600)
}

#[cfg(test)]
mod tests;
