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
use crate::store::snapshot::SnapshotCounts;
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

/// Carry out `request` only if the daemon runs: `Ok(None)` when it does not.
pub async fn call_running<T: DeserializeOwned>(
    config: &Config,
    request: Request,
) -> Result<Option<T>, CallError> {
    match ask_daemon(&config.data_dir, &request).await? {
        None => Ok(None),
        Some(Reply::Ok(value)) => serde_json::from_value(value)
            .map(Some)
            .map_err(|e| CallError::Answer(e.to_string())),
        Some(Reply::Error(message)) => Err(CallError::Refused(message)),
    }
}

/// Write a snapshot of the relay's store (`store::snapshot`) to `out`: streamed by the
/// daemon when it runs (the writer goes on meanwhile), else read from the stopped
/// relay's store here. `Ok(None)` when the relay has no store yet.
pub async fn snapshot(
    config: &Config,
    messages: bool,
    out: &mut dyn std::io::Write,
) -> Result<Option<SnapshotCounts>, CallError> {
    let Some(stream) = connect(&config.data_dir).await? else {
        let path = config.data_dir.join(STORE_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let store = Store::open_with_cache(&path, config.store_cache_size).map_err(|err| {
            CallError::Store {
                path: path.display().to_string(),
                err,
            }
        })?;
        let exported = store.export(messages, out);
        store.close();
        return exported
            .map(Some)
            .map_err(|e| CallError::Refused(format!("the snapshot failed: {e}")));
    };
    streamed(config, stream, &Request::StoreSnapshot { messages }, out)
        .await
        .map(Some)
}

/// Issue 17, `relaybox move`: switch the running relay to moving to `to` and write the
/// final snapshot it answers with to `out` ([`crate::operator::moving::start`]).
pub async fn move_snapshot(
    config: &Config,
    to: &str,
    out: &mut dyn std::io::Write,
) -> Result<SnapshotCounts, CallError> {
    let Some(stream) = connect(&config.data_dir).await? else {
        return Err(CallError::Refused(
            "the relay is not running: `relaybox move` hands over a running relay (start it \
             first)"
                .into(),
        ));
    };
    streamed(config, stream, &Request::Move { to: to.into() }, out).await
}

/// Send `request` and copy its streamed snapshot answer to `out`.
async fn streamed(
    config: &Config,
    stream: tokio::net::UnixStream,
    request: &Request,
    out: &mut dyn std::io::Write,
) -> Result<SnapshotCounts, CallError> {
    let path = config.data_dir.join(SOCKET_FILE);
    let fail = |err: io::Error| CallError::Socket {
        path: path.display().to_string(),
        err,
    };
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = serde_json::to_vec(request).map_err(|e| CallError::Answer(e.to_string()))?;
    line.push(b'\n');
    write.write_all(&line).await.map_err(fail)?;
    match read_reply(&mut read).await? {
        Reply::Ok(_) => {}
        Reply::Error(message) => return Err(CallError::Refused(message)),
    }
    let mut chunk = Vec::new();
    loop {
        let mut len = [0u8; 4];
        read.read_exact(&mut len).await.map_err(fail)?;
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 {
            break;
        }
        if len > 1 << 20 {
            return Err(CallError::Answer(format!("a chunk of {len} bytes")));
        }
        chunk.resize(len, 0);
        read.read_exact(&mut chunk).await.map_err(fail)?;
        out.write_all(&chunk)
            .map_err(|e| CallError::Refused(format!("cannot write the snapshot: {e}")))?;
    }
    match read_reply(&mut read).await? {
        Reply::Ok(v) => serde_json::from_value(v).map_err(|e| CallError::Answer(e.to_string())),
        Reply::Error(message) => Err(CallError::Refused(message)),
    }
}

/// One reply line, at most [`MAX_REPLY_BYTES`]. No answer at all (the connection reset or
/// closed first) is how the daemon turns away a user other than root and its own.
async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(read: &mut R) -> Result<Reply, CallError> {
    let unanswered = |err: io::Error| CallError::Socket {
        path: SOCKET_FILE.to_string(),
        err: io::Error::new(
            err.kind(),
            format!(
                "the relay did not answer ({err}); only root and the relay's own user are \
                 answered"
            ),
        ),
    };
    let mut answer = Vec::new();
    read.take(MAX_REPLY_BYTES)
        .read_until(b'\n', &mut answer)
        .await
        .map_err(unanswered)?;
    if answer.is_empty() {
        return Err(unanswered(io::ErrorKind::UnexpectedEof.into()));
    }
    if answer.last() != Some(&b'\n') {
        return Err(CallError::Answer(
            "the relay closed the connection without a complete answer".into(),
        ));
    }
    serde_json::from_slice(&answer).map_err(|e| CallError::Answer(e.to_string()))
}

/// A connection to the daemon's socket, or `None` when no daemon listens.
async fn connect(data_dir: &Path) -> Result<Option<UnixStream>, CallError> {
    let path = data_dir.join(SOCKET_FILE);
    let fail = |err: io::Error| CallError::Socket {
        path: path.display().to_string(),
        err,
    };
    match UnixStream::connect(&path).await {
        Ok(s) => Ok(Some(s)),
        // No socket, or one left by a daemon that is gone.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Err(fail(io::Error::new(
            e.kind(),
            "permission denied: run the command as root or as the relay's user",
        ))),
        Err(e) => Err(fail(e)),
    }
}

/// The mode of the daemon that runs for `data_dir` (`relay`, `setup`), or `None` when none
/// answers.
pub async fn daemon_mode(data_dir: &Path) -> Result<Option<String>, CallError> {
    match ask_daemon(data_dir, &Request::Ping).await? {
        None => Ok(None),
        Some(Reply::Ok(v)) => serde_json::from_value::<super::Pong>(v)
            .map(|p| Some(p.mode))
            .map_err(|e| CallError::Answer(e.to_string())),
        Some(Reply::Error(e)) => Err(CallError::Refused(e)),
    }
}

/// The daemon's reply, or `None` when no daemon listens.
async fn ask_daemon(data_dir: &Path, request: &Request) -> Result<Option<Reply>, CallError> {
    let Some(stream) = connect(data_dir).await? else {
        return Ok(None);
    };
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request).map_err(|e| CallError::Answer(e.to_string()))?;
    line.push(b'\n');
    write
        .write_all(&line)
        .await
        .map_err(|err| CallError::Socket {
            path: data_dir.join(SOCKET_FILE).display().to_string(),
            err,
        })?;
    read_reply(&mut BufReader::new(read)).await.map(Some)
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
    if let Some(store) = ctx.local_store {
        let flushed = store.flush().await;
        store.close();
        if let Err(err) = flushed {
            return Err(CallError::Store {
                path: path.display().to_string(),
                err,
            });
        }
    }
    Ok(reply)
}
