//! GETQUOTAROOT and GETQUOTA (RFC 9208, QUOTA-4): one quota root per account, the
//! STORAGE resource in KiB; SETQUOTA is refused (a line of `dispatch`).

use imap_codec::imap_types::mailbox::Mailbox;

use super::{Ctx, arg, mailbox_name};
use crate::imap::encode::{Out, Reply, Rfc5530};
use crate::imap::session::Fail;

/// Quota root name (upstream Dovecot's).
const QUOTA_ROOT: &str = "User quota";

/// QUOTA-4 / RFC 9208: STORAGE usage and limit in KiB.
fn quota_line(ctx: &Ctx<'_>, out: &mut Out) -> Result<(), Fail> {
    let used = ctx.store.usage(ctx.user)?.div_ceil(1024);
    let limit = ctx.config.max_mailbox_size / 1024;
    out.quota_storage(QUOTA_ROOT, used, limit);
    Ok(())
}

pub fn get_quota_root(ctx: &Ctx<'_>, out: &mut Out, mailbox: &Mailbox<'_>) -> Result<Reply, Fail> {
    let name = arg!(mailbox_name(mailbox));
    if ctx.store.mailbox(ctx.user, &name)?.is_none() {
        return Ok(Reply::no("Mailbox doesn't exist").code(Rfc5530::Nonexistent));
    }
    out.quota_root(&name, QUOTA_ROOT);
    quota_line(ctx, out)?;
    Ok(Reply::ok("Getquotaroot completed"))
}

pub fn get_quota(ctx: &Ctx<'_>, out: &mut Out, root: &[u8]) -> Result<Reply, Fail> {
    let root = String::from_utf8_lossy(root);
    if root != QUOTA_ROOT && !root.is_empty() {
        return Ok(Reply::no("Quota root does not exist").code(Rfc5530::Nonexistent));
    }
    quota_line(ctx, out)?;
    Ok(Reply::ok("Getquota completed"))
}
