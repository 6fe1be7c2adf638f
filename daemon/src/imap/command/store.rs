//! Changing and moving messages of the selected mailbox (RFC 9051 §6.4): STORE, COPY,
//! MOVE (RFC 6851) with COPYUID (RFC 4315), EXPUNGE and UID EXPUNGE (RFC 4315 §2.1).

use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::Code;
use imap_codec::imap_types::sequence::SequenceSet;

use super::{Ctx, arg, mailbox_name, to_flags};
use crate::imap::encode::{Out, Reply, copy_uid};
use crate::imap::selected::Selected;
use crate::imap::sequence;
use crate::imap::session::Fail;
use crate::store::{FlagOp, StoreError};

fn read_only() -> Reply {
    Reply::no("Mailbox is read-only")
}

#[allow(clippy::too_many_arguments)]
pub async fn store(
    ctx: &Ctx<'_>,
    out: &mut Out,
    sel: &mut Selected,
    set: &SequenceSet,
    kind: StoreType,
    response: StoreResponse,
    flags: &[Flag<'_>],
    uid: bool,
) -> Result<Reply, Fail> {
    let indices = arg!(sel.indices(set, uid));
    let flags = arg!(to_flags(flags));
    if sel.read_only {
        return Ok(read_only());
    }
    let uids: Vec<u32> = indices.iter().map(|&i| sel.msgs[i].uid).collect();
    let op = match kind {
        StoreType::Replace => FlagOp::Replace,
        StoreType::Add => FlagOp::Add,
        StoreType::Remove => FlagOp::Remove,
    };
    let metas = ctx
        .store
        .store_flags(ctx.user, &sel.name, uids, op, flags)
        .await?;
    for m in metas {
        if let Some(j) = sel.index_of(m.uid) {
            sel.msgs[j].flags = m.flags;
            if matches!(response, StoreResponse::Answer) {
                out.fetch_flags(j + 1, uid.then_some(m.uid), &sel.msgs[j].flags);
            }
        }
    }
    ctx.changed();
    Ok(Reply::ok("Store completed"))
}

/// COPY, or MOVE when `is_move`.
pub async fn copy(
    ctx: &Ctx<'_>,
    out: &mut Out,
    sel: &mut Selected,
    set: &SequenceSet,
    mailbox: &Mailbox<'_>,
    uid: bool,
    is_move: bool,
) -> Result<Reply, Fail> {
    let dest = arg!(mailbox_name(mailbox));
    let indices = arg!(sel.indices(set, uid));
    if is_move && sel.read_only {
        return Ok(read_only());
    }
    if ctx.store.mailbox(ctx.user, &dest)?.is_none() {
        return Ok(Reply::no("Mailbox doesn't exist").code(Code::TryCreate));
    }
    let uids: Vec<u32> = indices.iter().map(|&i| sel.msgs[i].uid).collect();
    let done = if is_move {
        "Move completed"
    } else {
        "Copy completed"
    };
    if uids.is_empty() {
        return Ok(Reply::ok(done));
    }
    let (validity, pairs) = match ctx
        .store
        .copy(ctx.user, &sel.name, &dest, uids, is_move)
        .await
    {
        Ok(x) => x,
        Err(StoreError::NoMailbox) => {
            return Ok(Reply::no("Mailbox doesn't exist").code(Code::TryCreate));
        }
        Err(e) => return Err(e.into()),
    };
    ctx.changed();
    if pairs.is_empty() {
        return Ok(Reply::ok(done));
    }
    let from: Vec<u32> = pairs.iter().map(|p| p.0).collect();
    let to: Vec<u32> = pairs.iter().map(|p| p.1).collect();
    // RFC 4315 COPYUID.
    let code = copy_uid(validity, &from, &to);
    if !is_move {
        return Ok(Reply::ok(done).code(code));
    }
    // RFC 6851 §4.3: COPYUID in an untagged OK, then the EXPUNGEs.
    out.untagged_ok(Some(code), "Moved");
    sel.expunged(&from, out);
    Ok(Reply::ok(done))
}

/// EXPUNGE, or UID EXPUNGE of `only`.
pub async fn expunge(
    ctx: &Ctx<'_>,
    out: &mut Out,
    sel: &mut Selected,
    only: Option<&SequenceSet>,
) -> Result<Reply, Fail> {
    if sel.read_only {
        return Ok(read_only());
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
    let removed = ctx.store.expunge(ctx.user, &sel.name, only).await?;
    if !removed.is_empty() {
        sel.expunged(&removed, out);
        ctx.changed();
    }
    Ok(Reply::ok("Expunge completed"))
}
