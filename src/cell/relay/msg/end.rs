//! END body: reason(u8), plus for EXITPOLICY the refused address and optionally its TTL
//! (tor-spec §"Closing streams"; C tor `connection_ap_process_end_not_open`).

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::cell::bytes::Writer;
use crate::cell::CellError;

/// Why a stream ended (tor-spec §"Closing streams", codes 1–14).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum EndReason {
    Misc,
    ResolveFailed,
    ConnectRefused,
    ExitPolicy,
    Destroy,
    Done,
    Timeout,
    NoRoute,
    Hibernating,
    Internal,
    ResourceLimit,
    ConnReset,
    TorProtocol,
    NotDirectory,
    /// Any other code (0, or ≥ 15: code 15 is not a valid remote reason).
    Unrecognized(u8),
}

impl From<u8> for EndReason {
    fn from(v: u8) -> Self {
        use EndReason::*;
        match v {
            1 => Misc,
            2 => ResolveFailed,
            3 => ConnectRefused,
            4 => ExitPolicy,
            5 => Destroy,
            6 => Done,
            7 => Timeout,
            8 => NoRoute,
            9 => Hibernating,
            10 => Internal,
            11 => ResourceLimit,
            12 => ConnReset,
            13 => TorProtocol,
            14 => NotDirectory,
            x => Unrecognized(x),
        }
    }
}

impl From<EndReason> for u8 {
    fn from(r: EndReason) -> u8 {
        use EndReason::*;
        match r {
            Misc => 1,
            ResolveFailed => 2,
            ConnectRefused => 3,
            ExitPolicy => 4,
            Destroy => 5,
            Done => 6,
            Timeout => 7,
            NoRoute => 8,
            Hibernating => 9,
            Internal => 10,
            ResourceLimit => 11,
            ConnReset => 12,
            TorProtocol => 13,
            NotDirectory => 14,
            Unrecognized(x) => x,
        }
    }
}

/// A parsed END body.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct End {
    pub reason: EndReason,
    /// Only with `ExitPolicy`: the resolved address the policy refused.
    pub addr: Option<IpAddr>,
    /// Only with `addr`: how long the client may cache that address.
    pub ttl: Option<u32>,
}

impl End {
    pub const fn new(reason: EndReason) -> Self {
        End {
            reason,
            addr: None,
            ttl: None,
        }
    }

    /// An empty body means MISC, as in C tor. The EXITPOLICY address is recognised only in
    /// the lengths C accepts (5/9 for IPv4, 17/21 for IPv6); other trailing bytes are ignored.
    pub fn parse(data: &[u8]) -> Result<Self, CellError> {
        let Some(&code) = data.first() else {
            return Ok(End::new(EndReason::Misc));
        };
        let reason = EndReason::from(code);
        let mut end = End::new(reason);
        if reason == EndReason::ExitPolicy {
            let ttl_at = |at: usize| {
                data.get(at..at + 4)
                    .map(|t| u32::from_be_bytes([t[0], t[1], t[2], t[3]]))
            };
            match data.len() {
                5 | 9 => {
                    let a: [u8; 4] = data[1..5].try_into().expect("4 bytes");
                    end.addr = Some(IpAddr::V4(Ipv4Addr::from(a)));
                    end.ttl = ttl_at(5);
                }
                17 | 21 => {
                    let a: [u8; 16] = data[1..17].try_into().expect("16 bytes");
                    end.addr = Some(IpAddr::V6(Ipv6Addr::from(a)));
                    end.ttl = ttl_at(17);
                }
                _ => {}
            }
        }
        Ok(end)
    }

    /// Writes the body. `addr`/`ttl` are written only for `ExitPolicy`.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, CellError> {
        let mut w = Writer::new(out, "END body");
        w.u8(self.reason.into())?;
        if self.reason == EndReason::ExitPolicy {
            if let Some(addr) = self.addr {
                match addr {
                    IpAddr::V4(a) => w.bytes(&a.octets())?,
                    IpAddr::V6(a) => w.bytes(&a.octets())?,
                }
                if let Some(ttl) = self.ttl {
                    w.u32(ttl)?;
                }
            }
        }
        Ok(w.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_reasons_round_trip() {
        for v in 0..=255u8 {
            let r = EndReason::from(v);
            assert_eq!(u8::from(r), v);
            assert_eq!(
                matches!(r, EndReason::Unrecognized(_)),
                !(1..=14).contains(&v)
            );
            let mut buf = [0u8; 32];
            let n = End::new(r).encode(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[v]);
            assert_eq!(End::parse(&buf[..n]).unwrap().reason, r);
        }
    }

    #[test]
    fn exit_policy_forms() {
        let mut buf = [0u8; 32];
        let e = End {
            reason: EndReason::ExitPolicy,
            addr: Some(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4))),
            ttl: Some(300),
        };
        let n = e.encode(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[4, 1, 2, 3, 4, 0, 0, 1, 0x2C]);
        assert_eq!(End::parse(&buf[..n]).unwrap(), e);
        let e6 = End {
            reason: EndReason::ExitPolicy,
            addr: Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            ttl: None,
        };
        let n = e6.encode(&mut buf).unwrap();
        assert_eq!(n, 17);
        assert_eq!(End::parse(&buf[..n]).unwrap(), e6);
        let e6t = End {
            ttl: Some(60),
            ..e6
        };
        let n = e6t.encode(&mut buf).unwrap();
        assert_eq!(n, 21);
        assert_eq!(End::parse(&buf[..n]).unwrap(), e6t);
        // Odd lengths carry no address.
        assert_eq!(
            End::parse(&[4, 1, 2]).unwrap(),
            End::new(EndReason::ExitPolicy)
        );
        // Address ignored for other reasons.
        assert_eq!(
            End::parse(&[6, 1, 2, 3, 4]).unwrap(),
            End::new(EndReason::Done)
        );
    }

    #[test]
    fn empty_is_misc() {
        assert_eq!(End::parse(&[]).unwrap(), End::new(EndReason::Misc));
    }
}
