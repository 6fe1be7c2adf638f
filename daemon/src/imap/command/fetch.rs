//! FETCH (RFC 9051 §6.4.5): \Seen for BODY[] without PEEK (not in EXAMINE), then one
//! `* n FETCH` per message, big literals written to the connection from the stored copy
//! (`encode::fetch`) with the message reserved in the memory budget while it is held.

use std::collections::HashSet;

use imap_codec::imap_types::fetch::MacroOrMessageDataItemNames;
use imap_codec::imap_types::sequence::SequenceSet;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Ctx, arg};
use crate::imap::encode::{Reply, Rfc5530, fetch as encode};
use crate::imap::fetch;
use crate::imap::session::{Fail, MEMORY_WAIT, Session};
use crate::store::{FlagOp, Flags};

/// Buffered output is written out when it grows past this during a command.
const FLUSH_AT: usize = 1 << 20;

impl Session<'_> {
    pub(super) async fn fetch<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        ctx: &Ctx<'_>,
        set: &SequenceSet,
        names: &MacroOrMessageDataItemNames<'_>,
        uid: bool,
    ) -> Result<Reply, Fail> {
        let plan = arg!(fetch::plan(names, uid).map_err(Reply::bad));
        let Some(sel) = &mut self.selected else {
            return Ok(Reply::bad("No mailbox selected"));
        };
        let indices = arg!(sel.indices(set, uid));
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
                let metas = ctx
                    .store
                    .store_flags(ctx.user, &name, need, FlagOp::Add, seen)
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
            let mut memory = self.h.memory.empty();
            if plan.needs_body
                && meta.size >= encode::STREAM_AT as u64
                && !memory.grow_to(meta.size, MEMORY_WAIT).await
            {
                crate::metrics::rejected(crate::metrics::Rejection::Busy);
                return Ok(
                    Reply::no("Not enough memory right now, try again later").code(Rfc5530::Limit)
                );
            }
            let msg = if plan.needs_body {
                match ctx.store.message(ctx.user, &name, meta.uid)? {
                    Some(m) => Some(m),
                    // Expunged by another session, not yet reported: nothing to send.
                    None => continue,
                }
            } else {
                None
            };
            let mut resp = encode::Response {
                text: self.out.take(),
                refs: Vec::new(),
            };
            encode::write_message(
                &mut resp,
                i as u32 + 1,
                &meta,
                msg.as_ref().map(|m| m.view()),
                &plan.items,
                seen_now.contains(&meta.uid),
            );
            match &msg {
                // Big literals go to the connection from the message itself.
                Some(msg) if !resp.refs.is_empty() => {
                    let mut done = 0;
                    for (at, range) in resp.refs {
                        self.out.restore(resp.text[done..at].to_vec());
                        self.flush(io).await?;
                        self.write_direct(io, &msg.bytes()[range]).await?;
                        done = at;
                    }
                    resp.text.drain(..done);
                    self.out.restore(resp.text);
                }
                _ => self.out.restore(resp.text),
            }
            if self.out.len() > FLUSH_AT {
                self.flush(io).await?;
            }
        }
        if !seen_now.is_empty() {
            ctx.changed();
        }
        Ok(Reply::ok("Fetch completed"))
    }
}
