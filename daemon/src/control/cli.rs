//! The operator's commands on the command line (`relaybox accounts …`; `queue` and
//! `report` join here): their arguments, one function per command that sends its
//! [`Request`] through [`client::call`] (the running daemon, or the stopped relay's
//! store) and prints the answer as plain text.
//!
//! Exit codes, the same for every command: [`EXIT_OK`] done, [`EXIT_REFUSED`] refused or
//! failed (the reason on stderr), [`EXIT_CONFIG`] the config file is wrong (reported by
//! the binary before a command runs).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::de::DeserializeOwned;

use super::{Request, client};
use crate::config::Config;
use crate::operator::accounts::{AccountPage, Blocked, BlockedPage, Deleted, ListQuery, MAX_PAGE};

/// Done.
pub const EXIT_OK: u8 = 0;
/// Refused (unknown address, …) or failed; the reason is on stderr.
pub const EXIT_REFUSED: u8 = 1;
/// The config file could not be read or is wrong.
pub const EXIT_CONFIG: u8 = 2;

/// Rows asked for per request when listing: the list is printed a page at a time, so
/// memory stays bounded on a relay with any number of accounts.
const LIST_PAGE: u32 = 500;

/// `relaybox accounts …`.
#[derive(Debug, clap::Subcommand)]
pub enum AccountsAction {
    /// List the accounts: address, created, last login day, storage used, messages
    /// stored (waiting to be fetched).
    List {
        /// Path of the chatmail.ini file.
        #[arg(long, short)]
        config: PathBuf,
        /// Only addresses containing this text.
        #[arg(long)]
        search: Option<String>,
    },
    /// List the blocked addresses.
    Blocked {
        /// Path of the chatmail.ini file.
        #[arg(long, short)]
        config: PathBuf,
        /// Only addresses containing this text.
        #[arg(long)]
        search: Option<String>,
    },
    /// Delete an account and all its messages for good (asks to type the address again
    /// on a terminal). A later login with the address creates a new, empty account
    /// unless the address is blocked.
    Delete {
        /// Path of the chatmail.ini file.
        #[arg(long, short)]
        config: PathBuf,
        /// Do not ask for confirmation (for scripts).
        #[arg(long)]
        yes: bool,
        address: String,
    },
    /// Block an address: no login can create it again. An account with that address is
    /// deleted with all its messages.
    Block {
        /// Path of the chatmail.ini file.
        #[arg(long, short)]
        config: PathBuf,
        address: String,
    },
    /// Lift the block of an address.
    Unblock {
        /// Path of the chatmail.ini file.
        #[arg(long, short)]
        config: PathBuf,
        address: String,
    },
}

impl AccountsAction {
    /// The config file the command names.
    pub fn config(&self) -> &Path {
        match self {
            AccountsAction::List { config, .. }
            | AccountsAction::Blocked { config, .. }
            | AccountsAction::Delete { config, .. }
            | AccountsAction::Block { config, .. }
            | AccountsAction::Unblock { config, .. } => config,
        }
    }
}

/// Run `relaybox accounts …` with the loaded `config`.
pub fn accounts(config: Config, action: AccountsAction) -> ExitCode {
    block_on(async move {
        match action {
            AccountsAction::List { search, .. } => accounts_list(&config, search).await,
            AccountsAction::Blocked { search, .. } => accounts_blocked(&config, search).await,
            AccountsAction::Delete { address, yes, .. } => {
                accounts_delete(&config, &address, yes).await
            }
            AccountsAction::Block { address, .. } => accounts_block(&config, &address).await,
            AccountsAction::Unblock { address, .. } => accounts_unblock(&config, &address).await,
        }
    })
}

/// `relaybox accounts list`: a table, printed a page at a time.
pub async fn accounts_list(config: &Config, search: Option<String>) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let mut query = ListQuery {
        after: None,
        search,
        limit: Some(LIST_PAGE.min(MAX_PAGE)),
    };
    let mut listed = 0u64;
    let mut width = None;
    loop {
        let page: AccountPage = match ask(config, Request::AccountsList(query.clone())).await {
            Ok(p) => p,
            Err(code) => return code,
        };
        let width = *width.get_or_insert_with(|| {
            let w = page.accounts.iter().map(|a| a.address.len()).max();
            w.unwrap_or(0).max("ADDRESS".len())
        });
        if listed == 0 {
            let _ = writeln!(
                out,
                "{:<width$}  {:<10}  {:<10}  {:>12}  {:>8}",
                "ADDRESS", "CREATED", "LAST LOGIN", "STORAGE", "MESSAGES"
            );
        }
        for a in &page.accounts {
            let created = a.created.map_or_else(|| "unknown".to_string(), day);
            let _ = writeln!(
                out,
                "{:<width$}  {:<10}  {:<10}  {:>12}  {:>8}",
                a.address,
                created,
                day(a.last_login_day),
                a.storage_bytes,
                a.messages
            );
        }
        listed += page.accounts.len() as u64;
        match (page.more, page.accounts.last()) {
            (true, Some(last)) => query.after = Some(last.address.clone()),
            _ => {
                let _ = writeln!(
                    out,
                    "{listed} account(s) listed; {} on this relay; storage in bytes",
                    page.total
                );
                return ExitCode::from(EXIT_OK);
            }
        }
    }
}

/// `relaybox accounts blocked`.
pub async fn accounts_blocked(config: &Config, search: Option<String>) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let mut query = ListQuery {
        after: None,
        search,
        limit: Some(LIST_PAGE.min(MAX_PAGE)),
    };
    let mut listed = 0u64;
    loop {
        let page: BlockedPage = match ask(config, Request::AccountsBlocked(query.clone())).await {
            Ok(p) => p,
            Err(code) => return code,
        };
        for b in &page.blocked {
            let _ = writeln!(out, "{}  blocked since {}", b.address, day(b.since));
        }
        listed += page.blocked.len() as u64;
        match (page.more, page.blocked.last()) {
            (true, Some(last)) => query.after = Some(last.address.clone()),
            _ => {
                let _ = writeln!(out, "{listed} blocked address(es)");
                return ExitCode::from(EXIT_OK);
            }
        }
    }
}

/// `relaybox accounts delete ADDRESS`: on a terminal, only after the address is typed
/// again; elsewhere only with `--yes`.
pub async fn accounts_delete(config: &Config, address: &str, yes: bool) -> ExitCode {
    if !yes {
        if !std::io::stdin().is_terminal() {
            eprintln!(
                "relaybox: {address} not deleted: confirm on a terminal, or pass --yes in a script"
            );
            return ExitCode::from(EXIT_REFUSED);
        }
        eprint!(
            "Delete {address} and all its messages for good? Type the address again to confirm: "
        );
        let _ = std::io::stderr().flush();
        let mut typed = String::new();
        let _ = std::io::stdin().lock().read_line(&mut typed);
        if !typed.trim().eq_ignore_ascii_case(address.trim()) {
            eprintln!("relaybox: {address} not deleted: the address typed did not match");
            return ExitCode::from(EXIT_REFUSED);
        }
    }
    let request = Request::AccountsDelete {
        address: address.to_string(),
    };
    match ask::<Deleted>(config, request).await {
        Ok(d) => {
            println!("{}", d.text());
            ExitCode::from(EXIT_OK)
        }
        Err(code) => code,
    }
}

/// `relaybox accounts block ADDRESS`.
pub async fn accounts_block(config: &Config, address: &str) -> ExitCode {
    let request = Request::AccountsBlock {
        address: address.to_string(),
    };
    match ask::<Blocked>(config, request).await {
        Ok(b) => {
            println!("{}", b.text());
            ExitCode::from(EXIT_OK)
        }
        Err(code) => code,
    }
}

/// `relaybox accounts unblock ADDRESS`.
pub async fn accounts_unblock(config: &Config, address: &str) -> ExitCode {
    let request = Request::AccountsUnblock {
        address: address.to_string(),
    };
    match ask::<String>(config, request).await {
        Ok(a) => {
            println!("unblocked {a}: a login can create it again");
            ExitCode::from(EXIT_OK)
        }
        Err(code) => code,
    }
}

/// The answer to `request`, or the exit code after the reason went to stderr.
async fn ask<T: DeserializeOwned>(config: &Config, request: Request) -> Result<T, ExitCode> {
    client::call(config, request).await.map_err(|e| {
        eprintln!("relaybox: {e}");
        ExitCode::from(EXIT_REFUSED)
    })
}

/// Run a command's future on a small runtime of its own (every command-line tool).
pub fn block_on(command: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    super::block_on(command).unwrap_or_else(|e| {
        eprintln!("relaybox: cannot start runtime: {e}");
        ExitCode::from(EXIT_REFUSED)
    })
}

/// `YYYY-MM-DD` of a Unix time (UTC).
fn day(unix: u64) -> String {
    let (y, m, d) = crate::clock::civil_from_days((unix / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}
