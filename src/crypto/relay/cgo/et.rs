//! ET: the LRW2 tweakable block cipher of CGO (proposal 359 "Tweakable block cipher").
//!
//! `ENC_ET((KB, KU), T, M) = AES_KB(M ^ POLYVAL(KU, T)) ^ POLYVAL(KU, T)`, decryption likewise
//! with the AES inverse. In CGO the tweak is always `H | command | X_R`: 16 + 1 + 493 = 510
//! bytes, hashed as 32 zero-padded POLYVAL blocks with no length block.

#![forbid(unsafe_code)]

use super::imp::TweakHash;
use super::{xor_block, Block16, Cipher16, BLOCK_LEN, CGO_PAYLOAD_LEN};
use aes::cipher::generic_array::GenericArray;
#[cfg(test)]
use aes::cipher::BlockDecrypt;
use aes::cipher::BlockEncrypt;

/// One ET key: the block cipher keyed with KB and POLYVAL keyed with KU.
#[derive(Clone)]
pub(super) struct Et<B> {
    kb: B,
    ku: TweakHash,
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
        Et {
            kb: B::new(GenericArray::from_slice(kb)),
            ku: TweakHash::new(&ku),
        }
    }

    /// Tests only: the carry-less POLYVAL in use (`None`: the `polyval` crate).
    #[cfg(test)]
    pub(super) fn polyval_impl(&self) -> Option<super::polyval_simd::ClmulImpl> {
        match &self.ku {
            TweakHash::Clmul(k) => Some(k.implementation()),
            TweakHash::Crate(_) => None,
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
        self.kb.encrypt_block(GenericArray::from_mut_slice(block));
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
        self.kb.decrypt_block(GenericArray::from_mut_slice(block));
        xor_block(block, &m);
    }
}
