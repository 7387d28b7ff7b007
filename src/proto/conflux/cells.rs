//! The four conflux relay message bodies (prop 329 §"Linking circuits"/§"Switching";
//! C tor `trunnel/conflux.trunnel`, `conflux_cell.c`).
//!
//! LINK and LINKED share one layout:
//!
//! ```text
//! version u8 (= 1) | nonce [u8; 32] | last_seqno_sent u64 | last_seqno_recv u64 | desired_ux u8
//! ```
//!
//! LINKED_ACK has an empty body and SWITCH a big-endian `u32` relative sequence number. As in
//! C tor's trunnel parsers, bytes after the last field are ignored (relay cells are padded),
//! and a LINK/LINKED whose `desired_ux` is not one of the five defined values is refused.

use thiserror::Error;

/// The only LINK/LINKED version C tor 0.4.9 speaks.
pub const LINK_VERSION_1: u8 = 1;
/// Length of a v1 LINK/LINKED body.
pub const LINK_LEN: usize = 1 + NONCE_LEN + 8 + 8 + 1;
/// Length of a SWITCH body.
pub const SWITCH_LEN: usize = 4;
/// Length of the set nonce.
pub const NONCE_LEN: usize = 32;

/// The 32-byte nonce that names a conflux set (chosen at random by the client).
pub type Nonce = [u8; NONCE_LEN];

/// What the sender of a LINK would like the other end's scheduler to optimise for
/// (prop 329 §"Linking circuits"; trunnel `CONFLUX_UX_*`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DesiredUx {
    NoOpinion = 0,
    MinLatency = 1,
    LowMemLatency = 2,
    HighThroughput = 3,
    LowMemThroughput = 4,
}

impl DesiredUx {
    /// The wire value.
    pub const fn to_u8(self) -> u8 {
        self as u8
    }

    /// Parses a wire value; `None` for values the trunnel schema does not list.
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => DesiredUx::NoOpinion,
            1 => DesiredUx::MinLatency,
            2 => DesiredUx::LowMemLatency,
            3 => DesiredUx::HighThroughput,
            4 => DesiredUx::LowMemThroughput,
            _ => return None,
        })
    }
}

/// A conflux body that could not be parsed or encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ConfluxCellError {
    /// The body ended before the named field was complete.
    #[error("conflux {what} truncated: need {need} bytes, have {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    /// LINK/LINKED with a version other than 1 (C tor refuses it: "Unsupported version").
    #[error("CONFLUX_LINK version {0} is not supported")]
    UnsupportedVersion(u8),
    /// LINK/LINKED whose desired UX is not one of the five defined values.
    #[error("CONFLUX_LINK desired UX {0} is not defined")]
    BadDesiredUx(u8),
    /// The output buffer cannot hold the encoding.
    #[error("output buffer too small for conflux {what}: need {need} bytes, have {have}")]
    BufferTooSmall {
        what: &'static str,
        need: usize,
        have: usize,
    },
}

/// A CONFLUX_LINK or CONFLUX_LINKED body (same layout, v1).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Link {
    pub nonce: Nonce,
    /// The highest absolute sequence number the sender has sent on the set.
    pub last_seqno_sent: u64,
    /// The highest absolute sequence number the sender has delivered from the set.
    pub last_seqno_recv: u64,
    pub desired_ux: DesiredUx,
}

impl Link {
    /// Parses a LINK or LINKED body.
    pub fn parse(body: &[u8]) -> Result<Self, ConfluxCellError> {
        let version = *body.first().ok_or(ConfluxCellError::Truncated {
            what: "LINK version",
            need: 1,
            have: 0,
        })?;
        // Version first, as C tor's trunnel parser: a v2 LINK of another shape is
        // "unsupported", not "truncated".
        if version != LINK_VERSION_1 {
            return Err(ConfluxCellError::UnsupportedVersion(version));
        }
        if body.len() < LINK_LEN {
            return Err(ConfluxCellError::Truncated {
                what: "LINK v1 payload",
                need: LINK_LEN,
                have: body.len(),
            });
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&body[1..33]);
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&body[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let ux = body[49];
        Ok(Link {
            nonce,
            last_seqno_sent: u64_at(33),
            last_seqno_recv: u64_at(41),
            desired_ux: DesiredUx::from_u8(ux).ok_or(ConfluxCellError::BadDesiredUx(ux))?,
        })
    }

    /// Writes the v1 body into `out`; returns its length ([`LINK_LEN`]).
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, ConfluxCellError> {
        if out.len() < LINK_LEN {
            return Err(ConfluxCellError::BufferTooSmall {
                what: "LINK",
                need: LINK_LEN,
                have: out.len(),
            });
        }
        out[0] = LINK_VERSION_1;
        out[1..33].copy_from_slice(&self.nonce);
        out[33..41].copy_from_slice(&self.last_seqno_sent.to_be_bytes());
        out[41..49].copy_from_slice(&self.last_seqno_recv.to_be_bytes());
        out[49] = self.desired_ux.to_u8();
        Ok(LINK_LEN)
    }
}

/// A CONFLUX_SWITCH body: how far the sender's absolute sequence number on this leg jumps.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Switch {
    pub relative_seq: u32,
}

impl Switch {
    /// Parses a SWITCH body.
    pub fn parse(body: &[u8]) -> Result<Self, ConfluxCellError> {
        let b: [u8; SWITCH_LEN] = body
            .get(..SWITCH_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(ConfluxCellError::Truncated {
                what: "SWITCH seqnum",
                need: SWITCH_LEN,
                have: body.len(),
            })?;
        Ok(Switch {
            relative_seq: u32::from_be_bytes(b),
        })
    }

    /// Writes the body into `out`; returns its length, 4 (C tor since 0.4.9.5 sets the relay
    /// length field to this, not to the maximum: bug 41056).
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, ConfluxCellError> {
        let dst = out
            .get_mut(..SWITCH_LEN)
            .ok_or(ConfluxCellError::BufferTooSmall {
                what: "SWITCH",
                need: SWITCH_LEN,
                have: 0,
            })?;
        dst.copy_from_slice(&self.relative_seq.to_be_bytes());
        Ok(SWITCH_LEN)
    }
}

/// A CONFLUX_LINKED_ACK body is empty; whatever the sender put there is ignored (trunnel:
/// `u8 payload[]`). Encoding writes nothing.
pub const LINKED_ACK_LEN: usize = 0;

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Link {
        let mut nonce = [0u8; 32];
        for (i, b) in nonce.iter_mut().enumerate() {
            *b = i as u8 + 1;
        }
        Link {
            nonce,
            last_seqno_sent: 0x0102_0304_0506_0708,
            last_seqno_recv: 0x1112_1314_1516_1718,
            desired_ux: DesiredUx::HighThroughput,
        }
    }

    #[test]
    fn link_layout_matches_trunnel() {
        let mut out = [0xaau8; 64];
        let n = sample().encode(&mut out).unwrap();
        assert_eq!(n, 50);
        assert_eq!(out[0], 1);
        assert_eq!(&out[1..33], &sample().nonce);
        assert_eq!(&out[33..41], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            &out[41..49],
            &[0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]
        );
        assert_eq!(out[49], 3);
        assert_eq!(Link::parse(&out[..n]).unwrap(), sample());
        // Trailing bytes (cell padding) are ignored, as C tor's trunnel parser does.
        assert_eq!(Link::parse(&out).unwrap(), sample());
    }

    #[test]
    fn link_rejects_bad_version_truncation_and_ux() {
        let mut out = [0u8; 50];
        sample().encode(&mut out).unwrap();
        assert_eq!(
            Link::parse(&[]),
            Err(ConfluxCellError::Truncated {
                what: "LINK version",
                need: 1,
                have: 0
            })
        );
        for len in 1..50 {
            assert!(
                matches!(
                    Link::parse(&out[..len]),
                    Err(ConfluxCellError::Truncated { have, .. }) if have == len
                ),
                "len {len}"
            );
        }
        let mut v2 = out;
        v2[0] = 2;
        assert_eq!(
            Link::parse(&v2),
            Err(ConfluxCellError::UnsupportedVersion(2))
        );
        v2[0] = 0;
        assert_eq!(
            Link::parse(&v2),
            Err(ConfluxCellError::UnsupportedVersion(0))
        );
        for ux in 0..=255u8 {
            let mut b = out;
            b[49] = ux;
            let r = Link::parse(&b);
            if ux <= 4 {
                assert_eq!(r.unwrap().desired_ux.to_u8(), ux);
            } else {
                assert_eq!(r, Err(ConfluxCellError::BadDesiredUx(ux)));
            }
        }
        assert!(matches!(
            sample().encode(&mut [0u8; 49]),
            Err(ConfluxCellError::BufferTooSmall { need: 50, .. })
        ));
    }

    #[test]
    fn switch_layout() {
        let mut out = [0u8; 8];
        let n = Switch {
            relative_seq: 0xdead_beef,
        }
        .encode(&mut out)
        .unwrap();
        assert_eq!(n, 4);
        assert_eq!(&out[..4], &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(Switch::parse(&out).unwrap().relative_seq, 0xdead_beef);
        for len in 0..4 {
            assert!(matches!(
                Switch::parse(&out[..len]),
                Err(ConfluxCellError::Truncated { need: 4, .. })
            ));
        }
        assert!(Switch { relative_seq: 1 }.encode(&mut [0u8; 3]).is_err());
    }
}
