//! Circuit slots and the index from (channel, circuit ID) to a slot. Both are sized at
//! construction and never grow.

use std::collections::HashMap;

use super::{ChanId, NextHop, PeerIdentity};
use crate::cell::CircId;
use crate::proto::flow::{CongestionControl, SendmeRandomness, SendmeTags, Windows};

use super::pool::CellQueue;

/// A circuit as the shard knows it: slot index plus generation, so a stale handle (kept by
/// the shard across an extend or a DNS lookup) never reaches a reused slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CircHandle {
    pub(crate) idx: u32,
    pub(crate) gen: u32,
}

impl CircHandle {
    /// A plain number for logs and caller-side maps.
    pub fn as_u64(self) -> u64 {
        (u64::from(self.gen) << 32) | u64::from(self.idx)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CircState {
    /// CREATE2 received; the onionskin waits in the onion queue.
    PendingOnion,
    /// Keys established; relay cells flow.
    Open,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    None,
    /// `Action::Extend` issued, waiting for `extend_result`.
    Extending,
    Open(NextHop),
}

pub(super) struct Circuit<C> {
    pub state: CircState,
    pub prev_chan: ChanId,
    pub prev_circ_id: CircId,
    pub prev_peer: PeerIdentity,
    /// Built with CREATE_FAST or from a client channel: never exit from it.
    pub first_hop: bool,
    pub crypto: Option<C>,
    /// RELAY_EARLY cells still allowed from the client (tor-spec: at most 8).
    pub relay_early_left: u8,
    pub next: Next,
    /// Circuit-level windows for DATA we deliver to / package from our streams.
    pub windows: Windows,
    pub tags: SendmeTags,
    pub randomness: SendmeRandomness,
    /// Congestion control (prop 324), if the client negotiated it in ntor-v3: then it,
    /// not `windows.package`, bounds the DATA we send, and `windows` delivers with the
    /// negotiated `sendme_inc`. Boxed: most circuits (middles, old clients) have none.
    pub cc: Option<Box<CongestionControl>>,
    /// DATA cells of this circuit in the originate stage now (`staged.rs`); 0 between flushes.
    pub staged: u16,
    /// Head of this circuit's stream list (stream table slot), or `u32::MAX`.
    pub streams_head: u32,
    /// Cells waiting for the previous-hop channel, and for the next-hop channel.
    pub q_prev: CellQueue,
    pub q_next: CellQueue,
    /// All cells this circuit holds in the pool (queues plus its streams' pending data).
    pub queued: u32,
    /// Listed in the core's waiting list (see `RelayCore::mark_waiting`).
    pub waiting: bool,
    /// Circuit padding at this hop (`padding.rs`).
    pub pad: super::padding::PadState,
}

struct Slot<C> {
    gen: u32,
    circ: Option<Circuit<C>>,
}

/// Which side of a circuit a (channel, circuit ID) pair names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Prev,
    Next,
}

pub(super) struct CircuitTable<C> {
    slots: Vec<Slot<C>>,
    free: Vec<u32>,
    index: HashMap<(ChanId, CircId), (u32, Side)>,
}

impl<C> CircuitTable<C> {
    pub fn new(max: usize) -> Self {
        let max = max.min(u32::MAX as usize - 1);
        CircuitTable {
            slots: (0..max).map(|_| Slot { gen: 0, circ: None }).collect(),
            free: (0..max as u32).rev().collect(),
            // Each circuit has at most two keys.
            index: HashMap::with_capacity(2 * max),
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    pub fn lookup(&self, chan: ChanId, id: CircId) -> Option<(u32, Side)> {
        self.index.get(&(chan, id)).copied()
    }

    pub fn contains_key(&self, chan: ChanId, id: CircId) -> bool {
        self.index.contains_key(&(chan, id))
    }

    /// Adds a circuit keyed by its previous hop; `None` if the table is full.
    pub fn insert(&mut self, c: Circuit<C>) -> Option<CircHandle> {
        let idx = self.free.pop()?;
        self.index
            .insert((c.prev_chan, c.prev_circ_id), (idx, Side::Prev));
        let s = &mut self.slots[idx as usize];
        s.gen = s.gen.wrapping_add(1);
        s.circ = Some(c);
        Some(CircHandle { idx, gen: s.gen })
    }

    pub fn set_next_key(&mut self, idx: u32, chan: ChanId, id: CircId) {
        self.index.insert((chan, id), (idx, Side::Next));
    }

    pub fn remove_key(&mut self, chan: ChanId, id: CircId) {
        self.index.remove(&(chan, id));
    }

    pub fn handle(&self, idx: u32) -> CircHandle {
        CircHandle {
            idx,
            gen: self.slots[idx as usize].gen,
        }
    }

    pub fn resolve(&self, h: CircHandle) -> Option<u32> {
        let s = self.slots.get(h.idx as usize)?;
        (s.gen == h.gen && s.circ.is_some()).then_some(h.idx)
    }

    pub fn get(&self, idx: u32) -> Option<&Circuit<C>> {
        self.slots.get(idx as usize)?.circ.as_ref()
    }

    pub fn get_mut(&mut self, idx: u32) -> Option<&mut Circuit<C>> {
        self.slots.get_mut(idx as usize)?.circ.as_mut()
    }

    /// Removes the circuit and its index keys.
    pub fn remove(&mut self, idx: u32) -> Option<Circuit<C>> {
        let c = self.slots.get_mut(idx as usize)?.circ.take()?;
        self.index.remove(&(c.prev_chan, c.prev_circ_id));
        if let Next::Open(h) = c.next {
            if self.index.get(&(h.chan, h.circ_id)) == Some(&(idx, Side::Next)) {
                self.index.remove(&(h.chan, h.circ_id));
            }
        }
        self.free.push(idx);
        Some(c)
    }

    /// Number of slots (live or free); valid indices are below this.
    pub fn slot_count(&self) -> u32 {
        self.slots.len() as u32
    }

    /// Slot indices of live circuits (for rare whole-table walks: channel close, OOM).
    pub fn live(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.circ.is_some())
            .map(|(i, _)| i as u32)
    }
}
