//! CONNECTED body: empty, IPv4(4) [TTL(4)], or 0.0.0.0 | 6 | IPv6(16) | TTL(4)
//! (tor-spec §"Opening streams"; C tor `connected_cell_parse`).

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::cell::bytes::Writer;
use crate::cell::CellError;

/// A parsed CONNECTED body.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Connected {
    /// The address the exit connected to; absent for BEGIN_DIR and onion-service streams.
    pub addr: Option<IpAddr>,
    /// Seconds the client may cache the address.
    pub ttl: Option<u32>,
}

impl Connected {
    pub fn parse(data: &[u8]) -> Result<Self, CellError> {
        if data.is_empty() {
            return Ok(Connected::default());
        }
        let word = |at: usize| {
            data.get(at..at + 4)
                .map(|t| u32::from_be_bytes([t[0], t[1], t[2], t[3]]))
        };
        let first = word(0).ok_or(CellError::Truncated {
            what: "CONNECTED address",
            need: 4,
            have: data.len(),
        })?;
        if first != 0 {
            return Ok(Connected {
                addr: Some(IpAddr::V4(Ipv4Addr::from(first))),
                ttl: word(4),
            });
        }
        // A zero IPv4 address announces the IPv6 form, which must be complete.
        if data.len() < 25 {
            return Err(CellError::Truncated {
                what: "CONNECTED IPv6 form",
                need: 25,
                have: data.len(),
            });
        }
        if data[4] != 6 {
            return Err(CellError::BadValue {
                what: "CONNECTED address type",
                value: data[4].into(),
            });
        }
        let a: [u8; 16] = data[5..21].try_into().expect("16 bytes");
        Ok(Connected {
            addr: Some(IpAddr::V6(Ipv6Addr::from(a))),
            ttl: word(21),
        })
    }

    /// Writes the body. The IPv6 form always has a TTL (0 if none given).
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, CellError> {
        let mut w = Writer::new(out, "CONNECTED body");
        match self.addr {
            None => {}
            Some(IpAddr::V4(a)) => {
                if a.is_unspecified() {
                    return Err(CellError::ConnectedZeroIpv4);
                }
                w.bytes(&a.octets())?;
                if let Some(ttl) = self.ttl {
                    w.u32(ttl)?;
                }
            }
            Some(IpAddr::V6(a)) => {
                w.bytes(&[0, 0, 0, 0, 6])?;
                w.bytes(&a.octets())?;
                w.u32(self.ttl.unwrap_or(0))?;
            }
        }
        Ok(w.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_round_trip() {
        let mut buf = [0u8; 64];
        for c in [
            Connected::default(),
            Connected {
                addr: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
                ttl: Some(3600),
            },
            Connected {
                addr: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
                ttl: None,
            },
            Connected {
                addr: Some(IpAddr::V6("2001:db8::2".parse().unwrap())),
                ttl: Some(1800),
            },
        ] {
            let n = c.encode(&mut buf).unwrap();
            assert_eq!(Connected::parse(&buf[..n]).unwrap(), c);
        }
    }

    #[test]
    fn known_encodings() {
        let mut buf = [0u8; 64];
        let n = Connected {
            addr: Some(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4))),
            ttl: Some(300),
        }
        .encode(&mut buf)
        .unwrap();
        assert_eq!(&buf[..n], &[1, 2, 3, 4, 0, 0, 1, 0x2C]);
        let n = Connected {
            addr: Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            ttl: Some(1),
        }
        .encode(&mut buf)
        .unwrap();
        assert_eq!(n, 25);
        assert_eq!(&buf[..5], &[0, 0, 0, 0, 6]);
        assert_eq!(buf[20], 1);
        assert_eq!(&buf[21..25], &[0, 0, 0, 1]);
    }

    #[test]
    fn negative_cases() {
        assert!(Connected::parse(&[1, 2, 3]).is_err());
        assert!(Connected::parse(&[0, 0, 0, 0, 6]).is_err());
        let mut v6 = [0u8; 25];
        v6[4] = 4;
        assert!(Connected::parse(&v6).is_err());
        assert_eq!(
            Connected {
                addr: Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                ttl: None
            }
            .encode(&mut [0u8; 8]),
            Err(CellError::ConnectedZeroIpv4)
        );
    }
}
