//! Cell buffers for every queue of a shard, drawn in chunks from one relay-wide budget, and
//! intrusive FIFO queues over them.
//!
//! Every cell a circuit must hold (toward a blocked channel, optimistic DATA waiting for its
//! exit connection, cross-shard overflow) lives in a shard's [`CellPool`]. The pools of all
//! shards share one [`MemBudget`], C tor's `MaxMemInQueues` counted in cell buffers: a pool
//! takes [`CHUNK_CELLS`] buffers at a time from the budget (one atomic update per chunk, no
//! lock and nothing shared per cell), allocates their storage when it first needs them, and
//! gives a chunk back (storage and budget) once it is wholly free and the pool has another
//! chunk's worth free. Each pool reserves its first chunk when it is created and never gives
//! back its last one: a shard always has room for a chunk of cells of its own, so a busy
//! shard holding the rest of the cap cannot make a quiet shard close its circuits. So a busy
//! shard can hold most of the cap, the relay as a whole never holds more than the cap, and
//! an idle relay's RSS stays small (storage is allocated only as cells are queued).
//!
//! Queues link slots by index, so queueing never allocates. Each slot records when its cell
//! was queued (a coarse millisecond stamp, as C's `packed_cell_t::inserted_timestamp`): the
//! OOM handler closes the circuits whose oldest queued cell is oldest. The same stamps
//! time the cells the core releases toward a channel that unblocked: while the core drains
//! ([`CellPool::set_clock`] … [`CellPool::stop_clock`]) each popped cell's wait goes into a
//! small fixed array of buckets ([`QueueDelayCounts`]), the held part of the MetricsPort's
//! cell queueing delay (C tor's `cell-time-in-queue`, from the same kind of stamp).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::cell::{ChanCmd, CELL_BODY_LEN};

const NIL: u32 = u32::MAX;

/// Buffers a pool takes from (and gives back to) the budget at a time.
pub const CHUNK_CELLS: usize = 256;

/// A pool publishes its cells in use to the budget when the count moved this much.
const PUBLISH_STEP: usize = 64;

struct Slot {
    cmd: ChanCmd,
    /// Milliseconds (wrapping) at which the cell was queued; see [`CellPool::head_stamp`].
    stamp: u32,
    next: u32,
    body: [u8; CELL_BODY_LEN],
}

/// Upper bounds, milliseconds, of the buckets in which a pool counts how long the cells it
/// released toward an unblocked channel waited; +Inf follows. Stamps are whole
/// milliseconds, so a cell stamped `a` and released at `b` waited less than `b − a + 1` ms:
/// that is the value bucketed (a cell released within its millisecond counts as under
/// 1 ms). Each bound is one of the MetricsPort histogram's (`metrics::histogram`).
pub const QUEUE_DELAY_BOUNDS_MS: [u32; 12] =
    [1, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000];

/// How long the cells a pool released toward unblocked channels had waited in it. Plain
/// counters on the shard's own pool (no atomic, no allocation); the node copies what was
/// added since its last look into the MetricsPort's histogram at its tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueDelayCounts {
    /// Cells per bucket of [`QUEUE_DELAY_BOUNDS_MS`] (not cumulative); the last is +Inf.
    pub buckets: [u64; QUEUE_DELAY_BOUNDS_MS.len() + 1],
    /// Sum of the stamped waits (`b − a`), milliseconds.
    pub sum_ms: u64,
    /// Cells counted (the sum of `buckets`).
    pub cells: u64,
}

impl QueueDelayCounts {
    fn record(&mut self, waited_ms: u32) {
        let upper = waited_ms.saturating_add(1);
        let slot = QUEUE_DELAY_BOUNDS_MS.partition_point(|&b| b < upper);
        self.buckets[slot] += 1;
        self.sum_ms += u64::from(waited_ms);
        self.cells += 1;
    }
}

/// Memory one queued cell costs, as the budget counts it (C `packed_cell_mem_cost`).
pub const CELL_MEM_COST: u64 = std::mem::size_of::<Slot>() as u64;

/// The relay-wide cap on queued cells (C tor's `MaxMemInQueues`), shared by every shard's
/// pool. Pools reserve whole chunks; nothing here is touched per cell.
#[derive(Debug)]
pub struct MemBudget {
    /// The cap; changed only by a reload (`set_cap_cells`).
    cap_cells: AtomicU64,
    reserved: AtomicU64,
    /// Cells queued in all pools, as each pool last published it (a pool publishes when
    /// its count moved by [`PUBLISH_STEP`], so this is within shards × step of the truth).
    in_use: AtomicU64,
    /// Bumped each time a pool finds the budget exhausted, so the other shards run their
    /// own OOM handler on their next tick (see `RelayCore::tick`).
    pressure: AtomicU64,
}

impl MemBudget {
    /// A budget of `cap_cells` cell buffers.
    pub fn new(cap_cells: u64) -> Self {
        MemBudget {
            cap_cells: AtomicU64::new(cap_cells.min(u64::from(NIL - 1))),
            reserved: AtomicU64::new(0),
            in_use: AtomicU64::new(0),
            pressure: AtomicU64::new(0),
        }
    }

    /// A budget of `bytes` of cell memory (at [`CELL_MEM_COST`] per cell, at least one).
    pub fn from_bytes(bytes: u64) -> Self {
        Self::new((bytes / CELL_MEM_COST).max(1))
    }

    pub fn cap_cells(&self) -> u64 {
        self.cap_cells.load(Ordering::Relaxed)
    }

    /// Changes the cap (SIGHUP). Pools stop taking chunks while above it, and the pressure
    /// count tells every shard to free its share on its next tick if the cells queued are
    /// above 90 % of the new cap.
    pub fn set_cap_cells(&self, cap_cells: u64) {
        self.cap_cells
            .store(cap_cells.clamp(1, u64::from(NIL - 1)), Ordering::Relaxed);
        self.note_pressure();
    }

    /// [`MemBudget::set_cap_cells`] in bytes.
    pub fn set_cap_bytes(&self, bytes: u64) {
        self.set_cap_cells(bytes / CELL_MEM_COST);
    }

    /// Buffers all pools hold now (in use or free within their chunks).
    pub fn reserved(&self) -> u64 {
        self.reserved.load(Ordering::Relaxed)
    }

    /// Cells queued in all pools (approximately; see the field).
    pub fn in_use(&self) -> u64 {
        self.in_use.load(Ordering::Relaxed)
    }

    /// How many times a pool found the budget exhausted.
    pub fn pressure(&self) -> u64 {
        self.pressure.load(Ordering::Relaxed)
    }

    pub(crate) fn note_pressure(&self) {
        self.pressure.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes up to `n` buffers (fewer only at the very end of the budget); 0 if none left.
    fn reserve_up_to(&self, n: u64) -> u64 {
        let mut got = 0;
        let _ = self
            .reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                got = n.min(self.cap_cells().saturating_sub(r));
                (got > 0).then_some(r + got)
            });
        got
    }

    fn release(&self, n: u64) {
        self.reserved.fetch_sub(n, Ordering::AcqRel);
    }
}

struct Chunk {
    slots: Box<[Slot]>,
    /// Global index of the first free slot of this chunk.
    free_head: u32,
    free: u32,
}

/// One shard's cell buffers (see the module docs).
pub struct CellPool {
    budget: Arc<MemBudget>,
    chunks: Vec<Option<Chunk>>,
    /// Ids of `None` entries of `chunks`, for reuse.
    vacant: Vec<u32>,
    /// Chunks that may have a free slot, lowest id first: allocating low keeps cells packed
    /// so high chunks drain and can be given back. Entries are checked when taken (a chunk
    /// may have filled or been given back since); `in_open` keeps one entry per id at most.
    open: BinaryHeap<Reverse<u32>>,
    in_open: Vec<bool>,
    /// Free slots over all chunks, and slots in all chunks.
    free: usize,
    reserved: usize,
    /// Reserved from the budget but not allocated yet (the first chunk, until used).
    grant: usize,
    /// `in_use()` as last added to the budget's `in_use`.
    published: usize,
    /// The core's millisecond stamp when it last started draining queues toward an
    /// unblocked channel ([`CellPool::set_clock`]); a popped cell waited this minus its
    /// stamp.
    clock_ms: u32,
    /// Between `set_clock` and `stop_clock`: popped cells are timed into `delay`.
    timing: bool,
    delay: QueueDelayCounts,
    /// Chunks given back so far (by `take` or `trim`): a metric.
    released: u64,
}

/// A FIFO of cells in a [`CellPool`]. Only the pool that filled it may drain it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellQueue {
    head: u32,
    tail: u32,
    len: u32,
}

impl Default for CellQueue {
    fn default() -> Self {
        CellQueue {
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }
}

impl CellQueue {
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl CellPool {
    /// An empty pool drawing on `budget`; reserves (without allocating) its first chunk.
    pub fn new(budget: Arc<MemBudget>) -> Self {
        let grant = budget.reserve_up_to(CHUNK_CELLS as u64) as usize;
        CellPool {
            grant,
            budget,
            chunks: Vec::new(),
            vacant: Vec::new(),
            open: BinaryHeap::new(),
            in_open: Vec::new(),
            free: 0,
            reserved: 0,
            published: 0,
            clock_ms: 0,
            timing: false,
            delay: QueueDelayCounts::default(),
            released: 0,
        }
    }

    /// A pool with a budget of its own of `cells` buffers.
    pub fn with_private_budget(cells: usize) -> Self {
        Self::new(Arc::new(MemBudget::new(cells as u64)))
    }

    pub fn budget(&self) -> &Arc<MemBudget> {
        &self.budget
    }

    /// Buffers this pool holds from the budget (in use, free, or not allocated yet).
    pub fn reserved(&self) -> usize {
        self.reserved + self.grant
    }

    /// Buffers with storage (in use or free).
    pub fn allocated(&self) -> usize {
        self.reserved
    }

    /// Buffers this pool holds that are not holding a cell.
    pub fn free(&self) -> usize {
        self.free
    }

    pub fn in_use(&self) -> usize {
        self.reserved - self.free
    }

    /// Brings the budget's count of cells in use up to date with this pool.
    pub fn publish(&mut self) {
        let now = self.in_use();
        if now >= self.published {
            self.budget
                .in_use
                .fetch_add((now - self.published) as u64, Ordering::Relaxed);
        } else {
            self.budget
                .in_use
                .fetch_sub((self.published - now) as u64, Ordering::Relaxed);
        }
        self.published = now;
    }

    fn maybe_publish(&mut self) {
        if self.in_use().abs_diff(self.published) >= PUBLISH_STEP {
            self.publish();
        }
    }

    /// Whether a `push` would succeed: a free buffer here, or a chunk from the budget.
    pub fn ensure_free(&mut self) -> bool {
        self.free > 0 || self.grow()
    }

    fn grow(&mut self) -> bool {
        let n = match ::core::mem::take(&mut self.grant) {
            0 => self.budget.reserve_up_to(CHUNK_CELLS as u64) as usize,
            g => g,
        };
        if n == 0 {
            self.budget.note_pressure();
            return false;
        }
        let id = match self.vacant.pop() {
            Some(id) => id,
            None if (self.chunks.len() + 1) * CHUNK_CELLS >= NIL as usize => {
                // Slot indices are u32 (NIL excluded); unreachable below ~4 G cells.
                self.budget.release(n as u64);
                return false;
            }
            None => {
                self.chunks.push(None);
                self.in_open.push(false);
                (self.chunks.len() - 1) as u32
            }
        };
        let base = id * CHUNK_CELLS as u32;
        // Built in place on the heap (a 130 KiB array would not fit every thread's stack).
        let slots: Box<[Slot]> = (0..n as u32)
            .map(|i| Slot {
                cmd: ChanCmd::PADDING,
                stamp: 0,
                next: if (i as usize) + 1 < n {
                    base + i + 1
                } else {
                    NIL
                },
                body: [0; CELL_BODY_LEN],
            })
            .collect();
        self.chunks[id as usize] = Some(Chunk {
            slots,
            free_head: base,
            free: n as u32,
        });
        self.free += n;
        self.reserved += n;
        if !self.in_open[id as usize] {
            self.in_open[id as usize] = true;
            self.open.push(Reverse(id));
        }
        true
    }

    /// The lowest chunk with a free slot.
    fn open_chunk(&mut self) -> Option<u32> {
        while let Some(&Reverse(id)) = self.open.peek() {
            if matches!(&self.chunks[id as usize], Some(c) if c.free > 0) {
                return Some(id);
            }
            self.open.pop();
            self.in_open[id as usize] = false;
        }
        None
    }

    fn slot(&self, i: u32) -> &Slot {
        let c = self.chunks[i as usize / CHUNK_CELLS]
            .as_ref()
            .expect("live");
        &c.slots[i as usize % CHUNK_CELLS]
    }

    fn slot_mut(&mut self, i: u32) -> &mut Slot {
        let c = self.chunks[i as usize / CHUNK_CELLS]
            .as_mut()
            .expect("live");
        &mut c.slots[i as usize % CHUNK_CELLS]
    }

    /// The core's current millisecond stamp, set before it drains queues toward a channel
    /// that can take cells again (cell queueing delay, issue #14): until `stop_clock`,
    /// every RELAY/RELAY_EARLY cell popped is counted in [`CellPool::queue_delay`] with its
    /// wait.
    pub fn set_clock(&mut self, now_ms: u32) {
        self.clock_ms = now_ms;
        self.timing = true;
    }

    /// The drain is over: cells popped from now on (toward an exit stream, freed with a
    /// circuit, charged outside the pool) are not cells passed on to a channel.
    pub fn stop_clock(&mut self) {
        self.timing = false;
    }

    /// How long the cells released toward unblocked channels waited here, so far.
    pub fn queue_delay(&self) -> &QueueDelayCounts {
        &self.delay
    }

    /// Appends a cell queued at `stamp` (milliseconds, wrapping); `false` (and nothing
    /// queued) if neither this pool nor the budget has a buffer.
    pub fn push(
        &mut self,
        q: &mut CellQueue,
        cmd: ChanCmd,
        body: &[u8; CELL_BODY_LEN],
        stamp: u32,
    ) -> bool {
        if !self.ensure_free() {
            return false;
        }
        let Some(id) = self.open_chunk() else {
            return false; // unreachable: `free > 0` means some chunk has a free slot
        };
        let c = self.chunks[id as usize].as_mut().expect("open");
        let i = c.free_head;
        let slot = &mut c.slots[i as usize % CHUNK_CELLS];
        c.free_head = slot.next;
        c.free -= 1;
        self.free -= 1;
        slot.cmd = cmd;
        slot.stamp = stamp;
        slot.next = NIL;
        slot.body.copy_from_slice(body);
        if q.tail == NIL {
            q.head = i;
        } else {
            self.slot_mut(q.tail).next = i;
        }
        q.tail = i;
        q.len += 1;
        self.maybe_publish();
        true
    }

    /// When the oldest cell of `q` was queued.
    pub fn head_stamp(&self, q: &CellQueue) -> Option<u32> {
        (q.head != NIL).then(|| self.slot(q.head).stamp)
    }

    /// Removes the oldest cell, copying it into `out`; timed while the clock is set.
    pub fn pop(&mut self, q: &mut CellQueue, out: &mut [u8; CELL_BODY_LEN]) -> Option<ChanCmd> {
        let (cmd, stamp) = self.take(q, out)?;
        // Relay cells only (a DESTROY queued behind them is not one the histogram counts).
        if self.timing && matches!(cmd, ChanCmd::RELAY | ChanCmd::RELAY_EARLY) {
            // Stamps are wrapping milliseconds; one from "after" the clock (pushed during
            // the drain, a millisecond later) waited no time.
            let waited = self.clock_ms.wrapping_sub(stamp);
            self.delay
                .record(if waited > u32::MAX / 2 { 0 } else { waited });
        }
        Some(cmd)
    }

    /// Removes the oldest cell, copying it into `out`: its command and stamp.
    fn take(&mut self, q: &mut CellQueue, out: &mut [u8; CELL_BODY_LEN]) -> Option<(ChanCmd, u32)> {
        let i = q.head;
        if i == NIL {
            return None;
        }
        let id = i as usize / CHUNK_CELLS;
        let c = self.chunks[id].as_mut().expect("live");
        let slot = &mut c.slots[i as usize % CHUNK_CELLS];
        out.copy_from_slice(&slot.body);
        let (cmd, stamp) = (slot.cmd, slot.stamp);
        q.head = slot.next;
        slot.next = c.free_head;
        c.free_head = i;
        c.free += 1;
        self.free += 1;
        if q.head == NIL {
            q.tail = NIL;
        }
        q.len -= 1;
        let (free, len) = (c.free as usize, c.slots.len());
        if free == len && self.free - len >= CHUNK_CELLS {
            // Wholly free, and another chunk's worth stays free here: give it back.
            self.release_chunk(id);
        } else if !self.in_open[id] {
            self.in_open[id] = true;
            self.open.push(Reverse(id as u32));
        }
        self.maybe_publish();
        Some((cmd, stamp))
    }

    fn release_chunk(&mut self, id: usize) {
        if let Some(c) = self.chunks[id].take() {
            let n = c.slots.len();
            self.free -= n;
            self.reserved -= n;
            self.budget.release(n as u64);
            self.vacant.push(id as u32);
            self.released += 1;
        }
    }

    /// Chunks given back so far (when drained, or by [`CellPool::trim`]).
    pub fn chunks_released(&self) -> u64 {
        self.released
    }

    /// Gives wholly free chunks back to the budget (after the OOM handler freed cells, so
    /// other shards can use them, and from the shard's once-a-second housekeeping:
    /// `RelayCore::trim_memory`), keeping a chunk's worth of free buffers as `pop` does.
    /// Returns the buffers given back.
    pub fn trim(&mut self) -> usize {
        let before = self.reserved;
        for id in (0..self.chunks.len()).rev() {
            let whole = match &self.chunks[id] {
                Some(c) if c.free as usize == c.slots.len() => c.slots.len(),
                _ => continue,
            };
            if self.free - whole >= CHUNK_CELLS {
                self.release_chunk(id);
            }
        }
        before - self.reserved
    }

    /// Drops every cell of `q` (not timed: dropped cells were not passed on).
    pub fn clear(&mut self, q: &mut CellQueue) {
        let mut scratch = [0u8; CELL_BODY_LEN];
        while self.take(q, &mut scratch).is_some() {}
    }
}

impl<C: super::HopCrypto, N: super::NetworkView> super::RelayCore<C, N> {
    /// How long the cells the core released toward unblocked channels waited in its pool
    /// (the node turns them into the MetricsPort's cell queueing delay).
    pub fn queue_delay(&self) -> &QueueDelayCounts {
        self.pool.queue_delay()
    }
}

impl Drop for CellPool {
    fn drop(&mut self) {
        self.free = self.reserved;
        self.publish();
        self.budget.release((self.reserved + self.grant) as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(x: u8) -> [u8; CELL_BODY_LEN] {
        [x; CELL_BODY_LEN]
    }

    #[test]
    fn fifo_order_exhaustion_and_reuse() {
        let mut p = CellPool::with_private_budget(3);
        let (mut a, mut b) = (CellQueue::default(), CellQueue::default());
        assert!(p.push(&mut a, ChanCmd::RELAY, &body(1), 10));
        assert!(p.push(&mut b, ChanCmd::RELAY_EARLY, &body(2), 11));
        assert!(p.push(&mut a, ChanCmd::RELAY, &body(3), 12));
        assert!(!p.push(&mut b, ChanCmd::RELAY, &body(4), 13));
        assert_eq!((a.len(), b.len(), p.free()), (2, 1, 0));
        assert_eq!((p.head_stamp(&a), p.head_stamp(&b)), (Some(10), Some(11)));
        let mut out = [0u8; CELL_BODY_LEN];
        assert_eq!(p.pop(&mut a, &mut out), Some(ChanCmd::RELAY));
        assert_eq!(out[0], 1);
        assert_eq!(p.head_stamp(&a), Some(12));
        assert!(p.push(&mut b, ChanCmd::RELAY, &body(5), 14));
        assert_eq!(p.pop(&mut b, &mut out), Some(ChanCmd::RELAY_EARLY));
        assert_eq!(out[0], 2);
        assert_eq!(p.pop(&mut b, &mut out), Some(ChanCmd::RELAY));
        assert_eq!(out[0], 5);
        assert_eq!(p.pop(&mut b, &mut out), None);
        assert_eq!(p.head_stamp(&b), None);
        p.clear(&mut a);
        assert_eq!(p.free(), 3);
        assert!(a.is_empty());
    }

    /// Cells popped between `set_clock` and `stop_clock` are counted with their wait, in
    /// the bucket whose bound is above `clock − stamp` (stamps are whole milliseconds);
    /// pops outside that window, cells dropped by `clear` and non-relay cells are not.
    #[test]
    fn cells_drained_toward_an_unblocked_channel_are_timed_by_their_stamps() {
        let mut p = CellPool::with_private_budget(64);
        let (mut a, mut b) = (CellQueue::default(), CellQueue::default());
        let mut out = [0u8; CELL_BODY_LEN];
        for (stamp, n) in [(100, 3), (130, 2), (139, 1), (140, 4)] {
            for _ in 0..n {
                assert!(p.push(&mut a, ChanCmd::RELAY, &body(1), stamp));
            }
        }
        assert!(p.push(&mut a, ChanCmd::DESTROY, &body(0), 100)); // not a relay cell
        assert!(p.push(&mut b, ChanCmd::RELAY, &body(2), 0));
        // Not draining toward a channel: not timed.
        assert!(p.pop(&mut b, &mut out).is_some());
        assert_eq!(p.queue_delay().cells, 0);
        p.set_clock(140);
        while p.pop(&mut a, &mut out).is_some() {}
        p.stop_clock();
        let d = *p.queue_delay();
        let at = |ms: u32| QUEUE_DELAY_BOUNDS_MS.partition_point(|&b| b < ms);
        assert_eq!(d.cells, 10);
        assert_eq!(
            d.buckets[at(1)],
            4,
            "released within their millisecond: < 1 ms"
        );
        assert_eq!(d.buckets[at(5)], 1, "1 ms by the stamps: < 2 ms");
        assert_eq!(d.buckets[at(10)], 0, "{d:?}");
        assert_eq!(d.buckets[at(25)], 2, "10 ms by the stamps: < 11 ms");
        assert_eq!(d.buckets[at(50)], 3, "40 ms by the stamps: < 41 ms");
        assert_eq!(d.sum_ms, 3 * 40 + 2 * 10 + 1);
        // After the drain, and for dropped cells, nothing more is counted.
        assert!(p.push(&mut a, ChanCmd::RELAY, &body(3), 0));
        assert!(p.push(&mut b, ChanCmd::RELAY, &body(3), 0));
        assert!(p.pop(&mut a, &mut out).is_some());
        p.set_clock(100_000);
        p.clear(&mut b);
        p.stop_clock();
        assert_eq!(*p.queue_delay(), d);
        // A wait past the last bound is +Inf.
        assert!(p.push(&mut a, ChanCmd::RELAY, &body(4), 5));
        p.set_clock(20_005);
        assert!(p.pop(&mut a, &mut out).is_some());
        assert_eq!(p.queue_delay().buckets[QUEUE_DELAY_BOUNDS_MS.len()], 1);
    }

    #[test]
    fn nothing_is_allocated_until_a_cell_is_queued() {
        let budget = Arc::new(MemBudget::new(10 * CHUNK_CELLS as u64));
        let mut p = CellPool::new(budget.clone());
        // The first chunk is reserved, not allocated.
        assert_eq!((p.allocated(), p.reserved()), (0, CHUNK_CELLS));
        assert_eq!(budget.reserved(), CHUNK_CELLS as u64);
        let mut q = CellQueue::default();
        assert!(p.push(&mut q, ChanCmd::RELAY, &body(1), 0));
        assert_eq!((p.allocated(), p.reserved()), (CHUNK_CELLS, CHUNK_CELLS));
        assert_eq!(budget.reserved(), CHUNK_CELLS as u64);
        drop(p);
        assert_eq!(budget.reserved(), 0, "a dropped pool gives its chunks back");
        assert_eq!(budget.in_use(), 0);
    }

    /// Two shards' pools under one cap: a busy one takes what the idle one does not use,
    /// together they never exceed the cap, and freed chunks go back for the other to use.
    #[test]
    fn two_pools_share_one_cap_and_return_chunks() {
        let cap = 4 * CHUNK_CELLS;
        let budget = Arc::new(MemBudget::new(cap as u64));
        let (mut a, mut b) = (CellPool::new(budget.clone()), CellPool::new(budget.clone()));
        let (mut qa, mut qb) = (CellQueue::default(), CellQueue::default());
        assert!(b.push(&mut qb, ChanCmd::RELAY, &body(0), 0));
        // The busy pool takes everything else: three chunks.
        let mut n = 0;
        while a.push(&mut qa, ChanCmd::RELAY, &body(1), 1) {
            n += 1;
            assert!(n <= cap, "unbounded");
        }
        assert_eq!(n, 3 * CHUNK_CELLS);
        assert_eq!(budget.reserved(), cap as u64);
        assert!(budget.pressure() > 0);
        // `b` has the rest of its own chunk, then nothing.
        for _ in 1..CHUNK_CELLS {
            assert!(b.push(&mut qb, ChanCmd::RELAY, &body(2), 2));
        }
        assert!(!b.push(&mut qb, ChanCmd::RELAY, &body(2), 2));
        assert_eq!(a.in_use() + b.in_use(), cap);
        // Published in steps: within one step per pool of the truth.
        assert!(budget.in_use().abs_diff(cap as u64) < 2 * PUBLISH_STEP as u64);
        // Draining `a` gives its chunks back, keeping one chunk's worth free.
        let mut out = [0u8; CELL_BODY_LEN];
        while a.pop(&mut qa, &mut out).is_some() {}
        assert_eq!((a.in_use(), a.reserved()), (0, CHUNK_CELLS));
        assert_eq!(budget.reserved(), 2 * CHUNK_CELLS as u64);
        // ...which `b` can now use.
        for _ in 0..2 * CHUNK_CELLS {
            assert!(b.push(&mut qb, ChanCmd::RELAY, &body(3), 3));
        }
        assert!(!b.push(&mut qb, ChanCmd::RELAY, &body(3), 3));
        assert_eq!(budget.reserved(), cap as u64);
        // A pool keeps its last chunk: `a` can still queue a chunk of cells of its own.
        assert_eq!(a.trim(), 0);
        for _ in 0..CHUNK_CELLS {
            assert!(a.push(&mut qa, ChanCmd::RELAY, &body(4), 4));
        }
        assert!(!a.push(&mut qa, ChanCmd::RELAY, &body(4), 4));
        b.clear(&mut qb);
        assert_eq!(b.reserved(), CHUNK_CELLS);
        assert_eq!(budget.reserved(), 2 * CHUNK_CELLS as u64);
    }

    /// After the OOM handler frees cells, `trim` gives back wholly free chunks `pop` kept,
    /// but not the last chunk's worth.
    #[test]
    fn trim_gives_back_wholly_free_chunks_but_the_last() {
        let budget = Arc::new(MemBudget::new(8 * CHUNK_CELLS as u64));
        let mut p = CellPool::new(budget.clone());
        let (mut a, mut b, mut c) = Default::default();
        for (q, n) in [(&mut a, 100), (&mut b, 2 * CHUNK_CELLS), (&mut c, 100)] {
            for _ in 0..n {
                assert!(p.push(q, ChanCmd::RELAY, &body(1), 1));
            }
        }
        assert_eq!(p.reserved(), 3 * CHUNK_CELLS);
        // `b` spans the end of chunk 0, all of chunk 1 and the start of chunk 2.
        p.clear(&mut b);
        assert_eq!(p.trim(), CHUNK_CELLS);
        assert_eq!(p.reserved(), 2 * CHUNK_CELLS);
        assert_eq!(budget.reserved(), 2 * CHUNK_CELLS as u64);
        p.clear(&mut a);
        p.clear(&mut c);
        assert_eq!(p.trim(), 0);
        assert_eq!(p.reserved(), CHUNK_CELLS);
    }

    #[test]
    fn a_lower_cap_stops_growth_until_below_it() {
        let budget = Arc::new(MemBudget::new(4 * CHUNK_CELLS as u64));
        let mut p = CellPool::new(budget.clone());
        let mut q = CellQueue::default();
        for _ in 0..3 * CHUNK_CELLS {
            assert!(p.push(&mut q, ChanCmd::RELAY, &body(1), 1));
        }
        let pressure = budget.pressure();
        budget.set_cap_bytes(2 * CHUNK_CELLS as u64 * CELL_MEM_COST);
        assert_eq!(budget.cap_cells(), 2 * CHUNK_CELLS as u64);
        assert!(
            budget.pressure() > pressure,
            "shards must look at the new cap"
        );
        // Above the new cap: no chunk until enough goes back.
        assert!(!p.push(&mut q, ChanCmd::RELAY, &body(1), 1));
        p.clear(&mut q);
        assert_eq!(budget.reserved(), CHUNK_CELLS as u64);
        for _ in 0..2 * CHUNK_CELLS {
            assert!(p.push(&mut q, ChanCmd::RELAY, &body(1), 1));
        }
        assert!(!p.push(&mut q, ChanCmd::RELAY, &body(1), 1));
    }

    /// Allocation prefers low chunks, so after a burst the high chunks drain and go back
    /// even while some cells stay queued.
    #[test]
    fn cells_pack_into_low_chunks_so_high_ones_drain() {
        let budget = Arc::new(MemBudget::new(8 * CHUNK_CELLS as u64));
        let mut p = CellPool::new(budget.clone());
        let mut qs: Vec<CellQueue> = vec![CellQueue::default(); 4];
        // Round-robin over four queues until four chunks are in use.
        for i in 0..4 * CHUNK_CELLS {
            assert!(p.push(&mut qs[i % 4], ChanCmd::RELAY, &body(0), 0));
        }
        assert_eq!(p.reserved(), 4 * CHUNK_CELLS);
        // Queues 1..4 drain; queue 0 keeps a quarter of the cells spread over all chunks.
        for q in &mut qs[1..] {
            p.clear(q);
        }
        // New cells go to the free slots of the low chunks, not new chunks.
        let mut r = CellQueue::default();
        for _ in 0..CHUNK_CELLS {
            assert!(p.push(&mut r, ChanCmd::RELAY, &body(0), 0));
        }
        assert_eq!(p.reserved(), 4 * CHUNK_CELLS);
        p.clear(&mut qs[0]);
        p.clear(&mut r);
        assert_eq!(p.in_use(), 0);
        assert!(p.reserved() <= CHUNK_CELLS, "{}", p.reserved());
        assert_eq!(budget.reserved(), p.reserved() as u64);
    }
}
