//! Circuit slots and the index from (channel, circuit ID) to a slot. The index is sized at
//! construction; the slots grow in chunks of [`SLOT_CHUNK`] up to the table's bound as
//! circuits arrive (issue #13: a slot is about a kilobyte, so touching the whole bound at
//! start-up cost an idle shard ~70 MB at 65,536 circuits), and empty chunks at the top go
//! back after a peak (issue #15; `proto::slab`).

use std::collections::HashMap;

use super::{ChanId, NextHop, PeerIdentity};
use crate::cell::CircId;
use crate::proto::flow::{CongestionControl, SendmeRandomness, SendmeTags, Windows};

use super::pool::CellQueue;
use crate::proto::slab::ChunkSlab;

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

/// Which side of a circuit a (channel, circuit ID) pair names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Prev,
    Next,
}

/// Slots allocated at a time. A chunk is allocated when a circuit arrives and every slot is
/// taken (never per cell); chunks never move, so slot references stay cheap to compute.
pub(super) const SLOT_CHUNK: usize = 1024;

pub(super) struct CircuitTable<C> {
    /// The slots: grown in chunks up to the bound, lowest free slot first, empty top chunks
    /// given back by [`CircuitTable::trim`] (`proto::slab`).
    slots: ChunkSlab<Circuit<C>, SLOT_CHUNK>,
    index: HashMap<(ChanId, CircId), (u32, Side)>,
}

impl<C> CircuitTable<C> {
    pub fn new(max: usize) -> Self {
        let slots = ChunkSlab::new(max);
        CircuitTable {
            // Each circuit has at most two keys. Its buckets are not touched until used.
            index: HashMap::with_capacity(2 * slots.max()),
            slots,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn lookup(&self, chan: ChanId, id: CircId) -> Option<(u32, Side)> {
        self.index.get(&(chan, id)).copied()
    }

    pub fn contains_key(&self, chan: ChanId, id: CircId) -> bool {
        self.index.contains_key(&(chan, id))
    }

    /// Adds a circuit keyed by its previous hop; `None` if the table is full.
    pub fn insert(&mut self, c: Circuit<C>) -> Option<CircHandle> {
        let key = (c.prev_chan, c.prev_circ_id);
        let (idx, gen) = self.slots.insert(c)?;
        self.index.insert(key, (idx, Side::Prev));
        Some(CircHandle { idx, gen })
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
            gen: self.slots.gen(idx).unwrap_or(0),
        }
    }

    pub fn resolve(&self, h: CircHandle) -> Option<u32> {
        self.slots.get_checked(h.idx, h.gen).map(|_| h.idx)
    }

    pub fn get(&self, idx: u32) -> Option<&Circuit<C>> {
        self.slots.get(idx)
    }

    pub fn get_mut(&mut self, idx: u32) -> Option<&mut Circuit<C>> {
        self.slots.get_mut(idx)
    }

    /// The circuits in slots `idx` at once (the CGO kernel crypts cells of several circuits
    /// together); `None` if two indices are equal or a slot is empty.
    pub fn get_disjoint_mut<const N: usize>(
        &mut self,
        idx: [u32; N],
    ) -> Option<[&mut Circuit<C>; N]> {
        self.slots.get_disjoint_mut(idx)
    }

    /// Removes the circuit and its index keys.
    pub fn remove(&mut self, idx: u32) -> Option<Circuit<C>> {
        let c = self.slots.remove(idx)?;
        self.index.remove(&(c.prev_chan, c.prev_circ_id));
        if let Next::Open(h) = c.next {
            if self.index.get(&(h.chan, h.circ_id)) == Some(&(idx, Side::Next)) {
                self.index.remove(&(h.chan, h.circ_id));
            }
        }
        Some(c)
    }

    /// Number of slots allocated (live or free); valid indices are below this.
    pub fn slot_count(&self) -> u32 {
        self.slots.allocated() as u32
    }

    /// Slot indices of live circuits (for rare whole-table walks: channel close, OOM).
    pub fn live(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots.live()
    }

    /// Gives empty slot chunks at the top back (one kept spare); the chunks released.
    /// Called from the shard's once-a-second housekeeping, never per cell.
    pub fn trim(&mut self) -> usize {
        self.slots.trim()
    }

    /// Chunks [`CircuitTable::trim`] released so far.
    pub fn chunks_released(&self) -> u64 {
        self.slots.chunks_released()
    }
}

impl<C: super::HopCrypto, N: super::NetworkView> super::RelayCore<C, N> {
    /// Gives memory back after a peak (issues #13, #15): empty chunks at the top of the
    /// circuit and stream tables (one spare kept each) and wholly free cell-pool chunks
    /// (a chunk's worth of free buffers kept). Live slots never move, so handles stay
    /// valid. For the shard's once-a-second housekeeping, never per cell; the work is
    /// bounded by the tables' free lists.
    pub fn trim_memory(&mut self) {
        if self.table.trim() > 0 {
            self.hs.uncover(self.table.slot_count() as usize);
        }
        self.streams.trim();
        self.pool.trim();
        self.pool.publish();
        let m = &mut self.metrics;
        m.circuit_slots_allocated = u64::from(self.table.slot_count());
        m.stream_slots_allocated = self.streams.allocated() as u64;
        m.circuit_chunks_released = self.table.chunks_released();
        m.stream_chunks_released = self.streams.chunks_released();
        m.cell_chunks_released = self.pool.chunks_released();
        self.update_queue_metrics();
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    fn circ(chan: u64, id: u32, rng: &mut rand::rngs::StdRng) -> Circuit<()> {
        Circuit {
            state: CircState::Open,
            prev_chan: ChanId(chan),
            prev_circ_id: CircId(id),
            prev_peer: PeerIdentity::Client,
            first_hop: true,
            crypto: None,
            relay_early_left: 8,
            next: Next::None,
            windows: Windows::circuit(),
            tags: SendmeTags::default(),
            randomness: SendmeRandomness::new(rng),
            staged: 0,
            cc: None,
            streams_head: u32::MAX,
            q_prev: CellQueue::default(),
            q_next: CellQueue::default(),
            queued: 0,
            waiting: false,
            pad: Default::default(),
        }
    }

    #[test]
    fn slots_grow_in_chunks_up_to_the_bound_and_never_move() {
        let seed = 0x7ab1e;
        eprintln!("seed {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let max = 2 * SLOT_CHUNK + 10;
        let mut t = CircuitTable::<()>::new(max);
        // One chunk at start-up, not the whole bound.
        assert_eq!(t.slot_count() as usize, SLOT_CHUNK);
        let mut handles = Vec::new();
        for i in 0..max {
            let h = t
                .insert(circ(1, i as u32, &mut rng))
                .expect("under the bound");
            // Lowest free index first, across chunk boundaries.
            assert_eq!(h.idx as usize, i);
            handles.push(h);
            let chunks = i / SLOT_CHUNK + 1;
            assert_eq!(t.slot_count() as usize, (chunks * SLOT_CHUNK).min(max));
        }
        assert_eq!((t.len(), t.slot_count() as usize), (max, max));
        // The bound holds.
        assert!(t.insert(circ(1, u32::MAX, &mut rng)).is_none());
        assert_eq!(t.slot_count() as usize, max);
        // Lookups and handles reach every chunk, including the short last one.
        for i in [0, SLOT_CHUNK - 1, SLOT_CHUNK, 2 * SLOT_CHUNK + 9] {
            assert_eq!(
                t.lookup(ChanId(1), CircId(i as u32)),
                Some((i as u32, Side::Prev))
            );
            assert_eq!(t.resolve(handles[i]), Some(i as u32));
            assert_eq!(
                t.get(i as u32).map(|c| c.prev_circ_id),
                Some(CircId(i as u32))
            );
        }
        assert!(t.get(max as u32).is_none());
        // A freed slot is reused, and its old handle no longer resolves.
        let old = handles[2 * SLOT_CHUNK + 5];
        assert!(t.remove(old.idx).is_some());
        assert_eq!(t.resolve(old), None);
        assert_eq!(t.live().count(), max - 1);
        let h = t.insert(circ(2, 7, &mut rng)).unwrap();
        assert_eq!(h.idx, old.idx);
        assert_ne!(h.gen, old.gen);
        assert_eq!(t.lookup(ChanId(2), CircId(7)), Some((h.idx, Side::Prev)));
        assert_eq!(t.live().count(), max);
    }

    /// Circuits lent at once across chunks, in any index order; a repeated index or an empty
    /// slot lends none.
    #[test]
    fn disjoint_circuits_across_chunks() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let max = 2 * SLOT_CHUNK + 10;
        let mut t = CircuitTable::<()>::new(max);
        for i in 0..max {
            t.insert(circ(1, i as u32, &mut rng))
                .expect("under the bound");
        }
        let idx = [2 * SLOT_CHUNK + 9, 5, SLOT_CHUNK, 4].map(|i| i as u32);
        let got = t.get_disjoint_mut(idx).expect("distinct live slots");
        for (c, i) in got.into_iter().zip(idx) {
            assert_eq!(c.prev_circ_id, CircId(i));
            c.relay_early_left = 3;
        }
        assert_eq!(t.get(5).map(|c| c.relay_early_left), Some(3));
        assert!(t.get_disjoint_mut([7, 9, 7]).is_none());
        t.remove(9);
        assert!(t.get_disjoint_mut([7, 9]).is_none());
        assert!(t.get_disjoint_mut([7, max as u32]).is_none());
        assert_eq!(
            t.get_disjoint_mut([8]).map(|[c]| c.prev_circ_id),
            Some(CircId(8))
        );
    }

    /// Issue #15: after a peak the empty top chunks go back (one spare kept); circuits
    /// left in the low chunks keep their slots, handles and index keys; handles of closed
    /// circuits resolve nowhere, even once their chunk is allocated again.
    #[test]
    fn empty_top_chunks_are_released_after_a_peak() {
        let seed = 0x5417_0015;
        eprintln!("seed {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let max = 6 * SLOT_CHUNK;
        let mut t = CircuitTable::<()>::new(max);
        let handles: Vec<_> = (0..max)
            .map(|i| t.insert(circ(1, i as u32, &mut rng)).unwrap())
            .collect();
        assert_eq!(t.trim(), 0, "full: nothing to give back");
        // Keep a random tenth of the first chunk, close everything else.
        let keep: Vec<usize> = (0..SLOT_CHUNK).filter(|_| rng.gen_bool(0.1)).collect();
        for (i, h) in handles.iter().enumerate() {
            if !keep.contains(&i) {
                assert!(t.remove(h.idx).is_some());
            }
        }
        assert_eq!(
            t.trim(),
            4,
            "chunks 2..=5 released, chunk 1 kept as the spare"
        );
        assert_eq!(t.slot_count() as usize, 2 * SLOT_CHUNK);
        assert_eq!((t.len(), t.chunks_released()), (keep.len(), 4));
        assert_eq!(t.trim(), 0);
        for &i in &keep {
            assert_eq!(t.resolve(handles[i]), Some(i as u32));
            assert_eq!(
                t.lookup(ChanId(1), CircId(i as u32)),
                Some((i as u32, Side::Prev))
            );
        }
        assert_eq!(t.live().count(), keep.len());
        // New circuits fill the lowest free slots; past the spare the table grows again,
        // and no handle from before the release matches a new circuit.
        let again: Vec<_> = (0..max - keep.len())
            .map(|i| t.insert(circ(2, i as u32, &mut rng)).unwrap())
            .collect();
        assert_eq!(t.slot_count() as usize, max);
        for h in &again {
            assert!(
                !handles.contains(h),
                "stale handle {h:?} matches a new circuit"
            );
        }
        for (i, h) in handles.iter().enumerate() {
            if !keep.contains(&i) {
                assert_eq!(t.resolve(*h), None);
            }
        }
    }

    #[test]
    fn a_small_bound_is_one_short_chunk() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut t = CircuitTable::<()>::new(3);
        assert_eq!(t.slot_count(), 3);
        for i in 0..3 {
            assert!(t.insert(circ(1, i, &mut rng)).is_some());
        }
        assert!(t.insert(circ(1, 9, &mut rng)).is_none());
    }
}
