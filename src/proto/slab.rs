//! A slab of generation-checked slots that grows in fixed chunks up to a bound and gives
//! wholly free chunks at its top back after a peak (issues #13 and #15): the storage under
//! the shard's circuit table and stream table.
//!
//! - Chunks never move while allocated, so indexing stays one division and two loads.
//! - A slot is taken lowest index first, so after a peak the live entries pack into the low
//!   chunks and the high ones drain; [`ChunkSlab::trim`] then frees the empty chunks at the
//!   top, keeping one empty chunk as hysteresis (a relay oscillating around a chunk boundary
//!   does not allocate and free a chunk at each swing). A live slot is never moved.
//! - Each slot has a generation, bumped on every insert. When a chunk is released, the
//!   highest generation it held is remembered, and a chunk grown again at that place starts
//!   from it: a handle kept from before the release never names a later entry.
//!
//! Allocation happens when an entry arrives and every slot is taken, and release only from
//! the shard's once-a-second housekeeping: never per cell.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

struct Slot<T> {
    gen: u32,
    val: Option<T>,
}

/// Slots in chunks of `CHUNK` (a constant, so indexing is a shift and a mask), at most
/// `max`.
pub struct ChunkSlab<T, const CHUNK: usize> {
    /// Allocated chunks, lowest first (the last may be short, at `max`).
    chunks: Vec<Box<[Slot<T>]>>,
    /// Live entries per allocated chunk.
    live: Vec<u32>,
    /// Per chunk position: the highest generation a released chunk there held.
    gen_floor: Vec<u32>,
    /// Free slot indices of allocated chunks, lowest on top.
    free: BinaryHeap<Reverse<u32>>,
    /// Slots allocated: the sum of the chunks' lengths.
    allocated: usize,
    max: usize,
    /// Chunks given back by `trim` since creation (a metric).
    released: u64,
}

impl<T, const CHUNK: usize> ChunkSlab<T, CHUNK> {
    /// An empty slab bounded at `max` slots with its first chunk allocated.
    pub fn new(max: usize) -> Self {
        const { assert!(CHUNK > 0) };
        let max = max.min(u32::MAX as usize - 1);
        let positions = max.div_ceil(CHUNK);
        let mut s = ChunkSlab {
            chunks: Vec::with_capacity(positions),
            live: Vec::with_capacity(positions),
            gen_floor: Vec::with_capacity(positions),
            free: BinaryHeap::new(),
            allocated: 0,
            max,
            released: 0,
        };
        // One chunk at start-up, so the first entries allocate nothing.
        s.grow();
        s
    }

    /// Adds a chunk of free slots; false at the bound.
    fn grow(&mut self) -> bool {
        let n = CHUNK.min(self.max - self.allocated);
        if n == 0 {
            return false;
        }
        let pos = self.chunks.len();
        if self.gen_floor.len() == pos {
            self.gen_floor.push(0);
        }
        let gen = self.gen_floor[pos];
        self.chunks
            .push((0..n).map(|_| Slot { gen, val: None }).collect());
        self.live.push(0);
        let first = self.allocated as u32;
        self.allocated += n;
        self.free.reserve(n);
        self.free.extend((first..first + n as u32).map(Reverse));
        true
    }

    #[inline]
    fn slot(&self, idx: u32) -> Option<&Slot<T>> {
        let i = idx as usize;
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)
    }

    #[inline]
    fn slot_mut(&mut self, idx: u32) -> Option<&mut Slot<T>> {
        let i = idx as usize;
        self.chunks.get_mut(i / CHUNK)?.get_mut(i % CHUNK)
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.allocated - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slots allocated (live or free); valid indices are below this.
    pub fn allocated(&self) -> usize {
        self.allocated
    }

    /// The bound.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Chunks released by [`ChunkSlab::trim`] so far.
    pub fn chunks_released(&self) -> u64 {
        self.released
    }

    /// Stores `v` in the lowest free slot (growing a chunk if none is free): its index and
    /// generation, or `None` at the bound.
    pub fn insert(&mut self, v: T) -> Option<(u32, u32)> {
        if self.free.is_empty() && !self.grow() {
            return None;
        }
        let Reverse(idx) = self.free.pop()?;
        let s = self.slot_mut(idx)?;
        s.gen = s.gen.wrapping_add(1);
        s.val = Some(v);
        let gen = s.gen;
        self.live[idx as usize / CHUNK] += 1;
        Some((idx, gen))
    }

    /// The generation of slot `idx` (live or not), if allocated.
    pub fn gen(&self, idx: u32) -> Option<u32> {
        self.slot(idx).map(|s| s.gen)
    }

    #[inline]
    pub fn get(&self, idx: u32) -> Option<&T> {
        self.slot(idx)?.val.as_ref()
    }

    #[inline]
    pub fn get_mut(&mut self, idx: u32) -> Option<&mut T> {
        self.slot_mut(idx)?.val.as_mut()
    }

    /// The entries in slots `idx` at once (the CGO kernel crypts cells of several circuits
    /// together); `None` if two indices are equal or a slot is empty. One walk over the
    /// chunks in slot order, so no slot is lent twice.
    pub fn get_disjoint_mut<const N: usize>(&mut self, idx: [u32; N]) -> Option<[&mut T; N]> {
        let mut order: [usize; N] = std::array::from_fn(|i| i);
        order.sort_unstable_by_key(|&i| idx[i]);
        if order.windows(2).any(|w| idx[w[0]] == idx[w[1]]) {
            return None;
        }
        let mut out: [Option<&mut T>; N] = [const { None }; N];
        let mut chunks = self.chunks.iter_mut();
        // The next chunk `chunks` yields; the chunk `slots` walks and its next slot.
        let mut next_chunk = 0;
        let mut in_chunk = usize::MAX;
        let mut slots: std::slice::IterMut<'_, Slot<T>> = Default::default();
        let mut next_slot = 0;
        for &o in &order {
            let i = idx[o] as usize;
            let (c, l) = (i / CHUNK, i % CHUNK);
            if c != in_chunk {
                // Ascending slots: `c` is past every chunk walked so far.
                slots = chunks.nth(c - next_chunk)?.iter_mut();
                next_chunk = c + 1;
                in_chunk = c;
                next_slot = 0;
            }
            out[o] = Some(slots.nth(l - next_slot)?.val.as_mut()?);
            next_slot = l + 1;
        }
        // `order` is a permutation of 0..N: every entry was set above.
        Some(out.map(|v| v.expect("every index walked")))
    }

    /// The entry at `idx` if its generation is `gen`.
    pub fn get_checked(&self, idx: u32, gen: u32) -> Option<&T> {
        let s = self.slot(idx)?;
        if s.gen != gen {
            return None;
        }
        s.val.as_ref()
    }

    pub fn get_checked_mut(&mut self, idx: u32, gen: u32) -> Option<&mut T> {
        let s = self.slot_mut(idx)?;
        if s.gen != gen {
            return None;
        }
        s.val.as_mut()
    }

    /// Takes the entry out of slot `idx`, freeing the slot.
    pub fn remove(&mut self, idx: u32) -> Option<T> {
        let v = self.slot_mut(idx)?.val.take()?;
        self.live[idx as usize / CHUNK] -= 1;
        self.free.push(Reverse(idx));
        Some(v)
    }

    /// Indices of live entries, lowest first.
    pub fn live(&self) -> impl Iterator<Item = u32> + '_ {
        self.chunks
            .iter()
            .flat_map(|c| c.iter())
            .enumerate()
            .filter(|(_, s)| s.val.is_some())
            .map(|(i, _)| i as u32)
    }

    /// Frees the wholly free chunks at the top but one (and never the first): returns how
    /// many. Work is bounded by the free list's length, and done at most once a second by
    /// the caller.
    pub fn trim(&mut self) -> usize {
        let empty_top = self.live.iter().rev().take_while(|&&n| n == 0).count();
        // Keep one empty chunk as a spare, and the first chunk in any case.
        let n = empty_top.saturating_sub(1).min(self.chunks.len() - 1);
        if n == 0 {
            return 0;
        }
        for _ in 0..n {
            let pos = self.chunks.len() - 1;
            let c = self.chunks.pop().expect("n < chunks");
            self.live.pop();
            self.gen_floor[pos] = c.iter().map(|s| s.gen).max().unwrap_or(0);
            self.allocated -= c.len();
        }
        let bound = self.allocated as u32;
        self.free.retain(|&Reverse(i)| i < bound);
        // The free list's own storage follows the slab down.
        self.free.shrink_to(self.allocated);
        self.released += n as u64;
        n
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn lowest_slot_first_and_top_chunks_released_but_one() {
        let mut s = ChunkSlab::<u32, 4>::new(10 * 4 + 2);
        assert_eq!(s.allocated(), 4);
        let h: Vec<_> = (0..42).map(|v| s.insert(v).unwrap()).collect();
        assert_eq!(s.allocated(), 42);
        assert!(s.insert(99).is_none(), "the bound holds");
        // Free everything but slots 1 and 5: chunks 0 and 1 stay live.
        for &(i, _) in &h {
            if i != 1 && i != 5 {
                s.remove(i).unwrap();
            }
        }
        assert_eq!(
            s.trim(),
            8,
            "chunks 3..=10 (the last one short); chunk 2 kept"
        );
        assert_eq!((s.allocated(), s.len(), s.chunks_released()), (12, 2, 8));
        assert_eq!(s.trim(), 0, "the spare stays");
        // Live handles are intact; stale ones in kept and released chunks do not resolve.
        assert_eq!(s.get_checked(1, h[1].1), Some(&1));
        assert_eq!(s.get_checked(5, h[5].1), Some(&5));
        assert!(s.get_checked(2, h[2].1).is_none());
        assert!(s.get(30).is_none() && s.get_checked(30, h[30].1).is_none());
        // Lowest free slot first: slot 0, then 2.
        assert_eq!(s.insert(100).unwrap().0, 0);
        assert_eq!(s.insert(101).unwrap().0, 2);
    }

    #[test]
    fn a_regrown_chunk_never_matches_a_handle_from_before_the_release() {
        // Three chunks filled and emptied: chunks 2 and 1 go, chunk 0 stays as the spare.
        let mut s = ChunkSlab::<u8, 4>::new(12);
        let first: Vec<_> = (0..12).map(|_| s.insert(1).unwrap()).collect();
        for &(i, _) in &first {
            s.remove(i);
        }
        assert_eq!(s.trim(), 2, "chunks 2 and 1; chunk 0 is the spare");
        let again: Vec<_> = (0..12).map(|_| s.insert(2).unwrap()).collect();
        for (a, b) in first.iter().zip(&again) {
            assert_eq!(a.0, b.0);
            assert_ne!(a.1, b.1, "slot {} reused with an old generation", a.0);
            assert!(s.get_checked(a.0, a.1).is_none());
        }
    }

    /// Random inserts and removes around a peak: every live handle resolves to its value
    /// after each trim, no stale one does, and the slab ends at most two chunks above its
    /// live entries' top chunk.
    #[test]
    fn random_churn_keeps_live_handles_and_drains() {
        let seed: u64 = 0x51ab_5eed;
        eprintln!("seed {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        const CHUNK: usize = 16;
        let mut s = ChunkSlab::<u64, CHUNK>::new(64 * CHUNK);
        let mut live: Vec<(u32, u32, u64)> = Vec::new();
        let mut dead: Vec<(u32, u32)> = Vec::new();
        for step in 0..20_000u64 {
            // Grow to a peak for the first half, then shrink.
            let grow = if step < 10_000 { 0.7 } else { 0.3 };
            if rng.gen_bool(grow) || live.is_empty() {
                if let Some((i, g)) = s.insert(step) {
                    live.push((i, g, step));
                }
            } else {
                let k = rng.gen_range(0..live.len());
                let (i, g, v) = live.swap_remove(k);
                assert_eq!(s.remove(i), Some(v));
                dead.push((i, g));
            }
            if step % 500 == 0 {
                s.trim();
                for &(i, g, v) in &live {
                    assert_eq!(s.get_checked(i, g), Some(&v));
                }
                for &(i, g) in dead.iter().rev().take(2000) {
                    assert!(s.get_checked(i, g).is_none());
                }
            }
        }
        s.trim();
        assert_eq!(s.len(), live.len());
        let top = live.iter().map(|l| l.0 as usize / CHUNK).max().unwrap_or(0);
        assert!(s.allocated() <= (top + 2) * CHUNK);
        assert!(s.chunks_released() > 0);
    }
}
