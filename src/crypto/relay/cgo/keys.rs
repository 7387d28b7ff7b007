//! CGO key material as read from a circuit handshake's key stream (proposal 359 "Key
//! derivation"; C tor `cgo_key_material_len`, `relay_crypto_init`).
//!
//! Per direction: the UIV+ keys `J = (KB, KU)` and `S = (K, B)`, then the initial nonce `N`;
//! the forward direction (away from the client) comes first. With AES-128 that is
//! `(16 + 16) * 2 + 16 = 80` bytes per direction, 160 for both, and ntor-v3 then yields the
//! 20-byte `KH` as it does for tor1.
#![forbid(unsafe_code)]

use crate::crypto::handshake::kdf::ShakeReader;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Bytes of one direction's key material with AES-128: J (32), S (32), N (16).
pub const CGO_AES128_DIRECTION_LEN: usize = 80;

/// Bytes of CGO key material (both directions) with AES-128, the variant C tor 0.4.9 runs.
pub const CGO_AES128_KEY_MATERIAL_LEN: usize = 2 * CGO_AES128_DIRECTION_LEN;

/// Key material has the wrong length for the chosen AES variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("CGO key material for one direction must be {expected} bytes, got {got}")]
pub struct CgoKeyError {
    /// The length the AES variant needs.
    pub expected: usize,
    /// The length given.
    pub got: usize,
}

/// AES-128 CGO keys for one hop, plus the handshake's KH.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct CgoKeyMaterial {
    /// Forward direction (away from the client): J | S | N.
    pub forward: [u8; CGO_AES128_DIRECTION_LEN],
    /// Backward direction (toward the client): J | S | N.
    pub backward: [u8; CGO_AES128_DIRECTION_LEN],
    /// The 20 bytes after the relay keys (KH, used by onion-service rendezvous).
    pub kh: [u8; 20],
}

impl CgoKeyMaterial {
    /// Length of the key stream this reads: 160 bytes of CGO keys, then KH.
    pub const STREAM_LEN: usize = CGO_AES128_KEY_MATERIAL_LEN + 20;

    /// Reads the keys from the start of an ntor-v3 key stream (after the handshake took
    /// what it needs), in the order C tor reads them.
    pub fn from_stream(stream: &mut ShakeReader) -> Self {
        let mut k = [0u8; Self::STREAM_LEN];
        stream.read(&mut k);
        let out = Self::from_bytes(&k);
        k.zeroize();
        out
    }

    /// Splits [`Self::STREAM_LEN`] bytes of key stream.
    pub fn from_bytes(k: &[u8; Self::STREAM_LEN]) -> Self {
        let mut m = CgoKeyMaterial {
            forward: [0; CGO_AES128_DIRECTION_LEN],
            backward: [0; CGO_AES128_DIRECTION_LEN],
            kh: [0; 20],
        };
        let (f, rest) = k.split_at(CGO_AES128_DIRECTION_LEN);
        let (b, kh) = rest.split_at(CGO_AES128_DIRECTION_LEN);
        m.forward.copy_from_slice(f);
        m.backward.copy_from_slice(b);
        m.kh.copy_from_slice(kh);
        m
    }
}

impl std::fmt::Debug for CgoKeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CgoKeyMaterial { .. }")
    }
}
