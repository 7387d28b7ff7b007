//! Ed25519 keypairs in C tor's representation: the 64-byte *expanded* secret key
//! (clamped scalar ‖ hash prefix), which is what `ed25519v1-secret` files hold and what the
//! curve25519→ed25519 conversion produces. Signing therefore goes through
//! `ed25519_dalek::hazmat`.

use ed25519_dalek::hazmat::{raw_sign, ExpandedSecretKey};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use crate::crypto::ids::Ed25519Identity;

/// Length of an expanded secret key.
pub const EXPANDED_SECRET_LEN: usize = 64;

/// An ed25519 keypair whose secret is kept in expanded form.
pub struct Ed25519Keypair {
    /// The exact 64 bytes C tor stores, kept so files round-trip byte for byte.
    expanded: Zeroizing<[u8; EXPANDED_SECRET_LEN]>,
    secret: ExpandedSecretKey,
    public: VerifyingKey,
}

impl Clone for Ed25519Keypair {
    fn clone(&self) -> Self {
        Self::from_expanded(&self.expanded)
    }
}

impl std::fmt::Debug for Ed25519Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ed25519Keypair({})", self.identity())
    }
}

impl Ed25519Keypair {
    /// A fresh key, expanded from a random seed as RFC 8032 §5.1.5 (and C tor) does.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut seed[..]);
        let mut expanded = Zeroizing::new([0u8; EXPANDED_SECRET_LEN]);
        expanded.copy_from_slice(&Sha512::digest(&seed[..]));
        clamp(&mut expanded);
        Self::from_expanded(&expanded)
    }

    /// From C tor's 64-byte expanded secret key.
    pub fn from_expanded(bytes: &[u8; EXPANDED_SECRET_LEN]) -> Self {
        let secret = ExpandedSecretKey::from_bytes(bytes);
        let public = VerifyingKey::from(&secret);
        Self {
            expanded: Zeroizing::new(*bytes),
            secret,
            public,
        }
    }

    /// The 64-byte expanded secret key, as stored in `ed25519v1-secret` files.
    pub fn expanded_secret(&self) -> &[u8; EXPANDED_SECRET_LEN] {
        &self.expanded
    }

    pub fn public(&self) -> &VerifyingKey {
        &self.public
    }

    pub fn identity(&self) -> Ed25519Identity {
        Ed25519Identity(self.public.to_bytes())
    }

    /// Pure Ed25519 signature over `msg`.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        raw_sign::<Sha512>(&self.secret, msg, &self.public)
    }

    /// The ed25519 key that a curve25519 (ntor) secret key maps to, and the sign bit of its
    /// public key (tor-spec / prop 228; C tor `ed25519_keypair_from_curve25519_keypair`).
    ///
    /// The scalar is the curve25519 secret itself; the hash prefix is the first half of
    /// SHA-512(secret ‖ "Derive high part of ed25519 key from curve25519 key" ‖ NUL) — C hashes
    /// `sizeof` the string literal, which includes its terminating NUL.
    pub fn from_curve25519_secret(curve_secret: &[u8; 32]) -> (Self, u8) {
        const DERIVE: &[u8] = b"Derive high part of ed25519 key from curve25519 key\0";
        let mut h = Sha512::new();
        h.update(curve_secret);
        h.update(DERIVE);
        let digest = Zeroizing::new(<[u8; 64]>::from(h.finalize()));
        let mut expanded = Zeroizing::new([0u8; EXPANDED_SECRET_LEN]);
        expanded[..32].copy_from_slice(curve_secret);
        expanded[32..].copy_from_slice(&digest[..32]);
        let kp = Self::from_expanded(&expanded);
        let sign_bit = kp.public.as_bytes()[31] >> 7;
        (kp, sign_bit)
    }
}

/// RFC 8032 / RFC 7748 scalar clamping of the first 32 bytes.
fn clamp(expanded: &mut [u8; EXPANDED_SECRET_LEN]) {
    expanded[0] &= 248;
    expanded[31] &= 127;
    expanded[31] |= 64;
}

/// Verifies an Ed25519 signature by `key` (a raw 32-byte public key).
pub fn verify(key: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool {
    match VerifyingKey::from_bytes(key) {
        Ok(vk) => vk.verify(msg, &Signature::from_bytes(sig)).is_ok(),
        Err(_) => false,
    }
}

/// The ed25519 public key a curve25519 public key maps to under the birational map, given the
/// sign bit (how a verifier checks an `ntor-onion-key-crosscert`).
pub fn ed25519_public_from_curve25519(curve_public: &[u8; 32], sign_bit: u8) -> Option<[u8; 32]> {
    let point = curve25519_dalek::montgomery::MontgomeryPoint(*curve_public);
    Some(point.to_edwards(sign_bit & 1)?.compress().to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expanded_key_matches_dalek_signing_key() {
        // A key expanded from a seed must sign exactly like ed25519-dalek's own SigningKey.
        let seed = [42u8; 32];
        let mut expanded = [0u8; 64];
        expanded.copy_from_slice(&Sha512::digest(seed));
        clamp(&mut expanded);
        let ours = Ed25519Keypair::from_expanded(&expanded);
        let dalek = ed25519_dalek::SigningKey::from_bytes(&seed);
        assert_eq!(ours.public, dalek.verifying_key());
        use ed25519_dalek::Signer;
        assert_eq!(ours.sign(b"msg"), dalek.sign(b"msg"));
        assert!(verify(
            ours.public.as_bytes(),
            b"msg",
            &ours.sign(b"msg").to_bytes()
        ));
        assert!(!verify(
            ours.public.as_bytes(),
            b"msh",
            &ours.sign(b"msg").to_bytes()
        ));
    }

    #[test]
    fn rfc8032_test_vector_1() {
        // RFC 8032 §7.1 TEST 1 (empty message).
        let seed = crate::util::hex::decode(
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        )
        .unwrap();
        let mut expanded = [0u8; 64];
        expanded.copy_from_slice(&Sha512::digest(&seed));
        clamp(&mut expanded);
        let kp = Ed25519Keypair::from_expanded(&expanded);
        assert_eq!(
            crate::util::hex::encode(kp.public.as_bytes()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(
            crate::util::hex::encode(&kp.sign(b"").to_bytes()),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
    }

    #[test]
    fn curve25519_conversion_matches_birational_map() {
        let mut rng = rand::thread_rng();
        for _ in 0..8 {
            let secret = x25519_dalek::StaticSecret::random_from_rng(&mut rng);
            let public = x25519_dalek::PublicKey::from(&secret);
            let (kp, sign) = Ed25519Keypair::from_curve25519_secret(&secret.to_bytes());
            let mapped = ed25519_public_from_curve25519(public.as_bytes(), sign).unwrap();
            assert_eq!(&mapped, kp.public.as_bytes());
            assert_eq!(kp.public.to_montgomery().to_bytes(), *public.as_bytes());
        }
    }
}
