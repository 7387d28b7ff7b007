//! Provided buffer ring (IORING_REGISTER_PBUF_RING) feeding multishot recv.
//!
//! Why: with one multishot recv per connection the kernel picks a buffer from this ring only
//! when data actually arrives, so idle connections pin no memory and the shard needs
//! `recv_buf_count` buffers in total rather than one per connection. After the handler has
//! consumed a buffer's bytes we put the buffer back at the ring's tail; tail updates are
//! published once per completion batch.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

use super::error::ShardError;

/// The buffer group id used for receives on every shard's own ring.
pub const RECV_BUF_GROUP: u16 = 0;

/// Ring of `count` entries plus `count` buffers of `size` bytes, allocated once.
pub struct BufRing {
    entries: *mut BufRingEntry,
    entries_layout: Layout,
    bufs: *mut u8,
    bufs_layout: Layout,
    buf_size: u32,
    mask: u16,
    /// Our tail (may be ahead of the published one within a batch).
    tail: u16,
    /// Set when shutdown could not prove the kernel is done with the memory.
    leak: bool,
}

impl BufRing {
    /// Allocates and fills the ring with every buffer, then registers it as group `bgid`.
    pub fn new(ring: &IoUring, count: u32, size: u32) -> Result<BufRing, ShardError> {
        let entries_layout = Layout::from_size_align(count as usize * 16, 4096)
            .map_err(|_| ShardError::Config("recv buffer ring layout".into()))?;
        let bufs_layout = Layout::from_size_align(count as usize * size as usize, 4096)
            .map_err(|_| ShardError::Config("recv buffer layout".into()))?;
        // SAFETY: both layouts have non-zero size (count and size validated non-zero).
        let entries = unsafe { alloc_zeroed(entries_layout) } as *mut BufRingEntry;
        // SAFETY: as above.
        let bufs = unsafe { alloc_zeroed(bufs_layout) };
        if entries.is_null() || bufs.is_null() {
            return Err(ShardError::Config(
                "out of memory for receive buffers".into(),
            ));
        }
        let mut br = BufRing {
            entries,
            entries_layout,
            bufs,
            bufs_layout,
            buf_size: size,
            mask: (count - 1) as u16,
            tail: 0,
            leak: false,
        };
        for bid in 0..count {
            br.push(bid as u16);
        }
        br.publish();
        // SAFETY: `entries` is page-aligned and holds `count` entries; it stays allocated until
        // `Drop`, which the shard runs only after the ring is closed (or leaks it).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                entries as u64,
                count as u16,
                RECV_BUF_GROUP,
                0,
            )
        }
        .map_err(|e| ShardError::ring("register provided buffer ring", e))?;
        Ok(br)
    }

    /// Puts buffer `bid` back at our tail (not yet visible to the kernel).
    pub fn push(&mut self, bid: u16) {
        let idx = (self.tail & self.mask) as usize;
        // SAFETY: idx < count; the kernel reads entries only in [head, published tail), and this
        // slot is at/after our tail, so no one else accesses it now.
        let entry = unsafe { &mut *self.entries.add(idx) };
        // SAFETY: bid < count, so the offset stays inside the buffer allocation.
        entry.set_addr(unsafe { self.bufs.add(bid as usize * self.buf_size as usize) } as u64);
        entry.set_len(self.buf_size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every pushed buffer visible to the kernel with one Release store.
    pub fn publish(&mut self) {
        // SAFETY: the ring tail is the `resv` u16 of entry 0, which the kernel reads
        // concurrently; it is 2-aligned inside a page-aligned allocation, so an atomic view is
        // valid, and all buffer entries were written before this Release store.
        unsafe {
            let tail = BufRingEntry::tail(self.entries) as *mut u16;
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }

    /// The `len` received bytes in buffer `bid`, for the handler to change in place (TLS
    /// records decrypted where they lie).
    pub fn data_mut(&mut self, bid: u16, len: usize) -> &mut [u8] {
        let bid = bid & self.mask;
        let len = len.min(self.buf_size as usize);
        // SAFETY: bid is masked into range and len clamped to the buffer size,
        // so the slice lies inside this ring's allocation; the kernel finished writing this
        // buffer (its CQE was posted) and will not touch it until we push it back, which
        // needs `&mut self` and so ends this borrow first; `&mut self` also means no other
        // slice of the ring's memory is alive.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.bufs.add(bid as usize * self.buf_size as usize),
                len,
            )
        }
    }

    /// Keeps the memory allocated forever: used when the kernel may still write into it.
    pub fn leak(&mut self) {
        self.leak = true;
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.leak {
            return;
        }
        // SAFETY: allocated in `new` with these layouts; the owning shard drops us only after
        // its io_uring is closed with no operation in flight.
        unsafe {
            dealloc(self.entries as *mut u8, self.entries_layout);
            dealloc(self.bufs, self.bufs_layout);
        }
    }
}
