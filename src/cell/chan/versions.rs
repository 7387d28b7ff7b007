//! VERSIONS body: a list of u16 link protocol versions (tor-spec §"Negotiating versions").

use crate::cell::bytes::Writer;
use crate::cell::CellError;

/// A parsed VERSIONS body, borrowed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Versions<'a> {
    raw: &'a [u8],
}

impl<'a> Versions<'a> {
    /// C tor closes the connection on an odd-length body (`channel_tls_process_versions_cell`).
    pub fn parse(body: &'a [u8]) -> Result<Self, CellError> {
        if !body.len().is_multiple_of(2) {
            return Err(CellError::BadLength {
                what: "VERSIONS body",
                len: body.len(),
            });
        }
        Ok(Versions { raw: body })
    }

    pub fn iter(&self) -> impl Iterator<Item = u16> + 'a {
        self.raw
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
    }

    /// The highest version both sides support, which both then use.
    pub fn highest_common(&self, ours: &[u16]) -> Option<u16> {
        self.iter().filter(|v| ours.contains(v)).max()
    }

    /// Writes a VERSIONS body; returns its length.
    pub fn encode(versions: &[u16], out: &mut [u8]) -> Result<usize, CellError> {
        let mut w = Writer::new(out, "VERSIONS body");
        for v in versions {
            w.u16(*v)?;
        }
        Ok(w.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_choice() {
        let mut buf = [0u8; 16];
        let n = Versions::encode(&[3, 4, 5], &mut buf).unwrap();
        assert_eq!(&buf[..n], &[0, 3, 0, 4, 0, 5]);
        let v = Versions::parse(&buf[..n]).unwrap();
        assert_eq!(v.iter().collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(v.highest_common(&[4, 5]), Some(5));
        assert_eq!(v.highest_common(&[4]), Some(4));
        assert_eq!(v.highest_common(&[6]), None);
    }

    #[test]
    fn odd_length_rejected() {
        assert_eq!(
            Versions::parse(&[0, 4, 0]),
            Err(CellError::BadLength {
                what: "VERSIONS body",
                len: 3
            })
        );
    }

    #[test]
    fn encode_too_small() {
        assert!(matches!(
            Versions::encode(&[4, 5], &mut [0u8; 3]),
            Err(CellError::BufferTooSmall { .. })
        ));
    }
}
