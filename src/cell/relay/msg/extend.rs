//! EXTEND2 / EXTENDED2 bodies (tor-spec §"EXTEND and EXTENDED messages"):
//! EXTEND2 = NSPEC(1) | NSPEC × (type(1) | len(1) | spec) | CREATE2 body;
//! EXTENDED2 = HLEN(u16) | HDATA (a CREATED2 body).

use core::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use crate::cell::bytes::{len_u16, len_u8, Reader, Writer};
use crate::cell::chan::Create2;
use crate::cell::CellError;
use crate::crypto::ids::{Ed25519Identity, RsaIdentity};

const LS_IPV4: u8 = 0;
const LS_IPV6: u8 = 1;
const LS_RSA_ID: u8 = 2;
const LS_ED25519_ID: u8 = 3;

/// A link specifier: how to reach and recognise the next hop.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LinkSpec<'a> {
    Ipv4(SocketAddrV4),
    Ipv6(SocketAddrV6),
    /// SHA-1 of the RSA identity key; mandatory in EXTEND2.
    RsaId(RsaIdentity),
    Ed25519Id(Ed25519Identity),
    /// Types we do not know are kept and ignored (tor-spec).
    Unrecognized {
        ls_type: u8,
        body: &'a [u8],
    },
}

fn fixed<const N: usize>(ls_type: u8, body: &[u8]) -> Result<[u8; N], CellError> {
    body.try_into().map_err(|_| CellError::BadLength {
        what: match ls_type {
            LS_IPV4 => "IPv4 link specifier",
            LS_IPV6 => "IPv6 link specifier",
            LS_RSA_ID => "RSA identity link specifier",
            _ => "Ed25519 identity link specifier",
        },
        len: body.len(),
    })
}

impl<'a> LinkSpec<'a> {
    fn read(r: &mut Reader<'a>) -> Result<Self, CellError> {
        let ls_type = r.u8("link specifier type")?;
        let len = r.u8("link specifier length")? as usize;
        let body = r.take(len, "link specifier")?;
        Ok(match ls_type {
            LS_IPV4 => {
                let b: [u8; 6] = fixed(ls_type, body)?;
                LinkSpec::Ipv4(SocketAddrV4::new(
                    Ipv4Addr::new(b[0], b[1], b[2], b[3]),
                    u16::from_be_bytes([b[4], b[5]]),
                ))
            }
            LS_IPV6 => {
                let b: [u8; 18] = fixed(ls_type, body)?;
                let ip: [u8; 16] = b[..16].try_into().expect("16 bytes");
                LinkSpec::Ipv6(SocketAddrV6::new(
                    Ipv6Addr::from(ip),
                    u16::from_be_bytes([b[16], b[17]]),
                    0,
                    0,
                ))
            }
            LS_RSA_ID => LinkSpec::RsaId(RsaIdentity(fixed(ls_type, body)?)),
            LS_ED25519_ID => LinkSpec::Ed25519Id(Ed25519Identity(fixed(ls_type, body)?)),
            _ => LinkSpec::Unrecognized { ls_type, body },
        })
    }

    fn write(&self, w: &mut Writer<'_>) -> Result<(), CellError> {
        match self {
            LinkSpec::Ipv4(a) => {
                w.bytes(&[LS_IPV4, 6])?;
                w.bytes(&a.ip().octets())?;
                w.u16(a.port())
            }
            LinkSpec::Ipv6(a) => {
                w.bytes(&[LS_IPV6, 18])?;
                w.bytes(&a.ip().octets())?;
                w.u16(a.port())
            }
            LinkSpec::RsaId(id) => {
                w.bytes(&[LS_RSA_ID, 20])?;
                w.bytes(&id.0)
            }
            LinkSpec::Ed25519Id(id) => {
                w.bytes(&[LS_ED25519_ID, 32])?;
                w.bytes(&id.0)
            }
            LinkSpec::Unrecognized { ls_type, body } => {
                w.u8(*ls_type)?;
                w.u8(len_u8("link specifier", body.len())?)?;
                w.bytes(body)
            }
        }
    }
}

/// A parsed EXTEND2 body. The link specifiers were validated by `parse`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Extend2<'a> {
    n_specs: u8,
    specs: &'a [u8],
    pub create2: Create2<'a>,
    /// Everything parsed, up to the end of HDATA.
    wire: &'a [u8],
}

impl<'a> Extend2<'a> {
    /// Checks the wire format only; which specifiers are required (exactly one RSA id, an
    /// address...) is the circuit layer's decision. Bytes after the CREATE2 body are ignored.
    pub fn parse(data: &'a [u8]) -> Result<Self, CellError> {
        let mut r = Reader::new(data);
        let n_specs = r.u8("EXTEND2 NSPEC")?;
        let start = data.len() - r.remaining();
        for _ in 0..n_specs {
            LinkSpec::read(&mut r)?;
        }
        let end = data.len() - r.remaining();
        let create2 = Create2::parse_reader(&mut r)?;
        Ok(Extend2 {
            n_specs,
            specs: &data[start..end],
            create2,
            wire: &data[..data.len() - r.remaining()],
        })
    }

    /// The validated wire image without trailing bytes (for re-encoding).
    pub fn wire(&self) -> &'a [u8] {
        self.wire
    }

    pub fn link_specs(&self) -> impl Iterator<Item = LinkSpec<'a>> + 'a {
        let mut r = Reader::new(self.specs);
        (0..self.n_specs).map_while(move |_| LinkSpec::read(&mut r).ok())
    }

    pub fn encode(
        specs: &[LinkSpec<'_>],
        create2: &Create2<'_>,
        out: &mut [u8],
    ) -> Result<usize, CellError> {
        let mut w = Writer::new(out, "EXTEND2 body");
        w.u8(len_u8("EXTEND2 NSPEC", specs.len())?)?;
        for s in specs {
            s.write(&mut w)?;
        }
        create2.write(&mut w)?;
        Ok(w.len())
    }
}

/// A parsed EXTENDED2 body: the next hop's CREATED2 reply, relayed back.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Extended2<'a> {
    pub hdata: &'a [u8],
}

impl<'a> Extended2<'a> {
    pub fn parse(data: &'a [u8]) -> Result<Self, CellError> {
        let mut r = Reader::new(data);
        let hlen = r.u16("EXTENDED2 HLEN")? as usize;
        Ok(Extended2 {
            hdata: r.take(hlen, "EXTENDED2 HDATA")?,
        })
    }

    pub fn encode(&self, out: &mut [u8]) -> Result<usize, CellError> {
        let mut w = Writer::new(out, "EXTENDED2 body");
        w.u16(len_u16(
            "EXTENDED2 HDATA",
            self.hdata.len(),
            u16::MAX as usize,
        )?)?;
        w.bytes(self.hdata)?;
        Ok(w.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::chan::HandshakeType;

    #[test]
    fn extend2_known_encoding_and_round_trip() {
        let specs = [
            LinkSpec::Ipv4("127.0.0.1:9001".parse().unwrap()),
            LinkSpec::RsaId(RsaIdentity([0x11; 20])),
            LinkSpec::Ed25519Id(Ed25519Identity([0x22; 32])),
            LinkSpec::Ipv6("[::1]:443".parse().unwrap()),
            LinkSpec::Unrecognized {
                ls_type: 9,
                body: &[1, 2],
            },
        ];
        let hdata = [0x33u8; 84];
        let c2 = Create2 {
            htype: HandshakeType::NTOR,
            hdata: &hdata,
        };
        let mut buf = [0u8; 498];
        let n = Extend2::encode(&specs, &c2, &mut buf).unwrap();
        assert_eq!(&buf[..9], &[5, 0, 6, 127, 0, 0, 1, 0x23, 0x29]);
        assert_eq!(&buf[9..11], &[2, 20]);
        assert_eq!(n, 1 + 8 + 22 + 34 + 20 + 4 + 4 + 84);
        let p = Extend2::parse(&buf[..n]).unwrap();
        assert_eq!(p.link_specs().collect::<Vec<_>>(), specs.to_vec());
        assert_eq!(p.create2, c2);
    }

    #[test]
    fn extend2_negative() {
        // IPv4 spec with length 4.
        assert_eq!(
            Extend2::parse(&[1, 0, 4, 1, 2, 3, 4, 0, 2, 0, 0]),
            Err(CellError::BadLength {
                what: "IPv4 link specifier",
                len: 4
            })
        );
        // RSA id with length 19.
        let mut b = vec![1, 2, 19];
        b.extend([0; 19]);
        b.extend([0, 2, 0, 0]);
        assert!(Extend2::parse(&b).is_err());
        // Missing CREATE2 body.
        assert!(Extend2::parse(&[0]).is_err());
        // Spec runs past the end.
        assert!(Extend2::parse(&[1, 9, 10, 1]).is_err());
        // HLEN past the end.
        assert!(Extend2::parse(&[0, 0, 2, 0, 5, 1]).is_err());
    }

    #[test]
    fn extended2_round_trip() {
        let hdata = [7u8; 64];
        let mut buf = [0u8; 100];
        let n = Extended2 { hdata: &hdata }.encode(&mut buf).unwrap();
        assert_eq!(&buf[..2], &[0, 64]);
        assert_eq!(Extended2::parse(&buf[..n]).unwrap().hdata, &hdata);
        assert!(Extended2::parse(&buf[..n - 1]).is_err());
        assert!(Extended2::parse(&[0]).is_err());
    }
}
