//! CREATE2/CREATED2 and CREATE_FAST/CREATED_FAST bodies (tor-spec §"CREATE and CREATED
//! cells", §"CREATE_FAST/CREATED_FAST cells").

use super::zero_tail;
use crate::cell::bytes::{len_u16, Reader, Writer};
use crate::cell::{named_int, CellError, CELL_BODY_LEN};

/// Largest HDATA in CREATE2: 509 − HTYPE(2) − HLEN(2).
pub const CREATE2_MAX_HLEN: usize = CELL_BODY_LEN - 4;
/// Largest HDATA in CREATED2: 509 − HLEN(2).
pub const CREATED2_MAX_HLEN: usize = CELL_BODY_LEN - 2;
/// Length of X, Y and KH in CREATE_FAST/CREATED_FAST (HASH_LEN).
pub const FAST_KEY_LEN: usize = 20;

named_int! {
    /// CREATE2 handshake type.
    pub struct HandshakeType(u16) {
        /// Removed (prop 350); 0.4.9 relays close circuits that ask for it.
        TAP = 0,
        /// Reserved, never used.
        FAST = 1,
        NTOR = 2,
        NTOR_V3 = 3,
    }
}

/// A CREATE2 body (also the tail of EXTEND2): HTYPE(u16) | HLEN(u16) | HDATA.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Create2<'a> {
    pub htype: HandshakeType,
    pub hdata: &'a [u8],
}

impl<'a> Create2<'a> {
    /// Parses a CREATE2 body. Bytes after HDATA are ignored (cell padding).
    pub fn parse(body: &'a [u8]) -> Result<Self, CellError> {
        Self::parse_reader(&mut Reader::new(body))
    }

    pub(crate) fn parse_reader(r: &mut Reader<'a>) -> Result<Self, CellError> {
        let htype = HandshakeType(r.u16("CREATE2 HTYPE")?);
        let hlen = r.u16("CREATE2 HLEN")? as usize;
        if hlen > CREATE2_MAX_HLEN {
            return Err(CellError::TooLong {
                what: "CREATE2 HLEN",
                len: hlen,
                max: CREATE2_MAX_HLEN,
            });
        }
        let hdata = r.take(hlen, "CREATE2 HDATA")?;
        Ok(Create2 { htype, hdata })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), CellError> {
        w.u16(self.htype.0)?;
        w.u16(len_u16(
            "CREATE2 HDATA",
            self.hdata.len(),
            CREATE2_MAX_HLEN,
        )?)?;
        w.bytes(self.hdata)
    }

    /// Fills a whole CREATE2 cell body.
    pub fn encode(&self, out: &mut [u8; CELL_BODY_LEN]) -> Result<(), CellError> {
        let mut w = Writer::new(out, "CREATE2 body");
        self.write(&mut w)?;
        let used = w.len();
        zero_tail(out, used);
        Ok(())
    }
}

/// A CREATED2 body: HLEN(u16) | HDATA.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Created2<'a> {
    pub hdata: &'a [u8],
}

impl<'a> Created2<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, CellError> {
        let mut r = Reader::new(body);
        let hlen = r.u16("CREATED2 HLEN")? as usize;
        if hlen > CREATED2_MAX_HLEN {
            return Err(CellError::TooLong {
                what: "CREATED2 HLEN",
                len: hlen,
                max: CREATED2_MAX_HLEN,
            });
        }
        Ok(Created2 {
            hdata: r.take(hlen, "CREATED2 HDATA")?,
        })
    }

    /// Fills a whole CREATED2 cell body.
    pub fn encode(&self, out: &mut [u8; CELL_BODY_LEN]) -> Result<(), CellError> {
        let mut w = Writer::new(out, "CREATED2 body");
        w.u16(len_u16(
            "CREATED2 HDATA",
            self.hdata.len(),
            CREATED2_MAX_HLEN,
        )?)?;
        w.bytes(self.hdata)?;
        let used = w.len();
        zero_tail(out, used);
        Ok(())
    }
}

/// A CREATE_FAST body: X (20 bytes); the rest of the cell is ignored.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CreateFast<'a> {
    pub x: &'a [u8; FAST_KEY_LEN],
}

impl<'a> CreateFast<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, CellError> {
        Ok(CreateFast {
            x: Reader::new(body).array("CREATE_FAST X")?,
        })
    }

    pub fn encode(&self, out: &mut [u8; CELL_BODY_LEN]) {
        out[..FAST_KEY_LEN].copy_from_slice(self.x);
        zero_tail(out, FAST_KEY_LEN);
    }
}

/// A CREATED_FAST body: Y (20) | KH (20).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CreatedFast<'a> {
    pub y: &'a [u8; FAST_KEY_LEN],
    pub kh: &'a [u8; FAST_KEY_LEN],
}

impl<'a> CreatedFast<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, CellError> {
        let mut r = Reader::new(body);
        Ok(CreatedFast {
            y: r.array("CREATED_FAST Y")?,
            kh: r.array("CREATED_FAST KH")?,
        })
    }

    pub fn encode(&self, out: &mut [u8; CELL_BODY_LEN]) {
        out[..FAST_KEY_LEN].copy_from_slice(self.y);
        out[FAST_KEY_LEN..2 * FAST_KEY_LEN].copy_from_slice(self.kh);
        zero_tail(out, 2 * FAST_KEY_LEN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create2_known_encoding_and_round_trip() {
        let hdata = [7u8; 84];
        let c = Create2 {
            htype: HandshakeType::NTOR,
            hdata: &hdata,
        };
        let mut body = [0xEEu8; CELL_BODY_LEN];
        c.encode(&mut body).unwrap();
        assert_eq!(&body[..4], &[0, 2, 0, 84]);
        assert!(body[88..].iter().all(|&b| b == 0));
        assert_eq!(Create2::parse(&body).unwrap(), c);
    }

    #[test]
    fn create2_bounds() {
        let max = [1u8; CREATE2_MAX_HLEN];
        let mut body = [0u8; CELL_BODY_LEN];
        Create2 {
            htype: HandshakeType::NTOR_V3,
            hdata: &max,
        }
        .encode(&mut body)
        .unwrap();
        assert_eq!(Create2::parse(&body).unwrap().hdata.len(), 505);
        let big = [1u8; CREATE2_MAX_HLEN + 1];
        assert!(Create2 {
            htype: HandshakeType::NTOR_V3,
            hdata: &big,
        }
        .encode(&mut body)
        .is_err());
        body[2..4].copy_from_slice(&506u16.to_be_bytes());
        assert_eq!(
            Create2::parse(&body),
            Err(CellError::TooLong {
                what: "CREATE2 HLEN",
                len: 506,
                max: 505
            })
        );
        // Short input (e.g. EXTEND2 tail) with HLEN past the end.
        assert!(matches!(
            Create2::parse(&[0, 2, 0, 10, 1, 2]),
            Err(CellError::Truncated { .. })
        ));
    }

    #[test]
    fn created2_round_trip_and_bounds() {
        let hdata = [9u8; 64];
        let mut body = [0u8; CELL_BODY_LEN];
        Created2 { hdata: &hdata }.encode(&mut body).unwrap();
        assert_eq!(&body[..2], &[0, 64]);
        assert_eq!(Created2::parse(&body).unwrap().hdata, &hdata);
        body[..2].copy_from_slice(&508u16.to_be_bytes());
        assert!(Created2::parse(&body).is_err());
    }

    #[test]
    fn fast_round_trip() {
        let x = [3u8; 20];
        let mut body = [0xAAu8; CELL_BODY_LEN];
        CreateFast { x: &x }.encode(&mut body);
        assert_eq!(CreateFast::parse(&body).unwrap().x, &x);
        assert!(body[20..].iter().all(|&b| b == 0));
        let (y, kh) = ([4u8; 20], [5u8; 20]);
        CreatedFast { y: &y, kh: &kh }.encode(&mut body);
        let p = CreatedFast::parse(&body).unwrap();
        assert_eq!((p.y, p.kh), (&y, &kh));
        assert!(CreatedFast::parse(&body[..39]).is_err());
        assert!(CreateFast::parse(&body[..19]).is_err());
    }
}
