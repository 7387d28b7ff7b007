//! The relay's [`ConnHandler`]: where the link protocol (`proto::channel`) and the circuit
//! core (`proto::circuit`) meet the shard runtime.
//!
//! A shard's connections are channels (accepted on the ORPort, or opened by us to extend a
//! circuit) and exit streams (TCP connections for BEGIN). Cells a channel delivers go to the
//! shard's [`RelayCore`]; the [`Action`]s it returns are carried out here: cells onto
//! channels, extends (reuse or open a channel, send CREATE2, route the CREATED2 back), exit
//! connects, stream writes and closes, and hostname lookups, which go to the shard's
//! [`ExitDns`] (one resolver and UDP socket per shard; replies wake the handler through a
//! ring watch, retries and timeouts run on the tick).
//!
//! What is not done yet, plainly:
//! * **DNS on a relay that became an exit by reload**: a relay started as a non-exit has no
//!   resolver, so it answers hostnames with a transient failure until restarted.
//! * **Cross-shard circuits**: a shard extends only over channels it owns (it opens its own
//!   when needed), so nothing crosses shards; `RelayMsg` is empty.
//! * Backpressure toward channels: the core is told a channel is blocked when its queue runs
//!   low; cells it still emits (it releases its held cells at once on unblock) wait in a
//!   per-channel overflow queue, never dropped.
//!
//! Besides, the handler mirrors the shard's counters into the MetricsPort's [`ShardStats`]
//! every tick and picks up control-plane snapshots (link context, onion keys, exit policy,
//! consensus) once per tick, without locking on the data path.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::exit_dns::ExitDns;
use super::log::{log_debug, log_info, log_notice};
use super::snapshot::{NetworkSnapshot, SnapshotCell, SnapshotReader};
use crate::cell::chan::DestroyReason;
use crate::cell::relay::msg::EndReason;
use crate::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use crate::crypto::ids::RsaIdentity;
use crate::exit::dns::{Answer, DnsFailure, FailureCause, HostRequest, Resolution};
use crate::metrics::ShardStats;
use crate::proto::channel::{
    CellQueue, Channel, ChannelError, ChannelEvent, ChannelSink, ExpectedPeer, PeerIdentity,
};
use crate::proto::circuit::{
    Action, ChanId, ChanInfo, CircHandle, CircuitConfig, CoreIo, ExtendDone, ExtendTarget,
    NetworkView, NextHop, RelayCore, RelayIdentity, ShardIdx,
};
use crate::proto::stream::{ConnectError, StreamHandle};
use crate::shard::{CloseReason, ConnHandler, ConnId, Outbox, OutboxError, ShardId, WatchId};

/// Tell the core a channel is blocked when fewer than this many cells fit in its queue.
const BLOCK_BELOW_CELLS: usize = 64;
/// ... and unblocked again once this many fit.
const UNBLOCK_AT_CELLS: usize = 128;

/// The consensus as the circuit core asks about it.
pub struct SnapshotView(pub Arc<NetworkSnapshot>);

impl NetworkView for SnapshotView {
    fn is_known_relay(&self, rsa: &RsaIdentity) -> bool {
        self.0.known_relays.contains_key(rsa)
    }
    fn is_reentry(&self, addr: SocketAddr) -> bool {
        // A scan; BEGINs are rare next to cells and the list is the consensus size.
        self.0
            .known_relays
            .values()
            .any(|r| r.or_addresses.contains(&addr))
    }
}

type Core = RelayCore<crate::crypto::relay::Tor1RelayCrypto, SnapshotView>;

fn chan_id(c: ConnId) -> ChanId {
    ChanId((u64::from(c.gen) << 32) | u64::from(c.slot()))
}

/// A channel connection.
struct ChanConn {
    channel: Channel,
    /// The handshake finished; counted in `channels_open`.
    open: bool,
    peer: PeerIdentity,
    /// CREATE2 bodies waiting for an outbound channel to open.
    waiting_extends: Vec<(CircHandle, Box<[u8; CELL_BODY_LEN]>)>,
    /// The core was told this channel is blocked.
    blocked: bool,
    /// Cells the channel's queue could not take yet (after `channel_unblocked` the core
    /// releases everything it held at once). Drained first, in order, as the queue empties.
    overflow: VecDeque<(CircId, ChanCmd, [u8; CELL_BODY_LEN])>,
}

/// An exit stream's TCP connection.
struct StreamConn {
    stream: StreamHandle,
    connected: bool,
    /// Read from the socket but not yet taken by the core (its windows were closed).
    unread: Vec<u8>,
    /// Bytes the socket did not take yet; the core holds the rest while blocked.
    unsent: Vec<u8>,
    /// The core already forgot the stream (StreamClose): do not report its close.
    forgotten: bool,
}

enum Kind {
    Channel(Box<ChanConn>),
    Stream(Box<StreamConn>),
}

struct Conn {
    id: ConnId,
    kind: Kind,
    read_paused: bool,
    /// Closes once its output is flushed.
    closing: bool,
}

/// Receives a channel's cells and events while it reads, and hands cells to the core.
struct CellSink<'a> {
    core: &'a mut Core,
    info: ChanInfo,
    rng: &'a mut StdRng,
    actions: &'a mut Vec<Action>,
    events: &'a mut Vec<ChannelEvent>,
    /// CREATED*/DESTROY cells that may answer one of our extends.
    answers: &'a mut Vec<(CircId, ChanCmd, [u8; CELL_BODY_LEN])>,
    now: Instant,
}

impl ChannelSink for CellSink<'_> {
    fn cell(
        &mut self,
        circ_id: CircId,
        cmd: ChanCmd,
        body: &mut [u8; CELL_BODY_LEN],
        _out: &mut CellQueue,
    ) {
        match cmd {
            ChanCmd::CREATED2 | ChanCmd::CREATED | ChanCmd::CREATED_FAST => {
                self.answers.push((circ_id, cmd, *body));
                return;
            }
            ChanCmd::DESTROY => self.answers.push((circ_id, cmd, *body)),
            _ => {}
        }
        let mut io = CoreIo::new(self.now, self.rng, self.actions);
        self.core
            .handle_cell(&self.info, circ_id, cmd, body, &mut io);
    }

    fn event(&mut self, event: ChannelEvent) {
        if let ChannelEvent::Open(info) = &event {
            // Cells may follow in the same read: they must see the proven peer.
            self.info.peer = info.peer;
        }
        self.events.push(event);
    }
}

/// One shard's relay handler.
pub struct RelayHandler {
    shard: ShardId,
    stats: Arc<ShardStats>,
    network: SnapshotReader<NetworkSnapshot>,
    /// Indexed by connection slot; sized once from the shard's connection table.
    conns: Vec<Option<Conn>>,
    core: Core,
    chan_rng: StdRng,
    core_rng: StdRng,
    actions: Vec<Action>,
    events: Vec<ChannelEvent>,
    answers: Vec<(CircId, ChanCmd, [u8; CELL_BODY_LEN])>,
    /// Open relay channels by identity, for extends.
    relay_chans: HashMap<RsaIdentity, ConnId>,
    /// (channel, circuit ID) of a CREATE2 we sent → the circuit being extended.
    pending_extends: HashMap<(ConnId, CircId), CircHandle>,
    streams: HashMap<StreamHandle, ConnId>,
    /// Exit streams whose socket reached EOF while bytes read from it still wait for the
    /// package window: their END goes out after those bytes.
    draining: HashMap<StreamHandle, (Vec<u8>, EndReason)>,
    /// Connections whose output must be flushed after the current batch of actions.
    dirty: Vec<ConnId>,
    /// The exit resolver; `None` on a non-exit (or if its socket could not be opened).
    dns: Option<ExitDns>,
    /// Lookups finished by the resolver, waiting to go to the core (reused buffer).
    dns_done: Vec<(StreamHandle, Resolution)>,
    dns_warned: bool,
    cells_dropped_full: u64,
}

impl RelayHandler {
    pub fn new(
        shard: ShardId,
        stats: Arc<ShardStats>,
        network: Arc<SnapshotCell<NetworkSnapshot>>,
        max_connections: usize,
        circuits: CircuitConfig,
        dns: Option<ExitDns>,
    ) -> RelayHandler {
        let network = SnapshotReader::new(network);
        let snap = network.get().clone();
        let me = RelayIdentity {
            rsa: snap.link.rsa_identity(),
            ed: snap.link.ed25519_identity(),
        };
        let core = RelayCore::new(
            CircuitConfig {
                shard: ShardIdx(shard.0 as u16),
                cc: cc_params(&snap),
                ..circuits
            },
            me,
            snap.ntor_keys.clone(),
            snap.exit_policy.clone(),
            SnapshotView(snap.clone()),
        );
        RelayHandler {
            shard,
            stats,
            network,
            conns: (0..max_connections).map(|_| None).collect(),
            core,
            chan_rng: StdRng::from_entropy(),
            core_rng: StdRng::from_entropy(),
            actions: Vec::with_capacity(256),
            events: Vec::with_capacity(8),
            answers: Vec::with_capacity(8),
            relay_chans: HashMap::new(),
            pending_extends: HashMap::new(),
            streams: HashMap::new(),
            draining: HashMap::new(),
            dirty: Vec::with_capacity(64),
            dns,
            dns_done: Vec::with_capacity(64),
            dns_warned: false,
            cells_dropped_full: 0,
        }
    }

    /// The snapshot this shard currently uses.
    pub fn network(&self) -> &Arc<NetworkSnapshot> {
        self.network.get()
    }

    fn conn(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns
            .get_mut(id.slot() as usize)?
            .as_mut()
            .filter(|c| c.id == id)
    }

    fn conn_of_chan(&self, chan: ChanId) -> Option<ConnId> {
        let slot = (chan.0 & 0xffff_ffff) as usize;
        let c = self.conns.get(slot)?.as_ref()?;
        (chan_id(c.id) == chan).then_some(c.id)
    }

    fn mark_dirty(&mut self, id: ConnId) {
        if !self.dirty.contains(&id) {
            self.dirty.push(id);
        }
    }

    /// Runs the core's actions (and those they cause), then flushes touched connections.
    fn dispatch(&mut self, out: &mut Outbox<'_, RelayMsg>) {
        let mut batch = Vec::new();
        for _ in 0..64 {
            if self.actions.is_empty() {
                break;
            }
            std::mem::swap(&mut batch, &mut self.actions);
            for a in batch.drain(..) {
                self.run_action(a, out);
            }
        }
        // Keep whichever buffer has the larger allocation.
        if self.actions.capacity() < batch.capacity() {
            std::mem::swap(&mut batch, &mut self.actions);
        }
        while let Some(id) = self.dirty.pop() {
            self.flush(id, out);
        }
        if let Some(dns) = self.dns.as_mut() {
            dns.transmit();
        }
    }

    /// Hands lookups the resolver finished to the core. A stream that closed meanwhile is
    /// unknown to the core, which refuses the result; nothing else to do.
    fn deliver_dns(&mut self, now: Instant) {
        let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
        for (stream, res) in self.dns_done.drain(..) {
            let _ = self.core.dns_result(stream, &res, &mut io);
        }
    }

    fn run_action(&mut self, a: Action, out: &mut Outbox<'_, RelayMsg>) {
        let now = Instant::now();
        match a {
            Action::SendCell {
                chan,
                circ_id,
                cmd,
                body,
                ..
            } => {
                let Some(id) = self.conn_of_chan(chan) else {
                    return;
                };
                let mut block = false;
                let mut dropped = false;
                if let Some(Conn {
                    kind: Kind::Channel(c),
                    ..
                }) = self.conn(id)
                {
                    if !c.overflow.is_empty() {
                        c.overflow.push_back((circ_id, cmd, body));
                    } else {
                        match c.channel.send_cell(circ_id, cmd, &body) {
                            Ok(()) => {}
                            Err(ChannelError::OutputFull) => {
                                c.overflow.push_back((circ_id, cmd, body))
                            }
                            Err(_) => dropped = true,
                        }
                    }
                    if !c.blocked
                        && (!c.overflow.is_empty()
                            || c.channel.queue().free_cells() < BLOCK_BELOW_CELLS)
                    {
                        c.blocked = true;
                        block = true;
                    }
                }
                self.cells_dropped_full += u64::from(dropped);
                if block {
                    self.core.channel_blocked(chan);
                }
                self.mark_dirty(id);
            }
            Action::Extend {
                circ,
                target,
                create2,
            } => self.extend(circ, target, create2, now, out),
            Action::Connect { stream, addr } => match out.connect(addr) {
                Ok(id) => {
                    if let Some(slot) = self.conns.get_mut(id.slot() as usize) {
                        *slot = Some(Conn {
                            id,
                            kind: Kind::Stream(Box::new(StreamConn {
                                stream,
                                connected: false,
                                unread: Vec::new(),
                                unsent: Vec::new(),
                                forgotten: false,
                            })),
                            read_paused: false,
                            closing: false,
                        });
                        self.streams.insert(stream, id);
                    }
                }
                Err(_) => {
                    let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
                    let _ = self.core.stream_connect_failed(
                        stream,
                        ConnectError::Errno(libc::ENOBUFS),
                        &mut io,
                    );
                }
            },
            Action::StreamWrite { stream, data } => {
                let Some(&id) = self.streams.get(&stream) else {
                    return;
                };
                let mut blocked = false;
                if let Some(Conn {
                    kind: Kind::Stream(s),
                    ..
                }) = self.conn(id)
                {
                    let bytes = data.as_slice();
                    if !s.unsent.is_empty() {
                        s.unsent.extend_from_slice(bytes);
                    } else {
                        match out.send_partial(id, bytes) {
                            Ok(n) if n == bytes.len() => {}
                            Ok(n) => {
                                s.unsent.extend_from_slice(&bytes[n..]);
                                blocked = true;
                            }
                            Err(_) => {}
                        }
                    }
                }
                if blocked {
                    let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
                    let _ = self.core.stream_write_blocked(stream, true, &mut io);
                }
            }
            Action::StreamClose { stream } => {
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
            Action::PauseStreamRead { stream } => {
                if let Some(&id) = self.streams.get(&stream) {
                    if out.pause_read(id).is_ok() {
                        if let Some(c) = self.conn(id) {
                            c.read_paused = true;
                        }
                    }
                }
            }
            Action::ResumeStreamRead { stream } => {
                if let Some((unread, end)) = self.draining.remove(&stream) {
                    let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
                    match self.core.stream_data(stream, &unread, &mut io) {
                        Ok(n) if n < unread.len() => {
                            self.draining.insert(stream, (unread[n..].to_vec(), end));
                        }
                        Ok(_) => {
                            let _ = self.core.stream_closed(stream, end, &mut io);
                        }
                        Err(_) => {}
                    }
                    return;
                }
                let Some(&id) = self.streams.get(&stream) else {
                    return;
                };
                // Bytes read before the pause go first.
                let unread = match self.conn(id) {
                    Some(Conn {
                        kind: Kind::Stream(s),
                        ..
                    }) => std::mem::take(&mut s.unread),
                    _ => return,
                };
                let mut rest = unread.as_slice();
                if !rest.is_empty() {
                    let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
                    let n = self.core.stream_data(stream, rest, &mut io).unwrap_or(0);
                    rest = &rest[n..];
                }
                if let Some(c) = self.conn(id) {
                    if let Kind::Stream(s) = &mut c.kind {
                        s.unread = rest.to_vec();
                    }
                    if rest.is_empty() && c.read_paused && out.resume_read(id).is_ok() {
                        c.read_paused = false;
                    }
                }
            }
            Action::Resolve {
                stream,
                request,
                want_ipv6,
            } => {
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
            Action::CircuitClosed { circ, .. } => {
                self.pending_extends.retain(|_, c| *c != circ);
            }
        }
    }

    /// Carries out an `Action::Extend`: over an open channel to the target if we have one,
    /// else over a new outbound channel.
    fn extend(
        &mut self,
        circ: CircHandle,
        target: ExtendTarget,
        create2: [u8; CELL_BODY_LEN],
        now: Instant,
        out: &mut Outbox<'_, RelayMsg>,
    ) {
        if let Some(&id) = self.relay_chans.get(&target.rsa) {
            self.send_create2(id, circ, &create2, now);
            return;
        }
        let addr = target
            .ipv4
            .map(SocketAddr::V4)
            .or(target.ipv6.map(SocketAddr::V6));
        let ctx = self.network.get().link.clone();
        let started = addr.and_then(|addr| {
            let ch = Channel::new_initiator(
                ctx,
                ExpectedPeer {
                    rsa: target.rsa,
                    ed: target.ed,
                },
                addr.ip(),
                SystemTime::now(),
                &mut self.chan_rng,
            )
            .ok()?;
            let id = out.connect(addr).ok()?;
            Some((id, ch))
        });
        let Some((id, channel)) = started else {
            let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
            let _ = self
                .core
                .extend_result(circ, Err(DestroyReason::ConnectFailed), &mut io);
            return;
        };
        if let Some(slot) = self.conns.get_mut(id.slot() as usize) {
            *slot = Some(Conn {
                id,
                kind: Kind::Channel(Box::new(ChanConn {
                    channel,
                    open: false,
                    peer: PeerIdentity::Client,
                    waiting_extends: vec![(circ, Box::new(create2))],
                    blocked: false,
                    overflow: VecDeque::new(),
                })),
                read_paused: false,
                closing: false,
            });
            self.mark_dirty(id);
        }
    }

    fn send_create2(
        &mut self,
        id: ConnId,
        circ: CircHandle,
        create2: &[u8; CELL_BODY_LEN],
        now: Instant,
    ) {
        let pending = &self.pending_extends;
        let mut sent = None;
        if let Some(Some(Conn {
            kind: Kind::Channel(c),
            ..
        })) = self.conns.get_mut(id.slot() as usize)
        {
            let alloc = c.channel.circ_id_allocator();
            let circ_id = alloc.allocate(&mut self.chan_rng, |cid| {
                pending.contains_key(&(id, cid))
                    || self.core.circuit_by_prev(chan_id(id), cid).is_some()
            });
            if let Some(cid) = circ_id {
                if c.channel.send_cell(cid, ChanCmd::CREATE2, create2).is_ok() {
                    sent = Some(cid);
                }
            }
        }
        match sent {
            Some(cid) => {
                self.pending_extends.insert((id, cid), circ);
                self.mark_dirty(id);
            }
            None => {
                let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
                let _ = self
                    .core
                    .extend_result(circ, Err(DestroyReason::ResourceLimit), &mut io);
            }
        }
    }

    /// Routes CREATED2/DESTROY answers to our extends on channel `id`.
    fn route_answers(&mut self, id: ConnId, now: Instant) {
        let answers = std::mem::take(&mut self.answers);
        for (circ_id, cmd, body) in &answers {
            let Some(circ) = self.pending_extends.remove(&(id, *circ_id)) else {
                continue;
            };
            let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
            let result = if *cmd == ChanCmd::CREATED2 {
                Ok(ExtendDone {
                    next: NextHop {
                        chan: chan_id(id),
                        shard: ShardIdx(self.shard.0 as u16),
                        circ_id: *circ_id,
                    },
                    created2: &body[..],
                })
            } else {
                Err(DestroyReason::Destroyed)
            };
            let _ = self.core.extend_result(circ, result, &mut io);
        }
        let mut answers = answers;
        answers.clear();
        self.answers = answers;
    }

    /// Reacts to channel events collected while reading.
    fn channel_events(&mut self, id: ConnId, now: Instant) {
        let events = std::mem::take(&mut self.events);
        let shard = self.shard.0;
        for e in &events {
            let mut opened_relay = None;
            let mut waiting = Vec::new();
            if let Some(Conn {
                kind: Kind::Channel(c),
                closing,
                ..
            }) = self.conn(id)
            {
                match e {
                    ChannelEvent::Open(info) => {
                        c.open = true;
                        c.peer = info.peer;
                        waiting = std::mem::take(&mut c.waiting_extends);
                        if let PeerIdentity::Relay { rsa, .. } = info.peer {
                            opened_relay = Some(rsa);
                            log_info!(
                                "shard {shard}: channel open with relay ${} at {} (link v{})",
                                rsa.to_hex(),
                                c.channel.peer_addr(),
                                info.link_version
                            );
                        } else {
                            log_debug!("shard {shard}: channel open with a client");
                        }
                    }
                    ChannelEvent::Closed(reason) => {
                        log_debug!("shard {shard}: channel closed: {reason}");
                        *closing = true;
                    }
                    ChannelEvent::ClockSkew { skew_secs } => log_info!(
                        "shard {shard}: peer {} says our clock is off by {skew_secs} s",
                        c.channel.peer_addr()
                    ),
                    ChannelEvent::PaddingNegotiate(_) => {}
                }
            }
            if let ChannelEvent::Open(_) = e {
                self.stats
                    .handler
                    .channels_open
                    .fetch_add(1, Ordering::Relaxed);
            }
            if let Some(rsa) = opened_relay {
                self.relay_chans.entry(rsa).or_insert(id);
            }
            for (circ, body) in waiting {
                self.send_create2(id, circ, &body, now);
            }
        }
        let mut events = events;
        events.clear();
        self.events = events;
    }

    /// Hands a channel's TLS output to the socket, applies backpressure both ways, and
    /// closes the connection once a closed channel has flushed.
    fn flush(&mut self, id: ConnId, out: &mut Outbox<'_, RelayMsg>) {
        let now = Instant::now();
        let mut unblock = None;
        let mut stream_drained = None;
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
                    let pending = ch.channel.pending_output();
                    if pending.is_empty() {
                        break;
                    }
                    let len = pending.len();
                    match out.send_partial(id, pending) {
                        Ok(n) => {
                            ch.channel.consume_output(n);
                            if n < len {
                                break;
                            }
                        }
                        Err(OutboxError::NotOpen) => {
                            c.closing = true;
                            break;
                        }
                        Err(_) => break,
                    }
                    if ch.overflow.is_empty() {
                        break;
                    }
                }
                let flushed = ch.channel.pending_output().is_empty();
                if ch.blocked
                    && ch.overflow.is_empty()
                    && ch.channel.queue().free_cells() >= UNBLOCK_AT_CELLS
                {
                    ch.blocked = false;
                    unblock = Some(chan_id(id));
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
                } else if ch.channel.wants_read() && c.read_paused && out.resume_read(id).is_ok() {
                    c.read_paused = false;
                }
            }
            Kind::Stream(s) => {
                if !s.unsent.is_empty() {
                    if let Ok(n) = out.send_partial(id, &s.unsent) {
                        s.unsent.drain(..n);
                    }
                    if s.unsent.is_empty() && !s.forgotten {
                        stream_drained = Some(s.stream);
                    }
                }
            }
        }
        if let Some(chan) = unblock {
            let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
            self.core.channel_unblocked(chan, &mut io);
        }
        if let Some(stream) = stream_drained {
            let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
            let _ = self.core.stream_write_blocked(stream, false, &mut io);
        }
    }

    fn refresh_snapshot(&mut self) {
        if !self.network.refresh() {
            return;
        }
        self.stats
            .handler
            .snapshots_taken
            .fetch_add(1, Ordering::Relaxed);
        let snap = self.network.get().clone();
        self.core.set_onion_keys(snap.ntor_keys.clone());
        self.core.set_exit_policy(snap.exit_policy.clone());
        self.core.set_cc_params(cc_params(&snap));
        *self.core.network_view_mut() = SnapshotView(snap);
    }

    fn publish_counters(&self, out: &Outbox<'_, RelayMsg>) {
        self.stats.store(out.metrics());
        let m = self.core.metrics();
        let h = &self.stats.handler;
        h.circuits_open
            .store(self.core.circuit_count() as u64, Ordering::Relaxed);
        h.circuits_created
            .store(m.circuits_created, Ordering::Relaxed);
        h.circuits_cc.store(m.cc_circuits, Ordering::Relaxed);
        h.stream_xoff_sent.store(m.xoff_sent, Ordering::Relaxed);
        h.stream_xon_sent.store(m.xon_sent, Ordering::Relaxed);
        h.cells_forwarded
            .store(m.cells_forwarded, Ordering::Relaxed);
        h.cells_backward.store(m.cells_backward, Ordering::Relaxed);
        h.cells_dropped
            .store(self.cells_dropped_full, Ordering::Relaxed);
        h.exit_streams
            .store(self.streams.len() as u64, Ordering::Relaxed);
    }
}

/// Congestion-control parameters from the consensus (C's defaults before one is known).
fn cc_params(snap: &NetworkSnapshot) -> crate::proto::flow::CcParams {
    crate::proto::flow::CcParams::from_lookup(|k| snap.consensus_params.get(k).copied())
}

/// What shards send each other. Nothing: every circuit's channels live on its own shard.
#[derive(Debug)]
pub enum RelayMsg {}

impl ConnHandler for RelayHandler {
    type Msg = RelayMsg;

    fn on_start(&mut self, out: &mut Outbox<'_, RelayMsg>) {
        if let Some(dns) = &self.dns {
            if let Err(e) = dns.watch(out) {
                // Replies are still read every tick, only later.
                log_notice!(
                    "shard {}: cannot watch the resolver socket ({e}); DNS replies are \
                     picked up once per tick.",
                    self.shard.0
                );
            }
        }
    }

    fn on_readable(&mut self, _watch: WatchId, out: &mut Outbox<'_, RelayMsg>) {
        let now = Instant::now();
        if let Some(dns) = self.dns.as_mut() {
            dns.read(now, &mut self.dns_done);
        }
        self.deliver_dns(now);
        self.dispatch(out);
    }

    fn on_accept(&mut self, conn: ConnId, peer: SocketAddr, out: &mut Outbox<'_, RelayMsg>) {
        self.stats
            .handler
            .connections_seen
            .fetch_add(1, Ordering::Relaxed);
        let ctx = self.network.get().link.clone();
        let Some(entry) = self.conns.get_mut(conn.slot() as usize) else {
            let _ = out.close(conn);
            return;
        };
        match Channel::new_responder(ctx, peer.ip(), SystemTime::now()) {
            Ok(channel) => {
                *entry = Some(Conn {
                    id: conn,
                    kind: Kind::Channel(Box::new(ChanConn {
                        channel,
                        open: false,
                        peer: PeerIdentity::Client,
                        waiting_extends: Vec::new(),
                        blocked: false,
                        overflow: VecDeque::new(),
                    })),
                    read_paused: false,
                    closing: false,
                });
            }
            Err(e) => {
                log_info!("shard {}: cannot start a channel: {e}", self.shard.0);
                self.stats
                    .handler
                    .connections_closed_unserved
                    .fetch_add(1, Ordering::Relaxed);
                let _ = out.close(conn);
            }
        }
    }

    fn on_connected(&mut self, conn: ConnId, peer: SocketAddr, out: &mut Outbox<'_, RelayMsg>) {
        let now = Instant::now();
        let stream = match self.conn(conn) {
            Some(Conn {
                kind: Kind::Stream(s),
                ..
            }) => {
                s.connected = true;
                Some(s.stream)
            }
            _ => None,
        };
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

    fn on_data(&mut self, conn: ConnId, data: &[u8], out: &mut Outbox<'_, RelayMsg>) {
        let now = Instant::now();
        let wall = SystemTime::now();
        let Some(c) = self
            .conns
            .get_mut(conn.slot() as usize)
            .and_then(Option::as_mut)
            .filter(|c| c.id == conn)
        else {
            return;
        };
        if c.closing {
            return;
        }
        match &mut c.kind {
            Kind::Channel(ch) => {
                let mut sink = CellSink {
                    core: &mut self.core,
                    info: ChanInfo {
                        id: chan_id(conn),
                        peer: ch.peer,
                        we_initiated: ch.channel.is_initiator(),
                    },
                    rng: &mut self.core_rng,
                    actions: &mut self.actions,
                    events: &mut self.events,
                    answers: &mut self.answers,
                    now,
                };
                // An error has already closed the channel and reported `Closed`.
                let _ = ch
                    .channel
                    .handle_input(data, wall, &mut self.chan_rng, &mut sink);
                self.channel_events(conn, now);
                self.route_answers(conn, now);
                self.mark_dirty(conn);
            }
            Kind::Stream(s) => {
                let stream = s.stream;
                if !s.unread.is_empty() {
                    s.unread.extend_from_slice(data);
                    return;
                }
                let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
                match self.core.stream_data(stream, data, &mut io) {
                    Ok(n) if n < data.len() => {
                        if let Some(Conn {
                            kind: Kind::Stream(s),
                            ..
                        }) = self.conn(conn)
                        {
                            s.unread.extend_from_slice(&data[n..]);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        let _ = out.close(conn);
                    }
                }
            }
        }
        self.dispatch(out);
    }

    fn on_writable(&mut self, conn: ConnId, out: &mut Outbox<'_, RelayMsg>) {
        self.flush(conn, out);
        self.dispatch(out);
    }

    fn on_closed(&mut self, conn: ConnId, reason: CloseReason, out: &mut Outbox<'_, RelayMsg>) {
        let now = Instant::now();
        let Some(slot) = self.conns.get_mut(conn.slot() as usize) else {
            return;
        };
        if slot.as_ref().is_none_or(|c| c.id != conn) {
            return;
        }
        let Some(c) = slot.take() else { return };
        match c.kind {
            Kind::Channel(mut ch) => {
                ch.channel.handle_eof(&mut NullSink);
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
                let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
                for (circ, _) in ch.waiting_extends {
                    let _ =
                        self.core
                            .extend_result(circ, Err(DestroyReason::ConnectFailed), &mut io);
                }
                let failed: Vec<CircHandle> = self
                    .pending_extends
                    .iter()
                    .filter(|((id, _), _)| *id == conn)
                    .map(|(_, c)| *c)
                    .collect();
                self.pending_extends.retain(|(id, _), _| *id != conn);
                for circ in failed {
                    let _ =
                        self.core
                            .extend_result(circ, Err(DestroyReason::ChannelClosed), &mut io);
                }
                self.core.channel_closed(chan_id(conn), &mut io);
            }
            Kind::Stream(s) => {
                self.streams.remove(&s.stream);
                if !s.forgotten {
                    let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
                    if s.connected {
                        let end = match reason {
                            CloseReason::PeerClosed | CloseReason::LocalClose => EndReason::Done,
                            CloseReason::Error(e) => {
                                crate::proto::stream::errno_to_stream_end_reason(e)
                            }
                            _ => EndReason::ConnReset,
                        };
                        if s.unread.is_empty() {
                            let _ = self.core.stream_closed(s.stream, end, &mut io);
                        } else {
                            // Bytes still wait for the package window; END follows them.
                            self.draining.insert(s.stream, (s.unread, end));
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
        }
        self.dispatch(out);
    }

    /// Queued onion handshakes run here, `onions_per_run` per loop iteration, between I/O
    /// batches (cells of established circuits are served in between: anti-starvation).
    fn on_batch_end(&mut self, out: &mut Outbox<'_, RelayMsg>) -> bool {
        if self.core.onions_pending() == 0 {
            return false;
        }
        let mut io = CoreIo::new(Instant::now(), &mut self.core_rng, &mut self.actions);
        self.core.process_onion_queue(&mut io);
        self.dispatch(out);
        self.core.onions_pending() > 0
    }

    fn on_tick(&mut self, now: Instant, out: &mut Outbox<'_, RelayMsg>) {
        self.refresh_snapshot();
        {
            let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
            self.core.tick(&mut io);
        }
        if let Some(dns) = self.dns.as_mut() {
            dns.on_tick(now, &mut self.dns_done);
        }
        self.deliver_dns(now);
        // Handshake timeouts.
        let wall = SystemTime::now();
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_mut() else {
                continue;
            };
            let Kind::Channel(ch) = &mut c.kind else {
                continue;
            };
            if ch.open || c.closing {
                continue;
            }
            let id = c.id;
            if ch.channel.check_timeout(wall, &mut NullSink).is_err() {
                c.closing = true;
                self.mark_dirty(id);
            }
        }
        self.dispatch(out);
        self.publish_counters(out);
    }
}

/// For calls whose events the handler does not need (EOF, timeouts).
struct NullSink;

impl ChannelSink for NullSink {
    fn cell(&mut self, _: CircId, _: ChanCmd, _: &mut [u8; CELL_BODY_LEN], _: &mut CellQueue) {}
    fn event(&mut self, _: ChannelEvent) {}
}
