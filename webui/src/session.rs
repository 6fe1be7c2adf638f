//! Signed cookies and CSRF tokens (issue #6 item 6).
//!
//! Every cookie this crate issues that grants something is a signed token:
//! `base64url(kind ‖ issued ‖ id)` `.` `base64url(HMAC-SHA256(key, "rb-cookie" ‖ payload))`,
//! with the key from [`crate::Backend::session_key`] (it changes when the admin password
//! changes, which ends every session). Kinds: the admin session (`rb_session`, 12 h), the
//! pre-session anchor for CSRF tokens on forms shown before login (`rb_pre`, 12 h), and the
//! short-lived proof that the visitor claimed the box (`rb_claimed`, 15 min).
//!
//! A CSRF token is `base64url(HMAC-SHA256(key, "csrf" ‖ id))` where `id` is the session's
//! (or, before login, the pre-session cookie's) random id.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Cookie holding the admin session.
pub const SESSION_COOKIE: &str = "rb_session";
/// Cookie anchoring CSRF tokens before login.
pub const PRE_COOKIE: &str = "rb_pre";
/// Cookie proving a successful claim (presence proof), until the password is set.
pub const CLAIMED_COOKIE: &str = "rb_claimed";
/// Cookie holding the claim window's ticket (claim by button).
pub const CLAIM_TICKET_COOKIE: &str = "rb_claim";

/// Lifetime of a session and of the pre-session anchor: 12 h.
pub const SESSION_SECONDS: u64 = 12 * 3600;
/// Lifetime of the claim proof: 15 min.
pub const CLAIMED_SECONDS: u64 = 15 * 60;
/// Accepted clock skew for issue times in the future.
const SKEW_SECONDS: u64 = 60;

/// What a signed cookie grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Session = 1,
    Pre = 2,
    Claimed = 3,
}

impl Kind {
    fn lifetime(self) -> u64 {
        match self {
            Kind::Session | Kind::Pre => SESSION_SECONDS,
            Kind::Claimed => CLAIMED_SECONDS,
        }
    }
}

/// Random id of a session or pre-session anchor.
pub type Id = [u8; 16];

/// Seconds since the Unix epoch (wall clock: cookies outlive the process).
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh random id.
pub fn new_id() -> Id {
    rand::random()
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; this cannot fail.
    HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key"))
}

/// Sign a cookie value of `kind` for `id`, issued at `issued` (Unix seconds).
pub fn sign(key: &[u8], kind: Kind, id: &Id, issued: u64) -> String {
    let mut payload = Vec::with_capacity(25);
    payload.push(kind as u8);
    payload.extend_from_slice(&issued.to_be_bytes());
    payload.extend_from_slice(id);
    let mut m = mac(key);
    m.update(b"rb-cookie");
    m.update(&payload);
    let tag = m.finalize().into_bytes();
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&payload),
        URL_SAFE_NO_PAD.encode(tag)
    )
}

/// Check a cookie value: right key, right kind, not expired. Returns its id.
pub fn verify(key: &[u8], kind: Kind, value: &str, now: u64) -> Option<Id> {
    let (payload, tag) = value.split_once('.')?;
    if payload.len() > 64 || tag.len() > 64 {
        return None;
    }
    let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    let mut m = mac(key);
    m.update(b"rb-cookie");
    m.update(&payload);
    m.verify_slice(&tag).ok()?; // constant-time compare
    if payload.len() != 25 || payload[0] != kind as u8 {
        return None;
    }
    let issued = u64::from_be_bytes(payload[1..9].try_into().ok()?);
    if issued > now.saturating_add(SKEW_SECONDS) || now.saturating_sub(issued) >= kind.lifetime() {
        return None;
    }
    payload[9..25].try_into().ok()
}

/// The CSRF token for forms of the visitor anchored by `id`.
pub fn csrf_token(key: &[u8], id: &Id) -> String {
    let mut m = mac(key);
    m.update(b"csrf");
    m.update(id);
    URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
}

/// Whether `token` is the CSRF token for `id` (constant-time compare).
pub fn csrf_ok(key: &[u8], id: &Id, token: &str) -> bool {
    if token.len() > 64 {
        return false;
    }
    let Ok(tag) = URL_SAFE_NO_PAD.decode(token) else {
        return false;
    };
    let mut m = mac(key);
    m.update(b"csrf");
    m.update(id);
    m.verify_slice(&tag).is_ok()
}

/// The value of cookie `name` in a `Cookie` request header value (first match).
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|part| {
        let (k, v) = part.trim().split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

/// A `Set-Cookie` value: `HttpOnly; SameSite=Strict; Path=/admin`, `Secure` over HTTPS.
/// `max_age` 0 deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age: u64, https: bool) -> String {
    let secure = if https { "; Secure" } else { "" };
    format!("{name}={value}; Max-Age={max_age}; Path=/admin; HttpOnly; SameSite=Strict{secure}")
}

/// The claim ticket as a cookie value: kept as is when it only has cookie-safe
/// characters, otherwise base64url with a `~` prefix.
pub fn encode_ticket(ticket: &str) -> String {
    if !ticket.is_empty()
        && ticket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        ticket.to_string()
    } else {
        format!("~{}", URL_SAFE_NO_PAD.encode(ticket))
    }
}

/// Inverse of [`encode_ticket`].
pub fn decode_ticket(value: &str) -> Option<String> {
    match value.strip_prefix('~') {
        Some(b64) => String::from_utf8(URL_SAFE_NO_PAD.decode(b64).ok()?).ok(),
        None => Some(value.to_string()),
    }
}

/// Constant-time string equality (ticket compare).
pub fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_roundtrip_and_rejections() {
        let key = b"k1";
        let id = new_id();
        let v = sign(key, Kind::Session, &id, 1000);
        assert_eq!(verify(key, Kind::Session, &v, 1000), Some(id));
        assert_eq!(verify(key, Kind::Pre, &v, 1000), None, "wrong kind");
        assert_eq!(verify(b"k2", Kind::Session, &v, 1000), None, "wrong key");
        assert_eq!(
            verify(key, Kind::Session, &v, 1000 + SESSION_SECONDS),
            None,
            "expired"
        );
        assert_eq!(verify(key, Kind::Session, &v, 0), None, "from the future");
        let c = sign(key, Kind::Claimed, &id, 1000);
        assert_eq!(verify(key, Kind::Claimed, &c, 1000 + 899), Some(id));
        assert_eq!(verify(key, Kind::Claimed, &c, 1000 + 900), None);
        let mut tampered = v.clone();
        tampered.insert(3, 'A');
        assert_eq!(verify(key, Kind::Session, &tampered, 1000), None);
        assert_eq!(verify(key, Kind::Session, "", 1000), None);
        assert_eq!(verify(key, Kind::Session, "..", 1000), None);
    }

    #[test]
    fn csrf_tokens() {
        let id = new_id();
        let t = csrf_token(b"k", &id);
        assert!(csrf_ok(b"k", &id, &t));
        assert!(!csrf_ok(b"k", &new_id(), &t));
        assert!(!csrf_ok(b"other", &id, &t));
        assert!(!csrf_ok(b"k", &id, ""));
        assert!(!csrf_ok(b"k", &id, "not base64 !"));
    }

    #[test]
    fn cookie_parsing_and_tickets() {
        let h = "a=1; rb_session=xyz ; b=\"q\"";
        assert_eq!(cookie(h, "rb_session"), Some("xyz"));
        assert_eq!(cookie(h, "b"), Some("q"));
        assert_eq!(cookie(h, "c"), None);
        for t in ["abc-DEF_1.2", "a b;c=", ""] {
            assert_eq!(decode_ticket(&encode_ticket(t)).as_deref(), Some(t));
        }
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
