//! The appliance: setup state (claim, admin password, domain), the pages' backend
//! ([`relaybox_webui::Backend`]), the LED and button, mDNS, factory reset, and the
//! pages' side of over-the-air updates ([`updates`]).
//!
//! One [`Appliance`] lives for the whole process. In setup mode (no `mail_domain`) it
//! serves the wizard alone ([`setup`]); once the operator picked a domain the relay
//! starts in the same process and the appliance is attached to it (the wizard's later
//! steps and the status page need the relay's store, DKIM key and certificates).

pub mod backups;
pub mod button;
pub mod configfile;
pub mod dnscheck;
pub mod hw;
pub mod led;
pub mod mdns;
pub mod ports;
pub mod reset;
pub mod restore;
pub mod setup;
pub mod state;
pub mod stats;
pub mod updates;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use relaybox_webui::{
    AcmeProgress, Backend, CertificateInfo, Check, CheckStatus, ClaimWindow, DailySeries,
    DnsRecord, DomainChoice, InputError, Invite, Overview, Phase, ServiceHealth, Status,
};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{Config, Mode};
use crate::server::Relay;
use led::LedPattern;
use state::AdminState;

/// How long a claim window stays open (the page shows the countdown).
pub const CLAIM_WINDOW: Duration = Duration::from_secs(120);
/// How long a press inside a window stays valid for the visitor who opened it.
const PRESS_VALID: Duration = Duration::from_secs(300);
/// Admin passwords: at least this long.
pub const MIN_PASSWORD: usize = 10;
const MAX_PASSWORD: usize = 256;
/// How long DNS check results are reused (status page, LED).
const DNS_CACHE: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum ApplianceError {
    #[error("{0}")]
    State(#[from] state::StateError),
    #[error("setup code file {path}: {err}")]
    SetupCode { path: PathBuf, err: std::io::Error },
}

/// An open claim window.
#[derive(Debug, Clone)]
struct Window {
    ticket: String,
    deadline: Instant,
    pressed_at: Option<Instant>,
}

/// The appliance's state shared by the pages, the button and the relay.
pub struct Appliance {
    /// The chatmail.ini the wizard edits (`None` in dev mode: nothing to edit).
    config_path: Option<PathBuf>,
    config: RwLock<Config>,
    relay: OnceLock<Arc<Relay>>,
    admin: Mutex<AdminState>,
    window: Mutex<Option<Window>>,
    /// The one-time setup code while unclaimed.
    setup_code: Mutex<Option<String>>,
    has_button: bool,
    pattern: watch::Sender<LedPattern>,
    /// The config the operator chose in setup mode (main starts the relay with it).
    chosen: watch::Sender<Option<Config>>,
    stats: Mutex<stats::Daily>,
    dns_cache: Mutex<Option<(Instant, Vec<Check>)>>,
    /// The admin pages, built once: setup mode and the relay serve the same router, so
    /// its login slowdown and logged-out sessions carry over the switch.
    router: OnceLock<axum::Router>,
    /// What the update agent reports (OTA-6; the LED shows "updating" while busy).
    update: Arc<crate::update::agent::UpdateStatus>,
    /// The agent's settings, once the relay runs and the agent started.
    update_agent: OnceLock<crate::update::agent::AgentConfig>,
    /// The wizard's restore and the status page's backup (issue 17).
    backups: restore::Backups,
    /// Automatic backups (issue 17), once the relay runs and they started
    /// (`crate::backup::auto::start`).
    auto_backups: OnceLock<Arc<crate::backup::auto::AutoBackup>>,
}

impl Appliance {
    /// Load the admin state and make the setup code when unclaimed (written to
    /// `setup_code_file` and printed on the console).
    pub fn new(
        config: Config,
        config_path: Option<PathBuf>,
        has_button: bool,
    ) -> Result<Arc<Appliance>, ApplianceError> {
        crate::private::dir(&config.data_dir).map_err(|err| state::StateError::Io {
            path: config.data_dir.clone(),
            err,
        })?;
        let admin = AdminState::load(&config.data_dir)?;
        let setup_code = if admin.password_hash.is_none() {
            Some(
                setup::setup_code(&config.appliance.setup_code_file).map_err(|err| {
                    ApplianceError::SetupCode {
                        path: config.appliance.setup_code_file.clone(),
                        err,
                    }
                })?,
            )
        } else {
            None
        };
        let initial = if admin.password_hash.is_none() || config.setup {
            LedPattern::WaitingForSetup
        } else {
            LedPattern::Booting
        };
        Ok(Arc::new(Appliance {
            auto_backups: OnceLock::new(),
            config_path,
            config: RwLock::new(config),
            relay: OnceLock::new(),
            admin: Mutex::new(admin),
            window: Mutex::new(None),
            setup_code: Mutex::new(setup_code),
            has_button,
            pattern: watch::Sender::new(initial),
            chosen: watch::Sender::new(None),
            stats: Mutex::new(stats::Daily::default()),
            dns_cache: Mutex::new(None),
            router: OnceLock::new(),
            update: crate::update::agent::UpdateStatus::new(),
            update_agent: OnceLock::new(),
            backups: restore::Backups::default(),
        }))
    }

    /// The setup code while unclaimed (for the console banner).
    pub fn setup_code(&self) -> Option<String> {
        self.setup_code.lock().expect("code lock").clone()
    }

    pub fn config(&self) -> Config {
        self.config.read().expect("config lock").clone()
    }

    /// The LED pattern as it changes.
    pub fn led_patterns(&self) -> watch::Receiver<LedPattern> {
        self.pattern.subscribe()
    }

    /// The config chosen in the wizard's domain step while in setup mode.
    pub fn chosen_config(&self) -> watch::Receiver<Option<Config>> {
        self.chosen.subscribe()
    }

    /// Leave setup mode: `main` starts the relay of `config` (the domain step, a restore).
    fn choose(&self, config: Config) {
        // A backup uploaded for a restore is of no use any more.
        self.restore_cancel();
        *self.config.write().expect("config lock") = config.clone();
        self.chosen.send_replace(Some(config));
    }

    /// Attach the running relay: the wizard's later steps and the status page use it,
    /// and its HTTPS listener serves the admin pages (the same router as setup mode).
    pub fn attach(self: &Arc<Self>, relay: Arc<Relay>) {
        *self.config.write().expect("config lock") = relay.config.clone();
        let _ = relay.admin.set(self.admin_router());
        let _ = self.relay.set(relay);
        self.refresh_led();
    }

    /// The admin pages (one router for the life of the process).
    pub fn admin_router(self: &Arc<Self>) -> axum::Router {
        self.router
            .get_or_init(|| relaybox_webui::router(self.clone()))
            .clone()
    }

    fn relay(&self) -> Option<&Arc<Relay>> {
        self.relay.get()
    }

    fn claimed(&self) -> bool {
        self.admin
            .lock()
            .expect("admin lock")
            .password_hash
            .is_some()
    }

    /// The pattern for the current state (a claim window wins over everything but a
    /// reset countdown, which the button task sets directly).
    pub fn refresh_led(&self) {
        let open = self
            .window
            .lock()
            .expect("window lock")
            .as_ref()
            .is_some_and(|w| w.pressed_at.is_none() && w.deadline > Instant::now());
        let pattern = if open {
            LedPattern::ClaimWindow
        } else if self.update.snapshot().busy {
            LedPattern::Updating
        } else if !self.claimed() || self.relay().is_none() {
            LedPattern::WaitingForSetup
        } else if self.degraded() {
            LedPattern::Degraded
        } else {
            LedPattern::Running
        };
        self.pattern.send_replace(pattern);
    }

    /// Degraded: the last DNS check found an error, a domain relay still has no
    /// trusted certificate, mail for some domain has waited longer than an hour
    /// ([`crate::operator::queue::STUCK_AFTER`]), or the last automatic backup failed.
    fn degraded(&self) -> bool {
        let dns_error = self
            .dns_cache
            .lock()
            .expect("dns lock")
            .as_ref()
            .is_some_and(|(_, checks)| checks.iter().any(|c| c.status == CheckStatus::Error));
        let cert = self.certificate();
        let stuck = self.relay().is_some_and(|r| stuck_queue(r).is_some());
        let backup = self
            .auto_backups
            .get()
            .is_some_and(|b| b.failed().is_some());
        dns_error || (cert.acme_possible && cert.source == "self-signed") || stuck || backup
    }

    /// A short press of the button: confirms an open claim window.
    pub fn button_pressed(&self) {
        let mut window = self.window.lock().expect("window lock");
        if let Some(w) = window.as_mut()
            && w.pressed_at.is_none()
            && w.deadline > Instant::now()
        {
            w.pressed_at = Some(Instant::now());
            tracing::info!("claim confirmed by the button");
        }
        drop(window);
        self.refresh_led();
    }

    /// The button is being held: the LED counts down to the factory reset.
    pub fn reset_countdown(&self, seconds_left: u8) {
        self.pattern
            .send_replace(LedPattern::ResetCountdown { seconds_left });
    }

    /// Record the running totals for the charts (every `STATS_EVERY` and whenever the
    /// status page is shown).
    pub fn sample_stats(&self) {
        let now = crate::clock::SystemClock;
        self.stats
            .lock()
            .expect("stats lock")
            .record(stats::Sample {
                at: crate::clock::Clock::unix_now(&now),
                messages: crate::metrics::global().accepted_total(),
                written: stats::written_bytes(&self.config().data_dir),
            });
    }

    async fn checked_dns(&self, fresh: bool) -> Vec<Check> {
        if !fresh
            && let Some((at, checks)) = self.dns_cache.lock().expect("dns lock").as_ref()
            && at.elapsed() < DNS_CACHE
        {
            return checks.clone();
        }
        let config = self.config();
        if config.setup || matches!(config.mode, Mode::IpOnly(_)) {
            return Vec::new();
        }
        let records = self.dns_records();
        let checks = dnscheck::check_dns(&config, &records).await;
        *self.dns_cache.lock().expect("dns lock") = Some((Instant::now(), checks.clone()));
        self.refresh_led();
        checks
    }
}

/// A listener list is healthy when something is bound: connect to it on loopback.
fn listener_health(name: &str, addrs: &[std::net::SocketAddr]) -> ServiceHealth {
    let reachable = addrs.iter().any(|a| {
        let mut target = *a;
        if target.ip().is_unspecified() {
            target.set_ip(match target.ip() {
                IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            });
        }
        std::net::TcpStream::connect_timeout(&target, Duration::from_millis(300)).is_ok()
    });
    let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    ServiceHealth {
        name: name.into(),
        status: if reachable {
            CheckStatus::Ok
        } else {
            CheckStatus::Error
        },
        detail: if reachable {
            format!("listening on {}", list.join(", "))
        } else {
            format!("not answering on {}", list.join(", "))
        },
    }
}

/// Constant-time equality of two setup codes, ignoring case, spaces and dashes.
fn same_code(typed: &str, code: &str) -> bool {
    let norm = |s: &str| -> Vec<u8> {
        s.bytes()
            .filter(|b| !matches!(b, b'-' | b' ' | b'\t'))
            .map(|b| b.to_ascii_uppercase())
            .collect()
    };
    let (a, b) = (norm(typed), norm(code));
    if a.len() != b.len() || b.is_empty() {
        return false;
    }
    a.iter().zip(&b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Check the wizard's domain choice and turn it into the `mail_domain` value.
pub fn domain_value(choice: &DomainChoice) -> Result<String, InputError> {
    match choice {
        DomainChoice::Domain(d) => {
            let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
            let err = |message: String| InputError {
                field: "domain",
                message,
            };
            if d.is_empty() {
                return Err(err(
                    "Enter the domain name for the relay, e.g. chat.example.org.".into(),
                ));
            }
            if d.parse::<IpAddr>().is_ok() {
                return Err(err(
                    "That is an address, not a domain name: choose IP-only mode for it.".into(),
                ));
            }
            if d.ends_with(".local") || d == "local" || d == "localhost" || !d.contains('.') {
                return Err(err(format!(
                    "{d:?} is not a public domain name. Use a name you registered (or a \
                     subdomain of one), e.g. chat.example.org."
                )));
            }
            match Config::parse(&format!("[params]\nmail_domain = {d}\n")) {
                Ok(loaded) if loaded.config.mode == Mode::Domain => Ok(d),
                Ok(_) => Err(err(format!(
                    "{d:?} is a test name; use a public domain name like chat.example.org."
                ))),
                Err(_) => Err(err(format!(
                    "{d:?} is not a valid domain name: use letters, digits, '-' and dots, \
                     like chat.example.org."
                ))),
            }
        }
        DomainChoice::IpOnly(ip) => {
            let ip = ip.trim();
            match ip.parse::<std::net::Ipv4Addr>() {
                Ok(a) if a.is_unspecified() || a.is_broadcast() || a.is_multicast() => {
                    Err(InputError {
                        field: "ip",
                        message: format!("{a} cannot be a relay's address."),
                    })
                }
                Ok(a) => Ok(a.to_string()),
                Err(_) => Err(InputError {
                    field: "ip",
                    message: format!(
                        "{ip:?} is not an IPv4 address; write it like 192.0.2.10 (IP-only \
                         mode works with IPv4 only)."
                    ),
                }),
            }
        }
    }
}

impl Backend for Appliance {
    fn overview(&self) -> Overview {
        let config = self.config();
        let phase = if !self.claimed() {
            Phase::Unclaimed
        } else if config.setup {
            Phase::NeedDomain
        } else {
            Phase::Configured
        };
        Overview {
            phase,
            domain: (!config.setup).then(|| config.mail_domain.clone()),
            ip_only: !config.setup && matches!(config.mode, Mode::IpOnly(_)),
            has_button: self.has_button,
            setup_code_location: format!(
                "the file {} (also printed on the console when the box starts in setup mode)",
                config.appliance.setup_code_file.display()
            ),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    fn session_key(&self) -> Vec<u8> {
        self.admin
            .lock()
            .expect("admin lock")
            .session_key
            .as_bytes()
            .to_vec()
    }

    fn box_names(&self) -> Vec<String> {
        crate::http::box_names(&self.config.read().expect("config lock"))
    }

    fn admin_client_allowed(&self, ip: IpAddr) -> bool {
        // Issue 20: a client that came through a front server is never on the local
        // network, whatever its address looks like.
        let through_front = self
            .relay()
            .is_some_and(|r| r.front.peers.through_front(ip));
        self.config
            .read()
            .expect("config lock")
            .appliance
            .admin_from_anywhere
            || (relaybox_webui::is_lan(ip) && !through_front)
    }

    fn open_claim_window(&self) -> ClaimWindow {
        if !self.has_button || self.claimed() {
            return ClaimWindow::Closed;
        }
        let mut window = self.window.lock().expect("window lock");
        let now = Instant::now();
        let reusable = window.as_ref().is_some_and(|w| match w.pressed_at {
            None => w.deadline > now,
            Some(at) => now.duration_since(at) < PRESS_VALID,
        });
        if !reusable {
            *window = Some(Window {
                ticket: state::random_key(),
                deadline: now + CLAIM_WINDOW,
                pressed_at: None,
            });
            tracing::info!("claim window opened; press the button on the box");
        }
        let w = window.as_ref().expect("window just set");
        let result = if reusable {
            // Somebody else's window: its state without its ticket.
            match w.pressed_at {
                Some(_) => ClaimWindow::Closed,
                None => ClaimWindow::Open {
                    ticket: String::new(),
                    seconds_left: w.deadline.duration_since(now).as_secs(),
                },
            }
        } else {
            ClaimWindow::Open {
                ticket: w.ticket.clone(),
                seconds_left: CLAIM_WINDOW.as_secs(),
            }
        };
        drop(window);
        self.refresh_led();
        result
    }

    fn claim_window(&self) -> ClaimWindow {
        let now = Instant::now();
        let mut window = self.window.lock().expect("window lock");
        let state = match window.as_ref() {
            None => ClaimWindow::Closed,
            Some(w) => match w.pressed_at {
                Some(at) if now.duration_since(at) < PRESS_VALID => ClaimWindow::Pressed {
                    ticket: w.ticket.clone(),
                },
                None if w.deadline > now => ClaimWindow::Open {
                    ticket: w.ticket.clone(),
                    seconds_left: w.deadline.duration_since(now).as_secs(),
                },
                _ => ClaimWindow::Closed,
            },
        };
        if state == ClaimWindow::Closed && window.is_some() {
            *window = None;
            drop(window);
            self.refresh_led();
        }
        state
    }

    fn check_setup_code(&self, code: &str) -> bool {
        !self.claimed()
            && self
                .setup_code
                .lock()
                .expect("code lock")
                .as_deref()
                .is_some_and(|c| same_code(code, c))
    }

    async fn set_admin_password(&self, password: &str) -> Result<(), InputError> {
        let chars = password.chars().count();
        if chars < MIN_PASSWORD {
            return Err(InputError {
                field: "password",
                message: format!(
                    "The password is too short: use at least {MIN_PASSWORD} characters \
                     (a few words are easy to remember)."
                ),
            });
        }
        if chars > MAX_PASSWORD {
            return Err(InputError {
                field: "password",
                message: format!("The password is too long: at most {MAX_PASSWORD} characters."),
            });
        }
        let owned = password.to_string();
        let hash = tokio::task::spawn_blocking(move || crate::auth::hash_password(&owned))
            .await
            .map_err(|_| InputError {
                field: "password",
                message: "The password could not be stored; try again.".into(),
            })?;
        let data_dir = self.config().data_dir;
        let first = {
            let mut admin = self.admin.lock().expect("admin lock");
            let next = AdminState {
                password_hash: Some(hash),
                session_key: state::random_key(),
            };
            let first = admin.password_hash.is_none();
            next.save(&data_dir).map_err(|e| {
                tracing::error!("cannot save the admin password: {e}");
                InputError {
                    field: "password",
                    message: format!("The password could not be saved: {e}"),
                }
            })?;
            *admin = next;
            first
        };
        if first {
            tracing::info!("box claimed: admin password set");
            *self.window.lock().expect("window lock") = None;
            *self.setup_code.lock().expect("code lock") = None;
            let file = self.config().appliance.setup_code_file;
            let _ = std::fs::remove_file(&file);
        } else {
            tracing::info!("admin password changed");
        }
        self.refresh_led();
        Ok(())
    }

    async fn check_admin_password(&self, password: &str) -> bool {
        let Some(stored) = self.admin.lock().expect("admin lock").password_hash.clone() else {
            return false;
        };
        let owned = password.to_string();
        tokio::task::spawn_blocking(move || crate::auth::verify_password(&owned, &stored))
            .await
            .unwrap_or(false)
    }

    async fn set_domain(&self, choice: DomainChoice) -> Result<(), InputError> {
        let value = domain_value(&choice)?;
        let field = match choice {
            DomainChoice::Domain(_) => "domain",
            DomainChoice::IpOnly(_) => "ip",
        };
        let fail = |message: String| InputError { field, message };
        let Some(path) = &self.config_path else {
            return Err(fail(
                "This relay runs without a config file (dev mode).".into(),
            ));
        };
        if !self.config().setup {
            return Err(fail(format!(
                "The domain is already set to {}. To start over, reset the box (hold the \
                 button for 10 seconds) or edit {} and restart.",
                self.config().mail_domain,
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(format!("Cannot read {}: {e}", path.display())))?;
        let next = configfile::set_mail_domain(&text, &value);
        // Applied completely or not at all: validate first, then replace atomically.
        let loaded = Config::parse(&next)
            .map_err(|e| fail(format!("The config would not be valid: {e}")))?;
        state::write_atomically(path, next.as_bytes(), 0o644)
            .map_err(|e| fail(format!("The config could not be written: {e}")))?;
        tracing::info!("mail_domain set to {value}; starting the relay");
        self.choose(loaded.config);
        Ok(())
    }

    fn dns_records(&self) -> Vec<DnsRecord> {
        let Some(relay) = self.relay() else {
            return Vec::new();
        };
        let config = &relay.config;
        if matches!(config.mode, Mode::IpOnly(_)) {
            return Vec::new();
        }
        crate::zone::expected_records(
            config,
            relay.dkim.as_ref(),
            crate::zone::detect_addresses(config),
        )
    }

    fn zone_file(&self) -> String {
        match self.relay() {
            Some(relay) => match &relay.dkim {
                Some(signer) => crate::zone::zone_text(
                    &relay.config,
                    signer,
                    crate::zone::detect_addresses(&relay.config),
                ),
                None => format!(
                    "; {} is an IP-only relay: it needs no DNS records.\n",
                    relay.config.mail_domain
                ),
            },
            None => "; the relay is not configured yet\n".into(),
        }
    }

    async fn dns_checks(&self) -> Vec<Check> {
        self.checked_dns(true).await
    }

    async fn port_checks(&self) -> Vec<Check> {
        let config = self.config();
        if config.setup {
            return Vec::new();
        }
        ports::check_ports(&config).await
    }

    fn turn_enabled(&self) -> bool {
        !self.config().turn_listen.is_empty()
    }

    fn certificate(&self) -> CertificateInfo {
        match self.relay() {
            Some(relay) => relay.acme_handles().info(),
            None => CertificateInfo {
                source: "none".into(),
                issuer: String::new(),
                self_signed: false,
                names: Vec::new(),
                not_after: None,
                acme_possible: false,
                progress: AcmeProgress::Idle,
            },
        }
    }

    fn request_certificate(&self) -> Result<(), String> {
        match self.relay() {
            Some(relay) => crate::acme::request(relay.clone(), Relay::acme_handles),
            None => Err("Choose the domain first.".into()),
        }
    }

    fn admin_password_file(&self) -> Option<PathBuf> {
        Some(self.config().data_dir.join(state::STATE_FILE))
    }

    fn invite(&self) -> Option<Invite> {
        let relay = self.relay()?;
        let (url, _) = crate::web::invite_link(&relay.config);
        let qr_svg = crate::web::qr_svg_element(&url)?;
        // An invite cannot travel in `DCACCOUNT:<domain>`, and closed is closed.
        use crate::config::SignupMode;
        let not_open = match relay.auth.signup().mode() {
            SignupMode::Open | SignupMode::NoAutomatic => None,
            SignupMode::Invite => Some(
                "New accounts on this relay need an invite: make one on the Sign-up page and \
                 scan its code."
                    .to_string(),
            ),
            SignupMode::Closed => Some(
                "Sign-up is closed on this relay: open it on the Sign-up page to create an \
                 account."
                    .to_string(),
            ),
        };
        let domain_code =
            crate::onboarding::dcaccount_domain_url(&relay.config).filter(|_| not_open.is_none());
        Some(Invite {
            url,
            qr_svg,
            domain_code,
            not_open,
        })
    }

    fn update_now(&self) -> Result<(), String> {
        self.request_update_now()
    }

    fn upload_target(&self) -> Result<(PathBuf, u64), String> {
        self.update_upload_target()
    }

    fn install_upload(&self, path: PathBuf) -> Result<(), String> {
        self.install_uploaded_bundle(path)
    }

    async fn status(&self) -> Status {
        let certificate = self.certificate();
        let dns = self.checked_dns(false).await;
        let version = env!("CARGO_PKG_VERSION").to_string();
        let recent_errors = crate::logs::recent_problems(20);
        let update = self.update_info();
        // Issue 16: today's figures so far, not those of the last periodic sample.
        self.sample_stats();
        let (messages, written, written_per_day, written_today, charts_since) = {
            let s = self.stats.lock().expect("stats lock");
            (
                s.messages(),
                s.written(),
                s.written_per_day(),
                s.written_today(),
                s.since(),
            )
        };
        let day = |d: u64| {
            let (y, m, dd) = crate::clock::civil_from_days(d as i64);
            format!("{y:04}-{m:02}-{dd:02}")
        };
        let charts = vec![
            DailySeries {
                title: "Messages per day".into(),
                unit: "messages".into(),
                points: messages.into_iter().map(|(d, v)| (day(d), v)).collect(),
            },
            DailySeries {
                title: "Written to storage per day".into(),
                unit: "bytes".into(),
                points: written.into_iter().map(|(d, v)| (day(d), v)).collect(),
            },
        ];
        let Some(relay) = self.relay() else {
            return Status {
                services: Vec::new(),
                certificate,
                dns,
                queue_rows: 0,
                accounts: 0,
                storage_bytes: 0,
                storage_free_bytes: None,
                bytes_written_per_day: written_per_day,
                bytes_written_today: written_today,
                version,
                update,
                recent_errors,
                charts,
                charts_since,
            };
        };
        let data_dir = relay.config.data_dir.clone();
        // Listener probes block briefly; keep them off the async threads.
        let mut services = {
            let relay = relay.clone();
            tokio::task::spawn_blocking(move || services_health(&relay))
                .await
                .unwrap_or_default()
        };
        services.extend(self.backup_health());
        let storage_bytes = std::fs::metadata(data_dir.join(crate::server::STORE_FILE))
            .map(|m| m.len())
            .unwrap_or(0);
        let storage_free_bytes = nix::sys::statvfs::statvfs(&data_dir)
            .ok()
            .map(|st| st.blocks_available().saturating_mul(st.fragment_size()));
        Status {
            services,
            certificate,
            dns,
            queue_rows: relay.store.queue_len().unwrap_or(0),
            accounts: relay.store.account_count().unwrap_or(0),
            storage_bytes,
            storage_free_bytes,
            bytes_written_per_day: written_per_day,
            bytes_written_today: written_today,
            version,
            update,
            recent_errors,
            charts,
            charts_since,
        }
    }

    fn signup(&self) -> Option<relaybox_webui::SignUpInfo> {
        let relay = self.relay()?;
        let signup = relay.auth.signup();
        let invites = match signup.invites() {
            Ok(list) => list,
            Err(e) => {
                tracing::error!("sign-up page: {e}");
                Vec::new()
            }
        };
        Some(relaybox_webui::SignUpInfo {
            mode: signup_mode_to_page(signup.mode()),
            invites: invites.into_iter().map(invite_to_page).collect(),
            persisted: self.config_path.is_some(),
            per_person: relay.config.self_signed(),
        })
    }

    fn set_signup_mode(&self, mode: relaybox_webui::SignUpMode) -> Result<(), String> {
        let relay = self.relay().ok_or("The relay is not running.")?;
        let mode = crate::signup::Mode::parse(mode.as_str()).ok_or("Unknown mode.")?;
        relay
            .auth
            .signup()
            .set_mode(mode, self.config_path.as_deref())
            .map_err(|e| e.to_string())
    }

    async fn create_invite(
        &self,
        valid_days: u64,
        uses: u32,
        label: &str,
    ) -> Result<String, String> {
        let relay = self.relay().ok_or("The relay is not running.")?;
        relay
            .auth
            .signup()
            .create_invite(valid_days, uses, label)
            .await
            .map(|i| i.id)
            .map_err(|e| e.to_string())
    }

    async fn revoke_invite(&self, id: &str) -> Result<(), String> {
        let relay = self.relay().ok_or("The relay is not running.")?;
        relay
            .auth
            .signup()
            .revoke_invite(id)
            .await
            .map_err(|e| e.to_string())
    }

    fn invite_link(&self, id: &str) -> Option<Invite> {
        let relay = self.relay()?;
        let invite = relay
            .auth
            .signup()
            .invites()
            .ok()?
            .into_iter()
            .find(|i| i.id == id)?;
        let url = crate::onboarding::invite_link(&relay.config, &invite.token);
        let qr_svg = crate::web::qr_svg_element(&url)?;
        Some(Invite {
            url,
            qr_svg,
            domain_code: None,
            not_open: None,
        })
    }

    async fn queue(&self) -> Result<Vec<relaybox_webui::QueueDomain>, String> {
        let relay = self.relay().ok_or("The relay is not running yet.")?;
        let now = crate::operator::queue::now(Some(relay));
        let list = crate::operator::queue::list(&relay.store, now).map_err(|e| e.to_string())?;
        Ok(list
            .domains
            .into_iter()
            .map(|d| relaybox_webui::QueueDomain {
                domain: d.domain,
                messages: d.messages,
                attempts: d.attempts,
                next_retry: d.next_retry,
                oldest: d.oldest,
                last_error: d.last_error,
            })
            .collect())
    }

    async fn queue_retry(&self, domain: &str) -> Result<u64, String> {
        let relay = self.relay().ok_or("The relay is not running yet.")?;
        let now = crate::operator::queue::now(Some(relay));
        crate::operator::queue::retry(&relay.store, Some(relay), domain, now)
            .await
            .map(|done| done.messages)
            .map_err(|e| e.to_string())
    }

    async fn queue_bounce(&self, domain: &str) -> Result<u64, String> {
        let relay = self.relay().ok_or("The relay is not running yet.")?;
        let done =
            crate::operator::queue::bounce(&relay.config, &relay.store, Some(relay), domain).await;
        self.refresh_led();
        done.map(|done| done.messages).map_err(|e| e.to_string())
    }

    async fn diagnostic_report(&self) -> (String, String) {
        self.report().await
    }

    async fn accounts(
        &self,
        query: relaybox_webui::AccountQuery,
    ) -> Result<relaybox_webui::AccountList, String> {
        let page = self
            .operator_accounts()?
            .list(&list_query(query))
            .map_err(text)?;
        Ok(relaybox_webui::AccountList {
            accounts: page
                .accounts
                .into_iter()
                .map(|a| relaybox_webui::AccountSummary {
                    address: a.address,
                    created: a.created,
                    last_login_day: a.last_login_day,
                    storage_bytes: a.storage_bytes,
                    messages: a.messages,
                })
                .collect(),
            total: page.total,
            more: page.more,
        })
    }

    async fn blocked_addresses(
        &self,
        query: relaybox_webui::AccountQuery,
    ) -> Result<relaybox_webui::BlockedList, String> {
        let page = self
            .operator_accounts()?
            .blocked(&list_query(query))
            .map_err(text)?;
        Ok(relaybox_webui::BlockedList {
            blocked: page
                .blocked
                .into_iter()
                .map(|b| (b.address, b.since))
                .collect(),
            total: page.total,
            more: page.more,
        })
    }

    async fn delete_account(&self, address: String) -> Result<String, String> {
        let deleted = self.operator_accounts()?.delete(&address).await;
        Ok(deleted.map_err(text)?.text())
    }

    async fn block_address(&self, address: String) -> Result<String, String> {
        let accounts = self.operator_accounts()?;
        let blocked = accounts.block(&address, accounts.now()).await;
        Ok(blocked.map_err(text)?.text())
    }

    async fn unblock_address(&self, address: String) -> Result<String, String> {
        let unblocked = self.operator_accounts()?.unblock(&address).await;
        Ok(format!(
            "unblocked {}: a login can create it again",
            unblocked.map_err(text)?
        ))
    }

    fn restore_upload_target(&self) -> Result<(PathBuf, u64), String> {
        Appliance::restore_upload_target(self)
    }

    fn restore_uploaded(&self, path: PathBuf) -> Result<relaybox_webui::BackupInfo, String> {
        Appliance::restore_uploaded(self, path)
    }

    fn restore_pending(&self) -> Option<relaybox_webui::BackupInfo> {
        Appliance::restore_pending(self)
    }

    fn restore_cancel(&self) {
        Appliance::restore_cancel(self)
    }

    async fn restore_backup(&self, passphrase: String) -> Result<String, String> {
        Appliance::restore_backup(self, passphrase).await
    }

    async fn backup_now(
        &self,
        passphrase: String,
        messages: bool,
    ) -> Result<relaybox_webui::BackupFile, String> {
        Appliance::backup_now(self, passphrase, messages).await
    }

    fn backups(&self) -> relaybox_webui::BackupsInfo {
        self.backups_info()
    }

    async fn set_backup_passphrase(&self, passphrase: String) -> Result<(), InputError> {
        self.set_backup_passphrase_file(&passphrase)
    }

    async fn set_backup_settings(
        &self,
        settings: relaybox_webui::BackupSettings,
    ) -> Result<(), InputError> {
        self.save_backup_settings(&settings)
    }

    fn auto_backup_now(&self) -> Result<(), String> {
        if self.relay().is_none() {
            return Err("The relay does not run yet: finish the setup first.".into());
        }
        match self.auto_backups.get() {
            Some(b) => {
                b.run_now();
                Ok(())
            }
            None => Err("Automatic backups have not started yet.".into()),
        }
    }
}

/// The control socket's questions only the daemon's state answers.
#[async_trait::async_trait]
impl crate::control::Daemon for Appliance {
    async fn report(&self) -> String {
        Appliance::report(self).await.0
    }

    fn config_file(&self) -> Option<PathBuf> {
        self.config_path.clone()
    }
}

impl Appliance {
    /// The diagnostic report of this daemon (issue 18 item 5), built by
    /// [`crate::operator::report`] from the status page's figures, the port checks, the
    /// store, the config file and the in-memory log; with its file name.
    pub async fn report(&self) -> (String, String) {
        use crate::operator::report;
        let now = crate::clock::Clock::unix_now(&crate::clock::SystemClock);
        let config = self.config();
        let (status, ports) = tokio::join!(self.status(), self.port_checks());
        let store = match self.relay() {
            Some(relay) => {
                report::store_figures(&relay.config, &relay.store).map_err(|e| e.to_string())
            }
            None => Err("the relay does not run yet (setup mode)".to_string()),
        };
        let config_text = self
            .config_path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok());
        let facts = report::Facts {
            made_at: now,
            version: status.version.clone(),
            release: report::release(),
            mail_domain: config.mail_domain.clone(),
            mode: config.mode.clone(),
            config_text,
            store,
            certificate: report::Certificate::from(&status.certificate),
            live: Some(report::Live {
                services: status.services,
                dns: status.dns,
                ports,
                update: status.update,
                written_per_day: status.bytes_written_per_day,
                written_today: status.bytes_written_today,
            }),
            logs: crate::logs::recent(report::LOG_LINES),
        };
        (
            report::render(&facts),
            report::file_name(&config.mail_domain, now),
        )
    }

    /// The accounts page's operator actions (one path with `relaybox accounts`).
    fn operator_accounts(&self) -> Result<crate::operator::accounts::Accounts<'_>, String> {
        self.relay()
            .map(|relay| crate::operator::accounts::Accounts::of_relay(relay))
            .ok_or_else(|| "The relay does not run yet: finish the setup first.".to_string())
    }
}

/// The pages' query as the operator's.
fn list_query(q: relaybox_webui::AccountQuery) -> crate::operator::accounts::ListQuery {
    crate::operator::accounts::ListQuery {
        after: q.after,
        search: q.search,
        limit: Some(q.limit),
    }
}

/// An error as the pages show it.
fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The pages' name of a sign-up mode.
fn signup_mode_to_page(mode: crate::signup::Mode) -> relaybox_webui::SignUpMode {
    relaybox_webui::SignUpMode::parse(mode.as_str()).unwrap_or(relaybox_webui::SignUpMode::Open)
}

/// An invite as the pages list it (without its token).
fn invite_to_page(i: crate::signup::Invite) -> relaybox_webui::SignUpInvite {
    use crate::signup::InviteState as S;
    relaybox_webui::SignUpInvite {
        id: i.id,
        label: i.label,
        created: i.created,
        expires: i.expires,
        max_uses: i.max_uses,
        uses: i.uses,
        state: match i.state {
            S::Usable => relaybox_webui::InviteState::Usable,
            S::Expired => relaybox_webui::InviteState::Expired,
            S::UsedUp => relaybox_webui::InviteState::UsedUp,
            S::Revoked => relaybox_webui::InviteState::Revoked,
        },
    }
}

/// Health of every service of `relay` that the config turns on (blocking: probes the
/// listeners on loopback). Services switched off in the config are left out.
pub fn services_health(relay: &Relay) -> Vec<ServiceHealth> {
    let l = &relay.config.listen;
    let mut out = Vec::new();
    for (name, addrs) in [
        ("SMTP (25)", &l.smtp),
        ("Submission (587)", &l.submission),
        ("Submission TLS (465)", &l.submissions),
        ("IMAP (143)", &l.imap),
        ("IMAP TLS (993)", &l.imaps),
        ("HTTPS (443)", &l.https),
        ("HTTP (80)", &l.http),
    ] {
        if !addrs.is_empty() {
            out.push(listener_health(name, addrs));
        }
    }
    if !relay.config.turn_listen.is_empty() {
        let turn_port = relay.turn.port();
        out.push(ServiceHealth {
            name: "TURN (3478/udp)".into(),
            status: if turn_port.is_some() {
                CheckStatus::Ok
            } else {
                CheckStatus::Error
            },
            detail: match turn_port {
                Some(p) => format!("answering on UDP port {p}"),
                None => "not running (see recent problems)".into(),
            },
        });
    }
    // Issue 17: a relay that moves says where to and what it still has to hand over.
    if let Some(line) = crate::operator::moving::status_line(relay) {
        out.push(ServiceHealth {
            name: "Moving".into(),
            status: CheckStatus::Warning,
            detail: line,
        });
    }
    // Issue 18: mail that does not leave names its domain.
    if let Some(line) = stuck_queue(relay) {
        out.push(ServiceHealth {
            name: "Outgoing mail".into(),
            status: CheckStatus::Warning,
            detail: line,
        });
    }
    out
}

/// The line naming the domains whose mail has waited longer than an hour, if any.
fn stuck_queue(relay: &Relay) -> Option<String> {
    let now = crate::operator::queue::now(Some(relay));
    let list = crate::operator::queue::list(&relay.store, now).ok()?;
    crate::operator::queue::stuck_line(&list)
}

#[cfg(test)]
mod tests;

/// The appliance with its background tasks (LED, button, mDNS, chart samples).
pub struct Running {
    pub appliance: Arc<Appliance>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    mdns: Option<mdns::Announcer>,
}

impl Running {
    /// Stop the tasks and withdraw the mDNS name.
    pub async fn stop(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(a) = self.mdns.take() {
            // Sends the goodbye packets; blocks up to 2 s.
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || a.shutdown()).await {
                tracing::debug!("mdns: {e}");
            }
        }
    }
}

/// The start-up line about claiming the box while it is unclaimed (`code`: its setup
/// code; `urls`: where the wizard is reached, [`setup_urls`]). The code itself only in
/// setup mode (issue 13): a configured relay's log is kept (and may be shipped
/// elsewhere), so there it says only where the code is.
pub fn setup_banner(config: &Config, code: Option<&str>, urls: &[String]) -> Option<String> {
    let code = code?;
    let file = config.appliance.setup_code_file.display();
    if !config.setup {
        return Some(format!(
            "admin pages not claimed yet: open https://{}/admin/ from the local network \
             and give the setup code from {file}",
            config.mail_domain
        ));
    }
    let open = if urls.is_empty() {
        "this machine's address".to_string()
    } else {
        urls.join(" or ")
    };
    Some(format!(
        "setup: open {open} in a browser; setup code {code} (also in {file})"
    ))
}

/// Issue 16: the wizard's addresses that work, for the console: `<name>.local` only when
/// it is announced (`mdns_host`, as registered), then every address the HTTP listeners
/// are bound to (a wildcard stands for the `interfaces`' usable addresses, as for TURN).
pub fn setup_urls(config: &Config, mdns_host: Option<&str>, interfaces: &[IpAddr]) -> Vec<String> {
    let port = |p: u16| {
        if p == 80 {
            String::new()
        } else {
            format!(":{p}")
        }
    };
    let first_port = config.listen.http.first().map_or(80, |a| a.port());
    let mut urls = Vec::new();
    if let Some(host) = mdns_host {
        let host = host.trim_end_matches('.');
        urls.push(format!("http://{host}{}/admin/", port(first_port)));
    }
    for addr in crate::turn::listen_addresses(&config.listen.http, interfaces) {
        let url = match addr.ip() {
            IpAddr::V4(ip) => format!("http://{ip}{}/admin/", port(addr.port())),
            IpAddr::V6(ip) => format!("http://[{ip}]{}/admin/", port(addr.port())),
        };
        if !urls.contains(&url) {
            urls.push(url);
        }
    }
    urls
}

/// How often the chart totals are sampled.
const STATS_EVERY: Duration = Duration::from_secs(600);

/// Start the appliance for `config`: admin state and setup code (printed on the
/// console while unclaimed), the LED and button from the config, the mDNS name, and
/// the chart sampler. Hardware that cannot be opened is logged and left out: the relay
/// runs without its LED rather than not at all.
pub fn start(config: Config, config_path: Option<PathBuf>) -> Result<Running, ApplianceError> {
    let (led, button) = match hw::open(&config.appliance) {
        Ok(hw) => hw,
        Err(e) => {
            tracing::error!("LED/button: {e}");
            eprintln!("relaybox: LED/button: {e}");
            (None, None)
        }
    };
    let appliance = Appliance::new(config.clone(), config_path, button.is_some())?;
    let mut tasks = Vec::new();
    if let Some(led) = led {
        tasks.push(tokio::spawn(led::run(led, appliance.led_patterns())));
    }
    if let Some(mut button) = button {
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let state_dir = config.data_dir.join("update");
        tasks.push(tokio::spawn(async move {
            // BOOT-6: held at power-on → the other slot (when good), before anything else.
            updates::recover_if_held(button.as_mut(), &state_dir).await;
            button::watch(button, tx).await
        }));
        let a = appliance.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                a.on_button(event);
            }
        }));
    }
    {
        // The LED follows the update agent's busy flag.
        let a = appliance.clone();
        let mut busy = appliance.update.busy_watch();
        tasks.push(tokio::spawn(async move {
            while busy.changed().await.is_ok() {
                a.refresh_led();
            }
        }));
    }
    {
        let a = appliance.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(STATS_EVERY);
            loop {
                tick.tick().await;
                a.sample_stats();
                // A queue that passes its hour shows on the LED without a page view.
                a.refresh_led();
            }
        }));
    }
    let mdns = if config.appliance.mdns_name.is_empty() {
        None
    } else {
        let port = config.listen.http.first().map(|a| a.port()).unwrap_or(80);
        match mdns::announce(&config.appliance.mdns_name, port) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::warn!(
                    "mdns: cannot announce {}.local: {e}",
                    config.appliance.mdns_name
                );
                None
            }
        }
    };
    // After the mDNS announcement: the banner names `<name>.local` only when announced.
    let code = appliance.setup_code();
    if code.is_some() {
        let urls = if config.setup {
            let wildcard = config.listen.http.iter().any(|a| a.ip().is_unspecified());
            let interfaces = if wildcard {
                crate::turn::interface_addresses()
            } else {
                Vec::new()
            };
            setup_urls(&config, mdns.as_ref().map(|m| m.hostname()), &interfaces)
        } else {
            Vec::new()
        };
        if let Some(banner) = setup_banner(&config, code.as_deref(), &urls) {
            // In setup mode the console is where the owner of a box without a button
            // finds the code; a configured relay keeps stderr quiet (LOG-1).
            if config.setup && !config.log_stderr {
                eprintln!("relaybox: {banner}");
            }
            tracing::info!("{banner}");
        }
    }
    Ok(Running {
        appliance,
        tasks,
        mdns,
    })
}

impl Appliance {
    /// What the button means: a short press confirms a claim; a 10-second hold resets
    /// the box to its factory state (README: "Factory reset").
    pub fn on_button(&self, event: button::ButtonEvent) {
        match event {
            button::ButtonEvent::ShortPress => self.button_pressed(),
            button::ButtonEvent::HoldCountdown { seconds_left } => {
                self.reset_countdown(seconds_left)
            }
            button::ButtonEvent::HoldCancelled => {
                tracing::info!("button released: factory reset cancelled");
                self.refresh_led();
            }
            button::ButtonEvent::FactoryReset => {
                tracing::warn!("button held 10 s: factory reset");
                let config = self.config();
                if let Err(e) = reset::wipe(self.config_path.as_deref(), &config.data_dir) {
                    tracing::error!("{e}");
                    self.pattern.send_replace(LedPattern::Error);
                    return;
                }
                let err = reset::restart();
                tracing::error!("factory reset: cannot restart: {err}");
                self.pattern.send_replace(LedPattern::Error);
            }
        }
    }
}
