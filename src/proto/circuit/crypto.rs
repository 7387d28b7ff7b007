//! The seam between the circuit core and tor1 relay crypto.
//!
//! The core only needs one hop's relay-side state per circuit. This trait names exactly what
//! it calls; [`RelayHop`] implements it for production (tor1 or CGO, chosen per circuit by
//! the handshake), [`Tor1RelayCrypto`] alone (tor1 only), and other implementations (a plain
//! reference implementation in tests) can stand in.

use crate::cell::ChanCmd;
use crate::cell::CELL_BODY_LEN;
use crate::crypto::keymat::Tor1KeyMaterial;
use crate::crypto::relay::cgo::{self, CgoKeyMaterial, CgoRelayCrypto128, CGO_GROUP, CGO_TAG_LEN};
use crate::crypto::relay::Tor1RelayCrypto;
use crate::proto::flow::SENDME_TAG_LEN;
use std::marker::PhantomData;

/// One relay cell body.
pub type CellBody = [u8; CELL_BODY_LEN];

/// How relay messages are laid out in a circuit's cells (tor-spec §"Relay cells"): v0 with
/// tor1 crypto, v1 with CGO (C tor `relay_cell_fmt_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayCellFormat {
    /// `cmd | recognized | stream_id | digest | length | data`.
    V0,
    /// `tag | cmd | length | [stream_id] | data`.
    V1,
}

/// A relay's crypto state for one hop of one circuit (tor-spec §"Routing relay cells").
pub trait HopCrypto: Sized {
    /// State keyed by a circuit handshake.
    fn from_keys(keys: &Tor1KeyMaterial) -> Self;

    /// State keyed by an ntor-v3 handshake that negotiated CGO; `None` when this
    /// implementation has no CGO (see [`HopCrypto::supports_cgo`]).
    fn from_cgo_keys(_keys: &CgoKeyMaterial) -> Option<Self> {
        None
    }

    /// Whether [`HopCrypto::from_cgo_keys`] works: the relay accepts a CGO request only then.
    fn supports_cgo() -> bool {
        false
    }

    /// The relay cell format of this circuit.
    fn format(&self) -> RelayCellFormat {
        RelayCellFormat::V0
    }

    /// Length of this circuit's SENDME tags: 20 (tor1) or 16 (CGO). [`HopCrypto::sendme_tag`]
    /// and the tags returned by `originate` are that long, zero-padded to 20 bytes as C tor
    /// records a CGO tag (`sendme_record_cell_digest_on_circ`).
    fn sendme_tag_len(&self) -> usize {
        SENDME_TAG_LEN
    }

    /// [`HopCrypto::forward_batch`] for cells that arrived with channel command `cmd`
    /// (RELAY or RELAY_EARLY: CGO tweaks its cipher with it; tor1 ignores it).
    fn forward_batch_cmd(
        &mut self,
        _cmd: ChanCmd,
        cells: &mut [CellBody],
        for_us: &mut [bool],
    ) -> usize {
        self.forward_batch(cells, for_us)
    }

    /// A cell moving away from the client: removes our layer in place and returns whether
    /// the cell is for us (recognized == 0 and digest matches). If it is, the cell's SENDME
    /// tag becomes [`HopCrypto::sendme_tag`].
    fn recognize(&mut self, body: &mut CellBody) -> bool;

    /// [`HopCrypto::recognize`] for a run of cells of this circuit, in order, so the AES
    /// keystream can run over all of them in one call. `for_us[i]` is set per cell.
    fn forward_batch(&mut self, cells: &mut [CellBody], for_us: &mut [bool]) -> usize {
        let mut n = 0;
        for (c, hit) in cells.iter_mut().zip(for_us.iter_mut()) {
            *hit = self.recognize(c);
            n += usize::from(*hit);
        }
        n
    }

    /// [`HopCrypto::forward_batch`] that also writes each recognized cell's SENDME tag to
    /// `tags[i]`, so cells crypted ahead can be handled later with their own tags.
    fn forward_batch_tagged(
        &mut self,
        cells: &mut [CellBody],
        for_us: &mut [bool],
        tags: &mut [[u8; SENDME_TAG_LEN]],
    ) -> usize {
        let mut n = 0;
        for ((c, hit), t) in cells.iter_mut().zip(for_us.iter_mut()).zip(tags.iter_mut()) {
            *hit = self.recognize(c);
            if *hit {
                *t = *self.sendme_tag();
                n += 1;
            }
        }
        n
    }

    /// [`HopCrypto::recognize`] for cells of many circuits in one call (a circuit may occur
    /// several times; its cells are crypted in job order). `for_us[i]` and, for recognized
    /// cells, `tags[i]` are set per job.
    fn forward_jobs<J: OriginateJobs<Self>>(
        jobs: &mut J,
        for_us: &mut [bool],
        tags: &mut [[u8; SENDME_TAG_LEN]],
    ) -> JobsDone {
        let mut done = JobsDone::default();
        for i in 0..jobs.count() {
            let (c, body) = jobs.get(i);
            for_us[i] = c.recognize(body);
            if for_us[i] {
                tags[i] = *c.sendme_tag();
                done.recognized += 1;
            }
        }
        done
    }

    /// [`HopCrypto::backward_relay`] for cells of many circuits in one call (a circuit may
    /// occur several times; its cells are crypted in job order).
    fn backward_relay_jobs<J: OriginateJobs<Self>>(jobs: &mut J) -> JobsDone {
        for i in 0..jobs.count() {
            let (c, body) = jobs.get(i);
            c.backward_relay(body);
        }
        JobsDone::default()
    }

    /// Fewest circuits worth one [`HopCrypto::forward_jobs`] call rather than one run per
    /// circuit (`usize::MAX`: never).
    fn multi_min_circuits() -> usize {
        usize::MAX
    }

    /// Fewest CGO circuits (relay cell format v1) with cells in one read worth handing their
    /// cells to [`HopCrypto::forward_jobs`] / [`HopCrypto::backward_relay_jobs`] in groups of
    /// distinct circuits rather than one run per circuit (`usize::MAX`: never); `last_hop`:
    /// circuits that end here (every cell recognized, each one a key update).
    fn cgo_group_min_circuits(_last_hop: bool) -> usize {
        usize::MAX
    }

    /// SENDME v1 tag of the last cell recognized or originated here.
    fn sendme_tag(&self) -> &[u8; SENDME_TAG_LEN];

    /// A cell from a later hop, moving toward the client: add our layer.
    fn backward_relay(&mut self, body: &mut CellBody);

    /// [`HopCrypto::backward_relay`] for a run of cells of this circuit.
    fn backward_relay_batch(&mut self, cells: &mut [CellBody]) {
        for c in cells {
            self.backward_relay(c);
        }
    }

    /// A cell we send toward the client: set the digest, encrypt; returns its SENDME tag.
    fn originate(&mut self, body: &mut CellBody) -> [u8; SENDME_TAG_LEN];

    /// [`HopCrypto::originate`] for cells of many circuits in one call (a circuit may occur
    /// several times; its cells are handled in job order). `tags[i]` receives job `i`'s tag.
    fn originate_jobs<J: OriginateJobs<Self>>(jobs: &mut J, tags: &mut [[u8; SENDME_TAG_LEN]]) {
        for (i, t) in tags.iter_mut().enumerate().take(jobs.count()) {
            let (c, body) = jobs.get(i);
            *t = c.originate(body);
        }
    }
}

/// Cells of many circuits for [`HopCrypto::originate_jobs`] and [`HopCrypto::forward_jobs`]:
/// job `i` is a cell and its
/// circuit's hop state; `circuit(i)` names the circuit so two of its cells never share a
/// SIMD group.
pub trait OriginateJobs<C> {
    fn count(&self) -> usize;
    fn circuit(&self, i: usize) -> usize;
    fn get(&mut self, i: usize) -> (&mut C, &mut CellBody);
    /// Job `i`'s relay cell format if the list recorded it when it was built (the core's
    /// stages do, from the circuit they already held): then splitting a batch by algorithm
    /// needs no circuit lookup for a tor1 job, only the kernel's one. `None`: ask the hop.
    fn format(&self, _i: usize) -> Option<RelayCellFormat> {
        None
    }
    /// Jobs `i` (of distinct circuits) all at once, for a kernel that crypts several
    /// circuits' cells together (CGO's interleaved groups); `None` if this list cannot lend
    /// them together or two share a circuit (then they are crypted one at a time).
    fn get_disjoint<const N: usize>(
        &mut self,
        _i: [usize; N],
    ) -> Option<([&mut C; N], [&mut CellBody; N])> {
        None
    }
}

/// What a multi-circuit call ([`HopCrypto::forward_jobs`], [`HopCrypto::backward_relay_jobs`])
/// did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobsDone {
    /// Jobs whose cell was for this hop (forward calls).
    pub recognized: usize,
    /// Jobs crypted in an interleaved group with cells of other circuits (CGO's kernel,
    /// groups of two or more).
    pub grouped: usize,
}

/// A hop state the tor1 multi-buffer kernels can run on: tor1 itself, or [`RelayHop`] when
/// its circuit runs tor1.
trait AsTor1 {
    fn as_tor1(&mut self) -> Option<&mut Tor1RelayCrypto>;
}

impl AsTor1 for Tor1RelayCrypto {
    #[inline]
    fn as_tor1(&mut self) -> Option<&mut Tor1RelayCrypto> {
        Some(self)
    }
}

impl AsTor1 for RelayHop {
    #[inline]
    fn as_tor1(&mut self) -> Option<&mut Tor1RelayCrypto> {
        match self {
            RelayHop::Tor1(t) => Some(t),
            RelayHop::Cgo(_) => None,
        }
    }
}

/// Lets the tor1 multi-buffer kernels run over [`OriginateJobs`]: all of them (`pick` is
/// `None`) or the jobs `pick` lists, in that order. Every job given to the kernel is tor1
/// (the caller's invariant: a whole list of tor1 states, or the tor1 jobs it sorted out).
struct Tor1Jobs<'a, J, C> {
    jobs: &'a mut J,
    pick: Option<&'a [u16]>,
    hop: PhantomData<fn() -> C>,
}

impl<'a, J, C> Tor1Jobs<'a, J, C> {
    fn new(jobs: &'a mut J, pick: Option<&'a [u16]>) -> Self {
        Tor1Jobs {
            jobs,
            pick,
            hop: PhantomData,
        }
    }

    #[inline]
    fn job(&self, i: usize) -> usize {
        self.pick.map_or(i, |p| usize::from(p[i]))
    }
}

impl<C: AsTor1, J: OriginateJobs<C>> crate::crypto::relay::MultiJobs for Tor1Jobs<'_, J, C> {
    fn count(&self) -> usize {
        self.pick.map_or_else(|| self.jobs.count(), <[u16]>::len)
    }
    fn circuit(&self, i: usize) -> usize {
        self.jobs.circuit(self.job(i))
    }
    fn get(&mut self, i: usize) -> (&mut Tor1RelayCrypto, &mut CellBody) {
        let (c, body) = self.jobs.get(self.job(i));
        let t = c
            .as_tor1()
            .expect("only tor1 jobs reach the tor1 kernel (sorted out by the caller)");
        (t, body)
    }
}

/// The production tor1 hop: AES-NI/VAES CTR and SHA-1 (SHA-NI), batched per circuit.
impl HopCrypto for Tor1RelayCrypto {
    fn from_keys(keys: &Tor1KeyMaterial) -> Self {
        Tor1RelayCrypto::new(keys)
    }

    #[inline]
    fn recognize(&mut self, body: &mut CellBody) -> bool {
        Tor1RelayCrypto::recognize(self, body)
    }

    fn forward_batch(&mut self, cells: &mut [CellBody], for_us: &mut [bool]) -> usize {
        Tor1RelayCrypto::forward_batch(self, cells, for_us)
    }

    fn forward_batch_tagged(
        &mut self,
        cells: &mut [CellBody],
        for_us: &mut [bool],
        tags: &mut [[u8; SENDME_TAG_LEN]],
    ) -> usize {
        Tor1RelayCrypto::forward_batch_tagged(self, cells, for_us, tags)
    }

    /// The multi-buffer kernel's own threshold (measured per CPU, `crypto::relay::cpu`);
    /// without one, runs are cheaper.
    fn multi_min_circuits() -> usize {
        let e = crate::crypto::relay::cpu::Tor1Engine::get();
        match e.sha1_multi {
            crate::crypto::relay::cpu::Sha1MultiImpl::OneByOne(_) => usize::MAX,
            _ => e.multi_min_lanes,
        }
    }

    /// Multi-buffer SHA-1 across circuits for the digest checks, chosen per CPU.
    fn forward_jobs<J: OriginateJobs<Self>>(
        jobs: &mut J,
        for_us: &mut [bool],
        tags: &mut [[u8; SENDME_TAG_LEN]],
    ) -> JobsDone {
        JobsDone {
            recognized: crate::crypto::relay::forward_multi_jobs(
                &mut Tor1Jobs::<_, Self>::new(jobs, None),
                for_us,
                tags,
            ),
            grouped: 0,
        }
    }

    #[inline]
    fn sendme_tag(&self) -> &[u8; SENDME_TAG_LEN] {
        Tor1RelayCrypto::sendme_tag(self)
    }

    #[inline]
    fn backward_relay(&mut self, body: &mut CellBody) {
        Tor1RelayCrypto::backward_relay(self, body)
    }

    fn backward_relay_batch(&mut self, cells: &mut [CellBody]) {
        Tor1RelayCrypto::backward_relay_batch(self, cells)
    }

    #[inline]
    fn originate(&mut self, body: &mut CellBody) -> [u8; SENDME_TAG_LEN] {
        Tor1RelayCrypto::originate(self, body)
    }

    /// Multi-buffer SHA-1 across circuits (AVX2 8 / AVX-512 16 lanes), chosen per CPU.
    fn originate_jobs<J: OriginateJobs<Self>>(jobs: &mut J, tags: &mut [[u8; SENDME_TAG_LEN]]) {
        crate::crypto::relay::originate_multi_jobs(&mut Tor1Jobs::<_, Self>::new(jobs, None), tags);
    }
}

/// The production hop: tor1 or CGO, as the circuit's handshake decided. CGO's state is boxed
/// (once per circuit) so tor1 circuits stay as small as before.
// tor1 stays inline (no indirection on the common path); only CGO's state is boxed.
#[allow(clippy::large_enum_variant)]
pub enum RelayHop {
    /// tor1: AES-CTR and a running SHA-1, relay cell format v0.
    Tor1(Tor1RelayCrypto),
    /// CGO (proposal 359) with AES-128, relay cell format v1.
    Cgo(Box<CgoHop>),
}

/// CGO state of one hop plus its last SENDME tag in the 20-byte form the core passes around.
pub struct CgoHop {
    crypto: CgoRelayCrypto128,
    tag: [u8; SENDME_TAG_LEN],
}

impl CgoHop {
    fn new(keys: &CgoKeyMaterial) -> Self {
        CgoHop {
            crypto: CgoRelayCrypto128::new(keys),
            tag: [0; SENDME_TAG_LEN],
        }
    }
}

/// A 16-byte CGO tag zero-padded to the core's 20-byte tag slot.
#[inline]
fn pad_tag(t: &[u8; CGO_TAG_LEN]) -> [u8; SENDME_TAG_LEN] {
    let mut out = [0u8; SENDME_TAG_LEN];
    out[..CGO_TAG_LEN].copy_from_slice(t);
    out
}

/// Cells per CGO batched call from one run (bounds the stack arrays of commands and tags).
const CGO_CHUNK: usize = 32;

impl CgoHop {
    fn forward_chunks(
        &mut self,
        cmd: ChanCmd,
        cells: &mut [CellBody],
        for_us: &mut [bool],
        mut tags: Option<&mut [[u8; SENDME_TAG_LEN]]>,
    ) -> usize {
        let cmds = [u8::from(cmd); CGO_CHUNK];
        let mut t16 = [[0u8; CGO_TAG_LEN]; CGO_CHUNK];
        let mut n = 0;
        let mut at = 0;
        for (cells, hits) in cells
            .chunks_mut(CGO_CHUNK)
            .zip(for_us.chunks_mut(CGO_CHUNK))
        {
            let k = cells.len();
            n += self
                .crypto
                .forward_batch(&cmds[..k], cells, hits, Some(&mut t16[..k]));
            for i in 0..k {
                if hits[i] {
                    let padded = pad_tag(&t16[i]);
                    self.tag = padded;
                    if let Some(ts) = tags.as_deref_mut() {
                        ts[at + i] = padded;
                    }
                }
            }
            at += k;
        }
        n
    }
}

const RELAY: u8 = 3;

/// Jobs sorted by algorithm per pass of [`RelayHop::forward_jobs`] / `originate_jobs`: bounds
/// the stack arrays that list the tor1 and CGO jobs (and receive their results).
const SPLIT_CHUNK: usize = 128;

/// Fewest CGO circuits with cells in one read (per direction) whose cells the core hands to
/// the grouped calls at a middle, where the interleaved kernel runs. Measured with
/// `fors-relay-batch cgo` on an AVX-512 Xeon (`bench/RESULTS.md`, "CGO on the live read
/// path"): with two or three circuits in reads of four cells, groups of two or three cost up
/// to 5 % more than one run per circuit; from four circuits, 1-8 % less relayed backward and
/// -1 to +4 % forward in reads of 16 cells or more.
const CGO_GROUP_MIN_CIRCUITS: usize = 4;

/// The same for circuits that end here (recognized cells, each with its key update, which
/// grouping does not shorten): with two to four circuits grouping cost up to 5 % more, from
/// eight it was within 3 % of one run per circuit either way.
const CGO_LAST_HOP_GROUP_MIN_CIRCUITS: usize = 8;

impl RelayHop {
    /// Splits a multi-circuit batch by algorithm in one pass over its jobs: the tor1 jobs
    /// are listed and go to the tor1 multi-buffer kernel together (`tor1(list)`), so a CGO
    /// circuit in the batch does not turn that kernel off for the others; the CGO jobs whose
    /// format the list recorded are listed too and go to `cgo(list)` (groups of distinct
    /// circuits through CGO's interleaved kernel); a CGO job of a list that records no format
    /// is crypted when met (`cgo_one`), its lookup already done. A circuit is all one
    /// algorithm, so each circuit's cells stay in job order.
    fn split_jobs<J: OriginateJobs<RelayHop>, S>(
        jobs: &mut J,
        state: &mut S,
        cgo: impl Fn(&mut S, &mut J, &[u16]),
        cgo_one: impl Fn(&mut S, usize, &mut CgoHop, &mut CellBody),
        tor1: impl Fn(&mut S, &mut J, &[u16]),
    ) {
        let n = jobs.count();
        let mut start = 0;
        while start < n {
            let end = n.min(start + SPLIT_CHUNK);
            let mut t1 = [0u16; SPLIT_CHUNK];
            let mut cg = [0u16; SPLIT_CHUNK];
            let (mut kt, mut kc) = (0, 0);
            for i in start..end {
                // Job lists are far shorter than 2^16 (the cores' stages are bounded); a
                // longer one would be a caller bug.
                let id = u16::try_from(i).expect("fewer than 65536 jobs");
                // A recorded job is listed without looking its circuit up: the kernel's
                // lookup is then its only one.
                match jobs.format(i) {
                    Some(RelayCellFormat::V0) => {
                        t1[kt] = id;
                        kt += 1;
                    }
                    Some(RelayCellFormat::V1) => {
                        cg[kc] = id;
                        kc += 1;
                    }
                    None => match jobs.get(i) {
                        (RelayHop::Cgo(c), body) => cgo_one(state, i, c, body),
                        (RelayHop::Tor1(_), _) => {
                            t1[kt] = id;
                            kt += 1;
                        }
                    },
                }
            }
            if kc > 0 {
                cgo(state, jobs, &cg[..kc]);
            }
            if kt > 0 {
                tor1(state, jobs, &t1[..kt]);
            }
            start = end;
        }
    }

    /// Walks the CGO jobs `list` in groups of up to [`CGO_GROUP`] consecutive jobs of
    /// distinct circuits (the core lists them round-robin, so consecutive jobs are mostly of
    /// distinct circuits): `group(ids)` for a group of two or more, which says false if the
    /// list could not lend its jobs together; then, and for a group of one, `one(i)` per job.
    fn cgo_walk<J: OriginateJobs<RelayHop>, S>(
        jobs: &mut J,
        state: &mut S,
        list: &[u16],
        group: impl Fn(&mut S, &mut J, &[usize]) -> bool,
        one: impl Fn(&mut S, usize, &mut CgoHop, &mut CellBody),
    ) {
        let mut start = 0;
        while start < list.len() {
            let mut ids = [0usize; CGO_GROUP];
            let mut circs = [0usize; CGO_GROUP];
            ids[0] = usize::from(list[start]);
            circs[0] = jobs.circuit(ids[0]);
            let mut n = 1;
            while n < CGO_GROUP && start + n < list.len() {
                let i = usize::from(list[start + n]);
                let c = jobs.circuit(i);
                if circs[..n].contains(&c) {
                    break;
                }
                ids[n] = i;
                circs[n] = c;
                n += 1;
            }
            if n < 2 || !group(state, jobs, &ids[..n]) {
                for &i in &ids[..n] {
                    if let (RelayHop::Cgo(c), body) = jobs.get(i) {
                        one(state, i, c, body);
                    }
                }
            }
            start += n;
        }
    }

    /// The CGO states and cells of jobs `ids` (exactly `N`, distinct circuits) at once, if the
    /// list can lend them together and all are CGO.
    fn lend_cgo<'j, J: OriginateJobs<RelayHop>, const N: usize>(
        jobs: &'j mut J,
        ids: &[usize],
    ) -> Option<([&'j mut CgoHop; N], [&'j mut CellBody; N])> {
        let idx: [usize; N] = ids.try_into().ok()?;
        let (hops, cells) = jobs.get_disjoint(idx)?;
        if !hops.iter().all(|h| matches!(h, RelayHop::Cgo(_))) {
            return None;
        }
        let hops = hops.map(|h| match h {
            RelayHop::Cgo(c) => &mut **c,
            RelayHop::Tor1(_) => unreachable!("every job checked CGO just above"),
        });
        Some((hops, cells))
    }

    /// One forward group of `N` CGO jobs through [`cgo::forward_group`]; false if the list
    /// could not lend them (nothing crypted).
    fn cgo_forward_n<J: OriginateJobs<RelayHop>, const N: usize>(
        jobs: &mut J,
        ids: &[usize],
        st: &mut ForwardState<'_>,
    ) -> bool {
        let Some((mut hops, mut cells)) = Self::lend_cgo::<J, N>(jobs, ids) else {
            return false;
        };
        let mut hits = [false; N];
        let d = {
            let mut cr = hops.each_mut().map(|h| &mut h.crypto);
            cgo::forward_group(&mut cr, &[RELAY; N], &mut cells, &mut hits)
        };
        for (l, &i) in ids.iter().enumerate() {
            st.hits[i] = hits[l];
            if hits[l] {
                hops[l].tag = pad_tag(hops[l].crypto.sendme_tag());
                st.tags[i] = hops[l].tag;
            }
        }
        st.done.recognized += d.for_us;
        st.done.grouped += d.interleaved;
        true
    }

    /// One backward group of `N` CGO jobs through [`cgo::backward_relay_group`].
    fn cgo_backward_n<J: OriginateJobs<RelayHop>, const N: usize>(
        jobs: &mut J,
        ids: &[usize],
        done: &mut JobsDone,
    ) -> bool {
        let Some((mut hops, mut cells)) = Self::lend_cgo::<J, N>(jobs, ids) else {
            return false;
        };
        let mut cr = hops.each_mut().map(|h| &mut h.crypto);
        done.grouped += cgo::backward_relay_group(&mut cr, &[RELAY; N], &mut cells).interleaved;
        true
    }

    /// One originate group of `N` CGO jobs through [`cgo::originate_group`].
    fn cgo_originate_n<J: OriginateJobs<RelayHop>, const N: usize>(
        jobs: &mut J,
        ids: &[usize],
        out: &mut [[u8; SENDME_TAG_LEN]],
    ) -> bool {
        let Some((mut hops, mut cells)) = Self::lend_cgo::<J, N>(jobs, ids) else {
            return false;
        };
        let mut t16 = [[0u8; CGO_TAG_LEN]; N];
        {
            let mut cr = hops.each_mut().map(|h| &mut h.crypto);
            cgo::originate_group(&mut cr, &[RELAY; N], &mut cells, Some(&mut t16));
        }
        for (l, &i) in ids.iter().enumerate() {
            hops[l].tag = pad_tag(&t16[l]);
            out[i] = hops[l].tag;
        }
        true
    }
}

/// Results of [`RelayHop::forward_jobs`] by job.
struct ForwardState<'a> {
    hits: &'a mut [bool],
    tags: &'a mut [[u8; SENDME_TAG_LEN]],
    done: JobsDone,
}

/// Runs `$f::<J, N>($jobs, $ids, $st)` for the group's length `N` (2 to [`CGO_GROUP`]).
macro_rules! by_group_len {
    ($f:ident, $jobs:expr, $ids:expr, $st:expr) => {
        match $ids.len() {
            2 => RelayHop::$f::<_, 2>($jobs, $ids, $st),
            3 => RelayHop::$f::<_, 3>($jobs, $ids, $st),
            4 => RelayHop::$f::<_, 4>($jobs, $ids, $st),
            _ => false,
        }
    };
}

const _: () = assert!(CGO_GROUP == 4, "by_group_len! covers groups of 2 to 4");

impl HopCrypto for RelayHop {
    fn from_keys(keys: &Tor1KeyMaterial) -> Self {
        RelayHop::Tor1(Tor1RelayCrypto::new(keys))
    }

    fn from_cgo_keys(keys: &CgoKeyMaterial) -> Option<Self> {
        Some(RelayHop::Cgo(Box::new(CgoHop::new(keys))))
    }

    fn supports_cgo() -> bool {
        true
    }

    fn format(&self) -> RelayCellFormat {
        match self {
            RelayHop::Tor1(_) => RelayCellFormat::V0,
            RelayHop::Cgo(_) => RelayCellFormat::V1,
        }
    }

    fn sendme_tag_len(&self) -> usize {
        match self {
            RelayHop::Tor1(_) => SENDME_TAG_LEN,
            RelayHop::Cgo(_) => CGO_TAG_LEN,
        }
    }

    #[inline]
    fn recognize(&mut self, body: &mut CellBody) -> bool {
        match self {
            RelayHop::Tor1(t) => t.recognize(body),
            RelayHop::Cgo(c) => {
                let hit = c.crypto.recognize(RELAY, body);
                if hit {
                    c.tag = pad_tag(c.crypto.sendme_tag());
                }
                hit
            }
        }
    }

    fn forward_batch(&mut self, cells: &mut [CellBody], for_us: &mut [bool]) -> usize {
        self.forward_batch_cmd(ChanCmd::RELAY, cells, for_us)
    }

    fn forward_batch_cmd(
        &mut self,
        cmd: ChanCmd,
        cells: &mut [CellBody],
        for_us: &mut [bool],
    ) -> usize {
        match self {
            RelayHop::Tor1(t) => t.forward_batch(cells, for_us),
            RelayHop::Cgo(c) => c.forward_chunks(cmd, cells, for_us, None),
        }
    }

    fn forward_batch_tagged(
        &mut self,
        cells: &mut [CellBody],
        for_us: &mut [bool],
        tags: &mut [[u8; SENDME_TAG_LEN]],
    ) -> usize {
        match self {
            RelayHop::Tor1(t) => t.forward_batch_tagged(cells, for_us, tags),
            RelayHop::Cgo(c) => c.forward_chunks(ChanCmd::RELAY, cells, for_us, Some(tags)),
        }
    }

    fn multi_min_circuits() -> usize {
        <Tor1RelayCrypto as HopCrypto>::multi_min_circuits()
    }

    /// The CGO kernel's threshold where it runs ([`cgo::group_kernel_available`]);
    /// elsewhere a group costs what its cells cost one run at a time.
    fn cgo_group_min_circuits(last_hop: bool) -> usize {
        match (cgo::group_kernel_available(), last_hop) {
            (false, _) => usize::MAX,
            (true, false) => CGO_GROUP_MIN_CIRCUITS,
            (true, true) => CGO_LAST_HOP_GROUP_MIN_CIRCUITS,
        }
    }

    /// Split by algorithm ([`RelayHop::split_jobs`]): the tor1 jobs through the tor1
    /// multi-buffer kernel, the CGO jobs in groups of distinct circuits through CGO's
    /// interleaved kernel ([`cgo::forward_group`]).
    fn forward_jobs<J: OriginateJobs<Self>>(
        jobs: &mut J,
        for_us: &mut [bool],
        tags: &mut [[u8; SENDME_TAG_LEN]],
    ) -> JobsDone {
        fn one(st: &mut ForwardState<'_>, i: usize, c: &mut CgoHop, body: &mut CellBody) {
            st.hits[i] = c.crypto.recognize(RELAY, body);
            if st.hits[i] {
                c.tag = pad_tag(c.crypto.sendme_tag());
                st.tags[i] = c.tag;
                st.done.recognized += 1;
            }
        }
        let mut st = ForwardState {
            hits: for_us,
            tags,
            done: JobsDone::default(),
        };
        Self::split_jobs(
            jobs,
            &mut st,
            |st, jobs, list| {
                Self::cgo_walk(
                    jobs,
                    st,
                    list,
                    |st, jobs, ids| by_group_len!(cgo_forward_n, jobs, ids, st),
                    one,
                )
            },
            one,
            |st, jobs, list| {
                let mut h = [false; SPLIT_CHUNK];
                let mut t = [[0u8; SENDME_TAG_LEN]; SPLIT_CHUNK];
                let k = list.len();
                st.done.recognized += crate::crypto::relay::forward_multi_jobs(
                    &mut Tor1Jobs::<_, RelayHop>::new(jobs, Some(list)),
                    &mut h[..k],
                    &mut t[..k],
                );
                for (j, &i) in list.iter().enumerate() {
                    st.hits[usize::from(i)] = h[j];
                    if h[j] {
                        st.tags[usize::from(i)] = t[j];
                    }
                }
            },
        );
        st.done
    }

    /// Split by algorithm as [`RelayHop::forward_jobs`]: the CGO jobs in groups
    /// ([`cgo::backward_relay_group`]), the tor1 jobs one by one (a tor1 backward cell is one
    /// CTR pass, which has no multi-circuit kernel).
    fn backward_relay_jobs<J: OriginateJobs<Self>>(jobs: &mut J) -> JobsDone {
        fn one(_: &mut JobsDone, _: usize, c: &mut CgoHop, body: &mut CellBody) {
            c.crypto.backward_relay(RELAY, body);
        }
        let mut done = JobsDone::default();
        Self::split_jobs(
            jobs,
            &mut done,
            |done, jobs, list| {
                Self::cgo_walk(
                    jobs,
                    done,
                    list,
                    |done, jobs, ids| by_group_len!(cgo_backward_n, jobs, ids, done),
                    one,
                )
            },
            one,
            |_, jobs, list| {
                for &i in list {
                    let (c, body) = jobs.get(usize::from(i));
                    c.backward_relay(body);
                }
            },
        );
        done
    }

    #[inline]
    fn sendme_tag(&self) -> &[u8; SENDME_TAG_LEN] {
        match self {
            RelayHop::Tor1(t) => t.sendme_tag(),
            RelayHop::Cgo(c) => &c.tag,
        }
    }

    #[inline]
    fn backward_relay(&mut self, body: &mut CellBody) {
        match self {
            RelayHop::Tor1(t) => t.backward_relay(body),
            RelayHop::Cgo(c) => c.crypto.backward_relay(RELAY, body),
        }
    }

    fn backward_relay_batch(&mut self, cells: &mut [CellBody]) {
        match self {
            RelayHop::Tor1(t) => t.backward_relay_batch(cells),
            RelayHop::Cgo(c) => {
                let cmds = [RELAY; CGO_CHUNK];
                for run in cells.chunks_mut(CGO_CHUNK) {
                    c.crypto.backward_relay_batch(&cmds[..run.len()], run);
                }
            }
        }
    }

    /// For CGO the first 16 bytes of `body` (the v1 tag slot) are overwritten with `N`.
    #[inline]
    fn originate(&mut self, body: &mut CellBody) -> [u8; SENDME_TAG_LEN] {
        match self {
            RelayHop::Tor1(t) => t.originate(body),
            RelayHop::Cgo(c) => {
                c.tag = pad_tag(&c.crypto.originate(RELAY, body));
                c.tag
            }
        }
    }

    /// Split by algorithm as [`RelayHop::forward_jobs`] ([`cgo::originate_group`] for the
    /// CGO jobs, where the list lends them together).
    fn originate_jobs<J: OriginateJobs<Self>>(jobs: &mut J, tags: &mut [[u8; SENDME_TAG_LEN]]) {
        fn one(
            out: &mut &mut [[u8; SENDME_TAG_LEN]],
            i: usize,
            c: &mut CgoHop,
            body: &mut CellBody,
        ) {
            c.tag = pad_tag(&c.crypto.originate(RELAY, body));
            out[i] = c.tag;
        }
        let mut out = tags;
        Self::split_jobs(
            jobs,
            &mut out,
            |out, jobs, list| {
                Self::cgo_walk(
                    jobs,
                    out,
                    list,
                    |out, jobs, ids| by_group_len!(cgo_originate_n, jobs, ids, out),
                    one,
                )
            },
            one,
            |out, jobs, list| {
                let mut t = [[0u8; SENDME_TAG_LEN]; SPLIT_CHUNK];
                let k = list.len();
                crate::crypto::relay::originate_multi_jobs(
                    &mut Tor1Jobs::<_, RelayHop>::new(jobs, Some(list)),
                    &mut t[..k],
                );
                for (j, &i) in list.iter().enumerate() {
                    out[usize::from(i)] = t[j];
                }
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Jobs over a vector of hops that count every `get` (a circuit lookup in the core's
    /// stages) and may carry each job's recorded format.
    struct CountingJobs<'a, C> {
        hops: &'a mut [C],
        cells: &'a mut [CellBody],
        circ: &'a [usize],
        formats: Option<&'a [RelayCellFormat]>,
        gets: Cell<usize>,
    }

    impl<C> OriginateJobs<C> for CountingJobs<'_, C> {
        fn count(&self) -> usize {
            self.cells.len()
        }
        fn circuit(&self, i: usize) -> usize {
            self.circ[i]
        }
        fn get(&mut self, i: usize) -> (&mut C, &mut CellBody) {
            self.gets.set(self.gets.get() + 1);
            (&mut self.hops[self.circ[i]], &mut self.cells[i])
        }
        fn format(&self, i: usize) -> Option<RelayCellFormat> {
            self.formats.map(|f| f[i])
        }
    }

    fn tor1_keys(seed: u8) -> Tor1KeyMaterial {
        let mut k = [0u8; Tor1KeyMaterial::KDF_LEN];
        for (i, b) in k.iter_mut().enumerate() {
            *b = seed.wrapping_mul(31).wrapping_add(i as u8);
        }
        Tor1KeyMaterial::from_kdf_output(&k)
    }

    fn cgo_keys(seed: u8) -> CgoKeyMaterial {
        let mut k = [0u8; CgoKeyMaterial::STREAM_LEN];
        for (i, b) in k.iter_mut().enumerate() {
            *b = seed.wrapping_mul(17).wrapping_add(i as u8);
        }
        CgoKeyMaterial::from_bytes(&k)
    }

    /// Round-robin jobs over `circuits` circuits, `per` cells each, deterministic bodies.
    fn batch(circuits: usize, per: usize) -> (Vec<CellBody>, Vec<usize>) {
        let mut cells = Vec::new();
        let mut circ = Vec::new();
        for r in 0..per {
            for c in 0..circuits {
                let mut b = [0u8; CELL_BODY_LEN];
                for (i, x) in b.iter_mut().enumerate() {
                    *x = (i * 7 + c * 13 + r * 29) as u8;
                }
                cells.push(b);
                circ.push(c);
            }
        }
        (cells, circ)
    }

    /// `H::originate_jobs` over `hops` and a copy of `cells`: (bodies, tags, lookups).
    fn originate_counted<H: HopCrypto>(
        hops: &mut [H],
        cells: &[CellBody],
        circ: &[usize],
        formats: Option<&[RelayCellFormat]>,
    ) -> (Vec<CellBody>, Vec<[u8; SENDME_TAG_LEN]>, usize) {
        let mut out = cells.to_vec();
        let mut tags = vec![[0u8; SENDME_TAG_LEN]; cells.len()];
        let mut j = CountingJobs {
            hops,
            cells: &mut out,
            circ,
            formats,
            gets: Cell::new(0),
        };
        H::originate_jobs(&mut j, &mut tags);
        let gets = j.gets.get();
        (out, tags, gets)
    }

    /// A tor1 job whose format the list recorded is not looked up to split the batch: a
    /// `RelayHop` batch of tor1 jobs costs exactly the lookups of the tor1-only kernel, and
    /// gives the same bytes and tags. (Before, every tor1 job was looked up once more.)
    #[test]
    fn recorded_tor1_jobs_are_looked_up_only_by_the_kernel() {
        let n = 8;
        let (cells, circ) = batch(n, 3);
        // Baseline: the tor1-only kernel over plain tor1 states.
        let mut plain: Vec<Tor1RelayCrypto> = (0..n as u8)
            .map(|s| Tor1RelayCrypto::new(&tor1_keys(s)))
            .collect();
        let a = originate_counted(&mut plain, &cells, &circ, None);
        // RelayHop with each job's format recorded.
        let mut hops: Vec<RelayHop> = (0..n as u8)
            .map(|s| RelayHop::from_keys(&tor1_keys(s)))
            .collect();
        let formats = vec![RelayCellFormat::V0; cells.len()];
        let b = originate_counted(&mut hops, &cells, &circ, Some(&formats));
        assert_eq!(b.2, a.2, "one split lookup per tor1 job");
        assert_eq!((&a.0, &a.1), (&b.0, &b.1));
        // Not recorded: the split looks every job up once more (the fallback).
        let mut hops: Vec<RelayHop> = (0..n as u8)
            .map(|s| RelayHop::from_keys(&tor1_keys(s)))
            .collect();
        let c = originate_counted(&mut hops, &cells, &circ, None);
        assert_eq!(c.2, a.2 + cells.len());
        assert_eq!((&a.0, &a.1), (&c.0, &c.1));
    }

    /// Mixed tor1 and CGO jobs with recorded formats give what unrecorded ones give
    /// (forward: bodies, hits, tags), CGO jobs each looked up once.
    #[test]
    fn recorded_formats_split_mixed_batches_alike() {
        let n = 6;
        let (cells0, circ) = batch(n, 2);
        let mk = || -> Vec<RelayHop> {
            (0..n as u8)
                .map(|s| {
                    if s % 3 == 1 {
                        RelayHop::from_cgo_keys(&cgo_keys(s)).expect("cgo")
                    } else {
                        RelayHop::from_keys(&tor1_keys(s))
                    }
                })
                .collect()
        };
        let mut hops_a = mk();
        let formats: Vec<RelayCellFormat> = circ.iter().map(|&c| hops_a[c].format()).collect();
        let run = |hops: &mut [RelayHop], formats: Option<&[RelayCellFormat]>| {
            let mut cells = cells0.clone();
            let mut hits = vec![false; cells.len()];
            let mut tags = vec![[0u8; SENDME_TAG_LEN]; cells.len()];
            let mut j = CountingJobs {
                hops,
                cells: &mut cells,
                circ: &circ,
                formats,
                gets: Cell::new(0),
            };
            let k = RelayHop::forward_jobs(&mut j, &mut hits, &mut tags).recognized;
            let gets = j.gets.get();
            (cells, hits, tags, k, gets)
        };
        let a = run(&mut hops_a, Some(&formats));
        let mut hops_b = mk();
        let b = run(&mut hops_b, None);
        assert_eq!((&a.0, &a.1, &a.2, a.3), (&b.0, &b.1, &b.2, b.3));
        let tor1_jobs = formats
            .iter()
            .filter(|&&f| f == RelayCellFormat::V0)
            .count();
        assert_eq!(a.4 + tor1_jobs, b.4);
    }
}
