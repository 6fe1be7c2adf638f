//! The one path every accepted message takes into the store (DESIGN.md: one straight
//! path for data): submissions (SUB-10..12), mail from other relays over SMTP port 25 and
//! HTTPS `/mxdeliv` (IN-4..IN-8), and bounces (OUT-7). Each ends in one durable commit
//! before the `250` / `200`, then wakes IDLE and publishes one
//! [`Delivered`](crate::events::Delivered) event (IN-8): push, the outbound scheduler and
//! the quota trim (QUOTA-3) are its subscribers, wired by the assembly (`server`), and
//! none of them is on the path of the answer. The recipients of submissions and inbound
//! mail are checked by one [`Recipients::add`] (RCPT on every port, `X-MAIL-TO` of
//! `/mxdeliv`).

use std::net::IpAddr;

use crate::clock::Clock;
use crate::config::Config;
use crate::dkim::{Signer, Verifier};
use crate::events::{Delivered, Events};
use crate::message::Parsed;
use crate::metrics::Rejection;
use crate::policy::inbound::{self, Origin};
use crate::policy::recipient::{self, Destination, Relaying};
use crate::policy::{SmtpReply, headers, quota, submission, token, unparsable};
use crate::store::{Delivery, PushRequest, Store};

/// The handles a delivery uses, borrowed from the running relay (`Relay::delivery`).
#[derive(Clone, Copy)]
pub struct Handles<'a> {
    pub config: &'a Config,
    pub store: &'a Store,
    pub clock: &'a dyn Clock,
    /// IDLE wake-ups and the [`Delivered`] event.
    pub events: &'a Events,
    /// SUB-12: this relay's DKIM signer (`None` in IP-only mode).
    pub dkim: Option<&'a Signer>,
    /// IN-4e, IN-5: DKIM verification of incoming mail.
    pub dkim_verifier: &'a Verifier,
    /// Issue 17: a relay that moves stores nothing locally and forwards it all.
    pub moving: &'a crate::moving::Moving,
}

/// The accepted recipients of one transaction: its RCPT commands (every SMTP port) or
/// the `X-MAIL-TO` headers of one `/mxdeliv` request, each checked by [`Recipients::add`].
#[derive(Debug, Clone, Default)]
pub struct Recipients {
    /// Local accounts (canonical, `+ext` removed), without duplicates.
    pub local: Vec<String>,
    /// Remote addresses as given, without duplicates (submission only).
    pub remote: Vec<String>,
    /// All accepted recipients in order, as the policy sees them (SUB-8).
    pub all: Vec<String>,
    /// IN-4d: some local recipient refuses cleartext.
    pub enforce_e2ee: bool,
}

impl Recipients {
    /// Check the recipient `to` (a bare address) and take it, or the reply that refuses
    /// it: the count (SUB-5), where it goes ([`recipient::destination`], IN-2), and for
    /// an address of this relay's domain that the account exists (IN-2 allowed variant:
    /// `550 5.1.1` at once) and has room for `size_hint` bytes (QUOTA-2 at RCPT; the
    /// exact size is checked again in the commit).
    pub fn add(
        &mut self,
        h: &Handles<'_>,
        to: &str,
        size_hint: u64,
        relaying: Relaying,
    ) -> Result<(), SmtpReply> {
        if self.all.len() >= recipient::MAX_PER_TRANSACTION {
            return Err(recipient::too_many());
        }
        match recipient::destination(to, &h.config.address_domain(), relaying)? {
            Destination::Local(account) => {
                self.enforce_e2ee |= local_account(h, &account, to, size_hint)?;
                if !self.local.contains(&account) {
                    self.local.push(account.clone());
                }
                self.all.push(account);
            }
            Destination::Remote => {
                if !self.remote.iter().any(|r| r == to) {
                    self.remote.push(to.to_string());
                }
                self.all.push(to.to_string());
            }
        }
        Ok(())
    }
}

/// The store's side of a local recipient `to` (account `account`): it exists and has
/// room for `size_hint` bytes. Whether it refuses cleartext (IN-4d).
fn local_account(
    h: &Handles<'_>,
    account: &str,
    to: &str,
    size_hint: u64,
) -> Result<bool, SmtpReply> {
    match h.store.account(account) {
        Ok(Some(found)) => match h.store.usage(account) {
            Ok(used) if quota::exceeds_at_rcpt(used, size_hint, h.config.max_mailbox_size) => {
                tracing::info!("recipient refused: mailbox full");
                Err(quota::exceeded_reply(to))
            }
            Ok(_) => Ok(found.enforce_e2ee),
            Err(e) => {
                tracing::warn!("recipient usage: {e}");
                Err(SmtpReply::new(451, "4.3.0 Local error"))
            }
        },
        Ok(None) => Err(recipient::user_unknown(to)),
        Err(e) => {
            tracing::warn!("recipient lookup: {e}");
            Err(SmtpReply::new(451, "4.3.0 Local error"))
        }
    }
}

/// Messages at least this big are parsed and judged on the heavy-work pool
/// (`crate::work`), not on the async workers that serve every other session.
const OFFLOAD_AT: usize = 256 * 1024;

/// SUB-6 / IN-4a: the one parse of a message that arrived. Everything after it (the
/// rules, the cleanup, DKIM, push, the store, IMAP) reads this result.
fn parse(raw: Vec<u8>) -> Result<Parsed, SmtpReply> {
    Parsed::parse(raw).map_err(|why| {
        crate::metrics::rejected(Rejection::Malformed);
        tracing::info!("message refused: {why}");
        unparsable(&why)
    })
}

/// Run `check` (the parse and the rules, pure and linear in the message size) here for
/// a small message, on the heavy-work pool for a big one.
async fn checked<T: Send + 'static>(
    size: usize,
    check: impl FnOnce() -> Result<T, SmtpReply> + Send + 'static,
) -> Result<T, SmtpReply> {
    if size < OFFLOAD_AT {
        return check();
    }
    crate::work::run(check)
        .await
        .unwrap_or_else(|| Err(SmtpReply::new(451, "4.3.0 Local error")))
}

/// SUB-6..12, then the commit. `all` is every recipient as the policy sees them.
pub async fn submission(
    h: &Handles<'_>,
    mail_from: String,
    local: Vec<String>,
    remote: Vec<String>,
    all: &[String],
    raw: Vec<u8>,
) -> SmtpReply {
    let (from, rcpts) = (mail_from.clone(), all.to_vec());
    let msg = match checked(raw.len(), move || {
        let msg = parse(raw)?;
        submission::judge(msg.view(), &from, &rcpts).inspect_err(|r| {
            crate::metrics::rejected(rejection(r));
        })?;
        Ok(msg)
    })
    .await
    {
        Ok(m) => m,
        Err(r) => return r,
    };
    // SUB-10, SUB-11: cleanup; no Received header is ever added.
    let mut msg = headers::cleanup_submission(msg);
    let hold = h.moving.hold().await;
    let (local, remote) = forwarded(&hold, local, remote);
    // SUB-12: sign once, after cleanup, when the message leaves this relay (local copies
    // share the same bytes).
    if !remote.is_empty()
        && let Some(signer) = h.dkim
    {
        msg = signer.sign(msg);
    }
    commit(h, &hold, mail_from, local, remote, msg).await
}

/// Issue 17: where the local recipients go. While the relay moves (`hold` says where to)
/// they are queued like remote ones — the queue row of this relay's own domain, which the
/// outbound transport sends to the new machine — and nothing is stored here.
fn forwarded(
    hold: &crate::moving::Hold<'_>,
    mut local: Vec<String>,
    mut remote: Vec<String>,
) -> (Vec<String>, Vec<String>) {
    if hold.is_some() {
        for account in local.drain(..) {
            if !remote.contains(&account) {
                remote.push(account);
            }
        }
    }
    (local, remote)
}

/// IN-4 (a–e) then IN-7 and the commit, for port 25 and `/mxdeliv` alike. `client` is
/// the connecting address (IN-4e).
pub async fn inbound(
    h: &Handles<'_>,
    client: IpAddr,
    mail_from: String,
    rcpts: Recipients,
    raw: Vec<u8>,
) -> SmtpReply {
    let (from, enforce) = (mail_from.clone(), rcpts.enforce_e2ee);
    let (msg, verdict) = match checked(raw.len(), move || {
        let msg = parse(raw)?;
        let verdict = inbound::judge(msg.view(), &from, enforce).inspect_err(|r| {
            crate::metrics::rejected(rejection(r));
        })?;
        Ok((msg, verdict))
    })
    .await
    {
        Ok(x) => x,
        Err(r) => return r,
    };
    // IN-4e: origin, from the From address the rules above checked.
    let Some(domain) = headers::from_address(msg.view())
        .ok()
        .and_then(|a| a.rsplit_once('@').map(|(_, d)| d.to_string()))
    else {
        return SmtpReply::new(500, "Failed to parse message headers");
    };
    let own_domain = domain.eq_ignore_ascii_case(&h.config.address_domain());
    match inbound::origin(&domain, client) {
        _ if !own_domain && forwarded_by_us(h, &msg).await => {}
        Origin::Literal => {}
        Origin::Refused(r) => {
            crate::metrics::rejected(Rejection::Origin);
            return r;
        }
        Origin::Dkim => {
            if let Err(r) = h.dkim_verifier.verify(msg.bytes(), &domain).await {
                crate::metrics::rejected(Rejection::Origin);
                return r;
            }
        }
    }
    // IN-7.
    let mut msg = headers::strip_inbound(msg);
    // IN-4b: a From that differs from MAIL FROM makes the envelope sender `<>`.
    let sender = if verdict.reset_sender {
        String::new()
    } else {
        mail_from
    };
    let hold = h.moving.hold().await;
    let (local, remote) = forwarded(&hold, rcpts.local, Vec::new());
    // Issue 17: mail forwarded to the new machine carries this relay's own signature, by
    // which the new machine (same key) knows it was checked here ([`forwarded_by_us`]).
    if !remote.is_empty()
        && let Some(signer) = h.dkim
    {
        msg = signer.sign(msg);
    }
    commit(h, &hold, sender, local, remote, msg).await
}

/// Issue 17: whether `msg` was checked by this relay itself on the machine it moved from
/// (the same DKIM key): it carries a valid signature of this relay's own domain. Such mail
/// passed IN-4 there; its origin (IN-4e) is not checked again, as the From domain's own
/// signature was removed there (IN-7).
async fn forwarded_by_us(h: &Handles<'_>, msg: &Parsed) -> bool {
    if h.dkim.is_none() {
        return false;
    }
    let own = h.config.address_domain();
    // A cheap look first (no copy of the header): most mail carries no signature of this
    // domain at all.
    let tag = format!("d={own}");
    let header = msg.view().header();
    if !header
        .windows(tag.len())
        .any(|w| w.eq_ignore_ascii_case(tag.as_bytes()))
    {
        return false;
    }
    h.dkim_verifier.verify(msg.bytes(), &own).await.is_ok()
}

/// One durable `Store::deliver_with_push` for every recipient; `250` only after it
/// returned `Ok`. Local recipients get the message in their INBOX, remote ones are
/// queued (one row per domain).
pub async fn store(
    h: &Handles<'_>,
    sender: String,
    local: Vec<String>,
    remote: Vec<String>,
    body: Parsed,
) -> SmtpReply {
    let hold = h.moving.hold().await;
    let (local, remote) = forwarded(&hold, local, remote);
    commit(h, &hold, sender, local, remote, body).await
}

/// [`store`] inside the moving gate (`_hold`, held until the commit returned).
async fn commit(
    h: &Handles<'_>,
    _hold: &crate::moving::Hold<'_>,
    sender: String,
    local: Vec<String>,
    remote: Vec<String>,
    body: Parsed,
) -> SmtpReply {
    let now = h.clock.unix_now();
    // PUSH-1: no push for a message whose From is the recipient account itself
    // (self-sent and multi-device copies).
    let from = headers::from_address(body.view()).ok();
    // MD-1: push jobs only for the device tokens valid now.
    let (tokens_set_from, tokens_set_until) = token::token_set_window(now);
    let push = PushRequest {
        accounts: local
            .iter()
            .filter(|a| !from.as_deref().is_some_and(|f| f.eq_ignore_ascii_case(a)))
            .cloned()
            .collect(),
        now,
        tokens_set_from,
        tokens_set_until,
    };
    let delivery = Delivery {
        sender,
        local,
        remote,
        body,
        received: now,
    };
    let remote_recipients = !delivery.remote.is_empty();
    let remote_domains = count_domains(&delivery.remote);
    let max_mailbox_size = h.config.max_mailbox_size;
    // PUSH-2: the push jobs are part of the delivery's durable commit.
    match h
        .store
        .deliver_with_push(delivery, max_mailbox_size, Some(push))
        .await
    {
        Ok((delivered, _push_jobs)) => {
            for account in &delivered.stored {
                h.events.mailbox_changed(account);
            }
            // IN-8: after the IDLE wake-up, push, the outbound scheduler and the quota
            // trim (QUOTA-3), as subscribers: the answer waits for none of them.
            if !delivered.stored.is_empty() || remote_recipients {
                h.events.delivered(&Delivered {
                    accounts: delivered.stored.clone(),
                    queued: remote_recipients,
                });
            }
            if let Some(first) = delivered.over_quota.first() {
                // QUOTA-2 at DATA. When nobody got the message the sender gets the
                // permanent refusal (and so a bounce). When other recipients did, SMTP
                // has no per-recipient answer after DATA: the message is accepted for
                // them and the full mailboxes miss it (logged).
                if delivered.stored.is_empty() && !remote_recipients {
                    crate::metrics::rejected(Rejection::Quota);
                    tracing::info!("message refused: mailbox full");
                    return quota::exceeded_reply(first);
                }
                tracing::info!(
                    "quota: message not stored for {} recipient(s), mailbox full",
                    delivered.over_quota.len()
                );
            }
            crate::metrics::delivered(delivered.stored.len(), remote_domains);
            tracing::info!("message accepted");
            SmtpReply::new(250, "2.0.0 Ok: queued")
        }
        Err(e) => {
            tracing::error!("delivery failed: {e}");
            SmtpReply::new(451, "4.3.0 Local error")
        }
    }
}

/// The metrics label of a refusal after DATA: 523 is the encryption gate.
fn rejection(reply: &SmtpReply) -> Rejection {
    if reply.code == 523 {
        Rejection::Unencrypted
    } else {
        Rejection::Policy
    }
}

fn count_domains(recipients: &[String]) -> usize {
    let mut domains: Vec<String> = recipients
        .iter()
        .map(|r| {
            r.rsplit_once('@')
                .map_or("", |(_, d)| d)
                .to_ascii_lowercase()
        })
        .collect();
    domains.sort();
    domains.dedup();
    domains.len()
}
