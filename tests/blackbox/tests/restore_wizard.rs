//! Backups from the admin pages against the real binary (issue 17 items 2 and 3): a relay
//! with two accounts, a message and a claimed admin password is backed up with `relaybox
//! backup` and stopped; a fresh daemon in setup mode (another data directory) is claimed
//! with its setup code and given a new admin password; the backup is uploaded in its
//! wizard ("Restore from a backup"). A wrong passphrase is refused on the page and
//! nothing changes (still setup mode, no store, the config as it was); the right one
//! restores: the same process switches to the relay, the old accounts log in over IMAP
//! with their old passwords and find the message, and the admin pages take the OLD admin
//! password (not the one set in the wizard). Then "Download a backup now" from that
//! relay's status page: the file restores with `relaybox restore` into another data
//! directory, accounts and all.
//!
//! Every wait is bounded; every daemon is killed on drop.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use relaybox_blackbox::http::{self, HttpResponse};
use relaybox_blackbox::mail::stored_message_id;
use relaybox_blackbox::relay::{SetupMode, arg, run_tool, tool_text};
use relaybox_blackbox::{Account, Imap, LineConn, Relay, Smtp, create_account, encrypted_mail};

const PASSPHRASE: &str = "a long and secret passphrase";
/// The admin password of the relay that is backed up.
const OLD_ADMIN: &str = "the old relay's admin password";
/// The admin password set in the new box's wizard before the restore.
const NEW_ADMIN: &str = "a password set in the wizard";
const IO_LIMIT: Duration = Duration::from_secs(120);
/// How long a daemon may take to listen (setup mode, then the restored relay).
const START_TIMEOUT: Duration = Duration::from_secs(60);
const BOUNDARY: &str = "----relayboxRestoreBoundary";

fn client() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5))
}

/// The admin pages from 127.0.0.5 (HTTP in setup mode, HTTPS once the relay runs), one
/// connection per request, with a cookie jar.
struct Browser {
    addr: SocketAddr,
    tls: bool,
    cookies: Vec<(String, String)>,
}

impl Browser {
    fn new(addr: SocketAddr, tls: bool) -> Browser {
        Browser {
            addr,
            tls,
            cookies: Vec::new(),
        }
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> HttpResponse {
        let conn = if self.tls {
            LineConn::connect_tls_from(client(), self.addr, &[]).await
        } else {
            LineConn::connect_from(client(), self.addr).await
        };
        let mut conn = conn.unwrap_or_else(|e| panic!("connect to {}: {e}", self.addr));
        let mut head = format!("{method} {path} HTTP/1.1\nHost: 127.0.0.1");
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect();
            head += &format!("\nCookie: {}", jar.join("; "));
        }
        if !content_type.is_empty() {
            head += &format!("\nContent-Type: {content_type}");
        }
        let r = tokio::time::timeout(IO_LIMIT, http::request(&mut conn, &head, body))
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
        self.send("GET", path, "", b"").await
    }

    /// The CSRF token of the page at `path`.
    async fn csrf(&mut self, path: &str) -> String {
        let p = self.get(path).await;
        assert_eq!(p.status, 200, "{path}: {}", p.body_text());
        let body = p.body_text();
        let at = body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no csrf field on {path}:\n{body}"));
        let rest = &body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').expect("end of the csrf value")].to_string()
    }

    /// GET `page`, then POST `fields` with its CSRF token to `action`.
    async fn submit(&mut self, page: &str, action: &str, fields: &[(&str, &str)]) -> HttpResponse {
        let csrf = self.csrf(page).await;
        let mut form = format!("csrf={}", encode(&csrf));
        for (k, v) in fields {
            form += &format!("&{k}={}", encode(v));
        }
        let kind = "application/x-www-form-urlencoded";
        self.send("POST", action, kind, form.as_bytes()).await
    }

    /// Claim the box with `code` and set `password`.
    async fn claim(&mut self, code: &str, password: &str) {
        let r = self
            .submit("/admin/claim", "/admin/claim/code", &[("code", code)])
            .await;
        assert_eq!(r.status, 303, "claim: {}", r.body_text());
        let fields = [("password", password), ("confirm", password)];
        let r = self
            .submit("/admin/password", "/admin/password", &fields)
            .await;
        assert_eq!(r.status, 303, "password: {}", r.body_text());
    }

    async fn login(&mut self, password: &str) -> HttpResponse {
        self.submit("/admin/login", "/admin/login", &[("password", password)])
            .await
    }

    /// Upload `file` in the wizard's restore form.
    async fn upload_backup(&mut self, file: &[u8]) -> HttpResponse {
        let csrf = self.csrf("/admin/setup/restore").await;
        let mut body = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n\
             --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"backup\"; \
             filename=\"relay.backup\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(file);
        body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        let kind = format!("multipart/form-data; boundary={BOUNDARY}");
        self.send("POST", "/admin/setup/restore/upload", &kind, &body)
            .await
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

async fn relaybox(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_tool(args, env, IO_LIMIT).await
}

fn setup_code(data: &Path) -> String {
    std::fs::read_to_string(data.join("setup-code"))
        .expect("setup code")
        .trim()
        .to_string()
}

/// The element with `id`'s text up to its first tag.
fn text_of(body: &str, id: &str) -> Option<String> {
    let at = body.find(&format!("id=\"{id}\""))?;
    let start = at + body[at..].find('>')? + 1;
    let end = start + body[start..].find('<')?;
    Some(body[start..end].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_is_restored_in_the_wizard_and_downloaded_from_the_status_page() {
    // The relay to move: two accounts, a message, a claimed admin password.
    let mut old = Relay::start(&[]).await;
    let (a, b) = (Account::random(), Account::random());
    create_account(&old, &b).await;
    let mut s = Smtp::login(&old, &a).await;
    let m = encrypted_mail(&a.addr, &[&b.addr]);
    assert_eq!(s.send_mail(&a.addr, &[&b.addr], &m.bytes).await.code, 250);
    s.quit().await;
    let mut admin = Browser::new(old.https_addr(), true);
    admin.claim(&setup_code(&old.data_dir()), OLD_ADMIN).await;
    let work = tempfile::tempdir().unwrap();
    let backup = work.path().join("relay.backup");
    let made = relaybox(
        &[
            "backup",
            "--config",
            arg(&old.config_path()),
            "--out",
            arg(&backup),
        ],
        &[("RELAYBOX_BACKUP_PASSPHRASE", PASSPHRASE)],
    )
    .await;
    assert!(made.status.success(), "backup: {}", tool_text(&made));
    // The new machine takes over the old one's addresses (the backup's config).
    old.stop().await;

    // A fresh box in setup mode, claimed, with a new admin password.
    let http_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let http = SocketAddr::from(([127, 0, 0, 1], http_port));
    let mut daemon = SetupMode::spawn(
        "relaybox-restore-wizard-",
        &format!("http_listen = {http}\nmdns_name =\nturn_listen =\nlog_stderr = true\n"),
    );
    let data = daemon.dir().join("data");
    let config_file = daemon.dir().join("chatmail.ini");
    daemon
        .wait_listening(http, Some(&data.join("setup-code")), START_TIMEOUT)
        .await;
    let config_before = std::fs::read_to_string(&config_file).unwrap();
    let mut wizard = Browser::new(http, false);
    wizard.claim(&setup_code(&data), NEW_ADMIN).await;
    let domain_page = wizard.get("/admin/setup/domain").await.body_text();
    assert!(
        domain_page.contains("href=\"/admin/setup/restore\""),
        "offered on the first page: {domain_page}"
    );

    // The upload: its header is shown before the passphrase is asked.
    let file = std::fs::read(&backup).unwrap();
    let r = wizard.upload_backup(&file).await;
    assert_eq!(r.status, 303, "upload: {}", r.body_text());
    let page = wizard.get("/admin/setup/restore").await.body_text();
    assert_eq!(
        text_of(&page, "backup-domain").as_deref(),
        Some("127.0.0.1")
    );
    assert!(
        text_of(&page, "backup-messages").is_some_and(|t| t.starts_with("inside")),
        "{page}"
    );

    // A wrong passphrase: said so; still setup mode, nothing changed.
    let r = wizard
        .submit(
            "/admin/setup/restore",
            "/admin/setup/restore",
            &[("passphrase", "not the passphrase")],
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body_text());
    let error = text_of(&r.body_text(), "restore-error").expect("an error on the page");
    assert!(error.starts_with("Wrong passphrase"), "{error}");
    assert!(!data.join("relaybox.redb").exists(), "no store appeared");
    assert_eq!(
        std::fs::read_to_string(&config_file).unwrap(),
        config_before
    );
    let r = wizard.get("/admin/").await;
    assert_eq!(
        r.header("location"),
        Some("/admin/setup/domain"),
        "still setup mode"
    );
    assert!(
        tokio::net::TcpStream::connect(old.imaps_addr())
            .await
            .is_err(),
        "no relay listens yet"
    );

    // The right one: restored, and the same process switches to the relay.
    let r = wizard
        .submit(
            "/admin/setup/restore",
            "/admin/setup/restore",
            &[("passphrase", PASSPHRASE)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    let done = r.body_text();
    assert!(
        done.contains("admin password of the relay the backup was made of"),
        "{done}"
    );
    daemon
        .wait_listening(old.imaps_addr(), None, START_TIMEOUT)
        .await;
    // The old accounts with their old passwords, and the message.
    let mut c = Imap::connect_tls(old.imaps_addr()).await;
    c.greeting().await;
    let wrong = c.login(&b.addr, "not-the-password").await;
    assert_eq!(
        wrong.status, "NO",
        "a wrong password after the restore: {wrong}"
    );
    drop(c);
    Smtp::login(&old, &a).await.quit().await;
    let inbox = Imap::fetch_inbox(&old, &b).await;
    assert_eq!(inbox.len(), 1, "the message came along");
    assert_eq!(
        stored_message_id(&inbox[0]).as_deref(),
        Some(m.message_id.as_str())
    );
    // The admin pages: the OLD password, not the one set in the wizard.
    let mut admin = Browser::new(old.https_addr(), true);
    let r = admin.login(NEW_ADMIN).await;
    assert_ne!(r.status, 303, "the wizard's password is gone");
    let r = admin.login(OLD_ADMIN).await;
    assert_eq!(r.status, 303, "old admin password: {}", r.body_text());

    // "Download a backup now" from the status page of the running relay.
    let r = admin
        .submit(
            "/admin/status",
            "/admin/backup/download",
            &[
                ("passphrase", PASSPHRASE),
                ("confirm", PASSPHRASE),
                ("messages", "on"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    let disposition = r.header("content-disposition").unwrap_or_default();
    assert!(
        disposition.starts_with("attachment; filename=\"relaybox-127.0.0.1-")
            && disposition.ends_with(".backup\""),
        "{disposition}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".download-") || n.ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "not kept on the box: {leftovers:?}");
    let downloaded = work.path().join("downloaded.backup");
    std::fs::write(&downloaded, &r.body).unwrap();
    // It restores with the command line into another data directory.
    let elsewhere = work.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let other_config = elsewhere.join("chatmail.ini");
    std::fs::write(
        &other_config,
        format!(
            "[params]\nmail_domain = 127.0.0.1\ndata_dir = {}\n",
            elsewhere.join("data").display()
        ),
    )
    .unwrap();
    let restored = relaybox(
        &["restore", "--config", arg(&other_config), arg(&downloaded)],
        &[("RELAYBOX_BACKUP_PASSPHRASE", PASSPHRASE)],
    )
    .await;
    assert!(
        restored.status.success(),
        "restore: {}",
        tool_text(&restored)
    );
    assert!(
        String::from_utf8_lossy(&restored.stdout).contains("2 account(s)"),
        "{}",
        tool_text(&restored)
    );
    let listed = relaybox(&["accounts", "list", "--config", arg(&other_config)], &[]).await;
    assert!(listed.status.success(), "{}", tool_text(&listed));
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listing.contains(&a.addr) && listing.contains(&b.addr),
        "{listing}"
    );
    drop(daemon);
}
