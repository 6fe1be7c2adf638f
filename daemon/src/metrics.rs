//! Metrics registry (LOG-5): process-wide counters and their text exposition.
//!
//! Counters are plain atomics in one static [`Registry`]; the hot paths (a delivery, an
//! accepted connection) cost one relaxed atomic add. The text exposition is written by
//! hand ([`Registry::render`]): a dozen fixed families do not justify a metrics crate
//! (`prometheus-client` would add a registry, boxed metric types and a dependency tree
//! to the appliance binary for what is about a hundred lines here).
//!
//! Privacy (LOG-2): labels carry only fixed words from this file (reasons, outcomes,
//! service names); never an account, an address or an IP.
//!
//! The endpoint that serves the exposition on `mtail_address` is a protocol:
//! `crate::http::metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// `Content-Type` of the Prometheus text format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// `Content-Type` of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why a message was refused (label `reason` of `relaybox_rejected_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// The encryption gate (SUB-9, IN-4d).
    Unencrypted,
    /// IN-4e: no or no valid aligned DKIM signature, or a literal mismatch.
    Origin,
    /// QUOTA-2.
    Quota,
    /// SUB-4.
    RateLimit,
    /// Anything else refused after DATA (From mismatch, size).
    Policy,
    /// Refused by the message parser: ambiguous or over its limits (issue 13).
    Malformed,
    /// Refused for now: no room in the memory budget for messages in transit.
    Busy,
}

impl Rejection {
    const ALL: [Rejection; 7] = [
        Rejection::Unencrypted,
        Rejection::Origin,
        Rejection::Quota,
        Rejection::RateLimit,
        Rejection::Policy,
        Rejection::Malformed,
        Rejection::Busy,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::Unencrypted => "unencrypted",
            Rejection::Origin => "origin",
            Rejection::Quota => "quota",
            Rejection::RateLimit => "rate_limit",
            Rejection::Policy => "policy",
            Rejection::Malformed => "malformed",
            Rejection::Busy => "busy",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why an account was not created at its first login (label `reason` of
/// `relaybox_registrations_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Registration {
    /// The name or the password breaks the creation rules (ACC-5.2..5.5).
    Name,
    /// CFG-6: the kill switch is on (sign-up closed by the owner).
    Closed,
    /// ACC-5.6: the 1-minute load average is above `max_load_1m`.
    Load,
    /// ACC-5.6: less memory available than `min_available_memory`.
    Memory,
    /// ACC-5.6: less disk space free than `min_free_disk_space`.
    Disk,
    /// The operator blocked the address (`relaybox accounts block`).
    Blocked,
    /// Issue 18: `signup = invite` and no usable invite (missing, unknown, expired,
    /// used up or revoked).
    Invite,
    /// Issue 18: `signup = no-automatic` and a password as automatic relay selection
    /// makes them.
    Automatic,
    /// Issue 17: the relay moves to another machine (`relaybox move`).
    Moving,
}

impl Registration {
    const ALL: [Registration; 9] = [
        Registration::Name,
        Registration::Closed,
        Registration::Load,
        Registration::Memory,
        Registration::Disk,
        Registration::Blocked,
        Registration::Invite,
        Registration::Automatic,
        Registration::Moving,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Registration::Name => "name",
            Registration::Closed => "closed",
            Registration::Load => "load",
            Registration::Memory => "memory",
            Registration::Disk => "disk",
            Registration::Blocked => "blocked",
            Registration::Invite => "invite",
            Registration::Automatic => "automatic",
            Registration::Moving => "moving",
        }
    }
}

/// What one push notification attempt came to (PUSH-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// The notification proxy took it (200).
    Sent,
    /// Any other answer or no answer; the job is retried or given up.
    Failed,
    /// 410: the token is gone and was removed.
    Gone,
}

impl Push {
    const ALL: [Push; 3] = [Push::Sent, Push::Failed, Push::Gone];

    fn label(self) -> &'static str {
        match self {
            Push::Sent => "sent",
            Push::Failed => "failed",
            Push::Gone => "gone",
        }
    }
}

/// Listener names that are always listed (with zeros) so dashboards see every service
/// from the first scrape; others appear at their first connection.
const KNOWN_SERVICES: [&str; 7] = [
    "smtp",
    "submission",
    "submissions",
    "imap",
    "imaps",
    "https",
    "http",
];

/// Connections of one service.
#[derive(Debug, Default)]
struct ServiceCounts {
    total: AtomicU64,
    open: AtomicU64,
}

/// All counters of the process. One static instance ([`global`]) backs the free
/// functions; tests make their own.
#[derive(Debug)]
pub struct Registry {
    /// Messages accepted by the delivery path (one per `250`/`200`).
    accepted: AtomicU64,
    /// Copies stored in local mailboxes.
    delivered_local: AtomicU64,
    /// Remote domains a message was queued for.
    delivered_remote: AtomicU64,
    rejected: [AtomicU64; Rejection::ALL.len()],
    accounts_created: AtomicU64,
    registrations_refused: [AtomicU64; Registration::ALL.len()],
    quota_trimmed: AtomicU64,
    push: [AtomicU64; 3],
    /// accepted, temporary, permanent.
    outbound: [AtomicU64; 3],
    /// By listener name; a handful of entries, looked up once per connection.
    connections: Mutex<Vec<(&'static str, Arc<ServiceCounts>)>>,
    /// Connections refused or cut, by [`KNOWN_SERVICES`] index and reason.
    refused: [[AtomicU64; 4]; KNOWN_SERVICES.len()],
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const ZERO_REASONS: [AtomicU64; 4] = [ZERO; 4];

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    pub const fn new() -> Registry {
        Registry {
            accepted: ZERO,
            delivered_local: ZERO,
            delivered_remote: ZERO,
            rejected: [ZERO; Rejection::ALL.len()],
            accounts_created: ZERO,
            registrations_refused: [ZERO; Registration::ALL.len()],
            quota_trimmed: ZERO,
            push: [ZERO; 3],
            outbound: [ZERO; 3],
            connections: Mutex::new(Vec::new()),
            refused: [ZERO_REASONS; KNOWN_SERVICES.len()],
        }
    }

    /// Messages accepted so far (the status page's messages-per-day chart).
    pub fn accepted_total(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    pub fn delivered(&self, local: usize, remote: usize) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        add(&self.delivered_local, local);
        add(&self.delivered_remote, remote);
    }

    pub fn rejected(&self, reason: Rejection) {
        self.rejected[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn account_created(&self) {
        self.accounts_created.fetch_add(1, Ordering::Relaxed);
    }

    pub fn registration_refused(&self, reason: Registration) {
        self.registrations_refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn quota_trimmed(&self, messages: usize) {
        add(&self.quota_trimmed, messages);
    }

    pub fn push(&self, outcome: Push) {
        self.push[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn outbound(&self, accepted: usize, temporary: usize, permanent: usize) {
        add(&self.outbound[0], accepted);
        add(&self.outbound[1], temporary);
        add(&self.outbound[2], permanent);
    }

    pub fn connection(&self, service: &'static str) -> ConnectionGuard {
        let counts = self.service(service);
        counts.total.fetch_add(1, Ordering::Relaxed);
        counts.open.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard { counts }
    }

    /// A connection to `service` was refused or cut for `reason` (issue 13).
    pub fn connection_refused(&self, service: &str, reason: crate::admission::Reason) {
        if let Some(i) = KNOWN_SERVICES.iter().position(|s| *s == service) {
            self.refused[i][reason as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn service(&self, service: &'static str) -> Arc<ServiceCounts> {
        let mut table = self
            .connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, c)) = table.iter().find(|(name, _)| *name == service) {
            return c.clone();
        }
        let c = Arc::new(ServiceCounts::default());
        table.push((service, c.clone()));
        c
    }

    /// The exposition text of every family. `queue_len` is the outbound queue length
    /// (`None` when the store could not be read: the gauge then has no sample).
    pub fn render(&self, format: Format, queue_len: Option<u64>) -> String {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut w = Writer::new(format);

        w.family(
            "relaybox_messages_accepted",
            Kind::Counter,
            "Messages accepted for delivery (SMTP 250 after DATA, or /mxdeliv 200).",
        );
        w.sample("relaybox_messages_accepted", &[], load(&self.accepted));

        w.family(
            "relaybox_delivered",
            Kind::Counter,
            "Deliveries of accepted messages: copies stored in local mailboxes, remote domains queued.",
        );
        w.sample(
            "relaybox_delivered",
            &[("destination", "local")],
            load(&self.delivered_local),
        );
        w.sample(
            "relaybox_delivered",
            &[("destination", "remote")],
            load(&self.delivered_remote),
        );

        w.family(
            "relaybox_rejected",
            Kind::Counter,
            "Messages refused, by reason.",
        );
        for r in Rejection::ALL {
            w.sample(
                "relaybox_rejected",
                &[("reason", r.label())],
                load(&self.rejected[r.index()]),
            );
        }

        w.family(
            "relaybox_accounts_created",
            Kind::Counter,
            "Accounts created (ACC-5).",
        );
        w.sample(
            "relaybox_accounts_created",
            &[],
            load(&self.accounts_created),
        );

        w.family(
            "relaybox_registrations_refused",
            Kind::Counter,
            "Account creations refused at first login or /new, by reason.",
        );
        for r in Registration::ALL {
            w.sample(
                "relaybox_registrations_refused",
                &[("reason", r.label())],
                load(&self.registrations_refused[r as usize]),
            );
        }

        w.family(
            "relaybox_quota_trimmed_messages",
            Kind::Counter,
            "Messages removed from mailboxes over 75 % of the quota (QUOTA-3).",
        );
        w.sample(
            "relaybox_quota_trimmed_messages",
            &[],
            load(&self.quota_trimmed),
        );

        w.family(
            "relaybox_push_notifications",
            Kind::Counter,
            "Push notification attempts, by outcome (PUSH-4).",
        );
        for p in Push::ALL {
            w.sample(
                "relaybox_push_notifications",
                &[("outcome", p.label())],
                load(&self.push[p as usize]),
            );
        }

        w.family(
            "relaybox_outbound_attempts",
            Kind::Counter,
            "Recipients of outbound delivery attempts, by result (an attempt counts each recipient it carried).",
        );
        for (i, result) in ["accepted", "temporary", "permanent"].iter().enumerate() {
            w.sample(
                "relaybox_outbound_attempts",
                &[("result", result)],
                load(&self.outbound[i]),
            );
        }

        w.family(
            "relaybox_queue_length",
            Kind::Gauge,
            "Rows in the outbound queue.",
        );
        if let Some(n) = queue_len {
            w.sample("relaybox_queue_length", &[], n);
        }

        let services = self.services_snapshot();
        w.family(
            "relaybox_connections",
            Kind::Counter,
            "Connections accepted, by service.",
        );
        for (name, total, _) in &services {
            w.sample("relaybox_connections", &[("service", name)], *total);
        }
        w.family(
            "relaybox_connections_open",
            Kind::Gauge,
            "Connections open now, by service.",
        );
        for (name, _, open) in &services {
            w.sample("relaybox_connections_open", &[("service", name)], *open);
        }
        w.family(
            "relaybox_connections_refused",
            Kind::Counter,
            "Connections refused (limit: service full, per_ip: too many from one address, rate: too many new ones from one address) or cut at a deadline, by service and reason.",
        );
        for (i, name) in KNOWN_SERVICES.iter().enumerate() {
            for reason in crate::admission::Reason::ALL {
                w.sample(
                    "relaybox_connections_refused",
                    &[("service", name), ("reason", reason.label())],
                    load(&self.refused[i][reason as usize]),
                );
            }
        }

        w.finish()
    }

    /// (name, total, open) for the known services and every other one seen.
    fn services_snapshot(&self) -> Vec<(&'static str, u64, u64)> {
        let table = self
            .connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let read = |name: &str| {
            table
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, c)| {
                    (
                        c.total.load(Ordering::Relaxed),
                        c.open.load(Ordering::Relaxed),
                    )
                })
                .unwrap_or((0, 0))
        };
        let mut out: Vec<(&'static str, u64, u64)> = KNOWN_SERVICES
            .iter()
            .map(|name| {
                let (total, open) = read(name);
                (*name, total, open)
            })
            .collect();
        for (name, c) in table.iter() {
            if !KNOWN_SERVICES.contains(name) {
                out.push((
                    name,
                    c.total.load(Ordering::Relaxed),
                    c.open.load(Ordering::Relaxed),
                ));
            }
        }
        out
    }
}

fn add(counter: &AtomicU64, n: usize) {
    if n > 0 {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

static GLOBAL: Registry = Registry::new();

/// The process's counters.
pub fn global() -> &'static Registry {
    &GLOBAL
}

/// A message was stored for `local` accounts and/or queued for `remote` domains.
pub fn delivered(local: usize, remote: usize) {
    GLOBAL.delivered(local, remote);
}

/// A message was refused.
pub fn rejected(reason: Rejection) {
    GLOBAL.rejected(reason);
}

/// An account was created (ACC-5, beside the `Created address:` log line).
pub fn account_created() {
    GLOBAL.account_created();
}

/// An account creation was refused (beside the `registration rejected:` log line).
pub fn registration_refused(reason: Registration) {
    GLOBAL.registration_refused(reason);
}

/// QUOTA-3 removed `messages` messages from a mailbox (beside `quota-expire: removed`).
pub fn quota_trimmed(messages: usize) {
    GLOBAL.quota_trimmed(messages);
}

/// One push notification attempt ended (PUSH-4).
pub fn push(outcome: Push) {
    GLOBAL.push(outcome);
}

/// An outbound attempt ended: accepted by the peer, temporary or permanent failure.
pub fn outbound(accepted: usize, temporary: usize, permanent: usize) {
    GLOBAL.outbound(accepted, temporary, permanent);
}

/// A connection to `service` (the listener's name: smtp, submission, imap, https, …)
/// was accepted; the guard counts it as open until dropped.
pub fn connection(service: &'static str) -> ConnectionGuard {
    GLOBAL.connection(service)
}

/// A connection to `service` was refused or cut (`crate::admission::refused`).
pub fn connection_refused(service: &str, reason: crate::admission::Reason) {
    GLOBAL.connection_refused(service, reason);
}

/// Counts one open connection until dropped.
pub struct ConnectionGuard {
    counts: Arc<ServiceCounts>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.counts.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The two text formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text exposition 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
}

impl Format {
    /// Content negotiation: OpenMetrics when `Accept` names
    /// `application/openmetrics-text` (version 1.0.0 or none) with a non-zero `q`,
    /// else the Prometheus text format (what a scraper without `Accept` expects).
    pub fn from_accept(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Prometheus;
        };
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            if !media.eq_ignore_ascii_case("application/openmetrics-text") {
                continue;
            }
            let mut ok = true;
            for param in parts {
                let Some((k, v)) = param.split_once('=') else {
                    continue;
                };
                let (k, v) = (k.trim(), v.trim().trim_matches('"'));
                if k.eq_ignore_ascii_case("version") && v != "1.0.0" {
                    ok = false;
                }
                if k.eq_ignore_ascii_case("q") && v.parse::<f32>().map_or(true, |q| q <= 0.0) {
                    ok = false;
                }
            }
            if ok {
                return Format::OpenMetrics;
            }
        }
        Format::Prometheus
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => PROMETHEUS_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// Writes families and samples in one of the two formats.
///
/// Counters: OpenMetrics names the family without `_total` and the sample with it;
/// the Prometheus format uses the `_total` name for both.
struct Writer {
    out: String,
    format: Format,
    kind: Kind,
}

impl Writer {
    fn new(format: Format) -> Writer {
        Writer {
            out: String::with_capacity(4096),
            format,
            kind: Kind::Gauge,
        }
    }

    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        self.kind = kind;
        let (family, type_word) = match (kind, self.format) {
            (Kind::Counter, Format::Prometheus) => (format!("{name}_total"), "counter"),
            (Kind::Counter, Format::OpenMetrics) => (name.to_string(), "counter"),
            (Kind::Gauge, _) => (name.to_string(), "gauge"),
        };
        let help = escape_help(help, self.format);
        let _ = writeln!(self.out, "# HELP {family} {help}");
        let _ = writeln!(self.out, "# TYPE {family} {type_word}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.out.push_str(name);
        if self.kind == Kind::Counter {
            self.out.push_str("_total");
        }
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn finish(mut self) -> String {
        if self.format == Format::OpenMetrics {
            // OpenMetrics 1.0 "Overall structure": the exposition ends with `# EOF`.
            self.out.push_str("# EOF\n");
        }
        self.out
    }
}

/// Label values: backslash, double quote and line feed are escaped (both formats).
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// `# HELP` text: backslash and line feed are escaped in both formats, the double
/// quote only in OpenMetrics.
fn escape_help(text: &str, format: Format) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if format == Format::OpenMetrics => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line `name` exactly (with labels, as written).
    fn value(text: &str, sample: &str) -> Option<u64> {
        text.lines().find_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            (name == sample).then(|| v.parse().ok())?
        })
    }

    #[test]
    fn counters_move_by_what_was_counted() {
        let r = Registry::new();
        let before = r.render(Format::Prometheus, Some(0));
        assert_eq!(value(&before, "relaybox_messages_accepted_total"), Some(0));
        r.delivered(2, 1);
        r.delivered(1, 0);
        r.rejected(Rejection::Unencrypted);
        r.rejected(Rejection::Unencrypted);
        r.rejected(Rejection::RateLimit);
        r.account_created();
        r.registration_refused(Registration::Load);
        r.registration_refused(Registration::Load);
        r.registration_refused(Registration::Closed);
        r.quota_trimmed(7);
        r.quota_trimmed(0);
        r.push(Push::Sent);
        r.push(Push::Gone);
        r.push(Push::Failed);
        r.push(Push::Failed);
        r.outbound(3, 2, 1);
        let text = r.render(Format::Prometheus, Some(4));
        let expect = [
            ("relaybox_messages_accepted_total", 2),
            ("relaybox_delivered_total{destination=\"local\"}", 3),
            ("relaybox_delivered_total{destination=\"remote\"}", 1),
            ("relaybox_rejected_total{reason=\"unencrypted\"}", 2),
            ("relaybox_rejected_total{reason=\"rate_limit\"}", 1),
            ("relaybox_rejected_total{reason=\"origin\"}", 0),
            ("relaybox_rejected_total{reason=\"quota\"}", 0),
            ("relaybox_rejected_total{reason=\"policy\"}", 0),
            ("relaybox_accounts_created_total", 1),
            ("relaybox_registrations_refused_total{reason=\"load\"}", 2),
            ("relaybox_registrations_refused_total{reason=\"closed\"}", 1),
            ("relaybox_registrations_refused_total{reason=\"name\"}", 0),
            ("relaybox_quota_trimmed_messages_total", 7),
            ("relaybox_push_notifications_total{outcome=\"sent\"}", 1),
            ("relaybox_push_notifications_total{outcome=\"failed\"}", 2),
            ("relaybox_push_notifications_total{outcome=\"gone\"}", 1),
            ("relaybox_outbound_attempts_total{result=\"accepted\"}", 3),
            ("relaybox_outbound_attempts_total{result=\"temporary\"}", 2),
            ("relaybox_outbound_attempts_total{result=\"permanent\"}", 1),
            ("relaybox_queue_length", 4),
        ];
        for (sample, n) in expect {
            assert_eq!(value(&text, sample), Some(n), "{sample} in\n{text}");
        }
    }

    #[test]
    fn connections_are_counted_and_open_ones_tracked() {
        let r = Registry::new();
        let a = r.connection("imap");
        let b = r.connection("imap");
        let c = r.connection("turn");
        drop(a);
        let text = r.render(Format::Prometheus, None);
        assert_eq!(
            value(&text, "relaybox_connections_total{service=\"imap\"}"),
            Some(2)
        );
        assert_eq!(
            value(&text, "relaybox_connections_open{service=\"imap\"}"),
            Some(1)
        );
        // A service not in the known list appears once used.
        assert_eq!(
            value(&text, "relaybox_connections_total{service=\"turn\"}"),
            Some(1)
        );
        // Known services are listed from the start, with zeros.
        assert_eq!(
            value(&text, "relaybox_connections_total{service=\"smtp\"}"),
            Some(0)
        );
        drop((b, c));
        let text = r.render(Format::Prometheus, None);
        assert_eq!(
            value(&text, "relaybox_connections_open{service=\"imap\"}"),
            Some(0)
        );
        assert_eq!(
            value(&text, "relaybox_connections_open{service=\"turn\"}"),
            Some(0)
        );
        // Unreadable queue: the gauge family is there without a sample.
        assert!(text.contains("# TYPE relaybox_queue_length gauge\n"));
        assert_eq!(value(&text, "relaybox_queue_length"), None);
    }

    #[test]
    fn prometheus_text_format() {
        let r = Registry::new();
        r.rejected(Rejection::Origin);
        let text = r.render(Format::Prometheus, Some(0));
        // Counter families carry the `_total` name in HELP and TYPE.
        assert!(
            text.starts_with(
                "# HELP relaybox_messages_accepted_total Messages accepted for delivery \
                 (SMTP 250 after DATA, or /mxdeliv 200).\n\
                 # TYPE relaybox_messages_accepted_total counter\n\
                 relaybox_messages_accepted_total 0\n"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE relaybox_rejected_total counter\n"));
        assert!(text.contains("relaybox_rejected_total{reason=\"origin\"} 1\n"));
        assert!(text.contains("# TYPE relaybox_queue_length gauge\nrelaybox_queue_length 0\n"));
        assert!(!text.contains("# EOF"));
        assert!(text.ends_with('\n'));
        check_structure(&text, Format::Prometheus);
    }

    #[test]
    fn openmetrics_text_format() {
        let r = Registry::new();
        r.delivered(1, 0);
        let _open = r.connection("submission");
        let text = r.render(Format::OpenMetrics, Some(3));
        // Counter families are named without `_total`; their samples with it.
        assert!(
            text.contains(
                "# TYPE relaybox_delivered counter\n\
                 relaybox_delivered_total{destination=\"local\"} 1\n\
                 relaybox_delivered_total{destination=\"remote\"} 0\n"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE relaybox_connections_open gauge\n"));
        assert!(text.contains("relaybox_connections_open{service=\"submission\"} 1\n"));
        assert!(text.ends_with("\n# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
        check_structure(&text, Format::OpenMetrics);
    }

    /// Every sample follows its own family's HELP and TYPE; each family once; no
    /// account, address or IP anywhere.
    fn check_structure(text: &str, format: Format) {
        let mut families: Vec<String> = Vec::new();
        let mut current: Option<(String, String)> = None;
        for line in text.lines() {
            if line == "# EOF" {
                assert_eq!(format, Format::OpenMetrics);
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or("").to_string();
                assert!(!families.contains(&name), "family {name} twice");
                families.push(name);
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                let name = it.next().unwrap_or("").to_string();
                let kind = it.next().unwrap_or("").to_string();
                assert_eq!(families.last(), Some(&name), "TYPE after its HELP");
                current = Some((name, kind));
                continue;
            }
            assert!(!line.starts_with('#'), "{line}");
            let (family, kind) = current.clone().expect("sample after a TYPE");
            let name = line.split(['{', ' ']).next().unwrap_or("");
            let expected = match (kind.as_str(), format) {
                ("counter", Format::OpenMetrics) => format!("{family}_total"),
                _ => family.clone(),
            };
            assert_eq!(name, expected, "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{line}");
            }
            assert!(!line.contains('@') && !line.contains("127.0.0."), "{line}");
        }
        assert!(families.len() >= 11, "{families:?}");
    }

    #[test]
    fn escaping() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_label("plain"), "plain");
        assert_eq!(
            escape_help("say \"x\\y\"\nz", Format::OpenMetrics),
            "say \\\"x\\\\y\\\"\\nz"
        );
        assert_eq!(
            escape_help("say \"x\\y\"\nz", Format::Prometheus),
            "say \"x\\\\y\"\\nz"
        );
        let r = Registry::new();
        let _g = r.connection("odd\"name\n");
        let text = r.render(Format::OpenMetrics, None);
        assert!(
            text.contains("relaybox_connections_total{service=\"odd\\\"name\\n\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn refusals_by_service_and_reason() {
        use crate::admission::Reason;
        let r = Registry::new();
        r.connection_refused("imaps", Reason::Busy);
        r.connection_refused("imaps", Reason::Busy);
        r.connection_refused("smtp", Reason::PerAddress);
        r.connection_refused("http", Reason::Deadline);
        r.connection_refused("not-a-listener", Reason::Rate);
        let text = r.render(Format::Prometheus, None);
        assert!(text.contains("# TYPE relaybox_connections_refused_total counter\n"));
        let v = |service: &str, reason: &str| {
            value(
                &text,
                &format!(
                    "relaybox_connections_refused_total{{service=\"{service}\",reason=\"{reason}\"}}"
                ),
            )
        };
        assert_eq!(v("imaps", "limit"), Some(2));
        assert_eq!(v("smtp", "per_ip"), Some(1));
        assert_eq!(v("http", "deadline"), Some(1));
        // Every known service and reason is listed from the start.
        assert_eq!(v("submission", "rate"), Some(0));
        assert_eq!(v("not-a-listener", "rate"), None);
    }

    #[test]
    fn accept_negotiation() {
        assert_eq!(Format::from_accept(None), Format::Prometheus);
        assert_eq!(Format::from_accept(Some("*/*")), Format::Prometheus);
        assert_eq!(
            Format::from_accept(Some("text/plain;version=0.0.4")),
            Format::Prometheus
        );
        // What Prometheus sends.
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                 version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            )),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::from_accept(Some("application/openmetrics-text")),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::from_accept(Some("application/openmetrics-text; q=0")),
            Format::Prometheus
        );
        assert_eq!(
            Format::from_accept(Some("application/openmetrics-text;version=0.0.1")),
            Format::Prometheus
        );
    }
}
