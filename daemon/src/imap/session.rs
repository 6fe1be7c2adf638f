//! One IMAP session (RFC 9051 §3 states; RFC 3501 IMAP4rev1 wire forms): the command
//! loop with its deadlines, parsing, the tagged reply, and the untagged updates from
//! other sessions and deliveries (events). The commands themselves are in `command`.

use std::net::IpAddr;
use std::time::Duration;

use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::response::Code;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::command::{self, Ctx};
use super::encode::{Out, Reply, Rfc5530};
use super::selected::Selected;
use super::wire::{self, Frame, InBuf, WireError};
use super::{Handles, capabilities};
use crate::store::StoreError;

/// RFC 9051 §5.4: at least 30 minutes after authentication (also bounds IDLE).
pub const AUTOLOGOUT: Duration = Duration::from_secs(30 * 60);
/// Before authentication the client gets less time.
pub const PREAUTH_TIMEOUT: Duration = Duration::from_secs(3 * 60);
/// A client that does not read its responses is dropped after this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Literals before login (LOGIN/AUTHENTICATE arguments) are small.
const PREAUTH_MAX_LITERAL: u64 = 8 * 1024;
/// How long a literal waits for room in the memory budget (`crate::memory`).
pub const MEMORY_WAIT: Duration = Duration::from_secs(20);

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

/// What the loop does after a command.
pub enum Flow {
    Continue,
    Close,
    StartTls,
    Compress,
}

/// Handler failures.
#[derive(Debug, thiserror::Error)]
pub enum Fail {
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

pub struct Session<'a> {
    pub(super) h: Handles<'a>,
    /// Issue 13: the client must be logged in by then (`imap_login_timeout`).
    login_deadline: tokio::time::Instant,
    pub(super) tls: bool,
    /// STARTTLS can be offered (a plain `Conn` that can be upgraded).
    pub(super) can_starttls: bool,
    /// The client's address: keys the login brake only, never logged (LOG-2).
    pub(super) client: IpAddr,
    pub(super) user: Option<String>,
    pub(super) events: Option<watch::Receiver<u64>>,
    pub(super) selected: Option<Selected>,
    pub(super) failed_logins: u32,
    /// COMPRESS=DEFLATE is active.
    pub(super) compressed: bool,
    /// Written after the tagged reply, then the connection closes.
    pub(super) bye_after: Option<&'static str>,
    pub(super) out: Out,
    pub(super) inbuf: InBuf,
}

impl<'a> Session<'a> {
    pub fn new(h: Handles<'a>, tls: bool, can_starttls: bool, client: IpAddr) -> Session<'a> {
        let login_deadline = tokio::time::Instant::now() + h.config.connections.imap_login_timeout;
        Session {
            h,
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
            out: Out::default(),
            inbuf: InBuf::default(),
        }
    }

    /// The capabilities to announce now (IMAP-1, IMAP-2).
    pub(super) fn caps(&self) -> Vec<&'static str> {
        let offer_compress = self.h.config.imap_compress && !self.compressed;
        capabilities(self.tls, self.user.is_some(), offer_compress)
    }

    /// `* OK [CAPABILITY ...] ready` (IMAP-1).
    pub fn greet(&mut self) {
        let caps = self.caps();
        self.out.greeting(&caps, "Relaybox ready.");
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

    /// The handles a logged-in command uses, for `user`.
    pub(super) fn ctx<'u>(h: Handles<'u>, user: &'u str) -> Ctx<'u> {
        Ctx {
            store: h.store,
            config: h.config,
            clock: h.clock.as_ref(),
            events: h.events,
            user,
        }
    }

    /// Write `data` to the connection as it is (after [`Session::flush`]).
    pub(super) async fn write_direct<S: AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        data: &[u8],
    ) -> Result<(), Fail> {
        match tokio::time::timeout(WRITE_TIMEOUT, io.write_all(data)).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(std::io::Error::other("write timeout").into()),
        }
    }

    pub(super) async fn flush<S: AsyncWrite + Unpin>(&mut self, io: &mut S) -> Result<(), Fail> {
        if self.out.is_empty() {
            return Ok(());
        }
        let mut out = self.out.take();
        let write = async {
            io.write_all(&out).await?;
            io.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(r) => r?,
            Err(_) => return Err(std::io::Error::other("write timeout").into()),
        }
        out.clear();
        self.out.restore(out);
        Ok(())
    }

    /// The command loop; returns when the session ends or STARTTLS was accepted.
    pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(&mut self, io: &mut S) -> Exit {
        loop {
            if self.flush(io).await.is_err() {
                return Exit::Close;
            }
            let max_msg = self.h.config.max_message_size;
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
            let mut memory = self.h.memory.empty();
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
                    self.out.bye("Autologout; no login in time");
                    let _ = self.flush(io).await;
                    return Exit::LoginDeadline;
                }
                Err(_) => {
                    self.out.bye("Autologout; idle for too long");
                    let _ = self.flush(io).await;
                    return Exit::Close;
                }
                Ok(Err(WireError::Flood)) => {
                    self.out.bye("Line too long");
                    let _ = self.flush(io).await;
                    return Exit::Close;
                }
                Ok(Err(e)) => {
                    tracing::debug!("connection ended: {e}");
                    return Exit::Close;
                }
                Ok(Ok(f)) => f,
            };
            let (tag, refusal) = match frame {
                Frame::Eof => return Exit::Close,
                Frame::Command(bytes) => match self.command(io, bytes).await {
                    Flow::Continue => continue,
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
                Frame::LineTooLong { tag } => (tag, Reply::bad("Line too long")),
                Frame::LiteralTooBig { tag, sync: true } => {
                    (tag, Reply::no("Literal too large").code(Code::TooBig))
                }
                Frame::LiteralTooBig { tag, sync: false } => {
                    (tag, Reply::bad("Literal too large").code(Code::TooBig))
                }
                Frame::Nul { tag } => (tag, Reply::bad("NUL byte in command")),
                Frame::NoMemory { tag } => {
                    crate::metrics::rejected(crate::metrics::Rejection::Busy);
                    let r =
                        Reply::no("Not enough memory for this literal right now, try again later")
                            .code(Rfc5530::Limit);
                    (tag, r)
                }
            };
            self.out.reply(tag.as_deref(), &refusal);
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
                let reply = command::unparsable(&bytes);
                self.out.reply(wire::tag_of(&bytes).as_deref(), &reply);
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
        // Issue 17: a logged-in session's command runs inside the moving gate, so the final
        // backup of `relaybox move` holds every change acknowledged before the switch (a
        // stored flag, an expunge, an append), and none is acknowledged after it: the
        // session ends instead. IDLE waits outside (it would hold the switch up).
        let moving = self.h.moving;
        let hold = match (&self.user, &cmd.body) {
            (Some(_), CommandBody::Idle) | (None, _) => None,
            (Some(_), _) => Some(moving.hold().await),
        };
        if hold.as_ref().is_some_and(|h| h.is_some()) {
            let text = crate::auth::MOVED_TEXT;
            self.out
                .reply(Some(&tag), &Reply::no(text).code(Rfc5530::Unavailable));
            self.out.bye(text);
            return Flow::Close;
        }
        let result = match (&self.user, command::append::in_place(&cmd.body, &bytes)) {
            // APPEND of a logged-in user: the message is taken out of the command's own
            // buffer, not copied (it may be as big as max_message_size).
            (Some(user), Some(Ok(args))) => {
                let user = user.clone();
                drop(cmd);
                let message = args.take_message(bytes);
                let ctx = Self::ctx(self.h, &user);
                command::append::append(&ctx, args.into(), message)
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
                    Reply::no("Internal error occurred. Try again later.")
                        .code(Rfc5530::Unavailable),
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
        self.out.reply(Some(&tag), &reply);
        if let Some(bye) = self.bye_after.take() {
            self.out.bye(bye);
            return Flow::Close;
        }
        if self.account_removed() {
            self.out.bye(self.ended_text());
            return Flow::Close;
        }
        flow
    }

    /// Why a logged-in session ends when its events closed: its account was removed, or
    /// the relay moved (issue 17).
    pub(super) fn ended_text(&self) -> &'static str {
        if self.h.moving.is_moving() {
            crate::auth::MOVED_TEXT
        } else {
            "Account removed"
        }
    }

    /// The logged-in account was removed: its events closed ([`crate::events::Events::account_removed`]).
    pub(super) fn account_removed(&self) -> bool {
        self.user.is_some()
            && self
                .events
                .as_ref()
                .is_some_and(|rx| rx.has_changed().is_err())
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

    /// Re-read the selected mailbox and report what changed ([`Selected::update`]).
    pub(super) fn sync(&mut self, allow_expunge: bool) {
        if let Some(rx) = &mut self.events {
            rx.borrow_and_update();
        }
        let (Some(user), Some(sel)) = (&self.user, &mut self.selected) else {
            return;
        };
        let fresh = match self.h.store.messages(user, &sel.name) {
            Ok((_, m)) => m,
            Err(StoreError::NoMailbox) => Vec::new(),
            Err(e) => {
                tracing::warn!("store error: {e}");
                return;
            }
        };
        sel.update(&fresh, allow_expunge, &mut self.out);
    }
}
