//! The device-token rule of spec/relay.md §12 (MD-1): how long a token's last SET keeps it
//! valid. Invalid tokens are neither served by GETMETADATA (`imap`) nor pushed to (the
//! delivery makes push jobs for valid tokens only, `push` sends them). Times in, decision
//! out; nothing here does I/O.

/// MD-1: a token's last SET older than this makes it invalid.
pub const TOKEN_MAX_AGE: u64 = 90 * 86_400;
/// MD-1: a token dated further in the future than this is invalid.
pub const TOKEN_MAX_FUTURE: u64 = 60;

/// MD-1: is a token whose last SET was at `last_set` still valid at `now`?
pub fn token_valid(last_set: u64, now: u64) -> bool {
    let (from, until) = token_set_window(now);
    (from..=until).contains(&last_set)
}

/// MD-1: the last-SET times of the tokens valid at `now`, inclusive.
pub fn token_set_window(now: u64) -> (u64, u64) {
    (
        now.saturating_sub(TOKEN_MAX_AGE),
        now.saturating_add(TOKEN_MAX_FUTURE),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_validity_table_md_1() {
        let now = 1_000_000_000;
        // (last SET, valid at `now`)
        for (last_set, valid) in [
            (now, true),
            (now - TOKEN_MAX_AGE, true),
            (now - TOKEN_MAX_AGE - 1, false),
            (now + TOKEN_MAX_FUTURE, true),
            (now + TOKEN_MAX_FUTURE + 1, false),
            (0, false),
            (u64::MAX, false),
        ] {
            assert_eq!(token_valid(last_set, now), valid, "last SET {last_set}");
        }
        assert_eq!(
            token_set_window(now),
            (now - 90 * 86_400, now + 60),
            "window"
        );
        // Near the ends of time the window saturates instead of wrapping.
        assert_eq!(token_set_window(5), (0, 65));
        assert_eq!(token_set_window(u64::MAX).1, u64::MAX);
        assert!(token_valid(0, 5));
    }
}
