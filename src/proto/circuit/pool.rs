//! A shard-wide pool of cell buffers, allocated once, and intrusive FIFO queues over it.
//!
//! Every cell a circuit must hold (toward a blocked channel, or optimistic DATA waiting for
//! its exit connection) lives in this pool, so the pool's size *is* the shard's memory cap
//! for queued cells (C tor's MaxMemInQueues): when it runs out, the core kills the circuits
//! holding the most cells. Queues link pool slots by index, so queueing never allocates.

use crate::cell::{ChanCmd, CELL_BODY_LEN};

const NIL: u32 = u32::MAX;

struct Slot {
    cmd: ChanCmd,
    next: u32,
    body: [u8; CELL_BODY_LEN],
}

/// Fixed-size storage for queued cells.
pub struct CellPool {
    slots: Vec<Slot>,
    free_head: u32,
    free: usize,
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
    /// A pool of `cells` buffers (≈ 512 bytes each).
    pub fn new(cells: usize) -> Self {
        let cells = cells.min(NIL as usize - 1);
        let slots = (0..cells)
            .map(|i| Slot {
                cmd: ChanCmd::PADDING,
                next: if i + 1 < cells { i as u32 + 1 } else { NIL },
                body: [0; CELL_BODY_LEN],
            })
            .collect();
        CellPool {
            slots,
            free_head: if cells > 0 { 0 } else { NIL },
            free: cells,
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Buffers not holding a cell.
    pub fn free(&self) -> usize {
        self.free
    }

    pub fn in_use(&self) -> usize {
        self.slots.len() - self.free
    }

    /// Appends a cell; `false` (and nothing queued) if the pool is exhausted.
    pub fn push(&mut self, q: &mut CellQueue, cmd: ChanCmd, body: &[u8; CELL_BODY_LEN]) -> bool {
        let i = self.free_head;
        if i == NIL {
            return false;
        }
        let slot = &mut self.slots[i as usize];
        self.free_head = slot.next;
        self.free -= 1;
        slot.cmd = cmd;
        slot.next = NIL;
        slot.body.copy_from_slice(body);
        if q.tail == NIL {
            q.head = i;
        } else {
            self.slots[q.tail as usize].next = i;
        }
        q.tail = i;
        q.len += 1;
        true
    }

    /// Removes the oldest cell, copying it into `out`.
    pub fn pop(&mut self, q: &mut CellQueue, out: &mut [u8; CELL_BODY_LEN]) -> Option<ChanCmd> {
        let i = q.head;
        if i == NIL {
            return None;
        }
        let slot = &mut self.slots[i as usize];
        out.copy_from_slice(&slot.body);
        let cmd = slot.cmd;
        q.head = slot.next;
        slot.next = self.free_head;
        self.free_head = i;
        self.free += 1;
        if q.head == NIL {
            q.tail = NIL;
        }
        q.len -= 1;
        Some(cmd)
    }

    /// Drops every cell of `q`.
    pub fn clear(&mut self, q: &mut CellQueue) {
        let mut scratch = [0u8; CELL_BODY_LEN];
        while self.pop(q, &mut scratch).is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_order_exhaustion_and_reuse() {
        let mut p = CellPool::new(3);
        let (mut a, mut b) = (CellQueue::default(), CellQueue::default());
        let body = |x: u8| [x; CELL_BODY_LEN];
        assert!(p.push(&mut a, ChanCmd::RELAY, &body(1)));
        assert!(p.push(&mut b, ChanCmd::RELAY_EARLY, &body(2)));
        assert!(p.push(&mut a, ChanCmd::RELAY, &body(3)));
        assert!(!p.push(&mut b, ChanCmd::RELAY, &body(4)));
        assert_eq!((a.len(), b.len(), p.free()), (2, 1, 0));
        let mut out = [0u8; CELL_BODY_LEN];
        assert_eq!(p.pop(&mut a, &mut out), Some(ChanCmd::RELAY));
        assert_eq!(out[0], 1);
        assert!(p.push(&mut b, ChanCmd::RELAY, &body(5)));
        assert_eq!(p.pop(&mut b, &mut out), Some(ChanCmd::RELAY_EARLY));
        assert_eq!(out[0], 2);
        assert_eq!(p.pop(&mut b, &mut out), Some(ChanCmd::RELAY));
        assert_eq!(out[0], 5);
        assert_eq!(p.pop(&mut b, &mut out), None);
        p.clear(&mut a);
        assert_eq!(p.free(), 3);
        assert!(a.is_empty());
    }
}
