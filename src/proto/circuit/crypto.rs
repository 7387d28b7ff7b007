//! The seam between the circuit core and tor1 relay crypto.
//!
//! The core only needs one hop's relay-side state per circuit. This trait names exactly what
//! it calls; [`RelayHop`] implements it for production (tor1 or CGO, chosen per circuit by
//! the handshake), [`Tor1RelayCrypto`] alone (tor1 only), and other implementations (a plain
//! reference implementation in tests) can stand in.

use crate::cell::ChanCmd;
use crate::cell::CELL_BODY_LEN;
use crate::crypto::keymat::Tor1KeyMaterial;
use crate::crypto::relay::cgo::{CgoKeyMaterial, CgoRelayCrypto128, CGO_TAG_LEN};
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
    ) -> usize {
        let mut n = 0;
        for i in 0..jobs.count() {
            let (c, body) = jobs.get(i);
            for_us[i] = c.recognize(body);
            if for_us[i] {
                tags[i] = *c.sendme_tag();
                n += 1;
            }
        }
        n
    }

    /// Fewest circuits worth one [`HopCrypto::forward_jobs`] call rather than one run per
    /// circuit (`usize::MAX`: never).
    fn multi_min_circuits() -> usize {
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
    ) -> usize {
        crate::crypto::relay::forward_multi_jobs(
            &mut Tor1Jobs::<_, Self>::new(jobs, None),
            for_us,
            tags,
        )
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
/// the stack arrays that list the tor1 jobs (and receive their results) for the kernel.
const SPLIT_CHUNK: usize = 128;

impl RelayHop {
    /// Splits a multi-circuit batch by algorithm in one pass over its jobs: each CGO job is
    /// crypted when met (`cgo(i, hop, body)`), each tor1 job listed; then the listed tor1
    /// jobs go to the tor1 multi-buffer kernel together (`tor1(list)`), so a CGO circuit in
    /// the batch does not turn that kernel off for the others. A circuit is all one
    /// algorithm, so each circuit's cells stay in job order.
    fn split_jobs<J: OriginateJobs<RelayHop>, S>(
        jobs: &mut J,
        state: &mut S,
        cgo: impl Fn(&mut S, usize, &mut CgoHop, &mut CellBody),
        tor1: impl Fn(&mut S, &mut J, &[u16]),
    ) {
        let n = jobs.count();
        let mut start = 0;
        while start < n {
            let end = n.min(start + SPLIT_CHUNK);
            let mut list = [0u16; SPLIT_CHUNK];
            let mut k = 0;
            for i in start..end {
                // A recorded tor1 job is listed without looking its circuit up: the
                // kernel's `get` is then its only lookup.
                let tor1 = match jobs.format(i) {
                    Some(RelayCellFormat::V0) => true,
                    _ => match jobs.get(i) {
                        (RelayHop::Cgo(c), body) => {
                            cgo(state, i, c, body);
                            false
                        }
                        (RelayHop::Tor1(_), _) => true,
                    },
                };
                if tor1 {
                    // Job lists are far shorter than 2^16 (the cores' stages are
                    // bounded); a longer one would be a caller bug.
                    list[k] = u16::try_from(i).expect("fewer than 65536 jobs");
                    k += 1;
                }
            }
            if k > 0 {
                tor1(state, jobs, &list[..k]);
            }
            start = end;
        }
    }
}

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

    /// Split by algorithm ([`RelayHop::split_jobs`]): the tor1 jobs through the tor1
    /// multi-buffer kernel, the CGO jobs one by one.
    fn forward_jobs<J: OriginateJobs<Self>>(
        jobs: &mut J,
        for_us: &mut [bool],
        tags: &mut [[u8; SENDME_TAG_LEN]],
    ) -> usize {
        // (hits, tags, how many are for this hop)
        let mut st = (for_us, tags, 0usize);
        Self::split_jobs(
            jobs,
            &mut st,
            |(hits, out, n), i, c, body| {
                hits[i] = c.crypto.recognize(RELAY, body);
                if hits[i] {
                    c.tag = pad_tag(c.crypto.sendme_tag());
                    out[i] = c.tag;
                    *n += 1;
                }
            },
            |(hits, out, n), jobs, list| {
                let mut h = [false; SPLIT_CHUNK];
                let mut t = [[0u8; SENDME_TAG_LEN]; SPLIT_CHUNK];
                let k = list.len();
                *n += crate::crypto::relay::forward_multi_jobs(
                    &mut Tor1Jobs::<_, RelayHop>::new(jobs, Some(list)),
                    &mut h[..k],
                    &mut t[..k],
                );
                for (j, &i) in list.iter().enumerate() {
                    hits[usize::from(i)] = h[j];
                    if h[j] {
                        out[usize::from(i)] = t[j];
                    }
                }
            },
        );
        st.2
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

    /// Split by algorithm as [`RelayHop::forward_jobs`].
    fn originate_jobs<J: OriginateJobs<Self>>(jobs: &mut J, tags: &mut [[u8; SENDME_TAG_LEN]]) {
        let mut out = tags;
        Self::split_jobs(
            jobs,
            &mut out,
            |out, i, c, body| {
                c.tag = pad_tag(&c.crypto.originate(RELAY, body));
                out[i] = c.tag;
            },
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
            let k = RelayHop::forward_jobs(&mut j, &mut hits, &mut tags);
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
