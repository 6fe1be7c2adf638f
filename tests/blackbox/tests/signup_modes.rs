//! The sign-up modes (issue 18 item 2) against the real binary: `signup` in chatmail.ini
//! and changed live on the status page (behind the admin login), over IMAP first login,
//! SMTP AUTH and `POST /new`.
//!
//! - closed: new names get `NO [CONTACTADMIN]` / `550 5.7.0` / `503` with the users'
//!   wording; existing accounts keep working; the change is written to chatmail.ini;
//! - invite: the admin makes an invite on the sign-up page; its code (`dclogin:` on this
//!   self-signed IP-only relay, its password carrying the token) and `/new?invite=TOKEN`
//!   each create one account; once used up, revoked or forged the answer says so; the
//!   uses survive a restart and are listed on the page;
//! - no-automatic: a first login with a 23-character password of letters and digits
//!   (what Delta Chat's automatic relay selection makes) is refused, a 22-character one
//!   and `/new`'s accounts are not.
//!
//! Each refusal is counted in `relaybox_registrations_refused_total{reason}`.

use std::net::SocketAddr;
use std::time::Duration;

use relaybox_blackbox::mail::random_string;
use relaybox_blackbox::metrics::{free_address, get, ini_line, wait_for};
use relaybox_blackbox::{Account, Imap, LineConn, Relay, Smtp, create_account, http};

const IO_LIMIT: Duration = Duration::from_secs(20);
const ADMIN_PASSWORD: &str = "signup-admin-password-1";
const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

const CLOSED_TEXT: &str = "This relay does not create new accounts";
const NEED_INVITE: &str = "This relay creates new accounts only with an invite";
const USED_UP: &str = "This invite has been used as often as it may";
const FORGED: &str = "This invite is not valid on this relay";
const REVOKED: &str = "This invite was withdrawn by the relay's owner";
const AUTOMATIC: &str = "This relay does not take accounts from automatic relay selection";

fn metric(reason: &str) -> String {
    format!("relaybox_registrations_refused_total{{reason=\"{reason}\"}}")
}

/// The answer to `LOGIN` of a name on a fresh 993 connection: OK or not, tagged line.
async fn imap_login(relay: &Relay, user: &str, password: &str) -> (bool, String) {
    let mut c = Imap::connect_tls(relay.imaps_addr()).await;
    c.greeting().await;
    let r = c.login(user, password).await;
    c.logout().await;
    (r.is_ok(), r.tagged.clone())
}

/// The last line of the answer to `AUTH PLAIN` on a 465 connection.
async fn smtp_auth(relay: &Relay, user: &str, password: &str) -> String {
    let mut s = Smtp::connect_tls(relay.submissions_addr()).await;
    s.greeting().await;
    s.ehlo().await;
    let r = s.auth_plain(user, password).await;
    s.quit().await;
    r.last().to_string()
}

/// `POST <path>` on the HTTPS port: status and body.
async fn post_new(relay: &Relay, path: &str) -> (u16, String) {
    let mut conn = tokio::time::timeout(IO_LIMIT, LineConn::connect_tls(relay.https_addr(), &[]))
        .await
        .expect("connect in time")
        .expect("TLS to the HTTPS port");
    let head = format!("POST {path} HTTP/1.1\nHost: 127.0.0.1");
    let r = tokio::time::timeout(IO_LIMIT, http::request(&mut conn, &head, b""))
        .await
        .expect("answer in time")
        .expect("POST /new");
    (r.status, r.body_text())
}

/// `/new`'s JSON: (email, password), asserted 200.
async fn new_credentials(relay: &Relay, path: &str) -> Account {
    let (status, body) = post_new(relay, path).await;
    assert_eq!(status, 200, "POST {path}: {body}");
    let j: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let email = j["email"].as_str().expect("email").to_string();
    Account {
        local: email.split('@').next().unwrap_or("").to_string(),
        addr: email,
        password: j["password"].as_str().expect("password").to_string(),
    }
}

/// `/new` refused with 503 and the users' wording in `reason`.
async fn new_refused(relay: &Relay, path: &str, text: &str) {
    let (status, body) = post_new(relay, path).await;
    assert_eq!(status, 503, "POST {path}: {body}");
    let j: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let reason = j["reason"].as_str().expect("reason");
    assert!(reason.starts_with(text), "POST {path}: {reason}");
}

/// A new name refused over IMAP (`NO [CONTACTADMIN] <text>`) and SMTP (`550 5.7.0
/// <text>`); the name is not created.
async fn creation_refused(relay: &Relay, user: &str, password: &str, text: &str) {
    let (ok, tagged) = imap_login(relay, user, password).await;
    assert!(
        !ok && tagged.contains(&format!("NO [CONTACTADMIN] {text}")),
        "IMAP LOGIN {user}: {tagged}"
    );
    let smtp = smtp_auth(relay, user, password).await;
    assert!(
        smtp.starts_with(&format!("550 5.7.0 {text}")),
        "SMTP AUTH {user}: {smtp}"
    );
}

/// One response of the admin pages.
struct Page {
    status: u16,
    location: Option<String>,
    body: String,
}

impl Page {
    fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let at = self
            .body
            .find(marker)
            .unwrap_or_else(|| panic!("no csrf field in:\n{}", self.body))
            + marker.len();
        self.body[at..at + self.body[at..].find('"').expect("end")].to_string()
    }
}

/// A browser on the relay's admin pages (HTTPS, one connection per request, a cookie
/// jar), logged in after claiming the relay with its setup code.
struct Admin {
    addr: SocketAddr,
    cookies: Vec<(String, String)>,
}

fn form_encode(s: &str) -> String {
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

impl Admin {
    async fn claim(relay: &Relay) -> Admin {
        let mut a = Admin {
            addr: relay.https_addr(),
            cookies: Vec::new(),
        };
        let code = std::fs::read_to_string(relay.data_dir().join("setup-code")).expect("code");
        let p = a.get("/admin/claim").await;
        assert_eq!(p.status, 200, "claim page: {}", p.body);
        let r = a
            .post(
                "/admin/claim/code",
                &[("csrf", &p.csrf()), ("code", code.trim())],
            )
            .await;
        assert_eq!(r.location.as_deref(), Some("/admin/password"), "{}", r.body);
        let p = a.get("/admin/password").await;
        let r = a
            .post(
                "/admin/password",
                &[
                    ("csrf", &p.csrf()),
                    ("password", ADMIN_PASSWORD),
                    ("confirm", ADMIN_PASSWORD),
                ],
            )
            .await;
        assert_eq!(r.status, 303, "password set: {}", r.body);
        a
    }

    async fn get(&mut self, path: &str) -> Page {
        self.send("GET", path, "").await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.send("POST", path, &body).await
    }

    /// GET `page`, then POST `form` with its CSRF token to `action`.
    async fn submit(&mut self, page: &str, action: &str, form: &[(&str, &str)]) -> Page {
        let csrf = self.get(page).await.csrf();
        let mut full = vec![("csrf", csrf.as_str())];
        full.extend_from_slice(form);
        self.post(action, &full).await
    }

    async fn send(&mut self, method: &str, path: &str, body: &str) -> Page {
        let mut conn = tokio::time::timeout(IO_LIMIT, LineConn::connect_tls(self.addr, &[]))
            .await
            .expect("connect in time")
            .expect("TLS to the HTTPS port");
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
        let r = tokio::time::timeout(IO_LIMIT, http::request(&mut conn, &head, body.as_bytes()))
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
            let pair = value.trim().split(';').next().unwrap_or("");
            let Some((n, v)) = pair.split_once('=') else {
                continue;
            };
            self.cookies.retain(|(old, _)| old != n.trim());
            if !v.is_empty() && !value.to_ascii_lowercase().contains("max-age=0") {
                self.cookies.push((n.trim().to_string(), v.to_string()));
            }
        }
        Page {
            status: r.status,
            location: r.header("Location").map(str::to_string),
            body: r.body_text(),
        }
    }

    /// Choose a mode on the sign-up page.
    async fn set_mode(&mut self, mode: &str) {
        let r = self
            .submit("/admin/signup", "/admin/signup/mode", &[("mode", mode)])
            .await;
        assert_eq!(r.location.as_deref(), Some("/admin/signup"), "{}", r.body);
    }

    /// Make an invite; its id.
    async fn make_invite(&mut self, days: &str, uses: &str) -> String {
        let r = self
            .submit(
                "/admin/signup",
                "/admin/signup/invites",
                &[("days", days), ("uses", uses), ("label", "test invite")],
            )
            .await;
        let at = r
            .location
            .unwrap_or_else(|| panic!("no invite made: {}", r.body));
        at.strip_prefix("/admin/signup/invite/")
            .expect("invite page")
            .to_string()
    }

    /// The invite's link as its page shows it (HTML-escaped `&` undone).
    async fn invite_link(&mut self, id: &str) -> String {
        let p = self.get(&format!("/admin/signup/invite/{id}")).await;
        assert_eq!(p.status, 200, "{}", p.body);
        let marker = "id=\"invite-link\" href=\"";
        let at = p.body.find(marker).expect("invite link") + marker.len();
        p.body[at..at + p.body[at..].find('"').unwrap()].replace("&amp;", "&")
    }
}

/// The account a `dclogin:` link holds.
fn dclogin_account(url: &str) -> Account {
    let rest = url.strip_prefix("dclogin:").expect("dclogin: link");
    let (addr, query) = rest.split_once('?').expect("query");
    let p = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("p="))
        .expect("p=");
    let mut password = String::new();
    let bytes = p.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            password.push(u8::from_str_radix(hex, 16).unwrap() as char);
            i += 3;
        } else {
            password.push(bytes[i] as char);
            i += 1;
        }
    }
    Account {
        local: addr.split('@').next().unwrap().to_string(),
        addr: addr.to_string(),
        password,
    }
}

/// The invite token an invite password carries (`inv.<token>.<secret>`).
fn token_of(password: &str) -> String {
    let rest = password.strip_prefix("inv.").expect("invite password");
    rest[..26].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_keeps_existing_accounts_and_says_why_to_new_ones() {
    let metrics = free_address();
    let relay = Relay::start(&[&ini_line(metrics)]).await;
    let known = Account::random();
    create_account(&relay, &known).await;
    let mut admin = Admin::claim(&relay).await;
    admin.set_mode("closed").await;
    // Written to chatmail.ini, so it outlasts a restart.
    let ini = std::fs::read_to_string(relay.config_path()).unwrap();
    assert!(ini.contains("\nsignup = closed\n"), "{ini}");
    let status = admin.get("/admin/status").await;
    assert!(
        status.body.contains("id=\"signup-mode\">Closed<"),
        "{}",
        status.body
    );

    let fresh = Account::random();
    creation_refused(&relay, &fresh.addr, &fresh.password, CLOSED_TEXT).await;
    new_refused(&relay, "/new", CLOSED_TEXT).await;
    // Existing accounts keep working, over IMAP and SMTP.
    Imap::login_tls(&relay, &known).await.logout().await;
    let smtp = smtp_auth(&relay, &known.addr, &known.password).await;
    assert!(smtp.starts_with("235"), "{smtp}");

    let (text, s) = wait_for(metrics, Duration::from_secs(10), |s| {
        get(s, &metric("closed")) >= 3
    })
    .await;
    assert_eq!(get(&s, &metric("closed")), 3, "{text}");

    // Open again: the refused name is created now.
    admin.set_mode("open").await;
    create_account(&relay, &fresh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invites_create_accounts_until_used_up_and_forged_ones_are_refused() {
    let metrics = free_address();
    let mut relay = Relay::start(&[&ini_line(metrics), "signup = invite"]).await;
    let mut admin = Admin::claim(&relay).await;

    // No invite: refused everywhere, with the reason.
    let fresh = Account::random();
    creation_refused(&relay, &fresh.addr, &fresh.password, NEED_INVITE).await;
    new_refused(&relay, "/new", NEED_INVITE).await;

    // An invite for two accounts. This IP-only relay's code is a `dclogin:` link
    // whose password carries the token.
    let id = admin.make_invite("7", "2").await;
    let link = admin.invite_link(&id).await;
    assert!(link.starts_with("dclogin:"), "{link}");
    let first = dclogin_account(&link);
    let token = token_of(&first.password);
    // Use 1: the code's own account, at its first login.
    create_account(&relay, &first).await;
    // Use 2: `/new` with the token in its URL hands out an account that carries it.
    let second = new_credentials(&relay, &format!("/new?invite={token}")).await;
    assert_eq!(token_of(&second.password), token);
    create_account(&relay, &second).await;
    // Used up: `/new` and a third login refused; the two accounts keep working.
    new_refused(&relay, &format!("/new?invite={token}"), USED_UP).await;
    let third = dclogin_account(&admin.invite_link(&id).await);
    creation_refused(&relay, &third.addr, &third.password, USED_UP).await;
    Imap::login_tls(&relay, &first).await.logout().await;
    Imap::login_tls(&relay, &second).await.logout().await;
    let list = admin.get("/admin/signup").await;
    assert!(
        list.body
            .contains(&format!("data-invite-id=\"{id}\" data-state=\"used-up\"")),
        "{}",
        list.body
    );
    assert!(
        list.body.contains("<td class=\"uses\">2 of 2</td>"),
        "{}",
        list.body
    );

    // Forged: a token of the right form nobody made, and a malformed one.
    let forged = random_string(26, b"abcdefghijklmnopqrstuvwxyz234567");
    new_refused(&relay, &format!("/new?invite={forged}"), FORGED).await;
    new_refused(&relay, "/new?invite=%27%3B--", FORGED).await;
    let other = Account::random();
    let forged_pw = format!("inv.{forged}.secret123");
    creation_refused(&relay, &other.addr, &forged_pw, FORGED).await;

    // Revoked.
    let id2 = admin.make_invite("1", "5").await;
    let revoked = dclogin_account(&admin.invite_link(&id2).await);
    let r = admin
        .submit("/admin/signup", "/admin/signup/revoke", &[("id", &id2)])
        .await;
    assert_eq!(r.location.as_deref(), Some("/admin/signup"), "{}", r.body);
    creation_refused(&relay, &revoked.addr, &revoked.password, REVOKED).await;

    // Counted: 3 (no invite: IMAP, SMTP, /new) + 3 (used up) + 4 (forged: two /new,
    // IMAP, SMTP) + 2 (revoked).
    let (text, s) = wait_for(metrics, Duration::from_secs(10), |s| {
        get(s, &metric("invite")) >= 12
    })
    .await;
    assert_eq!(get(&s, &metric("invite")), 12, "{text}");

    // Durable: after a restart (chatmail.ini rewritten by the harness, still `invite`)
    // the uses are still counted and the used-up invite stays used up.
    relay.restart().await;
    new_refused(&relay, &format!("/new?invite={token}"), USED_UP).await;
    let mut admin = Admin {
        addr: relay.https_addr(),
        cookies: admin.cookies,
    };
    let list = admin.get("/admin/signup").await;
    assert!(
        list.body.contains("<td class=\"uses\">2 of 2</td>"),
        "{}",
        list.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_automatic_refuses_23_character_passwords_only() {
    let metrics = free_address();
    let relay = Relay::start(&[&ini_line(metrics)]).await;
    // Made while sign-up was open, with a password as automatic relay selection makes.
    let earlier = Account {
        password: random_string(23, ALNUM),
        ..Account::random()
    };
    create_account(&relay, &earlier).await;
    let mut admin = Admin::claim(&relay).await;
    admin.set_mode("no-automatic").await;

    let a = Account::random();
    creation_refused(&relay, &a.addr, &random_string(23, ALNUM), AUTOMATIC).await;
    // 22 letters and digits (what `DCACCOUNT:<domain>` makes in newer cores): created.
    let manual = Account {
        password: random_string(22, ALNUM),
        ..Account::random()
    };
    create_account(&relay, &manual).await;
    // The relay's own `/new` account logs in.
    let from_new = new_credentials(&relay, "/new").await;
    create_account(&relay, &from_new).await;
    // An existing account with such a password is no creation: it logs in.
    Imap::login_tls(&relay, &earlier).await.logout().await;
    let (text, s) = wait_for(metrics, Duration::from_secs(10), |s| {
        get(s, &metric("automatic")) >= 2
    })
    .await;
    assert_eq!(get(&s, &metric("automatic")), 2, "{text}");
}

/// The default mode takes the same 23-character password (the refusal above is the
/// mode's, not a rule of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_takes_any_password() {
    let relay = Relay::start(&[]).await;
    let a = Account {
        password: random_string(23, ALNUM),
        ..Account::random()
    };
    create_account(&relay, &a).await;
}
