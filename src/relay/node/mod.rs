//! The relay node: one shard's relay logic as a sans-IO state machine.
//!
//! A node takes events (a connection accepted, bytes read, a connection writable or closed,
//! a batch from another shard, a tick, the end of an I/O batch) and answers with I/O
//! operations on a [`ShardIo`], the one output convention of the whole core: the shard's
//! `Outbox` in the daemon, [`fake::FakeShard`] in tests. Both clocks come from it too, so
//! a test drives a node with a fake clock and no socket.
//!
//! A shard's connections are channels (accepted on the ORPort, or opened by us to extend a
//! circuit) and exit streams (TCP connections for BEGIN). Cells a channel delivers go to the
//! shard's [`RelayCore`]; the [`Action`]s it returns are carried out here (`dispatch`).
//! One module per job:
//!
//! * `conn`: connection lifecycle (accept, connected, data, writable, closed);
//! * `channel`: a channel's cells and events, its output and backpressure;
//! * `extend`: extend routing (reuse or open a channel, CREATE2 out, CREATED2 back);
//! * `proxy`: cross-shard circuits (messages to and from other shards, their overflow);
//! * `exit`: exit streams and hostname lookups ([`ExitDns`], one resolver per shard);
//! * `dos`: the DoS gate (connection and circuit-creation defences);
//! * `timers`: the tick (handshake timeouts, idle channels) and end-of-batch work;
//! * `control`: control-plane snapshots in, counters out (MetricsPort), without locking
//!   on the data path.
//!
//! What is not done yet, plainly:
//! * **DNS on a relay that became an exit by reload**: a relay started as a non-exit has no
//!   resolver, so it answers hostnames with a transient failure until restarted.
//! * **Cross-shard circuits** ([`cross`]) work, with these limits: a circuit's shard is
//!   fixed by its previous-hop channel (no rebalancing); a backward cell that meets a full
//!   queue *and* a full overflow closes its circuit (RESOURCELIMIT) instead of waiting.
//! * Backpressure toward channels: the core is told a channel is blocked when its queue runs
//!   low; cells it still emits (it releases its held cells at once on unblock) wait in a
//!   per-channel overflow queue, never dropped, but not charged to the cell pool either; a
//!   peer that leaves more there than the core could ever release at once (the memory cap
//!   plus a cross-shard slack) loses the channel (its circuits get DESTROY). The peaks and
//!   closes at this bound and at the exit streams' backlog bound ([`BoundCounters`]) are
//!   not on the MetricsPort yet.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;

#[path = "../byte_queue.rs"]
mod byte_queue;
#[path = "../cross.rs"]
pub mod cross;

mod channel;
mod conn;
mod control;
mod dos;
mod exit;
mod extend;
#[doc(hidden)]
pub mod fake;
mod memory;
mod protowarn;
mod proxy;
mod timers;

use self::byte_queue::ByteQueue;
pub use self::cross::RelayMsg;
use self::cross::{
    owner_shard_id, route_extend, CrossLink, CrossQueue, ExtendFor, ExtendRoute, ProxyTable, Sent,
};
pub use self::dos::{dos_config, DosShared};
use super::exit_dns::ExitDns;
use super::log::{self, log_debug, log_info, log_notice, log_protocol_warn};
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
    Action, ActionSink, CellBody, ChanId, ChanInfo, CircHandle, CircuitConfig, CoreIo, ExtendDone,
    ExtendTarget, NetworkView, NextHop, RelayCore, RelayIdentity, ShardIdx,
};
use crate::proto::stream::{ConnectError, StreamHandle};
use crate::shard::{BwClass, CloseReason, ConnId, Filled, OutboxError, ShardId, ShardIo, WatchId};
use crate::util::copies::{self, CopySite};

use self::channel::{peer_for_log, NullSink};
use self::dos::DosCheck;
use self::proxy::CrossCounters;
use self::proxy::{CROSS_OVERFLOW_CELLS, MAX_PROXIED_CIRCUITS};

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

type Core = RelayCore<crate::proto::circuit::RelayHop, SnapshotView>;

// A shard index must fit in a `ChanId`'s shard byte.
const _: () = assert!(ShardId::LIMIT <= ChanId::MAX_SHARDS);

/// A channel's name for the circuit core, unique across shards (the shard in the top byte):
/// circuits may name channels of other shards, and the core's blocked set and close walks
/// must never confuse them with ours.
fn chan_id(shard: ShardId, c: ConnId) -> ChanId {
    // The runtime refuses more than `ShardId::LIMIT` shards (`RuntimeConfig::validate`).
    debug_assert!(shard.0 < ShardId::LIMIT);
    ChanId::on_shard(
        shard.0 as u8,
        ((u64::from(c.gen) & 0x00ff_ffff) << 32) | u64::from(c.slot()),
    )
}

/// The shard a [`chan_id`] lives on.
fn shard_of(chan: ChanId) -> ShardId {
    ShardId(usize::from(chan.shard()))
}

/// Connection `id` in the table, by field: the rest of the node stays borrowable.
fn conn_in(conns: &mut [Option<Conn>], id: ConnId) -> Option<&mut Conn> {
    conns
        .get_mut(id.slot() as usize)?
        .as_mut()
        .filter(|c| c.id == id)
}

/// What a node holds ([`RelayNode::census`]).
#[doc(hidden)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NodeCensus {
    pub conns: usize,
    pub circuits: usize,
    /// Cells in the core's pool (circuit queues, stream buffers, cross-shard holds).
    pub queued_cells: u64,
    /// Relay cells held for full cross-shard queues, and all messages waiting there.
    pub cross_held: usize,
    pub cross_depth: usize,
    pub proxied: usize,
    pub remote_next: usize,
    pub streams: usize,
    pub pending_extends: usize,
}

/// How close the node came to its per-connection bounds, and what hitting them cost.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BoundCounters {
    /// Most cells one channel's overflow held (`RelayNode::chan_overflow_cap` at most).
    pub chan_overflow_peak: usize,
    /// Channels closed because their overflow was at its bound.
    pub chan_overflow_closes: u64,
    /// Most bytes one exit stream's backlog held (`STREAM_BACKLOG_BYTES` at most).
    pub stream_backlog_peak: usize,
    /// Exit streams closed because a backlog was at its bound.
    pub stream_backlog_closes: u64,
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
    /// Netflow padding (set when it opens; `timers.rs`).
    padding: Option<crate::proto::channel::padding::ChannelPadding>,
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
    /// When the connect was asked for (the `exit_connect` latency histogram).
    connect_started: Instant,
    /// A `StreamTurn` for this stream waits in the action queue (`exit::resume_stream_read`):
    /// a `ResumeStreamRead` of the core meanwhile is left to it, so one stream never has two
    /// chains of turns.
    turn_queued: bool,
}

/// A stream whose socket closed with bytes its windows had not let out yet: they go first,
/// then END (`exit::resume_stream_read`).
struct Draining {
    unread: ByteQueue,
    end: EndReason,
    /// As `StreamConn::turn_queued`.
    turn_queued: bool,
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

/// One shard's relay node.
pub struct RelayNode {
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
    cross_in: Vec<(CircId, ShardId, CircHandle, ChanCmd, CellBody)>,
    scratch_unblock: Vec<ChanId>,
    scratch_resume: Vec<ConnId>,
    cross: CrossCounters,
    streams: HashMap<StreamHandle, ConnId>,
    /// Exit streams whose socket reached EOF while bytes read from it still wait for the
    /// package window: their END goes out after those bytes.
    draining: HashMap<StreamHandle, Draining>,
    /// Connections whose output must be flushed after the current batch of actions.
    dirty: Vec<ConnId>,
    /// The exit resolver; `None` on a non-exit (or if its socket could not be opened).
    dns: Option<ExitDns>,
    /// Lookups finished by the resolver, waiting to go to the core (reused buffer).
    dns_done: Vec<(StreamHandle, Resolution)>,
    dns_warned: bool,
    cells_dropped_full: u64,
    /// Peaks of, and closes at, the per-channel overflow and stream backlog bounds.
    bounds: BoundCounters,
    /// The relay-wide memory cap (`None`: the core's own pool of `pool_cells`), and the
    /// largest channel-overflow bound derived from it so far.
    mem_budget: Option<Arc<crate::proto::circuit::MemBudget>>,
    pool_cells: usize,
    overflow_cap: usize,
    /// Channels that carry a circuit (refilled at each idle check; kept for its capacity).
    chans_in_use: HashSet<ChanId>,
    /// Channels that took another shard's circuit since the last idle check (the core keeps
    /// its own circuits' attaches): busy even if that circuit is gone again.
    proxy_attached: HashSet<ChanId>,
    next_idle_check: Option<Instant>,
    /// Peers' protocol violations since the last idle check, for its log line.
    protocol_warnings: protowarn::ProtocolWarnings,
    /// Channel padding: consensus parameters, usage scratch sets, next deadline.
    padding: timers::NodePadding,
    /// The DoS table all shards share, the torrc's DoS options (replaced on SIGHUP), and
    /// the thresholds in force (torrc over the consensus; recomputed when either changes).
    dos: Arc<ClientAddrTable>,
    /// Latency histograms (MetricsPort), if the relay gave one.
    latency: Option<Arc<crate::metrics::histogram::ShardLatency>>,
    /// The cell queueing delay's current receive window (`channel.rs`).
    qdelay: channel::QueueDelayWindow,
    /// The core pool's held-cell delays as last copied into `latency` (`control.rs`).
    pool_delay_seen: crate::proto::circuit::pool::QueueDelayCounts,
    dos_options: SnapshotReader<DosOptions>,
    dos_cfg: DosConfig,
    /// `CountPrivateBandwidth`: connections with internal addresses are rate-limited too.
    count_private_bandwidth: bool,
    /// The ControlPort's ORCONN resync round this shard is listing: (round, next slot,
    /// channels listed so far) (`timers.rs`, `ctlevents::listed`).
    orconn_resync: Option<(u32, usize, u32)>,
    /// The last resync round this shard completed (0: none).
    orconn_done: u32,
    /// Spare-capacity watches of the node's buffers (`memory.rs`).
    spare: memory::NodeSpare,
    /// Channels by the TLS record layer they settled on (`channel.rs`).
    tls_paths: channel::TlsPathCounts,
}

impl RelayNode {
    pub fn new(
        shard: ShardId,
        stats: Arc<ShardStats>,
        network: Arc<SnapshotCell<NetworkSnapshot>>,
        max_connections: usize,
        circuits: CircuitConfig,
        dns: Option<ExitDns>,
        dos: DosShared,
    ) -> RelayNode {
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
        let mem_budget = circuits.mem_budget.clone();
        let pool_cells = circuits.pool_cells;
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
        RelayNode {
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
            bounds: BoundCounters::default(),
            mem_budget,
            pool_cells,
            overflow_cap: 0,
            chans_in_use: HashSet::new(),
            proxy_attached: HashSet::new(),
            next_idle_check: None,
            protocol_warnings: Default::default(),
            padding: Default::default(),
            dos,
            dos_options,
            dos_cfg,
            count_private_bandwidth: false,
            latency: None,
            qdelay: Default::default(),
            pool_delay_seen: Default::default(),
            orconn_resync: None,
            orconn_done: 0,
            spare: Default::default(),
            tls_paths: Default::default(),
        }
    }

    /// The histograms this shard records into (onion-skin batches, exit connects, cell
    /// queueing delay).
    pub fn with_latency(
        mut self,
        latency: Arc<crate::metrics::histogram::ShardLatency>,
    ) -> RelayNode {
        self.latency = Some(latency);
        self
    }

    /// Seeds the node's random sources (circuit IDs, idle timeouts, DoS draws, cell
    /// padding) instead of the OS's: a test's run can be replayed from its printed seed.
    /// (TLS keeps its own randomness.)
    pub fn seed_rngs(mut self, seed: u64) -> RelayNode {
        self.chan_rng = StdRng::seed_from_u64(seed);
        self.core_rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
        self
    }

    /// Rate-limits connections with internal addresses as well (C `CountPrivateBandwidth`,
    /// on under `TestingTorNetwork`).
    pub fn count_private_bandwidth(mut self, yes: bool) -> RelayNode {
        self.count_private_bandwidth = yes;
        self
    }

    /// The DoS thresholds this shard applies now.
    pub fn dos_config(&self) -> &DosConfig {
        &self.dos_cfg
    }

    /// How much the node holds right now (tests check it goes back to zero).
    #[doc(hidden)]
    pub fn census(&self) -> NodeCensus {
        NodeCensus {
            conns: self.conns.iter().filter(|c| c.is_some()).count(),
            circuits: self.core.circuit_count(),
            queued_cells: self.core.metrics().queued_cells,
            cross_held: self.links.iter().map(CrossLink::held_cells).sum(),
            cross_depth: self.links.iter().map(CrossLink::depth).sum(),
            proxied: self.proxy.len(),
            remote_next: self.remote_next.len(),
            streams: self.streams.len(),
            pending_extends: self.pending_extends.len(),
        }
    }

    /// Cells one channel's overflow may hold: the most the core could release to it at once
    /// (the largest memory cap seen: a reload that lowers the cap does not shrink what was
    /// already queued) plus the cross-shard slack.
    fn chan_overflow_cap(&mut self) -> usize {
        let cap = self
            .mem_budget
            .as_ref()
            .map_or(self.pool_cells, |b| b.cap_cells() as usize);
        self.overflow_cap = self
            .overflow_cap
            .max(cap.saturating_add(channel::CHAN_OVERFLOW_SLACK_CELLS));
        self.overflow_cap
    }

    /// Peaks and closes at the per-connection bounds.
    pub fn bound_counters(&self) -> BoundCounters {
        self.bounds
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
        (chan_id(self.shard, c.id) == chan).then_some(c.id)
    }

    fn chan(&self, id: ConnId) -> ChanId {
        chan_id(self.shard, id)
    }

    fn mark_dirty(&mut self, id: ConnId) {
        if !self.dirty.contains(&id) {
            self.dirty.push(id);
        }
    }

    /// Runs the core's actions (and those they cause), then flushes touched connections.
    /// Flushing can unblock a channel, and the core answers that with more actions (queued
    /// cells, `ResumeStreamRead`): those run in the same call, or a quiet stream would stay
    /// paused until some unrelated event came (the model test's lost-bytes case).
    fn dispatch(&mut self, out: &mut impl ShardIo<RelayMsg>) {
        for _ in 0..DISPATCH_ROUNDS {
            self.run_actions(out);
            while let Some(id) = self.dirty.pop() {
                self.flush(id, out);
            }
            if self.actions.is_empty() {
                break;
            }
        }
        if let Some(dns) = self.dns.as_mut() {
            dns.transmit();
        }
    }

    /// Runs queued actions and those they cause, up to a bound per call (what is left
    /// runs at the next event; the shard's tick guarantees one).
    fn run_actions(&mut self, out: &mut impl ShardIo<RelayMsg>) {
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
                // Moving a cell or bytes out of the buffer is a copy (the copy map).
                match &a {
                    Action::SendCell { .. } => copies::note(CopySite::ActionTake, CELL_BODY_LEN),
                    Action::StreamWrite { data, .. } => {
                        copies::note(CopySite::ActionTake, data.as_slice().len())
                    }
                    _ => {}
                }
                self.run_action(a, out);
            }
        }
        debug_assert!(batch.is_empty());
        self.spare_actions = batch;
    }

    /// Carries out one action of the core.
    fn run_action(&mut self, a: Action, out: &mut impl ShardIo<RelayMsg>) {
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
            } => {
                // The clock is read here only: most actions are cells, and the shard's
                // `now` reads the system clock at each call.
                let now = out.now();
                self.extend(ExtendFor::Local(circ), target, create2, now, out)
            }
            Action::Connect { stream, addr } => self.exit_connect(stream, addr, out),
            Action::StreamWrite { stream, data } => self.stream_write(stream, data.as_slice(), out),
            Action::StreamClose { stream } => self.stream_close(stream, out),
            Action::PauseStreamRead { stream } => self.pause_stream_read(stream, out),
            Action::ResumeStreamRead { stream } => self.resume_stream_read(stream, false, out),
            Action::StreamTurn { stream } => self.resume_stream_read(stream, true, out),
            Action::Resolve {
                stream,
                request,
                want_ipv6,
            } => self.resolve(stream, request, want_ipv6, out),
            Action::Hs { to, msg } => self.send_hs(ShardId(usize::from(to.0)), msg, out),
            Action::Cfx { to, msg } => self.send_cfx(ShardId(usize::from(to.0)), msg, out),
            Action::CircuitClosed { circ, .. } => {
                self.pending_extends
                    .retain(|_, w| *w != ExtendFor::Local(circ));
                if let Some(key) = self.remote_next_by_circ.remove(&circ) {
                    self.remote_next.remove(&key);
                }
            }
        }
    }
}

/// Congestion-control parameters from the consensus (C's defaults before one is known).
fn cc_params(snap: &NetworkSnapshot) -> crate::proto::flow::CcParams {
    crate::proto::flow::CcParams::from_lookup(|k| snap.consensus_params.get(k).copied())
}

/// Rounds of "run actions, flush connections" per dispatch: a flush that unblocks a
/// channel yields actions for the next round; a bound keeps one event's work finite.
const DISPATCH_ROUNDS: usize = 8;

/// Actions buffered per dispatch round before a buffer grows (a full I/O batch of cells).
const ACTION_BUF_CAPACITY: usize = 1024;

impl RelayNode {
    /// The shard starts: one cross-shard link per shard, and a readiness watch on the
    /// resolver's socket.
    pub fn on_start(&mut self, out: &mut impl ShardIo<RelayMsg>) {
        self.shards = out.shard_count().max(1);
        self.core.set_shard_count(self.shards);
        // Each link's overflow makes up for a ring lowered with the shard count
        // (`relay::cross::overflow_cells_for`).
        self.links = (0..self.shards)
            .map(|to| {
                let ring = out.cross_space(ShardId(to)).1;
                CrossLink::new(cross::overflow_cells_for(ring, CROSS_OVERFLOW_CELLS))
            })
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chan_ids_of_different_shards_never_alias() {
        let c = ConnId::from_parts(7, 3);
        for shard in [0, 1, 2, 127, 255] {
            let id = chan_id(ShardId(shard), c);
            assert_eq!(shard_of(id), ShardId(shard));
            if shard != 0 {
                assert_ne!(id, chan_id(ShardId(0), c));
            }
        }
        // The connection's own bits stay below the shard byte.
        let big = ConnId::from_parts(u32::MAX, u32::MAX);
        assert_eq!(shard_of(chan_id(ShardId(255), big)), ShardId(255));
        assert_eq!(shard_of(chan_id(ShardId(0), big)), ShardId(0));
    }
}
