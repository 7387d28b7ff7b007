//! Exit paths across many circuits: one cell each of many circuits, so that the circuits'
//! SHA-1 running digests fill the lanes of a multi-buffer kernel ([`super::sha1_mb`]).
//!
//! Cells of the same circuit may appear more than once in the indexed forms; they are then
//! handled in order, in separate groups, because a running digest is sequential.

use super::cpu::{Sha1MultiImpl, Tor1Engine};
use super::sha1_mb::{Sha1Lanes, MAX_LANES};
use super::tor1::Tor1RelayCrypto;
use super::{recognized_is_zero, CellBody, DIGEST_LEN, DIGEST_OFFSET, SENDME_TAG_LEN};
use std::cell::RefCell;

/// One circuit's hop state and one of its cell bodies.
#[derive(Debug)]
pub struct CircuitCell<'a> {
    /// The circuit's tor1 state at this relay.
    pub crypto: &'a mut Tor1RelayCrypto,
    /// The cell body, processed in place.
    pub cell: &'a mut CellBody,
}

thread_local! {
    /// Per-thread scratch for multi-buffer groups (about 10 KiB), so no cell allocates.
    static LANES: RefCell<Sha1Lanes> = RefCell::new(Sha1Lanes::new());
}

/// Access to the i-th (state, cell) pair of a multi-circuit call, whichever form it has:
/// callers that keep circuit states in their own table (the exit's circuit core) implement it
/// over that table instead of copying states into a slice.
///
/// Jobs run in index order, grouped greedily: a group ends at the first job whose circuit is
/// already in it. So a caller with several cells per circuit should order jobs round-robin
/// (every circuit's first cell, then every circuit's second …) to fill the lanes.
pub trait MultiJobs {
    fn count(&self) -> usize;
    /// Identifies the circuit of job `i`, to keep two cells of one circuit out of one group.
    fn circuit(&self, i: usize) -> usize;
    fn get(&mut self, i: usize) -> (&mut Tor1RelayCrypto, &mut CellBody);
}

use MultiJobs as Jobs;

impl Jobs for [CircuitCell<'_>] {
    fn count(&self) -> usize {
        self.len()
    }
    fn circuit(&self, i: usize) -> usize {
        std::ptr::from_ref::<Tor1RelayCrypto>(self[i].crypto) as usize
    }
    fn get(&mut self, i: usize) -> (&mut Tor1RelayCrypto, &mut CellBody) {
        let j = &mut self[i];
        (j.crypto, j.cell)
    }
}

struct Indexed<'a> {
    states: &'a mut [Tor1RelayCrypto],
    cells: &'a mut [CellBody],
    circuits: &'a [usize],
}

impl Jobs for Indexed<'_> {
    fn count(&self) -> usize {
        self.cells.len()
    }
    fn circuit(&self, i: usize) -> usize {
        self.circuits[i]
    }
    fn get(&mut self, i: usize) -> (&mut Tor1RelayCrypto, &mut CellBody) {
        (&mut self.states[self.circuits[i]], &mut self.cells[i])
    }
}

/// Splits jobs into groups of at most `width` distinct circuits, preserving order.
fn next_group<J: Jobs + ?Sized>(jobs: &J, start: usize, width: usize) -> usize {
    let mut seen = [0usize; MAX_LANES];
    let mut end = start;
    while end < jobs.count() && end - start < width {
        let c = jobs.circuit(end);
        if seen[..end - start].contains(&c) {
            break;
        }
        seen[end - start] = c;
        end += 1;
    }
    end
}

fn originate_core<J: Jobs + ?Sized>(
    jobs: &mut J,
    mut tags: Option<&mut [[u8; SENDME_TAG_LEN]]>,
    imp: Sha1MultiImpl,
    min_lanes: usize,
) {
    let n = jobs.count();
    if let Some(t) = &tags {
        assert_eq!(t.len(), n, "originate_multi: one tag per cell");
    }
    let width = imp.lanes();
    let single = |jobs: &mut J, i: usize, tags: &mut Option<&mut [[u8; SENDME_TAG_LEN]]>| {
        let (c, cell) = jobs.get(i);
        let sha1 = match imp {
            Sha1MultiImpl::OneByOne(s) => s,
            _ => c.backward.sha1,
        };
        let d = c.backward.set_digest_with(cell, sha1);
        c.backward.crypt(cell);
        c.sendme_tag = d;
        if let Some(t) = tags {
            t[i] = d;
        }
    };
    if width == 1 {
        for i in 0..n {
            single(jobs, i, &mut tags);
        }
        return;
    }
    LANES.with(|lanes| {
        let lanes = &mut *lanes.borrow_mut();
        let mut i = 0;
        while i < n {
            let end = next_group(jobs, i, width);
            if end - i < min_lanes {
                for k in i..end {
                    single(jobs, k, &mut tags);
                }
            } else {
                lanes.clear();
                for k in i..end {
                    let (c, cell) = jobs.get(k);
                    lanes.push(&c.backward.digest, cell);
                }
                lanes.run(imp);
                for (lane, k) in (i..end).enumerate() {
                    let (c, cell) = jobs.get(k);
                    lanes.commit(lane, &mut c.backward.digest);
                    let d = lanes.digest(lane);
                    cell[DIGEST_OFFSET..DIGEST_OFFSET + DIGEST_LEN]
                        .copy_from_slice(&d[..DIGEST_LEN]);
                    c.backward.crypt(cell);
                    c.sendme_tag = d;
                    if let Some(t) = &mut tags {
                        t[k] = d;
                    }
                }
            }
            i = end;
        }
    });
}

fn forward_core<J: Jobs + ?Sized>(
    jobs: &mut J,
    for_us: &mut [bool],
    mut tags: Option<&mut [[u8; SENDME_TAG_LEN]]>,
    imp: Sha1MultiImpl,
    min_lanes: usize,
) -> usize {
    let n = jobs.count();
    assert_eq!(for_us.len(), n, "forward_multi: one result per cell");
    if let Some(t) = &tags {
        assert_eq!(t.len(), n, "forward_multi: one tag per cell");
    }
    let width = imp.lanes();
    let mut hits = 0;
    if width == 1 {
        for (i, hit) in for_us.iter_mut().enumerate() {
            let (c, cell) = jobs.get(i);
            let sha1 = match imp {
                Sha1MultiImpl::OneByOne(s) => s,
                _ => c.forward.sha1,
            };
            c.forward.crypt(cell);
            *hit = false;
            if recognized_is_zero(cell) {
                if let Some(d) = c.forward.check_digest_with(cell, sha1) {
                    c.sendme_tag = d;
                    if let Some(t) = &mut tags {
                        t[i] = d;
                    }
                    *hit = true;
                    hits += 1;
                }
            }
        }
        return hits;
    }
    LANES.with(|lanes| {
        let lanes = &mut *lanes.borrow_mut();
        let mut lane_job = [0usize; MAX_LANES];
        let mut i = 0;
        while i < n {
            let end = next_group(jobs, i, width);
            lanes.clear();
            // Decrypt; only cells with recognized == 0 need a digest check (tor-spec "Routing
            // relay cells").
            for (k, hit) in for_us.iter_mut().enumerate().take(end).skip(i) {
                let (c, cell) = jobs.get(k);
                c.forward.crypt(cell);
                *hit = false;
                if recognized_is_zero(cell) {
                    lane_job[lanes.len()] = k;
                    lanes.push(&c.forward.digest, cell);
                }
            }
            let used = lanes.len();
            if used < min_lanes {
                for &k in &lane_job[..used] {
                    let (c, cell) = jobs.get(k);
                    if let Some(d) = c.forward.check_digest(cell) {
                        c.sendme_tag = d;
                        if let Some(t) = &mut tags {
                            t[k] = d;
                        }
                        for_us[k] = true;
                        hits += 1;
                    }
                }
            } else if used > 0 {
                lanes.run(imp);
                for (lane, &k) in lane_job[..used].iter().enumerate() {
                    let (c, cell) = jobs.get(k);
                    let field = &mut cell[DIGEST_OFFSET..DIGEST_OFFSET + DIGEST_LEN];
                    // A mismatch leaves state and cell untouched (the cell goes onward).
                    if lanes.digest_prefix(lane) == *field {
                        field.fill(0);
                        lanes.commit(lane, &mut c.forward.digest);
                        c.sendme_tag = lanes.digest(lane);
                        if let Some(t) = &mut tags {
                            t[k] = c.sendme_tag;
                        }
                        for_us[k] = true;
                        hits += 1;
                    }
                }
            }
            i = end;
        }
    });
    hits
}

/// Originates one cell on each of many circuits (exit → client): sets each cell's digest with
/// its circuit's backward running digest, then encrypts it. Each circuit's
/// [`Tor1RelayCrypto::sendme_tag`] becomes its cell's tag.
pub fn originate_multi(jobs: &mut [CircuitCell<'_>]) {
    let e = Tor1Engine::get();
    originate_core(jobs, None, e.sha1_multi, e.multi_min_lanes);
}

/// [`originate_multi`] with a chosen SHA-1 strategy, writing every cell's SENDME v1 tag to
/// `tags` if given (tests, benchmarks, and callers that need each tag).
pub fn originate_multi_with(
    jobs: &mut [CircuitCell<'_>],
    tags: Option<&mut [[u8; SENDME_TAG_LEN]]>,
    imp: Sha1MultiImpl,
    min_lanes: usize,
) {
    originate_core(jobs, tags, imp, min_lanes);
}

/// [`originate_multi`] over any [`MultiJobs`]; `tags[i]` receives job `i`'s SENDME v1 tag.
///
/// # Panics
/// If `tags` and the job count differ.
pub fn originate_multi_jobs<J: MultiJobs + ?Sized>(
    jobs: &mut J,
    tags: &mut [[u8; SENDME_TAG_LEN]],
) {
    let e = Tor1Engine::get();
    originate_core(jobs, Some(tags), e.sha1_multi, e.multi_min_lanes);
}

/// [`originate_multi`] with cells in one buffer: `cells[i]` belongs to `states[circuits[i]]`.
/// A circuit may occur several times; its cells are processed in order. `tags[i]` receives
/// each cell's SENDME v1 tag if given.
///
/// # Panics
/// If `circuits` (or `tags`) and `cells` differ in length, or an index is out of range.
pub fn originate_multi_indexed(
    states: &mut [Tor1RelayCrypto],
    cells: &mut [CellBody],
    circuits: &[usize],
    tags: Option<&mut [[u8; SENDME_TAG_LEN]]>,
) {
    assert_eq!(
        cells.len(),
        circuits.len(),
        "originate_multi_indexed: one circuit per cell"
    );
    let e = Tor1Engine::get();
    originate_core(
        &mut Indexed {
            states,
            cells,
            circuits,
        },
        tags,
        e.sha1_multi,
        e.multi_min_lanes,
    );
}

/// Cells arriving from the client side on many circuits (at the exit): decrypts each with its
/// circuit's forward layer and checks recognized + digest. `for_us[i]` tells whether `cells[i]`
/// is for this hop; returns how many are. A mismatching cell leaves its digest state untouched.
pub fn forward_multi(jobs: &mut [CircuitCell<'_>], for_us: &mut [bool]) -> usize {
    let e = Tor1Engine::get();
    forward_core(jobs, for_us, None, e.sha1_multi, e.multi_min_lanes)
}

/// [`forward_multi`] with a chosen SHA-1 strategy.
pub fn forward_multi_with(
    jobs: &mut [CircuitCell<'_>],
    for_us: &mut [bool],
    imp: Sha1MultiImpl,
    min_lanes: usize,
) -> usize {
    forward_core(jobs, for_us, None, imp, min_lanes)
}

/// [`forward_multi`] with cells in one buffer: `cells[i]` belongs to `states[circuits[i]]`.
///
/// # Panics
/// If `circuits` or `for_us` and `cells` differ in length, or an index is out of range.
pub fn forward_multi_indexed(
    states: &mut [Tor1RelayCrypto],
    cells: &mut [CellBody],
    circuits: &[usize],
    for_us: &mut [bool],
) -> usize {
    assert_eq!(
        cells.len(),
        circuits.len(),
        "forward_multi_indexed: one circuit per cell"
    );
    let e = Tor1Engine::get();
    forward_core(
        &mut Indexed {
            states,
            cells,
            circuits,
        },
        for_us,
        None,
        e.sha1_multi,
        e.multi_min_lanes,
    )
}

/// [`forward_multi`] over any [`MultiJobs`]; `tags[i]` receives job `i`'s SENDME v1 tag if
/// the cell is recognized (left untouched otherwise). Jobs of one circuit are crypted in
/// job order.
///
/// # Panics
/// If `for_us` or `tags` and the job count differ.
pub fn forward_multi_jobs<J: MultiJobs + ?Sized>(
    jobs: &mut J,
    for_us: &mut [bool],
    tags: &mut [[u8; SENDME_TAG_LEN]],
) -> usize {
    let e = Tor1Engine::get();
    forward_core(jobs, for_us, Some(tags), e.sha1_multi, e.multi_min_lanes)
}
