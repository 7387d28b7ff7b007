//! The introduction point and rendezvous point in the circuit core: the sans-IO decisions
//! of [`crate::proto::hs`] carried out on this relay's circuits (rend-spec-v3; C tor
//! `hs_intropoint.c`, `rendmid.c`, and the splice in `relay.c` `circuit_receive_relay_cell`).
//!
//! * Every circuit keeps its handshake's KH (C tor `rend_circ_nonce`, the 20 bytes the KDF
//!   emits after the tor1 keys) for the ESTABLISH_INTRO MAC, and its [`HsCircState`].
//! * ESTABLISH_INTRO, INTRODUCE1, ESTABLISH_RENDEZVOUS and RENDEZVOUS1 addressed to us are
//!   checked on the circuit's shard; the key's or cookie's table lives on its home shard
//!   (`hs_cross.rs`), which may be this one (then the messages are carried out at once).
//!   INTRO_ESTABLISHED, INTRODUCE2 (the INTRODUCE1's bytes, verbatim) + INTRODUCE_ACK,
//!   RENDEZVOUS_ESTABLISHED and RENDEZVOUS2 are originated toward each circuit's client side
//!   on the shard that owns it.
//! * The splice: a RELAY cell from the previous hop of a joined circuit that our layer does
//!   not recognize has had that circuit's forward layer removed; it gets the partner's
//!   backward layer (no digest: C tor runs the partner's inbound `relay_decrypt_cell`, which
//!   at a middle only adds the layer) and goes to the partner's previous hop as RELAY (C tor:
//!   "can't be relay_early anyway"). A partner on another shard gets the cell as
//!   [`HsMsg::Spliced`] and adds its layer there. The end-to-end layer and SENDMEs belong to
//!   the client and the service: the rendezvous point does no flow control on spliced cells.
//! * Closing a circuit forgets its key or cookie (at home); closing one side of a splice
//!   closes the other with the same reason, on whichever shard it is.
//!
//! Crypting ahead (`relay_in.rs`) stays sound: the splice uses the partner's *backward*
//! keystream, and a joined circuit has no next hop, so no backward cell of it is ever staged.

use std::time::Instant;

use super::core::{CoreIo, RelayCore};
use super::crypto::{CellBody, HopCrypto};
use super::hs_cross::{
    hs_body, CircRef, HsCrossCounters, HsMsg, JoinResult, REND_JOINING_HOLD_MAX,
};
use super::pool::CellQueue;
use super::table::{CircHandle, Next};
use super::{Action, NetworkView, PeerIdentity, ProtocolViolation, ShardIdx};
use crate::cell::chan::DestroyReason;
use crate::cell::relay::v0;
use crate::cell::relay::RelayCmd;
use crate::cell::ChanCmd;
use crate::proto::hs::cells::{encode_intro_established, encode_rendezvous2, IntroduceAck};
use crate::proto::hs::intro::{IntroCounters, IntroDosParams, IntroPoint, Introduce1Outcome};
use crate::proto::hs::rend::{EstablishRendOutcome, RendCounters, RendPoint};
use crate::proto::hs::{home_shard, CircFacts, HsCircState, HsRole};

/// Most entries in one shard's intro-point table and in its rendezvous table (never more
/// than the shard's circuit table). C tor's maps are unbounded; a full table refuses with
/// RESOURCELIMIT and is counted (`est_intro_table_full`, `est_rend_table_full`).
pub const HS_TABLE_MAX: usize = 16_384;

/// Per circuit slot: what a circuit's onion-service role needs.
#[derive(Clone, Copy, Default)]
struct HsSlot {
    /// KH of the circuit's handshake (C tor `rend_circ_nonce`).
    kh: [u8; 20],
    state: HsCircState,
    /// The other circuit of a splice, on any shard.
    splice: Option<CircRef>,
    /// Unrecognized cells of a `RendJoining` service circuit, in the shard's cell pool (so
    /// the memory cap counts them), until the join passes them through the splice.
    held: CellQueue,
    /// The last circuit of this slot that closed while `RendJoining`, and its reason: the
    /// client's side, joined meanwhile on its shard, closes with it (C tor marks the
    /// splice partner with the closing circuit's own reason). Kept across the slot's reuse.
    closed_joining: Option<(CircHandle, DestroyReason)>,
}

/// One shard's onion-service relay state (inside its [`RelayCore`]).
pub(super) struct HsRelay {
    /// Indexed by circuit slot; grows with the circuit table's slots ([`HsRelay::cover`]),
    /// never past its bound.
    slots: Vec<HsSlot>,
    /// The keys and cookies whose home is this shard (created at the first use; their
    /// tables reserve their memory then). Entries name circuits of any shard.
    intro: Option<IntroPoint<CircRef>>,
    rend: Option<RendPoint<CircRef>>,
    capacity: usize,
    dos: IntroDosParams,
    /// Consensus `DoSRefuseSingleHopClientRendezvous` (C `dos_should_refuse_single_hop_client`;
    /// Fors refuses the torrc option).
    refuse_single_hop: bool,
    /// Shards of this relay: picks each key's and cookie's home.
    pub(super) shards: usize,
    /// The cross-shard waits and bounds (`hs_cross.rs`).
    cross: HsCrossCounters,
}

impl HsRelay {
    pub(super) fn new(max_circuits: usize) -> HsRelay {
        HsRelay {
            // As many as the circuit table starts with; `cover` adds the rest as it grows.
            slots: vec![HsSlot::default(); max_circuits.min(super::table::SLOT_CHUNK)],
            intro: None,
            rend: None,
            capacity: max_circuits.clamp(1, HS_TABLE_MAX),
            dos: IntroDosParams::default(),
            refuse_single_hop: false,
            shards: 1,
            cross: HsCrossCounters::default(),
        }
    }

    fn intro(&mut self, now: Instant) -> &mut IntroPoint<CircRef> {
        let (cap, dos) = (self.capacity, self.dos);
        self.intro
            .get_or_insert_with(|| IntroPoint::new(cap, dos, now))
    }

    fn rend(&mut self) -> &mut RendPoint<CircRef> {
        let cap = self.capacity;
        self.rend.get_or_insert_with(|| RendPoint::new(cap))
    }

    /// Makes room for circuit slots below `slots` (the circuit table's count after an
    /// insert): a resize only when the table grew by a chunk, never per cell.
    pub(super) fn cover(&mut self, slots: usize) {
        if self.slots.len() < slots {
            self.slots.reserve_exact(slots - self.slots.len());
            self.slots.resize(slots, HsSlot::default());
        }
    }

    /// Gives back the slots at and above `slots` after the circuit table released its
    /// top chunks (`RelayCore::trim_memory`; no live circuit is there, and a slot is
    /// rewritten when a circuit takes it) — all but those up to the last that still keeps
    /// a `closed_joining` record for a `RendJoined` on its way.
    pub(super) fn uncover(&mut self, slots: usize) {
        let Some(tail) = self.slots.get(slots..) else {
            return;
        };
        let keep = tail
            .iter()
            .rposition(|s| s.closed_joining.is_some())
            .map_or(slots, |p| slots + p + 1);
        self.slots.truncate(keep);
        self.slots.shrink_to(keep);
    }

    fn slot(&mut self, idx: u32) -> &mut HsSlot {
        &mut self.slots[idx as usize]
    }
}

impl<C: HopCrypto, N: NetworkView> RelayCore<C, N> {
    /// A circuit's handshake finished: keep its KH, start from a plain role.
    pub(super) fn hs_circuit_opened(&mut self, idx: u32, kh: &[u8; 20]) {
        let closed_joining = self.hs.slot(idx).closed_joining;
        *self.hs.slot(idx) = HsSlot {
            kh: *kh,
            closed_joining,
            ..HsSlot::default()
        };
    }

    /// The counters of the onion-service waits and bounds across shards (held cells of a
    /// joining circuit, messages refused at the cross-shard overflow bound).
    pub fn hs_cross_counters(&self) -> HsCrossCounters {
        self.hs.cross
    }

    /// The intro-point and rendezvous-point counters of this shard.
    pub fn hs_counters(&self) -> (IntroCounters, RendCounters) {
        (
            self.hs
                .intro
                .as_ref()
                .map(|i| i.counters)
                .unwrap_or_default(),
            self.hs
                .rend
                .as_ref()
                .map(|r| r.counters)
                .unwrap_or_default(),
        )
    }

    /// Intro circuits and rendezvous cookies whose home is this shard.
    pub fn hs_table_sizes(&self) -> (usize, usize) {
        (
            self.hs.intro.as_ref().map_or(0, |i| i.len()),
            self.hs.rend.as_ref().map_or(0, |r| r.len()),
        )
    }

    /// The onion-service consensus parameters (C tor reads them as each cell comes; the
    /// shard passes each new consensus).
    pub(super) fn set_hs_consensus_params(&mut self, p: &crate::dir::params::ConsensusParams) {
        let dos = IntroDosParams::from_consensus(|name| p.raw.get(name).copied());
        self.hs.dos = dos;
        self.hs.refuse_single_hop = p.dos.refuse_single_hop_client_rendezvous;
        if let Some(i) = self.hs.intro.as_mut() {
            i.set_consensus_params(dos);
        }
    }

    fn hs_facts(&self, idx: u32) -> CircFacts {
        let c = self.table.get(idx).expect("live");
        CircFacts {
            // C tor: `!circ->n_chan` (an extend still pending has none yet).
            is_last_hop: !matches!(c.next, Next::Open(_)),
            from_client_channel: c.prev_peer == PeerIdentity::Client,
        }
    }

    fn hs_ref(&self, circ: CircHandle) -> CircRef {
        CircRef {
            shard: self.cfg.shard,
            circ,
        }
    }

    /// The home shard of an auth key or a cookie.
    fn hs_home(&self, key: &[u8]) -> ShardIdx {
        ShardIdx(home_shard(key, self.hs.shards, &self.cfg.home_key) as u16)
    }

    /// Our live circuit `circ` if it has `role`-like state (`want`).
    fn hs_resolve(&self, circ: CircHandle, want: impl Fn(HsRole) -> bool) -> Option<u32> {
        let idx = self.table.resolve(circ)?;
        want(self.hs.slots[idx as usize].state.role).then_some(idx)
    }

    /// Gives `msg` to shard `to`: carried out here at once when that is this shard.
    fn hs_route(&mut self, to: ShardIdx, msg: HsMsg, io: &mut CoreIo<'_>) {
        if to == self.cfg.shard {
            self.handle_hs_msg_inner(msg, io);
        } else {
            io.out.push(Action::Hs { to, msg });
        }
    }

    /// Originates `body` as `cmd` (stream 0) toward the client side of `idx`.
    fn hs_send(&mut self, idx: u32, cmd: RelayCmd, body: &[u8], io: &mut CoreIo<'_>) -> bool {
        self.originate(
            idx,
            cmd,
            0,
            |out| {
                let max = out.len();
                let out = out
                    .get_mut(..body.len())
                    .ok_or(crate::cell::CellError::TooLong {
                        what: "onion-service message",
                        len: body.len(),
                        max,
                    })?;
                out.copy_from_slice(body);
                Ok(body.len())
            },
            io,
        )
        .is_some()
    }

    /// Closes a circuit the onion-service rules refused: TORPROTOCOL is noted for the
    /// shard's debug line (the HS counters say which rule), anything else closes as is.
    fn hs_close(&mut self, idx: u32, reason: DestroyReason, io: &mut CoreIo<'_>) {
        if reason == DestroyReason::TorProtocol {
            self.close_refused(idx, ProtocolViolation::OnionServiceRole, io);
        } else {
            self.close(idx, reason, true, true, io);
        }
    }

    /// Closes `circ` (on any shard) with `reason`; `splice_gone`: its splice partner is
    /// closed already, so it must not be closed back.
    fn hs_close_ref(
        &mut self,
        circ: CircRef,
        reason: DestroyReason,
        splice_gone: bool,
        io: &mut CoreIo<'_>,
    ) {
        let msg = HsMsg::Close {
            circ: circ.circ,
            reason,
            splice_gone,
        };
        self.hs_route(circ.shard, msg, io);
    }

    /// A recognized ESTABLISH_INTRO, INTRODUCE1, ESTABLISH_RENDEZVOUS or RENDEZVOUS1 on
    /// `idx`. Returns false if the circuit closed.
    pub(super) fn handle_hs(
        &mut self,
        idx: u32,
        cmd: RelayCmd,
        data: &[u8],
        io: &mut CoreIo<'_>,
    ) -> bool {
        let me = self.table.handle(idx);
        self.handle_hs_cell(idx, me, cmd, data, io);
        self.sync_hs_metrics();
        self.table.resolve(me).is_some()
    }

    /// Copies the intro/rendezvous counters and table sizes into [`CircuitMetrics`] (off
    /// the per-cell path: only after an onion-service cell or message, or the close of such
    /// a circuit).
    ///
    /// [`CircuitMetrics`]: super::CircuitMetrics
    fn sync_hs_metrics(&mut self) {
        let (intro, rend) = self.hs_counters();
        let tables = self.hs_table_sizes();
        self.metrics.set_hs(&intro, &rend, tables);
        self.metrics.set_hs_cross(&self.hs.cross);
    }

    /// The circuit's half of each request: checks here, then the table's half at home.
    fn handle_hs_cell(
        &mut self,
        idx: u32,
        me: CircHandle,
        cmd: RelayCmd,
        data: &[u8],
        io: &mut CoreIo<'_>,
    ) {
        let me = self.hs_ref(me);
        let facts = self.hs_facts(idx);
        let mut st = self.hs.slot(idx).state;
        match cmd {
            RelayCmd::ESTABLISH_INTRO => {
                let kh = self.hs.slot(idx).kh;
                let checked = self
                    .hs
                    .intro(io.now)
                    .check_establish_intro(&st, facts, data, &kh);
                match checked {
                    Ok((key, dos)) => {
                        // Its close from now on unregisters the key (if still its own).
                        self.hs.slot(idx).state.role = HsRole::IntroPoint(key);
                        let home = self.hs_home(&key);
                        self.hs_route(home, HsMsg::IntroRegister { circ: me, key, dos }, io);
                    }
                    Err(r) => self.hs_close(idx, r, io),
                }
            }
            RelayCmd::INTRODUCE1 => {
                let checked = self.hs.intro(io.now).check_introduce1(&mut st, facts, data);
                self.hs.slot(idx).state = st;
                match checked {
                    Ok(cell) => {
                        let key = *cell.auth_key;
                        let (len, body) = hs_body(data);
                        let home = self.hs_home(&key);
                        let msg = HsMsg::Introduce1 {
                            client: me,
                            key,
                            len,
                            body,
                        };
                        self.hs_route(home, msg, io);
                    }
                    Err(Introduce1Outcome::Ack(status)) => self.hs_send_ack(idx, status, io),
                    Err(Introduce1Outcome::Close(r)) => self.hs_close(idx, r, io),
                    // `check_introduce1` never forwards.
                    Err(Introduce1Outcome::Forward { .. }) => {
                        self.hs_close(idx, DestroyReason::Internal, io)
                    }
                }
            }
            RelayCmd::ESTABLISH_RENDEZVOUS => {
                let single = self.hs.refuse_single_hop;
                match self
                    .hs
                    .rend()
                    .check_establish_rendezvous(&st, facts, single, data)
                {
                    Ok(cookie) => {
                        self.hs.slot(idx).state.role = HsRole::RendWaiting(cookie);
                        let home = self.hs_home(&cookie);
                        self.hs_route(home, HsMsg::RendRegister { circ: me, cookie }, io);
                    }
                    Err(EstablishRendOutcome::Ignore) => {}
                    Err(EstablishRendOutcome::Close(r)) => self.hs_close(idx, r, io),
                    Err(EstablishRendOutcome::Established { .. }) => {
                        self.hs_close(idx, DestroyReason::Internal, io)
                    }
                }
            }
            RelayCmd::RENDEZVOUS1 => match self.hs.rend().check_rendezvous1(&st, facts, data) {
                Ok(cell) => {
                    let cookie = *cell.cookie;
                    let (len, body) = hs_body(cell.handshake_info);
                    self.hs.slot(idx).state.role = HsRole::RendJoining;
                    let home = self.hs_home(&cookie);
                    let msg = HsMsg::Rendezvous1 {
                        service: me,
                        cookie,
                        len,
                        body,
                    };
                    self.hs_route(home, msg, io);
                }
                Err(r) => self.hs_close(idx, r, io),
            },
            _ => {}
        }
    }

    fn hs_send_ack(
        &mut self,
        idx: u32,
        status: crate::proto::hs::cells::AckStatus,
        io: &mut CoreIo<'_>,
    ) {
        let mut buf = [0u8; 8];
        let n = IntroduceAck::encode(status, &mut buf).expect("fits");
        self.hs_send(idx, RelayCmd::INTRODUCE_ACK, &buf[..n], io);
    }

    /// A message from another shard's core (`Action::Hs` it emitted, carried by the node).
    pub fn handle_hs_msg(&mut self, msg: HsMsg, io: &mut CoreIo<'_>) {
        let per_cell = msg.is_relay_cell();
        self.handle_hs_msg_inner(msg, io);
        if !per_cell {
            self.sync_hs_metrics();
        }
    }

    fn handle_hs_msg_inner(&mut self, msg: HsMsg, io: &mut CoreIo<'_>) {
        let now = io.now;
        match msg {
            HsMsg::IntroRegister { circ, key, dos } => {
                let result = self.hs.intro(now).register(circ, key, dos, now);
                if let Ok(Some(old)) = result {
                    if old != circ {
                        self.hs_close_ref(old, DestroyReason::Finished, false, io);
                    }
                }
                let msg = HsMsg::IntroRegistered {
                    circ: circ.circ,
                    result: result.map(|_| ()),
                };
                self.hs_route(circ.shard, msg, io);
            }
            HsMsg::IntroRegistered { circ, result } => {
                let Some(idx) = self.hs_resolve(circ, |r| matches!(r, HsRole::IntroPoint(_)))
                else {
                    return; // closed meanwhile; its close unregistered the key
                };
                match result {
                    Ok(()) => {
                        let mut buf = [0u8; 8];
                        let n = encode_intro_established(&mut buf).expect("fits a cell");
                        self.hs_send(idx, RelayCmd::INTRO_ESTABLISHED, &buf[..n], io);
                    }
                    Err(r) => self.hs_close(idx, r, io),
                }
            }
            HsMsg::IntroUnregister { circ, key } => {
                if let Some(i) = self.hs.intro.as_mut() {
                    i.unregister(&key, circ);
                }
            }
            HsMsg::Introduce1 {
                client,
                key,
                len,
                body,
            } => match self.hs.intro(now).route_introduce1(&key, now) {
                Ok(service) => {
                    if service.shard != client.shard {
                        self.metrics.hs_cross_shard_intros += 1;
                    }
                    let msg = HsMsg::Introduce2 {
                        client,
                        service: service.circ,
                        len,
                        body,
                    };
                    self.hs_route(service.shard, msg, io);
                }
                Err(status) => {
                    let msg = HsMsg::IntroduceAck {
                        client: client.circ,
                        status,
                    };
                    self.hs_route(client.shard, msg, io);
                }
            },
            HsMsg::Introduce2 {
                client,
                service,
                len,
                body,
            } => {
                let sent = match self.hs_resolve(service, |r| matches!(r, HsRole::IntroPoint(_))) {
                    Some(s) => self.hs_send_introduce2(s, &body[..usize::from(len)], io),
                    None => false, // the intro circuit closed meanwhile
                };
                let status = self.hs.intro(now).introduce2_sent(sent);
                let msg = HsMsg::IntroduceAck {
                    client: client.circ,
                    status,
                };
                self.hs_route(client.shard, msg, io);
            }
            HsMsg::IntroduceAck { client, status } => {
                if let Some(idx) = self.table.resolve(client) {
                    self.hs_send_ack(idx, status, io);
                }
            }
            HsMsg::RendRegister { circ, cookie } => {
                let result = match self.hs.rend().register(circ, cookie) {
                    EstablishRendOutcome::Established { replaced } => {
                        if let Some(old) = replaced.filter(|&o| o != circ) {
                            self.hs_close_ref(old, DestroyReason::Finished, false, io);
                        }
                        Ok(())
                    }
                    EstablishRendOutcome::Close(r) => Err(r),
                    EstablishRendOutcome::Ignore => Err(DestroyReason::Internal),
                };
                let msg = HsMsg::RendRegistered {
                    circ: circ.circ,
                    result,
                };
                self.hs_route(circ.shard, msg, io);
            }
            HsMsg::RendRegistered { circ, result } => {
                let Some(idx) = self.hs_resolve(circ, |r| matches!(r, HsRole::RendWaiting(_)))
                else {
                    return;
                };
                match result {
                    Ok(()) => {
                        self.hs_send(idx, RelayCmd::RENDEZVOUS_ESTABLISHED, &[], io);
                    }
                    Err(r) => {
                        // The cookie belongs to another circuit: this one's close must not
                        // unregister it (the home table checks the circuit too).
                        self.hs_close(idx, r, io);
                    }
                }
            }
            HsMsg::RendUnregister { circ, cookie } => {
                if let Some(r) = self.hs.rend.as_mut() {
                    r.unregister(&cookie, circ);
                }
            }
            HsMsg::Rendezvous1 {
                service,
                cookie,
                len,
                body,
            } => match self.hs.rend().take_waiting(&cookie) {
                Some(client) => {
                    if client.shard != service.shard {
                        self.metrics.hs_cross_shard_joins += 1;
                    }
                    let msg = HsMsg::Rendezvous2 {
                        client: client.circ,
                        service,
                        cookie,
                        len,
                        body,
                    };
                    self.hs_route(client.shard, msg, io);
                }
                None => {
                    let msg = HsMsg::RendJoined {
                        service: service.circ,
                        result: JoinResult::NoClient,
                    };
                    self.hs_route(service.shard, msg, io);
                }
            },
            HsMsg::Rendezvous2 {
                client,
                service,
                cookie,
                len,
                body,
            } => {
                let result =
                    self.hs_join_client(client, service, &cookie, &body[..usize::from(len)], io);
                let msg = HsMsg::RendJoined {
                    service: service.circ,
                    result,
                };
                self.hs_route(service.shard, msg, io);
            }
            HsMsg::RendJoined { service, result } => {
                let Some(idx) = self.hs_resolve(service, |r| r == HsRole::RendJoining) else {
                    // The service's circuit closed before the join finished: the client's
                    // side goes with it, with the service's own reason, as the other side
                    // of any splice (C tor `circuit_mark_for_close_`).
                    let slot = self.hs.slots.get_mut(service.idx as usize);
                    let closed = slot.and_then(|s| {
                        let c = s.closed_joining.filter(|&(h, _)| h == service);
                        if c.is_some() {
                            s.closed_joining = None;
                        }
                        c
                    });
                    if let JoinResult::Joined(c) = result {
                        // Without a record (the slot's next circuit also closed while
                        // joining, within this round trip) the reason is as for a DESTROY.
                        let reason = closed.map_or(DestroyReason::Destroyed, |(_, r)| {
                            crate::proto::hs::splice_close_reason(r)
                        });
                        self.hs_close_ref(c, reason, true, io);
                    }
                    return;
                };
                match result {
                    JoinResult::Joined(c) => {
                        let s = self.hs.slot(idx);
                        s.state.role = HsRole::RendJoined { cookie: None };
                        s.splice = Some(c);
                        self.hs_release_held(idx, io);
                    }
                    JoinResult::SendFailed => {
                        self.hs.slot(idx).state.role = HsRole::Plain;
                        if !self.hs.slots[idx as usize].held.is_empty() {
                            // C tor's circuit stays unspliced, and the first of these cells
                            // meets it at its last hop: TORPROTOCOL (held cells dropped and
                            // counted by the close).
                            self.protocol_close(
                                idx,
                                super::ProtocolViolation::UnrecognizedAtLastHop,
                                io,
                            );
                        }
                    }
                    JoinResult::NoClient => self.hs_close(idx, DestroyReason::TorProtocol, io),
                }
            }
            HsMsg::Spliced { from, to, body } => self.splice_in(from, to, body, io),
            HsMsg::Close {
                circ,
                reason,
                splice_gone,
            } => {
                if let Some(idx) = self.table.resolve(circ) {
                    if splice_gone {
                        self.hs.slot(idx).splice = None;
                    }
                    self.close(idx, reason, true, true, io);
                }
            }
        }
    }

    /// INTRODUCE2 with the INTRODUCE1's bytes on intro circuit `idx` (C tor
    /// `handle_introduce1`). Over-long INTRODUCE1s were NACKed before the lookup
    /// (`IntroPoint::check_introduce1`); should a body still not fit the circuit's relay
    /// cell format, C tor's `relay_send_command_from_edge_` closes the circuit it could not
    /// send on with INTERNAL, and the client hears "unknown ID".
    fn hs_send_introduce2(&mut self, idx: u32, body: &[u8], io: &mut CoreIo<'_>) -> bool {
        if self.hs_send(idx, RelayCmd::INTRODUCE2, body, io) {
            return true;
        }
        if self.table.get(idx).is_some() {
            self.close(idx, DestroyReason::Internal, true, true, io);
        }
        false
    }

    /// RENDEZVOUS2 on the client's waiting circuit `client` and its side of the join.
    fn hs_join_client(
        &mut self,
        client: CircHandle,
        service: CircRef,
        cookie: &crate::proto::hs::cells::RendCookie,
        info: &[u8],
        io: &mut CoreIo<'_>,
    ) -> JoinResult {
        let Some(ci) = self.hs_resolve(client, |r| r == HsRole::RendWaiting(*cookie)) else {
            // Gone since home looked (its close unregisters the cookie): as C tor answers
            // a cookie with no waiting circuit.
            self.hs.rend().counters.rend1_unknown_cookie += 1;
            return JoinResult::NoClient;
        };
        let mut buf = [0u8; v0::MAX_DATA_LEN];
        let n = encode_rendezvous2(info, &mut buf).expect("shorter than RENDEZVOUS1");
        if !self.hs_send(ci, RelayCmd::RENDEZVOUS2, &buf[..n], io) {
            self.hs.rend().counters.rend1_circuit_dead += 1;
            return JoinResult::SendFailed;
        }
        self.hs.rend().counters.rend1_success += 1;
        let s = self.hs.slot(ci);
        s.state.role = HsRole::RendJoined {
            cookie: Some(*cookie),
        };
        s.splice = Some(service);
        JoinResult::Joined(self.hs_ref(client))
    }

    /// An unrecognized forward cell on `idx`, which has no next hop, with `idx`'s forward
    /// layer removed. `None` if the circuit is not spliced (the caller closes it); otherwise
    /// whether `idx` is still open after the cell went to the partner. The partner's
    /// backward layer is added in place.
    pub(super) fn splice_forward(
        &mut self,
        idx: u32,
        body: &mut CellBody,
        io: &mut CoreIo<'_>,
    ) -> Option<bool> {
        let slot = &self.hs.slots[idx as usize];
        if slot.state.role == HsRole::RendJoining {
            return Some(self.hs_hold_joining(idx, body, io));
        }
        if !matches!(slot.state.role, HsRole::RendJoined { .. }) {
            return None;
        }
        let p = slot.splice?;
        if p.shard != self.cfg.shard {
            self.metrics.cells_forwarded += 1;
            self.metrics.hs_cross_shard_splice_cells += 1;
            let from = self.table.handle(idx);
            io.out.push(Action::Hs {
                to: p.shard,
                msg: HsMsg::Spliced {
                    from,
                    to: p.circ,
                    body: *body,
                },
            });
            return Some(true);
        }
        let pi = self.table.resolve(p.circ)?;
        self.metrics.cells_forwarded += 1;
        self.splice_to(pi, body, io);
        Some(self.table.get(idx).is_some())
    }

    /// An unrecognized cell of `idx` between its RENDEZVOUS1 and the join (`RendJoining`):
    /// C tor would splice it (it joins at once), so it is held until the join and passed
    /// through then, in order. Past [`REND_JOINING_HOLD_MAX`], or with no pool buffer left,
    /// the circuit closes with RESOURCELIMIT (counted). Whether `idx` is still open.
    fn hs_hold_joining(&mut self, idx: u32, body: &CellBody, io: &mut CoreIo<'_>) -> bool {
        let stamp = self.stamp(io.now);
        let mut q = self.hs.slots[idx as usize].held;
        let held =
            q.len() < REND_JOINING_HOLD_MAX && self.pool.push(&mut q, ChanCmd::RELAY, body, stamp);
        self.hs.slots[idx as usize].held = q;
        self.update_queue_metrics();
        if !held {
            self.hs.cross.joining_overflow += 1;
            self.sync_hs_metrics();
            self.close(idx, DestroyReason::ResourceLimit, true, true, io);
            return false;
        }
        self.hs.cross.joining_held += 1;
        self.sync_hs_metrics();
        true
    }

    /// The join of `idx` completed: its held cells go through the splice in order.
    fn hs_release_held(&mut self, idx: u32, io: &mut CoreIo<'_>) {
        let mut body = [0u8; crate::cell::CELL_BODY_LEN];
        loop {
            let mut q = self.hs.slots[idx as usize].held;
            let popped = self.pool.pop(&mut q, &mut body).is_some();
            self.hs.slots[idx as usize].held = q;
            if !popped {
                break;
            }
            // A close on the way (the partner's queue bound) drops the rest, counted.
            match self.splice_forward(idx, &mut body, io) {
                Some(open) => {
                    self.hs.cross.joining_spliced += 1;
                    if !open {
                        break;
                    }
                }
                None => {
                    self.hs.cross.joining_dropped += 1;
                    break;
                }
            }
        }
        // A local partner that closed meanwhile is closing `idx` too; drop what is left.
        if self.table.get(idx).is_some() {
            let mut q = ::core::mem::take(&mut self.hs.slots[idx as usize].held);
            self.hs.cross.joining_dropped += q.len() as u64;
            self.pool.clear(&mut q);
        }
        self.update_queue_metrics();
        self.sync_hs_metrics();
    }

    /// Adds `partner`'s backward layer to `body` and sends it toward its client side.
    fn splice_to(&mut self, partner: u32, body: &mut CellBody, io: &mut CoreIo<'_>) {
        // Cells this shard staged for the partner are crypted first, so its backward
        // keystream is used in the order cells leave (nothing to do when none is staged).
        self.flush_originated(io);
        let Some(crypto) = self.table.get_mut(partner).and_then(|c| c.crypto.as_mut()) else {
            return;
        };
        crypto.backward_relay(body);
        self.send_to_prev(partner, ChanCmd::RELAY, body, io);
    }

    /// A spliced cell from `from` on another shard for our circuit `to`.
    fn splice_in(
        &mut self,
        from: CircHandle,
        to: CircHandle,
        mut body: CellBody,
        io: &mut CoreIo<'_>,
    ) {
        let Some(idx) = self.table.resolve(to) else {
            return; // closed meanwhile; its close is on its way to `from`
        };
        let s = &self.hs.slots[idx as usize];
        if !matches!(s.state.role, HsRole::RendJoined { .. })
            || s.splice.is_none_or(|p| p.circ != from)
        {
            return;
        }
        // Counted as forwarded on the sending shard.
        self.splice_to(idx, &mut body, io);
    }

    /// A spliced cell of `from` could not be queued toward its partner's shard (the
    /// cross-shard overflow is at its bound): `from` closes with RESOURCELIMIT, and with it
    /// the partner (counted).
    pub fn hs_splice_overflow(&mut self, from: CircHandle, io: &mut CoreIo<'_>) {
        if let Some(idx) = self.table.resolve(from) {
            self.metrics.hs_cross_shard_splice_overflow += 1;
            self.close(idx, DestroyReason::ResourceLimit, true, true, io);
        }
    }

    /// A message with a body (`HsMsg::has_body`) that the cross-shard overflow toward shard
    /// `to` refused (at its bound, or no pool buffer for it), carried out here as C tor
    /// answers what it cannot relay:
    /// * INTRODUCE1 (→ home) and INTRODUCE2 (→ the intro circuit's shard): the client gets
    ///   INTRODUCE_ACK UNKNOWN_ID, C tor's status when `relay_send_command_from_edge` of the
    ///   INTRODUCE2 fails (`handle_introduce1`); the intro circuit stays.
    /// * RENDEZVOUS1 (→ home): the service's circuit closes with RESOURCELIMIT (this relay's
    ///   resource, as C tor's cell-queue limit); the client's keeps waiting, its cookie
    ///   still registered.
    /// * RENDEZVOUS2 (→ the client's shard): the cookie is taken, so neither side can join:
    ///   both close with RESOURCELIMIT (C tor closes a circuit it failed to send
    ///   RENDEZVOUS2 on; here the service's would otherwise wait for a join that never
    ///   comes).
    pub fn hs_cross_refused(&mut self, to: ShardIdx, msg: HsMsg, io: &mut CoreIo<'_>) {
        match msg {
            HsMsg::Introduce1 { client, .. } => {
                self.hs.cross.overflow_introduce += 1;
                if let Some(idx) = self.table.resolve(client.circ) {
                    self.hs_send_ack(idx, crate::proto::hs::cells::AckStatus::UNKNOWN_ID, io);
                }
            }
            HsMsg::Introduce2 { client, .. } => {
                self.hs.cross.overflow_introduce += 1;
                let status = self.hs.intro(io.now).introduce2_sent(false);
                let msg = HsMsg::IntroduceAck {
                    client: client.circ,
                    status,
                };
                self.hs_route(client.shard, msg, io);
            }
            HsMsg::Rendezvous1 { service, .. } => {
                self.hs.cross.overflow_rendezvous += 1;
                if let Some(idx) = self.table.resolve(service.circ) {
                    self.close(idx, DestroyReason::ResourceLimit, true, true, io);
                }
            }
            HsMsg::Rendezvous2 {
                client, service, ..
            } => {
                self.hs.cross.overflow_rendezvous += 1;
                let client = CircRef {
                    shard: to,
                    circ: client,
                };
                self.hs_close_ref(client, DestroyReason::ResourceLimit, false, io);
                self.hs_close_ref(service, DestroyReason::ResourceLimit, false, io);
            }
            // Small answers are never refused (the overflow holds them unbounded by cells).
            _ => {}
        }
        self.sync_hs_metrics();
    }

    /// `idx` (`handle`) closed with `reason`: forget its key or cookie at home, and close
    /// the other side of its splice with the same reason (C tor `circuit_about_to_free`).
    pub(super) fn hs_circuit_closed(
        &mut self,
        idx: u32,
        handle: CircHandle,
        reason: DestroyReason,
        io: &mut CoreIo<'_>,
    ) {
        let mut slot = ::core::mem::take(self.hs.slot(idx));
        let me = self.hs_ref(handle);
        if !slot.held.is_empty() {
            self.hs.cross.joining_dropped += slot.held.len() as u64;
            self.pool.clear(&mut slot.held);
            self.update_queue_metrics();
        }
        // The slot keeps who closed while joining, and why, for the `RendJoined` to come.
        self.hs.slot(idx).closed_joining = if slot.state.role == HsRole::RendJoining {
            Some((handle, reason))
        } else {
            slot.closed_joining
        };
        match slot.state.role {
            HsRole::Plain => return,
            HsRole::IntroPoint(key) => {
                let home = self.hs_home(&key);
                self.hs_route(home, HsMsg::IntroUnregister { circ: me, key }, io);
            }
            HsRole::RendWaiting(cookie)
            | HsRole::RendJoined {
                cookie: Some(cookie),
            } => {
                let home = self.hs_home(&cookie);
                self.hs_route(home, HsMsg::RendUnregister { circ: me, cookie }, io);
            }
            HsRole::RendJoined { cookie: None } | HsRole::RendJoining => {}
        }
        if let HsRole::RendJoined { .. } = slot.state.role {
            self.hs.rend().counters.splices_closed += 1;
            if let Some(p) = slot.splice {
                let r = crate::proto::hs::splice_close_reason(reason);
                self.hs_close_ref(p, r, true, io);
            }
        }
        self.sync_hs_metrics();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_circuit_table_as_it_grows() {
        let chunk = super::super::table::SLOT_CHUNK;
        let mut hs = HsRelay::new(5 * chunk);
        // What the circuit table starts with, not its bound.
        assert_eq!(hs.slots.len(), chunk);
        hs.cover(2 * chunk);
        assert_eq!(hs.slots.len(), 2 * chunk);
        assert!(hs.slots.iter().all(|s| s.state == HsCircState::default()));
        hs.cover(chunk);
        assert_eq!(hs.slots.len(), 2 * chunk);
        hs.slot(2 * chunk as u32 - 1).kh = [7; 20];
        assert_eq!(hs.slots[2 * chunk - 1].kh, [7; 20]);
        // A bound below one chunk is allocated whole.
        assert_eq!(HsRelay::new(3).slots.len(), 3);
    }

    /// After the circuit table released its top chunks, the slots above go too, except up
    /// to the last one still holding a `closed_joining` record.
    #[test]
    fn uncover_follows_a_table_trim_but_keeps_closed_joining_records() {
        let chunk = super::super::table::SLOT_CHUNK;
        let mut hs = HsRelay::new(5 * chunk);
        hs.cover(4 * chunk);
        hs.slot(3 * chunk as u32 + 7).closed_joining =
            Some((CircHandle { idx: 0, gen: 1 }, DestroyReason::Finished));
        hs.uncover(chunk);
        assert_eq!(hs.slots.len(), 3 * chunk + 8);
        hs.slot(3 * chunk as u32 + 7).closed_joining = None;
        hs.uncover(chunk);
        assert_eq!(hs.slots.len(), chunk);
        assert!(hs.slots.capacity() < 2 * chunk);
        hs.uncover(2 * chunk);
        assert_eq!(hs.slots.len(), chunk);
    }
}
