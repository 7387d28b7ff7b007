//! DESTROY body: one reason byte (tor-spec §"Tearing down circuits"). The same codes are
//! used by RELAY_TRUNCATED.

use super::zero_tail;
use crate::cell::{CellError, CELL_BODY_LEN};

/// Why a circuit was destroyed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DestroyReason {
    None,
    TorProtocol,
    Internal,
    Requested,
    Hibernating,
    ResourceLimit,
    ConnectFailed,
    OrIdentity,
    ChannelClosed,
    Finished,
    Timeout,
    /// What 0.4.9 sends onward instead of the remote reason.
    Destroyed,
    NoSuchService,
    /// A code this codec does not name; kept so it can be logged.
    Unrecognized(u8),
}

impl From<u8> for DestroyReason {
    fn from(v: u8) -> Self {
        use DestroyReason::*;
        match v {
            0 => None,
            1 => TorProtocol,
            2 => Internal,
            3 => Requested,
            4 => Hibernating,
            5 => ResourceLimit,
            6 => ConnectFailed,
            7 => OrIdentity,
            8 => ChannelClosed,
            9 => Finished,
            10 => Timeout,
            11 => Destroyed,
            12 => NoSuchService,
            x => Unrecognized(x),
        }
    }
}

impl From<DestroyReason> for u8 {
    fn from(r: DestroyReason) -> u8 {
        use DestroyReason::*;
        match r {
            None => 0,
            TorProtocol => 1,
            Internal => 2,
            Requested => 3,
            Hibernating => 4,
            ResourceLimit => 5,
            ConnectFailed => 6,
            OrIdentity => 7,
            ChannelClosed => 8,
            Finished => 9,
            Timeout => 10,
            Destroyed => 11,
            NoSuchService => 12,
            Unrecognized(x) => x,
        }
    }
}

/// A DESTROY body.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Destroy {
    pub reason: DestroyReason,
}

impl Destroy {
    pub fn parse(body: &[u8]) -> Result<Self, CellError> {
        match body.first() {
            Some(&b) => Ok(Destroy { reason: b.into() }),
            Option::None => Err(CellError::Truncated {
                what: "DESTROY reason",
                need: 1,
                have: 0,
            }),
        }
    }

    pub fn encode(&self, out: &mut [u8; CELL_BODY_LEN]) {
        out[0] = self.reason.into();
        zero_tail(out, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_codes_round_trip() {
        for v in 0..=255u8 {
            let r = DestroyReason::from(v);
            assert_eq!(u8::from(r), v);
            assert_eq!(matches!(r, DestroyReason::Unrecognized(_)), v > 12);
        }
        assert_eq!(DestroyReason::from(11), DestroyReason::Destroyed);
        assert_eq!(DestroyReason::from(6), DestroyReason::ConnectFailed);
    }

    #[test]
    fn body_round_trip() {
        let mut body = [0xFFu8; CELL_BODY_LEN];
        Destroy {
            reason: DestroyReason::TorProtocol,
        }
        .encode(&mut body);
        assert_eq!(body[0], 1);
        assert!(body[1..].iter().all(|&b| b == 0));
        assert_eq!(
            Destroy::parse(&body).unwrap().reason,
            DestroyReason::TorProtocol
        );
        assert!(Destroy::parse(&[]).is_err());
    }
}
