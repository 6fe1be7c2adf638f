//! The local control socket: how the command line (`relaybox accounts`, `queue`, `report`,
//! …) reaches a running relay, whose store file the daemon holds locked.
//!
//! The socket is `<data_dir>/control.sock`. The data directory is mode 0700 (`private`) and
//! the socket itself 0600, and every connection's peer credentials are checked as well
//! (SO_PEERCRED): only root and the daemon's own user are answered.
//!
//! The protocol is one JSON [`Request`] per line and one JSON reply line: `{"ok": …}` with
//! the command's result, or `{"error": "…"}` with a message for the person who typed the
//! command. A request line is at most [`MAX_REQUEST_BYTES`]; a connection that sends
//! nothing for [`IDLE_TIMEOUT`] is closed; at most [`MAX_CONNECTIONS`] are served at once.
//!
//! [`dispatch`] is the one place a request is carried out, for both paths: the daemon calls
//! it for a socket request with the live relay in the [`Ctx`], and the client calls it in
//! process with a store it opened itself when no daemon runs ([`client::call`]). The work
//! itself lives in [`crate::operator`], which the status page uses too.

pub mod cli;
pub mod client;
pub mod front_cli;
pub mod queue_cli;
pub mod server;

use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::operator::accounts;
use crate::server::Relay;
use crate::store::Store;

/// Name of the socket inside the data directory.
pub const SOCKET_FILE: &str = "control.sock";

/// Longest request line.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// A connection is closed after this long without a complete request.
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Connections served at once; more wait for a free slot.
pub const MAX_CONNECTIONS: usize = 4;

/// What the command line can ask. Each variant names the operator function it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    /// Who answers: the daemon (relay or setup mode) or the command itself.
    Ping,
    /// A snapshot of the store (`store::snapshot`) for a backup, without the message
    /// tables unless `messages`. The only streamed answer: after the `ok` line come
    /// chunks (u32 length, bytes), a zero length, and a last reply line with the
    /// [`crate::store::snapshot::SnapshotCounts`] or the error that cut it short.
    StoreSnapshot { messages: bool },
    /// Issue 17, `relaybox move`: switch the running relay to moving to `to` and answer
    /// with the final snapshot (with the messages), streamed as for `StoreSnapshot`
    /// ([`crate::operator::moving::start`]).
    Move { to: String },
    /// The outbound queue by destination domain ([`crate::operator::queue::list`]).
    QueueList,
    /// "Retry now" for one domain ([`crate::operator::queue::retry`]).
    QueueRetry { domain: String },
    /// "Give up (bounce)" for one domain ([`crate::operator::queue::bounce`]).
    QueueBounce { domain: String },
    /// The diagnostic report as text ([`crate::operator::report`]); `config_file` is the
    /// file the command was given, read when the relay is stopped (the daemon reads its
    /// own).
    Report {
        config_file: Option<std::path::PathBuf>,
    },
    /// A page of accounts with their figures (`operator::accounts::Accounts::list`).
    AccountsList(accounts::ListQuery),
    /// A page of blocked addresses (`Accounts::blocked`).
    AccountsBlocked(accounts::ListQuery),
    /// Delete an account with its messages (`Accounts::delete`).
    AccountsDelete { address: String },
    /// Block an address, deleting its account (`Accounts::block`).
    AccountsBlock { address: String },
    /// Lift a block (`Accounts::unblock`).
    AccountsUnblock { address: String },
    /// Issue 20: chatmail.ini's `front`/`front_pin` changed (`relaybox pair-front`): the
    /// running relay re-reads them and its link follows. Answers whether a relay did.
    FrontChanged,
}

/// The answer to [`Request::Ping`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// Version of the program that answered.
    pub version: String,
    /// `relay` (the relay runs), `setup` (the daemon waits in setup mode) or `stopped`
    /// (no daemon: the command opened the store itself).
    pub mode: String,
}

/// One reply line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    Ok(serde_json::Value),
    Error(String),
}

/// What only the daemon's own state answers (the appliance implements it, so that this
/// module imports nothing above it: the appliance itself uses `backup`, which uses this).
#[async_trait::async_trait]
pub trait Daemon: Send + Sync {
    /// The diagnostic report of the running daemon (`operator::report`).
    async fn report(&self) -> String;

    /// The config file the daemon was started with (none in dev mode).
    fn config_file(&self) -> Option<std::path::PathBuf>;
}

/// What a request may use. In the daemon the relay is attached once it runs (setup mode
/// has none); in the command line's own process only a store it opened itself.
pub struct Ctx {
    pub config: Config,
    relay: OnceLock<Arc<Relay>>,
    daemon: Option<Arc<dyn Daemon>>,
    local_store: Option<Store>,
}

impl Ctx {
    /// The daemon's context (setup mode until [`Ctx::attach`]).
    pub fn daemon(config: Config, daemon: Arc<dyn Daemon>) -> Arc<Ctx> {
        Arc::new(Ctx {
            config,
            relay: OnceLock::new(),
            daemon: Some(daemon),
            local_store: None,
        })
    }

    /// The command line's context on a stopped relay (`store`: `None` when the relay has
    /// no store yet).
    pub fn stopped(config: Config, store: Option<Store>) -> Ctx {
        Ctx {
            config,
            relay: OnceLock::new(),
            daemon: None,
            local_store: store,
        }
    }

    /// The relay runs from now on.
    pub fn attach(&self, relay: Arc<Relay>) {
        let _ = self.relay.set(relay);
    }

    /// The running relay, if this is the daemon and the relay runs.
    pub fn relay(&self) -> Option<&Arc<Relay>> {
        self.relay.get()
    }

    /// The daemon's own state, if this is the daemon.
    pub fn daemon_state(&self) -> Option<&Arc<dyn Daemon>> {
        self.daemon.as_ref()
    }

    /// The store: the running relay's, or the one the command opened.
    pub fn store(&self) -> Result<&Store, String> {
        if let Some(relay) = self.relay.get() {
            return Ok(&relay.store);
        }
        self.local_store.as_ref().ok_or_else(|| {
            if self.daemon.is_some() {
                "the relay is in setup mode: finish the setup wizard first".to_string()
            } else {
                "this relay has no store yet (it has never run)".to_string()
            }
        })
    }

    /// The accounts of the running relay, or of the store the command opened.
    pub fn accounts(&self) -> Result<accounts::Accounts<'_>, String> {
        match self.relay.get() {
            Some(relay) => Ok(accounts::Accounts::of_relay(relay)),
            None => Ok(accounts::Accounts::stopped(self.store()?, &self.config)),
        }
    }

    /// `relay`, `setup` or `stopped`.
    pub fn mode(&self) -> &'static str {
        match (self.relay.get(), &self.daemon) {
            (Some(_), _) => "relay",
            (None, Some(_)) => "setup",
            (None, None) => "stopped",
        }
    }
}

/// Carry out one request (the same for the socket and the stopped relay).
pub async fn dispatch(ctx: &Ctx, request: Request) -> Reply {
    match run(ctx, request).await {
        Ok(v) => Reply::Ok(v),
        Err(e) => Reply::Error(e),
    }
}

/// One arm per request: call the operator function, encode its answer.
async fn run(ctx: &Ctx, request: Request) -> Result<serde_json::Value, String> {
    match request {
        Request::Ping => to_value(Pong {
            version: env!("CARGO_PKG_VERSION").to_string(),
            mode: ctx.mode().to_string(),
        }),
        Request::StoreSnapshot { .. } | Request::Move { .. } => {
            Err("a snapshot is a streamed answer (control::client::snapshot)".into())
        }
        Request::QueueList => {
            let now = crate::operator::queue::now(ctx.relay().map(|r| &**r));
            to_value(crate::operator::queue::list(ctx.store()?, now).map_err(|e| e.to_string())?)
        }
        Request::QueueRetry { domain } => {
            let relay = ctx.relay().map(|r| &**r);
            let now = crate::operator::queue::now(relay);
            let done = crate::operator::queue::retry(ctx.store()?, relay, &domain, now).await;
            to_value(done.map_err(|e| e.to_string())?)
        }
        Request::QueueBounce { domain } => {
            let relay = ctx.relay().map(|r| &**r);
            let done =
                crate::operator::queue::bounce(&ctx.config, ctx.store()?, relay, &domain).await;
            to_value(done.map_err(|e| e.to_string())?)
        }
        Request::Report { config_file } => match ctx.daemon_state() {
            Some(daemon) => to_value(daemon.report().await),
            None => {
                let text = config_file.and_then(|p| std::fs::read_to_string(p).ok());
                let now = crate::clock::Clock::unix_now(&crate::clock::SystemClock);
                to_value(crate::operator::report::stopped(
                    &ctx.config,
                    text.as_deref(),
                    ctx.store().ok(),
                    now,
                ))
            }
        },
        Request::AccountsList(query) => to_value(ctx.accounts()?.list(&query).map_err(text)?),
        Request::AccountsBlocked(query) => to_value(ctx.accounts()?.blocked(&query).map_err(text)?),
        Request::AccountsDelete { address } => {
            to_value(ctx.accounts()?.delete(&address).await.map_err(text)?)
        }
        Request::AccountsBlock { address } => {
            let accounts = ctx.accounts()?;
            to_value(
                accounts
                    .block(&address, accounts.now())
                    .await
                    .map_err(text)?,
            )
        }
        Request::AccountsUnblock { address } => {
            to_value(ctx.accounts()?.unblock(&address).await.map_err(text)?)
        }
        Request::FrontChanged => {
            let (Some(relay), Some(path)) = (
                ctx.relay(),
                ctx.daemon_state().and_then(|d| d.config_file()),
            ) else {
                return to_value(false);
            };
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let loaded = Config::parse(&text).map_err(|e| e.to_string())?;
            relay.use_front(crate::server::front_target(&loaded.config));
            to_value(true)
        }
    }
}

/// Run a command's future on a small runtime of its own (the command line's tools).
pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> std::io::Result<T> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f))
}

/// An error as the reply's text.
fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A result as a reply value.
fn to_value<T: Serialize>(value: T) -> Result<serde_json::Value, String> {
    serde_json::to_value(value).map_err(|e| format!("cannot encode the answer: {e}"))
}

#[cfg(test)]
mod tests;
