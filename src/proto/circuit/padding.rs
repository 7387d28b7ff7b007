//! Circuit padding at this hop (padding-spec §3): DROP cells addressed to us and the
//! PADDING_NEGOTIATE / PADDING_NEGOTIATED relay messages. Not wired to `proto::circpad`
//! yet: DROP is counted as padding by nobody and negotiation is dropped unanswered, as
//! before (Fors does not advertise `Padding=2`, so C tor clients do not negotiate).

use super::core::{CoreIo, RelayCore};
use super::crypto::HopCrypto;
use super::NetworkView;
use crate::cell::relay::RelayCmd;

impl<C: HopCrypto, N: NetworkView> RelayCore<C, N> {
    /// A recognized DROP, PADDING_NEGOTIATE or PADDING_NEGOTIATED for this hop. Returns
    /// false if the circuit closed.
    pub(super) fn handle_circpad(
        &mut self,
        idx: u32,
        cmd: RelayCmd,
        data: &[u8],
        io: &mut CoreIo<'_>,
    ) -> bool {
        let _ = (idx, cmd, data, io);
        true
    }
}
