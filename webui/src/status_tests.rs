//! Tests of the status page, the password page and the login page against a small fake
//! [`Backend`] (issue 16): charts that show today at once and say when there is nothing
//! yet, the certificate named by its issuer, the storage label of a server, the current
//! password asked (and slowed down) before a change, the logout confirmed, and the way
//! back in without the password as it works on the machine.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::*;

const CODE: &str = "WXYZ-9876";
const PASSWORD: &str = "the current admin password";
const NEW: &str = "a brand new admin password";
const PASSWORD_FILE: &str = "/var/lib/relaybox/admin.json";

/// A daemon that answers the status page from `status` and keeps the password.
struct Fake {
    phase: Mutex<Phase>,
    has_button: bool,
    key: Mutex<Vec<u8>>,
    password: Mutex<Option<String>>,
    status: Mutex<Status>,
    /// Passwords given to `set_admin_password`.
    set_calls: Mutex<Vec<String>>,
}

fn today() -> String {
    crate::view::date(crate::session::now_unix())
}

impl Fake {
    fn new(phase: Phase, has_button: bool) -> Arc<Fake> {
        Arc::new(Fake {
            phase: Mutex::new(phase),
            has_button,
            key: Mutex::new(b"status-key".to_vec()),
            password: Mutex::new((phase != Phase::Unclaimed).then(|| PASSWORD.to_string())),
            status: Mutex::new(Status {
                services: Vec::new(),
                certificate: CertificateInfo {
                    source: "acme".into(),
                    issuer: "Let's Encrypt (R11)".into(),
                    self_signed: false,
                    names: vec!["chat.example.org".into()],
                    not_after: Some(crate::session::now_unix() + 60 * 86_400),
                    acme_possible: true,
                    progress: AcmeProgress::Idle,
                },
                dns: Vec::new(),
                queue_rows: 0,
                accounts: 0,
                storage_bytes: 4096,
                storage_free_bytes: Some(1 << 30),
                // Right after setup: no full day yet.
                bytes_written_per_day: None,
                bytes_written_today: Some(1500),
                version: "1.0".into(),
                update: UpdateInfo {
                    state: "automatic updates are not available here".into(),
                    last_error: None,
                    last_check: None,
                    busy: false,
                    available: false,
                },
                recent_errors: Vec::new(),
                // Right after setup: today only, no message yet, some bytes written.
                charts: vec![
                    DailySeries {
                        title: "Messages per day".into(),
                        unit: "messages".into(),
                        points: vec![(today(), 0)],
                    },
                    DailySeries {
                        title: "Written to storage per day".into(),
                        unit: "bytes".into(),
                        points: vec![(today(), 1500)],
                    },
                ],
                charts_since: Some(crate::session::now_unix() - 120),
            }),
            set_calls: Mutex::new(Vec::new()),
        })
    }

    fn set_calls(&self) -> Vec<String> {
        self.set_calls.lock().unwrap().clone()
    }
}

impl Backend for Fake {
    fn overview(&self) -> Overview {
        let phase = *self.phase.lock().unwrap();
        Overview {
            phase,
            domain: (phase == Phase::Configured).then(|| "chat.example.org".into()),
            ip_only: false,
            has_button: self.has_button,
            setup_code_location: "the file /var/lib/relaybox/setup-code".into(),
            version: "1.0".into(),
        }
    }

    fn session_key(&self) -> Vec<u8> {
        self.key.lock().unwrap().clone()
    }

    fn open_claim_window(&self) -> ClaimWindow {
        ClaimWindow::Closed
    }

    fn claim_window(&self) -> ClaimWindow {
        ClaimWindow::Closed
    }

    fn check_setup_code(&self, code: &str) -> bool {
        code == CODE
    }

    async fn set_admin_password(&self, password: &str) -> Result<(), InputError> {
        self.set_calls.lock().unwrap().push(password.to_string());
        *self.password.lock().unwrap() = Some(password.to_string());
        self.key.lock().unwrap().push(b'+');
        let mut phase = self.phase.lock().unwrap();
        if *phase == Phase::Unclaimed {
            *phase = Phase::NeedDomain;
        }
        Ok(())
    }

    async fn check_admin_password(&self, password: &str) -> bool {
        self.password.lock().unwrap().as_deref() == Some(password)
    }

    async fn set_domain(&self, _: DomainChoice) -> Result<(), InputError> {
        Err(InputError {
            field: "domain",
            message: "not here".into(),
        })
    }

    fn dns_records(&self) -> Vec<DnsRecord> {
        Vec::new()
    }

    fn zone_file(&self) -> String {
        String::new()
    }

    async fn dns_checks(&self) -> Vec<Check> {
        Vec::new()
    }

    async fn port_checks(&self) -> Vec<Check> {
        Vec::new()
    }

    fn certificate(&self) -> CertificateInfo {
        self.status.lock().unwrap().certificate.clone()
    }

    fn request_certificate(&self) -> Result<(), String> {
        Err("not here".into())
    }

    fn invite(&self) -> Option<Invite> {
        None
    }

    fn admin_password_file(&self) -> Option<PathBuf> {
        Some(PathBuf::from(PASSWORD_FILE))
    }

    async fn status(&self) -> Status {
        self.status.lock().unwrap().clone()
    }

    fn update_now(&self) -> Result<(), String> {
        Err("not here".into())
    }

    fn upload_target(&self) -> Result<(PathBuf, u64), String> {
        Err("not here".into())
    }

    fn install_upload(&self, _: PathBuf) -> Result<(), String> {
        Err("not here".into())
    }
}

/// A browser on the LAN with a cookie jar.
struct Browser {
    app: Router,
    addr: SocketAddr,
    jar: HashMap<String, String>,
}

struct Page {
    status: StatusCode,
    location: Option<String>,
    body: String,
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

impl Browser {
    fn new(fake: &Arc<Fake>) -> Browser {
        Browser {
            app: router(fake.clone()),
            addr: "192.168.1.30:40000".parse().unwrap(),
            jar: HashMap::new(),
        }
    }

    async fn send(&mut self, mut req: Request<Body>) -> Page {
        req.extensions_mut().insert(Client {
            addr: self.addr,
            https: true,
        });
        req.headers_mut()
            .insert(header::HOST, "relaybox.local".parse().unwrap());
        if !self.jar.is_empty() {
            let cookie: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req.headers_mut()
                .insert(header::COOKIE, cookie.join("; ").parse().unwrap());
        }
        let resp = self.app.clone().oneshot(req).await.unwrap();
        for v in resp.headers().get_all(header::SET_COOKIE) {
            let v = v.to_str().unwrap();
            let (pair, _) = v.split_once(';').unwrap();
            let (k, val) = pair.split_once('=').unwrap();
            if v.contains("Max-Age=0;") {
                self.jar.remove(k);
            } else {
                self.jar.insert(k.to_string(), val.to_string());
            }
        }
        let status = resp.status();
        let location = resp
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_string());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Page {
            status,
            location,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        self.send(Request::get(path).body(Body::empty()).unwrap())
            .await
    }

    /// GET `page`, then POST `form` to `action` with the page's CSRF token.
    async fn submit(&mut self, page: &str, action: &str, form: &[(&str, &str)]) -> Page {
        let p = self.get(page).await;
        assert_eq!(p.status, StatusCode::OK, "{page}: {}", p.body);
        let csrf = p.csrf();
        let body: Vec<String> = std::iter::once(("csrf", csrf.as_str()))
            .chain(form.iter().copied())
            .map(|(k, v)| {
                let enc: String = v
                    .bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect();
                format!("{k}={enc}")
            })
            .collect();
        let req = Request::post(action)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body.join("&")))
            .unwrap();
        self.send(req).await
    }

    async fn login(&mut self, password: &str) -> Page {
        self.submit("/admin/login", "/admin/login", &[("password", password)])
            .await
    }

    async fn change_password(&mut self, current: &str, new: &str) -> Page {
        self.submit(
            "/admin/password",
            "/admin/password",
            &[("current", current), ("password", new), ("confirm", new)],
        )
        .await
    }
}

async fn logged_in(fake: &Arc<Fake>) -> Browser {
    let mut b = Browser::new(fake);
    let p = b.login(PASSWORD).await;
    assert_eq!(p.location.as_deref(), Some("/admin/"), "{}", p.body);
    b
}

/// Item 7: right after setup the charts showed an empty plot under "max 1 messages" with
/// the same date at both ends. Now: nothing counted → a sentence; today's bytes → a bar
/// marked as today so far, its figure in bytes; and the page says how current it is.
#[tokio::test]
async fn charts_show_today_at_once_or_say_there_is_nothing_yet() {
    let fake = Fake::new(Phase::Configured, false);
    let mut b = logged_in(&fake).await;
    let p = b.get("/admin/status").await;
    assert_eq!(p.status, StatusCode::OK);
    let charts = &p.body[p.body.find("<section id=\"charts\">").unwrap()..];
    let charts = &charts[..charts.find("</section>").unwrap()];
    assert!(!charts.contains("max 1 "), "no made-up scale: {charts}");
    assert_eq!(charts.matches("<svg").count(), 1, "{charts}");
    assert!(
        charts.contains("No data yet — nothing counted since"),
        "{charts}"
    );
    assert!(charts.contains(">today</text>"), "{charts}");
    assert!(
        !charts.contains(&format!(">{}</text>", today())),
        "one day, one label: {charts}"
    );
    assert!(charts.contains("today: 1.5 kB so far"), "{charts}");
    assert!(charts.contains(">max 1.5 kB</text>"), "{charts}");
    let note = p.text_of("charts-note").unwrap();
    assert!(
        note.contains("today so far") && note.contains("reload it for newer figures"),
        "{note}"
    );

    // Before anything was counted at all.
    fake.status.lock().unwrap().charts_since = None;
    fake.status.lock().unwrap().charts[1].points.clear();
    let p = b.get("/admin/status").await;
    assert!(!p.body.contains("<svg class=\"chart\""));
    assert_eq!(
        p.body
            .matches("No data yet — the first figures come once the relay runs.")
            .count(),
        2
    );
}

/// Item 11: "Written to the SD card" only on the Relaybox image (A/B slots, the same fact
/// that offers updates); on a server the data directory is on a disk.
#[tokio::test]
async fn storage_writes_are_labelled_by_the_machine() {
    let fake = Fake::new(Phase::Configured, false);
    let mut b = logged_in(&fake).await;
    let p = b.get("/admin/status").await;
    assert_eq!(p.text_of("written-label"), Some("Written to disk"));
    assert!(!p.body.contains("SD card"));
    fake.status.lock().unwrap().update.available = true;
    let p = b.get("/admin/status").await;
    assert_eq!(p.text_of("written-label"), Some("Written to the SD card"));
}

/// Like the charts (item 7): before a full day has passed, the bytes written so far are
/// not presented as a daily rate.
#[tokio::test]
async fn storage_writes_before_a_full_day_say_today_so_far() {
    let fake = Fake::new(Phase::Configured, false);
    let mut b = logged_in(&fake).await;
    let p = b.get("/admin/status").await;
    let written = p.text_of("written").expect("written figure");
    assert!(written.contains("today so far"), "{written}");
    assert!(!written.contains("per day"), "{written}");
    fake.status.lock().unwrap().bytes_written_per_day = Some(2_000_000);
    let p = b.get("/admin/status").await;
    let written = p.text_of("written").expect("written figure");
    assert!(written.ends_with("per day"), "{written}");
}

/// Item 11: the certificate is named by its issuer, not by the word "acme"; a
/// self-signed one says so.
#[tokio::test]
async fn the_certificate_is_named_by_its_issuer() {
    let fake = Fake::new(Phase::Configured, false);
    let mut b = logged_in(&fake).await;
    let p = b.get("/admin/status").await;
    let label = p.text_of("cert-issuer").unwrap().to_string();
    assert!(
        label.starts_with("issued by Let&#39;s Encrypt (R11)"),
        "{label}"
    );
    assert!(!label.contains("acme"), "{label}");
    {
        let mut s = fake.status.lock().unwrap();
        s.certificate.source = "self-signed".into();
        s.certificate.issuer = "chat.example.org".into();
        s.certificate.self_signed = true;
    }
    let p = b.get("/admin/status").await;
    let label = p.text_of("cert-issuer").unwrap();
    assert!(label.starts_with("self-signed by this relay"), "{label}");
}

/// Item 8: a change needs the current password; without it or with a wrong one the
/// answer says so and nothing changes. The first password (after the claim) needs none.
#[tokio::test]
async fn changing_the_password_needs_the_current_one() {
    let fake = Fake::new(Phase::Configured, false);
    let mut b = logged_in(&fake).await;
    let page = b.get("/admin/password").await;
    assert!(page.body.contains("id=\"current\""), "{}", page.body);
    for current in ["", "not the password"] {
        let p = b.change_password(current, NEW).await;
        assert_eq!(p.status, StatusCode::UNAUTHORIZED, "current {current:?}");
        let e = p.text_of("current-error").expect("error at the field");
        assert!(e.contains("Nothing was changed"), "{e}");
        assert!(fake.set_calls().is_empty(), "nothing set");
        assert_eq!(fake.password.lock().unwrap().as_deref(), Some(PASSWORD));
    }
    // Still logged in; the right current password changes it.
    let p = b.change_password(PASSWORD, NEW).await;
    assert_eq!(p.location.as_deref(), Some("/admin/"), "{}", p.body);
    assert_eq!(fake.set_calls(), vec![NEW.to_string()]);
    assert_eq!(b.get("/admin/status").await.status, StatusCode::OK);

    // The first password: no current one asked.
    let fresh = Fake::new(Phase::Unclaimed, false);
    let mut c = Browser::new(&fresh);
    let p = c
        .submit("/admin/claim", "/admin/claim/code", &[("code", CODE)])
        .await;
    assert_eq!(p.location.as_deref(), Some("/admin/password"));
    let page = c.get("/admin/password").await;
    assert!(!page.body.contains("id=\"current\""));
    let p = c
        .submit(
            "/admin/password",
            "/admin/password",
            &[("password", NEW), ("confirm", NEW)],
        )
        .await;
    assert_eq!(p.location.as_deref(), Some("/admin/"), "{}", p.body);
    assert_eq!(fresh.set_calls(), vec![NEW.to_string()]);
}

/// Item 8: wrong current passwords count like wrong logins (the same slowdown, shared
/// with the login form), so the change form is no way around it. Virtual time.
#[tokio::test(start_paused = true)]
async fn wrong_current_passwords_are_slowed_down_like_logins() {
    let fake = Fake::new(Phase::Configured, false);
    let mut b = logged_in(&fake).await;
    for i in 0..3 {
        let start = Instant::now();
        let p = b.change_password("wrong", NEW).await;
        assert_eq!(p.status, StatusCode::UNAUTHORIZED, "attempt {i}");
        assert!(start.elapsed() < Duration::from_millis(100), "attempt {i}");
    }
    let start = Instant::now();
    let p = b.change_password("wrong", NEW).await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "4th: {:?}",
        start.elapsed()
    );
    // The login form of the same client waits too.
    let mut other = Browser {
        app: b.app.clone(),
        addr: b.addr,
        jar: HashMap::new(),
    };
    let start = Instant::now();
    assert_eq!(other.login("wrong").await.status, StatusCode::UNAUTHORIZED);
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(fake.set_calls().is_empty());
}

/// Item 11: after logging out the login page says so.
#[tokio::test]
async fn logout_is_confirmed() {
    let fake = Fake::new(Phase::Configured, false);
    let mut b = logged_in(&fake).await;
    let plain = b.get("/admin/status").await;
    assert!(plain.body.contains("id=\"logout\""), "{}", plain.body);
    let p = b.submit("/admin/status", "/admin/logout", &[]).await;
    let to = p.location.expect("redirect");
    assert_eq!(to, "/admin/login?logged-out");
    let login = b.get(&to).await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(
        login
            .text_of("logged-out")
            .is_some_and(|t| t.contains("You are logged out")),
        "{}",
        login.body
    );
    assert!(
        !b.get("/admin/login")
            .await
            .body
            .contains("id=\"logged-out\"")
    );
}

/// Item 11: on a machine without a reset button the pages say how to get back in
/// there (delete the admin password file, restart, claim with the new setup code), not
/// "only a factory reset"; with a button, the factory reset.
#[tokio::test]
async fn the_way_back_in_fits_the_machine() {
    let server = Fake::new(Phase::Configured, false);
    let mut b = Browser::new(&server);
    let login = b.get("/admin/login").await;
    let hint = login.text_of("forgotten").unwrap();
    assert!(
        hint.contains(&format!("delete {PASSWORD_FILE} and restart relaybox"))
            && hint.contains("/var/lib/relaybox/setup-code"),
        "{hint}"
    );
    assert!(!login.body.contains("factory"), "{}", login.body);
    b.login(PASSWORD).await;
    let page = b.get("/admin/password").await;
    assert!(page.body.contains(PASSWORD_FILE) && !page.body.contains("factory"));
    // The first password page of a server.
    let fresh = Fake::new(Phase::Unclaimed, false);
    let mut c = Browser::new(&fresh);
    c.submit("/admin/claim", "/admin/claim/code", &[("code", CODE)])
        .await;
    let first = c.get("/admin/password").await;
    assert!(
        first.body.contains(PASSWORD_FILE) && !first.body.contains("factory reset"),
        "{}",
        first.body
    );

    let boxed = Fake::new(Phase::Configured, true);
    let login = Browser::new(&boxed).get("/admin/login").await;
    let hint = login.text_of("forgotten").unwrap();
    assert!(
        hint.contains("button") && hint.contains("factory state"),
        "{hint}"
    );
    assert!(!hint.contains(PASSWORD_FILE), "{hint}");
}
