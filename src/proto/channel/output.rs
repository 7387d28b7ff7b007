//! [`CellQueue`]: the bounded queue of plaintext cells a channel has yet to hand to TLS.
//!
//! It is a separate value so the circuit layer can answer a cell (CREATED2, a forwarded
//! RELAY...) from inside the receive callback, which gets `&mut CellQueue` while the channel
//! is busy reading. Its buffer is allocated once with room for the configured bound, so
//! queueing a cell never allocates.

use super::error::ChannelError;
use crate::cell::{ChanCmd, CircId, CELL_BODY_LEN, CELL_LEN};
use crate::util::copies::{self, CopySite};

/// Room beyond the cell bound for the handshake cells (CERTS is ~2 KiB), which are queued
/// regardless of the bound.
const HANDSHAKE_SLACK: usize = 8 * 1024;

/// Plaintext cells waiting for TLS, bounded.
#[derive(Debug)]
pub struct CellQueue {
    buf: Vec<u8>,
    max_bytes: usize,
    /// TLS bytes produced but not yet taken by the caller; they count against the bound.
    pub(super) tls_pending: usize,
    pub(super) open: bool,
}

impl CellQueue {
    pub(super) fn new(max_cells: usize) -> Self {
        let max_bytes = max_cells.max(1) * CELL_LEN;
        CellQueue {
            buf: Vec::with_capacity(max_bytes + HANDSHAKE_SLACK),
            max_bytes,
            tls_pending: 0,
            open: false,
        }
    }

    fn used(&self) -> usize {
        self.buf.len() + self.tls_pending
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
        let start = self.buf.len();
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
        self.buf.extend_from_slice(wire);
    }

    pub(super) fn plaintext(&self) -> &[u8] {
        &self.buf
    }

    pub(super) fn clear_plaintext(&mut self) {
        self.buf.clear();
    }

    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Nothing waits to go out: no cell queued and no TLS bytes the socket has not taken
    /// (channel padding counts only a drained channel as idle, padding-spec §2.2).
    pub fn is_drained(&self) -> bool {
        self.used() == 0
    }

    pub(super) fn over_high_water(&self) -> bool {
        self.used() * 4 >= self.max_bytes * 3
    }
}
