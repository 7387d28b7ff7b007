//! CERTS body: N, then N × (type u8, length u16, bytes) (tor-spec §"CERTS cells").

use crate::cell::bytes::{len_u16, len_u8, Reader, Writer};
use crate::cell::{named_int, CellError};

named_int! {
    /// Certificate type in a CERTS cell (tor-spec §"CERTS cells", cert-spec §"Certificate types").
    pub struct CertType(u8) {
        /// X.509 link certificate, certified by the RSA identity (legacy).
        TLS_LINK_X509 = 1,
        /// Self-signed X.509 certificate of the RSA-1024 identity key.
        RSA_ID_X509 = 2,
        /// X.509 RSA AUTHENTICATE link certificate (legacy).
        LINK_AUTH_X509 = 3,
        /// Ed25519 signing key, certified by the master identity.
        IDENTITY_V_SIGNING = 4,
        /// SHA-256 of the TLS certificate, certified by the signing key.
        SIGNING_V_TLS_CERT = 5,
        /// Ed25519 link-authentication key, certified by the signing key.
        SIGNING_V_LINK_AUTH = 6,
        /// RSA→Ed25519 cross-certificate.
        RSA_ID_V_IDENTITY = 7,
    }
}

/// One certificate in a CERTS cell, borrowed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CertEntry<'a> {
    pub cert_type: CertType,
    pub body: &'a [u8],
}

/// A parsed CERTS body. Every entry was bounds-checked by `parse`; iteration cannot fail.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Certs<'a> {
    n: u8,
    entries: &'a [u8],
}

fn read_entry<'a>(r: &mut Reader<'a>) -> Result<CertEntry<'a>, CellError> {
    let cert_type = CertType(r.u8("CERTS entry type")?);
    let len = r.u16("CERTS entry length")? as usize;
    let body = r.take(len, "CERTS entry body")?;
    Ok(CertEntry { cert_type, body })
}

impl<'a> Certs<'a> {
    /// Parses and bounds-checks all entries. Bytes after the last entry are ignored, as by
    /// C tor's trunnel parser.
    pub fn parse(body: &'a [u8]) -> Result<Self, CellError> {
        let mut r = Reader::new(body);
        let n = r.u8("CERTS count")?;
        let start = body.len() - r.remaining();
        for _ in 0..n {
            read_entry(&mut r)?;
        }
        let end = body.len() - r.remaining();
        Ok(Certs {
            n,
            entries: &body[start..end],
        })
    }

    pub fn len(&self) -> usize {
        self.n as usize
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = CertEntry<'a>> + 'a {
        let mut r = Reader::new(self.entries);
        (0..self.n).map_while(move |_| read_entry(&mut r).ok())
    }

    /// The first certificate of a type, if any.
    pub fn get(&self, cert_type: CertType) -> Option<&'a [u8]> {
        self.iter()
            .find(|e| e.cert_type == cert_type)
            .map(|e| e.body)
    }

    /// The first type that appears more than once: C tor closes the channel on any duplicate
    /// (`channel_tls_process_certs_cell`).
    pub fn duplicate_type(&self) -> Option<CertType> {
        let mut seen = [false; 256];
        for e in self.iter() {
            let s = &mut seen[e.cert_type.0 as usize];
            if *s {
                return Some(e.cert_type);
            }
            *s = true;
        }
        None
    }

    /// Writes a CERTS body; returns its length.
    pub fn encode(entries: &[CertEntry<'_>], out: &mut [u8]) -> Result<usize, CellError> {
        let mut w = Writer::new(out, "CERTS body");
        w.u8(len_u8("CERTS count", entries.len())?)?;
        for e in entries {
            w.u8(e.cert_type.0)?;
            w.u16(len_u16("CERTS entry", e.body.len(), u16::MAX as usize)?)?;
            w.bytes(e.body)?;
        }
        Ok(w.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_encoding_and_round_trip() {
        let entries = [
            CertEntry {
                cert_type: CertType::IDENTITY_V_SIGNING,
                body: &[0xAA, 0xBB],
            },
            CertEntry {
                cert_type: CertType::RSA_ID_V_IDENTITY,
                body: &[],
            },
        ];
        let mut buf = [0u8; 32];
        let n = Certs::encode(&entries, &mut buf).unwrap();
        assert_eq!(&buf[..n], &[2, 4, 0, 2, 0xAA, 0xBB, 7, 0, 0]);
        let c = Certs::parse(&buf[..n]).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c.iter().collect::<Vec<_>>(), entries.to_vec());
        assert_eq!(c.get(CertType::IDENTITY_V_SIGNING), Some(&[0xAA, 0xBB][..]));
        assert_eq!(c.get(CertType::RSA_ID_X509), None);
        assert_eq!(c.duplicate_type(), None);
    }

    #[test]
    fn duplicate_detected() {
        let body = [3, 5, 0, 1, 9, 4, 0, 0, 5, 0, 0];
        let c = Certs::parse(&body).unwrap();
        assert_eq!(c.duplicate_type(), Some(CertType::SIGNING_V_TLS_CERT));
    }

    #[test]
    fn truncated_entry_rejected() {
        assert!(matches!(
            Certs::parse(&[1, 4, 0, 3, 1, 2]),
            Err(CellError::Truncated {
                what: "CERTS entry body",
                need: 3,
                have: 2
            })
        ));
        assert!(matches!(
            Certs::parse(&[]),
            Err(CellError::Truncated { .. })
        ));
        assert!(matches!(
            Certs::parse(&[2, 4, 0, 0]),
            Err(CellError::Truncated { .. })
        ));
    }
}
