//! Inbound federation over HTTPS: `POST /mxdeliv` (spec/relay.md IN-6). The envelope is in
//! the headers (`X-MAIL-FROM`, absent = `<>`; one `X-MAIL-TO` per recipient), the raw
//! message is the body. The same checks as port 25 run through [`crate::delivery`], with
//! the HTTP peer as the client address (IN-4e); the answer is the SMTP reply line, with
//! 200 for acceptance (Madmail requires 200) and 400 for a refusal.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use crate::delivery::{self, InboundRecipients};
use crate::http::Web;
use crate::policy::SmtpReply;

/// Envelope recipients per request, as SMTP allows per transaction (SUB-5).
const MAX_RECIPIENTS: usize = 1000;
/// How long a body waits for room in the memory budget (`crate::memory`).
const MEMORY_WAIT: std::time::Duration = std::time::Duration::from_secs(20);
/// Reservations grow in steps of this many bytes.
const RESERVE_STEP: u64 = 256 * 1024;

/// Why a body was not read.
enum BodyError {
    TooBig,
    NoMemory,
    Read(String),
}

/// Read the body into memory, reserving it in the relay's memory budget as it arrives
/// (`memory` stays reserved until the delivery is done).
async fn read_body(
    body: Body,
    max: u64,
    declared: Option<u64>,
    memory: &mut crate::memory::Reservation,
) -> Result<Vec<u8>, BodyError> {
    let mut body = body;
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
    let max = relay.config.max_message_size;
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
    if declared.is_some_and(|n| n > max) {
        return too_big();
    }
    let mut memory = relay.memory.empty();
    let raw = match read_body(body, max, declared, &mut memory).await {
        // As over SMTP: lines that end in a bare LF get their CR.
        Ok(raw) => crate::message::normalize_line_endings(raw),
        Err(BodyError::TooBig) => return too_big(),
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
    let mail_from = match headers.get("x-mail-from").map(|v| v.to_str()) {
        None => String::new(),
        Some(Ok(v)) => bare(v),
        Some(Err(_)) => return refused(&SmtpReply::new(501, "5.1.7 Bad sender address syntax")),
    };
    let mut rcpts = InboundRecipients::default();
    let own = relay.config.address_domain();
    for value in headers.get_all("x-mail-to") {
        let Ok(to) = value.to_str().map(bare) else {
            return refused(&SmtpReply::new(501, "5.1.3 Bad recipient address syntax"));
        };
        if rcpts.local.len() >= MAX_RECIPIENTS {
            return refused(&SmtpReply::new(452, "4.5.3 Error: too many recipients"));
        }
        let Some((_, domain)) = to.rsplit_once('@') else {
            return refused(&SmtpReply::new(501, "5.1.3 Bad recipient address syntax"));
        };
        // IN-2.
        if !domain.eq_ignore_ascii_case(&own) {
            return refused(&delivery::relay_denied(&to));
        }
        match delivery::local_recipient(relay, &to, raw.len() as u64) {
            Ok(local) => {
                rcpts.enforce_e2ee |= local.enforce_e2ee;
                if !rcpts.local.contains(&local.account) {
                    rcpts.local.push(local.account);
                }
            }
            Err(r) => return refused(&r),
        }
    }
    if rcpts.local.is_empty() {
        return refused(&SmtpReply::new(554, "5.5.1 Error: no valid recipients"));
    }
    let reply = delivery::inbound(relay, web.peer, mail_from, rcpts, raw).await;
    if reply.code / 100 == 2 {
        text(StatusCode::OK, &reply.to_string())
    } else {
        refused(&reply)
    }
}

/// `<a@b>` or `a@b` → `a@b`.
fn bare(v: &str) -> String {
    let v = v.trim();
    v.strip_prefix('<')
        .and_then(|x| x.strip_suffix('>'))
        .unwrap_or(v)
        .to_string()
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
