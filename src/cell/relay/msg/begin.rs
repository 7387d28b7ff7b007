//! BEGIN body: `ADDRESS:PORT` NUL [FLAGS(u32)] (tor-spec §"Opening streams").

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::cell::bytes::Writer;
use crate::cell::CellError;

/// BEGIN flags (tor-spec §"Opening streams"); unknown bits are kept, not rejected.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct BeginFlags(pub u32);

impl BeginFlags {
    /// The client accepts an IPv6 connection.
    pub const IPV6_OK: u32 = 1 << 0;
    /// The client does not accept an IPv4 connection.
    pub const IPV4_NOT_OK: u32 = 1 << 1;
    /// The client prefers IPv6 when the hostname has both.
    pub const IPV6_PREFERRED: u32 = 1 << 2;

    pub const fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }
}

/// Where a BEGIN asks to connect.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BeginTarget<'a> {
    /// A name for the exit to resolve. Only checked here to be printable ASCII without `:`;
    /// the exit applies its own hostname rules.
    Hostname(&'a str),
    Ipv4(Ipv4Addr),
    /// Sent in brackets on the wire.
    Ipv6(Ipv6Addr),
}

/// A parsed BEGIN body.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Begin<'a> {
    pub target: BeginTarget<'a>,
    pub port: u16,
    pub flags: BeginFlags,
}

/// Printable ASCII other than space and the characters that delimit the address.
fn is_hostname_ok(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b':' | b'[' | b']'))
}

pub(super) fn parse_hostname<'a>(raw: &'a [u8], what: &'static str) -> Result<&'a str, CellError> {
    let h = core::str::from_utf8(raw).map_err(|_| CellError::BadAddress(what))?;
    if is_hostname_ok(h) {
        Ok(h)
    } else {
        Err(CellError::BadAddress(what))
    }
}

fn parse_port(s: &str) -> Result<u16, CellError> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CellError::BadPort);
    }
    match s.parse::<u32>() {
        Ok(p @ 1..=65535) => Ok(p as u16),
        _ => Err(CellError::BadPort),
    }
}

impl<'a> Begin<'a> {
    /// Parses as C tor's `begin_cell_parse`: the address runs to the first NUL and is split
    /// at its last `:`; FLAGS is read only when 4 bytes follow the NUL. An unbracketed IPv6
    /// literal therefore has no port and is rejected, as in C.
    pub fn parse(data: &'a [u8]) -> Result<Self, CellError> {
        let nul = data
            .iter()
            .position(|&b| b == 0)
            .ok_or(CellError::MissingNul("BEGIN"))?;
        let addrport =
            core::str::from_utf8(&data[..nul]).map_err(|_| CellError::BadAddress("BEGIN"))?;
        let colon = addrport.rfind(':').ok_or(CellError::MissingPort)?;
        let (host, port) = (&addrport[..colon], &addrport[colon + 1..]);
        let port = parse_port(port)?;
        let target = if let Some(inner) = host.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or(CellError::BadAddress("BEGIN"))?;
            BeginTarget::Ipv6(inner.parse().map_err(|_| CellError::BadAddress("BEGIN"))?)
        } else if let Ok(a) = host.parse::<Ipv4Addr>() {
            BeginTarget::Ipv4(a)
        } else {
            BeginTarget::Hostname(parse_hostname(host.as_bytes(), "BEGIN")?)
        };
        let flags = match data.get(nul + 1..nul + 5) {
            Some(f) => u32::from_be_bytes([f[0], f[1], f[2], f[3]]),
            None => 0,
        };
        Ok(Begin {
            target,
            port,
            flags: BeginFlags(flags),
        })
    }

    /// Writes the body; FLAGS is omitted when zero, as C tor clients do.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, CellError> {
        if self.port == 0 {
            return Err(CellError::BadPort);
        }
        let mut w = Writer::new(out, "BEGIN body");
        match self.target {
            BeginTarget::Hostname(h) => {
                if !is_hostname_ok(h) {
                    return Err(CellError::BadAddress("BEGIN"));
                }
                w.fmt(format_args!("{h}:{}", self.port))?
            }
            BeginTarget::Ipv4(a) => w.fmt(format_args!("{a}:{}", self.port))?,
            BeginTarget::Ipv6(a) => w.fmt(format_args!("[{a}]:{}", self.port))?,
        }
        w.u8(0)?;
        if self.flags.0 != 0 {
            w.u32(self.flags.0)?;
        }
        Ok(w.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(b: Begin<'_>) {
        let mut buf = [0u8; 498];
        let n = b.encode(&mut buf).unwrap();
        assert_eq!(Begin::parse(&buf[..n]).unwrap(), b);
    }

    #[test]
    fn known_encodings() {
        let b = Begin::parse(b"example.com:443\0").unwrap();
        assert_eq!(b.target, BeginTarget::Hostname("example.com"));
        assert_eq!((b.port, b.flags), (443, BeginFlags(0)));

        let b = Begin::parse(b"[2001:db8::1]:80\0\0\0\0\x05").unwrap();
        assert_eq!(b.target, BeginTarget::Ipv6("2001:db8::1".parse().unwrap()));
        assert!(b.flags.has(BeginFlags::IPV6_OK));
        assert!(!b.flags.has(BeginFlags::IPV4_NOT_OK));
        assert!(b.flags.has(BeginFlags::IPV6_PREFERRED));

        let b = Begin::parse(b"127.0.0.1:9\0\0\0\0\x02").unwrap();
        assert_eq!(b.target, BeginTarget::Ipv4(Ipv4Addr::LOCALHOST));
        assert!(b.flags.has(BeginFlags::IPV4_NOT_OK));

        let mut buf = [0u8; 64];
        let n = Begin {
            target: BeginTarget::Ipv6(Ipv6Addr::LOCALHOST),
            port: 65535,
            flags: BeginFlags(BeginFlags::IPV6_OK),
        }
        .encode(&mut buf)
        .unwrap();
        assert_eq!(&buf[..n], b"[::1]:65535\0\0\0\0\x01");
    }

    #[test]
    fn round_trips() {
        round_trip(Begin {
            target: BeginTarget::Hostname("torproject.org"),
            port: 80,
            flags: BeginFlags(0),
        });
        round_trip(Begin {
            target: BeginTarget::Ipv4(Ipv4Addr::new(10, 0, 0, 1)),
            port: 1,
            flags: BeginFlags(7),
        });
        round_trip(Begin {
            target: BeginTarget::Ipv6("fe80::1:2".parse().unwrap()),
            port: 22,
            flags: BeginFlags(1),
        });
    }

    #[test]
    fn short_flags_ignored() {
        // Fewer than 4 bytes after the NUL: no flags.
        assert_eq!(
            Begin::parse(b"a.b:1\0\x01\x02").unwrap().flags,
            BeginFlags(0)
        );
    }

    #[test]
    fn negative_cases() {
        assert_eq!(
            Begin::parse(b"a.com:80"),
            Err(CellError::MissingNul("BEGIN"))
        );
        assert_eq!(Begin::parse(b"a.com\0"), Err(CellError::MissingPort));
        assert_eq!(Begin::parse(b"a.com:0\0"), Err(CellError::BadPort));
        assert_eq!(Begin::parse(b"a.com:65536\0"), Err(CellError::BadPort));
        assert_eq!(Begin::parse(b"a.com:\0"), Err(CellError::BadPort));
        assert_eq!(Begin::parse(b"a.com:+80\0"), Err(CellError::BadPort));
        assert_eq!(
            Begin::parse(b"::1:80\0"),
            Err(CellError::BadAddress("BEGIN"))
        );
        assert_eq!(
            Begin::parse(b"[::1:80\0"),
            Err(CellError::BadAddress("BEGIN"))
        );
        assert_eq!(
            Begin::parse(b"[zz]:80\0"),
            Err(CellError::BadAddress("BEGIN"))
        );
        assert_eq!(Begin::parse(b":80\0"), Err(CellError::BadAddress("BEGIN")));
        assert_eq!(
            Begin::parse(b"a b:80\0"),
            Err(CellError::BadAddress("BEGIN"))
        );
        assert_eq!(
            Begin::parse(b"\xff:80\0"),
            Err(CellError::BadAddress("BEGIN"))
        );
        let mut buf = [0u8; 64];
        assert!(Begin {
            target: BeginTarget::Hostname("x"),
            port: 0,
            flags: BeginFlags(0)
        }
        .encode(&mut buf)
        .is_err());
        assert!(Begin {
            target: BeginTarget::Hostname("a:b"),
            port: 1,
            flags: BeginFlags(0)
        }
        .encode(&mut buf)
        .is_err());
        assert!(Begin {
            target: BeginTarget::Hostname("abcdef"),
            port: 1,
            flags: BeginFlags(0)
        }
        .encode(&mut buf[..4])
        .is_err());
    }
}
