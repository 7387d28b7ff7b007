//! The exit's linked conflux sets (prop 329; C tor 0.4.9 `conflux_pool.c` server side and
//! `conflux.c`): legs joined by nonce, sequence numbers, the out-of-order (OOO) queue, leg
//! close and set teardown, and the choice of the leg to send on.
//!
//! One [`ConfluxSets`] holds the sets whose home is one shard (see [`super::home_shard`]).
//! It only decides: every method takes the facts it needs (the circuit handle `C`, whether
//! congestion control was negotiated, `now`) and returns what the caller must do (send this
//! LINKED, deliver this message, close these circuits). Cells travel between shards in the
//! caller's cross-shard queues.
//!
//! Refusals: when a method returns [`Refused`], this module has already forgotten the refused
//! leg (and, for a teardown, the whole set); the caller closes the circuits it names. A later
//! [`ConfluxSets::leg_closed`] for those circuits is a no-op, so a close racing a teardown
//! cannot touch freed state (the class of C tor bugs fixed as TROVE-2023-007,
//! TROVE-2026-014 and bug 41162).
//!
//! Memory: the OOO queue of a set is a directory of pages, indexed by absolute sequence
//! number (one page per [`OOO_PAGE`] numbers, the directory covering
//! [`Limits::ooo_window`]), whose entries are slots of one per-shard pool of
//! [`Limits::ooo_pool_cells`] messages. Pages come from a per-shard page pool (reserved
//! for one page per pool cell, 260 bytes each, and touched as used) and go back to its free
//! list when their last cell leaves, so a page in use holds at least one cell: a cell far
//! ahead costs one page, not room for the distance. The directory (2 KiB) is made at the
//! set's first held cell and kept until the set is freed, so a set that ever held a cell
//! costs 2 KiB more, bounded by [`Limits::max_sets`]. Nothing is allocated per cell.

use std::collections::HashMap;
use std::hash::Hash;

use super::cells::{ConfluxCellError, DesiredUx, Link, Nonce, Switch};
use super::should_multiplex;
use crate::cell::chan::DestroyReason;
use crate::cell::relay::RelayCmd;

/// C tor's default and Fors's hard cap on legs per set (`cfx_max_legs_set`, default 8).
pub const MAX_LEGS: usize = 8;

/// The UX an exit asks of the client in LINKED (C tor `DEFAULT_EXIT_UX`).
pub const EXIT_DESIRED_UX: DesiredUx = DesiredUx::MinLatency;

/// How the exit picks the leg for a multiplexed cell (C tor `conflux_alg_t`). C tor's exit
/// chooses from the client's desired UX ([`Alg::for_ux`]); CWNDRTT is never chosen by it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Alg {
    /// Only the leg with the lowest RTT; if it cannot send, send nothing.
    MinRtt,
    /// The lowest-RTT leg among those whose congestion window has room.
    LowRtt,
}

impl Alg {
    /// C tor `conflux_choose_algorithm`: no opinion and high throughput get LowRTT;
    /// min latency and both low-memory UXs get MinRTT.
    pub const fn for_ux(ux: DesiredUx) -> Alg {
        match ux {
            DesiredUx::NoOpinion | DesiredUx::HighThroughput => Alg::LowRtt,
            DesiredUx::MinLatency | DesiredUx::LowMemLatency | DesiredUx::LowMemThroughput => {
                Alg::MinRtt
            }
        }
    }
}

/// Bounds of one shard's table. C tor has no exit-side limit on sets and caps the OOO
/// queue only in bytes (`cfx_max_oooq_bytes`, default 2^31-1, so in practice by
/// MaxMemInQueues); Fors bounds both in cells.
///
/// How far ahead an honest client's cells run is not small: the client sends on whichever
/// leg has room, and the exit acknowledges each leg as cells arrive, so while one leg's
/// cells are delayed (a busy middle) the other keeps sending at full rate: 10 MB/s for
/// 0.2 s is ~5,000 cells ahead. A 2,048-cell window closed such sets (seen with C tor
/// 0.4.9 clients on a loaded private network, where C tor carries them). One set may thus
/// hold up to the whole pool, which bounds the shard (in C tor, its OOM handler does).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Linked sets at once; a LINK for a new set beyond this closes its circuit with
    /// RESOURCELIMIT.
    pub max_sets: usize,
    /// Legs per set, at most [`MAX_LEGS`] (`cfx_max_legs_set`).
    pub max_legs: usize,
    /// How far beyond the next expected sequence number a cell may be held. A cell further
    /// ahead closes its circuit with RESOURCELIMIT, as C tor does when the queue is full
    /// (the cells held stay bounded by `ooo_pool_cells`).
    pub ooo_window: u32,
    /// Held cells over all sets of the shard; when full, the next cell to be held closes its
    /// circuit with RESOURCELIMIT.
    pub ooo_pool_cells: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sets: 1024,
            max_legs: MAX_LEGS,
            ooo_window: 32 * 1024,
            ooo_pool_cells: 32 * 1024,
        }
    }
}

/// What the caller knows about the circuit a conflux cell arrived on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LegFacts {
    /// `cfx_enabled` is 1 and congestion control was negotiated on this circuit (C tor
    /// `conflux_is_enabled`: conflux cannot work without it).
    pub enabled: bool,
    /// The circuit is extended beyond this relay, so the cell did not come from the hop
    /// the set joins at (C tor `conflux_validate_source_hop`).
    pub has_next_hop: bool,
    /// Streams are attached to the circuit (LINK must come on a fresh circuit:
    /// TROVE-2026-025).
    pub has_streams: bool,
    /// At least one SENDME increment of data is unacknowledged on this circuit; closing
    /// such a leg tears the set down (C tor `cfx_del_leg`).
    pub data_in_flight: bool,
}

/// The send state of one leg, from its congestion control and channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegSendState {
    pub cwnd: u64,
    pub inflight: u64,
    /// The channel towards the client has no room.
    pub blocked_on_chan: bool,
}

impl LegSendState {
    /// C tor `circuit_ready_to_send`.
    const fn ready(&self) -> bool {
        self.inflight < self.cwnd && !self.blocked_on_chan
    }
}

/// A handle to a leg, valid until the leg is closed or its set torn down.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct LegId {
    set: u32,
    gen: u32,
    leg: u8,
}

/// A set, valid until it is torn down or loses its last leg (slot and generation): what
/// a shard's streams of the set are keyed by when the set outlives any one leg.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SetKey {
    set: u32,
    gen: u32,
}

impl SetKey {
    /// The set's slot in its table, below `Limits::max_sets`: for per-set arrays the
    /// caller sizes once (the key itself, with its generation, says whether it is current).
    pub fn slot(self) -> usize {
        self.set as usize
    }
}

/// Circuits the caller must close, each with `reason`. Fixed size: a set never has more
/// than [`MAX_LEGS`] legs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Teardown<C> {
    circs: [Option<C>; MAX_LEGS],
    pub reason: DestroyReason,
}

impl<C: Copy> Teardown<C> {
    fn none() -> Self {
        Teardown {
            circs: [None; MAX_LEGS],
            reason: DestroyReason::None,
        }
    }

    /// The circuits to close.
    pub fn circs(&self) -> impl Iterator<Item = C> + '_ {
        self.circs.iter().flatten().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.circs.iter().all(Option::is_none)
    }
}

/// A refused conflux cell: close the circuit it came on with `this`, and every circuit in
/// `others` with its reason.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Refused<C> {
    pub this: DestroyReason,
    pub others: Teardown<C>,
    pub why: RefuseWhy,
}

/// Why a conflux cell was refused (for logs and metrics; the wire only sees the reason).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RefuseWhy {
    /// Conflux is off, or congestion control was not negotiated on this circuit.
    NotEnabled,
    /// The circuit continues past this relay.
    NotLastHop,
    /// LINK on a circuit that is already a leg.
    AlreadyLinked,
    /// LINK on a circuit with attached streams (TROVE-2026-025).
    HasStreams,
    /// The LINK body did not parse.
    Malformed(ConfluxCellError),
    /// The set already has the maximum number of legs.
    TooManyLegs,
    /// The table holds [`Limits::max_sets`] sets.
    TooManySets,
    /// The client claims to have sent more than the exit delivered: data was lost.
    DataLoss,
    /// LINKED_ACK, SWITCH or LINKED on a circuit that is not a leg (or LINKED at an exit).
    NotLinked,
    /// A cell's sequence number was already delivered.
    SeqAlreadyDelivered,
    /// Two held cells with the same sequence number.
    SeqDuplicate,
    /// A sequence number overflowed 64 bits.
    SeqOverflow,
    /// A cell is further ahead than [`Limits::ooo_window`].
    OooWindow,
    /// The shard's OOO pool is full.
    OooPool,
}

/// A LINK was accepted: send `linked` as CONFLUX_LINKED on the circuit.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Linked {
    pub leg: LegId,
    pub linked: Link,
    /// This LINK created the set.
    pub new_set: bool,
}

/// What to do with a relay message that arrived on a circuit.
#[derive(Debug)]
pub enum Inbound<M, C> {
    /// Not a leg, or a command conflux does not sequence: process it as usual.
    NotSequenced(M),
    /// Next in order: process it, then take [`ConfluxSets::pop_ready`] until `None`.
    Deliver(M),
    /// Ahead of order; held in the OOO queue.
    Held,
    /// Close circuits as [`Refused`] says; the message is dropped.
    Refused(Refused<C>),
}

/// Where to send a relay message from the exit.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SendChoice<C> {
    /// Send on `circ`; first send `switch` as CONFLUX_SWITCH on it if set. Call
    /// [`ConfluxSets::note_sent`] once the message is sent.
    Send { circ: C, switch: Option<Switch> },
    /// No leg may send now (C tor returns no circuit; the stream waits).
    Blocked,
    /// The set is broken: close these circuits.
    Teardown(Teardown<C>),
}

/// Counters and gauges for metrics.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct ConfluxStats {
    pub sets: usize,
    pub legs: usize,
    pub held_cells: usize,
    /// OOO pages in use (at most one per held cell).
    pub ooo_pages: usize,
    pub sets_linked_total: u64,
    pub legs_linked_total: u64,
    pub links_refused_total: u64,
    pub switches_received_total: u64,
    pub switches_malformed_total: u64,
    pub switches_sent_total: u64,
    pub ooo_overflow_total: u64,
    pub teardowns_total: u64,
}

struct Leg<C> {
    circ: C,
    /// Highest absolute sequence number received on this leg (before delivery).
    last_seq_recv: u64,
    /// Highest absolute sequence number sent on this leg.
    last_seq_sent: u64,
    /// 0 until LINKED_ACK; `u64::MAX` if the clock did not advance (C tor "stalled").
    rtt_usec: u64,
    linked_sent_usec: u64,
}

struct Set<C> {
    nonce: Nonce,
    legs: [Option<Leg<C>>; MAX_LEGS],
    last_seq_delivered: u64,
    alg: Alg,
    curr: Option<u8>,
    prev: Option<u8>,
    held: u32,
}

impl<C: Copy> Set<C> {
    fn n_legs(&self) -> usize {
        self.legs.iter().flatten().count()
    }
    fn max_sent(&self) -> u64 {
        self.legs
            .iter()
            .flatten()
            .map(|l| l.last_seq_sent)
            .max()
            .unwrap_or(0)
    }
    fn max_recv(&self) -> u64 {
        self.legs
            .iter()
            .flatten()
            .map(|l| l.last_seq_recv)
            .max()
            .unwrap_or(0)
    }
    fn leg(&mut self, i: u8) -> &mut Leg<C> {
        self.legs[i as usize]
            .as_mut()
            .expect("leg slot checked by caller")
    }
}

struct SetSlot<C> {
    gen: u32,
    set: Option<Set<C>>,
    /// OOO directory: the page of sequence numbers `n * OOO_PAGE ..` at
    /// `n % dir.len()`, `EMPTY` when none. Made at the set's first held cell, dropped
    /// with the set.
    dir: Vec<u32>,
}

const EMPTY: u32 = u32::MAX;

/// Sequence numbers per OOO page.
pub const OOO_PAGE: usize = 64;

/// Held cells of [`OOO_PAGE`] consecutive sequence numbers: pool slots, `EMPTY` when none.
struct OooPage {
    slot: [u32; OOO_PAGE],
    used: u32,
}

struct PoolSlot<M> {
    msg: Option<M>,
    next_free: u32,
}

/// One shard's conflux sets. `C` is the caller's circuit handle, `M` the held message
/// (typically a handle to a pooled cell buffer; dropped when its set is torn down).
pub struct ConfluxSets<C, M> {
    limits: Limits,
    slots: Vec<SetSlot<C>>,
    free_sets: Vec<u32>,
    by_nonce: HashMap<Nonce, u32>,
    by_circ: HashMap<C, LegId>,
    pool: Vec<PoolSlot<M>>,
    pool_free: u32,
    /// OOO pages (live ones hold at least one cell, so at most `ooo_pool_cells`) and the
    /// free ones among them.
    pages: Vec<OooPage>,
    pages_free: Vec<u32>,
    stats: ConfluxStats,
}

impl<C: Copy + Eq + Hash, M> ConfluxSets<C, M> {
    /// A table with these bounds; `max_legs` is clamped to [`MAX_LEGS`] and the window and
    /// pool to at least 1.
    pub fn new(mut limits: Limits) -> Self {
        limits.max_legs = limits.max_legs.clamp(1, MAX_LEGS);
        limits.ooo_window = limits.ooo_window.max(1);
        limits.ooo_pool_cells = limits.ooo_pool_cells.clamp(1, EMPTY as usize - 1);
        ConfluxSets {
            limits,
            slots: Vec::with_capacity(limits.max_sets),
            free_sets: Vec::with_capacity(limits.max_sets),
            by_nonce: HashMap::with_capacity(limits.max_sets),
            by_circ: HashMap::with_capacity(limits.max_sets * limits.max_legs),
            pool: Vec::with_capacity(limits.ooo_pool_cells),
            pool_free: EMPTY,
            // Reserved now, touched only as pages are used: growing it on a cell's path would
            // copy it. Live pages hold a cell each, so the pool bounds them.
            pages: Vec::with_capacity(limits.ooo_pool_cells),
            pages_free: Vec::new(),
            stats: ConfluxStats::default(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn stats(&self) -> ConfluxStats {
        self.stats
    }

    /// The leg this circuit is, if any.
    pub fn leg_of(&self, circ: C) -> Option<LegId> {
        self.by_circ.get(&circ).copied()
    }

    /// Whether `id` still names a live leg: a message tagged with a leg handle that crossed
    /// shards may arrive after the leg closed and its set slot was reused.
    pub fn is_current(&self, id: LegId) -> bool {
        self.slots.get(id.set as usize).is_some_and(|s| {
            s.gen == id.gen
                && s.set
                    .as_ref()
                    .is_some_and(|set| set.legs[id.leg as usize].is_some())
        })
    }

    /// The set `circ` is a leg of.
    pub fn set_key(&self, circ: C) -> Option<SetKey> {
        self.leg_of(circ).map(|id| SetKey {
            set: id.set,
            gen: id.gen,
        })
    }

    /// Whether the set `key` names still exists.
    pub fn is_live(&self, key: SetKey) -> bool {
        self.slots
            .get(key.set as usize)
            .is_some_and(|s| s.gen == key.gen && s.set.is_some())
    }

    /// A leg of the live set `key` (the first by slot).
    pub fn any_leg(&self, key: SetKey) -> Option<C> {
        let slot = self.slots.get(key.set as usize)?;
        if slot.gen != key.gen {
            return None;
        }
        slot.set
            .as_ref()?
            .legs
            .iter()
            .flatten()
            .map(|l| l.circ)
            .next()
    }

    /// A leg of the set named `nonce`, if it exists.
    pub fn any_leg_of_nonce(&self, nonce: &Nonce) -> Option<C> {
        let &i = self.by_nonce.get(nonce)?;
        let s = self.slots.get(i as usize)?;
        self.any_leg(SetKey { set: i, gen: s.gen })
    }

    /// Whether a set named `nonce` exists.
    pub fn has_nonce(&self, nonce: &Nonce) -> bool {
        self.by_nonce.contains_key(nonce)
    }

    /// BEGIN_DIR on a leg is answered with END NOTDIRECTORY (TROVE-2026-008: directory
    /// streams are circuit-specific and must not ride a set).
    pub fn refuses_begin_dir(&self, circ: C) -> bool {
        self.by_circ.contains_key(&circ)
    }

    /// The set's nonce and number of legs, for the leg's circuit.
    pub fn set_of(&self, circ: C) -> Option<(Nonce, usize)> {
        let id = self.leg_of(circ)?;
        let set = self.slots[id.set as usize].set.as_ref()?;
        Some((set.nonce, set.n_legs()))
    }

    /// Every leg of `circ`'s set, `circ` included (none if it is not a leg). Fixed size: the
    /// caller walks a set's legs without allocating.
    pub fn legs_of(&self, circ: C) -> [Option<C>; MAX_LEGS] {
        let mut out = [None; MAX_LEGS];
        if let Some(set) = self
            .leg_of(circ)
            .and_then(|id| self.slots[id.set as usize].set.as_ref())
        {
            for (o, l) in out.iter_mut().zip(set.legs.iter()) {
                *o = l.as_ref().map(|l| l.circ);
            }
        }
        out
    }

    /// CONFLUX_LINK on `circ` (C tor `conflux_process_link`). At the exit a LINK links at
    /// once: the answer is LINKED carrying the set's highest sent and delivered sequence
    /// numbers, and cells may follow before the LINKED_ACK.
    pub fn on_link(
        &mut self,
        circ: C,
        facts: LegFacts,
        body: &[u8],
        now_usec: u64,
    ) -> Result<Linked, Refused<C>> {
        let r = self.link_inner(circ, facts, Err(body), now_usec);
        if r.is_err() {
            self.stats.links_refused_total += 1;
        }
        r
    }

    /// [`on_link`](Self::on_link) with the LINK already parsed (and the leg's own checks
    /// done) on the leg's shard: the join of a leg whose circuit is on another shard.
    pub fn on_link_parsed(
        &mut self,
        circ: C,
        facts: LegFacts,
        link: Link,
        now_usec: u64,
    ) -> Result<Linked, Refused<C>> {
        let r = self.link_inner(circ, facts, Ok(link), now_usec);
        if r.is_err() {
            self.stats.links_refused_total += 1;
        }
        r
    }

    /// Counts a LINK refused before it reached the table (on the leg's shard, or by the
    /// nonce directory).
    pub fn count_refused_link(&mut self) {
        self.stats.links_refused_total += 1;
    }

    fn link_inner(
        &mut self,
        circ: C,
        facts: LegFacts,
        body: Result<Link, &[u8]>,
        now_usec: u64,
    ) -> Result<Linked, Refused<C>> {
        use DestroyReason::{Internal, TorProtocol};
        if !facts.enabled {
            return Err(self.refuse_leg(circ, TorProtocol, RefuseWhy::NotEnabled, facts));
        }
        if facts.has_next_hop {
            return Err(self.refuse_leg(circ, TorProtocol, RefuseWhy::NotLastHop, facts));
        }
        if self.by_circ.contains_key(&circ) {
            return Err(self.refuse_leg(circ, TorProtocol, RefuseWhy::AlreadyLinked, facts));
        }
        if facts.has_streams {
            return Err(refused(TorProtocol, RefuseWhy::HasStreams));
        }
        let link = match body {
            Ok(l) => l,
            Err(b) => Link::parse(b).map_err(|e| refused(TorProtocol, RefuseWhy::Malformed(e)))?,
        };

        let (idx, new_set) = match self.by_nonce.get(&link.nonce) {
            Some(&i) => (i, false),
            None => {
                // A new set has delivered nothing: a client claiming to have sent data on
                // it lost that data (C tor `validate_unlinked_legs`).
                if link.last_seqno_sent > 0 {
                    return Err(refused(Internal, RefuseWhy::DataLoss));
                }
                (self.new_set(&link)?, true)
            }
        };
        let slot = &mut self.slots[idx as usize];
        let gen = slot.gen;
        let set = slot.set.as_mut().expect("indexed set exists");
        if set.n_legs() + 1 > self.limits.max_legs {
            return Err(refused(TorProtocol, RefuseWhy::TooManyLegs));
        }
        if link.last_seqno_sent > set.last_seq_delivered {
            // C tor tears down the set: the joining leg as an unlinked leg (INTERNAL), the
            // linked legs with TORPROTOCOL.
            let others = self.teardown_set(idx, TorProtocol);
            return Err(Refused {
                this: Internal,
                others,
                why: RefuseWhy::DataLoss,
            });
        }
        // LINKED carries the set's state before this leg joins.
        let linked = Link {
            nonce: link.nonce,
            last_seqno_sent: set.max_sent(),
            last_seqno_recv: set.last_seq_delivered,
            desired_ux: EXIT_DESIRED_UX,
        };
        let free = set
            .legs
            .iter()
            .position(Option::is_none)
            .expect("fewer than MAX_LEGS legs");
        set.legs[free] = Some(Leg {
            circ,
            // The peer's counters become ours mirrored (C tor `cfx_add_leg`).
            last_seq_recv: link.last_seqno_sent,
            last_seq_sent: link.last_seqno_recv,
            rtt_usec: 0,
            linked_sent_usec: now_usec,
        });
        // The latest LINK decides the algorithm, as in C tor.
        set.alg = Alg::for_ux(link.desired_ux);
        let id = LegId {
            set: idx,
            gen,
            leg: free as u8,
        };
        self.by_circ.insert(circ, id);
        self.stats.legs += 1;
        self.stats.legs_linked_total += 1;
        Ok(Linked {
            leg: id,
            linked,
            new_set,
        })
    }

    fn new_set(&mut self, link: &Link) -> Result<u32, Refused<C>> {
        let set = Set {
            nonce: link.nonce,
            legs: Default::default(),
            last_seq_delivered: 0,
            alg: Alg::for_ux(link.desired_ux),
            curr: None,
            prev: None,
            held: 0,
        };
        let idx = if let Some(i) = self.free_sets.pop() {
            let slot = &mut self.slots[i as usize];
            slot.gen = slot.gen.wrapping_add(1);
            slot.set = Some(set);
            i
        } else if self.slots.len() < self.limits.max_sets {
            self.slots.push(SetSlot {
                gen: 0,
                set: Some(set),
                dir: Vec::new(),
            });
            (self.slots.len() - 1) as u32
        } else {
            return Err(refused(
                DestroyReason::ResourceLimit,
                RefuseWhy::TooManySets,
            ));
        };
        self.by_nonce.insert(link.nonce, idx);
        self.stats.sets += 1;
        self.stats.sets_linked_total += 1;
        Ok(idx)
    }

    /// CONFLUX_LINKED_ACK on `circ`: the exit's RTT sample for the leg, from LINKED sent to
    /// this ACK (C tor `conflux_process_linked_ack`, `record_rtt_exit`).
    pub fn on_linked_ack(
        &mut self,
        circ: C,
        facts: LegFacts,
        now_usec: u64,
    ) -> Result<(), Refused<C>> {
        let id = self.check_leg(circ, facts)?;
        let leg = self.leg_mut(id);
        let rtt = now_usec.saturating_sub(leg.linked_sent_usec);
        // A zero RTT means the clock stalled; C tor records "unusable" (UINT64_MAX), which no
        // algorithm ever picks.
        leg.rtt_usec = if rtt == 0 { u64::MAX } else { rtt };
        Ok(())
    }

    /// [`on_linked_ack`](Self::on_linked_ack) with the RTT measured where the leg's circuit
    /// lives (LINKED sent → LINKED_ACK there), so the cross-shard hops are not part of it.
    pub fn on_linked_ack_rtt(
        &mut self,
        circ: C,
        facts: LegFacts,
        rtt_usec: u64,
    ) -> Result<(), Refused<C>> {
        let id = self.check_leg(circ, facts)?;
        self.leg_mut(id).rtt_usec = if rtt_usec == 0 { u64::MAX } else { rtt_usec };
        Ok(())
    }

    /// A newer RTT for `circ`'s leg: C tor replaces a leg's RTT with its circuit's
    /// congestion-control EWMA RTT at every SENDME it processes
    /// (`congestion_control_process_sendme` → `conflux_update_rtt`), so MinRTT and LowRTT
    /// follow the legs' current queueing, not only the LINKED_ACK sample. 0 (no estimate
    /// yet) changes nothing, as in C tor.
    pub fn update_rtt(&mut self, circ: C, rtt_usec: u64) {
        if rtt_usec == 0 {
            return;
        }
        if let Some(&id) = self.by_circ.get(&circ) {
            self.leg_mut(id).rtt_usec = rtt_usec;
        }
    }

    /// CONFLUX_LINKED arrived at the exit: only clients receive it (C tor closes the
    /// circuit: "Received CONFLUX_LINKED cell on a non origin circuit").
    pub fn on_linked(&mut self, circ: C, facts: LegFacts) -> Refused<C> {
        self.refuse_leg(
            circ,
            DestroyReason::TorProtocol,
            RefuseWhy::NotLinked,
            facts,
        )
    }

    /// CONFLUX_SWITCH on `circ` (C tor `conflux_process_switch_command`): the leg's
    /// absolute receive sequence number jumps by the relative number. The switch itself is
    /// not sequenced.
    ///
    /// As in C tor 0.4.9.11, a body too short to parse counts as a switch by 0 (counted in
    /// `switches_malformed_total`) and a relative number of 0 is accepted: C tor's check
    /// against switches below its minimum increment (`CONFLUX_MIN_LINK_INCREMENT`, the
    /// side-channel rule of prop 329) is disabled ("TODO-329-TUNING: This can happen").
    pub fn on_switch(
        &mut self,
        circ: C,
        facts: LegFacts,
        body: &[u8],
    ) -> Result<Switch, Refused<C>> {
        self.on_switch_parsed(circ, facts, Switch::parse(body).ok())
    }

    /// [`on_switch`](Self::on_switch) parsed on the leg's shard (`None`: too short, read
    /// as 0).
    pub fn on_switch_parsed(
        &mut self,
        circ: C,
        facts: LegFacts,
        switch: Option<Switch>,
    ) -> Result<Switch, Refused<C>> {
        let id = self.check_leg(circ, facts)?;
        let switch = match switch {
            Some(s) => s,
            None => {
                self.stats.switches_malformed_total += 1;
                Switch { relative_seq: 0 }
            }
        };
        let leg = self.leg_mut(id);
        match leg
            .last_seq_recv
            .checked_add(u64::from(switch.relative_seq))
        {
            Some(v) => leg.last_seq_recv = v,
            None => {
                return Err(self.refuse_leg(
                    circ,
                    DestroyReason::TorProtocol,
                    RefuseWhy::SeqOverflow,
                    facts,
                ))
            }
        }
        self.stats.switches_received_total += 1;
        Ok(switch)
    }

    /// A relay message `msg` with command `cmd` arrived on `circ` from the client (C tor
    /// `conflux_process_relay_msg`). Multiplexed commands on a leg get the next absolute
    /// sequence number of that leg and are delivered in order across the set.
    pub fn on_cell(&mut self, circ: C, cmd: RelayCmd, facts: LegFacts, msg: M) -> Inbound<M, C> {
        use DestroyReason::{Internal, ResourceLimit, TorProtocol};
        let Some(&id) = self.by_circ.get(&circ) else {
            return Inbound::NotSequenced(msg);
        };
        if !should_multiplex(cmd) {
            return Inbound::NotSequenced(msg);
        }
        if facts.has_next_hop {
            return Inbound::Refused(self.refuse_leg(
                circ,
                TorProtocol,
                RefuseWhy::NotLastHop,
                facts,
            ));
        }
        let window = u64::from(self.limits.ooo_window);
        let dir_len = self.dir_len();
        let slot = &mut self.slots[id.set as usize];
        let set = slot.set.as_mut().expect("leg's set exists");
        let leg = set.leg(id.leg);
        let Some(seq) = leg.last_seq_recv.checked_add(1) else {
            return Inbound::Refused(self.refuse_leg(
                circ,
                TorProtocol,
                RefuseWhy::SeqOverflow,
                facts,
            ));
        };
        leg.last_seq_recv = seq;
        if seq == set.last_seq_delivered + 1 {
            // The caller drains `pop_ready` after each delivery, so nothing is held at or
            // below the delivered number and this one cannot be waiting already.
            debug_assert!(
                slot.dir.is_empty() || {
                    let (n, off) = page_of(seq, dir_len);
                    slot.dir[n] == EMPTY || self.pages[slot.dir[n] as usize].slot[off] == EMPTY
                },
                "the next number is held: pop_ready was not drained"
            );
            set.last_seq_delivered = seq;
            return Inbound::Deliver(msg);
        }
        if seq <= set.last_seq_delivered {
            // C tor: "Anyone can mangle these sequence number"; closes with INTERNAL.
            return Inbound::Refused(self.refuse_leg(
                circ,
                Internal,
                RefuseWhy::SeqAlreadyDelivered,
                facts,
            ));
        }
        if seq - set.last_seq_delivered > window {
            self.stats.ooo_overflow_total += 1;
            return Inbound::Refused(self.refuse_leg(
                circ,
                ResourceLimit,
                RefuseWhy::OooWindow,
                facts,
            ));
        }
        if slot.dir.is_empty() {
            // Once per set, not per cell.
            slot.dir = vec![EMPTY; dir_len];
        }
        let (n, off) = page_of(seq, dir_len);
        let page = slot.dir[n];
        if page != EMPTY && self.pages[page as usize].slot[off] != EMPTY {
            // Only a hostile client repeats a sequence number. C tor would hold both and
            // the set would stall until its queue limit; Fors closes now.
            return Inbound::Refused(self.refuse_leg(
                circ,
                TorProtocol,
                RefuseWhy::SeqDuplicate,
                facts,
            ));
        }
        let Some(p) = self.pool_put(msg) else {
            self.stats.ooo_overflow_total += 1;
            return Inbound::Refused(self.refuse_leg(
                circ,
                ResourceLimit,
                RefuseWhy::OooPool,
                facts,
            ));
        };
        let page = if page == EMPTY {
            let page = self.page_new();
            self.slots[id.set as usize].dir[n] = page;
            page
        } else {
            page
        };
        let pg = &mut self.pages[page as usize];
        pg.slot[off] = p;
        pg.used += 1;
        let slot = &mut self.slots[id.set as usize];
        slot.set.as_mut().expect("set exists").held += 1;
        self.stats.held_cells += 1;
        Inbound::Held
    }

    /// The next held message of `circ`'s set if it is now in order (C tor
    /// `conflux_dequeue_relay_msg`). `None` once the set is gone.
    pub fn pop_ready(&mut self, circ: C) -> Option<M> {
        let id = *self.by_circ.get(&circ)?;
        let dir_len = self.dir_len();
        let slot = &mut self.slots[id.set as usize];
        let set = slot.set.as_mut()?;
        if set.held == 0 {
            return None;
        }
        let next = set.last_seq_delivered + 1;
        let (n, off) = page_of(next, dir_len);
        let page = slot.dir[n];
        if page == EMPTY {
            return None;
        }
        let pg = &mut self.pages[page as usize];
        let p = pg.slot[off];
        if p == EMPTY {
            return None;
        }
        pg.slot[off] = EMPTY;
        pg.used -= 1;
        if pg.used == 0 {
            slot.dir[n] = EMPTY;
            self.pages_free.push(page);
            self.stats.ooo_pages -= 1;
        }
        set.held -= 1;
        set.last_seq_delivered = next;
        self.stats.held_cells -= 1;
        Some(self.pool_take(p))
    }

    /// Directory entries per set: one page per [`OOO_PAGE`] numbers of the window, plus one,
    /// since a window's worth of consecutive numbers can touch one page more than it fills.
    fn dir_len(&self) -> usize {
        (self.limits.ooo_window as usize).div_ceil(OOO_PAGE) + 1
    }

    /// An empty page. Never fails: the caller has just taken a pool slot for the cell that
    /// goes in it, and each page in use holds a cell, so pages in use stay within the pool.
    fn page_new(&mut self) -> u32 {
        self.stats.ooo_pages += 1;
        if let Some(page) = self.pages_free.pop() {
            return page;
        }
        debug_assert!(self.pages.len() < self.limits.ooo_pool_cells);
        self.pages.push(OooPage {
            slot: [EMPTY; OOO_PAGE],
            used: 0,
        });
        (self.pages.len() - 1) as u32
    }

    /// Picks the circuit for a message the exit sends on `orig`'s stream (C tor
    /// `conflux_decide_circ_for_send`). `state` gives each leg's congestion and channel
    /// state.
    pub fn choose_send(
        &mut self,
        orig: C,
        cmd: RelayCmd,
        mut state: impl FnMut(C) -> LegSendState,
    ) -> SendChoice<C> {
        let Some(&id) = self.by_circ.get(&orig) else {
            return SendChoice::Send {
                circ: orig,
                switch: None,
            };
        };
        if !should_multiplex(cmd) {
            return SendChoice::Send {
                circ: orig,
                switch: None,
            };
        }
        let set = self.slots[id.set as usize]
            .set
            .as_mut()
            .expect("leg's set exists");
        let new = decide_next(set, &mut state);
        let Some(new) = new else {
            // Only DATA is held by the congestion window; other commands go on the current
            // leg so they stay in order.
            return match (cmd, set.curr) {
                (RelayCmd::DATA, _) | (_, None) => SendChoice::Blocked,
                (_, Some(c)) => SendChoice::Send {
                    circ: set.leg(c).circ,
                    switch: None,
                },
            };
        };
        let curr = set.curr.expect("decide_next sets a current leg");
        if new == curr {
            return SendChoice::Send {
                circ: set.leg(new).circ,
                switch: None,
            };
        }
        let prev_sent = set.leg(curr).last_seq_sent;
        let new_sent = set.leg(new).last_seq_sent;
        set.prev = Some(curr);
        set.curr = Some(new);
        // A new leg ahead of the old one, or a jump a u32 cannot carry, breaks the set
        // (C tor closes it; TROVE-2026-017 made a failed SWITCH close it too).
        let rel = match prev_sent.checked_sub(new_sent) {
            Some(r) if r < u64::from(u32::MAX) => r as u32,
            _ => {
                return SendChoice::Teardown(self.teardown_set(id.set, DestroyReason::TorProtocol))
            }
        };
        set.leg(new).last_seq_sent = prev_sent;
        self.stats.switches_sent_total += 1;
        SendChoice::Send {
            circ: set.leg(new).circ,
            switch: Some(Switch { relative_seq: rel }),
        }
    }

    /// The message [`choose_send`](Self::choose_send) placed on `circ` was sent (C tor
    /// `conflux_note_cell_sent`).
    pub fn note_sent(&mut self, circ: C, cmd: RelayCmd) {
        if !should_multiplex(cmd) {
            return;
        }
        if let Some(&id) = self.by_circ.get(&circ) {
            let leg = self.leg_mut(id);
            leg.last_seq_sent += 1;
        }
    }

    /// Sending the SWITCH that [`choose_send`](Self::choose_send) asked for failed: the set
    /// cannot stay coherent (TROVE-2026-017).
    pub fn switch_send_failed(&mut self, circ: C) -> Teardown<C> {
        match self.by_circ.get(&circ) {
            Some(&id) => self.teardown_set(id.set, DestroyReason::TorProtocol),
            None => Teardown::none(),
        }
    }

    /// Tears down `circ`'s set: its legs are forgotten and returned to close with `reason`.
    pub fn teardown(&mut self, circ: C, reason: DestroyReason) -> Teardown<C> {
        match self.by_circ.get(&circ) {
            Some(&id) => self.teardown_set(id.set, reason),
            None => Teardown::none(),
        }
    }

    /// `circ` closed for any reason (C tor `linked_circuit_closed`, `cfx_del_leg`). Returns
    /// the other legs to close if the set must be torn down.
    pub fn leg_closed(&mut self, circ: C, data_in_flight: bool) -> Teardown<C> {
        let Some(&id) = self.by_circ.get(&circ) else {
            return Teardown::none();
        };
        self.remove_leg(id, data_in_flight)
    }

    fn remove_leg(&mut self, id: LegId, data_in_flight: bool) -> Teardown<C> {
        let set = self.slots[id.set as usize]
            .set
            .as_mut()
            .expect("leg's set exists");
        let leg = set.legs[id.leg as usize].take().expect("leg exists");
        self.by_circ.remove(&leg.circ);
        self.stats.legs -= 1;
        let mut full = data_in_flight;
        if set.n_legs() > 0
            && (set.max_sent() < leg.last_seq_sent || set.max_recv() < leg.last_seq_recv)
        {
            // The closed leg carried the newest data one way: the rest cannot resume.
            full = true;
        }
        if set.curr == Some(id.leg) {
            set.curr = None;
            full = true;
        }
        if set.prev == Some(id.leg) {
            set.prev = None;
        }
        if set.n_legs() == 0 {
            self.free_set(id.set);
            Teardown::none()
        } else if full {
            self.teardown_set(id.set, DestroyReason::Finished)
        } else {
            Teardown::none()
        }
    }

    /// Forgets the set and returns its legs to close.
    fn teardown_set(&mut self, idx: u32, reason: DestroyReason) -> Teardown<C> {
        let mut out = Teardown::none();
        out.reason = reason;
        let set = self.slots[idx as usize].set.as_mut().expect("set exists");
        for (o, leg) in out.circs.iter_mut().zip(set.legs.iter_mut()) {
            if let Some(l) = leg.take() {
                *o = Some(l.circ);
            }
        }
        for c in out.circs() {
            self.by_circ.remove(&c);
            self.stats.legs -= 1;
        }
        self.stats.teardowns_total += 1;
        self.free_set(idx);
        out
    }

    /// Drops the set's held cells (keeping the pool count exact, unlike C tor before
    /// TROVE-2026-010) and frees its slot.
    fn free_set(&mut self, idx: u32) {
        let set = self.slots[idx as usize].set.take().expect("set exists");
        // The directory goes with the set: a slot reused by a set that never holds a cell
        // costs nothing, and idle slots don't keep 2 KiB each.
        let dir = std::mem::take(&mut self.slots[idx as usize].dir);
        let mut held = set.held;
        for page in dir.into_iter().filter(|&p| p != EMPTY) {
            for i in 0..OOO_PAGE {
                let p = std::mem::replace(&mut self.pages[page as usize].slot[i], EMPTY);
                if p != EMPTY {
                    drop(self.pool_take(p));
                    self.stats.held_cells -= 1;
                    held -= 1;
                }
            }
            self.pages[page as usize].used = 0;
            self.pages_free.push(page);
            self.stats.ooo_pages -= 1;
        }
        debug_assert_eq!(held, 0, "every held cell is in a page of the set");
        self.by_nonce.remove(&set.nonce);
        self.free_sets.push(idx);
        self.stats.sets -= 1;
    }

    fn check_leg(&mut self, circ: C, facts: LegFacts) -> Result<LegId, Refused<C>> {
        use DestroyReason::TorProtocol;
        if !facts.enabled {
            return Err(self.refuse_leg(circ, TorProtocol, RefuseWhy::NotEnabled, facts));
        }
        if facts.has_next_hop {
            return Err(self.refuse_leg(circ, TorProtocol, RefuseWhy::NotLastHop, facts));
        }
        self.by_circ
            .get(&circ)
            .copied()
            .ok_or(refused(TorProtocol, RefuseWhy::NotLinked))
    }

    /// Refuses a cell on `circ`: if it is a leg, it leaves its set first, with C tor's
    /// teardown rules.
    fn refuse_leg(
        &mut self,
        circ: C,
        this: DestroyReason,
        why: RefuseWhy,
        facts: LegFacts,
    ) -> Refused<C> {
        let others = match self.by_circ.get(&circ) {
            Some(&id) => self.remove_leg(id, facts.data_in_flight),
            None => Teardown::none(),
        };
        Refused { this, others, why }
    }

    fn leg_mut(&mut self, id: LegId) -> &mut Leg<C> {
        self.slots[id.set as usize]
            .set
            .as_mut()
            .expect("leg's set exists")
            .leg(id.leg)
    }

    fn pool_put(&mut self, msg: M) -> Option<u32> {
        if self.pool_free != EMPTY {
            let p = self.pool_free;
            let s = &mut self.pool[p as usize];
            self.pool_free = s.next_free;
            s.msg = Some(msg);
            return Some(p);
        }
        if self.pool.len() < self.limits.ooo_pool_cells {
            // Within the capacity reserved in `new`: no reallocation.
            self.pool.push(PoolSlot {
                msg: Some(msg),
                next_free: EMPTY,
            });
            return Some((self.pool.len() - 1) as u32);
        }
        None
    }

    fn pool_take(&mut self, p: u32) -> M {
        let s = &mut self.pool[p as usize];
        let m = s.msg.take().expect("pool slot in use");
        s.next_free = self.pool_free;
        self.pool_free = p;
        m
    }
}

/// Where sequence number `seq` sits: its page's directory entry and its place in the page.
/// Held numbers lie within one window past the delivered one, so no two live pages share an
/// entry (the directory has a page more than the window fills).
fn page_of(seq: u64, dir_len: usize) -> (usize, usize) {
    let page_no = seq / OOO_PAGE as u64;
    (
        (page_no % dir_len as u64) as usize,
        (seq % OOO_PAGE as u64) as usize,
    )
}

fn refused<C: Copy>(this: DestroyReason, why: RefuseWhy) -> Refused<C> {
    Refused {
        this,
        others: Teardown::none(),
        why,
    }
}

/// C tor `conflux_decide_next_circ` for the exit. C tor's "can switch" test always passes
/// here: `cells_until_switch` is only ever set to 0.
fn decide_next<C: Copy>(set: &mut Set<C>, state: &mut impl FnMut(C) -> LegSendState) -> Option<u8> {
    if set.curr.is_none() {
        set.curr = Some(pick_first_leg(set)?);
    }
    match set.alg {
        Alg::MinRtt => {
            let best = min_rtt_leg(set, |_| true)?;
            state(set.leg(best).circ).ready().then_some(best)
        }
        Alg::LowRtt => min_rtt_leg(set, |l| state(l.circ).ready()),
    }
}

/// The leg with the lowest known RTT (0 is unknown, `u64::MAX` unusable) among `ok` legs.
fn min_rtt_leg<C: Copy>(set: &Set<C>, mut ok: impl FnMut(&Leg<C>) -> bool) -> Option<u8> {
    let mut best: Option<(u64, u8)> = None;
    for (i, l) in set.legs.iter().enumerate() {
        let Some(l) = l else { continue };
        if l.rtt_usec != 0 && l.rtt_usec < best.map_or(u64::MAX, |b| b.0) && ok(l) {
            best = Some((l.rtt_usec, i as u8));
        }
    }
    best.map(|b| b.1)
}

/// C tor `conflux_pick_first_leg`: the lowest RTT; if no LINKED_ACK has come yet (BEGIN won
/// the race), the first leg.
fn pick_first_leg<C: Copy>(set: &Set<C>) -> Option<u8> {
    let mut best: Option<(u64, u8)> = None;
    for (i, l) in set.legs.iter().enumerate() {
        let Some(l) = l else { continue };
        if l.rtt_usec > 0 && best.is_none_or(|b| l.rtt_usec < b.0) {
            best = Some((l.rtt_usec, i as u8));
        }
    }
    best.map(|b| b.1)
        .or_else(|| set.legs.iter().position(Option::is_some).map(|i| i as u8))
}
