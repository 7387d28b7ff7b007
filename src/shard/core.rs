//! Shard state that handler callbacks may act on through `Outbox`: the ring's submission
//! side, the connection table, send queues, the send pool and the cross-shard producers.
//!
//! Kept apart from the receive buffers and the handler so a callback can borrow received
//! bytes and this state at the same time.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::types::{Fd, Fixed, Timespec};
use io_uring::{opcode, squeue, IoUring};
use socket2::{Domain, SockAddr, Socket, Type};

use super::config::ShardConfig;
use super::conn::{
    user_data, ConnId, ConnState, ConnTable, OpKind, RecvState, ShardId, CONN_CHUNK,
};
use super::error::{CloseReason, CrossPushError, OutboxError};
use super::handler::Filled;

/// IORING_SEND_ZC_REPORT_USAGE (include/uapi/linux/io_uring.h): the notification says
/// whether the data was copied after all.
const IORING_SEND_ZC_REPORT_USAGE: u16 = 1 << 3;
use super::metrics::ShardMetrics;
use super::ratelimit::{BwClass, BwDir, ShardBuckets};
use super::sendpool::SendPool;
use super::slots::{Admit, SlotClass, Slots};
use super::spsc::Producer;
use super::watch::{Watch, WatchId, MAX_WATCHES};

/// The eventfd increment written to wake another shard (static: stable for the kernel).
static WAKE_ONE: [u8; 8] = 1u64.to_ne_bytes();

/// Deferred notifications for the handler, dispatched after the current callback returns.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    Closed(ConnId, CloseReason),
    Writable(ConnId),
}

/// Kernel-visible values with a stable heap address for the ring's lifetime.
pub(crate) struct Pinned {
    pub tick: Timespec,
    pub wake_buf: [u8; 8],
}

pub(crate) struct Core<M> {
    pub ring: IoUring,
    pub cfg: ShardConfig,
    pub shard: ShardId,
    pub shard_count: usize,
    /// Connection slots; free ones are taken lowest first and wholly free chunks at the
    /// top go back once a second (`trim_conn_table`).
    pub conns: ConnTable,
    /// When the connection table is next trimmed.
    next_conn_trim: Instant,
    /// Flat per-connection send queues: slot * max_send_bufs_per_conn + i.
    sendq: Vec<u32>,
    pub pool: SendPool,
    /// Use SEND_ZC from pool fixed buffer 0 (registration succeeded).
    fixed_send_buf: bool,
    /// Zero-copy sends ask whether the kernel copied anyway (`KernelFeatures::zc_report_usage`).
    pub zc_report_usage: bool,
    pub producers: Vec<Option<Producer<M>>>,
    pub peer_wake_fds: Vec<RawFd>,
    cross_dirty: Vec<bool>,
    /// Every connection owed an `on_writable` (`Conn::blocked`), oldest first, whatever ran
    /// out: its own bound or the shared pool. May hold stale ids of closed connections.
    write_waiters: Vec<ConnId>,
    /// Something that gives send room back happened (a send completed, a zero-copy
    /// notification arrived, a slot was freed) since the wait list was last checked.
    room_changed: bool,
    pub events: VecDeque<Event>,
    pub metrics: ShardMetrics,
    pub now: Instant,
    /// Operations submitted whose final CQE has not arrived.
    pub inflight_total: u64,
    pub stopping: bool,
    pub pinned: Box<Pinned>,
    /// Readiness watches (`Outbox::watch_readable`); never longer than `MAX_WATCHES`.
    pub watches: Vec<Watch>,
    /// Bandwidth buckets (BandwidthRate & co.); `None`: nothing is rate-limited.
    pub bw: Option<ShardBuckets>,
    /// Connections whose send waits for write tokens, oldest first (at most one entry per
    /// live connection: `Conn::bw_write_wait`; capacity 2 × `max_connections`, never
    /// grows).
    bw_write_waiters: Vec<ConnId>,
    /// The list being served at a refill (swapped with `bw_write_waiters`, same capacity).
    bw_write_serving: Vec<ConnId>,
    /// Where the next read resume starts in the table, so no connection is always last.
    bw_resume_cursor: usize,
    /// Connections closing after their output is flushed, with the time after which they are
    /// closed anyway (C tor's `connection_expire_held_open`: a peer that stopped reading must
    /// not hold a socket, and whatever the handler frees at close, forever). At most one entry
    /// per live connection; capacity `max_connections`, never grows.
    held_open: Vec<(ConnId, Instant)>,
    /// Which class each slot counts against, and the handshakes' age order (issue #15).
    pub slots: Slots,
}

/// How long a connection closing after its flush may wait for the peer to read (C tor:
/// 15 s, `connection_expire_held_open`).
pub const HOLD_OPEN_LIMIT: Duration = Duration::from_secs(15);

/// How often the connection table gives back free chunks (as the relay's tables:
/// `relay::node::memory`).
const CONN_TRIM_INTERVAL: Duration = Duration::from_secs(1);

impl<M: Send> Core<M> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ring: IoUring,
        cfg: ShardConfig,
        shard: ShardId,
        shard_count: usize,
        pool: SendPool,
        fixed_send_buf: bool,
        producers: Vec<Option<Producer<M>>>,
        peer_wake_fds: Vec<RawFd>,
    ) -> Core<M> {
        let max = cfg.max_connections as usize;
        Core {
            ring,
            conns: ConnTable::new(max),
            next_conn_trim: Instant::now() + CONN_TRIM_INTERVAL,
            sendq: vec![0; max * cfg.max_send_bufs_per_conn as usize],
            pool,
            fixed_send_buf,
            zc_report_usage: false,
            cross_dirty: vec![false; producers.len()],
            producers,
            peer_wake_fds,
            write_waiters: Vec::with_capacity(max),
            room_changed: false,
            events: VecDeque::with_capacity(2 * max),
            metrics: ShardMetrics {
                conn_slots_allocated: max.min(CONN_CHUNK) as u64,
                ..ShardMetrics::default()
            },
            now: Instant::now(),
            inflight_total: 0,
            stopping: false,
            pinned: Box::new(Pinned {
                tick: Duration::from_millis(u64::from(cfg.tick_ms)).into(),
                wake_buf: [0; 8],
            }),
            watches: Vec::with_capacity(MAX_WATCHES),
            bw: None,
            // Twice the table: a slot closed and reused within one tick may leave a stale
            // entry next to the new connection's (stale ones are dropped at each tick, or
            // when the list is full: `bw_wait_write`).
            bw_write_waiters: Vec::with_capacity(2 * max),
            bw_write_serving: Vec::with_capacity(2 * max),
            bw_resume_cursor: 0,
            held_open: Vec::with_capacity(max),
            slots: Slots::new(max as u32, cfg.slot_classes, Instant::now()),
            shard,
            shard_count,
            cfg,
        }
    }

    /// Queues SQEs (contiguously, so links stay intact), flushing the SQ first if they do not
    /// fit. Returns false if the kernel would not take them (then nothing was queued).
    pub fn push_sqes(&mut self, entries: &[squeue::Entry]) -> bool {
        for attempt in 0..8 {
            let mut sq = self.ring.submission();
            if sq.capacity() - sq.len() >= entries.len() {
                // SAFETY: every buffer/address referenced by these entries lives in
                // memory owned by this shard that outlives the operation: the send pool,
                // the buffer ring, the never-resized connection table, `pinned`, or statics.
                // The shard waits for all in-flight ops (or leaks that memory) before freeing.
                if unsafe { sq.push_multiple(entries) }.is_ok() {
                    self.inflight_total += entries.len() as u64;
                    return true;
                }
            }
            drop(sq);
            if attempt == 0 {
                self.metrics.sq_full_flushes += 1;
            }
            // EBUSY here means the CQ is backed up; the main loop will reap it. Nothing else
            // we can do from inside a callback.
            let _ = self.ring.submit();
        }
        false
    }

    pub fn push_sqe(&mut self, e: squeue::Entry) -> bool {
        self.push_sqes(std::slice::from_ref(&e))
    }

    /// Starts watching `fd` for readability; `ConnHandler::on_readable` follows each time
    /// data arrives. `TableFull` past `MAX_WATCHES`.
    pub fn watch_readable(
        &mut self,
        fd: std::os::fd::BorrowedFd<'_>,
    ) -> Result<WatchId, OutboxError> {
        if self.watches.len() >= MAX_WATCHES {
            return Err(OutboxError::TableFull);
        }
        self.watches.push(Watch::new(fd));
        let idx = self.watches.len() - 1;
        self.arm_watch(idx);
        Ok(WatchId(idx as u32))
    }

    /// (Re-)submits a watch's multishot poll unless it is in flight, dead, or we are stopping.
    /// A failed push is retried by the event loop's next `arm_watches`.
    pub fn arm_watch(&mut self, idx: usize) {
        let Some(w) = self.watches.get(idx).copied() else {
            return;
        };
        if w.armed || w.dead || self.stopping {
            return;
        }
        // No user memory is referenced: the kernel holds its own reference to the file.
        let e = opcode::PollAdd::new(Fd(w.fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(user_data(OpKind::Watch, idx as u32, 0));
        self.watches[idx].armed = self.push_sqe(e);
    }

    fn id(&self, slot: u32) -> ConnId {
        ConnId {
            slot,
            gen: self.conns[slot as usize].gen,
        }
    }

    /// The slot of a live (connecting or open) connection.
    pub fn live_slot(&self, id: ConnId) -> Option<usize> {
        let c = self.conns.get(id.slot as usize)?;
        (c.gen == id.gen && matches!(c.state, ConnState::Open | ConnState::Connecting))
            .then_some(id.slot as usize)
    }

    /// Takes a free slot within `class`'s bound and registers `socket` as fixed file `slot`.
    pub fn install(
        &mut self,
        socket: Socket,
        state: ConnState,
        peer: Option<SocketAddr>,
        class: SlotClass,
    ) -> Result<ConnId, OutboxError> {
        if !self.conns.has_free() && self.slots.may_admit(class) && self.conns.grow() {
            self.metrics.conn_slots_allocated = self.conns.len() as u64;
        }
        let slot = match self.conns.take_free() {
            Some(slot) if self.slots.may_admit(class) => slot,
            other => {
                if let Some(slot) = other {
                    self.conns.put_free(slot);
                }
                match class {
                    SlotClass::Outbound => self.metrics.slots_outbound_refused += 1,
                    SlotClass::Authenticated => self.metrics.slots_authenticated_refused += 1,
                    SlotClass::Handshake => self.metrics.slots_handshake_refused += 1,
                }
                return Err(OutboxError::TableFull);
            }
        };
        // Registered file: recv/send on the socket then skip the per-op fd lookup and
        // reference counting (fget/fput) in the kernel.
        if let Err(e) = self
            .ring
            .submitter()
            .register_files_update(slot, &[socket.as_raw_fd()])
        {
            self.conns.put_free(slot);
            return Err(OutboxError::Socket(e.raw_os_error().unwrap_or(libc::EIO)));
        }
        self.conns[slot as usize].reset(state, socket, peer);
        self.slots.occupy(slot, class, self.now);
        self.slot_gauges();
        self.metrics.conns_open += 1;
        self.metrics.conns_peak = self.metrics.conns_peak.max(self.metrics.conns_open);
        Ok(self.id(slot))
    }

    /// Copies the per-class slot counts into the gauges.
    fn slot_gauges(&mut self) {
        let m = &mut self.metrics;
        m.slots_outbound_in_use = u64::from(self.slots.held(SlotClass::Outbound));
        m.slots_authenticated_in_use = u64::from(self.slots.held(SlotClass::Authenticated));
        m.slots_handshake_in_use = u64::from(self.slots.held(SlotClass::Handshake));
    }

    /// Before an accepted socket is installed: if the handshake class (or the table) is
    /// full, closes the oldest unauthenticated handshake, so a flood of idle connections
    /// pushes out its own oldest members instead of shutting everyone else out.
    pub fn make_room_for_inbound(&mut self) {
        // Full means no free slot and no chunk left to allocate.
        let table_full =
            !self.conns.has_free() && self.conns.len() >= self.cfg.max_connections as usize;
        if let Admit::Evict(victim) = self.slots.admit_inbound(table_full) {
            self.metrics.slots_handshake_evicted += 1;
            self.close_conn(victim as usize, CloseReason::Evicted);
            self.slots.evicted(victim);
        }
    }

    /// The link handshake on `id` completed: it moves from the handshake class to the
    /// authenticated one. `TableFull` if that class is full (the handler closes it).
    pub fn set_authenticated(&mut self, id: ConnId) -> Result<(), OutboxError> {
        let slot = self.live_slot(id).ok_or(OutboxError::NotOpen)?;
        if !self.slots.authenticate(slot as u32) {
            self.metrics.slots_authenticated_refused += 1;
            return Err(OutboxError::TableFull);
        }
        self.slot_gauges();
        Ok(())
    }

    /// Closes the handshakes that outlived `slots::PRESSURE_HANDSHAKE_TIMEOUT` while their
    /// class is under pressure (run every tick; oldest first, so it stops at the first one
    /// still young).
    pub fn expire_handshakes(&mut self, now: Instant) {
        while let Some(victim) = self.slots.expired_handshake(now) {
            self.metrics.slots_handshake_expired += 1;
            self.close_conn(victim as usize, CloseReason::Evicted);
            // `close_conn` unlinked it; again in case it was not live, so this never spins.
            self.slots.evicted(victim);
        }
    }

    /// Arms the connection's multishot recv if it should be reading and is not.
    pub fn arm_recv(&mut self, slot: usize) {
        let c = &self.conns[slot];
        if c.state != ConnState::Open || !c.want_read || c.recv != RecvState::Idle || self.stopping
        {
            return;
        }
        // Out of read tokens: stay idle until the refill resumes it (`bw_tick`).
        let class = c.bw_class;
        if !c.bw_read_ungated
            && self
                .bw
                .as_ref()
                .is_some_and(|b| b.blocked(class, BwDir::Read))
        {
            return;
        }
        let ud = user_data(OpKind::Recv, slot as u32, c.gen);
        // While the read limit paces traffic, one buffer per receive: the kernel runs a
        // multishot receive up to 32 times in a row when it is armed, so after a refill the
        // first connections armed would take the whole refill. Single receives, re-armed
        // as each completes, take turns across connections. Otherwise multishot (cheaper).
        // A connection whose handler has asked for capped reads (`set_read_cap`) stays on
        // single receives too: each carries its own cap (the kernel reads at most that
        // much into the provided buffer it picks).
        let single = c.recv_single
            || self
                .bw
                .as_ref()
                .is_some_and(|b| b.pressed(class, BwDir::Read));
        let cap = c.read_cap;
        let e = if single {
            opcode::Recv::new(Fixed(slot as u32), std::ptr::null_mut(), cap)
                .buf_group(super::bufring::RECV_BUF_GROUP)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
                .user_data(ud)
        } else {
            opcode::RecvMulti::new(Fixed(slot as u32), super::bufring::RECV_BUF_GROUP)
                .build()
                .user_data(ud)
        };
        if self.push_sqe(e) {
            let c = &mut self.conns[slot];
            c.recv = RecvState::Armed;
            c.recv_multishot = !single;
            c.inflight += 1;
            if single && cap > 0 {
                self.metrics.recv_capped += 1;
            }
        }
    }

    /// Caps the connection's next receives at `cap` bytes (`None`: a whole buffer), so a
    /// read can end where the handler's framing does (a TLS record boundary:
    /// `Channel::read_hint`). A multishot receive that is armed is cancelled and replaced
    /// by single receives (bytes it already read are delivered all the same); after a few
    /// uncapped reads in a row the connection goes back to multishot.
    pub fn set_read_cap(&mut self, id: ConnId, cap: Option<usize>) -> Result<(), OutboxError> {
        let slot = self.live_slot(id).ok_or(OutboxError::NotOpen)?;
        // A cap of a buffer or more is no cap: the kernel reads at most a buffer anyway.
        let cap = cap
            .filter(|&n| n < self.cfg.recv_buf_size as usize)
            .map_or(0, |n| n.max(1) as u32);
        let c = &mut self.conns[slot];
        c.read_cap = cap;
        if cap == 0 {
            // A few uncapped reads in a row: back to a multishot receive at the next arm
            // (a single receive costs a submission and, when no data waits, a poll of its
            // own each time).
            if c.recv_single {
                c.uncapped_reads = c.uncapped_reads.saturating_add(1);
                if c.uncapped_reads >= super::conn::UNCAPPED_READS_TO_MULTISHOT {
                    c.recv_single = false;
                    c.uncapped_reads = 0;
                }
            }
            return Ok(());
        }
        c.uncapped_reads = 0;
        // Already on single receives, unless a multishot one is still armed (its cancel
        // could not be queued last time: try again).
        if c.recv_single && !(c.recv == RecvState::Armed && c.recv_multishot) {
            return Ok(());
        }
        c.recv_single = true;
        if c.recv == RecvState::Armed && c.recv_multishot {
            // Its final completion re-arms, as a single receive with the cap. If the
            // cancel cannot be queued, the multishot receive goes on (still `Armed`, so a
            // pause or the read limit can cancel it) and the next arm is single.
            if self.cancel_conn_op(slot, user_data(OpKind::Recv, id.slot, id.gen)) {
                self.conns[slot].recv = RecvState::Cancelling;
            }
        }
        Ok(())
    }

    /// Queues a cancel of `target`; false if the submission queue stayed full.
    fn cancel_conn_op(&mut self, slot: usize, target: u64) -> bool {
        let gen = self.conns[slot].gen;
        let e = opcode::AsyncCancel::new(target)
            .build()
            .user_data(user_data(OpKind::ConnCancel, slot as u32, gen));
        let pushed = self.push_sqe(e);
        if pushed {
            self.conns[slot].inflight += 1;
        }
        pushed
    }

    pub fn pause_read(&mut self, id: ConnId) -> Result<(), OutboxError> {
        let slot = self.live_slot(id).ok_or(OutboxError::NotOpen)?;
        let c = &mut self.conns[slot];
        c.want_read = false;
        // Multishot recv keeps posting until cancelled, so pausing means cancelling it; bytes
        // already received before the cancel lands are still delivered.
        if c.recv == RecvState::Armed {
            c.recv = RecvState::Cancelling;
            self.metrics.read_pauses += 1;
            self.cancel_conn_op(slot, user_data(OpKind::Recv, id.slot, id.gen));
        }
        Ok(())
    }

    pub fn resume_read(&mut self, id: ConnId) -> Result<(), OutboxError> {
        let slot = self.live_slot(id).ok_or(OutboxError::NotOpen)?;
        let c = &mut self.conns[slot];
        if c.close_after_flush {
            return Err(OutboxError::NotOpen);
        }
        if !c.want_read {
            self.metrics.read_resumes += 1;
        }
        c.want_read = true;
        // If a cancel is still in flight, its final CQE re-arms (see the recv completion).
        self.arm_recv(slot);
        Ok(())
    }

    fn per_conn(&self) -> u32 {
        self.cfg.max_send_bufs_per_conn
    }

    /// Pool buffers the connection holds: queued ones plus finished ones still pinned by a
    /// zero-copy send. This is what `max_send_bufs_per_conn` bounds.
    fn held_bufs(&self, slot: usize) -> u32 {
        let c = &self.conns[slot];
        c.sq_len + c.zc_held
    }

    fn tail_buf(&self, slot: usize) -> Option<u32> {
        let c = &self.conns[slot];
        if c.sq_len == 0 {
            return None;
        }
        let idx = (c.sq_head + c.sq_len - 1) % self.per_conn();
        Some(self.sendq[slot * self.per_conn() as usize + idx as usize])
    }

    fn front_buf(&self, slot: usize) -> Option<u32> {
        let c = &self.conns[slot];
        (c.sq_len != 0).then(|| self.sendq[slot * self.per_conn() as usize + c.sq_head as usize])
    }

    /// Bytes `send` would accept now without blocking.
    pub fn send_capacity(&self, id: ConnId) -> usize {
        let Some(slot) = self.live_slot(id) else {
            return 0;
        };
        let c = &self.conns[slot];
        if c.close_after_flush {
            return 0;
        }
        let tail_space = self
            .tail_buf(slot)
            .map_or(0, |b| self.pool.space(b) as usize);
        let new_bufs = (self.per_conn().saturating_sub(self.held_bufs(slot)) as usize)
            .min(self.pool.free_count());
        tail_space + new_bufs * self.pool.buf_size() as usize
    }

    /// Bytes queued on the connection and not yet accepted by the kernel.
    pub fn pending_output(&self, id: ConnId) -> usize {
        let Some(slot) = self.live_slot(id) else {
            return 0;
        };
        let c = &self.conns[slot];
        let mut total = 0usize;
        for i in 0..c.sq_len {
            let b = self.sendq
                [slot * self.per_conn() as usize + ((c.sq_head + i) % self.per_conn()) as usize];
            total += self.pool.len(b) as usize;
        }
        total.saturating_sub(c.front_off as usize)
    }

    /// Records that a send was refused and puts the connection on the wait list (once), so
    /// `wake_writers` tells the handler when room is back, whichever bound was hit.
    fn mark_blocked(&mut self, slot: usize, pool_empty: bool) {
        if pool_empty {
            self.metrics.send_pool_exhausted += 1;
        } else {
            self.metrics.send_backpressure += 1;
        }
        if !self.conns[slot].blocked {
            self.conns[slot].blocked = true;
            let id = self.id(slot as u32);
            self.write_waiters.push(id);
        }
    }

    /// Copies as much of `data` as fits into the connection's send queue.
    pub fn send_partial(&mut self, id: ConnId, data: &[u8]) -> Result<usize, OutboxError> {
        let slot = self.live_slot(id).ok_or(OutboxError::NotOpen)?;
        if self.conns[slot].close_after_flush {
            return Err(OutboxError::NotOpen);
        }
        let mut written = 0;
        let mut pool_empty = false;
        while written < data.len() {
            if let Some(b) = self.tail_buf(slot) {
                if self.pool.space(b) > 0 {
                    let n = self.pool.append(b, &data[written..]);
                    crate::util::copies::note(crate::util::copies::CopySite::SendPool, n);
                    written += n;
                    continue;
                }
            }
            if self.held_bufs(slot) >= self.per_conn() {
                break;
            }
            if self.grow_sendq(slot).is_none() {
                pool_empty = true;
                break;
            }
        }
        if written < data.len() {
            self.mark_blocked(slot, pool_empty);
        }
        if written > 0 {
            self.start_send(slot);
        }
        Ok(written)
    }

    /// Lets `fill` write the connection's output straight into its send buffers: `fill`
    /// gets the free rest of the tail buffer, then fresh buffers while it says it has
    /// `more` and the connection's bounds allow, and returns how many bytes it wrote at
    /// the start of each. What it leaves unused at a buffer's end is never sent (a buffer
    /// sends only what was committed), so skipping a tail leaves no gap in the stream.
    /// Returns the bytes taken. A producer left with bytes hands them to `send_partial`,
    /// which marks the connection blocked if they do not fit.
    pub fn send_with(
        &mut self,
        id: ConnId,
        fill: &mut dyn FnMut(&mut [u8]) -> Filled,
    ) -> Result<usize, OutboxError> {
        let slot = self.live_slot(id).ok_or(OutboxError::NotOpen)?;
        if self.conns[slot].close_after_flush {
            return Err(OutboxError::NotOpen);
        }
        let mut written = 0;
        // Only the first offer may be the tail: once `fill` has had it, anything more goes
        // into a fresh buffer behind it.
        let mut tail = self.tail_buf(slot).filter(|&b| self.pool.space(b) > 0);
        loop {
            let (b, fresh) = match tail.take() {
                Some(b) => (b, false),
                None => match self.grow_sendq(slot) {
                    Some(b) => (b, true),
                    None => break,
                },
            };
            let spare = self.pool.spare_mut(b);
            let room = spare.len();
            let f = fill(spare);
            let n = f.written.min(room);
            if n == 0 && fresh {
                // Nothing written to a whole buffer: the fresh buffer goes back.
                let c = &mut self.conns[slot];
                c.sq_len -= 1;
                self.pool.release(b);
                break;
            }
            self.pool.commit(b, n);
            written += n;
            if !f.more {
                break;
            }
        }
        if written > 0 {
            self.start_send(slot);
        }
        Ok(written)
    }

    /// Puts a fresh pool buffer at the tail of the connection's send queue, unless its
    /// bound or the pool says no.
    fn grow_sendq(&mut self, slot: usize) -> Option<u32> {
        let per = self.per_conn();
        if self.held_bufs(slot) >= per {
            return None;
        }
        let b = self.pool.alloc()?;
        let c = &mut self.conns[slot];
        let idx = (c.sq_head + c.sq_len) % per;
        c.sq_len += 1;
        self.sendq[slot * per as usize + idx as usize] = b;
        self.metrics.send_queue_peak_bufs = self
            .metrics
            .send_queue_peak_bufs
            .max(u64::from(self.held_bufs(slot)));
        self.metrics.send_pool_peak_bufs = self
            .metrics
            .send_pool_peak_bufs
            .max(self.pool.in_use() as u64);
        Some(b)
    }

    /// Queues all of `data` or nothing.
    pub fn send(&mut self, id: ConnId, data: &[u8]) -> Result<(), OutboxError> {
        let slot = self.live_slot(id).ok_or(OutboxError::NotOpen)?;
        if self.send_capacity(id) < data.len() {
            let pool_empty = self.pool.free_count() == 0;
            self.mark_blocked(slot, pool_empty);
            return Err(OutboxError::Full);
        }
        self.send_partial(id, data).map(|_| ())
    }

    /// Submits one send for the front buffer if none is in flight. One send per connection
    /// at a time keeps the byte order of the stream.
    pub fn start_send(&mut self, slot: usize) {
        let c = &self.conns[slot];
        if c.send_inflight || c.state != ConnState::Open {
            return;
        }
        let Some(b) = self.front_buf(slot) else {
            return;
        };
        let off = c.front_off;
        let mut len = self.pool.len(b) - off;
        if len == 0 {
            return;
        }
        let class = c.bw_class;
        if let Some(bw) = self.bw.as_mut() {
            // C `connection_bucket_write_limit`: never write more than the buckets hold;
            // with none left, wait for the next refill instead of polling.
            let allow = bw.allowance(class, BwDir::Write);
            if allow <= 0 {
                self.bw_wait_write(slot);
                return;
            }
            len = len.min(allow.min(i64::from(u32::MAX)) as u32);
        }
        let ptr = self.pool.ptr(b, off);
        let zc = self.cfg.zero_copy_threshold != 0 && len >= self.cfg.zero_copy_threshold;
        let e = if zc {
            // Zero-copy: the NIC (or loopback, which copies anyway) reads the pool pages
            // directly; the buffer stays pinned until the notification CQE.
            let mut op = opcode::SendZc::new(Fixed(slot as u32), ptr, len)
                .flags(libc::MSG_NOSIGNAL)
                // Ask the kernel to say in the notification whether it copied anyway
                // (IORING_SEND_ZC_REPORT_USAGE): without it `send_zc_copied` stays 0.
                .zc_flags(if self.zc_report_usage {
                    IORING_SEND_ZC_REPORT_USAGE
                } else {
                    0
                });
            if self.fixed_send_buf {
                op = op.buf_index(Some(0));
            }
            op.build()
                .user_data(user_data(OpKind::SendZc, slot as u32, b))
        } else {
            opcode::Send::new(Fixed(slot as u32), ptr, len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(user_data(OpKind::Send, slot as u32, b))
        };
        if self.push_sqe(e) {
            if zc {
                self.pool.pin(b);
                self.metrics.send_zc_ops += 1;
            } else {
                self.metrics.send_ops += 1;
            }
            let c = &mut self.conns[slot];
            c.send_inflight = true;
            c.inflight += 1;
            c.send_len = len;
            if let Some(bw) = self.bw.as_mut() {
                bw.charge(class, BwDir::Write, u64::from(len));
            }
        }
    }

    /// Puts a connection on the bandwidth wait list (once); `bw_tick` starts its send.
    fn bw_wait_write(&mut self, slot: usize) {
        let c = &mut self.conns[slot];
        if c.bw_write_wait {
            return;
        }
        c.bw_write_wait = true;
        self.metrics.bw_write_waits += 1;
        let id = self.id(slot as u32);
        if self.bw_write_waiters.len() == self.bw_write_waiters.capacity() {
            // Full only of stale entries (closed connections): at most one live entry per
            // slot fits in half of it. Drop them in place, so the list never reallocates.
            let conns = &self.conns;
            self.bw_write_waiters.retain(|w| {
                conns
                    .get(w.slot as usize)
                    .is_some_and(|c| c.gen == w.gen && c.bw_write_wait)
            });
        }
        self.bw_write_waiters.push(id);
    }

    /// Charges bytes received on `slot`; if that emptied a read bucket, cancels the receives
    /// of every connection drawing from it (C `connection_consider_empty_read_buckets`).
    /// Bytes already on their way are still delivered and charged (a debt).
    pub fn bw_on_read(&mut self, slot: usize, n: u64) {
        let class = self.conns[slot].bw_class;
        let Some(bw) = self.bw.as_mut() else { return };
        if !bw.charge(class, BwDir::Read, n) {
            return;
        }
        for s in 0..self.conns.len() {
            let c = &self.conns[s];
            if c.state != ConnState::Open || c.recv != RecvState::Armed || c.bw_read_ungated {
                continue;
            }
            if !self
                .bw
                .as_ref()
                .is_some_and(|b| b.blocked(c.bw_class, BwDir::Read))
            {
                continue;
            }
            let gen = c.gen;
            self.conns[s].recv = RecvState::Cancelling;
            self.metrics.bw_read_pauses += 1;
            self.cancel_conn_op(s, user_data(OpKind::Recv, s as u32, gen));
        }
    }

    /// The shard's tick: refill the buckets, resume the reads and start the sends that were
    /// waiting for tokens. Reads resume starting at a rotating place in the table and
    /// sends in wait order (a connection served now queues behind the others next time),
    /// so no connection is starved.
    pub fn bw_tick(&mut self, now: Instant) {
        let Some(bw) = self.bw.as_mut() else { return };
        let [read, write] = bw.on_tick(now);
        let t = bw.tokens();
        let e = bw.empty_events;
        let m = &mut self.metrics;
        m.bw_global_read_tokens = t[0].max(0) as u64;
        m.bw_global_write_tokens = t[1].max(0) as u64;
        m.bw_relayed_read_tokens = t[2].max(0) as u64;
        m.bw_relayed_write_tokens = t[3].max(0) as u64;
        m.bw_global_read_empty = e[0];
        m.bw_global_write_empty = e[1];
        m.bw_relayed_read_empty = e[2];
        m.bw_relayed_write_empty = e[3];
        if read {
            // Next time, start after the connection armed first now: the turn goes round
            // the connections, not round the (mostly empty) table.
            let n = self.conns.len();
            let start = self.bw_resume_cursor % n.max(1);
            let mut first = None;
            for i in 0..n {
                let s = (start + i) % n;
                let was = self.conns[s].recv;
                self.arm_recv(s);
                if was != RecvState::Armed && self.conns[s].recv == RecvState::Armed {
                    first.get_or_insert(s);
                }
            }
            self.bw_resume_cursor = first.map_or(start, |f| f + 1);
        }
        if write || !self.bw_write_waiters.is_empty() {
            std::mem::swap(&mut self.bw_write_waiters, &mut self.bw_write_serving);
            for i in 0..self.bw_write_serving.len() {
                let id = self.bw_write_serving[i];
                let Some(c) = self.conns.get_mut(id.slot as usize) else {
                    continue;
                };
                if c.gen != id.gen || !c.bw_write_wait {
                    continue;
                }
                c.bw_write_wait = false;
                // Back on `bw_write_waiters` (behind the rest) if the tokens ran out again.
                self.start_send(id.slot as usize);
            }
            self.bw_write_serving.clear();
        }
    }

    /// Lets a connection read while its read buckets are empty (`ungated`), or puts it
    /// back under them. Its bytes are charged either way.
    pub fn set_bw_read_ungated(&mut self, id: ConnId, ungated: bool) -> Result<(), OutboxError> {
        let slot = self.live_slot(id).ok_or(OutboxError::NotOpen)?;
        self.conns[slot].bw_read_ungated = ungated;
        if ungated {
            self.arm_recv(slot);
        }
        Ok(())
    }

    /// Whether the connection reads regardless of its read buckets.
    pub fn bw_read_ungated(&self, id: ConnId) -> bool {
        self.live_slot(id)
            .is_some_and(|s| self.conns[s].bw_read_ungated)
    }

    /// Sets which buckets a connection is charged to.
    pub fn set_bw_class(&mut self, id: ConnId, class: BwClass) -> Result<(), OutboxError> {
        let slot = self.live_slot(id).ok_or(OutboxError::NotOpen)?;
        self.conns[slot].bw_class = class;
        Ok(())
    }

    /// First (or only) completion of a send / zero-copy send. For a zero-copy send this is
    /// the result CQE: the next send may start now (the kernel has queued the bytes, so order
    /// is kept), but the buffer stays pinned until the notification.
    pub fn on_send_done(&mut self, slot: usize, buf: u32, res: i32, zc: bool, more: bool) {
        self.room_changed = true;
        let c = &mut self.conns[slot];
        c.send_inflight = false;
        // Give back the write tokens of bytes the kernel did not take.
        let unsent = u64::from(c.send_len).saturating_sub(res.max(0) as u64);
        c.send_len = 0;
        let class = c.bw_class;
        if let (Some(bw), true) = (self.bw.as_mut(), unsent > 0) {
            bw.refund(class, BwDir::Write, unsent);
        }
        let c = &mut self.conns[slot];
        if !(zc && more) {
            // No notification follows: the op is done.
            c.inflight -= 1;
            if zc && self.pool.unpin(buf) {
                let c = &mut self.conns[slot];
                c.zc_held = c.zc_held.saturating_sub(1);
            }
        }
        let c = &mut self.conns[slot];
        if res < 0 {
            if c.state == ConnState::Open {
                self.close_conn(slot, CloseReason::from_errno(-res));
            } else {
                self.maybe_finalize(slot);
            }
            return;
        }
        self.metrics.send_bytes += res as u64;
        if c.state != ConnState::Open {
            self.maybe_finalize(slot);
            return;
        }
        c.front_off += res as u32;
        let per = self.per_conn();
        if let Some(front) = self.front_buf(slot) {
            if self.conns[slot].front_off >= self.pool.len(front) {
                let freed = self.pool.release(front);
                let c = &mut self.conns[slot];
                c.sq_head = (c.sq_head + 1) % per;
                c.sq_len -= 1;
                c.front_off = 0;
                if !freed {
                    c.zc_held += 1;
                }
            }
        }
        let c = &self.conns[slot];
        if c.sq_len > 0 {
            self.start_send(slot);
        } else if c.close_after_flush {
            self.close_conn(slot, CloseReason::LocalClose);
        }
    }

    /// Zero-copy notification: the kernel no longer references the buffer.
    pub fn on_send_notif(&mut self, slot: usize, buf: u32, res: i32) {
        // Set in the notification's result when IORING_SEND_ZC_REPORT_USAGE was asked for.
        const IORING_NOTIF_USAGE_ZC_COPIED: u32 = 1 << 31;
        if res as u32 & IORING_NOTIF_USAGE_ZC_COPIED != 0 {
            self.metrics.send_zc_copied += 1;
        }
        self.room_changed = true;
        let c = &mut self.conns[slot];
        if self.pool.unpin(buf) {
            c.zc_held = c.zc_held.saturating_sub(1);
        }
        c.inflight -= 1;
        self.maybe_finalize(slot);
    }

    /// Queues `on_writable` for every waiting connection that has room again: it holds at
    /// most half its bound and the pool has at least that much free (capped at the pool
    /// size, so the condition is reachable once the shard's output drains). Checked after
    /// any event that returns room, not only the waiting connection's own send completions:
    /// a zero-copy buffer is freed by its notification, which may come after the
    /// connection's last send completed, and another connection's completion may be what
    /// refills the pool. Waiters without room stay listed; each of them still has a send
    /// or a notification outstanding (or the pool is held by others' outstanding ones),
    /// whose completion sets `room_changed` again, so no wake-up is lost.
    pub fn wake_writers(&mut self) {
        if !self.room_changed || self.write_waiters.is_empty() {
            return;
        }
        self.room_changed = false;
        let half = self.per_conn() / 2;
        let pool_min = (half.max(1) as usize).min(self.pool.count());
        let pool_ok = self.pool.free_count() >= pool_min;
        let conns = &mut self.conns;
        let events = &mut self.events;
        self.write_waiters.retain(|&id| {
            let Some(c) = conns.get_mut(id.slot as usize) else {
                return false;
            };
            if c.gen != id.gen || c.state != ConnState::Open || !c.blocked || c.close_after_flush {
                // Closed or no longer waiting: drop the stale entry.
                if c.gen == id.gen {
                    c.blocked = false;
                }
                return false;
            }
            if pool_ok && c.sq_len + c.zc_held <= half {
                c.blocked = false;
                events.push_back(Event::Writable(id));
                return false;
            }
            true
        });
    }

    /// Handler-requested close: flush queued output, then close.
    pub fn close(&mut self, id: ConnId) -> Result<(), OutboxError> {
        let slot = self.live_slot(id).ok_or(OutboxError::NotOpen)?;
        let c = &self.conns[slot];
        if c.state == ConnState::Open && (c.sq_len > 0 || c.send_inflight) {
            if !c.close_after_flush {
                if self.held_open.len() == self.held_open.capacity() {
                    // Entries of connections that closed since the last tick.
                    let conns = &self.conns;
                    self.held_open.retain(|&(id, _)| {
                        conns.get(id.slot as usize).is_some_and(|c| {
                            c.gen == id.gen
                                && matches!(c.state, ConnState::Open | ConnState::Connecting)
                        })
                    });
                }
                if self.held_open.len() < self.held_open.capacity() {
                    self.held_open.push((id, self.now + HOLD_OPEN_LIMIT));
                }
            }
            self.conns[slot].close_after_flush = true;
            self.pause_read(id)
        } else {
            self.close_conn(slot, CloseReason::LocalClose);
            Ok(())
        }
    }

    /// Closes the connections that have waited longer than [`HOLD_OPEN_LIMIT`] for their
    /// output to be flushed (run every tick).
    pub fn expire_held_open(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.held_open.len() {
            let (id, deadline) = self.held_open[i];
            match self.live_slot(id) {
                Some(slot) if self.conns[slot].close_after_flush => {
                    if now < deadline {
                        i += 1;
                        continue;
                    }
                    self.held_open.swap_remove(i);
                    self.metrics.held_open_expired += 1;
                    self.close_conn(slot, CloseReason::LocalClose);
                }
                _ => {
                    self.held_open.swap_remove(i);
                }
            }
        }
    }

    /// Starts closing: reports to the handler, shuts the socket down, cancels reads and a
    /// pending connect; the slot is reused once every in-flight op has completed.
    pub fn close_conn(&mut self, slot: usize, reason: CloseReason) {
        let c = &mut self.conns[slot];
        if !matches!(c.state, ConnState::Open | ConnState::Connecting) {
            return;
        }
        let was_connecting = c.state == ConnState::Connecting;
        let id = ConnId {
            slot: slot as u32,
            gen: c.gen,
        };
        c.state = ConnState::Closing;
        c.want_read = false;
        self.slots.closing(slot as u32);
        let c = &mut self.conns[slot];
        if let Some(s) = &c.socket {
            // FIN now, and completes any send blocked on a full socket (EPIPE).
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        let recv_armed = c.recv == RecvState::Armed;
        if recv_armed {
            c.recv = RecvState::Cancelling;
        }
        self.metrics.closed += 1;
        self.metrics.conns_open = self.metrics.conns_open.saturating_sub(1);
        if matches!(
            reason,
            CloseReason::ConnectFailed(_) | CloseReason::ConnectTimeout
        ) {
            self.metrics.connect_failed += 1;
        }
        self.events.push_back(Event::Closed(id, reason));
        self.conns[slot].close_unreported = true;
        if recv_armed {
            self.cancel_conn_op(slot, user_data(OpKind::Recv, id.slot, id.gen));
        }
        if was_connecting {
            self.cancel_conn_op(slot, user_data(OpKind::Connect, id.slot, id.gen));
        }
        self.maybe_finalize(slot);
    }

    /// Frees a closing slot once nothing in the kernel refers to it.
    pub fn maybe_finalize(&mut self, slot: usize) {
        let c = &self.conns[slot];
        if c.state != ConnState::Closing || c.inflight != 0 || c.close_unreported {
            return;
        }
        // Drop the registered-file reference, else the socket would stay open.
        let _ = self
            .ring
            .submitter()
            .register_files_update(slot as u32, &[-1]);
        let per = self.per_conn();
        let c = &mut self.conns[slot];
        c.socket = None;
        c.connect_addr = None;
        let (head, len) = (c.sq_head, c.sq_len);
        c.sq_len = 0;
        c.gen = c.gen.wrapping_add(1);
        c.state = ConnState::Free;
        for i in 0..len {
            let b = self.sendq[slot * per as usize + ((head + i) % per) as usize];
            // Nothing pins it: every zero-copy notification of this slot has arrived
            // (they count in `inflight`).
            self.pool.release(b);
        }
        // Buffers went back to the pool, and a wait-list entry of this slot is now stale.
        self.room_changed = true;
        self.slots.release(slot as u32);
        self.slot_gauges();
        self.conns.put_free(slot as u32);
    }

    /// Once a second (from the tick): gives back the connection table's wholly free chunks
    /// at the top after a peak (issue #15), keeping one. Lowest-first reuse lets the high
    /// chunks empty out; a slot is free only once the kernel holds nothing of it.
    pub fn trim_conn_table(&mut self, now: Instant) {
        if now < self.next_conn_trim {
            return;
        }
        self.next_conn_trim = now + CONN_TRIM_INTERVAL;
        if self.conns.trim() > 0 {
            self.metrics.conn_slots_allocated = self.conns.len() as u64;
            self.metrics.conn_chunks_released = self.conns.chunks_released();
        }
    }

    /// Opens an outbound TCP connection: IORING_OP_CONNECT on a non-blocking socket, linked to
    /// a timeout so a silent peer cannot hold the slot forever.
    pub fn connect(
        &mut self,
        addr: SocketAddr,
        from: Option<IpAddr>,
        nodelay: bool,
    ) -> Result<ConnId, OutboxError> {
        if self.stopping {
            return Err(OutboxError::NotOpen);
        }
        let errno = |e: std::io::Error| OutboxError::Socket(e.raw_os_error().unwrap_or(libc::EIO));
        let sock = Socket::new(
            Domain::for_address(addr),
            Type::STREAM.nonblocking().cloexec(),
            None,
        )
        .map_err(errno)?;
        if nodelay {
            sock.set_tcp_nodelay(true).map_err(errno)?;
        }
        // OutboundBindAddress*: a source address (port chosen by the kernel) before connect.
        if let Some(ip) = from {
            sock.bind(&SocketAddr::new(ip, 0).into()).map_err(errno)?;
        }
        let id = self.install(sock, ConnState::Connecting, Some(addr), SlotClass::Outbound)?;
        let slot = id.slot as usize;
        let c = &mut self.conns[slot];
        c.want_read = true;
        c.connect_timeout = Duration::from_millis(u64::from(self.cfg.connect_timeout_ms)).into();
        let sa = c.connect_addr.insert(SockAddr::from(addr));
        let connect = opcode::Connect::new(
            Fixed(id.slot),
            sa.as_ptr() as *const libc::sockaddr,
            sa.len(),
        )
        .build()
        .flags(squeue::Flags::IO_LINK)
        .user_data(user_data(OpKind::Connect, id.slot, id.gen));
        let timeout = opcode::LinkTimeout::new(&c.connect_timeout as *const Timespec)
            .build()
            .user_data(user_data(OpKind::ConnectTimeout, id.slot, id.gen));
        if self.push_sqes(&[connect, timeout]) {
            self.conns[slot].inflight += 2;
            Ok(id)
        } else {
            // Nothing submitted: undo quietly (the handler never saw this id).
            let c = &mut self.conns[slot];
            c.state = ConnState::Closing;
            self.metrics.conns_open = self.metrics.conns_open.saturating_sub(1);
            self.maybe_finalize(slot);
            Err(OutboxError::Socket(libc::EBUSY))
        }
    }

    /// Writes an item into the queue to shard `to`; published with one wake-up per batch.
    pub fn push_cross(&mut self, to: ShardId, item: M) -> Result<(), CrossPushError<M>> {
        let Some(Some(p)) = self.producers.get_mut(to.0) else {
            return Err(CrossPushError::NoSuchShard(item));
        };
        match p.push(item) {
            Ok(()) => {
                self.cross_dirty[to.0] = true;
                self.metrics.cross_pushed += 1;
                Ok(())
            }
            Err(item) => {
                self.metrics.cross_push_full += 1;
                Err(CrossPushError::Full(item))
            }
        }
    }

    /// Free slots and capacity of the queue to shard `to` (`(0, 0)` if there is none).
    pub fn cross_space(&mut self, to: ShardId) -> (usize, usize) {
        match self.producers.get_mut(to.0) {
            Some(Some(p)) => (p.free(), p.capacity()),
            _ => (0, 0),
        }
    }

    /// Wakes shard `to` (its queue to us drained after it found it full).
    pub fn wake_peer(&mut self, to: usize) {
        let Some(&fd) = self.peer_wake_fds.get(to) else {
            return;
        };
        let e = opcode::Write::new(Fd(fd), WAKE_ONE.as_ptr(), 8)
            .build()
            .user_data(user_data(OpKind::WakeWrite, 0, to as u32));
        if self.push_sqe(e) {
            self.metrics.cross_wakeups_sent += 1;
        }
    }

    /// Publishes every queue written since the last flush and wakes each destination once,
    /// with an io_uring write to its eventfd (so the wake costs no extra syscall).
    pub fn flush_cross(&mut self) {
        for to in 0..self.cross_dirty.len() {
            if !self.cross_dirty[to] {
                continue;
            }
            self.cross_dirty[to] = false;
            let Some(p) = self.producers[to].as_mut() else {
                continue;
            };
            if p.publish() == 0 {
                continue;
            }
            let e = opcode::Write::new(Fd(self.peer_wake_fds[to]), WAKE_ONE.as_ptr(), 8)
                .build()
                .user_data(user_data(OpKind::WakeWrite, 0, to as u32));
            if self.push_sqe(e) {
                self.metrics.cross_wakeups_sent += 1;
            }
        }
    }
}
