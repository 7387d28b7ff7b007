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
//! * **Cross-shard circuits** ([`cross`]) work, with these limits: a circuit's shard is
//!   fixed by its previous-hop channel (no rebalancing); a backward cell that meets a full
//!   queue *and* a full overflow closes its circuit (RESOURCELIMIT) instead of waiting.
//! * Backpressure toward channels: the core is told a channel is blocked when its queue runs
//!   low; cells it still emits (it releases its held cells at once on unblock) wait in a
//!   per-channel overflow queue, never dropped.
//!
//! Besides, the handler mirrors the shard's counters into the MetricsPort's [`ShardStats`]
//! every tick and picks up control-plane snapshots (link context, onion keys, exit policy,
//! consensus) once per tick, without locking on the data path.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;

#[path = "byte_queue.rs"]
mod byte_queue;
#[path = "cross.rs"]
pub mod cross;

use self::byte_queue::ByteQueue;
pub use self::cross::RelayMsg;
use self::cross::{
    owner_shard, route_extend, CrossLink, CrossQueue, ExtendFor, ExtendRoute, ProxyTable, Sent,
};
use super::exit_dns::ExitDns;
use super::log::{self, log_debug, log_info, log_notice};
use super::snapshot::{NetworkSnapshot, SnapshotCell, SnapshotReader};
use crate::accounting::Hibernation;
use crate::cell::chan::DestroyReason;
use crate::cell::relay::msg::EndReason;
use crate::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use crate::config::OutboundKind;
use crate::crypto::ids::RsaIdentity;
use crate::dos::{
    AddrSlot, CircCreateDecision, ClientAddrTable, ConnDecision, DosConfig, DosOptions,
};
use crate::exit::dns::{Answer, DnsFailure, FailureCause, HostRequest, Resolution};
use crate::metrics::ShardStats;
use crate::proto::channel::idle;
use crate::proto::channel::{
    CellQueue, Channel, ChannelError, ChannelEvent, ChannelIdleTimer, ChannelSink, ExpectedPeer,
    PeerIdentity,
};
use crate::proto::circuit::{
    Action, CellBody, ChanId, ChanInfo, CircHandle, CircuitConfig, CoreIo, ExtendDone,
    ExtendTarget, NetworkView, NextHop, RelayCore, RelayIdentity, ShardIdx,
};
use crate::proto::stream::{ConnectError, StreamHandle};
use crate::shard::{
    BwClass, CloseReason, ConnHandler, ConnId, Outbox, OutboxError, ShardId, ShardIo, WatchId,
};

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
    fn hibernating(&self) -> bool {
        self.0.hibernation.refuses_new_work()
    }
}

type Core = RelayCore<crate::crypto::relay::Tor1RelayCrypto, SnapshotView>;

/// A channel's name for the circuit core, unique across shards (the shard in the top byte):
/// circuits may name channels of other shards, and the core's blocked set and close walks
/// must never confuse them with ours.
fn chan_id(shard: usize, c: ConnId) -> ChanId {
    ChanId(
        ((shard as u64 & 0xff) << 56)
            | ((u64::from(c.gen) & 0x00ff_ffff) << 32)
            | u64::from(c.slot()),
    )
}

/// The shard a [`chan_id`] lives on.
fn shard_of(chan: ChanId) -> usize {
    (chan.0 >> 56) as usize
}

/// Relay cells of other shards' circuits one overflow may hold (per destination shard).
const CROSS_OVERFLOW_CELLS: usize = 4096;
/// Circuits of other shards whose channel side may live on one shard.
const MAX_PROXIED_CIRCUITS: usize = 65536;

/// The shard's queue toward one other shard, as a [`CrossLink`] pushes into it.
struct OutQueue<'a, O> {
    out: &'a mut O,
    to: ShardId,
}

impl<O: ShardIo<RelayMsg>> CrossQueue for OutQueue<'_, O> {
    #[allow(clippy::result_large_err)]
    fn try_push(&mut self, msg: RelayMsg) -> Result<(), RelayMsg> {
        self.out.push_cross(self.to, msg).map_err(|e| match e {
            crate::shard::CrossPushError::Full(m)
            | crate::shard::CrossPushError::NoSuchShard(m) => m,
        })
    }
    fn free(&mut self) -> usize {
        self.out.cross_space(self.to).0
    }
    fn capacity(&mut self) -> usize {
        self.out.cross_space(self.to).1
    }
}

/// A channel connection.
struct ChanConn {
    channel: Channel,
    /// The handshake finished; counted in `channels_open`.
    open: bool,
    peer: PeerIdentity,
    /// CREATE2 bodies waiting for an outbound channel to open.
    waiting_extends: Vec<(ExtendFor, Box<[u8; CELL_BODY_LEN]>)>,
    /// Reading paused because a cross-shard queue toward a circuit's origin is full.
    cross_paused: bool,
    /// The core was told this channel is blocked.
    blocked: bool,
    /// Cells the channel's queue could not take yet (after `channel_unblocked` the core
    /// releases everything it held at once). Drained first, in order, as the queue empties.
    overflow: VecDeque<(CircId, ChanCmd, [u8; CELL_BODY_LEN])>,
    /// Closes the channel once it has carried no circuit for a while (set when it opens).
    idle: Option<ChannelIdleTimer>,
    /// Its address's entry in the shared DoS table (incoming channels, while a defence is
    /// on); released on close.
    dos_slot: Option<AddrSlot>,
}

/// An exit stream's TCP connection.
struct StreamConn {
    stream: StreamHandle,
    connected: bool,
    /// Read from the socket but not yet taken by the core (its windows were closed).
    unread: ByteQueue,
    /// Bytes the socket did not take yet; the core holds the rest while blocked.
    unsent: ByteQueue,
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

/// Receives a channel's cells and events while it reads, and hands cells to the core (or,
/// for circuits of other shards, collects them for their origin shard).
struct CellSink<'a> {
    core: &'a mut Core,
    conn: ConnId,
    proxy: &'a mut ProxyTable,
    /// (circuit ID, origin shard, origin handle, command, body) for other shards.
    cross_in: &'a mut Vec<(CircId, usize, CircHandle, ChanCmd, CellBody)>,
    info: ChanInfo,
    rng: &'a mut StdRng,
    actions: &'a mut Vec<Action>,
    events: &'a mut Vec<ChannelEvent>,
    /// CREATED*/DESTROY cells that may answer one of our extends.
    answers: &'a mut Vec<(CircId, ChanCmd, [u8; CELL_BODY_LEN])>,
    now: Instant,
    /// Set on tracked incoming channels while the circuit-creation defence is on.
    dos: Option<DosCheck<'a>>,
}

/// What a channel's CREATE cells are checked against (C `dos_cc_new_create_cell` and
/// `dos_cc_get_defense_type` in `command_process_create_cell`).
struct DosCheck<'a> {
    table: &'a ClientAddrTable,
    slot: AddrSlot,
    cfg: DosConfig,
    /// Seconds on the table's clock.
    now: u32,
}

impl CellSink<'_> {
    /// The circuit-creation defence for one CREATE* cell; true if it was answered with
    /// DESTROY (RESOURCELIMIT) and must not reach the core.
    fn dos_refuses(&mut self, circ_id: CircId, out: &mut CellQueue) -> bool {
        let Some(d) = &self.dos else { return false };
        // Only channels from clients (peers that did not authenticate as relays) count.
        if self.info.peer != PeerIdentity::Client || self.info.we_initiated {
            return false;
        }
        // C counts the cell before validating it...
        d.table.note_create_cell(d.slot, &d.cfg, d.now, self.rng);
        // ...and drops a zero or in-use circuit ID before the defence (the core does).
        if circ_id.is_zero() || self.core.circ_id_in_use(self.info.id, circ_id) {
            return false;
        }
        if d.table.create_defense(d.slot, &d.cfg, d.now) == CircCreateDecision::Refuse {
            let body = crate::proto::circuit::destroy_body(DestroyReason::ResourceLimit);
            // A full queue drops the answer: the client times the circuit out instead.
            let _ = out.send_cell(circ_id, ChanCmd::DESTROY, &body);
            return true;
        }
        false
    }
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

/// Cross-shard counters (mirrored into the MetricsPort every tick).
#[derive(Debug, Default)]
struct CrossCounters {
    /// Relay cells given to another shard / taken from another shard.
    cells_sent: u64,
    cells_received: u64,
    /// Circuits whose two sides ended up on different shards (counted on the channel side).
    circuits_total: u64,
    /// Extends handed to the owner shard.
    extends_sent: u64,
    /// Circuits closed because an overflow was at its bound.
    overflow_kills: u64,
}

/// What every shard shares for the DoS defences: the per-address table and the torrc's DoS
/// options (republished on SIGHUP).
#[derive(Clone)]
pub struct DosShared {
    pub table: Arc<ClientAddrTable>,
    pub options: Arc<SnapshotCell<DosOptions>>,
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
    /// The other half of `actions`' double buffer (see `dispatch`).
    spare_actions: Vec<Action>,
    events: Vec<ChannelEvent>,
    answers: Vec<(CircId, ChanCmd, [u8; CELL_BODY_LEN])>,
    /// Open relay channels by identity, for extends.
    relay_chans: HashMap<RsaIdentity, ConnId>,
    /// Outbound relay channels still in their handshake, by identity (extends join them).
    opening: HashMap<RsaIdentity, ConnId>,
    /// (channel, circuit ID) of a CREATE2 we sent → the circuit being extended.
    pending_extends: HashMap<(ConnId, CircId), ExtendFor>,
    /// Shard count (known at `on_start`).
    shards: usize,
    /// Sending toward each other shard (index = shard; our own entry unused).
    links: Vec<CrossLink>,
    /// Circuits of other shards whose next-hop channel is ours.
    proxy: ProxyTable,
    /// Our circuits whose next hop lives on another shard, both ways.
    remote_next: HashMap<(ChanId, CircId), CircHandle>,
    remote_next_by_circ: HashMap<CircHandle, (ChanId, CircId)>,
    /// Other shards' channels that told us their output is full.
    remote_blocked: HashSet<ChanId>,
    cross_in: Vec<(CircId, usize, CircHandle, ChanCmd, CellBody)>,
    scratch_unblock: Vec<ChanId>,
    scratch_resume: Vec<ConnId>,
    cross: CrossCounters,
    streams: HashMap<StreamHandle, ConnId>,
    /// Exit streams whose socket reached EOF while bytes read from it still wait for the
    /// package window: their END goes out after those bytes.
    draining: HashMap<StreamHandle, (ByteQueue, EndReason)>,
    /// Connections whose output must be flushed after the current batch of actions.
    dirty: Vec<ConnId>,
    /// The exit resolver; `None` on a non-exit (or if its socket could not be opened).
    dns: Option<ExitDns>,
    /// Lookups finished by the resolver, waiting to go to the core (reused buffer).
    dns_done: Vec<(StreamHandle, Resolution)>,
    dns_warned: bool,
    cells_dropped_full: u64,
    /// Channels that carry a circuit (refilled at each idle check; kept for its capacity).
    chans_in_use: HashSet<ChanId>,
    next_idle_check: Option<Instant>,
    /// The DoS table all shards share, the torrc's DoS options (replaced on SIGHUP), and
    /// the thresholds in force (torrc over the consensus; recomputed when either changes).
    dos: Arc<ClientAddrTable>,
    dos_options: SnapshotReader<DosOptions>,
    dos_cfg: DosConfig,
    /// `CountPrivateBandwidth`: connections with internal addresses are rate-limited too.
    count_private_bandwidth: bool,
}

impl RelayHandler {
    pub fn new(
        shard: ShardId,
        stats: Arc<ShardStats>,
        network: Arc<SnapshotCell<NetworkSnapshot>>,
        max_connections: usize,
        circuits: CircuitConfig,
        dns: Option<ExitDns>,
        dos: DosShared,
    ) -> RelayHandler {
        let network = SnapshotReader::new(network);
        let snap = network.get().clone();
        let DosShared {
            table: dos,
            options: dos_options,
        } = dos;
        let dos_options = SnapshotReader::new(dos_options);
        let dos_cfg = dos_config(&snap, dos_options.get());
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
            actions: Vec::with_capacity(ACTION_BUF_CAPACITY),
            spare_actions: Vec::with_capacity(ACTION_BUF_CAPACITY),
            events: Vec::with_capacity(8),
            answers: Vec::with_capacity(8),
            relay_chans: HashMap::new(),
            opening: HashMap::new(),
            pending_extends: HashMap::new(),
            shards: 1,
            links: Vec::new(),
            proxy: ProxyTable::new(MAX_PROXIED_CIRCUITS),
            remote_next: HashMap::new(),
            remote_next_by_circ: HashMap::new(),
            remote_blocked: HashSet::new(),
            cross_in: Vec::with_capacity(64),
            scratch_unblock: Vec::new(),
            scratch_resume: Vec::new(),
            cross: CrossCounters::default(),
            streams: HashMap::new(),
            draining: HashMap::new(),
            dirty: Vec::with_capacity(64),
            dns,
            dns_done: Vec::with_capacity(64),
            dns_warned: false,
            cells_dropped_full: 0,
            chans_in_use: HashSet::new(),
            next_idle_check: None,
            dos,
            dos_options,
            dos_cfg,
            count_private_bandwidth: false,
        }
    }

    /// Rate-limits connections with internal addresses as well (C `CountPrivateBandwidth`,
    /// on under `TestingTorNetwork`).
    pub fn count_private_bandwidth(mut self, yes: bool) -> RelayHandler {
        self.count_private_bandwidth = yes;
        self
    }

    /// The bandwidth buckets a connection to or from `peer` is charged to: C
    /// `connection_is_rate_limited` (internal addresses are free unless
    /// `CountPrivateBandwidth`) and `connection_counts_as_relayed_traffic` (OR connections;
    /// Fors has no client traffic of its own).
    fn bw_class(&self, peer: std::net::IpAddr, or_conn: bool) -> BwClass {
        if !self.count_private_bandwidth && crate::exit::policy::is_internal(peer) {
            BwClass::Exempt
        } else if or_conn {
            BwClass::Relayed
        } else {
            BwClass::Global
        }
    }

    /// The DoS thresholds this shard applies now.
    pub fn dos_config(&self) -> &DosConfig {
        &self.dos_cfg
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
        (chan_id(self.shard.0, c.id) == chan).then_some(c.id)
    }

    fn chan(&self, id: ConnId) -> ChanId {
        chan_id(self.shard.0, id)
    }

    fn mark_dirty(&mut self, id: ConnId) {
        if !self.dirty.contains(&id) {
            self.dirty.push(id);
        }
    }

    /// Runs the core's actions (and those they cause), then flushes touched connections.
    fn dispatch(&mut self, out: &mut impl ShardIo<RelayMsg>) {
        // The two buffers take turns: actions run from one while new ones collect in the
        // other, and both keep their allocation (an Action carries a cell body by value, so
        // growing a fresh buffer on every dispatch reallocated and copied cells).
        let mut batch = std::mem::take(&mut self.spare_actions);
        for _ in 0..64 {
            if self.actions.is_empty() {
                // Queues toward other shards may have drained: move held messages and
                // unblock what waited on them (which may emit more actions).
                self.pump_cross(out);
                if self.actions.is_empty() {
                    break;
                }
            }
            std::mem::swap(&mut batch, &mut self.actions);
            for a in batch.drain(..) {
                self.run_action(a, out);
            }
        }
        debug_assert!(batch.is_empty());
        self.spare_actions = batch;
        while let Some(id) = self.dirty.pop() {
            self.flush(id, out);
        }
        if let Some(dns) = self.dns.as_mut() {
            dns.transmit();
        }
    }

    /// Hands lookups the resolver finished to the core. A stream that closed meanwhile had
    /// its lookup cancelled on `StreamClose`; should one slip through, the core does not
    /// know the stream and refuses the result.
    fn deliver_dns(&mut self, now: Instant) {
        let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
        for (stream, res) in self.dns_done.drain(..) {
            let _ = self.core.dns_result(stream, &res, &mut io);
        }
    }

    fn run_action(&mut self, a: Action, out: &mut impl ShardIo<RelayMsg>) {
        let now = out.now();
        match a {
            Action::SendCell {
                chan,
                shard,
                circ_id,
                cmd,
                body,
            } => {
                if usize::from(shard.0) != self.shard.0 {
                    self.send_forward(chan, circ_id, cmd, body, out);
                } else {
                    self.send_local(chan, circ_id, cmd, &body, out);
                }
            }
            Action::Extend {
                circ,
                target,
                create2,
            } => self.extend(ExtendFor::Local(circ), target, create2, now, out),
            Action::Connect { stream, addr } => {
                // A destination a client asked for: scrubbed as a client's (C tor scrubs
                // exit targets with `safe_str`, scrubbed under SafeLogging 1 and relay).
                log_debug!(
                    "shard {}: exit stream connecting to {}",
                    self.shard.0,
                    log::client_addr(addr)
                );
                let from = self
                    .network
                    .get()
                    .outbound
                    .source(OutboundKind::Exit, addr.ip());
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
                                })),
                                read_paused: false,
                                closing: false,
                            });
                            self.streams.insert(stream, id);
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
                        let _ = self.core.stream_connect_failed(
                            stream,
                            ConnectError::Errno(errno),
                            &mut io,
                        );
                    }
                }
            }
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
                        s.unsent.push(bytes);
                    } else {
                        match out.send_partial(id, bytes) {
                            Ok(n) if n == bytes.len() => {}
                            Ok(n) => {
                                s.unsent.push(&bytes[n..]);
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
                if let Some((mut unread, end)) = self.draining.remove(&stream) {
                    let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
                    match self.core.stream_data(stream, unread.as_slice(), &mut io) {
                        Ok(n) if n < unread.len() => {
                            unread.consume(n);
                            self.draining.insert(stream, (unread, end));
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
                // Bytes read before the pause go first. The queue is taken out while the core
                // packages from it (the core may act on other connections meanwhile) and put
                // back with what it did not take.
                let mut unread = match self.conn(id) {
                    Some(Conn {
                        kind: Kind::Stream(s),
                        ..
                    }) => std::mem::take(&mut s.unread),
                    _ => return,
                };
                if !unread.is_empty() {
                    let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
                    let n = self
                        .core
                        .stream_data(stream, unread.as_slice(), &mut io)
                        .unwrap_or(0);
                    unread.consume(n);
                }
                if let Some(c) = self.conn(id) {
                    let drained = unread.is_empty();
                    if let Kind::Stream(s) = &mut c.kind {
                        s.unread = unread;
                    }
                    if drained && c.read_paused && out.resume_read(id).is_ok() {
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
                self.pending_extends
                    .retain(|_, w| *w != ExtendFor::Local(circ));
                if let Some(key) = self.remote_next_by_circ.remove(&circ) {
                    self.remote_next.remove(&key);
                }
            }
        }
    }

    /// Writes a cell on one of our channels (for our core or for another shard's circuit),
    /// holding it in the channel's overflow if its queue is full. Tells the core, and the
    /// origin shards of circuits carried for them, when the channel becomes blocked.
    fn send_local(
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
        if let Some(Conn {
            kind: Kind::Channel(c),
            ..
        }) = self.conn(id)
        {
            if !c.overflow.is_empty() {
                c.overflow.push_back((circ_id, cmd, *body));
            } else {
                match c.channel.send_cell(circ_id, cmd, body) {
                    Ok(()) => {}
                    Err(ChannelError::OutputFull) => c.overflow.push_back((circ_id, cmd, *body)),
                    Err(_) => dropped = true,
                }
            }
            if !c.blocked
                && (!c.overflow.is_empty() || c.channel.queue().free_cells() < BLOCK_BELOW_CELLS)
            {
                c.blocked = true;
                block = true;
            }
        }
        self.cells_dropped_full += u64::from(dropped);
        if block {
            self.core.channel_blocked(chan);
            if self.proxy.carries(id) {
                self.broadcast_blocked(chan, true, out);
            }
        }
        self.mark_dirty(id);
    }

    /// Tells every other shard that our channel `chan` is blocked or not (only shards with
    /// circuits on it care; the others ignore a channel they do not use).
    fn broadcast_blocked(&mut self, chan: ChanId, blocked: bool, out: &mut impl ShardIo<RelayMsg>) {
        for to in 0..self.shards {
            if to != self.shard.0 {
                self.cross_send(to, RelayMsg::ChanBlocked { chan, blocked }, out);
            }
        }
    }

    /// A cell of one of our circuits for a next hop on another shard.
    fn send_forward(
        &mut self,
        chan: ChanId,
        circ_id: CircId,
        cmd: ChanCmd,
        body: CellBody,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        if cmd == ChanCmd::DESTROY {
            if let Some(circ) = self.remote_next.remove(&(chan, circ_id)) {
                self.remote_next_by_circ.remove(&circ);
            }
        }
        let to = shard_of(chan);
        let msg = RelayMsg::Forward {
            chan,
            circ_id,
            cmd,
            body,
        };
        // Forward cells are handed back to the core, never over the bound: no result.
        let _ = self.cross_send(to, msg, out);
    }

    /// Gives `msg` to the link toward shard `to`. A forward RELAY cell the link cannot take
    /// goes back to its circuit's next-hop queue in the core (pool-accounted) and the
    /// remote channel counts as blocked. Returns a backward cell that met the overflow
    /// bound (the caller closes its circuit).
    fn cross_send(
        &mut self,
        to: usize,
        msg: RelayMsg,
        out: &mut impl ShardIo<RelayMsg>,
    ) -> Option<RelayMsg> {
        let cell = msg.is_relay_cell();
        let Some(link) = self.links.get_mut(to) else {
            return None; // no such shard: a malformed ChanId; nothing to send to
        };
        let mut q = OutQueue {
            out: &mut *out,
            to: ShardId(to),
        };
        match link.send(&mut q, msg) {
            Sent::Queued => {
                self.cross.cells_sent += u64::from(cell);
                None
            }
            Sent::Held => {
                // A held cell takes a buffer of the core's pool: the memory cap covers it.
                if cell {
                    let mut io = CoreIo::new(out.now(), &mut self.core_rng, &mut self.actions);
                    if !self.core.charge_external_cell(&mut io) {
                        return link.unhold_last();
                    }
                }
                self.cross.cells_sent += u64::from(cell);
                None
            }
            Sent::GiveBack(RelayMsg::Forward {
                chan,
                circ_id,
                cmd,
                body,
            }) => {
                link.note_blocked(chan);
                self.core.channel_blocked(chan);
                if let Some(&circ) = self.remote_next.get(&(chan, circ_id)) {
                    let now = out.now();
                    let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
                    let _ = self.core.hold_for_next_hop(circ, cmd, &body, &mut io);
                }
                None
            }
            Sent::GiveBack(_) => None,
            Sent::OverBound(m) => Some(m),
        }
    }

    /// Moves held messages into queues that have room again, then unblocks the remote
    /// channels and resumes the reads that waited on them.
    fn pump_cross(&mut self, out: &mut impl ShardIo<RelayMsg>) {
        for to in 0..self.links.len() {
            if !self.links[to].needs_pump() {
                continue;
            }
            let mut q = OutQueue {
                out,
                to: ShardId(to),
            };
            let held = self.links[to].held_cells();
            self.links[to].pump(&mut q, &mut self.scratch_unblock, &mut self.scratch_resume);
            let moved = held - self.links[to].held_cells();
            if moved > 0 {
                self.core.release_external_cells(moved);
            }
        }
        if !self.scratch_unblock.is_empty() {
            let mut io = CoreIo::new(out.now(), &mut self.core_rng, &mut self.actions);
            for chan in self.scratch_unblock.drain(..) {
                if !self.remote_blocked.contains(&chan) {
                    self.core.channel_unblocked(chan, &mut io);
                }
            }
        }
        while let Some(id) = self.scratch_resume.pop() {
            if let Some(c) = self.conn(id) {
                if let Kind::Channel(ch) = &mut c.kind {
                    ch.cross_paused = false;
                    if ch.channel.wants_read() && c.read_paused && out.resume_read(id).is_ok() {
                        c.read_paused = false;
                    }
                }
            }
        }
    }

    /// Sends the cells of other shards' circuits read from channel `id` to their origins.
    /// If a queue is full the channel stops reading until it drains; a cell past the
    /// overflow bound closes its circuit (RESOURCELIMIT toward the channel, DESTROY toward
    /// the origin), never dropped silently.
    fn deliver_cross_in(&mut self, id: ConnId, out: &mut impl ShardIo<RelayMsg>) {
        if self.cross_in.is_empty() {
            return;
        }
        let mut cells = std::mem::take(&mut self.cross_in);
        let mut pause = false;
        for (circ_id, shard, circ, cmd, body) in cells.drain(..) {
            let msg = RelayMsg::Backward { circ, cmd, body };
            if let Some(_over) = self.cross_send(shard, msg, out) {
                self.cross.overflow_kills += 1;
                self.proxy.remove(id, circ_id);
                let chan = self.chan(id);
                let destroy = crate::proto::circuit::destroy_body(DestroyReason::ResourceLimit);
                self.send_local(chan, circ_id, ChanCmd::DESTROY, &destroy, out);
                let msg = RelayMsg::Backward {
                    circ,
                    cmd: ChanCmd::DESTROY,
                    body: crate::proto::circuit::destroy_body(DestroyReason::Destroyed),
                };
                self.cross_send(shard, msg, out);
            }
            if self.links.get(shard).is_some_and(CrossLink::is_congested) {
                if let Some(link) = self.links.get_mut(shard) {
                    link.note_paused(id);
                }
                pause = true;
            }
        }
        self.cross_in = cells;
        if pause {
            if let Some(c) = self.conn(id) {
                if let Kind::Channel(ch) = &mut c.kind {
                    ch.cross_paused = true;
                    if !c.read_paused && out.pause_read(id).is_ok() {
                        c.read_paused = true;
                    }
                }
            }
        }
    }

    /// A batch item from shard `from`.
    fn handle_cross(
        &mut self,
        from: usize,
        msg: RelayMsg,
        now: Instant,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        let cell = msg.is_relay_cell();
        self.cross.cells_received += u64::from(cell);
        match msg {
            RelayMsg::ExtendRequest {
                origin,
                target,
                create2,
            } => self.extend(
                ExtendFor::Remote {
                    shard: from,
                    circ: origin,
                },
                target,
                create2,
                now,
                out,
            ),
            RelayMsg::ExtendReply {
                origin,
                result,
                body,
            } => {
                let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
                match result {
                    Ok((chan, circ_id)) => {
                        let done = ExtendDone {
                            next: NextHop {
                                chan,
                                shard: ShardIdx(from as u16),
                                circ_id,
                            },
                            created2: &body[..],
                        };
                        if self.core.extend_result(origin, Ok(done), &mut io).is_ok() {
                            self.remote_next.insert((chan, circ_id), origin);
                            self.remote_next_by_circ.insert(origin, (chan, circ_id));
                        }
                    }
                    Err(reason) => {
                        let _ = self.core.extend_result(origin, Err(reason), &mut io);
                    }
                }
            }
            RelayMsg::Forward {
                chan,
                circ_id,
                cmd,
                body,
            } => {
                let Some(id) = self.conn_of_chan(chan) else {
                    return; // the channel closed; its DESTROYs are on their way back
                };
                if self.proxy.get(id, circ_id).is_none_or(|(s, _)| s != from) {
                    return; // the circuit is gone here (DESTROY crossed this cell)
                }
                if cmd == ChanCmd::DESTROY {
                    self.proxy.remove(id, circ_id);
                }
                self.send_local(chan, circ_id, cmd, &body, out);
            }
            RelayMsg::Backward {
                circ,
                cmd,
                mut body,
            } => {
                if cmd == ChanCmd::DESTROY {
                    if let Some(key) = self.remote_next_by_circ.remove(&circ) {
                        self.remote_next.remove(&key);
                    }
                }
                let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
                let _ = self
                    .core
                    .handle_next_hop_cell(circ, cmd, &mut body, &mut io);
            }
            RelayMsg::ChanBlocked { chan, blocked } => {
                if blocked {
                    if self.remote_blocked.insert(chan) {
                        self.core.channel_blocked(chan);
                    }
                } else if self.remote_blocked.remove(&chan)
                    && !self.links.get(from).is_some_and(CrossLink::is_congested)
                {
                    let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
                    self.core.channel_unblocked(chan, &mut io);
                }
            }
        }
    }

    /// Carries out an extend for one of our circuits or for another shard's: over an open
    /// channel to the target on this shard if there is one, else through the identity's
    /// owner shard, which reuses or opens the channel ([`route_extend`]).
    fn extend(
        &mut self,
        who: ExtendFor,
        target: ExtendTarget,
        create2: [u8; CELL_BODY_LEN],
        now: Instant,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        let open = self.relay_chans.get(&target.rsa).copied();
        let opening = self
            .opening
            .get(&target.rsa)
            .copied()
            .filter(|&id| matches!(self.conns.get(id.slot() as usize), Some(Some(c)) if c.id == id && !c.closing));
        let owner = owner_shard(&target.rsa, self.shards);
        let remote_request = matches!(who, ExtendFor::Remote { .. });
        match route_extend(open, opening, owner, self.shard.0, remote_request) {
            ExtendRoute::Reuse(id) => self.send_create2(id, who, &create2, now, out),
            ExtendRoute::Join(id) => {
                if let Some(Conn {
                    kind: Kind::Channel(c),
                    ..
                }) = self.conn(id)
                {
                    c.waiting_extends.push((who, Box::new(create2)));
                }
            }
            ExtendRoute::Remote(to) => {
                let ExtendFor::Local(circ) = who else {
                    return; // unreachable: remote requests are served here
                };
                self.cross.extends_sent += 1;
                let msg = RelayMsg::ExtendRequest {
                    origin: circ,
                    target,
                    create2,
                };
                self.cross_send(to, msg, out);
            }
            ExtendRoute::Open => self.open_channel(who, target, create2, now, out),
        }
    }

    /// Opens an outbound channel to `target` for an extend.
    fn open_channel(
        &mut self,
        who: ExtendFor,
        target: ExtendTarget,
        create2: [u8; CELL_BODY_LEN],
        now: Instant,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        // An IPv6-only extend without an IPv6 ORPort of ours fails with CONNECTFAILED below,
        // as C `circuit_open_connection_for_extend`.
        let can_ipv6 = self.network.get().extend_over_ipv6;
        let addr = target.choose_addr(can_ipv6, &mut self.chan_rng);
        let ctx = self.network.get().link.clone();
        let started = addr.and_then(|addr| {
            let ch = Channel::new_initiator(
                ctx,
                ExpectedPeer {
                    rsa: target.rsa,
                    ed: target.ed,
                },
                addr.ip(),
                out.wall(),
                &mut self.chan_rng,
            )
            .ok()?;
            let from = self
                .network
                .get()
                .outbound
                .source(OutboundKind::Or, addr.ip());
            let id = out.connect_from(addr, from, true).ok()?;
            Some((id, ch))
        });
        let Some((id, channel)) = started else {
            self.extend_failed(who, DestroyReason::ConnectFailed, now, out);
            return;
        };
        if let Some(a) = addr {
            let _ = out.set_bw_class(id, self.bw_class(a.ip(), true));
            // As for accepted channels: the handshake is not held back by the buckets.
            let _ = out.set_bw_read_ungated(id, true);
        }
        if let Some(slot) = self.conns.get_mut(id.slot() as usize) {
            *slot = Some(Conn {
                id,
                kind: Kind::Channel(Box::new(ChanConn {
                    channel,
                    open: false,
                    peer: PeerIdentity::Client,
                    waiting_extends: vec![(who, Box::new(create2))],
                    cross_paused: false,
                    blocked: false,
                    overflow: VecDeque::new(),
                    idle: None,
                    dos_slot: None,
                })),
                read_paused: false,
                closing: false,
            });
            self.opening.insert(target.rsa, id);
            self.mark_dirty(id);
        }
    }

    /// An extend failed: close our circuit, or tell its origin shard.
    fn extend_failed(
        &mut self,
        who: ExtendFor,
        reason: DestroyReason,
        now: Instant,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        match who {
            ExtendFor::Local(circ) => {
                let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
                let _ = self.core.extend_result(circ, Err(reason), &mut io);
            }
            ExtendFor::Remote { shard, circ } => {
                let msg = RelayMsg::ExtendReply {
                    origin: circ,
                    result: Err(reason),
                    body: [0; CELL_BODY_LEN],
                };
                self.cross_send(shard, msg, out);
            }
        }
    }

    /// CREATED2 came back on channel `id` for circuit ID `circ_id`.
    fn extend_done(
        &mut self,
        who: ExtendFor,
        id: ConnId,
        circ_id: CircId,
        created2: &CellBody,
        now: Instant,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        let chan = self.chan(id);
        match who {
            ExtendFor::Local(circ) => {
                let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
                let done = ExtendDone {
                    next: NextHop {
                        chan,
                        shard: ShardIdx(self.shard.0 as u16),
                        circ_id,
                    },
                    created2: &created2[..],
                };
                let _ = self.core.extend_result(circ, Ok(done), &mut io);
            }
            ExtendFor::Remote { shard, circ } => {
                if !self.proxy.insert(id, circ_id, shard, circ) {
                    let destroy = crate::proto::circuit::destroy_body(DestroyReason::ResourceLimit);
                    self.send_local(chan, circ_id, ChanCmd::DESTROY, &destroy, out);
                    self.extend_failed(who, DestroyReason::ResourceLimit, now, out);
                    return;
                }
                self.cross.circuits_total += 1;
                let msg = RelayMsg::ExtendReply {
                    origin: circ,
                    result: Ok((chan, circ_id)),
                    body: *created2,
                };
                self.cross_send(shard, msg, out);
            }
        }
    }

    fn send_create2(
        &mut self,
        id: ConnId,
        who: ExtendFor,
        create2: &[u8; CELL_BODY_LEN],
        now: Instant,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        let pending = &self.pending_extends;
        let proxy = &self.proxy;
        let chan = chan_id(self.shard.0, id);
        let mut sent = None;
        if let Some(Some(Conn {
            kind: Kind::Channel(c),
            ..
        })) = self.conns.get_mut(id.slot() as usize)
        {
            let alloc = c.channel.circ_id_allocator();
            let core = &self.core;
            let circ_id = alloc.allocate(&mut self.chan_rng, |cid| {
                pending.contains_key(&(id, cid))
                    || proxy.contains(id, cid)
                    || core.circ_id_in_use(chan, cid)
            });
            if let Some(cid) = circ_id {
                if c.channel.send_cell(cid, ChanCmd::CREATE2, create2).is_ok() {
                    sent = Some(cid);
                }
            }
        }
        match sent {
            Some(cid) => {
                self.pending_extends.insert((id, cid), who);
                self.mark_dirty(id);
            }
            None => self.extend_failed(who, DestroyReason::ResourceLimit, now, out),
        }
    }

    /// Routes CREATED2/DESTROY answers to our extends on channel `id`.
    fn route_answers(&mut self, id: ConnId, now: Instant, out: &mut impl ShardIo<RelayMsg>) {
        let mut answers = std::mem::take(&mut self.answers);
        for (circ_id, cmd, body) in &answers {
            let Some(who) = self.pending_extends.remove(&(id, *circ_id)) else {
                continue;
            };
            if *cmd == ChanCmd::CREATED2 {
                self.extend_done(who, id, *circ_id, body, now, out);
            } else {
                self.extend_failed(who, DestroyReason::Destroyed, now, out);
            }
        }
        answers.clear();
        self.answers = answers;
    }

    /// Reacts to channel events collected while reading.
    fn channel_events(&mut self, id: ConnId, now: Instant, out: &mut impl ShardIo<RelayMsg>) {
        let events = std::mem::take(&mut self.events);
        let shard = self.shard.0;
        for e in &events {
            // Drawn before the connection is borrowed; used only by `Open`.
            let idle_timeouts = if matches!(e, ChannelEvent::Open(_)) {
                let relay_base = self.network.get().param(
                    "nf_conntimeout_relays",
                    idle::RELAY_IDLE_DEFAULT_SECS as i32,
                    60,
                    604_800,
                ) as u32;
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
    fn flush(&mut self, id: ConnId, out: &mut impl ShardIo<RelayMsg>) {
        let now = out.now();
        let mut unblock = None;
        let mut stream_drained = None;
        let shard = self.shard.0;
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
            self.core.channel_unblocked(chan, &mut io);
            if self.proxy.carries(id) {
                self.broadcast_blocked(chan, false, out);
            }
        }
        if let Some(stream) = stream_drained {
            let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
            let _ = self.core.stream_write_blocked(stream, false, &mut io);
        }
    }

    fn refresh_snapshot(&mut self) {
        let options_changed = self.dos_options.refresh();
        let network_changed = self.network.refresh();
        if options_changed || network_changed {
            self.dos_cfg = dos_config(self.network.get(), self.dos_options.get());
        }
        if !network_changed {
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
        self.core.set_exit_consensus_params(&snap.consensus_params);
        *self.core.network_view_mut() = SnapshotView(snap);
    }

    fn publish_counters(&self, out: &impl ShardIo<RelayMsg>) {
        self.stats.store(out.metrics());
        let m = self.core.metrics();
        self.stats.store_circuit(m);
        if let Some(dns) = &self.dns {
            self.stats.store_dns(&dns.metrics());
            self.stats
                .handler
                .dns_send_errors
                .store(dns.send_errors, Ordering::Relaxed);
        }
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
        let x = &self.cross;
        h.cross_circuits_open
            .store(self.remote_next.len() as u64, Ordering::Relaxed);
        h.cross_circuits_carried
            .store(self.proxy.len() as u64, Ordering::Relaxed);
        h.cross_circuits_total
            .store(x.circuits_total, Ordering::Relaxed);
        h.cross_extends_sent
            .store(x.extends_sent, Ordering::Relaxed);
        h.cross_cells_sent.store(x.cells_sent, Ordering::Relaxed);
        h.cross_cells_received
            .store(x.cells_received, Ordering::Relaxed);
        let full: u64 = self.links.iter().map(|l| l.full_events).sum();
        h.cross_queue_full.store(full, Ordering::Relaxed);
        let depth: usize = self.links.iter().map(CrossLink::depth).sum();
        h.cross_overflow_depth
            .store(depth as u64, Ordering::Relaxed);
        h.cross_overflow_kills
            .store(x.overflow_kills, Ordering::Relaxed);
    }
}

/// The DoS thresholds: the torrc's options over the snapshot's consensus parameters. Runs
/// once per new snapshot, not per cell.
pub(crate) fn dos_config(snap: &NetworkSnapshot, torrc: &DosOptions) -> DosConfig {
    DosConfig::from_raw_params(torrc, &snap.consensus_params)
}

/// Congestion-control parameters from the consensus (C's defaults before one is known).
fn cc_params(snap: &NetworkSnapshot) -> crate::proto::flow::CcParams {
    crate::proto::flow::CcParams::from_lookup(|k| snap.consensus_params.get(k).copied())
}

impl RelayHandler {
    pub fn on_start(&mut self, out: &mut impl ShardIo<RelayMsg>) {
        self.shards = out.shard_count().max(1);
        self.links = (0..self.shards)
            .map(|_| CrossLink::new(CROSS_OVERFLOW_CELLS))
            .collect();
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

    pub fn on_cross_shard(
        &mut self,
        from: ShardId,
        items: impl IntoIterator<Item = RelayMsg>,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        let now = out.now();
        for msg in items {
            self.handle_cross(from.0, msg, now, out);
        }
        self.dispatch(out);
    }

    pub fn on_readable(&mut self, _watch: WatchId, out: &mut impl ShardIo<RelayMsg>) {
        let now = out.now();
        if let Some(dns) = self.dns.as_mut() {
            dns.read(now, &mut self.dns_done);
        }
        self.deliver_dns(now);
        self.dispatch(out);
    }

    pub fn on_accept(&mut self, conn: ConnId, peer: SocketAddr, out: &mut impl ShardIo<RelayMsg>) {
        self.stats
            .handler
            .connections_seen
            .fetch_add(1, Ordering::Relaxed);
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
        // C tor checks the DoS state at accept, before any TLS, and starts counting the
        // connection at once (connection.c, channeltls.c).
        let dos_slot = match self.dos.on_accept(
            peer.ip(),
            &self.dos_cfg,
            self.dos.secs(out.now()),
            &mut self.core_rng,
        ) {
            ConnDecision::Track(slot) => Some(slot),
            ConnDecision::Untracked => None,
            ConnDecision::Refuse(why) => {
                log_debug!(
                    "shard {}: DoS defence closed a new connection ({why:?})",
                    self.shard.0
                );
                self.stats
                    .handler
                    .connections_closed_unserved
                    .fetch_add(1, Ordering::Relaxed);
                let _ = out.close(conn);
                return;
            }
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
                        dos_slot,
                    })),
                    read_paused: false,
                    closing: false,
                });
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

    pub fn on_data(&mut self, conn: ConnId, data: &[u8], out: &mut impl ShardIo<RelayMsg>) {
        let now = out.now();
        let wall = out.wall();
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
                    conn,
                    proxy: &mut self.proxy,
                    cross_in: &mut self.cross_in,
                    info: ChanInfo {
                        id: chan_id(self.shard.0, conn),
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
                let _ = ch
                    .channel
                    .handle_input(data, wall, &mut self.chan_rng, &mut sink);
                self.deliver_cross_in(conn, out);
                self.channel_events(conn, now, out);
                self.route_answers(conn, now, out);
                self.mark_dirty(conn);
            }
            Kind::Stream(s) => {
                let stream = s.stream;
                if !s.unread.is_empty() {
                    s.unread.push(data);
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
                            s.unread.push(&data[n..]);
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

    pub fn on_writable(&mut self, conn: ConnId, out: &mut impl ShardIo<RelayMsg>) {
        self.flush(conn, out);
        self.dispatch(out);
    }

    pub fn on_closed(
        &mut self,
        conn: ConnId,
        reason: CloseReason,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        let now = out.now();
        let Some(slot) = self.conns.get_mut(conn.slot() as usize) else {
            return;
        };
        if slot.as_ref().is_none_or(|c| c.id != conn) {
            return;
        }
        let Some(c) = slot.take() else { return };
        match c.kind {
            Kind::Channel(mut ch) => {
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
    pub fn on_batch_end(&mut self, out: &mut impl ShardIo<RelayMsg>) -> bool {
        self.flush_staged(out);
        if self.links.iter().any(CrossLink::needs_pump) {
            self.dispatch(out);
        }
        if self.core.onions_pending() == 0 {
            return self.core.has_staged();
        }
        let mut io = CoreIo::new(out.now(), &mut self.core_rng, &mut self.actions);
        self.core.process_onion_queue(&mut io);
        self.dispatch(out);
        self.flush_staged(out);
        self.core.onions_pending() > 0 || self.core.has_staged()
    }

    pub fn on_tick(&mut self, now: Instant, out: &mut impl ShardIo<RelayMsg>) {
        super::testing::panic_if_asked(self.shard); // TestingTorNetwork only (testing.rs)
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
        let wall = out.wall();
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_mut() else {
                continue;
            };
            let Kind::Channel(ch) = &mut c.kind else {
                continue;
            };
            if ch.open || c.closing {
                // Handshake over: reads are under the buckets again (at most a tick late;
                // its bytes were charged all along).
                if ch.open && out.bw_read_ungated(c.id) {
                    let _ = out.set_bw_read_ungated(c.id, false);
                }
                continue;
            }
            let id = c.id;
            if let Err(e) = ch.channel.check_timeout(wall, &mut NullSink) {
                log_debug!("shard {}: channel closed: {e}", self.shard.0);
                c.closing = true;
                self.mark_dirty(id);
            }
        }
        if self.next_idle_check.is_none_or(|t| now >= t) {
            self.next_idle_check = Some(now + IDLE_CHECK_INTERVAL);
            self.close_idle_channels(now);
        }
        self.dispatch(out);
        self.flush_staged(out);
        self.publish_counters(out);
    }
}

/// The shard's view of the node: every callback hands the shard's [`Outbox`] to the node
/// as its [`ShardIo`].
impl ConnHandler for RelayHandler {
    type Msg = RelayMsg;

    fn on_start(&mut self, out: &mut Outbox<'_, RelayMsg>) {
        RelayHandler::on_start(self, out)
    }
    fn on_readable(&mut self, watch: WatchId, out: &mut Outbox<'_, RelayMsg>) {
        RelayHandler::on_readable(self, watch, out)
    }
    fn on_accept(&mut self, conn: ConnId, peer: SocketAddr, out: &mut Outbox<'_, RelayMsg>) {
        RelayHandler::on_accept(self, conn, peer, out)
    }
    fn on_connected(&mut self, conn: ConnId, peer: SocketAddr, out: &mut Outbox<'_, RelayMsg>) {
        RelayHandler::on_connected(self, conn, peer, out)
    }
    fn on_data(&mut self, conn: ConnId, data: &[u8], out: &mut Outbox<'_, RelayMsg>) {
        RelayHandler::on_data(self, conn, data, out)
    }
    fn on_writable(&mut self, conn: ConnId, out: &mut Outbox<'_, RelayMsg>) {
        RelayHandler::on_writable(self, conn, out)
    }
    fn on_closed(&mut self, conn: ConnId, reason: CloseReason, out: &mut Outbox<'_, RelayMsg>) {
        RelayHandler::on_closed(self, conn, reason, out)
    }
    fn on_cross_shard(
        &mut self,
        from: ShardId,
        items: std::vec::Drain<'_, RelayMsg>,
        out: &mut Outbox<'_, RelayMsg>,
    ) {
        RelayHandler::on_cross_shard(self, from, items, out)
    }
    fn on_tick(&mut self, now: Instant, out: &mut Outbox<'_, RelayMsg>) {
        RelayHandler::on_tick(self, now, out)
    }
    fn on_batch_end(&mut self, out: &mut Outbox<'_, RelayMsg>) -> bool {
        RelayHandler::on_batch_end(self, out)
    }
}

/// Flush rounds per call: carrying out a flush's actions may package more exit data
/// (a channel drained, a stream resumed), which is staged again.
const MAX_FLUSH_ROUNDS: usize = 8;

impl RelayHandler {
    /// Exit DATA packaged since the last flush, across circuits: one multi-circuit crypto
    /// call, then onto the channels (proto::circuit `staged.rs`).
    fn flush_staged(&mut self, out: &mut impl ShardIo<RelayMsg>) {
        for _ in 0..MAX_FLUSH_ROUNDS {
            if !self.core.has_staged() {
                break;
            }
            let mut io = CoreIo::new(out.now(), &mut self.core_rng, &mut self.actions);
            self.core.flush_originated(&mut io);
            self.dispatch(out);
        }
    }
}

/// Actions buffered per dispatch round before a buffer grows (a full I/O batch of cells).
const ACTION_BUF_CAPACITY: usize = 1024;

/// How often open channels are checked for idleness (a scan of the circuit table).
const IDLE_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl RelayHandler {
    /// Closes open channels that carried no circuit here (ours, or another shard's through
    /// the proxy table) for their idle timeout (`proto::channel::idle`).
    fn close_idle_channels(&mut self, now: Instant) {
        let mut in_use = std::mem::take(&mut self.chans_in_use);
        in_use.clear();
        self.core.channels_in_use(&mut in_use);
        let shard = self.shard.0;
        let hibernation = self.network.get().hibernation;
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_mut() else {
                continue;
            };
            let id = c.id;
            let Kind::Channel(ch) = &mut c.kind else {
                continue;
            };
            // Hard hibernation closes every OR connection (C hibernate_go_dormant).
            if hibernation == Hibernation::Hard && !c.closing {
                c.closing = true;
                self.mark_dirty(id);
                continue;
            }
            let Some(idle) = ch.idle.as_mut() else {
                continue;
            };
            if c.closing {
                continue;
            }
            let busy = in_use.contains(&chan_id(shard, id))
                || self.proxy.carries(id)
                || !ch.waiting_extends.is_empty();
            // Soft hibernation closes channels without circuits at once (C
            // run_connection_housekeeping).
            if hibernation.refuses_new_work() && !busy {
                c.closing = true;
                self.mark_dirty(id);
                continue;
            }
            if idle.update(now, busy) {
                log_info!(
                    "shard {shard}: closing channel with {} at {}: no circuit for {} s",
                    match ch.peer {
                        PeerIdentity::Client => "a client".to_string(),
                        PeerIdentity::Relay { rsa, .. } => format!("relay ${}", rsa.to_hex()),
                    },
                    peer_for_log(ch.peer, ch.channel.peer_addr()),
                    idle.timeout().as_secs()
                );
                c.closing = true;
                self.mark_dirty(id);
            }
        }
        self.chans_in_use = in_use;
    }
}

/// A channel peer's address for a log line: a peer that has not proven a relay identity may
/// be a client, so its address is scrubbed as a client's (C `safe_str`).
fn peer_for_log(peer: PeerIdentity, addr: IpAddr) -> log::Scrubbed<IpAddr> {
    match peer {
        PeerIdentity::Relay { .. } => log::relay_addr(addr),
        PeerIdentity::Client => log::client_addr(addr),
    }
}

/// For calls whose events the handler does not need (EOF, timeouts).
struct NullSink;

impl ChannelSink for NullSink {
    fn cell(&mut self, _: CircId, _: ChanCmd, _: &mut [u8; CELL_BODY_LEN], _: &mut CellQueue) {}
    fn event(&mut self, _: ChannelEvent) {}
}
