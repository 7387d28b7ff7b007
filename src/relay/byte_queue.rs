//! A FIFO of bytes consumed from the front in pieces, without moving the rest each time.
//!
//! An exit stream's bytes wait here while its circuit's package window is closed (read side)
//! or its socket is full (write side). They leave a few cells' worth at a time, each time the
//! window reopens; re-copying the remainder on every such step made a 200 KB backlog cost
//! megabytes of copying (a profile of an exit download showed a third of the relay's CPU in
//! it). Here consuming only moves an offset; the consumed prefix is reclaimed when the queue
//! empties, or compacted before a push once it is the larger part of the buffer.

/// Bytes in arrival order; `head` bytes at the front are already consumed.
#[derive(Debug, Default)]
pub struct ByteQueue {
    buf: Vec<u8>,
    head: usize,
}

impl ByteQueue {
    pub fn new() -> ByteQueue {
        ByteQueue::default()
    }

    /// The bytes not consumed yet.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[self.head..]
    }

    pub fn len(&self) -> usize {
        self.buf.len() - self.head
    }

    pub fn is_empty(&self) -> bool {
        self.head == self.buf.len()
    }

    /// Appends `data` at the back.
    pub fn push(&mut self, data: &[u8]) {
        if self.head > 0 && self.head >= self.len() {
            // The consumed prefix outweighs what is left: moving the rest down is cheaper
            // than letting the buffer grow (amortised: each byte moves at most once per
            // doubling of what was consumed before it).
            self.buf.drain(..self.head);
            self.head = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Drops the first `n` bytes (at most all of them).
    pub fn consume(&mut self, n: usize) {
        self.head = (self.head + n).min(self.buf.len());
        if self.head == self.buf.len() {
            // Empty again: keep the allocation for the next backlog.
            self.buf.clear();
            self.head = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_order_survives_partial_consumes_and_compaction() {
        let mut q = ByteQueue::new();
        let mut model = std::collections::VecDeque::new();
        let mut x: u32 = 12345;
        for step in 0..1500u32 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if x.is_multiple_of(3) {
                let n = (x as usize >> 8) % 500;
                q.consume(n);
                for _ in 0..n.min(model.len()) {
                    model.pop_front();
                }
            } else {
                let len = (x as usize >> 4) % 300;
                let data: Vec<u8> = (0..len).map(|i| (step as usize + i) as u8).collect();
                q.push(&data);
                model.extend(data);
            }
            assert_eq!(q.len(), model.len());
            assert_eq!(q.is_empty(), model.is_empty());
            assert!(q.as_slice().iter().eq(model.iter()), "step {step}");
        }
    }

    #[test]
    fn consuming_everything_resets_and_keeps_capacity() {
        let mut q = ByteQueue::new();
        q.push(&[1; 1000]);
        let cap = q.buf.capacity();
        q.consume(400);
        assert_eq!(q.len(), 600);
        q.consume(10_000);
        assert!(q.is_empty());
        assert_eq!((q.head, q.buf.len(), q.buf.capacity()), (0, 0, cap));
    }

    #[test]
    fn a_long_backlog_consumed_in_small_steps_does_not_grow_the_buffer() {
        // A steady trickle in and out: the buffer stays near the live size.
        let mut q = ByteQueue::new();
        for _ in 0..2_000 {
            q.push(&[7; 498]);
            q.consume(498);
            q.push(&[8; 498]);
            q.consume(400);
        }
        assert!(
            q.buf.capacity() <= 4 * q.len().max(4096),
            "{}",
            q.buf.capacity()
        );
    }
}
