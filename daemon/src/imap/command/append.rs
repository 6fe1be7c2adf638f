//! APPEND (RFC 9051 §6.3.12, RFC 4315 APPENDUID): a message stored as it arrived,
//! through the one parse every message gets (DESIGN.md principle 7). The message literal
//! is taken out of the command's own buffer where it lies there ([`in_place`]), so a
//! message as big as `max_message_size` is never copied.

use std::ops::Range;

use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_codec::imap_types::response::Code;

use super::{Ctx, arg, mailbox_name, to_flags};
use crate::imap::encode::{Reply, append_uid};
use crate::imap::session::Fail;
use crate::store::{Flags, StoreError};

/// Where an APPEND puts its message.
pub struct Target {
    name: String,
    flags: Flags,
    /// The internal date the client gave (RFC 9051 §6.3.12), Unix seconds.
    date: Option<u64>,
}

/// An APPEND whose message literal lies in the command's buffer.
pub struct InPlace {
    target: Target,
    range: Range<usize>,
}

impl InPlace {
    /// The message: the command's buffer cut down to the literal, without a copy.
    pub fn take_message(&self, mut frame: Vec<u8>) -> Vec<u8> {
        frame.truncate(self.range.end);
        frame.drain(..self.range.start);
        frame
    }
}

impl From<InPlace> for Target {
    fn from(p: InPlace) -> Target {
        p.target
    }
}

fn message_data<'a>(message: &'a LiteralOrLiteral8<'_>) -> &'a [u8] {
    match message {
        LiteralOrLiteral8::Literal(l) => l.data(),
        LiteralOrLiteral8::Literal8(l) => &l.data,
    }
}

/// The target of an APPEND, or the reply for a bad name or flag.
fn target<'b>(body: &'b CommandBody<'_>) -> Option<Result<(Target, &'b [u8]), Reply>> {
    let CommandBody::Append {
        mailbox,
        flags,
        date,
        message,
    } = body
    else {
        return None;
    };
    let parsed = mailbox_name(mailbox).and_then(|name| {
        let flags = to_flags(flags)?;
        let date = date.as_ref().map(|d| d.as_ref().timestamp().max(0) as u64);
        Ok((Target { name, flags, date }, message_data(message)))
    });
    Some(parsed)
}

/// An APPEND whose message literal lies in `frame` (the command's buffer); `Err` with
/// the reply for a bad name or flag. `None` when it is not an APPEND or the literal is
/// elsewhere.
pub fn in_place(body: &CommandBody<'_>, frame: &[u8]) -> Option<Result<InPlace, Reply>> {
    let (target, data) = match target(body)? {
        Ok(t) => t,
        Err(r) => return Some(Err(r)),
    };
    // Where the literal's bytes are, if they are the frame's own.
    let start = (data.as_ptr() as usize).checked_sub(frame.as_ptr() as usize)?;
    let end = start.checked_add(data.len())?;
    if end > frame.len() {
        return None;
    }
    Some(Ok(InPlace {
        target,
        range: start..end,
    }))
}

/// An APPEND whose literal imap-codec did not leave in the command buffer: copied.
pub async fn append_copied(ctx: &Ctx<'_>, body: &CommandBody<'_>) -> Result<Reply, Fail> {
    let Some(parsed) = target(body) else {
        return Ok(Reply::bad(super::UNKNOWN));
    };
    let (target, data) = arg!(parsed);
    let data = data.to_vec();
    append(ctx, target, data).await
}

/// Store `data` in the target mailbox (QUOTA-1, max_message_size, TRYCREATE).
pub async fn append(ctx: &Ctx<'_>, target: Target, data: Vec<u8>) -> Result<Reply, Fail> {
    let Target { name, flags, date } = target;
    if data.len() as u64 > ctx.config.max_message_size {
        return Ok(Reply::no("Message too large").code(Code::TooBig));
    }
    // QUOTA-1: the account limit counts APPENDed messages too.
    if crate::policy::quota::exceeds(
        ctx.store.usage(ctx.user)?,
        data.len() as u64,
        ctx.config.max_mailbox_size,
    ) {
        return Ok(Reply::no("Quota exceeded (mailbox for user is full)").code(Code::OverQuota));
    }
    let date = date.unwrap_or_else(|| ctx.clock.unix_now());
    if ctx.store.mailbox(ctx.user, &name)?.is_none() {
        return Ok(Reply::no("Mailbox doesn't exist").code(Code::TryCreate));
    }
    // The same one parse as every message that arrives (DESIGN.md principle 7).
    let bytes = crate::message::normalize_line_endings(data);
    let msg = match crate::message::Parsed::parse(bytes) {
        Ok(m) => m,
        Err(why) => return Ok(Reply::no(format!("Message refused: {why}")).code(Code::Parse)),
    };
    match ctx.store.append(ctx.user, &name, flags, date, msg).await {
        Ok((validity, uid)) => {
            ctx.changed();
            Ok(Reply::ok("Append completed").code(append_uid(validity, uid)))
        }
        Err(StoreError::NoMailbox) => Ok(Reply::no("Mailbox doesn't exist").code(Code::TryCreate)),
        Err(e) => Err(e.into()),
    }
}
