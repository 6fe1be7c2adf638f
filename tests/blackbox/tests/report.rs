//! The diagnostic report (issue 18 item 5) from the real binary: a relay whose logs and
//! store hold addresses and client IPs (accounts created, a message submitted, one
//! delivered over port 25, one queued for a peer that does not answer, a failed login,
//! all from their own loopback addresses), its admin pages claimed with the setup code;
//! then the report from the status page ("Download a diagnostic report") and from
//! `relaybox report` while the relay runs and after it stopped. Each must have its
//! sections, and none may hold an address, a client IP, a password, or a secret of the
//! data directory (the admin password hash, the session key, the setup code, the TLS key).
//!
//! Every wait is bounded; the relay is killed on drop.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use relaybox_blackbox::http::{self, HttpResponse};
use relaybox_blackbox::{
    Account, Imap, LineConn, Relay, Smtp, create_account, encrypted_mail, relay,
};

const IO_LIMIT: Duration = Duration::from_secs(60);
/// How long `relaybox report` may take (the daemon's checks are bounded well below).
const COMMAND_LIMIT: Duration = Duration::from_secs(120);
/// The admin password set by the test (≥ 10 characters).
const ADMIN_PASSWORD: &str = "report test admin password";

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// The admin pages over HTTPS from one loopback address, with a cookie jar.
struct Browser {
    addr: SocketAddr,
    from: IpAddr,
    cookies: Vec<(String, String)>,
}

impl Browser {
    async fn send(&mut self, method: &str, path: &str, form: &str) -> HttpResponse {
        let mut conn = tokio::time::timeout(
            IO_LIMIT,
            LineConn::connect_tls_from(self.from, self.addr, &[]),
        )
        .await
        .expect("connect in time")
        .expect("connect");
        let mut head = format!("{method} {path} HTTP/1.1\nHost: 127.0.0.1");
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect();
            head += &format!("\nCookie: {}", jar.join("; "));
        }
        if method == "POST" {
            head += "\nContent-Type: application/x-www-form-urlencoded";
        }
        let r = tokio::time::timeout(IO_LIMIT, http::request(&mut conn, &head, form.as_bytes()))
            .await
            .expect("answer in time")
            .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"));
        for h in &r.headers {
            let Some((name, value)) = h.split_once(':') else {
                continue;
            };
            if !name.trim().eq_ignore_ascii_case("set-cookie") {
                continue;
            }
            let Some((n, v)) = value.trim().split(';').next().unwrap_or("").split_once('=') else {
                continue;
            };
            self.cookies.retain(|(old, _)| old != n.trim());
            if !v.trim().is_empty() && !value.to_ascii_lowercase().contains("max-age=0") {
                self.cookies
                    .push((n.trim().to_string(), v.trim().to_string()));
            }
        }
        r
    }

    async fn get(&mut self, path: &str) -> HttpResponse {
        self.send("GET", path, "").await
    }

    /// GET `page`, then POST `fields` with its CSRF token to `action`.
    async fn submit(&mut self, page: &str, action: &str, fields: &[(&str, &str)]) -> HttpResponse {
        let p = self.get(page).await;
        assert_eq!(p.status, 200, "{page}: {}", p.body_text());
        let body = p.body_text();
        let at = body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no csrf field on {page}:\n{body}"));
        let rest = &body[at + "name=\"csrf\" value=\"".len()..];
        let csrf = &rest[..rest.find('"').expect("end of the csrf value")];
        let mut form = format!("csrf={}", encode(csrf));
        for (k, v) in fields {
            form += &format!("&{k}={}", encode(v));
        }
        self.send("POST", action, &form).await
    }
}

/// `application/x-www-form-urlencoded` value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Traffic that leaves addresses and client IPs in the relay's log and store.
async fn traffic(relay: &Relay) -> Vec<Account> {
    let a = Account::random();
    let b = Account::random();
    // Accounts made by their first IMAP login, from 127.0.0.2.
    for acc in [&a, &b] {
        let mut imap = Imap::connect_from(ip(2), relay.imap_addr()).await;
        imap.greeting().await;
        imap.starttls().await;
        let r = imap.login(&acc.addr, &acc.password).await;
        assert!(r.is_ok(), "login of {}: {r:?}", acc.addr);
        imap.logout().await;
    }
    create_account(relay, &a).await;
    // A message from a to b and to a peer that does not answer (it stays queued), from
    // 127.0.0.3.
    let peer = "someone@[127.0.0.9]";
    let mail = encrypted_mail(&a.addr, &[&b.addr, peer]);
    let mut s = Smtp::connect_from(ip(3), relay.submission_addr()).await;
    s.greeting().await;
    s.ehlo().await;
    s.starttls().await;
    s.ehlo().await;
    let r = s.auth_plain(&a.addr, &a.password).await;
    assert_eq!(r.code, 235, "{r}");
    let r = s.send_mail(&a.addr, &[&b.addr, peer], &mail.bytes).await;
    assert_eq!(r.code, 250, "{r}");
    s.quit().await;
    // Mail from another server over port 25, from 127.0.0.4.
    let mut mx = Smtp::connect_from(ip(4), relay.smtp_addr()).await;
    mx.greeting().await;
    mx.ehlo().await;
    let m = encrypted_mail("sender@[127.0.0.4]", &[&b.addr]);
    let r = mx
        .send_mail("sender@[127.0.0.4]", &[&b.addr], &m.bytes)
        .await;
    assert!(r.code == 250 || r.code >= 400, "{r}");
    mx.quit().await;
    // A wrong password from 127.0.0.6.
    let mut imap = Imap::connect_from(ip(6), relay.imap_addr()).await;
    imap.greeting().await;
    imap.starttls().await;
    let r = imap.login(&b.addr, "wrong-password-123").await;
    assert!(!r.is_ok(), "a wrong password is refused: {r:?}");
    vec![a, b]
}

/// The data directory's secrets: the admin password hash and session key, the TLS key's
/// base64 lines.
fn data_dir_secrets(data: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let admin = std::fs::read_to_string(data.join("admin.json")).expect("admin.json");
    let json: serde_json::Value = serde_json::from_str(&admin).expect("admin.json is JSON");
    for key in ["password_hash", "session_key"] {
        let v = json[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} in {admin}"));
        assert!(v.len() >= 20, "{key}: {v}");
        out.push(v.to_string());
        // A piece of the hash too (between its `$` separators).
        if let Some(last) = v.rsplit('$').next().filter(|p| p.len() >= 20) {
            out.push(last.to_string());
        }
    }
    let key = std::fs::read_to_string(data.join("tls/key.pem")).expect("tls/key.pem");
    out.extend(
        key.lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 20)
            .map(str::to_string),
    );
    out
}

/// The sections every report has, and nothing that identifies a user or is a secret.
fn check_report(text: &str, how: &str, accounts: &[Account], secrets: &[String], setup_code: &str) {
    for section in [
        "# Relaybox diagnostic report",
        "## Relay",
        "version: ",
        "mail_domain: 127.0.0.1",
        "mode: IP-only",
        "## Config",
        "data_dir = (set; value not shown)",
        "smtp_listen = (set; value not shown)",
        "max_load_1m = 10000",
        "## Services",
        "## Certificate",
        "## DNS checks",
        "## Port checks",
        "## Outbound queue",
        "## Storage",
        "accounts: 2",
        "## Recent log lines",
    ] {
        assert!(
            text.contains(section),
            "{how}: {section:?} missing:\n{text}"
        );
    }
    for acc in accounts {
        for leak in [acc.addr.as_str(), acc.local.as_str(), acc.password.as_str()] {
            assert!(
                !text.contains(leak),
                "{how}: {leak:?} in the report:\n{text}"
            );
        }
    }
    for leak in [
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.4",
        "127.0.0.5",
        "127.0.0.6",
        "127.0.0.9",
        "someone@",
        "sender@",
        "@[",
        ADMIN_PASSWORD,
        "wrong-password-123",
        setup_code,
    ] {
        assert!(
            !text.contains(leak),
            "{how}: {leak:?} in the report:\n{text}"
        );
    }
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{how}: a secret of the data directory ({secret}) in the report:\n{text}"
        );
    }
    // The relay's own address (its mail_domain, IP-only) only where the report names it.
    for line in text.lines().filter(|l| l.contains("127.0.0.1")) {
        assert!(
            line.starts_with("mail_domain"),
            "{how}: the relay's address in {line:?}"
        );
    }
}

/// `relaybox report --config … --out OUT`, waited for (bounded: killed after
/// [`COMMAND_LIMIT`]); its exit status and stderr.
async fn run_report(relay: &Relay, out: &Path) -> (std::process::ExitStatus, String) {
    let err_path = out.with_extension("stderr");
    let mut child = Command::new(relay::binary())
        .arg("report")
        .arg("--config")
        .arg(relay.config_path())
        .arg("--out")
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("run relaybox report");
    let deadline = tokio::time::Instant::now() + COMMAND_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("relaybox report did not finish within {COMMAND_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    (
        status,
        std::fs::read_to_string(&err_path).unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_from_the_status_page_and_the_command_has_no_address_ip_or_secret() {
    let mut relay = Relay::start_with_env(&[], &[("RELAYBOX_LOG", "debug")]).await;
    let setup_code = std::fs::read_to_string(relay.data_dir().join("setup-code"))
        .expect("setup code")
        .trim()
        .to_string();
    let accounts = traffic(&relay).await;

    // Claim the admin pages with the setup code (as the wizard's first visitor does).
    let mut browser = Browser {
        addr: relay.https_addr(),
        from: ip(5),
        cookies: Vec::new(),
    };
    let r = browser
        .submit(
            "/admin/claim",
            "/admin/claim/code",
            &[("code", &setup_code)],
        )
        .await;
    assert_eq!(r.status, 303, "claim: {}", r.body_text());
    let r = browser
        .submit(
            "/admin/password",
            "/admin/password",
            &[("password", ADMIN_PASSWORD), ("confirm", ADMIN_PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 303, "password: {}", r.body_text());
    let secrets = data_dir_secrets(&relay.data_dir());

    // Not without a session.
    let mut stranger = Browser {
        addr: relay.https_addr(),
        from: ip(7),
        cookies: Vec::new(),
    };
    let r = stranger.get("/admin/status/report").await;
    assert_eq!(r.status, 303, "{}", r.body_text());
    assert_eq!(r.header("location"), Some("/admin/login"));

    let status = browser.get("/admin/status").await;
    assert!(status.body_text().contains("href=\"/admin/status/report\""));
    let r = browser.get("/admin/status/report").await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    let disposition = r
        .header("content-disposition")
        .unwrap_or_default()
        .to_string();
    assert!(
        disposition.starts_with("attachment; filename=\"relaybox-report-127.0.0.1-")
            && disposition.ends_with(".txt\""),
        "{disposition}"
    );
    let page_report = r.body_text();
    check_report(
        &page_report,
        "status page",
        &accounts,
        &secrets,
        &setup_code,
    );
    assert!(page_report.contains("state: running"), "{page_report}");
    // The live sections, with the listeners' addresses scrubbed.
    assert!(
        page_report.contains("[ok] SMTP (25): listening on <IPv4>:"),
        "{page_report}"
    );
    assert!(
        page_report.contains("<address>"),
        "log lines with addresses, scrubbed:\n{page_report}"
    );
    assert!(page_report.contains("<IPv4>"), "{page_report}");
    // The queued message for the peer: its domain is an IP literal, scrubbed.
    assert!(
        page_report.contains("- [<IPv4>]: 1 message(s)"),
        "{page_report}"
    );

    // `relaybox report` while the relay runs: the daemon makes it.
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = out_dir.path().join("running.txt");
    let (status, stderr) = run_report(&relay, &out).await;
    assert!(status.success(), "relaybox report (running): {stderr}");
    let running = std::fs::read_to_string(&out).expect("report written");
    check_report(
        &running,
        "relaybox report (running)",
        &accounts,
        &secrets,
        &setup_code,
    );
    assert!(running.contains("state: running"), "{running}");
    assert!(running.contains("## Recent log lines\n\n```"), "{running}");

    // Stopped: the command opens the store itself.
    relay.stop().await;
    let out = out_dir.path().join("stopped.txt");
    let (status, stderr) = run_report(&relay, &out).await;
    assert!(status.success(), "relaybox report (stopped): {stderr}");
    let stopped = std::fs::read_to_string(&out).expect("report written");
    check_report(
        &stopped,
        "relaybox report (stopped)",
        &accounts,
        &secrets,
        &setup_code,
    );
    for part in [
        "state: not running",
        "## Services\n\nrelay not running",
        "## DNS checks\n\nrelay not running",
        "## Recent log lines\n\nrelay not running",
        "- [<IPv4>]: 1 message(s)",
    ] {
        assert!(stopped.contains(part), "{part:?} missing:\n{stopped}");
    }
}
