//! Cross-shard circuits: the routing decisions and bookkeeping, kept apart from the ring so
//! they can be tested without one.
//!
//! A circuit lives on the shard of its previous-hop channel (the *origin* shard), which owns
//! its keys. When its next hop's channel lives on another shard (the *channel* shard), the
//! two shards talk through their bounded SPSC queue ([`RelayMsg`]):
//!
//! * the origin sends [`RelayMsg::ExtendRequest`]; the channel shard reuses or opens the
//!   channel, allocates the circuit ID there, sends CREATE2 and answers with
//!   [`RelayMsg::ExtendReply`] (CREATED2 body, or why it failed);
//! * forward cells, already crypted on the origin, go as [`RelayMsg::Forward`] and are
//!   written on the channel as they are; backward cells arriving on the channel go back raw
//!   as [`RelayMsg::Backward`] and are crypted on the origin;
//! * DESTROY travels both ways the same way (tor-spec §"Tearing down circuits"); a channel
//!   that closes sends DESTROY to the origin of every circuit it carried;
//! * [`RelayMsg::ChanBlocked`] tells origins that a channel's output is full (and again
//!   when it is not), so their cores hold cells exactly as for a blocked local channel;
//! * [`RelayMsg::Hs`] carries the onion-service roles' messages core to core (intro and
//!   rendezvous tables on each key's home shard, spliced cells between shards).
//!
//! Channels are reused by relay identity: an open channel to the target on the circuit's own
//! shard is used as is (inbound or outbound); otherwise the identity's *owner shard*
//! ([`owner_shard`]) reuses or opens one, so one relay identity with N shards keeps one
//! outbound channel per peer relay.
//!
//! Queue full: cells are never dropped silently. Forward RELAY cells go back into the
//! origin core's pool (the circuit's next-hop queue: the memory cap and its eviction see
//! them) and the remote channel is treated as blocked until the queue drains to half; every
//! other message waits in a bounded per-destination overflow ([`CrossLink`]); the shard
//! charges each relay cell held there to its core's pool (so the memory cap covers it), and
//! a cell past the bound, or with no pool buffer left, closes its circuit with DESTROY
//! RESOURCELIMIT (counted).
//!
//! Messages that carry no cell are bounded too ([`Hold`]): a channel's blocked/unblocked
//! notices collapse to one per channel (its latest state); requests (an extend, a stray
//! non-RELAY cell of a proxied circuit) are refused past [`CrossLink`]'s request cap and
//! their circuit closed with RESOURCELIMIT; the answers and teardowns a shard must see
//! (DESTROY, the extend's outcome, onion-service and conflux control) are never refused —
//! losing one would leave the other shard's state wrong, and the cores have no way to take
//! one back — so past the cap they are held and counted, not capped. Most are one per
//! circuit, extend or registration; a conflux leg's state reports (one per SENDME) collapse
//! per leg like notices, without passing a later message of their leg
//! ([`Hold::LegState`]). The overflow gives back the room of a burst afterwards
//! ([`CrossLink::trim_spare`]).

use std::collections::{HashMap, VecDeque};

use crate::cell::chan::DestroyReason;
use crate::cell::{ChanCmd, CircId};
use crate::crypto::ids::RsaIdentity;
use crate::proto::circuit::hs_cross::HsMsg;
use crate::proto::circuit::{CellBody, ChanId, CircHandle, ConfluxMsg, ExtendTarget};
use crate::shard::{ConnId, ShardId};
use crate::util::spare::SpareWatch;

/// What shards send each other. Cell bodies travel by value (no allocation per cell).
#[derive(Debug, PartialEq, Eq)]
pub enum RelayMsg {
    /// Origin → owner shard: extend circuit `origin` to `target` with this CREATE2 body.
    ExtendRequest {
        origin: CircHandle,
        target: ExtendTarget,
        create2: CellBody,
    },
    /// Channel shard → origin: the extend's outcome. On success, `chan` and `circ_id` name
    /// the next hop (on the sending shard) and `body` is the CREATED2 body.
    ExtendReply {
        origin: CircHandle,
        result: Result<(ChanId, CircId), DestroyReason>,
        body: CellBody,
    },
    /// Origin → channel shard: write this cell on `chan` for `circ_id` (RELAY cells already
    /// carry the origin's crypto layer; DESTROY forgets the circuit there).
    Forward {
        chan: ChanId,
        circ_id: CircId,
        cmd: ChanCmd,
        body: CellBody,
    },
    /// Channel shard → origin: a cell that arrived from circuit `circ`'s next hop, raw.
    Backward {
        circ: CircHandle,
        cmd: ChanCmd,
        body: CellBody,
    },
    /// Channel shard → origin: the channel shard dropped circuit `circ`'s next hop itself
    /// (a cell of it met the overflow's request cap, `Sent::OverBound`) and sent the next
    /// hop DESTROY(`reason`). The origin closes the circuit with the same reason toward its
    /// previous hop: a local close, as C's `circuit_mark_for_close(reason)` sends its reason
    /// both ways. Unlike a `Backward` DESTROY from the next hop, which the origin answers
    /// with DESTROYED (0.4.9 never passes a remote reason on).
    NextHopClosed {
        circ: CircHandle,
        reason: DestroyReason,
    },
    /// Channel shard → origins: `chan`'s output is full (`true`) or takes cells again.
    ChanBlocked { chan: ChanId, blocked: bool },
    /// Core → core: the onion-service roles across shards (`proto::circuit::hs_cross`);
    /// spliced rendezvous cells travel here too and count as relay cells.
    Hs(HsMsg),
    /// Core → core: conflux legs and sets across shards (`proto::conflux::cross`); the
    /// multiplexed cells and SWITCHes of remote legs count as relay cells.
    Cfx(ConfluxMsg),
}

impl RelayMsg {
    /// Whether this message carries a relay cell (what the cell counters and the overflow
    /// cell bound count).
    pub fn is_relay_cell(&self) -> bool {
        match self {
            RelayMsg::Forward { cmd, .. } | RelayMsg::Backward { cmd, .. } => {
                matches!(*cmd, ChanCmd::RELAY | ChanCmd::RELAY_EARLY)
            }
            RelayMsg::Hs(m) => m.is_relay_cell(),
            RelayMsg::Cfx(m) => m.carries_cell(),
            _ => false,
        }
    }

    /// An onion-service message with a cell-sized body (INTRODUCE1/2, RENDEZVOUS1/2).
    pub fn is_hs_body(&self) -> bool {
        matches!(self, RelayMsg::Hs(m) if m.has_body())
    }

    /// Whether this message, held in an overflow, counts against its cell bound and takes
    /// a buffer of the shard's cell pool: relay cells and onion-service bodies.
    pub fn is_charged(&self) -> bool {
        self.is_relay_cell() || self.is_hs_body()
    }

    /// How a [`CrossLink`]'s overflow bounds this message.
    pub fn hold(&self) -> Hold {
        if self.is_charged() {
            return Hold::Charged;
        }
        match self {
            RelayMsg::ChanBlocked { chan, .. } => Hold::Notice(*chan),
            RelayMsg::Cfx(m) => match m.leg_state_of() {
                Some(leg) => Hold::LegState(leg),
                None => Hold::MustCarry,
            },
            RelayMsg::ExtendRequest { .. } => Hold::Request,
            // A next hop may send any command on a circuit ID (tor-spec §"Cell format");
            // only its DESTROY ends the circuit. The rest are the next hop's to flood.
            RelayMsg::Backward { cmd, .. } if *cmd != ChanCmd::DESTROY => Hold::Request,
            _ => Hold::MustCarry,
        }
    }
}

/// How an overflow bounds a message ([`RelayMsg::hold`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// A relay cell or onion-service body: counted against the cell bound and charged to
    /// the shard's cell pool.
    Charged,
    /// A channel's blocked/unblocked notice: at most one per channel waits; a later one
    /// overwrites its state in place (only the latest state matters to the origin).
    Notice(ChanId),
    /// A remote conflux leg's send state for its owner (`proto::conflux::cross`,
    /// `CfxMsg::LegState`, one per SENDME and per channel block or unblock): a full
    /// snapshot, so at most one per leg waits open; a later one replaces its content in
    /// place. In place keeps the leg's own order: once any other message of the leg (a
    /// cell, SWITCH, LINKED_ACK, its close) waits behind it, the waiting state is sealed
    /// and the next one waits at the back, so the owner sees the leg's messages in the
    /// order sent, minus superseded states. A state moves ahead only of other legs' and
    /// circuits' messages, which do not read this leg's snapshot. Waiting states are thus
    /// at most one per leg plus one per other message of the leg waiting (charged cells,
    /// bounded by the cell bound, and one LINKED_ACK and one close per leg).
    LegState(CircHandle),
    /// Something that starts work on the other shard: refused once the cap's worth of
    /// requests wait (counted apart from must-carry messages)
    /// ([`Sent::OverBound`]); the caller fails the extend or closes the circuit with
    /// RESOURCELIMIT.
    Request,
    /// An answer or a teardown the other shard must see (DESTROY, an extend's outcome,
    /// onion-service and conflux control): held even past the uncharged cap, counted in
    /// [`CrossLink::uncharged_over_cap`]. Not capped: refusing one would leave the other
    /// shard's circuit, extend or leg wrong, and the cores cannot take one back.
    MustCarry,
}

/// The shard that owns outbound channels to `rsa` among `shards`: the RSA identity (a
/// SHA-1 digest, so evenly spread) read as a big-endian number, modulo the shard count.
pub fn owner_shard(rsa: &RsaIdentity, shards: usize) -> usize {
    let mut first = [0u8; 8];
    first.copy_from_slice(&rsa.0[..8]);
    (u64::from_be_bytes(first) % shards.max(1) as u64) as usize
}

/// [`owner_shard`] as the shard type.
pub fn owner_shard_id(rsa: &RsaIdentity, shards: usize) -> ShardId {
    ShardId(owner_shard(rsa, shards))
}

/// Where an extend goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtendRoute {
    /// Over this open channel on our shard.
    Reuse(ConnId),
    /// Wait for this channel to the target that is still handshaking on our shard.
    Join(ConnId),
    /// Open a new outbound channel on our shard.
    Open,
    /// Ask the owner shard to reuse or open the channel.
    Remote(ShardId),
}

/// The extend decision (design card: "channels reused by relay identity"). `open` and
/// `opening` are this shard's channels to the target identity, if any. A request that came
/// from another shard (`for_other_shard`) is always served here: the owner rule sent it.
pub fn route_extend(
    open: Option<ConnId>,
    opening: Option<ConnId>,
    owner: ShardId,
    me: ShardId,
    for_other_shard: bool,
) -> ExtendRoute {
    if let Some(c) = open {
        return ExtendRoute::Reuse(c);
    }
    if let Some(c) = opening {
        return ExtendRoute::Join(c);
    }
    if owner == me || for_other_shard {
        ExtendRoute::Open
    } else {
        ExtendRoute::Remote(owner)
    }
}

/// Who an extend carried out on this shard is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtendFor {
    /// One of our own circuits.
    Local(CircHandle),
    /// A circuit of shard `shard`.
    Remote { shard: ShardId, circ: CircHandle },
}

/// Circuits of other shards whose next-hop channel lives here: (channel, circuit ID) →
/// (origin shard, the origin's circuit handle). Sized once; a full table refuses extends.
pub struct ProxyTable {
    map: HashMap<(ConnId, CircId), (ShardId, CircHandle)>,
    max: usize,
    /// Proxied circuits per channel (slot-indexed would need the table size; channels are
    /// few next to cells).
    per_conn: HashMap<ConnId, u32>,
}

impl ProxyTable {
    pub fn new(max: usize) -> Self {
        ProxyTable {
            map: HashMap::with_capacity(max.min(1 << 16)),
            max,
            per_conn: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Records a proxied circuit; false if the table is full or the key is taken.
    pub fn insert(&mut self, conn: ConnId, id: CircId, origin: ShardId, circ: CircHandle) -> bool {
        if self.map.len() >= self.max || self.map.contains_key(&(conn, id)) {
            return false;
        }
        self.map.insert((conn, id), (origin, circ));
        *self.per_conn.entry(conn).or_insert(0) += 1;
        true
    }

    pub fn get(&self, conn: ConnId, id: CircId) -> Option<(ShardId, CircHandle)> {
        self.map.get(&(conn, id)).copied()
    }

    pub fn contains(&self, conn: ConnId, id: CircId) -> bool {
        self.map.contains_key(&(conn, id))
    }

    pub fn remove(&mut self, conn: ConnId, id: CircId) -> Option<(ShardId, CircHandle)> {
        let v = self.map.remove(&(conn, id))?;
        if let Some(n) = self.per_conn.get_mut(&conn) {
            *n -= 1;
            if *n == 0 {
                self.per_conn.remove(&conn);
            }
        }
        Some(v)
    }

    /// Whether any circuit of another shard uses this channel.
    pub fn carries(&self, conn: ConnId) -> bool {
        self.per_conn.contains_key(&conn)
    }

    /// Forgets every circuit on a closed channel, returning (circuit ID, origin shard,
    /// origin handle) of each, for their DESTROY toward the origin.
    pub fn take_conn(&mut self, conn: ConnId, out: &mut Vec<(CircId, ShardId, CircHandle)>) {
        if self.per_conn.remove(&conn).is_none() {
            return;
        }
        self.map.retain(|&(c, id), &mut (shard, circ)| {
            if c == conn {
                out.push((id, shard, circ));
                false
            } else {
                true
            }
        });
    }
}

/// Where a [`CrossLink`] pushes: the shard's cross queue toward one destination.
pub trait CrossQueue {
    /// `Err(msg)` when the queue is full. (The message comes back by value, as from the
    /// SPSC ring: boxing it would allocate per cell.)
    #[allow(clippy::result_large_err)]
    fn try_push(&mut self, msg: RelayMsg) -> Result<(), RelayMsg>;
    /// Free slots now (may under-estimate).
    fn free(&mut self) -> usize;
    fn capacity(&mut self) -> usize;
}

/// What became of a message given to [`CrossLink::send`].
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// In the queue.
    Queued,
    /// Waits in the overflow (the queue was full or older messages wait).
    Held,
    /// A forward RELAY cell the link will not take now: the caller gives it back to the
    /// circuit core (which holds it in its pool) and treats the channel as blocked.
    GiveBack(RelayMsg),
    /// The overflow's cell bound (a charged message) or request cap (a request) is
    /// reached: the caller closes the circuit or fails the extend, RESOURCELIMIT.
    OverBound(RelayMsg),
}

/// Sending toward one other shard: the overflow and the congestion state.
pub struct CrossLink {
    overflow: VecDeque<RelayMsg>,
    /// Charged messages in `overflow` ([`RelayMsg::is_charged`], bounded by `max_cells`).
    cells: usize,
    max_cells: usize,
    /// Onion-service bodies among them, bounded by `max_hs_bodies` (a quarter of the
    /// cells, so a burst of INTRODUCE1s cannot take the room spliced cells need).
    hs_bodies: usize,
    max_hs_bodies: usize,
    /// A push failed and the queue has not yet drained to half: forward cells go back to
    /// the core and their channels count as blocked.
    congested: bool,
    /// Remote channels our core was told are blocked because of this link.
    blocked_chans: Vec<ChanId>,
    /// Our channels whose reading paused because of this link.
    paused_conns: Vec<ConnId>,
    pub full_events: u64,
    /// Messages ever popped from the overflow's front: with it, `notice_at` names an
    /// overflow position that stays valid while the front drains.
    popped: u64,
    /// The channels with a notice waiting in the overflow, and where (`popped` + index).
    notice_at: HashMap<ChanId, u64>,
    /// The conflux legs with an open (not sealed, see [`Hold::LegState`]) state waiting in
    /// the overflow, and where (`popped` + index).
    leg_state_at: HashMap<CircHandle, u64>,
    /// Conflux leg states waiting in the overflow (open and sealed).
    leg_states: usize,
    /// The open leg state the last held message sealed, and where: so that
    /// [`CrossLink::unhold_last`] taking that message back reopens it (else the leg's next
    /// state would wait at the back for nothing, one more each time, past the bound
    /// [`Hold::LegState`] states).
    sealed_by_last: Option<(CircHandle, u64)>,
    /// Requests and must-carry messages waiting (notices and charged ones not counted).
    uncharged: usize,
    /// Requests waiting (counted apart: a burst of must-carry teardowns must not make every
    /// extend toward the other shard fail).
    requests: usize,
    /// Past this many waiting requests, requests are refused; past this many uncharged
    /// messages, must-carry ones are counted as over the cap.
    max_uncharged: usize,
    /// Notices (channel blocked/unblocked, conflux leg states) folded into one already
    /// waiting.
    pub notices_collapsed: u64,
    /// Requests refused at the cap (`max_uncharged` requests waiting).
    pub uncharged_refused: u64,
    /// Must-carry messages held while the uncharged cap was reached.
    pub uncharged_over_cap: u64,
    /// Most uncharged messages (requests and must-carry) the overflow held at once.
    pub uncharged_peak: usize,
    /// When the overflow and the position tables became oversized ([`CrossLink::trim_spare`]).
    spare: [SpareWatch; 3],
}

/// The overflow's starting room and the floor it is shrunk back to: a link that never
/// overflows keeps only this (a `RelayMsg` is a cell body and a few words, about 0.6 KiB);
/// a burst grows it by doubling, and [`CrossLink::trim_spare`] gives the room back after.
const OVERFLOW_FLOOR: usize = 64;

/// Cells a link to one shard holds, ring slots and overflow together, before a charged
/// message (a proxied relay cell, a spliced onion-service cell, a conflux cell) is refused
/// and its circuit or set closed: the generic profile's 4,096-slot ring plus the
/// 4,096-cell overflow the node always had.
pub const CROSS_HEADROOM_CELLS: usize = 8192;

/// The overflow bound for a link whose ring holds `ring` slots: at least `min_overflow`,
/// and enough that ring and overflow together hold [`CROSS_HEADROOM_CELLS`]. With many
/// shards each ring is smaller (`relay::shardcfg::cross_queue_capacity`), and the overflow
/// makes up the difference, so a burst that fit before still fits; the overflow grows only
/// when used and every relay cell in it is charged to the cell pool (`MaxMemInQueues`).
pub fn overflow_cells_for(ring: usize, min_overflow: usize) -> usize {
    min_overflow.max(CROSS_HEADROOM_CELLS.saturating_sub(ring))
}

/// Requests and must-carry messages a link's overflow holds before it refuses a request
/// (review finding L4; before, the cap was the cell bound, 4,096 to 8,192 messages of about
/// 0.6 KiB each, not charged to the cell pool: up to ~4.4 MiB per link). Requests are one per
/// circuit extend, and an origin shard makes extends no faster than it answers CREATE2s
/// (~150 µs per ntor handshake: under 7,000 a second), so 1,024 waiting on top of the ring
/// covers the owner shard not draining at all for about 150 ms at that rate, far longer
/// than one of its loop iterations; past that the owner is overloaded, and refusing the
/// extend with RESOURCELIMIT is what C tor does when it cannot take one. ~0.6 MiB a link.
pub const CROSS_UNCHARGED_CAP: usize = 1024;

impl CrossLink {
    /// A link whose overflow holds at most `max_cells` charged messages and
    /// `min(max_cells, CROSS_UNCHARGED_CAP)` requests and must-carry messages before it
    /// refuses a request ([`CROSS_UNCHARGED_CAP`]; see [`Hold`]).
    pub fn new(max_cells: usize) -> Self {
        Self::with_caps(max_cells, max_cells.min(CROSS_UNCHARGED_CAP))
    }

    /// As [`CrossLink::new`], with the uncharged cap given apart.
    pub fn with_caps(max_cells: usize, max_uncharged: usize) -> Self {
        CrossLink {
            overflow: VecDeque::with_capacity(OVERFLOW_FLOOR),
            cells: 0,
            max_cells,
            hs_bodies: 0,
            max_hs_bodies: (max_cells / 4).max(1),
            congested: false,
            blocked_chans: Vec::new(),
            paused_conns: Vec::new(),
            full_events: 0,
            popped: 0,
            notice_at: HashMap::new(),
            leg_state_at: HashMap::new(),
            leg_states: 0,
            sealed_by_last: None,
            uncharged: 0,
            requests: 0,
            max_uncharged: max_uncharged.max(1),
            notices_collapsed: 0,
            uncharged_refused: 0,
            uncharged_over_cap: 0,
            uncharged_peak: 0,
            spare: Default::default(),
        }
    }

    /// Messages waiting in the overflow.
    pub fn depth(&self) -> usize {
        self.overflow.len()
    }

    pub fn is_congested(&self) -> bool {
        self.congested
    }

    /// Sends `msg`, keeping the order of everything given to this link (except forward
    /// RELAY cells handed back, which the core re-emits in their own order).
    pub fn send(&mut self, q: &mut dyn CrossQueue, msg: RelayMsg) -> Sent {
        let forward_cell = matches!(msg, RelayMsg::Forward { .. }) && msg.is_relay_cell();
        if forward_cell && self.congested {
            return Sent::GiveBack(msg);
        }
        let msg = if self.overflow.is_empty() {
            match q.try_push(msg) {
                Ok(()) => return Sent::Queued,
                Err(m) => {
                    self.full_events += 1;
                    self.congested = true;
                    m
                }
            }
        } else {
            msg
        };
        if forward_cell {
            return Sent::GiveBack(msg);
        }
        match msg.hold() {
            Hold::Charged => {
                let body = msg.is_hs_body();
                if self.cells >= self.max_cells || (body && self.hs_bodies >= self.max_hs_bodies) {
                    return Sent::OverBound(msg);
                }
                self.cells += 1;
                self.hs_bodies += usize::from(body);
            }
            Hold::Notice(chan) => {
                if let RelayMsg::ChanBlocked { blocked, .. } = msg {
                    if let Some(waiting) = self.waiting_notice(chan) {
                        // The origin acts only on a channel's latest state (its blocked
                        // set), so the newer state takes the waiting one's place: never
                        // more than one notice per channel, and a blocked-then-unblocked
                        // pair ends unblocked.
                        *waiting = blocked;
                        self.notices_collapsed += 1;
                        return Sent::Held;
                    }
                }
                let at = self.popped + self.overflow.len() as u64;
                self.notice_at.insert(chan, at);
            }
            Hold::LegState(leg) => {
                if let Some(i) = self.waiting_leg_state(leg) {
                    // The leg's latest snapshot supersedes the waiting one, and nothing of
                    // the leg waits behind it (else it would be sealed): take its place.
                    self.overflow[i] = msg;
                    self.notices_collapsed += 1;
                    return Sent::Held;
                }
                let at = self.popped + self.overflow.len() as u64;
                self.leg_state_at.insert(leg, at);
                self.leg_states += 1;
            }
            Hold::Request => {
                if self.requests >= self.max_uncharged {
                    self.uncharged_refused += 1;
                    return Sent::OverBound(msg);
                }
                self.requests += 1;
                self.note_uncharged();
            }
            Hold::MustCarry => {
                if self.uncharged >= self.max_uncharged {
                    self.uncharged_over_cap += 1;
                }
                self.note_uncharged();
            }
        }
        self.sealed_by_last = self.seal_leg_state(&msg);
        self.overflow.push_back(msg);
        Sent::Held
    }

    /// A message of a conflux leg other than its state now waits behind the leg's open
    /// state: seal that state, so a later one cannot move ahead of this message. Returns
    /// the state sealed and where it waits.
    fn seal_leg_state(&mut self, msg: &RelayMsg) -> Option<(CircHandle, u64)> {
        let RelayMsg::Cfx(m) = msg else { return None };
        if m.leg_state_of().is_some() {
            return None;
        }
        let leg = m.from_leg()?;
        let at = self.leg_state_at.remove(&leg)?;
        Some((leg, at))
    }

    /// The overflow index of `leg`'s open state, if one waits.
    fn waiting_leg_state(&self, leg: CircHandle) -> Option<usize> {
        let at = *self.leg_state_at.get(&leg)?;
        let i = usize::try_from(at.checked_sub(self.popped)?).ok()?;
        match self.overflow.get(i) {
            Some(RelayMsg::Cfx(m)) if m.leg_state_of() == Some(leg) => Some(i),
            _ => None,
        }
    }

    /// The state of `chan`'s notice waiting in the overflow, if one does.
    fn waiting_notice(&mut self, chan: ChanId) -> Option<&mut bool> {
        let at = *self.notice_at.get(&chan)?;
        let i = usize::try_from(at.checked_sub(self.popped)?).ok()?;
        match self.overflow.get_mut(i) {
            Some(RelayMsg::ChanBlocked { chan: c, blocked }) if *c == chan => Some(blocked),
            _ => None,
        }
    }

    fn note_uncharged(&mut self) {
        self.uncharged += 1;
        self.uncharged_peak = self.uncharged_peak.max(self.uncharged);
    }

    /// Forgets the bookkeeping of a message (`hold`, and whether it is an onion-service
    /// `body`) that just left the overflow from position `at` (`popped` + index).
    fn unaccount(&mut self, hold: Hold, body: bool, at: u64) {
        match hold {
            Hold::Charged => {
                self.cells -= 1;
                self.hs_bodies -= usize::from(body);
            }
            Hold::Notice(chan) => {
                self.notice_at.remove(&chan);
            }
            Hold::LegState(leg) => {
                self.leg_states -= 1;
                // A sealed state leaving does not end the leg's open one behind it.
                if self.leg_state_at.get(&leg) == Some(&at) {
                    self.leg_state_at.remove(&leg);
                }
            }
            Hold::Request => {
                self.requests -= 1;
                self.uncharged -= 1;
            }
            Hold::MustCarry => self.uncharged -= 1,
        }
    }

    /// Notes a remote channel the core was told is blocked because of this link.
    pub fn note_blocked(&mut self, chan: ChanId) {
        if !self.blocked_chans.contains(&chan) {
            self.blocked_chans.push(chan);
        }
    }

    /// Notes a channel of ours whose reading paused because of this link.
    pub fn note_paused(&mut self, conn: ConnId) {
        if !self.paused_conns.contains(&conn) {
            self.paused_conns.push(conn);
        }
    }

    /// Moves overflow into the queue. Once the overflow is empty and the queue is at least
    /// half free, the link is no longer congested: the channels to unblock and the reads to
    /// resume are appended to `unblock` and `resume`.
    pub fn pump(
        &mut self,
        q: &mut dyn CrossQueue,
        unblock: &mut Vec<ChanId>,
        resume: &mut Vec<ConnId>,
    ) {
        while let Some(m) = self.overflow.pop_front() {
            let hold = m.hold();
            let body = m.is_hs_body();
            match q.try_push(m) {
                Ok(()) => {
                    self.unaccount(hold, body, self.popped);
                    self.popped += 1;
                }
                Err(m) => {
                    self.overflow.push_front(m);
                    return;
                }
            }
        }
        if self.congested && q.free() * 2 >= q.capacity() {
            self.congested = false;
        }
        if !self.congested {
            unblock.append(&mut self.blocked_chans);
            resume.append(&mut self.paused_conns);
        }
    }

    /// Charged messages (relay cells, onion-service bodies) waiting in the overflow: the
    /// pool buffers the shard holds for this link.
    pub fn held_cells(&self) -> usize {
        self.cells
    }

    /// Onion-service bodies waiting in the overflow.
    pub fn held_hs_bodies(&self) -> usize {
        self.hs_bodies
    }

    /// Takes back the message [`CrossLink::send`] just held (the caller could not account
    /// for it after all).
    pub fn unhold_last(&mut self) -> Option<RelayMsg> {
        let m = self.overflow.pop_back()?;
        let at = self.popped + self.overflow.len() as u64;
        self.unaccount(m.hold(), m.is_hs_body(), at);
        // Nothing of the leg waits behind the state this message sealed any more: reopen
        // it, if it still waits (it may have been pumped since).
        if let Some((leg, state_at)) = self.sealed_by_last.take() {
            self.leg_state_at.insert(leg, state_at);
            if self.waiting_leg_state(leg).is_none() {
                self.leg_state_at.remove(&leg);
            }
        }
        Some(m)
    }

    /// Requests and must-carry messages waiting in the overflow.
    pub fn held_uncharged(&self) -> usize {
        self.uncharged
    }

    /// Requests waiting in the overflow (refused at the cap).
    pub fn held_requests(&self) -> usize {
        self.requests
    }

    /// Notices waiting in the overflow (at most one per channel).
    pub fn held_notices(&self) -> usize {
        self.notice_at.len()
    }

    /// Conflux leg states waiting in the overflow ([`Hold::LegState`]).
    pub fn held_leg_states(&self) -> usize {
        self.leg_states
    }

    /// Gives back the overflow's spare room after a burst: called from the shard's
    /// once-a-second housekeeping (`relay::node::memory`), it shrinks the overflow and its
    /// position tables when their capacity has stayed [`crate::util::spare::RATIO`] times over their use
    /// for [`crate::util::spare::AFTER`]. One O(1) look per buffer; a shrink
    /// reallocates once, never per message. True if one was shrunk.
    pub fn trim_spare(&mut self, now: std::time::Instant) -> bool {
        let [o, n, l] = &mut self.spare;
        let a = o.check(&mut self.overflow, OVERFLOW_FLOOR, now);
        let b = n.check(&mut self.notice_at, 0, now);
        let c = l.check(&mut self.leg_state_at, 0, now);
        a | b | c
    }

    /// Whether [`CrossLink::pump`] has anything to do.
    pub fn needs_pump(&self) -> bool {
        self.congested || !self.overflow.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::CELL_BODY_LEN;

    /// A bounded queue standing in for the SPSC ring.
    struct TestQueue {
        items: VecDeque<RelayMsg>,
        cap: usize,
    }

    impl CrossQueue for TestQueue {
        #[allow(clippy::result_large_err)]
        fn try_push(&mut self, msg: RelayMsg) -> Result<(), RelayMsg> {
            if self.items.len() >= self.cap {
                return Err(msg);
            }
            self.items.push_back(msg);
            Ok(())
        }
        fn free(&mut self) -> usize {
            self.cap - self.items.len()
        }
        fn capacity(&mut self) -> usize {
            self.cap
        }
    }

    fn conn(slot: u32) -> ConnId {
        ConnId { slot, gen: 1 }
    }

    fn circ(idx: u32) -> CircHandle {
        CircHandle { idx, gen: 7 }
    }

    fn fwd(n: u8, cmd: ChanCmd) -> RelayMsg {
        RelayMsg::Forward {
            chan: ChanId(9),
            circ_id: CircId(0x8000_0001),
            cmd,
            body: [n; CELL_BODY_LEN],
        }
    }

    fn back(n: u8) -> RelayMsg {
        RelayMsg::Backward {
            circ: circ(1),
            cmd: ChanCmd::RELAY,
            body: [n; CELL_BODY_LEN],
        }
    }

    fn first_byte(m: &RelayMsg) -> u8 {
        match m {
            RelayMsg::Forward { body, .. } | RelayMsg::Backward { body, .. } => body[0],
            _ => 0,
        }
    }

    #[test]
    fn owner_shard_is_stable_and_spread() {
        let mut id = RsaIdentity([0; 20]);
        assert_eq!(owner_shard(&id, 2), 0);
        id.0[7] = 1;
        assert_eq!(owner_shard(&id, 2), 1);
        assert_eq!(owner_shard(&id, 1), 0);
        assert_eq!(owner_shard(&id, 0), 0, "no shards: no panic");
        // Identities spread over both shards (SHA-1 digests of keys; here, varied bytes).
        let mut seen = [0usize; 4];
        for b in 0..=255u8 {
            let mut id = RsaIdentity([b; 20]);
            id.0[0] = b.wrapping_mul(31);
            seen[owner_shard(&id, 4)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 30), "{seen:?}");
    }

    #[test]
    fn extend_reuses_local_channels_before_the_owner_rule() {
        // An open channel on our shard (even an inbound one) wins, whoever owns the id.
        assert_eq!(
            route_extend(Some(conn(3)), None, ShardId(1), ShardId(0), false),
            ExtendRoute::Reuse(conn(3))
        );
        assert_eq!(
            route_extend(None, Some(conn(4)), ShardId(1), ShardId(0), false),
            ExtendRoute::Join(conn(4))
        );
        assert_eq!(
            route_extend(None, None, ShardId(0), ShardId(0), false),
            ExtendRoute::Open
        );
        assert_eq!(
            route_extend(None, None, ShardId(1), ShardId(0), false),
            ExtendRoute::Remote(ShardId(1))
        );
        // A request another shard sent us is never bounced again.
        assert_eq!(
            route_extend(None, None, ShardId(1), ShardId(0), true),
            ExtendRoute::Open
        );
    }

    #[test]
    fn proxy_table_tracks_channels_and_bounds() {
        let mut t = ProxyTable::new(2);
        assert!(t.insert(conn(1), CircId(0x8000_0001), ShardId(1), circ(5)));
        assert!(
            !t.insert(conn(1), CircId(0x8000_0001), ShardId(1), circ(6)),
            "key taken"
        );
        assert!(t.insert(conn(2), CircId(0x8000_0002), ShardId(0), circ(6)));
        assert!(
            !t.insert(conn(2), CircId(0x8000_0003), ShardId(0), circ(7)),
            "table full"
        );
        assert!(t.carries(conn(1)) && t.carries(conn(2)));
        assert_eq!(
            t.get(conn(1), CircId(0x8000_0001)),
            Some((ShardId(1), circ(5)))
        );
        let mut closed = Vec::new();
        t.take_conn(conn(1), &mut closed);
        assert_eq!(closed, vec![(CircId(0x8000_0001), ShardId(1), circ(5))]);
        assert!(!t.carries(conn(1)));
        assert_eq!(
            t.remove(conn(2), CircId(0x8000_0002)),
            Some((ShardId(0), circ(6)))
        );
        assert!(t.is_empty() && !t.carries(conn(2)));
        assert_eq!(t.remove(conn(2), CircId(0x8000_0002)), None);
    }

    #[test]
    fn full_queue_gives_forward_cells_back_and_holds_the_rest_in_order() {
        let mut q = TestQueue {
            items: VecDeque::new(),
            cap: 4,
        };
        let mut link = CrossLink::new(3);
        for n in 0..4 {
            assert_eq!(link.send(&mut q, fwd(n, ChanCmd::RELAY)), Sent::Queued);
        }
        // Full: the forward cell goes back to the core, the link is congested.
        assert!(matches!(
            link.send(&mut q, fwd(4, ChanCmd::RELAY)),
            Sent::GiveBack(m) if first_byte(&m) == 4
        ));
        assert!(link.is_congested());
        assert_eq!(link.full_events, 1);
        link.note_blocked(ChanId(9));
        // While congested, forward cells go back without trying the queue.
        assert!(matches!(
            link.send(&mut q, fwd(5, ChanCmd::RELAY)),
            Sent::GiveBack(_)
        ));
        // DESTROY and backward cells are held, in order; cells up to the bound.
        assert_eq!(link.send(&mut q, fwd(6, ChanCmd::DESTROY)), Sent::Held);
        for n in 7..10 {
            assert_eq!(link.send(&mut q, back(n)), Sent::Held);
        }
        assert!(matches!(link.send(&mut q, back(10)), Sent::OverBound(_)));
        assert_eq!((link.depth(), link.held_cells()), (4, 3));
        // The caller may take the last held message back (it could not charge it).
        assert_eq!(link.unhold_last().as_ref().map(first_byte), Some(9));
        assert_eq!((link.depth(), link.held_cells()), (3, 2));
        assert_eq!(link.send(&mut q, back(9)), Sent::Held);
        assert_eq!(link.depth(), 4);

        // The consumer takes one: pumping moves one message, still congested.
        let (mut unblock, mut resume) = (Vec::new(), Vec::new());
        assert_eq!(first_byte(&q.items.pop_front().unwrap()), 0);
        link.pump(&mut q, &mut unblock, &mut resume);
        assert_eq!(link.depth(), 3);
        assert!(link.is_congested() && unblock.is_empty());
        // The consumer drains everything: the overflow moves, but the link stays congested
        // until the queue is half free again (hysteresis).
        q.items.clear();
        link.pump(&mut q, &mut unblock, &mut resume);
        assert_eq!(link.depth(), 0);
        assert!(link.is_congested(), "queue holds 3 of 4");
        let order: Vec<u8> = q.items.iter().map(first_byte).collect();
        assert_eq!(order, vec![7, 8, 9], "held messages keep their order");
        q.items.pop_front();
        q.items.pop_front();
        link.pump(&mut q, &mut unblock, &mut resume);
        assert!(!link.is_congested() && !link.needs_pump());
        assert_eq!(unblock, vec![ChanId(9)]);
        // Forward cells are accepted again.
        assert_eq!(link.send(&mut q, fwd(11, ChanCmd::RELAY)), Sent::Queued);
    }

    fn intro1(n: u8) -> RelayMsg {
        use crate::proto::circuit::hs_cross::CircRef;
        use crate::proto::circuit::ShardIdx;
        RelayMsg::Hs(HsMsg::Introduce1 {
            client: CircRef {
                shard: ShardIdx(0),
                circ: circ(u32::from(n)),
            },
            key: [n; 32],
            len: 10,
            body: [n; crate::cell::relay::v0::MAX_DATA_LEN],
        })
    }

    /// Onion-service messages with a body wait in the overflow charged (they count in
    /// `held_cells`, which the shard charges to its pool) and bounded: at most a quarter
    /// of the cell bound, and never past the cell bound; small answers stay unbounded.
    #[test]
    fn hs_bodies_in_the_overflow_are_charged_and_bounded() {
        let mut q = TestQueue {
            items: VecDeque::new(),
            cap: 1,
        };
        let mut link = CrossLink::new(8);
        assert_eq!(link.send(&mut q, intro1(0)), Sent::Queued);
        assert_eq!(link.send(&mut q, intro1(1)), Sent::Held);
        assert_eq!(link.send(&mut q, intro1(2)), Sent::Held);
        assert_eq!((link.held_cells(), link.held_hs_bodies()), (2, 2));
        // A quarter of 8: the third body is refused, a relay cell still fits.
        assert!(matches!(
            link.send(&mut q, intro1(3)),
            Sent::OverBound(RelayMsg::Hs(HsMsg::Introduce1 { key, .. })) if key[0] == 3
        ));
        let ack = RelayMsg::Hs(HsMsg::IntroduceAck {
            client: circ(1),
            status: crate::proto::hs::cells::AckStatus::SUCCESS,
        });
        assert_eq!(link.send(&mut q, ack), Sent::Held);
        for n in 0..6 {
            assert_eq!(link.send(&mut q, back(n)), Sent::Held);
        }
        assert_eq!((link.depth(), link.held_cells()), (9, 8));
        // The cell bound covers bodies and cells together.
        assert!(matches!(link.send(&mut q, back(9)), Sent::OverBound(_)));
        // Taken back and pumped, the counts go down with the messages.
        assert!(matches!(
            link.unhold_last(),
            Some(RelayMsg::Backward { .. })
        ));
        assert_eq!(link.held_cells(), 7);
        let (mut unblock, mut resume) = (Vec::new(), Vec::new());
        q.items.clear();
        link.pump(&mut q, &mut unblock, &mut resume);
        assert_eq!((link.held_cells(), link.held_hs_bodies()), (6, 1));
        q.items.clear();
        link.pump(&mut q, &mut unblock, &mut resume);
        assert_eq!((link.held_cells(), link.held_hs_bodies()), (5, 0));
        assert_eq!(link.send(&mut q, intro1(4)), Sent::Held);
        assert_eq!(link.held_hs_bodies(), 1);
    }

    #[test]
    fn paused_reads_resume_when_the_link_drains() {
        let mut q = TestQueue {
            items: VecDeque::new(),
            cap: 2,
        };
        let mut link = CrossLink::new(16);
        assert_eq!(link.send(&mut q, back(1)), Sent::Queued);
        assert_eq!(link.send(&mut q, back(2)), Sent::Queued);
        assert_eq!(link.send(&mut q, back(3)), Sent::Held);
        link.note_paused(conn(5));
        link.note_paused(conn(5));
        let (mut unblock, mut resume) = (Vec::new(), Vec::new());
        link.pump(&mut q, &mut unblock, &mut resume);
        assert!(resume.is_empty());
        q.items.clear();
        link.pump(&mut q, &mut unblock, &mut resume);
        assert_eq!(resume, vec![conn(5)]);
        assert_eq!(q.items.len(), 1);
    }

    #[test]
    fn smaller_rings_get_a_larger_overflow() {
        // The generic profile's ring with two shards: the overflow stays as it was.
        assert_eq!(overflow_cells_for(4096, 4096), 4096);
        // Rings lowered with the shard count (512 at 32 shards, 128 at 128+): ring and
        // overflow together still hold the headroom.
        for ring in [2048, 512, 256, 128] {
            let o = overflow_cells_for(ring, 4096);
            assert_eq!(ring + o, CROSS_HEADROOM_CELLS, "{ring}");
        }
        // A large profile's ring: never below the node's minimum.
        assert_eq!(overflow_cells_for(16384, 4096), 4096);
        // No queue (the link to ourselves): the bound is still finite.
        assert_eq!(overflow_cells_for(0, 4096), CROSS_HEADROOM_CELLS);
    }

    fn test_seed(name: &str) -> u64 {
        let seed = std::env::var("FORS_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random);
        println!("{name}: seed {seed} (rerun with FORS_TEST_SEED={seed})");
        seed
    }

    fn notice(chan: u64, blocked: bool) -> RelayMsg {
        RelayMsg::ChanBlocked {
            chan: ChanId(chan),
            blocked,
        }
    }

    fn extend_request(n: u32) -> RelayMsg {
        RelayMsg::ExtendRequest {
            origin: circ(n),
            target: ExtendTarget {
                ipv4: None,
                ipv6: None,
                rsa: RsaIdentity([n as u8; 20]),
                ed: None,
            },
            create2: [n as u8; CELL_BODY_LEN],
        }
    }

    /// A cell-shaped message numbered `n` (in its body's first four bytes).
    fn numbered(n: u32, cmd: ChanCmd, forward: bool) -> RelayMsg {
        let mut body = [0; CELL_BODY_LEN];
        body[..4].copy_from_slice(&n.to_le_bytes());
        if forward {
            RelayMsg::Forward {
                chan: ChanId(9),
                circ_id: CircId(0x8000_0001),
                cmd,
                body,
            }
        } else {
            RelayMsg::Backward {
                circ: circ(n),
                cmd,
                body,
            }
        }
    }

    fn back_cmd(n: u32, cmd: ChanCmd) -> RelayMsg {
        numbered(n, cmd, false)
    }

    /// The number a flood message carries.
    fn number(m: &RelayMsg) -> u32 {
        match m {
            RelayMsg::ExtendRequest { origin, .. } | RelayMsg::ExtendReply { origin, .. } => {
                origin.idx
            }
            RelayMsg::Backward { body, .. } | RelayMsg::Forward { body, .. } => {
                u32::from_le_bytes([body[0], body[1], body[2], body[3]])
            }
            _ => u32::MAX,
        }
    }

    fn extend_reply(n: u32) -> RelayMsg {
        RelayMsg::ExtendReply {
            origin: circ(n),
            result: Err(DestroyReason::ResourceLimit),
            body: [0; CELL_BODY_LEN],
        }
    }

    /// What the origin does with notices (`node::proxy`, `RelayMsg::ChanBlocked`): a set
    /// of blocked channels, one state per channel.
    fn apply_notice(blocked: &mut HashMap<ChanId, bool>, m: &RelayMsg) {
        if let RelayMsg::ChanBlocked { chan, blocked: b } = m {
            blocked.insert(*chan, *b);
        }
    }

    /// A flood of blocked/unblocked notices for a few channels into a link whose ring is
    /// full (and now and then drained a little): the overflow holds at most one notice
    /// per channel, the other messages keep their order, and once everything is delivered
    /// every channel's state at the origin is the last one sent.
    #[test]
    fn notice_flood_collapses_to_one_per_channel_and_ends_in_the_latest_state() {
        use rand::{Rng, SeedableRng};
        let seed = test_seed("notice_flood_collapses_to_one_per_channel");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        const CHANS: u64 = 16;
        const NOTICES: usize = 200_000;
        let mut q = TestQueue {
            items: VecDeque::new(),
            cap: 8,
        };
        let mut link = CrossLink::new(4096);
        let mut origin: HashMap<ChanId, bool> = HashMap::new();
        let mut last_sent: HashMap<ChanId, bool> = HashMap::new();
        // The channel shard only sends a change: each channel alternates.
        let mut state = [false; CHANS as usize];
        let (mut sent_cells, mut seen_cells) = (0u32, Vec::new());
        let mut max_notices = 0;
        let (mut unblock, mut resume) = (Vec::new(), Vec::new());
        for i in 0..NOTICES {
            let c = rng.gen_range(0..CHANS);
            state[c as usize] = !state[c as usize];
            last_sent.insert(ChanId(c), state[c as usize]);
            let sent = link.send(&mut q, notice(c, state[c as usize]));
            assert!(matches!(sent, Sent::Queued | Sent::Held), "i {i}");
            // Now and then a backward cell between the notices (its order is checked).
            if rng.gen_ratio(1, 64) && sent_cells < 1000 {
                let m = RelayMsg::Backward {
                    circ: circ(sent_cells),
                    cmd: ChanCmd::RELAY,
                    body: [0; CELL_BODY_LEN],
                };
                let sent = link.send(&mut q, m);
                assert!(matches!(sent, Sent::Queued | Sent::Held), "i {i}");
                sent_cells += 1;
            }
            max_notices = max_notices.max(link.held_notices());
            assert!(link.held_notices() <= CHANS as usize, "i {i}");
            assert!(link.depth() <= CHANS as usize + 1000, "i {i}");
            assert_eq!(link.held_uncharged(), 0, "notices are not requests");
            // The consumer drains part of the ring now and then.
            if rng.gen_ratio(1, 100) {
                for _ in 0..rng.gen_range(0..=q.cap) {
                    let Some(m) = q.items.pop_front() else { break };
                    apply_notice(&mut origin, &m);
                    if let RelayMsg::Backward { circ, .. } = m {
                        seen_cells.push(circ.idx);
                    }
                }
                link.pump(&mut q, &mut unblock, &mut resume);
            }
        }
        assert!(link.notices_collapsed > 0 && max_notices > 1);
        // Drain everything.
        for _ in 0..100_000 {
            while let Some(m) = q.items.pop_front() {
                apply_notice(&mut origin, &m);
                if let RelayMsg::Backward { circ, .. } = m {
                    seen_cells.push(circ.idx);
                }
            }
            link.pump(&mut q, &mut unblock, &mut resume);
            if !link.needs_pump() && q.items.is_empty() {
                break;
            }
        }
        assert_eq!(
            (link.depth(), link.held_notices(), link.held_cells()),
            (0, 0, 0)
        );
        assert_eq!(
            origin, last_sent,
            "every channel ends in the latest state sent"
        );
        assert_eq!(
            seen_cells,
            (0..sent_cells).collect::<Vec<_>>(),
            "cells keep their order"
        );
        println!(
            "{NOTICES} notices, {} collapsed, at most {max_notices} waiting",
            link.notices_collapsed
        );
    }

    /// A blocked-then-unblocked pair behind a full ring never leaves the channel blocked,
    /// and a pair split by a pump (the first already in the ring) keeps its order.
    #[test]
    fn blocked_then_unblocked_is_never_lost() {
        let mut q = TestQueue {
            items: VecDeque::new(),
            cap: 1,
        };
        let mut link = CrossLink::new(8);
        assert_eq!(link.send(&mut q, back(0)), Sent::Queued);
        assert_eq!(link.send(&mut q, notice(3, true)), Sent::Held);
        assert_eq!(link.send(&mut q, back(1)), Sent::Held);
        assert_eq!(link.send(&mut q, notice(3, false)), Sent::Held);
        assert_eq!((link.depth(), link.held_notices()), (2, 1));
        let (mut unblock, mut resume) = (Vec::new(), Vec::new());
        let mut origin = HashMap::new();
        // The ring takes one message at a time: the notice (now "unblocked") goes first.
        q.items.clear();
        link.pump(&mut q, &mut unblock, &mut resume);
        let m = q.items.pop_front().unwrap();
        assert_eq!(m, notice(3, false));
        apply_notice(&mut origin, &m);
        // A new "blocked" after the first left the overflow waits behind the cell.
        assert_eq!(link.send(&mut q, notice(3, true)), Sent::Held);
        assert_eq!(link.send(&mut q, notice(3, false)), Sent::Held);
        assert_eq!(link.notices_collapsed, 2);
        link.pump(&mut q, &mut unblock, &mut resume);
        assert_eq!(first_byte(&q.items.pop_front().unwrap()), 1);
        link.pump(&mut q, &mut unblock, &mut resume);
        let m = q.items.pop_front().unwrap();
        apply_notice(&mut origin, &m);
        assert_eq!(origin.get(&ChanId(3)), Some(&false));
        assert_eq!((link.depth(), link.held_notices()), (0, 0));
    }

    /// A burst of teardowns past the cap (a channel with many proxied circuits closing) does
    /// not make extends toward the other shard fail: requests have their own count.
    #[test]
    fn must_carry_burst_does_not_refuse_requests() {
        const CAP: usize = 16;
        let mut q = TestQueue {
            items: VecDeque::new(),
            cap: 0,
        };
        let mut link = CrossLink::with_caps(64, CAP);
        for n in 0..(4 * CAP as u32) {
            assert!(matches!(
                link.send(&mut q, numbered(n, ChanCmd::DESTROY, true)),
                Sent::Held
            ));
        }
        assert_eq!(link.uncharged_over_cap, 3 * CAP as u64);
        for n in 0..CAP as u32 {
            assert!(
                matches!(link.send(&mut q, extend_request(1000 + n)), Sent::Held),
                "request {n} refused behind teardowns"
            );
        }
        assert!(matches!(
            link.send(&mut q, extend_request(2000)),
            Sent::OverBound(_)
        ));
        assert_eq!((link.held_requests(), link.uncharged_refused), (CAP, 1));
    }

    /// A seeded flood of uncharged messages of every kind behind a full ring: requests
    /// (extends, stray non-RELAY cells of proxied circuits) are refused exactly at the cap,
    /// counted; answers and teardowns (DESTROY, extend replies) are never refused; the
    /// overflow's uncharged count never passes the cap through a request; and when the ring
    /// drains every held message comes out, in order, with the counts back at zero.
    #[test]
    fn uncharged_flood_is_capped_and_only_requests_are_refused() {
        use rand::{Rng, SeedableRng};
        let seed = test_seed("uncharged_flood_is_capped");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        const CAP: usize = 512;
        const FLOOD: u32 = 50_000;
        let mut q = TestQueue {
            items: VecDeque::new(),
            cap: 4,
        };
        let mut link = CrossLink::with_caps(64, CAP);
        let (mut unblock, mut resume) = (Vec::new(), Vec::new());
        // Every message the link took (queued or held), and every one the consumer saw.
        let (mut accepted, mut taken) = (Vec::new(), Vec::new());
        let (mut refused, mut must_carry_held) = (0u64, 0u64);
        for n in 0..FLOOD {
            let m = match rng.gen_range(0..5) {
                0 => extend_request(n),
                1 => back_cmd(n, ChanCmd::CREATED2),
                2 => back_cmd(n, ChanCmd::DESTROY),
                3 => numbered(n, ChanCmd::DESTROY, true),
                _ => extend_reply(n),
            };
            let hold = m.hold();
            assert_ne!(hold, Hold::Charged);
            let at_cap = link.held_uncharged() >= CAP;
            let requests_at_cap = link.held_requests() >= CAP;
            let before = link.held_uncharged();
            match link.send(&mut q, m) {
                Sent::Queued => accepted.push(n),
                Sent::Held => {
                    accepted.push(n);
                    if hold == Hold::MustCarry && at_cap {
                        must_carry_held += 1;
                    }
                    assert_eq!(link.held_uncharged(), before + 1);
                }
                Sent::OverBound(back) => {
                    assert_eq!(hold, Hold::Request, "only requests are refused (n {n})");
                    assert!(requests_at_cap, "refused below the cap (n {n})");
                    assert_eq!(number(&back), n, "the refused message comes back");
                    refused += 1;
                }
                Sent::GiveBack(_) => panic!("no forward RELAY cell in this flood"),
            }
            // Requests never pass the cap (must-carry ones do not count toward it: a request
            // is refused only with CAP requests waiting, checked above).
            assert!(link.held_requests() <= CAP, "n {n}");
            // The consumer takes a few now and then, never enough to keep up.
            if rng.gen_ratio(1, 50) {
                for _ in 0..rng.gen_range(1..=4) {
                    if let Some(m) = q.items.pop_front() {
                        taken.push(number(&m));
                    }
                }
                link.pump(&mut q, &mut unblock, &mut resume);
            }
        }
        assert_eq!(link.uncharged_refused, refused);
        assert_eq!(link.uncharged_over_cap, must_carry_held);
        assert!(refused > 0, "the flood reached the cap");
        assert!(link.uncharged_peak >= CAP);
        assert_eq!(link.held_cells(), 0, "nothing charged");
        println!(
            "{FLOOD} uncharged: {refused} requests refused, {must_carry_held} must-carry held \
             past the cap {CAP}, peak {}",
            link.uncharged_peak
        );
        // Everything taken comes out, in order, and the counts go back to zero.
        for _ in 0..FLOOD {
            while let Some(m) = q.items.pop_front() {
                taken.push(number(&m));
            }
            link.pump(&mut q, &mut unblock, &mut resume);
            if !link.needs_pump() && q.items.is_empty() {
                break;
            }
        }
        assert_eq!((link.depth(), link.held_uncharged()), (0, 0));
        assert_eq!(taken, accepted, "nothing lost, nothing reordered");
    }

    /// A refused request leaves no trace, a must-carry message past the cap is held and
    /// counted, and taking the last one back frees its place.
    #[test]
    fn the_uncharged_cap_refuses_requests_but_holds_teardowns() {
        let mut q = TestQueue {
            items: VecDeque::new(),
            cap: 1,
        };
        let mut link = CrossLink::with_caps(8, 2);
        assert_eq!(link.send(&mut q, back(0)), Sent::Queued);
        assert_eq!(link.send(&mut q, extend_request(1)), Sent::Held);
        assert_eq!(
            link.send(&mut q, back_cmd(2, ChanCmd::CREATED2)),
            Sent::Held
        );
        assert!(matches!(
            link.send(&mut q, extend_request(3)),
            Sent::OverBound(RelayMsg::ExtendRequest { origin, .. }) if origin.idx == 3
        ));
        assert!(matches!(
            link.send(&mut q, back_cmd(4, ChanCmd::CREATE2)),
            Sent::OverBound(_)
        ));
        // DESTROY both ways and an extend's outcome are held past the cap.
        assert_eq!(link.send(&mut q, back_cmd(5, ChanCmd::DESTROY)), Sent::Held);
        assert_eq!(link.send(&mut q, fwd(6, ChanCmd::DESTROY)), Sent::Held);
        assert_eq!(link.send(&mut q, extend_reply(7)), Sent::Held);
        // Notices and charged cells have their own bounds.
        assert_eq!(link.send(&mut q, notice(1, true)), Sent::Held);
        assert_eq!(link.send(&mut q, back(8)), Sent::Held);
        assert_eq!(
            (
                link.uncharged_refused,
                link.uncharged_over_cap,
                link.held_uncharged()
            ),
            (2, 3, 5)
        );
        assert_eq!(
            (link.held_cells(), link.held_notices(), link.depth()),
            (1, 1, 7)
        );
        assert!(matches!(
            link.unhold_last(),
            Some(RelayMsg::Backward { .. })
        ));
        assert!(matches!(
            link.unhold_last(),
            Some(RelayMsg::ChanBlocked { .. })
        ));
        assert!(matches!(
            link.unhold_last(),
            Some(RelayMsg::ExtendReply { .. })
        ));
        assert_eq!(
            (
                link.held_cells(),
                link.held_notices(),
                link.held_uncharged()
            ),
            (0, 0, 4)
        );
        // Still at the cap: requests are refused until the ring drains.
        assert!(matches!(
            link.send(&mut q, extend_request(9)),
            Sent::OverBound(_)
        ));
        let (mut unblock, mut resume) = (Vec::new(), Vec::new());
        for _ in 0..8 {
            q.items.clear();
            link.pump(&mut q, &mut unblock, &mut resume);
        }
        assert_eq!(link.held_uncharged(), 0);
        q.items.clear();
        assert_eq!(link.send(&mut q, extend_request(10)), Sent::Queued);
        assert_eq!(link.uncharged_peak, 5);
    }

    fn leg(idx: u32) -> crate::proto::conflux::cross::LegRef<CircHandle> {
        crate::proto::conflux::cross::LegRef {
            shard: 1,
            circ: circ(idx),
        }
    }

    /// A leg state numbered `seq` (in `sends_done`).
    fn leg_state(l: u32, seq: u64) -> RelayMsg {
        let state = crate::proto::conflux::LegSendState {
            cwnd: 124,
            inflight: seq % 124,
            blocked_on_chan: seq.is_multiple_of(3),
        };
        RelayMsg::Cfx(ConfluxMsg::leg_state_for_tests(
            leg(l),
            state,
            1000 + seq,
            seq,
        ))
    }

    /// Another message of leg `l` numbered `seq` (in the RTT): one the owner orders with
    /// the leg's states.
    fn linked_ack(l: u32, seq: u64) -> RelayMsg {
        RelayMsg::Cfx(ConfluxMsg::linked_ack_for_tests(leg(l), seq))
    }

    /// What the owner sees of a leg's message: (leg, sequence number, is a state).
    fn leg_msg(m: &RelayMsg) -> Option<(u32, u64, bool)> {
        let RelayMsg::Cfx(c) = m else { return None };
        if let Some((l, _, _, seq)) = c.read_leg_state_for_tests() {
            return Some((l.circ.idx, seq, true));
        }
        // The only other leg message these tests send is LINKED_ACK, numbered by its RTT.
        let (l, seq) = c.read_linked_ack_for_tests()?;
        Some((l.circ.idx, seq, false))
    }

    /// Review finding L3: a flood of conflux leg states for several legs into a full ring
    /// (drained a little now and then). Phase one sends only states: at most one per leg
    /// waits. Phase two mixes in each leg's LINKED_ACKs (which a later state must not pass)
    /// and backward cells: waiting states stay within one per leg plus one per LINKED_ACK
    /// waiting. Throughout, each leg's messages reach the owner in the order sent (states
    /// only dropped when superseded, nothing else dropped), and once all is delivered each
    /// leg's last state seen is the last one sent.
    #[test]
    fn leg_state_flood_collapses_per_leg_and_keeps_each_legs_order() {
        use rand::{Rng, SeedableRng};
        let seed = test_seed("leg_state_flood_collapses_per_leg");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        const LEGS: u32 = 12;
        const PER_PHASE: usize = 100_000;
        let mut q = TestQueue {
            items: VecDeque::new(),
            cap: 8,
        };
        let mut link = CrossLink::with_caps(4096, 64);
        let mut seq = 0u64;
        let mut last_state_sent: HashMap<u32, u64> = HashMap::new();
        let mut acks_sent: Vec<(u32, u64)> = Vec::new();
        // The owner: last sequence number seen per leg, last state per leg, acks seen.
        let mut seen_last: HashMap<u32, u64> = HashMap::new();
        let mut state_seen: HashMap<u32, u64> = HashMap::new();
        let mut acks_seen: Vec<(u32, u64)> = Vec::new();
        let (mut sent_cells, mut seen_cells) = (0u32, Vec::new());
        let mut deliver = |m: RelayMsg, seen_cells: &mut Vec<u32>| {
            if let RelayMsg::Backward { circ, .. } = m {
                seen_cells.push(circ.idx);
                return;
            }
            let (l, n, is_state) = leg_msg(&m).expect("only leg messages and cells");
            let prev = seen_last.insert(l, n);
            assert!(prev.is_none_or(|p| p < n), "leg {l}: {n} after {prev:?}");
            if is_state {
                state_seen.insert(l, n);
            } else {
                acks_seen.push((l, n));
            }
        };
        let (mut unblock, mut resume) = (Vec::new(), Vec::new());
        let (mut max_states, mut max_states_pure) = (0, 0);
        for phase in 0..2 {
            for i in 0..PER_PHASE {
                let l = rng.gen_range(0..LEGS);
                seq += 1;
                let m = if phase == 1 && rng.gen_ratio(1, 40) {
                    acks_sent.push((l, seq));
                    linked_ack(l, seq)
                } else {
                    last_state_sent.insert(l, seq);
                    leg_state(l, seq)
                };
                let sent = link.send(&mut q, m);
                assert!(matches!(sent, Sent::Queued | Sent::Held), "i {i}");
                if phase == 1 && rng.gen_ratio(1, 64) && sent_cells < 1000 {
                    let m = RelayMsg::Backward {
                        circ: circ(sent_cells),
                        cmd: ChanCmd::RELAY,
                        body: [0; CELL_BODY_LEN],
                    };
                    assert!(matches!(link.send(&mut q, m), Sent::Queued | Sent::Held));
                    sent_cells += 1;
                }
                // LINKED_ACKs are the only uncharged messages here.
                let acks_waiting = link.held_uncharged();
                assert!(
                    link.held_leg_states() <= LEGS as usize + acks_waiting,
                    "phase {phase} i {i}: {} states, {acks_waiting} acks waiting",
                    link.held_leg_states()
                );
                if phase == 0 {
                    assert!(link.held_leg_states() <= LEGS as usize, "i {i}");
                    max_states_pure = max_states_pure.max(link.held_leg_states());
                }
                max_states = max_states.max(link.held_leg_states());
                if rng.gen_ratio(1, 100) {
                    for _ in 0..rng.gen_range(0..=q.cap) {
                        let Some(m) = q.items.pop_front() else { break };
                        deliver(m, &mut seen_cells);
                    }
                    link.pump(&mut q, &mut unblock, &mut resume);
                }
            }
        }
        for _ in 0..100_000 {
            while let Some(m) = q.items.pop_front() {
                deliver(m, &mut seen_cells);
            }
            link.pump(&mut q, &mut unblock, &mut resume);
            if !link.needs_pump() && q.items.is_empty() {
                break;
            }
        }
        assert_eq!(
            (link.depth(), link.held_leg_states(), link.held_uncharged()),
            (0, 0, 0)
        );
        assert!(link.leg_state_at.is_empty());
        assert_eq!(
            state_seen, last_state_sent,
            "each leg ends in its last state"
        );
        acks_seen.sort_unstable();
        acks_sent.sort_unstable();
        assert_eq!(acks_seen, acks_sent, "no other leg message is dropped");
        assert_eq!(seen_cells, (0..sent_cells).collect::<Vec<_>>());
        assert!(link.notices_collapsed > 0 && max_states_pure > 1);
        println!(
            "{} leg states and {} LINKED_ACKs of {LEGS} legs: {} collapsed, at most \
             {max_states_pure} waiting with states alone, {max_states} with acks",
            2 * PER_PHASE - acks_sent.len(),
            acks_sent.len(),
            link.notices_collapsed
        );
    }

    /// A state waiting behind which another message of its leg was queued is sealed: the
    /// next state waits at the back, never ahead of that message; another leg's state
    /// still folds into its own.
    #[test]
    fn a_leg_state_never_passes_a_later_message_of_its_leg() {
        let mut q = TestQueue {
            items: VecDeque::new(),
            cap: 1,
        };
        let mut link = CrossLink::new(16);
        assert_eq!(link.send(&mut q, back(0)), Sent::Queued);
        for m in [
            leg_state(1, 1),
            leg_state(2, 2),
            linked_ack(1, 3),
            leg_state(1, 4),
            leg_state(2, 5),
            leg_state(1, 6),
        ] {
            assert_eq!(link.send(&mut q, m), Sent::Held);
        }
        assert_eq!(link.held_leg_states(), 3, "1 sealed, 1 open, 2 open");
        assert_eq!(link.notices_collapsed, 2);
        let mut got = Vec::new();
        let (mut unblock, mut resume) = (Vec::new(), Vec::new());
        for _ in 0..10 {
            q.items.clear();
            link.pump(&mut q, &mut unblock, &mut resume);
            if let Some(m) = q.items.front() {
                got.push(leg_msg(m).unwrap());
            }
        }
        assert_eq!(
            got,
            vec![(1, 1, true), (2, 5, true), (1, 3, false), (1, 6, true)]
        );
        assert_eq!(link.held_leg_states(), 0);
        assert!(link.leg_state_at.is_empty());
    }

    /// A message of a leg taken back with `unhold_last` (its cell could not be charged)
    /// no longer waits behind the leg's state: the state it sealed is open again, so the
    /// leg's next state folds into it instead of waiting at the back, and states stay
    /// within one per leg. A state pumped in between is not reopened.
    #[test]
    fn unhold_last_reopens_the_state_its_message_sealed() {
        let mut q = TestQueue {
            items: VecDeque::new(),
            cap: 1,
        };
        let mut link = CrossLink::new(16);
        assert_eq!(link.send(&mut q, back(0)), Sent::Queued);
        assert_eq!(link.send(&mut q, leg_state(1, 1)), Sent::Held);
        for round in 0..50u64 {
            assert_eq!(link.send(&mut q, linked_ack(1, 100 + round)), Sent::Held);
            assert!(link.unhold_last().is_some());
            assert_eq!(link.send(&mut q, leg_state(1, 2 + round)), Sent::Held);
            assert_eq!(link.held_leg_states(), 1, "round {round}");
        }
        // Taking back a message that sealed nothing leaves another leg's seal alone.
        assert_eq!(link.send(&mut q, linked_ack(1, 7)), Sent::Held);
        assert_eq!(link.send(&mut q, back(1)), Sent::Held);
        assert!(link.unhold_last().is_some());
        assert_eq!(link.send(&mut q, leg_state(1, 60)), Sent::Held);
        assert_eq!(link.held_leg_states(), 2, "sealed behind the LINKED_ACK");
        // A sealed state pumped out before the take-back is not reopened.
        let mut link = CrossLink::new(16);
        let mut q = TestQueue {
            items: VecDeque::new(),
            cap: 1,
        };
        assert_eq!(link.send(&mut q, leg_state(2, 1)), Sent::Queued);
        assert_eq!(link.send(&mut q, back(0)), Sent::Held);
        assert_eq!(link.send(&mut q, leg_state(2, 2)), Sent::Held);
        assert_eq!(link.send(&mut q, linked_ack(2, 9)), Sent::Held);
        let (mut unblock, mut resume) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            q.items.clear();
            link.pump(&mut q, &mut unblock, &mut resume);
        }
        assert_eq!(link.depth(), 1, "only the LINKED_ACK waits");
        assert!(link.unhold_last().is_some());
        assert!(
            link.leg_state_at.is_empty(),
            "the pumped state is not reopened"
        );
        assert_eq!(link.held_leg_states(), 0);
    }

    /// Review finding L4: after a burst the overflow and its tables give their room back,
    /// once they have stayed oversized for `util::spare::AFTER`.
    #[test]
    fn the_overflow_gives_back_its_room_after_a_burst() {
        use std::time::Instant;
        let mut q = TestQueue {
            items: VecDeque::new(),
            cap: 1,
        };
        let mut link = CrossLink::new(8192);
        assert!(
            link.overflow.capacity() < 4 * OVERFLOW_FLOOR,
            "nothing reserved up front"
        );
        assert_eq!(link.send(&mut q, back(0)), Sent::Queued);
        for i in 0..5000u32 {
            assert_eq!(link.send(&mut q, back_cmd(i, ChanCmd::DESTROY)), Sent::Held);
            assert_eq!(
                link.send(&mut q, notice(u64::from(i), i % 2 == 0)),
                Sent::Held
            );
        }
        let burst = link.overflow.capacity();
        assert!(burst >= 10_000 && link.notice_at.capacity() >= 5000);
        let (mut unblock, mut resume) = (Vec::new(), Vec::new());
        for _ in 0..10_001 {
            q.items.clear();
            link.pump(&mut q, &mut unblock, &mut resume);
        }
        assert_eq!(link.depth(), 0);
        let t0 = Instant::now();
        assert!(!link.trim_spare(t0), "first sight starts the clock");
        assert!(!link.trim_spare(t0 + crate::util::spare::AFTER / 2));
        assert!(link.trim_spare(t0 + crate::util::spare::AFTER));
        assert!(link.overflow.capacity() < 4 * OVERFLOW_FLOOR);
        assert!(link.notice_at.capacity() < 64);
        println!(
            "overflow room {burst} -> {} messages ({} B each)",
            link.overflow.capacity(),
            std::mem::size_of::<RelayMsg>()
        );
        // A link still busy keeps its room.
        assert_eq!(link.send(&mut q, back(0)), Sent::Queued);
        for i in 0..1000u32 {
            assert_eq!(link.send(&mut q, back_cmd(i, ChanCmd::DESTROY)), Sent::Held);
        }
        let busy = link.overflow.capacity();
        assert!(!link.trim_spare(t0 + 3 * crate::util::spare::AFTER));
        assert_eq!(link.overflow.capacity(), busy);
    }
}
