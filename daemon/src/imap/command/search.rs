//! SEARCH (RFC 9051 §6.4.4, IMAP4rev1 answer): the criteria checked here, evaluated as a
//! heavy job with a work budget by `imap::search`.

use imap_codec::imap_types::core::Charset;
use imap_codec::imap_types::search::SearchKey;

use super::Ctx;
use crate::imap::encode::{Out, Reply, Rfc5530, bad_charset};
use crate::imap::search;
use crate::imap::selected::Selected;
use crate::imap::session::Fail;

/// The charsets SEARCH accepts (US-ASCII is a subset of UTF-8).
const CHARSETS: [&str; 2] = ["US-ASCII", "UTF-8"];

pub async fn search(
    ctx: &Ctx<'_>,
    out: &mut Out,
    sel: &Selected,
    charset: Option<&Charset<'_>>,
    criteria: &[SearchKey<'_>],
    uid: bool,
) -> Result<Reply, Fail> {
    if let Some(cs) = charset {
        let cs: &str = cs.as_ref();
        if !CHARSETS.iter().any(|c| c.eq_ignore_ascii_case(cs)) {
            return Ok(Reply::no("Unsupported charset").code(bad_charset(&CHARSETS)));
        }
    }
    // RFC 5530 LIMIT: a bounded number of keys, whatever the command size allows.
    if search::count_keys(criteria) > search::MAX_KEYS {
        return Ok(Reply::no("Too many search keys").code(Rfc5530::Limit));
    }
    let criteria: Vec<SearchKey<'static>> = criteria
        .iter()
        .cloned()
        .map(imap_codec::imap_types::IntoStatic::into_static)
        .collect();
    let store = ctx.store.clone();
    let (account, mailbox, msgs) = (ctx.user.to_string(), sel.name.clone(), sel.msgs.clone());
    let outcome = crate::work::run(move || {
        let mut budget = crate::work::Budget::new(search::WORK_UNITS);
        search::run(
            &store,
            &account,
            &mailbox,
            &msgs,
            &criteria,
            uid,
            &mut budget,
        )
    })
    .await;
    let hits = match outcome {
        None => {
            return Ok(
                Reply::no("Internal error occurred. Try again later.").code(Rfc5530::Unavailable)
            );
        }
        Some(Err(e)) => return Err(e.into()),
        Some(Ok(Err(crate::work::OverBudget))) => {
            tracing::info!("search stopped: over the work limit");
            return Ok(Reply::no("Search too expensive, narrow it down").code(Rfc5530::Limit));
        }
        Some(Ok(Ok(hits))) => hits,
    };
    out.search(&hits);
    Ok(Reply::ok("Search completed"))
}
