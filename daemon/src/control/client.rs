//! The command line's side: ask the running daemon through its socket, or, when no daemon
//! runs, open the store directly and carry the request out in this process
//! ([`super::dispatch`] either way).

use std::io;
use std::path::Path;

use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::{Ctx, Reply, Request, SOCKET_FILE};
use crate::config::Config;
use crate::store::{STORE_FILE, Store, StoreError};

/// Longest reply line read from the daemon.
const MAX_REPLY_BYTES: u64 = 256 << 20;

/// Why a command could not be carried out; the text is for the person who typed it.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The daemon or the stopped store refused or failed the request.
    #[error("{0}")]
    Refused(String),
    /// The socket exists but cannot be used.
    #[error("cannot talk to the running relay through {path}: {err}")]
    Socket { path: String, err: io::Error },
    #[error(
        "cannot open the store {path}: {err} (if the relay runs, its control socket did not \
         answer: is it an older version?)"
    )]
    Store { path: String, err: StoreError },
    #[error("the answer could not be read: {0}")]
    Answer(String),
}

/// Carry out `request` for the relay of `config`: through the daemon when it runs, else on
/// its store directly (which is then flushed durably before this returns).
pub async fn call<T: DeserializeOwned>(config: &Config, request: Request) -> Result<T, CallError> {
    let reply = match ask_daemon(&config.data_dir, &request).await? {
        Some(reply) => reply,
        None => run_stopped(config, request).await?,
    };
    match reply {
        Reply::Ok(value) => {
            serde_json::from_value(value).map_err(|e| CallError::Answer(e.to_string()))
        }
        Reply::Error(message) => Err(CallError::Refused(message)),
    }
}

/// The daemon's reply, or `None` when no daemon listens.
async fn ask_daemon(data_dir: &Path, request: &Request) -> Result<Option<Reply>, CallError> {
    let path = data_dir.join(SOCKET_FILE);
    let fail = |err: io::Error| CallError::Socket {
        path: path.display().to_string(),
        err,
    };
    let stream = match UnixStream::connect(&path).await {
        Ok(s) => s,
        // No socket, or one left by a daemon that is gone.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(fail(io::Error::new(
                e.kind(),
                "permission denied: run the command as root or as the relay's user",
            )));
        }
        Err(e) => return Err(fail(e)),
    };
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request).map_err(|e| CallError::Answer(e.to_string()))?;
    line.push(b'\n');
    write.write_all(&line).await.map_err(fail)?;
    let mut answer = Vec::new();
    BufReader::new(read)
        .take(MAX_REPLY_BYTES)
        .read_until(b'\n', &mut answer)
        .await
        .map_err(fail)?;
    if answer.last() != Some(&b'\n') {
        return Err(CallError::Answer(
            "the relay closed the connection without a complete answer".into(),
        ));
    }
    serde_json::from_slice(&answer)
        .map(Some)
        .map_err(|e| CallError::Answer(e.to_string()))
}

/// The request carried out here on the stopped relay's store.
async fn run_stopped(config: &Config, request: Request) -> Result<Reply, CallError> {
    let path = config.data_dir.join(STORE_FILE);
    let store = if path.exists() {
        let open = Store::open_with_cache(&path, config.store_cache_size);
        Some(open.map_err(|err| CallError::Store {
            path: path.display().to_string(),
            err,
        })?)
    } else {
        None
    };
    let ctx = Ctx::stopped(config.clone(), store);
    let reply = super::dispatch(&ctx, request).await;
    if let Ok(store) = ctx.store()
        && let Err(err) = store.flush().await
    {
        return Err(CallError::Store {
            path: path.display().to_string(),
            err,
        });
    }
    Ok(reply)
}
