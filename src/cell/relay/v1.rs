//! Relay cell format v1 (prop 359, used with CGO crypto), in place on a 509-byte body:
//!
//! `tag(16) | cmd(1) | length(2) | [stream_id(2)] | data | padding`
//!
//! The stream ID field exists only for the commands in
//! [`RelayCmd::expects_stream_id_in_v1`], so the data limit is 488 or 490 bytes. Unknown
//! commands are a decoding error in v1 (unlike v0, where they are dropped).

use super::{pad, RelayCmd, RelayMsgRef};
use crate::cell::{CellError, CELL_BODY_LEN};

/// Where the CGO tag sits; the crypto layer owns it.
pub const TAG: core::ops::Range<usize> = 0..16;
pub const TAG_LEN: usize = 16;
const CMD_AT: usize = 16;
const LEN_AT: usize = 17;
const STREAM_AT: usize = 19;
const HEADER_LEN_NO_STREAM: usize = 19;
const HEADER_LEN_WITH_STREAM: usize = 21;
/// Largest data length for commands with a stream ID: 509 − 21.
pub const MAX_DATA_LEN_WITH_STREAM: usize = CELL_BODY_LEN - HEADER_LEN_WITH_STREAM;
/// Largest data length for commands without a stream ID: 509 − 19.
pub const MAX_DATA_LEN_NO_STREAM: usize = CELL_BODY_LEN - HEADER_LEN_NO_STREAM;

type Body = [u8; CELL_BODY_LEN];

fn header_len(cmd: RelayCmd) -> usize {
    if cmd.expects_stream_id_in_v1() {
        HEADER_LEN_WITH_STREAM
    } else {
        HEADER_LEN_NO_STREAM
    }
}

/// Largest data length `cmd` can carry in format v1.
pub fn max_data_len(cmd: RelayCmd) -> usize {
    CELL_BODY_LEN - header_len(cmd)
}

pub fn tag(body: &Body) -> &[u8; TAG_LEN] {
    body[TAG].try_into().expect("16-byte range")
}

pub fn tag_mut(body: &mut Body) -> &mut [u8; TAG_LEN] {
    (&mut body[TAG]).try_into().expect("16-byte range")
}

/// Reads the header of a decrypted cell and borrows its data.
pub fn parse(body: &Body) -> Result<RelayMsgRef<'_>, CellError> {
    let cmd = RelayCmd(body[CMD_AT]);
    if !cmd.is_known() {
        return Err(CellError::UnknownRelayCmdV1(cmd.0));
    }
    let len = u16::from_be_bytes([body[LEN_AT], body[LEN_AT + 1]]) as usize;
    let hdr = header_len(cmd);
    let stream_id = if hdr == HEADER_LEN_WITH_STREAM {
        u16::from_be_bytes([body[STREAM_AT], body[STREAM_AT + 1]])
    } else {
        0
    };
    if len > CELL_BODY_LEN - hdr {
        return Err(CellError::TooLong {
            what: "relay v1",
            len,
            max: CELL_BODY_LEN - hdr,
        });
    }
    Ok(RelayMsgRef {
        cmd,
        stream_id,
        data: &body[hdr..hdr + len],
    })
}

/// Encodes a message whose data the closure writes straight into the cell, returning its
/// length. The tag is zeroed for the crypto layer to fill; the rest is padded as in v0.
pub fn encode_with(
    body: &mut Body,
    cmd: RelayCmd,
    stream_id: u16,
    rng: &mut impl rand_core::RngCore,
    write: impl FnOnce(&mut [u8]) -> Result<usize, CellError>,
) -> Result<(), CellError> {
    if !cmd.is_known() {
        return Err(CellError::UnknownRelayCmdV1(cmd.0));
    }
    let needs_stream = cmd.expects_stream_id_in_v1();
    // C tor refuses to encode these mismatches (`encode_v1_cell`): the stream ID would be
    // lost or invented on the other side.
    if needs_stream == (stream_id == 0) {
        return Err(CellError::StreamIdMismatch {
            cmd: cmd.0,
            needs_stream,
        });
    }
    let hdr = header_len(cmd);
    let len = write(&mut body[hdr..])?;
    if len > CELL_BODY_LEN - hdr {
        return Err(CellError::TooLong {
            what: "relay v1",
            len,
            max: CELL_BODY_LEN - hdr,
        });
    }
    body[TAG].fill(0);
    body[CMD_AT] = cmd.0;
    body[LEN_AT..LEN_AT + 2].copy_from_slice(&(len as u16).to_be_bytes());
    if needs_stream {
        body[STREAM_AT..STREAM_AT + 2].copy_from_slice(&stream_id.to_be_bytes());
    }
    pad(&mut body[hdr + len..], rng);
    Ok(())
}

/// Encodes a relay cell from already-encoded data.
pub fn encode(
    body: &mut Body,
    cmd: RelayCmd,
    stream_id: u16,
    data: &[u8],
    rng: &mut impl rand_core::RngCore,
) -> Result<(), CellError> {
    let max = max_data_len(cmd);
    if data.len() > max {
        return Err(CellError::TooLong {
            what: "relay v1",
            len: data.len(),
            max,
        });
    }
    encode_with(body, cmd, stream_id, rng, |out| {
        out[..data.len()].copy_from_slice(data);
        Ok(data.len())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::mock::StepRng;

    fn rng() -> StepRng {
        StepRng::new(0x0101_0101_0101_0101, 0)
    }

    #[test]
    fn known_encoding_with_stream() {
        let mut body = [0xEEu8; CELL_BODY_LEN];
        encode(&mut body, RelayCmd::DATA, 7, b"abc", &mut rng()).unwrap();
        assert_eq!(&body[..16], &[0u8; 16]);
        assert_eq!(&body[16..24], &[2, 0, 3, 0, 7, b'a', b'b', b'c']);
        assert_eq!(&body[24..28], &[0; 4]);
        assert!(body[28..].iter().all(|&b| b == 1));
        let m = parse(&body).unwrap();
        assert_eq!(
            (m.cmd, m.stream_id, m.data),
            (RelayCmd::DATA, 7, &b"abc"[..])
        );
    }

    #[test]
    fn known_encoding_without_stream() {
        let mut body = [0u8; CELL_BODY_LEN];
        encode(&mut body, RelayCmd::SENDME, 0, &[1, 0, 16], &mut rng()).unwrap();
        assert_eq!(&body[16..22], &[5, 0, 3, 1, 0, 16]);
        let m = parse(&body).unwrap();
        assert_eq!((m.cmd, m.stream_id), (RelayCmd::SENDME, 0));
        tag_mut(&mut body).copy_from_slice(&[9; 16]);
        assert_eq!(tag(&body), &[9; 16]);
        assert_eq!(parse(&body).unwrap().data, &[1, 0, 16]);
    }

    #[test]
    fn limits() {
        assert_eq!(max_data_len(RelayCmd::DATA), 488);
        assert_eq!(max_data_len(RelayCmd::EXTEND2), 490);
        let mut body = [0u8; CELL_BODY_LEN];
        encode(&mut body, RelayCmd::EXTEND2, 0, &[0; 490], &mut rng()).unwrap();
        assert_eq!(parse(&body).unwrap().data.len(), 490);
        assert!(encode(&mut body, RelayCmd::DATA, 1, &[0; 489], &mut rng()).is_err());
        encode(&mut body, RelayCmd::DATA, 1, &[0; 488], &mut rng()).unwrap();
        body[17..19].copy_from_slice(&489u16.to_be_bytes());
        assert_eq!(
            parse(&body),
            Err(CellError::TooLong {
                what: "relay v1",
                len: 489,
                max: 488
            })
        );
    }

    #[test]
    fn unknown_command_and_stream_mismatch() {
        let mut body = [0u8; CELL_BODY_LEN];
        body[16] = 16;
        assert_eq!(parse(&body), Err(CellError::UnknownRelayCmdV1(16)));
        assert!(encode(&mut body, RelayCmd(200), 0, &[], &mut rng()).is_err());
        assert_eq!(
            encode(&mut body, RelayCmd::DATA, 0, &[], &mut rng()),
            Err(CellError::StreamIdMismatch {
                cmd: 2,
                needs_stream: true
            })
        );
        assert!(encode(&mut body, RelayCmd::EXTEND2, 3, &[], &mut rng()).is_err());
    }
}
