//! Link-level framing: circuit IDs, channel commands, and splitting a byte stream into fixed
//! and variable-length cells (tor-spec §"Cell packet format"; C tor `proto_cell.c`).
//!
//! The framer is on the per-cell path: it only reads headers and returns views into the
//! caller's buffer. It never allocates.

use super::bytes::len_u16;
use super::{named_int, CellError};

/// Bytes in a fixed-length cell on a link with 4-byte circuit IDs (link protocol ≥ 4).
pub const CELL_LEN: usize = 514;
/// Bytes in the body of every fixed-length cell, whatever the circuit-ID width.
pub const CELL_BODY_LEN: usize = 509;
/// Largest variable-length cell body the framer accepts.
///
/// The wire format allows 65535, and C tor accepts that. The only variable cells a relay
/// legitimately receives are handshake cells (CERTS is the largest, about 2 KiB with
/// X.509 certs) and VPADDING. 16 KiB leaves a wide margin while bounding how much a peer can
/// make us buffer before a cell is complete.
pub const MAX_VAR_CELL_BODY_LEN: usize = 16 * 1024;

/// A circuit ID as carried in a cell header. On link protocol ≥ 4 it is 4 bytes; the
/// initiator of the TLS connection sets the high bit on IDs it allocates (tor-spec
/// §"Choosing circuit IDs").
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Debug)]
pub struct CircId(pub u32);

impl CircId {
    /// Circuit ID 0 is reserved for cells that are not about a circuit.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// True if the most significant bit of a 4-byte circuit ID is set.
    pub const fn has_high_bit(self) -> bool {
        self.0 & 0x8000_0000 != 0
    }
}

impl core::fmt::Display for CircId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

named_int! {
    /// A channel cell command (tor-spec §"Cell packet format").
    pub struct ChanCmd(u8) {
        PADDING = 0,
        /// Obsolete TAP CREATE; rejected by 0.4.9 relays.
        CREATE = 1,
        /// Obsolete TAP CREATED.
        CREATED = 2,
        RELAY = 3,
        DESTROY = 4,
        CREATE_FAST = 5,
        CREATED_FAST = 6,
        VERSIONS = 7,
        NETINFO = 8,
        RELAY_EARLY = 9,
        CREATE2 = 10,
        CREATED2 = 11,
        PADDING_NEGOTIATE = 12,
        VPADDING = 128,
        CERTS = 129,
        AUTH_CHALLENGE = 130,
        AUTHENTICATE = 131,
        AUTHORIZE = 132,
    }
}

impl ChanCmd {
    /// Whether this command uses the variable-length cell format under `link` (0 = not yet
    /// negotiated). Link 1 has no variable cells, link 2 only VERSIONS; from link 3 on, and
    /// before negotiation, VERSIONS and every command ≥ 128 are variable-length.
    pub const fn is_var_len(self, link: u16) -> bool {
        match link {
            1 => false,
            2 => self.0 == Self::VERSIONS.0,
            _ => self.0 == Self::VERSIONS.0 || self.0 >= 128,
        }
    }
}

/// A fixed-length cell, borrowed from the input buffer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FixedCell<'a> {
    pub circ_id: CircId,
    pub cmd: ChanCmd,
    pub body: &'a [u8; CELL_BODY_LEN],
}

/// A fixed-length cell whose body can be changed in place (e.g. relay-cell decryption).
#[derive(PartialEq, Eq, Debug)]
pub struct FixedCellMut<'a> {
    pub circ_id: CircId,
    pub cmd: ChanCmd,
    pub body: &'a mut [u8; CELL_BODY_LEN],
}

/// A variable-length cell, borrowed from the input buffer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct VarCell<'a> {
    pub circ_id: CircId,
    pub cmd: ChanCmd,
    pub body: &'a [u8],
}

/// One framed cell.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Cell<'a> {
    Fixed(FixedCell<'a>),
    Var(VarCell<'a>),
}

/// One framed cell with a mutable fixed body.
#[derive(PartialEq, Eq, Debug)]
pub enum CellMut<'a> {
    Fixed(FixedCellMut<'a>),
    Var(VarCell<'a>),
}

impl Cell<'_> {
    pub fn circ_id(&self) -> CircId {
        match self {
            Cell::Fixed(c) => c.circ_id,
            Cell::Var(c) => c.circ_id,
        }
    }
    pub fn cmd(&self) -> ChanCmd {
        match self {
            Cell::Fixed(c) => c.cmd,
            Cell::Var(c) => c.cmd,
        }
    }
}

/// Where a cell sits in the input: header facts, without the body borrowed yet.
struct Frame {
    circ_id: CircId,
    cmd: ChanCmd,
    /// Offset of the body.
    body_at: usize,
    /// `None` for a fixed cell.
    var_len: Option<usize>,
    total: usize,
}

/// Splits a channel's byte stream into cells. Its only state is the link protocol version,
/// which fixes the circuit-ID width and which commands are variable-length.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Framer {
    /// 0 before VERSIONS has been negotiated.
    link: u16,
    circ_id_len: usize,
}

impl Framer {
    /// Framing before VERSIONS is negotiated: 2-byte circuit IDs, so the first VERSIONS cell
    /// is read (and written) in its 5-byte-header form (tor-spec §"Negotiating versions").
    pub const fn unnegotiated() -> Self {
        Framer {
            link: 0,
            circ_id_len: 2,
        }
    }

    /// Framing for a negotiated link protocol: 2-byte circuit IDs on link 3, 4-byte from 4 on.
    pub fn negotiated(link: u16) -> Result<Self, CellError> {
        if link < 3 {
            return Err(CellError::UnsupportedLinkVersion(link));
        }
        Ok(Framer {
            link,
            circ_id_len: if link >= 4 { 4 } else { 2 },
        })
    }

    /// Negotiated link protocol version, or 0 before negotiation.
    pub const fn link_version(&self) -> u16 {
        self.link
    }

    pub const fn circ_id_len(&self) -> usize {
        self.circ_id_len
    }

    /// Wire size of a fixed cell on this link (514 on link ≥ 4, 512 otherwise).
    pub const fn fixed_cell_len(&self) -> usize {
        self.circ_id_len + 1 + CELL_BODY_LEN
    }

    /// The wire length of the cell that starts `head`, known once its header is in (the
    /// command, and for a variable-length cell its length field: tor-spec §"Cell
    /// packing"); `None` before. A length over [`MAX_VAR_CELL_BODY_LEN`] is given as is
    /// (framing the cell then fails with `TooLong`).
    pub fn cell_len(&self, head: &[u8]) -> Option<usize> {
        let cid = self.circ_id_len;
        let cmd = ChanCmd(*head.get(cid)?);
        if !cmd.is_var_len(self.link) {
            return Some(self.fixed_cell_len());
        }
        let len = head.get(cid + 1..cid + 3)?;
        Some(cid + 3 + usize::from(u16::from_be_bytes([len[0], len[1]])))
    }

    fn frame(&self, input: &[u8]) -> Result<Option<Frame>, CellError> {
        let cid = self.circ_id_len;
        if input.len() < cid + 1 {
            return Ok(None);
        }
        let circ_id = if cid == 4 {
            u32::from_be_bytes([input[0], input[1], input[2], input[3]])
        } else {
            u16::from_be_bytes([input[0], input[1]]) as u32
        };
        let cmd = ChanCmd(input[cid]);
        if cmd.is_var_len(self.link) {
            if input.len() < cid + 3 {
                return Ok(None);
            }
            let len = u16::from_be_bytes([input[cid + 1], input[cid + 2]]) as usize;
            if len > MAX_VAR_CELL_BODY_LEN {
                return Err(CellError::TooLong {
                    what: "variable cell body",
                    len,
                    max: MAX_VAR_CELL_BODY_LEN,
                });
            }
            let total = cid + 3 + len;
            if input.len() < total {
                return Ok(None);
            }
            Ok(Some(Frame {
                circ_id: CircId(circ_id),
                cmd,
                body_at: cid + 3,
                var_len: Some(len),
                total,
            }))
        } else {
            let total = cid + 1 + CELL_BODY_LEN;
            if input.len() < total {
                return Ok(None);
            }
            Ok(Some(Frame {
                circ_id: CircId(circ_id),
                cmd,
                body_at: cid + 1,
                var_len: None,
                total,
            }))
        }
    }

    /// Returns the next complete cell at the start of `input` and how many bytes it used;
    /// `Ok(None)` if more bytes are needed. A variable cell longer than
    /// [`MAX_VAR_CELL_BODY_LEN`] is an error: the channel should close.
    pub fn next<'a>(&self, input: &'a [u8]) -> Result<Option<(Cell<'a>, usize)>, CellError> {
        let Some(f) = self.frame(input)? else {
            return Ok(None);
        };
        let cell = match f.var_len {
            Some(len) => Cell::Var(VarCell {
                circ_id: f.circ_id,
                cmd: f.cmd,
                body: &input[f.body_at..f.body_at + len],
            }),
            None => Cell::Fixed(FixedCell {
                circ_id: f.circ_id,
                cmd: f.cmd,
                body: input[f.body_at..f.total]
                    .try_into()
                    .expect("fixed body is CELL_BODY_LEN bytes"),
            }),
        };
        Ok(Some((cell, f.total)))
    }

    /// As [`Framer::next`], but a fixed cell's body is mutable so relay crypto can run on it
    /// in place inside the receive buffer.
    pub fn next_mut<'a>(
        &self,
        input: &'a mut [u8],
    ) -> Result<Option<(CellMut<'a>, usize)>, CellError> {
        let Some(f) = self.frame(input)? else {
            return Ok(None);
        };
        let cell = match f.var_len {
            Some(len) => CellMut::Var(VarCell {
                circ_id: f.circ_id,
                cmd: f.cmd,
                body: &input[f.body_at..f.body_at + len],
            }),
            None => CellMut::Fixed(FixedCellMut {
                circ_id: f.circ_id,
                cmd: f.cmd,
                body: (&mut input[f.body_at..f.total])
                    .try_into()
                    .expect("fixed body is CELL_BODY_LEN bytes"),
            }),
        };
        Ok(Some((cell, f.total)))
    }

    fn put_circ_id(&self, circ_id: CircId, out: &mut [u8]) -> Result<(), CellError> {
        if self.circ_id_len == 4 {
            out[..4].copy_from_slice(&circ_id.0.to_be_bytes());
        } else {
            let id = u16::try_from(circ_id.0).map_err(|_| CellError::CircIdTooWide {
                circ_id: circ_id.0,
                width: 2,
            })?;
            out[..2].copy_from_slice(&id.to_be_bytes());
        }
        Ok(())
    }

    /// Encodes a fixed cell into `out`; returns the bytes written.
    pub fn encode_fixed(
        &self,
        circ_id: CircId,
        cmd: ChanCmd,
        body: &[u8; CELL_BODY_LEN],
        out: &mut [u8],
    ) -> Result<usize, CellError> {
        let total = self.fixed_cell_len();
        if out.len() < total {
            return Err(CellError::BufferTooSmall {
                what: "fixed cell",
                need: total,
                have: out.len(),
            });
        }
        self.put_circ_id(circ_id, out)?;
        out[self.circ_id_len] = cmd.0;
        out[self.circ_id_len + 1..total].copy_from_slice(body);
        Ok(total)
    }

    /// Encodes a variable cell into `out`; returns the bytes written.
    pub fn encode_var(
        &self,
        circ_id: CircId,
        cmd: ChanCmd,
        body: &[u8],
        out: &mut [u8],
    ) -> Result<usize, CellError> {
        let len = len_u16("variable cell body", body.len(), u16::MAX as usize)?;
        let hdr = self.circ_id_len + 3;
        let total = hdr + body.len();
        if out.len() < total {
            return Err(CellError::BufferTooSmall {
                what: "variable cell",
                need: total,
                have: out.len(),
            });
        }
        self.put_circ_id(circ_id, out)?;
        out[self.circ_id_len] = cmd.0;
        out[self.circ_id_len + 1..hdr].copy_from_slice(&len.to_be_bytes());
        out[hdr..total].copy_from_slice(body);
        Ok(total)
    }
}

/// Writes a link ≥ 4 fixed-cell header into `out` and returns its body for the caller to fill
/// in place (relay cells are encoded and encrypted directly in the send buffer).
pub fn fixed_cell_body_mut(
    out: &mut [u8; CELL_LEN],
    circ_id: CircId,
    cmd: ChanCmd,
) -> &mut [u8; CELL_BODY_LEN] {
    out[..4].copy_from_slice(&circ_id.0.to_be_bytes());
    out[4] = cmd.0;
    (&mut out[5..])
        .try_into()
        .expect("CELL_LEN - 5 == CELL_BODY_LEN")
}

/// Encodes a complete VERSIONS cell in its 2-byte-circuit-ID form (circuit ID 0), as both
/// sides send it before any version is agreed; returns the bytes written.
pub fn encode_versions_cell(versions: &[u16], out: &mut [u8]) -> Result<usize, CellError> {
    let body_len = versions.len() * 2;
    let len = len_u16("VERSIONS body", body_len, u16::MAX as usize)?;
    let total = 5 + body_len;
    if out.len() < total {
        return Err(CellError::BufferTooSmall {
            what: "VERSIONS cell",
            need: total,
            have: out.len(),
        });
    }
    out[..2].copy_from_slice(&[0, 0]);
    out[2] = ChanCmd::VERSIONS.0;
    out[3..5].copy_from_slice(&len.to_be_bytes());
    for (i, v) in versions.iter().enumerate() {
        out[5 + 2 * i..7 + 2 * i].copy_from_slice(&v.to_be_bytes());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wide() -> Framer {
        Framer::negotiated(4).unwrap()
    }

    #[test]
    fn versions_cell_known_encoding_and_framing() {
        let mut buf = [0u8; 16];
        let n = encode_versions_cell(&[4, 5], &mut buf).unwrap();
        assert_eq!(&buf[..n], &[0, 0, 7, 0, 4, 0, 4, 0, 5]);
        let f = Framer::unnegotiated();
        let (cell, used) = f.next(&buf[..n]).unwrap().unwrap();
        assert_eq!(used, n);
        assert_eq!(
            cell,
            Cell::Var(VarCell {
                circ_id: CircId(0),
                cmd: ChanCmd::VERSIONS,
                body: &[0, 4, 0, 5]
            })
        );
        for k in 0..n {
            assert_eq!(f.next(&buf[..k]).unwrap(), None, "prefix {k}");
        }
    }

    #[test]
    fn fixed_cell_round_trip_link4() {
        let mut body = [0u8; CELL_BODY_LEN];
        body[0] = 0xAB;
        body[508] = 0xCD;
        let mut out = [0u8; CELL_LEN + 3];
        let f = wide();
        let n = f
            .encode_fixed(CircId(0x8000_0001), ChanCmd::RELAY, &body, &mut out)
            .unwrap();
        assert_eq!(n, CELL_LEN);
        assert_eq!(&out[..5], &[0x80, 0, 0, 1, 3]);
        out[n..].copy_from_slice(&[0, 0, 0]); // start of a following cell
        let (cell, used) = f.next(&out).unwrap().unwrap();
        assert_eq!(used, CELL_LEN);
        let Cell::Fixed(c) = cell else { panic!() };
        assert_eq!((c.circ_id, c.cmd), (CircId(0x8000_0001), ChanCmd::RELAY));
        assert!(c.circ_id.has_high_bit());
        assert_eq!(c.body, &body);
        assert_eq!(f.next(&out[..CELL_LEN - 1]).unwrap(), None);
    }

    #[test]
    fn next_mut_allows_in_place_changes() {
        let mut out = [0u8; CELL_LEN];
        let f = wide();
        f.encode_fixed(CircId(7), ChanCmd::RELAY, &[1; CELL_BODY_LEN], &mut out)
            .unwrap();
        let (cell, _) = f.next_mut(&mut out).unwrap().unwrap();
        let CellMut::Fixed(c) = cell else { panic!() };
        c.body[0] = 9;
        assert_eq!(out[5], 9);
        let mut hdr = [0u8; CELL_LEN];
        fixed_cell_body_mut(&mut hdr, CircId(7), ChanCmd::RELAY).fill(1);
        hdr[5] = 9;
        assert_eq!(hdr, out);
    }

    #[test]
    fn var_cell_round_trip_and_bound() {
        let f = wide();
        let body = [0x42u8; 700];
        let mut out = [0u8; 800];
        let n = f
            .encode_var(CircId(0), ChanCmd::CERTS, &body, &mut out)
            .unwrap();
        assert_eq!(&out[..7], &[0, 0, 0, 0, 129, 0x02, 0xBC]);
        let (cell, used) = f.next(&out[..n]).unwrap().unwrap();
        assert_eq!(used, 707);
        assert_eq!(cell.cmd(), ChanCmd::CERTS);
        let Cell::Var(v) = cell else { panic!() };
        assert_eq!(v.body, &body[..]);
        let hostile = [0, 0, 0, 0, 128, 0xFF, 0xFF];
        assert_eq!(
            f.next(&hostile),
            Err(CellError::TooLong {
                what: "variable cell body",
                len: 65535,
                max: MAX_VAR_CELL_BODY_LEN
            })
        );
    }

    #[test]
    fn link3_and_unnegotiated_use_two_byte_ids() {
        let f = Framer::negotiated(3).unwrap();
        assert_eq!(f.fixed_cell_len(), 512);
        let mut out = [0u8; 512];
        assert_eq!(
            f.encode_fixed(CircId(0x1_0000), ChanCmd::PADDING, &[0; 509], &mut out),
            Err(CellError::CircIdTooWide {
                circ_id: 0x1_0000,
                width: 2
            })
        );
        f.encode_fixed(CircId(0x1234), ChanCmd::NETINFO, &[0; 509], &mut out)
            .unwrap();
        let (c, used) = f.next(&out).unwrap().unwrap();
        assert_eq!(
            (c.circ_id(), c.cmd(), used),
            (CircId(0x1234), ChanCmd::NETINFO, 512)
        );
        assert_eq!(
            Framer::negotiated(2),
            Err(CellError::UnsupportedLinkVersion(2))
        );
    }

    #[test]
    fn var_len_rules() {
        assert!(ChanCmd::VERSIONS.is_var_len(0));
        assert!(ChanCmd::VPADDING.is_var_len(0));
        assert!(ChanCmd(200).is_var_len(5));
        assert!(!ChanCmd::NETINFO.is_var_len(4));
        assert!(!ChanCmd::VPADDING.is_var_len(2));
        assert!(ChanCmd::VERSIONS.is_var_len(2));
        assert!(!ChanCmd::VERSIONS.is_var_len(1));
        assert_eq!(format!("{:?}", ChanCmd::CREATE2), "CREATE2");
        assert_eq!(format!("{}", ChanCmd(77)), "ChanCmd(77)");
    }

    #[test]
    fn buffer_too_small() {
        let f = wide();
        assert!(f
            .encode_fixed(CircId(1), ChanCmd::RELAY, &[0; 509], &mut [0u8; 513])
            .is_err());
        assert!(f
            .encode_var(CircId(1), ChanCmd::CERTS, &[0; 10], &mut [0u8; 16])
            .is_err());
        assert!(encode_versions_cell(&[4, 5], &mut [0u8; 8]).is_err());
    }

    /// The per-cell path is allocation-free by construction: the framer and relay header
    /// parser return views whose lifetimes are tied to the input buffer, which would not
    /// type-check if they owned copies. (A counting allocator would need a global hook.)
    #[test]
    fn hot_path_returns_borrowed_views() {
        fn borrows<'a>(f: &Framer, input: &'a [u8]) -> Option<&'a [u8; CELL_BODY_LEN]> {
            match f.next(input).ok()??.0 {
                Cell::Fixed(c) => Some(c.body),
                Cell::Var(_) => None,
            }
        }
        let mut wire = [0u8; CELL_LEN];
        wire[4] = ChanCmd::RELAY.0;
        let body = borrows(&wide(), &wire).unwrap();
        assert!(core::ptr::eq(body.as_ptr(), wire[5..].as_ptr()));
        let m = crate::cell::relay::v0::parse(body).unwrap();
        assert!(core::ptr::eq(m.data.as_ptr(), wire[16..].as_ptr()));
        assert!(core::mem::size_of::<Cell<'_>>() <= 32);
    }
}
