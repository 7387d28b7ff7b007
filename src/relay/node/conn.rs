//! Connection lifecycle: the node's side of accept, connect, data, writable and close.
//! Every connection is a channel or an exit stream; these entry points hand it to
//! [`super::channel`] or [`super::exit`].

use super::*;

impl RelayNode {
    /// The bandwidth buckets a connection to or from `peer` is charged to: C
    /// `connection_is_rate_limited` (internal addresses are free unless
    /// `CountPrivateBandwidth`) and `connection_counts_as_relayed_traffic` (OR connections;
    /// Fors has no client traffic of its own).
    pub(super) fn bw_class(&self, peer: std::net::IpAddr, or_conn: bool) -> BwClass {
        if !self.count_private_bandwidth && crate::exit::policy::is_internal(peer) {
            BwClass::Exempt
        } else if or_conn {
            BwClass::Relayed
        } else {
            BwClass::Global
        }
    }

    /// A connection arrived on the ORPort: hibernation and the DoS gate may close it at
    /// once; otherwise a responder channel starts its link handshake.
    pub fn on_accept(&mut self, conn: ConnId, peer: SocketAddr, out: &mut impl ShardIo<RelayMsg>) {
        let h = &self.stats.handler;
        h.connections_seen.fetch_add(1, Ordering::Relaxed);
        if peer.is_ipv6() {
            h.connections_seen_ipv6.fetch_add(1, Ordering::Relaxed);
        }
        // Hibernating C tor closes its ORPort listener (hibernate_begin); the shard's
        // listener stays open, so a new connection is closed at once instead.
        if self.network.get().hibernation.refuses_new_work() {
            self.stats
                .handler
                .connections_closed_unserved
                .fetch_add(1, Ordering::Relaxed);
            let _ = out.close(conn);
            return;
        }
        // C tor checks the DoS state at accept, before any TLS (connection.c).
        let Some(dos_slot) = self.dos_admit(conn, peer, out) else {
            let h = &self.stats.handler;
            match peer {
                SocketAddr::V4(_) => &h.connections_dos_closed_ipv4,
                SocketAddr::V6(_) => &h.connections_dos_closed_ipv6,
            }
            .fetch_add(1, Ordering::Relaxed);
            return;
        };
        // Everything accepted on the ORPort is an OR connection. Its link handshake reads
        // even when the read buckets are empty (C `connection_buf_read_from_socket`
        // continues TLS handshakes regardless); gated again once the channel is open.
        let _ = out.set_bw_class(conn, self.bw_class(peer.ip(), true));
        let _ = out.set_bw_read_ungated(conn, true);
        let ctx = self.network.get().link.clone();
        let Some(entry) = self.conns.get_mut(conn.slot() as usize) else {
            if let Some(s) = dos_slot {
                self.dos.on_close(s);
            }
            let _ = out.close(conn);
            return;
        };
        // The shard reuses a slot only after `on_closed`, which empties the entry; an entry
        // still here would leak its DoS pin, so release it whatever happens.
        debug_assert!(entry.is_none(), "accept into a slot still in use");
        if let Some(Conn {
            kind: Kind::Channel(old),
            ..
        }) = entry.take()
        {
            if let Some(s) = old.dos_slot {
                self.dos.on_close(s);
            }
        }
        match Channel::new_responder(ctx, peer.ip(), out.wall()) {
            Ok(channel) => {
                *entry = Some(Conn {
                    id: conn,
                    kind: Kind::Channel(Box::new(ChanConn {
                        channel,
                        open: false,
                        peer: PeerIdentity::Client,
                        waiting_extends: Vec::new(),
                        cross_paused: false,
                        blocked: false,
                        overflow: VecDeque::new(),
                        idle: None,
                        padding: None,
                        dos_slot,
                    })),
                    read_paused: false,
                    closing: false,
                });
                crate::relay::ctlevents::accepted(self.shard, conn, peer);
            }
            Err(e) => {
                if let Some(s) = dos_slot {
                    self.dos.on_close(s);
                }
                log_info!("shard {}: cannot start a channel: {e}", self.shard.0);
                self.stats
                    .handler
                    .connections_closed_unserved
                    .fetch_add(1, Ordering::Relaxed);
                let _ = out.close(conn);
            }
        }
    }

    /// An outbound connection (a channel we opened for an extend, or an exit stream) is
    /// established.
    pub fn on_connected(
        &mut self,
        conn: ConnId,
        peer: SocketAddr,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        let now = out.now();
        let stream = match self.conn(conn) {
            Some(Conn {
                kind: Kind::Stream(s),
                ..
            }) => {
                s.connected = true;
                Some((s.stream, s.connect_started))
            }
            _ => None,
        };
        let stream = stream.map(|(stream, started)| {
            self.observe_connect(started, now);
            stream
        });
        if let Some(stream) = stream {
            let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
            if self.core.stream_connected(stream, peer, &mut io).is_err() {
                let _ = out.close(conn);
            }
        } else {
            // An outbound channel: its VERSIONS/ClientHello can go now.
            self.mark_dirty(conn);
        }
        self.dispatch(out);
    }

    /// Bytes read from a connection. `data` is the shard's receive buffer, the node's to
    /// change during the call (a channel opens its TLS records there in place).
    pub fn on_data(&mut self, conn: ConnId, data: &mut [u8], out: &mut impl ShardIo<RelayMsg>) {
        let Some(c) = self.conn(conn) else {
            return;
        };
        if c.closing {
            return;
        }
        let is_channel = matches!(c.kind, Kind::Channel(_));
        let now = out.now();
        // The cells this read makes the node send are timed from here (`channel.rs`).
        self.qdelay_open(now);
        if is_channel {
            let was_open = self.accepted_channel_open(conn);
            self.channel_input(conn, data, now, out);
            if was_open == Some(false) && self.accepted_channel_open(conn) == Some(true) {
                self.channel_authenticated(conn, out);
            }
        } else {
            self.stream_input(conn, data, out);
        }
        self.qdelay_close(out);
    }

    /// Whether the channel on an accepted connection has finished its link handshake
    /// (`None`: not an accepted channel, or gone).
    fn accepted_channel_open(&mut self, conn: ConnId) -> Option<bool> {
        match self.conn(conn) {
            Some(Conn {
                kind: Kind::Channel(ch),
                closing: false,
                ..
            }) if !ch.channel.is_initiator() => Some(ch.open),
            _ => None,
        }
    }

    /// An accepted channel's link handshake completed: its connection leaves the shard's
    /// handshake class (whose oldest members are evicted under a flood) for the
    /// authenticated class. If that class is full the channel is closed, as one the table
    /// has no room for (counted in the shard's `slots_authenticated_refused`).
    fn channel_authenticated(&mut self, conn: ConnId, out: &mut impl ShardIo<RelayMsg>) {
        if out.set_authenticated(conn).is_ok() {
            return;
        }
        log_info!(
            "shard {}: authenticated connection table full; closing a new channel",
            self.shard.0
        );
        if let Some(c) = self.conn(conn) {
            c.closing = true;
        }
        self.mark_dirty(conn);
        self.dispatch(out);
    }

    /// A connection that refused output has drained to half its bound.
    pub fn on_writable(&mut self, conn: ConnId, out: &mut impl ShardIo<RelayMsg>) {
        self.flush(conn, out);
        self.dispatch(out);
    }

    /// A connection is closed (its id is dead from now on).
    pub fn on_closed(
        &mut self,
        conn: ConnId,
        reason: CloseReason,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        let Some(slot) = self.conns.get_mut(conn.slot() as usize) else {
            return;
        };
        if slot.as_ref().is_none_or(|c| c.id != conn) {
            return;
        }
        let Some(c) = slot.take() else { return };
        match c.kind {
            Kind::Channel(ch) => {
                crate::relay::ctlevents::gone(
                    self.shard,
                    conn,
                    ch.open,
                    ch.channel.is_initiator(),
                    crate::relay::ctlevents::relay_of(ch.peer),
                    ch.waiting_extends.len(),
                    reason,
                );
                self.channel_gone(conn, ch, out)
            }
            Kind::Stream(s) => self.stream_gone(*s, reason, out),
        }
        self.dispatch(out);
    }
}
