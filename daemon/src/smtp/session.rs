//! One SMTP session: the command state machine (RFC 5321 §4.1.4 order of commands),
//! STARTTLS (RFC 3207), AUTH PLAIN (RFC 4954, RFC 4616), the submission rules (SUB-*)
//! and the minimal MX rules (IN-1..IN-4, IN-7), ending in one durable
//! `Store::deliver` before the `250` (DESIGN.md principle 2).

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;

use super::command::{self, Bad, Command};
use super::reply;
use super::wire::{Data, Line, MAX_COMMAND_LINE, Wire, WireError};
use super::{Handles, Mode};
use crate::auth::AuthError;
use crate::delivery;
use crate::policy::recipient::Relaying;
use crate::policy::{SmtpReply, submission};

/// Protocol errors on one connection before it is closed (Postfix
/// `smtpd_hard_error_limit`).
const MAX_ERRORS: u32 = 20;
/// Failed AUTH attempts on one connection before it is closed.
const MAX_AUTH_FAILURES: u32 = 3;
/// How long DATA waits for room in the memory budget before the message is refused
/// for now (while the client waits, it is not read: TCP holds it back).
const MEMORY_WAIT: Duration = Duration::from_secs(20);
/// Time allowed for the STARTTLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Tunables a test may shorten.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest wait for the client, and the deadline of one command line (RFC 5321
    /// §4.5.3.2.7 suggests 5 minutes; `smtpd_timeout`).
    pub idle: Duration,
    /// DATA must arrive at this many bytes per second (`smtpd_min_data_rate`, issue 13).
    pub min_data_rate: u32,
    /// A session without AUTH ends after this long (`smtpd_session_deadline`).
    pub unauthenticated: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            idle: Duration::from_secs(300),
            min_data_rate: 500,
            unauthenticated: Duration::from_secs(1800),
        }
    }
}

impl Limits {
    /// The configured values (issue 13 keys).
    pub fn from_config(c: &crate::config::ConnectionLimits) -> Limits {
        Limits {
            idle: c.smtpd_timeout,
            min_data_rate: c.smtpd_min_data_rate,
            unauthenticated: c.smtpd_session_deadline,
        }
    }
}

/// A mail transaction between MAIL and the end of DATA (RFC 5321 §3.3).
struct Transaction {
    from: String,
    /// SUB-2: a sender the login does not own is refused at RCPT, not at MAIL.
    sender_refusal: Option<SmtpReply>,
    /// SUB-4: the rate-limit verdict, taken once at the first RCPT.
    rate_ok: Option<bool>,
    /// The `SIZE=` of MAIL FROM (RFC 1870), 0 when not given; QUOTA-2 at RCPT.
    size_hint: u64,
    rcpts: delivery::Recipients,
}

/// What the connection does after a command.
enum Flow {
    Continue,
    Close,
    StartTls,
}

struct Session<'a> {
    h: Handles<'a>,
    peer: SocketAddr,
    mode: Mode,
    host: String,
    greeted: bool,
    login: Option<String>,
    auth_failures: u32,
    errors: u32,
    tx: Option<Transaction>,
}

/// Run a session to its end. Never logs the client address together with an account:
/// the span carries a connection number only.
pub async fn run(
    h: Handles<'_>,
    conn: crate::net::Conn,
    peer: SocketAddr,
    mode: Mode,
    limits: Limits,
) {
    let host = h.config.host_name();
    // Issue 13: the listener's name for refusal counts (465 and 443 start in TLS).
    let service = match (mode, conn.is_tls()) {
        (Mode::Mx, _) => "smtp",
        (Mode::Submission, false) => "submission",
        (Mode::Submission, true) => "submissions",
    };
    let mut wire = Wire::new(conn, limits.idle).with_min_data_rate(limits.min_data_rate);
    wire.set_session_deadline(Some(tokio::time::Instant::now() + limits.unauthenticated));
    let mut s = Session {
        h,
        peer,
        mode,
        host,
        greeted: false,
        login: None,
        auth_failures: 0,
        errors: 0,
        tx: None,
    };
    // RFC 5321 §4.2: greeting without a software version.
    wire.queue(&format!("220 {} ESMTP", s.host));
    loop {
        let flow = match wire.read_line(MAX_COMMAND_LINE).await {
            Ok(line) => s.handle(line, &mut wire).await,
            Err(e) => Err(e),
        };
        match flow {
            // Issue 13: the session deadline is for clients without AUTH.
            Ok(Flow::Continue) if s.login.is_some() => wire.set_session_deadline(None),
            Ok(Flow::Continue) => {}
            Ok(Flow::Close) => {
                wire.shutdown().await;
                return;
            }
            Ok(Flow::StartTls) => {
                let config = match s.mode {
                    // TLS-2: submission TLS 1.3, port 25 TLS 1.2.
                    Mode::Submission => s.h.tls.tls13.clone(),
                    Mode::Mx => s.h.tls.tls12.clone(),
                };
                match wire.start_tls(config, HANDSHAKE_TIMEOUT).await {
                    Ok(w) => wire = w,
                    Err(e) => {
                        tracing::debug!("STARTTLS failed: {e}");
                        return;
                    }
                }
                // RFC 3207 §4.2: forget everything learnt before TLS; EHLO again.
                s.greeted = false;
                s.tx = None;
                s.login = None;
            }
            Err(WireError::Timeout) => {
                wire.queue(&reply::timeout(&s.host).to_string());
                wire.shutdown().await;
                tracing::debug!("deadline exceeded");
                if s.login.is_none() {
                    let reason = crate::admission::Reason::Deadline;
                    crate::admission::refused(service, reason, s.peer.ip());
                }
                return;
            }
            Err(e) => {
                tracing::debug!("connection ended: {e}");
                return;
            }
        }
    }
}

impl Session<'_> {
    fn send(&self, wire: &mut Wire, r: &SmtpReply) {
        wire.queue(&r.to_string());
    }

    /// A protocol error: answered, and counted toward [`MAX_ERRORS`].
    fn error(&mut self, wire: &mut Wire, r: SmtpReply) -> Flow {
        self.send(wire, &r);
        self.errors += 1;
        if self.errors >= MAX_ERRORS {
            self.send(wire, &reply::too_many_errors());
            return Flow::Close;
        }
        Flow::Continue
    }

    async fn handle(&mut self, line: Line, wire: &mut Wire) -> Result<Flow, WireError> {
        let Line::Ok(bytes) = line else {
            return Ok(self.error(wire, reply::line_too_long()));
        };
        if bytes.contains(&0) {
            return Ok(self.error(wire, reply::nul_in_line()));
        }
        let parsed = command::parse(&bytes);
        let tls = wire.is_tls();
        // IN-1 (and 587): before STARTTLS only these commands.
        if !tls {
            let allowed = matches!(
                parsed,
                Ok(Command::Ehlo(_)
                    | Command::Helo(_)
                    | Command::StartTls
                    | Command::Noop
                    | Command::Rset
                    | Command::Quit)
            );
            match &parsed {
                _ if allowed => {}
                Err(Bad::Reply(r)) => return Ok(self.error(wire, r.clone())),
                // ACC-1, RFC 4954 §4: AUTH needs TLS.
                Ok(Command::Auth { .. }) if self.mode == Mode::Submission => {
                    self.send(wire, &reply::auth_needs_tls());
                    return Ok(Flow::Continue);
                }
                // Counted: a peer cannot loop on refused commands forever.
                _ => return Ok(self.error(wire, reply::must_starttls())),
            }
        }
        let cmd = match parsed {
            Ok(c) => c,
            Err(Bad::Reply(r)) => return Ok(self.error(wire, r)),
            Err(Bad::Sender(raw)) => return Ok(self.mail(wire, Err(raw), 0)),
        };
        match cmd {
            Command::Ehlo(_) => {
                self.hello();
                let r = self.ehlo_lines(tls);
                for l in r {
                    wire.queue(&l);
                }
            }
            Command::Helo(_) => {
                self.hello();
                wire.queue(&format!("250 {}", self.host));
            }
            Command::StartTls => {
                if tls {
                    return Ok(self.error(wire, reply::tls_active()));
                }
                self.send(wire, &reply::ready_tls());
                return Ok(Flow::StartTls);
            }
            Command::Auth { plain, initial } => return self.auth(wire, plain, initial).await,
            Command::Mail { from, size } => return Ok(self.mail(wire, Ok(from), size)),
            Command::Rcpt(to) => return Ok(self.rcpt(wire, &to)),
            Command::Data => return self.data(wire).await,
            Command::Rset => {
                self.tx = None;
                self.send(wire, &reply::ok());
            }
            Command::Noop => self.send(wire, &reply::ok()),
            Command::Help => self.send(wire, &reply::help()),
            // IN-3: one answer for every name, on both ports.
            Command::Vrfy => self.send(wire, &reply::vrfy()),
            Command::Quit => {
                self.send(wire, &reply::bye());
                return Ok(Flow::Close);
            }
            Command::NotImplemented => return Ok(self.error(wire, reply::not_implemented())),
        }
        Ok(Flow::Continue)
    }

    /// EHLO/HELO (RFC 5321 §4.1.4): greets and resets any transaction.
    fn hello(&mut self) {
        self.greeted = true;
        self.tx = None;
    }

    /// SUB-1, IN-1: the EHLO keywords. No BDAT/CHUNKING.
    fn ehlo_lines(&self, tls: bool) -> Vec<String> {
        let mut kw = vec![
            "PIPELINING".to_string(),
            format!("SIZE {}", self.h.config.max_message_size),
        ];
        if !tls {
            kw.push("STARTTLS".into());
        }
        // ACC-1: AUTH only after TLS, and only on submission.
        if tls && self.mode == Mode::Submission {
            kw.push("AUTH PLAIN".into());
        }
        kw.extend(
            ["ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8"]
                .iter()
                .map(|s| s.to_string()),
        );
        let mut lines = vec![format!("250-{}", self.host)];
        let last = kw.len() - 1;
        for (i, k) in kw.into_iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            lines.push(format!("250{sep}{k}"));
        }
        lines
    }

    // ---- AUTH -----------------------------------------------------------------------

    /// AUTH PLAIN (RFC 4954, RFC 4616), with an initial response or after `334 `.
    async fn auth(
        &mut self,
        wire: &mut Wire,
        plain: bool,
        initial: String,
    ) -> Result<Flow, WireError> {
        if self.mode == Mode::Mx {
            return Ok(self.error(wire, reply::auth_not_enabled()));
        }
        if !self.greeted {
            return Ok(self.error(wire, reply::need_helo()));
        }
        if self.login.is_some() {
            return Ok(self.error(wire, reply::auth_again()));
        }
        if self.tx.is_some() {
            return Ok(self.error(wire, reply::auth_in_transaction()));
        }
        if !plain {
            return Ok(self.error(wire, reply::auth_mechanism()));
        }
        let response = if initial.is_empty() {
            // RFC 4954 §4: an empty challenge.
            wire.queue("334 ");
            match wire.read_line(MAX_COMMAND_LINE).await? {
                Line::Ok(mut l) => {
                    l.truncate(l.len() - 2);
                    String::from_utf8_lossy(&l).into_owned()
                }
                Line::TooLong => return Ok(self.error(wire, reply::line_too_long())),
            }
        } else {
            initial
        };
        if response == "*" {
            self.send(wire, &reply::auth_cancelled());
            return Ok(Flow::Continue);
        }
        // RFC 4954 §4: `=` is an empty initial response.
        let decoded = if response == "=" {
            Ok(Vec::new())
        } else {
            base64::engine::general_purpose::STANDARD.decode(response.trim())
        };
        let Ok(decoded) = decoded else {
            return Ok(self.error(wire, reply::auth_bad_base64()));
        };
        match plain_credentials(&decoded) {
            Some((authcid, password)) => {
                match self.h.auth.login(&authcid, &password, self.peer.ip()).await {
                    Ok(address) => {
                        tracing::info!("authenticated");
                        self.login = Some(address);
                        self.send(wire, &reply::auth_ok());
                        Ok(Flow::Continue)
                    }
                    Err(AuthError::Failed) => Ok(self.auth_failed(wire)),
                    Err(AuthError::Temporary(e)) => {
                        tracing::warn!("authentication: {e}");
                        self.send(wire, &reply::auth_temporary());
                        Ok(Flow::Continue)
                    }
                    Err(AuthError::TooMany(_)) => {
                        self.send(wire, &reply::auth_too_many_attempts());
                        Ok(Flow::Continue)
                    }
                    // Not a failed attempt: no password was checked.
                    Err(AuthError::CreationRefused(refusal)) => {
                        self.send(wire, &reply::auth_creation_refused(&refusal));
                        Ok(Flow::Continue)
                    }
                }
            }
            None => Ok(self.auth_failed(wire)),
        }
    }

    fn auth_failed(&mut self, wire: &mut Wire) -> Flow {
        self.send(wire, &reply::auth_failed());
        self.auth_failures += 1;
        if self.auth_failures >= MAX_AUTH_FAILURES {
            self.send(wire, &reply::auth_too_many());
            return Flow::Close;
        }
        Flow::Continue
    }

    // ---- MAIL, RCPT -----------------------------------------------------------------

    /// MAIL FROM. `from` is the parsed reverse path, or the raw text of one the parser
    /// refused.
    fn mail(&mut self, wire: &mut Wire, from: Result<String, Option<String>>, size: u64) -> Flow {
        if !self.greeted {
            return self.error(wire, reply::need_helo());
        }
        if self.mode == Mode::Submission && self.login.is_none() {
            // SUB-1.
            self.send(wire, &reply::access_denied());
            return Flow::Continue;
        }
        if self.tx.is_some() {
            return self.error(wire, reply::nested_mail());
        }
        let from = match from {
            Ok(f) => f,
            Err(raw) => {
                // SUB-3: a path the grammar refuses is a malformed from address.
                let r = match (self.mode, raw) {
                    (Mode::Submission, Some(raw)) => submission::check_mail_from(&raw)
                        .err()
                        .unwrap_or_else(reply::bad_sender_syntax),
                    _ => reply::bad_sender_syntax(),
                };
                return self.error(wire, r);
            }
        };
        // SUB-5, IN-1: SIZE= over the limit is refused at MAIL.
        if size > self.h.config.max_message_size {
            self.send(wire, &reply::too_big());
            return Flow::Continue;
        }
        let mut sender_refusal = None;
        if let (Mode::Submission, Some(login)) = (self.mode, &self.login) {
            // Issue 18: an account deleted or blocked since this session's AUTH sends no
            // more (RFC 5321 §3.8: 421 and close, as when the service goes away).
            if matches!(self.h.delivery.store.account(login), Ok(None)) {
                self.send(wire, &reply::account_removed());
                return Flow::Close;
            }
            // SUB-3 at MAIL.
            if let Err(r) = submission::check_mail_from(&from) {
                self.send(wire, &r);
                return Flow::Continue;
            }
            // SUB-2: answered at RCPT.
            sender_refusal = submission::check_sender(&from, login).err();
        }
        self.tx = Some(Transaction {
            from,
            sender_refusal,
            rate_ok: None,
            size_hint: size,
            rcpts: delivery::Recipients::default(),
        });
        self.send(wire, &reply::mail_ok());
        Flow::Continue
    }

    fn rcpt(&mut self, wire: &mut Wire, to: &str) -> Flow {
        let r = self.rcpt_reply(to);
        if r == reply::need_mail() {
            return self.error(wire, r);
        }
        self.send(wire, &r);
        Flow::Continue
    }

    fn rcpt_reply(&mut self, to: &str) -> SmtpReply {
        if self.mode == Mode::Submission && self.login.is_none() {
            // SUB-1.
            return reply::access_denied();
        }
        let h = self.h;
        let login = self.login.clone();
        let Some(tx) = self.tx.as_mut() else {
            return reply::need_mail();
        };
        if let Some(r) = &tx.sender_refusal {
            return r.clone();
        }
        if let Some(login) = &login {
            // SUB-4: one unit per transaction, taken at its first RCPT.
            let ok = *tx
                .rate_ok
                .get_or_insert_with(|| h.send_limiter.check(login, h.clock.monotonic()));
            if !ok {
                crate::metrics::rejected(crate::metrics::Rejection::RateLimit);
                return reply::rate_limited(&tx.from);
            }
        }
        // SUB-5, IN-2 and the account: the same check as `/mxdeliv`.
        let relaying = match self.mode {
            Mode::Submission => Relaying::Allowed,
            Mode::Mx => Relaying::Denied,
        };
        match tx.rcpts.add(&h.delivery, to, tx.size_hint, relaying) {
            Ok(()) => reply::rcpt_ok(),
            Err(r) => r,
        }
    }

    // ---- DATA -----------------------------------------------------------------------

    async fn data(&mut self, wire: &mut Wire) -> Result<Flow, WireError> {
        if self.mode == Mode::Submission && self.login.is_none() {
            self.send(wire, &reply::access_denied());
            return Ok(Flow::Continue);
        }
        match &self.tx {
            None => return Ok(self.error(wire, reply::need_mail())),
            Some(tx) if tx.rcpts.all.is_empty() => {
                return Ok(self.error(wire, reply::need_rcpt()));
            }
            Some(_) => {}
        }
        self.send(wire, &reply::start_data());
        // The message's bytes are reserved as they arrive and until the commit is done.
        let mut memory = self.h.memory.empty();
        let data = wire
            .read_data(self.h.config.max_message_size, &mut memory, MEMORY_WAIT)
            .await?;
        // RFC 5321 §4.1.1.4: the transaction ends with the data, whatever the verdict.
        let Some(tx) = self.tx.take() else {
            return Ok(Flow::Continue);
        };
        let r = match data {
            Data::TooBig => reply::too_big(),
            Data::NoMemory => {
                crate::metrics::rejected(crate::metrics::Rejection::Busy);
                tracing::info!("message refused for now: no memory left for messages in transit");
                reply::insufficient_storage()
            }
            Data::Message(raw) => match self.mode {
                Mode::Submission => self.accept_submission(tx, raw).await,
                Mode::Mx => self.accept_inbound(tx, raw).await,
            },
        };
        self.send(wire, &r);
        Ok(Flow::Continue)
    }

    /// SUB-6..12 then the durable commit.
    async fn accept_submission(&self, tx: Transaction, raw: Vec<u8>) -> SmtpReply {
        delivery::submission(
            &self.h.delivery,
            tx.from,
            tx.rcpts.local,
            tx.rcpts.remote,
            &tx.rcpts.all,
            raw,
        )
        .await
    }

    /// IN-4, IN-7 and the durable commit.
    async fn accept_inbound(&self, tx: Transaction, raw: Vec<u8>) -> SmtpReply {
        delivery::inbound(&self.h.delivery, self.peer.ip(), tx.from, tx.rcpts, raw).await
    }
}

/// RFC 4616: `authzid NUL authcid NUL passwd`; the authzid must be empty or name the
/// same user.
fn plain_credentials(decoded: &[u8]) -> Option<(String, String)> {
    let mut parts = decoded.split(|&b| b == 0);
    let (authzid, authcid, password) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || authcid.is_empty() {
        return None;
    }
    if !authzid.is_empty() && !authzid.eq_ignore_ascii_case(authcid) {
        return None;
    }
    let authcid = std::str::from_utf8(authcid).ok()?.to_string();
    let password = std::str::from_utf8(password).ok()?.to_string();
    Some((authcid, password))
}
