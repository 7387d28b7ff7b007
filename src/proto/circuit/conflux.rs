//! Conflux at the exit in the circuit core: the sans-IO decisions of
//! [`crate::proto::conflux`] carried out on this shard's circuits (prop 329; C tor
//! `conflux.c`, `conflux_pool.c`, `relay.c`).
//!
//! The core runs one [`ConfluxShard`] (the same code for one shard and for several): it
//! feeds it the conflux cells and the multiplexed cells of its legs and carries out the
//! [`CfxAction`]s it returns; messages for another shard's core leave as
//! [`Action::Cfx`] (the node's bounded cross-shard queues) and arrive through
//! [`RelayCore::handle_cfx_msg`].
//!
//! Streams: C tor points every leg at one stream list. Here a set's streams live on one
//! local leg, its *stream owner* (the leg that created the set): multiplexed cells of any
//! leg are handled against the owner's streams once in order, and when the owner closes
//! while the set survives its streams move to a surviving leg first
//! ([`RelayCore::cfx_release`]). When no local leg survives but legs on other shards do,
//! the owner's circuit slot stays as the set's *stream anchor* ([`RelayCore::cfx_anchor`]):
//! no channel, no keys, no cells accepted; only its stream list, its congestion-control
//! state for the streams' XON/XOFF, and the set link. Everything its streams send goes on a
//! leg the set's algorithm picks. Circuit-level accounting (deliver window, circuit
//! SENDMEs, congestion control) stays on the leg a cell arrived or leaves on.

use std::time::Instant;

use super::core::{CoreIo, RelayCore};
use super::crypto::HopCrypto;
use super::table::{CircHandle, Next, Side};
use super::{Action, ChanId, NetworkView, ShardIdx};
use crate::cell::chan::DestroyReason;
use crate::cell::relay::{v0, v1, RelayCmd};
use crate::cell::CellError;
use crate::proto::conflux::cross::{
    Action as CfxAction, CfxMsg, ConfluxShard, CrossLimits, LegRef, Pick, ShardNo,
};
use crate::proto::conflux::set::MAX_LEGS;
use crate::proto::conflux::{
    should_multiplex, ConfluxCellError, ConfluxStats, HomeKey, LegFacts, LegSendState, Limits,
    SetKey, Switch,
};
use crate::proto::stream::StreamHandle;

/// Whether the exit side of conflux runs on live circuits with `shards` shards: the relay
/// advertises `Conflux=1` only when it does. Legs of one set may arrive on different
/// shards; their cells cross the node's bounded queues (`proto::conflux::cross`).
pub fn conflux_served(shards: usize) -> bool {
    shards >= 1
}

/// Per-slot leg state: not a leg.
const NONE: u32 = u32::MAX;
/// A leg whose LINK went to the set's home shard, not linked yet.
const PENDING: u32 = u32::MAX - 1;
/// A linked leg of a set owned by another shard (its streams live there).
const REMOTE: u32 = u32::MAX - 2;

/// The previous-hop channel of a stream anchor: none. No channel has this ID (the node's
/// are a shard byte, 24 bits of connection generation and a connection slot, and a slot is
/// never `u32::MAX`), so channel walks (close, idle, padding) never match an anchor.
const ANCHOR_CHAN: ChanId = ChanId(u64::MAX);

/// What [`RelayCore::close`] does with a circuit once its conflux part is done.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum CfxClose {
    /// Close it as any circuit.
    Close,
    /// Keep its slot as its set's stream anchor ([`RelayCore::cfx_anchor`]).
    Anchor,
    /// It is a stream anchor, now freed: no channel to tell.
    FreeAnchor,
}

/// A multiplexed message held in the out-of-order queue or carried to another shard.
/// Fixed size, so holding or carrying one allocates nothing.
#[derive(Clone, PartialEq, Eq)]
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

    /// A message encoded by `write` (as [`RelayCore::originate`]'s callers write one).
    fn encode(
        cmd: RelayCmd,
        sid: u16,
        write: impl FnOnce(&mut [u8]) -> Result<usize, CellError>,
    ) -> Option<Held> {
        let mut h = Held {
            cmd,
            sid,
            len: 0,
            data: [0; v0::MAX_DATA_LEN],
        };
        // The smaller of the two formats' bodies, so the leg's shard can send it in either.
        let max = v1::max_data_len(cmd).min(v0::MAX_DATA_LEN);
        let n = write(&mut h.data[..max]).ok()?;
        h.len = n.min(max) as u16;
        Some(h)
    }

    fn data(&self) -> &[u8] {
        &self.data[..self.len as usize]
    }
}

/// Not the bytes: they may be a client's traffic (SafeLogging).
impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Held({:?}, stream {}, {} bytes)",
            self.cmd, self.sid, self.len
        )
    }
}

/// A conflux message from one shard's core to another's ([`super::Action::Cfx`], carried
/// by the node's bounded cross-shard queues; [`RelayCore::handle_cfx_msg`] takes it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfluxMsg(CfxMsg<CircHandle, Held>);

impl ConfluxMsg {
    /// Whether it carries a relay cell (DATA, stream commands, SWITCH): what the node's
    /// cell counters and overflow bound count, and what its pool charges while held.
    pub fn carries_cell(&self) -> bool {
        self.0.carries_cell()
    }

    /// The leg (a circuit of the sending shard) whose [`CfxMsg::LegState`] this is: the
    /// node's overflow keeps only the latest one waiting per leg.
    pub fn leg_state_of(&self) -> Option<CircHandle> {
        self.0.leg_state_of().map(|l| l.circ)
    }

    /// The leg (a circuit of the sending shard) this message speaks for
    /// ([`CfxMsg::from_leg`]).
    pub fn from_leg(&self) -> Option<CircHandle> {
        self.0.from_leg().map(|l| l.circ)
    }

    /// A [`CfxMsg::LegState`] (for the overflow's tests).
    #[cfg(test)]
    pub(crate) fn leg_state_for_tests(
        leg: LegRef<CircHandle>,
        state: crate::proto::conflux::LegSendState,
        rtt_usec: u64,
        sends_done: u64,
    ) -> Self {
        ConfluxMsg(CfxMsg::LegState {
            leg,
            state,
            rtt_usec,
            sends_done,
        })
    }

    /// A [`CfxMsg::LinkedAck`] (for the overflow's tests).
    #[cfg(test)]
    pub(crate) fn linked_ack_for_tests(leg: LegRef<CircHandle>, rtt_usec: u64) -> Self {
        ConfluxMsg(CfxMsg::LinkedAck { leg, rtt_usec })
    }

    /// A [`CfxMsg::LinkedAck`]'s leg and RTT (for the overflow's tests).
    #[cfg(test)]
    pub(crate) fn read_linked_ack_for_tests(&self) -> Option<(LegRef<CircHandle>, u64)> {
        match &self.0 {
            CfxMsg::LinkedAck { leg, rtt_usec } => Some((*leg, *rtt_usec)),
            _ => None,
        }
    }

    /// A [`CfxMsg::LegState`]'s leg, state, RTT and `sends_done` (for the overflow's tests).
    #[cfg(test)]
    pub(crate) fn read_leg_state_for_tests(
        &self,
    ) -> Option<(
        LegRef<CircHandle>,
        crate::proto::conflux::LegSendState,
        u64,
        u64,
    )> {
        match &self.0 {
            CfxMsg::LegState {
                leg,
                state,
                rtt_usec,
                sends_done,
            } => Some((*leg, *state, *rtt_usec, *sends_done)),
            _ => None,
        }
    }
}

/// A leg slot: [`NONE`], [`PENDING`], [`REMOTE`], or the slot of its set's stream owner.
#[derive(Clone, Copy)]
struct LegSlot {
    owner: u32,
    /// The set, for a leg of a set owned here (kept after the set table forgot the leg, so
    /// its close can still find the set).
    set: Option<SetKey>,
    /// The circuit closed and its slot is the set's stream anchor (`owner` is itself).
    anchor: bool,
}

const NO_LEG: LegSlot = LegSlot {
    owner: NONE,
    set: None,
    anchor: false,
};

/// Action buffers kept for reuse (nesting deeper than this allocates).
const BUFS: usize = 4;

/// One shard's conflux state (inside its [`RelayCore`]).
pub(super) struct ConfluxExit {
    shard: ConfluxShard<CircHandle, Held>,
    limits: CrossLimits,
    /// Per circuit slot; also the per-cell test "is this circuit a leg".
    slots: Vec<LegSlot>,
    /// Origin of the microsecond clock the RTT samples use.
    epoch: Option<Instant>,
    /// The consensus parameter `cfx_enabled` (C tor `conflux_is_enabled` at an exit;
    /// default 1).
    pub(super) cfx_enabled: bool,
    /// Held cells charged to the core's cell pool (see `cfx_metrics`).
    charged: usize,
    /// Action buffers, reused so a cell allocates nothing (a step inside another's
    /// action, such as an END a delivered cell causes, takes the next one).
    bufs: Vec<Vec<CfxAction<CircHandle, Held>>>,
    /// Per set slot (`SetKey::slot`, below `max_sets`): the slot of its stream anchor, or
    /// [`NONE`]. At most one per set, so bounded by `max_sets`; each is a circuit slot.
    anchors: Vec<u32>,
    /// Stream anchors now, and ever made (`fors_relay_conflux_stream_anchors{,_total}`).
    anchors_live: usize,
    anchors_total: u64,
}

impl ConfluxExit {
    pub(super) fn new(max_circuits: usize, key: HomeKey) -> ConfluxExit {
        let sets = Limits {
            // A set has at least one leg; C tor's clients build two.
            max_sets: (max_circuits / 2).max(1),
            // Held cells are ~0.5 KiB each: at most 16 MiB per shard.
            ooo_pool_cells: (max_circuits.saturating_mul(64)).clamp(2048, 32 * 1024),
            ..Limits::default()
        };
        let limits = CrossLimits {
            sets,
            max_local_legs: max_circuits.max(1),
            max_dir: (max_circuits / 2).max(1),
        };
        ConfluxExit {
            shard: ConfluxShard::new(0, 1, limits, key),
            limits,
            slots: vec![NO_LEG; max_circuits],
            epoch: None,
            cfx_enabled: true,
            charged: 0,
            bufs: (0..BUFS).map(|_| Vec::with_capacity(16)).collect(),
            anchors: vec![NONE; sets.max_sets],
            anchors_live: 0,
            anchors_total: 0,
        }
    }

    /// The node told the core its shard and the shard count (before any circuit).
    pub(super) fn set_shards(&mut self, me: ShardNo, shards: usize) {
        if (me, shards) != (self.shard.me(), self.shard.shards()) {
            let key = self.shard.home_key();
            self.shard = ConfluxShard::new(me, shards, self.limits, key);
        }
    }

    /// The set table's counters.
    pub(super) fn stats(&self) -> ConfluxStats {
        self.shard.sets().stats()
    }

    fn take_buf(&mut self) -> Vec<CfxAction<CircHandle, Held>> {
        self.bufs.pop().unwrap_or_default()
    }

    fn give_buf(&mut self, mut b: Vec<CfxAction<CircHandle, Held>>) {
        b.clear();
        if self.bufs.len() < BUFS {
            self.bufs.push(b);
        }
    }

    fn usec(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        // +1: a LINK at the first instant must not look like "no LINKED sent".
        now.saturating_duration_since(epoch).as_micros() as u64 + 1
    }

    fn slot(&self, idx: u32) -> LegSlot {
        self.slots.get(idx as usize).copied().unwrap_or(NO_LEG)
    }

    fn slot_mut(&mut self, idx: u32) -> Option<&mut LegSlot> {
        self.slots.get_mut(idx as usize)
    }

    /// The stream owner of a leg of a set owned here.
    fn stream_owner(&self, idx: u32) -> Option<u32> {
        match self.slot(idx).owner {
            NONE | PENDING | REMOTE => None,
            o => Some(o),
        }
    }

    fn shard_no(&self) -> ShardNo {
        self.shard.me()
    }

    /// The stream anchor of set `set`, if it has one.
    fn anchor_of(&self, set: SetKey) -> Option<u32> {
        let a = *self.anchors.get(set.slot())?;
        let s = self.slot(a);
        (a != NONE && s.anchor && s.set == Some(set)).then_some(a)
    }

    /// Circuit slot `idx` becomes set `set`'s stream anchor; false if the set's slot is
    /// out of range (cannot happen: set slots are below `max_sets`).
    fn make_anchor(&mut self, idx: u32, set: SetKey) -> bool {
        let Some(a) = self.anchors.get_mut(set.slot()) else {
            return false;
        };
        *a = idx;
        self.anchors_live += 1;
        self.anchors_total += 1;
        if let Some(s) = self.slot_mut(idx) {
            *s = LegSlot {
                owner: idx,
                set: Some(set),
                anchor: true,
            };
        }
        true
    }

    /// Slot `idx` stops being a stream anchor (its circuit is about to be freed).
    fn drop_anchor(&mut self, idx: u32) {
        let s = self.slot(idx);
        if !s.anchor {
            return;
        }
        if let Some(set) = s.set {
            if let Some(a) = self.anchors.get_mut(set.slot()) {
                if *a == idx {
                    *a = NONE;
                }
            }
        }
        self.anchors_live -= 1;
        if let Some(s) = self.slot_mut(idx) {
            *s = NO_LEG;
        }
    }

    /// The local legs of set `set` (fixed size).
    fn local_legs(&self, set: SetKey) -> [Option<CircHandle>; MAX_LEGS] {
        let mut out = [None; MAX_LEGS];
        let Some(any) = self.shard.sets().any_leg(set) else {
            return out;
        };
        let me = self.shard_no();
        for (o, l) in out.iter_mut().zip(self.shard.sets().legs_of(any).iter()) {
            *o = l.filter(|l| l.shard == me).map(|l| l.circ);
        }
        out
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
    /// Whether circuit `idx` is a leg, pending or linked (one array read: called per cell).
    pub(super) fn cfx_is_leg(&self, idx: u32) -> bool {
        self.conflux.slot(idx).owner != NONE
    }

    /// Whether slot `idx` is a conflux set's stream anchor (one array read).
    pub(super) fn cfx_is_anchor(&self, idx: u32) -> bool {
        self.conflux.slot(idx).anchor
    }

    /// The circuit whose stream list serves `idx`: its set's stream owner, or itself.
    pub(super) fn cfx_stream_circ(&self, idx: u32) -> u32 {
        self.conflux.stream_owner(idx).unwrap_or(idx)
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

    /// Leg `idx`'s send state and congestion-control EWMA RTT (0: none yet).
    fn cfx_send_state(&self, idx: u32) -> (LegSendState, u64) {
        let (cwnd, inflight, rtt) = self
            .table
            .get(idx)
            .and_then(|c| c.cc.as_deref())
            .map_or((0, 0, 0), |cc| {
                (cc.cwnd(), cc.inflight(), cc.ewma_rtt_usec())
            });
        let state = LegSendState {
            cwnd,
            inflight,
            blocked_on_chan: self.prev_is_congested(idx),
        };
        (state, rtt)
    }

    /// Copies the counters, and keeps the cells held out of order charged to the cell pool,
    /// so `MaxMemInQueues` covers them as C tor's OOM total covers its conflux queues
    /// (`cell_queues_check_size`). Charging never evicts here (an eviction closes circuits,
    /// which would come back here); a pool with no room leaves the rest uncharged until the
    /// next event, and the next queued cell's OOM check sees the pressure.
    fn cfx_metrics(&mut self, now: Instant) {
        let s = self.conflux.stats();
        self.metrics.set_conflux(&s);
        self.metrics.set_conflux_cross(&self.conflux.shard.stats());
        self.metrics.conflux_anchors = self.conflux.anchors_live as u64;
        self.metrics.conflux_anchors_total = self.conflux.anchors_total;
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

    /// Runs `f` on the conflux state with the reused actions buffer, then carries out the
    /// actions it pushed.
    fn cfx_step<T>(
        &mut self,
        io: &mut CoreIo<'_>,
        f: impl FnOnce(&mut ConfluxShard<CircHandle, Held>, &mut Vec<CfxAction<CircHandle, Held>>) -> T,
    ) -> T {
        let mut acts = self.conflux.take_buf();
        let r = f(&mut self.conflux.shard, &mut acts);
        self.cfx_run(&mut acts, io);
        self.conflux.give_buf(acts);
        self.cfx_metrics(io.now);
        r
    }

    /// Carries out the conflux state's actions, in order.
    fn cfx_run(&mut self, acts: &mut Vec<CfxAction<CircHandle, Held>>, io: &mut CoreIo<'_>) {
        for a in acts.drain(..) {
            match a {
                CfxAction::SendLinked { circ, link } => {
                    let Some(idx) = self.table.resolve(circ) else {
                        continue;
                    };
                    self.cfx_linked(idx, circ, io);
                    self.originate(
                        idx,
                        RelayCmd::CONFLUX_LINKED,
                        0,
                        |out| link.encode(out).map_err(cell_err),
                        io,
                    );
                }
                CfxAction::Close { circ, reason } => {
                    let Some(idx) = self.table.resolve(circ) else {
                        continue;
                    };
                    if self.cfx_release(idx) {
                        self.cfx_anchor(idx, reason, true, true, io);
                    } else {
                        self.close(idx, reason, true, true, io);
                    }
                }
                CfxAction::Deliver { set, cmd, msg } => {
                    let Some(sc) = self.cfx_set_circ(set) else {
                        continue;
                    };
                    self.dispatch_stream_msg(sc, cmd, msg.sid, msg.data(), io);
                }
                CfxAction::Originate {
                    circ,
                    switch,
                    cmd,
                    msg,
                } => {
                    let Some(idx) = self.table.resolve(circ) else {
                        continue;
                    };
                    if !self.cfx_send_switch(idx, circ, switch, io) {
                        continue;
                    }
                    if cmd == RelayCmd::DATA {
                        // A remote owner's DATA: its stream lives there, and the owner
                        // decided from this leg's reported window: the cell goes, queued
                        // here if the channel is busy, as a cell sent just before a block.
                        self.package_data_cell(idx, None, msg.sid, msg.data(), true, io);
                    } else {
                        let d = msg.data();
                        self.originate(
                            idx,
                            cmd,
                            msg.sid,
                            |out| {
                                let max = out.len();
                                let out = out.get_mut(..d.len()).ok_or(CellError::TooLong {
                                    what: "conflux message",
                                    len: d.len(),
                                    max,
                                })?;
                                out.copy_from_slice(d);
                                Ok(d.len())
                            },
                            io,
                        );
                    }
                }
                CfxAction::ToShard { shard, msg } => io.out.push(Action::Cfx {
                    to: ShardIdx(shard),
                    msg: ConfluxMsg(msg),
                }),
                // The streams end with the stream owner's circuit, which the same
                // teardown closes; an anchor is freed here, its streams closed as C tor
                // closes a circuit's streams when it is freed (no END: no circuit).
                CfxAction::SetGone { set } => {
                    if let Some(a) = self.conflux.anchor_of(set) {
                        self.conflux.drop_anchor(a);
                        self.close(a, DestroyReason::Finished, false, false, io);
                    }
                }
                CfxAction::Resume { set } => {
                    for l in self.conflux.local_legs(set).into_iter().flatten() {
                        if let Some(idx) = self.table.resolve(l) {
                            self.resume_streams(idx, io);
                        }
                    }
                    if let Some(a) = self.conflux.anchor_of(set) {
                        self.cfx_resume_anchor(a, io);
                    }
                }
            }
        }
    }

    /// A conflux message from shard `from`'s core ([`Action::Cfx`] there).
    pub fn handle_cfx_msg(&mut self, from: ShardIdx, msg: ConfluxMsg, io: &mut CoreIo<'_>) {
        let now = self.conflux.usec(io.now);
        self.cfx_step(io, |s, out| s.on_msg(from.0, msg.0, now, out));
    }

    /// Forgets a full queue refused, sent again from the tick (`ConfluxShard::resend_owed`):
    /// on a quiet shard no conflux message or LINK would carry them.
    pub(super) fn cfx_resend_owed(&mut self, io: &mut CoreIo<'_>) {
        if self.conflux.shard.forgets_owed() > 0 {
            self.cfx_step(io, |s, out| s.resend_owed(out));
        }
    }

    /// A message of ours ([`Action::Cfx`]) that the queue to shard `to` could not take:
    /// a lost cell leaves a gap in a set's sequence, so the set is torn down
    /// (RESOURCELIMIT, counted); control messages resynchronise (see
    /// `ConfluxShard::send_failed`).
    pub fn cfx_cross_refused(&mut self, to: ShardIdx, msg: ConfluxMsg, io: &mut CoreIo<'_>) {
        let now = self.conflux.usec(io.now);
        self.cfx_step(io, |s, out| s.send_failed(to.0, msg.0, now, out));
    }

    /// Leg `idx` is linked: note where its set's streams live. A set kept by a stream
    /// anchor has a local leg again: the streams move to it and the anchor is freed.
    fn cfx_linked(&mut self, idx: u32, circ: CircHandle, io: &mut CoreIo<'_>) {
        let me = self.conflux.shard_no();
        let (owner, set) = match self.conflux.shard.owner_of(circ) {
            Some(o) if o != me => (REMOTE, None),
            _ => {
                let set = self.conflux.shard.set_key(circ);
                let owner = set
                    .and_then(|s| {
                        self.conflux
                            .local_legs(s)
                            .into_iter()
                            .flatten()
                            .filter(|l| *l != circ)
                            .find_map(|l| self.conflux.stream_owner(l.idx))
                    })
                    .unwrap_or(idx);
                (owner, set)
            }
        };
        if let Some(s) = self.conflux.slot_mut(idx) {
            *s = LegSlot {
                owner,
                set,
                anchor: false,
            };
        }
        if let (true, Some(a)) = (owner == idx, set.and_then(|s| self.conflux.anchor_of(s))) {
            self.cfx_move_streams(a, idx);
            self.conflux.drop_anchor(a);
            self.close(a, DestroyReason::Finished, false, false, io);
        }
    }

    /// The circuit holding the streams of set `set` (owned here): a local leg, or the
    /// set's stream anchor.
    fn cfx_set_circ(&self, set: SetKey) -> Option<u32> {
        self.conflux
            .local_legs(set)
            .into_iter()
            .flatten()
            .find_map(|l| self.table.resolve(l).and(self.conflux.stream_owner(l.idx)))
            .or_else(|| self.conflux.anchor_of(set))
    }

    /// Circuit `idx` stops being a leg (the set table already forgot it): if it held its
    /// set's streams and the set lives on with a local leg, the streams move there first
    /// (C tor's legs share the stream list, so the streams survive the leg). True: only
    /// legs on other shards live, so `idx` must stay as the set's stream anchor
    /// ([`RelayCore::cfx_anchor`]) instead of being freed.
    fn cfx_release(&mut self, idx: u32) -> bool {
        let slot = self.conflux.slot(idx);
        if let Some(s) = self.conflux.slot_mut(idx) {
            *s = NO_LEG;
        }
        let (Some(set), true) = (slot.set, slot.owner == idx) else {
            return false;
        };
        let legs = self.conflux.local_legs(set);
        let Some(to) = legs
            .iter()
            .flatten()
            .find_map(|l| self.table.resolve(*l).filter(|&i| i != idx))
        else {
            // Only legs on other shards are left (C tor keeps the set and its streams
            // when `cfx_del_leg` does): the streams stay on this slot, now an anchor.
            return self.conflux.shard.sets().is_live(set) && self.conflux.make_anchor(idx, set);
        };
        self.cfx_move_streams(idx, to);
        for l in legs.iter().flatten() {
            if let Some(s) = self.conflux.slot_mut(l.idx) {
                if s.owner == idx {
                    s.owner = to;
                }
            }
        }
        false
    }

    /// Circuit `idx`, its set's stream owner, closed while only legs on other shards keep
    /// the set: its channel side goes as in [`RelayCore::close`] (queues freed, DESTROY
    /// sent, index keys and keys dropped, padding stopped), and its slot stays with its
    /// stream list, congestion-control state (the streams' XON/XOFF) and set link. No cell
    /// can reach it; [`CfxAction::SetGone`], a new local leg, or its own close (the OOM
    /// handler: the set goes with it) frees it.
    pub(super) fn cfx_anchor(
        &mut self,
        idx: u32,
        reason: DestroyReason,
        tell_prev: bool,
        tell_next: bool,
        io: &mut CoreIo<'_>,
    ) {
        let Some(c) = self.table.get_mut(idx) else {
            return;
        };
        let (chan, id, next, waiting) = (c.prev_chan, c.prev_circ_id, c.next, c.waiting);
        c.prev_chan = ANCHOR_CHAN;
        c.next = Next::None;
        c.crypto = None;
        c.waiting = false;
        c.queued -= (c.q_prev.len() + c.q_next.len()) as u32;
        let mut q_prev = ::core::mem::take(&mut c.q_prev);
        let mut q_next = ::core::mem::take(&mut c.q_next);
        let mut pad = ::core::mem::take(&mut c.pad);
        self.pool.clear(&mut q_prev);
        self.pool.clear(&mut q_next);
        self.circpad_closed(&mut pad);
        self.table.remove_key(chan, id);
        if waiting {
            if let Some(p) = self.waiting.iter().position(|&w| w == idx) {
                self.waiting.swap_remove(p);
            }
        }
        if tell_prev {
            self.metrics.destroys_sent += 1;
            io.out.push(Action::SendCell {
                chan,
                shard: self.cfg.shard,
                circ_id: id,
                cmd: crate::cell::ChanCmd::DESTROY,
                body: super::destroy_body(reason),
            });
        }
        if let Next::Open(h) = next {
            if self.table.lookup(h.chan, h.circ_id) == Some((idx, Side::Next)) {
                self.table.remove_key(h.chan, h.circ_id);
            }
            if tell_next {
                self.metrics.destroys_sent += 1;
                io.out.push(Action::SendCell {
                    chan: h.chan,
                    shard: h.shard,
                    circ_id: h.circ_id,
                    cmd: crate::cell::ChanCmd::DESTROY,
                    body: super::destroy_body(reason),
                });
            }
        }
        self.update_queue_metrics();
        self.cfx_metrics(io.now);
    }

    /// Resumes reading on anchor `a`'s paused streams that may send (a remote leg
    /// reported room: [`CfxAction::Resume`]; an XON): `stream_data` then asks the set's
    /// algorithm for a leg, and pauses them again if none may send.
    pub(super) fn cfx_resume_anchor(&mut self, a: u32, io: &mut CoreIo<'_>) {
        let Some(c) = self.table.get(a) else {
            return;
        };
        let mut at = c.streams_head;
        while let Some(h) = self.streams.handle_at(at) {
            let s = self.streams.get_mut(h).expect("live");
            at = s.next_in_circ;
            if s.read_paused && !s.flow.xoff_received {
                s.read_paused = false;
                io.out.push(Action::ResumeStreamRead { stream: h });
            }
        }
    }

    /// Sends the SWITCH a choice asked for on leg `idx` before its message. False: it
    /// could not be sent and the set was torn down (TROVE-2026-017).
    fn cfx_send_switch(
        &mut self,
        idx: u32,
        circ: CircHandle,
        switch: Option<Switch>,
        io: &mut CoreIo<'_>,
    ) -> bool {
        let Some(sw) = switch else {
            return true;
        };
        let sent = self.originate(
            idx,
            RelayCmd::CONFLUX_SWITCH,
            0,
            |out| sw.encode(out).map_err(cell_err),
            io,
        );
        if sent.is_some() {
            return true;
        }
        let mut more = self.conflux.take_buf();
        self.conflux.shard.switch_send_failed(circ, &mut more);
        self.cfx_run(&mut more, io);
        self.conflux.give_buf(more);
        false
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
        let now = self.conflux.usec(io.now);
        match cmd {
            RelayCmd::CONFLUX_LINK => {
                let (state, _) = self.cfx_send_state(idx);
                let mut acts = self.conflux.take_buf();
                self.conflux
                    .shard
                    .on_link(h, facts, state, data, now, &mut acts);
                // Pending until LINKED (at once when this shard owns the set).
                if self.conflux.shard.is_leg(h) {
                    if let Some(s) = self.conflux.slot_mut(idx) {
                        s.owner = PENDING;
                    }
                }
                self.cfx_run(&mut acts, io);
                self.conflux.give_buf(acts);
                self.cfx_metrics(io.now);
            }
            RelayCmd::CONFLUX_LINKED => {
                self.cfx_step(io, |s, out| s.on_linked(h, facts, out));
            }
            RelayCmd::CONFLUX_LINKED_ACK => {
                self.cfx_step(io, |s, out| s.on_linked_ack(h, facts, now, out));
            }
            RelayCmd::CONFLUX_SWITCH => {
                self.cfx_step(io, |s, out| s.on_switch(h, facts, data, now, out));
            }
            _ => {}
        }
        self.table.resolve(h).is_some()
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
        let now = self.conflux.usec(io.now);
        let msg = Held::new(cmd, sid, data);
        let unsequenced = self.cfx_step(io, |s, out| s.on_cell(h, cmd, facts, msg, now, out));
        if let Some(m) = unsequenced {
            // Not a leg after all (cannot happen: the caller checked): its own streams.
            self.dispatch_stream_msg(idx, m.cmd, m.sid, m.data(), io);
        }
        self.table.resolve(h).is_some()
    }

    /// The set whose streams `idx` holds, if `idx` is a leg of a set owned here.
    fn cfx_set_of(&self, idx: u32) -> Option<SetKey> {
        let s = self.conflux.slot(idx);
        self.conflux.stream_owner(idx)?;
        s.set
    }

    /// Where the next `cmd` of the streams of `idx`'s set goes (C tor
    /// `conflux_decide_circ_for_send`), with the SWITCH already sent when a local leg was
    /// picked. `None` if `idx` is not such a leg.
    fn cfx_pick(&mut self, idx: u32, cmd: RelayCmd, io: &mut CoreIo<'_>) -> Option<Placed> {
        let set = self.cfx_set_of(idx)?;
        let mut state = [None::<(CircHandle, (LegSendState, u64))>; MAX_LEGS];
        for (s, l) in state.iter_mut().zip(self.conflux.local_legs(set)) {
            if let Some(l) = l {
                if let Some(i) = self.table.resolve(l) {
                    *s = Some((l, self.cfx_send_state(i)));
                }
            }
        }
        let local = |c: CircHandle| {
            state.iter().flatten().find(|(l, _)| *l == c).map_or(
                (
                    LegSendState {
                        cwnd: 0,
                        inflight: 0,
                        blocked_on_chan: true,
                    },
                    0,
                ),
                |s| s.1,
            )
        };
        let pick = self.cfx_step(io, |s, out| s.pick(set, cmd, local, out));
        Some(match pick {
            Pick::Local { circ, switch } => match self.table.resolve(circ) {
                Some(leg) if self.cfx_send_switch(leg, circ, switch, io) => {
                    Placed::Local(leg, circ)
                }
                _ => Placed::Nothing,
            },
            Pick::Remote { leg, switch } => Placed::Remote(leg, switch),
            Pick::Blocked | Pick::Gone => Placed::Nothing,
        })
    }

    /// Sends `msg` on remote leg `leg` of set `set` (its shard packages it).
    fn cfx_send_remote(
        &mut self,
        leg: LegRef<CircHandle>,
        switch: Option<Switch>,
        cmd: RelayCmd,
        msg: Held,
        io: &mut CoreIo<'_>,
    ) {
        self.cfx_step(io, |s, out| s.send_remote(leg, switch, cmd, msg, out));
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
    ) -> Option<()> {
        if !should_multiplex(cmd) {
            return self.originate(idx, cmd, stream_id, write, io).map(drop);
        }
        match self.cfx_pick(idx, cmd, io) {
            None => self.originate(idx, cmd, stream_id, write, io).map(drop),
            Some(Placed::Local(leg, circ)) => {
                self.originate(leg, cmd, stream_id, write, io)?;
                self.conflux.shard.note_sent_local(circ, cmd);
                Some(())
            }
            Some(Placed::Remote(leg, switch)) => {
                let m = Held::encode(cmd, stream_id, write)?;
                self.cfx_send_remote(leg, switch, cmd, m, io);
                Some(())
            }
            Some(Placed::Nothing) => None,
        }
    }

    /// DATA of stream `sid` of `idx`'s set: places one cell of at most `data`'s bytes on
    /// the leg the set's algorithm picks; returns how many bytes went (0: no leg may send,
    /// or the set broke).
    pub(super) fn cfx_stream_data_cell(
        &mut self,
        idx: u32,
        stream: StreamHandle,
        sid: u16,
        data: &[u8],
        io: &mut CoreIo<'_>,
    ) -> usize {
        match self.cfx_pick(idx, RelayCmd::DATA, io) {
            Some(Placed::Local(leg, circ)) => {
                let n = self.package_data_cell(leg, Some(stream), sid, data, false, io);
                if n > 0 {
                    self.conflux.shard.note_sent_local(circ, RelayCmd::DATA);
                }
                n
            }
            Some(Placed::Remote(leg, switch)) => {
                let max = v1::max_data_len(RelayCmd::DATA).min(v0::MAX_DATA_LEN);
                let n = data.len().min(max);
                let m = Held::new(RelayCmd::DATA, sid, &data[..n]);
                self.cfx_send_remote(leg, switch, RelayCmd::DATA, m, io);
                n
            }
            None | Some(Placed::Nothing) => 0,
        }
    }

    /// Leg `idx` of a set owned by another shard: reports its send state there (called
    /// where a SENDME or an unblocked channel may let it send: `resume_streams`). C tor
    /// updates a leg's RTT at each SENDME.
    pub(super) fn cfx_report_state(&mut self, idx: u32, io: &mut CoreIo<'_>) {
        if self.conflux.slot(idx).owner != REMOTE {
            return;
        }
        let h = self.table.handle(idx);
        let (state, rtt) = self.cfx_send_state(idx);
        let now = self.conflux.usec(io.now);
        self.cfx_step(io, |s, out| s.leg_state(h, state, rtt, now, out));
    }

    /// Marks every leg of `idx`'s set that waits on a congested channel, so
    /// `channel_unblocked` resumes the set's streams.
    pub(super) fn cfx_mark_waiting(&mut self, idx: u32) {
        let Some(set) = self.cfx_set_of(idx) else {
            return;
        };
        for l in self.conflux.local_legs(set).into_iter().flatten() {
            if let Some(i) = self.table.resolve(l) {
                if self.prev_is_congested(i) {
                    self.mark_waiting(i);
                }
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
    /// a surviving leg first, or stay on `idx` as the set's stream anchor when only legs
    /// on other shards survive; if it breaks, the other legs close. A stream anchor
    /// closing (the OOM handler) takes its set with it, the legs closed with `reason`.
    pub(super) fn conflux_circuit_closing(
        &mut self,
        idx: u32,
        reason: DestroyReason,
        io: &mut CoreIo<'_>,
    ) -> CfxClose {
        let slot = self.conflux.slot(idx);
        if slot.anchor {
            self.conflux.drop_anchor(idx);
            if let Some(set) = slot.set.filter(|&s| self.conflux.shard.sets().is_live(s)) {
                self.cfx_step(io, |s, out| s.abandon(set, reason, out));
            }
            self.cfx_metrics(io.now);
            return CfxClose::FreeAnchor;
        }
        if !self.cfx_is_leg(idx) {
            return CfxClose::Close;
        }
        let h = self.table.handle(idx);
        let in_flight = self.cfx_facts(idx).data_in_flight;
        let now = self.conflux.usec(io.now);
        let mut acts = self.conflux.take_buf();
        self.conflux.shard.leg_closed(h, in_flight, now, &mut acts);
        // The set table forgot the leg: move its streams before anything else closes.
        let anchor = self.cfx_release(idx);
        self.cfx_run(&mut acts, io);
        self.conflux.give_buf(acts);
        self.cfx_metrics(io.now);
        if anchor {
            CfxClose::Anchor
        } else {
            CfxClose::Close
        }
    }

    /// Circuit `idx` closed (after [`RelayCore::conflux_circuit_closing`]).
    pub(super) fn conflux_circuit_closed(
        &mut self,
        idx: u32,
        _handle: CircHandle,
        _reason: DestroyReason,
        io: &mut CoreIo<'_>,
    ) {
        if let Some(s) = self.conflux.slot_mut(idx) {
            *s = NO_LEG;
        }
        self.cfx_metrics(io.now);
    }
}

/// Where [`RelayCore::cfx_pick`] placed a message.
enum Placed {
    /// On local leg (slot, handle); its SWITCH, if any, was sent.
    Local(u32, CircHandle),
    /// On a remote leg, after this SWITCH (the message goes by `cfx_send_remote`).
    Remote(LegRef<CircHandle>, Option<Switch>),
    /// Nowhere: no leg may send, or the set broke.
    Nothing,
}
