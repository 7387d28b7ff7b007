//! RSA keys as Tor uses them: the RSA-1024 identity key (KP_relayid_rsa), the dummy TAP onion
//! key, and the RSA-2048 TLS link key.
//!
//! Every Tor-level RSA signature is PKCS#1 v1.5 padding over the raw data with **no**
//! DigestInfo prefix (C tor's `crypto_pk_private_sign`). Only X.509 signatures use the usual
//! prefixed form.

use rand_core::{CryptoRng, RngCore};
use rsa::pkcs1::{
    DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPrivateKey, EncodeRsaPublicKey,
};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use sha1::{Digest, Sha1};
use sha2::Sha256;
use thiserror::Error;

use crate::crypto::ids::RsaIdentity;

/// Bits of the identity and TAP onion keys (C tor `PK_BYTES` * 8).
pub const IDENTITY_KEY_BITS: usize = 1024;
/// Bits of the TLS link key (C tor `RSA_LINK_KEY_BITS`).
pub const LINK_KEY_BITS: usize = 2048;
/// The only public exponent Tor uses.
pub const PUBLIC_EXPONENT: u32 = 65537;
/// PEM label of C tor's private key files.
pub const PRIVATE_KEY_PEM_TAG: &str = "RSA PRIVATE KEY";
/// PEM label of public keys in descriptors (`signing-key`, `onion-key`).
pub const PUBLIC_KEY_PEM_TAG: &str = "RSA PUBLIC KEY";

/// RSA failures.
#[derive(Debug, Error)]
pub enum RsaError {
    #[error("RSA key generation failed: {0}")]
    Generate(rsa::Error),
    #[error("not a valid DER PKCS#1 RSA private key: {0}")]
    BadPrivateKey(String),
    #[error("not a valid DER PKCS#1 RSA public key: {0}")]
    BadPublicKey(String),
    #[error("RSA key has {bits} bits and exponent {exponent}; Tor requires {want_bits} bits and e=65537")]
    WrongShape {
        bits: usize,
        exponent: String,
        want_bits: usize,
    },
    #[error("RSA signing failed: {0}")]
    Sign(rsa::Error),
    #[error("RSA signature does not verify")]
    BadSignature,
    #[error("cannot DER-encode RSA key: {0}")]
    Encode(String),
}

/// Generates an RSA key with e = 65537.
pub fn generate<R: RngCore + CryptoRng>(
    rng: &mut R,
    bits: usize,
) -> Result<RsaPrivateKey, RsaError> {
    RsaPrivateKey::new(rng, bits).map_err(RsaError::Generate)
}

/// Checks that a key is what Tor expects: `bits` long with e = 65537.
pub fn check_shape(key: &RsaPublicKey, bits: usize) -> Result<(), RsaError> {
    let actual = key.n().bits();
    if actual != bits || key.e() != &BigUint::from(PUBLIC_EXPONENT) {
        return Err(RsaError::WrongShape {
            bits: actual,
            exponent: key.e().to_string(),
            want_bits: bits,
        });
    }
    Ok(())
}

/// DER PKCS#1 `RSAPublicKey` (what Tor hashes for fingerprints and puts in descriptors).
pub fn public_key_der(key: &RsaPublicKey) -> Result<Vec<u8>, RsaError> {
    Ok(key
        .to_pkcs1_der()
        .map_err(|e| RsaError::Encode(e.to_string()))?
        .into_vec())
}

/// Parses a DER PKCS#1 `RSAPublicKey`.
pub fn public_key_from_der(der: &[u8]) -> Result<RsaPublicKey, RsaError> {
    RsaPublicKey::from_pkcs1_der(der).map_err(|e| RsaError::BadPublicKey(e.to_string()))
}

/// DER PKCS#1 `RSAPrivateKey`.
pub fn private_key_der(key: &RsaPrivateKey) -> Result<zeroize::Zeroizing<Vec<u8>>, RsaError> {
    let doc = key
        .to_pkcs1_der()
        .map_err(|e| RsaError::Encode(e.to_string()))?;
    Ok(zeroize::Zeroizing::new(doc.as_bytes().to_vec()))
}

/// Parses a DER PKCS#1 `RSAPrivateKey` (the rsa crate checks the key's consistency).
pub fn private_key_from_der(der: &[u8]) -> Result<RsaPrivateKey, RsaError> {
    RsaPrivateKey::from_pkcs1_der(der).map_err(|e| RsaError::BadPrivateKey(e.to_string()))
}

/// `secret_id_key` / `secret_onion_key` file contents: PEM "RSA PRIVATE KEY".
pub fn private_key_to_pem(key: &RsaPrivateKey) -> Result<zeroize::Zeroizing<String>, RsaError> {
    Ok(zeroize::Zeroizing::new(super::pem::encode(
        PRIVATE_KEY_PEM_TAG,
        &private_key_der(key)?,
    )))
}

/// PEM "RSA PUBLIC KEY", as in the descriptor's `signing-key` and `onion-key` items.
pub fn public_key_to_pem(key: &RsaPublicKey) -> Result<String, RsaError> {
    Ok(super::pem::encode(
        PUBLIC_KEY_PEM_TAG,
        &public_key_der(key)?,
    ))
}

/// The relay fingerprint: SHA-1 of the DER PKCS#1 public key (tor-spec "Preliminaries").
pub fn rsa_identity(key: &RsaPublicKey) -> Result<RsaIdentity, RsaError> {
    Ok(RsaIdentity(Sha1::digest(public_key_der(key)?).into()))
}

/// SHA-256 of the DER public key (AUTHENTICATE CID/SID).
pub fn public_key_sha256(key: &RsaPublicKey) -> Result<[u8; 32], RsaError> {
    Ok(Sha256::digest(public_key_der(key)?).into())
}

/// Tor's RSA signature: PKCS#1 v1.5 type-1 padding over `data` itself, no DigestInfo.
pub fn sign_unprefixed(key: &RsaPrivateKey, data: &[u8]) -> Result<Vec<u8>, RsaError> {
    key.sign(Pkcs1v15Sign::new_unprefixed(), data)
        .map_err(RsaError::Sign)
}

/// Verifies a signature made by [`sign_unprefixed`] over exactly `data`.
pub fn verify_unprefixed(key: &RsaPublicKey, data: &[u8], sig: &[u8]) -> Result<(), RsaError> {
    key.verify(Pkcs1v15Sign::new_unprefixed(), data, sig)
        .map_err(|_| RsaError::BadSignature)
}

/// DER DigestInfo prefix for SHA-256 (RFC 8017 §9.2 note 1).
const SHA256_DIGEST_INFO_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// Standard RSASSA-PKCS1-v1_5 with SHA-256 (X.509 `sha256WithRSAEncryption`): the unprefixed
/// primitive applied to DigestInfo ‖ digest, which is exactly what the prefixed form does.
pub fn sign_sha256_pkcs1(key: &RsaPrivateKey, message: &[u8]) -> Result<Vec<u8>, RsaError> {
    sign_unprefixed(key, &sha256_digest_info(message))
}

/// Verifies a standard RSASSA-PKCS1-v1_5 SHA-256 signature.
pub fn verify_sha256_pkcs1(key: &RsaPublicKey, message: &[u8], sig: &[u8]) -> Result<(), RsaError> {
    verify_unprefixed(key, &sha256_digest_info(message), sig)
}

fn sha256_digest_info(message: &[u8]) -> Vec<u8> {
    let mut t = SHA256_DIGEST_INFO_PREFIX.to_vec();
    t.extend_from_slice(&Sha256::digest(message));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_key_round_trips_and_signs() {
        let mut rng = rand::thread_rng();
        let key = generate(&mut rng, IDENTITY_KEY_BITS).unwrap();
        check_shape(&key.to_public_key(), IDENTITY_KEY_BITS).unwrap();
        assert!(check_shape(&key.to_public_key(), LINK_KEY_BITS).is_err());

        let pem = private_key_to_pem(&key).unwrap();
        let der = super::super::pem::decode(PRIVATE_KEY_PEM_TAG, pem.as_bytes()).unwrap();
        let back = private_key_from_der(&der).unwrap();
        assert_eq!(back, key);

        let pub_der = public_key_der(&key.to_public_key()).unwrap();
        assert_eq!(public_key_from_der(&pub_der).unwrap(), key.to_public_key());
        let id = rsa_identity(&key.to_public_key()).unwrap();
        assert_eq!(id.0, <[u8; 20]>::from(Sha1::digest(&pub_der)));

        let sig = sign_unprefixed(&key, b"52 bytes or 32 bytes of raw data").unwrap();
        assert_eq!(sig.len(), 128);
        verify_unprefixed(
            &key.to_public_key(),
            b"52 bytes or 32 bytes of raw data",
            &sig,
        )
        .unwrap();
        assert!(verify_unprefixed(&key.to_public_key(), b"other", &sig).is_err());

        // The prefixed form must agree with the rsa crate's own DigestInfo handling.
        let sig = sign_sha256_pkcs1(&key, b"tbs").unwrap();
        let digest = Sha256::digest(b"tbs");
        let reference = key
            .sign(
                Pkcs1v15Sign {
                    hash_len: Some(32),
                    prefix: SHA256_DIGEST_INFO_PREFIX.to_vec().into_boxed_slice(),
                },
                &digest,
            )
            .unwrap();
        assert_eq!(sig, reference);
        verify_sha256_pkcs1(&key.to_public_key(), b"tbs", &sig).unwrap();
        assert!(verify_sha256_pkcs1(&key.to_public_key(), b"tbz", &sig).is_err());
    }

    /// DER PKCS#1 public keys come from peers' certs and descriptors: malformed ones are typed
    /// errors, and what parses re-encodes to the same bytes (the fingerprint hashes them).
    #[test]
    fn public_key_der_is_strict() {
        let seed = rand::random::<u64>();
        println!("seed {seed}");
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
        let key = generate(&mut rng, IDENTITY_KEY_BITS)
            .unwrap()
            .to_public_key();
        let der = public_key_der(&key).unwrap();
        assert_eq!(
            public_key_der(&public_key_from_der(&der).unwrap()).unwrap(),
            der
        );
        let bad = |d: &[u8]| matches!(public_key_from_der(d), Err(RsaError::BadPublicKey(_)));
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(bad(&trailing), "trailing data");
        assert!(bad(&der[..der.len() - 1]), "truncated");
        let mut wrong_tag = der.clone();
        wrong_tag[0] = 0x31;
        assert!(bad(&wrong_tag), "wrong tag");
        let mut long = der.clone();
        long[2] = long[2].wrapping_add(1);
        assert!(bad(&long), "length past the end");
        // A modulus with a needless leading zero byte is not DER.
        let n = key.n().to_bytes_be();
        let e = key.e().to_bytes_be();
        let int = |v: &[u8]| [&[0x02, 0x81, v.len() as u8][..], v].concat();
        let encode_with_zeros = |zeros: usize| {
            let padded_n = [&vec![0u8; zeros][..], &n].concat();
            let body = [int(&padded_n), vec![0x02, e.len() as u8], e.clone()].concat();
            [&[0x30, 0x81, body.len() as u8][..], &body].concat()
        };
        // (The 1024-bit modulus has its top bit set, so one zero byte is the DER form.)
        assert_eq!(encode_with_zeros(1), der);
        assert!(bad(&encode_with_zeros(2)), "non-minimal INTEGER");
        assert!(bad(&[]));
    }
}
