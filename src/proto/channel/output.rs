//! [`CellQueue`]: the bounded queue of plaintext cells a channel has yet to hand to TLS.
//!
//! It is a separate value so the circuit layer can answer a cell (CREATED2, a forwarded
//! RELAY...) from inside the receive callback, which gets `&mut CellQueue` while the channel
//! is busy reading.
//!
//! Memory (issue #15): the buffer is sized by use, not by its bound. It starts empty (a
//! connection that never sends a byte reserves nothing), doubles from [`BUF_FLOOR`] when a
//! cell does not fit, never past its bound's worth of bytes, and keeps its capacity while the
//! channel is busy: a queued cell allocates only when the queue is deeper than it has been
//! since the last trim. [`CellQueue::trim`] (the node's once-a-second housekeeping) gives back
//! the capacity of a burst that has passed. The bound itself ([`CellQueue::free_cells`],
//! `OutputFull`) counts bytes, not capacity, and is unchanged.

use super::error::ChannelError;
use crate::cell::{ChanCmd, CircId, CELL_BODY_LEN, CELL_LEN};
use crate::util::copies::{self, CopySite};

/// Room beyond the cell bound for the handshake cells (CERTS is ~2 KiB), which are queued
/// regardless of the bound.
const HANDSHAKE_SLACK: usize = 8 * 1024;

/// Capacity a channel buffer takes when it first needs room, and the least a trim leaves to
/// a buffer in use (8 cells).
pub const BUF_FLOOR: usize = 4 * 1024;

/// Makes room in `v` for `extra` more bytes. Capacity doubles (from [`BUF_FLOOR`]) but not
/// past `cap`, unless `extra` itself needs more; nothing is allocated while it fits.
pub(super) fn reserve_within(v: &mut Vec<u8>, extra: usize, cap: usize) {
    let need = v.len() + extra;
    if need <= v.capacity() {
        return;
    }
    let target = (v.capacity() * 2).max(BUF_FLOOR).min(cap).max(need);
    v.reserve_exact(target - v.len());
}

/// The capacity a buffer whose use since the last trim peaked at `peak` bytes should keep,
/// if it should shrink: `Some(0)` (free it) when it was not used at all and is empty; a
/// power of two at least [`BUF_FLOOR`] when it used at most a quarter of what it holds;
/// else `None` (a busy buffer keeps its capacity, so steady traffic never reallocates).
pub(super) fn trimmed_capacity(capacity: usize, len: usize, peak: usize) -> Option<usize> {
    let peak = peak.max(len);
    if capacity == 0 {
        return None;
    }
    if peak == 0 {
        return Some(0);
    }
    let keep = peak.next_power_of_two().max(BUF_FLOOR);
    (capacity > BUF_FLOOR && peak * 4 <= capacity && keep < capacity).then_some(keep)
}

/// Shrinks `v` per [`trimmed_capacity`]; returns the bytes of capacity given back.
pub(super) fn trim_vec(v: &mut Vec<u8>, peak: usize) -> usize {
    let before = v.capacity();
    match trimmed_capacity(before, v.len(), peak) {
        Some(0) => *v = Vec::new(),
        Some(keep) => v.shrink_to(keep),
        None => return 0,
    }
    before.saturating_sub(v.capacity())
}

/// A [`std::io::Write`] that appends to a `Vec` growing it with [`reserve_within`]: rustls
/// writes TLS records through it, so the TLS output buffer grows like the cell queue.
pub(super) struct GrowWithin<'a> {
    pub v: &'a mut Vec<u8>,
    pub cap: usize,
    /// Bytes at the front of `v` already sent (they do not count against the bound).
    pub start: &'a mut usize,
}

impl GrowWithin<'_> {
    /// Makes room for `n` more bytes: drops the sent prefix first when they would not fit
    /// (rather than growing past the cap by what was already sent), then grows within it.
    fn room_for(&mut self, n: usize) {
        if self.v.len() + n > self.v.capacity() && *self.start > 0 {
            self.v.drain(..*self.start);
            *self.start = 0;
        }
        reserve_within(self.v, n, self.cap);
    }
}

impl std::io::Write for GrowWithin<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.room_for(data.len());
        self.v.extend_from_slice(data);
        Ok(data.len())
    }

    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        let n = bufs.iter().map(|b| b.len()).sum();
        self.room_for(n);
        for b in bufs {
            self.v.extend_from_slice(b);
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Plaintext cells waiting for TLS, bounded.
#[derive(Debug)]
pub struct CellQueue {
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already sealed into TLS records (a channel on Fors's
    /// record layer seals as much as the send buffer takes: `Channel::write_output_into`).
    start: usize,
    max_bytes: usize,
    /// Most bytes `buf` held since the last [`trim`](Self::trim).
    peak: usize,
    /// TLS bytes produced but not yet taken by the caller; they count against the bound.
    pub(super) tls_pending: usize,
    pub(super) open: bool,
}

impl CellQueue {
    pub(super) fn new(max_cells: usize) -> Self {
        let max_bytes = max_cells.max(1) * CELL_LEN;
        CellQueue {
            buf: Vec::new(),
            start: 0,
            max_bytes,
            peak: 0,
            tls_pending: 0,
            open: false,
        }
    }

    fn used(&self) -> usize {
        self.buf.len() - self.start + self.tls_pending
    }

    /// How many more fixed cells [`send_cell`](Self::send_cell) would accept now.
    pub fn free_cells(&self) -> usize {
        self.max_bytes.saturating_sub(self.used()) / CELL_LEN
    }

    /// Queues a fixed-length cell (link ≥ 4 framing: 4-byte circuit ID). Fails with
    /// `OutputFull` at the bound and `NotOpen` before the handshake has finished.
    pub fn send_cell(
        &mut self,
        circ_id: CircId,
        cmd: ChanCmd,
        body: &[u8; CELL_BODY_LEN],
    ) -> Result<(), ChannelError> {
        self.send_cell_with(circ_id, cmd, |b| {
            copies::note(CopySite::ChanQueue, CELL_BODY_LEN);
            b.copy_from_slice(body)
        })
    }

    /// Queues a fixed-length cell whose body `fill` writes in place (e.g. relay crypto
    /// encrypting straight into the queue). `fill` is not called if the cell is refused.
    pub fn send_cell_with(
        &mut self,
        circ_id: CircId,
        cmd: ChanCmd,
        fill: impl FnOnce(&mut [u8; CELL_BODY_LEN]),
    ) -> Result<(), ChannelError> {
        if !self.open {
            return Err(ChannelError::NotOpen);
        }
        if self.used() + CELL_LEN > self.max_bytes {
            return Err(ChannelError::OutputFull);
        }
        self.drop_sealed_before_growth(CELL_LEN);
        let start = self.buf.len();
        reserve_within(&mut self.buf, CELL_LEN, self.max_bytes + HANDSHAKE_SLACK);
        self.buf.resize(start + CELL_LEN, 0);
        let cell = &mut self.buf[start..];
        cell[..4].copy_from_slice(&circ_id.0.to_be_bytes());
        cell[4] = cmd.0;
        let body: &mut [u8; CELL_BODY_LEN] = (&mut cell[5..])
            .try_into()
            .expect("CELL_LEN - 5 == CELL_BODY_LEN");
        fill(body);
        Ok(())
    }

    /// Appends handshake bytes (already framed), ignoring the bound.
    pub(super) fn push_raw(&mut self, wire: &[u8]) {
        self.drop_sealed_before_growth(wire.len());
        reserve_within(&mut self.buf, wire.len(), self.max_bytes + HANDSHAKE_SLACK);
        self.buf.extend_from_slice(wire);
    }

    /// Moves the cells not yet sealed to the front when `extra` more bytes would not fit
    /// (rather than growing the buffer by what was already sealed). Happens only when
    /// cells are queued between a partial seal and the next `pending_output`, which seals
    /// the rest.
    fn drop_sealed_before_growth(&mut self, extra: usize) {
        if self.start > 0 && self.buf.len() + extra > self.buf.capacity() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    pub(super) fn plaintext(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// The first `n` bytes of [`plaintext`](Self::plaintext) were sealed.
    pub(super) fn consume_plaintext(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.clear_plaintext();
        }
    }

    pub(super) fn clear_plaintext(&mut self) {
        // The queue only grows between clears: its length now is its peak since the last.
        self.peak = self.peak.max(self.buf.len());
        self.buf.clear();
        self.start = 0;
    }

    pub(super) fn is_empty(&self) -> bool {
        self.buf.len() == self.start
    }

    /// Nothing waits to go out: no cell queued and no TLS bytes the socket has not taken
    /// (channel padding counts only a drained channel as idle, padding-spec §2.2).
    pub fn is_drained(&self) -> bool {
        self.used() == 0
    }

    pub(super) fn over_high_water(&self) -> bool {
        self.used() * 4 >= self.max_bytes * 3
    }

    /// Bytes of buffer capacity held now (a burst's room until [`trim`](Self::trim)).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Gives back the room of a burst that has passed (see [`trimmed_capacity`]) and starts
    /// a new period of use. Returns the bytes given back. Call rarely (once a second).
    pub(super) fn trim(&mut self) -> usize {
        let n = trim_vec(&mut self.buf, self.peak);
        self.peak = self.buf.len();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_queue(max_cells: usize) -> CellQueue {
        let mut q = CellQueue::new(max_cells);
        q.open = true;
        q
    }

    fn fill(q: &mut CellQueue, n: usize) -> usize {
        let body = [7u8; CELL_BODY_LEN];
        (0..n)
            .take_while(|_| q.send_cell(CircId(1), ChanCmd::RELAY, &body).is_ok())
            .count()
    }

    #[test]
    fn room_doubles_from_the_floor_and_stops_at_the_cap() {
        let mut v = Vec::new();
        reserve_within(&mut v, 1, 100_000);
        assert_eq!(v.capacity(), BUF_FLOOR);
        v.resize(BUF_FLOOR, 0);
        reserve_within(&mut v, 1, 100_000);
        assert_eq!(v.capacity(), 2 * BUF_FLOOR);
        // Doubling stops at the cap...
        let mut v = vec![0u8; 60_000];
        v.shrink_to_fit();
        reserve_within(&mut v, 1, 100_000);
        assert_eq!(v.capacity(), 100_000);
        // ...unless what is written needs more (handshake bytes ignore the bound).
        v.resize(100_000, 0);
        reserve_within(&mut v, 10, 100_000);
        assert_eq!(v.capacity(), 100_010);
        // Room that is there is not reallocated.
        let p = v.as_ptr();
        v.truncate(10);
        reserve_within(&mut v, 50_000, 100_000);
        assert_eq!(v.as_ptr(), p);
    }

    /// The queue starts with nothing reserved, and refuses at exactly the bound it always
    /// had, whatever its capacity.
    #[test]
    fn an_empty_start_keeps_the_cell_bound() {
        for max_cells in [1, 7, 300] {
            let mut q = open_queue(max_cells);
            assert_eq!(q.capacity(), 0);
            assert_eq!(q.free_cells(), max_cells);
            assert_eq!(fill(&mut q, max_cells + 5), max_cells);
            let body = [0u8; CELL_BODY_LEN];
            assert_eq!(
                q.send_cell(CircId(1), ChanCmd::RELAY, &body),
                Err(ChannelError::OutputFull)
            );
            assert!(q.capacity() <= max_cells * CELL_LEN + HANDSHAKE_SLACK);
            assert!(q.capacity() >= max_cells * CELL_LEN);
            // TLS bytes not yet taken count against the bound as before.
            q.clear_plaintext();
            q.tls_pending = (max_cells - 1) * CELL_LEN;
            assert_eq!(fill(&mut q, 5), 1);
        }
    }

    #[test]
    fn a_burst_gives_its_room_back_and_a_busy_queue_keeps_it() {
        let mut q = open_queue(1000);
        // A burst of 800 cells, sealed and gone.
        assert_eq!(fill(&mut q, 800), 800);
        q.clear_plaintext();
        let burst = q.capacity();
        assert!(burst >= 800 * CELL_LEN);
        // The period with the burst in it keeps its room...
        assert_eq!(q.trim(), 0);
        assert_eq!(q.capacity(), burst);
        // ...a quiet period with a few cells shrinks it to the floor...
        assert_eq!(fill(&mut q, 3), 3);
        q.clear_plaintext();
        assert_eq!(q.trim(), burst - BUF_FLOOR);
        assert_eq!(q.capacity(), BUF_FLOOR);
        // ...and a period without a cell frees it.
        assert_eq!(q.trim(), BUF_FLOOR);
        assert_eq!(q.capacity(), 0);

        // Steady traffic of 100 cells per flush: after the first growth, no reallocation
        // (same buffer) across flushes and trims.
        assert_eq!(fill(&mut q, 100), 100);
        q.clear_plaintext();
        let (cap, ptr) = (q.capacity(), q.plaintext().as_ptr());
        for _ in 0..50 {
            for _ in 0..10 {
                assert_eq!(fill(&mut q, 100), 100);
                q.clear_plaintext();
            }
            assert_eq!(q.trim(), 0);
            assert_eq!((q.capacity(), q.plaintext().as_ptr()), (cap, ptr));
        }
    }

    #[test]
    fn trimmed_capacity_rules() {
        // Busy: over a quarter used, or already at the floor.
        assert_eq!(trimmed_capacity(64 * 1024, 0, 20 * 1024), None);
        assert_eq!(trimmed_capacity(BUF_FLOOR, 0, 100), None);
        assert_eq!(trimmed_capacity(0, 0, 0), None);
        // Unused: freed.
        assert_eq!(trimmed_capacity(64 * 1024, 0, 0), Some(0));
        assert_eq!(trimmed_capacity(BUF_FLOOR, 0, 0), Some(0));
        // Lightly used: a power of two over the use, at least the floor, never under `len`.
        assert_eq!(trimmed_capacity(64 * 1024, 0, 5000), Some(8192));
        assert_eq!(trimmed_capacity(64 * 1024, 9000, 100), Some(16384));
        assert_eq!(trimmed_capacity(64 * 1024, 0, 10), Some(BUF_FLOOR));
    }
}
