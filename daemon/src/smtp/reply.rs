//! The fixed reply lines of the SMTP server (spec/relay.md §10 and RFC 5321 §4.2), in
//! one place so tests and sessions agree on the exact words. Replies decided by policy
//! rules arrive as [`SmtpReply`] from `crate::policy`.

use crate::policy::SmtpReply;

fn r(code: u16, text: &str) -> SmtpReply {
    SmtpReply::new(code, text)
}

// ---- session ------------------------------------------------------------------------

pub fn bye() -> SmtpReply {
    r(221, "2.0.0 Bye")
}
pub fn ok() -> SmtpReply {
    r(250, "2.0.0 Ok")
}
pub fn mail_ok() -> SmtpReply {
    r(250, "2.1.0 Ok")
}
pub fn rcpt_ok() -> SmtpReply {
    r(250, "2.1.5 Ok")
}
/// §10 "accepted": the durability promise, only after `Store::deliver` returned `Ok`.
pub fn start_data() -> SmtpReply {
    r(354, "End data with <CR><LF>.<CR><LF>")
}
pub fn help() -> SmtpReply {
    r(
        214,
        "2.0.0 Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA RSET NOOP VRFY QUIT",
    )
}
/// IN-3: the same answer for every name.
pub fn vrfy() -> SmtpReply {
    r(
        252,
        "2.0.0 Cannot VRFY user, but will accept message and attempt delivery",
    )
}
pub fn ready_tls() -> SmtpReply {
    r(220, "2.0.0 Ready to start TLS")
}

// ---- protocol errors ----------------------------------------------------------------

pub fn line_too_long() -> SmtpReply {
    r(500, "5.5.2 Line too long")
}
pub fn nul_in_line() -> SmtpReply {
    r(500, "5.5.2 Error: NUL character in command")
}
pub fn unknown_command() -> SmtpReply {
    r(500, "5.5.2 Error: command not recognized")
}
pub fn not_implemented() -> SmtpReply {
    r(502, "5.5.1 Error: command not implemented")
}
pub fn syntax(usage: &str) -> SmtpReply {
    r(501, &format!("5.5.4 Syntax: {usage}"))
}
pub fn bad_param(param: &str) -> SmtpReply {
    r(501, &format!("5.5.4 Error: invalid {param} parameter"))
}
/// RFC 5321 §4.2.2: 555 for unrecognised MAIL/RCPT parameters.
pub fn unsupported_param(param: &str) -> SmtpReply {
    r(555, &format!("5.5.4 Unsupported option: {param}"))
}
pub fn bad_sender_syntax() -> SmtpReply {
    r(501, "5.1.7 Bad sender address syntax")
}
pub fn need_helo() -> SmtpReply {
    r(503, "5.5.1 Error: send HELO/EHLO first")
}
pub fn nested_mail() -> SmtpReply {
    r(503, "5.5.1 Error: nested MAIL command")
}
pub fn need_mail() -> SmtpReply {
    r(503, "5.5.1 Error: need MAIL command")
}
pub fn need_rcpt() -> SmtpReply {
    r(503, "5.5.1 Error: need RCPT command")
}
pub fn tls_active() -> SmtpReply {
    r(503, "5.5.1 Error: TLS already active")
}
pub fn too_many_errors() -> SmtpReply {
    r(421, "4.7.0 Error: too many errors")
}
pub fn timeout(host: &str) -> SmtpReply {
    r(421, &format!("4.4.2 {host} Error: timeout exceeded"))
}

// ---- security and policy ------------------------------------------------------------

/// IN-1, §10: mail commands before STARTTLS on 25 and 587.
pub fn must_starttls() -> SmtpReply {
    r(530, "5.7.0 Must issue a STARTTLS command first")
}
/// RFC 4954 §6: AUTH on a connection without TLS.
pub fn auth_needs_tls() -> SmtpReply {
    r(
        538,
        "5.7.11 Encryption required for requested authentication mechanism",
    )
}
pub fn auth_not_enabled() -> SmtpReply {
    r(503, "5.5.1 Error: authentication not enabled")
}
pub fn auth_again() -> SmtpReply {
    r(503, "5.5.1 Error: already authenticated")
}
pub fn auth_in_transaction() -> SmtpReply {
    r(503, "5.5.1 Error: MAIL transaction in progress")
}
/// RFC 4954 §6.
pub fn auth_mechanism() -> SmtpReply {
    r(504, "5.5.4 Unrecognized authentication type")
}
/// RFC 4954 §4: the client sent `*`.
pub fn auth_cancelled() -> SmtpReply {
    r(501, "5.0.0 Authentication cancelled")
}
pub fn auth_bad_base64() -> SmtpReply {
    r(501, "5.5.2 Cannot decode response")
}
pub fn auth_ok() -> SmtpReply {
    r(235, "2.7.0 Authentication successful")
}
pub fn auth_failed() -> SmtpReply {
    r(535, "5.7.8 Authentication credentials invalid")
}
pub fn auth_temporary() -> SmtpReply {
    r(454, "4.7.0 Temporary authentication failure")
}
/// RFC 4954 §6: 454, a temporary failure; the password was not checked.
pub fn auth_too_many_attempts() -> SmtpReply {
    r(
        454,
        "4.7.0 Too many authentication attempts from your address, try again later",
    )
}
/// An unknown name whose creation at this login was refused (`crate::auth`
/// `CreationRefusal`), with its plain reason: the password was not checked.
pub fn auth_creation_refused(refusal: &crate::auth::CreationRefusal) -> SmtpReply {
    if refusal.is_temporary() {
        // RFC 4954 §6: 454 4.7.0 "Temporary authentication failure": "the client SHOULD
        // NOT prompt the user for another password … and should instead notify the user
        // of server failure" — the load, memory and disk limits exactly. (432 4.7.12 is a
        // password transition, 535 5.7.8 bad credentials: neither is the case.)
        r(454, &format!("4.7.0 {}", refusal.user_text()))
    } else {
        // Sign-up turned off (CFG-6): permanent until the owner acts. RFC 4954 has no
        // permanent AUTH code for it (535 5.7.8 would say "wrong password", 525 5.7.13
        // is for a disabled existing account after a successful authentication), so
        // RFC 5321 §4.2.3's 550 "command rejected for policy reasons" with RFC 3463
        // §3.8's X.7.0 "other or undefined security status".
        r(550, &format!("5.7.0 {}", refusal.user_text()))
    }
}
pub fn auth_too_many() -> SmtpReply {
    r(421, "4.7.0 Error: too many failed authentication attempts")
}
/// The logged-in account was deleted or blocked during the session.
pub fn account_removed() -> SmtpReply {
    r(
        421,
        "4.7.0 This account was removed from the relay; closing",
    )
}
/// SUB-1.
pub fn access_denied() -> SmtpReply {
    r(554, "5.7.1 Access denied")
}
/// SUB-4.
pub fn rate_limited(sender: &str) -> SmtpReply {
    r(
        450,
        &format!("4.7.1: Too much mail from <{sender}>, slow down"),
    )
}
/// SUB-5, MAIL SIZE= and DATA.
pub fn too_big() -> SmtpReply {
    r(552, "5.3.4 Message size exceeds fixed limit")
}

/// RFC 3463 4.3.1, RFC 1870 §6.1: no room for the message right now; try again later.
pub fn insufficient_storage() -> SmtpReply {
    r(452, "4.3.1 Insufficient system storage, try again later")
}
