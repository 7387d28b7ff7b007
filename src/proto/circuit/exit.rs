//! Relay messages addressed to us, and exit streams (tor-spec §"Opening streams",
//! §"Closing streams", §"Remote hostname lookup", §"Flow control"; C tor
//! `connection_edge.c` `connection_exit_begin_conn`, `relay.c` `handle_relay_cell_command`,
//! `sendme.c`, `dns.c`).

use ::core::net::{IpAddr, SocketAddr};

use super::core::{CoreIo, QueueSel, RelayCore};
use super::crypto::{CellBody, HopCrypto, RelayCellFormat};
use super::table::Next;
use super::{
    Action, ChanId, ConnectError, InputError, NetworkView, PeerIdentity, ProtocolDrop,
    ProtocolViolation, StreamBytes,
};
use crate::cell::chan::DestroyReason;
use crate::cell::relay::msg::{
    Begin, BeginFlags, BeginTarget, Connected, End, EndReason, Resolve, Resolved, ResolvedAnswer,
    ResolvedValue, Sendme,
};
use crate::cell::relay::{v0, v1, RelayCmd};
use crate::cell::{ChanCmd, CELL_BODY_LEN};
use crate::exit::dns::ttl::DEFAULT_DNS_TTL;
use crate::exit::dns::{classify_host, clip_dns_fuzzy_ttl, HostRequest, Resolution};
use crate::proto::flow::Windows;
use crate::proto::stream::{
    Stream, StreamHandle, StreamState, StreamTableError, RESOLVED_CLIPPED_TTL,
};

impl<C: HopCrypto, N: NetworkView> RelayCore<C, N> {
    /// Applies the exit-side consensus parameters (C `should_refuse_unknown_exits` and
    /// `network_reentry_is_allowed` read them on every BEGIN / connect; the shard calls this
    /// once per new network snapshot). Before any consensus the raw map is empty and C's
    /// defaults hold: refuse unknown previous hops, no re-entry. Fors has no
    /// `RefuseUnknownExits` torrc option, so the consensus alone decides.
    pub fn set_exit_consensus_params(&mut self, raw: &std::collections::BTreeMap<String, i32>) {
        let p = crate::dir::params::ConsensusParams::from_raw(raw.clone());
        self.cfg.refuse_unknown_exits = p.refuse_unknown_exits;
        self.cfg.allow_network_reentry = p.allow_network_reentry;
        self.set_hs_consensus_params(&p);
        // C tor `conflux_is_enabled` at an exit: `cfx_enabled`, default 1, range 0..=1.
        self.conflux.cfx_enabled = raw.get("cfx_enabled").is_none_or(|&v| v >= 1);
    }

    /// A recognized relay cell. Returns false if the circuit closed.
    pub(super) fn handle_local(
        &mut self,
        idx: u32,
        early: bool,
        body: &mut CellBody,
        io: &mut CoreIo<'_>,
    ) -> bool {
        let v1 = self
            .table
            .get(idx)
            .and_then(|c| c.crypto.as_ref())
            .is_some_and(|k| k.format() == RelayCellFormat::V1);
        let parsed = if v1 { v1::parse(body) } else { v0::parse(body) };
        let msg = match parsed {
            Ok(m) => m,
            Err(_) => {
                // Length field past the cell, or (v1) an unknown command: C closes the
                // circuit (TORPROTOCOL; `relay_msg_decode_cell_in_place` fails).
                self.protocol_close(idx, ProtocolViolation::RelayLength, io);
                return false;
            }
        };
        let (cmd, sid, data) = (msg.cmd, msg.stream_id, msg.data);
        // Copy what outlives the borrow of `body`.
        let mut copy = [0u8; v0::MAX_DATA_LEN];
        let len = data.len();
        copy[..len].copy_from_slice(data);
        let data = &copy[..len];
        // C `connection_edge_process_relay_cell` drops these with stream ID 0 before
        // conflux sees them, so they take no sequence number on a leg.
        if sid == 0
            && matches!(
                cmd,
                RelayCmd::BEGIN
                    | RelayCmd::CONNECTED
                    | RelayCmd::END
                    | RelayCmd::RESOLVE
                    | RelayCmd::RESOLVED
            )
            && self.cfx_is_leg(idx)
        {
            self.drops.note(ProtocolDrop::StreamIdZero);
            return true;
        }
        // On a conflux leg, stream commands take the set's sequence numbers first (C tor
        // `connection_edge_process_relay_cell`), then run against the set's streams.
        if crate::proto::conflux::should_multiplex(cmd) && self.cfx_is_leg(idx) {
            return self.cfx_sequenced(idx, cmd, sid, data, io);
        }
        self.circpad_cell_received(idx, cmd == RelayCmd::DROP, io); // padding.rs
        match cmd {
            RelayCmd::DATA => {
                self.relay_data_circuit(idx, io)
                    && self.dispatch_stream_msg(idx, cmd, sid, data, io)
            }
            RelayCmd::BEGIN
            | RelayCmd::END
            | RelayCmd::RESOLVE
            | RelayCmd::CONNECTED
            | RelayCmd::RESOLVED
            | RelayCmd::XOFF
            | RelayCmd::XON => self.dispatch_stream_msg(idx, cmd, sid, data, io),
            RelayCmd::SENDME => self.relay_sendme(idx, sid, data, io),
            // C drops stream commands with stream ID 0, with a protocol warning.
            RelayCmd::BEGIN_DIR if sid == 0 => {
                self.drops.note(ProtocolDrop::StreamIdZero);
                true
            }
            // Directory streams are circuit-specific: not on a conflux leg (TROVE-2026-008).
            RelayCmd::BEGIN_DIR if self.cfx_refuses_begin_dir(idx) => {
                self.refuse(idx, sid, EndReason::NotDirectory, io)
            }
            RelayCmd::BEGIN_DIR => self.relay_begin_dir(idx, sid, io),
            RelayCmd::CONFLUX_LINK
            | RelayCmd::CONFLUX_LINKED
            | RelayCmd::CONFLUX_LINKED_ACK
            | RelayCmd::CONFLUX_SWITCH => self.handle_conflux(idx, cmd, data, io),
            RelayCmd::EXTEND2 => self.handle_extend2(idx, early, sid, data, io),
            // prop 350: TAP EXTEND is refused.
            RelayCmd::EXTEND => {
                self.protocol_close(idx, ProtocolViolation::TapExtend, io);
                false
            }
            RelayCmd::TRUNCATE => self.relay_truncate(idx, io),
            // The introduction- and rendezvous-point requests (`hs.rs`).
            RelayCmd::ESTABLISH_INTRO
            | RelayCmd::INTRODUCE1
            | RelayCmd::ESTABLISH_RENDEZVOUS
            | RelayCmd::RENDEZVOUS1 => self.handle_hs(idx, cmd, data, io),
            // Circuit padding (padding-spec §3; `padding.rs`).
            RelayCmd::DROP | RelayCmd::PADDING_NEGOTIATE | RelayCmd::PADDING_NEGOTIATED => {
                self.handle_circpad(idx, cmd, data, io)
            }
            // Origin-only: C drops them at a relay with a protocol warning.
            RelayCmd::EXTENDED | RelayCmd::EXTENDED2 | RelayCmd::TRUNCATED => {
                self.drops.note(ProtocolDrop::OriginOnlyAtRelay);
                true
            }
            // Unknown ones are dropped for forward compatibility (v0; v1 fails to parse
            // above), with a protocol warning as C `handle_relay_msg` does.
            c if !c.is_known() => {
                self.drops.note(ProtocolDrop::UnknownCommand);
                true
            }
            // Other known commands (onion-service replies) are not for a relay here.
            _ => true,
        }
    }

    /// A stream command (one `should_multiplex` names), against the streams of circuit
    /// `idx` (a conflux set's stream owner when it came on a leg). Returns whether `idx`
    /// is still open.
    pub(super) fn dispatch_stream_msg(
        &mut self,
        idx: u32,
        cmd: RelayCmd,
        sid: u16,
        data: &[u8],
        io: &mut CoreIo<'_>,
    ) -> bool {
        // C drops stream commands with stream ID 0.
        if sid == 0
            && matches!(
                cmd,
                RelayCmd::BEGIN
                    | RelayCmd::CONNECTED
                    | RelayCmd::END
                    | RelayCmd::RESOLVE
                    | RelayCmd::RESOLVED
            )
        {
            self.drops.note(ProtocolDrop::StreamIdZero);
            return true;
        }
        match cmd {
            RelayCmd::DATA => self.relay_data_stream(idx, sid, data, io),
            RelayCmd::END => {
                if let Some(h) = self.streams.find(idx, sid) {
                    self.drop_stream(idx, h);
                    io.out.push(Action::StreamClose { stream: h });
                }
                true
            }
            RelayCmd::BEGIN => self.relay_begin(idx, sid, data, io),
            RelayCmd::RESOLVE => self.relay_resolve(idx, sid, data, io),
            // Stream flow control on CC circuits (see `cc`); ignored elsewhere.
            RelayCmd::XOFF => self.relay_xoff(idx, sid, data, io),
            RelayCmd::XON => self.relay_xon(idx, sid, data, io),
            RelayCmd::CONNECTED | RelayCmd::RESOLVED => self.relay_reply_at_exit(idx, sid, io),
            _ => true,
        }
    }

    /// CONNECTED or RESOLVED, replies only an origin takes (C `handle_relay_msg` and
    /// `connection_edge_process_relay_cell_not_open`): for an open exit stream the circuit
    /// closes (TORPROTOCOL); for one still resolving or connecting the cell is dropped with
    /// a protocol warning; for no stream, dropped (C logs that at info).
    fn relay_reply_at_exit(&mut self, idx: u32, sid: u16, io: &mut CoreIo<'_>) -> bool {
        let Some(h) = self.streams.find(idx, sid) else {
            return true;
        };
        if self
            .streams
            .get(h)
            .is_some_and(|s| s.state == StreamState::Open)
        {
            self.protocol_close(idx, ProtocolViolation::ReplyOnOpenStream, io);
            return false;
        }
        self.drops.note(ProtocolDrop::ReplyOnPendingStream);
        true
    }

    fn relay_truncate(&mut self, idx: u32, io: &mut CoreIo<'_>) -> bool {
        let c = self.table.get_mut(idx).expect("live");
        let next = ::core::mem::replace(&mut c.next, Next::None);
        let mut q = ::core::mem::take(&mut c.q_next);
        c.queued -= q.len() as u32;
        self.pool.clear(&mut q);
        if let Next::Open(h) = next {
            self.table.remove_key(h.chan, h.circ_id);
            self.metrics.destroys_sent += 1;
            io.out.push(Action::SendCell {
                chan: h.chan,
                shard: h.shard,
                circ_id: h.circ_id,
                cmd: ChanCmd::DESTROY,
                body: super::destroy_body(DestroyReason::None),
            });
        }
        self.originate(
            idx,
            RelayCmd::TRUNCATED,
            0,
            |out| {
                out[0] = DestroyReason::Requested.into();
                Ok(1)
            },
            io,
        )
        .is_some()
    }

    // ------------------------------------------------------------ flow control

    /// The circuit-level part of a DATA cell, on the circuit it arrived on: every DATA
    /// cell counts against the circuit window, known stream or not, and may make a circuit
    /// SENDME due. Returns circuit liveness.
    pub(super) fn relay_data_circuit(&mut self, idx: u32, io: &mut CoreIo<'_>) -> bool {
        let c = self.table.get_mut(idx).expect("live");
        if c.windows.data_received().is_err() {
            self.protocol_close(idx, ProtocolViolation::CircuitWindow, io);
            return false;
        }
        if c.windows.should_send_sendme() {
            c.windows.sendme_sent();
            // The DATA cell that made the SENDME due is the last recognized cell of the
            // current run (see `handle_relay_batch`).
            let tag = self.run_tag;
            // 16 bytes on CGO circuits (C `build_cell_payload_v1` with the CGO tag length).
            let tag_len = c.crypto.as_ref().map_or(tag.len(), |k| k.sendme_tag_len());
            let sent = self.originate(
                idx,
                RelayCmd::SENDME,
                0,
                |out| {
                    Sendme::V1 {
                        tag: &tag[..tag_len],
                    }
                    .encode(out)
                },
                io,
            );
            if sent.is_none() {
                return false;
            }
        }
        true
    }

    /// The stream part of a DATA cell, against the streams of circuit `idx`.
    fn relay_data_stream(&mut self, idx: u32, sid: u16, data: &[u8], io: &mut CoreIo<'_>) -> bool {
        if sid == 0 {
            // C: "Relay data cell with zero stream_id", a protocol warning.
            self.drops.note(ProtocolDrop::StreamIdZero);
            return true;
        }
        let Some(h) = self.streams.find(idx, sid) else {
            return true; // unknown (maybe just closed) stream: drop
        };
        let cc = self.is_cc(idx);
        let s = self.streams.get_mut(h).expect("found");
        // On CC circuits XON/XOFF replace the stream window (C
        // `sendme_stream_data_received` → `flow_control_decide_xoff`).
        if !cc && s.windows.data_received().is_err() {
            self.protocol_close(idx, ProtocolViolation::StreamWindow, io);
            return false;
        }
        if s.state == StreamState::ResolveOnly {
            return true;
        }
        let deliver_now = s.state == StreamState::Open && !s.write_blocked && s.pending.is_empty();
        if deliver_now {
            if !io.out.stream_write_direct(h, data) {
                io.out.push(Action::StreamWrite {
                    stream: h,
                    data: StreamBytes::new(data),
                });
            }
            if cc {
                return self.cc_drained(idx, h, data.len() as u64, io);
            }
            return self.consider_stream_sendme(idx, h, io);
        }
        // Optimistic data (before CONNECTED) or a blocked socket: hold it.
        let pending = s.pending.len();
        if s.state != StreamState::Open && pending >= self.cfg.max_optimistic_cells {
            self.drop_stream(idx, h);
            io.out.push(Action::StreamClose { stream: h });
            self.send_end(idx, sid, End::new(EndReason::ResourceLimit), io);
            return self.table.get(idx).is_some();
        }
        let mut cell = [0u8; CELL_BODY_LEN];
        cell[..data.len()].copy_from_slice(data);
        // The length travels in the first two bytes of the otherwise unused padding.
        cell[CELL_BODY_LEN - 2..].copy_from_slice(&(data.len() as u16).to_be_bytes());
        if !self.enqueue(idx, QueueSel::Stream(h), ChanCmd::RELAY, &cell, io) {
            return false;
        }
        let Some(s) = self.streams.get_mut(h) else {
            return true;
        };
        s.pending_bytes += data.len() as u32;
        if cc {
            return self.cc_data_buffered(idx, h, io);
        }
        true
    }

    /// Sends stream-level SENDMEs owed, unless the socket cannot take more (C
    /// `connection_edge_consider_sending_sendme`).
    fn consider_stream_sendme(&mut self, idx: u32, h: StreamHandle, io: &mut CoreIo<'_>) -> bool {
        loop {
            let Some(s) = self.streams.get_mut(h) else {
                return true;
            };
            if s.write_blocked || !s.windows.should_send_sendme() {
                return true;
            }
            s.windows.sendme_sent();
            let sid = s.stream_id;
            if self
                .originate(idx, RelayCmd::SENDME, sid, |_| Ok(0), io)
                .is_none()
            {
                return false;
            }
        }
    }

    fn relay_sendme(&mut self, idx: u32, sid: u16, data: &[u8], io: &mut CoreIo<'_>) -> bool {
        if self.is_cc(idx) {
            if sid == 0 {
                return self.cc_sendme(idx, data, io);
            }
            // A leg's streams live on the set's owner leg (C tor shares one list).
            if self.streams.find(self.cfx_stream_circ(idx), sid).is_some() {
                // C `sendme_process_stream_level`: "Congestion control got stream sendme".
                self.protocol_close(idx, ProtocolViolation::StreamSendmeOnCc, io);
                return false;
            }
            return true;
        }
        if sid == 0 {
            // Circuit-level: must be v1 and carry the tag we recorded (prop 289).
            let c = self.table.get_mut(idx).expect("live");
            let ok = match Sendme::parse(data) {
                Ok(Sendme::V1 { tag }) => c.tags.check(tag).is_ok(),
                _ => {
                    // v0 or malformed: still consumes the expected tag.
                    let _ = c.tags.check(&[]);
                    false
                }
            };
            if !ok {
                self.metrics.sendme_auth_failures += 1;
                self.protocol_close(idx, ProtocolViolation::SendmeAuth, io);
                return false;
            }
            if c.windows.sendme_received().is_err() {
                self.protocol_close(idx, ProtocolViolation::UnexpectedSendme, io);
                return false;
            }
            self.resume_streams(idx, io);
            return true;
        }
        let Some(h) = self.streams.find(idx, sid) else {
            return true;
        };
        let s = self.streams.get_mut(h).expect("found");
        if s.windows.sendme_received().is_err() {
            self.protocol_close(idx, ProtocolViolation::UnexpectedSendme, io);
            return false;
        }
        self.resume_streams(idx, io);
        true
    }

    /// Resumes reading on this circuit's paused streams that may send again. If the
    /// client channel is congested, the circuit is registered as waiting instead, so
    /// `channel_unblocked` comes back to it: a SENDME that reopens a window while the
    /// channel is blocked (other circuits filled it) is otherwise never acted on, and the
    /// exit socket stays paused for good.
    pub(super) fn resume_streams(&mut self, idx: u32, io: &mut CoreIo<'_>) {
        if self.cfx_is_anchor(idx) {
            // No channel or window of its own: its set's legs decide when DATA goes.
            return self.cfx_resume_anchor(idx, io);
        }
        self.cfx_report_state(idx, io);
        let Some(c) = self.table.get(idx) else {
            return;
        };
        let cc = c.cc.is_some();
        if if cc {
            !self.cc_can_send(idx)
        } else {
            c.windows.package <= 0
        } {
            return;
        }
        if self.prev_is_congested(idx) {
            self.mark_waiting(idx);
            return;
        }
        // On a conflux leg the streams are the set's (held by its stream owner).
        let Some(c) = self.table.get(self.cfx_stream_circ(idx)) else {
            return;
        };
        // Start at a stream chosen uniformly at random and wrap around, as C
        // (`circuit_resume_edge_reading_helper`): resumed streams are served in the order
        // their actions run, so always starting at the list head would let the first
        // streams of a busy circuit read first every time and starve the later ones.
        let head = c.streams_head;
        let mut n = 0u32;
        let mut at = head;
        while let Some(h) = self.streams.handle_at(at) {
            n += 1;
            at = self.streams.get(h).expect("live").next_in_circ;
        }
        if n == 0 {
            return;
        }
        let mut start = head;
        for _ in 0..io.rng.next_u32() % n {
            let h = self.streams.handle_at(start).expect("within the count");
            start = self.streams.get(h).expect("live").next_in_circ;
        }
        let mut at = start;
        for _ in 0..n {
            let h = match self.streams.handle_at(at) {
                Some(h) => h,
                // The end of the list: wrap to its head.
                None => self.streams.handle_at(head).expect("n > 0"),
            };
            let s = self.streams.get_mut(h).expect("live");
            at = s.next_in_circ;
            let may_send = if cc {
                !s.flow.xoff_received
            } else {
                s.windows.package > 0
            };
            if s.read_paused && may_send {
                s.read_paused = false;
                io.out.push(Action::ResumeStreamRead { stream: h });
            }
        }
    }

    // ------------------------------------------------------------ opening streams

    fn relay_begin(&mut self, idx: u32, sid: u16, data: &[u8], io: &mut CoreIo<'_>) -> bool {
        if self.streams.find(idx, sid).is_some() {
            // C: BEGIN for a known stream → drop, with a protocol warning.
            self.drops.note(ProtocolDrop::BeginKnownStream);
            return true;
        }
        let begin = match Begin::parse(data) {
            Ok(b) => b,
            Err(_) => return self.refuse(idx, sid, EndReason::TorProtocol, io),
        };
        let c = self.table.get(idx).expect("live");
        // One-hop proxy protection (C `connection_exit_begin_conn`).
        if c.first_hop {
            return self.refuse(idx, sid, EndReason::TorProtocol, io);
        }
        if let PeerIdentity::Relay { rsa, .. } = c.prev_peer {
            if self.cfg.refuse_unknown_exits && !self.net.is_known_relay(&rsa) {
                return self.refuse(idx, sid, EndReason::Misc, io);
            }
        }
        // Accounting hibernation: END HIBERNATING, as C (connection_edge.c).
        if self.net.hibernating() {
            return self.refuse(idx, sid, EndReason::Hibernating, io);
        }
        let (state, addr, request) = match begin.target {
            BeginTarget::Ipv4(a) => (StreamState::Connecting, Some(IpAddr::V4(a)), None),
            BeginTarget::Ipv6(a) => (StreamState::Connecting, Some(IpAddr::V6(a)), None),
            BeginTarget::Hostname(h) => {
                // A non-exit does not resolve at all (C `dns_resolve_impl`).
                if self.policy.is_reject_star() {
                    return self.refuse(idx, sid, EndReason::ResolveFailed, io);
                }
                // C's name rules; reverse names only via RESOLVE.
                let request =
                    match classify_host(h.as_bytes(), false, self.cfg.allow_non_rfc953_hostnames) {
                        Ok(HostRequest::Literal(a)) => {
                            (StreamState::Connecting, Some(a), None::<HostRequest>)
                        }
                        Ok(r @ HostRequest::Forward(_)) => (StreamState::Resolving, None, Some(r)),
                        Ok(HostRequest::Reverse { .. }) | Err(_) => {
                            return self.refuse(idx, sid, EndReason::ResolveFailed, io)
                        }
                    };
                // Don't spend a lookup on a port the policy refuses for every address.
                if request.2.is_some()
                    && self.policy.allows_port_for_unknown_address(begin.port)
                        == crate::exit::policy::PolicyDecision::Rejected
                {
                    self.metrics.streams_refused_policy += 1;
                    return self.refuse(idx, sid, EndReason::ExitPolicy, io);
                }
                request
            }
        };
        let Some(h) = self.new_stream(idx, sid, state, begin.port, begin.flags, io) else {
            return self.table.get(idx).is_some();
        };
        match (addr, request) {
            (Some(a), _) => self.check_and_connect(idx, h, a, DEFAULT_DNS_TTL, io),
            (None, Some(request)) => {
                self.metrics.resolves_requested += 1;
                io.out.push(Action::Resolve {
                    stream: h,
                    request,
                    want_ipv6: self.policy.ipv6_exit() && begin.flags.has(BeginFlags::IPV6_OK),
                });
                true
            }
            _ => true,
        }
    }

    /// BEGIN_DIR (tor-spec §6.2, C `connection_exit_begin_conn`): a stream to our own
    /// directory server, through its internal loopback listener. Allowed on a first hop
    /// (clients fetch directories that way); no exit policy, no re-entry check. Without a
    /// directory cache: END NOTDIRECTORY.
    fn relay_begin_dir(&mut self, idx: u32, sid: u16, io: &mut CoreIo<'_>) -> bool {
        if self.streams.find(idx, sid).is_some() {
            // C: a BEGIN_DIR for a known stream is dropped, with a protocol warning.
            self.drops.note(ProtocolDrop::BeginKnownStream);
            return true;
        }
        let Some(dir) = self.cfg.dir_server else {
            return self.refuse(idx, sid, EndReason::NotDirectory, io);
        };
        // Accounting hibernation ends directory streams too, after the cache check, as C
        // `connection_exit_begin_conn` orders them.
        if self.net.hibernating() {
            return self.refuse(idx, sid, EndReason::Hibernating, io);
        }
        let Some(anonymous) = self
            .table
            .get(idx)
            .map(|c| matches!(c.prev_peer, PeerIdentity::Relay { .. }) && !c.first_hop)
        else {
            return true;
        };
        let dir = begin_dir_target(dir, self.cfg.dir_server_anonymous, anonymous);
        // C uses port 1 for these ("never actually used").
        let Some(h) = self.new_stream(idx, sid, StreamState::Connecting, 1, BeginFlags(0), io)
        else {
            return self.table.get(idx).is_some();
        };
        // `addr` stays `None`: that marks the stream as a directory stream, whose
        // CONNECTED is empty (C `connection_exit_connect_dir`).
        io.out.push(Action::Connect {
            stream: h,
            addr: dir,
        });
        true
    }

    fn new_stream(
        &mut self,
        idx: u32,
        sid: u16,
        state: StreamState,
        port: u16,
        flags: BeginFlags,
        io: &mut CoreIo<'_>,
    ) -> Option<StreamHandle> {
        let head = self.table.get(idx)?.streams_head;
        let r = self.streams.insert(Stream {
            circ: idx,
            stream_id: sid,
            state,
            port,
            flags,
            addr: None,
            ttl: 0,
            windows: Windows::stream(),
            read_paused: false,
            write_blocked: false,
            pending: Default::default(),
            pending_bytes: 0,
            flow: Default::default(),
            next_in_circ: head,
        });
        match r {
            Ok(h) => {
                let c = self.table.get_mut(idx)?;
                c.streams_head = h.idx;
                if matches!(
                    c.prev_peer,
                    crate::proto::channel::PeerIdentity::Relay { .. }
                ) {
                    self.usage_user.insert(c.prev_chan);
                }
                self.metrics.streams = self.streams.len() as u64;
                Some(h)
            }
            Err(StreamTableError::Full) => {
                self.metrics.streams_refused_full += 1;
                self.refuse(idx, sid, EndReason::ResourceLimit, io);
                None
            }
            Err(StreamTableError::Duplicate) => None,
        }
    }

    /// Policy and re-entry checks on the final address, then `Action::Connect`.
    fn check_and_connect(
        &mut self,
        idx: u32,
        h: StreamHandle,
        addr: IpAddr,
        ttl: u32,
        io: &mut CoreIo<'_>,
    ) -> bool {
        let s = self.streams.get_mut(h).expect("live");
        s.addr = Some(addr);
        s.ttl = ttl;
        let (sid, port) = (s.stream_id, s.port);
        if !self.policy.permits_exit_to(addr, port) {
            self.metrics.streams_refused_policy += 1;
            self.drop_stream(idx, h);
            let ttl = clip_dns_fuzzy_ttl(ttl, &mut &mut *io.rng);
            let end = End {
                reason: EndReason::ExitPolicy,
                addr: Some(addr),
                ttl: Some(ttl),
            };
            self.send_end(idx, sid, end, io);
            return self.table.get(idx).is_some();
        }
        let sa = SocketAddr::new(addr, port);
        if !self.cfg.allow_network_reentry && self.net.is_reentry(sa) {
            self.drop_stream(idx, h);
            return self.refuse(idx, sid, EndReason::ConnectRefused, io);
        }
        self.streams.get_mut(h).expect("live").state = StreamState::Connecting;
        io.out.push(Action::Connect {
            stream: h,
            addr: sa,
        });
        true
    }

    fn relay_resolve(&mut self, idx: u32, sid: u16, data: &[u8], io: &mut CoreIo<'_>) -> bool {
        if self.streams.find(idx, sid).is_some() {
            // C: resolve for a known stream → drop, with a protocol warning.
            self.drops.note(ProtocolDrop::ResolveKnownStream);
            return true;
        }
        let error = |this: &mut Self, io: &mut CoreIo<'_>| {
            this.send_resolved(idx, sid, &[ResolvedValue::PermanentError(&[])], io)
        };
        let name = match Resolve::parse(data) {
            Ok(r) => r.hostname,
            Err(_) => return error(self, io),
        };
        if self.policy.is_reject_star() {
            return error(self, io);
        }
        let request =
            match classify_host(name.as_bytes(), true, self.cfg.allow_non_rfc953_hostnames) {
                // A literal address resolves to itself.
                Ok(HostRequest::Literal(a)) => {
                    return self.send_resolved(idx, sid, &[a.into()], io)
                }
                Ok(r) => r,
                // Bad names, special-use names, PTR for internal addresses.
                Err(_) => return error(self, io),
            };
        let Some(h) = self.new_stream(idx, sid, StreamState::ResolveOnly, 0, BeginFlags(0), io)
        else {
            return self.table.get(idx).is_some();
        };
        self.metrics.resolves_requested += 1;
        io.out.push(Action::Resolve {
            stream: h,
            request,
            want_ipv6: self.policy.ipv6_exit(),
        });
        true
    }

    fn send_resolved(
        &mut self,
        idx: u32,
        sid: u16,
        values: &[ResolvedValue<'_>],
        io: &mut CoreIo<'_>,
    ) -> bool {
        let mut answers = [ResolvedAnswer {
            value: ResolvedValue::PermanentError(&[]),
            ttl: 0,
        }; 3];
        let n = values.len().min(3);
        for (a, v) in answers.iter_mut().zip(values) {
            let errorish = matches!(
                v,
                ResolvedValue::TransientError(_) | ResolvedValue::PermanentError(_)
            );
            *a = ResolvedAnswer {
                value: *v,
                ttl: if errorish { 0 } else { RESOLVED_CLIPPED_TTL },
            };
        }
        self.cfx_originate(
            idx,
            RelayCmd::RESOLVED,
            sid,
            |out| Resolved::encode(&answers[..n], out),
            io,
        )
        .is_some()
    }

    /// Sends END for a stream we never opened (or just dropped). Returns circuit liveness.
    fn refuse(&mut self, idx: u32, sid: u16, reason: EndReason, io: &mut CoreIo<'_>) -> bool {
        self.send_end(idx, sid, End::new(reason), io);
        self.table.get(idx).is_some()
    }

    fn send_end(&mut self, idx: u32, sid: u16, end: End, io: &mut CoreIo<'_>) {
        self.metrics.count_end_sent(end.reason);
        self.cfx_originate(idx, RelayCmd::END, sid, |out| end.encode(out), io);
    }

    /// Unlinks and frees a stream (no actions).
    fn drop_stream(&mut self, idx: u32, h: StreamHandle) {
        let Some(mut s) = self.streams.remove(h) else {
            return;
        };
        let freed = s.pending.len() as u32;
        self.pool.clear(&mut s.pending);
        if let Some(c) = self.table.get_mut(idx) {
            c.queued -= freed;
            // Unlink from the circuit's list.
            if c.streams_head == h.idx {
                c.streams_head = s.next_in_circ;
            } else {
                let mut at = c.streams_head;
                while let Some(ph) = self.streams.handle_at(at) {
                    let p = self.streams.get_mut(ph).expect("live");
                    if p.next_in_circ == h.idx {
                        p.next_in_circ = s.next_in_circ;
                        break;
                    }
                    at = p.next_in_circ;
                }
            }
        }
        self.metrics.streams = self.streams.len() as u64;
        self.update_queue_metrics();
    }

    /// The channel `stream`'s circuit arrived on: a BEGIN_DIR stream's directory
    /// connection is told its address (C `connection_exit_begin_conn` copies
    /// `channel_get_addr_if_possible(or_circ->p_chan)` to it, for `X-Your-Address-Is`).
    pub fn stream_prev_chan(&self, stream: StreamHandle) -> Option<ChanId> {
        let s = self.streams.get(stream)?;
        self.table.get(s.circ).map(|c| c.prev_chan)
    }

    fn stream_ctx(&self, h: StreamHandle) -> Result<(u32, u16), InputError> {
        let s = self.streams.get(h).ok_or(InputError::NoSuchStream)?;
        Ok((s.circ, s.stream_id))
    }

    // ------------------------------------------------------------ stream inputs

    /// The exit connection for `stream` is up: send CONNECTED (address + fuzzy TTL) and
    /// deliver any optimistic data.
    pub fn stream_connected(
        &mut self,
        stream: StreamHandle,
        addr: SocketAddr,
        io: &mut CoreIo<'_>,
    ) -> Result<(), InputError> {
        let (idx, sid) = self.stream_ctx(stream)?;
        let s = self.streams.get_mut(stream).expect("live");
        if s.state != StreamState::Connecting {
            return Err(InputError::WrongStreamState);
        }
        s.state = StreamState::Open;
        let connected = if s.addr.is_none() {
            // A BEGIN_DIR stream: an empty CONNECTED, as C tor sends it.
            Connected {
                addr: None,
                ttl: None,
            }
        } else {
            let ttl = clip_dns_fuzzy_ttl(s.ttl, &mut &mut *io.rng);
            let ip = addr.ip();
            Connected {
                addr: (!ip.is_unspecified()).then_some(ip),
                ttl: Some(ttl),
            }
        };
        if self
            .cfx_originate(
                idx,
                RelayCmd::CONNECTED,
                sid,
                |out| connected.encode(out),
                io,
            )
            .is_none()
        {
            return Ok(());
        }
        self.metrics.streams_opened += 1;
        self.flush_stream_pending(idx, stream, io);
        Ok(())
    }

    fn flush_stream_pending(&mut self, idx: u32, h: StreamHandle, io: &mut CoreIo<'_>) {
        let mut cell = [0u8; CELL_BODY_LEN];
        let mut written = 0u64;
        loop {
            let Some(s) = self.streams.get_mut(h) else {
                return;
            };
            if s.write_blocked {
                return;
            }
            let mut q = s.pending;
            let got = self.pool.pop(&mut q, &mut cell);
            s.pending = q;
            if got.is_none() {
                break;
            }
            let len = u16::from_be_bytes([cell[CELL_BODY_LEN - 2], cell[CELL_BODY_LEN - 1]]);
            let len = (len as usize).min(v0::MAX_DATA_LEN);
            s.pending_bytes = s.pending_bytes.saturating_sub(len as u32);
            written += len as u64;
            if let Some(c) = self.table.get_mut(idx) {
                c.queued -= 1;
            }
            io.out.push(Action::StreamWrite {
                stream: h,
                data: StreamBytes::new(&cell[..len]),
            });
        }
        self.update_queue_metrics();
        if self.is_cc(idx) {
            // Only data that reached the socket counts (held optimistic data does not).
            if written > 0 {
                self.cc_drained(idx, h, written, io);
            }
        } else {
            self.consider_stream_sendme(idx, h, io);
        }
    }

    /// The exit connection failed: END with the reason C derives from the error.
    pub fn stream_connect_failed(
        &mut self,
        stream: StreamHandle,
        err: ConnectError,
        io: &mut CoreIo<'_>,
    ) -> Result<(), InputError> {
        let (idx, sid) = self.stream_ctx(stream)?;
        self.drop_stream(idx, stream);
        self.send_end(idx, sid, End::new(err.end_reason()), io);
        Ok(())
    }

    /// The exit socket reached EOF or failed (`reason`: DONE for EOF, else e.g.
    /// CONNRESET): END toward the client. The handle is dead afterwards.
    pub fn stream_closed(
        &mut self,
        stream: StreamHandle,
        reason: EndReason,
        io: &mut CoreIo<'_>,
    ) -> Result<(), InputError> {
        let (idx, sid) = self.stream_ctx(stream)?;
        self.drop_stream(idx, stream);
        self.send_end(idx, sid, End::new(reason), io);
        Ok(())
    }

    /// The socket's write side is full (`true`) or drained (`false`). While blocked,
    /// client DATA is held and stream SENDMEs are withheld, which is the backpressure
    /// toward the client.
    pub fn stream_write_blocked(
        &mut self,
        stream: StreamHandle,
        blocked: bool,
        io: &mut CoreIo<'_>,
    ) -> Result<(), InputError> {
        let (idx, _) = self.stream_ctx(stream)?;
        self.streams.get_mut(stream).expect("live").write_blocked = blocked;
        if !blocked {
            self.flush_stream_pending(idx, stream, io);
        }
        Ok(())
    }

    /// Bytes read from the exit socket: packaged into DATA cells as far as the stream and
    /// circuit package windows (and a congested client channel) allow. Returns how many
    /// bytes were taken; on a short count the stream is paused (`PauseStreamRead`) and
    /// `ResumeStreamRead` follows when it may send again.
    pub fn stream_data(
        &mut self,
        stream: StreamHandle,
        data: &[u8],
        io: &mut CoreIo<'_>,
    ) -> Result<usize, InputError> {
        self.stream_data_cells(stream, data, usize::MAX, io)
            .map(|(taken, _)| taken)
    }

    /// As [`Self::stream_data`], packaging at most `max_cells` DATA cells. Returns the bytes
    /// taken and whether it stopped because the budget ran out with bytes left (then the
    /// stream is not paused: it may send more, the caller decides when). The budget counts
    /// cells, not bytes, as C's `connection_edge_package_raw_inbuf` with `max_cells`: a
    /// turn never ends in a short cell whatever the relay cell format's DATA size.
    pub fn stream_data_cells(
        &mut self,
        stream: StreamHandle,
        mut data: &[u8],
        max_cells: usize,
        io: &mut CoreIo<'_>,
    ) -> Result<(usize, bool), InputError> {
        let (idx, sid) = self.stream_ctx(stream)?;
        if self.streams.get(stream).expect("live").state != StreamState::Open {
            return Err(InputError::WrongStreamState);
        }
        let mut taken = 0;
        let mut cells = 0;
        let mut budget_out = false;
        let conflux = self.cfx_is_leg(idx);
        while !data.is_empty() {
            if cells == max_cells {
                budget_out = true;
                break;
            }
            let n = if conflux {
                // On a conflux set, each cell goes on the leg the set's algorithm picks
                // (after a SWITCH if it changes); that leg's windows and crypto apply.
                if self
                    .streams
                    .get(stream)
                    .is_none_or(|s| s.flow.xoff_received)
                {
                    break;
                }
                self.cfx_stream_data_cell(idx, stream, sid, data, io)
            } else {
                self.package_data_cell(idx, Some(stream), sid, data, false, io)
            };
            if n == 0 {
                break;
            }
            cells += 1;
            taken += n;
            data = &data[n..];
        }
        if !data.is_empty() && !budget_out {
            if let Some(s) = self.streams.get_mut(stream) {
                if !s.read_paused {
                    s.read_paused = true;
                    io.out.push(Action::PauseStreamRead { stream });
                }
            }
            if conflux {
                self.cfx_mark_waiting(idx);
            } else if self.prev_is_congested(idx) {
                self.mark_waiting(idx);
            }
        }
        Ok((taken, budget_out))
    }

    /// Packages one DATA cell of stream `sid` (`stream`: its handle here; `None` for a
    /// stream on another shard's set, which needs none on a CC leg) with at most `data`'s
    /// bytes on circuit `leg` (its windows, SENDME randomness and crypto), staged for the
    /// multi-circuit originate. Returns the bytes taken; 0 if the circuit cannot send now
    /// (channel congested, window closed, XOFF on a CC circuit's stream) unless `force`
    /// (the cell was already promised: a remote conflux owner's DATA).
    pub(super) fn package_data_cell(
        &mut self,
        leg: u32,
        stream: Option<StreamHandle>,
        sid: u16,
        data: &[u8],
        force: bool,
        io: &mut CoreIo<'_>,
    ) -> usize {
        let congested = self.prev_is_congested(leg);
        let Some(c) = self.table.get_mut(leg) else {
            return 0;
        };
        let s = stream.and_then(|h| self.streams.get_mut(h));
        // With CC the congestion window and XOFF bound us, not the fixed windows
        // (C `congestion_control_get_package_window`, `sendme_note_stream_data_packaged`).
        let blocked = match c.cc.as_deref() {
            Some(cc) => !cc.can_send() || s.as_ref().is_some_and(|s| s.flow.xoff_received),
            None => c.windows.package <= 0 || s.as_ref().is_none_or(|s| s.windows.package <= 0),
        };
        if (congested || blocked) && !force || data.is_empty() {
            return 0;
        }
        let v1 = c
            .crypto
            .as_ref()
            .is_some_and(|k| k.format() == RelayCellFormat::V1);
        let max = if v1 {
            v1::max_data_len(RelayCmd::DATA)
        } else {
            v0::MAX_DATA_LEN
        };
        // A promised cell goes whole (the owner sized it within every format's body); C
        // tor also sizes a conflux cell by the stream's circuit, not the sending leg
        // (`connection_edge_get_inbuf_bytes_to_package` on `on_circuit`).
        let n = if force {
            data.len().min(max)
        } else {
            c.randomness.limit(data.len().min(max))
        };
        // Whether this cell's SENDME tag must be kept; the tag itself exists once the
        // staged cell is crypted (`flush_originated`), in the same order.
        let prompts = match c.cc.as_deref_mut() {
            Some(cc) => cc.note_cell_packaged(),
            None => {
                let p = c.windows.next_cell_prompts_sendme();
                c.windows.take_package();
                if let Some(s) = s {
                    s.windows.take_package();
                }
                p
            }
        };
        c.randomness.packaged(n, &mut &mut *io.rng);
        let chunk = &data[..n];
        // Encoded in its stage slot: the socket's bytes are copied once, into the cell.
        let staged = self.stage_data_with(leg, prompts, io, |body, rng| {
            let write = |out: &mut [u8]| {
                crate::util::copies::note(crate::util::copies::CopySite::ExitEncode, n);
                out[..n].copy_from_slice(chunk);
                Ok(n)
            };
            if v1 {
                v1::encode_with(body, RelayCmd::DATA, sid, &mut &mut *rng, write).is_ok()
            } else {
                v0::encode_with(body, RelayCmd::DATA, sid, &mut &mut *rng, write).is_ok()
            }
        });
        if !staged {
            return 0;
        }
        n
    }

    /// The resolver's answer for a BEGIN (connect to the chosen address, or END) or a
    /// RESOLVE (answer with RESOLVED).
    pub fn dns_result(
        &mut self,
        stream: StreamHandle,
        res: &Resolution,
        io: &mut CoreIo<'_>,
    ) -> Result<(), InputError> {
        let (idx, sid) = self.stream_ctx(stream)?;
        let s = self.streams.get(stream).expect("live");
        let v4 = res.ipv4.found().map(|(a, ttl)| (*a, ttl));
        let v6 = res.ipv6.found().map(|(a, ttl)| (*a, ttl));
        let ipv6_exit = self.policy.ipv6_exit();
        match s.state {
            StreamState::ResolveOnly => {
                self.drop_stream(idx, stream);
                let mut vals = [ResolvedValue::PermanentError(&[]); 3];
                let mut n = 0;
                if let Some((a, _)) = v4 {
                    vals[n] = ResolvedValue::Ipv4(a);
                    n += 1;
                }
                if let (Some((a, _)), true) = (v6, ipv6_exit) {
                    vals[n] = ResolvedValue::Ipv6(a);
                    n += 1;
                }
                if let Some((name, _)) = res.hostname.found() {
                    vals[n] = ResolvedValue::Hostname(name.as_bytes());
                    n += 1;
                }
                if n == 0 {
                    vals[0] = match res.failure() {
                        Some(f) if f.is_transient() => ResolvedValue::TransientError(&[]),
                        _ => ResolvedValue::PermanentError(&[]),
                    };
                    n = 1;
                }
                self.send_resolved(idx, sid, &vals[..n], io);
                Ok(())
            }
            StreamState::Resolving => {
                let chosen = choose_address(v4.map(|x| x.0), v6.map(|x| x.0), s.flags, ipv6_exit)
                    .map(|a| {
                        let ttl = match a {
                            IpAddr::V4(_) => v4.map_or(0, |x| x.1),
                            IpAddr::V6(_) => v6.map_or(0, |x| x.1),
                        };
                        (a, ttl)
                    });
                match chosen {
                    Ok((addr, ttl)) => {
                        self.check_and_connect(idx, stream, addr, ttl, io);
                    }
                    Err(reason) => {
                        self.drop_stream(idx, stream);
                        self.send_end(idx, sid, End::new(reason), io);
                    }
                }
                Ok(())
            }
            _ => Err(InputError::WrongStreamState),
        }
    }
}

/// Picks the address family for a resolved BEGIN (tor-spec BEGIN flags; C
/// `dns_resolve`/`set_exitconn_info_from_resolve`): IPv6 only with IPv6Exit and IPV6_OK,
/// preferred only if the client asks; IPv4 unless the client refuses it.
fn choose_address(
    ipv4: Option<::core::net::Ipv4Addr>,
    ipv6: Option<::core::net::Ipv6Addr>,
    flags: BeginFlags,
    ipv6_exit: bool,
) -> Result<IpAddr, EndReason> {
    if ipv4.is_none() && ipv6.is_none() {
        return Err(EndReason::ResolveFailed);
    }
    let v6_ok = ipv6_exit && flags.has(BeginFlags::IPV6_OK);
    let v4_ok = !flags.has(BeginFlags::IPV4_NOT_OK);
    let v6 = ipv6.filter(|_| v6_ok).map(IpAddr::V6);
    let v4 = ipv4.filter(|_| v4_ok).map(IpAddr::V4);
    let pick = if flags.has(BeginFlags::IPV6_PREFERRED) {
        v6.or(v4)
    } else {
        v4.or(v6)
    };
    pick.ok_or(EndReason::ExitPolicy)
}

/// Where a BEGIN_DIR stream connects: C tor's `connection_dir_is_anonymous` holds when the
/// circuit's previous channel is not a client's (`!channel_is_client(p_chan)`: the peer
/// authenticated as a relay, and C marks a channel a client's also when a CREATE_FAST
/// arrives on it, which here is the circuit's `first_hop`). The directory server learns it
/// from the listener the stream reaches.
pub(crate) fn begin_dir_target(
    dir: std::net::SocketAddr,
    anonymous_listener: Option<std::net::SocketAddr>,
    anonymous: bool,
) -> std::net::SocketAddr {
    match anonymous_listener {
        Some(a) if anonymous => a,
        _ => dir,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::core::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn begin_dir_anonymous_only_from_relay_channels() {
        let dir: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let anon: SocketAddr = "127.0.0.1:1001".parse().unwrap();
        assert_eq!(begin_dir_target(dir, Some(anon), true), anon);
        assert_eq!(begin_dir_target(dir, Some(anon), false), dir);
        assert_eq!(begin_dir_target(dir, None, true), dir);
    }

    #[test]
    fn address_choice() {
        let (a4, a6): (Ipv4Addr, Ipv6Addr) =
            ("1.2.3.4".parse().unwrap(), "2001:db8::1".parse().unwrap());
        let (v4, v6) = (Some(a4), Some(a6));
        let f = |b| BeginFlags(b);
        assert_eq!(choose_address(v4, v6, f(0), true).unwrap(), IpAddr::V4(a4));
        assert_eq!(
            choose_address(
                v4,
                v6,
                f(BeginFlags::IPV6_OK | BeginFlags::IPV6_PREFERRED),
                true
            )
            .unwrap(),
            IpAddr::V6(a6)
        );
        // Without IPv6Exit the preference is ignored.
        assert_eq!(
            choose_address(
                v4,
                v6,
                f(BeginFlags::IPV6_OK | BeginFlags::IPV6_PREFERRED),
                false
            )
            .unwrap(),
            IpAddr::V4(a4)
        );
        assert_eq!(
            choose_address(v4, v6, f(BeginFlags::IPV4_NOT_OK), false),
            Err(EndReason::ExitPolicy)
        );
        assert_eq!(
            choose_address(None, None, f(0), true),
            Err(EndReason::ResolveFailed)
        );
        assert_eq!(
            choose_address(None, v6, f(BeginFlags::IPV6_OK), true).unwrap(),
            IpAddr::V6(a6)
        );
    }
}
