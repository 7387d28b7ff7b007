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

use std::collections::{HashMap, VecDeque};

use crate::cell::chan::DestroyReason;
use crate::cell::{ChanCmd, CircId};
use crate::crypto::ids::RsaIdentity;
use crate::proto::circuit::hs_cross::HsMsg;
use crate::proto::circuit::{CellBody, ChanId, CircHandle, ConfluxMsg, ExtendTarget};
use crate::shard::{ConnId, ShardId};

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
    /// The overflow's cell bound is reached: the cell's circuit must be closed.
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
}

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

impl CrossLink {
    pub fn new(max_cells: usize) -> Self {
        CrossLink {
            overflow: VecDeque::with_capacity(max_cells.min(1 << 12)),
            cells: 0,
            max_cells,
            hs_bodies: 0,
            max_hs_bodies: (max_cells / 4).max(1),
            congested: false,
            blocked_chans: Vec::new(),
            paused_conns: Vec::new(),
            full_events: 0,
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
        if msg.is_charged() {
            let body = msg.is_hs_body();
            if self.cells >= self.max_cells || (body && self.hs_bodies >= self.max_hs_bodies) {
                return Sent::OverBound(msg);
            }
            self.cells += 1;
            self.hs_bodies += usize::from(body);
        }
        self.overflow.push_back(msg);
        Sent::Held
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
            let (charged, body) = (m.is_charged(), m.is_hs_body());
            match q.try_push(m) {
                Ok(()) => {
                    self.cells -= usize::from(charged);
                    self.hs_bodies -= usize::from(body);
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
        self.cells -= usize::from(m.is_charged());
        self.hs_bodies -= usize::from(m.is_hs_body());
        Some(m)
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
}
