//! Router tests with a fake [`Backend`]: phase redirects, claim by code and by button,
//! password and session cookies, CSRF, the LAN gate, the guessing slowdown (paused
//! tokio time), rendering of odd data (WIZ-2, WIZ-3), and updates by hand: "update
//! now" and the streamed bundle upload with its CSRF, size cap and clean-up (issue #7).
//! The status, password and login page tests of issue 16 are in [`status`], on the same
//! fake and browser.

mod accounts;
mod backups;
mod front;
mod queue;
mod restore;
mod signup;
mod status;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::*;

const CODE: &str = "ABCD-1234";
const PASSWORD: &str = "correct horse battery";

/// Fake daemon: records the calls that change something.
struct Fake {
    phase: Mutex<Phase>,
    has_button: bool,
    key: Mutex<Vec<u8>>,
    window: Mutex<ClaimWindow>,
    /// What `open_claim_window` returns.
    opens: Mutex<ClaimWindow>,
    password: Mutex<Option<String>>,
    domain: Mutex<Option<String>>,
    ip_only: Mutex<bool>,
    /// What `turn_enabled` says.
    turn: Mutex<bool>,
    calls: Mutex<Vec<String>>,
    /// Strings with HTML and huge values in every field.
    odd: bool,
    /// Empty lists everywhere.
    empty: bool,
    cert: Mutex<CertificateInfo>,
    cert_request: Mutex<Result<(), String>>,
    qr_svg: Mutex<String>,
    /// What `status().update` says.
    update: Mutex<UpdateInfo>,
    /// Refusals of `update_now`, `upload_target` and `install_upload` by method name.
    refusals: Mutex<HashMap<&'static str, String>>,
    /// Where `upload_target` puts uploads.
    upload_dir: tempfile::TempDir,
    /// The cap `upload_target` returns.
    upload_cap: Mutex<u64>,
    /// Paths given to `install_upload`, with the bytes in the file at that moment.
    installed: Mutex<Vec<(PathBuf, Vec<u8>)>>,
    /// What `admin_password_file` returns.
    password_file: Option<PathBuf>,
    /// Where the overview says the setup code is.
    code_location: &'static str,
    /// What `status` returns instead of its made-up figures, when set.
    status: Mutex<Option<Status>>,
    /// Issue 18: the sign-up mode and invites (`None`: the relay does not run).
    signup: Mutex<Option<SignUpInfo>>,
    /// The outbound queue `queue` lists; `queue_retry` and `queue_bounce` act on it.
    queue: Mutex<Vec<QueueDomain>>,
    /// What `invite` says instead of a code (sign-up closed or by invite).
    not_open: Mutex<Option<String>>,
    /// The relay's accounts and blocked addresses (the accounts page).
    accounts: Mutex<Vec<AccountSummary>>,
    blocked: Mutex<Vec<(String, u64)>>,
    /// The wizard's restore and the status page's backup ([`restore`]).
    backups: Mutex<restore::FakeBackups>,
    /// The automatic backups the section shows; the settings and passphrase forms change it.
    auto_backups: Mutex<BackupsInfo>,
    /// Issue 20: the front server ([`front`]); `front_pair` and the others change it.
    front: Mutex<FrontInfo>,
    /// What `front_advice` says (the checks it was given are recorded in `calls`).
    front_advice: Mutex<Vec<String>>,
}

const EVIL: &str = "<script>alert(1)</script><b onmouseover=x>\"'&";

impl Fake {
    fn new(phase: Phase) -> Self {
        Fake {
            phase: Mutex::new(phase),
            has_button: true,
            key: Mutex::new(b"key-1".to_vec()),
            window: Mutex::new(ClaimWindow::Closed),
            opens: Mutex::new(ClaimWindow::Open {
                ticket: "T1".into(),
                seconds_left: 60,
            }),
            password: Mutex::new((phase != Phase::Unclaimed).then(|| PASSWORD.to_string())),
            domain: Mutex::new(
                (phase == Phase::Configured).then(|| "chat.example.org".to_string()),
            ),
            ip_only: Mutex::new(false),
            turn: Mutex::new(true),
            calls: Mutex::new(Vec::new()),
            odd: false,
            empty: false,
            cert: Mutex::new(CertificateInfo {
                source: "self-signed".into(),
                issuer: "chat.example.org".into(),
                self_signed: true,
                names: vec!["chat.example.org".into()],
                not_after: Some(session::now_unix() + 40 * 86_400),
                acme_possible: true,
                progress: AcmeProgress::Idle,
            }),
            cert_request: Mutex::new(Ok(())),
            qr_svg: Mutex::new(
                "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 1 1\" \
                 role=\"img\" aria-label=\"QR code\"><path d=\"M0 0h1v1H0z\"/></svg>"
                    .into(),
            ),
            update: Mutex::new(UpdateInfo {
                state: "not configured".into(),
                last_error: Some("e".into()),
                last_check: None,
                busy: false,
                available: false,
            }),
            refusals: Mutex::default(),
            upload_dir: tempfile::tempdir().unwrap(),
            upload_cap: Mutex::new(10_000_000),
            installed: Mutex::new(Vec::new()),
            password_file: None,
            code_location: "the file setup-code.txt",
            status: Mutex::new(None),
            signup: Mutex::new(None),
            queue: Mutex::default(),
            not_open: Mutex::default(),
            accounts: Mutex::default(),
            blocked: Mutex::default(),
            backups: Mutex::default(),
            auto_backups: Mutex::default(),
            front: Mutex::new(FrontInfo {
                unavailable: None,
                current: None,
                address: None,
                connected: false,
                pairing: FrontPairing::Idle,
            }),
            front_advice: Mutex::default(),
        }
    }

    /// Change the set `status` (panics when none is set).
    fn edit_status(&self, edit: impl FnOnce(&mut Status)) {
        edit(
            self.status
                .lock()
                .unwrap()
                .as_mut()
                .expect("a status is set"),
        );
    }

    /// Files in the upload directory.
    fn uploads(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.upload_dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    /// Record a call of `method`; `Err` with its refusal when one is set.
    fn refusal(&self, method: &'static str) -> Result<(), String> {
        self.call(method);
        match self.refusals.lock().unwrap().get(method) {
            Some(r) => Err(r.clone()),
            None => Ok(()),
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn call(&self, c: &str) {
        self.calls.lock().unwrap().push(c.to_string());
    }

    /// The passwords given to `set_admin_password`, in order (refused ones too).
    fn passwords_set(&self) -> Vec<String> {
        self.calls()
            .iter()
            .filter_map(|c| c.strip_prefix("set_admin_password "))
            .map(String::from)
            .collect()
    }

    fn text(&self, normal: &str) -> String {
        if self.odd {
            format!("{EVIL}{}", "x".repeat(100_000))
        } else {
            normal.to_string()
        }
    }

    fn check(&self, id: &str, status: CheckStatus) -> Check {
        Check {
            id: id.into(),
            status,
            summary: self.text("summary"),
            details: Some(self.text("details")),
            expected: Some(self.text("expected")),
            found: if self.odd { Some(String::new()) } else { None },
        }
    }

    fn checks(&self) -> Vec<Check> {
        if self.empty {
            return Vec::new();
        }
        vec![
            self.check("dns.mx", CheckStatus::Ok),
            self.check("dns.dkim", CheckStatus::Error),
            self.check("dns.spf", CheckStatus::Warning),
            self.check("dns.caa", CheckStatus::Unknown),
        ]
    }
}

impl Backend for Fake {
    fn overview(&self) -> Overview {
        Overview {
            phase: *self.phase.lock().unwrap(),
            domain: if self.odd {
                Some(self.text("d"))
            } else {
                self.domain.lock().unwrap().clone()
            },
            ip_only: *self.ip_only.lock().unwrap(),
            has_button: self.has_button,
            setup_code_location: self.text(self.code_location),
            version: self.text("1.2.3"),
        }
    }

    fn session_key(&self) -> Vec<u8> {
        self.key.lock().unwrap().clone()
    }

    fn open_claim_window(&self) -> ClaimWindow {
        self.call("open_claim_window");
        let w = self.opens.lock().unwrap().clone();
        *self.window.lock().unwrap() = w.clone();
        w
    }

    fn claim_window(&self) -> ClaimWindow {
        self.window.lock().unwrap().clone()
    }

    fn check_setup_code(&self, code: &str) -> bool {
        self.call("check_setup_code");
        code == CODE
    }

    async fn set_admin_password(&self, password: &str) -> Result<(), InputError> {
        self.call(&format!("set_admin_password {password}"));
        if password.len() < 10 {
            return Err(InputError {
                field: "password",
                message: format!("At least 10 characters, please. {EVIL}"),
            });
        }
        *self.password.lock().unwrap() = Some(password.to_string());
        self.key.lock().unwrap().push(b'+');
        let mut phase = self.phase.lock().unwrap();
        if *phase == Phase::Unclaimed {
            *phase = Phase::NeedDomain;
        }
        Ok(())
    }

    async fn check_admin_password(&self, password: &str) -> bool {
        self.call("check_admin_password");
        self.password.lock().unwrap().as_deref() == Some(password)
    }

    async fn set_domain(&self, choice: DomainChoice) -> Result<(), InputError> {
        self.call("set_domain");
        let (d, ip) = match choice {
            DomainChoice::Domain(d) if d.contains(' ') => {
                return Err(InputError {
                    field: "domain",
                    message: format!("No spaces in a domain. {EVIL}"),
                });
            }
            DomainChoice::Domain(d) => (d, false),
            DomainChoice::IpOnly(ip) => (ip, true),
        };
        *self.domain.lock().unwrap() = Some(d);
        *self.ip_only.lock().unwrap() = ip;
        *self.phase.lock().unwrap() = Phase::Configured;
        Ok(())
    }

    fn dns_records(&self) -> Vec<DnsRecord> {
        if self.empty {
            return Vec::new();
        }
        vec![DnsRecord {
            id: "dns.dkim".into(),
            name: self.text("opendkim._domainkey.chat.example.org."),
            kind: "TXT".into(),
            value: self.text("\"v=DKIM1; k=rsa; p=MIIB\""),
            required: true,
            note: self.text("Signs outgoing mail."),
        }]
    }

    fn zone_file(&self) -> String {
        "chat.example.org. 3600 IN MX 10 chat.example.org.\n".into()
    }

    async fn dns_checks(&self) -> Vec<Check> {
        self.checks()
    }

    async fn port_checks(&self) -> Vec<Check> {
        if self.empty {
            return Vec::new();
        }
        vec![self.check("port.25.outbound", CheckStatus::Unknown)]
    }

    fn turn_enabled(&self) -> bool {
        *self.turn.lock().unwrap()
    }

    fn certificate(&self) -> CertificateInfo {
        let mut c = self.cert.lock().unwrap().clone();
        if self.odd {
            c.source = self.text("acme");
            c.names = vec![self.text("n")];
            c.not_after = Some(u64::MAX);
            c.progress = AcmeProgress::Failed {
                reason: self.text("r"),
            };
        }
        if self.empty {
            c.names.clear();
            c.not_after = None;
        }
        c
    }

    fn request_certificate(&self) -> Result<(), String> {
        self.call("request_certificate");
        self.cert_request.lock().unwrap().clone()
    }

    fn invite(&self) -> Option<Invite> {
        if self.empty {
            return None;
        }
        // IP-only (and `_name`) relays hand out a `dclogin:` link with one account's
        // fresh credentials; a domain relay the `DCACCOUNT:` link.
        let url = if *self.ip_only.lock().unwrap() {
            let n = self.calls.lock().unwrap().len();
            format!("dclogin:u{n}@[192.0.2.1]?p=secret{n}&v=1")
        } else {
            "DCACCOUNT:https://chat.example.org/new".to_string()
        };
        self.call("invite");
        let domain_code =
            (!*self.ip_only.lock().unwrap()).then(|| "DCACCOUNT:chat.example.org".into());
        Some(Invite {
            url: self.text(&url),
            qr_svg: self.qr_svg.lock().unwrap().clone(),
            domain_code,
            not_open: self.not_open.lock().unwrap().clone(),
        })
    }

    fn admin_password_file(&self) -> Option<PathBuf> {
        self.password_file.clone()
    }

    async fn status(&self) -> Status {
        if let Some(s) = self.status.lock().unwrap().clone() {
            return s;
        }
        let n = if self.empty { 0 } else { 3 };
        Status {
            services: (0..n)
                .map(|i| ServiceHealth {
                    name: self.text(&format!("svc{i}")),
                    status: [CheckStatus::Ok, CheckStatus::Unknown, CheckStatus::Error][i],
                    detail: self.text("fine"),
                })
                .collect(),
            certificate: self.certificate(),
            dns: self.checks(),
            queue_rows: u64::MAX,
            accounts: 7,
            storage_bytes: u64::MAX,
            storage_free_bytes: (!self.empty).then_some(0),
            bytes_written_per_day: (!self.empty).then_some(123_456),
            bytes_written_today: (!self.empty).then_some(1_000),
            version: self.text("1.2.3"),
            update: {
                let u = self.update.lock().unwrap().clone();
                UpdateInfo {
                    state: self.text(&u.state),
                    last_error: u.last_error.filter(|_| !self.empty).map(|e| self.text(&e)),
                    last_check: if self.odd {
                        Some(u64::MAX)
                    } else {
                        u.last_check
                    },
                    ..u
                }
            },
            recent_errors: (0..n * 40)
                .map(|i| self.text(&format!("err {i}")))
                .collect(),
            charts: if self.empty {
                vec![DailySeries {
                    title: "empty".into(),
                    unit: String::new(),
                    points: Vec::new(),
                }]
            } else {
                vec![DailySeries {
                    title: self.text("Messages"),
                    unit: self.text("msgs"),
                    points: vec![(self.text("2026-01-01"), 5), ("<i>".into(), u64::MAX)],
                }]
            },
            charts_since: None,
        }
    }

    fn update_now(&self) -> Result<(), String> {
        self.refusal("update_now")
    }

    fn upload_target(&self) -> Result<(PathBuf, u64), String> {
        self.refusal("upload_target")?;
        let n = self.calls().len();
        let path = self.upload_dir.path().join(format!("upload-{n}.bundle"));
        Ok((path, *self.upload_cap.lock().unwrap()))
    }

    fn install_upload(&self, path: PathBuf) -> Result<(), String> {
        let bytes = std::fs::read(&path).unwrap();
        self.installed.lock().unwrap().push((path, bytes));
        self.refusal("install_upload")
    }

    fn signup(&self) -> Option<SignUpInfo> {
        self.signup.lock().unwrap().clone()
    }

    fn set_signup_mode(&self, mode: SignUpMode) -> Result<(), String> {
        self.refusal("set_signup_mode")?;
        self.call(&format!("mode {}", mode.as_str()));
        if let Some(i) = self.signup.lock().unwrap().as_mut() {
            i.mode = mode;
        }
        Ok(())
    }

    async fn create_invite(
        &self,
        valid_days: u64,
        uses: u32,
        label: &str,
    ) -> Result<String, String> {
        self.refusal("create_invite")?;
        if uses == 0 {
            return Err(format!(
                "an invite may create 1 to 10000 accounts, not 0 {EVIL}"
            ));
        }
        let mut guard = self.signup.lock().unwrap();
        let info = guard.as_mut().ok_or("not running")?;
        let id = format!("{:016x}", info.invites.len() + 1);
        let now = session::now_unix();
        info.invites.push(SignUpInvite {
            id: id.clone(),
            label: label.to_string(),
            created: now,
            expires: now + valid_days * 86_400,
            max_uses: uses,
            uses: 0,
            state: InviteState::Usable,
        });
        Ok(id)
    }

    async fn revoke_invite(&self, id: &str) -> Result<(), String> {
        self.call(&format!("revoke {id}"));
        let mut guard = self.signup.lock().unwrap();
        let info = guard.as_mut().ok_or("not running")?;
        let i = info
            .invites
            .iter_mut()
            .find(|i| i.id == id)
            .ok_or(format!("no invite with id {id}"))?;
        i.state = InviteState::Revoked;
        Ok(())
    }

    fn invite_link(&self, id: &str) -> Option<Invite> {
        let n = self.calls.lock().unwrap().len();
        self.call(&format!("invite_link {id}"));
        let per_person = self.signup.lock().unwrap().as_ref()?.per_person;
        let url = if per_person {
            format!("dclogin:u{n}@[192.0.2.1]?p=inv.token{id}.secret{n}&v=1")
        } else {
            format!("DCACCOUNT:https://chat.example.org/new?invite=token{id}")
        };
        Some(Invite {
            url,
            qr_svg: self.qr_svg.lock().unwrap().clone(),
            domain_code: None,
            not_open: None,
        })
    }

    async fn queue(&self) -> Result<Vec<QueueDomain>, String> {
        Ok(self.queue.lock().unwrap().clone())
    }

    async fn queue_retry(&self, domain: &str) -> Result<u64, String> {
        self.call(&format!("queue_retry {domain}"));
        let mut queue = self.queue.lock().unwrap();
        let d = queue
            .iter_mut()
            .find(|d| d.domain == domain)
            .ok_or_else(|| format!("No mail for {domain} is waiting <here>."))?;
        d.next_retry = 0;
        Ok(d.messages)
    }

    async fn queue_bounce(&self, domain: &str) -> Result<u64, String> {
        self.call(&format!("queue_bounce {domain}"));
        let mut queue = self.queue.lock().unwrap();
        let i = queue
            .iter()
            .position(|d| d.domain == domain)
            .ok_or_else(|| format!("No mail for {domain} is waiting <here>."))?;
        Ok(queue.remove(i).messages)
    }

    async fn diagnostic_report(&self) -> (String, String) {
        self.call("diagnostic_report");
        (
            "# Relaybox diagnostic report\n".into(),
            self.text("relaybox-report-chat.example.org-2026-12-07.txt\r\n\"x"),
        )
    }

    async fn accounts(&self, query: AccountQuery) -> Result<AccountList, String> {
        self.call(&format!("accounts {query:?}"));
        let all = self.accounts.lock().unwrap().clone();
        let (page, more) = accounts::page(&all, |a| &a.address, &query);
        Ok(AccountList {
            accounts: page,
            total: all.len() as u64,
            more,
        })
    }

    async fn blocked_addresses(&self, query: AccountQuery) -> Result<BlockedList, String> {
        let all = self.blocked.lock().unwrap().clone();
        let (page, more) = accounts::page(&all, |b| &b.0, &query);
        Ok(BlockedList {
            blocked: page,
            total: all.len() as u64,
            more,
        })
    }

    async fn delete_account(&self, address: String) -> Result<String, String> {
        self.call(&format!("delete_account {address}"));
        let mut all = self.accounts.lock().unwrap();
        let before = all.len();
        all.retain(|a| a.address != address);
        if all.len() == before {
            return Err(format!("no account {address} on this relay {EVIL}"));
        }
        Ok(format!("deleted {address}"))
    }

    async fn block_address(&self, address: String) -> Result<String, String> {
        self.call(&format!("block_address {address}"));
        self.accounts
            .lock()
            .unwrap()
            .retain(|a| a.address != address);
        self.blocked.lock().unwrap().push((address.clone(), 86_400));
        Ok(format!("blocked {address}"))
    }

    async fn unblock_address(&self, address: String) -> Result<String, String> {
        self.call(&format!("unblock_address {address}"));
        self.blocked.lock().unwrap().retain(|b| b.0 != address);
        Ok(format!("unblocked {address}"))
    }

    fn restore_upload_target(&self) -> Result<(PathBuf, u64), String> {
        self.refusal("restore_upload_target")?;
        if *self.phase.lock().unwrap() != Phase::NeedDomain {
            return Err("not in setup mode".into());
        }
        let n = self.calls().len();
        let path = self.upload_dir.path().join(format!("restore-{n}.backup"));
        Ok((path, *self.upload_cap.lock().unwrap()))
    }

    fn restore_uploaded(&self, path: PathBuf) -> Result<BackupInfo, String> {
        self.call("restore_uploaded");
        restore::uploaded(self, path)
    }

    fn restore_pending(&self) -> Option<BackupInfo> {
        self.backups.lock().unwrap().pending.clone().map(|p| p.1)
    }

    fn restore_cancel(&self) {
        self.call("restore_cancel");
        if let Some((path, _)) = self.backups.lock().unwrap().pending.take() {
            let _ = std::fs::remove_file(path);
        }
    }

    async fn restore_backup(&self, passphrase: String) -> Result<String, String> {
        self.call(&format!("restore_backup {passphrase}"));
        restore::restore(self, &passphrase)
    }

    async fn backup_now(&self, passphrase: String, messages: bool) -> Result<BackupFile, String> {
        self.call(&format!("backup_now {passphrase} {messages}"));
        self.refusal("backup_now")?;
        let path = self.upload_dir.path().join("download.backup");
        std::fs::write(&path, restore::made_backup(&passphrase, messages)).unwrap();
        Ok(BackupFile {
            path,
            name: "relaybox-chat.example.org-2026-12-07.backup\r\n\"x".into(),
        })
    }

    fn backups(&self) -> BackupsInfo {
        self.auto_backups.lock().unwrap().clone()
    }

    async fn set_backup_passphrase(&self, passphrase: String) -> Result<(), InputError> {
        self.call(&format!("set_backup_passphrase {passphrase}"));
        if passphrase.len() < 10 {
            return Err(InputError {
                field: "passphrase",
                message: format!("Too short. {EVIL}"),
            });
        }
        self.auto_backups.lock().unwrap().passphrase_set = true;
        Ok(())
    }

    async fn set_backup_settings(&self, settings: BackupSettings) -> Result<(), InputError> {
        self.call(&format!("set_backup_settings {settings:?}"));
        let keep = settings.keep.parse().map_err(|_| InputError {
            field: "keep",
            message: format!("backup_keep: expected a whole number {EVIL}"),
        })?;
        let mut b = self.auto_backups.lock().unwrap();
        b.target = settings.target;
        b.dir = settings.dir;
        b.every = settings.every;
        b.keep = keep;
        b.messages = settings.messages;
        Ok(())
    }

    fn auto_backup_now(&self) -> Result<(), String> {
        self.refusal("backup_now")
    }

    fn front(&self) -> FrontInfo {
        self.front.lock().unwrap().clone()
    }

    fn front_advice(&self, checks: &[Check]) -> Vec<String> {
        let ids: Vec<&str> = checks.iter().map(|c| c.id.as_str()).collect();
        self.call(&format!("front_advice {}", ids.join(",")));
        self.front_advice.lock().unwrap().clone()
    }

    async fn front_pair(&self, address: &str) -> Result<(), InputError> {
        self.call(&format!("front_pair {address}"));
        front::pair(self, address)
    }

    fn front_cancel(&self) {
        self.call("front_cancel");
        self.front.lock().unwrap().pairing = FrontPairing::Idle;
    }

    async fn front_leave(&self) -> Result<(), String> {
        self.refusal("front_leave")?;
        let mut f = self.front.lock().unwrap();
        f.current.take().ok_or("no front")?;
        f.address = None;
        f.pairing = FrontPairing::Idle;
        Ok(())
    }
}

/// A browser: its address, scheme and cookie jar.
struct Browser {
    app: Router,
    addr: SocketAddr,
    https: bool,
    /// The `Host:` it sends (the box's mDNS name unless a test changes it).
    host: String,
    jar: HashMap<String, String>,
    /// The `Set-Cookie` values of the last response.
    last_set: Vec<String>,
}

struct Page {
    status: StatusCode,
    location: Option<String>,
    body: String,
    resp_headers: axum::http::HeaderMap,
}

impl Page {
    fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).expect("page has a csrf field") + marker.len();
        let end = self.body[start..].find('"').unwrap();
        self.body[start..start + end].to_string()
    }

    /// The text of the element with `id` (up to its first tag end).
    fn text_of(&self, id: &str) -> Option<&str> {
        let at = self.body.find(&format!("id=\"{id}\""))?;
        let start = at + self.body[at..].find('>')? + 1;
        let end = start + self.body[start..].find('<')?;
        Some(&self.body[start..end])
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Boundary of the test uploads.
const BOUNDARY: &str = "----relayboxTestBoundary7MA4";

/// A `multipart/form-data` body of `fields` in order: name, file name (for a file
/// field), content.
fn multipart(fields: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, file, data) in fields {
        let head = match file {
            Some(f) => format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; \
                 filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            ),
            None => {
                format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n")
            }
        };
        body.extend_from_slice(head.as_bytes());
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// `len` bytes that look like a bundle: every byte value, line breaks and pieces of the
/// boundary included.
fn bundle_bytes(len: usize) -> Vec<u8> {
    let mut x: u32 = 12345;
    let mut out: Vec<u8> = (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) as u8
        })
        .collect();
    let tricky = format!("\r\n--{}", &BOUNDARY[..20]);
    for at in [0, len / 3, len / 2] {
        if at + tricky.len() <= len {
            out[at..at + tricky.len()].copy_from_slice(tricky.as_bytes());
        }
    }
    out
}

/// A multipart upload request to `/admin/update/upload` (with a `Content-Length` when
/// `length` is true, as browsers send).
fn upload_request(body: Body, length: Option<usize>) -> Request<Body> {
    let mut req = Request::post("/admin/update/upload").header(
        header::CONTENT_TYPE,
        format!("multipart/form-data; boundary={BOUNDARY}"),
    );
    if let Some(n) = length {
        req = req.header(header::CONTENT_LENGTH, n);
    }
    req.body(body).unwrap()
}

impl Browser {
    fn new(fake: &Arc<Fake>) -> Self {
        Self::at(fake, "192.168.1.20:50000", false)
    }

    fn at(fake: &Arc<Fake>, addr: &str, https: bool) -> Self {
        Browser {
            app: router(fake.clone()),
            addr: addr.parse().unwrap(),
            https,
            host: "relaybox.local".into(),
            jar: HashMap::new(),
            last_set: Vec::new(),
        }
    }

    /// Another browser against the same router (same limiter state).
    fn sibling(&self, addr: &str) -> Self {
        Browser {
            app: self.app.clone(),
            addr: addr.parse().unwrap(),
            https: self.https,
            host: self.host.clone(),
            jar: HashMap::new(),
            last_set: Vec::new(),
        }
    }

    /// `req` as this browser sends it: from its address, with its cookies.
    fn prepare(&self, mut req: Request<Body>) -> Request<Body> {
        req.extensions_mut().insert(Client {
            addr: self.addr,
            https: self.https,
        });
        if !self.host.is_empty() && !req.headers().contains_key(header::HOST) {
            req.headers_mut()
                .insert(header::HOST, self.host.parse().unwrap());
        }
        if !self.jar.is_empty() {
            let cookie = self
                .jar
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            req.headers_mut()
                .insert(header::COOKIE, cookie.parse().unwrap());
        }
        req
    }

    async fn send(&mut self, req: Request<Body>) -> Page {
        let req = self.prepare(req);
        let resp: Response = self.app.clone().oneshot(req).await.unwrap();
        self.last_set.clear();
        for v in resp.headers().get_all(header::SET_COOKIE) {
            let v = v.to_str().unwrap().to_string();
            let (pair, _) = v.split_once(';').unwrap();
            let (k, val) = pair.split_once('=').unwrap();
            if v.contains("Max-Age=0;") {
                self.jar.remove(k);
            } else {
                self.jar.insert(k.to_string(), val.to_string());
            }
            self.last_set.push(v);
        }
        let status = resp.status();
        let location = resp
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_string());
        let resp_headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Page {
            status,
            location,
            body: String::from_utf8(body.to_vec()).unwrap(),
            resp_headers,
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = Request::get(path).body(Body::empty()).unwrap();
        self.send(req).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let req = Request::post(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        self.send(req).await
    }

    /// POST a multipart upload of `fields` to `/admin/update/upload`.
    async fn upload(&mut self, fields: &[(&str, Option<&str>, &[u8])], length: bool) -> Page {
        let body = multipart(fields);
        let len = length.then_some(body.len());
        self.send(upload_request(Body::from(body), len)).await
    }

    /// GET `page`, then POST its form to `action` with its CSRF token.
    async fn submit(&mut self, page: &str, action: &str, form: &[(&str, &str)]) -> Page {
        let p = self.get(page).await;
        assert_eq!(p.status, StatusCode::OK, "{page}: {}", p.body);
        let csrf = p.csrf();
        let mut full = vec![("csrf", csrf.as_str())];
        full.extend_from_slice(form);
        self.post(action, &full).await
    }

    async fn login(&mut self) {
        let p = self.login_with(PASSWORD).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
        assert!(self.jar.contains_key("rb_session"));
    }

    /// Submit the login form with `password`.
    async fn login_with(&mut self, password: &str) -> Page {
        self.submit("/admin/login", "/admin/login", &[("password", password)])
            .await
    }

    /// Submit the password form: `current`, then `new` twice.
    async fn change_password(&mut self, current: &str, new: &str) -> Page {
        self.submit(
            "/admin/password",
            "/admin/password",
            &[("current", current), ("password", new), ("confirm", new)],
        )
        .await
    }
}

#[tokio::test]
async fn phase_redirects() {
    let fake = Arc::new(Fake::new(Phase::Unclaimed));
    let mut b = Browser::new(&fake);
    for path in ["/admin", "/admin/"] {
        assert_eq!(
            b.get(path).await.location.as_deref(),
            Some("/admin/claim"),
            "{path}"
        );
    }
    // Wizard pages and the status page need the claim first.
    assert_eq!(
        b.get("/admin/setup/domain").await.location.as_deref(),
        Some("/admin/claim")
    );
    *fake.phase.lock().unwrap() = Phase::NeedDomain;
    *fake.password.lock().unwrap() = Some(PASSWORD.into());
    assert_eq!(
        b.get("/admin/").await.location.as_deref(),
        Some("/admin/login")
    );
    for path in [
        "/admin/status",
        "/admin/setup/dns",
        "/admin/setup/dns/zone",
        "/admin/setup/ports",
        "/admin/setup/certificate",
        "/admin/setup/done",
        "/admin/password",
    ] {
        assert_eq!(
            b.get(path).await.location.as_deref(),
            Some("/admin/login"),
            "{path}"
        );
    }
    assert_eq!(
        b.get("/admin/claim").await.location.as_deref(),
        Some("/admin/")
    );
    b.login().await;
    assert_eq!(
        b.get("/admin/").await.location.as_deref(),
        Some("/admin/setup/domain")
    );
    *fake.phase.lock().unwrap() = Phase::Configured;
    assert_eq!(
        b.get("/admin").await.location.as_deref(),
        Some("/admin/status")
    );
    assert_eq!(
        b.get("/admin/login").await.location.as_deref(),
        Some("/admin/")
    );
    assert_eq!(b.get("/admin/nope").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn claim_by_code_then_password() {
    let fake = Arc::new(Fake::new(Phase::Unclaimed));
    let mut b = Browser::new(&fake);
    let page = b.get("/admin/claim").await;
    assert!(page.body.contains("id=\"setup-code\""));
    assert!(page.body.contains("the file setup-code.txt"));
    // Wrong code: refused, no claim proof.
    let p = b
        .submit("/admin/claim", "/admin/claim/code", &[("code", "nope")])
        .await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    assert!(p.body.contains("id=\"code-error\""));
    assert!(!b.jar.contains_key("rb_claimed"));
    assert_eq!(
        b.get("/admin/password").await.location.as_deref(),
        Some("/admin/claim")
    );
    // Right code.
    let p = b
        .submit("/admin/claim", "/admin/claim/code", &[("code", CODE)])
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location.as_deref(), Some("/admin/password"));
    assert!(b.jar.contains_key("rb_claimed"));
    // Mismatch: message, nothing set.
    let p = b
        .submit(
            "/admin/password",
            "/admin/password",
            &[("password", "aaaaaaaaaaaa"), ("confirm", "bbbbbbbbbbbb")],
        )
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(p.body.contains("id=\"confirm-error\""));
    assert!(fake.passwords_set().is_empty());
    // The daemon's refusal is shown at the field, escaped.
    let p = b
        .submit(
            "/admin/password",
            "/admin/password",
            &[("password", "short"), ("confirm", "short")],
        )
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        p.body
            .contains("id=\"password-error\">At least 10 characters")
    );
    assert!(!p.body.contains("<script>alert"));
    assert!(p.body.contains("&#60;script&#62;alert"));
    // Success: a session, the claim proof gone.
    let p = b
        .submit(
            "/admin/password",
            "/admin/password",
            &[("password", PASSWORD), ("confirm", PASSWORD)],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert_eq!(p.location.as_deref(), Some("/admin/"));
    let session = b
        .last_set
        .iter()
        .find(|c| c.starts_with("rb_session="))
        .expect("session cookie")
        .clone();
    assert!(session.contains("HttpOnly"));
    assert!(session.contains("SameSite=Strict"));
    assert!(session.contains("Path=/admin"));
    assert!(!session.contains("Secure"), "no Secure over plain HTTP");
    assert!(!b.jar.contains_key("rb_claimed"));
    assert_eq!(*fake.phase.lock().unwrap(), Phase::NeedDomain);
    // The session (signed with the new key) works.
    assert_eq!(
        b.get("/admin/").await.location.as_deref(),
        Some("/admin/setup/domain")
    );
    assert_eq!(b.get("/admin/setup/domain").await.status, StatusCode::OK);
}

#[tokio::test]
async fn session_cookie_secure_over_https() {
    let fake = Arc::new(Fake::new(Phase::NeedDomain));
    let mut b = Browser::at(&fake, "127.0.0.1:4000", true);
    b.login().await;
    let session = b
        .last_set
        .iter()
        .find(|c| c.starts_with("rb_session="))
        .unwrap();
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict"));
    assert!(session.contains("; Secure"));
}

#[tokio::test]
async fn claim_by_button() {
    let fake = Arc::new(Fake::new(Phase::Unclaimed));
    let mut a = Browser::new(&fake);
    let mut other = a.sibling("192.168.1.30:1");
    let page = a.get("/admin/claim").await;
    assert!(page.body.contains("id=\"claim-button\""));
    let p = a.submit("/admin/claim", "/admin/claim/button", &[]).await;
    assert_eq!(p.location.as_deref(), Some("/admin/claim"));
    assert_eq!(a.jar.get("rb_claim").map(String::as_str), Some("T1"));
    let waiting = a.get("/admin/claim").await;
    assert!(waiting.body.contains("within 60 s"), "{}", waiting.body);
    assert!(
        waiting
            .body
            .contains("http-equiv=\"refresh\" content=\"2\"")
    );
    // Another visitor sees the window as busy and has no ticket.
    let busy = other.get("/admin/claim").await;
    assert!(busy.body.contains("id=\"claim-busy\""));
    // Pressed: a different visitor's ticket does not claim.
    *fake.window.lock().unwrap() = ClaimWindow::Pressed {
        ticket: "T1".into(),
    };
    other.jar.insert("rb_claim".into(), "T2".into());
    let p = other.get("/admin/claim").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(!other.jar.contains_key("rb_claimed"));
    assert_eq!(
        other.get("/admin/password").await.location.as_deref(),
        Some("/admin/claim")
    );
    // The opener is claimed.
    let p = a.get("/admin/claim").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location.as_deref(), Some("/admin/password"));
    assert!(a.jar.contains_key("rb_claimed"));
    assert!(!a.jar.contains_key("rb_claim"));
    assert_eq!(a.get("/admin/password").await.status, StatusCode::OK);
}

#[tokio::test]
async fn claim_window_expires() {
    let fake = Arc::new(Fake::new(Phase::Unclaimed));
    let mut a = Browser::new(&fake);
    a.submit("/admin/claim", "/admin/claim/button", &[]).await;
    *fake.window.lock().unwrap() = ClaimWindow::Closed;
    let p = a.get("/admin/claim").await;
    assert!(p.body.contains("id=\"claim-expired\""));
    assert!(!a.jar.contains_key("rb_claim"));
    assert!(p.body.contains("id=\"claim-button\""), "can retry");
}

#[tokio::test]
async fn post_without_csrf_is_refused_and_changes_nothing() {
    let fake = Arc::new(Fake::new(Phase::Unclaimed));
    let mut b = Browser::new(&fake);
    b.get("/admin/claim").await; // has a pre-session cookie now
    for (path, form) in [
        ("/admin/claim/code", vec![("code", CODE)]),
        ("/admin/claim/button", vec![]),
        (
            "/admin/claim/code",
            vec![("code", CODE), ("csrf", "forged")],
        ),
    ] {
        let p = b.post(path, &form).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{path}");
    }
    // A token for another visitor's anchor does not work either.
    let mut other = b.sibling("192.168.1.31:1");
    let theirs = other.get("/admin/claim").await.csrf();
    let p = b
        .post("/admin/claim/code", &[("code", CODE), ("csrf", &theirs)])
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    assert!(!b.jar.contains_key("rb_claimed"));

    // Logged in: domain and certificate changes need the token too.
    *fake.phase.lock().unwrap() = Phase::NeedDomain;
    *fake.password.lock().unwrap() = Some(PASSWORD.into());
    b.login().await;
    fake.calls.lock().unwrap().clear();
    let p = b
        .post(
            "/admin/setup/domain",
            &[("mode", "domain"), ("domain", "chat.example.org")],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert_eq!(
        b.post("/admin/setup/certificate", &[]).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        b.post("/admin/password", &[("password", "x"), ("confirm", "x")])
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        b.post("/admin/logout", &[]).await.status,
        StatusCode::FORBIDDEN
    );
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    assert_eq!(*fake.phase.lock().unwrap(), Phase::NeedDomain);
}

#[tokio::test]
async fn non_lan_client_is_refused() {
    let fake = Arc::new(Fake::new(Phase::Unclaimed));
    for addr in ["203.0.113.5:1", "[2001:db8::1]:1", "[::ffff:8.8.8.8]:1"] {
        let mut b = Browser::at(&fake, addr, false);
        let p = b.get("/admin/claim").await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{addr}");
        assert!(p.body.contains("local network"));
        let p = b.post("/admin/claim/code", &[("code", CODE)]).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN);
    }
    for addr in [
        "[::ffff:192.168.0.2]:1",
        "[fd00::5]:1",
        "10.1.2.3:1",
        "127.0.0.1:1",
    ] {
        let mut b = Browser::at(&fake, addr, false);
        assert_eq!(b.get("/admin/claim").await.status, StatusCode::OK, "{addr}");
    }
    assert!(fake.calls().is_empty());
    // No Client extension: refused.
    let resp = router(fake.clone())
        .oneshot(Request::get("/admin/claim").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn pages_answer_only_the_names_of_the_box() {
    // DNS rebinding: a page from attacker.example, whose name now points at the box,
    // in a browser on the LAN.
    let fake = Arc::new(Fake::new(Phase::Configured));
    let mut b = Browser::new(&fake);
    b.host = "attacker.example".into();
    for path in ["/admin/", "/admin/login", "/admin/status"] {
        let p = b.get(path).await;
        assert_eq!(p.status, StatusCode::MISDIRECTED_REQUEST, "{path}");
        assert!(
            p.body.contains("relaybox.local") && p.body.contains("chat.example.org"),
            "{}",
            p.body
        );
        assert_eq!(p.resp_headers[header::X_FRAME_OPTIONS], "DENY");
    }
    let p = b.post("/admin/login", &[("password", PASSWORD)]).await;
    assert_eq!(p.status, StatusCode::MISDIRECTED_REQUEST);
    // No Host at all: refused too.
    b.host.clear();
    assert_eq!(
        b.get("/admin/login").await.status,
        StatusCode::MISDIRECTED_REQUEST
    );
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    // The box's own names, with or without a port, and any address literal.
    for host in [
        "relaybox.local",
        "RELAYBOX.local:80",
        "chat.example.org",
        "chat.example.org:443",
        "localhost:8080",
        "192.168.1.5",
        "[fd00::1]:80",
    ] {
        b.host = host.into();
        assert_eq!(b.get("/admin/login").await.status, StatusCode::OK, "{host}");
    }
}

#[tokio::test]
async fn security_headers_on_every_response() {
    let fake = Arc::new(Fake::new(Phase::Unclaimed));
    let mut b = Browser::new(&fake);
    let mut far = Browser::at(&fake, "198.51.100.1:1", false);
    for p in [
        b.get("/admin/claim").await,
        b.get("/admin/").await,
        b.get("/admin/static/style.css").await,
        far.get("/admin/claim").await,
    ] {
        let h = &p.resp_headers;
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        for part in [
            "default-src 'self'",
            "img-src 'self' data:",
            "style-src 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(part), "{csp}");
        }
    }
    let css = b.get("/admin/static/style.css").await;
    assert_eq!(
        css.resp_headers[header::CONTENT_TYPE],
        "text/css; charset=utf-8"
    );
    assert!(css.body.contains(".check"));
}

/// Time one login attempt (virtual time).
async fn timed_login(b: &mut Browser, password: &str) -> (Page, Duration) {
    let csrf = b.get("/admin/login").await.csrf();
    let start = Instant::now();
    let p = b
        .post("/admin/login", &[("csrf", &csrf), ("password", password)])
        .await;
    (p, start.elapsed())
}

#[tokio::test(start_paused = true)]
async fn wrong_passwords_are_slowed_down() {
    let fake = Arc::new(Fake::new(Phase::Configured));
    let mut b = Browser::new(&fake);
    for i in 0..3 {
        let (p, took) = timed_login(&mut b, "wrong").await;
        assert_eq!(p.status, StatusCode::UNAUTHORIZED, "attempt {i}");
        assert!(took < Duration::from_millis(100), "attempt {i}: {took:?}");
    }
    let (p, took) = timed_login(&mut b, "wrong").await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    assert!(took >= Duration::from_secs(1), "4th: {took:?}");
    let (_, took) = timed_login(&mut b, "wrong").await;
    assert!(took >= Duration::from_secs(2), "5th: {took:?}");
    // The right password right away: the delay is served first, then it works.
    let (p, took) = timed_login(&mut b, PASSWORD).await;
    assert!(took >= Duration::from_secs(4), "6th: {took:?}");
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert!(b.jar.contains_key("rb_session"));
    // Success reset the counter.
    b.jar.clear();
    let (_, took) = timed_login(&mut b, "wrong").await;
    assert!(took < Duration::from_millis(100));

    // Someone who waits the delay out is not delayed: the right password works at once.
    let mut c = b.sibling("192.168.1.77:1");
    for _ in 0..4 {
        timed_login(&mut c, "wrong").await;
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    let (p, took) = timed_login(&mut c, PASSWORD).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert!(took < Duration::from_millis(100), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn wrong_setup_codes_are_slowed_down() {
    let fake = Arc::new(Fake::new(Phase::Unclaimed));
    let mut b = Browser::new(&fake);
    for _ in 0..3 {
        b.submit("/admin/claim", "/admin/claim/code", &[("code", "x")])
            .await;
    }
    let csrf = b.get("/admin/claim").await.csrf();
    let start = Instant::now();
    let p = b
        .post("/admin/claim/code", &[("csrf", &csrf), ("code", CODE)])
        .await;
    assert!(start.elapsed() >= Duration::from_secs(1));
    assert_eq!(p.location.as_deref(), Some("/admin/password"));
}

#[tokio::test]
async fn logout_ends_the_session() {
    let fake = Arc::new(Fake::new(Phase::Configured));
    let mut b = Browser::new(&fake);
    b.login().await;
    let old = b.jar["rb_session"].clone();
    let p = b.submit("/admin/status", "/admin/logout", &[]).await;
    assert_eq!(p.location.as_deref(), Some("/admin/login?logged-out"));
    assert!(!b.jar.contains_key("rb_session"));
    // The old cookie replayed is no longer a session.
    b.jar.insert("rb_session".into(), old);
    assert_eq!(
        b.get("/admin/status").await.location.as_deref(),
        Some("/admin/login")
    );
}

#[tokio::test]
async fn password_change_ends_other_sessions() {
    let fake = Arc::new(Fake::new(Phase::Configured));
    let mut a = Browser::new(&fake);
    let mut other = a.sibling("192.168.1.40:1");
    a.login().await;
    other.login().await;
    let p = a
        .submit(
            "/admin/password",
            "/admin/password",
            &[
                ("current", PASSWORD),
                ("password", "a new long password"),
                ("confirm", "a new long password"),
            ],
        )
        .await;
    assert_eq!(p.location.as_deref(), Some("/admin/"));
    assert_eq!(a.get("/admin/status").await.status, StatusCode::OK);
    assert_eq!(
        other.get("/admin/status").await.location.as_deref(),
        Some("/admin/login")
    );
}

#[tokio::test]
async fn domain_step() {
    let fake = Arc::new(Fake::new(Phase::NeedDomain));
    let mut b = Browser::new(&fake);
    b.login().await;
    let page = b.get("/admin/setup/domain").await;
    assert!(page.body.contains("name=\"mode\" value=\"domain\""));
    assert!(page.body.contains("name=\"mode\" value=\"ip\""));
    assert!(page.body.contains("user@[") || page.body.contains("name@["));
    // No mode.
    let p = b
        .submit("/admin/setup/domain", "/admin/setup/domain", &[])
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(p.body.contains("id=\"mode-error\""));
    // The daemon refuses: message at the field, input kept (escaped).
    let p = b
        .submit(
            "/admin/setup/domain",
            "/admin/setup/domain",
            &[("mode", "domain"), ("domain", "bad name<b>")],
        )
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(p.body.contains("id=\"domain-error\">No spaces"));
    assert!(
        p.body.contains("value=\"bad name&#60;b&#62;\"") || p.body.contains("bad name&lt;b&gt;")
    );
    // Domain → DNS step.
    let p = b
        .submit(
            "/admin/setup/domain",
            "/admin/setup/domain",
            &[
                ("mode", "domain"),
                ("domain", " chat.example.org "),
                ("ip", ""),
            ],
        )
        .await;
    assert_eq!(p.location.as_deref(), Some("/admin/setup/dns"));
    assert_eq!(
        fake.domain.lock().unwrap().as_deref(),
        Some("chat.example.org")
    );
    let dns = b.get("/admin/setup/dns").await;
    assert!(
        dns.body
            .contains("<section class=\"record\" data-record-id=\"dns.dkim\">")
    );
    assert!(
        dns.body
            .contains("data-check-id=\"dns.caa\" data-status=\"unknown\"")
    );
    assert!(dns.body.contains("href=\"/admin/setup/dns/zone\""));
    assert!(dns.body.contains("href=\"/admin/setup/ports\""));
    // IP-only → ports step.
    let p = b
        .submit(
            "/admin/setup/domain",
            "/admin/setup/domain",
            &[("mode", "ip"), ("domain", ""), ("ip", "192.0.2.1")],
        )
        .await;
    assert_eq!(p.location.as_deref(), Some("/admin/setup/ports"));
    assert!(*fake.ip_only.lock().unwrap());
    let ports = b.get("/admin/setup/ports").await;
    for port in ["25", "80", "443", "465", "587", "993", "3478"] {
        assert!(
            ports.body.contains(&format!("data-port=\"{port}\"")),
            "{port}"
        );
    }
    assert!(ports.body.contains("data-check-id=\"port.25.outbound\""));
    assert!(ports.body.contains("href=\"/admin/setup/certificate\""));
    // Issue 16 item 9: without TURN, no UDP 3478 to forward.
    *fake.turn.lock().unwrap() = false;
    let ports = b.get("/admin/setup/ports").await;
    assert!(ports.body.contains("data-port=\"993\""));
    assert!(!ports.body.contains("3478"), "TURN is off");
    // The "turn off Wi-Fi" advice is the inbound check's, not repeated by the page.
    assert!(!ports.body.contains("Wi-Fi"));
    // IP-only on a LAN address (offered as fine by the name page): nothing to forward.
    *fake.domain.lock().unwrap() = Some("192.168.1.20".into());
    let ports = b.get("/admin/setup/ports").await;
    assert!(ports.body.contains("id=\"ports-lan-only\""));
    assert!(!ports.body.contains("id=\"forwards\""));
    assert!(ports.body.contains("data-check-id=\"port.25.outbound\""));
}

/// Issue 16 item 10: the name page says before saving that the browser will warn about
/// the self-signed certificate, that this is expected, and what to choose.
#[tokio::test]
async fn domain_page_explains_the_certificate_warning() {
    let fake = Arc::new(Fake::new(Phase::NeedDomain));
    let mut b = Browser::new(&fake);
    b.login().await;
    let page = b.get("/admin/setup/domain").await;
    let start = page.body.find("id=\"https-note\"").expect("the note");
    let submit = page.body.find("id=\"domain-submit\"").expect("the button");
    assert!(start < submit, "said before saving");
    let note = &page.body[start..submit];
    for words in [
        "self-signed",
        "expected",
        "Advanced",
        "IP-only mode it stays so",
    ] {
        assert!(note.contains(words), "{words}: {note}");
    }
}

/// Issue 16 item 11: the step bar shows the step numbers.
#[tokio::test]
async fn step_bar_has_numbers() {
    let fake = Arc::new(Fake::new(Phase::Configured));
    let mut b = Browser::new(&fake);
    b.login().await;
    let page = b.get("/admin/setup/ports").await;
    for (n, name) in ["Name", "DNS", "Router", "Certificate", "Account"]
        .iter()
        .enumerate()
    {
        assert!(
            page.body
                .contains(&format!("<span class=\"n\">{}</span> {name}</a>", n + 1)),
            "{name}"
        );
    }
    assert!(
        page.body
            .contains("class=\"current\" aria-current=\"step\"><a href=\"/admin/setup/ports\">")
    );
}

/// Issue 16 item 5: while the relay is still starting with its new name (no records
/// yet), the DNS page shows a "preparing" state that reloads itself, never empty
/// lists; after a bounded number of reloads it stops and says what to do.
#[tokio::test]
async fn dns_page_prepares_instead_of_showing_nothing() {
    let mut fake = Fake::new(Phase::Configured);
    fake.empty = true;
    let fake = Arc::new(fake);
    let mut b = Browser::new(&fake);
    b.login().await;
    let p = b.get("/admin/setup/dns").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.body.contains("id=\"dns-preparing\""), "{}", p.body);
    assert!(!p.body.contains("No records to show"));
    assert!(!p.body.contains("No checks yet"));
    assert!(
        p.body
            .contains("http-equiv=\"refresh\" content=\"2;url=/admin/setup/dns?wait=1\""),
        "{}",
        p.body
    );
    assert!(!fake.calls().contains(&"dns_checks".to_string()));
    // Before the name step nothing is prepared: the page says to choose the name.
    let fresh = Arc::new(Fake::new(Phase::NeedDomain));
    let mut other = Browser::new(&fresh);
    other.login().await;
    let p = other.get("/admin/setup/dns").await;
    assert!(p.body.contains("id=\"dns-no-name\""));
    assert!(!p.body.contains("http-equiv=\"refresh\""));
    let p = b.get("/admin/setup/dns?wait=7").await;
    assert!(p.body.contains("content=\"2;url=/admin/setup/dns?wait=8\""));
    // The bound: no more reloading, a visible message with the way on.
    for wait in ["30", "99999999999999999999", "x"] {
        let p = b.get(&format!("/admin/setup/dns?wait={wait}")).await;
        assert_eq!(p.status, StatusCode::OK);
        if wait == "x" {
            assert!(p.body.contains("wait=1\""), "an odd count starts again");
            continue;
        }
        assert!(p.body.contains("id=\"dns-stalled\""), "{wait}");
        assert!(!p.body.contains("http-equiv=\"refresh\""), "{wait}");
        assert!(p.body.contains("href=\"/admin/status\""));
    }
}

/// Issue 16 item 11: DNS names as providers' forms take them (no trailing dot; the zone
/// file keeps it), each name and value with a copy button (the script is the only one
/// and is served from here).
#[tokio::test]
async fn dns_records_for_providers_forms() {
    let fake = Arc::new(Fake::new(Phase::Configured));
    let mut b = Browser::new(&fake);
    b.login().await;
    let p = b.get("/admin/setup/dns").await;
    assert!(
        p.body
            .contains(">opendkim.<wbr>_domainkey.<wbr>chat.<wbr>example.<wbr>org<wbr></code>"),
        "{}",
        p.body
    );
    assert!(!p.body.contains("chat.example.org.</code>"));
    assert!(p.body.contains("data-copy=\"rec-1-name\""));
    assert!(p.body.contains("id=\"rec-1-value\""));
    assert!(p.body.contains("data-copy=\"rec-1-value\""));
    assert!(
        p.body
            .contains("<script src=\"/admin/static/copy.js\" defer></script>")
    );
    assert!(
        b.get("/admin/setup/dns/zone")
            .await
            .body
            .contains("chat.example.org. ")
    );
    let js = b.get("/admin/static/copy.js").await;
    assert_eq!(js.status, StatusCode::OK);
    assert_eq!(
        js.resp_headers[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert!(js.body.contains("button.copy[data-copy]"));
    let csp = js.resp_headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'self'") && !csp.contains("unsafe-inline"));
}

/// Issue 16 item 1: an IP-only relay's code holds one account: the page says it is for
/// one person, shows a new one on every view and a button for it, and points to the
/// public page; a domain relay's `DCACCOUNT:` code may be shared.
#[tokio::test]
async fn done_page_gives_each_person_their_own_code() {
    let fake = Arc::new(Fake::new(Phase::Configured));
    let mut b = Browser::new(&fake);
    b.login().await;
    let p = b.get("/admin/setup/done").await;
    assert!(p.body.contains("id=\"invite-shared\""));
    assert!(p.body.contains("new, separate account"));
    assert!(!p.body.contains("id=\"invite-per-person\""));
    // Issue 18: upstream 1.12's `DCACCOUNT:<domain>` beside the code.
    assert!(
        p.body
            .contains("<p id=\"invite-domain\">Newer Delta Chat apps also take the shorter code <code>DCACCOUNT:chat.example.org</code>"),
        "{}",
        p.body
    );
    *fake.ip_only.lock().unwrap() = true;
    *fake.domain.lock().unwrap() = Some("192.0.2.1".into());
    let first = b.get("/admin/setup/done").await;
    let second = b.get("/admin/setup/done").await;
    let link = |body: &str| {
        let start = body.find("id=\"invite-link\" href=\"").unwrap();
        body[start..].split('"').nth(3).unwrap().to_string()
    };
    assert!(link(&first.body).starts_with("dclogin:"));
    assert_ne!(link(&first.body), link(&second.body), "a new code per view");
    for body in [&first.body, &second.body] {
        assert!(body.contains("id=\"invite-per-person\""));
        assert!(body.contains("for one person only"));
        assert!(body.contains("id=\"invite-new\""));
        assert!(body.contains("<a id=\"invite-public\" href=\"https://192.0.2.1/\">"));
        assert!(!body.contains("Share"), "never shown as shareable");
        assert!(!body.contains("id=\"invite-shared\""));
        assert!(
            !body.contains("id=\"invite-domain\""),
            "no domain code without a domain"
        );
    }
}

#[tokio::test]
async fn zone_file_download() {
    let fake = Arc::new(Fake::new(Phase::Configured));
    let mut b = Browser::new(&fake);
    b.login().await;
    let p = b.get("/admin/setup/dns/zone").await;
    assert_eq!(p.status, StatusCode::OK);
    assert_eq!(
        p.resp_headers[header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
    assert_eq!(
        p.resp_headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"chat.example.org.zone\""
    );
    assert!(p.body.contains("IN MX"));
}

/// Issue 18 item 5: the report behind the login, as an attachment with a safe name,
/// linked from the status page.
#[tokio::test]
async fn diagnostic_report_download() {
    let fake = Arc::new(Fake::new(Phase::Configured));
    let mut b = Browser::new(&fake);
    let p = b.get("/admin/status/report").await;
    assert_eq!(p.location.as_deref(), Some("/admin/login"));
    assert!(!fake.calls().contains(&"diagnostic_report".to_string()));
    b.login().await;
    let status = b.get("/admin/status").await;
    assert!(
        status.body.contains("href=\"/admin/status/report\""),
        "{}",
        status.body
    );
    let p = b.get("/admin/status/report").await;
    assert_eq!(p.status, StatusCode::OK);
    assert_eq!(
        p.resp_headers[header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
    assert_eq!(
        p.resp_headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"relaybox-report-chat.example.org-2026-12-07.txtx\""
    );
    assert_eq!(p.body, "# Relaybox diagnostic report\n");
}

#[tokio::test]
async fn certificate_step() {
    let fake = Arc::new(Fake::new(Phase::Configured));
    let mut b = Browser::new(&fake);
    b.login().await;
    let p = b.get("/admin/setup/certificate").await;
    assert!(
        p.body
            .contains("<div id=\"certificate-state\" data-state=\"idle\">")
    );
    assert!(p.body.contains("days left"));
    let p = b
        .submit("/admin/setup/certificate", "/admin/setup/certificate", &[])
        .await;
    assert_eq!(p.location.as_deref(), Some("/admin/setup/certificate"));
    assert_eq!(
        fake.calls().last().map(String::as_str),
        Some("request_certificate")
    );
    fake.cert.lock().unwrap().progress = AcmeProgress::Running {
        step: "asking the CA".into(),
    };
    let p = b.get("/admin/setup/certificate").await;
    assert!(p.body.contains("data-state=\"running\""));
    assert!(p.body.contains("http-equiv=\"refresh\" content=\"2\""));
    fake.cert.lock().unwrap().progress = AcmeProgress::Failed {
        reason: "port 80 is not reachable".into(),
    };
    *fake.cert_request.lock().unwrap() = Err("Already running <now>".into());
    let p = b
        .submit("/admin/setup/certificate", "/admin/setup/certificate", &[])
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(p.body.contains("data-state=\"failed\""));
    assert!(p.body.contains("port 80 is not reachable"));
    assert!(
        p.body.contains("Already running &#60;now&#62;")
            || p.body.contains("Already running &lt;now&gt;")
    );
    // Not possible (IP-only): say why, offer no request, go on.
    *fake.ip_only.lock().unwrap() = true;
    fake.cert.lock().unwrap().acme_possible = false;
    let p = b.get("/admin/setup/certificate").await;
    assert!(p.body.contains("id=\"certificate-not-possible\""));
    assert!(p.body.contains("IP-only"));
    assert!(!p.body.contains("id=\"certificate-request\""));
    assert!(p.body.contains("href=\"/admin/setup/done\""));
}

#[tokio::test]
async fn done_step_shows_the_invitation() {
    let fake = Arc::new(Fake::new(Phase::Configured));
    let mut b = Browser::new(&fake);
    b.login().await;
    let p = b.get("/admin/setup/done").await;
    assert!(p.body.contains("<div id=\"invite-qr\" class=\"qr\"><svg"));
    assert!(
        p.body
            .contains("<a id=\"invite-link\" href=\"DCACCOUNT:https://chat.example.org/new\">")
    );
    assert!(p.body.contains("Add account"));
    // An SVG with a script is not put into the page.
    *fake.qr_svg.lock().unwrap() = "<svg onload=\"x()\"><path/></svg>".into();
    let p = b.get("/admin/setup/done").await;
    assert!(!p.body.contains("onload"));
    assert!(p.body.contains("id=\"invite-link\""));
}

#[test]
fn svg_filter() {
    use crate::wizard::safe_svg;
    assert!(safe_svg(
        "<svg viewBox=\"0 0 1 1\" aria-label=\"QR code on paper\"><path d=\"M0 0\"/></svg>"
    ));
    assert!(safe_svg("<?xml version=\"1.0\"?><svg><rect/></svg>"));
    for bad in [
        "<p>not svg</p>",
        "<svg><script>x</script></svg>",
        "<svg/onload=x>",
        "<svg ONCLICK = \"x\">",
        "<svg><a href=\"javascript:x\"/></svg>",
        "<svg><foreignObject/></svg>",
    ] {
        assert!(!safe_svg(bad), "{bad}");
    }
}

/// WIZ-3: every page renders with HTML and huge strings in values, and with empty lists.
#[tokio::test]
async fn every_page_renders_odd_data() {
    for (odd, empty) in [(true, false), (false, true), (true, true)] {
        let mut fake = Fake::new(Phase::Configured);
        fake.odd = odd;
        fake.empty = empty;
        let fake = Arc::new(fake);
        let mut b = Browser::new(&fake);
        b.login().await;
        for path in [
            "/admin/status",
            "/admin/setup/domain",
            "/admin/setup/dns",
            "/admin/setup/dns/zone",
            "/admin/setup/ports",
            "/admin/setup/front",
            "/admin/setup/certificate",
            "/admin/setup/done",
            "/admin/password",
        ] {
            let p = b.get(path).await;
            assert_eq!(p.status, StatusCode::OK, "{path} odd={odd} empty={empty}");
            if path.ends_with("/zone") {
                continue;
            }
            assert!(!p.body.contains("<script>"), "{path}: unescaped");
            assert!(!p.body.contains("<b onmouseover"), "{path}: unescaped");
            if odd && !(empty && path.ends_with("/done")) {
                assert!(
                    p.body.contains("&lt;script&gt;") || p.body.contains("&#60;script&#62;"),
                    "{path}: not shown"
                );
            }
        }
        let status = b.get("/admin/status").await.body;
        for id in [
            "services",
            "certificate",
            "dns",
            "storage",
            "update",
            "errors",
            "charts",
        ] {
            assert!(status.contains(&format!("<section id=\"{id}\">")), "{id}");
        }
        if !empty {
            // WIZ-2: unknown is "could not check", never "wrong".
            assert!(status.contains("data-check-id=\"dns.caa\" data-status=\"unknown\""));
            assert!(status.contains("could not check"));
            assert!(status.contains("<svg class=\"chart\""));
            assert!(status.matches("<li><code>").count() <= 50);
        }
    }
    // Claim and login pages with odd overview texts.
    let mut fake = Fake::new(Phase::Unclaimed);
    fake.odd = true;
    let fake = Arc::new(fake);
    let mut b = Browser::new(&fake);
    let p = b.get("/admin/claim").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(!p.body.contains("<script"));
}

#[tokio::test]
async fn unknown_checks_render_neutral() {
    let fake = Arc::new(Fake::new(Phase::Configured));
    let mut b = Browser::new(&fake);
    b.login().await;
    let p = b.get("/admin/setup/dns").await;
    let start = p.body.find("data-check-id=\"dns.caa\"").unwrap();
    let block = &p.body[start..start + 300];
    assert!(block.contains("could not check"), "{block}");
    assert!(!block.contains("wrong"), "{block}");
    let start = p.body.find("data-check-id=\"dns.dkim\"").unwrap();
    assert!(p.body[start..start + 200].contains("wrong"));
}

/// A fake whose status page offers the update forms, and a browser logged in to it.
async fn update_setup() -> (Arc<Fake>, Browser) {
    let fake = Arc::new(Fake::new(Phase::Configured));
    fake.update.lock().unwrap().available = true;
    let mut b = Browser::new(&fake);
    b.login().await;
    fake.calls.lock().unwrap().clear();
    (fake, b)
}

#[tokio::test]
async fn status_page_shows_the_update_state() {
    let fake = Arc::new(Fake::new(Phase::Configured));
    *fake.update.lock().unwrap() = UpdateInfo {
        state: "up to date (version 1.2, build 43)".into(),
        last_error: Some("The signature of the bundle <is> wrong.".into()),
        last_check: Some(1_798_675_200 + 3_600 * 13 + 60 * 7),
        busy: false,
        available: false,
    };
    let mut b = Browser::new(&fake);
    b.login().await;
    // Not available (no A/B image): state, error and check time, no forms.
    let p = b.get("/admin/status").await;
    assert!(
        p.body.contains(
            "id=\"update-state\" data-busy=\"false\">up to date (version 1.2, build 43)<"
        )
    );
    assert!(
        p.body.contains(
            "id=\"update-error\" class=\"error\">The signature of the bundle &#60;is&#62; wrong.<"
        ),
        "{}",
        p.body
    );
    assert!(p.body.contains("2026-12-31 13:07 UTC"));
    assert!(!p.body.contains("/admin/update/"));
    assert!(!p.body.contains("http-equiv=\"refresh\""));
    // Available: both forms, the token first, the upload as multipart.
    fake.update.lock().unwrap().available = true;
    fake.update.lock().unwrap().last_error = None;
    fake.update.lock().unwrap().last_check = None;
    let p = b.get("/admin/status").await;
    assert!(!p.body.contains("id=\"update-error\""));
    assert!(p.body.contains("id=\"update-check\">not yet<"));
    let csrf = p.csrf();
    let now = p
        .body
        .find("action=\"/admin/update/now\"")
        .expect("update now form");
    assert!(p.body[now..].contains(&format!("name=\"csrf\" value=\"{csrf}\"")));
    let up = p
        .body
        .find(
            "<form method=\"post\" action=\"/admin/update/upload\" enctype=\"multipart/form-data\"",
        )
        .expect("upload form");
    let form = &p.body[up..up + p.body[up..].find("</form>").unwrap()];
    let token = form.find("name=\"csrf\"").expect("csrf field");
    let file = form
        .find("type=\"file\" id=\"bundle\" name=\"bundle\"")
        .expect("file field");
    assert!(token < file, "the token must come before the file");
    assert!(!p.body.contains("http-equiv=\"refresh\""));
    // Busy: progress, the page reloads itself, no forms while it runs.
    {
        let mut u = fake.update.lock().unwrap();
        u.busy = true;
        u.state = "downloading 45 %".into();
    }
    let p = b.get("/admin/status").await;
    assert!(p.body.contains("http-equiv=\"refresh\" content=\"5\""));
    assert!(
        p.body
            .contains("id=\"update-state\" data-busy=\"true\">downloading 45 %<")
    );
    assert!(p.body.contains("id=\"update-running\""));
    assert!(!p.body.contains("/admin/update/"));
}

#[tokio::test]
async fn update_now_needs_login_and_csrf() {
    let (fake, mut b) = update_setup().await;
    // Without a token, or with a forged one: 403, nothing started.
    assert_eq!(
        b.post("/admin/update/now", &[]).await.status,
        StatusCode::FORBIDDEN
    );
    let p = b.post("/admin/update/now", &[("csrf", "forged")]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    // Not logged in (a valid pre-session token): to the login, nothing started.
    let mut stranger = b.sibling("192.168.1.50:1");
    let csrf = stranger.get("/admin/login").await.csrf();
    let p = stranger.post("/admin/update/now", &[("csrf", &csrf)]).await;
    assert_eq!(p.location.as_deref(), Some("/admin/login"));
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    // From the status page: started, back to the status page.
    let p = b.submit("/admin/status", "/admin/update/now", &[]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location.as_deref(), Some("/admin/status"));
    assert_eq!(fake.calls(), ["update_now"]);
    // OTA-6: a refusal is shown with its reason (escaped).
    fake.refusals
        .lock()
        .unwrap()
        .insert("update_now", "An update is already running <now>.".into());
    let p = b.submit("/admin/status", "/admin/update/now", &[]).await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        p.body
            .contains("An update is already running &#60;now&#62;.")
    );
    assert!(p.body.contains("href=\"/admin/status\""));
}

#[tokio::test]
async fn upload_saves_exactly_the_bundle_and_installs_it() {
    let (fake, mut b) = update_setup().await;
    let csrf = b.get("/admin/status").await.csrf();
    // Over axum's default 2 MB limit and the pages' form limit.
    let bundle = bundle_bytes(3_000_000);
    for length in [true, false] {
        fake.installed.lock().unwrap().clear();
        let p = b
            .upload(
                &[
                    ("csrf", None, csrf.as_bytes()),
                    ("bundle", Some("relaybox-1.3.bundle"), &bundle),
                ],
                length,
            )
            .await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
        assert_eq!(p.location.as_deref(), Some("/admin/status"));
        let installed = fake.installed.lock().unwrap().clone();
        assert_eq!(installed.len(), 1);
        let (path, bytes) = &installed[0];
        assert!(path.starts_with(fake.upload_dir.path()));
        assert!(bytes == &bundle, "the saved file differs from the upload");
        // Exactly the cap is accepted.
        *fake.upload_cap.lock().unwrap() = bundle.len() as u64;
    }
}

#[tokio::test]
async fn upload_without_the_right_token_first_is_refused() {
    let (fake, mut b) = update_setup().await;
    let csrf = b.get("/admin/status").await.csrf();
    let bundle = bundle_bytes(50_000);
    let file = ("bundle", Some("x.bundle"), bundle.as_slice());
    for fields in [
        vec![file],
        vec![("csrf", None, b"forged".as_slice()), file],
        vec![("csrf", None, b"".as_slice()), file],
        // The right token after the file is too late.
        vec![file, ("csrf", None, csrf.as_bytes())],
        vec![("other", None, csrf.as_bytes()), file],
    ] {
        let p = b.upload(&fields, true).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.body);
    }
    // Not logged in: to the login, nothing read.
    let mut stranger = b.sibling("192.168.1.50:1");
    let theirs = stranger.get("/admin/login").await.csrf();
    let p = stranger
        .upload(&[("csrf", None, theirs.as_bytes()), file], true)
        .await;
    assert_eq!(p.location.as_deref(), Some("/admin/login"));
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    assert!(fake.uploads().is_empty());
    // Not a multipart body at all.
    let p = b.post("/admin/update/upload", &[("csrf", &csrf)]).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(fake.calls().is_empty());
}

#[tokio::test]
async fn upload_over_the_cap_gets_413_and_leaves_no_file() {
    let (fake, mut b) = update_setup().await;
    *fake.upload_cap.lock().unwrap() = 100_000;
    let csrf = b.get("/admin/status").await.csrf();
    // With a Content-Length far over the cap it is refused before reading; without one,
    // or one just over (within the room for the form around the file), while streaming.
    for (size, length) in [(400_000, true), (100_001, false), (100_001, true)] {
        let p = b
            .upload(
                &[
                    ("csrf", None, csrf.as_bytes()),
                    ("bundle", Some("big.bundle"), &bundle_bytes(size)),
                ],
                length,
            )
            .await;
        assert_eq!(p.status, StatusCode::PAYLOAD_TOO_LARGE, "{size} {length}");
        assert!(p.body.contains("larger than the 100 kB"), "{}", p.body);
        assert!(fake.uploads().is_empty());
    }
    assert!(!fake.calls().contains(&"install_upload".to_string()));
}

#[tokio::test]
async fn failed_uploads_leave_no_file() {
    let (fake, mut b) = update_setup().await;
    let csrf = b.get("/admin/status").await.csrf();
    let token = ("csrf", None, csrf.as_bytes());
    let bundle = bundle_bytes(10_000);
    let file = ("bundle", Some("x.bundle"), bundle.as_slice());
    // No file chosen; a field after the file; a body cut off in the middle.
    let p = b.upload(&[token, ("bundle", Some(""), b"")], true).await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(p.body.contains("No bundle file was chosen"));
    let p = b.upload(&[token], true).await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    let p = b.upload(&[token, file, ("extra", None, b"x")], true).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    let mut cut = multipart(&[token, file]);
    cut.truncate(cut.len() - 5_000);
    let p = b.send(upload_request(Body::from(cut), None)).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST, "{}", p.body);
    assert!(p.body.contains("broke off"));
    assert!(fake.uploads().is_empty());
    assert!(fake.installed.lock().unwrap().is_empty());
    // OTA-6: the daemon refuses to take it: the reason is shown, the file removed.
    fake.refusals.lock().unwrap().insert(
        "install_upload",
        "Another update is being installed.".into(),
    );
    let p = b.upload(&[token, file], true).await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(p.body.contains("Another update is being installed."));
    assert_eq!(fake.installed.lock().unwrap().len(), 1);
    assert!(fake.uploads().is_empty());
    // No place to put it: the reason, nothing written.
    fake.refusals
        .lock()
        .unwrap()
        .insert("upload_target", "The data partition is full.".into());
    let p = b.upload(&[token, file], true).await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(p.body.contains("The data partition is full."));
    assert!(fake.uploads().is_empty());
}

/// The start of an upload (token, the file's head and some data) that then sends
/// nothing more.
fn stalled_upload(csrf: &str) -> Body {
    let full = multipart(&[
        ("csrf", None, csrf.as_bytes()),
        ("bundle", Some("x.bundle"), &bundle_bytes(20_000)),
    ]);
    let start = full[..10_000].to_vec();
    let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(start)])
        .chain(futures_util::stream::pending());
    Body::from_stream(stream)
}

#[tokio::test(start_paused = true)]
async fn stalled_or_abandoned_uploads_leave_no_file() {
    let (fake, mut b) = update_setup().await;
    let csrf = b.get("/admin/status").await.csrf();
    // Stalled: given up after the idle time.
    let start = Instant::now();
    let p = b.send(upload_request(stalled_upload(&csrf), None)).await;
    assert_eq!(p.status, StatusCode::REQUEST_TIMEOUT);
    assert!(start.elapsed() >= crate::update::UPLOAD_IDLE);
    assert!(fake.uploads().is_empty());
    // Nothing at all arrives.
    fake.calls.lock().unwrap().clear();
    let nothing = Body::from_stream(futures_util::stream::pending::<
        Result<Vec<u8>, std::io::Error>,
    >());
    let p = b.send(upload_request(nothing, None)).await;
    assert_eq!(p.status, StatusCode::REQUEST_TIMEOUT);
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    // The visitor goes away mid-upload (the request is dropped): the file goes too.
    let req = b.prepare(upload_request(stalled_upload(&csrf), None));
    let task = tokio::spawn(b.app.clone().oneshot(req));
    for _ in 0..100 {
        if !fake.uploads().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fake.uploads().len(), 1, "the upload started");
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert!(fake.uploads().is_empty());
    assert!(fake.installed.lock().unwrap().is_empty());
}

/// Preview: writes every page as HTML (stylesheet linked relatively) into the directory
/// named by `WEBUI_PREVIEW_DIR`, for looking at them in a browser.
/// `WEBUI_PREVIEW_DIR=/tmp/p cargo test -p relaybox-webui dump_pages -- --ignored`
#[tokio::test]
#[ignore = "writes files; run by hand"]
async fn dump_pages() {
    let Some(dir) = std::env::var_os("WEBUI_PREVIEW_DIR") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let save = |name: &str, body: &str| {
        let body = body.replace("/admin/static/style.css", "style.css");
        std::fs::write(dir.join(format!("{name}.html")), body).unwrap();
    };
    std::fs::write(
        dir.join("style.css"),
        include_str!("../templates/style.css"),
    )
    .unwrap();
    let fake = Arc::new(Fake::new(Phase::Unclaimed));
    let mut b = Browser::new(&fake);
    save("01-claim", &b.get("/admin/claim").await.body);
    b.submit("/admin/claim", "/admin/claim/button", &[]).await;
    save("02-claim-waiting", &b.get("/admin/claim").await.body);
    let p = b
        .submit("/admin/claim", "/admin/claim/code", &[("code", CODE)])
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    save("03-password", &b.get("/admin/password").await.body);
    b.submit(
        "/admin/password",
        "/admin/password",
        &[("password", PASSWORD), ("confirm", PASSWORD)],
    )
    .await;
    save("04-domain", &b.get("/admin/setup/domain").await.body);
    let p = b
        .submit(
            "/admin/setup/domain",
            "/admin/setup/domain",
            &[("mode", "domain"), ("domain", "bad name")],
        )
        .await;
    save("05-domain-error", &p.body);
    b.submit(
        "/admin/setup/domain",
        "/admin/setup/domain",
        &[("mode", "domain"), ("domain", "chat.example.org")],
    )
    .await;
    save("06-dns", &b.get("/admin/setup/dns").await.body);
    save("07-ports", &b.get("/admin/setup/ports").await.body);
    // Issue 20: the front server, offered, waiting, failed, in use.
    *fake.front_advice.lock().unwrap() = vec![
        "This box's internet connection has no public IPv4 address of its own: its address \
         100.72.1.9 is one that providers share among many customers (carrier-grade NAT), \
         and no port forwarding gets through that."
            .into(),
    ];
    save(
        "07-ports-front-offer",
        &b.get("/admin/setup/ports").await.body,
    );
    fake.front_advice.lock().unwrap().clear();
    save("07-front", &b.get("/admin/setup/front").await.body);
    let csrf = b.get("/admin/setup/front").await.csrf();
    b.post(
        "/admin/setup/front",
        &[("csrf", &csrf), ("front", "203.0.113.7")],
    )
    .await;
    save("07-front-waiting", &b.get("/admin/setup/front").await.body);
    fake.front.lock().unwrap().pairing = FrontPairing::Failed {
        front: "203.0.113.7:4433".into(),
        reason: "the front server refused the pairing code (it was not started with this \
                 code, the code was used already, or it was mistyped there)."
            .into(),
    };
    save("07-front-failed", &b.get("/admin/setup/front").await.body);
    {
        let mut f = fake.front.lock().unwrap();
        f.current = Some("203.0.113.7:4433".into());
        f.address = Some("203.0.113.7".into());
        f.connected = true;
        f.pairing = FrontPairing::Paired {
            front: "203.0.113.7:4433".into(),
        };
    }
    save("07-front-paired", &b.get("/admin/setup/front").await.body);
    save(
        "07-ports-through-front",
        &b.get("/admin/setup/ports").await.body,
    );
    let p = b.post("/admin/setup/front/leave", &[("csrf", &csrf)]).await;
    save("07-front-leave", &p.body);
    *fake.front.lock().unwrap() = FrontInfo {
        unavailable: None,
        current: None,
        address: None,
        connected: false,
        pairing: FrontPairing::Idle,
    };
    save(
        "08-certificate",
        &b.get("/admin/setup/certificate").await.body,
    );
    fake.cert.lock().unwrap().progress = AcmeProgress::Failed {
        reason: "The certificate authority could not reach port 80 of chat.example.org. \
                 Check the port forwarding."
            .into(),
    };
    save(
        "09-certificate-failed",
        &b.get("/admin/setup/certificate").await.body,
    );
    save("10-done", &b.get("/admin/setup/done").await.body);
    save("11-status", &b.get("/admin/status").await.body);
    *fake.update.lock().unwrap() = UpdateInfo {
        state: "up to date (version 1.2.3, build 41)".into(),
        last_error: Some(
            "The bundle's signature does not match the key of this box (downloaded from \
             https://updates.example.org)."
                .into(),
        ),
        last_check: Some(session::now_unix()),
        busy: false,
        available: true,
    };
    save("11-status-update", &b.get("/admin/status").await.body);
    {
        let mut u = fake.update.lock().unwrap();
        u.busy = true;
        u.state = "downloading version 1.3.0: 45 %".into();
    }
    save("11-status-updating", &b.get("/admin/status").await.body);
    b.jar.remove("rb_session");
    save("12-login", &b.get("/admin/login").await.body);
}
