//! Run-time CPU feature detection and the one-time choice of AES and SHA-1 implementations.
//!
//! The choice is made once per process from the CPU's features ([`Tor1Engine::get`]). Which
//! SHA-1 strategy wins was measured (see `bench/RESULTS.md`): on Zen 4 a full 16-lane AVX-512
//! pass costs about a third of SHA-NI per cell and even the 8-lane AVX2 kernel half, so across
//! circuits multi-buffer wins once a group holds a few circuits. A single circuit's running
//! digest is sequential and stays on SHA-NI.

use std::sync::OnceLock;

/// An AES-128-CTR keystream implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AesImpl {
    /// The `aes` crate (itself AES-NI accelerated when available), counter handled here.
    Portable,
    /// AES-NI, eight blocks interleaved.
    AesNi,
    /// VAES on 512-bit registers: four blocks per register, sixteen in flight.
    Vaes512,
}

/// A single-stream SHA-1 compression implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sha1Impl {
    /// Scalar Rust.
    Portable,
    /// The SHA-NI instructions.
    ShaNi,
}

/// How the running digests of many circuits are advanced together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sha1MultiImpl {
    /// One circuit after another with a single-stream implementation.
    OneByOne(Sha1Impl),
    /// Eight circuits in the 32-bit lanes of AVX2 registers.
    Avx2x8,
    /// Sixteen circuits in the 32-bit lanes of AVX-512 registers.
    Avx512x16,
}

impl Sha1MultiImpl {
    /// SIMD lanes per group (1 when circuits are hashed one at a time).
    pub fn lanes(self) -> usize {
        match self {
            Sha1MultiImpl::OneByOne(_) => 1,
            Sha1MultiImpl::Avx2x8 => 8,
            Sha1MultiImpl::Avx512x16 => 16,
        }
    }
}

/// The CPU features relay crypto cares about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuFeatures {
    /// AES-NI (with SSSE3 for byte shuffles).
    pub aes_ni: bool,
    /// VAES usable on 512-bit registers (needs AVX-512F).
    pub vaes512: bool,
    /// SHA-NI (with SSE4.1 / SSSE3).
    pub sha_ni: bool,
    /// AVX2.
    pub avx2: bool,
    /// AVX-512 F + BW + VL.
    pub avx512: bool,
}

impl CpuFeatures {
    /// Probes the running CPU.
    #[cfg(target_arch = "x86_64")]
    pub fn detect() -> Self {
        let ssse3 = is_x86_feature_detected!("ssse3");
        let sse41 = is_x86_feature_detected!("sse4.1");
        let avx512 = is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl");
        let aes_ni = is_x86_feature_detected!("aes") && ssse3 && sse41;
        CpuFeatures {
            aes_ni,
            vaes512: aes_ni && avx512 && is_x86_feature_detected!("vaes"),
            sha_ni: is_x86_feature_detected!("sha") && ssse3 && sse41,
            avx2: is_x86_feature_detected!("avx2"),
            avx512,
        }
    }

    /// Probes the running CPU (nothing accelerated off x86-64).
    #[cfg(not(target_arch = "x86_64"))]
    pub fn detect() -> Self {
        CpuFeatures {
            aes_ni: false,
            vaes512: false,
            sha_ni: false,
            avx2: false,
            avx512: false,
        }
    }

    /// [`CpuFeatures::detect`], probed once per process.
    pub fn detect_cached() -> &'static CpuFeatures {
        &Tor1Engine::get().features
    }

    /// Whether `imp` can run on this CPU.
    pub fn supports_aes(&self, imp: AesImpl) -> bool {
        match imp {
            AesImpl::Portable => true,
            AesImpl::AesNi => self.aes_ni,
            AesImpl::Vaes512 => self.vaes512,
        }
    }

    /// Whether `imp` can run on this CPU.
    pub fn supports_sha1(&self, imp: Sha1Impl) -> bool {
        match imp {
            Sha1Impl::Portable => true,
            Sha1Impl::ShaNi => self.sha_ni,
        }
    }

    /// Whether `imp` can run on this CPU.
    pub fn supports_sha1_multi(&self, imp: Sha1MultiImpl) -> bool {
        match imp {
            Sha1MultiImpl::OneByOne(s) => self.supports_sha1(s),
            Sha1MultiImpl::Avx2x8 => self.avx2,
            Sha1MultiImpl::Avx512x16 => self.avx512,
        }
    }

    /// Every AES implementation this CPU can run (for tests and benchmarks).
    pub fn aes_impls(&self) -> Vec<AesImpl> {
        [AesImpl::Portable, AesImpl::AesNi, AesImpl::Vaes512]
            .into_iter()
            .filter(|i| self.supports_aes(*i))
            .collect()
    }

    /// Every single-stream SHA-1 implementation this CPU can run.
    pub fn sha1_impls(&self) -> Vec<Sha1Impl> {
        [Sha1Impl::Portable, Sha1Impl::ShaNi]
            .into_iter()
            .filter(|i| self.supports_sha1(*i))
            .collect()
    }

    /// Every multi-circuit SHA-1 strategy this CPU can run.
    pub fn sha1_multi_impls(&self) -> Vec<Sha1MultiImpl> {
        [
            Sha1MultiImpl::OneByOne(Sha1Impl::Portable),
            Sha1MultiImpl::OneByOne(Sha1Impl::ShaNi),
            Sha1MultiImpl::Avx2x8,
            Sha1MultiImpl::Avx512x16,
        ]
        .into_iter()
        .filter(|i| self.supports_sha1_multi(*i))
        .collect()
    }
}

/// The implementations relay crypto uses in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tor1Engine {
    /// What the CPU offers.
    pub features: CpuFeatures,
    /// AES-128-CTR keystream.
    pub aes: AesImpl,
    /// SHA-1 for one circuit's run of cells (a running digest is inherently sequential).
    pub sha1: Sha1Impl,
    /// SHA-1 across circuits.
    pub sha1_multi: Sha1MultiImpl,
    /// Below this many circuits in a group, hashing one at a time with `sha1` is cheaper than a
    /// half-empty multi-buffer pass.
    pub multi_min_lanes: usize,
}

impl Tor1Engine {
    /// Picks the fastest implementations for `features` (measurements in `bench/RESULTS.md`).
    pub fn choose(features: CpuFeatures) -> Self {
        let aes = if features.vaes512 {
            AesImpl::Vaes512
        } else if features.aes_ni {
            AesImpl::AesNi
        } else {
            AesImpl::Portable
        };
        let sha1 = if features.sha_ni {
            Sha1Impl::ShaNi
        } else {
            Sha1Impl::Portable
        };
        let (sha1_multi, multi_min_lanes) = if features.avx512 {
            let min = if features.sha_ni {
                AVX512_MIN_LANES_VS_SHANI
            } else {
                2
            };
            (Sha1MultiImpl::Avx512x16, min)
        } else if features.avx2 {
            let min = if features.sha_ni {
                AVX2_MIN_LANES_VS_SHANI
            } else {
                2
            };
            (Sha1MultiImpl::Avx2x8, min)
        } else {
            (Sha1MultiImpl::OneByOne(sha1), 1)
        };
        Tor1Engine {
            features,
            aes,
            sha1,
            sha1_multi,
            multi_min_lanes,
        }
    }

    /// The process-wide choice, made on first use.
    pub fn get() -> &'static Tor1Engine {
        static ENGINE: OnceLock<Tor1Engine> = OnceLock::new();
        ENGINE.get_or_init(|| Tor1Engine::choose(CpuFeatures::detect()))
    }
}

/// Fewest circuits for which one multi-buffer pass beats SHA-NI one circuit at a time. Measured
/// on Zen 4 (`fors bench-crypto`, `sha1_cell_ns`; see `bench/RESULTS.md`): SHA-NI ≈ 330 ns per
/// cell; a group of ≤ 8 runs the 8-lane AVX-512VL kernel at ≈ 930 ns per pass (break-even 2.8
/// circuits); the 8-lane AVX2 kernel costs ≈ 1400 ns per pass (break-even 4.2 circuits).
const AVX512_MIN_LANES_VS_SHANI: usize = 3;
/// See [`AVX512_MIN_LANES_VS_SHANI`].
const AVX2_MIN_LANES_VS_SHANI: usize = 5;
