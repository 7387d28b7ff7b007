//! SENDME body: empty (v0), or VERSION(1)=1 | DATA_LEN(u16) | tag (v1, authenticated)
//! (tor-spec §"Flow control"; prop 289; C tor `sendme_cell.trunnel`).

use crate::cell::bytes::{Reader, Writer};
use crate::cell::CellError;

/// SENDME v1 tag length under tor1 crypto: the whole running SHA-1 digest.
pub const SENDME_TAG_LEN_TOR1: usize = 20;
/// SENDME v1 tag length under CGO crypto.
pub const SENDME_TAG_LEN_CGO: usize = 16;

/// A parsed SENDME body.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Sendme<'a> {
    /// Unauthenticated (and every stream-level SENDME).
    V0,
    /// Authenticated: `tag` is 20 bytes (tor1) or 16 (CGO).
    V1 { tag: &'a [u8] },
}

fn tag_len_ok(len: usize) -> bool {
    len == SENDME_TAG_LEN_TOR1 || len == SENDME_TAG_LEN_CGO
}

impl<'a> Sendme<'a> {
    /// Empty means v0. Version 1 needs DATA_LEN 16 or 20 and that many tag bytes; bytes past
    /// the tag are ignored. Versions above 1 are an error (C tor closes the circuit).
    pub fn parse(data: &'a [u8]) -> Result<Self, CellError> {
        let mut r = Reader::new(data);
        let Ok(version) = r.u8("SENDME version") else {
            return Ok(Sendme::V0);
        };
        match version {
            0 => Ok(Sendme::V0),
            1 => {
                let len = r.u16("SENDME DATA_LEN")? as usize;
                if !tag_len_ok(len) {
                    return Err(CellError::BadLength {
                        what: "SENDME v1 tag",
                        len,
                    });
                }
                Ok(Sendme::V1 {
                    tag: r.take(len, "SENDME v1 tag")?,
                })
            }
            v => Err(CellError::UnsupportedVersion {
                what: "SENDME",
                version: v.into(),
            }),
        }
    }

    pub fn encode(&self, out: &mut [u8]) -> Result<usize, CellError> {
        let mut w = Writer::new(out, "SENDME body");
        if let Sendme::V1 { tag } = self {
            if !tag_len_ok(tag.len()) {
                return Err(CellError::BadLength {
                    what: "SENDME v1 tag",
                    len: tag.len(),
                });
            }
            w.u8(1)?;
            w.u16(tag.len() as u16)?;
            w.bytes(tag)?;
        }
        Ok(w.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_encodings_and_round_trip() {
        let mut buf = [0u8; 64];
        assert_eq!(Sendme::V0.encode(&mut buf).unwrap(), 0);
        assert_eq!(Sendme::parse(&[]).unwrap(), Sendme::V0);
        let tag = [0xABu8; 20];
        let n = Sendme::V1 { tag: &tag }.encode(&mut buf).unwrap();
        assert_eq!(&buf[..3], &[1, 0, 20]);
        assert_eq!(n, 23);
        assert_eq!(Sendme::parse(&buf[..n]).unwrap(), Sendme::V1 { tag: &tag });
        let tag16 = [1u8; 16];
        let n = Sendme::V1 { tag: &tag16 }.encode(&mut buf).unwrap();
        assert_eq!(&buf[..3], &[1, 0, 16]);
        assert_eq!(
            Sendme::parse(&buf[..n]).unwrap(),
            Sendme::V1 { tag: &tag16 }
        );
    }

    #[test]
    fn negative_cases() {
        assert!(Sendme::parse(&[1, 0, 19]).is_err());
        assert!(Sendme::parse(&[1, 0, 20, 1, 2]).is_err());
        assert!(Sendme::parse(&[1, 0]).is_err());
        assert_eq!(
            Sendme::parse(&[2]),
            Err(CellError::UnsupportedVersion {
                what: "SENDME",
                version: 2
            })
        );
        assert!(Sendme::V1 { tag: &[0; 8] }.encode(&mut [0u8; 64]).is_err());
    }
}
