//! The operator's account actions on a real relay (in-memory IMAP sessions) and on a
//! stopped one: addresses checked, delete and block durable and final for the live
//! sessions, blocked addresses refused at first login with their reason.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};

use super::*;
use crate::auth::{AuthError, CreationRefusal};
use crate::store::Delivery;

const DOMAIN: &str = "relay.test";
const PASSWORD: &str = "correct-horse-battery";

fn relay(dir: &std::path::Path) -> Arc<Relay> {
    let mut c = crate::testing::config(dir, DOMAIN);
    c.username_min_length = 3;
    c.username_max_length = 20;
    Relay::open(c).expect("relay")
}

fn addr(local: &str) -> String {
    format!("{local}@{DOMAIN}")
}

async fn deliver(relay: &Relay, to: &str, text: &str) {
    let body = format!("Subject: x\r\n\r\n{text}\r\n").into_bytes();
    relay
        .store
        .deliver(Delivery {
            sender: "x@elsewhere.test".into(),
            local: vec![to.to_string()],
            remote: Vec::new(),
            body: crate::message::Parsed::parse(body).unwrap(),
            received: 1_700_000_000,
        })
        .await
        .unwrap();
}

/// An IMAP session over an in-memory stream, marked secure.
struct Imap(BufReader<DuplexStream>);

impl Imap {
    async fn connect(relay: &Arc<Relay>) -> Imap {
        let (client, server) = tokio::io::duplex(1 << 20);
        let r = relay.clone();
        tokio::spawn(
            async move { crate::imap::serve_stream(r.imap_handles(), server, true).await },
        );
        let mut c = Imap(BufReader::new(client));
        assert!(c.line().await.unwrap().starts_with("* OK"));
        c
    }

    /// One line; `None` at the end of the stream.
    async fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(10), self.0.read_line(&mut line))
            .await
            .expect("the server answers within 10 s")
            .unwrap_or(0);
        (n > 0).then_some(line)
    }

    /// Send a command and read up to its tagged reply (or the end of the stream).
    async fn cmd(&mut self, tag: &str, text: &str) -> String {
        let _ = self
            .0
            .get_mut()
            .write_all(format!("{tag} {text}\r\n").as_bytes())
            .await;
        let mut all = String::new();
        while let Some(line) = self.line().await {
            all.push_str(&line);
            if line.starts_with(&format!("{tag} ")) {
                break;
            }
        }
        all
    }

    async fn login(relay: &Arc<Relay>, local: &str) -> Imap {
        let mut c = Imap::connect(relay).await;
        let r = c
            .cmd("l", &format!("LOGIN {} {PASSWORD}", addr(local)))
            .await;
        assert!(r.starts_with("l OK"), "{r}");
        c
    }
}

#[test]
fn addresses_are_checked_before_anything_is_done() {
    let ok = |input: &str| parse_address(input, DOMAIN).unwrap();
    assert_eq!(ok(" Alice.B-c_1@Relay.Test "), "alice.b-c_1@relay.test");
    assert_eq!(
        parse_address("bob@[127.0.0.1]", "[127.0.0.1]").unwrap(),
        "bob@[127.0.0.1]"
    );
    for (input, says) in [
        ("", "is empty"),
        ("alice", "no @"),
        ("@relay.test", "nothing before"),
        ("al ice@relay.test", "may contain only"),
        ("al+ice@relay.test", "may contain only"),
        ("a@b@relay.test", "may contain only"),
        ("alice@other.test", "not an address of this relay"),
        ("alice@relay.test.evil", "not an address of this relay"),
    ] {
        let e = parse_address(input, DOMAIN).unwrap_err().to_string();
        assert!(e.contains(says), "{input:?}: {e}");
    }
    let long = format!("{}@{DOMAIN}", "a".repeat(300));
    assert!(
        parse_address(&long, DOMAIN)
            .unwrap_err()
            .to_string()
            .contains("too long")
    );
}

#[tokio::test]
async fn delete_removes_the_account_for_good_and_ends_its_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay(dir.path());
    let mut idle = Imap::login(&relay, "alice").await;
    let mut other = Imap::login(&relay, "alice").await;
    let _bob = Imap::login(&relay, "bob").await;
    deliver(&relay, &addr("alice"), "one").await;
    deliver(&relay, &addr("alice"), "two").await;
    assert!(idle.cmd("s", "SELECT INBOX").await.contains("* 2 EXISTS"));
    idle.0.get_mut().write_all(b"i IDLE\r\n").await.unwrap();
    assert!(idle.line().await.unwrap().starts_with("+ "));

    let accounts = Accounts::of_relay(&relay);
    let page = accounts.list(&ListQuery::default()).unwrap();
    assert_eq!(page.total, 2);
    let alice = &page.accounts[0];
    assert_eq!(
        (alice.address.as_str(), alice.messages),
        (addr("alice").as_str(), 2)
    );
    assert!(alice.storage_bytes > 0 && alice.created.is_some());

    let deleted = accounts.delete(" ALICE@relay.test").await.unwrap();
    assert_eq!((deleted.messages, deleted.mailboxes), (2, 1));
    // The idling session is told and closed; the other one at its next command.
    let bye = idle.line().await.unwrap();
    assert!(bye.starts_with("* BYE"), "{bye}");
    assert!(idle.line().await.is_none(), "closed");
    let r = other.cmd("n", "NOOP").await;
    assert!(r.starts_with("n OK"), "{r}");
    let bye = other.line().await.unwrap();
    assert_eq!(bye, "* BYE Account removed\r\n");
    assert!(other.line().await.is_none(), "closed");
    // A second delete changes nothing and says so.
    let again = accounts.delete(&addr("alice")).await.unwrap_err();
    assert_eq!(
        again.to_string(),
        format!("no account {} on this relay", addr("alice"))
    );
    assert_eq!(relay.store.account_count().unwrap(), 1);
    // The old password logs in to a new, empty account (chatmail: accounts are free).
    let mut fresh = Imap::login(&relay, "alice").await;
    assert!(fresh.cmd("s", "SELECT INBOX").await.contains("* 0 EXISTS"));
    let page = accounts.list(&ListQuery::default()).unwrap();
    assert_eq!(page.accounts[0].messages, 0);
}

#[tokio::test]
async fn a_blocked_address_is_refused_with_its_reason_until_unblocked() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay(dir.path());
    let mut session = Imap::login(&relay, "carol").await;
    deliver(&relay, &addr("carol"), "hello").await;
    let accounts = Accounts::of_relay(&relay);
    let blocked = accounts.block(&addr("carol"), 1_000).await.unwrap();
    assert_eq!(blocked.deleted.as_ref().map(|d| d.messages), Some(1));
    assert!(
        blocked.text().contains("account was deleted"),
        "{}",
        blocked.text()
    );
    session.cmd("n", "NOOP").await;
    assert_eq!(session.line().await.unwrap(), "* BYE Account removed\r\n");
    // First login: refused as blocked, permanently (contact the admin), nothing created.
    let login = relay
        .auth
        .login(&addr("carol"), PASSWORD, "127.0.0.1".parse().unwrap())
        .await;
    assert!(
        matches!(
            login,
            Err(AuthError::CreationRefused(CreationRefusal::Blocked))
        ),
        "{login:?}"
    );
    let mut c = Imap::connect(&relay).await;
    let r = c
        .cmd("l", &format!("LOGIN {} {PASSWORD}", addr("carol")))
        .await;
    assert!(
        r.starts_with("l NO [CONTACTADMIN] This address is blocked"),
        "{r}"
    );
    assert!(relay.store.account(&addr("carol")).unwrap().is_none());
    // Blocking twice, unblocking what is not blocked: refused, nothing changes.
    let twice = accounts.block(&addr("carol"), 2_000).await.unwrap_err();
    assert!(twice.to_string().contains("blocked already"), "{twice}");
    let page = accounts.blocked(&ListQuery::default()).unwrap();
    assert_eq!(page.blocked.len(), 1);
    assert_eq!(page.blocked[0].since, 1_000);
    // A new address can be blocked before it exists.
    let fresh = accounts.block(&addr("dave"), 3_000).await.unwrap();
    assert!(fresh.deleted.is_none() && fresh.text().contains("had no account"));
    // Unblocked: the address can be created again.
    assert_eq!(
        accounts.unblock(&addr("carol")).await.unwrap(),
        addr("carol")
    );
    let not = accounts.unblock(&addr("carol")).await.unwrap_err();
    assert!(not.to_string().contains("is not blocked"), "{not}");
    Imap::login(&relay, "carol").await;
    // Addresses of other domains or malformed ones are refused before anything happens.
    for bad in ["carol@other.test", "carol", "ca rol@relay.test"] {
        assert!(accounts.block(bad, 0).await.is_err(), "{bad}");
        assert!(accounts.delete(bad).await.is_err(), "{bad}");
    }
    assert_eq!(relay.store.blocked_count().unwrap(), 1);
}

#[tokio::test]
async fn a_stopped_relay_is_listed_a_page_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::testing::config(dir.path(), DOMAIN);
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    for i in 0..25 {
        store
            .create_account(&addr(&format!("user{i:02}")), "h", 86_400 * 400)
            .await
            .unwrap();
    }
    let accounts = Accounts::stopped(&store, &config);
    let mut query = ListQuery {
        limit: Some(10),
        ..ListQuery::default()
    };
    let mut seen = Vec::new();
    for _ in 0..10 {
        let page = accounts.list(&query).unwrap();
        assert!(page.accounts.len() <= 10);
        assert_eq!(page.total, 25);
        seen.extend(page.accounts.iter().map(|a| a.address.clone()));
        if !page.more {
            break;
        }
        query.after = seen.last().cloned();
    }
    assert_eq!(seen.len(), 25);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let found = accounts
        .list(&ListQuery {
            search: Some(" USER1".into()),
            ..ListQuery::default()
        })
        .unwrap();
    assert_eq!(found.accounts.len(), 10);
    // The page size is bounded whatever is asked.
    let huge = ListQuery {
        limit: Some(u32::MAX),
        ..ListQuery::default()
    };
    assert_eq!(huge.limit(), MAX_PAGE as usize);
}

/// Issue 18: the list must work on a large relay without a huge reply. Measures the reply
/// of one page (as the command line asks for it) and of the whole list of 10 000
/// accounts, and checks that a page is bounded whatever the number of accounts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_accounts_are_listed_in_bounded_replies() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::testing::config(dir.path(), "127.0.0.1");
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    // Concurrent creations share commits (group commit).
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10_000 {
        let store = store.clone();
        tasks.spawn(async move {
            let address = format!("{:09}@[127.0.0.1]", i * 7919 % 1_000_000_007);
            store
                .create_account(&address, "{SHA512-CRYPT}$6$x", 1_798_675_200)
                .await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    let accounts = Accounts::stopped(&store, &config);
    let mut query = ListQuery {
        limit: Some(500),
        ..ListQuery::default()
    };
    let (mut pages, mut rows, mut bytes, mut largest) = (0, 0, 0, 0);
    loop {
        let page = accounts.list(&query).unwrap();
        let reply = serde_json::to_vec(&crate::control::Reply::Ok(
            serde_json::to_value(&page).unwrap(),
        ))
        .unwrap();
        pages += 1;
        rows += page.accounts.len();
        bytes += reply.len();
        largest = largest.max(reply.len());
        if !page.more {
            break;
        }
        query.after = page.accounts.last().map(|a| a.address.clone());
        assert!(pages < 100, "bounded");
    }
    assert_eq!(rows, 10_000);
    eprintln!(
        "10 000 accounts: {pages} pages of 500, largest reply {largest} bytes, {bytes} bytes in all"
    );
    // A page stays far below the client's bound on a reply line whatever the relay's size.
    assert!(largest < 100_000, "{largest}");
}

/// A login whose password check finished after the account was deleted (here: the
/// login cache still knows it, as for a check that was under way during the deletion)
/// is refused instead of serving a session for an account that is gone.
#[tokio::test]
async fn a_login_that_raced_the_deletion_gets_no_session() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay(dir.path());
    Imap::login(&relay, "erin").await;
    // Deleted behind the login cache's back (the removal's notice not yet given).
    relay.store.delete_account(&addr("erin")).await.unwrap();
    let mut c = Imap::connect(&relay).await;
    let r = c
        .cmd("l", &format!("LOGIN {} {PASSWORD}", addr("erin")))
        .await;
    assert!(r.starts_with("l NO [UNAVAILABLE]"), "{r}");
    let r = c.cmd("s", "SELECT INBOX").await;
    assert!(
        r.starts_with("s BAD") || r.starts_with("s NO"),
        "not logged in: {r}"
    );
    assert!(relay.store.account(&addr("erin")).unwrap().is_none());
    // The next login (the cache forgot the address) creates a fresh account.
    relay.auth.forget(&addr("erin"));
    Imap::login(&relay, "erin").await;
}

/// A block committed between the login's look at the blocked table and its creating
/// commit: the store refuses the creation, and the login says why as for any block.
#[test]
fn the_stores_own_refusal_is_the_blocked_reason() {
    assert!(matches!(
        AuthError::from(StoreError::Blocked),
        AuthError::CreationRefused(CreationRefusal::Blocked)
    ));
    assert!(matches!(
        AuthError::from(StoreError::WriterGone),
        AuthError::Temporary(_)
    ));
}
