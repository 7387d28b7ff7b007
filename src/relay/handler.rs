//! The relay's [`ConnHandler`]: the thin adapter between the shard runtime and the relay
//! node ([`super::node`]). Every callback hands the shard's [`Outbox`] to the node as its
//! [`crate::shard::ShardIo`]; all the relay logic lives in the node.

use std::net::SocketAddr;
use std::time::Instant;

pub use super::node::cross;
pub use super::node::{dos_config, DosShared, RelayMsg, RelayNode, SnapshotView};
use crate::shard::{CloseReason, ConnHandler, ConnId, Outbox, ShardId, WatchId};

/// The node as the shard runs it.
pub type RelayHandler = RelayNode;

impl ConnHandler for RelayNode {
    type Msg = RelayMsg;

    fn on_start(&mut self, out: &mut Outbox<'_, RelayMsg>) {
        RelayNode::on_start(self, out)
    }
    fn on_readable(&mut self, watch: WatchId, out: &mut Outbox<'_, RelayMsg>) {
        RelayNode::on_readable(self, watch, out)
    }
    fn on_accept(&mut self, conn: ConnId, peer: SocketAddr, out: &mut Outbox<'_, RelayMsg>) {
        RelayNode::on_accept(self, conn, peer, out)
    }
    fn on_connected(&mut self, conn: ConnId, peer: SocketAddr, out: &mut Outbox<'_, RelayMsg>) {
        RelayNode::on_connected(self, conn, peer, out)
    }
    fn on_data(&mut self, conn: ConnId, data: &mut [u8], out: &mut Outbox<'_, RelayMsg>) {
        RelayNode::on_data(self, conn, data, out)
    }
    fn on_writable(&mut self, conn: ConnId, out: &mut Outbox<'_, RelayMsg>) {
        RelayNode::on_writable(self, conn, out)
    }
    fn on_closed(&mut self, conn: ConnId, reason: CloseReason, out: &mut Outbox<'_, RelayMsg>) {
        RelayNode::on_closed(self, conn, reason, out)
    }
    fn on_cross_shard(
        &mut self,
        from: ShardId,
        items: std::vec::Drain<'_, RelayMsg>,
        out: &mut Outbox<'_, RelayMsg>,
    ) {
        RelayNode::on_cross_shard(self, from, items, out)
    }
    fn on_tick(&mut self, now: Instant, out: &mut Outbox<'_, RelayMsg>) {
        RelayNode::on_tick(self, now, out)
    }
    fn on_batch_end(&mut self, out: &mut Outbox<'_, RelayMsg>) -> bool {
        RelayNode::on_batch_end(self, out)
    }
    fn next_deadline(&self) -> Option<Instant> {
        RelayNode::next_deadline(self)
    }
    fn on_timer(&mut self, now: Instant, out: &mut Outbox<'_, RelayMsg>) {
        RelayNode::on_timer(self, now, out)
    }
}
