//! Conflux at the exit in the circuit core: the sans-IO decisions of
//! [`crate::proto::conflux`] carried out on this shard's circuits (prop 329; C tor
//! `conflux.c`, `conflux_pool.c`).
//!
//! Not wired yet: conflux cells are refused as before (`exit.rs`), and a closing circuit has
//! no set to leave.

use super::core::{CoreIo, RelayCore};
use super::crypto::HopCrypto;
use super::table::CircHandle;
use super::NetworkView;
use crate::cell::chan::DestroyReason;

/// Whether the exit side of conflux runs on live circuits (and on how many shards): the
/// relay advertises `Conflux=1` only when it does.
pub fn conflux_served(_shards: usize) -> bool {
    false
}

/// One shard's conflux state (inside its [`RelayCore`]).
pub(super) struct ConfluxExit {}

impl ConfluxExit {
    pub(super) fn new(_max_circuits: usize) -> ConfluxExit {
        ConfluxExit {}
    }
}

impl<C: HopCrypto, N: NetworkView> RelayCore<C, N> {
    /// Circuit `idx` closed: a set it was a leg of loses the leg.
    pub(super) fn conflux_circuit_closed(
        &mut self,
        _idx: u32,
        _handle: CircHandle,
        _reason: DestroyReason,
        _io: &mut CoreIo<'_>,
    ) {
    }
}
