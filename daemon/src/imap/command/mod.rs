//! The IMAP commands (RFC 9051 §6), one module per group, and [`Session::dispatch`],
//! which routes a parsed command by the session's state (RFC 9051 §3): any state,
//! not authenticated (`auth`), authenticated, selected.
//!
//! Most handlers are functions of the few handles they use ([`Ctx`]: store, config,
//! clock, events and the logged-in account), the session's output and, where they need
//! it, the selected mailbox; those that talk to the connection themselves (AUTHENTICATE's
//! continuation, FETCH's streamed literals, IDLE) are methods of the session.

pub mod append;
mod auth;
mod fetch;
mod idle;
mod mailbox;
mod metadata;
mod quota;
mod search;
mod select;
mod store;

use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::flag::Flag;
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::Code;
use tokio::io::{AsyncRead, AsyncWrite};

use super::encode::{Reply, Rfc5530};
use super::session::{Fail, Flow, Session};
use crate::clock::Clock;
use crate::config::Config;
use crate::events::Events;
use crate::store::{Flags, Store};

pub use mailbox::DELIMITER;

/// The handles a logged-in command uses, and the account it runs for.
pub struct Ctx<'a> {
    pub store: &'a Store,
    pub config: &'a Config,
    pub clock: &'a dyn Clock,
    pub events: &'a Events,
    pub user: &'a str,
}

impl Ctx<'_> {
    /// Tell the account's other sessions (and IDLE) that its mailboxes changed.
    pub fn changed(&self) {
        self.events.mailbox_changed(self.user);
    }
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

const UNKNOWN: &str = "Error in IMAP command: unknown command";

/// The reply to a command the parser refused (RFC 9051 §7.1.3: BAD for unknown commands
/// and for invalid arguments).
pub fn unparsable(bytes: &[u8]) -> Reply {
    let word = bytes
        .split(|&b| b == b' ' || b == b'\r' || b == b'\n')
        .nth(1)
        .map(|w| String::from_utf8_lossy(w).to_ascii_uppercase())
        .unwrap_or_default();
    if KNOWN.contains(&word.as_str()) {
        Reply::bad("Error in IMAP command: invalid arguments")
    } else {
        Reply::bad(UNKNOWN)
    }
}

/// A mailbox argument as a name.
fn mailbox_name(m: &Mailbox<'_>) -> Result<String, Reply> {
    match m {
        Mailbox::Inbox => Ok("INBOX".to_string()),
        Mailbox::Other(o) => String::from_utf8(o.inner().as_ref().to_vec())
            .map_err(|_| Reply::no("Invalid mailbox name").code(Rfc5530::Cannot)),
    }
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
            Flag::Extension(_) => return Err(Reply::bad("Invalid system flag")),
        }
    }
    Ok(f)
}

/// `Ok(reply)` or the early reply of a bad argument.
macro_rules! arg {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(reply) => return Ok(reply),
        }
    };
}
pub(crate) use arg;

impl Session<'_> {
    /// Run one parsed command: the handler for the session's state.
    pub(super) async fn dispatch<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        body: CommandBody<'_>,
    ) -> Result<(Reply, Flow), Fail> {
        use CommandBody as C;
        // Any state (RFC 9051 §6.1).
        let reply = match &body {
            C::Capability => {
                let caps = self.caps();
                self.out.capability(&caps);
                Some(Reply::ok("Capability completed"))
            }
            C::Noop => Some(Reply::ok("NOOP completed")),
            C::Logout => {
                self.out.bye("Logging out");
                return Ok((Reply::ok("Logout completed"), Flow::Close));
            }
            // RFC 2971: no version, nothing about the host.
            C::Id { .. } => {
                self.out.id("Relaybox");
                Some(Reply::ok("ID completed"))
            }
            _ => None,
        };
        if let Some(reply) = reply {
            return Ok((reply, Flow::Continue));
        }
        let Some(user) = self.user.clone() else {
            return self.not_authenticated(io, body).await;
        };
        let h = self.h;
        let ctx = Session::ctx(h, &user);
        let reply = match body {
            C::StartTLS | C::Login { .. } | C::Authenticate { .. } => {
                Reply::bad("Already authenticated")
            }
            C::Enable { .. } => {
                // Nothing this server offers needs enabling (no CONDSTORE, no UTF8=ACCEPT).
                self.out.enabled();
                Reply::ok("Enabled")
            }
            C::Namespace => {
                self.out.namespace(DELIMITER);
                Reply::ok("Namespace completed")
            }
            C::List {
                reference,
                mailbox_wildcard,
            } => mailbox::list(&ctx, &mut self.out, &reference, &mailbox_wildcard, false)?,
            C::Lsub {
                reference,
                mailbox_wildcard,
            } => mailbox::list(&ctx, &mut self.out, &reference, &mailbox_wildcard, true)?,
            C::Create { mailbox } => mailbox::create(&ctx, &mailbox).await?,
            C::Delete { mailbox } => mailbox::delete(&ctx, &mut self.selected, &mailbox).await?,
            C::Rename { from, to } => mailbox::rename(&ctx, &mut self.selected, &from, &to).await?,
            C::Subscribe { mailbox } => mailbox::subscribe(&ctx, &mailbox, true).await?,
            C::Unsubscribe { mailbox } => mailbox::subscribe(&ctx, &mailbox, false).await?,
            C::Status {
                mailbox,
                item_names,
            } => mailbox::status(&ctx, &mut self.out, &mailbox, &item_names)?,
            body @ C::Append { .. } => append::append_copied(&ctx, &body).await?,
            C::Select { mailbox, .. } => self.select(&ctx, &mailbox, false)?,
            C::Examine { mailbox, .. } => self.select(&ctx, &mailbox, true)?,
            C::GetQuotaRoot { mailbox } => quota::get_quota_root(&ctx, &mut self.out, &mailbox)?,
            C::GetQuota { root } => quota::get_quota(&ctx, &mut self.out, root.as_ref())?,
            C::SetQuota { .. } => Reply::no("Permission denied").code(Rfc5530::NoPerm),
            C::GetMetadata {
                mailbox, entries, ..
            } => metadata::get(h, &ctx, &mut self.out, &mailbox, entries.as_ref()).await?,
            C::SetMetadata {
                mailbox,
                entry_values,
            } => metadata::set(&ctx, &mailbox, entry_values.as_ref()).await?,
            C::Idle => return self.idle(io).await,
            // RFC 4978 §3: only when offered (IMAP-2: `imap_compress`), once.
            C::Compress { .. } if ctx.config.imap_compress => {
                if self.compressed {
                    Reply::no("Compression already active").code(Code::CompressionActive)
                } else {
                    return Ok((Reply::ok("DEFLATE active"), Flow::Compress));
                }
            }
            C::Compress { .. } | C::Sort { .. } | C::Thread { .. } => Reply::bad(UNKNOWN),
            body => Box::pin(self.selected_command(io, &ctx, body)).await?,
        };
        Ok((reply, Flow::Continue))
    }

    /// Commands of the selected state (RFC 9051 §6.4).
    async fn selected_command<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        ctx: &Ctx<'_>,
        body: CommandBody<'_>,
    ) -> Result<Reply, Fail> {
        use CommandBody as C;
        if self.selected.is_none() {
            return Ok(Reply::bad("No mailbox selected"));
        }
        match body {
            C::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                ..
            } => {
                self.fetch(io, ctx, &sequence_set, &macro_or_item_names, uid)
                    .await
            }
            C::Close => select::close(ctx, self.selected.take()).await,
            C::Unselect => {
                self.selected = None;
                Ok(Reply::ok("Unselect completed"))
            }
            body => {
                let (Some(sel), out) = (self.selected.as_mut(), &mut self.out) else {
                    return Ok(Reply::bad("No mailbox selected"));
                };
                match body {
                    C::Check => Ok(Reply::ok("Check completed")),
                    C::Expunge => store::expunge(ctx, out, sel, None).await,
                    C::ExpungeUid { sequence_set } => {
                        store::expunge(ctx, out, sel, Some(&sequence_set)).await
                    }
                    C::Search {
                        charset,
                        criteria,
                        uid,
                    } => {
                        search::search(ctx, out, sel, charset.as_ref(), criteria.as_ref(), uid)
                            .await
                    }
                    C::Store {
                        sequence_set,
                        kind,
                        response,
                        flags,
                        uid,
                        ..
                    } => {
                        store::store(ctx, out, sel, &sequence_set, kind, response, &flags, uid)
                            .await
                    }
                    C::Copy {
                        sequence_set,
                        mailbox,
                        uid,
                    } => store::copy(ctx, out, sel, &sequence_set, &mailbox, uid, false).await,
                    C::Move {
                        sequence_set,
                        mailbox,
                        uid,
                    } => store::copy(ctx, out, sel, &sequence_set, &mailbox, uid, true).await,
                    _ => Ok(Reply::bad(UNKNOWN)),
                }
            }
        }
    }
}
