//! The `/mxdeliv` client of outbound delivery (spec/relay.md §8 OUT-3 step 1): one
//! `POST https://<mx>/mxdeliv` over HTTP/1.1 with rustls (OUT-4) through the relay's one
//! HTTPS client (`tls::client`), the envelope in
//! `X-MAIL-FROM` (absent for `<>`) and one `X-MAIL-TO` per recipient, the raw message
//! as body. The receiving relay answers 200 when it took the message, or an error
//! status with the SMTP reply line as body (IN-6).
//!
//! Nothing else goes into the request: no client address, no extra headers beyond
//! HTTP's own (`Host`, `Content-Length`).

use bytes::Bytes;
use smtp_proto::response::parser::ResponseReceiver;

use crate::policy::SmtpReply;
use crate::tls::client::{Body, HttpsClient, HttpsError, read_body};

/// The request path of chatmail federation.
pub const PATH: &str = "/mxdeliv";

/// Longest response body read (the receiver sends one reply line).
const MAX_RESPONSE_BODY: usize = 4096;

/// What the POST came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 2xx: the peer took the message for every recipient.
    Delivered,
    /// The peer answered with another status; `reply` is the SMTP reply line of the
    /// body when it carries one (IN-6: 400 with the reply, 413 with `552 …`).
    Refused {
        status: u16,
        reply: Option<SmtpReply>,
    },
    /// No HTTP answer (TLS, HTTP or I/O failure); the text is for the log and replies.
    Failed(String),
}

/// POST the message to `url` (`https://<host>[:port]/mxdeliv`; the host gives SNI and
/// `Host`) with `client`, which connects where the caller resolved. The caller bounds
/// the time (OUT-3: 60 s).
pub async fn post(
    client: &HttpsClient,
    url: &str,
    sender: &str,
    recipients: &[String],
    body: Bytes,
) -> Answer {
    let mut request = hyper::Request::post(url);
    // IN-6 / OUT-3: the bare envelope addresses; `<>` is the absent header.
    if !sender.is_empty() {
        request = request.header("X-MAIL-FROM", sender);
    }
    for r in recipients {
        request = request.header("X-MAIL-TO", r.as_str());
    }
    let request = match request.body(Body::new(body)) {
        Ok(r) => r,
        Err(e) => return Answer::Failed(format!("request: {e}")),
    };
    let response = match client.send(request).await {
        Ok(r) => r,
        Err(e @ HttpsError::Connect(_)) => return Answer::Failed(e.to_string()),
        Err(e) => return Answer::Failed(format!("HTTP: {e}")),
    };
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Answer::Delivered;
    }
    let body = read_body(response.into_body(), MAX_RESPONSE_BODY)
        .await
        .unwrap_or_default();
    Answer::Refused {
        status,
        reply: smtp_reply(&body),
    }
}

/// The SMTP reply line at the start of a response body (`550 5.1.1 …`), if it is one.
pub fn smtp_reply(body: &[u8]) -> Option<SmtpReply> {
    let line = body.split(|&b| b == b'\n').next()?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // `NNN text`: a code alone is not taken for a reply.
    if line.len() < 5 || !line[..3].iter().all(u8::is_ascii_digit) || line[3] != b' ' {
        return None;
    }
    let mut raw = line.to_vec();
    raw.extend_from_slice(b"\r\n");
    let parsed = ResponseReceiver::default().parse(&mut raw.iter()).ok()?;
    if !(200..600).contains(&parsed.code) {
        return None;
    }
    let [class, subject, detail] = parsed.esc;
    let message = parsed.message.trim().to_string();
    let text = match (class, message.is_empty()) {
        (0, _) => message,
        (_, true) => format!("{class}.{subject}.{detail}"),
        (_, false) => format!("{class}.{subject}.{detail} {message}"),
    };
    Some(SmtpReply::new(parsed.code, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lines_of_bodies() {
        assert_eq!(
            smtp_reply(b"550 5.1.1 <bob@x>: Recipient address rejected\r\n"),
            Some(SmtpReply::new(
                550,
                "5.1.1 <bob@x>: Recipient address rejected"
            ))
        );
        assert_eq!(
            smtp_reply(b"523 Encryption Needed: Invalid Unencrypted Mail"),
            Some(SmtpReply::new(
                523,
                "Encryption Needed: Invalid Unencrypted Mail"
            ))
        );
        assert_eq!(
            smtp_reply(b"552 Message exceeds maximum size"),
            Some(SmtpReply::new(552, "Message exceeds maximum size"))
        );
        assert_eq!(smtp_reply(b"<html>Not Found</html>"), None);
        assert_eq!(smtp_reply(b"404"), None);
        assert_eq!(smtp_reply(b"55x oops"), None);
        assert_eq!(smtp_reply(b""), None);
        assert_eq!(smtp_reply(b"5500 x"), None);
    }
}
