//! AES-128-CTR keystream with a 128-bit big-endian counter, as tor1 uses it: all-zero IV and a
//! stream that continues across cells, so the position inside a partly used keystream block is
//! kept between calls (509 is not a multiple of 16). tor-spec "Relay cells".

// The VAES / AVX-512 intrinsics need Rust 1.89 although the workspace still declares 1.85.
#![allow(clippy::incompatible_msrv)]

use super::cpu::{AesImpl, CpuFeatures};
use aes::cipher::{BlockEncrypt, KeyInit};
use zeroize::Zeroize;

/// AES-128 block length.
const BLOCK: usize = 16;

/// One direction's AES-128-CTR stream.
#[derive(Clone)]
pub struct Aes128Ctr {
    backend: Backend,
    /// Counter of the next keystream block to generate.
    counter: u128,
    /// The last generated keystream block and how much of it is used (16 = all used).
    pending: [u8; BLOCK],
    pending_used: u8,
}

#[derive(Clone)]
enum Backend {
    Portable(Box<aes::Aes128Enc>),
    /// AES-NI or VAES (`imp` says which): the expanded encryption round keys.
    Ni {
        round_keys: [[u8; BLOCK]; 11],
        imp: AesImpl,
    },
}

impl Drop for Aes128Ctr {
    fn drop(&mut self) {
        if let Backend::Ni { round_keys, .. } = &mut self.backend {
            round_keys.zeroize();
        }
        self.pending.zeroize();
    }
}

impl std::fmt::Debug for Aes128Ctr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Aes128Ctr(..)")
    }
}

impl Aes128Ctr {
    /// A stream at counter 0 (tor1's all-zero IV) using `imp`.
    ///
    /// An implementation this CPU lacks falls back to [`AesImpl::Portable`].
    pub fn new(key: &[u8; 16], imp: AesImpl) -> Self {
        let features = CpuFeatures::detect_cached();
        let imp = if features.supports_aes(imp) {
            imp
        } else {
            AesImpl::Portable
        };
        let backend = match imp {
            AesImpl::Portable => Backend::Portable(Box::new(aes::Aes128Enc::new(key.into()))),
            #[cfg(target_arch = "x86_64")]
            AesImpl::AesNi | AesImpl::Vaes256 | AesImpl::Vaes512 => Backend::Ni {
                // SAFETY: `imp` passed `supports_aes`, and every one of these needs AES-NI,
                // SSSE3 and SSE4.1 (`CpuFeatures::detect`).
                round_keys: unsafe { x86::expand_key(key) },
                imp,
            },
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("supports_aes is false off x86-64"),
        };
        Aes128Ctr {
            backend,
            counter: 0,
            pending: [0; BLOCK],
            pending_used: BLOCK as u8,
        }
    }

    /// Replaces the key in place, keeping the implementation, for CGO's key update (which
    /// only uses [`Aes128Ctr::xor_keystream_at`]: the stream position is reset).
    pub(crate) fn rekey(&mut self, key: &[u8; 16]) {
        match &mut self.backend {
            Backend::Portable(c) => **c = aes::Aes128Enc::new(key.into()),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Backend::Ni` is only built after `supports_aes`: AES-NI, SSSE3 and
            // SSE4.1 are present.
            Backend::Ni { round_keys, .. } => *round_keys = unsafe { x86::expand_key(key) },
            #[cfg(not(target_arch = "x86_64"))]
            Backend::Ni { .. } => unreachable!("Backend::Ni is only built on x86-64"),
        }
        self.counter = 0;
        self.pending = [0; BLOCK];
        self.pending_used = BLOCK as u8;
    }

    /// The implementation in use.
    pub fn implementation(&self) -> AesImpl {
        match &self.backend {
            Backend::Portable(_) => AesImpl::Portable,
            Backend::Ni { imp, .. } => *imp,
        }
    }

    /// XORs the next `data.len()` keystream bytes into `data` (encrypts or decrypts).
    pub fn apply_keystream(&mut self, mut data: &mut [u8]) {
        let used = self.pending_used as usize;
        if used < BLOCK {
            let n = (BLOCK - used).min(data.len());
            for (d, k) in data[..n].iter_mut().zip(&self.pending[used..used + n]) {
                *d ^= k;
            }
            self.pending_used += n as u8;
            data = &mut data[n..];
        }
        if data.is_empty() {
            return;
        }
        // One pass covers the whole blocks and the final partial one, so a cell costs a single
        // kernel call; the partial block's keystream is kept for the next call.
        let nblocks = data.len().div_ceil(BLOCK) as u128;
        let last = self.xor_keystream(data);
        self.counter = self.counter.wrapping_add(nblocks);
        let tail = data.len() % BLOCK;
        if tail != 0 {
            self.pending = last;
            self.pending_used = tail as u8;
        }
    }

    /// XORs keystream from the current counter into `data` (any length) without advancing the
    /// counter; returns the keystream block that covered the last (possibly partial) block.
    fn xor_keystream(&self, data: &mut [u8]) -> [u8; BLOCK] {
        self.xor_keystream_from(self.counter, data)
    }

    /// XORs the keystream that starts at counter block `counter` into `data` (any length),
    /// leaving this stream's position alone. For CGO's PRF (proposal 359 "PRF"), whose
    /// big-endian counter starts afresh at a POLYVAL output in every cell.
    pub(crate) fn xor_keystream_at(&self, counter: u128, data: &mut [u8]) {
        if !data.is_empty() {
            self.xor_keystream_from(counter, data);
        }
    }

    /// [`Aes128Ctr::xor_keystream`] from counter block `counter`.
    fn xor_keystream_from(&self, counter: u128, data: &mut [u8]) -> [u8; BLOCK] {
        let nblocks = data.len().div_ceil(BLOCK) as u64;
        match &self.backend {
            Backend::Portable(cipher) => {
                let mut ctr = counter;
                let mut last = aes::Block::default();
                for chunk in data.chunks_mut(BLOCK * 8) {
                    let mut ks = [aes::Block::default(); 8];
                    let n = chunk.len().div_ceil(BLOCK);
                    for k in ks[..n].iter_mut() {
                        *k = ctr.to_be_bytes().into();
                        ctr = ctr.wrapping_add(1);
                    }
                    cipher.encrypt_blocks(&mut ks[..n]);
                    for (d, k) in chunk.iter_mut().zip(ks.iter().flatten()) {
                        *d ^= k;
                    }
                    last = ks[n - 1];
                }
                last.into()
            }
            #[cfg(target_arch = "x86_64")]
            Backend::Ni { round_keys, imp } => {
                let lo = counter as u64;
                let hi = (counter >> 64) as u64;
                // The SIMD paths add to the low 64 counter bits only; a carry into the high half
                // needs 2^64 blocks of keystream, which never happens, but stay exact anyway.
                if lo.checked_add(nblocks).is_some() {
                    match imp {
                        // SAFETY: `Backend::Ni { imp: Vaes512 }` is only built after
                        // `supports_aes(Vaes512)`: VAES, AVX-512F/BW/VL and AES-NI are present.
                        AesImpl::Vaes512 => unsafe {
                            x86::xor_keystream_vaes512(round_keys, lo, hi, data)
                        },
                        // SAFETY: `Backend::Ni { imp: Vaes256 }` is only built after
                        // `supports_aes(Vaes256)`: VAES, AVX2 and AES-NI are present.
                        AesImpl::Vaes256 => unsafe {
                            super::aes_vaes256::xor_keystream(round_keys, lo, hi, data)
                        },
                        // SAFETY: `Backend::Ni` is only built after `supports_aes`: AES-NI,
                        // SSSE3 and SSE4.1 are present.
                        _ => unsafe { x86::xor_keystream_aesni(round_keys, lo, hi, data) },
                    }
                } else {
                    let mut last = [0u8; BLOCK];
                    for (i, chunk) in data.chunks_mut(BLOCK).enumerate() {
                        let ctr = counter.wrapping_add(i as u128);
                        // SAFETY: as above, AES-NI, SSSE3 and SSE4.1 are present.
                        last = unsafe {
                            x86::xor_keystream_aesni(
                                round_keys,
                                ctr as u64,
                                (ctr >> 64) as u64,
                                chunk,
                            )
                        };
                    }
                    last
                }
            }
            // `Backend::Ni` is only built on x86-64 (`new`); the arm keeps the match exhaustive.
            #[cfg(not(target_arch = "x86_64"))]
            Backend::Ni { .. } => unreachable!("Backend::Ni is only built on x86-64"),
        }
    }
}

/// AES-128 encryption of single blocks on AES-NI, for CGO's ET (proposal 359 "Tweakable
/// block cipher"), whose one block per cell sits on the cell's critical path: the same
/// round keys and instructions as [`Aes128Ctr`], without a counter.
#[derive(Clone)]
pub(crate) struct Aes128Block {
    round_keys: [[u8; BLOCK]; 11],
}

impl Drop for Aes128Block {
    fn drop(&mut self) {
        self.round_keys.zeroize();
    }
}

impl Aes128Block {
    /// The key schedule of `key`, or `None` if this CPU has no AES-NI (or `imp` is
    /// [`AesImpl::Portable`]: the caller chose the `aes` crate).
    pub(crate) fn new(key: &[u8; 16], imp: AesImpl) -> Option<Self> {
        if imp == AesImpl::Portable || !CpuFeatures::detect_cached().supports_aes(AesImpl::AesNi) {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        {
            Some(Aes128Block {
                // SAFETY: AES-NI, SSSE3 and SSE4.1 are present (`supports_aes(AesNi)`).
                round_keys: unsafe { x86::expand_key(key) },
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = key;
            None
        }
    }

    /// Replaces the key in place (overwriting the old schedule).
    #[inline]
    pub(crate) fn rekey(&mut self, key: &[u8; 16]) {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: an `Aes128Block` is only built after `supports_aes(AesNi)`.
            self.round_keys = unsafe { x86::expand_key(key) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = key;
            unreachable!("an Aes128Block is only built on x86-64")
        }
    }

    /// The expanded round keys, for CGO's kernel that runs the ET blocks of several cells
    /// in one AES pipeline (`cgo::interleave`); an `Aes128Block` exists only where AES-NI does.
    #[inline]
    pub(crate) fn round_keys(&self) -> &[[u8; BLOCK]; 11] {
        &self.round_keys
    }

    /// Encrypts `block` in place.
    #[inline]
    pub(crate) fn encrypt(&self, block: &mut [u8; BLOCK]) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Aes128Block` is only built after `supports_aes(AesNi)`.
        unsafe {
            x86::encrypt_block(&self.round_keys, block)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("an Aes128Block is only built on x86-64")
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Byte reversal of each 128-bit lane: turns (low u64, high u64) little-endian counters
    /// into big-endian counter blocks.
    const BSWAP128: [u8; 16] = [15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0];

    macro_rules! expand_round {
        ($rk:ident, $i:literal, $rcon:literal) => {{
            let prev = $rk[$i - 1];
            let t = _mm_shuffle_epi32::<0xff>(_mm_aeskeygenassist_si128::<$rcon>(prev));
            let mut k = prev;
            k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
            k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
            k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
            $rk[$i] = _mm_xor_si128(k, t);
        }};
    }

    /// FIPS-197 AES-128 key expansion.
    #[target_feature(enable = "aes,sse2")]
    pub(super) unsafe fn expand_key(key: &[u8; 16]) -> [[u8; 16]; 11] {
        let mut rk = [_mm_setzero_si128(); 11];
        rk[0] = _mm_loadu_si128(key.as_ptr().cast());
        expand_round!(rk, 1, 0x01);
        expand_round!(rk, 2, 0x02);
        expand_round!(rk, 3, 0x04);
        expand_round!(rk, 4, 0x08);
        expand_round!(rk, 5, 0x10);
        expand_round!(rk, 6, 0x20);
        expand_round!(rk, 7, 0x40);
        expand_round!(rk, 8, 0x80);
        expand_round!(rk, 9, 0x1b);
        expand_round!(rk, 10, 0x36);
        let mut out = [[0u8; 16]; 11];
        for (o, k) in out.iter_mut().zip(rk) {
            _mm_storeu_si128(o.as_mut_ptr().cast(), k);
        }
        out
    }

    /// One AES-128 block encryption in place.
    #[target_feature(enable = "aes,sse2")]
    pub(super) unsafe fn encrypt_block(rk: &[[u8; 16]; 11], block: &mut [u8; 16]) {
        let key = |i: usize| _mm_loadu_si128(rk[i].as_ptr().cast());
        let mut x = _mm_xor_si128(_mm_loadu_si128(block.as_ptr().cast()), key(0));
        for i in 1..10 {
            x = _mm_aesenc_si128(x, key(i));
        }
        _mm_storeu_si128(block.as_mut_ptr().cast(), _mm_aesenclast_si128(x, key(10)));
    }

    /// XORs keystream for counters (hi:lo), (hi:lo+1), ... into `data` (any length), eight
    /// blocks in flight to cover AESENC latency; returns the last keystream block. The caller
    /// ensures `lo` does not wrap.
    #[target_feature(enable = "aes,ssse3,sse4.1")]
    pub(super) unsafe fn xor_keystream_aesni(
        rk: &[[u8; 16]; 11],
        lo: u64,
        hi: u64,
        data: &mut [u8],
    ) -> [u8; 16] {
        // Round keys are read from memory where used (folded into AESENC) rather than held in
        // eleven registers next to eight blocks, which would not fit in sixteen.
        let key = |i: usize| _mm_loadu_si128(rk[i].as_ptr().cast());
        let bswap = _mm_loadu_si128(BSWAP128.as_ptr().cast());
        let mut ctr = _mm_set_epi64x(hi as i64, lo as i64);
        let one = _mm_set_epi64x(0, 1);
        let mut last = _mm_setzero_si128();
        let mut chunks = data.chunks_exact_mut(128);
        for chunk in &mut chunks {
            let mut b = [_mm_setzero_si128(); 8];
            for x in b.iter_mut() {
                *x = _mm_xor_si128(_mm_shuffle_epi8(ctr, bswap), key(0));
                ctr = _mm_add_epi64(ctr, one);
            }
            for r in &rk[1..10] {
                let k = _mm_loadu_si128(r.as_ptr().cast());
                for x in b.iter_mut() {
                    *x = _mm_aesenc_si128(*x, k);
                }
            }
            let p = chunk.as_mut_ptr();
            for (i, x) in b.iter().enumerate() {
                last = _mm_aesenclast_si128(*x, key(10));
                let d = _mm_loadu_si128(p.add(16 * i).cast());
                _mm_storeu_si128(p.add(16 * i).cast(), _mm_xor_si128(d, last));
            }
        }
        for chunk in chunks.into_remainder().chunks_mut(16) {
            let mut x = _mm_xor_si128(_mm_shuffle_epi8(ctr, bswap), key(0));
            ctr = _mm_add_epi64(ctr, one);
            for r in &rk[1..10] {
                x = _mm_aesenc_si128(x, _mm_loadu_si128(r.as_ptr().cast()));
            }
            last = _mm_aesenclast_si128(x, key(10));
            if chunk.len() == 16 {
                let p = chunk.as_mut_ptr();
                let d = _mm_loadu_si128(p.cast());
                _mm_storeu_si128(p.cast(), _mm_xor_si128(d, last));
            } else {
                let mut ks = [0u8; 16];
                _mm_storeu_si128(ks.as_mut_ptr().cast(), last);
                for (d, k) in chunk.iter_mut().zip(ks) {
                    *d ^= k;
                }
            }
        }
        let mut out = [0u8; 16];
        _mm_storeu_si128(out.as_mut_ptr().cast(), last);
        out
    }

    /// As [`xor_keystream_aesni`] with VAES on 512-bit registers: 4 blocks per register, 16 per
    /// iteration; byte-masked loads and stores handle the last 1..255 bytes.
    #[target_feature(enable = "vaes,avx512f,avx512bw,avx512vl,aes,ssse3,sse4.1")]
    pub(super) unsafe fn xor_keystream_vaes512(
        rk: &[[u8; 16]; 11],
        lo: u64,
        hi: u64,
        data: &mut [u8],
    ) -> [u8; 16] {
        // Round keys are broadcast from memory where used (one load each) rather than held in
        // an array, which the compiler would spill to the stack on every call.
        macro_rules! key {
            ($i:expr) => {
                _mm512_broadcast_i32x4(_mm_loadu_si128(rk[$i].as_ptr().cast()))
            };
        }
        let bswap = _mm512_broadcast_i32x4(_mm_loadu_si128(BSWAP128.as_ptr().cast()));
        let hi = hi as i64;
        let lo = lo as i64;
        // Four consecutive counters per register, as (low, high) qword pairs.
        // Built from one broadcast plus constant offsets: cheaper per call than inserting eight
        // scalars per register, which matters when a call covers a single cell.
        let base = _mm512_broadcast_i32x4(_mm_set_epi64x(hi, lo));
        let mut ctr = [
            _mm512_add_epi64(base, _mm512_set_epi64(0, 3, 0, 2, 0, 1, 0, 0)),
            _mm512_add_epi64(base, _mm512_set_epi64(0, 7, 0, 6, 0, 5, 0, 4)),
            _mm512_add_epi64(base, _mm512_set_epi64(0, 11, 0, 10, 0, 9, 0, 8)),
            _mm512_add_epi64(base, _mm512_set_epi64(0, 15, 0, 14, 0, 13, 0, 12)),
        ];
        let step16 = _mm512_set_epi64(0, 16, 0, 16, 0, 16, 0, 16);
        let mut last = [0u8; 64];
        let mut chunks = data.chunks_exact_mut(256);
        for chunk in &mut chunks {
            let mut b = [_mm512_setzero_si512(); 4];
            for (x, c) in b.iter_mut().zip(ctr.iter_mut()) {
                *x = _mm512_xor_si512(_mm512_shuffle_epi8(*c, bswap), key!(0));
                *c = _mm512_add_epi64(*c, step16);
            }
            for r in &rk[1..10] {
                let k = _mm512_broadcast_i32x4(_mm_loadu_si128(r.as_ptr().cast()));
                for x in b.iter_mut() {
                    *x = _mm512_aesenc_epi128(*x, k);
                }
            }
            let p = chunk.as_mut_ptr();
            for (i, x) in b.iter().enumerate() {
                let ks = _mm512_aesenclast_epi128(*x, key!(10));
                let d = _mm512_loadu_si512(p.add(64 * i).cast());
                _mm512_storeu_si512(p.add(64 * i).cast(), _mm512_xor_si512(d, ks));
            }
        }
        let rest = chunks.into_remainder();
        if rest.is_empty() {
            // Whole blocks only: the caller keeps no partial keystream block.
            return [0u8; 16];
        }
        let mut b = [_mm512_setzero_si512(); 4];
        for (x, c) in b.iter_mut().zip(ctr.iter()) {
            *x = _mm512_xor_si512(_mm512_shuffle_epi8(*c, bswap), key!(0));
        }
        let nregs = rest.len().div_ceil(64);
        // All four registers go through the rounds even if fewer are needed: a variable-length
        // loop here would keep them in memory, which costs more than the spare AESENCs.
        for r in &rk[1..10] {
            let k = _mm512_broadcast_i32x4(_mm_loadu_si128(r.as_ptr().cast()));
            for x in b.iter_mut() {
                *x = _mm512_aesenc_epi128(*x, k);
            }
        }
        let p = rest.as_mut_ptr();
        for (i, x) in b[..nregs].iter().enumerate() {
            let n = (rest.len() - 64 * i).min(64);
            let ks = _mm512_aesenclast_epi128(*x, key!(10));
            if n == 64 {
                let d = _mm512_loadu_si512(p.add(64 * i).cast());
                _mm512_storeu_si512(p.add(64 * i).cast(), _mm512_xor_si512(d, ks));
            } else {
                let mask: __mmask64 = (1u64 << n) - 1;
                let d = _mm512_maskz_loadu_epi8(mask, p.add(64 * i).cast());
                _mm512_mask_storeu_epi8(p.add(64 * i).cast(), mask, _mm512_xor_si512(d, ks));
            }
            if i == nregs - 1 {
                _mm512_storeu_si512(last.as_mut_ptr().cast(), ks);
            }
        }
        // The keystream block covering the last byte of `rest`.
        let idx = ((rest.len() - 1) % 64) / 16;
        let mut out = [0u8; 16];
        out.copy_from_slice(&last[16 * idx..16 * idx + 16]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctr::cipher::{KeyIvInit, StreamCipher};
    use rand::{Rng, RngCore, SeedableRng};

    type RefCtr = ctr::Ctr128BE<aes::Aes128>;

    /// Every available implementation produces the `ctr` crate's keystream over random splits,
    /// including runs of whole 509-byte cells.
    #[test]
    fn all_impls_match_ctr_crate_over_odd_splits() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for imp in CpuFeatures::detect().aes_impls() {
            for _ in 0..20 {
                let mut key = [0u8; 16];
                rng.fill_bytes(&mut key);
                let mut ours = Aes128Ctr::new(&key, imp);
                assert_eq!(ours.implementation(), imp);
                let mut reference = RefCtr::new(&key.into(), &[0u8; 16].into());
                for _ in 0..40 {
                    let len = match rng.gen_range(0..4) {
                        0 => rng.gen_range(0..20),
                        1 => 509,
                        2 => 509 * rng.gen_range(1..9),
                        _ => rng.gen_range(0..1200),
                    };
                    let mut a = vec![0u8; len];
                    rng.fill_bytes(&mut a);
                    let mut b = a.clone();
                    ours.apply_keystream(&mut a);
                    reference.apply_keystream(&mut b);
                    assert_eq!(a, b, "{imp:?} len {len}");
                }
            }
        }
    }

    /// The seed for a randomized test: `FORS_TEST_SEED` if set (to replay a failure), else
    /// the clock; printed either way.
    fn test_seed(test: &str) -> u64 {
        let seed = std::env::var("FORS_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0)
            });
        println!("{test}: seed {seed} (rerun with FORS_TEST_SEED={seed})");
        seed
    }

    /// The implementations tested here, printed so that a CPU lacking one shows in the log.
    fn impls_under_test() -> Vec<AesImpl> {
        let f = CpuFeatures::detect();
        for imp in AesImpl::ALL {
            if !f.supports_aes(imp) {
                println!("SKIPPED: {imp:?} (this CPU lacks its instructions)");
            }
        }
        f.aes_impls()
    }

    /// Each accelerated implementation agrees with the portable one byte for byte over random
    /// keys, random start counters (some just below the 2^64 carry), random numbers of whole
    /// 509-byte cells and odd offsets: the stream continues across cells, so most calls start
    /// and end inside a keystream block.
    #[test]
    fn every_impl_matches_portable_over_cells_and_odd_offsets() {
        let seed = test_seed("every_impl_matches_portable_over_cells_and_odd_offsets");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for imp in impls_under_test() {
            for round in 0..60 {
                let mut key = [0u8; 16];
                rng.fill_bytes(&mut key);
                let start: u128 = match round % 3 {
                    0 => 0,
                    1 => rng.gen(),
                    _ => {
                        (u128::from(rng.gen::<u64>()) << 64)
                            | (u64::MAX - rng.gen_range(0..40)) as u128
                    }
                };
                let mut ours = Aes128Ctr::new(&key, imp);
                assert_eq!(ours.implementation(), imp);
                let mut portable = Aes128Ctr::new(&key, AesImpl::Portable);
                ours.counter = start;
                portable.counter = start;
                for _ in 0..8 {
                    // An odd lead-in leaves the stream mid-block, then a run of whole cells.
                    let lead = rng.gen_range(0..32) | 1;
                    let cells = rng.gen_range(1..=12);
                    let mut a = vec![0u8; lead + 509 * cells];
                    rng.fill_bytes(&mut a);
                    let mut b = a.clone();
                    let (a_lead, a_cells) = a.split_at_mut(lead);
                    let (b_lead, b_cells) = b.split_at_mut(lead);
                    ours.apply_keystream(a_lead);
                    portable.apply_keystream(b_lead);
                    for (ca, cb) in a_cells.chunks_mut(509).zip(b_cells.chunks_mut(509)) {
                        ours.apply_keystream(ca);
                        portable.apply_keystream(cb);
                    }
                    assert_eq!(
                        a, b,
                        "{imp:?} seed {seed} start {start:#x} lead {lead} cells {cells}"
                    );
                }
            }
        }
    }

    /// NIST SP 800-38A F.5.1 (CTR-AES128.Encrypt): its counter block f0f1..feff incremented as
    /// one big-endian integer is exactly tor1's 128-bit counter, so the vector applies unchanged.
    /// Also applied in odd pieces, so the partial-block path meets the vector too.
    #[test]
    fn nist_sp800_38a_f51_ctr_aes128() {
        use crate::util::hex;
        let key: [u8; 16] = hex::decode("2b7e151628aed2a6abf7158809cf4f3c")
            .unwrap()
            .try_into()
            .unwrap();
        let counter = u128::from_be_bytes(
            hex::decode("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
                .unwrap()
                .try_into()
                .unwrap(),
        );
        let plain = hex::decode(concat!(
            "6bc1bee22e409f96e93d7e117393172a",
            "ae2d8a571e03ac9c9eb76fac45af8e51",
            "30c81c46a35ce411e5fbc1191a0a52ef",
            "f69f2445df4f9b17ad2b417be66c3710"
        ))
        .unwrap();
        let cipher = concat!(
            "874d6191b620e3261bef6864990db6ce",
            "9806f66b7970fdff8617187bb9fffdff",
            "5ae4df3edbd5d35e5b4f09020db03eab",
            "1e031dda2fbe03d1792170a0f3009cee"
        );
        for imp in impls_under_test() {
            for pieces in [&[64usize][..], &[1, 30, 33], &[17, 47], &[63, 1]] {
                let mut c = Aes128Ctr::new(&key, imp);
                c.counter = counter;
                let mut data = plain.clone();
                let mut rest = &mut data[..];
                for &n in pieces {
                    let (head, tail) = rest.split_at_mut(n);
                    c.apply_keystream(head);
                    rest = tail;
                }
                assert_eq!(hex::encode(&data), cipher, "{imp:?} pieces {pieces:?}");
            }
        }
    }

    /// The counter is 128-bit: blocks across the 2^64 boundary must carry into the high half.
    #[test]
    fn counter_carries_into_high_half() {
        let key = [9u8; 16];
        for imp in CpuFeatures::detect().aes_impls() {
            let mut ours = Aes128Ctr::new(&key, imp);
            ours.counter = (1u128 << 64) - 3;
            let mut iv = [0u8; 16];
            iv.copy_from_slice(&ours.counter.to_be_bytes());
            let mut reference = RefCtr::new(&key.into(), &iv.into());
            let mut a = vec![0x55u8; 509 * 3];
            let mut b = a.clone();
            ours.apply_keystream(&mut a);
            reference.apply_keystream(&mut b);
            assert_eq!(a, b, "{imp:?}");
        }
    }

    /// FIPS-197 Appendix C.1 style check of the key schedule through one block of CTR:
    /// AES-128(000102..0f, 00112233..ff) = 69c4e0d86a7b0430d8cdb78070b4c55a.
    /// The one-block path against the `aes` crate over random keys and blocks.
    #[test]
    fn single_block_matches_aes_crate() {
        let seed = test_seed("single_block_matches_aes_crate");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let Some(_) = Aes128Block::new(&[0; 16], AesImpl::AesNi) else {
            println!("SKIPPED: this CPU has no AES-NI");
            return;
        };
        assert!(Aes128Block::new(&[0; 16], AesImpl::Portable).is_none());
        for _ in 0..500 {
            let mut key = [0u8; 16];
            let mut block = [0u8; 16];
            rng.fill_bytes(&mut key);
            rng.fill_bytes(&mut block);
            let mut want = aes::Block::from(block);
            aes::Aes128Enc::new(&key.into()).encrypt_block(&mut want);
            Aes128Block::new(&key, AesImpl::AesNi)
                .expect("AES-NI present")
                .encrypt(&mut block);
            assert_eq!(block, <[u8; 16]>::from(want), "seed {seed}");
        }
    }

    #[test]
    fn fips197_block() {
        let key: [u8; 16] = core::array::from_fn(|i| i as u8);
        for imp in CpuFeatures::detect().aes_impls() {
            let mut c = Aes128Ctr::new(&key, imp);
            c.counter = u128::from_be_bytes(core::array::from_fn(|i| (i as u8) * 0x11));
            let mut block = [0u8; 16];
            c.apply_keystream(&mut block);
            assert_eq!(
                crate::util::hex::encode(&block),
                "69c4e0d86a7b0430d8cdb78070b4c55a",
                "{imp:?}"
            );
        }
    }
}
