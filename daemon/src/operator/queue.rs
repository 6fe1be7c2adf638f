//! The outbound queue for the operator (issue 18 item 4): the waiting messages by
//! destination domain (how many, attempts, next retry, age of the oldest, the last error
//! in plain words), "retry now" and "give up (bounce)" per domain, and the rule that a
//! domain whose oldest message has waited longer than [`STUCK_AFTER`] makes the relay
//! degraded. `relaybox queue` (through `control`) and the status page call these.

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::config::Config;
use crate::server::Relay;
use crate::store::{QueuedMessage, Store, StoreError};

/// A domain whose oldest waiting message is older than this (seconds) is named in the
/// degraded state of the status page and the LED.
pub const STUCK_AFTER: u64 = 3600;

/// Longest domain name an operator may type (RFC 1035 §2.3.4: 255 octets; an address
/// literal is shorter).
const MAX_DOMAIN: usize = 255;

/// The queue's rows for one destination domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainQueue {
    /// The destination domain (lower case), e.g. `example.org` or `[192.0.2.1]`.
    pub domain: String,
    /// Messages waiting for it.
    pub messages: u64,
    /// The most attempts any of them had.
    pub attempts: u32,
    /// The earliest next attempt (Unix seconds).
    pub next_retry: u64,
    /// When the oldest of them was accepted (Unix seconds).
    pub oldest: u64,
    /// The last error in plain words (empty before a failed attempt).
    pub last_error: String,
}

/// The whole queue by domain, oldest first, as seen at `now` (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueList {
    pub now: u64,
    pub domains: Vec<DomainQueue>,
}

/// The answer to "retry now" and "give up".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueAction {
    pub domain: String,
    /// Messages retried or bounced.
    pub messages: u64,
    /// The relay runs (a retry happens now; else at its next start).
    pub relay_running: bool,
}

/// Why an operator action on the queue was refused; the text is for the operator.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("no mail for {0} is waiting in the queue (see `relaybox queue` for the domains)")]
    UnknownDomain(String),
    #[error("{0:?} is not a domain name")]
    BadDomain(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot prepare the bounce: {0}")]
    Bounce(String),
    #[error("{0}")]
    GiveUp(#[from] crate::outbound::GiveUpError),
}

/// The destination domain of a queue row (every row holds recipients of one domain,
/// OUT-1), lower case.
pub fn domain_of(row: &QueuedMessage) -> String {
    row.recipients
        .first()
        .and_then(|r| r.rsplit_once('@'))
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default()
}

/// Group queue rows by domain; the oldest-waiting domain first.
pub fn by_domain(rows: &[QueuedMessage]) -> Vec<DomainQueue> {
    let mut groups: std::collections::BTreeMap<String, (DomainQueue, u64)> = Default::default();
    for row in rows {
        let domain = domain_of(row);
        let (g, error_at) = groups.entry(domain.clone()).or_insert_with(|| {
            (
                DomainQueue {
                    domain,
                    messages: 0,
                    attempts: 0,
                    next_retry: row.next_attempt,
                    oldest: row.created,
                    last_error: String::new(),
                },
                0,
            )
        });
        g.messages += 1;
        g.attempts = g.attempts.max(row.attempts);
        g.next_retry = g.next_retry.min(row.next_attempt);
        g.oldest = g.oldest.min(row.created);
        // The error of the row rescheduled last (the latest attempt, as far as the
        // rows tell).
        if !row.last_error.is_empty() && (g.last_error.is_empty() || row.next_attempt >= *error_at)
        {
            g.last_error = row.last_error.clone();
            *error_at = row.next_attempt;
        }
    }
    let mut out: Vec<DomainQueue> = groups.into_values().map(|(g, _)| g).collect();
    out.sort_by(|a, b| {
        a.oldest
            .cmp(&b.oldest)
            .then_with(|| a.domain.cmp(&b.domain))
    });
    out
}

/// The queue of `store` by domain at `now`.
pub fn list(store: &Store, now: u64) -> Result<QueueList, QueueError> {
    Ok(QueueList {
        now,
        domains: by_domain(&store.queued()?),
    })
}

/// The domains whose oldest message has waited longer than [`STUCK_AFTER`].
pub fn stuck(list: &QueueList) -> Vec<&DomainQueue> {
    list.domains
        .iter()
        .filter(|d| list.now.saturating_sub(d.oldest) > STUCK_AFTER)
        .collect()
}

/// The status page's line for the stuck domains (`None` when none is stuck):
/// "mail for example.org has waited 3 h (connection refused)".
pub fn stuck_line(list: &QueueList) -> Option<String> {
    let parts: Vec<String> = stuck(list)
        .iter()
        .map(|d| {
            let why = if d.last_error.is_empty() {
                String::new()
            } else {
                format!(" ({})", d.last_error)
            };
            format!(
                "mail for {} has waited {}{why}",
                d.domain,
                age(list.now.saturating_sub(d.oldest))
            )
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// A duration for people: `45 s`, `12 min`, `3 h`, `2 d`.
pub fn age(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{} min", seconds / 60),
        3600..86_400 => format!("{} h", seconds / 3600),
        _ => format!("{} d", seconds / 86_400),
    }
}

/// The domain as typed by the operator, normalised (lower case, no final dot).
fn typed_domain(domain: &str) -> Result<String, QueueError> {
    let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    if d.is_empty()
        || d.len() > MAX_DOMAIN
        || d.chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '@')
    {
        return Err(QueueError::BadDomain(
            domain.chars().take(MAX_DOMAIN).collect(),
        ));
    }
    Ok(d)
}

/// The rows waiting for `domain`; an error when there are none.
fn rows_of(store: &Store, domain: &str) -> Result<(String, Vec<QueuedMessage>), QueueError> {
    let domain = typed_domain(domain)?;
    let rows: Vec<QueuedMessage> = store
        .queued()?
        .into_iter()
        .filter(|r| domain_of(r) == domain)
        .collect();
    if rows.is_empty() {
        return Err(QueueError::UnknownDomain(domain));
    }
    Ok((domain, rows))
}

/// "Retry now": the rows of `domain` become due at `now` (durably), and the scheduler of
/// the running `relay` is woken; a stopped relay tries them when it starts.
pub async fn retry(
    store: &Store,
    relay: Option<&Relay>,
    domain: &str,
    now: u64,
) -> Result<QueueAction, QueueError> {
    let (domain, rows) = rows_of(store, domain)?;
    let messages = rows.len() as u64;
    store
        .queue_due_now(rows.iter().map(|r| r.id).collect(), now)
        .await?;
    if let Some(relay) = relay {
        crate::outbound::wake(&relay.outbound_handles());
    }
    tracing::info!("queue: retry now for {domain} ({messages} message(s)) by the operator");
    Ok(QueueAction {
        domain,
        messages,
        relay_running: relay.is_some(),
    })
}

/// "Give up (bounce)": every message waiting for `domain` leaves the queue and its sender
/// gets the bounce expiry would send (OUT-7, [`crate::outbound::give_up`]), each stored
/// durably before its row goes. With the relay stopped (`relay` is `None`), the bounce is
/// stored in `store` with the relay's own DKIM key; a bounce for a remote sender waits in
/// the queue for the next start.
pub async fn bounce(
    config: &Config,
    store: &Store,
    relay: Option<&Relay>,
    domain: &str,
) -> Result<QueueAction, QueueError> {
    let (domain, rows) = rows_of(store, domain)?;
    let mut messages = 0;
    match relay {
        Some(relay) => {
            for row in &rows {
                messages += u64::from(crate::outbound::give_up(&relay.delivery(), row).await?);
            }
        }
        None => {
            let dkim = crate::dkim::Signer::load_or_create(config, store)
                .map_err(|e| QueueError::Bounce(e.to_string()))?;
            let verifier = crate::dkim::Verifier::new(config)
                .map_err(|e| QueueError::Bounce(e.to_string()))?;
            let events = crate::events::Events::new();
            let moving = crate::moving::Moving::new(&config.moved_to);
            let handles = crate::delivery::Handles {
                config,
                store,
                clock: &crate::clock::SystemClock,
                events: &events,
                dkim: dkim.as_ref(),
                dkim_verifier: &verifier,
                moving: &moving,
            };
            for row in &rows {
                messages += u64::from(crate::outbound::give_up(&handles, row).await?);
            }
        }
    }
    tracing::info!("queue: gave up {messages} message(s) for {domain} (bounced) by the operator");
    Ok(QueueAction {
        domain,
        messages,
        relay_running: relay.is_some(),
    })
}

/// Now, from the running relay's clock or the system's.
pub fn now(relay: Option<&Relay>) -> u64 {
    match relay {
        Some(r) => r.clock.unix_now(),
        None => crate::clock::SystemClock.unix_now(),
    }
}

#[cfg(test)]
mod tests;
