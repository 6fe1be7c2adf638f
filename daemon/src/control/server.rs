//! The daemon's side of the control socket: bind it in the data directory, check each
//! peer, read one request line at a time within the bounds of [`super`], answer.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::{Ctx, IDLE_TIMEOUT, MAX_CONNECTIONS, MAX_REQUEST_BYTES, Reply, Request, SOCKET_FILE};

/// Failures to open the socket.
#[derive(Debug, thiserror::Error)]
#[error("control socket {}: {err}", path.display())]
pub struct BindError {
    pub path: PathBuf,
    pub err: io::Error,
}

/// The bound socket; removes its file when dropped.
pub struct Listener {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Bind `<data_dir>/control.sock` (mode 0600). A socket file left by a daemon that did
/// not stop cleanly is replaced; a socket another daemon still answers on is not.
pub fn bind(data_dir: &Path) -> Result<Listener, BindError> {
    let path = data_dir.join(SOCKET_FILE);
    let fail = |err| BindError {
        path: path.clone(),
        err,
    };
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(fail(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another relaybox daemon answers on it",
            )));
        }
        std::fs::remove_file(&path).map_err(fail)?;
    }
    let listener = UnixListener::bind(&path).map_err(fail)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    Ok(Listener { listener, path })
}

/// Answer requests until the task is dropped.
pub async fn run(listener: Listener, ctx: Arc<Ctx>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("control socket: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        if !peer_allowed(&stream) {
            tracing::warn!("control socket: refused a connection from another user");
            continue;
        }
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = serve_connection(stream, &ctx).await {
                tracing::debug!("control socket: {e}");
            }
        });
    }
}

/// Root and the daemon's own user only (the socket's mode says the same; this also covers
/// a data directory made wider by hand).
fn peer_allowed(stream: &UnixStream) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    stream
        .peer_cred()
        .is_ok_and(|cred| cred.uid() == 0 || cred.uid() == me)
}

/// Requests on one connection, one line each, until the peer closes or idles.
async fn serve_connection(stream: UnixStream, ctx: &Ctx) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let line = match tokio::time::timeout(IDLE_TIMEOUT, read_line(&mut read)).await {
            Err(_) => return Ok(()),
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => {
                let reply = Reply::Error(e.to_string());
                write.write_all(&encode(&reply)).await?;
                return Ok(());
            }
        };
        let reply = match serde_json::from_slice::<Request>(&line) {
            Ok(Request::StoreSnapshot { messages }) => {
                let view = ctx
                    .store()
                    .and_then(|s| s.view().map_err(|e| e.to_string()));
                return stream_snapshot(view, Export::Backup { messages }, &mut write).await;
            }
            Ok(Request::Move { to }) => {
                let view = match ctx.relay() {
                    Some(relay) => {
                        let file = ctx.daemon_state().and_then(|d| d.config_file());
                        crate::operator::moving::start(relay, file.as_deref(), &to).await
                    }
                    None => Err(format!(
                        "the relay is in {} mode: only a running relay moves",
                        ctx.mode()
                    )),
                };
                // The old machine goes on delivering what it had queued.
                return stream_snapshot(view, Export::HandOver, &mut write).await;
            }
            Ok(request) => super::dispatch(ctx, request).await,
            Err(e) => Reply::Error(format!(
                "not a request this relaybox understands ({e}); is the command from another \
                 version than the daemon?"
            )),
        };
        write.write_all(&encode(&reply)).await?;
    }
}

/// What a streamed snapshot holds.
enum Export {
    /// A backup's: everything, the message tables only with `messages`.
    Backup { messages: bool },
    /// A move's final backup: the messages, not the outbound queue (it stays behind).
    HandOver,
}

/// Bytes per snapshot chunk.
const CHUNK: usize = 64 * 1024;

/// Answer [`Request::StoreSnapshot`] and [`Request::Move`] with `view` (or its error):
/// the `ok` line, the chunks, the end (see there). The store is read on a blocking
/// thread; at most a few chunks wait for the socket.
async fn stream_snapshot(
    view: Result<crate::store::snapshot::View, String>,
    export: Export,
    write: &mut tokio::net::unix::OwnedWriteHalf,
) -> io::Result<()> {
    let view = match view {
        Ok(v) => v,
        Err(e) => return write.write_all(&encode(&Reply::Error(e))).await,
    };
    write
        .write_all(&encode(&Reply::Ok(serde_json::Value::Bool(true))))
        .await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let export = tokio::task::spawn_blocking(move || {
        let mut out = std::io::BufWriter::with_capacity(CHUNK, ChunkSender(tx));
        match export {
            Export::Backup { messages } => view.export(messages, &mut out),
            Export::HandOver => view.export_without_queue(&mut out),
        }
    });
    while let Some(chunk) = rx.recv().await {
        write.write_all(&(chunk.len() as u32).to_le_bytes()).await?;
        write.write_all(&chunk).await?;
    }
    write.write_all(&0u32.to_le_bytes()).await?;
    let last = match export.await {
        Ok(Ok(counts)) => match serde_json::to_value(counts) {
            Ok(v) => Reply::Ok(v),
            Err(e) => Reply::Error(e.to_string()),
        },
        Ok(Err(e)) => Reply::Error(format!("the snapshot failed: {e}")),
        Err(e) => Reply::Error(format!("the snapshot failed: {e}")),
    };
    write.write_all(&encode(&last)).await
}

/// The blocking side of a snapshot's chunks; fails once the connection is gone.
struct ChunkSender(tokio::sync::mpsc::Sender<Vec<u8>>);

impl std::io::Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(CHUNK);
        self.0
            .blocking_send(buf[..n].to_vec())
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the command went away"))?;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One line without its end, at most [`MAX_REQUEST_BYTES`]; `None` at end of stream.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    read: &mut R,
) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let buf = read.fill_buf().await?;
        if buf.is_empty() {
            return if line.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "request without line end",
                ))
            };
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > MAX_REQUEST_BYTES + 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("request longer than {MAX_REQUEST_BYTES} bytes"),
            ));
        }
        line.extend_from_slice(&buf[..take]);
        read.consume(take);
        if done {
            line.pop();
            return Ok(Some(line));
        }
    }
}

/// A reply as one line.
pub(super) fn encode(reply: &Reply) -> Vec<u8> {
    let mut out = serde_json::to_vec(reply)
        .unwrap_or_else(|_| br#"{"error":"cannot encode the answer"}"#.to_vec());
    out.push(b'\n');
    out
}
