//! Digests as text: lower-case hex, and the `sha256:` pins of issue 20's tunnel (as
//! configs hold them and people copy them).

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(D[usize::from(b >> 4)] as char);
        s.push(D[usize::from(b & 15)] as char);
    }
    s
}

/// The 32 bytes of 64 lower-case hex digits.
pub fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nib = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nib(b[2 * i])? << 4) | nib(b[2 * i + 1])?;
    }
    Some(out)
}

/// A certificate pin as written in configs and printed for people: `sha256:` and 64 hex
/// digits (issue 20's tunnel).
pub fn pin_text(sha256: &[u8; 32]) -> String {
    format!("sha256:{}", hex(sha256))
}

/// A pin as [`pin_text`] writes it.
pub fn parse_pin(v: &str) -> Result<[u8; 32], String> {
    v.trim()
        .strip_prefix("sha256:")
        .and_then(decode_hex32)
        .ok_or_else(|| format!("expected sha256: and 64 hex digits, got {v:?}"))
}
