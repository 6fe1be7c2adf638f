//! Push notifications (spec relay.md §13, PUSH-1..7): the notifier task that sends the
//! persisted push jobs to the notification proxy, and the retry schedule.
//!
//! Jobs are created by the store in the delivery's own durable commit
//! (`Store::deliver_with_push`, PUSH-2), so a `250` never precedes its jobs and they
//! survive restarts. The SMTP session then calls [`wake`] (IN-8: after the IDLE wake-up,
//! before the quota check). The notifier ([`run`]) takes due jobs from the store and
//! POSTs each token, alone, to `push_url` (PUSH-3) over HTTPS with rustls+ring,
//! trusting the web-PKI roots plus the PEM file `tls_extra_roots`.
//!
//! Waking: `Relay` (server.rs) has no field for the notifier, so each running notifier
//! registers a `tokio::sync::Notify` in a process-wide list keyed by its `Relay`'s
//! address ([`wake`] finds it; entries go when the notifier stops). Besides being woken,
//! the notifier sleeps until the earliest due retry, at most `Tuning::scan_interval`,
//! and then scans the store again; time comes from `relay.clock`, so a test that moves
//! the clock sees its retries at the next scan.
//!
//! Concurrency (PUSH-6, as upstream): at most 4 requests of first attempts and at most 2
//! per retry level (attempts 2, 3, 4, 5) run at once, one semaphore each; a due job
//! whose level is busy waits for the next scan, which a finishing request triggers.
//!
//! Privacy (PUSH-7): the request carries the token and nothing else (no account, no
//! message data, no extra headers beyond HTTP's own); logs name jobs by their number
//! only, never a token or an address.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::sync::{Notify, Semaphore};

use crate::config::Config;
use crate::server::Relay;
use crate::store::PushJob;

/// MD-1: a token's last SET older than this makes it invalid.
pub const TOKEN_MAX_AGE: u64 = 90 * 86_400;
/// MD-1: a token dated further in the future than this is invalid.
pub const TOKEN_MAX_FUTURE: u64 = 60;

/// MD-1: is a token whose last SET was at `last_set` still valid at `now`? Invalid
/// tokens are neither served by GETMETADATA nor pushed to.
pub fn token_valid(last_set: u64, now: u64) -> bool {
    last_set <= now.saturating_add(TOKEN_MAX_FUTURE)
        && last_set.saturating_add(TOKEN_MAX_AGE) >= now
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
    #[error("tls_extra_roots {path}: {msg}")]
    Roots { path: String, msg: String },
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

// ---- waking -----------------------------------------------------------------------

/// Running notifiers, by relay.
static WAKERS: Mutex<Vec<(Weak<Relay>, Arc<Notify>)>> = Mutex::new(Vec::new());

/// Tell the notifier of `relay` that new jobs are in the store (no-op when none runs).
pub fn wake(relay: &Relay) {
    let wakers = WAKERS.lock().unwrap_or_else(|e| e.into_inner());
    for (r, notify) in wakers.iter() {
        if std::ptr::eq(r.as_ptr(), relay) {
            notify.notify_one();
        }
    }
}

/// A notifier's entry in [`WAKERS`], removed when the notifier stops.
struct Registration(Arc<Notify>);

impl Registration {
    fn new(relay: &Arc<Relay>) -> Registration {
        let notify = Arc::new(Notify::new());
        let mut wakers = WAKERS.lock().unwrap_or_else(|e| e.into_inner());
        wakers.retain(|(r, _)| r.strong_count() > 0);
        wakers.push((Arc::downgrade(relay), notify.clone()));
        Registration(notify)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut wakers = WAKERS.lock().unwrap_or_else(|e| e.into_inner());
        wakers.retain(|(r, n)| !Arc::ptr_eq(n, &self.0) && r.strong_count() > 0);
    }
}

// ---- HTTPS client -------------------------------------------------------------------

/// Posts tokens to the notification proxy; one connection per request.
pub struct Client {
    host: String,
    port: u16,
    /// Request target: path and query.
    target: String,
    /// The `Host` header value.
    authority: String,
    server_name: ServerName<'static>,
    tls: tokio_rustls::TlsConnector,
    timeout: Duration,
}

impl Client {
    /// A client for the configured `push_url`, trusting the web-PKI roots and the
    /// certificates of `tls_extra_roots`.
    pub fn new(config: &Config, timeout: Duration) -> Result<Client, PushError> {
        let url = &config.push_url;
        let bad = || PushError::Url(url.clone());
        let uri: hyper::Uri = url.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("https") {
            return Err(bad());
        }
        let authority = uri.authority().ok_or_else(bad)?.clone();
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let server_name = match host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.clone()).map_err(|_| bad())?,
        };
        let target = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".to_string());
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = &config.tls_extra_roots {
            add_extra_roots(&mut roots, path)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PushError::Url(format!("{url}: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Client {
            host,
            port: authority.port_u16().unwrap_or(443),
            target,
            authority: authority.as_str().to_string(),
            server_name,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
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

    async fn request(&self, token: &[u8]) -> Result<u16, String> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let conn = tokio::spawn(conn);
        // PUSH-3, PUSH-7: the token as stored is the whole payload.
        let request = hyper::Request::post(self.target.as_str())
            .header(hyper::header::HOST, self.authority.as_str())
            .body(Full::new(Bytes::copy_from_slice(token)))
            .map_err(|e| format!("request: {e}"))?;
        let result = sender.send_request(request).await;
        drop(sender);
        conn.abort();
        let response = result.map_err(|e| format!("HTTP: {e}"))?;
        Ok(response.status().as_u16())
    }
}

fn add_extra_roots(roots: &mut rustls::RootCertStore, path: &Path) -> Result<(), PushError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let err = |msg: String| PushError::Roots {
        path: path.display().to_string(),
        msg,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| err(e.to_string()))?;
        roots.add(cert).map_err(|e| err(e.to_string()))?;
        added += 1;
    }
    if added == 0 {
        return Err(err("no certificate found".into()));
    }
    Ok(())
}

// ---- the notifier -------------------------------------------------------------------

/// Run the notifier for `relay` until the task is dropped.
pub async fn run(relay: Arc<Relay>) {
    run_with(relay, Tuning::default()).await
}

/// Jobs being attempted, and the worker slots per level (PUSH-6).
struct Workers {
    in_flight: Mutex<HashSet<u64>>,
    /// Index 0: first attempts; 1..=4: retries after 1..=4 failures.
    levels: Vec<Arc<Semaphore>>,
}

/// [`run`] with explicit timing (tests shorten the scan interval).
pub async fn run_with(relay: Arc<Relay>, tuning: Tuning) {
    let registration = Registration::new(&relay);
    let client = match Client::new(&relay.config, tuning.request_timeout) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            // Jobs stay in the store; a corrected config sends them after a restart.
            tracing::error!("push notifications disabled: {e}");
            return;
        }
    };
    let workers = Arc::new(Workers {
        in_flight: Mutex::new(HashSet::new()),
        levels: (0..MAX_ATTEMPTS as usize)
            .map(|level| {
                let n = if level == 0 {
                    FIRST_ATTEMPT_WORKERS
                } else {
                    RETRY_WORKERS
                };
                Arc::new(Semaphore::new(n))
            })
            .collect(),
    });
    // PUSH-2: after a restart every pending job is tried at once; its deadline stays
    // first attempt + 5 h.
    match relay.store.push_jobs() {
        Ok(jobs) => {
            let now = relay.clock.unix_now();
            let waiting: Vec<&PushJob> = jobs.iter().filter(|j| j.next_attempt > now).collect();
            if !jobs.is_empty() {
                tracing::info!("push: {} pending job(s) at start", jobs.len());
            }
            for job in waiting {
                if let Err(e) = relay
                    .store
                    .reschedule_push_job(job.id, job.attempts, now)
                    .await
                {
                    tracing::error!("push: cannot reschedule job {}: {e}", job.id);
                }
            }
        }
        Err(e) => tracing::error!("push: cannot read the queue: {e}"),
    }
    let notify = registration.0.clone();
    loop {
        let now = relay.clock.unix_now();
        match relay.store.push_jobs_due(now) {
            Ok(due) => {
                for job in due {
                    dispatch(&relay, &client, &workers, &notify, job);
                }
            }
            Err(e) => tracing::error!("push: cannot read the queue: {e}"),
        }
        let wait = match relay.store.next_push_due() {
            Ok(Some(at)) if at > now => Duration::from_secs(at - now).min(tuning.scan_interval),
            _ => tuning.scan_interval,
        };
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Start an attempt of `job` unless it runs already or its level is busy.
fn dispatch(
    relay: &Arc<Relay>,
    client: &Arc<Client>,
    workers: &Arc<Workers>,
    notify: &Arc<Notify>,
    job: PushJob,
) {
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
    let (relay, client, workers, notify) = (
        relay.clone(),
        client.clone(),
        workers.clone(),
        notify.clone(),
    );
    tokio::spawn(async move {
        let id = job.id;
        attempt(&relay, &client, job).await;
        workers
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        drop(permit);
        // A slot is free: look for waiting jobs.
        notify.notify_one();
    });
}

/// One attempt of one job and its bookkeeping (PUSH-4, PUSH-5).
async fn attempt(relay: &Relay, client: &Client, job: PushJob) {
    let store = &relay.store;
    let now = relay.clock.unix_now();
    if next_attempt_at(job.first_attempt, job.attempts, now).is_none() {
        // PUSH-5: past the deadline (a restart after a long stop).
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
            finish(store, job.id).await;
        }
        Outcome::Gone => {
            // PUSH-4: the proxy no longer knows the token: forget it.
            tracing::info!("push: job {}: token expired (410), removed", job.id);
            if let Err(e) = store
                .remove_device_tokens(&job.account, vec![job.token.clone()])
                .await
            {
                tracing::error!("push: cannot remove an expired token: {e}");
            }
            finish(store, job.id).await;
        }
        Outcome::Failed(why) => {
            let failed = job.attempts + 1;
            let now = relay.clock.unix_now();
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

async fn finish(store: &crate::store::Store, id: u64) {
    if let Err(e) = store.delete_push_job(id).await {
        tracing::error!("push: cannot delete job {id}: {e}");
    }
}

#[cfg(test)]
mod tests {}
