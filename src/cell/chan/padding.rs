//! PADDING_NEGOTIATE body: version(0) | command | ito_low_ms(u16) | ito_high_ms(u16)
//! (padding-spec §"Negotiating channel padding"; C tor `channelpadding_negotiation.trunnel`).

use super::zero_tail;
use crate::cell::bytes::Reader;
use crate::cell::{CellError, CELL_BODY_LEN};

/// What the sender asks the receiver to do with channel padding.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PaddingCommand {
    Stop,
    Start,
}

impl PaddingCommand {
    const STOP: u8 = 1;
    const START: u8 = 2;
}

/// A PADDING_NEGOTIATE body.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PaddingNegotiate {
    pub command: PaddingCommand,
    pub ito_low_ms: u16,
    pub ito_high_ms: u16,
}

impl PaddingNegotiate {
    pub fn parse(body: &[u8]) -> Result<Self, CellError> {
        let mut r = Reader::new(body);
        let version = r.u8("PADDING_NEGOTIATE version")?;
        if version != 0 {
            return Err(CellError::UnsupportedVersion {
                what: "PADDING_NEGOTIATE",
                version: version.into(),
            });
        }
        let command = match r.u8("PADDING_NEGOTIATE command")? {
            PaddingCommand::STOP => PaddingCommand::Stop,
            PaddingCommand::START => PaddingCommand::Start,
            x => {
                return Err(CellError::BadValue {
                    what: "PADDING_NEGOTIATE command",
                    value: x.into(),
                })
            }
        };
        Ok(PaddingNegotiate {
            command,
            ito_low_ms: r.u16("PADDING_NEGOTIATE ito_low_ms")?,
            ito_high_ms: r.u16("PADDING_NEGOTIATE ito_high_ms")?,
        })
    }

    pub fn encode(&self, out: &mut [u8; CELL_BODY_LEN]) {
        out[0] = 0;
        out[1] = match self.command {
            PaddingCommand::Stop => PaddingCommand::STOP,
            PaddingCommand::Start => PaddingCommand::START,
        };
        out[2..4].copy_from_slice(&self.ito_low_ms.to_be_bytes());
        out[4..6].copy_from_slice(&self.ito_high_ms.to_be_bytes());
        zero_tail(out, 6);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_encoding_and_round_trip() {
        let p = PaddingNegotiate {
            command: PaddingCommand::Start,
            ito_low_ms: 1500,
            ito_high_ms: 9500,
        };
        let mut body = [0u8; CELL_BODY_LEN];
        p.encode(&mut body);
        assert_eq!(&body[..6], &[0, 2, 0x05, 0xDC, 0x25, 0x1C]);
        assert_eq!(PaddingNegotiate::parse(&body).unwrap(), p);
    }

    #[test]
    fn bad_version_and_command() {
        assert_eq!(
            PaddingNegotiate::parse(&[1, 2, 0, 0, 0, 0]),
            Err(CellError::UnsupportedVersion {
                what: "PADDING_NEGOTIATE",
                version: 1
            })
        );
        assert!(PaddingNegotiate::parse(&[0, 3, 0, 0, 0, 0]).is_err());
        assert!(PaddingNegotiate::parse(&[0, 1, 0, 0, 0]).is_err());
    }
}
