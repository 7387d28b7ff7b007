//! PRF: CGO's tweakable pseudorandom stream (proposal 359 "PRF").
//!
//! `PRF((K, B), X, t)` is the AES_K counter-mode keystream whose first counter block is
//! `POLYVAL(B, X)` with the low six bits of its last byte cleared, plus `31 * t`; the counter
//! is the whole 16-byte block read big-endian. With `t = 0` it masks the 493-byte payload
//! (31 blocks); with `t = 1` it yields the next keys and nonce. Clearing six bits leaves room
//! for 64 blocks, so the two offsets never overlap and the addition never carries out of the
//! last byte.

use super::{Block16, Cipher16, BLOCK_LEN, CGO_PAYLOAD_LEN};
use aes::cipher::generic_array::GenericArray;
use aes::cipher::BlockEncrypt;
use polyval::universal_hash::UniversalHash;
use polyval::Polyval;
use zeroize::Zeroize;

/// Blocks of keystream for `t = 0` (the payload mask).
const T0_BLOCKS: usize = CGO_PAYLOAD_LEN.div_ceil(BLOCK_LEN);
/// Counter offset of `t = 1`, in blocks.
const T1_OFFSET: u128 = 31;
/// The most `t = 1` output any key size needs: AES-256 UIV+ keys (2 * (32 + 16)) + nonce.
pub(super) const T1_MAX_LEN: usize = 2 * (32 + BLOCK_LEN) + BLOCK_LEN;
const T1_MAX_BLOCKS: usize = T1_MAX_LEN.div_ceil(BLOCK_LEN);
const _: () = assert!(T0_BLOCKS as u128 <= T1_OFFSET);
const _: () = assert!(T1_OFFSET + (T1_MAX_BLOCKS as u128) <= 64);

/// One PRF key: the block cipher keyed with K and POLYVAL keyed with B.
#[derive(Clone)]
pub(super) struct Prf<E> {
    k: E,
    b: Polyval,
}

impl<E: Cipher16 + BlockEncrypt> Prf<E> {
    /// Key length: the AES key, then 16 bytes of POLYVAL key.
    pub(super) fn key_len() -> usize {
        E::key_size() + BLOCK_LEN
    }

    /// A PRF keyed from `key` (exactly [`Prf::key_len`] bytes: a caller invariant).
    pub(super) fn new(key: &[u8]) -> Self {
        let (k, b) = key.split_at(E::key_size());
        let b: Block16 = b.try_into().expect("POLYVAL key is 16 bytes");
        Prf {
            k: E::new(GenericArray::from_slice(k)),
            b: Polyval::new(&b.into()),
        }
    }

    /// The first counter block for input `x` at offset `t`, as a big-endian integer.
    #[inline]
    fn counter(&self, x: &Block16, t: u128) -> u128 {
        let mut pv = self.b.clone();
        pv.update(&[(*x).into()]);
        let mut iv: Block16 = pv.finalize().into();
        iv[15] &= 0xC0;
        u128::from_be_bytes(iv).wrapping_add(t)
    }

    /// Fills `ks` with keystream blocks from counter `c0`.
    #[inline]
    fn keystream(&self, c0: u128, ks: &mut [aes::Block]) {
        for (i, blk) in ks.iter_mut().enumerate() {
            blk.copy_from_slice(&c0.wrapping_add(i as u128).to_be_bytes());
        }
        self.k.encrypt_blocks(ks);
    }

    /// XORs `PRF(K, x, 0)` into the 493-byte payload.
    #[inline]
    pub(super) fn xor_t0(&self, x: &Block16, data: &mut [u8; CGO_PAYLOAD_LEN]) {
        let mut ks = [aes::Block::default(); T0_BLOCKS];
        self.keystream(self.counter(x, 0), &mut ks);
        let (whole, tail) = data.split_at_mut(CGO_PAYLOAD_LEN - CGO_PAYLOAD_LEN % BLOCK_LEN);
        for (chunk, k) in whole.chunks_exact_mut(BLOCK_LEN).zip(ks.iter()) {
            // Whole blocks as 128-bit words: one XOR per block.
            let d = u128::from_ne_bytes(chunk.try_into().expect("16-byte chunk"));
            let k = u128::from_ne_bytes(k.as_slice().try_into().expect("16-byte block"));
            chunk.copy_from_slice(&(d ^ k).to_ne_bytes());
        }
        for (d, s) in tail.iter_mut().zip(ks[T0_BLOCKS - 1].iter()) {
            *d ^= s;
        }
    }

    /// Writes the first `out.len()` bytes of `PRF(K, x, 1)` to `out` (at most
    /// [`T1_MAX_LEN`]: a caller invariant).
    pub(super) fn gen_t1(&self, x: &Block16, out: &mut [u8]) {
        let mut ks = [aes::Block::default(); T1_MAX_BLOCKS];
        let n = out.len().div_ceil(BLOCK_LEN);
        self.keystream(self.counter(x, T1_OFFSET), &mut ks[..n]);
        for (chunk, k) in out.chunks_mut(BLOCK_LEN).zip(ks.iter()) {
            chunk.copy_from_slice(&k[..chunk.len()]);
        }
        // The keystream here is the next key: do not leave it on the stack.
        for b in ks.iter_mut() {
            b.as_mut_slice().zeroize();
        }
    }
}
