//! The seam between the circuit core and tor1 relay crypto.
//!
//! The core only needs one hop's relay-side state per circuit. This trait names exactly what
//! it calls; [`Tor1RelayCrypto`] implements it for production, and other implementations
//! (CGO later, a plain reference implementation in tests) can stand in.

use crate::cell::CELL_BODY_LEN;
use crate::crypto::keymat::Tor1KeyMaterial;
use crate::crypto::relay::Tor1RelayCrypto;
use crate::proto::flow::SENDME_TAG_LEN;

/// One relay cell body.
pub type CellBody = [u8; CELL_BODY_LEN];

/// A relay's crypto state for one hop of one circuit (tor-spec §"Routing relay cells").
pub trait HopCrypto: Sized {
    /// State keyed by a circuit handshake.
    fn from_keys(keys: &Tor1KeyMaterial) -> Self;

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
