//! ET: the LRW2 tweakable block cipher of CGO (proposal 359 "Tweakable block cipher").
//!
//! `ENC_ET((KB, KU), T, M) = AES_KB(M ^ POLYVAL(KU, T)) ^ POLYVAL(KU, T)`, decryption likewise
//! with the AES inverse. In CGO the tweak is always `H | command | X_R`: 16 + 1 + 493 = 510
//! bytes, hashed as 32 zero-padded POLYVAL blocks with no length block.

#![forbid(unsafe_code)]

use super::imp::{chosen, TweakHash};
use super::polyval_simd::POWERS;
use super::{xor_block, Block16, Cipher16, BLOCK_LEN, CGO_PAYLOAD_LEN};
use crate::crypto::relay::aes_ctr::Aes128Block;
use aes::cipher::generic_array::GenericArray;
#[cfg(test)]
use aes::cipher::BlockDecrypt;
use aes::cipher::BlockEncrypt;

/// ET's block cipher: with AES-128 and AES-NI, Fors's own one-block AES (its key schedule
/// is cheaper than the `aes` crate's and a call skips that crate's dispatch); otherwise the
/// generic cipher.
// Not boxed: a box would be an allocation at every key update.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum EtAes<B> {
    Crate(B),
    Fors(Aes128Block),
}

/// One ET key: the block cipher keyed with KB and POLYVAL keyed with KU.
#[derive(Clone)]
pub(super) struct Et<B> {
    kb: EtAes<B>,
    ku: TweakHash,
    /// Tests only: KB, so that the clients of the tests can decrypt with the generic cipher
    /// whichever path encrypts.
    #[cfg(test)]
    kb_bytes: Vec<u8>,
}

impl<B: Cipher16> Et<B> {
    /// Key length: the AES key, then 16 bytes of POLYVAL key.
    pub(super) fn key_len() -> usize {
        B::key_size() + BLOCK_LEN
    }

    /// An ET keyed from `key` (exactly [`Et::key_len`] bytes: a caller invariant).
    pub(super) fn new(key: &[u8]) -> Self {
        let (kb, ku) = key.split_at(B::key_size());
        let ku: Block16 = ku.try_into().expect("POLYVAL key is 16 bytes");
        let fors = <&[u8; 16]>::try_from(kb)
            .ok()
            .and_then(|k| Aes128Block::new(k, chosen().aes));
        Et {
            kb: fors.map_or_else(
                || EtAes::Crate(B::new(GenericArray::from_slice(kb))),
                EtAes::Fors,
            ),
            ku: TweakHash::new(&ku),
            #[cfg(test)]
            kb_bytes: kb.to_vec(),
        }
    }

    /// Replaces the keys in place from `key` ([`Et::key_len`] bytes), on the paths chosen
    /// when this was built.
    pub(super) fn rekey(&mut self, key: &[u8]) {
        let (kb, ku) = key.split_at(B::key_size());
        match (&mut self.kb, <&[u8; 16]>::try_from(kb)) {
            (EtAes::Fors(k), Ok(k16)) => k.rekey(k16),
            (kb_now, _) => *kb_now = EtAes::Crate(B::new(GenericArray::from_slice(kb))),
        }
        self.ku
            .rekey(ku.try_into().expect("POLYVAL key is 16 bytes"));
        #[cfg(test)]
        self.kb_bytes.copy_from_slice(kb);
    }

    /// Tests only: whether the block cipher is Fors's AES-NI one.
    #[cfg(test)]
    pub(super) fn fors_aes(&self) -> bool {
        matches!(self.kb, EtAes::Fors(_))
    }

    /// Tests only: the carry-less POLYVAL in use (`None`: the `polyval` crate).
    #[cfg(test)]
    pub(super) fn polyval_impl(&self) -> Option<super::polyval_simd::ClmulImpl> {
        match &self.ku {
            TweakHash::Clmul(k) => Some(k.implementation()),
            TweakHash::Crate(_) => None,
        }
    }

    /// AES-128 round keys and tweak powers, if this key runs on AES-NI and VPCLMULQDQ: what
    /// [`super::interleave`] needs to run this ET in a kernel with other cells'.
    #[inline]
    pub(super) fn interleave_keys(&self) -> Option<(&[[u8; 16]; 11], &[Block16; POWERS])> {
        match &self.kb {
            EtAes::Fors(k) => Some((k.round_keys(), self.ku.vclmul512_powers()?)),
            EtAes::Crate(_) => None,
        }
    }

    /// `POLYVAL(KU, H | cmd | X_R)`, the LRW2 mask.
    #[inline]
    fn mask(&self, h: &Block16, cmd: u8, x_r: &[u8; CGO_PAYLOAD_LEN]) -> Block16 {
        self.ku.tweak(h, cmd, x_r)
    }
}

impl<B: Cipher16 + BlockEncrypt> Et<B> {
    /// Encrypts `block` in place under the tweak `h | cmd | x_r`.
    #[inline]
    pub(super) fn encrypt(
        &self,
        h: &Block16,
        cmd: u8,
        x_r: &[u8; CGO_PAYLOAD_LEN],
        block: &mut Block16,
    ) {
        let m = self.mask(h, cmd, x_r);
        xor_block(block, &m);
        match &self.kb {
            EtAes::Fors(k) => k.encrypt(block),
            EtAes::Crate(k) => k.encrypt_block(GenericArray::from_mut_slice(block)),
        }
        xor_block(block, &m);
    }
}

// Only clients decrypt (tests here): a relay never runs ET backwards.
#[cfg(test)]
impl<B: Cipher16 + BlockDecrypt> Et<B> {
    /// Decrypts `block` in place under the tweak `h | cmd | x_r`.
    #[inline]
    pub(super) fn decrypt(
        &self,
        h: &Block16,
        cmd: u8,
        x_r: &[u8; CGO_PAYLOAD_LEN],
        block: &mut Block16,
    ) {
        let m = self.mask(h, cmd, x_r);
        xor_block(block, &m);
        B::new(GenericArray::from_slice(&self.kb_bytes))
            .decrypt_block(GenericArray::from_mut_slice(block));
        xor_block(block, &m);
    }
}
