//! Exit DATA cells staged for one multi-circuit originate call.
//!
//! At an exit, DATA cells for many circuits are packaged in one completion batch (one per
//! readable exit socket). Setting each cell's digest is a sequential SHA-1 per circuit, so
//! one circuit cannot use SIMD lanes, but many circuits can: cells packaged by
//! [`RelayCore::stream_data`] are kept here in plaintext and crypted together by
//! [`RelayCore::flush_originated`] through the multi-buffer kernel
//! (`crypto::relay::originate_multi_jobs`), then sent in the order they were packaged.
//!
//! CGO circuits' cells (relay cell format v1) of distinct circuits are handed to CGO's
//! interleaved kernel in groups of up to four ([`cgo::originate_group`] through
//! [`HopCrypto::originate_jobs`]) when at least [`HopCrypto::cgo_group_min_circuits`] CGO
//! circuits have cells in the stage; fewer are crypted one at a time. The threshold is the
//! read path's (measured there, where a group's set-up cost more than it saved below it); it
//! was not measured for originate, where the crypto alone gains ~4 % grouped
//! (`cgo_originate_batched_ns` against `cgo_originate_ns`, `bench/RESULTS.md`). The round-robin order already makes consecutive jobs distinct
//! circuits, so a circuit is in a group at most once and its cells keep their order.
//!
//! [`cgo::originate_group`]: crate::crypto::relay::cgo::originate_group
//!
//! Invariants that keep this equivalent to crypting each cell at once:
//! * a circuit's cells are crypted in their packaging order and sent in crypt order, so its
//!   AES keystream, running digest and SENDME tag FIFO advance exactly as before;
//! * every other cell we originate (CONNECTED, END, SENDME, XON/XOFF, RESOLVED, EXTENDED2)
//!   flushes the stage first, so an END never overtakes its stream's DATA;
//! * the stage is bounded ([`MAX_STAGED`]) and flushed at the end of every I/O batch, so a
//!   cell waits at most one batch; a circuit closed meanwhile loses its staged cells, as it
//!   loses its queued ones.

use super::core::{CoreIo, CoreRng, RelayCore};
use super::crypto::{CellBody, HopCrypto, OriginateJobs, RelayCellFormat};
use super::table::{CircHandle, CircuitTable};
use super::NetworkView;
use crate::cell::{ChanCmd, CELL_BODY_LEN};
use crate::proto::flow::SENDME_TAG_LEN;

/// Cells staged at most before a flush: a multiple of the widest SIMD group (16 lanes).
pub const MAX_STAGED: usize = 64;

/// One packaged, not yet crypted DATA cell.
pub(super) struct StagedCell {
    pub circ: CircHandle,
    pub body: CellBody,
    /// Its SENDME tag must be recorded (it prompts a SENDME from the client).
    pub prompts: bool,
    /// How many cells of the same circuit were staged before it (its round).
    pub round: u16,
    /// Its circuit's relay cell format when it was staged (`None`: no keys yet), so the
    /// crypto call splits tor1 from CGO without looking the circuit up again.
    pub format: Option<RelayCellFormat>,
}

/// The stage and its scratch space, all allocated once.
pub(super) struct Stage {
    pub cells: Vec<StagedCell>,
    /// Job order for the crypto call: round-robin over circuits (see [`order_round_robin`]).
    order: Vec<u16>,
    rank: Vec<(u32, u16)>,
    /// Inverse of `order`: the job index of each staged cell.
    job_of: Vec<u16>,
    tags: Vec<[u8; SENDME_TAG_LEN]>,
    /// Overrides [`HopCrypto::cgo_group_min_circuits`] (tests and benchmarks compare the
    /// grouped path with one at a time: [`RelayCore::set_cgo_group_min`]).
    pub cgo_group_min: Option<usize>,
}

impl Stage {
    pub fn new() -> Stage {
        Stage {
            cells: Vec::with_capacity(MAX_STAGED),
            order: Vec::with_capacity(MAX_STAGED),
            rank: Vec::with_capacity(MAX_STAGED),
            job_of: vec![0; MAX_STAGED],
            tags: vec![[0; SENDME_TAG_LEN]; MAX_STAGED],
            cgo_group_min: None,
        }
    }

    /// A placeholder while the real stage is taken out during a flush (allocates nothing).
    fn empty() -> Stage {
        Stage {
            cells: Vec::new(),
            order: Vec::new(),
            rank: Vec::new(),
            job_of: Vec::new(),
            tags: Vec::new(),
            cgo_group_min: None,
        }
    }
}

/// Orders staged cells so that the i-th cell of every circuit comes before the (i+1)-th of
/// any: the multi-buffer call groups consecutive jobs of distinct circuits, so this fills its
/// lanes, while each circuit's own cells keep their order.
fn order_round_robin(cells: &[StagedCell], rank: &mut Vec<(u32, u16)>, order: &mut Vec<u16>) {
    rank.clear();
    rank.extend(
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| (u32::from(c.round), i as u16)),
    );
    rank.sort_unstable();
    order.clear();
    order.extend(rank.iter().map(|&(_, i)| i));
}

/// The crypto jobs: staged cells (in `order`) against their circuits' hop state.
struct Jobs<'a, C> {
    table: &'a mut CircuitTable<C>,
    cells: &'a mut [StagedCell],
    order: &'a [u16],
    /// Whether CGO jobs may be lent together (enough CGO circuits staged).
    group: bool,
    /// CGO jobs lent together, i.e. crypted in an interleaved group.
    grouped: usize,
}

impl<C: HopCrypto> OriginateJobs<C> for Jobs<'_, C> {
    fn count(&self) -> usize {
        self.order.len()
    }
    fn circuit(&self, i: usize) -> usize {
        self.cells[self.order[i] as usize].circ.idx as usize
    }
    fn get(&mut self, i: usize) -> (&mut C, &mut CellBody) {
        let cell = &mut self.cells[self.order[i] as usize];
        let crypto = self
            .table
            .get_mut(cell.circ.idx)
            .and_then(|c| c.crypto.as_mut())
            .expect("staged cells of live circuits only (checked before the call)");
        (crypto, &mut cell.body)
    }
    fn format(&self, i: usize) -> Option<RelayCellFormat> {
        self.cells[self.order[i] as usize].format
    }
    fn get_disjoint<const N: usize>(
        &mut self,
        i: [usize; N],
    ) -> Option<([&mut C; N], [&mut CellBody; N])> {
        if !self.group {
            return None;
        }
        let k = i.map(|j| self.order[j] as usize);
        // Only CGO jobs are ever grouped (`RelayHop::originate_jobs` asks for no others).
        if !k
            .iter()
            .all(|&k| self.cells[k].format == Some(RelayCellFormat::V1))
        {
            return None;
        }
        let idx = k.map(|k| self.cells[k].circ.idx);
        let circs = self.table.get_disjoint_mut(idx)?;
        if !circs.iter().all(|c| c.crypto.is_some()) {
            return None;
        }
        let hops = circs.map(|c| c.crypto.as_mut().expect("checked just above"));
        let cells = self.cells.get_disjoint_mut(k).ok()?.map(|c| &mut c.body);
        self.grouped += N;
        Some((hops, cells))
    }
}

impl<C: HopCrypto, N: NetworkView> RelayCore<C, N> {
    /// Stages a DATA cell of circuit `idx` whose plaintext body `encode` writes in place,
    /// in its stage slot (no copy of a finished body; the copy map). False, and nothing
    /// staged, if `encode` fails or the circuit is gone.
    pub(super) fn stage_data_with(
        &mut self,
        idx: u32,
        prompts: bool,
        io: &mut CoreIo<'_>,
        encode: impl FnOnce(&mut CellBody, &mut dyn CoreRng) -> bool,
    ) -> bool {
        if self.stage.cells.len() >= MAX_STAGED {
            self.flush_originated(io);
        }
        let circ = self.table.handle(idx);
        let Some(c) = self.table.get_mut(idx) else {
            return false;
        };
        let round = c.staged;
        let format = c.crypto.as_ref().map(C::format);
        self.stage.cells.push(StagedCell {
            circ,
            body: [0; CELL_BODY_LEN],
            prompts,
            round,
            format,
        });
        let slot = self.stage.cells.last_mut().expect("just pushed");
        if !encode(&mut slot.body, &mut *io.rng) {
            self.stage.cells.pop();
            return false;
        }
        c.staged += 1;
        true
    }

    /// Whether DATA cells wait for [`RelayCore::flush_originated`].
    pub fn has_staged(&self) -> bool {
        !self.stage.cells.is_empty()
    }

    /// Crypts every staged cell in one multi-circuit call and sends them in packaging order.
    /// The shard calls it at the end of each I/O batch; the core calls it before any other
    /// cell it originates.
    pub fn flush_originated(&mut self, io: &mut CoreIo<'_>) {
        if self.stage.cells.is_empty() {
            return;
        }
        let mut stage = std::mem::replace(&mut self.stage, Stage::empty());
        // Rounds restart at the next stage (a closed circuit's slot is reset on reuse).
        for c in &stage.cells {
            if let Some(circ) = self
                .table
                .resolve(c.circ)
                .and_then(|i| self.table.get_mut(i))
            {
                circ.staged = 0;
            }
        }
        // Drop cells of circuits closed since they were staged (their slot may be reused).
        let before = stage.cells.len();
        stage.cells.retain(|c| {
            self.table
                .resolve(c.circ)
                .and_then(|idx| self.table.get(idx))
                .is_some_and(|c| c.crypto.is_some())
        });
        self.metrics.staged_cells_dropped += (before - stage.cells.len()) as u64;
        let n = stage.cells.len();
        if n > 0 {
            order_round_robin(&stage.cells, &mut stage.rank, &mut stage.order);
            if stage.cells.iter().any(|c| c.circ != stage.cells[0].circ) {
                self.metrics.originate_multi_flushes += 1;
            }
            // Distinct CGO circuits staged: each has one cell in round 0.
            let cgo_circuits = stage
                .cells
                .iter()
                .filter(|c| c.round == 0 && c.format == Some(RelayCellFormat::V1))
                .count();
            let cgo_min = stage
                .cgo_group_min
                .unwrap_or_else(|| C::cgo_group_min_circuits(false));
            let mut jobs = Jobs {
                table: &mut self.table,
                cells: &mut stage.cells,
                order: &stage.order,
                group: cgo_circuits >= cgo_min.max(2),
                grouped: 0,
            };
            // tags[j] belongs to job j, i.e. to cell order[j].
            C::originate_jobs(&mut jobs, &mut stage.tags[..n]);
            self.metrics.cgo_originated_grouped += jobs.grouped as u64;
        }
        // Record and send in packaging order; tags are in job order.
        for (j, &i) in stage.order.iter().enumerate() {
            stage.job_of[i as usize] = j as u16;
        }
        for i in 0..n {
            let tag = stage.tags[stage.job_of[i] as usize];
            let cell = &stage.cells[i];
            let Some(idx) = self.table.resolve(cell.circ) else {
                continue;
            };
            if cell.prompts {
                if let Some(c) = self.table.get_mut(idx) {
                    match c.cc.as_deref_mut() {
                        Some(cc) => cc.record_prompting_cell(&tag, io.now),
                        None => c.tags.record(tag),
                    }
                }
            }
            self.metrics.cells_originated += 1;
            self.send_to_prev(idx, ChanCmd::RELAY, &cell.body, io);
        }
        stage.cells.clear();
        self.stage = stage;
    }
}
