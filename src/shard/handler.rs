//! The sans-IO handler interface: the protocol (TLS + Tor cells) sees bytes, connection ids
//! and time, and answers through a [`ShardIo`]; it never touches sockets or the ring.
//!
//! [`ShardIo`] is the one output convention between the relay node and whatever carries
//! its I/O: the shard's [`Outbox`] (io_uring) in the daemon, an in-memory fake in tests
//! (`relay::node::fake`). The node is generic over it (static dispatch, no per-cell cost).

use std::net::{IpAddr, SocketAddr};
use std::time::{Instant, SystemTime};

use super::conn::{ConnId, ShardId};
use super::core::Core;
use super::error::{CloseReason, CrossPushError, OutboxError};
use super::metrics::ShardMetrics;
use super::ratelimit::BwClass;
use super::watch::WatchId;

/// Callbacks of one shard's protocol logic. One handler instance per shard; it owns the
/// per-connection protocol state (e.g. a rustls connection per `ConnId`).
///
/// Lifecycle: every `on_accept`/`on_connected` id (and every id returned by
/// `Outbox::connect`) gets exactly one `on_closed`. Ids are never reused while live.
pub trait ConnHandler {
    /// What shards send each other (e.g. a cell plus its circuit routing).
    type Msg: Send + 'static;

    /// The shard's loop is about to start: the place to set up watches
    /// (`Outbox::watch_readable`).
    fn on_start(&mut self, out: &mut Outbox<'_, Self::Msg>) {
        let _ = out;
    }

    /// A watched descriptor became readable (or hit an error the next read will report).
    /// The handler should read until `WouldBlock`: a wake-up only says data arrived.
    fn on_readable(&mut self, watch: WatchId, out: &mut Outbox<'_, Self::Msg>) {
        let _ = (watch, out);
    }

    /// A connection was accepted on this shard's listener. Reading starts after this returns.
    fn on_accept(&mut self, conn: ConnId, peer: SocketAddr, out: &mut Outbox<'_, Self::Msg>);

    /// An outbound connection opened with `Outbox::connect` is established.
    fn on_connected(&mut self, conn: ConnId, peer: SocketAddr, out: &mut Outbox<'_, Self::Msg>) {
        let _ = (conn, peer, out);
    }

    /// Bytes arrived. The slice is only valid during the call: the buffer goes back to the
    /// kernel right after, so keep (copy) whatever must outlive it. It is the handler's to
    /// change meanwhile (a channel decrypts TLS records in place there: the copy map,
    /// `docs/architecture.md`).
    fn on_data(&mut self, conn: ConnId, data: &mut [u8], out: &mut Outbox<'_, Self::Msg>);

    /// A connection that refused a send (`OutboxError::Full` or a short `send_partial`) has
    /// drained to half its bound; it can take more. Typical use: `resume_read` on the
    /// connection(s) paused because of it.
    fn on_writable(&mut self, conn: ConnId, out: &mut Outbox<'_, Self::Msg>) {
        let _ = (conn, out);
    }

    /// The connection is closed; its id is dead from now on.
    fn on_closed(&mut self, conn: ConnId, reason: CloseReason, out: &mut Outbox<'_, Self::Msg>);

    /// A batch of items from shard `from`, in the order that shard pushed them.
    fn on_cross_shard(
        &mut self,
        from: ShardId,
        items: std::vec::Drain<'_, Self::Msg>,
        out: &mut Outbox<'_, Self::Msg>,
    ) {
        let _ = (from, items, out);
    }

    /// Periodic timer (every `ShardConfig::tick_ms`).
    fn on_tick(&mut self, now: Instant, out: &mut Outbox<'_, Self::Msg>) {
        let _ = (now, out);
    }

    /// Called once per loop iteration, after the batch of completions was dispatched: the
    /// place for bounded background work (e.g. a slice of queued onion handshakes) between
    /// I/O batches. Return true if work remains; the loop then polls the ring without
    /// blocking so the rest is done next iteration instead of at the next tick.
    fn on_batch_end(&mut self, out: &mut Outbox<'_, Self::Msg>) -> bool {
        let _ = out;
        false
    }

    /// The earliest time the handler wants [`ConnHandler::on_timer`], read after each
    /// batch: the loop's wait ends then at the latest (finer than the tick). A time
    /// already past is served once, right after the next (non-blocking) poll.
    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    /// The time from [`ConnHandler::next_deadline`] has come (`now` is at or after it).
    /// The handler must serve or drop what was due, or the loop would keep polling.
    fn on_timer(&mut self, now: Instant, out: &mut Outbox<'_, Self::Msg>) {
        let _ = (now, out);
    }
}

/// What a `send_with` producer did with one send buffer it was offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filled {
    /// Bytes written at the start of the buffer (what the shard sends from it).
    pub written: usize,
    /// The producer has more to write: offer it a fresh buffer next. It may leave the
    /// rest of a buffer unused (a TLS record layer does not start a record in a tail too
    /// small for one cell), so a short fill alone does not mean it is done.
    pub more: bool,
}

/// What a handler can ask of its shard during a callback. Sends copy into pre-allocated
/// send buffers; nothing here allocates.
pub struct Outbox<'a, M> {
    pub(crate) core: &'a mut Core<M>,
}

impl<M: Send> Outbox<'_, M> {
    /// Queues all of `data` for sending, or nothing: `Err(Full)` when the connection's
    /// pending-output bound (or the shard's pool) cannot take it; `on_writable` follows.
    pub fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<(), OutboxError> {
        self.core.send(conn, data)
    }

    /// Queues as much of `data` as fits and returns how many bytes were taken; a short count
    /// means the bound was hit and `on_writable` will follow.
    pub fn send_partial(&mut self, conn: ConnId, data: &[u8]) -> Result<usize, OutboxError> {
        self.core.send_partial(conn, data)
    }

    /// Lets `fill` write straight into the connection's send buffers (see
    /// `Core::send_with`); returns the bytes taken.
    pub fn send_with(
        &mut self,
        conn: ConnId,
        fill: &mut dyn FnMut(&mut [u8]) -> Filled,
    ) -> Result<usize, OutboxError> {
        self.core.send_with(conn, fill)
    }

    /// Bytes `send` would accept right now.
    pub fn send_capacity(&self, conn: ConnId) -> usize {
        self.core.send_capacity(conn)
    }

    /// Bytes queued and not yet taken by the kernel.
    pub fn pending_output(&self, conn: ConnId) -> usize {
        self.core.pending_output(conn)
    }

    /// Closes after the queued output is flushed; reading stops now. `on_closed` follows
    /// with `CloseReason::LocalClose`.
    pub fn close(&mut self, conn: ConnId) -> Result<(), OutboxError> {
        self.core.close(conn)
    }

    /// Stops reading `conn` (any connection, not only the one being handled).
    pub fn pause_read(&mut self, conn: ConnId) -> Result<(), OutboxError> {
        self.core.pause_read(conn)
    }

    /// Resumes reading `conn`.
    pub fn resume_read(&mut self, conn: ConnId) -> Result<(), OutboxError> {
        self.core.resume_read(conn)
    }

    /// Caps the next receives on `conn` at `cap` bytes (`None`: a whole buffer), so a read
    /// ends where the handler's framing does. From the first cap on, the connection reads
    /// with single receives (each with its own cap) instead of a multishot one.
    pub fn set_read_cap(&mut self, conn: ConnId, cap: Option<usize>) -> Result<(), OutboxError> {
        self.core.set_read_cap(conn, cap)
    }

    /// Sets which bandwidth buckets `conn`'s bytes are charged to (default
    /// `BwClass::Global`); only matters when the runtime was started with a budget.
    pub fn set_bw_class(&mut self, conn: ConnId, class: BwClass) -> Result<(), OutboxError> {
        self.core.set_bw_class(conn, class)
    }

    /// Lets `conn` keep reading while its read buckets are empty (its bytes are still
    /// charged), e.g. during a link handshake, as C tor does; `false` puts it back under
    /// the buckets.
    pub fn set_bw_read_ungated(&mut self, conn: ConnId, ungated: bool) -> Result<(), OutboxError> {
        self.core.set_bw_read_ungated(conn, ungated)
    }

    /// Whether `conn` reads regardless of its read buckets (`set_bw_read_ungated`).
    pub fn bw_read_ungated(&self, conn: ConnId) -> bool {
        self.core.bw_read_ungated(conn)
    }

    /// The link handshake on an accepted `conn` completed: its slot moves from the
    /// handshake class (whose oldest members are evicted when it is full) to the
    /// authenticated class (`shard::slots`). `TableFull` if that class is full; the handler
    /// should then close it. A no-op for outbound connections.
    pub fn set_authenticated(&mut self, conn: ConnId) -> Result<(), OutboxError> {
        self.core.set_authenticated(conn)
    }

    /// Opens an outbound TCP connection; `on_connected` or `on_closed` follows. Bytes may be
    /// queued with `send` before it is established.
    pub fn connect(&mut self, addr: SocketAddr) -> Result<ConnId, OutboxError> {
        self.core.connect(addr, None, false)
    }

    /// [`Outbox::connect`] (or [`Outbox::connect_nodelay`]) from source address `from`
    /// (`OutboundBindAddress*`); a `from` that is not ours fails with its errno at once.
    pub fn connect_from(
        &mut self,
        addr: SocketAddr,
        from: Option<IpAddr>,
        nodelay: bool,
    ) -> Result<ConnId, OutboxError> {
        self.core.connect(addr, from, nodelay)
    }

    /// [`Outbox::connect`] with Nagle off (TCP_NODELAY), as accepted sockets have it: for
    /// links whose bursts must not wait for the peer's delayed ACK (Tor channels, which carry
    /// congestion-controlled circuits in both directions and time SENDMEs). Exit streams keep
    /// Nagle: it coalesces small writes toward ordinary servers and saves CPU.
    pub fn connect_nodelay(&mut self, addr: SocketAddr) -> Result<ConnId, OutboxError> {
        self.core.connect(addr, None, true)
    }

    /// Watches a descriptor the handler owns for readability (`on_readable`). The handler
    /// keeps it open for the shard's life; at most a few per shard (`TableFull` beyond).
    pub fn watch_readable(
        &mut self,
        fd: std::os::fd::BorrowedFd<'_>,
    ) -> Result<WatchId, OutboxError> {
        self.core.watch_readable(fd)
    }

    /// Queues an item for shard `to` (delivered in a batch via `on_cross_shard`).
    pub fn push_cross(&mut self, to: ShardId, item: M) -> Result<(), CrossPushError<M>> {
        self.core.push_cross(to, item)
    }

    /// Free slots and capacity of the queue to shard `to` (`(0, 0)` for no such queue).
    pub fn cross_space(&mut self, to: ShardId) -> (usize, usize) {
        self.core.cross_space(to)
    }

    /// The peer address of a live connection.
    pub fn peer(&self, conn: ConnId) -> Option<SocketAddr> {
        let slot = self.core.live_slot(conn)?;
        self.core.conns[slot].peer
    }

    /// This shard.
    pub fn shard(&self) -> ShardId {
        self.core.shard
    }

    /// Number of shards in the runtime.
    pub fn shard_count(&self) -> usize {
        self.core.shard_count
    }

    /// Time taken once per event-loop iteration (pass-in time for the sans-IO core).
    pub fn now(&self) -> Instant {
        self.core.now
    }

    /// This shard's counters.
    pub fn metrics(&self) -> &ShardMetrics {
        &self.core.metrics
    }
}

/// The I/O operations a relay node asks of its shard, and the shard's clocks. Implemented by
/// [`Outbox`] (the io_uring shard) and by in-memory fakes; everything a node does to the
/// outside world goes through here, so a node can run without a socket or a ring.
///
/// Each operation means what the [`Outbox`] method of the same name documents.
pub trait ShardIo<M> {
    /// All of `data` or nothing (`Err(Full)`; `on_writable` follows).
    fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<(), OutboxError>;
    /// As much of `data` as fits; a short count means `on_writable` follows.
    fn send_partial(&mut self, conn: ConnId, data: &[u8]) -> Result<usize, OutboxError>;
    /// `fill` writes straight into the send buffers (the free rest of the tail buffer
    /// first, then fresh ones, called again while it says `more` and the bounds allow);
    /// returns the bytes taken. Never refuses with a short count: what is left goes
    /// through `send_partial`.
    fn send_with(
        &mut self,
        conn: ConnId,
        fill: &mut dyn FnMut(&mut [u8]) -> Filled,
    ) -> Result<usize, OutboxError>;
    /// Bytes `send` would accept right now.
    fn send_capacity(&self, conn: ConnId) -> usize;
    /// Bytes queued and not yet taken by the kernel.
    fn pending_output(&self, conn: ConnId) -> usize;
    /// Closes after the queued output is flushed (`on_closed` follows).
    fn close(&mut self, conn: ConnId) -> Result<(), OutboxError>;
    fn pause_read(&mut self, conn: ConnId) -> Result<(), OutboxError>;
    fn resume_read(&mut self, conn: ConnId) -> Result<(), OutboxError>;
    /// The most bytes the next read of `conn` should take (`None`: as many as fit).
    fn set_read_cap(&mut self, conn: ConnId, cap: Option<usize>) -> Result<(), OutboxError>;
    fn set_bw_class(&mut self, conn: ConnId, class: BwClass) -> Result<(), OutboxError>;
    fn set_bw_read_ungated(&mut self, conn: ConnId, ungated: bool) -> Result<(), OutboxError>;
    fn bw_read_ungated(&self, conn: ConnId) -> bool;
    /// The link handshake on `conn` completed (`Outbox::set_authenticated`).
    fn set_authenticated(&mut self, conn: ConnId) -> Result<(), OutboxError>;
    /// Opens an outbound TCP connection (from source address `from`, Nagle off if
    /// `nodelay`); `on_connected` or `on_closed` follows.
    fn connect_from(
        &mut self,
        addr: SocketAddr,
        from: Option<IpAddr>,
        nodelay: bool,
    ) -> Result<ConnId, OutboxError>;
    fn watch_readable(&mut self, fd: std::os::fd::BorrowedFd<'_>) -> Result<WatchId, OutboxError>;
    /// Queues an item for shard `to` (delivered there in a batch via `on_cross_shard`).
    fn push_cross(&mut self, to: ShardId, item: M) -> Result<(), CrossPushError<M>>;
    /// Free slots and capacity of the queue to shard `to` (`(0, 0)` for no such queue).
    fn cross_space(&mut self, to: ShardId) -> (usize, usize);
    fn peer(&self, conn: ConnId) -> Option<SocketAddr>;
    fn shard(&self) -> ShardId;
    fn shard_count(&self) -> usize;
    /// The monotonic clock the node runs on (timers, cell stamps, RTTs). The shard reads
    /// the system clock at each call (the node may run long in one callback: onion
    /// handshakes); a fake returns its own.
    fn now(&self) -> Instant;
    /// The wall clock (certificate validity, NETINFO timestamps).
    fn wall(&self) -> SystemTime;
    fn metrics(&self) -> &ShardMetrics;
    /// Bytes a connection can still deliver after `pause_read`: the shard's whole receive
    /// buffer ring (reads already completed are handed over all the same).
    fn recv_ring_bytes(&self) -> usize;
    /// Bytes one receive can deliver at most (a provided buffer's size).
    fn recv_buf_size(&self) -> usize;
}

impl<M: Send> ShardIo<M> for Outbox<'_, M> {
    fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<(), OutboxError> {
        Outbox::send(self, conn, data)
    }
    fn send_partial(&mut self, conn: ConnId, data: &[u8]) -> Result<usize, OutboxError> {
        Outbox::send_partial(self, conn, data)
    }
    fn send_with(
        &mut self,
        conn: ConnId,
        fill: &mut dyn FnMut(&mut [u8]) -> Filled,
    ) -> Result<usize, OutboxError> {
        Outbox::send_with(self, conn, fill)
    }
    fn send_capacity(&self, conn: ConnId) -> usize {
        Outbox::send_capacity(self, conn)
    }
    fn pending_output(&self, conn: ConnId) -> usize {
        Outbox::pending_output(self, conn)
    }
    fn close(&mut self, conn: ConnId) -> Result<(), OutboxError> {
        Outbox::close(self, conn)
    }
    fn pause_read(&mut self, conn: ConnId) -> Result<(), OutboxError> {
        Outbox::pause_read(self, conn)
    }
    fn resume_read(&mut self, conn: ConnId) -> Result<(), OutboxError> {
        Outbox::resume_read(self, conn)
    }
    fn set_read_cap(&mut self, conn: ConnId, cap: Option<usize>) -> Result<(), OutboxError> {
        Outbox::set_read_cap(self, conn, cap)
    }
    fn set_bw_class(&mut self, conn: ConnId, class: BwClass) -> Result<(), OutboxError> {
        Outbox::set_bw_class(self, conn, class)
    }
    fn set_bw_read_ungated(&mut self, conn: ConnId, ungated: bool) -> Result<(), OutboxError> {
        Outbox::set_bw_read_ungated(self, conn, ungated)
    }
    fn bw_read_ungated(&self, conn: ConnId) -> bool {
        Outbox::bw_read_ungated(self, conn)
    }
    fn set_authenticated(&mut self, conn: ConnId) -> Result<(), OutboxError> {
        Outbox::set_authenticated(self, conn)
    }
    fn connect_from(
        &mut self,
        addr: SocketAddr,
        from: Option<IpAddr>,
        nodelay: bool,
    ) -> Result<ConnId, OutboxError> {
        Outbox::connect_from(self, addr, from, nodelay)
    }
    fn watch_readable(&mut self, fd: std::os::fd::BorrowedFd<'_>) -> Result<WatchId, OutboxError> {
        Outbox::watch_readable(self, fd)
    }
    fn push_cross(&mut self, to: ShardId, item: M) -> Result<(), CrossPushError<M>> {
        Outbox::push_cross(self, to, item)
    }
    fn cross_space(&mut self, to: ShardId) -> (usize, usize) {
        Outbox::cross_space(self, to)
    }
    fn peer(&self, conn: ConnId) -> Option<SocketAddr> {
        Outbox::peer(self, conn)
    }
    fn shard(&self) -> ShardId {
        Outbox::shard(self)
    }
    fn shard_count(&self) -> usize {
        Outbox::shard_count(self)
    }
    fn now(&self) -> Instant {
        // Read at each call, not the loop's once-per-iteration stamp: the relay handler
        // always read the clock where it needed it (RTT samples, onion-queue waits), and
        // this keeps it so.
        Instant::now()
    }
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
    fn metrics(&self) -> &ShardMetrics {
        Outbox::metrics(self)
    }
    fn recv_ring_bytes(&self) -> usize {
        self.core.cfg.recv_buf_count as usize * self.core.cfg.recv_buf_size as usize
    }
    fn recv_buf_size(&self) -> usize {
        self.core.cfg.recv_buf_size as usize
    }
}
