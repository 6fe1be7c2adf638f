//! METADATA keys (RFC 5464; spec/relay.md §12, MD-1, IMAP-8, CFG-5): the values the
//! relay serves and the device-token rules.

use super::Handles;

/// The one settable entry (on INBOX).
pub const DEVICE_TOKEN: &str = "/private/devicetoken";
/// MD-1: longest token.
pub const TOKEN_MAX_LEN: usize = 4096;

/// MD-1: is a token whose last SET was at `last_set` still valid at `now`?
/// The rule is `crate::policy::token`'s, shared with the delivery path.
pub fn token_valid(last_set: u64, now: u64) -> bool {
    crate::policy::token::token_valid(last_set, now)
}

/// MD-1: opaque printable ASCII, at most 4096 bytes.
pub fn token_acceptable(token: &[u8]) -> bool {
    !token.is_empty()
        && token.len() <= TOKEN_MAX_LEN
        && token.iter().all(|&b| (0x20..0x7f).contains(&b))
}

/// The value of a server entry on the `""` mailbox (§12 table); `None` is NIL.
pub fn server_entry(h: Handles<'_>, key: &str) -> Option<String> {
    let config = h.config;
    match key.to_ascii_lowercase().as_str() {
        "/shared/vendor/deltachat/maxsmtprecipients" => Some("1000".to_string()),
        // RFC 5464 §6.2.1; the `server_comment` key.
        "/shared/comment" => {
            (!config.server_comment.is_empty()).then(|| config.server_comment.clone())
        }
        // Upstream 1.12: the client versions document (`crate::appversions`).
        "/shared/vendor/deltachat/appversions" => Some(crate::appversions::value(&config.data_dir)),
        "/shared/admin" => (!config.privacy_mail.trim().is_empty())
            .then(|| format!("mailto:{}", config.privacy_mail.trim())),
        // CFG-5: absent → the built-in relay; present → trimmed; empty → NIL.
        "/shared/vendor/deltachat/irohrelay" => match &config.iroh_relay {
            None => Some(format!("https://{}", config.mail_domain)),
            Some(v) if v.trim().is_empty() => None,
            Some(v) => Some(v.trim().to_string()),
        },
        // §12, RT-2: `<mail_domain>:<port>:<username>:<password>` with fresh 5-day
        // credentials; NIL when TURN is disabled or not running (RT-3: core then uses
        // its built-in ICE servers).
        "/shared/vendor/deltachat/turn" => crate::turn::metadata_value(h.turn),
        _ => None,
    }
}

/// GET `/private/devicetoken`: the valid tokens in first-registration order, joined
/// by spaces; NIL when there are none. `tokens` is (token, first, last SET).
pub fn token_value(tokens: &[(String, u64, u64)], now: u64) -> Option<String> {
    let mut valid: Vec<&(String, u64, u64)> =
        tokens.iter().filter(|t| token_valid(t.2, now)).collect();
    valid.sort_by_key(|t| t.1);
    (!valid.is_empty()).then(|| {
        valid
            .iter()
            .map(|t| t.0.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    })
}

/// Tokens to prune (MD-1).
pub fn expired_tokens(tokens: &[(String, u64, u64)], now: u64) -> Vec<String> {
    tokens
        .iter()
        .filter(|t| !token_valid(t.2, now))
        .map(|t| t.0.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::token::TOKEN_MAX_AGE;

    #[test]
    fn token_validity_window() {
        let now = 1_000_000_000;
        assert!(token_valid(now, now));
        assert!(token_valid(now - TOKEN_MAX_AGE, now));
        assert!(!token_valid(now - TOKEN_MAX_AGE - 1, now));
        assert!(token_valid(now + 60, now));
        assert!(!token_valid(now + 61, now));
    }

    #[test]
    fn token_values_in_first_registration_order() {
        let now = 2_000_000_000;
        let tokens = vec![
            ("b".to_string(), 20, now - 5),
            ("a".to_string(), 10, now),
            ("old".to_string(), 5, now - TOKEN_MAX_AGE - 10),
            ("future".to_string(), 30, now + 3600),
        ];
        assert_eq!(token_value(&tokens, now).as_deref(), Some("a b"));
        assert_eq!(expired_tokens(&tokens, now), vec!["old", "future"]);
        assert_eq!(token_value(&[], now), None);
    }

    #[test]
    fn token_shape() {
        assert!(token_acceptable(b"openpgp:AAAA+/="));
        assert!(!token_acceptable(b""));
        assert!(!token_acceptable(b"a\tb"));
        assert!(!token_acceptable(&[b'a'; 4097]));
        assert!(token_acceptable(&[b'a'; 4096]));
    }
}
