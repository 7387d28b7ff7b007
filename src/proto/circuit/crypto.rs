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
}

/// Lets the tor1 multi-buffer kernel run over any [`OriginateJobs`].
struct Tor1Jobs<'a, J>(&'a mut J);

impl<J: OriginateJobs<Tor1RelayCrypto>> crate::crypto::relay::MultiJobs for Tor1Jobs<'_, J> {
    fn count(&self) -> usize {
        self.0.count()
    }
    fn circuit(&self, i: usize) -> usize {
        self.0.circuit(i)
    }
    fn get(&mut self, i: usize) -> (&mut Tor1RelayCrypto, &mut CellBody) {
        self.0.get(i)
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
        crate::crypto::relay::forward_multi_jobs(&mut Tor1Jobs(jobs), for_us, tags)
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
        crate::crypto::relay::originate_multi_jobs(&mut Tor1Jobs(jobs), tags);
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

/// Runs the tor1 multi-buffer kernels over jobs that are all tor1 (checked by the caller).
struct Tor1OfHop<'a, J>(&'a mut J);

impl<J: OriginateJobs<RelayHop>> crate::crypto::relay::MultiJobs for Tor1OfHop<'_, J> {
    fn count(&self) -> usize {
        self.0.count()
    }
    fn circuit(&self, i: usize) -> usize {
        self.0.circuit(i)
    }
    fn get(&mut self, i: usize) -> (&mut Tor1RelayCrypto, &mut CellBody) {
        match self.0.get(i) {
            (RelayHop::Tor1(t), body) => (t, body),
            // `all_tor1` was checked over these same jobs just before.
            (RelayHop::Cgo(_), _) => unreachable!("tor1 kernel given a CGO job"),
        }
    }
}

fn all_tor1<J: OriginateJobs<RelayHop>>(jobs: &mut J) -> bool {
    (0..jobs.count()).all(|i| matches!(jobs.get(i).0, RelayHop::Tor1(_)))
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

    /// The tor1 multi-buffer kernel when every job is tor1; otherwise job by job (CGO's
    /// multi-circuit calls take their states as one slice, which the circuit table is not).
    fn forward_jobs<J: OriginateJobs<Self>>(
        jobs: &mut J,
        for_us: &mut [bool],
        tags: &mut [[u8; SENDME_TAG_LEN]],
    ) -> usize {
        if all_tor1(jobs) {
            return crate::crypto::relay::forward_multi_jobs(&mut Tor1OfHop(jobs), for_us, tags);
        }
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

    fn originate_jobs<J: OriginateJobs<Self>>(jobs: &mut J, tags: &mut [[u8; SENDME_TAG_LEN]]) {
        if all_tor1(jobs) {
            return crate::crypto::relay::originate_multi_jobs(&mut Tor1OfHop(jobs), tags);
        }
        for (i, t) in tags.iter_mut().enumerate().take(jobs.count()) {
            let (c, body) = jobs.get(i);
            *t = c.originate(body);
        }
    }
}
