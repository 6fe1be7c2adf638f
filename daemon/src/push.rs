//! Push notifications (spec relay.md §13, PUSH-1..7): the notifier task that sends the
//! persisted push jobs to the notification proxy, and the retry schedule.
//!
//! Jobs are created by the store in the delivery's own durable commit
//! (`Store::deliver_with_push`, PUSH-2), so a `250` never precedes its jobs and they
//! survive restarts. Which tokens get jobs is `crate::policy::token`'s rule (MD-1). The
//! notifier ([`run`]) takes due jobs from the store and POSTs each token, alone, to
//! `push_url` (PUSH-3) over HTTPS with rustls+ring, trusting the web-PKI roots plus the
//! PEM file `tls_extra_roots`.
//!
//! Waking: the assembly's subscriber of the delivery event (IN-8, `crate::server`)
//! signals [`Handles::wake`], a `tokio::sync::Notify` that keeps one permit when no
//! notifier is waiting; a finishing request signals the notifier's own. Besides being
//! woken, the notifier sleeps until the earliest due retry, at most
//! `Tuning::scan_interval`, and then scans the store again; time comes from
//! [`Handles::clock`], so a test that moves the clock sees its retries at the next scan.
//!
//! Concurrency (PUSH-6, as upstream): at most 4 requests of first attempts and at most 2
//! per retry level (attempts 2, 3, 4, 5) run at once, one semaphore each; a due job
//! whose level is busy waits for the next scan, which a finishing request triggers.
//! A scan reads, per level with free slots, at most twice that level's slots of due
//! jobs from the store's due-time index, so a long queue (a proxy outage) costs no
//! more per scan than a short one.
//!
//! Connections: the relay's one HTTPS client (`tls::client`), HTTP/1.1 kept alive
//! between requests (up to one idle connection per worker slot). A request that fails
//! after connecting is sent once more, so a kept connection the proxy closed meanwhile
//! costs no retry delay.
//!
//! Restarts (PUSH-2): at start every pending job is made due at once; its deadline
//! stays its first attempt + 5 h, so a job past it is dropped unsent.
//!
//! Privacy (PUSH-7): the request carries the token and nothing else (no account, no
//! message data, no extra headers beyond HTTP's own); logs name jobs by their number
//! only, never a token or an address.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, Semaphore};

use crate::clock::Clock;
use crate::config::Config;
use crate::store::{PushJob, Store};
use crate::tls::client::{Body, HttpsClient, HttpsError, Options, read_body};

/// What the notifier uses of the relay, lent by the assembly (`crate::server`).
#[derive(Clone, Copy)]
pub struct Handles<'a> {
    /// `push_url`, `tls_extra_roots`.
    pub config: &'a Config,
    /// The push jobs (PUSH-2) and the device tokens (PUSH-4).
    pub store: &'a Store,
    pub clock: &'a Arc<dyn Clock>,
    /// Signalled when deliveries created jobs (keeps one permit while the notifier is
    /// busy, so no wake-up is lost).
    pub wake: &'a Notify,
}

/// PUSH-5: attempts before a job is dropped.
pub const MAX_ATTEMPTS: u32 = 5;
/// PUSH-5: waits after the 1st, 2nd, 3rd and 4th failed attempt (base 8 exponential).
pub const RETRY_DELAYS: [u64; 4] = [8, 64, 512, 4096];
/// PUSH-5: no attempt starts later than this after the first one.
pub const DEADLINE: u64 = 5 * 3600;
/// PUSH-3: request timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// PUSH-6: concurrent first attempts.
const FIRST_ATTEMPT_WORKERS: usize = 4;
/// PUSH-6: concurrent attempts per retry level.
const RETRY_WORKERS: usize = 2;

/// PUSH-5: when the next attempt of a job may start, after `failed` failed attempts,
/// given the time of its first attempt and the time now; `None`: drop the job.
/// `failed = 0` is the first attempt, due at once.
pub fn next_attempt_at(first_attempt: u64, failed: u32, now: u64) -> Option<u64> {
    if failed >= MAX_ATTEMPTS {
        return None;
    }
    let delay = match failed {
        0 => 0,
        n => *RETRY_DELAYS.get(n as usize - 1)?,
    };
    let at = now.saturating_add(delay);
    (at <= first_attempt.saturating_add(DEADLINE)).then_some(at)
}

/// Timing of the notifier loop.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Longest sleep between two scans of the store for due jobs.
    pub scan_interval: Duration,
    /// PUSH-3: per-request timeout.
    pub request_timeout: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            scan_interval: Duration::from_secs(30),
            request_timeout: REQUEST_TIMEOUT,
        }
    }
}

/// Why the notifier cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("push_url {0:?}: expected https://host[:port]/path")]
    Url(String),
    #[error("{0}")]
    Roots(#[from] crate::tls::TlsError),
}

/// What one POST came to (PUSH-4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 200: done.
    Delivered,
    /// 410: done, and the token is to be deleted.
    Gone,
    /// Anything else; the text is for the log (never contains the token).
    Failed(String),
}

// ---- HTTPS client -------------------------------------------------------------------

/// Posts tokens to the notification proxy over kept-alive HTTP/1.1 connections
/// ([`crate::tls::client`]).
pub struct Client {
    /// The `push_url`, an absolute `https://` URL.
    url: hyper::Uri,
    https: HttpsClient,
    timeout: Duration,
}

/// Idle connections kept for later requests (at most as many as run at once).
const MAX_IDLE_CONNECTIONS: usize = FIRST_ATTEMPT_WORKERS + 4 * RETRY_WORKERS;
/// Longest response body read (the proxy answers with an empty or short one).
const MAX_RESPONSE_BODY: usize = 64 * 1024;

impl Client {
    /// A client for the configured `push_url`, trusting the web-PKI roots and the
    /// certificates of `tls_extra_roots`.
    pub fn new(config: &Config, timeout: Duration) -> Result<Client, PushError> {
        let url = &config.push_url;
        crate::net::HttpsUrl::parse(url).ok_or_else(|| PushError::Url(url.clone()))?;
        let parsed: hyper::Uri = url.parse().map_err(|_| PushError::Url(url.clone()))?;
        // PUSH-3: the same roots as every outbound connection (OUT-4).
        let roots = crate::tls::client_roots(config)?;
        let mut options = Options::new(timeout);
        options.max_idle = MAX_IDLE_CONNECTIONS;
        let https = HttpsClient::verified(roots, options)
            .map_err(|e| PushError::Url(format!("{url}: {e}")))?;
        Ok(Client {
            url: parsed,
            https,
            timeout,
        })
    }

    /// PUSH-3/4: POST the token bytes as the whole body; the status decides.
    pub async fn post(&self, token: &[u8]) -> Outcome {
        match tokio::time::timeout(self.timeout, self.request(token)).await {
            Err(_) => Outcome::Failed("timed out".into()),
            Ok(Err(e)) => Outcome::Failed(e),
            Ok(Ok(200)) => Outcome::Delivered,
            Ok(Ok(410)) => Outcome::Gone,
            Ok(Ok(status)) => Outcome::Failed(format!("status {status}")),
        }
    }

    /// One POST, on a kept-alive connection when there is one. A request that fails
    /// after connecting (say on a kept connection the proxy closed meanwhile) is sent
    /// once more, so such a connection costs no retry delay (a repeated notification is
    /// harmless; a lost one is not).
    async fn request(&self, token: &[u8]) -> Result<u16, String> {
        match self.send(token).await {
            Err(e) if !e.is_connect() => self.send(token).await.map_err(|e| e.to_string()),
            other => other.map_err(|e| e.to_string()),
        }
    }

    async fn send(&self, token: &[u8]) -> Result<u16, HttpsError> {
        // PUSH-3, PUSH-7: the token as stored is the whole payload; `Host` comes from
        // the URL, no other header is added.
        let request = hyper::Request::post(self.url.clone())
            .body(Body::new(Bytes::copy_from_slice(token)))
            .map_err(|e| HttpsError::Request(e.to_string()))?;
        let response = self.https.send(request).await?;
        let status = response.status().as_u16();
        // Read to the end so the connection can carry the next request; a body over
        // the cap only costs the connection.
        let _ = read_body(response.into_body(), MAX_RESPONSE_BODY).await;
        Ok(status)
    }
}

// ---- the notifier -------------------------------------------------------------------

/// Run the notifier until the task is dropped.
pub async fn run(h: Handles<'_>) {
    run_with(h, Tuning::default()).await
}

/// Jobs being attempted, and the worker slots per level (PUSH-6).
struct Workers {
    in_flight: Mutex<HashSet<u64>>,
    /// Index 0: first attempts; 1..=4: retries after 1..=4 failures.
    levels: Vec<Arc<Semaphore>>,
    /// Signalled when an attempt ends and its slot is free (keeps one permit).
    slot_freed: Notify,
}

/// What one attempt, a task of its own, uses.
struct Attempt {
    store: Store,
    clock: Arc<dyn Clock>,
    client: Arc<Client>,
    workers: Arc<Workers>,
}

/// PUSH-6: concurrent attempts at a retry level (0 = first attempts).
fn level_capacity(level: usize) -> usize {
    if level == 0 {
        FIRST_ATTEMPT_WORKERS
    } else {
        RETRY_WORKERS
    }
}

/// [`run`] with explicit timing (tests shorten the scan interval).
pub async fn run_with(h: Handles<'_>, tuning: Tuning) {
    let client = match Client::new(h.config, tuning.request_timeout) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            // Jobs stay in the store; a corrected config sends them after a restart.
            tracing::error!("push notifications disabled: {e}");
            return;
        }
    };
    let workers = Arc::new(Workers {
        in_flight: Mutex::new(HashSet::new()),
        levels: (0..=crate::store::MAX_PUSH_LEVEL as usize)
            .map(|level| Arc::new(Semaphore::new(level_capacity(level))))
            .collect(),
        slot_freed: Notify::new(),
    });
    let attempts = Attempt {
        store: h.store.clone(),
        clock: h.clock.clone(),
        client,
        workers,
    };
    let workers = &attempts.workers;
    // PUSH-2: after a restart every pending job is tried at once; its deadline stays
    // first attempt + 5 h.
    match h.store.push_jobs() {
        Ok(jobs) => {
            let now = h.clock.unix_now();
            let waiting: Vec<&PushJob> = jobs.iter().filter(|j| j.next_attempt > now).collect();
            if !jobs.is_empty() {
                tracing::info!("push: {} pending job(s) at start", jobs.len());
            }
            for job in waiting {
                if let Err(e) = h.store.reschedule_push_job(job.id, job.attempts, now).await {
                    tracing::error!("push: cannot reschedule job {}: {e}", job.id);
                }
            }
        }
        Err(e) => tracing::error!("push: cannot read the queue: {e}"),
    }
    loop {
        let now = h.clock.unix_now();
        for (level, slots) in workers.levels.iter().enumerate() {
            // Jobs in flight are still due until they are rescheduled or deleted, and
            // they are at most `capacity`: reading twice that finds enough to start.
            if slots.available_permits() == 0 {
                continue;
            }
            match h
                .store
                .push_jobs_due_at(level as u32, now, 2 * level_capacity(level))
            {
                Ok(due) => {
                    for job in due {
                        dispatch(&attempts, job);
                    }
                }
                Err(e) => tracing::error!("push: cannot read the queue: {e}"),
            }
        }
        let wait = match h.store.next_push_due() {
            Ok(Some(at)) if at > now => Duration::from_secs(at - now).min(tuning.scan_interval),
            _ => tuning.scan_interval,
        };
        tokio::select! {
            _ = h.wake.notified() => {}
            _ = workers.slot_freed.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Start an attempt of `job` unless it runs already or its level is busy.
fn dispatch(a: &Attempt, job: PushJob) {
    let workers = &a.workers;
    let level = (job.attempts as usize).min(workers.levels.len() - 1);
    let Ok(permit) = workers.levels[level].clone().try_acquire_owned() else {
        return;
    };
    {
        let mut in_flight = workers.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if !in_flight.insert(job.id) {
            return;
        }
    }
    let (store, clock, client, workers) = (
        a.store.clone(),
        a.clock.clone(),
        a.client.clone(),
        workers.clone(),
    );
    tokio::spawn(async move {
        let id = job.id;
        attempt(&store, &*clock, &client, job).await;
        workers
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        drop(permit);
        // A slot is free: look for waiting jobs.
        workers.slot_freed.notify_one();
    });
}

/// One attempt of one job and its bookkeeping (PUSH-4, PUSH-5).
async fn attempt(store: &Store, clock: &dyn Clock, client: &Client, job: PushJob) {
    let now = clock.unix_now();
    if now > job.first_attempt.saturating_add(DEADLINE) {
        // PUSH-5: no attempt starts after the deadline (a restart after a long stop).
        tracing::info!(
            "push: job {} dropped after {} failed attempt(s), deadline passed",
            job.id,
            job.attempts
        );
        finish(store, job.id).await;
        return;
    }
    match client.post(job.token.as_bytes()).await {
        Outcome::Delivered => {
            tracing::debug!("push: job {} delivered", job.id);
            crate::metrics::push(crate::metrics::Push::Sent);
            finish(store, job.id).await;
        }
        Outcome::Gone => {
            // PUSH-4: the proxy no longer knows the token: forget it.
            tracing::info!("push: job {}: token expired (410), removed", job.id);
            crate::metrics::push(crate::metrics::Push::Gone);
            if let Err(e) = store
                .remove_device_tokens(&job.account, vec![job.token.clone()])
                .await
            {
                tracing::error!("push: cannot remove an expired token: {e}");
            }
            finish(store, job.id).await;
        }
        Outcome::Failed(why) => {
            crate::metrics::push(crate::metrics::Push::Failed);
            let failed = job.attempts + 1;
            let now = clock.unix_now();
            match next_attempt_at(job.first_attempt, failed, now) {
                Some(at) => {
                    tracing::info!(
                        "push: job {} attempt {failed} failed ({why}), retry in {} s",
                        job.id,
                        at - now
                    );
                    if let Err(e) = store.reschedule_push_job(job.id, failed, at).await {
                        tracing::error!("push: cannot reschedule job {}: {e}", job.id);
                    }
                }
                None => {
                    tracing::warn!(
                        "push: job {} dropped after {failed} failed attempt(s) ({why})",
                        job.id
                    );
                    finish(store, job.id).await;
                }
            }
        }
    }
}

async fn finish(store: &Store, id: u64) {
    if let Err(e) = store.delete_push_job(id).await {
        tracing::error!("push: cannot delete job {id}: {e}");
    }
}

#[cfg(test)]
mod tests {
    //! The schedule as a table; the notifier against a real HTTPS notification server
    //! on 127.0.0.1 (self-signed, trusted through `tls_extra_roots`), fed by real SMTP
    //! submission sessions, with the clock moved by the test.

    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    use base64::Engine;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::clock::Clock;
    use crate::net::Conn;
    use crate::server::Relay;
    use crate::store::PushRequest;
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;
    use rustls_pki_types::ServerName;

    #[test]
    fn schedule_table_push_5() {
        let t0 = 1_000_000;
        // (failed attempts, now) → next attempt.
        for (failed, now, expect) in [
            (0, t0, Some(t0)),
            (1, t0, Some(t0 + 8)),
            (2, t0 + 8, Some(t0 + 8 + 64)),
            (3, t0 + 72, Some(t0 + 72 + 512)),
            (4, t0 + 584, Some(t0 + 584 + 4096)),
            // After 5 failed attempts: dropped.
            (5, t0 + 4680, None),
            (9, t0, None),
            // The 5-hour deadline counts from the first attempt.
            (1, t0 + DEADLINE - 8, Some(t0 + DEADLINE)),
            (1, t0 + DEADLINE - 7, None),
            (4, t0 + DEADLINE - 4096, Some(t0 + DEADLINE)),
            (4, t0 + DEADLINE - 4095, None),
            (0, t0 + DEADLINE, Some(t0 + DEADLINE)),
            (0, t0 + DEADLINE + 1, None),
            (2, u64::MAX - 1, None),
        ] {
            assert_eq!(
                next_attempt_at(t0, failed, now),
                expect,
                "failed {failed} at +{}",
                now.wrapping_sub(t0)
            );
        }
        assert_eq!(RETRY_DELAYS.iter().sum::<u64>(), 4680);
    }

    #[test]
    fn client_refuses_bad_urls_and_roots() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = crate::testing::config(dir.path(), "example.org");
        c.push_url = "http://127.0.0.1/notify".into();
        assert!(matches!(
            Client::new(&c, REQUEST_TIMEOUT),
            Err(PushError::Url(_))
        ));
        c.push_url = "https://notifications.delta.chat/notify".into();
        assert!(Client::new(&c, REQUEST_TIMEOUT).is_ok());
        c.tls_extra_roots = Some(dir.path().join("missing.pem"));
        assert!(matches!(
            Client::new(&c, REQUEST_TIMEOUT),
            Err(PushError::Roots(_))
        ));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        c.tls_extra_roots = Some(empty);
        assert!(matches!(
            Client::new(&c, REQUEST_TIMEOUT),
            Err(PushError::Roots(_))
        ));
    }

    // ---- the notification server --------------------------------------------------

    const OK: &str = "openpgp:ok";
    const GONE: &str = "openpgp:gone";
    const FLAKY: &str = "openpgp:flaky";
    const FAIL: &str = "openpgp:fail";

    /// One request the server received.
    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        path: String,
        body: Vec<u8>,
        header_names: Vec<String>,
    }

    /// HTTPS on 127.0.0.1: 410 for GONE, 500 for FAIL, 500 then 200 for FLAKY, else 200.
    struct PushServer {
        url: String,
        roots: PathBuf,
        seen: Arc<Mutex<Vec<Seen>>>,
        /// TLS connections accepted.
        connections: Arc<AtomicU64>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for PushServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl PushServer {
        async fn start(dir: &Path) -> PushServer {
            let (cert, key) = crate::tls::generate_self_signed("127.0.0.1").unwrap();
            let (cert_path, key_path) = (dir.join("push-cert.pem"), dir.join("push-key.pem"));
            std::fs::write(&cert_path, cert).unwrap();
            std::fs::write(&key_path, key).unwrap();
            let key = crate::tls::load_certified_key(&cert_path, &key_path).unwrap();
            let tls = crate::tls::Tls::new(key).unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.tls12.clone());
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
            let log = seen.clone();
            let connections: Arc<AtomicU64> = Arc::default();
            let count = connections.clone();
            let task = tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    let (acceptor, log) = (acceptor.clone(), log.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        let service = hyper::service::service_fn(move |req| {
                            let log = log.clone();
                            async move { Ok::<_, Infallible>(answer(req, &log).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            });
            PushServer {
                url: format!("https://127.0.0.1:{}/notify", addr.port()),
                roots: cert_path,
                seen,
                connections,
                task,
            }
        }

        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }

        fn bodies(&self) -> Vec<String> {
            self.seen()
                .iter()
                .map(|s| String::from_utf8_lossy(&s.body).into_owned())
                .collect()
        }

        /// Wait (bounded) until `n` requests arrived.
        async fn wait_for(&self, n: usize) {
            for _ in 0..500 {
                if self.seen.lock().unwrap().len() >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("expected {n} request(s), got {:?}", self.bodies());
        }
    }

    async fn answer(
        req: hyper::Request<hyper::body::Incoming>,
        log: &Mutex<Vec<Seen>>,
    ) -> hyper::Response<Full<Bytes>> {
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let header_names = req.headers().keys().map(|k| k.to_string()).collect();
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes().to_vec(),
            Err(_) => Vec::new(),
        };
        let status = {
            let mut log = log.lock().unwrap();
            let earlier = log.iter().filter(|s| s.body == body).count();
            log.push(Seen {
                method,
                path,
                body: body.clone(),
                header_names,
            });
            match body.as_slice() {
                b if b == GONE.as_bytes() => 410,
                b if b == FAIL.as_bytes() => 500,
                b if b == FLAKY.as_bytes() && earlier == 0 => 500,
                _ => 200,
            }
        };
        hyper::Response::builder()
            .status(status)
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    // ---- the relay ------------------------------------------------------------------

    /// A clock the test moves.
    struct TestClock(AtomicU64);

    impl Clock for TestClock {
        fn unix_now(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
        fn monotonic(&self) -> Instant {
            Instant::now()
        }
    }

    impl TestClock {
        fn advance(&self, secs: u64) {
            self.0.fetch_add(secs, Ordering::SeqCst);
        }
    }

    const START: u64 = 1_800_000_000;
    const PASSWORD: &str = "password123";
    const STEP: Duration = Duration::from_secs(10);
    const FAST: Tuning = Tuning {
        scan_interval: Duration::from_millis(20),
        request_timeout: Duration::from_secs(10),
    };

    fn relay_config(dir: &Path, server: &PushServer) -> Config {
        let mut c = crate::testing::config(dir, "example.org");
        c.username_min_length = 3;
        c.username_max_length = 20;
        c.max_user_send_burst_size = 100;
        c.push_url = server.url.clone();
        c.tls_extra_roots = Some(server.roots.clone());
        c
    }

    /// Open the relay in `dir`, waiting for an earlier instance to let go of the store.
    async fn open_relay(config: &Config, clock: &Arc<TestClock>) -> Arc<Relay> {
        for _ in 0..250 {
            match Relay::open_with_clock(config.clone(), clock.clone()) {
                Ok(r) => return r,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        panic!("relay did not open within 5 s");
    }

    /// The notifier of one relay, stopped on drop.
    struct Notifier(tokio::task::JoinHandle<()>);

    impl Drop for Notifier {
        fn drop(&mut self) {
            self.0.abort();
        }
    }

    fn notifier(relay: &Arc<Relay>) -> Notifier {
        let relay = relay.clone();
        Notifier(tokio::spawn(async move {
            run_with(relay.push_handles(), FAST).await
        }))
    }

    async fn account(relay: &Relay, local: &str) -> String {
        relay
            .auth
            .login(
                &format!("{local}@example.org"),
                PASSWORD,
                std::net::Ipv4Addr::LOCALHOST.into(),
            )
            .await
            .unwrap()
    }

    async fn register(relay: &Relay, account: &str, token: &str) {
        let now = relay.clock.unix_now();
        relay
            .store
            .set_device_token(account, token, now)
            .await
            .unwrap();
    }

    /// An encrypted message (the encryption-gate fixture, or a minimal PGP/MIME one).
    fn encrypted(from: &str, to: &str) -> Vec<u8> {
        let template = Path::new("/work/shared/fixtures/encryption-gate-templates/encrypted.eml");
        let text = std::fs::read_to_string(template).unwrap_or_else(|_| {
            let packets = [
                0xC1, 0x03, 0x03, 0x00, 0x00, 0xD2, 0x05, 0x01, 0xAA, 0xBB, 0xCC,
            ];
            let b64 = base64::engine::general_purpose::STANDARD.encode(packets);
            format!(
                "From: {{from_addr}}\r\nTo: {{to_addr}}\r\nSubject: {{subject}}\r\n\
                 MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; \
                 protocol=\"application/pgp-encrypted\"; boundary=\"B\"\r\n\r\n\
                 --B\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n\
                 --B\r\nContent-Type: application/octet-stream\r\n\r\n\
                 -----BEGIN PGP MESSAGE-----\r\n\r\n{b64}\r\n=AAAA\r\n\
                 -----END PGP MESSAGE-----\r\n\r\n--B--\r\n"
            )
        });
        text.replace("{from_addr}", from)
            .replace("{to_addr}", to)
            .replace("{subject}", "s")
            .into_bytes()
    }

    type Reader = BufReader<tokio_rustls::client::TlsStream<TcpStream>>;

    async fn reply(io: &mut Reader) -> String {
        let mut last = String::new();
        for _ in 0..50 {
            let mut line = String::new();
            let n = tokio::time::timeout(STEP, io.read_line(&mut line))
                .await
                .expect("reply in time")
                .unwrap();
            assert!(n > 0, "connection closed");
            let more = line.as_bytes().get(3) == Some(&b'-');
            last = line.trim_end().to_string();
            if !more {
                return last;
            }
        }
        panic!("endless reply: {last}");
    }

    async fn cmd(io: &mut Reader, line: &str, code: &str) {
        io.get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        let r = reply(io).await;
        assert!(r.starts_with(code), "{line} → {r}");
    }

    /// One submission session (implicit TLS, as 465) on loopback: `from` logs in and
    /// sends an encrypted message to `rcpts`; returns the final reply to DATA.
    async fn submit(relay: &Arc<Relay>, from: &str, rcpts: &[&str]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let r = relay.clone();
        let server = tokio::spawn(async move {
            let (stream, peer) = listener.accept().await.unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(r.tls.tls13.clone());
            let tls = acceptor.accept(stream).await.unwrap();
            let limits = crate::smtp::Limits {
                idle: STEP,
                ..Default::default()
            };
            crate::smtp::serve_with(
                r.smtp_handles(),
                Conn::Tls(Box::new(tls)),
                peer,
                crate::smtp::Mode::Submission,
                limits,
            )
            .await;
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let connector = crate::testing::tls_connector(&[&rustls::version::TLS13], None);
        let name = ServerName::try_from("example.org").unwrap();
        let tls = connector.connect(name, stream).await.unwrap();
        let mut io = BufReader::new(tls);
        assert!(reply(&mut io).await.starts_with("220"));
        cmd(&mut io, "EHLO client.test", "250").await;
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{from}\0{PASSWORD}"));
        cmd(&mut io, &format!("AUTH PLAIN {auth}"), "235").await;
        cmd(&mut io, &format!("MAIL FROM:<{from}>"), "250").await;
        for rcpt in rcpts {
            cmd(&mut io, &format!("RCPT TO:<{rcpt}>"), "250").await;
        }
        cmd(&mut io, "DATA", "354").await;
        let mut data = Vec::new();
        for line in encrypted(from, &rcpts.join(", ")).split_inclusive(|&b| b == b'\n') {
            if line.first() == Some(&b'.') {
                data.push(b'.');
            }
            data.extend_from_slice(line);
        }
        if !data.ends_with(b"\r\n") {
            data.extend_from_slice(b"\r\n");
        }
        data.extend_from_slice(b".\r\n");
        io.get_mut().write_all(&data).await.unwrap();
        let result = reply(&mut io).await;
        cmd(&mut io, "QUIT", "221").await;
        tokio::time::timeout(STEP, server)
            .await
            .expect("session ends")
            .unwrap();
        result
    }

    /// Wait (bounded) until the push queue is empty.
    async fn queue_drained(relay: &Relay) {
        for _ in 0..500 {
            if relay.store.push_jobs().unwrap().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("jobs left: {:?}", relay.store.push_jobs().unwrap().len());
    }

    /// Wait (bounded) until the one job left has `attempts` failed attempts.
    async fn failed_attempts(relay: &Relay, attempts: u32) -> PushJob {
        for _ in 0..500 {
            if let [job] = relay.store.push_jobs().unwrap().as_slice()
                && job.attempts == attempts
            {
                return job.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no job with {attempts} failed attempt(s)");
    }

    /// Long enough for several scans of the notifier.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // ---- end to end -----------------------------------------------------------------

    #[tokio::test]
    async fn delivery_posts_the_token_once_and_self_sent_mail_posts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let server = PushServer::start(dir.path()).await;
        let clock = Arc::new(TestClock(AtomicU64::new(START)));
        let relay = open_relay(&relay_config(&dir.path().join("relay"), &server), &clock).await;
        let _n = notifier(&relay);
        let alice = account(&relay, "alice").await;
        let bob = account(&relay, "bob").await;
        register(&relay, &alice, "openpgp:alice").await;
        register(&relay, &bob, OK).await;

        // PUSH-1: alice writes to bob and to herself: only bob's device is notified.
        let r = submit(&relay, &alice, &[&bob, &alice]).await;
        assert!(r.starts_with("250"), "{r}");
        server.wait_for(1).await;
        queue_drained(&relay).await;
        settle().await;
        let seen = server.seen();
        assert_eq!(seen.len(), 1, "{:?}", server.bodies());
        // PUSH-3, PUSH-7: a POST to the configured path with the token as the whole
        // body and no other data.
        assert_eq!(seen[0].method, "POST");
        assert_eq!(seen[0].path, "/notify");
        assert_eq!(seen[0].body, OK.as_bytes());
        for name in &seen[0].header_names {
            assert!(
                ["host", "content-length"].contains(&name.as_str()),
                "unexpected header {name}"
            );
        }
        // Both got the message.
        assert_eq!(relay.store.messages(&bob, "INBOX").unwrap().1.len(), 1);
        assert_eq!(relay.store.messages(&alice, "INBOX").unwrap().1.len(), 1);

        // Self-sent only: no push at all, and no job.
        let r = submit(&relay, &alice, &[&alice]).await;
        assert!(r.starts_with("250"), "{r}");
        settle().await;
        assert_eq!(server.seen().len(), 1, "{:?}", server.bodies());
        assert!(relay.store.push_jobs().unwrap().is_empty());
        assert_eq!(relay.store.messages(&alice, "INBOX").unwrap().1.len(), 2);

        // Each delivery pushes again (one job per delivery).
        submit(&relay, &alice, &[&bob]).await;
        server.wait_for(2).await;
        queue_drained(&relay).await;
        assert_eq!(server.bodies(), vec![OK, OK]);
        // The second request went over the kept-alive connection.
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn gone_token_is_deleted_and_not_used_again() {
        let dir = tempfile::tempdir().unwrap();
        let server = PushServer::start(dir.path()).await;
        let clock = Arc::new(TestClock(AtomicU64::new(START)));
        let relay = open_relay(&relay_config(&dir.path().join("relay"), &server), &clock).await;
        let _n = notifier(&relay);
        let alice = account(&relay, "alice").await;
        let bob = account(&relay, "bob").await;
        register(&relay, &bob, GONE).await;
        register(&relay, &bob, OK).await;

        submit(&relay, &alice, &[&bob]).await;
        server.wait_for(2).await;
        queue_drained(&relay).await;
        let mut bodies = server.bodies();
        bodies.sort();
        assert_eq!(bodies, vec![GONE, OK]);
        // PUSH-4: 410 removed that token, the other stays.
        let tokens: Vec<String> = relay
            .store
            .device_tokens(&bob)
            .unwrap()
            .into_iter()
            .map(|t| t.0)
            .collect();
        assert_eq!(tokens, vec![OK.to_string()]);

        submit(&relay, &alice, &[&bob]).await;
        server.wait_for(3).await;
        queue_drained(&relay).await;
        settle().await;
        assert_eq!(server.bodies().len(), 3);
        assert_eq!(server.bodies()[2], OK);
    }

    #[tokio::test]
    async fn failure_is_retried_on_schedule() {
        let dir = tempfile::tempdir().unwrap();
        let server = PushServer::start(dir.path()).await;
        let clock = Arc::new(TestClock(AtomicU64::new(START)));
        let relay = open_relay(&relay_config(&dir.path().join("relay"), &server), &clock).await;
        let _n = notifier(&relay);
        let alice = account(&relay, "alice").await;
        let bob = account(&relay, "bob").await;
        register(&relay, &bob, FLAKY).await;

        submit(&relay, &alice, &[&bob]).await;
        server.wait_for(1).await;
        // PUSH-5: the 500 schedules attempt 2 after 8 s.
        let job = failed_attempts(&relay, 1).await;
        assert_eq!(job.first_attempt, START);
        assert_eq!(job.next_attempt, START + 8);
        clock.advance(7);
        settle().await;
        assert_eq!(server.seen().len(), 1, "not before 8 s");
        clock.advance(1);
        server.wait_for(2).await;
        queue_drained(&relay).await;
        assert_eq!(server.bodies(), vec![FLAKY, FLAKY]);
    }

    #[tokio::test]
    async fn persistent_failure_gives_up_after_five_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let server = PushServer::start(dir.path()).await;
        let clock = Arc::new(TestClock(AtomicU64::new(START)));
        let relay = open_relay(&relay_config(&dir.path().join("relay"), &server), &clock).await;
        let _n = notifier(&relay);
        let alice = account(&relay, "alice").await;
        let bob = account(&relay, "bob").await;
        register(&relay, &bob, FAIL).await;

        submit(&relay, &alice, &[&bob]).await;
        let mut at = START;
        for (failed, delay) in [(1u32, 8u64), (2, 64), (3, 512), (4, 4096)] {
            server.wait_for(failed as usize).await;
            let job = failed_attempts(&relay, failed).await;
            assert_eq!(job.next_attempt, at + delay, "after {failed} failure(s)");
            clock.advance(delay);
            at += delay;
        }
        server.wait_for(5).await;
        queue_drained(&relay).await;
        clock.advance(100_000);
        settle().await;
        assert_eq!(server.seen().len(), 5, "dropped after 5 attempts");
        // The token itself is kept (only 410 removes it).
        assert_eq!(relay.store.device_tokens(&bob).unwrap().len(), 1);
    }

    const DAVE: &str = "openpgp:dave";

    /// Queue a push job for `to` as made by a delivery at `first`, then record
    /// `failed` failed attempts with the next one due at `next`.
    async fn queue_at(relay: &Relay, from: &str, to: &str, first: u64, failed: u32, next: u64) {
        let d = crate::store::Delivery {
            sender: from.to_string(),
            local: vec![to.to_string()],
            remote: Vec::new(),
            body: crate::message::Parsed::legacy(b"m".to_vec()),
            received: first,
        };
        let push = PushRequest {
            accounts: vec![to.to_string()],
            now: first,
            tokens_set_from: 0,
            tokens_set_until: u64::MAX,
        };
        let (_, n) = relay
            .store
            .deliver_with_push(d, u64::MAX, Some(push))
            .await
            .unwrap();
        assert_eq!(n, 1);
        let job = relay
            .store
            .push_jobs()
            .unwrap()
            .into_iter()
            .find(|j| j.account == to)
            .unwrap();
        assert_eq!(job.first_attempt, first);
        relay
            .store
            .reschedule_push_job(job.id, failed, next)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn pending_jobs_are_sent_at_once_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let server = PushServer::start(dir.path()).await;
        let clock = Arc::new(TestClock(AtomicU64::new(START)));
        let config = relay_config(&dir.path().join("relay"), &server);
        {
            // No notifier runs: the jobs stay queued.
            let relay = open_relay(&config, &clock).await;
            let alice = account(&relay, "alice").await;
            let bob = account(&relay, "bob").await;
            let carol = account(&relay, "carol").await;
            let dave = account(&relay, "dave").await;
            register(&relay, &bob, OK).await;
            register(&relay, &carol, "openpgp:late").await;
            assert!(submit(&relay, &alice, &[&bob]).await.starts_with("250"));
            // Bob's job is waiting for a retry far away (as if attempts had failed).
            let jobs = relay.store.push_jobs().unwrap();
            assert_eq!(jobs.len(), 1);
            relay
                .store
                .reschedule_push_job(jobs[0].id, 3, START + 512)
                .await
                .unwrap();
            // Carol's job was created 5 hours and 1 second ago: past its deadline.
            queue_at(&relay, &alice, &carol, START - DEADLINE - 1, 0, START + 10).await;
            // Dave's failed 4 times; its first attempt was 4 hours ago: the last try
            // still fits before the deadline.
            register(&relay, &dave, DAVE).await;
            queue_at(&relay, &alice, &dave, START - 4 * 3600, 4, START + 4000).await;
            relay.store.flush().await.unwrap();
        }
        assert!(server.seen().is_empty());
        clock.advance(1);
        let relay = open_relay(&config, &clock).await;
        assert_eq!(relay.store.push_jobs().unwrap().len(), 3, "survived");
        let _n = notifier(&relay);
        // PUSH-2: tried at once (the clock does not reach the old retry times); the job
        // past its deadline is dropped unsent.
        server.wait_for(2).await;
        queue_drained(&relay).await;
        settle().await;
        let mut bodies = server.bodies();
        bodies.sort();
        assert_eq!(bodies, vec![DAVE, OK]);
    }
}
