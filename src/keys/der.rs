//! A minimal DER (X.690) encoder and parser: just enough ASN.1 for Tor's X.509 certificates
//! (CERTS cell types 1 and 2) and PKCS#1 DigestInfo prefixes.
//!
//! The parser only accepts definite lengths and never reads past its input; it does not
//! interpret tags beyond what the caller asks for.

use thiserror::Error;

/// Universal tags we use.
pub mod tag {
    pub const INTEGER: u8 = 0x02;
    pub const BIT_STRING: u8 = 0x03;
    pub const OCTET_STRING: u8 = 0x04;
    pub const NULL: u8 = 0x05;
    pub const OID: u8 = 0x06;
    pub const UTF8_STRING: u8 = 0x0c;
    pub const PRINTABLE_STRING: u8 = 0x13;
    pub const UTC_TIME: u8 = 0x17;
    pub const GENERALIZED_TIME: u8 = 0x18;
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
    /// `[0] EXPLICIT`, constructed, context-specific (X.509 version field).
    pub const CONTEXT_0: u8 = 0xa0;
}

/// Why a DER blob could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DerError {
    #[error("DER input ends in the middle of an element")]
    Truncated,
    #[error("DER uses an indefinite or over-long length")]
    BadLength,
    #[error("DER uses a multi-byte tag, which Tor certificates never contain")]
    UnsupportedTag,
    #[error("expected DER tag {expected:#04x}, found {found:#04x}")]
    UnexpectedTag { expected: u8, found: u8 },
    #[error("unexpected bytes after the end of a DER element")]
    TrailingData,
    #[error("malformed DER {0}")]
    Malformed(&'static str),
}

/// One parsed TLV element, borrowing from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element<'a> {
    pub tag: u8,
    /// The content octets.
    pub body: &'a [u8],
    /// The whole encoding: tag, length and content (needed to hash/verify a TBSCertificate).
    pub raw: &'a [u8],
}

/// Sequential reader over concatenated DER elements.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Self { rest: input }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Tag of the next element, if any.
    pub fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// Reads the next element, whatever its tag.
    pub fn read_any(&mut self) -> Result<Element<'a>, DerError> {
        let input = self.rest;
        let (&tag, after_tag) = input.split_first().ok_or(DerError::Truncated)?;
        if tag & 0x1f == 0x1f {
            return Err(DerError::UnsupportedTag);
        }
        let (&first, mut after_len) = after_tag.split_first().ok_or(DerError::Truncated)?;
        let len = if first < 0x80 {
            first as usize
        } else {
            // X.690 §8.1.3.5: long form; 0x80 is the (BER-only) indefinite form.
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 {
                return Err(DerError::BadLength);
            }
            if after_len.len() < n {
                return Err(DerError::Truncated);
            }
            let mut len = 0usize;
            for &b in &after_len[..n] {
                len = (len << 8) | b as usize;
            }
            after_len = &after_len[n..];
            len
        };
        if after_len.len() < len {
            return Err(DerError::Truncated);
        }
        let header_len = input.len() - after_len.len();
        let body = &after_len[..len];
        let raw = &input[..header_len + len];
        self.rest = &after_len[len..];
        Ok(Element { tag, body, raw })
    }

    /// Reads the next element and checks its tag.
    pub fn read(&mut self, expected: u8) -> Result<Element<'a>, DerError> {
        let found = self.peek_tag().ok_or(DerError::Truncated)?;
        if found != expected {
            return Err(DerError::UnexpectedTag { expected, found });
        }
        self.read_any()
    }

    /// Reads a constructed element and returns a reader over its contents.
    pub fn read_nested(&mut self, expected: u8) -> Result<Reader<'a>, DerError> {
        Ok(Reader::new(self.read(expected)?.body))
    }

    /// Fails unless every byte has been consumed.
    pub fn finish(&self) -> Result<(), DerError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DerError::TrailingData)
        }
    }
}

/// Parses exactly one element that fills the whole input.
pub fn parse_single(input: &[u8], expected: u8) -> Result<Element<'_>, DerError> {
    let mut r = Reader::new(input);
    let e = r.read(expected)?;
    r.finish()?;
    Ok(e)
}

/// Contents of a BIT STRING with no unused bits (all Tor key and signature bit strings).
pub fn bit_string_bytes<'a>(e: &Element<'a>) -> Result<&'a [u8], DerError> {
    match e.body.split_first() {
        Some((0, bytes)) => Ok(bytes),
        _ => Err(DerError::Malformed("BIT STRING with unused bits")),
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// Appends a DER length.
fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u32).to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (4 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Encodes one TLV element.
pub fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 6);
    out.push(tag);
    push_len(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// Encodes a constructed element from already-encoded children.
pub fn constructed(tag: u8, children: &[&[u8]]) -> Vec<u8> {
    tlv(tag, &children.concat())
}

/// SEQUENCE of already-encoded children.
pub fn sequence(children: &[&[u8]]) -> Vec<u8> {
    constructed(tag::SEQUENCE, children)
}

/// INTEGER from big-endian unsigned magnitude bytes (minimal two's complement form).
pub fn unsigned_integer(magnitude: &[u8]) -> Vec<u8> {
    let trimmed: &[u8] = {
        let skip = magnitude.iter().take_while(|&&b| b == 0).count();
        &magnitude[skip.min(magnitude.len().saturating_sub(1))..]
    };
    let mut body = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.is_empty() {
        body.push(0);
    } else {
        if trimmed[0] & 0x80 != 0 {
            body.push(0);
        }
        body.extend_from_slice(trimmed);
    }
    tlv(tag::INTEGER, &body)
}

/// Small non-negative INTEGER.
pub fn small_integer(v: u32) -> Vec<u8> {
    unsigned_integer(&v.to_be_bytes())
}

/// NULL.
pub fn null() -> Vec<u8> {
    vec![tag::NULL, 0]
}

/// BIT STRING with no unused bits.
pub fn bit_string(bytes: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(bytes.len() + 1);
    body.push(0);
    body.extend_from_slice(bytes);
    tlv(tag::BIT_STRING, &body)
}

/// OBJECT IDENTIFIER from its arcs.
pub fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut body = Vec::new();
    if arcs.len() >= 2 {
        push_base128(&mut body, arcs[0] * 40 + arcs[1]);
        for &a in &arcs[2..] {
            push_base128(&mut body, a);
        }
    }
    tlv(tag::OID, &body)
}

fn push_base128(out: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 10];
    let mut n = 0;
    loop {
        tmp[n] = (v & 0x7f) as u8;
        v >>= 7;
        n += 1;
        if v == 0 {
            break;
        }
    }
    for i in (0..n).rev() {
        out.push(tmp[i] | if i > 0 { 0x80 } else { 0 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_encodings() {
        // sha256WithRSAEncryption, as it appears in every X.509 cert.
        assert_eq!(
            oid(&[1, 2, 840, 113549, 1, 1, 11]),
            [0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b]
        );
        assert_eq!(small_integer(2), [0x02, 0x01, 0x02]);
        assert_eq!(small_integer(0), [0x02, 0x01, 0x00]);
        assert_eq!(unsigned_integer(&[0x00, 0x80]), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(unsigned_integer(&[0x00, 0x00, 0x7f]), [0x02, 0x01, 0x7f]);
        let long = tlv(tag::OCTET_STRING, &[7u8; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
    }

    #[test]
    fn parse_round_trip() {
        let inner = sequence(&[&small_integer(5), &null()]);
        let outer = sequence(&[&inner, &bit_string(&[1, 2, 3])]);
        let e = parse_single(&outer, tag::SEQUENCE).unwrap();
        let mut r = Reader::new(e.body);
        let mut seq = r.read_nested(tag::SEQUENCE).unwrap();
        assert_eq!(seq.read(tag::INTEGER).unwrap().body, &[5]);
        assert_eq!(seq.read(tag::NULL).unwrap().body, &[] as &[u8]);
        seq.finish().unwrap();
        let bs = r.read(tag::BIT_STRING).unwrap();
        assert_eq!(bit_string_bytes(&bs).unwrap(), &[1, 2, 3]);
        r.finish().unwrap();
        assert_eq!(e.raw, &outer[..]);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(Reader::new(&[0x30]).read_any(), Err(DerError::Truncated));
        assert_eq!(
            Reader::new(&[0x30, 0x80]).read_any(),
            Err(DerError::BadLength)
        );
        assert_eq!(
            Reader::new(&[0x30, 0x85, 1, 1, 1, 1, 1]).read_any(),
            Err(DerError::BadLength)
        );
        assert_eq!(
            Reader::new(&[0x30, 0x05, 1]).read_any(),
            Err(DerError::Truncated)
        );
        assert_eq!(
            Reader::new(&[0x1f, 0x01, 0]).read_any(),
            Err(DerError::UnsupportedTag)
        );
        assert_eq!(
            parse_single(&[0x05, 0, 0], tag::NULL),
            Err(DerError::TrailingData)
        );
        assert!(matches!(
            parse_single(&[0x05, 0], tag::SEQUENCE),
            Err(DerError::UnexpectedTag { .. })
        ));
    }
}
