//! A channel's life inside the node: its cells go to the circuit core (or, for circuits of
//! other shards, to [`super::proxy`]) — the RELAY cells of one read as one batch
//! (`RelayCore::queue_relay_cell`, flushed at the read's end) —, its events (open, closed, clock skew) update the
//! node's tables, and its output goes to the socket with backpressure both ways: the core
//! is told a channel is blocked when its cell queue runs low, and cells emitted meanwhile
//! wait in the channel's bounded overflow, never dropped.
//!
//! The cell queueing delay (MetricsPort `fors_relay_cell_queue_delay_seconds`) is taken
//! here per receive window, not per cell: a window opens when the node starts handling a
//! read (channel or exit stream) or a cross-shard batch, counts the RELAY cells written
//! into a channel's queue meanwhile (one add per cell, no clock), and closes with one clock
//! read at the end of that handling, observing all of them at the window's length. Cells
//! the core held for a blocked channel are timed by the pool's stamps instead
//! (`CellPool::set_clock`) and left out of the window's count.

use super::*;
use crate::proto::channel::padding::ChannelPadding;
use crate::proto::channel::TlsPath;

/// Open channels by the record layer they settled on (`Channel::stats().tls_path`), since
/// the shard started, for the MetricsPort.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct TlsPathCounts {
    pub record_layer: u64,
    pub rustls_tls12: u64,
    pub rustls_refused: u64,
    /// Records opened behind a header from the read before (`Channel::read_hint`).
    pub records_split: u64,
    /// Records split across reads and gathered first (a copy), and their bytes.
    pub records_gathered: u64,
    pub record_bytes_gathered: u64,
    /// Times a channel's read hints paused because most capped reads still cut a record.
    pub read_hint_pauses: u64,
}

impl TlsPathCounts {
    fn changed(&mut self, before: TlsPath, after: TlsPath) {
        if before == after {
            return;
        }
        match after {
            TlsPath::RecordLayer => self.record_layer += 1,
            TlsPath::RustlsTls12 => self.rustls_tls12 += 1,
            TlsPath::RustlsRefused => self.rustls_refused += 1,
            TlsPath::Rustls => {}
        }
    }
}

/// Tell the core a channel is blocked when fewer than this many cells fit in its queue.
pub(super) const BLOCK_BELOW_CELLS: usize = 64;
/// A channel's overflow takes what the core releases at once when the channel unblocks,
/// which is at most what its pool may hold (the memory cap, in cells: `RelayNode::
/// chan_overflow_cap`), plus cells of other shards' circuits that were already on their
/// way (at most this many, a cross-shard queue's worth). Past that bound the overflow is
/// not a burst but a peer that does not read.
pub(super) const CHAN_OVERFLOW_SLACK_CELLS: usize = 4096;
/// ... and unblocked again once this many fit.
pub(super) const UNBLOCK_AT_CELLS: usize = 128;

/// Receives a channel's cells and events while it reads, and hands cells to the core (or,
/// for circuits of other shards, collects them for their origin shard).
pub(super) struct CellSink<'a> {
    pub(super) core: &'a mut Core,
    pub(super) conn: ConnId,
    pub(super) proxy: &'a mut ProxyTable,
    /// (circuit ID, origin shard, origin handle, command, body) for other shards.
    pub(super) cross_in: &'a mut Vec<(CircId, ShardId, CircHandle, ChanCmd, CellBody)>,
    pub(super) info: ChanInfo,
    pub(super) rng: &'a mut StdRng,
    pub(super) actions: &'a mut Vec<Action>,
    pub(super) events: &'a mut Vec<ChannelEvent>,
    /// CREATED*/DESTROY cells that may answer one of our extends.
    pub(super) answers: &'a mut Vec<(CircId, ChanCmd, [u8; CELL_BODY_LEN])>,
    pub(super) now: Instant,
    /// Set on tracked incoming channels while the circuit-creation defence is on.
    pub(super) dos: Option<DosCheck<'a>>,
}

impl ChannelSink for CellSink<'_> {
    fn cell(
        &mut self,
        circ_id: CircId,
        cmd: ChanCmd,
        body: &mut [u8; CELL_BODY_LEN],
        out: &mut CellQueue,
    ) {
        if !self.proxy.is_empty() {
            if let Some((shard, circ)) = self.proxy.get(self.conn, circ_id) {
                if cmd == ChanCmd::DESTROY {
                    self.proxy.remove(self.conn, circ_id);
                }
                self.cross_in.push((circ_id, shard, circ, cmd, *body));
                return;
            }
        }
        match cmd {
            ChanCmd::CREATED2 | ChanCmd::CREATED | ChanCmd::CREATED_FAST => {
                self.answers.push((circ_id, cmd, *body));
                return;
            }
            ChanCmd::DESTROY => self.answers.push((circ_id, cmd, *body)),
            // The DoS check counts the cell (as C does) and may answer it itself.
            ChanCmd::CREATE | ChanCmd::CREATE2 | ChanCmd::CREATE_FAST
                if self.dos.is_some() && self.dos_refuses(circ_id, out) =>
            {
                return
            }
            // Accounting hibernation: DESTROY HIBERNATING, after the DoS check (C
            // `command_process_create_cell`).
            ChanCmd::CREATE | ChanCmd::CREATE2 | ChanCmd::CREATE_FAST
                if self.core.network_view_mut().hibernating() =>
            {
                let body = crate::proto::circuit::destroy_body(DestroyReason::Hibernating);
                let _ = out.send_cell(circ_id, ChanCmd::DESTROY, &body);
                return;
            }
            _ => {}
        }
        let mut io = CoreIo::new(self.now, self.rng, self.actions);
        if matches!(cmd, ChanCmd::RELAY | ChanCmd::RELAY_EARLY) {
            // Crypted with the read's other RELAY cells (`channel_input` flushes).
            self.core
                .queue_relay_cell(self.info.id, circ_id, cmd, body, &mut io);
        } else {
            self.core
                .handle_cell(&self.info, circ_id, cmd, body, &mut io);
        }
    }

    fn cell_ref(
        &mut self,
        circ_id: CircId,
        cmd: ChanCmd,
        body: &[u8; CELL_BODY_LEN],
        out: &mut CellQueue,
    ) {
        // A RELAY cell of one of our circuits is copied into the read's stage anyway: take
        // it from TLS's plaintext as it is (the copy map). Anything else as `cell`.
        if matches!(cmd, ChanCmd::RELAY | ChanCmd::RELAY_EARLY)
            && (self.proxy.is_empty() || self.proxy.get(self.conn, circ_id).is_none())
        {
            let mut io = CoreIo::new(self.now, self.rng, self.actions);
            self.core
                .queue_relay_cell(self.info.id, circ_id, cmd, body, &mut io);
            return;
        }
        copies::note(CopySite::ChanInbuf, CELL_BODY_LEN);
        let mut b = *body;
        self.cell(circ_id, cmd, &mut b, out);
    }

    fn event(&mut self, event: ChannelEvent) {
        if let ChannelEvent::Open(info) = &event {
            // Cells may follow in the same read: they must see the proven peer.
            self.info.peer = info.peer;
        }
        self.events.push(event);
    }
}

/// Where the core's actions go when the node is not inside a channel's read (so every
/// channel of the shard may be written): a cell for an open channel of this shard goes
/// straight into that channel's queue — one copy, where an `Action::SendCell` costs two
/// more (into the action buffer, out of it; the copy map in `docs/architecture.md`).
///
/// It writes only when that is exactly what running the action later would have done
/// (`RelayNode::send_local`): no cell action is waiting (it could be an earlier cell for
/// the same channel: order; other actions do not write on channels), the channel is not
/// closing, holds nothing in its overflow, is not blocked and stays above the blocking
/// threshold after this cell. Otherwise the action is pushed as before.
///
/// Likewise a DATA cell's bytes go straight to an exit stream's socket when no action other
/// than a cell waits (a write, close or pause of a stream must not be overtaken), the
/// stream has no backlog and its socket takes them all now (`RelayNode::stream_write`).
pub(super) struct DirectSink<'a, O> {
    pub(super) actions: &'a mut Vec<Action>,
    /// A `SendCell` is among `actions`: from then on every cell goes there too.
    pub(super) cells_waiting: bool,
    /// An action other than `SendCell` is among `actions`: stream bytes go there too.
    pub(super) others_waiting: bool,
    pub(super) streams: &'a HashMap<StreamHandle, ConnId>,
    pub(super) out: &'a mut O,
    pub(super) conns: &'a mut [Option<Conn>],
    pub(super) shard: ShardId,
    pub(super) dirty: &'a mut Vec<ConnId>,
    /// `QueueDelayWindow::sent`: the RELAY cells written count for the queueing delay.
    pub(super) qdelay_sent: &'a mut u64,
}

impl<O: ShardIo<RelayMsg>> ActionSink for DirectSink<'_, O> {
    fn push(&mut self, action: Action) {
        let cell = matches!(action, Action::SendCell { .. });
        self.cells_waiting |= cell;
        self.others_waiting |= !cell;
        self.actions.push(action);
    }

    fn stream_write_direct(&mut self, stream: StreamHandle, data: &[u8]) -> bool {
        if self.others_waiting {
            return false;
        }
        let Some(&id) = self.streams.get(&stream) else {
            return false;
        };
        let Some(Some(c)) = self.conns.get_mut(id.slot() as usize) else {
            return false;
        };
        let Kind::Stream(s) = &c.kind else {
            return false;
        };
        if c.id != id || !s.unsent.is_empty() || self.out.send_capacity(id) < data.len() {
            return false;
        }
        // All or nothing, so a refusal leaves the action path exactly as it was.
        self.out.send(id, data).is_ok()
    }

    fn send_cell_direct(
        &mut self,
        chan: ChanId,
        shard: ShardIdx,
        circ_id: CircId,
        cmd: ChanCmd,
        body: &CellBody,
    ) -> bool {
        if self.cells_waiting || usize::from(shard.0) != self.shard.0 {
            return false;
        }
        // As `RelayNode::conn_of_chan`.
        let slot = (chan.0 & 0xffff_ffff) as usize;
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return false;
        };
        if chan_id(self.shard, c.id) != chan || c.closing {
            return false;
        }
        let Kind::Channel(ch) = &mut c.kind else {
            return false;
        };
        if ch.blocked
            || !ch.overflow.is_empty()
            || ch.channel.queue().free_cells() <= BLOCK_BELOW_CELLS
            || ch.channel.send_cell(circ_id, cmd, body).is_err()
        {
            return false;
        }
        *self.qdelay_sent += u64::from(matches!(cmd, ChanCmd::RELAY | ChanCmd::RELAY_EARLY));
        if !self.dirty.contains(&c.id) {
            self.dirty.push(c.id);
        }
        true
    }
}

impl RelayNode {
    /// A `CoreIo` whose cells may go straight into this shard's channel queues
    /// ([`DirectSink`]); only where no channel is borrowed (not inside a channel's read).
    pub(super) fn with_direct_io<T>(
        &mut self,
        now: Instant,
        out: &mut impl ShardIo<RelayMsg>,
        f: impl FnOnce(&mut Core, &mut CoreIo<'_>) -> T,
    ) -> T {
        // Once per flush (the buffer is empty in steady state).
        let cells_waiting = self
            .actions
            .iter()
            .any(|a| matches!(a, Action::SendCell { .. }));
        let others_waiting = self
            .actions
            .iter()
            .any(|a| !matches!(a, Action::SendCell { .. }));
        let mut sink = DirectSink {
            actions: &mut self.actions,
            cells_waiting,
            others_waiting,
            streams: &self.streams,
            out,
            conns: &mut self.conns,
            shard: self.shard,
            dirty: &mut self.dirty,
            qdelay_sent: &mut self.qdelay.sent,
        };
        let mut io = CoreIo::new(now, &mut self.core_rng, &mut sink);
        f(&mut self.core, &mut io)
    }
}

/// The cell queueing delay's receive window (see the module docs).
#[derive(Debug, Default)]
pub(super) struct QueueDelayWindow {
    /// When the handling of the window's first receive event started; `None`: closed.
    start: Option<Instant>,
    /// RELAY/RELAY_EARLY cells handed to our channels (queue or overflow) since the window
    /// opened or was last observed, ...
    sent: u64,
    /// ... of which the core released this many from its pool toward a channel of ours
    /// that unblocked (timed by their stamps, not by the window).
    held: u64,
}

impl RelayNode {
    /// A receive event's handling starts at `now`: the relay cells sent from here on are
    /// timed from it. A window still open is observed at `now` first — unless exit data
    /// packaged in it is still staged for the batch's end (`timers.rs`): then the window
    /// keeps its earlier start, so those cells are timed from the read that brought them
    /// (the new event's cells are timed from there too: an upper bound).
    pub(super) fn qdelay_open(&mut self, now: Instant) {
        if self.latency.is_none() {
            return;
        }
        if let Some(start) = self.qdelay.start {
            if self.core.has_staged() {
                return;
            }
            self.qdelay_observe(start, now);
        }
        self.qdelay = QueueDelayWindow {
            start: Some(now),
            sent: 0,
            held: 0,
        };
    }

    /// The receive event's handling is over: its cells are observed (one clock read, only
    /// if it sent any) and the window closes, unless staged exit data keeps it open.
    pub(super) fn qdelay_close(&mut self, out: &impl ShardIo<RelayMsg>) {
        let Some(start) = self.qdelay.start else {
            return;
        };
        if self.qdelay.sent > self.qdelay.held {
            self.qdelay_observe(start, out.now());
        }
        if !self.core.has_staged() {
            self.qdelay.start = None;
        }
    }

    fn qdelay_observe(&mut self, start: Instant, now: Instant) {
        let n = self.qdelay.sent.saturating_sub(self.qdelay.held);
        if let Some(l) = self.latency.as_ref().filter(|_| n > 0) {
            l.cell_queue_delay
                .observe_n(now.saturating_duration_since(start), n);
        }
        self.qdelay.sent = 0;
        self.qdelay.held = 0;
    }

    /// Bytes read from channel `conn` (handling started at `now`): through TLS and the link
    /// protocol, cells to the core (or toward other shards), then the channel's events and
    /// extend answers.
    pub(super) fn channel_input(
        &mut self,
        conn: ConnId,
        data: &mut [u8],
        now: Instant,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        let wall = out.wall();
        let Some(Conn {
            kind: Kind::Channel(ch),
            ..
        }) = self
            .conns
            .get_mut(conn.slot() as usize)
            .and_then(Option::as_mut)
            .filter(|c| c.id == conn)
        else {
            return;
        };
        // Any cell read restarts the padding idle clock (C `channel_timestamp_active`).
        if let Some(p) = ch.padding.as_mut() {
            p.on_activity(now);
        }
        let before = ch.channel.stats();
        let tls_path = before.tls_path;
        let mut sink = CellSink {
            core: &mut self.core,
            conn,
            proxy: &mut self.proxy,
            cross_in: &mut self.cross_in,
            info: ChanInfo {
                id: chan_id(self.shard, conn),
                peer: ch.peer,
                we_initiated: ch.channel.is_initiator(),
            },
            rng: &mut self.core_rng,
            actions: &mut self.actions,
            events: &mut self.events,
            answers: &mut self.answers,
            now,
            dos: ch
                .dos_slot
                .filter(|_| self.dos_cfg.cc_enabled)
                .map(|slot| DosCheck {
                    table: &self.dos,
                    slot,
                    cfg: self.dos_cfg,
                    now: self.dos.secs(now),
                }),
        };
        // An error has already closed the channel and reported `Closed`.
        // Records are opened in the shard's receive buffer itself (the copy map).
        let _ = ch
            .channel
            .handle_input_mut(data, wall, &mut self.chan_rng, &mut sink);
        // Where the next read should end: right after a record's header, so the record
        // after it arrives whole and is opened in place. Fails only on a closed channel.
        let _ = out.set_read_cap(conn, ch.channel.read_hint(out.recv_buf_size()));
        // Link cells dropped for a peer's violation: counted for the shard's
        // protocol-warning line (`protowarn.rs`; C logs each at `LOG_PROTOCOL_WARN`).
        let link = ch.channel.take_link_warnings();
        self.protocol_warnings.link_cells(&link);
        // The read may have moved the channel onto Fors's record layer, or settled it on
        // rustls (`Channel::stats().tls_path`): counted once per channel, when it changes.
        let after = ch.channel.stats();
        self.tls_paths.changed(tls_path, after.tls_path);
        self.tls_paths.records_split += after.split_records_opened - before.split_records_opened;
        self.tls_paths.records_gathered += after.records_gathered - before.records_gathered;
        self.tls_paths.record_bytes_gathered +=
            after.record_bytes_gathered - before.record_bytes_gathered;
        self.tls_paths.read_hint_pauses += after.read_hint_pauses - before.read_hint_pauses;
        // The read's RELAY cells, crypted together and handled in arrival order; the cells
        // they forward go straight into our channels' queues where they can.
        self.with_direct_io(now, out, |core, io| core.flush_relay_cells(io));
        self.deliver_cross_in(conn, out);
        self.channel_events(conn, now, out);
        self.route_answers(conn, now, out);
        self.mark_dirty(conn);
        self.dispatch(out);
    }

    /// Reacts to channel events collected while reading.
    pub(super) fn channel_events(
        &mut self,
        id: ConnId,
        now: Instant,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        let events = std::mem::take(&mut self.events);
        let shard = self.shard;
        for e in &events {
            // Drawn before the connection is borrowed; used only by `Open`.
            let idle_timeouts = if matches!(e, ChannelEvent::Open(_)) {
                // `nf_conntimeout_relays`, clamped to 60 s..1 week as C does (read with the
                // other padding parameters, at most a second ago: `timers.rs`).
                let relay_base = self.padding.conntimeout_relays_secs();
                (
                    idle::client_idle_timeout(&mut self.chan_rng),
                    idle::relay_idle_timeout(relay_base, &mut self.chan_rng),
                )
            } else {
                Default::default()
            };
            let mut opened_relay = None;
            let mut waiting = Vec::new();
            // `self.conns` by field (not `self.conn`) so that the DoS table, its config and
            // the RNG stay usable inside.
            if let Some(Conn {
                kind: Kind::Channel(c),
                closing,
                ..
            }) = self
                .conns
                .get_mut(id.slot() as usize)
                .and_then(Option::as_mut)
                .filter(|c| c.id == id)
            {
                match e {
                    ChannelEvent::Open(info) => {
                        c.open = true;
                        c.peer = info.peer;
                        // C `channel_do_open_actions`: a client channel accepted while no
                        // defence was on is counted now, so its CREATE cells are too.
                        if c.dos_slot.is_none() && matches!(info.peer, PeerIdentity::Client) {
                            c.dos_slot = self.dos.on_client_open(
                                c.channel.peer_addr(),
                                &self.dos_cfg,
                                self.dos.secs(now),
                                &mut self.core_rng,
                            );
                        }
                        let timeout = match info.peer {
                            PeerIdentity::Client => idle_timeouts.0,
                            PeerIdentity::Relay { .. } => idle_timeouts.1,
                        };
                        c.idle = Some(ChannelIdleTimer::new(timeout, now));
                        c.padding = Some(ChannelPadding::new(info.link_version, now));
                        crate::relay::ctlevents::opened(
                            shard,
                            id,
                            crate::relay::ctlevents::relay_of(info.peer),
                        );
                        waiting = std::mem::take(&mut c.waiting_extends);
                        if let PeerIdentity::Relay { rsa, .. } = info.peer {
                            opened_relay = Some(rsa);
                            log_info!(
                                "shard {shard}: channel open with relay ${} at {} (link v{})",
                                rsa.to_hex(),
                                log::relay_addr(c.channel.peer_addr()),
                                info.link_version
                            );
                        } else {
                            log_debug!(
                                "shard {shard}: channel open with a client at {}",
                                log::client_addr(c.channel.peer_addr())
                            );
                        }
                    }
                    ChannelEvent::Closed(reason) => {
                        log_debug!("shard {shard}: channel closed: {reason}");
                        *closing = true;
                    }
                    ChannelEvent::ClockSkew { skew_secs } => log_info!(
                        "shard {shard}: peer {} says our clock is off by {skew_secs} s",
                        peer_for_log(c.peer, c.channel.peer_addr())
                    ),
                    // Handled below, with the node's padding parameters.
                    ChannelEvent::PaddingNegotiate(_) => {}
                }
            }
            if let ChannelEvent::PaddingNegotiate(cell) = e {
                self.padding_negotiate(id, cell);
            }
            // A peer's link-protocol violation: counted for the shard's protocol-warning
            // line (`protowarn.rs`; C tor logs these at `LOG_PROTOCOL_WARN`).
            if let ChannelEvent::Closed(why) = e {
                self.protocol_warnings.channel_closed(why);
            }
            if let ChannelEvent::Open(_) = e {
                self.stats
                    .handler
                    .channels_open
                    .fetch_add(1, Ordering::Relaxed);
            }
            if let Some(rsa) = opened_relay {
                self.relay_chans.entry(rsa).or_insert(id);
                if self.opening.get(&rsa) == Some(&id) {
                    self.opening.remove(&rsa);
                }
            }
            for (who, body) in waiting {
                self.send_create2(id, who, &body, now, out);
            }
        }
        let mut events = events;
        events.clear();
        self.events = events;
    }

    /// Hands a channel's TLS output to the socket, applies backpressure both ways, and
    /// closes the connection once a closed channel has flushed.
    pub(super) fn flush(&mut self, id: ConnId, out: &mut impl ShardIo<RelayMsg>) {
        let now = out.now();
        let mut unblock = None;
        let mut stream_drained = None;
        let shard = self.shard;
        let Some(c) = self.conn(id) else { return };
        match &mut c.kind {
            Kind::Channel(ch) => {
                // Overflow cells into the queue, queue into TLS, TLS into the socket, until
                // the socket refuses or nothing is left.
                loop {
                    while ch.channel.queue().free_cells() > 0 {
                        let Some((cid, cmd, body)) = ch.overflow.pop_front() else {
                            break;
                        };
                        if ch.channel.send_cell(cid, cmd, &body).is_err() {
                            break;
                        }
                    }
                    // TLS records straight into the socket's send buffers (no copy through
                    // the channel's own TLS buffer: the copy map), then whatever did not fit
                    // through that buffer.
                    let chan = &mut ch.channel;
                    let mut fill = |buf: &mut [u8]| Filled {
                        written: chan.write_output_into(buf),
                        more: chan.wants_write_into(),
                    };
                    let mut sent = match out.send_with(id, &mut fill) {
                        Ok(n) => n,
                        Err(OutboxError::NotOpen) => {
                            c.closing = true;
                            break;
                        }
                        Err(_) => 0,
                    };
                    let mut short = false;
                    let pending = ch.channel.pending_output();
                    if !pending.is_empty() {
                        let len = pending.len();
                        match out.send_partial(id, pending) {
                            Ok(n) => {
                                ch.channel.consume_output(n);
                                sent += n;
                                short = n < len;
                            }
                            Err(OutboxError::NotOpen) => {
                                c.closing = true;
                                break;
                            }
                            Err(_) => short = true,
                        }
                    }
                    // Bytes written: the channel is active (C `connection_or_flushed_some`).
                    if let (true, Some(p)) = (sent > 0, ch.padding.as_mut()) {
                        p.on_written(now);
                    }
                    if short || sent == 0 || ch.overflow.is_empty() {
                        break;
                    }
                }
                let flushed = ch.channel.pending_output().is_empty();
                if ch.blocked
                    && ch.overflow.is_empty()
                    && ch.channel.queue().free_cells() >= UNBLOCK_AT_CELLS
                {
                    ch.blocked = false;
                    unblock = Some(chan_id(shard, id));
                }
                if c.closing || ch.channel.is_closed() {
                    c.closing = true;
                    if flushed {
                        let _ = out.close(id);
                    }
                } else if !ch.channel.wants_read() && !c.read_paused {
                    if out.pause_read(id).is_ok() {
                        c.read_paused = true;
                    }
                } else if ch.channel.wants_read()
                    && c.read_paused
                    && !ch.cross_paused
                    && out.resume_read(id).is_ok()
                {
                    c.read_paused = false;
                }
            }
            Kind::Stream(s) => {
                if !s.unsent.is_empty() {
                    if let Ok(n) = out.send_partial(id, s.unsent.as_slice()) {
                        s.unsent.consume(n);
                    }
                    if s.unsent.is_empty() && !s.forgotten {
                        stream_drained = Some(s.stream);
                    }
                }
            }
        }
        if let Some(chan) = unblock {
            let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
            let timed = self.core.queue_delay().cells;
            self.core.channel_unblocked(chan, &mut io);
            // Every cell released here goes to this channel (`send_local`), timed already.
            self.qdelay.held += self.core.queue_delay().cells - timed;
            if self.proxy.carries(id) {
                self.broadcast_blocked(chan, false, out);
            }
        }
        if let Some(stream) = stream_drained {
            let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
            let _ = self.core.stream_write_blocked(stream, false, &mut io);
        }
    }

    /// Writes a cell on one of our channels (for our core or for another shard's circuit),
    /// holding it in the channel's overflow if its queue is full. Tells the core, and the
    /// origin shards of circuits carried for them, when the channel becomes blocked.
    pub(super) fn send_local(
        &mut self,
        chan: ChanId,
        circ_id: CircId,
        cmd: ChanCmd,
        body: &CellBody,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        let Some(id) = self.conn_of_chan(chan) else {
            return;
        };
        let mut block = false;
        let mut dropped = false;
        let mut over = false;
        let cap = self.chan_overflow_cap();
        if let Some(Conn {
            kind: Kind::Channel(c),
            closing,
            ..
        }) = conn_in(&mut self.conns, id)
        {
            if *closing {
                // As C tor discards a cell for a closing channel (channel_write_cell_generic_):
                // its circuits get DESTROY when it is gone; queueing more only delays that.
                self.cells_dropped_full += 1;
                return;
            }
            // Counted for the cell queueing delay (the open window, if any, times it).
            self.qdelay.sent += u64::from(matches!(cmd, ChanCmd::RELAY | ChanCmd::RELAY_EARLY));
            // Behind cells already in the overflow, or into the channel's queue.
            let sent = if c.overflow.is_empty() {
                c.channel.send_cell(circ_id, cmd, body)
            } else {
                Err(ChannelError::OutputFull)
            };
            match sent {
                Ok(()) => {}
                // A peer that has not read for this long: the channel goes (its circuits
                // get DESTROY) rather than queueing without bound or losing a cell of a
                // circuit that lives on.
                Err(ChannelError::OutputFull) if c.overflow.len() >= cap => over = true,
                Err(ChannelError::OutputFull) => {
                    c.overflow.push_back((circ_id, cmd, *body));
                    self.bounds.chan_overflow_peak =
                        self.bounds.chan_overflow_peak.max(c.overflow.len());
                }
                Err(_) => dropped = true,
            }
            if !c.blocked
                && (!c.overflow.is_empty() || c.channel.queue().free_cells() < BLOCK_BELOW_CELLS)
            {
                c.blocked = true;
                block = true;
            }
        }
        self.cells_dropped_full += u64::from(dropped);
        if over {
            self.bounds.chan_overflow_closes += 1;
            self.cells_dropped_full += 1;
            log_info!(
                "shard {}: closing a channel whose peer left {cap} cells unread",
                self.shard
            );
            if let Some(c) = self.conn(id) {
                c.closing = true;
            }
            let _ = out.close(id);
            return;
        }
        if block {
            self.core.channel_blocked(chan);
            if self.proxy.carries(id) {
                self.broadcast_blocked(chan, true, out);
            }
        }
        self.mark_dirty(id);
    }

    /// Channel `conn` closed: forget it, DESTROY toward the origins of other shards'
    /// circuits it carried, fail the extends that waited on it, and tell the core.
    pub(super) fn channel_gone(
        &mut self,
        conn: ConnId,
        mut ch: Box<ChanConn>,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        let now = out.now();
        if let Some(s) = ch.dos_slot.take() {
            self.dos.on_close(s);
        }
        // Only a close the channel did not already report has a reason worth logging
        // here (EOF from the peer, possibly inside a cell).
        if !ch.channel.is_closed() {
            let why = ch.channel.handle_eof(&mut NullSink);
            log_debug!("shard {}: channel closed: {why}", self.shard.0);
        }
        if ch.open {
            self.stats
                .handler
                .channels_open
                .fetch_sub(1, Ordering::Relaxed);
        }
        if let PeerIdentity::Relay { rsa, .. } = ch.peer {
            if self.relay_chans.get(&rsa) == Some(&conn) {
                self.relay_chans.remove(&rsa);
            }
        }
        self.opening.retain(|_, id| *id != conn);
        let chan = self.chan(conn);
        // Circuits of other shards on this channel: DESTROY toward their origins
        // (and a last "unblocked" so no origin keeps the dead channel blocked).
        if self.proxy.carries(conn) {
            if ch.blocked {
                self.broadcast_blocked(chan, false, out);
            }
            let mut gone = Vec::new();
            self.proxy.take_conn(conn, &mut gone);
            for (_, shard, circ) in gone {
                let msg = RelayMsg::Backward {
                    circ,
                    cmd: ChanCmd::DESTROY,
                    body: crate::proto::circuit::destroy_body(DestroyReason::Destroyed),
                };
                self.cross_send(shard, msg, out);
            }
        }
        for (who, _) in ch.waiting_extends {
            self.extend_failed(who, DestroyReason::ConnectFailed, now, out);
        }
        let failed: Vec<ExtendFor> = self
            .pending_extends
            .iter()
            .filter(|((id, _), _)| *id == conn)
            .map(|(_, w)| *w)
            .collect();
        self.pending_extends.retain(|(id, _), _| *id != conn);
        for who in failed {
            self.extend_failed(who, DestroyReason::ChannelClosed, now, out);
        }
        let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
        self.core.channel_closed(chan, &mut io);
    }
}

/// A channel peer's address for a log line: a peer that has not proven a relay identity may
/// be a client, so its address is scrubbed as a client's (C `safe_str`).
pub(super) fn peer_for_log(peer: PeerIdentity, addr: IpAddr) -> log::Scrubbed<IpAddr> {
    match peer {
        PeerIdentity::Relay { .. } => log::relay_addr(addr),
        PeerIdentity::Client => log::client_addr(addr),
    }
}

/// For calls whose events the handler does not need (EOF, timeouts).
pub(super) struct NullSink;

impl ChannelSink for NullSink {
    fn cell(&mut self, _: CircId, _: ChanCmd, _: &mut [u8; CELL_BODY_LEN], _: &mut CellQueue) {}
    fn event(&mut self, _: ChannelEvent) {}
}

impl RelayNode {
    /// The circuit core's counters as they are now (tests; the MetricsPort gets them at the
    /// tick through the shard's stats).
    #[doc(hidden)]
    pub fn circuit_metrics(&self) -> &crate::proto::circuit::CircuitMetrics {
        self.core.metrics()
    }
}
