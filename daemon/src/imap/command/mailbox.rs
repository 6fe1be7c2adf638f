//! Mailbox commands of the authenticated state (RFC 9051 §6.3): LIST, LSUB (RFC 3501
//! §6.3.9), CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE and STATUS, with the
//! hierarchy delimiter and the special-use names (RFC 6154, IMAP-4).

use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_codec::imap_types::status::{StatusDataItem, StatusDataItemName};

use super::{Ctx, arg, mailbox_name};
use crate::imap::encode::{Out, Reply, Rfc5530};
use crate::imap::selected::Selected;
use crate::imap::session::Fail;
use crate::store::{Flags, StoreError};

/// Hierarchy delimiter (Dovecot's default with upstream's layout).
pub const DELIMITER: char = '.';

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

/// RFC 6154 special-use attribute of the names Delta Chat and upstream use (IMAP-4),
/// without its backslash.
fn special_use(name: &str) -> Option<&'static str> {
    match name {
        "Drafts" => Some("Drafts"),
        "Junk" => Some("Junk"),
        "Trash" => Some("Trash"),
        "Sent" | "Sent Messages" => Some("Sent"),
        _ => None,
    }
}

/// LIST or LSUB.
pub fn list(
    ctx: &Ctx<'_>,
    out: &mut Out,
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
    if pattern.is_empty() && !lsub {
        // RFC 9051 §6.3.9: the delimiter and root.
        out.list(false, &["Noselect"], DELIMITER, "");
        return Ok(Reply::ok("List completed"));
    }
    let mut full = reference;
    full.extend_from_slice(&pattern);
    let boxes = ctx.store.mailboxes(ctx.user)?;
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
            "HasChildren"
        } else {
            "HasNoChildren"
        }];
        attrs.extend(special_use(&mb.name));
        out.list(lsub, &attrs, DELIMITER, &mb.name);
    }
    Ok(Reply::ok(if lsub {
        "Lsub completed"
    } else {
        "List completed"
    }))
}

pub async fn create(ctx: &Ctx<'_>, mailbox: &Mailbox<'_>) -> Result<Reply, Fail> {
    let name = arg!(mailbox_name(mailbox));
    let name = name.strip_suffix(DELIMITER).unwrap_or(&name).to_string();
    if name.eq_ignore_ascii_case("INBOX") {
        return Ok(Reply::no("Mailbox already exists").code(Rfc5530::AlreadyExists));
    }
    if !valid_new_name(&name) {
        return Ok(Reply::no("Invalid mailbox name").code(Rfc5530::Cannot));
    }
    match ctx.store.create_mailbox(ctx.user, &name).await {
        Ok(()) => {
            ctx.changed();
            Ok(Reply::ok("Create completed"))
        }
        Err(StoreError::MailboxExists) => {
            Ok(Reply::no("Mailbox already exists").code(Rfc5530::AlreadyExists))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn delete(
    ctx: &Ctx<'_>,
    selected: &mut Option<Selected>,
    mailbox: &Mailbox<'_>,
) -> Result<Reply, Fail> {
    let name = arg!(mailbox_name(mailbox));
    if name == "INBOX" {
        return Ok(Reply::no("INBOX can't be deleted").code(Rfc5530::Cannot));
    }
    match ctx.store.delete_mailbox(ctx.user, &name).await {
        Ok(()) => {
            if selected.as_ref().is_some_and(|s| s.name == name) {
                *selected = None;
            }
            ctx.changed();
            Ok(Reply::ok("Delete completed"))
        }
        Err(StoreError::NoMailbox) => {
            Ok(Reply::no("Mailbox doesn't exist").code(Rfc5530::Nonexistent))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn rename(
    ctx: &Ctx<'_>,
    selected: &mut Option<Selected>,
    from: &Mailbox<'_>,
    to: &Mailbox<'_>,
) -> Result<Reply, Fail> {
    let from = arg!(mailbox_name(from));
    let to = arg!(mailbox_name(to));
    if from == "INBOX" {
        return Ok(Reply::no("Renaming INBOX is not supported").code(Rfc5530::Cannot));
    }
    if to == "INBOX" {
        return Ok(Reply::no("Mailbox already exists").code(Rfc5530::AlreadyExists));
    }
    if !valid_new_name(&to) {
        return Ok(Reply::no("Invalid mailbox name").code(Rfc5530::Cannot));
    }
    match ctx.store.rename_mailbox(ctx.user, &from, &to).await {
        Ok(()) => {
            if let Some(sel) = selected.as_mut().filter(|s| s.name == from) {
                sel.name = to;
            }
            ctx.changed();
            Ok(Reply::ok("Rename completed"))
        }
        Err(StoreError::NoMailbox) => {
            Ok(Reply::no("Mailbox doesn't exist").code(Rfc5530::Nonexistent))
        }
        Err(StoreError::MailboxExists) => {
            Ok(Reply::no("Mailbox already exists").code(Rfc5530::AlreadyExists))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn subscribe(ctx: &Ctx<'_>, mailbox: &Mailbox<'_>, on: bool) -> Result<Reply, Fail> {
    let name = arg!(mailbox_name(mailbox));
    let done = if on {
        "Subscribe completed"
    } else {
        "Unsubscribe completed"
    };
    match ctx.store.set_subscribed(ctx.user, &name, on).await {
        Ok(()) => Ok(Reply::ok(done)),
        // Unsubscribing a name that does not exist is harmless.
        Err(StoreError::NoMailbox) if !on => Ok(Reply::ok(done)),
        Err(StoreError::NoMailbox) => {
            Ok(Reply::no("Mailbox doesn't exist").code(Rfc5530::Nonexistent))
        }
        Err(e) => Err(e.into()),
    }
}

pub fn status(
    ctx: &Ctx<'_>,
    out: &mut Out,
    mailbox: &Mailbox<'_>,
    items: &[StatusDataItemName],
) -> Result<Reply, Fail> {
    let name = arg!(mailbox_name(mailbox));
    let (info, msgs) = match ctx.store.messages(ctx.user, &name) {
        Ok(x) => x,
        Err(StoreError::NoMailbox) => {
            return Ok(Reply::no("Mailbox doesn't exist").code(Rfc5530::Nonexistent));
        }
        Err(e) => return Err(e.into()),
    };
    let count = |bit: u8, set: bool| msgs.iter().filter(|m| m.flags.has(bit) == set).count() as u32;
    let nz = |n: u32| std::num::NonZeroU32::new(n).unwrap_or(std::num::NonZeroU32::MIN);
    let values = items
        .iter()
        .filter_map(|item| {
            Some(match item {
                StatusDataItemName::Messages => StatusDataItem::Messages(msgs.len() as u32),
                StatusDataItemName::Recent => StatusDataItem::Recent(0),
                StatusDataItemName::UidNext => StatusDataItem::UidNext(nz(info.uid_next)),
                StatusDataItemName::UidValidity => {
                    StatusDataItem::UidValidity(nz(info.uid_validity))
                }
                StatusDataItemName::Unseen => StatusDataItem::Unseen(count(Flags::SEEN, false)),
                StatusDataItemName::Deleted => StatusDataItem::Deleted(count(Flags::DELETED, true)),
                _ => return None,
            })
        })
        .collect();
    out.status(&name, values);
    Ok(Reply::ok("Status completed"))
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
        assert_eq!(special_use("Sent Messages"), Some("Sent"));
        assert_eq!(special_use("Other"), None);
    }
}
