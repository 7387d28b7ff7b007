//! Relay message bodies: the `data` of a relay cell, interpreted by command
//! (tor-spec §"Opening streams", §"Closing streams", §"Remote hostname lookup",
//! §"Flow control", §"EXTEND and EXTENDED messages"; prop 324 for XON/XOFF).
//!
//! Parsers borrow from the cell; encoders write into a caller buffer (usually the data area
//! that `v0::encode_with` / `v1::encode_with` hands out) and return the length.

mod begin;
mod connected;
mod end;
mod extend;
mod flow;
mod resolve;
mod sendme;

pub use begin::{Begin, BeginFlags, BeginTarget};
pub use connected::Connected;
pub use end::{End, EndReason};
pub use extend::{Extend2, Extended2, LinkSpec};
pub use flow::{Xoff, Xon};
pub use resolve::{Resolve, Resolved, ResolvedAnswer, ResolvedValue};
pub use sendme::{Sendme, SENDME_TAG_LEN_CGO, SENDME_TAG_LEN_TOR1};

use super::{RelayCmd, RelayMsgRef};
use crate::cell::bytes::Writer;
use crate::cell::chan::DestroyReason;
use crate::cell::CellError;

/// A relay message, parsed from a relay cell's data.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RelayMsg<'a> {
    Begin(Begin<'a>),
    Data(&'a [u8]),
    End(End),
    Connected(Connected),
    Sendme(Sendme<'a>),
    /// Tear down everything after this hop; the body is empty.
    Truncate,
    /// The reason uses DESTROY codes.
    Truncated(DestroyReason),
    /// Long-range padding: discard.
    Drop,
    Resolve(Resolve<'a>),
    Resolved(Resolved<'a>),
    /// Open a stream to the relay's directory port; the body is ignored.
    BeginDir,
    Extend2(Extend2<'a>),
    Extended2(Extended2<'a>),
    Xoff(Xoff),
    Xon(Xon),
    /// A command known to Tor whose body this codec does not interpret (obsolete
    /// EXTEND/EXTENDED, conflux, onion services, circuit padding).
    Other {
        cmd: RelayCmd,
        body: &'a [u8],
    },
    /// A command unknown to Tor. In format v0 such cells are dropped without closing the
    /// circuit (forward compatibility); v1 already rejected them when decoding the cell.
    Unrecognized {
        cmd: RelayCmd,
        body: &'a [u8],
    },
}

impl<'a> RelayMsg<'a> {
    /// Parses `body` as the message for `cmd`.
    pub fn parse(cmd: RelayCmd, body: &'a [u8]) -> Result<Self, CellError> {
        Ok(match cmd {
            RelayCmd::BEGIN => RelayMsg::Begin(Begin::parse(body)?),
            RelayCmd::DATA => RelayMsg::Data(body),
            RelayCmd::END => RelayMsg::End(End::parse(body)?),
            RelayCmd::CONNECTED => RelayMsg::Connected(Connected::parse(body)?),
            RelayCmd::SENDME => RelayMsg::Sendme(Sendme::parse(body)?),
            RelayCmd::TRUNCATE => RelayMsg::Truncate,
            RelayCmd::TRUNCATED => match body.first() {
                Some(&r) => RelayMsg::Truncated(r.into()),
                None => {
                    return Err(CellError::Truncated {
                        what: "TRUNCATED reason",
                        need: 1,
                        have: 0,
                    })
                }
            },
            RelayCmd::DROP => RelayMsg::Drop,
            RelayCmd::RESOLVE => RelayMsg::Resolve(Resolve::parse(body)?),
            RelayCmd::RESOLVED => RelayMsg::Resolved(Resolved::parse(body)?),
            RelayCmd::BEGIN_DIR => RelayMsg::BeginDir,
            RelayCmd::EXTEND2 => RelayMsg::Extend2(Extend2::parse(body)?),
            RelayCmd::EXTENDED2 => RelayMsg::Extended2(Extended2::parse(body)?),
            RelayCmd::XOFF => RelayMsg::Xoff(Xoff::parse(body)?),
            RelayCmd::XON => RelayMsg::Xon(Xon::parse(body)?),
            c if c.is_known() => RelayMsg::Other { cmd: c, body },
            c => RelayMsg::Unrecognized { cmd: c, body },
        })
    }

    /// Parses the message of an already-framed relay cell.
    pub fn from_ref(m: &RelayMsgRef<'a>) -> Result<Self, CellError> {
        Self::parse(m.cmd, m.data)
    }

    pub fn cmd(&self) -> RelayCmd {
        match self {
            RelayMsg::Begin(_) => RelayCmd::BEGIN,
            RelayMsg::Data(_) => RelayCmd::DATA,
            RelayMsg::End(_) => RelayCmd::END,
            RelayMsg::Connected(_) => RelayCmd::CONNECTED,
            RelayMsg::Sendme(_) => RelayCmd::SENDME,
            RelayMsg::Truncate => RelayCmd::TRUNCATE,
            RelayMsg::Truncated(_) => RelayCmd::TRUNCATED,
            RelayMsg::Drop => RelayCmd::DROP,
            RelayMsg::Resolve(_) => RelayCmd::RESOLVE,
            RelayMsg::Resolved(_) => RelayCmd::RESOLVED,
            RelayMsg::BeginDir => RelayCmd::BEGIN_DIR,
            RelayMsg::Extend2(_) => RelayCmd::EXTEND2,
            RelayMsg::Extended2(_) => RelayCmd::EXTENDED2,
            RelayMsg::Xoff(_) => RelayCmd::XOFF,
            RelayMsg::Xon(_) => RelayCmd::XON,
            RelayMsg::Other { cmd, .. } | RelayMsg::Unrecognized { cmd, .. } => *cmd,
        }
    }

    /// Writes the message body into `out`; returns its length. EXTEND2 and RESOLVED, whose
    /// parsed form borrows a validated wire image, are written back as that image.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, CellError> {
        let raw = |b: &[u8], out: &mut [u8]| {
            let mut w = Writer::new(out, "relay message");
            w.bytes(b)?;
            Ok(w.len())
        };
        match self {
            RelayMsg::Begin(m) => m.encode(out),
            RelayMsg::Data(d) => raw(d, out),
            RelayMsg::End(m) => m.encode(out),
            RelayMsg::Connected(m) => m.encode(out),
            RelayMsg::Sendme(m) => m.encode(out),
            RelayMsg::Truncate | RelayMsg::Drop | RelayMsg::BeginDir => Ok(0),
            RelayMsg::Truncated(r) => raw(&[u8::from(*r)], out),
            RelayMsg::Resolve(m) => m.encode(out),
            RelayMsg::Resolved(m) => raw(m.wire(), out),
            RelayMsg::Extend2(m) => raw(m.wire(), out),
            RelayMsg::Extended2(m) => m.encode(out),
            RelayMsg::Xoff(m) => m.encode(out),
            RelayMsg::Xon(m) => m.encode(out),
            RelayMsg::Other { body, .. } | RelayMsg::Unrecognized { body, .. } => raw(body, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::chan::{Create2, HandshakeType};
    use crate::cell::relay::v0;
    use crate::cell::CELL_BODY_LEN;
    use rand::rngs::mock::StepRng;

    /// Every message survives message → relay cell (v0) → parse → message.
    #[test]
    fn every_message_round_trips_through_a_v0_cell() {
        let tag = [5u8; 20];
        let hdata = [6u8; 84];
        let mut ext = [0u8; 200];
        let n = Extend2::encode(
            &[LinkSpec::Ipv4("10.0.0.1:443".parse().unwrap())],
            &Create2 {
                htype: HandshakeType::NTOR,
                hdata: &hdata,
            },
            &mut ext,
        )
        .unwrap();
        let mut res = [0u8; 64];
        let rn = Resolved::encode(
            &[ResolvedAnswer {
                value: ResolvedValue::Ipv4("1.1.1.1".parse().unwrap()),
                ttl: 60,
            }],
            &mut res,
        )
        .unwrap();
        let msgs = [
            RelayMsg::Begin(Begin {
                target: BeginTarget::Hostname("example.com"),
                port: 443,
                flags: BeginFlags(1),
            }),
            RelayMsg::Data(b"GET / HTTP/1.0\r\n\r\n"),
            RelayMsg::End(End::new(EndReason::Done)),
            RelayMsg::Connected(Connected::default()),
            RelayMsg::Sendme(Sendme::V0),
            RelayMsg::Sendme(Sendme::V1 { tag: &tag }),
            RelayMsg::Truncate,
            RelayMsg::Truncated(DestroyReason::Requested),
            RelayMsg::Drop,
            RelayMsg::Resolve(Resolve { hostname: "a.org" }),
            RelayMsg::Resolved(Resolved::parse(&res[..rn]).unwrap()),
            RelayMsg::BeginDir,
            RelayMsg::Extend2(Extend2::parse(&ext[..n]).unwrap()),
            RelayMsg::Extended2(Extended2 {
                hdata: &hdata[..64],
            }),
            RelayMsg::Xoff(Xoff),
            RelayMsg::Xon(Xon { kbps_ewma: 77 }),
            RelayMsg::Other {
                cmd: RelayCmd::CONFLUX_SWITCH,
                body: &[0, 0, 0, 1],
            },
            RelayMsg::Unrecognized {
                cmd: RelayCmd(99),
                body: &[1, 2, 3],
            },
        ];
        let mut rng = StepRng::new(0, 1);
        for m in msgs {
            let mut body = [0u8; CELL_BODY_LEN];
            v0::encode_with(&mut body, m.cmd(), 9, &mut rng, |out| m.encode(out)).unwrap();
            let r = v0::parse(&body).unwrap();
            assert_eq!(r.cmd, m.cmd());
            assert_eq!(RelayMsg::from_ref(&r).unwrap(), m, "{:?}", m.cmd());
        }
    }

    #[test]
    fn unknown_and_other_commands() {
        assert_eq!(
            RelayMsg::parse(RelayCmd(16), &[1]).unwrap(),
            RelayMsg::Unrecognized {
                cmd: RelayCmd(16),
                body: &[1]
            }
        );
        assert!(matches!(
            RelayMsg::parse(RelayCmd::INTRODUCE1, &[]).unwrap(),
            RelayMsg::Other { .. }
        ));
        assert!(RelayMsg::parse(RelayCmd::TRUNCATED, &[]).is_err());
        assert!(RelayMsg::parse(RelayCmd::BEGIN, b"x").is_err());
    }

    #[test]
    fn encode_errors_propagate_from_encode_with() {
        let mut body = [0u8; CELL_BODY_LEN];
        let big = [0u8; 400];
        let huge = RelayMsg::Resolve(Resolve {
            hostname: core::str::from_utf8(&[b'a'; 498]).unwrap(),
        });
        let mut rng = StepRng::new(0, 1);
        assert!(
            v0::encode_with(&mut body, RelayCmd::RESOLVE, 1, &mut rng, |o| huge
                .encode(o))
            .is_err()
        );
        assert!(
            v0::encode_with(&mut body, RelayCmd::DATA, 1, &mut rng, |o| {
                RelayMsg::Data(&big).encode(o)
            })
            .is_ok()
        );
    }
}
