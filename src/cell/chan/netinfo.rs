//! NETINFO body: TIME(u32) | OTHERADDR | NMYADDR(u8) | MYADDR × NMYADDR, each address being
//! type(u8) | len(u8) | value (tor-spec §"NETINFO cells"; C tor `netinfo.trunnel`).

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::zero_tail;
use crate::cell::bytes::{Reader, Writer};
use crate::cell::{CellError, CELL_BODY_LEN};

const ATYPE_IPV4: u8 = 4;
const ATYPE_IPV6: u8 = 6;

/// One NETINFO address. Unknown address types are skipped, not rejected, as C tor does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum NetinfoAddr {
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    Unrecognized { addr_type: u8 },
}

impl NetinfoAddr {
    pub fn ip(&self) -> Option<IpAddr> {
        match *self {
            NetinfoAddr::Ipv4(a) => Some(IpAddr::V4(a)),
            NetinfoAddr::Ipv6(a) => Some(IpAddr::V6(a)),
            NetinfoAddr::Unrecognized { .. } => None,
        }
    }
}

impl From<IpAddr> for NetinfoAddr {
    fn from(a: IpAddr) -> Self {
        match a {
            IpAddr::V4(a) => NetinfoAddr::Ipv4(a),
            IpAddr::V6(a) => NetinfoAddr::Ipv6(a),
        }
    }
}

fn read_addr(r: &mut Reader<'_>) -> Result<NetinfoAddr, CellError> {
    let addr_type = r.u8("NETINFO address type")?;
    let len = r.u8("NETINFO address length")? as usize;
    let v = r.take(len, "NETINFO address")?;
    // The trunnel union is "with length len": a known type must fill exactly `len` bytes.
    let bad = || CellError::BadLength {
        what: if addr_type == ATYPE_IPV4 {
            "NETINFO IPv4 address"
        } else {
            "NETINFO IPv6 address"
        },
        len,
    };
    Ok(match addr_type {
        ATYPE_IPV4 => NetinfoAddr::Ipv4(Ipv4Addr::from(<[u8; 4]>::try_from(v).map_err(|_| bad())?)),
        ATYPE_IPV6 => {
            NetinfoAddr::Ipv6(Ipv6Addr::from(<[u8; 16]>::try_from(v).map_err(|_| bad())?))
        }
        _ => NetinfoAddr::Unrecognized { addr_type },
    })
}

fn write_addr(w: &mut Writer<'_>, a: &NetinfoAddr) -> Result<(), CellError> {
    match a {
        NetinfoAddr::Ipv4(a) => {
            w.bytes(&[ATYPE_IPV4, 4])?;
            w.bytes(&a.octets())
        }
        NetinfoAddr::Ipv6(a) => {
            w.bytes(&[ATYPE_IPV6, 16])?;
            w.bytes(&a.octets())
        }
        NetinfoAddr::Unrecognized { addr_type } => w.bytes(&[*addr_type, 0]),
    }
}

/// A parsed NETINFO body; `my_addrs` were validated by `parse`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Netinfo<'a> {
    /// Sender's clock, seconds since the Unix epoch (relays must send the real time).
    pub timestamp: u32,
    /// The receiver's address as the sender sees it.
    pub other_addr: NetinfoAddr,
    n_my_addrs: u8,
    my_addrs: &'a [u8],
}

impl<'a> Netinfo<'a> {
    /// Bytes after the last address (the fixed-cell zero padding) are ignored.
    pub fn parse(body: &'a [u8]) -> Result<Self, CellError> {
        let mut r = Reader::new(body);
        let timestamp = r.u32("NETINFO time")?;
        let other_addr = read_addr(&mut r)?;
        let n_my_addrs = r.u8("NETINFO address count")?;
        let start = body.len() - r.remaining();
        for _ in 0..n_my_addrs {
            read_addr(&mut r)?;
        }
        let end = body.len() - r.remaining();
        Ok(Netinfo {
            timestamp,
            other_addr,
            n_my_addrs,
            my_addrs: &body[start..end],
        })
    }

    pub fn my_addrs(&self) -> impl Iterator<Item = NetinfoAddr> + 'a {
        let mut r = Reader::new(self.my_addrs);
        (0..self.n_my_addrs).map_while(move |_| read_addr(&mut r).ok())
    }

    /// Fills a whole NETINFO cell body.
    pub fn encode(
        timestamp: u32,
        other_addr: &NetinfoAddr,
        my_addrs: &[NetinfoAddr],
        out: &mut [u8; CELL_BODY_LEN],
    ) -> Result<(), CellError> {
        let mut w = Writer::new(out, "NETINFO body");
        w.u32(timestamp)?;
        write_addr(&mut w, other_addr)?;
        w.u8(crate::cell::bytes::len_u8(
            "NETINFO address count",
            my_addrs.len(),
        )?)?;
        for a in my_addrs {
            write_addr(&mut w, a)?;
        }
        let used = w.len();
        zero_tail(out, used);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_encoding_and_round_trip() {
        let other = NetinfoAddr::Ipv4(Ipv4Addr::new(127, 0, 0, 1));
        let mine = [
            NetinfoAddr::Ipv4(Ipv4Addr::new(10, 1, 2, 3)),
            NetinfoAddr::Ipv6(Ipv6Addr::LOCALHOST),
        ];
        let mut body = [0xFFu8; CELL_BODY_LEN];
        Netinfo::encode(0x6000_0000, &other, &mine, &mut body).unwrap();
        assert_eq!(
            &body[..17],
            &[0x60, 0, 0, 0, 4, 4, 127, 0, 0, 1, 2, 4, 4, 10, 1, 2, 3]
        );
        assert_eq!(&body[17..19], &[6, 16]);
        assert!(body[37..].iter().all(|&b| b == 0));
        let p = Netinfo::parse(&body).unwrap();
        assert_eq!(p.timestamp, 0x6000_0000);
        assert_eq!(p.other_addr, other);
        assert_eq!(p.my_addrs().collect::<Vec<_>>(), mine.to_vec());
    }

    #[test]
    fn unknown_type_tolerated() {
        // other addr of type 9 with 3 bytes, no own addresses
        let body = [0, 0, 0, 1, 9, 3, 1, 2, 3, 1, 0x22, 0];
        let p = Netinfo::parse(&body).unwrap();
        assert_eq!(p.other_addr, NetinfoAddr::Unrecognized { addr_type: 9 });
        assert_eq!(
            p.my_addrs().collect::<Vec<_>>(),
            vec![NetinfoAddr::Unrecognized { addr_type: 0x22 }]
        );
    }

    #[test]
    fn bad_lengths_rejected() {
        assert_eq!(
            Netinfo::parse(&[0, 0, 0, 1, 4, 5, 1, 2, 3, 4, 5, 0]),
            Err(CellError::BadLength {
                what: "NETINFO IPv4 address",
                len: 5
            })
        );
        assert!(Netinfo::parse(&[0, 0, 0, 1, 6, 4, 1, 2, 3, 4, 0]).is_err());
        // claims two own addresses, has one
        assert!(matches!(
            Netinfo::parse(&[0, 0, 0, 1, 4, 4, 1, 2, 3, 4, 2, 4, 4, 1, 1, 1, 1]),
            Err(CellError::Truncated { .. })
        ));
        assert!(Netinfo::parse(&[0, 0, 0]).is_err());
    }
}
