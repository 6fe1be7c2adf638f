//! The contract between the pages and the daemon: everything the wizard and the status
//! page read or change goes through [`Backend`], which the daemon implements
//! (`relaybox::appliance`). The types here are plain data so the crate depends on no
//! other workspace crate and its tests can use a fake backend.

use std::future::Future;
use std::net::IpAddr;

/// Where the box is in its life; decides which page `/admin/` sends a visitor to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No admin password yet: the first visitor must prove presence (claim).
    Unclaimed,
    /// Claimed (password set) but no `mail_domain`: the daemon runs in setup mode.
    NeedDomain,
    /// `mail_domain` set: the relay runs; the remaining wizard steps and the status page.
    Configured,
}

/// Facts every page needs; cheap to get (no I/O).
#[derive(Debug, Clone)]
pub struct Overview {
    pub phase: Phase,
    /// `mail_domain` when configured (`chat.example.org`, `_x.test`, `192.0.2.1`).
    pub domain: Option<String>,
    /// True when the relay runs in IP-only mode.
    pub ip_only: bool,
    /// True when a physical button can prove presence; false → only the setup code.
    pub has_button: bool,
    /// Where the setup code can be read ("the boot partition (file setup-code.txt)",
    /// "/var/lib/relaybox/setup-code", …), shown on the claim page.
    pub setup_code_location: String,
    /// Daemon version, shown in the footer and the status page.
    pub version: String,
}

/// The presence-proof window opened by a visitor (claim by button).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimWindow {
    /// No window open.
    Closed,
    /// Open for `seconds_left` more seconds, opened by the visitor holding `ticket`.
    Open { ticket: String, seconds_left: u64 },
    /// The button was pressed inside the window opened with `ticket`.
    Pressed { ticket: String },
}

/// The operator's choice on the domain step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainChoice {
    /// A DNS name the operator controls (ACME certificate, DKIM).
    Domain(String),
    /// IP-only mode on this IPv4 address (self-signed, no DKIM, addresses `user@[ip]`).
    IpOnly(String),
}

/// An input the daemon refused, with a message for the person who typed it
/// (says what is wrong and what is expected). `field` names the form field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub field: &'static str,
    pub message: String,
}

/// Status of one check (spec appliance.md WIZ-1, WIZ-2). `Unknown` means "could not
/// check" and is never shown as wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    Ok,
    Warning,
    Error,
    Unknown,
}

impl CheckStatus {
    /// Stable lower-case name, used in `data-status` attributes and CSS classes.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Ok => "ok",
            CheckStatus::Warning => "warning",
            CheckStatus::Error => "error",
            CheckStatus::Unknown => "unknown",
        }
    }
}

/// One structured check result (WIZ-1): stable id (`dns.mx`, `port.25.outbound`, …),
/// status, a one-line summary, optional details, and the expected and found values
/// where they apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub id: String,
    pub status: CheckStatus,
    pub summary: String,
    pub details: Option<String>,
    pub expected: Option<String>,
    pub found: Option<String>,
}

/// One DNS record the operator must (or should) create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    /// Id of the check that verifies it (`dns.mx`, …).
    pub id: String,
    /// Absolute owner name with trailing dot.
    pub name: String,
    /// `A`, `AAAA`, `MX`, `CNAME`, `TXT`, `SRV`, `CAA`.
    pub kind: String,
    /// Record data as in a zone file.
    pub value: String,
    pub required: bool,
    /// Why it is there, one short sentence.
    pub note: String,
}

/// The certificate as the pages show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// "self-signed", "acme", "external" ("none" before the relay runs).
    pub source: String,
    /// Who issued the served certificate, for people: the issuer's organisation and
    /// common name (`Let's Encrypt (R11)`); empty when unknown.
    pub issuer: String,
    /// The certificate names itself as its issuer (no authority vouches for it).
    pub self_signed: bool,
    /// Names the certificate covers.
    pub names: Vec<String>,
    /// Expiry as Unix seconds (UTC), if known.
    pub not_after: Option<u64>,
    /// Whether ACME can be used in this mode (a DNS name, no external certificate).
    pub acme_possible: bool,
    pub progress: AcmeProgress,
}

/// What the certificate request is doing (shown with a refreshing page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcmeProgress {
    Idle,
    /// Running; `step` is a plain-language line ("asking the CA for an order", …).
    Running {
        step: String,
    },
    /// The last attempt failed; `reason` says what to do in plain language.
    Failed {
        reason: String,
    },
    /// Obtained; the listeners use it.
    Done,
}

/// The first account's invitation: the `DCACCOUNT:` link and its QR code as SVG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    pub url: String,
    pub qr_svg: String,
    /// Upstream 1.12's `DCACCOUNT:<domain>` (the app makes up the address and password
    /// itself, no request to `/new`): domain relays whose sign-up takes it; `None`
    /// otherwise (IP-only and self-signed relays, invite-only or closed sign-up).
    pub domain_code: Option<String>,
    /// Sign-up does not take this code (`closed`, or `invite`: codes come with an invite):
    /// what the page says instead of showing it.
    pub not_open: Option<String>,
}

/// Health of one service on the status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceHealth {
    pub name: String,
    pub status: CheckStatus,
    pub detail: String,
}

/// One value per day for a small chart (oldest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailySeries {
    pub title: String,
    pub unit: String,
    /// (day as `YYYY-MM-DD`, value)
    pub points: Vec<(String, u64)>,
}

/// Update state for the status page (filled by the OTA updater; "not configured" until
/// then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateInfo {
    /// "up to date (version 1.2, build 43)", "downloading 45 %", "installing 10 %", …
    pub state: String,
    /// The last failure with its reason (OTA-6), also from earlier boots.
    pub last_error: Option<String>,
    /// Unix seconds of the last look at the update server.
    pub last_check: Option<u64>,
    /// Downloading or installing right now (the page refreshes itself while true).
    pub busy: bool,
    /// Updates can be installed on this machine (an A/B image); without it the page shows
    /// the state only, without the "update now" and upload forms.
    pub available: bool,
}

/// Everything on the status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub services: Vec<ServiceHealth>,
    pub certificate: CertificateInfo,
    pub dns: Vec<Check>,
    pub queue_rows: u64,
    pub accounts: u64,
    pub storage_bytes: u64,
    pub storage_free_bytes: Option<u64>,
    /// Bytes written on the last full day (`None` before one has passed).
    pub bytes_written_per_day: Option<u64>,
    /// Bytes written today so far.
    pub bytes_written_today: Option<u64>,
    pub version: String,
    pub update: UpdateInfo,
    /// Recent warnings and errors from the in-memory log, newest last.
    pub recent_errors: Vec<String>,
    /// One series per chart; the last point is today so far (the figures are taken
    /// when the status is asked for).
    pub charts: Vec<DailySeries>,
    /// Unix seconds since when the charts count (kept in memory: the daemon's first
    /// sample after its start); `None` before that.
    pub charts_since: Option<u64>,
}

/// Issue 18: who may create accounts on the relay (its `signup` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignUpMode {
    /// Anyone.
    Open,
    /// No new accounts; existing ones keep working.
    Closed,
    /// Only with an invite made on these pages.
    Invite,
    /// Not the accounts Delta Chat's automatic relay selection makes.
    NoAutomatic,
}

impl SignUpMode {
    /// Every mode, in the order the page offers them.
    pub const ALL: [SignUpMode; 4] = [
        SignUpMode::Open,
        SignUpMode::Closed,
        SignUpMode::Invite,
        SignUpMode::NoAutomatic,
    ];

    /// The value in forms and in chatmail.ini.
    pub fn as_str(self) -> &'static str {
        match self {
            SignUpMode::Open => "open",
            SignUpMode::Closed => "closed",
            SignUpMode::Invite => "invite",
            SignUpMode::NoAutomatic => "no-automatic",
        }
    }

    /// The mode a form value names.
    pub fn parse(value: &str) -> Option<SignUpMode> {
        SignUpMode::ALL.into_iter().find(|m| m.as_str() == value)
    }
}

/// Whether an invite can still create accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteState {
    Usable,
    Expired,
    UsedUp,
    Revoked,
}

/// One sign-up invite as the pages list it (its token only in [`Backend::invite_link`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignUpInvite {
    /// Public id (hex), names the invite in forms and links.
    pub id: String,
    /// The admin's note.
    pub label: String,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds.
    pub expires: u64,
    pub max_uses: u32,
    pub uses: u32,
    pub state: InviteState,
}

/// The sign-up section: the mode and the invites, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignUpInfo {
    pub mode: SignUpMode,
    pub invites: Vec<SignUpInvite>,
    /// A mode change is written to the config file (false: the relay runs without
    /// one, and a change lasts until it restarts).
    pub persisted: bool,
    /// `dclogin:` invites (self-signed relays): each code shown makes one account.
    pub per_person: bool,
}

/// The outbound queue's messages for one destination domain (issue 18).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDomain {
    /// `example.org` or an address literal `[192.0.2.1]`.
    pub domain: String,
    /// Messages waiting for it.
    pub messages: u64,
    /// The most attempts any of them had.
    pub attempts: u32,
    /// The earliest next attempt, Unix seconds.
    pub next_retry: u64,
    /// When the oldest was accepted, Unix seconds.
    pub oldest: u64,
    /// The last error in plain words (empty before a failed attempt).
    pub last_error: String,
}

/// Issue 20: the front server as the wizard's front page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontInfo {
    /// Why no front server can be set up here (the relay does not run yet, no config
    /// file); `None` when it can.
    pub unavailable: Option<String>,
    /// The front server this relay is reached through: the `host:port` of its tunnel.
    pub current: Option<String>,
    /// Its public address, where the domain's A record points.
    pub address: Option<String>,
    /// The box's connection to it is up right now.
    pub connected: bool,
    pub pairing: FrontPairing,
}

/// The pairing with a front server by a one-time code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontPairing {
    /// Nothing under way.
    Idle,
    /// The box tries to pair with `front` (every few seconds) until `seconds_left` ran
    /// out; `command` is what to run on the front server (with the one-time code).
    Waiting {
        front: String,
        command: String,
        seconds_left: u64,
    },
    /// The last pairing with `front` failed: why, in plain words.
    Failed { front: String, reason: String },
    /// Paired with `front` (in this run of the daemon): the relay uses it now.
    Paired { front: String },
}

/// What the daemon does for the pages. Methods that may do network or disk I/O are
/// async; all others must be cheap.
pub trait Backend: Send + Sync + 'static {
    fn overview(&self) -> Overview;

    /// Secret key for signing session cookies and CSRF tokens (32 random bytes kept by
    /// the daemon; changes when the admin password changes, which ends every session).
    fn session_key(&self) -> Vec<u8>;

    /// The names of this box a `Host:` header may carry for the admin pages besides IP
    /// literals and `localhost` ([`crate::host`]): its mDNS name and `mail_domain`.
    fn box_names(&self) -> Vec<String> {
        let mut names = vec!["relaybox.local".to_string()];
        names.extend(self.overview().domain);
        names
    }

    /// Whether admin pages answer this client (default: LAN and loopback only,
    /// see [`crate::is_lan`]).
    fn admin_client_allowed(&self, ip: IpAddr) -> bool {
        crate::is_lan(ip)
    }

    /// Open a claim window for a visitor (the LED signals it). While one is open, a
    /// second visitor gets the same window's state without its ticket.
    fn open_claim_window(&self) -> ClaimWindow;
    /// The current window.
    fn claim_window(&self) -> ClaimWindow;
    /// True when `code` is the one-time setup code (constant-time compare).
    fn check_setup_code(&self, code: &str) -> bool;

    /// Set the admin password once a visitor has proven presence (claim), or change it
    /// when logged in. Validates length and returns a message when refused.
    fn set_admin_password(
        &self,
        password: &str,
    ) -> impl Future<Output = Result<(), InputError>> + Send;
    fn check_admin_password(&self, password: &str) -> impl Future<Output = bool> + Send;

    /// Validate and apply the domain choice: the config is written atomically and the
    /// relay (re)starts with it; on error nothing changed.
    fn set_domain(
        &self,
        choice: DomainChoice,
    ) -> impl Future<Output = Result<(), InputError>> + Send;

    /// The records to create (empty in IP-only mode).
    fn dns_records(&self) -> Vec<DnsRecord>;
    /// The same as a zone file.
    fn zone_file(&self) -> String;
    /// Live checks against the authoritative servers.
    fn dns_checks(&self) -> impl Future<Output = Vec<Check>> + Send;
    /// Port forwarding checks that can be made from inside (outbound 25, public address).
    fn port_checks(&self) -> impl Future<Output = Vec<Check>> + Send;
    /// Whether the TURN server runs (its UDP port 3478 is then one to forward).
    fn turn_enabled(&self) -> bool {
        true
    }

    /// Issue 20: the front server in use and the pairing with one.
    fn front(&self) -> FrontInfo {
        FrontInfo {
            unavailable: Some("A front server cannot be set up here.".into()),
            current: None,
            address: None,
            connected: false,
            pairing: FrontPairing::Idle,
        }
    }
    /// Why this box may need a front server, judged from the port step's `checks` and
    /// what the box knows of its own addresses: one plain sentence per reason (no
    /// public IPv4 address, the domain not pointing at this box's public address, port
    /// 25 blocked); empty when nothing points that way or a front is in use.
    fn front_advice(&self, checks: &[Check]) -> Vec<String> {
        let _ = checks;
        Vec::new()
    }
    /// Start pairing with the front server at `address` (an IP address or a host name,
    /// optionally `:port` of its tunnel; a name is looked up now): a new one-time code,
    /// tried in the background ([`FrontInfo::pairing`]); an earlier attempt is given up. `Err` for the field
    /// `front` when the address is not one, or when no pairing can start here.
    fn front_pair(&self, address: &str) -> impl Future<Output = Result<(), InputError>> + Send {
        let _ = address;
        async {
            Err(InputError {
                field: "front",
                message: "A front server cannot be set up here.".into(),
            })
        }
    }
    /// Stop waiting for a pairing (the code is not tried any more).
    fn front_cancel(&self) {}
    /// "Move off the front server": its keys leave the config and the relay stops using
    /// it at once. `Err` with a plain-language reason, nothing changed.
    fn front_leave(&self) -> impl Future<Output = Result<(), String>> + Send {
        async { Err("No front server is in use.".to_string()) }
    }

    fn certificate(&self) -> CertificateInfo;
    /// Start getting a certificate in the background; `Err` with a plain-language
    /// reason when it cannot start (e.g. IP-only mode).
    fn request_certificate(&self) -> Result<(), String>;

    /// The invitation for creating accounts.
    fn invite(&self) -> Option<Invite>;

    /// The file holding the admin password, which an operator without a reset button
    /// removes (then restarts the daemon) to claim the pages again with a new setup
    /// code; `None` when unknown (the pages then name it in general terms).
    fn admin_password_file(&self) -> Option<std::path::PathBuf> {
        None
    }

    fn status(&self) -> impl Future<Output = Status> + Send;

    /// "Update now" on the status page: look at the update server at once and install a
    /// newer version even outside the maintenance window. `Err` with a plain-language
    /// reason when it cannot start (no A/B slots, no update URL, an update already running).
    fn update_now(&self) -> Result<(), String>;
    /// Where an uploaded bundle is to be written (a fresh path on the data partition, its
    /// directory exists) and the largest size accepted in bytes. The pages create the
    /// file (refusing to overwrite one that exists), stream the upload into it with the
    /// cap enforced, and remove it on any failure. `Err` with a plain-language reason when
    /// no upload can be taken now.
    fn upload_target(&self) -> Result<(std::path::PathBuf, u64), String>;
    /// Verify and install the bundle the pages saved at `path`, in the background (progress
    /// and failures in `status().update`; the machine reboots into the new version when it
    /// installed). With `Ok` the file is the backend's, removed afterwards in every case;
    /// with `Err` (it cannot start, plain-language reason) the pages remove it.
    fn install_upload(&self, path: std::path::PathBuf) -> Result<(), String>;

    /// Issue 18: the sign-up mode and the invites; `None` while the relay does not run.
    fn signup(&self) -> Option<SignUpInfo> {
        None
    }
    /// Change the sign-up mode (written to the config file, then used by the running
    /// relay); `Err` with a plain-language reason when it could not be changed.
    fn set_signup_mode(&self, mode: SignUpMode) -> Result<(), String> {
        let _ = mode;
        Err("The relay is not running.".into())
    }
    /// Make an invite valid for `valid_days` days and `uses` accounts; its id.
    fn create_invite(
        &self,
        valid_days: u64,
        uses: u32,
        label: &str,
    ) -> impl Future<Output = Result<String, String>> + Send {
        let _ = (valid_days, uses, label);
        async { Err("The relay is not running.".to_string()) }
    }
    /// Revoke the invite `id`.
    fn revoke_invite(&self, id: &str) -> impl Future<Output = Result<(), String>> + Send {
        let _ = id;
        async { Err("The relay is not running.".to_string()) }
    }
    /// The link and QR code of the invite `id` (a fresh `dclogin:` link each time on a
    /// self-signed relay); `None` when there is no such invite.
    fn invite_link(&self, id: &str) -> Option<Invite> {
        let _ = id;
        None
    }
    /// The outbound queue by destination domain, the oldest-waiting first (issue 18).
    /// `Err` with a plain-language reason when it cannot be read (no relay yet).
    fn queue(&self) -> impl Future<Output = Result<Vec<QueueDomain>, String>> + Send {
        async { Err("The queue is not available here.".to_string()) }
    }
    /// "Retry now" for `domain`: its messages are tried at once. The number of messages,
    /// or a plain-language reason (an unknown domain) with nothing changed.
    fn queue_retry(&self, domain: &str) -> impl Future<Output = Result<u64, String>> + Send {
        let _ = domain;
        async { Err("The queue is not available here.".to_string()) }
    }
    /// "Give up (bounce)" for `domain`: its messages leave the queue and each sender gets
    /// a bounce, durably before this returns. The number of messages, or a
    /// plain-language reason with nothing changed.
    fn queue_bounce(&self, domain: &str) -> impl Future<Output = Result<u64, String>> + Send {
        let _ = domain;
        async { Err("The queue is not available here.".to_string()) }
    }
    /// "Download a diagnostic report" (issue 18 item 5): the report as plain text (version,
    /// config without secrets, every service and check, queue, storage, recent log lines;
    /// no addresses, IP addresses or secrets) and the file name to save it under.
    fn diagnostic_report(&self) -> impl Future<Output = (String, String)> + Send;
    /// A page of the relay's accounts with their figures (issue 18 item 3). `Err` with a
    /// plain-language reason (e.g. the relay does not run yet).
    fn accounts(
        &self,
        query: AccountQuery,
    ) -> impl Future<Output = Result<AccountList, String>> + Send;
    /// A page of the blocked addresses.
    fn blocked_addresses(
        &self,
        query: AccountQuery,
    ) -> impl Future<Output = Result<BlockedList, String>> + Send;
    /// Delete an account and its messages for good; `Ok` with the confirmation to show,
    /// `Err` with the reason nothing was done.
    fn delete_account(
        &self,
        address: String,
    ) -> impl Future<Output = Result<String, String>> + Send;
    /// Block an address (an account with it is deleted); as [`Backend::delete_account`].
    fn block_address(&self, address: String)
    -> impl Future<Output = Result<String, String>> + Send;
    /// Lift the block of an address; as [`Backend::delete_account`].
    fn unblock_address(
        &self,
        address: String,
    ) -> impl Future<Output = Result<String, String>> + Send;

    /// "Restore from a backup" in the wizard (issue 17 item 3; setup mode only): where
    /// an uploaded backup file is to be written (a fresh path in the data directory) and
    /// the largest size accepted, as [`Backend::upload_target`]. `Err` with a
    /// plain-language reason when no restore can be taken now (not in setup mode, too
    /// little free space).
    fn restore_upload_target(&self) -> Result<(std::path::PathBuf, u64), String> {
        Err("Restoring is not available here.".to_string())
    }
    /// The pages saved a complete upload at `path`: read its header. `Ok`: the file is the
    /// backend's, waiting for [`Backend::restore_backup`] (an earlier one waiting is
    /// dropped). `Err` (not a backup, one from a newer version): the reason in plain
    /// words, and the pages remove the file.
    fn restore_uploaded(&self, path: std::path::PathBuf) -> Result<BackupInfo, String> {
        let _ = path;
        Err("Restoring is not available here.".to_string())
    }
    /// The uploaded backup waiting for its passphrase, if any.
    fn restore_pending(&self) -> Option<BackupInfo> {
        None
    }
    /// Forget the waiting upload (its file is removed).
    fn restore_cancel(&self) {}
    /// Restore the waiting upload with `passphrase`: the relay comes back as it was and
    /// the daemon switches to it (its admin password too: the one of the backup). `Ok`
    /// with the restored mail domain; `Err` with the reason in plain words and nothing
    /// changed (a wrong passphrase keeps the upload waiting for another try).
    fn restore_backup(
        &self,
        passphrase: String,
    ) -> impl Future<Output = Result<String, String>> + Send {
        let _ = passphrase;
        async { Err("Restoring is not available here.".to_string()) }
    }
    /// "Download a backup now" (issue 17 item 2): make a backup of the running relay,
    /// encrypted with `passphrase`, with the mailboxes and the queue when `messages`,
    /// into a fresh file. `Ok`: the file (the pages stream it and remove it) and the name
    /// to save it under; `Err` with a plain-language reason, no file left behind.
    fn backup_now(
        &self,
        passphrase: String,
        messages: bool,
    ) -> impl Future<Output = Result<BackupFile, String>> + Send {
        let _ = (passphrase, messages);
        async { Err("Backups are not available here.".to_string()) }
    }
    /// The automatic backups: settings, whether a passphrase is set, the last result and
    /// the next run (issue 17 item 2). Cheap.
    fn backups(&self) -> BackupsInfo {
        BackupsInfo::default()
    }
    /// Set the automatic backups' passphrase (kept in a file only root can read);
    /// refused with a message for the field.
    fn set_backup_passphrase(
        &self,
        passphrase: String,
    ) -> impl Future<Output = Result<(), InputError>> + Send {
        let _ = passphrase;
        async {
            Err(InputError {
                field: "passphrase",
                message: "Automatic backups are not available here.".into(),
            })
        }
    }
    /// Where, how often, how many: written into chatmail.ini and in effect at once; on
    /// error nothing changed.
    fn set_backup_settings(
        &self,
        settings: BackupSettings,
    ) -> impl Future<Output = Result<(), InputError>> + Send {
        let _ = settings;
        async {
            Err(InputError {
                field: "target",
                message: "Automatic backups are not available here.".into(),
            })
        }
    }
    /// Make an automatic backup now (into the chosen place), in the background.
    fn auto_backup_now(&self) -> Result<(), String> {
        Err("Automatic backups are not available here.".into())
    }
}

/// What a backup file says about itself, readable without its passphrase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    /// The relay's mail domain (empty: made in setup mode).
    pub domain: String,
    /// When it was made, Unix seconds.
    pub created: u64,
    /// Whether the mailboxes and the outbound queue are inside.
    pub messages: bool,
    /// The Relaybox version that made it.
    pub version: String,
}

/// A backup made for download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFile {
    pub path: std::path::PathBuf,
    /// `relaybox-<domain>-<date>.backup`.
    pub name: String,
}

/// Which page of accounts or blocked addresses: those after `after` (by address) that
/// contain `search`, at most `limit`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountQuery {
    pub after: Option<String>,
    pub search: Option<String>,
    pub limit: u32,
}

/// One account on the "Accounts" page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSummary {
    pub address: String,
    /// Unix seconds; `None` when not known (accounts made by older versions).
    pub created: Option<u64>,
    /// Unix seconds of the day of the last login.
    pub last_login_day: u64,
    pub storage_bytes: u64,
    /// Messages stored for the account (waiting to be fetched).
    pub messages: u64,
}

/// A page of accounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountList {
    pub accounts: Vec<AccountSummary>,
    /// Accounts on the relay in all.
    pub total: u64,
    /// More follow after the last one.
    pub more: bool,
}

/// A page of blocked addresses: (address, Unix seconds of the block).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockedList {
    pub blocked: Vec<(String, u64)>,
    pub total: u64,
    pub more: bool,
}

/// The "Backups" section of the status page (issue 17 item 2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupsInfo {
    /// Automatic backups can be set up here (false: the section says so, no forms).
    pub available: bool,
    /// Where they go: `off`, `usb` or `dir`.
    pub target: String,
    /// The directory when `target` is `dir`.
    pub dir: String,
    /// How often, as in chatmail.ini (`1d`, `12h`).
    pub every: String,
    pub keep: u32,
    /// Mailboxes and queue inside.
    pub messages: bool,
    pub passphrase_set: bool,
    /// Why no automatic backups are made (off, no passphrase), in plain words.
    pub off_reason: Option<String>,
    pub last: Option<BackupResult>,
    /// Unix seconds of the next one.
    pub next: Option<u64>,
    /// One is being written now.
    pub running: bool,
}

/// The last automatic backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupResult {
    /// Unix seconds.
    pub at: u64,
    /// Where it was written (on success).
    pub file: String,
    pub bytes: u64,
    /// The failure in plain words (empty on success).
    pub error: String,
}

/// The settings form of the "Backups" section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupSettings {
    /// `off`, `usb` or `dir`.
    pub target: String,
    pub dir: String,
    pub every: String,
    pub keep: String,
    pub messages: bool,
}
