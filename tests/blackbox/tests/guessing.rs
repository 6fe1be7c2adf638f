//! Password guessing against the real binary (issue 13 point 5): every login attempt of
//! one client address waits its turn *before* the password is looked at, right and
//! wrong alike, once that address has recent failures. Parallel guessers that give up
//! after a moment and reconnect therefore get no more answers than patient ones, a
//! right guess is not answered sooner than a wrong one, and a client at another address
//! logs in at once.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relaybox_blackbox::conn::LineConn;
use relaybox_blackbox::imap::quote;
use relaybox_blackbox::mail::base64;
use relaybox_blackbox::{Account, Imap, Relay, Smtp, assert_serving, create_account};

/// Connections guessing at once, all from one address.
const GUESSERS: usize = 20;
/// How long a guesser waits for an answer before it hangs up and reconnects.
const GIVE_UP: Duration = Duration::from_millis(300);
/// How long the guessing goes on.
const RUN: Duration = Duration::from_secs(20);
/// Every this many attempts, guesser 0 tries the right password.
const RIGHT_EVERY: u32 = 4;

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

/// What the guessers saw.
#[derive(Debug, Default)]
struct Seen {
    /// Wrong guesses answered (NO / 535) in time.
    wrong: u32,
    /// Right guesses answered OK / 235 in time.
    right: u32,
    /// Right guesses sent.
    right_sent: u32,
    /// Refused without a check (NO [UNAVAILABLE] / 454) in time.
    refused: u32,
    /// No answer within [`GIVE_UP`]: hung up.
    abandoned: u32,
    /// Connections refused before a greeting (a connection limit) or failed.
    no_session: u32,
}

enum Answer {
    Wrong,
    Right,
    Refused,
    Abandoned,
    NoSession,
}

/// One IMAP (993) guess from [`ATTACKER`].
async fn imap_guess(relay: &Relay, user: &str, password: &str) -> Answer {
    let Ok(conn) = LineConn::connect_tls_from(ATTACKER, relay.imaps_addr(), &[]).await else {
        return Answer::NoSession;
    };
    let mut c = Imap::from_conn(conn, relay.imaps_addr());
    match tokio::time::timeout(GIVE_UP * 10, c.read_line()).await {
        Ok(Ok(g)) if g.raw.starts_with(b"* OK") => {}
        _ => return Answer::NoSession,
    }
    let tag = c.tag();
    let line = format!("{tag} LOGIN {} {}\r\n", quote(user), quote(password));
    if c.conn.write_all(line.as_bytes()).await.is_err() {
        return Answer::NoSession;
    }
    match tokio::time::timeout(GIVE_UP, c.read_response(&tag)).await {
        Ok(Ok(r)) if r.is_ok() => Answer::Right,
        Ok(Ok(r)) if r.tagged.contains("[UNAVAILABLE]") => Answer::Refused,
        Ok(Ok(r)) if r.status == "NO" => Answer::Wrong,
        Ok(_) => Answer::NoSession,
        Err(_) => Answer::Abandoned,
    }
}

/// One SMTP AUTH (465) guess from [`ATTACKER`].
async fn smtp_guess(relay: &Relay, user: &str, password: &str) -> Answer {
    let Ok(conn) = LineConn::connect_tls_from(ATTACKER, relay.submissions_addr(), &[]).await else {
        return Answer::NoSession;
    };
    let mut s = Smtp::from_conn(conn, relay.submissions_addr());
    match tokio::time::timeout(GIVE_UP * 10, s.read_reply()).await {
        Ok(Ok(g)) if g.code == 220 => {}
        _ => return Answer::NoSession,
    }
    match tokio::time::timeout(GIVE_UP * 10, s.try_cmd("EHLO guesser.example")).await {
        Ok(Ok(r)) if r.code == 250 => {}
        _ => return Answer::NoSession,
    }
    let token = base64(format!("\0{user}\0{password}").as_bytes());
    let line = format!("AUTH PLAIN {token}\r\n");
    if s.conn.write_all(line.as_bytes()).await.is_err() {
        return Answer::NoSession;
    }
    match tokio::time::timeout(GIVE_UP, s.read_reply()).await {
        Ok(Ok(r)) if r.code == 235 => Answer::Right,
        Ok(Ok(r)) if r.code == 454 => Answer::Refused,
        Ok(Ok(r)) if r.code == 535 => Answer::Wrong,
        Ok(_) => Answer::NoSession,
        Err(_) => Answer::Abandoned,
    }
}

/// The attack: 20 connections from one address guess the password of one
/// account over IMAP and SMTP, each hanging up after 0.3 s without an answer and
/// reconnecting, for 20 s. Before the per-address brake a right guess was always
/// answered at once, so every unanswered one was a wrong one: 66 guesses a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_guessers_that_give_up_early_get_at_most_one_answer_a_second() {
    let relay = Arc::new(Relay::start(&[]).await);
    let victim = Account::random();
    create_account(&relay, &victim).await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let start = Instant::now();
    let deadline = start + RUN;
    let mut tasks = Vec::new();
    for g in 0..GUESSERS {
        let (relay, seen, victim) = (relay.clone(), seen.clone(), victim.clone());
        tasks.push(tokio::spawn(async move {
            let mut n: u32 = 0;
            while Instant::now() < deadline {
                n += 1;
                let right = g == 0 && n.is_multiple_of(RIGHT_EVERY);
                let password = if right {
                    victim.password.clone()
                } else {
                    format!("guess-{g}-{n}-xxxxxxxx")
                };
                let answer = if g % 2 == 0 {
                    imap_guess(&relay, &victim.addr, &password).await
                } else {
                    smtp_guess(&relay, &victim.addr, &password).await
                };
                let pause = {
                    let mut s = seen.lock().unwrap();
                    if right {
                        s.right_sent += 1;
                    }
                    match answer {
                        Answer::Wrong => s.wrong += 1,
                        Answer::Right => s.right += 1,
                        Answer::Refused => s.refused += 1,
                        Answer::Abandoned => s.abandoned += 1,
                        Answer::NoSession => s.no_session += 1,
                    }
                    matches!(answer, Answer::NoSession)
                };
                if pause {
                    // A connection limit: do not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    // While the guessers' queue is full, the owner logs in from another address at once.
    tokio::time::sleep(RUN / 2).await;
    let t0 = Instant::now();
    let conn = LineConn::connect_tls_from(OTHER, relay.imaps_addr(), &[])
        .await
        .expect("connect from another address");
    let mut c = Imap::from_conn(conn, relay.imaps_addr());
    c.greeting().await;
    let r = c.login(&victim.addr, &victim.password).await;
    let other_took = t0.elapsed();
    assert!(r.is_ok(), "login from {OTHER} during the guessing: {r}");
    c.logout().await;
    for t in tasks {
        tokio::time::timeout(RUN, t)
            .await
            .expect("guesser ends after the run")
            .expect("guesser task");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let s = std::mem::take(&mut *seen.lock().unwrap());
    // What the guessers learnt: each guess answered in time; and when right guesses are
    // answered in time, each guess that was not (silence then means "wrong").
    let learnt = s.wrong + s.right + if s.right > 0 { s.abandoned } else { 0 };
    let per_second = learnt as f64 / elapsed;
    eprintln!(
        "{GUESSERS} guessers from {ATTACKER}, giving up after {GIVE_UP:?}, for {elapsed:.1} s: \
         {learnt} guesses learnt ({per_second:.2}/s; answered: {} wrong, {} of {} right \
         ones), {} refused unchecked, {} abandoned, {} connections without a session; a \
         login from {OTHER} took {other_took:?}",
        s.wrong, s.right, s.right_sent, s.refused, s.abandoned, s.no_session
    );
    // (Connections a per-address connection limit refused count as tries too.)
    assert!(
        s.wrong + s.right + s.abandoned + s.refused + s.no_session > 100,
        "the guessers ran: {s:?}"
    );
    assert!(
        s.right_sent > 0 && s.right == 0,
        "a right guess is not answered sooner than a wrong one: {s:?}"
    );
    assert!(
        per_second <= 1.0,
        "{per_second:.2} guesses learnt per second from one address: {s:?}"
    );
    // Not a speed assertion: the owner's login waited for nobody's turn (a turn after
    // this many failures would be at least 16 s away).
    assert!(
        other_took < Duration::from_secs(5),
        "login from another address took {other_took:?}"
    );
    assert_serving(&relay).await;
}
