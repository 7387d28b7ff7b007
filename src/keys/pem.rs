//! PEM armour as C tor writes and reads it (`lib/encoding/pem.c`): `-----BEGIN <TAG>-----`,
//! base64 in 64-column lines, `-----END <TAG>-----`.
//!
//! The armour itself is the `pem-rfc7468` crate's (through `der`'s `pem` feature, already on
//! via `rsa`), whose output is byte for byte what C tor writes for any non-empty object (for
//! an empty one it writes an empty line; Tor has no empty objects). What stays here is C
//! `pem_decode`'s framing, looser than RFC 7468 in two ways the crate does not offer:
//! whitespace may come before the BEGIN line, and anything after the END line is ignored.
//!
//! One way we are stricter than C tor: the crate wants the base64 in 64-column lines (LF or
//! CRLF), while C's `base64_decode` skips any whitespace. C tor and OpenSSL both write 64
//! columns, so every key file either of them made reads.

use rsa::pkcs1::der::pem::{self, LineEnding};
use thiserror::Error;

/// Why a PEM block could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PemError {
    #[error("missing \"-----BEGIN {0}-----\" line")]
    MissingBegin(String),
    #[error("PEM block is labelled {found:?}, expected {expected:?}")]
    WrongLabel { expected: String, found: String },
    #[error("missing \"-----END {0}-----\" line")]
    MissingEnd(String),
    /// Bad base64, lines not 64 columns, junk on a boundary line...: the crate's words.
    #[error("malformed PEM block {tag:?}: {reason}")]
    Malformed { tag: String, reason: pem::Error },
}

/// Armours `der` with `tag`; lines end in `\n`, as C tor writes key files.
///
/// # Panics
/// If `tag` is not an RFC 7468 label (upper-case words separated by single spaces). Tags are
/// constants in our code, never input; every one Fors writes is checked by
/// `tests::every_tag_we_write_is_a_label`.
pub fn encode(tag: &str, der: &[u8]) -> String {
    match pem::encode_string(tag, LineEnding::LF, der) {
        Ok(s) => s,
        Err(e) => panic!("PEM tag {tag:?} is not an RFC 7468 label: {e}"),
    }
}

/// Decodes the first PEM block tagged `tag`. Like C tor's `pem_decode`, leading whitespace is
/// skipped, the BEGIN line must be the first thing in the input, and trailing text is ignored.
pub fn decode(tag: &str, input: &[u8]) -> Result<Vec<u8>, PemError> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    let start = input
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(input.len());
    let block = &input[start..];
    if !block.starts_with(BEGIN) {
        return Err(PemError::MissingBegin(tag.to_owned()));
    }
    // A block with another label: name it rather than report a missing END line.
    let begin_line = &block[..block
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(block.len())];
    let want = format!("-----BEGIN {tag}-----");
    if !begin_line.starts_with(want.as_bytes()) {
        let found = begin_line[BEGIN.len()..]
            .strip_suffix(b"\r")
            .unwrap_or(&begin_line[BEGIN.len()..]);
        let found = found.strip_suffix(b"-----").unwrap_or(found);
        return Err(PemError::WrongLabel {
            expected: tag.to_owned(),
            found: String::from_utf8_lossy(found).into_owned(),
        });
    }
    // C tor takes the first "\n-----END <tag>-----" and ignores what follows; the crate wants
    // the block to end there, so cut it.
    let end = format!("\n-----END {tag}-----");
    let end_at = block
        .windows(end.len())
        .position(|w| w == end.as_bytes())
        .ok_or_else(|| PemError::MissingEnd(tag.to_owned()))?;
    let block = &block[..end_at + end.len()];
    let (label, der) = pem::decode_vec(block).map_err(|reason| PemError::Malformed {
        tag: tag.to_owned(),
        reason,
    })?;
    if label != tag {
        // Unreachable after the checks above; kept so a mismatch can never pass silently.
        return Err(PemError::WrongLabel {
            expected: tag.to_owned(),
            found: label.to_owned(),
        });
    }
    Ok(der)
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
        // CRLF line ends (a key file that went through a Windows editor).
        let crlf = pem.replace('\n', "\r\n");
        assert_eq!(decode("RSA PRIVATE KEY", crlf.as_bytes()).unwrap(), data);
        // No newline after END (C tor does not require one).
        assert_eq!(
            decode("RSA PRIVATE KEY", pem.trim_end().as_bytes()).unwrap(),
            data
        );
    }

    /// The layout C tor's `pem_encode` writes: 64 base64 columns, `\n` after every line
    /// including the END line (RFC 4648 test vector body).
    #[test]
    fn writes_c_tor_layout() {
        assert_eq!(
            encode("SIGNATURE", b"foobar"),
            "-----BEGIN SIGNATURE-----\nZm9vYmFy\n-----END SIGNATURE-----\n"
        );
        let data = [0xffu8; 48]; // exactly 64 base64 characters: one full line
        let pem = encode("X", &data);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1], "/".repeat(64));
        let data = [0xffu8; 49];
        let lines: Vec<String> = encode("X", &data).lines().map(str::to_owned).collect();
        assert_eq!((lines[1].len(), lines[2].as_str()), (64, "/w=="));
    }

    #[test]
    fn every_tag_we_write_is_a_label() {
        // Key files (keys::rsa, keys::cert) and descriptor objects (dir::descriptor).
        for tag in [
            crate::keys::rsa::PRIVATE_KEY_PEM_TAG,
            crate::keys::rsa::PUBLIC_KEY_PEM_TAG,
            "ED25519 CERT",
            "SIGNATURE",
            "CROSSCERT",
            "FAMILY CERT",
        ] {
            assert!(
                pem::encode_string(tag, LineEnding::LF, b"x").is_ok(),
                "{tag}"
            );
        }
    }

    #[test]
    fn rejects_bad_blocks_with_typed_errors() {
        let pem = encode("RSA PRIVATE KEY", b"hello");
        // Wrong label.
        assert_eq!(
            decode("RSA PUBLIC KEY", pem.as_bytes()),
            Err(PemError::WrongLabel {
                expected: "RSA PUBLIC KEY".into(),
                found: "RSA PRIVATE KEY".into()
            })
        );
        // Truncated: no END line.
        assert!(matches!(
            decode("RSA PRIVATE KEY", &pem.as_bytes()[..pem.len() - 20]),
            Err(PemError::MissingEnd(_))
        ));
        // Not base64.
        let garbage = pem.replace("aGVsbG8=", "a*b!");
        assert!(matches!(
            decode("RSA PRIVATE KEY", garbage.as_bytes()),
            Err(PemError::Malformed { .. })
        ));
        // Bad length: a base64 body cut mid-quantum.
        let short = pem.replace("aGVsbG8=", "aGVsbG8");
        assert!(matches!(
            decode("RSA PRIVATE KEY", short.as_bytes()),
            Err(PemError::Malformed { .. })
        ));
        // Text before the BEGIN line (C tor refuses it too).
        assert_eq!(
            decode("RSA PRIVATE KEY", format!("junk\n{pem}").as_bytes()),
            Err(PemError::MissingBegin("RSA PRIVATE KEY".into()))
        );
        // Junk after the BEGIN marker on its line.
        let junk = pem.replace("KEY-----\naGVs", "KEY----- x\naGVs");
        assert!(decode("RSA PRIVATE KEY", junk.as_bytes()).is_err());
        assert!(decode("X", b"").is_err());
        // Errors say what is wrong.
        let e = decode("RSA PRIVATE KEY", garbage.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("RSA PRIVATE KEY"), "{e}");
    }
}
