//! One shard's event loop: submit, wait, reap completions in batches, call the handler.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, IoUring};
use socket2::Socket;

use super::bufring::BufRing;
use super::config::ShardConfig;
use super::conn::{decode, user_data, ConnId, ConnState, OpKind, RecvState, ShardId};
use super::core::{Core, Event};
use super::error::{CloseReason, OutboxError, ShardError};
use super::handler::{ConnHandler, Outbox};
use super::metrics::ShardMetrics;
use super::probe::KernelFeatures;
use super::ratelimit::{ShardBuckets, SharedBudget};
use super::sendpool::SendPool;
use super::slots::SlotClass;
use super::spsc::{Consumer, Producer};
use super::watch::WatchId;

/// What the runtime hands a shard thread.
pub(crate) struct ShardParts<M> {
    pub id: ShardId,
    pub shard_count: usize,
    pub cfg: ShardConfig,
    pub features: KernelFeatures,
    /// One socket per listening address.
    pub listener: Vec<Socket>,
    pub producers: Vec<Option<Producer<M>>>,
    pub consumers: Vec<Option<Consumer<M>>>,
    pub wake_fds: Arc<Vec<OwnedFd>>,
    pub stop: Arc<AtomicBool>,
    /// The relay-wide bandwidth budget, if traffic is rate-limited.
    pub bandwidth: Option<Arc<SharedBudget>>,
}

/// Final state of a shard, returned by `Runtime::stop`.
pub struct ShardReport<H> {
    /// Which shard.
    pub shard: ShardId,
    /// The handler, for inspection after the run.
    pub handler: H,
    /// The shard's counters.
    pub metrics: ShardMetrics,
}

/// Field order matters for drop: the ring (inside `core`) closes before the receive
/// buffers it may reference are freed.
pub(crate) struct Shard<H: ConnHandler> {
    core: Core<H::Msg>,
    bufring: BufRing,
    handler: H,
    /// Listening sockets by index (the accept's user-data slot); `None` once shut down.
    listener: Vec<Option<Socket>>,
    consumers: Vec<Option<Consumer<H::Msg>>>,
    cross_buf: Vec<H::Msg>,
    cross_backlog: bool,
    /// The handler has background work left (`ConnHandler::on_batch_end`): do not block.
    handler_backlog: bool,
    cqes: Vec<cqueue::Entry>,
    wake_fds: Arc<Vec<OwnedFd>>,
    stop: Arc<AtomicBool>,
    features: KernelFeatures,
    accept_armed: Vec<bool>,
    wake_armed: bool,
    tick_armed: bool,
}

impl<H: ConnHandler> Shard<H> {
    /// Builds the ring and every buffer/table. Must run on the shard's own thread: with
    /// SINGLE_ISSUER the creating thread is the only one allowed to submit.
    pub fn new(parts: ShardParts<H::Msg>, handler: H) -> Result<Shard<H>, ShardError> {
        let cfg = parts.cfg;
        let mut b = IoUring::builder();
        // TASKRUN_FLAG: the kernel marks the SQ ring when completion work is waiting, so a
        // non-blocking `submit_and_wait(0)` (handler backlog, e.g. a CREATE2 queue) still
        // enters with GETEVENTS and runs it. Without it, deferred receive completions would
        // wait until the backlog clears: an onion flood would stall established circuits.
        b.setup_cqsize(cfg.cq_entries)
            .setup_submit_all()
            .setup_taskrun_flag();
        if parts.features.defer_taskrun {
            // The shard is the only submitter, and completion work runs only when it waits:
            // no inter-processor interrupts into a busy shard.
            b.setup_single_issuer().setup_defer_taskrun();
        } else {
            b.setup_coop_taskrun();
        }
        let ring = b
            .build(cfg.sq_entries)
            .map_err(|e| ShardError::ring("setup", e))?;
        ring.submitter()
            .register_files_sparse(cfg.max_connections)
            .map_err(|e| ShardError::ring("register sparse file table", e))?;
        let pool = SendPool::new(cfg.send_buf_count, cfg.send_buf_size)?;
        // SAFETY: the iovec covers the pool allocation, which outlives the ring (`core` owns
        // both and drops the ring first).
        let fixed_send_buf = unsafe { ring.submitter().register_buffers(&[pool.iovec()]) }.is_ok();
        let bufring = BufRing::new(&ring, cfg.recv_buf_count, cfg.recv_buf_size)?;
        let peer_wake_fds = parts.wake_fds.iter().map(|f| f.as_raw_fd()).collect();
        let mut core = Core::new(
            ring,
            cfg.clone(),
            parts.id,
            parts.shard_count,
            pool,
            fixed_send_buf,
            parts.producers,
            peer_wake_fds,
        );
        core.zc_report_usage = parts.features.zc_report_usage;
        core.bw = parts.bandwidth.map(|b| ShardBuckets::new(b, parts.id.0));
        Ok(Shard {
            core,
            bufring,
            handler,
            accept_armed: vec![false; parts.listener.len()],
            listener: parts.listener.into_iter().map(Some).collect(),
            consumers: parts.consumers,
            cross_buf: Vec::with_capacity(cfg.cross_batch as usize),
            cross_backlog: false,
            handler_backlog: false,
            cqes: Vec::with_capacity(cfg.cqe_batch as usize),
            wake_fds: parts.wake_fds,
            stop: parts.stop,
            features: parts.features,
            wake_armed: false,
            tick_armed: false,
        })
    }

    fn arm_accept(&mut self) {
        if self.core.stopping {
            return;
        }
        for (idx, l) in self.listener.iter().enumerate() {
            let Some(l) = l else { continue };
            if self.accept_armed[idx] {
                continue;
            }
            // Multishot accept: one SQE yields a CQE per incoming connection; the listener's
            // index rides in the user data's slot.
            let e = opcode::AcceptMulti::new(Fd(l.as_raw_fd()))
                .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
                .build()
                .user_data(user_data(OpKind::Accept, idx as u32, 0));
            self.accept_armed[idx] = self.core.push_sqe(e);
        }
    }

    fn arm_wake(&mut self) {
        if self.wake_armed || self.core.stopping {
            return;
        }
        let fd = self.wake_fds[self.core.shard.0].as_raw_fd();
        let buf = self.core.pinned.wake_buf.as_mut_ptr();
        let e = opcode::Read::new(Fd(fd), buf, 8)
            .build()
            .user_data(user_data(OpKind::WakeRead, 0, 0));
        self.wake_armed = self.core.push_sqe(e);
    }

    fn arm_tick(&mut self) {
        if self.tick_armed || self.core.stopping {
            return;
        }
        let e = opcode::Timeout::new(&self.core.pinned.tick as *const Timespec)
            .build()
            .user_data(user_data(OpKind::Tick, 0, 0));
        self.tick_armed = self.core.push_sqe(e);
    }

    fn arm_watches(&mut self) {
        for idx in 0..self.core.watches.len() {
            self.core.arm_watch(idx);
        }
    }

    /// Runs until the stop flag is set, then shuts down and returns the final state.
    pub fn run(mut self) -> Result<ShardReport<H>, ShardError> {
        self.handler.on_start(&mut Outbox {
            core: &mut self.core,
        });
        self.arm_accept();
        self.arm_wake();
        self.arm_tick();
        let result = self.event_loop();
        self.shutdown();
        let Shard {
            core,
            bufring,
            handler,
            listener,
            ..
        } = self;
        let metrics = core.metrics.clone();
        let shard = core.shard;
        drop(core);
        drop(bufring);
        drop(listener);
        result.map(|()| ShardReport {
            shard,
            handler,
            metrics,
        })
    }

    fn event_loop(&mut self) -> Result<(), ShardError> {
        while !self.stop.load(Ordering::Acquire) {
            self.core.flush_cross();
            // Re-arm whatever failed to submit earlier (SQ pressure).
            self.arm_accept();
            self.arm_wake();
            self.arm_tick();
            self.arm_watches();
            let want = usize::from(!self.cross_backlog && !self.handler_backlog);
            match self.submit_and_wait_until(want, self.handler.next_deadline()) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR | libc::EBUSY | libc::EAGAIN | libc::ETIME)
                    ) => {}
                Err(e) => return Err(ShardError::ring("submit_and_wait", e)),
            }
            self.core.now = Instant::now();
            self.core.metrics.loop_iterations += 1;
            self.reap();
            self.bufring.publish();
            self.drain_cross();
            self.dispatch_events();
            if !self.core.stopping {
                self.handler_backlog = self.handler.on_batch_end(&mut Outbox {
                    core: &mut self.core,
                });
                self.serve_deadline();
            }
        }
        Ok(())
    }

    /// `submit_and_wait(want)`, but a blocking wait ends at the handler's deadline (the
    /// wait's own timeout, `IORING_ENTER_EXT_ARG`; no SQE to re-arm). A deadline already
    /// past makes it a poll. Without EXT_ARG (kernels before 5.11) deadlines fall back to
    /// the tick.
    fn submit_and_wait_until(
        &mut self,
        want: usize,
        deadline: Option<Instant>,
    ) -> std::io::Result<usize> {
        let Some(at) = deadline.filter(|_| want > 0 && self.features.ext_arg) else {
            return self.core.ring.submit_and_wait(want);
        };
        let now = Instant::now();
        if at <= now {
            return self.core.ring.submit_and_wait(0);
        }
        let wait: Timespec = (at - now).into();
        let args = SubmitArgs::new().timespec(&wait);
        self.core.ring.submitter().submit_with_args(want, &args)
    }

    /// Calls `on_timer` if the handler's deadline has passed (once per iteration: what it
    /// leaves due is served after the next poll, which then does not block).
    fn serve_deadline(&mut self) {
        let Some(at) = self.handler.next_deadline() else {
            return;
        };
        let now = Instant::now();
        if now < at {
            return;
        }
        self.core.now = now;
        self.handler.on_timer(
            now,
            &mut Outbox {
                core: &mut self.core,
            },
        );
    }

    /// Copies completions out in batches (so the handler can submit while we iterate).
    fn reap(&mut self) {
        let batch = self.core.cfg.cqe_batch as usize;
        let mut cqes = std::mem::take(&mut self.cqes);
        loop {
            cqes.clear();
            cqes.extend(self.core.ring.completion().take(batch));
            if cqes.is_empty() {
                break;
            }
            for e in &cqes {
                self.handle(e.user_data(), e.result(), e.flags());
            }
            if cqes.len() < batch {
                break;
            }
        }
        self.cqes = cqes;
    }

    fn handle(&mut self, ud: u64, res: i32, flags: u32) {
        self.core.metrics.completions += 1;
        let Some((kind, slot, aux)) = decode(ud) else {
            return;
        };
        let more = cqueue::more(flags);
        let slot = slot as usize;
        let conn_op = !matches!(
            kind,
            OpKind::Accept
                | OpKind::WakeRead
                | OpKind::Tick
                | OpKind::WakeWrite
                | OpKind::Cancel
                | OpKind::Watch
        );
        if conn_op && slot >= self.core.conns.len() {
            return;
        }
        match kind {
            OpKind::Accept => {
                let idx = slot.min(self.listener.len().saturating_sub(1));
                if !more {
                    self.core.inflight_total -= 1;
                    if let Some(a) = self.accept_armed.get_mut(idx) {
                        *a = false;
                    }
                }
                if res == -libc::EINVAL {
                    // Runtime::close_listeners shut the socket down: never re-arm (it would
                    // fail at once, forever); drop it.
                    if let Some(l) = self.listener.get_mut(idx) {
                        *l = None;
                    }
                }
                self.on_accept(res);
                if !more {
                    self.arm_accept();
                }
            }
            OpKind::Recv => {
                if !more {
                    self.core.inflight_total -= 1;
                }
                self.on_recv(slot, aux, res, flags, more);
            }
            OpKind::Send => {
                self.core.inflight_total -= 1;
                self.core.on_send_done(slot, aux, res, false, false);
            }
            OpKind::SendZc => {
                if cqueue::notif(flags) {
                    self.core.inflight_total -= 1;
                    self.core.on_send_notif(slot, aux, res);
                } else {
                    if !more {
                        self.core.inflight_total -= 1;
                    }
                    self.core.on_send_done(slot, aux, res, true, more);
                }
            }
            OpKind::Connect => {
                self.core.inflight_total -= 1;
                self.on_connect(slot, aux, res);
            }
            OpKind::ConnectTimeout | OpKind::ConnCancel => {
                self.core.inflight_total -= 1;
                let c = &mut self.core.conns[slot];
                c.inflight = c.inflight.saturating_sub(1);
                self.core.maybe_finalize(slot);
            }
            OpKind::WakeRead => {
                self.core.inflight_total -= 1;
                self.wake_armed = false;
                if res > 0 {
                    self.core.metrics.wakeups_received += 1;
                }
                // Queues are drained every iteration; this op only ends the wait.
                self.arm_wake();
            }
            OpKind::Tick => {
                self.core.inflight_total -= 1;
                self.tick_armed = false;
                if !self.core.stopping && (res == -libc::ETIME || res == 0) {
                    self.core.metrics.ticks += 1;
                    let now = Instant::now();
                    // Before the handler: it may queue sends, which then see the new tokens.
                    self.core.bw_tick(now);
                    self.core.expire_held_open(now);
                    self.core.expire_handshakes(now);
                    self.core.trim_conn_table(now);
                    self.handler.on_tick(
                        now,
                        &mut Outbox {
                            core: &mut self.core,
                        },
                    );
                }
                self.arm_tick();
            }
            OpKind::WakeWrite | OpKind::Cancel => {
                self.core.inflight_total -= 1;
            }
            OpKind::Watch => self.on_watch(slot, res, more),
        }
    }

    fn on_watch(&mut self, idx: usize, res: i32, more: bool) {
        let Some(w) = self.core.watches.get_mut(idx) else {
            return;
        };
        if !more {
            self.core.inflight_total -= 1;
            w.armed = false;
        }
        if res == -libc::ECANCELED {
            return;
        }
        if res < 0 {
            // Bad descriptor or the like: re-arming would only fail again.
            w.dead = true;
            return;
        }
        if !self.core.stopping {
            self.handler.on_readable(
                WatchId(idx as u32),
                &mut Outbox {
                    core: &mut self.core,
                },
            );
        }
        if !more {
            self.core.arm_watch(idx);
        }
    }

    fn on_accept(&mut self, res: i32) {
        if res < 0 {
            if res != -libc::ECANCELED {
                self.core.metrics.accept_errors += 1;
            }
            return;
        }
        // SAFETY: a successful accept completion's result is a new descriptor owned by no one
        // else; the Socket takes ownership and closes it on drop.
        let sock = unsafe { Socket::from_raw_fd(res) };
        if self.core.stopping {
            return;
        }
        let Some(peer) = sock.peer_addr().ok().and_then(|a| a.as_socket()) else {
            // Already reset by the peer.
            self.core.metrics.accept_errors += 1;
            return;
        };
        self.core.make_room_for_inbound();
        match self
            .core
            .install(sock, ConnState::Open, Some(peer), SlotClass::Handshake)
        {
            Ok(id) => {
                self.core.metrics.accepted += 1;
                self.handler.on_accept(
                    id,
                    peer,
                    &mut Outbox {
                        core: &mut self.core,
                    },
                );
                self.core.arm_recv(id.slot as usize);
            }
            // Evicted handshakes hold their slots until their close completes: during a
            // burst that, not a full table, refuses the accept (counted apart, so the
            // operator is not told to raise the open-files limit for it).
            Err(OutboxError::TableFull) if self.core.slots.refused_for_evictees() => {
                self.core.metrics.accept_rejected_evicting += 1
            }
            Err(OutboxError::TableFull) => self.core.metrics.accept_rejected_table_full += 1,
            Err(_) => self.core.metrics.accept_errors += 1,
        }
    }

    fn on_recv(&mut self, slot: usize, gen: u32, res: i32, flags: u32, more: bool) {
        let c = &mut self.core.conns[slot];
        if !more {
            c.recv = RecvState::Idle;
            c.inflight = c.inflight.saturating_sub(1);
        }
        let open = c.state == ConnState::Open && c.gen == gen;
        let deliver = open && !c.close_after_flush;
        if res > 0 {
            if let Some(bid) = cqueue::buffer_select(flags) {
                self.core.metrics.recv_completions += 1;
                self.core.metrics.recv_bytes += res as u64;
                // The bytes were read from the socket: charge them even if not delivered.
                self.core.bw_on_read(slot, res as u64);
                if deliver {
                    let data = self.bufring.data_mut(bid, res as usize);
                    self.handler.on_data(
                        ConnId {
                            slot: slot as u32,
                            gen,
                        },
                        data,
                        &mut Outbox {
                            core: &mut self.core,
                        },
                    );
                }
                // The handler has consumed the bytes: hand the buffer back to the kernel.
                self.bufring.push(bid);
            }
        } else if res == 0 {
            if open {
                self.core.close_conn(slot, CloseReason::PeerClosed);
            }
        } else {
            match -res {
                libc::ENOBUFS => self.core.metrics.recv_no_buffers += 1,
                libc::ECANCELED => {}
                err if open => self.core.close_conn(slot, CloseReason::from_errno(err)),
                _ => {}
            }
        }
        if !more {
            let c = &self.core.conns[slot];
            if c.state == ConnState::Open && c.want_read {
                self.core.metrics.recv_rearms += 1;
                self.core.arm_recv(slot);
            } else {
                self.core.maybe_finalize(slot);
            }
        }
    }

    fn on_connect(&mut self, slot: usize, gen: u32, res: i32) {
        let c = &mut self.core.conns[slot];
        c.inflight = c.inflight.saturating_sub(1);
        if c.state != ConnState::Connecting || c.gen != gen {
            self.core.maybe_finalize(slot);
            return;
        }
        if res == 0 {
            c.state = ConnState::Open;
            let peer = c.peer;
            self.core.metrics.connected += 1;
            let id = ConnId {
                slot: slot as u32,
                gen,
            };
            if let Some(peer) = peer {
                self.handler.on_connected(
                    id,
                    peer,
                    &mut Outbox {
                        core: &mut self.core,
                    },
                );
            }
            self.core.arm_recv(slot);
            self.core.start_send(slot);
            if self.core.conns[slot].close_after_flush && self.core.conns[slot].sq_len == 0 {
                self.core.close_conn(slot, CloseReason::LocalClose);
            }
        } else if res == -libc::ECANCELED {
            // Cancelled by the linked timeout.
            self.core.close_conn(slot, CloseReason::ConnectTimeout);
        } else {
            self.core.close_conn(slot, CloseReason::ConnectFailed(-res));
        }
    }

    /// Pops cross-shard items in batches. Bounded per iteration so one busy neighbour cannot
    /// starve this shard's own sockets; leftovers make the next wait non-blocking.
    fn drain_cross(&mut self) {
        let batch = self.core.cfg.cross_batch as usize;
        const ROUNDS: usize = 4;
        self.cross_backlog = false;
        for from in 0..self.consumers.len() {
            let Some(cons) = self.consumers[from].as_mut() else {
                continue;
            };
            for round in 0..=ROUNDS {
                if round == ROUNDS {
                    self.cross_backlog = !cons.is_empty();
                    break;
                }
                let n = cons.pop_batch(&mut self.cross_buf, batch);
                if n == 0 {
                    break;
                }
                self.core.metrics.cross_popped += n as u64;
                self.handler.on_cross_shard(
                    ShardId(from),
                    self.cross_buf.drain(..),
                    &mut Outbox {
                        core: &mut self.core,
                    },
                );
            }
            // The handler of shard `from` holds items for us until this queue has room.
            if let Some(cons) = self.consumers[from].as_mut() {
                if cons.take_producer_waiting() {
                    self.core.wake_peer(from);
                }
            }
        }
    }

    fn dispatch_events(&mut self) {
        loop {
            // Completions (and handlers' closes) may have given send room back.
            self.core.wake_writers();
            let Some(ev) = self.core.events.pop_front() else {
                // Empty: start the ring over at its front (`clear` resets the head), so
                // only as much of it as the largest burst of events is ever touched; a
                // head walking round the whole ring made all of it resident (issue #15).
                self.core.events.clear();
                break;
            };
            match ev {
                Event::Closed(id, reason) => {
                    self.handler.on_closed(
                        id,
                        reason,
                        &mut Outbox {
                            core: &mut self.core,
                        },
                    );
                    // Only now may the slot serve a new connection (`close_unreported`).
                    let slot = id.slot as usize;
                    if let Some(c) = self.core.conns.get_mut(slot) {
                        if c.gen == id.gen {
                            c.close_unreported = false;
                            self.core.maybe_finalize(slot);
                        }
                    }
                }
                Event::Writable(id) => {
                    if self.core.live_slot(id).is_some() {
                        self.core.metrics.writable_events += 1;
                        self.handler.on_writable(
                            id,
                            &mut Outbox {
                                core: &mut self.core,
                            },
                        );
                    }
                }
            }
        }
    }

    /// Closes every connection, cancels the shard's own ops and waits (bounded) until the
    /// kernel has finished with all memory it was given.
    fn shutdown(&mut self) {
        self.core.stopping = true;
        let cancel = |target: u64| {
            opcode::AsyncCancel::new(target)
                .build()
                .user_data(user_data(OpKind::Cancel, 0, 0))
        };
        for idx in 0..self.accept_armed.len() {
            if self.accept_armed[idx] {
                self.core
                    .push_sqe(cancel(user_data(OpKind::Accept, idx as u32, 0)));
            }
        }
        if self.wake_armed {
            self.core
                .push_sqe(cancel(user_data(OpKind::WakeRead, 0, 0)));
        }
        if self.tick_armed {
            self.core.push_sqe(cancel(user_data(OpKind::Tick, 0, 0)));
        }
        for idx in 0..self.core.watches.len() {
            if self.core.watches[idx].armed {
                self.core
                    .push_sqe(cancel(user_data(OpKind::Watch, idx as u32, 0)));
            }
        }
        for slot in 0..self.core.conns.len() {
            self.core.close_conn(slot, CloseReason::Shutdown);
        }
        self.dispatch_events();
        let deadline =
            Instant::now() + Duration::from_millis(u64::from(self.core.cfg.shutdown_grace_ms));
        let wait: Timespec = Duration::from_millis(10).into();
        while self.core.inflight_total > 0 && Instant::now() < deadline {
            let r = if self.features.ext_arg {
                let args = SubmitArgs::new().timespec(&wait);
                self.core.ring.submitter().submit_with_args(1, &args)
            } else {
                std::thread::sleep(Duration::from_millis(1));
                self.core.ring.submit()
            };
            if let Err(e) = r {
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EBUSY | libc::EAGAIN | libc::ETIME)
                ) {
                    break;
                }
            }
            self.reap();
            self.bufring.publish();
            self.dispatch_events();
        }
        if self.core.inflight_total > 0 {
            // The kernel may still touch these buffers: never free them.
            self.core.metrics.shutdown_leaked_ops = self.core.inflight_total;
            self.bufring.leak();
            self.core.pool.leak();
        }
    }
}
