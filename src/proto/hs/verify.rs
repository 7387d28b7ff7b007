//! The two proofs in an ESTABLISH_INTRO (rend-spec-v3 §"EST_INTRO"; C tor
//! `verify_establish_intro_cell`):
//!
//! * `SIG`: ed25519 by `AUTH_KEY` over `"Tor establish-intro cell v1"` followed by every byte
//!   of the cell before `SIG_LEN`;
//! * `HANDSHAKE_AUTH`: `MAC(KH, every byte before HANDSHAKE_AUTH)`, where KH is the circuit's
//!   key-derivation nonce from its CREATE handshake and `MAC(key, msg) = SHA3-256(key_len as
//!   8-byte big-endian | key | msg)` (rend-spec-v3 §"Notation"; C tor `crypto_mac_sha3_256`).
//!   It binds the cell to this circuit so it cannot be replayed on another.
//!
//! C tor checks the signature first, then the MAC; so does this.

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use sha3::{Digest, Sha3_256};
use subtle::ConstantTimeEq;
use thiserror::Error;

use super::cells::{EstablishIntro, MAC_LEN};

/// The signature prefix (C tor `ESTABLISH_INTRO_SIG_PREFIX`).
pub const ESTABLISH_INTRO_SIG_PREFIX: &[u8] = b"Tor establish-intro cell v1";

/// Largest relay message body (format v0), which bounds the signed bytes.
const MAX_BODY: usize = 509;

#[derive(Clone, Copy, PartialEq, Eq, Debug, Error)]
pub enum VerifyError {
    /// AUTH_KEY is not a valid ed25519 point.
    #[error("ESTABLISH_INTRO auth key is not a valid ed25519 key")]
    BadAuthKey,
    #[error("ESTABLISH_INTRO signature not as expected")]
    BadSignature,
    #[error("ESTABLISH_INTRO handshake_auth not as expected")]
    BadMac,
}

/// rend-spec-v3's `MAC(key, msg)`: SHA3-256 over the key length (u64, big-endian), the key and
/// the message.
pub fn hs_mac(key: &[u8], msg: &[u8]) -> [u8; MAC_LEN] {
    let mut h = Sha3_256::new();
    h.update((key.len() as u64).to_be_bytes());
    h.update(key);
    h.update(msg);
    h.finalize().into()
}

/// Checks an ESTABLISH_INTRO's signature and MAC; `kh` is the circuit's KH (20 bytes for
/// the tor1 relay crypto every CREATE handshake yields).
pub fn verify_establish_intro(cell: &EstablishIntro<'_>, kh: &[u8]) -> Result<(), VerifyError> {
    let key = VerifyingKey::from_bytes(cell.auth_key).map_err(|_| VerifyError::BadAuthKey)?;
    // Prefix and message are signed as one string; build it on the stack (the cell is at
    // most one relay body), not on the heap.
    let mut signed = [0u8; ESTABLISH_INTRO_SIG_PREFIX.len() + MAX_BODY];
    let n = ESTABLISH_INTRO_SIG_PREFIX.len() + cell.sig_covered.len();
    let Some(buf) = signed.get_mut(..n) else {
        return Err(VerifyError::BadSignature);
    };
    buf[..ESTABLISH_INTRO_SIG_PREFIX.len()].copy_from_slice(ESTABLISH_INTRO_SIG_PREFIX);
    buf[ESTABLISH_INTRO_SIG_PREFIX.len()..].copy_from_slice(cell.sig_covered);
    key.verify(buf, &Signature::from_bytes(cell.sig))
        .map_err(|_| VerifyError::BadSignature)?;

    let mac = hs_mac(kh, cell.mac_covered);
    if !bool::from(mac.ct_eq(cell.handshake_auth)) {
        return Err(VerifyError::BadMac);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::proto::hs::cells::{encode_establish_intro, DosExtension, Extension, EXT_TYPE_DOS};
    use ed25519_dalek::{Signer, SigningKey};
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// Builds an ESTABLISH_INTRO as a C tor service does (`hs_cell_build_establish_intro`):
    /// ed25519 auth key, the DoS extension when asked, the MAC keyed with KH, the signature
    /// over the prefixed cell. Returns the body length.
    pub(crate) fn build(
        sk: &SigningKey,
        kh: &[u8; 20],
        dos: Option<(u64, u64)>,
        out: &mut [u8],
    ) -> usize {
        let mut f = [0u8; 32];
        let exts: Vec<Extension<'_>> = match dos {
            Some((rate, burst)) => {
                let n = DosExtension::encode_field(&[(1, rate), (2, burst)], &mut f).unwrap();
                vec![Extension {
                    field_type: EXT_TYPE_DOS,
                    field: &f[..n],
                }]
            }
            None => vec![],
        };
        encode_establish_intro(
            sk.verifying_key().as_bytes(),
            &exts,
            |m| hs_mac(kh, m),
            |m| {
                let signed = [ESTABLISH_INTRO_SIG_PREFIX, m].concat();
                sk.sign(&signed).to_bytes()
            },
            out,
        )
        .unwrap()
    }

    pub(crate) fn seeded(test: &str) -> StdRng {
        let seed: u64 = rand::rngs::OsRng.gen();
        println!("{test}: seed {seed}");
        StdRng::seed_from_u64(seed)
    }

    #[test]
    fn mac_definition() {
        // SHA3-256(u64be(3) | "abc" | "msg"), computed independently of `hs_mac`.
        let want: [u8; 32] =
            Sha3_256::digest([&[0, 0, 0, 0, 0, 0, 0, 3][..], b"abc", b"msg"].concat()).into();
        assert_eq!(hs_mac(b"abc", b"msg"), want);
        assert_ne!(hs_mac(b"abd", b"msg"), want);
    }

    #[test]
    fn real_cell_verifies_and_tampering_fails() {
        let mut rng = seeded("real_cell_verifies_and_tampering_fails");
        let sk = SigningKey::generate(&mut rng);
        let kh: [u8; 20] = rng.gen();
        let mut buf = [0u8; 498];
        let n = build(&sk, &kh, Some((25, 200)), &mut buf);
        let body = &buf[..n];
        let cell = EstablishIntro::parse(body).unwrap();
        assert_eq!(verify_establish_intro(&cell, &kh), Ok(()));

        // Another circuit's KH: the MAC binds the cell to its circuit.
        let mut other = kh;
        other[0] ^= 1;
        assert_eq!(
            verify_establish_intro(&cell, &other),
            Err(VerifyError::BadMac)
        );

        // Flip each byte in turn: every byte is covered by the signature or the MAC, or
        // breaks the parse.
        for i in 0..n {
            let mut t = body.to_vec();
            t[i] ^= 0x10;
            if let Ok(c) = EstablishIntro::parse(&t) {
                assert!(verify_establish_intro(&c, &kh).is_err(), "byte {i}");
            }
        }
        // SIG covers HANDSHAKE_AUTH too (everything before SIG_LEN), and C tor checks the
        // signature first: a flipped MAC byte is reported as a bad signature.
        let mut t = body.to_vec();
        t[cell.mac_covered.len()] ^= 1;
        let c = EstablishIntro::parse(&t).unwrap();
        assert_eq!(
            verify_establish_intro(&c, &kh),
            Err(VerifyError::BadSignature)
        );

        // A signature by another key.
        let sk2 = SigningKey::generate(&mut rng);
        let n2 = build(&sk2, &kh, None, &mut buf);
        let mut t = buf[..n2].to_vec();
        t[3..35].copy_from_slice(sk.verifying_key().as_bytes());
        let c = EstablishIntro::parse(&t).unwrap();
        assert_eq!(
            verify_establish_intro(&c, &kh),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn sig_without_prefix_is_refused() {
        let mut rng = seeded("sig_without_prefix_is_refused");
        let sk = SigningKey::generate(&mut rng);
        let kh: [u8; 20] = rng.gen();
        let mut buf = [0u8; 498];
        let n = encode_establish_intro(
            sk.verifying_key().as_bytes(),
            &[],
            |m| hs_mac(&kh, m),
            |m| sk.sign(m).to_bytes(),
            &mut buf,
        )
        .unwrap();
        let c = EstablishIntro::parse(&buf[..n]).unwrap();
        assert_eq!(
            verify_establish_intro(&c, &kh),
            Err(VerifyError::BadSignature)
        );
    }
}
