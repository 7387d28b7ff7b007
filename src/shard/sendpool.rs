//! Pre-allocated send buffers, shared by all connections of a shard.
//!
//! Why: handlers queue bytes by copying them into these buffers, or write them in place
//! (`spare_mut`/`commit`: a channel's TLS records, so they are not copied twice); the kernel
//! then sends straight from them, so no allocation happens per write. The whole pool is one allocation
//! that is also registered as io_uring fixed buffer 0, so zero-copy sends can use
//! IORING_RECVSEND_FIXED_BUF and skip pinning pages per send. A buffer handed to a zero-copy
//! send stays pinned until the kernel's notification CQE says it is done with it.

use std::alloc::{alloc_zeroed, dealloc, Layout};

use super::error::ShardError;

/// `count` buffers of `size` bytes with a free list; all bookkeeping arrays sized once.
pub struct SendPool {
    mem: *mut u8,
    layout: Layout,
    size: u32,
    /// Bytes filled in each buffer.
    len: Vec<u32>,
    /// Outstanding zero-copy notifications per buffer.
    pins: Vec<u16>,
    /// Released by its connection while still pinned: free when pins reach 0.
    orphan: Vec<bool>,
    free: Vec<u32>,
    leak: bool,
}

impl SendPool {
    /// Allocates the pool.
    pub fn new(count: u32, size: u32) -> Result<SendPool, ShardError> {
        let layout = Layout::from_size_align(count as usize * size as usize, 4096)
            .map_err(|_| ShardError::Config("send pool layout".into()))?;
        // SAFETY: non-zero size (validated).
        let mem = unsafe { alloc_zeroed(layout) };
        if mem.is_null() {
            return Err(ShardError::Config("out of memory for send buffers".into()));
        }
        Ok(SendPool {
            mem,
            layout,
            size,
            len: vec![0; count as usize],
            pins: vec![0; count as usize],
            orphan: vec![false; count as usize],
            free: (0..count).rev().collect(),
            leak: false,
        })
    }

    /// The iovec describing the whole pool, for fixed-buffer registration.
    pub fn iovec(&self) -> libc::iovec {
        libc::iovec {
            iov_base: self.mem as *mut libc::c_void,
            iov_len: self.layout.size(),
        }
    }

    pub fn buf_size(&self) -> u32 {
        self.size
    }
    /// Number of buffers in the pool.
    pub fn count(&self) -> usize {
        self.len.len()
    }
    pub fn free_count(&self) -> usize {
        self.free.len()
    }
    pub fn in_use(&self) -> usize {
        self.len.len() - self.free.len()
    }

    /// Takes an empty buffer.
    pub fn alloc(&mut self) -> Option<u32> {
        let b = self.free.pop()?;
        self.len[b as usize] = 0;
        Some(b)
    }

    /// Gives a buffer back; deferred while a zero-copy send still pins it. Returns whether the
    /// buffer is free now (false: it becomes free at the unpin that drops its last pin).
    pub fn release(&mut self, b: u32) -> bool {
        if self.pins[b as usize] > 0 {
            self.orphan[b as usize] = true;
            false
        } else {
            self.free.push(b);
            true
        }
    }

    pub fn pin(&mut self, b: u32) {
        self.pins[b as usize] += 1;
    }

    /// Drops one zero-copy pin; frees the buffer if its connection already let go of it.
    /// Returns whether this freed a released buffer.
    pub fn unpin(&mut self, b: u32) -> bool {
        let p = &mut self.pins[b as usize];
        *p = p.saturating_sub(1);
        if *p == 0 && self.orphan[b as usize] {
            self.orphan[b as usize] = false;
            self.free.push(b);
            return true;
        }
        false
    }

    pub fn len(&self, b: u32) -> u32 {
        self.len[b as usize]
    }
    pub fn space(&self, b: u32) -> u32 {
        self.size - self.len[b as usize]
    }

    /// Appends as much of `data` as fits into buffer `b`; returns bytes copied.
    pub fn append(&mut self, b: u32, data: &[u8]) -> usize {
        let used = self.len[b as usize] as usize;
        let n = data.len().min(self.size as usize - used);
        // SAFETY: b < count and used + n <= size, so the destination is inside buffer b; bytes
        // at and after `used` are not part of any in-flight send (sends cover only bytes that
        // were filled before submission), so the kernel is not reading them.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.mem.add(b as usize * self.size as usize + used),
                n,
            )
        };
        self.len[b as usize] += n as u32;
        n
    }

    /// The unfilled rest of buffer `b`, to be written in place (then [`commit`](Self::commit)
    /// how much was): a producer that can write into a slice (rustls's `write_tls`) skips
    /// the staging copy `append` needs.
    pub fn spare_mut(&mut self, b: u32) -> &mut [u8] {
        let used = self.len[b as usize] as usize;
        let room = self.size as usize - used;
        // SAFETY: b < count, so [used, size) lies inside buffer b. Those bytes are not part
        // of any in-flight send (sends cover only bytes filled before submission), so the
        // kernel does not read them, and `&mut self` keeps this the only slice into them.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.mem.add(b as usize * self.size as usize + used),
                room,
            )
        }
    }

    /// `n` bytes of [`spare_mut`](Self::spare_mut) were filled.
    pub fn commit(&mut self, b: u32, n: usize) {
        debug_assert!(n <= self.space(b) as usize);
        self.len[b as usize] += n as u32;
    }

    /// Pointer to byte `off` of buffer `b`, for a send SQE.
    pub fn ptr(&self, b: u32, off: u32) -> *const u8 {
        debug_assert!(off <= self.size);
        // SAFETY: b < count and off <= size keep the pointer within (or one past) the buffer.
        unsafe { self.mem.add(b as usize * self.size as usize + off as usize) }
    }

    pub fn leak(&mut self) {
        self.leak = true;
    }
}

impl Drop for SendPool {
    fn drop(&mut self) {
        if !self.leak {
            // SAFETY: allocated in `new` with this layout; dropped only after the ring is closed
            // with nothing in flight (else `leak` was set).
            unsafe { dealloc(self.mem, self.layout) };
        }
    }
}
