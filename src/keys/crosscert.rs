//! Cross-certifications binding the legacy keys to the Ed25519 identity:
//! - the RSA→Ed25519 cross-cert (CERTS cell type 7; cert-spec §2.3, C `torcert.c`),
//! - the descriptor's `onion-key-crosscert` (TAP onion key signs the identities),
//! - the descriptor's `ntor-onion-key-crosscert` (ntor key, as ed25519, certifies the master).

use std::time::SystemTime;

use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::cert::{CertKeyType, CertType, Ed25519Cert};
use super::ed25519::Ed25519Keypair;
use super::rsa::{self as tor_rsa, RsaError};
use super::time::{hours_ceil, unix_secs};
use crate::crypto::ids::Ed25519Identity;

/// Domain separator hashed before the signed part of a type-7 cross-cert.
const RSA_ED_CROSSCERT_PREFIX: &[u8] = b"Tor TLS RSA/Ed25519 cross-certificate";

/// How long C tor makes the type-7 cross-cert valid (`routerkeys.c`: 6*30 days).
pub const RSA_ED_CROSSCERT_LIFETIME_SECS: u64 = 6 * 30 * 86400;
/// C tor makes a new type-7 cross-cert when the old one has less than this left.
pub const RSA_ED_CROSSCERT_RENEW_SECS: u64 = 30 * 86400;

/// Why a cross-certificate was rejected.
#[derive(Debug, Error)]
pub enum CrossCertError {
    #[error("RSA->Ed25519 cross-cert is truncated or overlong")]
    Malformed,
    #[error("RSA->Ed25519 cross-cert certifies a different Ed25519 key")]
    WrongEd25519Key,
    #[error("RSA->Ed25519 cross-cert expired at hour {0}")]
    Expired(u32),
    #[error("cross-cert RSA signature does not verify")]
    BadSignature,
    #[error(transparent)]
    Rsa(#[from] RsaError),
}

/// The RSA→Ed25519 cross-certificate (CERTS type 7):
/// `ED_KEY(32) | EXPIRATION(4, hours) | SIGLEN(1) | SIGNATURE(SIGLEN)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsaEd25519CrossCert {
    pub ed_key: Ed25519Identity,
    pub expiration_hours: u32,
    pub signature: Vec<u8>,
    encoded: Vec<u8>,
}

impl RsaEd25519CrossCert {
    /// Signs `ed_key` with the RSA identity key, valid until `expires` (rounded up to hours).
    pub fn sign(
        rsa_identity: &RsaPrivateKey,
        ed_key: &Ed25519Identity,
        expires: SystemTime,
    ) -> Result<Self, RsaError> {
        let expiration_hours = hours_ceil(unix_secs(expires));
        let mut signed = Vec::with_capacity(36);
        signed.extend_from_slice(&ed_key.0);
        signed.extend_from_slice(&expiration_hours.to_be_bytes());
        let digest = crosscert_digest(&signed);
        let signature = tor_rsa::sign_unprefixed(rsa_identity, &digest)?;
        let mut encoded = signed;
        // One byte of length: fine for RSA-1024 (128 bytes).
        encoded.push(signature.len() as u8);
        encoded.extend_from_slice(&signature);
        Ok(Self {
            ed_key: *ed_key,
            expiration_hours,
            signature,
            encoded,
        })
    }

    /// Parses an encoded cross-cert; the input must be exactly one cert.
    pub fn parse(bytes: &[u8]) -> Result<Self, CrossCertError> {
        if bytes.len() < 37 {
            return Err(CrossCertError::Malformed);
        }
        let siglen = bytes[36] as usize;
        if bytes.len() != 37 + siglen {
            return Err(CrossCertError::Malformed);
        }
        let mut ed = [0u8; 32];
        ed.copy_from_slice(&bytes[..32]);
        Ok(Self {
            ed_key: Ed25519Identity(ed),
            expiration_hours: u32::from_be_bytes([bytes[32], bytes[33], bytes[34], bytes[35]]),
            signature: bytes[37..].to_vec(),
            encoded: bytes.to_vec(),
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.encoded
    }

    pub fn expires_at_secs(&self) -> u64 {
        u64::from(self.expiration_hours) * 3600
    }

    /// Checks as C tor's `rsa_ed25519_crosscert_check`: right Ed25519 key, not expired before
    /// `now`, and a valid signature by `rsa_identity`.
    pub fn verify(
        &self,
        rsa_identity: &RsaPublicKey,
        master: &Ed25519Identity,
        now: SystemTime,
    ) -> Result<(), CrossCertError> {
        if &self.ed_key != master {
            return Err(CrossCertError::WrongEd25519Key);
        }
        if self.expires_at_secs() < unix_secs(now) {
            return Err(CrossCertError::Expired(self.expiration_hours));
        }
        if self.signature.len() != rsa_identity.size() {
            return Err(CrossCertError::BadSignature);
        }
        let digest = crosscert_digest(&self.encoded[..36]);
        tor_rsa::verify_unprefixed(rsa_identity, &digest, &self.signature)
            .map_err(|_| CrossCertError::BadSignature)
    }
}

fn crosscert_digest(signed: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(RSA_ED_CROSSCERT_PREFIX);
    h.update(signed);
    h.finalize().into()
}

/// The data the TAP onion key signs for `onion-key-crosscert` (dir-spec §2.1.1):
/// SHA-1(DER RSA identity key) ‖ master Ed25519 key, 52 bytes.
fn tap_crosscert_data(
    rsa_identity: &RsaPublicKey,
    master: &Ed25519Identity,
) -> Result<Vec<u8>, RsaError> {
    let mut data = tor_rsa::rsa_identity(rsa_identity)?.0.to_vec();
    data.extend_from_slice(&master.0);
    Ok(data)
}

/// `onion-key-crosscert` body: an unprefixed PKCS#1 v1.5 signature by the TAP onion key over
/// the 52 raw bytes (C `make_tap_onion_key_crosscert`; the data is not hashed again).
pub fn make_tap_onion_key_crosscert(
    onion_key: &RsaPrivateKey,
    rsa_identity: &RsaPublicKey,
    master: &Ed25519Identity,
) -> Result<Vec<u8>, RsaError> {
    tor_rsa::sign_unprefixed(onion_key, &tap_crosscert_data(rsa_identity, master)?)
}

/// Verifies an `onion-key-crosscert`.
pub fn verify_tap_onion_key_crosscert(
    onion_key: &RsaPublicKey,
    rsa_identity: &RsaPublicKey,
    master: &Ed25519Identity,
    signature: &[u8],
) -> Result<(), RsaError> {
    tor_rsa::verify_unprefixed(
        onion_key,
        &tap_crosscert_data(rsa_identity, master)?,
        signature,
    )
}

/// `ntor-onion-key-crosscert`: a type-0x0A certificate of the master identity signed by the
/// ed25519 key obtained from the ntor secret key through the birational map (C
/// `make_ntor_onion_key_crosscert`; no signed-with-key extension). Returns the cert and the
/// sign bit that goes on the `ntor-onion-key-crosscert` line.
pub fn make_ntor_onion_key_crosscert(
    ntor_secret: &[u8; 32],
    master: &Ed25519Identity,
    now: SystemTime,
    lifetime_secs: u64,
) -> (Ed25519Cert, u8) {
    let (ed, sign_bit) = Ed25519Keypair::from_curve25519_secret(ntor_secret);
    let cert = Ed25519Cert::sign(
        &ed,
        CertType::NTOR_CC_IDENTITY,
        CertKeyType::ED25519,
        &master.0,
        now,
        lifetime_secs,
        false,
    );
    (cert, sign_bit)
}

/// Verifies an `ntor-onion-key-crosscert` against the published ntor public key.
pub fn verify_ntor_onion_key_crosscert(
    cert: &Ed25519Cert,
    sign_bit: u8,
    ntor_public: &[u8; 32],
    master: &Ed25519Identity,
    now: Option<SystemTime>,
) -> Result<(), super::cert::CertError> {
    use super::cert::CertError;
    cert.expect_type(CertType::NTOR_CC_IDENTITY)?;
    if cert.certified_key != master.0 {
        return Err(CertError::WrongCertifiedKey);
    }
    let signer = super::ed25519::ed25519_public_from_curve25519(ntor_public, sign_bit)
        .ok_or(CertError::BadSignature)?;
    cert.verify(Some(&signer), now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn rsa_ed25519_crosscert_round_trip() {
        let mut rng = rand::thread_rng();
        let rsa = tor_rsa::generate(&mut rng, 1024).unwrap();
        let master = Ed25519Keypair::generate(&mut rng).identity();
        let now = at(1_700_000_000);
        let cc = RsaEd25519CrossCert::sign(
            &rsa,
            &master,
            at(1_700_000_000 + RSA_ED_CROSSCERT_LIFETIME_SECS),
        )
        .unwrap();
        assert_eq!(cc.as_bytes().len(), 32 + 4 + 1 + 128);
        let parsed = RsaEd25519CrossCert::parse(cc.as_bytes()).unwrap();
        assert_eq!(parsed, cc);
        parsed.verify(&rsa.to_public_key(), &master, now).unwrap();

        // Independent check of the signed digest: recover it with the raw public operation.
        let sig = rsa::BigUint::from_bytes_be(&cc.signature);
        let em = sig
            .modpow(rsa.to_public_key().e(), rsa.to_public_key().n())
            .to_bytes_be();
        let mut h = Sha256::new();
        h.update(b"Tor TLS RSA/Ed25519 cross-certificate");
        h.update(&cc.as_bytes()[..36]);
        assert_eq!(&em[em.len() - 32..], &h.finalize()[..]);
        assert_eq!(em[0], 1, "type-1 padding, no DigestInfo");
        assert_eq!(em[em.len() - 33], 0);

        let other = Ed25519Keypair::generate(&mut rng).identity();
        assert!(matches!(
            parsed.verify(&rsa.to_public_key(), &other, now),
            Err(CrossCertError::WrongEd25519Key)
        ));
        let late = at(cc.expires_at_secs() + 1);
        assert!(matches!(
            parsed.verify(&rsa.to_public_key(), &master, late),
            Err(CrossCertError::Expired(_))
        ));
        let mut bad = cc.as_bytes().to_vec();
        bad[35] ^= 1;
        let bad = RsaEd25519CrossCert::parse(&bad).unwrap();
        assert!(matches!(
            bad.verify(&rsa.to_public_key(), &master, now),
            Err(CrossCertError::BadSignature)
        ));
        assert!(RsaEd25519CrossCert::parse(&cc.as_bytes()[..100]).is_err());
    }

    #[test]
    fn tap_and_ntor_crosscerts_verify() {
        let mut rng = rand::thread_rng();
        let id = tor_rsa::generate(&mut rng, 1024).unwrap();
        let onion = tor_rsa::generate(&mut rng, 1024).unwrap();
        let master = Ed25519Keypair::generate(&mut rng).identity();
        let sig = make_tap_onion_key_crosscert(&onion, &id.to_public_key(), &master).unwrap();
        verify_tap_onion_key_crosscert(&onion.to_public_key(), &id.to_public_key(), &master, &sig)
            .unwrap();
        let other = Ed25519Keypair::generate(&mut rng).identity();
        assert!(verify_tap_onion_key_crosscert(
            &onion.to_public_key(),
            &id.to_public_key(),
            &other,
            &sig
        )
        .is_err());

        let ntor = x25519_dalek::StaticSecret::random_from_rng(&mut rng);
        let ntor_pub = x25519_dalek::PublicKey::from(&ntor);
        let now = at(1_700_000_000);
        let (cert, sign) =
            make_ntor_onion_key_crosscert(&ntor.to_bytes(), &master, now, 28 * 86400);
        assert_eq!(cert.signing_key, None);
        verify_ntor_onion_key_crosscert(&cert, sign, ntor_pub.as_bytes(), &master, Some(now))
            .unwrap();
        assert!(verify_ntor_onion_key_crosscert(
            &cert,
            sign ^ 1,
            ntor_pub.as_bytes(),
            &master,
            Some(now)
        )
        .is_err());
        assert!(verify_ntor_onion_key_crosscert(
            &cert,
            sign,
            ntor_pub.as_bytes(),
            &other,
            Some(now)
        )
        .is_err());
    }
}
