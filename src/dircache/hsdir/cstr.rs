//! The two C tor string decoders the HSDir path depends on, with C tor's exact acceptance
//! rules, so that Fors accepts and refuses the same descriptors and URLs as a C tor HSDir.
//!
//! - [`base64_decode`]: `base64_decode()` in C tor's `lib/encoding/binascii.c`: whitespace is
//!   skipped anywhere, the first `=` ends the data (nothing after it is looked at), leftover
//!   bits are not required to be zero, and the output must fit `dest_len`.
//! - [`parse_u64`]: `tor_parse_ulong`/`tor_parse_uint64` (`lib/string/parse_int.c`), which
//!   are `strtoul`/`strtoull` in base 10 with the whole string consumed.

/// What one input byte means to C tor's base64 decoder.
enum B64 {
    Value(u32),
    Space,
    Pad,
    Invalid,
}

fn b64_class(c: u8) -> B64 {
    match c {
        b'A'..=b'Z' => B64::Value(u32::from(c - b'A')),
        b'a'..=b'z' => B64::Value(u32::from(c - b'a') + 26),
        b'0'..=b'9' => B64::Value(u32::from(c - b'0') + 52),
        b'+' => B64::Value(62),
        b'/' => B64::Value(63),
        // C tor's table marks TAB, LF, VT, CR and SPACE as skippable (FF is not).
        b'\t' | b'\n' | 0x0b | b'\r' | b' ' => B64::Space,
        b'=' => B64::Pad,
        _ => B64::Invalid,
    }
}

/// Decodes `src` as C tor's `base64_decode(dest, dest_len, src, len)` does; `None` where C
/// returns -1. The result is at most `dest_len` bytes.
pub fn base64_decode(src: &[u8], dest_len: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(dest_len.min(src.len() * 3 / 4 + 3));
    let mut n: u32 = 0;
    let mut n_idx = 0;
    for &c in src {
        match b64_class(c) {
            B64::Invalid => return None,
            B64::Space => continue,
            B64::Pad => break,
            B64::Value(v) => {
                n = (n << 6) | v;
                n_idx += 1;
                if n_idx == 4 {
                    if out.len() + 3 > dest_len {
                        return None;
                    }
                    out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
                    n_idx = 0;
                    n = 0;
                }
            }
        }
    }
    match n_idx {
        // Six leftover bits cannot form a byte.
        1 => return None,
        2 => {
            if out.len() + 1 > dest_len {
                return None;
            }
            out.push((n >> 4) as u8);
        }
        3 => {
            if out.len() + 2 > dest_len {
                return None;
            }
            out.extend_from_slice(&[(n >> 10) as u8, (n >> 2) as u8]);
        }
        _ => {}
    }
    Some(out)
}

/// `strtoull(s, &end, 10)` with C tor's checks: at least one digit, the whole string
/// consumed, no overflow. Like C, an optional leading `+` or `-` is allowed and a negated
/// value wraps (`"-1"` is `u64::MAX`); the caller applies C tor's bounds to the result.
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    // strtoull skips leading isspace() first (the tokenizer already split on most of it,
    // but not on VT or FF).
    let start = s
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))
        .unwrap_or(s.len());
    let s = &s[start..];
    let (neg, digits) = match s.first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: u64 = 0;
    for &d in digits {
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(if neg { v.wrapping_neg() } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn base64_matches_c_rules() {
        let key = [0xa5u8; 32];
        let enc = base64::engine::general_purpose::STANDARD_NO_PAD.encode(key);
        assert_eq!(enc.len(), 43);
        assert_eq!(base64_decode(enc.as_bytes(), 32).unwrap(), key);
        // Padded form, whitespace inside, and junk after '=' are all accepted by C tor.
        let padded = format!("{enc}=");
        assert_eq!(base64_decode(padded.as_bytes(), 32).unwrap(), key);
        let spaced = format!("{} \n{}", &enc[..10], &enc[10..]);
        assert_eq!(base64_decode(spaced.as_bytes(), 32).unwrap(), key);
        let tail = format!("{enc}=*not base64*");
        assert_eq!(base64_decode(tail.as_bytes(), 32).unwrap(), key);
        // Too long for the destination, invalid characters, a lone 6-bit leftover.
        let long = format!("{enc}AAAA");
        assert_eq!(base64_decode(long.as_bytes(), 32), None);
        assert_eq!(base64_decode(b"AA*A", 32), None);
        assert_eq!(base64_decode(b"AAAAA", 32), None);
        // URL-safe alphabet is not C tor's.
        assert_eq!(base64_decode(b"AA-_", 32), None);
        assert_eq!(base64_decode(b"", 32).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn integers_match_strtoull() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b"+7"), Some(7));
        assert_eq!(parse_u64(b"-1"), Some(u64::MAX));
        assert_eq!(parse_u64(b"-0"), Some(0));
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"-"), None);
        assert_eq!(parse_u64(b"12a"), None);
        assert_eq!(parse_u64(b"unicorn"), None);
        assert_eq!(parse_u64(b"\x0b42"), Some(42));
    }
}
