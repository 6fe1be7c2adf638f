//! The control socket: bounds, peer check, stale sockets, and the stopped-relay path.

use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, OnceLock};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::*;

fn test_config(dir: &std::path::Path) -> Config {
    Config::dev(dir.to_path_buf())
}

/// A context that answers like a daemon in setup mode would, without an appliance.
fn ctx(dir: &std::path::Path) -> Arc<Ctx> {
    Arc::new(Ctx {
        config: test_config(dir),
        relay: OnceLock::new(),
        daemon: None,
        local_store: None,
    })
}

async fn exchange(stream: &mut BufReader<UnixStream>, line: &[u8]) -> String {
    stream.get_mut().write_all(line).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_line(&mut answer),
    )
    .await
    .expect("an answer within 10 s")
    .unwrap();
    answer
}

#[tokio::test]
async fn answers_requests_and_survives_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let listener = server::bind(dir.path()).unwrap();
    let path = dir.path().join(SOCKET_FILE);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let task = tokio::spawn(server::run(listener, ctx(dir.path())));
    let mut s = BufReader::new(UnixStream::connect(&path).await.unwrap());
    let pong = exchange(&mut s, b"{\"command\":\"ping\"}\n").await;
    assert!(
        pong.contains("\"ok\"") && pong.contains("\"mode\":\"stopped\""),
        "{pong}"
    );
    // Not a request: an error line, and the connection still answers.
    let bad = exchange(&mut s, b"{\"command\":\"format-the-disk\"}\n").await;
    assert!(bad.starts_with("{\"error\":\"not a request"), "{bad}");
    let again = exchange(&mut s, b"{\"command\":\"ping\"}\n").await;
    assert!(again.contains("\"ok\""), "{again}");
    // An endless line: refused once it passes the bound, then the connection closes.
    let mut long = vec![b'x'; MAX_REQUEST_BYTES + 10];
    long.push(b'\n');
    let refused = exchange(&mut s, &long).await;
    assert!(refused.contains("longer than"), "{refused}");
    let mut rest = String::new();
    let n = s.read_line(&mut rest).await.unwrap_or(0);
    assert_eq!(n, 0, "closed after an oversized request");
    task.abort();
    let _ = task.await;
    assert!(!path.exists(), "the socket file goes with the daemon");
}

#[tokio::test]
async fn a_stale_socket_is_replaced_a_live_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SOCKET_FILE);
    // Left by a daemon killed with -9: the file exists, nobody listens.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let live = server::bind(dir.path()).expect("a stale socket is replaced");
    let second = server::bind(dir.path());
    assert!(
        matches!(&second, Err(e) if e.err.kind() == std::io::ErrorKind::AddrInUse),
        "a second daemon on the same data directory is refused"
    );
    drop(live);
}

#[tokio::test]
async fn the_client_uses_the_daemon_or_works_alone() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    // No daemon, no store: the command answers itself.
    let pong: Pong = client::call(&config, Request::Ping).await.unwrap();
    assert_eq!(pong.mode, "stopped");
    let listener = server::bind(dir.path()).unwrap();
    let appliance = crate::appliance::Appliance::new(config.clone(), None, false).unwrap();
    let task = tokio::spawn(server::run(
        listener,
        Ctx::daemon(config.clone(), appliance),
    ));
    let pong: Pong = client::call(&config, Request::Ping).await.unwrap();
    assert_eq!(pong.mode, "setup", "the daemon answered");
    assert_eq!(pong.version, env!("CARGO_PKG_VERSION"));
    task.abort();
    let _ = task.await;
}

#[tokio::test]
async fn a_snapshot_streams_from_the_daemon_while_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let store = crate::store::Store::open(&dir.path().join("daemon-own.redb")).unwrap();
    for i in 0..800 {
        store
            .create_account(&format!("user{i}@x"), &"h".repeat(100), 0)
            .await
            .unwrap();
    }
    let listener = server::bind(dir.path()).unwrap();
    let daemon = Arc::new(Ctx {
        config: config.clone(),
        relay: OnceLock::new(),
        daemon: None,
        local_store: Some(store.clone()),
    });
    let task = tokio::spawn(server::run(listener, daemon));
    let mut bytes = Vec::new();
    let counts = client::snapshot(&config, true, &mut bytes)
        .await
        .unwrap()
        .expect("the daemon has a store");
    assert!(
        bytes.len() > 64 * 1024,
        "more than one chunk: {}",
        bytes.len()
    );
    // The daemon's store (not a file the command could have opened: it has another name).
    let copy = dir.path().join("copy.redb");
    let imported = crate::store::snapshot::import(&copy, &mut bytes.as_slice()).unwrap();
    assert_eq!(imported, counts);
    assert_eq!(
        crate::store::Store::open(&copy)
            .unwrap()
            .account_count()
            .unwrap(),
        800
    );
    task.abort();
    let _ = task.await;
}
