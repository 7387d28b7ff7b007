//! PRF: CGO's tweakable pseudorandom stream (proposal 359 "PRF").
//!
//! `PRF((K, B), X, t)` is the AES_K counter-mode keystream whose first counter block is
//! `POLYVAL(B, X)` with the low six bits of its last byte cleared, plus `31 * t`; the counter
//! is the whole 16-byte block read big-endian. With `t = 0` it masks the 493-byte payload
//! (31 blocks); with `t = 1` it yields the next keys and nonce. Clearing six bits leaves room
//! for 64 blocks, so the two offsets never overlap and the addition never carries out of the
//! last byte. That is tor1's counter layout (128-bit big-endian), so with AES-128 the
//! keystream comes from Fors's own CTR kernels ([`Aes128Ctr::xor_keystream_at`]).
#![forbid(unsafe_code)]

use super::imp::{chosen, BlockHash};
use super::{Block16, Cipher16, BLOCK_LEN, CGO_PAYLOAD_LEN};
use crate::crypto::relay::aes_ctr::Aes128Ctr;
use crate::crypto::relay::cpu::AesImpl;
use aes::cipher::generic_array::GenericArray;
use aes::cipher::BlockEncrypt;
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

/// The PRF's first counter block from `POLYVAL(B, x)`: its low six bits cleared, read as a
/// big-endian integer.
#[inline]
pub(super) fn first_counter(mut hash: Block16) -> u128 {
    hash[15] &= 0xC0;
    u128::from_be_bytes(hash)
}

/// The PRF's block cipher: Fors's CTR kernels for AES-128 where the CPU has AES-NI, else
/// the generic cipher one block at a time.
// Not boxed: a box would be an allocation at every key update. `Crate(E)` is an `aes` key
// schedule of about the same size in practice; clippy sees only the generic.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum PrfAes<E> {
    Crate(E),
    Fors(Aes128Ctr),
}

/// One PRF key: the block cipher keyed with K and POLYVAL keyed with B.
#[derive(Clone)]
pub(super) struct Prf<E> {
    k: PrfAes<E>,
    b: BlockHash,
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
        let aes = chosen().aes;
        let k = match <&[u8; 16]>::try_from(k) {
            // `Portable` would box the `aes` crate's cipher: keep it generic instead.
            Ok(k128) if aes != AesImpl::Portable => PrfAes::Fors(Aes128Ctr::new(k128, aes)),
            _ => PrfAes::Crate(E::new(GenericArray::from_slice(k))),
        };
        Prf {
            k,
            b: BlockHash::new(&b),
        }
    }

    /// Replaces the keys in place from `key` ([`Prf::key_len`] bytes), on the paths chosen
    /// when this was built.
    pub(super) fn rekey(&mut self, key: &[u8]) {
        let (k, b) = key.split_at(E::key_size());
        match (&mut self.k, <&[u8; 16]>::try_from(k)) {
            (PrfAes::Fors(c), Ok(k16)) => c.rekey(k16),
            (k_now, _) => *k_now = PrfAes::Crate(E::new(GenericArray::from_slice(k))),
        }
        self.b.rekey(b.try_into().expect("POLYVAL key is 16 bytes"));
    }

    /// Tests only: the Fors AES-CTR kernel in use, if any.
    #[cfg(test)]
    pub(super) fn fors_aes(&self) -> Option<AesImpl> {
        match &self.k {
            PrfAes::Fors(c) => Some(c.implementation()),
            PrfAes::Crate(_) => None,
        }
    }

    /// Tests only: whether POLYVAL runs on PCLMULQDQ.
    #[cfg(test)]
    pub(super) fn polyval_is_clmul(&self) -> bool {
        matches!(self.b, BlockHash::Clmul(_))
    }

    /// The first counter block for input `x` at offset `t`, as a big-endian integer.
    #[inline]
    fn counter(&self, x: &Block16, t: u128) -> u128 {
        first_counter(self.b.hash(x)).wrapping_add(t)
    }

    /// Fills `ks` with keystream blocks from counter `c0` with the generic cipher.
    #[inline]
    fn keystream(cipher: &E, c0: u128, ks: &mut [aes::Block]) {
        for (i, blk) in ks.iter_mut().enumerate() {
            blk.copy_from_slice(&c0.wrapping_add(i as u128).to_be_bytes());
        }
        cipher.encrypt_blocks(ks);
    }

    /// POLYVAL's key B if it runs on PCLMULQDQ, for [`super::interleave`], which computes
    /// the counter of several cells at once ([`first_counter`] of its output).
    #[inline]
    pub(super) fn counter_key(&self) -> Option<&Block16> {
        self.b.clmul_key()
    }

    /// XORs `PRF(K, x, 0)` into the 493-byte payload.
    #[inline]
    pub(super) fn xor_t0(&self, x: &Block16, data: &mut [u8; CGO_PAYLOAD_LEN]) {
        self.xor_t0_from(self.counter(x, 0), data);
    }

    /// [`Prf::xor_t0`] with its first counter `c0` already computed.
    #[inline]
    pub(super) fn xor_t0_from(&self, c0: u128, data: &mut [u8; CGO_PAYLOAD_LEN]) {
        let cipher = match &self.k {
            PrfAes::Fors(ctr) => return ctr.xor_keystream_at(c0, data),
            PrfAes::Crate(c) => c,
        };
        let mut ks = [aes::Block::default(); T0_BLOCKS];
        Self::keystream(cipher, c0, &mut ks);
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
        let c1 = self.counter(x, T1_OFFSET);
        match &self.k {
            PrfAes::Fors(ctr) => {
                // Straight into `out` (XOR onto zeros): no copy of the next keys is left in
                // a buffer here. A kernel may keep the keystream block after the last one it
                // was asked for on its stack; those counters are never used as keys.
                out.fill(0);
                ctr.xor_keystream_at(c1, out);
            }
            PrfAes::Crate(cipher) => {
                let mut ks = [aes::Block::default(); T1_MAX_BLOCKS];
                let n = out.len().div_ceil(BLOCK_LEN);
                Self::keystream(cipher, c1, &mut ks[..n]);
                for (chunk, k) in out.chunks_mut(BLOCK_LEN).zip(ks.iter()) {
                    chunk.copy_from_slice(&k[..chunk.len()]);
                }
                for b in ks.iter_mut() {
                    b.as_mut_slice().zeroize();
                }
            }
        }
    }
}
