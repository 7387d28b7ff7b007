//! Bounded single-producer single-consumer ring queue for cross-shard traffic.
//!
//! Why our own: shards never share locks; the only cross-thread traffic is these queues.
//! The producer writes items into slots without publishing them, then `publish()` makes the
//! whole batch visible with one Release store of the tail (and the caller sends one wake-up
//! per batch). The consumer pops a batch and returns the slots with one Release store of the
//! head. Head and tail live on separate cache lines so the two threads do not false-share.
//! Each side caches the other side's index and re-reads it only when the queue looks
//! full/empty, so the common case touches no shared cache line but its own.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Keeps a value on its own cache line pair (128 bytes covers adjacent-line prefetch).
#[repr(align(128))]
struct CachePadded<T>(T);

struct Shared<T> {
    /// Consumer position: slots before it are free for the producer.
    head: CachePadded<AtomicUsize>,
    /// Producer position: slots before it hold published items.
    tail: CachePadded<AtomicUsize>,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
    /// The producer found the queue full and wants a wake-up once it has drained to half
    /// (so it need not poll; see `Consumer::take_producer_waiting`).
    producer_waiting: AtomicBool,
}

// SAFETY: a slot is accessed by exactly one side at a time: the producer only writes slots in
// [tail, head + cap) and the consumer only reads slots in [head, tail); the Release/Acquire
// pair on head/tail transfers each slot's ownership. Items cross threads, so T: Send.
unsafe impl<T: Send> Sync for Shared<T> {}
// SAFETY: as above; the struct owns Ts that may be dropped on either thread.
unsafe impl<T: Send> Send for Shared<T> {}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        let head = *self.head.0.get_mut();
        let tail = *self.tail.0.get_mut();
        for pos in head..tail {
            // SAFETY: both handles are gone (we have &mut), and slots in [head, tail) hold
            // initialised, published, not yet popped items; each is dropped once.
            unsafe { (*self.slots[pos & self.mask].get()).assume_init_drop() };
        }
    }
}

/// Creates a queue holding at most `capacity` items (rounded up to a power of two, ≥ 2).
pub fn channel<T: Send>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    let cap = capacity.max(2).next_power_of_two();
    let slots = (0..cap)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect::<Vec<_>>()
        .into_boxed_slice();
    let shared = Arc::new(Shared {
        head: CachePadded(AtomicUsize::new(0)),
        tail: CachePadded(AtomicUsize::new(0)),
        slots,
        mask: cap - 1,
        producer_waiting: AtomicBool::new(false),
    });
    (
        Producer {
            shared: shared.clone(),
            tail: 0,
            published: 0,
            cached_head: 0,
        },
        Consumer {
            shared,
            head: 0,
            cached_tail: 0,
        },
    )
}

/// The writing end. Not `Clone`: exactly one producer.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    /// Next slot to write (may be ahead of the published tail).
    tail: usize,
    /// Last value stored into `shared.tail`.
    published: usize,
    cached_head: usize,
}

impl<T: Send> Producer<T> {
    /// Queue capacity.
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    /// Writes `item` into the next slot without publishing it; `Err(item)` if full.
    pub fn push(&mut self, item: T) -> Result<(), T> {
        let cap = self.capacity();
        if self.tail.wrapping_sub(self.cached_head) >= cap {
            self.cached_head = self.shared.head.0.load(Ordering::Acquire);
            if self.tail.wrapping_sub(self.cached_head) >= cap {
                // Set before returning: a consumer that pops after this sees it and wakes
                // us; one that popped before left room our next retry finds.
                self.shared.producer_waiting.store(true, Ordering::SeqCst);
                return Err(item);
            }
        }
        let slot = &self.shared.slots[self.tail & self.shared.mask];
        // SAFETY: tail - head < cap, so this slot was popped (or never used) and the consumer
        // will not read it until we publish a tail past it; we are the only producer.
        unsafe { (*slot.get()).write(item) };
        self.tail = self.tail.wrapping_add(1);
        Ok(())
    }

    /// Slots free right now (reads the consumer's position).
    pub fn free(&mut self) -> usize {
        self.cached_head = self.shared.head.0.load(Ordering::Acquire);
        self.capacity() - self.tail.wrapping_sub(self.cached_head)
    }

    /// Items written but not yet published.
    pub fn unpublished(&self) -> usize {
        self.tail.wrapping_sub(self.published)
    }

    /// Makes every pushed item visible to the consumer; returns how many became visible.
    pub fn publish(&mut self) -> usize {
        let n = self.unpublished();
        if n != 0 {
            self.shared.tail.0.store(self.tail, Ordering::Release);
            self.published = self.tail;
        }
        n
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        // Publish what was written so `Shared::drop` (or the consumer) sees and drops it.
        self.shared.tail.0.store(self.tail, Ordering::Release);
    }
}

/// The reading end. Not `Clone`: exactly one consumer.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    head: usize,
    cached_tail: usize,
}

impl<T: Send> Consumer<T> {
    /// Pops up to `max` items into `out` (which should have spare capacity, so this does not
    /// allocate), releasing their slots with one store. Returns how many were popped.
    pub fn pop_batch(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        // One Acquire load per batch, only when the cached view cannot fill it.
        if self.cached_tail.wrapping_sub(self.head) < max {
            self.cached_tail = self.shared.tail.0.load(Ordering::Acquire);
        }
        let n = self.cached_tail.wrapping_sub(self.head).min(max);
        for _ in 0..n {
            let slot = &self.shared.slots[self.head & self.shared.mask];
            // SAFETY: head < published tail, so the slot holds an initialised item that the
            // producer will not touch until we store a head past it; read moves it out once.
            out.push(unsafe { (*slot.get()).assume_init_read() });
            self.head = self.head.wrapping_add(1);
        }
        if n != 0 {
            self.shared.head.0.store(self.head, Ordering::Release);
        }
        n
    }

    /// Pops one item.
    pub fn pop(&mut self) -> Option<T> {
        if self.head == self.cached_tail {
            self.cached_tail = self.shared.tail.0.load(Ordering::Acquire);
            if self.head == self.cached_tail {
                return None;
            }
        }
        let slot = &self.shared.slots[self.head & self.shared.mask];
        // SAFETY: as in pop_batch.
        let item = unsafe { (*slot.get()).assume_init_read() };
        self.head = self.head.wrapping_add(1);
        self.shared.head.0.store(self.head, Ordering::Release);
        Some(item)
    }

    /// Whether the producer found the queue full since the last call and the queue has now
    /// drained to half: the caller should wake the producer (once; this clears the flag).
    pub fn take_producer_waiting(&mut self) -> bool {
        if !self.shared.producer_waiting.load(Ordering::SeqCst) {
            return false;
        }
        self.cached_tail = self.shared.tail.0.load(Ordering::Acquire);
        let cap = self.shared.mask + 1;
        if self.cached_tail.wrapping_sub(self.head) * 2 > cap {
            return false;
        }
        self.shared.producer_waiting.swap(false, Ordering::SeqCst)
    }

    /// True if nothing published is waiting (may race with a concurrent publish).
    pub fn is_empty(&mut self) -> bool {
        if self.head != self.cached_tail {
            return false;
        }
        self.cached_tail = self.shared.tail.0.load(Ordering::Acquire);
        self.head == self.cached_tail
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        // Record what we consumed so `Shared::drop` drops only the rest.
        self.shared.head.0.store(self.head, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_fifo() {
        let (mut p, mut c) = channel::<u32>(4);
        for i in 0..4 {
            p.push(i).unwrap();
        }
        assert_eq!(p.push(9), Err(9));
        // Nothing visible before publish.
        assert_eq!(c.pop(), None);
        assert_eq!(p.publish(), 4);
        let mut v = Vec::with_capacity(8);
        assert_eq!(c.pop_batch(&mut v, 3), 3);
        assert_eq!(v, [0, 1, 2]);
        p.push(4).unwrap();
        p.push(5).unwrap();
        p.publish();
        v.clear();
        assert_eq!(c.pop_batch(&mut v, 10), 3);
        assert_eq!(v, [3, 4, 5]);
        assert!(c.is_empty());
    }

    #[test]
    fn a_producer_that_found_it_full_is_woken_at_half() {
        let (mut p, mut c) = channel::<u32>(4);
        assert!(!c.take_producer_waiting(), "never full");
        for i in 0..4 {
            p.push(i).unwrap();
        }
        assert_eq!(p.free(), 0);
        assert_eq!(p.push(9), Err(9));
        p.publish();
        let mut v = Vec::with_capacity(4);
        c.pop_batch(&mut v, 1);
        assert!(!c.take_producer_waiting(), "3 of 4 still queued");
        c.pop_batch(&mut v, 1);
        assert_eq!(p.free(), 2);
        assert!(c.take_producer_waiting(), "half drained: wake once");
        assert!(!c.take_producer_waiting(), "the flag is cleared");
    }

    #[test]
    fn drops_leftovers() {
        let item = Arc::new(());
        {
            let (mut p, mut c) = channel(8);
            for _ in 0..5 {
                p.push(item.clone()).unwrap();
            }
            p.publish();
            drop(c.pop());
            p.push(item.clone()).unwrap(); // unpublished, still dropped
        }
        assert_eq!(Arc::strong_count(&item), 1);
    }
}
