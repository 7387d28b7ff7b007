//! Multi-buffer SHA-1: the running digests of several circuits advanced together, one circuit
//! per 32-bit SIMD lane (AVX2: 8 lanes, AVX-512: 16 lanes).
//!
//! Each lane absorbs one 509-byte cell into its circuit's running state and also yields the
//! digest of a finalized copy (tor-spec "Relay cells"). Because 509 is not a multiple of 64,
//! every lane starts with its own buffered partial block and ends with its own padding, so a
//! lane is laid out in a private scratch area as `buffered ‖ cell (digest field zeroed) ‖
//! padding`; lanes then differ in how many blocks they absorb (7 or 8) and how many the final
//! copy needs (1 or 2), which per-lane block counts and masked state updates handle.

// The AVX-512 intrinsics need Rust 1.89 although the workspace still declares 1.85.
#![allow(clippy::incompatible_msrv)]

use super::cpu::{CpuFeatures, Sha1MultiImpl};
use super::sha1::{self, digest_bytes, Sha1State, BLOCK_LEN};
use super::{CellBody, CELL_BODY_LEN, DIGEST_LEN, DIGEST_OFFSET};

/// Most lanes any kernel uses.
pub const MAX_LANES: usize = 16;

/// Blocks a lane can need: 63 buffered + 509 cell + 9 bytes of padding ≤ 640.
const LANE_BLOCKS: usize = 10;
const LANE_STRIDE: usize = LANE_BLOCKS * BLOCK_LEN;

/// A group of up to [`MAX_LANES`] (running state, cell) pairs hashed in one pass.
///
/// Reusable: [`Sha1Lanes::clear`] and refill; nothing is allocated per cell.
pub struct Sha1Lanes {
    scratch: Box<[[u8; LANE_STRIDE]; MAX_LANES]>,
    /// Running chaining values, structure-of-arrays (`h[word][lane]`).
    h_run: [[u32; MAX_LANES]; 5],
    /// Chaining values of the finalized copies.
    h_fin: [[u32; MAX_LANES]; 5],
    absorb_blocks: [u8; MAX_LANES],
    final_blocks: [u8; MAX_LANES],
    /// Total length each lane's running state will have after the cell.
    len: [u64; MAX_LANES],
    n: usize,
}

impl Default for Sha1Lanes {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Sha1Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sha1Lanes({} lanes)", self.n)
    }
}

impl Sha1Lanes {
    /// An empty group.
    pub fn new() -> Self {
        Sha1Lanes {
            scratch: Box::new([[0; LANE_STRIDE]; MAX_LANES]),
            h_run: [[0; MAX_LANES]; 5],
            h_fin: [[0; MAX_LANES]; 5],
            absorb_blocks: [0; MAX_LANES],
            final_blocks: [0; MAX_LANES],
            len: [0; MAX_LANES],
            n: 0,
        }
    }

    /// Lanes filled so far.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether no lane is filled.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Empties the group.
    pub fn clear(&mut self) {
        self.n = 0;
    }

    /// Adds a lane: `state` will absorb `body` with its digest field zeroed. Returns the lane
    /// index, or `None` when all [`MAX_LANES`] are taken. `state` itself is not modified.
    pub fn push(&mut self, state: &Sha1State, body: &CellBody) -> Option<usize> {
        let lane = self.n;
        if lane == MAX_LANES {
            return None;
        }
        let s = &mut self.scratch[lane];
        let r = state.buffered();
        s[..r].copy_from_slice(&state.buf[..r]);
        s[r..r + CELL_BODY_LEN].copy_from_slice(body);
        s[r + DIGEST_OFFSET..r + DIGEST_OFFSET + DIGEST_LEN].fill(0);
        let total = r + CELL_BODY_LEN;
        let absorb = total / BLOCK_LEN;
        let rem = total % BLOCK_LEN;
        let fin: u8 = if rem + 9 <= BLOCK_LEN { 1 } else { 2 };
        let end = (absorb + fin as usize) * BLOCK_LEN;
        let new_len = state.len + CELL_BODY_LEN as u64;
        s[total] = 0x80;
        s[total + 1..end - 8].fill(0);
        s[end - 8..end].copy_from_slice(&(new_len * 8).to_be_bytes());
        for (w, hv) in self.h_run.iter_mut().zip(state.h) {
            w[lane] = hv;
        }
        self.absorb_blocks[lane] = absorb as u8;
        self.final_blocks[lane] = fin;
        self.len[lane] = new_len;
        self.n += 1;
        Some(lane)
    }

    /// Hashes every lane with `imp` (falls back to one lane at a time if the CPU lacks it).
    pub fn run(&mut self, imp: Sha1MultiImpl) {
        let n = self.n;
        let features = CpuFeatures::detect_cached();
        let imp = if features.supports_sha1_multi(imp) {
            imp
        } else {
            Sha1MultiImpl::OneByOne(super::cpu::Sha1Impl::Portable)
        };
        match imp {
            Sha1MultiImpl::OneByOne(single) => {
                for lane in 0..n {
                    let mut h = [0u32; 5];
                    for (hv, w) in h.iter_mut().zip(&self.h_run) {
                        *hv = w[lane];
                    }
                    let a = self.absorb_blocks[lane] as usize * BLOCK_LEN;
                    let f = self.final_blocks[lane] as usize * BLOCK_LEN;
                    sha1::compress(&mut h, &self.scratch[lane][..a], single);
                    let mut hf = h;
                    sha1::compress(&mut hf, &self.scratch[lane][a..a + f], single);
                    for i in 0..5 {
                        self.h_run[i][lane] = h[i];
                        self.h_fin[i][lane] = hf[i];
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            Sha1MultiImpl::Avx2x8 | Sha1MultiImpl::Avx512x16 => {
                let lanes = imp.lanes();
                let mut start: [i32; MAX_LANES] =
                    core::array::from_fn(|lane| (lane * LANE_STRIDE) as i32);
                let mut count = [0u8; MAX_LANES];
                count[..n].copy_from_slice(&self.absorb_blocks[..n]);
                let base = self.scratch.as_ptr().cast::<u8>();
                for group in (0..n).step_by(lanes) {
                    let g = group..(group + lanes).min(n);
                    // SAFETY: `supports_sha1_multi` checked AVX2 (resp. AVX-512F/BW/VL) at run
                    // time; every block loaded lies inside `scratch`, since each lane reads at
                    // most LANE_BLOCKS blocks from its own LANE_STRIDE area.
                    unsafe { run_kernel(imp, &mut self.h_run, g.clone(), base, &start, &count) };
                }
                self.h_fin = self.h_run;
                for (s, &a) in start.iter_mut().zip(&self.absorb_blocks[..n]) {
                    *s += a as i32 * BLOCK_LEN as i32;
                }
                count[..n].copy_from_slice(&self.final_blocks[..n]);
                for group in (0..n).step_by(lanes) {
                    let g = group..(group + lanes).min(n);
                    // SAFETY: as above.
                    unsafe { run_kernel(imp, &mut self.h_fin, g, base, &start, &count) };
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("supports_sha1_multi is false off x86-64"),
        }
    }

    /// The digest of lane `lane`'s finalized copy (valid after [`Sha1Lanes::run`]).
    pub fn digest(&self, lane: usize) -> [u8; 20] {
        let mut h = [0u32; 5];
        for (hv, w) in h.iter_mut().zip(&self.h_fin) {
            *hv = w[lane];
        }
        digest_bytes(&h)
    }

    /// The first four digest bytes of lane `lane`, as they appear in a relay cell.
    pub fn digest_prefix(&self, lane: usize) -> [u8; DIGEST_LEN] {
        self.h_fin[0][lane].to_be_bytes()
    }

    /// Writes lane `lane`'s advanced running state into `state` (valid after `run`).
    pub fn commit(&self, lane: usize, state: &mut Sha1State) {
        for (hv, w) in state.h.iter_mut().zip(&self.h_run) {
            *hv = w[lane];
        }
        let a = self.absorb_blocks[lane] as usize * BLOCK_LEN;
        let rem = (self.len[lane] % BLOCK_LEN as u64) as usize;
        state.buf[..rem].copy_from_slice(&self.scratch[lane][a..a + rem]);
        state.len = self.len[lane];
    }
}

/// Runs one SIMD group of lanes `g` (lanes past the filled ones have a block count of 0).
///
/// # Safety
/// The CPU must support `imp`'s features, and for every lane `l` in `g`, `base + start[l]` up to
/// `count[l]` blocks must be readable.
#[cfg(target_arch = "x86_64")]
unsafe fn run_kernel(
    imp: Sha1MultiImpl,
    h: &mut [[u32; MAX_LANES]; 5],
    g: std::ops::Range<usize>,
    base: *const u8,
    start: &[i32; MAX_LANES],
    count: &[u8; MAX_LANES],
) {
    let mut hh = [[0u32; MAX_LANES]; 5];
    let lanes = g.start..g.end.min(MAX_LANES);
    let live = lanes.len();
    for i in 0..5 {
        hh[i][..live].copy_from_slice(&h[i][lanes.clone()]);
    }
    let mut s = [0i32; MAX_LANES];
    let mut c = [0u8; MAX_LANES];
    s[..live].copy_from_slice(&start[lanes.clone()]);
    c[..live].copy_from_slice(&count[lanes.clone()]);
    match imp {
        Sha1MultiImpl::Avx512x16 if live > 8 => x16::compress_lanes(&mut hh, base, &s, &c),
        Sha1MultiImpl::Avx512x16 => x8vl::compress_lanes(&mut hh, base, &s, &c),
        _ => x8::compress_lanes(&mut hh, base, &s, &c),
    }
    for i in 0..5 {
        h[i][lanes.clone()].copy_from_slice(&hh[i][..live]);
    }
}

/// SHA-1 round constants (FIPS 180-4 §4.2.1).
const K: [u32; 4] = [0x5A82_7999, 0x6ED9_EBA1, 0x8F1B_BCDC, 0xCA62_C1D6];

/// One SHA-1 round over the vector helpers in scope (`add`, `rol5`, `rol30`, `sched` and the
/// round function `$f`), with `$w` the sixteen-word rolling message schedule.
#[cfg(target_arch = "x86_64")]
macro_rules! sha1_round {
    ($w:ident, $a:ident, $b:ident, $c:ident, $d:ident, $e:ident, $f:ident, $k:ident, $t:literal) => {
        let wt = if $t < 16 {
            $w[$t & 15]
        } else {
            let x = sched(
                $w[($t - 3) & 15],
                $w[($t - 8) & 15],
                $w[($t - 14) & 15],
                $w[$t & 15],
            );
            $w[$t & 15] = x;
            x
        };
        let tmp = add(add(rol5($a), $f($b, $c, $d)), add(add($e, $k), wt));
        $e = $d;
        $d = $c;
        $c = rol30($b);
        $b = $a;
        $a = tmp;
    };
}

/// Twenty rounds with one round function and constant, fully unrolled.
#[cfg(target_arch = "x86_64")]
macro_rules! sha1_round_run {
    ($w:ident, $a:ident, $b:ident, $c:ident, $d:ident, $e:ident, $f:ident, $k:ident; $($t:literal)*) => {
        $( sha1_round!($w, $a, $b, $c, $d, $e, $f, $k, $t); )*
    };
}

/// The 80 rounds of FIPS 180-4 §6.1.2 on vectors of lanes.
#[cfg(target_arch = "x86_64")]
macro_rules! sha1_rounds {
    ($w:ident, $a:ident, $b:ident, $c:ident, $d:ident, $e:ident) => {
        let k0 = set1(K[0] as i32);
        let k1 = set1(K[1] as i32);
        let k2 = set1(K[2] as i32);
        let k3 = set1(K[3] as i32);
        sha1_round_run!($w, $a, $b, $c, $d, $e, ch, k0; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19);
        sha1_round_run!($w, $a, $b, $c, $d, $e, parity, k1; 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39);
        sha1_round_run!($w, $a, $b, $c, $d, $e, maj, k2; 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59);
        sha1_round_run!($w, $a, $b, $c, $d, $e, parity, k3; 60 61 62 63 64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79);
    };
}

/// Byte order swap inside each 32-bit word (message words are big-endian).
#[cfg(target_arch = "x86_64")]
const BSWAP32: [u8; 16] = [3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12];

/// The eight-lane counterpart of the AVX-512 `load_transposed`: each lane's block is two 32-byte
/// rows; two 8x8 word transposes give `w[0..8]` and `w[8..16]`.
///
/// # Safety
/// AVX2 must be available and each lane's 64 bytes readable.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load_transposed_x8(
    base: *const u8,
    start: &[i32; MAX_LANES],
    at: usize,
    bswap: std::arch::x86_64::__m256i,
) -> [std::arch::x86_64::__m256i; 16] {
    use std::arch::x86_64::*;
    let mut w = [_mm256_setzero_si256(); 16];
    for half in 0..2 {
        let mut r = [_mm256_setzero_si256(); 8];
        for (row, &s) in r.iter_mut().zip(&start[..8]) {
            let p = base.add(s as usize + at + 32 * half);
            *row = _mm256_shuffle_epi8(_mm256_loadu_si256(p.cast()), bswap);
        }
        let mut t = [_mm256_setzero_si256(); 8];
        for i in 0..4 {
            t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        let mut u = [_mm256_setzero_si256(); 8];
        for i in 0..2 {
            u[4 * i] = _mm256_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
            u[4 * i + 1] = _mm256_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
            u[4 * i + 2] = _mm256_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
            u[4 * i + 3] = _mm256_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
        }
        for j in 0..4 {
            w[8 * half + j] = _mm256_permute2x128_si256::<0x20>(u[j], u[4 + j]);
            w[8 * half + 4 + j] = _mm256_permute2x128_si256::<0x31>(u[j], u[4 + j]);
        }
    }
    w
}

/// Sixteen lanes in AVX-512 registers; `vpternlogd` and `vprold` keep rounds short.
#[cfg(target_arch = "x86_64")]
mod x16 {
    use super::{BLOCK_LEN, BSWAP32, K, MAX_LANES};
    use std::arch::x86_64::*;

    type V = __m512i;

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn set1(x: i32) -> V {
        _mm512_set1_epi32(x)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn add(a: V, b: V) -> V {
        _mm512_add_epi32(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn rol5(a: V) -> V {
        _mm512_rol_epi32::<5>(a)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn rol30(a: V) -> V {
        _mm512_rol_epi32::<30>(a)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn ch(b: V, c: V, d: V) -> V {
        _mm512_ternarylogic_epi32::<0xCA>(b, c, d)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn parity(b: V, c: V, d: V) -> V {
        _mm512_ternarylogic_epi32::<0x96>(b, c, d)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn maj(b: V, c: V, d: V) -> V {
        _mm512_ternarylogic_epi32::<0xE8>(b, c, d)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn sched(w3: V, w8: V, w14: V, w16: V) -> V {
        _mm512_rol_epi32::<1>(_mm512_xor_si512(
            _mm512_ternarylogic_epi32::<0x96>(w3, w8, w14),
            w16,
        ))
    }

    /// Loads block `at` bytes past `start[l]` of every lane `l` (one 64-byte row each),
    /// byte-swaps the words, and transposes the 16x16 word matrix so that `w[t]` holds word `t`
    /// of all sixteen lanes. Four shuffle stages cost far less than sixteen gathers.
    ///
    /// # Safety
    /// AVX-512F/BW must be available and each lane's 64 bytes readable.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn load_transposed(
        base: *const u8,
        start: &[i32; MAX_LANES],
        at: usize,
        bswap: V,
    ) -> [V; 16] {
        let mut r = [_mm512_setzero_si512(); 16];
        for (row, &s) in r.iter_mut().zip(start) {
            *row = _mm512_shuffle_epi8(_mm512_loadu_si512(base.add(s as usize + at).cast()), bswap);
        }
        // Words (2i, 2i+1) interleaved, then pairs of pairs: u[4i + j] holds, in 128-bit lane
        // k, word 4k + j of rows 4i..4i+3.
        let mut t = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        let mut u = [_mm512_setzero_si512(); 16];
        for i in 0..4 {
            u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
            u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
            u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
            u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
        }
        // A 4x4 transpose of 128-bit lanes across u[j], u[4 + j], u[8 + j], u[12 + j].
        let mut w = [_mm512_setzero_si512(); 16];
        for j in 0..4 {
            let (x0, x1, x2, x3) = (u[j], u[4 + j], u[8 + j], u[12 + j]);
            let a = _mm512_shuffle_i32x4::<0x44>(x0, x1);
            let b = _mm512_shuffle_i32x4::<0x44>(x2, x3);
            let c = _mm512_shuffle_i32x4::<0xEE>(x0, x1);
            let d = _mm512_shuffle_i32x4::<0xEE>(x2, x3);
            w[j] = _mm512_shuffle_i32x4::<0x88>(a, b);
            w[4 + j] = _mm512_shuffle_i32x4::<0xDD>(a, b);
            w[8 + j] = _mm512_shuffle_i32x4::<0x88>(c, d);
            w[12 + j] = _mm512_shuffle_i32x4::<0xDD>(c, d);
        }
        w
    }

    /// Compresses, for each lane `l`, `count[l]` blocks starting at byte offset `start[l]` from
    /// `base` into `h[..][l]`.
    ///
    /// # Safety
    /// AVX-512F/BW must be available and those blocks readable.
    #[target_feature(enable = "avx512f,avx512bw")]
    #[allow(unused_assignments)] // the last rounds refill schedule words nobody reads
    pub(super) unsafe fn compress_lanes(
        h: &mut [[u32; MAX_LANES]; 5],
        base: *const u8,
        start: &[i32; MAX_LANES],
        count: &[u8; MAX_LANES],
    ) {
        let mut st = [_mm512_setzero_si512(); 5];
        for (s, hv) in st.iter_mut().zip(h.iter()) {
            *s = _mm512_loadu_si512(hv.as_ptr().cast());
        }
        let bswap = _mm512_broadcast_i32x4(_mm_loadu_si128(BSWAP32.as_ptr().cast()));
        let cnt = _mm512_cvtepu8_epi32(_mm_loadu_si128(count.as_ptr().cast()));
        let blocks = count.iter().copied().max().unwrap_or(0) as i32;
        for blk in 0..blocks {
            let active = _mm512_cmpgt_epi32_mask(cnt, set1(blk));
            let mut w = load_transposed(base, start, blk as usize * BLOCK_LEN, bswap);
            let [mut a, mut b, mut c, mut d, mut e] = st;
            sha1_rounds!(w, a, b, c, d, e);
            for (s, v) in st.iter_mut().zip([a, b, c, d, e]) {
                *s = _mm512_mask_add_epi32(*s, active, *s, v);
            }
        }
        for (s, hv) in st.iter().zip(h.iter_mut()) {
            _mm512_storeu_si512(hv.as_mut_ptr().cast(), *s);
        }
    }
}

/// Eight lanes in AVX2 registers.
#[cfg(target_arch = "x86_64")]
mod x8 {
    use super::{BLOCK_LEN, BSWAP32, K, MAX_LANES};
    use std::arch::x86_64::*;

    type V = __m256i;

    #[inline]
    #[target_feature(enable = "avx2")]
    fn set1(x: i32) -> V {
        _mm256_set1_epi32(x)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn add(a: V, b: V) -> V {
        _mm256_add_epi32(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn rol5(a: V) -> V {
        _mm256_or_si256(_mm256_slli_epi32::<5>(a), _mm256_srli_epi32::<27>(a))
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn rol30(a: V) -> V {
        _mm256_or_si256(_mm256_slli_epi32::<30>(a), _mm256_srli_epi32::<2>(a))
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn ch(b: V, c: V, d: V) -> V {
        _mm256_xor_si256(d, _mm256_and_si256(b, _mm256_xor_si256(c, d)))
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn parity(b: V, c: V, d: V) -> V {
        _mm256_xor_si256(_mm256_xor_si256(b, c), d)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn maj(b: V, c: V, d: V) -> V {
        _mm256_or_si256(
            _mm256_and_si256(b, c),
            _mm256_and_si256(d, _mm256_or_si256(b, c)),
        )
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn sched(w3: V, w8: V, w14: V, w16: V) -> V {
        let x = _mm256_xor_si256(_mm256_xor_si256(w3, w8), _mm256_xor_si256(w14, w16));
        _mm256_or_si256(_mm256_slli_epi32::<1>(x), _mm256_srli_epi32::<31>(x))
    }

    /// As the AVX-512 kernel, for the first eight lanes.
    ///
    /// # Safety
    /// AVX2 must be available and the blocks readable.
    #[target_feature(enable = "avx2")]
    #[allow(unused_assignments)] // the last rounds refill schedule words nobody reads
    pub(super) unsafe fn compress_lanes(
        h: &mut [[u32; MAX_LANES]; 5],
        base: *const u8,
        start: &[i32; MAX_LANES],
        count: &[u8; MAX_LANES],
    ) {
        let mut st = [_mm256_setzero_si256(); 5];
        for (s, hv) in st.iter_mut().zip(h.iter()) {
            *s = _mm256_loadu_si256(hv.as_ptr().cast());
        }
        let bswap = _mm256_broadcastsi128_si256(_mm_loadu_si128(BSWAP32.as_ptr().cast()));
        let cnt = _mm256_cvtepu8_epi32(_mm_loadl_epi64(count.as_ptr().cast()));
        let blocks = count[..8].iter().copied().max().unwrap_or(0) as i32;
        for blk in 0..blocks {
            let active = _mm256_cmpgt_epi32(cnt, set1(blk));
            let mut w = super::load_transposed_x8(base, start, blk as usize * BLOCK_LEN, bswap);
            let [mut a, mut b, mut c, mut d, mut e] = st;
            sha1_rounds!(w, a, b, c, d, e);
            for (s, v) in st.iter_mut().zip([a, b, c, d, e]) {
                *s = _mm256_blendv_epi8(*s, add(*s, v), active);
            }
        }
        for (s, hv) in st.iter().zip(h.iter_mut()) {
            _mm256_storeu_si256(hv.as_mut_ptr().cast(), *s);
        }
    }
}

/// Eight lanes in 256-bit registers with AVX-512VL's `vpternlogd`/`vprold`: on CPUs that run
/// 512-bit operations as two halves (Zen 4) this costs about half a 16-lane pass, so it serves
/// groups of at most eight circuits.
#[cfg(target_arch = "x86_64")]
mod x8vl {
    use super::{BLOCK_LEN, BSWAP32, K, MAX_LANES};
    use std::arch::x86_64::*;

    type V = __m256i;

    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512vl")]
    fn set1(x: i32) -> V {
        _mm256_set1_epi32(x)
    }
    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512vl")]
    fn add(a: V, b: V) -> V {
        _mm256_add_epi32(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512vl")]
    fn rol5(a: V) -> V {
        _mm256_rol_epi32::<5>(a)
    }
    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512vl")]
    fn rol30(a: V) -> V {
        _mm256_rol_epi32::<30>(a)
    }
    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512vl")]
    fn ch(b: V, c: V, d: V) -> V {
        _mm256_ternarylogic_epi32::<0xCA>(b, c, d)
    }
    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512vl")]
    fn parity(b: V, c: V, d: V) -> V {
        _mm256_ternarylogic_epi32::<0x96>(b, c, d)
    }
    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512vl")]
    fn maj(b: V, c: V, d: V) -> V {
        _mm256_ternarylogic_epi32::<0xE8>(b, c, d)
    }
    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512vl")]
    fn sched(w3: V, w8: V, w14: V, w16: V) -> V {
        _mm256_rol_epi32::<1>(_mm256_xor_si256(
            _mm256_ternarylogic_epi32::<0x96>(w3, w8, w14),
            w16,
        ))
    }

    /// As the AVX-512 kernel, for the first eight lanes.
    ///
    /// # Safety
    /// AVX2 must be available and the blocks readable.
    #[target_feature(enable = "avx2,avx512f,avx512vl")]
    #[allow(unused_assignments)] // the last rounds refill schedule words nobody reads
    pub(super) unsafe fn compress_lanes(
        h: &mut [[u32; MAX_LANES]; 5],
        base: *const u8,
        start: &[i32; MAX_LANES],
        count: &[u8; MAX_LANES],
    ) {
        let mut st = [_mm256_setzero_si256(); 5];
        for (s, hv) in st.iter_mut().zip(h.iter()) {
            *s = _mm256_loadu_si256(hv.as_ptr().cast());
        }
        let bswap = _mm256_broadcastsi128_si256(_mm_loadu_si128(BSWAP32.as_ptr().cast()));
        let cnt = _mm256_cvtepu8_epi32(_mm_loadl_epi64(count.as_ptr().cast()));
        let blocks = count[..8].iter().copied().max().unwrap_or(0) as i32;
        for blk in 0..blocks {
            let active = _mm256_cmpgt_epi32_mask(cnt, set1(blk));
            let mut w = super::load_transposed_x8(base, start, blk as usize * BLOCK_LEN, bswap);
            let [mut a, mut b, mut c, mut d, mut e] = st;
            sha1_rounds!(w, a, b, c, d, e);
            for (s, v) in st.iter_mut().zip([a, b, c, d, e]) {
                *s = _mm256_mask_add_epi32(*s, active, *s, v);
            }
        }
        for (s, hv) in st.iter().zip(h.iter_mut()) {
            _mm256_storeu_si256(hv.as_mut_ptr().cast(), *s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::sha1::Digest;
    use rand::{Rng, RngCore, SeedableRng};

    /// Random lane counts, random prior lengths (so every buffered offset occurs), every
    /// available strategy, checked against the `sha1` crate over the full message history.
    #[test]
    fn every_strategy_matches_sha1_crate() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        let features = CpuFeatures::detect();
        let mut lanes = Sha1Lanes::new();
        for imp in features.sha1_multi_impls() {
            for _ in 0..25 {
                let n = rng.gen_range(1..=MAX_LANES);
                let mut states = Vec::new();
                let mut histories = Vec::new();
                for _ in 0..n {
                    let mut prior = vec![0u8; rng.gen_range(0..700)];
                    rng.fill_bytes(&mut prior);
                    let mut s = Sha1State::new();
                    s.update(&prior, crate::crypto::relay::cpu::Sha1Impl::Portable);
                    states.push(s);
                    histories.push(prior);
                }
                for _round in 0..3 {
                    lanes.clear();
                    let mut bodies = Vec::new();
                    for s in &states {
                        let mut body = [0u8; 509];
                        rng.fill_bytes(&mut body);
                        assert!(lanes.push(s, &body).is_some());
                        bodies.push(body);
                    }
                    lanes.run(imp);
                    for lane in 0..n {
                        let mut zeroed = bodies[lane];
                        zeroed[5..9].fill(0);
                        histories[lane].extend_from_slice(&zeroed);
                        let want: [u8; 20] = ::sha1::Sha1::digest(&histories[lane]).into();
                        assert_eq!(lanes.digest(lane), want, "{imp:?} n={n} lane={lane}");
                        assert_eq!(lanes.digest_prefix(lane), want[..4]);
                        lanes.commit(lane, &mut states[lane]);
                        assert_eq!(
                            states[lane]
                                .finalize_copy(crate::crypto::relay::cpu::Sha1Impl::Portable),
                            want
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn full_group_refuses_more() {
        let mut lanes = Sha1Lanes::new();
        let s = Sha1State::new();
        for _ in 0..MAX_LANES {
            assert!(lanes.push(&s, &[0; 509]).is_some());
        }
        assert!(lanes.push(&s, &[0; 509]).is_none());
    }
}
