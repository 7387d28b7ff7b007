//! Circuit slots and the index from (channel, circuit ID) to a slot. The index is sized at
//! construction; the slots grow in chunks of [`SLOT_CHUNK`] up to the table's bound as
//! circuits arrive and are never given back (issue #13: a slot is about a kilobyte, so
//! touching the whole bound at start-up cost an idle shard ~70 MB at 65,536 circuits).

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

/// Slots allocated at a time. A chunk is allocated when a circuit arrives and every slot is
/// taken (never per cell); chunks never move, so slot references stay cheap to compute.
pub(super) const SLOT_CHUNK: usize = 1024;

pub(super) struct CircuitTable<C> {
    /// Chunks of [`SLOT_CHUNK`] slots (the last one may be shorter, at `max`).
    chunks: Vec<Box<[Slot<C>]>>,
    /// Slots allocated: the sum of the chunks' lengths.
    allocated: usize,
    /// The table's bound.
    max: usize,
    free: Vec<u32>,
    index: HashMap<(ChanId, CircId), (u32, Side)>,
}

impl<C> CircuitTable<C> {
    pub fn new(max: usize) -> Self {
        let max = max.min(u32::MAX as usize - 1);
        let mut t = CircuitTable {
            chunks: Vec::with_capacity(max.div_ceil(SLOT_CHUNK)),
            allocated: 0,
            max,
            free: Vec::new(),
            // Each circuit has at most two keys. Its buckets are not touched until used.
            index: HashMap::with_capacity(2 * max),
        };
        // One chunk at start-up, so the first circuits allocate nothing.
        t.grow();
        t
    }

    /// Adds a chunk of free slots; false at the bound.
    fn grow(&mut self) -> bool {
        let n = SLOT_CHUNK.min(self.max - self.allocated);
        if n == 0 {
            return false;
        }
        let first = self.allocated as u32;
        self.chunks
            .push((0..n).map(|_| Slot { gen: 0, circ: None }).collect());
        self.allocated += n;
        // Lowest index first, as before the table grew.
        self.free.reserve(n);
        self.free.extend((first..first + n as u32).rev());
        true
    }

    fn slot(&self, idx: u32) -> Option<&Slot<C>> {
        let i = idx as usize;
        self.chunks.get(i / SLOT_CHUNK)?.get(i % SLOT_CHUNK)
    }

    fn slot_mut(&mut self, idx: u32) -> Option<&mut Slot<C>> {
        let i = idx as usize;
        self.chunks.get_mut(i / SLOT_CHUNK)?.get_mut(i % SLOT_CHUNK)
    }

    pub fn len(&self) -> usize {
        self.allocated - self.free.len()
    }

    pub fn lookup(&self, chan: ChanId, id: CircId) -> Option<(u32, Side)> {
        self.index.get(&(chan, id)).copied()
    }

    pub fn contains_key(&self, chan: ChanId, id: CircId) -> bool {
        self.index.contains_key(&(chan, id))
    }

    /// Adds a circuit keyed by its previous hop; `None` if the table is full.
    pub fn insert(&mut self, c: Circuit<C>) -> Option<CircHandle> {
        if self.free.is_empty() && !self.grow() {
            return None;
        }
        let idx = self.free.pop()?;
        self.index
            .insert((c.prev_chan, c.prev_circ_id), (idx, Side::Prev));
        let s = self.slot_mut(idx)?;
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
            gen: self.slot(idx).map_or(0, |s| s.gen),
        }
    }

    pub fn resolve(&self, h: CircHandle) -> Option<u32> {
        let s = self.slot(h.idx)?;
        (s.gen == h.gen && s.circ.is_some()).then_some(h.idx)
    }

    pub fn get(&self, idx: u32) -> Option<&Circuit<C>> {
        self.slot(idx)?.circ.as_ref()
    }

    pub fn get_mut(&mut self, idx: u32) -> Option<&mut Circuit<C>> {
        self.slot_mut(idx)?.circ.as_mut()
    }

    /// The circuits in slots `idx` at once (the CGO kernel crypts cells of several circuits
    /// together); `None` if two indices are equal or a slot is empty. One walk over the
    /// chunks in slot order, so no slot is lent twice.
    pub fn get_disjoint_mut<const N: usize>(
        &mut self,
        idx: [u32; N],
    ) -> Option<[&mut Circuit<C>; N]> {
        let mut order: [usize; N] = std::array::from_fn(|i| i);
        order.sort_unstable_by_key(|&i| idx[i]);
        if order.windows(2).any(|w| idx[w[0]] == idx[w[1]]) {
            return None;
        }
        let mut out: [Option<&mut Circuit<C>>; N] = [const { None }; N];
        let mut chunks = self.chunks.iter_mut();
        // The next chunk `chunks` yields; the chunk `slots` walks and its next slot.
        let mut next_chunk = 0;
        let mut in_chunk = usize::MAX;
        let mut slots: std::slice::IterMut<'_, Slot<C>> = Default::default();
        let mut next_slot = 0;
        for &o in &order {
            let i = idx[o] as usize;
            let (c, l) = (i / SLOT_CHUNK, i % SLOT_CHUNK);
            if c != in_chunk {
                // Ascending slots: `c` is past every chunk walked so far.
                slots = chunks.nth(c - next_chunk)?.iter_mut();
                next_chunk = c + 1;
                in_chunk = c;
                next_slot = 0;
            }
            out[o] = Some(slots.nth(l - next_slot)?.circ.as_mut()?);
            next_slot = l + 1;
        }
        // `order` is a permutation of 0..N: every entry was set above.
        Some(out.map(|c| c.expect("every index walked")))
    }

    /// Removes the circuit and its index keys.
    pub fn remove(&mut self, idx: u32) -> Option<Circuit<C>> {
        let c = self.slot_mut(idx)?.circ.take()?;
        self.index.remove(&(c.prev_chan, c.prev_circ_id));
        if let Next::Open(h) = c.next {
            if self.index.get(&(h.chan, h.circ_id)) == Some(&(idx, Side::Next)) {
                self.index.remove(&(h.chan, h.circ_id));
            }
        }
        self.free.push(idx);
        Some(c)
    }

    /// Number of slots allocated (live or free); valid indices are below this.
    pub fn slot_count(&self) -> u32 {
        self.allocated as u32
    }

    /// Slot indices of live circuits (for rare whole-table walks: channel close, OOM).
    pub fn live(&self) -> impl Iterator<Item = u32> + '_ {
        self.chunks
            .iter()
            .flat_map(|c| c.iter())
            .enumerate()
            .filter(|(_, s)| s.circ.is_some())
            .map(|(i, _)| i as u32)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

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
