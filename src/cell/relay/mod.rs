//! Relay cells: the two header formats a 509-byte RELAY/RELAY_EARLY body can have
//! (tor-spec §"Relay cells"; prop 359 for format v1) and the relay messages they carry.
//!
//! [`v0`] and [`v1`] work on the cell body in place: the relay crypto layer decrypts the same
//! `[u8; 509]` and these functions then read the header from it without copying.

pub mod msg;
pub mod v0;
pub mod v1;

use super::named_int;

named_int! {
    /// A relay command (tor-spec §"Relay cells"; C tor `or.h` RELAY_COMMAND_*).
    pub struct RelayCmd(u8) {
        BEGIN = 1,
        DATA = 2,
        END = 3,
        CONNECTED = 4,
        SENDME = 5,
        /// Obsolete TAP EXTEND.
        EXTEND = 6,
        /// Obsolete TAP EXTENDED.
        EXTENDED = 7,
        TRUNCATE = 8,
        TRUNCATED = 9,
        DROP = 10,
        RESOLVE = 11,
        RESOLVED = 12,
        BEGIN_DIR = 13,
        EXTEND2 = 14,
        EXTENDED2 = 15,
        CONFLUX_LINK = 19,
        CONFLUX_LINKED = 20,
        CONFLUX_LINKED_ACK = 21,
        CONFLUX_SWITCH = 22,
        ESTABLISH_INTRO = 32,
        ESTABLISH_RENDEZVOUS = 33,
        INTRODUCE1 = 34,
        INTRODUCE2 = 35,
        RENDEZVOUS1 = 36,
        RENDEZVOUS2 = 37,
        INTRO_ESTABLISHED = 38,
        RENDEZVOUS_ESTABLISHED = 39,
        INTRODUCE_ACK = 40,
        PADDING_NEGOTIATE = 41,
        PADDING_NEGOTIATED = 42,
        XOFF = 43,
        XON = 44,
    }
}

impl RelayCmd {
    /// Whether C tor knows this command (`is_known_relay_command`); format v1 rejects the rest.
    pub const fn is_known(self) -> bool {
        self.name().is_some()
    }

    /// Whether this command carries a stream ID in format v1 (C tor
    /// `relay_cmd_expects_streamid_in_v1`); in v0 every cell has the field.
    pub const fn expects_stream_id_in_v1(self) -> bool {
        matches!(
            self,
            RelayCmd::BEGIN
                | RelayCmd::BEGIN_DIR
                | RelayCmd::CONNECTED
                | RelayCmd::DATA
                | RelayCmd::END
                | RelayCmd::RESOLVE
                | RelayCmd::RESOLVED
                | RelayCmd::XOFF
                | RelayCmd::XON
        )
    }
}

/// The header facts and data of a relay cell, borrowed from the cell body; identical for
/// both formats once parsed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RelayMsgRef<'a> {
    pub cmd: RelayCmd,
    /// 0 for circuit-level messages (and for v1 commands without a stream ID field).
    pub stream_id: u16,
    pub data: &'a [u8],
}

/// Fills `pad` as C tor pads relay cells (`relay_cell_pad`): 4 zero bytes kept for forward
/// compatibility, then random bytes so the sender cannot predict the whole cell, which
/// authenticated SENDMEs rely on (prop 289).
fn pad(pad: &mut [u8], rng: &mut impl rand_core::RngCore) {
    let zeros = pad.len().min(4);
    pad[..zeros].fill(0);
    rng.fill_bytes(&mut pad[zeros..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_commands_match_c_tor() {
        let known: Vec<u8> = (0..=255u8).filter(|&c| RelayCmd(c).is_known()).collect();
        let mut expect: Vec<u8> = (1..=15).collect();
        expect.extend(19..=22);
        expect.extend(32..=44);
        assert_eq!(known, expect);
        assert_eq!(format!("{:?}", RelayCmd(43)), "XOFF");
        assert_eq!(format!("{:?}", RelayCmd(200)), "RelayCmd(200)");
    }

    #[test]
    fn v1_stream_id_commands() {
        let with: Vec<u8> = (0..=255u8)
            .filter(|&c| RelayCmd(c).expects_stream_id_in_v1())
            .collect();
        assert_eq!(with, vec![1, 2, 3, 4, 11, 12, 13, 43, 44]);
    }
}
