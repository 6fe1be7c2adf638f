//! The relay's `/metrics` endpoint (LOG-5) as the tests read it: a free loopback address
//! for `mtail_address`, one scrape, its samples, and polling (bounded) until the samples
//! show a state — how a test waits for something the relay does in the background (a
//! session's end, an emptied queue) instead of sleeping.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use tokio::time::Instant;

use crate::conn::LineConn;
use crate::http::{self, HttpResponse};

/// How long the metrics listener may take to accept after the service ports do.
pub const SCRAPE_WAIT: Duration = Duration::from_secs(10);
/// Pause between two scrapes while waiting for a state.
const POLL: Duration = Duration::from_millis(50);

/// A free port on 127.0.0.1, as an address for `mtail_address`.
pub fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free loopback port")
}

/// The config line that serves the metrics at `addr`.
pub fn ini_line(addr: SocketAddr) -> String {
    format!("mtail_address = {addr}")
}

/// One `GET /metrics` with an optional `Accept` header (the connection retried while
/// the listener is not up yet, bounded by [`SCRAPE_WAIT`]); the answer must be `200`.
pub async fn scrape(addr: SocketAddr, accept: Option<&str>) -> HttpResponse {
    let deadline = Instant::now() + SCRAPE_WAIT;
    let mut conn = loop {
        match LineConn::connect(addr).await {
            Ok(c) => break c,
            Err(e) if Instant::now() >= deadline => {
                panic!("metrics endpoint {addr} not reachable: {e}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    };
    let mut head = String::from("GET /metrics HTTP/1.1\nHost: metrics");
    if let Some(a) = accept {
        head += &format!("\nAccept: {a}");
    }
    let resp = http::request(&mut conn, &head, b"")
        .await
        .expect("metrics response");
    assert_eq!(resp.status, 200, "{}", resp.status_line);
    resp
}

/// Sample name (with labels, as written) → value.
pub fn samples(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("sample line without a value: {l:?}"));
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("not a whole number: {l:?}"));
            (name.to_string(), value)
        })
        .collect()
}

/// The value of `sample` in `s` (asserted present).
pub fn get(s: &HashMap<String, u64>, sample: &str) -> u64 {
    *s.get(sample)
        .unwrap_or_else(|| panic!("no sample {sample} in {s:?}"))
}

/// Scrape `addr` until `done` holds for the samples, at most `within`; the last
/// exposition seen and its samples either way (the caller asserts).
pub async fn wait_for(
    addr: SocketAddr,
    within: Duration,
    done: impl Fn(&HashMap<String, u64>) -> bool,
) -> (String, HashMap<String, u64>) {
    let deadline = Instant::now() + within;
    loop {
        let text = scrape(addr, None).await.body_text();
        let s = samples(&text);
        if done(&s) || Instant::now() >= deadline {
            return (text, s);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The gauge of open connections of `service` (`smtp`, `submission`, `submissions`,
/// `imap`, `imaps`, `https`, `http`).
pub fn open_connections(service: &str) -> String {
    format!("relaybox_connections_open{{service=\"{service}\"}}")
}
