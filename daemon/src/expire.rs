//! Retention and quota trimming (spec relay.md §14 QUOTA-3, §15 EXP-1..5, §16).
//!
//! Owns the decision of what to delete ([`plan_account`], [`plan_trim`]: pure
//! functions over plain data, given "now" and the rules), and the thin runners that read
//! the store, apply a plan and wake the affected IMAP sessions:
//!
//! - [`run`]: the daily expiry over every account (00:02 UTC, [`daily`]) and
//!   `relaybox expire` on demand;
//! - [`trim_after_delivery`]: QUOTA-3 after a local delivery.
//!
//! Every decision takes "now" from the caller (the injected clock, or `--now` on the
//! command line), so tests move time by hand.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::server::Relay;
use crate::store::{AccountMessage, Flags, Store, StoreError};

/// Seconds in a day.
pub const DAY: u64 = 86_400;
/// EXP-3: a message larger than this many bytes is "large".
pub const LARGE_MESSAGE: u64 = 200_000;
/// The daily run starts this many seconds after midnight UTC (upstream timer 00:02).
pub const RUN_AT: u64 = 2 * 60;
const MIB: u64 = 1024 * 1024;

/// Expiry failures.
#[derive(Debug, thiserror::Error)]
pub enum ExpireError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// The retention rules of a relay, from its config (spec §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// EXP-2, days.
    pub delete_mails_after: u32,
    /// EXP-3, days.
    pub delete_large_after: u32,
    /// EXP-1, days.
    pub delete_inactive_users_after: u32,
    /// QUOTA-1, bytes (a whole number of MiB after CFG-2).
    pub max_mailbox_size: u64,
}

impl Rules {
    pub fn from_config(c: &Config) -> Rules {
        Rules {
            delete_mails_after: c.delete_mails_after,
            delete_large_after: c.delete_large_after,
            delete_inactive_users_after: c.delete_inactive_users_after,
            max_mailbox_size: c.max_mailbox_size,
        }
    }
}

/// One stored message, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFacts {
    pub mailbox: String,
    pub uid: u32,
    /// Bytes stored (QUOTA-1 counts these).
    pub size: u64,
    /// Arrival time, Unix seconds.
    pub arrived: u64,
    /// `\Seen`: the client fetched it (EXP-3).
    pub seen: bool,
}

impl From<&AccountMessage> for MessageFacts {
    fn from(m: &AccountMessage) -> Self {
        MessageFacts {
            mailbox: m.mailbox.clone(),
            uid: m.meta.uid,
            size: m.meta.size,
            arrived: m.meta.internal_date,
            seen: m.meta.flags.has(Flags::SEEN),
        }
    }
}

/// One account, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFacts {
    pub address: String,
    /// Whether the entry has a password hash (EXP-5).
    pub has_password: bool,
    /// Last IMAP login, Unix seconds floored to the day (LL-1); 0 = unknown.
    pub last_login_day: u64,
    pub messages: Vec<MessageFacts>,
}

/// A message to delete: (mailbox name, UID).
pub type MessageRef = (String, u32);

/// What to delete in one account, by the rule that deletes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountPlan {
    /// EXP-1 / EXP-5: remove the account with all its data (the lists below are then
    /// empty).
    pub remove_account: bool,
    /// EXP-2: stored longer than `delete_mails_after` days.
    pub expired: Vec<MessageRef>,
    /// EXP-3: seen, larger than [`LARGE_MESSAGE`], stored longer than
    /// `delete_large_after` days.
    pub large: Vec<MessageRef>,
    /// EXP-4 / QUOTA-3: oldest messages trimmed to bring usage down to 70 %.
    pub trimmed: Vec<MessageRef>,
}

impl AccountPlan {
    /// Every message the plan deletes.
    pub fn messages(&self) -> Vec<MessageRef> {
        let mut all = self.expired.clone();
        all.extend(self.large.iter().cloned());
        all.extend(self.trimmed.iter().cloned());
        all
    }

    pub fn is_empty(&self) -> bool {
        *self == AccountPlan::default()
    }
}

/// `now - days` in Unix seconds (0 when that lies before the epoch).
fn days_before(now: u64, days: u32) -> u64 {
    now.saturating_sub(u64::from(days) * DAY)
}

/// The daily expiry decision for one account (EXP-1..5). "Older than N days" is
/// strict, as upstream's `mtime < now - N * 86400` (chatmaild expire.py): a message
/// that arrived exactly N days ago stays until the next run.
pub fn plan_account(now: u64, rules: &Rules, account: &AccountFacts) -> AccountPlan {
    // EXP-5: an entry without a password hash goes only when it holds nothing.
    if !account.has_password && account.messages.is_empty() {
        return AccountPlan {
            remove_account: true,
            ..AccountPlan::default()
        };
    }
    // EXP-1 (LL-1: the day of the last login; 0 means never recorded, kept as
    // upstream keeps mailboxes without a login time).
    if account.has_password
        && account.last_login_day != 0
        && account.last_login_day < days_before(now, rules.delete_inactive_users_after)
    {
        return AccountPlan {
            remove_account: true,
            ..AccountPlan::default()
        };
    }
    let mails_cutoff = days_before(now, rules.delete_mails_after);
    let large_cutoff = days_before(now, rules.delete_large_after);
    let mut plan = AccountPlan::default();
    let mut kept = Vec::new();
    for m in &account.messages {
        let r = (m.mailbox.clone(), m.uid);
        if m.arrived < mails_cutoff {
            // EXP-2: any state, any folder.
            plan.expired.push(r);
        } else if m.size > LARGE_MESSAGE && m.seen && m.arrived < large_cutoff {
            // EXP-3: unseen large messages wait for EXP-2.
            plan.large.push(r);
        } else {
            kept.push(m);
        }
    }
    // EXP-4: then the quota trim over what is left.
    plan.trimmed = plan_trim(now, rules.max_mailbox_size, kept);
    plan
}

/// QUOTA-3: when usage passes 75 % of `max_mailbox_size` (bytes), the oldest messages by
/// arrival (any mailbox) to delete until usage ≤ floor(max MiB × 70 / 100) MiB; stops
/// at the first message younger than 24 h.
pub fn plan_trim<'a>(
    now: u64,
    max_mailbox_size: u64,
    messages: impl IntoIterator<Item = &'a MessageFacts>,
) -> Vec<MessageRef> {
    let mut messages: Vec<&MessageFacts> = messages.into_iter().collect();
    let mut usage: u64 = messages.iter().map(|m| m.size).sum();
    // "Passes 75 %": strictly above. u128 so that no limit overflows.
    if u128::from(usage) * 100 <= u128::from(max_mailbox_size) * 75 {
        return Vec::new();
    }
    let target = (max_mailbox_size / MIB) * 70 / 100 * MIB;
    messages.sort_by(|a, b| (a.arrived, &a.mailbox, a.uid).cmp(&(b.arrived, &b.mailbox, b.uid)));
    let mut out = Vec::new();
    for m in messages {
        if usage <= target {
            break;
        }
        // Younger than 24 h: kept, and so is everything newer.
        if now.saturating_sub(m.arrived) < DAY {
            break;
        }
        usage -= m.size;
        out.push((m.mailbox.clone(), m.uid));
    }
    out
}

/// The first daily run strictly after `now`: 00:02 UTC of today or tomorrow.
pub fn next_run(now: u64) -> u64 {
    let today = now / DAY * DAY + RUN_AT;
    if today > now { today } else { today + DAY }
}

/// Who must hear about deletions: IMAP sessions of the account and the login cache.
pub trait Observer: Send + Sync {
    /// Messages of `account` were removed (wake its IMAP sessions).
    fn mailbox_changed(&self, account: &str);
    /// `account` was removed with all its data.
    fn account_removed(&self, account: &str);
}

impl Observer for Relay {
    fn mailbox_changed(&self, account: &str) {
        self.events.mailbox_changed(account);
    }
    fn account_removed(&self, account: &str) {
        // A cached password must not log the removed account back in without a fresh
        // creation (EXP-1).
        self.auth.forget(account);
        self.events.mailbox_changed(account);
    }
}

/// No sessions to tell (the `relaybox expire` command runs beside no server).
#[derive(Debug, Default, Clone, Copy)]
pub struct Detached;

impl Observer for Detached {
    fn mailbox_changed(&self, _: &str) {}
    fn account_removed(&self, _: &str) {}
}

/// What a run removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub accounts_removed: usize,
    /// Messages removed by EXP-2 and EXP-3 (not counting removed accounts' messages).
    pub messages_expired: usize,
    /// Messages removed by the quota trim (EXP-4).
    pub messages_trimmed: usize,
}

/// The facts of one account, read from the store.
fn facts(store: &Store, account: &crate::store::Account) -> Result<AccountFacts, StoreError> {
    Ok(AccountFacts {
        address: account.address.clone(),
        has_password: !account.password_hash.is_empty(),
        last_login_day: account.last_login_day,
        messages: store
            .account_messages(&account.address)?
            .iter()
            .map(MessageFacts::from)
            .collect(),
    })
}

/// The daily expiry over every account of the relay's store at `now` (EXP-1..5).
pub async fn run(relay: &Relay, now: u64) -> Result<Report, ExpireError> {
    run_store(&relay.store, &Rules::from_config(&relay.config), now, relay).await
}

/// [`run`] on a store, telling `observer` what changed. Plans one account at a time so
/// memory stays bounded by the largest account.
pub async fn run_store(
    store: &Store,
    rules: &Rules,
    now: u64,
    observer: &dyn Observer,
) -> Result<Report, ExpireError> {
    let mut report = Report::default();
    for account in store.accounts()? {
        let plan = plan_account(now, rules, &facts(store, &account)?);
        if plan.remove_account {
            if store.delete_account(&account.address).await?.is_some() {
                report.accounts_removed += 1;
                observer.account_removed(&account.address);
            }
            continue;
        }
        if plan.is_empty() {
            continue;
        }
        let expired = plan.expired.len() + plan.large.len();
        let removed = store
            .remove_messages(&account.address, plan.messages())
            .await?;
        // Concurrent expunges may have taken some first; count what this run removed.
        let trimmed = removed.saturating_sub(expired).min(plan.trimmed.len());
        report.messages_expired += removed - trimmed;
        report.messages_trimmed += trimmed;
        if trimmed > 0 {
            // LOG-4: the upstream phrase.
            tracing::info!("quota-expire: removed {trimmed} message(s)");
        }
        if removed > 0 {
            observer.mailbox_changed(&account.address);
        }
    }
    tracing::info!(
        "expire: removed {} account(s), {} expired message(s), {} message(s) over quota",
        report.accounts_removed,
        report.messages_expired,
        report.messages_trimmed
    );
    Ok(report)
}

/// QUOTA-3 after a delivery to `account` (IN-8: after the commit, the IDLE wake-up and
/// the push): trims the oldest messages when usage passed 75 %. Returns how many went.
pub async fn trim_after_delivery(relay: &Relay, account: &str) -> Result<usize, ExpireError> {
    let messages: Vec<MessageFacts> = relay
        .store
        .account_messages(account)?
        .iter()
        .map(MessageFacts::from)
        .collect();
    let now = relay.clock.unix_now();
    let plan = plan_trim(now, relay.config.max_mailbox_size, &messages);
    if plan.is_empty() {
        return Ok(0);
    }
    let removed = relay.store.remove_messages(account, plan).await?;
    if removed > 0 {
        // LOG-4.
        tracing::info!("quota-expire: removed {removed} message(s)");
        relay.events.mailbox_changed(account);
    }
    Ok(removed)
}

/// Longest sleep between looks at the clock, so that a clock moved by a test (or a
/// suspended machine) is noticed soon.
const POLL: Duration = Duration::from_secs(60);

/// Run the expiry every day at 00:02 UTC by the relay's clock, for as long as the
/// process lives. Spawned next to the server.
pub async fn daily(relay: Arc<Relay>) {
    daily_polling(relay, POLL).await
}

async fn daily_polling(relay: Arc<Relay>, poll: Duration) {
    let mut due = next_run(relay.clock.unix_now());
    loop {
        let now = relay.clock.unix_now();
        if now >= due {
            if let Err(e) = run(&relay, now).await {
                tracing::error!("expire failed: {e}");
            }
            due = next_run(now);
            continue;
        }
        let wait = Duration::from_secs(due - now).min(poll);
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
}
