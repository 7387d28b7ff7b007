//! Connection table entries, connection ids and the io_uring user_data encoding.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;

use io_uring::types::Timespec;

/// A shard-local connection handle: table slot plus a generation, so a handle to a closed
/// connection never reaches the connection that later reuses the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(crate) slot: u32,
    pub(crate) gen: u32,
}

impl ConnId {
    /// The table slot (unique among this shard's open connections).
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// A handle made by an in-memory stand-in for the shard (tests of the relay node);
    /// the shard itself makes its ids from its connection table.
    #[doc(hidden)]
    pub fn from_parts(slot: u32, gen: u32) -> ConnId {
        ConnId { slot, gen }
    }
}

/// Index of a shard in the runtime: the one shard-index type of the shard runtime and the
/// relay (below [`ShardId::LIMIT`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub usize);

impl ShardId {
    /// Shards one runtime may run. The relay names a channel for the circuit core with its
    /// shard in one byte (`proto::circuit::ChanId`), so a 257th shard would alias shard 0;
    /// the runtime refuses more (`RuntimeConfig::validate`), and `NumCPUs` and the
    /// automatic count stay below.
    pub const LIMIT: usize = 256;
}

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a completion belongs to (top byte of user_data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum OpKind {
    Accept = 1,
    Recv = 2,
    Send = 3,
    SendZc = 4,
    Connect = 5,
    ConnectTimeout = 6,
    /// A cancel aimed at a connection's op (counted in that connection's in-flight ops).
    ConnCancel = 7,
    WakeRead = 8,
    Tick = 9,
    /// Wake-up write to another shard's eventfd.
    WakeWrite = 10,
    /// A cancel of a shard-level op (accept/tick/wake) during shutdown.
    Cancel = 11,
    /// A readiness watch's multishot poll (`slot` is the watch index).
    Watch = 12,
}

impl OpKind {
    fn from_u8(v: u8) -> Option<OpKind> {
        use OpKind::*;
        Some(match v {
            1 => Accept,
            2 => Recv,
            3 => Send,
            4 => SendZc,
            5 => Connect,
            6 => ConnectTimeout,
            7 => ConnCancel,
            8 => WakeRead,
            9 => Tick,
            10 => WakeWrite,
            11 => Cancel,
            12 => Watch,
            _ => return None,
        })
    }
}

/// user_data = kind (8 bits) | slot (24 bits) | aux (32 bits). `aux` is the generation for
/// connection ops and the send-buffer index for sends (which a slot cannot outlive, because a
/// slot is reused only once its in-flight count is zero).
pub(crate) fn user_data(kind: OpKind, slot: u32, aux: u32) -> u64 {
    ((kind as u64) << 56) | (u64::from(slot & 0x00ff_ffff) << 32) | u64::from(aux)
}

pub(crate) fn decode(ud: u64) -> Option<(OpKind, u32, u32)> {
    let kind = OpKind::from_u8((ud >> 56) as u8)?;
    Some((kind, ((ud >> 32) & 0x00ff_ffff) as u32, ud as u32))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnState {
    Free,
    /// Outbound connect in flight.
    Connecting,
    Open,
    /// Close started; waiting for in-flight ops before the slot is reused.
    Closing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecvState {
    Idle,
    Armed,
    /// Cancel submitted, final CQE not yet seen.
    Cancelling,
}

/// Uncapped reads in a row after which a connection that read with single receives (for
/// its caps) goes back to a multishot one.
pub(crate) const UNCAPPED_READS_TO_MULTISHOT: u8 = 4;

/// One connection-table slot. Slots live in [`ConnTable`]'s chunks, which never move, so
/// addresses handed to the kernel (connect sockaddr, timeout) stay valid.
pub(crate) struct Conn {
    pub state: ConnState,
    pub gen: u32,
    pub socket: Option<socket2::Socket>,
    pub peer: Option<SocketAddr>,
    pub connect_addr: Option<socket2::SockAddr>,
    pub connect_timeout: Timespec,
    pub recv: RecvState,
    /// The armed receive is multishot (it runs until cancelled).
    pub recv_multishot: bool,
    /// The most bytes the next receive may take (`Outbox::set_read_cap`; 0: a whole
    /// buffer).
    pub read_cap: u32,
    /// Receives are single-shot from the first cap on, so each can carry its own cap (a
    /// multishot receive takes one length for all).
    pub recv_single: bool,
    /// Uncapped reads in a row since the last cap: after [`UNCAPPED_READS_TO_MULTISHOT`]
    /// the connection goes back to a multishot receive.
    pub uncapped_reads: u8,
    /// The handler wants data (not paused, not closing).
    pub want_read: bool,
    pub send_inflight: bool,
    /// Send queue: ring of pool-buffer indices in the flat `sendq` array.
    pub sq_head: u32,
    pub sq_len: u32,
    /// Bytes of the front buffer already accepted by the kernel.
    pub front_off: u32,
    /// Buffers this connection has finished with that a zero-copy send still pins (freed by
    /// the notification). They count against `max_send_bufs_per_conn` like queued buffers:
    /// the kernel holds them until the peer acknowledges the data, so without this one
    /// connection with a large socket send buffer could hold most of the shared pool.
    pub zc_held: u32,
    /// A send was refused for lack of room: the connection is in the shard's writer wait
    /// list and gets one `on_writable` when room is back.
    pub blocked: bool,
    pub close_after_flush: bool,
    /// Operations whose final CQE has not arrived (the slot cannot be reused before 0).
    pub inflight: u32,
    /// Its `Closed` event is queued but the handler has not seen it yet. The slot is not
    /// reused before: a connection accepted in the same batch would take the slot, and the
    /// handler would see the new connection before the old one's close.
    pub close_unreported: bool,
    /// Which bandwidth buckets the connection's bytes are charged to.
    pub bw_class: super::ratelimit::BwClass,
    /// Waiting in the shard's bandwidth wait list for write tokens.
    pub bw_write_wait: bool,
    /// Reads go on while the read buckets are empty (still charged): a link handshake.
    pub bw_read_ungated: bool,
    /// Bytes of the send in flight (charged at submission, the unsent rest refunded).
    pub send_len: u32,
}

impl Conn {
    pub fn new() -> Conn {
        Conn {
            state: ConnState::Free,
            gen: 0,
            socket: None,
            peer: None,
            connect_addr: None,
            connect_timeout: Timespec::new(),
            recv: RecvState::Idle,
            recv_multishot: false,
            read_cap: 0,
            recv_single: false,
            uncapped_reads: 0,
            want_read: false,
            send_inflight: false,
            sq_head: 0,
            sq_len: 0,
            front_off: 0,
            zc_held: 0,
            blocked: false,
            close_after_flush: false,
            inflight: 0,
            close_unreported: false,
            bw_class: super::ratelimit::BwClass::Global,
            bw_write_wait: false,
            bw_read_ungated: false,
            send_len: 0,
        }
    }

    /// Fresh state for a new connection in this slot (generation kept).
    pub fn reset(&mut self, state: ConnState, socket: socket2::Socket, peer: Option<SocketAddr>) {
        let gen = self.gen;
        *self = Conn::new();
        self.gen = gen;
        self.state = state;
        self.socket = Some(socket);
        self.peer = peer;
        self.want_read = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trip() {
        let ud = user_data(OpKind::SendZc, 0x00ab_cdef, 0xdead_beef);
        assert_eq!(decode(ud), Some((OpKind::SendZc, 0x00ab_cdef, 0xdead_beef)));
        assert_eq!(decode(0), None);
        assert_eq!(decode(0xff << 56), None);
    }
}

/// Connection slots allocated at a time.
pub(crate) const CONN_CHUNK: usize = 256;

/// The shard's connection slots, allocated in chunks of [`CONN_CHUNK`] as connections
/// arrive, up to `max_connections` (issue #13: a slot is about 200 bytes, so the whole
/// bound of a generic profile, 73,728 slots, cost an idle shard ~16 MB), and given back
/// after a peak (issue #15), the way `proto::slab::ChunkSlab` does for circuits:
///
/// - A chunk is a boxed slice that never moves while allocated: the kernel may hold
///   pointers into a slot (connect address, timeout) while an operation is in flight.
/// - The free slot with the lowest index is taken first, so after a peak the live
///   connections gather in the low chunks and the high ones empty out.
/// - [`trim`](Self::trim) frees wholly free chunks at the top, keeping one as hysteresis.
///   A slot is free only once nothing in the kernel refers to it (`Core::maybe_finalize`),
///   so a released chunk is no longer referenced by anything.
/// - A chunk grown again at a place that was released starts its slots' generations above
///   every generation the old chunk held, so a `ConnId` from before never names a later
///   connection.
pub(crate) struct ConnTable {
    chunks: Vec<Box<[Conn]>>,
    /// Slots allocated (valid indices are below this).
    len: usize,
    max: usize,
    /// Free slots of allocated chunks, lowest on top. Capacity `max`: never reallocates.
    free: BinaryHeap<Reverse<u32>>,
    /// Free slots per allocated chunk.
    free_in: Vec<u32>,
    /// Per chunk position: the highest generation a released chunk there held.
    gen_floor: Vec<u32>,
    /// Chunks given back by `trim` since start-up (a metric).
    released: u64,
}

impl ConnTable {
    /// A table bounded by `max` slots, with its first chunk allocated.
    pub fn new(max: usize) -> ConnTable {
        let positions = max.div_ceil(CONN_CHUNK);
        let mut t = ConnTable {
            chunks: Vec::with_capacity(positions),
            len: 0,
            max,
            free: BinaryHeap::with_capacity(max),
            free_in: Vec::with_capacity(positions),
            gen_floor: vec![0; positions],
            released: 0,
        };
        t.grow();
        t
    }

    /// Slots allocated now.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Chunks given back by [`trim`](Self::trim) so far.
    pub fn chunks_released(&self) -> u64 {
        self.released
    }

    /// Some allocated slot is free.
    pub fn has_free(&self) -> bool {
        !self.free.is_empty()
    }

    /// Adds a chunk of free slots; false at the bound.
    pub fn grow(&mut self) -> bool {
        let n = CONN_CHUNK.min(self.max - self.len);
        if n == 0 {
            return false;
        }
        let gen = self.gen_floor[self.chunks.len()];
        self.chunks.push(
            (0..n)
                .map(|_| {
                    let mut c = Conn::new();
                    c.gen = gen;
                    c
                })
                .collect(),
        );
        self.free_in.push(n as u32);
        let first = self.len as u32;
        self.len += n;
        self.free.extend((first..self.len as u32).map(Reverse));
        true
    }

    /// Takes the lowest free slot (its `Conn` is `Free`), if any.
    pub fn take_free(&mut self) -> Option<u32> {
        let Reverse(slot) = self.free.pop()?;
        self.free_in[slot as usize / CONN_CHUNK] -= 1;
        Some(slot)
    }

    /// Returns `slot` (taken by [`take_free`](Self::take_free), now unused) to the free set.
    pub fn put_free(&mut self, slot: u32) {
        debug_assert!((slot as usize) < self.len);
        self.free_in[slot as usize / CONN_CHUNK] += 1;
        self.free.push(Reverse(slot));
    }

    /// Frees the wholly free chunks at the top but one (the first chunk is always kept).
    /// Returns how many were released. Work: one pass over the free set when a chunk goes
    /// (at most `max` entries, once a second at most), none otherwise.
    pub fn trim(&mut self) -> usize {
        let whole = |t: &ConnTable, c: usize| t.free_in[c] as usize == t.chunks[c].len();
        let mut top = self.chunks.len();
        while top > 1 && whole(self, top - 1) {
            top -= 1;
        }
        // `top` is the number of chunks below the free run; keep one free chunk above it.
        let keep = (top + 1).min(self.chunks.len());
        if keep >= self.chunks.len() {
            return 0;
        }
        let released = self.chunks.len() - keep;
        for pos in keep..self.chunks.len() {
            let high = self.chunks[pos].iter().map(|c| c.gen).max().unwrap_or(0);
            self.gen_floor[pos] = self.gen_floor[pos].max(high);
        }
        self.chunks.truncate(keep);
        self.free_in.truncate(keep);
        self.len = self.chunks.iter().map(|c| c.len()).sum();
        let len = self.len as u32;
        self.free.retain(|&Reverse(s)| s < len);
        self.released += released as u64;
        released
    }

    pub fn get(&self, slot: usize) -> Option<&Conn> {
        self.chunks.get(slot / CONN_CHUNK)?.get(slot % CONN_CHUNK)
    }

    pub fn get_mut(&mut self, slot: usize) -> Option<&mut Conn> {
        self.chunks
            .get_mut(slot / CONN_CHUNK)?
            .get_mut(slot % CONN_CHUNK)
    }
}

impl std::ops::Index<usize> for ConnTable {
    type Output = Conn;
    fn index(&self, slot: usize) -> &Conn {
        &self.chunks[slot / CONN_CHUNK][slot % CONN_CHUNK]
    }
}

impl std::ops::IndexMut<usize> for ConnTable {
    fn index_mut(&mut self, slot: usize) -> &mut Conn {
        &mut self.chunks[slot / CONN_CHUNK][slot % CONN_CHUNK]
    }
}

#[cfg(test)]
mod table_tests {
    use super::*;

    #[test]
    fn conn_slots_grow_in_chunks_to_the_bound_and_stay_put() {
        let max = 2 * CONN_CHUNK + 3;
        let mut t = ConnTable::new(max);
        assert_eq!(t.len(), CONN_CHUNK);
        assert!(t.get(CONN_CHUNK).is_none());
        // The kernel may hold the address of a slot's fields: growth must not move it.
        let before: *const Conn = &t[5];
        t[5].gen = 9;
        assert!(t.grow());
        assert_eq!(t.len(), 2 * CONN_CHUNK);
        assert!(t.grow());
        assert!(!t.grow());
        assert_eq!(t.len(), max);
        assert!(std::ptr::eq(before, &t[5]));
        assert_eq!(t[5].gen, 9);
        t[max - 1].gen = 4;
        assert_eq!(t.get(max - 1).map(|c| c.gen), Some(4));
        assert!(t.get(max).is_none() && t.get_mut(max).is_none());
        assert_eq!(t[CONN_CHUNK].state, ConnState::Free);
    }

    /// Takes every free slot, lowest first, growing like `Core::install`.
    fn take(t: &mut ConnTable) -> Option<u32> {
        if !t.has_free() {
            t.grow();
        }
        t.take_free()
    }

    #[test]
    fn lowest_slot_first_and_top_chunks_released_but_one() {
        let max = 8 * CONN_CHUNK;
        let mut t = ConnTable::new(max);
        // A peak of 6 chunks' worth, in slot order.
        let held: Vec<u32> = (0..6 * CONN_CHUNK).map(|_| take(&mut t).unwrap()).collect();
        assert!(held.iter().enumerate().all(|(i, &s)| s as usize == i));
        assert_eq!(t.len(), 6 * CONN_CHUNK);
        // Nothing free: nothing to release.
        assert_eq!(t.trim(), 0);
        // Everything closes but one connection in chunk 0 and one in chunk 3.
        for &s in &held {
            if s != 7 && s as usize != 3 * CONN_CHUNK + 1 {
                t[s as usize].gen += 1;
                t.put_free(s);
            }
        }
        // Chunks 4 and 5 are free: 5 goes, 4 stays as hysteresis.
        assert_eq!(t.trim(), 1);
        assert_eq!((t.len(), t.chunks_released()), (5 * CONN_CHUNK, 1));
        assert_eq!(t.trim(), 0);
        // New connections fill the low chunks first, so the high ones stay empty.
        for i in 0..10u32 {
            let s = take(&mut t).unwrap();
            assert_eq!(s, if i < 7 { i } else { i + 1 });
        }
        // The connection in chunk 3 closes: chunks 1..=4 are free, 2..=4 go.
        t[3 * CONN_CHUNK + 1].gen += 1;
        t.put_free(3 * CONN_CHUNK as u32 + 1);
        assert_eq!(t.trim(), 3);
        assert_eq!((t.len(), t.chunks_released()), (2 * CONN_CHUNK, 4));
        assert!(t.get(2 * CONN_CHUNK).is_none());
        // Only slots of kept chunks are handed out.
        let mut n = 0;
        while let Some(s) = t.take_free() {
            assert!((s as usize) < 2 * CONN_CHUNK);
            n += 1;
        }
        assert_eq!(n, 2 * CONN_CHUNK - 11);
    }

    #[test]
    fn a_regrown_chunk_starts_above_the_old_generations() {
        let mut t = ConnTable::new(4 * CONN_CHUNK);
        let held: Vec<u32> = (0..3 * CONN_CHUNK).map(|_| take(&mut t).unwrap()).collect();
        let old = ConnId {
            slot: 2 * CONN_CHUNK as u32 + 5,
            gen: t[2 * CONN_CHUNK + 5].gen,
        };
        // The connection behind `old` (and everything else) closes: generations move on.
        for &s in &held {
            t[s as usize].gen = t[s as usize].gen.wrapping_add(1);
            t.put_free(s);
        }
        t[2 * CONN_CHUNK + 9].gen = 40;
        assert_eq!(t.trim(), 1);
        assert!(t.get(old.slot as usize).is_none());
        // Grown again at the same place: every slot starts at the chunk's highest.
        while take(&mut t).is_some_and(|s| (s as usize) < 2 * CONN_CHUNK) {}
        assert_eq!(t.len(), 3 * CONN_CHUNK);
        for s in 2 * CONN_CHUNK..3 * CONN_CHUNK {
            assert_eq!(t[s].gen, 40);
        }
        assert_ne!(t[old.slot as usize].gen, old.gen);
    }
}
