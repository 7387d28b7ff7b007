//! PADDING_NEGOTIATE (relay command 41) and PADDING_NEGOTIATED (42) bodies: the trunnel
//! structs `circpad_negotiate` and `circpad_negotiated` of C tor's
//! `circpad_negotiation.trunnel` (padding-spec §3 "Circuit-level padding", prop 254).
//!
//! ```text
//! PADDING_NEGOTIATE:  version u8 (=0) | command u8 (1 STOP, 2 START) | machine_type u8
//!                     | echo_request u8 (0 or 1) | machine_ctr u32
//! PADDING_NEGOTIATED: version u8 (=0) | command u8 (1 STOP, 2 START)
//!                     | response u8 (1 OK, 2 ERR) | machine_type u8 | machine_ctr u32
//! ```
//! Integers are big-endian, as trunnel writes them. Bytes after the eight are ignored, as
//! trunnel's parsers do; a value outside a field's `IN [...]` set is a parse error, and C
//! drops such a cell without an answer.

/// Both bodies are eight bytes.
pub const NEGOTIATE_LEN: usize = 8;
pub const NEGOTIATED_LEN: usize = 8;

/// `CIRCPAD_COMMAND_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadCommand {
    Stop = 1,
    Start = 2,
}

/// `CIRCPAD_RESPONSE_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadResponse {
    Ok = 1,
    Err = 2,
}

/// Why a body did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CircpadCellError {
    #[error("circuit padding message is {got} bytes, needs {need}")]
    Truncated { need: usize, got: usize },
    #[error("circuit padding message version {0} (only 0 exists)")]
    BadVersion(u8),
    #[error("circuit padding command {0} (1 STOP or 2 START)")]
    BadCommand(u8),
    #[error("PADDING_NEGOTIATE echo_request {0} (0 or 1)")]
    BadEchoRequest(u8),
    #[error("PADDING_NEGOTIATED response {0} (1 OK or 2 ERR)")]
    BadResponse(u8),
}

/// A PADDING_NEGOTIATE body (the client asks this hop to start or stop a machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiate {
    pub command: PadCommand,
    /// The relay-side machine number (C `machine_num`, its place in the relay list).
    pub machine_type: u8,
    /// Carried but unused: C tor never acts on it.
    pub echo_request: bool,
    /// The client's machine counter; 0 matches any machine (C bug 30992).
    pub machine_ctr: u32,
}

/// A PADDING_NEGOTIATED body (this hop's answer, or its own STOP at a machine's end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub command: PadCommand,
    pub response: PadResponse,
    pub machine_type: u8,
    pub machine_ctr: u32,
}

fn command(b: u8) -> Result<PadCommand, CircpadCellError> {
    match b {
        1 => Ok(PadCommand::Stop),
        2 => Ok(PadCommand::Start),
        _ => Err(CircpadCellError::BadCommand(b)),
    }
}

fn header(body: &[u8], need: usize) -> Result<(), CircpadCellError> {
    if body.len() < need {
        return Err(CircpadCellError::Truncated {
            need,
            got: body.len(),
        });
    }
    if body[0] != 0 {
        return Err(CircpadCellError::BadVersion(body[0]));
    }
    Ok(())
}

fn ctr(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[4], b[5], b[6], b[7]])
}

impl Negotiate {
    /// Parses a PADDING_NEGOTIATE message body (fields checked in trunnel's order).
    pub fn parse(body: &[u8]) -> Result<Self, CircpadCellError> {
        header(body, NEGOTIATE_LEN)?;
        let command = command(body[1])?;
        let echo_request = match body[3] {
            0 => false,
            1 => true,
            b => return Err(CircpadCellError::BadEchoRequest(b)),
        };
        Ok(Negotiate {
            command,
            machine_type: body[2],
            echo_request,
            machine_ctr: ctr(body),
        })
    }

    pub fn encode(&self) -> [u8; NEGOTIATE_LEN] {
        let c = self.machine_ctr.to_be_bytes();
        [
            0,
            self.command as u8,
            self.machine_type,
            u8::from(self.echo_request),
            c[0],
            c[1],
            c[2],
            c[3],
        ]
    }
}

impl Negotiated {
    /// Parses a PADDING_NEGOTIATED message body.
    pub fn parse(body: &[u8]) -> Result<Self, CircpadCellError> {
        header(body, NEGOTIATED_LEN)?;
        let command = command(body[1])?;
        let response = match body[2] {
            1 => PadResponse::Ok,
            2 => PadResponse::Err,
            b => return Err(CircpadCellError::BadResponse(b)),
        };
        Ok(Negotiated {
            command,
            response,
            machine_type: body[3],
            machine_ctr: ctr(body),
        })
    }

    pub fn encode(&self) -> [u8; NEGOTIATED_LEN] {
        let c = self.machine_ctr.to_be_bytes();
        [
            0,
            self.command as u8,
            self.response as u8,
            self.machine_type,
            c[0],
            c[1],
            c[2],
            c[3],
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiate_from_hand_built_bytes() {
        // version 0, START, machine 1, no echo, ctr 0x01020304.
        let b = [0u8, 2, 1, 0, 1, 2, 3, 4];
        let n = Negotiate::parse(&b).unwrap();
        assert_eq!(
            n,
            Negotiate {
                command: PadCommand::Start,
                machine_type: 1,
                echo_request: false,
                machine_ctr: 0x0102_0304,
            }
        );
        assert_eq!(n.encode(), b);
        // STOP, machine 0, echo 1, ctr 0; trailing bytes (a v0 cell's padding) ignored.
        let mut long = vec![0u8, 1, 0, 1, 0, 0, 0, 0];
        long.extend_from_slice(&[0xAA; 20]);
        let s = Negotiate::parse(&long).unwrap();
        assert_eq!(s.command, PadCommand::Stop);
        assert!(s.echo_request);
        assert_eq!(s.machine_ctr, 0);
        assert_eq!(&s.encode()[..], &long[..8]);
    }

    #[test]
    fn negotiate_rejects_what_trunnel_rejects() {
        let ok = [0u8, 2, 0, 0, 0, 0, 0, 1];
        for n in 0..8 {
            assert_eq!(
                Negotiate::parse(&ok[..n]),
                Err(CircpadCellError::Truncated { need: 8, got: n })
            );
        }
        let with = |i: usize, v: u8| {
            let mut b = ok;
            b[i] = v;
            Negotiate::parse(&b)
        };
        assert_eq!(with(0, 1), Err(CircpadCellError::BadVersion(1)));
        assert_eq!(with(1, 0), Err(CircpadCellError::BadCommand(0)));
        assert_eq!(with(1, 3), Err(CircpadCellError::BadCommand(3)));
        assert_eq!(with(3, 2), Err(CircpadCellError::BadEchoRequest(2)));
        // machine_type is unbounded (u8): any value parses.
        assert_eq!(with(2, 255).unwrap().machine_type, 255);
    }

    #[test]
    fn negotiated_round_trip_and_errors() {
        let n = Negotiated {
            command: PadCommand::Start,
            response: PadResponse::Err,
            machine_type: 7,
            machine_ctr: 0xDEAD_BEEF,
        };
        // Built by hand from the layout: version, command, response, machine, ctr (BE).
        let b = [0u8, 2, 2, 7, 0xDE, 0xAD, 0xBE, 0xEF];
        assert_eq!(n.encode(), b);
        assert_eq!(Negotiated::parse(&b), Ok(n));
        let stop_ok = [0u8, 1, 1, 0, 0, 0, 0, 9];
        assert_eq!(
            Negotiated::parse(&stop_ok),
            Ok(Negotiated {
                command: PadCommand::Stop,
                response: PadResponse::Ok,
                machine_type: 0,
                machine_ctr: 9,
            })
        );
        let mut bad = b;
        bad[2] = 0;
        assert_eq!(
            Negotiated::parse(&bad),
            Err(CircpadCellError::BadResponse(0))
        );
        bad[2] = 3;
        assert_eq!(
            Negotiated::parse(&bad),
            Err(CircpadCellError::BadResponse(3))
        );
        assert_eq!(
            Negotiated::parse(&b[..7]),
            Err(CircpadCellError::Truncated { need: 8, got: 7 })
        );
        let mut v = b;
        v[0] = 2;
        assert_eq!(Negotiated::parse(&v), Err(CircpadCellError::BadVersion(2)));
    }
}
