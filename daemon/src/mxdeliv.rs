//! Inbound federation over HTTPS: `POST /mxdeliv` (spec/relay.md IN-6). The envelope is in
//! the headers (`X-MAIL-FROM`, absent = `<>`; one `X-MAIL-TO` per recipient), the raw
//! message is the body. The same checks as port 25 run through [`crate::delivery`], with
//! the HTTP peer as the client address (IN-4e); the answer is the SMTP reply line, with
//! 200 for acceptance (Madmail requires 200) and 400 for a refusal.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use crate::delivery::{self, Recipients};
use crate::http::Web;
use crate::policy::SmtpReply;
use crate::policy::recipient::{Relaying, bad_syntax, destination};

/// How long a body waits for room in the memory budget (`crate::memory`).
const MEMORY_WAIT: std::time::Duration = std::time::Duration::from_secs(20);
/// Reservations grow in steps of this many bytes.
const RESERVE_STEP: u64 = 256 * 1024;
/// Most bytes of a refused body read and dropped before the answer (see [`drain`]).
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

/// Why a body was not read.
#[derive(Debug)]
pub(crate) enum BodyError {
    TooBig,
    NoMemory,
    Read(String),
}

/// `/mxdeliv`, any method (IN-6).
pub async fn handle(
    State(web): State<Web>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if method != Method::POST {
        return (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "POST")]).into_response();
    }
    let relay = &web.relay;
    let max = relay.config().max_message_size;
    let too_big = || {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "552 Message exceeds maximum size",
        )
    };
    // A declared length over the limit is refused before anything is read.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = body;
    if declared.is_some_and(|n| n > max) {
        drain(&mut body, declared).await;
        return too_big();
    }
    let mut memory = relay.memory().empty();
    let raw = match read_body(&mut body, max, declared, &mut memory).await {
        // As over SMTP: lines that end in a bare LF get their CR.
        Ok(raw) => crate::message::normalize_line_endings(raw),
        Err(BodyError::TooBig) => {
            drop(memory);
            drain(&mut body, declared).await;
            return too_big();
        }
        Err(BodyError::NoMemory) => {
            crate::metrics::rejected(crate::metrics::Rejection::Busy);
            tracing::info!("/mxdeliv: refused for now: no memory left for messages in transit");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "60")],
                "451 4.3.1 Insufficient system storage, try again later\r\n",
            )
                .into_response();
        }
        Err(BodyError::Read(e)) => {
            tracing::debug!("/mxdeliv: body not read: {e}");
            return text(
                StatusCode::BAD_REQUEST,
                "451 4.3.0 Error reading the message",
            );
        }
    };
    let mail_from = match mail_from(&headers) {
        Ok(from) => from,
        Err(r) => return refused(&r),
    };
    let mut rcpts = Recipients::default();
    let own = relay.config().address_domain();
    for value in headers.get_all("x-mail-to") {
        // The same check as RCPT on port 25 (SUB-5, IN-2, the account).
        let checked = recipient(value, &own)
            .and_then(|to| rcpts.add(&relay.delivery(), &to, raw.len() as u64, Relaying::Denied));
        if let Err(r) = checked {
            return refused(&r);
        }
    }
    if rcpts.local.is_empty() {
        return refused(&SmtpReply::new(554, "5.5.1 Error: no valid recipients"));
    }
    let reply = delivery::inbound(&relay.delivery(), web.peer, mail_from, rcpts, raw).await;
    if reply.code / 100 == 2 {
        text(StatusCode::OK, &reply.to_string())
    } else {
        refused(&reply)
    }
}

/// Read the body into memory, reserving it in the relay's memory budget as it arrives
/// (`memory` stays reserved until the delivery is done).
pub(crate) async fn read_body<B>(
    body: &mut B,
    max: u64,
    declared: Option<u64>,
    memory: &mut crate::memory::Reservation,
) -> Result<Vec<u8>, BodyError>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut raw = Vec::new();
    if let Some(n) = declared {
        // The declared size is within `max`: room for all of it once it is reserved.
        if !memory.grow_to(n, MEMORY_WAIT).await {
            return Err(BodyError::NoMemory);
        }
        raw.reserve_exact(n as usize);
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let size = (raw.len() + data.len()) as u64;
        if size > max {
            return Err(BodyError::TooBig);
        }
        if size > memory.bytes()
            && !memory
                .grow_to((size + RESERVE_STEP).min(max), MEMORY_WAIT)
                .await
        {
            return Err(BodyError::NoMemory);
        }
        raw.extend_from_slice(&data);
    }
    Ok(raw)
}

/// Read and drop the rest of a refused body (at most [`DRAIN_LIMIT`] bytes; nothing if it
/// declared more), so that a peer still sending it reads the `413` instead of a reset
/// connection: closing a socket with unread data sends a TCP RST, which can destroy the
/// answer in flight (RFC 9112 §9.6, "tear-down"). The connection's rate and time limits
/// bound how long this takes.
async fn drain<B>(body: &mut B, declared: Option<u64>)
where
    B: hyper::body::Body<Data = bytes::Bytes> + Unpin,
{
    if declared.is_some_and(|n| n > DRAIN_LIMIT) {
        return;
    }
    let mut seen = 0u64;
    while seen <= DRAIN_LIMIT {
        match body.frame().await {
            Some(Ok(frame)) => {
                seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            _ => return,
        }
    }
}

/// The envelope sender: `X-MAIL-FROM`, absent = `<>` (the empty string).
pub(crate) fn mail_from(headers: &HeaderMap) -> Result<String, SmtpReply> {
    let bad = || SmtpReply::new(501, "5.1.7 Bad sender address syntax");
    match headers.get("x-mail-from") {
        None => Ok(String::new()),
        Some(v) => v.to_str().ok().and_then(bare).ok_or_else(bad),
    }
}

/// One `X-MAIL-TO` value: the bare address, if it has the syntax of one and is in this
/// relay's domain `own` (IN-2, [`destination`]). Whether the account exists
/// is the caller's question.
pub(crate) fn recipient(value: &HeaderValue, own: &str) -> Result<String, SmtpReply> {
    let to = value.to_str().ok().and_then(bare).ok_or_else(bad_syntax)?;
    destination(&to, own, Relaying::Denied)?;
    Ok(to)
}

/// `<a@b>` or `a@b` → `a@b`; `<>` → the empty (null) path. `None` when what is left is
/// not one address: whitespace, angle brackets or control characters inside (found by
/// the `mxdeliv` fuzz target: `< <bob@[127.0.0.1]>` passed as ` <bob@[127.0.0.1]`).
fn bare(v: &str) -> Option<String> {
    let v = v.trim();
    let inner = v
        .strip_prefix('<')
        .and_then(|x| x.strip_suffix('>'))
        .unwrap_or(v);
    let clean = !inner
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>');
    clean.then(|| inner.to_string())
}

fn refused(reply: &SmtpReply) -> Response {
    tracing::info!("/mxdeliv refused: {}", reply.code);
    text(StatusCode::BAD_REQUEST, &reply.to_string())
}

fn text(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{body}\r\n"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(v: &'static str) -> Result<String, SmtpReply> {
        let mut h = HeaderMap::new();
        h.insert("x-mail-from", HeaderValue::from_static(v));
        mail_from(&h)
    }

    fn to(v: &'static str) -> Result<String, u16> {
        recipient(&HeaderValue::from_static(v), "[127.0.0.1]").map_err(|r| r.code)
    }

    #[test]
    fn envelope_addresses_are_bare_and_whole() {
        assert_eq!(mail_from(&HeaderMap::new()).unwrap(), "");
        assert_eq!(from("<>").unwrap(), "");
        assert_eq!(from(" <a@b.example> ").unwrap(), "a@b.example");
        assert_eq!(from("a@b.example").unwrap(), "a@b.example");
        assert_eq!(to("<bob@[127.0.0.1]>"), Ok("bob@[127.0.0.1]".to_string()));
        assert_eq!(to("bob@other.example"), Err(554));
        assert_eq!(to("bob"), Err(501));
    }

    /// Found by the `mxdeliv` fuzz target (fuzz/regressions/mxdeliv/): a second pair of
    /// angle brackets or blanks inside them passed as part of the address.
    #[test]
    fn nested_brackets_and_blanks_are_refused() {
        assert_eq!(to("< <bob@[127.0.0.1]>"), Err(501));
        assert_eq!(to("<bob@[127.0.0.1]"), Err(501));
        assert_eq!(to("<b ob@[127.0.0.1]>"), Err(501));
        assert_eq!(to("<bob@[127.0.0.1]\t>"), Err(501));
        assert_eq!(from("<<a@b.example>>").map_err(|r| r.code), Err(501));
        assert_eq!(from("< a@b.example>").map_err(|r| r.code), Err(501));
    }
}
