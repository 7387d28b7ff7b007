//! POLYVAL (RFC 8452 §3) on carry-less multiply instructions, for CGO's two uses of it:
//! the 32-block ET tweak `H | command | X_R` and the one-block PRF counter (proposal 359).
//!
//! POLYVAL's bit order is the CPU's, so a product is four PCLMULQDQs and a Montgomery
//! reduction by `x^128 + x^127 + x^126 + x^121 + 1` (RFC 8452 Appendix A; Gueron's
//! AES-GCM-SIV "GFMUL"). The tweak is hashed by aggregated reduction: with the key's powers
//! `H^1..H^32` precomputed, the whole tweak is `X_1·H^32 ^ X_2·H^31 ^ ... ^ X_32·H^1`, all 32
//! products independent, summed unreduced and reduced once (Horner's rule would chain 32
//! dependent multiply-reduce steps). VPCLMULQDQ does four blocks per instruction. The powers
//! cost 31 products per key; with VPCLMULQDQ they are computed four at a time by repeated
//! doubling (`H^1..4`, then `·H^4`, `·H^8`, `·H^16`: five dependent steps), which matters
//! because an originating direction updates its keys after every cell.
//!
//! The only unsafe code of the CGO module: SIMD intrinsics, run only after the CPU was probed
//! for them ([`ClmulImpl::supported`]); the `polyval` crate is the fallback elsewhere.
#![allow(unsafe_code)]
// The AVX-512 / VPCLMULQDQ intrinsics need Rust 1.89 (the workspace's MSRV).
#![allow(clippy::incompatible_msrv)]

use super::{Block16, CGO_PAYLOAD_LEN};
use std::sync::OnceLock;
use zeroize::Zeroize;

/// Powers of H kept per tweak key: one per tweak block, so one reduction per tweak.
pub(super) const POWERS: usize = 32;

/// Blocks in the ET tweak: `H` (16) + command (1) + `X_R` (493) = 510 bytes, zero-padded.
const TWEAK_BLOCKS: usize = 32;
const _: () = assert!(TWEAK_BLOCKS == POWERS);
const _: () = assert!(16 + 1 + CGO_PAYLOAD_LEN == TWEAK_BLOCKS * 16 - 2);

/// A carry-less-multiply POLYVAL implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClmulImpl {
    /// PCLMULQDQ on 128-bit registers.
    Clmul,
    /// VPCLMULQDQ on 512-bit registers (AVX-512F/BW), four blocks per instruction.
    Vclmul512,
}

impl ClmulImpl {
    /// Both, narrowest first.
    pub(crate) const ALL: [ClmulImpl; 2] = [ClmulImpl::Clmul, ClmulImpl::Vclmul512];

    /// Whether this CPU runs `self` (probed once per process).
    pub(crate) fn supported(self) -> bool {
        let (clmul, vclmul) = *support();
        match self {
            ClmulImpl::Clmul => clmul,
            ClmulImpl::Vclmul512 => vclmul,
        }
    }

    /// The widest implementation this CPU runs, if any.
    pub(crate) fn best() -> Option<ClmulImpl> {
        ClmulImpl::ALL.into_iter().rev().find(|i| i.supported())
    }
}

/// (PCLMULQDQ usable, VPCLMULQDQ on 512-bit registers usable).
fn support() -> &'static (bool, bool) {
    static SUPPORT: OnceLock<(bool, bool)> = OnceLock::new();
    SUPPORT.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let clmul = is_x86_feature_detected!("pclmulqdq") && is_x86_feature_detected!("sse4.1");
            let vclmul = clmul
                && is_x86_feature_detected!("vpclmulqdq")
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx2");
            (clmul, vclmul)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            (false, false)
        }
    })
}

/// A POLYVAL key for the ET tweak: `H^32..H^1` (index `i` holds `H^(32-i)`, the factor of
/// tweak block `i`; each a POLYVAL product, i.e. carrying the `x^-128` factors of Montgomery
/// form) and the implementation that was checked to run here.
#[derive(Clone)]
pub(super) struct TweakKey {
    powers: [Block16; POWERS],
    imp: ClmulImpl,
}

impl Drop for TweakKey {
    fn drop(&mut self) {
        self.powers.zeroize();
    }
}

impl TweakKey {
    /// The key `h` for `imp`, or `None` if this CPU cannot run `imp`.
    pub(super) fn new(h: &Block16, imp: ClmulImpl) -> Option<Self> {
        if !imp.supported() {
            return None;
        }
        let mut k = TweakKey {
            powers: [[0; 16]; POWERS],
            imp,
        };
        k.rekey(h);
        Some(k)
    }

    /// Replaces the key with `h` in place (the key update: overwriting is also what wipes
    /// the old powers, without a copy of the whole key moving through the stack).
    pub(super) fn rekey(&mut self, h: &Block16) {
        #[cfg(target_arch = "x86_64")]
        match self.imp {
            // SAFETY: `self.imp` passed `supported()` in `new`: PCLMULQDQ and SSE4.1 are present.
            ClmulImpl::Clmul => unsafe { x86::powers_clmul(h, &mut self.powers) },
            // SAFETY: as above, and VPCLMULQDQ, AVX-512F/BW and AVX2 are present.
            ClmulImpl::Vclmul512 => unsafe { x86::powers_vclmul512(h, &mut self.powers) },
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("no carry-less multiply is supported off x86-64")
    }

    /// `H^32..H^1` if this key runs on VPCLMULQDQ (what [`super::interleave`] needs).
    #[inline]
    pub(super) fn vclmul512_powers(&self) -> Option<&[Block16; POWERS]> {
        (self.imp == ClmulImpl::Vclmul512).then_some(&self.powers)
    }

    /// The implementation in use.
    #[cfg(test)]
    pub(super) fn implementation(&self) -> ClmulImpl {
        self.imp
    }

    /// `POLYVAL(H, h | cmd | x_r)` with the last block zero-padded and no length block.
    #[inline]
    pub(super) fn tweak(&self, h: &Block16, cmd: u8, x_r: &[u8; CGO_PAYLOAD_LEN]) -> Block16 {
        #[cfg(target_arch = "x86_64")]
        match self.imp {
            // SAFETY: `self.imp` passed `supported()` in `new`: PCLMULQDQ and SSE4.1 are present.
            ClmulImpl::Clmul => unsafe { x86::tweak_clmul(&self.powers, h, cmd, x_r) },
            // SAFETY: as above, and VPCLMULQDQ, AVX-512F/BW and AVX2 are present.
            ClmulImpl::Vclmul512 => unsafe { x86::tweak_vclmul512(&self.powers, h, cmd, x_r) },
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("a TweakKey is only built on x86-64")
    }
}

/// A POLYVAL key for one-block inputs (the PRF counter): just `H`.
#[derive(Clone)]
pub(super) struct BlockKey {
    h: Block16,
}

impl Drop for BlockKey {
    fn drop(&mut self) {
        self.h.zeroize();
    }
}

impl BlockKey {
    /// The key `h`, or `None` if this CPU has no PCLMULQDQ.
    pub(super) fn new(h: &Block16) -> Option<Self> {
        ClmulImpl::Clmul.supported().then_some(BlockKey { h: *h })
    }

    /// Replaces the key with `h` in place.
    pub(super) fn rekey(&mut self, h: &Block16) {
        self.h = *h;
    }

    /// `H` (for [`super::interleave`], which hashes several cells' counters in one kernel).
    #[inline]
    pub(super) fn key(&self) -> &Block16 {
        &self.h
    }

    /// `POLYVAL(H, x)` for one block: `x·H`.
    #[inline]
    pub(super) fn hash(&self, x: &Block16) -> Block16 {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a BlockKey is only built after `ClmulImpl::Clmul.supported()`.
        unsafe {
            x86::dot_block(&self.h, x)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("a BlockKey is only built on x86-64")
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use super::{Block16, CGO_PAYLOAD_LEN, POWERS};
    use std::arch::x86_64::*;

    /// The reduction constant: the high qword holds `x^121 + x^126 + x^127` shifted down by
    /// 64 (0xC2 << 56), the low qword the `+ 1`.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn poly() -> __m128i {
        _mm_set_epi64x(0xC200_0000_0000_0000_u64 as i64, 1)
    }

    /// The 256-bit carry-less product `a * b` as (low, middle, high) 128-bit parts: the
    /// middle part straddles the other two (it is `a.lo*b.hi ^ a.hi*b.lo`, weight `x^64`).
    #[inline]
    #[target_feature(enable = "pclmulqdq,sse2")]
    fn mul(a: __m128i, b: __m128i) -> (__m128i, __m128i, __m128i) {
        let lo = _mm_clmulepi64_si128::<0x00>(a, b);
        let hi = _mm_clmulepi64_si128::<0x11>(a, b);
        let mid = _mm_xor_si128(
            _mm_clmulepi64_si128::<0x01>(a, b),
            _mm_clmulepi64_si128::<0x10>(a, b),
        );
        (lo, mid, hi)
    }

    /// `(hi·x^128 + mid·x^64 + lo) · x^-128 mod P`: two Montgomery folds of 64 bits each.
    #[inline]
    #[target_feature(enable = "pclmulqdq,sse2")]
    pub(in crate::crypto::relay::cgo) fn reduce(lo: __m128i, mid: __m128i, hi: __m128i) -> __m128i {
        let lo = _mm_xor_si128(lo, _mm_slli_si128::<8>(mid));
        let hi = _mm_xor_si128(hi, _mm_srli_si128::<8>(mid));
        // Adding lo.q0 · P clears the low qword; dividing by x^64 swaps the qwords.
        let t = _mm_clmulepi64_si128::<0x10>(lo, poly());
        let lo = _mm_xor_si128(_mm_shuffle_epi32::<0x4E>(lo), t);
        let t = _mm_clmulepi64_si128::<0x10>(lo, poly());
        let lo = _mm_xor_si128(_mm_shuffle_epi32::<0x4E>(lo), t);
        _mm_xor_si128(lo, hi)
    }

    /// POLYVAL's field product `a·b = a * b * x^-128 mod P`.
    #[inline]
    #[target_feature(enable = "pclmulqdq,sse2")]
    pub(in crate::crypto::relay::cgo) fn dot(a: __m128i, b: __m128i) -> __m128i {
        let (lo, mid, hi) = mul(a, b);
        reduce(lo, mid, hi)
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    pub(in crate::crypto::relay::cgo) fn load(b: &Block16) -> __m128i {
        // SAFETY: `b` is 16 readable bytes; the load is unaligned.
        unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    pub(in crate::crypto::relay::cgo) fn store(v: __m128i) -> Block16 {
        let mut out = [0u8; 16];
        // SAFETY: `out` is 16 writable bytes; the store is unaligned.
        unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), v) };
        out
    }

    /// `POLYVAL(H, x)` of one block.
    ///
    /// # Safety
    /// The CPU must support PCLMULQDQ.
    #[target_feature(enable = "pclmulqdq,sse2")]
    pub(super) unsafe fn dot_block(h: &Block16, x: &Block16) -> Block16 {
        store(dot(load(x), load(h)))
    }

    /// `H^32..H^1` (index `i` holds `H^(32-i)`) as POLYVAL products, by doubling: each
    /// stage multiplies every power known so far by the highest one, so the 31 products form
    /// five dependent steps of independent multiplications.
    ///
    /// # Safety
    /// The CPU must support PCLMULQDQ.
    #[target_feature(enable = "pclmulqdq,sse2")]
    pub(super) unsafe fn powers_clmul(h: &Block16, out: &mut [Block16; POWERS]) {
        // up[i] = H^(i+1)
        let mut up = [_mm_setzero_si128(); POWERS];
        up[0] = load(h);
        let mut known = 1;
        while known < POWERS {
            let top = up[known - 1];
            for i in 0..known {
                up[known + i] = dot(up[i], top);
            }
            known *= 2;
        }
        for (i, o) in out.iter_mut().enumerate() {
            *o = store(up[POWERS - 1 - i]);
        }
    }

    /// The tweak's block 1 (`cmd | x_r[..15]`) and block 31 (`x_r[479..]`, zero-padded):
    /// the two that do not lie whole in `x_r`.
    #[inline]
    fn edge_blocks(cmd: u8, x_r: &[u8; CGO_PAYLOAD_LEN]) -> (Block16, Block16) {
        let mut first = [0u8; 16];
        first[0] = cmd;
        first[1..].copy_from_slice(&x_r[..15]);
        let mut last = [0u8; 16];
        last[..14].copy_from_slice(&x_r[CGO_PAYLOAD_LEN - 14..]);
        (first, last)
    }

    /// The tweak's blocks 0..=3 in one register: `h`, then `cmd | x_r[..15]`, then
    /// `x_r[15..47]`; assembled in registers (a 64-byte stack buffer written bytewise and
    /// read back whole would stall on store forwarding).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx2,sse4.1")]
    pub(in crate::crypto::relay::cgo) fn head_register(
        h: &Block16,
        cmd: u8,
        x_r: &[u8; CGO_PAYLOAD_LEN],
    ) -> __m512i {
        // SAFETY: `h` is 16 readable bytes; the load is unaligned.
        let b0 = unsafe { _mm_loadu_si128(h.as_ptr().cast()) };
        // SAFETY: `x_r[..16]` is within the 493-byte `x_r`; the load is unaligned.
        let x0 = unsafe { _mm_loadu_si128(x_r.as_ptr().cast()) };
        let b1 = _mm_or_si128(_mm_slli_si128::<1>(x0), _mm_cvtsi32_si128(i32::from(cmd)));
        // SAFETY: `x_r[15..47]` is within `x_r`; the load is unaligned.
        let b23 = unsafe { _mm256_loadu_si256(x_r.as_ptr().add(15).cast()) };
        let lo = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(b0), b1);
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), b23)
    }

    /// The ET tweak hash with PCLMULQDQ: 32 independent products, one reduction.
    ///
    /// # Safety
    /// The CPU must support PCLMULQDQ.
    #[target_feature(enable = "pclmulqdq,sse2,sse4.1")]
    pub(super) unsafe fn tweak_clmul(
        powers: &[Block16; POWERS],
        h: &Block16,
        cmd: u8,
        x_r: &[u8; CGO_PAYLOAD_LEN],
    ) -> Block16 {
        let (first, last) = edge_blocks(cmd, x_r);
        let block = |i: usize| -> __m128i {
            match i {
                0 => load(h),
                1 => load(&first),
                31 => load(&last),
                // Blocks 2..=30 lie whole in x_r at 15 + 16 (i - 2): 15 + 16 * 28 + 16 = 479.
                // SAFETY: that range is within the 493-byte x_r; the load is unaligned.
                _ => unsafe { _mm_loadu_si128(x_r.as_ptr().add(15 + 16 * (i - 2)).cast()) },
            }
        };
        let (mut lo, mut mid, mut hi) = mul(block(0), load(&powers[0]));
        for (i, p) in powers.iter().enumerate().skip(1) {
            let (l, m, u) = mul(block(i), load(p));
            lo = _mm_xor_si128(lo, l);
            mid = _mm_xor_si128(mid, m);
            hi = _mm_xor_si128(hi, u);
        }
        store(reduce(lo, mid, hi))
    }

    /// The reduction constant in every 128-bit lane.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn poly512() -> __m512i {
        _mm512_set_epi64(
            0xC200_0000_0000_0000_u64 as i64,
            1,
            0xC200_0000_0000_0000_u64 as i64,
            1,
            0xC200_0000_0000_0000_u64 as i64,
            1,
            0xC200_0000_0000_0000_u64 as i64,
            1,
        )
    }

    /// [`reduce`] in each of four 128-bit lanes.
    #[inline]
    #[target_feature(enable = "vpclmulqdq,avx512f,avx512bw")]
    fn reduce4(lo: __m512i, mid: __m512i, hi: __m512i) -> __m512i {
        let lo = _mm512_xor_si512(lo, _mm512_bslli_epi128::<8>(mid));
        let hi = _mm512_xor_si512(hi, _mm512_bsrli_epi128::<8>(mid));
        let t = _mm512_clmulepi64_epi128::<0x10>(lo, poly512());
        let lo = _mm512_xor_si512(_mm512_shuffle_epi32::<0x4E>(lo), t);
        let t = _mm512_clmulepi64_epi128::<0x10>(lo, poly512());
        let lo = _mm512_xor_si512(_mm512_shuffle_epi32::<0x4E>(lo), t);
        _mm512_xor_si512(lo, hi)
    }

    /// [`dot`] in each of four 128-bit lanes.
    #[inline]
    #[target_feature(enable = "vpclmulqdq,avx512f,avx512bw")]
    fn dot4(a: __m512i, b: __m512i) -> __m512i {
        let lo = _mm512_clmulepi64_epi128::<0x00>(a, b);
        let hi = _mm512_clmulepi64_epi128::<0x11>(a, b);
        let mid = _mm512_xor_si512(
            _mm512_clmulepi64_epi128::<0x01>(a, b),
            _mm512_clmulepi64_epi128::<0x10>(a, b),
        );
        reduce4(lo, mid, hi)
    }

    /// [`powers_clmul`] four powers per register: `H^1..H^4` one by one, then each stage
    /// multiplies the registers known so far by the highest power broadcast.
    ///
    /// # Safety
    /// The CPU must support VPCLMULQDQ, PCLMULQDQ, AVX-512F/BW and AVX2.
    #[target_feature(enable = "vpclmulqdq,pclmulqdq,avx512f,avx512bw,avx2,sse4.1")]
    pub(super) unsafe fn powers_vclmul512(h: &Block16, out: &mut [Block16; POWERS]) {
        let h1 = load(h);
        let h2 = dot(h1, h1);
        let h3 = dot(h2, h1);
        let h4 = dot(h2, h2);
        // up[k] lanes 0..3 = H^(4k+1)..H^(4k+4).
        let mut up = [_mm512_setzero_si512(); POWERS / 4];
        let lo = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(h1), h2);
        let hi = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(h3), h4);
        up[0] = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
        let mut known = 1;
        while known < POWERS / 4 {
            // Lane 3 of the highest register, in all four lanes.
            let top = _mm512_shuffle_i64x2::<0xFF>(up[known - 1], up[known - 1]);
            for k in 0..known {
                up[known + k] = dot4(up[k], top);
            }
            known *= 2;
        }
        // Stored highest power first: register k reversed lane-wise lands at 32 - 4 (k + 1).
        for (k, v) in up.iter().enumerate() {
            let rev = _mm512_shuffle_i64x2::<0x1B>(*v, *v);
            let at = POWERS - 4 * (k + 1);
            // SAFETY: `out[at..at + 4]` is 64 writable bytes; the store is unaligned.
            unsafe { _mm512_storeu_si512(out[at..].as_mut_ptr().cast(), rev) };
        }
    }

    /// XOR of the four 128-bit lanes of `z`.
    #[inline]
    #[target_feature(enable = "avx512f,avx2")]
    pub(in crate::crypto::relay::cgo) fn fold_lanes(z: __m512i) -> __m128i {
        let y = _mm256_xor_si256(
            _mm512_extracti64x4_epi64::<0>(z),
            _mm512_extracti64x4_epi64::<1>(z),
        );
        _mm_xor_si128(_mm256_castsi256_si128(y), _mm256_extracti128_si256::<1>(y))
    }

    /// The ET tweak hash with VPCLMULQDQ: four blocks per register, all 32 products
    /// independent, one reduction.
    ///
    /// # Safety
    /// The CPU must support VPCLMULQDQ, PCLMULQDQ, AVX-512F/BW and AVX2.
    #[target_feature(enable = "vpclmulqdq,pclmulqdq,avx512f,avx512bw,avx2,sse4.1")]
    pub(super) unsafe fn tweak_vclmul512(
        powers: &[Block16; POWERS],
        h: &Block16,
        cmd: u8,
        x_r: &[u8; CGO_PAYLOAD_LEN],
    ) -> Block16 {
        // Register k holds blocks 4k..4k+3. Register 0 is assembled (h, cmd, x_r[..47]);
        // registers 1..=6 are x_r from 15 + 16 (4k - 2); register 7 is the last 62 bytes of
        // x_r, loaded under a byte mask, so block 31's two padding bytes come in as zero.
        let reg = |k: usize| -> __m512i {
            match k {
                0 => head_register(h, cmd, x_r),
                // SAFETY: 15 + 16 * 26 = 431 and 431 + 62 = 493: the masked load reads only
                // bytes of x_r (masked-off bytes are not accessed and cannot fault).
                7 => unsafe {
                    _mm512_maskz_loadu_epi8((1u64 << 62) - 1, x_r.as_ptr().add(431).cast())
                },
                // SAFETY: for k in 1..=6 the 64 bytes from 15 + 16 (4k - 2) end at most at
                // 15 + 16 * 22 + 64 = 431, within x_r; the load is unaligned.
                _ => unsafe { _mm512_loadu_si512(x_r.as_ptr().add(15 + 16 * (4 * k - 2)).cast()) },
            }
        };
        // Lanes 0..3 of power register k are H^(32-4k)..H^(29-4k), as stored.
        // SAFETY: `powers` is 512 readable bytes; k * 4 + 4 <= 32.
        let pw = |k: usize| unsafe { _mm512_loadu_si512(powers[4 * k..].as_ptr().cast()) };
        let (a, p) = (reg(0), pw(0));
        let mut lo = _mm512_clmulepi64_epi128::<0x00>(a, p);
        let mut hi = _mm512_clmulepi64_epi128::<0x11>(a, p);
        let mut mid = _mm512_xor_si512(
            _mm512_clmulepi64_epi128::<0x01>(a, p),
            _mm512_clmulepi64_epi128::<0x10>(a, p),
        );
        for k in 1..POWERS / 4 {
            let (a, p) = (reg(k), pw(k));
            lo = _mm512_xor_si512(lo, _mm512_clmulepi64_epi128::<0x00>(a, p));
            hi = _mm512_xor_si512(hi, _mm512_clmulepi64_epi128::<0x11>(a, p));
            mid = _mm512_ternarylogic_epi64::<0x96>(
                mid,
                _mm512_clmulepi64_epi128::<0x01>(a, p),
                _mm512_clmulepi64_epi128::<0x10>(a, p),
            );
        }
        store(reduce(fold_lanes(lo), fold_lanes(mid), fold_lanes(hi)))
    }
}
