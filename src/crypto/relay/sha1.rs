//! SHA-1 (FIPS 180-4) with a state that can be copied and finalized without disturbing the
//! running digest, as tor1 needs: the running digest absorbs every cell, and each cell's digest
//! is taken from a finalized *copy* (C tor `crypto_digest_get_digest`).

use super::cpu::{CpuFeatures, Sha1Impl};
use super::{CellBody, DIGEST_LEN, DIGEST_OFFSET};
use zeroize::Zeroize;

/// SHA-1 block length.
pub const BLOCK_LEN: usize = 64;

/// FIPS 180-4 §5.3.1 initial hash value.
pub(crate) const IV: [u32; 5] = [
    0x6745_2301,
    0xEFCD_AB89,
    0x98BA_DCFE,
    0x1032_5476,
    0xC3D2_E1F0,
];

/// A running SHA-1 state: chaining value, the buffered partial block, and the length so far.
#[derive(Clone)]
pub struct Sha1State {
    pub(crate) h: [u32; 5],
    pub(crate) buf: [u8; BLOCK_LEN],
    /// Bytes absorbed so far; `len % 64` of them are in `buf`.
    pub(crate) len: u64,
}

impl Default for Sha1State {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Sha1State {
    fn drop(&mut self) {
        self.h.zeroize();
        self.buf.zeroize();
    }
}

impl std::fmt::Debug for Sha1State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sha1State(..)")
    }
}

impl Sha1State {
    /// The empty-message state.
    pub fn new() -> Self {
        Sha1State {
            h: IV,
            buf: [0; BLOCK_LEN],
            len: 0,
        }
    }

    /// Bytes currently buffered (not yet compressed).
    #[inline]
    pub(crate) fn buffered(&self) -> usize {
        (self.len % BLOCK_LEN as u64) as usize
    }

    /// Absorbs `data`.
    pub fn update(&mut self, mut data: &[u8], imp: Sha1Impl) {
        let used = self.buffered();
        self.len += data.len() as u64;
        if used > 0 {
            let n = (BLOCK_LEN - used).min(data.len());
            self.buf[used..used + n].copy_from_slice(&data[..n]);
            data = &data[n..];
            if used + n < BLOCK_LEN {
                return;
            }
            let block = self.buf;
            compress(&mut self.h, &block, imp);
        }
        let whole = data.len() / BLOCK_LEN * BLOCK_LEN;
        if whole > 0 {
            compress(&mut self.h, &data[..whole], imp);
        }
        let rest = &data[whole..];
        self.buf[..rest.len()].copy_from_slice(rest);
    }

    /// The digest of everything absorbed so far; the state itself is unchanged.
    pub fn finalize_copy(&self, imp: Sha1Impl) -> [u8; 20] {
        let mut h = self.h;
        let mut tail = [0u8; 2 * BLOCK_LEN];
        let n = pad_tail(&self.buf[..self.buffered()], self.len, &mut tail);
        compress(&mut h, &tail[..n], imp);
        digest_bytes(&h)
    }

    /// Absorbs a relay cell body with its digest field taken as zero and returns the digest of
    /// a finalized copy (tor-spec "Relay cells": the digest covers the body with the digest
    /// field zeroed).
    pub fn absorb_cell(&mut self, body: &CellBody, imp: Sha1Impl) -> [u8; 20] {
        self.update(&body[..DIGEST_OFFSET], imp);
        self.update(&[0u8; DIGEST_LEN], imp);
        self.update(&body[DIGEST_OFFSET + DIGEST_LEN..], imp);
        self.finalize_copy(imp)
    }
}

/// Writes the final padded block(s) for a message of `len` bytes whose last partial block is
/// `rest` into `out`; returns how many bytes (64 or 128) to compress. FIPS 180-4 §5.1.1.
#[inline]
pub(crate) fn pad_tail(rest: &[u8], len: u64, out: &mut [u8; 2 * BLOCK_LEN]) -> usize {
    out[..rest.len()].copy_from_slice(rest);
    out[rest.len()] = 0x80;
    let n = if rest.len() + 9 <= BLOCK_LEN {
        BLOCK_LEN
    } else {
        2 * BLOCK_LEN
    };
    out[n - 8..n].copy_from_slice(&(len * 8).to_be_bytes());
    n
}

/// Big-endian serialisation of a chaining value.
#[inline]
pub(crate) fn digest_bytes(h: &[u32; 5]) -> [u8; 20] {
    let mut out = [0u8; 20];
    for (o, w) in out.chunks_exact_mut(4).zip(h) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// Compresses whole 64-byte blocks into `h` with `imp` (portable if the CPU lacks it).
pub fn compress(h: &mut [u32; 5], blocks: &[u8], imp: Sha1Impl) {
    debug_assert_eq!(blocks.len() % BLOCK_LEN, 0);
    match imp {
        #[cfg(target_arch = "x86_64")]
        Sha1Impl::ShaNi if CpuFeatures::detect_cached().sha_ni => {
            // SAFETY: the guard checked SHA-NI, SSSE3 and SSE4.1 at run time.
            unsafe { x86::compress_shani(h, blocks) }
        }
        _ => compress_portable(h, blocks),
    }
}

/// Scalar SHA-1 compression (FIPS 180-4 §6.1.2).
pub(crate) fn compress_portable(h: &mut [u32; 5], blocks: &[u8]) {
    for block in blocks.chunks_exact(BLOCK_LEN) {
        let mut w = [0u32; 80];
        for (t, c) in block.chunks_exact(4).enumerate() {
            w[t] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for t in 16..80 {
            w[t] = (w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = *h;
        for (t, wt) in w.iter().enumerate() {
            let (f, k) = match t / 20 {
                0 => ((b & c) | (!b & d), 0x5A82_7999),
                1 => (b ^ c ^ d, 0x6ED9_EBA1),
                2 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6u32),
            };
            let tmp = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wt);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = tmp;
        }
        for (hv, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *hv = hv.wrapping_add(v);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// One quad-round: fold the schedule word into E, keep the old ABCD as the next E source,
    /// run four rounds of function `$f`.
    macro_rules! quad {
        ($abcd:ident, $f:literal, $ecur:ident, $enext:ident, $w:expr) => {
            $ecur = _mm_sha1nexte_epu32($ecur, $w);
            $enext = $abcd;
            $abcd = _mm_sha1rnds4_epu32::<$f>($abcd, $ecur);
        };
    }

    /// W[i..i+4] from the previous sixteen words.
    #[inline(always)]
    unsafe fn sched(w0: __m128i, w1: __m128i, w2: __m128i, w3: __m128i) -> __m128i {
        _mm_sha1msg2_epu32(_mm_xor_si128(_mm_sha1msg1_epu32(w0, w1), w2), w3)
    }

    /// SHA-1 compression with the SHA-NI instructions.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) unsafe fn compress_shani(h: &mut [u32; 5], blocks: &[u8]) {
        let bswap = _mm_set_epi64x(0x0001_0203_0405_0607, 0x0809_0a0b_0c0d_0e0f);
        let mut abcd = _mm_shuffle_epi32::<0x1B>(_mm_loadu_si128(h.as_ptr().cast()));
        let mut e0 = _mm_set_epi32(h[4] as i32, 0, 0, 0);
        let mut e1;
        for block in blocks.chunks_exact(64) {
            let (abcd_save, e_save) = (abcd, e0);
            let p = block.as_ptr();
            let mut w0 = _mm_shuffle_epi8(_mm_loadu_si128(p.cast()), bswap);
            let mut w1 = _mm_shuffle_epi8(_mm_loadu_si128(p.add(16).cast()), bswap);
            let mut w2 = _mm_shuffle_epi8(_mm_loadu_si128(p.add(32).cast()), bswap);
            let mut w3 = _mm_shuffle_epi8(_mm_loadu_si128(p.add(48).cast()), bswap);
            e0 = _mm_add_epi32(e0, w0);
            e1 = abcd;
            abcd = _mm_sha1rnds4_epu32::<0>(abcd, e0);
            quad!(abcd, 0, e1, e0, w1);
            quad!(abcd, 0, e0, e1, w2);
            quad!(abcd, 0, e1, e0, w3);
            w0 = sched(w0, w1, w2, w3);
            quad!(abcd, 0, e0, e1, w0);
            w1 = sched(w1, w2, w3, w0);
            quad!(abcd, 1, e1, e0, w1);
            w2 = sched(w2, w3, w0, w1);
            quad!(abcd, 1, e0, e1, w2);
            w3 = sched(w3, w0, w1, w2);
            quad!(abcd, 1, e1, e0, w3);
            w0 = sched(w0, w1, w2, w3);
            quad!(abcd, 1, e0, e1, w0);
            w1 = sched(w1, w2, w3, w0);
            quad!(abcd, 1, e1, e0, w1);
            w2 = sched(w2, w3, w0, w1);
            quad!(abcd, 2, e0, e1, w2);
            w3 = sched(w3, w0, w1, w2);
            quad!(abcd, 2, e1, e0, w3);
            w0 = sched(w0, w1, w2, w3);
            quad!(abcd, 2, e0, e1, w0);
            w1 = sched(w1, w2, w3, w0);
            quad!(abcd, 2, e1, e0, w1);
            w2 = sched(w2, w3, w0, w1);
            quad!(abcd, 2, e0, e1, w2);
            w3 = sched(w3, w0, w1, w2);
            quad!(abcd, 3, e1, e0, w3);
            w0 = sched(w0, w1, w2, w3);
            quad!(abcd, 3, e0, e1, w0);
            w1 = sched(w1, w2, w3, w0);
            quad!(abcd, 3, e1, e0, w1);
            w2 = sched(w2, w3, w0, w1);
            quad!(abcd, 3, e0, e1, w2);
            w3 = sched(w3, w0, w1, w2);
            quad!(abcd, 3, e1, e0, w3);
            e0 = _mm_sha1nexte_epu32(e0, e_save);
            abcd = _mm_add_epi32(abcd, abcd_save);
        }
        _mm_storeu_si128(h.as_mut_ptr().cast(), _mm_shuffle_epi32::<0x1B>(abcd));
        h[4] = _mm_extract_epi32::<3>(e0) as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::sha1::Digest;
    use rand::{Rng, RngCore, SeedableRng};

    fn reference(data: &[u8]) -> [u8; 20] {
        ::sha1::Sha1::digest(data).into()
    }

    #[test]
    fn fips180_abc() {
        for imp in CpuFeatures::detect().sha1_impls() {
            let mut s = Sha1State::new();
            s.update(b"abc", imp);
            assert_eq!(
                crate::util::hex::encode(&s.finalize_copy(imp)),
                "a9993e364706816aba3e25717850c26c9cd0d89d"
            );
        }
    }

    /// Random data in random pieces, finalizing copies along the way, against the `sha1` crate.
    #[test]
    fn matches_sha1_crate_with_copies() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for imp in CpuFeatures::detect().sha1_impls() {
            for _ in 0..30 {
                let mut s = Sha1State::new();
                let mut all = Vec::new();
                for _ in 0..30 {
                    let mut piece = vec![0u8; rng.gen_range(0..300)];
                    rng.fill_bytes(&mut piece);
                    s.update(&piece, imp);
                    all.extend_from_slice(&piece);
                    assert_eq!(
                        s.finalize_copy(imp),
                        reference(&all),
                        "{imp:?} {}",
                        all.len()
                    );
                }
            }
        }
    }

    #[test]
    fn absorb_cell_zeroes_digest_field() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        for imp in CpuFeatures::detect().sha1_impls() {
            let mut s = Sha1State::new();
            let mut all = Vec::new();
            for _ in 0..10 {
                let mut body = [0u8; 509];
                rng.fill_bytes(&mut body);
                let d = s.absorb_cell(&body, imp);
                body[5..9].fill(0);
                all.extend_from_slice(&body);
                assert_eq!(d, reference(&all));
            }
        }
    }
}
