//! C tor's "tagged contents" key-file format (`lib/crypt_ops/crypto_format.c`): a 32-byte
//! header holding the NUL-padded string `== <type>: <tag> ==`, then the raw key bytes.
//! Used for `ed25519v1-secret`, `ed25519v1-public`, `ed25519v1-cert` and `c25519v1` files.

use thiserror::Error;

/// Length of the header.
pub const HEADER_LEN: usize = 32;

/// Why a tagged file's header was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TaggedError {
    #[error("file is {0} bytes, shorter than the 32-byte header")]
    TooShort(usize),
    #[error("header is not \"== <type>: <tag> ==\" padded with NULs")]
    BadHeader,
    #[error("header has type {found:?}, expected {expected:?}")]
    WrongType { expected: String, found: String },
}

/// Builds a file: header then `data`. `typestring` and `tag` are fixed ASCII constants
/// short enough to fit (C: "must be no more than 24").
pub fn encode(typestring: &str, tag: &str, data: &[u8]) -> Vec<u8> {
    let header = format!("== {typestring}: {tag} ==");
    debug_assert!(header.len() < HEADER_LEN);
    let mut out = Vec::with_capacity(HEADER_LEN + data.len());
    out.extend_from_slice(&header.as_bytes()[..header.len().min(HEADER_LEN - 1)]);
    out.resize(HEADER_LEN, 0);
    out.extend_from_slice(data);
    out
}

/// Splits a file into (tag, body), checking the header as C's
/// `crypto_read_tagged_contents_from_file` does. The caller checks the body length.
pub fn decode<'a>(contents: &'a [u8], typestring: &str) -> Result<(String, &'a [u8]), TaggedError> {
    if contents.len() < HEADER_LEN {
        return Err(TaggedError::TooShort(contents.len()));
    }
    let header = &contents[..HEADER_LEN];
    let text_len = header.iter().position(|&b| b == 0).unwrap_or(HEADER_LEN);
    // C copies 32 bytes into a 33-byte buffer, so a header with no NUL is a 32-char string;
    // everything after the string must be NUL.
    let text = std::str::from_utf8(&header[..text_len]).map_err(|_| TaggedError::BadHeader)?;
    if !header[text_len..].iter().all(|&b| b == 0) {
        return Err(TaggedError::BadHeader);
    }
    let inner = text
        .strip_prefix("== ")
        .and_then(|t| t.strip_suffix(" =="))
        .ok_or(TaggedError::BadHeader)?;
    let (found_type, tag) = inner.split_once(": ").ok_or(TaggedError::BadHeader)?;
    if found_type != typestring {
        return Err(TaggedError::WrongType {
            expected: typestring.to_owned(),
            found: found_type.to_owned(),
        });
    }
    Ok((tag.to_owned(), &contents[HEADER_LEN..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes_match_c_tor() {
        let f = encode("ed25519v1-secret", "type0", &[7; 64]);
        assert_eq!(&f[..29], b"== ed25519v1-secret: type0 ==");
        assert_eq!(&f[29..32], &[0, 0, 0]);
        assert_eq!(f.len(), 96);
        let (tag, body) = decode(&f, "ed25519v1-secret").unwrap();
        assert_eq!(tag, "type0");
        assert_eq!(body, &[7; 64]);

        let f = encode("c25519v1", "onion", &[1; 64]);
        assert_eq!(&f[..21], b"== c25519v1: onion ==");
        assert!(f[21..32].iter().all(|&b| b == 0));
    }

    #[test]
    fn rejects_bad_headers() {
        let f = encode("ed25519v1-public", "type0", &[7; 32]);
        assert!(matches!(
            decode(&f, "ed25519v1-secret"),
            Err(TaggedError::WrongType { .. })
        ));
        assert_eq!(
            decode(&f[..31], "ed25519v1-public"),
            Err(TaggedError::TooShort(31))
        );
        let mut junk = f.clone();
        junk[30] = b'x';
        assert_eq!(
            decode(&junk, "ed25519v1-public"),
            Err(TaggedError::BadHeader)
        );
        let mut noprefix = f.clone();
        noprefix[0] = b'-';
        assert_eq!(
            decode(&noprefix, "ed25519v1-public"),
            Err(TaggedError::BadHeader)
        );
        assert_eq!(
            decode(b"-----BEGIN RSA PRIVATE KEY-----\nMIIC", "c25519v1"),
            Err(TaggedError::BadHeader)
        );
    }
}
