//! Delivery: the one way an accepted message enters the store. One logged, durable
//! commit (`op::Deliver`) stores the body once, adds a row to every local recipient's INBOX
//! within the quota (QUOTA-1/2), queues one row per remote destination domain (OUT-1) and
//! creates the push jobs of the recipients that received it (PUSH-1, PUSH-2).
//! [`Store::deliver`] and [`Store::deliver_within_quota`] are [`Store::deliver_with_push`]
//! with no quota or no push jobs.

use redb::WriteTransaction;

use super::bodies::store_body;
use super::mailboxes::{Flags, MessageRow, get_mailbox, put_mailbox};
use super::metadata::account_tokens;
use super::push::{PushJob, put_push};
use super::queue::{QueuedMessage, put_queue};
use super::tables::{MESSAGES, TOKENS};
use super::usage::UsageCache;
use super::{Store, StoreError, accounts, next_id, op};
use crate::message::Parsed;

/// A message accepted by SMTP: one commit stores it for every local recipient and
/// queues it for every remote one.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Envelope sender (empty for `<>`).
    pub sender: String,
    /// Local recipient accounts (canonical addresses, `+ext` already removed).
    pub local: Vec<String>,
    /// Remote recipients, for the outbound queue.
    pub remote: Vec<String>,
    /// The message to store (after header cleanup) with its structure.
    pub body: Parsed,
    /// Arrival time, Unix seconds.
    pub received: u64,
}

/// Outcome of [`Store::deliver_within_quota`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Local recipients whose INBOX received the message.
    pub stored: Vec<String>,
    /// Local recipients refused because the message would take them over the quota
    /// (QUOTA-2); nothing was stored for them.
    pub over_quota: Vec<String>,
}

/// Which stored recipients of a delivery get push jobs, in the delivery's own commit
/// (PUSH-1, PUSH-2).
#[derive(Debug, Clone)]
pub struct PushRequest {
    /// Local recipients to notify (those whose From is not the account itself); only
    /// those that actually received the message get jobs.
    pub accounts: Vec<String>,
    /// Job creation time, Unix seconds.
    pub now: u64,
    /// MD-1: only tokens last set within `tokens_set_from..=tokens_set_until` (Unix
    /// seconds) get a job; older ones expired, later ones are dated in the future.
    pub tokens_set_from: u64,
    pub tokens_set_until: u64,
}

/// The one deliver path is [`Store::deliver_with_push`] (what `crate::delivery` calls);
/// [`Store::deliver`] and [`Store::deliver_within_quota`] are the tests' short forms of it.
impl Store {
    /// (Tests) store a message for its local recipients' INBOXes and queue it for the remote
    /// ones, in one durable commit shared with concurrent deliveries. When this returns
    /// `Ok`, the message survives a crash. Returns the local recipients that received it
    /// (an account deleted meanwhile is skipped).
    #[cfg(test)]
    pub async fn deliver(&self, d: Delivery) -> Result<Vec<String>, StoreError> {
        Ok(self.deliver_within_quota(d, u64::MAX).await?.stored)
    }

    /// [`Store::deliver`] with the per-account limit `max_mailbox_size` in bytes
    /// (QUOTA-1/2): a local recipient whose usage plus this message would exceed it gets
    /// nothing and is reported in [`Delivered::over_quota`]. The usage is read inside
    /// the commit, so concurrent deliveries cannot overrun it together.
    #[cfg(test)]
    pub async fn deliver_within_quota(
        &self,
        d: Delivery,
        max_mailbox_size: u64,
    ) -> Result<Delivered, StoreError> {
        Ok(self.deliver_with_push(d, max_mailbox_size, None).await?.0)
    }

    /// [`Store::deliver_within_quota`] that also creates, in the same durable commit,
    /// one push job per valid device token of every account of `push` that received the
    /// message (PUSH-1, PUSH-2). Returns the outcome and the number of jobs created.
    pub async fn deliver_with_push(
        &self,
        d: Delivery,
        max_mailbox_size: u64,
        push: Option<PushRequest>,
    ) -> Result<(Delivered, usize), StoreError> {
        self.writer
            .logged(op::Deliver {
                delivery: d,
                max_mailbox_size,
                push,
            })
            .await
    }
}

/// The delivery transaction of [`Store::deliver_with_push`] (QUOTA-1/2).
pub(super) fn deliver_in(
    tx: &WriteTransaction,
    usage: &UsageCache,
    d: &Delivery,
    max_mailbox_size: u64,
) -> Result<Delivered, StoreError> {
    let size = d.body.len() as u64;
    let mut targets = Vec::new();
    let mut over_quota = Vec::new();
    for rcpt in &d.local {
        if let Some(mb) = get_mailbox(tx, rcpt, "INBOX")? {
            // QUOTA-2: refused when this message would exceed the quota.
            let used = match usage.get(rcpt) {
                Ok(bytes) => bytes,
                Err(generation) => {
                    // Inside the writer the transaction is the truth; fill the cache.
                    let bytes = accounts::usage_in(tx, rcpt)?;
                    usage.fill(rcpt, generation, bytes);
                    bytes
                }
            };
            if crate::policy::quota::exceeds(used, size, max_mailbox_size) {
                over_quota.push(rcpt.clone());
                continue;
            }
            targets.push((rcpt.clone(), mb));
        }
    }
    // OUT-1: one queue row (one transaction) per destination domain.
    let by_domain = group_by_domain(&d.remote);
    let refs = targets.len() as u32 + by_domain.len() as u32;
    if refs == 0 {
        return Ok(Delivered {
            stored: Vec::new(),
            over_quota,
        });
    }
    let body_id = store_body(tx, &d.body, refs)?;
    let row = MessageRow {
        body_id,
        size,
        internal_date: d.received,
        flags: Flags::default(),
    };
    let mut stored = Vec::new();
    {
        let mut messages = tx.open_table(MESSAGES)?;
        let encoded = row.encode();
        for (rcpt, mut mb) in targets {
            let uid = mb.uid_next;
            mb.uid_next += 1;
            messages.insert((mb.id, uid), encoded.as_slice())?;
            put_mailbox(tx, &rcpt, "INBOX", &mb)?;
            usage.add(&rcpt, size);
            stored.push(rcpt);
        }
    }
    for recipients in by_domain {
        let id = next_id(tx)?;
        let q = QueuedMessage {
            id,
            sender: d.sender.clone(),
            recipients,
            created: d.received,
            next_attempt: d.received,
            attempts: 0,
            last_error: String::new(),
        };
        put_queue(tx, &q, body_id, None)?;
    }
    Ok(Delivered { stored, over_quota })
}

/// PUSH-2: one job per valid device token of `account`, due at once.
pub(super) fn add_push_jobs(
    tx: &WriteTransaction,
    account: &str,
    push: &PushRequest,
) -> Result<usize, StoreError> {
    // MD-1: expired or future-dated tokens are not used.
    let valid = push.tokens_set_from..=push.tokens_set_until;
    let tokens: Vec<String> = account_tokens(&tx.open_table(TOKENS)?, account)?
        .into_iter()
        .filter(|(_, _, last)| valid.contains(last))
        .map(|(token, _, _)| token)
        .collect();
    for token in &tokens {
        let id = next_id(tx)?;
        let job = PushJob {
            id,
            account: account.to_string(),
            token: token.clone(),
            attempts: 0,
            first_attempt: push.now,
            next_attempt: push.now,
        };
        put_push(tx, &job)?;
    }
    Ok(tokens.len())
}

/// Recipients grouped by the domain after the last `@` (ASCII case-insensitive), in
/// order of first appearance.
fn group_by_domain(recipients: &[String]) -> Vec<Vec<String>> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for rcpt in recipients {
        let domain = rcpt
            .rsplit_once('@')
            .map_or("", |(_, d)| d)
            .to_ascii_lowercase();
        match groups.iter_mut().find(|(d, _)| *d == domain) {
            Some((_, list)) => list.push(rcpt.clone()),
            None => groups.push((domain, vec![rcpt.clone()])),
        }
    }
    groups.into_iter().map(|(_, list)| list).collect()
}
