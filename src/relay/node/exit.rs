//! Exit streams: a BEGIN's TCP connection (connect, write with the socket's backpressure,
//! read into the core's package window with a bounded backlog, close with the END reason
//! the socket gave) and hostname lookups, which go to the shard's [`ExitDns`] (one resolver
//! and UDP socket per shard; replies wake the node through a ring watch, retries and
//! timeouts run on the tick).

use super::*;

/// Bytes one exit stream may hold in either direction, at least: read from its socket
/// while the circuit's window was closed (a paused socket can still deliver a whole
/// receive ring: [`stream_backlog_cap`]); for its socket while the socket was full (the
/// core stops at once, and XOFF stops the client). Past the bound the stream is closed.
pub(super) const STREAM_BACKLOG_MIN_BYTES: usize = 16 << 20;

/// The backlog bound on this shard: what a paused socket can still deliver (the shard's
/// whole receive ring) and a margin, or [`STREAM_BACKLOG_MIN_BYTES`] if that is more.
fn stream_backlog_cap(out: &impl ShardIo<RelayMsg>) -> usize {
    out.recv_ring_bytes()
        .saturating_add(1 << 20)
        .max(STREAM_BACKLOG_MIN_BYTES)
}

/// DATA cells one reopened stream packages from its backlog per turn (`resume_stream_read`),
/// so a 64-cell stage holds several circuits' turns. Counted in cells, not bytes, so a turn
/// never ends in a short cell (tor1 carries 498 bytes per DATA cell, CGO's format 488).
pub(super) const RESUME_TURN_CELLS: usize = 8;

/// Appends to a stream backlog unless that would pass `cap`; keeps the peak. False:
/// refused.
fn backlog_push(q: &mut ByteQueue, data: &[u8], cap: usize, bounds: &mut BoundCounters) -> bool {
    if q.len() + data.len() > cap {
        return false;
    }
    q.push(data);
    bounds.stream_backlog_peak = bounds.stream_backlog_peak.max(q.len());
    true
}

impl RelayNode {
    /// BEGIN: open the exit connection (from `OutboundBindAddressExit`).
    pub(super) fn exit_connect(
        &mut self,
        stream: StreamHandle,
        addr: SocketAddr,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        let now = out.now();
        // BEGIN_DIR: to our own directory server's loopback listener, never from an
        // OutboundBindAddress (it is not an exit connection).
        let cfg = self.core.config();
        let to_dir_server = cfg.dir_server == Some(addr) || cfg.dir_server_anonymous == Some(addr);
        // A destination a client asked for: scrubbed as a client's (C tor scrubs
        // exit targets with `safe_str`, scrubbed under SafeLogging 1 and relay).
        log_debug!(
            "shard {}: {} stream connecting to {}",
            self.shard.0,
            if to_dir_server { "directory" } else { "exit" },
            log::client_addr(addr)
        );
        let from = if to_dir_server {
            None
        } else {
            self.network
                .get()
                .outbound
                .source(OutboundKind::Exit, addr.ip())
        };
        match out.connect_from(addr, from, false) {
            Ok(id) => {
                let _ = out.set_bw_class(id, self.bw_class(addr.ip(), false));
                if let Some(slot) = self.conns.get_mut(id.slot() as usize) {
                    *slot = Some(Conn {
                        id,
                        kind: Kind::Stream(Box::new(StreamConn {
                            stream,
                            connected: false,
                            unread: ByteQueue::new(),
                            unsent: ByteQueue::new(),
                            forgotten: false,
                            turn_queued: false,
                            connect_started: now,
                        })),
                        read_paused: false,
                        closing: false,
                    });
                    self.streams.insert(stream, id);
                }
                if to_dir_server {
                    self.send_dir_preamble(id, stream, out);
                }
            }
            Err(e) => {
                // A failed bind (an OutboundBindAddressExit that is not ours) or
                // socket is this connection's failure, reported like a refused
                // connect.
                let errno = match e {
                    OutboxError::Socket(errno) => errno,
                    _ => libc::ENOBUFS,
                };
                let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
                let _ =
                    self.core
                        .stream_connect_failed(stream, ConnectError::Errno(errno), &mut io);
            }
        }
    }

    /// A BEGIN_DIR stream's connection to the directory server starts with the preamble
    /// naming the address of the channel its circuit arrived on (`dircache::tunnel`; the
    /// server's `X-Your-Address-Is`, as C tor's). Queued while the connect runs, so it
    /// goes before any of the stream's bytes. Once per stream, never per cell. If the
    /// shard cannot take it whole, the stream fails as a connect without buffers would.
    fn send_dir_preamble(
        &mut self,
        id: ConnId,
        stream: StreamHandle,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        let chan_addr = self
            .core
            .stream_prev_chan(stream)
            .and_then(|chan| self.conn_of_chan(chan))
            .and_then(|c| match conn_in(&mut self.conns, c) {
                Some(Conn {
                    kind: Kind::Channel(ch),
                    ..
                }) => Some(ch.channel.peer_addr()),
                _ => None,
            });
        let preamble = crate::dircache::tunnel::encode(chan_addr);
        if matches!(out.send_partial(id, &preamble), Ok(n) if n == preamble.len()) {
            return;
        }
        if let Some(Conn {
            kind: Kind::Stream(s),
            ..
        }) = self.conn(id)
        {
            s.forgotten = true;
        }
        self.streams.remove(&stream);
        let _ = out.close(id);
        let mut io = CoreIo::new(out.now(), &mut self.core_rng, &mut self.actions);
        let _ =
            self.core
                .stream_connect_failed(stream, ConnectError::Errno(libc::ENOBUFS), &mut io);
    }

    /// DATA toward the exit socket; what it does not take waits in `unsent`.
    pub(super) fn stream_write(
        &mut self,
        stream: StreamHandle,
        bytes: &[u8],
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        let now = out.now();
        let cap = stream_backlog_cap(out);
        let Some(&id) = self.streams.get(&stream) else {
            return;
        };
        let mut blocked = false;
        let mut over = false;
        if let Some(Conn {
            kind: Kind::Stream(s),
            ..
        }) = conn_in(&mut self.conns, id)
        {
            if !s.unsent.is_empty() {
                over = !backlog_push(&mut s.unsent, bytes, cap, &mut self.bounds);
            } else {
                match out.send_partial(id, bytes) {
                    Ok(n) if n == bytes.len() => {}
                    Ok(n) => {
                        // Below the bound: at most one cell's worth.
                        backlog_push(&mut s.unsent, &bytes[n..], cap, &mut self.bounds);
                        blocked = true;
                    }
                    Err(_) => {}
                }
            }
        }
        if over {
            self.stream_over_backlog(id, stream, out);
        } else if blocked {
            let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
            let _ = self.core.stream_write_blocked(stream, true, &mut io);
        }
    }

    /// A stream's backlog (either way) reached its bound: the socket is
    /// closed and the client told END RESOURCELIMIT; counted.
    fn stream_over_backlog(
        &mut self,
        conn: ConnId,
        stream: StreamHandle,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        self.bounds.stream_backlog_closes += 1;
        log_info!(
            "shard {}: closing an exit stream whose backlog reached {} bytes",
            self.shard,
            stream_backlog_cap(out)
        );
        if let Some(Conn {
            kind: Kind::Stream(s),
            ..
        }) = self.conn(conn)
        {
            s.forgotten = true;
        }
        let _ = out.close(conn);
        let mut io = CoreIo::new(out.now(), &mut self.core_rng, &mut self.actions);
        let _ = self
            .core
            .stream_closed(stream, EndReason::ResourceLimit, &mut io);
    }

    /// An exit connect ended (connected or failed): its time into the histogram.
    pub(super) fn observe_connect(&self, started: Instant, now: Instant) {
        if let Some(l) = &self.latency {
            l.exit_connect
                .observe(now.saturating_duration_since(started));
        }
    }

    /// The core forgot a stream: close its socket (after its output).
    pub(super) fn stream_close(&mut self, stream: StreamHandle, out: &mut impl ShardIo<RelayMsg>) {
        // Closed mid-lookup (END, DESTROY): free the resolver slot now.
        if let Some(dns) = self.dns.as_mut() {
            dns.cancel(stream);
        }
        self.draining.remove(&stream);
        if let Some(id) = self.streams.remove(&stream) {
            if let Some(Conn {
                kind: Kind::Stream(s),
                ..
            }) = self.conn(id)
            {
                s.forgotten = true;
            }
            let _ = out.close(id);
        }
    }

    /// The circuit's package window closed: stop reading the socket.
    pub(super) fn pause_stream_read(
        &mut self,
        stream: StreamHandle,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        if let Some(&id) = self.streams.get(&stream) {
            if out.pause_read(id).is_ok() {
                if let Some(c) = self.conn(id) {
                    c.read_paused = true;
                }
            }
        }
    }

    /// The window reopened (`turn` false: the core's `ResumeStreamRead`), or a stream's
    /// next backlog turn came (`turn` true: our own `StreamTurn`): the backlog first, then
    /// the socket again.
    ///
    /// The backlog goes in turns of [`RESUME_TURN_CELLS`]: a stream that still has bytes
    /// and an open window after its turn queues a `StreamTurn` behind the actions already
    /// queued, so the streams whose windows reopened in the same round of actions (SENDMEs
    /// of several circuits in one channel read) take turns and the stage holds cells of
    /// several circuits: the multi-circuit SHA-1 call fills its lanes (`staged.rs`). Each
    /// stream's bytes still go in order, and its windows decide as before; only the order
    /// between circuits changes. While a turn is queued, a `ResumeStreamRead` of the core
    /// (an XOFF and XON, a congestion window that closed and reopened) is left to that turn,
    /// so a stream never has two chains. The queued turns count against `run_actions`'
    /// bound like any other action: what is left runs at the next event (the tick
    /// guarantees one). Nothing is allocated per turn (the action buffers keep theirs).
    pub(super) fn resume_stream_read(
        &mut self,
        stream: StreamHandle,
        turn: bool,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        let now = out.now();
        if let Some(mut d) = self.draining.remove(&stream) {
            if d.turn_queued && !turn {
                self.draining.insert(stream, d);
                return;
            }
            d.turn_queued = false;
            let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
            match self.core.stream_data_cells(
                stream,
                d.unread.as_slice(),
                RESUME_TURN_CELLS,
                &mut io,
            ) {
                Ok((n, _)) if n == d.unread.len() => {
                    let _ = self.core.stream_closed(stream, d.end, &mut io);
                }
                Ok((n, budget_out)) => {
                    d.unread.consume(n);
                    if budget_out {
                        // Its turn is over, its window is not: it goes again after the
                        // others.
                        d.turn_queued = true;
                        self.actions.push(Action::StreamTurn { stream });
                    }
                    self.draining.insert(stream, d);
                }
                Err(_) => {}
            }
            return;
        }
        let Some(&id) = self.streams.get(&stream) else {
            return;
        };
        // Bytes read before the pause go first. The queue is taken out while the core
        // packages from it (the core may act on other connections meanwhile) and put
        // back with what it did not take.
        let mut unread = match self.conn(id) {
            Some(Conn {
                kind: Kind::Stream(s),
                ..
            }) => {
                if s.turn_queued && !turn {
                    return;
                }
                s.turn_queued = false;
                std::mem::take(&mut s.unread)
            }
            _ => return,
        };
        let mut again = false;
        if !unread.is_empty() {
            let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
            let (n, budget_out) = self
                .core
                .stream_data_cells(stream, unread.as_slice(), RESUME_TURN_CELLS, &mut io)
                .unwrap_or((0, false));
            unread.consume(n);
            again = budget_out && !unread.is_empty();
        }
        if let Some(c) = self.conn(id) {
            let drained = unread.is_empty();
            if let Kind::Stream(s) = &mut c.kind {
                s.unread = unread;
                s.turn_queued = again;
            }
            if drained && c.read_paused && out.resume_read(id).is_ok() {
                c.read_paused = false;
            }
        }
        if again {
            // Its turn is over, its window is not: it goes again after the others.
            self.actions.push(Action::StreamTurn { stream });
        }
    }

    /// RESOLVE or a BEGIN to a hostname: ask the resolver (or answer at once).
    pub(super) fn resolve(
        &mut self,
        stream: StreamHandle,
        request: HostRequest,
        want_ipv6: bool,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        let now = out.now();
        let res = match (&request, self.dns.as_mut()) {
            (HostRequest::Literal(ip), _) => Some(Resolution::literal(*ip)),
            (_, Some(dns)) => dns.resolve(stream, &request, want_ipv6, now),
            (_, None) => {
                if !self.dns_warned {
                    self.dns_warned = true;
                    log_notice!(
                        "shard {}: no exit resolver (not an exit at start-up); \
                         hostname lookups are answered as transient failures.",
                        self.shard.0
                    );
                }
                let fail = DnsFailure {
                    cause: FailureCause::Timeout,
                };
                Some(Resolution {
                    ipv4: Answer::Failed(fail),
                    ..Resolution::NONE
                })
            }
        };
        // `None`: the answer comes from the resolver later (`on_readable`/`on_tick`).
        if let Some(res) = res {
            let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
            let _ = self.core.dns_result(stream, &res, &mut io);
        }
    }

    /// Bytes read from exit stream `conn`, into the core (what its window does not take
    /// waits in `unread`).
    pub(super) fn stream_input(
        &mut self,
        conn: ConnId,
        data: &[u8],
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        let now = out.now();
        let cap = stream_backlog_cap(out);
        let Some(Conn {
            kind: Kind::Stream(s),
            ..
        }) = conn_in(&mut self.conns, conn)
        else {
            return;
        };
        let stream = s.stream;
        if !s.unread.is_empty() {
            if !backlog_push(&mut s.unread, data, cap, &mut self.bounds) {
                self.stream_over_backlog(conn, stream, out);
                self.dispatch(out);
            }
            return;
        }
        // No channel is being read: a stage that fills here goes straight into the channels'
        // queues (`channel.rs` DirectSink).
        match self.with_direct_io(now, out, |core, io| core.stream_data(stream, data, io)) {
            Ok(n) if n < data.len() => {
                if let Some(Conn {
                    kind: Kind::Stream(s),
                    ..
                }) = conn_in(&mut self.conns, conn)
                {
                    // Below the bound: at most one read's worth.
                    backlog_push(&mut s.unread, &data[n..], cap, &mut self.bounds);
                }
            }
            Ok(_) => {}
            Err(_) => {
                let _ = out.close(conn);
            }
        }
        self.dispatch(out);
    }

    /// Exit stream `s`'s connection closed: END (after any backlog) or a failed connect
    /// for the core, unless the core closed it itself.
    pub(super) fn stream_gone(
        &mut self,
        s: StreamConn,
        reason: CloseReason,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        let now = out.now();
        self.streams.remove(&s.stream);
        if !s.forgotten && !s.connected {
            self.observe_connect(s.connect_started, now);
        }
        if !s.forgotten {
            let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
            if s.connected {
                let end = match reason {
                    CloseReason::PeerClosed | CloseReason::LocalClose => EndReason::Done,
                    CloseReason::Error(e) => crate::proto::stream::errno_to_stream_end_reason(e),
                    _ => EndReason::ConnReset,
                };
                if s.unread.is_empty() {
                    let _ = self.core.stream_closed(s.stream, end, &mut io);
                } else {
                    // Bytes still wait for the package window; END follows them.
                    self.draining.insert(
                        s.stream,
                        Draining {
                            unread: s.unread,
                            end,
                            turn_queued: s.turn_queued,
                        },
                    );
                }
            } else {
                let err = match reason {
                    CloseReason::ConnectFailed(e) => ConnectError::Errno(e),
                    CloseReason::ConnectTimeout => ConnectError::Timeout,
                    _ => ConnectError::Errno(libc::ECONNREFUSED),
                };
                let _ = self.core.stream_connect_failed(s.stream, err, &mut io);
            }
        }
    }

    /// Hands lookups the resolver finished to the core. A stream that closed meanwhile had
    /// its lookup cancelled on `StreamClose`; should one slip through, the core does not
    /// know the stream and refuses the result.
    pub(super) fn deliver_dns(&mut self, now: Instant) {
        let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
        for (stream, res) in self.dns_done.drain(..) {
            let _ = self.core.dns_result(stream, &res, &mut io);
        }
    }

    /// The resolver's socket is readable: hand finished lookups to the core.
    pub fn on_readable(&mut self, _watch: WatchId, out: &mut impl ShardIo<RelayMsg>) {
        let now = out.now();
        if let Some(dns) = self.dns.as_mut() {
            dns.read(now, &mut self.dns_done);
        }
        self.deliver_dns(now);
        self.dispatch(out);
    }
}
