//! Relay-side X25519 for a peer key `X` that is multiplied by two secret scalars (our onion
//! key `b` and the ephemeral `y`): decompress `X` to an Edwards point once, then use
//! curve25519-dalek's Edwards multiplication, which picks its fastest vector backend at run
//! time. Measured on the build VM this is ~35% cheaper than two Montgomery ladders (AVX2).
//!
//! This module alone uses curve25519-dalek 5 (the rest of the crate stays on dalek 4, which
//! x25519-dalek 2 and ed25519-dalek 2 need): dalek 5 has an AVX-512 IFMA backend that works
//! on stable Rust, selected at run time (falling back to AVX2, then serial), but only when
//! the crate is built with `--cfg curve25519_dalek_backend="avx512"` in the rustflags.
//! Without that flag (or on CPUs without IFMA) this is dalek 5's AVX2 path, as fast as
//! dalek 4's.
//!
//! The result equals RFC 7748 X25519 on every input: clamping makes the scalar a multiple
//! of 8 below 2^255 in both paths, and `u(k·P) = u(k·(−P))`, so either Edwards sign works.
//! Keys whose `u` has no Edwards point (twist points, `u = −1`) fall back to the ladder;
//! that choice depends only on the public `X`. The multiplication itself is constant-time.

use curve25519_dalek_5::{EdwardsPoint, MontgomeryPoint};
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

/// A peer's X25519 public key, prepared for several multiplications.
#[derive(Clone, Copy)]
pub(crate) struct PeerPoint {
    u: MontgomeryPoint,
    edwards: Option<EdwardsPoint>,
}

impl PeerPoint {
    pub(crate) fn new(key: &PublicKey) -> Self {
        let u = MontgomeryPoint(*key.as_bytes());
        Self {
            u,
            edwards: u.to_edwards(0),
        }
    }

    /// X25519(secret, X): the shared secret, or `None` if it is all zeros (small-order X).
    pub(crate) fn diffie_hellman(&self, secret: &StaticSecret) -> Option<Zeroizing<[u8; 32]>> {
        let k = Zeroizing::new(secret.to_bytes());
        let out = Zeroizing::new(match self.edwards {
            Some(e) => e.mul_clamped(*k).to_montgomery().0,
            None => self.u.mul_clamped(*k).0,
        });
        if bool::from(out.ct_eq(&[0u8; 32])) {
            None
        } else {
            Some(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ladder(k: &StaticSecret, u: [u8; 32]) -> [u8; 32] {
        *k.diffie_hellman(&PublicKey::from(u)).as_bytes()
    }

    #[test]
    fn matches_ladder_everywhere() {
        let mut rng = rand::thread_rng();
        let k = StaticSecret::random_from_rng(&mut rng);
        let mut points: Vec<[u8; 32]> = Vec::new();
        // Honest keys.
        for _ in 0..32 {
            points.push(*PublicKey::from(&StaticSecret::random_from_rng(&mut rng)).as_bytes());
        }
        // Arbitrary bytes: about half are twist points, some have the top bit set.
        for i in 0..64u8 {
            let mut u = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rng, &mut u);
            u[31] ^= i & 0x80;
            points.push(u);
        }
        // Small-order and special values: 0, 1, -1, p, p+1, and the order-8 points.
        // p = 2^255 - 19 little-endian is ed ff .. ff 7f; vary the low byte around it.
        let near_p = |low: u8| {
            let mut u = [0xffu8; 32];
            u[0] = low;
            u[31] = 0x7f;
            u
        };
        let mut one = [0u8; 32];
        one[0] = 1;
        points.extend([[0u8; 32], one, near_p(0xec), near_p(0xed), near_p(0xee)]);
        let hex =
            |s: &str| -> [u8; 32] { crate::util::hex::decode(s).unwrap().try_into().unwrap() };
        points.push(hex(
            "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        ));
        points.push(hex(
            "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        ));

        let mut zero_seen = 0;
        for u in points {
            let fast = PeerPoint::new(&PublicKey::from(u)).diffie_hellman(&k);
            let slow = ladder(&k, u);
            match fast {
                Some(v) => assert_eq!(*v, slow, "u = {u:02x?}"),
                None => {
                    assert_eq!(slow, [0u8; 32], "u = {u:02x?}");
                    zero_seen += 1;
                }
            }
        }
        assert!(
            zero_seen >= 4,
            "small-order inputs must give the zero output"
        );
    }
}
