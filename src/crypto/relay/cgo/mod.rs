//! Counter Galois Onion (CGO) relay crypto: proposal 359, tor-spec "Relay cryptography: CGO";
//! C tor 0.4.9 `relay_crypto_cgo.c` is the interoperability reference.
//!
//! CGO replaces tor1's AES-CTR + running SHA-1 with the UIV+ wide-block construction over
//! a 509-byte cell body, split into a 16-byte left half (the tag) and a 493-byte right half:
//! * [`et`]: ET, an LRW2 tweakable block cipher: `AES_K(M ^ POLYVAL(KU, T)) ^ POLYVAL(KU, T)`,
//!   with the tweak `T = H | command | X_R` (510 bytes);
//! * [`prf`]: PRF, AES-CTR started at `POLYVAL(B, input)` with its low six bits cleared;
//!   offset 0 masks the right half, offset 31 blocks yields new keys;
//! * [`uiv`]: UIV+ = ET on the left half tweaked by the right half, then the PRF of the new left
//!   half over the right half; its key update derives fresh keys and nonce from the PRF.
//!
//! On top, each direction of a hop keeps the UIV+ keys, a nonce `N` and the chained tag `T'`
//! ([`CgoRelayDirection`]). A relay always *encrypts* with UIV+ (encryption is the
//! tagging-resistant direction), so forwarding a cell toward the exit, relaying one toward the
//! client, and originating one are all encryptions; a cell is for this hop when its new tag
//! equals `N`, and each originated or recognized cell updates the keys (forward secrecy).
//!
//! Sans-IO and allocation-free per cell: every operation works in place on caller-owned
//! [`CellBody`] buffers; the batched entry points ([`CgoRelayCrypto::forward_batch`],
//! [`forward_multi`], [`originate_multi`], ...) take several cells of one or of many circuits
//! per call. With AES-128 the PRF's keystream comes from Fors's own AES-CTR kernels (VAES or
//! AES-NI, [`super::aes_ctr`]) and POLYVAL from [`polyval_simd`] (PCLMULQDQ or VPCLMULQDQ,
//! all 32 tweak blocks per reduction), chosen once per process ([`imp`]), and ET's one AES
//! block from Fors's AES-NI code; AES-256 and CPUs without those instructions use the `aes`
//! and `polyval` crates.
//! The `*_multi` calls (states in one slice) and the `*_group` calls (states lent one per
//! cell, as the relay's read path lends them from its circuit table: [`forward_group`],
//! [`backward_relay_group`], [`originate_group`]) run the ET halves and PRF counters of up to
//! four cells of distinct circuits in one interleaved kernel ([`interleave`]) where the CPU has
//! AES-NI and VPCLMULQDQ ([`group_kernel_available`]).
//!
//! C tor 0.4.9 runs CGO with AES-128 ([`CgoRelayCrypto128`]); AES-256 is implemented too
//! ([`CgoRelayCrypto256`]) since the construction is defined for both.
// `deny` rather than `forbid` so that `polyval_simd` and `interleave` alone may allow it for
// their intrinsics;
// every other file here forbids it itself.
#![deny(unsafe_code)]

mod et;
mod imp;
mod interleave;
mod keys;
mod polyval_simd;
mod prf;
mod relay;
mod uiv;

#[cfg(test)]
mod client;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod vector_types;
#[cfg(test)]
#[path = "testdata/vectors.rs"]
mod vectors;

pub use keys::{CgoKeyError, CgoKeyMaterial, CGO_AES128_KEY_MATERIAL_LEN};
pub use relay::{
    backward_relay_group, backward_relay_multi, forward_group, forward_multi,
    group_kernel_available, originate_group, originate_multi, CgoAes, CgoRelayCrypto,
    CgoRelayCrypto128, CgoRelayCrypto256, CgoRelayDirection, GroupDone, CGO_GROUP,
};

use super::{CellBody, CELL_BODY_LEN};

/// Length of the CGO tag (the left half of the body, and the SENDME v1 tag for CGO).
pub const CGO_TAG_LEN: usize = 16;

/// Length of the right half of the body: everything after the tag.
pub const CGO_PAYLOAD_LEN: usize = CELL_BODY_LEN - CGO_TAG_LEN;

/// POLYVAL and AES block length.
const BLOCK_LEN: usize = 16;

/// A 16-byte block.
type Block16 = [u8; BLOCK_LEN];

/// A keyed 128-bit block cipher (AES-128 or AES-256, encrypt or decrypt schedule).
pub trait Cipher16:
    aes::cipher::KeyInit + aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>
{
}
impl<
        C: aes::cipher::KeyInit + aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>,
    > Cipher16 for C
{
}

/// Splits a body into its tag (left) and payload (right) halves.
#[inline]
fn split_body(body: &mut CellBody) -> (&mut Block16, &mut [u8; CGO_PAYLOAD_LEN]) {
    let (l, r) = body.split_at_mut(CGO_TAG_LEN);
    // Both lengths are fixed by the types above; these conversions cannot fail.
    (
        l.try_into().expect("tag half is 16 bytes"),
        r.try_into().expect("payload half is 493 bytes"),
    )
}

/// Overwrites a per-cell buffer that held key material with zeros. One wide store per 64
/// bytes, kept by `black_box` (the buffer escapes, so the stores cannot be dropped as dead);
/// `zeroize`'s volatile writes go one byte at a time, which cost more than a key update's
/// AES key schedules on every originated cell.
#[inline]
fn wipe<const N: usize>(buf: &mut [u8; N]) {
    *buf = [0; N];
    std::hint::black_box(buf);
}

#[inline]
fn xor_block(out: &mut Block16, m: &Block16) {
    for (o, x) in out.iter_mut().zip(m) {
        *o ^= x;
    }
}
