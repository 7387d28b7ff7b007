//! RELAY cells of one channel read, crypted together before they are handled.
//!
//! The node hands the core every RELAY cell it decodes from one read completion
//! ([`RelayCore::queue_relay_cell`]) and flushes at the end of the read
//! ([`RelayCore::flush_relay_cells`]); any other cell (CREATE*, DESTROY, …) flushes first,
//! so it still ends the run of cells before it. A flush first runs the crypto over all
//! staged cells, then handles them one by one in arrival order:
//! * cells of one circuit that sit next to each other go through one AES keystream run
//!   ([`HopCrypto::forward_batch_tagged`], [`HopCrypto::backward_relay_batch`]);
//! * a read of fewer than `SMALL_READ` cells (or the CPU's multi-circuit threshold, if
//!   lower) is handled one at a time, without the set-up;
//! * cells of tor1 circuits that end here (no next hop: every cell must be recognized) go
//!   through the multi-circuit call ([`HopCrypto::forward_jobs`], multi-buffer SHA-1) when at
//!   least [`HopCrypto::multi_min_circuits`] of them are staged, in round-robin order so the
//!   lanes fill;
//! * cells of CGO circuits, forward (middle or last hop) and backward, go through the
//!   multi-circuit calls ([`HopCrypto::forward_jobs`], [`HopCrypto::backward_relay_jobs`])
//!   when at least [`HopCrypto::cgo_group_min_circuits`] CGO circuits have cells in that
//!   direction (counted apart, with a threshold of their own, for circuits that end here),
//!   round-robin too: consecutive jobs of distinct circuits form the groups of
//!   CGO's interleaved kernel (a circuit's i-th cell comes before any circuit's (i+1)-th, so
//!   its cells stay in order and it is in a group at most once).
//!
//! Cells from the next hop of our circuits that another shard delivers (its channel is there)
//! can be staged the same way, one cross-shard drain at a time
//! ([`RelayCore::queue_next_hop_cell`]): such a stage holds only backward cells, keyed by
//! circuit handle instead of channel and circuit ID, and never mixes with a channel read's.
//! The node does not use it: for backward middle cells it measured 25–40 ns per cell slower
//! than [`RelayCore::handle_next_hop_cell`] (`fors-relay-batch cross`, `bench/RESULTS.md`).
//!
//! Why crypting ahead is equivalent to crypting each cell at its turn:
//! * each circuit's cells are crypted in arrival order, in one direction only: forward
//!   cells come from the previous hop's channel, backward ones from the next hop's, and the
//!   stage holds one channel's cells (a circuit never has both hops on one channel) or one
//!   cross-shard drain's backward cells;
//! * handling a cell never uses the keystream of the direction being crypted ahead: the
//!   core originates only backward, and only for cells it recognized (forward), while a
//!   backward relayed cell originates nothing;
//! * every recognized cell keeps its own SENDME tag (`tags`), so a SENDME answers the very
//!   DATA cell that made it due (prop 289) wherever it falls in the batch;
//! * a circuit that cannot take a crypted-ahead cell (not open, RELAY_EARLY, no crypto) has
//!   that cell and all its later ones handled the old way, one at a time at their turn; a
//!   circuit closed by an earlier cell loses its later cells, as before (its handle's
//!   generation no longer resolves).

use super::core::{CoreIo, RelayCore};
use super::crypto::{CellBody, HopCrypto, OriginateJobs, RelayCellFormat};
use super::table::{CircHandle, CircState, CircuitTable, Next, Side};
use super::{ChanId, NetworkView};
use crate::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use crate::proto::flow::SENDME_TAG_LEN;

/// RELAY cells staged at most before a flush. Four times the widest SIMD group (16 lanes),
/// and 32 KiB of cells, which stays in L1/L2 between the crypto and the handling pass;
/// `bench/RESULTS.md` ("Batched crypto on the live path") has the measurement.
pub const MAX_RELAY_IN: usize = 64;

// `RelayIn::seen_of` holds a stage index in a byte.
const _: () = assert!(MAX_RELAY_IN <= 256);

/// Reads of fewer cells than this (or than the CPU's multi-circuit threshold, if lower) are
/// handled one at a time: measured, the batch set-up costs more than it saves there (a
/// 2-cell exit read: 479 against 435 ns/cell on AVX-512 + SHA-NI), while on CPUs whose
/// multi-buffer SHA-1 pays from 2 circuits, 2 cells already gain 2.7× (`bench/RESULTS.md`).
const SMALL_READ: usize = 3;

/// How a staged cell is crypted and handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// No circuit: dropped (tor-spec: relay cells for an unknown circuit).
    Drop,
    /// Handled the old way at its turn (crypto and all).
    Single,
    /// From the previous hop, crypted in a run of its circuit.
    ForwardRun,
    /// From the previous hop, crypted in the multi-circuit call: a tor1 circuit that ends
    /// here or a CGO circuit with a next hop.
    ForwardMulti,
    /// From the previous hop of a CGO circuit that ends here, crypted in the multi-circuit
    /// call (its own threshold: every cell is recognized).
    ForwardMultiLast,
    /// From the next hop, crypted in a run of its circuit.
    Backward,
    /// From the next hop of a CGO circuit, crypted in the multi-circuit call.
    BackwardMulti,
}

/// The stage and its scratch space, allocated once (no allocation per cell).
pub(super) struct RelayIn {
    chan: ChanId,
    /// The stage holds backward cells another shard delivered (`circ` set when staged, no
    /// channel), not a channel read.
    cross: bool,
    circ_ids: Vec<CircId>,
    cmds: Vec<ChanCmd>,
    cells: Vec<CellBody>,
    circ: Vec<Option<CircHandle>>,
    mode: Vec<Mode>,
    /// Each cell's circuit's relay cell format, recorded when it is classified, so the
    /// multi-circuit call splits tor1 from CGO without looking the circuit up again.
    format: Vec<RelayCellFormat>,
    hits: Vec<bool>,
    tags: Vec<[u8; SENDME_TAG_LEN]>,
    /// Job order of the multi-circuit call (indices into `cells`), and its sort keys.
    order: Vec<u16>,
    rank: Vec<(u16, u16)>,
    /// Per-job results of the multi-circuit call, copied back by job.
    job_hits: Vec<bool>,
    job_tags: Vec<[u8; SENDME_TAG_LEN]>,
    /// Circuit slots seen in this flush, and per slot: cells so far, whether it fell back to
    /// one at a time.
    seen: Vec<(u32, u16, bool)>,
    /// Each cell's entry in `seen` (so the multi-circuit calls rank cells without searching).
    seen_of: Vec<u8>,
    /// Cells classified for the forward and the backward multi-circuit call.
    multi_jobs: [usize; 2],
    /// Overrides [`HopCrypto::cgo_group_min_circuits`] (benchmarks and tests compare the
    /// grouped path with runs on one build: [`RelayCore::set_cgo_group_min`]).
    cgo_group_min: Option<usize>,
}

impl RelayIn {
    pub fn new() -> RelayIn {
        let n = MAX_RELAY_IN;
        RelayIn {
            chan: ChanId(0),
            cross: false,
            circ_ids: Vec::with_capacity(n),
            cmds: Vec::with_capacity(n),
            cells: Vec::with_capacity(n),
            circ: vec![None; n],
            mode: vec![Mode::Drop; n],
            format: vec![RelayCellFormat::V0; n],
            hits: vec![false; n],
            tags: vec![[0; SENDME_TAG_LEN]; n],
            order: Vec::with_capacity(n),
            rank: Vec::with_capacity(n),
            job_hits: vec![false; n],
            job_tags: vec![[0; SENDME_TAG_LEN]; n],
            seen: Vec::with_capacity(n),
            seen_of: vec![0; n],
            multi_jobs: [0; 2],
            cgo_group_min: None,
        }
    }

    /// A placeholder while the real stage is taken out during a flush (allocates nothing).
    fn empty() -> RelayIn {
        RelayIn {
            chan: ChanId(0),
            cross: false,
            circ_ids: Vec::new(),
            cmds: Vec::new(),
            cells: Vec::new(),
            circ: Vec::new(),
            mode: Vec::new(),
            format: Vec::new(),
            hits: Vec::new(),
            tags: Vec::new(),
            order: Vec::new(),
            rank: Vec::new(),
            job_hits: Vec::new(),
            job_tags: Vec::new(),
            seen: Vec::new(),
            seen_of: Vec::new(),
            multi_jobs: [0; 2],
            cgo_group_min: None,
        }
    }

    pub fn len(&self) -> usize {
        self.cells.len()
    }
}

/// The multi-circuit crypto jobs: staged cells (in `order`) against their circuits.
struct Jobs<'a, C> {
    table: &'a mut CircuitTable<C>,
    cells: &'a mut [CellBody],
    circ: &'a [Option<CircHandle>],
    format: &'a [RelayCellFormat],
    order: &'a [u16],
}

impl<C: HopCrypto> OriginateJobs<C> for Jobs<'_, C> {
    fn count(&self) -> usize {
        self.order.len()
    }
    fn circuit(&self, i: usize) -> usize {
        self.circ[self.order[i] as usize].map_or(usize::MAX, |h| h.idx as usize)
    }
    fn get(&mut self, i: usize) -> (&mut C, &mut CellBody) {
        let k = self.order[i] as usize;
        let idx = self.circ[k].expect("multi jobs have a circuit").idx;
        let crypto = self
            .table
            .get_mut(idx)
            .and_then(|c| c.crypto.as_mut())
            .expect("multi jobs of open circuits only (checked before the call)");
        (crypto, &mut self.cells[k])
    }
    fn format(&self, i: usize) -> Option<RelayCellFormat> {
        Some(self.format[self.order[i] as usize])
    }
    fn get_disjoint<const N: usize>(
        &mut self,
        i: [usize; N],
    ) -> Option<([&mut C; N], [&mut CellBody; N])> {
        let k = i.map(|j| self.order[j] as usize);
        let mut idx = [0u32; N];
        for (x, &k) in idx.iter_mut().zip(&k) {
            *x = self.circ[k]?.idx;
        }
        let circs = self.table.get_disjoint_mut(idx)?;
        if !circs.iter().all(|c| c.crypto.is_some()) {
            return None;
        }
        let hops = circs.map(|c| c.crypto.as_mut().expect("checked just above"));
        let cells = self.cells.get_disjoint_mut(k).ok()?;
        Some((hops, cells))
    }
}

impl<C: HopCrypto, N: NetworkView> RelayCore<C, N> {
    /// A RELAY or RELAY_EARLY cell that arrived on `chan`, staged to be crypted with the
    /// others of the same read. The caller must call [`RelayCore::flush_relay_cells`] at the
    /// end of the read; a full stage, a cell of another channel and any other cell handed to
    /// the core flush it first.
    pub fn queue_relay_cell(
        &mut self,
        chan: ChanId,
        circ_id: CircId,
        cmd: ChanCmd,
        body: &[u8; CELL_BODY_LEN],
        io: &mut CoreIo<'_>,
    ) {
        if circ_id.is_zero() {
            return; // tor-spec §"Choosing circuit IDs": never a circuit.
        }
        let rin = &self.relay_in;
        if rin.len() >= MAX_RELAY_IN || (rin.len() > 0 && (rin.cross || rin.chan != chan)) {
            self.flush_relay_cells(io);
        }
        let rin = &mut self.relay_in;
        rin.chan = chan;
        rin.cross = false;
        rin.circ_ids.push(circ_id);
        rin.cmds.push(cmd);
        crate::util::copies::note(crate::util::copies::CopySite::RelayStage, CELL_BODY_LEN);
        rin.cells.push(*body);
    }

    /// A RELAY cell from the next hop of `circ` that another shard delivered (the next-hop
    /// channel lives there), staged with the others of the same cross-shard drain so they are
    /// crypted together as a channel read's are. The caller must call
    /// [`RelayCore::flush_relay_cells`] at the end of the drain, and before handing the core
    /// any other message of that drain (a DESTROY must not overtake its circuit's cells).
    /// RELAY_EARLY (a protocol violation backward) goes through
    /// [`RelayCore::handle_next_hop_cell`].
    pub fn queue_next_hop_cell(&mut self, circ: CircHandle, body: &CellBody, io: &mut CoreIo<'_>) {
        let rin = &self.relay_in;
        if rin.len() >= MAX_RELAY_IN || (rin.len() > 0 && !rin.cross) {
            self.flush_relay_cells(io);
        }
        let rin = &mut self.relay_in;
        let k = rin.len();
        rin.cross = true;
        rin.circ_ids.push(CircId(0));
        rin.cmds.push(ChanCmd::RELAY);
        rin.circ[k] = Some(circ);
        crate::util::copies::note(crate::util::copies::CopySite::RelayStage, CELL_BODY_LEN);
        rin.cells.push(*body);
    }

    /// Sets the fewest CGO circuits with cells in one read (per direction, and apart for
    /// circuits that end here), or with exit DATA in one originate stage (`staged`), that go
    /// through the grouped multi-circuit calls; `None`
    /// restores the crypto's measured thresholds ([`HopCrypto::cgo_group_min_circuits`]),
    /// `Some(usize::MAX)` turns grouping off. For benchmarks and tests that compare both paths
    /// on one build; relays keep the default.
    pub fn set_cgo_group_min(&mut self, min: Option<usize>) {
        self.relay_in.cgo_group_min = min;
        self.stage.cgo_group_min = min;
    }

    /// Whether RELAY cells wait for [`RelayCore::flush_relay_cells`].
    pub fn has_queued_relay_cells(&self) -> bool {
        self.relay_in.len() > 0
    }

    /// Crypts every staged RELAY cell (see the module docs), then handles them in arrival
    /// order.
    pub fn flush_relay_cells(&mut self, io: &mut CoreIo<'_>) {
        let n = self.relay_in.len();
        if n == 0 {
            return;
        }
        self.metrics.relay_in_batches += 1;
        self.metrics.relay_in_cells += n as u64;
        if self.relay_in.cross {
            self.metrics.relay_in_cross_batches += 1;
        }
        if n < C::multi_min_circuits().min(SMALL_READ) {
            // Too few cells to gain: the one-at-a-time path, without the batch set-up.
            self.metrics.cells_crypted_single += n as u64;
            // Taken out (no allocation) so the cells are crypted where they lie.
            let mut cells = ::core::mem::take(&mut self.relay_in.cells);
            for (k, cell) in cells.iter_mut().enumerate() {
                self.handle_single(k, cell, io);
            }
            cells.clear();
            let rin = &mut self.relay_in;
            rin.circ_ids.clear();
            rin.cmds.clear();
            rin.cells = cells;
            return;
        }
        let mut rin = ::core::mem::replace(&mut self.relay_in, RelayIn::empty());
        self.classify(&mut rin);
        self.crypt_ahead(&mut rin);
        self.handle_crypted(&mut rin, io);
        rin.circ_ids.clear();
        rin.cmds.clear();
        rin.cells.clear();
        self.relay_in = rin;
    }

    /// Chooses each cell's mode (see [`Mode`]).
    fn classify(&mut self, rin: &mut RelayIn) {
        let n = rin.len();
        let multi_min = C::multi_min_circuits();
        let cgo_min = rin
            .cgo_group_min
            .unwrap_or_else(|| C::cgo_group_min_circuits(false));
        let cgo_last_min = rin
            .cgo_group_min
            .unwrap_or_else(|| C::cgo_group_min_circuits(true));
        rin.seen.clear();
        // Distinct circuits with cells here: tor1 ones that end here, CGO ones each way (and
        // CGO ones that end here apart).
        let (mut tor1_exit, mut cgo_forward, mut cgo_last, mut cgo_backward) = (0, 0, 0, 0);
        for k in 0..n {
            let looked_up = if rin.cross {
                // Cells another shard delivered come from the next hop (`circ` set when
                // staged); a circuit closed since then resolves no more.
                rin.circ[k]
                    .and_then(|h| self.table.resolve(h))
                    .map(|idx| (idx, Side::Next))
            } else {
                self.table.lookup(rin.chan, rin.circ_ids[k])
            };
            let Some((idx, side)) = looked_up else {
                rin.mode[k] = Mode::Drop;
                rin.circ[k] = None;
                continue;
            };
            rin.circ[k] = Some(self.table.handle(idx));
            let c = self.table.get(idx).expect("looked up");
            let format = c.crypto.as_ref().map_or(RelayCellFormat::V0, C::format);
            rin.format[k] = format;
            let seen = match rin.seen.iter().position(|s| s.0 == idx) {
                Some(p) => p,
                None => {
                    rin.seen.push((idx, 0, false));
                    let last_hop = !matches!(c.next, Next::Open(_));
                    match (format, side) {
                        (RelayCellFormat::V1, Side::Prev) if last_hop => cgo_last += 1,
                        (RelayCellFormat::V1, Side::Prev) => cgo_forward += 1,
                        (RelayCellFormat::V1, Side::Next) => cgo_backward += 1,
                        (RelayCellFormat::V0, Side::Prev) if last_hop => tor1_exit += 1,
                        (RelayCellFormat::V0, _) => {}
                    }
                    rin.seen.len() - 1
                }
            };
            // Both hops on this channel would break "one direction per stage" (extend
            // refuses it; checked anyway, it costs one compare).
            let both_here = !rin.cross
                && match side {
                    Side::Prev => matches!(c.next, Next::Open(h) if h.chan == rin.chan),
                    Side::Next => c.prev_chan == rin.chan,
                };
            let batchable = !rin.seen[seen].2
                && !both_here
                && rin.cmds[k] == ChanCmd::RELAY
                && c.crypto.is_some()
                && (side == Side::Next || c.state == CircState::Open);
            // Multi modes for now; those under their threshold become runs below.
            rin.mode[k] = match (batchable, side, format) {
                (false, _, _) => {
                    rin.seen[seen].2 = true;
                    Mode::Single
                }
                (true, Side::Next, RelayCellFormat::V1) => Mode::BackwardMulti,
                (true, Side::Next, RelayCellFormat::V0) => Mode::Backward,
                (true, Side::Prev, RelayCellFormat::V1) if matches!(c.next, Next::Open(_)) => {
                    Mode::ForwardMulti
                }
                (true, Side::Prev, RelayCellFormat::V1) => Mode::ForwardMultiLast,
                (true, Side::Prev, RelayCellFormat::V0) if matches!(c.next, Next::Open(_)) => {
                    Mode::ForwardRun
                }
                (true, Side::Prev, RelayCellFormat::V0) => Mode::ForwardMulti,
            };
            rin.seen[seen].1 += 1;
            // At most one entry per staged cell: `MAX_RELAY_IN` fits in a byte.
            rin.seen_of[k] = seen as u8;
        }
        // Too few circuits to fill the lanes (tor1) or the kernel's groups (CGO): one run
        // per circuit is cheaper.
        let tor1_runs = tor1_exit < multi_min;
        let cgo_forward_runs = cgo_forward < cgo_min;
        let cgo_last_runs = cgo_last < cgo_last_min;
        let cgo_backward_runs = cgo_backward < cgo_min;
        rin.multi_jobs = [0; 2];
        for (m, f) in rin.mode[..n].iter_mut().zip(&rin.format[..n]) {
            let cgo = *f == RelayCellFormat::V1;
            match *m {
                Mode::ForwardMulti if (cgo && cgo_forward_runs) || (!cgo && tor1_runs) => {
                    *m = Mode::ForwardRun;
                }
                Mode::ForwardMultiLast if cgo_last_runs => *m = Mode::ForwardRun,
                Mode::ForwardMulti | Mode::ForwardMultiLast => rin.multi_jobs[0] += 1,
                Mode::BackwardMulti if cgo_backward_runs => *m = Mode::Backward,
                Mode::BackwardMulti => rin.multi_jobs[1] += 1,
                _ => {}
            }
        }
    }

    /// Runs the crypto over every cell that is not handled one at a time.
    fn crypt_ahead(&mut self, rin: &mut RelayIn) {
        let n = rin.len();
        // Runs: consecutive cells of one circuit in one mode share one keystream run.
        let mut k = 0;
        while k < n {
            let mode = rin.mode[k];
            if !matches!(mode, Mode::ForwardRun | Mode::Backward) {
                k += 1;
                continue;
            }
            let h = rin.circ[k];
            let mut end = k + 1;
            while end < n && rin.mode[end] == mode && rin.circ[end] == h {
                end += 1;
            }
            let crypto = h
                .and_then(|h| self.table.get_mut(h.idx))
                .and_then(|c| c.crypto.as_mut())
                .expect("classified as crypted: open with crypto");
            if mode == Mode::ForwardRun {
                crypto.forward_batch_tagged(
                    &mut rin.cells[k..end],
                    &mut rin.hits[k..end],
                    &mut rin.tags[k..end],
                );
            } else {
                crypto.backward_relay_batch(&mut rin.cells[k..end]);
            }
            self.count_crypted(end - k);
            k = end;
        }
        self.multi_call(rin, Mode::ForwardMulti);
        self.multi_call(rin, Mode::BackwardMulti);
    }

    /// The multi-circuit call over the cells in `mode` (forward or backward), round-robin
    /// over circuits: a circuit's i-th cell comes before any circuit's (i+1)-th, so
    /// consecutive jobs are distinct circuits and each circuit's cells keep their order.
    fn multi_call(&mut self, rin: &mut RelayIn, mode: Mode) {
        let n = rin.len();
        if rin.multi_jobs[usize::from(mode == Mode::BackwardMulti)] == 0 {
            return;
        }
        rin.rank.clear();
        for s in rin.seen.iter_mut() {
            s.1 = 0;
        }
        for k in 0..n {
            let m = rin.mode[k];
            if !(m == mode || (mode == Mode::ForwardMulti && m == Mode::ForwardMultiLast)) {
                continue;
            }
            let s = &mut rin.seen[usize::from(rin.seen_of[k])];
            rin.rank.push((s.1, k as u16));
            s.1 += 1;
        }
        let jobs = rin.rank.len();
        rin.rank.sort_unstable();
        rin.order.clear();
        rin.order.extend(rin.rank.iter().map(|&(_, k)| k));
        let mut j = Jobs {
            table: &mut self.table,
            cells: &mut rin.cells,
            circ: &rin.circ,
            format: &rin.format,
            order: &rin.order,
        };
        let done = if mode == Mode::ForwardMulti {
            let done =
                C::forward_jobs(&mut j, &mut rin.job_hits[..jobs], &mut rin.job_tags[..jobs]);
            for (j, &k) in rin.order.iter().enumerate() {
                rin.hits[k as usize] = rin.job_hits[j];
                rin.tags[k as usize] = rin.job_tags[j];
            }
            done
        } else {
            C::backward_relay_jobs(&mut j)
        };
        self.metrics.relay_in_multi_calls += 1;
        self.metrics.cells_crypted_batched += jobs as u64;
        self.metrics.cgo_cells_grouped += done.grouped as u64;
    }

    /// Staged cell `k` handled the old way, one at a time (`cell` taken out of the stage).
    fn handle_single(&mut self, k: usize, cell: &mut CellBody, io: &mut CoreIo<'_>) {
        let rin = &self.relay_in;
        let (chan, circ_id, cmd, circ) = (rin.chan, rin.circ_ids[k], rin.cmds[k], rin.circ[k]);
        let cell = ::core::slice::from_mut(cell);
        if rin.cross {
            if let Some(idx) = circ.and_then(|h| self.table.resolve(h)) {
                self.backward_run(idx, cmd, cell, io);
            }
        } else {
            self.handle_relay_batch(chan, circ_id, cmd, cell, io);
        }
    }

    fn count_crypted(&mut self, n: usize) {
        if n > 1 {
            self.metrics.cells_crypted_batched += n as u64;
        } else {
            self.metrics.cells_crypted_single += n as u64;
        }
    }

    /// Handles the staged cells in arrival order, with their crypto done.
    fn handle_crypted(&mut self, rin: &mut RelayIn, io: &mut CoreIo<'_>) {
        for k in 0..rin.len() {
            let mode = rin.mode[k];
            if mode == Mode::Drop {
                continue;
            }
            if mode == Mode::Single {
                self.metrics.cells_crypted_single += 1;
                let (chan, circ_id, cmd, circ) =
                    (rin.chan, rin.circ_ids[k], rin.cmds[k], rin.circ[k]);
                let cell = &mut rin.cells[k..k + 1];
                if rin.cross {
                    if let Some(idx) = circ.and_then(|h| self.table.resolve(h)) {
                        self.backward_run(idx, cmd, cell, io);
                    }
                } else {
                    self.handle_relay_batch(chan, circ_id, cmd, cell, io);
                }
                continue;
            }
            // An earlier cell may have closed the circuit: its later cells go with it.
            let Some(idx) = rin.circ[k].and_then(|h| self.table.resolve(h)) else {
                continue;
            };
            let cell = &mut rin.cells[k];
            match mode {
                Mode::Backward | Mode::BackwardMulti => {
                    self.metrics.cells_backward += 1;
                    self.send_to_prev(idx, ChanCmd::RELAY, cell, io);
                }
                _ if rin.hits[k] => {
                    self.metrics.cells_recognized += 1;
                    self.run_tag = rin.tags[k];
                    self.handle_local(idx, false, cell, io);
                }
                _ => {
                    self.forward_unrecognized(idx, ChanCmd::RELAY, cell, io);
                }
            }
        }
    }
}
