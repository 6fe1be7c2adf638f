//! Why an attempt failed, in plain words for the operator (issue 18: `relaybox queue`, the
//! status page's queue): a class of failure ("connection refused", "timed out", "TLS
//! failed", "no MX / DNS failure", …) or, for an answer of the peer, its reply code with
//! a short text. Nothing that names a person or a machine stays in it: words with `@`,
//! `<…>` paths and IP addresses are left out (LOG-2), and the result is bounded.
//!
//! The input is the reply an [`Outcome`](super::Outcome) carries for a temporary failure:
//! either the peer's own reply to MAIL/RCPT/DATA, or one made by `transport` and `route`
//! for a failure before any reply (their texts are matched here, and the tests beside
//! them feed real failures through this function).

use std::net::IpAddr;

use crate::policy::SmtpReply;

/// Longest text of the peer kept in a reason, in characters.
const MAX_PEER_TEXT: usize = 80;

/// `reply` (a failed attempt's reason) in plain words without addresses.
pub fn plain(reply: &SmtpReply) -> String {
    let text = reply.text.trim();
    // `transport`: every MX host failed before a transaction; the last host's error.
    if let Some(rest) = text.strip_prefix("Failed to connect to any mail server")
        && reply.code == 421
    {
        let error = rest.split_once(": ").map_or("", |(_, e)| e);
        return connection(error);
    }
    if text.starts_with("DNS resolution failed for") {
        return "no MX / DNS failure".into();
    }
    if text.starts_with("4.4.2 Delivery attempt timed out") {
        return "timed out".into();
    }
    let kind = match reply.code {
        400..=499 => "temporary rejection",
        500..=599 => "rejected",
        _ => "unexpected answer",
    };
    with_reply(kind, reply.code, text)
}

/// A failure to reach a host or to start a transaction with it (`transport`'s and
/// `smtp::HopError`'s texts).
fn connection(error: &str) -> String {
    let lower = error.to_ascii_lowercase();
    // `smtp::HopError::Refused`: "<stage> refused: <code> <text>".
    if let Some((stage, reply)) = error.split_once(" refused: ") {
        let (code, text) = reply.split_once(' ').unwrap_or((reply, ""));
        if let Ok(code) = code.parse::<u16>() {
            let stage = match stage {
                "greeting" => "refused the connection",
                "EHLO" => "refused EHLO",
                "STARTTLS" => "refused STARTTLS",
                _ => "refused",
            };
            return with_reply(stage, code, text);
        }
    }
    let class = if lower.contains("no address records")
        || lower.contains("address lookup")
        || lower.contains("no usable address")
        || lower.contains("no mail server")
    {
        "no MX / DNS failure"
    } else if lower.contains("refused") {
        "connection refused"
    } else if lower.contains("timed out") {
        "timed out"
    } else if lower.contains("starttls not offered") {
        "TLS failed: STARTTLS not offered"
    } else if lower.contains("tls") || lower.contains("certificate") {
        "TLS failed"
    } else if lower.contains("unreachable") || lower.contains("no route") {
        "network unreachable"
    } else if lower.contains("connection lost") || lower.contains("reset") {
        "connection lost"
    } else if lower.contains("malformed") {
        "protocol error"
    } else {
        "connection failed"
    };
    class.to_string()
}

/// `<kind> <code> <text>` with the text cleaned and bounded.
fn with_reply(kind: &str, code: u16, text: &str) -> String {
    let text = clean(text);
    if text.is_empty() {
        format!("{kind} {code}")
    } else {
        format!("{kind} {code} {text}")
    }
}

/// A peer's text without addresses, control characters or excess length.
fn clean(text: &str) -> String {
    let mut out = String::new();
    let mut dropped = false;
    for word in text.split_whitespace() {
        let unbracketed = word.replace(['[', ']'], "");
        let bare = unbracketed.trim_matches(|c: char| ",;:.()\"'".contains(c));
        let personal = word.contains('@')
            || word.contains('<')
            || word.contains('>')
            || bare.parse::<IpAddr>().is_ok()
            || bare.rsplit_once(':').is_some_and(|(ip, port)| {
                port.parse::<u16>().is_ok() && ip.parse::<IpAddr>().is_ok()
            });
        if personal {
            if !dropped {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push('…');
            }
            dropped = true;
            continue;
        }
        dropped = false;
        let word: String = word.chars().filter(|c| !c.is_control()).collect();
        if !out.is_empty() {
            out.push(' ');
        }
        out += &word;
    }
    if out.chars().count() > MAX_PEER_TEXT {
        out = out.chars().take(MAX_PEER_TEXT - 1).collect();
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(code: u16, text: &str) -> String {
        plain(&SmtpReply::new(code, text))
    }

    #[test]
    fn classes_of_failures_before_any_reply() {
        let fail = |e: &str| {
            r(
                421,
                &format!("Failed to connect to any mail server; last attempt to mx.test: {e}"),
            )
        };
        assert_eq!(
            fail("127.0.0.9:25: Connection refused (os error 111)"),
            "connection refused"
        );
        assert_eq!(fail("connection timed out (127.0.0.9:25: x)"), "timed out");
        assert_eq!(fail("timed out waiting for the EHLO reply"), "timed out");
        assert_eq!(
            fail("TLS handshake failed: invalid peer certificate: UnknownIssuer"),
            "TLS failed"
        );
        assert_eq!(
            fail("STARTTLS not offered"),
            "TLS failed: STARTTLS not offered"
        );
        assert_eq!(
            fail("no address records for mx.test"),
            "no MX / DNS failure"
        );
        assert_eq!(
            fail("connection lost during DATA: broken pipe"),
            "connection lost"
        );
        assert_eq!(
            fail("greeting refused: 421 4.3.2 <postmaster@mx.test> busy, try later"),
            "refused the connection 421 4.3.2 … busy, try later"
        );
        assert_eq!(
            fail("EHLO refused: 554 5.7.1 192.0.2.7 is listed"),
            "refused EHLO 554 5.7.1 … is listed"
        );
        assert_eq!(
            r(421, "DNS resolution failed for x.test"),
            "no MX / DNS failure"
        );
        assert_eq!(r(421, "4.4.2 Delivery attempt timed out"), "timed out");
    }

    #[test]
    fn the_peers_answer_keeps_its_code_without_addresses() {
        assert_eq!(
            r(
                451,
                "4.7.1 <bob@example.org>: Recipient address rejected: greylisted"
            ),
            "temporary rejection 451 4.7.1 … Recipient address rejected: greylisted"
        );
        assert_eq!(
            r(
                450,
                "4.2.0 bob@example.org mailbox busy from [192.0.2.1]:2525"
            ),
            "temporary rejection 450 4.2.0 … mailbox busy from …"
        );
        assert_eq!(
            r(550, "5.1.1 user unknown bob@example.org"),
            "rejected 550 5.1.1 user unknown …"
        );
        let long = r(452, &"word ".repeat(100));
        assert!(long.chars().count() <= 120, "{long}");
        assert!(long.ends_with('…'));
        assert_eq!(r(451, "\u{1b}[31mred"), "temporary rejection 451 [31mred");
    }
}
