//! Inbound federation over HTTPS: `POST /mxdeliv` (spec/relay.md IN-6). The envelope is in
//! the headers (`X-MAIL-FROM`, absent = `<>`; one `X-MAIL-TO` per recipient), the raw
//! message is the body. The same checks as port 25 run through [`crate::delivery`], with
//! the HTTP peer as the client address (IN-4e); the answer is the SMTP reply line, with
//! 200 for acceptance (Madmail requires 200) and 400 for a refusal.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::delivery::{self, InboundRecipients};
use crate::http::Web;
use crate::policy::SmtpReply;

/// Envelope recipients per request, as SMTP allows per transaction (SUB-5).
const MAX_RECIPIENTS: usize = 1000;

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
    let max = usize::try_from(relay.config.max_message_size).unwrap_or(usize::MAX);
    let raw = match Limited::new(body, max).collect().await {
        // As over SMTP: lines that end in a bare LF get their CR.
        Ok(collected) => crate::message::normalize_line_endings(collected.to_bytes().to_vec()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "552 Message exceeds maximum size",
            );
        }
        Err(e) => {
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
