//! Conflux at the exit (prop 329, torspec "Conflux"; C tor 0.4.9 `conflux.c`,
//! `conflux_pool.c`, `conflux_cell.c`), sans-IO.
//!
//! A client links two or more circuits ending at this exit into one *set* named by a random
//! nonce, then spreads a stream's cells over them. Each multiplexed cell carries an implicit
//! absolute sequence number: its leg's counter plus one, where CONFLUX_SWITCH moves a leg's
//! counter forward. The exit delivers cells in sequence order, holding early ones in a
//! bounded out-of-order queue, and chooses which leg its own cells go out on.
//!
//! [`cells`] parses and builds the four conflux messages; [`set`] holds the sets of one
//! shard; [`cross`] joins legs whose circuits are on different shards (a set's owner shard,
//! remote legs, the nonce directory on the home shard). Nothing here touches sockets, clocks or other shards: see `docs/architecture.md`
//! "Conflux at the exit" for what the node must do with the decisions.

pub mod cells;
pub mod cross;
pub mod set;

pub use cells::{ConfluxCellError, DesiredUx, Link, Nonce, Switch};
pub use set::{
    Alg, ConfluxSets, ConfluxStats, Inbound, LegFacts, LegId, LegSendState, Limits, Linked,
    RefuseWhy, Refused, SendChoice, SetKey, Teardown,
};

use crate::cell::relay::RelayCmd;

/// Whether `cmd` is sequenced across a set's legs (C tor `conflux_should_multiplex`):
/// stream commands whose order matters. Circuit-specific commands, SENDMEs and the conflux
/// commands themselves stay on their own leg; unknown commands are not multiplexed.
pub const fn should_multiplex(cmd: RelayCmd) -> bool {
    matches!(
        cmd,
        RelayCmd::BEGIN
            | RelayCmd::DATA
            | RelayCmd::END
            | RelayCmd::CONNECTED
            | RelayCmd::RESOLVE
            | RelayCmd::RESOLVED
            | RelayCmd::XOFF
            | RelayCmd::XON
    )
}

/// The shard that owns the set named by `nonce`: legs of one set may arrive on any shard,
/// and each forwards its LINK and sequenced cells to this one. The nonce is uniformly random
/// from an honest client; one choosing nonces only loads its own sets onto one shard, which
/// that shard's [`Limits`] bound.
pub fn home_shard(nonce: &Nonce, shards: usize) -> usize {
    let mut b = [0u8; 8];
    b.copy_from_slice(&nonce[..8]);
    (u64::from_le_bytes(b) % shards.max(1) as u64) as usize
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod cross_tests;
