//! Relay cell format v0 (tor1 crypto), in place on a 509-byte body
//! (tor-spec §"Relay cells"):
//!
//! `cmd(1) | recognized(2) | stream_id(2) | digest(4) | length(2) | data(≤498) | padding`
//!
//! The crypto layer zeroes and sets the digest field (bytes 5..9) and checks `recognized`
//! on this same buffer; nothing here copies the body.

use super::{pad, RelayCmd, RelayMsgRef};
use crate::cell::{CellError, CELL_BODY_LEN};

/// Header length.
pub const HEADER_LEN: usize = 11;
/// Largest data length: 509 − 11.
pub const MAX_DATA_LEN: usize = CELL_BODY_LEN - HEADER_LEN;
/// Where the `recognized` field sits.
pub const RECOGNIZED: core::ops::Range<usize> = 1..3;
/// Where the running-digest field sits.
pub const DIGEST: core::ops::Range<usize> = 5..9;

type Body = [u8; CELL_BODY_LEN];

pub fn cmd(body: &Body) -> RelayCmd {
    RelayCmd(body[0])
}

pub fn recognized(body: &Body) -> u16 {
    u16::from_be_bytes([body[1], body[2]])
}

pub fn stream_id(body: &Body) -> u16 {
    u16::from_be_bytes([body[3], body[4]])
}

pub fn digest(body: &Body) -> [u8; 4] {
    [body[5], body[6], body[7], body[8]]
}

pub fn set_digest(body: &mut Body, d: [u8; 4]) {
    body[DIGEST].copy_from_slice(&d);
}

/// The length field as sent; may exceed [`MAX_DATA_LEN`] in a hostile cell.
pub fn length(body: &Body) -> u16 {
    u16::from_be_bytes([body[9], body[10]])
}

/// Reads the header of a (decrypted, recognized) cell and borrows its data.
/// `recognized` and the digest are the crypto layer's business and are not checked here.
pub fn parse(body: &Body) -> Result<RelayMsgRef<'_>, CellError> {
    let len = length(body) as usize;
    if len > MAX_DATA_LEN {
        return Err(CellError::TooLong {
            what: "relay",
            len,
            max: MAX_DATA_LEN,
        });
    }
    Ok(RelayMsgRef {
        cmd: cmd(body),
        stream_id: stream_id(body),
        data: &body[HEADER_LEN..HEADER_LEN + len],
    })
}

/// Encodes a message whose data the closure writes straight into the cell (into a slice of
/// [`MAX_DATA_LEN`] bytes), returning its length. Sets `recognized` and the digest to zero
/// and pads the rest. This avoids a second copy of every relay message.
pub fn encode_with(
    body: &mut Body,
    cmd: RelayCmd,
    stream_id: u16,
    rng: &mut impl rand_core::RngCore,
    write: impl FnOnce(&mut [u8]) -> Result<usize, CellError>,
) -> Result<(), CellError> {
    let len = write(&mut body[HEADER_LEN..])?;
    if len > MAX_DATA_LEN {
        return Err(CellError::TooLong {
            what: "relay",
            len,
            max: MAX_DATA_LEN,
        });
    }
    body[0] = cmd.0;
    body[1..5].copy_from_slice(&[0, 0, (stream_id >> 8) as u8, stream_id as u8]);
    body[DIGEST].fill(0);
    body[9..11].copy_from_slice(&(len as u16).to_be_bytes());
    pad(&mut body[HEADER_LEN + len..], rng);
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
    if data.len() > MAX_DATA_LEN {
        return Err(CellError::TooLong {
            what: "relay",
            len: data.len(),
            max: MAX_DATA_LEN,
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

    #[test]
    fn known_encoding_with_padding_rule() {
        let mut body = [0xEEu8; CELL_BODY_LEN];
        // StepRng(1,0) yields only 0x01 bytes, so padding is recognisable.
        let mut rng = StepRng::new(0x0101_0101_0101_0101, 0);
        encode(&mut body, RelayCmd::DATA, 0x1234, b"hello", &mut rng).unwrap();
        assert_eq!(
            &body[..16],
            &[2, 0, 0, 0x12, 0x34, 0, 0, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o']
        );
        assert_eq!(&body[16..20], &[0, 0, 0, 0]);
        assert!(body[20..].iter().all(|&b| b == 1));
        let m = parse(&body).unwrap();
        assert_eq!(m.cmd, RelayCmd::DATA);
        assert_eq!(m.stream_id, 0x1234);
        assert_eq!(m.data, b"hello");
        assert_eq!(recognized(&body), 0);
        set_digest(&mut body, [1, 2, 3, 4]);
        assert_eq!(digest(&body), [1, 2, 3, 4]);
        assert_eq!(&body[5..9], &[1, 2, 3, 4]);
    }

    #[test]
    fn full_and_near_full_cells() {
        let mut rng = StepRng::new(u64::MAX, 0);
        let data = [0x42u8; MAX_DATA_LEN];
        let mut body = [0u8; CELL_BODY_LEN];
        encode(&mut body, RelayCmd::DATA, 1, &data, &mut rng).unwrap();
        assert_eq!(parse(&body).unwrap().data, &data[..]);
        // 496 bytes of data leave 2 bytes of padding: both must be zero.
        encode(&mut body, RelayCmd::DATA, 1, &data[..496], &mut rng).unwrap();
        assert_eq!(&body[507..], &[0, 0]);
        assert!(encode(&mut body, RelayCmd::DATA, 1, &[0; 499], &mut rng).is_err());
    }

    #[test]
    fn oversized_length_rejected() {
        let mut body = [0u8; CELL_BODY_LEN];
        body[9..11].copy_from_slice(&600u16.to_be_bytes());
        let e = parse(&body).unwrap_err();
        assert_eq!(e.to_string(), "relay length 600 exceeds 498");
        body[9..11].copy_from_slice(&499u16.to_be_bytes());
        assert!(parse(&body).is_err());
    }
}
