//! Retention and quota trimming (spec relay.md §14 QUOTA-3, §15 EXP-1..5, §16).
//!
//! Owns the decision of what to delete ([`plan_account`], [`plan_trim`]: pure
//! functions over plain data, given "now" and the rules), and the thin runners that read
//! the store, apply a plan and wake the affected IMAP sessions:
//!
//! - [`run`]: the daily expiry over every account (00:02 UTC, [`daily`]) and
//!   `relaybox expire` on demand;
//! - [`trim_after_delivery`]: QUOTA-3 after a local delivery, run by the assembly's
//!   subscriber of the delivery event (`server`), off the path of the `250`.
//!
//! Every decision takes "now" from the caller (the injected clock, or `--now` on the
//! command line), so tests move time by hand.

use std::time::Duration;

use crate::auth::Auth;
use crate::clock::Clock;
use crate::config::Config;
use crate::events::Events;
use crate::policy::quota;
use crate::store::{AccountMessage, Flags, Store, StoreError};

/// What the runners use of the relay, lent by the assembly (`crate::server`).
#[derive(Clone, Copy)]
pub struct Handles<'a> {
    pub config: &'a Config,
    pub store: &'a Store,
    pub clock: &'a dyn Clock,
    /// Wakes the IMAP sessions of an account that lost messages.
    pub events: &'a Events,
    /// The login cache, which forgets a removed account (EXP-1).
    pub auth: &'a Auth,
}

/// Seconds in a day.
pub const DAY: u64 = 86_400;
/// EXP-3: a message larger than this many bytes is "large".
pub const LARGE_MESSAGE: u64 = 200_000;
/// The daily run starts this many seconds after midnight UTC (upstream timer 00:02).
pub const RUN_AT: u64 = 2 * 60;

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
    if !quota::over_trim_threshold(usage, max_mailbox_size) {
        return Vec::new();
    }
    let target = quota::trim_target(max_mailbox_size);
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

impl Observer for Handles<'_> {
    fn mailbox_changed(&self, account: &str) {
        self.events.mailbox_changed(account);
    }
    fn account_removed(&self, account: &str) {
        // A cached password must not log the removed account back in without a fresh
        // creation (EXP-1); its IMAP sessions end.
        self.auth.forget(account);
        self.events.account_removed(account);
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
pub async fn run(relay: &Handles<'_>, now: u64) -> Result<Report, ExpireError> {
    run_store(relay.store, &Rules::from_config(relay.config), now, relay).await
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
        // Two removals so that each count is exact even when a concurrent EXPUNGE took
        // some of the messages first.
        let mut by_rule = plan.expired;
        by_rule.extend(plan.large);
        let expired = if by_rule.is_empty() {
            0
        } else {
            store.remove_messages(&account.address, by_rule).await?
        };
        let trimmed = if plan.trimmed.is_empty() {
            0
        } else {
            store
                .remove_messages(&account.address, plan.trimmed)
                .await?
        };
        report.messages_expired += expired;
        report.messages_trimmed += trimmed;
        if trimmed > 0 {
            // LOG-4: the upstream phrase.
            tracing::info!("quota-expire: removed {trimmed} message(s)");
            crate::metrics::quota_trimmed(trimmed);
        }
        let removed = expired + trimmed;
        if removed > 0 {
            observer.mailbox_changed(&account.address);
        }
    }
    // The removals above are not durable on their own: one durable commit for the run.
    store.flush().await?;
    tracing::info!(
        "expire: removed {} account(s), {} expired message(s), {} message(s) over quota",
        report.accounts_removed,
        report.messages_expired,
        report.messages_trimmed
    );
    Ok(report)
}

/// QUOTA-3 after a delivery to `account` (IN-8: a subscriber of the delivery event,
/// after the commit and the IDLE wake-up; the `250` does not wait for it): trims the
/// oldest messages when usage passed 75 %. Returns how many went.
pub async fn trim_after_delivery(relay: &Handles<'_>, account: &str) -> Result<usize, ExpireError> {
    // The usage is kept in memory: most deliveries stop here without reading messages.
    if !quota::over_trim_threshold(relay.store.usage(account)?, relay.config.max_mailbox_size) {
        return Ok(0);
    }
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
        crate::metrics::quota_trimmed(removed);
        relay.events.mailbox_changed(account);
    }
    Ok(removed)
}

/// Longest sleep between looks at the clock, so that a clock moved by a test (or a
/// suspended machine) is noticed soon.
const POLL: Duration = Duration::from_secs(60);

/// Run the expiry every day at 00:02 UTC by the relay's clock, for as long as the
/// process lives. Spawned next to the server.
pub async fn daily(relay: Handles<'_>) {
    daily_polling(relay, POLL).await
}

async fn daily_polling(relay: Handles<'_>, poll: Duration) {
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
    use crate::server::Relay;
    use crate::store::{Delivery, FlagOp};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    const MIB: u64 = 1024 * 1024;

    // ---- planning: table tests --------------------------------------------------------

    /// Day 20000 plus 5000 s: a "now" in the middle of a UTC day.
    const NOW: u64 = 20_000 * DAY + 5_000;

    fn rules() -> Rules {
        Rules {
            delete_mails_after: 20,
            delete_large_after: 7,
            delete_inactive_users_after: 90,
            max_mailbox_size: 100 * MIB,
        }
    }

    fn msg(mailbox: &str, uid: u32, size: u64, arrived: u64, seen: bool) -> MessageFacts {
        MessageFacts {
            mailbox: mailbox.into(),
            uid,
            size,
            arrived,
            seen,
        }
    }

    fn account(last_login_day: u64, messages: Vec<MessageFacts>) -> AccountFacts {
        AccountFacts {
            address: "user@x".into(),
            has_password: true,
            last_login_day,
            messages,
        }
    }

    fn r(mailbox: &str, uid: u32) -> MessageRef {
        (mailbox.into(), uid)
    }

    const ACTIVE: u64 = NOW / DAY * DAY;

    #[test]
    fn exp2_age_boundary_any_state_any_folder() {
        let cutoff = NOW - 20 * DAY;
        let a = account(
            ACTIVE,
            vec![
                msg("INBOX", 1, 10, cutoff - 1, false),
                msg("INBOX", 2, 10, cutoff, false),
                msg("Sent", 1, 10, cutoff - DAY, true),
                msg("INBOX", 3, 10, cutoff + 1, true),
                msg("INBOX", 4, 10, NOW, false),
            ],
        );
        let plan = plan_account(NOW, &rules(), &a);
        assert_eq!(
            plan,
            AccountPlan {
                expired: vec![r("INBOX", 1), r("Sent", 1)],
                ..AccountPlan::default()
            }
        );
    }

    #[test]
    fn exp3_only_seen_large_messages_past_their_days() {
        let cutoff = NOW - 7 * DAY;
        let table = [
            // (size, arrived, seen, deleted)
            (200_001, cutoff - 1, true, true),
            (200_001, cutoff - 1, false, false),
            (200_000, cutoff - 1, true, false),
            (200_001, cutoff, true, false),
            (5_000_000, cutoff - 10 * DAY, true, true),
            (5_000_000, cutoff - 10 * DAY, false, false),
        ];
        for (i, (size, arrived, seen, deleted)) in table.into_iter().enumerate() {
            let a = account(ACTIVE, vec![msg("INBOX", 7, size, arrived, seen)]);
            let plan = plan_account(NOW, &rules(), &a);
            let want = if deleted { vec![r("INBOX", 7)] } else { vec![] };
            assert_eq!(plan.large, want, "row {i}: {size} bytes, seen {seen}");
            assert!(plan.expired.is_empty() && plan.trimmed.is_empty() && !plan.remove_account);
        }
        // Unseen large messages wait for EXP-2.
        let old = account(
            ACTIVE,
            vec![msg("INBOX", 1, 300_000, NOW - 21 * DAY, false)],
        );
        assert_eq!(plan_account(NOW, &rules(), &old).expired, [r("INBOX", 1)]);
    }

    #[test]
    fn exp1_inactive_boundary_by_login_day() {
        // NOW lies 5000 s into day 20000; the cutoff is day 19910 + 5000 s.
        let table = [
            (19_909 * DAY, true),
            (19_910 * DAY, true),
            (19_911 * DAY, false),
            (ACTIVE, false),
            // Never recorded: kept.
            (0, false),
        ];
        for (day, removed) in table {
            let a = account(day, vec![msg("INBOX", 1, 10, NOW, false)]);
            let plan = plan_account(NOW, &rules(), &a);
            assert_eq!(plan.remove_account, removed, "last login {}", day / DAY);
            if removed {
                assert!(plan.messages().is_empty(), "the account goes as a whole");
            } else {
                assert!(plan.is_empty());
            }
        }
        // At midnight the cutoff is the day itself: 90 full days keep the account.
        let midnight = 20_000 * DAY;
        assert!(!plan_account(midnight, &rules(), &account(19_910 * DAY, vec![])).remove_account);
        assert!(plan_account(midnight, &rules(), &account(19_909 * DAY, vec![])).remove_account);
    }

    #[test]
    fn exp5_entry_without_password_goes_only_when_empty() {
        let mut a = account(0, vec![]);
        a.has_password = false;
        assert!(plan_account(NOW, &rules(), &a).remove_account);
        a.messages = vec![
            msg("INBOX", 1, 10, NOW - 30 * DAY, false),
            msg("INBOX", 2, 10, NOW, false),
        ];
        let plan = plan_account(NOW, &rules(), &a);
        assert!(!plan.remove_account);
        assert_eq!(plan.expired, [r("INBOX", 1)], "its messages still expire");
    }

    #[test]
    fn quota_trim_oldest_first_down_to_70_percent() {
        // 10 MiB quota: trim above 7.5 MiB, down to 7 MiB.
        let max = 10 * MIB;
        let old = NOW - 2 * DAY;
        let four = vec![
            msg("INBOX", 2, 2 * MIB, old + 20, false),
            msg("Sent", 1, 2 * MIB, old + 10, true),
            msg("INBOX", 1, 2 * MIB, old + 30, false),
            msg("INBOX", 3, 2 * MIB, old + 40, false),
        ];
        // 8 MiB: the oldest (Sent 1, any mailbox) goes, leaving 6 MiB.
        assert_eq!(plan_trim(NOW, max, &four), [r("Sent", 1)]);
        // Exactly 75 %: nothing.
        let at75 = vec![
            msg("INBOX", 1, 5 * MIB, old, false),
            msg("INBOX", 2, 5 * MIB / 2, old, false),
        ];
        assert!(plan_trim(NOW, max, &at75).is_empty());
        // One byte over 75 %: the first of two equally old messages (ties go by
        // mailbox, then UID) brings usage to 2.5 MiB + 1 ≤ 7 MiB; the second stays.
        let over = vec![
            msg("INBOX", 1, 5 * MIB, old, false),
            msg("INBOX", 2, 5 * MIB / 2 + 1, old, false),
        ];
        assert_eq!(plan_trim(NOW, max, &over), [r("INBOX", 1)]);
        // Target floor(max MiB × 70 / 100) MiB: 15 MiB → 10 MiB, not 10.5 MiB. From
        // 12 MiB: 11, 10.5 (would stop at an exact 70 %), 10 → three go; the young
        // 10 MiB message stays.
        let fifteen = vec![
            msg("INBOX", 1, MIB, old, false),
            msg("INBOX", 2, MIB / 2, old + 1, false),
            msg("INBOX", 3, MIB / 2, old + 2, false),
            msg("INBOX", 4, 10 * MIB, NOW - 60, false),
        ];
        assert_eq!(
            plan_trim(NOW, 15 * MIB, &fifteen),
            [r("INBOX", 1), r("INBOX", 2), r("INBOX", 3)]
        );
    }

    #[test]
    fn quota_trim_never_touches_messages_younger_than_a_day() {
        let max = 10 * MIB;
        let young = vec![
            msg("INBOX", 1, 4 * MIB, NOW - DAY + 1, false),
            msg("INBOX", 2, 4 * MIB, NOW - 10, false),
        ];
        assert!(plan_trim(NOW, max, &young).is_empty());
        // Exactly 24 h old is no longer younger than 24 h.
        let mut day_old = young.clone();
        day_old[0].arrived = NOW - DAY;
        assert_eq!(plan_trim(NOW, max, &day_old), [r("INBOX", 1)]);
        // An old message after a young one in arrival order is never reached.
        let mixed = vec![
            msg("INBOX", 1, 3 * MIB, NOW - 2 * DAY, false),
            msg("INBOX", 2, 3 * MIB, NOW - 3600, false),
            msg("INBOX", 3, 3 * MIB, NOW - 60, false),
        ];
        assert_eq!(plan_trim(NOW, max, &mixed), [r("INBOX", 1)]);
    }

    #[test]
    fn account_plan_trims_only_after_the_retention_rules() {
        let max = 10 * MIB;
        let rules = Rules {
            max_mailbox_size: max,
            ..rules()
        };
        // 9 MiB, of which 3 MiB expired by age: 6 MiB left, no trim.
        let a = account(
            ACTIVE,
            vec![
                msg("INBOX", 1, 3 * MIB, NOW - 21 * DAY, false),
                msg("INBOX", 2, 3 * MIB, NOW - 3 * DAY, false),
                msg("INBOX", 3, 3 * MIB, NOW - 2 * DAY, false),
            ],
        );
        let plan = plan_account(NOW, &rules, &a);
        assert_eq!(plan.expired, [r("INBOX", 1)]);
        assert!(plan.trimmed.is_empty());
        // 4 × 2.5 MiB = 10 MiB, nothing expires: trim to ≤ 7 MiB takes the two oldest.
        let b = account(
            ACTIVE,
            (1..=4)
                .map(|i| {
                    msg(
                        "INBOX",
                        i,
                        5 * MIB / 2,
                        NOW - 10 * DAY + u64::from(i),
                        false,
                    )
                })
                .collect(),
        );
        let plan = plan_account(NOW, &rules, &b);
        assert_eq!(plan.trimmed, [r("INBOX", 1), r("INBOX", 2)]);
        assert!(plan.expired.is_empty() && plan.large.is_empty());
    }

    #[test]
    fn next_run_is_0002_utc() {
        let day = 20_000 * DAY;
        assert_eq!(next_run(day), day + RUN_AT);
        assert_eq!(next_run(day + RUN_AT - 1), day + RUN_AT);
        assert_eq!(next_run(day + RUN_AT), day + DAY + RUN_AT);
        assert_eq!(next_run(day + DAY - 1), day + DAY + RUN_AT);
    }

    // ---- end to end: a real relay, its store and a clock moved by hand ---------------

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
        fn set(&self, t: u64) {
            self.0.store(t, Ordering::SeqCst);
        }
    }

    const PASSWORD: &str = "password-long-enough";

    struct World {
        relay: Arc<Relay>,
        clock: Arc<TestClock>,
        _dir: tempfile::TempDir,
    }

    fn world(start: u64, max_mailbox_size: u64) -> World {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::testing::config(dir.path(), "127.0.0.1");
        config.max_mailbox_size = max_mailbox_size;
        let clock = Arc::new(TestClock(AtomicU64::new(start)));
        let relay = Relay::open_with_clock(config, clock.clone()).unwrap();
        World {
            relay,
            clock,
            _dir: dir,
        }
    }

    impl World {
        fn handles(&self) -> Handles<'_> {
            self.relay.expire_handles()
        }

        /// Create `local@[127.0.0.1]` by a first login at the clock's time.
        async fn account(&self, local: &str) -> String {
            let domain = self.relay.config.address_domain();
            let login = format!("{local}@{domain}");
            self.relay
                .auth
                .login(&login, PASSWORD, std::net::Ipv4Addr::LOCALHOST.into())
                .await
                .unwrap()
        }

        async fn deliver(&self, to: &str, size: usize) -> u32 {
            self.relay
                .store
                .deliver(Delivery {
                    sender: "someone@other".into(),
                    local: vec![to.into()],
                    remote: vec![],
                    body: crate::message::Parsed::legacy(vec![b'x'; size]),
                    received: self.clock.unix_now(),
                })
                .await
                .unwrap();
            self.uids(to, "INBOX").last().copied().unwrap()
        }

        fn uids(&self, account: &str, mailbox: &str) -> Vec<u32> {
            let (_, m) = self.relay.store.messages(account, mailbox).unwrap();
            m.iter().map(|m| m.uid).collect()
        }
    }

    #[tokio::test]
    async fn daily_rules_on_a_real_store() {
        let t0 = 20_000 * DAY + 3_600;
        let w = world(t0, 500 * MIB);
        let rules = Rules::from_config(&w.relay.config);
        assert_eq!(
            (rules.delete_mails_after, rules.delete_large_after),
            (20, 7)
        );

        // Day 0: alice and bob exist; bob never logs in again.
        let alice = w.account("alice0001").await;
        let bob = w.account("bob000001").await;
        let ancient = w.deliver(&alice, 100).await;
        let bob_msg = w.deliver(&bob, 100).await;
        w.relay
            .store
            .set_device_token(&bob, "openpgp:token", t0)
            .await
            .unwrap();

        // Day 12: a large message alice reads, one she does not, a small one.
        w.clock.set(t0 + 12 * DAY);
        let large_seen = w.deliver(&alice, 300_000).await;
        let large_unseen = w.deliver(&alice, 300_000).await;
        let small_seen = w.deliver(&alice, 1_000).await;
        let seen = Flags {
            bits: Flags::SEEN,
            keywords: vec![],
        };
        w.relay
            .store
            .store_flags(
                &alice,
                "INBOX",
                vec![large_seen, small_seen],
                FlagOp::Add,
                seen,
            )
            .await
            .unwrap();

        // Day 19: nothing is old enough yet; alice logs in again (LL-1).
        let day19 = t0 + 19 * DAY;
        w.clock.set(day19);
        w.relay
            .store
            .set_last_login_day(&alice, day19 / DAY * DAY)
            .await
            .unwrap();
        // Exactly 7 days after day 12: kept; one second later past delete_large_after,
        // for the large seen message only.
        let report = run(&w.handles(), day19).await.unwrap();
        assert_eq!(report, Report::default());
        let report = run(&w.handles(), day19 + 1).await.unwrap();
        assert_eq!(report.accounts_removed + report.messages_expired, 1);
        assert_eq!(w.uids(&alice, "INBOX"), [ancient, large_unseen, small_seen]);

        // Day 21: the day-0 messages are older than 20 days.
        let report = run(&w.handles(), t0 + 21 * DAY).await.unwrap();
        assert_eq!(report.messages_expired, 2, "{report:?}");
        assert_eq!(w.uids(&alice, "INBOX"), [large_unseen, small_seen]);
        assert!(w.uids(&bob, "INBOX").is_empty(), "bob {bob_msg} expired");
        assert!(
            w.relay.store.account(&bob).unwrap().is_some(),
            "bob still active"
        );

        // Day 91: bob's last login (day 0) is older than 90 days; alice (day 19) is not.
        let wake = w.relay.events.subscribe(&bob);
        w.clock.set(t0 + 91 * DAY);
        let report = run(&w.handles(), t0 + 91 * DAY).await.unwrap();
        assert_eq!(report.accounts_removed, 1, "{report:?}");
        assert!(w.relay.store.account(&bob).unwrap().is_none());
        assert!(w.relay.store.mailboxes(&bob).unwrap().is_empty());
        assert!(w.relay.store.device_tokens(&bob).unwrap().is_empty());
        assert!(
            wake.has_changed().is_err(),
            "bob's sessions were told to end"
        );
        assert!(w.relay.store.account(&alice).unwrap().is_some());
        // alice's day-12 messages are older than 20 days by now.
        assert!(w.uids(&alice, "INBOX").is_empty());

        // The login cache forgot bob: logging in again creates a fresh account.
        let again = w.account("bob000001").await;
        assert_eq!(again, bob);
        let fresh = w.relay.store.account(&bob).unwrap().unwrap();
        assert_eq!(fresh.last_login_day, (t0 + 91 * DAY) / DAY * DAY);
        assert_eq!(w.uids(&bob, "INBOX"), Vec::<u32>::new());
        // A run that finds nothing to do changes nothing.
        assert_eq!(
            run(&w.handles(), t0 + 91 * DAY).await.unwrap(),
            Report::default()
        );
    }

    #[tokio::test]
    async fn quota_trim_after_delivery_and_in_the_daily_run() {
        let t0 = 20_000 * DAY;
        let mib = MIB as usize;
        let w = world(t0, 10 * MIB);
        let alice = w.account("alice0001").await;
        // Four old messages of 2 MiB: 8 MiB > 7.5 MiB, but not yet checked.
        let mut old = Vec::new();
        for i in 0..4 {
            w.clock.set(t0 + i);
            old.push(w.deliver(&alice, 2 * mib).await);
        }
        // Two days later a small delivery triggers the trim: the oldest goes (6 MiB left).
        w.clock.set(t0 + 2 * DAY);
        let new = w.deliver(&alice, 1_000).await;
        let wake = w.relay.events.subscribe(&alice);
        assert_eq!(trim_after_delivery(&w.handles(), &alice).await.unwrap(), 1);
        assert!(
            wake.has_changed().unwrap(),
            "IMAP sessions woken by the trim"
        );
        assert_eq!(w.uids(&alice, "INBOX"), [old[1], old[2], old[3], new]);
        // Below 75 %: nothing more.
        assert_eq!(trim_after_delivery(&w.handles(), &alice).await.unwrap(), 0);

        // 2 MiB more now: 8 MiB + 1000 B, so the oldest remaining (two days old) goes;
        // the message just delivered stays.
        let fresh = w.deliver(&alice, 2 * mib).await;
        assert_eq!(trim_after_delivery(&w.handles(), &alice).await.unwrap(), 1);
        assert_eq!(w.uids(&alice, "INBOX"), [old[2], old[3], new, fresh]);
        // All young: 3 × 2.9 MiB delivered now, over 75 %, nothing may go.
        let w2 = world(t0, 10 * MIB);
        let bob = w2.account("bob000001").await;
        for _ in 0..3 {
            w2.deliver(&bob, 29 * mib / 10).await;
        }
        assert_eq!(trim_after_delivery(&w2.handles(), &bob).await.unwrap(), 0);
        assert_eq!(w2.uids(&bob, "INBOX").len(), 3);
        // The daily run trims too (EXP-4), once they are a day old.
        w2.clock.set(t0 + DAY);
        let report = run(&w2.handles(), t0 + DAY).await.unwrap();
        assert_eq!(report.messages_trimmed, 1, "{report:?}");
        assert_eq!(w2.uids(&bob, "INBOX"), [2, 3]);
    }

    #[tokio::test]
    async fn daily_job_runs_at_0002_by_the_injected_clock() {
        let t0 = 20_000 * DAY;
        let w = world(t0 - 30 * DAY, 500 * MIB);
        let alice = w.account("alice0001").await;
        w.deliver(&alice, 100).await;
        // One minute before the run the message (30 days old) is still there.
        w.clock.set(t0 + RUN_AT - 60);
        w.relay.store.set_last_login_day(&alice, t0).await.unwrap();
        let job = tokio::spawn({
            let relay = w.relay.clone();
            async move { daily_polling(relay.expire_handles(), Duration::from_millis(10)).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(w.uids(&alice, "INBOX").len(), 1, "not before 00:02");
        w.clock.set(t0 + RUN_AT);
        let mut gone = false;
        for _ in 0..500 {
            if w.uids(&alice, "INBOX").is_empty() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        job.abort();
        assert!(gone, "the 00:02 run removed the expired message");
    }
}
