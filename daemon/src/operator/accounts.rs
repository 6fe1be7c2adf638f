//! Accounts for the operator (issue 18 item 3): list them with their figures a page at a
//! time, delete one with all its messages, block an address so that no login creates it
//! again (an existing account goes with the block), and lift a block. The command line
//! (`relaybox accounts`, through `control`) and the status page's "Accounts" page call
//! these functions and nothing else.
//!
//! Every change is durable in the store before the answer. On a running relay a removed
//! account is also dropped from the login cache and its IMAP sessions end (the same path
//! as the daily expiry, [`crate::expire::Observer::account_removed`]).

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::config::Config;
use crate::expire::Observer;
use crate::server::Relay;
use crate::store::{Block, Store, StoreError};

/// Most rows in one page (a reply stays small whatever the number of accounts).
pub const MAX_PAGE: u32 = 1000;
/// Rows in a page when the request does not say.
pub const DEFAULT_PAGE: u32 = 100;
/// Longest address accepted as input (RFC 5321 §4.5.3.1.3: a path is at most 256 octets).
const MAX_ADDRESS: usize = 256;

/// Why an operator's request about accounts was refused; the text is for that person.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("'{input}' is not an address: {why}")]
    Malformed { input: String, why: &'static str },
    #[error("{address} is not an address of this relay (its addresses end in @{domain})")]
    ForeignDomain { address: String, domain: String },
    #[error("no account {0} on this relay")]
    NoAccount(String),
    #[error("{0} is blocked already")]
    AlreadyBlocked(String),
    #[error("{0} is not blocked")]
    NotBlocked(String),
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
}

/// Which page of a list: the rows after `after` (by address), those containing
/// `search` when given, at most `limit` ([`DEFAULT_PAGE`] when absent, at most
/// [`MAX_PAGE`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    pub after: Option<String>,
    #[serde(default)]
    pub search: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}

impl ListQuery {
    fn limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE) as usize
    }

    /// The search text as addresses are stored (lower case); none when blank.
    fn search(&self) -> Option<String> {
        self.search
            .as_deref()
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
    }
}

/// One account in the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRow {
    pub address: String,
    /// Unix seconds; `None` for accounts made before creation times were kept.
    pub created: Option<u64>,
    /// Unix seconds of the day of the last IMAP login (LL-1).
    pub last_login_day: u64,
    /// Bytes of the stored messages.
    pub storage_bytes: u64,
    /// Messages stored for the account (waiting to be fetched and deleted).
    pub messages: u64,
}

/// A page of accounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountPage {
    pub accounts: Vec<AccountRow>,
    /// Accounts on the relay (all of them, not only the matching ones).
    pub total: u64,
    /// More rows follow: ask again with `after` = the last address of this page.
    pub more: bool,
}

/// One blocked address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedRow {
    pub address: String,
    /// Unix seconds of the block.
    pub since: u64,
}

/// A page of blocked addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedPage {
    pub blocked: Vec<BlockedRow>,
    pub total: u64,
    pub more: bool,
}

/// What a deletion removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub address: String,
    pub messages: u64,
    pub mailboxes: u64,
}

impl Deleted {
    /// The confirmation for people.
    pub fn text(&self) -> String {
        format!(
            "deleted {} with {} message(s) in {} mailbox(es)",
            self.address, self.messages, self.mailboxes
        )
    }
}

/// What a block did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocked {
    pub address: String,
    /// The account that existed and was deleted with the block.
    pub deleted: Option<Deleted>,
}

impl Blocked {
    /// The confirmation for people (says when an account was deleted with the block).
    pub fn text(&self) -> String {
        match &self.deleted {
            Some(d) => format!(
                "blocked {}; its account was deleted with {} message(s) in {} mailbox(es)",
                self.address, d.messages, d.mailboxes
            ),
            None => format!(
                "blocked {} (it had no account); no login can create it now",
                self.address
            ),
        }
    }
}

/// The accounts of one relay: its store and address domain, and the running relay when
/// there is one (its login cache and sessions hear of removals).
pub struct Accounts<'a> {
    store: &'a Store,
    /// `example.org` or `[192.0.2.1]`.
    domain: String,
    relay: Option<&'a Relay>,
}

impl<'a> Accounts<'a> {
    /// The accounts of a running relay.
    pub fn of_relay(relay: &'a Relay) -> Self {
        Accounts {
            store: &relay.store,
            domain: relay.config.address_domain(),
            relay: Some(relay),
        }
    }

    /// The accounts in the store of a stopped relay with `config`.
    pub fn stopped(store: &'a Store, config: &Config) -> Self {
        Accounts {
            store,
            domain: config.address_domain(),
            relay: None,
        }
    }

    /// A page of accounts with their figures.
    pub fn list(&self, query: &ListQuery) -> Result<AccountPage, AccountsError> {
        let search = query.search();
        let (rows, more) =
            self.store
                .account_page(query.after.as_deref(), search.as_deref(), query.limit())?;
        Ok(AccountPage {
            accounts: rows
                .into_iter()
                .map(|f| AccountRow {
                    address: f.account.address,
                    created: f.account.created,
                    last_login_day: f.account.last_login_day,
                    storage_bytes: f.bytes,
                    messages: f.messages,
                })
                .collect(),
            total: self.store.account_count()?,
            more,
        })
    }

    /// A page of blocked addresses.
    pub fn blocked(&self, query: &ListQuery) -> Result<BlockedPage, AccountsError> {
        let search = query.search();
        let (rows, more) =
            self.store
                .blocked_page(query.after.as_deref(), search.as_deref(), query.limit())?;
        Ok(BlockedPage {
            blocked: rows
                .into_iter()
                .map(|b| BlockedRow {
                    address: b.address,
                    since: b.since,
                })
                .collect(),
            total: self.store.blocked_count()?,
            more,
        })
    }

    /// Delete the account of `input` with all its messages, durably; its sessions end.
    pub async fn delete(&self, input: &str) -> Result<Deleted, AccountsError> {
        let address = self.address(input)?;
        if self.store.account(&address)?.is_none() {
            return Err(AccountsError::NoAccount(address));
        }
        let Some(removal) = self.store.delete_account(&address).await? else {
            // Deleted by someone else meanwhile.
            return Err(AccountsError::NoAccount(address));
        };
        self.removed(&address);
        tracing::info!("operator: deleted an account");
        Ok(Deleted {
            address,
            messages: removal.messages as u64,
            mailboxes: removal.mailboxes as u64,
        })
    }

    /// Block `input` at `now`: no login creates it again; an existing account is deleted
    /// with the block (one durable commit).
    pub async fn block(&self, input: &str, now: u64) -> Result<Blocked, AccountsError> {
        let address = self.address(input)?;
        match self.store.block_address(&address, now).await? {
            Block::Already => Err(AccountsError::AlreadyBlocked(address)),
            Block::New(removal) => {
                let deleted = removal.map(|r| Deleted {
                    address: address.clone(),
                    messages: r.messages as u64,
                    mailboxes: r.mailboxes as u64,
                });
                if deleted.is_some() {
                    self.removed(&address);
                }
                tracing::info!("operator: blocked an address");
                Ok(Blocked { address, deleted })
            }
        }
    }

    /// Lift the block of `input`, durably: the address can be created again.
    pub async fn unblock(&self, input: &str) -> Result<String, AccountsError> {
        let address = self.address(input)?;
        if !self.store.unblock_address(&address).await? {
            return Err(AccountsError::NotBlocked(address));
        }
        tracing::info!("operator: unblocked an address");
        Ok(address)
    }

    /// "Now" for a block: the relay's clock when it runs, else the system's.
    pub fn now(&self) -> u64 {
        match self.relay {
            Some(relay) => relay.clock.unix_now(),
            None => crate::clock::SystemClock.unix_now(),
        }
    }

    /// The running relay forgets the removed account: no cached login, no session.
    fn removed(&self, address: &str) {
        if let Some(relay) = self.relay {
            relay.expire_handles().account_removed(address);
        }
    }

    /// The canonical form of an address typed by the operator.
    fn address(&self, input: &str) -> Result<String, AccountsError> {
        parse_address(input, &self.domain)
    }
}

/// An address of this relay as stored: `local@domain` in lower case, the local part of
/// the characters accounts are made of (ACC-5), the relay's own address `domain`.
pub fn parse_address(input: &str, domain: &str) -> Result<String, AccountsError> {
    let malformed = |why| AccountsError::Malformed {
        input: input.chars().take(MAX_ADDRESS).collect(),
        why,
    };
    let text = input.trim();
    if text.is_empty() {
        return Err(malformed("it is empty"));
    }
    if text.len() > MAX_ADDRESS {
        return Err(malformed("it is too long"));
    }
    let lower = text.to_ascii_lowercase();
    let Some((local, at)) = lower.rsplit_once('@') else {
        return Err(malformed("it has no @"));
    };
    if local.is_empty() {
        return Err(malformed("nothing before the @"));
    }
    if !local
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(malformed(
            "the part before the @ may contain only a-z, 0-9, '.', '_' and '-'",
        ));
    }
    if at != domain.to_ascii_lowercase() {
        return Err(AccountsError::ForeignDomain {
            address: text.to_string(),
            domain: domain.to_string(),
        });
    }
    Ok(lower)
}

#[cfg(test)]
mod tests;
