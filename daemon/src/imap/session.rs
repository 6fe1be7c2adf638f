//! One IMAP session (RFC 9051 §3 states; RFC 3501 IMAP4rev1 wire forms): the command
//! loop, login, mailbox selection with the session's UID list for sequence numbers,
//! untagged updates from other sessions and deliveries (events), and every command
//! handler except FETCH item rendering (fetch.rs) and SEARCH evaluation (search.rs).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::auth::AuthMechanism;
use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::core::NString8;
use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_codec::imap_types::extensions::metadata::{Entry, EntryValue};
use imap_codec::imap_types::fetch::MacroOrMessageDataItemNames;
use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::SequenceSet;
use imap_codec::imap_types::status::StatusDataItemName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::response::{Reply, astring, flag_list, literal, mailbox as mailbox_out, uid_set};
use super::wire::{self, Frame, InBuf, WireError};
use super::{capabilities, fetch, metadata, search, sequence};
use crate::auth::AuthError;
use crate::server::Relay;
use crate::store::{FlagOp, Flags, MessageMeta, StoreError};

/// Hierarchy delimiter (Dovecot's default with upstream's layout).
pub const DELIMITER: char = '.';
/// Quota root name (upstream Dovecot's).
const QUOTA_ROOT: &str = "User quota";
/// RFC 9051 §5.4: at least 30 minutes after authentication (also bounds IDLE).
const AUTOLOGOUT: Duration = Duration::from_secs(30 * 60);
/// Before authentication the client gets less time.
const PREAUTH_TIMEOUT: Duration = Duration::from_secs(3 * 60);
/// A client that does not read its responses is dropped after this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Failed logins on one connection before it is closed.
const MAX_FAILED_LOGINS: u32 = 3;
/// Literals before login (LOGIN/AUTHENTICATE arguments) are small.
const PREAUTH_MAX_LITERAL: u64 = 8 * 1024;
/// How long a literal waits for room in the memory budget (`crate::memory`).
const MEMORY_WAIT: Duration = Duration::from_secs(20);
/// Buffered output is written out when it grows past this during a command.
const FLUSH_AT: usize = 1 << 20;

/// Why the command loop stopped.
pub enum Exit {
    Close,
    /// STARTTLS accepted: upgrade the connection and run the loop again.
    StartTls,
    /// COMPRESS DEFLATE accepted (RFC 4978): wrap the connection, run the loop again.
    Compress,
    /// No login within `imap_login_timeout` (issue 13): closed after `* BYE`.
    LoginDeadline,
}

enum Flow {
    Continue,
    Close,
    StartTls,
    Compress,
}

/// Handler failures.
#[derive(Debug, thiserror::Error)]
enum Fail {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("connection: {0}")]
    Wire(#[from] WireError),
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Self {
        Fail::Wire(WireError::Io(e))
    }
}

/// The selected mailbox as this session sees it (RFC 9051 §2.3.1.2: sequence numbers
/// are positions in this list; it changes only when the session reports the change).
struct Selected {
    name: String,
    read_only: bool,
    /// Messages in UID order, with the flags last reported.
    msgs: Vec<MessageMeta>,
    /// Highest UID reported with EXISTS (new messages have larger UIDs).
    known_max: u32,
    /// Messages gone from the store whose EXPUNGE could not be sent yet.
    pending_expunge: bool,
}

impl Selected {
    fn index_of(&self, uid: u32) -> Option<usize> {
        self.msgs.binary_search_by_key(&uid, |m| m.uid).ok()
    }
    fn uids(&self) -> Vec<u32> {
        self.msgs.iter().map(|m| m.uid).collect()
    }
}

pub struct Session {
    relay: Arc<Relay>,
    /// Issue 13: the client must be logged in by then (`imap_login_timeout`).
    login_deadline: tokio::time::Instant,
    pub tls: bool,
    /// STARTTLS can be offered (a plain `Conn` that can be upgraded).
    pub can_starttls: bool,
    /// The client's address: keys the login brake only, never logged (LOG-2).
    client: IpAddr,
    user: Option<String>,
    events: Option<watch::Receiver<u64>>,
    selected: Option<Selected>,
    failed_logins: u32,
    /// COMPRESS=DEFLATE is active.
    compressed: bool,
    /// Written after the tagged reply, then the connection closes.
    bye_after: Option<&'static str>,
    out: Vec<u8>,
    inbuf: InBuf,
}

fn ok(t: &str) -> Reply {
    Reply::ok(t)
}
fn no(t: &str) -> Reply {
    Reply::no(t)
}
fn bad(t: &str) -> Reply {
    Reply::bad(t)
}

/// Commands this server knows, for telling "unknown" from "bad arguments".
const KNOWN: &[&str] = &[
    "CAPABILITY",
    "NOOP",
    "LOGOUT",
    "STARTTLS",
    "LOGIN",
    "AUTHENTICATE",
    "ID",
    "ENABLE",
    "NAMESPACE",
    "LIST",
    "LSUB",
    "CREATE",
    "DELETE",
    "RENAME",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "STATUS",
    "APPEND",
    "SELECT",
    "EXAMINE",
    "FETCH",
    "STORE",
    "COPY",
    "MOVE",
    "SEARCH",
    "EXPUNGE",
    "CLOSE",
    "UNSELECT",
    "CHECK",
    "IDLE",
    "GETQUOTAROOT",
    "GETQUOTA",
    "SETQUOTA",
    "GETMETADATA",
    "SETMETADATA",
    "UID",
];

/// An APPEND whose message literal lies in `frame` (the command's buffer): its mailbox
/// name, flags, date and the literal's range in the buffer; `Err` with the reply for a
/// bad name or flag. `None` when it is not an APPEND or the literal is elsewhere.
#[allow(clippy::type_complexity)]
fn append_in_place(
    body: &CommandBody<'_>,
    frame: &[u8],
) -> Option<Result<(String, Flags, Option<u64>, std::ops::Range<usize>), Reply>> {
    let CommandBody::Append {
        mailbox,
        flags,
        date,
        message,
    } = body
    else {
        return None;
    };
    let data: &[u8] = match message {
        LiteralOrLiteral8::Literal(l) => l.data(),
        LiteralOrLiteral8::Literal8(l) => &l.data,
    };
    // Where the literal's bytes are, if they are the frame's own.
    let start = (data.as_ptr() as usize).checked_sub(frame.as_ptr() as usize)?;
    let end = start.checked_add(data.len())?;
    if end > frame.len() {
        return None;
    }
    let parsed = mailbox_name(mailbox).and_then(|name| {
        let flags = to_flags(flags)?;
        let date = date.as_ref().map(|d| d.as_ref().timestamp().max(0) as u64);
        Ok((name, flags, date, start..end))
    });
    Some(parsed)
}

fn mailbox_name(m: &Mailbox<'_>) -> Result<String, Reply> {
    match m {
        Mailbox::Inbox => Ok("INBOX".to_string()),
        Mailbox::Other(o) => String::from_utf8(o.inner().as_ref().to_vec())
            .map_err(|_| no("Invalid mailbox name").code("CANNOT")),
    }
}

/// Names a client may create (RFC 9051 §5.1): no wildcards or control characters.
fn valid_new_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name
            .bytes()
            .any(|b| b < 0x20 || b == 0x7f || b == b'*' || b == b'%')
        && !name.starts_with(DELIMITER)
        && !name.contains("..")
}

/// IMAP flags → stored flags. `\Recent` and unknown system flags are refused.
fn to_flags(flags: &[Flag<'_>]) -> Result<Flags, Reply> {
    let mut f = Flags::default();
    for flag in flags {
        match flag {
            Flag::Seen => f.bits |= Flags::SEEN,
            Flag::Answered => f.bits |= Flags::ANSWERED,
            Flag::Flagged => f.bits |= Flags::FLAGGED,
            Flag::Deleted => f.bits |= Flags::DELETED,
            Flag::Draft => f.bits |= Flags::DRAFT,
            Flag::Keyword(k) => {
                if !f.keywords.iter().any(|x| x.eq_ignore_ascii_case(k.inner())) {
                    f.keywords.push(k.inner().to_string());
                }
            }
            Flag::Extension(_) => return Err(bad("Invalid system flag")),
        }
    }
    Ok(f)
}

/// LIST pattern match (RFC 9051 §6.3.9): `*` matches anything, `%` anything but the
/// delimiter. INBOX is case-insensitive.
fn list_match(pattern: &[u8], name: &[u8]) -> bool {
    fn m(p: &[u8], n: &[u8], budget: &mut u32) -> bool {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        match p.first() {
            None => n.is_empty(),
            Some(b'*') => (0..=n.len()).any(|i| m(&p[1..], &n[i..], budget)),
            Some(b'%') => {
                let stop = n
                    .iter()
                    .position(|&b| b == DELIMITER as u8)
                    .unwrap_or(n.len());
                (0..=stop).any(|i| m(&p[1..], &n[i..], budget))
            }
            Some(c) => n.first() == Some(c) && m(&p[1..], &n[1..], budget),
        }
    }
    let fold = |s: &[u8]| -> Vec<u8> {
        if s.len() >= 5
            && s[..5].eq_ignore_ascii_case(b"INBOX")
            && (s.len() == 5 || s[5] == DELIMITER as u8)
        {
            let mut v = b"INBOX".to_vec();
            v.extend_from_slice(&s[5..]);
            v
        } else {
            s.to_vec()
        }
    };
    let mut budget = 100_000;
    m(&fold(pattern), &fold(name), &mut budget)
}

/// RFC 6154 special-use attribute of the names Delta Chat and upstream use (IMAP-4).
fn special_use(name: &str) -> Option<&'static str> {
    match name {
        "Drafts" => Some("\\Drafts"),
        "Junk" => Some("\\Junk"),
        "Trash" => Some("\\Trash"),
        "Sent" | "Sent Messages" => Some("\\Sent"),
        _ => None,
    }
}

impl Session {
    pub fn new(relay: Arc<Relay>, tls: bool, can_starttls: bool, client: IpAddr) -> Session {
        let login_deadline =
            tokio::time::Instant::now() + relay.config.connections.imap_login_timeout;
        Session {
            relay,
            login_deadline,
            tls,
            can_starttls,
            client,
            user: None,
            events: None,
            selected: None,
            failed_logins: 0,
            compressed: false,
            bye_after: None,
            out: Vec::new(),
            inbuf: InBuf::default(),
        }
    }

    fn caps(&self) -> String {
        let offer_compress = self.relay.config.imap_compress && !self.compressed;
        capabilities(self.tls, self.user.is_some(), offer_compress)
    }

    /// `* OK [CAPABILITY ...] ready` (IMAP-1).
    pub fn greet(&mut self) {
        let line = format!("* OK [CAPABILITY {}] Relaybox ready.\r\n", self.caps());
        self.out.extend_from_slice(line.as_bytes());
    }

    /// COMPRESS accepted: the bytes already received are compressed; hand them to the
    /// decompressor.
    pub fn compress_started(&mut self) -> Vec<u8> {
        self.compressed = true;
        self.inbuf.take_all()
    }

    /// STARTTLS done: forget pipelined bytes (RFC 9051 §6.2.1) and continue encrypted.
    pub fn tls_started(&mut self) {
        self.inbuf.clear();
        self.tls = true;
        self.can_starttls = false;
    }

    /// Write `data` to the connection as it is (after [`Session::flush`]).
    async fn write_direct<S: AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        data: &[u8],
    ) -> Result<(), Fail> {
        match tokio::time::timeout(WRITE_TIMEOUT, io.write_all(data)).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(std::io::Error::other("write timeout").into()),
        }
    }

    async fn flush<S: AsyncWrite + Unpin>(&mut self, io: &mut S) -> Result<(), Fail> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let write = async {
            io.write_all(&out).await?;
            io.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(r) => r?,
            Err(_) => return Err(std::io::Error::other("write timeout").into()),
        }
        let mut out = out;
        out.clear();
        if self.out.is_empty() {
            self.out = out;
        }
        Ok(())
    }

    fn untagged(&mut self, s: &str) {
        self.out.extend_from_slice(b"* ");
        self.out.extend_from_slice(s.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// The command loop; returns when the session ends or STARTTLS was accepted.
    pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(&mut self, io: &mut S) -> Exit {
        loop {
            if self.flush(io).await.is_err() {
                return Exit::Close;
            }
            let max_msg = self.relay.config.max_message_size;
            let (timeout, max_literal, max_total) = if self.user.is_some() {
                (AUTOLOGOUT, max_msg, max_msg.saturating_add(1 << 20))
            } else {
                // Issue 13: a deadline for the login, not only for each command.
                let left = self
                    .login_deadline
                    .saturating_duration_since(tokio::time::Instant::now());
                (PREAUTH_TIMEOUT.min(left), PREAUTH_MAX_LITERAL, 64 * 1024)
            };
            // Literals are reserved in the memory budget until the command is done.
            let mut memory = self.relay.memory.empty();
            let read = wire::read_command(
                &mut self.inbuf,
                io,
                max_literal,
                max_total,
                &mut memory,
                MEMORY_WAIT,
            );
            let frame = match tokio::time::timeout(timeout, read).await {
                Err(_) if self.user.is_none() => {
                    self.untagged("BYE Autologout; no login in time");
                    let _ = self.flush(io).await;
                    return Exit::LoginDeadline;
                }
                Err(_) => {
                    self.untagged("BYE Autologout; idle for too long");
                    let _ = self.flush(io).await;
                    return Exit::Close;
                }
                Ok(Err(WireError::Flood)) => {
                    self.untagged("BYE Line too long");
                    let _ = self.flush(io).await;
                    return Exit::Close;
                }
                Ok(Err(e)) => {
                    tracing::debug!("connection ended: {e}");
                    return Exit::Close;
                }
                Ok(Ok(f)) => f,
            };
            let tag_or_star = |t: Option<String>| t.unwrap_or_else(|| "*".to_string());
            match frame {
                Frame::Eof => return Exit::Close,
                Frame::LineTooLong { tag } => {
                    bad("Line too long").write(&tag_or_star(tag), &mut self.out)
                }
                Frame::LiteralTooBig { tag, sync } => {
                    let r = if sync {
                        no("Literal too large").code("TOOBIG")
                    } else {
                        bad("Literal too large").code("TOOBIG")
                    };
                    r.write(&tag_or_star(tag), &mut self.out);
                }
                Frame::Nul { tag } => {
                    bad("NUL byte in command").write(&tag_or_star(tag), &mut self.out)
                }
                Frame::NoMemory { tag } => {
                    crate::metrics::rejected(crate::metrics::Rejection::Busy);
                    no("Not enough memory for this literal right now, try again later")
                        .code("LIMIT")
                        .write(&tag_or_star(tag), &mut self.out)
                }
                Frame::Command(bytes) => match self.command(io, bytes).await {
                    Flow::Continue => {}
                    Flow::Close => {
                        let _ = self.flush(io).await;
                        return Exit::Close;
                    }
                    Flow::StartTls => {
                        if self.flush(io).await.is_err() {
                            return Exit::Close;
                        }
                        return Exit::StartTls;
                    }
                    Flow::Compress => {
                        if self.flush(io).await.is_err() {
                            return Exit::Close;
                        }
                        return Exit::Compress;
                    }
                },
            }
        }
    }

    /// Parse and run one command, then report mailbox changes and the tagged reply.
    async fn command<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        bytes: Vec<u8>,
    ) -> Flow {
        let cmd = match CommandCodec::default().decode(&bytes) {
            Ok((_, cmd)) => cmd,
            Err(_) => {
                let tag = wire::tag_of(&bytes).unwrap_or_else(|| "*".to_string());
                let word = bytes
                    .split(|&b| b == b' ' || b == b'\r' || b == b'\n')
                    .nth(1)
                    .map(|w| String::from_utf8_lossy(w).to_ascii_uppercase())
                    .unwrap_or_default();
                // RFC 9051 §7.1.3: BAD for unknown commands and invalid arguments.
                let r = if KNOWN.contains(&word.as_str()) {
                    bad("Error in IMAP command: invalid arguments")
                } else {
                    bad("Error in IMAP command: unknown command")
                };
                r.write(&tag, &mut self.out);
                return Flow::Continue;
            }
        };
        let tag = cmd.tag.inner().to_string();
        // RFC 9051 §7.5.1: no EXPUNGE while answering FETCH, STORE or SEARCH (UID
        // versions excepted).
        let allow_expunge = !matches!(
            &cmd.body,
            CommandBody::Fetch { uid: false, .. }
                | CommandBody::Store { uid: false, .. }
                | CommandBody::Search { uid: false, .. }
        );
        let always_sync = matches!(&cmd.body, CommandBody::Noop | CommandBody::Check);
        let result = match (&self.user, append_in_place(&cmd.body, &bytes)) {
            // APPEND of a logged-in user: the message is taken out of the command's own
            // buffer, not copied (it may be as big as max_message_size).
            (Some(user), Some(Ok((name, flags, date, range)))) => {
                let user = user.clone();
                drop(cmd);
                let mut message = bytes;
                message.truncate(range.end);
                message.drain(..range.start);
                self.append(&user, name, flags, date, message)
                    .await
                    .map(|r| (r, Flow::Continue))
            }
            (Some(_), Some(Err(r))) => Ok((r, Flow::Continue)),
            _ => Box::pin(self.dispatch(io, cmd.body)).await,
        };
        let (reply, flow) = match result {
            Ok(x) => x,
            Err(Fail::Store(e)) => {
                tracing::warn!("store error: {e}");
                (
                    no("Internal error occurred. Try again later.").code("UNAVAILABLE"),
                    Flow::Continue,
                )
            }
            Err(Fail::Wire(e)) => {
                tracing::debug!("connection ended: {e}");
                return Flow::Close;
            }
        };
        if matches!(flow, Flow::Continue) {
            self.report_changes(always_sync, allow_expunge).await;
        }
        reply.write(&tag, &mut self.out);
        if let Some(bye) = self.bye_after.take() {
            self.untagged(&format!("BYE {bye}"));
            return Flow::Close;
        }
        flow
    }

    /// Send untagged updates when the account changed (or always for NOOP/CHECK).
    async fn report_changes(&mut self, always: bool, allow_expunge: bool) {
        let Some(sel) = &self.selected else { return };
        let changed = self
            .events
            .as_ref()
            .is_some_and(|rx| rx.has_changed().unwrap_or(false));
        if always || changed || (sel.pending_expunge && allow_expunge) {
            self.sync(allow_expunge);
        }
    }

    /// Re-read the selected mailbox and report EXPUNGE (descending sequence numbers,
    /// so each number is still valid when sent), flag changes and EXISTS.
    fn sync(&mut self, allow_expunge: bool) {
        if let Some(rx) = &mut self.events {
            rx.borrow_and_update();
        }
        let (Some(user), Some(sel)) = (&self.user, &mut self.selected) else {
            return;
        };
        let fresh = match self.relay.store.messages(user, &sel.name) {
            Ok((_, m)) => m,
            Err(StoreError::NoMailbox) => Vec::new(),
            Err(e) => {
                tracing::warn!("store error: {e}");
                return;
            }
        };
        let mut out = std::mem::take(&mut self.out);
        let gone = |uid: u32| fresh.binary_search_by_key(&uid, |m| m.uid).is_err();
        if allow_expunge {
            for i in (0..sel.msgs.len()).rev() {
                if gone(sel.msgs[i].uid) {
                    out.extend_from_slice(format!("* {} EXPUNGE\r\n", i + 1).as_bytes());
                    sel.msgs.remove(i);
                }
            }
            sel.pending_expunge = false;
        } else {
            sel.pending_expunge = sel.msgs.iter().any(|m| gone(m.uid));
        }
        for (i, m) in sel.msgs.iter_mut().enumerate() {
            if let Ok(j) = fresh.binary_search_by_key(&m.uid, |f| f.uid)
                && fresh[j].flags != m.flags
            {
                m.flags = fresh[j].flags.clone();
                out.extend_from_slice(
                    format!("* {} FETCH (UID {} FLAGS ", i + 1, m.uid).as_bytes(),
                );
                flag_list(&mut out, &m.flags);
                out.extend_from_slice(b")\r\n");
            }
        }
        let added: Vec<MessageMeta> = fresh
            .iter()
            .filter(|m| m.uid > sel.known_max)
            .cloned()
            .collect();
        if let Some(last) = added.last() {
            sel.known_max = last.uid;
            sel.msgs.extend(added);
            out.extend_from_slice(format!("* {} EXISTS\r\n", sel.msgs.len()).as_bytes());
        }
        self.out = out;
    }

    fn changed(&self) {
        if let Some(user) = &self.user {
            self.relay.events.mailbox_changed(user);
        }
    }

    async fn dispatch<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        body: CommandBody<'_>,
    ) -> Result<(Reply, Flow), Fail> {
        use CommandBody as C;
        let cont = |r: Reply| Ok((r, Flow::Continue));
        // Any state (RFC 9051 §6.1).
        match &body {
            C::Capability => {
                let caps = self.caps();
                self.untagged(&format!("CAPABILITY {caps}"));
                return cont(ok("Capability completed"));
            }
            C::Noop => return cont(ok("NOOP completed")),
            C::Logout => {
                self.untagged("BYE Logging out");
                return Ok((ok("Logout completed"), Flow::Close));
            }
            // RFC 2971: no version, nothing about the host.
            C::Id { .. } => {
                self.untagged("ID (\"name\" \"Relaybox\")");
                return cont(ok("ID completed"));
            }
            _ => {}
        }
        if self.user.is_none() {
            return match body {
                C::StartTLS => {
                    if self.tls {
                        return cont(bad("TLS is already active"));
                    }
                    if !self.can_starttls {
                        return cont(bad("STARTTLS is not available on this connection"));
                    }
                    Ok((ok("Begin TLS negotiation now"), Flow::StartTls))
                }
                C::Login { username, password } => {
                    let r = self
                        .login(username.as_ref(), password.declassify().as_ref())
                        .await?;
                    cont(r)
                }
                C::Authenticate {
                    mechanism,
                    initial_response,
                } => {
                    let r = self
                        .authenticate(
                            io,
                            &mechanism,
                            initial_response.map(|s| s.declassify().to_vec()),
                        )
                        .await?;
                    cont(r)
                }
                _ => cont(bad("Not authenticated: command not allowed in this state")),
            };
        }
        let user = self.user.clone().unwrap_or_default();
        match body {
            C::StartTLS | C::Login { .. } | C::Authenticate { .. } => {
                cont(bad("Already authenticated"))
            }
            C::Enable { .. } => {
                // Nothing this server offers needs enabling (no CONDSTORE, no UTF8=ACCEPT).
                self.untagged("ENABLED");
                cont(ok("Enabled"))
            }
            C::Namespace => {
                self.untagged(&format!("NAMESPACE ((\"\" \"{DELIMITER}\")) NIL NIL"));
                cont(ok("Namespace completed"))
            }
            C::List {
                reference,
                mailbox_wildcard,
            } => cont(self.list(&user, &reference, &mailbox_wildcard, false)?),
            C::Lsub {
                reference,
                mailbox_wildcard,
            } => cont(self.list(&user, &reference, &mailbox_wildcard, true)?),
            C::Create { mailbox } => cont(self.create(&user, &mailbox).await?),
            C::Delete { mailbox } => cont(self.delete(&user, &mailbox).await?),
            C::Rename { from, to } => cont(self.rename(&user, &from, &to).await?),
            C::Subscribe { mailbox } => cont(self.subscribe(&user, &mailbox, true).await?),
            C::Unsubscribe { mailbox } => cont(self.subscribe(&user, &mailbox, false).await?),
            C::Status {
                mailbox,
                item_names,
            } => cont(self.status(&user, &mailbox, &item_names)?),
            C::Append {
                mailbox,
                flags,
                date,
                message,
            } => {
                // A literal imap-codec did not leave in the command buffer: copied.
                let (name, flags) = match (mailbox_name(&mailbox), to_flags(&flags)) {
                    (Ok(n), Ok(f)) => (n, f),
                    (Err(r), _) | (_, Err(r)) => return cont(r),
                };
                let data: &[u8] = match &message {
                    LiteralOrLiteral8::Literal(l) => l.data(),
                    LiteralOrLiteral8::Literal8(l) => &l.data,
                };
                let date = date.map(|d| d.as_ref().timestamp().max(0) as u64);
                cont(self.append(&user, name, flags, date, data.to_vec()).await?)
            }
            C::Select { mailbox, .. } => cont(self.select(&user, &mailbox, false)?),
            C::Examine { mailbox, .. } => cont(self.select(&user, &mailbox, true)?),
            C::GetQuotaRoot { mailbox } => {
                let name = match mailbox_name(&mailbox) {
                    Ok(n) => n,
                    Err(r) => return cont(r),
                };
                if self.relay.store.mailbox(&user, &name)?.is_none() {
                    return cont(no("Mailbox doesn't exist").code("NONEXISTENT"));
                }
                let mut line = b"* QUOTAROOT ".to_vec();
                mailbox_out(&mut line, &name);
                line.extend_from_slice(format!(" \"{QUOTA_ROOT}\"\r\n").as_bytes());
                self.out.extend_from_slice(&line);
                self.quota_line(&user)?;
                cont(ok("Getquotaroot completed"))
            }
            C::GetQuota { root } => {
                let root = String::from_utf8_lossy(root.as_ref()).to_string();
                if root != QUOTA_ROOT && !root.is_empty() {
                    return cont(no("Quota root does not exist").code("NONEXISTENT"));
                }
                self.quota_line(&user)?;
                cont(ok("Getquota completed"))
            }
            C::SetQuota { .. } => cont(no("Permission denied").code("NOPERM")),
            C::GetMetadata {
                mailbox, entries, ..
            } => cont(self.get_metadata(&user, &mailbox, entries.as_ref()).await?),
            C::SetMetadata {
                mailbox,
                entry_values,
            } => cont(
                self.set_metadata(&user, &mailbox, entry_values.as_ref())
                    .await?,
            ),
            C::Idle => self.idle(io).await,
            // RFC 4978 §3: only when offered (IMAP-2: `imap_compress`), once.
            C::Compress { .. } if self.relay.config.imap_compress => {
                if self.compressed {
                    return cont(no("Compression already active").code("COMPRESSIONACTIVE"));
                }
                Ok((ok("DEFLATE active"), Flow::Compress))
            }
            C::Compress { .. } | C::Sort { .. } | C::Thread { .. } => {
                cont(bad("Error in IMAP command: unknown command"))
            }
            body => {
                if self.selected.is_none() {
                    return cont(bad("No mailbox selected"));
                }
                Box::pin(self.selected_command(io, &user, body)).await
            }
        }
    }

    /// Commands of the selected state (RFC 9051 §6.4).
    async fn selected_command<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        user: &str,
        body: CommandBody<'_>,
    ) -> Result<(Reply, Flow), Fail> {
        use CommandBody as C;
        let r = match body {
            C::Check => ok("Check completed"),
            C::Close => {
                if let Some(sel) = self.selected.take()
                    && !sel.read_only
                {
                    // RFC 9051 §6.4.1: expunge silently.
                    let removed = self.relay.store.expunge(user, &sel.name, None).await?;
                    if !removed.is_empty() {
                        self.changed();
                    }
                }
                ok("Close completed")
            }
            C::Unselect => {
                self.selected = None;
                ok("Unselect completed")
            }
            C::Expunge => self.expunge(user, None).await?,
            C::ExpungeUid { sequence_set } => self.expunge(user, Some(&sequence_set)).await?,
            C::Search {
                charset,
                criteria,
                uid,
            } => {
                if let Some(cs) = &charset {
                    let cs: &str = cs.as_ref();
                    if !cs.eq_ignore_ascii_case("UTF-8") && !cs.eq_ignore_ascii_case("US-ASCII") {
                        return Ok((
                            no("Unsupported charset").code("BADCHARSET (US-ASCII UTF-8)"),
                            Flow::Continue,
                        ));
                    }
                }
                let criteria: Vec<SearchKey<'static>> = criteria
                    .as_ref()
                    .iter()
                    .cloned()
                    .map(imap_codec::imap_types::IntoStatic::into_static)
                    .collect();
                self.search(user, criteria, uid).await?
            }
            C::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                ..
            } => {
                self.fetch(io, user, &sequence_set, &macro_or_item_names, uid)
                    .await?
            }
            C::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                ..
            } => {
                self.store(user, &sequence_set, kind, response, &flags, uid)
                    .await?
            }
            C::Copy {
                sequence_set,
                mailbox,
                uid,
            } => self.copy(user, &sequence_set, &mailbox, uid, false).await?,
            C::Move {
                sequence_set,
                mailbox,
                uid,
            } => self.copy(user, &sequence_set, &mailbox, uid, true).await?,
            _ => bad("Error in IMAP command: unknown command"),
        };
        Ok((r, Flow::Continue))
    }

    // ---- authentication ------------------------------------------------------------

    async fn login(&mut self, user: &[u8], pass: &[u8]) -> Result<Reply, Fail> {
        // ACC-1, RFC 9051 §6.2.3: LOGINDISABLED without TLS.
        if !self.tls {
            return Ok(no(
                "Plaintext authentication disallowed on non-secure (SSL/TLS) connections.",
            )
            .code("PRIVACYREQUIRED"));
        }
        let (Ok(user), Ok(pass)) = (std::str::from_utf8(user), std::str::from_utf8(pass)) else {
            return Ok(self.login_failed());
        };
        match self.relay.auth.login(user, pass, self.client).await {
            Ok(address) => {
                self.logged_in(address).await;
                Ok(ok("Logged in").code(format!("CAPABILITY {}", self.caps())))
            }
            Err(AuthError::Failed) => Ok(self.login_failed()),
            Err(AuthError::Temporary(e)) => {
                tracing::warn!("login: {e}");
                Ok(no("Temporary authentication failure").code("UNAVAILABLE"))
            }
            // RFC 5530 §3: UNAVAILABLE, a temporary refusal; the password was not checked.
            Err(AuthError::TooMany(_)) => Ok(no(
                "Too many login attempts from your address, try again later",
            )
            .code("UNAVAILABLE")),
        }
    }

    fn login_failed(&mut self) -> Reply {
        self.failed_logins += 1;
        tracing::debug!("authentication failed");
        if self.failed_logins >= MAX_FAILED_LOGINS {
            self.bye_after = Some("Too many invalid authentication attempts");
        }
        no("Authentication failed.").code("AUTHENTICATIONFAILED")
    }

    async fn logged_in(&mut self, address: String) {
        // Subscribe first so no change after the login is missed.
        self.events = Some(self.relay.events.subscribe(&address));
        // LL-1: the day of the last IMAP login (the store writes only on change).
        let day = self.relay.clock.unix_now() / 86_400 * 86_400;
        if let Err(e) = self.relay.store.set_last_login_day(&address, day).await {
            tracing::warn!("last login not recorded: {e}");
        }
        tracing::debug!("logged in");
        self.user = Some(address);
    }

    /// AUTHENTICATE PLAIN (RFC 4616) with SASL-IR (RFC 4959) or one continuation.
    async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        mechanism: &AuthMechanism<'_>,
        initial: Option<Vec<u8>>,
    ) -> Result<Reply, Fail> {
        if !self.tls {
            return Ok(no(
                "Plaintext authentication disallowed on non-secure (SSL/TLS) connections.",
            )
            .code("PRIVACYREQUIRED"));
        }
        if !matches!(mechanism, AuthMechanism::Plain) {
            return Ok(no("Unsupported authentication mechanism").code("CANNOT"));
        }
        let data = match initial {
            Some(d) => d,
            None => {
                self.out.extend_from_slice(b"+ \r\n");
                self.flush(io).await?;
                let read = self.inbuf.read_line(io, 16 * 1024);
                let line = match tokio::time::timeout(PREAUTH_TIMEOUT, read).await {
                    Ok(Ok(Some(line))) => line,
                    Ok(Ok(None)) => return Ok(bad("Line too long")),
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => return Err(WireError::Eof.into()),
                };
                let line = line.strip_suffix(b"\n").unwrap_or(&line);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line == b"*" {
                    return Ok(bad("Authentication canceled"));
                }
                match base64::engine::general_purpose::STANDARD.decode(line) {
                    Ok(d) => d,
                    Err(_) => return Ok(bad("Invalid base64 data")),
                }
            }
        };
        let mut parts = data.split(|&b| b == 0);
        let (Some(authz), Some(authc), Some(pass), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Ok(self.login_failed());
        };
        if !authz.is_empty() && authz != authc {
            return Ok(self.login_failed());
        }
        let (authc, pass) = (authc.to_vec(), pass.to_vec());
        self.login(&authc, &pass).await
    }

    // ---- mailboxes -----------------------------------------------------------------

    fn list(
        &mut self,
        user: &str,
        reference: &Mailbox<'_>,
        pattern: &ListMailbox<'_>,
        lsub: bool,
    ) -> Result<Reply, Fail> {
        let reference: Vec<u8> = match reference {
            Mailbox::Inbox => b"INBOX".to_vec(),
            Mailbox::Other(o) => o.inner().as_ref().to_vec(),
        };
        let pattern: Vec<u8> = match pattern {
            ListMailbox::Token(t) => t.as_ref().to_vec(),
            ListMailbox::String(s) => s.as_ref().to_vec(),
        };
        let verb = if lsub { "LSUB" } else { "LIST" };
        if pattern.is_empty() && !lsub {
            // RFC 9051 §6.3.9: the delimiter and root.
            self.untagged(&format!("LIST (\\Noselect) \"{DELIMITER}\" \"\""));
            return Ok(ok("List completed"));
        }
        let mut full = reference;
        full.extend_from_slice(&pattern);
        let boxes = self.relay.store.mailboxes(user)?;
        let names: Vec<&str> = boxes.iter().map(|b| b.name.as_str()).collect();
        for mb in &boxes {
            if lsub && !mb.subscribed {
                continue;
            }
            if !list_match(&full, mb.name.as_bytes()) {
                continue;
            }
            let prefix = format!("{}{DELIMITER}", mb.name);
            let children = names.iter().any(|n| n.starts_with(&prefix));
            let mut attrs = vec![if children {
                "\\HasChildren"
            } else {
                "\\HasNoChildren"
            }];
            if let Some(su) = special_use(&mb.name) {
                attrs.push(su);
            }
            let mut line = format!("* {verb} ({}) \"{DELIMITER}\" ", attrs.join(" ")).into_bytes();
            mailbox_out(&mut line, &mb.name);
            line.extend_from_slice(b"\r\n");
            self.out.extend_from_slice(&line);
        }
        Ok(ok(if lsub {
            "Lsub completed"
        } else {
            "List completed"
        }))
    }

    async fn create(&mut self, user: &str, mailbox: &Mailbox<'_>) -> Result<Reply, Fail> {
        let name = match mailbox_name(mailbox) {
            Ok(n) => n,
            Err(r) => return Ok(r),
        };
        let name = name.strip_suffix(DELIMITER).unwrap_or(&name).to_string();
        if name.eq_ignore_ascii_case("INBOX") {
            return Ok(no("Mailbox already exists").code("ALREADYEXISTS"));
        }
        if !valid_new_name(&name) {
            return Ok(no("Invalid mailbox name").code("CANNOT"));
        }
        match self.relay.store.create_mailbox(user, &name).await {
            Ok(()) => {
                self.changed();
                Ok(ok("Create completed"))
            }
            Err(StoreError::MailboxExists) => {
                Ok(no("Mailbox already exists").code("ALREADYEXISTS"))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&mut self, user: &str, mailbox: &Mailbox<'_>) -> Result<Reply, Fail> {
        let name = match mailbox_name(mailbox) {
            Ok(n) => n,
            Err(r) => return Ok(r),
        };
        if name == "INBOX" {
            return Ok(no("INBOX can't be deleted").code("CANNOT"));
        }
        match self.relay.store.delete_mailbox(user, &name).await {
            Ok(()) => {
                if self.selected.as_ref().is_some_and(|s| s.name == name) {
                    self.selected = None;
                }
                self.changed();
                Ok(ok("Delete completed"))
            }
            Err(StoreError::NoMailbox) => Ok(no("Mailbox doesn't exist").code("NONEXISTENT")),
            Err(e) => Err(e.into()),
        }
    }

    async fn rename(
        &mut self,
        user: &str,
        from: &Mailbox<'_>,
        to: &Mailbox<'_>,
    ) -> Result<Reply, Fail> {
        let (from, to) = match (mailbox_name(from), mailbox_name(to)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(r), _) | (_, Err(r)) => return Ok(r),
        };
        if from == "INBOX" {
            return Ok(no("Renaming INBOX is not supported").code("CANNOT"));
        }
        if to == "INBOX" {
            return Ok(no("Mailbox already exists").code("ALREADYEXISTS"));
        }
        if !valid_new_name(&to) {
            return Ok(no("Invalid mailbox name").code("CANNOT"));
        }
        match self.relay.store.rename_mailbox(user, &from, &to).await {
            Ok(()) => {
                if let Some(sel) = self.selected.as_mut().filter(|s| s.name == from) {
                    sel.name = to;
                }
                self.changed();
                Ok(ok("Rename completed"))
            }
            Err(StoreError::NoMailbox) => Ok(no("Mailbox doesn't exist").code("NONEXISTENT")),
            Err(StoreError::MailboxExists) => {
                Ok(no("Mailbox already exists").code("ALREADYEXISTS"))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn subscribe(
        &mut self,
        user: &str,
        mailbox: &Mailbox<'_>,
        on: bool,
    ) -> Result<Reply, Fail> {
        let name = match mailbox_name(mailbox) {
            Ok(n) => n,
            Err(r) => return Ok(r),
        };
        let done = if on {
            "Subscribe completed"
        } else {
            "Unsubscribe completed"
        };
        match self.relay.store.set_subscribed(user, &name, on).await {
            Ok(()) => Ok(ok(done)),
            // Unsubscribing a name that does not exist is harmless.
            Err(StoreError::NoMailbox) if !on => Ok(ok(done)),
            Err(StoreError::NoMailbox) => Ok(no("Mailbox doesn't exist").code("NONEXISTENT")),
            Err(e) => Err(e.into()),
        }
    }

    fn status(
        &mut self,
        user: &str,
        mailbox: &Mailbox<'_>,
        items: &[StatusDataItemName],
    ) -> Result<Reply, Fail> {
        let name = match mailbox_name(mailbox) {
            Ok(n) => n,
            Err(r) => return Ok(r),
        };
        let (info, msgs) = match self.relay.store.messages(user, &name) {
            Ok(x) => x,
            Err(StoreError::NoMailbox) => {
                return Ok(no("Mailbox doesn't exist").code("NONEXISTENT"));
            }
            Err(e) => return Err(e.into()),
        };
        let count = |bit: u8, set: bool| msgs.iter().filter(|m| m.flags.has(bit) == set).count();
        let mut parts = Vec::new();
        for item in items {
            let s = match item {
                StatusDataItemName::Messages => format!("MESSAGES {}", msgs.len()),
                StatusDataItemName::Recent => "RECENT 0".to_string(),
                StatusDataItemName::UidNext => format!("UIDNEXT {}", info.uid_next),
                StatusDataItemName::UidValidity => format!("UIDVALIDITY {}", info.uid_validity),
                StatusDataItemName::Unseen => format!("UNSEEN {}", count(Flags::SEEN, false)),
                StatusDataItemName::Deleted => format!("DELETED {}", count(Flags::DELETED, true)),
                _ => continue,
            };
            parts.push(s);
        }
        let mut line = b"* STATUS ".to_vec();
        mailbox_out(&mut line, &name);
        line.extend_from_slice(format!(" ({})\r\n", parts.join(" ")).as_bytes());
        self.out.extend_from_slice(&line);
        Ok(ok("Status completed"))
    }

    async fn append(
        &mut self,
        user: &str,
        name: String,
        flags: Flags,
        date: Option<u64>,
        data: Vec<u8>,
    ) -> Result<Reply, Fail> {
        let config = &self.relay.config;
        if data.len() as u64 > config.max_message_size {
            return Ok(no("Message too large").code("TOOBIG"));
        }
        // QUOTA-1: the account limit counts APPENDed messages too.
        if self.relay.store.usage(user)? + data.len() as u64 > config.max_mailbox_size {
            return Ok(no("Quota exceeded (mailbox for user is full)").code("OVERQUOTA"));
        }
        let date = date.unwrap_or_else(|| self.relay.clock.unix_now());
        if self.relay.store.mailbox(user, &name)?.is_none() {
            return Ok(no("Mailbox doesn't exist").code("TRYCREATE"));
        }
        // The same one parse as every message that arrives (DESIGN.md principle 7).
        let bytes = crate::message::normalize_line_endings(data);
        let msg = match crate::message::Parsed::parse(bytes) {
            Ok(m) => m,
            Err(why) => return Ok(no(&format!("Message refused: {why}")).code("PARSE")),
        };
        match self.relay.store.append(user, &name, flags, date, msg).await {
            Ok((validity, uid)) => {
                self.changed();
                // RFC 4315 APPENDUID.
                Ok(ok("Append completed").code(format!("APPENDUID {validity} {uid}")))
            }
            Err(StoreError::NoMailbox) => Ok(no("Mailbox doesn't exist").code("TRYCREATE")),
            Err(e) => Err(e.into()),
        }
    }

    fn select(
        &mut self,
        user: &str,
        mailbox: &Mailbox<'_>,
        read_only: bool,
    ) -> Result<Reply, Fail> {
        // RFC 9051 §6.3.2: a SELECT deselects first, even when it fails.
        self.selected = None;
        let name = match mailbox_name(mailbox) {
            Ok(n) => n,
            Err(r) => return Ok(r),
        };
        if let Some(rx) = &mut self.events {
            rx.borrow_and_update();
        }
        let (info, msgs) = match self.relay.store.messages(user, &name) {
            Ok(x) => x,
            Err(StoreError::NoMailbox) => {
                return Ok(no("Mailbox doesn't exist").code("NONEXISTENT"));
            }
            Err(e) => return Err(e.into()),
        };
        let mut keywords: Vec<&str> = Vec::new();
        for m in &msgs {
            for k in &m.flags.keywords {
                if !keywords.iter().any(|x| x.eq_ignore_ascii_case(k)) {
                    keywords.push(k);
                }
            }
        }
        let kw = keywords.iter().map(|k| format!(" {k}")).collect::<String>();
        self.untagged(&format!(
            "FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft{kw})"
        ));
        self.untagged(&format!(
            "OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft{kw} \\*)] Flags permitted."
        ));
        self.untagged(&format!("{} EXISTS", msgs.len()));
        self.untagged("0 RECENT");
        if let Some(i) = msgs.iter().position(|m| !m.flags.has(Flags::SEEN)) {
            self.untagged(&format!("OK [UNSEEN {}] First unseen.", i + 1));
        }
        self.untagged(&format!(
            "OK [UIDVALIDITY {}] UIDs valid",
            info.uid_validity
        ));
        self.untagged(&format!(
            "OK [UIDNEXT {}] Predicted next UID",
            info.uid_next
        ));
        let known_max = msgs.last().map(|m| m.uid).unwrap_or(0);
        self.selected = Some(Selected {
            name,
            read_only,
            msgs,
            known_max,
            pending_expunge: false,
        });
        Ok(if read_only {
            ok("Examine completed").code("READ-ONLY")
        } else {
            ok("Select completed").code("READ-WRITE")
        })
    }

    // ---- selected state ------------------------------------------------------------

    /// Indices of the messages a set names, or the BAD reply.
    fn indices(&self, set: &SequenceSet, uid: bool) -> Result<Vec<usize>, Reply> {
        let Some(sel) = &self.selected else {
            return Err(bad("No mailbox selected"));
        };
        if uid {
            Ok(sequence::uid_indices(set, &sel.uids()))
        } else {
            sequence::seq_indices(set, sel.msgs.len())
                .map_err(|_| bad("Invalid message sequence number"))
        }
    }

    async fn fetch<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        user: &str,
        set: &SequenceSet,
        names: &MacroOrMessageDataItemNames<'_>,
        uid: bool,
    ) -> Result<Reply, Fail> {
        let plan = match fetch::plan(names, uid) {
            Ok(p) => p,
            Err(e) => return Ok(bad(e)),
        };
        let indices = match self.indices(set, uid) {
            Ok(i) => i,
            Err(r) => return Ok(r),
        };
        let Some(sel) = &mut self.selected else {
            return Ok(bad("No mailbox selected"));
        };
        let name = sel.name.clone();
        // RFC 9051 §6.4.5: BODY[] (not PEEK) sets \Seen, except in EXAMINE.
        let mut seen_now = HashSet::new();
        if plan.sets_seen && !sel.read_only {
            let need: Vec<u32> = indices
                .iter()
                .map(|&i| &sel.msgs[i])
                .filter(|m| !m.flags.has(Flags::SEEN))
                .map(|m| m.uid)
                .collect();
            if !need.is_empty() {
                let seen = Flags {
                    bits: Flags::SEEN,
                    keywords: Vec::new(),
                };
                let metas = self
                    .relay
                    .store
                    .store_flags(user, &name, need, FlagOp::Add, seen)
                    .await?;
                for m in metas {
                    if let Some(j) = sel.index_of(m.uid) {
                        sel.msgs[j].flags = m.flags;
                        seen_now.insert(m.uid);
                    }
                }
            }
        }
        for i in indices {
            let Some(meta) = self.selected.as_ref().map(|s| s.msgs[i].clone()) else {
                break;
            };
            // A big message is held once while it is sent: reserved in the memory budget.
            let mut memory = self.relay.memory.empty();
            if plan.needs_body
                && meta.size >= fetch::STREAM_AT as u64
                && !memory.grow_to(meta.size, MEMORY_WAIT).await
            {
                crate::metrics::rejected(crate::metrics::Rejection::Busy);
                return Ok(no("Not enough memory right now, try again later").code("LIMIT"));
            }
            let msg = if plan.needs_body {
                match self.relay.store.message(user, &name, meta.uid)? {
                    Some(m) => Some(m),
                    // Expunged by another session, not yet reported: nothing to send.
                    None => continue,
                }
            } else {
                None
            };
            let mut resp = fetch::Response {
                text: std::mem::take(&mut self.out),
                refs: Vec::new(),
            };
            fetch::write_message(
                &mut resp,
                i as u32 + 1,
                &meta,
                msg.as_ref().map(|m| m.view()),
                &plan.items,
                seen_now.contains(&meta.uid),
            );
            self.out = resp.text;
            if let Some(msg) = &msg {
                // Big literals go to the connection from the message itself.
                let mut rest = std::mem::take(&mut self.out);
                let mut done = 0;
                for (at, range) in resp.refs {
                    self.out.extend_from_slice(&rest[done..at]);
                    self.flush(io).await?;
                    self.write_direct(io, &msg.bytes()[range]).await?;
                    done = at;
                }
                rest.drain(..done);
                self.out.extend_from_slice(&rest);
            }
            if self.out.len() > FLUSH_AT {
                self.flush(io).await?;
            }
        }
        if !seen_now.is_empty() {
            self.changed();
        }
        Ok(ok("Fetch completed"))
    }

    async fn store(
        &mut self,
        user: &str,
        set: &SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flags: &[Flag<'_>],
        uid: bool,
    ) -> Result<Reply, Fail> {
        let indices = match self.indices(set, uid) {
            Ok(i) => i,
            Err(r) => return Ok(r),
        };
        let flags = match to_flags(flags) {
            Ok(f) => f,
            Err(r) => return Ok(r),
        };
        let Some(sel) = &mut self.selected else {
            return Ok(bad("No mailbox selected"));
        };
        if sel.read_only {
            return Ok(no("Mailbox is read-only"));
        }
        let uids: Vec<u32> = indices.iter().map(|&i| sel.msgs[i].uid).collect();
        let op = match kind {
            StoreType::Replace => FlagOp::Replace,
            StoreType::Add => FlagOp::Add,
            StoreType::Remove => FlagOp::Remove,
        };
        let name = sel.name.clone();
        let metas = self
            .relay
            .store
            .store_flags(user, &name, uids, op, flags)
            .await?;
        let Some(sel) = &mut self.selected else {
            return Ok(ok("Store completed"));
        };
        let mut out = std::mem::take(&mut self.out);
        for m in metas {
            if let Some(j) = sel.index_of(m.uid) {
                sel.msgs[j].flags = m.flags;
                if matches!(response, StoreResponse::Answer) {
                    out.extend_from_slice(format!("* {} FETCH (", j + 1).as_bytes());
                    if uid {
                        out.extend_from_slice(format!("UID {} ", m.uid).as_bytes());
                    }
                    out.extend_from_slice(b"FLAGS ");
                    flag_list(&mut out, &sel.msgs[j].flags);
                    out.extend_from_slice(b")\r\n");
                }
            }
        }
        self.out = out;
        self.changed();
        Ok(ok("Store completed"))
    }

    async fn copy(
        &mut self,
        user: &str,
        set: &SequenceSet,
        mailbox: &Mailbox<'_>,
        uid: bool,
        is_move: bool,
    ) -> Result<Reply, Fail> {
        let dest = match mailbox_name(mailbox) {
            Ok(n) => n,
            Err(r) => return Ok(r),
        };
        let indices = match self.indices(set, uid) {
            Ok(i) => i,
            Err(r) => return Ok(r),
        };
        let Some(sel) = &self.selected else {
            return Ok(bad("No mailbox selected"));
        };
        if is_move && sel.read_only {
            return Ok(no("Mailbox is read-only"));
        }
        if self.relay.store.mailbox(user, &dest)?.is_none() {
            return Ok(no("Mailbox doesn't exist").code("TRYCREATE"));
        }
        let uids: Vec<u32> = indices.iter().map(|&i| sel.msgs[i].uid).collect();
        let done = if is_move {
            "Move completed"
        } else {
            "Copy completed"
        };
        if uids.is_empty() {
            return Ok(ok(done));
        }
        let src = sel.name.clone();
        let (validity, pairs) = match self
            .relay
            .store
            .copy(user, &src, &dest, uids, is_move)
            .await
        {
            Ok(x) => x,
            Err(StoreError::NoMailbox) => return Ok(no("Mailbox doesn't exist").code("TRYCREATE")),
            Err(e) => return Err(e.into()),
        };
        self.changed();
        if pairs.is_empty() {
            return Ok(ok(done));
        }
        let from: Vec<u32> = pairs.iter().map(|p| p.0).collect();
        let to: Vec<u32> = pairs.iter().map(|p| p.1).collect();
        // RFC 4315 COPYUID.
        let code = format!("COPYUID {validity} {} {}", uid_set(&from), uid_set(&to));
        if !is_move {
            return Ok(ok(done).code(code));
        }
        // RFC 6851 §4.3: COPYUID in an untagged OK, then the EXPUNGEs.
        self.untagged(&format!("OK [{code}] Moved"));
        self.report_expunged(&from);
        Ok(ok(done))
    }

    /// `* n EXPUNGE` for the given UIDs (highest sequence number first) and drop them
    /// from the session's list.
    fn report_expunged(&mut self, uids: &[u32]) {
        let Some(sel) = &mut self.selected else {
            return;
        };
        let mut idx: Vec<usize> = uids.iter().filter_map(|u| sel.index_of(*u)).collect();
        idx.sort_unstable();
        let mut out = std::mem::take(&mut self.out);
        for &i in idx.iter().rev() {
            out.extend_from_slice(format!("* {} EXPUNGE\r\n", i + 1).as_bytes());
            sel.msgs.remove(i);
        }
        self.out = out;
    }

    async fn expunge(&mut self, user: &str, only: Option<&SequenceSet>) -> Result<Reply, Fail> {
        let Some(sel) = &self.selected else {
            return Ok(bad("No mailbox selected"));
        };
        if sel.read_only {
            return Ok(no("Mailbox is read-only"));
        }
        let only = only.map(|set| {
            let uids = sel.uids();
            let mut v: Vec<u32> = sequence::uid_indices(set, &uids)
                .into_iter()
                .map(|i| uids[i])
                .collect();
            v.sort_unstable();
            v
        });
        let name = sel.name.clone();
        let removed = self.relay.store.expunge(user, &name, only).await?;
        if !removed.is_empty() {
            self.report_expunged(&removed);
            self.changed();
        }
        Ok(ok("Expunge completed"))
    }

    /// SEARCH (RFC 9051 §6.4.4) as a heavy job with a work budget (`search::run`).
    async fn search(
        &mut self,
        user: &str,
        criteria: Vec<SearchKey<'static>>,
        uid: bool,
    ) -> Result<Reply, Fail> {
        let Some(sel) = &self.selected else {
            return Ok(bad("No mailbox selected"));
        };
        // RFC 5530 LIMIT: a bounded number of keys, whatever the command size allows.
        if search::count_keys(&criteria) > search::MAX_KEYS {
            return Ok(no("Too many search keys").code("LIMIT"));
        }
        let store = self.relay.store.clone();
        let (account, mailbox, msgs) = (user.to_string(), sel.name.clone(), sel.msgs.clone());
        let outcome = crate::work::run(move || {
            let mut budget = crate::work::Budget::new(search::WORK_UNITS);
            search::run(
                &store,
                &account,
                &mailbox,
                &msgs,
                &criteria,
                uid,
                &mut budget,
            )
        })
        .await;
        let hits = match outcome {
            None => {
                return Ok(no("Internal error occurred. Try again later.").code("UNAVAILABLE"));
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Err(crate::work::OverBudget))) => {
                tracing::info!("search stopped: over the work limit");
                return Ok(no("Search too expensive, narrow it down").code("LIMIT"));
            }
            Some(Ok(Ok(hits))) => hits,
        };
        let mut line = String::from("SEARCH");
        for h in hits {
            line.push_str(&format!(" {h}"));
        }
        self.untagged(&line);
        Ok(ok("Search completed"))
    }

    // ---- IDLE ----------------------------------------------------------------------

    /// RFC 2177 IDLE: report changes as they happen (IMAP-5), without polling, until
    /// DONE or the autologout time.
    async fn idle<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
    ) -> Result<(Reply, Flow), Fail> {
        self.out.extend_from_slice(b"+ idling\r\n");
        if self.selected.is_some() {
            self.sync(true);
        }
        self.flush(io).await?;
        let mut rx = self.events.take();
        let result = self.idle_loop(io, &mut rx).await;
        self.events = rx;
        result
    }

    async fn idle_loop<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        rx: &mut Option<watch::Receiver<u64>>,
    ) -> Result<(Reply, Flow), Fail> {
        let deadline = tokio::time::Instant::now() + AUTOLOGOUT;
        let mut events_open = rx.is_some();
        loop {
            if let Some(line) = self.inbuf.take_line() {
                let line = line.strip_suffix(b"\n").unwrap_or(&line);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                return Ok(if line.eq_ignore_ascii_case(b"DONE") {
                    (ok("Idle completed"), Flow::Continue)
                } else {
                    (bad("Expected DONE"), Flow::Continue)
                });
            }
            if self.inbuf.len() > 1024 {
                self.untagged("BYE Expected DONE");
                return Ok((bad("Expected DONE"), Flow::Close));
            }
            let mut tmp = vec![0u8; 1024];
            let changed = async {
                match rx.as_mut() {
                    Some(rx) if events_open => rx.changed().await.is_ok(),
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                r = io.read(&mut tmp) => match r {
                    Ok(0) | Err(_) => return Err(WireError::Eof.into()),
                    Ok(n) => self.inbuf.push(&tmp[..n]),
                },
                still_open = changed => {
                    if !still_open {
                        events_open = false;
                        continue;
                    }
                    if let Some(rx) = rx.as_mut() {
                        rx.borrow_and_update();
                    }
                    self.sync(true);
                    self.flush(io).await?;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    self.untagged("BYE Autologout; idle for too long");
                    let _ = self.flush(io).await;
                    return Err(WireError::Eof.into());
                }
            }
        }
    }

    // ---- QUOTA and METADATA --------------------------------------------------------

    /// QUOTA-4 / RFC 9208: STORAGE usage and limit in KiB.
    fn quota_line(&mut self, user: &str) -> Result<(), Fail> {
        let used = self.relay.store.usage(user)?.div_ceil(1024);
        let limit = self.relay.config.max_mailbox_size / 1024;
        self.untagged(&format!("QUOTA \"{QUOTA_ROOT}\" (STORAGE {used} {limit})"));
        Ok(())
    }

    /// GETMETADATA (RFC 5464 §4.2, spec §12, IMAP-8): every requested entry, values
    /// as literals, NIL when there is none.
    async fn get_metadata(
        &mut self,
        user: &str,
        mailbox: &Mailbox<'_>,
        entries: &[Entry<'_>],
    ) -> Result<Reply, Fail> {
        let name = match mailbox_name(mailbox) {
            Ok(n) => n,
            Err(r) => return Ok(r),
        };
        if !name.is_empty() && self.relay.store.mailbox(user, &name)?.is_none() {
            return Ok(no("Mailbox doesn't exist").code("NONEXISTENT"));
        }
        let now = self.relay.clock.unix_now();
        let mut line = b"* METADATA ".to_vec();
        mailbox_out(&mut line, &name);
        line.extend_from_slice(b" (");
        for (i, e) in entries.iter().enumerate() {
            let key = String::from_utf8_lossy(e.inner().as_ref()).to_string();
            let value = if name.is_empty() {
                metadata::server_entry(&self.relay, &key)
            } else if name == "INBOX" && key.eq_ignore_ascii_case(metadata::DEVICE_TOKEN) {
                let tokens = self.relay.store.device_tokens(user)?;
                let expired = metadata::expired_tokens(&tokens, now);
                if !expired.is_empty() {
                    // MD-1: pruned on read.
                    self.relay.store.remove_device_tokens(user, expired).await?;
                }
                metadata::token_value(&tokens, now)
            } else {
                None
            };
            if i > 0 {
                line.push(b' ');
            }
            astring(&mut line, e.inner().as_ref());
            line.push(b' ');
            match value {
                Some(v) => literal(&mut line, v.as_bytes()),
                None => line.extend_from_slice(b"NIL"),
            }
        }
        line.extend_from_slice(b")\r\n");
        self.out.extend_from_slice(&line);
        Ok(ok("Getmetadata completed"))
    }

    /// SETMETADATA (RFC 5464 §4.3, spec §12): only `/private/devicetoken` on INBOX.
    async fn set_metadata(
        &mut self,
        user: &str,
        mailbox: &Mailbox<'_>,
        values: &[EntryValue<'_>],
    ) -> Result<Reply, Fail> {
        let name = match mailbox_name(mailbox) {
            Ok(n) => n,
            Err(r) => return Ok(r),
        };
        let mut tokens = Vec::new();
        for ev in values {
            let key = String::from_utf8_lossy(ev.entry.inner().as_ref()).to_string();
            if name != "INBOX" || !key.eq_ignore_ascii_case(metadata::DEVICE_TOKEN) {
                return Ok(no("Permission denied").code("NOPERM"));
            }
            let value: Option<Vec<u8>> = match &ev.value {
                NString8::NString(n) => n.0.as_ref().map(|s| s.as_ref().to_vec()),
                NString8::Literal8(l) => Some(l.data.to_vec()),
            };
            match value {
                Some(v) if metadata::token_acceptable(&v) => tokens.push(v),
                Some(_) => return Ok(no("Invalid device token")),
                // Removing a token is not offered; NIL changes nothing.
                None => {}
            }
        }
        let now = self.relay.clock.unix_now();
        for t in tokens {
            let t = String::from_utf8_lossy(&t).to_string();
            self.relay.store.set_device_token(user, &t, now).await?;
        }
        // MD-1: pruned on write.
        let expired = metadata::expired_tokens(&self.relay.store.device_tokens(user)?, now);
        if !expired.is_empty() {
            self.relay.store.remove_device_tokens(user, expired).await?;
        }
        Ok(ok("Setmetadata completed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_patterns() {
        assert!(list_match(b"*", b"INBOX"));
        assert!(list_match(b"*", b"a.b"));
        assert!(list_match(b"%", b"Trash"));
        assert!(!list_match(b"%", b"a.b"));
        assert!(list_match(b"a.%", b"a.b"));
        assert!(list_match(b"inbox", b"INBOX"));
        assert!(!list_match(b"Inbox2", b"INBOX"));
        assert!(list_match(b"Sent*", b"Sent Messages"));
        assert!(!list_match(b"Trash", b"trash"));
    }

    #[test]
    fn flags_and_names() {
        assert!(valid_new_name("Trash"));
        assert!(valid_new_name("Sent Messages"));
        assert!(!valid_new_name("a*"));
        assert!(!valid_new_name(""));
        assert!(!valid_new_name("a\r\nb"));
        assert_eq!(special_use("Sent Messages"), Some("\\Sent"));
        assert_eq!(special_use("Other"), None);
    }
}
