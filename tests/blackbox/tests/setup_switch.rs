//! The switch from setup mode to the relay (issue 16, item 6), seen from kept-alive
//! HTTP connections: the real `relaybox` binary starts in setup mode (no `mail_domain`)
//! on the standard ports of a fresh `127.a.b.2`; the test claims it, sets the password
//! and chooses IP-only mode over one kept-alive connection, holding a second kept-alive
//! connection opened (and used) before the switch. Once the relay listens on 443, every
//! request on port 80 must get the relay's answer (a redirect to HTTPS, the ACME
//! HTTP-01 path's 404), never setup mode's `303 /admin/`, whichever connection it is
//! sent on. A connection the server closed without answering is retried on a new one,
//! as HTTP clients do with idempotent requests (RFC 9112 §9.3.1).
//!
//! Every wait is bounded; the daemon is killed on drop.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use relaybox_blackbox::federation::{self, Net};
use relaybox_blackbox::relay;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the daemon may take to listen (setup mode, then the relay).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound of one connect, write or response read.
const IO_LIMIT: Duration = Duration::from_secs(10);
/// The admin password set by the test (≥ 10 characters).
const PASSWORD: &str = "correct horse battery staple";
/// Largest response read (the wizard's pages are a few KiB).
const MAX_RESPONSE: usize = 1 << 20;

/// The daemon in setup mode on `ip`'s standard ports. Dropping it kills it.
struct Daemon {
    daemon: relay::SetupMode,
    ip: Ipv4Addr,
}

impl Daemon {
    async fn start() -> Daemon {
        let ip = Net::fresh().host(2);
        let mut ini = federation::standard_listeners(ip);
        ini += "mdns_name =\nturn_listen =\nlog_stderr = true\n";
        let mut d = Daemon {
            daemon: relay::SetupMode::spawn("relaybox-switch-", &ini),
            ip,
        };
        d.wait_listening(80, true).await;
        d
    }

    fn sock(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip, port))
    }

    /// Where setup mode writes its code (the default: in data_dir).
    fn code_file(&self) -> PathBuf {
        self.daemon.dir().join("data/setup-code")
    }

    fn stderr(&self) -> String {
        self.daemon.stderr()
    }

    /// Wait until `port` accepts (and, with `code`, the setup code is written).
    async fn wait_listening(&mut self, port: u16, code: bool) {
        let code = code.then(|| self.code_file());
        let addr = self.sock(port);
        self.daemon
            .wait_listening(addr, code.as_deref(), START_TIMEOUT)
            .await;
    }
}

/// One response.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value of the hidden `csrf` field of the page's first form.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no csrf field in:\n{}", self.body));
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').expect("end of the csrf value")].to_string()
    }
}

/// An HTTP/1.1 client on one kept-alive connection with a cookie jar. When the server
/// has closed the connection, a request is sent again on a new connection (RFC 9112
/// §9.3.1); `reconnects` counts those.
struct KeepAlive {
    addr: SocketAddr,
    host: String,
    tcp: Option<TcpStream>,
    buf: Vec<u8>,
    cookies: Vec<(String, String)>,
    reconnects: usize,
}

impl KeepAlive {
    async fn connect(addr: SocketAddr) -> KeepAlive {
        let mut c = KeepAlive {
            addr,
            host: addr.ip().to_string(),
            tcp: None,
            buf: Vec::new(),
            cookies: Vec::new(),
            reconnects: 0,
        };
        c.open().await;
        c
    }

    async fn open(&mut self) {
        let tcp = tokio::time::timeout(IO_LIMIT, TcpStream::connect(self.addr))
            .await
            .expect("connect in time")
            .expect("connect");
        self.tcp = Some(tcp);
        self.buf.clear();
    }

    async fn get(&mut self, path: &str) -> Response {
        self.send("GET", path, "").await
    }

    async fn post(&mut self, path: &str, form: &str) -> Response {
        self.send("POST", path, form).await
    }

    /// Send a request; on a connection the server closed before answering, once more
    /// on a new connection.
    async fn send(&mut self, method: &str, path: &str, form: &str) -> Response {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect();
            head += &format!("Cookie: {}\r\n", jar.join("; "));
        }
        if method == "POST" {
            head += "Content-Type: application/x-www-form-urlencoded\r\n";
            head += &format!("Content-Length: {}\r\n", form.len());
        }
        head += "\r\n";
        let request = format!("{head}{form}");
        for attempt in 0..2 {
            if self.tcp.is_none() {
                self.open().await;
            }
            match self.exchange(request.as_bytes()).await {
                Some(r) => {
                    self.keep_cookies(&r);
                    if r.header("connection")
                        .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                    {
                        self.tcp = None;
                    }
                    return r;
                }
                None => {
                    assert_eq!(attempt, 0, "{method} {path}: closed on a new connection");
                    self.tcp = None;
                    self.reconnects += 1;
                }
            }
        }
        unreachable!("two attempts")
    }

    /// One request and its response; `None` when the connection was closed (or reset)
    /// before any byte of a response.
    async fn exchange(&mut self, request: &[u8]) -> Option<Response> {
        let tcp = self.tcp.as_mut().expect("open connection");
        match tokio::time::timeout(IO_LIMIT, tcp.write_all(request)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return None,
            Err(_) => panic!("write timed out"),
        }
        let deadline = tokio::time::Instant::now() + IO_LIMIT;
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(r) = parse(&mut self.buf) {
                return Some(r);
            }
            assert!(self.buf.len() < MAX_RESPONSE, "response too large");
            let tcp = self.tcp.as_mut().expect("open connection");
            let n = match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
                Ok(Ok(n)) => n,
                Ok(Err(_)) if self.buf.is_empty() => return None,
                Ok(Err(e)) => panic!("read: {e}"),
                Err(_) => panic!("no whole response within {IO_LIMIT:?}"),
            };
            if n == 0 {
                assert!(
                    self.buf.is_empty(),
                    "connection closed in the middle of a response"
                );
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn keep_cookies(&mut self, r: &Response) {
        for (name, value) in &r.headers {
            if !name.eq_ignore_ascii_case("set-cookie") {
                continue;
            }
            let pair = value.split(';').next().unwrap_or("");
            let Some((n, v)) = pair.split_once('=') else {
                continue;
            };
            self.cookies.retain(|(old, _)| old != n.trim());
            if !v.trim().is_empty() && !value.to_ascii_lowercase().contains("max-age=0") {
                self.cookies
                    .push((n.trim().to_string(), v.trim().to_string()));
            }
        }
    }
}

/// Take one whole response (`Content-Length` or chunked body) from the front of `buf`.
fn parse(buf: &mut Vec<u8>) -> Option<Response> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let start = end + 4;
    let (body, used) = if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut body = Vec::new();
        let mut at = start;
        loop {
            let line_end = at + buf[at..].windows(2).position(|w| w == b"\r\n")?;
            let size = String::from_utf8_lossy(&buf[at..line_end]);
            let size =
                usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).ok()?;
            let data = line_end + 2;
            if buf.len() < data + size + 2 {
                return None;
            }
            body.extend_from_slice(&buf[data..data + size]);
            at = data + size + 2;
            if size == 0 {
                break;
            }
        }
        (body, at)
    } else {
        let len: usize = get("content-length").map_or(0, |v| v.parse().expect("length"));
        if buf.len() < start + len {
            return None;
        }
        (buf[start..start + len].to_vec(), start + len)
    };
    buf.drain(..used);
    Some(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Setup mode's answer to every path outside `/admin`.
fn is_setup_redirect(r: &Response) -> bool {
    r.status == 303 && r.header("location") == Some("/admin/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_connections_get_the_relays_answers_after_the_switch() {
    let mut daemon = Daemon::start().await;
    let http = daemon.sock(80);
    let ip = daemon.ip;

    // Issue 16 (item 11): the console line names the address that works, and no
    // `relaybox.local` with mDNS off (`mdns_name =`).
    let log = daemon.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("setup: open"))
        .unwrap_or_else(|| panic!("no setup line in the log:\n{log}"));
    assert!(
        line.contains(&format!("http://{ip}/admin/")) && !line.contains(".local"),
        "the setup line names only working addresses: {line}"
    );

    // A connection opened in setup mode, used once and kept.
    let mut held = KeepAlive::connect(http).await;
    let r = held.get("/").await;
    assert!(
        is_setup_redirect(&r),
        "setup mode sends / to the wizard: {r:?}"
    );

    // The wizard over another kept-alive connection: claim, password, IP-only mode.
    let mut wizard = KeepAlive::connect(http).await;
    let code = std::fs::read_to_string(daemon.code_file()).expect("setup code");
    let page = wizard.get("/admin/claim").await;
    assert_eq!(page.status, 200, "claim page: {page:?}");
    let form = format!("csrf={}&code={}", page.csrf(), code.trim());
    let r = wizard.post("/admin/claim/code", &form).await;
    assert_eq!(
        r.header("location"),
        Some("/admin/password"),
        "claimed: {r:?}"
    );
    let page = wizard.get("/admin/password").await;
    assert_eq!(page.status, 200, "password page: {page:?}");
    let pw = PASSWORD.replace(' ', "+");
    let form = format!("csrf={}&password={pw}&confirm={pw}", page.csrf());
    let r = wizard.post("/admin/password", &form).await;
    assert_eq!(r.status, 303, "password set: {r:?}");
    let page = wizard.get("/admin/setup/domain").await;
    assert_eq!(page.status, 200, "domain page: {page:?}");
    let form = format!("csrf={}&mode=ip&domain=&ip={ip}", page.csrf());
    let r = wizard.post("/admin/setup/domain", &form).await;
    assert_eq!(
        r.header("location"),
        Some("/admin/setup/ports"),
        "IP-only mode chosen: {r:?}"
    );
    assert_eq!(wizard.reconnects, 0, "the wizard ran on one connection");

    // The relay runs once it listens on 443 (setup mode listens on 80 only).
    daemon.wait_listening(443, false).await;

    for client in [&mut held, &mut wizard] {
        // Port 80 of a running relay: ACME HTTP-01 answers, a redirect to HTTPS for
        // everything else (PORT-4).
        for path in ["/", "/new", "/admin/status", "/no/such/page"] {
            let r = client.get(path).await;
            assert!(!is_setup_redirect(&r), "GET {path} after the switch: {r:?}");
            let location = r.header("location").unwrap_or("");
            assert!(
                (300..400).contains(&r.status)
                    && location.starts_with(&format!("https://{ip}"))
                    && location.ends_with(path),
                "GET {path} after the switch: the relay's redirect to HTTPS: {r:?}"
            );
        }
        let r = client
            .get("/.well-known/acme-challenge/unknown-token")
            .await;
        assert_eq!(
            r.status, 404,
            "an unknown ACME token after the switch: the relay's 404: {r:?}"
        );
    }
    // The held connections were not answered by setup mode any more: the server closed
    // them (at most once each), the requests went to new connections.
    assert!(
        held.reconnects <= 1 && wizard.reconnects <= 1,
        "reconnects: held {}, wizard {}",
        held.reconnects,
        wizard.reconnects
    );
    let log = daemon.stderr();
    assert!(!log.contains("panicked"), "daemon log:\n{log}");
}
