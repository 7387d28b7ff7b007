//! Legs of one conflux set on different shards (prop 329; C tor 0.4.9 `conflux_pool.c`,
//! `conflux.c`), sans-IO: the join across shards and *remote legs*.
//!
//! A client's legs come through different middles, so their circuits live on whatever
//! shards their channels landed on. A set and its streams live on one shard, its *owner*:
//! the shard of the first leg whose LINK reached the set's *home* shard
//! ([`super::home_shard`], keyed with the relay's secret [`HomeKey`]). The home shard keeps
//! a small bounded directory, nonce → owner shard, and is only a rendezvous point: it
//! routes each LINK to the owner.
//!
//! * LINK on a circuit of shard X: the leg's own checks run on X (conflux enabled, last
//!   hop, not already a leg, no streams, body parses); the leg is *pending* and
//!   [`CfxMsg::Lookup`] goes to the home shard, which registers X as owner if the nonce is
//!   new and forwards [`CfxMsg::Join`] to the owner. The owner's [`ConfluxSets`] decides as
//!   on one shard and answers [`CfxMsg::Linked`] (X sends LINKED) or [`CfxMsg::Close`].
//! * A linked leg whose owner is another shard is a *remote leg*: its circuit (channel,
//!   crypto, congestion control, deliver window, circuit SENDMEs) stays on X; its
//!   multiplexed messages, after that leg-local work, go to the owner as [`CfxMsg::Cell`]
//!   in the leg's order (the queue is FIFO), SWITCH and LINKED_ACK as [`CfxMsg::Switch`]
//!   and [`CfxMsg::LinkedAck`] (the RTT measured on X). The owner sequences them.
//! * The owner's streams send through [`ConfluxShard::send`]: `choose_send` picks the leg;
//!   a remote leg gets [`CfxMsg::Send`], which X packages with that leg's congestion window,
//!   SENDME tag and crypto (SWITCH first when the leg changed).
//! * `choose_send` needs each leg's RTT and whether it can send. For a remote leg the owner
//!   keeps a snapshot, updated by [`CfxMsg::LegState`] that X sends at each SENDME (the EWMA
//!   RTT only changes there, as C tor updates a leg's RTT there) and when its channel blocks
//!   or unblocks. Staleness: the snapshot's `inflight` is X's at its last report plus every
//!   DATA the owner sent since that X had not yet carried out, so it is never below the
//!   real value except by SENDMEs still in transit, which only make the owner wait for the
//!   next report; a block lags by one queue transit, and a cell sent meanwhile waits in the
//!   circuit's queue on X (bounded as any queued cell) exactly as one sent just before a
//!   local block does.
//! * Leg close: X sends [`CfxMsg::LegClosed`] (with whether data was in flight), and the
//!   owner applies C tor's rules (`cfx_del_leg`); a teardown closes every leg, remote ones
//!   by [`CfxMsg::Close`]. The streams stay on the owner under the set's [`SetKey`], so the
//!   owner's own leg may close while a remote leg keeps the set (and its streams) alive.
//!   When a set is gone, [`Action::SetGone`] ends its streams and [`CfxMsg::Forget`] frees
//!   the directory entry (only if no LINK was routed to the owner since: `route`).
//! * A message for a circuit that closed meanwhile is answered as if it were live only
//!   where that keeps both sides coherent: a [`CfxMsg::Linked`] or [`CfxMsg::Send`] for an
//!   unknown leg is answered with [`CfxMsg::LegClosed`], so the owner forgets it.
//!
//! Queue full (C tor has no such case): the node carries control messages in its bounded
//! overflow; a cell-carrying message it cannot take comes back through
//! [`ConfluxShard::send_failed`]: a [`CfxMsg::Cell`] or [`CfxMsg::Switch`] that cannot
//! reach the owner leaves a gap in the sequence, so the leg closes with RESOURCELIMIT and
//! the set is torn down; a [`CfxMsg::Send`] that cannot reach its leg does the same to the
//! set (counted in `cross_full_teardowns_total`). A control message handed back (the
//! node's overflow takes them all, but the contract allows it) leaves the home's directory
//! as if it had never been sent (review finding L7): a refused Lookup made no entry; a
//! refused Join takes its route back on the home (the entry goes if that join made it), so
//! the owner's later Forget still matches; a refused Forget is owed and sent again with the
//! next message or LINK the owner handles, or at the shard's next tick if none comes
//! (`forgets_owed`, at most one per entry naming the owner in another shard's directory). `send_failed` must come before the shard handles
//! another message, as the node does it (at once, when the queue refuses).
//!
//! Bounds: local legs ([`CrossLimits::max_local_legs`]), directory entries
//! ([`CrossLimits::max_dir`]; full: the LINK is refused with RESOURCELIMIT), remote-leg
//! snapshots (at most the owner's sets × legs). Nothing is allocated per cell: messages
//! carry the cell by value and actions go into the caller's reused vector.

use std::collections::HashMap;
use std::hash::Hash;

use super::cells::{Link, Nonce, Switch};
use super::set::{ConfluxSets, LegFacts, LegSendState, Limits, Refused, SendChoice, SetKey};
use super::{home_shard, should_multiplex, HomeKey};
use crate::cell::chan::DestroyReason;
use crate::cell::relay::RelayCmd;

/// A shard's index.
pub type ShardNo = u16;

/// A leg's circuit on any shard.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct LegRef<C> {
    pub shard: ShardNo,
    pub circ: C,
}

/// What one shard's conflux state sends another's (through the node's bounded queues).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CfxMsg<C, M> {
    /// Leg's shard → home: LINK on `leg` (its own checks passed); `state` is its send state.
    Lookup {
        leg: LegRef<C>,
        link: Link,
        state: LegSendState,
    },
    /// Home → owner: join `leg` to the set named by `link.nonce`; `route` counts the LINKs
    /// the home routed for this nonce.
    Join {
        leg: LegRef<C>,
        link: Link,
        state: LegSendState,
        route: u32,
    },
    /// Owner → leg's shard: the leg is linked; send CONFLUX_LINKED with `link`.
    Linked { circ: C, owner: ShardNo, link: Link },
    /// Owner or home → leg's shard: close the leg's circuit.
    Close { circ: C, reason: DestroyReason },
    /// Leg's shard → owner: LINKED_ACK, with the RTT measured on the leg's shard.
    LinkedAck { leg: LegRef<C>, rtt_usec: u64 },
    /// Leg's shard → owner: CONFLUX_SWITCH (`None`: too short, read as 0).
    Switch {
        leg: LegRef<C>,
        switch: Option<Switch>,
        facts: LegFacts,
    },
    /// Leg's shard → owner: a multiplexed message, after the leg's circuit-level work.
    Cell {
        leg: LegRef<C>,
        cmd: RelayCmd,
        facts: LegFacts,
        msg: M,
    },
    /// Leg's shard → owner: the leg's send state (at a SENDME, or its channel blocked or
    /// unblocked); `sends_done` counts the DATA [`CfxMsg::Send`]s carried out on the leg.
    LegState {
        leg: LegRef<C>,
        state: LegSendState,
        rtt_usec: u64,
        sends_done: u64,
    },
    /// Owner → leg's shard: originate `msg` on the leg (SWITCH first if set).
    Send {
        circ: C,
        switch: Option<Switch>,
        cmd: RelayCmd,
        msg: M,
    },
    /// Leg's shard → owner: the leg's circuit closed.
    LegClosed {
        leg: LegRef<C>,
        data_in_flight: bool,
    },
    /// Owner → home: the set named `nonce` is gone.
    Forget {
        nonce: Nonce,
        owner: ShardNo,
        route: u32,
    },
}

impl<C, M> CfxMsg<C, M> {
    /// Whether the message carries a relay cell (what the node's overflow bounds).
    pub fn carries_cell(&self) -> bool {
        matches!(
            self,
            CfxMsg::Cell { .. } | CfxMsg::Send { .. } | CfxMsg::Switch { .. }
        )
    }

    /// The leg a [`CfxMsg::LegState`] reports on. Each one is a full snapshot of the leg's
    /// send state (`sends_done` counts from the leg's start, the RTT replaces the last one),
    /// so a later one supersedes any earlier one still waiting: the owner's handling of a
    /// snapshot depends only on the snapshot it had before (`on_msg`), not on the ones
    /// in between.
    pub fn leg_state_of(&self) -> Option<&LegRef<C>> {
        match self {
            CfxMsg::LegState { leg, .. } => Some(leg),
            _ => None,
        }
    }

    /// The leg a message from the leg's own shard to the owner speaks for (LINKED_ACK,
    /// SWITCH, a multiplexed cell, a leg state, a close): the messages whose order
    /// relative to each other the owner relies on (a LINKED_ACK's RTT before the next
    /// SENDME's, every state before the leg's close).
    pub fn from_leg(&self) -> Option<&LegRef<C>> {
        match self {
            CfxMsg::LinkedAck { leg, .. }
            | CfxMsg::Switch { leg, .. }
            | CfxMsg::Cell { leg, .. }
            | CfxMsg::LegState { leg, .. }
            | CfxMsg::LegClosed { leg, .. } => Some(leg),
            _ => None,
        }
    }
}

/// What the caller must do.
#[derive(Debug, PartialEq, Eq)]
pub enum Action<C, M> {
    /// Send CONFLUX_LINKED with `link` on local circuit `circ`.
    SendLinked { circ: C, link: Link },
    /// Close local circuit `circ` (it is no longer a leg here).
    Close { circ: C, reason: DestroyReason },
    /// Handle `msg` against the streams of set `set` (which lives on this shard).
    Deliver { set: SetKey, cmd: RelayCmd, msg: M },
    /// Originate `msg` on local leg `circ`, after `switch` as CONFLUX_SWITCH if set.
    Originate {
        circ: C,
        switch: Option<Switch>,
        cmd: RelayCmd,
        msg: M,
    },
    /// Put `msg` on the queue to shard `shard`; if it cannot take it, hand it back to
    /// [`ConfluxShard::send_failed`].
    ToShard { shard: ShardNo, msg: CfxMsg<C, M> },
    /// Set `set` is gone: end its streams (they ended with their circuits in C tor).
    SetGone { set: SetKey },
    /// A leg of set `set` may send again: resume its streams.
    Resume { set: SetKey },
}

/// Where the message the set's streams want to send went.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Sent {
    /// Placed on a leg (an [`Action::Originate`] or [`Action::ToShard`] was pushed).
    Placed,
    /// No leg may send now; wait for [`Action::Resume`] or a local SENDME / unblock.
    Blocked,
    /// The set broke (its legs are being closed) or is gone.
    Gone,
}

/// The leg [`ConfluxShard::pick`] chose.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Pick<C> {
    /// A leg on this shard, after `switch` as CONFLUX_SWITCH if set.
    Local { circ: C, switch: Option<Switch> },
    /// A leg on another shard.
    Remote {
        leg: LegRef<C>,
        switch: Option<Switch>,
    },
    /// No leg may send now; wait for [`Action::Resume`] or a local SENDME / unblock.
    Blocked,
    /// The set broke (its legs are being closed) or is gone.
    Gone,
}

/// Bounds of one shard's cross-shard conflux state.
#[derive(Clone, Copy, Debug)]
pub struct CrossLimits {
    /// The set table's bounds (sets owned here).
    pub sets: Limits,
    /// Circuits of this shard that are legs (pending or linked) at once.
    pub max_local_legs: usize,
    /// Nonces this shard is home for at once.
    pub max_dir: usize,
}

/// Counters and gauges (beyond [`super::ConfluxStats`]).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct CrossStats {
    /// Legs linked to a set owned by another shard than the leg's circuit (owner's count).
    pub remote_legs_total: u64,
    /// Remote legs of the sets owned here.
    pub remote_legs: usize,
    /// LINKs whose home was another shard.
    pub lookups_sent_total: u64,
    /// Nonces in this shard's directory.
    pub dir_entries: usize,
    /// LINKs refused because the directory or the local leg table was full.
    pub table_full_total: u64,
    /// Sets torn down because a cross-shard queue could not take a cell.
    pub cross_full_teardowns_total: u64,
    /// Messages for legs or sets that were gone when they arrived.
    pub stale_msgs_total: u64,
    /// Multiplexed, SWITCH or LINKED_ACK cells on a leg still waiting for its LINKED.
    pub pending_refused_total: u64,
    /// [`CfxMsg::Forget`]s the queue to their home refused, waiting to be sent again.
    pub forgets_owed: usize,
}

#[derive(Clone, Copy)]
enum LocalLeg {
    /// LINK sent to the home shard; no LINKED yet.
    Pending,
    /// Linked to the set owned by `owner`.
    Linked {
        owner: ShardNo,
        linked_sent_usec: u64,
        sends_done: u64,
    },
}

struct DirEntry {
    owner: ShardNo,
    route: u32,
}

/// A remote leg as the owner sees it.
struct Snapshot {
    state: LegSendState,
    /// DATA sends the owner issued on this leg.
    issued: u64,
    /// Of those, carried out by the leg's shard at its last report.
    done: u64,
}

/// One shard's conflux state: the sets it owns, its circuits that are legs, and the nonce
/// directory it is home for. `C` is the shard's circuit handle (generational, so a stale
/// message never names a new circuit), `M` a multiplexed message by value.
pub struct ConfluxShard<C, M> {
    me: ShardNo,
    shards: usize,
    /// The relay's home key: the same on every shard.
    key: HomeKey,
    limits: CrossLimits,
    sets: ConfluxSets<LegRef<C>, (RelayCmd, M)>,
    legs: HashMap<C, LocalLeg>,
    dir: HashMap<Nonce, DirEntry>,
    /// Per owned set: the last `route` the home gave a join of it.
    routes: HashMap<Nonce, u32>,
    remote: HashMap<LegRef<C>, Snapshot>,
    /// Forgets the queue to their home shard refused (nonce → route), sent again with the
    /// next message or LINK this shard handles, so the home's entry goes as it would have.
    owed: HashMap<Nonce, u32>,
    stats: CrossStats,
}

const LIVE: LegFacts = LegFacts {
    enabled: true,
    has_next_hop: false,
    has_streams: false,
    data_in_flight: false,
};

impl<C: Copy + Eq + Hash, M> ConfluxShard<C, M> {
    /// Shard `me` of `shards`; `key` must be the one every other shard got.
    pub fn new(me: ShardNo, shards: usize, limits: CrossLimits, key: HomeKey) -> Self {
        let sets = ConfluxSets::new(limits.sets);
        let l = sets.limits();
        ConfluxShard {
            me,
            shards: shards.max(1),
            key,
            limits,
            sets,
            legs: HashMap::with_capacity(limits.max_local_legs),
            dir: HashMap::with_capacity(limits.max_dir),
            routes: HashMap::with_capacity(l.max_sets),
            remote: HashMap::with_capacity(l.max_sets * l.max_legs),
            owed: HashMap::new(),
            stats: CrossStats::default(),
        }
    }

    /// This shard's index.
    pub fn me(&self) -> ShardNo {
        self.me
    }

    /// How many shards the relay runs.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The home key this shard computes homes with.
    pub fn home_key(&self) -> HomeKey {
        self.key
    }

    /// The set table (owned sets), for its counters and per-leg queries.
    pub fn sets(&self) -> &ConfluxSets<LegRef<C>, (RelayCmd, M)> {
        &self.sets
    }

    pub fn stats(&self) -> CrossStats {
        let mut s = self.stats;
        s.remote_legs = self.remote.len();
        s.dir_entries = self.dir.len();
        s.forgets_owed = self.owed.len();
        s
    }

    /// Whether local circuit `circ` is a leg (pending or linked): the per-cell test.
    pub fn is_leg(&self, circ: C) -> bool {
        self.legs.contains_key(&circ)
    }

    /// The shard owning `circ`'s set, once linked.
    pub fn owner_of(&self, circ: C) -> Option<ShardNo> {
        match self.legs.get(&circ)? {
            LocalLeg::Linked { owner, .. } => Some(*owner),
            LocalLeg::Pending => None,
        }
    }

    /// The set `circ` (a local leg of a set owned here) belongs to.
    pub fn set_key(&self, circ: C) -> Option<SetKey> {
        self.sets.set_key(self.r(circ))
    }

    fn r(&self, circ: C) -> LegRef<C> {
        LegRef {
            shard: self.me,
            circ,
        }
    }

    // ---- the leg's shard -------------------------------------------------------------

    /// CONFLUX_LINK on local circuit `circ`.
    pub fn on_link(
        &mut self,
        circ: C,
        facts: LegFacts,
        state: LegSendState,
        body: &[u8],
        now_usec: u64,
        out: &mut Vec<Action<C, M>>,
    ) {
        use DestroyReason::{ResourceLimit, TorProtocol};
        self.resend_owed(out);
        let reason = if !facts.enabled || facts.has_next_hop {
            Some(TorProtocol)
        } else if self.legs.contains_key(&circ) {
            // A second LINK on a leg, pending or linked (C tor: TORPROTOCOL).
            Some(TorProtocol)
        } else if facts.has_streams {
            Some(TorProtocol)
        } else {
            None
        };
        if let Some(reason) = reason {
            self.sets.count_refused_link();
            self.refuse_local(circ, reason, facts.data_in_flight, out);
            return;
        }
        let Ok(link) = Link::parse(body) else {
            self.sets.count_refused_link();
            out.push(Action::Close {
                circ,
                reason: TorProtocol,
            });
            return;
        };
        if self.legs.len() >= self.limits.max_local_legs {
            self.sets.count_refused_link();
            self.stats.table_full_total += 1;
            out.push(Action::Close {
                circ,
                reason: ResourceLimit,
            });
            return;
        }
        self.legs.insert(circ, LocalLeg::Pending);
        let home = home_shard(&link.nonce, self.shards, &self.key) as ShardNo;
        if home != self.me {
            self.stats.lookups_sent_total += 1;
        }
        let leg = self.r(circ);
        self.route(home, CfxMsg::Lookup { leg, link, state }, now_usec, out);
    }

    /// CONFLUX_LINKED_ACK on local circuit `circ`.
    pub fn on_linked_ack(
        &mut self,
        circ: C,
        facts: LegFacts,
        now_usec: u64,
        out: &mut Vec<Action<C, M>>,
    ) {
        let Some((owner, sent)) = self.linked_leg(circ, facts, out) else {
            return;
        };
        let rtt_usec = now_usec.saturating_sub(sent);
        let leg = self.r(circ);
        self.route(owner, CfxMsg::LinkedAck { leg, rtt_usec }, now_usec, out);
    }

    /// CONFLUX_SWITCH on local circuit `circ`.
    pub fn on_switch(
        &mut self,
        circ: C,
        facts: LegFacts,
        body: &[u8],
        now_usec: u64,
        out: &mut Vec<Action<C, M>>,
    ) {
        let Some((owner, _)) = self.linked_leg(circ, facts, out) else {
            return;
        };
        let switch = Switch::parse(body).ok();
        let leg = self.r(circ);
        self.route(owner, CfxMsg::Switch { leg, switch, facts }, now_usec, out);
    }

    /// CONFLUX_LINKED on local circuit `circ`: only clients receive it (C tor closes).
    pub fn on_linked(&mut self, circ: C, facts: LegFacts, out: &mut Vec<Action<C, M>>) {
        self.refuse_local(circ, DestroyReason::TorProtocol, facts.data_in_flight, out);
    }

    /// A relay message on local circuit `circ`, after its circuit-level accounting. Returns
    /// it back if conflux does not sequence it (not a leg, or not a multiplexed command).
    pub fn on_cell(
        &mut self,
        circ: C,
        cmd: RelayCmd,
        facts: LegFacts,
        msg: M,
        now_usec: u64,
        out: &mut Vec<Action<C, M>>,
    ) -> Option<M> {
        if !should_multiplex(cmd) || !self.legs.contains_key(&circ) {
            return Some(msg);
        }
        let (owner, _) = self.linked_leg(circ, facts, out)?;
        let leg = self.r(circ);
        self.route(
            owner,
            CfxMsg::Cell {
                leg,
                cmd,
                facts,
                msg,
            },
            now_usec,
            out,
        );
        None
    }

    /// Local leg `circ`'s send state changed: at a SENDME (new EWMA RTT) or when its
    /// channel blocked or unblocked. A leg of a set owned here needs nothing (the owner
    /// reads local legs live); a remote leg reports to its owner.
    pub fn leg_state(
        &mut self,
        circ: C,
        state: LegSendState,
        rtt_usec: u64,
        now_usec: u64,
        out: &mut Vec<Action<C, M>>,
    ) {
        let Some(&LocalLeg::Linked {
            owner, sends_done, ..
        }) = self.legs.get(&circ)
        else {
            return;
        };
        if owner == self.me {
            return;
        }
        let leg = self.r(circ);
        self.route(
            owner,
            CfxMsg::LegState {
                leg,
                state,
                rtt_usec,
                sends_done,
            },
            now_usec,
            out,
        );
    }

    /// Local circuit `circ` closed for any reason (C tor `linked_circuit_closed`). A no-op
    /// if it is not a leg (or was already closed by a refusal or teardown).
    pub fn leg_closed(
        &mut self,
        circ: C,
        data_in_flight: bool,
        now_usec: u64,
        out: &mut Vec<Action<C, M>>,
    ) {
        match self.legs.remove(&circ) {
            Some(LocalLeg::Linked { owner, .. }) => {
                let leg = self.r(circ);
                self.route(
                    owner,
                    CfxMsg::LegClosed {
                        leg,
                        data_in_flight,
                    },
                    now_usec,
                    out,
                );
            }
            // The join in flight will answer Linked for a circuit we no longer know; that
            // answer is turned into LegClosed (see `on_msg`).
            Some(LocalLeg::Pending) | None => {}
        }
    }

    /// The leg's (owner, LINKED sent time), or the leg is refused: not a leg (C tor
    /// TORPROTOCOL), still waiting for its LINKED, or no longer a last hop.
    fn linked_leg(
        &mut self,
        circ: C,
        facts: LegFacts,
        out: &mut Vec<Action<C, M>>,
    ) -> Option<(ShardNo, u64)> {
        match self.legs.get(&circ) {
            Some(&LocalLeg::Linked {
                owner,
                linked_sent_usec,
                ..
            }) if facts.enabled && !facts.has_next_hop => Some((owner, linked_sent_usec)),
            Some(LocalLeg::Pending) => {
                // A client sends on a leg only after its LINKED (C tor's client attaches
                // streams to linked sets only), so this is a protocol violation.
                self.stats.pending_refused_total += 1;
                self.refuse_local(circ, DestroyReason::TorProtocol, false, out);
                None
            }
            _ => {
                self.refuse_local(circ, DestroyReason::TorProtocol, facts.data_in_flight, out);
                None
            }
        }
    }

    /// Closes local circuit `circ` with `reason`; if it is a linked leg its owner learns.
    fn refuse_local(
        &mut self,
        circ: C,
        reason: DestroyReason,
        data_in_flight: bool,
        out: &mut Vec<Action<C, M>>,
    ) {
        out.push(Action::Close { circ, reason });
        // `now` only matters for a LINK joining, which this is not.
        self.leg_closed(circ, data_in_flight, 0, out);
    }

    // ---- the owner's streams -----------------------------------------------------------

    /// The set's streams send `msg` (C tor `conflux_decide_circ_for_send`). `local` gives
    /// a local leg's send state and congestion-control EWMA RTT (0: none yet), read live.
    pub fn send(
        &mut self,
        set: SetKey,
        cmd: RelayCmd,
        msg: M,
        local: impl FnMut(C) -> (LegSendState, u64),
        out: &mut Vec<Action<C, M>>,
    ) -> Sent {
        match self.pick(set, cmd, local, out) {
            Pick::Local { circ, switch } => {
                self.note_sent_local(circ, cmd);
                out.push(Action::Originate {
                    circ,
                    switch,
                    cmd,
                    msg,
                });
                Sent::Placed
            }
            Pick::Remote { leg, switch } => {
                self.send_remote(leg, switch, cmd, msg, out);
                Sent::Placed
            }
            Pick::Blocked => Sent::Blocked,
            Pick::Gone => Sent::Gone,
        }
    }

    /// The leg the set's streams send their next `cmd` on, without sending (C tor
    /// `conflux_decide_circ_for_send`): the circuit core packages a local leg's cell
    /// itself, then calls [`Self::note_sent_local`]; a remote leg's message goes by
    /// [`Self::send_remote`]. Either must follow a `Local` / `Remote` answer at once (the
    /// SWITCH it names is owed), or the SWITCH's failure must be reported.
    pub fn pick(
        &mut self,
        set: SetKey,
        cmd: RelayCmd,
        mut local: impl FnMut(C) -> (LegSendState, u64),
        out: &mut Vec<Action<C, M>>,
    ) -> Pick<C> {
        let Some(any) = self.sets.any_leg(set) else {
            return Pick::Gone;
        };
        let me = self.me;
        let legs = self.sets.legs_of(any);
        let nonce = self.sets.set_of(any).map(|(n, _)| n);
        let mut state = [None::<(LegRef<C>, LegSendState)>; super::set::MAX_LEGS];
        for (s, l) in state.iter_mut().zip(legs.iter()) {
            let Some(l) = *l else { continue };
            let st = if l.shard == me {
                let (st, rtt) = local(l.circ);
                // C tor updates the leg's RTT at each SENDME; the EWMA only changes there.
                self.sets.update_rtt(l, rtt);
                st
            } else if let Some(sn) = self.remote.get(&l) {
                LegSendState {
                    inflight: sn.state.inflight + (sn.issued - sn.done),
                    ..sn.state
                }
            } else {
                continue;
            };
            *s = Some((l, st));
        }
        // Non-multiplexed commands go on `any` (the caller sends those on its own circuit).
        let choice = self.sets.choose_send(any, cmd, |c| {
            state.iter().flatten().find(|(l, _)| *l == c).map_or(
                LegSendState {
                    cwnd: 0,
                    inflight: 0,
                    blocked_on_chan: true,
                },
                |s| s.1,
            )
        });
        match choice {
            SendChoice::Send { circ, switch } if circ.shard == me => Pick::Local {
                circ: circ.circ,
                switch,
            },
            SendChoice::Send { circ, switch } => Pick::Remote { leg: circ, switch },
            SendChoice::Blocked => Pick::Blocked,
            SendChoice::Teardown(t) => {
                self.close_legs(t.circs(), t.reason, out);
                self.settle(set, nonce, legs, out);
                Pick::Gone
            }
        }
    }

    /// The message [`Self::pick`] placed on local leg `circ` was sent.
    pub fn note_sent_local(&mut self, circ: C, cmd: RelayCmd) {
        let leg = self.r(circ);
        self.sets.note_sent(leg, cmd);
    }

    /// Sends `msg` on remote leg `leg` that [`Self::pick`] chose (its shard packages it,
    /// after `switch` if set).
    pub fn send_remote(
        &mut self,
        leg: LegRef<C>,
        switch: Option<Switch>,
        cmd: RelayCmd,
        msg: M,
        out: &mut Vec<Action<C, M>>,
    ) {
        self.sets.note_sent(leg, cmd);
        if cmd == RelayCmd::DATA {
            if let Some(sn) = self.remote.get_mut(&leg) {
                sn.issued += 1;
            }
        }
        out.push(Action::ToShard {
            shard: leg.shard,
            msg: CfxMsg::Send {
                circ: leg.circ,
                switch,
                cmd,
                msg,
            },
        });
    }

    /// Sending the SWITCH that came with an [`Action::Originate`] failed on local leg
    /// `circ` (TROVE-2026-017: the set cannot stay coherent).
    pub fn switch_send_failed(&mut self, circ: C, out: &mut Vec<Action<C, M>>) {
        let leg = self.r(circ);
        let Some(set) = self.sets.set_key(leg) else {
            return;
        };
        let nonce = self.sets.set_of(leg).map(|(n, _)| n);
        let before = self.sets.legs_of(leg);
        let t = self.sets.switch_send_failed(leg);
        self.close_legs(t.circs(), t.reason, out);
        self.settle(set, nonce, before, out);
    }

    /// The owner cannot keep set `set`'s streams (no local circuit holds them any more):
    /// the set is torn down, its legs closed with `reason`.
    pub fn abandon(&mut self, set: SetKey, reason: DestroyReason, out: &mut Vec<Action<C, M>>) {
        let Some(any) = self.sets.any_leg(set) else {
            return;
        };
        let nonce = self.sets.set_of(any).map(|(n, _)| n);
        let before = self.sets.legs_of(any);
        let t = self.sets.teardown(any, reason);
        self.close_legs(t.circs(), t.reason, out);
        self.settle(set, nonce, before, out);
    }

    // ---- messages from other shards (and from this one) ---------------------------------

    /// A message from shard `from` (or this shard: [`Self::route`] calls it directly).
    pub fn on_msg(
        &mut self,
        from: ShardNo,
        msg: CfxMsg<C, M>,
        now_usec: u64,
        out: &mut Vec<Action<C, M>>,
    ) {
        if from != self.me {
            self.resend_owed(out);
        }
        match msg {
            CfxMsg::Lookup { leg, link, state } => {
                self.home_lookup(leg, link, state, now_usec, out)
            }
            CfxMsg::Join {
                leg,
                link,
                state,
                route,
            } => self.owner_join(leg, link, state, route, now_usec, out),
            CfxMsg::Forget {
                nonce,
                owner,
                route,
            } => {
                if self
                    .dir
                    .get(&nonce)
                    .is_some_and(|e| e.owner == owner && e.route == route)
                {
                    self.dir.remove(&nonce);
                }
            }
            CfxMsg::Linked { circ, owner, link } => match self.legs.get_mut(&circ) {
                Some(l @ LocalLeg::Pending) => {
                    *l = LocalLeg::Linked {
                        owner,
                        linked_sent_usec: now_usec,
                        sends_done: 0,
                    };
                    out.push(Action::SendLinked { circ, link });
                }
                _ => {
                    // The circuit closed while its join was in flight: the owner forgets it.
                    self.stats.stale_msgs_total += 1;
                    let leg = self.r(circ);
                    self.route(
                        owner,
                        CfxMsg::LegClosed {
                            leg,
                            data_in_flight: false,
                        },
                        now_usec,
                        out,
                    );
                }
            },
            CfxMsg::Close { circ, reason } => {
                if self.legs.remove(&circ).is_some() {
                    out.push(Action::Close { circ, reason });
                } else {
                    self.stats.stale_msgs_total += 1;
                }
            }
            CfxMsg::Send {
                circ,
                switch,
                cmd,
                msg,
            } => match self.legs.get_mut(&circ) {
                Some(LocalLeg::Linked { sends_done, .. }) => {
                    if cmd == RelayCmd::DATA {
                        *sends_done += 1;
                    }
                    out.push(Action::Originate {
                        circ,
                        switch,
                        cmd,
                        msg,
                    });
                }
                _ => {
                    self.stats.stale_msgs_total += 1;
                    let leg = self.r(circ);
                    self.route(
                        from,
                        CfxMsg::LegClosed {
                            leg,
                            data_in_flight: false,
                        },
                        now_usec,
                        out,
                    );
                }
            },
            CfxMsg::LinkedAck { leg, rtt_usec } => {
                self.owner_op(
                    leg,
                    out,
                    |s| s.sets.on_linked_ack_rtt(leg, LIVE, rtt_usec),
                    true,
                );
            }
            CfxMsg::Switch { leg, switch, facts } => {
                self.owner_op(
                    leg,
                    out,
                    |s| s.sets.on_switch_parsed(leg, facts, switch),
                    false,
                );
            }
            CfxMsg::Cell {
                leg,
                cmd,
                facts,
                msg,
            } => self.owner_cell(leg, cmd, facts, msg, out),
            CfxMsg::LegState {
                leg,
                state,
                rtt_usec,
                sends_done,
            } => {
                let Some(set) = self.sets.set_key(leg) else {
                    self.stats.stale_msgs_total += 1;
                    return;
                };
                self.sets.update_rtt(leg, rtt_usec);
                if let Some(sn) = self.remote.get_mut(&leg) {
                    let was = sn.state.inflight + (sn.issued - sn.done) < sn.state.cwnd
                        && !sn.state.blocked_on_chan;
                    sn.state = state;
                    sn.done = sends_done.min(sn.issued);
                    let now = sn.state.inflight + (sn.issued - sn.done) < sn.state.cwnd
                        && !sn.state.blocked_on_chan;
                    if now && !was {
                        out.push(Action::Resume { set });
                    }
                }
            }
            CfxMsg::LegClosed {
                leg,
                data_in_flight,
            } => {
                let Some(set) = self.sets.set_key(leg) else {
                    self.stats.stale_msgs_total += 1;
                    return;
                };
                let nonce = self.sets.set_of(leg).map(|(n, _)| n);
                let before = self.sets.legs_of(leg);
                let t = self.sets.leg_closed(leg, data_in_flight);
                self.close_legs(t.circs(), t.reason, out);
                self.settle(set, nonce, before, out);
            }
        }
    }

    /// A message of ours that the queue to its shard could not take (see the module doc).
    pub fn send_failed(
        &mut self,
        shard: ShardNo,
        msg: CfxMsg<C, M>,
        now_usec: u64,
        out: &mut Vec<Action<C, M>>,
    ) {
        match msg {
            CfxMsg::Cell { leg, .. } | CfxMsg::Switch { leg, .. } => {
                if !self.legs.contains_key(&leg.circ) {
                    // An earlier refused message of this batch already closed the leg.
                    self.stats.stale_msgs_total += 1;
                    return;
                }
                // The owner will never see this sequence number: the set cannot go on.
                // `data_in_flight` makes the owner tear the set down (C tor's rule for a
                // leg whose loss the others cannot make up).
                self.stats.cross_full_teardowns_total += 1;
                out.push(Action::Close {
                    circ: leg.circ,
                    reason: DestroyReason::ResourceLimit,
                });
                self.leg_closed(leg.circ, true, now_usec, out);
            }
            CfxMsg::Send { circ, .. } => {
                let leg = LegRef { shard, circ };
                let Some(set) = self.sets.set_key(leg) else {
                    return;
                };
                self.stats.cross_full_teardowns_total += 1;
                let nonce = self.sets.set_of(leg).map(|(n, _)| n);
                let before = self.sets.legs_of(leg);
                let t = self.sets.switch_send_failed(leg);
                self.close_legs(t.circs(), DestroyReason::ResourceLimit, out);
                self.settle(set, nonce, before, out);
            }
            CfxMsg::Lookup { leg, .. } => {
                // It never reached the home, so no directory entry was made for it. The
                // LINK cannot reach its set: refuse it.
                self.refuse_link(leg, now_usec, out);
            }
            CfxMsg::Join {
                leg, link, route, ..
            } => {
                // We are the home and the owner never sees this route: take it back (or
                // the entry this join made), or the owner's Forget, which names the last
                // route it saw, would never match and the entry would stay for good.
                self.unroute(&link.nonce, shard, route);
                self.refuse_link(leg, now_usec, out);
            }
            CfxMsg::Forget { nonce, route, .. } => {
                // The home must still drop its entry: owe the Forget and send it again
                // with the next message or LINK this shard handles. At most one per entry
                // naming us in another shard's directory, so bounded by their sizes.
                let bound = self.limits.max_dir.saturating_mul(self.shards);
                if self.owed.len() < bound || self.owed.contains_key(&nonce) {
                    let r = self.owed.entry(nonce).or_insert(route);
                    *r = route;
                } else {
                    self.stats.stale_msgs_total += 1;
                }
            }
            // Control messages the node's overflow must carry; if one is lost anyway the
            // sides resynchronise: a Send or Linked for a gone leg is answered with
            // LegClosed, a lost LegState leaves the snapshot to the next SENDME.
            _ => self.stats.stale_msgs_total += 1,
        }
    }

    /// Carries out `msg` here if `to` is this shard, else queues it.
    fn route(
        &mut self,
        to: ShardNo,
        msg: CfxMsg<C, M>,
        now_usec: u64,
        out: &mut Vec<Action<C, M>>,
    ) {
        if to == self.me {
            self.on_msg(self.me, msg, now_usec, out);
        } else {
            out.push(Action::ToShard { shard: to, msg });
        }
    }

    /// A LINK whose Lookup or Join a queue refused: its leg closes with RESOURCELIMIT.
    fn refuse_link(&mut self, leg: LegRef<C>, now_usec: u64, out: &mut Vec<Action<C, M>>) {
        self.stats.table_full_total += 1;
        self.route(
            leg.shard,
            CfxMsg::Close {
                circ: leg.circ,
                reason: DestroyReason::ResourceLimit,
            },
            now_usec,
            out,
        );
    }

    /// How many Forgets a full queue refused are waiting to be sent again.
    pub fn forgets_owed(&self) -> usize {
        self.owed.len()
    }

    /// Sends the Forgets a full queue refused again (see [`Self::send_failed`]). Also
    /// called from the shard's periodic tick: on a quiet shard no other message would
    /// carry them, and the home's directory entry would stay.
    pub fn resend_owed(&mut self, out: &mut Vec<Action<C, M>>) {
        if self.owed.is_empty() {
            return;
        }
        let owner = self.me;
        for (nonce, route) in self.owed.drain() {
            let home = home_shard(&nonce, self.shards, &self.key) as ShardNo;
            // A Forget is owed only toward another shard (one to ourselves runs at once).
            out.push(Action::ToShard {
                shard: home,
                msg: CfxMsg::Forget {
                    nonce,
                    owner,
                    route,
                },
            });
        }
    }

    // ---- the home shard ----------------------------------------------------------------

    /// The join of `route` for `nonce` to `owner` never left this (home) shard: undo it.
    /// The node hands a refused message back before this shard handles another, so it is
    /// the newest route of the entry.
    fn unroute(&mut self, nonce: &Nonce, owner: ShardNo, route: u32) {
        let Some(e) = self.dir.get_mut(nonce) else {
            return;
        };
        if e.owner != owner || e.route != route {
            return;
        }
        if route <= 1 {
            // This join made the entry: no LINK reached the owner through it.
            self.dir.remove(nonce);
        } else {
            e.route = route - 1;
        }
    }

    fn home_lookup(
        &mut self,
        leg: LegRef<C>,
        link: Link,
        state: LegSendState,
        now_usec: u64,
        out: &mut Vec<Action<C, M>>,
    ) {
        let full = self.dir.len() >= self.limits.max_dir;
        let (owner, route) = match self.dir.get_mut(&link.nonce) {
            Some(e) => {
                e.route = e.route.wrapping_add(1);
                (e.owner, e.route)
            }
            None if full => {
                self.stats.table_full_total += 1;
                let reason = DestroyReason::ResourceLimit;
                self.route(
                    leg.shard,
                    CfxMsg::Close {
                        circ: leg.circ,
                        reason,
                    },
                    now_usec,
                    out,
                );
                return;
            }
            None => {
                self.dir.insert(
                    link.nonce,
                    DirEntry {
                        owner: leg.shard,
                        route: 1,
                    },
                );
                (leg.shard, 1)
            }
        };
        self.route(
            owner,
            CfxMsg::Join {
                leg,
                link,
                state,
                route,
            },
            now_usec,
            out,
        );
    }

    // ---- the owner ---------------------------------------------------------------------

    fn owner_join(
        &mut self,
        leg: LegRef<C>,
        link: Link,
        state: LegSendState,
        route: u32,
        now_usec: u64,
        out: &mut Vec<Action<C, M>>,
    ) {
        let nonce = link.nonce;
        let before = self
            .sets
            .any_leg_of_nonce(&nonce)
            .map_or([None; super::set::MAX_LEGS], |l| self.sets.legs_of(l));
        let set_before = before
            .iter()
            .flatten()
            .next()
            .and_then(|&l| self.sets.set_key(l));
        match self.sets.on_link_parsed(leg, LIVE, link, now_usec) {
            Ok(l) => {
                let r = self.routes.entry(nonce).or_insert(route);
                *r = (*r).max(route);
                if leg.shard != self.me {
                    self.stats.remote_legs_total += 1;
                    self.remote.insert(
                        leg,
                        Snapshot {
                            state,
                            issued: 0,
                            done: 0,
                        },
                    );
                }
                let me = self.me;
                self.route(
                    leg.shard,
                    CfxMsg::Linked {
                        circ: leg.circ,
                        owner: me,
                        link: l.linked,
                    },
                    now_usec,
                    out,
                );
            }
            Err(r) => {
                let e = self.routes.entry(nonce).or_insert(route);
                *e = (*e).max(route);
                self.apply_refused(leg, r, out);
                match set_before {
                    Some(set) => self.settle(set, Some(nonce), before, out),
                    None => self.forget_if_gone(nonce, out),
                }
            }
        }
    }

    fn owner_cell(
        &mut self,
        leg: LegRef<C>,
        cmd: RelayCmd,
        facts: LegFacts,
        msg: M,
        out: &mut Vec<Action<C, M>>,
    ) {
        let Some(set) = self.sets.set_key(leg) else {
            self.stats.stale_msgs_total += 1;
            return;
        };
        let nonce = self.sets.set_of(leg).map(|(n, _)| n);
        let before = self.sets.legs_of(leg);
        match self.sets.on_cell(leg, cmd, facts, (cmd, msg)) {
            super::Inbound::Deliver((cmd, msg)) | super::Inbound::NotSequenced((cmd, msg)) => {
                out.push(Action::Deliver { set, cmd, msg });
                while let Some((cmd, msg)) = self.sets.pop_ready(leg) {
                    out.push(Action::Deliver { set, cmd, msg });
                }
            }
            super::Inbound::Held => {}
            super::Inbound::Refused(r) => {
                self.apply_refused(leg, r, out);
                self.settle(set, nonce, before, out);
            }
        }
    }

    /// A per-leg operation on the owner (LINKED_ACK, SWITCH); a refusal closes as the table
    /// says. `resume`: on success the leg may have become usable.
    fn owner_op<T>(
        &mut self,
        leg: LegRef<C>,
        out: &mut Vec<Action<C, M>>,
        op: impl FnOnce(&mut Self) -> Result<T, Refused<LegRef<C>>>,
        resume: bool,
    ) {
        let Some(set) = self.sets.set_key(leg) else {
            self.stats.stale_msgs_total += 1;
            return;
        };
        let nonce = self.sets.set_of(leg).map(|(n, _)| n);
        let before = self.sets.legs_of(leg);
        match op(self) {
            Ok(_) => {
                if resume {
                    out.push(Action::Resume { set });
                }
            }
            Err(r) => {
                self.apply_refused(leg, r, out);
                self.settle(set, nonce, before, out);
            }
        }
    }

    fn apply_refused(
        &mut self,
        leg: LegRef<C>,
        r: Refused<LegRef<C>>,
        out: &mut Vec<Action<C, M>>,
    ) {
        self.close_legs(std::iter::once(leg), r.this, out);
        self.close_legs(r.others.circs(), r.others.reason, out);
    }

    /// Closes legs the table already forgot: local ones at once, remote ones by message.
    fn close_legs(
        &mut self,
        legs: impl Iterator<Item = LegRef<C>>,
        reason: DestroyReason,
        out: &mut Vec<Action<C, M>>,
    ) {
        for leg in legs {
            self.remote.remove(&leg);
            if leg.shard == self.me {
                if self.legs.remove(&leg.circ).is_some() {
                    out.push(Action::Close {
                        circ: leg.circ,
                        reason,
                    });
                }
            } else {
                out.push(Action::ToShard {
                    shard: leg.shard,
                    msg: CfxMsg::Close {
                        circ: leg.circ,
                        reason,
                    },
                });
            }
        }
    }

    /// After legs left set `set` (whose legs were `before`): drop the snapshots of those
    /// gone; if the set is gone, end its streams and free its directory entry.
    fn settle(
        &mut self,
        set: SetKey,
        nonce: Option<Nonce>,
        before: [Option<LegRef<C>>; super::set::MAX_LEGS],
        out: &mut Vec<Action<C, M>>,
    ) {
        for l in before.iter().flatten() {
            if self.sets.leg_of(*l).is_none() {
                self.remote.remove(l);
            }
        }
        if self.sets.is_live(set) {
            return;
        }
        out.push(Action::SetGone { set });
        if let Some(n) = nonce {
            self.forget_if_gone(n, out);
        }
    }

    fn forget_if_gone(&mut self, nonce: Nonce, out: &mut Vec<Action<C, M>>) {
        if self.sets.has_nonce(&nonce) {
            return;
        }
        let Some(route) = self.routes.remove(&nonce) else {
            return;
        };
        let home = home_shard(&nonce, self.shards, &self.key) as ShardNo;
        let owner = self.me;
        self.route(
            home,
            CfxMsg::Forget {
                nonce,
                owner,
                route,
            },
            0,
            out,
        );
    }
}
