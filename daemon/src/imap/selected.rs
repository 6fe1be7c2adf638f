//! The selected mailbox as one session sees it (RFC 9051 §2.3.1.2, §5.2): sequence
//! numbers are positions in its list of messages, and that list changes only when the
//! session tells the client; the updates it owes (EXPUNGE, FETCH FLAGS, EXISTS) are
//! worked out here.

use imap_codec::imap_types::sequence::SequenceSet;

use super::encode::{Out, Reply};
use super::sequence;
use crate::store::MessageMeta;

pub struct Selected {
    pub name: String,
    pub read_only: bool,
    /// Messages in UID order, with the flags last reported.
    pub msgs: Vec<MessageMeta>,
    /// Highest UID reported with EXISTS (new messages have larger UIDs).
    known_max: u32,
    /// Messages gone from the store whose EXPUNGE could not be sent yet.
    pub pending_expunge: bool,
}

impl Selected {
    /// The view of a mailbox just selected, holding `msgs` (in UID order).
    pub fn new(name: String, read_only: bool, msgs: Vec<MessageMeta>) -> Selected {
        let known_max = msgs.last().map(|m| m.uid).unwrap_or(0);
        Selected {
            name,
            read_only,
            msgs,
            known_max,
            pending_expunge: false,
        }
    }

    pub fn index_of(&self, uid: u32) -> Option<usize> {
        self.msgs.binary_search_by_key(&uid, |m| m.uid).ok()
    }

    pub fn uids(&self) -> Vec<u32> {
        self.msgs.iter().map(|m| m.uid).collect()
    }

    /// Indices of the messages a set names (UIDs or sequence numbers), or the BAD reply
    /// for a sequence number beyond the mailbox.
    pub fn indices(&self, set: &SequenceSet, uid: bool) -> Result<Vec<usize>, Reply> {
        if uid {
            Ok(sequence::uid_indices(set, &self.uids()))
        } else {
            sequence::seq_indices(set, self.msgs.len())
                .map_err(|_| Reply::bad("Invalid message sequence number"))
        }
    }

    /// Bring the view up to `fresh` (the mailbox as stored now) and report the
    /// differences: EXPUNGE in descending sequence numbers, so each number is still valid
    /// when sent (only when `allow_expunge`, RFC 9051 §7.5.1; otherwise they wait), then
    /// flag changes, then EXISTS for new messages.
    pub fn update(&mut self, fresh: &[MessageMeta], allow_expunge: bool, out: &mut Out) {
        let gone = |uid: u32| fresh.binary_search_by_key(&uid, |m| m.uid).is_err();
        if allow_expunge {
            for i in (0..self.msgs.len()).rev() {
                if gone(self.msgs[i].uid) {
                    out.expunge(i + 1);
                    self.msgs.remove(i);
                }
            }
            self.pending_expunge = false;
        } else {
            self.pending_expunge = self.msgs.iter().any(|m| gone(m.uid));
        }
        for (i, m) in self.msgs.iter_mut().enumerate() {
            if let Ok(j) = fresh.binary_search_by_key(&m.uid, |f| f.uid)
                && fresh[j].flags != m.flags
            {
                m.flags = fresh[j].flags.clone();
                out.fetch_flags(i + 1, Some(m.uid), &m.flags);
            }
        }
        let added: Vec<MessageMeta> = fresh
            .iter()
            .filter(|m| m.uid > self.known_max)
            .cloned()
            .collect();
        if let Some(last) = added.last() {
            self.known_max = last.uid;
            self.msgs.extend(added);
            out.exists(self.msgs.len());
        }
    }

    /// `* n EXPUNGE` for the given UIDs (highest sequence number first), and drop them
    /// from the view.
    pub fn expunged(&mut self, uids: &[u32], out: &mut Out) {
        let mut idx: Vec<usize> = uids.iter().filter_map(|u| self.index_of(*u)).collect();
        idx.sort_unstable();
        for &i in idx.iter().rev() {
            out.expunge(i + 1);
            self.msgs.remove(i);
        }
    }
}
