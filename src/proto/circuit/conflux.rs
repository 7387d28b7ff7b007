//! Conflux at the exit in the circuit core: the sans-IO decisions of
//! [`crate::proto::conflux`] carried out on this shard's circuits (prop 329; C tor
//! `conflux.c`, `conflux_pool.c`, `relay.c`).
//!
//! Served on a one-shard relay only: the legs of a set must all be circuits of this core.
//! On a relay with more shards a LINK is refused as C tor refuses it with conflux disabled
//! (`facts.enabled` is false: DESTROY TORPROTOCOL).
//!
//! Streams: C tor points every leg at one stream list. Here a set's streams live on one leg,
//! its *stream owner* (the leg that created the set): multiplexed cells of any leg are
//! handled against the owner's streams once in order, and a leg that closes while the set
//! survives hands its streams to a surviving leg ([`RelayCore::cfx_sync`]). Circuit-level
//! accounting (deliver window, circuit SENDMEs, congestion control) stays on the leg a cell
//! arrived or leaves on.

use std::time::Instant;

use super::core::{CoreIo, RelayCore};
use super::crypto::HopCrypto;
use super::table::{CircHandle, Next};
use super::NetworkView;
use crate::cell::chan::DestroyReason;
use crate::cell::relay::{v0, RelayCmd};
use crate::cell::CellError;
use crate::proto::conflux::set::MAX_LEGS;
use crate::proto::conflux::{
    should_multiplex, ConfluxCellError, ConfluxSets, Inbound, LegFacts, LegSendState, Limits,
    Refused, SendChoice, Teardown,
};

/// Whether the exit side of conflux runs on live circuits (and on how many shards): the
/// relay advertises `Conflux=1` only when it does. Legs of one set may arrive on different
/// shards; the cross-shard join (`proto::conflux::cross`) is not wired into this core and
/// the node yet: one shard only.
pub fn conflux_served(shards: usize) -> bool {
    shards == 1
}

/// No stream owner: the circuit is not a leg.
const NONE: u32 = u32::MAX;

/// A multiplexed message held in the out-of-order queue. Fixed size, so holding one
/// allocates nothing (the queue's slots are reserved with the table).
pub(super) struct Held {
    cmd: RelayCmd,
    sid: u16,
    len: u16,
    data: [u8; v0::MAX_DATA_LEN],
}

impl Held {
    fn new(cmd: RelayCmd, sid: u16, data: &[u8]) -> Held {
        let mut h = Held {
            cmd,
            sid,
            len: data.len().min(v0::MAX_DATA_LEN) as u16,
            data: [0; v0::MAX_DATA_LEN],
        };
        h.data[..h.len as usize].copy_from_slice(&data[..h.len as usize]);
        h
    }
}

/// One shard's conflux state (inside its [`RelayCore`]).
pub(super) struct ConfluxExit {
    pub(super) sets: ConfluxSets<CircHandle, Held>,
    /// Per circuit slot: the slot of the leg holding its set's streams ([`NONE`] if the
    /// circuit is not a leg). Also the per-cell test "is this circuit a leg".
    owner: Vec<u32>,
    /// Origin of the microsecond clock the RTT samples use.
    epoch: Option<Instant>,
    /// The consensus parameter `cfx_enabled` (C tor `conflux_is_enabled` at an exit;
    /// default 1).
    pub(super) cfx_enabled: bool,
    /// Held cells charged to the core's cell pool (see `cfx_metrics`).
    charged: usize,
}

impl ConfluxExit {
    pub(super) fn new(max_circuits: usize) -> ConfluxExit {
        let limits = Limits {
            // A set has at least one leg; C tor's clients build two.
            max_sets: (max_circuits / 2).max(1),
            // Held cells are ~0.5 KiB each: at most 16 MiB per shard.
            ooo_pool_cells: (max_circuits.saturating_mul(64)).clamp(2048, 32 * 1024),
            ..Limits::default()
        };
        ConfluxExit {
            sets: ConfluxSets::new(limits),
            owner: vec![NONE; max_circuits],
            epoch: None,
            cfx_enabled: true,
            charged: 0,
        }
    }

    fn usec(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        // +1: a LINK at the first instant must not look like "no LINKED sent".
        now.saturating_duration_since(epoch).as_micros() as u64 + 1
    }

    fn owner_of(&self, idx: u32) -> u32 {
        self.owner.get(idx as usize).copied().unwrap_or(NONE)
    }

    fn set_owner(&mut self, idx: u32, owner: u32) {
        if let Some(o) = self.owner.get_mut(idx as usize) {
            *o = owner;
        }
    }
}

fn cell_err(_: ConfluxCellError) -> CellError {
    CellError::BufferTooSmall {
        what: "conflux message",
        need: 0,
        have: 0,
    }
}

impl<C: HopCrypto, N: NetworkView> RelayCore<C, N> {
    /// Whether circuit `idx` is a leg of a linked set (one array read: called per cell).
    pub(super) fn cfx_is_leg(&self, idx: u32) -> bool {
        self.conflux.owner_of(idx) != NONE
    }

    /// The circuit whose stream list serves `idx`: its set's stream owner, or itself.
    pub(super) fn cfx_stream_circ(&self, idx: u32) -> u32 {
        match self.conflux.owner_of(idx) {
            NONE => idx,
            o => o,
        }
    }

    /// BEGIN_DIR on a leg is refused with END NOTDIRECTORY (TROVE-2026-008).
    pub(super) fn cfx_refuses_begin_dir(&self, idx: u32) -> bool {
        self.cfx_is_leg(idx)
    }

    fn cfx_facts(&self, idx: u32) -> LegFacts {
        let Some(c) = self.table.get(idx) else {
            return LegFacts::default();
        };
        let cc = c.cc.as_deref();
        LegFacts {
            enabled: conflux_served(self.shards) && self.conflux.cfx_enabled && cc.is_some(),
            has_next_hop: c.next != Next::None,
            has_streams: c.streams_head != u32::MAX,
            data_in_flight: cc.is_some_and(|cc| cc.inflight() >= cc.sendme_inc()),
        }
    }

    /// Copies the counters, and keeps the cells held out of order charged to the cell pool,
    /// so `MaxMemInQueues` covers them as C tor's OOM total covers its conflux queues
    /// (`cell_queues_check_size`). Charging never evicts here (an eviction closes circuits,
    /// which would come back here); a pool with no room leaves the rest uncharged until the
    /// next event, and the next queued cell's OOM check sees the pressure.
    fn cfx_metrics(&mut self, now: Instant) {
        let s = self.conflux.sets.stats();
        self.metrics.set_conflux(&s);
        let held = s.held_cells;
        let charged = self.conflux.charged;
        if held > charged {
            let n = self.charge_external_cells_quietly(held - charged, now);
            self.conflux.charged += n;
        } else if held < charged {
            self.release_external_cells(charged - held);
            self.conflux.charged = held;
        }
    }

    /// A conflux command (LINK, LINKED, LINKED_ACK, SWITCH) on circuit `idx` (C tor
    /// `conflux_process_link`, `conflux_process_linked`, `conflux_process_linked_ack`,
    /// `conflux_process_switch_command`). Returns circuit liveness.
    pub(super) fn handle_conflux(
        &mut self,
        idx: u32,
        cmd: RelayCmd,
        data: &[u8],
        io: &mut CoreIo<'_>,
    ) -> bool {
        let h = self.table.handle(idx);
        let facts = self.cfx_facts(idx);
        let before = self.conflux.sets.legs_of(h);
        let now = self.conflux.usec(io.now);
        let refused = match cmd {
            RelayCmd::CONFLUX_LINK => match self.conflux.sets.on_link(h, facts, data, now) {
                Ok(l) => {
                    let owner = if l.new_set {
                        idx
                    } else {
                        self.conflux
                            .sets
                            .legs_of(h)
                            .iter()
                            .flatten()
                            .map(|o| self.conflux.owner_of(o.idx))
                            .find(|&o| o != NONE)
                            .unwrap_or(idx)
                    };
                    self.conflux.set_owner(idx, owner);
                    let linked = l.linked;
                    let sent = self.originate(
                        idx,
                        RelayCmd::CONFLUX_LINKED,
                        0,
                        |out| linked.encode(out).map_err(cell_err),
                        io,
                    );
                    self.cfx_metrics(io.now);
                    return sent.is_some();
                }
                Err(r) => r,
            },
            RelayCmd::CONFLUX_LINKED => self.conflux.sets.on_linked(h, facts),
            RelayCmd::CONFLUX_LINKED_ACK => match self.conflux.sets.on_linked_ack(h, facts, now) {
                Ok(()) => {
                    // The leg has an RTT now and may be picked: streams the set paused for
                    // want of a usable leg may send.
                    self.resume_streams(idx, io);
                    return true;
                }
                Err(r) => r,
            },
            RelayCmd::CONFLUX_SWITCH => match self.conflux.sets.on_switch(h, facts, data) {
                Ok(_) => {
                    self.cfx_metrics(io.now);
                    return true;
                }
                Err(r) => r,
            },
            _ => return true,
        };
        self.cfx_refused(idx, before, refused, io);
        false
    }

    /// A multiplexed message on leg `idx`: circuit-level accounting on this leg, then the
    /// set's sequencing (C tor `conflux_process_cell`, `conflux_dequeue_relay_msg`): in
    /// order it is handled against the set's streams, with every held message it releases;
    /// early it is held. Returns circuit liveness.
    pub(super) fn cfx_sequenced(
        &mut self,
        idx: u32,
        cmd: RelayCmd,
        sid: u16,
        data: &[u8],
        io: &mut CoreIo<'_>,
    ) -> bool {
        if cmd == RelayCmd::DATA && !self.relay_data_circuit(idx, io) {
            return false;
        }
        let h = self.table.handle(idx);
        let facts = self.cfx_facts(idx);
        let before = self.conflux.sets.legs_of(h);
        match self
            .conflux
            .sets
            .on_cell(h, cmd, facts, Held::new(cmd, sid, data))
        {
            Inbound::Deliver(m) | Inbound::NotSequenced(m) => {
                let mut next = Some(m);
                while let Some(m) = next {
                    let stream_circ = self.cfx_stream_circ(idx);
                    let d = &m.data[..m.len as usize];
                    self.dispatch_stream_msg(stream_circ, m.cmd, m.sid, d, io);
                    if self.table.get(idx).is_none() {
                        break;
                    }
                    next = self.conflux.sets.pop_ready(h);
                }
            }
            Inbound::Held => {}
            Inbound::Refused(r) => self.cfx_refused(idx, before, r, io),
        }
        self.cfx_metrics(io.now);
        self.table.get(idx).is_some()
    }

    /// Originates a message of `idx`'s streams: on a leg, a multiplexed command goes on the
    /// leg the set's algorithm picks, after a SWITCH if the leg changes (C tor
    /// `conflux_decide_circ_for_send`, `conflux_note_cell_sent`). `None` if nothing was
    /// sent (no leg may send, or the set broke).
    pub(super) fn cfx_originate(
        &mut self,
        idx: u32,
        cmd: RelayCmd,
        stream_id: u16,
        write: impl FnOnce(&mut [u8]) -> Result<usize, CellError>,
        io: &mut CoreIo<'_>,
    ) -> Option<[u8; 20]> {
        if !self.cfx_is_leg(idx) || !should_multiplex(cmd) {
            return self.originate(idx, cmd, stream_id, write, io);
        }
        let leg = self.cfx_pick_leg(idx, cmd, io)?;
        let tag = self.originate(leg, cmd, stream_id, write, io);
        if tag.is_some() {
            self.cfx_note_sent(leg, cmd);
        }
        tag
    }

    /// Counts a multiplexed message sent on leg `leg`.
    pub(super) fn cfx_note_sent(&mut self, leg: u32, cmd: RelayCmd) {
        let h = self.table.handle(leg);
        self.conflux.sets.note_sent(h, cmd);
    }

    /// The leg to send a `cmd` of `idx`'s set on now, with the SWITCH sent first if the
    /// leg changes. `None`: no leg may send (the caller waits for a SENDME or the channel),
    /// or the set broke and its legs were closed.
    pub(super) fn cfx_pick_leg(
        &mut self,
        idx: u32,
        cmd: RelayCmd,
        io: &mut CoreIo<'_>,
    ) -> Option<u32> {
        let h = self.table.handle(idx);
        let legs = self.conflux.sets.legs_of(h);
        let mut state = [None::<(CircHandle, LegSendState)>; MAX_LEGS];
        for (s, l) in state.iter_mut().zip(legs.iter()) {
            let Some(l) = *l else { continue };
            let Some(c) = self.table.get(l.idx) else {
                continue;
            };
            let (cwnd, inflight, ewma_rtt) = c.cc.as_deref().map_or((0, 0, 0), |cc| {
                (cc.cwnd(), cc.inflight(), cc.ewma_rtt_usec())
            });
            // C tor updates the leg's RTT at each SENDME; the EWMA only changes at a
            // SENDME, so reading it when choosing gives the same leg RTTs.
            self.conflux.sets.update_rtt(l, ewma_rtt);
            *s = Some((
                l,
                LegSendState {
                    cwnd,
                    inflight,
                    blocked_on_chan: self.prev_is_congested(l.idx),
                },
            ));
        }
        let choice = self.conflux.sets.choose_send(h, cmd, |c| {
            state.iter().flatten().find(|(l, _)| *l == c).map_or(
                LegSendState {
                    cwnd: 0,
                    inflight: 0,
                    blocked_on_chan: true,
                },
                |s| s.1,
            )
        });
        match choice {
            SendChoice::Send { circ, switch } => {
                let leg = self.table.resolve(circ)?;
                if let Some(sw) = switch {
                    let sent = self.originate(
                        leg,
                        RelayCmd::CONFLUX_SWITCH,
                        0,
                        |out| sw.encode(out).map_err(cell_err),
                        io,
                    );
                    self.cfx_metrics(io.now);
                    if sent.is_none() {
                        // TROVE-2026-017: a set whose SWITCH was lost cannot stay coherent.
                        let t = self.conflux.sets.switch_send_failed(circ);
                        self.cfx_close_all(legs, t, io);
                        return None;
                    }
                }
                Some(leg)
            }
            SendChoice::Blocked => None,
            SendChoice::Teardown(t) => {
                self.cfx_close_all(legs, t, io);
                None
            }
        }
    }

    /// Marks every leg of `idx`'s set that waits on a congested channel, so
    /// `channel_unblocked` resumes the set's streams.
    pub(super) fn cfx_mark_waiting(&mut self, idx: u32) {
        let legs = self.conflux.sets.legs_of(self.table.handle(idx));
        for l in legs.iter().flatten() {
            if self.prev_is_congested(l.idx) {
                self.mark_waiting(l.idx);
            }
        }
    }

    /// Carries out a refusal: the refused circuit and the others the set names close (the
    /// streams move first if the set survives without the stream owner).
    fn cfx_refused(
        &mut self,
        idx: u32,
        before: [Option<CircHandle>; MAX_LEGS],
        r: Refused<CircHandle>,
        io: &mut CoreIo<'_>,
    ) {
        self.cfx_sync(before);
        self.conflux.set_owner(idx, NONE);
        self.cfx_close_all([None; MAX_LEGS], r.others, io);
        if self.table.get(idx).is_some() {
            self.close(idx, r.this, true, true, io);
        }
        self.cfx_metrics(io.now);
    }

    /// Closes the circuits of a teardown (the set already forgot them).
    fn cfx_close_all(
        &mut self,
        before: [Option<CircHandle>; MAX_LEGS],
        t: Teardown<CircHandle>,
        io: &mut CoreIo<'_>,
    ) {
        self.cfx_sync(before);
        for c in t.circs() {
            self.conflux.set_owner(c.idx, NONE);
            if let Some(i) = self.table.resolve(c) {
                self.close(i, t.reason, true, true, io);
            }
        }
        self.cfx_metrics(io.now);
    }

    /// After the set of legs `before` lost legs: forget the owner of those gone, and if
    /// the stream owner left while others stay, move its streams to a surviving leg.
    fn cfx_sync(&mut self, before: [Option<CircHandle>; MAX_LEGS]) {
        let Some(owner) = before
            .iter()
            .flatten()
            .map(|h| self.conflux.owner_of(h.idx))
            .find(|&o| o != NONE)
        else {
            return;
        };
        let alive = |s: &Self, h: CircHandle| s.conflux.sets.leg_of(h).is_some();
        let survivor = before.iter().flatten().copied().find(|&h| alive(self, h));
        let owner_stays = before
            .iter()
            .flatten()
            .any(|&h| h.idx == owner && alive(self, h));
        for &h in before.iter().flatten() {
            if !alive(self, h) {
                self.conflux.set_owner(h.idx, NONE);
            }
        }
        let Some(to) = survivor else {
            return;
        };
        if owner_stays {
            return;
        }
        self.cfx_move_streams(owner, to.idx);
        for &h in before.iter().flatten() {
            if alive(self, h) {
                self.conflux.set_owner(h.idx, to.idx);
            }
        }
    }

    /// Hands every stream of circuit `from` to circuit `to` (handles stay valid).
    fn cfx_move_streams(&mut self, from: u32, to: u32) {
        let Some(head) = self.table.get(from).map(|c| c.streams_head) else {
            return;
        };
        let Some(to_head) = self.table.get(to).map(|c| c.streams_head) else {
            return;
        };
        let mut pending = 0u32;
        let mut at = head;
        let mut tail = None;
        while let Some(h) = self.streams.handle_at(at) {
            // Stream IDs are unique in the set, and only the owner holds streams.
            self.streams.move_to_circ(h, to);
            let s = self.streams.get(h).expect("live");
            pending += s.pending.len() as u32;
            tail = Some(h);
            at = s.next_in_circ;
        }
        let Some(tail) = tail else {
            return;
        };
        self.streams.get_mut(tail).expect("live").next_in_circ = to_head;
        if let Some(c) = self.table.get_mut(from) {
            c.streams_head = u32::MAX;
            c.queued -= pending;
        }
        if let Some(c) = self.table.get_mut(to) {
            c.streams_head = head;
            c.queued += pending;
        }
    }

    /// Circuit `idx` is about to close: a set it was a leg of loses the leg (C tor
    /// `linked_circuit_closed`, `cfx_del_leg`); if the set survives, its streams move to
    /// a surviving leg first; if it breaks, the other legs close.
    pub(super) fn conflux_circuit_closing(&mut self, idx: u32, io: &mut CoreIo<'_>) {
        if !self.cfx_is_leg(idx) {
            return;
        }
        let h = self.table.handle(idx);
        let before = self.conflux.sets.legs_of(h);
        let in_flight = self.cfx_facts(idx).data_in_flight;
        let t = self.conflux.sets.leg_closed(h, in_flight);
        self.cfx_sync(before);
        self.conflux.set_owner(idx, NONE);
        self.cfx_close_all([None; MAX_LEGS], t, io);
    }

    /// Circuit `idx` closed (after [`RelayCore::conflux_circuit_closing`]).
    pub(super) fn conflux_circuit_closed(
        &mut self,
        idx: u32,
        _handle: CircHandle,
        _reason: DestroyReason,
        io: &mut CoreIo<'_>,
    ) {
        self.conflux.set_owner(idx, NONE);
        self.cfx_metrics(io.now);
    }
}
