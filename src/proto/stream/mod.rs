//! Exit streams (tor-spec §"Opening streams", §"Closing streams", §"Remote hostname
//! lookup"; C tor `connection_edge.c`): the per-shard stream table and the socket-error →
//! END reason rule. Hostname rules and TTL clipping live in `exit::dns`.
//!
//! Streams are owned by the circuit core ([`crate::proto::circuit::RelayCore`]); this module
//! holds their state and the pure helpers, so it can be tested on its own.

use core::net::IpAddr;
use std::collections::HashMap;

use crate::cell::relay::msg::{BeginFlags, EndReason};
use crate::proto::circuit::CellQueue;
use crate::proto::flow::{StreamFlow, Windows};
use crate::proto::slab::ChunkSlab;

/// A stream as the shard knows it: an index into the stream table plus a generation, so a
/// handle kept after the stream closed is recognised as stale rather than hitting a reused
/// slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamHandle {
    pub(crate) idx: u32,
    pub(crate) gen: u32,
}

impl StreamHandle {
    /// A plain number for logs and caller-side maps.
    pub fn as_u64(self) -> u64 {
        (u64::from(self.gen) << 32) | u64::from(self.idx)
    }
}

/// Where an exit stream is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    /// BEGIN with a hostname: waiting for `dns_result`.
    Resolving,
    /// RESOLVE: waiting for `dns_result`; no connection will follow.
    ResolveOnly,
    /// `Action::Connect` issued; waiting for `stream_connected`.
    Connecting,
    /// CONNECTED sent; data flows.
    Open,
}

/// One exit stream.
#[derive(Debug)]
pub struct Stream {
    pub circ: u32,
    pub stream_id: u16,
    pub state: StreamState,
    pub port: u16,
    pub flags: BeginFlags,
    /// The address we connect / connected to, once known.
    pub addr: Option<IpAddr>,
    /// DNS TTL of `addr` (before clipping).
    pub ttl: u32,
    pub windows: Windows,
    /// We told the shard to stop reading this stream's socket.
    pub read_paused: bool,
    /// The shard says the socket's write side is full: hold stream SENDMEs.
    pub write_blocked: bool,
    /// DATA that arrived before CONNECTED (optimistic data), and DATA held while the
    /// write side is blocked.
    pub pending: CellQueue,
    /// Payload bytes in `pending`: the buffer toward the destination that XOFF watches.
    pub pending_bytes: u32,
    /// XON/XOFF state; used instead of stream windows on circuits with congestion control.
    pub flow: StreamFlow,
    /// Next stream of the same circuit (intrusive list), or `u32::MAX`.
    pub next_in_circ: u32,
}

/// Why a stream could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamTableError {
    #[error("stream table full")]
    Full,
    #[error("stream id already in use on this circuit")]
    Duplicate,
}

/// Stream slots allocated at a time (when a stream arrives and none is free; never per
/// cell).
pub const STREAM_CHUNK: usize = 1024;

/// The shard's exit streams: a slab bounded at construction plus an index by
/// (circuit slot, stream id). The index is sized at construction; the slab grows in chunks
/// of [`STREAM_CHUNK`] up to its bound (issue #13: the whole bound, 65,536 slots of ~180
/// bytes, cost an idle shard ~12 MB) and gives empty top chunks back after a peak
/// (`proto::slab`).
pub struct StreamTable {
    slots: ChunkSlab<Stream, STREAM_CHUNK>,
    by_id: HashMap<(u32, u16), u32>,
}

impl StreamTable {
    pub fn new(max_streams: usize) -> Self {
        let slots = ChunkSlab::new(max_streams);
        StreamTable {
            by_id: HashMap::with_capacity(slots.max()),
            slots,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound (entries are allocated up to it as streams arrive).
    pub fn capacity(&self) -> usize {
        self.slots.max()
    }

    /// Entries allocated now (live or free).
    pub fn allocated(&self) -> usize {
        self.slots.allocated()
    }

    pub fn insert(&mut self, s: Stream) -> Result<StreamHandle, StreamTableError> {
        let key = (s.circ, s.stream_id);
        if self.by_id.contains_key(&key) {
            return Err(StreamTableError::Duplicate);
        }
        let (idx, gen) = self.slots.insert(s).ok_or(StreamTableError::Full)?;
        self.by_id.insert(key, idx);
        Ok(StreamHandle { idx, gen })
    }

    pub fn find(&self, circ: u32, stream_id: u16) -> Option<StreamHandle> {
        let idx = *self.by_id.get(&(circ, stream_id))?;
        Some(StreamHandle {
            idx,
            gen: self.slots.gen(idx)?,
        })
    }

    pub fn get(&self, h: StreamHandle) -> Option<&Stream> {
        self.slots.get_checked(h.idx, h.gen)
    }

    pub fn get_mut(&mut self, h: StreamHandle) -> Option<&mut Stream> {
        self.slots.get_checked_mut(h.idx, h.gen)
    }

    /// The live handle for slot `idx` (for walking a circuit's stream list).
    pub fn handle_at(&self, idx: u32) -> Option<StreamHandle> {
        self.slots.get(idx)?;
        Some(StreamHandle {
            idx,
            gen: self.slots.gen(idx)?,
        })
    }

    /// Moves stream `h` to circuit slot `circ`, keeping its handle (the streams of a conflux
    /// set follow the set when the leg that held them closes). False if `h` is not live or
    /// `circ` already has a stream with its ID.
    pub fn move_to_circ(&mut self, h: StreamHandle, circ: u32) -> bool {
        let Some(s) = self.get(h) else {
            return false;
        };
        let (old, new) = ((s.circ, s.stream_id), (circ, s.stream_id));
        if old == new {
            return true;
        }
        if self.by_id.contains_key(&new) {
            return false;
        }
        self.by_id.remove(&old);
        self.by_id.insert(new, h.idx);
        if let Some(s) = self.slots.get_mut(h.idx) {
            s.circ = circ;
        }
        true
    }

    pub fn remove(&mut self, h: StreamHandle) -> Option<Stream> {
        self.slots.get_checked(h.idx, h.gen)?;
        let s = self.slots.remove(h.idx)?;
        self.by_id.remove(&(s.circ, s.stream_id));
        Some(s)
    }

    /// Gives empty chunks at the top back (one kept spare); the chunks released. Called
    /// from the shard's once-a-second housekeeping, never per cell.
    pub fn trim(&mut self) -> usize {
        self.slots.trim()
    }

    /// Chunks [`StreamTable::trim`] released so far.
    pub fn chunks_released(&self) -> u64 {
        self.slots.chunks_released()
    }
}

/// TTL every RESOLVED answer carries (C `RESOLVED_CLIPPED_TTL`, tor#40979: hides the exit's
/// DNS cache state). CONNECTED and END use `exit::dns::clip_dns_fuzzy_ttl` instead.
pub const RESOLVED_CLIPPED_TTL: u32 = 60;

/// Why an exit connection failed, as the shard saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectError {
    /// An OS errno from `connect`/`SO_ERROR`.
    Errno(i32),
    /// The shard's own connect timeout fired.
    Timeout,
}

/// C `errno_to_stream_end_reason`: which END reason a failed exit connection reports.
pub fn errno_to_stream_end_reason(e: i32) -> EndReason {
    use libc::*;
    match e {
        EPIPE => EndReason::Done,
        EBADF | EFAULT | EINVAL | EISCONN | ENOTSOCK | EPROTONOSUPPORT | EAFNOSUPPORT
        | ENOTCONN => EndReason::Internal,
        ENETUNREACH | EHOSTUNREACH | EACCES | EPERM => EndReason::NoRoute,
        ECONNREFUSED => EndReason::ConnectRefused,
        ECONNRESET => EndReason::ConnReset,
        ETIMEDOUT => EndReason::Timeout,
        ENOBUFS | ENOMEM | ENFILE | EADDRINUSE | EADDRNOTAVAIL | EMFILE => EndReason::ResourceLimit,
        _ => EndReason::Misc,
    }
}

impl ConnectError {
    pub fn end_reason(self) -> EndReason {
        match self {
            ConnectError::Errno(e) => errno_to_stream_end_reason(e),
            ConnectError::Timeout => EndReason::Timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(circ: u32, id: u16) -> Stream {
        Stream {
            circ,
            stream_id: id,
            state: StreamState::Connecting,
            port: 80,
            flags: BeginFlags(0),
            addr: None,
            ttl: 0,
            windows: Windows::stream(),
            read_paused: false,
            write_blocked: false,
            pending: CellQueue::default(),
            pending_bytes: 0,
            flow: StreamFlow::default(),
            next_in_circ: u32::MAX,
        }
    }

    #[test]
    fn table_bounds_duplicates_and_stale_handles() {
        let mut t = StreamTable::new(2);
        let a = t.insert(stream(1, 5)).unwrap();
        assert_eq!(
            t.insert(stream(1, 5)).unwrap_err(),
            StreamTableError::Duplicate
        );
        let b = t.insert(stream(2, 5)).unwrap();
        assert_eq!(t.insert(stream(3, 5)).unwrap_err(), StreamTableError::Full);
        assert_eq!(t.find(1, 5), Some(a));
        assert_eq!(t.remove(a).unwrap().circ, 1);
        assert!(t.get(a).is_none());
        let c = t.insert(stream(1, 6)).unwrap();
        assert_eq!(c.idx, a.idx);
        assert_ne!(c, a);
        assert!(t.remove(a).is_none());
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(b).unwrap().circ, 2);
    }

    #[test]
    fn table_grows_in_chunks_up_to_its_bound() {
        let max = STREAM_CHUNK + 2;
        let mut t = StreamTable::new(max);
        assert_eq!((t.allocated(), t.capacity()), (STREAM_CHUNK, max));
        let hs: Vec<_> = (0..max)
            .map(|i| t.insert(stream(i as u32, 1)).unwrap())
            .collect();
        assert_eq!(t.allocated(), max);
        assert_eq!(hs[STREAM_CHUNK + 1].idx as usize, STREAM_CHUNK + 1);
        assert_eq!(
            t.insert(stream(9999, 1)).unwrap_err(),
            StreamTableError::Full
        );
        // Entries of both chunks are found, moved and removed.
        assert_eq!(t.find(STREAM_CHUNK as u32, 1), Some(hs[STREAM_CHUNK]));
        assert!(t.move_to_circ(hs[STREAM_CHUNK], 77_777));
        assert_eq!(t.get(hs[STREAM_CHUNK]).unwrap().circ, 77_777);
        assert_eq!(t.handle_at(3), Some(hs[3]));
        assert!(t.remove(hs[STREAM_CHUNK + 1]).is_some());
        assert_eq!(t.len(), max - 1);
        assert!(t.handle_at(max as u32).is_none());
    }

    /// Issue #15: the empty top chunks of the slab go back after a peak (one spare kept);
    /// a stream left low keeps its handle and index entry; stale handles stay stale.
    #[test]
    fn empty_top_chunks_are_released_after_a_peak() {
        let max = 4 * STREAM_CHUNK;
        let mut t = StreamTable::new(max);
        let hs: Vec<_> = (0..max)
            .map(|i| t.insert(stream(i as u32, 1)).unwrap())
            .collect();
        for h in &hs[1..] {
            assert!(t.remove(*h).is_some());
        }
        assert_eq!(t.trim(), 2);
        assert_eq!(
            (t.allocated(), t.len(), t.chunks_released()),
            (2 * STREAM_CHUNK, 1, 2)
        );
        assert_eq!(t.get(hs[0]).unwrap().circ, 0);
        assert_eq!(t.find(0, 1), Some(hs[0]));
        let again: Vec<_> = (1..max)
            .map(|i| t.insert(stream(i as u32, 2)).unwrap())
            .collect();
        assert_eq!(t.allocated(), max);
        for (old, new) in hs[1..].iter().zip(&again) {
            assert_eq!(old.idx, new.idx);
            assert_ne!(old, new);
            assert!(t.get(*old).is_none() && t.remove(*old).is_none());
        }
    }

    #[test]
    fn errno_mapping_matches_c() {
        assert_eq!(
            errno_to_stream_end_reason(libc::ECONNREFUSED),
            EndReason::ConnectRefused
        );
        assert_eq!(
            errno_to_stream_end_reason(libc::ETIMEDOUT),
            EndReason::Timeout
        );
        assert_eq!(
            errno_to_stream_end_reason(libc::EHOSTUNREACH),
            EndReason::NoRoute
        );
        assert_eq!(
            errno_to_stream_end_reason(libc::ENETUNREACH),
            EndReason::NoRoute
        );
        assert_eq!(
            errno_to_stream_end_reason(libc::ECONNRESET),
            EndReason::ConnReset
        );
        assert_eq!(
            errno_to_stream_end_reason(libc::EMFILE),
            EndReason::ResourceLimit
        );
        assert_eq!(errno_to_stream_end_reason(libc::EIO), EndReason::Misc);
        assert_eq!(ConnectError::Timeout.end_reason(), EndReason::Timeout);
    }
}
