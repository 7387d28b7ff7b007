//! The introduction point and rendezvous point in the circuit core: the sans-IO decisions
//! of [`crate::proto::hs`] carried out on this shard's circuits (rend-spec-v3; C tor
//! `hs_intropoint.c`, `rendmid.c`, and the splice in `relay.c` `circuit_receive_relay_cell`).
//!
//! * Every circuit keeps its handshake's KH (C tor `rend_circ_nonce`, the 20 bytes the KDF
//!   emits after the tor1 keys) for the ESTABLISH_INTRO MAC, and its [`HsCircState`].
//! * ESTABLISH_INTRO, INTRODUCE1, ESTABLISH_RENDEZVOUS and RENDEZVOUS1 addressed to us go to
//!   this shard's [`IntroPoint`] / [`RendPoint`]; INTRO_ESTABLISHED, INTRODUCE2 (the
//!   INTRODUCE1's bytes, verbatim) + INTRODUCE_ACK, RENDEZVOUS_ESTABLISHED and RENDEZVOUS2 are
//!   originated toward each circuit's client side.
//! * The splice: a RELAY cell from the previous hop of a joined circuit that our layer does
//!   not recognize has had that circuit's forward layer removed; it gets the partner's
//!   backward layer (no digest: C tor runs the partner's inbound `relay_decrypt_cell`, which
//!   at a middle only adds the layer) and goes to the partner's previous hop as RELAY (C tor:
//!   "can't be relay_early anyway"). The end-to-end layer and SENDMEs belong to the client
//!   and the service: the rendezvous point does no flow control on spliced cells.
//! * Closing a circuit forgets its key or cookie; closing one side of a splice closes the
//!   other with the same reason.
//!
//! Only tables of this shard are consulted, so a relay with more than one shard still
//! refuses the four requests with DESTROY TORPROTOCOL (cross-shard lookups are not built;
//! see docs/architecture.md, "Onion-service relay roles").
//!
//! Crypting ahead (`relay_in.rs`) stays sound: the splice uses the partner's *backward*
//! keystream, and a joined circuit has no next hop, so no backward cell of it is ever staged.

use std::time::Instant;

use super::core::{CoreIo, RelayCore};
use super::crypto::{CellBody, HopCrypto};
use super::table::{CircHandle, Next};
use super::{NetworkView, PeerIdentity, ProtocolViolation};
use crate::cell::chan::DestroyReason;
use crate::cell::relay::v0;
use crate::cell::relay::RelayCmd;
use crate::cell::{ChanCmd, CELL_BODY_LEN};
use crate::proto::hs::cells::{encode_intro_established, encode_rendezvous2, IntroduceAck};
use crate::proto::hs::intro::{
    EstablishIntroOutcome, IntroCounters, IntroDosParams, IntroPoint, Introduce1Outcome,
};
use crate::proto::hs::rend::{EstablishRendOutcome, RendCounters, RendPoint, Rendezvous1Outcome};
use crate::proto::hs::{CircFacts, HsCircState, HsRole};

/// Whether a relay with more than one shard serves the roles (lookups and splices across
/// shards). Until then only a one-shard relay serves and advertises them.
pub const HS_ACROSS_SHARDS: bool = false;

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
    /// The other circuit of a splice.
    splice: Option<CircHandle>,
}

/// One shard's onion-service relay state (inside its [`RelayCore`]).
pub(super) struct HsRelay {
    /// Indexed by circuit slot; sized with the circuit table, so never grows.
    slots: Vec<HsSlot>,
    /// Created at the first onion-service cell (their tables reserve their memory then).
    intro: Option<IntroPoint<CircHandle>>,
    rend: Option<RendPoint<CircHandle>>,
    capacity: usize,
    dos: IntroDosParams,
    /// Consensus `DoSRefuseSingleHopClientRendezvous` (C `dos_should_refuse_single_hop_client`;
    /// Fors refuses the torrc option).
    refuse_single_hop: bool,
    /// Shards of this relay. The tables are per shard and cross-shard lookups are not
    /// built yet, so with more than one shard the requests are refused as before the roles
    /// existed (DESTROY TORPROTOCOL, a C tor service moves on at once) rather than served
    /// for only the clients that happen to land on the intro circuit's shard.
    pub(super) shards: usize,
}

impl HsRelay {
    pub(super) fn new(max_circuits: usize) -> HsRelay {
        HsRelay {
            slots: vec![HsSlot::default(); max_circuits],
            intro: None,
            rend: None,
            capacity: max_circuits.clamp(1, HS_TABLE_MAX),
            dos: IntroDosParams::default(),
            refuse_single_hop: false,
            shards: 1,
        }
    }

    fn intro(&mut self, now: Instant) -> &mut IntroPoint<CircHandle> {
        let (cap, dos) = (self.capacity, self.dos);
        self.intro
            .get_or_insert_with(|| IntroPoint::new(cap, dos, now))
    }

    fn rend(&mut self) -> &mut RendPoint<CircHandle> {
        let cap = self.capacity;
        self.rend.get_or_insert_with(|| RendPoint::new(cap))
    }

    fn slot(&mut self, idx: u32) -> &mut HsSlot {
        &mut self.slots[idx as usize]
    }
}

impl<C: HopCrypto, N: NetworkView> RelayCore<C, N> {
    /// A circuit's handshake finished: keep its KH, start from a plain role.
    pub(super) fn hs_circuit_opened(&mut self, idx: u32, kh: &[u8; 20]) {
        *self.hs.slot(idx) = HsSlot {
            kh: *kh,
            ..HsSlot::default()
        };
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

    /// Intro circuits and rendezvous cookies held on this shard.
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

    /// Originates `body[..len]` as `cmd` (stream 0) toward the client side of `idx`.
    fn hs_send(&mut self, idx: u32, cmd: RelayCmd, body: &[u8], io: &mut CoreIo<'_>) -> bool {
        self.originate(
            idx,
            cmd,
            0,
            |out| {
                out[..body.len()].copy_from_slice(body);
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

    /// Closes `other` (if still live and not `idx`) with FINISHED: the older circuit of a
    /// replaced key or cookie (C tor `hs_circuitmap_register_impl`).
    fn hs_close_replaced(&mut self, idx: u32, other: Option<CircHandle>, io: &mut CoreIo<'_>) {
        if let Some(o) = other.and_then(|h| self.table.resolve(h)) {
            if o != idx {
                self.close(o, DestroyReason::Finished, true, true, io);
            }
        }
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
        let open = self.handle_hs_cell(idx, cmd, data, io);
        self.sync_hs_metrics();
        open
    }

    /// Copies the intro/rendezvous counters and table sizes into [`CircuitMetrics`] (off
    /// the per-cell path: only after an onion-service cell or the close of such a circuit).
    ///
    /// [`CircuitMetrics`]: super::CircuitMetrics
    fn sync_hs_metrics(&mut self) {
        let (intro, rend) = self.hs_counters();
        let tables = self.hs_table_sizes();
        self.metrics.set_hs(&intro, &rend, tables);
    }

    fn handle_hs_cell(
        &mut self,
        idx: u32,
        cmd: RelayCmd,
        data: &[u8],
        io: &mut CoreIo<'_>,
    ) -> bool {
        if self.hs.shards > 1 {
            self.close_refused(idx, ProtocolViolation::OnionServiceRole, io);
            return false;
        }
        let me = self.table.handle(idx);
        let facts = self.hs_facts(idx);
        let mut st = self.hs.slot(idx).state;
        let mut buf = [0u8; v0::MAX_DATA_LEN];
        match cmd {
            RelayCmd::ESTABLISH_INTRO => {
                let kh = self.hs.slot(idx).kh;
                let o = self
                    .hs
                    .intro(io.now)
                    .on_establish_intro(me, &mut st, facts, data, &kh, io.now);
                self.hs.slot(idx).state = st;
                match o {
                    EstablishIntroOutcome::Established { replaced } => {
                        self.hs_close_replaced(idx, replaced, io);
                        let n = encode_intro_established(&mut buf).expect("fits a cell");
                        self.hs_send(idx, RelayCmd::INTRO_ESTABLISHED, &buf[..n], io)
                    }
                    EstablishIntroOutcome::Close(r) => {
                        self.hs_close(idx, r, io);
                        false
                    }
                }
            }
            RelayCmd::INTRODUCE1 => {
                let o = self
                    .hs
                    .intro(io.now)
                    .on_introduce1(&mut st, facts, data, io.now);
                self.hs.slot(idx).state = st;
                let status = match o {
                    Introduce1Outcome::Forward { service } => {
                        // C tor `handle_introduce1`: INTRODUCE2 carries the same bytes.
                        let sent = match self.table.resolve(service) {
                            Some(s) if s != idx => self.hs_send(s, RelayCmd::INTRODUCE2, data, io),
                            _ => false,
                        };
                        self.hs.intro(io.now).introduce2_sent(sent)
                    }
                    Introduce1Outcome::Ack(status) => status,
                    Introduce1Outcome::Close(r) => {
                        self.hs_close(idx, r, io);
                        return false;
                    }
                };
                let n = IntroduceAck::encode(status, &mut buf).expect("fits a cell");
                self.hs_send(idx, RelayCmd::INTRODUCE_ACK, &buf[..n], io)
            }
            RelayCmd::ESTABLISH_RENDEZVOUS => {
                let single = self.hs.refuse_single_hop;
                let o = self
                    .hs
                    .rend()
                    .on_establish_rendezvous(me, &mut st, facts, single, data);
                self.hs.slot(idx).state = st;
                match o {
                    EstablishRendOutcome::Established { replaced } => {
                        self.hs_close_replaced(idx, replaced, io);
                        self.hs_send(idx, RelayCmd::RENDEZVOUS_ESTABLISHED, &[], io)
                    }
                    EstablishRendOutcome::Ignore => true,
                    EstablishRendOutcome::Close(r) => {
                        self.hs_close(idx, r, io);
                        false
                    }
                }
            }
            RelayCmd::RENDEZVOUS1 => self.hs_rendezvous1(idx, me, facts, st, data, io),
            _ => true,
        }
    }

    /// RENDEZVOUS1 on the service's circuit `idx` (C tor `rend_mid_rendezvous`).
    fn hs_rendezvous1(
        &mut self,
        idx: u32,
        me: CircHandle,
        facts: CircFacts,
        st: HsCircState,
        data: &[u8],
        io: &mut CoreIo<'_>,
    ) -> bool {
        let (client, cookie, n, buf) = {
            let mut buf = [0u8; v0::MAX_DATA_LEN];
            match self.hs.rend().on_rendezvous1(&st, facts, data) {
                Rendezvous1Outcome::Join {
                    client,
                    cookie,
                    handshake_info,
                } => {
                    let n = encode_rendezvous2(handshake_info, &mut buf).expect("shorter");
                    (client, cookie, n, buf)
                }
                Rendezvous1Outcome::Close(r) => {
                    self.hs_close(idx, r, io);
                    return false;
                }
            }
        };
        let ci = match self.table.resolve(client) {
            Some(ci) if ci != idx => ci,
            _ => {
                // The cookie's circuit is this one or gone: nothing to join.
                let (mut cs, mut ss) = (st, st);
                self.hs.rend().joined(&cookie, &mut cs, &mut ss, false);
                self.hs_close(idx, DestroyReason::TorProtocol, io);
                return false;
            }
        };
        let sent = self.hs_send(ci, RelayCmd::RENDEZVOUS2, &buf[..n], io);
        let mut cs = self.hs.slot(ci).state;
        let mut ss = st;
        self.hs.rend().joined(&cookie, &mut cs, &mut ss, sent);
        if !sent {
            // The client's circuit closed (its close forgot the cookie); C tor leaves the
            // service's circuit as it was.
            return true;
        }
        let client_h = self.table.handle(ci);
        let s = self.hs.slot(ci);
        (s.state, s.splice) = (cs, Some(me));
        if self.table.resolve(me).is_none() {
            // The memory cap closed the service's circuit while RENDEZVOUS2 was queued (with
            // RESOURCELIMIT): its splice partner goes with it, as on any close.
            self.close(ci, DestroyReason::ResourceLimit, true, true, io);
            return false;
        }
        let s = self.hs.slot(idx);
        (s.state, s.splice) = (ss, Some(client_h));
        true
    }

    /// An unrecognized forward cell on `idx`, which has no next hop. `None` if the circuit
    /// is not spliced (the caller closes it); otherwise whether `idx` is still open after the
    /// cell went to the partner.
    pub(super) fn splice_forward(
        &mut self,
        idx: u32,
        body: &CellBody,
        io: &mut CoreIo<'_>,
    ) -> Option<bool> {
        let slot = self.hs.slots[idx as usize];
        if !matches!(slot.state.role, HsRole::RendJoined { .. }) {
            return None;
        }
        let p = slot.splice.and_then(|h| self.table.resolve(h))?;
        // Cells this shard staged for the partner are crypted first, so its backward
        // keystream is used in the order cells leave.
        self.flush_originated(io);
        let mut cell: CellBody = [0u8; CELL_BODY_LEN];
        cell.copy_from_slice(body);
        let crypto = self.table.get_mut(p)?.crypto.as_mut()?;
        crypto.backward_relay(&mut cell);
        self.metrics.cells_forwarded += 1;
        self.send_to_prev(p, ChanCmd::RELAY, &cell, io);
        Some(self.table.get(idx).is_some())
    }

    /// `idx` (`handle`) closed with `reason`: forget its key or cookie, and close the other
    /// side of its splice with the same reason (C tor `circuit_about_to_free`).
    pub(super) fn hs_circuit_closed(
        &mut self,
        idx: u32,
        handle: CircHandle,
        reason: DestroyReason,
        io: &mut CoreIo<'_>,
    ) {
        let slot = ::core::mem::take(self.hs.slot(idx));
        if slot.state.role == HsRole::Plain {
            return;
        }
        if let Some(i) = self.hs.intro.as_mut() {
            i.on_circuit_closed(handle, &slot.state);
        }
        let partner_reason = self
            .hs
            .rend
            .as_mut()
            .and_then(|r| r.on_circuit_closed(handle, &slot.state, reason));
        if let (Some(r), Some(p)) = (
            partner_reason,
            slot.splice.and_then(|h| self.table.resolve(h)),
        ) {
            self.close(p, r, true, true, io);
        }
        self.sync_hs_metrics();
    }
}
