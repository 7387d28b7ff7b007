//! Run-time CPU feature detection and the one-time choice of AES and SHA-1 implementations.
//!
//! The choice is made once per process from the CPU's features ([`Tor1Engine::get`]). Which
//! SHA-1 strategy wins was measured (see `bench/RESULTS.md`): on Zen 4 a full 16-lane AVX-512
//! pass costs about a third of SHA-NI per cell and even the 8-lane AVX2 kernel half, so across
//! circuits multi-buffer wins once a group holds a few circuits. A single circuit's running
//! digest is sequential and stays on SHA-NI.
//!
//! AES-128-CTR, measured per 509-byte cell (`aes_ctr_cell_ns`, `bench/RESULTS.md`): VAES on
//! 512-bit registers where AVX-512F is present; else VAES on 256-bit registers where AVX2 +
//! VAES are (Zen 3, Intel client cores since Ice Lake / Alder Lake); else AES-NI; else the
//! portable `aes` crate. Zen 4 runs 512-bit VAES as two 256-bit halves, yet the 512-bit kernel
//! measured no slower for a single cell (≈ 28.3 against 28.6 ns on Zen 4) and faster on runs of
//! cells (`forward_batch`: ≈ 22.5 against 25.3 ns per cell; ≈ 0.043 against 0.048 ns per byte
//! on long inputs): the same blocks in half as many instructions. Both are more than twice as
//! fast as AES-NI (≈ 63 ns per cell).
//!
//! `FORS_AES_IMPL` (`portable`, `aes_ni`, `vaes256`, `vaes512`) forces the AES path for the
//! process, for testing and measurement; a value the CPU cannot run or does not know is reported
//! on stderr and ignored.

use std::sync::OnceLock;

/// An AES-128-CTR keystream implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AesImpl {
    /// The `aes` crate (itself AES-NI accelerated when available), counter handled here.
    Portable,
    /// AES-NI, eight blocks interleaved.
    AesNi,
    /// VAES on 256-bit registers (AVX2 + VAES, no AVX-512 needed): two blocks per register,
    /// sixteen in flight.
    Vaes256,
    /// VAES on 512-bit registers: four blocks per register, sixteen in flight.
    Vaes512,
}

impl AesImpl {
    /// Every implementation, slowest first.
    pub const ALL: [AesImpl; 4] = [
        AesImpl::Portable,
        AesImpl::AesNi,
        AesImpl::Vaes256,
        AesImpl::Vaes512,
    ];

    /// The implementation's name in `bench-crypto` output and `FORS_AES_IMPL`.
    pub fn name(self) -> &'static str {
        match self {
            AesImpl::Portable => "portable",
            AesImpl::AesNi => "aes_ni",
            AesImpl::Vaes256 => "vaes256",
            AesImpl::Vaes512 => "vaes512",
        }
    }

    /// The implementation called `name` (see [`AesImpl::name`]).
    pub fn from_name(name: &str) -> Option<AesImpl> {
        AesImpl::ALL.into_iter().find(|i| i.name() == name)
    }
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
    /// VAES usable on 256-bit registers: VAES + AVX2 + AES-NI, independent of AVX-512.
    pub vaes256: bool,
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
        let vaes = is_x86_feature_detected!("vaes");
        let avx2 = is_x86_feature_detected!("avx2");
        CpuFeatures {
            aes_ni,
            vaes256: aes_ni && avx2 && vaes,
            vaes512: aes_ni && avx512 && vaes,
            sha_ni: is_x86_feature_detected!("sha") && ssse3 && sse41,
            avx2,
            avx512,
        }
    }

    /// Probes the running CPU (nothing accelerated off x86-64).
    #[cfg(not(target_arch = "x86_64"))]
    pub fn detect() -> Self {
        CpuFeatures {
            aes_ni: false,
            vaes256: false,
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
            AesImpl::Vaes256 => self.vaes256,
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
        AesImpl::ALL
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
        // Vaes512 ahead of Vaes256 where both run: measured faster per cell (module docs).
        let aes = if features.vaes512 {
            AesImpl::Vaes512
        } else if features.vaes256 {
            AesImpl::Vaes256
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

    /// [`Tor1Engine::choose`], with the AES path replaced by `aes_override` (a value of
    /// `FORS_AES_IMPL`) when the CPU can run it.
    pub fn choose_with_override(
        features: CpuFeatures,
        aes_override: Option<&str>,
    ) -> Result<Self, AesOverrideError> {
        let mut e = Tor1Engine::choose(features);
        if let Some(name) = aes_override {
            let imp = AesImpl::from_name(name)
                .ok_or_else(|| AesOverrideError::Unknown(name.to_string()))?;
            if !features.supports_aes(imp) {
                return Err(AesOverrideError::Unsupported(imp));
            }
            e.aes = imp;
        }
        Ok(e)
    }

    /// The process-wide choice, made on first use (honouring `FORS_AES_IMPL`).
    pub fn get() -> &'static Tor1Engine {
        static ENGINE: OnceLock<Tor1Engine> = OnceLock::new();
        ENGINE.get_or_init(|| {
            let features = CpuFeatures::detect();
            let forced = std::env::var(AES_OVERRIDE_ENV).ok();
            match Tor1Engine::choose_with_override(features, forced.as_deref()) {
                Ok(e) => e,
                Err(err) => {
                    // Once per process, before any cell is handled: not worth a logger handle.
                    eprintln!("fors: {AES_OVERRIDE_ENV} ignored: {err}");
                    Tor1Engine::choose(features)
                }
            }
        })
    }
}

/// Environment variable that forces the AES-128-CTR implementation (see [`AesImpl::name`]).
pub const AES_OVERRIDE_ENV: &str = "FORS_AES_IMPL";

/// Why a forced AES implementation was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AesOverrideError {
    /// The name is none of [`AesImpl::name`]'s.
    #[error("unknown AES implementation {0:?} (portable, aes_ni, vaes256, vaes512)")]
    Unknown(String),
    /// This CPU lacks the instructions.
    #[error("this CPU cannot run {0:?}")]
    Unsupported(AesImpl),
}

/// Fewest circuits for which one multi-buffer pass beats SHA-NI one circuit at a time. Measured
/// on Zen 4 (`fors bench-crypto`, `sha1_cell_ns`; see `bench/RESULTS.md`): SHA-NI ≈ 330 ns per
/// cell; a group of ≤ 8 runs the 8-lane AVX-512VL kernel at ≈ 930 ns per pass (break-even 2.8
/// circuits); the 8-lane AVX2 kernel costs ≈ 1400 ns per pass (break-even 4.2 circuits).
const AVX512_MIN_LANES_VS_SHANI: usize = 3;
/// See [`AVX512_MIN_LANES_VS_SHANI`].
const AVX2_MIN_LANES_VS_SHANI: usize = 5;

#[cfg(test)]
mod tests {
    use super::*;

    /// A CPU with exactly the listed capabilities (the derived flags set as `detect` would).
    fn cpu(aes_ni: bool, avx2: bool, avx512: bool, vaes: bool) -> CpuFeatures {
        CpuFeatures {
            aes_ni,
            vaes256: aes_ni && avx2 && vaes,
            vaes512: aes_ni && avx512 && vaes,
            sha_ni: false,
            avx2,
            avx512,
        }
    }

    #[test]
    fn aes_choice_per_cpu_class() {
        // Zen 3, Intel client cores since Ice Lake / Alder Lake: AVX2 + VAES, no AVX-512.
        assert_eq!(
            Tor1Engine::choose(cpu(true, true, false, true)).aes,
            AesImpl::Vaes256
        );
        // Zen 4 / Sapphire Rapids: both VAES widths run; 512-bit measured faster per cell.
        assert_eq!(
            Tor1Engine::choose(cpu(true, true, true, true)).aes,
            AesImpl::Vaes512
        );
        // AVX-512 + VAES without AVX2 does not exist in silicon; 512-bit VAES needs no AVX2.
        assert_eq!(
            Tor1Engine::choose(cpu(true, false, true, true)).aes,
            AesImpl::Vaes512
        );
        // Haswell..Comet Lake, Zen 1/2: AES-NI only.
        assert_eq!(
            Tor1Engine::choose(cpu(true, true, false, false)).aes,
            AesImpl::AesNi
        );
        assert_eq!(
            Tor1Engine::choose(cpu(true, true, true, false)).aes,
            AesImpl::AesNi
        );
        // No AES-NI: VAES alone is not usable (the key schedule and tails need AES-NI).
        assert_eq!(
            Tor1Engine::choose(cpu(false, true, true, true)).aes,
            AesImpl::Portable
        );
        assert_eq!(
            Tor1Engine::choose(cpu(false, false, false, false)).aes,
            AesImpl::Portable
        );
    }

    #[test]
    fn aes_impls_listed_per_cpu_class() {
        assert_eq!(
            cpu(true, true, false, true).aes_impls(),
            [AesImpl::Portable, AesImpl::AesNi, AesImpl::Vaes256]
        );
        assert_eq!(cpu(true, true, true, true).aes_impls(), AesImpl::ALL);
        assert_eq!(
            cpu(false, true, true, true).aes_impls(),
            [AesImpl::Portable]
        );
    }

    #[test]
    fn aes_override_is_checked_against_the_cpu() {
        let zen3 = cpu(true, true, false, true);
        let forced = |name| Tor1Engine::choose_with_override(zen3, Some(name)).map(|e| e.aes);
        assert_eq!(forced("aes_ni"), Ok(AesImpl::AesNi));
        assert_eq!(forced("portable"), Ok(AesImpl::Portable));
        assert_eq!(forced("vaes256"), Ok(AesImpl::Vaes256));
        assert_eq!(
            forced("vaes512"),
            Err(AesOverrideError::Unsupported(AesImpl::Vaes512))
        );
        assert_eq!(
            forced("VAES"),
            Err(AesOverrideError::Unknown("VAES".to_string()))
        );
        assert_eq!(
            Tor1Engine::choose_with_override(zen3, None),
            Ok(Tor1Engine::choose(zen3))
        );
        for imp in AesImpl::ALL {
            assert_eq!(AesImpl::from_name(imp.name()), Some(imp));
        }
    }
}
