//! Channel cells on circuits: CREATE*, DESTROY, RELAY/RELAY_EARLY routing, onion queue,
//! EXTEND2/EXTENDED2, queues toward blocked channels and the memory cap.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use rand_core::{CryptoRng, RngCore};

use super::crypto::{CellBody, HopCrypto, RelayCellFormat};
use super::metrics::CircuitMetrics;
use super::pool::{CellPool, CellQueue, MemBudget, CHUNK_CELLS};
use super::table::{CircHandle, CircState, Circuit, CircuitTable, Next, Side};
use super::ProtocolViolation;
use super::{
    destroy_body, Action, ActionSink, ChanId, ChanInfo, CircuitConfig, ExtendTarget, InputError,
    NetworkView, NextHop, PeerIdentity, RelayIdentity,
};
use crate::cell::chan::{Create2, CreateFast, Created2, CreatedFast, DestroyReason, HandshakeType};
use crate::cell::relay::msg::{Extend2, Extended2, LinkSpec};
use crate::cell::relay::{v0, v1, RelayCmd};
use crate::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use crate::crypto::handshake::{
    fast, negotiate_circ_params, ntor, ntor_v3, CircuitKeys, NtorKeyMap, NtorV3ServerPolicy,
};
use crate::exit::policy::ExitPolicy;
use crate::proto::flow::{SendmeRandomness, SendmeTags, Windows};
use crate::proto::stream::StreamTable;
use crate::util::copies::{self, CopySite};

/// tor-spec §"Handling RELAY_EARLY cells": at most 8 per circuit.
pub const MAX_RELAY_EARLY_CELLS_PER_CIRCUIT: u8 = 8;
/// Cells per batch handed to the crypto in one call.
const BATCH: usize = 64;

/// An RNG usable for handshakes (object-safe bundle of `RngCore + CryptoRng`).
pub trait CoreRng: RngCore + CryptoRng {}
impl<T: RngCore + CryptoRng> CoreRng for T {}

/// The per-call environment: time, randomness and where actions go.
pub struct CoreIo<'a> {
    pub now: Instant,
    pub rng: &'a mut dyn CoreRng,
    pub out: &'a mut dyn ActionSink,
}

impl<'a> CoreIo<'a> {
    pub fn new(now: Instant, rng: &'a mut dyn CoreRng, out: &'a mut dyn ActionSink) -> Self {
        CoreIo { now, rng, out }
    }
}

struct PendingOnion {
    circ: CircHandle,
    htype: HandshakeType,
    hlen: u16,
    hdata: [u8; CELL_BODY_LEN],
    queued_at: Instant,
}

/// The result of an extend the shard carried out (see `Action::Extend`).
#[derive(Debug, Clone, Copy)]
pub struct ExtendDone<'a> {
    /// Where the next hop of this circuit now is.
    pub next: NextHop,
    /// The CREATED2 body the next hop answered with.
    pub created2: &'a [u8],
}

/// One shard's circuits and exit streams (see the module docs).
pub struct RelayCore<
    C: HopCrypto = crate::crypto::relay::Tor1RelayCrypto,
    N: NetworkView = super::NoNetworkView,
> {
    pub(super) cfg: CircuitConfig,
    pub(super) me: RelayIdentity,
    pub(super) onion_keys: Arc<NtorKeyMap>,
    pub(super) policy: Arc<ExitPolicy>,
    pub(super) net: N,
    pub(super) table: CircuitTable<C>,
    pub(super) streams: StreamTable,
    pub(super) pool: CellPool,
    onion_q: VecDeque<PendingOnion>,
    blocked: HashSet<ChanId>,
    /// Channels a circuit was attached to since the last `channels_in_use` (C tor stamps
    /// `timestamp_last_had_circuits` on attach): a channel whose circuits come and go
    /// between two idle checks is not idle.
    attached: HashSet<ChanId>,
    /// Channels whose padding usage rose since the last `channels_padding_usage` (C
    /// `circuit_update_channel_usage` raises it per cell; a circuit that comes and goes
    /// between two scans still counts): user traffic, full circuits.
    pub(super) usage_user: HashSet<ChanId>,
    usage_full: HashSet<ChanId>,
    pub(super) metrics: CircuitMetrics,
    batch_hits: Vec<bool>,
    /// Circuits with queued cells or streams paused on a blocked channel.
    pub(super) waiting: Vec<u32>,
    /// SENDME tag of the last recognized cell of the current forward run.
    pub(super) run_tag: [u8; 20],
    /// Pool buffers charged for cells the shard holds outside the core (cross-shard
    /// overflow), so the memory cap covers them too.
    external: CellQueue,
    /// Exit DATA cells waiting for one multi-circuit crypto call (`staged.rs`).
    pub(super) stage: super::staged::Stage,
    /// Received RELAY cells of one read waiting to be crypted together (`relay_in.rs`).
    pub(super) relay_in: super::relay_in::RelayIn,
    /// Origin of the pool's millisecond enqueue stamps (the first `now` that queued).
    epoch: Option<Instant>,
    /// The budget's pressure count when this core last looked (see `tick`).
    seen_pressure: u64,
    /// (age, circuit) pairs the OOM handler sorts; one per circuit at most.
    oom_scratch: Vec<(u32, u32)>,
    /// The rule broken by the last circuit closed for a protocol violation, and how many
    /// such closes since the shard last took it (for its rate-limited debug line).
    violations: Option<(super::ProtocolViolation, u64)>,
    /// Relay cells dropped where C tor logs a protocol warning, since the shard last took
    /// them (`violation.rs` `ProtocolDrop`).
    pub(super) drops: super::ProtocolDrops,
    /// Introduction- and rendezvous-point state (`hs.rs`).
    pub(super) hs: super::hs::HsRelay,
    /// Conflux sets whose legs end here (`conflux.rs`).
    pub(super) conflux: super::conflux::ConfluxExit,
    /// Shards of this relay (the node says so when it starts).
    pub(super) shards: usize,
    /// Circuit padding: parameters, counts and counters (`padding.rs`), the machines'
    /// deadlines, and whether the cell being sent is a machine's DROP (not an event).
    pub(super) circpad: crate::proto::circpad::ShardPadding,
    pub(super) pad_timers: super::padding::PadTimers,
    pub(super) pad_sending_drop: bool,
}

impl<C: HopCrypto, N: NetworkView> RelayCore<C, N> {
    /// Allocates every table and queue from `cfg`; the cell pool reserves its first chunk
    /// of the budget (allocated when first used).
    pub fn new(
        cfg: CircuitConfig,
        me: RelayIdentity,
        onion_keys: Arc<NtorKeyMap>,
        policy: Arc<ExitPolicy>,
        net: N,
    ) -> Self {
        let mut core = RelayCore {
            table: CircuitTable::new(cfg.max_circuits),
            streams: StreamTable::new(cfg.max_streams),
            pool: CellPool::new(
                cfg.mem_budget
                    .clone()
                    .unwrap_or_else(|| Arc::new(MemBudget::new(cfg.pool_cells as u64))),
            ),
            epoch: None,
            seen_pressure: 0,
            oom_scratch: Vec::with_capacity(cfg.max_circuits),
            violations: None,
            drops: super::ProtocolDrops::default(),
            onion_q: VecDeque::with_capacity(cfg.onion_queue_len),
            blocked: HashSet::with_capacity(cfg.max_circuits.min(1 << 16)),
            attached: HashSet::with_capacity(cfg.max_circuits.min(1 << 10)),
            usage_user: HashSet::with_capacity(cfg.max_circuits.min(1 << 10)),
            usage_full: HashSet::with_capacity(cfg.max_circuits.min(1 << 10)),
            batch_hits: vec![false; BATCH],
            run_tag: [0; 20],
            external: CellQueue::default(),
            stage: super::staged::Stage::new(),
            relay_in: super::relay_in::RelayIn::new(),
            waiting: Vec::with_capacity(cfg.max_circuits),
            hs: super::hs::HsRelay::new(cfg.max_circuits),
            conflux: super::conflux::ConfluxExit::new(cfg.max_circuits, cfg.home_key),
            shards: 1,
            // A relay's torrc can only say `CircuitPadding 1` (C tor refuses 0), so on.
            circpad: crate::proto::circpad::ShardPadding::new(Default::default(), true),
            pad_timers: super::padding::PadTimers::new(cfg.max_circuits),
            pad_sending_drop: false,
            cfg,
            me,
            onion_keys,
            policy,
            net,
            metrics: CircuitMetrics::default(),
        };
        // The pool reserved its first chunk of the budget.
        core.update_queue_metrics();
        core
    }

    /// Swaps in new onion keys (after rotation) between batches.
    pub fn set_onion_keys(&mut self, keys: Arc<NtorKeyMap>) {
        self.onion_keys = keys;
    }

    /// Swaps in a new exit policy.
    pub fn set_exit_policy(&mut self, policy: Arc<ExitPolicy>) {
        self.policy = policy;
    }

    pub fn network_view_mut(&mut self) -> &mut N {
        &mut self.net
    }

    pub fn metrics(&self) -> &CircuitMetrics {
        &self.metrics
    }

    pub fn config(&self) -> &CircuitConfig {
        &self.cfg
    }

    /// Live circuits.
    pub fn circuit_count(&self) -> usize {
        self.table.len()
    }

    /// The previous-hop channel of `circ`, if it is live (the shard pauses reading it when
    /// the circuit's cells wait for another shard).
    pub fn prev_chan_of(&self, circ: CircHandle) -> Option<ChanId> {
        let idx = self.table.resolve(circ)?;
        self.table.get(idx).map(|c| c.prev_chan)
    }

    /// The circuit whose previous hop is (`chan`, `circ_id`), if any.
    pub fn circuit_by_prev(&self, chan: ChanId, circ_id: CircId) -> Option<CircHandle> {
        match self.table.lookup(chan, circ_id)? {
            (idx, Side::Prev) => Some(self.table.handle(idx)),
            _ => None,
        }
    }

    /// Whether (`chan`, `circ_id`) names either side of a live circuit here (a shard
    /// allocating a circuit ID on `chan` must avoid it).
    pub fn circ_id_in_use(&self, chan: ChanId, circ_id: CircId) -> bool {
        self.table.contains_key(chan, circ_id)
    }

    /// A cell for `circ`'s next hop that the shard could not pass on (the queue to the
    /// next hop's shard is full): hold it in the circuit's next-hop queue, after anything
    /// held there, until `channel_unblocked` for that channel. The shard must also call
    /// `channel_blocked`. Counts against the per-circuit bound and the pool (memory cap).
    /// `Ok(false)` if holding it closed the circuit.
    pub fn hold_for_next_hop(
        &mut self,
        circ: CircHandle,
        cmd: ChanCmd,
        body: &CellBody,
        io: &mut CoreIo<'_>,
    ) -> Result<bool, InputError> {
        let idx = self.table.resolve(circ).ok_or(InputError::NoSuchCircuit)?;
        Ok(self.enqueue(idx, QueueSel::Next, cmd, body, io))
    }

    /// Charges one cell the shard holds outside the core (a cross-shard overflow) to the
    /// cell pool, so the memory cap and its eviction (which may close circuits here) cover
    /// it. False if the pool has no buffer even after eviction: the shard must not hold it.
    pub fn charge_external_cell(&mut self, io: &mut CoreIo<'_>) -> bool {
        if !self.pool.ensure_free() {
            self.out_of_memory(io, true);
        }
        let stamp = self.stamp(io.now);
        let ok = self.pool.push(
            &mut self.external,
            ChanCmd::PADDING,
            &[0; CELL_BODY_LEN],
            stamp,
        );
        self.update_queue_metrics();
        ok
    }

    /// Gives back `n` buffers charged with [`RelayCore::charge_external_cell`].
    /// Charges up to `n` cells held outside the pool's queues without evicting (for callers
    /// that run inside a close). Returns how many were charged.
    pub(super) fn charge_external_cells_quietly(&mut self, n: usize, now: Instant) -> usize {
        let stamp = self.stamp(now);
        let mut done = 0;
        while done < n
            && self.pool.push(
                &mut self.external,
                ChanCmd::PADDING,
                &[0; CELL_BODY_LEN],
                stamp,
            )
        {
            done += 1;
        }
        self.update_queue_metrics();
        done
    }

    pub fn release_external_cells(&mut self, n: usize) {
        let mut scratch = [0u8; CELL_BODY_LEN];
        for _ in 0..n {
            if self.pool.pop(&mut self.external, &mut scratch).is_none() {
                break;
            }
        }
        self.update_queue_metrics();
    }

    /// Cells held in this circuit's queues and stream buffers.
    pub fn queued_cells(&self, circ: CircHandle) -> Option<usize> {
        let idx = self.table.resolve(circ)?;
        Some(self.table.get(idx)?.queued as usize)
    }

    // ---------------------------------------------------------------- channel cells

    /// A fixed-size cell arrived on `chan`. `body` is decrypted/encrypted in place.
    pub fn handle_cell(
        &mut self,
        chan: &ChanInfo,
        circ_id: CircId,
        cmd: ChanCmd,
        body: &mut CellBody,
        io: &mut CoreIo<'_>,
    ) {
        // Cells staged before this one are handled first: it may end their circuit.
        self.flush_relay_cells(io);
        // tor-spec §"Choosing circuit IDs": circuit ID 0 is never a circuit; drop.
        if circ_id.is_zero() {
            return;
        }
        match cmd {
            ChanCmd::CREATE | ChanCmd::CREATE2 | ChanCmd::CREATE_FAST => {
                self.handle_create(chan, circ_id, cmd, body, io)
            }
            ChanCmd::RELAY | ChanCmd::RELAY_EARLY => {
                self.handle_relay_batch(chan.id, circ_id, cmd, ::core::slice::from_mut(body), io)
            }
            ChanCmd::DESTROY => self.handle_destroy(chan.id, circ_id, io),
            // CREATED* answer CREATEs the shard sent for `Action::Extend`; it routes those
            // itself and reports with `extend_result`. Anything else here is not ours.
            _ => {}
        }
    }

    /// A run of RELAY (or RELAY_EARLY) cells for one circuit, in arrival order: the crypto
    /// runs once over the whole run (architecture: "cells of one batch are grouped per
    /// circuit and crypted in one call").
    pub fn handle_relay_batch(
        &mut self,
        chan: ChanId,
        circ_id: CircId,
        cmd: ChanCmd,
        cells: &mut [CellBody],
        io: &mut CoreIo<'_>,
    ) {
        let Some((idx, side)) = self.table.lookup(chan, circ_id) else {
            // tor-spec: relay cells for an unknown circuit are dropped.
            return;
        };
        match side {
            Side::Prev => {
                let mut rest = cells;
                while !rest.is_empty() {
                    let Some(c) = self.table.get(idx) else {
                        return;
                    };
                    // A circuit SENDME carries the tag of the very DATA cell that made it
                    // due (prop 289), but batched crypto only reports the tag of the last
                    // recognized cell of a run. So a run ends at the first cell that could
                    // make a SENDME due: if one does, it is the run's last hit.
                    let n = rest.len().min(BATCH).min(c.windows.cells_until_sendme());
                    let (run, tail) = ::core::mem::take(&mut rest).split_at_mut(n);
                    rest = tail;
                    if !self.forward_run(idx, cmd, run, io) {
                        return;
                    }
                }
            }
            Side::Next => self.backward_run(idx, cmd, cells, io),
        }
    }

    /// Cells from the next hop of `circ` delivered by another shard (the next-hop channel
    /// lives there). Same as a backward cell arriving on a local channel.
    pub fn handle_next_hop_cell(
        &mut self,
        circ: CircHandle,
        cmd: ChanCmd,
        body: &mut CellBody,
        io: &mut CoreIo<'_>,
    ) -> Result<(), InputError> {
        self.flush_relay_cells(io);
        let idx = self.table.resolve(circ).ok_or(InputError::NoSuchCircuit)?;
        match cmd {
            ChanCmd::DESTROY => {
                self.metrics.destroys_received += 1;
                self.close(idx, DestroyReason::Destroyed, true, false, io);
            }
            ChanCmd::RELAY | ChanCmd::RELAY_EARLY => {
                self.backward_run(idx, cmd, ::core::slice::from_mut(body), io)
            }
            _ => {}
        }
        Ok(())
    }

    /// Circuit `circ`'s next hop, on another shard, was dropped there for `reason` (that
    /// shard sent it DESTROY(`reason`) already): close the circuit toward the previous hop
    /// with the same reason, as a local close in C (`circuit_mark_for_close`) sends its
    /// reason both ways. Not a DESTROY received: no `destroys_received`.
    pub fn next_hop_closed(
        &mut self,
        circ: CircHandle,
        reason: DestroyReason,
        io: &mut CoreIo<'_>,
    ) -> Result<(), InputError> {
        self.flush_relay_cells(io);
        let idx = self.table.resolve(circ).ok_or(InputError::NoSuchCircuit)?;
        self.close(idx, reason, true, false, io);
        Ok(())
    }

    fn handle_create(
        &mut self,
        chan: &ChanInfo,
        circ_id: CircId,
        cmd: ChanCmd,
        body: &CellBody,
        io: &mut CoreIo<'_>,
    ) {
        // C `command_process_create_cell`: an ID already in use → drop.
        if self.table.contains_key(chan.id, circ_id) {
            return;
        }
        let own = self.cfg.shard;
        let send_destroy = |reason, io: &mut CoreIo<'_>, m: &mut CircuitMetrics| {
            m.destroys_sent += 1;
            io.out.push(Action::SendCell {
                chan: chan.id,
                shard: own,
                circ_id,
                cmd: ChanCmd::DESTROY,
                body: destroy_body(reason),
            });
        };
        // The peer allocates IDs with the high bit set iff it opened the connection.
        if circ_id.has_high_bit() == chan.we_initiated {
            return send_destroy(DestroyReason::TorProtocol, io, &mut self.metrics);
        }
        if cmd == ChanCmd::CREATE {
            // prop 350: TAP is gone.
            return send_destroy(DestroyReason::TorProtocol, io, &mut self.metrics);
        }
        let first_hop = cmd == ChanCmd::CREATE_FAST || chan.peer == PeerIdentity::Client;
        let new_circ = |rng: &mut dyn CoreRng| Circuit::<C> {
            state: CircState::PendingOnion,
            prev_chan: chan.id,
            prev_circ_id: circ_id,
            prev_peer: chan.peer,
            first_hop,
            crypto: None,
            relay_early_left: MAX_RELAY_EARLY_CELLS_PER_CIRCUIT,
            next: Next::None,
            windows: Windows::circuit(),
            tags: SendmeTags::default(),
            randomness: SendmeRandomness::new(&mut &mut *rng),
            staged: 0,
            cc: None,
            streams_head: u32::MAX,
            q_prev: CellQueue::default(),
            q_next: CellQueue::default(),
            queued: 0,
            waiting: false,
            pad: Default::default(),
        };

        if cmd == ChanCmd::CREATE_FAST {
            // Cheap (one SHA-1 KDF): answered inline, no onion queue.
            let Ok(cf) = CreateFast::parse(body) else {
                return send_destroy(DestroyReason::TorProtocol, io, &mut self.metrics);
            };
            let (reply, keys) = fast::create_fast_server(&mut &mut *io.rng, cf.x);
            let Some(h) = self.table.insert(new_circ(io.rng)) else {
                self.metrics.create_refused_table_full += 1;
                return send_destroy(DestroyReason::ResourceLimit, io, &mut self.metrics);
            };
            self.hs.cover(self.table.slot_count() as usize);
            self.attached.insert(chan.id);
            let c = self.table.get_mut(h.idx).expect("just inserted");
            c.crypto = Some(C::from_keys(&keys));
            c.state = CircState::Open;
            self.hs_circuit_opened(h.idx, &keys.kh);
            self.metrics.circuits_created += 1;
            self.metrics.circuits = self.table.len() as u64;
            let mut out = [0u8; CELL_BODY_LEN];
            let (y, kh) = reply.split_at(20);
            CreatedFast {
                y: y.try_into().expect("20"),
                kh: kh.try_into().expect("20"),
            }
            .encode(&mut out);
            self.send_to_prev(h.idx, ChanCmd::CREATED_FAST, &out, io);
            return;
        }

        let c2 = match Create2::parse(body) {
            Ok(c2) if matches!(c2.htype, HandshakeType::NTOR | HandshakeType::NTOR_V3) => c2,
            // TAP, the reserved FAST type, unknown types, malformed bodies.
            _ => return send_destroy(DestroyReason::TorProtocol, io, &mut self.metrics),
        };
        if self.onion_q.len() >= self.cfg.onion_queue_len {
            self.metrics.create_refused_queue_full += 1;
            return send_destroy(DestroyReason::ResourceLimit, io, &mut self.metrics);
        }
        let Some(h) = self.table.insert(new_circ(io.rng)) else {
            self.metrics.create_refused_table_full += 1;
            return send_destroy(DestroyReason::ResourceLimit, io, &mut self.metrics);
        };
        self.hs.cover(self.table.slot_count() as usize);
        self.attached.insert(chan.id);
        self.metrics.circuits = self.table.len() as u64;
        let mut hdata = [0u8; CELL_BODY_LEN];
        hdata[..c2.hdata.len()].copy_from_slice(c2.hdata);
        self.onion_q.push_back(PendingOnion {
            circ: h,
            htype: c2.htype,
            hlen: c2.hdata.len() as u16,
            hdata,
            queued_at: io.now,
        });
        self.metrics.onion_queue_len = self.onion_q.len() as u64;
    }

    /// Runs up to `onions_per_run` queued handshakes (oldest first); onionskins that waited
    /// longer than `onion_max_delay` are refused with DESTROY RESOURCELIMIT instead. The
    /// budget keeps a CREATE2 flood from starving cells of established circuits. Returns
    /// how many handshakes ran.
    pub fn process_onion_queue(&mut self, io: &mut CoreIo<'_>) -> usize {
        let mut ran = 0;
        while ran < self.cfg.onions_per_run {
            let Some(p) = self.onion_q.pop_front() else {
                break;
            };
            let Some(idx) = self.table.resolve(p.circ) else {
                continue; // destroyed while waiting
            };
            if io.now.saturating_duration_since(p.queued_at) > self.cfg.onion_max_delay {
                self.metrics.onionskins_expired += 1;
                self.close(idx, DestroyReason::ResourceLimit, true, false, io);
                continue;
            }
            ran += 1;
            self.metrics.onionskins_processed += 1;
            let hdata = &p.hdata[..p.hlen as usize];
            let mut rng = &mut *io.rng;
            let mut cc_inc = None;
            let result = if p.htype == HandshakeType::NTOR {
                ntor::server_handshake(&mut rng, &self.onion_keys, &self.me.rsa, hdata)
                    .map(|(reply, keys)| (reply.to_vec(), CircuitKeys::Tor1(keys)))
            } else {
                let policy = NtorV3ServerPolicy {
                    cc_enabled: self.cfg.cc_enabled && self.cfg.cc.enabled(),
                    sendme_inc: self.cfg.cc.sendme_inc,
                    cgo_supported: C::supports_cgo(),
                };
                ntor_v3::server_handshake_circ(
                    &mut rng,
                    &self.onion_keys,
                    &self.me.ed,
                    hdata,
                    |e| negotiate_circ_params(e, &policy),
                )
                .map(|(reply, keys, params)| {
                    cc_inc = params.cc;
                    (reply, keys)
                })
            };
            let (reply, keys) = match result {
                Ok(r) => r,
                Err(_) => {
                    self.metrics.handshake_failures += 1;
                    self.close(idx, DestroyReason::TorProtocol, true, false, io);
                    continue;
                }
            };
            let mut out = [0u8; CELL_BODY_LEN];
            if (Created2 { hdata: &reply }).encode(&mut out).is_err() {
                self.close(idx, DestroyReason::Internal, true, false, io);
                continue;
            }
            let crypto = match &keys {
                CircuitKeys::Tor1(k) => Some(C::from_keys(k)),
                CircuitKeys::Cgo(k) => C::from_cgo_keys(k),
            };
            let Some(crypto) = crypto else {
                // Unreachable while the policy offers CGO only when `C` supports it.
                self.close(idx, DestroyReason::Internal, true, false, io);
                continue;
            };
            if matches!(keys, CircuitKeys::Cgo(_)) {
                self.metrics.circuits_cgo_created += 1;
            }
            let c = self.table.get_mut(idx).expect("resolved");
            c.crypto = Some(crypto);
            c.state = CircState::Open;
            self.hs_circuit_opened(idx, keys.kh());
            self.metrics.circuits_created += 1;
            if let Some(inc) = cc_inc {
                self.enable_cc(idx, inc);
            }
            self.send_to_prev(idx, ChanCmd::CREATED2, &out, io);
        }
        self.metrics.onion_queue_len = self.onion_q.len() as u64;
        ran
    }

    /// Onionskins waiting for [`RelayCore::process_onion_queue`]. The shard calls that
    /// between I/O batches while this is non-zero, so handshakes proceed continuously at
    /// `onions_per_run` per batch rather than once per tick.
    pub fn onions_pending(&self) -> usize {
        self.onion_q.len()
    }

    /// Periodic work: the onion queue (including expiry), conflux Forgets owed to another
    /// shard (`conflux.rs`; on a quiet shard nothing else sends them), and the memory
    /// cap: if a shard hit the relay-wide cap (or a reload changed it) since the last tick
    /// and the cells queued relay-wide are above 90 % of it, this shard frees its share
    /// from its oldest circuits (`out_of_memory`), so a shard holding most of the memory
    /// gives it up even when a quieter shard hit the cap.
    pub fn tick(&mut self, io: &mut CoreIo<'_>) {
        self.flush_relay_cells(io);
        self.sync_circpad_metrics();
        self.process_onion_queue(io);
        self.cfx_resend_owed(io);
        if self.pool.budget().pressure() != self.seen_pressure {
            self.seen_pressure = self.pool.budget().pressure();
            self.pool.publish();
            let budget = self.pool.budget();
            if self.pool.in_use() > 0 && budget.in_use() > oom_target(budget) {
                self.out_of_memory(io, false);
            }
        }
    }

    /// `now` as a pool enqueue stamp: milliseconds since the first stamp, wrapping (ages
    /// are wrapping differences, as C's coarse monotonic stamps).
    pub(super) fn stamp(&mut self, now: Instant) -> u32 {
        let epoch = *self.epoch.get_or_insert(now);
        now.saturating_duration_since(epoch).as_millis() as u32
    }

    fn handle_destroy(&mut self, chan: ChanId, circ_id: CircId, io: &mut CoreIo<'_>) {
        let Some((idx, side)) = self.table.lookup(chan, circ_id) else {
            return;
        };
        self.metrics.destroys_received += 1;
        // 0.4.9: close and tell the other side DESTROYED, never the remote reason.
        match side {
            Side::Prev => self.close(idx, DestroyReason::Destroyed, false, true, io),
            Side::Next => self.close(idx, DestroyReason::Destroyed, true, false, io),
        }
    }

    /// The channel is gone: close every circuit on it and tell the other side of each.
    /// Walks the whole table: channel closes are rare next to cells.
    pub fn channel_closed(&mut self, chan: ChanId, io: &mut CoreIo<'_>) {
        self.flush_relay_cells(io);
        self.blocked.remove(&chan);
        for idx in 0..self.table.slot_count() {
            let Some(c) = self.table.get(idx) else {
                continue;
            };
            if c.prev_chan == chan {
                self.close(idx, DestroyReason::Destroyed, false, true, io);
            } else if matches!(c.next, Next::Open(h) if h.chan == chan) {
                self.close(idx, DestroyReason::Destroyed, true, false, io);
            }
        }
    }

    /// Adds to `out` every channel that carries a circuit here, on either side (for the
    /// shard's idle-channel timeout). A scan of the table: call it about once a second.
    pub fn channels_in_use(&mut self, out: &mut std::collections::HashSet<ChanId>) {
        out.extend(self.attached.drain());
        for idx in 0..self.table.slot_count() {
            let Some(c) = self.table.get(idx) else {
                continue;
            };
            out.insert(c.prev_chan);
            if let Next::Open(h) = c.next {
                out.insert(h.chan);
            }
        }
    }

    /// For channel padding (C `circuit_update_channel_usage`, which counts the relay cells
    /// a circuit carries toward its previous-hop channel): adds to `user` each channel that
    /// is the previous hop of a circuit extended past us (EXTENDED2 and what follows are
    /// RELAY cells), or, for a peer that proved a relay identity, of a circuit with exit
    /// streams (a RELAY BEGIN came); and to `full` each such relay peer's channel whose
    /// circuit got RELAY_EARLY. A client channel with only one-hop circuits is in neither.
    /// A scan of the table plus the channels recorded at those events since the last call
    /// (circuits gone in between): call it about once a second.
    pub fn channels_padding_usage(
        &mut self,
        full: &mut std::collections::HashSet<ChanId>,
        user: &mut std::collections::HashSet<ChanId>,
    ) {
        full.extend(self.usage_full.drain());
        user.extend(self.usage_user.drain());
        for idx in 0..self.table.slot_count() {
            let Some(c) = self.table.get(idx) else {
                continue;
            };
            let relay_peer = matches!(c.prev_peer, PeerIdentity::Relay { .. });
            if matches!(c.next, Next::Open(_)) || (relay_peer && c.streams_head != u32::MAX) {
                user.insert(c.prev_chan);
            } else if relay_peer && c.relay_early_left < MAX_RELAY_EARLY_CELLS_PER_CIRCUIT {
                full.insert(c.prev_chan);
            }
        }
    }

    /// The shard cannot take more cells for `chan` right now: queue them here.
    pub fn channel_blocked(&mut self, chan: ChanId) {
        self.blocked.insert(chan);
    }

    /// Notes that circuit `idx` waits on a channel (queued cells or paused streams), so
    /// `channel_unblocked` only visits circuits that wait.
    pub(super) fn mark_waiting(&mut self, idx: u32) {
        if let Some(c) = self.table.get_mut(idx) {
            if !c.waiting {
                c.waiting = true;
                self.waiting.push(idx);
            }
        }
    }

    /// `chan` can take cells again: flush what its circuits queued, then resume exit
    /// streams that paused because of it.
    pub fn channel_unblocked(&mut self, chan: ChanId, io: &mut CoreIo<'_>) {
        self.blocked.remove(&chan);
        let now_ms = self.stamp(io.now);
        self.pool.set_clock(now_ms);
        let mut body = [0u8; CELL_BODY_LEN];
        let mut i = 0;
        while i < self.waiting.len() {
            let idx = self.waiting[i];
            if let Some(c) = self.table.get_mut(idx) {
                if c.prev_chan == chan {
                    let (dst_chan, dst_id) = (c.prev_chan, c.prev_circ_id);
                    c.queued -= c.q_prev.len() as u32;
                    let mut q = ::core::mem::take(&mut c.q_prev);
                    while let Some(cmd) = self.pool.pop(&mut q, &mut body) {
                        io.out.push(Action::SendCell {
                            chan: dst_chan,
                            shard: self.cfg.shard,
                            circ_id: dst_id,
                            cmd,
                            body,
                        });
                    }
                    self.resume_streams(idx, io);
                }
            }
            if let Some(c) = self.table.get_mut(idx) {
                if let Next::Open(h) = c.next {
                    if h.chan == chan {
                        c.queued -= c.q_next.len() as u32;
                        let mut q = ::core::mem::take(&mut c.q_next);
                        // Toward another shard's channel: that shard times these cells
                        // from the batch's arrival (counting them here too would count
                        // them twice); their wait in this pool is not seen.
                        let remote = h.shard != self.cfg.shard;
                        if remote {
                            self.pool.stop_clock();
                        }
                        while let Some(cmd) = self.pool.pop(&mut q, &mut body) {
                            io.out.push(Action::SendCell {
                                chan: h.chan,
                                shard: h.shard,
                                circ_id: h.circ_id,
                                cmd,
                                body,
                            });
                        }
                        if remote {
                            self.pool.set_clock(now_ms);
                        }
                    }
                }
            }
            let still = self.table.get(idx).is_some_and(|c| {
                !c.q_prev.is_empty()
                    || !c.q_next.is_empty()
                    || self.blocked.contains(&c.prev_chan)
                    || matches!(c.next, Next::Open(h) if self.blocked.contains(&h.chan))
            });
            if still {
                i += 1;
            } else {
                if let Some(c) = self.table.get_mut(idx) {
                    c.waiting = false;
                }
                self.waiting.swap_remove(i);
            }
        }
        self.pool.stop_clock();
        self.update_queue_metrics();
    }

    // ---------------------------------------------------------------- relay cells

    /// Forward direction (from the client side). Returns false if the circuit closed.
    fn forward_run(
        &mut self,
        idx: u32,
        cmd: ChanCmd,
        cells: &mut [CellBody],
        io: &mut CoreIo<'_>,
    ) -> bool {
        let Some(c) = self.table.get_mut(idx) else {
            return false;
        };
        if c.state != CircState::Open {
            // A relay cell before CREATED2: the client broke the protocol.
            self.protocol_close(idx, super::ProtocolViolation::RelayBeforeCreated, io);
            return false;
        }
        if cmd == ChanCmd::RELAY_EARLY {
            let n = cells.len().min(u8::MAX as usize) as u8;
            if n > c.relay_early_left {
                self.protocol_close(idx, super::ProtocolViolation::TooManyRelayEarly, io);
                return false;
            }
            c.relay_early_left -= n;
            if matches!(c.prev_peer, PeerIdentity::Relay { .. }) {
                self.usage_full.insert(c.prev_chan);
            }
        }
        let hits = &mut self.batch_hits[..cells.len()];
        let crypto = c.crypto.as_mut().expect("open circuits have crypto");
        crypto.forward_batch_cmd(cmd, cells, hits);
        // Taken now: handling the cells may originate replies, which move the crypto's tag.
        self.run_tag = *crypto.sendme_tag();
        for (i, cell) in cells.iter_mut().enumerate() {
            let alive = if self.batch_hits[i] {
                self.metrics.cells_recognized += 1;
                self.handle_local(idx, cmd == ChanCmd::RELAY_EARLY, cell, io)
            } else {
                self.forward_unrecognized(idx, cmd, cell, io)
            };
            if !alive {
                return false;
            }
        }
        true
    }

    pub(super) fn forward_unrecognized(
        &mut self,
        idx: u32,
        cmd: ChanCmd,
        body: &mut CellBody,
        io: &mut CoreIo<'_>,
    ) -> bool {
        self.circpad_cell_received(idx, false, io);
        let Some(c) = self.table.get(idx) else {
            return false;
        };
        match c.next {
            Next::Open(_) => {
                self.metrics.cells_forwarded += 1;
                self.send_to_next(idx, cmd, body, io)
            }
            // tor-spec: unrecognized with nowhere to go → close (TORPROTOCOL), unless a
            // rendezvous splices it to another circuit (`hs.rs`).
            _ => {
                if let Some(alive) = self.splice_forward(idx, body, io) {
                    return alive;
                }
                self.protocol_close(idx, super::ProtocolViolation::UnrecognizedAtLastHop, io);
                false
            }
        }
    }

    /// Backward direction (from the next hop): add our layer and pass toward the client.
    pub(super) fn backward_run(
        &mut self,
        idx: u32,
        cmd: ChanCmd,
        cells: &mut [CellBody],
        io: &mut CoreIo<'_>,
    ) {
        if cmd == ChanCmd::RELAY_EARLY {
            // tor-spec: inbound RELAY_EARLY → close.
            self.protocol_close(idx, super::ProtocolViolation::InboundRelayEarly, io);
            return;
        }
        let Some(c) = self.table.get_mut(idx) else {
            return;
        };
        let Some(crypto) = c.crypto.as_mut() else {
            return;
        };
        crypto.backward_relay_batch(cells);
        for body in cells.iter() {
            self.metrics.cells_backward += 1;
            if !self.send_to_prev(idx, ChanCmd::RELAY, body, io) {
                return;
            }
        }
    }

    /// Closes `idx` for a protocol violation (DESTROY TORPROTOCOL both ways).
    pub(super) fn protocol_close(
        &mut self,
        idx: u32,
        why: super::ProtocolViolation,
        io: &mut CoreIo<'_>,
    ) {
        self.metrics.protocol_closes += 1;
        self.close_refused(idx, why, io);
    }

    /// Closes `idx` with DESTROY TORPROTOCOL both ways and notes `why` for the shard's
    /// debug line, without counting it as a peer's protocol violation (see
    /// [`super::ProtocolViolation::OnionServiceRole`]).
    pub(super) fn close_refused(
        &mut self,
        idx: u32,
        why: super::ProtocolViolation,
        io: &mut CoreIo<'_>,
    ) {
        let n = self.violations.map_or(0, |(_, n)| n);
        self.violations = Some((why, n + 1));
        self.close(idx, DestroyReason::TorProtocol, true, true, io);
    }

    /// The rule broken by the last circuit closed for a protocol violation, and how many
    /// were closed so since the last call (the shard logs it, at most once per tick).
    pub fn take_protocol_violations(&mut self) -> Option<(super::ProtocolViolation, u64)> {
        self.violations.take()
    }

    /// Relay cells dropped for a peer's protocol violation since the last call, by kind
    /// (the shard logs them with the closes above).
    pub fn take_protocol_drops(&mut self) -> super::ProtocolDrops {
        ::core::mem::take(&mut self.drops)
    }

    /// Tears a circuit down: streams closed, queues freed, DESTROY(`reason`) sent to the
    /// sides that should hear it.
    pub(super) fn close(
        &mut self,
        idx: u32,
        reason: DestroyReason,
        tell_prev: bool,
        tell_next: bool,
        io: &mut CoreIo<'_>,
    ) {
        // A conflux set's stream owner may stay as the set's stream anchor (`conflux.rs`).
        let (tell_prev, tell_next) = match self.conflux_circuit_closing(idx, reason, io) {
            super::conflux::CfxClose::Anchor => {
                return self.cfx_anchor(idx, reason, tell_prev, tell_next, io);
            }
            super::conflux::CfxClose::FreeAnchor => (false, false),
            super::conflux::CfxClose::Close => (tell_prev, tell_next),
        };
        let handle = self.table.handle(idx);
        let Some(mut c) = self.table.remove(idx) else {
            return;
        };
        if c.waiting {
            if let Some(p) = self.waiting.iter().position(|&w| w == idx) {
                self.waiting.swap_remove(p);
            }
        }
        self.pool.clear(&mut c.q_prev);
        self.pool.clear(&mut c.q_next);
        self.circpad_closed(&mut c.pad);
        let mut s = c.streams_head;
        while let Some(h) = self.streams.handle_at(s) {
            let mut st = self.streams.remove(h).expect("live");
            s = st.next_in_circ;
            self.pool.clear(&mut st.pending);
            io.out.push(Action::StreamClose { stream: h });
        }
        self.metrics.streams = self.streams.len() as u64;
        if tell_prev {
            self.metrics.destroys_sent += 1;
            io.out.push(Action::SendCell {
                chan: c.prev_chan,
                shard: self.cfg.shard,
                circ_id: c.prev_circ_id,
                cmd: ChanCmd::DESTROY,
                body: destroy_body(reason),
            });
        }
        if let (true, Next::Open(h)) = (tell_next, c.next) {
            self.metrics.destroys_sent += 1;
            io.out.push(Action::SendCell {
                chan: h.chan,
                shard: h.shard,
                circ_id: h.circ_id,
                cmd: ChanCmd::DESTROY,
                body: destroy_body(reason),
            });
        }
        io.out.push(Action::CircuitClosed {
            circ: handle,
            reason,
        });
        self.metrics.circuits = self.table.len() as u64;
        self.update_queue_metrics();
        self.hs_circuit_closed(idx, handle, reason, io);
        self.conflux_circuit_closed(idx, handle, reason, io);
    }

    /// How many shards the relay runs (the node says so when it starts): the onion-service
    /// roles and conflux depend on it.
    pub fn set_shard_count(&mut self, shards: usize) {
        self.shards = shards.max(1);
        self.hs.shards = self.shards;
        self.conflux.set_shards(self.cfg.shard.0, self.shards);
    }

    pub(super) fn update_queue_metrics(&mut self) {
        let q = self.pool.in_use() as u64;
        self.metrics.queued_cells = q;
        self.metrics.cell_buffers_reserved = self.pool.reserved() as u64;
        self.metrics.queued_cells_high_water = self.metrics.queued_cells_high_water.max(q);
    }

    /// Whether cells for the previous hop of `idx` must wait (blocked channel or a
    /// non-empty queue ahead of them).
    pub(super) fn prev_is_congested(&self, idx: u32) -> bool {
        self.table
            .get(idx)
            .is_some_and(|c| !c.q_prev.is_empty() || self.blocked.contains(&c.prev_chan))
    }

    /// Sends (or queues) a cell toward the client. False if the circuit was closed.
    pub(super) fn send_to_prev(
        &mut self,
        idx: u32,
        cmd: ChanCmd,
        body: &CellBody,
        io: &mut CoreIo<'_>,
    ) -> bool {
        // Every RELAY cell towards the client is a circuit-padding event (`padding.rs`).
        if cmd == ChanCmd::RELAY {
            self.circpad_cell_sent(idx, io);
        }
        let Some(c) = self.table.get(idx) else {
            return false;
        };
        if c.q_prev.is_empty() && !self.blocked.contains(&c.prev_chan) {
            if io
                .out
                .send_cell_direct(c.prev_chan, self.cfg.shard, c.prev_circ_id, cmd, body)
            {
                return true;
            }
            copies::note(CopySite::ActionPush, CELL_BODY_LEN);
            io.out.push(Action::SendCell {
                chan: c.prev_chan,
                shard: self.cfg.shard,
                circ_id: c.prev_circ_id,
                cmd,
                body: *body,
            });
            return true;
        }
        self.enqueue(idx, QueueSel::Prev, cmd, body, io)
    }

    fn send_to_next(
        &mut self,
        idx: u32,
        cmd: ChanCmd,
        body: &CellBody,
        io: &mut CoreIo<'_>,
    ) -> bool {
        let Some(c) = self.table.get(idx) else {
            return false;
        };
        let Next::Open(h) = c.next else {
            return true;
        };
        if c.q_next.is_empty() && !self.blocked.contains(&h.chan) {
            if io
                .out
                .send_cell_direct(h.chan, h.shard, h.circ_id, cmd, body)
            {
                return true;
            }
            copies::note(CopySite::ActionPush, CELL_BODY_LEN);
            io.out.push(Action::SendCell {
                chan: h.chan,
                shard: h.shard,
                circ_id: h.circ_id,
                cmd,
                body: *body,
            });
            return true;
        }
        self.enqueue(idx, QueueSel::Next, cmd, body, io)
    }

    /// Puts a cell in one of the circuit's queues (or a stream's pending data). Enforces
    /// the per-circuit bound (close RESOURCELIMIT, as C does past
    /// `max_circuit_cell_queue_size`) and the relay-wide memory cap (`out_of_memory`).
    /// False if the circuit was closed.
    pub(super) fn enqueue(
        &mut self,
        idx: u32,
        sel: QueueSel,
        cmd: ChanCmd,
        body: &CellBody,
        io: &mut CoreIo<'_>,
    ) -> bool {
        let over = {
            let Some(c) = self.table.get(idx) else {
                return false;
            };
            let len = match sel {
                QueueSel::Prev => c.q_prev.len(),
                QueueSel::Next => c.q_next.len(),
                // CC streams are bounded by XOFF and the memory cap, as in C (the client
                // may have a whole congestion window in flight when XOFF goes out).
                QueueSel::Stream(_) if c.cc.is_some() => 0,
                QueueSel::Stream(h) => self.streams.get(h).map_or(0, |s| s.pending.len()),
            };
            len >= self.cfg.max_queue_per_circuit
        };
        if over {
            self.metrics.queue_overflow_kills += 1;
            self.close(idx, DestroyReason::ResourceLimit, true, true, io);
            return false;
        }
        if !self.pool.ensure_free() {
            self.out_of_memory(io, true);
            if self.table.get(idx).is_none() {
                return false;
            }
        }
        let stamp = self.stamp(io.now);
        let Some(c) = self.table.get_mut(idx) else {
            return false;
        };
        let q: &mut CellQueue = match sel {
            QueueSel::Prev => &mut c.q_prev,
            QueueSel::Next => &mut c.q_next,
            QueueSel::Stream(h) => match self.streams.get_mut(h) {
                Some(s) => &mut s.pending,
                None => return true,
            },
        };
        if !self.pool.push(q, cmd, body, stamp) {
            // Still no room (nothing older to free here): drop this circuit instead.
            self.metrics.oom_kills += 1;
            self.close(idx, DestroyReason::ResourceLimit, true, true, io);
            return false;
        }
        c.queued += 1;
        if matches!(sel, QueueSel::Prev | QueueSel::Next) {
            self.mark_waiting(idx);
        }
        self.update_queue_metrics();
        true
    }

    /// The relay-wide cap (`MaxMemInQueues`) is reached: C tor's `circuits_handle_oom`
    /// (0.4.x `circuitlist.c`) over this shard's circuits. C frees the excess over 90 % of
    /// the cap (`FRACTION_OF_DATA_TO_RETAIN_ON_OOM`), closing circuits in order of the age
    /// of their oldest queued cell (circuit queues and stream buffers), oldest first, with
    /// DESTROY RESOURCELIMIT toward both hops. A shard cannot touch another's circuits, so
    /// each shard frees its share of that excess, in proportion to the buffers it holds,
    /// from its own oldest circuits: the shard that needs memory at once (`forced`), the
    /// others on their next tick (the budget's pressure count, see `tick`) if the cells
    /// queued relay-wide are still above 90 %. Wholly free chunks then go back to the
    /// budget for every shard to use.
    fn out_of_memory(&mut self, io: &mut CoreIo<'_>, forced: bool) {
        self.pool.publish();
        let budget = self.pool.budget().clone();
        // C counts the cells allocated; here, the cells queued relay-wide (as the shards
        // published them) or the buffers held, whichever is more.
        let current = budget.in_use().max(budget.reserved());
        let excess = current.saturating_sub(oom_target(&budget));
        let share = (u128::from(excess) * self.pool.reserved() as u128
            / u128::from(budget.reserved().max(1))) as u64;
        // The shard that must make room frees at least a quarter chunk (or the whole
        // excess if smaller), so a shard with a small share does not sort its circuits
        // every few cells while the others have not answered yet.
        let to_recover = if forced {
            share.max(excess.min(CHUNK_CELLS as u64 / 4)).max(1)
        } else {
            share
        };
        if to_recover == 0 {
            self.seen_pressure = budget.pressure();
            return;
        }
        let now = self.stamp(io.now);
        let mut order = ::core::mem::take(&mut self.oom_scratch);
        order.clear();
        for idx in self.table.live() {
            if let Some(age) = self.oldest_queued_age(idx, now) {
                order.push((age, idx));
            }
        }
        // Oldest first; among equal ages the lower slot (C's sort is not stable either).
        order.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut freed = 0u64;
        for &(_, idx) in order.iter() {
            if freed >= to_recover {
                break;
            }
            let Some(c) = self.table.get(idx) else {
                continue;
            };
            freed += u64::from(c.queued);
            self.metrics.oom_kills += 1;
            self.close(idx, DestroyReason::ResourceLimit, true, true, io);
        }
        self.oom_scratch = order;
        self.pool.trim();
        self.pool.publish();
        // This shard has answered the pressure it saw (including its own).
        self.seen_pressure = budget.pressure();
        self.update_queue_metrics();
    }

    /// Age (ms) of the oldest cell `idx` holds in its queues or its streams' buffers.
    fn oldest_queued_age(&self, idx: u32, now: u32) -> Option<u32> {
        let c = self.table.get(idx)?;
        if c.queued == 0 {
            return None;
        }
        let mut oldest = None::<u32>;
        let mut see = |q: &CellQueue| {
            if let Some(t) = self.pool.head_stamp(q) {
                let age = now.wrapping_sub(t);
                oldest = Some(oldest.map_or(age, |o| o.max(age)));
            }
        };
        see(&c.q_prev);
        see(&c.q_next);
        let mut s = c.streams_head;
        while let Some(h) = self.streams.handle_at(s) {
            let Some(st) = self.streams.get(h) else {
                break;
            };
            see(&st.pending);
            s = st.next_in_circ;
        }
        oldest
    }

    /// Encodes and originates a relay message toward the client; returns the cell's SENDME
    /// tag, or `None` if the circuit is gone.
    pub(super) fn originate(
        &mut self,
        idx: u32,
        cmd: RelayCmd,
        stream_id: u16,
        write: impl FnOnce(&mut [u8]) -> Result<usize, crate::cell::CellError>,
        io: &mut CoreIo<'_>,
    ) -> Option<[u8; 20]> {
        // Staged DATA goes first: a circuit's cells leave in the order they were made.
        self.flush_originated(io);
        let mut body = [0u8; CELL_BODY_LEN];
        let format = self.table.get(idx)?.crypto.as_ref()?.format();
        let encoded = match format {
            RelayCellFormat::V0 => {
                v0::encode_with(&mut body, cmd, stream_id, &mut &mut *io.rng, write)
            }
            RelayCellFormat::V1 => {
                v1::encode_with(&mut body, cmd, stream_id, &mut &mut *io.rng, write)
            }
        };
        if encoded.is_err() {
            return None;
        }
        let c = self.table.get_mut(idx)?;
        let tag = c.crypto.as_mut()?.originate(&mut body);
        self.metrics.cells_originated += 1;
        self.send_to_prev(idx, ChanCmd::RELAY, &body, io)
            .then_some(tag)
    }

    // ---------------------------------------------------------------- extend

    /// EXTEND2 addressed to us (tor-spec §"EXTEND and EXTENDED"; C `circuit_extend`).
    /// Returns false if the circuit closed.
    pub(super) fn handle_extend2(
        &mut self,
        idx: u32,
        early: bool,
        stream_id: u16,
        data: &[u8],
        io: &mut CoreIo<'_>,
    ) -> bool {
        if stream_id != 0 {
            // C: dropped, at its protocol-warning severity.
            self.drops.note(super::ProtocolDrop::ExtendNonZeroStream);
            return true;
        }
        if !early && !self.cfg.allow_nonearly_extend {
            // C: dropped, with a rate-limited protocol warning.
            self.drops.note(super::ProtocolDrop::ExtendNotEarly);
            return true;
        }
        match self.extend_target(idx, data) {
            Ok((target, create2)) => {
                let c = self.table.get_mut(idx).expect("live");
                c.next = Next::Extending;
                self.metrics.extends_requested += 1;
                io.out.push(Action::Extend {
                    circ: self.table.handle(idx),
                    target,
                    create2,
                });
                true
            }
            Err(why) => {
                self.metrics.extends_refused += 1;
                self.protocol_close(idx, why, io);
                false
            }
        }
    }

    fn extend_target(
        &self,
        idx: u32,
        data: &[u8],
    ) -> Result<(ExtendTarget, CellBody), ProtocolViolation> {
        use ProtocolViolation::*;
        let c = self.table.get(idx).ok_or(ExtendAgain)?;
        if c.next != Next::None {
            return Err(ExtendAgain); // already extended or extending
        }
        let e = Extend2::parse(data).map_err(|_| BadExtend2)?;
        if !matches!(
            e.create2.htype,
            HandshakeType::NTOR | HandshakeType::NTOR_V3
        ) {
            return Err(ExtendHandshake); // TAP or CREATE_FAST inside EXTEND2
        }
        let (mut ipv4, mut ipv6, mut rsa, mut ed) = (None, None, None, None);
        let (mut n_rsa, mut n_ed) = (0, 0);
        for ls in e.link_specs() {
            match ls {
                LinkSpec::Ipv4(a) if ipv4.is_none() => ipv4 = Some(a),
                LinkSpec::Ipv6(a) if ipv6.is_none() => ipv6 = Some(a),
                LinkSpec::RsaId(id) => {
                    n_rsa += 1;
                    rsa = Some(id);
                }
                LinkSpec::Ed25519Id(id) => {
                    n_ed += 1;
                    ed = Some(id);
                }
                _ => {}
            }
        }
        if n_rsa != 1 || n_ed > 1 {
            return Err(ExtendLinkSpecs);
        }
        let rsa = rsa.ok_or(ExtendLinkSpecs)?;
        let addr_ok = |ip: ::core::net::IpAddr, port: u16| {
            port != 0
                && !ip.is_unspecified()
                && (self.cfg.extend_allow_private || !crate::exit::dns::name::is_internal(ip))
        };
        let ipv4 = ipv4.filter(|a| addr_ok((*a.ip()).into(), a.port()));
        let ipv6 = ipv6.filter(|a| addr_ok((*a.ip()).into(), a.port()));
        if ipv4.is_none() && ipv6.is_none() {
            return Err(ExtendAddress);
        }
        // Refuse extending back to the previous hop, or to ourselves.
        if let PeerIdentity::Relay { rsa: prsa, ed: ped } = c.prev_peer {
            if prsa == rsa || ed == Some(ped) {
                return Err(ExtendToPreviousHop);
            }
        }
        if rsa == self.me.rsa || ed == Some(self.me.ed) {
            return Err(ExtendToSelf);
        }
        let mut create2 = [0u8; CELL_BODY_LEN];
        e.create2.encode(&mut create2).map_err(|_| BadExtend2)?;
        Ok((
            ExtendTarget {
                ipv4,
                ipv6,
                rsa,
                ed,
            },
            create2,
        ))
    }

    /// The shard finished (or failed) the extend it was asked for. On success the next hop
    /// is recorded and EXTENDED2 goes back to the client; on failure the circuit closes
    /// with `reason` toward the client. A result for a circuit that closed meanwhile
    /// destroys the new next hop.
    pub fn extend_result(
        &mut self,
        circ: CircHandle,
        result: Result<ExtendDone<'_>, DestroyReason>,
        io: &mut CoreIo<'_>,
    ) -> Result<(), InputError> {
        let idx = self
            .table
            .resolve(circ)
            .filter(|&i| self.table.get(i).is_some_and(|c| c.next == Next::Extending));
        let Some(idx) = idx else {
            if let Ok(done) = result {
                self.metrics.destroys_sent += 1;
                io.out.push(Action::SendCell {
                    chan: done.next.chan,
                    shard: done.next.shard,
                    circ_id: done.next.circ_id,
                    cmd: ChanCmd::DESTROY,
                    body: destroy_body(DestroyReason::Destroyed),
                });
            }
            return Err(InputError::NoSuchCircuit);
        };
        let done = match result {
            Ok(d) => d,
            Err(reason) => {
                self.close(idx, reason, true, false, io);
                return Ok(());
            }
        };
        let hdata = match Created2::parse(done.created2) {
            Ok(c) => c.hdata,
            Err(_) => {
                // Bad CREATED2 from the next hop: tear both sides down.
                let c = self.table.get_mut(idx).expect("live");
                c.next = Next::Open(done.next);
                self.close(idx, DestroyReason::TorProtocol, true, true, io);
                return Ok(());
            }
        };
        let c = self.table.get_mut(idx).expect("live");
        c.next = Next::Open(done.next);
        // Extended: EXTENDED2 and what follows are RELAY cells toward the previous hop.
        self.usage_user.insert(c.prev_chan);
        if done.next.shard == self.cfg.shard {
            self.attached.insert(done.next.chan);
            self.table
                .set_next_key(idx, done.next.chan, done.next.circ_id);
        }
        self.originate(
            idx,
            RelayCmd::EXTENDED2,
            0,
            |out| Extended2 { hdata }.encode(out),
            io,
        );
        Ok(())
    }
}

/// Cell buffers the OOM handler brings the relay down to: 90 % of the cap (C
/// `FRACTION_OF_DATA_TO_RETAIN_ON_OOM`).
fn oom_target(budget: &MemBudget) -> u64 {
    budget.cap_cells() * 9 / 10
}

/// Which queue of a circuit a cell goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum QueueSel {
    Prev,
    Next,
    Stream(crate::proto::stream::StreamHandle),
}
