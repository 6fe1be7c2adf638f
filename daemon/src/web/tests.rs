//! Route tests of the site: page contents from the config, QR code PNG and SVG, MTA-STS,
//! `www.` redirect, `www_folder` with refused traversal.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use tower::ServiceExt;

use super::*;
use crate::config::Config;
use crate::http::{Web, https_router, new_account_quota};
use crate::policy::ratelimit::RateLimiter;
use crate::server::Relay;

struct Site {
    _dir: tempfile::TempDir,
    relay: Arc<Relay>,
}

impl Site {
    fn new(domain: &str, adjust: impl FnOnce(&mut Config, &Path)) -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = crate::testing::config(&dir.path().join("data"), domain);
        adjust(&mut config, dir.path());
        let relay = Relay::open(config).expect("relay");
        Site { _dir: dir, relay }
    }

    async fn get(&self, path: &str, host: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
        self.request(Method::GET, path, host).await
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        host: &str,
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let router = https_router(Web {
            relay: self.relay.clone(),
            limiter: Arc::new(RateLimiter::new(new_account_quota())),
            peer: IpAddr::from([192, 0, 2, 9]),
        });
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, host)
            .body(Body::empty())
            .expect("request");
        let resp = router.oneshot(req).await.expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 24)
            .await
            .expect("body");
        (status, headers, body.to_vec())
    }

    async fn page(&self, path: &str) -> String {
        let host = self.relay.config.mail_domain.clone();
        let (status, headers, body) = self.get(path, &host).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(headers.get(header::SERVER).is_none(), "no server header");
        let html = String::from_utf8(body).expect("utf-8");
        // Small, phone-readable, no JavaScript.
        assert!(html.contains("<meta name=\"viewport\""), "{path}");
        assert!(!html.to_ascii_lowercase().contains("<script"), "{path}");
        assert!(html.len() < 40_000, "{path}: {} bytes", html.len());
        html
    }
}

/// The dark modules an SVG path from `qr_svg` draws, as (x, y) pairs.
fn svg_modules(path: &str) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for square in path.split('M').filter(|s| !s.is_empty()) {
        // `{x} {y}h{n}v1h-{n}z`
        let (xy, rest) = square.split_once('h').expect("h");
        let (x, y) = xy.split_once(' ').expect("x y");
        let n = rest.split_once('v').expect("v").0;
        let (x, y, n): (u32, u32, u32) = (
            x.parse().expect("x"),
            y.parse().expect("y"),
            n.parse().expect("n"),
        );
        out.extend((x..x + n).map(|x| (x, y)));
    }
    out
}

fn expected_modules(text: &str) -> Vec<(u32, u32)> {
    let (size, dark) = qr_modules(text).expect("qr");
    let mut out = Vec::new();
    for y in 0..size {
        for x in 0..size {
            if dark(x, y) {
                out.push((x, y));
            }
        }
    }
    out
}

/// The `d` attribute of the page's QR code.
fn svg_path(html: &str) -> &str {
    let start = html.find("<path fill=\"#000\" d=\"").expect("qr path") + 21;
    let end = html[start..].find('"').expect("end") + start;
    &html[start..end]
}

#[tokio::test]
async fn index_has_the_dcaccount_link_and_its_qr() {
    // NEW-6
    let site = Site::new("chat.example.org", |_, _| {});
    for path in ["/", "/index.html"] {
        let html = site.page(path).await;
        assert!(
            html.contains("href=\"DCACCOUNT:https://chat.example.org/new\""),
            "{html}"
        );
        assert!(html.contains("<h1>chat.example.org</h1>"));
        assert!(html.contains("<a href=\"/info.html\">"));
        assert!(html.contains("<a href=\"/privacy.html\">"));
        assert_eq!(
            svg_modules(svg_path(&html)),
            expected_modules("DCACCOUNT:https://chat.example.org/new")
        );
    }
    let (_, headers, _) = site.get("/", "chat.example.org").await;
    assert_eq!(headers[header::CACHE_CONTROL], "max-age=3600");
}

/// Issue 18: while sign-up is closed or by invite only the page offers no code (the
/// relay would refuse it) and says why; open again, the code is back.
#[tokio::test]
async fn index_offers_no_code_while_sign_up_is_closed_or_by_invite() {
    let site = Site::new("chat.example.org", |_, _| {});
    let signup = site.relay.auth.signup();
    for (mode, text) in [
        (crate::signup::Mode::Closed, "does not take new profiles"),
        (
            crate::signup::Mode::Invite,
            "ask its owner for an invite QR code",
        ),
    ] {
        signup.set_mode(mode, None).unwrap();
        let html = site.page("/").await;
        assert!(html.contains(text), "{html}");
        assert!(!html.contains("DCACCOUNT:"), "{html}");
        assert!(!html.contains("<svg"), "{html}");
        let (_, headers, _) = site.get("/", "chat.example.org").await;
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    }
    signup
        .set_mode(crate::signup::Mode::NoAutomatic, None)
        .unwrap();
    assert!(
        site.page("/")
            .await
            .contains("href=\"DCACCOUNT:https://chat.example.org/new\"")
    );
}

#[tokio::test]
async fn index_offers_dcaccount_domain_besides_the_https_invite() {
    // Upstream 1.12: `DCACCOUNT:<domain>` (the client invents the credentials) as an
    // alternative; the QR stays the `/new` invite.
    let site = Site::new("chat.example.org", |_, _| {});
    let html = site.page("/").await;
    assert!(
        html.contains("href=\"DCACCOUNT:chat.example.org\""),
        "{html}"
    );
    assert!(html.contains("href=\"DCACCOUNT:https://chat.example.org/new\""));
    assert_eq!(
        svg_modules(svg_path(&html)),
        expected_modules("DCACCOUNT:https://chat.example.org/new")
    );
    // Name rules that would refuse the client's 9-character address: not offered.
    let site = Site::new("chat.example.org", |c, _| {
        c.username_min_length = 12;
        c.username_max_length = 12;
    });
    let html = site.page("/").await;
    assert!(!html.contains("DCACCOUNT:chat.example.org"), "{html}");
}

#[tokio::test]
async fn self_signed_index_has_fresh_dclogin_credentials() {
    // NEW-6: self-signed modes show a `dclogin:` QR with fresh random credentials.
    for (domain, addr_domain) in [("127.0.0.1", "[127.0.0.1]"), ("_relay.test", "_relay.test")] {
        let site = Site::new(domain, |_, _| {});
        let first = site.page("/").await;
        let second = site.page("/").await;
        let link = |html: &str| -> String {
            let start = html.find("href=\"dclogin:").expect("dclogin link") + 6;
            let end = html[start..].find('"').expect("end") + start;
            html[start..end].replace("&#38;", "&")
        };
        let (a, b) = (link(&first), link(&second));
        assert_ne!(a, b, "fresh credentials per page");
        let local = a
            .strip_prefix("dclogin:")
            .and_then(|r| r.split_once('@'))
            .expect("address")
            .0;
        assert_eq!(local.len(), site.relay.config.username_max_length, "{a}");
        assert!(a.contains(&format!("@{addr_domain}?p=")), "{a}");
        assert!(a.ends_with("&ic=3"), "{a}");
        if domain == "127.0.0.1" {
            assert!(a.contains("&ih=127.0.0.1&sh=127.0.0.1"), "{a}");
        }
        assert!(!first.contains("DCACCOUNT"), "{first}");
        assert_eq!(svg_modules(svg_path(&first)), expected_modules(&a));
        let (_, headers, _) = site.get("/", domain).await;
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        // §17: no invite PNG in self-signed mode.
        let (status, _, _) = site.get(&qr_png_path(&site.relay.config), domain).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn info_shows_the_configured_limits() {
    let site = Site::new("chat.example.org", |c, _| {
        c.max_mailbox_size = 3 * 1024 * 1024 * 1024;
        c.max_message_size = 31_457_280;
        c.delete_mails_after = 17;
        c.delete_inactive_users_after = 123;
        c.max_user_send_per_minute = 42;
    });
    let html = site.page("/info.html").await;
    for want in [
        "Up to 3 GiB.",
        "Up to 30 MiB per message",
        "17 days after",
        "for 123 days",
        "Up to 42 messages per minute",
    ] {
        assert!(html.contains(want), "{want} missing in {html}");
    }
    // The defaults read as upstream's (500M).
    let site = Site::new("chat.example.org", |_, _| {});
    let html = site.page("/info.html").await;
    assert!(html.contains("Up to 500 MiB."), "{html}");
    assert!(html.contains("20 days after") && html.contains("for 90 days"));
    assert!(html.contains("Up to 60 messages per minute"));
}

#[tokio::test]
async fn privacy_shows_the_contacts_escaped() {
    let site = Site::new("chat.example.org", |c, _| {
        c.privacy_postal = "Relay Ops <b>GmbH</b>\nMain Street 1".into();
        c.privacy_mail = "privacy@chat.example.org".into();
        c.privacy_pdo = "Dr. Data".into();
        c.privacy_supervisor = "State & Federal Office".into();
    });
    let html = site.page("/privacy.html").await;
    for want in [
        "Relay Ops &#60;b&#62;GmbH&#60;/b&#62;\nMain Street 1",
        "<a href=\"mailto:privacy@chat.example.org\">privacy@chat.example.org</a>",
        "Dr. Data",
        "State &#38; Federal Office",
    ] {
        assert!(html.contains(want), "{want} missing in {html}");
    }
    assert!(!html.contains("<b>GmbH"));
    assert!(!html.contains("not given"));
    let site = Site::new("chat.example.org", |_, _| {});
    let html = site.page("/privacy.html").await;
    assert_eq!(html.matches("not given").count(), 4, "{html}");
}

#[tokio::test]
async fn qr_png_decodes_to_the_invite_code() {
    let site = Site::new("chat.example.org", |_, _| {});
    let path = qr_png_path(&site.relay.config);
    assert_eq!(path, "/qr-chatmail-invite-chat.example.org.png");
    let (status, headers, body) = site.get(&path, "chat.example.org").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "image/png");
    let (w, h, rows) = png::decode_bw(&body).expect("valid PNG");
    let (size, dark) = qr_modules("DCACCOUNT:https://chat.example.org/new").expect("qr");
    assert_eq!((w, h), (size * PNG_SCALE, size * PNG_SCALE));
    for (y, row) in rows.iter().enumerate() {
        for (x, &px) in row.iter().enumerate() {
            let (x, y) = (x as u32, y as u32);
            assert_eq!(px, dark(x / PNG_SCALE, y / PNG_SCALE), "pixel {x},{y}");
        }
    }
    // The quiet zone is white, and there are dark modules at all.
    assert!(!rows[0][0] && rows.iter().flatten().any(|&d| d));
}

#[tokio::test]
async fn mta_sts_only_on_its_host() {
    let site = Site::new("chat.example.org", |_, _| {});
    let want = "version: STSv1\r\nmode: enforce\r\nmx: chat.example.org\r\nmax_age: 2419200\r\n";
    for host in ["mta-sts.chat.example.org", "MTA-STS.chat.example.org:443"] {
        let (status, headers, body) = site.get(MTA_STS_PATH, host).await;
        assert_eq!(status, StatusCode::OK, "{host}");
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .is_ok_and(|v| v.starts_with("text/plain")),
            "{headers:?}"
        );
        assert_eq!(String::from_utf8(body).expect("utf-8"), want);
    }
    for host in ["chat.example.org", "mta-sts.other.org", "evil\"host"] {
        let (status, _, _) = site.get(MTA_STS_PATH, host).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{host}");
    }
}

#[tokio::test]
async fn www_redirects_pages_to_the_apex() {
    // PORT-5
    let site = Site::new("chat.example.org", |_, _| {});
    for path in ["/", "/privacy.html", MTA_STS_PATH] {
        let (status, headers, _) = site.get(path, "www.chat.example.org").await;
        assert_eq!(status, StatusCode::MOVED_PERMANENTLY, "{path}");
        assert_eq!(
            headers[header::LOCATION],
            format!("https://chat.example.org{path}").as_str()
        );
    }
    // Unknown paths are still 404 with the built-in pages.
    let (status, _, _) = site.get("/nope.html", "chat.example.org").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

#[tokio::test]
async fn www_folder_replaces_the_pages_without_traversal() {
    let site = Site::new("chat.example.org", |c, dir| {
        let www = dir.join("www");
        write(&www.join("index.html"), "custom index");
        write(&www.join("about.html"), "about us");
        write(&www.join("docs/index.html"), "docs index");
        write(&www.join("docs/a b.txt"), "spaced");
        write(&www.join(".secret"), "hidden");
        write(&dir.join("secret.txt"), "outside");
        std::os::unix::fs::symlink(dir.join("secret.txt"), www.join("link.txt")).expect("symlink");
        c.www_folder = Some(www);
    });
    let host = "chat.example.org";
    for (path, want, ctype) in [
        ("/", "custom index", "text/html; charset=utf-8"),
        ("/index.html", "custom index", "text/html; charset=utf-8"),
        ("/about.html", "about us", "text/html; charset=utf-8"),
        ("/docs/", "docs index", "text/html; charset=utf-8"),
        ("/docs/a%20b.txt", "spaced", "text/plain; charset=utf-8"),
    ] {
        let (status, headers, body) = site.get(path, host).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers[header::CONTENT_TYPE], ctype, "{path}");
        assert_eq!(String::from_utf8(body).expect("utf-8"), want, "{path}");
    }
    let (status, headers, _) = site.get("/docs", host).await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(headers[header::LOCATION], "/docs/");
    for path in [
        "/../secret.txt",
        "/docs/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/docs/..%2f..%2fsecret.txt",
        "/..%5csecret.txt",
        "/.secret",
        "/link.txt",
        "/info.html",
        "/privacy.html",
        "/missing.html",
        "/%ff.html",
    ] {
        let (status, _, body) = site.get(path, host).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(
            !String::from_utf8_lossy(&body).contains("outside"),
            "{path}"
        );
    }
    let (status, _, _) = site.request(Method::POST, "/about.html", host).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, body) = site.request(Method::HEAD, "/about.html", host).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 0));
    // The service endpoints still work.
    let (status, _, body) = site.get("/robots.txt", host).await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, &b"User-agent: *\nDisallow: /\n"[..])
    );
    let (status, _, _) = site.get(MTA_STS_PATH, "mta-sts.chat.example.org").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = site.get(&qr_png_path(&site.relay.config), host).await;
    assert_eq!(status, StatusCode::OK);
}

#[test]
fn folder_paths() {
    let root = Path::new("/srv/www");
    let file = |p: &str| folder_file(root, &p.parse().expect("uri"));
    assert_eq!(file("/"), Some(root.join("index.html")));
    assert_eq!(file("/a/b.css"), Some(root.join("a/b.css")));
    assert_eq!(file("/a//b/"), Some(root.join("a/b/index.html")));
    for bad in [
        "/..",
        "/a/../b",
        "/%2E%2E/x",
        "/a/%2e",
        "/.git/config",
        "/a%00b",
        "/a%5cb",
    ] {
        assert_eq!(file(bad), None, "{bad}");
    }
}

#[test]
fn sizes_for_people() {
    assert_eq!(human_size(524_288_000), "500 MiB");
    assert_eq!(human_size(2 * 1024 * 1024 * 1024), "2 GiB");
    assert_eq!(human_size(1000), "1000 bytes");
}
