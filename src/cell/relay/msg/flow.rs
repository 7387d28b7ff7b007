//! XOFF and XON bodies (prop 324; C tor `flow_control_cells.trunnel`):
//! XOFF = version(0); XON = version(0) | kbps_ewma(u32).

use crate::cell::bytes::{Reader, Writer};
use crate::cell::CellError;

fn version(r: &mut Reader<'_>, what: &'static str) -> Result<(), CellError> {
    match r.u8(what)? {
        0 => Ok(()),
        v => Err(CellError::UnsupportedVersion {
            what,
            version: v.into(),
        }),
    }
}

/// Asks the other end to stop sending on a stream.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Xoff;

impl Xoff {
    pub fn parse(data: &[u8]) -> Result<Self, CellError> {
        version(&mut Reader::new(data), "XOFF")?;
        Ok(Xoff)
    }

    pub fn encode(&self, out: &mut [u8]) -> Result<usize, CellError> {
        let mut w = Writer::new(out, "XOFF body");
        w.u8(0)?;
        Ok(w.len())
    }
}

/// Asks the other end to resume sending, with an advisory drain rate.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Xon {
    /// EWMA of the stream's drain rate in kB/s (1000 bytes/s); 0 = no advice.
    pub kbps_ewma: u32,
}

impl Xon {
    pub fn parse(data: &[u8]) -> Result<Self, CellError> {
        let mut r = Reader::new(data);
        version(&mut r, "XON")?;
        Ok(Xon {
            kbps_ewma: r.u32("XON kbps_ewma")?,
        })
    }

    pub fn encode(&self, out: &mut [u8]) -> Result<usize, CellError> {
        let mut w = Writer::new(out, "XON body");
        w.u8(0)?;
        w.u32(self.kbps_ewma)?;
        Ok(w.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut buf = [0u8; 8];
        assert_eq!(Xoff.encode(&mut buf).unwrap(), 1);
        assert_eq!(buf[0], 0);
        assert_eq!(Xoff::parse(&buf[..1]).unwrap(), Xoff);
        let n = Xon {
            kbps_ewma: 0x01020304,
        }
        .encode(&mut buf)
        .unwrap();
        assert_eq!(&buf[..n], &[0, 1, 2, 3, 4]);
        assert_eq!(Xon::parse(&buf[..n]).unwrap().kbps_ewma, 0x01020304);
    }

    #[test]
    fn negative_cases() {
        assert!(Xoff::parse(&[]).is_err());
        assert!(Xoff::parse(&[1]).is_err());
        assert!(Xon::parse(&[0, 1, 2, 3]).is_err());
        assert_eq!(
            Xon::parse(&[1, 0, 0, 0, 0]),
            Err(CellError::UnsupportedVersion {
                what: "XON",
                version: 1
            })
        );
    }
}
