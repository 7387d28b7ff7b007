//! PEM armour as C tor writes and reads it (`lib/encoding/pem.c`): `-----BEGIN <TAG>-----`,
//! base64 in 64-column lines, `-----END <TAG>-----`.

use base64::Engine;
use thiserror::Error;

/// Why a PEM block could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PemError {
    #[error("missing \"-----BEGIN {0}-----\" line")]
    MissingBegin(String),
    #[error("missing \"-----END {0}-----\" line")]
    MissingEnd(String),
    #[error("invalid base64 inside the PEM block")]
    BadBase64,
}

/// Armours `der` with `tag`; lines end in `\n`, as C tor writes key files.
pub fn encode(tag: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * tag.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(tag);
    out.push_str("-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(tag);
    out.push_str("-----\n");
    out
}

/// Decodes the first PEM block tagged `tag`. Like C tor's `pem_decode`, leading whitespace is
/// skipped, the BEGIN line must be the first thing in the input, and trailing text is ignored.
pub fn decode(tag: &str, input: &[u8]) -> Result<Vec<u8>, PemError> {
    let begin = format!("-----BEGIN {tag}-----");
    let start = input
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(input.len());
    let rest = &input[start..];
    if !rest.starts_with(begin.as_bytes()) {
        return Err(PemError::MissingBegin(tag.to_owned()));
    }
    let rest = &rest[begin.len()..];
    // Only spaces (or CR) may follow the BEGIN marker on its line.
    let sp = rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t' || b == b'\r')
        .count();
    let rest = &rest[sp..];
    if rest.first() != Some(&b'\n') {
        return Err(PemError::MissingBegin(tag.to_owned()));
    }
    let end = format!("\n-----END {tag}-----");
    let end_at = find(rest, end.as_bytes()).ok_or_else(|| PemError::MissingEnd(tag.to_owned()))?;
    let body: Vec<u8> = rest[..end_at]
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(&body)
        .map_err(|_| PemError::BadBase64)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_line_length() {
        let data: Vec<u8> = (0..200u8).collect();
        let pem = encode("RSA PRIVATE KEY", &data);
        assert!(pem.lines().all(|l| l.len() <= 64 || l.starts_with("-----")));
        assert!(pem.ends_with("-----END RSA PRIVATE KEY-----\n"));
        assert_eq!(decode("RSA PRIVATE KEY", pem.as_bytes()).unwrap(), data);
        // Leading whitespace and trailing junk are tolerated, as in C tor.
        let padded = format!("\n  {pem}junk");
        assert_eq!(decode("RSA PRIVATE KEY", padded.as_bytes()).unwrap(), data);
    }

    #[test]
    fn rejects_bad_blocks() {
        let pem = encode("RSA PRIVATE KEY", b"hello");
        assert!(matches!(
            decode("RSA PUBLIC KEY", pem.as_bytes()),
            Err(PemError::MissingBegin(_))
        ));
        assert!(matches!(
            decode("RSA PRIVATE KEY", &pem.as_bytes()[..pem.len() - 20]),
            Err(PemError::MissingEnd(_))
        ));
        let garbage = pem.replace("aGVsbG8=", "a*b!");
        assert_eq!(
            decode("RSA PRIVATE KEY", garbage.as_bytes()),
            Err(PemError::BadBase64)
        );
        assert!(decode("X", b"").is_err());
    }
}
