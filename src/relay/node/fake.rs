//! An in-memory stand-in for a shard, for tests of the node without a ring or a socket.
//!
//! [`FakeShard`] implements [`ShardIo`] the way the shard's `Outbox` behaves (a bounded
//! pending output per connection, `Full` and short sends that owe an `on_writable`, close
//! after flush, bounded cross-shard queues) and records every operation in [`FakeShard::ops`].
//! Its clocks are fields the test moves. The test plays the kernel and the event loop: it
//! takes what was sent ([`FakeShard::take_output`]), feeds bytes back with the node's
//! `on_data`, and delivers what [`FakeShard::writable_due`], [`FakeShard::closes_due`] and
//! [`FakeShard::take_cross`] say is due.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant, SystemTime};

use crate::shard::{
    BwClass, ConnId, CrossPushError, Filled, OutboxError, ShardId, ShardIo, ShardMetrics, WatchId,
};

/// One I/O operation a node asked for, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Bytes accepted for `conn` (all of a `send`, or the part a `send_partial` took).
    Send {
        conn: ConnId,
        len: usize,
    },
    /// A send refused (`Full`) or cut short: `on_writable` is owed.
    Refused {
        conn: ConnId,
    },
    Close {
        conn: ConnId,
    },
    PauseRead {
        conn: ConnId,
    },
    ResumeRead {
        conn: ConnId,
    },
    Connect {
        conn: ConnId,
        addr: SocketAddr,
        from: Option<IpAddr>,
        nodelay: bool,
    },
    BwClass {
        conn: ConnId,
        class: BwClass,
    },
    BwReadUngated {
        conn: ConnId,
        ungated: bool,
    },
    /// The node said the link handshake completed (`ShardIo::set_authenticated`).
    Authenticated {
        conn: ConnId,
    },
    /// An item queued toward shard `to`.
    PushCross {
        to: ShardId,
    },
    /// A push refused because the queue toward `to` was full.
    CrossFull {
        to: ShardId,
    },
}

/// A connection of the fake shard.
#[derive(Debug)]
pub struct FakeConn {
    pub peer: SocketAddr,
    /// Sent by the node and not yet taken by the test (the socket's pending output).
    pub pending: Vec<u8>,
    /// The pending-output bound (`send` refuses beyond it).
    pub bound: usize,
    /// A send was refused or cut short since the last `on_writable`.
    pub owes_writable: bool,
    pub read_paused: bool,
    /// The cap the node last set on the next read (`set_read_cap`); a test that models
    /// the shard's receives honours it (not recorded in `ops`: it is set on every read).
    pub read_cap: Option<usize>,
    /// `close` was asked: closes once `pending` is taken.
    pub closing: bool,
    pub outbound: bool,
    pub bw_class: BwClass,
    pub read_ungated: bool,
    /// Free bytes at the end of the last send buffer, which `send_with` offers first (the
    /// shard offers the free rest of its tail buffer before fresh ones). Kept as the
    /// shard's buffers would leave it; a test may set it to model a tail of a few bytes.
    pub tail_free: usize,
}

/// The size of the receive buffers the fake models: the shipped profiles' 16 KiB plus the
/// slack the shard adds (`RECV_BUF_SLACK`).
pub const FAKE_RECV_BUF: usize = 16 * 1024 + crate::config::hwprofile::RECV_BUF_SLACK as usize;

/// The size of the send buffers the fake models (the shard's default `send_buf_size`).
pub const FAKE_SEND_BUF: usize = 16 * 1024;

impl FakeConn {
    /// `n` bytes appended through `send`/`send_partial`: into the tail's free rest, then
    /// into fresh buffers, as the shard's send queue takes them.
    fn appended(&mut self, n: usize) {
        if n <= self.tail_free {
            self.tail_free -= n;
        } else {
            let rest = (n - self.tail_free) % FAKE_SEND_BUF;
            self.tail_free = if rest == 0 { 0 } else { FAKE_SEND_BUF - rest };
        }
    }
}

/// The fake shard: connections, cross-shard queues, clocks, and the log of operations.
pub struct FakeShard<M> {
    pub shard: ShardId,
    pub shard_count: usize,
    pub now: Instant,
    pub wall: SystemTime,
    /// Live connections by id (ordered, so a test's walk is reproducible).
    pub conns: BTreeMap<ConnId, FakeConn>,
    /// Every operation asked for, in order (tests clear it as they go).
    pub ops: Vec<Op>,
    /// The bound new connections get.
    pub default_bound: usize,
    /// Items queued toward each shard (index = shard), in push order.
    pub cross: Vec<VecDeque<M>>,
    /// Slots of each cross-shard queue.
    pub cross_capacity: usize,
    /// What `recv_ring_bytes` reports (the generic profile's 256 buffers of 16 KiB).
    pub recv_ring_bytes: usize,
    next_slot: u32,
    metrics: ShardMetrics,
    /// A provided receive buffer's size (`ShardIo::recv_buf_size`; a test that models the
    /// shard's reads cuts them at most this long).
    pub recv_buf_size: usize,
}

impl<M> FakeShard<M> {
    /// Shard `shard` of `shard_count`, with generous bounds; the clocks start now.
    pub fn new(shard: usize, shard_count: usize) -> FakeShard<M> {
        FakeShard {
            shard: ShardId(shard),
            shard_count,
            now: Instant::now(),
            wall: SystemTime::now(),
            conns: BTreeMap::new(),
            ops: Vec::new(),
            default_bound: 1 << 20,
            cross: (0..shard_count).map(|_| VecDeque::new()).collect(),
            cross_capacity: 1024,
            recv_ring_bytes: 256 * 16 * 1024,
            recv_buf_size: FAKE_RECV_BUF,
            next_slot: 0,
            metrics: ShardMetrics::default(),
        }
    }

    /// Moves both clocks forward.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.wall += d;
    }

    /// A connection arriving from `peer` (the test then calls the node's `on_accept`).
    pub fn accept(&mut self, peer: SocketAddr) -> ConnId {
        self.open(peer, false)
    }

    fn open(&mut self, peer: SocketAddr, outbound: bool) -> ConnId {
        // Slots are never reused: a stale id can never reach a new connection.
        let id = ConnId::from_parts(self.next_slot, 1);
        self.next_slot += 1;
        self.conns.insert(
            id,
            FakeConn {
                peer,
                pending: Vec::new(),
                bound: self.default_bound,
                owes_writable: false,
                read_paused: false,
                read_cap: None,
                closing: false,
                outbound,
                bw_class: BwClass::Global,
                read_ungated: false,
                tail_free: 0,
            },
        );
        id
    }

    /// Takes everything sent on `conn` so far (the kernel wrote it to the peer).
    pub fn take_output(&mut self, conn: ConnId) -> Vec<u8> {
        self.conns
            .get_mut(&conn)
            .map(|c| {
                // All sent: the shard releases every buffer, the tail with them.
                c.tail_free = 0;
                std::mem::take(&mut c.pending)
            })
            .unwrap_or_default()
    }

    /// Connections that owe `on_writable` and have drained to half their bound, as the
    /// shard reports them; clears their debt.
    pub fn writable_due(&mut self) -> Vec<ConnId> {
        let mut due = Vec::new();
        for (id, c) in &mut self.conns {
            if c.owes_writable && c.pending.len() <= c.bound / 2 && !c.closing {
                c.owes_writable = false;
                due.push(*id);
            }
        }
        due
    }

    /// Connections asked to close whose output was taken: forgotten here, and due an
    /// `on_closed(LocalClose)`.
    pub fn closes_due(&mut self) -> Vec<ConnId> {
        let due: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.closing && c.pending.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for id in &due {
            self.conns.remove(id);
        }
        due
    }

    /// Forgets `conn` (the peer closed it, or a connect failed): the test then calls the
    /// node's `on_closed` with the reason.
    pub fn drop_conn(&mut self, conn: ConnId) -> Option<FakeConn> {
        self.conns.remove(&conn)
    }

    /// Takes the items queued toward shard `to` (the harness delivers them there).
    pub fn take_cross(&mut self, to: usize) -> Vec<M> {
        self.cross
            .get_mut(to)
            .map(|q| q.drain(..).collect())
            .unwrap_or_default()
    }

    fn live(&self, conn: ConnId) -> Result<&FakeConn, OutboxError> {
        self.conns.get(&conn).ok_or(OutboxError::NotOpen)
    }

    fn live_mut(&mut self, conn: ConnId) -> Result<&mut FakeConn, OutboxError> {
        self.conns.get_mut(&conn).ok_or(OutboxError::NotOpen)
    }
}

impl<M> ShardIo<M> for FakeShard<M> {
    fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<(), OutboxError> {
        let c = self.live_mut(conn)?;
        if c.closing {
            return Err(OutboxError::NotOpen);
        }
        if c.pending.len() + data.len() > c.bound {
            c.owes_writable = true;
            self.ops.push(Op::Refused { conn });
            return Err(OutboxError::Full);
        }
        crate::util::copies::note(crate::util::copies::CopySite::SendPool, data.len());
        c.pending.extend_from_slice(data);
        c.appended(data.len());
        self.ops.push(Op::Send {
            conn,
            len: data.len(),
        });
        Ok(())
    }

    fn send_partial(&mut self, conn: ConnId, data: &[u8]) -> Result<usize, OutboxError> {
        let c = self.live_mut(conn)?;
        if c.closing {
            return Err(OutboxError::NotOpen);
        }
        let n = data.len().min(c.bound.saturating_sub(c.pending.len()));
        // The real shard copies into its send pool here (the copy map counts it).
        crate::util::copies::note(crate::util::copies::CopySite::SendPool, n);
        c.pending.extend_from_slice(&data[..n]);
        c.appended(n);
        let short = n < data.len();
        if short {
            c.owes_writable = true;
        }
        if n > 0 {
            self.ops.push(Op::Send { conn, len: n });
        }
        if short {
            self.ops.push(Op::Refused { conn });
        }
        Ok(n)
    }

    fn send_with(
        &mut self,
        conn: ConnId,
        fill: &mut dyn FnMut(&mut [u8]) -> Filled,
    ) -> Result<usize, OutboxError> {
        let c = self.live_mut(conn)?;
        if c.closing {
            return Err(OutboxError::NotOpen);
        }
        // As the shard offers them: the free rest of the tail buffer, then fresh ones.
        let mut written = 0;
        let mut tail = c.tail_free > 0;
        loop {
            let fresh = !tail;
            let room = if tail { c.tail_free } else { FAKE_SEND_BUF }
                .min(c.bound.saturating_sub(c.pending.len()));
            tail = false;
            if room == 0 {
                break;
            }
            let start = c.pending.len();
            c.pending.resize(start + room, 0);
            let f = fill(&mut c.pending[start..]);
            let n = f.written.min(room);
            // Only what was written is sent: the rest of the buffer stays unused.
            c.pending.truncate(start + n);
            if n == 0 && fresh {
                break;
            }
            c.tail_free = if fresh {
                FAKE_SEND_BUF - n
            } else {
                c.tail_free - n
            };
            written += n;
            if !f.more {
                break;
            }
        }
        if written > 0 {
            self.ops.push(Op::Send { conn, len: written });
        }
        Ok(written)
    }

    fn send_capacity(&self, conn: ConnId) -> usize {
        self.live(conn)
            .map(|c| c.bound.saturating_sub(c.pending.len()))
            .unwrap_or(0)
    }

    fn pending_output(&self, conn: ConnId) -> usize {
        self.live(conn).map(|c| c.pending.len()).unwrap_or(0)
    }

    fn close(&mut self, conn: ConnId) -> Result<(), OutboxError> {
        let c = self.live_mut(conn)?;
        c.closing = true;
        c.read_paused = true;
        self.ops.push(Op::Close { conn });
        Ok(())
    }

    fn pause_read(&mut self, conn: ConnId) -> Result<(), OutboxError> {
        self.live_mut(conn)?.read_paused = true;
        self.ops.push(Op::PauseRead { conn });
        Ok(())
    }

    fn resume_read(&mut self, conn: ConnId) -> Result<(), OutboxError> {
        let c = self.live_mut(conn)?;
        if c.closing {
            return Err(OutboxError::NotOpen);
        }
        c.read_paused = false;
        self.ops.push(Op::ResumeRead { conn });
        Ok(())
    }

    fn set_read_cap(&mut self, conn: ConnId, cap: Option<usize>) -> Result<(), OutboxError> {
        self.live_mut(conn)?.read_cap = cap;
        Ok(())
    }

    fn set_bw_class(&mut self, conn: ConnId, class: BwClass) -> Result<(), OutboxError> {
        self.live_mut(conn)?.bw_class = class;
        self.ops.push(Op::BwClass { conn, class });
        Ok(())
    }

    fn set_bw_read_ungated(&mut self, conn: ConnId, ungated: bool) -> Result<(), OutboxError> {
        self.live_mut(conn)?.read_ungated = ungated;
        self.ops.push(Op::BwReadUngated { conn, ungated });
        Ok(())
    }

    fn bw_read_ungated(&self, conn: ConnId) -> bool {
        self.live(conn).is_ok_and(|c| c.read_ungated)
    }

    fn set_authenticated(&mut self, conn: ConnId) -> Result<(), OutboxError> {
        self.live(conn)?;
        self.ops.push(Op::Authenticated { conn });
        Ok(())
    }

    fn connect_from(
        &mut self,
        addr: SocketAddr,
        from: Option<IpAddr>,
        nodelay: bool,
    ) -> Result<ConnId, OutboxError> {
        let conn = self.open(addr, true);
        self.ops.push(Op::Connect {
            conn,
            addr,
            from,
            nodelay,
        });
        Ok(conn)
    }

    fn watch_readable(&mut self, _fd: BorrowedFd<'_>) -> Result<WatchId, OutboxError> {
        // No ring to poll with: the node falls back to reading on its tick.
        Err(OutboxError::TableFull)
    }

    fn push_cross(&mut self, to: ShardId, item: M) -> Result<(), CrossPushError<M>> {
        if to == self.shard {
            return Err(CrossPushError::NoSuchShard(item));
        }
        let cap = self.cross_capacity;
        let Some(q) = self.cross.get_mut(to.0) else {
            return Err(CrossPushError::NoSuchShard(item));
        };
        if q.len() >= cap {
            self.ops.push(Op::CrossFull { to });
            return Err(CrossPushError::Full(item));
        }
        q.push_back(item);
        self.ops.push(Op::PushCross { to });
        Ok(())
    }

    fn cross_space(&mut self, to: ShardId) -> (usize, usize) {
        match self.cross.get(to.0) {
            Some(q) if to != self.shard => (
                self.cross_capacity.saturating_sub(q.len()),
                self.cross_capacity,
            ),
            _ => (0, 0),
        }
    }

    fn peer(&self, conn: ConnId) -> Option<SocketAddr> {
        self.conns.get(&conn).map(|c| c.peer)
    }

    fn shard(&self) -> ShardId {
        self.shard
    }

    fn shard_count(&self) -> usize {
        self.shard_count
    }

    fn now(&self) -> Instant {
        self.now
    }

    fn wall(&self) -> SystemTime {
        self.wall
    }

    fn metrics(&self) -> &ShardMetrics {
        &self.metrics
    }

    fn recv_ring_bytes(&self) -> usize {
        self.recv_ring_bytes
    }
    fn recv_buf_size(&self) -> usize {
        self.recv_buf_size
    }
}
