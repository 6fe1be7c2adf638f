//! GETMETADATA and SETMETADATA (RFC 5464; spec §12, IMAP-8, MD-1): the server entries
//! on `""` and the device tokens on INBOX; the values and rules are `imap::metadata`'s.

use imap_codec::imap_types::core::NString8;
use imap_codec::imap_types::extensions::metadata::{Entry, EntryValue};
use imap_codec::imap_types::mailbox::Mailbox;

use super::{Ctx, arg, mailbox_name};
use crate::imap::Handles;
use crate::imap::encode::{Out, Reply, Rfc5530};
use crate::imap::metadata;
use crate::imap::session::Fail;

/// GETMETADATA (RFC 5464 §4.2): every requested entry, NIL when there is none. The
/// server entries take the session's handles: the TURN entry needs its status and secret
/// (`crate::turn::metadata_value`).
pub async fn get(
    h: Handles<'_>,
    ctx: &Ctx<'_>,
    out: &mut Out,
    mailbox: &Mailbox<'_>,
    entries: &[Entry<'_>],
) -> Result<Reply, Fail> {
    let name = arg!(mailbox_name(mailbox));
    if !name.is_empty() && ctx.store.mailbox(ctx.user, &name)?.is_none() {
        return Ok(Reply::no("Mailbox doesn't exist").code(Rfc5530::Nonexistent));
    }
    let now = ctx.clock.unix_now();
    let mut values = Vec::with_capacity(entries.len());
    for e in entries {
        let key = String::from_utf8_lossy(e.inner().as_ref()).to_string();
        let value = if name.is_empty() {
            metadata::server_entry(h, &key)
        } else if name == "INBOX" && key.eq_ignore_ascii_case(metadata::DEVICE_TOKEN) {
            let tokens = ctx.store.device_tokens(ctx.user)?;
            let expired = metadata::expired_tokens(&tokens, now);
            if !expired.is_empty() {
                // MD-1: pruned on read.
                ctx.store.remove_device_tokens(ctx.user, expired).await?;
            }
            metadata::token_value(&tokens, now)
        } else {
            None
        };
        values.push((e.inner().as_ref(), value));
    }
    let entries: Vec<(&[u8], Option<&[u8]>)> = values
        .iter()
        .map(|(k, v)| (*k, v.as_deref().map(str::as_bytes)))
        .collect();
    out.metadata(&name, &entries);
    Ok(Reply::ok("Getmetadata completed"))
}

/// SETMETADATA (RFC 5464 §4.3, spec §12): only `/private/devicetoken` on INBOX.
pub async fn set(
    ctx: &Ctx<'_>,
    mailbox: &Mailbox<'_>,
    values: &[EntryValue<'_>],
) -> Result<Reply, Fail> {
    let name = arg!(mailbox_name(mailbox));
    let mut tokens = Vec::new();
    for ev in values {
        let key = String::from_utf8_lossy(ev.entry.inner().as_ref()).to_string();
        if name != "INBOX" || !key.eq_ignore_ascii_case(metadata::DEVICE_TOKEN) {
            return Ok(Reply::no("Permission denied").code(Rfc5530::NoPerm));
        }
        let value: Option<Vec<u8>> = match &ev.value {
            NString8::NString(n) => n.0.as_ref().map(|s| s.as_ref().to_vec()),
            NString8::Literal8(l) => Some(l.data.to_vec()),
        };
        match value {
            Some(v) if metadata::token_acceptable(&v) => tokens.push(v),
            Some(_) => return Ok(Reply::no("Invalid device token")),
            // Removing a token is not offered; NIL changes nothing.
            None => {}
        }
    }
    let now = ctx.clock.unix_now();
    for t in tokens {
        let t = String::from_utf8_lossy(&t).to_string();
        ctx.store.set_device_token(ctx.user, &t, now).await?;
    }
    // MD-1: pruned on write.
    let expired = metadata::expired_tokens(&ctx.store.device_tokens(ctx.user)?, now);
    if !expired.is_empty() {
        ctx.store.remove_device_tokens(ctx.user, expired).await?;
    }
    Ok(Reply::ok("Setmetadata completed"))
}
