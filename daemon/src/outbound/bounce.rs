//! Bounces (OUT-7): a delivery status notification (RFC 3464) for the sender of a
//! message that failed permanently or expired: `multipart/report;
//! report-type=delivery-status` with a human-readable part, the machine-readable
//! `message/delivery-status` part and the original header section
//! (`text/rfc822-headers`, RFC 6522). `From: MAILER-DAEMON@<domain>`, `Auto-Submitted:
//! auto-replied`, sent with the empty envelope sender, so receivers accept it through
//! IN-4d(i) and nobody bounces it again.

use crate::config::Config;
use crate::policy::SmtpReply;

/// One failed recipient and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub recipient: String,
    pub reply: SmtpReply,
}

/// The bounce message for `failures` of the message `original` sent by `sender`, made
/// at `now` (Unix seconds). `arrival` is when the original was accepted.
pub fn build(
    config: &Config,
    sender: &str,
    original: &[u8],
    failures: &[Failure],
    arrival: u64,
    now: u64,
) -> Vec<u8> {
    let domain = config.address_domain();
    let host = config.host_name();
    let boundary = format!("{:016x}-bounce-{now}", rand::random::<u64>());
    let date = crate::clock::rfc5322_date(now);
    let mut m = String::new();
    m += &format!("From: Mail Delivery System <MAILER-DAEMON@{domain}>\r\n");
    m += &format!("To: <{sender}>\r\n");
    m += "Subject: Undelivered Mail Returned to Sender\r\n";
    m += &format!("Date: {date}\r\n");
    m += &format!(
        "Message-ID: <{:016x}.bounce@{}>\r\n",
        rand::random::<u64>(),
        domain.trim_matches(|c| c == '[' || c == ']')
    );
    // RFC 3834 §5: an automatic reply; OUT-7 / IN-4d(i).
    m += "Auto-Submitted: auto-replied\r\n";
    m += "MIME-Version: 1.0\r\n";
    // RFC 6522 §3.
    m += &format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n"
    );
    m += "\r\n";
    m += "This is a MIME-encapsulated message.\r\n\r\n";

    // 1. Human-readable explanation.
    m += &format!("--{boundary}\r\n");
    m += "Content-Description: Notification\r\n";
    m += "Content-Type: text/plain; charset=utf-8\r\n\r\n";
    m += &format!("This is the mail system at host {host}.\r\n\r\n");
    m += "Your message could not be delivered to one or more recipients.\r\n";
    m += "It is attached below.\r\n\r\n";
    for f in failures {
        m += &format!("<{}>: {}\r\n", f.recipient, one_line(&f.reply.to_string()));
    }
    m += "\r\n";

    // 2. RFC 3464 §2.2, §2.3: per-message then per-recipient fields.
    m += &format!("--{boundary}\r\n");
    m += "Content-Description: Delivery report\r\n";
    m += "Content-Type: message/delivery-status\r\n\r\n";
    m += &format!("Reporting-MTA: dns; {host}\r\n");
    m += &format!("Arrival-Date: {}\r\n", crate::clock::rfc5322_date(arrival));
    for f in failures {
        m += "\r\n";
        m += &format!("Final-Recipient: rfc822; {}\r\n", f.recipient);
        m += "Action: failed\r\n";
        m += &format!("Status: {}\r\n", status_code(&f.reply));
        m += &format!(
            "Diagnostic-Code: smtp; {}\r\n",
            one_line(&f.reply.to_string())
        );
    }
    m += "\r\n";

    // 3. RFC 6522 §3: the original header section only (the body is ciphertext of no
    // use to the sender, and it keeps the bounce small).
    m += &format!("--{boundary}\r\n");
    m += "Content-Description: Undelivered Message Headers\r\n";
    m += "Content-Type: text/rfc822-headers\r\n\r\n";
    let mut out = m.into_bytes();
    out.extend_from_slice(header_section(original));
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// The header section of a message (up to, not including, the empty line).
fn header_section(message: &[u8]) -> &[u8] {
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &message[..i + 2],
        None => message,
    }
}

/// RFC 3464 §2.3.4 `Status`: the enhanced code of the reply when it has one, else the
/// class of the reply code (`5.0.0` / `4.0.0`).
fn status_code(reply: &SmtpReply) -> String {
    let first = reply.text.split_whitespace().next().unwrap_or("");
    let parts: Vec<&str> = first.split('.').collect();
    let enhanced = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && matches!(parts[0], "2" | "4" | "5");
    if enhanced {
        first.to_string()
    } else if reply.code / 100 == 4 {
        // An expired message: temporary failures until the end.
        "4.4.7".to_string()
    } else {
        "5.0.0".to_string()
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::{MessageParser, MimeHeaders};

    fn config() -> Config {
        Config::parse("[params]\nmail_domain = relay.test\n")
            .expect("config")
            .config
    }

    #[test]
    fn report_structure() {
        let original =
            b"From: a@relay.test\r\nTo: b@other.test\r\nSubject: [...]\r\n\r\nsecret body\r\n";
        let failures = [Failure {
            recipient: "b@other.test".into(),
            reply: SmtpReply::new(550, "5.1.1 <b@other.test>: Recipient address rejected"),
        }];
        let raw = build(&config(), "a@relay.test", original, &failures, 100, 200);
        let msg = MessageParser::default().parse(&raw).expect("parses");
        let ct = msg.root_part().content_type().expect("content type");
        assert_eq!(ct.ctype(), "multipart");
        assert_eq!(ct.subtype(), Some("report"));
        assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
        let from = msg.from().and_then(|f| f.first()).and_then(|a| a.address());
        assert_eq!(from, Some("MAILER-DAEMON@relay.test"));
        assert_eq!(
            msg.header_raw("Auto-Submitted").map(str::trim),
            Some("auto-replied")
        );
        let text = String::from_utf8_lossy(&raw);
        assert!(text.contains("Final-Recipient: rfc822; b@other.test\r\n"));
        assert!(text.contains("Status: 5.1.1\r\n"));
        assert!(text.contains("Diagnostic-Code: smtp; 550 5.1.1 <b@other.test>"));
        assert!(text.contains("Subject: [...]\r\n"), "original headers kept");
        assert!(!text.contains("secret body"), "original body left out");
        assert_eq!(msg.parts.len(), 4, "report + 3 parts");
    }

    #[test]
    fn status_codes() {
        assert_eq!(status_code(&SmtpReply::new(550, "5.1.1 no")), "5.1.1");
        assert_eq!(status_code(&SmtpReply::new(554, "rejected")), "5.0.0");
        assert_eq!(status_code(&SmtpReply::new(421, "timeout")), "4.4.7");
        assert_eq!(
            status_code(&SmtpReply::new(512, "Domain x does not exist")),
            "5.0.0"
        );
    }
}
