//! Cross-shard circuits, the node's side: messages to other shards go through one
//! [`CrossLink`] per destination (bounded overflow, pool-charged held cells), messages from
//! them are carried out here, and the cells of other shards' circuits read from our
//! channels are sent to their origin shards. Routing decisions and tables live in
//! [`super::cross`] (tested without a ring).

use super::*;

/// Relay cells of other shards' circuits one overflow may hold (per destination shard).
pub(super) const CROSS_OVERFLOW_CELLS: usize = 4096;
/// Circuits of other shards whose channel side may live on one shard.
pub(super) const MAX_PROXIED_CIRCUITS: usize = 65536;

/// The shard's queue toward one other shard, as a [`CrossLink`] pushes into it.
struct OutQueue<'a, O> {
    out: &'a mut O,
    to: ShardId,
}

impl<O: ShardIo<RelayMsg>> CrossQueue for OutQueue<'_, O> {
    #[allow(clippy::result_large_err)]
    fn try_push(&mut self, msg: RelayMsg) -> Result<(), RelayMsg> {
        self.out.push_cross(self.to, msg).map_err(|e| match e {
            crate::shard::CrossPushError::Full(m)
            | crate::shard::CrossPushError::NoSuchShard(m) => m,
        })
    }
    fn free(&mut self) -> usize {
        self.out.cross_space(self.to).0
    }
    fn capacity(&mut self) -> usize {
        self.out.cross_space(self.to).1
    }
}

/// Cross-shard counters (mirrored into the MetricsPort every tick).
#[derive(Debug, Default)]
pub(super) struct CrossCounters {
    /// Relay cells given to another shard / taken from another shard.
    pub(super) cells_sent: u64,
    pub(super) cells_received: u64,
    /// Circuits whose two sides ended up on different shards (counted on the channel side).
    pub(super) circuits_total: u64,
    /// Extends handed to the owner shard.
    pub(super) extends_sent: u64,
    /// Circuits closed because an overflow was at its bound.
    pub(super) overflow_kills: u64,
}

impl RelayNode {
    /// The core's onion-service cross-shard counters (also on the MetricsPort, through
    /// `CircuitMetrics::set_hs_cross`).
    #[doc(hidden)]
    pub fn hs_cross_counters(&self) -> crate::proto::circuit::hs_cross::HsCrossCounters {
        self.core.hs_cross_counters()
    }

    /// A batch of messages from shard `from`, in the order it pushed them.
    pub fn on_cross_shard(
        &mut self,
        from: ShardId,
        items: impl IntoIterator<Item = RelayMsg>,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        let now = out.now();
        self.qdelay_open(now); // cell queueing delay: timed from the batch's arrival
        for msg in items {
            self.handle_cross(from, msg, now, out);
        }
        self.dispatch(out);
        self.qdelay_close(out);
    }

    /// Tells every other shard that our channel `chan` is blocked or not (only shards with
    /// circuits on it care; the others ignore a channel they do not use).
    pub(super) fn broadcast_blocked(
        &mut self,
        chan: ChanId,
        blocked: bool,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        for to in (0..self.shards).map(ShardId) {
            if to != self.shard {
                self.cross_send(to, RelayMsg::ChanBlocked { chan, blocked }, out);
            }
        }
    }

    /// A cell of one of our circuits for a next hop on another shard.
    pub(super) fn send_forward(
        &mut self,
        chan: ChanId,
        circ_id: CircId,
        cmd: ChanCmd,
        body: CellBody,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        if cmd == ChanCmd::DESTROY {
            if let Some(circ) = self.remote_next.remove(&(chan, circ_id)) {
                self.remote_next_by_circ.remove(&circ);
            }
        }
        let to = shard_of(chan);
        let msg = RelayMsg::Forward {
            chan,
            circ_id,
            cmd,
            body,
        };
        // Forward cells are handed back to the core, never over the bound: no result.
        let _ = self.cross_send(to, msg, out);
    }

    /// Gives `msg` to the link toward shard `to`. A forward RELAY cell the link cannot take
    /// goes back to its circuit's next-hop queue in the core (pool-accounted) and the
    /// remote channel counts as blocked. Returns a message that met the overflow's cell
    /// bound or uncharged cap (`relay::cross::Hold`; the caller closes its circuit or
    /// fails its extend).
    pub(super) fn cross_send(
        &mut self,
        to: ShardId,
        msg: RelayMsg,
        out: &mut impl ShardIo<RelayMsg>,
    ) -> Option<RelayMsg> {
        let cell = msg.is_relay_cell();
        let charged = msg.is_charged();
        let Some(link) = self.links.get_mut(to.0) else {
            // Every other shard has a link and shard numbers come from our own ChanIds and
            // owner_shard_id: unreachable. Should it happen, the message is handed back as
            // refused, so an extend fails (RESOURCELIMIT) rather than counting as sent and
            // waiting for an answer that cannot come.
            debug_assert!(false, "no cross-shard link to shard {}", to.0);
            return Some(msg);
        };
        let mut q = OutQueue { out: &mut *out, to };
        match link.send(&mut q, msg) {
            Sent::Queued => {
                self.cross.cells_sent += u64::from(cell);
                None
            }
            Sent::Held => {
                // A held cell (or onion-service body) takes a buffer of the core's pool:
                // the memory cap covers it.
                if charged {
                    let mut io = CoreIo::new(out.now(), &mut self.core_rng, &mut self.actions);
                    if !self.core.charge_external_cell(&mut io) {
                        return link.unhold_last();
                    }
                }
                self.cross.cells_sent += u64::from(cell);
                None
            }
            Sent::GiveBack(RelayMsg::Forward {
                chan,
                circ_id,
                cmd,
                body,
            }) => {
                link.note_blocked(chan);
                self.core.channel_blocked(chan);
                if let Some(&circ) = self.remote_next.get(&(chan, circ_id)) {
                    let now = out.now();
                    let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
                    let _ = self.core.hold_for_next_hop(circ, cmd, &body, &mut io);
                }
                None
            }
            Sent::GiveBack(_) => None,
            Sent::OverBound(m) => Some(m),
        }
    }

    /// An onion-service message of our core for shard `to`'s core. A spliced cell that
    /// meets the overflow bound closes its circuit (RESOURCELIMIT, and its partner with it);
    /// an INTRODUCE1/2 or RENDEZVOUS1/2 body that meets it goes back to the core, which
    /// answers as C tor does when it cannot relay one (`RelayCore::hs_cross_refused`).
    pub(super) fn send_hs(
        &mut self,
        to: ShardId,
        msg: crate::proto::circuit::hs_cross::HsMsg,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        use crate::proto::circuit::hs_cross::HsMsg;
        let spliced = match &msg {
            HsMsg::Spliced { from, .. } => Some(*from),
            _ => None,
        };
        match self.cross_send(to, RelayMsg::Hs(msg), out) {
            Some(RelayMsg::Hs(HsMsg::Spliced { from, .. })) => {
                self.cross.overflow_kills += 1;
                let mut io = CoreIo::new(out.now(), &mut self.core_rng, &mut self.actions);
                self.core.hs_splice_overflow(from, &mut io);
                return;
            }
            Some(RelayMsg::Hs(refused)) => {
                let mut io = CoreIo::new(out.now(), &mut self.core_rng, &mut self.actions);
                let shard = ShardIdx(to.0 as u16);
                self.core.hs_cross_refused(shard, refused, &mut io);
                return;
            }
            _ => {}
        }
        // A congested link: stop reading the channel the spliced cells come from until it
        // drains (as for cells of other shards' circuits, `deliver_cross_in`).
        let Some(from) = spliced else { return };
        if !self.links.get(to.0).is_some_and(CrossLink::is_congested) {
            return;
        }
        let Some(id) = self
            .core
            .prev_chan_of(from)
            .and_then(|chan| self.conn_of_chan(chan))
        else {
            return;
        };
        if let Some(link) = self.links.get_mut(to.0) {
            link.note_paused(id);
        }
        if let Some(c) = self.conn(id) {
            if let Kind::Channel(ch) = &mut c.kind {
                ch.cross_paused = true;
                if !c.read_paused && out.pause_read(id).is_ok() {
                    c.read_paused = true;
                }
            }
        }
    }

    /// A conflux message of our core for shard `to`'s core. One the link cannot take (a
    /// cell past the overflow bound, or one the pool cannot charge) goes back to the core,
    /// which tears down the set it would leave with a gap (`RelayCore::cfx_cross_refused`).
    pub(super) fn send_cfx(
        &mut self,
        to: ShardId,
        msg: crate::proto::circuit::ConfluxMsg,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        if let Some(RelayMsg::Cfx(refused)) = self.cross_send(to, RelayMsg::Cfx(msg), out) {
            self.cross.overflow_kills += 1;
            let mut io = CoreIo::new(out.now(), &mut self.core_rng, &mut self.actions);
            self.core
                .cfx_cross_refused(ShardIdx(to.0 as u16), refused, &mut io);
        }
    }

    /// Moves held messages into queues that have room again, then unblocks the remote
    /// channels and resumes the reads that waited on them.
    pub(super) fn pump_cross(&mut self, out: &mut impl ShardIo<RelayMsg>) {
        for to in 0..self.links.len() {
            if !self.links[to].needs_pump() {
                continue;
            }
            let mut q = OutQueue {
                out,
                to: ShardId(to),
            };
            let held = self.links[to].held_cells();
            self.links[to].pump(&mut q, &mut self.scratch_unblock, &mut self.scratch_resume);
            let moved = held - self.links[to].held_cells();
            if moved > 0 {
                self.core.release_external_cells(moved);
            }
        }
        if !self.scratch_unblock.is_empty() {
            let mut io = CoreIo::new(out.now(), &mut self.core_rng, &mut self.actions);
            for chan in self.scratch_unblock.drain(..) {
                if !self.remote_blocked.contains(&chan) {
                    self.core.channel_unblocked(chan, &mut io);
                }
            }
        }
        while let Some(id) = self.scratch_resume.pop() {
            if let Some(c) = self.conn(id) {
                if let Kind::Channel(ch) = &mut c.kind {
                    ch.cross_paused = false;
                    if ch.channel.wants_read() && c.read_paused && out.resume_read(id).is_ok() {
                        c.read_paused = false;
                    }
                }
            }
        }
    }

    /// Sends the cells of other shards' circuits read from channel `id` to their origins.
    /// If a queue is full the channel stops reading until it drains; a cell past the
    /// overflow bound closes its circuit (RESOURCELIMIT toward the channel, and through the
    /// origin toward the client: `RelayMsg::NextHopClosed`), never dropped silently.
    pub(super) fn deliver_cross_in(&mut self, id: ConnId, out: &mut impl ShardIo<RelayMsg>) {
        if self.cross_in.is_empty() {
            return;
        }
        let mut cells = std::mem::take(&mut self.cross_in);
        let mut pause = false;
        for (circ_id, shard, circ, cmd, body) in cells.drain(..) {
            let msg = RelayMsg::Backward { circ, cmd, body };
            if let Some(_over) = self.cross_send(shard, msg, out) {
                self.cross.overflow_kills += 1;
                self.proxy.remove(id, circ_id);
                let chan = self.chan(id);
                let destroy = crate::proto::circuit::destroy_body(DestroyReason::ResourceLimit);
                self.send_local(chan, circ_id, ChanCmd::DESTROY, &destroy, out);
                // RESOURCELIMIT toward the client too: our own close, not the next hop's.
                let msg = RelayMsg::NextHopClosed {
                    circ,
                    reason: DestroyReason::ResourceLimit,
                };
                self.cross_send(shard, msg, out);
            }
            if self.links.get(shard.0).is_some_and(CrossLink::is_congested) {
                if let Some(link) = self.links.get_mut(shard.0) {
                    link.note_paused(id);
                }
                pause = true;
            }
        }
        self.cross_in = cells;
        if pause {
            if let Some(c) = self.conn(id) {
                if let Kind::Channel(ch) = &mut c.kind {
                    ch.cross_paused = true;
                    if !c.read_paused && out.pause_read(id).is_ok() {
                        c.read_paused = true;
                    }
                }
            }
        }
    }

    /// A batch item from shard `from`.
    pub(super) fn handle_cross(
        &mut self,
        from: ShardId,
        msg: RelayMsg,
        now: Instant,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        let cell = msg.is_relay_cell();
        self.cross.cells_received += u64::from(cell);
        match msg {
            RelayMsg::ExtendRequest {
                origin,
                target,
                create2,
            } => self.extend(
                ExtendFor::Remote {
                    shard: from,
                    circ: origin,
                },
                target,
                create2,
                now,
                out,
            ),
            RelayMsg::ExtendReply {
                origin,
                result,
                body,
            } => {
                let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
                match result {
                    Ok((chan, circ_id)) => {
                        let done = ExtendDone {
                            next: NextHop {
                                chan,
                                shard: ShardIdx(from.0 as u16),
                                circ_id,
                            },
                            created2: &body[..],
                        };
                        if self.core.extend_result(origin, Ok(done), &mut io).is_ok() {
                            self.remote_next.insert((chan, circ_id), origin);
                            self.remote_next_by_circ.insert(origin, (chan, circ_id));
                        }
                    }
                    Err(reason) => {
                        let _ = self.core.extend_result(origin, Err(reason), &mut io);
                    }
                }
            }
            RelayMsg::Forward {
                chan,
                circ_id,
                cmd,
                body,
            } => {
                let Some(id) = self.conn_of_chan(chan) else {
                    return; // the channel closed; its DESTROYs are on their way back
                };
                if self.proxy.get(id, circ_id).is_none_or(|(s, _)| s != from) {
                    return; // the circuit is gone here (DESTROY crossed this cell)
                }
                if cmd == ChanCmd::DESTROY {
                    self.proxy.remove(id, circ_id);
                }
                self.send_local(chan, circ_id, cmd, &body, out);
            }
            RelayMsg::Backward {
                circ,
                cmd,
                mut body,
            } => {
                if cmd == ChanCmd::DESTROY {
                    if let Some(key) = self.remote_next_by_circ.remove(&circ) {
                        self.remote_next.remove(&key);
                    }
                }
                let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
                let _ = self
                    .core
                    .handle_next_hop_cell(circ, cmd, &mut body, &mut io);
            }
            RelayMsg::NextHopClosed { circ, reason } => {
                if let Some(key) = self.remote_next_by_circ.remove(&circ) {
                    self.remote_next.remove(&key);
                }
                let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
                let _ = self.core.next_hop_closed(circ, reason, &mut io);
            }
            RelayMsg::Hs(msg) => {
                let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
                self.core.handle_hs_msg(msg, &mut io);
            }
            RelayMsg::Cfx(msg) => {
                let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
                self.core
                    .handle_cfx_msg(ShardIdx(from.0 as u16), msg, &mut io);
            }
            RelayMsg::ChanBlocked { chan, blocked } => {
                if blocked {
                    if self.remote_blocked.insert(chan) {
                        self.core.channel_blocked(chan);
                    }
                } else if self.remote_blocked.remove(&chan) {
                    match self.links.get_mut(from.0) {
                        // The link toward the channel's shard is congested itself: unblocking
                        // now would only move the circuits' cells into its overflow. Leave
                        // the channel to the link, whose pump unblocks it once it drains
                        // (dropping the notice here left the channel blocked for good: the
                        // core holds a blocked channel's cells, so none would ever be given
                        // back and note it).
                        Some(link) if link.is_congested() => link.note_blocked(chan),
                        _ => {
                            let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
                            self.core.channel_unblocked(chan, &mut io);
                        }
                    }
                }
            }
        }
    }
}
