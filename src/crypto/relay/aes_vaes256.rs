//! The AES-128-CTR keystream kernel for CPUs with VAES and AVX2, with or without AVX-512
//! (AMD Zen 3 and later, Intel client cores since Ice Lake): VAES on 256-bit registers, two
//! blocks per register, eight registers (sixteen blocks) in flight.
//!
//! Counters are 128-bit big-endian as tor1 uses them (tor-spec "Relay cells"); [`super::aes_ctr`]
//! keeps the stream position and the partial block between calls.

use std::arch::x86_64::*;

/// Byte reversal of each 128-bit lane: turns (low u64, high u64) little-endian counters into
/// big-endian counter blocks.
const BSWAP128: [u8; 16] = [15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0];

/// Registers per iteration. VAES on a 256-bit register has a latency of about four cycles and
/// Zen 3 / Zen 4 / Ice Lake issue one or two per cycle, so eight independent registers keep the
/// AES units busy; with the counter, the byte-swap mask and a round key this still fits in the
/// sixteen ymm registers AVX2 has.
const REGS: usize = 8;
/// Bytes of keystream per iteration.
const STRIDE: usize = 32 * REGS;

/// XORs keystream for counters (hi:lo), (hi:lo+1), ... into `data` (any length) and returns
/// the keystream block that covered the last (possibly partial) block; when `data` is a
/// multiple of [`STRIDE`] bytes the return value is unused by the caller and is zero.
///
/// The counter addition is on the low 64 bits only: the caller ensures `lo` does not wrap.
///
/// # Safety
/// The CPU must support AVX2, VAES and AES-NI.
#[target_feature(enable = "avx2,vaes,aes")]
pub(super) unsafe fn xor_keystream(
    rk: &[[u8; 16]; 11],
    lo: u64,
    hi: u64,
    data: &mut [u8],
) -> [u8; 16] {
    // Round keys are broadcast from memory where used rather than held in eleven registers next
    // to eight blocks: with only sixteen ymm registers LLVM would otherwise keep the keys and
    // run the blocks one after another, each a chain of dependent AESENCs.
    macro_rules! key {
        ($i:expr) => {
            _mm256_broadcastsi128_si256(_mm_loadu_si128(rk[$i].as_ptr().cast()))
        };
    }
    // Eight registers of counter blocks whitened with round key 0; `ctr` advances by 16 blocks.
    macro_rules! whitened {
        ($ctr:ident, $bswap:ident) => {{
            let k0 = key!(0);
            let mut b = [_mm256_setzero_si256(); REGS];
            for x in b.iter_mut() {
                *x = _mm256_xor_si256(_mm256_shuffle_epi8($ctr, $bswap), k0);
                $ctr = _mm256_add_epi64($ctr, _mm256_set_epi64x(0, 2, 0, 2));
            }
            b
        }};
    }
    // Rounds 1..9, round-major. `black_box` on each round key's address keeps its load in
    // place (LLVM cannot hoist it out of the loop into a register), which is what keeps the
    // eight registers interleaved; measured 39 → 34 ns per cell on Zen 4.
    macro_rules! rounds {
        ($b:ident) => {
            for r in &rk[1..10] {
                let r = std::hint::black_box(r);
                let k = _mm256_broadcastsi128_si256(_mm_loadu_si128(r.as_ptr().cast()));
                for x in $b.iter_mut() {
                    *x = _mm256_aesenc_epi128(*x, k);
                }
            }
        };
    }
    let bswap = _mm256_broadcastsi128_si256(_mm_loadu_si128(BSWAP128.as_ptr().cast()));
    // Two consecutive counters per register, as (low, high) qword pairs.
    let mut ctr = _mm256_add_epi64(
        _mm256_broadcastsi128_si256(_mm_set_epi64x(hi as i64, lo as i64)),
        _mm256_set_epi64x(0, 1, 0, 0),
    );
    // Raw pointer arithmetic rather than `chunks_exact_mut`: the tail below reaches back into
    // bytes before the remainder.
    let total = data.len();
    let p = data.as_mut_ptr();
    let mut off = 0;
    while total - off >= STRIDE {
        let mut b = whitened!(ctr, bswap);
        rounds!(b);
        for (i, x) in b.iter().enumerate() {
            let ks = _mm256_aesenclast_epi128(*x, key!(10));
            // off + STRIDE <= total, so 32 bytes at off + 32 * i (i < REGS) are inside `data`.
            let q = p.add(off + 32 * i);
            _mm256_storeu_si256(q.cast(), _mm256_xor_si256(_mm256_loadu_si256(q.cast()), ks));
        }
        off += STRIDE;
    }
    let len = total - off;
    if len == 0 {
        return [0u8; 16];
    }
    // All eight registers go through the rounds even if fewer are needed: a cell (509 bytes,
    // 253 or so after one full iteration) needs all of them, and a variable-length loop here
    // would keep the blocks in memory.
    let mut b = whitened!(ctr, bswap);
    rounds!(b);
    let k10 = key!(10);
    for x in b.iter_mut() {
        *x = _mm256_aesenclast_epi128(*x, k10);
    }
    // Without this, LLVM sinks each register's rounds into the `if` below that stores it, and
    // the eight registers then run one after another (measured ≈ 5 ns more per cell on Zen 4).
    // SAFETY: an empty instruction string: it only makes the eight values opaque to LLVM, so
    // they are computed together here; it touches no memory, stack or flags.
    core::arch::asm!(
        "/* {0} {1} {2} {3} {4} {5} {6} {7} */",
        inout(ymm_reg) b[0],
        inout(ymm_reg) b[1],
        inout(ymm_reg) b[2],
        inout(ymm_reg) b[3],
        inout(ymm_reg) b[4],
        inout(ymm_reg) b[5],
        inout(ymm_reg) b[6],
        inout(ymm_reg) b[7],
        options(nomem, nostack, preserves_flags)
    );
    let part = len % 32;
    // The partial piece (if any) is written through the last 32 bytes of `data`: XORed with
    // 32 − part zero bytes then its keystream. That is a partial store without AVX-512 byte
    // masks and without a branch per length (a cell stream's tail length cycles through
    // sixteen values, so such branches mispredict). The bytes before the piece are rewritten
    // unchanged, so the last whole register's data is loaded before that store and stored after
    // it: no load waits on a partly overlapping earlier store, and the later store wins.
    let window = part != 0 && total >= 32;
    macro_rules! window_store {
        ($ks:expr) => {{
            let w = p.add(total - 32);
            let wd = _mm256_loadu_si256(w.cast());
            _mm256_storeu_si256(
                w.cast(),
                _mm256_xor_si256(wd, shift_up_bytes($ks, 32 - part)),
            );
        }};
    }
    // Per register, written out: constant indices keep `b` in registers (a loop over the
    // pieces of the remainder indexes it at run time, and LLVM spills all eight).
    let mut last = _mm256_setzero_si256();
    macro_rules! tail_reg {
        ($i:literal) => {
            if 32 * $i < len {
                last = b[$i];
            }
            if 32 * ($i + 1) <= len {
                // 32 bytes at off + 32 * i are inside `data` (checked just above).
                let q = p.add(off + 32 * $i);
                let v = _mm256_xor_si256(_mm256_loadu_si256(q.cast()), b[$i]);
                if window && 32 * ($i + 2) > len {
                    // The partial piece is register i + 1 (so i < 7: len < 256).
                    window_store!(b[($i + 1) % REGS]);
                }
                _mm256_storeu_si256(q.cast(), v);
            }
        };
    }
    tail_reg!(0);
    tail_reg!(1);
    tail_reg!(2);
    tail_reg!(3);
    tail_reg!(4);
    tail_reg!(5);
    tail_reg!(6);
    tail_reg!(7);
    if part != 0 && len < 32 {
        // No whole register before the piece.
        if window {
            window_store!(b[0]);
        } else {
            let mut bytes = [0u8; 32];
            _mm256_storeu_si256(bytes.as_mut_ptr().cast(), b[0]);
            // `data` is `total` < 32 bytes, all of them the partial piece.
            for (x, k) in data.iter_mut().zip(bytes) {
                *x ^= k;
            }
        }
    }
    // The keystream block covering the last byte of `data`, picked without a branch (which
    // lane it is cycles with a cell stream's tail length, so a branch mispredicts) and without
    // a trip through memory (the next call starts with this block, and a store forward from the
    // upper half fails on Zen 4): a dword permute by 0..3 or 4..7.
    let upper = (((len - 1) % 32) >> 4) as i32 * 4;
    let pick = _mm256_add_epi32(
        _mm256_set1_epi32(upper),
        _mm256_set_epi32(3, 2, 1, 0, 3, 2, 1, 0),
    );
    let block = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(last, pick));
    let mut out = [0u8; 16];
    _mm_storeu_si128(out.as_mut_ptr().cast(), block);
    out
}

/// Shuffle-control source for [`shift_up_bytes`]: byte k is k − 32 for 32 ≤ k < 48, else 0x80
/// (which makes PSHUFB write zero). A 16-byte window of it at a shift-dependent offset is the
/// control for one 128-bit lane.
const SHIFT_CTRL: [u8; 64] = {
    let mut t = [0x80u8; 64];
    let mut k = 32;
    while k < 48 {
        t[k] = (k - 32) as u8;
        k += 1;
    }
    t
};

/// `x` moved up by `s` (1..=31) bytes across the whole 256-bit register, zeros shifted in:
/// byte j of the result is byte j − s of `x`. AVX2 has no variable full-width byte shift, so:
/// each lane shifted in place, plus the low lane moved into the high one and shifted, both
/// with PSHUFB controls read from [`SHIFT_CTRL`].
#[target_feature(enable = "avx2")]
fn shift_up_bytes(x: __m256i, s: usize) -> __m256i {
    debug_assert!((1..32).contains(&s));
    let s = s.clamp(1, 31);
    // SAFETY: 1 <= s <= 31, so both 16-byte reads (at 32 − s and 48 − s) end at byte 62 at
    // most, inside the 64-byte table.
    let (in_lane, across) = unsafe {
        let t = SHIFT_CTRL.as_ptr();
        (
            _mm256_broadcastsi128_si256(_mm_loadu_si128(t.add(32 - s).cast())),
            _mm256_broadcastsi128_si256(_mm_loadu_si128(t.add(48 - s).cast())),
        )
    };
    // [0 | low lane of x]: the low lane's bytes that land in the high lane.
    let low_up = _mm256_permute2x128_si256::<0x08>(x, x);
    _mm256_or_si256(
        _mm256_shuffle_epi8(x, in_lane),
        _mm256_shuffle_epi8(low_up, across),
    )
}
