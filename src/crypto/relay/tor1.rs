//! One hop's tor1 relay crypto at a relay (tor-spec "Routing relay cells"; C tor
//! `relay_crypto_tor1.c`).

use super::aes_ctr::Aes128Ctr;
use super::cpu::{AesImpl, Sha1Impl, Tor1Engine};
use super::sha1::Sha1State;
use super::{recognized_is_zero, CellBody, DIGEST_LEN, DIGEST_OFFSET, SENDME_TAG_LEN};
use crate::crypto::keymat::Tor1KeyMaterial;

/// One direction of a tor1 layer: its AES-128-CTR stream and its running SHA-1 digest.
#[derive(Clone, Debug)]
pub struct Tor1Direction {
    pub(crate) cipher: Aes128Ctr,
    pub(crate) digest: Sha1State,
    pub(crate) sha1: Sha1Impl,
}

impl Tor1Direction {
    /// A direction keyed with `key` whose digest is seeded by hashing `seed` (tor-spec "Setting
    /// circuit keys": the running digests start by absorbing Df resp. Db).
    pub fn new(key: &[u8; 16], seed: &[u8; 20], aes: AesImpl, sha1: Sha1Impl) -> Self {
        let mut digest = Sha1State::new();
        digest.update(seed, sha1);
        Tor1Direction {
            cipher: Aes128Ctr::new(key, aes),
            digest,
            sha1,
        }
    }

    /// Encrypts or decrypts bytes with this direction's stream.
    #[inline]
    pub fn crypt(&mut self, data: &mut [u8]) {
        self.cipher.apply_keystream(data);
    }

    /// Originating side: absorbs `body` (digest field zeroed) and stores the first four digest
    /// bytes in it. Returns the full digest (the SENDME v1 tag).
    #[inline]
    pub fn set_digest(&mut self, body: &mut CellBody) -> [u8; SENDME_TAG_LEN] {
        self.set_digest_with(body, self.sha1)
    }

    /// [`Tor1Direction::set_digest`] with a chosen SHA-1 implementation.
    #[inline]
    pub(crate) fn set_digest_with(
        &mut self,
        body: &mut CellBody,
        sha1: Sha1Impl,
    ) -> [u8; SENDME_TAG_LEN] {
        let d = self.digest.absorb_cell(body, sha1);
        body[DIGEST_OFFSET..DIGEST_OFFSET + DIGEST_LEN].copy_from_slice(&d[..DIGEST_LEN]);
        d
    }

    /// Receiving side, for a decrypted body whose `recognized` is zero: whether its digest field
    /// matches. On a match the state keeps the cell and the digest field is left zeroed (as C
    /// tor does); on a mismatch state and body are both left untouched.
    #[inline]
    pub fn check_digest(&mut self, body: &mut CellBody) -> Option<[u8; SENDME_TAG_LEN]> {
        self.check_digest_with(body, self.sha1)
    }

    /// [`Tor1Direction::check_digest`] with a chosen SHA-1 implementation.
    #[inline]
    pub(crate) fn check_digest_with(
        &mut self,
        body: &mut CellBody,
        sha1: Sha1Impl,
    ) -> Option<[u8; SENDME_TAG_LEN]> {
        let mut trial = self.digest.clone();
        let d = trial.absorb_cell(body, sha1);
        if d[..DIGEST_LEN] == body[DIGEST_OFFSET..DIGEST_OFFSET + DIGEST_LEN] {
            self.digest = trial;
            body[DIGEST_OFFSET..DIGEST_OFFSET + DIGEST_LEN].fill(0);
            Some(d)
        } else {
            None
        }
    }

    /// Decrypts `body` and reports whether it is addressed to this layer.
    #[inline]
    pub(crate) fn decrypt_and_recognize(
        &mut self,
        body: &mut CellBody,
    ) -> Option<[u8; SENDME_TAG_LEN]> {
        self.crypt(body);
        if recognized_is_zero(body) {
            self.check_digest(body)
        } else {
            None
        }
    }
}

/// A relay's tor1 state for one circuit hop: forward (toward the exit) and backward (toward the
/// client) directions, plus the SENDME v1 tag of the last cell originated or recognized here.
#[derive(Clone, Debug)]
pub struct Tor1RelayCrypto {
    pub(crate) forward: Tor1Direction,
    pub(crate) backward: Tor1Direction,
    pub(crate) sendme_tag: [u8; SENDME_TAG_LEN],
}

impl Tor1RelayCrypto {
    /// The relay side of a hop keyed by a circuit handshake, with this process's AES and SHA-1
    /// implementations.
    pub fn new(keys: &Tor1KeyMaterial) -> Self {
        let e = Tor1Engine::get();
        Self::with_impls(keys, e.aes, e.sha1)
    }

    /// As [`Tor1RelayCrypto::new`] with chosen implementations (tests, benchmarks).
    pub fn with_impls(keys: &Tor1KeyMaterial, aes: AesImpl, sha1: Sha1Impl) -> Self {
        Tor1RelayCrypto {
            forward: Tor1Direction::new(&keys.kf, &keys.df, aes, sha1),
            backward: Tor1Direction::new(&keys.kb, &keys.db, aes, sha1),
            sendme_tag: [0; SENDME_TAG_LEN],
        }
    }

    /// The full running digest of the last cell this hop originated or recognized: the tag a
    /// SENDME v1 carries for tor1 (tor-spec "SENDME"; C tor keeps one such buffer per layer).
    #[inline]
    pub fn sendme_tag(&self) -> &[u8; SENDME_TAG_LEN] {
        &self.sendme_tag
    }

    /// A cell moving away from the client: removes this hop's layer and returns whether the cell
    /// is for this hop (recognized == 0 and the digest matches). If not, forward it.
    #[inline]
    pub fn recognize(&mut self, body: &mut CellBody) -> bool {
        match self.forward.decrypt_and_recognize(body) {
            Some(d) => {
                self.sendme_tag = d;
                true
            }
            None => false,
        }
    }

    /// [`Tor1RelayCrypto::recognize`] for a run of cells of this circuit, in order; `for_us[i]`
    /// tells whether `cells[i]` is for this hop. Returns how many are.
    ///
    /// # Panics
    /// If `for_us` and `cells` differ in length (a caller bug).
    pub fn forward_batch(&mut self, cells: &mut [CellBody], for_us: &mut [bool]) -> usize {
        assert_eq!(
            cells.len(),
            for_us.len(),
            "forward_batch: one result per cell"
        );
        // One keystream run over the contiguous bodies: the AES stream continues across cells.
        self.forward.crypt(cells.as_flattened_mut());
        let mut hits = 0;
        for (body, hit) in cells.iter_mut().zip(for_us.iter_mut()) {
            *hit = false;
            if recognized_is_zero(body) {
                if let Some(d) = self.forward.check_digest(body) {
                    self.sendme_tag = d;
                    *hit = true;
                    hits += 1;
                }
            }
        }
        hits
    }

    /// [`Tor1RelayCrypto::forward_batch`], also giving each recognized cell's SENDME v1 tag
    /// in `tags[i]` (unrecognized cells leave theirs untouched): a caller that handles the
    /// cells after crypting them all can then answer a SENDME with the tag of exactly the
    /// cell that made it due (prop 289), wherever it falls in the run.
    ///
    /// # Panics
    /// If `for_us` or `tags` and `cells` differ in length (a caller bug).
    pub fn forward_batch_tagged(
        &mut self,
        cells: &mut [CellBody],
        for_us: &mut [bool],
        tags: &mut [[u8; SENDME_TAG_LEN]],
    ) -> usize {
        assert!(
            cells.len() == for_us.len() && cells.len() == tags.len(),
            "forward_batch_tagged: one result and one tag per cell"
        );
        self.forward.crypt(cells.as_flattened_mut());
        let mut hits = 0;
        for ((body, hit), tag) in cells.iter_mut().zip(for_us.iter_mut()).zip(tags.iter_mut()) {
            *hit = false;
            if recognized_is_zero(body) {
                if let Some(d) = self.forward.check_digest(body) {
                    self.sendme_tag = d;
                    *tag = d;
                    *hit = true;
                    hits += 1;
                }
            }
        }
        hits
    }

    /// A cell moving toward the client from a later hop: adds this hop's layer.
    #[inline]
    pub fn backward_relay(&mut self, body: &mut CellBody) {
        self.backward.crypt(body);
    }

    /// [`Tor1RelayCrypto::backward_relay`] for a run of cells of this circuit.
    pub fn backward_relay_batch(&mut self, cells: &mut [CellBody]) {
        self.backward.crypt(cells.as_flattened_mut());
    }

    /// A cell this hop sends toward the client: sets the digest, then encrypts. Returns the
    /// SENDME v1 tag of this cell.
    #[inline]
    pub fn originate(&mut self, body: &mut CellBody) -> [u8; SENDME_TAG_LEN] {
        let d = self.backward.set_digest(body);
        self.backward.crypt(body);
        self.sendme_tag = d;
        d
    }

    /// [`Tor1RelayCrypto::originate`] for a run of cells of this circuit. The running digest is
    /// sequential, so this batches only the AES work.
    pub fn originate_batch(&mut self, cells: &mut [CellBody]) {
        for body in cells.iter_mut() {
            self.sendme_tag = self.backward.set_digest(body);
        }
        self.backward.crypt(cells.as_flattened_mut());
    }

    /// [`Tor1RelayCrypto::originate_batch`], also recording each cell's SENDME v1 tag.
    ///
    /// # Panics
    /// If `tags` and `cells` differ in length (a caller bug).
    pub fn originate_batch_tagged(
        &mut self,
        cells: &mut [CellBody],
        tags: &mut [[u8; SENDME_TAG_LEN]],
    ) {
        assert_eq!(
            cells.len(),
            tags.len(),
            "originate_batch_tagged: one tag per cell"
        );
        for (body, tag) in cells.iter_mut().zip(tags.iter_mut()) {
            *tag = self.backward.set_digest(body);
        }
        if let Some(last) = tags.last() {
            self.sendme_tag = *last;
        }
        self.backward.crypt(cells.as_flattened_mut());
    }
}
