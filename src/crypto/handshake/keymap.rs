//! The relay's curve25519 ntor onion keys, looked up by the KEYID a client names.
//!
//! C tor keeps the current key and the previous one (valid for `onion-key-grace-period-days`
//! after rotation) in one map (`construct_ntor_key_map`); clients with an older descriptor
//! still name the previous key.

use rand_core::{CryptoRng, RngCore};
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, StaticSecret};

/// A curve25519 ntor onion key pair (`KP_ntor` / `KS_ntor`).
#[derive(Clone)]
pub struct NtorKeyPair {
    secret: StaticSecret,
    public: PublicKey,
}

impl NtorKeyPair {
    /// A fresh random key pair.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self::from_secret(StaticSecret::random_from_rng(rng))
    }
    /// The key pair for a stored 32-byte secret (clamping happens inside X25519).
    pub fn from_secret_bytes(secret: [u8; 32]) -> Self {
        Self::from_secret(StaticSecret::from(secret))
    }
    /// The key pair for a secret.
    pub fn from_secret(secret: StaticSecret) -> Self {
        let public = PublicKey::from(&secret);
        Self { secret, public }
    }
    /// The public key: what descriptors publish as `ntor-onion-key` and clients send as KEYID.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }
    /// The secret half.
    pub fn secret(&self) -> &StaticSecret {
        &self.secret
    }
}

impl std::fmt::Debug for NtorKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NtorKeyPair(public={})",
            crate::util::hex::encode(self.public.as_bytes())
        )
    }
}

/// The ntor onion keys a relay answers handshakes with: the current key and, during the
/// grace period after a rotation, the previous one.
#[derive(Clone, Debug)]
pub struct NtorKeyMap {
    current: NtorKeyPair,
    previous: Option<NtorKeyPair>,
}

impl NtorKeyMap {
    /// A map holding `current` and optionally the key it replaced.
    pub fn new(current: NtorKeyPair, previous: Option<NtorKeyPair>) -> Self {
        Self { current, previous }
    }
    /// The key published in our current descriptor.
    pub fn current(&self) -> &NtorKeyPair {
        &self.current
    }
    /// The key from before the last rotation, if still within its grace period.
    pub fn previous(&self) -> Option<&NtorKeyPair> {
        self.previous.as_ref()
    }
    /// The key pair whose public key is `keyid`. Compared in constant time, though a KEYID
    /// is public (it is in our descriptors), so this guards nothing secret.
    pub fn lookup(&self, keyid: &[u8; 32]) -> Option<&NtorKeyPair> {
        if bool::from(self.current.public.as_bytes().ct_eq(keyid)) {
            return Some(&self.current);
        }
        self.previous
            .as_ref()
            .filter(|p| bool::from(p.public.as_bytes().ct_eq(keyid)))
    }
}
