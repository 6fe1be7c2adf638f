//! Outbound delivery (spec/relay.md §8): the scheduler over the durable queue in the
//! store — one queue row per destination domain (OUT-1), attempts with bounded
//! concurrency, retries with back-off that survive restarts (OUT-6) with the last error
//! in plain words (`reason`), bounces for permanent failures, expiry and the operator's
//! "give up" (OUT-7, [`give_up`]). How one attempt reaches a peer is `transport`.

pub mod bounce;
pub mod https;
pub mod reason;
pub mod route;
pub mod smtp;
pub mod transport;

pub use transport::{Outcome, Transport, Via};

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use tokio::sync::Notify;

use crate::clock::Clock;
use crate::config::Config;
use crate::policy::{SmtpReply, retry};
use crate::store::{QueuedMessage, Store};
use bounce::Failure;

/// What the scheduler uses of the relay, lent by the assembly (`crate::server`).
#[derive(Clone, Copy)]
pub struct Handles<'a> {
    pub config: &'a Config,
    /// The durable queue (OUT-1, OUT-6).
    pub store: &'a Store,
    pub clock: &'a dyn Clock,
    /// OUT-2..5: how an attempt reaches a peer.
    pub transport: &'a Transport,
    /// Wakes the scheduler when the queue changed.
    pub wake: &'a Notify,
    /// OUT-7: bounces are stored like any other message (`crate::delivery`).
    pub delivery: crate::delivery::Handles<'a>,
}

/// Attempts running at once (OUT-5 allows up to 500 destinations; a Pi needs fewer).
const MAX_CONCURRENT: usize = 64;
/// The scheduler looks at the queue at least this often (Postfix `queue_run_delay` is
/// 300 s; a due retry is never later than this).
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Run the scheduler until the process ends: every due queue row gets one attempt at a
/// time; rows left from before a restart are due at once or at their stored time. Each
/// look reads only the due rows and the next due time from the store's due-time index.
/// `owner` keeps the relay alive for the attempts, which run as tasks of their own;
/// `handles` lends the scheduler's [`Handles`] from it.
pub async fn run<R: Send + Sync + 'static>(owner: Arc<R>, handles: fn(&R) -> Handles<'_>) {
    let relay = handles(&owner);
    let in_flight: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT));
    loop {
        let now = relay.clock.unix_now();
        // Rows in flight are still due until they are rescheduled or done: reading as
        // many more as there are free slots finds every row that can start now.
        let busy = in_flight.lock().map_or(0, |set| set.len());
        match relay.store.queue_due(now, busy + slots.available_permits()) {
            Ok(rows) => {
                for row in rows {
                    if in_flight.lock().map_or(true, |set| set.contains(&row.id)) {
                        continue;
                    }
                    // All slots busy: a finishing attempt wakes the loop.
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        break;
                    };
                    if let Ok(mut set) = in_flight.lock() {
                        set.insert(row.id);
                    }
                    let owner = owner.clone();
                    let in_flight = in_flight.clone();
                    tokio::spawn(async move {
                        let relay = handles(&owner);
                        let id = row.id;
                        attempt(&relay, row).await;
                        if let Ok(mut set) = in_flight.lock() {
                            set.remove(&id);
                        }
                        drop(permit);
                        wake(&relay);
                    });
                }
            }
            Err(e) => tracing::error!("outbound: cannot read the queue: {e}"),
        }
        let sleep = match relay.store.next_queue_due_after(now) {
            Ok(Some(at)) => Duration::from_secs(at - now).min(MAX_SLEEP),
            Ok(None) => MAX_SLEEP,
            Err(e) => {
                tracing::error!("outbound: cannot read the queue: {e}");
                MAX_SLEEP
            }
        };
        tokio::select! {
            _ = relay.wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Tell the scheduler that the queue changed.
pub fn wake(relay: &Handles<'_>) {
    relay.wake.notify_one();
}

/// OUT-6: the retry schedule of this relay's config.
fn schedule(relay: &Handles<'_>) -> retry::Schedule {
    retry::Schedule {
        minimal_backoff: relay.config.minimal_backoff_time,
        maximal_backoff: relay.config.maximal_backoff_time,
        queue_lifetime: relay.config.maximal_queue_lifetime,
    }
}

/// One attempt for one queue row (one destination domain), then the queue updated:
/// accepted and permanently failed recipients leave it (the failures after their bounce
/// is stored), temporary failures are retried later or, past the queue lifetime, bounced.
async fn attempt(relay: &Handles<'_>, row: QueuedMessage) {
    let body = match relay.store.queued_body(row.id) {
        Ok(Some(b)) => b,
        Ok(None) => return,
        Err(e) => {
            tracing::error!("outbound: queue {}: cannot read the message: {e}", row.id);
            return;
        }
    };
    let domain = row
        .recipients
        .first()
        .and_then(|r| r.rsplit_once('@'))
        .map(|(_, d)| d.to_string())
        .unwrap_or_default();
    let outcome = relay
        .transport
        .deliver(&domain, &row.sender, &row.recipients, &body)
        .await;
    crate::metrics::outbound(
        outcome.accepted.len(),
        outcome.temporary.len(),
        outcome.permanent.len(),
    );
    let now = relay.clock.unix_now();
    if !outcome.accepted.is_empty() {
        tracing::info!(
            "outbound: queue {} to {domain}: delivered to {} recipient(s) via {:?}",
            row.id,
            outcome.accepted.len(),
            outcome.via
        );
    }
    let mut failures: Vec<Failure> = outcome
        .permanent
        .into_iter()
        .map(|(recipient, reply)| Failure { recipient, reply })
        .collect();
    let mut temporary = outcome.temporary;
    // OUT-6: past the queue lifetime a temporary failure is final.
    let expired = schedule(relay).expired(row.created, now);
    if expired {
        failures.extend(temporary.drain(..).map(|(recipient, reply)| Failure {
            recipient,
            reply: SmtpReply::new(
                reply.code,
                format!("{} (delivery time expired)", reply.text),
            ),
        }));
    }
    for f in &failures {
        tracing::info!(
            "outbound: queue {} to {domain}: failed: {}",
            row.id,
            f.reply
        );
    }
    if let Some((_, reply)) = temporary.first() {
        tracing::info!(
            "outbound: queue {} to {domain}: deferred ({} recipient(s)): {reply}",
            row.id,
            temporary.len()
        );
    }
    // OUT-7: the bounce is stored before the failed recipients leave the queue, so a
    // crash in between repeats the bounce rather than losing it.
    if !failures.is_empty() && !send_bounce(&relay.delivery, &row, &body, &failures).await {
        return;
    }
    let finished: Vec<String> = outcome
        .accepted
        .into_iter()
        .chain(failures.into_iter().map(|f| f.recipient))
        .collect();
    if !finished.is_empty()
        && let Err(e) = relay.store.queue_done(row.id, finished).await
    {
        tracing::error!("outbound: queue {}: cannot update: {e}", row.id);
        return;
    }
    if let Some((_, reply)) = temporary.first() {
        let attempts = row.attempts.saturating_add(1);
        let next = now + schedule(relay).backoff(attempts).as_secs();
        // Issue 18: why, in plain words, for `relaybox queue` and the status page.
        let why = reason::plain(reply);
        if let Err(e) = relay.store.queue_retry(row.id, attempts, next, why).await {
            tracing::error!("outbound: queue {}: cannot reschedule: {e}", row.id);
        }
    }
}

/// The operator's "give up" (issue 18): every recipient left in `row` fails as if the
/// queue lifetime had run out — the sender gets the bounce of OUT-7 (the same one expiry
/// sends, stored durably first), then the row leaves the queue. `Ok(false)` when the row
/// is gone already (delivered or bounced meanwhile).
pub async fn give_up(
    delivery: &crate::delivery::Handles<'_>,
    row: &QueuedMessage,
) -> Result<bool, GiveUpError> {
    let Some(body) = delivery.store.queued_body(row.id)? else {
        return Ok(false);
    };
    let why = if row.last_error.is_empty() {
        "no attempt finished yet".to_string()
    } else {
        format!("last error: {}", row.last_error)
    };
    // RFC 3464 §2.3.4, RFC 3463 4.4.7: delivery time expired, as for expiry.
    let reply = SmtpReply::new(
        421,
        format!(
            "4.4.7 Delivery given up by the relay's operator after {} attempt(s); {why}",
            row.attempts
        ),
    );
    let failures: Vec<Failure> = row
        .recipients
        .iter()
        .map(|recipient| Failure {
            recipient: recipient.clone(),
            reply: reply.clone(),
        })
        .collect();
    if !send_bounce(delivery, row, &body, &failures).await {
        return Err(GiveUpError::BounceNotStored);
    }
    delivery
        .store
        .queue_done(row.id, row.recipients.clone())
        .await?;
    Ok(true)
}

/// Why [`give_up`] left a row in the queue.
#[derive(Debug, thiserror::Error)]
pub enum GiveUpError {
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("the bounce could not be stored now; nothing was removed, try again")]
    BounceNotStored,
}

/// OUT-7: store (or queue) a bounce for the sender. `false` when it could not be stored
/// now (the row stays as it is and is tried again). No bounce for the empty sender.
async fn send_bounce(
    relay: &crate::delivery::Handles<'_>,
    row: &QueuedMessage,
    body: &[u8],
    failures: &[Failure],
) -> bool {
    if row.sender.is_empty() {
        return true;
    }
    let now = relay.clock.unix_now();
    let bounce = bounce::build(relay.config, &row.sender, body, failures, row.created, now);
    // Our own report goes through the same parser as every message that is stored.
    let mut bounce = match crate::message::Parsed::parse(bounce) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("outbound: queue {}: bounce not built: {e}", row.id);
            return true;
        }
    };
    if let Some(signer) = relay.dkim {
        bounce = signer.sign(bounce);
    }
    let own = relay.config.address_domain();
    let local = row
        .sender
        .rsplit_once('@')
        .is_some_and(|(_, d)| d.eq_ignore_ascii_case(&own));
    let (local, remote) = if local {
        (vec![row.sender.to_ascii_lowercase()], Vec::new())
    } else {
        (Vec::new(), vec![row.sender.clone()])
    };
    let reply = crate::delivery::store(relay, String::new(), local, remote, bounce).await;
    match reply.code / 100 {
        2 => true,
        4 => {
            tracing::warn!("outbound: queue {}: bounce not stored yet: {reply}", row.id);
            false
        }
        _ => {
            // The sender's mailbox refuses it (full): nothing more to do.
            tracing::info!("outbound: queue {}: bounce dropped: {reply}", row.id);
            true
        }
    }
}
