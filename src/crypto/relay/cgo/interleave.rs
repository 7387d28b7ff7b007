//! The first half of `ENC_UIV` (ET on the tag half) and the PRF's counter POLYVAL for up to
//! four cells of *distinct* circuits in one kernel, their dependency chains interleaved
//! (proposal 359 "UIV+", "PRF"). The `*_multi` and `*_group` calls give it a group of cells;
//! the one-cell calls give it one (one call instead of three dispatched ones: 90 -> 76 ns per
//! cell on Zen 4, `bench/RESULTS.md`).
//!
//! One cell's ET is a chain of latencies: the 32-block tweak POLYVAL and its reduction, then
//! ten dependent AES rounds on one block, then the one-block POLYVAL of the new tag that
//! starts the PRF's counter; only then can the 31-block CTR pass run. Cell by cell, the CPU
//! mostly waits on that chain. Here the cells' tweaks (each 32 products, one reduction) run
//! back to back in one function, the cells' ET blocks go through the AES pipeline together
//! (one round of every cell, then the next round), and the counter products follow together.
//! (Accumulating all the cells' tweak products side by side instead spilled the accumulators
//! to the stack and was ≈ 4 % slower.) The CTR passes then run per cell on Fors's CTR kernels (they are throughput-bound
//! already). The cells' keys differ (one circuit each), so each lane has its own round keys,
//! powers of H and PRF key.
//!
//! Needs AES-NI and VPCLMULQDQ on 512-bit registers; [`et_and_counters`] says `None` on other
//! CPUs and the callers run the one-cell path, which is also the reference the tests compare
//! this kernel with. `FORS_CGO_INTERLEAVE=off` turns the kernel off for a process, so that
//! both paths can be measured with one binary in one run.
#![allow(unsafe_code)]
// The AVX-512 / VPCLMULQDQ intrinsics need Rust 1.89 (the workspace's MSRV).
#![allow(clippy::incompatible_msrv)]

use super::polyval_simd::POWERS;
use super::{Block16, CellBody};

/// The most cells one kernel call takes (as many as the `*_multi` calls group).
pub(super) const MAX_LANES: usize = 4;

/// The keys one cell's ET and PRF counter run with (borrowed from its direction's UIV+ keys).
#[derive(Clone, Copy)]
pub(super) struct LaneKeys<'a> {
    /// ET's AES-128 key schedule (KB).
    pub(super) et_round_keys: &'a [[u8; 16]; 11],
    /// ET's tweak POLYVAL key as `H^32..H^1` (KU).
    pub(super) tweak_powers: &'a [Block16; POWERS],
    /// The PRF's POLYVAL key (B).
    pub(super) prf_key: &'a Block16,
}

/// The cell bodies of one kernel call, by lane: a run of bodies (the `*_multi` calls) or
/// bodies lying apart (the `*_group` calls of the relay's read path, whose cells sit in its
/// stage between other circuits' cells).
pub(super) trait Bodies {
    fn lanes(&self) -> usize;
    fn body(&self, lane: usize) -> &CellBody;
    fn body_mut(&mut self, lane: usize) -> &mut CellBody;
}

impl Bodies for [CellBody] {
    #[inline]
    fn lanes(&self) -> usize {
        self.len()
    }
    #[inline]
    fn body(&self, lane: usize) -> &CellBody {
        &self[lane]
    }
    #[inline]
    fn body_mut(&mut self, lane: usize) -> &mut CellBody {
        &mut self[lane]
    }
}

impl Bodies for [&mut CellBody] {
    #[inline]
    fn lanes(&self) -> usize {
        self.len()
    }
    #[inline]
    fn body(&self, lane: usize) -> &CellBody {
        self[lane]
    }
    #[inline]
    fn body_mut(&mut self, lane: usize) -> &mut CellBody {
        self[lane]
    }
}

/// One cell's inputs besides its body: its keys, the chained tag `T'` and the command.
#[derive(Clone, Copy)]
pub(super) struct Lane<'a> {
    pub(super) keys: LaneKeys<'a>,
    pub(super) tprime: &'a Block16,
    pub(super) cmd: u8,
}

/// For each `cells[i]` (at most [`MAX_LANES`], one per lane): replaces its tag half `X_L`
/// with `Y_L = ENC_ET(J, T' | cmd | X_R, X_L)` and returns `POLYVAL(B, Y_L)`, from which
/// [`super::prf::first_counter`] gives the PRF's first counter. `None`, changing
/// nothing, if this CPU lacks the instructions (then run the one-cell path).
///
/// # Panics
/// If `lanes` and `cells` differ in length or hold more than [`MAX_LANES`] (a caller bug).
pub(super) fn et_and_counters<S: Bodies + ?Sized>(
    lanes: &[Lane<'_>],
    cells: &mut S,
) -> Option<[Block16; MAX_LANES]> {
    assert_eq!(lanes.len(), cells.lanes(), "one lane per cell");
    assert!(lanes.len() <= MAX_LANES, "at most {MAX_LANES} lanes");
    #[cfg(target_arch = "x86_64")]
    {
        if !supported() {
            return None;
        }
        let mut out = [[0u8; 16]; MAX_LANES];
        macro_rules! run {
            ($n:literal) => {{
                let l: &[Lane<'_>; $n] = lanes.try_into().expect("length checked");
                // SAFETY: `supported()` found AES-NI, PCLMULQDQ, VPCLMULQDQ, AVX-512F/BW,
                // AVX2 and SSE4.1 on this CPU: every feature the kernel is compiled for.
                let r = unsafe { x86::kernel::<$n, S>(l, cells) };
                out[..$n].copy_from_slice(&r);
            }};
        }
        #[cfg(test)]
        KERNEL_CELLS.with(|n| n.set(n.get() + lanes.len()));
        match lanes.len() {
            0 => {}
            1 => run!(1),
            2 => run!(2),
            3 => run!(3),
            _ => run!(4),
        }
        Some(out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (lanes, cells);
        None
    }
}

#[cfg(test)]
thread_local! {
    /// Tests only: cells this thread ran through the kernel, so that a test comparing it with
    /// the one-cell path can tell that it did not compare that path with itself.
    pub(super) static KERNEL_CELLS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Whether the kernel runs in this process (the CPU has its instructions and it was not
/// turned off).
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        supported()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Turns the kernel off for the process when set to `off`, for measurement.
pub(crate) const INTERLEAVE_OVERRIDE_ENV: &str = "FORS_CGO_INTERLEAVE";

/// Whether this CPU runs the kernel and it was not turned off (probed once per process).
#[cfg(target_arch = "x86_64")]
fn supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        std::env::var(INTERLEAVE_OVERRIDE_ENV).as_deref() != Ok("off")
            && is_x86_feature_detected!("aes")
            && is_x86_feature_detected!("pclmulqdq")
            && is_x86_feature_detected!("vpclmulqdq")
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("sse4.1")
    })
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::polyval_simd::x86::{dot, fold_lanes, head_register, load, reduce, store};
    use super::super::{Block16, CellBody, CGO_PAYLOAD_LEN, CGO_TAG_LEN};
    use super::{Bodies, Lane};
    use std::arch::x86_64::*;

    /// The payload half `X_R` of a body.
    #[inline]
    fn payload(cell: &CellBody) -> &[u8; CGO_PAYLOAD_LEN] {
        cell[CGO_TAG_LEN..].try_into().expect("493-byte payload")
    }

    /// Tweak register `k` (blocks `4k..4k+3`) of a cell, as in `tweak_vclmul512`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx2,sse4.1")]
    fn tweak_register(lane: &Lane<'_>, x_r: &[u8; CGO_PAYLOAD_LEN], k: usize) -> __m512i {
        match k {
            0 => head_register(lane.tprime, lane.cmd, x_r),
            // SAFETY: 15 + 16 * 26 = 431 and 431 + 62 = 493: the masked load reads only bytes
            // of x_r (masked-off bytes are not accessed and cannot fault).
            7 => unsafe { _mm512_maskz_loadu_epi8((1u64 << 62) - 1, x_r.as_ptr().add(431).cast()) },
            // SAFETY: for k in 1..=6 the 64 bytes from 15 + 16 (4k - 2) end at most at
            // 15 + 16 * 22 + 64 = 431, within x_r; the load is unaligned.
            _ => unsafe { _mm512_loadu_si512(x_r.as_ptr().add(15 + 16 * (4 * k - 2)).cast()) },
        }
    }

    /// [`super::et_and_counters`] for `N` cells: every loop below runs over the cells
    /// innermost, so the cells' independent chains sit next to each other in the
    /// instruction stream.
    ///
    /// # Safety
    /// The CPU must support AES-NI, PCLMULQDQ, VPCLMULQDQ, AVX-512F/BW, AVX2 and SSE4.1.
    #[target_feature(enable = "aes,vpclmulqdq,pclmulqdq,avx512f,avx512bw,avx2,sse4.1")]
    pub(super) unsafe fn kernel<const N: usize, S: Bodies + ?Sized>(
        lanes: &[Lane<'_>; N],
        cells: &mut S,
    ) -> [Block16; N] {
        // The lanes' bodies (`cells` holds exactly N: checked by the caller).
        assert_eq!(cells.lanes(), N, "one body per lane");
        // The tweaks: all 32 products of a cell unreduced, one reduction per cell. Cell after
        // cell: the cells' chains are independent, so the CPU overlaps them anyway, and one
        // cell's three accumulators stay in registers (all cells' at once spilled).
        let mut mask = [_mm_setzero_si128(); N];
        for c in 0..N {
            let x_r = payload(cells.body(c));
            let mut lo = _mm512_setzero_si512();
            let mut mid = _mm512_setzero_si512();
            let mut hi = _mm512_setzero_si512();
            for k in 0..8 {
                let a = tweak_register(&lanes[c], x_r, k);
                // SAFETY: `tweak_powers` is 512 readable bytes; 4k + 4 <= 32 blocks.
                let p = unsafe {
                    _mm512_loadu_si512(lanes[c].keys.tweak_powers[4 * k..].as_ptr().cast())
                };
                lo = _mm512_xor_si512(lo, _mm512_clmulepi64_epi128::<0x00>(a, p));
                hi = _mm512_xor_si512(hi, _mm512_clmulepi64_epi128::<0x11>(a, p));
                mid = _mm512_ternarylogic_epi64::<0x96>(
                    mid,
                    _mm512_clmulepi64_epi128::<0x01>(a, p),
                    _mm512_clmulepi64_epi128::<0x10>(a, p),
                );
            }
            mask[c] = reduce(fold_lanes(lo), fold_lanes(mid), fold_lanes(hi));
        }
        // ET: AES_KB(X_L ^ mask) ^ mask, the cells' blocks one round apart in the pipeline.
        let mut x = [_mm_setzero_si128(); N];
        for c in 0..N {
            let rk0 = load(&lanes[c].keys.et_round_keys[0]);
            // SAFETY: the body's first 16 bytes are readable; the load is unaligned.
            let x_l = unsafe { _mm_loadu_si128(cells.body(c).as_ptr().cast()) };
            x[c] = _mm_xor_si128(_mm_xor_si128(x_l, mask[c]), rk0);
        }
        for r in 1..10 {
            for c in 0..N {
                x[c] = _mm_aesenc_si128(x[c], load(&lanes[c].keys.et_round_keys[r]));
            }
        }
        // Y_L into the tag half, and POLYVAL(B, Y_L) for the PRF's counters.
        let mut out = [[0u8; 16]; N];
        for c in 0..N {
            let y = _mm_xor_si128(
                _mm_aesenclast_si128(x[c], load(&lanes[c].keys.et_round_keys[10])),
                mask[c],
            );
            // SAFETY: the body's first 16 bytes are writable; the store is unaligned.
            unsafe { _mm_storeu_si128(cells.body_mut(c).as_mut_ptr().cast(), y) };
            out[c] = store(dot(y, load(lanes[c].keys.prf_key)));
        }
        out
    }
}
