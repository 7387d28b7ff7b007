//! Which AES-CTR and POLYVAL implementations CGO runs, chosen once per process, and the
//! keyed POLYVAL for ET tweaks and PRF counters on top of that choice.
//!
//! AES-128 (what C tor 0.4.9 negotiates) takes Fors's own CTR kernels (`aes_ctr::Aes128Ctr`,
//! VAES or AES-NI, same choice and `FORS_AES_IMPL` override as tor1): the PRF's counter is tor1's
//! 128-bit big-endian counter started at a POLYVAL output. POLYVAL takes the widest
//! carry-less multiply the CPU has ([`ClmulImpl`]). Elsewhere, and for AES-256, the `aes` and
//! `polyval` crates run as before; they are also the reference the differential tests compare
//! against. Tests force a narrower choice per thread ([`force`]); `FORS_CGO_POLYVAL` forces the
//! POLYVAL path for a process, for measurement.
#![forbid(unsafe_code)]

use super::polyval_simd::{BlockKey, ClmulImpl, TweakKey, POWERS};
use super::{Block16, BLOCK_LEN, CGO_PAYLOAD_LEN};
use crate::crypto::relay::cpu::{AesImpl, Tor1Engine};
use polyval::universal_hash::UniversalHash;
use polyval::Polyval;
use std::sync::OnceLock;

/// The implementations CGO keys are built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CgoImpls {
    /// AES-128 CTR for the PRF (`Portable`: the `aes` crate through the generic cipher).
    pub(crate) aes: AesImpl,
    /// POLYVAL (`None`: the `polyval` crate).
    pub(crate) polyval: Option<ClmulImpl>,
}

#[cfg(test)]
thread_local! {
    static FORCED: std::cell::Cell<Option<CgoImpls>> = const { std::cell::Cell::new(None) };
}

/// The choice keys made now use: the fastest this CPU runs, or in tests what [`force`] set.
pub(crate) fn chosen() -> CgoImpls {
    #[cfg(test)]
    if let Some(f) = FORCED.with(|c| c.get()) {
        return f;
    }
    static CHOSEN: OnceLock<CgoImpls> = OnceLock::new();
    *CHOSEN.get_or_init(|| CgoImpls {
        aes: Tor1Engine::get().aes,
        polyval: polyval_choice(std::env::var(POLYVAL_OVERRIDE_ENV).ok().as_deref()),
    })
}

/// Forces CGO's POLYVAL path for the process, for measurement: `crate`, `clmul` or
/// `vclmul512` (like `FORS_AES_IMPL` for AES). A value the CPU cannot run or does not know is
/// reported on stderr and ignored.
pub(crate) const POLYVAL_OVERRIDE_ENV: &str = "FORS_CGO_POLYVAL";

/// The POLYVAL path for an override value (`None`: the fastest this CPU runs).
fn polyval_choice(forced: Option<&str>) -> Option<ClmulImpl> {
    let best = ClmulImpl::best();
    let forced = match forced {
        None => return best,
        Some("crate") => return None,
        Some("clmul") => ClmulImpl::Clmul,
        Some("vclmul512") => ClmulImpl::Vclmul512,
        Some(other) => {
            // Once per process, before any cell is handled: not worth a logger handle.
            eprintln!(
                "fors: {POLYVAL_OVERRIDE_ENV}={other} ignored: not crate, clmul or vclmul512"
            );
            return best;
        }
    };
    if forced.supported() {
        Some(forced)
    } else {
        eprintln!("fors: {POLYVAL_OVERRIDE_ENV} ignored: this CPU cannot run {forced:?}");
        best
    }
}

/// Tests only: keys built on this thread from now on use `imps` (`None`: the default).
/// Returns false, changing nothing, if this CPU cannot run `imps`.
#[cfg(test)]
pub(crate) fn force(imps: Option<CgoImpls>) -> bool {
    if let Some(i) = imps {
        let aes_ok = crate::crypto::relay::cpu::CpuFeatures::detect_cached().supports_aes(i.aes);
        if !aes_ok || !i.polyval.is_none_or(ClmulImpl::supported) {
            return false;
        }
    }
    FORCED.with(|c| c.set(imps));
    true
}

/// POLYVAL keyed for ET tweaks `H | command | X_R`.
// Not boxed: a box would be an allocation at every key update (keys are rekeyed in place,
// and a hop's two directions hold one each, so the size is paid twice per circuit, not per
// cell).
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub(super) enum TweakHash {
    Crate(Polyval),
    Clmul(TweakKey),
}

impl TweakHash {
    pub(super) fn new(key: &Block16) -> Self {
        chosen()
            .polyval
            .and_then(|imp| TweakKey::new(key, imp))
            .map_or_else(
                || TweakHash::Crate(Polyval::new(&(*key).into())),
                TweakHash::Clmul,
            )
    }

    /// Replaces the key in place, on the path chosen when this was built.
    pub(super) fn rekey(&mut self, key: &Block16) {
        match self {
            TweakHash::Clmul(k) => k.rekey(key),
            TweakHash::Crate(pv) => *pv = Polyval::new(&(*key).into()),
        }
    }

    /// The key's powers if it runs on VPCLMULQDQ (for [`super::interleave`]).
    #[inline]
    pub(super) fn vclmul512_powers(&self) -> Option<&[Block16; POWERS]> {
        match self {
            TweakHash::Clmul(k) => k.vclmul512_powers(),
            TweakHash::Crate(_) => None,
        }
    }

    /// `POLYVAL(KU, h | cmd | x_r)`, 32 blocks, the last zero-padded, no length block.
    #[inline]
    pub(super) fn tweak(&self, h: &Block16, cmd: u8, x_r: &[u8; CGO_PAYLOAD_LEN]) -> Block16 {
        match self {
            TweakHash::Clmul(k) => k.tweak(h, cmd, x_r),
            TweakHash::Crate(pv) => {
                // Only the second block is assembled; the rest of `X_R` is hashed where it
                // lies (zero-padding its last partial block).
                let mut second = [0u8; BLOCK_LEN];
                second[0] = cmd;
                second[1..].copy_from_slice(&x_r[..BLOCK_LEN - 1]);
                let mut pv = pv.clone();
                pv.update(&[(*h).into(), second.into()]);
                pv.update_padded(&x_r[BLOCK_LEN - 1..]);
                pv.finalize().into()
            }
        }
    }
}

/// POLYVAL keyed for one-block inputs (the PRF's counter).
#[derive(Clone)]
pub(super) enum BlockHash {
    Crate(Polyval),
    Clmul(BlockKey),
}

impl BlockHash {
    pub(super) fn new(key: &Block16) -> Self {
        chosen()
            .polyval
            .and_then(|_| BlockKey::new(key))
            .map_or_else(
                || BlockHash::Crate(Polyval::new(&(*key).into())),
                BlockHash::Clmul,
            )
    }

    /// Replaces the key in place, on the path chosen when this was built.
    pub(super) fn rekey(&mut self, key: &Block16) {
        match self {
            BlockHash::Clmul(k) => k.rekey(key),
            BlockHash::Crate(pv) => *pv = Polyval::new(&(*key).into()),
        }
    }

    /// The key if it runs on PCLMULQDQ (for [`super::interleave`]).
    #[inline]
    pub(super) fn clmul_key(&self) -> Option<&Block16> {
        match self {
            BlockHash::Clmul(k) => Some(k.key()),
            BlockHash::Crate(_) => None,
        }
    }

    /// `POLYVAL(B, x)` for one block.
    #[inline]
    pub(super) fn hash(&self, x: &Block16) -> Block16 {
        match self {
            BlockHash::Clmul(k) => k.hash(x),
            BlockHash::Crate(pv) => {
                let mut pv = pv.clone();
                pv.update(&[(*x).into()]);
                pv.finalize().into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polyval_override_values() {
        assert_eq!(polyval_choice(None), ClmulImpl::best());
        assert_eq!(polyval_choice(Some("crate")), None);
        assert_eq!(polyval_choice(Some("nonsense")), ClmulImpl::best());
        for (name, imp) in [
            ("clmul", ClmulImpl::Clmul),
            ("vclmul512", ClmulImpl::Vclmul512),
        ] {
            let want = if imp.supported() {
                Some(imp)
            } else {
                ClmulImpl::best()
            };
            assert_eq!(polyval_choice(Some(name)), want, "{name}");
        }
    }
}
