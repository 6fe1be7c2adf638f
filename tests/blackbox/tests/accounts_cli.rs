//! `relaybox accounts` against the real binary (issue 18 item 3): the list on a running
//! relay (through its control socket: the daemon holds the store locked) and on the same
//! relay killed (the command opens the store itself) shows the same accounts and
//! figures; delete removes an account and its messages for good (a later login creates a
//! new, empty one), and says so when there is nothing to delete; block refuses the first
//! login with the blocked reason until unblock; bad addresses and a bad config get clear
//! errors and exit codes (0 done, 1 refused, 2 config); and only root and the relay's own
//! user get answers on the socket.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use relaybox_blackbox::conn::LineConn;
use relaybox_blackbox::metrics::{free_address, get, ini_line, wait_for};
use relaybox_blackbox::{Account, Imap, Relay, Smtp, create_account, encrypted_mail, http};

/// What one run of the command gave.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `[wrapper…] relaybox accounts ARGS… --config <config>`, bounded to a minute.
async fn run_cli(wrapper: &[&str], config: &Path, args: &[&str]) -> Run {
    let bin = relaybox_blackbox::relay::binary();
    let mut cmd = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut c = tokio::process::Command::new(program);
            c.args(rest).arg(&bin);
            c
        }
        None => tokio::process::Command::new(&bin),
    };
    cmd.arg("accounts")
        .args(args)
        .arg("--config")
        .arg(config)
        .env("NO_COLOR", "1")
        .env("RELAYBOX_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("relaybox accounts ended within 60 s")
        .expect("run relaybox accounts");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `relaybox accounts delete ADDRESS` on a terminal (a pseudo-terminal from util-linux
/// `script`), answering the question with `typed`. Everything the command writes is in
/// `stdout` (a terminal has one output).
async fn delete_on_terminal(relay: &Relay, address: &str, typed: &str) -> Run {
    use tokio::io::AsyncWriteExt;
    let command = format!(
        "RELAYBOX_LOG=warn NO_COLOR=1 '{}' accounts delete '{address}' --config '{}'",
        relaybox_blackbox::relay::binary().display(),
        relay.config_path().display()
    );
    let mut child = tokio::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("script (util-linux)");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{typed}\n").as_bytes())
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the command ended within 60 s")
        .unwrap();
    drop(stdin);
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn cli(relay: &Relay, args: &[&str]) -> Run {
    run_cli(&[], &relay.config_path(), args).await
}

/// The row of `address` in a list: its columns after the address.
fn row<'a>(list: &'a str, address: &str) -> Option<Vec<&'a str>> {
    list.lines()
        .find(|l| l.split_whitespace().next() == Some(address))
        .map(|l| l.split_whitespace().skip(1).collect())
}

/// An account made by `POST /new` (NEW-1), created at its first login.
async fn account_from_new(relay: &Relay) -> Account {
    let mut conn = LineConn::connect_tls(relay.https_addr(), &[b"http/1.1"])
        .await
        .expect("TLS to the HTTPS port");
    let resp = http::request(&mut conn, "POST /new HTTP/1.1\nHost: 127.0.0.1", b"")
        .await
        .expect("POST /new");
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    let body: serde_json::Value = serde_json::from_str(&resp.body_text()).expect("JSON");
    let addr = body["email"].as_str().expect("email").to_string();
    let a = Account {
        local: addr.split('@').next().unwrap().to_string(),
        addr,
        password: body["password"].as_str().expect("password").to_string(),
    };
    create_account(relay, &a).await;
    a
}

fn assert_refused(run: &Run, says: &str) {
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains(says), "{says:?} in {run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_delete_on_a_running_and_a_stopped_relay() {
    let mut relay = Relay::start(&[]).await;
    let a = Account::random();
    create_account(&relay, &a).await;
    let b = account_from_new(&relay).await;
    for to in [&b, &b, &a] {
        let m = encrypted_mail(&a.addr, &[&to.addr]);
        assert_eq!(
            Smtp::submit(&relay, &a, &[&to.addr], &m.bytes).await.code,
            250
        );
    }

    // Running: the daemon answers (the store file is locked by it).
    let running = cli(&relay, &["list"]).await;
    assert_eq!(running.code, 0, "{running:?}");
    let header = running.stdout.lines().next().unwrap();
    for column in ["ADDRESS", "CREATED", "LAST LOGIN", "STORAGE", "MESSAGES"] {
        assert!(header.contains(column), "{header}");
    }
    let rb = row(&running.stdout, &b.addr).expect("b listed");
    let ra = row(&running.stdout, &a.addr).expect("a listed");
    assert_eq!(rb[3], "2", "b's messages: {rb:?}");
    assert_eq!(ra[3], "1", "a's messages: {ra:?}");
    assert!(rb[2].parse::<u64>().unwrap() > 0, "b's storage: {rb:?}");
    assert_ne!(
        rb[0], "unknown",
        "a new account has its creation day: {rb:?}"
    );
    assert!(
        running
            .stdout
            .contains("2 account(s) listed; 2 on this relay"),
        "{running:?}"
    );

    // Killed: the command opens the store itself (replaying its log) and sees the same.
    relay.kill9();
    assert!(
        !relay.data_dir().join("control.sock").exists() || {
            // A socket left by a killed daemon: nobody answers on it.
            std::os::unix::net::UnixStream::connect(relay.data_dir().join("control.sock")).is_err()
        }
    );
    let stopped = cli(&relay, &["list"]).await;
    assert_eq!(stopped.code, 0, "{stopped:?}");
    assert_eq!(
        stopped.stdout, running.stdout,
        "the same accounts and figures"
    );
    // Changes on the stopped relay are durable before the command returns.
    let search = cli(&relay, &["list", "--search", &a.local.to_uppercase()]).await;
    assert!(row(&search.stdout, &a.addr).is_some() && row(&search.stdout, &b.addr).is_none());

    relay.restart().await;
    let deleted = cli(&relay, &["delete", "--yes", &b.addr]).await;
    assert_eq!(deleted.code, 0, "{deleted:?}");
    assert_eq!(
        deleted.stdout.trim(),
        format!("deleted {} with 2 message(s) in 1 mailbox(es)", b.addr)
    );
    // Twice: it says there is nothing, and nothing else changes.
    let twice = cli(&relay, &["delete", "--yes", &b.addr]).await;
    assert_refused(&twice, &format!("no account {} on this relay", b.addr));
    // Unknown, foreign, forged and malformed addresses.
    let unknown = Account::random();
    let run = cli(&relay, &["delete", "--yes", &unknown.addr]).await;
    assert_refused(&run, &format!("no account {} on this relay", unknown.addr));
    let run = cli(&relay, &["delete", "--yes", "alice@example.org"]).await;
    assert_refused(
        &run,
        "not an address of this relay (its addresses end in @[127.0.0.1])",
    );
    let forged = format!("{}@[127.0.0.1]@[127.0.0.1]", a.local);
    for bad in ["not-an-address", "al ice@[127.0.0.1]", forged.as_str(), ""] {
        let run = cli(&relay, &["delete", "--yes", bad]).await;
        assert_refused(&run, "is not an address");
    }
    // Without --yes and without a terminal to confirm on: not deleted.
    let run = cli(&relay, &["delete", &a.addr]).await;
    assert_refused(&run, "not deleted");
    // On a terminal: deleted only when the address is typed again.
    let e = Account::random();
    create_account(&relay, &e).await;
    let run = delete_on_terminal(&relay, &e.addr, "someone-else@[127.0.0.1]").await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("Type the address again to confirm"),
        "{run:?}"
    );
    assert!(
        run.stdout.contains("the address typed did not match"),
        "{run:?}"
    );
    assert!(row(&cli(&relay, &["list"]).await.stdout, &e.addr).is_some());
    let run = delete_on_terminal(&relay, &e.addr, &e.addr).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(&format!("deleted {}", e.addr)),
        "{run:?}"
    );
    assert!(row(&cli(&relay, &["list"]).await.stdout, &e.addr).is_none());
    // A config that cannot be read: exit code 2.
    let run = run_cli(&[], Path::new("/nonexistent/chatmail.ini"), &["list"]).await;
    assert_eq!(run.code, 2, "{run:?}");

    // After a restart the deleted account and its messages are still gone, a is intact.
    relay.restart().await;
    let after = cli(&relay, &["list"]).await;
    assert!(row(&after.stdout, &b.addr).is_none(), "{after:?}");
    assert_eq!(row(&after.stdout, &a.addr).unwrap()[3], "1");
    assert_eq!(Imap::fetch_inbox(&relay, &a).await.len(), 1);
    // The old password now makes a new, empty account (chatmail: accounts are free).
    assert!(Imap::fetch_inbox(&relay, &b).await.is_empty());
    let again = cli(&relay, &["list"]).await;
    assert_eq!(row(&again.stdout, &b.addr).expect("b anew")[3], "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_address_is_refused_until_unblocked() {
    let metrics = free_address();
    let mut relay = Relay::start(&[&ini_line(metrics)]).await;
    let c = Account::random();
    create_account(&relay, &c).await;
    let m = encrypted_mail(&c.addr, &[&c.addr]);
    assert_eq!(
        Smtp::submit(&relay, &c, &[&c.addr], &m.bytes).await.code,
        250
    );
    // An open session of the account ends with the block.
    let mut session = Imap::login_tls(&relay, &c).await;

    let blocked = cli(&relay, &["block", &c.addr]).await;
    assert_eq!(blocked.code, 0, "{blocked:?}");
    assert!(
        blocked.stdout.contains(&format!(
            "blocked {}; its account was deleted with 1 message(s)",
            c.addr
        )),
        "{blocked:?}"
    );
    let r = session.cmd("NOOP").await;
    assert!(r.is_ok(), "{r}");
    let bye = session.read_line().await.map(|l| l.text());
    assert!(
        matches!(&bye, Ok(l) if l.starts_with("* BYE Account removed")),
        "the session of a removed account ends: {bye:?}"
    );
    assert!(session.read_line().await.is_err(), "closed");

    // The first login is refused with the blocked reason, over IMAP and SMTP.
    let mut imap = Imap::connect_tls(relay.imaps_addr()).await;
    imap.greeting().await;
    let r = imap.login(&c.addr, &c.password).await;
    assert!(
        r.tagged
            .contains("NO [CONTACTADMIN] This address is blocked on this relay"),
        "{r}"
    );
    drop(imap);
    let mut smtp = Smtp::connect_tls(relay.submissions_addr()).await;
    smtp.greeting().await;
    smtp.ehlo().await;
    let r = smtp.auth_plain(&c.addr, &c.password).await;
    assert!(r.last().contains("This address is blocked"), "{r}");
    assert_eq!(r.code, 550, "{r}");
    smtp.quit().await;
    let sample = "relaybox_registrations_refused_total{reason=\"blocked\"}";
    let (_, s) = wait_for(metrics, Duration::from_secs(10), |s| get(s, sample) >= 2).await;
    assert_eq!(get(&s, sample), 2);

    let list = cli(&relay, &["blocked"]).await;
    assert!(
        list.stdout.contains(&format!("{}  blocked since", c.addr)),
        "{list:?}"
    );
    assert_refused(
        &cli(&relay, &["block", &c.addr]).await,
        "is blocked already",
    );
    assert!(row(&cli(&relay, &["list"]).await.stdout, &c.addr).is_none());

    // Blocked on the stopped relay too, before the address ever existed.
    let d = Account::random();
    relay.kill9();
    let run = cli(&relay, &["block", &d.addr]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("it had no account"), "{run:?}");
    relay.restart().await;
    let mut imap = Imap::connect_tls(relay.imaps_addr()).await;
    imap.greeting().await;
    assert!(
        imap.login(&d.addr, &d.password)
            .await
            .tagged
            .contains("blocked")
    );
    drop(imap);

    // Unblocked: the first login creates the account again.
    let run = cli(&relay, &["unblock", &c.addr]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_refused(&cli(&relay, &["unblock", &c.addr]).await, "is not blocked");
    assert!(
        Imap::fetch_inbox(&relay, &c).await.is_empty(),
        "a new, empty account"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_root_and_the_relays_user_are_answered() {
    let relay = Relay::start(&[]).await;
    let socket = relay.data_dir().join("control.sock");
    let mode = std::fs::metadata(&socket)
        .expect("the socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        eprintln!("skipped the other-user part: it needs root to run the command as nobody");
        return;
    }
    // Open every door the file system has, so that only the daemon's peer check stands
    // between another user and the relay.
    let open = |p: &Path, mode| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
    let base = relay.config_path().parent().unwrap().to_path_buf();
    open(&base, 0o755).unwrap();
    open(&relay.data_dir(), 0o755).unwrap();
    open(&socket, 0o666).unwrap();
    open(&relay.config_path(), 0o644).unwrap();
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let run = run_cli(&nobody, &relay.config_path(), &["list"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    // The daemon closes the connection unanswered: the command sees it at its write or
    // its read, and does not fall back to the store.
    assert!(
        run.stderr
            .contains("cannot talk to the running relay through")
            || run
                .stderr
                .contains("closed the connection without a complete answer"),
        "{run:?}"
    );
    assert!(
        run.stdout.is_empty(),
        "no account shown to another user: {run:?}"
    );
    let refused = relay
        .wait_stderr(Duration::from_secs(10), |l| {
            l.contains("refused a connection from another user")
        })
        .await;
    assert!(refused.is_some(), "the daemon logged the refusal");
    // Root still is answered.
    assert_eq!(cli(&relay, &["list"]).await.code, 0);
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
