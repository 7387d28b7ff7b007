//! RESOLVE and RESOLVED bodies (tor-spec §"Remote hostname lookup"; C tor
//! `resolved_cell_parse`, `send_resolved_cell`).

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::begin::parse_hostname;
use crate::cell::bytes::{len_u8, Reader, Writer};
use crate::cell::CellError;

/// A RESOLVE body: a hostname (or in-addr.arpa / ip6.arpa name for PTR), NUL-terminated.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Resolve<'a> {
    pub hostname: &'a str,
}

impl<'a> Resolve<'a> {
    /// The name runs to the first NUL; like C tor, a missing NUL is tolerated (the name
    /// then runs to the end of the data).
    pub fn parse(data: &'a [u8]) -> Result<Self, CellError> {
        let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
        Ok(Resolve {
            hostname: parse_hostname(&data[..end], "RESOLVE")?,
        })
    }

    pub fn encode(&self, out: &mut [u8]) -> Result<usize, CellError> {
        parse_hostname(self.hostname.as_bytes(), "RESOLVE")?;
        let mut w = Writer::new(out, "RESOLVE body");
        w.bytes(self.hostname.as_bytes())?;
        w.u8(0)?;
        Ok(w.len())
    }
}

const TYPE_HOSTNAME: u8 = 0;
const TYPE_IPV4: u8 = 4;
const TYPE_IPV6: u8 = 6;
const TYPE_ERROR_TRANSIENT: u8 = 0xF0;
const TYPE_ERROR: u8 = 0xF1;

/// The value of one RESOLVED answer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ResolvedValue<'a> {
    /// PTR answer; raw bytes, at least one.
    Hostname(&'a [u8]),
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    /// 0xF0; the bytes are a human-readable message (C sends "Error resolving hostname").
    TransientError(&'a [u8]),
    /// 0xF1.
    PermanentError(&'a [u8]),
    Unrecognized {
        answer_type: u8,
        body: &'a [u8],
    },
}

impl From<IpAddr> for ResolvedValue<'_> {
    fn from(a: IpAddr) -> Self {
        match a {
            IpAddr::V4(a) => ResolvedValue::Ipv4(a),
            IpAddr::V6(a) => ResolvedValue::Ipv6(a),
        }
    }
}

/// One RESOLVED answer: type(1) | len(1) | value | TTL(u32).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ResolvedAnswer<'a> {
    pub value: ResolvedValue<'a>,
    pub ttl: u32,
}

impl<'a> ResolvedAnswer<'a> {
    fn read(r: &mut Reader<'a>) -> Result<Self, CellError> {
        let answer_type = r.u8("RESOLVED answer type")?;
        let len = r.u8("RESOLVED answer length")? as usize;
        let v = r.take(len, "RESOLVED answer")?;
        let ttl = r.u32("RESOLVED answer TTL")?;
        let bad = |what| CellError::BadLength { what, len };
        let value = match answer_type {
            TYPE_IPV4 => ResolvedValue::Ipv4(Ipv4Addr::from(
                <[u8; 4]>::try_from(v).map_err(|_| bad("RESOLVED IPv4 answer"))?,
            )),
            TYPE_IPV6 => ResolvedValue::Ipv6(Ipv6Addr::from(
                <[u8; 16]>::try_from(v).map_err(|_| bad("RESOLVED IPv6 answer"))?,
            )),
            TYPE_HOSTNAME if v.is_empty() => return Err(bad("RESOLVED hostname answer")),
            TYPE_HOSTNAME => ResolvedValue::Hostname(v),
            TYPE_ERROR_TRANSIENT => ResolvedValue::TransientError(v),
            TYPE_ERROR => ResolvedValue::PermanentError(v),
            _ => ResolvedValue::Unrecognized {
                answer_type,
                body: v,
            },
        };
        Ok(ResolvedAnswer { value, ttl })
    }

    fn write(&self, w: &mut Writer<'_>) -> Result<(), CellError> {
        let (t, body): (u8, &[u8]) = match &self.value {
            ResolvedValue::Hostname(h) => (TYPE_HOSTNAME, h),
            ResolvedValue::Ipv4(a) => {
                w.bytes(&[TYPE_IPV4, 4])?;
                w.bytes(&a.octets())?;
                return w.u32(self.ttl);
            }
            ResolvedValue::Ipv6(a) => {
                w.bytes(&[TYPE_IPV6, 16])?;
                w.bytes(&a.octets())?;
                return w.u32(self.ttl);
            }
            ResolvedValue::TransientError(m) => (TYPE_ERROR_TRANSIENT, m),
            ResolvedValue::PermanentError(m) => (TYPE_ERROR, m),
            ResolvedValue::Unrecognized { answer_type, body } => (*answer_type, body),
        };
        if t == TYPE_HOSTNAME && body.is_empty() {
            return Err(CellError::BadLength {
                what: "RESOLVED hostname answer",
                len: 0,
            });
        }
        w.u8(t)?;
        w.u8(len_u8("RESOLVED answer", body.len())?)?;
        w.bytes(body)?;
        w.u32(self.ttl)
    }
}

/// A parsed RESOLVED body; all answers were validated by `parse`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Resolved<'a> {
    raw: &'a [u8],
}

impl<'a> Resolved<'a> {
    /// Any malformed answer rejects the whole message, as in C tor.
    pub fn parse(data: &'a [u8]) -> Result<Self, CellError> {
        let mut r = Reader::new(data);
        while r.remaining() > 0 {
            ResolvedAnswer::read(&mut r)?;
        }
        Ok(Resolved { raw: data })
    }

    /// The validated wire image (for re-encoding).
    pub fn wire(&self) -> &'a [u8] {
        self.raw
    }

    pub fn answers(&self) -> impl Iterator<Item = ResolvedAnswer<'a>> + 'a {
        let mut r = Reader::new(self.raw);
        core::iter::from_fn(move || {
            if r.remaining() == 0 {
                None
            } else {
                ResolvedAnswer::read(&mut r).ok()
            }
        })
    }

    pub fn encode(answers: &[ResolvedAnswer<'_>], out: &mut [u8]) -> Result<usize, CellError> {
        let mut w = Writer::new(out, "RESOLVED body");
        for a in answers {
            a.write(&mut w)?;
        }
        Ok(w.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_round_trip() {
        let mut buf = [0u8; 64];
        let n = Resolve {
            hostname: "4.3.2.1.in-addr.arpa",
        }
        .encode(&mut buf)
        .unwrap();
        assert_eq!(&buf[..n], b"4.3.2.1.in-addr.arpa\0");
        assert_eq!(
            Resolve::parse(&buf[..n]).unwrap().hostname,
            "4.3.2.1.in-addr.arpa"
        );
        assert_eq!(Resolve::parse(b"a.b").unwrap().hostname, "a.b");
        assert!(Resolve::parse(b"\0").is_err());
        assert!(Resolve::parse(b"").is_err());
        assert!(Resolve::parse(b"a b\0").is_err());
    }

    #[test]
    fn resolved_known_encoding_and_round_trip() {
        let answers = [
            ResolvedAnswer {
                value: ResolvedValue::Ipv4(Ipv4Addr::new(1, 2, 3, 4)),
                ttl: 300,
            },
            ResolvedAnswer {
                value: ResolvedValue::Ipv6(Ipv6Addr::LOCALHOST),
                ttl: 60,
            },
            ResolvedAnswer {
                value: ResolvedValue::Hostname(b"example.org"),
                ttl: 3600,
            },
            ResolvedAnswer {
                value: ResolvedValue::TransientError(b"Error resolving hostname"),
                ttl: 0,
            },
            ResolvedAnswer {
                value: ResolvedValue::PermanentError(b""),
                ttl: 0,
            },
            ResolvedAnswer {
                value: ResolvedValue::Unrecognized {
                    answer_type: 0x77,
                    body: &[1],
                },
                ttl: 5,
            },
        ];
        let mut buf = [0u8; 498];
        let n = Resolved::encode(&answers, &mut buf).unwrap();
        assert_eq!(&buf[..10], &[4, 4, 1, 2, 3, 4, 0, 0, 1, 0x2C]);
        let p = Resolved::parse(&buf[..n]).unwrap();
        assert_eq!(p.answers().collect::<Vec<_>>(), answers.to_vec());
    }

    #[test]
    fn resolved_negative() {
        assert!(Resolved::parse(&[4, 3, 1, 2, 3, 0, 0, 0, 0]).is_err());
        assert!(Resolved::parse(&[6, 4, 1, 2, 3, 4, 0, 0, 0, 0]).is_err());
        assert!(Resolved::parse(&[0, 0, 0, 0, 0, 0]).is_err());
        assert!(Resolved::parse(&[4, 4, 1, 2, 3, 4, 0, 0, 0]).is_err());
        assert!(Resolved::parse(&[4]).is_err());
        assert_eq!(Resolved::parse(&[]).unwrap().answers().count(), 0);
    }
}
