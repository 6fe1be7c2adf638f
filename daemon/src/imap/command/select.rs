//! SELECT and EXAMINE (RFC 9051 §6.3.2, §6.3.3 with the IMAP4rev1 answers of RFC 3501
//! §6.3.1) and CLOSE (RFC 9051 §6.4.1); UNSELECT (RFC 3691) is a line of `dispatch`.

use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::Code;

use super::{Ctx, arg, mailbox_name};
use crate::imap::encode::{Reply, Rfc5530};
use crate::imap::selected::Selected;
use crate::imap::session::{Fail, Session};
use crate::store::{Flags, StoreError};

impl Session<'_> {
    pub(super) fn select(
        &mut self,
        ctx: &Ctx<'_>,
        mailbox: &Mailbox<'_>,
        read_only: bool,
    ) -> Result<Reply, Fail> {
        // RFC 9051 §6.3.2: a SELECT deselects first, even when it fails.
        self.selected = None;
        let name = arg!(mailbox_name(mailbox));
        if let Some(rx) = &mut self.events {
            rx.borrow_and_update();
        }
        let (info, msgs) = match ctx.store.messages(ctx.user, &name) {
            Ok(x) => x,
            Err(StoreError::NoMailbox) => {
                return Ok(Reply::no("Mailbox doesn't exist").code(Rfc5530::Nonexistent));
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
        let out = &mut self.out;
        out.mailbox_flags(&keywords, "Flags permitted.");
        out.exists(msgs.len());
        out.recent(0);
        if let Some(i) = msgs.iter().position(|m| !m.flags.has(Flags::SEEN)) {
            out.unseen(i + 1, "First unseen.");
        }
        out.uid_validity(info.uid_validity, "UIDs valid");
        out.uid_next(info.uid_next, "Predicted next UID");
        self.selected = Some(Selected::new(name, read_only, msgs));
        Ok(if read_only {
            Reply::ok("Examine completed").code(Code::ReadOnly)
        } else {
            Reply::ok("Select completed").code(Code::ReadWrite)
        })
    }
}

/// CLOSE: leave the mailbox, expunging it silently unless it was examined.
pub async fn close(ctx: &Ctx<'_>, selected: Option<Selected>) -> Result<Reply, Fail> {
    if let Some(sel) = selected
        && !sel.read_only
    {
        let removed = ctx.store.expunge(ctx.user, &sel.name, None).await?;
        if !removed.is_empty() {
            ctx.changed();
        }
    }
    Ok(Reply::ok("Close completed"))
}
