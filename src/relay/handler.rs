//! The relay's [`ConnHandler`]: the seam where the link protocol (`proto::channel`) and
//! circuits (`proto::circuit`) plug into the shard runtime.
//!
//! **In this build the link protocol is not wired in yet.** Every ORPort connection is
//! accepted, counted and closed cleanly (FIN after nothing was sent); nothing pretends to
//! speak Tor. What the handler already does for real: mirror the shard's counters into the
//! MetricsPort's [`ShardStats`] every tick, and pick up control-plane snapshots (ntor keys,
//! consensus) once per tick without locking on the data path.
//!
//! Plugging in the protocol: `on_accept`/`on_data`/`on_closed` hand bytes to
//! `proto::channel` (one state machine per `ConnId`) instead of closing; the channel takes its
//! TLS key and CERTS-cell certificates from `self.network().link_certs`, CREATE2 handshakes
//! use `ntor_keys`, BEGIN checks `exit_policy`, EXTEND2 looks up `known_relays`, and flow
//! control reads `consensus_params`. Keep `stats.handler.channels_open` / `circuits_open`
//! current and drop `connections_closed_unserved`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::snapshot::{NetworkSnapshot, SnapshotCell, SnapshotReader};
use crate::metrics::ShardStats;
use crate::shard::{CloseReason, ConnHandler, ConnId, Outbox, ShardId};

/// One shard's relay handler.
pub struct RelayHandler {
    shard: ShardId,
    stats: Arc<ShardStats>,
    network: SnapshotReader<NetworkSnapshot>,
}

impl RelayHandler {
    pub fn new(
        shard: ShardId,
        stats: Arc<ShardStats>,
        network: Arc<SnapshotCell<NetworkSnapshot>>,
    ) -> RelayHandler {
        RelayHandler {
            shard,
            stats,
            network: SnapshotReader::new(network),
        }
    }

    /// The snapshot this shard currently uses.
    pub fn network(&self) -> &Arc<NetworkSnapshot> {
        self.network.get()
    }
}

/// What shards send each other. Nothing yet: cross-shard cells arrive with `proto::circuit`.
#[derive(Debug)]
pub enum RelayMsg {}

impl ConnHandler for RelayHandler {
    type Msg = RelayMsg;

    fn on_accept(&mut self, conn: ConnId, peer: SocketAddr, out: &mut Outbox<'_, RelayMsg>) {
        self.stats
            .handler
            .connections_seen
            .fetch_add(1, Ordering::Relaxed);
        super::log::log_debug!(
            "shard {}: ORPort connection from {peer}; no link protocol in this build, closing",
            self.shard.0
        );
        // Closing a connection we just accepted only fails if it is already gone.
        if out.close(conn).is_ok() {
            self.stats
                .handler
                .connections_closed_unserved
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_data(&mut self, _conn: ConnId, _data: &[u8], _out: &mut Outbox<'_, RelayMsg>) {
        // Reading stops at close(); bytes that raced with it are dropped.
    }

    fn on_closed(&mut self, _conn: ConnId, _reason: CloseReason, _out: &mut Outbox<'_, RelayMsg>) {}

    fn on_tick(&mut self, _now: Instant, out: &mut Outbox<'_, RelayMsg>) {
        self.stats.store(out.metrics());
        if self.network.refresh() {
            self.stats
                .handler
                .snapshots_taken
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}
