//! Control-protocol text: `QuotedString`s (control-spec §2.1.1), the argument words of a
//! command, and hex.

use std::fmt::Write as _;

/// Why an argument could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    #[error("unterminated quoted string")]
    Unterminated,
    #[error("bad escape in quoted string")]
    BadEscape,
    #[error("invalid hexadecimal encoding")]
    BadHex,
}

/// Writes `s` as a `QuotedString`: `"` and `\` are escaped, and so are control and
/// non-ASCII bytes (`\n`, `\r`, `\t`, else three octal digits), as C tor's `esc_for_log` does.
pub fn quote(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for &b in s {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\{b:03o}");
            }
        }
    }
    out.push('"');
    out
}

/// Decodes the `QuotedString` at the start of `s` (which must begin with `"`). Returns the
/// bytes and the rest of `s` after the closing quote. Accepts C escapes (`\n \r \t \\ \"
/// \'`, octal `\NNN`, `\xHH`) like C tor's `decode_qstring`; any other escaped character
/// stands for itself.
pub fn unquote(s: &str) -> Result<(Vec<u8>, &str), QuoteError> {
    let b = s.as_bytes();
    if b.first() != Some(&b'"') {
        return Err(QuoteError::Unterminated);
    }
    let mut out = Vec::new();
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'"' => return Ok((out, &s[i + 1..])),
            b'\\' => {
                let c = *b.get(i + 1).ok_or(QuoteError::Unterminated)?;
                i += 2;
                match c {
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'x' => {
                        let h = b.get(i..i + 2).ok_or(QuoteError::BadEscape)?;
                        let v = std::str::from_utf8(h)
                            .ok()
                            .and_then(|h| u8::from_str_radix(h, 16).ok())
                            .ok_or(QuoteError::BadEscape)?;
                        out.push(v);
                        i += 2;
                    }
                    b'0'..=b'7' => {
                        let mut v: u32 = u32::from(c - b'0');
                        let mut n = 1;
                        while n < 3 && i < b.len() && (b'0'..=b'7').contains(&b[i]) {
                            v = v * 8 + u32::from(b[i] - b'0');
                            i += 1;
                            n += 1;
                        }
                        out.push(u8::try_from(v).map_err(|_| QuoteError::BadEscape)?);
                    }
                    other => out.push(other),
                }
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    Err(QuoteError::Unterminated)
}

/// One argument: a bare word or a decoded `QuotedString`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    Word(String),
    Quoted(Vec<u8>),
}

impl Arg {
    /// The argument as text (a quoted one lossily decoded).
    pub fn text(&self) -> String {
        match self {
            Arg::Word(w) => w.clone(),
            Arg::Quoted(q) => String::from_utf8_lossy(q).into_owned(),
        }
    }
}

/// Splits a command's arguments at spaces; a word starting with `"` is a `QuotedString`.
pub fn split_args(s: &str) -> Result<Vec<Arg>, QuoteError> {
    let mut out = Vec::new();
    let mut rest = s.trim_start_matches([' ', '\t']);
    while !rest.is_empty() {
        if rest.starts_with('"') {
            let (q, after) = unquote(rest)?;
            out.push(Arg::Quoted(q));
            rest = after;
        } else {
            let end = rest.find([' ', '\t']).unwrap_or(rest.len());
            out.push(Arg::Word(rest[..end].to_string()));
            rest = &rest[end..];
        }
        rest = rest.trim_start_matches([' ', '\t']);
    }
    Ok(out)
}

/// Upper-case hex, as C tor writes it.
pub fn hex_upper(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02X}");
    }
    s
}

/// Decodes hex of either case.
pub fn unhex(s: &str) -> Result<Vec<u8>, QuoteError> {
    if !s.len().is_multiple_of(2) {
        return Err(QuoteError::BadHex);
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(QuoteError::BadHex)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_round_trips_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let q = quote(&all);
        assert!(q.is_ascii() && !q[1..q.len() - 1].contains("\"\""));
        let (back, rest) = unquote(&q).unwrap();
        assert_eq!(back, all);
        assert_eq!(rest, "");
        assert_eq!(quote(b"a \"b\" \\c\n"), r#""a \"b\" \\c\n""#);
    }

    #[test]
    fn unquote_c_escapes_and_errors() {
        let (v, rest) = unquote(r#""x\x41\101\'\q" tail"#).unwrap();
        assert_eq!(v, b"xAA'q");
        assert_eq!(rest, " tail");
        assert_eq!(unquote(r#""open"#), Err(QuoteError::Unterminated));
        assert_eq!(unquote(r#""bad\x4"#), Err(QuoteError::BadEscape));
        assert_eq!(unquote(r#""\777""#), Err(QuoteError::BadEscape));
        assert_eq!(unquote("noquote"), Err(QuoteError::Unterminated));
    }

    #[test]
    fn args_mix_words_and_quoted() {
        let a = split_args(r#"  SAFECOOKIE "a b\"c"  deadBEEF "#).unwrap();
        assert_eq!(
            a,
            [
                Arg::Word("SAFECOOKIE".into()),
                Arg::Quoted(b"a b\"c".to_vec()),
                Arg::Word("deadBEEF".into())
            ]
        );
        assert!(split_args(r#"x "y"#).is_err());
        assert_eq!(unhex("deadBEEF").unwrap(), [0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(unhex("abc"), Err(QuoteError::BadHex));
        assert_eq!(unhex("zz"), Err(QuoteError::BadHex));
        assert_eq!(hex_upper(&[0xab, 1]), "AB01");
    }
}
